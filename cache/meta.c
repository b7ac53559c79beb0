/*
 * The SQLite store: schema, per-thread connections, reads for the FUSE
 * side, and the local changes a syscall makes, each one transaction that
 * also records its write-back queue entry (DESIGN.md safety rule 1).
 *
 * Connections: one per thread, opened lazily and closed at thread exit,
 * each with its prepared statements cached by index. WAL lets FUSE
 * threads read while the engine writes; writers take write_lock so that
 * they queue here rather than spin on SQLITE_BUSY.
 */
#include "meta_private.h"
#include "mf_names.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdio.h>
#include <unistd.h>

#define SCHEMA_VERSION 5

static struct {
	char *db_path;
	char *staging_dir;
	pthread_key_t key;
	pthread_mutex_t write_lock;
	const struct mf_notify_ops *notify;
	bool open;
} meta = {
	.write_lock = PTHREAD_MUTEX_INITIALIZER,
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS folder ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" account TEXT NOT NULL,"
	" parent INTEGER NOT NULL,"
	" name TEXT NOT NULL,"
	" remote TEXT,"
	" path TEXT NOT NULL,"
	" attrs INTEGER NOT NULL DEFAULT 0,"
	" state INTEGER NOT NULL DEFAULT 0,"
	" subdirs INTEGER NOT NULL DEFAULT 7,"
	" cursor TEXT,"
	" held TEXT,"
	" accept INTEGER NOT NULL DEFAULT 0,"
	" mtime_dir INTEGER NOT NULL DEFAULT 0,"
	" mtime_cur INTEGER NOT NULL DEFAULT 0,"
	" mtime_new INTEGER NOT NULL DEFAULT 0,"
	" mtime_tmp INTEGER NOT NULL DEFAULT 0,"
	" ctime INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS folder_parent ON folder(parent, name);"
	"CREATE INDEX IF NOT EXISTS folder_remote ON folder(account, remote);"
	"CREATE TABLE IF NOT EXISTS message ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" folder INTEGER NOT NULL,"
	" dir INTEGER NOT NULL,"
	" name TEXT NOT NULL,"
	" link_name TEXT,"
	" rfolder INTEGER NOT NULL DEFAULT 0,"
	" ruid TEXT,"
	" flags INTEGER NOT NULL DEFAULT 0,"
	" base_flags INTEGER NOT NULL DEFAULT 0,"
	" size INTEGER NOT NULL DEFAULT 0,"
	" internaldate INTEGER NOT NULL DEFAULT 0,"
	" ctime INTEGER NOT NULL DEFAULT 0,"
	" msgid TEXT,"
	" blob TEXT,"
	" state INTEGER NOT NULL DEFAULT 0,"
	" gen INTEGER NOT NULL DEFAULT 0,"
	" size_est INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS message_place"
	" ON message(folder, dir, name);"
	/* (folder, dir) then rowid: readdir's id-cookie ranges. */
	"CREATE INDEX IF NOT EXISTS message_dir ON message(folder, dir);"
	"CREATE INDEX IF NOT EXISTS message_link"
	" ON message(folder, link_name) WHERE link_name IS NOT NULL;"
	"CREATE INDEX IF NOT EXISTS message_server"
	" ON message(rfolder, ruid) WHERE ruid IS NOT NULL;"
	"DROP INDEX IF EXISTS message_match;"
	"CREATE INDEX IF NOT EXISTS message_content"
	" ON message(folder, msgid, size);"
	"CREATE TABLE IF NOT EXISTS queue ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" account TEXT NOT NULL,"
	" op INTEGER NOT NULL,"
	" message INTEGER NOT NULL DEFAULT 0,"
	" folder INTEGER NOT NULL DEFAULT 0,"
	" arg TEXT,"
	" attempts INTEGER NOT NULL DEFAULT 0,"
	" next_try INTEGER NOT NULL DEFAULT 0,"
	" last_error TEXT,"
	" created INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS queue_account ON queue(account, id);"
	"CREATE INDEX IF NOT EXISTS queue_message ON queue(message);";

/* ---- connections ---- */

static void conn_free(void *p)
{
	struct meta_conn *c = p;

	for (size_t i = 0; i < MF_ARRAY_SIZE(c->stmts); i++)
		sqlite3_finalize(c->stmts[i]);
	sqlite3_close(c->db);
	free(c);
}

static struct meta_conn *conn_open(void)
{
	struct meta_conn *c = xcalloc(1, sizeof(*c));
	int rc;

	rc = sqlite3_open_v2(meta.db_path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				     SQLITE_OPEN_NOMUTEX,
			     NULL);
	if (rc != SQLITE_OK) {
		mf_err("cannot open %s: %s", meta.db_path,
		       c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
		sqlite3_close(c->db);
		free(c);
		return NULL;
	}
	sqlite3_busy_timeout(c->db, 30000);
	sqlite3_exec(c->db,
		     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
		     "PRAGMA foreign_keys=OFF; PRAGMA cache_size=-2000;"
		     "PRAGMA temp_store=MEMORY;",
		     NULL, NULL, NULL);
	return c;
}

/*
 * Each thread has its own connection and page cache. FUSE workers (up
 * to 16 kept idle) and fetch threads do point look-ups: SQLite's default
 * 2 MB each. A thread that applies listings of whole folders asks for
 * 16 MB, so that a million-message listing does not thrash, without
 * every thread holding that much (peak RSS at 1M messages went from 41
 * to 97 MB when idle FUSE workers were kept with 16 MB each).
 */
void mf_store_thread_bulk(void)
{
	struct meta_conn *c = meta_conn();

	if (c)
		sqlite3_exec(c->db, "PRAGMA cache_size=-16000;", NULL, NULL,
			     NULL);
}

/*
 * The calling thread writes only what can be fetched again (which blob
 * holds a message's body): its commits need not wait for the disk.
 * WAL keeps them atomic; a crash may forget the last few, and the next
 * FULL commit of another thread makes them durable anyway.
 */
void mf_store_thread_relaxed(void)
{
	struct meta_conn *c = meta_conn();

	if (c)
		sqlite3_exec(c->db, "PRAGMA synchronous=NORMAL;", NULL, NULL,
			     NULL);
}

struct meta_conn *meta_conn(void)
{
	struct meta_conn *c = pthread_getspecific(meta.key);

	if (c)
		return c;
	c = conn_open();
	if (c)
		pthread_setspecific(meta.key, c);
	return c;
}

sqlite3_stmt *meta_stmt(struct meta_conn *c, unsigned int idx, const char *sql)
{
	sqlite3_stmt *s;

	if (idx >= MF_ARRAY_SIZE(c->stmts))
		abort();
	s = c->stmts[idx];
	if (!s) {
		if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
				       &s, NULL) != SQLITE_OK) {
			mf_err("store: cannot prepare \"%s\": %s", sql,
			       sqlite3_errmsg(c->db));
			return NULL;
		}
		c->stmts[idx] = s;
	} else {
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
	}
	return s;
}

int meta_dberr(struct meta_conn *c, const char *what)
{
	mf_err("store: %s: %s", what, sqlite3_errmsg(c->db));
	return -EIO;
}

int meta_exec_stmt(struct meta_conn *c, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	if (rc == SQLITE_DONE || rc == SQLITE_ROW)
		return 0;
	if (rc == SQLITE_CONSTRAINT)
		return -EEXIST;
	return meta_dberr(c, what);
}

struct meta_conn *meta_wbegin(void)
{
	struct meta_conn *c = meta_conn();

	if (!c)
		return NULL;
	pthread_mutex_lock(&meta.write_lock);
	if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		meta_dberr(c, "begin");
		pthread_mutex_unlock(&meta.write_lock);
		return NULL;
	}
	return c;
}

int meta_wend(struct meta_conn *c, int ret)
{
	if (ret == 0) {
		if (sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) !=
		    SQLITE_OK) {
			ret = meta_dberr(c, "commit");
			sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		}
	} else {
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	}
	pthread_mutex_unlock(&meta.write_lock);
	return ret;
}

static char *col_strdup(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t ? xstrdup((const char *)t) : NULL;
}

