/*
 * The Gmail API backend: a mailbox with its labels as folders.
 *
 * Folders. A folder's remote name is its label id: INBOX, SENT, DRAFT,
 * TRASH, SPAM, user labels ("Label_17", shown under their names, nested
 * on "/"), and "[ALL]" for All Mail (every message outside Trash and
 * Spam). Category and the other system labels (UNREAD, STARRED,
 * IMPORTANT, CHAT, CATEGORY_*) are not folders unless named in the
 * account's "labels" key. A message id is account-global (a message
 * with three labels has one id in three folders): the backend says so
 * with MF_CAP_GLOBAL_IDS and the store gives the rows one unique name
 * part and one body.
 *
 * Cursors. Gmail keeps one history for the whole mailbox, not one per
 * label. Each folder's cursor is the mailbox historyId the folder was
 * last synced to, and a delta is history.list from it filtered by the
 * folder's labelId (All Mail: unfiltered). list_folders reads the
 * mailbox's current historyId (getProfile, 1 unit) and reports it as
 * every folder's status, so a resync with nothing to do is two requests
 * (labels.list, getProfile) and 2 units whatever the number of folders.
 * The messages a delta names are re-read (format=metadata, in batches)
 * and put in or out of the folder by their current labels, as the
 * reference advises: history records may omit labels. A 404 for an old
 * historyId is answered with a full listing; ids do not change, so it
 * re-matches every row (no download, same names and inodes).
 *
 * Listing. messages.list per label (500 ids a page), then metadata in
 * batches of at most 100 calls. Metadata read for one folder is kept for
 * the rest of the pass over the folders (list_folders starts a new one;
 * MEMO_TTL_MS at most) so that the first listing of a message with five
 * labels reads it once, even when the quota makes that pass take many
 * minutes; a folder listed from that memo returns as its cursor the
 * historyId taken before the memo's first read, so nothing that changed
 * since is missed (a later delta replays it).
 *
 * Sizes. Gmail only gives sizeEstimate: listings say size_exact = false
 * and the store treats the size accordingly (see meta_server_name). The
 * body (format=raw, base64url) gives the exact size.
 *
 * Flags. S <-> not UNREAD, F <-> STARRED, D <-> DRAFT (which clients
 * cannot set: a local D change stays local). R, P and T have no Gmail
 * equivalent and are kept locally (MF_CHANGES_LOCAL_FLAGS).
 *
 * Quota. Every call is charged its units (reference C.10) against a
 * per-user budget (quota_units per minute, default 15,000) shared by the
 * sessions of the account; a call waits for its units. 429, 403
 * rateLimitExceeded/userRateLimitExceeded and 5xx are retried with
 * exponential backoff and jitter (mf_http_call), other 4xx never.
 */
#include "gmail_backend.h"

#include "mf_config.h"
#include "mf_http.h"
#include "mf_names.h"
#include "mf_util.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ALL_MAIL "[ALL]"
/* Maildir flags Gmail has no label for: mailfs keeps them itself. */
#define GMAIL_LOCAL_FLAGS (MF_FLAG_REPLIED | MF_FLAG_PASSED | MF_FLAG_TRASHED)
#define BATCH_MAX 100		/* calls per batch request (the API's cap) */
#define MODIFY_MAX 1000		/* ids per batchModify */
#define LIST_PAGE 500
#define MEMO_TTL_MS (30 * 60 * 1000)
#define MEMO_BUCKETS 4096
#define BATCH_ROUNDS 6		/* tries of a batch part that was throttled */
#define BODY_JSON_MAX (96u << 20)

/* Units per method (reference C.10). */
enum {
	U_PROFILE = 1, U_LABELS_LIST = 1, U_LABEL_WRITE = 5, U_LIST = 5,
	U_GET = 5, U_MODIFY = 5, U_TRASH = 5, U_DELETE = 10, U_INSERT = 25,
	U_BATCH_MODIFY = 50, U_HISTORY = 2,
};

/* ---- the per-user quota budget, shared by an account's sessions ---- */

struct quota {
	struct quota *next;
	char *key;		/* account name */
	pthread_mutex_t lock;
	double avail;		/* units */
	double cap;
	double per_ms;
	int64_t last_ms;
	uint64_t spent;		/* units, for logs and benchmarks */
};

static pthread_mutex_t quotas_lock = PTHREAD_MUTEX_INITIALIZER;
static struct quota *quotas;

static struct quota *quota_for(const char *account, unsigned int per_minute)
{
	struct quota *q;

	pthread_mutex_lock(&quotas_lock);
	for (q = quotas; q; q = q->next) {
		if (strcmp(q->key, account) == 0)
			break;
	}
	if (!q) {
		q = xcalloc(1, sizeof(*q));
		q->key = xstrdup(account);
		pthread_mutex_init(&q->lock, NULL);
		/*
		 * Bursts of up to a sixth of the budget (the API's moving
		 * average allows short bursts), refilled so that no window
		 * of a minute sees more than the budget: cap + 60 s of
		 * refill = per_minute. A call never costs more than cap
		 * (batches are cut to fit; one call is at most 50 units).
		 */
		q->cap = MF_MAX(per_minute / 6.0, 50.0);
		q->per_ms = MF_MAX(per_minute - q->cap, 1.0) / 60000.0;
		q->avail = q->cap;
		q->last_ms = mf_mono_ms();
		q->next = quotas;
		quotas = q;
	}
	pthread_mutex_unlock(&quotas_lock);
	return q;
}

/* ---- the session ---- */

struct label {
	char *id;
	char *name;
	bool system;
};

struct meta {
	struct meta *next;
	char *id;
	char *labels;		/* ",L1,L2," */
	int64_t date;		/* seconds */
	uint64_t size;		/* sizeEstimate */
	char *msgid;
};

struct gmail {
	struct mf_backend base;
	const struct mf_account *acct;
	struct mf_http *http;
	struct mf_token_source *tokens;
	struct quota *quota;
	char *api;		/* api_url without a trailing "/" */
	char *user_path;	/* "/gmail/v1/users/<user>" (escaped) */
	bool inbox_trash;	/* inbox_unlink = trash */
	char **shown;		/* extra system labels shown as folders */

	struct label *labels;
	unsigned int nlabels;

	struct meta *memo[MEMO_BUCKETS];
	int64_t memo_ms;	/* when the memo was started, 0: empty */
	char *memo_hid;		/* historyId taken before it was started */
};

static struct gmail *G(struct mf_backend *be)
{
	return (struct gmail *)be;
}

static void memo_clear(struct gmail *g)
{
	for (unsigned int i = 0; i < MEMO_BUCKETS; i++) {
		struct meta *m = g->memo[i], *next;

		for (; m; m = next) {
			next = m->next;
			free(m->id);
			free(m->labels);
			free(m->msgid);
			free(m);
		}
		g->memo[i] = NULL;
	}
	g->memo_ms = 0;
	free(g->memo_hid);
	g->memo_hid = NULL;
}

static unsigned int memo_hash(const char *id)
{
	unsigned int h = 5381;

	for (; *id; id++)
		h = h * 33 + (unsigned char)*id;
	return h % MEMO_BUCKETS;
}

static struct meta *memo_find(struct gmail *g, const char *id)
{
	for (struct meta *m = g->memo[memo_hash(id)]; m; m = m->next) {
		if (strcmp(m->id, id) == 0)
			return m;
	}
	return NULL;
}

static struct meta *memo_put(struct gmail *g, const char *id)
{
	struct meta *m = memo_find(g, id);
	unsigned int h;

	if (m)
		return m;
	h = memo_hash(id);
	m = xcalloc(1, sizeof(*m));
	m->id = xstrdup(id);
	m->next = g->memo[h];
	g->memo[h] = m;
	return m;
}

static bool has_label(const char *labels, const char *id)
{
	size_t n = strlen(id);

	for (const char *p = labels; p && (p = strstr(p, id)); p += n) {
		if (p > labels && p[-1] == ',' && p[n] == ',')
			return true;
	}
	return false;
}

static unsigned int flags_of(const char *labels)
{
	unsigned int f = 0;

	if (!has_label(labels, "UNREAD"))
		f |= MF_FLAG_SEEN;
	if (has_label(labels, "STARRED"))
		f |= MF_FLAG_FLAGGED;
	if (has_label(labels, "DRAFT"))
		f |= MF_FLAG_DRAFT;
	return f;
}

