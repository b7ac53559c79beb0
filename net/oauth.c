/*
 * OAuth 2.0 client for native apps (see mf_oauth.h).
 *
 * Facts relied on (shared/reference/cloud-apis.md parts B and D):
 *  - Microsoft: /{tenant}/oauth2/v2.0/{authorize,token,devicecode}; public
 *    clients send no secret; one resource per access token, so Graph and
 *    outlook.office.com (IMAP, SMTP) tokens are asked for separately from
 *    the same refresh token, which rotates on every use.
 *  - Google: accounts.google.com/o/oauth2/v2/auth, oauth2.googleapis.com/
 *    token and /device/code; desktop clients send their (non-secret)
 *    client_secret; Gmail scopes are refused in the device flow.
 */
#include "mf_oauth.h"

#include "mf_config.h"
#include "mf_http.h"
#include "mf_tokenstore.h"
#include "mf_util.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MS_LOGIN "https://login.microsoftonline.com"
#define MS_GRAPH_SCOPE "https://graph.microsoft.com/Mail.ReadWrite"
#define MS_IMAP_SCOPE "https://outlook.office.com/IMAP.AccessAsUser.All"
#define MS_SMTP_SCOPE "https://outlook.office.com/SMTP.Send"
#define G_AUTH "https://accounts.google.com/o/oauth2/v2/auth"
#define G_TOKEN "https://oauth2.googleapis.com/token"
#define G_DEVICE "https://oauth2.googleapis.com/device/code"
#define G_FULL "https://mail.google.com/"
#define G_MODIFY "https://www.googleapis.com/auth/gmail.modify"

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static char *dup_or_null(const char *s)
{
	return s && *s ? xstrdup(s) : NULL;
}

int mf_oauth_cfg_from_account(const struct mf_account *acct,
			      struct mf_oauth_cfg *cfg, char **error_r)
{
	const char *prov = mf_account_get(acct, "oauth");
	const char *v;

	memset(cfg, 0, sizeof(*cfg));
	if (!prov || !*prov) {
		*error_r = xasprintf("account %s has no \"oauth\" key (oauth = "
				     "microsoft | google | generic)",
				     acct->name);
		return -EINVAL;
	}
	if (strcasecmp(prov, "microsoft") == 0) {
		cfg->provider = MF_OAUTH_MICROSOFT;
	} else if (strcasecmp(prov, "google") == 0) {
		cfg->provider = MF_OAUTH_GOOGLE;
	} else if (strcasecmp(prov, "generic") == 0) {
		cfg->provider = MF_OAUTH_GENERIC;
	} else {
		*error_r = xasprintf("account %s: oauth must be microsoft, "
				     "google or generic (not \"%s\")",
				     acct->name, prov);
		return -EINVAL;
	}
	cfg->account = xstrdup(acct->name);
	cfg->provider_name = xstrdup(prov);
	cfg->type = xstrdup(acct->type);
	cfg->user = dup_or_null(acct->user);
	cfg->client_id = dup_or_null(mf_account_get(acct, "client_id"));
	cfg->client_secret =
		dup_or_null(mf_account_get(acct, "client_secret"));
	cfg->scopes = dup_or_null(mf_account_get(acct, "scopes"));
	cfg->ca_file = dup_or_null(acct->ca_file);
	cfg->allow_plaintext = acct->allow_plaintext;
	cfg->timeout = acct->timeout;
	/*
	 * Permanent deletion needs https://mail.google.com/. Only an
	 * explicit "delete = expunge" asks for it: a gmail account without
	 * the key also has MF_DELETE_EXPUNGE, which there means "let the
	 * backend decide" (remove the label, archive, Trash).
	 */
	{
		const char *del = mf_account_get(acct, "delete");

		cfg->wants_full_gmail =
			acct->delete_policy == MF_DELETE_EXPUNGE &&
			(strcmp(acct->type, "gmail") != 0 ||
			 (del && strcmp(del, "expunge") == 0));
	}

