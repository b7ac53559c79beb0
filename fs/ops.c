/*
 * The FUSE low-level operations.
 *
 * Every handler answers from the store (SQLite) and the blob store; none
 * touches the network. The one request that may need the network, open()
 * of a message whose body is not cached yet, hands its request to the
 * account's fetch threads and is answered later from there, or with EIO
 * by the reaper when fetch_timeout passes, or with EINTR when the caller
 * gives up (the fetch still lands in the cache).
 *
 * The tree:
 *   /                      accounts (configured ones)
 *   /ACCOUNT/...           folders, nested by the server's hierarchy
 *   /ACCOUNT/F/{cur,new,tmp}  the Maildir of a selectable folder
 *   /@VIEW/{cur,new,tmp}   client-side views (fs/views.c)
 * Inode numbers: see mf_store.h; views use MF_INO_VIEW_BASE and up, and
 * every request on those goes to views.c.
 */
#include "fs.h"
#include "views.h"
#include "mf_blob.h"
#include "mf_engine.h"
#include "mf_names.h"
#include "mf_store.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define DIR_OFF_BASE 16		/* readdir offsets above "." ".." cur new tmp */
#define ROOT_VIEW_OFF (1LL << 62)	/* the root's view entries */
#define MSGID_SCAN_BYTES (256 * 1024)	/* header bytes read for Message-ID */

static struct mf_fs_options fsopt;

/* An open file: a message body or a staging file being written. */
struct handle {
	int fd;
	int64_t msg;
	bool writable;		/* a tmp/ file being delivered */
	struct handle *prev, *next;	/* protected by handles_lock */
};

/*
 * Open handles, so that those the kernel never releases (files still
 * open at unmount) are closed and freed when the file system goes.
 */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle *handles;

static struct handle *handle_new(int fd, int64_t msg, bool writable)
{
	struct handle *h = xcalloc(1, sizeof(*h));

	h->fd = fd;
	h->msg = msg;
	h->writable = writable;
	pthread_mutex_lock(&handles_lock);
	h->next = handles;
	if (handles)
		handles->prev = h;
	handles = h;
	pthread_mutex_unlock(&handles_lock);
	return h;
}

static void handle_free(struct handle *h)
{
	pthread_mutex_lock(&handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&handles_lock);
	mf_blob_close(h->fd);	/* a body stays cached while open */
	free(h);
}

/* ---- pending opens (body fetches) ---- */

struct pending_open {
	pthread_mutex_t lock;
	fuse_req_t req;
	struct fuse_file_info fi;
	int64_t msg;
	int64_t deadline_ms;
	bool done;		/* protected by lock: replied */
	int refs;		/* protected by pending_lock */
	struct pending_open *next;	/* reaper list */
};

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pending_cond = PTHREAD_COND_INITIALIZER;
static struct pending_open *pending_list;	/* protected by pending_lock */
static bool reaper_stop;			/* protected by pending_lock */
static pthread_t reaper_thread;
static bool reaper_running;

static void pending_unref(struct pending_open *p)
{
	bool last;

	pthread_mutex_lock(&pending_lock);
	last = --p->refs == 0;
	pthread_mutex_unlock(&pending_lock);
	if (last) {
		pthread_mutex_destroy(&p->lock);
		free(p);
	}
}

static void pending_unlist(struct pending_open *p)
{
	struct pending_open **pp;

	pthread_mutex_lock(&pending_lock);
	for (pp = &pending_list; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			p->refs--;
			break;
		}
	}
	pthread_mutex_unlock(&pending_lock);
}

/* ---- attributes ---- */

void mf_fs_fill_dir(struct stat *st, uint64_t ino, int64_t mtime_ns,
		    nlink_t nlink)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = S_IFDIR | 0700;
	st->st_nlink = nlink;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = 4096;
	st->st_blksize = 4096;
	st->st_mtim.tv_sec = mtime_ns / 1000000000;
	st->st_mtim.tv_nsec = mtime_ns % 1000000000;
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
}

static unsigned int subdir_count(const struct mf_folder *f)
{
	unsigned int n = 0;

	for (int i = 0; i < 3; i++)
		n += (f->subdirs >> i) & 1;
	return n;
}

static bool folder_shows_subdir(const struct mf_folder *f, int sub)
{
	return (f->subdirs & (1u << (sub - 1))) != 0 &&
	       !(f->attrs & MF_FOLDER_NOSELECT) &&
	       f->state != MF_FOLDER_VIRTUAL;
}

/*
 * The config in force. SIGHUP swaps it (mf_fs_set_config); a replaced
 * config stays allocated until exit, so a reader never sees it freed.
 */
