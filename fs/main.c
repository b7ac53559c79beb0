/*
 * mount.mailfs: option parsing and wiring (modelled on libfuse's
 * example/passthrough_ll.c main()).
 *
 *   mount.mailfs [-f] [-d] [-o config=FILE,debug=AREAS,FUSE options]
 *                [SOURCE] MOUNTPOINT
 *
 * Order of start: read the config (errors go to the terminal before
 * anything is mounted), open the store, mount, detach unless -f, then
 * start one sync engine per account. On unmount or SIGTERM the engines
 * stop; the write-back queue stays in the store for the next mount.
 */
#include "fs.h"
#include "mf_blob.h"
#include "mf_config.h"
#include "mf_engine.h"
#include "mf_store.h"
#include "mf_tokenstore.h"
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* How long a first mount waits for an account's first listing. */
#define FIRST_SYNC_WAIT_MS 15000

struct cmdline {
	char *config;
	char *debug;
	int foreground;
	int debug_all;
	int show_help;
	int show_version;
	char *mountpoint;
	int nargs;
};

#define MF_OPT(t, p) { t, offsetof(struct cmdline, p), 1 }

static const struct fuse_opt mailfs_opts[] = {
	MF_OPT("config=%s", config),
	MF_OPT("debug=%s", debug),
	MF_OPT("-f", foreground),
	MF_OPT("-d", debug_all),
	MF_OPT("debug", debug_all),
	MF_OPT("-h", show_help),
	MF_OPT("--help", show_help),
	MF_OPT("-V", show_version),
	MF_OPT("--version", show_version),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct cmdline *c = data;

	if (key == FUSE_OPT_KEY_NONOPT) {
		/* [SOURCE] MOUNTPOINT: the last one is the mount point. */
		c->nargs++;
		free(c->mountpoint);
		c->mountpoint = realpath(arg, NULL);
		if (!c->mountpoint) {
			fprintf(stderr, "mount.mailfs: bad mount point %s: "
				"%s\n", arg, strerror(errno));
			return -1;
		}
		return 0;
	}
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [options] [SOURCE] MOUNTPOINT\n"
	       "\n"
	       "Mount IMAP mailboxes as Maildir folders.\n"
	       "\n"
	       "  -f                 stay in the foreground, log to stderr\n"
	       "  -d                 debug log of every area (implies -f)\n"
	       "  -o config=FILE     the config (default "
	       "$XDG_CONFIG_HOME/mailfs/mailfs.conf)\n"
	       "  -o debug=AREAS     debug log of fs,imap,sync,store,queue\n"
	       "  -o allow_other     let other users see the mount\n"
	       "  -h, --help         this text\n"
	       "  -V, --version      the version\n"
	       "\n"
	       "  %s --status MOUNTPOINT\n"
	       "        what a running mailfs is doing: per account the\n"
	       "        connection, queued changes, held-back removals\n"
	       "  %s --accept MOUNTPOINT ACCOUNT FOLDER\n"
	       "        apply a removal the mass-deletion guard held back\n"
	       "\n"
	       "Unmount with: fusermount3 -u MOUNTPOINT\n", prog, prog,
	       prog);
}

