/*
 * A one-thread HTTP server for the unit tests (test_http.c, test_oauth.c):
 * it answers each connection with the next of a script of canned
 * responses, keeps the requests it read (head and body, up to 8) and the
 * last Bearer token it was shown.
 */
#ifndef MF_TEST_SCRIPT_SERVER_H
#define MF_TEST_SCRIPT_SERVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct script {
	int lsock;
	const char *const *answers;	/* NULL-terminated */
	int served;
	char reqs[8][2048];
	char last_auth[128];
};

static void *serve(void *arg)
{
	struct script *s = arg;

	for (const char *const *a = s->answers; *a && s->served < 8; a++) {
		int c = accept(s->lsock, NULL, NULL);
		char *req = s->reqs[s->served];
		const char *auth;
		size_t len = 0, want = 0;
		ssize_t n;

		if (c < 0)
			break;
		while (len < 2047 && (n = read(c, req + len, 2047 - len)) > 0) {
			char *end;

			len += (size_t)n;
			req[len] = '\0';
			end = strstr(req, "\r\n\r\n");
			if (end && !want) {
				const char *cl = strcasestr(req,
							    "Content-Length: ");

				want = (size_t)(end + 4 - req) +
				       (cl ? strtoul(cl + 16, NULL, 10) : 0);
			}
			if (want && len >= want)
				break;
		}
		auth = strstr(req, "Authorization: Bearer ");
		if (auth)
			sscanf(auth + 22, "%127[^\r]", s->last_auth);
		if (write(c, *a, strlen(*a)) < 0)
			break;
		s->served++;
		close(c);
	}
	return NULL;
}

#endif
