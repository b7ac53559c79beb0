/*
 * IMAP connection: transport, login, command I/O (see imap_conn.h).
 *
 * Transport: a small stack of layers (imap_layer.h), each with read/write
 * that block up to a deadline: the socket layer (non-blocking fd + poll),
 * the TLS layer (OpenSSL on the same fd), and the deflate layer
 * (COMPRESS=DEFLATE after login, imap_deflate.c) on top of either. Output
 * is flushed at the end of each command and before waiting for a "+".
 * Every poll also watches an eventfd, so imap_conn_interrupt() from
 * another thread wakes a blocked call; an atomic flag makes a busy reader
 * notice it too.
 *
 * Tunnel (acct->tunnel): instead of TCP, "sh -c COMMAND" runs with its
 * stdin and stdout on one end of a socketpair, and the socket layer works
 * on the other end exactly as on a TCP socket (timeouts, interrupts). The
 * command is expected to be logged in already ("* PREAUTH"); there is no
 * TLS over it. Its stderr is inherited (ssh prompts and errors reach the
 * log). Closing the connection closes our end and reaps the child, sending
 * SIGTERM (then SIGKILL) when it does not exit on its own.
 *
 * Pipelining: imap_conn_run_pipeline() sends several literal-free commands
 * before reading any answer; the dispatcher matches tagged responses to
 * them by tag.
 *
 * Responses: raw bytes go into c->in, are fed to the parser, and the
 * parser's callback (on_response) dispatches: capabilities, ENABLED and
 * BYE are recorded here; other untagged responses go to the running
 * command's callback; a continuation or the command's tagged response
 * make the parser pause so the rest of the input stays buffered for later
 * (that matters for STARTTLS: nothing may follow the tagged OK in clear).
 *
 * Secrets: the password lives only in a wiped command buffer during
 * LOGIN/AUTHENTICATE; the debug log shows commands up to the point marked
 * sensitive, then "<hidden>".
 */
#include "imap_conn.h"
#include "imap_layer.h"

#include "mf_config.h"
#include "mf_http.h"
#include "mf_oauth.h"
#include "mf_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define IN_BUF_SIZE (64 * 1024)
/* How long a tunnel command may take to exit before each signal (ms). */
#define TUNNEL_EXIT_MS 1000
#define LOG_MAX 1000

struct tls_layer {
	struct imap_layer base;
	SSL_CTX *ctx;
	SSL *ssl;
};

/* The state of the command (or greeting) being waited for. */
struct conn_op {
	const char *tag;		/* NULL: waiting for the greeting */
	imap_untagged_cb *cb;
	void *ctx;
	struct imap_result *res;	/* foreign */
	bool want_cont;
	bool got_cont;
	bool done;
	bool stop;			/* make the pump return */
	bool idle;			/* cb returning 1 stops the pump */
	bool changed;			/* cb returned 1 */
	enum imap_status greet_status;
	char *greet_text;		/* owned */
	/* imap_conn_run_pipeline(): the tags and results of its commands
	   (pipe_count > 0; tag is then "" and unused) */
	char (*pipe_tags)[16];		/* foreign */
	struct imap_result *pipe_res;	/* foreign */
	bool *pipe_done;		/* foreign */
	unsigned int pipe_count, pipe_left;
};

struct imap_conn {
	const struct mf_account *acct;	/* foreign */
	char *host;			/* owned */
	unsigned int port;
	unsigned int timeout_ms;

	int fd;
	pid_t tunnel_pid;		/* the tunnel command, or 0 */
	struct imap_layer *top;		/* owned; NULL when closed */
	struct imap_parser *parser;	/* owned */
	char *in;			/* owned, IN_BUF_SIZE */
	size_t in_start, in_end;

	int intr_fd;			/* eventfd */
	atomic_bool intr;

	bool connected;			/* logged in and usable */
	unsigned int generation;
	unsigned int caps;
	bool caps_known;
	bool qresync;
	bool logging_out;		/* BYE is expected */
	bool got_bye;
	unsigned int tag_seq;

	struct conn_op *op;		/* foreign; the running command */
	char *bye_text;			/* owned */
	char *io_error;			/* owned; last transport error */
	char *proto_error;		/* owned; dispatcher error */
};

static void set_str(char **dst, char *s)
{
	free(*dst);
	*dst = s;
}

/* ---- commands ---- */

void imap_cmd_init(struct imap_cmd *cmd, const char *verb)
{
	memset(cmd, 0, sizeof(*cmd));
	mf_buf_init(&cmd->text);
	mf_buf_appends(&cmd->text, verb);
}

void imap_cmd_clear(struct imap_cmd *cmd)
{
	for (unsigned int i = 0; i < cmd->part_count; i++) {
		struct imap_cmd_part *p = &cmd->parts[i];
		if (p->data != NULL) {
			if (cmd->sensitive)
				explicit_bzero(p->data, p->size);
			free(p->data);
		}
	}
	if (cmd->sensitive && cmd->text.data != NULL)
		explicit_bzero(cmd->text.data, cmd->text.cap);
	mf_buf_free(&cmd->text);
	memset(cmd, 0, sizeof(*cmd));
}

void imap_cmd_add(struct imap_cmd *cmd, const char *text)
{
	mf_buf_appends(&cmd->text, text);
}

void imap_cmd_addf(struct imap_cmd *cmd, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	mf_buf_appends(&cmd->text, s);
	free(s);
}

void imap_quote(struct mf_buf *b, const char *s)
{
	mf_buf_appendc(b, '"');
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			mf_buf_appendc(b, '\\');
		mf_buf_appendc(b, *s);
	}
	mf_buf_appendc(b, '"');
}

static struct imap_cmd_part *add_part(struct imap_cmd *cmd,
				      enum imap_part_kind kind)
{
	struct imap_cmd_part *p;

	if (cmd->part_count >= IMAP_CMD_MAX_PARTS)
		abort();	/* a bug: commands are built by this code */
	p = &cmd->parts[cmd->part_count++];
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->text_off = cmd->text.len;
	p->fd = -1;
	return p;
}

void imap_cmd_add_string(struct imap_cmd *cmd, const char *s)
{
	size_t len = strlen(s);
	bool literal = len > 1000;

	for (size_t i = 0; i < len && !literal; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c >= 0x80)
			literal = true;
	}
	mf_buf_appendc(&cmd->text, ' ');
	if (!literal) {
		imap_quote(&cmd->text, s);
		return;
	}
	struct imap_cmd_part *p = add_part(cmd, IMAP_PART_MEM);
	p->data = xstrndup(s, len);
	p->size = len;
}

void imap_cmd_add_fd_literal(struct imap_cmd *cmd, int fd, uint64_t size)
{
	struct imap_cmd_part *p;

	mf_buf_appendc(&cmd->text, ' ');
	p = add_part(cmd, IMAP_PART_FD);
	p->fd = fd;
	p->size = size;
}

void imap_cmd_add_cont_line(struct imap_cmd *cmd, const char *line)
{
	struct imap_cmd_part *p = add_part(cmd, IMAP_PART_CONT_LINE);

	p->data = xstrdup(line);
	p->size = strlen(line);
}

void imap_cmd_mark_sensitive(struct imap_cmd *cmd)
{
	cmd->sensitive = true;
	cmd->log_len = cmd->text.len;
}

/* ---- results ---- */

void imap_result_clear(struct imap_result *res)
{
	free(res->code);
	free(res->text);
	memset(res, 0, sizeof(*res));
}

bool imap_result_has_code(const struct imap_result *res, const char *name)
{
	size_t n = strlen(name);

	if (res->code == NULL)
		return false;
	return strncasecmp(res->code, name, n) == 0 &&
	       (res->code[n] == '\0' || res->code[n] == ' ');
}

