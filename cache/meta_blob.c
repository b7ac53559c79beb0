/*
 * The blob_cache table (see blob_private.h): the store side of the blob
 * store's least-recently-used eviction.
 */
#include "blob_private.h"
#include "meta_private.h"
#include "mf_util.h"

#include <errno.h>
#include <string.h>

/* Statement indexes: meta.c and meta_sync.c use those below 112. */
enum {
	S_BLOB_INSERT = 112,
	S_BLOB_TOUCH,
	S_BLOB_CANDIDATES,
	S_BLOB_FORGET,
	S_BLOB_END,
};

_Static_assert(S_BLOB_END <= 128, "meta_blob.c statement indexes");

int meta_blob_record(const struct blob_rec *recs, unsigned int n)
{
	struct meta_conn *c;
	sqlite3_stmt *s;
	int ret = 0;

	if (n == 0)
		return 0;
	c = meta_wbegin();
	if (!c)
		return -EIO;
	for (unsigned int i = 0; i < n && ret == 0; i++) {
		if (recs[i].size == BLOB_TOUCH_ONLY) {
			s = meta_stmt(c, S_BLOB_TOUCH,
				      "UPDATE blob_cache SET atime = ?2 "
				      "WHERE hash = ?1 AND atime < ?2");
		} else {
			s = meta_stmt(c, S_BLOB_INSERT,
				      "INSERT INTO blob_cache(hash, size, atime)"
				      " VALUES (?1, ?3, ?2) ON CONFLICT(hash) "
				      "DO UPDATE SET size = excluded.size, "
				      "atime = max(atime, excluded.atime) "
				      "WHERE excluded.atime > atime OR "
				      "excluded.size != size");
		}
		if (!s) {
			ret = -EIO;
			break;
		}
		sqlite3_bind_text(s, 1, recs[i].hash, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, recs[i].atime);
		if (recs[i].size != BLOB_TOUCH_ONLY)
			sqlite3_bind_int64(s, 3, (sqlite3_int64)recs[i].size);
		ret = meta_exec_stmt(c, s, "record a cached body");
	}
	return meta_wend(c, ret);
}

int meta_blob_candidates(int64_t after_atime, const char *after_hash,
			 int64_t before, unsigned int max,
			 struct blob_rec *out, unsigned int *n_r)
{
	struct meta_conn *c = meta_conn();
	sqlite3_stmt *s;
	unsigned int n = 0;
	int rc;

	*n_r = 0;
	if (!c)
		return -EIO;
	s = meta_stmt(c, S_BLOB_CANDIDATES,
		      "SELECT b.hash, b.size, b.atime FROM blob_cache b "
		      "WHERE (b.atime, b.hash) > (?1, ?2) AND b.atime < ?3 "
		      "AND NOT EXISTS (SELECT 1 FROM message m "
		      "WHERE m.blob = b.hash AND (m.state IN (1, 2, 6) OR "
		      "m.ruid IS NULL)) ORDER BY b.atime, b.hash LIMIT ?4");
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, after_atime);
	sqlite3_bind_text(s, 2, after_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, before);
	sqlite3_bind_int(s, 4, (int)max);
	while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *h = sqlite3_column_text(s, 0);

		if (!h || strlen((const char *)h) != MF_BLOB_HASH_LEN)
			continue;
		memcpy(out[n].hash, h, MF_BLOB_HASH_LEN + 1);
		out[n].size = (uint64_t)sqlite3_column_int64(s, 1);
		out[n].atime = sqlite3_column_int64(s, 2);
		n++;
	}
	sqlite3_reset(s);
	*n_r = n;
	return 0;
}

int meta_blob_forget(const struct blob_rec *recs, unsigned int n)
{
	struct meta_conn *c;
	sqlite3_stmt *s;
	int ret = 0;

	if (n == 0)
		return 0;
	c = meta_wbegin();
	if (!c)
		return -EIO;
	for (unsigned int i = 0; i < n && ret == 0; i++) {
		s = meta_stmt(c, S_BLOB_FORGET,
			      "DELETE FROM blob_cache WHERE hash = ?");
		if (!s) {
			ret = -EIO;
			break;
		}
		sqlite3_bind_text(s, 1, recs[i].hash, -1, SQLITE_STATIC);
		ret = meta_exec_stmt(c, s, "forget an evicted body");
	}
	return meta_wend(c, ret);
}
