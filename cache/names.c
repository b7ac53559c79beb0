/*
 * Maildir file names and folder path components (see mf_names.h).
 *
 * Message names are parsed leniently because every Maildir writer has its
 * own habits (mutt keeps ":2," in new/, Dovecot adds ",S=" fields to the
 * unique part, keyword letters follow the standard flags). What mailfs
 * writes is strict: flags in ASCII order, no repeats.
 */
#include "mf_names.h"
#include "mf_backend.h"
#include "mf_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	char letter;
	unsigned int bit;
} flag_letters[] = {
	{ 'D', MF_FLAG_DRAFT },	  { 'F', MF_FLAG_FLAGGED },
	{ 'P', MF_FLAG_PASSED },  { 'R', MF_FLAG_REPLIED },
	{ 'S', MF_FLAG_SEEN },	  { 'T', MF_FLAG_TRASHED },
};

void mf_flags_to_letters(unsigned int flags, char buf[7])
{
	unsigned int n = 0;

	for (size_t i = 0; i < MF_ARRAY_SIZE(flag_letters); i++) {
		if (flags & flag_letters[i].bit)
			buf[n++] = flag_letters[i].letter;
	}
	buf[n] = '\0';
}

static unsigned int letter_bit(char c)
{
	for (size_t i = 0; i < MF_ARRAY_SIZE(flag_letters); i++) {
		if (flag_letters[i].letter == c)
			return flag_letters[i].bit;
	}
	return 0;
}

int mf_maildir_parse(const char *name, struct mf_maildir_name *n)
{
	size_t len = strlen(name);
	const char *colon;
	size_t ulen;
	bool seen[128] = { false };
	size_t nextra = 0;

	memset(n, 0, sizeof(*n));
	if (len == 0 || len > MF_NAME_MAX || name[0] == '.' ||
	    strchr(name, '/'))
		return -EINVAL;
	colon = strchr(name, ':');
	ulen = colon ? (size_t)(colon - name) : len;
	if (ulen == 0)
		return -EINVAL;
	memcpy(n->uniq, name, ulen);
	n->uniq[ulen] = '\0';
	if (!colon || strncmp(colon, ":2,", 3) != 0)
		return 0;
	n->has_info = true;
	for (const char *p = colon + 3; *p && *p != ','; p++) {
		unsigned char c = (unsigned char)*p;
		unsigned int bit = letter_bit((char)c);

		if (bit) {
			n->flags |= bit;
			continue;
		}
		if (c < 128 && ((c >= 'a' && c <= 'z') ||
				(c >= 'A' && c <= 'Z')) && !seen[c]) {
			seen[c] = true;
			if (nextra < sizeof(n->extra) - 1)
				nextra++;
		}
	}
	/* Emit the kept letters sorted: upper case first, as ASCII. */
	nextra = 0;
	for (unsigned int c = 'A'; c <= 'z'; c++) {
		if (seen[c] && nextra < sizeof(n->extra) - 1)
			n->extra[nextra++] = (char)c;
	}
	n->extra[nextra] = '\0';
	return 0;
}

int mf_maildir_format(const char *uniq, unsigned int flags, const char *extra,
		      bool with_info, char *buf, size_t size)
{
	char letters[7];
	struct mf_buf b;
	int ret = 0;

	mf_flags_to_letters(flags, letters);
	if (!extra)
		extra = "";
	mf_buf_init(&b);
	mf_buf_appends(&b, uniq);
	if (with_info || letters[0] || extra[0]) {
		/* Standard flags and keyword letters merged in ASCII order. */
		char all[40];
		size_t n = 0;
		const char *a = letters, *e = extra;

		while ((*a || *e) && n < sizeof(all) - 1) {
			if (*a && (!*e || *a < *e)) {
				all[n++] = *a++;
			} else if (*a && *a == *e) {
				all[n++] = *a++;
				e++;
			} else {
				all[n++] = *e++;
			}
		}
		all[n] = '\0';
		mf_buf_printf(&b, ":2,%s", all);
	}
	if (b.len > MF_NAME_MAX || b.len + 1 > size)
		ret = -ENAMETOOLONG;
	else
		memcpy(buf, b.data, b.len + 1);
	mf_buf_free(&b);
	return ret;
}

