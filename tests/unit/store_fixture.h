/*
 * The unit tests' store: a fresh one in a temporary directory for each
 * test (cmocka setup and teardown), shared by test_store.c and
 * test_store_views.c.
 */
#ifndef MF_TEST_STORE_FIXTURE_H
#define MF_TEST_STORE_FIXTURE_H

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

#endif
