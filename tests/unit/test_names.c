/*
 * Maildir names and folder components: table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_names.h"

static void test_parse(void **state)
{
	static const struct {
		const char *name;
		int ret;
		const char *uniq;
		unsigned int flags;
		const char *extra;
		bool info;
	} cases[] = {
		{ "123.M1.host", 0, "123.M1.host", 0, "", false },
		{ "123.M1.host:2,", 0, "123.M1.host", 0, "", true },
		{ "u:2,S", 0, "u", MF_FLAG_SEEN, "", true },
		{ "u:2,SRF", 0, "u", MF_FLAG_SEEN | MF_FLAG_REPLIED |
			MF_FLAG_FLAGGED, "", true },
		{ "u:2,SSS", 0, "u", MF_FLAG_SEEN, "", true },
		{ "u:2,DFPRST", 0, "u", MF_FLAG_ALL, "", true },
		{ "u:2,Sba", 0, "u", MF_FLAG_SEEN, "ab", true },
		{ "u:2,S,extra", 0, "u", MF_FLAG_SEEN, "", true },
		{ "u:2,S1x!", 0, "u", MF_FLAG_SEEN, "x", true },
		{ "u,S=1234,W=1300:2,S", 0, "u,S=1234,W=1300", MF_FLAG_SEEN,
			"", true },
		{ "u:1,foo", 0, "u", 0, "", false },
		{ "", -EINVAL, NULL, 0, NULL, false },
		{ ".hidden", -EINVAL, NULL, 0, NULL, false },
		{ ":2,S", -EINVAL, NULL, 0, NULL, false },
		{ "a/b", -EINVAL, NULL, 0, NULL, false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mf_maildir_name n;
		int ret = mf_maildir_parse(cases[i].name, &n);

		assert_int_equal(ret, cases[i].ret);
		if (ret < 0)
			continue;
		assert_string_equal(n.uniq, cases[i].uniq);
		assert_int_equal(n.flags, cases[i].flags);
		assert_string_equal(n.extra, cases[i].extra);
		assert_int_equal(n.has_info, cases[i].info);
	}
}

static void test_parse_long(void **state)
{
	char name[400];
	struct mf_maildir_name n;

	(void)state;
	memset(name, 'x', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	assert_int_equal(mf_maildir_parse(name, &n), -EINVAL);
	name[255] = '\0';
	assert_int_equal(mf_maildir_parse(name, &n), 0);
}

static void test_format(void **state)
{
	char buf[256];

	(void)state;
	assert_int_equal(mf_maildir_format("u", 0, "", false, buf,
					   sizeof(buf)), 0);
	assert_string_equal(buf, "u");
	assert_int_equal(mf_maildir_format("u", 0, "", true, buf,
					   sizeof(buf)), 0);
	assert_string_equal(buf, "u:2,");
	assert_int_equal(mf_maildir_format("u", MF_FLAG_SEEN | MF_FLAG_DRAFT |
					   MF_FLAG_TRASHED, NULL, false, buf,
					   sizeof(buf)), 0);
	assert_string_equal(buf, "u:2,DST");
	/* keyword letters sort after capitals */
	assert_int_equal(mf_maildir_format("u", MF_FLAG_SEEN, "ab", true, buf,
					   sizeof(buf)), 0);
	assert_string_equal(buf, "u:2,Sab");
	/* an unknown capital merges in order */
	assert_int_equal(mf_maildir_format("u", MF_FLAG_SEEN |
					   MF_FLAG_FLAGGED, "G", true, buf,
					   sizeof(buf)), 0);
	assert_string_equal(buf, "u:2,FGS");
	assert_int_equal(mf_maildir_format("u", 0, "", true, buf, 3),
			 -ENAMETOOLONG);
}

static void test_roundtrip(void **state)
{
	static const char *const names[] = {
		"u:2,", "u:2,S", "u:2,DFPRST", "u:2,FSa", "x.y,S=12:2,RS",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct mf_maildir_name n;
		char buf[256];

		assert_int_equal(mf_maildir_parse(names[i], &n), 0);
		assert_int_equal(mf_maildir_format(n.uniq, n.flags, n.extra,
						   n.has_info, buf,
						   sizeof(buf)), 0);
		assert_string_equal(buf, names[i]);
	}
}

static void test_folder_escape(void **state)
{
	static const struct {
		const char *in;
		const char *out;
	} cases[] = {
		{ "Archive", "Archive" },
		{ "a/b", "a%2Fb" },
		{ "100%", "100%25" },
		{ ".hidden", "%2Ehidden" },
		{ "..", "%2E." },
		{ "cur", "%63ur" },
		{ "new", "%6Eew" },
		{ "tmp", "%74mp" },
		{ "current", "current" },
		{ "tab\there", "tab%09here" },
		{ "del\x7f", "del%7F" },
		{ "Entw\xc3\xbcrfe", "Entw\xc3\xbcrfe" },
		{ "", "%" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *e = mf_folder_escape(cases[i].in, strlen(cases[i].in));
		char *u;

		assert_string_equal(e, cases[i].out);
		u = mf_folder_unescape(e);
		assert_non_null(u);
		assert_string_equal(u, cases[i].in);
		free(u);
		free(e);
	}
	assert_null(mf_folder_unescape("a/b"));
	assert_null(mf_folder_unescape("bad%4"));
	assert_null(mf_folder_unescape("bad%zz"));
	assert_null(mf_folder_unescape("nul%00"));
	assert_null(mf_folder_unescape(""));
}

static void test_folder_path(void **state)
{
	static const struct {
		const char *in;
		char delim;
		const char *out;
	} cases[] = {
		{ "INBOX", '/', "INBOX" },
		{ "inbox", '/', "INBOX" },
		{ "Inbox.sub", '.', "INBOX/sub" },
		{ "Archive/2024", '/', "Archive/2024" },
		{ "a.b/c", '.', "a/b%2Fc" },
		{ "x/../y", '/', "x/%2E./y" },
		{ "flat/name", 0, "flat%2Fname" },
		{ "a//b", '/', "a/%/b" },
		{ "INBOXES", '/', "INBOXES" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *p = mf_folder_path_from_remote(cases[i].in,
						     cases[i].delim);
		assert_string_equal(p, cases[i].out);
		free(p);
	}
}

static void test_message_id(void **state)
{
	static const struct {
		const char *msg;
		const char *want;
	} cases[] = {
		{ "Message-ID: <a@b>\r\n\r\nbody", "<a@b>" },
		{ "From: x\r\nmessage-id:   <a@b>  \r\n\r\n", "<a@b>" },
		{ "Message-Id:\r\n\t<folded@b>\r\n\r\n", "<folded@b>" },
		{ "Message-ID : <sp@b>\n\n", "<sp@b>" },
		{ "From: x\r\n\r\nMessage-ID: <in-body@b>\r\n", NULL },
		{ "Message-IDX: <no@b>\r\n\r\n", NULL },
		{ "Message-ID:\r\n\r\n", NULL },
		{ "", NULL },
		{ "Message-ID: <unterminated@b>", "<unterminated@b>" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *id = mf_header_message_id(cases[i].msg,
						strlen(cases[i].msg));

		if (!cases[i].want) {
			assert_null(id);
		} else {
			assert_non_null(id);
			assert_string_equal(id, cases[i].want);
		}
		free(id);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_parse_long),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_folder_escape),
		cmocka_unit_test(test_folder_path),
		cmocka_unit_test(test_message_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
