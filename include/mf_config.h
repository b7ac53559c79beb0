/*
 * mailfs.conf: an INI file.
 *
 *   [general]          cache_dir, state_dir, ...
 *   [account NAME]     one per mailbox; "type" picks the backend
 *
 * "#" and ";" start comments (at the start of a line, or after whitespace
 * following a value). Values may be quoted with "..." to keep "#" or
 * leading spaces. A leading "~/" is expanded for path-valued keys.
 * Unknown keys are kept (backends read their own keys through
 * mf_account_get()) but keys no backend knows are reported as warnings.
 */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

struct mf_kv {
	char *key;	/* owned */
	char *value;	/* owned */
	int line;
	bool used;	/* set when a reader asked for it */
};

enum mf_tls_mode {
	MF_TLS_IMPLICIT,
	MF_TLS_STARTTLS,
	MF_TLS_NONE,
};

enum mf_delete_policy {
	MF_DELETE_TRASH,	/* move to the Trash special-use folder */
	MF_DELETE_EXPUNGE,	/* \Deleted + UID EXPUNGE of that UID only */
};

enum mf_prefetch {
	MF_PREFETCH_NONE,
	MF_PREFETCH_NEW,
	MF_PREFETCH_ALL,
};

struct mf_account {
	char *name;		/* owned; the directory name under the mount */
	char *type;		/* owned; "imap", later "graph", "gmail" */

	/* Common keys, parsed and validated by mf_config_load(). */
	char *host;		/* owned or NULL */
	unsigned int port;	/* 0 = backend default */
	enum mf_tls_mode tls;
	char *user;		/* owned or NULL */
	char *password;		/* owned or NULL; wiped on free */
	char *password_command;	/* owned or NULL */
	char *ca_file;		/* owned or NULL (expanded) */
	bool allow_plaintext;
	char **folders;		/* owned NULL-terminated patterns, "!" = exclude */
	unsigned int poll_interval;	/* seconds */
	enum mf_delete_policy delete_policy;
	enum mf_prefetch prefetch;
	unsigned int timeout;	/* seconds for network operations */
	bool compress;		/* use COMPRESS=DEFLATE where offered */
	char *tunnel;		/* owned or NULL: speak IMAP over this
				   command's stdin/stdout (pre-authenticated) */
	unsigned int max_connections;	/* body fetch connections, >= 1 */
	char *view_fields;	/* owned or NULL: header field names the
				   views need ("LIST-ID FROM"), upper case,
				   space-separated; set by the [view]
				   sections that can show this account */
	uint64_t prefetch_max_size;	/* bytes; 0 = no limit: larger bodies
					   are not prefetched */
	unsigned int prefetch_max_age;	/* days; 0 = no limit: prefetch only
					   messages dated within this */

	struct mf_kv *kv;	/* owned; every key of the section */
	unsigned int kv_count;
	int line;		/* where the section starts */
};

/* One "match = Header: glob" line of a [view NAME] section. */
struct mf_view_rule {
	char *field;		/* owned; lower case header name, or
				   "account" / "folder" (pseudo fields) */
	char *glob;		/* owned; fnmatch pattern, case-insensitive */
};

/*
 * [view NAME]: a read-mostly Maildir at MOUNT/@NAME listing the messages
 * of all (or some) accounts that match any rule (see fs/views.c).
 */
struct mf_view {
	char *name;		/* owned; the section's NAME */
	char *dirname;		/* owned; "@NAME", the directory at the root */
	struct mf_view_rule *rules;	/* owned array, at least one */
	unsigned int rule_count;
	char **accounts;	/* owned NULL-terminated names, or NULL: all */
	char **folders;		/* owned NULL-terminated patterns ("!"
				   excludes, last match wins), or NULL: all */
	int line;
};

struct mf_config {
	char *path;		/* owned; the file it was read from */
	char *cache_dir;	/* owned, expanded */
	char *state_dir;	/* owned, expanded */
	unsigned int fetch_timeout;	/* seconds before an uncached read
					   fails with EIO */
	uint64_t cache_max_size;	/* bytes of bodies in cache_dir; 0 =
					   no limit (least recently used
					   bodies are evicted above it) */
	unsigned int drain_timeout;	/* seconds to spend at unmount on
					   queued changes (0: none) */
	char *token_key_command;	/* owned or NULL: prints the OAuth
					   token store's key (base64) */
	struct mf_account *accounts;	/* owned array */
	unsigned int account_count;
	struct mf_view *views;		/* owned array */
	unsigned int view_count;
};

/*
 * The default config path: $XDG_CONFIG_HOME/mailfs/mailfs.conf or
 * ~/.config/mailfs/mailfs.conf. Returns a new string.
 */
char *mf_config_default_path(void);

/*
 * Read and validate a config. On error returns a negative errno and a
 * message ("FILE:LINE: ...") in *error_r (caller frees). Warnings (unknown
 * keys) are logged.
 */
int mf_config_load(const char *path, struct mf_config **cfg_r,
		   char **error_r);
/* Parse from a string (tests). "name" appears in messages. */
int mf_config_parse(const char *name, const char *text,
		    struct mf_config **cfg_r, char **error_r);
void mf_config_free(struct mf_config **cfg);

/* A key of an account section, or NULL. Marks it used. */
const char *mf_account_get(const struct mf_account *acct, const char *key);

/*
 * The account's password: password_command's first line, or password.
 * Returns 0 and a string the caller must wipe (explicit_bzero) and free,
 * or -errno with *error_r.
 */
int mf_account_password(const struct mf_account *acct, char **password_r,
			char **error_r);

/* Is host "localhost", 127.0.0.0/8 or ::1? */
bool mf_host_is_loopback(const char *host);

/* Does a decoded folder name ("Archive/2024") pass the folders patterns? */
bool mf_account_folder_wanted(const struct mf_account *acct,
			      const char *folder);

/* Does a view show messages of this account and folder (its account and
 * folders keys; the match rules are checked elsewhere)? */
bool mf_view_wants(const struct mf_view *v, const char *account,
		   const char *folder);

#endif
