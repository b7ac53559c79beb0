/*
 * The blob store: message bodies by content (sha256), under
 * CACHE_DIR/blobs/ab/cdef...; written to a temporary file, fsynced and
 * renamed, so a body is either whole or absent. One body serves every
 * folder it appears in. The cache dir is safe to delete: a missing blob
 * is fetched again.
 *
 * With a size limit (cache_max_size) a background thread evicts the
 * least recently used bodies when the store grows past it, down to 90%
 * of it: never a body that is open, used in the last few seconds, or
 * needed by a message not (yet) known on the server. An evicted body is
 * fetched again on its next read. Access times are kept in the store
 * (table blob_cache), written in batches and at most once a minute per
 * body.
 *
 * Thread-safe. Returns 0 or -errno.
 */
#ifndef MF_BLOB_H
#define MF_BLOB_H

#include <stdint.h>

#define MF_BLOB_HASH_LEN 64	/* hex characters */

int mf_blob_init(const char *cache_dir, char **error_r);
void mf_blob_deinit(void);

/* A new temporary file (O_RDWR) to write a body into. *path_r: caller
 * frees; remove it with mf_blob_abort() if the body is not committed. */
int mf_blob_tmp(int *fd_r, char **path_r);
void mf_blob_abort(int fd, const char *path);

/*
 * Hash the temporary file's contents, fsync it and move it to its place.
 * Closes fd. hash_r receives MF_BLOB_HASH_LEN + 1 bytes; *size_r the
 * body's size.
 */
int mf_blob_commit(int fd, const char *path, char *hash_r, uint64_t *size_r);

/*
 * The same for a body fetched from the server, which can be fetched
 * again: no fsync of the file or its directory (three fsyncs a body made
 * a full download disk-bound). A crash may then leave a row naming a
 * blob that is short or missing; mf_blob_open_sized() catches that. An
 * existing blob of the same hash is kept as it is (it may be the only
 * copy of a delivery), the new file dropped.
 */
int mf_blob_commit_fetched(int fd, const char *path, char *hash_r,
			   uint64_t *size_r);

/* Copy a file (a staging file) into the store. */
int mf_blob_import(int fd, char *hash_r, uint64_t *size_r);

/*
 * Limit the store to max_size bytes (0: no limit) and start the eviction
 * thread, which first walks the store once to learn what is cached.
 * Needs the store (mf_store_open). Stopped by mf_blob_deinit().
 */
int mf_blob_set_max_size(uint64_t max_size, char **error_r);

/*
 * Open a blob read-only: fd, or -ENOENT. Updates its access time. Close
 * it with mf_blob_close(): it is not evicted while open.
 */
int mf_blob_open(const char *hash);
/* The same, but -ENOENT unless the blob has exactly size bytes. */
int mf_blob_open_sized(const char *hash, uint64_t size);
/* Close a descriptor from mf_blob_open() (any other one is just closed). */
void mf_blob_close(int fd);

/*
 * Bytes that can still be added without the limit making the store evict
 * (what prefetch may fill), or UINT64_MAX without a limit.
 */
uint64_t mf_blob_room(void);

/* The cache size and eviction counts (for the status). */
struct mf_blob_stats {
	uint64_t max_size;	/* 0: no limit */
	uint64_t size;		/* bytes cached, as far as known */
	uint64_t evicted;	/* bodies evicted since the start */
};
void mf_blob_stats(struct mf_blob_stats *st);

#endif
