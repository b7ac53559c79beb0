/*
 * The content-addressed body store (see mf_blob.h).
 */
#include "mf_blob.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct {
	char *dir;	/* CACHE_DIR/blobs */
	char *tmp;	/* CACHE_DIR/tmp */
} blob;

int mf_blob_init(const char *cache_dir, char **error_r)
{
	int ret;

	blob.dir = xasprintf("%s/blobs", cache_dir);
	blob.tmp = xasprintf("%s/tmp", cache_dir);
	ret = mf_mkdirs(blob.dir, 0700);
	if (ret == 0)
		ret = mf_mkdirs(blob.tmp, 0700);
	if (ret < 0) {
		*error_r = xasprintf("cannot create cache_dir %s: %s",
				     cache_dir, strerror(-ret));
		return ret;
	}
	chmod(cache_dir, 0700);
	return 0;
}

void mf_blob_deinit(void)
{
	free(blob.dir);
	free(blob.tmp);
	blob.dir = NULL;
	blob.tmp = NULL;
}

int mf_blob_tmp(int *fd_r, char **path_r)
{
	char *path = xasprintf("%s/body.XXXXXX", blob.tmp);
	int fd = mkostemp(path, O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		/* The cache may have been deleted under us: recreate it. */
		if (e == ENOENT && mf_mkdirs(blob.tmp, 0700) == 0)
			fd = mkostemp(path, O_CLOEXEC);
		if (fd < 0) {
			free(path);
			return -e;
		}
	}
	*fd_r = fd;
	*path_r = path;
	return 0;
}

void mf_blob_abort(int fd, const char *path)
{
	if (fd >= 0)
		close(fd);
	unlink(path);
}

static char *blob_path(const char *hash)
{
	return xasprintf("%s/%.2s/%s", blob.dir, hash, hash + 2);
}

static int hash_fd(int fd, char *hash_r, uint64_t *size_r)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char buf[65536];
	uint64_t size = 0;
	off_t off = 0;
	int ret = 0;

	if (!ctx)
		return -ENOMEM;
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (;;) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += n;
		size += (uint64_t)n;
	}
	if (ret == 0) {
		EVP_DigestFinal_ex(ctx, md, &mdlen);
		mf_hex(md, mdlen, hash_r);
		*size_r = size;
	}
	EVP_MD_CTX_free(ctx);
	return ret;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

int mf_blob_commit(int fd, const char *path, char *hash_r, uint64_t *size_r)
{
	char *dest, *sub;
	int ret;

	ret = hash_fd(fd, hash_r, size_r);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0) {
		unlink(path);
		return ret;
	}
	sub = xasprintf("%s/%.2s", blob.dir, hash_r);
	ret = mf_mkdirs(sub, 0700);
	dest = blob_path(hash_r);
	if (ret == 0 && rename(path, dest) < 0)
		ret = -errno;
	if (ret == 0)
		ret = fsync_dir(sub);
	if (ret < 0)
		unlink(path);
	free(sub);
	free(dest);
	return ret;
}

int mf_blob_import(int src, char *hash_r, uint64_t *size_r)
{
	char buf[65536];
	char *path;
	off_t off = 0;
	int fd, ret;

	ret = mf_blob_tmp(&fd, &path);
	if (ret < 0)
		return ret;
	for (;;) {
		ssize_t n = pread(src, buf, sizeof(buf), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		ret = mf_write_all(fd, buf, (size_t)n);
		if (ret < 0)
			break;
		off += n;
	}
	if (ret < 0) {
		mf_blob_abort(fd, path);
		free(path);
		return ret;
	}
	ret = mf_blob_commit(fd, path, hash_r, size_r);
	free(path);
	return ret;
}

int mf_blob_open(const char *hash)
{
	char *path;
	int fd;

	if (!hash || strlen(hash) != MF_BLOB_HASH_LEN)
		return -ENOENT;
	path = blob_path(hash);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return -errno;
	/* The access time drives least-recently-used eviction. */
	futimens(fd, (const struct timespec[2]){
		{ .tv_nsec = UTIME_NOW }, { .tv_nsec = UTIME_OMIT } });
	return fd;
}