static const struct mf_config *cfg_now(void)
{
	return __atomic_load_n(&fsopt.cfg, __ATOMIC_ACQUIRE);
}

void mf_fs_set_config(const struct mf_config *cfg)
{
	__atomic_store_n(&fsopt.cfg, cfg, __ATOMIC_RELEASE);
}

static bool account_configured(const char *name)
{
	const struct mf_config *cfg = cfg_now();

	for (unsigned int i = 0; i < cfg->account_count; i++) {
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return true;
	}
	return false;
}

static bool folder_visible(const struct mf_folder *f)
{
	return f->state == MF_FOLDER_PRESENT ||
	       f->state == MF_FOLDER_CREATING ||
	       f->state == MF_FOLDER_VIRTUAL;
}

static void fill_message(struct stat *st, const struct mf_message *m)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = (ino_t)m->id;
	st->st_mode = S_IFREG | 0600;
	st->st_nlink = m->dir == MF_DIR_GONE ? 0 : (m->link_name ? 2 : 1);
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = (off_t)m->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((m->size + 511) / 512);
	st->st_mtim.tv_sec = m->internaldate;
	st->st_atim = st->st_mtim;
	st->st_ctim.tv_sec = m->ctime / 1000000000;
	st->st_ctim.tv_nsec = m->ctime % 1000000000;
	if (m->state == MF_MSG_TMP) {
		/* Being written: the staging file knows its size. */
		char *path = mf_store_staging_path(m->id);
		struct stat sst;

		if (stat(path, &sst) == 0) {
			st->st_size = sst.st_size;
			st->st_blocks = sst.st_blocks;
		}
		free(path);
	}
}

/*
 * How long the kernel may keep a message's attributes: not at all while
 * the size may change (a tmp/ file being written; a size the server only
 * estimated, fixed when open() fetches the body: fuse-prior-art.md §2.9).
 */
static double attr_timeout_of(const struct mf_message *m)
{
	if (m->state == MF_MSG_TMP || m->size_estimated)
		return 0;
	return fsopt.attr_timeout;
}

/* Attributes of any inode. Returns 0 or -errno; *timeout_r for replies. */
static int do_getattr(fuse_ino_t ino, struct stat *st, double *timeout_r)
{
	int64_t id;
	int sub;
	int ret;

	*timeout_r = fsopt.dir_attr_timeout;
	if (mf_views_ino(ino))
		return mf_views_getattr(ino, st);
	switch (mf_ino_decode(ino, &id, &sub)) {
	case MF_INO_KIND_ROOT:
		mf_fs_fill_dir(st, ino, 0,
			       2 + cfg_now()->account_count +
				       mf_views_count());
		return 0;
	case MF_INO_KIND_FOLDER:
	case MF_INO_KIND_SUBDIR: {
		struct mf_folder f;

		memset(&f, 0, sizeof(f));
		ret = mf_store_folder_get(id, &f);
		if (ret < 0)
			return ret;
		if (!folder_visible(&f) && f.parent != 0) {
			mf_folder_clear(&f);
			return -ENOENT;
		}
		if (sub == 0)
			mf_fs_fill_dir(st, ino, f.mtime[0],
				       2 + f.nchildren + subdir_count(&f));
		else
			mf_fs_fill_dir(st, ino, f.mtime[sub], 2);
		mf_folder_clear(&f);
		return 0;
	}
	case MF_INO_KIND_MESSAGE: {
		struct mf_message m;

		memset(&m, 0, sizeof(m));
		ret = mf_store_message_get(id, &m);
		if (ret < 0)
			return ret;
		fill_message(st, &m);
		*timeout_r = attr_timeout_of(&m);
		mf_message_clear(&m);
		return 0;
	}
	}
	return -ENOENT;
}

static void entry_from_message(const struct mf_message *m,
			       struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	fill_message(&e->attr, m);
	e->ino = (fuse_ino_t)m->id;
	e->attr_timeout = attr_timeout_of(m);
	e->entry_timeout = fsopt.entry_timeout;
}

void mf_fs_message_entry(const struct mf_message *m,
			 struct fuse_entry_param *e)
{
	entry_from_message(m, e);
}

static int entry_for(fuse_ino_t ino, struct fuse_entry_param *e)
{
	double timeout;
	int ret;

	memset(e, 0, sizeof(*e));
	ret = do_getattr(ino, &e->attr, &timeout);
	if (ret < 0)
		return ret;
	e->ino = ino;
	e->attr_timeout = timeout;
	e->entry_timeout = S_ISDIR(e->attr.st_mode) ? fsopt.dir_attr_timeout
						    : fsopt.entry_timeout;
	return 0;
}

