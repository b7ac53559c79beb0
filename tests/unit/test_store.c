/*
 * The store and the write-back queue, driven the way the engine and the
 * FUSE side drive them: listings in, local changes, queue entries out.
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

#include "../../cache/blob_private.h"
#include "mf_store.h"
#include "mf_util.h"

#include "store_fixture.h"

/* A folder list with INBOX, Trash, Archive/2024 (Archive virtual). */
static int64_t list_folders(const char *account)
{
	struct mf_remote_folder fl[] = {
		{ "INBOX", "INBOX", MF_FOLDER_INBOX },
		{ "Trash", "Trash", MF_FOLDER_TRASH },
		{ "Archive/2024", "Archive/2024", 0 },
	};
	struct mf_folder f;
	int64_t root, inbox;

	assert_int_equal(mf_store_apply_folder_list(account, fl, 3), 0);
	assert_int_equal(mf_store_account_root(account, &root), 0);
	memset(&f, 0, sizeof(f));
	assert_int_equal(mf_store_folder_lookup(root, "INBOX", &f), 0);
	inbox = f.id;
	assert_string_equal(f.remote, "INBOX");
	assert_int_equal(f.subdirs, MF_SUBDIR_ALL);
	mf_folder_clear(&f);
	return inbox;
}

static struct mf_change upsert(const char *uid, unsigned int flags,
			       uint64_t size, const char *msgid)
{
	struct mf_change ch;

	memset(&ch, 0, sizeof(ch));
	ch.kind = MF_CHANGE_UPSERT;
	ch.msg.id = uid;
	ch.msg.flags = flags;
	ch.msg.has_meta = true;
	ch.msg.size = size;
	ch.msg.size_exact = true;
	ch.msg.internaldate = 1700000000 + (int64_t)size;
	ch.msg.message_id = msgid;
	return ch;
}

struct names {
	char *name[64];
	uint64_t ino[64];
	unsigned int n;
};

static int collect(void *ctx, const char *name, uint64_t ino,
		   const struct mf_message *row, uint64_t next)
{
	struct names *nm = ctx;

	nm->name[nm->n] = xstrdup(name);
	nm->ino[nm->n] = ino;
	assert_non_null(row);
	assert_int_equal(row->id, (int64_t)ino);
	nm->n++;
	return 0;
}

static void names_free(struct names *nm)
{
	for (unsigned int i = 0; i < nm->n; i++)
		free(nm->name[i]);
	nm->n = 0;
}

static unsigned int count_dir(int64_t folder, int dir)
{
	uint64_t n = 0;

	assert_int_equal(mf_store_count_messages(folder, dir, &n), 0);
	return (unsigned int)n;
}

static int queue_ops(const char *account, int *ops, unsigned int max)
{
	struct mf_queue_entry q;
	unsigned int n = 0;

	/* Read the queue in order by draining it into ops[]. */
	memset(&q, 0, sizeof(q));
	while (n < max && mf_store_queue_first(account, &q) == 0) {
		ops[n++] = q.op;
		assert_int_equal(mf_store_queue_done(q.id), 0);
		mf_queue_entry_clear(&q);
	}
	return (int)n;
}

