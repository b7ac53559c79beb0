/*
 * The sync engine (see mf_engine.h): the only code that calls both the
 * backends (net/) and the store (cache/).
 *
 * Threads per account, each with its own backend session:
 *
 *   engine  loop { list folders and sync every folder when due (probe
 *                  first: one round trip for an unchanged folder); sync
 *                  the inbox when the push thread saw a change; run the
 *                  queue entries that are due; sleep until the next due
 *                  time or a kick }
 *   push    loop { wait_push(INBOX) -> flag + wake the engine }
 *   fetch   loop { take a body request, download into the blob store }
 *
 * Queue entries run strictly in order (an APPEND before the FLAGS of the
 * same message, a CREATE before the MOVE into it). Before each attempt
 * its attempt count is committed, so after a crash an entry that may
 * have reached the server is recognised (DESIGN.md safety rule 2): an
 * APPEND tried before is first looked for in a fresh listing of its
 * folder, and a MOVE whose source is gone waits to be matched.
 */
#include "mf_backend.h"
#include "mf_blob.h"
#include "mf_config.h"
#include "mf_engine.h"
#include "mf_store.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FETCH_THREADS 16	/* max_connections; 0 serves reads only
				   unless it is the only one */
#define PREFETCH_BATCH 256
#define PREFETCH_CHUNK 32	/* bodies asked for in one request */
#define PREFETCH_CHUNK_SHARED 4	/* ... when reads share the connection */
#define FAILURES_KEPT 8		/* write-back failures the status shows */
#define BODY_MAX_SIZE (1ULL << 31)	/* 2 GiB: larger is not mail */
#define PUSH_TIMEOUT_MS (25 * 60 * 1000)
#define RETRY_MAX_MS (5 * 60 * 1000)

struct fetch_req {
	int64_t msg_id;
	mf_fetch_cb *cb;
	void *ctx;
	struct fetch_req *next;
};

struct mf_engine {
	const struct mf_config *cfg;
	const struct mf_account *acct;
	const struct mf_backend_ops *ops;

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* engine thread wake-up */
	pthread_cond_t fetch_cond;	/* fetch threads wake-up */
	pthread_cond_t push_cond;	/* push thread back-off */
	bool stop;			/* protected by lock */
	bool kicked;			/* protected by lock */
	bool inbox_changed;		/* protected by lock */
	bool first_sync_done;		/* protected by lock */
	struct fetch_req *fetch_head;	/* protected by lock */
	struct fetch_req *fetch_tail;	/* protected by lock */
	char *state;			/* protected by lock; owned */
	int64_t prefetch_ids[PREFETCH_BATCH];	/* protected by lock */
	unsigned int prefetch_n;	/* protected by lock */
	unsigned int prefetch_pos;	/* protected by lock */
	int64_t prefetch_after;		/* protected by lock */
	bool prefetch_done;		/* protected by lock: nothing left */
	uint64_t prefetched;		/* protected by lock */
	uint64_t prefetched_total;	/* protected by lock */
	int64_t last_sync_ns;		/* protected by lock: last full sync */
	char *failures[FAILURES_KEPT];	/* protected by lock: owned, ring */
	unsigned int nfailures;		/* protected by lock: total count */

	struct mf_backend *main_be;
	struct mf_backend *push_be;
	unsigned int nfetch;		/* fetch threads (max_connections) */
	struct mf_backend *fetch_be[MAX_FETCH_THREADS];
	pthread_t main_thread;
	pthread_t push_thread;
	pthread_t fetch_thread[MAX_FETCH_THREADS];
	unsigned int nthreads_started;

	struct mf_engine *next;		/* registry */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mf_engine *registry;

static void prefetch_rearm(struct mf_engine *e);

/*
 * An entry that must wait for one queued after it (a move or upload into
 * a folder whose CREATE is further back): it goes to the end of the
 * queue instead of blocking it.
 */
#define MF_REQUEUE ((enum mf_status)100)

/* ---- small helpers ---- */

static void set_state(struct mf_engine *e, const char *fmt, ...)
	MF_PRINTF(2, 3);

static void set_state(struct mf_engine *e, const char *fmt, ...)
{
	va_list ap;
	char *s;
	bool changed;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&e->lock);
	changed = !e->state || strcmp(e->state, s) != 0;
	free(e->state);
	e->state = s;
	pthread_mutex_unlock(&e->lock);
	if (changed)
		mf_info("%s: %s", e->acct->name, s);
}

char *mf_engine_state(struct mf_engine *e)
{
	char *s;

	pthread_mutex_lock(&e->lock);
	s = xstrdup(e->state ? e->state : "starting");
	pthread_mutex_unlock(&e->lock);
	return s;
}

static bool stopping(struct mf_engine *e)
{
	bool s;

	pthread_mutex_lock(&e->lock);
	s = e->stop;
	pthread_mutex_unlock(&e->lock);
	return s;
}

/* Sleep up to ms, or until stop. Returns true when stopping. */
static bool nap(struct mf_engine *e, pthread_cond_t *cond, int64_t ms)
{
	struct timespec ts;
	bool s;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&e->lock);
	if (!e->stop)
		pthread_cond_timedwait(cond, &e->lock, &ts);
	s = e->stop;
	pthread_mutex_unlock(&e->lock);
	return s;
}

static int64_t now_ms(void)
{
	return mf_now_ns() / 1000000;
}

static int64_t backoff_ms(int attempts)
{
	int64_t ms = 1000;

	for (int i = 1; i < attempts && ms < RETRY_MAX_MS; i++)
		ms *= 2;
	ms = MF_MIN(ms, RETRY_MAX_MS);
	/* Jitter of up to a quarter, so that accounts do not march in step */
	return ms + (int64_t)(random() % (ms / 4 + 1));
}

/* ---- syncing folders ---- */

struct sync_ctx {
	int64_t folder;
	struct mf_sync_batch *batch;
	bool global_ids;
	unsigned int local_flags;
};

static int sink_begin(void *ctx, const struct mf_changes_info *info)
{
	struct sync_ctx *sc = ctx;
	struct mf_changes_info i = *info;

	if (sc->batch)
		return 0;
	i.global_ids = sc->global_ids;
	i.local_flags = sc->local_flags;
	return mf_sync_batch_begin(sc->folder, &i, &sc->batch) < 0 ? -1 : 0;
}

static int sink_change(void *ctx, const struct mf_change *ch)
{
	struct sync_ctx *sc = ctx;

	if (!sc->batch)
		return -1;
	return mf_sync_batch_change(sc->batch, ch) < 0 ? -1 : 0;
}

static enum mf_status sync_folder(struct mf_engine *e, struct mf_backend *be,
				  const struct mf_folder *f, bool probe)
{
	struct mf_changes_hint hint = { .cursor = f->cursor };
	struct mf_changes_sink sink = { sink_begin, sink_change, NULL };
	struct sync_ctx sc = {
		.folder = f->id,
		.global_ids = (e->ops->caps & MF_CAP_GLOBAL_IDS) != 0,
		.local_flags = e->ops->flags_local,
	};
	char *cursor = NULL, *err = NULL;
	enum mf_status st;
	int ret;

	if (f->attrs & MF_FOLDER_NOSELECT)
		return MF_OK;
	if (!mf_account_folder_wanted(e->acct, f->path))
		return MF_OK;
	if (probe && f->cursor && e->ops->probe) {
		bool changed = true;

		st = e->ops->probe(be, f->remote, f->cursor, &changed, &err);
		if (st == MF_OK && !changed)
			return MF_OK;
		free(err);
		err = NULL;
		if (st == MF_TEMP || st == MF_AUTH || st == MF_CANCELED)
			return st;
	}
	mf_store_folder_known_count(f->id, &hint.known_count);
	sink.ctx = &sc;
	st = e->ops->fetch_changes(be, f->remote, &hint, &sink, &cursor, &err);
	if (sc.batch) {
		ret = mf_sync_batch_end(&sc.batch, cursor, st == MF_OK);
		if (ret < 0 && st == MF_OK)
			st = MF_TEMP;
	}
	if (st != MF_OK && st != MF_CANCELED)
		mf_warn("%s: sync of %s failed: %s", e->acct->name, f->path,
			err ? err : mf_status_str(st));
	else
		mf_debug(MF_DBG_SYNC, "%s: synced %s", e->acct->name, f->path);
	free(cursor);
	free(err);
	return st;
}