static const char *status_word(enum imap_status st)
{
	switch (st) {
	case IMAP_STATUS_OK:
		return "OK";
	case IMAP_STATUS_NO:
		return "NO";
	case IMAP_STATUS_BAD:
		return "BAD";
	case IMAP_STATUS_BYE:
		return "BYE";
	case IMAP_STATUS_PREAUTH:
		return "PREAUTH";
	case IMAP_STATUS_NONE:
		break;
	}
	return "?";
}

enum mf_status imap_result_status(const struct imap_result *res,
				  const char *what, char **error_r)
{
	static const char *const gone[] = { "TRYCREATE", "NONEXISTENT" };
	static const char *const temp[] = {
		"UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT",
	};
	enum mf_status st = MF_PROTO;

	if (res->status == IMAP_STATUS_OK)
		return MF_OK;
	if (res->status == IMAP_STATUS_NO) {
		for (size_t i = 0; i < MF_ARRAY_SIZE(gone); i++) {
			if (imap_result_has_code(res, gone[i]))
				st = MF_GONE;
		}
		for (size_t i = 0; i < MF_ARRAY_SIZE(temp); i++) {
			if (imap_result_has_code(res, temp[i]))
				st = MF_TEMP;
		}
	}
	if (error_r != NULL) {
		*error_r = xasprintf("%s: %s%s%s%s %s", what,
				     status_word(res->status),
				     res->code != NULL ? " [" : "",
				     res->code != NULL ? res->code : "",
				     res->code != NULL ? "]" : "",
				     res->text != NULL ? res->text : "");
	}
	return st;
}

/* ---- polling and layers ---- */

static int64_t deadline_in(const struct imap_conn *c)
{
	return mf_mono_ms() + c->timeout_ms;
}

static void clear_interrupt(struct imap_conn *c)
{
	uint64_t v;
	ssize_t r;

	atomic_store(&c->intr, false);
	r = read(c->intr_fd, &v, sizeof(v));
	(void)r;
}

static bool take_interrupt(struct imap_conn *c)
{
	if (!atomic_load(&c->intr))
		return false;
	clear_interrupt(c);
	return true;
}

/* Wait for events on fd. 0, -ETIMEDOUT, -ECANCELED, -errno. */
static int conn_poll(struct imap_conn *c, int fd, short events,
		     int64_t deadline)
{
	struct pollfd fds[2];
	int n;

	for (;;) {
		int64_t left = deadline - mf_mono_ms();
		if (left < 0)
			left = 0;
		fds[0].fd = fd;
		fds[0].events = events;
		fds[0].revents = 0;
		fds[1].fd = c->intr_fd;
		fds[1].events = POLLIN;
		fds[1].revents = 0;
		/* a negative fd (imap_conn_sleep) is ignored by poll() */
		n = poll(fds, 2, (int)MF_MIN(left, INT32_MAX));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (fds[1].revents != 0 || atomic_load(&c->intr)) {
			clear_interrupt(c);
			return -ECANCELED;
		}
		if (n == 0)
			return -ETIMEDOUT;
		if (fds[0].revents != 0)
			return 0;
	}
}

static ssize_t sock_read(struct imap_layer *l, void *buf, size_t len,
			 int64_t deadline)
{
	struct imap_conn *c = l->conn;
	ssize_t n;
	int r;

	for (;;) {
		if (take_interrupt(c))
			return -ECANCELED;
		n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			set_str(&c->io_error, xasprintf("read from %s: %s",
							c->host,
							strerror(errno)));
			return -EIO;
		}
		r = conn_poll(c, c->fd, POLLIN, deadline);
		if (r < 0)
			return r;
	}
}

static int sock_write(struct imap_layer *l, const void *buf, size_t len,
		      int64_t deadline)
{
	struct imap_conn *c = l->conn;
	const char *p = buf;
	ssize_t n;
	int r;

	while (len > 0) {
		if (take_interrupt(c))
			return -ECANCELED;
		n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			set_str(&c->io_error, xasprintf("write to %s: %s",
							c->host,
							strerror(errno)));
			return -EIO;
		}
		r = conn_poll(c, c->fd, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
	return 0;
}

static void sock_free(struct imap_layer *l)
{
	free(l);
}

static const struct imap_layer_ops sock_ops = {
	.read = sock_read,
	.write = sock_write,
	.flush = NULL,
	.free = sock_free,
};

static void ssl_errors(struct mf_buf *b)
{
	unsigned long e;
	char tmp[256];
	bool first = true;

	for (e = ERR_get_error(); e != 0; e = ERR_get_error()) {
		ERR_error_string_n(e, tmp, sizeof(tmp));
		mf_buf_appends(b, first ? "" : "; ");
		mf_buf_appends(b, tmp);
		first = false;
	}
	if (first)
		mf_buf_appends(b, "unknown TLS error");
}

/* Handle an SSL_ERROR_*: poll and return 0 to retry, or an error. */
static int tls_wait(struct tls_layer *t, int ret, const char *what,
		    int64_t deadline)
{
	struct imap_conn *c = t->base.conn;
	int err = SSL_get_error(t->ssl, ret);
	struct mf_buf b;

	switch (err) {
	case SSL_ERROR_WANT_READ:
		return conn_poll(c, c->fd, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE:
		return conn_poll(c, c->fd, POLLOUT, deadline);
	case SSL_ERROR_ZERO_RETURN:
		return 1;	/* EOF */
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (errno == 0 || ret == 0)
				return 1;
			set_str(&c->io_error,
				xasprintf("TLS %s %s: %s", what, c->host,
					  strerror(errno)));
			return -EIO;
		}
		break;
	default:
		break;
	}
	mf_buf_init(&b);
	mf_buf_printf(&b, "TLS %s %s: ", what, c->host);
	ssl_errors(&b);
	set_str(&c->io_error, mf_buf_steal(&b));
	return -EIO;
}

static ssize_t tls_read(struct imap_layer *l, void *buf, size_t len,
			int64_t deadline)
{
	struct tls_layer *t = container_of(l, struct tls_layer, base);
	size_t n;
	int r;

	for (;;) {
		if (take_interrupt(l->conn))
			return -ECANCELED;
		ERR_clear_error();
		errno = 0;
		r = SSL_read_ex(t->ssl, buf, len, &n);
		if (r == 1)
			return (ssize_t)n;
		r = tls_wait(t, r, "read from", deadline);
		if (r == 1)
			return 0;
		if (r < 0)
			return r;
	}
}

static int tls_write(struct imap_layer *l, const void *buf, size_t len,
		     int64_t deadline)
{
	struct tls_layer *t = container_of(l, struct tls_layer, base);
	size_t n;
	int r;

	while (len > 0) {
		if (take_interrupt(l->conn))
			return -ECANCELED;
		ERR_clear_error();
		errno = 0;
		r = SSL_write_ex(t->ssl, buf, len, &n);
		if (r == 1) {
			buf = (const char *)buf + n;
			len -= n;
			continue;
		}
		r = tls_wait(t, r, "write to", deadline);
		if (r == 1) {
			set_str(&l->conn->io_error,
				xasprintf("TLS connection to %s closed",
					  l->conn->host));
			return -EIO;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static void tls_free(struct imap_layer *l)
{
	struct tls_layer *t = container_of(l, struct tls_layer, base);

	if (t->ssl != NULL) {
		SSL_set_quiet_shutdown(t->ssl, 1);
		SSL_free(t->ssl);
	}
	SSL_CTX_free(t->ctx);
	/* the socket layer below stays the conn's bottom; free it too */
	if (l->lower != NULL)
		l->lower->ops->free(l->lower);
	free(t);
}

static const struct imap_layer_ops tls_ops = {
	.read = tls_read,
	.write = tls_write,
	.flush = NULL,
	.free = tls_free,
};

/* ---- connection setup ---- */

struct imap_conn *imap_conn_new(const struct mf_account *acct)
{
	struct imap_conn *c = xcalloc(1, sizeof(*c));

	c->acct = acct;
	c->host = xstrdup(acct->host != NULL ? acct->host : "");
	c->port = acct->port;
	if (c->port == 0)
		c->port = acct->tls == MF_TLS_IMPLICIT ? 993 : 143;
	c->timeout_ms = (acct->timeout != 0 ? acct->timeout :
			 IMAP_DEFAULT_TIMEOUT) * 1000u;
	c->fd = -1;
	c->intr_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->intr_fd < 0)
		abort();	/* out of file descriptors at startup */
	atomic_init(&c->intr, false);
	c->in = xmalloc(IN_BUF_SIZE);
	return c;
}

/* Wait up to ms for pid to exit; true when it was reaped. */
static bool tunnel_wait(pid_t pid, int ms)
{
	int64_t end = mf_mono_ms() + ms;
	int status;
	pid_t r;

	for (;;) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR))
			return true;	/* reaped, or not ours */
		if (mf_mono_ms() >= end)
			return false;
		usleep(10 * 1000);
	}
}