	if (cfg->provider == MF_OAUTH_MICROSOFT) {
		const char *tenant = mf_account_get(acct, "tenant");

		if (!tenant || !*tenant)
			tenant = "common";
		cfg->auth_url = xasprintf(MS_LOGIN "/%s/oauth2/v2.0/authorize",
					  tenant);
		cfg->token_url = xasprintf(MS_LOGIN "/%s/oauth2/v2.0/token",
					   tenant);
		cfg->device_url = xasprintf(MS_LOGIN
					    "/%s/oauth2/v2.0/devicecode",
					    tenant);
	} else if (cfg->provider == MF_OAUTH_GOOGLE) {
		cfg->auth_url = xstrdup(G_AUTH);
		cfg->token_url = xstrdup(G_TOKEN);
		cfg->device_url = xstrdup(G_DEVICE);
	}
	/* Explicit endpoints win (generic providers, and the tests). */
	if ((v = mf_account_get(acct, "auth_url")) && *v) {
		free(cfg->auth_url);
		cfg->auth_url = xstrdup(v);
	}
	if ((v = mf_account_get(acct, "token_url")) && *v) {
		free(cfg->token_url);
		cfg->token_url = xstrdup(v);
	}
	if ((v = mf_account_get(acct, "device_url")) && *v) {
		free(cfg->device_url);
		cfg->device_url = xstrdup(v);
	}
	if (!cfg->client_id) {
		*error_r = xasprintf("account %s: oauth needs \"client_id\" "
				     "(your own app registration; see the "
				     "README, \"Signing in with OAuth2\")",
				     acct->name);
		mf_oauth_cfg_clear(cfg);
		return -EINVAL;
	}
	if (!cfg->token_url || !cfg->auth_url) {
		*error_r = xasprintf("account %s: oauth = generic needs "
				     "\"auth_url\" and \"token_url\"",
				     acct->name);
		mf_oauth_cfg_clear(cfg);
		return -EINVAL;
	}
	return 0;
}

void mf_oauth_cfg_clear(struct mf_oauth_cfg *cfg)
{
	free(cfg->account);
	free(cfg->provider_name);
	free(cfg->type);
	free(cfg->user);
	free(cfg->client_id);
	wipe_free(cfg->client_secret);
	free(cfg->auth_url);
	free(cfg->token_url);
	free(cfg->device_url);
	free(cfg->scopes);
	free(cfg->ca_file);
	memset(cfg, 0, sizeof(*cfg));
}

enum mf_oauth_use mf_oauth_default_use(const struct mf_oauth_cfg *cfg)
{
	return cfg->type && strcmp(cfg->type, "imap") == 0
		       ? MF_OAUTH_USE_IMAP
		       : MF_OAUTH_USE_API;
}

int mf_oauth_use_parse(const char *s)
{
	if (strcmp(s, "api") == 0)
		return MF_OAUTH_USE_API;
	if (strcmp(s, "imap") == 0)
		return MF_OAUTH_USE_IMAP;
	if (strcmp(s, "smtp") == 0)
		return MF_OAUTH_USE_SMTP;
	return -1;
}

static bool is_imap(const struct mf_oauth_cfg *cfg)
{
	return cfg->type && strcmp(cfg->type, "imap") == 0;
}

char *mf_oauth_login_scope(const struct mf_oauth_cfg *cfg)
{
	if (cfg->scopes)
		return xstrdup(cfg->scopes);
	switch (cfg->provider) {
	case MF_OAUTH_MICROSOFT:
		/* Consent to every resource at once; tokens are per
		   resource later. */
		if (is_imap(cfg))
			return xstrdup("offline_access " MS_IMAP_SCOPE
				       " " MS_SMTP_SCOPE);
		return xstrdup("offline_access " MS_GRAPH_SCOPE
			       " " MS_SMTP_SCOPE);
	case MF_OAUTH_GOOGLE:
		/* IMAP, SMTP and permanent deletion need the full scope;
		   the API otherwise does with gmail.modify. */
		if (is_imap(cfg) || cfg->wants_full_gmail)
			return xstrdup(G_FULL);
		return xstrdup(G_MODIFY);
	case MF_OAUTH_GENERIC:
		break;
	}
	return xstrdup("offline_access");
}

char *mf_oauth_token_scope(const struct mf_oauth_cfg *cfg,
			   enum mf_oauth_use use)
{
	if (cfg->provider != MF_OAUTH_MICROSOFT)
		return mf_oauth_login_scope(cfg);
	if (cfg->scopes && use == mf_oauth_default_use(cfg))
		return xstrdup(cfg->scopes);
	switch (use) {
	case MF_OAUTH_USE_IMAP:
		return xstrdup(MS_IMAP_SCOPE " offline_access");
	case MF_OAUTH_USE_SMTP:
		return xstrdup(MS_SMTP_SCOPE " offline_access");
	case MF_OAUTH_USE_API:
		break;
	}
	return xstrdup(MS_GRAPH_SCOPE " offline_access");
}

