/*
 * mailfs.conf reader.
 *
 * The file is read whole, split into sections and key = value lines, and
 * then validated in two steps: the common keys of [general] and of each
 * [account NAME] are parsed into struct fields here, so that every backend
 * gets the same spelling and the same error messages; keys that only one
 * backend knows stay in the section's kv list for it to read.
 * [view NAME] sections (client-side views, fs/views.c) are parsed by
 * load_view() and checked against the accounts by finish_views().
 */
#include "mf_config.h"
#include "mf_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX_SIZE (1024 * 1024)

/* Keys a section may have; anything else is warned about. */
static const char *const general_keys[] = {
	"cache_dir", "state_dir", "fetch_timeout", "cache_max_size",
	"drain_timeout", "token_key_command", NULL,
};

static const char *const account_keys[] = {
	"type", "host", "port", "tls", "user", "password",
	"password_command", "ca_file", "allow_plaintext", "folders",
	"poll_interval", "delete", "prefetch", "timeout",
	/* read by later backends and features; accepted now */
	"api_url", "token_command", "oauth", "client_id", "client_secret",
	"tenant", "scopes", "auth", "auth_url", "token_url", "device_url",
	"inbox_unlink", "compress", "tunnel", "max_connections",
	"prefetch_max_size", "prefetch_max_age",
	/* gmail */
	"quota_units", "labels", NULL,
};

struct section {
	char *name;		/* "general" or "account" */
	char *arg;		/* account name or NULL */
	struct mf_kv *kv;
	unsigned int kv_count;
	int line;
};

static bool in_list(const char *const *list, const char *key)
{
	for (; *list; list++) {
		if (strcmp(*list, key) == 0)
			return true;
	}
	return false;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		e--;
	*e = '\0';
	return s;
}

/* Strip an unquoted trailing comment and surrounding quotes. */
static int clean_value(char *v, char **out_r)
{
	v = trim(v);
	if (*v == '"') {
		struct mf_buf b;
		char *p = v + 1;

		mf_buf_init(&b);
		for (; *p && *p != '"'; p++) {
			if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
				p++;
			mf_buf_appendc(&b, *p);
		}
		if (*p != '"') {
			mf_buf_free(&b);
			return -EINVAL;
		}
		p = trim(p + 1);
		if (*p && *p != '#' && *p != ';') {
			mf_buf_free(&b);
			return -EINVAL;
		}
		*out_r = mf_buf_steal(&b);
		return 0;
	}
	for (char *p = v; *p; p++) {
		if ((*p == '#' || *p == ';') &&
		    (p == v || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
	}
	*out_r = xstrdup(trim(v));
	return 0;
}

static void sections_free(struct section *secs, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++) {
		for (unsigned int j = 0; j < secs[i].kv_count; j++) {
			free(secs[i].kv[j].key);
			if (secs[i].kv[j].value) {
				explicit_bzero(secs[i].kv[j].value,
					       strlen(secs[i].kv[j].value));
				free(secs[i].kv[j].value);
			}
		}
		free(secs[i].kv);
		free(secs[i].name);
		free(secs[i].arg);
	}
	free(secs);
}

/* [view NAME] sections may repeat "match" (one rule per line). */
static bool view_multi_key(const struct section *sec, const char *key)
{
	return strcmp(sec->name, "view") == 0 && strcmp(key, "match") == 0;
}

static int split_sections(const char *name, const char *text,
			  struct section **secs_r, unsigned int *n_r,
			  char **error_r)
{
	struct section *secs = NULL;
	unsigned int n = 0;
	char *copy = xstrdup(text);
	char *line = copy;
	int lineno = 0;
	int ret = 0;

	while (line) {
		char *next = strchr(line, '\n');
		char *s;

		if (next)
			*next++ = '\0';
		lineno++;
		s = trim(line);
		line = next;
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			char *word, *arg;

			if (!end || *trim(end + 1) != '\0') {
				*error_r = xasprintf("%s:%d: bad section "
						     "header", name, lineno);
				ret = -EINVAL;
				break;
			}
			*end = '\0';
			word = trim(s + 1);
			arg = word + strcspn(word, " \t");
			if (*arg) {
				*arg++ = '\0';
				arg = trim(arg);
			}
			secs = xrealloc(secs, (n + 1) * sizeof(*secs));
			memset(&secs[n], 0, sizeof(secs[n]));
			secs[n].name = xstrdup(word);
			secs[n].arg = *arg ? xstrdup(arg) : NULL;
			secs[n].line = lineno;
			n++;
			continue;
		}
		{
			char *eq = strchr(s, '=');
			struct section *sec;
			char *key, *value;

			if (!eq) {
				*error_r = xasprintf("%s:%d: expected "
						     "\"key = value\"",
						     name, lineno);
				ret = -EINVAL;
				break;
			}
			if (n == 0) {
				*error_r = xasprintf("%s:%d: key outside of "
						     "a [section]",
						     name, lineno);
				ret = -EINVAL;
				break;
			}
			*eq = '\0';
			key = trim(s);
			if (clean_value(eq + 1, &value) < 0) {
				*error_r = xasprintf("%s:%d: unterminated "
						     "quoted value",
						     name, lineno);
				ret = -EINVAL;
				break;
			}
			sec = &secs[n - 1];
			for (unsigned int i = 0; i < sec->kv_count; i++) {
				if (strcmp(sec->kv[i].key, key) == 0 &&
				    !view_multi_key(sec, key)) {
					free(value);
					*error_r = xasprintf(
						"%s:%d: \"%s\" set twice in "
						"this section (first on line "
						"%d)",
						name, lineno, key,
						sec->kv[i].line);
					ret = -EINVAL;
					goto out;
				}
			}
			sec->kv = xrealloc(sec->kv, (sec->kv_count + 1) *
							    sizeof(*sec->kv));
			sec->kv[sec->kv_count].key = xstrdup(key);
			sec->kv[sec->kv_count].value = value;
			sec->kv[sec->kv_count].line = lineno;
			sec->kv[sec->kv_count].used = false;
			sec->kv_count++;
		}
	}
out:
	explicit_bzero(copy, strlen(text));
	free(copy);
	if (ret < 0) {
		sections_free(secs, n);
		return ret;
	}
	*secs_r = secs;
	*n_r = n;
	return 0;
}

