/*
 * Tests for the incremental IMAP response parser (net/imap_parser.c).
 *
 * Table-driven, after dovecot's test-imap-parser: every input is fed
 * whole and again one byte at a time, and both must give the same
 * rendering of the token trees. The rendering used here:
 *   response: TYPE ARGS [CODE] |TEXT     (TYPE: *, +, or the tag)
 *   atom: as is; number: #N; string: "s"; NIL; list: (a b)
 *   literal: {N}bytes, streamed {N}S, binary prefixed with ~
 * Responses are joined with newlines.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../net/imap_backend.h"
#include "../../net/imap_parser.h"
#include "mf_util.h"

struct collect {
	struct mf_buf out;
	unsigned int responses;
	/* streaming */
	struct mf_buf streamed;
	unsigned int chunks;
	int pause_after;	/* pause after this many responses; 0 = no */
};

static void ser_token(struct mf_buf *b, const struct imap_token *t)
{
	switch (t->type) {
	case IMAP_TOK_ATOM:
		mf_buf_appends(b, t->str);
		break;
	case IMAP_TOK_NUMBER:
		mf_buf_printf(b, "#%llu", (unsigned long long)t->num);
		break;
	case IMAP_TOK_STRING:
		mf_buf_appendc(b, '"');
		mf_buf_append(b, t->str, t->len);
		mf_buf_appendc(b, '"');
		break;
	case IMAP_TOK_LITERAL:
		mf_buf_printf(b, "%s{%zu}", t->binary ? "~" : "", t->len);
		if (t->streamed)
			mf_buf_appendc(b, 'S');
		else
			mf_buf_append(b, t->str, t->len);
		break;
	case IMAP_TOK_NIL:
		mf_buf_appends(b, "NIL");
		break;
	case IMAP_TOK_LIST:
		mf_buf_appendc(b, '(');
		for (unsigned int i = 0; i < t->count; i++) {
			if (i > 0)
				mf_buf_appendc(b, ' ');
			ser_token(b, &t->list[i]);
		}
		mf_buf_appendc(b, ')');
		break;
	}
}

static int collect_cb(void *ctx, const struct imap_response *r)
{
	struct collect *c = ctx;
	struct mf_buf *b = &c->out;

	if (c->responses > 0)
		mf_buf_appendc(b, '\n');
	c->responses++;
	switch (r->type) {
	case IMAP_RESP_UNTAGGED:
		mf_buf_appendc(b, '*');
		break;
	case IMAP_RESP_CONTINUATION:
		mf_buf_appendc(b, '+');
		break;
	case IMAP_RESP_TAGGED:
		mf_buf_appends(b, r->tag);
		break;
	}
	for (unsigned int i = 0; i < r->arg_count; i++) {
		mf_buf_appendc(b, ' ');
		ser_token(b, &r->args[i]);
	}
	if (r->code != NULL) {
		mf_buf_appends(b, " [");
		for (unsigned int i = 0; i < r->code->count; i++) {
			if (i > 0)
				mf_buf_appendc(b, ' ');
			ser_token(b, &r->code->list[i]);
		}
		mf_buf_appendc(b, ']');
	}
	if (r->status != IMAP_STATUS_NONE ||
	    r->type == IMAP_RESP_CONTINUATION) {
		mf_buf_appends(b, " |");
		mf_buf_appends(b, r->text);
	}
	if (c->pause_after != 0 && (int)c->responses == c->pause_after)
		return 1;
	return 0;
}

static int sink_begin(void *ctx, const char *prev, uint64_t size)
{
	(void)ctx;
	(void)size;
	return prev != NULL && strncmp(prev, "BODY[]", 6) == 0 ? 1 : 0;
}

static void sink_data(void *ctx, const void *data, size_t len)
{
	struct collect *c = ctx;

	mf_buf_append(&c->streamed, data, len);
	c->chunks++;
}

