/*
 * [view NAME] rules against header lines, accounts and folders.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_config.h"
#include "mf_view_match.h"

static const char hdrs[] =
	"From: \"Doe, John\" <John.Doe@Example.ORG>\r\n"
	"To: alice@example.net,\r\n"
	"\tBob <bob@lists.example.com>, carol@example.com\r\n"
	"List-Id: Linux Kernel Mailing List\r\n"
	" <linux-kernel.vger.kernel.org>\r\n"
	"Subject: [PATCH v2 1/3] mm: fix, really\r\n"
	"Message-ID: <abc@x>\r\n"
	"\r\n";

static void test_headers(void **state)
{
	(void)state;
	/* Whole value, unfolded, case-insensitive. */
	assert_true(mf_view_header_matches(hdrs, "list-id", "*linux-kernel*"));
	assert_true(mf_view_header_matches(hdrs, "list-id",
					   "linux kernel mailing list "
					   "<linux-kernel.vger.kernel.org>"));
	/* The <...> part of a non-address header. */
	assert_true(mf_view_header_matches(hdrs, "list-id",
					   "linux-kernel.vger.kernel.org"));
	assert_true(mf_view_header_matches(hdrs, "subject", "\\[PATCH*"));
	assert_false(mf_view_header_matches(hdrs, "subject", "really"));
	/* Each address alone; a comma inside quotes is not a separator. */
	assert_true(mf_view_header_matches(hdrs, "from", "*@example.org"));
	assert_true(mf_view_header_matches(hdrs, "from",
					   "john.doe@example.org"));
	assert_true(mf_view_header_matches(hdrs, "from", "john*"));
	assert_false(mf_view_header_matches(hdrs, "from", "doe*"));
	assert_true(mf_view_header_matches(hdrs, "to", "alice@example.net"));
	assert_true(mf_view_header_matches(hdrs, "to", "*@lists.example.com"));
	assert_true(mf_view_header_matches(hdrs, "to", "carol@*"));
	assert_false(mf_view_header_matches(hdrs, "to", "dave@*"));
	/* Other headers, absent headers, a name that is a prefix. */
	assert_false(mf_view_header_matches(hdrs, "cc", "*"));
	assert_false(mf_view_header_matches(hdrs, "list", "*"));
	assert_true(mf_view_header_matches(hdrs, "message-id", "abc@x"));
	/* LF only, and several occurrences of one header. */
	assert_true(mf_view_header_matches("Received: a\nReceived: b\n",
					   "received", "b"));
	assert_false(mf_view_header_matches("", "from", "*"));
}

static void test_view(void **state)
{
	struct mf_view_rule rules[] = {
		{ (char *)"list-id", (char *)"*linux-kernel*" },
		{ (char *)"account", (char *)"wo*" },
	};
	char *accts[] = { (char *)"home", (char *)"work", NULL };
	char *folders[] = { (char *)"*", (char *)"!Spam", NULL };
	struct mf_view v = { .name = (char *)"l", .dirname = (char *)"@l",
			     .rules = rules, .rule_count = 2 };

	(void)state;
	assert_true(mf_view_matches(&v, "home", "INBOX", 0, hdrs));
	assert_false(mf_view_matches(&v, "home", "INBOX", 0,
				     "From: a@b\r\n"));
	assert_false(mf_view_matches(&v, "home", "INBOX", 0, NULL));
	/* The pseudo header "account" needs no header lines. */
	assert_true(mf_view_matches(&v, "work", "INBOX", 0, NULL));
	/* Trash and Junk are out unless folders says otherwise. */
	assert_false(mf_view_matches(&v, "home", "Deleted", MF_FOLDER_TRASH,
				     hdrs));
	assert_false(mf_view_matches(&v, "home", "Junk", 0, hdrs));
	assert_false(mf_view_matches(&v, "home", "trash", 0, hdrs));
	v.folders = folders;
	assert_true(mf_view_matches(&v, "home", "Junk", MF_FOLDER_JUNK, hdrs));
	assert_false(mf_view_matches(&v, "home", "Spam", 0, hdrs));
	v.accounts = accts + 1;
	assert_false(mf_view_matches(&v, "home", "INBOX", 0, hdrs));
	assert_true(mf_view_matches(&v, "work", "INBOX", 0, hdrs));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_view),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
