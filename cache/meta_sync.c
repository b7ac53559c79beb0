/*
 * The store, engine side: applying what the server says (folder listings,
 * message changes), and the write-back queue with the results of each
 * operation.
 *
 * Matching server messages to rows (see mf_store.h for the model):
 *  1. by server place (rfolder, ruid);
 *  2. otherwise, when the server shows a message mailfs has no row for,
 *     it may be one of ours whose server id we never learnt: an APPEND
 *     that may have happened before a crash, a MOVE without COPYUID or
 *     one that happened just before a crash (its row still says where
 *     it came from), or every message after a UIDVALIDITY reset. Those rows wait in state
 *     MATCH (or APPEND, attempted) and are matched by Message-ID and size,
 *     preferring the same date: the row keeps its inode and name;
 *  3. otherwise it is new mail and gets a row.
 *
 * The mass-deletion guard: a complete listing that shows nothing for a
 * folder where mailfs knows messages, or a reset in which nothing
 * matched, removes nothing; the folder's "held" column says why.
 */
#include "meta_private.h"
#include "mf_names.h"
#include "mf_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#define BATCH_COMMIT_EVERY 2000
#define BATCH_MAX_CREATE_NOTIFY 1000
/* A snapshot removing more than half of a folder, and more than this
 * many messages, is held back. */
#define MASS_DELETE_MIN 20
/* An expunge of every message of a folder holding more than this many is
 * held back too: it is what a server with a broken store reports. */
#define MASS_EMPTY_MIN 3

enum {
	S_ENGINE_FOLDERS = 48,	/* meta.c has 0..47 */
	S_FOLDER_BY_REMOTE,
	S_FOLDER_BY_PATH,
	S_FOLDER_UPDATE_LISTED,
	S_FOLDER_ALL_REMOTE,
	S_KNOWN_COUNT,
	S_BY_SERVER,
	S_MATCH,
	S_INSERT_MSG,
	S_UPDATE_FLAGS,
	S_SET_GONE,
	S_RESET_FOLDER,
	S_UNLISTED,
	S_SET_CURSOR,
	S_SET_HELD,
	S_QUEUE_FIRST,
	S_QUEUE_ATTEMPT,
	S_QUEUE_DONE,
	S_QUEUE_RETRY,
	S_SET_SERVER,
	S_FOLDER_REMOTE,
	S_DESCENDANTS,
	S_RESTORE_PLACE,
	S_BASE_PUSHED,
	S_APPENDED_BLOB,
	S_SET_BLOB_SIZE,
	S_WAS_DELETED,
	S_PREFETCH,
	S_HAS_UNMATCHED,
	S_ACCOUNT_LISTED,
	S_COUNT_CANDIDATES,
	S_ACCEPTED,
	S_REQUEUE_INS,
	S_REQUEUE_DEL,
	S_HAS_MKDIR,
	S_SIBLING,
	S_SIBLING_BLOB,
	S_QUEUE_AFTER,
	S_PASS_BLOB,
	S_DUP_FIND,
	S_DUP_DROP,
	S_FIND_MOVED,
	S_RELOCATE,
	S_FOLDER_OPS_QUEUED,
	S_FOLDER_FOLLOW,
	S_STMT_END,
};

_Static_assert(S_STMT_END <= 112, "meta_sync.c statement indexes (meta_blob.c starts at 112)");

/* ---- folders ---- */

int mf_store_engine_folders(const char *account, struct mf_folder **list_r,
			    unsigned int *n_r)
{
	struct meta_conn *c = meta_conn();
	struct mf_folder *list = NULL;
	unsigned int n = 0;
	sqlite3_stmt *s;
	int rc;

	*list_r = NULL;
	*n_r = 0;
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_ENGINE_FOLDERS,
		      "SELECT " FOLDER_COLS " FROM folder WHERE account = ? "
		      "AND remote IS NOT NULL AND state = 0 ORDER BY id");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		list = xrealloc(list, (n + 1) * sizeof(*list));
		meta_read_folder(s, &list[n]);
		n++;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE) {
		mf_store_folders_free(list, n);
		return meta_dberr(c, "engine folders");
	}
	*list_r = list;
	*n_r = n;
	return 0;
}

void mf_store_folders_free(struct mf_folder *list, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		mf_folder_clear(&list[i]);
	free(list);
}

static int64_t folder_by_path(struct meta_conn *c, const char *account,
			      const char *path)
{
	sqlite3_stmt *s = meta_stmt(c, S_FOLDER_BY_PATH,
				    "SELECT id FROM folder WHERE account = ? "
				    "AND path = ? AND state IN (0, 1, 4) "
				    "ORDER BY id LIMIT 1");
	int64_t id = 0;

	if (!s)
		return -1;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return id;
}

/* The folder row for path, creating virtual parents on the way. */
static int64_t ensure_parents(struct meta_conn *c, const char *account,
			      int64_t root, const char *path)
{
	const char *slash = strrchr(path, '/');
	char *parent_path, *name;
	int64_t parent, id;

	if (!slash)
		return root;
	parent_path = xstrndup(path, (size_t)(slash - path));
	id = folder_by_path(c, account, parent_path);
	if (id == 0) {
		const char *base = strrchr(parent_path, '/');

		parent = ensure_parents(c, account, root, parent_path);
		name = xstrdup(base ? base + 1 : parent_path);
		id = parent < 0 ? -1
				: meta_create_folder_row(c, account, parent,
							 name, parent_path,
							 MF_FOLDER_VIRTUAL, 0);
		free(name);
	}
	free(parent_path);
	return id;
}

struct renamed {
	int64_t parent;
	char *name;
};

/*
 * A folder the server lists under its old remote name but at another
 * path: renamed or moved on the server, with an id that stays (Graph).
 * Follow it, unless local folder changes are still queued (then the
 * listing may show what they are about to change).
 */
static int follow_rename(struct meta_conn *c, const char *account,
			 int64_t root, int64_t id, const char *path,
			 struct renamed **ren, unsigned int *nren)
{
	struct mf_folder f;
	sqlite3_stmt *s;
	int64_t parent;
	const char *slash = strrchr(path, '/');
	bool queued = false;
	int ret;

	memset(&f, 0, sizeof(f));
	if (mf_store_folder_get(id, &f) < 0 || f.state != MF_FOLDER_PRESENT ||
	    strcmp(f.path, path) == 0 || folder_by_path(c, account, path) > 0) {
		mf_folder_clear(&f);
		return 0;
	}
	s = meta_stmt(c, S_FOLDER_OPS_QUEUED,
		      "SELECT 1 FROM queue WHERE account = ? AND op IN "
		      "(5, 6, 7) LIMIT 1");
	if (!s) {
		mf_folder_clear(&f);
		return -EIO;
	}
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	queued = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_reset(s);
	if (queued) {
		mf_folder_clear(&f);
		return 0;
	}
	parent = ensure_parents(c, account, root, path);
	if (parent < 0) {
		mf_folder_clear(&f);
		return -EIO;
	}
	s = meta_stmt(c, S_FOLDER_FOLLOW,
		      "UPDATE folder SET parent = ?, name = ? WHERE id = ?");
	if (!s) {
		mf_folder_clear(&f);
		return -EIO;
	}
	sqlite3_bind_int64(s, 1, parent);
	sqlite3_bind_text(s, 2, slash ? slash + 1 : path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, id);
	ret = meta_exec_stmt(c, s, "folder follow");
	if (ret == 0)
		ret = meta_repath(c, id, path);
	if (ret == 0)
		ret = meta_bump_mtime(c, f.parent, 0);
	if (ret == 0)
		ret = meta_bump_mtime(c, parent, 0);
	if (ret == 0) {
		mf_info("%s: folder %s is now %s on the server", account,
			f.path, path);
		*ren = xrealloc(*ren, (*nren + 1) * sizeof(**ren));
		(*ren)[*nren].parent = f.parent;
		(*ren)[*nren].name = xstrdup(f.name);
		(*nren)++;
	}
	mf_folder_clear(&f);
	return ret;
}

