/*
 * mount.mailfs: option parsing and wiring (modelled on libfuse's
 * example/passthrough_ll.c main()).
 *
 *   mount.mailfs [-f] [-d] [-o config=FILE,debug=AREAS,FUSE options]
 *                [SOURCE] MOUNTPOINT
 *
 * Order of start: read the config (errors go to the terminal before
 * anything is mounted), open the store, mount, detach unless -f, then
 * start one sync engine per account.
 *
 * While mounted: SIGHUP re-reads the config (accounts added, removed or
 * changed without a remount). On unmount or SIGTERM the mount goes first,
 * then the write-back queue gets up to drain_timeout seconds to reach the
 * servers (SIGINT cuts that short), then the engines stop; what
 * is left stays in the store for the next mount.
 *
 * Under systemd (Type=notify) the daemon says READY, RELOADING and
 * STOPPING on $NOTIFY_SOCKET, and logs through syslog (the journal, with
 * levels) when its stderr is the journal.
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
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* How long requests into a new account wait for its first listing. */
#define FIRST_SYNC_WAIT_MS 15000

struct cmdline {
	char *config;
	char *debug;
	int foreground;
	int debug_all;
	int show_help;
	int show_version;
	char *source;
	char *mountpoint;
	int nargs;
	bool has_fsname;
	bool has_subtype;
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
		if (c->nargs > 2) {
			fprintf(stderr, "mount.mailfs: unexpected argument %s"
				"\n", arg);
			return -1;
		}
		/* SOURCE (mount(8) gives one) is only a label. */
		free(c->source);
		c->source = c->mountpoint;
		c->mountpoint = xstrdup(arg);
		return 0;
	}
	if (key == FUSE_OPT_KEY_OPT) {
		if (strncmp(arg, "fsname=", 7) == 0)
			c->has_fsname = true;
		if (strncmp(arg, "subtype=", 8) == 0)
			c->has_subtype = true;
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

/* ---- systemd and the journal ---- */

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. */
static void notify_systemd(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';	/* an abstract socket */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) <
	    0)
		mf_debug(MF_DBG_FS, "notify %s: %s", path, strerror(errno));
	close(fd);
}

/* Is stderr the journal (systemd sets JOURNAL_STREAM to its dev:ino)? */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

/* ---- the first listing of a new account ---- */

/*
 * An account mounted for the first time shows nothing until its first
 * listing is in: requests that enter it (a lookup of its directory or of
 * a name in it, a listing of it) wait until then, for FIRST_SYNC_WAIT_MS
 * at most. Only that account's requests wait: the others, and the mount
 * root, are served at once, so an account whose server hangs holds up
 * nobody else; and at most MAX_HOLD_WAITERS of them wait at a time (more
 * are answered with what is there), so they cannot take every FUSE
 * worker. With a store from an earlier mount nothing waits.
 */
#define MAX_HOLDS 64
/* Requests that wait at once per account: the others keep FUSE workers. */
#define MAX_HOLD_WAITERS 4

