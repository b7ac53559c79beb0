/*
 * The unit tests' store: a fresh one in a temporary directory for each
 * test (cmocka setup and teardown), shared by test_store.c and
 * test_store_views.c.
 */
#ifndef MF_TEST_STORE_FIXTURE_H
#define MF_TEST_STORE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "mf_store.h"
#include "mf_util.h"

static char *state_dir;

static int setup(void **state)
{
	char tmpl[] = "/tmp/mailfs-store-XXXXXX";
	char *err = NULL;

	(void)state;
	state_dir = xstrdup(mkdtemp(tmpl));
	if (mf_store_open(state_dir, &err) < 0) {
		fprintf(stderr, "%s\n", err);
		free(err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char *cmd;
	int r;

	(void)state;
	mf_store_close();
	cmd = xasprintf("rm -rf '%s'", state_dir);
	r = system(cmd);
	(void)r;
	free(cmd);
	free(state_dir);
	return 0;
}

/* One listing of folder: a batch of chs, ending with cursor. */
static void apply(int64_t folder, bool snapshot, bool reset,
		  const struct mf_change *chs, unsigned int n,
		  const char *cursor)
{
	struct mf_changes_info info = { snapshot, reset };
	struct mf_sync_batch *b;

	assert_int_equal(mf_sync_batch_begin(folder, &info, &b), 0);
	for (unsigned int i = 0; i < n; i++)
		assert_int_equal(mf_sync_batch_change(b, &chs[i]), 0);
	assert_int_equal(mf_sync_batch_end(&b, cursor, true), 0);
}

#endif