/* ---- lookup ---- */

const char *const mf_fs_sub_names[4] = { "", "cur", "new", "tmp" };

int mf_fs_sub_of(const char *name)
{
	for (int s = 1; s <= 3; s++) {
		if (strcmp(name, mf_fs_sub_names[s]) == 0)
			return s;
	}
	return 0;
}
/* Resolve name in directory parent to an inode number. */
static int resolve(fuse_ino_t parent, const char *name, fuse_ino_t *ino_r)
{
	int64_t id;
	int sub;
	int ret;

	switch (mf_ino_decode(parent, &id, &sub)) {
	case MF_INO_KIND_ROOT: {
		struct mf_folder f;

		memset(&f, 0, sizeof(f));
		if (name[0] == '@' && mf_views_root_resolve(name, ino_r) == 0)
			return 0;
		if (!account_configured(name))
			return -ENOENT;
		ret = mf_store_folder_lookup(0, name, &f);
		if (ret == 0) {
			mf_fs_hold(f.id);	/* a first listing */
			*ino_r = mf_ino_folder(f.id, 0);
		}
		mf_folder_clear(&f);
		return ret;
	}
	case MF_INO_KIND_FOLDER: {
		struct mf_folder f;
		int s = mf_fs_sub_of(name);

		mf_fs_hold(id);
		memset(&f, 0, sizeof(f));
		if (s) {
			ret = mf_store_folder_get(id, &f);
			if (ret == 0 && !folder_shows_subdir(&f, s))
				ret = -ENOENT;
			if (ret == 0)
				*ino_r = mf_ino_folder(id, s);
		} else {
			ret = mf_store_folder_lookup(id, name, &f);
			if (ret == 0)
				*ino_r = mf_ino_folder(f.id, 0);
		}
		mf_folder_clear(&f);
		return ret;
	}
	case MF_INO_KIND_SUBDIR: {
		struct mf_message m;

		memset(&m, 0, sizeof(m));
		ret = mf_store_message_lookup(id, sub - 1, name, &m);
		if (ret == 0)
			*ino_r = (fuse_ino_t)m.id;
		mf_message_clear(&m);
		return ret;
	}
	case MF_INO_KIND_MESSAGE:
		return -ENOTDIR;
	}
	return -ENOENT;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	fuse_ino_t ino;
	int64_t id;
	int sub, ret;

	if (mf_views_ino(parent)) {
		mf_views_lookup(req, parent, name);
		return;
	}
	if (mf_ino_decode(parent, &id, &sub) == MF_INO_KIND_SUBDIR) {
		/* The hot path (mutt, notmuch): one query, row to reply. */
		struct mf_message m;

		memset(&m, 0, sizeof(m));
		ret = mf_store_message_lookup(id, sub - 1, name, &m);
		if (ret == 0)
			entry_from_message(&m, &e);
		mf_message_clear(&m);
		if (ret < 0)
			fuse_reply_err(req, -ret);
		else
			fuse_reply_entry(req, &e);
		return;
	}
	ret = resolve(parent, name, &ino);
	if (ret == 0)
		ret = entry_for(ino, &e);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	/* Inodes are rows that outlive the kernel's references. */
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;
	double timeout;
	int ret = do_getattr(ino, &st, &timeout);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, timeout);
}

/* Wake the engine of the account a folder or subdir inode belongs to. */
void mf_fs_kick_folder(int64_t folder)
{
	struct mf_folder f;
	struct mf_engine *e;

	memset(&f, 0, sizeof(f));
	if (mf_store_folder_get(folder, &f) == 0) {
		e = mf_engine_find(f.account);
		if (e)
			mf_engine_kick(e);
	}
	mf_folder_clear(&f);
}

static enum mf_delete_policy folder_delete_policy(int64_t folder)
{
	struct mf_folder f;
	struct mf_engine *e;
	enum mf_delete_policy p = MF_DELETE_TRASH;

	memset(&f, 0, sizeof(f));
	if (mf_store_folder_get(folder, &f) == 0) {
		e = mf_engine_find(f.account);
		if (e)
			p = mf_engine_account(e)->delete_policy;
	}
	mf_folder_clear(&f);
	return p;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	int64_t id;
	int sub;
	int ret = 0;

