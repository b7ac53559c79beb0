/*
 * Client-side views: [view NAME] sections of mailfs.conf, shown as
 * read-mostly Maildirs at MOUNT/@NAME/{cur,new,tmp}.
 *
 * A view lists, in its cur/ and new/, the messages in cur/ and new/ of
 * every folder of every account (or only those its "account" and
 * "folders" keys name) that match any of its "match = Header: glob"
 * rules. There is no copy: a view entry is the folder's message row
 * itself, with the same inode number (the row id) and the same name, so
 * reads, stats and utime work on it unchanged.
 *
 * What the view does with changes:
 *   - rename inside the view (cur/X:2,S -> cur/X:2,FS, new/X -> cur/X:2,S)
 *     renames the message in its own folder: the same queued UID STORE as
 *     a rename there;
 *   - rename from the view into a folder's cur/ or new/ moves the message
 *     there (as a rename from its folder would);
 *   - unlink deletes the message in its folder with its account's delete
 *     policy (trash or expunge), as an unlink there would;
 *   - anything that would add an entry to a view (create or link in tmp/,
 *     new/ or cur/, a rename from a folder into the view, mkdir) is refused
 *     with EROFS and logged: deliver into a folder of an account instead.
 *
 * Matching: header lines come from the store (the listings fetch the
 * fields the rules name, see mf_account.view_fields); a rule's glob is
 * matched against the unfolded raw value of every occurrence of the header,
 * case-insensitively (fnmatch FNM_CASEFOLD); "account" and "folder" are
 * pseudo headers holding the account name and the folder path.
 *
 * Caching: a view's listing is computed from the store on every readdir
 * (the kernel is told not to cache it) and the kernel keeps its names for
 * VIEW_ENTRY_TIMEOUT only, so a view follows its folders within a second
 * when the server changed them; a change made in a folder through the
 * mount drops the views' cached name at once (mf_views_forget_name), and
 * one made through a view the folder's (forget_folder_names). A view's cur/ and new/ have the newest mtime of all the
 * folders' cur/ and new/, which is how MUAs notice new mail.
 */
#include "views.h"
#include "fs.h"
#include "mf_engine.h"
#include "mf_names.h"
#include "mf_store.h"
#include "mf_store_views.h"
#include "mf_view_match.h"
#include "mf_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define VIEW_OFF_BASE 16	/* readdir offsets of messages: id + this */
/*
 * Seconds the kernel may keep a view's name -> message entry. Not 0:
 * "ls -l" would then cost three lookups per name (lstat and two xattr
 * probes); not the folders' 60 s: a change made in the message's folder
 * (not through the view) shows in the view within this time.
 */
#define VIEW_ENTRY_TIMEOUT 1.0

static const struct mf_config *vcfg;

void mf_views_init(const struct mf_config *cfg)
{
	vcfg = cfg;
	/* Mail listed before the views wanted its headers: list it again. */
	for (unsigned int i = 0; i < cfg->account_count; i++) {
		const struct mf_account *a = &cfg->accounts[i];
		bool relist = false;

		if (mf_store_view_fields_check(a->name, a->view_fields,
					       &relist) == 0 &&
		    relist)
			mf_notice("account %s: the views match on %s, which "
				  "the store has not kept: listing every "
				  "folder once more", a->name, a->view_fields);
	}
}

unsigned int mf_views_count(void)
{
	return vcfg ? vcfg->view_count : 0;
}

bool mf_views_ino(uint64_t ino)
{
	return ino >= MF_INO_VIEW_BASE &&
	       ino < MF_INO_VIEW_BASE + 4ULL * mf_views_count();
}

static const struct mf_view *view_of(uint64_t ino, int *sub_r)
{
	uint64_t v = ino - MF_INO_VIEW_BASE;

	*sub_r = (int)(v % 4);
	return &vcfg->views[v / 4];
}

static uint64_t view_ino(const struct mf_view *v, int sub)
{
	return MF_INO_VIEW_BASE + 4ULL * (uint64_t)(v - vcfg->views) +
	       (uint64_t)sub;
}

