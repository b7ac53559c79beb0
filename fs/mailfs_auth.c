/*
 * mailfs-auth: sign in to an OAuth2 provider and manage the token store.
 *
 *   mailfs-auth [-c CONFIG] [-d] login ACCOUNT [--device] [--port N]
 *                                            [--no-browser]
 *   mailfs-auth [-c CONFIG] token ACCOUNT [--scope imap|smtp|api] [--xoauth2]
 *   mailfs-auth [-c CONFIG] status [ACCOUNT]
 *   mailfs-auth [-c CONFIG] logout ACCOUNT
 *
 * login follows RFC 8252: the authorization code grant with PKCE (S256)
 * and a loopback redirect to http://127.0.0.1:PORT/, or with --device the
 * device authorization grant (RFC 8628). Only the refresh token is kept,
 * encrypted, in the token store (mf_tokenstore.h); `token` prints a fresh
 * access token for msmtp, git send-email or mbsync.
 */
#include "mf_config.h"
#include "mf_oauth.h"
#include "mf_tokenstore.h"
#include "mf_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOGIN_TIMEOUT_S 600
#define REQUEST_MAX 8192

static const char *prog = "mailfs-auth";

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [-c CONFIG] [-d] COMMAND ...\n"
		"  login ACCOUNT [--device] [--port N] [--no-browser]\n"
		"        sign in (browser with a loopback redirect, or the "
		"device code)\n"
		"  token ACCOUNT [--scope imap|smtp|api] [--xoauth2]\n"
		"        print a fresh access token (or the XOAUTH2 SASL "
		"string)\n"
		"  status [ACCOUNT]   show what is stored\n"
		"  logout ACCOUNT     forget the stored sign-in\n"
		"  -c CONFIG   the mailfs.conf (default "
		"$XDG_CONFIG_HOME/mailfs/mailfs.conf)\n"
		"  -d          debug output on stderr (never shows tokens)\n",
		prog);
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static const struct mf_account *find_account(const struct mf_config *cfg,
					      const char *name)
{
	for (unsigned int i = 0; i < cfg->account_count; i++) {
		if (strcmp(cfg->accounts[i].name, name) == 0)
			return &cfg->accounts[i];
	}
	fprintf(stderr, "%s: no [account %s] in %s\n", prog, name, cfg->path);
	return NULL;
}

static int oauth_cfg(const struct mf_account *a, struct mf_oauth_cfg *oc)
{
	char *err = NULL;

	if (mf_oauth_cfg_from_account(a, oc, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		free(err);
		return -1;
	}
	return 0;
}

/* ---- the loopback redirect ---- */

static char *url_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n &&
		    mf_unhex(s[i + 1]) >= 0 && mf_unhex(s[i + 2]) >= 0) {
			out[j++] = (char)(mf_unhex(s[i + 1]) * 16 +
					  mf_unhex(s[i + 2]));
			i += 2;
		} else if (s[i] == '+') {
			out[j++] = ' ';
		} else {
			out[j++] = s[i];
		}
	}
	out[j] = '\0';
	return out;
}

/* The value of a query parameter, decoded, or NULL. */
static char *query_get(const char *q, const char *key)
{
	size_t kl = strlen(key);

	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);

		if (len > kl && strncmp(q, key, kl) == 0 && q[kl] == '=')
			return url_decode(q + kl + 1, len - kl - 1);
		q = amp ? amp + 1 : NULL;
	}
	return NULL;
}

static void http_reply(int fd, int status, const char *title,
		       const char *text)
{
	char *body = xasprintf("<!doctype html><html><head><meta "
			       "charset=\"utf-8\"><title>mailfs</title></head>"
			       "<body><h1>%s</h1><p>%s</p></body></html>\n",
			       title, text);
	char *head = xasprintf("HTTP/1.1 %d %s\r\nContent-Type: text/html; "
			       "charset=utf-8\r\nContent-Length: %zu\r\n"
			       "Cache-Control: no-store\r\nConnection: close"
			       "\r\n\r\n",
			       status, status == 200 ? "OK" : "Bad Request",
			       strlen(body));

	(void)mf_write_all(fd, head, strlen(head));
	(void)mf_write_all(fd, body, strlen(body));
	free(head);
	free(body);
}

/* Read one request head; returns the request target ("/?code=...") or
   NULL. */
