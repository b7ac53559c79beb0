/*
 * The Microsoft Graph backend (Office 365, Outlook.com): struct
 * mf_backend_ops over the mail REST API, on the HTTP layer of mf_http.h.
 *
 * Facts it relies on are in reference/cloud-apis.md, Part A:
 *  - folders: /me/mailFolders lists the children of msgfolderroot only;
 *    the tree is walked through childFolders, every page followed. The
 *    remote name of a folder is its id (folder ids are stable); the local
 *    path is the display-name path, "INBOX" for the inbox.
 *  - listing: per-folder messages/delta. The cursor is the deltaLink. A
 *    410 (SyncStateNotFound, or a reset) restarts with a full round, given
 *    to the engine as a snapshot: the ids are immutable (every request
 *    says Prefer: IdType="ImmutableId"), so the store matches every
 *    message it knows by id again: same names, same inodes, no download.
 *  - delta cannot expand extended properties, so R and P (the verb in
 *    PidTagLastVerbExecuted, 0x1081) and the size estimate
 *    (PidTagMessageSize, 0x0E08) come from a second query: the message list
 *    with $expand for a large round, $batch GETs of 20 for a small one.
 *  - sizes: Graph has no MIME size; 0x0E08 is an estimate (larger than the
 *    MIME). Messages are reported with size_exact = false: the store shows
 *    the estimate with attribute timeout 0 and the exact size once the body
 *    is fetched (fuse-prior-art.md §2.9).
 *  - writes: PATCH isRead / flag / extended properties, $batch (at most 20
 *    sub-requests, chained with dependsOn so that a batch is one request in
 *    flight: the mailbox allows 4 at once, and the engine has at most 4
 *    sessions), POST .../move, DELETE or POST .../permanentDelete.
 *  - delivery: Graph creates a message from MIME only as a draft in Drafts.
 *    mailfs creates it there, PATCHes PidTagMessageFlags (0x0E07) without
 *    MSGFLAG_UNSENT, with the read, flag and verb properties, then moves it
 *    to its folder.
 *
 * A session is one mf_http (one connection kept alive) used by one thread.
 */
#include "graph_backend.h"

#include "mf_config.h"
#include "mf_http.h"
#include "mf_names.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_API "https://graph.microsoft.com/v1.0"
#define PAGE_SIZE 500		/* Prefer: odata.maxpagesize for delta */
#define LIST_TOP 1000		/* $top of the message list (1..1000) */
#define FOLDER_TOP 100
#define BATCH_MAX 20
#define BATCH_ROUNDS 8
#define EXT_BY_LIST 60		/* fewer upserts than this: $batch GETs */
#define UPLOAD_MAX (150u << 20)

#define PREFER_IMMUTABLE "Prefer: IdType=\"ImmutableId\""
#define SELECT_FIELDS \
	"id,isRead,flag,isDraft,receivedDateTime,internetMessageId"
/* $expand of the verb and the size, percent-encoded, for use inside a
 * printf format (hence %%). */
#define EXPAND_PROPS                                                    \
	"singleValueExtendedProperties(%%24filter%%3Did%%20eq%%20%%27"    \
	"Integer%%200x1081%%27%%20or%%20id%%20eq%%20%%27Integer%%200x0E08" \
	"%%27)"

/* MAPI values (cloud-apis.md A.6, A.5). */
#define VERB_REPLY 102
#define VERB_REPLY_ALL 103
#define VERB_FORWARD 104
#define ICON_REPLIED 261
#define ICON_FORWARDED 262
#define ICON_READ 256
#define MSGFLAG_READ 1
#define MSGFLAG_UNSENT 8

struct wk_folder {
	const char *name;	/* well-known name */
	unsigned int attr;
};

static const struct wk_folder wk_folders[] = {
	{ "inbox", MF_FOLDER_INBOX },
	{ "deleteditems", MF_FOLDER_TRASH },
	{ "drafts", MF_FOLDER_DRAFTS },
	{ "sentitems", MF_FOLDER_SENT },
	{ "junkemail", MF_FOLDER_JUNK },
	{ "archive", MF_FOLDER_ARCHIVE },
};
#define N_WK MF_ARRAY_SIZE(wk_folders)

struct path_entry {
	char *path;
	char *id;
	char *parent;		/* parent folder id, NULL at the top */
};

struct graph_backend {
	struct mf_backend base;
	const struct mf_account *acct;
	struct mf_http *http;
	struct mf_token_source *tokens;
	char *api;		/* no trailing slash */
	bool wk_known;
	char *wk_id[N_WK];	/* ids of the well-known folders, or NULL */
	char *root_id;		/* msgfolderroot */
	struct path_entry *paths;	/* from the last folder walk */
	unsigned int npaths;
};

static struct graph_backend *to_graph(struct mf_backend *be)
{
	return container_of(be, struct graph_backend, base);
}

/* ---- requests ---- */

struct greq {
	const char *method;
	const char *url;
	const char *ctype;	/* Content-Type of body, or NULL */
	const void *body;
	size_t body_len;
	int out_fd;
	uint64_t max_size;
	bool paged;		/* a delta page: Prefer: odata.maxpagesize */
	bool retry_unsafe;	/* safe to resend after a network failure */
};

/* The error.code and error.message of a Graph error body. */
static char *error_text(const struct mf_http_resp *resp, char **code_r)
{
	json_t *root = NULL, *err;
	json_error_t jerr;
	char *out;

	if (code_r)
		*code_r = NULL;
	if (resp->body.len)
		root = json_loadb(resp->body.data, resp->body.len, 0, &jerr);
	err = root ? json_object_get(root, "error") : NULL;
	if (json_is_object(err)) {
		const char *code = json_string_value(json_object_get(err, "code"));
		const char *msg =
			json_string_value(json_object_get(err, "message"));

		out = xasprintf("HTTP %ld %s: %.300s", resp->status,
				code ? code : "?", msg ? msg : "");
		if (code_r && code)
			*code_r = xstrdup(code);
	} else {
		out = xasprintf("HTTP %ld", resp->status);
	}
	json_decref(root);
	return out;
}

/* The mailfs status of a final HTTP status (with Graph's error code). */
static enum mf_status status_of(long status, const char *code)
{
	if (status == 403) {
		/* Access refused is a credentials problem; the others
		   (distinguished folders, quota) are refusals. */
		if (code && (strcasecmp(code, "accessDenied") == 0 ||
			     strcasecmp(code, "ErrorAccessDenied") == 0))
			return MF_AUTH;
		return MF_PROTO;
	}
	if (status == 400 || status == 405 || status == 409)
		return MF_PROTO;
	return mf_http_status_of(status);
}

static unsigned int mailbox_paused(struct mf_token_source *ts);
static void pause_mailbox(struct mf_token_source *ts, unsigned int delay_ms);

static void log_retry(void *ctx, long status, unsigned int delay_ms)
{
	struct graph_backend *be = ctx;

	/* Throttled (not a network failure): the whole mailbox waits. */
	if (status == 429 || status == 503 || status == 504)
		pause_mailbox(be->tokens, delay_ms);
	mf_debug(MF_DBG_HTTP, "graph %s: %s, retrying in %u ms",
		 be->acct->name,
		 status ? "server busy" : "connection failed", delay_ms);
}

/*
 * One request with the retry policy. MF_OK means a 2xx answer; otherwise
 * *error_r says what the server said and resp->status is kept for the
 * caller to look at (404, 410...).
 */
static enum mf_status gcall(struct graph_backend *be, const struct greq *g,
			    struct mf_http_resp *resp, char **error_r)
{
	const char *hdrs[6];
	char ctype[96], pagepref[64];
	unsigned int n = 0;
	struct mf_http_policy pol = {
		.tokens = be->tokens,
		.retry_unsafe = g->retry_unsafe,
		.on_retry = log_retry,
		.ctx = be,
	};
	struct mf_http_req req = {
		.method = g->method,
		.url = g->url,
		.headers = hdrs,
		.body = g->body,
		.body_len = g->body_len,
		.body_fd = -1,
		.out_fd = g->out_fd,
		.max_size = g->max_size,
	};
	enum mf_status st;
	char *code = NULL;