static struct {
	pthread_mutex_t lock;
	unsigned int n;			/* also read without the lock */
	struct {
		int64_t root;		/* the account's root folder */
		char *account;		/* owned */
		int64_t deadline;	/* mf_mono_ms() */
		unsigned int waiting;	/* requests waiting now */
	} h[MAX_HOLDS];
} holds = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void hold_add(const char *account, int64_t root)
{
	pthread_mutex_lock(&holds.lock);
	if (holds.n < MAX_HOLDS) {
		holds.h[holds.n].root = root;
		holds.h[holds.n].account = xstrdup(account);
		holds.h[holds.n].deadline = mf_mono_ms() + FIRST_SYNC_WAIT_MS;
		holds.h[holds.n].waiting = 0;
		__atomic_store_n(&holds.n, holds.n + 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&holds.lock);
}

static void hold_drop(int64_t root, bool timed_out)
{
	pthread_mutex_lock(&holds.lock);
	for (unsigned int i = 0; i < holds.n; i++) {
		if (holds.h[i].root != root)
			continue;
		if (timed_out)
			mf_notice("%s: first listing still running; serving "
				  "what is there", holds.h[i].account);
		free(holds.h[i].account);
		holds.h[i] = holds.h[holds.n - 1];
		__atomic_store_n(&holds.n, holds.n - 1, __ATOMIC_RELEASE);
		break;
	}
	pthread_mutex_unlock(&holds.lock);
}

static void holds_clear(void)
{
	pthread_mutex_lock(&holds.lock);
	for (unsigned int i = 0; i < holds.n; i++)
		free(holds.h[i].account);
	__atomic_store_n(&holds.n, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&holds.lock);
}

void mf_fs_hold(int64_t folder)
{
	struct mf_engine *e;
	char *account = NULL;
	int64_t deadline = 0;
	bool done;

	if (__atomic_load_n(&holds.n, __ATOMIC_ACQUIRE) == 0)
		return;
	pthread_mutex_lock(&holds.lock);
	for (unsigned int i = 0; i < holds.n; i++) {
		if (holds.h[i].root == folder &&
		    holds.h[i].waiting < MAX_HOLD_WAITERS) {
			account = xstrdup(holds.h[i].account);
			deadline = holds.h[i].deadline;
			holds.h[i].waiting++;
			break;
		}
	}
	pthread_mutex_unlock(&holds.lock);
	if (!account)
		return;
	/* Engines are retired, never freed, while the mount runs. */
	e = mf_engine_find(account);
	done = !e || mf_engine_wait_first_sync(e, MF_MAX(deadline -
							  mf_mono_ms(), 0));
	pthread_mutex_lock(&holds.lock);
	for (unsigned int i = 0; i < holds.n; i++) {
		if (holds.h[i].root == folder && holds.h[i].waiting)
			holds.h[i].waiting--;
	}
	pthread_mutex_unlock(&holds.lock);
	hold_drop(folder, !done);
	free(account);
}

void mf_fs_hold_account(const char *account)
{
	int64_t root = 0;

	if (__atomic_load_n(&holds.n, __ATOMIC_ACQUIRE) == 0)
		return;
	pthread_mutex_lock(&holds.lock);
	for (unsigned int i = 0; i < holds.n; i++) {
		if (strcmp(holds.h[i].account, account) == 0) {
			root = holds.h[i].root;
			break;
		}
	}
	pthread_mutex_unlock(&holds.lock);
	if (root)
		mf_fs_hold(root);
}

/* ---- accounts and their engines ---- */

struct slot {
	const struct mf_account *acct;	/* in the config it was started from */
	struct mf_engine *e;		/* NULL: did not start (see the log) */
};

static struct {
	const char *config_path;
	struct mf_config *cfg;		/* in force */
	struct mf_config **retired;	/* replaced by SIGHUP; kept until exit
					   (engines, readers may hold them) */
	unsigned int nretired;
	struct slot *slots;		/* one per cfg->accounts[] */
	int hup_pipe[2];
	int stop_pipe[2];
	pthread_t reload_thread;
	bool reload_running;
} dmn = { .hup_pipe = { -1, -1 }, .stop_pipe = { -1, -1 } };

static volatile sig_atomic_t drain_cut;

static void start_slot(struct slot *sl, const struct mf_config *cfg,
		       const struct mf_account *acct)
{
	char *err = NULL;
	int64_t id;

	sl->acct = acct;
	sl->e = NULL;
	if (mf_store_account_root(acct->name, &id) < 0) {
		mf_err("account %s: cannot set it up in the store", acct->name);
		return;
	}
	if (!mf_store_account_listed(acct->name))
		hold_add(acct->name, id);
	if (mf_engine_start(cfg, acct, &sl->e, &err) < 0) {
		/* One broken account never stops the others. */
		mf_err("account %s: %s", acct->name, err);
		free(err);
	}
}

static bool same_account(const struct mf_account *a,
			 const struct mf_account *b)
{
	if (strcmp(a->type, b->type) != 0 || a->kv_count != b->kv_count)
		return false;
	for (unsigned int i = 0; i < a->kv_count; i++) {
		if (strcmp(a->kv[i].key, b->kv[i].key) != 0 ||
		    strcmp(a->kv[i].value, b->kv[i].value) != 0)
			return false;
	}
	return true;
}

static void notify_root_entry(const char *name)
{
	const struct mf_notify_ops *n = mf_notifier_ops();

	n->inval_entry(MF_INO_ROOT, name);
	n->inval_inode(MF_INO_ROOT);
}

/*
 * SIGHUP: read the config again. New accounts start and appear under the
 * mount root, removed ones stop and disappear (their queued changes stay
 * in the store for when they come back), changed ones restart with the
 * new settings. cache_dir and state_dir take a remount.
 */
static void reload_config(void)
{
	struct mf_config *nc = NULL, *oc = dmn.cfg;
	struct slot *ns;
	bool *kept;
	char *err = NULL;

	notify_systemd("RELOADING=1");
	mf_notice("SIGHUP: reading %s again", dmn.config_path);
	if (mf_config_load(dmn.config_path, &nc, &err) < 0) {
		mf_err("%s; the config in force stays", err);
		free(err);
		notify_systemd("READY=1");
		return;
	}
	if (strcmp(nc->state_dir, oc->state_dir) != 0 ||
	    strcmp(nc->cache_dir, oc->cache_dir) != 0) {
		mf_warn("a new cache_dir or state_dir takes a remount; "
			"keeping %s and %s", oc->cache_dir, oc->state_dir);
		free(nc->state_dir);
		free(nc->cache_dir);
		nc->state_dir = xstrdup(oc->state_dir);
		nc->cache_dir = xstrdup(oc->cache_dir);
	}
	if (nc->view_count != oc->view_count)
		mf_warn("[view] sections changed: views take a remount");
	ns = xcalloc(nc->account_count ? nc->account_count : 1, sizeof(*ns));
	kept = xcalloc(oc->account_count ? oc->account_count : 1,
		       sizeof(*kept));
	for (unsigned int i = 0; i < nc->account_count; i++) {
		const struct mf_account *a = &nc->accounts[i];
		unsigned int j;

		for (j = 0; j < oc->account_count; j++) {
			if (strcmp(oc->accounts[j].name, a->name) == 0)
				break;
		}
		if (j < oc->account_count && !kept[j] &&
		    same_account(&oc->accounts[j], a)) {
			ns[i] = dmn.slots[j];	/* unchanged: keep running */
			kept[j] = true;
			continue;
		}
		if (j < oc->account_count && !kept[j]) {
			mf_notice("account %s: settings changed; restarting",
				  a->name);
			mf_engine_retire(&dmn.slots[j].e);
			kept[j] = true;
		} else {
			mf_notice("account %s: added", a->name);
		}
		start_slot(&ns[i], nc, a);
		notify_root_entry(a->name);
	}
	/* The file system shows the new set from here on. */
	mf_fs_set_config(nc);
	mf_status_set_config(nc);
	for (unsigned int j = 0; j < oc->account_count; j++) {
		if (kept[j])
			continue;
		mf_notice("account %s: removed; its queued changes stay in "
			  "the store", oc->accounts[j].name);
		mf_engine_retire(&dmn.slots[j].e);
		notify_root_entry(oc->accounts[j].name);
	}
	free(kept);
	free(dmn.slots);
	dmn.slots = ns;
	dmn.retired = xrealloc(dmn.retired,
			       (dmn.nretired + 1) * sizeof(*dmn.retired));
	dmn.retired[dmn.nretired++] = oc;
	dmn.cfg = nc;
	mf_notice("config in force: %u account%s", nc->account_count,
		  nc->account_count == 1 ? "" : "s");
	notify_systemd("READY=1");
}

static void on_hup(int sig)
{
	int saved = errno;

	(void)sig;
	if (dmn.hup_pipe[1] >= 0 && write(dmn.hup_pipe[1], "h", 1) < 0) {
		/* full: a reload is pending anyway */
	}
	errno = saved;
}

static void *reload_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p[2] = { { dmn.hup_pipe[0], POLLIN, 0 },
				       { dmn.stop_pipe[0], POLLIN, 0 } };
		char buf[64];

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		/* Several SIGHUPs in a row: one reload. */
		if (read(dmn.hup_pipe[0], buf, sizeof(buf)) > 0)
			reload_config();
	}
	return NULL;
}

