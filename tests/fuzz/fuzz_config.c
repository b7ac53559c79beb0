/*
 * libFuzzer target: the mailfs.conf parser (cache/config.c).
 *
 * Arbitrary text through mf_config_parse(); on success every account's
 * keys are read back and the folder patterns are exercised; on failure an
 * error message must be given. Never runs password_command (that is
 * mf_account_password, not called here).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_config.h"
#include "mf_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mf_log_init("fuzz", false, MF_LOG_ERR, 0);
	setenv("HOME", "/nonexistent-fuzz-home", 1);
	unsetenv("XDG_CONFIG_HOME");
	return 0;
}

static const char *const folder_names[] = {
	"INBOX", "Archive/2024", "Junk", "Entwürfe", "a/b/c", "", "*", "!x",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mf_config *cfg = NULL;
	char *err = NULL;
	char *text;
	int r;

	if (size > 64 * 1024)
		return 0;
	text = xmalloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';

	r = mf_config_parse("fuzz.conf", text, &cfg, &err);
	if (r == 0) {
		if (!cfg || err)
			abort();
		if (cfg->cache_dir)
			(void)strlen(cfg->cache_dir);
		if (cfg->state_dir)
			(void)strlen(cfg->state_dir);
		for (unsigned int i = 0; i < cfg->account_count; i++) {
			const struct mf_account *a = &cfg->accounts[i];

			if (!a->name || !a->type)
				abort();
			if (strchr(a->name, '/'))
				abort();	/* becomes a directory name */
			for (unsigned int k = 0; k < a->kv_count; k++) {
				if (!a->kv[k].key || !a->kv[k].value)
					abort();
				(void)mf_account_get(a, a->kv[k].key);
			}
			(void)mf_account_get(a, "no-such-key");
			for (char **f = a->folders; f && *f; f++)
				(void)strlen(*f);
			for (size_t j = 0; j < sizeof(folder_names) / sizeof(*folder_names); j++)
				(void)mf_account_folder_wanted(a, folder_names[j]);
			if (a->host)
				(void)mf_host_is_loopback(a->host);
		}
		mf_config_free(&cfg);
		if (cfg)
			abort();
	} else {
		if (r >= 0 || !err)
			abort();
		free(err);
		if (cfg)
			mf_config_free(&cfg);
	}
	free(text);
	return 0;
}
