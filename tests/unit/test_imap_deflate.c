/*
 * Tests for the COMPRESS=DEFLATE layer (net/imap_deflate.c).
 *
 * The layer sits on a trivial blocking layer over one end of a
 * socketpair; the other end plays the server with zlib directly: it
 * inflates what the layer wrote, and deflates (with Z_SYNC_FLUSH, as a
 * server does) what the layer must read. Large transfers run the peer in
 * a thread so neither side blocks on a full socket buffer.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "../../net/imap_layer.h"
#include "mf_util.h"

/* ---- a blocking fd layer ---- */

static ssize_t fd_read(struct imap_layer *l, void *buf, size_t len,
		       int64_t deadline)
{
	int fd = *(int *)(l + 1);
	ssize_t n;

	do {
		n = read(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static int fd_write(struct imap_layer *l, const void *buf, size_t len,
		    int64_t deadline)
{
	int fd = *(int *)(l + 1);

	return mf_write_all(fd, buf, len);
}

static void fd_free(struct imap_layer *l)
{
	free(l);
}

static const struct imap_layer_ops fd_ops = {
	.read = fd_read,
	.write = fd_write,
	.flush = NULL,
	.free = fd_free,
};

struct fixture {
	int sv[2];		/* sv[0]: the layer; sv[1]: the peer */
	char *io_error;
	struct imap_layer *layer;
};

static struct imap_layer *fd_layer_new(int fd, char **io_error)
{
	struct imap_layer *l = xcalloc(1, sizeof(*l) + sizeof(int));

	l->ops = &fd_ops;
	l->io_error = io_error;
	*(int *)(l + 1) = fd;
	return l;
}

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv) < 0)
		return -1;
	f->layer = imap_deflate_layer_new(fd_layer_new(f->sv[0], &f->io_error),
					  NULL, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	f->layer->ops->free(f->layer);
	close(f->sv[0]);
	close(f->sv[1]);
	free(f->io_error);
	free(f);
	return 0;
}

/* ---- the peer ---- */

/* Read and inflate from fd until want bytes came out. */
static void peer_inflate(z_stream *z, int fd, struct mf_buf *out,
			 size_t want)
{
	unsigned char in[4096], tmp[8192];

	while (out->len < want) {
		ssize_t n = read(fd, in, sizeof(in));
		assert_true(n > 0);
		z->next_in = in;
		z->avail_in = (uInt)n;
		while (z->avail_in > 0) {
			z->next_out = tmp;
			z->avail_out = sizeof(tmp);
			int zr = inflate(z, Z_SYNC_FLUSH);
			assert_true(zr == Z_OK || zr == Z_BUF_ERROR);
			mf_buf_append(out, tmp, sizeof(tmp) - z->avail_out);
		}
	}
}

/* Deflate data with Z_SYNC_FLUSH and write it to fd. */
static void peer_deflate(z_stream *z, int fd, const void *data, size_t len)
{
	unsigned char tmp[8192];

	z->next_in = (unsigned char *)(uintptr_t)data;
	z->avail_in = (uInt)len;
	do {
		z->next_out = tmp;
		z->avail_out = sizeof(tmp);
		assert_true(deflate(z, Z_SYNC_FLUSH) != Z_STREAM_ERROR);
		assert_int_equal(mf_write_all(fd, tmp,
					      sizeof(tmp) - z->avail_out), 0);
	} while (z->avail_out == 0 || z->avail_in > 0);
}

static void inflate_init(z_stream *z)
{
	memset(z, 0, sizeof(*z));
	assert_int_equal(inflateInit2(z, -15), Z_OK);
}

static void deflate_init(z_stream *z)
{
	memset(z, 0, sizeof(*z));
	assert_int_equal(deflateInit2(z, 6, Z_DEFLATED, -15, 8,
				      Z_DEFAULT_STRATEGY), Z_OK);
}

/* Read exactly len bytes through the layer, chunk bytes per call. */
static void layer_read_all(struct imap_layer *l, struct mf_buf *out,
			   size_t len, size_t chunk)
{
	char *buf = xmalloc(chunk);

	while (out->len < len) {
		ssize_t n = l->ops->read(l, buf, chunk, 0);
		assert_true(n > 0);
		assert_true((size_t)n <= chunk);
		mf_buf_append(out, buf, (size_t)n);
	}
	free(buf);
}

static char *big_literal(size_t len)
{
	char *s = xmalloc(len);
	uint32_t x = 12345;

	/* half text, half noise: compresses, but not to nothing */
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245 + 12345;
		s[i] = (i / 512) % 2 ? (char)(x >> 16) : "abcdefgh\r\n"[i % 10];
	}
	return s;
}