struct list_ctx {
	struct mf_remote_folder *folders;
	unsigned int n;
};

static int collect_folder(void *ctx, const struct mf_remote_folder *f)
{
	struct list_ctx *lc = ctx;
	struct mf_remote_folder *c;

	lc->folders = xrealloc(lc->folders,
			       (lc->n + 1) * sizeof(*lc->folders));
	c = &lc->folders[lc->n++];
	c->remote = xstrdup(f->remote);
	c->path = xstrdup(f->path);
	c->attrs = f->attrs;
	c->status = f->status ? xstrdup(f->status) : NULL;
	return 0;
}

static void list_clear(struct list_ctx *lc)
{
	for (unsigned int i = 0; i < lc->n; i++) {
		free((char *)lc->folders[i].remote);
		free((char *)lc->folders[i].path);
		free((char *)lc->folders[i].status);
	}
	free(lc->folders);
	lc->folders = NULL;
	lc->n = 0;
}

static int cmp_remote(const void *a, const void *b)
{
	const struct mf_remote_folder *x = a, *y = b;

	return strcmp(x->remote, y->remote);
}

/*
 * A folder mailfs deleted that a listing still shows: Dovecot (LAYOUT=fs)
 * may list a deleted mailbox for a while. Bring it back only if the
 * server can say something about it.
 */
static bool listed_but_deleted(struct mf_engine *e,
			       const struct mf_remote_folder *f)
{
	char *err = NULL;
	bool changed;
	enum mf_status st;

	if ((f->attrs & MF_FOLDER_NOSELECT) || !e->ops->probe ||
	    !mf_store_folder_was_deleted(e->acct->name, f->remote))
		return false;
	st = e->ops->probe(e->main_be, f->remote, "0:0:0:0", &changed, &err);
	free(err);
	return st == MF_GONE || st == MF_PROTO;
}

/*
 * List the folders and apply the list to the store. On MF_OK, lc holds
 * the listing sorted by remote name (for the statuses it may carry).
 */
static enum mf_status sync_folder_list(struct mf_engine *e,
				       struct list_ctx *lc)
{
	char *err = NULL;
	enum mf_status st;

	st = e->ops->list_folders(e->main_be, collect_folder, lc, &err);
	if (st == MF_OK) {
		/* Excluded folders (folders = * !Junk) stay off the mount. */
		unsigned int kept = 0;

		for (unsigned int i = 0; i < lc->n; i++) {
			struct mf_remote_folder *f = &lc->folders[i];

			if ((f->attrs & MF_FOLDER_INBOX) ||
			    (mf_account_folder_wanted(e->acct, f->path) &&
			     !listed_but_deleted(e, f))) {
				lc->folders[kept++] = *f;
			} else {
				free((char *)f->remote);
				free((char *)f->path);
				free((char *)f->status);
			}
		}
		lc->n = kept;
		if (mf_store_apply_folder_list(e->acct->name, lc->folders,
					       lc->n) < 0)
			st = MF_TEMP;
		qsort(lc->folders, lc->n, sizeof(*lc->folders), cmp_remote);
	} else if (st != MF_CANCELED) {
		set_state(e, "cannot list folders: %s",
			  err ? err : mf_status_str(st));
	}
	free(err);
	return st;
}

static enum mf_status sync_all(struct mf_engine *e, bool probe,
			       bool first_listing)
{
	struct list_ctx lc = { NULL, 0 };
	struct mf_folder *folders;
	unsigned int n, skipped = 0;
	enum mf_status st;

	st = sync_folder_list(e, &lc);
	if (st != MF_OK) {
		list_clear(&lc);
		return st;
	}
	if (mf_store_engine_folders(e->acct->name, &folders, &n) < 0) {
		list_clear(&lc);
		return MF_TEMP;
	}
	for (unsigned int i = 0; i < n && st != MF_CANCELED; i++) {
		struct mf_remote_folder key = { .remote = folders[i].remote };
		const struct mf_remote_folder *listed;
		enum mf_status fst;

		/* The first listing says how far it is (status and log). */
		if (first_listing)
			set_state(e, "first listing: folder %u of %u (%s)",
				  i + 1, n, folders[i].path);

		/* The listing said what the folder's cursor is now. */
		listed = bsearch(&key, lc.folders, lc.n, sizeof(*lc.folders),
				 cmp_remote);
		if (probe && listed && listed->status && folders[i].cursor &&
		    strcmp(listed->status, folders[i].cursor) == 0) {
			skipped++;
			continue;
		}
		fst = sync_folder(e, e->main_be, &folders[i],
				  probe && !(listed && listed->status));
		if (fst == MF_TEMP || fst == MF_AUTH || fst == MF_CANCELED) {
			st = fst;
			break;
		}
	}
	mf_debug(MF_DBG_SYNC, "%s: %u of %u folders unchanged by the listing",
		 e->acct->name, skipped, n);
	mf_store_folders_free(folders, n);
	list_clear(&lc);
	return st;
}

/* Sync one folder by id (the inbox, or before an APPEND retry). */
static enum mf_status sync_one(struct mf_engine *e, int64_t folder_id)
{
	struct mf_folder f;
	enum mf_status st;

	memset(&f, 0, sizeof(f));
	if (mf_store_folder_get(folder_id, &f) < 0 || !f.remote) {
		mf_folder_clear(&f);
		return MF_OK;
	}
	st = sync_folder(e, e->main_be, &f, false);
	mf_folder_clear(&f);
	return st;
}

static int64_t inbox_folder(struct mf_engine *e, char **remote_r)
{
	struct mf_folder *folders;
	unsigned int n;
	int64_t id = 0;

	*remote_r = NULL;
	if (mf_store_engine_folders(e->acct->name, &folders, &n) < 0)
		return 0;
	for (unsigned int i = 0; i < n; i++) {
		if (folders[i].attrs & MF_FOLDER_INBOX) {
			id = folders[i].id;
			*remote_r = xstrdup(folders[i].remote);
			break;
		}
	}
	mf_store_folders_free(folders, n);
	return id;
}

/* ---- write-back ---- */

/*
 * Flag changes. Bits the server stores (ops->flags_writable) go up; bits
 * it neither stores nor lists (ops->flags_local) are the store's own, so
 * the local value becomes the base; bits it lists but cannot store (D on
 * Graph and Gmail) keep the server's value as the base.
 */
static unsigned int writable(const struct mf_engine *e)
{
	return e->ops->flags_writable ? e->ops->flags_writable : MF_FLAG_ALL;
}

/* The bits that are the user's to set: written, or kept locally. */
static unsigned int owned(const struct mf_engine *e)
{
	return writable(e) | e->ops->flags_local;
}

