/*
 * The store: SQLite (WAL) rows are the truth about folders, messages and
 * the write-back queue; bodies live in the blob store (mf_blob.h).
 *
 * The model. A message row has two places:
 *   - its local place: folder, dir (cur/new/tmp) and file name, which is
 *     what the mount shows and what local syscalls change at once;
 *   - its server place: rfolder + ruid, where the server has it as far as
 *     mailfs knows. They differ while a local change is on its way: a
 *     pending move keeps rfolder = the old folder until the server says
 *     otherwise; a delivery has no server place until APPEND returns.
 * Listings match server messages to rows by server place, so a message
 * that is moving can never be listed as new mail in either folder, and a
 * message the server has but mailfs has no row for is new mail.
 *
 * Flags: flags = what the user wants, base_flags = what the server had
 * when both sides last agreed. A queued FLAGS operation pushes the
 * difference; the server's changes merge bit by bit (a bit changed locally
 * since the base keeps the local value, any other takes the server's).
 *
 * Inode numbers: 1 is the root; a message's inode is its row id (never
 * reused: AUTOINCREMENT, and rows of expunged messages are kept as
 * tombstones until the next mount); folder directories use
 * MF_INO_FOLDER_BASE + 4 * folder id + (0 dir, 1 cur, 2 new, 3 tmp).
 *
 * Threads: any thread may call any function. Reads use a per-thread
 * connection and never block on writers (WAL). Writes are serialised by a
 * process-wide mutex and are each one transaction, committed with
 * synchronous=FULL before the function returns.
 *
 * Errors: 0 or a negative errno (-ENOENT, -EEXIST, -ENOTEMPTY, -EPERM,
 * -EINVAL, -EIO for a database failure, which is also logged).
 */
#ifndef MF_STORE_H
#define MF_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "mf_backend.h"
#include "mf_config.h"

#define MF_INO_ROOT 1
#define MF_INO_FOLDER_BASE (1ULL << 56)

enum mf_dir {
	MF_DIR_CUR = 0,
	MF_DIR_NEW = 1,
	MF_DIR_TMP = 2,
	MF_DIR_GONE = 3,	/* unlinked locally or expunged: not shown */
};

enum mf_ino_kind {
	MF_INO_KIND_ROOT,
	MF_INO_KIND_FOLDER,	/* an account root or a folder directory */
	MF_INO_KIND_SUBDIR,	/* cur/new/tmp of a folder */
	MF_INO_KIND_MESSAGE,
};

static inline uint64_t mf_ino_folder(int64_t folder, int sub)
{
	return MF_INO_FOLDER_BASE + (uint64_t)folder * 4 + (uint64_t)sub;
}

/* Decode an inode number. *id_r = folder or message id; *sub_r = 0..3. */
enum mf_ino_kind mf_ino_decode(uint64_t ino, int64_t *id_r, int *sub_r);

/* Message states. */
enum mf_msg_state {
	MF_MSG_SYNCED = 0,	/* the server has it at rfolder/ruid */
	MF_MSG_TMP = 1,		/* being written in tmp/; never uploaded */
	MF_MSG_APPEND = 2,	/* delivered locally, APPEND queued */
	MF_MSG_MOVING = 3,	/* MOVE queued; rfolder/ruid = old place */
	MF_MSG_DELETING = 4,	/* unlinked; EXPUNGE queued */
	MF_MSG_EXPUNGED = 5,	/* gone from the server: a tombstone */
	MF_MSG_MATCH = 6,	/* uploaded or moved, server id unknown: the
				   next listing of folder will match it */
};

/* Folder states. */
enum mf_folder_state {
	MF_FOLDER_PRESENT = 0,
	MF_FOLDER_CREATING = 1,	/* mkdir queued */
	MF_FOLDER_DELETING = 2,	/* rmdir queued; hidden */
	MF_FOLDER_GONE = 3,	/* deleted on the server; hidden */
	MF_FOLDER_VIRTUAL = 4,	/* an intermediate directory the server does
				   not list (e.g. "a" of "a/b"), or the
				   account root */
};

#define MF_SUBDIR_CUR (1u << 0)
#define MF_SUBDIR_NEW (1u << 1)
#define MF_SUBDIR_TMP (1u << 2)
#define MF_SUBDIR_ALL 7u