/*
 * The tunnel command has seen EOF on its stdin (our end is closed): give
 * it a moment to exit, then SIGTERM, then SIGKILL. Never leaves a zombie.
 */
static void tunnel_reap(pid_t pid)
{
	if (tunnel_wait(pid, TUNNEL_EXIT_MS))
		return;
	mf_debug(MF_DBG_IMAP, "imap: tunnel command (pid %d) still running; "
		 "sending SIGTERM", (int)pid);
	kill(pid, SIGTERM);
	if (tunnel_wait(pid, TUNNEL_EXIT_MS))
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

void imap_conn_close(struct imap_conn *c)
{
	if (c->top != NULL) {
		c->top->ops->free(c->top);
		c->top = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	if (c->tunnel_pid > 0) {
		tunnel_reap(c->tunnel_pid);
		c->tunnel_pid = 0;
	}
	if (c->parser != NULL)
		imap_parser_free(&c->parser);
	c->in_start = c->in_end = 0;
	c->connected = false;
	c->caps = 0;
	c->caps_known = false;
	c->qresync = false;
	c->op = NULL;
	c->logging_out = false;
	c->got_bye = false;
	set_str(&c->bye_text, NULL);
	set_str(&c->proto_error, NULL);
}

void imap_conn_free(struct imap_conn **cp)
{
	struct imap_conn *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	imap_conn_close(c);
	close(c->intr_fd);
	free(c->in);
	free(c->host);
	free(c->io_error);
	free(c->proto_error);
	free(c);
}

bool imap_conn_is_connected(const struct imap_conn *c)
{
	return c->connected;
}

unsigned int imap_conn_generation(const struct imap_conn *c)
{
	return c->generation;
}

unsigned int imap_conn_caps(const struct imap_conn *c)
{
	return c->caps;
}

bool imap_conn_has_cap(const struct imap_conn *c, unsigned int cap)
{
	return (c->caps & cap) != 0;
}

bool imap_conn_qresync(const struct imap_conn *c)
{
	return c->qresync;
}

void imap_conn_interrupt(struct imap_conn *c)
{
	uint64_t one = 1;
	ssize_t r;

	atomic_store(&c->intr, true);
	r = write(c->intr_fd, &one, sizeof(one));
	(void)r;
}

static bool host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0 ||
	    strcasecmp(host, "localhost.") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1) {
		if (IN6_IS_ADDR_LOOPBACK(&a6))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(&a6))
			return a6.s6_addr[12] == 127;
	}
	return false;
}

static bool host_is_ip(const char *host)
{
	unsigned char tmp[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, tmp) == 1 ||
	       inet_pton(AF_INET6, host, tmp) == 1;
}

static void set_keepalive(int fd)
{
	int on = 1, idle = 60, intvl = 20, cnt = 3;

	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

static enum mf_status tcp_connect(struct imap_conn *c, char **error_r)
{
	struct addrinfo hints, *res = NULL, *ai;
	char port[16], addr[INET6_ADDRSTRLEN];
	struct mf_buf errs;
	int r, fd = -1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	snprintf(port, sizeof(port), "%u", c->port);
	r = getaddrinfo(c->host, port, &hints, &res);
	if (r != 0) {
		*error_r = xasprintf("cannot resolve %s: %s", c->host,
				     gai_strerror(r));
		return MF_TEMP;
	}
	mf_buf_init(&errs);
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
			    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			soerr = errno;
			goto next;
		}
		r = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (r < 0 && errno != EINPROGRESS) {
			soerr = errno;
			goto next;
		}
		if (r < 0) {
			r = conn_poll(c, fd, POLLOUT, deadline_in(c));
			if (r == -ECANCELED) {
				close(fd);
				freeaddrinfo(res);
				mf_buf_free(&errs);
				*error_r = xstrdup("interrupted");
				return MF_CANCELED;
			}
			if (r < 0) {
				soerr = -r;
				goto next;
			}
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr,
				       &sl) < 0)
				soerr = errno;
			if (soerr != 0)
				goto next;
		}
		set_keepalive(fd);
		c->fd = fd;
		freeaddrinfo(res);
		mf_buf_free(&errs);
		return MF_OK;
next:
		addr[0] = '\0';
		if (ai->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)
					     (void *)ai->ai_addr)->sin_addr,
				  addr, sizeof(addr));
		else if (ai->ai_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)
					      (void *)ai->ai_addr)->sin6_addr,
				  addr, sizeof(addr));
		mf_buf_printf(&errs, "%s%s: %s", errs.len > 0 ? "; " : "",
			      addr, strerror(soerr));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	*error_r = xasprintf("cannot connect to %s port %u: %s", c->host,
			     c->port, errs.len > 0 ? errs.data : "no address");
	mf_buf_free(&errs);
	return MF_TEMP;
}

/*
 * Run the tunnel command with its stdin/stdout on a socketpair; our end
 * becomes c->fd. Everything is O_CLOEXEC, so the child holds nothing but
 * its end (as fds 0 and 1) and the inherited stderr.
 */
static enum mf_status tunnel_connect(struct imap_conn *c, char **error_r)
{
	const char *cmd = c->acct->tunnel;
	sigset_t all;
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		*error_r = xasprintf("tunnel: socketpair: %s",
				     strerror(errno));
		return MF_TEMP;
	}
	pid = fork();
	if (pid < 0) {
		*error_r = xasprintf("tunnel: fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return MF_TEMP;
	}
	if (pid == 0) {
		/* the child: async-signal-safe calls only */
		static const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP,
					    SIGCHLD };
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_DFL;
		for (size_t i = 0; i < MF_ARRAY_SIZE(sigs); i++)
			sigaction(sigs[i], &sa, NULL);
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		/* dup2 clears O_CLOEXEC on the copies */
		if (dup2(sv[1], STDIN_FILENO) < 0 ||
		    dup2(sv[1], STDOUT_FILENO) < 0)
			_exit(127);
		/* belt and braces for descriptors opened without CLOEXEC
		   elsewhere in the process (libraries) */
		close_range(3, ~0u, 0);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	if (fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK) < 0) {
		*error_r = xasprintf("tunnel: fcntl: %s", strerror(errno));
		close(sv[0]);
		tunnel_reap(pid);
		return MF_TEMP;
	}
	mf_debug(MF_DBG_IMAP, "imap %s: tunnel command started (pid %d)",
		 c->host, (int)pid);
	c->fd = sv[0];
	c->tunnel_pid = pid;
	return MF_OK;
}

static enum mf_status tls_start(struct imap_conn *c, char **error_r)
{
	struct tls_layer *t = xcalloc(1, sizeof(*t));
	const char *ca = c->acct->ca_file;
	struct mf_buf b;
	int r;