	if (mf_http_interrupted(be->http)) {
		*error_r = xstrdup("interrupted");
		return MF_CANCELED;
	}
	/* Another session was told to wait: so is this one. */
	for (unsigned int ms; (ms = mailbox_paused(be->tokens)) > 0;) {
		mf_debug(MF_DBG_HTTP, "graph %s: mailbox throttled, waiting "
			 "%u ms", be->acct->name, ms);
		if (!mf_http_sleep(be->http, ms)) {
			*error_r = xstrdup("interrupted");
			return MF_CANCELED;
		}
	}
	hdrs[n++] = PREFER_IMMUTABLE;
	if (strcmp(g->method, "PATCH") == 0)
		hdrs[n++] = "Prefer: return=minimal";	/* 204, no echo */
	if (g->paged) {
		snprintf(pagepref, sizeof(pagepref),
			 "Prefer: odata.maxpagesize=%d", PAGE_SIZE);
		hdrs[n++] = pagepref;
	}
	if (g->ctype) {
		snprintf(ctype, sizeof(ctype), "Content-Type: %s", g->ctype);
		hdrs[n++] = ctype;
	}
	hdrs[n] = NULL;
	st = mf_http_call(be->http, &pol, &req, resp, error_r);
	if (st != MF_OK)
		return st;
	if (resp->status >= 200 && resp->status < 300)
		return MF_OK;
	*error_r = error_text(resp, &code);
	st = status_of(resp->status, code);
	free(code);
	return st;
}

static enum mf_status get_json(struct graph_backend *be, const char *url,
			       bool paged, json_t **root_r, long *status_r,
			       char **error_r)
{
	struct greq g = { .method = "GET", .url = url, .out_fd = -1,
			  .paged = paged };
	struct mf_http_resp resp;
	enum mf_status st;
	json_error_t jerr;

	*root_r = NULL;
	mf_http_resp_init(&resp);
	st = gcall(be, &g, &resp, error_r);
	if (status_r)
		*status_r = resp.status;
	if (st == MF_OK) {
		*root_r = json_loadb(resp.body.data ? resp.body.data : "",
				     resp.body.len, 0, &jerr);
		if (!json_is_object(*root_r)) {
			json_decref(*root_r);
			*root_r = NULL;
			*error_r = xasprintf("GET %.200s: not a JSON object: "
					     "%s", url, jerr.text);
			st = MF_PROTO;
		}
	}
	mf_http_resp_free(&resp);
	return st;
}

/* A request with a JSON body (object or NULL); the answer in *root_r. */
static enum mf_status send_json(struct graph_backend *be, const char *method,
				const char *url, json_t *body, bool unsafe,
				json_t **root_r, long *status_r, char **error_r)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct greq g = {
		.method = method,
		.url = url,
		.ctype = text ? "application/json" : NULL,
		.body = text,
		.body_len = text ? strlen(text) : 0,
		.out_fd = -1,
		.retry_unsafe = unsafe,
	};
	struct mf_http_resp resp;
	enum mf_status st;
	json_error_t jerr;

	if (root_r)
		*root_r = NULL;
	mf_http_resp_init(&resp);
	st = gcall(be, &g, &resp, error_r);
	if (status_r)
		*status_r = resp.status;
	if (st == MF_OK && root_r && resp.body.len)
		*root_r = json_loadb(resp.body.data, resp.body.len, 0, &jerr);
	mf_http_resp_free(&resp);
	free(text);
	return st;
}

/* ---- $batch ---- */

struct bitem {
	char *method;		/* owned */
	char *url;		/* owned; relative to the API root */
	json_t *body;		/* owned or NULL */
	int status;		/* final status, 0 while pending */
	json_t *resp;		/* owned response body, or NULL */
};

static void bitems_free(struct bitem *items, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		free(items[i].method);
		free(items[i].url);
		json_decref(items[i].body);
		json_decref(items[i].resp);
	}
	free(items);
}

/*
 * Run the items in $batch requests of at most 20, each chained with
 * dependsOn (one request in flight at the server: sequential). Items that
 * come back 424 (a dependency failed), 429, 503 or 504 go again in the
 * next round, after the longest Retry-After, up to BATCH_ROUNDS rounds.
 * MF_OK when every item has a final status in items[i].status.
 */
static enum mf_status run_batch(struct graph_backend *be, struct bitem *items,
				unsigned int n, char **error_r)
{
	unsigned int backoff = 1000;
	char *url = xasprintf("%s/$batch", be->api);
	enum mf_status st = MF_OK;
	bool busy = false;	/* the last round had throttled items */
	int wait_s = -1;	/* their longest Retry-After */

	for (unsigned int round = 0; round < BATCH_ROUNDS; round++) {
		unsigned int pending = 0;

		for (unsigned int i = 0; i < n; i++)
			pending += items[i].status == 0;
		if (!pending)
			break;
		if (busy) {
			/* Retry-After when given, else backoff with jitter */
			unsigned int ms = wait_s >= 0
						  ? (unsigned int)MF_MIN(wait_s,
									 300) *
							    1000u
						  : backoff / 2 +
							    (unsigned int)rand() %
								    (backoff / 2 +
								     1);

			pause_mailbox(be->tokens, ms);
			if (!mf_http_sleep(be->http, ms)) {
				*error_r = xstrdup("interrupted");
				st = MF_CANCELED;
				break;
			}
			backoff = MF_MIN(backoff * 2, 32000u);
		}
		busy = false;
		wait_s = -1;
		for (unsigned int start = 0; start < n;) {
			json_t *reqs = json_array(), *body, *root = NULL;
			unsigned int idx[BATCH_MAX], k = 0;
			long status;

			while (start < n && k < BATCH_MAX) {
				if (items[start].status == 0)
					idx[k++] = start;
				start++;
			}
			if (k == 0) {
				json_decref(reqs);
				break;
			}
			for (unsigned int j = 0; j < k; j++) {
				struct bitem *it = &items[idx[j]];
				json_t *r = json_object(), *h = json_object();
				char id[16];

				snprintf(id, sizeof(id), "%u", idx[j] + 1);
				json_object_set_new(r, "id", json_string(id));
				json_object_set_new(r, "method",
						    json_string(it->method));
				json_object_set_new(r, "url",
						    json_string(it->url));
				json_object_set_new(
					h, "Prefer",
					json_string(strcmp(it->method, "PATCH") == 0
							    ? "IdType=\"ImmutableId\", "
							      "return=minimal"
							    : "IdType=\"ImmutableId\""));
				if (it->body) {
					json_object_set_new(
						h, "Content-Type",
						json_string("application/json"));
					json_object_set(r, "body", it->body);
				}
				json_object_set_new(r, "headers", h);
				if (j > 0) {
					char dep[16];

					snprintf(dep, sizeof(dep), "%u",
						 idx[j - 1] + 1);
					json_object_set_new(
						r, "dependsOn",
						json_pack("[s]", dep));
				}
				json_array_append_new(reqs, r);
			}
			body = json_pack("{s:o}", "requests", reqs);
			st = send_json(be, "POST", url, body, true, &root,
				       &status, error_r);
			json_decref(body);
			if (st != MF_OK) {
				json_decref(root);
				goto out;
			}
			json_t *resps = json_object_get(root, "responses");
			size_t ri;
			json_t *r;

			json_array_foreach(resps, ri, r) {
				const char *id = json_string_value(
					json_object_get(r, "id"));
				int s = (int)json_integer_value(
					json_object_get(r, "status"));
				unsigned long x = id ? strtoul(id, NULL, 10)
						     : 0;
				struct bitem *it;

				if (x < 1 || x > n)
					continue;
				it = &items[x - 1];
				if (s == 424 || s == 429 || s == 503 ||
				    s == 504 || s == 0) {
					if (s != 424)
						busy = true;
					json_t *h = json_object_get(r,
								    "headers");
					const char *ra = NULL;
					const char *key;
					json_t *v;

					json_object_foreach(h, key, v) {
						if (strcasecmp(key,
							       "Retry-After") ==
						    0)
							ra = json_string_value(
								v);
					}
					if (ra && atoi(ra) > wait_s)
						wait_s = atoi(ra);
					continue;
				}
				it->status = s;
				json_decref(it->resp);
				it->resp = json_incref(
					json_object_get(r, "body"));
			}
			json_decref(root);
		}
	}
	for (unsigned int i = 0; i < n; i++) {
		if (items[i].status == 0) {
			*error_r = xstrdup("$batch: the server stayed busy");
			st = MF_TEMP;
			break;
		}
	}
out:
	free(url);
	return st;
}

