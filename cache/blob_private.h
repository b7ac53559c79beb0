/*
 * The blob store's rows in the store (table blob_cache, schema 3): which
 * bodies are cached, their sizes and when each was last used, for
 * least-recently-used eviction. Used by cache/blob.c only.
 */
#ifndef MF_BLOB_PRIVATE_H
#define MF_BLOB_PRIVATE_H

#include <stdint.h>

#include "mf_blob.h"

#define BLOB_TOUCH_ONLY UINT64_MAX	/* blob_rec.size of an access */

struct blob_rec {
	char hash[MF_BLOB_HASH_LEN + 1];
	uint64_t size;		/* a new body's size, or BLOB_TOUCH_ONLY */
	int64_t atime;		/* seconds */
};

/*
 * Record new bodies (a row with size and atime) and accesses (atime,
 * written only when it moves forward), in one transaction. The caller
 * batches them: a body read again and again costs one write per batch.
 */
int meta_blob_record(const struct blob_rec *recs, unsigned int n);

/*
 * Eviction candidates, least recently used first: rows after the cursor
 * (atime, hash) used before `before`, whose body no message needs kept
 * (a message not on the server yet, or uploaded and not matched: state
 * TMP, APPEND or MATCH, or no server id).
 */
int meta_blob_candidates(int64_t after_atime, const char *after_hash,
			 int64_t before, unsigned int max,
			 struct blob_rec *out, unsigned int *n_r);

/* Drop the rows of evicted bodies. */
int meta_blob_forget(const struct blob_rec *recs, unsigned int n);

#endif