/* Does a message with these labels stand in the folder? */
static bool in_folder(const char *folder, const char *labels)
{
	bool trash = has_label(labels, "TRASH"), spam = has_label(labels, "SPAM");

	if (strcmp(folder, ALL_MAIL) == 0)
		return !trash && !spam;
	if (strcmp(folder, "TRASH") == 0)
		return trash;
	if (strcmp(folder, "SPAM") == 0)
		return spam;
	return has_label(labels, folder) && !trash && !spam;
}

static enum mf_status quota_take(struct gmail *g, unsigned int units,
				 char **error_r)
{
	struct quota *q = g->quota;

	for (;;) {
		int64_t now = mf_mono_ms(), wait;

		pthread_mutex_lock(&q->lock);
		q->avail += (double)(now - q->last_ms) * q->per_ms;
		if (q->avail > q->cap)
			q->avail = q->cap;
		q->last_ms = now;
		if (q->avail >= units || q->avail >= q->cap) {
			q->avail -= units;
			q->spent += units;
			pthread_mutex_unlock(&q->lock);
			return MF_OK;
		}
		wait = (int64_t)((units - q->avail) / q->per_ms) + 1;
		pthread_mutex_unlock(&q->lock);
		mf_debug(MF_DBG_HTTP, "gmail: quota: waiting %lld ms for %u "
			 "units", (long long)wait, units);
		if (!mf_http_sleep(g->http, (unsigned int)wait)) {
			*error_r = xstrdup("interrupted");
			return MF_CANCELED;
		}
	}
}

/* ---- HTTP ---- */

/* The reason of a Google error envelope, or "". */
static void error_reason(const char *body, char *buf, size_t size)
{
	json_t *root = json_loads(body ? body : "", 0, NULL), *e, *errs;
	const char *r = NULL;

	buf[0] = '\0';
	if (!root)
		return;
	e = json_object_get(root, "error");
	errs = json_object_get(e, "errors");
	if (json_is_array(errs) && json_array_size(errs) > 0)
		r = json_string_value(json_object_get(json_array_get(errs, 0),
						      "reason"));
	if (!r)
		r = json_string_value(json_object_get(e, "status"));
	if (r)
		snprintf(buf, size, "%s", r);
	json_decref(root);
}

static bool rate_limited(long status, const char *body)
{
	char reason[64];

	if (status == 429)
		return true;
	if (status != 403)
		return false;
	error_reason(body, reason, sizeof(reason));
	return strcmp(reason, "rateLimitExceeded") == 0 ||
	       strcmp(reason, "userRateLimitExceeded") == 0 ||
	       strcmp(reason, "RESOURCE_EXHAUSTED") == 0;
}

struct call_ctx {
	bool retry_5xx;
};

static bool gmail_retryable(void *ctx, const struct mf_http_resp *resp)
{
	struct call_ctx *cc = ctx;

	if (rate_limited(resp->status, resp->body.data))
		return true;
	return cc->retry_5xx && resp->status >= 500 && resp->status < 600;
}

static enum mf_status status_of(const struct mf_http_resp *resp,
				const char *what, char **error_r)
{
	enum mf_status st = mf_http_status_of(resp->status);
	char reason[64];

	if (st == MF_OK)
		return MF_OK;
	error_reason(resp->body.data, reason, sizeof(reason));
	if (resp->status == 403 && rate_limited(403, resp->body.data))
		st = MF_TEMP;
	else if (resp->status == 403 &&
		 (strcmp(reason, "insufficientPermissions") == 0 ||
		  strcmp(reason, "PERMISSION_DENIED") == 0)) {
		/* This call needs a scope the token lacks (delete needs
		   https://mail.google.com/): the call fails, the account
		   does not. */
		*error_r = xasprintf("%s: HTTP 403 %s (the token lacks the "
				     "scope, e.g. https://mail.google.com/ "
				     "for deleting from Trash)",
				     what, reason);
		return MF_PROTO;
	}
	*error_r = xasprintf("%s: HTTP %ld%s%s", what, resp->status,
			     reason[0] ? " " : "", reason);
	return st;
}

/*
 * One API call. path is below the API root ("/gmail/v1/...") or, with
 * upload, the upload root. units: the quota charge.
 */
static enum mf_status call(struct gmail *g, const char *method,
			   const char *path, const char *const *headers,
			   const void *body, size_t body_len, unsigned int units,
			   bool retry_5xx, struct mf_http_resp *resp,
			   char **error_r)
{
	struct call_ctx cc = { .retry_5xx = retry_5xx };
	struct mf_http_policy pol = {
		.tokens = g->tokens,
		.retry_unsafe = retry_5xx,
		.retryable = gmail_retryable,
		.ctx = &cc,
	};
	struct mf_http_req req = {
		.method = method,
		.headers = headers,
		.body = body,
		.body_len = body_len,
		.body_fd = -1,
		.out_fd = -1,
		.max_size = BODY_JSON_MAX,
	};
	enum mf_status st;
	char *url = xasprintf("%s%s", g->api, path);

	st = quota_take(g, units, error_r);
	if (st != MF_OK) {
		free(url);
		return st;
	}
	req.url = url;
	st = mf_http_call(g->http, &pol, &req, resp, error_r);
	free(url);
	return st;
}

/* A call whose 2xx answer is JSON (or empty): *json_r (may be NULL). */
static enum mf_status call_json(struct gmail *g, const char *method,
				const char *path, json_t *body,
				unsigned int units, bool retry_5xx,
				json_t **json_r, char **error_r)
{
	static const char *const jh[] = {
		"Content-Type: application/json; charset=UTF-8", NULL
	};
	struct mf_http_resp resp;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	enum mf_status st;

	if (json_r)
		*json_r = NULL;
	mf_http_resp_init(&resp);
	st = call(g, method, path, text ? jh : NULL, text,
		  text ? strlen(text) : 0, units, retry_5xx, &resp, error_r);
	free(text);
	if (st == MF_OK)
		st = status_of(&resp, path, error_r);
	if (st == MF_OK && json_r && resp.body.len > 0) {
		json_error_t jerr;

		*json_r = json_loadb(resp.body.data, resp.body.len, 0, &jerr);
		if (!*json_r) {
			*error_r = xasprintf("%s: bad JSON: %s", path,
					     jerr.text);
			st = MF_PROTO;
		}
	}
	mf_http_resp_free(&resp);
	return st;
}

/* ---- the batch endpoint ---- */

struct batch_item {
	const char *method;
	char *path;		/* "/gmail/v1/users/..." (owned) */
	char *body;		/* JSON or NULL (owned) */
	unsigned int units;
	long status;		/* result */
	char *resp;		/* result body (owned), NUL-terminated */
};

static void batch_items_free(struct batch_item *it, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		free(it[i].path);
		free(it[i].body);
		free(it[i].resp);
	}
	free(it);
}

static char *batch_build(struct batch_item *it, const unsigned int *idx,
			 unsigned int n, const char *boundary, size_t *len_r)
{
	struct mf_buf b;

	mf_buf_init(&b);
	for (unsigned int k = 0; k < n; k++) {
		const struct batch_item *x = &it[idx[k]];

		mf_buf_printf(&b, "--%s\r\nContent-Type: application/http\r\n"
			      "Content-ID: <item%u>\r\n\r\n%s %s\r\n",
			      boundary, idx[k], x->method, x->path);
		if (x->body)
			mf_buf_printf(&b, "Content-Type: application/json\r\n"
				      "Content-Length: %zu\r\n\r\n%s\r\n",
				      strlen(x->body), x->body);
		else
			mf_buf_appends(&b, "\r\n");
	}
	mf_buf_printf(&b, "--%s--\r\n", boundary);
	*len_r = b.len;
	return mf_buf_steal(&b);
}

/* The boundary parameter of a multipart Content-Type, or NULL. */
static char *boundary_of(const char *ctype)
{
	const char *p;
	size_t n;

	if (!ctype || strncasecmp(ctype, "multipart/", 10) != 0)
		return NULL;
	for (p = ctype; (p = strchr(p, ';'));) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, "boundary=", 9) != 0)
			continue;
		p += 9;
		if (*p == '"') {
			p++;
			n = strcspn(p, "\"");
		} else {
			n = strcspn(p, "; \t");
		}
		if (n == 0 || n > 200)
			return NULL;
		return xstrndup(p, n);
	}
	return NULL;
}

static const char *find_mem(const char *hay, size_t len, const char *needle)
{
	size_t n = strlen(needle);

	return hay && n <= len ? memmem(hay, len, needle, n) : NULL;
}