	mf_buf_init(&b);
	t->base.ops = &tls_ops;
	t->base.conn = c;
	t->base.io_error = &c->io_error;
	ERR_clear_error();
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (t->ctx == NULL)
		goto ssl_fail;
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (ca != NULL && ca[0] != '\0') {
		if (SSL_CTX_load_verify_locations(t->ctx, ca, NULL) != 1) {
			mf_buf_printf(&b, "cannot load ca_file %s: ", ca);
			ssl_errors(&b);
			*error_r = mf_buf_steal(&b);
			tls_free(&t->base);
			return MF_PROTO;
		}
	} else if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
		goto ssl_fail;
	}
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	t->ssl = SSL_new(t->ctx);
	if (t->ssl == NULL || SSL_set_fd(t->ssl, c->fd) != 1)
		goto ssl_fail;
	if (host_is_ip(c->host)) {
		X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
		if (X509_VERIFY_PARAM_set1_ip_asc(param, c->host) != 1)
			goto ssl_fail;
	} else {
		SSL_set_hostflags(t->ssl,
				  X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set_tlsext_host_name(t->ssl, c->host) != 1 ||
		    SSL_set1_host(t->ssl, c->host) != 1)
			goto ssl_fail;
	}
	for (;;) {
		int64_t deadline = deadline_in(c);
		ERR_clear_error();
		errno = 0;
		r = SSL_connect(t->ssl);
		if (r == 1)
			break;
		long vr = SSL_get_verify_result(t->ssl);
		if (vr != X509_V_OK) {
			*error_r = xasprintf("TLS certificate verification "
					     "failed for %s: %s", c->host,
					     X509_verify_cert_error_string(vr));
			tls_free(&t->base);
			return MF_PROTO;
		}
		r = tls_wait(t, r, "handshake with", deadline);
		if (r == -ECANCELED) {
			tls_free(&t->base);
			*error_r = xstrdup("interrupted");
			return MF_CANCELED;
		}
		if (r == -ETIMEDOUT) {
			tls_free(&t->base);
			*error_r = xasprintf("TLS handshake with %s timed out",
					     c->host);
			return MF_TEMP;
		}
		if (r != 0) {
			*error_r = r == 1 ?
				xasprintf("TLS handshake with %s: connection "
					  "closed", c->host) :
				xstrdup(c->io_error);
			tls_free(&t->base);
			return MF_TEMP;
		}
	}
	mf_debug(MF_DBG_IMAP, "imap %s: TLS %s, %s", c->host,
		 SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
	t->base.lower = c->top;
	c->top = &t->base;
	mf_buf_free(&b);
	return MF_OK;
ssl_fail:
	mf_buf_printf(&b, "TLS setup for %s failed: ", c->host);
	ssl_errors(&b);
	*error_r = mf_buf_steal(&b);
	tls_free(&t->base);
	return MF_PROTO;
}

/* ---- response dispatch ---- */

static const struct {
	const char *name;
	unsigned int cap;
} cap_names[] = {
	{ "IMAP4rev1", IMAP_CAP_IMAP4REV1 },
	{ "IDLE", IMAP_CAP_IDLE },
	{ "MOVE", IMAP_CAP_MOVE },
	{ "UIDPLUS", IMAP_CAP_UIDPLUS },
	{ "CONDSTORE", IMAP_CAP_CONDSTORE },
	{ "QRESYNC", IMAP_CAP_QRESYNC },
	{ "LITERAL+", IMAP_CAP_LITERALPLUS },
	{ "LITERAL-", IMAP_CAP_LITERALMINUS },
	{ "SPECIAL-USE", IMAP_CAP_SPECIAL_USE },
	{ "LIST-EXTENDED", IMAP_CAP_LIST_EXTENDED },
	{ "ENABLE", IMAP_CAP_ENABLE },
	{ "SASL-IR", IMAP_CAP_SASL_IR },
	{ "LOGINDISABLED", IMAP_CAP_LOGINDISABLED },
	{ "STARTTLS", IMAP_CAP_STARTTLS },
	{ "COMPRESS=DEFLATE", IMAP_CAP_COMPRESS },
	{ "AUTH=PLAIN", IMAP_CAP_AUTH_PLAIN },
	{ "AUTH=XOAUTH2", IMAP_CAP_AUTH_XOAUTH2 },
	{ "AUTH=OAUTHBEARER", IMAP_CAP_AUTH_OAUTHBEARER },
	{ "UNSELECT", IMAP_CAP_UNSELECT },
	{ "LIST-STATUS", IMAP_CAP_LIST_STATUS },
};

static void parse_caps(struct imap_conn *c, const struct imap_token *toks,
		       unsigned int count)
{
	unsigned int caps = 0;

	for (unsigned int i = 0; i < count; i++) {
		const char *s = imap_token_str(&toks[i]);
		if (s == NULL)
			continue;
		for (size_t j = 0; j < MF_ARRAY_SIZE(cap_names); j++) {
			if (strcasecmp(s, cap_names[j].name) == 0)
				caps |= cap_names[j].cap;
		}
	}
	c->caps = caps;
	c->caps_known = true;
}

static char *code_string(const struct imap_token *code)
{
	struct mf_buf b;

	mf_buf_init(&b);
	for (unsigned int i = 0; i < code->count; i++) {
		if (i > 0)
			mf_buf_appendc(&b, ' ');
		imap_token_format(&code->list[i], &b, false);
	}
	return mf_buf_steal(&b);
}

static void log_response(struct imap_conn *c, const struct imap_response *r)
{
	struct mf_buf b;

	if (!mf_log_debug_enabled(MF_DBG_IMAP))
		return;
	mf_buf_init(&b);
	imap_response_format(r, &b);
	mf_debug(MF_DBG_IMAP, "imap %s: S: %.*s%s", c->host,
		 (int)MF_MIN(b.len, LOG_MAX), b.data,
		 b.len > LOG_MAX ? "..." : "");
	mf_buf_free(&b);
}

static bool tagged_status_valid(const struct imap_response *r)
{
	return r->status == IMAP_STATUS_OK || r->status == IMAP_STATUS_NO ||
	       r->status == IMAP_STATUS_BAD;
}

/* A tagged response while a pipeline runs: find its command. */
static int pipe_tagged(struct imap_conn *c, struct conn_op *op,
		       const struct imap_response *r)
{
	struct imap_result *res;
	unsigned int i;

	for (i = 0; i < op->pipe_count; i++) {
		if (!op->pipe_done[i] && strcmp(r->tag, op->pipe_tags[i]) == 0)
			break;
	}
	if (i == op->pipe_count) {
		set_str(&c->proto_error,
			xasprintf("unexpected tagged response %s", r->tag));
		return -1;
	}
	if (!tagged_status_valid(r)) {
		set_str(&c->proto_error,
			xasprintf("invalid tagged response %s", r->tag));
		return -1;
	}
	res = &op->pipe_res[i];
	res->status = r->status;
	set_str(&res->code, r->code != NULL ? code_string(r->code) : NULL);
	set_str(&res->text, xstrdup(r->text));
	op->pipe_done[i] = true;
	if (--op->pipe_left > 0)
		return 0;
	op->done = true;
	op->stop = true;
	return 1;
}