/* ---- PKCE ---- */

static void b64url(const unsigned char *in, size_t n, char *out)
{
	char tmp[4 * ((64 + 2) / 3) + 4];
	int len = EVP_EncodeBlock((unsigned char *)tmp, in, (int)n);
	int j = 0;

	for (int i = 0; i < len; i++) {
		char c = tmp[i];

		if (c == '=')
			break;
		out[j++] = c == '+' ? '-' : c == '/' ? '_' : c;
	}
	out[j] = '\0';
}

void mf_pkce_verifier(char out[65])
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		"0123456789-._~";
	unsigned char r[64];

	if (RAND_bytes(r, sizeof(r)) != 1)
		abort();
	/* 66 symbols; the modulo bias is irrelevant at 64 characters
	   of 6+ bits each */
	for (int i = 0; i < 64; i++)
		out[i] = alphabet[r[i] % (sizeof(alphabet) - 1)];
	out[64] = '\0';
	explicit_bzero(r, sizeof(r));
}

void mf_pkce_challenge(const char *verifier, char out[44])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	EVP_Digest(verifier, strlen(verifier), md, &n, EVP_sha256(), NULL);
	b64url(md, n, out);
}

void mf_oauth_random(char out[44])
{
	unsigned char r[32];

	if (RAND_bytes(r, sizeof(r)) != 1)
		abort();
	b64url(r, sizeof(r), out);
}

static void add_param(struct mf_buf *b, const char *k, const char *v)
{
	char *e = mf_http_escape(v);

	if (b->len)
		mf_buf_appendc(b, '&');
	mf_buf_appends(b, k);
	mf_buf_appendc(b, '=');
	mf_buf_appends(b, e);
	explicit_bzero(e, strlen(e));
	free(e);
}

char *mf_oauth_authorize_url(const struct mf_oauth_cfg *cfg,
			     const char *redirect_uri, const char *state,
			     const char *challenge, const char *scope)
{
	struct mf_buf q, url;

	mf_buf_init(&q);
	add_param(&q, "client_id", cfg->client_id);
	add_param(&q, "response_type", "code");
	add_param(&q, "redirect_uri", redirect_uri);
	add_param(&q, "scope", scope);
	add_param(&q, "state", state);
	add_param(&q, "code_challenge", challenge);
	add_param(&q, "code_challenge_method", "S256");
	if (cfg->provider == MF_OAUTH_MICROSOFT)
		add_param(&q, "response_mode", "query");
	if (cfg->provider == MF_OAUTH_GOOGLE) {
		add_param(&q, "access_type", "offline");
		add_param(&q, "prompt", "consent");
	}
	if (cfg->user)
		add_param(&q, "login_hint", cfg->user);
	mf_buf_init(&url);
	mf_buf_printf(&url, "%s%c%s", cfg->auth_url,
		      strchr(cfg->auth_url, '?') ? '&' : '?', q.data);
	mf_buf_free(&q);
	return mf_buf_steal(&url);
}

/* ---- token endpoint ---- */

void mf_oauth_tokens_clear(struct mf_oauth_tokens *t)
{
	wipe_free(t->access_token);
	wipe_free(t->refresh_token);
	free(t->scope);
	memset(t, 0, sizeof(*t));
}

void mf_oauth_device_clear(struct mf_oauth_device *d)
{
	wipe_free(d->device_code);
	free(d->user_code);
	free(d->verification_uri);
	free(d->message);
	memset(d, 0, sizeof(*d));
}

static void wipe_json_strings(json_t *j)
{
	const char *k;
	json_t *v;

	json_object_foreach(j, k, v) {
		if (json_is_string(v)) {
			char *s = (char *)json_string_value(v);

			explicit_bzero(s, strlen(s));
		}
	}
}

/*
 * POST a form to url; on a JSON answer, *json_r. MF_OK for 2xx; MF_AUTH
 * with *oauth_error_r for an OAuth error object; others as usual.
 */