	if (mf_ino_decode(ino, &id, &sub) == MF_INO_KIND_MESSAGE) {
		struct mf_message m;

		memset(&m, 0, sizeof(m));
		ret = mf_store_message_get(id, &m);
		if (ret == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
			if (m.state != MF_MSG_TMP) {
				ret = -EPERM;	/* delivered mail is fixed */
			} else {
				char *path = mf_store_staging_path(id);
				if (truncate(path, attr->st_size) < 0)
					ret = -errno;
				free(path);
			}
		}
		if (ret == 0 && (to_set & (FUSE_SET_ATTR_MTIME |
					   FUSE_SET_ATTR_MTIME_NOW))) {
			int64_t t = (to_set & FUSE_SET_ATTR_MTIME_NOW)
					    ? mf_now_ns() / 1000000000
					    : attr->st_mtim.tv_sec;
			ret = mf_store_set_mtime(id, t);
		}
		/*
		 * Modes and atimes are not kept: accepted and ignored, as
		 * vfat's "quiet" does, so cp -p, rsync and MUAs that chmod
		 * do not fail (every message stays 0600). Giving a message
		 * to another owner cannot be honoured and would be a lie:
		 * EPERM, as for an unprivileged chown.
		 */
		if (ret == 0 &&
		    (((to_set & FUSE_SET_ATTR_UID) &&
		      attr->st_uid != getuid()) ||
		     ((to_set & FUSE_SET_ATTR_GID) &&
		      attr->st_gid != getgid())))
			ret = -EPERM;
		mf_message_clear(&m);
	}
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	op_getattr(req, ino, fi);
}

/* ---- directories ---- */

int mf_dir_buf_add(struct mf_dir_buf *d, const char *name,
		   const struct fuse_entry_param *e, off_t next_off)
{
	size_t need;

	if (d->plus)
		need = fuse_add_direntry_plus(d->req, NULL, 0, name, NULL, 0);
	else
		need = fuse_add_direntry(d->req, NULL, 0, name, NULL, 0);
	if (d->used + need > d->size)
		return d->full = true;
	if (d->plus)
		fuse_add_direntry_plus(d->req, d->buf + d->used,
				       d->size - d->used, name, e, next_off);
	else
		fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used,
				  name, &e->attr, next_off);
	d->used += need;
	return 0;
}

static int add_entry(struct mf_dir_buf *d, const char *name, uint64_t ino,
		     bool is_dir, const struct mf_message *m, off_t next_off)
{
	struct fuse_entry_param e;

	if (d->plus) {
		if (m)
			entry_from_message(m, &e);
		else if (entry_for(ino, &e) < 0)
			return 0;	/* vanished meanwhile: skip */
	} else {
		/* readdir: the inode and type are all the kernel takes */
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = ino;
		e.attr.st_mode = is_dir ? S_IFDIR : S_IFREG;
	}
	return mf_dir_buf_add(d, name, &e, next_off);
}

struct list_adapter {
	struct mf_dir_buf *d;
	bool root;
};

