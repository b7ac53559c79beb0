/*
 * Names: Maildir file names and folder path components.
 *
 * Maildir file name: UNIQUE[:2,FLAGS]. FLAGS are emitted in ASCII order
 * without repeats (D F P R S T, then lower-case keyword letters); parsing
 * is lenient: any order, repeats dropped, unknown letters kept.
 *
 * Folder components: a server's folder name component may contain bytes a
 * file name cannot ("/", NUL), or that a Maildir reader would misread (a
 * leading ".", "cur"/"new"/"tmp", control characters). Such components are
 * escaped reversibly with %XX; a literal "%" is written "%25".
 */
#ifndef MF_NAMES_H
#define MF_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define MF_NAME_MAX 255

struct mf_maildir_name {
	char uniq[MF_NAME_MAX + 1];	/* the unique part */
	unsigned int flags;		/* MF_FLAG_* */
	char extra[27];			/* other flag letters, sorted */
	bool has_info;			/* ":2," was present */
};

/*
 * Split a Maildir name. Returns 0, or -EINVAL for a name that cannot be a
 * message (empty unique part, starts with ".", too long, contains "/").
 */
int mf_maildir_parse(const char *name, struct mf_maildir_name *n);

/*
 * Format UNIQ:2,FLAGS into buf (size >= MF_NAME_MAX + 1). With
 * !with_info and no flags, just UNIQ. Returns 0 or -ENAMETOOLONG.
 */
int mf_maildir_format(const char *uniq, unsigned int flags, const char *extra,
		      bool with_info, char *buf, size_t size);

/* "DFPRST" letters of flags in order, NUL-terminated, into buf[7]. */
void mf_flags_to_letters(unsigned int flags, char buf[7]);

/*
 * Escape one decoded folder name component for use as a file name.
 * Returns a new string.
 */
char *mf_folder_escape(const char *component, size_t len);

/*
 * Reverse mf_folder_escape. Returns a new string, or NULL when the name
 * is not a valid escaped component (e.g. contains "/" or a bad %XX).
 */
char *mf_folder_unescape(const char *name);

/*
 * Build a sanitised "/"-separated local path from a decoded server name
 * and its hierarchy delimiter (0 if flat). Returns a new string; empty
 * components become "%" escapes of nothing and are kept distinct.
 */
char *mf_folder_path_from_remote(const char *decoded, char delim);

/*
 * The Message-ID of a message (or of a header block): the value of the
 * first Message-ID header in the header section (which ends at the first
 * empty line), unfolded, CRs dropped, tabs as spaces, trimmed, at most
 * MF_MSGID_MAX bytes. Returns a new string, or NULL if there is none.
 * The server's copy and a delivered file give the same string, so that an
 * upload can be recognised after a crash.
 */
#define MF_MSGID_MAX 998
char *mf_header_message_id(const char *msg, size_t len);

#endif