/* The end of a header block (after its blank line), or NULL. */
static const char *headers_end(const char *p, size_t len)
{
	const char *a = find_mem(p, len, "\r\n\r\n");
	const char *b = find_mem(p, len, "\n\n");

	if (a && (!b || a <= b))
		return a + 4;
	return b ? b + 2 : NULL;
}

/*
 * Parse one response part: part headers (Content-ID: <response-itemN>),
 * blank line, an HTTP status line, headers, blank line, the body. Items
 * not named, out of range, or answered twice are ignored: a missing
 * answer counts as a failure of that item.
 */
static void batch_part(struct batch_item *it, unsigned int count,
		       const char *p, size_t len)
{
	const char *end = p + len, *h, *cid, *body;
	unsigned long idx;
	char *e;
	long status;

	h = headers_end(p, len);
	if (!h)
		return;
	cid = NULL;
	for (const char *l = p; l < h;) {
		const char *nl = memchr(l, '\n', (size_t)(h - l));

		if (!nl)
			break;
		if ((size_t)(nl - l) > 11 && strncasecmp(l, "Content-ID:", 11) == 0)
			cid = l + 11;
		l = nl + 1;
	}
	if (!cid)
		return;
	while (cid < h && (*cid == ' ' || *cid == '<'))
		cid++;
	if ((size_t)(h - cid) < 13 || strncmp(cid, "response-item", 13) != 0)
		return;
	cid += 13;
	if (cid >= h || *cid < '0' || *cid > '9')
		return;
	errno = 0;
	idx = strtoul(cid, &e, 10);
	if (errno || e >= h || *e != '>' || idx >= count || it[idx].status)
		return;
	if ((size_t)(end - h) < 12 || strncmp(h, "HTTP/", 5) != 0)
		return;
	{
		const char *sp = memchr(h, ' ', (size_t)(end - h));

		if (!sp || end - sp < 4)
			return;
		status = strtol(sp + 1, NULL, 10);
		if (status < 100 || status > 599)
			return;
	}
	body = headers_end(h, (size_t)(end - h));
	if (!body)
		body = end;
	while (end > body && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	it[idx].status = status;
	free(it[idx].resp);
	it[idx].resp = xstrndup(body, (size_t)(end - body));
}

static void batch_parse(struct batch_item *it, unsigned int count,
			const char *data, size_t len, const char *boundary)
{
	char *delim = xasprintf("--%s", boundary);
	size_t dl = strlen(delim);
	const char *p = find_mem(data, len, delim), *end = data + len;

	while (p) {
		const char *start = p + dl, *next;

		if (end - start >= 2 && start[0] == '-' && start[1] == '-')
			break;
		while (start < end && (*start == '\r' || *start == '\n' ||
				       *start == ' '))
			start++;
		next = find_mem(start, (size_t)(end - start), delim);
		batch_part(it, count, start,
			   (size_t)((next ? next : end) - start));
		p = next;
	}
	free(delim);
}

int gmail_batch_parse(const char *ctype, const char *data, size_t len,
		      unsigned int count, long *status, char **bodies)
{
	struct batch_item *it = xcalloc(count ? count : 1, sizeof(*it));
	char *b = boundary_of(ctype);

	if (b)
		batch_parse(it, count, data, len, b);
	for (unsigned int i = 0; i < count; i++) {
		status[i] = it[i].status;
		bodies[i] = it[i].resp;
		it[i].resp = NULL;
	}
	batch_items_free(it, count);
	free(b);
	return b ? 0 : -1;
}

/*
 * Run items through /batch/gmail/v1, at most BATCH_MAX a request. Parts
 * answered with a rate limit or a 5xx (or not at all) are sent again in
 * a later batch after a backoff; every part ends with a status.
 */
static enum mf_status batch_run(struct gmail *g, struct batch_item *it,
				unsigned int count, char **error_r)
{
	unsigned int *todo = xmalloc((count ? count : 1) * sizeof(*todo));
	unsigned int ntodo = 0, delay = 500;
	enum mf_status st = MF_OK;

	for (unsigned int i = 0; i < count; i++)
		todo[ntodo++] = i;
	for (int round = 0; ntodo > 0 && st == MF_OK; round++) {
		unsigned int left = 0;

		for (unsigned int off = 0, n; off < ntodo && st == MF_OK;
		     off += n) {
			unsigned int units = 0;
			char boundary[48], hdr[96], *body, *rb;
			const char *hdrs[2] = { hdr, NULL };
			struct mf_http_resp resp;
			size_t len;

			snprintf(boundary, sizeof(boundary), "mailfs_%08lx%04x",
				 (unsigned long)mf_now_ns(), round * 1000 + off);
			snprintf(hdr, sizeof(hdr), "Content-Type: "
				 "multipart/mixed; boundary=%s", boundary);
			/* At most BATCH_MAX calls, and no more units than
			   the quota bucket holds. */
			for (n = 0; n < BATCH_MAX && off + n < ntodo; n++) {
				unsigned int u = it[todo[off + n]].units;

				if (n > 0 && units + u > g->quota->cap)
					break;
				units += u;
				it[todo[off + n]].status = 0;
			}
			body = batch_build(it, todo + off, n, boundary, &len);
			mf_http_resp_init(&resp);
			st = call(g, "POST", "/batch/gmail/v1", hdrs, body, len,
				  units, true, &resp, error_r);
			free(body);
			if (st == MF_OK)
				st = status_of(&resp, "batch", error_r);
			if (st == MF_OK) {
				rb = boundary_of(resp.content_type);
				if (!rb) {
					*error_r = xstrdup("batch: the answer "
							   "is not multipart");
					st = MF_PROTO;
				} else {
					batch_parse(it, count, resp.body.data,
						    resp.body.len, rb);
					free(rb);
				}
			}
			mf_http_resp_free(&resp);
		}
		if (st != MF_OK)
			break;
		for (unsigned int k = 0; k < ntodo; k++) {
			struct batch_item *x = &it[todo[k]];

			if (x->status == 0 || rate_limited(x->status, x->resp) ||
			    x->status >= 500)
				todo[left++] = todo[k];
		}
		ntodo = left;
		if (ntodo == 0)
			break;
		if (round + 1 >= BATCH_ROUNDS) {
			/* Give up on the rest: the caller sees them failed. */
			for (unsigned int k = 0; k < ntodo; k++) {
				if (it[todo[k]].status == 0)
					it[todo[k]].status = 503;
			}
			break;
		}
		mf_debug(MF_DBG_HTTP, "gmail: %u batch parts throttled or "
			 "failed; again in %u ms", ntodo, delay);
		if (!mf_http_sleep(g->http, delay)) {
			*error_r = xstrdup("interrupted");
			st = MF_CANCELED;
		}
		delay = MF_MIN(delay * 2 + (unsigned int)(random() % 500),
			       16000u);
	}
	free(todo);
	return st;
}

/* ---- metadata ---- */

static const char *header_value(json_t *headers, const char *name)
{
	size_t i;
	json_t *h;

	json_array_foreach(headers, i, h) {
		const char *n = json_string_value(json_object_get(h, "name"));

		if (n && strcasecmp(n, name) == 0)
			return json_string_value(json_object_get(h, "value"));
	}
	return NULL;
}

static bool meta_from_json(struct gmail *g, const char *text)
{
	json_t *root = json_loads(text ? text : "", 0, NULL), *labels, *l;
	const char *id, *date;
	struct meta *m;
	struct mf_buf b;
	size_t i;

	if (!json_is_object(root)) {
		json_decref(root);
		return false;
	}
	id = json_string_value(json_object_get(root, "id"));
	if (!id || !*id || strlen(id) > 64) {
		json_decref(root);
		return false;
	}
	m = memo_put(g, id);
	mf_buf_init(&b);
	mf_buf_appendc(&b, ',');
	labels = json_object_get(root, "labelIds");
	json_array_foreach(labels, i, l) {
		const char *s = json_string_value(l);

		if (s && !strchr(s, ',')) {
			mf_buf_appends(&b, s);
			mf_buf_appendc(&b, ',');
		}
	}
	free(m->labels);
	m->labels = mf_buf_steal(&b);
	date = json_string_value(json_object_get(root, "internalDate"));
	m->date = date ? strtoll(date, NULL, 10) / 1000 : 0;
	m->size = (uint64_t)json_integer_value(json_object_get(root,
								"sizeEstimate"));
	free(m->msgid);
	{
		const char *v = header_value(
			json_object_get(json_object_get(root, "payload"),
					"headers"),
			"Message-ID");

		m->msgid = v && strlen(v) <= MF_MSGID_MAX ? xstrdup(v) : NULL;
	}
	json_decref(root);
	return true;
}

/*
 * Read metadata of ids into the memo. Ids the server does not have are
 * reported in gone[] (true). Other failures fail the call.
 */
static enum mf_status fetch_meta(struct gmail *g, char **ids, unsigned int n,
				 bool *gone, char **error_r)
{
	struct batch_item *it = xcalloc(n ? n : 1, sizeof(*it));
	enum mf_status st;

	for (unsigned int i = 0; i < n; i++) {
		char *e = mf_http_escape(ids[i]);

		it[i].method = "GET";
		it[i].path = xasprintf("%s/messages/%s?format=metadata&"
				       "metadataHeaders=Message-ID",
				       g->user_path, e);
		it[i].units = U_GET;
		free(e);
	}
	st = batch_run(g, it, n, error_r);
	for (unsigned int i = 0; st == MF_OK && i < n; i++) {
		gone[i] = false;
		if (it[i].status == 404) {
			gone[i] = true;
		} else if (it[i].status != 200 ||
			   !meta_from_json(g, it[i].resp)) {
			*error_r = xasprintf("metadata of %s: HTTP %ld",
					     ids[i], it[i].status);
			st = it[i].status >= 500 || it[i].status == 429 ||
					     it[i].status == 403
				     ? MF_TEMP
				     : MF_PROTO;
		}
	}
	batch_items_free(it, n);
	return st;
}

static enum mf_status profile_hid(struct gmail *g, char **hid_r,
				  char **error_r)
{
	json_t *j = NULL;
	char *path = xasprintf("%s/profile", g->user_path);
	enum mf_status st = call_json(g, "GET", path, NULL, U_PROFILE, true,
				      &j, error_r);
	const char *h;

	free(path);
	*hid_r = NULL;
	if (st != MF_OK)
		return st;
	h = json_string_value(json_object_get(j, "historyId"));
	if (!h || !*h || strspn(h, "0123456789") != strlen(h)) {
		*error_r = xstrdup("getProfile: no historyId");
		st = MF_PROTO;
	} else {
		*hid_r = xstrdup(h);
	}
	json_decref(j);
	return st;
}

static int emit(const struct mf_changes_sink *sink, const struct meta *m)
{
	struct mf_change ch = { .kind = MF_CHANGE_UPSERT };

	ch.msg.id = m->id;
	ch.msg.flags = flags_of(m->labels);
	ch.msg.has_meta = true;
	ch.msg.size = m->size;
	ch.msg.size_exact = false;
	ch.msg.internaldate = m->date;
	ch.msg.message_id = m->msgid;
	return sink->change(sink->ctx, &ch);
}

static int emit_gone(const struct mf_changes_sink *sink, const char *id)
{
	struct mf_change ch = { .kind = MF_CHANGE_GONE };

	ch.msg.id = id;
	return sink->change(sink->ctx, &ch);
}

/* ---- backend ops ---- */

static int gmail_create(const struct mf_account *acct, struct mf_backend **be_r,
			char **error_r)
{
	struct mf_http_opts ho = {
		.ca_file = acct->ca_file,
		.timeout = acct->timeout,
		.allow_plaintext = acct->allow_plaintext,
	};
	const char *api = mf_account_get(acct, "api_url");
	const char *iu = mf_account_get(acct, "inbox_unlink");
	const char *q = mf_account_get(acct, "quota_units");
	const char *shown = mf_account_get(acct, "labels");
	unsigned long per_minute = 15000;
	struct gmail *g;
	char *user;
	size_t n;

	if (!acct->user) {
		*error_r = xasprintf("[account %s] needs \"user\" (the Gmail "
				     "address)", acct->name);
		return -EINVAL;
	}
	if (iu && strcmp(iu, "archive") != 0 && strcmp(iu, "trash") != 0) {
		*error_r = xasprintf("[account %s] inbox_unlink must be "
				     "archive or trash", acct->name);
		return -EINVAL;
	}
	if (q) {
		char *e;

		per_minute = strtoul(q, &e, 10);
		if (*e || per_minute < 10 || per_minute > 100000000) {
			*error_r = xasprintf("[account %s] quota_units: a "
					     "number of units per minute",
					     acct->name);
			return -EINVAL;
		}
	}
	g = xcalloc(1, sizeof(*g));
	g->base.ops = &mf_gmail_backend_ops;
	g->acct = acct;
	g->http = mf_http_new(&ho, error_r);
	if (!g->http) {
		free(g);
		return -EIO;
	}
	g->tokens = mf_token_source_new(acct);
	g->quota = quota_for(acct->name, (unsigned int)per_minute);
	g->api = xstrdup(api && *api ? api : "https://gmail.googleapis.com");
	n = strlen(g->api);
	while (n > 0 && g->api[n - 1] == '/')
		g->api[--n] = '\0';
	user = mf_http_escape(acct->user);
	g->user_path = xasprintf("/gmail/v1/users/%s", user);
	free(user);
	g->inbox_trash = iu && strcmp(iu, "trash") == 0;
	if (shown) {
		char *copy = xstrdup(shown), *save = NULL, *t;
		unsigned int k = 0;

		g->shown = xcalloc(strlen(shown) / 2 + 2, sizeof(char *));
		for (t = strtok_r(copy, " ,\t", &save); t;
		     t = strtok_r(NULL, " ,\t", &save))
			g->shown[k++] = xstrdup(t);
		free(copy);
	}
	*be_r = &g->base;
	return 0;
}

static void labels_free(struct gmail *g)
{
	for (unsigned int i = 0; i < g->nlabels; i++) {
		free(g->labels[i].id);
		free(g->labels[i].name);
	}
	free(g->labels);
	g->labels = NULL;
	g->nlabels = 0;
}

static void gmail_destroy(struct mf_backend *be)
{
	struct gmail *g = G(be);

	if (!g)
		return;
	memo_clear(g);
	labels_free(g);
	for (char **p = g->shown; p && *p; p++)
		free(*p);
	free(g->shown);
	mf_http_free(g->http);
	mf_token_source_free(g->tokens);
	free(g->api);
	free(g->user_path);
	free(g);
}

static enum mf_status load_labels(struct gmail *g, char **error_r)
{
	char *path = xasprintf("%s/labels", g->user_path);
	json_t *j = NULL, *arr, *l;
	enum mf_status st;
	size_t i;

	st = call_json(g, "GET", path, NULL, U_LABELS_LIST, true, &j, error_r);
	free(path);
	if (st != MF_OK)
		return st;
	labels_free(g);
	arr = json_object_get(j, "labels");
	g->labels = xcalloc(json_array_size(arr) + 1, sizeof(*g->labels));
	json_array_foreach(arr, i, l) {
		const char *id = json_string_value(json_object_get(l, "id"));
		const char *name = json_string_value(json_object_get(l, "name"));
		const char *type = json_string_value(json_object_get(l, "type"));

		if (!id || !name || !*id || !*name || strchr(id, ','))
			continue;
		g->labels[g->nlabels].id = xstrdup(id);
		g->labels[g->nlabels].name = xstrdup(name);
		g->labels[g->nlabels].system = type &&
					       strcmp(type, "system") == 0;
		g->nlabels++;
	}
	json_decref(j);
	return MF_OK;
}

static enum mf_status gmail_connect(struct mf_backend *be, char **error_r)
{
	return load_labels(G(be), error_r);
}

static bool shown_system(struct gmail *g, const char *id)
{
	for (char **p = g->shown; p && *p; p++) {
		if (strcmp(*p, id) == 0)
			return true;
	}
	return false;
}

static enum mf_status gmail_list_folders(struct mf_backend *be,
					 mf_folder_cb *cb, void *ctx,
					 char **error_r)
{
	static const struct {
		const char *id, *path;
		unsigned int attrs;
	} sys[] = {
		{ "INBOX", "INBOX", MF_FOLDER_INBOX },
		{ "SENT", "Sent", MF_FOLDER_SENT },
		{ "DRAFT", "Drafts", MF_FOLDER_DRAFTS },
		{ "TRASH", "Trash", MF_FOLDER_TRASH },
		{ "SPAM", "Spam", MF_FOLDER_JUNK },
	};
	struct gmail *g = G(be);
	struct mf_remote_folder f;
	enum mf_status st;
	char *hid = NULL;

	/* A new pass over the folders: metadata is read afresh. */
	memo_clear(g);
	st = load_labels(g, error_r);
	if (st == MF_OK)
		st = profile_hid(g, &hid, error_r);
	if (st != MF_OK)
		return st;
	for (unsigned int i = 0; i < g->nlabels; i++) {
		const struct label *l = &g->labels[i];
		char *path = NULL;

		memset(&f, 0, sizeof(f));
		f.remote = l->id;
		f.status = hid;
		if (l->system) {
			for (size_t k = 0; k < MF_ARRAY_SIZE(sys); k++) {
				if (strcmp(sys[k].id, l->id) == 0) {
					f.path = sys[k].path;
					f.attrs = sys[k].attrs;
				}
			}
			if (!f.path && shown_system(g, l->id))
				f.path = l->id;
			if (!f.path)
				continue;
		} else {
			path = mf_folder_path_from_remote(l->name, '/');
			f.path = path;
		}
		if (cb(ctx, &f) != 0) {
			free(path);
			free(hid);
			return MF_CANCELED;
		}
		free(path);
	}
	memset(&f, 0, sizeof(f));
	f.remote = ALL_MAIL;
	f.path = "All Mail";
	f.attrs = MF_FOLDER_ALL;
	f.status = hid;
	cb(ctx, &f);
	free(hid);
	return MF_OK;
}

/* Every id of a folder (messages.list pages). */
static enum mf_status list_ids(struct gmail *g, const char *folder,
			       char ***ids_r, unsigned int *n_r, char **error_r)
{
	char **ids = NULL, *token = NULL;
	unsigned int n = 0, cap = 0;
	enum mf_status st = MF_OK;

	do {
		struct mf_buf q;
		json_t *j = NULL, *arr, *m;
		const char *next;
		size_t i;

		mf_buf_init(&q);
		mf_buf_printf(&q, "%s/messages?maxResults=%d", g->user_path,
			      LIST_PAGE);
		if (strcmp(folder, ALL_MAIL) != 0) {
			char *e = mf_http_escape(folder);

			mf_buf_printf(&q, "&labelIds=%s", e);
			free(e);
		}
		if (strcmp(folder, "TRASH") == 0 || strcmp(folder, "SPAM") == 0)
			mf_buf_appends(&q, "&includeSpamTrash=true");
		if (token) {
			char *e = mf_http_escape(token);

			mf_buf_printf(&q, "&pageToken=%s", e);
			free(e);
			free(token);
			token = NULL;
		}
		st = call_json(g, "GET", q.data, NULL, U_LIST, true, &j,
			       error_r);
		mf_buf_free(&q);
		if (st != MF_OK)
			break;
		arr = json_object_get(j, "messages");
		json_array_foreach(arr, i, m) {
			const char *id = json_string_value(
				json_object_get(m, "id"));

			if (!id || !*id || strlen(id) > 64)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 512;
				ids = xrealloc(ids, cap * sizeof(*ids));
			}
			ids[n++] = xstrdup(id);
		}
		next = json_string_value(json_object_get(j, "nextPageToken"));
		if (next && *next)
			token = xstrdup(next);
		json_decref(j);
	} while (token && !mf_http_interrupted(g->http));
	free(token);
	if (st != MF_OK) {
		for (unsigned int i = 0; i < n; i++)
			free(ids[i]);
		free(ids);
		return st;
	}
	*ids_r = ids;
	*n_r = n;
	return MF_OK;
}