static int list_cb(void *ctx, const char *name, uint64_t ino,
		   const struct mf_message *m, uint64_t next_cookie)
{
	struct list_adapter *la = ctx;

	if (la->root && !account_configured(name))
		return 0;
	return add_entry(la->d, name, ino, m == NULL, m,
			 (off_t)(DIR_OFF_BASE + next_cookie));
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       bool plus)
{
	struct mf_dir_buf d = { req, NULL, size, 0, plus, false };
	struct list_adapter la = { &d, false };
	struct mf_folder f;
	int64_t id;
	int sub;
	int ret = 0;
	enum mf_ino_kind kind = mf_ino_decode(ino, &id, &sub);

	memset(&f, 0, sizeof(f));
	if (mf_views_ino(ino)) {
		mf_views_readdir(req, ino, size, off, plus);
		return;
	}
	if (kind == MF_INO_KIND_MESSAGE) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (kind != MF_INO_KIND_ROOT) {
		mf_fs_hold(id);
		ret = mf_store_folder_get(id, &f);
		if (ret < 0) {
			fuse_reply_err(req, -ret);
			return;
		}
	}
	d.buf = xmalloc(size);
	if (off < 1 && add_entry(&d, ".", ino, true, NULL, 1))
		goto reply;
	if (off < 2 && add_entry(&d, "..", kind == MF_INO_KIND_ROOT ? ino
				 : kind == MF_INO_KIND_SUBDIR
					 ? mf_ino_folder(id, 0)
				 : f.parent ? mf_ino_folder(f.parent, 0)
					    : MF_INO_ROOT,
				 true, NULL, 2))
		goto reply;
	if (kind == MF_INO_KIND_FOLDER) {
		for (int s = 1; s <= 3; s++) {
			if (off < 2 + s && folder_shows_subdir(&f, s) &&
			    add_entry(&d, mf_fs_sub_names[s],
				      mf_ino_folder(id, s), true, NULL, 2 + s))
				goto reply;
		}
	}
	{
		uint64_t cookie = off > DIR_OFF_BASE
					  ? (uint64_t)(off - DIR_OFF_BASE)
					  : 0;

		switch (kind) {
		case MF_INO_KIND_ROOT:
			la.root = true;
			if (off < ROOT_VIEW_OFF)
				ret = mf_store_list_folders(0, cookie, list_cb,
							    &la);
			/* Views after the accounts, offsets above theirs. */
			for (unsigned int i = off > ROOT_VIEW_OFF
						      ? (unsigned int)(off -
								       ROOT_VIEW_OFF)
						      : 0;
			     ret == 0 && !d.full; i++) {
				uint64_t vino;
				const char *vn = mf_views_root_entry(i, &vino);

				if (!vn || add_entry(&d, vn, vino, true, NULL,
						     ROOT_VIEW_OFF + i + 1))
					break;
			}
			break;
		case MF_INO_KIND_FOLDER:
			ret = mf_store_list_folders(id, cookie, list_cb, &la);
			break;
		case MF_INO_KIND_SUBDIR:
			ret = mf_store_list_messages(id, sub - 1, cookie,
						     list_cb, &la);
			break;
		default:
			break;
		}
	}
reply:
	if (ret < 0 && d.used == 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, d.buf, d.used);
	free(d.buf);
	mf_folder_clear(&f);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	/*
	 * Let the kernel keep listings: it drops them itself when the
	 * directory changes through the mount, and the notifier drops them
	 * on server changes.
	 */
	fi->cache_readdir = !mf_views_ino(ino);	/* views: always fresh */
	fi->keep_cache = fi->cache_readdir;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fuse_entry_param e;
	int64_t id, newid;
	int sub;
	int ret;

	if (mf_views_ino(parent)) {
		mf_views_refuse(req, parent, name, "mkdir");
		return;
	}
	if (mf_ino_decode(parent, &id, &sub) != MF_INO_KIND_FOLDER) {
		fuse_reply_err(req, EPERM);
		return;
	}
	sub = mf_fs_sub_of(name);
	if (sub) {
		ret = mf_store_mksubdir(id, sub);
		newid = id;
	} else {
		ret = mf_store_mkdir(id, name, &newid);
		sub = 0;
		if (ret == 0)
			mf_fs_kick_folder(id);
	}
	if (ret == 0)
		ret = entry_for(mf_ino_folder(newid, sub), &e);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int64_t id;
	int sub;
	int ret;

	if (mf_views_ino(parent)) {
		mf_views_refuse(req, parent, name, "rmdir");
		return;
	}
	if (mf_ino_decode(parent, &id, &sub) != MF_INO_KIND_FOLDER) {
		fuse_reply_err(req, parent == MF_INO_ROOT ? EPERM : ENOTDIR);
		return;
	}
	sub = mf_fs_sub_of(name);
	if (sub) {
		ret = mf_store_rmsubdir(id, sub);
	} else {
		ret = mf_store_rmdir(id, name);
		if (ret == 0)
			mf_fs_kick_folder(id);
	}
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

/* ---- messages ---- */

/*
 * A delivery is committed: record its Message-ID first, so that after a
 * crash between the server's APPEND and the recording of its answer the
 * next listing recognises the upload instead of sending it again.
 */
static void note_message_id(int64_t msg)
{
	char *path = mf_store_staging_path(msg);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf, *id;
	ssize_t n;

	free(path);
	if (fd < 0)
		return;
	buf = xmalloc(MSGID_SCAN_BYTES);
	n = mf_pread_all(fd, buf, MSGID_SCAN_BYTES, 0);
	close(fd);
	id = n > 0 ? mf_header_message_id(buf, (size_t)n) : NULL;
	if (id)
		mf_store_set_msgid(msg, id);
	free(id);
	free(buf);
}

/* Size of a tmp/ message from its staging file. */
static uint64_t staging_size(int64_t msg)
{
	char *path = mf_store_staging_path(msg);
	struct stat st;
	uint64_t size = 0;

	if (stat(path, &st) == 0)
		size = (uint64_t)st.st_size;
	free(path);
	return size;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	struct mf_message m;
	struct handle *h;
	char *path;
	int64_t id;
	int sub, fd, ret;

	if (mf_views_ino(parent)) {
		mf_views_refuse(req, parent, name, "creating");
		return;
	}
	if (mf_ino_decode(parent, &id, &sub) != MF_INO_KIND_SUBDIR ||
	    sub != 3) {
		/* Mail is delivered through tmp/ only (Maildir's rule). */
		fuse_reply_err(req, EPERM);
		return;
	}
	if (strlen(name) > MF_NAME_MAX || strchr(name, '/')) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	memset(&m, 0, sizeof(m));
	ret = mf_store_tmp_create(id, name, mf_now_ns(), &m);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	path = mf_store_staging_path(m.id);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	free(path);
	if (fd < 0) {
		ret = -errno;
		mf_err("cannot create a staging file for %s: %s", name,
		       strerror(errno));
		mf_store_unlink_message(id, MF_DIR_TMP, name, MF_DELETE_EXPUNGE);
		mf_message_clear(&m);
		fuse_reply_err(req, -ret);
		return;
	}
	ret = entry_for((fuse_ino_t)m.id, &e);
	if (ret < 0) {
		close(fd);
		mf_message_clear(&m);
		fuse_reply_err(req, -ret);
		return;
	}
	h = handle_new(fd, m.id, true);
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 0;
	mf_message_clear(&m);
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		handle_free(h);
}

static void reply_opened(fuse_req_t req, struct fuse_file_info *fi, int fd,
			 int64_t msg, bool writable)
{
	struct handle *h = handle_new(fd, msg, writable);

	fi->fh = (uint64_t)(uintptr_t)h;
	/* Bodies never change once stored: keep the page cache, and
	   spare close() the FLUSH round trip (nothing to flush). */
	fi->keep_cache = !writable;
	fi->noflush = !writable;
	if (fuse_reply_open(req, fi) == -ENOENT)
		handle_free(h);
}

/* Open what already exists locally: -EAGAIN means "fetch first". */
static int open_local(const struct mf_message *m, int flags, int *fd_r,
		      bool *writable_r)
{
	int accmode = flags & O_ACCMODE;
	char *path;
	int fd;

	*writable_r = false;
	if (m->state == MF_MSG_TMP) {
		path = mf_store_staging_path(m->id);
		fd = open(path, (accmode == O_RDONLY ? O_RDONLY : O_RDWR) |
					(flags & O_TRUNC) | O_CLOEXEC);
		free(path);
		if (fd < 0)
			return -errno;
		*writable_r = accmode != O_RDONLY;
		*fd_r = fd;
		return 0;
	}
	if (accmode != O_RDONLY || (flags & O_TRUNC))
		return -EPERM;	/* delivered messages are immutable */
	if (m->blob) {
		fd = mf_blob_open_sized(m->blob, m->size);
		if (fd >= 0) {
			*fd_r = fd;
			return 0;
		}
	}
	if (m->state == MF_MSG_APPEND || !m->ruid) {
		/* Not on the server (yet): the staging file has it. */
		path = mf_store_staging_path(m->id);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		free(path);
		if (fd >= 0) {
			*fd_r = fd;
			return 0;
		}
		if (!m->ruid)
			return -EIO;
	}
	return -EAGAIN;
}

static void fetch_done(void *ctx, int err)
{
	struct pending_open *p = ctx;
	struct mf_message m;
	int fd = -1;
	bool writable;

	pthread_mutex_lock(&p->lock);
	if (!p->done) {
		memset(&m, 0, sizeof(m));
		if (err == 0)
			err = mf_store_message_get(p->msg, &m);
		if (err == 0) {
			err = open_local(&m, p->fi.flags, &fd, &writable);
			if (err == -EAGAIN)
				err = -EIO;
		}
		mf_message_clear(&m);
		p->done = true;
		if (err == 0)
			reply_opened(p->req, &p->fi, fd, p->msg, false);
		else
			fuse_reply_err(p->req, err == -ENOENT ? ENOENT : EIO);
	}
	pthread_mutex_unlock(&p->lock);
	pending_unlist(p);
	pending_unref(p);
}

static void open_interrupted(fuse_req_t req, void *data)
{
	struct pending_open *p = data;

	pthread_mutex_lock(&p->lock);
	if (!p->done) {
		p->done = true;
		fuse_reply_err(p->req, EINTR);
	}
	pthread_mutex_unlock(&p->lock);
}

static void *reaper_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pending_lock);
	while (!reaper_stop) {
		struct timespec ts;
		int64_t now = mf_mono_ms();
		int64_t abs_ns;

		for (struct pending_open *p = pending_list; p; p = p->next) {
			if (p->deadline_ms > now)
				continue;
			pthread_mutex_lock(&p->lock);
			if (!p->done) {
				p->done = true;
				mf_warn("reading message %lld: no answer from "
					"the server within %u s",
					(long long)p->msg,
					cfg_now()->fetch_timeout);
				fuse_reply_err(p->req, EIO);
			}
			pthread_mutex_unlock(&p->lock);
		}
		abs_ns = mf_now_ns() + 200 * 1000000LL;
		ts.tv_sec = abs_ns / 1000000000;
		ts.tv_nsec = abs_ns % 1000000000;
		pthread_cond_timedwait(&pending_cond, &pending_lock, &ts);
	}
	pthread_mutex_unlock(&pending_lock);
	return NULL;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mf_message m;
	struct mf_folder f;
	struct mf_engine *e = NULL;
	struct pending_open *p;
	int64_t id;
	int sub, fd = -1, ret;
	bool writable;

	if (mf_ino_decode(ino, &id, &sub) != MF_INO_KIND_MESSAGE) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	memset(&m, 0, sizeof(m));
	memset(&f, 0, sizeof(f));
	ret = mf_store_message_get(id, &m);
	if (ret == 0)
		ret = open_local(&m, fi->flags, &fd, &writable);
	if (ret == 0) {
		reply_opened(req, fi, fd, id, writable);
		goto out;
	}
	if (ret != -EAGAIN) {
		fuse_reply_err(req, -ret);
		goto out;
	}
	/* The body must come from the server: answer from a fetch thread. */
	if (mf_store_folder_get(m.folder, &f) == 0)
		e = mf_engine_find(f.account);
	if (!e) {
		fuse_reply_err(req, EIO);
		goto out;
	}
	p = xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	p->req = req;
	p->fi = *fi;
	p->msg = id;
	p->deadline_ms = mf_mono_ms() + (int64_t)cfg_now()->fetch_timeout *
						1000;
	p->refs = 2;	/* the reaper list and the fetch callback */
	pthread_mutex_lock(&pending_lock);
	p->next = pending_list;
	pending_list = p;
	pthread_mutex_unlock(&pending_lock);
	fuse_req_interrupt_func(req, open_interrupted, p);
	mf_engine_fetch(e, id, fetch_done, p);
