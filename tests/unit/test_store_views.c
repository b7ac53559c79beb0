/*
 * The store's side of views (cache/meta_views.c): header lines kept from
 * listings, listings across folders, and the relist when a view needs a
 * header field the store has not kept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_store.h"
#include "mf_store_views.h"
#include "mf_util.h"

#include "store_fixture.h"

static int64_t folder_id(const char *account, const char *name)
{
	struct mf_folder f;
	int64_t root, id;

	assert_int_equal(mf_store_account_root(account, &root), 0);
	memset(&f, 0, sizeof(f));
	assert_int_equal(mf_store_folder_lookup(root, name, &f), 0);
	id = f.id;
	mf_folder_clear(&f);
	return id;
}

static struct mf_change upsert(const char *uid, unsigned int flags,
			       const char *headers)
{
	struct mf_change ch;

	memset(&ch, 0, sizeof(ch));
	ch.kind = MF_CHANGE_UPSERT;
	ch.msg.id = uid;
	ch.msg.flags = flags;
	ch.msg.has_meta = true;
	ch.msg.size = 100 + strlen(uid);
	ch.msg.size_exact = true;
	ch.msg.internaldate = 1700000000;
	ch.msg.headers = headers;
	return ch;
}

struct seen {
	int64_t id[16];
	char *name[16];
	char *fields[16];
	char *where[16];	/* account/path */
	unsigned int attrs[16];
	unsigned int n;
};

static int collect(void *ctx, const struct mf_view_msg *vm)
{
	struct seen *s = ctx;

	assert_true(s->n < 16);
	s->id[s->n] = vm->m->id;
	s->name[s->n] = xstrdup(vm->m->name);
	s->fields[s->n] = vm->fields ? xstrdup(vm->fields) : NULL;
	s->where[s->n] = xasprintf("%s/%s", vm->account, vm->path);
	s->attrs[s->n] = vm->attrs;
	s->n++;
	return 0;
}

static void seen_clear(struct seen *s)
{
	for (unsigned int i = 0; i < s->n; i++) {
		free(s->name[i]);
		free(s->fields[i]);
		free(s->where[i]);
	}
	memset(s, 0, sizeof(*s));
}

