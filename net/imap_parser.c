/*
 * Incremental IMAP response parser (see imap_parser.h for the interface).
 *
 * Two input states: P_LINE collects bytes up to a line feed into p->line
 * (capped, so a server that never sends a line end is stopped at the cap
 * without allocating more); P_LITERAL copies or streams the n bytes of a
 * literal announced at the end of the previous line. A finished line is
 * tokenised by parse_line(), which keeps its state (the stack of open
 * lists, and the mode: tag, first word, arguments, response text) in the
 * parser, so a response continues across literals. When a line ends
 * without a literal, the response is complete and handed to the callback;
 * its token tree is freed when the callback returns.
 *
 * Leniency: bare LF line ends, runs of spaces, empty lines between
 * responses, 8-bit bytes in atoms and strings, unknown backslash escapes
 * in quoted strings. Strictness: NUL bytes outside literals, control
 * characters in atoms, unbalanced lists, malformed or oversized literal
 * sizes, numbers beyond 64 bits, nesting deeper than
 * IMAP_PARSER_MAX_DEPTH are parse errors.
 */
#include "imap_parser.h"

#include "mf_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum parser_state {
	P_LINE,
	P_LITERAL,
};

enum parser_mode {
	M_TAG,		/* at the start of a response */
	M_FIRST,	/* before the first word after the tag */
	M_ARGS,		/* tokens */
	M_RTEXT,	/* after a status word: optional [code], then text */
	M_TEXT,		/* the rest of the line is text */
};

struct imap_parser {
	imap_response_cb *cb;
	void *ctx;
	const struct imap_literal_sink *sink;	/* foreign, may be NULL */

	enum parser_state state;
	struct mf_buf line;		/* current line, without its end */
	size_t resp_bytes;		/* earlier lines of this response */
	uint64_t inline_total;		/* inline literal bytes */
	unsigned int tokens;

	/* literal in progress */
	uint64_t lit_left;
	struct imap_token *lit_tok;	/* points into its list */
	struct mf_buf lit_buf;

	/* the response being built */
	bool in_resp;
	enum parser_mode mode;
	enum imap_response_type type;
	char *tag;			/* owned */
	struct imap_token root;		/* LIST of args */
	struct imap_token code;		/* LIST of the response code */
	bool has_code;
	bool code_open;
	enum imap_status status;
	char *text;			/* owned */
	struct imap_token *stack[IMAP_PARSER_MAX_DEPTH + 1];
	unsigned int depth;		/* entries in stack; stack[0] = root */

	char *error;			/* owned; set once failed */
};

static void token_free(struct imap_token *t)
{
	if (t->type == IMAP_TOK_LIST) {
		for (unsigned int i = 0; i < t->count; i++)
			token_free(&t->list[i]);
		free(t->list);
	}
	free(t->str);
	memset(t, 0, sizeof(*t));
}

static void response_clear(struct imap_parser *p)
{
	token_free(&p->root);
	token_free(&p->code);
	p->root.type = IMAP_TOK_LIST;
	p->code.type = IMAP_TOK_LIST;
	free(p->tag);
	p->tag = NULL;
	free(p->text);
	p->text = NULL;
	p->has_code = false;
	p->code_open = false;
	p->status = IMAP_STATUS_NONE;
	p->in_resp = false;
	p->mode = M_TAG;
	p->stack[0] = &p->root;
	p->depth = 1;
	p->resp_bytes = 0;
	p->inline_total = 0;
	p->tokens = 0;
	p->lit_tok = NULL;
	p->lit_left = 0;
	mf_buf_reset(&p->lit_buf);
}

struct imap_parser *imap_parser_new(imap_response_cb *cb, void *ctx)
{
	struct imap_parser *p = xcalloc(1, sizeof(*p));

	p->cb = cb;
	p->ctx = ctx;
	mf_buf_init(&p->line);
	mf_buf_init(&p->lit_buf);
	response_clear(p);
	return p;
}

void imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;

	if (p == NULL)
		return;
	*pp = NULL;
	response_clear(p);
	mf_buf_free(&p->line);
	mf_buf_free(&p->lit_buf);
	free(p->error);
	free(p);
}

void imap_parser_reset(struct imap_parser *p)
{
	response_clear(p);
	mf_buf_reset(&p->line);
	p->state = P_LINE;
	free(p->error);
	p->error = NULL;
}

void imap_parser_set_literal_sink(struct imap_parser *p,
				  const struct imap_literal_sink *sink)
{
	p->sink = sink;
}

const char *imap_parser_error(const struct imap_parser *p)
{
	return p->error;
}

bool imap_parser_in_response(const struct imap_parser *p)
{
	return p->in_resp || p->line.len > 0 || p->state == P_LITERAL;
}

static int fail(struct imap_parser *p, const char *fmt, ...) MF_PRINTF(2, 3);

static int fail(struct imap_parser *p, const char *fmt, ...)
{
	va_list ap;

	if (p->error == NULL) {
		va_start(ap, fmt);
		p->error = xvasprintf(fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static struct imap_token *add_token(struct imap_parser *p,
				    enum imap_token_type type)
{
	struct imap_token *list = p->stack[p->depth - 1];
	struct imap_token *t;

	if (p->tokens >= IMAP_PARSER_MAX_TOKENS) {
		fail(p, "too many tokens in one response (limit %u)",
		     IMAP_PARSER_MAX_TOKENS);
		return NULL;
	}
	p->tokens++;
	/* grow by doubling: the capacity is the next power of two */
	if ((list->count & (list->count - 1)) == 0) {
		unsigned int cap = list->count == 0 ? 4 : list->count * 2;
		if (list->count >= 4 || list->count == 0)
			list->list = xrealloc(list->list,
					      cap * sizeof(*list->list));
	}
	t = &list->list[list->count++];
	memset(t, 0, sizeof(*t));
	t->type = type;
	return t;
}

static bool is_status_word(const struct imap_token *t, enum imap_status *st_r)
{
	static const struct {
		const char *name;
		enum imap_status st;
	} words[] = {
		{ "OK", IMAP_STATUS_OK },
		{ "NO", IMAP_STATUS_NO },
		{ "BAD", IMAP_STATUS_BAD },
		{ "BYE", IMAP_STATUS_BYE },
		{ "PREAUTH", IMAP_STATUS_PREAUTH },
	};

	if (t->type != IMAP_TOK_ATOM)
		return false;
	for (size_t i = 0; i < MF_ARRAY_SIZE(words); i++) {
		if (strcasecmp(t->str, words[i].name) == 0) {
			*st_r = words[i].st;
			return true;
		}
	}
	return false;
}

/* A top-level token was completed while in M_FIRST. */
static void after_first(struct imap_parser *p, const struct imap_token *t)
{
	enum imap_status st;

	if (p->mode != M_FIRST)
		return;
	if (p->depth == 1 && t != NULL && is_status_word(t, &st)) {
		p->status = st;
		p->mode = M_RTEXT;
	} else {
		p->mode = M_ARGS;
	}
}

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static int parse_tag(struct imap_parser *p, const char *s, size_t n,
		     size_t *pos)
{
	size_t i = *pos, start;

	while (i < n && s[i] == ' ')
		i++;
	if (i == n)
		return fail(p, "empty response");
	if (s[i] == '*' && (i + 1 == n || s[i + 1] == ' ')) {
		p->type = IMAP_RESP_UNTAGGED;
		p->mode = M_FIRST;
		*pos = i + 1;
		return 0;
	}
	if (s[i] == '+') {
		p->type = IMAP_RESP_CONTINUATION;
		p->mode = M_RTEXT;
		*pos = i + 1;
		return 0;
	}
	start = i;
	while (i < n && s[i] != ' ') {
		unsigned char c = (unsigned char)s[i];
		if (is_ctl(c) || c >= 0x80 || strchr("(){\"%*\\]", c) != NULL)
			return fail(p, "invalid character 0x%02x in tag", c);
		i++;
	}
	p->type = IMAP_RESP_TAGGED;
	p->tag = xstrndup(s + start, i - start);
	p->mode = M_FIRST;
	*pos = i;
	return 0;
}

static int parse_quoted(struct imap_parser *p, const char *s, size_t n,
			size_t *pos)
{
	struct mf_buf b;
	struct imap_token *t;
	size_t i = *pos + 1;

	mf_buf_init(&b);
	for (;;) {
		if (i >= n) {
			mf_buf_free(&b);
			return fail(p, "unterminated quoted string");
		}
		if (s[i] == '"')
			break;
		if (s[i] == '\\') {
			i++;
			if (i >= n) {
				mf_buf_free(&b);
				return fail(p, "unterminated quoted string");
			}
		} else if (s[i] == '\r') {
			mf_buf_free(&b);
			return fail(p, "CR in quoted string");
		}
		mf_buf_appendc(&b, s[i]);
		i++;
	}
	t = add_token(p, IMAP_TOK_STRING);
	if (t == NULL) {
		mf_buf_free(&b);
		return -EINVAL;
	}
	t->len = b.len;
	t->str = mf_buf_steal(&b);
	*pos = i + 1;
	after_first(p, t);
	return 0;
}

/* Skip a "[...]" section inside an atom, then an optional "<...>". */
static int skip_section(struct imap_parser *p, const char *s, size_t n,
			size_t *pos)
{
	size_t i = *pos;
	unsigned int level = 0;

	for (;;) {
		if (i >= n)
			return fail(p, "unterminated section [...]");
		if (s[i] == '[') {
			level++;
			if (level > IMAP_PARSER_MAX_DEPTH)
				return fail(p, "section nested too deeply");
		} else if (s[i] == ']') {
			level--;
			if (level == 0)
				break;
		} else if (s[i] == '"') {
			i++;
			while (i < n && s[i] != '"') {
				if (s[i] == '\\')
					i++;
				i++;
			}
			if (i >= n)
				return fail(p, "unterminated quoted string");
		} else if (s[i] == '{') {
			return fail(p, "literal inside a section");
		}
		i++;
	}
	i++;
	if (i < n && s[i] == '<') {
		while (i < n && s[i] != '>') {
			if (is_ctl((unsigned char)s[i]) || s[i] == ' ')
				return fail(p, "malformed <origin>");
			i++;
		}
		if (i >= n)
			return fail(p, "unterminated <origin>");
		i++;
	}
	*pos = i;
	return 0;
}

static int parse_atom(struct imap_parser *p, const char *s, size_t n,
		      size_t *pos)
{
	struct imap_token *t;
	size_t i = *pos, start = i;
	bool digits = true;
	int r;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c == ' ' || c == '(' || c == ')' || c == '"')
			break;
		if (c == ']' && p->code_open)
			break;
		if (c == '[') {
			r = skip_section(p, s, n, &i);
			if (r < 0)
				return r;
			digits = false;
			continue;
		}
		if (is_ctl(c))
			return fail(p, "invalid character 0x%02x in atom", c);
		if (c < '0' || c > '9')
			digits = false;
		i++;
	}
	if (i == start)
		return fail(p, "unexpected character '%c'", s[i]);
	if (i - start == 3 && strncasecmp(s + start, "NIL", 3) == 0) {
		t = add_token(p, IMAP_TOK_NIL);
		if (t == NULL)
			return -EINVAL;
		*pos = i;
		after_first(p, t);
		return 0;
	}
	t = add_token(p, digits ? IMAP_TOK_NUMBER : IMAP_TOK_ATOM);
	if (t == NULL)
		return -EINVAL;
	t->str = xstrndup(s + start, i - start);
	t->len = i - start;
	if (digits && mf_parse_u64(t->str, t->len, UINT64_MAX, &t->num) < 0)
		return fail(p, "number too large: %.40s", t->str);
	*pos = i;
	after_first(p, t);
	return 0;
}

/* "{n}" / "{n+}" / "~{n}" at the end of the line: set up the literal. */
static int parse_literal(struct imap_parser *p, const char *s, size_t n,
			 size_t *pos)
{
	struct imap_token *t, *list;
	const char *prev = NULL;
	size_t i = *pos, start;
	bool binary = false;
	uint64_t size;
	int r;

	if (s[i] == '~') {
		binary = true;
		i++;
	}
	i++;			/* '{' */
	start = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	r = mf_parse_u64(s + start, i - start, IMAP_PARSER_MAX_LITERAL_SIZE,
			 &size);
	if (r == -ERANGE)
		return fail(p, "literal size too large");
	if (r < 0)
		return fail(p, "invalid literal size");
	if (i < n && s[i] == '+')
		i++;
	if (i >= n || s[i] != '}')
		return fail(p, "invalid literal size");
	i++;
	if (i != n)
		return fail(p, "literal size not at the end of a line");

	t = add_token(p, IMAP_TOK_LITERAL);
	if (t == NULL)
		return -EINVAL;
	t->binary = binary;
	list = p->stack[p->depth - 1];
	if (list->count >= 2 && list->list[list->count - 2].type ==
	    IMAP_TOK_ATOM)
		prev = list->list[list->count - 2].str;

	if (p->sink != NULL && size > p->sink->threshold) {
		if (p->sink->begin_in != NULL)
			r = p->sink->begin_in(p->sink->ctx, list, prev, size);
		else
			r = p->sink->begin(p->sink->ctx, prev, size);
		if (r < 0)
			return fail(p, "literal of %" PRIu64
				    " bytes refused by the consumer", size);
		if (r > 0) {
			if (size > p->sink->max_size)
				return fail(p, "literal of %" PRIu64
					    " bytes exceeds the limit of %"
					    PRIu64, size, p->sink->max_size);
			t->streamed = true;
		}
	}
	if (!t->streamed) {
		if (size > IMAP_PARSER_MAX_INLINE_LITERAL ||
		    p->inline_total + size > IMAP_PARSER_MAX_INLINE_TOTAL)
			return fail(p, "literal of %" PRIu64
				    " bytes is too large", size);
		p->inline_total += size;
	}
	t->len = (size_t)size;
	p->lit_tok = t;
	p->lit_left = size;
	mf_buf_reset(&p->lit_buf);
	*pos = i;
	after_first(p, t);
	return 1;
}

static int push_list(struct imap_parser *p, struct imap_token *t)
{
	if (p->depth > IMAP_PARSER_MAX_DEPTH)
		return fail(p, "lists nested deeper than %d",
			    IMAP_PARSER_MAX_DEPTH);
	t->type = IMAP_TOK_LIST;
	p->stack[p->depth++] = t;
	return 0;
}

/* One token in M_FIRST/M_ARGS. Returns 0, 1 (literal follows), <0. */
static int parse_token(struct imap_parser *p, const char *s, size_t n,
		       size_t *pos)
{
	struct imap_token *t;
	size_t i = *pos;

	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	*pos = i;
	if (i == n)
		return 0;
	switch (s[i]) {
	case '(':
		t = add_token(p, IMAP_TOK_LIST);
		if (t == NULL)
			return -EINVAL;
		after_first(p, NULL);
		*pos = i + 1;
		return push_list(p, t);
	case ')':
		if (p->depth <= 1 || p->stack[p->depth - 1] == &p->code)
			return fail(p, "unexpected ')'");
		p->depth--;
		*pos = i + 1;
		return 0;
	case '"':
		return parse_quoted(p, s, n, pos);
	case '{':
		return parse_literal(p, s, n, pos);
	case '~':
		if (i + 1 < n && s[i + 1] == '{')
			return parse_literal(p, s, n, pos);
		break;
	case ']':
		if (p->code_open) {
			if (p->stack[p->depth - 1] != &p->code)
				return fail(p, "unexpected ']'");
			p->depth--;
			p->code_open = false;
			i++;
			if (i < n && s[i] == ' ')
				i++;
			*pos = i;
			p->mode = M_TEXT;
			return 0;
		}
		break;
	default:
		break;
	}
	return parse_atom(p, s, n, pos);
}

static int emit_response(struct imap_parser *p)
{
	struct imap_response r;
	int ret;

	if (p->code_open && p->depth == 2)
		return fail(p, "unterminated response code");
	if (p->depth != 1)
		return fail(p, "unterminated list");
	memset(&r, 0, sizeof(r));
	r.type = p->type;
	r.tag = p->tag;
	r.args = p->root.list;
	r.arg_count = p->root.count;
	r.status = p->status;
	r.code = p->has_code ? &p->code : NULL;
	r.text = p->text != NULL ? p->text : "";
	ret = p->cb(p->ctx, &r);
	response_clear(p);
	if (ret < 0) {
		fail(p, "aborted by the consumer");
		return -ECANCELED;
	}
	return ret > 0 ? 2 : 0;
}

/*
 * Tokenise p->line. Returns 0 when more lines of the response follow
 * a literal (state set up), 2 when the callback asked to pause, 1 when
 * a response was completed, <0 on error.
 */
static int parse_line(struct imap_parser *p)
{
	const char *s = p->line.data;
	size_t n = p->line.len, pos = 0;
	int r;

	if (!p->in_resp) {
		if (n == 0)
			return 1;	/* stray empty line */
		p->in_resp = true;
	}
	if (n > 0 && memchr(s, '\0', n) != NULL)
		return fail(p, "NUL byte in response");
	while (pos < n) {
		switch (p->mode) {
		case M_TAG:
			r = parse_tag(p, s, n, &pos);
			break;
		case M_RTEXT:
			while (pos < n && s[pos] == ' ')
				pos++;
			if (pos < n && s[pos] == '[') {
				pos++;
				p->has_code = true;
				p->code_open = true;
				p->mode = M_ARGS;
				r = push_list(p, &p->code);
			} else {
				p->mode = M_TEXT;
				r = 0;
			}
			break;
		case M_TEXT:
			free(p->text);
			p->text = xstrndup(s + pos, n - pos);
			pos = n;
			r = 0;
			break;
		default:
			r = parse_token(p, s, n, &pos);
			if (r == 1)
				return 0;	/* literal follows */
			break;
		}
		if (r < 0)
			return r;
	}
	r = emit_response(p);
	if (r < 0)
		return r;
	return r == 2 ? 2 : 1;
}

static void finish_literal(struct imap_parser *p)
{
	struct imap_token *t = p->lit_tok;

	if (!t->streamed)
		t->str = mf_buf_steal(&p->lit_buf);
	p->lit_tok = NULL;
	p->state = P_LINE;
}

/*
 * Process a finished line; returns 0 to go on, 2 to pause, <0 error.
 */
static int line_done(struct imap_parser *p)
{
	int r;

	if (p->line.len > 0 && p->line.data[p->line.len - 1] == '\r')
		p->line.len--;
	if (p->line.data != NULL)
		p->line.data[p->line.len] = '\0';
	p->resp_bytes += p->line.len + 1;
	r = parse_line(p);
	mf_buf_reset(&p->line);
	if (r < 0)
		return r;
	if (r == 0 && p->state == P_LINE) {
		p->state = P_LITERAL;
		if (p->lit_left == 0)
			finish_literal(p);
	}
	return r == 2 ? 2 : 0;
}

ssize_t imap_parser_feed(struct imap_parser *p, const void *data, size_t len)
{
	const char *d = data;
	size_t i = 0;
	int r;

	if (p->error != NULL)
		return -EINVAL;
	while (i < len) {
		if (p->state == P_LITERAL) {
			size_t n = len - i;
			if (n > p->lit_left)
				n = (size_t)p->lit_left;
			if (p->lit_tok->streamed)
				p->sink->data(p->sink->ctx, d + i, n);
			else
				mf_buf_append(&p->lit_buf, d + i, n);
			i += n;
			p->lit_left -= n;
			if (p->lit_left == 0)
				finish_literal(p);
			continue;
		}
		const char *lf = memchr(d + i, '\n', len - i);
		size_t chunk = lf != NULL ? (size_t)(lf - (d + i)) : len - i;
		size_t total = p->resp_bytes + p->line.len + chunk;
		if (total > IMAP_PARSER_MAX_LINE) {
			fail(p, "response longer than %d bytes",
			     IMAP_PARSER_MAX_LINE);
			return -EINVAL;
		}
		mf_buf_append(&p->line, d + i, chunk);
		i += chunk;
		if (lf == NULL)
			break;
		i++;
		r = line_done(p);
		if (r == -ECANCELED)
			return r;
		if (r < 0)
			return -EINVAL;
		if (r == 2)
			return (ssize_t)i;
	}
	return (ssize_t)i;
}

bool imap_token_is_atom(const struct imap_token *t, const char *name)
{
	if (t->type != IMAP_TOK_ATOM && t->type != IMAP_TOK_NUMBER)
		return false;
	return strcasecmp(t->str, name) == 0;
}

bool imap_token_atom_prefix(const struct imap_token *t, const char *prefix)
{
	if (t->type != IMAP_TOK_ATOM)
		return false;
	return strncasecmp(t->str, prefix, strlen(prefix)) == 0;
}

const char *imap_token_str(const struct imap_token *t)
{
	switch (t->type) {
	case IMAP_TOK_ATOM:
	case IMAP_TOK_NUMBER:
	case IMAP_TOK_STRING:
		return t->str;
	case IMAP_TOK_LITERAL:
		return t->streamed ? NULL : t->str;
	default:
		return NULL;
	}
}

int imap_token_u64(const struct imap_token *t, uint64_t *num_r)
{
	if (t->type != IMAP_TOK_NUMBER)
		return -EINVAL;
	*num_r = t->num;
	return 0;
}

void imap_token_format(const struct imap_token *t, struct mf_buf *b,
		       bool show_literals)
{
	switch (t->type) {
	case IMAP_TOK_ATOM:
	case IMAP_TOK_NUMBER:
		mf_buf_appends(b, t->str);
		break;
	case IMAP_TOK_NIL:
		mf_buf_appends(b, "NIL");
		break;
	case IMAP_TOK_STRING:
		mf_buf_appendc(b, '"');
		for (size_t i = 0; i < t->len; i++) {
			if (t->str[i] == '"' || t->str[i] == '\\')
				mf_buf_appendc(b, '\\');
			mf_buf_appendc(b, t->str[i]);
		}
		mf_buf_appendc(b, '"');
		break;
	case IMAP_TOK_LITERAL:
		mf_buf_printf(b, "%s{%zu}", t->binary ? "~" : "", t->len);
		if (show_literals && !t->streamed)
			mf_buf_append(b, t->str, t->len);
		break;
	case IMAP_TOK_LIST:
		mf_buf_appendc(b, '(');
		for (unsigned int i = 0; i < t->count; i++) {
			if (i > 0)
				mf_buf_appendc(b, ' ');
			imap_token_format(&t->list[i], b, show_literals);
		}
		mf_buf_appendc(b, ')');
		break;
	}
}

void imap_response_format(const struct imap_response *r, struct mf_buf *b)
{
	switch (r->type) {
	case IMAP_RESP_UNTAGGED:
		mf_buf_appendc(b, '*');
		break;
	case IMAP_RESP_TAGGED:
		mf_buf_appends(b, r->tag);
		break;
	case IMAP_RESP_CONTINUATION:
		mf_buf_appendc(b, '+');
		break;
	}
	for (unsigned int i = 0; i < r->arg_count; i++) {
		mf_buf_appendc(b, ' ');
		imap_token_format(&r->args[i], b, false);
	}
	if (r->code != NULL) {
		mf_buf_appends(b, " [");
		for (unsigned int i = 0; i < r->code->count; i++) {
			if (i > 0)
				mf_buf_appendc(b, ' ');
			imap_token_format(&r->code->list[i], b, false);
		}
		mf_buf_appendc(b, ']');
	}
	if (r->text[0] != '\0') {
		mf_buf_appendc(b, ' ');
		mf_buf_appends(b, r->text);
	}
}
