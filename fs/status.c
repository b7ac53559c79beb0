/*
 * The status socket: mount.mailfs --status MOUNTPOINT asks a running
 * daemon, over a Unix socket only its user can open, what each account is
 * doing; --accept applies a change the mass-deletion guard held back.
 *
 * The socket is $XDG_RUNTIME_DIR/mailfs/<hash of the mount point>.sock
 * (or /tmp/mailfs-<uid>/... without XDG_RUNTIME_DIR), so the client finds
 * it from the mount point alone. Requests are one line:
 *   status
 *   accept ACCOUNT FOLDER
 * and the answer is text until the daemon closes the connection.
 */
#include "fs.h"
#include "mf_blob.h"
#include "mf_engine.h"
#include "mf_store.h"
#include "mf_util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define STATUS_LINE_MAX 4096

static struct {
	int fd;
	int stop_pipe[2];
	char *path;
	char *mountpoint;
	const struct mf_config *cfg;
	pthread_t thread;
	bool running;
} st = { .fd = -1, .stop_pipe = { -1, -1 } };

/*
 * Candidate directories of the socket, in order: $XDG_RUNTIME_DIR/mailfs,
 * /run/user/UID/mailfs (mount(8) runs helpers without XDG_RUNTIME_DIR,
 * while the user's shell has it), /tmp/mailfs-UID. NULL past the end.
 */
static char *socket_dir(int which)
{
	const char *run = getenv("XDG_RUNTIME_DIR");
	char *dir;
	struct stat sb;

	switch (which) {
	case 0:
		if (run && run[0] == '/')
			return xasprintf("%s/mailfs", run);
		return xstrdup("");
	case 1:
		dir = xasprintf("/run/user/%u", (unsigned int)getuid());
		if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) &&
		    sb.st_uid == getuid()) {
			char *d = xasprintf("%s/mailfs", dir);

			free(dir);
			return d;
		}
		free(dir);
		return xstrdup("");
	case 2:
		return xasprintf("/tmp/mailfs-%u", (unsigned int)getuid());
	default:
		return NULL;
	}
}

static char *socket_path_in(const char *dir, const char *mountpoint)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	EVP_Digest(mountpoint, strlen(mountpoint), md, &mdlen, EVP_sha256(),
		   NULL);
	mf_hex(md, 8, hex);
	return xasprintf("%s/%s.sock", dir, hex);
}

char *mf_status_socket_path(const char *mountpoint)
{
	for (int i = 0;; i++) {
		char *dir = socket_dir(i);

		if (dir[0]) {
			char *path = socket_path_in(dir, mountpoint);

			free(dir);
			return path;
		}
		free(dir);
	}
}

void mf_status_set_config(const struct mf_config *cfg)
{
	__atomic_store_n(&st.cfg, cfg, __ATOMIC_RELEASE);
}

/* The body cache against cache_max_size, when there is a limit. */
static void status_cache(struct mf_buf *out)
{
	struct mf_blob_stats bs;

	mf_blob_stats(&bs);
	if (bs.max_size)
		mf_buf_printf(out, "cache: %llu of %llu bytes (cache_max_size), "
			      "%llu bodies evicted\n",
			      (unsigned long long)bs.size,
			      (unsigned long long)bs.max_size,
			      (unsigned long long)bs.evicted);
}

static void answer(int fd, const char *line)
{
	const struct mf_config *cfg = __atomic_load_n(&st.cfg,
						      __ATOMIC_ACQUIRE);
	struct mf_buf out;

	mf_buf_init(&out);
	if (strcmp(line, "status") == 0) {
		mf_buf_printf(&out, "mailfs %s on %s (pid %d), %u account%s"
			      "\n", MAILFS_VERSION, st.mountpoint,
			      (int)getpid(), cfg->account_count,
			      cfg->account_count == 1 ? "" : "s");
		status_cache(&out);
		for (unsigned int i = 0; i < cfg->account_count; i++) {
			struct mf_engine *e =
				mf_engine_find(cfg->accounts[i].name);

			if (e)
				mf_engine_status(e, &out);
			else
				mf_buf_printf(&out, "account %s: not running "
					      "(see the log)\n",
					      cfg->accounts[i].name);
		}
	} else if (strncmp(line, "accept ", 7) == 0) {
		const char *acct = line + 7;
		const char *sp = strchr(acct, ' ');
		char *name = sp ? xstrndup(acct, (size_t)(sp - acct)) : NULL;
		struct mf_engine *e = name ? mf_engine_find(name) : NULL;
		int ret = e ? mf_store_folder_accept(name, sp + 1) : -ENOENT;

		if (ret == 0) {
			mf_notice("%s: accepted what the server says of %s",
				  name, sp + 1);
			mf_buf_printf(&out, "ok: the next sync of %s applies "
				      "what the server says\n", sp + 1);
			mf_engine_kick(e);
		} else if (ret == -EALREADY) {
			mf_buf_printf(&out, "error: nothing is held back in "
				      "%s\n", sp + 1);
		} else {
			mf_buf_printf(&out, "error: no such account or "
				      "folder\n");
		}
		free(name);
	} else {
		mf_buf_appends(&out, "error: unknown request (status, "
			       "accept ACCOUNT FOLDER)\n");
	}
	mf_write_all(fd, out.data, out.len);
	mf_buf_free(&out);
}