/* The base flags of m once its change is on the server. */
static unsigned int pushed_flags(const struct mf_engine *e,
				 const struct mf_message *m)
{
	return (m->flags & owned(e)) | (m->base_flags & ~owned(e));
}

#define FLAG_RUN_SETTLE_MS 100
#define FLAG_RUN_SETTLE_TRIES 50	/* 5 s at most */

/*
 * The flag changes queued right after q, up to max - 1. A mail reader
 * marking a thousand messages read renames a thousand files one by one:
 * let the run settle while it grows (up to 5 s) so that it goes in one
 * request rather than in many small ones. Without ops->flag_settle a
 * lone change goes at once.
 */
static unsigned int flag_run(struct mf_engine *e,
			     const struct mf_queue_entry *q, unsigned int max,
			     int64_t *entries, int64_t *msgs)
{
	unsigned int n = 0;

	if (mf_store_queue_flags_run(e->acct->name, q->id, max - 1, entries,
				     msgs, &n) < 0)
		return 0;
	if (n == 0 && !e->ops->flag_settle)
		return 0;
	for (unsigned int tries = 0;
	     n < max - 1 && tries < FLAG_RUN_SETTLE_TRIES; tries++) {
		unsigned int prev = n;

		if (nap(e, &e->push_cond, FLAG_RUN_SETTLE_MS) ||
		    mf_store_queue_flags_run(e->acct->name, q->id, max - 1,
					     entries, msgs, &n) < 0 ||
		    n == prev)
			break;
	}
	return n;
}

/*
 * q's change, with the run queued behind it that makes the same change
 * in the same server folder (ops->flag_batch_max ids a request). The
 * entries of the run that are done are finished here; q's status is
 * returned (MF_TEMP: the message changed again meanwhile, run q again).
 */
static enum mf_status run_flags(struct mf_engine *e,
				const struct mf_queue_entry *q,
				const struct mf_message *m, char **err)
{
	unsigned int max = MF_MAX(e->ops->flag_batch_max, 1u);
	unsigned int w = writable(e), n = 0, k = 0, add, remove;
	int64_t *entries = NULL, *msgs = NULL;
	struct mf_message *rows = NULL;
	const char **ids = NULL;
	unsigned int *with = NULL;
	struct mf_folder rf;
	enum mf_status st;
	bool more = false;

	if (!m->ruid || m->state == MF_MSG_EXPUNGED)
		return MF_OK;	/* flags go up with the APPEND or match */
	memset(&rf, 0, sizeof(rf));
	add = m->flags & ~m->base_flags & w;
	remove = m->base_flags & ~m->flags & w;
	if (!add && !remove)
		goto pushed;	/* only bits the server does not store */
	if (mf_store_folder_get(m->rfolder, &rf) < 0 || !rf.remote) {
		mf_folder_clear(&rf);
		return MF_OK;
	}
	entries = xcalloc(max, sizeof(*entries));
	msgs = xcalloc(max, sizeof(*msgs));
	rows = xcalloc(max, sizeof(*rows));
	ids = xcalloc(max, sizeof(*ids));
	with = xcalloc(max, sizeof(*with));
	ids[k++] = m->ruid;
	if (max > 1)
		n = flag_run(e, q, max, entries, msgs);
	for (unsigned int i = 0; i < n; i++) {
		struct mf_message *r = &rows[i];

		if (mf_store_message_get(msgs[i], r) < 0)
			continue;
		if (r->id == m->id || !r->ruid ||
		    r->state == MF_MSG_EXPUNGED || r->rfolder != m->rfolder ||
		    (r->flags & ~r->base_flags & w) != add ||
		    (r->base_flags & ~r->flags & w) != remove)
			continue;
		with[k - 1] = i;
		ids[k++] = r->ruid;
	}
	st = e->ops->set_flags(e->main_be, rf.remote, ids, k, add, remove,
			       err);
	if (st == MF_GONE && k > 1) {
		/* One of them is gone: q on its own tells whether it is. */
		free(*err);
		*err = NULL;
		k = 1;
		st = e->ops->set_flags(e->main_be, rf.remote, ids, 1, add,
				       remove, err);
	}
	if (st == MF_OK && k > 1)
		mf_debug(MF_DBG_QUEUE, "%s: %u flag changes in one request",
			 e->acct->name, k);
	/* Those of the run that changed again meanwhile stay queued. */
	for (unsigned int j = 0; st == MF_OK && j + 1 < k; j++) {
		const struct mf_message *r = &rows[with[j]];
		bool again = false;

		if (mf_store_flags_pushed(r->id, pushed_flags(e, r), owned(e),
					  &again) == 0 && !again)
			mf_store_queue_done(entries[with[j]]);
	}
	for (unsigned int i = 0; i < n; i++)
		mf_message_clear(&rows[i]);
	mf_folder_clear(&rf);
	free(entries);
	free(msgs);
	free(rows);
	free(ids);
	free(with);
	if (st == MF_GONE)
		return MF_OK;	/* expunged meanwhile: the delete wins */
	if (st != MF_OK)
		return st;
pushed:
	if (mf_store_flags_pushed(m->id, pushed_flags(e, m), owned(e),
				  &more) < 0)
		return MF_TEMP;
	/* Changed again while we talked: the same entry runs again. */
	return more ? MF_TEMP : MF_OK;
}

/*
 * The folder a move or upload goes to has no server name: wait behind
 * its CREATE if one is queued, else give up (it will not appear).
 */
static enum mf_status target_missing(const struct mf_folder *f, char **err)
{
	if (f->id && f->state == MF_FOLDER_CREATING &&
	    mf_store_queue_has_mkdir(f->id))
		return MF_REQUEUE;
	*err = xstrdup("the target folder does not exist on the server");
	return MF_PROTO;
}

static enum mf_status run_append(struct mf_engine *e,
				 const struct mf_queue_entry *q,
				 struct mf_message *m, char **err)
{
	struct mf_append_info info;
	struct mf_folder f;
	char *path, *id = NULL;
	char hash[MF_BLOB_HASH_LEN + 1];
	uint64_t size;
	enum mf_status st;
	int fd;

	if (q->attempts > 0 && !m->ruid) {
		/* It may have arrived before a crash: look first. */
		st = sync_one(e, m->folder);
		if (st != MF_OK)
			return st;
		mf_message_clear(m);
		if (mf_store_message_get(q->message, m) < 0)
			return MF_OK;
	}
	path = mf_store_staging_path(m->id);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*err = xasprintf("staging file %s: %s", path, strerror(errno));
		free(path);
		/* Nothing to send; there is nothing we could do later. */
		return m->ruid ? MF_OK : MF_PROTO;
	}
	memset(&f, 0, sizeof(f));
	if (m->ruid || m->state == MF_MSG_EXPUNGED) {
		st = MF_OK;	/* matched after a crash, or deleted */
	} else {
		if (mf_store_folder_get(m->folder, &f) < 0 || !f.remote) {
			st = target_missing(&f, err);
			mf_folder_clear(&f);
			close(fd);
			free(path);
			return st;
		}
		info.flags = m->flags;
		info.internaldate = m->internaldate;
		info.size = m->size;
		info.retry = q->attempts > 0;
		st = e->ops->append(e->main_be, f.remote, fd, &info, &id, err);
		if (st == MF_OK)
			mf_info("%s: uploaded %s", e->acct->name, m->name);
	}
	if (st == MF_OK && m->state != MF_MSG_EXPUNGED) {
		if (mf_blob_import(fd, hash, &size) < 0) {
			mf_warn("%s: could not cache the body of %s",
				e->acct->name, m->name);
			hash[0] = '\0';
		}
		/*
		 * Record where it went and with which flags: the user may
		 * have renamed or moved it while it was on its way.
		 */
		if (m->ruid)
			mf_store_appended(m->id, m->rfolder, m->ruid,
					  m->base_flags, hash[0] ? hash : NULL);
		else if (mf_store_appended(m->id, f.id, id, info.flags,
					   hash[0] ? hash : NULL) < 0)
			st = MF_TEMP;
	}
	mf_folder_clear(&f);
	close(fd);
	if (st == MF_OK)
		unlink(path);
	free(path);
	free(id);
	return st;
}