static int on_response(void *ctx, const struct imap_response *r)
{
	struct imap_conn *c = ctx;
	struct conn_op *op = c->op;
	int ret;

	log_response(c, r);
	if (r->code != NULL && r->code->count > 0 &&
	    imap_token_is_atom(&r->code->list[0], "CAPABILITY"))
		parse_caps(c, r->code->list + 1, r->code->count - 1);

	if (r->type == IMAP_RESP_CONTINUATION) {
		if (op == NULL || !op->want_cont) {
			set_str(&c->proto_error,
				xstrdup("unexpected continuation request"));
			return -1;
		}
		op->got_cont = true;
		op->want_cont = false;
		op->stop = true;
		return 1;
	}
	if (r->type == IMAP_RESP_TAGGED && op != NULL &&
	    op->pipe_count > 0)
		return pipe_tagged(c, op, r);
	if (r->type == IMAP_RESP_TAGGED) {
		if (op == NULL || op->tag == NULL ||
		    strcmp(r->tag, op->tag) != 0) {
			set_str(&c->proto_error,
				xasprintf("unexpected tagged response %s",
					  r->tag));
			return -1;
		}
		if (!tagged_status_valid(r)) {
			set_str(&c->proto_error,
				xasprintf("invalid tagged response %s",
					  r->tag));
			return -1;
		}
		op->res->status = r->status;
		set_str(&op->res->code, r->code != NULL ?
			code_string(r->code) : NULL);
		set_str(&op->res->text, xstrdup(r->text));
		op->done = true;
		op->stop = true;
		return 1;
	}

	/* untagged */
	if (op != NULL && op->tag == NULL && op->pipe_count == 0) {
		/* the greeting */
		op->greet_status = r->status;
		set_str(&op->greet_text, xstrdup(r->text));
		op->done = true;
		op->stop = true;
		return 1;
	}
	if (r->status == IMAP_STATUS_BYE) {
		set_str(&c->bye_text, xstrdup(r->text));
		if (c->logging_out)
			return 0;
		/* the server is going away: stop at once */
		c->got_bye = true;
		return -1;
	}
	if (r->arg_count >= 1 && r->status == IMAP_STATUS_NONE) {
		if (imap_token_is_atom(&r->args[0], "CAPABILITY")) {
			parse_caps(c, r->args + 1, r->arg_count - 1);
			return 0;
		}
		if (imap_token_is_atom(&r->args[0], "ENABLED")) {
			for (unsigned int i = 1; i < r->arg_count; i++) {
				if (imap_token_is_atom(&r->args[i],
						       "QRESYNC"))
					c->qresync = true;
			}
			return 0;
		}
	}
	if (op == NULL || op->cb == NULL)
		return 0;
	ret = op->cb(op->ctx, r);
	if (ret < 0)
		return -1;
	if (ret > 0) {
		op->changed = true;
		if (op->idle) {
			op->stop = true;
			return 1;
		}
	}
	return 0;
}

/* ---- I/O with error handling ---- */

/* Close on a transport error and build the message. */
static enum mf_status io_fail(struct imap_conn *c, int err, const char *what,
			      char **error_r)
{
	enum mf_status st = MF_TEMP;
	char *msg;

	switch (err) {
	case -ECANCELED:
		msg = xstrdup("interrupted");
		st = MF_CANCELED;
		break;
	case -ETIMEDOUT:
		msg = xasprintf("timeout %s %s after %u s", what, c->host,
				c->timeout_ms / 1000);
		break;
	case 0:
		if (c->bye_text != NULL)
			msg = xasprintf("%s closed the connection: %s",
					c->host, c->bye_text);
		else
			msg = xasprintf("%s closed the connection", c->host);
		break;
	default:
		msg = xstrdup(c->io_error != NULL ? c->io_error :
			      "I/O error");
		break;
	}
	mf_debug(MF_DBG_IMAP, "imap %s: %s", c->host, msg);
	imap_conn_close(c);
	if (error_r != NULL)
		*error_r = msg;
	else
		free(msg);
	return st;
}

static enum mf_status conn_write(struct imap_conn *c, const void *data,
				 size_t len, char **error_r)
{
	int r;

	if (c->top == NULL) {
		*error_r = xstrdup("not connected");
		return MF_TEMP;
	}
	r = c->top->ops->write(c->top, data, len, deadline_in(c));
	if (r < 0)
		return io_fail(c, r, "writing to", error_r);
	return MF_OK;
}

/* Send what the layers buffer (end of a command, or before a wait). */
static enum mf_status conn_flush(struct imap_conn *c, char **error_r)
{
	int r;

	if (c->top == NULL) {
		*error_r = xstrdup("not connected");
		return MF_TEMP;
	}
	r = imap_layer_flush(c->top, deadline_in(c));
	if (r < 0)
		return io_fail(c, r, "writing to", error_r);
	return MF_OK;
}

/*
 * Read and dispatch until op->stop. With idle_deadline != 0, waiting past
 * it returns MF_OK with *timed_out_r = true (connection kept).
 */
static enum mf_status pump(struct imap_conn *c, struct conn_op *op,
			   int64_t idle_deadline, bool *timed_out_r,
			   char **error_r)
{
	ssize_t n;

	op->stop = false;
	if (timed_out_r != NULL)
		*timed_out_r = false;
	while (!op->stop) {
		if (c->top == NULL) {
			*error_r = xstrdup("not connected");
			return MF_TEMP;
		}
		if (c->in_start < c->in_end) {
			n = imap_parser_feed(c->parser, c->in + c->in_start,
					     c->in_end - c->in_start);
			if (n == -ECANCELED && c->got_bye)
				return io_fail(c, 0, "reading from", error_r);
			if (n == -ECANCELED && c->proto_error == NULL) {
				imap_conn_close(c);
				*error_r = xstrdup("canceled");
				return MF_CANCELED;
			}
			if (n < 0) {
				*error_r = xasprintf(
					"IMAP protocol error from %s: %s",
					c->host, c->proto_error != NULL ?
					c->proto_error :
					imap_parser_error(c->parser));
				mf_log(MF_LOG_WARNING, "imap %s: %s",
				       c->host, *error_r);
				set_str(&c->proto_error, NULL);
				imap_conn_close(c);
				return MF_PROTO;
			}
			c->in_start += (size_t)n;
			continue;
		}
		c->in_start = c->in_end = 0;
		int64_t deadline = deadline_in(c);
		if (idle_deadline != 0)
			deadline = idle_deadline;
		n = c->top->ops->read(c->top, c->in, IN_BUF_SIZE, deadline);
		if (n == -ETIMEDOUT && idle_deadline != 0) {
			*timed_out_r = true;
			return MF_OK;
		}
		if (n <= 0)
			return io_fail(c, (int)n, "reading from", error_r);
		c->in_end = (size_t)n;
	}
	return MF_OK;
}

static void log_command(struct imap_conn *c, const char *tag,
			const struct imap_cmd *cmd, size_t from, size_t to,
			const struct imap_cmd_part *part, bool plus)
{
	size_t shown = to;
	bool hidden = false;

	if (!mf_log_debug_enabled(MF_DBG_IMAP))
		return;
	if (cmd->sensitive && shown > cmd->log_len) {
		shown = MF_MAX(cmd->log_len, from);
		hidden = true;
	}
	if (shown - from > LOG_MAX)
		shown = from + LOG_MAX;
	if (from > 0 && to == from && part == NULL)
		return;		/* just the CRLF ending a literal command */
	char lit[32] = "";
	if (part != NULL && part->kind != IMAP_PART_CONT_LINE)
		snprintf(lit, sizeof(lit), "{%" PRIu64 "%s}", part->size,
			 plus ? "+" : "");
	mf_debug(MF_DBG_IMAP, "imap %s: C: %s%s%.*s%s%s", c->host,
		 from == 0 ? tag : "", from == 0 ? " " : "",
		 (int)(shown - from), cmd->text.data + from,
		 hidden ? " <hidden>" : "", lit);
}

static enum mf_status send_literal_fd(struct imap_conn *c,
				      const struct imap_cmd_part *p,
				      char **error_r)
{
	char *buf = xmalloc(IN_BUF_SIZE);
	uint64_t off = 0;
	enum mf_status st = MF_OK;

	while (off < p->size) {
		size_t want = (size_t)MF_MIN(p->size - off,
					     (uint64_t)IN_BUF_SIZE);
		ssize_t n = mf_pread_all(p->fd, buf, want, (off_t)off);
		if (n < 0 || (size_t)n < want) {
			/* the literal cannot be completed: drop the
			   connection so the server discards it */
			*error_r = xasprintf("reading the message to upload: "
					     "%s", n < 0 ?
					     strerror((int)-n) :
					     "file is shorter than announced");
			imap_conn_close(c);
			st = MF_PROTO;
			break;
		}
		st = conn_write(c, buf, want, error_r);
		if (st != MF_OK)
			break;
		off += want;
	}
	free(buf);
	return st;
}

enum mf_status imap_conn_run(struct imap_conn *c, struct imap_cmd *cmd,
			     imap_untagged_cb *cb, void *ctx,
			     struct imap_result *res_r, char **error_r)
{
	struct conn_op op;
	struct mf_buf line;
	char tag[16];
	size_t pos = 0;
	enum mf_status st;

