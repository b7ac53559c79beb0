/*
 * The store's side of client-side views: the message_header side table
 * (schema 3, see migrate_3_view_headers in meta.c) and the listings
 * fs/views.c filters with the [view] rules.
 */
#include "meta_private.h"
#include "mf_store_views.h"
#include "mf_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Statement indexes: meta.c has 0..47, meta_sync.c 48..; these 118... */
enum {
	S_VIEW_HEADERS = 118,
	S_VIEW_SCAN,
	S_VIEW_FIND,
	S_VIEW_MTIME_CUR,
	S_VIEW_MTIME_NEW,
	S_VIEW_FIELDS_GET,
	S_VIEW_FIELDS_SET,
	S_VIEW_RELIST,
	S_VIEW_END,
};

_Static_assert(S_VIEW_END <= 128, "meta_views.c statement indexes");

#define VIEW_COLS                                                          \
	"m.id, m.folder, m.dir, m.name, m.link_name, m.rfolder, m.ruid, "  \
	"m.flags, m.base_flags, m.size, m.internaldate, m.ctime, m.msgid, " \
	"m.blob, m.state, f.account, f.path, h.fields, f.attrs"

int meta_store_headers(struct meta_conn *c, int64_t msg, const char *fields)
{
	/*
	 * Full listings (a server without CONDSTORE lists a changed folder
	 * whole) bring the same lines again: write only what changed.
	 */
	sqlite3_stmt *s = meta_stmt(c, S_VIEW_HEADERS,
				    "INSERT INTO message_header "
				    "(message, fields) VALUES (?, ?) "
				    "ON CONFLICT(message) DO UPDATE SET "
				    "fields = excluded.fields WHERE "
				    "fields != excluded.fields");

	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, msg);
	sqlite3_bind_text(s, 2, fields, -1, SQLITE_STATIC);
	return meta_exec_stmt(c, s, "store header lines");
}

/* Run s (bound) and hand each row to cb, borrowed. */
static int view_rows(struct meta_conn *c, sqlite3_stmt *s, mf_view_msg_cb *cb,
		     void *ctx)
{
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct mf_message m;
		struct mf_view_msg vm;

		memset(&m, 0, sizeof(m));
		m.id = sqlite3_column_int64(s, 0);
		m.folder = sqlite3_column_int64(s, 1);
		m.dir = sqlite3_column_int(s, 2);
		m.name = (char *)sqlite3_column_text(s, 3);
		m.link_name = (char *)sqlite3_column_text(s, 4);
		m.rfolder = sqlite3_column_int64(s, 5);
		m.ruid = (char *)sqlite3_column_text(s, 6);
		m.flags = (unsigned int)sqlite3_column_int(s, 7);
		m.base_flags = (unsigned int)sqlite3_column_int(s, 8);
		m.size = (uint64_t)sqlite3_column_int64(s, 9);
		m.internaldate = sqlite3_column_int64(s, 10);
		m.ctime = sqlite3_column_int64(s, 11);
		m.msgid = (char *)sqlite3_column_text(s, 12);
		m.blob = (char *)sqlite3_column_text(s, 13);
		m.state = sqlite3_column_int(s, 14);
		vm.m = &m;
		vm.account = (const char *)sqlite3_column_text(s, 15);
		vm.path = (const char *)sqlite3_column_text(s, 16);
		vm.fields = (const char *)sqlite3_column_text(s, 17);
		vm.attrs = (unsigned int)sqlite3_column_int(s, 18);
		if (!m.name || !vm.account || !vm.path)
			continue;
		if (cb(ctx, &vm)) {
			rc = SQLITE_DONE;
			break;
		}
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return meta_dberr(c, "view listing");
	return 0;
}