int mf_store_apply_folder_list(const char *account,
			       const struct mf_remote_folder *folders,
			       unsigned int n)
{
	struct renamed *ren = NULL;
	unsigned int nren = 0;
	struct meta_conn *c;
	sqlite3_stmt *s;
	int64_t root;
	int64_t *listed = xcalloc(n ? n : 1, sizeof(*listed));
	bool have_inbox = false;
	int ret = 0;
	const struct mf_notify_ops *notify = meta_notify();
	int64_t *hidden = NULL;
	unsigned int nhidden = 0;

	ret = mf_store_account_root(account, &root);
	if (ret < 0) {
		free(listed);
		return ret;
	}
	c = meta_wbegin();
	if (!c) {
		free(listed);
		return -EIO;
	}
	for (unsigned int i = 0; i < n && ret == 0; i++) {
		const struct mf_remote_folder *rf = &folders[i];
		int64_t id = 0;
		int state = -1;

		if (rf->attrs & MF_FOLDER_INBOX)
			have_inbox = true;
		s = meta_stmt(c, S_FOLDER_BY_REMOTE,
			      "SELECT id, state FROM folder WHERE account = ? "
			      "AND remote = ? ORDER BY state = 3, id LIMIT 1");
		if (!s) {
			ret = -EIO;
			break;
		}
		sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, rf->remote, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW) {
			id = sqlite3_column_int64(s, 0);
			state = sqlite3_column_int(s, 1);
		}
		sqlite3_reset(s);
		if (id != 0 && state == MF_FOLDER_PRESENT) {
			ret = follow_rename(c, account, root, id, rf->path,
					    &ren, &nren);
			if (ret < 0)
				break;
		}
		if (id == 0 || state == MF_FOLDER_GONE) {
			/* A folder mailfs did not know, or one that came
			 * back: maybe a virtual directory already stands
			 * where it goes. */
			int64_t existing = folder_by_path(c, account,
							  rf->path);
			if (existing > 0) {
				id = existing;
			} else {
				int64_t parent = ensure_parents(c, account,
								root,
								rf->path);
				const char *slash = strrchr(rf->path, '/');

				if (parent < 0) {
					ret = -EIO;
					break;
				}
				id = meta_create_folder_row(
					c, account, parent,
					slash ? slash + 1 : rf->path, rf->path,
					MF_FOLDER_PRESENT,
					(rf->attrs & MF_FOLDER_NOSELECT)
						? 0
						: MF_SUBDIR_ALL);
				if (id < 0) {
					ret = -EIO;
					break;
				}
				mf_info("%s: new folder %s", account,
					rf->path);
			}
		}
		s = meta_stmt(c, S_FOLDER_UPDATE_LISTED,
			      "UPDATE folder SET remote = ?, attrs = ?, "
			      "state = CASE WHEN state IN (2) THEN state "
			      "ELSE 0 END, subdirs = CASE WHEN ? THEN 0 "
			      "WHEN state IN (3, 4) THEN 7 ELSE subdirs END "
			      "WHERE id = ?");
		if (!s) {
			ret = -EIO;
			break;
		}
		sqlite3_bind_text(s, 1, rf->remote, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 2, (int)rf->attrs);
		sqlite3_bind_int(s, 3, (rf->attrs & MF_FOLDER_NOSELECT) != 0);
		sqlite3_bind_int64(s, 4, id);
		ret = meta_exec_stmt(c, s, "folder listed");
		listed[i] = id;
	}
	if (ret == 0 && have_inbox) {
		/* Folders the server no longer lists. */
		s = meta_stmt(c, S_FOLDER_ALL_REMOTE,
			      "SELECT id, parent FROM folder WHERE account = ? "
			      "AND remote IS NOT NULL AND state IN (0, 2)");
		if (!s)
			ret = -EIO;
		else
			sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
		while (ret == 0 && sqlite3_step(s) == SQLITE_ROW) {
			int64_t id = sqlite3_column_int64(s, 0);
			bool found = false;

			for (unsigned int i = 0; i < n && !found; i++)
				found = listed[i] == id;
			if (!found) {
				hidden = xrealloc(hidden, (nhidden + 1) *
								  sizeof(*hidden));
				hidden[nhidden++] = id;
			}
		}
		if (s)
			sqlite3_reset(s);
		for (unsigned int i = 0; i < nhidden && ret == 0; i++) {
			struct mf_folder f;

			memset(&f, 0, sizeof(f));
			ret = meta_set_folder_state(c, hidden[i],
						    MF_FOLDER_GONE);
			if (ret == 0 && mf_store_folder_get(hidden[i], &f) == 0) {
				mf_info("%s: folder %s is gone from the "
					"server", account, f.path);
				meta_bump_mtime(c, f.parent, 0);
			}
			mf_folder_clear(&f);
		}
	} else if (ret == 0) {
		mf_warn("%s: the folder list has no INBOX; not removing any "
			"folder", account);
	}
	ret = meta_wend(c, ret);
	for (unsigned int i = 0; i < nren; i++) {
		if (ret == 0 && notify) {
			notify->inval_entry(mf_ino_folder(ren[i].parent, 0),
					    ren[i].name);
			notify->inval_inode(mf_ino_folder(ren[i].parent, 0));
		}
		free(ren[i].name);
	}
	free(ren);
	if (ret == 0 && notify) {
		/* Parents of new and vanished folders: names changed. */
		notify->inval_inode(mf_ino_folder(root, 0));
		for (unsigned int i = 0; i < nhidden; i++) {
			struct mf_folder f;

			memset(&f, 0, sizeof(f));
			if (mf_store_folder_get(hidden[i], &f) == 0) {
				notify->delete_entry(mf_ino_folder(f.parent, 0),
						     mf_ino_folder(f.id, 0),
						     f.name);
				notify->inval_inode(mf_ino_folder(f.parent, 0));
			}
			mf_folder_clear(&f);
		}
		for (unsigned int i = 0; i < n; i++) {
			struct mf_folder f;

			memset(&f, 0, sizeof(f));
			if (mf_store_folder_get(listed[i], &f) == 0) {
				notify->inval_entry(mf_ino_folder(f.parent, 0),
						    f.name);
				notify->inval_inode(mf_ino_folder(f.parent, 0));
			}
			mf_folder_clear(&f);
		}
	}
	free(hidden);
	free(listed);
	return ret;
}

bool mf_store_account_listed(const char *account)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	bool listed = false;

	if (!c)
		return false;
	s = meta_stmt(c, S_ACCOUNT_LISTED,
		      "SELECT 1 FROM folder WHERE account = ? AND "
		      "(attrs & 2) != 0 LIMIT 1");
	if (!s)
		return false;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	listed = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_reset(s);
	return listed;
}

bool mf_store_folder_was_deleted(const char *account, const char *remote)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	bool gone = false;

	if (!c)
		return false;
	s = meta_stmt(c, S_WAS_DELETED,
		      "SELECT state FROM folder WHERE account = ? AND "
		      "remote = ? ORDER BY state != 3, id LIMIT 1");
	if (!s)
		return false;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, remote, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		gone = sqlite3_column_int(s, 0) == MF_FOLDER_GONE;
	sqlite3_reset(s);
	return gone;
}

int mf_store_prefetch_batch(const char *account, bool unseen_only,
			    uint64_t max_size, int64_t min_date,
			    int64_t after, unsigned int max, int64_t *ids_r,
			    unsigned int *n_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	unsigned int n = 0;

	*n_r = 0;
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_PREFETCH,
		      "SELECT m.id FROM message m JOIN folder f ON "
		      "f.id = m.folder WHERE f.account = ?1 AND m.id > ?2 AND "
		      "m.blob IS NULL AND m.ruid IS NOT NULL AND m.dir != 3 "
		      "AND (?3 = 0 OR (m.flags & 16) = 0) "
		      "AND (?5 = 0 OR m.size <= ?5) "
		      "AND (?6 = 0 OR m.internaldate >= ?6) ORDER BY m.id "
		      "LIMIT ?4");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, unseen_only);
	sqlite3_bind_int(s, 4, (int)max);
	sqlite3_bind_int64(s, 5, (sqlite3_int64)MF_MIN(max_size,
						       (uint64_t)INT64_MAX));
	sqlite3_bind_int64(s, 6, min_date);
	while (n < max && sqlite3_step(s) == SQLITE_ROW)
		ids_r[n++] = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	*n_r = n;
	return 0;
}

