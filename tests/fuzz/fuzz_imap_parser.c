/*
 * libFuzzer target: the incremental IMAP response parser
 * (net/imap_parser.c).
 *
 * Input layout: byte 0 = options (1: literal sink on, 0x10: pause in
 * the callback, 0x20: stream every literal, 0x40: sink max_size 64,
 * 0x80: use begin_in), byte 1 = split seed, byte 2 = literal
 * sink threshold selector; the rest is the server's byte stream.
 *
 * The stream is parsed twice: once in one piece and once in pieces of
 * pseudo-random sizes (one byte at a time when the seed says so), with the
 * callback pausing the parser now and then (returning 1). Both runs must
 * produce exactly the same rendering of every response, the same streamed
 * literal bytes, and the same error state. Every token tree is walked and
 * formatted (imap_response_format, imap_token_format) so that a dangling
 * pointer or a bad length shows up under ASan.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_parser.h"
#include "mf_util.h"

#define RENDER_CAP (256 * 1024)

struct run {
	struct mf_buf out;	/* rendering of every response */
	struct mf_buf streamed;	/* streamed literal bytes */
	unsigned int responses;
	bool pausing;		/* the callback returns 1 sometimes */
	uint32_t rng;
	struct imap_literal_sink sink;
	bool sink_stream_all;	/* begin() says 1 for every literal */
	bool in_literal;
	uint64_t expect;	/* bytes still due for the open literal */
};