static void test_headers_and_listings(void **state)
{
	struct mf_remote_folder fl[] = {
		{ "INBOX", "INBOX", MF_FOLDER_INBOX, NULL },
		{ "Trash", "Trash", MF_FOLDER_TRASH, NULL },
	};
	struct mf_change chs[3];
	struct seen s;
	int64_t inbox, trash;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_int_equal(mf_store_apply_folder_list("v", fl, 2), 0);
	assert_int_equal(mf_store_apply_folder_list("w", fl, 1), 0);
	inbox = folder_id("v", "INBOX");
	trash = folder_id("v", "Trash");
	chs[0] = upsert("1", MF_FLAG_SEEN, "List-Id: <l.x>\r\n");
	chs[1] = upsert("2", MF_FLAG_SEEN, NULL);
	chs[2] = upsert("3", 0, "From: a@b\r\n");
	apply(inbox, true, false, chs, 3, "c1");
	chs[0] = upsert("1", MF_FLAG_SEEN, "List-Id: <t.x>\r\n");
	apply(trash, true, false, chs, 1, "c1");
	chs[0] = upsert("1", MF_FLAG_SEEN, "List-Id: <w.x>\r\n");
	apply(folder_id("w", "INBOX"), true, false, chs, 1, "c1");

	/* cur/ of every folder of every account, in id order. */
	assert_int_equal(mf_store_view_scan(MF_DIR_CUR, 0, collect, &s), 0);
	assert_int_equal(s.n, 4);
	assert_string_equal(s.where[0], "v/INBOX");
	assert_string_equal(s.fields[0], "List-Id: <l.x>\r\n");
	assert_null(s.fields[1]);
	assert_string_equal(s.where[2], "v/Trash");
	assert_true(s.attrs[2] & MF_FOLDER_TRASH);
	assert_string_equal(s.where[3], "w/INBOX");
	assert_true(s.id[0] < s.id[1] && s.id[1] < s.id[2]);
	{
		/* From an id on (readdir's cookie). */
		int64_t from = s.id[2];
		char *name = xstrdup(s.name[0]);

		seen_clear(&s);
		assert_int_equal(mf_store_view_scan(MF_DIR_CUR, from, collect,
						    &s), 0);
		assert_int_equal(s.n, 2);
		seen_clear(&s);
		/* By name. */
		assert_int_equal(mf_store_view_find(MF_DIR_CUR, name, collect,
						    &s), 0);
		assert_int_equal(s.n, 1);
		assert_string_equal(s.where[0], "v/INBOX");
		seen_clear(&s);
		assert_int_equal(mf_store_view_find(MF_DIR_NEW, name, collect,
						    &s), 0);
		assert_int_equal(s.n, 0);
		free(name);
	}
	assert_int_equal(mf_store_view_scan(MF_DIR_NEW, 0, collect, &s), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.fields[0], "From: a@b\r\n");
	seen_clear(&s);

	/* A later listing with other lines replaces them. */
	chs[0] = upsert("1", MF_FLAG_SEEN, "List-Id: <new.x>\r\n");
	chs[1] = upsert("2", MF_FLAG_SEEN, "List-Id: <two.x>\r\n");
	chs[2] = upsert("3", 0, "From: a@b\r\n");
	apply(inbox, true, false, chs, 3, "c2");
	assert_int_equal(mf_store_view_scan(MF_DIR_CUR, 0, collect, &s), 0);
	assert_string_equal(s.fields[0], "List-Id: <new.x>\r\n");
	assert_string_equal(s.fields[1], "List-Id: <two.x>\r\n");
	seen_clear(&s);
	assert_true(mf_store_view_mtime(MF_DIR_CUR) > 0);
}

static void test_fields_relist(void **state)
{
	struct mf_remote_folder fl[] = {
		{ "INBOX", "INBOX", MF_FOLDER_INBOX, NULL },
	};
	struct mf_change ch = upsert("1", 0, NULL);
	struct mf_folder f;
	int64_t inbox;
	bool relist;

	(void)state;
	assert_int_equal(mf_store_apply_folder_list("r", fl, 1), 0);
	inbox = folder_id("r", "INBOX");
	apply(inbox, true, false, &ch, 1, "cursor-1");
	/* No views: nothing to do. */
	assert_int_equal(mf_store_view_fields_check("r", NULL, &relist), 0);
	assert_false(relist);
	/* A view appears: the folder loses its cursor (full listing). */
	assert_int_equal(mf_store_view_fields_check("r", "LIST-ID FROM",
						    &relist), 0);
	assert_true(relist);
	memset(&f, 0, sizeof(f));
	assert_int_equal(mf_store_folder_get(inbox, &f), 0);
	assert_null(f.cursor);
	mf_folder_clear(&f);
	apply(inbox, true, false, &ch, 1, "cursor-2");
	/* The same fields, or fewer: no relist. */
	assert_int_equal(mf_store_view_fields_check("r", "LIST-ID FROM",
						    &relist), 0);
	assert_false(relist);
	assert_int_equal(mf_store_view_fields_check("r", "FROM", &relist), 0);
	assert_false(relist);
	/* A field not kept since the last check: relist again. */
	assert_int_equal(mf_store_view_fields_check("r", "FROM LIST-ID",
						    &relist), 0);
	assert_true(relist);
	apply(inbox, true, false, &ch, 1, "cursor-3");
	assert_int_equal(mf_store_view_fields_check("r", NULL, &relist), 0);
	assert_false(relist);
	memset(&f, 0, sizeof(f));
	assert_int_equal(mf_store_folder_get(inbox, &f), 0);
	assert_string_equal(f.cursor, "cursor-3");
	mf_folder_clear(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_headers_and_listings),
		cmocka_unit_test(test_fields_relist),
	};

	mf_log_init("test", false, MF_LOG_ERR, 0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