static void ids_free(char **ids, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

/* Read the metadata of the ids the memo lacks (or all when refresh). */
static enum mf_status fill_memo(struct gmail *g, char **ids, unsigned int n,
				bool refresh, bool *gone, char **error_r)
{
	char **need = xmalloc((n ? n : 1) * sizeof(*need));
	unsigned int *where = xmalloc((n ? n : 1) * sizeof(*where));
	bool *ngone = xcalloc(n ? n : 1, sizeof(*ngone));
	unsigned int k = 0;
	enum mf_status st;

	for (unsigned int i = 0; i < n; i++) {
		gone[i] = false;
		if (refresh || !memo_find(g, ids[i])) {
			where[k] = i;
			need[k++] = ids[i];
		}
	}
	st = fetch_meta(g, need, k, ngone, error_r);
	for (unsigned int i = 0; st == MF_OK && i < k; i++)
		gone[where[i]] = ngone[i];
	free(need);
	free(where);
	free(ngone);
	return st;
}

static enum mf_status snapshot(struct gmail *g, const char *folder,
			       const struct mf_changes_sink *sink,
			       char **cursor_r, char **error_r)
{
	struct mf_changes_info info = { .snapshot = true };
	char **ids = NULL;
	unsigned int n = 0;
	bool *gone;
	enum mf_status st;

	if (!g->memo_ms || mf_mono_ms() - g->memo_ms > MEMO_TTL_MS) {
		memo_clear(g);
		st = profile_hid(g, &g->memo_hid, error_r);
		if (st != MF_OK)
			return st;
		g->memo_ms = mf_mono_ms();
	}
	st = list_ids(g, folder, &ids, &n, error_r);
	if (st != MF_OK)
		return st;
	gone = xcalloc(n ? n : 1, sizeof(*gone));
	st = fill_memo(g, ids, n, false, gone, error_r);
	if (st == MF_OK && sink->begin(sink->ctx, &info) != 0)
		st = MF_CANCELED;
	for (unsigned int i = 0; st == MF_OK && i < n; i++) {
		const struct meta *m = memo_find(g, ids[i]);

		/* Deleted between the list and the read: not there. */
		if (gone[i] || !m || !in_folder(folder, m->labels))
			continue;
		if (emit(sink, m) != 0)
			st = MF_CANCELED;
	}
	if (st == MF_OK)
		*cursor_r = xstrdup(g->memo_hid);
	free(gone);
	ids_free(ids, n);
	return st;
}

/* What a delta learnt about one message. */
struct touched {
	struct touched *next;	/* hash chain */
	char *id;
	char *labels;		/* ",L1,L2,": its labels after the last
				   record that named them, or NULL */
	bool need_meta;		/* new to the folder, or labels unknown */
	bool deleted;		/* messagesDeleted */
};

struct touched_set {
	struct touched *b[MEMO_BUCKETS];
	struct touched **all;
	unsigned int n, cap;
};

static struct touched *touch(struct touched_set *ts, const char *id)
{
	unsigned int h;
	struct touched *t;

	if (!id || !*id || strlen(id) > 64)
		return NULL;
	h = memo_hash(id);
	for (t = ts->b[h]; t; t = t->next) {
		if (strcmp(t->id, id) == 0)
			return t;
	}
	t = xcalloc(1, sizeof(*t));
	t->id = xstrdup(id);
	t->next = ts->b[h];
	ts->b[h] = t;
	if (ts->n == ts->cap) {
		ts->cap = ts->cap ? ts->cap * 2 : 64;
		ts->all = xrealloc(ts->all, ts->cap * sizeof(*ts->all));
	}
	ts->all[ts->n++] = t;
	return t;
}

static void touched_free(struct touched_set *ts)
{
	for (unsigned int i = 0; i < ts->n; i++) {
		free(ts->all[i]->id);
		free(ts->all[i]->labels);
		free(ts->all[i]);
	}
	free(ts->all);
}

static char *labels_string(json_t *arr)
{
	struct mf_buf b;
	json_t *l;
	size_t i;

	if (!json_is_array(arr))
		return NULL;
	mf_buf_init(&b);
	mf_buf_appendc(&b, ',');
	json_array_foreach(arr, i, l) {
		const char *s = json_string_value(l);

		if (s && !strchr(s, ',')) {
			mf_buf_appends(&b, s);
			mf_buf_appendc(&b, ',');
		}
	}
	return mf_buf_steal(&b);
}

/*
 * Does a change of these labels move a message in or out of folder?
 * Then the message needs its metadata (it may be new to the folder).
 */
static bool membership_label(const char *folder, json_t *changed)
{
	json_t *l;
	size_t i;

	json_array_foreach(changed, i, l) {
		const char *s = json_string_value(l);

		if (!s || strcmp(s, "TRASH") == 0 || strcmp(s, "SPAM") == 0 ||
		    strcmp(s, folder) == 0)
			return true;
	}
	return false;
}

static void collect_history(const char *folder, json_t *rec,
			    struct touched_set *ts)
{
	static const char *const kinds[] = {
		"messagesAdded", "messagesDeleted", "labelsAdded",
		"labelsRemoved",
	};
	json_t *arr, *x;
	size_t i;

	for (size_t k = 0; k < MF_ARRAY_SIZE(kinds); k++) {
		arr = json_object_get(rec, kinds[k]);
		json_array_foreach(arr, i, x) {
			json_t *msg = json_object_get(x, "message");
			struct touched *t = touch(ts, json_string_value(
							      json_object_get(msg, "id")));
			char *labels;

			if (!t)
				continue;
			if (k == 1) {
				t->deleted = true;
				continue;
			}
			labels = labels_string(json_object_get(msg,
							       "labelIds"));
			if (labels) {
				free(t->labels);
				t->labels = labels;
			} else {
				t->need_meta = true;
			}
			if (k == 0 || membership_label(folder, json_object_get(
								      x, "labelIds")))
				t->need_meta = true;
		}
	}
	/* Ids named without saying what happened: read them. */
	arr = json_object_get(rec, "messages");
	json_array_foreach(arr, i, x) {
		struct touched *t = touch(ts, json_string_value(
						      json_object_get(x, "id")));

		if (t && !t->labels && !t->deleted)
			t->need_meta = true;
	}
}

/*
 * A delta: history.list pages from cursor (filtered by the folder's
 * label), then for each message named: gone when deleted or no longer in
 * the folder; when it may be new to the folder, its metadata is read (in
 * batches) for a full entry; otherwise (flags changed) the labels the
 * record carried give its flags without another request.
 */
static enum mf_status delta(struct gmail *g, const char *folder,
			    const char *cursor,
			    const struct mf_changes_sink *sink,
			    char **cursor_r, char **error_r)
{
	struct mf_changes_info info = { .snapshot = false,
					.gone_is_relabel = true };
	struct touched_set *ts = xcalloc(1, sizeof(*ts));
	char **need = NULL, *token = NULL, *hid = NULL;
	unsigned int nneed = 0;
	enum mf_status st = MF_OK;
	bool *gone = NULL;

	do {
		struct mf_buf q;
		json_t *j = NULL, *recs, *r;
		const char *next, *h;
		size_t i;

		mf_buf_init(&q);
		mf_buf_printf(&q, "%s/history?startHistoryId=%s&maxResults=500",
			      g->user_path, cursor);
		if (strcmp(folder, ALL_MAIL) != 0) {
			char *e = mf_http_escape(folder);

			mf_buf_printf(&q, "&labelId=%s", e);
			free(e);
		}
		if (token) {
			char *e = mf_http_escape(token);

			mf_buf_printf(&q, "&pageToken=%s", e);
			free(e);
			free(token);
			token = NULL;
		}
		st = call_json(g, "GET", q.data, NULL, U_HISTORY, true, &j,
			       error_r);
		mf_buf_free(&q);
		if (st != MF_OK)
			break;
		recs = json_object_get(j, "history");
		json_array_foreach(recs, i, r)
			collect_history(folder, r, ts);
		h = json_string_value(json_object_get(j, "historyId"));
		if (h && *h && strspn(h, "0123456789") == strlen(h)) {
			free(hid);
			hid = xstrdup(h);
		}
		next = json_string_value(json_object_get(j, "nextPageToken"));
		if (next && *next)
			token = xstrdup(next);
		json_decref(j);
	} while (token && !mf_http_interrupted(g->http));
	free(token);
	if (st == MF_GONE) {
		/* The historyId expired: list everything again. */
		mf_info("gmail: history of %s expired; listing it again",
			folder);
		free(*error_r);
		*error_r = NULL;
		touched_free(ts);
		free(ts);
		free(hid);
		memo_clear(g);
		return snapshot(g, folder, sink, cursor_r, error_r);
	}
	if (st == MF_OK && !hid) {
		*error_r = xstrdup("history.list: no historyId");
		st = MF_PROTO;
	}
	if (st == MF_OK) {
		need = xmalloc((ts->n ? ts->n : 1) * sizeof(*need));
		for (unsigned int i = 0; i < ts->n; i++) {
			struct touched *t = ts->all[i];

			if (!t->deleted && (t->need_meta || !t->labels))
				need[nneed++] = t->id;
		}
		gone = xcalloc(nneed ? nneed : 1, sizeof(*gone));
		st = fill_memo(g, need, nneed, true, gone, error_r);
		for (unsigned int i = 0; st == MF_OK && i < nneed; i++) {
			if (gone[i])
				touch(ts, need[i])->deleted = true;
		}
	}
	if (st == MF_OK && sink->begin(sink->ctx, &info) != 0)
		st = MF_CANCELED;
	for (unsigned int i = 0; st == MF_OK && i < ts->n; i++) {
		const struct touched *t = ts->all[i];
		const struct meta *m = NULL;
		int r;

		if (!t->deleted && (t->need_meta || !t->labels))
			m = memo_find(g, t->id);
		if (t->deleted || (m && !in_folder(folder, m->labels)) ||
		    (!m && !in_folder(folder, t->labels))) {
			r = emit_gone(sink, t->id);
		} else if (m) {
			r = emit(sink, m);
		} else {
			struct mf_change ch = { .kind = MF_CHANGE_UPSERT };

			ch.msg.id = t->id;
			ch.msg.flags = flags_of(t->labels);
			ch.msg.has_meta = false;
			r = sink->change(sink->ctx, &ch);
		}
		if (r != 0)
			st = MF_CANCELED;
	}
	if (st == MF_OK)
		*cursor_r = hid;
	else
		free(hid);
	free(gone);
	free(need);
	touched_free(ts);
	free(ts);
	return st;
}

static enum mf_status gmail_fetch_changes(struct mf_backend *be,
					  const char *folder,
					  const struct mf_changes_hint *hint,
					  const struct mf_changes_sink *sink,
					  char **cursor_r, char **error_r)
{
	struct gmail *g = G(be);

	*cursor_r = NULL;
	if (hint->cursor && *hint->cursor &&
	    strspn(hint->cursor, "0123456789") == strlen(hint->cursor))
		return delta(g, folder, hint->cursor, sink, cursor_r, error_r);
	return snapshot(g, folder, sink, cursor_r, error_r);
}

static signed char b64_map[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_init(void)
{
	memset(b64_map, -1, sizeof(b64_map));
	for (int i = 0; i < 26; i++) {
		b64_map['A' + i] = (signed char)i;
		b64_map['a' + i] = (signed char)(26 + i);
	}
	for (int i = 0; i < 10; i++)
		b64_map['0' + i] = (signed char)(52 + i);
	b64_map['-'] = 62;
	b64_map['_'] = 63;
	b64_map['+'] = 62;	/* tolerate the standard alphabet too */
	b64_map['/'] = 63;
}

/* base64url (padding optional) to bytes, written to fd. */
int gmail_b64url_write(const char *s, size_t len, int fd, uint64_t max,
			uint64_t *size_r)
{
	const signed char *map = b64_map;
	unsigned char out[4096];
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	uint64_t total = 0;

	pthread_once(&b64_once, b64_init);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '=' || c == '\r' || c == '\n')
			continue;
		if (map[c] < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)map[c];
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			if (o == sizeof(out)) {
				if (max && total + o > max)
					return -EFBIG;
				if (mf_write_all(fd, out, o) < 0)
					return -EIO;
				total += o;
				o = 0;
			}
		}
	}
	if (max && total + o > max)
		return -EFBIG;
	if (o && mf_write_all(fd, out, o) < 0)
		return -EIO;
	*size_r = total + o;
	return 0;
}