static void test_listing_and_names(void **state)
{
	struct mf_change chs[3];
	struct names nm = { .n = 0 };
	struct mf_message m;
	struct mf_folder f;
	int64_t inbox, root;

	(void)state;
	inbox = list_folders("a");
	chs[0] = upsert("1", MF_FLAG_SEEN, 100, "<1@x>");
	chs[1] = upsert("2", 0, 200, "<2@x>");
	chs[2] = upsert("3", MF_FLAG_FLAGGED | MF_FLAG_SEEN, 300, NULL);
	apply(inbox, true, false, chs, 3, "1:1:4:3");
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 2);
	assert_int_equal(count_dir(inbox, MF_DIR_NEW), 1);

	assert_int_equal(mf_store_list_messages(inbox, MF_DIR_CUR, 0, collect,
						&nm), 0);
	assert_int_equal(nm.n, 2);
	/* <date>.M<inode>.mailfs,S=<size>:2,<flags> */
	{
		char want[128];

		snprintf(want, sizeof(want), "1700000100.M%llu.mailfs,S=100:2,S",
			 (unsigned long long)nm.ino[0]);
		assert_string_equal(nm.name[0], want);
		snprintf(want, sizeof(want),
			 "1700000300.M%llu.mailfs,S=300:2,FS",
			 (unsigned long long)nm.ino[1]);
		assert_string_equal(nm.name[1], want);
	}
	assert_true(nm.ino[0] > 1000);
	memset(&m, 0, sizeof(m));
	assert_int_equal(mf_store_message_get((int64_t)nm.ino[0], &m), 0);
	assert_int_equal(m.size, 100);
	assert_int_equal(m.internaldate, 1700000100);
	assert_string_equal(m.ruid, "1");
	assert_string_equal(m.msgid, "<1@x>");
	mf_message_clear(&m);
	names_free(&nm);

	/* The cursor is kept; Archive is a virtual parent of 2024. */
	memset(&f, 0, sizeof(f));
	assert_int_equal(mf_store_folder_get(inbox, &f), 0);
	assert_string_equal(f.cursor, "1:1:4:3");
	mf_folder_clear(&f);
	assert_int_equal(mf_store_account_root("a", &root), 0);
	assert_int_equal(mf_store_folder_lookup(root, "Archive", &f), 0);
	assert_int_equal(f.state, MF_FOLDER_VIRTUAL);
	assert_int_equal(f.nchildren, 0);	/* not set by lookup */
	{
		int64_t archive = f.id;

		mf_folder_clear(&f);
		assert_int_equal(mf_store_folder_get(archive, &f), 0);
	}
	assert_int_equal(f.nchildren, 1);
	mf_folder_clear(&f);
}

static void test_flags_merge_and_queue(void **state)
{
	struct mf_change ch;
	struct mf_message m;
	int ops[8];
	int64_t inbox;
	char newname[256];

	(void)state;
	inbox = list_folders("b");
	ch = upsert("7", MF_FLAG_SEEN, 70, "<7@x>");
	apply(inbox, true, false, &ch, 1, "1:1:8:1");
	memset(&m, 0, sizeof(m));
	assert_int_equal(mf_store_message_lookup(inbox, MF_DIR_CUR,
						 "1700000070.M", &m),
			 -ENOENT);
	{
		struct names nm = { .n = 0 };

		mf_store_list_messages(inbox, MF_DIR_CUR, 0, collect, &nm);
		assert_int_equal(nm.n, 1);
		assert_int_equal(mf_store_message_get((int64_t)nm.ino[0], &m),
				 0);
		names_free(&nm);
	}
	/* Local rename adding F: one FLAGS entry, flags = FS, base = S. */
	snprintf(newname, sizeof(newname), "%.*s:2,FS",
		 (int)(strchr(m.name, ':') - m.name), m.name);
	assert_int_equal(mf_store_rename_message(m.id, m.name, inbox,
						 MF_DIR_CUR, newname, false,
						 m.size),
			 0);
	/* A second rename coalesces into the same entry. */
	assert_int_equal(mf_store_rename_message(m.id, newname, inbox,
						 MF_DIR_CUR, newname, false,
						 m.size),
			 0);
	mf_message_clear(&m);
	{
		struct names nm = { .n = 0 };

		mf_store_list_messages(inbox, MF_DIR_CUR, 0, collect, &nm);
		assert_int_equal(mf_store_message_get((int64_t)nm.ino[0], &m),
				 0);
		names_free(&nm);
	}
	assert_int_equal(m.flags, MF_FLAG_FLAGGED | MF_FLAG_SEEN);
	assert_int_equal(m.base_flags, MF_FLAG_SEEN);

	/*
	 * The server meanwhile adds R and removes S. Merge: F (changed
	 * locally) stays, R comes in, S goes (only the server changed it).
	 */
	ch = upsert("7", MF_FLAG_REPLIED, 70, "<7@x>");
	ch.msg.has_meta = false;
	apply(inbox, false, false, &ch, 1, "1:2:8:1");
	{
		int64_t id = m.id;

		mf_message_clear(&m);
		assert_int_equal(mf_store_message_get(id, &m), 0);
	}
	assert_int_equal(m.flags, MF_FLAG_FLAGGED | MF_FLAG_REPLIED);
	assert_int_equal(m.base_flags, MF_FLAG_REPLIED);
	assert_non_null(strstr(m.name, ":2,FR"));
	mf_message_clear(&m);

	assert_int_equal(queue_ops("b", ops, 8), 1);
	assert_int_equal(ops[0], MF_OP_FLAGS);
}

