/*
 * The encrypted OAuth token store (see mf_tokenstore.h).
 */
#include "mf_tokenstore.h"
#include "mf_util.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "MFTOK1"
#define MAGIC_LEN 6
#define NONCE_LEN 12
#define TAG_LEN 16
#define KEY_LEN 32
#define FILE_MAX (64 * 1024)

static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static char *store_dir;
static char *key_path;
static char *key_command;

static char *xdg(const char *env, const char *fallback, const char *sub)
{
	const char *v = getenv(env);
	char *base, *r;

	if (v && v[0] == '/')
		return xasprintf("%s/%s", v, sub);
	base = mf_expand_home(fallback);
	r = xasprintf("%s/%s", base, sub);
	free(base);
	return r;
}

void mf_tokenstore_configure(const char *state_dir, const char *key_file,
			     const char *key_cmd)
{
	pthread_mutex_lock(&cfg_lock);
	free(store_dir);
	free(key_path);
	free(key_command);
	key_command = key_cmd && *key_cmd ? xstrdup(key_cmd) : NULL;
	if (state_dir) {
		store_dir = xasprintf("%s/oauth", state_dir);
	} else {
		store_dir = xdg("XDG_STATE_HOME", "~/.local/state",
				"mailfs/oauth");
	}
	key_path = key_file ? xstrdup(key_file)
			    : xdg("XDG_CONFIG_HOME", "~/.config",
				  "mailfs/token.key");
	pthread_mutex_unlock(&cfg_lock);
}

static void ensure_configured(void)
{
	bool need;

	pthread_mutex_lock(&cfg_lock);
	need = store_dir == NULL;
	pthread_mutex_unlock(&cfg_lock);
	if (need)
		mf_tokenstore_configure(NULL, NULL, NULL);
}

const char *mf_tokenstore_dir(void)
{
	ensure_configured();
	return store_dir;
}

const char *mf_tokenstore_key_file(void)
{
	ensure_configured();
	return key_command ? "(token_key_command)" : key_path;
}

void mf_token_record_clear(struct mf_token_record *rec)
{
	free(rec->provider);
	free(rec->client_id);
	if (rec->refresh_token) {
		explicit_bzero(rec->refresh_token, strlen(rec->refresh_token));
		free(rec->refresh_token);
	}
	free(rec->scope);
	memset(rec, 0, sizeof(*rec));
}

/* ---- AES-256-GCM ---- */

int mf_tokenstore_seal(const unsigned char key[32], const char *account,
		       const void *plain, size_t len, unsigned char **out_r,
		       size_t *out_len_r)
{
	size_t total = MAGIC_LEN + NONCE_LEN + len + TAG_LEN;
	unsigned char *out = xmalloc(total);
	unsigned char *nonce = out + MAGIC_LEN;
	unsigned char *ct = nonce + NONCE_LEN;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0, ok;

	memcpy(out, MAGIC, MAGIC_LEN);
	ok = ctx && RAND_bytes(nonce, NONCE_LEN) == 1 &&
	     EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN,
				 NULL) &&
	     EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) &&
	     EVP_EncryptUpdate(ctx, NULL, &n, out, MAGIC_LEN) &&
	     EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)account,
			       (int)strlen(account)) &&
	     EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) &&
	     EVP_EncryptFinal_ex(ctx, ct + n, &n) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN,
				 ct + len);
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		free(out);
		return -EIO;
	}
	*out_r = out;
	*out_len_r = total;
	return 0;
}

