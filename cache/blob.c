/*
 * The content-addressed body store (see mf_blob.h).
 */
#include "blob_private.h"
#include "mf_blob.h"
#include "mf_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EVICT_INTERVAL_S 30	/* background pass (and access-time flush) */
#define EVICT_GRACE_S 10	/* a body used this recently stays */
#define EVICT_PAGE 128		/* candidates asked for at a time */
#define EVICT_KICK_MS 1000	/* passes new bodies start, at most */
#define PENDING_FLUSH 4096	/* records that make the thread flush early */
#define PENDING_MAX 65536	/* records kept at most; more are dropped */

struct open_blob {
	int fd;
	char hash[MF_BLOB_HASH_LEN + 1];
};

static struct {
	char *dir;	/* CACHE_DIR/blobs */
	char *tmp;	/* CACHE_DIR/tmp */

	/* Eviction (all protected by lock), when a limit is set. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool running;		/* the eviction thread is running */
	bool stop, kicked;
	pthread_t thread;
	uint64_t max_size;
	uint64_t total;		/* bytes of the files under dir */
	bool walked[256];	/* subdirectories counted into total */
	bool walk_done;
	uint64_t evicted;
	int64_t last_pass_ms;	/* monotonic: when the last pass ended */
	struct blob_rec *pending;	/* new bodies and accesses to record */
	unsigned int npending, pending_cap;
	struct open_blob *opens;	/* blobs open (mf_blob_open) */
	unsigned int nopen, open_cap;
} blob = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

static void *evict_main(void *arg);
static void flush_pending(void);
static void blob_added(const char *hash, uint64_t size, bool existed);
static void pending_add(const char *hash, uint64_t size);
static void open_add(int fd, const char *hash);

int mf_blob_init(const char *cache_dir, char **error_r)
{
	int ret;

	blob.dir = xasprintf("%s/blobs", cache_dir);
	blob.tmp = xasprintf("%s/tmp", cache_dir);
	ret = mf_mkdirs(blob.dir, 0700);
	if (ret == 0)
		ret = mf_mkdirs(blob.tmp, 0700);
	if (ret < 0) {
		*error_r = xasprintf("cannot create cache_dir %s: %s",
				     cache_dir, strerror(-ret));
		return ret;
	}
	chmod(cache_dir, 0700);
	return 0;
}

void mf_blob_deinit(void)
{
	bool running;

	pthread_mutex_lock(&blob.lock);
	running = blob.running;
	blob.stop = true;
	pthread_cond_broadcast(&blob.cond);
	pthread_mutex_unlock(&blob.lock);
	if (running) {
		pthread_join(blob.thread, NULL);
		flush_pending();	/* keep the last access times */
	}
	pthread_mutex_lock(&blob.lock);
	blob.running = false;
	blob.stop = false;
	free(blob.pending);
	free(blob.opens);
	blob.pending = NULL;
	blob.opens = NULL;
	blob.npending = blob.pending_cap = 0;
	blob.nopen = blob.open_cap = 0;
	pthread_mutex_unlock(&blob.lock);
	free(blob.dir);
	free(blob.tmp);
	blob.dir = NULL;
	blob.tmp = NULL;
}

int mf_blob_tmp(int *fd_r, char **path_r)
{
	char *path = xasprintf("%s/body.XXXXXX", blob.tmp);
	int fd = mkostemp(path, O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		/* The cache may have been deleted under us: recreate it. */
		if (e == ENOENT && mf_mkdirs(blob.tmp, 0700) == 0)
			fd = mkostemp(path, O_CLOEXEC);
		if (fd < 0) {
			free(path);
			return -e;
		}
	}
	*fd_r = fd;
	*path_r = path;
	return 0;
}

void mf_blob_abort(int fd, const char *path)
{
	if (fd >= 0)
		close(fd);
	unlink(path);
}

static char *blob_path(const char *hash)
{
	return xasprintf("%s/%.2s/%s", blob.dir, hash, hash + 2);
}