void meta_read_message(sqlite3_stmt *s, struct mf_message *m)
{
	m->id = sqlite3_column_int64(s, 0);
	m->folder = sqlite3_column_int64(s, 1);
	m->dir = sqlite3_column_int(s, 2);
	m->name = col_strdup(s, 3);
	m->link_name = col_strdup(s, 4);
	m->rfolder = sqlite3_column_int64(s, 5);
	m->ruid = col_strdup(s, 6);
	m->flags = (unsigned int)sqlite3_column_int(s, 7);
	m->base_flags = (unsigned int)sqlite3_column_int(s, 8);
	m->size = (uint64_t)sqlite3_column_int64(s, 9);
	m->internaldate = sqlite3_column_int64(s, 10);
	m->ctime = sqlite3_column_int64(s, 11);
	m->msgid = col_strdup(s, 12);
	m->blob = col_strdup(s, 13);
	m->state = sqlite3_column_int(s, 14);
	m->size_estimated = sqlite3_column_int(s, 15) != 0;
}

/* Like meta_read_message, but the strings are borrowed from s. */
static void peek_message(sqlite3_stmt *s, struct mf_message *m)
{
	m->id = sqlite3_column_int64(s, 0);
	m->folder = sqlite3_column_int64(s, 1);
	m->dir = sqlite3_column_int(s, 2);
	m->name = (char *)sqlite3_column_text(s, 3);
	m->link_name = (char *)sqlite3_column_text(s, 4);
	m->rfolder = sqlite3_column_int64(s, 5);
	m->ruid = (char *)sqlite3_column_text(s, 6);
	m->flags = (unsigned int)sqlite3_column_int(s, 7);
	m->base_flags = (unsigned int)sqlite3_column_int(s, 8);
	m->size = (uint64_t)sqlite3_column_int64(s, 9);
	m->internaldate = sqlite3_column_int64(s, 10);
	m->ctime = sqlite3_column_int64(s, 11);
	m->msgid = (char *)sqlite3_column_text(s, 12);
	m->blob = (char *)sqlite3_column_text(s, 13);
	m->state = sqlite3_column_int(s, 14);
	m->size_estimated = sqlite3_column_int(s, 15) != 0;
}

void meta_read_folder(sqlite3_stmt *s, struct mf_folder *f)
{
	f->id = sqlite3_column_int64(s, 0);
	f->account = col_strdup(s, 1);
	f->parent = sqlite3_column_int64(s, 2);
	f->name = col_strdup(s, 3);
	f->remote = col_strdup(s, 4);
	f->path = col_strdup(s, 5);
	f->attrs = (unsigned int)sqlite3_column_int(s, 6);
	f->state = sqlite3_column_int(s, 7);
	f->subdirs = (unsigned int)sqlite3_column_int(s, 8);
	f->cursor = col_strdup(s, 9);
	for (int i = 0; i < 4; i++)
		f->mtime[i] = sqlite3_column_int64(s, 10 + i);
	f->ctime = sqlite3_column_int64(s, 14);
	f->nchildren = 0;
}

void mf_folder_clear(struct mf_folder *f)
{
	free(f->account);
	free(f->name);
	free(f->remote);
	free(f->path);
	free(f->cursor);
	memset(f, 0, sizeof(*f));
}

void mf_message_clear(struct mf_message *m)
{
	free(m->name);
	free(m->link_name);
	free(m->ruid);
	free(m->msgid);
	free(m->blob);
	memset(m, 0, sizeof(*m));
}

void mf_store_set_notify(const struct mf_notify_ops *ops)
{
	meta.notify = ops;
}

const struct mf_notify_ops *meta_notify(void)
{
	return meta.notify;
}

/* ---- open ---- */

/*
 * Migration 2 -> 3 (views): a side table with the header lines that the
 * [view] rules match on (List-Id, From, To...), one row per message,
 * filled by listings when views are configured, and per account the
 * header fields those listings fetched (cache/meta_views.c).
 */
static int migrate_3_view_headers(struct meta_conn *c, char **error_r)
{
	if (sqlite3_exec(c->db,
			 "CREATE TABLE IF NOT EXISTS message_header ("
			 " message INTEGER PRIMARY KEY,"
			 " fields TEXT NOT NULL);"
			 "CREATE TABLE IF NOT EXISTS view_fields ("
			 " account TEXT PRIMARY KEY,"
			 " fields TEXT);"
			 "PRAGMA user_version = 3;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot upgrade %s to schema 3: %s",
				     meta.db_path, sqlite3_errmsg(c->db));
		return -EIO;
	}
	return 0;
}

/*
 * Schema 3 -> 4: the blob_cache table, one row per cached body, with its
 * size and last access (seconds) for least-recently-used eviction
 * (cache/blob.c). Rows are added by the blob store's background thread;
 * a cache made before this step is walked once at the next mount.
 */
