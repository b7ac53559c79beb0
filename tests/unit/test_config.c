/*
 * mailfs.conf parsing: good configs, every error message path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "mf_config.h"
#include "mf_util.h"

static struct mf_config *parse_ok(const char *text)
{
	struct mf_config *cfg = NULL;
	char *err = NULL;
	int ret = mf_config_parse("t.conf", text, &cfg, &err);

	if (ret != 0)
		fail_msg("unexpected error: %s", err);
	return cfg;
}

static void expect_error(const char *text, const char *needle)
{
	struct mf_config *cfg = NULL;
	char *err = NULL;

	assert_true(mf_config_parse("t.conf", text, &cfg, &err) < 0);
	assert_null(cfg);
	assert_non_null(err);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	free(err);
}

static void test_full(void **state)
{
	struct mf_config *cfg;
	const struct mf_account *a;

	(void)state;
	setenv("HOME", "/home/alice", 1);
	cfg = parse_ok(
		"# comment\n"
		"[general]\n"
		"cache_dir = ~/.cache/mailfs   # bodies\n"
		"state_dir = /var/tmp/st\n"
		"fetch_timeout = 7\n"
		"\n"
		"[account work]\n"
		"type = imap\n"
		"host = imap.example.org\n"
		"tls = starttls\n"
		"user = alice\n"
		"password_command = pass show mail/work\n"
		"folders = * !Junk\n"
		"poll_interval = 30\n"
		"delete = expunge\n"
		"prefetch = new\n"
		"password = \"se#cret \"\n"
		"api_url = http://x\n");
	assert_string_equal(cfg->cache_dir, "/home/alice/.cache/mailfs");
	assert_string_equal(cfg->state_dir, "/var/tmp/st");
	assert_int_equal(cfg->fetch_timeout, 7);
	assert_int_equal(cfg->account_count, 1);
	a = &cfg->accounts[0];
	assert_string_equal(a->name, "work");
	assert_string_equal(a->type, "imap");
	assert_int_equal(a->tls, MF_TLS_STARTTLS);
	assert_int_equal(a->port, 143);
	assert_string_equal(a->password, "se#cret ");
	assert_string_equal(a->password_command, "pass show mail/work");
	assert_int_equal(a->poll_interval, 30);
	assert_int_equal(a->delete_policy, MF_DELETE_EXPUNGE);
	assert_int_equal(a->prefetch, MF_PREFETCH_NEW);
	assert_string_equal(mf_account_get(a, "api_url"), "http://x");
	assert_null(mf_account_get(a, "nope"));
	assert_true(mf_account_folder_wanted(a, "INBOX"));
	assert_true(mf_account_folder_wanted(a, "Archive/2024"));
	assert_false(mf_account_folder_wanted(a, "Junk"));
	mf_config_free(&cfg);
	assert_null(cfg);
}

static void test_defaults(void **state)
{
	struct mf_config *cfg;

	(void)state;
	setenv("HOME", "/home/bob", 1);
	setenv("XDG_CACHE_HOME", "/xdg/cache", 1);
	unsetenv("XDG_STATE_HOME");
	cfg = parse_ok("[account a]\ntype=imap\nhost=h\nuser=u\n"
		       "password=p\n");
	assert_string_equal(cfg->cache_dir, "/xdg/cache/mailfs");
	assert_string_equal(cfg->state_dir, "/home/bob/.local/state/mailfs");
	assert_int_equal(cfg->accounts[0].port, 993);
	assert_int_equal(cfg->accounts[0].tls, MF_TLS_IMPLICIT);
	assert_int_equal(cfg->accounts[0].poll_interval, 60);
	assert_int_equal(cfg->accounts[0].delete_policy, MF_DELETE_TRASH);
	mf_config_free(&cfg);
}

static void test_gmail_delete_default(void **state)
{
	struct mf_config *cfg;

	(void)state;
	/* Unlink goes to the backend, which maps it to label changes. */
	cfg = parse_ok("[account g]\ntype=gmail\nuser=a@gmail.com\n"
		       "token_command=echo T\nquota_units=600\n"
		       "inbox_unlink=trash\nlabels=IMPORTANT\n");
	assert_int_equal(cfg->accounts[0].delete_policy, MF_DELETE_EXPUNGE);
	mf_config_free(&cfg);
	cfg = parse_ok("[account g]\ntype=gmail\nuser=a@gmail.com\n"
		       "delete=trash\n");
	assert_int_equal(cfg->accounts[0].delete_policy, MF_DELETE_TRASH);
	mf_config_free(&cfg);
}