static void test_move_unlink_and_trash(void **state)
{
	struct mf_change chs[2];
	struct names nm = { .n = 0 };
	struct mf_message m;
	struct mf_folder trash;
	int ops[8];
	int64_t inbox, root;

	(void)state;
	inbox = list_folders("c");
	assert_int_equal(mf_store_account_root("c", &root), 0);
	memset(&trash, 0, sizeof(trash));
	assert_int_equal(mf_store_folder_lookup(root, "Trash", &trash), 0);
	chs[0] = upsert("1", MF_FLAG_SEEN, 10, "<a@x>");
	chs[1] = upsert("2", MF_FLAG_SEEN, 20, "<b@x>");
	apply(inbox, true, false, chs, 2, "1:1:3:2");
	mf_store_list_messages(inbox, MF_DIR_CUR, 0, collect, &nm);
	assert_int_equal(nm.n, 2);

	/* unlink with delete = trash: a MOVE to Trash, same inode. */
	assert_int_equal(mf_store_unlink_message(inbox, MF_DIR_CUR,
						 nm.name[0], MF_DELETE_TRASH),
			 0);
	memset(&m, 0, sizeof(m));
	assert_int_equal(mf_store_message_get((int64_t)nm.ino[0], &m), 0);
	assert_int_equal(m.folder, trash.id);
	assert_int_equal(m.rfolder, inbox);	/* still there on the server */
	assert_int_equal(m.state, MF_MSG_MOVING);
	mf_message_clear(&m);

	/* unlink with delete = expunge: hidden, EXPUNGE queued. */
	assert_int_equal(mf_store_unlink_message(inbox, MF_DIR_CUR,
						 nm.name[1], MF_DELETE_EXPUNGE),
			 0);
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 0);
	assert_int_equal(mf_store_message_lookup(inbox, MF_DIR_CUR, nm.name[1],
						 &m),
			 -ENOENT);

	/*
	 * A listing of INBOX before the queue ran still shows both: neither
	 * may come back as new mail.
	 */
	apply(inbox, true, false, chs, 2, "1:1:3:2");
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 0);
	assert_int_equal(count_dir(trash.id, MF_DIR_CUR), 1);

	assert_int_equal(queue_ops("c", ops, 8), 2);
	assert_int_equal(ops[0], MF_OP_MOVE);
	assert_int_equal(ops[1], MF_OP_EXPUNGE);
	names_free(&nm);
	mf_folder_clear(&trash);
}