static int migrate_4_blob_cache(struct meta_conn *c, char **error_r)
{
	if (sqlite3_exec(c->db,
			 "BEGIN;"
			 "CREATE TABLE IF NOT EXISTS blob_cache ("
			 " hash TEXT PRIMARY KEY,"
			 " size INTEGER NOT NULL,"
			 " atime INTEGER NOT NULL) WITHOUT ROWID;"
			 "CREATE INDEX IF NOT EXISTS blob_cache_atime"
			 " ON blob_cache(atime, hash);"
			 "CREATE INDEX IF NOT EXISTS message_blob"
			 " ON message(blob) WHERE blob IS NOT NULL;"
			 "PRAGMA user_version = 4;"
			 "COMMIT;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot upgrade %s to schema 4: %s",
				     meta.db_path, sqlite3_errmsg(c->db));
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	return 0;
}

/*
 * Schema 4 -> 5: a message's size may be the server's estimate (Graph's
 * size, Gmail's sizeEstimate) until its body is read; such a name has no
 * ",S=" and the kernel keeps no attributes of it. A store created by this
 * version has the column already (the schema above).
 */
static int migrate_5_size_estimates(struct meta_conn *c, char **error_r)
{
	sqlite3_stmt *s = NULL;
	bool have = false;

	if (sqlite3_prepare_v2(c->db,
			       "SELECT 1 FROM pragma_table_info('message') "
			       "WHERE name = 'size_est'",
			       -1, &s, NULL) == SQLITE_OK)
		have = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_finalize(s);
	if (sqlite3_exec(c->db,
			 have ? "PRAGMA user_version = 5;"
			      : "BEGIN; ALTER TABLE message ADD COLUMN size_est "
				"INTEGER NOT NULL DEFAULT 0; "
				"PRAGMA user_version = 5; COMMIT;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot upgrade %s to schema 5: %s",
				     meta.db_path, sqlite3_errmsg(c->db));
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	return 0;
}

int mf_store_open(const char *state_dir, char **error_r)
{
	struct meta_conn *c;
	sqlite3_stmt *s;
	int version = 0;
	int ret;

	ret = mf_mkdirs(state_dir, 0700);
	if (ret < 0) {
		*error_r = xasprintf("cannot create state_dir %s: %s",
				     state_dir, strerror(-ret));
		return ret;
	}
	chmod(state_dir, 0700);
	meta.db_path = xasprintf("%s/mailfs.db", state_dir);
	meta.staging_dir = xasprintf("%s/staging", state_dir);
	ret = mf_mkdirs(meta.staging_dir, 0700);
	if (ret < 0) {
		*error_r = xasprintf("cannot create %s: %s", meta.staging_dir,
				     strerror(-ret));
		return ret;
	}
	if (pthread_key_create(&meta.key, conn_free) != 0) {
		*error_r = xstrdup("pthread_key_create failed");
		return -ENOMEM;
	}
	meta.open = true;
	{
		/* Create the file 0600 before SQLite does (umask aside). */
		int fd = open(meta.db_path, O_RDWR | O_CREAT | O_CLOEXEC,
			      0600);
		if (fd < 0) {
			ret = -errno;
			*error_r = xasprintf("cannot open %s: %s",
					     meta.db_path, strerror(errno));
			return ret;
		}
		close(fd);
	}
	c = meta_conn();
	if (!c) {
		*error_r = xasprintf("cannot open the store %s",
				     meta.db_path);
		return -EIO;
	}
	/* One daemon per store: a second mount would corrupt the queue. */
	if (sqlite3_exec(c->db, "PRAGMA user_version", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		*error_r = xasprintf("%s is not a mailfs store: %s",
				     meta.db_path, sqlite3_errmsg(c->db));
		return -EIO;
	}
	if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &s, NULL) ==
	    SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			version = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	if (version > SCHEMA_VERSION) {
		*error_r = xasprintf("%s was written by a newer mailfs "
				     "(schema %d, this one knows %d)",
				     meta.db_path, version, SCHEMA_VERSION);
		return -EPROTO;
	}
	if (sqlite3_exec(c->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot set up %s: %s", meta.db_path,
				     sqlite3_errmsg(c->db));
		return -EIO;
	}
	if (version == 0) {
		/* Message ids (inodes) start above the small numbers. */
		sqlite3_exec(c->db,
			     "INSERT INTO sqlite_sequence(name, seq) "
			     "SELECT 'message', 1000 WHERE NOT EXISTS "
			     "(SELECT 1 FROM sqlite_sequence "
			     "WHERE name = 'message');"
			     "PRAGMA user_version = 2;",
			     NULL, NULL, NULL);
	} else if (version < 2) {
		/* 1 -> 2: the user can accept a held-back removal. */
		if (sqlite3_exec(c->db,
				 "ALTER TABLE folder ADD COLUMN accept INTEGER "
				 "NOT NULL DEFAULT 0; PRAGMA user_version = 2;",
				 NULL, NULL, NULL) != SQLITE_OK) {
			*error_r = xasprintf("cannot upgrade %s: %s",
					     meta.db_path,
					     sqlite3_errmsg(c->db));
			return -EIO;
		}
	}
	if (version < 3 && migrate_3_view_headers(c, error_r) < 0)
		return -EIO;
	if (version < 4 && migrate_4_blob_cache(c, error_r) < 0)
		return -EIO;
	if (version < 5 && migrate_5_size_estimates(c, error_r) < 0)
		return -EIO;
	/*
	 * Tombstones of expunged messages are kept while the kernel may
	 * still hold their inodes; at mount time it holds none.
	 */
	sqlite3_exec(c->db,
		     "DELETE FROM message WHERE state = 5 AND id NOT IN "
		     "(SELECT message FROM queue);"
		     "DELETE FROM message_header WHERE message NOT IN "
		     "(SELECT id FROM message);",
		     NULL, NULL, NULL);
	return 0;
}

void mf_store_close(void)
{
	struct meta_conn *c;

	if (!meta.open)
		return;
	c = pthread_getspecific(meta.key);
	if (c) {
		pthread_setspecific(meta.key, NULL);
		conn_free(c);
	}
	free(meta.db_path);
	free(meta.staging_dir);
	meta.db_path = NULL;
	meta.staging_dir = NULL;
	meta.open = false;
}

const char *mf_store_staging_dir(void)
{
	return meta.staging_dir;
}

char *mf_store_staging_path(int64_t msg_id)
{
	return xasprintf("%s/%lld", meta.staging_dir, (long long)msg_id);
}

/* ---- inode numbers ---- */

enum mf_ino_kind mf_ino_decode(uint64_t ino, int64_t *id_r, int *sub_r)
{
	*sub_r = 0;
	if (ino == MF_INO_ROOT) {
		*id_r = 0;
		return MF_INO_KIND_ROOT;
	}
	if (ino >= MF_INO_FOLDER_BASE) {
		uint64_t v = ino - MF_INO_FOLDER_BASE;
		*id_r = (int64_t)(v / 4);
		*sub_r = (int)(v % 4);
		return *sub_r ? MF_INO_KIND_SUBDIR : MF_INO_KIND_FOLDER;
	}
	*id_r = (int64_t)ino;
	return MF_INO_KIND_MESSAGE;
}

/* ---- reads ---- */

enum {
	S_FOLDER_GET,
	S_FOLDER_NCHILD,
	S_MSG_GET,
	S_ROOT_FIND,
	S_ROOT_INSERT,
	S_FOLDER_LOOKUP,
	S_MSG_LOOKUP,
	S_MSG_LOOKUP_LINK,
	S_LIST_FOLDERS,
	S_LIST_MSGS,
	S_LIST_LINKS,
	S_COUNT_MSGS,
	S_BUMP,
	S_QUEUE_PUSH,
	S_QUEUE_FRESH,
	S_FOLDER_ACCOUNT,
	S_NEXT_MSG_ID,
	S_TMP_INSERT,
	S_MSG_DELETE_ROW,
	S_QUEUE_DROP_MSG,
	S_MSG_SET_PLACE,
	S_MSG_SET_MTIME,
	S_MSG_SET_SIZE,
	S_TRASH_FIND,
	S_FOLDER_INSERT,
	S_FOLDER_SET_SUBDIRS,
	S_FOLDER_SET_STATE,
	S_FOLDER_HAS_MSGS,
	S_FOLDER_MOVE,
	S_FOLDER_CHILDREN,
	S_FOLDER_SET_PATH,
	S_MSG_UNLINK_LINK,
	S_MSG_SET_LINK,
	S_QUEUE_LEN,
	S_QUEUE_DROP_MKDIR,
	S_MSG_SET_MSGID,
	S_QUEUE_STATS,
	S_HELD,
	S_ACCEPT,
	S_BUMP_DIR,	/* meta_bump_mtime: S_BUMP_DIR + sub, four of them */
	S_BUMP_CUR,
	S_BUMP_NEW,
	S_BUMP_TMP,
	S_FORGET_SERVER,
	S_STMT_COUNT_META,
};

/* meta_sync.c's statements start at 48. */
_Static_assert(S_STMT_COUNT_META <= 48, "meta.c statement indexes");

/*
 * Step a statement that returns at most one row: 0 with the row ready to
 * read (reset it after), -ENOENT (reset) or -EIO (reset, logged).
 */
static int step_row(struct meta_conn *c, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	if (rc == SQLITE_ROW)
		return 0;
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(c, what);
}

int mf_store_folder_get(int64_t id, struct mf_folder *f)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_FOLDER_GET,
		      "SELECT " FOLDER_COLS " FROM folder WHERE id = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	ret = step_row(c, s, "folder get");
	if (ret < 0)
		return ret;
	meta_read_folder(s, f);
	sqlite3_reset(s);
	s = meta_stmt(c, S_FOLDER_NCHILD,
		      "SELECT count(*) FROM folder WHERE parent = ? AND "
		      "state IN (0, 1, 4)");
	if (s) {
		sqlite3_bind_int64(s, 1, id);
		if (sqlite3_step(s) == SQLITE_ROW)
			f->nchildren = (unsigned int)sqlite3_column_int(s, 0);
		sqlite3_reset(s);
	}
	return 0;
}

int mf_store_message_get(int64_t id, struct mf_message *m)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_MSG_GET,
		      "SELECT " MSG_COLS " FROM message WHERE id = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	ret = step_row(c, s, "message get");
	if (ret < 0)
		return ret;
	meta_read_message(s, m);
	sqlite3_reset(s);
	return 0;
}

int mf_store_account_root(const char *account, int64_t *id_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_ROOT_FIND,
		      "SELECT id FROM folder WHERE parent = 0 AND account = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW) {
		*id_r = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	c = meta_wbegin();
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_ROOT_INSERT,
		      "INSERT INTO folder (account, parent, name, path, state,"
		      " subdirs, mtime_dir, ctime) VALUES (?, 0, ?, '', 4, 0,"
		      " ?, ?)");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, mf_now_ns());
	sqlite3_bind_int64(s, 4, mf_now_ns());
	ret = meta_exec_stmt(c, s, "insert account root");
	if (ret == 0)
		*id_r = sqlite3_last_insert_rowid(c->db);
	return meta_wend(c, ret);
}

int mf_store_folder_lookup(int64_t parent, const char *name,
			   struct mf_folder *f)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_FOLDER_LOOKUP,
		      "SELECT " FOLDER_COLS " FROM folder WHERE parent = ? AND"
		      " name = ? AND state IN (0, 1, 4)");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, parent);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? -ENOENT
					 : meta_dberr(c, "folder lookup");
	}
	meta_read_folder(s, f);
	sqlite3_reset(s);
	return 0;
}

