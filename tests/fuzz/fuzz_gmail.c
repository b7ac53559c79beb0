/*
 * libFuzzer target: what the Gmail backend parses by hand or from JSON
 * (net/gmail_backend.c, compiled in so its static parsers are reachable).
 *
 * The input's first byte picks the parser, the rest is the server's reply:
 *  0: a batch answer (multipart/mixed): the first line is its Content-Type,
 *     the rest the body; every part status is 0 or an HTTP status, and
 *     every body of an answered part is a NUL-terminated string;
 *  1: base64url into a file: decodes or refuses (-EINVAL, -EFBIG), and
 *     never writes more than the cap;
 *  2: a messages.get(format=metadata) JSON into the memo: an accepted one
 *     has an id of at most 64 bytes and a label string framed by commas.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../net/gmail_backend.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	return 0;
}

static void fuzz_batch(const char *in, size_t len)
{
	enum { COUNT = 100 };
	const char *nl = memchr(in, '\n', len);
	long status[COUNT];
	char *bodies[COUNT];
	char *ctype;

	if (!nl)
		return;
	ctype = xstrndup(in, (size_t)(nl - in));
	memset(status, 0, sizeof(status));
	memset(bodies, 0, sizeof(bodies));
	if (gmail_batch_parse(ctype, nl + 1, len - (size_t)(nl + 1 - in),
			      COUNT, status, bodies) == 0) {
		for (unsigned int i = 0; i < COUNT; i++) {
			if (status[i] < 0 || status[i] > 999)
				abort();
			if (bodies[i])
				(void)strlen(bodies[i]);
		}
	}
	for (unsigned int i = 0; i < COUNT; i++)
		free(bodies[i]);
	free(ctype);
}

static void fuzz_b64(const char *in, size_t len)
{
	static const uint64_t cap = 4096;
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	uint64_t got = 0;
	int r;

	if (fd < 0)
		abort();
	r = gmail_b64url_write(in, len, fd, cap, &got);
	if (r == 0 && (got > cap || got > len))
		abort();
	if (r != 0 && r != -EINVAL && r != -EFBIG)
		abort();
	close(fd);
}

static void fuzz_meta(const char *in)
{
	struct gmail *g = xcalloc(1, sizeof(*g));

	if (meta_from_json(g, in)) {
		for (unsigned int i = 0; i < MEMO_BUCKETS; i++) {
			for (struct meta *m = g->memo[i]; m; m = m->next) {
				size_t n = strlen(m->labels);

				if (strlen(m->id) > 64 || n == 0 ||
				    m->labels[0] != ',' ||
				    m->labels[n - 1] != ',')
					abort();
			}
		}
	}
	memo_clear(g);
	free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in;

	if (size < 1)
		return 0;
	in = xstrndup((const char *)data + 1, size - 1);	/* NUL-ended */
	switch (data[0] % 3) {
	case 0:
		fuzz_batch(in, strlen(in));
		break;
	case 1:
		fuzz_b64((const char *)data + 1, size - 1);
		break;
	default:
		fuzz_meta(in);
		break;
	}
	free(in);
	return 0;
}