static enum mf_status post_form(const struct mf_oauth_cfg *cfg,
				const char *url, struct mf_buf *form,
				json_t **json_r, char **oauth_error_r,
				char **error_r)
{
	struct mf_http_opts o = { .ca_file = cfg->ca_file,
				  .timeout = cfg->timeout,
				  .allow_plaintext = cfg->allow_plaintext };
	static const char *const hdrs[] = {
		"Content-Type: application/x-www-form-urlencoded",
		"Accept: application/json", NULL,
	};
	struct mf_http_req req = { .method = "POST", .url = url,
				   .headers = hdrs, .body = form->data,
				   .body_len = form->len, .body_fd = -1,
				   .out_fd = -1, .max_size = 1 << 20 };
	struct mf_http_policy pol = { .max_attempts = 3 };
	struct mf_http_resp resp;
	struct mf_http *h;
	json_t *j = NULL;
	enum mf_status st;

	*json_r = NULL;
	h = mf_http_new(&o, error_r);
	if (!h)
		return MF_TEMP;
	mf_http_resp_init(&resp);
	/* Token requests are not idempotent (a code is used once); only
	   429/503 are retried, which the server did not act on. */
	st = mf_http_call(h, &pol, &req, &resp, error_r);
	mf_http_free(h);
	if (st != MF_OK)
		goto out;
	if (resp.body.len)
		j = json_loadb(resp.body.data, resp.body.len, 0, NULL);
	if (resp.body.data)
		explicit_bzero(resp.body.data, resp.body.len);
	if (resp.status >= 200 && resp.status < 300) {
		if (!json_is_object(j)) {
			*error_r = xasprintf("%s answered %ld without a JSON "
					     "object", url, resp.status);
			st = MF_PROTO;
			goto out;
		}
		*json_r = j;
		j = NULL;
		st = MF_OK;
		goto out;
	}
	if (json_is_object(j) &&
	    json_string_value(json_object_get(j, "error"))) {
		const char *e = json_string_value(json_object_get(j, "error"));
		const char *d = json_string_value(
			json_object_get(j, "error_description"));

		*oauth_error_r = xstrdup(e);
		*error_r = xasprintf("%s: %s%s%.300s", url, e, d ? ": " : "",
				     d ? d : "");
		st = resp.status >= 500 ? MF_TEMP : MF_AUTH;
		goto out;
	}
	*error_r = xasprintf("%s answered HTTP %ld", url, resp.status);
	st = mf_http_status_of(resp.status);
	if (st == MF_OK)
		st = MF_PROTO;
out:
	if (j) {
		wipe_json_strings(j);
		json_decref(j);
	}
	mf_http_resp_free(&resp);
	return st;
}

static void client_params(const struct mf_oauth_cfg *cfg, struct mf_buf *b)
{
	add_param(b, "client_id", cfg->client_id);
	if (cfg->client_secret)
		add_param(b, "client_secret", cfg->client_secret);
}

static enum mf_status parse_tokens(const struct mf_oauth_cfg *cfg, json_t *j,
				   struct mf_oauth_tokens *out,
				   char **error_r)
{
	const char *at = json_string_value(json_object_get(j, "access_token"));
	const char *rt = json_string_value(json_object_get(j,
							    "refresh_token"));
	const char *sc = json_string_value(json_object_get(j, "scope"));
	json_t *ei = json_object_get(j, "expires_in");
	int64_t exp = 3600;

	memset(out, 0, sizeof(*out));
	if (!at || !*at) {
		*error_r = xasprintf("%s: no access_token in the answer",
				     cfg->token_url);
		return MF_PROTO;
	}
	if (json_is_integer(ei))
		exp = json_integer_value(ei);
	else if (json_is_string(ei))	/* some servers quote it */
		exp = strtoll(json_string_value(ei), NULL, 10);
	if (exp <= 0)
		exp = 3600;
	out->access_token = xstrdup(at);
	out->refresh_token = rt && *rt ? xstrdup(rt) : NULL;
	out->scope = sc ? xstrdup(sc) : NULL;
	out->lifetime = exp;
	out->expires_at = (int64_t)time(NULL) + exp;
	return MF_OK;
}

static enum mf_status token_request(const struct mf_oauth_cfg *cfg,
				    struct mf_buf *form,
				    struct mf_oauth_tokens *out,
				    char **oauth_error_r, char **error_r)
{
	json_t *j = NULL;
	enum mf_status st;

	st = post_form(cfg, cfg->token_url, form, &j, oauth_error_r, error_r);
	if (form->data)
		explicit_bzero(form->data, form->len);
	mf_buf_free(form);
	if (st != MF_OK)
		return st;
	st = parse_tokens(cfg, j, out, error_r);
	wipe_json_strings(j);
	json_decref(j);
	return st;
}