int mf_views_root_resolve(const char *name, uint64_t *ino_r)
{
	for (unsigned int i = 0; i < mf_views_count(); i++) {
		if (strcmp(vcfg->views[i].dirname, name) == 0) {
			*ino_r = view_ino(&vcfg->views[i], 0);
			return 0;
		}
	}
	return -ENOENT;
}

const char *mf_views_root_entry(unsigned int i, uint64_t *ino_r)
{
	if (i >= mf_views_count())
		return NULL;
	*ino_r = view_ino(&vcfg->views[i], 0);
	return vcfg->views[i].dirname;
}

/* ---- matching (cache/view_match.c) ---- */

static bool view_matches(const struct mf_view *v, const struct mf_view_msg *vm)
{
	return mf_view_matches(v, vm->account, vm->path, vm->attrs,
			       vm->fields);
}

/* ---- finding a view's entry by name ---- */

struct find_ctx {
	const struct mf_view *v;
	struct mf_message m;	/* owned copy of the first match */
	bool found;
};

static int find_cb(void *ctx, const struct mf_view_msg *vm)
{
	struct find_ctx *f = ctx;

	if (!view_matches(f->v, vm))
		return 0;
	f->m = *vm->m;
	f->m.name = xstrdup(vm->m->name);
	f->m.link_name = vm->m->link_name ? xstrdup(vm->m->link_name)
					  : NULL;
	f->m.ruid = vm->m->ruid ? xstrdup(vm->m->ruid) : NULL;
	f->m.msgid = vm->m->msgid ? xstrdup(vm->m->msgid) : NULL;
	f->m.blob = vm->m->blob ? xstrdup(vm->m->blob) : NULL;
	f->found = true;
	return 1;
}

/*
 * The message a view shows as sub/name (sub 1 cur, 2 new). Names are
 * unique within a folder; should two folders hold the same name, the
 * view shows the older row under it.
 */
static int view_find(const struct mf_view *v, int sub, const char *name,
		     struct mf_message *m_r)
{
	struct find_ctx f;
	int ret;

	if (sub != 1 && sub != 2)
		return -ENOENT;
	memset(&f, 0, sizeof(f));
	f.v = v;
	ret = mf_store_view_find(sub - 1, name, find_cb, &f);
	if (ret == 0 && !f.found)
		ret = -ENOENT;
	if (ret == 0)
		*m_r = f.m;
	else
		mf_message_clear(&f.m);
	return ret;
}

/* ---- attributes ---- */

int mf_views_getattr(uint64_t ino, struct stat *st)
{
	int sub;

	if (!mf_views_ino(ino))
		return -ENOENT;
	view_of(ino, &sub);
	switch (sub) {
	case 0:
		mf_fs_fill_dir(st, ino,
			       MF_MAX(mf_store_view_mtime(MF_DIR_CUR),
				     mf_store_view_mtime(MF_DIR_NEW)),
			       5);
		break;
	case 1:
		mf_fs_fill_dir(st, ino, mf_store_view_mtime(MF_DIR_CUR), 2);
		break;
	case 2:
		mf_fs_fill_dir(st, ino, mf_store_view_mtime(MF_DIR_NEW), 2);
		break;
	default:
		mf_fs_fill_dir(st, ino, 0, 2);
		st->st_mode = S_IFDIR | 0500;	/* nothing is delivered here */
		break;
	}
	return 0;
}

static void view_dir_entry(uint64_t ino, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	mf_views_getattr(ino, &e->attr);
	e->ino = ino;
	e->attr_timeout = 1;
	e->entry_timeout = 1;
}

/* A message as a view entry: its name is cached briefly (see the top). */
static void view_msg_entry(const struct mf_message *m,
			   struct fuse_entry_param *e)
{
	mf_fs_message_entry(m, e);
	e->entry_timeout = VIEW_ENTRY_TIMEOUT;
}