static enum mf_status run_move(struct mf_engine *e,
			       const struct mf_queue_entry *q,
			       struct mf_message *m, char **err)
{
	struct mf_folder from, to;
	char *id = NULL;
	enum mf_status st;

	if (!m->ruid || m->rfolder == m->folder)
		return MF_OK;
	/*
	 * Unlinked on its way: the EXPUNGE that follows removes it where it
	 * is, unless an earlier attempt may have moved it already (its
	 * answer lost): then finish the move, so the EXPUNGE finds it.
	 */
	if (m->dir == MF_DIR_GONE && m->state == MF_MSG_DELETING &&
	    q->attempts == 0)
		return MF_OK;
	memset(&from, 0, sizeof(from));
	memset(&to, 0, sizeof(to));
	if (mf_store_folder_get(m->rfolder, &from) < 0 || !from.remote) {
		st = MF_OK;
		goto out;
	}
	if (mf_store_folder_get(m->folder, &to) < 0 || !to.remote) {
		st = target_missing(&to, err);
		goto out;
	}
	st = e->ops->move(e->main_be, from.remote, m->ruid, to.remote, &id,
			  err);
	if (st == MF_OK) {
		if (mf_store_moved(m->id, to.id, id) < 0)
			st = MF_TEMP;
		else if ((e->ops->caps & MF_CAP_GLOBAL_IDS) &&
			 mf_store_merge_duplicate(m->id) < 0)
			st = MF_TEMP;
	} else if (st == MF_GONE) {
		/* Moved before a crash, or expunged by someone: match it */
		mf_store_server_gone(m->id);
		st = MF_OK;
	}
out:
	free(id);
	mf_folder_clear(&from);
	mf_folder_clear(&to);
	return st;
}

static enum mf_status run_expunge(struct mf_engine *e, struct mf_message *m,
				  char **err)
{
	struct mf_folder rf;
	enum mf_status st;

	if (!m->ruid && m->folder) {
		/*
		 * Where the server has it is unknown (a move or upload whose
		 * answer was lost): a listing of its folder finds it.
		 */
		int64_t id = m->id;

		st = sync_one(e, m->folder);
		if (st != MF_OK)
			return st;
		mf_message_clear(m);
		if (mf_store_message_get(id, m) < 0)
			return MF_OK;
	}
	if (!m->ruid) {
		mf_store_expunged(m->id);
		return MF_OK;
	}
	memset(&rf, 0, sizeof(rf));
	if (mf_store_folder_get(m->rfolder, &rf) < 0 || !rf.remote) {
		mf_folder_clear(&rf);
		mf_store_expunged(m->id);
		return MF_OK;
	}
	st = e->ops->expunge(e->main_be, rf.remote, m->ruid, err);
	mf_folder_clear(&rf);
	if (st == MF_OK || st == MF_GONE) {
		if (mf_store_expunged(m->id) < 0)
			return MF_TEMP;
		return MF_OK;
	}
	return st;
}

static enum mf_status run_folder_op(struct mf_engine *e,
				    const struct mf_queue_entry *q, char **err)
{
	struct mf_folder f;
	char *remote = NULL;
	enum mf_status st = MF_OK;

	memset(&f, 0, sizeof(f));
	if (mf_store_folder_get(q->folder, &f) < 0)
		return MF_OK;
	switch (q->op) {
	case MF_OP_MKDIR:
		if (f.remote)
			break;
		st = e->ops->create_folder(e->main_be, f.path, &remote, err);
		if (st == MF_OK && mf_store_folder_created(f.id, remote) < 0)
			st = MF_TEMP;
		break;
	case MF_OP_RMDIR: {
		const char *name = q->arg ? q->arg : f.remote;

		if (!name)
			break;
		st = e->ops->delete_folder(e->main_be, name, err);
		if (st == MF_GONE)
			st = MF_OK;
		if (st == MF_OK && mf_store_folder_deleted(f.id) < 0)
			st = MF_TEMP;
		break;
	}
	case MF_OP_RENAME:
		if (!q->arg)
			break;
		st = e->ops->rename_folder(e->main_be, q->arg, f.path, &remote,
					   err);
		if (st == MF_OK && mf_store_folder_renamed(f.id, remote) < 0)
			st = MF_TEMP;
		break;
	default:
		break;
	}
	free(remote);
	mf_folder_clear(&f);
	return st;
}

static void remember_failure(struct mf_engine *e,
			     const struct mf_queue_entry *q, const char *err)
{
	static const char *const ops[] = {
		[MF_OP_FLAGS] = "flags", [MF_OP_APPEND] = "upload",
		[MF_OP_MOVE] = "move", [MF_OP_EXPUNGE] = "delete",
		[MF_OP_MKDIR] = "create folder", [MF_OP_RMDIR] = "delete folder",
		[MF_OP_RENAME] = "rename folder",
	};
	const char *op = q->op > 0 && q->op <= MF_OP_RENAME ? ops[q->op]
							   : "operation";
	char when[32];
	time_t now = time(NULL);
	struct tm tm;
	unsigned int slot;

	localtime_r(&now, &tm);
	strftime(when, sizeof(when), "%F %T", &tm);
	pthread_mutex_lock(&e->lock);
	slot = e->nfailures++ % FAILURES_KEPT;
	free(e->failures[slot]);
	e->failures[slot] = xasprintf("%s %s (message %lld, folder %lld): %s",
				      when, op, (long long)q->message,
				      (long long)q->folder, err);
	pthread_mutex_unlock(&e->lock);
}

/*
 * Run queue entries that are due. Returns the time (ms) at which the
 * next one is due, 0 when the queue is empty, or -1 when the connection
 * failed (the caller backs off).
 */