static int hash_fd(int fd, char *hash_r, uint64_t *size_r)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char buf[65536];
	uint64_t size = 0;
	off_t off = 0;
	int ret = 0;

	if (!ctx)
		return -ENOMEM;
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += n;
		size += (uint64_t)n;
	}
	if (ret == 0) {
		EVP_DigestFinal_ex(ctx, md, &mdlen);
		mf_hex(md, mdlen, hash_r);
		*size_r = size;
	}
	EVP_MD_CTX_free(ctx);
	return ret;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static int blob_commit(int fd, const char *path, char *hash_r,
		       uint64_t *size_r, bool durable)
{
	char *dest, *sub;
	struct stat st;
	bool existed;
	int ret;

	ret = hash_fd(fd, hash_r, size_r);
	if (ret == 0 && durable && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0) {
		unlink(path);
		return ret;
	}
	sub = xasprintf("%s/%.2s", blob.dir, hash_r);
	ret = mf_mkdirs(sub, 0700);
	dest = blob_path(hash_r);
	if (ret == 0) {
		/* Under the lock: the walk and eviction see it whole. */
		pthread_mutex_lock(&blob.lock);
		existed = stat(dest, &st) == 0;
		if (existed && !durable && (uint64_t)st.st_size == *size_r) {
			/* Keep the (maybe fsynced) copy we have. */
			unlink(path);
		} else if (rename(path, dest) < 0) {
			ret = -errno;
		} else if (blob.running) {
			blob_added(hash_r, *size_r, existed);
		}
		pthread_mutex_unlock(&blob.lock);
	}
	if (ret == 0 && durable)
		ret = fsync_dir(sub);
	if (ret < 0)
		unlink(path);
	free(sub);
	free(dest);
	return ret;
}

int mf_blob_commit(int fd, const char *path, char *hash_r, uint64_t *size_r)
{
	return blob_commit(fd, path, hash_r, size_r, true);
}

int mf_blob_commit_fetched(int fd, const char *path, char *hash_r,
			   uint64_t *size_r)
{
	return blob_commit(fd, path, hash_r, size_r, false);
}

int mf_blob_import(int src, char *hash_r, uint64_t *size_r)
{
	char buf[65536];
	char *path;
	off_t off = 0;
	int fd, ret;

	ret = mf_blob_tmp(&fd, &path);
	if (ret < 0)
		return ret;
	for (;;) {
		ssize_t n = pread(src, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		ret = mf_write_all(fd, buf, (size_t)n);
		if (ret < 0)
			break;
		off += n;
	}
	if (ret < 0) {
		mf_blob_abort(fd, path);
		free(path);
		return ret;
	}
	ret = mf_blob_commit(fd, path, hash_r, size_r);
	free(path);
	return ret;
}

int mf_blob_open(const char *hash)
{
	char *path;
	int fd;

	if (!hash || strlen(hash) != MF_BLOB_HASH_LEN)
		return -ENOENT;
	path = blob_path(hash);
	/* Under the lock: eviction never removes a body being opened. */
	pthread_mutex_lock(&blob.lock);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && blob.running) {
		open_add(fd, hash);
		pending_add(hash, BLOB_TOUCH_ONLY);
	}
	pthread_mutex_unlock(&blob.lock);
	free(path);
	/*
	 * No futimens() here: open() answers a FUSE request and must not
	 * write to the disk. Reads are recorded in the store above (batched);
	 * the walk of a cache made before that table falls back on the
	 * kernel's own atime (relatime), which is fine for a first order.
	 */
	if (fd < 0)
		return -errno;
	return fd;
}

int mf_blob_open_sized(const char *hash, uint64_t size)
{
	struct stat st;
	int fd = mf_blob_open(hash);

	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size) {
		/* Cut short by a crash before it reached the disk (see
		   mf_blob_commit_fetched): fetch it again. */
		mf_warn("cache: body %.12s has %lld bytes, not %llu: "
			"fetching it again", hash, (long long)st.st_size,
			(unsigned long long)size);
		mf_blob_close(fd);
		return -ENOENT;
	}
	return fd;
}