out:
	mf_message_clear(&m);
	mf_folder_clear(&f);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = h->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	ssize_t n;

	if (!h->writable) {
		fuse_reply_err(req, EPERM);
		return;
	}
	n = pwrite(h->fd, data, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int ret = 0;

	if (h->writable && (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0)
		ret = errno;
	fuse_reply_err(req, ret);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	if (h->writable) {
		struct stat st;

		/* Keep the row's size in step for stat after delivery. */
		if (fstat(h->fd, &st) == 0) {
			struct mf_message m;

			memset(&m, 0, sizeof(m));
			if (mf_store_message_get(h->msg, &m) == 0 &&
			    (m.state == MF_MSG_TMP ||
			     m.state == MF_MSG_APPEND) &&
			    m.size != (uint64_t)st.st_size)
				mf_store_set_size(h->msg,
						  (uint64_t)st.st_size);
			mf_message_clear(&m);
		}
	}
	handle_free(h);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	/* Every change is committed before its syscall returns. */
	fuse_reply_err(req, 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int64_t id;
	int sub;
	int ret;

	if (mf_views_ino(parent)) {
		mf_views_unlink(req, parent, name);
		return;
	}
	if (mf_ino_decode(parent, &id, &sub) != MF_INO_KIND_SUBDIR) {
		fuse_reply_err(req, parent == MF_INO_ROOT ? EPERM : ENOENT);
		return;
	}
	ret = mf_store_unlink_message(id, sub - 1, name,
				      folder_delete_policy(id));
	if (ret == 0) {
		mf_fs_kick_folder(id);
		mf_views_forget_name(name);
	}
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	int64_t src, dst;
	int ssub, dsub;
	enum mf_ino_kind sk, dk;
	int ret;

	if (flags & RENAME_EXCHANGE) {
		/* Never ENOSYS: the kernel would disable renameat2. */
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (flags & ~(unsigned int)RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mf_views_ino(parent) || mf_views_ino(newparent)) {
		mf_views_rename(req, parent, name, newparent, newname, flags);
		return;
	}
	sk = mf_ino_decode(parent, &src, &ssub);
	dk = mf_ino_decode(newparent, &dst, &dsub);
	if (sk == MF_INO_KIND_SUBDIR) {
		struct mf_message m;
		struct mf_maildir_name n;

		if (dk != MF_INO_KIND_SUBDIR) {
			fuse_reply_err(req, dk == MF_INO_KIND_FOLDER ? EPERM
								     : EXDEV);
			return;
		}
		if (dsub != 3 && mf_maildir_parse(newname, &n) < 0) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		memset(&m, 0, sizeof(m));
		ret = mf_store_message_lookup(src, ssub - 1, name, &m);
		if (ret == 0 && m.state == MF_MSG_TMP && dsub != 3)
			note_message_id(m.id);
		if (ret == 0)
			ret = mf_store_rename_message(
				m.id, name, dst, dsub - 1, newname,
				(flags & RENAME_NOREPLACE) != 0,
				m.state == MF_MSG_TMP ? staging_size(m.id)
						      : m.size);
		mf_message_clear(&m);
		if (ret == 0) {
			mf_fs_kick_folder(dst);
			mf_views_forget_name(name);
		}
		fuse_reply_err(req, ret < 0 ? -ret : 0);
		return;
	}
	if (sk == MF_INO_KIND_FOLDER && dk == MF_INO_KIND_FOLDER) {
		struct mf_folder f;

		if (mf_fs_sub_of(name) || mf_fs_sub_of(newname)) {
			fuse_reply_err(req, EPERM);
			return;
		}
		memset(&f, 0, sizeof(f));
		ret = mf_store_folder_lookup(src, name, &f);
		if (ret == 0) {
			if (flags & RENAME_NOREPLACE) {
				struct mf_folder other;

				memset(&other, 0, sizeof(other));
				if (mf_store_folder_lookup(dst, newname,
							   &other) == 0)
					ret = -EEXIST;
				mf_folder_clear(&other);
			}
		}
		if (ret == 0)
			ret = mf_store_rename_folder(f.id, dst, newname);
		mf_folder_clear(&f);
		if (ret == 0)
			mf_fs_kick_folder(dst);
		fuse_reply_err(req, ret < 0 ? -ret : 0);
		return;
	}
	fuse_reply_err(req, EPERM);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct fuse_entry_param e;
	struct mf_message m;
	struct mf_maildir_name n;
	int64_t id, dst;
	int sub, dsub, ret;

	if (mf_views_ino(newparent)) {
		mf_views_refuse(req, newparent, newname, "linking");
		return;
	}
	if (mf_ino_decode(ino, &id, &sub) != MF_INO_KIND_MESSAGE ||
	    mf_ino_decode(newparent, &dst, &dsub) != MF_INO_KIND_SUBDIR) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (dsub != 3 && mf_maildir_parse(newname, &n) < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(id, &m);
	if (ret == 0 && m.state == MF_MSG_TMP && dsub != 3)
		note_message_id(id);
	if (ret == 0)
		ret = mf_store_link_message(id, dst, dsub - 1, newname,
					    m.state == MF_MSG_TMP
						    ? staging_size(id)
						    : m.size);
	mf_message_clear(&m);
	if (ret == 0) {
		mf_fs_kick_folder(dst);
		ret = entry_for(ino, &e);
	}
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	/* Messages are made with open(O_CREAT) in tmp/; nothing else. */
	if (mf_views_ino(parent))
		mf_views_refuse(req, parent, name, "mknod");
	else
		fuse_reply_err(req, EPERM);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	if (mf_views_ino(parent))
		mf_views_refuse(req, parent, name, "symlink");
	else
		fuse_reply_err(req, EPERM);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (statvfs(cfg_now()->cache_dir, &sv) < 0) {
		memset(&sv, 0, sizeof(sv));
		sv.f_bsize = 4096;
	}
	sv.f_namemax = MF_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Directory operations run in parallel where the library allows. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/*
	 * Always readdirplus: the attributes come with the names from one
	 * query, and "ls -l" of 100,000 messages then needs no lookups
	 * (the AUTO heuristic switches to plain readdir before ls stats).
	 */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* neomutt compares directory mtimes to the nanosecond. */
	conn->time_gran = 1;
}

static void op_destroy(void *userdata)
{
}

const struct fuse_lowlevel_ops mf_fs_ops = {
	.init = op_init,
	.destroy = op_destroy,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.create = op_create,
};

void mf_fs_init(const struct mf_fs_options *opts)
{
	fsopt = *opts;
	mf_views_init(opts->cfg);
	reaper_stop = false;
	pthread_create(&reaper_thread, NULL, reaper_main, NULL);
	reaper_running = true;
}

void mf_fs_deinit(void)
{
	while (handles)
		handle_free(handles);
	if (!reaper_running)
		return;
	pthread_mutex_lock(&pending_lock);
	reaper_stop = true;
	pthread_cond_broadcast(&pending_cond);
	pthread_mutex_unlock(&pending_lock);
	pthread_join(reaper_thread, NULL);
	reaper_running = false;
}
