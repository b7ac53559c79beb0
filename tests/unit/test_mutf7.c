/*
 * Tests for modified UTF-7 (net/mutf7.c): the RFC 3501 examples, "&",
 * round trips, and malformed input in both directions.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mf_mutf7.h"

struct pair {
	const char *mutf7;
	const char *utf8;
};

static const struct pair pairs[] = {
	{ "", "" },
	{ "INBOX", "INBOX" },
	{ "&-", "&" },
	{ "a&-b&-", "a&b&" },
	{ "&Jjo-!", "\xe2\x98\xba!" },
	{ "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
	  "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
	  "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
	{ "Entw&APw-rfe", "Entw\xc3\xbc" "rfe" },
	{ "&AOQA9gD8-", "\xc3\xa4\xc3\xb6\xc3\xbc" },
	/* U+1F600, a surrogate pair */
	{ "&2D3eAA-", "\xf0\x9f\x98\x80" },
	/* control characters are encoded */
	{ "a&AAk-b", "a\tb" },
	{ "&AH8-", "\x7f" },
	{ "Sent Items", "Sent Items" },
};

static void test_pairs(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		char *out = NULL;
		assert_int_equal(mf_mutf7_decode(pairs[i].mutf7, &out), 0);
		assert_string_equal(out, pairs[i].utf8);
		free(out);
		out = mf_mutf7_encode(pairs[i].utf8);
		assert_non_null(out);
		assert_string_equal(out, pairs[i].mutf7);
		free(out);
	}
}

static void test_bad_decode(void **state)
{
	static const char *const bad[] = {
		"&",		/* unterminated */
		"&Jjo",		/* no "-" */
		"abc&U,BT",	/* no "-" */
		"&Jjo!-",	/* bad base64 char */
		"&Jj/-",	/* "/" is not in the modified alphabet */
		"&Jjp-",	/* non-zero pad bits */
		"&JjoA-",	/* excess bits (a whole extra 6-bit group) */
		"&2D0-",	/* lone high surrogate */
		"&3gA-",	/* lone low surrogate */
		"&2D3YPQ-",	/* high followed by high */
		"&AAA-",	/* U+0000 */
		"caf\xc3\xa9",	/* raw 8-bit */
		"a\tb",		/* raw control character */
		"&=-",
	};
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out = (char *)0x1;
		if (mf_mutf7_decode(bad[i], &out) != -EINVAL)
			fail_msg("decoded \"%s\"", bad[i]);
		assert_ptr_equal(out, (char *)0x1);
	}
}

static void test_lenient_decode(void **state)
{
	char *out;
	(void)state;

	/* "A" encoded needlessly: accepted */
	assert_int_equal(mf_mutf7_decode("&AEE-", &out), 0);
	assert_string_equal(out, "A");
	free(out);
}

static void test_bad_encode(void **state)
{
	static const char *const bad[] = {
		"\xff",
		"caf\xc3",		/* truncated */
		"\xc0\xaf",		/* overlong "/" */
		"\xed\xa0\x80",		/* surrogate */
		"\xf4\x90\x80\x80",	/* > U+10FFFF */
		"a\x80\x62",		/* stray continuation byte */
	};
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_null(mf_mutf7_encode(bad[i]));
}

static void test_round_trip(void **state)
{
	/* every BMP code point outside surrogates, in runs of 5 */
	(void)state;

	for (uint32_t cp = 1; cp < 0x110000; cp += 997) {
		char in[64];
		size_t n = 0;
		for (uint32_t k = cp; k < cp + 5 && k < 0x110000; k++) {
			uint32_t c = k;
			if (c >= 0xd800 && c <= 0xdfff)
				continue;
			if (c < 0x80) {
				in[n++] = (char)c;
			} else if (c < 0x800) {
				in[n++] = (char)(0xc0 | (c >> 6));
				in[n++] = (char)(0x80 | (c & 0x3f));
			} else if (c < 0x10000) {
				in[n++] = (char)(0xe0 | (c >> 12));
				in[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
				in[n++] = (char)(0x80 | (c & 0x3f));
			} else {
				in[n++] = (char)(0xf0 | (c >> 18));
				in[n++] = (char)(0x80 | ((c >> 12) & 0x3f));
				in[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
				in[n++] = (char)(0x80 | (c & 0x3f));
			}
			in[n++] = k % 2 ? '&' : 'x';
		}
		in[n] = '\0';
		char *enc = mf_mutf7_encode(in), *dec = NULL;
		assert_non_null(enc);
		for (const char *p = enc; *p != '\0'; p++)
			assert_true(*p >= 0x20 && *p <= 0x7e);
		assert_int_equal(mf_mutf7_decode(enc, &dec), 0);
		assert_string_equal(dec, in);
		free(enc);
		free(dec);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pairs),
		cmocka_unit_test(test_bad_decode),
		cmocka_unit_test(test_lenient_decode),
		cmocka_unit_test(test_bad_encode),
		cmocka_unit_test(test_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