static void test_delivery_and_rematch(void **state)
{
	struct mf_message m;
	struct mf_change ch;
	struct mf_queue_entry q;
	int64_t inbox;
	int ops[4];

	(void)state;
	inbox = list_folders("d");
	memset(&m, 0, sizeof(m));
	assert_int_equal(mf_store_tmp_create(inbox, "123.x.host", mf_now_ns(),
					     &m),
			 0);
	assert_int_equal(mf_store_tmp_create(inbox, "123.x.host", mf_now_ns(),
					     &m),
			 -EEXIST);
	assert_int_equal(m.state, MF_MSG_TMP);
	assert_int_equal(mf_store_set_mtime(m.id, 1600000000), 0);
	/* link(tmp/X, new/X) then unlink(tmp/X): Python's mailbox way. */
	assert_int_equal(mf_store_link_message(m.id, inbox, MF_DIR_NEW,
					       "123.x.host", 55),
			 0);
	{
		struct mf_message l;

		memset(&l, 0, sizeof(l));
		assert_int_equal(mf_store_message_lookup(inbox, MF_DIR_TMP,
							 "123.x.host", &l),
				 0);
		assert_int_equal(l.id, m.id);
		assert_string_equal(l.link_name, "123.x.host");
		mf_message_clear(&l);
	}
	assert_int_equal(mf_store_unlink_message(inbox, MF_DIR_TMP,
						 "123.x.host", MF_DELETE_TRASH),
			 0);
	{
		int64_t id = m.id;

		mf_message_clear(&m);
		assert_int_equal(mf_store_message_get(id, &m), 0);
	}
	assert_int_equal(m.state, MF_MSG_APPEND);
	assert_int_equal(m.dir, MF_DIR_NEW);
	assert_null(m.link_name);
	assert_int_equal(m.size, 55);
	assert_int_equal(m.internaldate, 1600000000);

	/*
	 * A crash after the APPEND reached the server: the entry was
	 * attempted, the id never recorded. The next listing matches the
	 * row instead of adding a second message.
	 */
	memset(&q, 0, sizeof(q));
	assert_int_equal(mf_store_queue_first("d", &q), 0);
	assert_int_equal(q.op, MF_OP_APPEND);
	assert_int_equal(mf_store_queue_attempt(q.id), 0);
	mf_queue_entry_clear(&q);
	ch = upsert("9", 0, 55, NULL);
	ch.msg.internaldate = 1600000000;
	apply(inbox, false, false, &ch, 1, "1:1:10:1");
	assert_int_equal(count_dir(inbox, MF_DIR_NEW), 1);
	{
		int64_t id = m.id;

		mf_message_clear(&m);
		assert_int_equal(mf_store_message_get(id, &m), 0);
	}
	assert_string_equal(m.ruid, "9");
	assert_int_equal(m.state, MF_MSG_SYNCED);
	assert_string_equal(m.name, "123.x.host");
	mf_message_clear(&m);
	assert_int_equal(queue_ops("d", ops, 4), 1);
}

static void test_reset_and_guard(void **state)
{
	struct mf_change chs[3];
	struct names before = { .n = 0 }, after = { .n = 0 };
	int64_t inbox;

	(void)state;
	inbox = list_folders("e");
	chs[0] = upsert("1", MF_FLAG_SEEN, 11, "<r1@x>");
	chs[1] = upsert("2", MF_FLAG_SEEN, 12, "<r2@x>");
	chs[2] = upsert("3", MF_FLAG_SEEN, 13, "<r3@x>");
	apply(inbox, true, false, chs, 3, "1:1:4:3");
	mf_store_list_messages(inbox, MF_DIR_CUR, 0, collect, &before);
	assert_int_equal(before.n, 3);

	/* An empty complete listing removes nothing, and again. */
	apply(inbox, true, false, NULL, 0, "1:2:4:0");
	apply(inbox, true, false, NULL, 0, "1:2:4:0");
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 3);

	/* UIDVALIDITY changed, same messages, new UIDs: same rows. */
	chs[0].msg.id = "101";
	chs[1].msg.id = "102";
	chs[2].msg.id = "103";
	apply(inbox, true, true, chs, 3, "2:1:104:3");
	mf_store_list_messages(inbox, MF_DIR_CUR, 0, collect, &after);
	assert_int_equal(after.n, 3);
	for (unsigned int i = 0; i < 3; i++) {
		struct mf_message m;

		assert_int_equal(after.ino[i], before.ino[i]);
		assert_string_equal(after.name[i], before.name[i]);
		memset(&m, 0, sizeof(m));
		assert_int_equal(mf_store_message_get((int64_t)after.ino[i],
						      &m),
				 0);
		assert_int_equal(strtol(m.ruid, NULL, 10), 101 + (int)i);
		mf_message_clear(&m);
	}
	/*
	 * A reset in which nothing matches keeps everything, and keeps the
	 * old cursor, so the next sync looks again: twice.
	 */
	chs[0] = upsert("201", 0, 999, "<other@x>");
	apply(inbox, true, true, chs, 1, "3:1:202:1");
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 3);
	apply(inbox, true, true, chs, 1, "3:1:202:1");
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 3);
	{
		struct mf_folder f;

		memset(&f, 0, sizeof(f));
		assert_int_equal(mf_store_folder_get(inbox, &f), 0);
		assert_string_equal(f.cursor, "2:1:104:3");
		mf_folder_clear(&f);
	}
	names_free(&before);
	names_free(&after);
}

