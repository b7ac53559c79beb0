/*
 * The transport layer stack of an IMAP connection (private to net/).
 *
 * A connection reads and writes through its top layer; each layer passes
 * bytes to the one below it (socket at the bottom, then TLS, then
 * COMPRESS=DEFLATE). Every call blocks up to an absolute deadline
 * (mf_mono_ms() clock). Layers that buffer output (deflate) only hand it
 * down on flush(), which the connection calls at the end of each command
 * and before waiting for a continuation request.
 *
 * Errors: read and write return -ETIMEDOUT, -ECANCELED (interrupt), or
 * -EIO with a message stored in *io_error (replacing the old one).
 *
 * Threading: a stack is used by one thread at a time.
 */
#ifndef IMAP_LAYER_H
#define IMAP_LAYER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct imap_conn;
struct imap_layer;

struct imap_layer_ops {
	/* >0 bytes read (at most len), 0 EOF, or a negative errno */
	ssize_t (*read)(struct imap_layer *l, void *buf, size_t len,
			int64_t deadline);
	/* 0 when all of buf was taken, or a negative errno */
	int (*write)(struct imap_layer *l, const void *buf, size_t len,
		     int64_t deadline);
	/* push buffered output down and out; NULL when nothing is buffered */
	int (*flush)(struct imap_layer *l, int64_t deadline);
	/* free this layer and, if it owns it, the one below */
	void (*free)(struct imap_layer *l);
};

struct imap_layer {
	const struct imap_layer_ops *ops;
	struct imap_layer *lower;	/* owned; NULL at the bottom */
	struct imap_conn *conn;		/* foreign; NULL in tests */
	char **io_error;		/* foreign: where -EIO messages go */
};

/* Flush l and every layer below it. 0 or a negative errno. */
int imap_layer_flush(struct imap_layer *l, int64_t deadline);

/* Largest amount of inflated data one read of the deflate layer returns. */
#define IMAP_DEFLATE_MAX_READ (64 * 1024)

/*
 * A COMPRESS=DEFLATE (RFC 4978) layer over lower (raw deflate, no zlib
 * header). Takes ownership of lower. prefix: compressed bytes that were
 * already read from lower (may be NULL). Output is compressed with
 * Z_NO_FLUSH and sent with Z_SYNC_FLUSH on flush(). A read inflates at
 * most MF_MIN(len, IMAP_DEFLATE_MAX_READ) bytes, so a small compressed
 * input cannot expand into unbounded memory; a corrupt stream gives -EIO.
 * Never returns NULL.
 */
struct imap_layer *imap_deflate_layer_new(struct imap_layer *lower,
					  const void *prefix,
					  size_t prefix_len);

#endif