static int64_t drain_queue(struct mf_engine *e)
{
	for (;;) {
		struct mf_queue_entry q;
		struct mf_message m;
		enum mf_status st;
		char *err = NULL;

		if (stopping(e))
			return 0;
		memset(&q, 0, sizeof(q));
		if (mf_store_queue_first(e->acct->name, &q) < 0)
			return 0;
		if (q.next_try > now_ms()) {
			int64_t due = q.next_try;
			mf_queue_entry_clear(&q);
			return due;
		}
		if (mf_store_queue_attempt(q.id) < 0) {
			mf_queue_entry_clear(&q);
			return -1;
		}
		memset(&m, 0, sizeof(m));
		if (q.message && mf_store_message_get(q.message, &m) < 0) {
			mf_store_queue_done(q.id);
			mf_queue_entry_clear(&q);
			continue;
		}
		switch (q.op) {
		case MF_OP_FLAGS:
			st = run_flags(e, &q, &m, &err);
			break;
		case MF_OP_APPEND:
			st = run_append(e, &q, &m, &err);
			break;
		case MF_OP_MOVE:
			st = run_move(e, &q, &m, &err);
			break;
		case MF_OP_EXPUNGE:
			st = run_expunge(e, &m, &err);
			break;
		default:
			st = run_folder_op(e, &q, &err);
			break;
		}
		if (st == MF_REQUEUE) {
			mf_debug(MF_DBG_QUEUE, "%s: operation %d waits for "
				 "its folder", e->acct->name, q.op);
			mf_store_queue_requeue(q.id);
			free(err);
			mf_message_clear(&m);
			mf_queue_entry_clear(&q);
			continue;
		}
		switch (st) {
		case MF_OK:
			mf_store_queue_done(q.id);
			break;
		case MF_TEMP:
		case MF_AUTH:
		case MF_CANCELED:
			mf_store_queue_retry(q.id,
					     now_ms() + backoff_ms(q.attempts +
								   1),
					     err ? err : mf_status_str(st));
			if (err || st != MF_TEMP)
				mf_debug(MF_DBG_QUEUE,
					 "%s: will retry operation %d: %s",
					 e->acct->name, q.op,
					 err ? err : mf_status_str(st));
			break;
		default:
			mf_store_queue_failed(&q, err ? err
						      : mf_status_str(st));
			remember_failure(e, &q, err ? err : mf_status_str(st));
			break;
		}
		free(err);
		mf_message_clear(&m);
		mf_queue_entry_clear(&q);
		if (st == MF_TEMP || st == MF_AUTH || st == MF_CANCELED)
			return -1;
	}
}

/* ---- threads ---- */

static void *engine_main(void *arg)
{
	struct mf_engine *e = arg;
	int64_t next_full = 0;
	int failures = 0;
	bool first = true;

	mf_store_thread_bulk();
	while (!stopping(e)) {
		int64_t now = now_ms(), wake, qdue;
		bool inbox;
		enum mf_status st = MF_OK;
		struct timespec ts;

		if (now >= next_full) {
			/*
			 * Probe even on the first sync after a mount: a folder
			 * whose cursor the listing confirms is unchanged needs
			 * no SELECT (a remount of 75 folders: one LIST instead
			 * of 75 SELECTs). A replayed APPEND syncs its folder
			 * itself before it looks for the upload.
			 */
			bool listing = first &&
				       !mf_store_account_listed(e->acct->name);
			int64_t t0 = mf_mono_ms();

			st = sync_all(e, true, listing);
			if (listing && st == MF_OK)
				mf_notice("%s: first listing done in %lld ms",
					  e->acct->name,
					  (long long)(mf_mono_ms() - t0));
			else if (listing && st != MF_CANCELED) {
				/* Not "folder 3 of 9" while it waits. */
				char *was = mf_engine_state(e);

				if (strncmp(was, "first listing:", 14) == 0)
					set_state(e, "first listing interrupted "
						  "(%s); will retry",
						  mf_status_str(st));
				free(was);
			}
			pthread_mutex_lock(&e->lock);
			if (!e->first_sync_done) {
				e->first_sync_done = true;
				pthread_cond_broadcast(&e->cond);
			}
			pthread_mutex_unlock(&e->lock);
			if (st == MF_OK) {
				pthread_mutex_lock(&e->lock);
				e->last_sync_ns = mf_now_ns();
				pthread_mutex_unlock(&e->lock);
				prefetch_rearm(e);
				if (first || failures)
					set_state(e, "connected, in sync");
				first = false;
				failures = 0;
				next_full = now_ms() +
					    (int64_t)e->acct->poll_interval *
						    1000;
			} else if (st != MF_CANCELED) {
				failures++;
				next_full = now_ms() + MF_MIN(backoff_ms(
							      failures),
							      (int64_t)e->acct
									      ->poll_interval *
								      1000);
			}
		}
		pthread_mutex_lock(&e->lock);
		inbox = e->inbox_changed;
		e->inbox_changed = false;
		e->kicked = false;
		pthread_mutex_unlock(&e->lock);
		if (inbox && !first) {
			char *remote;
			int64_t id = inbox_folder(e, &remote);

			free(remote);
			if (id && sync_one(e, id) == MF_OK)
				prefetch_rearm(e);
		}
		/* The first full sync has to finish first (replay rule). */
		qdue = first ? 0 : drain_queue(e);

		wake = next_full;
		if (qdue > 0)
			wake = MF_MIN(wake, qdue);
		if (qdue < 0)
			wake = MF_MIN(wake, now_ms() + backoff_ms(++failures));
		now = now_ms();
		pthread_mutex_lock(&e->lock);
		if (!e->stop && !e->kicked && !e->inbox_changed && wake > now) {
			int64_t abs_ns = mf_now_ns() +
					 (wake - now) * (int64_t)1000000;
			ts.tv_sec = abs_ns / 1000000000;
			ts.tv_nsec = abs_ns % 1000000000;
			pthread_cond_timedwait(&e->cond, &e->lock, &ts);
		}
		pthread_mutex_unlock(&e->lock);
	}
	return NULL;
}

static void *engine_push(void *arg)
{
	struct mf_engine *e = arg;
	int failures = 0;

	while (!stopping(e)) {
		char *remote = NULL, *err = NULL;
		bool changed = false;
		enum mf_status st;

		if (!inbox_folder(e, &remote)) {
			if (nap(e, &e->cond, 1000))
				break;
			continue;
		}
		st = e->ops->wait_push(e->push_be, remote, PUSH_TIMEOUT_MS,
				       &changed, &err);
		free(remote);
		if (st == MF_OK) {
			failures = 0;
			if (changed) {
				pthread_mutex_lock(&e->lock);
				e->inbox_changed = true;
				pthread_cond_broadcast(&e->cond);
				pthread_mutex_unlock(&e->lock);
			}
		} else if (st != MF_CANCELED) {
			mf_debug(MF_DBG_SYNC, "%s: push: %s", e->acct->name,
				 err ? err : mf_status_str(st));
			failures++;
			free(err);
			if (nap(e, &e->push_cond, backoff_ms(failures)))
				break;
			continue;
		}
		free(err);
	}
	return NULL;
}

static int fetch_body(struct mf_engine *e, struct mf_backend *be,
		      int64_t msg_id)
{
	struct mf_message m;
	struct mf_folder rf;
	char hash[MF_BLOB_HASH_LEN + 1];
	char *path = NULL, *err = NULL;
	uint64_t size = 0;
	enum mf_status st;
	bool size_changed = false;
	int fd, ret;

	memset(&m, 0, sizeof(m));
	memset(&rf, 0, sizeof(rf));
	ret = mf_store_message_get(msg_id, &m);
	if (ret < 0)
		return ret;
	fd = m.blob ? mf_blob_open_sized(m.blob, m.size) : -ENOENT;
	if (fd >= 0) {
		mf_blob_close(fd);
		goto out;	/* fetched meanwhile */
	}
	if (!m.ruid || mf_store_folder_get(m.rfolder, &rf) < 0 || !rf.remote) {
		ret = -EIO;
		goto out;
	}
	if (e->ops->caps & MF_CAP_GLOBAL_IDS) {
		/* The same message in another folder may have its body. */
		char *blob = NULL;
		struct stat bst;

		if (mf_store_sibling_blob(m.id, &blob) == 0 &&
		    (fd = mf_blob_open(blob)) >= 0) {
			ret = fstat(fd, &bst) < 0 ? -errno : 0;
			mf_blob_close(fd);
			if (ret == 0)
				ret = mf_store_set_blob(m.id, blob,
							(uint64_t)bst.st_size,
							&size_changed);
			free(blob);
			if (ret == 0)
				goto out;
		} else {
			free(blob);
		}
	}
	ret = mf_blob_tmp(&fd, &path);
	if (ret < 0) {
		mf_err("%s: cannot write to the cache: %s", e->acct->name,
		       strerror(-ret));
		goto out;
	}
	st = e->ops->fetch_body(be, rf.remote, m.ruid, fd, BODY_MAX_SIZE,
				&size, &err);
	if (st != MF_OK) {
		mf_blob_abort(fd, path);
		mf_warn("%s: cannot fetch %s: %s", e->acct->name, m.name,
			err ? err : mf_status_str(st));
		ret = st == MF_GONE ? -ENOENT : -EIO;
		goto out;
	}
	ret = mf_blob_commit_fetched(fd, path, hash, &size);
	if (ret < 0) {
		mf_err("%s: cannot store the body of %s: %s", e->acct->name,
		       m.name, strerror(-ret));
		goto out;
	}
	ret = mf_store_set_blob(m.id, hash, size, &size_changed);
out:
	free(err);
	free(path);
	mf_folder_clear(&rf);
	mf_message_clear(&m);
	return ret;
}

