/*
 * The OAuth token store: AES-256-GCM sealing bound to the account name,
 * tamper detection, atomic 0600 files in a 0700 directory, and clear
 * failures (missing or wrong key, loose permissions).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mf_tokenstore.h"
#include "mf_util.h"

static char *tmpdir;

static int setup(void **state)
{
	char tmpl[] = "/tmp/mf-tokenstore-XXXXXX";
	char *st, *key;

	(void)state;
	tmpdir = xstrdup(mkdtemp(tmpl));
	st = xasprintf("%s/state", tmpdir);
	key = xasprintf("%s/config/mailfs/token.key", tmpdir);
	mf_tokenstore_configure(st, key, NULL);
	free(st);
	free(key);
	return 0;
}

static int teardown(void **state)
{
	char *cmd = xasprintf("rm -rf '%s'", tmpdir);

	(void)state;
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(tmpdir);
	return 0;
}

static void test_seal_roundtrip_and_binding(void **state)
{
	unsigned char key[32], other[32];
	unsigned char *blob;
	char *plain;
	size_t blen, plen;
	const char *secret = "rt-very-secret-refresh-token";

	(void)state;
	memset(key, 7, sizeof(key));
	memset(other, 8, sizeof(other));
	assert_int_equal(mf_tokenstore_seal(key, "acct", secret,
					    strlen(secret), &blob, &blen), 0);
	assert_int_equal(blen, 6 + 12 + strlen(secret) + 16);
	assert_memory_equal(blob, "MFTOK1", 6);
	assert_null(memmem(blob, blen, secret, strlen(secret)));
	assert_int_equal(mf_tokenstore_open_blob(key, "acct", blob, blen,
						 &plain, &plen), 0);
	assert_int_equal(plen, strlen(secret));
	assert_string_equal(plain, secret);
	free(plain);
	/* another account's name, another key, a flipped bit: refused */
	assert_int_equal(mf_tokenstore_open_blob(key, "acct2", blob, blen,
						 &plain, &plen), -EBADMSG);
	assert_int_equal(mf_tokenstore_open_blob(other, "acct", blob, blen,
						 &plain, &plen), -EBADMSG);
	blob[blen - 20] ^= 1;
	assert_int_equal(mf_tokenstore_open_blob(key, "acct", blob, blen,
						 &plain, &plen), -EBADMSG);
	assert_int_equal(mf_tokenstore_open_blob(key, "acct", blob, 10,
						 &plain, &plen), -EINVAL);
	free(blob);
}