int mf_store_folder_known_count(int64_t folder, uint64_t *count_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_KNOWN_COUNT,
		      "SELECT count(*) FROM message WHERE rfolder = ? AND "
		      "ruid IS NOT NULL");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, folder);
	*count_r = 0;
	if (sqlite3_step(s) == SQLITE_ROW)
		*count_r = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return 0;
}

/* ---- message changes ---- */

struct pending_notify {
	int kind;		/* 0 inval entry, 1 delete, 2 inval inode */
	uint64_t parent;
	uint64_t child;
	char *name;
};

struct mf_sync_batch {
	int64_t folder;
	char *account;
	struct mf_changes_info info;
	struct meta_conn *c;	/* open write transaction or NULL */
	int64_t gen;
	unsigned int in_txn;
	uint64_t listed;	/* changes seen */
	uint64_t matched;	/* rows re-matched (reset) */
	uint64_t known_before;
	bool first_sync;	/* no rows before: skip per-entry notices */
	bool may_match;		/* rows wait to be matched by content */
	uint64_t candidates;	/* rows waiting to be matched (reset) */
	bool held;		/* the guard held a removal back */
	int64_t *gone;		/* rows a delta said are expunged */
	unsigned int ngone;
	unsigned int dirs_changed;	/* bits 1 << (dir + 1) */
	struct pending_notify *notes;
	unsigned int nnotes;
	unsigned int ncreate_notes;
	int error;
};

static void note(struct mf_sync_batch *b, int kind, uint64_t parent,
		 uint64_t child, const char *name)
{
	b->notes = xrealloc(b->notes, (b->nnotes + 1) * sizeof(*b->notes));
	b->notes[b->nnotes].kind = kind;
	b->notes[b->nnotes].parent = parent;
	b->notes[b->nnotes].child = child;
	b->notes[b->nnotes].name = xstrdup(name);
	b->nnotes++;
}

static void flush_notes(struct mf_sync_batch *b)
{
	const struct mf_notify_ops *n = meta_notify();

	for (unsigned int i = 0; i < b->nnotes; i++) {
		struct pending_notify *p = &b->notes[i];

		if (n && p->kind == 1)
			n->delete_entry(p->parent, p->child, p->name);
		else if (n && p->kind == 2)
			n->inval_inode(p->parent);
		else if (n)
			n->inval_entry(p->parent, p->name);
		free(p->name);
	}
	b->nnotes = 0;
	b->ncreate_notes = 0;
	if (n) {
		for (int d = 0; d < 3; d++) {
			if (b->dirs_changed & (1u << (d + 1)))
				n->inval_inode(mf_ino_folder(b->folder, d + 1));
		}
	}
	b->dirs_changed = 0;
}

static int batch_txn(struct mf_sync_batch *b)
{
	if (b->c)
		return 0;
	b->c = meta_wbegin();
	b->in_txn = 0;
	return b->c ? 0 : -EIO;
}

static int batch_commit(struct mf_sync_batch *b)
{
	int ret;

	if (!b->c)
		return 0;
	for (int d = 0; d < 3; d++) {
		if (b->dirs_changed & (1u << (d + 1)))
			meta_bump_mtime(b->c, b->folder, d + 1);
	}
	ret = meta_wend(b->c, 0);
	b->c = NULL;
	if (ret == 0)
		flush_notes(b);
	return ret;
}

int mf_sync_batch_begin(int64_t folder, const struct mf_changes_info *info,
			struct mf_sync_batch **b_r)
{
	struct mf_sync_batch *b = xcalloc(1, sizeof(*b));
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int ret;

	if (!c) {
		free(b);
		return -EIO;
	}
	b->folder = folder;
	b->info = *info;
	b->gen = mf_now_ns();
	b->account = meta_folder_account(c, folder);
	mf_store_folder_known_count(folder, &b->known_before);
	b->first_sync = b->known_before == 0;
	ret = batch_txn(b);
	if (ret == 0) {
		/*
		 * Rows that may be matched by content (uploads, moves, a
		 * reset). Usually there are none, and the lookup per new
		 * message can be skipped: on a first listing of 100,000
		 * messages that is most of the work.
		 */
		s = meta_stmt(b->c, S_HAS_UNMATCHED,
			      "SELECT 1 FROM message WHERE folder = ? AND "
			      "(ruid IS NULL OR rfolder != folder) AND "
			      "state IN (2, 3, 4, 6) LIMIT 1");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int64(s, 1, folder);
			b->may_match = info->reset ||
				       sqlite3_step(s) == SQLITE_ROW;
			sqlite3_reset(s);
		}
	}
	if (ret == 0 && info->reset) {
		/*
		 * The server renumbered the folder: every row it had loses
		 * its id and waits to be matched by content.
		 */
		s = meta_stmt(b->c, S_RESET_FOLDER,
			      "UPDATE message SET ruid = NULL, rfolder = 0, "
			      "state = 6 WHERE rfolder = ? AND folder = ? AND "
			      "state IN (0, 6)");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int64(s, 1, folder);
			sqlite3_bind_int64(s, 2, folder);
			ret = meta_exec_stmt(b->c, s, "reset folder");
		}
		if (ret == 0) {
			s = meta_stmt(b->c, S_COUNT_CANDIDATES,
				      "SELECT count(*) FROM message WHERE "
				      "folder = ? AND state = 6 AND ruid IS "
				      "NULL AND dir != 3");
			if (!s) {
				ret = -EIO;
			} else {
				sqlite3_bind_int64(s, 1, folder);
				if (sqlite3_step(s) == SQLITE_ROW)
					b->candidates = (uint64_t)
						sqlite3_column_int64(s, 0);
				sqlite3_reset(s);
			}
		}
		mf_notice("%s: folder %lld was renumbered by the server "
			  "(UIDVALIDITY); matching %llu messages by content",
			  b->account ? b->account : "?", (long long)folder,
			  (unsigned long long)b->candidates);
	}
	if (ret < 0) {
		if (b->c)
			meta_wend(b->c, ret);
		free(b->account);
		free(b);
		return ret;
	}
	*b_r = b;
	return 0;
}

static void rename_for_flags(const struct mf_message *m, unsigned int flags,
			     int *dir_r, char *buf, size_t size)
{
	struct mf_maildir_name n;
	int dir = m->dir;

	if (dir == MF_DIR_NEW && (flags & MF_FLAG_SEEN))
		dir = MF_DIR_CUR;
	if (mf_maildir_parse(m->name, &n) < 0 ||
	    mf_maildir_format(n.uniq, flags, n.extra,
			      n.has_info || dir == MF_DIR_CUR, buf, size) < 0)
		snprintf(buf, size, "%s", m->name);
	*dir_r = dir;
}