static bool is_reserved_component(const char *s, size_t len)
{
	return len == 3 && (memcmp(s, "cur", 3) == 0 ||
			    memcmp(s, "new", 3) == 0 ||
			    memcmp(s, "tmp", 3) == 0);
}

char *mf_folder_escape(const char *component, size_t len)
{
	struct mf_buf b;

	mf_buf_init(&b);
	if (len == 0) {
		mf_buf_appendc(&b, '%');
		return mf_buf_steal(&b);
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)component[i];
		bool esc = c == '%' || c == '/' || c < 0x20 || c == 0x7f ||
			   (i == 0 && c == '.') ||
			   (i == 0 && is_reserved_component(component, len));

		if (esc)
			mf_buf_printf(&b, "%%%02X", c);
		else
			mf_buf_appendc(&b, (char)c);
	}
	return mf_buf_steal(&b);
}

char *mf_folder_unescape(const char *name)
{
	struct mf_buf b;

	if (strcmp(name, "%") == 0)
		return xstrdup("");
	if (!*name || strchr(name, '/'))
		return NULL;
	mf_buf_init(&b);
	for (const char *p = name; *p; p++) {
		if (*p == '%') {
			int hi = mf_unhex(p[1]);
			int lo = hi < 0 ? -1 : mf_unhex(p[2]);

			if (lo < 0 || (hi == 0 && lo == 0)) {
				mf_buf_free(&b);
				return NULL;
			}
			mf_buf_appendc(&b, (char)(hi * 16 + lo));
			p += 2;
		} else {
			mf_buf_appendc(&b, *p);
		}
	}
	return mf_buf_steal(&b);
}

char *mf_folder_path_from_remote(const char *decoded, char delim)
{
	struct mf_buf b;
	const char *p = decoded;
	bool first = true;

	mf_buf_init(&b);
	for (;;) {
		const char *end = delim ? strchr(p, delim) : NULL;
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char *comp;

		if (!first)
			mf_buf_appendc(&b, '/');
		if (first && len == 5 && strncasecmp(p, "INBOX", 5) == 0) {
			mf_buf_appends(&b, "INBOX");
		} else {
			comp = mf_folder_escape(p, len);
			mf_buf_appends(&b, comp);
			free(comp);
		}
		first = false;
		if (!end)
			break;
		p = end + 1;
	}
	return mf_buf_steal(&b);
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The end of the line starting at i (the index of its \n, or len). */
static size_t line_end(const char *s, size_t len, size_t i)
{
	const char *nl = memchr(s + i, '\n', len - i);

	return nl ? (size_t)(nl - s) : len;
}

char *mf_header_message_id(const char *msg, size_t len)
{
	static const char name[] = "Message-ID";
	const size_t nl = sizeof(name) - 1;
	size_t i = 0;

	while (i < len) {
		size_t eol = line_end(msg, len, i);
		size_t j = i + nl;

		/* An empty line ends the header section. */
		if (eol == i || (eol == i + 1 && msg[i] == '\r'))
			break;
		if (eol - i > nl && strncasecmp(msg + i, name, nl) == 0) {
			while (j < eol && is_wsp(msg[j]))
				j++;
			if (j < eol && msg[j] == ':') {
				struct mf_buf v;
				size_t a = 0, b;
				char *out;

				j++;
				mf_buf_init(&v);
				/* This line and its continuations. */
				for (;;) {
					for (; j < eol; j++) {
						if (msg[j] == '\r')
							continue;
						if (v.len < MF_MSGID_MAX)
							mf_buf_appendc(
								&v, msg[j] == '\t'
									    ? ' '
									    : msg[j]);
					}
					if (eol + 1 >= len ||
					    !is_wsp(msg[eol + 1]))
						break;
					j = eol + 1;
					eol = line_end(msg, len, j);
				}
				b = v.len;
				while (a < b && v.data[a] == ' ')
					a++;
				while (b > a && v.data[b - 1] == ' ')
					b--;
				out = b > a ? xstrndup(v.data + a, b - a) : NULL;
				mf_buf_free(&v);
				return out;
			}
		}
		i = eol + 1;
	}
	return NULL;
}
