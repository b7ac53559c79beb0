/*
 * The backend registry and status names.
 */
#include "mf_backend.h"

#include "gmail_backend.h"
#include "graph_backend.h"
#include "imap_backend.h"

#include <string.h>

const char *mf_status_str(enum mf_status st)
{
	switch (st) {
	case MF_OK:
		return "ok";
	case MF_TEMP:
		return "temporary failure";
	case MF_AUTH:
		return "authentication failed";
	case MF_GONE:
		return "no such object";
	case MF_PROTO:
		return "protocol error";
	case MF_CANCELED:
		return "canceled";
	case MF_NOTSUP:
		return "not supported";
	}
	return "unknown status";
}

static const struct mf_backend_ops *const backends[] = {
	&mf_imap_backend_ops,
	&mf_gmail_backend_ops,
	&mf_graph_backend_ops,
	NULL,
};

const struct mf_backend_ops *mf_backend_lookup(const char *type)
{
	for (size_t i = 0; backends[i]; i++) {
		if (strcmp(backends[i]->name, type) == 0)
			return backends[i];
	}
	return NULL;
}
