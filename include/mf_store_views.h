/*
 * The store's side of client-side views (fs/views.c): header lines kept
 * per message, and listings across every folder of every account.
 *
 * Views show the same rows as the folders do (same inode = row id, same
 * name); these calls only find them. Any thread may call them.
 */
#ifndef MF_STORE_VIEWS_H
#define MF_STORE_VIEWS_H

#include <stdbool.h>
#include <stdint.h>

#include "mf_store.h"

/* A message as a view sees it. Everything is borrowed for the callback. */
struct mf_view_msg {
	const struct mf_message *m;
	const char *account;	/* of its folder */
	const char *path;	/* its folder's path below the account */
	unsigned int attrs;	/* its folder's MF_FOLDER_* */
	const char *fields;	/* header lines (see mf_msg_info.headers),
				   or NULL when none were kept */
};

/* Return non-zero to stop (the call then returns 0). */
typedef int mf_view_msg_cb(void *ctx, const struct mf_view_msg *vm);

/*
 * Visible messages in dir (MF_DIR_CUR or MF_DIR_NEW) of every visible
 * folder, in id order, from id from_id on.
 */
int mf_store_view_scan(int dir, int64_t from_id, mf_view_msg_cb *cb,
		       void *ctx);

/* Visible messages named name in dir of any visible folder, in id order. */
int mf_store_view_find(int dir, const char *name, mf_view_msg_cb *cb,
		       void *ctx);

/* The newest mtime (ns) of the cur (dir MF_DIR_CUR) or new directories of
 * all folders: a view's directory changes when any of them does. */
int64_t mf_store_view_mtime(int dir);

/*
 * At mount: the header fields the account's views need now (NULL: none).
 * When they include a field the store's rows were not listed with, every
 * folder of the account is listed once more in full (its cursor is
 * dropped), so that messages known from before get their header lines.
 * *relist_r tells whether that was done.
 */
int mf_store_view_fields_check(const char *account, const char *fields,
			       bool *relist_r);

#endif