struct mf_folder {
	int64_t id;
	char *account;		/* owned */
	int64_t parent;		/* folder id; 0 for an account root */
	char *name;		/* owned; the directory name */
	char *remote;		/* owned or NULL (root, virtual) */
	char *path;		/* owned: "/"-joined local path below the
				   account, "" for the account root */
	unsigned int attrs;	/* MF_FOLDER_* */
	int state;		/* enum mf_folder_state */
	unsigned int subdirs;	/* MF_SUBDIR_* shown */
	char *cursor;		/* owned or NULL */
	int64_t mtime[4];	/* ns: folder dir, cur, new, tmp */
	int64_t ctime;		/* ns */
	unsigned int nchildren;	/* visible child folders (for st_nlink) */
};

struct mf_message {
	int64_t id;
	int64_t folder;
	int dir;		/* enum mf_dir */
	char *name;		/* owned */
	char *link_name;	/* owned or NULL: a second name in tmp/ */
	int64_t rfolder;	/* 0 if none */
	char *ruid;		/* owned or NULL */
	unsigned int flags;
	unsigned int base_flags;
	uint64_t size;
	int64_t internaldate;	/* seconds */
	int64_t ctime;		/* ns */
	char *msgid;		/* owned or NULL */
	char *blob;		/* owned sha256 hex, or NULL */
	int state;		/* enum mf_msg_state */
	bool size_estimated;	/* size is the server's estimate (Graph):
				   exact once the body is fetched */
};

/*
 * How the store tells the file system about changes the kernel did not
 * make (server changes). Set by fs/ at start; called by the engine's
 * threads after the change is committed, never from a FUSE request.
 */
struct mf_notify_ops {
	/* A name in directory parent appeared, vanished or changed. */
	void (*inval_entry)(uint64_t parent, const char *name);
	/* child was removed from parent (inotify watchers hear of it). */
	void (*delete_entry)(uint64_t parent, uint64_t child,
			     const char *name);
	/* Attributes (directory mtime, a size) of ino changed. */
	void (*inval_inode)(uint64_t ino);
};

void mf_store_set_notify(const struct mf_notify_ops *ops);

void mf_folder_clear(struct mf_folder *f);
void mf_message_clear(struct mf_message *m);

/* Open (create, migrate) STATE_DIR/mailfs.db. */
int mf_store_open(const char *state_dir, char **error_r);
void mf_store_close(void);

/* The calling thread applies whole listings: give its connection a larger
   page cache (16 MB instead of 2 MB). */
void mf_store_thread_bulk(void);
/* The calling thread writes only re-fetchable state (body cache rows):
   its commits skip the fsync (synchronous=NORMAL). */
void mf_store_thread_relaxed(void);
/* STATE_DIR/staging: where delivered bodies wait for upload. */
const char *mf_store_staging_dir(void);
/* Path of a message's staging file (caller frees). */
char *mf_store_staging_path(int64_t msg_id);

/* ---- reads (any thread) ---- */

int mf_store_folder_get(int64_t id, struct mf_folder *f);
int mf_store_message_get(int64_t id, struct mf_message *m);

/* The account root folder row; created on demand. */
int mf_store_account_root(const char *account, int64_t *id_r);

/* A visible child folder of parent (0 = account roots) by name. */
int mf_store_folder_lookup(int64_t parent, const char *name,
			   struct mf_folder *f);
/* A visible message by local place; also finds a tmp/ link_name. */
int mf_store_message_lookup(int64_t folder, int dir, const char *name,
			    struct mf_message *m);

/*
 * Directory listing in id order from cookie (0 = start). Calls cb for
 * each entry until it returns non-zero (buffer full); next_cookie is the
 * cookie to resume after that entry. For a message, m is its row
 * (borrowed: valid during the call, so no second query is needed for its
 * attributes); for a folder, m is NULL.
 */
typedef int mf_dirent_cb(void *ctx, const char *name, uint64_t ino,
			 const struct mf_message *m, uint64_t next_cookie);
int mf_store_list_folders(int64_t parent, uint64_t cookie, mf_dirent_cb *cb,
			  void *ctx);
int mf_store_list_messages(int64_t folder, int dir, uint64_t cookie,
			   mf_dirent_cb *cb, void *ctx);
/* Count of visible messages in a subdir (and whether any). */
int mf_store_count_messages(int64_t folder, int dir, uint64_t *count_r);

/* ---- local changes (the FUSE side): each is one transaction ---- */

/*
 * Create an empty message in folder's tmp/ (O_EXCL semantics: -EEXIST).
 * The caller creates the staging file. *m_r is filled.
 */
int mf_store_tmp_create(int64_t folder, const char *name, int64_t ctime,
			struct mf_message *m_r);