struct pcase {
	const char *name;
	const char *in;
	size_t in_len;		/* 0: strlen(in) */
	const char *out;	/* expected rendering, or NULL for error */
	size_t out_len;
	const char *error;	/* expected error substring */
};

/* sizeof: inputs and outputs may contain NUL bytes */
#define OK_CASE(n, i, o) { n, i, sizeof(i) - 1, o, sizeof(o) - 1, NULL }
#define ERR_CASE(n, i, e) { n, i, sizeof(i) - 1, NULL, 0, e }

static const struct pcase cases[] = {
	OK_CASE("greeting",
		"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN] "
		"Dovecot ready.\r\n",
		"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN] "
		"|Dovecot ready."),
	OK_CASE("preauth", "* PREAUTH welcome\r\n", "* PREAUTH |welcome"),
	OK_CASE("capability",
		"* CAPABILITY IMAP4rev1 IDLE MOVE QRESYNC COMPRESS=DEFLATE\r\n",
		"* CAPABILITY IMAP4rev1 IDLE MOVE QRESYNC COMPRESS=DEFLATE"),
	OK_CASE("list",
		"* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\n"
		"* LIST (\\Noselect) \"/\" \"a \\\"quoted\\\" \\\\name\"\r\n"
		"* LIST () \".\" {6}\r\nfoo\"ba\r\n"
		"* LIST (\\HasNoChildren) NIL INBOX\r\n",
		"* LIST (\\HasNoChildren \\Trash) \"/\" Trash\n"
		"* LIST (\\Noselect) \"/\" \"a \"quoted\" \\name\"\n"
		"* LIST () \".\" {6}foo\"ba\n"
		"* LIST (\\HasNoChildren) NIL INBOX"),
	OK_CASE("list extended",
		"* LIST (\\HasChildren) \"/\" \"Archive\" "
		"(\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
		"* LIST (\\HasChildren) \"/\" \"Archive\" "
		"(\"CHILDINFO\" (\"SUBSCRIBED\"))"),
	OK_CASE("status",
		"* STATUS \"INBOX\" (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY "
		"1 HIGHESTMODSEQ 18446744073709551615)\r\n",
		"* STATUS \"INBOX\" (MESSAGES #231 UIDNEXT #44292 UIDVALIDITY "
		"#1 HIGHESTMODSEQ #18446744073709551615)"),
	OK_CASE("select",
		"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
		"* OK [PERMANENTFLAGS (\\Answered \\Seen \\*)] Flags "
		"permitted.\r\n"
		"* 172 EXISTS\r\n"
		"* 1 RECENT\r\n"
		"* OK [UNSEEN 12] Message 12 is first unseen\r\n"
		"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
		"* OK [UIDNEXT 4392] Predicted next UID\r\n"
		"* OK [HIGHESTMODSEQ 77] Highest\r\n"
		"* OK [NOMODSEQ] Sorry\r\n"
		"A142 OK [READ-WRITE] SELECT completed\r\n",
		"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"
		"* OK [PERMANENTFLAGS (\\Answered \\Seen \\*)] |Flags "
		"permitted.\n"
		"* #172 EXISTS\n"
		"* #1 RECENT\n"
		"* OK [UNSEEN #12] |Message 12 is first unseen\n"
		"* OK [UIDVALIDITY #3857529045] |UIDs valid\n"
		"* OK [UIDNEXT #4392] |Predicted next UID\n"
		"* OK [HIGHESTMODSEQ #77] |Highest\n"
		"* OK [NOMODSEQ] |Sorry\n"
		"A142 OK [READ-WRITE] |SELECT completed"),
	OK_CASE("fetch listing",
		"* 12 FETCH (UID 44 FLAGS (\\Seen $Forwarded) RFC822.SIZE 4423 "
		"INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
		"BODY[HEADER.FIELDS (MESSAGE-ID)] {23}\r\n"
		"Message-ID: <a@b.c>\r\n\r\n"
		")\r\n",
		"* #12 FETCH (UID #44 FLAGS (\\Seen $Forwarded) RFC822.SIZE "
		"#4423 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
		"BODY[HEADER.FIELDS (MESSAGE-ID)] {23}Message-ID: <a@b.c>\r\n"
		"\r\n)"),
	OK_CASE("fetch body origin",
		"* 1 FETCH (BODY[]<0> {3}\r\nabc UID 7)\r\n",
		"* #1 FETCH (BODY[]<0> {3}abc UID #7)"),
	OK_CASE("fetch modseq",
		"* 3 FETCH (UID 9 FLAGS () MODSEQ (12345))\r\n",
		"* #3 FETCH (UID #9 FLAGS () MODSEQ (#12345))"),
	OK_CASE("vanished",
		"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n"
		"* VANISHED 5\r\n",
		"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\n"
		"* VANISHED #5"),
	OK_CASE("copyuid",
		"A003 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
		"* OK [COPYUID 9 1:3 10:12] Moved UIDs.\r\n"
		"A004 OK [APPENDUID 9 5] Append completed.\r\n",
		"A003 OK [COPYUID #38505 304,319:320 3956:3958] |Done\n"
		"* OK [COPYUID #9 1:3 10:12] |Moved UIDs.\n"
		"A004 OK [APPENDUID #9 #5] |Append completed."),
	OK_CASE("no with code",
		"a1 NO [TRYCREATE] Mailbox doesn't exist: x\r\n"
		"a2 BAD Error in IMAP command: [unbalanced\r\n",
		"a1 NO [TRYCREATE] |Mailbox doesn't exist: x\n"
		"a2 BAD |Error in IMAP command: [unbalanced"),
	OK_CASE("continuation",
		"+ idling\r\n+\r\n+ \r\n+ dGVzdA==\r\n",
		"+ |idling\n+ |\n+ |\n+ |dGVzdA=="),
	OK_CASE("bye", "* BYE Server shutting down.\r\n",
		"* BYE |Server shutting down."),
	OK_CASE("nil and nested",
		"* 1 FETCH (ENVELOPE (NIL \"s\" ((NIL NIL \"a\" \"b\")) "
		"nil))\r\n",
		"* #1 FETCH (ENVELOPE (NIL \"s\" ((NIL NIL \"a\" \"b\")) "
		"NIL))"),
	OK_CASE("escapes",
		"* LIST () \"\\\\\" \"x\\\"y\\\\z\"\r\n",
		"* LIST () \"\\\" \"x\"y\\z\""),
	OK_CASE("literal8",
		"* 1 FETCH (BINARY[] ~{4}\r\na\0b\n)\r\n",
		"* #1 FETCH (BINARY[] ~{4}a\0b\n)"),
	OK_CASE("literal plus and empty",
		"* 1 FETCH (X {0+}\r\n Y {0}\r\n)\r\n",
		"* #1 FETCH (X {0} Y {0})"),
	OK_CASE("lenient LF and spaces",
		"*  1   EXISTS\n\r\n\n* OK   [ALERT]  hi\n",
		"* #1 EXISTS\n* OK [ALERT] | hi"),
	OK_CASE("empty list and enabled",
		"* ENABLED QRESYNC\r\n* SEARCH\r\n* FLAGS ()\r\n",
		"* ENABLED QRESYNC\n* SEARCH\n* FLAGS ()"),
	OK_CASE("8-bit text and atom",
		"* LIST () \"/\" caf\xc3\xa9\r\n* OK h\xc3\xa9llo\r\n",
		"* LIST () \"/\" caf\xc3\xa9\n* OK |h\xc3\xa9llo"),

	ERR_CASE("unterminated quote", "* LIST () \"/\" \"abc\r\n",
		 "unterminated quoted string"),
	ERR_CASE("literal 2^63", "* 1 FETCH (BODY[] {9223372036854775808}\r\n",
		 "literal size too large"),
	ERR_CASE("literal 10^20",
		 "* 1 FETCH (BODY[] {99999999999999999999}\r\n",
		 "literal size too large"),
	ERR_CASE("negative literal", "* 1 FETCH (BODY[] {-5}\r\n",
		 "invalid literal size"),
	ERR_CASE("literal junk", "* 1 FETCH (BODY[] {5x}\r\n",
		 "invalid literal size"),
	ERR_CASE("literal not at eol", "* 1 FETCH (BODY[] {5} x\r\n",
		 "not at the end"),
	ERR_CASE("inline literal too big", "* 1 FETCH (X {16777217}\r\n",
		 "too large"),
	ERR_CASE("number overflow", "* 99999999999999999999 EXISTS\r\n",
		 "number too large"),
	ERR_CASE("unbalanced )", "* FLAGS ())\r\n", "unexpected ')'"),
	ERR_CASE("unterminated list", "* FLAGS (\\Seen\r\n",
		 "unterminated list"),
	ERR_CASE("unterminated code", "* OK [UIDNEXT 5\r\n",
		 "unterminated response code"),
	ERR_CASE("garbage tag", "\x01\x02\x03 OK\r\n", "invalid character"),
	ERR_CASE("8-bit tag", "\xff\xfe OK\r\n", "invalid character"),
	ERR_CASE("ctl in atom", "* FLAGS (\\Se\x01n)\r\n",
		 "invalid character"),
	ERR_CASE("unterminated section", "* 1 FETCH (BODY[HEADER\r\n",
		 "unterminated section"),
	ERR_CASE("NUL in atom", "* FLAGS (\\Se\0en)\r\n", "NUL byte"),
	ERR_CASE("NUL in text", "* OK a\0b\r\n", "NUL byte"),
};