static enum mf_status gmail_fetch_body(struct mf_backend *be,
				       const char *folder, const char *id,
				       int out_fd, uint64_t max_size,
				       uint64_t *size_r, char **error_r)
{
	struct gmail *g = G(be);
	char *e = mf_http_escape(id);
	char *path = xasprintf("%s/messages/%s?format=raw", g->user_path, e);
	json_t *j = NULL;
	const char *raw;
	enum mf_status st;
	int r;

	(void)folder;
	free(e);
	st = call_json(g, "GET", path, NULL, U_GET, true, &j, error_r);
	free(path);
	if (st != MF_OK)
		return st;
	raw = json_string_value(json_object_get(j, "raw"));
	if (!raw) {
		*error_r = xasprintf("message %s: no raw body", id);
		json_decref(j);
		return MF_PROTO;
	}
	r = gmail_b64url_write(raw, json_string_length(json_object_get(j, "raw")),
			 out_fd, max_size, size_r);
	json_decref(j);
	if (r < 0) {
		*error_r = xasprintf("message %s: %s", id,
				     r == -EINVAL ? "bad base64url"
				     : r == -EFBIG ? "larger than allowed"
						   : "cannot write the body");
		return r == -EIO ? MF_TEMP : MF_PROTO;
	}
	return MF_OK;
}

