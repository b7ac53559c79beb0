/*
 * The Gmail API implementation of struct mf_backend_ops (mf_backend.h),
 * listed in the registry in backend.c under the type "gmail".
 */
#ifndef GMAIL_BACKEND_H
#define GMAIL_BACKEND_H

#include "mf_backend.h"

#include <stdint.h>

extern const struct mf_backend_ops mf_gmail_backend_ops;

#include <stddef.h>

/*
 * Exposed for unit tests: parse a batch answer (ctype: its Content-Type)
 * for count calls, "response-itemN" naming call N. status[i] receives
 * the HTTP status of call i (0: not answered) and bodies[i] its body
 * (caller frees; NULL when not answered). Returns 0, or -1 when ctype
 * names no multipart boundary.
 */
int gmail_batch_parse(const char *ctype, const char *data, size_t len,
		      unsigned int count, long *status, char **bodies);

/*
 * Exposed for unit tests: decode base64url (padding optional, line
 * breaks skipped) into fd. Returns 0 and *size_r, -EINVAL for a bad
 * character, -EFBIG above max (0: no cap), -EIO when writing fails.
 */
int gmail_b64url_write(const char *s, size_t len, int fd, uint64_t max,
		       uint64_t *size_r);

#endif