static void test_plaintext(void **state)
{
	struct mf_config *cfg;

	(void)state;
	expect_error("[account a]\ntype=imap\nhost=mail.example.org\n"
		     "user=u\npassword=p\ntls=none\n", "clear text");
	cfg = parse_ok("[account a]\ntype=imap\nhost=127.0.0.1\nuser=u\n"
		       "password=p\ntls=none\n");
	assert_int_equal(cfg->accounts[0].port, 143);
	mf_config_free(&cfg);
	cfg = parse_ok("[account a]\ntype=imap\nhost=mail.example.org\n"
		       "user=u\npassword=p\ntls=none\n"
		       "allow_plaintext=yes\n");
	mf_config_free(&cfg);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("", "no [account");
	expect_error("key = v\n", "t.conf:1: key outside");
	expect_error("[general\n", "t.conf:1: bad section");
	expect_error("[account]\ntype=imap\n", "needs a name");
	expect_error("[account a/b]\ntype=imap\n", "cannot be a directory");
	expect_error("[account .x]\ntype=imap\n", "cannot be a directory");
	expect_error("[account a]\nhost=h\n", "has no \"type\"");
	expect_error("[account a]\ntype=imap\nuser=u\npassword=p\n",
		     "needs \"host\"");
	expect_error("[account a]\ntype=imap\nhost=h\npassword=p\n",
		     "needs \"user\"");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\n",
		     "password_command");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "port=99999\n", "t.conf:6: port must be");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "port=-1\n", "port must be");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "tls=maybe\n", "implicit | starttls | none");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "delete=shred\n", "trash | expunge");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "host=again\n", "set twice");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "[account a]\ntype=imap\n", "defined twice");
	expect_error("[nonsense]\n", "unknown section");
	expect_error("[account a]\nhost\n", "key = value");
	expect_error("[account a]\npassword = \"open\n", "unterminated");
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "allow_plaintext=perhaps\n", "yes or no");
}

static void test_transport_keys(void **state)
{
	struct mf_config *cfg;
	const struct mf_account *a;

	(void)state;
	cfg = parse_ok("[account t]\ntype=imap\n"
		       "tunnel = ssh mail.example.org dovecot exec imap\n"
		       "compress = no\nmax_connections = 4\n");
	a = &cfg->accounts[0];
	assert_string_equal(a->tunnel, "ssh mail.example.org dovecot exec imap");
	assert_false(a->compress);
	assert_int_equal(a->max_connections, 4);
	mf_config_free(&cfg);
	cfg = parse_ok("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n");
	assert_true(cfg->accounts[0].compress);
	assert_int_equal(cfg->accounts[0].max_connections, 3);
	assert_null(cfg->accounts[0].tunnel);
	mf_config_free(&cfg);
	expect_error("[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n"
		     "max_connections=0\n", "max_connections must be");
}

static void test_cache_keys(void **state)
{
	static const char acct[] = "[account a]\ntype=imap\nhost=h\nuser=u\n"
				   "password=p\n";
	struct mf_config *cfg;
	char text[512];

	(void)state;
	cfg = parse_ok("[general]\ncache_max_size = 2G\n[account a]\n"
		       "type=imap\nhost=h\nuser=u\npassword=p\n"
		       "prefetch = all\nprefetch_max_size = 512k\n"
		       "prefetch_max_age = 30\n");
	assert_true(cfg->cache_max_size == 2ULL << 30);
	assert_true(cfg->accounts[0].prefetch_max_size == 512ULL << 10);
	assert_int_equal(cfg->accounts[0].prefetch_max_age, 30);
	mf_config_free(&cfg);
	cfg = parse_ok(acct);
	assert_true(cfg->cache_max_size == 0);
	assert_true(cfg->accounts[0].prefetch_max_size == 0);
	assert_int_equal(cfg->accounts[0].prefetch_max_age, 0);
	mf_config_free(&cfg);
	cfg = parse_ok("[general]\ncache_max_size = 1500\n[account a]\n"
		       "type=imap\nhost=h\nuser=u\npassword=p\n"
		       "prefetch_max_size = 3MB\n");
	assert_true(cfg->cache_max_size == 1500);
	assert_true(cfg->accounts[0].prefetch_max_size == 3ULL << 20);
	mf_config_free(&cfg);
	expect_error("[general]\ncache_max_size = 2X\n", "must be a size");
	expect_error("[general]\ncache_max_size = G\n", "must be a size");
	expect_error("[general]\ncache_max_size = -1\n", "must be a size");
	expect_error("[general]\ncache_max_size = 99999999999T\n",
		     "must be a size");
	snprintf(text, sizeof(text), "%sprefetch_max_size = 1.5M\n", acct);
	expect_error(text, "prefetch_max_size must be a size");
	snprintf(text, sizeof(text), "%sprefetch_max_age = x\n", acct);
	expect_error(text, "prefetch_max_age must be a number");
}

static void test_graph(void **state)
{
	struct mf_config *cfg;

	(void)state;
	cfg = parse_ok("[account o365]\ntype = graph\n"
		       "user = alice@contoso.com\n"
		       "api_url = http://127.0.0.1:8080/v1.0\n"
		       "token_command = echo T\n");
	assert_string_equal(cfg->accounts[0].type, "graph");
	assert_string_equal(mf_account_get(&cfg->accounts[0], "api_url"),
			    "http://127.0.0.1:8080/v1.0");
	mf_config_free(&cfg);
	/* user is optional: requests go to /me */
	cfg = parse_ok("[account o365]\ntype = graph\n");
	mf_config_free(&cfg);
	expect_error("[account o365]\ntype = graph\napi_url = ftp://x/\n",
		     "api_url");
}

