/*
 * HTTP over libcurl for the REST backends (see mf_http.h).
 *
 * One easy handle per session keeps its connection alive between
 * requests, as curl's own tools do. Interruption goes through the
 * transfer-info callback, which curl calls at least once a second even
 * while a transfer is stalled, so a cancel never waits for a timeout.
 */
#include "mf_http.h"

#include "mf_config.h"
#include "mf_oauth.h"
#include "mf_tokenstore.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define BUFFERED_MAX (64u << 20)
#define BACKOFF_FIRST_MS 1000u
#define BACKOFF_MAX_MS 32000u
#define RETRY_AFTER_MAX 300	/* seconds: longer waits become MF_TEMP */

struct mf_http {
	CURL *curl;
	struct mf_http_opts opts;
	char *ca_file;		/* owned copy of opts.ca_file */
	char *user_agent;	/* owned */
	atomic_bool interrupted;
	uint64_t requests;
};

/* What the curl callbacks of one request need. */
struct xfer {
	struct mf_http *h;
	const struct mf_http_req *req;
	struct mf_http_resp *resp;
	long status_seen;	/* from the header callback */
	int write_errno;
	bool too_big;
	uint64_t body_off;	/* for body_fd */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

void mf_http_resp_init(struct mf_http_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	mf_buf_init(&resp->body);
	resp->retry_after = -1;
}

void mf_http_resp_free(struct mf_http_resp *resp)
{
	mf_buf_free(&resp->body);
	free(resp->location);
	resp->location = NULL;
	free(resp->content_type);
	resp->content_type = NULL;
}

static void resp_reset(struct mf_http_resp *resp)
{
	mf_buf_reset(&resp->body);
	free(resp->location);
	resp->location = NULL;
	free(resp->content_type);
	resp->content_type = NULL;
	resp->status = 0;
	resp->written = 0;
	resp->retry_after = -1;
}

struct mf_http *mf_http_new(const struct mf_http_opts *opts, char **error_r)
{
	struct mf_http *h;

	pthread_once(&curl_once, curl_init_once);
	h = xcalloc(1, sizeof(*h));
	h->curl = curl_easy_init();
	if (!h->curl) {
		free(h);
		*error_r = xstrdup("libcurl could not start");
		return NULL;
	}
	h->opts = *opts;
	h->ca_file = opts->ca_file ? xstrdup(opts->ca_file) : NULL;
	h->user_agent = opts->user_agent ? xstrdup(opts->user_agent)
					 : xstrdup("mailfs/" MAILFS_VERSION);
	h->opts.ca_file = h->ca_file;
	h->opts.user_agent = h->user_agent;
	atomic_init(&h->interrupted, false);
	return h;
}

void mf_http_free(struct mf_http *h)
{
	if (!h)
		return;
	curl_easy_cleanup(h->curl);
	free(h->ca_file);
	free(h->user_agent);
	free(h);
}

void mf_http_interrupt(struct mf_http *h)
{
	atomic_store(&h->interrupted, true);
}

bool mf_http_interrupted(struct mf_http *h)
{
	return atomic_load(&h->interrupted);
}

uint64_t mf_http_requests(const struct mf_http *h)
{
	return h->requests;
}

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
	struct xfer *x = userdata;
	size_t len = size * n;
	const char *colon;

	/* A new status line starts a new response (redirects, 100). */
	if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
		const char *sp = memchr(data, ' ', len);