/* A server message matches an existing row: merge flags, rename. */
static int apply_known(struct mf_sync_batch *b, struct mf_message *m,
		       const struct mf_msg_info *info)
{
	unsigned int server = info->flags;
	unsigned int local = m->flags;
	unsigned int merged;
	char name[MF_NAME_MAX + 1];
	int dir = m->dir;
	sqlite3_stmt *s;
	int ret;

	/* Bits the server cannot store keep the local value (Gmail). */
	server = (server & ~b->info.local_flags) |
		 (m->base_flags & b->info.local_flags);
	/* Bits changed locally since the base keep the local value. */
	merged = (local & (local ^ m->base_flags)) |
		 (server & ~(local ^ m->base_flags));
	merged &= MF_FLAG_ALL;
	snprintf(name, sizeof(name), "%s", m->name);
	if (merged != local && m->dir != MF_DIR_GONE)
		rename_for_flags(m, merged, &dir, name, sizeof(name));
	s = meta_stmt(b->c, S_UPDATE_FLAGS,
		      "UPDATE message SET flags = ?, base_flags = ?, gen = ?, "
		      "dir = ?, name = ? WHERE id = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int(s, 1, (int)merged);
	sqlite3_bind_int(s, 2, (int)server);
	sqlite3_bind_int64(s, 3, b->gen);
	sqlite3_bind_int(s, 4, dir);
	sqlite3_bind_text(s, 5, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, m->id);
	ret = meta_exec_stmt(b->c, s, "update flags");
	if (ret < 0)
		return ret;
	if (dir != m->dir || strcmp(name, m->name) != 0) {
		mf_debug(MF_DBG_SYNC, "sync: %s -> %s", m->name, name);
		note(b, 0, mf_ino_folder(m->folder, m->dir + 1), 0, m->name);
		note(b, 0, mf_ino_folder(m->folder, dir + 1), 0, name);
		b->dirs_changed |= 1u << (m->dir + 1);
		b->dirs_changed |= 1u << (dir + 1);
	}
	/* A local change still differs from the server: push it. */
	if (merged != server && m->ruid &&
	    !meta_queue_has_fresh(b->c, MF_OP_FLAGS, m->id) && b->account)
		ret = meta_queue_push(b->c, b->account, MF_OP_FLAGS, m->id,
				      m->folder, NULL);
	return ret;
}

static int find_by_server(struct mf_sync_batch *b, const char *ruid,
			  struct mf_message *m)
{
	sqlite3_stmt *s = meta_stmt(b->c, S_BY_SERVER,
				    "SELECT " MSG_COLS " FROM message WHERE "
				    "rfolder = ? AND ruid = ?");
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, b->folder);
	sqlite3_bind_text(s, 2, ruid, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		meta_read_message(s, m);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(b->c, "by server");
}

static int find_match(struct mf_sync_batch *b, const struct mf_msg_info *info,
		      struct mf_message *m)
{
	sqlite3_stmt *s = meta_stmt(
		b->c, S_MATCH,
		"SELECT " MSG_COLS " FROM message m WHERE folder = ? AND "
		"msgid IS ? AND (size = ? OR ?) AND dir != 2 AND "
		"((ruid IS NULL AND (state = 6 OR (state = 2 AND EXISTS "
		"(SELECT 1 FROM queue q WHERE q.message = m.id AND q.op = 2 "
		"AND q.attempts > 0)) OR (state = 4 AND EXISTS (SELECT 1 "
		"FROM queue q WHERE q.message = m.id AND q.op = 4)))) OR "
		"(state = 3 AND rfolder != folder AND EXISTS (SELECT 1 FROM "
		"queue q WHERE q.message = m.id AND q.op = 3 AND "
		"q.attempts > 0))) "
		"ORDER BY internaldate = ? DESC, id LIMIT 1");
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, b->folder);
	if (info->message_id)
		sqlite3_bind_text(s, 2, info->message_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, (int64_t)info->size);
	/* An estimated size (Graph) cannot match: the Message-ID must. */
	sqlite3_bind_int(s, 4, !info->size_exact && info->message_id);
	sqlite3_bind_int64(s, 5, info->internaldate);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		meta_read_message(s, m);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(b->c, "match");
}

static int set_server(struct meta_conn *c, int64_t id, int64_t rfolder,
		      const char *ruid, int state)
{
	sqlite3_stmt *s = meta_stmt(c, S_SET_SERVER,
				    "UPDATE message SET rfolder = ?, ruid = ?,"
				    " state = ? WHERE id = ?");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, rfolder);
	if (ruid)
		sqlite3_bind_text(s, 2, ruid, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, state);
	sqlite3_bind_int64(s, 4, id);
	return meta_exec_stmt(c, s, "set server");
}

/*
 * Account-global ids (MF_CAP_GLOBAL_IDS): the row of the same message in
 * another folder of the account, for its unique name part, size and body.
 */
static int find_sibling(struct mf_sync_batch *b, const char *ruid,
			struct mf_message *m)
{
	sqlite3_stmt *s = meta_stmt(
		b->c, S_SIBLING,
		"SELECT " MSG_COLS " FROM message WHERE rfolder IN (SELECT id "
		"FROM folder WHERE account = ?) AND rfolder != ? AND ruid = ? "
		"AND state != 5 ORDER BY blob IS NULL, id LIMIT 1");
	int rc;

	if (!s || !b->account)
		return -EIO;
	sqlite3_bind_text(s, 1, b->account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, b->folder);
	sqlite3_bind_text(s, 3, ruid, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		meta_read_message(s, m);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(b->c, "sibling");
}

static int insert_new(struct mf_sync_batch *b, const struct mf_msg_info *info,
		      int64_t *id_r)
{
	char name[MF_NAME_MAX + 1];
	int dir = (info->flags & MF_FLAG_SEEN) ? MF_DIR_CUR : MF_DIR_NEW;
	int64_t id = meta_next_message_id(b->c);
	struct mf_message sib;
	struct mf_maildir_name sn;
	uint64_t size = info->size;
	sqlite3_stmt *s;
	int ret;

	if (id < 0)
		return -EIO;
	/* An estimate (Gmail's sizeEstimate) stays out of the name. */
	meta_server_name(id, info->internaldate,
			 info->size_exact ? size : META_SIZE_UNKNOWN,
			 info->flags, dir, name, sizeof(name));
	memset(&sib, 0, sizeof(sib));
	if (b->info.global_ids && find_sibling(b, info->id, &sib) == 0 &&
	    mf_maildir_parse(sib.name, &sn) == 0 &&
	    mf_maildir_format(sn.uniq, info->flags, "", dir == MF_DIR_CUR,
			      name, sizeof(name)) == 0) {
		/* One message in several folders: one unique part, one
		   body (fetched once), the size the sibling knows. */
		size = sib.size;
	} else {
		mf_message_clear(&sib);
		memset(&sib, 0, sizeof(sib));
	}
	s = meta_stmt(b->c, S_INSERT_MSG,
		      "INSERT INTO message (id, folder, dir, name, rfolder, "
		      "ruid, flags, base_flags, size, internaldate, ctime, "
		      "msgid, state, gen, blob, size_est) VALUES (?, ?, ?, ?, ?, ?, "
		      "?, ?, ?, ?, ?, ?, 0, ?, ?, ?)");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, b->folder);
	sqlite3_bind_int(s, 3, dir);
	sqlite3_bind_text(s, 4, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, b->folder);
	sqlite3_bind_text(s, 6, info->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 7, (int)(info->flags & MF_FLAG_ALL));
	sqlite3_bind_int(s, 8, (int)(info->flags & MF_FLAG_ALL));
	sqlite3_bind_int64(s, 9, (int64_t)size);
	sqlite3_bind_int64(s, 10, info->internaldate);
	sqlite3_bind_int64(s, 11, mf_now_ns());
	if (info->message_id)
		sqlite3_bind_text(s, 12, info->message_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 13, b->gen);
	if (sib.blob)
		sqlite3_bind_text(s, 14, sib.blob, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(s, 15, !info->size_exact && !sib.blob);
	ret = meta_exec_stmt(b->c, s, "insert message");
	mf_message_clear(&sib);
	if (ret < 0)
		return ret;
	*id_r = id;
	b->dirs_changed |= 1u << (dir + 1);
	if (!b->first_sync && b->ncreate_notes < BATCH_MAX_CREATE_NOTIFY) {
		/* Kill a negative dentry of the new name, if any. */
		note(b, 0, mf_ino_folder(b->folder, dir + 1), 0, name);
		b->ncreate_notes++;
	}
	return 0;
}

static int apply_gone(struct mf_sync_batch *b, struct mf_message *m)
{
	int ret;

	if (b->info.global_ids && m->blob && m->ruid && b->account) {
		/*
		 * The message left this folder but may stand in others
		 * (a label moved): they keep the body this row had.
		 */
		sqlite3_stmt *s = meta_stmt(
			b->c, S_PASS_BLOB,
			"UPDATE message SET blob = ?1, size = ?4, size_est = 0 "
			"WHERE ruid = ?2 AND blob IS NULL AND rfolder IN "
			"(SELECT id FROM folder WHERE account = ?3)");

		if (!s)
			return -EIO;
		/* With its body, the size is exact (mf_store_set_blob). */
		sqlite3_bind_text(s, 1, m->blob, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, m->ruid, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, b->account, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, (int64_t)m->size);
		ret = meta_exec_stmt(b->c, s, "pass blob");
		if (ret < 0)
			return ret;
	}

	switch (m->state) {
	case MF_MSG_MOVING:
		/*
		 * Gone from where the move starts: moved already (by us
		 * before a crash, or by someone), or expunged. The row waits
		 * to be matched in its new folder.
		 */
		return set_server(b->c, m->id, 0, NULL, MF_MSG_MATCH);
	case MF_MSG_DELETING:
		return set_server(b->c, m->id, 0, NULL, MF_MSG_EXPUNGED);
	default:
		break;
	}
	/* With ids_follow the tombstone keeps its id: if the message turns
	   up in another folder (moved there), it is this row again. */
	ret = set_server(b->c, m->id, 0, b->info.ids_follow ? m->ruid : NULL,
			 MF_MSG_EXPUNGED);
	if (ret < 0)
		return ret;
	if (m->dir != MF_DIR_GONE) {
		sqlite3_stmt *s = meta_stmt(b->c, S_SET_GONE,
					    "UPDATE message SET dir = 3, "
					    "link_name = NULL WHERE id = ?");
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, m->id);
		ret = meta_exec_stmt(b->c, s, "set gone");
		note(b, 1, mf_ino_folder(m->folder, m->dir + 1),
		     (uint64_t)m->id, m->name);
		b->dirs_changed |= 1u << (m->dir + 1);
	}
	return ret;
}

