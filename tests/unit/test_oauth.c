/*
 * OAuth helpers: PKCE (RFC 7636 appendix B vector), the SASL strings,
 * scopes per provider and use, the authorization URL, and the token
 * source's answer when nobody has signed in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mf_config.h"
#include "mf_http.h"
#include "mf_oauth.h"
#include "mf_tokenstore.h"
#include "mf_util.h"
#include "script_server.h"

static void test_pkce_rfc7636_vector(void **state)
{
	char ch[44];

	(void)state;
	mf_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", ch);
	assert_string_equal(ch, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void test_pkce_verifier_alphabet(void **state)
{
	char a[65], b[65];

	(void)state;
	mf_pkce_verifier(a);
	mf_pkce_verifier(b);
	assert_int_equal(strlen(a), 64);
	assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
				   "opqrstuvwxyz0123456789-._~"),
			 64);
	assert_string_not_equal(a, b);
}

static char *unb64(const char *s)
{
	size_t n = strlen(s);
	unsigned char *out = xcalloc(1, n + 1);
	int len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);

	assert_true(len >= 0);
	return (char *)out;
}

static void test_sasl_strings(void **state)
{
	char *x = mf_sasl_xoauth2("someuser@example.com", "ya29.vF9dft4");
	char *raw = unb64(x);

	(void)state;
	assert_string_equal(raw, "user=someuser@example.com\001auth=Bearer "
				 "ya29.vF9dft4\001\001");
	free(raw);
	free(x);
	x = mf_sasl_oauthbearer("u@e.org", "imap.e.org", 993, "tok");
	raw = unb64(x);
	assert_string_equal(raw, "n,a=u@e.org,\001host=imap.e.org\001port=993"
				 "\001auth=Bearer tok\001\001");
	free(raw);
	free(x);
}

static struct mf_config *cfg_of(const char *acct_keys)
{
	struct mf_config *cfg = NULL;
	char *err = NULL;
	char *text = xasprintf("[account a]\n%s", acct_keys);

	if (mf_config_parse("t", text, &cfg, &err) < 0)
		fail_msg("%s", err);
	free(text);
	return cfg;
}

static void test_scopes(void **state)
{
	struct mf_config *cfg;
	struct mf_oauth_cfg oc;
	char *err = NULL, *s;

	(void)state;
	cfg = cfg_of("type = imap\nhost = h\nuser = u\nauth = xoauth2\n"
		     "oauth = microsoft\nclient_id = c\ntenant = contoso\n");
	assert_int_equal(mf_oauth_cfg_from_account(&cfg->accounts[0], &oc,
						   &err), 0);
	assert_string_equal(oc.token_url, "https://login.microsoftonline.com/"
					  "contoso/oauth2/v2.0/token");
	s = mf_oauth_login_scope(&oc);
	assert_non_null(strstr(s, "offline_access"));
	assert_non_null(strstr(s, "IMAP.AccessAsUser.All"));
	assert_non_null(strstr(s, "SMTP.Send"));
	free(s);
	s = mf_oauth_token_scope(&oc, MF_OAUTH_USE_SMTP);
	assert_string_equal(s, "https://outlook.office.com/SMTP.Send "
			       "offline_access");
	free(s);
	s = mf_oauth_token_scope(&oc, MF_OAUTH_USE_API);
	assert_string_equal(s, "https://graph.microsoft.com/Mail.ReadWrite "
			       "offline_access");
	free(s);
	s = mf_oauth_authorize_url(&oc, "http://127.0.0.1:5/", "st", "ch",
				   "offline_access");
	assert_non_null(strstr(s, "code_challenge_method=S256"));
	assert_non_null(strstr(s, "redirect_uri=http%3A%2F%2F127.0.0.1%3A5"
				  "%2F"));
	assert_non_null(strstr(s, "login_hint=u"));
	free(s);
	assert_null(mf_oauth_device_refusal(&oc, "offline_access"));
	mf_oauth_cfg_clear(&oc);
	mf_config_free(&cfg);

	cfg = cfg_of("type = gmail\noauth = google\nclient_id = c\n"
		     "client_secret = s\n");
	assert_int_equal(mf_oauth_cfg_from_account(&cfg->accounts[0], &oc,
						   &err), 0);
	s = mf_oauth_login_scope(&oc);
	assert_string_equal(s, "https://www.googleapis.com/auth/gmail.modify");
	{
		char *why = mf_oauth_device_refusal(&oc, s);

		assert_non_null(why);
		assert_non_null(strstr(why, "ssh -L"));
		free(why);
	}
	free(s);
	mf_oauth_cfg_clear(&oc);
	mf_config_free(&cfg);

	cfg = cfg_of("type = gmail\noauth = google\nclient_id = c\n"
		     "delete = expunge\n");
	assert_int_equal(mf_oauth_cfg_from_account(&cfg->accounts[0], &oc,
						   &err), 0);
	s = mf_oauth_login_scope(&oc);
	assert_string_equal(s, "https://mail.google.com/");
	free(s);
	mf_oauth_cfg_clear(&oc);
	mf_config_free(&cfg);

	/* no client_id: a message that points at the README */
	cfg = cfg_of("type = gmail\noauth = google\n");
	assert_int_equal(mf_oauth_cfg_from_account(&cfg->accounts[0], &oc,
						   &err), -EINVAL);
	assert_non_null(strstr(err, "client_id"));
	free(err);
	mf_config_free(&cfg);
}