		x->status_seen = sp ? strtol(sp + 1, NULL, 10) : 0;
		x->resp->retry_after = -1;
		free(x->resp->location);
		x->resp->location = NULL;
		free(x->resp->content_type);
		x->resp->content_type = NULL;
		return len;
	}
	colon = memchr(data, ':', len);
	if (!colon)
		return len;
	size_t name_len = (size_t)(colon - data);
	const char *v = colon + 1;
	const char *end = data + len;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
			   end[-1] == ' '))
		end--;
	if (name_len == 11 && strncasecmp(data, "Retry-After", 11) == 0) {
		uint64_t secs;

		/* Delta-seconds only; an HTTP-date is rare in these APIs
		   and then the backoff applies. */
		if (mf_parse_u64(v, (size_t)(end - v), 86400, &secs) == 0)
			x->resp->retry_after = (int)secs;
	} else if (name_len == 8 && strncasecmp(data, "Location", 8) == 0) {
		free(x->resp->location);
		x->resp->location = xstrndup(v, (size_t)(end - v));
	} else if (name_len == 12 &&
		   strncasecmp(data, "Content-Type", 12) == 0) {
		free(x->resp->content_type);
		x->resp->content_type = xstrndup(v, (size_t)(end - v));
	}
	return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *userdata)
{
	struct xfer *x = userdata;
	size_t len = size * n;
	bool ok = x->status_seen >= 200 && x->status_seen < 300;

	if (ok && x->req->out_fd >= 0) {
		if (x->req->max_size &&
		    x->resp->written + len > x->req->max_size) {
			x->too_big = true;
			return 0;
		}
		int r = mf_write_all(x->req->out_fd, data, len);

		if (r < 0) {
			x->write_errno = -r;
			return 0;
		}
		x->resp->written += len;
		return len;
	}
	uint64_t cap = x->req->max_size && x->req->out_fd < 0
			       ? x->req->max_size
			       : BUFFERED_MAX;

	if (x->resp->body.len + len > cap) {
		x->too_big = true;
		return 0;
	}
	mf_buf_append(&x->resp->body, data, len);
	return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *userdata)
{
	struct xfer *x = userdata;
	size_t want = size * n;
	uint64_t left = x->req->body_fd_len - x->body_off;
	ssize_t got;

	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	got = mf_pread_all(x->req->body_fd, buf, want, (off_t)x->body_off);
	if (got <= 0)
		return CURL_READFUNC_ABORT;
	x->body_off += (uint64_t)got;
	return (size_t)got;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	struct xfer *x = userdata;

	return atomic_load(&x->h->interrupted) ? 1 : 0;
}

static bool url_allowed(const struct mf_http *h, const char *url,
			char **error_r)
{
	if (strncasecmp(url, "https://", 8) == 0)
		return true;
	if (strncasecmp(url, "http://", 7) != 0) {
		*error_r = xasprintf("not an http(s) URL: %.200s", url);
		return false;
	}
	/* Plain HTTP carries bearer tokens: only to this machine, unless
	   the user said otherwise (the same rule as IMAP's tls = none). */
	const char *host = url + 7;
	size_t hlen;
	char hostbuf[256];

	if (*host == '[') {
		host++;
		hlen = strcspn(host, "]");
	} else {
		hlen = strcspn(host, ":/?#");
	}
	if (hlen >= sizeof(hostbuf))
		hlen = sizeof(hostbuf) - 1;
	memcpy(hostbuf, host, hlen);
	hostbuf[hlen] = '\0';
	if (mf_host_is_loopback(hostbuf) || h->opts.allow_plaintext)
		return true;
	*error_r = xasprintf("refusing plain http:// to %s (bearer tokens "
			     "would travel unencrypted); use https:// or set "
			     "allow_plaintext = yes", hostbuf);
	return false;
}

enum mf_status mf_http_do(struct mf_http *h, const struct mf_http_req *req,
			  struct mf_http_resp *resp, char **error_r)
{
	struct xfer x = { .h = h, .req = req, .resp = resp };
	struct curl_slist *hdrs = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = h->curl;
	CURLcode rc;
	long timeout = h->opts.timeout ? (long)h->opts.timeout : 60;

	resp_reset(resp);
	if (!url_allowed(h, req->url, error_r))
		return MF_PROTO;
	if (atomic_load(&h->interrupted)) {
		*error_r = xstrdup("interrupted");
		return MF_CANCELED;
	}

	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_USERAGENT, h->opts.user_agent);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, timeout);
	/* A stalled transfer (under 1 byte/s for timeout seconds) fails;
	   a slow but moving one of a big body does not. */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, timeout);
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->opts.ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->opts.ca_file);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, req->fresh_connect ? 1L : 0L);

	for (const char *const *p = req->headers; p && *p; p++)
		hdrs = curl_slist_append(hdrs, *p);
	/* curl would send "Expect: 100-continue" for large bodies: a round
	   trip the APIs do not need. */
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

	if (req->body_fd >= 0) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, &x);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)req->body_fd_len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (req->body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)req->body_len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (strcmp(req->method, "GET") != 0) {
		if (strcmp(req->method, "POST") == 0) {
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
		}
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	}

	h->requests++;
	rc = curl_easy_perform(c);
	curl_slist_free_all(hdrs);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	mf_debug(MF_DBG_HTTP, "http: %s %.300s -> %ld (%s)", req->method,
		 req->url, resp->status,
		 rc == CURLE_OK ? "ok"
		 : rc == CURLE_ABORTED_BY_CALLBACK ? "interrupted"
						   : curl_easy_strerror(rc));

	if (rc == CURLE_OK)
		return MF_OK;
	if (rc == CURLE_ABORTED_BY_CALLBACK) {
		*error_r = xstrdup("interrupted");
		return MF_CANCELED;
	}
	if (rc == CURLE_WRITE_ERROR && x.too_big) {
		*error_r = xasprintf("response larger than %llu bytes",
				     (unsigned long long)(req->max_size
							  ? req->max_size
							  : BUFFERED_MAX));
		return MF_PROTO;
	}
	if (rc == CURLE_WRITE_ERROR && x.write_errno) {
		*error_r = xasprintf("writing the response: %s",
				     strerror(x.write_errno));
		return MF_TEMP;
	}
	*error_r = xasprintf("%s: %s", curl_easy_strerror(rc),
			     errbuf[0] ? errbuf : "no detail");
	resp->status = 0;
	return MF_TEMP;
}