int mf_tokenstore_open_blob(const unsigned char key[32], const char *account,
			    const unsigned char *blob, size_t len,
			    char **plain_r, size_t *plain_len_r)
{
	const unsigned char *nonce = blob + MAGIC_LEN;
	const unsigned char *ct = nonce + NONCE_LEN;
	size_t ctlen;
	char *plain;
	EVP_CIPHER_CTX *ctx;
	int n = 0, ok;

	if (len < MAGIC_LEN + NONCE_LEN + TAG_LEN ||
	    memcmp(blob, MAGIC, MAGIC_LEN) != 0)
		return -EINVAL;
	ctlen = len - MAGIC_LEN - NONCE_LEN - TAG_LEN;
	plain = xmalloc(ctlen + 1);
	ctx = EVP_CIPHER_CTX_new();
	ok = ctx &&
	     EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN,
				 NULL) &&
	     EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) &&
	     EVP_DecryptUpdate(ctx, NULL, &n, blob, MAGIC_LEN) &&
	     EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)account,
			       (int)strlen(account)) &&
	     EVP_DecryptUpdate(ctx, (unsigned char *)plain, &n, ct,
			       (int)ctlen) &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
				 (void *)(ct + ctlen)) &&
	     EVP_DecryptFinal_ex(ctx, (unsigned char *)plain + n, &n) > 0;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		explicit_bzero(plain, ctlen + 1);
		free(plain);
		return -EBADMSG;
	}
	plain[ctlen] = '\0';
	*plain_r = plain;
	*plain_len_r = ctlen;
	return 0;
}

/* ---- files ---- */

static int read_small(const char *path, unsigned char **data_r, size_t *len_r,
		      mode_t *mode_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	unsigned char *buf;
	ssize_t got;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > FILE_MAX) {
		int e = S_ISREG(st.st_mode) ? EFBIG : EINVAL;

		close(fd);
		return -e;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	got = mf_pread_all(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	if (got < 0) {
		free(buf);
		return (int)got;
	}
	*data_r = buf;
	*len_r = (size_t)got;
	*mode_r = st.st_mode;
	return 0;
}

/* Write path atomically with mode 0600. */
static int write_atomic(const char *path, const void *data, size_t len)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	int fd, ret = 0;

	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = mf_write_all(fd, data, len);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0) {
		unlink(tmp);
		goto out;
	}
	if (slash) {
		*slash = '\0';
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
	}
out:
	free(tmp);
	free(dir);
	return ret;
}

static int ensure_dir(const char *dir, char **error_r)
{
	struct stat st;
	int ret = mf_mkdirs(dir, 0700);

	if (ret < 0) {
		*error_r = xasprintf("cannot create the token store %s: %s",
				     dir, strerror(-ret));
		return ret;
	}
	if (stat(dir, &st) < 0) {
		ret = -errno;
		*error_r = xasprintf("cannot open the token store %s: %s", dir,
				     strerror(errno));
		return ret;
	}
	if (st.st_uid != getuid() || (st.st_mode & 077)) {
		*error_r = xasprintf("the token store %s must be a directory "
				     "of yours with mode 0700 (it is %04o); "
				     "run: chmod 700 %s", dir,
				     (unsigned int)(st.st_mode & 07777), dir);
		return -EPERM;
	}
	return 0;
}

