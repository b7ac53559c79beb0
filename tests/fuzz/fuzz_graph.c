/*
 * libFuzzer target: how the Graph backend reads a message from JSON
 * (net/graph_backend.c, compiled in so its static reader is reachable).
 * The input is a delta page or message list page; every entry of its
 * "value" array is read as a message, as the listing does. Nothing it
 * says may crash the reader or leak; dates outside the calendar give 0
 * or a time, never a trap.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../net/graph_backend.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *root = json_loadb((const char *)data, size, 0, NULL);
	json_t *v;
	size_t i;

	if (!root)
		return 0;
	json_array_foreach(json_object_get(root, "value"), i, v) {
		struct dmsg m;

		memset(&m, 0, sizeof(m));
		read_msg(&m, v);
		if (m.msgid)
			(void)strlen(m.msgid);
		free(m.msgid);
	}
	json_decref(root);
	return 0;
}
