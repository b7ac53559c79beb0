/*
 * Shared utilities: allocation, buffers, logging, small I/O helpers.
 */
#include "mf_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static void oom(void)
{
	static const char msg[] = "mailfs: out of memory\n";
	ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)r;
	abort();
}

void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);
	if (!p)
		oom();
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (!p)
		oom();
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		oom();
	return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
	char *p;
	if (vasprintf(&p, fmt, ap) < 0)
		oom();
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

/* ---- buffers ---- */

void mf_buf_init(struct mf_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void mf_buf_free(struct mf_buf *b)
{
	free(b->data);
	mf_buf_init(b);
}

void mf_buf_reset(struct mf_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void mf_buf_reserve(struct mf_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t cap;

	if (need < b->len)
		oom();
	if (need <= b->cap)
		return;
	cap = b->cap ? b->cap : 64;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			oom();
		cap *= 2;
	}
	b->data = xrealloc(b->data, cap);
	if (b->cap == 0)
		b->data[b->len] = '\0';	/* the promise holds from the start */
	b->cap = cap;
}

void mf_buf_append(struct mf_buf *b, const void *data, size_t len)
{
	mf_buf_reserve(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void mf_buf_appendc(struct mf_buf *b, char c)
{
	mf_buf_append(b, &c, 1);
}

void mf_buf_appends(struct mf_buf *b, const char *s)
{
	mf_buf_append(b, s, strlen(s));
}

void mf_buf_printf(struct mf_buf *b, const char *fmt, ...)
{
	va_list ap, ap2;
	char small[256];
	int n;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		oom();
	if ((size_t)n < sizeof(small)) {
		va_end(ap2);
		mf_buf_append(b, small, (size_t)n);
		return;
	}
	mf_buf_reserve(b, (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	b->len += (size_t)n;
}

void mf_buf_consume(struct mf_buf *b, size_t n)
{
	if (n >= b->len) {
		mf_buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

char *mf_buf_steal(struct mf_buf *b)
{
	char *p = b->data ? b->data : xstrdup("");
	mf_buf_init(b);
	return p;
}

/* ---- logging ---- */

static struct {
	bool syslog;
	enum mf_log_level level;
	unsigned int areas;
	pthread_mutex_t lock;
} log_cfg = {
	.level = MF_LOG_INFO,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

void mf_log_init(const char *ident, bool use_syslog, enum mf_log_level level,
		 unsigned int debug_areas)
{
	log_cfg.syslog = use_syslog;
	log_cfg.level = level;
	log_cfg.areas = debug_areas;
	if (debug_areas && level < MF_LOG_DEBUG)
		log_cfg.level = MF_LOG_DEBUG;
	if (use_syslog)
		openlog(ident, LOG_PID, LOG_DAEMON);
}

unsigned int mf_log_parse_areas(const char *spec)
{
	static const struct {
		const char *name;
		unsigned int bit;
	} areas[] = {
		{ "fs", MF_DBG_FS },	   { "imap", MF_DBG_IMAP },
		{ "sync", MF_DBG_SYNC },   { "store", MF_DBG_STORE },
		{ "queue", MF_DBG_QUEUE }, { "http", MF_DBG_HTTP },
		{ "auth", MF_DBG_AUTH },   { "all", MF_DBG_ALL },
	};
	unsigned int mask = 0;
	const char *p = spec;

	while (p && *p) {
		size_t n = strcspn(p, ",:+ ");
		for (size_t i = 0; i < MF_ARRAY_SIZE(areas); i++) {
			if (strlen(areas[i].name) == n &&
			    strncmp(areas[i].name, p, n) == 0)
				mask |= areas[i].bit;
		}
		p += n;
		if (*p)
			p++;
	}
	return mask;
}

bool mf_log_debug_enabled(unsigned int area)
{
	return (log_cfg.areas & area) != 0;
}

void mf_vlog(enum mf_log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = {
		[MF_LOG_ERR] = "error",	    [MF_LOG_WARNING] = "warning",
		[MF_LOG_NOTICE] = "notice", [MF_LOG_INFO] = "info",
		[MF_LOG_DEBUG] = "debug",
	};
	struct timespec ts;
	struct tm tm;
	char when[32];

	if (level > log_cfg.level)
		return;
	if (log_cfg.syslog) {
		vsyslog((int)level, fmt, ap);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	pthread_mutex_lock(&log_cfg.lock);
	fprintf(stderr, "%s.%03ld mailfs %s: ", when, ts.tv_nsec / 1000000,
		names[level] ? names[level] : "log");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&log_cfg.lock);
}

void mf_log(enum mf_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	mf_vlog(level, fmt, ap);
	va_end(ap);
}

/* ---- time, paths, I/O ---- */

int64_t mf_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mf_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *mf_expand_home(const char *path)
{
	const char *home;

	if (path[0] != '~' || (path[1] != '/' && path[1] != '\0'))
		return xstrdup(path);
	home = getenv("HOME");
	if (!home || !*home)
		home = "/";
	return xasprintf("%s%s", home, path + 1);
}

int mf_mkdirs(const char *path, mode_t mode)
{
	char *p = xstrdup(path);
	char *s = p;
	int ret = 0;

	while (*s == '/')
		s++;
	for (;;) {
		char *slash = strchr(s, '/');
		if (slash)
			*slash = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			ret = -errno;
			break;
		}
		if (!slash)
			break;
		*slash = '/';
		s = slash + 1;
		while (*s == '/')
			s++;
		if (!*s)
			break;
	}
	free(p);
	return ret;
}

int mf_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t mf_pread_all(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int mf_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out_r)
{
	uint64_t v = 0;

	if (len == 0)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned int d;
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned int)(s[i] - '0');
		if (v > (max - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out_r = v;
	return 0;
}

void mf_hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

int mf_unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int mf_run_command_line(const char *cmd, char **out_r, char **error_r)
{
	int pipefd[2];
	struct mf_buf out;
	pid_t pid;
	int status;
	char chunk[512];

	*out_r = NULL;
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		*error_r = xasprintf("pipe: %s", strerror(errno));
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		int e = errno;
		close(pipefd[0]);
		close(pipefd[1]);
		*error_r = xasprintf("fork: %s", strerror(e));
		return -e;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, STDIN_FILENO);
		dup2(pipefd[1], STDOUT_FILENO);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	mf_buf_init(&out);
	for (;;) {
		ssize_t n = read(pipefd[0], chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		/* Only the first line matters; cap what we keep. */
		if (out.len < 65536)
			mf_buf_append(&out, chunk, (size_t)n);
	}
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		explicit_bzero(out.data ? out.data : chunk,
			       out.data ? out.len : sizeof(chunk));
		mf_buf_free(&out);
		*error_r = xasprintf("command exited with status %d",
				     WIFEXITED(status) ? WEXITSTATUS(status)
						       : 128 + WTERMSIG(status));
		return -EIO;
	}
	explicit_bzero(chunk, sizeof(chunk));
	out.len = strcspn(out.data ? out.data : "", "\r\n");
	if (out.data)
		out.data[out.len] = '\0';
	*out_r = mf_buf_steal(&out);
	return 0;
}

void mf_harden_process(void)
{
	struct rlimit nocore = { 0, 0 };
	const char *allow = getenv("MAILFS_ALLOW_COREDUMP");

	if (allow && strcmp(allow, "1") == 0)
		return;
	if (setrlimit(RLIMIT_CORE, &nocore) < 0)
		mf_warn("cannot disable core dumps: %s", strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		mf_warn("cannot mark the process undumpable: %s",
			strerror(errno));
}