static void test_gone_and_mkdir(void **state)
{
	struct mf_change ch;
	struct mf_folder f;
	int64_t inbox, root, id;
	int ops[4];

	(void)state;
	inbox = list_folders("f");
	ch = upsert("5", MF_FLAG_SEEN, 50, "<g@x>");
	apply(inbox, true, false, &ch, 1, "1:1:6:1");
	ch.kind = MF_CHANGE_GONE;
	apply(inbox, false, false, &ch, 1, "1:2:6:0");
	assert_int_equal(count_dir(inbox, MF_DIR_CUR), 0);

	assert_int_equal(mf_store_account_root("f", &root), 0);
	assert_int_equal(mf_store_mkdir(root, "Projects", &id), 0);
	assert_int_equal(mf_store_mkdir(root, "Projects", &id), -EEXIST);
	assert_int_equal(mf_store_mkdir(root, "cur", &id), -EINVAL);
	assert_int_equal(mf_store_mkdir(root, ".hidden", &id), -EINVAL);
	memset(&f, 0, sizeof(f));
	assert_int_equal(mf_store_folder_get(id, &f), 0);
	assert_int_equal(f.state, MF_FOLDER_CREATING);
	assert_int_equal(f.subdirs, MF_SUBDIR_ALL);
	assert_string_equal(f.path, "Projects");
	mf_folder_clear(&f);
	assert_int_equal(mf_store_mksubdir(id, 1), -EEXIST);
	/* rmdir before the CREATE ran: both are forgotten. */
	assert_int_equal(mf_store_rmdir(root, "Projects"), 0);
	assert_int_equal(queue_ops("f", ops, 4), 0);
	/* rmdir of INBOX or of a folder with mail is refused. */
	assert_int_equal(mf_store_rmdir(root, "INBOX"), -EPERM);
}

static void blob_hash(char *out, char c)
{
	memset(out, c, MF_BLOB_HASH_LEN);
	out[MF_BLOB_HASH_LEN] = '\0';
}

static unsigned int candidates(int64_t after, const char *after_hash,
			       int64_t before, char *got)
{
	struct blob_rec out[8];
	unsigned int n = 0;

	assert_int_equal(meta_blob_candidates(after, after_hash, before, 8,
					      out, &n),
			 0);
	for (unsigned int i = 0; i < n; i++)
		got[i] = out[i].hash[0];
	got[n] = '\0';
	return n;
}