/* The error of a batch item as text. */
static char *item_error(const struct bitem *it)
{
	json_t *err = json_object_get(it->resp, "error");
	const char *code = json_string_value(json_object_get(err, "code"));
	const char *msg = json_string_value(json_object_get(err, "message"));

	return xasprintf("%s %s: HTTP %d %s: %.200s", it->method, it->url,
			 it->status, code ? code : "?", msg ? msg : "");
}

/* ---- session ---- */

/*
 * What the sessions of an account share: one token source (the token
 * command runs once for all of them, and once again, not once per
 * session, when the token expires), and the mailbox's pause: when the
 * server says "busy, retry after N s" to one session, the others hold
 * their next requests too (the limits are per mailbox).
 */
struct shared_tokens {
	const struct mf_account *acct;
	struct mf_token_source *ts;
	int64_t pause_until_ms;	/* monotonic; under tokens_lock */
	unsigned int refs;
	struct shared_tokens *next;
};

static pthread_mutex_t tokens_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_tokens *tokens_list;

static struct shared_tokens *shared_of(struct mf_token_source *ts)
{
	struct shared_tokens *t;

	for (t = tokens_list; t && t->ts != ts; t = t->next)
		;
	return t;
}

/* The server asked this mailbox to wait delay_ms. */
static void pause_mailbox(struct mf_token_source *ts, unsigned int delay_ms)
{
	struct shared_tokens *t;
	int64_t until = mf_mono_ms() + delay_ms;

	pthread_mutex_lock(&tokens_lock);
	t = shared_of(ts);
	if (t && t->pause_until_ms < until)
		t->pause_until_ms = until;
	pthread_mutex_unlock(&tokens_lock);
}

/* How long the mailbox still waits (ms), 0 when it does not. */
static unsigned int mailbox_paused(struct mf_token_source *ts)
{
	struct shared_tokens *t;
	int64_t left = 0;

	pthread_mutex_lock(&tokens_lock);
	t = shared_of(ts);
	if (t)
		left = t->pause_until_ms - mf_mono_ms();
	pthread_mutex_unlock(&tokens_lock);
	return left > 0 ? (unsigned int)left : 0;
}

static struct mf_token_source *tokens_get(const struct mf_account *acct)
{
	struct shared_tokens *t;

	pthread_mutex_lock(&tokens_lock);
	for (t = tokens_list; t && t->acct != acct; t = t->next)
		;
	if (!t) {
		t = xcalloc(1, sizeof(*t));
		t->acct = acct;
		t->ts = mf_token_source_new(acct);
		t->next = tokens_list;
		tokens_list = t;
	}
	t->refs++;
	pthread_mutex_unlock(&tokens_lock);
	return t->ts;
}

static void tokens_put(struct mf_token_source *ts)
{
	struct shared_tokens **pp, *t;

	pthread_mutex_lock(&tokens_lock);
	for (pp = &tokens_list; *pp && (*pp)->ts != ts; pp = &(*pp)->next)
		;
	t = *pp;
	if (t && --t->refs == 0) {
		*pp = t->next;
		mf_token_source_free(t->ts);
		free(t);
	}
	pthread_mutex_unlock(&tokens_lock);
}

static int graph_create(const struct mf_account *acct,
			struct mf_backend **be_r, char **error_r)
{
	struct graph_backend *be = xcalloc(1, sizeof(*be));
	const char *api = mf_account_get(acct, "api_url");
	struct mf_http_opts opts = {
		.ca_file = acct->ca_file,
		.timeout = acct->timeout,
		.allow_plaintext = acct->allow_plaintext,
	};
	size_t len;

	be->http = mf_http_new(&opts, error_r);
	if (!be->http) {
		free(be);
		return -EIO;
	}
	be->acct = acct;
	be->tokens = tokens_get(acct);
	be->api = xstrdup(api && *api ? api : DEFAULT_API);
	len = strlen(be->api);
	while (len > 0 && be->api[len - 1] == '/')
		be->api[--len] = '\0';
	*be_r = &be->base;
	return 0;
}

static void paths_clear(struct graph_backend *be)
{
	for (unsigned int i = 0; i < be->npaths; i++) {
		free(be->paths[i].path);
		free(be->paths[i].id);
		free(be->paths[i].parent);
	}
	free(be->paths);
	be->paths = NULL;
	be->npaths = 0;
}

static void graph_destroy(struct mf_backend *base)
{
	struct graph_backend *be = to_graph(base);

	mf_http_free(be->http);
	tokens_put(be->tokens);
	for (unsigned int i = 0; i < N_WK; i++)
		free(be->wk_id[i]);
	free(be->root_id);
	paths_clear(be);
	free(be->api);
	free(be);
}

static void graph_interrupt(struct mf_backend *base)
{
	struct graph_backend *be = to_graph(base);

	mf_http_interrupt(be->http);
}

/* The ids of the well-known folders, once per session ($batch of GETs). */
static enum mf_status known_folders(struct graph_backend *be, char **error_r)
{
	struct bitem *items;
	enum mf_status st;
	unsigned int n = N_WK + 1;

	if (be->wk_known)
		return MF_OK;
	items = xcalloc(n, sizeof(*items));
	for (unsigned int i = 0; i < n; i++) {
		items[i].method = xstrdup("GET");
		items[i].url = xasprintf(
			"/me/mailFolders/%s?$select=id",
			i < N_WK ? wk_folders[i].name : "msgfolderroot");
	}
	st = run_batch(be, items, n, error_r);
	for (unsigned int i = 0; st == MF_OK && i < n; i++) {
		const char *id = json_string_value(
			json_object_get(items[i].resp, "id"));

		if (items[i].status == 200 && id) {
			if (i < N_WK)
				be->wk_id[i] = xstrdup(id);
			else
				be->root_id = xstrdup(id);
		} else if (items[i].status == 401 || items[i].status == 403) {
			*error_r = item_error(&items[i]);
			st = MF_AUTH;
		} else if (i == 0) {
			*error_r = item_error(&items[i]);
			st = status_of(items[i].status, NULL);
			if (st == MF_GONE)
				st = MF_PROTO;	/* no mailbox */
		}
		/* Other well-known folders may not exist (archive). */
	}
	bitems_free(items, n);
	if (st == MF_OK)
		be->wk_known = true;
	else {
		for (unsigned int i = 0; i < N_WK; i++) {
			free(be->wk_id[i]);
			be->wk_id[i] = NULL;
		}
	}
	return st;
}

static enum mf_status graph_connect(struct mf_backend *base, char **error_r)
{
	return known_folders(to_graph(base), error_r);
}

/* ---- folders ---- */

struct walk_item {
	char *id;
	char *path;		/* local path of the folder */
};

static void add_path(struct graph_backend *be, const char *path,
		     const char *id, const char *parent)
{
	be->paths = xrealloc(be->paths, (be->npaths + 1) * sizeof(*be->paths));
	be->paths[be->npaths].path = xstrdup(path);
	be->paths[be->npaths].id = xstrdup(id);
	be->paths[be->npaths].parent = parent ? xstrdup(parent) : NULL;
	be->npaths++;
}