/*
 * ids_follow: the message id was known in another folder of the account
 * (still there, its removal not yet listed; or a tombstone of that
 * removal). Move the row here, keeping its name, inode and body.
 */
static int find_moved(struct mf_sync_batch *b, const char *ruid,
		      struct mf_message *m)
{
	sqlite3_stmt *s = meta_stmt(
		b->c, S_FIND_MOVED,
		/* message_server (rfolder, ruid): a point lookup per folder
		   of the account, and one for the tombstones (rfolder 0) */
		"SELECT " MSG_COLS " FROM message WHERE ruid = ?1 AND "
		"rfolder IN (SELECT id FROM folder WHERE account = ?3 "
		"UNION ALL SELECT 0) AND ((state = 0 AND rfolder != 0 AND "
		"rfolder != ?2 AND rfolder = folder) OR (state = 5 AND "
		"rfolder = 0 AND folder IN (SELECT id FROM folder WHERE "
		"account = ?3))) ORDER BY state LIMIT 1");
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, ruid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, b->folder);
	sqlite3_bind_text(s, 3, b->account, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		meta_read_message(s, m);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(b->c, "find moved");
}

static int relocate(struct mf_sync_batch *b, struct mf_message *m)
{
	int dir = m->dir;
	sqlite3_stmt *s;
	int ret;

	if (dir == MF_DIR_GONE)
		dir = (m->flags & MF_FLAG_SEEN) ? MF_DIR_CUR : MF_DIR_NEW;
	s = meta_stmt(b->c, S_RELOCATE,
		      "UPDATE message SET folder = ?, rfolder = ?, state = 0, "
		      "dir = ?, gen = ? WHERE id = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, b->folder);
	sqlite3_bind_int64(s, 2, b->folder);
	sqlite3_bind_int(s, 3, dir);
	sqlite3_bind_int64(s, 4, b->gen);
	sqlite3_bind_int64(s, 5, m->id);
	ret = meta_exec_stmt(b->c, s, "relocate");
	if (ret < 0)
		return ret;
	mf_debug(MF_DBG_SYNC, "sync: message %lld moved on the server from "
		 "folder %lld", (long long)m->id, (long long)m->folder);
	if (m->dir != MF_DIR_GONE) {
		uint64_t old = mf_ino_folder(m->folder, m->dir + 1);

		note(b, 1, old, (uint64_t)m->id, m->name);
		note(b, 2, old, 0, "");
		ret = meta_bump_mtime(b->c, m->folder, m->dir + 1);
	}
	note(b, 0, mf_ino_folder(b->folder, dir + 1), 0, m->name);
	b->dirs_changed |= 1u << (dir + 1);
	m->folder = b->folder;
	m->rfolder = b->folder;
	m->dir = dir;
	m->state = MF_MSG_SYNCED;
	return ret;
}

int mf_sync_batch_change(struct mf_sync_batch *b, const struct mf_change *ch)
{
	struct mf_message m;
	int64_t row = 0;	/* the row an UPSERT landed in */
	int ret;

	if (b->error)
		return b->error;
	ret = batch_txn(b);
	if (ret < 0)
		return b->error = ret;
	memset(&m, 0, sizeof(m));
	b->listed++;
	ret = find_by_server(b, ch->msg.id, &m);
	if (ch->kind == MF_CHANGE_GONE) {
		/* Applied at the end, after the mass-deletion guard. */
		if (ret == 0) {
			b->gone = xrealloc(b->gone, (b->ngone + 1) *
							    sizeof(*b->gone));
			b->gone[b->ngone++] = m.id;
		} else if (ret == -ENOENT) {
			ret = 0;
		}
	} else if (ret == 0) {
		row = m.id;
		ret = apply_known(b, &m, &ch->msg);
	} else if (ret == -ENOENT && !ch->msg.has_meta) {
		ret = 0;	/* flags of a message we never listed */
	} else if (ret == -ENOENT && b->info.ids_follow && b->account &&
		   find_moved(b, ch->msg.id, &m) == 0) {
		ret = relocate(b, &m);
		if (ret == 0)
			ret = apply_known(b, &m, &ch->msg);
	} else if (ret == -ENOENT) {
		ret = b->may_match ? find_match(b, &ch->msg, &m) : -ENOENT;
		if (ret == 0) {
			mf_debug(MF_DBG_SYNC, "sync: matched %s to row %lld",
				 ch->msg.id, (long long)m.id);
			b->matched++;
			ret = set_server(b->c, m.id, b->folder, ch->msg.id,
					 m.state == MF_MSG_DELETING
						 ? MF_MSG_DELETING
						 : MF_MSG_SYNCED);
			if (ret == 0) {
				/*
				 * An upload carried the local flags, so they
				 * are its base; a moved or renumbered
				 * message keeps the base it had.
				 */
				if (m.state == MF_MSG_APPEND)
					m.base_flags = m.flags;
				free(m.ruid);
				m.ruid = xstrdup(ch->msg.id);
				row = m.id;
				ret = apply_known(b, &m, &ch->msg);
			}
		} else if (ret == -ENOENT) {
			ret = insert_new(b, &ch->msg, &row);
		}
	}
	/* The header lines [view] rules match on (meta_views.c). */
	if (ret == 0 && row > 0 && ch->msg.has_meta && ch->msg.headers)
		ret = meta_store_headers(b->c, row, ch->msg.headers);
	mf_message_clear(&m);
	if (ret < 0)
		return b->error = ret;
	if (++b->in_txn >= BATCH_COMMIT_EVERY) {
		ret = batch_commit(b);
		if (ret < 0)
			return b->error = ret;
	}
	return 0;
}

/* Remember why a folder is held, for the status; the log says it too. */
static void hold(struct mf_sync_batch *b, const char *why)
{
	sqlite3_stmt *s = meta_stmt(b->c, S_SET_HELD,
				    "UPDATE folder SET held = ? WHERE id = ?");

	mf_warn("%s: folder %lld: %s", b->account ? b->account : "?",
		(long long)b->folder, why);
	b->held = true;
	if (s) {
		sqlite3_bind_text(s, 1, why, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, b->folder);
		meta_exec_stmt(b->c, s, "set held");
	}
}

/* Did the user accept a removal held back in this folder? */
static bool accepted(struct mf_sync_batch *b)
{
	sqlite3_stmt *s = meta_stmt(b->c, S_ACCEPTED,
				    "SELECT accept FROM folder WHERE id = ?");
	bool yes = false;

	if (!s)
		return false;
	sqlite3_bind_int64(s, 1, b->folder);
	if (sqlite3_step(s) == SQLITE_ROW)
		yes = sqlite3_column_int(s, 0) != 0;
	sqlite3_reset(s);
	return yes;
}

/* After a snapshot: rows the listing did not mention are gone. */
static int sweep_unlisted(struct mf_sync_batch *b)
{
	sqlite3_stmt *s;
	struct mf_message *gone = NULL;
	unsigned int n = 0;
	int ret = 0;
	bool accept = accepted(b);

	if (!accept && b->listed == 0 &&
	    (b->known_before > 0 || b->candidates > 0)) {
		char *why = xasprintf(
			"the server listed no messages where mailfs knows "
			"%llu; nothing was removed",
			(unsigned long long)MF_MAX(b->known_before,
						   b->candidates));
		hold(b, why);
		free(why);
		return 0;
	}
	if (!accept && b->info.reset && b->candidates > 0 &&
	    b->matched * 2 < b->candidates) {
		/*
		 * Most of what mailfs knew is not there under the new
		 * numbering: a broken server as likely as a deliberate
		 * change. Keep the unmatched ones.
		 */
		char *why = xasprintf(
			"renumbered by the server (UIDVALIDITY) and only %llu "
			"of %llu known messages matched; nothing was removed",
			(unsigned long long)b->matched,
			(unsigned long long)b->candidates);
		hold(b, why);
		free(why);
		return 0;
	}
	s = meta_stmt(b->c, S_UNLISTED,
		      "SELECT " MSG_COLS " FROM message WHERE ((rfolder = ? "
		      "AND ruid IS NOT NULL AND gen != ?) OR (folder = ? AND "
		      "state = 6 AND ruid IS NULL AND ?))");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, b->folder);
	sqlite3_bind_int64(s, 2, b->gen);
	sqlite3_bind_int64(s, 3, b->folder);
	sqlite3_bind_int(s, 4, b->info.reset);
	while (sqlite3_step(s) == SQLITE_ROW) {
		gone = xrealloc(gone, (n + 1) * sizeof(*gone));
		meta_read_message(s, &gone[n]);
		n++;
	}
	sqlite3_reset(s);
	if (!accept && n > MASS_DELETE_MIN &&
	    (uint64_t)n * 2 > b->known_before) {
		/* DESIGN.md safety rule 3: more than half of a folder. */
		char *why = xasprintf("a complete listing would remove %u of "
				      "%llu messages; nothing was removed", n,
				      (unsigned long long)b->known_before);
		hold(b, why);
		free(why);
		for (unsigned int i = 0; i < n; i++)
			mf_message_clear(&gone[i]);
		free(gone);
		return 0;
	}
	for (unsigned int i = 0; i < n; i++) {
		if (ret == 0)
			ret = apply_gone(b, &gone[i]);
		mf_message_clear(&gone[i]);
	}
	free(gone);
	return ret;
}