enum mf_status mf_oauth_exchange_code(const struct mf_oauth_cfg *cfg,
				      const char *code, const char *verifier,
				      const char *redirect_uri,
				      const char *scope,
				      struct mf_oauth_tokens *out,
				      char **oauth_error_r, char **error_r)
{
	struct mf_buf f;

	mf_buf_init(&f);
	client_params(cfg, &f);
	add_param(&f, "grant_type", "authorization_code");
	add_param(&f, "code", code);
	add_param(&f, "redirect_uri", redirect_uri);
	add_param(&f, "code_verifier", verifier);
	if (scope)
		add_param(&f, "scope", scope);
	return token_request(cfg, &f, out, oauth_error_r, error_r);
}

enum mf_status mf_oauth_refresh(const struct mf_oauth_cfg *cfg,
				const char *refresh_token, const char *scope,
				struct mf_oauth_tokens *out,
				char **oauth_error_r, char **error_r)
{
	struct mf_buf f;

	mf_buf_init(&f);
	client_params(cfg, &f);
	add_param(&f, "grant_type", "refresh_token");
	add_param(&f, "refresh_token", refresh_token);
	if (scope)
		add_param(&f, "scope", scope);
	return token_request(cfg, &f, out, oauth_error_r, error_r);
}

/* ---- device flow ---- */

char *mf_oauth_device_refusal(const struct mf_oauth_cfg *cfg,
			      const char *scope)
{
	if (cfg->provider != MF_OAUTH_GOOGLE)
		return NULL;
	if (!strstr(scope, "mail.google.com") && !strstr(scope, "gmail"))
		return NULL;
	return xasprintf(
		"Google refuses Gmail scopes (%s) in the device flow "
		"(\"Invalid device flow scope\"), so --device cannot work for "
		"a Gmail account. Use the browser flow instead; on a machine "
		"without a browser, forward the loopback port from your "
		"desktop:\n"
		"  ssh -L 8765:127.0.0.1:8765 THIS-HOST\n"
		"  mailfs-auth login %s --port 8765 --no-browser\n"
		"and open the printed URL in your desktop browser.",
		scope, cfg->account);
}

enum mf_status mf_oauth_device_start(const struct mf_oauth_cfg *cfg,
				     const char *scope,
				     struct mf_oauth_device *d,
				     char **oauth_error_r, char **error_r)
{
	struct mf_buf f;
	json_t *j = NULL;
	enum mf_status st;
	const char *dc, *uc, *uri, *msg;
	json_t *iv, *ex;

	memset(d, 0, sizeof(*d));
	if (!cfg->device_url) {
		*error_r = xasprintf("account %s: no device_url for this "
				     "provider", cfg->account);
		return MF_PROTO;
	}
	mf_buf_init(&f);
	client_params(cfg, &f);
	add_param(&f, "scope", scope);
	st = post_form(cfg, cfg->device_url, &f, &j, oauth_error_r, error_r);
	mf_buf_free(&f);
	if (st != MF_OK)
		return st;
	dc = json_string_value(json_object_get(j, "device_code"));
	uc = json_string_value(json_object_get(j, "user_code"));
	uri = json_string_value(json_object_get(j, "verification_uri"));
	if (!uri)	/* Google spells it _url */
		uri = json_string_value(json_object_get(j,
							"verification_url"));
	msg = json_string_value(json_object_get(j, "message"));
	iv = json_object_get(j, "interval");
	ex = json_object_get(j, "expires_in");
	if (!dc || !uc || !uri) {
		*error_r = xasprintf("%s: the answer lacks device_code, "
				     "user_code or verification_uri",
				     cfg->device_url);
		st = MF_PROTO;
	} else {
		d->device_code = xstrdup(dc);
		d->user_code = xstrdup(uc);
		d->verification_uri = xstrdup(uri);
		d->message = msg ? xstrdup(msg) : NULL;
		d->interval = json_is_integer(iv) && json_integer_value(iv) > 0
				      ? (unsigned int)json_integer_value(iv)
				      : 5;
		d->expires_at = (int64_t)time(NULL) +
				(json_is_integer(ex) ? json_integer_value(ex)
						     : 900);
	}
	wipe_json_strings(j);
	json_decref(j);
	return st;
}

enum mf_status mf_oauth_device_poll(const struct mf_oauth_cfg *cfg,
				    const struct mf_oauth_device *d,
				    struct mf_oauth_tokens *out,
				    char **oauth_error_r, char **error_r)
{
	struct mf_buf f;
	enum mf_status st;

	mf_buf_init(&f);
	client_params(cfg, &f);
	add_param(&f, "grant_type",
		  "urn:ietf:params:oauth:grant-type:device_code");
	add_param(&f, "device_code", d->device_code);
	st = token_request(cfg, &f, out, oauth_error_r, error_r);
	if (st == MF_AUTH && *oauth_error_r &&
	    (strcmp(*oauth_error_r, "authorization_pending") == 0 ||
	     strcmp(*oauth_error_r, "slow_down") == 0))
		st = MF_TEMP;
	return st;
}