static int reload_start(void)
{
	struct sigaction sa;

	if (pipe2(dmn.hup_pipe, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    pipe2(dmn.stop_pipe, O_CLOEXEC) < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_hup;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	/* Before fuse_set_signal_handlers(), which then leaves it alone. */
	return sigaction(SIGHUP, &sa, NULL) < 0 ? -errno : 0;
}

static void reload_stop(void)
{
	if (dmn.reload_running) {
		if (write(dmn.stop_pipe[1], "q", 1) < 0)
			mf_debug(MF_DBG_FS, "reload: stop pipe");
		pthread_join(dmn.reload_thread, NULL);
		dmn.reload_running = false;
	}
	signal(SIGHUP, SIG_IGN);
	for (int i = 0; i < 2; i++) {
		if (dmn.hup_pipe[i] >= 0)
			close(dmn.hup_pipe[i]);
		if (dmn.stop_pipe[i] >= 0)
			close(dmn.stop_pipe[i]);
		dmn.hup_pipe[i] = dmn.stop_pipe[i] = -1;
	}
}

/* ---- leaving ---- */

static void on_term_while_draining(int sig)
{
	(void)sig;
	drain_cut = 1;
}

/*
 * After the unmount: give queued changes up to timeout_s seconds to reach
 * the servers. Stops early when every queue is empty, when what is left
 * waits for a retry later than the deadline (the server is away), or at a
 * SIGINT.
 */
static void drain_queues(unsigned int timeout_s)
{
	int64_t deadline = mf_mono_ms() + (int64_t)timeout_s * 1000;
	struct sigaction sa;
	bool told = false;

	/*
	 * SIGINT (Ctrl-C) stops the drain. SIGTERM does not: systemd sends
	 * it right after ExecStop= has unmounted, and drain_timeout bounds
	 * the wait anyway.
	 */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term_while_draining;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGTERM, SIG_IGN);
	for (unsigned int i = 0; i < dmn.cfg->account_count; i++) {
		if (dmn.slots[i].e)
			mf_engine_kick(dmn.slots[i].e);
	}
	for (;;) {
		int64_t left_ms = deadline - mf_mono_ms();
		int64_t wall_deadline = mf_now_ns() / 1000000 + left_ms;
		uint64_t waiting = 0, movable = 0;

		for (unsigned int i = 0; i < dmn.cfg->account_count; i++) {
			const char *name = dmn.cfg->accounts[i].name;
			struct mf_queue_stats qs;
			struct mf_queue_entry q;

			if (!dmn.slots[i].e ||
			    mf_store_queue_stats(name, &qs) < 0)
				continue;
			free(qs.last_error);
			if (qs.length == 0)
				continue;
			waiting += qs.length;
			memset(&q, 0, sizeof(q));
			if (mf_store_queue_first(name, &q) == 0 &&
			    q.next_try <= wall_deadline)
				movable += qs.length;
			mf_queue_entry_clear(&q);
		}
		if (waiting == 0) {
			if (told)
				mf_notice("every queued change is on the "
					  "server");
			return;
		}
		if (!told && timeout_s > 0) {
			mf_notice("sending %llu queued change%s before "
				  "exiting (at most %u s; SIGINT to stop "
				  "now)", (unsigned long long)waiting,
				  waiting == 1 ? "" : "s", timeout_s);
			told = true;
		}
		if (movable == 0 || drain_cut || left_ms <= 0) {
			mf_notice("%llu change%s stay%s queued for the next "
				  "mount", (unsigned long long)waiting,
				  waiting == 1 ? "" : "s",
				  waiting == 1 ? "s" : "");
			return;
		}
		poll(NULL, 0, (int)MF_MIN(left_ms, 100));
	}
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline cl;
	struct mf_config *cfg = NULL;
	struct fuse_session *se = NULL;
	bool mounted = false, signals_set = false;
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
	mf_harden_process();	/* before any secret is read */
	memset(&cl, 0, sizeof(cl));
	if (fuse_opt_parse(&args, &cl, mailfs_opts, opt_proc) == -1)
		goto out_args;
	if (cl.show_help || cl.show_version || !cl.mountpoint) {
		if (cl.show_version)
			printf("mailfs %s (libfuse %s)\n", MAILFS_VERSION,
			       fuse_pkgversion());
		else
			usage(argv[0]);
		ret = !cl.show_help && !cl.show_version;
		goto out_args;
	}
	{
		char *real = realpath(cl.mountpoint, NULL);

		if (!real) {
			fprintf(stderr, "mount.mailfs: bad mount point %s: "
				"%s\n", cl.mountpoint, strerror(errno));
			goto out_args;
		}
		free(cl.mountpoint);
		cl.mountpoint = real;
	}
	if (cl.debug_all)
		cl.foreground = 1;
	/* Show as "SOURCE MOUNTPOINT fuse.mailfs" in /proc/mounts. */
	if (!cl.has_fsname) {
		char *o = xasprintf("-ofsname=%s",
				    cl.source ? cl.source : "mailfs");

		/* fuse_opt escapes nothing: keep the name plain. */
		if (strpbrk(o + 9, ",\\ \t\n"))
			strcpy(o + 9, "mailfs");
		fuse_opt_add_arg(&args, o);
		free(o);
	}
	if (!cl.has_subtype)
		fuse_opt_add_arg(&args, "-osubtype=mailfs");
	areas = cl.debug_all ? MF_DBG_ALL
			     : (cl.debug ? mf_log_parse_areas(cl.debug) : 0);
	/* Under systemd, syslog gives the journal each line's level. */
	mf_log_init("mailfs", cl.foreground && stderr_is_journal(),
		    MF_LOG_INFO, areas);

	if (!cl.config)
		cl.config = mf_config_default_path();
	{
		/* SIGHUP reads it again after the daemon moved to "/". */
		char *abs = realpath(cl.config, NULL);

		if (abs) {
			free(cl.config);
			cl.config = abs;
		}
	}
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
	if (reload_start() < 0) {
		fprintf(stderr, "mount.mailfs: cannot set up SIGHUP: %s\n",
			strerror(errno));
		goto out;
	}
	dmn.config_path = cl.config;
	dmn.cfg = cfg;

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
	signals_set = true;
	if (fuse_session_mount(se, cl.mountpoint) != 0)
		goto out_signals;
	mounted = true;
	if (!cl.foreground) {
		mf_log_init("mailfs", true, MF_LOG_INFO, areas);
		fuse_daemonize(0);
	}

	/* After the fork: cache eviction runs in a thread of its own. */
	if (mf_blob_set_max_size(cfg->cache_max_size, &err) < 0) {
		mf_err("%s", err);
		free(err);
		err = NULL;
	}
	mf_notifier_start(se);
	mf_store_set_notify(mf_notifier_ops());
	dmn.slots = xcalloc(cfg->account_count, sizeof(*dmn.slots));
	for (unsigned int i = 0; i < cfg->account_count; i++)
		start_slot(&dmn.slots[i], cfg, &cfg->accounts[i]);
	mf_status_start(cfg, cl.mountpoint);
	if (pthread_create(&dmn.reload_thread, NULL, reload_main, NULL) == 0)
		dmn.reload_running = true;
	mf_notice("mounted %s (%u account%s)", cl.mountpoint,
		  cfg->account_count, cfg->account_count == 1 ? "" : "s");
	notify_systemd("READY=1");

	loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(loop, 0);
	fuse_loop_cfg_set_max_threads(loop, 16);
	/*
	 * Keep idle workers: a new thread opens its own SQLite connection
	 * (parsing the schema), which made every file open cost three
	 * thread starts in the benchmark.
	 */
	fuse_loop_cfg_set_idle_threads(loop, 16);
	ret = fuse_session_loop_mt(se, loop);
	fuse_loop_cfg_destroy(loop);
	/* libfuse returns the signal that ended it: SIGTERM is a clean stop. */
	if (ret == SIGTERM || ret == SIGINT)
		ret = 0;
	ret = ret != 0;

	notify_systemd("STOPPING=1");
	mf_notice("unmounting %s", cl.mountpoint);
	reload_stop();
	fuse_remove_signal_handlers(se);
	signals_set = false;
	/* Unmount before draining: nothing waits on a mount not served. */
	mf_store_set_notify(NULL);
	mf_notifier_stop();
	fuse_session_unmount(se);
	mounted = false;
	drain_queues(dmn.cfg->drain_timeout);
	mf_status_stop();
	for (unsigned int i = 0; i < dmn.cfg->account_count; i++)
		mf_engine_stop(&dmn.slots[i].e);
	mf_engine_free_retired();
	holds_clear();
	free(dmn.slots);
	dmn.slots = NULL;
out_signals:
	if (signals_set)
		fuse_remove_signal_handlers(se);
	if (mounted)
		fuse_session_unmount(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	mf_fs_deinit();
out:
	reload_stop();
	free(err);
	mf_blob_deinit();
	mf_store_close();
	/* The first config is among the retired after a reload. */
	if (dmn.cfg != cfg)
		mf_config_free(&dmn.cfg);
	for (unsigned int i = 0; i < dmn.nretired; i++) {
		if (dmn.retired[i] != cfg)
			mf_config_free(&dmn.retired[i]);
	}
	free(dmn.retired);
	mf_config_free(&cfg);
	if (lockfd >= 0)
		close(lockfd);
out_args:
	free(cl.config);
	free(cl.debug);
	free(cl.source);
	free(cl.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