/* Feed in pieces of step bytes (0 = all at once). */
static int run_feed(const char *in, size_t len, size_t step,
		    struct collect *c, char **error_r)
{
	struct imap_parser *p = imap_parser_new(collect_cb, c);
	struct imap_literal_sink sink = {
		.threshold = 16,
		.max_size = 1 << 20,
		.begin = sink_begin,
		.data = sink_data,
		.ctx = c,
	};
	int ret = 0;

	imap_parser_set_literal_sink(p, &sink);
	if (step == 0)
		step = len;
	for (size_t i = 0; i < len; i += step) {
		size_t n = MF_MIN(step, len - i);
		ssize_t r = imap_parser_feed(p, in + i, n);
		if (r < 0) {
			*error_r = xstrdup(imap_parser_error(p));
			ret = -1;
			break;
		}
		assert_int_equal((size_t)r, n);
	}
	imap_parser_free(&p);
	return ret;
}

static void check_case(const struct pcase *t)
{
	size_t len = t->in_len != 0 ? t->in_len : strlen(t->in);
	size_t steps[] = { 0, 1, 2, 7 };

	for (size_t s = 0; s < MF_ARRAY_SIZE(steps); s++) {
		struct collect c;
		char *err = NULL;
		int r;

		memset(&c, 0, sizeof(c));
		mf_buf_init(&c.out);
		mf_buf_init(&c.streamed);
		r = run_feed(t->in, len, steps[s], &c, &err);
		if (t->out != NULL) {
			if (r != 0)
				fail_msg("%s (step %zu): error %s", t->name,
					 steps[s], err);
			if (c.out.len != t->out_len ||
			    memcmp(c.out.data, t->out, t->out_len) != 0)
				fail_msg("%s (step %zu):\n got: %s\nwant: %s",
					 t->name, steps[s], c.out.data,
					 t->out);
		} else {
			if (r == 0)
				fail_msg("%s (step %zu): no error; got %s",
					 t->name, steps[s], c.out.data);
			if (strstr(err, t->error) == NULL)
				fail_msg("%s: error \"%s\", want \"%s\"",
					 t->name, err, t->error);
		}
		free(err);
		mf_buf_free(&c.out);
		mf_buf_free(&c.streamed);
	}
}