int mf_store_message_lookup(int64_t folder, int dir, const char *name,
			    struct mf_message *m)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_MSG_LOOKUP,
		      "SELECT " MSG_COLS " FROM message WHERE folder = ? AND"
		      " dir = ? AND name = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_int(s, 2, dir);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		meta_read_message(s, m);
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return meta_dberr(c, "message lookup");
	if (dir != MF_DIR_TMP)
		return -ENOENT;
	s = meta_stmt(c, S_MSG_LOOKUP_LINK,
		      "SELECT " MSG_COLS " FROM message WHERE folder = ? AND"
		      " link_name = ? AND dir != 3");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		meta_read_message(s, m);
		sqlite3_reset(s);
		return 0;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? -ENOENT : meta_dberr(c, "link lookup");
}

int mf_store_list_folders(int64_t parent, uint64_t cookie, mf_dirent_cb *cb,
			  void *ctx)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_LIST_FOLDERS,
		      "SELECT id, name FROM folder WHERE parent = ? AND "
		      "id >= ? AND state IN (0, 1, 4) ORDER BY id");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, parent);
	sqlite3_bind_int64(s, 2, (int64_t)cookie);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(s, 0);
		const char *name = (const char *)sqlite3_column_text(s, 1);

		if (cb(ctx, name, mf_ino_folder(id, 0), NULL,
		       (uint64_t)id + 1))
			break;
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE
		       ? 0
		       : meta_dberr(c, "list folders");
}

int mf_store_list_messages(int64_t folder, int dir, uint64_t cookie,
			   mf_dirent_cb *cb, void *ctx)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int rc;
	bool stopped = false;

	if (!c)
		return -EIO;
	/*
	 * Cookies are row ids, so entries renamed in place during a listing
	 * are neither skipped nor repeated. tmp/ also shows link names,
	 * with cookies in a second range above all row ids.
	 */
	if (cookie < (1ULL << 62)) {
		s = meta_stmt(c, S_LIST_MSGS,
			      "SELECT " MSG_COLS " FROM message INDEXED BY "
			      "message_dir WHERE folder = ? AND dir = ? AND "
			      "id >= ? ORDER BY id");
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, folder);
		sqlite3_bind_int(s, 2, dir);
		sqlite3_bind_int64(s, 3, (int64_t)cookie);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			struct mf_message m;

			peek_message(s, &m);
			if (cb(ctx, m.name, (uint64_t)m.id, &m,
			       (uint64_t)m.id + 1)) {
				stopped = true;
				break;
			}
		}
		sqlite3_reset(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return meta_dberr(c, "list messages");
		if (stopped || dir != MF_DIR_TMP)
			return 0;
		cookie = 1ULL << 62;
	}
	s = meta_stmt(c, S_LIST_LINKS,
		      "SELECT " MSG_COLS " FROM message WHERE folder = ? AND"
		      " link_name IS NOT NULL AND dir != 3 AND id >= ?"
		      " ORDER BY id");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_int64(s, 2, (int64_t)(cookie - (1ULL << 62)));
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct mf_message m;

		peek_message(s, &m);
		if (cb(ctx, m.link_name, (uint64_t)m.id, &m,
		       (1ULL << 62) + (uint64_t)m.id + 1))
			break;
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE
		       ? 0
		       : meta_dberr(c, "list links");
}

int mf_store_count_messages(int64_t folder, int dir, uint64_t *count_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_COUNT_MSGS,
		      "SELECT count(*) FROM message WHERE folder = ? AND "
		      "dir = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_int(s, 2, dir);
	*count_r = 0;
	if (sqlite3_step(s) == SQLITE_ROW)
		*count_r = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return 0;
}

/* ---- helpers for writers ---- */

int meta_bump_mtime(struct meta_conn *c, int64_t folder, int sub)
{
	static const char *const sql[4] = {
		"UPDATE folder SET mtime_dir = max(?, mtime_dir + 1) "
		"WHERE id = ?",
		"UPDATE folder SET mtime_cur = max(?, mtime_cur + 1) "
		"WHERE id = ?",
		"UPDATE folder SET mtime_new = max(?, mtime_new + 1) "
		"WHERE id = ?",
		"UPDATE folder SET mtime_tmp = max(?, mtime_tmp + 1) "
		"WHERE id = ?",
	};
	sqlite3_stmt *s;

	s = meta_stmt(c, S_BUMP_DIR + (unsigned int)sub, sql[sub]);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, mf_now_ns());
	sqlite3_bind_int64(s, 2, folder);
	return meta_exec_stmt(c, s, "bump mtime");
}

int meta_queue_push(struct meta_conn *c, const char *account, int op,
		    int64_t message, int64_t folder, const char *arg)
{
	sqlite3_stmt *s = meta_stmt(c, S_QUEUE_PUSH,
				    "INSERT INTO queue (account, op, message,"
				    " folder, arg, created) VALUES (?, ?, ?,"
				    " ?, ?, ?)");

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, op);
	sqlite3_bind_int64(s, 3, message);
	sqlite3_bind_int64(s, 4, folder);
	if (arg)
		sqlite3_bind_text(s, 5, arg, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, mf_now_ns());
	mf_debug(MF_DBG_QUEUE, "queue: %s op %d message %lld folder %lld",
		 account, op, (long long)message, (long long)folder);
	return meta_exec_stmt(c, s, "queue push");
}

bool meta_queue_has_fresh(struct meta_conn *c, int op, int64_t message)
{
	sqlite3_stmt *s = meta_stmt(c, S_QUEUE_FRESH,
				    "SELECT 1 FROM queue WHERE message = ? AND"
				    " op = ? AND attempts = 0");
	bool found;

	if (!s)
		return false;
	sqlite3_bind_int64(s, 1, message);
	sqlite3_bind_int(s, 2, op);
	found = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_reset(s);
	return found;
}

char *meta_folder_account(struct meta_conn *c, int64_t folder)
{
	sqlite3_stmt *s = meta_stmt(c, S_FOLDER_ACCOUNT,
				    "SELECT account FROM folder WHERE id = ?");
	char *a = NULL;

	if (!s)
		return NULL;
	sqlite3_bind_int64(s, 1, folder);
	if (sqlite3_step(s) == SQLITE_ROW)
		a = col_strdup(s, 0);
	sqlite3_reset(s);
	return a;
}

void meta_server_name(int64_t id, int64_t internaldate, uint64_t size,
		      unsigned int flags, int dir, char *buf, size_t size_buf)
{
	char uniq[96];

	/* SIZE_UNKNOWN: no ",S=" (readers trust it as the exact size). */
	if (size == META_SIZE_UNKNOWN)
		snprintf(uniq, sizeof(uniq), "%lld.M%lld.mailfs",
			 (long long)internaldate, (long long)id);
	else
		snprintf(uniq, sizeof(uniq), "%lld.M%lld.mailfs,S=%llu",
			 (long long)internaldate, (long long)id,
			 (unsigned long long)size);
	if (mf_maildir_format(uniq, flags, "", dir == MF_DIR_CUR, buf,
			      size_buf) < 0)
		snprintf(buf, size_buf, "%s", uniq);
}

static int64_t next_message_id(struct meta_conn *c)
{
	sqlite3_stmt *s = meta_stmt(c, S_NEXT_MSG_ID,
				    "SELECT seq FROM sqlite_sequence WHERE "
				    "name = 'message'");
	int64_t id = 1000;

	if (!s)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return id + 1;
}

int64_t meta_next_message_id(struct meta_conn *c)
{
	return next_message_id(c);
}

/* ---- local changes ---- */