/* prefetch_max_age: the oldest date prefetched (seconds), or 0. */
static int64_t prefetch_min_date(const struct mf_engine *e)
{
	if (!e->acct->prefetch_max_age)
		return 0;
	return mf_now_ns() / 1000000000 -
	       (int64_t)e->acct->prefetch_max_age * 86400;
}

/* Is a user's read waiting for a fetch thread? */
static bool reads_waiting(struct mf_engine *e)
{
	bool waiting;

	pthread_mutex_lock(&e->lock);
	waiting = e->fetch_head != NULL;
	pthread_mutex_unlock(&e->lock);
	return waiting;
}

/*
 * Prefetch, under e->lock: is a body waiting to be fetched ahead of
 * reads? Refills the batch from the store when it runs out.
 */
static bool prefetch_pending(struct mf_engine *e)
{
	unsigned int n = 0;

	if (e->prefetch_pos < e->prefetch_n)
		return true;
	if (e->prefetch_done)
		return false;
	if (mf_blob_room() == 0) {
		/* The cache is full: prefetch waits for the next sync. */
		e->prefetch_done = true;
		e->prefetch_after = 0;
		return false;
	}
	mf_store_prefetch_batch(e->acct->name,
				e->acct->prefetch == MF_PREFETCH_NEW,
				e->acct->prefetch_max_size,
				prefetch_min_date(e),
				e->prefetch_after, PREFETCH_BATCH,
				e->prefetch_ids, &n);
	e->prefetch_n = n;
	e->prefetch_pos = 0;
	if (n == 0) {
		e->prefetch_done = true;
		e->prefetch_after = 0;
		return false;
	}
	e->prefetch_after = e->prefetch_ids[n - 1];
	return true;
}

static int64_t prefetch_next(struct mf_engine *e)
{
	if (!prefetch_pending(e))
		return 0;
	return e->prefetch_ids[e->prefetch_pos++];
}

/* After a sync new bodies may be wanted: look again. */
static void prefetch_rearm(struct mf_engine *e)
{
	if (e->acct->prefetch == MF_PREFETCH_NONE)
		return;
	pthread_mutex_lock(&e->lock);
	if (e->prefetch_done) {
		e->prefetch_done = false;
		pthread_cond_broadcast(&e->fetch_cond);
	}
	pthread_mutex_unlock(&e->lock);
}

/* ---- prefetch in pipelined requests ---- */

struct chunk_body {
	int64_t msg;
	char *ruid;		/* owned */
	int fd;
	char *path;		/* owned: blob temp file */
	bool stored;
};

struct chunk_ctx {
	struct mf_engine *e;
	struct chunk_body *bodies;
	unsigned int n;
	unsigned int stored;
};

static struct chunk_body *chunk_find(struct chunk_ctx *cc, const char *ruid)
{
	for (unsigned int i = 0; i < cc->n; i++) {
		if (strcmp(cc->bodies[i].ruid, ruid) == 0)
			return &cc->bodies[i];
	}
	return NULL;
}

static int chunk_open(void *ctx, const char *id, int *fd_r)
{
	struct chunk_body *b = chunk_find(ctx, id);
	int ret;

	if (!b || b->fd >= 0)
		return -ENOENT;
	ret = mf_blob_tmp(&b->fd, &b->path);
	if (ret < 0)
		return ret;
	*fd_r = b->fd;
	return 0;
}

static void chunk_done(void *ctx, const char *id, enum mf_status st,
		       uint64_t size)
{
	struct chunk_ctx *cc = ctx;
	struct chunk_body *b = chunk_find(cc, id);
	char hash[MF_BLOB_HASH_LEN + 1];
	bool changed;

	if (!b || b->fd < 0)
		return;
	if (st == MF_OK &&
	    mf_blob_commit_fetched(b->fd, b->path, hash, &size) == 0) {
		if (mf_store_set_blob(b->msg, hash, size, &changed) == 0) {
			b->stored = true;
			cc->stored++;
		}
	} else if (st != MF_OK) {
		mf_blob_abort(b->fd, b->path);
	}
	b->fd = -1;
}

/* Fetch bodies of one server folder: ids[] of messages in it. */
static void prefetch_folder(struct mf_engine *e, struct mf_backend *be,
			    struct chunk_ctx *cc, const char *remote)
{
	struct mf_body_sink sink = { chunk_open, chunk_done, cc };
	const char **ids = xcalloc(cc->n, sizeof(*ids));
	char *err = NULL;
	enum mf_status st;

	for (unsigned int i = 0; i < cc->n; i++)
		ids[i] = cc->bodies[i].ruid;
	st = e->ops->fetch_bodies(be, remote, ids, cc->n, BODY_MAX_SIZE,
				  &sink, &err);
	if (st != MF_OK && st != MF_CANCELED)
		mf_debug(MF_DBG_SYNC, "%s: prefetch from %s: %s",
			 e->acct->name, remote,
			 err ? err : mf_status_str(st));
	for (unsigned int i = 0; i < cc->n; i++) {
		/* Bodies the backend opened but never finished. */
		if (cc->bodies[i].fd >= 0) {
			mf_blob_abort(cc->bodies[i].fd, cc->bodies[i].path);
			cc->bodies[i].fd = -1;
		}
	}
	free(err);
	free(ids);
}

/*
 * Prefetch the bodies of ids[] (message ids), one request per server
 * folder where the backend can pipeline, else one by one. Returns how
 * many bodies were stored.
 */