/* ---- access tokens from the store ---- */

enum mf_status mf_oauth_access_token(const struct mf_oauth_cfg *cfg,
				     enum mf_oauth_use use,
				     struct mf_oauth_tokens *out,
				     char **error_r)
{
	struct mf_token_record rec;
	char *err = NULL, *oerr = NULL, *scope;
	enum mf_status st;
	int lockfd, ret;

	memset(out, 0, sizeof(*out));
	lockfd = mf_tokenstore_lock(cfg->account, &err);
	if (lockfd < 0) {
		*error_r = xasprintf("account %s: %s", cfg->account, err);
		free(err);
		return MF_AUTH;
	}
	ret = mf_tokenstore_load(cfg->account, &rec, &err);
	if (ret < 0) {
		*error_r = xasprintf("account %s: %s; run `mailfs-auth login "
				     "%s`", cfg->account, err, cfg->account);
		free(err);
		mf_tokenstore_unlock(lockfd);
		return MF_AUTH;
	}
	if (rec.client_id && *rec.client_id &&
	    strcmp(rec.client_id, cfg->client_id) != 0) {
		*error_r = xasprintf("account %s: the stored token belongs to "
				     "another client_id; run `mailfs-auth "
				     "login %s`", cfg->account, cfg->account);
		mf_token_record_clear(&rec);
		mf_tokenstore_unlock(lockfd);
		return MF_AUTH;
	}
	scope = mf_oauth_token_scope(cfg, use);
	st = mf_oauth_refresh(cfg, rec.refresh_token, scope, out, &oerr,
			      &err);
	free(scope);
	if (st == MF_OK) {
		mf_debug(MF_DBG_AUTH, "oauth %s: new access token, valid %lld "
			 "s", cfg->account, (long long)out->lifetime);
		if (out->refresh_token &&
		    strcmp(out->refresh_token, rec.refresh_token) != 0) {
			/* Rotated: keep the newest (the old may still work,
			   but need not). */
			wipe_free(rec.refresh_token);
			rec.refresh_token = xstrdup(out->refresh_token);
			rec.saved = (int64_t)time(NULL);
			if (mf_tokenstore_save(cfg->account, &rec, &err) <
			    0) {
				*error_r = xasprintf("account %s: the new "
						     "refresh token cannot be "
						     "saved: %s",
						     cfg->account, err);
				free(err);
				err = NULL;
				mf_oauth_tokens_clear(out);
				st = MF_AUTH;
			}
		}
	} else if (st == MF_AUTH && oerr &&
		   (strcmp(oerr, "invalid_grant") == 0 ||
		    strcmp(oerr, "interaction_required") == 0 ||
		    strcmp(oerr, "consent_required") == 0)) {
		*error_r = xasprintf("account %s: the sign-in is no longer "
				     "valid (%s); run `mailfs-auth login %s`",
				     cfg->account, oerr, cfg->account);
	} else if (st == MF_AUTH) {
		*error_r = xasprintf("account %s: token refresh refused: %s; "
				     "check the account's oauth settings, then "
				     "run `mailfs-auth login %s`",
				     cfg->account, err ? err : "?",
				     cfg->account);
	} else {
		*error_r = xasprintf("account %s: token refresh failed: %s",
				     cfg->account, err ? err : "?");
	}
	free(err);
	free(oerr);
	mf_token_record_clear(&rec);
	mf_tokenstore_unlock(lockfd);
	return st;
}

/* ---- SASL ---- */

static char *b64(const char *raw, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)raw,
			(int)n);
	return out;
}

char *mf_sasl_xoauth2(const char *user, const char *token)
{
	char *raw = xasprintf("user=%s\001auth=Bearer %s\001\001", user,
			      token);
	char *out = b64(raw, strlen(raw));

	wipe_free(raw);
	return out;
}

char *mf_sasl_oauthbearer(const char *user, const char *host,
			  unsigned int port, const char *token)
{
	char *raw = xasprintf("n,a=%s,\001host=%s\001port=%u\001auth=Bearer "
			      "%s\001\001", user, host, port, token);
	char *out = b64(raw, strlen(raw));

	wipe_free(raw);
	return out;
}