int mf_store_view_scan(int dir, int64_t from_id, mf_view_msg_cb *cb,
		       void *ctx)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	s = meta_stmt(c, S_VIEW_SCAN,
		      "SELECT " VIEW_COLS " FROM message m "
		      "JOIN folder f ON f.id = m.folder "
		      "LEFT JOIN message_header h ON h.message = m.id "
		      "WHERE m.id >= ? AND m.dir = ? AND f.state IN (0, 1) "
		      "ORDER BY m.id");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, from_id);
	sqlite3_bind_int(s, 2, dir);
	return view_rows(c, s, cb, ctx);
}

int mf_store_view_find(int dir, const char *name, mf_view_msg_cb *cb,
		       void *ctx)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;

	if (!c)
		return -EIO;
	/*
	 * Per folder, the (folder, dir, name) index finds the name: CROSS
	 * JOIN keeps folder the outer loop (the planner would otherwise
	 * scan the whole index).
	 */
	s = meta_stmt(c, S_VIEW_FIND,
		      "SELECT " VIEW_COLS " FROM folder f "
		      "CROSS JOIN message m INDEXED BY message_place "
		      "ON m.folder = f.id AND m.dir = ? AND m.name = ? "
		      "LEFT JOIN message_header h ON h.message = m.id "
		      "WHERE f.state IN (0, 1) ORDER BY m.id");
	if (!s)
		return -EIO;
	sqlite3_bind_int(s, 1, dir);
	sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
	return view_rows(c, s, cb, ctx);
}

int64_t mf_store_view_mtime(int dir)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	int64_t t = 0;

	if (!c)
		return 0;
	s = dir == MF_DIR_NEW
		    ? meta_stmt(c, S_VIEW_MTIME_NEW,
				"SELECT max(mtime_new) FROM folder WHERE "
				"state IN (0, 1)")
		    : meta_stmt(c, S_VIEW_MTIME_CUR,
				"SELECT max(mtime_cur) FROM folder WHERE "
				"state IN (0, 1)");
	if (!s)
		return 0;
	if (sqlite3_step(s) == SQLITE_ROW)
		t = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return t;
}

/* Is every space-separated word of want also a word of have? */
static bool fields_subset(const char *want, const char *have)
{
	const char *p = want;

	while (*p) {
		size_t len = strcspn(p, " ");
		const char *h = have;
		bool found = false;

		while (*h && !found) {
			size_t hl = strcspn(h, " ");

			found = hl == len && strncmp(h, p, len) == 0;
			h += hl;
			while (*h == ' ')
				h++;
		}
		if (len && !found)
			return false;
		p += len;
		while (*p == ' ')
			p++;
	}
	return true;
}

int mf_store_view_fields_check(const char *account, const char *fields,
			       bool *relist_r)
{
	struct meta_conn *c = meta_wbegin();
	sqlite3_stmt *s;
	char *stored = NULL;
	int ret = 0;

	*relist_r = false;
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_VIEW_FIELDS_GET,
		      "SELECT fields FROM view_fields WHERE account = ?");
	if (!s)
		return meta_wend(c, -EIO);
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
		stored = xstrdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_reset(s);
	if (fields && !fields_subset(fields, stored ? stored : "")) {
		s = meta_stmt(c, S_VIEW_RELIST,
			      "UPDATE folder SET cursor = NULL WHERE "
			      "account = ? AND cursor IS NOT NULL");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
			ret = meta_exec_stmt(c, s, "relist for views");
			*relist_r = ret == 0 && sqlite3_changes(c->db) > 0;
		}
	}
	if (ret == 0 && (fields || stored)) {
		s = meta_stmt(c, S_VIEW_FIELDS_SET,
			      "INSERT OR REPLACE INTO view_fields "
			      "(account, fields) VALUES (?, ?)");
		if (!s) {
			ret = -EIO;
		} else {
			sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
			if (fields)
				sqlite3_bind_text(s, 2, fields, -1,
						  SQLITE_STATIC);
			else
				sqlite3_bind_null(s, 2);
			ret = meta_exec_stmt(c, s, "store view fields");
		}
	}
	free(stored);
	return meta_wend(c, ret);
}