/* One folder of a listing page: report it, queue its children. */
static int walk_folder(struct graph_backend *be, json_t *f,
		       const struct walk_item *parent, struct walk_item **queue,
		       unsigned int *nqueue, mf_folder_cb *cb, void *ctx)
{
	const char *id = json_string_value(json_object_get(f, "id"));
	const char *name = json_string_value(json_object_get(f, "displayName"));
	const char *type = json_string_value(json_object_get(f, "@odata.type"));
	json_int_t kids = json_integer_value(
		json_object_get(f, "childFolderCount"));
	struct mf_remote_folder rf = { 0 };
	char *esc, *path;
	int ret = 0;

	if (!id || !name)
		return 0;
	if (type && strstr(type, "mailSearchFolder"))
		return 0;	/* a saved search, not a folder */
	if (json_is_true(json_object_get(f, "isHidden")))
		return 0;
	rf.remote = id;
	for (unsigned int i = 0; i < N_WK; i++) {
		if (be->wk_id[i] && strcmp(be->wk_id[i], id) == 0)
			rf.attrs |= wk_folders[i].attr;
	}
	if (kids > 0)
		rf.attrs |= MF_FOLDER_HASCHILDREN;
	if (rf.attrs & MF_FOLDER_INBOX) {
		esc = xstrdup("INBOX");
	} else {
		esc = mf_folder_escape(name, strlen(name));
		if (!parent && strcasecmp(esc, "INBOX") == 0) {
			/* Not the inbox but named so: keep them apart. */
			char *e2 = xasprintf("%%49NBOX%s", esc + 5);

			free(esc);
			esc = e2;
		}
	}
	path = parent ? xasprintf("%s/%s", parent->path, esc) : xstrdup(esc);
	free(esc);
	rf.path = path;
	add_path(be, path, id, parent ? parent->id : NULL);
	if (cb)
		ret = cb(ctx, &rf);
	if (ret == 0 && kids > 0) {
		*queue = xrealloc(*queue, (*nqueue + 1) * sizeof(**queue));
		(*queue)[*nqueue].id = xstrdup(id);
		(*queue)[*nqueue].path = path;
		(*nqueue)++;
	} else {
		free(path);
	}
	return ret;
}

static enum mf_status walk_folders(struct graph_backend *be, mf_folder_cb *cb,
				   void *ctx, char **error_r)
{
	struct walk_item *queue = NULL;
	unsigned int nqueue = 0, next = 0;
	enum mf_status st;
	int ret = 0;

	st = known_folders(be, error_r);
	if (st != MF_OK)
		return st;
	paths_clear(be);
	/* -1: the top level; then each queued folder's childFolders. */
	for (int cur = -1; st == MF_OK && ret == 0 &&
			   (cur < 0 || (unsigned int)cur < nqueue);
	     cur = (int)next++) {
		struct walk_item *parent = cur < 0 ? NULL : &queue[cur];
		char *url, *id_esc = NULL;

		if (parent) {
			id_esc = mf_http_escape(parent->id);
			url = xasprintf("%s/me/mailFolders/%s/childFolders?"
					"$top=%d",
					be->api, id_esc, FOLDER_TOP);
		} else {
			url = xasprintf("%s/me/mailFolders?$top=%d", be->api,
					FOLDER_TOP);
		}
		free(id_esc);
		while (url && st == MF_OK && ret == 0) {
			json_t *root, *v;
			size_t i;
			const char *nl;

			st = get_json(be, url, false, &root, NULL, error_r);
			free(url);
			url = NULL;
			if (st != MF_OK)
				break;
			json_array_foreach(json_object_get(root, "value"), i,
					   v) {
				ret = walk_folder(be, v, parent, &queue,
						  &nqueue, cb, ctx);
				if (ret)
					break;
				/* queue may have moved */
				parent = cur < 0 ? NULL : &queue[cur];
			}
			nl = json_string_value(
				json_object_get(root, "@odata.nextLink"));
			if (nl)
				url = xstrdup(nl);
			json_decref(root);
		}
		free(url);
	}
	for (unsigned int i = 0; i < nqueue; i++) {
		free(queue[i].id);
		free(queue[i].path);
	}
	free(queue);
	if (st == MF_OK && ret) {
		*error_r = xstrdup("folder listing aborted");
		st = MF_CANCELED;
	}
	return st;
}

static enum mf_status graph_list_folders(struct mf_backend *base,
					 mf_folder_cb *cb, void *ctx,
					 char **error_r)
{
	return walk_folders(to_graph(base), cb, ctx, error_r);
}

static const struct path_entry *path_find(struct graph_backend *be,
					  const char *path, const char *id)
{
	for (unsigned int i = 0; i < be->npaths; i++) {
		if (path && strcmp(be->paths[i].path, path) == 0)
			return &be->paths[i];
		if (id && strcmp(be->paths[i].id, id) == 0)
			return &be->paths[i];
	}
	return NULL;
}

/*
 * Split a local path into its parent's folder id (NULL for the top) and
 * the unescaped display name of its last component.
 */
static enum mf_status split_path(struct graph_backend *be, const char *path,
				 char **parent_id_r, char **name_r,
				 char **error_r)
{
	const char *slash = strrchr(path, '/');
	char *name;

	*parent_id_r = NULL;
	name = mf_folder_unescape(slash ? slash + 1 : path);
	if (!name || !*name) {
		free(name);
		*error_r = xasprintf("invalid folder name \"%s\"", path);
		return MF_PROTO;
	}
	if (slash) {
		char *ppath = xstrndup(path, (size_t)(slash - path));
		const struct path_entry *pe = path_find(be, ppath, NULL);
		enum mf_status st;

		if (!pe) {
			st = walk_folders(be, NULL, NULL, error_r);
			if (st != MF_OK) {
				free(ppath);
				free(name);
				return st;
			}
			pe = path_find(be, ppath, NULL);
		}
		if (!pe) {
			*error_r = xasprintf("no parent folder \"%s\" on the "
					     "server", ppath);
			free(ppath);
			free(name);
			return MF_PROTO;
		}
		free(ppath);
		*parent_id_r = xstrdup(pe->id);
	}
	*name_r = name;
	return MF_OK;
}

static enum mf_status graph_create_folder(struct mf_backend *base,
					  const char *path, char **remote_r,
					  char **error_r)
{
	struct graph_backend *be = to_graph(base);
	char *parent = NULL, *name = NULL, *url, *pesc;
	json_t *body, *root = NULL;
	enum mf_status st;
	long status = 0;

	*remote_r = NULL;
	st = known_folders(be, error_r);
	if (st == MF_OK)
		st = split_path(be, path, &parent, &name, error_r);
	if (st != MF_OK)
		return st;
	if (parent) {
		pesc = mf_http_escape(parent);
		url = xasprintf("%s/me/mailFolders/%s/childFolders", be->api,
				pesc);
		free(pesc);
	} else {
		url = xasprintf("%s/me/mailFolders", be->api);
	}
	body = json_pack("{s:s}", "displayName", name);
	st = send_json(be, "POST", url, body, false, &root, &status, error_r);
	json_decref(body);
	free(url);
	if (st == MF_OK) {
		const char *id = json_string_value(json_object_get(root, "id"));

		if (id) {
			*remote_r = xstrdup(id);
		} else {
			*error_r = xstrdup("folder created without an id");
			st = MF_PROTO;
		}
	} else if (status == 409) {
		/* It exists: that is success, with its id. */
		const struct path_entry *pe;

		free(*error_r);
		*error_r = NULL;
		st = walk_folders(be, NULL, NULL, error_r);
		pe = st == MF_OK ? path_find(be, path, NULL) : NULL;
		if (pe) {
			*remote_r = xstrdup(pe->id);
		} else if (st == MF_OK) {
			*error_r = xasprintf("folder \"%s\" exists but was not "
					     "listed", path);
			st = MF_PROTO;
		}
	}
	json_decref(root);
	free(parent);
	free(name);
	return st;
}

