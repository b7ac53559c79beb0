/*
 * The IMAP implementation of struct mf_backend_ops (mf_backend.h), listed
 * in the registry in backend.c under the type "imap".
 */
#ifndef IMAP_BACKEND_H
#define IMAP_BACKEND_H

#include "mf_backend.h"

#include <stddef.h>
#include <stdint.h>

extern const struct mf_backend_ops mf_imap_backend_ops;

/*
 * Exposed for unit tests: parse an IMAP date-time ("17-Jul-1996 02:44:25
 * -0700") into seconds since the epoch. Returns 0 or -EINVAL.
 */
int imap_parse_datetime(const char *s, int64_t *time_r);

/*
 * Exposed for unit tests: the Message-ID value of a header block (folded
 * lines joined, whitespace trimmed, "<...>" kept), or NULL when absent.
 * Returns a new string.
 */
char *imap_header_message_id(const char *hdr, size_t len);

#endif
