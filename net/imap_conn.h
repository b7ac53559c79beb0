/*
 * One IMAP connection: transport (TCP, TLS, STARTTLS, a tunnel command,
 * COMPRESS=DEFLATE), greeting, login, capabilities, and running tagged
 * commands, one at a time or pipelined.
 *
 * Usage: imap_conn_new() (no I/O), imap_conn_connect() (connect or start
 * the tunnel, TLS, greeting, login unless PREAUTH, COMPRESS, ENABLE
 * QRESYNC), then build commands with imap_cmd_*()
 * and run them with imap_conn_run(). Untagged responses that arrive
 * while a command runs are passed to the command's callback; the tagged
 * result comes back in struct imap_result.
 *
 * Errors: transport failures, timeouts, EOF and "* BYE" close the
 * connection and return MF_TEMP; a parse error or a certificate failure
 * closes it and returns MF_PROTO; imap_conn_interrupt() makes the blocked
 * call return MF_CANCELED (the connection is closed, since its protocol
 * state is then unknown). After a close, imap_conn_connect() reconnects.
 *
 * Threading: one thread uses a connection at a time, except
 * imap_conn_interrupt(), which any thread may call at any time.
 */
#ifndef IMAP_CONN_H
#define IMAP_CONN_H

#include "imap_parser.h"
#include "mf_backend.h"
#include "mf_util.h"

#include <stdbool.h>
#include <stdint.h>

struct mf_account;

/* Capabilities (imap_conn_caps()). */
#define IMAP_CAP_IMAP4REV1	(1u << 0)
#define IMAP_CAP_IDLE		(1u << 1)
#define IMAP_CAP_MOVE		(1u << 2)
#define IMAP_CAP_UIDPLUS	(1u << 3)
#define IMAP_CAP_CONDSTORE	(1u << 4)
#define IMAP_CAP_QRESYNC	(1u << 5)
#define IMAP_CAP_LITERALPLUS	(1u << 6)
#define IMAP_CAP_LITERALMINUS	(1u << 7)
#define IMAP_CAP_SPECIAL_USE	(1u << 8)
#define IMAP_CAP_LIST_EXTENDED	(1u << 9)
#define IMAP_CAP_ENABLE		(1u << 10)
#define IMAP_CAP_SASL_IR	(1u << 11)
#define IMAP_CAP_LOGINDISABLED	(1u << 12)
#define IMAP_CAP_STARTTLS	(1u << 13)
#define IMAP_CAP_COMPRESS	(1u << 14)	/* COMPRESS=DEFLATE */
#define IMAP_CAP_AUTH_PLAIN	(1u << 15)
#define IMAP_CAP_UNSELECT	(1u << 16)
#define IMAP_CAP_LIST_STATUS	(1u << 17)
#define IMAP_CAP_AUTH_XOAUTH2	(1u << 24)
#define IMAP_CAP_AUTH_OAUTHBEARER	(1u << 25)

/* Default timeout when the account says 0 (seconds). */
#define IMAP_DEFAULT_TIMEOUT 30
/* Most literal arguments in one command. */
#define IMAP_CMD_MAX_PARTS 8

/*
 * A command being built. Text is appended with the helpers below;
 * literals (from memory or a file descriptor) become "{n}"/"{n+}" at send
 * time, depending on the server's LITERAL+/LITERAL- support.
 */
enum imap_part_kind {
	IMAP_PART_MEM,		/* literal from data (owned) */
	IMAP_PART_FD,		/* literal of size bytes from fd at offset 0 */
	IMAP_PART_CONT_LINE,	/* wait for "+", then send data and CRLF
				   (SASL responses); no literal header */
};

struct imap_cmd_part {
	enum imap_part_kind kind;
	size_t text_off;	/* text before the part ends here */
	char *data;		/* owned: MEM and CONT_LINE */
	uint64_t size;
	int fd;			/* foreign: FD */
};

struct imap_cmd {
	struct mf_buf text;	/* without tag and the final CRLF */
	struct imap_cmd_part parts[IMAP_CMD_MAX_PARTS];
	unsigned int part_count;
	bool sensitive;		/* wipe on free; log only up to log_len */
	size_t log_len;		/* bytes of text that may be logged */
	/* Literal sink for responses to this command, or NULL. */
	const struct imap_literal_sink *sink;
};

void imap_cmd_init(struct imap_cmd *cmd, const char *verb);
/* Frees parts and text (wiped first when sensitive). Reusable after. */
void imap_cmd_clear(struct imap_cmd *cmd);
/* Raw text (no quoting). */
void imap_cmd_add(struct imap_cmd *cmd, const char *text);
void imap_cmd_addf(struct imap_cmd *cmd, const char *fmt, ...)
	MF_PRINTF(2, 3);
/*
 * A space, then s as a quoted string, or as a literal when it contains
 * CR, LF, NUL-free 8-bit bytes or is longer than 1000 bytes.
 */