static enum mf_status graph_delete_folder(struct mf_backend *base,
					  const char *remote, char **error_r)
{
	struct graph_backend *be = to_graph(base);
	char *esc = mf_http_escape(remote);
	char *url = xasprintf("%s/me/mailFolders/%s", be->api, esc);
	enum mf_status st;

	st = send_json(be, "DELETE", url, NULL, true, NULL, NULL, error_r);
	free(url);
	free(esc);
	return st;
}

static enum mf_status graph_rename_folder(struct mf_backend *base,
					  const char *remote,
					  const char *new_path,
					  char **remote_r, char **error_r)
{
	struct graph_backend *be = to_graph(base);
	char *parent = NULL, *name = NULL, *esc, *url;
	const struct path_entry *pe;
	enum mf_status st;
	json_t *body;

	*remote_r = NULL;
	st = walk_folders(be, NULL, NULL, error_r);
	if (st == MF_OK)
		st = split_path(be, new_path, &parent, &name, error_r);
	if (st != MF_OK)
		return st;
	pe = path_find(be, NULL, remote);
	if (!pe) {
		*error_r = xasprintf("folder %s is not on the server", remote);
		free(parent);
		free(name);
		return MF_GONE;
	}
	esc = mf_http_escape(remote);
	url = xasprintf("%s/me/mailFolders/%s", be->api, esc);
	body = json_pack("{s:s}", "displayName", name);
	st = send_json(be, "PATCH", url, body, true, NULL, NULL, error_r);
	json_decref(body);
	free(url);
	if (st == MF_OK &&
	    !((parent == NULL && pe->parent == NULL) ||
	      (parent && pe->parent && strcmp(parent, pe->parent) == 0))) {
		url = xasprintf("%s/me/mailFolders/%s/move", be->api, esc);
		body = json_pack("{s:s}", "destinationId",
				 parent ? parent : "msgfolderroot");
		st = send_json(be, "POST", url, body, true, NULL, NULL,
			       error_r);
		json_decref(body);
		free(url);
	}
	free(esc);
	free(parent);
	free(name);
	if (st == MF_OK)
		*remote_r = xstrdup(remote);
	return st;
}

/* ---- listing ---- */

struct dmsg {
	char *id;		/* owned */
	bool removed;
	bool have_ext;		/* looked up: flags, verb and size (delta
				   cannot expand the properties, and an
				   update may carry only what changed) */
	bool skip;		/* gone when looked up: the next round says */
	bool read, flagged, draft;
	int verb;
	uint64_t size;
	int64_t date;
	char *msgid;		/* owned or NULL */
};

struct delta {
	struct dmsg *v;
	unsigned int n;
	unsigned int *order;	/* indexes of upserts sorted by id */
	unsigned int norder;
};

static void delta_free(struct delta *d)
{
	for (unsigned int i = 0; i < d->n; i++) {
		free(d->v[i].id);
		free(d->v[i].msgid);
	}
	free(d->v);
	free(d->order);
	memset(d, 0, sizeof(*d));
}

/* "2024-05-01T10:00:00Z", fractions and offsets allowed. */
static int64_t parse_time(const char *s)
{
	struct tm tm;
	int y, mo, d, h, mi, sec;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi,
			 &sec) != 6)
		return 0;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	return (int64_t)timegm(&tm);
}

/* Fill what a message JSON says into m. */
static void read_msg(struct dmsg *m, json_t *j)
{
	json_t *v, *props;
	size_t i;

	v = json_object_get(j, "isRead");
	if (json_is_boolean(v)) {
		json_t *fl = json_object_get(j, "flag");
		const char *fs = json_string_value(
			json_object_get(fl, "flagStatus"));

		m->read = json_is_true(v);
		m->flagged = fs && strcmp(fs, "flagged") == 0;
	}
	v = json_object_get(j, "isDraft");
	if (json_is_boolean(v))
		m->draft = json_is_true(v);
	v = json_object_get(j, "receivedDateTime");
	if (json_is_string(v))
		m->date = parse_time(json_string_value(v));
	v = json_object_get(j, "internetMessageId");
	if (json_is_string(v)) {
		free(m->msgid);
		m->msgid = xstrdup(json_string_value(v));
	}
	props = json_object_get(j, "singleValueExtendedProperties");
	if (!json_is_array(props))
		return;
	m->have_ext = true;
	json_array_foreach(props, i, v) {
		const char *pid = json_string_value(json_object_get(v, "id"));
		const char *val = json_string_value(json_object_get(v, "value"));
		const char *hex;
		unsigned long tag;

		if (!pid || !val || !(hex = strstr(pid, "0x")))
			continue;
		/* Graph normalises ids ("Integer 0xe08"): compare numbers */
		tag = strtoul(hex + 2, NULL, 16);
		if (tag == 0x1081)
			m->verb = atoi(val);
		else if (tag == 0x0e08)
			m->size = strtoull(val, NULL, 10);
	}
}

static int cmp_order_ctx(const void *a, const void *b, void *ctx)
{
	const struct delta *d = ctx;

	return strcmp(d->v[*(const unsigned int *)a].id,
		      d->v[*(const unsigned int *)b].id);
}

static void build_order(struct delta *d)
{
	d->order = xcalloc(d->n ? d->n : 1, sizeof(*d->order));
	d->norder = 0;
	for (unsigned int i = 0; i < d->n; i++) {
		if (!d->v[i].removed)
			d->order[d->norder++] = i;
	}
	qsort_r(d->order, d->norder, sizeof(*d->order), cmp_order_ctx, d);
}

/* Every upsert entry of id (a round may mention a message twice). */
static void for_id(struct delta *d, const char *id, json_t *j)
{
	unsigned int lo = 0, hi = d->norder;

	while (lo < hi) {
		unsigned int mid = (lo + hi) / 2;
		int c = strcmp(d->v[d->order[mid]].id, id);

		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < d->norder && strcmp(d->v[d->order[lo]].id, id) == 0; lo++)
		read_msg(&d->v[d->order[lo]], j);
}

static char *folder_url(struct graph_backend *be, const char *folder,
			const char *fmt_rest)
{
	char *esc = mf_http_escape(folder);
	char *url = xasprintf("%s/me/mailFolders/%s/%s", be->api, esc,
			      fmt_rest);

	free(esc);
	return url;
}

/* The verb and size of many messages: the folder's list, $expand-ed. */
static enum mf_status ext_by_list(struct graph_backend *be,
				  const char *folder, struct delta *d,
				  char **error_r)
{
	char rest[512];
	char *url;
	enum mf_status st = MF_OK;

	snprintf(rest, sizeof(rest),
		 "messages?$select=" SELECT_FIELDS "&$expand=" EXPAND_PROPS
		 "&$top=%d",
		 LIST_TOP);
	url = folder_url(be, folder, rest);
	while (url && st == MF_OK) {
		json_t *root, *v;
		const char *nl;
		size_t i;

		st = get_json(be, url, false, &root, NULL, error_r);
		free(url);
		url = NULL;
		if (st != MF_OK)
			break;
		json_array_foreach(json_object_get(root, "value"), i, v) {
			const char *id =
				json_string_value(json_object_get(v, "id"));

			if (id)
				for_id(d, id, v);
		}
		nl = json_string_value(json_object_get(root,
						       "@odata.nextLink"));
		if (nl)
			url = xstrdup(nl);
		json_decref(root);
	}
	free(url);
	return st;
}