static bool name_taken(struct meta_conn *c, int64_t folder, int dir,
		       const char *name, int64_t *id_r)
{
	sqlite3_stmt *s = meta_stmt(c, S_MSG_LOOKUP,
				    "SELECT " MSG_COLS " FROM message WHERE "
				    "folder = ? AND dir = ? AND name = ?");
	bool taken = false;

	if (!s)
		return false;
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_int(s, 2, dir);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW) {
		taken = true;
		if (id_r)
			*id_r = sqlite3_column_int64(s, 0);
	}
	sqlite3_reset(s);
	if (!taken && dir == MF_DIR_TMP) {
		s = meta_stmt(c, S_MSG_LOOKUP_LINK,
			      "SELECT " MSG_COLS " FROM message WHERE "
			      "folder = ? AND link_name = ? AND dir != 3");
		if (!s)
			return false;
		sqlite3_bind_int64(s, 1, folder);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW) {
			taken = true;
			if (id_r)
				*id_r = sqlite3_column_int64(s, 0);
		}
		sqlite3_reset(s);
	}
	return taken;
}

int mf_store_tmp_create(int64_t folder, const char *name, int64_t ctime,
			struct mf_message *m_r)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	if (name_taken(c, folder, MF_DIR_TMP, name, NULL))
		return meta_wend(c, -EEXIST);
	s = meta_stmt(c, S_TMP_INSERT,
		      "INSERT INTO message (folder, dir, name, size, "
		      "internaldate, ctime, state) VALUES (?, 2, ?, 0, ?, ?, "
		      "1)");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, ctime / 1000000000);
	sqlite3_bind_int64(s, 4, ctime);
	ret = meta_exec_stmt(c, s, "tmp insert");
	if (ret == 0)
		ret = meta_bump_mtime(c, folder, 3);
	if (ret == 0)
		ret = mf_store_message_get(sqlite3_last_insert_rowid(c->db), m_r);
	return meta_wend(c, ret);
}

/* Drop a row that never reached the server, with its queue entries. */
static int drop_local_message(struct meta_conn *c, int64_t id)
{
	sqlite3_stmt *s;
	char *path;
	int ret;

	s = meta_stmt(c, S_QUEUE_DROP_MSG,
		      "DELETE FROM queue WHERE message = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	ret = meta_exec_stmt(c, s, "queue drop");
	if (ret < 0)
		return ret;
	s = meta_stmt(c, S_MSG_DELETE_ROW,
		      "UPDATE message SET dir = 3, state = 5, link_name = NULL"
		      " WHERE id = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	ret = meta_exec_stmt(c, s, "drop message");
	/*
	 * The staging file goes only after the commit would be better; an
	 * orphan left by a crash here is removed at the next start.
	 */
	path = mf_store_staging_path(id);
	if (ret == 0)
		unlink(path);
	free(path);
	return ret;
}

static int set_place(struct meta_conn *c, int64_t id, int64_t folder, int dir,
		     const char *name, unsigned int flags, int state)
{
	sqlite3_stmt *s = meta_stmt(c, S_MSG_SET_PLACE,
				    "UPDATE message SET folder = ?, dir = ?, "
				    "name = ?, flags = ?, state = ? "
				    "WHERE id = ?");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_int(s, 2, dir);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 4, (int)flags);
	sqlite3_bind_int(s, 5, state);
	sqlite3_bind_int64(s, 6, id);
	return meta_exec_stmt(c, s, "set place");
}

static int find_trash(struct meta_conn *c, const char *account,
		      int64_t *id_r)
{
	sqlite3_stmt *s = meta_stmt(c, S_TRASH_FIND,
				    "SELECT id FROM folder WHERE account = ? "
				    "AND state IN (0, 1) ORDER BY "
				    "(attrs & 4) DESC, (path = 'Trash') DESC, "
				    "id LIMIT 1");
	int ret = -ENOENT;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW) {
		/* Only a real Trash: special-use, or named so. */
		*id_r = sqlite3_column_int64(s, 0);
		ret = 0;
	}
	sqlite3_reset(s);
	if (ret == 0) {
		struct mf_folder f;

		memset(&f, 0, sizeof(f));
		s = meta_stmt(c, S_FOLDER_GET,
			      "SELECT " FOLDER_COLS
			      " FROM folder WHERE id = ?");
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, *id_r);
		if (sqlite3_step(s) == SQLITE_ROW)
			meta_read_folder(s, &f);
		sqlite3_reset(s);
		if (!(f.attrs & MF_FOLDER_TRASH) &&
		    (!f.path || strcmp(f.path, "Trash") != 0))
			ret = -ENOENT;
		mf_folder_clear(&f);
	}
	return ret;
}

static int create_folder_row(struct meta_conn *c, const char *account,
			     int64_t parent, const char *name,
			     const char *path, int state, unsigned int subdirs,
			     int64_t *id_r)
{
	sqlite3_stmt *s = meta_stmt(c, S_FOLDER_INSERT,
				    "INSERT INTO folder (account, parent, name,"
				    " path, state, subdirs, mtime_dir, "
				    "mtime_cur, mtime_new, mtime_tmp, ctime) "
				    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
	int64_t now = mf_now_ns();
	int ret;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, parent);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, path, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, state);
	sqlite3_bind_int(s, 6, (int)subdirs);
	for (int i = 7; i <= 11; i++)
		sqlite3_bind_int64(s, i, now);
	ret = meta_exec_stmt(c, s, "folder insert");
	if (ret == 0) {
		*id_r = sqlite3_last_insert_rowid(c->db);
		ret = meta_bump_mtime(c, parent, 0);
	}
	return ret;
}

int64_t meta_create_folder_row(struct meta_conn *c, const char *account,
			       int64_t parent, const char *name,
			       const char *path, int state,
			       unsigned int subdirs)
{
	int64_t id = -1;

	if (create_folder_row(c, account, parent, name, path, state, subdirs,
			      &id) < 0)
		return -1;
	return id;
}

/*
 * Move a visible message to (dst_folder, dst_dir, dst_name) and queue
 * what the server needs. m is the row as read in this transaction.
 */
static int place_message(struct meta_conn *c, struct mf_message *m,
			 const char *account, int64_t dst_folder, int dst_dir,
			 const char *dst_name, uint64_t size)
{
	struct mf_maildir_name n;
	unsigned int flags = m->flags;
	int state = m->state;
	int ret;

	if (dst_dir != MF_DIR_TMP && mf_maildir_parse(dst_name, &n) == 0) {
		if (n.has_info || dst_dir == MF_DIR_CUR)
			flags = n.flags;
		else
			flags = m->flags & ~MF_FLAG_SEEN;
		/*
		 * mutt moves cur/X:2,S back to new/X:2, to mark it unread
		 * (mutt bug 2476): the flags in the name decide.
		 */
	}
	if (m->dir == MF_DIR_TMP && dst_dir != MF_DIR_TMP) {
		/* Delivery: the commit point. */
		sqlite3_stmt *s = meta_stmt(c, S_MSG_SET_SIZE,
					    "UPDATE message SET size = ? "
					    "WHERE id = ?");
		if (!s)
			return -EIO;
		sqlite3_bind_int64(s, 1, (int64_t)size);
		sqlite3_bind_int64(s, 2, m->id);
		ret = meta_exec_stmt(c, s, "set size");
		if (ret < 0)
			return ret;
		ret = set_place(c, m->id, dst_folder, dst_dir, dst_name, flags,
				MF_MSG_APPEND);
		if (ret == 0)
			ret = meta_queue_push(c, account, MF_OP_APPEND, m->id,
					      dst_folder, NULL);
		return ret;
	}
	if (dst_dir == MF_DIR_TMP && m->dir != MF_DIR_TMP) {
		/* Back into tmp/: not a message any more for the server. */
		return -EPERM;
	}
	if (m->dir == MF_DIR_TMP) {
		/* tmp -> tmp rename: just a new name. */
		if (dst_folder != m->folder)
			return -EXDEV;
		return set_place(c, m->id, dst_folder, dst_dir, dst_name,
				 flags, state);
	}
	if (dst_folder != m->folder) {
		if (state == MF_MSG_SYNCED)
			state = MF_MSG_MOVING;
		ret = set_place(c, m->id, dst_folder, dst_dir, dst_name, flags,
				state);
		if (ret == 0 && m->ruid &&
		    !meta_queue_has_fresh(c, MF_OP_MOVE, m->id))
			ret = meta_queue_push(c, account, MF_OP_MOVE, m->id,
					      dst_folder, NULL);
	} else {
		ret = set_place(c, m->id, dst_folder, dst_dir, dst_name, flags,
				state);
	}
	if (ret == 0 && flags != m->flags && m->ruid &&
	    !meta_queue_has_fresh(c, MF_OP_FLAGS, m->id))
		ret = meta_queue_push(c, account, MF_OP_FLAGS, m->id,
				      dst_folder, NULL);
	return ret;
}

