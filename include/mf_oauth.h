/*
 * OAuth 2.0 for native apps (RFC 8252): provider endpoints and scopes,
 * PKCE (RFC 7636), the authorization-code exchange, the device
 * authorization grant (RFC 8628), refresh, and the SASL strings for IMAP
 * (XOAUTH2, OAUTHBEARER RFC 7628).
 *
 * An account opts in with "oauth = microsoft | google | generic". The
 * refresh token lives in the token store (mf_tokenstore.h); access tokens
 * are asked for per use (api, imap, smtp) and kept in memory only.
 */
#ifndef MF_OAUTH_H
#define MF_OAUTH_H

#include "mf_backend.h"

#include <stdbool.h>
#include <stdint.h>

struct mf_account;

enum mf_oauth_provider {
	MF_OAUTH_MICROSOFT,
	MF_OAUTH_GOOGLE,
	MF_OAUTH_GENERIC,
};

/* What a token is for: Microsoft issues one audience per token. */
enum mf_oauth_use {
	MF_OAUTH_USE_API,	/* Graph or the Gmail API */
	MF_OAUTH_USE_IMAP,
	MF_OAUTH_USE_SMTP,
};

struct mf_oauth_cfg {
	char *account;
	enum mf_oauth_provider provider;
	char *provider_name;
	char *type;		/* account type: imap, graph, gmail */
	char *user;		/* may be NULL */
	char *client_id;
	char *client_secret;	/* NULL for public clients; not a secret for
				   Google desktop clients, still kept out of
				   logs */
	char *auth_url;
	char *token_url;
	char *device_url;
	char *scopes;		/* the "scopes" key, or NULL */
	bool wants_full_gmail;	/* delete = expunge on gmail */
	char *ca_file;
	bool allow_plaintext;
	unsigned int timeout;
};

/* Read an account's oauth keys. 0, or -EINVAL with *error_r. */
int mf_oauth_cfg_from_account(const struct mf_account *acct,
			      struct mf_oauth_cfg *cfg, char **error_r);
void mf_oauth_cfg_clear(struct mf_oauth_cfg *cfg);

/* The use an account's own backend needs (imap -> IMAP, else API). */
enum mf_oauth_use mf_oauth_default_use(const struct mf_oauth_cfg *cfg);
/* "api" / "imap" / "smtp" -> use; -1 when unknown. */
int mf_oauth_use_parse(const char *s);

/*
 * Scopes, space-separated, new string. For login (consent): everything the
 * account may need, with offline_access where the provider wants it. For
 * a token: the scopes of one resource (Microsoft) for that use.
 */
char *mf_oauth_login_scope(const struct mf_oauth_cfg *cfg);
char *mf_oauth_token_scope(const struct mf_oauth_cfg *cfg,
			   enum mf_oauth_use use);

/* PKCE: a 64-character verifier and its S256 challenge (43 chars). */
void mf_pkce_verifier(char out[65]);
void mf_pkce_challenge(const char *verifier, char out[44]);
/* 32 random bytes as base64url (43 chars): for "state". */
void mf_oauth_random(char out[44]);

/* The authorization URL for the loopback flow. New string. */
char *mf_oauth_authorize_url(const struct mf_oauth_cfg *cfg,
			     const char *redirect_uri, const char *state,
			     const char *challenge, const char *scope);

struct mf_oauth_tokens {
	char *access_token;	/* wiped on clear */
	char *refresh_token;	/* NULL when not (re)issued */
	char *scope;
	int64_t expires_at;	/* unix seconds */
	int64_t lifetime;	/* expires_in as given */
};
void mf_oauth_tokens_clear(struct mf_oauth_tokens *t);

/*
 * Token endpoint calls. MF_OK; MF_AUTH when the grant is refused
 * (*oauth_error_r = the "error" code, e.g. "invalid_grant"); MF_TEMP on
 * network trouble; MF_PROTO on a response that makes no sense.
 */
enum mf_status mf_oauth_exchange_code(const struct mf_oauth_cfg *cfg,
				      const char *code, const char *verifier,
				      const char *redirect_uri,
				      const char *scope,
				      struct mf_oauth_tokens *out,
				      char **oauth_error_r, char **error_r);
enum mf_status mf_oauth_refresh(const struct mf_oauth_cfg *cfg,
				const char *refresh_token, const char *scope,
				struct mf_oauth_tokens *out,
				char **oauth_error_r, char **error_r);

struct mf_oauth_device {
	char *device_code;	/* wiped on clear */
	char *user_code;
	char *verification_uri;
	char *message;		/* provider's text, or NULL */
	unsigned int interval;	/* seconds */
	int64_t expires_at;	/* unix seconds */
};
void mf_oauth_device_clear(struct mf_oauth_device *d);

enum mf_status mf_oauth_device_start(const struct mf_oauth_cfg *cfg,
				     const char *scope,
				     struct mf_oauth_device *d,
				     char **oauth_error_r, char **error_r);
/*
 * One poll. MF_OK with tokens; MF_AGAIN-like states come back as MF_TEMP
 * with *oauth_error_r "authorization_pending" or "slow_down"; MF_AUTH with
 * "expired_token", "access_denied" (or Microsoft's
 * "authorization_declined").
 */
enum mf_status mf_oauth_device_poll(const struct mf_oauth_cfg *cfg,
				    const struct mf_oauth_device *d,
				    struct mf_oauth_tokens *out,
				    char **oauth_error_r, char **error_r);

/*
 * Would the provider refuse this scope in the device flow? (Google
 * refuses every Gmail scope there.) Returns an explanation or NULL.
 */
char *mf_oauth_device_refusal(const struct mf_oauth_cfg *cfg,
			      const char *scope);

/*
 * A fresh access token for a use, from the stored refresh token: locks
 * the account's record, refreshes at the token endpoint, saves a rotated
 * refresh token. MF_AUTH with "run `mailfs-auth login ACCOUNT`" in the
 * message when the grant is gone (invalid_grant) or there is none.
 */
enum mf_status mf_oauth_access_token(const struct mf_oauth_cfg *cfg,
				     enum mf_oauth_use use,
				     struct mf_oauth_tokens *out,
				     char **error_r);

/* SASL initial responses, base64. New strings (wipe after use). */
char *mf_sasl_xoauth2(const char *user, const char *token);
char *mf_sasl_oauthbearer(const char *user, const char *host,
			  unsigned int port, const char *token);

#endif