/* Expunges a delta reported, unless they are most of the folder. */
static int apply_delta_gone(struct mf_sync_batch *b)
{
	int ret = 0;

	bool empties = b->ngone >= b->known_before &&
		       b->known_before > MASS_EMPTY_MIN;

	if (!b->info.gone_is_relabel &&
	    (empties || (b->ngone > MASS_DELETE_MIN &&
			 (uint64_t)b->ngone * 2 > b->known_before)) &&
	    !accepted(b)) {
		char *why = xasprintf("the server says %u of %llu messages "
				      "were expunged; nothing was removed",
				      b->ngone,
				      (unsigned long long)b->known_before);
		hold(b, why);
		free(why);
		return 0;
	}
	for (unsigned int i = 0; i < b->ngone && ret == 0; i++) {
		struct mf_message m;

		memset(&m, 0, sizeof(m));
		ret = mf_store_message_get(b->gone[i], &m);
		if (ret == 0 && m.rfolder == b->folder && m.ruid)
			ret = apply_gone(b, &m);
		else if (ret == -ENOENT || ret == 0)
			ret = 0;
		mf_message_clear(&m);
	}
	return ret;
}

int mf_sync_batch_end(struct mf_sync_batch **bp, const char *cursor, bool ok)
{
	struct mf_sync_batch *b = *bp;
	int ret = b->error;

	*bp = NULL;
	if (ret == 0 && ok) {
		ret = batch_txn(b);
		if (ret == 0 && b->ngone)
			ret = apply_delta_gone(b);
		if (ret == 0 && b->info.snapshot)
			ret = sweep_unlisted(b);
		/*
		 * Held back: keep the old cursor, so the next sync looks
		 * again (and says so again) instead of taking the folder as
		 * unchanged.
		 */
		if (ret == 0 && cursor && !b->held) {
			sqlite3_stmt *s = meta_stmt(
				b->c, S_SET_CURSOR,
				"UPDATE folder SET cursor = ?, held = CASE "
				"WHEN ? THEN held ELSE NULL END, accept = 0 "
				"WHERE id = ?");
			if (!s) {
				ret = -EIO;
			} else {
				sqlite3_bind_text(s, 1, cursor, -1,
						  SQLITE_STATIC);
				sqlite3_bind_int(s, 2, b->listed == 0 &&
							       b->known_before >
								       0);
				sqlite3_bind_int64(s, 3, b->folder);
				ret = meta_exec_stmt(b->c, s, "set cursor");
			}
		}
	}
	if (b->c) {
		if (ret == 0) {
			ret = batch_commit(b);
		} else {
			meta_wend(b->c, ret);
			b->c = NULL;
		}
	}
	for (unsigned int i = 0; i < b->nnotes; i++)
		free(b->notes[i].name);
	free(b->notes);
	free(b->gone);
	free(b->account);
	free(b);
	return ret;
}

/* ---- the queue ---- */

void mf_queue_entry_clear(struct mf_queue_entry *e)
{
	free(e->arg);
	memset(e, 0, sizeof(*e));
}

int mf_store_queue_first(const char *account, struct mf_queue_entry *e)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_QUEUE_FIRST,
		      "SELECT id, op, message, folder, arg, attempts, next_try"
		      " FROM queue WHERE account = ? ORDER BY id LIMIT 1");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const unsigned char *arg = sqlite3_column_text(s, 4);

		e->id = sqlite3_column_int64(s, 0);
		e->op = sqlite3_column_int(s, 1);
		e->message = sqlite3_column_int64(s, 2);
		e->folder = sqlite3_column_int64(s, 3);
		e->arg = arg ? xstrdup((const char *)arg) : NULL;
		e->attempts = sqlite3_column_int(s, 5);
		e->next_try = sqlite3_column_int64(s, 6);
	}
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(c, "queue first");
}

int mf_store_queue_flags_run(const char *account, int64_t after,
			     unsigned int max, int64_t *entries,
			     int64_t *msgs, unsigned int *n_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;

	*n_r = 0;
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_QUEUE_AFTER,
		      "SELECT id, op, message, attempts, next_try FROM queue "
		      "WHERE account = ? AND id > ? ORDER BY id LIMIT ?");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, after);
	sqlite3_bind_int(s, 3, (int)max);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		/* Only a run of fresh flag changes: order stays as queued. */
		if (sqlite3_column_int(s, 1) != MF_OP_FLAGS ||
		    sqlite3_column_int(s, 3) != 0 ||
		    sqlite3_column_int64(s, 4) != 0)
			break;
		entries[*n_r] = sqlite3_column_int64(s, 0);
		msgs[(*n_r)++] = sqlite3_column_int64(s, 2);
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE
		       ? 0
		       : meta_dberr(c, "queue run");
}

static int queue_update(unsigned int idx, const char *sql, int64_t entry,
			int64_t arg, const char *text)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, idx, sql);
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_int64(s, 1, entry);
	if (strstr(sql, "?2"))
		sqlite3_bind_int64(s, 2, arg);
	if (strstr(sql, "?3") && text)
		sqlite3_bind_text(s, 3, text, -1, SQLITE_STATIC);
	return meta_wend(c, meta_exec_stmt(c, s, "queue update"));
}