static int unlink_row(struct meta_conn *c, struct mf_message *m,
		      const char *account, enum mf_delete_policy policy)
{
	int64_t trash = 0;
	int ret;

	if (m->dir == MF_DIR_TMP || (m->state == MF_MSG_APPEND && !m->ruid &&
				     meta_queue_has_fresh(c, MF_OP_APPEND,
							  m->id)))
		return drop_local_message(c, m->id);

	if (policy == MF_DELETE_TRASH && find_trash(c, account, &trash) < 0) {
		/*
		 * No Trash on the server: make one rather than expunge what
		 * the user asked to keep in the trash.
		 */
		int64_t root = 0;
		sqlite3_stmt *r = meta_stmt(c, S_ROOT_FIND,
					    "SELECT id FROM folder WHERE "
					    "parent = 0 AND account = ?");

		if (!r)
			return -EIO;
		sqlite3_bind_text(r, 1, account, -1, SQLITE_STATIC);
		if (sqlite3_step(r) == SQLITE_ROW)
			root = sqlite3_column_int64(r, 0);
		sqlite3_reset(r);
		trash = root ? meta_create_folder_row(c, account, root,
						      "Trash", "Trash",
						      MF_FOLDER_CREATING,
						      MF_SUBDIR_ALL)
			     : -1;
		if (trash < 0)
			return -EIO;
		ret = meta_queue_push(c, account, MF_OP_MKDIR, 0, trash, NULL);
		if (ret < 0)
			return ret;
		mf_notice("%s: no Trash folder; creating one for deleted "
			  "messages", account);
	}
	if (policy == MF_DELETE_TRASH && trash != m->folder) {
		/* A move to Trash, keeping the name. */
		char *name = xstrdup(m->name);

		if (name_taken(c, trash, MF_DIR_CUR, name, NULL)) {
			free(name);
			name = xasprintf("%lld.M%lld.trash:2,",
					 (long long)(mf_now_ns() / 1000000000),
					 (long long)m->id);
		}
		ret = place_message(c, m, account, trash, MF_DIR_CUR, name,
				    m->size);
		if (ret == 0)
			ret = meta_bump_mtime(c, trash, 1);
		free(name);
		return ret;
	}
	/* The queue entry decides the end state; hide it now. */
	ret = set_place(c, m->id, m->folder, MF_DIR_GONE, m->name, m->flags,
			MF_MSG_DELETING);
	if (ret == 0)
		ret = meta_queue_push(c, account, MF_OP_EXPUNGE, m->id,
				      m->folder, NULL);
	return ret;
}

/*
 * Two rows of one server message: the same account-global id under the
 * same unique name part (only a backend with MF_CAP_GLOBAL_IDS gives two
 * rows one unique part; see meta_sync.c insert_new).
 */
static bool same_server_message(const struct mf_message *a,
				const struct mf_message *b)
{
	struct mf_maildir_name na, nb;

	return a->ruid && b->ruid && strcmp(a->ruid, b->ruid) == 0 &&
	       mf_maildir_parse(a->name, &na) == 0 &&
	       mf_maildir_parse(b->name, &nb) == 0 &&
	       strcmp(na.uniq, nb.uniq) == 0;
}

static int forget_server(struct meta_conn *c, int64_t id)
{
	sqlite3_stmt *s = meta_stmt(c, S_FORGET_SERVER,
				    "UPDATE message SET rfolder = 0, ruid = "
				    "NULL WHERE id = ?");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	return meta_exec_stmt(c, s, "forget server");
}

int mf_store_rename_message(int64_t msg_id, const char *src_name,
			    int64_t dst_folder, int dst_dir,
			    const char *dst_name, bool noreplace,
			    uint64_t size)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m, victim;
	char *account = NULL;
	int64_t other;
	int ret;

	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	memset(&victim, 0, sizeof(victim));
	ret = mf_store_message_get(msg_id, &m);
	if (ret < 0)
		goto out;
	if (m.dir == MF_DIR_GONE) {
		ret = -ENOENT;
		goto out;
	}
	account = meta_folder_account(c, m.folder);
	{
		char *dst_account = meta_folder_account(c, dst_folder);
		bool same = account && dst_account &&
			    strcmp(account, dst_account) == 0;

		free(dst_account);
		if (!same) {
			ret = -EXDEV;
			goto out;
		}
	}
	/* A tmp/ link name renamed away: the link goes, the message stays */
	if (m.link_name && strcmp(m.link_name, src_name) == 0 &&
	    m.dir != MF_DIR_TMP) {
		ret = -EPERM;
		goto out;
	}
	if (name_taken(c, dst_folder, dst_dir, dst_name, &other)) {
		if (other == m.id && m.folder == dst_folder &&
		    m.dir == dst_dir && strcmp(m.name, dst_name) == 0) {
			ret = 0;	/* rename onto itself */
			goto out;
		}
		if (noreplace) {
			ret = -EEXIST;
			goto out;
		}
		ret = mf_store_message_get(other, &victim);
		if (ret == 0 && same_server_message(&m, &victim)) {
			/* Gmail: a rename into a label the message has. The
			   target row goes; the server keeps the message. */
			ret = drop_local_message(c, victim.id);
			if (ret == 0)
				ret = forget_server(c, victim.id);
		} else if (ret == 0) {
			ret = unlink_row(c, &victim, account, MF_DELETE_TRASH);
		}
		if (ret < 0)
			goto out;
	}
	ret = place_message(c, &m, account, dst_folder, dst_dir, dst_name,
			    size);
	if (ret == 0)
		ret = meta_bump_mtime(c, m.folder, m.dir + 1);
	if (ret == 0)
		ret = meta_bump_mtime(c, dst_folder, dst_dir + 1);
out:
	free(account);
	mf_message_clear(&m);
	mf_message_clear(&victim);
	return meta_wend(c, ret);
}

int mf_store_link_message(int64_t msg_id, int64_t dst_folder, int dst_dir,
			  const char *dst_name, uint64_t size)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	char *account = NULL;
	char *old_name = NULL;
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	ret = mf_store_message_get(msg_id, &m);
	if (ret < 0)
		goto out;
	/*
	 * Only the delivery idiom is a real hard link: tmp/X -> new|cur/Y
	 * of the same folder, once. Anything else is EPERM, which MUAs
	 * (neomutt, Python's mailbox) treat as "no hard links here" and
	 * fall back to rename().
	 */
	if (m.dir != MF_DIR_TMP || m.link_name || dst_dir == MF_DIR_TMP ||
	    dst_folder != m.folder) {
		ret = -EPERM;
		goto out;
	}
	if (name_taken(c, dst_folder, dst_dir, dst_name, NULL)) {
		ret = -EEXIST;
		goto out;
	}
	account = meta_folder_account(c, m.folder);
	old_name = xstrdup(m.name);
	ret = place_message(c, &m, account, dst_folder, dst_dir, dst_name,
			    size);
	if (ret < 0)
		goto out;
	s = meta_stmt(c, S_MSG_SET_LINK,
		      "UPDATE message SET link_name = ? WHERE id = ?");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_text(s, 1, old_name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, m.id);
	ret = meta_exec_stmt(c, s, "set link");
	if (ret == 0)
		ret = meta_bump_mtime(c, dst_folder, dst_dir + 1);
out:
	free(old_name);
	free(account);
	mf_message_clear(&m);
	return meta_wend(c, ret);
}