/* ---- lookup and readdir ---- */

/*
 * A view shows mail of several accounts: a request for its messages
 * waits, as one for a folder does, for the first listing of each
 * account mounted for the first time (bounded; nothing waits otherwise).
 */
static void view_hold(const struct mf_view *v)
{
	if (!v->accounts) {
		for (unsigned int i = 0; i < vcfg->account_count; i++)
			mf_fs_hold_account(vcfg->accounts[i].name);
		return;
	}
	for (char **a = v->accounts; *a; a++)
		mf_fs_hold_account(*a);
}

void mf_views_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	const struct mf_view *v;
	struct mf_message m;
	int sub, s, ret;

	v = view_of(parent, &sub);
	if (sub == 0) {
		s = mf_fs_sub_of(name);
		if (!s) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		view_dir_entry(view_ino(v, s), &e);
		fuse_reply_entry(req, &e);
		return;
	}
	view_hold(v);
	memset(&m, 0, sizeof(m));
	ret = view_find(v, sub, name, &m);
	if (ret == 0)
		view_msg_entry(&m, &e);
	mf_message_clear(&m);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, &e);
}

struct view_fill {
	struct mf_dir_buf b;
	const struct mf_view *v;
};

static int fill_dir_entry(struct view_fill *d, const char *name,
			  uint64_t ino, off_t next_off)
{
	struct fuse_entry_param e;

	if (ino == MF_INO_ROOT) {
		memset(&e, 0, sizeof(e));
		e.ino = ino;
		e.attr.st_ino = ino;
		e.attr.st_mode = S_IFDIR | 0700;
		/* No lookup count for ".." entries: plain attributes only
		 * are used by the kernel for them. */
	} else {
		view_dir_entry(ino, &e);
	}
	return mf_dir_buf_add(&d->b, name, &e, next_off);
}

static int scan_cb(void *ctx, const struct mf_view_msg *vm)
{
	struct view_fill *d = ctx;
	struct fuse_entry_param e;

	if (!view_matches(d->v, vm))
		return 0;
	view_msg_entry(vm->m, &e);
	return mf_dir_buf_add(&d->b, vm->m->name, &e,
			      (off_t)(VIEW_OFF_BASE + vm->m->id + 1));
}

void mf_views_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      bool plus)
{
	struct view_fill d;
	int sub, ret = 0;

	memset(&d, 0, sizeof(d));
	d.b.req = req;
	d.v = view_of(ino, &sub);
	d.b.size = size;
	d.b.plus = plus;
	d.b.buf = xmalloc(size);
	if (off < 1 && fill_dir_entry(&d, ".", ino, 1))
		goto reply;
	if (off < 2 && fill_dir_entry(&d, "..", sub ? view_ino(d.v, 0)
						    : MF_INO_ROOT, 2))
		goto reply;
	if (sub == 0) {
		for (int s = 1; s <= 3; s++) {
			if (off < 2 + s &&
			    fill_dir_entry(&d, mf_fs_sub_names[s],
					   view_ino(d.v, s), 2 + s))
				goto reply;
		}
	} else if (sub == 1 || sub == 2) {
		int64_t from = off > VIEW_OFF_BASE ? off - VIEW_OFF_BASE : 0;

		view_hold(d.v);
		ret = mf_store_view_scan(sub - 1, from, scan_cb, &d);
	}
reply:
	if (ret < 0 && d.b.used == 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, d.b.buf, d.b.used);
	free(d.b.buf);
}

/* ---- changes ---- */

void mf_views_refuse(fuse_req_t req, fuse_ino_t parent, const char *name,
		     const char *what)
{
	int sub;
	const struct mf_view *v = view_of(parent, &sub);

	mf_warn("view %s is read-mostly: %s %s%s%s refused (EROFS); deliver "
		"into a folder of an account instead", v->dirname, what,
		mf_fs_sub_names[sub], sub ? "/" : "", name);
	fuse_reply_err(req, EROFS);
}