static int check_mode(const char *what, const char *path, mode_t mode,
		      char **error_r)
{
	if (mode & 077) {
		*error_r = xasprintf("%s %s is readable by others (mode %04o);"
				     " refusing to use it: run chmod 600 %s",
				     what, path,
				     (unsigned int)(mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

/* The key from token_key_command: one line of base64. */
static int command_key(unsigned char key[KEY_LEN], char **error_r)
{
	unsigned char raw[64];
	char *out = NULL, *err = NULL;
	size_t len;
	int n, ret = 0;

	if (mf_run_command_line(key_command, &out, &err) < 0) {
		*error_r = xasprintf("token_key_command failed: %s", err);
		free(err);
		return -EIO;
	}
	len = strlen(out);
	n = len == 44 ? EVP_DecodeBlock(raw, (unsigned char *)out, (int)len)
		      : -1;
	/* 44 base64 characters with one "=" are 32 bytes */
	if (n != 33 || out[43] != '=' || out[42] == '=') {
		*error_r = xstrdup("token_key_command must print a 32-byte key "
				   "in base64 (44 characters); make one with: "
				   "head -c 32 /dev/urandom | base64");
		ret = -EINVAL;
	} else {
		memcpy(key, raw, KEY_LEN);
	}
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(out, len);
	free(out);
	return ret;
}

static int read_key(unsigned char key[KEY_LEN], char **error_r)
{
	const char *path = mf_tokenstore_key_file();
	unsigned char *data;
	size_t len;
	mode_t mode;
	int ret;

	if (key_command)
		return command_key(key, error_r);
	ret = read_small(path, &data, &len, &mode);
	if (ret < 0) {
		if (ret == -ENOENT)
			*error_r = xasprintf("the token key %s is missing, so "
					     "the stored tokens cannot be "
					     "decrypted", path);
		else
			*error_r = xasprintf("cannot read the token key %s: "
					     "%s", path, strerror(-ret));
		return ret;
	}
	ret = check_mode("the token key", path, mode, error_r);
	if (ret == 0 && len != KEY_LEN) {
		*error_r = xasprintf("the token key %s is not %d bytes long",
				     path, KEY_LEN);
		ret = -EINVAL;
	}
	if (ret == 0)
		memcpy(key, data, KEY_LEN);
	explicit_bzero(data, len);
	free(data);
	return ret;
}

/* Does the store hold any record (of any account)? */
static bool store_has_records(void)
{
	DIR *d = opendir(mf_tokenstore_dir());
	struct dirent *de;
	bool any = false;

	if (!d)
		return false;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);

		if (n > 4 && strcmp(de->d_name + n - 4, ".tok") == 0) {
			any = true;
			break;
		}
	}
	closedir(d);
	return any;
}

/* Read the key, or make one when the store is new. */
static int get_or_make_key(unsigned char key[KEY_LEN], char **error_r)
{
	const char *path = mf_tokenstore_key_file();
	char *dir, *slash, *err = NULL;
	struct stat st;
	int ret;

	if (key_command || lstat(path, &st) == 0 || errno != ENOENT)
		return read_key(key, error_r);
	if (store_has_records()) {
		/* A new key would orphan the existing records silently. */
		*error_r = xasprintf("the token key %s is missing but %s "
				     "holds tokens encrypted with it; restore "
				     "the key, or remove %s and sign in "
				     "again", path, mf_tokenstore_dir(),
				     mf_tokenstore_dir());
		return -ENOENT;
	}
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		ret = ensure_dir(dir, &err);
		if (ret < 0) {
			*error_r = xasprintf("token key: %s", err);
			free(err);
			free(dir);
			return ret;
		}
	}
	free(dir);
	if (RAND_bytes(key, KEY_LEN) != 1) {
		*error_r = xstrdup("no random bytes for a token key");
		return -EIO;
	}
	ret = write_atomic(path, key, KEY_LEN);
	if (ret < 0) {
		*error_r = xasprintf("cannot write the token key %s: %s", path,
				     strerror(-ret));
		return ret;
	}
	mf_info("oauth: made a new token key in %s", path);
	return 0;
}

static char *record_path(const char *account, const char *suffix)
{
	return xasprintf("%s/%s%s", mf_tokenstore_dir(), account, suffix);
}

static char *jstr(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? xstrdup(v) : NULL;
}

int mf_tokenstore_load(const char *account, struct mf_token_record *rec,
		       char **error_r)
{
	char *path = record_path(account, ".tok");
	unsigned char key[KEY_LEN];
	unsigned char *blob = NULL;
	char *plain = NULL;
	size_t len, plen;
	mode_t mode;
	json_t *j = NULL;
	json_error_t jerr;
	int ret;

	memset(rec, 0, sizeof(*rec));
	ret = read_small(path, &blob, &len, &mode);
	if (ret == -ENOENT) {
		*error_r = xasprintf("account %s has no stored token (%s)",
				     account, path);
		goto out;
	}
	if (ret < 0) {
		*error_r = xasprintf("cannot read the token store %s: %s",
				     path, strerror(-ret));
		goto out;
	}
	ret = check_mode("the token file", path, mode, error_r);
	if (ret < 0)
		goto out;
	ret = read_key(key, error_r);
	if (ret < 0)
		goto out;
	ret = mf_tokenstore_open_blob(key, account, blob, len, &plain, &plen);
	explicit_bzero(key, sizeof(key));
	if (ret < 0) {
		*error_r = xasprintf("cannot decrypt %s with the key %s (wrong "
				     "key or damaged file)", path,
				     mf_tokenstore_key_file());
		goto out;
	}
	j = json_loadb(plain, plen, 0, &jerr);
	if (!j || !json_is_object(j) ||
	    !json_string_value(json_object_get(j, "refresh_token"))) {
		*error_r = xasprintf("%s: not a token record", path);
		ret = -EINVAL;
		goto out;
	}
	rec->provider = jstr(j, "provider");
	rec->client_id = jstr(j, "client_id");
	rec->refresh_token = jstr(j, "refresh_token");
	rec->scope = jstr(j, "scope");
	rec->saved = json_integer_value(json_object_get(j, "saved"));
	ret = 0;
out:
	if (j) {
		/* the refresh token inside jansson's copy */
		json_t *rt = json_object_get(j, "refresh_token");

		if (json_is_string(rt)) {
			char *s = (char *)json_string_value(rt);

			explicit_bzero(s, strlen(s));
		}
		json_decref(j);
	}
	if (plain) {
		explicit_bzero(plain, plen);
		free(plain);
	}
	free(blob);
	free(path);
	return ret;
}

int mf_tokenstore_save(const char *account,
		       const struct mf_token_record *rec, char **error_r)
{
	char *path = record_path(account, ".tok");
	unsigned char key[KEY_LEN];
	unsigned char *blob = NULL;
	size_t blen = 0;
	json_t *j;
	char *plain;
	int ret;

	ret = ensure_dir(mf_tokenstore_dir(), error_r);
	if (ret < 0)
		goto out;
	ret = get_or_make_key(key, error_r);
	if (ret < 0)
		goto out;
	j = json_object();
	json_object_set_new(j, "provider",
			    json_string(rec->provider ? rec->provider : ""));
	json_object_set_new(j, "client_id",
			    json_string(rec->client_id ? rec->client_id : ""));
	json_object_set_new(j, "refresh_token",
			    json_string(rec->refresh_token));
	json_object_set_new(j, "scope",
			    json_string(rec->scope ? rec->scope : ""));
	json_object_set_new(j, "saved", json_integer(rec->saved));
	plain = json_dumps(j, JSON_COMPACT);
	{
		char *s = (char *)json_string_value(
			json_object_get(j, "refresh_token"));

		if (s)
			explicit_bzero(s, strlen(s));
	}
	json_decref(j);
	ret = mf_tokenstore_seal(key, account, plain, strlen(plain), &blob,
				 &blen);
	explicit_bzero(key, sizeof(key));
	explicit_bzero(plain, strlen(plain));
	free(plain);
	if (ret < 0) {
		*error_r = xstrdup("cannot encrypt the token record");
		goto out;
	}
	ret = write_atomic(path, blob, blen);
	if (ret < 0)
		*error_r = xasprintf("cannot write the token store %s: %s",
				     path, strerror(-ret));
out:
	free(blob);
	free(path);
	return ret;
}

int64_t mf_tokenstore_stamp(const char *account)
{
	char *path = record_path(account, ".tok");
	struct stat st;
	int64_t r = 0;

	if (stat(path, &st) == 0)
		r = (int64_t)st.st_mtim.tv_sec * 1000000000 +
		    st.st_mtim.tv_nsec + (int64_t)st.st_ino * 7919;
	free(path);
	return r;
}

int mf_tokenstore_remove(const char *account, char **error_r)
{
	char *path = record_path(account, ".tok");
	int ret = 0;

	if (unlink(path) < 0 && errno != ENOENT) {
		ret = -errno;
		*error_r = xasprintf("cannot remove %s: %s", path,
				     strerror(errno));
	}
	free(path);
	return ret;
}

int mf_tokenstore_lock(const char *account, char **error_r)
{
	char *path;
	int fd, ret;

	ret = ensure_dir(mf_tokenstore_dir(), error_r);
	if (ret < 0)
		return ret;
	path = record_path(account, ".lock");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ret = -errno;
		*error_r = xasprintf("cannot open %s: %s", path,
				     strerror(errno));
		free(path);
		return ret;
	}
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			ret = -errno;
			*error_r = xasprintf("cannot lock %s: %s", path,
					     strerror(errno));
			close(fd);
			free(path);
			return ret;
		}
	}
	free(path);
	return fd;
}

void mf_tokenstore_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}