static void test_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < MF_ARRAY_SIZE(cases); i++)
		check_case(&cases[i]);
}

static void test_streamed_body(void **state)
{
	struct mf_buf in, want;
	(void)state;

	mf_buf_init(&in);
	mf_buf_init(&want);
	for (int i = 0; i < 5000; i++)
		mf_buf_printf(&want, "line %d\r\n", i);
	mf_buf_appends(&in, "* 5 FETCH (UID 9 BODY[] ");
	mf_buf_printf(&in, "{%zu}\r\n", want.len);
	mf_buf_append(&in, want.data, want.len);
	mf_buf_appends(&in, " FLAGS (\\Seen))\r\na1 OK done\r\n");

	size_t steps[] = { 0, 1, 4096 };
	for (size_t s = 0; s < MF_ARRAY_SIZE(steps); s++) {
		struct collect c;
		char *err = NULL;
		char exp[128];

		memset(&c, 0, sizeof(c));
		mf_buf_init(&c.out);
		mf_buf_init(&c.streamed);
		assert_int_equal(run_feed(in.data, in.len, steps[s], &c,
					  &err), 0);
		snprintf(exp, sizeof(exp),
			 "* #5 FETCH (UID #9 BODY[] {%zu}S FLAGS (\\Seen))\n"
			 "a1 OK |done", want.len);
		assert_string_equal(c.out.data, exp);
		assert_int_equal(c.streamed.len, want.len);
		assert_memory_equal(c.streamed.data, want.data, want.len);
		if (steps[s] != 0)
			assert_true(c.chunks > 1);
		mf_buf_free(&c.out);
		mf_buf_free(&c.streamed);
	}
	mf_buf_free(&in);
	mf_buf_free(&want);
}