/* ---- tests ---- */

static void test_commands_out(void **state)
{
	struct fixture *f = *state;
	static const char *const cmds[] = {
		"a0001 CAPABILITY\r\n",
		"a0002 SELECT INBOX\r\n",
		"a0003 UID FETCH 1:* (UID FLAGS)\r\n",
	};
	struct mf_buf got;
	z_stream z;
	size_t total = 0;

	inflate_init(&z);
	mf_buf_init(&got);
	for (size_t i = 0; i < MF_ARRAY_SIZE(cmds); i++) {
		size_t len = strlen(cmds[i]);
		/* one byte at a time for the second command */
		if (i == 1) {
			for (size_t j = 0; j < len; j++)
				assert_int_equal(f->layer->ops->write(
					f->layer, cmds[i] + j, 1, 0), 0);
		} else {
			assert_int_equal(f->layer->ops->write(
				f->layer, cmds[i], len, 0), 0);
		}
		assert_int_equal(imap_layer_flush(f->layer, 0), 0);
		total += len;
		/* after the flush the whole command can be decoded */
		peer_inflate(&z, f->sv[1], &got, total);
		assert_int_equal(got.len, total);
	}
	assert_memory_equal(got.data,
			    "a0001 CAPABILITY\r\na0002 SELECT INBOX\r\n"
			    "a0003 UID FETCH 1:* (UID FLAGS)\r\n", total);
	/* a flush with nothing written sends nothing harmful */
	assert_int_equal(imap_layer_flush(f->layer, 0), 0);
	inflateEnd(&z);
	mf_buf_free(&got);
}

struct peer_job {
	int fd;
	const char *data;
	size_t len;
	size_t chunk;		/* deflate this much per sync flush */
	struct mf_buf got;	/* for the reading peer */
};

static void *peer_reader(void *arg)
{
	struct peer_job *j = arg;
	z_stream z;

	inflate_init(&z);
	peer_inflate(&z, j->fd, &j->got, j->len);
	inflateEnd(&z);
	return NULL;
}

static void *peer_writer(void *arg)
{
	struct peer_job *j = arg;
	z_stream z;

	deflate_init(&z);
	for (size_t off = 0; off < j->len; off += j->chunk)
		peer_deflate(&z, j->fd, j->data + off,
			     MF_MIN(j->chunk, j->len - off));
	deflateEnd(&z);
	return NULL;
}