/* The verb and size of a few messages: $batch GETs. */
static enum mf_status ext_by_batch(struct graph_backend *be, struct delta *d,
				   char **error_r)
{
	struct bitem *items = NULL;
	unsigned int *which = NULL, n = 0;
	enum mf_status st = MF_OK;

	for (unsigned int k = 0; k < d->norder; k++) {
		struct dmsg *m = &d->v[d->order[k]];
		char *esc;

		if (m->have_ext || (k > 0 && strcmp(d->v[d->order[k - 1]].id,
						    m->id) == 0))
			continue;
		items = xrealloc(items, (n + 1) * sizeof(*items));
		which = xrealloc(which, (n + 1) * sizeof(*which));
		memset(&items[n], 0, sizeof(items[n]));
		esc = mf_http_escape(m->id);
		items[n].method = xstrdup("GET");
		items[n].url = xasprintf("/me/messages/%s?$select=" SELECT_FIELDS
					 "&$expand=" EXPAND_PROPS,
					 esc);
		free(esc);
		which[n++] = d->order[k];
	}
	if (n)
		st = run_batch(be, items, n, error_r);
	for (unsigned int i = 0; st == MF_OK && i < n; i++) {
		struct dmsg *m = &d->v[which[i]];

		if (items[i].status == 200) {
			for_id(d, m->id, items[i].resp);
		} else if (items[i].status == 404) {
			/* Deleted since the round: mark every entry. */
			for (unsigned int k = 0; k < d->n; k++) {
				if (!d->v[k].removed &&
				    strcmp(d->v[k].id, m->id) == 0)
					d->v[k].skip = true;
			}
		} else {
			*error_r = item_error(&items[i]);
			st = status_of(items[i].status, NULL);
			if (st == MF_GONE || st == MF_OK)
				st = MF_PROTO;
		}
	}
	bitems_free(items, n);
	free(which);
	return st;
}

static unsigned int msg_flags(const struct dmsg *m)
{
	unsigned int f = 0;

	if (m->read)
		f |= MF_FLAG_SEEN;
	if (m->flagged)
		f |= MF_FLAG_FLAGGED;
	if (m->draft)
		f |= MF_FLAG_DRAFT;
	if (m->verb == VERB_REPLY || m->verb == VERB_REPLY_ALL)
		f |= MF_FLAG_REPLIED;
	else if (m->verb == VERB_FORWARD)
		f |= MF_FLAG_PASSED;
	return f;
}

/* One round of delta from url (a deltaLink, or the initial request). */
static enum mf_status delta_round(struct graph_backend *be, const char *start,
				  struct delta *d, char **link_r,
				  long *status_r, char **error_r)
{
	char *url = xstrdup(start);
	enum mf_status st = MF_OK;

	*link_r = NULL;
	while (url) {
		json_t *root, *v;
		const char *nl, *dl;
		size_t i;

		st = get_json(be, url, true, &root, status_r, error_r);
		free(url);
		url = NULL;
		if (st != MF_OK)
			break;
		json_array_foreach(json_object_get(root, "value"), i, v) {
			const char *id =
				json_string_value(json_object_get(v, "id"));
			struct dmsg *m;

			if (!id)
				continue;
			d->v = xrealloc(d->v, (d->n + 1) * sizeof(*d->v));
			m = &d->v[d->n++];
			memset(m, 0, sizeof(*m));
			m->id = xstrdup(id);
			m->removed = json_object_get(v, "@removed") != NULL;
			if (!m->removed)
				read_msg(m, v);
		}
		nl = json_string_value(json_object_get(root,
						       "@odata.nextLink"));
		dl = json_string_value(json_object_get(root,
						       "@odata.deltaLink"));
		if (nl)
			url = xstrdup(nl);
		else if (dl)
			*link_r = xstrdup(dl);
		json_decref(root);
		if (!nl && !dl) {
			*error_r = xstrdup("delta page without a next or "
					   "delta link");
			st = MF_PROTO;
		}
	}
	return st;
}

static enum mf_status graph_fetch_changes(struct mf_backend *base,
					  const char *folder,
					  const struct mf_changes_hint *hint,
					  const struct mf_changes_sink *sink,
					  char **cursor_r, char **error_r)
{
	struct graph_backend *be = to_graph(base);
	/* Immutable ids: a message moved elsewhere keeps its id. */
	struct mf_changes_info info = { .ids_follow = true };
	struct delta d = { 0 };
	char *initial, *link = NULL;
	const char *start;
	enum mf_status st;
	long status = 0;
	unsigned int upserts = 0;

	*cursor_r = NULL;
	initial = folder_url(be, folder,
			     "messages/delta?$select=" SELECT_FIELDS);
	/* A cursor of another api_url (or none) starts over. */
	if (hint->cursor &&
	    strncmp(hint->cursor, be->api, strlen(be->api)) == 0) {
		start = hint->cursor;
	} else {
		start = initial;
		info.snapshot = true;
	}
	st = delta_round(be, start, &d, &link, &status, error_r);
	if (st == MF_GONE && status == 410 && !info.snapshot) {
		/*
		 * The delta token expired (SyncStateNotFound) or the server
		 * reset the sync: list everything again. Ids are immutable,
		 * so the engine matches what it knows by id.
		 */
		mf_notice("graph %s: delta state of a folder expired (%s); "
			  "listing it again", be->acct->name, *error_r);
		free(*error_r);
		*error_r = NULL;
		delta_free(&d);
		info.snapshot = true;
		info.ids_follow = true;
		st = delta_round(be, initial, &d, &link, &status, error_r);
	}
	/* MF_GONE now: the folder itself is gone. */
	free(initial);
	if (st != MF_OK)
		goto out;

	build_order(&d);
	upserts = d.norder;
	/*
	 * The list costs a request per LIST_TOP messages of the folder, the
	 * batches one per BATCH_MAX changed ones: take the cheaper.
	 */
	if (upserts > EXT_BY_LIST &&
	    upserts / BATCH_MAX >
		    MF_MAX(hint->known_count, upserts) / LIST_TOP + 1)
		st = ext_by_list(be, folder, &d, error_r);
	if (st == MF_OK)
		st = ext_by_batch(be, &d, error_r);
	if (st != MF_OK)
		goto out;

	if (sink->begin(sink->ctx, &info) != 0) {
		st = MF_CANCELED;
		*error_r = xstrdup("listing aborted");
		goto out;
	}
	for (unsigned int i = 0; i < d.n; i++) {
		struct dmsg *m = &d.v[i];
		struct mf_change ch;

		memset(&ch, 0, sizeof(ch));
		ch.msg.id = m->id;
		if (m->removed) {
			ch.kind = MF_CHANGE_GONE;
		} else if (m->skip) {
			continue;
		} else {
			ch.kind = MF_CHANGE_UPSERT;
			ch.msg.flags = msg_flags(m);
			ch.msg.has_meta = true;
			ch.msg.size = m->size;
			ch.msg.size_exact = false;
			ch.msg.internaldate = m->date;
			ch.msg.message_id = m->msgid;
		}
		if (sink->change(sink->ctx, &ch) != 0) {
			st = MF_CANCELED;
			*error_r = xstrdup("listing aborted");
			goto out;
		}
	}
	mf_debug(MF_DBG_HTTP, "graph %s: %s of %s: %u changes (%" PRIu64
		 " requests so far)",
		 be->acct->name, info.snapshot ? "listing" : "delta", folder,
		 d.n, mf_http_requests(be->http));
	*cursor_r = link;
	link = NULL;
out:
	free(link);
	delta_free(&d);
	return st;
}

/* ---- bodies ---- */

static enum mf_status graph_fetch_body(struct mf_backend *base,
				       const char *folder, const char *id,
				       int out_fd, uint64_t max_size,
				       uint64_t *size_r, char **error_r)
{
	struct graph_backend *be = to_graph(base);
	char *esc = mf_http_escape(id);
	char *url = xasprintf("%s/me/messages/%s/$value", be->api, esc);
	struct greq g = { .method = "GET", .url = url, .out_fd = out_fd,
			  .max_size = max_size };
	struct mf_http_resp resp;
	enum mf_status st;

	(void)folder;
	*size_r = 0;
	mf_http_resp_init(&resp);
	st = gcall(be, &g, &resp, error_r);
	if (st == MF_OK)
		*size_r = resp.written;
	mf_http_resp_free(&resp);
	free(url);
	free(esc);
	return st;
}

/* ---- flags ---- */

