/*
 * The OAuth token store: one encrypted file per account holding the
 * refresh token (and what it was issued for). Access tokens are never
 * written: they live in memory only.
 *
 * Layout (see README, "Signing in with OAuth2"):
 *   STATE_DIR/oauth/            0700
 *   STATE_DIR/oauth/ACCOUNT.tok 0600  "MFTOK1" | nonce(12) | ciphertext | tag(16)
 *   STATE_DIR/oauth/ACCOUNT.lock      flock()ed around read-refresh-write
 *   KEY_FILE                    0600  32 random bytes, by default
 *                               $XDG_CONFIG_HOME/mailfs/token.key
 *                               (or the output of token_key_command)
 *
 * The payload is encrypted with AES-256-GCM; the additional data is the
 * magic and the account name, so a file copied to another account's name
 * does not decrypt. The key lives apart from the data (config dir vs
 * state dir), so a copy of the state dir (a backup, a synced folder) alone
 * does not give the tokens away. Someone who can read both as the user can
 * read the tokens: the store protects data at rest, not against the user's
 * own processes.
 *
 * Failures are errors, never a silent "no token": a store whose key is
 * missing or wrong, or whose files have loose permissions, is reported
 * with a message that says what to do.
 */
#ifndef MF_TOKENSTORE_H
#define MF_TOKENSTORE_H

#include <stddef.h>
#include <stdint.h>

struct mf_token_record {
	char *provider;		/* "microsoft", "google", "generic" */
	char *client_id;
	char *refresh_token;	/* the secret; wiped on clear */
	char *scope;		/* what was granted at login */
	int64_t saved;		/* unix seconds */
};

void mf_token_record_clear(struct mf_token_record *rec);

/*
 * Where the store lives. state_dir: the config's state_dir (NULL: the XDG
 * default). key_file: NULL for $XDG_CONFIG_HOME/mailfs/token.key (or
 * ~/.config/mailfs/token.key). key_command: NULL, or a command whose first
 * output line is the key in base64 (44 characters), e.g. secret-tool
 * lookup for the desktop's Secret Service, or pass; then no key file is
 * used or made. Call before the other functions; safe to call again
 * (tests).
 */
void mf_tokenstore_configure(const char *state_dir, const char *key_file,
			     const char *key_command);

/* The paths in use (for messages and `mailfs-auth status`). Static. */
const char *mf_tokenstore_dir(void);
const char *mf_tokenstore_key_file(void);

/*
 * Read ACCOUNT's record. 0; -ENOENT when no record exists (never signed
 * in); other -errno with *error_r on a store that cannot be read
 * (missing key, wrong key, loose permissions, corrupt file).
 */
int mf_tokenstore_load(const char *account, struct mf_token_record *rec,
		       char **error_r);

/*
 * Write ACCOUNT's record atomically (temp file, fsync, rename, fsync of
 * the directory). Creates the directory and, when no record exists yet,
 * the key. 0 or -errno with *error_r.
 */
int mf_tokenstore_save(const char *account,
		       const struct mf_token_record *rec, char **error_r);

/*
 * A stamp that changes whenever ACCOUNT's record is written or removed
 * (its mtime and inode), 0 when there is none: lets a daemon wait for a
 * new `mailfs-auth login` instead of retrying a dead sign-in.
 */
int64_t mf_tokenstore_stamp(const char *account);

/* Remove ACCOUNT's record. 0 (also when there was none) or -errno. */
int mf_tokenstore_remove(const char *account, char **error_r);

/*
 * Hold ACCOUNT's lock (an flock on ACCOUNT.lock) so a refresh that
 * rotates the refresh token is not raced by another process. Returns an
 * fd for mf_tokenstore_unlock, or -errno with *error_r.
 */
int mf_tokenstore_lock(const char *account, char **error_r);
void mf_tokenstore_unlock(int fd);

/* Low level, for the unit tests: encrypt/decrypt one blob. */
int mf_tokenstore_seal(const unsigned char key[32], const char *account,
		       const void *plain, size_t len, unsigned char **out_r,
		       size_t *out_len_r);
int mf_tokenstore_open_blob(const unsigned char key[32], const char *account,
			    const unsigned char *blob, size_t len,
			    char **plain_r, size_t *plain_len_r);

#endif