static void test_streamed_cap(void **state)
{
	struct collect c;
	char *err = NULL;
	const char *in = "* 1 FETCH (BODY[] {2000000}\r\nabc";
	(void)state;

	memset(&c, 0, sizeof(c));
	mf_buf_init(&c.out);
	mf_buf_init(&c.streamed);
	assert_int_equal(run_feed(in, strlen(in), 0, &c, &err), -1);
	assert_non_null(strstr(err, "exceeds the limit"));
	free(err);
	mf_buf_free(&c.out);
	mf_buf_free(&c.streamed);
}

static void test_long_line(void **state)
{
	struct imap_parser *p;
	struct collect c;
	char *chunk = xmalloc(65536);
	size_t fed = 0;
	ssize_t r = 0;
	(void)state;

	memset(&c, 0, sizeof(c));
	mf_buf_init(&c.out);
	memset(chunk, 'a', 65536);
	p = imap_parser_new(collect_cb, &c);
	r = imap_parser_feed(p, "* OK ", 5);
	assert_int_equal(r, 5);
	while (fed < 10 * 1024 * 1024) {
		r = imap_parser_feed(p, chunk, 65536);
		if (r < 0)
			break;
		fed += 65536;
	}
	assert_true(r < 0);
	assert_true(fed <= IMAP_PARSER_MAX_LINE);
	assert_non_null(strstr(imap_parser_error(p), "longer than"));
	/* stays failed */
	assert_true(imap_parser_feed(p, "\r\n", 2) < 0);
	imap_parser_free(&p);
	free(chunk);
	mf_buf_free(&c.out);
}

static void test_deep_nesting(void **state)
{
	struct collect c;
	struct mf_buf in;
	char *err = NULL;
	(void)state;

	mf_buf_init(&in);
	mf_buf_appends(&in, "* X ");
	for (int i = 0; i < 1000; i++)
		mf_buf_appendc(&in, '(');
	for (int i = 0; i < 1000; i++)
		mf_buf_appendc(&in, ')');
	mf_buf_appends(&in, "\r\n");
	for (size_t step = 0; step <= 1; step++) {
		memset(&c, 0, sizeof(c));
		mf_buf_init(&c.out);
		assert_int_equal(run_feed(in.data, in.len, step, &c, &err),
				 -1);
		assert_non_null(strstr(err, "nested deeper"));
		free(err);
		err = NULL;
		mf_buf_free(&c.out);
	}
	/* 64 levels are fine */
	mf_buf_reset(&in);
	mf_buf_appends(&in, "* X ");
	for (int i = 0; i < 63; i++)
		mf_buf_appendc(&in, '(');
	for (int i = 0; i < 63; i++)
		mf_buf_appendc(&in, ')');
	mf_buf_appends(&in, "\r\n");
	memset(&c, 0, sizeof(c));
	mf_buf_init(&c.out);
	assert_int_equal(run_feed(in.data, in.len, 1, &c, &err), 0);
	mf_buf_free(&c.out);
	mf_buf_free(&in);
}