static struct mf_kv *find_kv(struct mf_kv *kv, unsigned int n, const char *key)
{
	for (unsigned int i = 0; i < n; i++) {
		if (strcmp(kv[i].key, key) == 0)
			return &kv[i];
	}
	return NULL;
}

static int parse_uint(const char *file, const struct mf_kv *kv,
		      unsigned int min, unsigned int max, unsigned int *out,
		      char **error_r)
{
	uint64_t v;

	if (mf_parse_u64(kv->value, strlen(kv->value), max, &v) < 0 ||
	    v < min) {
		*error_r = xasprintf("%s:%d: %s must be a number from %u "
				     "to %u", file, kv->line, kv->key, min,
				     max);
		return -EINVAL;
	}
	*out = (unsigned int)v;
	return 0;
}

/* The power of 1024 of a size suffix (K M G T), or 0. */
static unsigned int size_unit(char c)
{
	static const char units[] = "KMGT";
	const char *u = c ? strchr(units, toupper((unsigned char)c)) : NULL;

	return u ? (unsigned int)(u - units) + 1 : 0;
}

/* A size: bytes, or a number with K, M, G or T (powers of 1024). */
static int parse_size(const char *file, const struct mf_kv *kv,
		      uint64_t *out, char **error_r)
{
	size_t len = strlen(kv->value);
	unsigned int shift = 0;
	uint64_t v;

	if (len > 1 && (kv->value[len - 1] == 'B' || kv->value[len - 1] == 'b')
	    && size_unit(kv->value[len - 2]))
		len--;	/* "2GB" */
	if (len > 0 && size_unit(kv->value[len - 1])) {
		shift = 10 * size_unit(kv->value[len - 1]);
		len--;
	}
	if (mf_parse_u64(kv->value, len, UINT64_MAX >> shift, &v) < 0) {
		*error_r = xasprintf("%s:%d: %s must be a size: bytes, or a "
				     "number with K, M, G or T (not \"%s\")",
				     file, kv->line, kv->key, kv->value);
		return -EINVAL;
	}
	*out = v << shift;
	return 0;
}