static void test_large_literal_out(void **state)
{
	struct fixture *f = *state;
	size_t len = 3 * 1024 * 1024 + 17;
	char *lit = big_literal(len);
	struct peer_job j;
	pthread_t t;

	memset(&j, 0, sizeof(j));
	j.fd = f->sv[1];
	j.len = len + 30;
	mf_buf_init(&j.got);
	assert_int_equal(pthread_create(&t, NULL, peer_reader, &j), 0);
	assert_int_equal(f->layer->ops->write(f->layer,
		"a1 APPEND INBOX {3145745+}\r\n", 28, 0), 0);
	for (size_t off = 0; off < len; off += 65536)
		assert_int_equal(f->layer->ops->write(f->layer, lit + off,
			MF_MIN((size_t)65536, len - off), 0), 0);
	assert_int_equal(f->layer->ops->write(f->layer, "\r\n", 2, 0), 0);
	assert_int_equal(imap_layer_flush(f->layer, 0), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(j.got.len, len + 30);
	assert_memory_equal(j.got.data, "a1 APPEND INBOX {3145745+}\r\n", 28);
	assert_memory_equal(j.got.data + 28, lit, len);
	mf_buf_free(&j.got);
	free(lit);
}

static void test_responses_in(void **state)
{
	struct fixture *f = *state;
	static const char resp[] =
		"* OK [CAPABILITY IMAP4rev1] hi\r\n"
		"* 3 EXISTS\r\n"
		"a0001 OK done\r\n";
	struct mf_buf got;
	z_stream z;

	deflate_init(&z);
	/* several flushes, read one byte at a time */
	peer_deflate(&z, f->sv[1], resp, 10);
	peer_deflate(&z, f->sv[1], resp + 10, sizeof(resp) - 1 - 10);
	mf_buf_init(&got);
	layer_read_all(f->layer, &got, sizeof(resp) - 1, 1);
	assert_int_equal(got.len, sizeof(resp) - 1);
	assert_memory_equal(got.data, resp, sizeof(resp) - 1);
	/* EOF from below is EOF */
	shutdown(f->sv[1], SHUT_WR);
	char c;
	assert_int_equal(f->layer->ops->read(f->layer, &c, 1, 0), 0);
	deflateEnd(&z);
	mf_buf_free(&got);
}

static void test_large_literal_in(void **state)
{
	struct fixture *f = *state;
	size_t len = 2 * 1024 * 1024 + 5;
	char *lit = big_literal(len);
	struct peer_job j;
	struct mf_buf got;
	pthread_t t;

	memset(&j, 0, sizeof(j));
	j.fd = f->sv[1];
	j.data = lit;
	j.len = len;
	j.chunk = 100000;
	assert_int_equal(pthread_create(&t, NULL, peer_writer, &j), 0);
	mf_buf_init(&got);
	layer_read_all(f->layer, &got, len, 64 * 1024);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(got.len, len);
	assert_memory_equal(got.data, lit, len);
	mf_buf_free(&got);
	free(lit);
}

/* 64 MB of zeros compress to ~64 KB: each read still returns a bounded
   amount, and all of it arrives. */
static void test_zip_bomb_bounded(void **state)
{
	struct fixture *f = *state;
	size_t len = 64u * 1024 * 1024;
	char *zeros = xcalloc(1, len);
	char *buf = xmalloc(1024 * 1024);
	struct peer_job j;
	pthread_t t;
	size_t total = 0;

	memset(&j, 0, sizeof(j));
	j.fd = f->sv[1];
	j.data = zeros;
	j.len = len;
	j.chunk = len;
	assert_int_equal(pthread_create(&t, NULL, peer_writer, &j), 0);
	while (total < len) {
		ssize_t n = f->layer->ops->read(f->layer, buf, 1024 * 1024,
						0);
		assert_true(n > 0);
		assert_true(n <= IMAP_DEFLATE_MAX_READ);
		total += (size_t)n;
	}
	assert_int_equal(total, len);
	assert_int_equal(pthread_join(t, NULL), 0);
	free(buf);
	free(zeros);
}

static void test_corrupt_stream(void **state)
{
	struct fixture *f = *state;
	static const unsigned char junk[] = {
		0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
	};
	char buf[256];
	ssize_t n;

	assert_int_equal(mf_write_all(f->sv[1], junk, sizeof(junk)), 0);
	n = f->layer->ops->read(f->layer, buf, sizeof(buf), 0);
	assert_int_equal(n, -EIO);
	assert_non_null(f->io_error);
	assert_non_null(strstr(f->io_error, "COMPRESS"));
}

/* Valid data, then garbage: the good part arrives, then an error. */
static void test_corrupt_after_good(void **state)
{
	struct fixture *f = *state;
	static const unsigned char junk[] = { 0xff, 0xff, 0xff, 0xff };
	struct mf_buf got;
	z_stream z;
	char buf[256];
	ssize_t n;

	deflate_init(&z);
	peer_deflate(&z, f->sv[1], "* OK hi\r\n", 9);
	assert_int_equal(mf_write_all(f->sv[1], junk, sizeof(junk)), 0);
	mf_buf_init(&got);
	layer_read_all(f->layer, &got, 9, 3);
	assert_memory_equal(got.data, "* OK hi\r\n", 9);
	n = f->layer->ops->read(f->layer, buf, sizeof(buf), 0);
	assert_int_equal(n, -EIO);
	deflateEnd(&z);
	mf_buf_free(&got);
}

/* Bytes read before the layer existed (after the OK) are used first. */
static void test_prefix(void **state)
{
	unsigned char tmp[256];
	struct mf_buf got;
	char *io_error = NULL;
	z_stream z;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	deflate_init(&z);
	z.next_in = (unsigned char *)(uintptr_t)"* 1 EXISTS\r\n";
	z.avail_in = 12;
	z.next_out = tmp;
	z.avail_out = sizeof(tmp);
	assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
	size_t clen = sizeof(tmp) - z.avail_out;
	/* half of it already read, the rest still on the socket */
	struct imap_layer *l = imap_deflate_layer_new(
		fd_layer_new(sv[0], &io_error), tmp, clen / 2);
	assert_int_equal(mf_write_all(sv[1], tmp + clen / 2,
				      clen - clen / 2), 0);
	mf_buf_init(&got);
	layer_read_all(l, &got, 12, 100);
	assert_memory_equal(got.data, "* 1 EXISTS\r\n", 12);
	l->ops->free(l);
	deflateEnd(&z);
	mf_buf_free(&got);
	close(sv[0]);
	close(sv[1]);
	free(io_error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commands_out, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_large_literal_out, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_responses_in, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_large_literal_in, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_zip_bomb_bounded, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_stream, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_after_good, setup,
						teardown),
		cmocka_unit_test(test_prefix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