static char *read_request(int fd)
{
	char buf[REQUEST_MAX + 1];
	size_t len = 0;
	int64_t deadline = mf_mono_ms() + 10000;

	while (len < REQUEST_MAX) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - mf_mono_ms();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return NULL;
		n = read(fd, buf + len, REQUEST_MAX - len);
		if (n <= 0)
			return NULL;
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
			break;
	}
	buf[len] = '\0';
	if (strncmp(buf, "GET ", 4) != 0)
		return NULL;
	{
		char *t = buf + 4;
		size_t tl = strcspn(t, " \r\n");
		char *r = xstrndup(t, tl);

		explicit_bzero(buf, sizeof(buf));
		return r;
	}
}

static void open_browser(const char *url)
{
	pid_t pid;

	if (!getenv("DISPLAY") && !getenv("WAYLAND_DISPLAY"))
		return;
	/* Twice forked: xdg-open may stay with the browser, and its parent
	   exits at once, so nothing is left to reap. */
	pid = fork();
	if (pid == 0) {
		if (fork() == 0) {
			int nul = open("/dev/null", O_RDWR);

			if (nul >= 0) {
				dup2(nul, 0);
				dup2(nul, 1);
				dup2(nul, 2);
			}
			execlp("xdg-open", "xdg-open", url, (char *)NULL);
			_exit(127);
		}
		_exit(0);
	}
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
}

/*
 * Wait for the browser's redirect. Returns the code (caller wipes) or NULL
 * with a message printed.
 */
static char *wait_for_code(int lfd, const char *state)
{
	int64_t deadline = mf_mono_ms() + LOGIN_TIMEOUT_S * 1000;

	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		int64_t left = deadline - mf_mono_ms();
		char *target, *q, *got_state, *code, *error;
		int fd;

		if (left <= 0) {
			fprintf(stderr, "%s: no answer from the browser in %d "
				"minutes; run login again\n", prog,
				LOGIN_TIMEOUT_S / 60);
			return NULL;
		}
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		target = read_request(fd);
		if (!target) {
			close(fd);
			continue;
		}
		q = strchr(target, '?');
		if (q)
			*q++ = '\0';
		/* RFC 8252 8.10: only the registered path */
		if (strcmp(target, "/") != 0 || !q) {
			http_reply(fd, 404, "Not found",
				   "This is mailfs-auth's sign-in listener.");
			close(fd);
			wipe_free(target);
			continue;
		}
		got_state = query_get(q, "state");
		code = query_get(q, "code");
		error = query_get(q, "error");
		if (!got_state || strcmp(got_state, state) != 0) {
			http_reply(fd, 400, "Sign-in refused",
				   "The answer does not belong to this "
				   "sign-in (state mismatch).");
			close(fd);
			fprintf(stderr, "%s: ignored a redirect whose state "
				"does not match this sign-in\n", prog);
			free(got_state);
			wipe_free(code);
			free(error);
			wipe_free(target);
			continue;
		}
		free(got_state);
		if (error || !code) {
			char *desc = query_get(q, "error_description");

			http_reply(fd, 400, "Sign-in failed",
				   "The provider refused the sign-in; see the "
				   "terminal.");
			close(fd);
			fprintf(stderr, "%s: the provider refused: %s%s%s\n",
				prog, error ? error : "no code",
				desc ? ": " : "", desc ? desc : "");
			free(desc);
			free(error);
			wipe_free(code);
			wipe_free(target);
			return NULL;
		}
		http_reply(fd, 200, "Signed in",
			   "mailfs has your authorization. You can close "
			   "this tab.");
		close(fd);
		wipe_free(target);
		return code;
	}
}

static int save_tokens(const struct mf_oauth_cfg *oc,
		       const struct mf_oauth_tokens *t, const char *scope)
{
	struct mf_token_record rec = { 0 };
	char *err = NULL;
	int ret, lockfd;

	if (!t->refresh_token) {
		fprintf(stderr, "%s: the provider issued no refresh token, so "
			"mailfs could not renew access later (the scopes "
			"need offline_access for Microsoft; Google issues one "
			"with prompt=consent)\n", prog);
		return -1;
	}
	rec.provider = oc->provider_name;
	rec.client_id = oc->client_id;
	rec.refresh_token = t->refresh_token;
	rec.scope = t->scope ? t->scope : (char *)scope;
	rec.saved = (int64_t)time(NULL);
	/* under the account's lock, so a daemon refreshing right now does
	   not write its older token chain over this one */
	lockfd = mf_tokenstore_lock(oc->account, &err);
	ret = lockfd < 0 ? lockfd : mf_tokenstore_save(oc->account, &rec, &err);
	mf_tokenstore_unlock(lockfd);
	if (ret < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		free(err);
		return -1;
	}
	printf("Signed in: account %s. The refresh token is stored "
	       "encrypted in %s (key: %s).\n", oc->account,
	       mf_tokenstore_dir(), mf_tokenstore_key_file());
	return 0;
}