static uint32_t next_rand(uint32_t *s)
{
	/* xorshift32; never 0 */
	uint32_t x = *s ? *s : 0x9e3779b9u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

static void walk(struct run *r, const struct imap_token *t, unsigned int depth)
{
	/* The parser promises a nesting limit. */
	if (depth > IMAP_PARSER_MAX_DEPTH + 2)
		abort();
	switch (t->type) {
	case IMAP_TOK_ATOM:
	case IMAP_TOK_NUMBER:
	case IMAP_TOK_STRING:
		if (!t->str || t->str[t->len] != '\0')
			abort();
		if (t->type != IMAP_TOK_STRING && strlen(t->str) != t->len)
			abort();	/* atoms cannot hold NUL */
		if (t->type == IMAP_TOK_NUMBER) {
			uint64_t v;

			if (imap_token_u64(t, &v) != 0 || v != t->num)
				abort();
		}
		(void)imap_token_str(t);
		(void)imap_token_is_atom(t, "FETCH");
		(void)imap_token_atom_prefix(t, "BODY[");
		break;
	case IMAP_TOK_LITERAL:
		if (t->streamed) {
			if (t->str)
				abort();
		} else {
			if (!t->str || t->str[t->len] != '\0')
				abort();
			/* touch every byte */
			volatile unsigned char sum = 0;

			for (size_t i = 0; i < t->len; i++)
				sum ^= (unsigned char)t->str[i];
			(void)sum;
		}
		break;
	case IMAP_TOK_NIL:
		break;
	case IMAP_TOK_LIST:
		if (t->count && !t->list)
			abort();
		for (unsigned int i = 0; i < t->count; i++)
			walk(r, &t->list[i], depth + 1);
		break;
	default:
		abort();
	}
}

static int on_response(void *ctx, const struct imap_response *resp)
{
	struct run *r = ctx;
	struct mf_buf b;

	r->responses++;
	if (resp->type == IMAP_RESP_TAGGED && !resp->tag)
		abort();
	if (resp->arg_count && !resp->args)
		abort();
	if (!resp->text)
		abort();
	for (unsigned int i = 0; i < resp->arg_count; i++)
		walk(r, &resp->args[i], 1);
	if (resp->code)
		walk(r, resp->code, 1);

	mf_buf_init(&b);
	imap_response_format(resp, &b);
	mf_buf_appendc(&b, '|');
	mf_buf_printf(&b, "%d/%d/%u/", (int)resp->type, (int)resp->status,
		      resp->arg_count);
	for (unsigned int i = 0; i < resp->arg_count; i++)
		imap_token_format(&resp->args[i], &b, true);
	mf_buf_appends(&b, resp->text);
	mf_buf_appendc(&b, '\n');
	if (r->out.len + b.len < RENDER_CAP)
		mf_buf_append(&r->out, b.data, b.len);
	mf_buf_free(&b);

	if (r->pausing && (next_rand(&r->rng) & 3) == 0)
		return 1;
	return 0;
}

static int sink_begin(void *ctx, const char *prev_atom, uint64_t size)
{
	struct run *r = ctx;

	if (r->in_literal && r->expect)
		abort();	/* a new literal before the last one ended */
	mf_buf_printf(&r->streamed, "<begin %s %llu>", prev_atom ? prev_atom : "-",
		      (unsigned long long)size);
	if (!r->sink_stream_all && prev_atom &&
	    strncasecmp(prev_atom, "BODY", 4) != 0)
		return 0;
	r->in_literal = true;
	r->expect = size;
	return 1;
}

/* begin_in: the list holds the literal as its last element. */
static int sink_begin_in(void *ctx, const struct imap_token *list,
			 const char *prev_atom, uint64_t size)
{
	struct run *r = ctx;

	if (!list || list->type != IMAP_TOK_LIST || list->count == 0 ||
	    list->list[list->count - 1].type != IMAP_TOK_LITERAL)
		abort();
	for (unsigned int i = 0; i + 1 < list->count; i++)
		walk(r, &list->list[i], 1);
	return sink_begin(ctx, prev_atom, size);
}

static void sink_data(void *ctx, const void *data, size_t len)
{
	struct run *r = ctx;

	if (!r->in_literal || len > r->expect)
		abort();	/* more bytes than the literal announced */
	r->expect -= len;
	if (r->streamed.len + len < RENDER_CAP)
		mf_buf_append(&r->streamed, data, len);
	else {
		/* still touch the bytes */
		volatile unsigned char s = 0;

		for (size_t i = 0; i < len; i++)
			s ^= ((const unsigned char *)data)[i];
		(void)s;
	}
}

static const uint64_t thresholds[8] = { 0, 1, 2, 7, 16, 100, 4096, UINT64_MAX };

/* Parse data (whole or split); the outcome goes to status. */
static void run_parser(struct run *r, const uint8_t *data, size_t size,
		       bool split, bool sink_on, uint8_t opt, uint8_t seed,
		       uint8_t thr, struct mf_buf *status)
{
	struct imap_parser *p = imap_parser_new(on_response, r);
	size_t pos = 0;
	ssize_t ret = 0;
	unsigned int stuck = 0;

	mf_buf_init(&r->out);
	mf_buf_init(&r->streamed);
	r->responses = 0;
	r->pausing = split && (opt & 0x10);
	r->rng = 0x12345u + seed * 7919u;
	r->sink_stream_all = opt & 0x20;
	r->in_literal = false;
	r->expect = 0;
	memset(&r->sink, 0, sizeof(r->sink));
	r->sink.threshold = thresholds[thr & 7];
	r->sink.max_size = (opt & 0x40) ? 64 : UINT64_MAX;
	r->sink.begin = sink_begin;
	if (opt & 0x80)
		r->sink.begin_in = sink_begin_in;
	r->sink.data = sink_data;
	r->sink.ctx = r;
	if (sink_on)
		imap_parser_set_literal_sink(p, &r->sink);

	while (pos < size) {
		size_t n = size - pos;

		if (split) {
			if ((seed & 3) == 0)
				n = 1;
			else
				n = 1 + next_rand(&r->rng) % (1 + (seed % 61));
			if (n > size - pos)
				n = size - pos;
		}
		ret = imap_parser_feed(p, data + pos, n);
		if (ret < 0)
			break;
		if ((size_t)ret > n)
			abort();
		pos += (size_t)ret;
		if ((size_t)ret == 0 && (!r->pausing || ++stuck > 100000))
			abort();	/* no progress */
	}
	if (ret < 0) {
		const char *e = imap_parser_error(p);

		if (ret == -22 /* EINVAL */ && !e)
			abort();
		mf_buf_printf(status, "error %zd", ret);
		/* After an error every call fails. */
		if (imap_parser_feed(p, "* OK\r\n", 6) >= 0)
			abort();
	} else {
		mf_buf_printf(status, "ok %d", imap_parser_in_response(p) ? 1 : 0);
	}
	/* reset and reuse */
	imap_parser_reset(p);
	if (imap_parser_error(p))
		abort();
	if (imap_parser_feed(p, "* OK fine\r\n", 11) != 11)
		abort();
	imap_parser_free(&p);
	if (p)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run a, b;
	struct mf_buf sa, sb;
	uint8_t opt, seed, thr;
	bool sink_on;

	if (size < 3)
		return 0;
	opt = data[0];
	seed = data[1];
	thr = data[2];
	data += 3;
	size -= 3;
	sink_on = opt & 1;

	mf_buf_init(&sa);
	mf_buf_init(&sb);
	run_parser(&a, data, size, false, sink_on, opt, seed, thr, &sa);
	run_parser(&b, data, size, true, sink_on, opt, seed, thr, &sb);

	/* Same responses, same streamed bytes, same outcome. */
	if (a.out.len != b.out.len ||
	    (a.out.len && memcmp(a.out.data, b.out.data, a.out.len) != 0)) {
		fprintf(stderr, "whole vs split rendering differ:\n--- whole\n%.*s\n--- split\n%.*s\n",
			(int)a.out.len, a.out.data, (int)b.out.len, b.out.data);
		abort();
	}
	if (a.streamed.len != b.streamed.len ||
	    (a.streamed.len &&
	     memcmp(a.streamed.data, b.streamed.data, a.streamed.len) != 0)) {
		fprintf(stderr, "whole vs split streamed literals differ\n");
		abort();
	}
	if (sa.len != sb.len || (sa.len && memcmp(sa.data, sb.data, sa.len) != 0)) {
		fprintf(stderr, "whole vs split outcome differ: %.*s / %.*s\n",
			(int)sa.len, sa.data, (int)sb.len, sb.data);
		abort();
	}
	mf_buf_free(&a.out);
	mf_buf_free(&a.streamed);
	mf_buf_free(&b.out);
	mf_buf_free(&b.streamed);
	mf_buf_free(&sa);
	mf_buf_free(&sb);
	return 0;
}