static json_t *label_array(const char *const *l, unsigned int n)
{
	json_t *a = json_array();

	for (unsigned int i = 0; i < n; i++)
		json_array_append_new(a, json_string(l[i]));
	return a;
}

/* Flags to label changes. D cannot be set by clients; R P T are local. */
static void flag_labels(unsigned int add, unsigned int remove,
			const char **addl, unsigned int *na,
			const char **reml, unsigned int *nr)
{
	*na = *nr = 0;
	if (add & MF_FLAG_SEEN)
		reml[(*nr)++] = "UNREAD";
	if (remove & MF_FLAG_SEEN)
		addl[(*na)++] = "UNREAD";
	if (add & MF_FLAG_FLAGGED)
		addl[(*na)++] = "STARRED";
	if (remove & MF_FLAG_FLAGGED)
		reml[(*nr)++] = "STARRED";
}

static enum mf_status batch_modify(struct gmail *g,
				   const char *const *ids, unsigned int count,
				   const char *const *addl, unsigned int na,
				   const char *const *reml, unsigned int nr,
				   char **error_r)
{
	char *path = xasprintf("%s/messages/batchModify", g->user_path);
	enum mf_status st = MF_OK;

	for (unsigned int off = 0; off < count && st == MF_OK;
	     off += MODIFY_MAX) {
		unsigned int n = MF_MIN(MODIFY_MAX, count - off);
		json_t *body = json_object();

		json_object_set_new(body, "ids", label_array(ids + off, n));
		if (na)
			json_object_set_new(body, "addLabelIds",
					    label_array(addl, na));
		if (nr)
			json_object_set_new(body, "removeLabelIds",
					    label_array(reml, nr));
		st = call_json(g, "POST", path, body, U_BATCH_MODIFY, true,
			       NULL, error_r);
		json_decref(body);
	}
	free(path);
	return st;
}