int mf_store_queue_attempt(int64_t entry)
{
	return queue_update(S_QUEUE_ATTEMPT,
			    "UPDATE queue SET attempts = attempts + 1 "
			    "WHERE id = ?1",
			    entry, 0, NULL);
}

int mf_store_queue_done(int64_t entry)
{
	return queue_update(S_QUEUE_DONE, "DELETE FROM queue WHERE id = ?1",
			    entry, 0, NULL);
}

int mf_store_queue_requeue(int64_t entry)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_REQUEUE_INS,
		      "INSERT INTO queue (account, op, message, folder, arg, "
		      "attempts, next_try, last_error, created) SELECT account,"
		      " op, message, folder, arg, attempts, 0, last_error, "
		      "created FROM queue WHERE id = ?");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_int64(s, 1, entry);
	ret = meta_exec_stmt(c, s, "requeue");
	if (ret == 0) {
		s = meta_stmt(c, S_REQUEUE_DEL,
			      "DELETE FROM queue WHERE id = ?");
		if (!s)
			return meta_wend(c, -EIO);
		sqlite3_bind_int64(s, 1, entry);
		ret = meta_exec_stmt(c, s, "requeue");
	}
	return meta_wend(c, ret);
}

bool mf_store_queue_has_mkdir(int64_t folder)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	bool found;

	if (!c)
		return false;
	s = meta_stmt(c, S_HAS_MKDIR,
		      "SELECT 1 FROM queue WHERE folder = ? AND op = 5");
	if (!s)
		return false;
	sqlite3_bind_int64(s, 1, folder);
	found = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_reset(s);
	return found;
}

int mf_store_queue_retry(int64_t entry, int64_t next_try_ms,
			 const char *error)
{
	return queue_update(S_QUEUE_RETRY,
			    "UPDATE queue SET next_try = ?2, last_error = ?3 "
			    "WHERE id = ?1",
			    entry, next_try_ms, error);
}

/* Make a hidden or moved row visible again where the server has it. */
static int restore_row(struct meta_conn *c, const struct mf_message *m,
		       int64_t folder, unsigned int flags)
{
	char name[MF_NAME_MAX + 1];
	int dir = (flags & MF_FLAG_SEEN) ? MF_DIR_CUR : MF_DIR_NEW;
	sqlite3_stmt *s;
	int ret;

	meta_server_name(m->id, m->internaldate,
			 m->size_estimated ? META_SIZE_UNKNOWN : m->size, flags,
			 dir, name, sizeof(name));
	s = meta_stmt(c, S_UPDATE_FLAGS,
		      "UPDATE message SET flags = ?, base_flags = ?, gen = ?, "
		      "dir = ?, name = ? WHERE id = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int(s, 1, (int)flags);
	sqlite3_bind_int(s, 2, (int)flags);
	sqlite3_bind_int64(s, 3, 0);
	sqlite3_bind_int(s, 4, dir);
	sqlite3_bind_text(s, 5, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, m->id);
	ret = meta_exec_stmt(c, s, "restore");
	if (ret == 0) {
		s = meta_stmt(c, S_RESTORE_PLACE,
			      "UPDATE message SET folder = ?, state = 0 "
			      "WHERE id = ?");
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, folder);
		sqlite3_bind_int64(s, 2, m->id);
		ret = meta_exec_stmt(c, s, "restore place");
	}
	if (ret == 0)
		ret = meta_bump_mtime(c, folder, dir + 1);
	return ret;
}

int mf_store_queue_failed(const struct mf_queue_entry *e, const char *error)
{
	struct meta_conn *c;
	struct mf_message m;
	int ret = 0;

	memset(&m, 0, sizeof(m));
	/* If the row is gone, m stays empty and only the entry goes. */
	if (e->message)
		mf_store_message_get(e->message, &m);
	c = meta_wbegin();
	if (!c) {
		mf_message_clear(&m);
		return -EIO;
	}
	switch (e->op) {
	case MF_OP_FLAGS:
		/* The server refused: show its flags again. */
		if (m.id && m.ruid && m.dir != MF_DIR_GONE)
			ret = restore_row(c, &m, m.folder, m.base_flags);
		break;
	case MF_OP_MOVE:
		if (m.id && m.ruid && m.rfolder && m.dir != MF_DIR_GONE)
			ret = restore_row(c, &m, m.rfolder, m.flags);
		break;
	case MF_OP_EXPUNGE:
		if (m.id && m.ruid && m.rfolder)
			ret = restore_row(c, &m, m.rfolder, m.base_flags);
		break;
	case MF_OP_APPEND:
		/* Never lose it: it stays as a local-only message. */
		break;
	case MF_OP_MKDIR:
		ret = meta_set_folder_state(c, e->folder, MF_FOLDER_GONE);
		break;
	case MF_OP_RMDIR:
		ret = meta_set_folder_state(c, e->folder, MF_FOLDER_PRESENT);
		break;
	default:
		break;
	}
	if (ret == 0) {
		sqlite3_stmt *s = meta_stmt(c, S_QUEUE_DONE,
					    "DELETE FROM queue WHERE id = ?1");
		if (s) {
			sqlite3_bind_int64(s, 1, e->id);
			ret = meta_exec_stmt(c, s, "queue drop");
		}
	}
	ret = meta_wend(c, ret);
	mf_err("write-back of operation %d (message %lld, folder %lld) failed "
	       "for good: %s", e->op, (long long)e->message,
	       (long long)e->folder, error ? error : "unknown error");
	if (meta_notify() && m.id) {
		meta_notify()->inval_entry(mf_ino_folder(m.folder, m.dir + 1),
					   m.name);
		meta_notify()->inval_inode(mf_ino_folder(m.folder, m.dir + 1));
	}
	mf_message_clear(&m);
	return ret;
}

/* ---- write-back results ---- */

int mf_store_flags_pushed(int64_t msg, unsigned int pushed,
			  unsigned int mask, bool *more_r)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	sqlite3_stmt *s;
	int ret;

	*more_r = false;
	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg, &m);
	if (ret == 0) {
		s = meta_stmt(c, S_BASE_PUSHED,
			      "UPDATE message SET base_flags = ? WHERE id = ?");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int(s, 1, (int)pushed);
			sqlite3_bind_int64(s, 2, msg);
			ret = meta_exec_stmt(c, s, "flags pushed");
		}
		*more_r = ((m.flags ^ pushed) & mask) != 0;
	}
	mf_message_clear(&m);
	return meta_wend(c, ret == -ENOENT ? 0 : ret);
}

/*
 * The server now has msg in folder as ruid (NULL: it did not say) with
 * flags. What the user did meanwhile (another rename, a move, an unlink)
 * is still to be done: queue it again against the new server place.
 */
static int landed(struct meta_conn *c, int64_t msg, int64_t folder,
		  const char *ruid, unsigned int flags)
{
	struct mf_message m;
	char *account = NULL;
	sqlite3_stmt *s;
	int state, ret;

	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg, &m);
	if (ret < 0)
		return ret == -ENOENT ? 0 : ret;
	if (!ruid)
		state = MF_MSG_MATCH;
	else if (m.state == MF_MSG_DELETING)
		state = MF_MSG_DELETING;	/* the EXPUNGE follows */
	else if (m.folder != folder)
		state = MF_MSG_MOVING;
	else
		state = MF_MSG_SYNCED;
	ret = set_server(c, msg, ruid ? folder : 0, ruid, state);
	if (ret == 0) {
		s = meta_stmt(c, S_BASE_PUSHED,
			      "UPDATE message SET base_flags = ? WHERE id = ?");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int(s, 1, (int)flags);
			sqlite3_bind_int64(s, 2, msg);
			ret = meta_exec_stmt(c, s, "base flags");
		}
	}
	account = meta_folder_account(c, m.folder);
	if (ret == 0 && ruid && account && state == MF_MSG_MOVING &&
	    !meta_queue_has_fresh(c, MF_OP_MOVE, msg))
		ret = meta_queue_push(c, account, MF_OP_MOVE, msg, m.folder,
				      NULL);
	if (ret == 0 && ruid && account && m.flags != flags &&
	    state != MF_MSG_DELETING &&
	    !meta_queue_has_fresh(c, MF_OP_FLAGS, msg))
		ret = meta_queue_push(c, account, MF_OP_FLAGS, msg, m.folder,
				      NULL);
	free(account);
	mf_message_clear(&m);
	return ret;
}