static void test_password_command(void **state)
{
	struct mf_config *cfg;
	char *pw = NULL, *err = NULL;

	(void)state;
	cfg = parse_ok("[account a]\ntype=imap\nhost=h\nuser=u\n"
		       "password_command = printf 'hunter2\\nsecond'\n");
	assert_int_equal(mf_account_password(&cfg->accounts[0], &pw, &err),
			 0);
	assert_string_equal(pw, "hunter2");
	free(pw);
	mf_config_free(&cfg);

	cfg = parse_ok("[account a]\ntype=imap\nhost=h\nuser=u\n"
		       "password_command = exit 3\n");
	assert_true(mf_account_password(&cfg->accounts[0], &pw, &err) < 0);
	assert_non_null(strstr(err, "status 3"));
	free(err);
	mf_config_free(&cfg);
}

#define ACCTS "[account a]\ntype=imap\nhost=h\nuser=u\npassword=p\n" \
	      "[account b]\ntype=imap\nhost=h\nuser=u\npassword=p\n"

static void test_views(void **state)
{
	struct mf_config *cfg;
	const struct mf_view *v;

	(void)state;
	cfg = parse_ok(ACCTS
		       "[view lists]\n"
		       "match = List-Id: *linux-kernel*\n"
		       "match = From:*@example.org  # comment\n"
		       "match = list-id: other\n"
		       "match = account: a\n"
		       "[view only-b]\n"
		       "match = Subject: [PATCH*\n"
		       "account = b\n"
		       "folders = INBOX Lists/* !Lists/old\n");
	assert_int_equal(cfg->view_count, 2);
	v = &cfg->views[0];
	assert_string_equal(v->dirname, "@lists");
	assert_int_equal(v->rule_count, 4);
	assert_string_equal(v->rules[0].field, "list-id");
	assert_string_equal(v->rules[0].glob, "*linux-kernel*");
	assert_string_equal(v->rules[1].field, "from");
	assert_string_equal(v->rules[1].glob, "*@example.org");
	assert_null(v->accounts);
	assert_true(mf_view_wants(v, "a", "Trash"));
	v = &cfg->views[1];
	assert_true(mf_view_wants(v, "b", "Lists/x"));
	assert_false(mf_view_wants(v, "b", "Lists/old"));
	assert_false(mf_view_wants(v, "a", "INBOX"));
	/* Fields to fetch: per account, upper case, no duplicates, no
	 * pseudo fields, no Message-ID (always fetched). */
	assert_string_equal(cfg->accounts[0].view_fields, "LIST-ID FROM");
	assert_string_equal(cfg->accounts[1].view_fields,
			    "LIST-ID FROM SUBJECT");
	mf_config_free(&cfg);

	cfg = parse_ok(ACCTS "[view acct]\nmatch = account: *\n");
	assert_null(cfg->accounts[0].view_fields);
	mf_config_free(&cfg);
	cfg = parse_ok(ACCTS);
	assert_int_equal(cfg->view_count, 0);
	assert_null(cfg->accounts[0].view_fields);
	mf_config_free(&cfg);

	expect_error(ACCTS "[view x]\naccount = a\n", "no \"match\" line");
	expect_error(ACCTS "[view x]\nmatch = nocolon\n", "Header: pattern");
	expect_error(ACCTS "[view x]\nmatch = : x\n", "Header: pattern");
	expect_error(ACCTS "[view x]\nmatch = From:\n", "no pattern");
	expect_error(ACCTS "[view x]\nmatch = Fr om: x\n", "not a header");
	expect_error(ACCTS "[view x]\nmatch = X)(: x\n", "not a header");
	expect_error(ACCTS "[view x]\nmatch = X]: x\n", "not a header");
	expect_error(ACCTS "[view x]\nmatch = a: b\naccount = c\n",
		     "account \"c\", which is not configured");
	expect_error(ACCTS "[view]\nmatch = a: b\n", "[view NAME]");
	expect_error(ACCTS "[view a/b]\nmatch = a: b\n", "[view NAME]");
	expect_error(ACCTS "[view x]\nmatch = a: b\n[view x]\nmatch = a: b\n",
		     "defined twice");
	expect_error(ACCTS "[view x]\nmatch = a: b\naccount = a\n"
		     "account = b\n", "set twice");
	expect_error("[account @x]\ntype=imap\nhost=h\nuser=u\n"
		     "password=p\n[view x]\nmatch = a: b\n",
		     "the name of an account");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_gmail_delete_default),
		cmocka_unit_test(test_plaintext),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_transport_keys),
		cmocka_unit_test(test_cache_keys),
		cmocka_unit_test(test_password_command),
		cmocka_unit_test(test_views),
		cmocka_unit_test(test_graph),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