enum mf_status mf_http_status_of(long status)
{
	if (status >= 200 && status < 300)
		return MF_OK;
	if (status == 401 || status == 403)
		return MF_AUTH;
	if (status == 404 || status == 410)
		return MF_GONE;
	if (status == 429 || status >= 500)
		return MF_TEMP;
	return MF_PROTO;
}

static bool method_idempotent(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "PUT") == 0 ||
	       strcmp(method, "DELETE") == 0;
}

/* Sleep in short steps so an interrupt is seen soon. */
bool mf_http_sleep(struct mf_http *h, unsigned int ms)
{
	while (ms > 0) {
		unsigned int step = ms > 100 ? 100 : ms;
		struct timespec ts = { 0, (long)step * 1000000L };

		if (atomic_load(&h->interrupted))
			return false;
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return !atomic_load(&h->interrupted);
}

static unsigned int jitter(unsigned int max_ms)
{
	static _Thread_local unsigned int seed;

	if (seed == 0)
		seed = (unsigned int)(mf_mono_ms() ^ (uintptr_t)&seed);
	return max_ms ? (unsigned int)rand_r(&seed) % max_ms : 0;
}

enum mf_status mf_http_call(struct mf_http *h,
			    const struct mf_http_policy *policy,
			    const struct mf_http_req *req,
			    struct mf_http_resp *resp, char **error_r)
{
	unsigned int max = policy->max_attempts ? policy->max_attempts : 6;
	unsigned int backoff = BACKOFF_FIRST_MS;
	bool refreshed = false;
	char *token = NULL;
	enum mf_status st = MF_TEMP;

	/* Where a streamed body starts: a retry rewrites it from there. */
	off_t out_start = req->out_fd >= 0 ? lseek(req->out_fd, 0, SEEK_CUR)
					   : (off_t)-1;

	for (unsigned int attempt = 1;; attempt++) {
		const char *hdrs[32];
		size_t n = 0;
		char *auth = NULL;

		if (attempt > 1 && out_start >= 0 &&
		    (ftruncate(req->out_fd, out_start) < 0 ||
		     lseek(req->out_fd, out_start, SEEK_SET) < 0)) {
			*error_r = xasprintf("cannot rewind the output file: "
					     "%s", strerror(errno));
			st = MF_TEMP;
			break;
		}

		if (policy->tokens && !token) {
			st = mf_token_get(policy->tokens, refreshed, &token,
					  error_r);
			if (st != MF_OK)
				return st;
		}
		if (token) {
			auth = xasprintf("Authorization: Bearer %s", token);
			hdrs[n++] = auth;
		}
		for (const char *const *p = req->headers;
		     p && *p && n < MF_ARRAY_SIZE(hdrs) - 1; p++)
			hdrs[n++] = *p;
		hdrs[n] = NULL;

		struct mf_http_req r = *req;
		char *err = NULL;

		r.headers = hdrs;
		r.fresh_connect = req->fresh_connect ||
				  (!method_idempotent(req->method) &&
				   !policy->retry_unsafe);
		st = mf_http_do(h, &r, resp, &err);
		if (auth) {
			explicit_bzero(auth, strlen(auth));
			free(auth);
		}
		if (st == MF_CANCELED || st == MF_PROTO) {
			*error_r = err;
			break;
		}
		if (st == MF_OK && resp->status == 401 && policy->tokens &&
		    !refreshed) {
			/* The token expired or was revoked: one new try. */
			refreshed = true;
			explicit_bzero(token, strlen(token));
			free(token);
			token = NULL;
			attempt--;
			continue;
		}

		bool retry;
		unsigned int delay;

		if (st == MF_OK) {
			retry = resp->status == 429 || resp->status == 503 ||
				resp->status == 504 ||
				(policy->retryable &&
				 policy->retryable(policy->ctx, resp));
		} else {
			retry = method_idempotent(req->method) ||
				policy->retry_unsafe;
		}
		if (!retry || attempt >= max) {
			if (st != MF_OK)
				*error_r = err;
			else
				free(err);
			break;
		}
		if (st == MF_OK && resp->retry_after >= 0) {
			if (resp->retry_after > RETRY_AFTER_MAX) {
				/* Let the queue retry later instead of
				   holding a thread for that long. */
				break;
			}
			delay = (unsigned int)resp->retry_after * 1000u +
				jitter(250);
		} else {
			delay = backoff / 2 + jitter(backoff / 2 + 1);
			backoff = backoff * 2 > BACKOFF_MAX_MS
					  ? BACKOFF_MAX_MS
					  : backoff * 2;
		}
		mf_debug(MF_DBG_HTTP, "http: %s %.200s: %s, retry %u in %u ms",
			 req->method, req->url,
			 st == MF_OK ? "busy" : (err ? err : "failed"),
			 attempt, delay);
		free(err);
		if (policy->on_retry)
			policy->on_retry(policy->ctx, resp->status, delay);
		if (!mf_http_sleep(h, delay)) {
			*error_r = xstrdup("interrupted");
			st = MF_CANCELED;
			break;
		}
	}
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	return st;
}

char *mf_http_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	struct mf_buf b;

	mf_buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
		    *p == '.' || *p == '~') {
			mf_buf_appendc(&b, (char)*p);
		} else {
			mf_buf_appendc(&b, '%');
			mf_buf_appendc(&b, hex[*p >> 4]);
			mf_buf_appendc(&b, hex[*p & 15]);
		}
	}
	return mf_buf_steal(&b);
}