static int parse_bool(const char *file, const struct mf_kv *kv, bool *out,
		      char **error_r)
{
	static const char *const yes[] = { "yes", "true", "on", "1", NULL };
	static const char *const no[] = { "no", "false", "off", "0", NULL };

	for (unsigned int i = 0; yes[i]; i++) {
		if (strcasecmp(kv->value, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(kv->value, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	*error_r = xasprintf("%s:%d: %s must be yes or no", file, kv->line,
			     kv->key);
	return -EINVAL;
}

static int parse_enum(const char *file, const struct mf_kv *kv,
		      const char *const *names, int *out, char **error_r)
{
	struct mf_buf b;

	for (int i = 0; names[i]; i++) {
		if (strcasecmp(kv->value, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	mf_buf_init(&b);
	for (int i = 0; names[i]; i++)
		mf_buf_printf(&b, "%s%s", i ? " | " : "", names[i]);
	*error_r = xasprintf("%s:%d: %s must be one of: %s (not \"%s\")",
			     file, kv->line, kv->key, b.data, kv->value);
	mf_buf_free(&b);
	return -EINVAL;
}

bool mf_host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

static char **split_patterns(const char *value)
{
	char **list = NULL;
	unsigned int n = 0;
	const char *p = value;

	for (;;) {
		size_t len;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		len = strcspn(p, " \t,");
		list = xrealloc(list, (n + 2) * sizeof(*list));
		list[n++] = xstrndup(p, len);
		p += len;
	}
	if (!list)
		list = xcalloc(1, sizeof(*list));
	list[n] = NULL;
	return list;
}

static int check_account_name(const char *file, const struct section *sec,
			      char **error_r)
{
	const char *n = sec->arg;

	if (!n || !*n) {
		*error_r = xasprintf("%s:%d: [account] needs a name: "
				     "[account NAME]", file, sec->line);
		return -EINVAL;
	}
	if (n[0] == '.' || strchr(n, '/') || strlen(n) > 64) {
		*error_r = xasprintf("%s:%d: account name \"%s\" cannot be a "
				     "directory name (no \"/\", no leading "
				     "\".\", at most 64 bytes)",
				     file, sec->line, n);
		return -EINVAL;
	}
	for (const char *p = n; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*error_r = xasprintf("%s:%d: account name has a "
					     "control character",
					     file, sec->line);
			return -EINVAL;
		}
	}
	return 0;
}

static int load_account(const char *file, struct section *sec,
			struct mf_account *a, char **error_r)
{
	static const char *const tls_names[] = { "implicit", "starttls",
						 "none", NULL };
	static const char *const del_names[] = { "trash", "expunge", NULL };
	static const char *const pre_names[] = { "none", "new", "all", NULL };
	struct mf_kv *kv;
	int v;

	if (check_account_name(file, sec, error_r) < 0)
		return -EINVAL;
	a->name = xstrdup(sec->arg);
	a->line = sec->line;
	a->poll_interval = 60;
	a->timeout = 30;
	a->tls = MF_TLS_IMPLICIT;
	a->delete_policy = MF_DELETE_TRASH;
	a->prefetch = MF_PREFETCH_NONE;
	a->compress = true;
	a->max_connections = 3;

	/* Hand over the kv list; the struct owns it from here. */
	a->kv = sec->kv;
	a->kv_count = sec->kv_count;
	sec->kv = NULL;
	sec->kv_count = 0;

	for (unsigned int i = 0; i < a->kv_count; i++) {
		if (!in_list(account_keys, a->kv[i].key))
			mf_warn("%s:%d: unknown key \"%s\" in [account %s] "
				"(ignored)", file, a->kv[i].line,
				a->kv[i].key, a->name);
	}

	kv = find_kv(a->kv, a->kv_count, "type");
	if (!kv) {
		*error_r = xasprintf("%s:%d: [account %s] has no \"type\" "
				     "(type = imap)", file, sec->line,
				     a->name);
		return -EINVAL;
	}
	a->type = xstrdup(kv->value);

	kv = find_kv(a->kv, a->kv_count, "host");
	if (kv)
		a->host = xstrdup(kv->value);
	kv = find_kv(a->kv, a->kv_count, "user");
	if (kv)
		a->user = xstrdup(kv->value);
	kv = find_kv(a->kv, a->kv_count, "password");
	if (kv)
		a->password = xstrdup(kv->value);
	kv = find_kv(a->kv, a->kv_count, "password_command");
	if (kv)
		a->password_command = xstrdup(kv->value);
	kv = find_kv(a->kv, a->kv_count, "ca_file");
	if (kv)
		a->ca_file = mf_expand_home(kv->value);
	kv = find_kv(a->kv, a->kv_count, "folders");
	a->folders = split_patterns(kv ? kv->value : "*");

	kv = find_kv(a->kv, a->kv_count, "port");
	if (kv && parse_uint(file, kv, 1, 65535, &a->port, error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "poll_interval");
	if (kv && parse_uint(file, kv, 1, 86400, &a->poll_interval,
			     error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "timeout");
	if (kv && parse_uint(file, kv, 1, 3600, &a->timeout, error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "max_connections");
	if (kv && parse_uint(file, kv, 1, 16, &a->max_connections,
			     error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "compress");
	if (kv && parse_bool(file, kv, &a->compress, error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "tunnel");
	if (kv && kv->value[0])
		a->tunnel = xstrdup(kv->value);
	kv = find_kv(a->kv, a->kv_count, "allow_plaintext");
	if (kv && parse_bool(file, kv, &a->allow_plaintext, error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "tls");
	if (kv) {
		if (parse_enum(file, kv, tls_names, &v, error_r) < 0)
			return -EINVAL;
		a->tls = (enum mf_tls_mode)v;
	}
	kv = find_kv(a->kv, a->kv_count, "delete");
	if (kv) {
		if (parse_enum(file, kv, del_names, &v, error_r) < 0)
			return -EINVAL;
		a->delete_policy = (enum mf_delete_policy)v;
	} else if (strcmp(a->type, "gmail") == 0) {
		/*
		 * Gmail: an unlink goes to the backend, which knows what it
		 * means in a label's folder (remove the label, archive,
		 * trash; see inbox_unlink) instead of a move to Trash.
		 */
		a->delete_policy = MF_DELETE_EXPUNGE;
	}
	kv = find_kv(a->kv, a->kv_count, "prefetch");
	if (kv) {
		if (parse_enum(file, kv, pre_names, &v, error_r) < 0)
			return -EINVAL;
		a->prefetch = (enum mf_prefetch)v;
	}
	kv = find_kv(a->kv, a->kv_count, "prefetch_max_size");
	if (kv && parse_size(file, kv, &a->prefetch_max_size, error_r) < 0)
		return -EINVAL;
	kv = find_kv(a->kv, a->kv_count, "prefetch_max_age");
	if (kv && parse_uint(file, kv, 0, 36500, &a->prefetch_max_age,
			     error_r) < 0)
		return -EINVAL;

	if (strcmp(a->type, "imap") == 0 && a->tunnel) {
		/*
		 * IMAP over a command's stdin and stdout: the command is the
		 * transport and has logged in (ssh host dovecot imap).
		 */
		if (!a->host)
			a->host = xstrdup("tunnel");
	} else if (strcmp(a->type, "imap") == 0) {
		if (!a->host) {
			*error_r = xasprintf("%s:%d: [account %s] needs "
					     "\"host\"", file, sec->line,
					     a->name);
			return -EINVAL;
		}
		if (!a->user) {
			*error_r = xasprintf("%s:%d: [account %s] needs "
					     "\"user\"", file, sec->line,
					     a->name);
			return -EINVAL;
		}
		kv = find_kv(a->kv, a->kv_count, "auth");
		if (kv && strcasecmp(kv->value, "xoauth2") != 0 &&
		    strcasecmp(kv->value, "oauthbearer") != 0 &&
		    strcasecmp(kv->value, "password") != 0) {
			*error_r = xasprintf("%s:%d: auth must be password, "
					     "xoauth2 or oauthbearer (not "
					     "\"%s\")", file, kv->line,
					     kv->value);
			return -EINVAL;
		}
		bool oauth = kv && strcasecmp(kv->value, "password") != 0;

		if (oauth && !find_kv(a->kv, a->kv_count, "oauth")) {
			*error_r = xasprintf("%s:%d: [account %s] auth = %s "
					     "needs \"oauth\" (microsoft, "
					     "google or generic)", file,
					     sec->line, a->name, kv->value);
			return -EINVAL;
		}
		if (!oauth && !a->password && !a->password_command) {
			*error_r = xasprintf("%s:%d: [account %s] needs "
					     "\"password_command\" or "
					     "\"password\"", file, sec->line,
					     a->name);
			return -EINVAL;
		}
		if (a->tls == MF_TLS_NONE && !a->allow_plaintext &&
		    !mf_host_is_loopback(a->host)) {
			*error_r = xasprintf(
				"%s:%d: [account %s] tls = none would send "
				"the password in clear text to %s; use tls = "
				"implicit or starttls, or set allow_plaintext "
				"= yes if you really mean it",
				file, sec->line, a->name, a->host);
			return -EINVAL;
		}
		if (!a->port)
			a->port = a->tls == MF_TLS_IMPLICIT ? 993 : 143;
	} else if (strcmp(a->type, "graph") == 0) {
		const char *api;

		/*
		 * "user" is optional: requests go to /me, whoever the
		 * token belongs to; user (the mailbox address) is for
		 * messages and the OAuth login hint.
		 */
		kv = find_kv(a->kv, a->kv_count, "api_url");
		api = kv ? kv->value : NULL;
		if (api && strncasecmp(api, "https://", 8) != 0 &&
		    strncasecmp(api, "http://", 7) != 0) {
			*error_r = xasprintf("%s:%d: api_url must be an http:// "
					     "or https:// URL", file, kv->line);
			return -EINVAL;
		}
		if (!a->host)
			a->host = xstrdup(api ? api : "graph.microsoft.com");
	}
	return 0;
}

/* ---- [view NAME] sections ---- */

static const char *const view_keys[] = {
	"match", "account", "folders", NULL,
};

static void free_list(char **list)
{
	if (!list)
		return;
	for (char **p = list; *p; p++)
		free(*p);
	free(list);
}

static void view_clear(struct mf_view *v)
{
	free(v->name);
	free(v->dirname);
	for (unsigned int i = 0; i < v->rule_count; i++) {
		free(v->rules[i].field);
		free(v->rules[i].glob);
	}
	free(v->rules);
	free_list(v->accounts);
	free_list(v->folders);
}

/* "List-Id: *linux-kernel*" -> field "list-id", glob "*linux-kernel*". */
static int parse_view_rule(const char *file, const struct mf_kv *kv,
			   struct mf_view_rule *r, char **error_r)
{
	const char *colon = strchr(kv->value, ':');
	const char *g;
	size_t flen;

	flen = colon ? (size_t)(colon - kv->value) : 0;
	while (flen > 0 && (kv->value[flen - 1] == ' ' ||
			    kv->value[flen - 1] == '\t'))
		flen--;
	if (!colon || flen == 0) {
		*error_r = xasprintf("%s:%d: match needs \"Header: pattern\" "
				     "(e.g. \"List-Id: *linux-kernel*\")",
				     file, kv->line);
		return -EINVAL;
	}
	for (size_t i = 0; i < flen; i++) {
		unsigned char ch = (unsigned char)kv->value[i];

		/*
		 * Header names as mail uses them: letters, digits, "-", "_"
		 * and "."; the name goes into an IMAP command as an atom.
		 */
		if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.') {
			*error_r = xasprintf("%s:%d: \"%.*s\" is not a header "
					     "name", file, kv->line,
					     (int)flen, kv->value);
			return -EINVAL;
		}
	}
	g = colon + 1;
	while (*g == ' ' || *g == '\t')
		g++;
	if (!*g) {
		*error_r = xasprintf("%s:%d: match has no pattern after "
				     "\"%.*s:\"", file, kv->line, (int)flen,
				     kv->value);
		return -EINVAL;
	}
	r->field = xstrndup(kv->value, flen);
	for (char *p = r->field; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	r->glob = xstrdup(g);
	return 0;
}

/* Parse one [view NAME] section into a new cfg->views entry. */
static int load_view(const char *file, struct section *sec,
		     struct mf_config *cfg, char **error_r)
{
	struct mf_view *v;
	const char *n = sec->arg;
	int ret = 0;

	if (!n || !*n || n[0] == '.' || strchr(n, '/') || strlen(n) > 64) {
		*error_r = xasprintf("%s:%d: [view NAME] needs a name that "
				     "can be a directory name (no \"/\", no "
				     "leading \".\", at most 64 bytes)",
				     file, sec->line);
		return -EINVAL;
	}
	for (const char *p = n; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*error_r = xasprintf("%s:%d: view name has a control "
					     "character", file, sec->line);
			return -EINVAL;
		}
	}
	for (unsigned int i = 0; i < cfg->view_count; i++) {
		if (strcmp(cfg->views[i].name, n) == 0) {
			*error_r = xasprintf("%s:%d: view \"%s\" defined "
					     "twice", file, sec->line, n);
			return -EINVAL;
		}
	}
	cfg->views = xrealloc(cfg->views,
			      (cfg->view_count + 1) * sizeof(*cfg->views));
	v = &cfg->views[cfg->view_count++];
	memset(v, 0, sizeof(*v));
	v->name = xstrdup(n);
	v->dirname = xasprintf("@%s", n);
	v->line = sec->line;
	for (unsigned int j = 0; j < sec->kv_count && ret == 0; j++) {
		struct mf_kv *kv = &sec->kv[j];

		if (strcmp(kv->key, "match") == 0) {
			v->rules = xrealloc(v->rules, (v->rule_count + 1) *
							      sizeof(*v->rules));
			memset(&v->rules[v->rule_count], 0,
			       sizeof(v->rules[0]));
			ret = parse_view_rule(file, kv,
					      &v->rules[v->rule_count],
					      error_r);
			if (ret == 0)
				v->rule_count++;
		} else if (strcmp(kv->key, "account") == 0) {
			v->accounts = split_patterns(kv->value);
		} else if (strcmp(kv->key, "folders") == 0) {
			v->folders = split_patterns(kv->value);
		} else if (!in_list(view_keys, kv->key)) {
			mf_warn("%s:%d: unknown key \"%s\" in [view %s] "
				"(ignored)", file, kv->line, kv->key, n);
		}
	}
	if (ret == 0 && v->rule_count == 0) {
		*error_r = xasprintf("%s:%d: [view %s] has no \"match\" line",
				     file, sec->line, n);
		ret = -EINVAL;
	}
	return ret;
}

static bool list_has(char **list, const char *s)
{
	for (; list && *list; list++) {
		if (strcmp(*list, s) == 0)
			return true;
	}
	return false;
}

/*
 * After all sections: views name existing accounts and do not collide
 * with one; each account learns which header fields its views need.
 */
static int finish_views(const char *file, struct mf_config *cfg,
			char **error_r)
{
	for (unsigned int i = 0; i < cfg->view_count; i++) {
		struct mf_view *v = &cfg->views[i];

		for (char **p = v->accounts; p && *p; p++) {
			bool found = false;

			for (unsigned int j = 0; j < cfg->account_count; j++)
				found |= strcmp(cfg->accounts[j].name, *p) ==
					 0;
			if (!found) {
				*error_r = xasprintf("%s:%d: [view %s] names "
						     "account \"%s\", which "
						     "is not configured",
						     file, v->line, v->name,
						     *p);
				return -EINVAL;
			}
		}
		for (unsigned int j = 0; j < cfg->account_count; j++) {
			if (strcmp(cfg->accounts[j].name, v->dirname) == 0) {
				*error_r = xasprintf("%s:%d: [view %s] would "
						     "show as \"%s\", the "
						     "name of an account",
						     file, v->line, v->name,
						     v->dirname);
				return -EINVAL;
			}
		}
	}
	for (unsigned int j = 0; j < cfg->account_count; j++) {
		struct mf_account *a = &cfg->accounts[j];
		struct mf_buf b;

		mf_buf_init(&b);
		for (unsigned int i = 0; i < cfg->view_count; i++) {
			struct mf_view *v = &cfg->views[i];

			if (v->accounts && !list_has(v->accounts, a->name))
				continue;
			for (unsigned int r = 0; r < v->rule_count; r++) {
				const char *f = v->rules[r].field;
				char up[128];
				size_t len = strlen(f);

				if (strcmp(f, "account") == 0 ||
				    strcmp(f, "folder") == 0 ||
				    strcmp(f, "message-id") == 0 ||
				    len >= sizeof(up))
					continue;
				for (size_t k = 0; k <= len; k++)
					up[k] = (char)toupper(
						(unsigned char)f[k]);
				/* Skip duplicates (whole words). */
				{
					char *hay = xasprintf(
						" %s ", b.data ? b.data : "");
					char *needle = xasprintf(" %s ", up);
					bool dup = strstr(hay, needle) != NULL;

					free(hay);
					free(needle);
					if (dup)
						continue;
				}
				if (b.len)
					mf_buf_append(&b, " ", 1);
				mf_buf_append(&b, up, len);
			}
		}
		if (b.len) {
			a->view_fields = xstrndup(b.data, b.len);
		}
		mf_buf_free(&b);
	}
	return 0;
}

bool mf_view_wants(const struct mf_view *v, const char *account,
		   const char *folder)
{
	bool wanted = false;

	if (v->accounts && !list_has(v->accounts, account))
		return false;
	if (!v->folders)
		return true;
	for (char **p = v->folders; *p; p++) {
		const char *pat = *p;
		bool neg = pat[0] == '!';

		if (neg)
			pat++;
		if (fnmatch(pat, folder, 0) == 0)
			wanted = !neg;
	}
	return wanted;
}

static void account_clear(struct mf_account *a)
{
	free(a->name);
	free(a->type);
	free(a->host);
	free(a->user);
	if (a->password) {
		explicit_bzero(a->password, strlen(a->password));
		free(a->password);
	}
	free(a->password_command);
	free(a->ca_file);
	free(a->tunnel);
	free(a->view_fields);
	if (a->folders) {
		for (char **p = a->folders; *p; p++)
			free(*p);
		free(a->folders);
	}
	for (unsigned int i = 0; i < a->kv_count; i++) {
		free(a->kv[i].key);
		explicit_bzero(a->kv[i].value, strlen(a->kv[i].value));
		free(a->kv[i].value);
	}
	free(a->kv);
}

void mf_config_free(struct mf_config **cfgp)
{
	struct mf_config *cfg = *cfgp;

	if (!cfg)
		return;
	for (unsigned int i = 0; i < cfg->account_count; i++)
		account_clear(&cfg->accounts[i]);
	free(cfg->accounts);
	for (unsigned int i = 0; i < cfg->view_count; i++)
		view_clear(&cfg->views[i]);
	free(cfg->views);
	free(cfg->path);
	free(cfg->cache_dir);
	free(cfg->state_dir);
	free(cfg->token_key_command);
	free(cfg);
	*cfgp = NULL;
}

static char *xdg_dir(const char *env, const char *fallback, const char *sub)
{
	const char *v = getenv(env);

	if (v && v[0] == '/')
		return xasprintf("%s/%s", v, sub);
	{
		char *home = mf_expand_home(fallback);
		char *r = xasprintf("%s/%s", home, sub);
		free(home);
		return r;
	}
}

char *mf_config_default_path(void)
{
	return xdg_dir("XDG_CONFIG_HOME", "~/.config", "mailfs/mailfs.conf");
}

int mf_config_parse(const char *name, const char *text,
		    struct mf_config **cfg_r, char **error_r)
{
	struct section *secs;
	unsigned int n;
	struct mf_config *cfg;
	int ret;

	*cfg_r = NULL;
	ret = split_sections(name, text, &secs, &n, error_r);
	if (ret < 0)
		return ret;

	cfg = xcalloc(1, sizeof(*cfg));
	cfg->path = xstrdup(name);
	cfg->fetch_timeout = 30;
	cfg->drain_timeout = 10;
	for (unsigned int i = 0; i < n && ret == 0; i++) {
		struct section *sec = &secs[i];

		if (strcmp(sec->name, "general") == 0) {
			struct mf_kv *kv;

			for (unsigned int j = 0; j < sec->kv_count; j++) {
				if (!in_list(general_keys, sec->kv[j].key))
					mf_warn("%s:%d: unknown key \"%s\" in "
						"[general] (ignored)", name,
						sec->kv[j].line,
						sec->kv[j].key);
			}
			kv = find_kv(sec->kv, sec->kv_count, "cache_dir");
			if (kv) {
				free(cfg->cache_dir);
				cfg->cache_dir = mf_expand_home(kv->value);
			}
			kv = find_kv(sec->kv, sec->kv_count, "state_dir");
			if (kv) {
				free(cfg->state_dir);
				cfg->state_dir = mf_expand_home(kv->value);
			}
			kv = find_kv(sec->kv, sec->kv_count,
				     "token_key_command");
			if (kv && kv->value[0]) {
				free(cfg->token_key_command);
				cfg->token_key_command = xstrdup(kv->value);
			}
			kv = find_kv(sec->kv, sec->kv_count, "fetch_timeout");
			if (kv)
				ret = parse_uint(name, kv, 1, 3600,
						 &cfg->fetch_timeout, error_r);
			kv = find_kv(sec->kv, sec->kv_count,
				     "cache_max_size");
			if (kv && ret == 0)
				ret = parse_size(name, kv,
						 &cfg->cache_max_size, error_r);
			kv = find_kv(sec->kv, sec->kv_count, "drain_timeout");
			if (kv && ret == 0)
				ret = parse_uint(name, kv, 0, 3600,
						 &cfg->drain_timeout, error_r);
		} else if (strcmp(sec->name, "account") == 0) {
			struct mf_account *a;

			for (unsigned int j = 0; j < cfg->account_count; j++) {
				if (sec->arg &&
				    strcmp(cfg->accounts[j].name, sec->arg) ==
					    0) {
					*error_r = xasprintf(
						"%s:%d: account \"%s\" "
						"defined twice", name,
						sec->line, sec->arg);
					ret = -EINVAL;
				}
			}
			if (ret < 0)
				break;
			cfg->accounts = xrealloc(cfg->accounts,
						 (cfg->account_count + 1) *
							 sizeof(*cfg->accounts));
			a = &cfg->accounts[cfg->account_count++];
			memset(a, 0, sizeof(*a));
			ret = load_account(name, sec, a, error_r);
		} else if (strcmp(sec->name, "view") == 0) {
			ret = load_view(name, sec, cfg, error_r);
		} else {
			*error_r = xasprintf("%s:%d: unknown section [%s] "
					     "(expected [general], "
					     "[account NAME] or [view NAME])",
					     name, sec->line, sec->name);
			ret = -EINVAL;
		}
	}
	sections_free(secs, n);
	if (ret == 0 && cfg->account_count == 0) {
		*error_r = xasprintf("%s: no [account NAME] section: nothing "
				     "to mount", name);
		ret = -EINVAL;
	}
	if (ret == 0)
		ret = finish_views(name, cfg, error_r);
	if (ret < 0) {
		mf_config_free(&cfg);
		return ret;
	}
	if (!cfg->cache_dir)
		cfg->cache_dir = xdg_dir("XDG_CACHE_HOME", "~/.cache",
					 "mailfs");
	if (!cfg->state_dir)
		cfg->state_dir = xdg_dir("XDG_STATE_HOME", "~/.local/state",
					 "mailfs");
	*cfg_r = cfg;
	return 0;
}

int mf_config_load(const char *path, struct mf_config **cfg_r, char **error_r)
{
	FILE *f;
	struct mf_buf b;
	char chunk[4096];
	size_t n;
	int ret;

	*cfg_r = NULL;
	f = fopen(path, "re");
	if (!f) {
		int e = errno;
		*error_r = xasprintf("cannot read config %s: %s", path,
				     strerror(e));
		return -e;
	}
	mf_buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		mf_buf_append(&b, chunk, n);
		if (b.len > CONFIG_MAX_SIZE) {
			fclose(f);
			mf_buf_free(&b);
			*error_r = xasprintf("config %s is larger than 1 MiB",
					     path);
			return -EFBIG;
		}
	}
	fclose(f);
	if (memchr(b.data ? b.data : "", '\0', b.len)) {
		mf_buf_free(&b);
		*error_r = xasprintf("config %s contains a NUL byte", path);
		return -EINVAL;
	}
	ret = mf_config_parse(path, b.data ? b.data : "", cfg_r, error_r);
	if (b.data)
		explicit_bzero(b.data, b.len);
	mf_buf_free(&b);
	return ret;
}

const char *mf_account_get(const struct mf_account *acct, const char *key)
{
	for (unsigned int i = 0; i < acct->kv_count; i++) {
		if (strcmp(acct->kv[i].key, key) == 0) {
			acct->kv[i].used = true;
			return acct->kv[i].value;
		}
	}
	return NULL;
}

int mf_account_password(const struct mf_account *acct, char **password_r,
			char **error_r)
{
	if (acct->password_command) {
		char *err = NULL;
		int ret = mf_run_command_line(acct->password_command,
					      password_r, &err);
		if (ret < 0) {
			*error_r = xasprintf("account %s: password_command "
					     "failed: %s", acct->name, err);
			free(err);
			return ret;
		}
		return 0;
	}
	if (acct->password) {
		*password_r = xstrdup(acct->password);
		return 0;
	}
	*error_r = xasprintf("account %s: no password configured",
			     acct->name);
	return -ENOENT;
}

bool mf_account_folder_wanted(const struct mf_account *acct,
			      const char *folder)
{
	bool wanted = false;

	if (!acct->folders)
		return true;
	/* Later patterns win, so "* !Junk" excludes Junk. */
	for (char **p = acct->folders; *p; p++) {
		const char *pat = *p;
		bool neg = pat[0] == '!';

		if (neg)
			pat++;
		if (fnmatch(pat, folder, 0) == 0)
			wanted = !neg;
	}
	return wanted;
}