/* blob_cache: LRU order, and bodies only local messages need are kept. */
static void test_blob_eviction_candidates(void **state)
{
	struct blob_rec r[4];
	struct mf_change ch;
	struct mf_message m, d1, d2;
	struct names nm = { 0 };
	char h[4][MF_BLOB_HASH_LEN + 1], got[9];
	bool changed;
	int64_t inbox;

	(void)state;
	inbox = list_folders("blob");
	for (int i = 0; i < 4; i++)
		blob_hash(h[i], (char)('a' + i));
	/* a: a server message's body; evictable. */
	ch = upsert("1", 0, 100, NULL);
	apply(inbox, true, false, &ch, 1, "1:1:2:1");
	assert_int_equal(mf_store_list_messages(inbox, MF_DIR_NEW, 0, collect,
						&nm),
			 0);
	assert_int_equal(nm.n, 1);
	assert_int_equal(mf_store_set_blob((int64_t)nm.ino[0], h[0], 100,
					   &changed),
			 0);
	names_free(&nm);
	/* b: uploaded, the server's id unknown (MATCH): kept. */
	memset(&d1, 0, sizeof(d1));
	assert_int_equal(mf_store_tmp_create(inbox, "1.b.host", mf_now_ns(),
					     &d1),
			 0);
	assert_int_equal(mf_store_rename_message(d1.id, "1.b.host", inbox,
						 MF_DIR_NEW, "1.b.host", true,
						 10),
			 0);
	assert_int_equal(mf_store_appended(d1.id, inbox, NULL, 0, h[1]), 0);
	memset(&m, 0, sizeof(m));
	assert_int_equal(mf_store_message_get(d1.id, &m), 0);
	assert_int_equal(m.state, MF_MSG_MATCH);
	mf_message_clear(&m);
	/* c: uploaded with its id: a server message like a. */
	memset(&d2, 0, sizeof(d2));
	assert_int_equal(mf_store_tmp_create(inbox, "1.c.host", mf_now_ns(),
					     &d2),
			 0);
	assert_int_equal(mf_store_rename_message(d2.id, "1.c.host", inbox,
						 MF_DIR_NEW, "1.c.host", true,
						 10),
			 0);
	assert_int_equal(mf_store_appended(d2.id, inbox, "7", 0, h[2]), 0);
	/* d: no message at all (any more). */
	memcpy(r[0].hash, h[0], sizeof(h[0]));
	r[0].size = 100;
	r[0].atime = 10;
	memcpy(r[1].hash, h[1], sizeof(h[1]));
	r[1].size = 10;
	r[1].atime = 5;
	memcpy(r[2].hash, h[2], sizeof(h[2]));
	r[2].size = 10;
	r[2].atime = 20;
	memcpy(r[3].hash, h[3], sizeof(h[3]));
	r[3].size = 1;
	r[3].atime = 1;
	assert_int_equal(meta_blob_record(r, 4), 0);

	assert_int_equal(candidates(INT64_MIN, "", 100, got), 3);
	assert_string_equal(got, "dac");
	/* Used at or after "before": not yet. */
	candidates(INT64_MIN, "", 15, got);
	assert_string_equal(got, "da");
	/* Paging from a cursor. */
	candidates(10, h[0], 100, got);
	assert_string_equal(got, "c");
	/* Forgotten rows are gone; an access moves a body back. */
	assert_int_equal(meta_blob_forget(&r[3], 1), 0);
	r[0].size = BLOB_TOUCH_ONLY;
	r[0].atime = 30;
	assert_int_equal(meta_blob_record(&r[0], 1), 0);
	candidates(INT64_MIN, "", 100, got);
	assert_string_equal(got, "ca");
	/* An older access time never moves it back. */
	r[0].atime = 2;
	assert_int_equal(meta_blob_record(&r[0], 1), 0);
	candidates(INT64_MIN, "", 100, got);
	assert_string_equal(got, "ca");
	mf_message_clear(&d1);
	mf_message_clear(&d2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listing_and_names),
		cmocka_unit_test(test_flags_merge_and_queue),
		cmocka_unit_test(test_move_unlink_and_trash),
		cmocka_unit_test(test_delivery_and_rematch),
		cmocka_unit_test(test_reset_and_guard),
		cmocka_unit_test(test_gone_and_mkdir),
		cmocka_unit_test(test_blob_eviction_candidates),
	};

	mf_log_init("test", false, MF_LOG_ERR, 0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