/*
 * The kernel changed the view's entries itself; the message's own folder
 * directory holds names it may have cached: drop them (through the
 * notifier thread: never from inside a request).
 */
static void forget_folder_names(int64_t folder, int dir, const char *name)
{
	const struct mf_notify_ops *n = mf_notifier_ops();
	uint64_t parent = mf_ino_folder(folder, dir + 1);

	n->inval_entry(parent, name);
	n->inval_inode(parent);
}

void mf_views_forget_name(const char *name)
{
	const struct mf_notify_ops *n = mf_notifier_ops();

	for (unsigned int i = 0; i < mf_views_count(); i++) {
		n->inval_entry(view_ino(&vcfg->views[i], 1), name);
		n->inval_entry(view_ino(&vcfg->views[i], 2), name);
	}
}

void mf_views_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	const struct mf_view *v, *dv;
	struct mf_message m;
	struct mf_maildir_name n;
	int64_t dst_folder;
	int sub, dsub, dst_dir, ret;

	if (flags & ~(unsigned int)RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!mf_views_ino(parent)) {
		/* From a folder into a view: views do not take mail. */
		mf_views_refuse(req, newparent, newname, "moving a message into");
		return;
	}
	v = view_of(parent, &sub);
	if (sub != 1 && sub != 2) {
		fuse_reply_err(req, sub == 0 ? EROFS : ENOENT);
		return;
	}
	if (mf_views_ino(newparent)) {
		dv = view_of(newparent, &dsub);
		if (dv != v || (dsub != 1 && dsub != 2)) {
			mf_views_refuse(req, newparent, newname,
					"moving a message into");
			return;
		}
		dst_folder = 0;	/* the message's own folder */
		dst_dir = dsub - 1;
	} else {
		int64_t id;

		/* Out of the view into a folder: a move of the message. */
		if (mf_ino_decode(newparent, &id, &dsub) !=
			    MF_INO_KIND_SUBDIR ||
		    dsub == 3) {
			fuse_reply_err(req, EPERM);
			return;
		}
		dst_folder = id;
		dst_dir = dsub - 1;
	}
	if (mf_maildir_parse(newname, &n) < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memset(&m, 0, sizeof(m));
	ret = view_find(v, sub, name, &m);
	if (ret == 0) {
		if (!dst_folder)
			dst_folder = m.folder;
		ret = mf_store_rename_message(m.id, m.name, dst_folder, dst_dir,
					      newname,
					      (flags & RENAME_NOREPLACE) != 0,
					      m.size);
	}
	if (ret == 0) {
		mf_debug(MF_DBG_FS, "view %s: %s/%s -> message %lld in "
			 "folder %lld renamed to %s", v->dirname,
			 mf_fs_sub_names[sub], name, (long long)m.id,
			 (long long)dst_folder, newname);
		forget_folder_names(m.folder, m.dir, m.name);
		forget_folder_names(dst_folder, dst_dir, newname);
		mf_fs_kick_folder(dst_folder);
	}
	mf_message_clear(&m);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

void mf_views_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	const struct mf_view *v;
	struct mf_message m;
	struct mf_folder f;
	enum mf_delete_policy policy = MF_DELETE_TRASH;
	int sub, ret;

	v = view_of(parent, &sub);
	memset(&m, 0, sizeof(m));
	memset(&f, 0, sizeof(f));
	ret = view_find(v, sub, name, &m);
	if (ret == 0)
		ret = mf_store_folder_get(m.folder, &f);
	if (ret == 0) {
		struct mf_engine *e = mf_engine_find(f.account);

		/* The same policy as an unlink in the message's folder. */
		if (e)
			policy = mf_engine_account(e)->delete_policy;
		ret = mf_store_unlink_message(m.folder, m.dir, m.name, policy);
		if (ret == 0) {
			forget_folder_names(m.folder, m.dir, m.name);
			if (e)
				mf_engine_kick(e);
		}
	}
	mf_message_clear(&m);
	mf_folder_clear(&f);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}
