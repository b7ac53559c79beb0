/*
 * libFuzzer target: folder name components (cache/names.c).
 *
 *  - escape(x) -> unescape -> x (for components without NUL), and the
 *    escaped form is a safe file name: no "/", no NUL or control
 *    characters, no leading ".", not "cur"/"new"/"tmp", not "." or "..";
 *  - unescape(arbitrary) either refuses or gives a string whose escape
 *    unescapes to the same string;
 *  - path_from_remote(arbitrary, delim): every component of the local
 *    path is safe (DESIGN.md safety rule 7) and the path has as many
 *    components as the remote name.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mf_names.h"
#include "mf_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	return 0;
}

static void check_safe_component(const char *c, size_t len, const char *whole)
{
	if (len == 0 || (len == 1 && c[0] == '.') ||
	    (len == 2 && c[0] == '.' && c[1] == '.') || c[0] == '.' ||
	    (len == 3 && (!memcmp(c, "cur", 3) || !memcmp(c, "new", 3) ||
			  !memcmp(c, "tmp", 3)))) {
		fprintf(stderr, "unsafe component %.*s in %s\n", (int)len, c, whole);
		abort();
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)c[i];

		if (ch < 0x20 || ch == 0x7f || ch == '/') {
			fprintf(stderr, "control/slash in component of %s\n", whole);
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in, *esc, *un, *path;
	char delim;

	if (size < 1 || size > 4096)
		return 0;
	delim = (char)data[0];
	data++;
	size--;
	in = xmalloc(size + 1);
	memcpy(in, data, size);
	in[size] = '\0';

	/* 1. escape of raw bytes (NUL included: len is explicit). */
	esc = mf_folder_escape((const char *)data, size);
	if (!esc)
		abort();
	check_safe_component(esc, strlen(esc), esc);
	/* A NUL never reaches a folder name (C strings from the decoder);
	   escape writes it as %00, which unescape refuses by design. */
	if (!memchr(data, '\0', size)) {
		un = mf_folder_unescape(esc);
		if (!un) {
			fprintf(stderr, "unescape refused escape's output %s\n", esc);
			abort();
		}
		if (strlen(un) != size || memcmp(un, data, size) != 0) {
			fprintf(stderr, "escape round trip: %s -> %s\n", in, esc);
			abort();
		}
		free(un);
	}
	free(esc);

	/* 2. unescape of arbitrary text. */
	un = mf_folder_unescape(in);
	if (un) {
		char *again, *back;

		if (strchr(in, '/'))
			abort();
		again = mf_folder_escape(un, strlen(un));
		check_safe_component(again, strlen(again), again);
		back = mf_folder_unescape(again);
		if (!back || strcmp(back, un) != 0)
			abort();
		free(back);
		free(again);
		free(un);
	}

	/* 3. a server's folder name with its delimiter. */
	if (delim == '\0' || (unsigned char)delim > 0x7f)
		delim = (delim & 1) ? '/' : '.';
	for (int d = 0; d < 3; d++) {
		char dl = d == 0 ? delim : d == 1 ? '/' : '\0';
		size_t want = 1, got = 1;
		const char *p, *start;

		path = mf_folder_path_from_remote(in, dl);
		if (!path)
			abort();
		if (dl) {
			for (p = in; *p; p++)
				if (*p == dl)
					want++;
		}
		for (p = path; *p; p++)
			if (*p == '/')
				got++;
		if (want != got) {
			fprintf(stderr, "components: %zu remote, %zu local (%s -> %s)\n",
				want, got, in, path);
			abort();
		}
		start = path;
		for (p = path;; p++) {
			if (*p == '/' || *p == '\0') {
				size_t len = (size_t)(p - start);
				bool first = start == path;

				if (!(first && len == 5 && !strncmp(start, "INBOX", 5)))
					check_safe_component(start, len, path);
				else if (strncasecmp(in, "INBOX", 5) != 0)
					abort();
				/* each component unescapes (empty ones to "") */
				char *comp = xstrndup(start, len);
				char *u = mf_folder_unescape(comp);

				if (!u) {
					fprintf(stderr, "component %s of %s does not unescape\n",
						comp, path);
					abort();
				}
				free(u);
				free(comp);
				if (!*p)
					break;
				start = p + 1;
			}
		}
		free(path);
	}
	free(in);
	return 0;
}