static unsigned int prefetch_chunk(struct mf_engine *e, struct mf_backend *be,
				   const int64_t *ids, unsigned int n)
{
	struct mf_message *msgs = xcalloc(n ? n : 1, sizeof(*msgs));
	bool *done = xcalloc(n ? n : 1, sizeof(*done));
	uint64_t room = mf_blob_room();
	unsigned int stored = 0;

	for (unsigned int i = 0; i < n; i++) {
		if (mf_store_message_get(ids[i], &msgs[i]) < 0 ||
		    !msgs[i].ruid || msgs[i].blob)
			done[i] = true;
		else if (msgs[i].size > room)
			done[i] = true;	/* prefetch never makes the cache
					   evict; a later round retries */
		else if (room != UINT64_MAX)
			room -= msgs[i].size;
	}
	for (unsigned int i = 0; i < n; i++) {
		struct chunk_ctx cc = { .e = e };
		struct mf_folder rf;

		if (done[i])
			continue;
		/*
		 * A user's read goes first: leave the rest of the chunk to
		 * a later round (the batch is read again after a sync).
		 */
		if (e->nfetch == 1 && reads_waiting(e))
			break;
		if (!e->ops->fetch_bodies) {
			done[i] = true;
			if (fetch_body(e, be, ids[i]) == 0)
				stored++;
			continue;
		}
		/* Every message of the chunk in the same server folder. */
		cc.bodies = xcalloc(n, sizeof(*cc.bodies));
		for (unsigned int j = i; j < n; j++) {
			if (done[j] || msgs[j].rfolder != msgs[i].rfolder)
				continue;
			done[j] = true;
			cc.bodies[cc.n].msg = msgs[j].id;
			cc.bodies[cc.n].ruid = xstrdup(msgs[j].ruid);
			cc.bodies[cc.n].fd = -1;
			cc.n++;
		}
		memset(&rf, 0, sizeof(rf));
		if (mf_store_folder_get(msgs[i].rfolder, &rf) == 0 &&
		    rf.remote && !stopping(e))
			prefetch_folder(e, be, &cc, rf.remote);
		stored += cc.stored;
		for (unsigned int j = 0; j < cc.n; j++) {
			free(cc.bodies[j].ruid);
			free(cc.bodies[j].path);
		}
		free(cc.bodies);
		mf_folder_clear(&rf);
	}
	for (unsigned int i = 0; i < n; i++)
		mf_message_clear(&msgs[i]);
	free(msgs);
	free(done);
	return stored;
}

struct fetch_thread_arg {
	struct mf_engine *e;
	unsigned int idx;
};

static void *engine_fetch(void *arg)
{
	struct fetch_thread_arg *fa = arg;
	struct mf_engine *e = fa->e;
	struct mf_backend *be = e->fetch_be[fa->idx];
	bool prefetcher = (fa->idx > 0 || e->nfetch == 1) &&
			  e->acct->prefetch != MF_PREFETCH_NONE;

	free(fa);
	mf_store_thread_relaxed();	/* writes only body cache rows */
	for (;;) {
		struct fetch_req *r;
		int ret;

		pthread_mutex_lock(&e->lock);
		while (!e->stop && !e->fetch_head &&
		       !(prefetcher && prefetch_pending(e)))
			pthread_cond_wait(&e->fetch_cond, &e->lock);
		if (e->stop && !e->fetch_head) {
			pthread_mutex_unlock(&e->lock);
			break;
		}
		if (!e->fetch_head) {
			int64_t ids[PREFETCH_CHUNK];
			unsigned int n = 0, got;

			/*
			 * With one connection for reads and prefetch, a
			 * chunk is what a read may wait behind: keep it
			 * short.
			 */
			while (n < (e->nfetch == 1 ? PREFETCH_CHUNK_SHARED
						   : PREFETCH_CHUNK)) {
				int64_t id = prefetch_next(e);
				if (id <= 0)
					break;
				ids[n++] = id;
			}
			pthread_mutex_unlock(&e->lock);
			got = prefetch_chunk(e, be, ids, n);
			pthread_mutex_lock(&e->lock);
			e->prefetched += got;
			e->prefetched_total += got;
			/* The last chunk is in: say so once. */
			if (e->prefetch_done && e->prefetched) {
				mf_info("%s: prefetch done (%llu bodies)",
					e->acct->name,
					(unsigned long long)e->prefetched);
				e->prefetched = 0;
			}
			pthread_mutex_unlock(&e->lock);
			continue;
		}
		r = e->fetch_head;
		e->fetch_head = r->next;
		if (!e->fetch_head)
			e->fetch_tail = NULL;
		pthread_mutex_unlock(&e->lock);

		ret = stopping(e) ? -EIO : fetch_body(e, be, r->msg_id);
		r->cb(r->ctx, ret);
		free(r);
	}
	return NULL;
}

/* ---- public ---- */

void mf_engine_fetch(struct mf_engine *e, int64_t msg_id, mf_fetch_cb *cb,
		     void *ctx)
{
	struct fetch_req *r = xcalloc(1, sizeof(*r));

	r->msg_id = msg_id;
	r->cb = cb;
	r->ctx = ctx;
	pthread_mutex_lock(&e->lock);
	if (e->stop) {
		pthread_mutex_unlock(&e->lock);
		free(r);
		cb(ctx, -EIO);
		return;
	}
	if (e->fetch_tail)
		e->fetch_tail->next = r;
	else
		e->fetch_head = r;
	e->fetch_tail = r;
	pthread_cond_signal(&e->fetch_cond);
	pthread_mutex_unlock(&e->lock);
}

struct held_ctx {
	struct mf_buf *out;
	const char *account;
	unsigned int n;
};

static void held_line(void *ctx, const char *path, const char *why)
{
	struct held_ctx *h = ctx;

	mf_buf_printf(h->out, "  held back in %s: %s\n"
		      "    to apply what the server says: "
		      "mount.mailfs --accept MOUNTPOINT %s '%s'\n",
		      path[0] ? path : "(account)", why, h->account, path);
	h->n++;
}

static void append_age(struct mf_buf *out, int64_t then_ns)
{
	int64_t s = (mf_now_ns() - then_ns) / 1000000000;

	if (s < 120)
		mf_buf_printf(out, "%lld s", (long long)s);
	else if (s < 7200)
		mf_buf_printf(out, "%lld min", (long long)(s / 60));
	else
		mf_buf_printf(out, "%lld h", (long long)(s / 3600));
}

void mf_engine_status(struct mf_engine *e, struct mf_buf *out)
{
	struct mf_queue_stats qs;
	struct held_ctx h = { out, e->acct->name, 0 };
	struct mf_account_stats as;
	int64_t last;
	uint64_t prefetched;
	unsigned int nfail;

	pthread_mutex_lock(&e->lock);
	mf_buf_printf(out, "account %s (%s %s): %s\n", e->acct->name,
		      e->acct->type,
		      e->acct->tunnel ? "tunnel"
		      : e->acct->host ? e->acct->host
		      : e->acct->user ? e->acct->user : "-",
		      e->state ? e->state : "starting");
	last = e->last_sync_ns;
	prefetched = e->prefetched_total;
	nfail = e->nfailures;
	pthread_mutex_unlock(&e->lock);
	mf_buf_appends(out, "  last complete sync: ");
	if (last) {
		append_age(out, last);
		mf_buf_appends(out, " ago\n");
	} else {
		mf_buf_appends(out, "not yet\n");
	}
	if (mf_store_queue_stats(e->acct->name, &qs) == 0) {
		if (qs.length == 0) {
			mf_buf_appends(out, "  queue: empty (every change is "
				       "on the server)\n");
		} else {
			mf_buf_printf(out, "  queue: %llu change%s waiting, "
				      "oldest ", (unsigned long long)qs.length,
				      qs.length == 1 ? "" : "s");
			append_age(out, qs.oldest_ns);
			mf_buf_appends(out, "\n");
			if (qs.last_error)
				mf_buf_printf(out, "    retrying (attempt %d): "
					      "%s\n", qs.attempts,
					      qs.last_error);
		}
		free(qs.last_error);
	}
	mf_store_held_folders(e->acct->name, held_line, &h);
	if (mf_store_account_stats(e->acct->name,
				   e->acct->prefetch == MF_PREFETCH_NEW,
				   &as) == 0) {
		mf_buf_printf(out, "  cache: %llu of %llu bodies, %llu bytes"
			      "\n", (unsigned long long)as.cached,
			      (unsigned long long)as.messages,
			      (unsigned long long)as.cached_bytes);
		if (e->acct->prefetch != MF_PREFETCH_NONE)
			mf_buf_printf(out, "  prefetch (%s): %llu of %llu "
				      "bodies cached, %llu left; %llu "
				      "fetched by this mount\n",
				      e->acct->prefetch == MF_PREFETCH_ALL
					      ? "all" : "new",
				      (unsigned long long)(as.prefetch_total -
							   as.prefetch_left),
				      (unsigned long long)as.prefetch_total,
				      (unsigned long long)as.prefetch_left,
				      (unsigned long long)prefetched);
	}
	pthread_mutex_lock(&e->lock);
	if (nfail) {
		mf_buf_printf(out, "  failed for good: %u (the latest "
			      "below)\n", nfail);
		for (unsigned int i = 0; i < MF_MIN(nfail, FAILURES_KEPT);
		     i++) {
			unsigned int slot = (nfail - 1 - i) % FAILURES_KEPT;

			mf_buf_printf(out, "    %s\n", e->failures[slot]);
		}
	}
	pthread_mutex_unlock(&e->lock);
}

