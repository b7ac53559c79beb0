/*
 * Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of IMAP mailbox
 * names: printable US-ASCII stands for itself except "&", which is written
 * "&-"; everything else is UTF-16 in a modified base64 ("," instead of
 * "/", no padding) between "&" and "-".
 *
 * Both functions are pure and thread-safe.
 */
#ifndef MF_MUTF7_H
#define MF_MUTF7_H

/*
 * Decode a modified UTF-7 name into UTF-8. Returns 0 and a new string in
 * *out_r (caller frees), or -EINVAL for malformed input: bytes outside
 * printable ASCII, an unterminated "&", bad base64 characters, non-zero
 * or excess padding bits, unpaired surrogates, U+0000. Base64 runs that
 * encode printable ASCII (non-minimal) are accepted.
 */
int mf_mutf7_decode(const char *in, char **out_r);

/*
 * Encode a UTF-8 name. Returns a new string (caller frees), or NULL when
 * the input is not valid UTF-8 (overlong forms, surrogates, code points
 * beyond U+10FFFF, truncated sequences): such names cannot be sent
 * unambiguously, so the caller must refuse them.
 */
char *mf_mutf7_encode(const char *utf8);

#endif