	memset(res_r, 0, sizeof(*res_r));
	if (c->top == NULL) {
		*error_r = xstrdup("not connected");
		return MF_TEMP;
	}
	memset(&op, 0, sizeof(op));
	snprintf(tag, sizeof(tag), "a%04u", ++c->tag_seq % 100000);
	op.tag = tag;
	op.cb = cb;
	op.ctx = ctx;
	op.res = res_r;
	c->op = &op;
	imap_parser_set_literal_sink(c->parser, cmd->sink);
	mf_buf_init(&line);

	for (unsigned int i = 0; i <= cmd->part_count; i++) {
		const struct imap_cmd_part *p =
			i < cmd->part_count ? &cmd->parts[i] : NULL;
		size_t end = p != NULL ? p->text_off : cmd->text.len;
		bool plus = false, wait = false;

		mf_buf_reset(&line);
		if (pos == 0) {
			mf_buf_appends(&line, tag);
			mf_buf_appendc(&line, ' ');
		}
		mf_buf_append(&line, cmd->text.data + pos, end - pos);
		if (p != NULL && p->kind != IMAP_PART_CONT_LINE) {
			plus = imap_conn_has_cap(c, IMAP_CAP_LITERALPLUS) ||
			       (imap_conn_has_cap(c, IMAP_CAP_LITERALMINUS) &&
				p->size <= 4096);
			mf_buf_printf(&line, "{%" PRIu64 "%s}", p->size,
				      plus ? "+" : "");
			wait = !plus;
		} else if (p != NULL) {
			wait = true;
		}
		log_command(c, tag, cmd, pos, end, p, plus);
		mf_buf_append(&line, "\r\n", 2);
		/* A continuation line right after another one has no
		   command text of its own to send first. */
		if (i > 0 && cmd->parts[i - 1].kind == IMAP_PART_CONT_LINE &&
		    end == pos && pos != 0)
			st = MF_OK;
		else
			st = conn_write(c, line.data, line.len, error_r);
		if (cmd->sensitive)
			explicit_bzero(line.data, line.cap);
		if (st != MF_OK)
			goto out;
		if (p == NULL)
			break;
		if (wait) {
			op.want_cont = true;
			st = conn_flush(c, error_r);
			if (st == MF_OK)
				st = pump(c, &op, 0, NULL, error_r);
			if (st != MF_OK)
				goto out;
			if (op.done)
				goto out;	/* refused before the data */
		}
		switch (p->kind) {
		case IMAP_PART_MEM:
			st = conn_write(c, p->data, p->size, error_r);
			break;
		case IMAP_PART_FD:
			mf_debug(MF_DBG_IMAP, "imap %s: C: <%" PRIu64
				 " bytes>", c->host, p->size);
			st = send_literal_fd(c, p, error_r);
			break;
		case IMAP_PART_CONT_LINE:
			mf_debug(MF_DBG_IMAP, "imap %s: C: <hidden>",
				 c->host);
			mf_buf_reset(&line);
			mf_buf_append(&line, p->data, p->size);
			mf_buf_append(&line, "\r\n", 2);
			st = conn_write(c, line.data, line.len, error_r);
			explicit_bzero(line.data, line.cap);
			end = p->text_off;
			break;
		}
		if (st != MF_OK)
			goto out;
		pos = end;
		if (p->kind == IMAP_PART_CONT_LINE &&
		    i + 1 == cmd->part_count && pos == cmd->text.len)
			break;	/* the response line ended the command */
	}
	st = conn_flush(c, error_r);
	if (st != MF_OK)
		goto out;
	while (!op.done) {
		st = pump(c, &op, 0, NULL, error_r);
		if (st != MF_OK)
			goto out;
	}
	st = MF_OK;
out:
	if (st != MF_OK)
		imap_result_clear(res_r);
	if (c->op == &op)
		c->op = NULL;
	if (c->parser != NULL)
		imap_parser_set_literal_sink(c->parser, NULL);
	free(op.greet_text);
	mf_buf_free(&line);
	return st;
}

enum mf_status imap_conn_simple(struct imap_conn *c, struct imap_cmd *cmd,
				imap_untagged_cb *cb, void *ctx,
				const char *what, char **error_r)
{
	struct imap_result res;
	enum mf_status st;

	st = imap_conn_run(c, cmd, cb, ctx, &res, error_r);
	if (st != MF_OK)
		return st;
	st = imap_result_status(&res, what, error_r);
	imap_result_clear(&res);
	return st;
}

enum mf_status imap_conn_run_pipeline(struct imap_conn *c,
				      struct imap_cmd *const *cmds,
				      unsigned int count, imap_untagged_cb *cb,
				      void *ctx, struct imap_result *res_r,
				      char **error_r)
{
	char (*tags)[16];
	bool *done;
	struct conn_op op;
	struct mf_buf out;
	enum mf_status st;

	for (unsigned int i = 0; i < count; i++) {
		memset(&res_r[i], 0, sizeof(res_r[i]));
		if (cmds[i]->part_count != 0 || cmds[i]->sensitive)
			abort();	/* a bug: these need run() */
	}
	if (count == 0)
		return MF_OK;
	if (c->top == NULL) {
		*error_r = xstrdup("not connected");
		return MF_TEMP;
	}
	tags = xcalloc(count, sizeof(*tags));
	done = xcalloc(count, sizeof(*done));
	memset(&op, 0, sizeof(op));
	op.tag = "";
	op.cb = cb;
	op.ctx = ctx;
	op.pipe_tags = tags;
	op.pipe_res = res_r;
	op.pipe_done = done;
	op.pipe_count = op.pipe_left = count;
	c->op = &op;
	imap_parser_set_literal_sink(c->parser, cmds[0]->sink);
	mf_buf_init(&out);
	for (unsigned int i = 0; i < count; i++) {
		snprintf(tags[i], sizeof(tags[i]), "a%04u",
			 ++c->tag_seq % 100000);
		log_command(c, tags[i], cmds[i], 0, cmds[i]->text.len, NULL,
			    false);
		mf_buf_appends(&out, tags[i]);
		mf_buf_appendc(&out, ' ');
		mf_buf_append(&out, cmds[i]->text.data, cmds[i]->text.len);
		mf_buf_append(&out, "\r\n", 2);
	}
	st = conn_write(c, out.data, out.len, error_r);
	if (st == MF_OK)
		st = conn_flush(c, error_r);
	while (st == MF_OK && !op.done)
		st = pump(c, &op, 0, NULL, error_r);
	if (st != MF_OK) {
		for (unsigned int i = 0; i < count; i++)
			imap_result_clear(&res_r[i]);
	}
	if (c->op == &op)
		c->op = NULL;
	if (c->parser != NULL)
		imap_parser_set_literal_sink(c->parser, NULL);
	mf_buf_free(&out);
	free(tags);
	free(done);
	return st;
}

