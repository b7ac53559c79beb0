/*
 * mailfs — small shared utilities: allocation that aborts on OOM, a growable
 * byte buffer, logging, time and path helpers.
 *
 * Everything here is thread-safe unless a comment says otherwise.
 */
#ifndef MF_UTIL_H
#define MF_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MF_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MF_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MF_MAX(a, b) ((a) > (b) ? (a) : (b))

#ifndef container_of
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#endif

#define MF_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Allocation: these never return NULL; they abort on out-of-memory. */
void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) MF_PRINTF(1, 2);
char *xvasprintf(const char *fmt, va_list ap) MF_PRINTF(1, 0);

/*
 * Growable byte buffer, always NUL-terminated after len bytes.
 * Not thread-safe; owned by whoever holds it.
 */
struct mf_buf {
	char *data;	/* owned; NULL until the first append */
	size_t len;
	size_t cap;
};

void mf_buf_init(struct mf_buf *b);
void mf_buf_free(struct mf_buf *b);
void mf_buf_reset(struct mf_buf *b);
void mf_buf_reserve(struct mf_buf *b, size_t extra);
void mf_buf_append(struct mf_buf *b, const void *data, size_t len);
void mf_buf_appendc(struct mf_buf *b, char c);
void mf_buf_appends(struct mf_buf *b, const char *s);
void mf_buf_printf(struct mf_buf *b, const char *fmt, ...) MF_PRINTF(2, 3);
/* Remove the first n bytes. */
void mf_buf_consume(struct mf_buf *b, size_t n);
/* Hand the data over to the caller (never NULL); the buffer is reset. */
char *mf_buf_steal(struct mf_buf *b);

/* Logging. Levels follow syslog; debug output is per area. */
enum mf_log_level {
	MF_LOG_ERR = 3,
	MF_LOG_WARNING = 4,
	MF_LOG_NOTICE = 5,
	MF_LOG_INFO = 6,
	MF_LOG_DEBUG = 7,
};

/* Debug areas, enabled with -d (all) or -o debug=imap,sync,... */
#define MF_DBG_FS	(1u << 0)
#define MF_DBG_IMAP	(1u << 1)
#define MF_DBG_SYNC	(1u << 2)
#define MF_DBG_STORE	(1u << 3)
#define MF_DBG_QUEUE	(1u << 4)
#define MF_DBG_HTTP	(1u << 5)	/* Graph, Gmail, OAuth requests */
#define MF_DBG_AUTH	(1u << 6)
#define MF_DBG_ALL	0xffffffffu

void mf_log_init(const char *ident, bool use_syslog, enum mf_log_level level,
		 unsigned int debug_areas);
/* Parse "imap,sync,fs" or "all" into a mask; unknown names are ignored. */
unsigned int mf_log_parse_areas(const char *spec);
bool mf_log_debug_enabled(unsigned int area);
void mf_log(enum mf_log_level level, const char *fmt, ...) MF_PRINTF(2, 3);
void mf_vlog(enum mf_log_level level, const char *fmt, va_list ap)
	MF_PRINTF(2, 0);

#define mf_err(...) mf_log(MF_LOG_ERR, __VA_ARGS__)
#define mf_warn(...) mf_log(MF_LOG_WARNING, __VA_ARGS__)
#define mf_notice(...) mf_log(MF_LOG_NOTICE, __VA_ARGS__)
#define mf_info(...) mf_log(MF_LOG_INFO, __VA_ARGS__)
#define mf_debug(area, ...)                              \
	do {                                             \
		if (mf_log_debug_enabled(area))          \
			mf_log(MF_LOG_DEBUG, __VA_ARGS__); \
	} while (0)

/* Time. */
int64_t mf_now_ns(void);	/* CLOCK_REALTIME in ns */
int64_t mf_mono_ms(void);	/* CLOCK_MONOTONIC in ms */

/*
 * Expand a leading "~/" with $HOME. Returns a new string.
 */
char *mf_expand_home(const char *path);

/* mkdir -p with the given mode for every created component. 0 or -errno. */
int mf_mkdirs(const char *path, mode_t mode);

/* write() the whole buffer, retrying on EINTR and short writes. 0/-errno */
int mf_write_all(int fd, const void *buf, size_t len);
/* pread() until len bytes or EOF. Returns bytes read or -errno. */
ssize_t mf_pread_all(int fd, void *buf, size_t len, off_t off);

/*
 * Parse a decimal unsigned number that must fit into max.
 * Returns 0, or -EINVAL / -ERANGE. No sign, no spaces, no trailing junk.
 */
int mf_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out_r);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void mf_hex(const unsigned char *in, size_t n, char *out);
/* The value of hex digit c (either case), or -1. */
int mf_unhex(char c);

/*
 * Run "sh -c cmd" and return the first line of its stdout (without the
 * newline) in *out_r. The command is user configuration, never built from
 * server data. Returns 0, or -errno with a message in *error_r.
 *
 * Convention across mailfs: a "char **error_r" receives a string the caller
 * owns and must free().
 */
int mf_run_command_line(const char *cmd, char **out_r, char **error_r);

/*
 * Keep secrets (passwords, tokens) out of core dumps and away from
 * ptrace by other processes of the same user: RLIMIT_CORE 0 and
 * PR_SET_DUMPABLE 0, as ssh-agent does. MAILFS_ALLOW_COREDUMP=1 in the
 * environment skips it for debugging.
 */
void mf_harden_process(void);

#endif