static void test_nonce_differs(void **state)
{
	unsigned char key[32] = { 1 };
	unsigned char *a, *b;
	size_t al, bl;

	(void)state;
	assert_int_equal(mf_tokenstore_seal(key, "x", "same", 4, &a, &al), 0);
	assert_int_equal(mf_tokenstore_seal(key, "x", "same", 4, &b, &bl), 0);
	assert_memory_not_equal(a + 6, b + 6, 12);
	free(a);
	free(b);
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void test_save_load_files(void **state)
{
	struct mf_token_record rec = { 0 }, got;
	char *err = NULL, *path, *data;
	FILE *f;
	long n;

	(void)state;
	/* nothing stored yet */
	assert_int_equal(mf_tokenstore_load("a", &got, &err), -ENOENT);
	assert_non_null(strstr(err, "no stored token"));
	free(err);
	err = NULL;

	rec.provider = "microsoft";
	rec.client_id = "cid";
	rec.refresh_token = "rt-secret-XYZ";
	rec.scope = "offline_access";
	rec.saved = 1700000000;
	assert_int_equal(mf_tokenstore_save("a", &rec, &err), 0);
	assert_int_equal(mf_tokenstore_load("a", &got, &err), 0);
	assert_string_equal(got.provider, "microsoft");
	assert_string_equal(got.client_id, "cid");
	assert_string_equal(got.refresh_token, "rt-secret-XYZ");
	assert_string_equal(got.scope, "offline_access");
	assert_int_equal(got.saved, 1700000000);
	mf_token_record_clear(&got);

	assert_int_equal(mode_of(mf_tokenstore_dir()), 0700);
	assert_int_equal(mode_of(mf_tokenstore_key_file()), 0600);
	path = xasprintf("%s/a.tok", mf_tokenstore_dir());
	assert_int_equal(mode_of(path), 0600);
	/* no plaintext on disk */
	f = fopen(path, "rb");
	assert_non_null(f);
	data = xmalloc(4096);
	n = (long)fread(data, 1, 4096, f);
	fclose(f);
	assert_null(memmem(data, (size_t)n, "rt-secret-XYZ", 13));
	free(data);

	/* a loose key is refused */
	assert_int_equal(chmod(mf_tokenstore_key_file(), 0640), 0);
	assert_int_equal(mf_tokenstore_load("a", &got, &err), -EPERM);
	assert_non_null(strstr(err, "readable by others"));
	free(err);
	err = NULL;
	assert_int_equal(chmod(mf_tokenstore_key_file(), 0600), 0);

	/* a missing key: an error, and no new key over existing records */
	{
		char *moved = xasprintf("%s.moved", mf_tokenstore_key_file());

		assert_int_equal(rename(mf_tokenstore_key_file(), moved), 0);
		assert_int_equal(mf_tokenstore_load("a", &got, &err), -ENOENT);
		assert_non_null(strstr(err, "is missing"));
		free(err);
		err = NULL;
		assert_int_not_equal(mf_tokenstore_save("b", &rec, &err), 0);
		assert_non_null(strstr(err, "holds tokens"));
		free(err);
		err = NULL;
		assert_int_equal(access(mf_tokenstore_key_file(), F_OK), -1);
		assert_int_equal(rename(moved, mf_tokenstore_key_file()), 0);
		free(moved);
	}

	/* the record of "a" copied to "b" does not open as b's */
	{
		char *cmd = xasprintf("cp -p '%s' '%s/b.tok'", path,
				      mf_tokenstore_dir());

		assert_int_equal(system(cmd), 0);
		free(cmd);
		assert_int_equal(mf_tokenstore_load("b", &got, &err),
				 -EBADMSG);
		assert_non_null(strstr(err, "cannot decrypt"));
		free(err);
		err = NULL;
	}

	/* the per-account lock file can be taken and released */
	{
		int fd = mf_tokenstore_lock("a", &err);

		assert_true(fd >= 0);
		mf_tokenstore_unlock(fd);
	}

	assert_int_equal(mf_tokenstore_remove("a", &err), 0);
	assert_int_equal(mf_tokenstore_remove("a", &err), 0);
	assert_int_equal(mf_tokenstore_load("a", &got, &err), -ENOENT);
	free(err);
	free(path);
}

static void test_key_command(void **state)
{
	struct mf_token_record rec = { 0 }, got;
	char *err = NULL, *st, *raw, *cmd;
	FILE *f;

	(void)state;
	st = xasprintf("%s/state-cmd", tmpdir);
	raw = xasprintf("%s/raw.key", tmpdir);
	f = fopen(raw, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite("0123456789abcdef0123456789abcdef", 1, 32, f),
			 32);
	fclose(f);
	cmd = xasprintf("base64 -w0 '%s'", raw);
	mf_tokenstore_configure(st, NULL, cmd);
	rec.refresh_token = "rt-cmd";
	assert_int_equal(mf_tokenstore_save("c", &rec, &err), 0);
	assert_int_equal(mf_tokenstore_load("c", &got, &err), 0);
	assert_string_equal(got.refresh_token, "rt-cmd");
	mf_token_record_clear(&got);
	assert_string_equal(mf_tokenstore_key_file(), "(token_key_command)");
	free(cmd);

	/* a command printing something else, or failing: errors */
	mf_tokenstore_configure(st, NULL, "echo c2hvcnQ=");
	assert_true(mf_tokenstore_load("c", &got, &err) < 0);
	assert_non_null(strstr(err, "44 characters"));
	free(err);
	err = NULL;
	mf_tokenstore_configure(st, NULL, "exit 4");
	assert_true(mf_tokenstore_save("c", &rec, &err) < 0);
	assert_non_null(strstr(err, "token_key_command failed"));
	free(err);
	err = NULL;
	/* another key: the record does not open */
	mf_tokenstore_configure(st, NULL, "head -c 32 /dev/zero | base64");
	assert_int_equal(mf_tokenstore_load("c", &got, &err), -EBADMSG);
	free(err);
	free(raw);
	free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seal_roundtrip_and_binding),
		cmocka_unit_test(test_nonce_differs),
		cmocka_unit_test(test_save_load_files),
		cmocka_unit_test(test_key_command),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