static enum mf_status gmail_set_flags(struct mf_backend *be,
				      const char *folder,
				      const char *const *ids,
				      unsigned int count, unsigned int add,
				      unsigned int remove, char **error_r)
{
	const char *addl[4], *reml[4];
	unsigned int na, nr;

	(void)folder;
	flag_labels(add, remove, addl, &na, reml, &nr);
	if (!na && !nr)
		return MF_OK;	/* only local flags changed */
	return batch_modify(G(be), ids, count, addl, na, reml, nr, error_r);
}

/* One message's label change (messages.modify). */
static enum mf_status modify(struct gmail *g, const char *id,
			     const char *add, const char *remove,
			     char **error_r)
{
	char *e = mf_http_escape(id);
	char *path = xasprintf("%s/messages/%s/modify", g->user_path, e);
	json_t *body = json_object();
	enum mf_status st;

	free(e);
	if (add)
		json_object_set_new(body, "addLabelIds",
				    label_array(&add, 1));
	if (remove)
		json_object_set_new(body, "removeLabelIds",
				    label_array(&remove, 1));
	st = call_json(g, "POST", path, body, U_MODIFY, true, NULL, error_r);
	json_decref(body);
	free(path);
	return st;
}

static enum mf_status message_op(struct gmail *g, const char *id,
				 const char *op, char **error_r)
{
	char *e = mf_http_escape(id);
	char *path = op ? xasprintf("%s/messages/%s/%s", g->user_path, e, op)
			: xasprintf("%s/messages/%s", g->user_path, e);
	enum mf_status st;

	free(e);
	st = call_json(g, op ? "POST" : "DELETE", path, NULL,
		       op ? U_TRASH : U_DELETE, true, NULL, error_r);
	free(path);
	return st;
}

static bool is_user_label(const char *id)
{
	static const char *const sys[] = {
		"INBOX", "SPAM", "TRASH", "UNREAD", "STARRED", "IMPORTANT",
		"SENT", "DRAFT", "CHAT", ALL_MAIL,
	};

	for (size_t i = 0; i < MF_ARRAY_SIZE(sys); i++) {
		if (strcmp(sys[i], id) == 0)
			return false;
	}
	return strncmp(id, "CATEGORY_", 9) != 0;
}

static enum mf_status gmail_append(struct mf_backend *be, const char *folder,
				   int in_fd, const struct mf_append_info *info,
				   char **id_r, char **error_r)
{
	struct gmail *g = G(be);
	const char *labels[4];
	unsigned int nl = 0;
	json_t *meta = json_object(), *j = NULL;
	char *mtext, *path, hdr[96], boundary[48];
	const char *hdrs[2] = { hdr, NULL };
	struct mf_http_resp resp;
	struct mf_buf b;
	enum mf_status st;
	ssize_t got;
	const char *id;

	*id_r = NULL;
	if (strcmp(folder, ALL_MAIL) != 0)
		labels[nl++] = folder;
	if (!(info->flags & MF_FLAG_SEEN))
		labels[nl++] = "UNREAD";
	if (info->flags & MF_FLAG_FLAGGED)
		labels[nl++] = "STARRED";
	json_object_set_new(meta, "labelIds", label_array(labels, nl));
	mtext = json_dumps(meta, JSON_COMPACT);
	json_decref(meta);
	snprintf(boundary, sizeof(boundary), "mailfs_up_%016llx",
		 (unsigned long long)mf_now_ns());
	snprintf(hdr, sizeof(hdr),
		 "Content-Type: multipart/related; boundary=%s", boundary);
	mf_buf_init(&b);
	mf_buf_printf(&b, "--%s\r\nContent-Type: application/json; "
		      "charset=UTF-8\r\n\r\n%s\r\n--%s\r\nContent-Type: "
		      "message/rfc822\r\n\r\n", boundary, mtext, boundary);
	free(mtext);
	mf_buf_reserve(&b, (size_t)info->size + 64);
	{
		char buf[65536];
		off_t off = 0;

		while ((got = mf_pread_all(in_fd, buf, sizeof(buf), off)) > 0) {
			mf_buf_append(&b, buf, (size_t)got);
			off += got;
		}
		if (got < 0) {
			mf_buf_free(&b);
			*error_r = xstrdup("cannot read the message");
			return MF_TEMP;
		}
	}
	mf_buf_printf(&b, "\r\n--%s--\r\n", boundary);
	path = xasprintf("/upload%s/messages?uploadType=multipart",
			 g->user_path);
	mf_http_resp_init(&resp);
	/* Not retried on a 5xx: it may have landed; the engine matches
	   an upload it is unsure of on the next listing. */
	st = call(g, "POST", path, hdrs, b.data, b.len, U_INSERT, false,
		  &resp, error_r);
	mf_buf_free(&b);
	if (st == MF_OK)
		st = status_of(&resp, "messages.insert", error_r);
	if (st == MF_OK) {
		j = json_loadb(resp.body.data, resp.body.len, 0, NULL);
		id = json_string_value(json_object_get(j, "id"));
		if (id && *id && strlen(id) <= 64)
			*id_r = xstrdup(id);
		json_decref(j);
	}
	mf_http_resp_free(&resp);
	free(path);
	/* The engine lists the folder again; the memo must not hide it. */
	memo_clear(g);
	return st;
}

static enum mf_status gmail_move(struct mf_backend *be, const char *from,
				 const char *id, const char *to, char **id_r,
				 char **error_r)
{
	struct gmail *g = G(be);
	enum mf_status st = MF_OK;

	*id_r = xstrdup(id);	/* ids are global: moving keeps them */
	memo_clear(g);
	if (strcmp(to, "TRASH") == 0)
		return message_op(g, id, "trash", error_r);
	if (strcmp(from, "TRASH") == 0) {
		st = message_op(g, id, "untrash", error_r);
		if (st == MF_OK && strcmp(to, ALL_MAIL) != 0)
			st = modify(g, id, to, NULL, error_r);
		return st;
	}
	if (strcmp(to, ALL_MAIL) == 0)
		return modify(g, id, NULL, from, error_r);
	if (strcmp(from, ALL_MAIL) == 0)
		return modify(g, id, to, NULL, error_r);
	/* SENT and DRAFT cannot be removed by a client: add only. */
	return modify(g, id, to,
		      strcmp(from, "SENT") == 0 || strcmp(from, "DRAFT") == 0
			      ? NULL
			      : from,
		      error_r);
}

