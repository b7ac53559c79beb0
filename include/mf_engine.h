/*
 * The sync engine: one per account. It owns the account's backend
 * sessions and threads:
 *   - the engine thread lists folders, syncs them (every poll_interval,
 *     and at once when the push thread says so) and drains the
 *     write-back queue, in that order, so that a replayed upload is
 *     looked for before it is sent again;
 *   - the push thread waits on the inbox (IMAP IDLE);
 *   - fetch threads download bodies for the file system on demand.
 *
 * The file system talks to it only through these calls; all of them are
 * thread-safe and none blocks on the network.
 */
#ifndef MF_ENGINE_H
#define MF_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

struct mf_config;
struct mf_account;
struct mf_engine;

int mf_engine_start(const struct mf_config *cfg,
		    const struct mf_account *acct, struct mf_engine **e_r,
		    char **error_r);
/* Stop the threads and free. Queued work stays in the store. */
void mf_engine_stop(struct mf_engine **e);
/*
 * Stop the threads while the file system runs (SIGHUP removed or changed
 * the account): a request that found the engine a moment ago may still
 * use it, so the memory stays (a stopped engine answers fetches with
 * EIO) until mf_engine_free_retired() at exit.
 */
void mf_engine_retire(struct mf_engine **e);
void mf_engine_free_retired(void);

/* The engine of an account (started engines register themselves). */
struct mf_engine *mf_engine_find(const char *account);
const struct mf_account *mf_engine_account(struct mf_engine *e);

/* New queue entries are waiting. */
void mf_engine_kick(struct mf_engine *e);

/*
 * Fetch a message body into the blob store. cb runs exactly once, on an
 * engine thread, with 0 or a negative errno.
 */
typedef void mf_fetch_cb(void *ctx, int err);
void mf_engine_fetch(struct mf_engine *e, int64_t msg_id, mf_fetch_cb *cb,
		     void *ctx);

/*
 * Wait until the first complete sync (folders and messages) has finished
 * or failed, or until timeout_ms passes. Returns true when it finished.
 */
bool mf_engine_wait_first_sync(struct mf_engine *e, int64_t timeout_ms);

/* One line of state for logs and status ("connected", an error...). */
char *mf_engine_state(struct mf_engine *e);

/* The account's status, as lines for mount.mailfs --status. */
struct mf_buf;
void mf_engine_status(struct mf_engine *e, struct mf_buf *out);

#endif
