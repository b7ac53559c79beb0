/*
 * Utilities: buffers, number parsing, the password command runner.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mf_util.h"

static void test_buf(void **state)
{
	struct mf_buf b;
	char *s;

	(void)state;
	mf_buf_init(&b);
	mf_buf_reserve(&b, 10);
	/* Terminated from the first allocation on. */
	assert_string_equal(b.data, "");
	s = mf_buf_steal(&b);
	assert_string_equal(s, "");
	free(s);
	assert_null(b.data);

	mf_buf_appends(&b, "hello");
	mf_buf_printf(&b, " %d %s", 42, "x");
	assert_string_equal(b.data, "hello 42 x");
	mf_buf_consume(&b, 6);
	assert_string_equal(b.data, "42 x");
	for (int i = 0; i < 1000; i++)
		mf_buf_appendc(&b, 'a');
	assert_int_equal(b.len, 1004);
	assert_int_equal(b.data[b.len], '\0');
	mf_buf_consume(&b, 5000);
	assert_int_equal(b.len, 0);
	mf_buf_free(&b);
}

static void test_parse_u64(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(mf_parse_u64("0", 1, UINT64_MAX, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(mf_parse_u64("18446744073709551615", 20, UINT64_MAX,
				      &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(mf_parse_u64("18446744073709551616", 20, UINT64_MAX,
				      &v), -ERANGE);
	assert_int_equal(mf_parse_u64("9223372036854775808", 19, INT64_MAX,
				      &v), -ERANGE);
	assert_int_equal(mf_parse_u64("", 0, 10, &v), -EINVAL);
	assert_int_equal(mf_parse_u64("-1", 2, 10, &v), -EINVAL);
	assert_int_equal(mf_parse_u64("1 ", 2, 10, &v), -EINVAL);
	assert_int_equal(mf_parse_u64("11", 2, 10, &v), -ERANGE);
}

static void test_command(void **state)
{
	char *out = NULL, *err = NULL;

	(void)state;
	assert_int_equal(mf_run_command_line("printf 'a b\\r\\nc'", &out,
					     &err), 0);
	assert_string_equal(out, "a b");
	free(out);
	assert_int_equal(mf_run_command_line("true", &out, &err), 0);
	assert_string_equal(out, "");
	free(out);
	/* No standard input: a command that reads it sees EOF at once. */
	assert_int_equal(mf_run_command_line("cat; echo done", &out, &err),
			 0);
	assert_string_equal(out, "done");
	free(out);
	assert_true(mf_run_command_line("exit 7", &out, &err) < 0);
	assert_non_null(strstr(err, "status 7"));
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_command),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