int mf_store_unlink_message(int64_t folder, int dir, const char *name,
			    enum mf_delete_policy policy)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_message m;
	char *account = NULL;
	int64_t id;
	int ret;

	if (!c)
		return -EIO;
	memset(&m, 0, sizeof(m));
	if (!name_taken(c, folder, dir, name, &id)) {
		ret = -ENOENT;
		goto out;
	}
	ret = mf_store_message_get(id, &m);
	if (ret < 0)
		goto out;
	if (dir == MF_DIR_TMP && m.link_name &&
	    strcmp(m.link_name, name) == 0) {
		/* The second half of link()+unlink(): drop the tmp name. */
		sqlite3_stmt *s = meta_stmt(c, S_MSG_UNLINK_LINK,
					    "UPDATE message SET link_name = "
					    "NULL WHERE id = ?");
		if (!s) {
			ret = -EIO;
			goto out;
		}
		sqlite3_bind_int64(s, 1, id);
		ret = meta_exec_stmt(c, s, "unlink link");
	} else {
		account = meta_folder_account(c, folder);
		ret = unlink_row(c, &m, account, policy);
	}
	if (ret == 0)
		ret = meta_bump_mtime(c, folder, dir + 1);
out:
	free(account);
	mf_message_clear(&m);
	return meta_wend(c, ret);
}

int mf_store_set_mtime(int64_t msg_id, int64_t seconds)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	/*
	 * For a message still to be uploaded this becomes its INTERNALDATE.
	 * One the server has keeps its INTERNALDATE as st_mtime (IMAP cannot
	 * change it, and MUA header caches key on it): accepted, no effect.
	 */
	s = meta_stmt(c, S_MSG_SET_MTIME,
		      "UPDATE message SET internaldate = ? WHERE id = ? AND "
		      "ruid IS NULL AND state IN (1, 2)");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_int64(s, 1, seconds);
	sqlite3_bind_int64(s, 2, msg_id);
	return meta_wend(c, meta_exec_stmt(c, s, "set mtime"));
}

int mf_store_set_msgid(int64_t msg_id, const char *msgid)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_MSG_SET_MSGID,
		      "UPDATE message SET msgid = ? WHERE id = ?");
	if (!s)
		return meta_wend(c, -EIO);
	if (msgid)
		sqlite3_bind_text(s, 1, msgid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, msg_id);
	return meta_wend(c, meta_exec_stmt(c, s, "set msgid"));
}

int mf_store_set_size(int64_t msg_id, uint64_t size)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_MSG_SET_SIZE,
		      "UPDATE message SET size = ? WHERE id = ?");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_int64(s, 1, (int64_t)size);
	sqlite3_bind_int64(s, 2, msg_id);
	return meta_wend(c, meta_exec_stmt(c, s, "set size"));
}

/* ---- folders ---- */

static bool folder_name_taken(struct meta_conn *c, int64_t parent,
			      const char *name)
{
	sqlite3_stmt *s = meta_stmt(c, S_FOLDER_LOOKUP,
				    "SELECT " FOLDER_COLS " FROM folder WHERE "
				    "parent = ? AND name = ? AND state IN "
				    "(0, 1, 4)");
	bool taken;

	if (!s)
		return true;
	sqlite3_bind_int64(s, 1, parent);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	taken = sqlite3_step(s) == SQLITE_ROW;
	sqlite3_reset(s);
	return taken;
}

static bool is_subdir_name(const char *name)
{
	return strcmp(name, "cur") == 0 || strcmp(name, "new") == 0 ||
	       strcmp(name, "tmp") == 0;
}

int mf_store_mkdir(int64_t parent, const char *name, int64_t *id_r)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_folder p;
	char *path = NULL, *unesc;
	int ret;

	if (!c)
		return -EIO;
	memset(&p, 0, sizeof(p));
	ret = mf_store_folder_get(parent, &p);
	if (ret < 0)
		goto out;
	unesc = mf_folder_unescape(name);
	if (!unesc || name[0] == '.' || is_subdir_name(name)) {
		/* Names a server could not get back to us unchanged. */
		free(unesc);
		ret = -EINVAL;
		goto out;
	}
	free(unesc);
	if (folder_name_taken(c, parent, name)) {
		ret = -EEXIST;
		goto out;
	}
	path = p.path[0] ? xasprintf("%s/%s", p.path, name) : xstrdup(name);
	/* A new folder is a Maildir at once, as MUAs and notmuch expect. */
	ret = create_folder_row(c, p.account, parent, name, path,
				MF_FOLDER_CREATING, MF_SUBDIR_ALL, id_r);
	if (ret == 0)
		ret = meta_queue_push(c, p.account, MF_OP_MKDIR, 0, *id_r,
				      NULL);
out:
	free(path);
	mf_folder_clear(&p);
	return meta_wend(c, ret);
}

int mf_store_mksubdir(int64_t folder, int sub)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_folder f;
	sqlite3_stmt *s;
	unsigned int bit = 1u << (sub - 1);
	int ret;

	if (!c)
		return -EIO;
	memset(&f, 0, sizeof(f));
	ret = mf_store_folder_get(folder, &f);
	if (ret < 0)
		goto out;
	if (f.state == MF_FOLDER_VIRTUAL || (f.attrs & MF_FOLDER_NOSELECT)) {
		/* Not a mailbox: a folder of that name would be hidden. */
		ret = -EPERM;
		goto out;
	}
	if (f.subdirs & bit) {
		ret = -EEXIST;
		goto out;
	}
	s = meta_stmt(c, S_FOLDER_SET_SUBDIRS,
		      "UPDATE folder SET subdirs = ? WHERE id = ?");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_int(s, 1, (int)(f.subdirs | bit));
	sqlite3_bind_int64(s, 2, folder);
	ret = meta_exec_stmt(c, s, "mksubdir");
	if (ret == 0)
		ret = meta_bump_mtime(c, folder, 0);
out:
	mf_folder_clear(&f);
	return meta_wend(c, ret);
}

int mf_store_rmsubdir(int64_t folder, int sub)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_folder f;
	sqlite3_stmt *s;
	unsigned int bit = 1u << (sub - 1);
	int ret;

	if (!c)
		return -EIO;
	memset(&f, 0, sizeof(f));
	ret = mf_store_folder_get(folder, &f);
	if (ret < 0)
		goto out;
	if (!(f.subdirs & bit)) {
		ret = -ENOENT;
		goto out;
	}
	s = meta_stmt(c, S_COUNT_MSGS,
		      "SELECT count(*) FROM message WHERE folder = ? AND "
		      "dir = ?");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, folder);
	sqlite3_bind_int(s, 2, sub - 1);
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int64(s, 0) > 0)
		ret = -ENOTEMPTY;
	sqlite3_reset(s);
	if (ret < 0)
		goto out;
	s = meta_stmt(c, S_FOLDER_SET_SUBDIRS,
		      "UPDATE folder SET subdirs = ? WHERE id = ?");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_int(s, 1, (int)(f.subdirs & ~bit));
	sqlite3_bind_int64(s, 2, folder);
	ret = meta_exec_stmt(c, s, "rmsubdir");
	if (ret == 0)
		ret = meta_bump_mtime(c, folder, 0);
out:
	mf_folder_clear(&f);
	return meta_wend(c, ret);
}

static int set_folder_state(struct meta_conn *c, int64_t id, int state)
{
	sqlite3_stmt *s = meta_stmt(c, S_FOLDER_SET_STATE,
				    "UPDATE folder SET state = ? WHERE id = ?");

	if (!s)
		return -EIO;
	sqlite3_bind_int(s, 1, state);
	sqlite3_bind_int64(s, 2, id);
	return meta_exec_stmt(c, s, "folder state");
}

int meta_set_folder_state(struct meta_conn *c, int64_t id, int state)
{
	return set_folder_state(c, id, state);
}

