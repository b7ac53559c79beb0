/*
 * Incremental IMAP response parser.
 *
 * imap_parser_feed() accepts the server's bytes in pieces of any size (one
 * byte at a time works) and calls a callback once per complete response:
 * untagged ("*"), tagged, or continuation ("+"). A response is a generic
 * token tree (atoms, numbers, quoted strings, literals, NIL, nested lists),
 * plus, for status responses (OK/NO/BAD/BYE/PREAUTH and "+"), the response
 * code "[...]" as its own token list and the human-readable text.
 *
 * Design: bytes are collected up to the end of a line (CRLF or bare LF);
 * the line is then tokenised with a persistent stack of open lists, so a
 * response that continues after a literal ("{n}" at the end of a line)
 * simply resumes on the next line. Literals are copied inline, or, when a
 * literal sink asks for it, handed over in chunks as they arrive (message
 * bodies written to a file). Every size from the network is capped (see the
 * limits below); exceeding one is a parse error, after which the parser
 * refuses further input and the connection must be closed.
 *
 * Threading: a parser is used by one thread at a time.
 */
#ifndef IMAP_PARSER_H
#define IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct mf_buf;

/* Non-literal bytes of one response (all its lines together). */
#define IMAP_PARSER_MAX_LINE (1024 * 1024)
/* One literal kept in memory. */
#define IMAP_PARSER_MAX_INLINE_LITERAL (16 * 1024 * 1024)
/* All inline literals of one response together. */
#define IMAP_PARSER_MAX_INLINE_TOTAL (64 * 1024 * 1024)
/* Nesting of lists and response codes. */
#define IMAP_PARSER_MAX_DEPTH 64
/* Tokens in one response. */
#define IMAP_PARSER_MAX_TOKENS 262144
/* Largest literal size accepted at all (streamed ones also obey the
   sink's max_size). */
#define IMAP_PARSER_MAX_LITERAL_SIZE ((uint64_t)INT64_MAX)

enum imap_token_type {
	IMAP_TOK_ATOM,		/* also flags (\Seen), sets (1:3), and fetch
				   items with sections (BODY[...]<0>) */
	IMAP_TOK_NUMBER,	/* an atom of digits only; num is set too */
	IMAP_TOK_STRING,	/* quoted string, escapes removed */
	IMAP_TOK_LITERAL,	/* {n}, {n+} or ~{n} */
	IMAP_TOK_NIL,
	IMAP_TOK_LIST,		/* ( ... ) */
};

struct imap_token {
	enum imap_token_type type;
	/* ATOM/NUMBER/STRING/inline LITERAL: the bytes, NUL-terminated
	   (a literal may contain NULs; use len). NULL for NIL, LIST and
	   streamed literals. Owned by the parser. */
	char *str;
	size_t len;		/* bytes of str; a streamed literal's size */
	uint64_t num;		/* NUMBER */
	struct imap_token *list;	/* LIST: the elements */
	unsigned int count;	/* LIST: number of elements */
	bool streamed;		/* LITERAL went to the sink */
	bool binary;		/* LITERAL was ~{n} */
};

enum imap_response_type {
	IMAP_RESP_UNTAGGED,
	IMAP_RESP_TAGGED,
	IMAP_RESP_CONTINUATION,
};

enum imap_status {
	IMAP_STATUS_NONE,	/* not a status response (* 3 EXISTS, ...) */
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_BYE,
	IMAP_STATUS_PREAUTH,
};

/* A complete response; everything is borrowed for the callback only. */
struct imap_response {
	enum imap_response_type type;
	const char *tag;		/* TAGGED: the tag; else NULL */
	/* The tokens after the tag ("*", tag; none for "+"). For a status
	   response args[0] is the status atom. */
	const struct imap_token *args;
	unsigned int arg_count;
	enum imap_status status;
	/* The response code's tokens ("[UIDVALIDITY 3]" gives a LIST of
	   ATOM "UIDVALIDITY", NUMBER 3), or NULL. */
	const struct imap_token *code;
	const char *text;		/* human text; "" when absent */
};

/*
 * Called per complete response. Return 0 to go on, 1 to make
 * imap_parser_feed() return after this response (the rest of the input
 * is left unconsumed), negative to fail the parse (the parser then
 * reports "aborted by the consumer").
 */
typedef int imap_response_cb(void *ctx, const struct imap_response *resp);

/*
 * A consumer that wants large literals streamed. For each literal larger
 * than threshold, begin() is called with its size and the atom just before
 * it in the same list (e.g. "BODY[]", or NULL). Return 1 to stream it
 * (data() then receives every byte, in chunks, and the token is marked
 * streamed), 0 to keep it inline (subject to the inline limits), negative
 * to fail the parse. A streamed literal larger than max_size is a parse
 * error. data() cannot fail: a consumer that hits an error (e.g. ENOSPC)
 * must remember it and ignore the rest, so the stream stays in sync.
 */
struct imap_literal_sink {
	uint64_t threshold;
	uint64_t max_size;
	int (*begin)(void *ctx, const char *prev_atom, uint64_t size);
	/*
	 * Optional; used instead of begin when set. list is the list that
	 * holds the literal, with the elements before it (the literal
	 * itself is its last element), so a consumer can see e.g. the
	 * "UID 7" that precedes "BODY[]" in a FETCH response. Borrowed for
	 * the call.
	 */
	int (*begin_in)(void *ctx, const struct imap_token *list,
			const char *prev_atom, uint64_t size);
	void (*data)(void *ctx, const void *data, size_t len);
	void *ctx;
};

struct imap_parser;

/* A new parser. Never NULL. */
struct imap_parser *imap_parser_new(imap_response_cb *cb, void *ctx);
void imap_parser_free(struct imap_parser **p);

/* Forget any partial response and a previous error (after reconnecting). */
void imap_parser_reset(struct imap_parser *p);

/*
 * Set (or clear with NULL) the literal sink. The struct is borrowed and
 * must stay valid while set. Changing it mid-response affects literals
 * that start afterwards.
 */
void imap_parser_set_literal_sink(struct imap_parser *p,
				  const struct imap_literal_sink *sink);

/*
 * Parse len bytes. Returns the number of bytes consumed (len, unless the
 * callback returned 1), or -EINVAL on a parse error (see
 * imap_parser_error()), -ECANCELED when the callback returned a negative
 * value. After an error every further call fails.
 */
ssize_t imap_parser_feed(struct imap_parser *p, const void *data, size_t len);

/* The parse error message, or NULL. Borrowed. */
const char *imap_parser_error(const struct imap_parser *p);

/* True when bytes of an unfinished response are buffered. */
bool imap_parser_in_response(const struct imap_parser *p);

/* Helpers for consumers. */

/* ATOM or NUMBER equal to name, ignoring case. */
bool imap_token_is_atom(const struct imap_token *t, const char *name);
/* ATOM whose text starts with prefix, ignoring case. */
bool imap_token_atom_prefix(const struct imap_token *t, const char *prefix);
/* STRING, inline LITERAL, ATOM or NUMBER: the text; else NULL. */
const char *imap_token_str(const struct imap_token *t);
/* A NUMBER's value into *num_r (0) or -EINVAL. */
int imap_token_u64(const struct imap_token *t, uint64_t *num_r);
/*
 * Append a readable rendering of t to b ("(A 1 \"s\" {5})"); literals are
 * shown as {size} followed by at most a short prefix when show_literals.
 */
void imap_token_format(const struct imap_token *t, struct mf_buf *b,
		       bool show_literals);
/* The whole response, one line, for logs. */
void imap_response_format(const struct imap_response *r, struct mf_buf *b);

#endif