enum mf_status imap_conn_idle(struct imap_conn *c, int timeout_ms,
			      imap_untagged_cb *cb, void *ctx,
			      bool *changed_r, char **error_r)
{
	struct imap_result res;
	struct conn_op op;
	char tag[16], line[32];
	bool timed_out;
	enum mf_status st;

	*changed_r = false;
	if (c->top == NULL) {
		*error_r = xstrdup("not connected");
		return MF_TEMP;
	}
	memset(&res, 0, sizeof(res));
	memset(&op, 0, sizeof(op));
	snprintf(tag, sizeof(tag), "a%04u", ++c->tag_seq % 100000);
	op.tag = tag;
	op.cb = cb;
	op.ctx = ctx;
	op.res = &res;
	op.want_cont = true;
	op.idle = true;
	c->op = &op;
	snprintf(line, sizeof(line), "%s IDLE\r\n", tag);
	mf_debug(MF_DBG_IMAP, "imap %s: C: %s IDLE", c->host, tag);
	st = conn_write(c, line, strlen(line), error_r);
	if (st == MF_OK)
		st = conn_flush(c, error_r);
	if (st != MF_OK)
		goto out;
	/* wait for "+"; changes may already arrive before it */
	while (!op.got_cont && !op.done) {
		st = pump(c, &op, 0, NULL, error_r);
		if (st != MF_OK)
			goto out;
	}
	if (op.done) {
		st = imap_result_status(&res, "IDLE", error_r);
		if (st == MF_OK) {
			/* a server ending IDLE at once: treat as a wake-up */
			*changed_r = true;
		}
		goto out;
	}
	if (!op.changed) {
		st = pump(c, &op, mf_mono_ms() + MF_MAX(timeout_ms, 0),
			  &timed_out, error_r);
		if (st != MF_OK)
			goto out;
	}
	op.idle = false;
	if (!op.done) {
		mf_debug(MF_DBG_IMAP, "imap %s: C: DONE", c->host);
		st = conn_write(c, "DONE\r\n", 6, error_r);
		if (st == MF_OK)
			st = conn_flush(c, error_r);
		if (st != MF_OK)
			goto out;
		while (!op.done) {
			st = pump(c, &op, 0, NULL, error_r);
			if (st != MF_OK)
				goto out;
		}
	}
	*changed_r = op.changed;
	st = imap_result_status(&res, "IDLE", error_r);
out:
	if (c->op == &op)
		c->op = NULL;
	imap_result_clear(&res);
	return st;
}

enum mf_status imap_conn_sleep(struct imap_conn *c, int timeout_ms,
			       char **error_r)
{
	int r;

	if (take_interrupt(c)) {
		*error_r = xstrdup("interrupted");
		return MF_CANCELED;
	}
	r = conn_poll(c, -1, 0, mf_mono_ms() + MF_MAX(timeout_ms, 0));
	if (r == -ECANCELED) {
		*error_r = xstrdup("interrupted");
		return MF_CANCELED;
	}
	return MF_OK;
}

/* ---- greeting and login ---- */

static enum mf_status read_greeting(struct imap_conn *c, bool *preauth_r,
				    char **error_r)
{
	struct conn_op op;
	enum mf_status st;

	memset(&op, 0, sizeof(op));
	c->op = &op;
	st = pump(c, &op, 0, NULL, error_r);
	c->op = NULL;
	if (st != MF_OK) {
		free(op.greet_text);
		return st;
	}
	*preauth_r = op.greet_status == IMAP_STATUS_PREAUTH;
	if (op.greet_status != IMAP_STATUS_OK &&
	    op.greet_status != IMAP_STATUS_PREAUTH) {
		*error_r = xasprintf("%s refused the connection: %s",
				     c->host, op.greet_text);
		free(op.greet_text);
		imap_conn_close(c);
		return MF_TEMP;
	}
	free(op.greet_text);
	return MF_OK;
}

static enum mf_status simple_cmd(struct imap_conn *c, const char *verb,
				 char **error_r)
{
	struct imap_cmd cmd;
	enum mf_status st;

	imap_cmd_init(&cmd, verb);
	st = imap_conn_simple(c, &cmd, NULL, NULL, verb, error_r);
	imap_cmd_clear(&cmd);
	return st;
}

static enum mf_status starttls(struct imap_conn *c, char **error_r)
{
	enum mf_status st;

	if (!c->caps_known) {
		st = simple_cmd(c, "CAPABILITY", error_r);
		if (st != MF_OK)
			return st;
	}
	if (!imap_conn_has_cap(c, IMAP_CAP_STARTTLS)) {
		*error_r = xasprintf("%s does not offer STARTTLS (tls = "
				     "starttls); refusing to continue "
				     "without TLS", c->host);
		imap_conn_close(c);
		return MF_PROTO;
	}
	st = simple_cmd(c, "STARTTLS", error_r);
	if (st != MF_OK) {
		if (st != MF_TEMP && st != MF_CANCELED)
			st = MF_PROTO;
		imap_conn_close(c);
		return st;
	}
	if (c->in_start != c->in_end || imap_parser_in_response(c->parser)) {
		/* data sent in clear after the OK: an injection attempt */
		*error_r = xasprintf("%s sent data after STARTTLS OK",
				     c->host);
		imap_conn_close(c);
		return MF_PROTO;
	}
	st = tls_start(c, error_r);
	if (st != MF_OK) {
		imap_conn_close(c);
		return st;
	}
	c->caps = 0;
	c->caps_known = false;
	return MF_OK;
}

static char *sasl_plain(const char *user, const char *pass)
{
	size_t ul = strlen(user), pl = strlen(pass);
	size_t rawlen = ul + pl + 2;
	unsigned char *raw = xmalloc(rawlen);
	char *out = xmalloc(4 * ((rawlen + 2) / 3) + 1);

	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	EVP_EncodeBlock((unsigned char *)out, raw, (int)rawlen);
	explicit_bzero(raw, rawlen);
	free(raw);
	return out;
}

/*
 * AUTHENTICATE XOAUTH2 or OAUTHBEARER with an access token from the
 * account's OAuth token store. The initial response goes inline where the
 * server offers SASL-IR. A refusal comes as a continuation carrying an
 * error JSON, which the client answers (empty line for XOAUTH2, %x01 for
 * OAUTHBEARER, RFC 7628 3.2.3) before the tagged NO.
 */
