/*
 * The HTTP layer: escaping, status mapping, the plaintext rule, the token
 * source, and the retry policy against a scripted server on loopback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mf_config.h"
#include "mf_http.h"
#include "script_server.h"

static void test_escape(void **state)
{
	char *s = mf_http_escape("a b/c?d=é~_.-");

	(void)state;
	assert_string_equal(s, "a%20b%2Fc%3Fd%3D%C3%A9~_.-");
	free(s);
}

static void test_status_map(void **state)
{
	(void)state;
	assert_int_equal(mf_http_status_of(200), MF_OK);
	assert_int_equal(mf_http_status_of(204), MF_OK);
	assert_int_equal(mf_http_status_of(401), MF_AUTH);
	assert_int_equal(mf_http_status_of(404), MF_GONE);
	assert_int_equal(mf_http_status_of(410), MF_GONE);
	assert_int_equal(mf_http_status_of(429), MF_TEMP);
	assert_int_equal(mf_http_status_of(503), MF_TEMP);
	assert_int_equal(mf_http_status_of(400), MF_PROTO);
}

static void test_plaintext_refused(void **state)
{
	struct mf_http_opts opts = { .timeout = 2 };
	struct mf_http_req req = { .method = "GET",
				   .url = "http://mail.example.com/x",
				   .body_fd = -1, .out_fd = -1 };
	struct mf_http_resp resp;
	struct mf_http *h;
	char *err = NULL;

	(void)state;
	h = mf_http_new(&opts, &err);
	assert_non_null(h);
	mf_http_resp_init(&resp);
	assert_int_equal(mf_http_do(h, &req, &resp, &err), MF_PROTO);
	assert_non_null(strstr(err, "allow_plaintext"));
	free(err);
	err = NULL;
	/* Not a URL scheme we speak at all. */
	req.url = "file:///etc/passwd";
	assert_int_equal(mf_http_do(h, &req, &resp, &err), MF_PROTO);
	free(err);
	assert_int_equal(mf_http_requests(h), 0);
	mf_http_resp_free(&resp);
	mf_http_free(h);
}

static struct mf_config *config_with(const char *account_keys)
{
	struct mf_config *cfg = NULL;
	char *err = NULL;
	char *text = xasprintf("[account t]\ntype = graph\n%s", account_keys);

	assert_int_equal(mf_config_parse("test", text, &cfg, &err), 0);
	free(text);
	return cfg;
}

static void test_token_command(void **state)
{
	char dir[] = "/tmp/mf-http-XXXXXX";
	char *keys, *tok = NULL, *err = NULL;
	struct mf_config *cfg;
	struct mf_token_source *ts;

	(void)state;
	assert_non_null(mkdtemp(dir));
	/* The command counts its runs, so a refresh must run it again. */
	keys = xasprintf("token_command = echo x >> %s/n; "
			 "echo tok$(wc -l < %s/n)\n", dir, dir);
	cfg = config_with(keys);
	ts = mf_token_source_new(&cfg->accounts[0]);
	assert_int_equal(mf_token_get(ts, false, &tok, &err), MF_OK);
	assert_string_equal(tok, "tok1");
	free(tok);
	assert_int_equal(mf_token_get(ts, false, &tok, &err), MF_OK);
	assert_string_equal(tok, "tok1");	/* cached */
	free(tok);
	assert_int_equal(mf_token_get(ts, true, &tok, &err), MF_OK);
	assert_string_equal(tok, "tok2");	/* ran again */
	free(tok);
	mf_token_source_free(ts);
	mf_config_free(&cfg);
	free(keys);

	cfg = config_with("token_command = exit 3\n");
	ts = mf_token_source_new(&cfg->accounts[0]);
	assert_int_equal(mf_token_get(ts, false, &tok, &err), MF_AUTH);
	assert_non_null(strstr(err, "token_command"));
	free(err);
	mf_token_source_free(ts);
	mf_config_free(&cfg);

	keys = xasprintf("rm -rf %s", dir);
	assert_int_equal(system(keys), 0);
	free(keys);
}


static void on_retry(void *ctx, long status, unsigned int delay_ms)
{
	int *retries = ctx;

	(*retries)++;
}

static void test_retry_policy(void **state)
{
	static const char *const answers[] = {
		"HTTP/1.1 429 Too Many\r\nRetry-After: 0\r\n"
		"Content-Length: 0\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
		"Connection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
		"Connection: close\r\n\r\nhello",
		NULL,
	};
	struct script s = { .answers = answers };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	pthread_t th;
	char dir[] = "/tmp/mf-http-XXXXXX";
	char *keys, *url, *err = NULL;
	struct mf_config *cfg;
	struct mf_http_opts opts = { .timeout = 5 };
	struct mf_http *h;
	struct mf_http_resp resp;
	int retries = 0;

	(void)state;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.lsock = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s.lsock >= 0);
	assert_int_equal(bind(s.lsock, (struct sockaddr *)&sin, sizeof(sin)),
			 0);
	assert_int_equal(listen(s.lsock, 4), 0);
	getsockname(s.lsock, (struct sockaddr *)&sin, &sl);
	pthread_create(&th, NULL, serve, &s);

	assert_non_null(mkdtemp(dir));
	keys = xasprintf("token_command = echo x >> %s/n; "
			 "echo tok$(wc -l < %s/n)\n", dir, dir);
	cfg = config_with(keys);
	free(keys);

	struct mf_http_policy pol = {
		.tokens = mf_token_source_new(&cfg->accounts[0]),
		.on_retry = on_retry,
		.ctx = &retries,
	};
	url = xasprintf("http://127.0.0.1:%u/v1.0/me",
			(unsigned int)ntohs(sin.sin_port));
	struct mf_http_req req = { .method = "GET", .url = url,
				   .body_fd = -1, .out_fd = -1 };

	h = mf_http_new(&opts, &err);
	mf_http_resp_init(&resp);
	/* 429 -> retried after Retry-After; 401 -> new token; 200. */
	assert_int_equal(mf_http_call(h, &pol, &req, &resp, &err), MF_OK);
	assert_int_equal(resp.status, 200);
	assert_string_equal(resp.body.data, "hello");
	assert_int_equal(retries, 1);
	assert_int_equal(mf_http_requests(h), 3);
	pthread_join(th, NULL);
	assert_int_equal(s.served, 3);
	assert_string_equal(s.last_auth, "tok2");

	mf_http_resp_free(&resp);
	mf_http_free(h);
	mf_token_source_free(pol.tokens);
	mf_config_free(&cfg);
	close(s.lsock);
	free(url);
	keys = xasprintf("rm -rf %s", dir);
	assert_int_equal(system(keys), 0);
	free(keys);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_status_map),
		cmocka_unit_test(test_plaintext_refused),
		cmocka_unit_test(test_token_command),
		cmocka_unit_test(test_retry_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
