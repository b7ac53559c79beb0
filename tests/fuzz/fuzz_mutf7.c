/*
 * libFuzzer target: modified UTF-7 (net/mutf7.c).
 *
 *  - decode(x) ok  -> encode(decoded) succeeds and decodes back to decoded,
 *    and the decoded text is valid UTF-8 without NUL;
 *  - encode(x) ok  -> the result is printable ASCII and decodes back to x;
 *    encode refuses exactly the inputs that are not valid UTF-8.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_mutf7.h"
#include "mf_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	return 0;
}

/* Strict UTF-8 check: no overlongs, no surrogates, <= U+10FFFF. */
static bool valid_utf8(const unsigned char *s)
{
	while (*s) {
		unsigned char c = *s;
		uint32_t cp;
		int n;

		if (c < 0x80) {
			s++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			cp = c & 0x1f;
			n = 1;
		} else if ((c & 0xf0) == 0xe0) {
			cp = c & 0x0f;
			n = 2;
		} else if ((c & 0xf8) == 0xf0) {
			cp = c & 0x07;
			n = 3;
		} else {
			return false;
		}
		for (int i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += n + 1;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in, *dec = NULL, *enc, *dec2 = NULL;

	if (size > 4096)
		return 0;
	in = xmalloc(size + 1);
	memcpy(in, data, size);
	in[size] = '\0';

	if (mf_mutf7_decode(in, &dec) == 0) {
		if (!dec || !valid_utf8((const unsigned char *)dec)) {
			fprintf(stderr, "decode gave invalid UTF-8 for %s\n", in);
			abort();
		}
		enc = mf_mutf7_encode(dec);
		if (!enc) {
			fprintf(stderr, "encode refused decode's output (from %s)\n", in);
			abort();
		}
		if (mf_mutf7_decode(enc, &dec2) != 0 || strcmp(dec2, dec) != 0) {
			fprintf(stderr, "round trip: %s -> %s -> %s\n", in, enc, dec2 ? dec2 : "(err)");
			abort();
		}
		free(dec2);
		dec2 = NULL;
		free(enc);
		free(dec);
		dec = NULL;
	}

	enc = mf_mutf7_encode(in);
	if (enc) {
		if (!valid_utf8((const unsigned char *)in)) {
			fprintf(stderr, "encode accepted invalid UTF-8\n");
			abort();
		}
		for (const char *p = enc; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				abort();
		if (mf_mutf7_decode(enc, &dec2) != 0 || strcmp(dec2, in) != 0) {
			fprintf(stderr, "encode/decode round trip failed for %s -> %s\n", in, enc);
			abort();
		}
		free(dec2);
		free(enc);
	} else if (valid_utf8((const unsigned char *)in)) {
		fprintf(stderr, "encode refused valid UTF-8 %s\n", in);
		abort();
	}
	free(in);
	return 0;
}
