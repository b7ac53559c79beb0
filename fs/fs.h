/*
 * Internals of the file system side: the FUSE operations table and the
 * notifier thread.
 */
#ifndef MF_FS_H
#define MF_FS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>

#include "mf_config.h"

struct mf_fs_options {
	const struct mf_config *cfg;
	double entry_timeout;	/* seconds for immutable names */
	double attr_timeout;	/* seconds for messages */
	double dir_attr_timeout;	/* seconds for directories */
};

extern const struct fuse_lowlevel_ops mf_fs_ops;

/* A message's entry as lookup replies it (views.c reuses it). */
struct mf_message;
void mf_fs_message_entry(const struct mf_message *m,
			 struct fuse_entry_param *e);

/* Set before the session runs. */
void mf_fs_init(const struct mf_fs_options *opts);
void mf_fs_deinit(void);
/* Swap in a re-read config (SIGHUP); the old one must stay allocated. */
void mf_fs_set_config(const struct mf_config *cfg);

/* The notifier: one thread issues every fuse_lowlevel_notify_* call. */
void mf_notifier_start(struct fuse_session *se);
void mf_notifier_stop(void);
const struct mf_notify_ops *mf_notifier_ops(void);

/*
 * A request enters folder: if it is the root of an account mounted for
 * the first time, wait for its first listing (bounded). fs/main.c.
 */
void mf_fs_hold(int64_t folder);
/* The same by account name: a view waits for each account it shows. */
void mf_fs_hold_account(const char *account);

/* A directory's attributes: 0700, owned by the mounting user (ops.c). */
void mf_fs_fill_dir(struct stat *st, uint64_t ino, int64_t mtime_ns,
		    nlink_t nlink);

/* cur, new, tmp: 1, 2, 3 (as in inode numbers); any other name: 0. */
int mf_fs_sub_of(const char *name);
extern const char *const mf_fs_sub_names[4];	/* "", "cur", "new", "tmp" */

/* A readdir reply being filled (ops.c, views.c). */
struct mf_dir_buf {
	fuse_req_t req;
	char *buf;
	size_t size;
	size_t used;
	bool plus;	/* readdirplus */
	bool full;	/* the last entry did not fit */
};

/*
 * Add name: with e for readdirplus, else with e->attr's inode and type.
 * Returns 1 (and sets full) when it does not fit.
 */
int mf_dir_buf_add(struct mf_dir_buf *d, const char *name,
		   const struct fuse_entry_param *e, off_t next_off);

/* Wake the engine of the account that folder (an id) belongs to. */
void mf_fs_kick_folder(int64_t folder);

/* The status socket (fs/status.c). */
char *mf_status_socket_path(const char *mountpoint);
int mf_status_start(const struct mf_config *cfg, const char *mountpoint);
void mf_status_stop(void);
/* The config in force after a SIGHUP (the old one stays allocated). */
void mf_status_set_config(const struct mf_config *cfg);
/* mount.mailfs --status / --accept: returns the exit code. */
int mf_status_client(const char *mountpoint, const char *request);

#endif