/* The PATCH body for a change of flags. */
static json_t *flags_patch(unsigned int add, unsigned int remove)
{
	json_t *b = json_object();
	int verb = -1, icon = 0;

	if ((add | remove) & MF_FLAG_SEEN)
		json_object_set_new(b, "isRead",
				    json_boolean(add & MF_FLAG_SEEN));
	if ((add | remove) & MF_FLAG_FLAGGED)
		json_object_set_new(b, "flag",
				    json_pack("{s:s}", "flagStatus",
					      (add & MF_FLAG_FLAGGED)
						      ? "flagged"
						      : "notFlagged"));
	/* One verb at a time: the one added last wins. */
	if (add & MF_FLAG_PASSED) {
		verb = VERB_FORWARD;
		icon = ICON_FORWARDED;
	} else if (add & MF_FLAG_REPLIED) {
		verb = VERB_REPLY;
		icon = ICON_REPLIED;
	} else if (remove & (MF_FLAG_PASSED | MF_FLAG_REPLIED)) {
		verb = 0;
		icon = ICON_READ;
	}
	if (verb >= 0) {
		char vb[16], ic[16];

		snprintf(vb, sizeof(vb), "%d", verb);
		snprintf(ic, sizeof(ic), "%d", icon);
		json_object_set_new(
			b, "singleValueExtendedProperties",
			json_pack("[{s:s,s:s},{s:s,s:s}]", "id",
				  "Integer 0x1081", "value", vb, "id",
				  "Integer 0x1080", "value", ic));
	}
	return b;
}

static enum mf_status graph_set_flags(struct mf_backend *base,
				      const char *folder,
				      const char *const *ids,
				      unsigned int count, unsigned int add,
				      unsigned int remove, char **error_r)
{
	struct graph_backend *be = to_graph(base);
	struct bitem *items;
	enum mf_status st;

	(void)folder;
	add &= MF_FLAG_SEEN | MF_FLAG_FLAGGED | MF_FLAG_REPLIED |
	       MF_FLAG_PASSED;
	remove &= MF_FLAG_SEEN | MF_FLAG_FLAGGED | MF_FLAG_REPLIED |
		  MF_FLAG_PASSED;
	if ((!add && !remove) || count == 0)
		return MF_OK;	/* D and T stay local */
	if (count == 1) {
		char *esc = mf_http_escape(ids[0]);
		char *url = xasprintf("%s/me/messages/%s", be->api, esc);
		json_t *body = flags_patch(add, remove);

		st = send_json(be, "PATCH", url, body, true, NULL, NULL,
			       error_r);
		json_decref(body);
		free(url);
		free(esc);
		return st;
	}
	items = xcalloc(count, sizeof(*items));
	for (unsigned int i = 0; i < count; i++) {
		char *esc = mf_http_escape(ids[i]);

		items[i].method = xstrdup("PATCH");
		items[i].url = xasprintf("/me/messages/%s", esc);
		items[i].body = flags_patch(add, remove);
		free(esc);
	}
	st = run_batch(be, items, count, error_r);
	for (unsigned int i = 0; st == MF_OK && i < count; i++) {
		int s = items[i].status;

		if ((s >= 200 && s < 300) || s == 404)
			continue;	/* 404: expunged meanwhile */
		*error_r = item_error(&items[i]);
		st = status_of(s, NULL);
	}
	bitems_free(items, count);
	return st;
}

/* ---- move, delete ---- */

/* Where is message id now? *folder_r = its parentFolderId or NULL. */
static enum mf_status where_is(struct graph_backend *be, const char *id,
			       char **folder_r, char **error_r)
{
	char *esc = mf_http_escape(id);
	char *url = xasprintf("%s/me/messages/%s?$select=id,parentFolderId",
			      be->api, esc);
	json_t *root = NULL;
	enum mf_status st;

	*folder_r = NULL;
	st = get_json(be, url, false, &root, NULL, error_r);
	if (st == MF_OK) {
		const char *p = json_string_value(
			json_object_get(root, "parentFolderId"));

		*folder_r = p ? xstrdup(p) : NULL;
	}
	json_decref(root);
	free(url);
	free(esc);
	return st;
}

static enum mf_status move_to(struct graph_backend *be, const char *id,
			      const char *to, char **id_r, char **error_r)
{
	char *esc = mf_http_escape(id);
	char *url = xasprintf("%s/me/messages/%s/move", be->api, esc);
	json_t *body = json_pack("{s:s}", "destinationId", to), *root = NULL;
	enum mf_status st;
	long status = 0;

	*id_r = NULL;
	/* Ids are immutable: a repeated move is harmless. */
	st = send_json(be, "POST", url, body, true, &root, &status, error_r);
	if (st == MF_OK) {
		const char *nid = json_string_value(json_object_get(root, "id"));

		*id_r = xstrdup(nid ? nid : id);
	}
	json_decref(root);
	json_decref(body);
	free(url);
	free(esc);
	return st;
}

static enum mf_status graph_move(struct mf_backend *base, const char *from,
				 const char *id, const char *to, char **id_r,
				 char **error_r)
{
	struct graph_backend *be = to_graph(base);
	enum mf_status st;
	char *where = NULL, *err2 = NULL;

	(void)from;
	st = move_to(be, id, to, id_r, error_r);
	if (st != MF_GONE && st != MF_PROTO)
		return st;
	/*
	 * Not found, or refused: is the message gone, already there (moved
	 * before a crash), or is the target missing?
	 */
	if (where_is(be, id, &where, &err2) == MF_GONE) {
		free(err2);
		return MF_GONE;
	}
	free(err2);
	if (where && strcmp(where, to) == 0) {
		free(*error_r);
		*error_r = NULL;
		*id_r = xstrdup(id);
		st = MF_OK;
	} else if (st == MF_GONE) {
		st = MF_PROTO;	/* the message exists: the target does not */
	}
	free(where);
	return st;
}

static enum mf_status graph_expunge(struct mf_backend *base,
				    const char *folder, const char *id,
				    char **error_r)
{
	struct graph_backend *be = to_graph(base);
	char *esc = mf_http_escape(id);
	enum mf_status st;
	char *url;

	(void)folder;
	if (be->acct->delete_policy == MF_DELETE_EXPUNGE) {
		url = xasprintf("%s/me/messages/%s/permanentDelete", be->api,
				esc);
		st = send_json(be, "POST", url, NULL, true, NULL, NULL,
			       error_r);
	} else {
		/* Inside Deleted Items (delete = trash): DELETE removes it
		   to the recoverable items. */
		url = xasprintf("%s/me/messages/%s", be->api, esc);
		st = send_json(be, "DELETE", url, NULL, true, NULL, NULL,
			       error_r);
	}
	free(url);
	free(esc);
	return st;
}

/* ---- delivery ---- */

static enum mf_status read_upload(int fd, uint64_t want,
				  unsigned char **raw_r, uint64_t *size_r,
				  char **b64_r, size_t *len_r, char **error_r)
{
	struct stat stt;
	uint64_t size;
	unsigned char *raw;
	char *b64;
	ssize_t got;

	if (fstat(fd, &stt) < 0) {
		*error_r = xasprintf("cannot stat the message to upload: %s",
				     strerror(errno));
		return MF_PROTO;
	}
	size = want ? want : (uint64_t)stt.st_size;
	if ((uint64_t)stt.st_size < size || size == 0 || size > UPLOAD_MAX) {
		*error_r = xasprintf("message to upload has %lld bytes, "
				     "expected %" PRIu64 " (at most %u)",
				     (long long)stt.st_size, size, UPLOAD_MAX);
		return MF_PROTO;
	}
	raw = xmalloc((size_t)size);
	got = mf_pread_all(fd, raw, (size_t)size, 0);
	if (got < 0 || (uint64_t)got != size) {
		free(raw);
		*error_r = xstrdup("cannot read the message to upload");
		return MF_TEMP;
	}
	b64 = xmalloc(4 * (((size_t)size + 2) / 3) + 1);
	*len_r = (size_t)EVP_EncodeBlock((unsigned char *)b64, raw,
					 (int)size);
	*raw_r = raw;
	*size_r = size;
	*b64_r = b64;
	return MF_OK;
}

/*
 * An upload that died between its steps left its copy in Drafts (not
 * yet moved, perhaps no longer a draft). Find it: same Message-ID and
 * byte for byte the same MIME. *id_r = its id, or NULL.
 */