static void test_config_auth_key(void **state)
{
	struct mf_config *cfg = NULL;
	char *err = NULL;

	(void)state;
	/* oauth IMAP needs no password */
	assert_int_equal(mf_config_parse("t", "[account a]\ntype = imap\n"
					 "host = h\nuser = u\nauth = xoauth2\n"
					 "oauth = google\nclient_id = c\n",
					 &cfg, &err), 0);
	mf_config_free(&cfg);
	assert_true(mf_config_parse("t", "[account a]\ntype = imap\nhost = h"
				    "\nuser = u\nauth = xoauth2\n", &cfg,
				    &err) < 0);
	assert_non_null(strstr(err, "needs \"oauth\""));
	free(err);
	err = NULL;
	assert_true(mf_config_parse("t", "[account a]\ntype = imap\nhost = h"
				    "\nuser = u\nauth = kerberos\noauth = "
				    "google\n", &cfg, &err) < 0);
	assert_non_null(strstr(err, "auth must be"));
	free(err);
}

static void test_token_source_not_signed_in(void **state)
{
	struct mf_config *cfg;
	struct mf_token_source *ts;
	char tmpl[] = "/tmp/mf-oauth-unit-XXXXXX";
	char *dir = mkdtemp(tmpl), *key, *tok = NULL, *err = NULL, *cmd;

	(void)state;
	key = xasprintf("%s/key", dir);
	mf_tokenstore_configure(dir, key, NULL);
	cfg = cfg_of("type = graph\noauth = generic\nclient_id = c\n"
		     "auth_url = http://127.0.0.1:9/a\n"
		     "token_url = http://127.0.0.1:9/t\n");
	ts = mf_token_source_new(&cfg->accounts[0]);
	assert_int_equal(mf_token_get(ts, false, &tok, &err), MF_AUTH);
	assert_null(tok);
	assert_non_null(strstr(err, "run `mailfs-auth login a`"));
	free(err);
	mf_token_source_free(ts);
	mf_config_free(&cfg);
	free(key);
	cmd = xasprintf("rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}


static char *reply(const char *json)
{
	return xasprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json"
			 "\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n"
			 "%s", strlen(json), json);
}

/*
 * The Bearer path of the REST backends: mf_http_call takes the access
 * token from the store's refresh token, renews it before it expires (not
 * after a 401), and saves the rotated refresh token.
 */
static void test_bearer_renewed_ahead(void **state)
{
	char *answers[5];
	struct script s = { .answers = (const char *const *)answers };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	pthread_t th;
	char tmpl[] = "/tmp/mf-oauth-bearer-XXXXXX";
	char *dir = mkdtemp(tmpl), *key, *keys, *url, *err = NULL, *cmd;
	struct mf_config *cfg;
	struct mf_token_record rec = { 0 }, got;
	struct mf_http_opts opts = { .timeout = 5 };
	struct mf_http *h;
	struct mf_http_resp resp;
	struct mf_http_policy pol = { 0 };

	(void)state;
	/* expires_in 1: inside the renewal margin at once */
	answers[0] = reply("{\"access_token\":\"at-one\",\"expires_in\":1,"
			   "\"refresh_token\":\"rt-two\"}");
	answers[1] = reply("{\"value\":1}");
	answers[2] = reply("{\"access_token\":\"at-two\","
			   "\"expires_in\":3600}");
	answers[3] = reply("{\"value\":2}");
	answers[4] = NULL;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.lsock = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(s.lsock, (struct sockaddr *)&sin, sizeof(sin)),
			 0);
	assert_int_equal(listen(s.lsock, 4), 0);
	getsockname(s.lsock, (struct sockaddr *)&sin, &sl);
	pthread_create(&th, NULL, serve, &s);

	key = xasprintf("%s/key", dir);
	mf_tokenstore_configure(dir, key, NULL);
	rec.provider = "generic";
	rec.client_id = "cid";
	rec.refresh_token = "rt-one";
	assert_int_equal(mf_tokenstore_save("g", &rec, &err), 0);
	keys = xasprintf("[account g]\ntype = graph\noauth = generic\n"
			 "client_id = cid\nauth_url = http://127.0.0.1:%u/a\n"
			 "token_url = http://127.0.0.1:%u/token\n",
			 (unsigned int)ntohs(sin.sin_port),
			 (unsigned int)ntohs(sin.sin_port));
	assert_int_equal(mf_config_parse("t", keys, &cfg, &err), 0);
	free(keys);
	pol.tokens = mf_token_source_new(&cfg->accounts[0]);
	url = xasprintf("http://127.0.0.1:%u/v1.0/me/messages",
			(unsigned int)ntohs(sin.sin_port));
	struct mf_http_req req = { .method = "GET", .url = url,
				   .body_fd = -1, .out_fd = -1 };

	h = mf_http_new(&opts, &err);
	mf_http_resp_init(&resp);
	assert_int_equal(mf_http_call(h, &pol, &req, &resp, &err), MF_OK);
	assert_int_equal(resp.status, 200);
	assert_int_equal(mf_http_call(h, &pol, &req, &resp, &err), MF_OK);
	assert_string_equal(resp.body.data, "{\"value\":2}");
	pthread_join(th, NULL);
	assert_int_equal(s.served, 4);
	assert_non_null(strstr(s.reqs[0], "POST /token"));
	assert_non_null(strstr(s.reqs[0], "grant_type=refresh_token"));
	assert_non_null(strstr(s.reqs[0], "refresh_token=rt-one"));
	assert_non_null(strstr(s.reqs[1], "Authorization: Bearer at-one"));
	/* renewed before use, with the rotated refresh token */
	assert_non_null(strstr(s.reqs[2], "refresh_token=rt-two"));
	assert_non_null(strstr(s.reqs[3], "Authorization: Bearer at-two"));
	assert_int_equal(mf_tokenstore_load("g", &got, &err), 0);
	assert_string_equal(got.refresh_token, "rt-two");
	mf_token_record_clear(&got);

	mf_http_resp_free(&resp);
	mf_http_free(h);
	mf_token_source_free(pol.tokens);
	mf_config_free(&cfg);
	close(s.lsock);
	for (int i = 0; i < 4; i++)
		free(answers[i]);
	free(url);
	free(key);
	cmd = xasprintf("rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pkce_rfc7636_vector),
		cmocka_unit_test(test_pkce_verifier_alphabet),
		cmocka_unit_test(test_sasl_strings),
		cmocka_unit_test(test_scopes),
		cmocka_unit_test(test_config_auth_key),
		cmocka_unit_test(test_token_source_not_signed_in),
		cmocka_unit_test(test_bearer_renewed_ahead),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
