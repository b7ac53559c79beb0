/*
 * libFuzzer target: Maildir file names (cache/names.c).
 *
 * parse -> format -> parse must give the same fields, and formatting the
 * result again must give the same string (what mailfs writes is stable).
 * A name mailfs formats is always a valid Maildir name: no "/", no leading
 * ".", at most MF_NAME_MAX bytes, flags in ASCII order without repeats.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_backend.h"
#include "mf_names.h"
#include "mf_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	return 0;
}

static void check_formatted(const char *s)
{
	const char *info = strstr(s, ":2,");
	size_t len = strlen(s);

	if (len == 0 || len > MF_NAME_MAX || s[0] == '.' || strchr(s, '/'))
		abort();
	if (info) {
		/* flag letters strictly increasing */
		for (const char *p = info + 3; *p && p[1]; p++) {
			if ((unsigned char)p[0] >= (unsigned char)p[1]) {
				fprintf(stderr, "flags not sorted/unique: %s\n", s);
				abort();
			}
		}
	}
}

static void same(const struct mf_maildir_name *a, const struct mf_maildir_name *b,
		 const char *what)
{
	if (strcmp(a->uniq, b->uniq) != 0 || a->flags != b->flags ||
	    strcmp(a->extra, b->extra) != 0 || a->has_info != b->has_info) {
		fprintf(stderr, "%s: (%s %#x %s %d) != (%s %#x %s %d)\n", what,
			a->uniq, a->flags, a->extra, a->has_info, b->uniq, b->flags,
			b->extra, b->has_info);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[1024];
	char f1[MF_NAME_MAX + 1], f2[MF_NAME_MAX + 1];
	struct mf_maildir_name n1, n2, n3;
	char letters[7];
	int r;

	if (size >= sizeof(name))
		return 0;
	memcpy(name, data, size);
	name[size] = '\0';

	r = mf_maildir_parse(name, &n1);
	if (r != 0) {
		if (r != -EINVAL)
			abort();
		return 0;
	}
	if (strlen(n1.uniq) == 0 || strchr(n1.uniq, ':') || strchr(n1.uniq, '/') ||
	    n1.uniq[0] == '.')
		abort();
	if (n1.flags & ~MF_FLAG_ALL)
		abort();
	if (strlen(n1.extra) >= sizeof(n1.extra))
		abort();
	mf_flags_to_letters(n1.flags, letters);
	if (strlen(letters) > 6)
		abort();

	r = mf_maildir_format(n1.uniq, n1.flags, n1.extra, n1.has_info, f1, sizeof(f1));
	if (r != 0) {
		/* A parsed name is never longer when written back canonically. */
		fprintf(stderr, "format of a parsed name failed: %d (%s)\n", r, name);
		abort();
	}
	check_formatted(f1);
	if (strlen(f1) > strlen(name))
		abort();
	r = mf_maildir_parse(f1, &n2);
	if (r != 0) {
		fprintf(stderr, "formatted name does not parse: %s (from %s)\n", f1, name);
		abort();
	}
	same(&n1, &n2, "parse(format(parse(x)))");
	r = mf_maildir_format(n2.uniq, n2.flags, n2.extra, n2.has_info, f2, sizeof(f2));
	if (r != 0 || strcmp(f1, f2) != 0)
		abort();

	/* Changing flags (what a flag rename does) keeps the unique part. */
	for (unsigned int fl = 0; fl <= MF_FLAG_ALL; fl += 7) {
		r = mf_maildir_format(n1.uniq, fl, n1.extra, true, f2, sizeof(f2));
		if (r == -ENAMETOOLONG)
			continue;
		if (r != 0)
			abort();
		check_formatted(f2);
		if (mf_maildir_parse(f2, &n3) != 0)
			abort();
		if (strcmp(n3.uniq, n1.uniq) != 0 || n3.flags != fl ||
		    strcmp(n3.extra, n1.extra) != 0 || !n3.has_info)
			abort();
	}
	/* A tiny buffer is refused, never overrun. */
	r = mf_maildir_format(n1.uniq, n1.flags, n1.extra, n1.has_info, f2, 2);
	if (r == 0 && strlen(f2) >= 2)
		abort();
	return 0;
}
