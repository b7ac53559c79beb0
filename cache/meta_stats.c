/*
 * Per-account figures for mount.mailfs --status: how much of the
 * account's mail is cached, and how far prefetch has come.
 *
 * Status requests are rare, so the statement is prepared per call rather
 * than kept in the connection's statement cache.
 */
#include "meta_private.h"
#include "mf_util.h"

#include <errno.h>
#include <string.h>

int mf_store_account_stats(const char *account, bool unseen_only,
			   struct mf_account_stats *st)
{
	static const char sql[] =
		"SELECT count(*), count(m.blob),"
		" coalesce(sum(CASE WHEN m.blob IS NOT NULL THEN m.size END), 0),"
		" coalesce(sum(CASE WHEN ?2 = 0 OR (m.flags & 16) = 0"
		"  THEN 1 END), 0),"
		" coalesce(sum(CASE WHEN (?2 = 0 OR (m.flags & 16) = 0) AND"
		"  m.blob IS NULL THEN 1 END), 0)"
		" FROM message m JOIN folder f ON f.id = m.folder"
		" WHERE f.account = ?1 AND m.ruid IS NOT NULL AND m.dir != 3";
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s = NULL;
	int ret = 0;

	memset(st, 0, sizeof(*st));
	if (!c)
		return -EIO;
	if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK)
		return meta_dberr(c, "account stats");
	sqlite3_bind_text(s, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, unseen_only);
	if (sqlite3_step(s) == SQLITE_ROW) {
		st->messages = (uint64_t)sqlite3_column_int64(s, 0);
		st->cached = (uint64_t)sqlite3_column_int64(s, 1);
		st->cached_bytes = (uint64_t)sqlite3_column_int64(s, 2);
		st->prefetch_total = (uint64_t)sqlite3_column_int64(s, 3);
		st->prefetch_left = (uint64_t)sqlite3_column_int64(s, 4);
	} else {
		ret = meta_dberr(c, "account stats");
	}
	sqlite3_finalize(s);
	return ret;
}