int mf_store_rmdir(int64_t parent, const char *name)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_folder f;
	sqlite3_stmt *s;
	int ret = 0;

	if (!c)
		return -EIO;
	memset(&f, 0, sizeof(f));
	s = meta_stmt(c, S_FOLDER_LOOKUP,
		      "SELECT " FOLDER_COLS " FROM folder WHERE parent = ? AND"
		      " name = ? AND state IN (0, 1, 4)");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_int64(s, 1, parent);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW)
		meta_read_folder(s, &f);
	else
		ret = -ENOENT;
	sqlite3_reset(s);
	if (ret < 0)
		goto out;
	if (f.parent == 0) {
		ret = -EPERM;	/* an account */
		goto out;
	}
	if (f.attrs & MF_FOLDER_INBOX) {
		ret = -EPERM;
		goto out;
	}
	s = meta_stmt(c, S_FOLDER_NCHILD,
		      "SELECT count(*) FROM folder WHERE parent = ? AND "
		      "state IN (0, 1, 4)");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, f.id);
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) > 0)
		ret = -ENOTEMPTY;
	sqlite3_reset(s);
	if (ret < 0)
		goto out;
	s = meta_stmt(c, S_FOLDER_HAS_MSGS,
		      "SELECT 1 FROM message WHERE folder = ? AND dir != 3 "
		      "LIMIT 1");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, f.id);
	if (sqlite3_step(s) == SQLITE_ROW)
		ret = -ENOTEMPTY;
	sqlite3_reset(s);
	if (ret < 0)
		goto out;
	if (f.state == MF_FOLDER_CREATING && !f.remote) {
		/*
		 * Never reached the server: if the CREATE was not tried yet,
		 * forget both; otherwise delete it after the CREATE.
		 */
		s = meta_stmt(c, S_QUEUE_DROP_MKDIR,
			      "DELETE FROM queue WHERE folder = ? AND op = 5 "
			      "AND attempts = 0");
		if (!s) {
			ret = -EIO;
			goto out;
		}
		sqlite3_bind_int64(s, 1, f.id);
		ret = meta_exec_stmt(c, s, "drop mkdir");
		if (ret == 0 && sqlite3_changes(c->db) > 0) {
			ret = set_folder_state(c, f.id, MF_FOLDER_GONE);
		} else if (ret == 0) {
			ret = set_folder_state(c, f.id, MF_FOLDER_DELETING);
			if (ret == 0)
				ret = meta_queue_push(c, f.account,
						      MF_OP_RMDIR, 0, f.id,
						      NULL);
		}
	} else if (f.state == MF_FOLDER_VIRTUAL) {
		ret = set_folder_state(c, f.id, MF_FOLDER_GONE);
	} else {
		ret = set_folder_state(c, f.id, MF_FOLDER_DELETING);
		if (ret == 0)
			ret = meta_queue_push(c, f.account, MF_OP_RMDIR, 0,
					      f.id, f.remote);
	}
	if (ret == 0)
		ret = meta_bump_mtime(c, parent, 0);
out:
	mf_folder_clear(&f);
	return meta_wend(c, ret);
}

/* Rewrite the path of folder and every descendant. */
static int repath(struct meta_conn *c, int64_t id, const char *path)
{
	sqlite3_stmt *s = meta_stmt(c, S_FOLDER_SET_PATH,
				    "UPDATE folder SET path = ? WHERE id = ?");
	int64_t *kids = NULL;
	char **names = NULL;
	unsigned int n = 0;
	int ret;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, id);
	ret = meta_exec_stmt(c, s, "set path");
	if (ret < 0)
		return ret;
	s = meta_stmt(c, S_FOLDER_CHILDREN,
		      "SELECT id, name FROM folder WHERE parent = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, id);
	while (sqlite3_step(s) == SQLITE_ROW) {
		kids = xrealloc(kids, (n + 1) * sizeof(*kids));
		names = xrealloc(names, (n + 1) * sizeof(*names));
		kids[n] = sqlite3_column_int64(s, 0);
		names[n] = col_strdup(s, 1);
		n++;
	}
	sqlite3_reset(s);
	for (unsigned int i = 0; i < n; i++) {
		char *p = xasprintf("%s/%s", path, names[i]);
		if (ret == 0)
			ret = repath(c, kids[i], p);
		free(p);
		free(names[i]);
	}
	free(kids);
	free(names);
	return ret;
}

int meta_repath(struct meta_conn *c, int64_t id, const char *path)
{
	return repath(c, id, path);
}

int mf_store_rename_folder(int64_t folder, int64_t new_parent,
			   const char *new_name)
{
	struct meta_conn *c = meta_wbegin();
	struct mf_folder f, p;
	sqlite3_stmt *s;
	char *path = NULL, *unesc;
	int ret;

	if (!c)
		return -EIO;
	memset(&f, 0, sizeof(f));
	memset(&p, 0, sizeof(p));
	ret = mf_store_folder_get(folder, &f);
	if (ret == 0)
		ret = mf_store_folder_get(new_parent, &p);
	if (ret < 0)
		goto out;
	if (f.parent == 0 || (f.attrs & MF_FOLDER_INBOX) ||
	    strcmp(f.account, p.account) != 0) {
		ret = f.parent == 0 || (f.attrs & MF_FOLDER_INBOX) ? -EPERM
								   : -EXDEV;
		goto out;
	}
	unesc = mf_folder_unescape(new_name);
	if (!unesc || new_name[0] == '.' || is_subdir_name(new_name)) {
		free(unesc);
		ret = -EINVAL;
		goto out;
	}
	free(unesc);
	/* Not into itself or a descendant. */
	for (int64_t a = new_parent; a;) {
		struct mf_folder anc;

		if (a == folder) {
			ret = -EINVAL;
			goto out;
		}
		memset(&anc, 0, sizeof(anc));
		if (mf_store_folder_get(a, &anc) < 0)
			break;
		a = anc.parent;
		mf_folder_clear(&anc);
	}
	if (folder_name_taken(c, new_parent, new_name)) {
		ret = -EEXIST;
		goto out;
	}
	s = meta_stmt(c, S_FOLDER_MOVE,
		      "UPDATE folder SET parent = ?, name = ? WHERE id = ?");
	if (!s) {
		ret = -EIO;
		goto out;
	}
	sqlite3_bind_int64(s, 1, new_parent);
	sqlite3_bind_text(s, 2, new_name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, folder);
	ret = meta_exec_stmt(c, s, "folder move");
	path = p.path[0] ? xasprintf("%s/%s", p.path, new_name)
			 : xstrdup(new_name);
	if (ret == 0)
		ret = repath(c, folder, path);
	if (ret == 0 && f.remote)
		ret = meta_queue_push(c, f.account, MF_OP_RENAME, 0, folder,
				      f.remote);
	if (ret == 0)
		ret = meta_bump_mtime(c, f.parent, 0);
	if (ret == 0)
		ret = meta_bump_mtime(c, new_parent, 0);
out:
	free(path);
	mf_folder_clear(&f);
	mf_folder_clear(&p);
	return meta_wend(c, ret);
}

int mf_store_queue_length(const char *account, uint64_t *count_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_QUEUE_LEN,
		      "SELECT count(*) FROM queue WHERE account = ?");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	*count_r = 0;
	if (sqlite3_step(s) == SQLITE_ROW)
		*count_r = (uint64_t)sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return 0;
}

int mf_store_queue_stats(const char *account, struct mf_queue_stats *st)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	memset(st, 0, sizeof(*st));
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_QUEUE_STATS,
		      "SELECT (SELECT count(*) FROM queue WHERE account = ?1),"
		      " created, attempts, last_error FROM queue WHERE "
		      "account = ?1 ORDER BY id LIMIT 1");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW) {
		st->length = (uint64_t)sqlite3_column_int64(s, 0);
		st->oldest_ns = sqlite3_column_int64(s, 1);
		st->attempts = sqlite3_column_int(s, 2);
		st->last_error = col_strdup(s, 3);
	}
	sqlite3_reset(s);
	return 0;
}

int mf_store_held_folders(const char *account, mf_held_cb *cb, void *ctx)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_HELD,
		      "SELECT path, held FROM folder WHERE account = ? AND "
		      "held IS NOT NULL AND state IN (0, 1, 4) ORDER BY path");
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	while (sqlite3_step(s) == SQLITE_ROW)
		cb(ctx, (const char *)sqlite3_column_text(s, 0),
		   (const char *)sqlite3_column_text(s, 1));
	sqlite3_reset(s);
	return 0;
}

int mf_store_folder_accept(const char *account, const char *path)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	int ret;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_ACCEPT,
		      "UPDATE folder SET accept = 1 WHERE account = ? AND "
		      "path = ? AND held IS NOT NULL AND state IN (0, 1, 4)");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	ret = meta_exec_stmt(c, s, "accept");
	if (ret == 0 && sqlite3_changes(c->db) == 0)
		ret = -EALREADY;
	return meta_wend(c, ret);
}