static void serve(int fd)
{
	char line[STATUS_LINE_MAX];
	size_t len = 0;

	while (len < sizeof(line) - 1) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		/* A client that says nothing does not hold the thread. */
		if (poll(&p, 1, 2000) <= 0)
			return;
		n = read(fd, line + len, sizeof(line) - 1 - len);
		if (n <= 0)
			return;
		len += (size_t)n;
		line[len] = '\0';
		if (strchr(line, '\n'))
			break;
	}
	line[strcspn(line, "\r\n")] = '\0';
	answer(fd, line);
}

static void *status_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd p[2] = { { st.fd, POLLIN, 0 },
				       { st.stop_pipe[0], POLLIN, 0 } };
		int c;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		c = accept4(st.fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		serve(c);
		close(c);
	}
	return NULL;
}

int mf_status_start(const struct mf_config *cfg, const char *mountpoint)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *dir;

	mf_status_set_config(cfg);
	st.mountpoint = xstrdup(mountpoint);
	st.path = mf_status_socket_path(mountpoint);
	if (strlen(st.path) >= sizeof(sa.sun_path)) {
		mf_warn("status socket path %s is too long; no status",
			st.path);
		return -ENAMETOOLONG;
	}
	dir = xstrndup(st.path, (size_t)(strrchr(st.path, '/') - st.path));
	mf_mkdirs(dir, 0700);
	free(dir);
	memcpy(sa.sun_path, st.path, strlen(st.path) + 1);
	st.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (st.fd < 0 || pipe2(st.stop_pipe, O_CLOEXEC) < 0)
		goto fail;
	unlink(st.path);	/* a stale socket of a daemon that died */
	if (bind(st.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(st.path, 0600) < 0 || listen(st.fd, 8) < 0)
		goto fail;
	pthread_create(&st.thread, NULL, status_main, NULL);
	st.running = true;
	return 0;
fail:
	mf_warn("cannot serve status on %s: %s", st.path, strerror(errno));
	if (st.fd >= 0)
		close(st.fd);
	st.fd = -1;
	return -errno;
}

void mf_status_stop(void)
{
	if (st.running) {
		if (write(st.stop_pipe[1], "x", 1) < 0)
			mf_debug(MF_DBG_FS, "status: stop pipe");
		pthread_join(st.thread, NULL);
		st.running = false;
		unlink(st.path);
	}
	if (st.fd >= 0)
		close(st.fd);
	for (int i = 0; i < 2; i++) {
		if (st.stop_pipe[i] >= 0)
			close(st.stop_pipe[i]);
		st.stop_pipe[i] = -1;
	}
	st.fd = -1;
	free(st.path);
	free(st.mountpoint);
	st.path = NULL;
	st.mountpoint = NULL;
}

/* Connect to the daemon of mountpoint, trying each socket directory. */
static int client_connect(const char *mountpoint, char **tried_r)
{
	struct mf_buf tried;
	char *dir;
	int fd = -1;

	mf_buf_init(&tried);
	for (int i = 0; fd < 0 && (dir = socket_dir(i)) != NULL; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		char *path;

		if (!dir[0]) {
			free(dir);
			continue;
		}
		path = socket_path_in(dir, mountpoint);
		free(dir);
		if (strlen(path) < sizeof(sa.sun_path)) {
			memcpy(sa.sun_path, path, strlen(path) + 1);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd >= 0 && connect(fd, (struct sockaddr *)&sa,
					       sizeof(sa)) < 0) {
				mf_buf_printf(&tried, "%s%s: %s",
					      tried.len ? ", " : "", path,
					      strerror(errno));
				close(fd);
				fd = -1;
			}
		}
		free(path);
	}
	*tried_r = mf_buf_steal(&tried);
	return fd;
}

/*
 * The absolute path of a mount point without a stat() of the mount point
 * itself: that would wait for the daemon, which holds requests during a
 * first listing (and the status is how to see its progress).
 */
static char *mountpoint_path(const char *mountpoint)
{
	char *copy = xstrdup(mountpoint), *slash, *dir, *base, *real = NULL;
	size_t n = strlen(copy);

	while (n > 1 && copy[n - 1] == '/')
		copy[--n] = '\0';
	slash = strrchr(copy, '/');
	if (slash) {
		*slash = '\0';
		dir = slash == copy ? "/" : copy;
		base = slash + 1;
	} else {
		dir = ".";
		base = copy;
	}
	if (strcmp(base, ".") != 0 && strcmp(base, "..") != 0 && base[0]) {
		char *rdir = realpath(dir, NULL);

		if (rdir) {
			real = xasprintf("%s%s%s", rdir,
					 strcmp(rdir, "/") == 0 ? "" : "/",
					 base);
			free(rdir);
		}
	} else {
		real = realpath(mountpoint, NULL);
	}
	free(copy);
	return real;
}

int mf_status_client(const char *mountpoint, const char *request)
{
	char *real = mountpoint_path(mountpoint);
	char *tried = NULL;
	char buf[4096];
	int fd, ret = 0;
	ssize_t n;

	fd = client_connect(real ? real : mountpoint, &tried);
	free(real);
	if (fd < 0) {
		fprintf(stderr, "mount.mailfs: no mailfs is serving %s (%s)\n",
			mountpoint, tried ? tried : "");
		free(tried);
		return 1;
	}
	free(tried);
	if (mf_write_all(fd, request, strlen(request)) < 0 ||
	    mf_write_all(fd, "\n", 1) < 0) {
		close(fd);
		return 1;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			break;
		if (memmem(buf, (size_t)n, "error:", 6))
			ret = 1;
	}
	close(fd);
	return ret;
}