static enum mf_status login_oauth(struct imap_conn *c, bool bearer,
				  char **error_r)
{
	const struct mf_account *acct = c->acct;
	struct mf_token_source *ts =
		mf_token_source_shared(acct, MF_OAUTH_USE_IMAP);
	const char *mech = bearer ? "OAUTHBEARER" : "XOAUTH2";
	unsigned int cap = bearer ? IMAP_CAP_AUTH_OAUTHBEARER
				  : IMAP_CAP_AUTH_XOAUTH2;
	struct imap_result res;
	struct imap_cmd cmd;
	char *token = NULL, *ir;
	enum mf_status st;

	if (!imap_conn_has_cap(c, cap)) {
		*error_r = xasprintf("%s does not offer AUTH=%s (auth = %s)",
				     c->host, mech, bearer ? "oauthbearer"
							   : "xoauth2");
		imap_conn_close(c);
		return MF_PROTO;
	}
	st = mf_token_get(ts, false, &token, error_r);
	if (st != MF_OK) {
		imap_conn_close(c);
		return st;
	}
	ir = bearer ? mf_sasl_oauthbearer(acct->user, c->host, acct->port,
					  token)
		    : mf_sasl_xoauth2(acct->user, token);
	explicit_bzero(token, strlen(token));
	free(token);
	imap_cmd_init(&cmd, "AUTHENTICATE ");
	imap_cmd_add(&cmd, mech);
	imap_cmd_mark_sensitive(&cmd);
	if (imap_conn_has_cap(c, IMAP_CAP_SASL_IR)) {
		imap_cmd_add(&cmd, " ");
		imap_cmd_add(&cmd, ir);
	} else {
		imap_cmd_add_cont_line(&cmd, ir);
	}
	/* sent only if the server answers with an error challenge */
	imap_cmd_add_cont_line(&cmd, bearer ? "AQ==" : "");
	explicit_bzero(ir, strlen(ir));
	free(ir);
	st = imap_conn_run(c, &cmd, NULL, NULL, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		return st;
	if (res.status != IMAP_STATUS_OK) {
		st = imap_result_has_code(&res, "UNAVAILABLE") ? MF_TEMP :
		     res.status == IMAP_STATUS_NO ? MF_AUTH : MF_PROTO;
		*error_r = xasprintf("AUTHENTICATE %s to %s as %s failed: %s",
				     mech, c->host, acct->user, res.text);
		/* the token may have been revoked: the next try gets a
		   new one */
		mf_token_forget(ts);
		imap_result_clear(&res);
		imap_conn_close(c);
		return st;
	}
	imap_result_clear(&res);
	return MF_OK;
}

static enum mf_status login(struct imap_conn *c, char **error_r)
{
	const struct mf_account *acct = c->acct;
	const char *auth = mf_account_get(acct, "auth");
	struct imap_result res;
	struct imap_cmd cmd;
	char *pw = NULL, *err = NULL;
	enum mf_status st;

	if (acct->user == NULL) {
		*error_r = xstrdup("no user configured");
		return MF_AUTH;
	}
	if (auth && strcasecmp(auth, "xoauth2") == 0)
		return login_oauth(c, false, error_r);
	if (auth && strcasecmp(auth, "oauthbearer") == 0)
		return login_oauth(c, true, error_r);
	if (mf_account_password(acct, &pw, &err) < 0) {
		*error_r = xasprintf("cannot get the password: %s",
				     err != NULL ? err : "unknown error");
		free(err);
		return MF_AUTH;
	}
	if (imap_conn_has_cap(c, IMAP_CAP_AUTH_PLAIN)) {
		char *b64 = sasl_plain(acct->user, pw);
		imap_cmd_init(&cmd, "AUTHENTICATE PLAIN");
		imap_cmd_mark_sensitive(&cmd);
		if (imap_conn_has_cap(c, IMAP_CAP_SASL_IR)) {
			imap_cmd_add(&cmd, " ");
			imap_cmd_add(&cmd, b64);
		} else {
			imap_cmd_add_cont_line(&cmd, b64);
		}
		explicit_bzero(b64, strlen(b64));
		free(b64);
	} else if (imap_conn_has_cap(c, IMAP_CAP_LOGINDISABLED)) {
		explicit_bzero(pw, strlen(pw));
		free(pw);
		*error_r = xasprintf("%s disables LOGIN and offers no "
				     "AUTH=PLAIN", c->host);
		imap_conn_close(c);
		return MF_PROTO;
	} else {
		imap_cmd_init(&cmd, "LOGIN");
		imap_cmd_add_string(&cmd, acct->user);
		imap_cmd_mark_sensitive(&cmd);
		imap_cmd_add_string(&cmd, pw);
		cmd.sensitive = true;
	}
	explicit_bzero(pw, strlen(pw));
	free(pw);
	st = imap_conn_run(c, &cmd, NULL, NULL, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		return st;
	if (res.status != IMAP_STATUS_OK) {
		st = imap_result_has_code(&res, "UNAVAILABLE") ? MF_TEMP :
		     res.status == IMAP_STATUS_NO ? MF_AUTH : MF_PROTO;
		*error_r = xasprintf("login to %s as %s failed: %s",
				     c->host, acct->user, res.text);
		imap_result_clear(&res);
		imap_conn_close(c);
		return st;
	}
	imap_result_clear(&res);
	return MF_OK;
}

/*
 * COMPRESS DEFLATE; on OK, everything after the tagged response is
 * compressed both ways. A refusal is not fatal.
 */
static enum mf_status start_compress(struct imap_conn *c, char **error_r)
{
	struct imap_result res;
	struct imap_cmd cmd;
	enum mf_status st;

	imap_cmd_init(&cmd, "COMPRESS DEFLATE");
	st = imap_conn_run(c, &cmd, NULL, NULL, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		return st;
	if (res.status != IMAP_STATUS_OK) {
		mf_debug(MF_DBG_IMAP, "imap %s: COMPRESS refused: %s",
			 c->host, res.text);
		imap_result_clear(&res);
		return MF_OK;
	}
	imap_result_clear(&res);
	if (imap_parser_in_response(c->parser)) {
		*error_r = xasprintf("%s: response split by COMPRESS",
				     c->host);
		imap_conn_close(c);
		return MF_PROTO;
	}
	/* bytes after the OK are already compressed */
	c->top = imap_deflate_layer_new(c->top, c->in + c->in_start,
					c->in_end - c->in_start);
	c->in_start = c->in_end = 0;
	mf_debug(MF_DBG_IMAP, "imap %s: compression enabled", c->host);
	return MF_OK;
}

enum mf_status imap_conn_connect(struct imap_conn *c, char **error_r)
{
	const struct mf_account *acct = c->acct;
	bool tunnel = acct->tunnel != NULL && acct->tunnel[0] != '\0';
	struct imap_layer *sock;
	bool preauth = false;
	enum mf_status st;

	if (c->connected)
		return MF_OK;
	imap_conn_close(c);
	if (c->host[0] == '\0' && !tunnel) {
		*error_r = xstrdup("no host configured");
		return MF_PROTO;
	}
	if (!tunnel && acct->tls == MF_TLS_NONE && !acct->allow_plaintext &&
	    !host_is_loopback(c->host)) {
		*error_r = xasprintf("refusing an unencrypted connection to "
				     "%s (tls = none needs allow_plaintext)",
				     c->host);
		return MF_PROTO;
	}
	if (take_interrupt(c)) {
		*error_r = xstrdup("interrupted");
		return MF_CANCELED;
	}
	if (tunnel) {
		st = tunnel_connect(c, error_r);
	} else {
		mf_debug(MF_DBG_IMAP, "imap %s: connecting to port %u",
			 c->host, c->port);
		st = tcp_connect(c, error_r);
	}
	if (st != MF_OK)
		return st;
	sock = xcalloc(1, sizeof(*sock));
	sock->ops = &sock_ops;
	sock->conn = c;
	sock->io_error = &c->io_error;
	c->top = sock;
	c->parser = imap_parser_new(on_response, c);
	c->generation++;
	if (acct->tls == MF_TLS_IMPLICIT && !tunnel) {
		st = tls_start(c, error_r);
		if (st != MF_OK)
			goto fail;
	}
	st = read_greeting(c, &preauth, error_r);
	if (st != MF_OK)
		goto fail;
	if (acct->tls == MF_TLS_STARTTLS && !tunnel) {
		if (preauth) {
			*error_r = xasprintf("%s sent PREAUTH, so STARTTLS is "
					     "impossible", c->host);
			st = MF_PROTO;
			goto fail;
		}
		st = starttls(c, error_r);
		if (st != MF_OK)
			goto fail;
	}
	if (!c->caps_known) {
		st = simple_cmd(c, "CAPABILITY", error_r);
		if (st != MF_OK)
			goto fail;
	}
	if (!preauth && tunnel && acct->user == NULL) {
		*error_r = xstrdup("the tunnel command greeted with OK, not "
				   "PREAUTH, and no user is configured to "
				   "log in");
		st = MF_AUTH;
		goto fail;
	}
	if (!preauth) {
		c->caps_known = false;
		st = login(c, error_r);
		if (st != MF_OK)
			goto fail;
		if (!c->caps_known) {
			st = simple_cmd(c, "CAPABILITY", error_r);
			if (st != MF_OK)
				goto fail;
		}
	}
	if (acct->compress && imap_conn_has_cap(c, IMAP_CAP_COMPRESS)) {
		st = start_compress(c, error_r);
		if (st != MF_OK)
			goto fail;
	}
	if (imap_conn_has_cap(c, IMAP_CAP_QRESYNC) &&
	    imap_conn_has_cap(c, IMAP_CAP_ENABLE)) {
		st = simple_cmd(c, "ENABLE QRESYNC", error_r);
		if (st == MF_TEMP || st == MF_CANCELED)
			goto fail;
		if (st != MF_OK) {
			mf_warn("imap %s: %s", c->host, *error_r);
			free(*error_r);
			*error_r = NULL;
		}
	}
	c->connected = true;
	mf_debug(MF_DBG_IMAP, "imap %s: logged in, caps 0x%x%s", c->host,
		 c->caps, c->qresync ? ", QRESYNC enabled" : "");
	return MF_OK;
fail:
	imap_conn_close(c);
	return st;
}

void imap_conn_logout(struct imap_conn *c)
{
	char *err = NULL;

	if (c->connected) {
		c->logging_out = true;
		(void)simple_cmd(c, "LOGOUT", &err);
		free(err);
	}
	imap_conn_close(c);
}