/* ---- token sources ---- */

/*
 * Two kinds: token_command (its first line of output, cached until a
 * 401), and OAuth (oauth = ... in the account): an access token from the
 * token store's refresh token, cached in memory with its expiry and
 * renewed ahead of it, so requests do not run into 401s.
 */
struct mf_token_source {
	pthread_mutex_t lock;
	char *command;		/* token_command, owned */
	char *account;		/* for messages */
	char *cached;		/* owned; wiped on free */
	struct mf_oauth_cfg *oauth;	/* owned, or NULL */
	char *oauth_error;	/* a config error to report, or NULL */
	enum mf_oauth_use use;
	int64_t expires_at;	/* unix seconds, for oauth */
	int64_t lifetime;
	/* The provider refused: the message, and the store's stamp then.
	   Until the record changes (a new login) or REFUSED_RETRY_S pass,
	   the refusal is repeated without asking the provider again. */
	char *refused;
	int64_t refused_stamp;
	int64_t refused_at;	/* monotonic ms */
	struct mf_token_source *next;	/* in the shared list */
};

static struct mf_token_source *source_new(const struct mf_account *acct,
					  int use)
{
	struct mf_token_source *ts = xcalloc(1, sizeof(*ts));
	const char *cmd = mf_account_get(acct, "token_command");
	const char *oauth = mf_account_get(acct, "oauth");

	pthread_mutex_init(&ts->lock, NULL);
	ts->command = cmd ? xstrdup(cmd) : NULL;
	ts->account = xstrdup(acct->name);
	if (oauth && *oauth && !ts->command) {
		char *err = NULL;

		ts->oauth = xcalloc(1, sizeof(*ts->oauth));
		if (mf_oauth_cfg_from_account(acct, ts->oauth, &err) < 0) {
			free(ts->oauth);
			ts->oauth = NULL;
			ts->oauth_error = err;
		} else {
			ts->use = use >= 0 ? (enum mf_oauth_use)use
					   : mf_oauth_default_use(ts->oauth);
		}
	}
	return ts;
}

struct mf_token_source *mf_token_source_new(const struct mf_account *acct)
{
	return source_new(acct, -1);
}

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mf_token_source *shared_sources;

struct mf_token_source *mf_token_source_shared(const struct mf_account *acct,
					       enum mf_oauth_use use)
{
	struct mf_token_source *ts;