/* Does the message keep a place (INBOX or a user label) besides folder? */
static enum mf_status other_labels(struct gmail *g, const char *folder,
				   const char *id, bool *others_r,
				   char **error_r)
{
	char *e = mf_http_escape(id);
	char *path = xasprintf("%s/messages/%s?format=minimal", g->user_path,
			       e);
	json_t *j = NULL, *l;
	enum mf_status st;
	size_t i;

	free(e);
	*others_r = false;
	st = call_json(g, "GET", path, NULL, U_GET, true, &j, error_r);
	free(path);
	if (st != MF_OK)
		return st;
	json_array_foreach(json_object_get(j, "labelIds"), i, l) {
		const char *s = json_string_value(l);

		if (s && strcmp(s, folder) != 0 &&
		    (strcmp(s, "INBOX") == 0 || is_user_label(s)))
			*others_r = true;
	}
	json_decref(j);
	return MF_OK;
}

static enum mf_status gmail_expunge(struct mf_backend *be, const char *folder,
				    const char *id, char **error_r)
{
	struct gmail *g = G(be);
	enum mf_status st;
	bool others = false;

	memo_clear(g);
	if (strcmp(folder, "TRASH") == 0)
		return message_op(g, id, NULL, error_r);	/* for good */
	if (strcmp(folder, ALL_MAIL) == 0 || strcmp(folder, "SPAM") == 0 ||
	    strcmp(folder, "SENT") == 0 || strcmp(folder, "DRAFT") == 0)
		return message_op(g, id, "trash", error_r);
	if (strcmp(folder, "INBOX") == 0)
		return g->inbox_trash ? message_op(g, id, "trash", error_r)
				      : modify(g, id, NULL, "INBOX", error_r);
	/* A label: remove it, unless it is the message's last place. */
	st = other_labels(g, folder, id, &others, error_r);
	if (st != MF_OK)
		return st;
	if (!others)
		return message_op(g, id, "trash", error_r);
	return modify(g, id, NULL, folder, error_r);
}

static const struct label *label_by_name(struct gmail *g, const char *name)
{
	for (unsigned int i = 0; i < g->nlabels; i++) {
		if (!g->labels[i].system && strcmp(g->labels[i].name, name) == 0)
			return &g->labels[i];
	}
	return NULL;
}

/* The label name of a local path: components unescaped, joined by "/". */
static char *label_name(const char *path)
{
	struct mf_buf b;
	const char *p = path;

	mf_buf_init(&b);
	while (*p) {
		size_t n = strcspn(p, "/");
		char *comp = xstrndup(p, n), *u = mf_folder_unescape(comp);

		if (b.len)
			mf_buf_appendc(&b, '/');
		mf_buf_appends(&b, u ? u : comp);
		free(u);
		free(comp);
		p += n;
		if (*p == '/')
			p++;
	}
	return mf_buf_steal(&b);
}

static enum mf_status gmail_create_folder(struct mf_backend *be,
					  const char *path, char **remote_r,
					  char **error_r)
{
	struct gmail *g = G(be);
	char *name = label_name(path), *p;
	json_t *body = json_object(), *j = NULL;
	enum mf_status st;
	const struct label *l;

	*remote_r = NULL;
	json_object_set_new(body, "name", json_string(name));
	json_object_set_new(body, "labelListVisibility",
			    json_string("labelShow"));
	json_object_set_new(body, "messageListVisibility",
			    json_string("show"));
	p = xasprintf("%s/labels", g->user_path);
	st = call_json(g, "POST", p, body, U_LABEL_WRITE, false, &j, error_r);
	free(p);
	json_decref(body);
	if (st == MF_OK) {
		const char *id = json_string_value(json_object_get(j, "id"));

		if (id && *id)
			*remote_r = xstrdup(id);
		else
			st = MF_PROTO;
	} else if (st == MF_PROTO || st == MF_AUTH) {
		/* It may exist already (409): then that is the folder. */
		char *err2 = NULL;

		if (load_labels(g, &err2) == MF_OK &&
		    (l = label_by_name(g, name))) {
			free(*error_r);
			*error_r = NULL;
			*remote_r = xstrdup(l->id);
			st = MF_OK;
		}
		free(err2);
	}
	json_decref(j);
	free(name);
	return st;
}

static enum mf_status gmail_delete_folder(struct mf_backend *be,
					  const char *remote, char **error_r)
{
	struct gmail *g = G(be);
	char *e, *p;
	enum mf_status st;

	if (!is_user_label(remote)) {
		*error_r = xasprintf("%s is a system label", remote);
		return MF_NOTSUP;
	}
	e = mf_http_escape(remote);
	p = xasprintf("%s/labels/%s", g->user_path, e);
	st = call_json(g, "DELETE", p, NULL, U_LABEL_WRITE, true, NULL,
		       error_r);
	free(p);
	free(e);
	return st;
}

static enum mf_status patch_label(struct gmail *g, const char *id,
				  const char *name, char **error_r)
{
	json_t *body = json_object();
	char *e = mf_http_escape(id);
	char *p = xasprintf("%s/labels/%s", g->user_path, e);
	enum mf_status st;

	json_object_set_new(body, "name", json_string(name));
	st = call_json(g, "PATCH", p, body, U_LABEL_WRITE, true, NULL,
		       error_r);
	json_decref(body);
	free(p);
	free(e);
	return st;
}

/*
 * Gmail nests labels by name only: renaming "Work" leaves "Work/Projects"
 * where it was. Rename the children too, as a directory rename does.
 */
static enum mf_status rename_children(struct gmail *g, const char *id,
				      const char *new_name, char **error_r)
{
	const char *old_name = NULL;
	enum mf_status st = MF_OK;
	size_t n;

	for (unsigned int i = 0; i < g->nlabels; i++) {
		if (strcmp(g->labels[i].id, id) == 0)
			old_name = g->labels[i].name;
	}
	if (!old_name)
		return MF_OK;	/* not listed yet: no children known */
	n = strlen(old_name);
	for (unsigned int i = 0; i < g->nlabels && st == MF_OK; i++) {
		const struct label *l = &g->labels[i];
		char *child;

		if (l->system || strncmp(l->name, old_name, n) != 0 ||
		    l->name[n] != '/')
			continue;
		child = xasprintf("%s%s", new_name, l->name + n);
		st = patch_label(g, l->id, child, error_r);
		free(child);
	}
	if (st == MF_OK) {
		char *err = NULL;

		/* The names changed: list them again (best effort). */
		if (load_labels(g, &err) != MF_OK)
			free(err);
	}
	return st;
}

static enum mf_status gmail_rename_folder(struct mf_backend *be,
					  const char *remote,
					  const char *new_path,
					  char **remote_r, char **error_r)
{
	struct gmail *g = G(be);
	char *name;
	enum mf_status st;

	*remote_r = NULL;
	if (!is_user_label(remote)) {
		*error_r = xasprintf("%s is a system label", remote);
		return MF_NOTSUP;
	}
	name = label_name(new_path);
	st = patch_label(g, remote, name, error_r);
	if (st == MF_OK) {
		*remote_r = xstrdup(remote);	/* the id stays */
		st = rename_children(g, remote, name, error_r);
	}
	free(name);
	return st;
}

static void gmail_interrupt(struct mf_backend *be)
{
	struct gmail *g = G(be);

	mf_http_interrupt(g->http);
}

const struct mf_backend_ops mf_gmail_backend_ops = {
	.name = "gmail",
	.caps = MF_CAP_GLOBAL_IDS,
	/* S and F are labels; D (DRAFT) is listed but cannot be set */
	.flags_writable = MF_FLAG_SEEN | MF_FLAG_FLAGGED,
	.flags_local = GMAIL_LOCAL_FLAGS,
	.flag_batch_max = MODIFY_MAX,
	.flag_settle = true,
	.create = gmail_create,
	.destroy = gmail_destroy,
	.connect = gmail_connect,
	.list_folders = gmail_list_folders,
	.fetch_changes = gmail_fetch_changes,
	.probe = NULL,
	.fetch_body = gmail_fetch_body,
	.fetch_bodies = NULL,
	.set_flags = gmail_set_flags,
	.append = gmail_append,
	.move = gmail_move,
	.expunge = gmail_expunge,
	.create_folder = gmail_create_folder,
	.delete_folder = gmail_delete_folder,
	.rename_folder = gmail_rename_folder,
	.wait_push = NULL,
	.interrupt = gmail_interrupt,
};
