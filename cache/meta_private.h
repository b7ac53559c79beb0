/*
 * Internals shared by meta.c (schema, reads, local changes) and
 * meta_sync.c (the engine's side: listings and the queue).
 */
#ifndef MF_META_PRIVATE_H
#define MF_META_PRIVATE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "mf_store.h"

struct meta_conn {
	sqlite3 *db;
	sqlite3_stmt *stmts[128];
};

/* This thread's connection (opened on first use). NULL on failure. */
struct meta_conn *meta_conn(void);

/* A cached, reset statement for sql; the index must be unique per sql. */
sqlite3_stmt *meta_stmt(struct meta_conn *c, unsigned int idx,
			const char *sql);

/* Write transactions: lock, BEGIN IMMEDIATE / COMMIT or ROLLBACK, unlock */
struct meta_conn *meta_wbegin(void);
/* Commits when ret == 0, else rolls back. Returns ret, or -EIO. */
int meta_wend(struct meta_conn *c, int ret);

/* Log a database error and return -EIO. */
int meta_dberr(struct meta_conn *c, const char *what);

/* Step a statement that returns no rows: 0 or -EIO (-EEXIST on UNIQUE). */
int meta_exec_stmt(struct meta_conn *c, sqlite3_stmt *s, const char *what);

/* Row readers for "SELECT " MSG_COLS / FOLDER_COLS. */
#define MSG_COLS                                                        \
	"id, folder, dir, name, link_name, rfolder, ruid, flags, "      \
	"base_flags, size, internaldate, ctime, msgid, blob, state, size_est"
#define FOLDER_COLS                                                    \
	"id, account, parent, name, remote, path, attrs, state, subdirs, " \
	"cursor, mtime_dir, mtime_cur, mtime_new, mtime_tmp, ctime"
void meta_read_message(sqlite3_stmt *s, struct mf_message *m);
void meta_read_folder(sqlite3_stmt *s, struct mf_folder *f);

/* Bump a folder's directory mtime (sub 0..3) to max(now, old + 1). */
int meta_bump_mtime(struct meta_conn *c, int64_t folder, int sub);

/* Append a queue entry inside the caller's transaction. */
int meta_queue_push(struct meta_conn *c, const char *account, int op,
		    int64_t message, int64_t folder, const char *arg);
/* Is there an entry of op for message that has not been tried yet? */
bool meta_queue_has_fresh(struct meta_conn *c, int op, int64_t message);

/* The account a folder belongs to (caller frees), or NULL. */
char *meta_folder_account(struct meta_conn *c, int64_t folder);

/* Build the file name for a server message from its row values; size
 * META_SIZE_UNKNOWN leaves ",S=" out (the size is an estimate). */
#define META_SIZE_UNKNOWN UINT64_MAX
void meta_server_name(int64_t id, int64_t internaldate, uint64_t size,
		      unsigned int flags, int dir, char *buf, size_t size_buf);

/* The id the next inserted message will get (inside a transaction). */
int64_t meta_next_message_id(struct meta_conn *c);
/* Insert a folder row; returns its id or -1. Bumps the parent's mtime. */
int64_t meta_create_folder_row(struct meta_conn *c, const char *account,
			       int64_t parent, const char *name,
			       const char *path, int state,
			       unsigned int subdirs);
int meta_set_folder_state(struct meta_conn *c, int64_t id, int state);
/* Rewrite the path column of a folder and all its descendants. */
int meta_repath(struct meta_conn *c, int64_t id, const char *path);

/* Keep a message's header lines for the views (cache/meta_views.c). */
int meta_store_headers(struct meta_conn *c, int64_t msg, const char *fields);

/* Notifications to the kernel (set by fs/, called after commits). */
const struct mf_notify_ops *meta_notify(void);

#endif