static void test_pause(void **state)
{
	const char *in = "a1 OK done\r\n* 3 EXISTS\r\n";
	struct imap_parser *p;
	struct collect c;
	ssize_t r;
	(void)state;

	memset(&c, 0, sizeof(c));
	mf_buf_init(&c.out);
	c.pause_after = 1;
	p = imap_parser_new(collect_cb, &c);
	r = imap_parser_feed(p, in, strlen(in));
	assert_int_equal(r, 12);
	assert_string_equal(c.out.data, "a1 OK |done");
	r = imap_parser_feed(p, in + 12, strlen(in) - 12);
	assert_int_equal(r, (ssize_t)strlen(in) - 12);
	assert_string_equal(c.out.data, "a1 OK |done\n* #3 EXISTS");
	imap_parser_free(&p);
	mf_buf_free(&c.out);
}

static void test_random_garbage(void **state)
{
	unsigned int seed = 12345;
	(void)state;

	for (int round = 0; round < 300; round++) {
		char buf[512];
		struct collect c;
		char *err = NULL;
		size_t len = 1 + (size_t)(rand_r(&seed) % sizeof(buf));

		for (size_t i = 0; i < len; i++) {
			int k = rand_r(&seed) % 10;
			static const char tokens[] = "*+ ()[]{}\"\\~<>\r\n0123";
			buf[i] = k < 7 ? tokens[rand_r(&seed) %
						(sizeof(tokens) - 1)] :
				 (char)(rand_r(&seed) & 0xff);
		}
		memset(&c, 0, sizeof(c));
		mf_buf_init(&c.out);
		mf_buf_init(&c.streamed);
		(void)run_feed(buf, len, (size_t)(round % 3), &c, &err);
		free(err);
		mf_buf_free(&c.out);
		mf_buf_free(&c.streamed);
	}
}

static void test_helpers(void **state)
{
	int64_t t;
	char *m;
	(void)state;

	assert_int_equal(imap_parse_datetime("17-Jul-1996 02:44:25 -0700",
					     &t), 0);
	assert_int_equal(t, 837596665);
	assert_int_equal(imap_parse_datetime(" 1-Jan-1970 00:00:00 +0000",
					     &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(imap_parse_datetime("01-Jan-2000 01:30:00 +0130",
					     &t), 0);
	assert_int_equal(t, 946684800);
	assert_int_equal(imap_parse_datetime("17-Foo-1996 02:44:25 -0700",
					     &t), -EINVAL);
	assert_int_equal(imap_parse_datetime("17-Jul-1996 02:44:25", &t),
			 -EINVAL);

	m = imap_header_message_id("Message-ID: <a@b>\r\n\r\n", 21);
	assert_string_equal(m, "<a@b>");
	free(m);
	m = imap_header_message_id("message-id:\r\n  <long@x.y>  \r\n\r\n",
				   31);
	assert_string_equal(m, "<long@x.y>");
	free(m);
	m = imap_header_message_id("\r\n", 2);
	assert_null(m);
	m = imap_header_message_id("Message-IDx: <a>\r\n", 18);
	assert_null(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_streamed_body),
		cmocka_unit_test(test_streamed_cap),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_pause),
		cmocka_unit_test(test_random_garbage),
		cmocka_unit_test(test_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