/*
 * rename() of a message. dst_dir is cur/new/tmp of dst_folder. Handles:
 * tmp -> cur/new (delivery: APPEND queued), cur/new <-> cur/new in one
 * folder (flags: FLAGS queued if they changed), to another folder (MOVE
 * queued), replacement of an existing target (which is unlinked), and
 * noreplace (-EEXIST). size and blob for a delivery are taken from the
 * staging file by the caller and passed in (size, sha256 hex or NULL).
 */
int mf_store_rename_message(int64_t msg_id, const char *src_name,
			    int64_t dst_folder, int dst_dir,
			    const char *dst_name, bool noreplace,
			    uint64_t size);

/* link(tmp/X, cur|new/Y): delivery keeping the tmp name as link_name. */
int mf_store_link_message(int64_t msg_id, int64_t dst_folder, int dst_dir,
			  const char *dst_name, uint64_t size);

/* unlink() of a visible name. */
int mf_store_unlink_message(int64_t folder, int dir, const char *name,
			    enum mf_delete_policy policy);

/* utime(): sets INTERNALDATE (st_mtime) of a message. */
int mf_store_set_mtime(int64_t msg_id, int64_t seconds);
/* The Message-ID of a delivered message (before it is committed). */
int mf_store_set_msgid(int64_t msg_id, const char *msgid);
/* Size of a tmp/ message being written. */
int mf_store_set_size(int64_t msg_id, uint64_t size);

/* mkdir/rmdir/rename of folders and of cur/new/tmp. */
int mf_store_mkdir(int64_t parent, const char *name, int64_t *id_r);
int mf_store_mksubdir(int64_t folder, int sub);
int mf_store_rmdir(int64_t parent, const char *name);
int mf_store_rmsubdir(int64_t folder, int sub);
int mf_store_rename_folder(int64_t folder, int64_t new_parent,
			   const char *new_name);

/* ---- the status of a mount ---- */
int mf_store_queue_length(const char *account, uint64_t *count_r);

struct mf_queue_stats {
	uint64_t length;
	int64_t oldest_ns;	/* when the oldest entry was made, or 0 */
	int attempts;		/* of the first entry */
	char *last_error;	/* owned or NULL: of the first entry */
};
int mf_store_queue_stats(const char *account, struct mf_queue_stats *st);

/* Folders whose changes the mass-deletion guard holds back. */
typedef void mf_held_cb(void *ctx, const char *path, const char *why);
int mf_store_held_folders(const char *account, mf_held_cb *cb, void *ctx);

/* What of an account's mail is cached (mount.mailfs --status). */
struct mf_account_stats {
	uint64_t messages;	/* on the server and shown */
	uint64_t cached;	/* of those, bodies in the cache */
	uint64_t cached_bytes;	/* their size */
	uint64_t prefetch_total;	/* bodies prefetch wants (all, or the
					   unseen with unseen_only) */
	uint64_t prefetch_left;	/* of those, not cached yet */
};
int mf_store_account_stats(const char *account, bool unseen_only,
			   struct mf_account_stats *st);

/*
 * Accept the removal held back in folder (path below the account): the
 * next complete listing of it applies as the server says. -ENOENT if no
 * such folder, -EALREADY if nothing is held there.
 */
int mf_store_folder_accept(const char *account, const char *path);

/* ---- the engine's side (cache/sync.c) ---- */

/* Every folder row of an account that the server has (state PRESENT or
 * DELETING with a remote name). *list_r is an owned array. */
int mf_store_engine_folders(const char *account, struct mf_folder **list_r,
			    unsigned int *n_r);
void mf_store_folders_free(struct mf_folder *list, unsigned int n);

/*
 * Apply a complete folder listing: create rows (and virtual parents) for
 * new folders, update attributes, hide folders the server no longer has.
 * A listing without an inbox is treated as broken and hides nothing.
 */
int mf_store_apply_folder_list(const char *account,
			       const struct mf_remote_folder *folders,
			       unsigned int n);

/* Is remote a folder of account that mailfs saw deleted (state GONE)? */
bool mf_store_folder_was_deleted(const char *account, const char *remote);

/*
 * Up to max messages of account whose bodies are not cached, with ids
 * above after (in id order), unseen ones only if unseen_only, of at most
 * max_size bytes (0: any) and dated min_date or later (seconds; 0: any).
 * For prefetch. Returns the count in *n_r.
 */
int mf_store_prefetch_batch(const char *account, bool unseen_only,
			    uint64_t max_size, int64_t min_date,
			    int64_t after, unsigned int max, int64_t *ids_r,
			    unsigned int *n_r);

/* Has the account ever been listed (does the store know its inbox)? */
bool mf_store_account_listed(const char *account);