bool mf_engine_wait_first_sync(struct mf_engine *e, int64_t timeout_ms)
{
	int64_t end_ns = mf_now_ns() + timeout_ms * 1000000;
	struct timespec ts = { end_ns / 1000000000, end_ns % 1000000000 };
	bool done;

	pthread_mutex_lock(&e->lock);
	while (!e->first_sync_done && !e->stop &&
	       pthread_cond_timedwait(&e->cond, &e->lock, &ts) == 0)
		;
	done = e->first_sync_done;
	pthread_mutex_unlock(&e->lock);
	return done;
}

void mf_engine_kick(struct mf_engine *e)
{
	pthread_mutex_lock(&e->lock);
	e->kicked = true;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

struct mf_engine *mf_engine_find(const char *account)
{
	struct mf_engine *e;

	pthread_mutex_lock(&registry_lock);
	for (e = registry; e; e = e->next) {
		if (strcmp(e->acct->name, account) == 0)
			break;
	}
	pthread_mutex_unlock(&registry_lock);
	return e;
}

const struct mf_account *mf_engine_account(struct mf_engine *e)
{
	return e->acct;
}

int mf_engine_start(const struct mf_config *cfg,
		    const struct mf_account *acct, struct mf_engine **e_r,
		    char **error_r)
{
	struct mf_engine *e;
	const struct mf_backend_ops *ops = mf_backend_lookup(acct->type);
	int ret;

	if (!ops) {
		*error_r = xasprintf("account %s: unknown type \"%s\"",
				     acct->name, acct->type);
		return -EINVAL;
	}
	e = xcalloc(1, sizeof(*e));
	e->cfg = cfg;
	e->acct = acct;
	e->ops = ops;
	e->nfetch = MF_MAX(1, MF_MIN(acct->max_connections,
				     MAX_FETCH_THREADS));
	if (ops->max_sessions) {
		/* The server's limit counts every session: main, push, and
		   the fetchers. */
		unsigned int others = ops->wait_push ? 2 : 1;
		unsigned int cap = ops->max_sessions > others
					   ? ops->max_sessions - others
					   : 1;

		e->nfetch = MF_MIN(e->nfetch, cap);
	}
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	pthread_cond_init(&e->fetch_cond, NULL);
	pthread_cond_init(&e->push_cond, NULL);
	ret = ops->create(acct, &e->main_be, error_r);
	if (ret == 0 && ops->wait_push)
		ret = ops->create(acct, &e->push_be, error_r);
	for (unsigned int i = 0; i < e->nfetch && ret == 0; i++)
		ret = ops->create(acct, &e->fetch_be[i], error_r);
	if (ret < 0) {
		mf_engine_stop(&e);
		return ret;
	}
	set_state(e, "connecting to %s", acct->host ? acct->host : "server");
	pthread_create(&e->main_thread, NULL, engine_main, e);
	if (e->push_be)
		pthread_create(&e->push_thread, NULL, engine_push, e);
	for (unsigned int i = 0; i < e->nfetch; i++) {
		struct fetch_thread_arg *fa = xmalloc(sizeof(*fa));

		fa->e = e;
		fa->idx = i;
		pthread_create(&e->fetch_thread[i], NULL, engine_fetch, fa);
	}
	e->nthreads_started = 1;
	pthread_mutex_lock(&registry_lock);
	e->next = registry;
	registry = e;
	pthread_mutex_unlock(&registry_lock);
	*e_r = e;
	return 0;
}

/* Stop the threads and close the sessions; the struct stays valid. */
static void engine_halt(struct mf_engine *e)
{
	struct mf_engine **pp;

	pthread_mutex_lock(&registry_lock);
	for (pp = &registry; *pp; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);

	pthread_mutex_lock(&e->lock);
	e->stop = true;
	pthread_cond_broadcast(&e->cond);
	pthread_cond_broadcast(&e->fetch_cond);
	pthread_cond_broadcast(&e->push_cond);
	pthread_mutex_unlock(&e->lock);
	if (e->main_be)
		e->ops->interrupt(e->main_be);
	if (e->push_be)
		e->ops->interrupt(e->push_be);
	for (unsigned int i = 0; i < e->nfetch; i++) {
		if (e->fetch_be[i])
			e->ops->interrupt(e->fetch_be[i]);
	}
	if (e->nthreads_started) {
		pthread_join(e->main_thread, NULL);
		if (e->push_be)
			pthread_join(e->push_thread, NULL);
		for (unsigned int i = 0; i < e->nfetch; i++)
			pthread_join(e->fetch_thread[i], NULL);
	}
	e->nthreads_started = 0;
	if (e->main_be)
		e->ops->destroy(e->main_be);
	if (e->push_be)
		e->ops->destroy(e->push_be);
	for (unsigned int i = 0; i < e->nfetch; i++) {
		if (e->fetch_be[i])
			e->ops->destroy(e->fetch_be[i]);
		e->fetch_be[i] = NULL;
	}
	e->main_be = NULL;
	e->push_be = NULL;
}

static void engine_free(struct mf_engine *e)
{
	free(e->state);
	for (unsigned int i = 0; i < FAILURES_KEPT; i++)
		free(e->failures[i]);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	pthread_cond_destroy(&e->fetch_cond);
	pthread_cond_destroy(&e->push_cond);
	free(e);
}

void mf_engine_stop(struct mf_engine **ep)
{
	struct mf_engine *e = *ep;

	if (!e)
		return;
	*ep = NULL;
	engine_halt(e);
	engine_free(e);
}

/* Engines stopped while the file system runs: freed at exit. */
static struct mf_engine *retired;	/* protected by registry_lock */

void mf_engine_retire(struct mf_engine **ep)
{
	struct mf_engine *e = *ep;

	if (!e)
		return;
	*ep = NULL;
	engine_halt(e);
	pthread_mutex_lock(&registry_lock);
	e->next = retired;
	retired = e;
	pthread_mutex_unlock(&registry_lock);
}

void mf_engine_free_retired(void)
{
	struct mf_engine *e;

	pthread_mutex_lock(&registry_lock);
	e = retired;
	retired = NULL;
	pthread_mutex_unlock(&registry_lock);
	while (e) {
		struct mf_engine *next = e->next;

		engine_free(e);
		e = next;
	}
}
