/*
 * Modified UTF-7 for IMAP mailbox names (see mf_mutf7.h).
 *
 * Encoding converts UTF-8 to code points (strictly: invalid UTF-8 makes
 * the whole call return NULL), and emits printable ASCII directly and
 * runs of other characters as base64 of their UTF-16BE form. Decoding
 * does the reverse and checks what RFC 2152/3501 require: only the
 * modified alphabet, zero pad bits, fewer than 6 of them, surrogates in
 * pairs, and a closing "-".
 */
#include "mf_mutf7.h"

#include "mf_util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

static void put_utf8(struct mf_buf *b, uint32_t cp)
{
	if (cp < 0x80) {
		mf_buf_appendc(b, (char)cp);
	} else if (cp < 0x800) {
		mf_buf_appendc(b, (char)(0xc0 | (cp >> 6)));
		mf_buf_appendc(b, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		mf_buf_appendc(b, (char)(0xe0 | (cp >> 12)));
		mf_buf_appendc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
		mf_buf_appendc(b, (char)(0x80 | (cp & 0x3f)));
	} else {
		mf_buf_appendc(b, (char)(0xf0 | (cp >> 18)));
		mf_buf_appendc(b, (char)(0x80 | ((cp >> 12) & 0x3f)));
		mf_buf_appendc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
		mf_buf_appendc(b, (char)(0x80 | (cp & 0x3f)));
	}
}

/* Decode the base64 run starting at *pp (after "&") up to "-". */
static int decode_run(const char **pp, struct mf_buf *out)
{
	const unsigned char *p = (const unsigned char *)*pp;
	uint32_t bits = 0, high = 0;
	unsigned int nbits = 0;
	bool any = false;

	for (;; p++) {
		int v;

		if (*p == '-')
			break;
		v = b64val(*p);
		if (v < 0)
			return -EINVAL;	/* bad char or unterminated */
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t unit = (bits >> nbits) & 0xffff;
		bits &= (1u << nbits) - 1;
		any = true;
		if (high != 0) {
			if (unit < 0xdc00 || unit > 0xdfff)
				return -EINVAL;
			put_utf8(out, 0x10000 + ((high - 0xd800) << 10) +
					      (unit - 0xdc00));
			high = 0;
		} else if (unit >= 0xd800 && unit <= 0xdbff) {
			high = unit;
		} else if (unit >= 0xdc00 && unit <= 0xdfff) {
			return -EINVAL;
		} else if (unit == 0) {
			return -EINVAL;
		} else {
			put_utf8(out, unit);
		}
	}
	if (!any || high != 0 || nbits >= 6 || bits != 0)
		return -EINVAL;
	*pp = (const char *)p + 1;
	return 0;
}

int mf_mutf7_decode(const char *in, char **out_r)
{
	struct mf_buf out;
	const char *p = in;

	mf_buf_init(&out);
	mf_buf_appends(&out, "");	/* allocated and NUL-terminated */
	while (*p != '\0') {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c > 0x7e)
			goto bad;
		if (c != '&') {
			mf_buf_appendc(&out, (char)c);
			p++;
			continue;
		}
		p++;
		if (*p == '-') {
			mf_buf_appendc(&out, '&');
			p++;
			continue;
		}
		if (decode_run(&p, &out) < 0)
			goto bad;
	}
	*out_r = mf_buf_steal(&out);
	return 0;
bad:
	mf_buf_free(&out);
	return -EINVAL;
}

/* Next code point of strict UTF-8 at *pp, or -1. */
static int32_t next_cp(const unsigned char **pp)
{
	const unsigned char *p = *pp;
	uint32_t cp, min;
	int n;

	if (p[0] < 0x80) {
		*pp = p + 1;
		return p[0];
	}
	if ((p[0] & 0xe0) == 0xc0) {
		cp = p[0] & 0x1f;
		n = 1;
		min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		cp = p[0] & 0x0f;
		n = 2;
		min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		cp = p[0] & 0x07;
		n = 3;
		min = 0x10000;
	} else {
		return -1;
	}
	for (int i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;	/* also catches the NUL terminator */
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*pp = p + n + 1;
	return (int32_t)cp;
}

static void flush_units(struct mf_buf *out, const uint16_t *units, size_t n)
{
	uint32_t bits = 0;
	unsigned int nbits = 0;

	mf_buf_appendc(out, '&');
	for (size_t i = 0; i < n; i++) {
		bits = (bits << 16) | units[i];
		nbits += 16;
		while (nbits >= 6) {
			nbits -= 6;
			mf_buf_appendc(out, b64chars[(bits >> nbits) & 0x3f]);
		}
		bits &= (1u << nbits) - 1;
	}
	if (nbits > 0)
		mf_buf_appendc(out, b64chars[(bits << (6 - nbits)) & 0x3f]);
	mf_buf_appendc(out, '-');
}

char *mf_mutf7_encode(const char *utf8)
{
	const unsigned char *p = (const unsigned char *)utf8;
	struct mf_buf out;
	uint16_t *units;
	size_t nunits = 0;

	/* at most one UTF-16 unit per input byte */
	units = xmalloc((strlen(utf8) + 1) * sizeof(*units));
	mf_buf_init(&out);
	mf_buf_appends(&out, "");	/* allocated and NUL-terminated */
	while (*p != '\0') {
		int32_t cp = next_cp(&p);

		if (cp < 0) {
			free(units);
			mf_buf_free(&out);
			return NULL;
		}
		if (cp >= 0x20 && cp <= 0x7e) {
			if (nunits > 0) {
				flush_units(&out, units, nunits);
				nunits = 0;
			}
			if (cp == '&')
				mf_buf_appends(&out, "&-");
			else
				mf_buf_appendc(&out, (char)cp);
			continue;
		}
		if (cp >= 0x10000) {
			uint32_t v = (uint32_t)cp - 0x10000;
			units[nunits++] = (uint16_t)(0xd800 + (v >> 10));
			units[nunits++] = (uint16_t)(0xdc00 + (v & 0x3ff));
		} else {
			units[nunits++] = (uint16_t)cp;
		}
	}
	if (nunits > 0)
		flush_units(&out, units, nunits);
	free(units);
	return mf_buf_steal(&out);
}