/* Messages of a folder that the server has (the listing hint). */
int mf_store_folder_known_count(int64_t folder, uint64_t *count_r);

/*
 * Applying one folder's changes. begin opens the batch, change applies
 * one change (committing every so many), end commits the rest, stores the
 * cursor (when ok) and, for a snapshot, hides what was not listed unless
 * the mass-deletion guard holds it back. Notifications go out after each
 * commit.
 */
struct mf_sync_batch;
int mf_sync_batch_begin(int64_t folder, const struct mf_changes_info *info,
			struct mf_sync_batch **b_r);
int mf_sync_batch_change(struct mf_sync_batch *b, const struct mf_change *ch);
int mf_sync_batch_end(struct mf_sync_batch **b, const char *cursor, bool ok);

/* Queue operations, as stored in queue.op. */
enum mf_op {
	MF_OP_FLAGS = 1,	/* push flags - base_flags of a message */
	MF_OP_APPEND = 2,	/* upload a delivered message */
	MF_OP_MOVE = 3,		/* move from rfolder/ruid to folder */
	MF_OP_EXPUNGE = 4,	/* remove from rfolder/ruid */
	MF_OP_MKDIR = 5,	/* create folder */
	MF_OP_RMDIR = 6,	/* delete folder (arg: remote name) */
	MF_OP_RENAME = 7,	/* rename folder (arg: old remote name) */
};

/* The write-back queue. */
struct mf_queue_entry {
	int64_t id;
	int op;			/* enum mf_op */
	int64_t message;
	int64_t folder;
	char *arg;		/* owned or NULL */
	int attempts;
	int64_t next_try;	/* ms since the epoch */
};

void mf_queue_entry_clear(struct mf_queue_entry *e);
/* The first entry of the account: 0, or -ENOENT when empty. */
int mf_store_queue_first(const char *account, struct mf_queue_entry *e);
/*
 * The flag changes queued right after entry after (never tried, up to
 * max, stopping at the first other operation): their entry and message
 * ids, for one request (mf_backend_ops.flag_batch_max).
 */
int mf_store_queue_flags_run(const char *account, int64_t after,
			     unsigned int max, int64_t *entries,
			     int64_t *msgs, unsigned int *n_r);
/* Record that an attempt starts (committed before the network call). */
int mf_store_queue_attempt(int64_t entry);
int mf_store_queue_done(int64_t entry);
/* Move an entry to the end of the queue (it waits for a later one). */
int mf_store_queue_requeue(int64_t entry);
/* Is a CREATE of folder queued? */
bool mf_store_queue_has_mkdir(int64_t folder);
int mf_store_queue_retry(int64_t entry, int64_t next_try_ms,
			 const char *error);
/* A permanent failure: undo the local change where that is safe, drop
 * the entry, keep the error for the status. */
int mf_store_queue_failed(const struct mf_queue_entry *e, const char *error);

/* Results of write-back. */
/*
 * The server now has the bits of pushed (the message's base flags become
 * pushed). *more_r: the message's flags differ from pushed in a bit of
 * mask, so its change is not finished.
 */
int mf_store_flags_pushed(int64_t msg, unsigned int pushed,
			  unsigned int mask, bool *more_r);
/*
 * An APPEND or MOVE landed in folder as ruid (NULL: the server did not
 * say) with flags; changes the user made meanwhile are queued again.
 */
int mf_store_appended(int64_t msg, int64_t folder, const char *ruid,
		      unsigned int flags, const char *blob);
int mf_store_moved(int64_t msg, int64_t folder, const char *ruid);
/*
 * Account-global ids (MF_CAP_GLOBAL_IDS): msg was moved into a folder
 * that already shows the same server message (a rename into a label the
 * message already has): the folder keeps its row, msg goes away.
 */
int mf_store_merge_duplicate(int64_t msg);
int mf_store_server_gone(int64_t msg);
int mf_store_expunged(int64_t msg);
/*
 * Account-global ids (MF_CAP_GLOBAL_IDS): the body another row of the
 * same server message has cached (caller frees), or -ENOENT.
 */
int mf_store_sibling_blob(int64_t msg, char **blob_r);
/* A body arrived: record its blob; *size_changed_r if the size was off. */
int mf_store_set_blob(int64_t msg, const char *blob, uint64_t size,
		      bool *size_changed_r);
int mf_store_folder_created(int64_t folder, const char *remote);
int mf_store_folder_deleted(int64_t folder);
int mf_store_folder_renamed(int64_t folder, const char *new_remote);

#endif