void mf_blob_close(int fd)
{
	if (fd < 0)
		return;
	pthread_mutex_lock(&blob.lock);
	for (unsigned int i = 0; i < blob.nopen; i++) {
		if (blob.opens[i].fd == fd) {
			blob.opens[i] = blob.opens[--blob.nopen];
			break;
		}
	}
	pthread_mutex_unlock(&blob.lock);
	close(fd);
}

/* ---- eviction ---- */

static int64_t now_s(void)
{
	return mf_now_ns() / 1000000000;
}

/* The store's size below which eviction stops (and prefetch may fill). */
static uint64_t low_mark(void)
{
	return blob.max_size - blob.max_size / 10;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool is_hash_tail(const char *name)
{
	if (strlen(name) != MF_BLOB_HASH_LEN - 2)
		return false;
	for (const char *p = name; *p; p++) {
		if (hex_digit(*p) < 0)
			return false;
	}
	return true;
}

/* Under lock: a record for the thread to write to the store. */
static void pending_add(const char *hash, uint64_t size)
{
	struct blob_rec *r;

	if (blob.npending >= PENDING_MAX)
		return;		/* only access times get lost */
	if (blob.npending == blob.pending_cap) {
		blob.pending_cap = blob.pending_cap ? 2 * blob.pending_cap
						    : 256;
		blob.pending = xrealloc(blob.pending, blob.pending_cap *
							      sizeof(*r));
	}
	r = &blob.pending[blob.npending++];
	memcpy(r->hash, hash, MF_BLOB_HASH_LEN + 1);
	r->size = size;
	r->atime = now_s();
	if (blob.npending == PENDING_FLUSH) {
		blob.kicked = true;
		pthread_cond_signal(&blob.cond);
	}
}

/* Under lock: a body was moved into the store. */
static void blob_added(const char *hash, uint64_t size, bool existed)
{
	int sub = hex_digit(hash[0]) * 16 + hex_digit(hash[1]);

	/* A subdirectory not walked yet: the walk counts it. */
	if (!existed && (blob.walk_done || (sub >= 0 && blob.walked[sub])))
		blob.total += size;
	pending_add(hash, size);
	if (blob.total > blob.max_size) {
		blob.kicked = true;
		pthread_cond_signal(&blob.cond);
	}
}

static void open_add(int fd, const char *hash)
{
	if (blob.nopen == blob.open_cap) {
		blob.open_cap = blob.open_cap ? 2 * blob.open_cap : 64;
		blob.opens = xrealloc(blob.opens,
				      blob.open_cap * sizeof(*blob.opens));
	}
	blob.opens[blob.nopen].fd = fd;
	memcpy(blob.opens[blob.nopen].hash, hash, MF_BLOB_HASH_LEN + 1);
	blob.nopen++;
}

/* Under lock: is the body open, or used since the last flush? */
static bool in_use(const char *hash)
{
	for (unsigned int i = 0; i < blob.nopen; i++) {
		if (strcmp(blob.opens[i].hash, hash) == 0)
			return true;
	}
	for (unsigned int i = 0; i < blob.npending; i++) {
		if (strcmp(blob.pending[i].hash, hash) == 0)
			return true;
	}
	return false;
}

/* By hash; a new body's record before accesses; the latest last. */
static int rec_cmp(const void *a, const void *b)
{
	const struct blob_rec *x = a, *y = b;
	int c = strcmp(x->hash, y->hash);

	if (c)
		return c;
	if ((x->size == BLOB_TOUCH_ONLY) != (y->size == BLOB_TOUCH_ONLY))
		return x->size == BLOB_TOUCH_ONLY ? 1 : -1;
	return (x->atime > y->atime) - (x->atime < y->atime);
}

/*
 * Write the records gathered since the last flush: one transaction, and
 * one row write per body however often it was read meanwhile.
 */
static void flush_pending(void)
{
	struct blob_rec *recs;
	unsigned int n, out = 0;

	pthread_mutex_lock(&blob.lock);
	recs = blob.pending;
	n = blob.npending;
	blob.pending = NULL;
	blob.npending = blob.pending_cap = 0;
	pthread_mutex_unlock(&blob.lock);
	if (n > 1)
		qsort(recs, n, sizeof(*recs), rec_cmp);
	for (unsigned int i = 0; i < n; i++) {
		if (out > 0 && strcmp(recs[out - 1].hash, recs[i].hash) == 0) {
			/* Same body: keep its size, take the latest time. */
			if (recs[i].atime > recs[out - 1].atime)
				recs[out - 1].atime = recs[i].atime;
			continue;
		}
		recs[out++] = recs[i];
	}
	meta_blob_record(recs, out);	/* failures are logged */
	free(recs);
}

/*
 * Learn what the store holds (a cache made before the limit, or by an
 * older mailfs, has no rows): count every body and give it a row, one
 * subdirectory at a time under the lock so that commits are counted
 * exactly once.
 */
static void walk_store(void)
{
	struct blob_rec *recs = NULL;
	unsigned int n = 0, cap = 0;

	for (int i = 0; i < 256; i++) {
		char *path = xasprintf("%s/%02x", blob.dir, i);
		bool stop;
		DIR *d;

		pthread_mutex_lock(&blob.lock);
		stop = blob.stop;
		d = stop ? NULL : opendir(path);
		for (struct dirent *de; d && (de = readdir(d));) {
			struct stat st;

			if (!is_hash_tail(de->d_name) ||
			    fstatat(dirfd(d), de->d_name, &st,
				    AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 1024;
				recs = xrealloc(recs, cap * sizeof(*recs));
			}
			snprintf(recs[n].hash, sizeof(recs[n].hash), "%02x%s",
				 i, de->d_name);
			recs[n].size = (uint64_t)st.st_size;
			recs[n].atime = st.st_atim.tv_sec;
			blob.total += (uint64_t)st.st_size;
			n++;
		}
		if (d)
			closedir(d);
		blob.walked[i] = true;
		pthread_mutex_unlock(&blob.lock);
		free(path);
		if (stop)
			break;
		if (n >= 2048 || i == 255) {
			meta_blob_record(recs, n);
			n = 0;
		}
	}
	free(recs);
	pthread_mutex_lock(&blob.lock);
	blob.walk_done = true;
	mf_debug(MF_DBG_STORE, "cache: %llu bytes of bodies cached, limit %llu",
		 (unsigned long long)blob.total,
		 (unsigned long long)blob.max_size);
	pthread_mutex_unlock(&blob.lock);
}

/* Is the store above its limit (and known)? Under lock. */
static bool over_limit(void)
{
	return blob.walk_done && !blob.stop && blob.total > blob.max_size;
}

/* Evict least recently used bodies until the store is below low_mark(). */
static void evict(void)
{
	struct blob_rec *cand = xcalloc(EVICT_PAGE, sizeof(*cand));
	struct blob_rec *gone = xcalloc(EVICT_PAGE, sizeof(*gone));
	char after_hash[MF_BLOB_HASH_LEN + 1] = "";
	int64_t after_atime = INT64_MIN;
	int64_t before = now_s() - EVICT_GRACE_S;
	uint64_t freed = 0, left;
	unsigned int count = 0;

	flush_pending();	/* access times first: they decide */
	for (;;) {
		unsigned int n = 0, ngone = 0;
		bool more;

		pthread_mutex_lock(&blob.lock);
		more = blob.walk_done && !blob.stop &&
		       blob.total > low_mark();
		pthread_mutex_unlock(&blob.lock);
		if (!more ||
		    meta_blob_candidates(after_atime, after_hash, before,
					 EVICT_PAGE, cand, &n) < 0 ||
		    n == 0)
			break;
		after_atime = cand[n - 1].atime;
		memcpy(after_hash, cand[n - 1].hash, sizeof(after_hash));
		pthread_mutex_lock(&blob.lock);
		for (unsigned int i = 0; i < n && blob.total > low_mark();
		     i++) {
			char *path;
			struct stat st;

			if (in_use(cand[i].hash))
				continue;
			path = blob_path(cand[i].hash);
			if (stat(path, &st) == 0 && unlink(path) == 0) {
				uint64_t sz = (uint64_t)st.st_size;

				blob.total -= sz < blob.total ? sz : blob.total;
				blob.evicted++;
				freed += sz;
				count++;
				gone[ngone++] = cand[i];
			} else if (errno == ENOENT) {
				gone[ngone++] = cand[i];	/* deleted */
			}
			free(path);
		}
		pthread_mutex_unlock(&blob.lock);
		meta_blob_forget(gone, ngone);
	}
	pthread_mutex_lock(&blob.lock);
	left = blob.total;
	pthread_mutex_unlock(&blob.lock);
	if (count)
		mf_info("cache: evicted %u bodies (%llu bytes); %llu bytes "
			"cached, cache_max_size %llu", count,
			(unsigned long long)freed, (unsigned long long)left,
			(unsigned long long)blob.max_size);
	free(cand);
	free(gone);
}

static void *evict_main(void *arg)
{
	(void)arg;
	walk_store();
	pthread_mutex_lock(&blob.lock);
	blob.kicked = true;	/* one pass right after the walk */
	while (!blob.stop) {
		int64_t now = mf_mono_ms(), wake;

		/*
		 * Kicked (a body landed past the limit): a pass a second at
		 * most, as each costs a store transaction. Over the limit
		 * with only fresh bodies: again after the grace period.
		 * Otherwise every EVICT_INTERVAL_S.
		 */
		if (blob.kicked)
			wake = blob.last_pass_ms + EVICT_KICK_MS;
		else if (over_limit())
			wake = blob.last_pass_ms + EVICT_GRACE_S * 1000;
		else
			wake = blob.last_pass_ms + EVICT_INTERVAL_S * 1000;
		if (wake > now) {
			struct timespec ts;
			int64_t ns;

			clock_gettime(CLOCK_REALTIME, &ts);
			ns = ts.tv_nsec + (wake - now) % 1000 * 1000000;
			ts.tv_sec += (wake - now) / 1000 + ns / 1000000000;
			ts.tv_nsec = ns % 1000000000;
			pthread_cond_timedwait(&blob.cond, &blob.lock, &ts);
			continue;	/* look again: kicked, stopped, due */
		}
		blob.kicked = false;
		pthread_mutex_unlock(&blob.lock);
		flush_pending();
		evict();
		pthread_mutex_lock(&blob.lock);
		blob.last_pass_ms = mf_mono_ms();
	}
	pthread_mutex_unlock(&blob.lock);
	return NULL;
}

int mf_blob_set_max_size(uint64_t max_size, char **error_r)
{
	int ret = 0;

	pthread_mutex_lock(&blob.lock);
	if (blob.running) {
		if (max_size)
			blob.max_size = max_size;
	} else if (max_size) {
		blob.max_size = max_size;
		blob.total = 0;
		blob.walk_done = false;
		memset(blob.walked, 0, sizeof(blob.walked));
		blob.running = true;
		if (pthread_create(&blob.thread, NULL, evict_main, NULL) != 0) {
			blob.running = false;
			*error_r = xstrdup("cannot start the cache eviction "
					   "thread");
			ret = -EAGAIN;
		}
	}
	pthread_mutex_unlock(&blob.lock);
	return ret;
}

uint64_t mf_blob_room(void)
{
	uint64_t room;

	pthread_mutex_lock(&blob.lock);
	if (!blob.running)
		room = UINT64_MAX;
	else if (!blob.walk_done || blob.total >= low_mark())
		room = 0;
	else
		room = low_mark() - blob.total;
	pthread_mutex_unlock(&blob.lock);
	return room;
}

void mf_blob_stats(struct mf_blob_stats *st)
{
	pthread_mutex_lock(&blob.lock);
	st->max_size = blob.running ? blob.max_size : 0;
	st->size = blob.total;
	st->evicted = blob.evicted;
	pthread_mutex_unlock(&blob.lock);
}
