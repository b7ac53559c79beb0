/*
 * COMPRESS=DEFLATE (RFC 4978) as a transport layer (see imap_layer.h).
 *
 * Both directions are one raw deflate stream (windowBits -15) for the
 * rest of the connection.
 *
 * Writing: bytes are deflated with Z_NO_FLUSH into a fixed output buffer
 * that goes down whenever it fills; flush() finishes the pending block
 * with Z_SYNC_FLUSH so the server can decode the whole command. The
 * connection flushes at the end of each command and before it waits for
 * a "+", so nothing the server must answer is left in zlib's buffers.
 *
 * Reading: compressed bytes from below are kept in a fixed input buffer
 * and inflated straight into the caller's buffer, at most
 * IMAP_DEFLATE_MAX_READ bytes per read. Memory therefore stays bounded
 * however well the input compresses ("zip bomb"); the IMAP parser's own
 * size caps then limit what a response may contain. An inflate error
 * (corrupt or truncated stream) is -EIO with zlib's message.
 */
#include "imap_layer.h"

#include "mf_util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define DEFLATE_BUF_SIZE (32 * 1024)

struct deflate_layer {
	struct imap_layer base;
	z_stream zin;			/* inflate: server to us */
	z_stream zout;			/* deflate: us to server */
	bool zin_ok, zout_ok;		/* initialised */
	bool in_more;			/* inflate may hold output */
	bool in_end;			/* the server ended its stream */
	unsigned char *inbuf;		/* owned, insize bytes */
	size_t insize;
	unsigned char *outbuf;		/* owned, DEFLATE_BUF_SIZE */
	bool dirty;			/* deflated since the last flush */
};

static void set_error(struct imap_layer *l, const char *what,
		      const z_stream *z, int zr)
{
	if (l->io_error == NULL)
		return;
	free(*l->io_error);
	*l->io_error = xasprintf("COMPRESS: %s failed: %s", what,
				 z->msg != NULL ? z->msg : zError(zr));
}

int imap_layer_flush(struct imap_layer *l, int64_t deadline)
{
	/* each flush() pushes its own output down and flushes below */
	for (; l != NULL; l = l->lower) {
		if (l->ops->flush != NULL)
			return l->ops->flush(l, deadline);
	}
	return 0;
}

static ssize_t deflate_read(struct imap_layer *l, void *buf, size_t len,
			    int64_t deadline)
{
	struct deflate_layer *d = container_of(l, struct deflate_layer, base);
	size_t want = MF_MIN(len, (size_t)IMAP_DEFLATE_MAX_READ);
	ssize_t n;
	int zr;

	if (want == 0)
		return -EINVAL;
	for (;;) {
		if (d->in_end)
			return 0;
		if (d->zin.avail_in > 0 || d->in_more) {
			d->zin.next_out = buf;
			d->zin.avail_out = (uInt)want;
			zr = inflate(&d->zin, Z_SYNC_FLUSH);
			size_t got = want - d->zin.avail_out;
			/* a full buffer may leave output inside zlib */
			d->in_more = d->zin.avail_out == 0;
			if (zr != Z_OK && zr != Z_STREAM_END &&
			    zr != Z_BUF_ERROR) {
				/* deliver what came before the damage;
				   zlib repeats the error next time */
				d->in_more = true;
				if (got > 0)
					return (ssize_t)got;
				set_error(l, "inflate", &d->zin, zr);
				return -EIO;
			}
			if (zr == Z_STREAM_END)
				d->in_end = true;
			if (got > 0)
				return (ssize_t)got;
			if (d->in_end)
				return 0;
			if (d->zin.avail_in > 0 && zr == Z_BUF_ERROR) {
				set_error(l, "inflate", &d->zin, zr);
				return -EIO;
			}
		}
		/* need more input; keep what inflate has not used */
		if (d->zin.avail_in > 0 && d->zin.next_in != d->inbuf)
			memmove(d->inbuf, d->zin.next_in, d->zin.avail_in);
		d->zin.next_in = d->inbuf;
		if (d->zin.avail_in >= d->insize) {
			/* a full buffer inflate cannot use: corrupt */
			set_error(l, "inflate", &d->zin, Z_DATA_ERROR);
			return -EIO;
		}
		n = l->lower->ops->read(l->lower,
					d->inbuf + d->zin.avail_in,
					d->insize - d->zin.avail_in, deadline);
		if (n <= 0)
			return n;
		d->zin.avail_in += (uInt)n;
	}
}