static int login_loopback(const struct mf_oauth_cfg *oc, unsigned int port,
			  bool no_browser)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	char verifier[65], challenge[44], state[44];
	char *redirect, *url, *scope, *code, *oerr = NULL, *err = NULL;
	struct mf_oauth_tokens t;
	enum mf_status st;
	int lfd, ret = -1;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(lfd, 8) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &slen) < 0) {
		fprintf(stderr, "%s: cannot listen on 127.0.0.1:%u: %s\n",
			prog, port, strerror(errno));
		if (lfd >= 0)
			close(lfd);
		return -1;
	}
	port = ntohs(sin.sin_port);
	mf_pkce_verifier(verifier);
	mf_pkce_challenge(verifier, challenge);
	mf_oauth_random(state);
	redirect = xasprintf("http://127.0.0.1:%u/", port);
	scope = mf_oauth_login_scope(oc);
	url = mf_oauth_authorize_url(oc, redirect, state, challenge, scope);

	printf("To sign in to account %s, open this URL in a browser:\n\n"
	       "  %s\n\n", oc->account, url);
	if (!no_browser && (getenv("DISPLAY") || getenv("WAYLAND_DISPLAY"))) {
		printf("(Opening it in your browser now.)\n");
		fflush(stdout);
		open_browser(url);
	} else {
		printf("No browser on this machine? The sign-in redirects to "
		       "127.0.0.1:%u here, so\nforward that port from the "
		       "machine with the browser and open the URL there:\n"
		       "  ssh -L %u:127.0.0.1:%u THIS-HOST\n"
		       "(use --port N to pick a port you can forward; "
		       "--device for the device code flow).\n",
		       port, port, port);
	}
	printf("Waiting for the browser on %s ...\n", redirect);
	fflush(stdout);

	code = wait_for_code(lfd, state);
	close(lfd);
	if (!code)
		goto out;
	{
		/* Microsoft: the token is for one resource; consent above
		   covered the others. */
		char *tscope = oc->provider == MF_OAUTH_MICROSOFT
				       ? mf_oauth_token_scope(
						 oc, mf_oauth_default_use(oc))
				       : NULL;

		st = mf_oauth_exchange_code(oc, code, verifier, redirect,
					    tscope, &t, &oerr, &err);
		free(tscope);
	}
	wipe_free(code);
	if (st != MF_OK) {
		fprintf(stderr, "%s: the code exchange failed: %s\n", prog,
			err ? err : mf_status_str(st));
		goto out;
	}
	ret = save_tokens(oc, &t, scope);
	mf_oauth_tokens_clear(&t);
out:
	explicit_bzero(verifier, sizeof(verifier));
	free(err);
	free(oerr);
	free(redirect);
	free(url);
	free(scope);
	return ret;
}

