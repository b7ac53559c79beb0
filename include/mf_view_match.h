/*
 * Does a message belong in a view? The rules of a [view NAME] section
 * (struct mf_view, mf_config.h) against what the store keeps of a
 * message: its account, its folder's path and attributes, and the header
 * lines its listing fetched.
 */
#ifndef MF_VIEW_MATCH_H
#define MF_VIEW_MATCH_H

#include <stdbool.h>

#include "mf_config.h"

/*
 * Does any occurrence of header field (lower case name) in fields (raw
 * header lines, folded or not, CRLF or LF) match glob, case-insensitively?
 * The value is unfolded and trimmed; in address headers (From, To, Cc...)
 * each address of the list is tried alone too, in other headers the
 * <...> part (List-Id).
 */
bool mf_view_header_matches(const char *fields, const char *field,
			    const char *glob);

/*
 * Does v show a message of account in folder path (attrs: MF_FOLDER_*)
 * whose header lines are fields (may be NULL)? Any rule matching is
 * enough; the account and folders keys restrict; without a folders key,
 * Trash and Junk are left out.
 */
bool mf_view_matches(const struct mf_view *v, const char *account,
		     const char *path, unsigned int attrs, const char *fields);

#endif