void imap_cmd_add_string(struct imap_cmd *cmd, const char *s);
/* A space, then a literal of size bytes read from fd (offset 0). */
void imap_cmd_add_fd_literal(struct imap_cmd *cmd, int fd, uint64_t size);
/* After "+", send line (copied) and CRLF; never logged. */
void imap_cmd_add_cont_line(struct imap_cmd *cmd, const char *line);
/* Mark everything added after this call as secret in logs. */
void imap_cmd_mark_sensitive(struct imap_cmd *cmd);

/* The result of a tagged command. */
struct imap_result {
	enum imap_status status;	/* OK, NO or BAD */
	char *code;	/* owned: "APPENDUID 5 9" (tokens joined), or NULL */
	char *text;	/* owned, never NULL after a run */
};

void imap_result_clear(struct imap_result *res);
/* The code's first word equals name (ignoring case). */
bool imap_result_has_code(const struct imap_result *res, const char *name);
/*
 * Map a tagged result to a status: OK -> MF_OK; NO with TRYCREATE or
 * NONEXISTENT -> MF_GONE; with UNAVAILABLE, SERVERBUG, INUSE, LIMIT ->
 * MF_TEMP; other NO/BAD -> MF_PROTO. On failure *error_r gets
 * "what: NO [CODE] text".
 */
enum mf_status imap_result_status(const struct imap_result *res,
				  const char *what, char **error_r);

/*
 * Untagged responses during a command. Return 0 to go on, negative to
 * abort: the connection is then closed and the command returns
 * MF_CANCELED.
 */
typedef int imap_untagged_cb(void *ctx, const struct imap_response *resp);

struct imap_conn;

/* A connection object for acct (borrowed; must outlive the conn). */
struct imap_conn *imap_conn_new(const struct mf_account *acct);
void imap_conn_free(struct imap_conn **c);

/* Connect and log in unless connected. */
enum mf_status imap_conn_connect(struct imap_conn *c, char **error_r);
/* Drop the connection (no LOGOUT). */
void imap_conn_close(struct imap_conn *c);
/* Send LOGOUT politely (errors ignored), then close. */
void imap_conn_logout(struct imap_conn *c);
bool imap_conn_is_connected(const struct imap_conn *c);
/* Bumped on every (re)connect; lets users drop state of old sessions. */
unsigned int imap_conn_generation(const struct imap_conn *c);

unsigned int imap_conn_caps(const struct imap_conn *c);
bool imap_conn_has_cap(const struct imap_conn *c, unsigned int cap);
/* QRESYNC was enabled (ENABLE QRESYNC answered with ENABLED). */
bool imap_conn_qresync(const struct imap_conn *c);

/* Thread-safe: make the current or next blocking call MF_CANCELED. */
void imap_conn_interrupt(struct imap_conn *c);

/*
 * Send cmd, pass untagged responses to cb (may be NULL), and wait for the
 * tagged response, stored into *res_r (caller clears it). Returns MF_OK
 * when a tagged response arrived (whatever its status); otherwise the
 * connection failed and was closed.
 */
enum mf_status imap_conn_run(struct imap_conn *c, struct imap_cmd *cmd,
			     imap_untagged_cb *cb, void *ctx,
			     struct imap_result *res_r, char **error_r);

/*
 * imap_conn_run() plus imap_result_status(): MF_OK only for a tagged OK.
 * what names the command in messages.
 */
enum mf_status imap_conn_simple(struct imap_conn *c, struct imap_cmd *cmd,
				imap_untagged_cb *cb, void *ctx,
				const char *what, char **error_r);

/*
 * Pipelining: send count commands at once, then read every answer;
 * untagged responses go to cb, command i's tagged result to res_r[i]
 * (count entries; caller clears them). The commands must have no
 * literals and no secrets; the literal sink of cmds[0] applies to all.
 * Keep the total short (a few tens of KB): nothing is read while the
 * commands are written. Returns MF_OK when every tagged response arrived.
 */
enum mf_status imap_conn_run_pipeline(struct imap_conn *c,
				      struct imap_cmd *const *cmds,
				      unsigned int count, imap_untagged_cb *cb,
				      void *ctx, struct imap_result *res_r,
				      char **error_r);

/*
 * IDLE: start it (send IDLE, wait for "+"), then wait until cb returns 1
 * for an untagged response ("changed"), timeout_ms passes, or an
 * interrupt. Then send DONE and read the tagged result. *changed_r tells
 * whether cb returned 1. cb may be NULL (then nothing counts).
 */
enum mf_status imap_conn_idle(struct imap_conn *c, int timeout_ms,
			      imap_untagged_cb *cb, void *ctx,
			      bool *changed_r, char **error_r);

/*
 * Wait up to timeout_ms without traffic, returning early with MF_CANCELED
 * on an interrupt. Untagged data that arrives meanwhile is kept and
 * delivered with the next command.
 */
enum mf_status imap_conn_sleep(struct imap_conn *c, int timeout_ms,
			       char **error_r);

/* Escape s as an IMAP quoted string ("..." with \" and \\) into b. */
void imap_quote(struct mf_buf *b, const char *s);

#endif