/* One daemon per state directory: two would replay one queue twice. */
static int lock_state_dir(const char *state_dir)
{
	char *path = xasprintf("%s/lock", state_dir);
	int fd;

	mf_mkdirs(state_dir, 0700);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "mount.mailfs: %s is in use by another "
			"mailfs (or cannot be locked: %s)\n", path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		free(path);
		return -1;
	}
	free(path);
	return fd;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline cl;
	struct mf_config *cfg = NULL;
	struct fuse_session *se = NULL;
	struct mf_engine **engines = NULL;
	bool *first = NULL;
	struct mf_fs_options fsopts;
	struct fuse_loop_config *loop = NULL;
	char *err = NULL;
	int lockfd = -1;
	int ret = 1;
	unsigned int areas;

	/* Requests to a running daemon: no config, no mount. */
	if (argc == 3 && strcmp(argv[1], "--status") == 0)
		return mf_status_client(argv[2], "status");
	if (argc == 5 && strcmp(argv[1], "--accept") == 0) {
		char *req = xasprintf("accept %s %s", argv[3], argv[4]);
		int r = mf_status_client(argv[2], req);

		free(req);
		return r;
	}
	memset(&cl, 0, sizeof(cl));
	if (fuse_opt_parse(&args, &cl, mailfs_opts, opt_proc) == -1)
		return 1;
	if (cl.show_help) {
		usage(argv[0]);
		return 0;
	}
	if (cl.show_version) {
		printf("mailfs %s (libfuse %s)\n", MAILFS_VERSION,
		       fuse_pkgversion());
		return 0;
	}
	if (!cl.mountpoint) {
		usage(argv[0]);
		return 1;
	}
	if (cl.debug_all)
		cl.foreground = 1;
	areas = cl.debug_all ? MF_DBG_ALL
			     : (cl.debug ? mf_log_parse_areas(cl.debug) : 0);
	mf_log_init("mailfs", false, MF_LOG_INFO, areas);

	if (!cl.config)
		cl.config = mf_config_default_path();
	if (mf_config_load(cl.config, &cfg, &err) < 0) {
		fprintf(stderr, "mount.mailfs: %s\n", err);
		goto out;
	}
	/* OAuth refresh tokens: STATE_DIR/oauth, key in the config dir */
	mf_tokenstore_configure(cfg->state_dir, NULL,
				cfg->token_key_command);
	lockfd = lock_state_dir(cfg->state_dir);
	if (mf_store_open(cfg->state_dir, &err) < 0 ||
	    mf_blob_init(cfg->cache_dir, &err) < 0) {
		fprintf(stderr, "mount.mailfs: %s\n", err);
		goto out;
	}
	if (lockfd < 0)
		goto out;
	for (unsigned int i = 0; i < cfg->account_count; i++) {
		int64_t id;

		if (mf_store_account_root(cfg->accounts[i].name, &id) < 0) {
			fprintf(stderr, "mount.mailfs: cannot set up account "
				"%s in the store\n", cfg->accounts[i].name);
			goto out;
		}
	}

	fsopts.cfg = cfg;
	fsopts.entry_timeout = 60;
	fsopts.attr_timeout = 60;
	fsopts.dir_attr_timeout = 1;
	mf_fs_init(&fsopts);

	/* libfuse's own -d would also print every request: not wanted. */
	se = fuse_session_new(&args, &mf_fs_ops, sizeof(mf_fs_ops), NULL);
	if (!se)
		goto out_fs;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, cl.mountpoint) != 0)
		goto out_signals;
	if (!cl.foreground) {
		mf_log_init("mailfs", true, MF_LOG_INFO, areas);
		fuse_daemonize(0);
	}

	mf_notifier_start(se);
	mf_store_set_notify(mf_notifier_ops());
	engines = xcalloc(cfg->account_count, sizeof(*engines));
	first = xcalloc(cfg->account_count, sizeof(*first));
	for (unsigned int i = 0; i < cfg->account_count; i++) {
		first[i] = !mf_store_account_listed(cfg->accounts[i].name);
		if (mf_engine_start(cfg, &cfg->accounts[i], &engines[i],
				    &err) < 0) {
			/* One broken account never stops the others. */
			mf_err("account %s: %s", cfg->accounts[i].name, err);
			free(err);
			err = NULL;
		}
	}
	/*
	 * An account mounted for the first time shows nothing until its
	 * first listing: hold requests (they wait; nothing fails) until
	 * it is complete, for FIRST_SYNC_WAIT_MS at most. With a store
	 * from an earlier mount, serve it at once, offline too.
	 */
	{
		int64_t deadline = mf_mono_ms() + FIRST_SYNC_WAIT_MS;

		for (unsigned int i = 0; i < cfg->account_count; i++) {
			int64_t left = deadline - mf_mono_ms();

			if (!first[i] || !engines[i])
				continue;
			if (!mf_engine_wait_first_sync(engines[i],
						       MF_MAX(left, 0)))
				mf_notice("%s: first listing still running; "
					  "serving what is there",
					  cfg->accounts[i].name);
		}
	}
	free(first);
	mf_status_start(cfg, cl.mountpoint);
	mf_notice("mounted %s (%u account%s)", cl.mountpoint,
		  cfg->account_count, cfg->account_count == 1 ? "" : "s");

	loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(loop, 0);
	fuse_loop_cfg_set_max_threads(loop, 16);
	/*
	 * Keep idle workers: a new thread opens its own SQLite connection
	 * (parsing the schema), which made every file open cost three
	 * thread starts in the benchmark.
	 */
	fuse_loop_cfg_set_idle_threads(loop, 16);
	ret = fuse_session_loop_mt(se, loop) != 0;
	fuse_loop_cfg_destroy(loop);

	mf_notice("unmounting %s", cl.mountpoint);
	mf_status_stop();
	mf_store_set_notify(NULL);
	for (unsigned int i = 0; i < cfg->account_count; i++)
		mf_engine_stop(&engines[i]);
	free(engines);
	mf_notifier_stop();
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	mf_fs_deinit();
out:
	free(err);
	mf_blob_deinit();
	mf_store_close();
	mf_config_free(&cfg);
	if (lockfd >= 0)
		close(lockfd);
	free(cl.config);
	free(cl.debug);
	free(cl.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