static void sleep_s(unsigned int s)
{
	struct timespec ts = { (time_t)s, 0 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int login_device(const struct mf_oauth_cfg *oc)
{
	char *scope = mf_oauth_login_scope(oc);
	char *why = mf_oauth_device_refusal(oc, scope);
	char *oerr = NULL, *err = NULL;
	struct mf_oauth_device d;
	struct mf_oauth_tokens t;
	unsigned int interval;
	enum mf_status st;
	int ret = -1;

	if (why) {
		fprintf(stderr, "%s: %s\n", prog, why);
		free(why);
		free(scope);
		return 2;
	}
	st = mf_oauth_device_start(oc, scope, &d, &oerr, &err);
	if (st != MF_OK) {
		fprintf(stderr, "%s: the device flow could not start: %s\n",
			prog, err ? err : mf_status_str(st));
		free(err);
		free(oerr);
		free(scope);
		return -1;
	}
	if (d.message)
		printf("%s\n", d.message);
	else
		printf("To sign in to account %s, open %s and enter the code "
		       "%s\n", oc->account, d.verification_uri, d.user_code);
	printf("Waiting for the sign-in (polling every %u s) ...\n",
	       d.interval);
	fflush(stdout);
	interval = d.interval;
	for (;;) {
		sleep_s(interval);
		free(oerr);
		free(err);
		oerr = err = NULL;
		if ((int64_t)time(NULL) > d.expires_at + interval) {
			fprintf(stderr, "%s: the code expired before the "
				"sign-in was done; run login again\n", prog);
			break;
		}
		st = mf_oauth_device_poll(oc, &d, &t, &oerr, &err);
		if (st == MF_OK) {
			ret = save_tokens(oc, &t, scope);
			mf_oauth_tokens_clear(&t);
			break;
		}
		if (st == MF_TEMP && oerr &&
		    strcmp(oerr, "authorization_pending") == 0) {
			mf_debug(MF_DBG_AUTH, "device flow: pending");
			continue;
		}
		if (st == MF_TEMP && oerr && strcmp(oerr, "slow_down") == 0) {
			/* RFC 8628 3.5: add 5 seconds for this and every
			   later poll */
			interval += 5;
			printf("The provider asks to poll slower: every %u "
			       "s now.\n", interval);
			fflush(stdout);
			continue;
		}
		if (st == MF_TEMP && !oerr) {
			fprintf(stderr, "%s: %s; retrying\n", prog,
				err ? err : "network trouble");
			continue;
		}
		if (oerr && strcmp(oerr, "expired_token") == 0)
			fprintf(stderr, "%s: the code expired before the "
				"sign-in was done (expired_token); run login "
				"again\n", prog);
		else if (oerr && (strcmp(oerr, "access_denied") == 0 ||
				  strcmp(oerr, "authorization_declined") == 0))
			fprintf(stderr, "%s: the sign-in was declined (%s); "
				"nothing was stored\n", prog, oerr);
		else
			fprintf(stderr, "%s: the sign-in failed: %s\n", prog,
				err ? err : mf_status_str(st));
		break;
	}
	free(oerr);
	free(err);
	mf_oauth_device_clear(&d);
	free(scope);
	return ret;
}

static int cmd_login(const struct mf_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "device", no_argument, NULL, 'D' },
		{ "port", required_argument, NULL, 'p' },
		{ "no-browser", no_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	bool device = false, no_browser = false;
	unsigned long port = 0;
	const struct mf_account *a;
	struct mf_oauth_cfg oc;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			device = true;
			break;
		case 'p': {
			char *end;

			port = strtoul(optarg, &end, 10);
			if (*end || port > 65535) {
				fprintf(stderr, "%s: bad --port %s\n", prog,
					optarg);
				return 2;
			}
			break;
		}
		case 'n':
			no_browser = true;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	a = find_account(cfg, argv[optind]);
	if (!a || oauth_cfg(a, &oc) < 0)
		return 1;
	ret = device ? login_device(&oc)
		     : login_loopback(&oc, (unsigned int)port, no_browser);
	mf_oauth_cfg_clear(&oc);
	return ret == 0 ? 0 : ret == 2 ? 2 : 1;
}

static int cmd_token(const struct mf_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "scope", required_argument, NULL, 's' },
		{ "xoauth2", no_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	const struct mf_account *a;
	struct mf_oauth_cfg oc;
	struct mf_oauth_tokens t;
	bool xoauth2 = false;
	int use = -1, c;
	char *err = NULL;
	enum mf_status st;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			use = mf_oauth_use_parse(optarg);
			if (use < 0) {
				fprintf(stderr, "%s: --scope must be imap, "
					"smtp or api\n", prog);
				return 2;
			}
			break;
		case 'x':
			xoauth2 = true;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	a = find_account(cfg, argv[optind]);
	if (!a || oauth_cfg(a, &oc) < 0)
		return 1;
	if (use < 0)
		use = mf_oauth_default_use(&oc);
	if (xoauth2 && !oc.user) {
		fprintf(stderr, "%s: --xoauth2 needs \"user\" in [account "
			"%s]\n", prog, oc.account);
		mf_oauth_cfg_clear(&oc);
		return 1;
	}
	st = mf_oauth_access_token(&oc, (enum mf_oauth_use)use, &t, &err);
	if (st != MF_OK) {
		fprintf(stderr, "%s: %s\n", prog, err);
		free(err);
		mf_oauth_cfg_clear(&oc);
		return 1;
	}
	if (xoauth2) {
		char *s = mf_sasl_xoauth2(oc.user, t.access_token);

		printf("%s\n", s);
		wipe_free(s);
	} else {
		printf("%s\n", t.access_token);
	}
	fflush(stdout);
	mf_oauth_tokens_clear(&t);
	mf_oauth_cfg_clear(&oc);
	return 0;
}

static int status_one(const struct mf_account *a)
{
	struct mf_token_record rec;
	char *err = NULL;
	int ret;

	if (!mf_account_get(a, "oauth")) {
		printf("%s: does not use OAuth (no \"oauth\" key)\n",
		       a->name);
		return 0;
	}
	ret = mf_tokenstore_load(a->name, &rec, &err);
	if (ret == -ENOENT) {
		printf("%s: not signed in; run `mailfs-auth login %s`\n",
		       a->name, a->name);
		free(err);
		return 1;
	}
	if (ret < 0) {
		printf("%s: the token store cannot be read: %s\n", a->name,
		       err);
		free(err);
		return 1;
	}
	{
		char when[64] = "?";
		time_t t = (time_t)rec.saved;
		struct tm tm;

		if (gmtime_r(&t, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC",
				 &tm);
		printf("%s: signed in with %s (client_id %s), refresh token "
		       "saved %s\n  scope: %s\n", a->name,
		       rec.provider ? rec.provider : "?",
		       rec.client_id ? rec.client_id : "?", when,
		       rec.scope && *rec.scope ? rec.scope : "(not given)");
	}
	mf_token_record_clear(&rec);
	return 0;
}

static int cmd_status(const struct mf_config *cfg, int argc, char **argv)
{
	int bad = 0;

	if (argc > 2) {
		usage(stderr);
		return 2;
	}
	printf("token store: %s\nkey file:    %s\n", mf_tokenstore_dir(),
	       mf_tokenstore_key_file());
	if (argc == 2) {
		const struct mf_account *a = find_account(cfg, argv[1]);

		return a ? status_one(a) : 1;
	}
	for (unsigned int i = 0; i < cfg->account_count; i++)
		bad |= status_one(&cfg->accounts[i]);
	return bad;
}

static int cmd_logout(const struct mf_config *cfg, int argc, char **argv)
{
	const struct mf_account *a;
	char *err = NULL;
	int lockfd;

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	a = find_account(cfg, argv[1]);
	if (!a)
		return 1;
	lockfd = mf_tokenstore_lock(a->name, &err);
	if (lockfd < 0 || mf_tokenstore_remove(a->name, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		free(err);
		mf_tokenstore_unlock(lockfd);
		return 1;
	}
	mf_tokenstore_unlock(lockfd);
	printf("%s: the stored sign-in is gone. To revoke it at the "
	       "provider too, remove mailfs's access in your account's "
	       "security settings.\n", a->name);
	return 0;
}

int main(int argc, char **argv)
{
	const char *config = NULL;
	struct mf_config *cfg = NULL;
	char *path = NULL, *err = NULL;
	bool debug = false;
	int i = 1, ret;

	signal(SIGPIPE, SIG_IGN);
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "-d") == 0) {
			debug = true;
			i++;
		} else if (strcmp(argv[i], "-h") == 0 ||
			   strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	mf_log_init("mailfs-auth", false, MF_LOG_INFO,
		    debug ? MF_DBG_ALL : 0);
	path = config ? xstrdup(config) : mf_config_default_path();
	if (mf_config_load(path, &cfg, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		free(err);
		free(path);
		return 1;
	}
	free(path);
	mf_tokenstore_configure(cfg->state_dir, NULL, cfg->token_key_command);

	argc -= i;
	argv += i;
	if (strcmp(argv[0], "login") == 0)
		ret = cmd_login(cfg, argc, argv);
	else if (strcmp(argv[0], "token") == 0)
		ret = cmd_token(cfg, argc, argv);
	else if (strcmp(argv[0], "status") == 0)
		ret = cmd_status(cfg, argc, argv);
	else if (strcmp(argv[0], "logout") == 0)
		ret = cmd_logout(cfg, argc, argv);
	else {
		usage(stderr);
		ret = 2;
	}
	mf_config_free(&cfg);
	return ret;
}
