/*
 * The Gmail backend's parsers: the batch answer (multipart/mixed of HTTP
 * responses, matched by Content-ID) and base64url bodies, with hostile
 * input: nothing may crash, read out of bounds, or answer a call twice.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../net/gmail_backend.h"

#define N 4

static void parse(const char *ctype, const char *body, long *st, char **b)
{
	/* A copy without a terminating NUL: the parser must use len. */
	size_t len = strlen(body);
	char *copy = malloc(len ? len : 1);

	memcpy(copy, body, len);
	memset(st, 0, N * sizeof(*st));
	gmail_batch_parse(ctype, copy, len, N, st, b);
	free(copy);
}

static void free_bodies(char **b)
{
	for (int i = 0; i < N; i++)
		free(b[i]);
}

static void test_batch_good(void **state)
{
	long st[N];
	char *b[N];
	const char *body =
		"--batch_x\r\nContent-Type: application/http\r\n"
		"Content-ID: <response-item2>\r\n\r\nHTTP/1.1 200 OK\r\n"
		"Content-Type: application/json\r\n\r\n{\"id\":\"b\"}\r\n"
		"--batch_x\r\nContent-Type: application/http\r\n"
		"Content-ID: <response-item0>\r\n\r\nHTTP/1.1 404 Not Found\r\n"
		"\r\n{\"error\":{}}\r\n"
		"--batch_x\r\nContent-ID: <response-item0>\r\n\r\n"
		"HTTP/1.1 200 OK\r\n\r\nsecond answer ignored\r\n"
		"--batch_x--\r\n";

	(void)state;
	parse("multipart/mixed; boundary=batch_x", body, st, b);
	assert_int_equal(st[0], 404);
	assert_int_equal(st[1], 0);
	assert_int_equal(st[2], 200);
	assert_int_equal(st[3], 0);
	assert_string_equal(b[2], "{\"id\":\"b\"}");
	assert_string_equal(b[0], "{\"error\":{}}");
	assert_null(b[1]);
	free_bodies(b);
	/* quoted boundary, bare LF line ends */
	parse("multipart/mixed; charset=x; boundary=\"q q\"",
	      "--q q\nContent-ID: <response-item3>\n\nHTTP/1.1 429 Too Many\n\n"
	      "{}\n--q q--\n", st, b);
	assert_int_equal(st[3], 429);
	assert_string_equal(b[3], "{}");
	free_bodies(b);
}

static void test_batch_hostile(void **state)
{
	static const char *const bodies[] = {
		"",
		"--b",
		"--b\r\n",
		"--b\r\nContent-ID: <response-item1>",
		"--b\r\nContent-ID: <response-item1>\r\n\r\n",
		"--b\r\nContent-ID: <response-item1>\r\n\r\nHTTP/1.1",
		"--b\r\nContent-ID: <response-item1>\r\n\r\nHTTP/1.1 ",
		"--b\r\nContent-ID: <response-item1>\r\n\r\nHTTP/1.1 999 X\r\n\r\n",
		"--b\r\nContent-ID: <response-item1>\r\n\r\nHTTP/1.1 20",
		"--b\r\nContent-ID: <response-item99999999999999999999>\r\n\r\n"
		"HTTP/1.1 200 OK\r\n\r\n{}",
		"--b\r\nContent-ID: <response-item4>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"--b\r\nContent-ID: <response-item-1>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"--b\r\nContent-ID: <item1>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"--b\r\nContent-ID: <response-item1x>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"--b\r\nContent-ID:\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"--b--",
		"garbage --b garbage --b-- --b",
		"\r\n\r\n\r\n--b\r\n\r\n\r\n--b\r\n\r\n",
	};
	long st[N];
	char *b[N];

	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(*bodies); i++) {
		parse("multipart/mixed; boundary=b", bodies[i], st, b);
		for (int k = 0; k < N; k++)
			assert_int_equal(st[k], 0);
		free_bodies(b);
	}
	/* no boundary at all */
	assert_int_equal(gmail_batch_parse("application/json", "{}", 2, N, st, b), -1);
	free_bodies(b);
	assert_int_equal(gmail_batch_parse(NULL, "", 0, N, st, b), -1);
	free_bodies(b);
	assert_int_equal(gmail_batch_parse("multipart/mixed; boundary=", "", 0, N, st, b), -1);
	free_bodies(b);
}

static void test_b64url(void **state)
{
	char path[] = "/tmp/mailfs-test-gmail-XXXXXX";
	int fd = mkstemp(path);
	uint64_t size = 0;
	char buf[64];

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	/* "Hi?>" in base64url, without and with padding and line breaks */
	assert_int_equal(gmail_b64url_write("SGk_Pg", 6, fd, 0, &size), 0);
	assert_int_equal(size, 4);
	assert_int_equal(gmail_b64url_write("SGk_\r\nPg==", 10, fd, 0, &size), 0);
	assert_int_equal(size, 4);
	assert_int_equal(pread(fd, buf, sizeof(buf), 0), 8);
	assert_memory_equal(buf, "Hi?>Hi?>", 8);
	assert_int_equal(gmail_b64url_write("SGk*Pg", 6, fd, 0, &size), -EINVAL);
	assert_int_equal(gmail_b64url_write("SGk_Pg", 6, fd, 3, &size), -EFBIG);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_good),
		cmocka_unit_test(test_batch_hostile),
		cmocka_unit_test(test_b64url),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
