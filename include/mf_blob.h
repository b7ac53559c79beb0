/*
 * The blob store: message bodies by content (sha256), under
 * CACHE_DIR/blobs/ab/cdef...; written to a temporary file, fsynced and
 * renamed, so a body is either whole or absent. One body serves every
 * folder it appears in. The cache dir is safe to delete: a missing blob
 * is fetched again.
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

/* Copy a file (a staging file) into the store. */
int mf_blob_import(int fd, char *hash_r, uint64_t *size_r);

/* Open a blob read-only: fd, or -ENOENT. Updates its access time. */
int mf_blob_open(const char *hash);

#endif