int mf_store_appended(int64_t msg, int64_t folder, const char *ruid,
		      unsigned int flags, const char *blob)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	ret = landed(c, msg, folder, ruid, flags);
	if (ret == 0 && blob) {
		s = meta_stmt(c, S_APPENDED_BLOB,
			      "UPDATE message SET blob = ? WHERE id = ?");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_text(s, 1, blob, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 2, msg);
			ret = meta_exec_stmt(c, s, "appended");
		}
	}
	return meta_wend(c, ret);
}

int mf_store_moved(int64_t msg, int64_t folder, const char *ruid)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	int ret;

	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg, &m);
	if (ret == 0)
		ret = landed(c, msg, folder, ruid, m.base_flags);
	mf_message_clear(&m);
	return meta_wend(c, ret == -ENOENT ? 0 : ret);
}

int mf_store_merge_duplicate(int64_t msg)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	sqlite3_stmt *s;
	bool dup = false;
	int ret;

	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg, &m);
	if (ret == 0 && m.ruid && m.rfolder == m.folder &&
	    m.dir != MF_DIR_GONE) {
		s = meta_stmt(c, S_DUP_FIND,
			      "SELECT 1 FROM message WHERE rfolder = ? AND "
			      "ruid = ? AND id != ? AND folder = rfolder AND "
			      "dir != 3 LIMIT 1");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int64(s, 1, m.rfolder);
			sqlite3_bind_text(s, 2, m.ruid, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 3, m.id);
			dup = sqlite3_step(s) == SQLITE_ROW;
			sqlite3_reset(s);
		}
	}
	if (ret == 0 && dup) {
		s = meta_stmt(c, S_DUP_DROP,
			      "UPDATE message SET dir = 3, state = 5, rfolder = "
			      "0, ruid = NULL, link_name = NULL WHERE id = ?");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int64(s, 1, m.id);
			ret = meta_exec_stmt(c, s, "merge duplicate");
		}
		if (ret == 0)
			ret = meta_bump_mtime(c, m.folder, m.dir + 1);
	}
	ret = meta_wend(c, ret == -ENOENT ? 0 : ret);
	if (ret == 0 && dup && meta_notify())
		meta_notify()->delete_entry(mf_ino_folder(m.folder, m.dir + 1),
					    (uint64_t)m.id, m.name);
	mf_message_clear(&m);
	return ret;
}

int mf_store_server_gone(int64_t msg)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	int ret;

	if (!c)
		return -EIO;
	/* An unlinked message stays DELETING: its EXPUNGE looks for it. */
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg, &m);
	if (ret == 0)
		ret = set_server(c, msg, 0, NULL,
				 m.state == MF_MSG_DELETING ? MF_MSG_DELETING
							    : MF_MSG_MATCH);
	mf_message_clear(&m);
	return meta_wend(c, ret == -ENOENT ? 0 : ret);
}

int mf_store_expunged(int64_t msg)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	ret = set_server(c, msg, 0, NULL, MF_MSG_EXPUNGED);
	if (ret == 0) {
		s = meta_stmt(c, S_SET_GONE,
			      "UPDATE message SET dir = 3, link_name = NULL "
			      "WHERE id = ?");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_int64(s, 1, msg);
			ret = meta_exec_stmt(c, s, "expunged");
		}
	}
	return meta_wend(c, ret);
}

int mf_store_sibling_blob(int64_t msg, char **blob_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;

	*blob_r = NULL;
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_SIBLING_BLOB,
		      "SELECT o.blob FROM message m JOIN folder f ON f.id = "
		      "m.rfolder JOIN message o ON o.rfolder IN (SELECT id "
		      "FROM folder WHERE account = f.account) AND o.ruid = "
		      "m.ruid WHERE m.id = ? AND o.id != m.id AND o.blob IS "
		      "NOT NULL LIMIT 1");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, msg);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_text(s, 0))
		*blob_r = xstrdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_reset(s);
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		return *blob_r ? 0 : -ENOENT;
	return meta_dberr(c, "sibling blob");
}

int mf_store_set_blob(int64_t msg, const char *blob, uint64_t size,
		      bool *size_changed_r)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	sqlite3_stmt *s;
	int ret;

	*size_changed_r = false;
	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg, &m);
	if (ret == 0) {
		*size_changed_r = m.size != size || m.size_estimated;
		s = meta_stmt(c, S_SET_BLOB_SIZE,
			      "UPDATE message SET blob = ?, size = ?, "
			      "size_est = 0 WHERE id = ?");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_text(s, 1, blob, -1, SQLITE_STATIC);
			sqlite3_bind_int64(s, 2, (int64_t)size);
			sqlite3_bind_int64(s, 3, msg);
			ret = meta_exec_stmt(c, s, "set blob");
		}
		if (m.size != size && !m.size_estimated)
			mf_warn("message %lld: the server announced %llu "
				"bytes and sent %llu", (long long)msg,
				(unsigned long long)m.size,
				(unsigned long long)size);
	}
	mf_message_clear(&m);
	ret = meta_wend(c, ret);
	if (ret == 0 && *size_changed_r && meta_notify())
		meta_notify()->inval_inode((uint64_t)msg);
	return ret;
}

int mf_store_folder_created(int64_t folder, const char *remote)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_FOLDER_REMOTE,
		      "UPDATE folder SET remote = ?, state = CASE WHEN state ="
		      " 1 THEN 0 ELSE state END WHERE id = ?");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_text(s, 1, remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, folder);
	ret = meta_exec_stmt(c, s, "folder created");
	return meta_wend(c, ret);
}

int mf_store_folder_deleted(int64_t folder)
{
	struct meta_conn *c = meta_wbegin();

	if (!c)
		return -EIO;
	return meta_wend(c, meta_set_folder_state(c, folder, MF_FOLDER_GONE));
}

int mf_store_folder_renamed(int64_t folder, const char *new_remote)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_folder f;
	sqlite3_stmt *s;
	char *old = NULL;
	int ret;

	if (!c)
		return -EIO;
	memset(&f, 0, sizeof(f));
	ret = mf_store_folder_get(folder, &f);
	if (ret < 0)
		return meta_wend(c, ret);
	old = f.remote ? xstrdup(f.remote) : NULL;
	s = meta_stmt(c, S_FOLDER_REMOTE,
		      "UPDATE folder SET remote = ?, state = CASE WHEN state ="
		      " 1 THEN 0 ELSE state END WHERE id = ?");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_text(s, 1, new_remote, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, folder);
	ret = meta_exec_stmt(c, s, "folder renamed");
	if (ret == 0 && old) {
		/*
		 * The server renamed the children too: OLD<delim>rest is
		 * now NEW<delim>rest. Descendants are found by local path,
		 * which the local rename already rewrote.
		 */
		char *prefix = xasprintf("%s/", f.path);

		s = meta_stmt(c, S_DESCENDANTS,
			      "UPDATE folder SET remote = ?3 || substr(remote,"
			      " ?2 + 1) WHERE account = ?4 AND "
			      "substr(remote, 1, ?2) = ?1 AND "
			      "substr(path, 1, length(?5)) = ?5");
		if (!s) {
			free(prefix);
			ret = -EIO;
			goto out;
		}
		sqlite3_bind_text(s, 1, old, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, (int64_t)strlen(old));
		sqlite3_bind_text(s, 3, new_remote, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 4, f.account, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 5, prefix, -1, SQLITE_TRANSIENT);
		free(prefix);
		ret = meta_exec_stmt(c, s, "rename descendants");
	}
out:
	free(old);
	mf_folder_clear(&f);
	return meta_wend(c, ret);
}
