/*
 * Matching messages against [view NAME] rules (fs/views.c shows the
 * result). Kept apart from the file system so that it can be tested alone
 * (tests/unit/test_view_match.c).
 */
#include "mf_view_match.h"
#include "mf_backend.h"
#include "mf_util.h"

#include <fnmatch.h>
#include <string.h>
#include <strings.h>


static bool is_address_field(const char *field)
{
	static const char *const names[] = {
		"from", "to", "cc", "bcc", "sender", "reply-to",
		"delivered-to", "x-original-to", "resent-from", "resent-to",
		NULL,
	};

	for (const char *const *n = names; *n; n++) {
		if (strcmp(*n, field) == 0)
			return true;
	}
	return false;
}

/*
 * Does glob match value, or, in an address header, one of its addresses
 * ("Bob <bob@example.org>, carol@example.net" has bob@example.org and
 * carol@example.net), or an <...> part of any other header (List-Id)?
 */
static bool value_matches(const char *field, char *value, const char *glob)
{
	bool addresses = is_address_field(field);
	char *p = value;

	if (fnmatch(glob, value, FNM_CASEFOLD) == 0)
		return true;
	while (*p) {
		char *start = p, *end, *lt, *gt;
		bool quoted = false;
		char save;

		/* One comma-separated item (commas in quotes do not count). */
		for (end = p; *end && (quoted || *end != ','); end++) {
			if (*end == '"')
				quoted = !quoted;
		}
		p = *end ? end + 1 : end;
		save = *end;
		*end = '\0';
		lt = strrchr(start, '<');
		gt = lt ? strchr(lt, '>') : NULL;
		if (lt && gt) {
			*gt = '\0';
			if (fnmatch(glob, lt + 1, FNM_CASEFOLD) == 0)
				return true;
			*gt = '>';
		} else if (addresses) {
			char *a = start;
			size_t n;

			while (*a == ' ' || *a == '\t')
				a++;
			n = strlen(a);
			while (n > 0 && (a[n - 1] == ' ' || a[n - 1] == '\t'))
				n--;
			{
				char c = a[n];
				bool hit;

				a[n] = '\0';
				hit = fnmatch(glob, a, FNM_CASEFOLD) == 0;
				a[n] = c;
				if (hit)
					return true;
			}
		}
		*end = save;
		if (!addresses)
			break;	/* only one <...> part outside address lists */
	}
	return false;
}

/* Does any occurrence of header field (lower case) in fields match glob? */
bool mf_view_header_matches(const char *fields, const char *field,
			    const char *glob)
{
	size_t flen = strlen(field);
	const char *p = fields;
	bool hit = false;

	while (*p && !hit) {
		const char *eol = p + strcspn(p, "\r\n");
		const char *colon = memchr(p, ':', (size_t)(eol - p));

		if (colon && (size_t)(colon - p) == flen &&
		    strncasecmp(p, field, flen) == 0) {
			struct mf_buf v;
			const char *q = colon + 1;

			/* The value, unfolded: continuation lines start
			 * with white space. */
			mf_buf_init(&v);
			for (;;) {
				mf_buf_append(&v, q, (size_t)(eol - q));
				q = eol;
				while (*q == '\r' || *q == '\n')
					q++;
				if (*q != ' ' && *q != '\t')
					break;
				eol = q + strcspn(q, "\r\n");
			}
			{
				char *s = v.data ? v.data : "";
				size_t n = v.len;

				while (*s == ' ' || *s == '\t')
					s++, n--;
				while (n > 0 && (s[n - 1] == ' ' ||
						 s[n - 1] == '\t'))
					s[--n] = '\0';
				hit = value_matches(field, s, glob);
			}
			mf_buf_free(&v);
			p = q;
			continue;
		}
		p = eol;
		while (*p == '\r' || *p == '\n')
			p++;
	}
	return hit;
}

/* Deleted and junk mail stays out of views without a "folders" key. */
static bool trash_or_junk(const char *path, unsigned int attrs)
{
	return (attrs & (MF_FOLDER_TRASH | MF_FOLDER_JUNK)) ||
	       strcasecmp(path, "Trash") == 0 || strcasecmp(path, "Junk") == 0;
}

bool mf_view_matches(const struct mf_view *v, const char *account,
		     const char *path, unsigned int attrs, const char *fields)
{
	if (!mf_view_wants(v, account, path))
		return false;
	if (!v->folders && trash_or_junk(path, attrs))
		return false;
	for (unsigned int i = 0; i < v->rule_count; i++) {
		const struct mf_view_rule *r = &v->rules[i];

		if (strcmp(r->field, "account") == 0) {
			if (fnmatch(r->glob, account, FNM_CASEFOLD) == 0)
				return true;
		} else if (strcmp(r->field, "folder") == 0) {
			if (fnmatch(r->glob, path, FNM_CASEFOLD) == 0)
				return true;
		} else if (fields &&
			   mf_view_header_matches(fields, r->field, r->glob)) {
			return true;
		}
	}
	return false;
}