static enum mf_status find_left_behind(struct graph_backend *be,
				       const unsigned char *raw,
				       uint64_t size, char **id_r,
				       char **error_r)
{
	char *msgid = mf_header_message_id((const char *)raw, (size_t)size);
	char *quoted, *filter, *fesc, *desc, *url;
	json_t *root = NULL, *v;
	enum mf_status st;
	size_t i;

	*id_r = NULL;
	if (!msgid || !be->wk_id[2]) {
		free(msgid);
		return MF_OK;
	}
	/* OData string literal: ' doubled. */
	{
		struct mf_buf b;

		mf_buf_init(&b);
		for (const char *p = msgid; *p; p++) {
			if (*p == '\'')
				mf_buf_appendc(&b, '\'');
			mf_buf_appendc(&b, *p);
		}
		quoted = mf_buf_steal(&b);
	}
	filter = xasprintf("internetMessageId eq '%s'", quoted);
	fesc = mf_http_escape(filter);
	desc = mf_http_escape(be->wk_id[2]);
	url = xasprintf("%s/me/mailFolders/%s/messages?$filter=%s&$select=id",
			be->api, desc, fesc);
	st = get_json(be, url, false, &root, NULL, error_r);
	json_array_foreach(json_object_get(root, "value"), i, v) {
		const char *id = json_string_value(json_object_get(v, "id"));
		char *iesc, *vurl;
		struct greq g = { .method = "GET", .out_fd = -1,
				  .max_size = size + 1 };
		struct mf_http_resp resp;
		enum mf_status gst;
		char *err2 = NULL;

		if (!id || st != MF_OK)
			continue;
		iesc = mf_http_escape(id);
		vurl = xasprintf("%s/me/messages/%s/$value", be->api, iesc);
		g.url = vurl;
		mf_http_resp_init(&resp);
		gst = gcall(be, &g, &resp, &err2);
		if (gst == MF_OK && resp.body.len == size &&
		    memcmp(resp.body.data, raw, (size_t)size) == 0) {
			*id_r = xstrdup(id);
		} else if (gst == MF_TEMP || gst == MF_AUTH ||
			   gst == MF_CANCELED) {
			st = gst;
			*error_r = err2;
			err2 = NULL;
		}
		free(err2);
		mf_http_resp_free(&resp);
		free(vurl);
		free(iesc);
		if (*id_r || st != MF_OK)
			break;
	}
	json_decref(root);
	free(url);
	free(desc);
	free(fesc);
	free(filter);
	free(quoted);
	free(msgid);
	return st;
}

static enum mf_status graph_append(struct mf_backend *base, const char *folder,
				   int in_fd, const struct mf_append_info *info,
				   char **id_r, char **error_r)
{
	struct graph_backend *be = to_graph(base);
	char *b64 = NULL, *url, *esc = NULL, *draft_id = NULL;
	unsigned char *raw = NULL;
	uint64_t raw_size = 0;
	struct greq g = { .method = "POST", .ctype = "text/plain",
			  .out_fd = -1 };
	struct mf_http_resp resp;
	json_t *root = NULL, *patch;
	json_error_t jerr;
	enum mf_status st;
	size_t len = 0;
	const char *drafts;
	unsigned int flags = info->flags;
	char mflags[16];

	*id_r = NULL;
	st = known_folders(be, error_r);
	if (st == MF_OK)
		st = read_upload(in_fd, info->size, &raw, &raw_size, &b64, &len,
				 error_r);
	if (st == MF_OK && info->retry)
		st = find_left_behind(be, raw, raw_size, &draft_id, error_r);
	free(raw);
	if (st != MF_OK || draft_id) {
		free(b64);
		if (st != MF_OK)
			return st;
		mf_info("graph %s: an earlier upload left its copy in Drafts; "
			"finishing it", be->acct->name);
		goto finish;
	}

	/* 1. Create from MIME: a draft in Drafts (A.5). */
	url = xasprintf("%s/me/messages", be->api);
	g.url = url;
	g.body = b64;
	g.body_len = len;
	mf_http_resp_init(&resp);
	st = gcall(be, &g, &resp, error_r);
	if (st == MF_OK) {
		root = json_loadb(resp.body.data ? resp.body.data : "",
				  resp.body.len, 0, &jerr);
		const char *id = json_string_value(json_object_get(root, "id"));

		if (id) {
			draft_id = xstrdup(id);
		} else {
			*error_r = xstrdup("message created without an id");
			st = MF_PROTO;
		}
		json_decref(root);
	}
	mf_http_resp_free(&resp);
	free(url);
	free(b64);
	if (st != MF_OK)
		return st;

finish:
	/*
	 * 2. Not a draft: PidTagMessageFlags without MSGFLAG_UNSENT (unless
	 * the name says D), read per S, and the flag and verb.
	 */
	snprintf(mflags, sizeof(mflags), "%d",
		 ((flags & MF_FLAG_SEEN) ? MSGFLAG_READ : 0) |
			 ((flags & MF_FLAG_DRAFT) ? MSGFLAG_UNSENT : 0));
	patch = flags_patch(flags & (MF_FLAG_FLAGGED | MF_FLAG_REPLIED |
				     MF_FLAG_PASSED | MF_FLAG_SEEN),
			    (~flags) & MF_FLAG_SEEN);
	{
		json_t *props = json_object_get(patch,
						"singleValueExtendedProperties");

		if (!props) {
			props = json_array();
			json_object_set_new(patch,
					    "singleValueExtendedProperties",
					    props);
		}
		json_array_append_new(props,
				      json_pack("{s:s,s:s}", "id",
						"Integer 0x0E07", "value",
						mflags));
	}
	esc = mf_http_escape(draft_id);
	url = xasprintf("%s/me/messages/%s", be->api, esc);
	st = send_json(be, "PATCH", url, patch, true, NULL, NULL, error_r);
	json_decref(patch);
	free(url);

	/* 3. Into its folder. */
	drafts = be->wk_id[2];
	if (st == MF_OK && !(drafts && strcmp(drafts, folder) == 0))
		st = move_to(be, draft_id, folder, id_r, error_r);
	else if (st == MF_OK)
		*id_r = xstrdup(draft_id);
	if (st != MF_OK && st != MF_CANCELED) {
		/* Do not leave a half-delivered draft behind. */
		char *err2 = NULL;

		url = xasprintf("%s/me/messages/%s/permanentDelete", be->api,
				esc);
		if (send_json(be, "POST", url, NULL, true, NULL, NULL,
			      &err2) != MF_OK)
			mf_warn("graph %s: could not remove the draft of a "
				"failed upload: %s",
				be->acct->name, err2 ? err2 : "?");
		free(err2);
		free(url);
	}
	free(esc);
	free(draft_id);
	return st;
}

const struct mf_backend_ops mf_graph_backend_ops = {
	.name = "graph",
	.caps = 0,
	.max_sessions = 4,	/* Outlook: 4 concurrent requests/mailbox */
	/* D (isDraft) is read-only; T has no Graph property */
	.flags_writable = MF_FLAG_SEEN | MF_FLAG_FLAGGED | MF_FLAG_REPLIED |
			  MF_FLAG_PASSED,
	.flags_local = MF_FLAG_TRASHED,
	.flag_batch_max = BATCH_MAX,	/* one $batch request */
	.flag_settle = true,
	.create = graph_create,
	.destroy = graph_destroy,
	.connect = graph_connect,
	.list_folders = graph_list_folders,
	.fetch_changes = graph_fetch_changes,
	.probe = NULL,
	.fetch_body = graph_fetch_body,
	.fetch_bodies = NULL,
	.set_flags = graph_set_flags,
	.append = graph_append,
	.move = graph_move,
	.expunge = graph_expunge,
	.create_folder = graph_create_folder,
	.delete_folder = graph_delete_folder,
	.rename_folder = graph_rename_folder,
	.wait_push = NULL,
	.interrupt = graph_interrupt,
};