/* Deflate with mode, sending every full output buffer down. */
static int deflate_run(struct deflate_layer *d, int mode, int64_t deadline)
{
	struct imap_layer *l = &d->base;
	int zr, r;

	for (;;) {
		d->zout.next_out = d->outbuf;
		d->zout.avail_out = DEFLATE_BUF_SIZE;
		zr = deflate(&d->zout, mode);
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			set_error(l, "deflate", &d->zout, zr);
			return -EIO;
		}
		size_t out = DEFLATE_BUF_SIZE - d->zout.avail_out;
		if (out > 0) {
			r = l->lower->ops->write(l->lower, d->outbuf, out,
						 deadline);
			if (r < 0)
				return r;
		}
		/* done when zlib had room to spare and took all input */
		if (d->zout.avail_out != 0 && d->zout.avail_in == 0)
			return 0;
	}
}

static int deflate_write(struct imap_layer *l, const void *buf, size_t len,
			 int64_t deadline)
{
	struct deflate_layer *d = container_of(l, struct deflate_layer, base);
	const unsigned char *p = buf;
	int r;

	while (len > 0) {
		size_t chunk = MF_MIN(len, (size_t)UINT32_MAX / 2);
		d->zout.next_in = (unsigned char *)(uintptr_t)p;
		d->zout.avail_in = (uInt)chunk;
		r = deflate_run(d, Z_NO_FLUSH, deadline);
		d->zout.next_in = NULL;
		d->zout.avail_in = 0;
		if (r < 0)
			return r;
		d->dirty = true;
		p += chunk;
		len -= chunk;
	}
	return 0;
}

static int deflate_flush(struct imap_layer *l, int64_t deadline)
{
	struct deflate_layer *d = container_of(l, struct deflate_layer, base);
	int r;

	if (d->dirty) {
		r = deflate_run(d, Z_SYNC_FLUSH, deadline);
		if (r < 0)
			return r;
		d->dirty = false;
	}
	return imap_layer_flush(l->lower, deadline);
}

static void deflate_free(struct imap_layer *l)
{
	struct deflate_layer *d = container_of(l, struct deflate_layer, base);

	if (d->zin_ok)
		inflateEnd(&d->zin);
	if (d->zout_ok)
		deflateEnd(&d->zout);
	if (l->lower != NULL)
		l->lower->ops->free(l->lower);
	free(d->inbuf);
	free(d->outbuf);
	free(d);
}

static const struct imap_layer_ops deflate_ops = {
	.read = deflate_read,
	.write = deflate_write,
	.flush = deflate_flush,
	.free = deflate_free,
};

struct imap_layer *imap_deflate_layer_new(struct imap_layer *lower,
					  const void *prefix,
					  size_t prefix_len)
{
	struct deflate_layer *d = xcalloc(1, sizeof(*d));

	d->base.ops = &deflate_ops;
	d->base.lower = lower;
	d->base.conn = lower->conn;
	d->base.io_error = lower->io_error;
	d->insize = MF_MAX((size_t)DEFLATE_BUF_SIZE, prefix_len);
	d->inbuf = xmalloc(d->insize);
	d->outbuf = xmalloc(DEFLATE_BUF_SIZE);
	/* zlib only fails here on out-of-memory or a broken library */
	if (inflateInit2(&d->zin, -15) != Z_OK)
		abort();
	d->zin_ok = true;
	if (deflateInit2(&d->zout, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	d->zout_ok = true;
	if (prefix_len > 0)
		memcpy(d->inbuf, prefix, prefix_len);
	d->zin.next_in = d->inbuf;
	d->zin.avail_in = (uInt)prefix_len;
	return &d->base;
}