	pthread_mutex_lock(&shared_lock);
	for (ts = shared_sources; ts; ts = ts->next) {
		if (strcmp(ts->account, acct->name) == 0 &&
		    (int)ts->use == (int)use)
			break;
	}
	if (!ts) {
		ts = source_new(acct, (int)use);
		ts->use = use;
		ts->next = shared_sources;
		shared_sources = ts;
	}
	pthread_mutex_unlock(&shared_lock);
	return ts;
}

static void wipe_free(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

void mf_token_source_free(struct mf_token_source *ts)
{
	if (!ts)
		return;
	wipe_free(&ts->cached);
	free(ts->command);
	free(ts->account);
	if (ts->oauth) {
		mf_oauth_cfg_clear(ts->oauth);
		free(ts->oauth);
	}
	free(ts->oauth_error);
	free(ts->refused);
	pthread_mutex_destroy(&ts->lock);
	free(ts);
}

/* Renew this long before expiry: a quarter of the lifetime, at most 5
   minutes (an hour's token is renewed at 55 minutes). */
static int64_t refresh_margin(int64_t lifetime)
{
	int64_t m = lifetime / 4;

	return m > 300 ? 300 : m < 1 ? 1 : m;
}

#define REFUSED_RETRY_S 300

static enum mf_status oauth_get(struct mf_token_source *ts, bool refresh,
				char **error_r)
{
	struct mf_oauth_tokens t;
	int64_t now = (int64_t)time(NULL);
	int64_t stamp;
	enum mf_status st;

	if (!refresh && ts->cached &&
	    now < ts->expires_at - refresh_margin(ts->lifetime))
		return MF_OK;
	stamp = mf_tokenstore_stamp(ts->account);
	if (ts->refused && stamp == ts->refused_stamp &&
	    mf_mono_ms() - ts->refused_at < REFUSED_RETRY_S * 1000) {
		*error_r = xstrdup(ts->refused);
		return MF_AUTH;
	}
	free(ts->refused);
	ts->refused = NULL;
	if (ts->cached && !refresh)
		mf_debug(MF_DBG_AUTH, "oauth %s: access token expires in %lld "
			 "s, renewing ahead", ts->account,
			 (long long)(ts->expires_at - now));
	st = mf_oauth_access_token(ts->oauth, ts->use, &t, error_r);
	if (st == MF_AUTH) {
		/* a dead sign-in: say so once, then wait for a new login */
		wipe_free(&ts->cached);
		mf_warn("%s", *error_r);
		ts->refused = xstrdup(*error_r);
		ts->refused_stamp = stamp;
		ts->refused_at = mf_mono_ms();
	}
	if (st != MF_OK)
		return st;
	wipe_free(&ts->cached);
	ts->cached = t.access_token;
	t.access_token = NULL;
	ts->expires_at = t.expires_at;
	ts->lifetime = t.lifetime;
	mf_oauth_tokens_clear(&t);
	return MF_OK;
}

enum mf_status mf_token_get(struct mf_token_source *ts, bool refresh,
			    char **token_r, char **error_r)
{
	enum mf_status st = MF_OK;

	*token_r = NULL;
	pthread_mutex_lock(&ts->lock);
	if (ts->oauth_error) {
		*error_r = xstrdup(ts->oauth_error);
		st = MF_AUTH;
		goto out;
	}
	if (ts->oauth) {
		st = oauth_get(ts, refresh, error_r);
		if (st != MF_OK)
			goto out;
		*token_r = xstrdup(ts->cached);
		goto out;
	}
	if (refresh)
		wipe_free(&ts->cached);
	if (!ts->cached) {
		char *out = NULL, *err = NULL;

		if (!ts->command) {
			*error_r = xasprintf("account %s: no token source "
					     "(set oauth or token_command)",
					     ts->account);
			st = MF_AUTH;
			goto out;
		}
		if (mf_run_command_line(ts->command, &out, &err) < 0) {
			*error_r = xasprintf("account %s: token_command "
					     "failed: %s", ts->account, err);
			free(err);
			st = MF_AUTH;
			goto out;
		}
		if (!out || !*out) {
			wipe_free(&out);
			*error_r = xasprintf("account %s: token_command "
					     "printed no token", ts->account);
			st = MF_AUTH;
			goto out;
		}
		ts->cached = out;
	}
	*token_r = xstrdup(ts->cached);
out:
	pthread_mutex_unlock(&ts->lock);
	return st;
}

void mf_token_forget(struct mf_token_source *ts)
{
	pthread_mutex_lock(&ts->lock);
	wipe_free(&ts->cached);
	pthread_mutex_unlock(&ts->lock);
}
