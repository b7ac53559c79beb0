/*
 * HTTP for the REST backends (Graph, Gmail) and the OAuth token endpoint:
 * a thin layer over one libcurl easy handle per session, so connections
 * are kept alive and reused, plus the retry policy those APIs ask for.
 *
 * A session (struct mf_http) is used by one thread at a time, like a
 * backend session; mf_http_interrupt() may be called from any thread.
 */
#ifndef MF_HTTP_H
#define MF_HTTP_H

#include "mf_backend.h"
#include "mf_oauth.h"
#include "mf_util.h"

#include <stdbool.h>
#include <stdint.h>

struct mf_account;
struct mf_http;
struct mf_token_source;

struct mf_http_opts {
	const char *ca_file;	/* NULL: the system's trust store */
	unsigned int timeout;	/* seconds without progress before a
				   request fails; 0 = 60 */
	bool allow_plaintext;	/* permit http:// to a non-loopback host */
	const char *user_agent;	/* NULL: "mailfs/VERSION" */
};

struct mf_http_req {
	const char *method;	/* "GET", "POST", "PATCH", "PUT", "DELETE" */
	const char *url;	/* absolute */
	const char *const *headers;	/* NULL-terminated "Name: value" */
	/* Request body: a buffer, or a file read from offset 0. */
	const void *body;
	size_t body_len;
	int body_fd;		/* -1: none (use body/body_len) */
	uint64_t body_fd_len;
	/*
	 * Where a 2xx response body goes: out_fd >= 0 streams it to that
	 * file (at its offset); otherwise it is collected in resp->body.
	 * Error responses (non-2xx) are always collected in resp->body.
	 */
	int out_fd;
	uint64_t max_size;	/* 0: 64 MiB for buffered bodies, no cap
				   for out_fd */
	/*
	 * Send it on a new connection. libcurl resends a request by itself
	 * when a reused connection turns out closed before any answer; for
	 * a request the server may have carried out (an upload), that is a
	 * second copy nobody can see. mf_http_call sets it for requests that
	 * are neither idempotent nor retry_unsafe.
	 */
	bool fresh_connect;
};

struct mf_http_resp {
	long status;		/* HTTP status, 0 when no response */
	struct mf_buf body;	/* collected body (NUL-terminated) */
	uint64_t written;	/* bytes written to out_fd */
	int retry_after;	/* seconds from Retry-After, -1 if absent */
	char *location;		/* Location header, owned, or NULL */
	char *content_type;	/* Content-Type header, owned, or NULL
				   (Gmail's batch responses name their
				   multipart boundary there) */
};

void mf_http_resp_init(struct mf_http_resp *resp);
void mf_http_resp_free(struct mf_http_resp *resp);

/* A session. Returns NULL and *error_r when libcurl cannot start. */
struct mf_http *mf_http_new(const struct mf_http_opts *opts, char **error_r);
void mf_http_free(struct mf_http *h);

/* Make the current or next request return MF_CANCELED soon. */
void mf_http_interrupt(struct mf_http *h);
bool mf_http_interrupted(struct mf_http *h);
/*
 * Sleep ms in short steps (the backends' own waits: quota, throttling);
 * false as soon as the session is interrupted.
 */
bool mf_http_sleep(struct mf_http *h, unsigned int ms);

/*
 * One request, no retries. MF_OK when a response arrived (whatever its
 * status: look at resp->status); MF_TEMP on network trouble or timeout,
 * MF_PROTO for an unusable URL or a body over max_size, MF_CANCELED when
 * interrupted. resp must be initialised; it is reset first.
 */
enum mf_status mf_http_do(struct mf_http *h, const struct mf_http_req *req,
			  struct mf_http_resp *resp, char **error_r);

/*
 * Requests counted since the session began (for tests and benchmarks:
 * the number is also logged at debug level "http").
 */
uint64_t mf_http_requests(const struct mf_http *h);

/*
 * The retry policy of the REST APIs:
 *  - 429, 503 and 504 are retried, honouring Retry-After, otherwise with
 *    exponential backoff from 1 s (doubling, capped at 32 s) with full
 *    jitter; at most max_attempts (0 = 6) tries in all;
 *  - network failures are retried the same way when the method is
 *    idempotent (GET, PUT, DELETE) or retry_unsafe is set; the others
 *    go on a fresh connection (see mf_http_req.fresh_connect), so that
 *    libcurl does not resend them either;
 *  - a 401 calls the token source once with refresh = true and retries;
 *  - everything else returns at once.
 * The "Authorization: Bearer" header is added from tokens when not NULL.
 * On MF_OK, resp->status is the final status (which may still be an
 * error: the caller maps it, see mf_http_status_of()).
 */
struct mf_http_policy {
	struct mf_token_source *tokens;	/* NULL: no Authorization */
	unsigned int max_attempts;
	bool retry_unsafe;
	/* Called before each retry with the delay in ms (tests, logs). */
	void (*on_retry)(void *ctx, long status, unsigned int delay_ms);
	/*
	 * Is this final response worth a retry with backoff, beyond 429,
	 * 503 and 504? (Gmail: a 403 whose reason is rateLimitExceeded or
	 * userRateLimitExceeded, and 500 backendError.) May be NULL.
	 */
	bool (*retryable)(void *ctx, const struct mf_http_resp *resp);
	void *ctx;
};

enum mf_status mf_http_call(struct mf_http *h,
			    const struct mf_http_policy *policy,
			    const struct mf_http_req *req,
			    struct mf_http_resp *resp, char **error_r);

/*
 * The usual mapping of a final HTTP status: 2xx MF_OK; 401 and 403 MF_AUTH
 * (403 only when not a rate limit, which the caller tells); 404 and 410
 * MF_GONE; 429 and 5xx MF_TEMP; other statuses MF_PROTO.
 */
enum mf_status mf_http_status_of(long status);

/* Percent-encode for a URL path segment or query value. New string. */
char *mf_http_escape(const char *s);

/*
 * Tokens for "Authorization: Bearer": from the account's token_command
 * (its first line of output), or from the OAuth token store. A source
 * may be shared by the sessions of an account (it locks itself).
 */
struct mf_token_source *mf_token_source_new(const struct mf_account *acct);
/*
 * The process-wide source of an OAuth account's tokens for one use (IMAP
 * logins share it across connections). Lives until the process exits;
 * do not free it.
 */
struct mf_token_source *mf_token_source_shared(const struct mf_account *acct,
					       enum mf_oauth_use use);
/* Drop the cached token (the server refused it). */
void mf_token_forget(struct mf_token_source *ts);
void mf_token_source_free(struct mf_token_source *ts);
/*
 * An access token (caller wipes and frees). refresh = true asks for a new
 * one (after a 401). OAuth tokens are renewed ahead of expiry (a quarter
 * of their lifetime, at most 5 minutes before); when the sign-in is gone
 * (invalid_grant) the result is MF_AUTH and the message says to run
 * `mailfs-auth login ACCOUNT`. Returns MF_OK, MF_AUTH when the source refuses (the
 * message says what to do), or MF_TEMP.
 */
enum mf_status mf_token_get(struct mf_token_source *ts, bool refresh,
			    char **token_r, char **error_r);

#endif
