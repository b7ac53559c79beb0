/*
 * The backend interface: what the sync engine (cache/sync.c) asks of a
 * mail server, whatever protocol it speaks.
 *
 * Design: a backend object is one *session* with the server (for IMAP, one
 * connection). The engine owns several sessions per account, each used by
 * exactly one thread at a time: one for listing and write-back, one that
 * waits for pushes (IDLE), and one or more for body fetches. Calls are
 * blocking and bounded by the account's timeout; this keeps each protocol
 * implementation a straight-line program (as isync's drivers are, minus
 * the callback plumbing), and lets a slow fetch never wait behind a long
 * listing because they run on different sessions.
 *
 * (STYLE.md sketches an asynchronous callback table. mailfs uses blocking
 * sessions on dedicated threads instead; where a result is streamed, as in
 * a listing of a million messages, a callback receives it piece by piece.)
 *
 * Contract for every call:
 *  - Connecting and logging in happen lazily on first use, and again after
 *    a connection was lost; a call never fails just because an earlier one
 *    dropped the connection.
 *  - Returns enum mf_status. On anything but MF_OK, *error_r (when the call
 *    has one) receives a message the caller frees.
 *  - Strings passed to callbacks are borrowed: valid during the callback.
 *  - Folder names passed in are the *remote* names exactly as list_folders
 *    reported them (struct mf_remote_folder.remote).
 *  - mf_backend_interrupt() may be called from any thread; it makes a
 *    blocked call return MF_CANCELED soon (for shutdown).
 */
#ifndef MF_BACKEND_H
#define MF_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

struct mf_account;

enum mf_status {
	MF_OK = 0,
	MF_TEMP,	/* transient: network, timeout, server busy; retry */
	MF_AUTH,	/* credentials refused; retrying will not help */
	MF_GONE,	/* the object (message, folder) does not exist */
	MF_PROTO,	/* the server said something we cannot use / refused */
	MF_CANCELED,	/* interrupted by mf_backend_interrupt() */
	MF_NOTSUP,	/* the server cannot do this */
};

const char *mf_status_str(enum mf_status st);

/* Maildir flags as bits, in Maildir's ASCII order. */
#define MF_FLAG_DRAFT	 (1u << 0)	/* D  \Draft */
#define MF_FLAG_FLAGGED	 (1u << 1)	/* F  \Flagged */
#define MF_FLAG_PASSED	 (1u << 2)	/* P  $Forwarded */
#define MF_FLAG_REPLIED	 (1u << 3)	/* R  \Answered */
#define MF_FLAG_SEEN	 (1u << 4)	/* S  \Seen */
#define MF_FLAG_TRASHED	 (1u << 5)	/* T  \Deleted */
#define MF_FLAG_ALL	 0x3fu

/* Folder attributes. */
#define MF_FOLDER_NOSELECT	(1u << 0)	/* cannot hold messages */
#define MF_FOLDER_INBOX		(1u << 1)
#define MF_FOLDER_TRASH		(1u << 2)	/* special-use \Trash */
#define MF_FOLDER_SENT		(1u << 3)
#define MF_FOLDER_DRAFTS	(1u << 4)
#define MF_FOLDER_JUNK		(1u << 5)
#define MF_FOLDER_ARCHIVE	(1u << 6)
#define MF_FOLDER_ALL		(1u << 7)
#define MF_FOLDER_HASCHILDREN	(1u << 8)

struct mf_remote_folder {
	const char *remote;	/* the server's name, as sent on the wire
				   (IMAP: still modified UTF-7) */
	const char *path;	/* decoded, "/"-separated, each component
				   sanitised (see mf_names.h); "INBOX" for
				   the inbox */
	unsigned int attrs;	/* MF_FOLDER_* */
	/*
	 * What the folder's cursor would be if the server has nothing new
	 * since it was stored, when the listing can say so cheaply (IMAP
	 * LIST-STATUS); NULL when unknown. The engine skips a folder whose
	 * stored cursor equals it, so a resync with nothing to do is one
	 * command for all folders. Must be in exactly the format
	 * fetch_changes returns.
	 */
	const char *status;
};

typedef int mf_folder_cb(void *ctx, const struct mf_remote_folder *f);

/*
 * Where fetch_bodies writes each body. open() is called once per body
 * before its bytes arrive and returns a file descriptor to append to (or
 * a negative errno to skip that body); done() is called once per id
 * that open() accepted, with MF_OK and the size written, or the failure.
 * Ids the server does not have get done(MF_GONE) without open().
 */
struct mf_body_sink {
	int (*open)(void *ctx, const char *id, int *fd_r);
	void (*done)(void *ctx, const char *id, enum mf_status st,
		     uint64_t size);
	void *ctx;
};

/* One message as the server describes it. */
struct mf_msg_info {
	const char *id;		/* remote id: IMAP UID in decimal, Graph
				   immutable id, Gmail id */
	unsigned int flags;	/* MF_FLAG_* */
	bool has_meta;		/* size/date/message_id below are set (new
				   messages, full listings); false for a
				   flags-only change */
	uint64_t size;
	bool size_exact;	/* IMAP RFC822.SIZE: true; Graph: false, size
				   is an estimate until the body is read */
	int64_t internaldate;	/* seconds since the epoch */
	const char *message_id;	/* may be NULL */
	const char *headers;	/* may be NULL: the raw header lines the
				   account's views match on (see
				   mf_account.view_fields), with has_meta */
};

enum mf_change_kind {
	MF_CHANGE_UPSERT,	/* a message exists with this info (new or
				   changed flags) */
	MF_CHANGE_GONE,		/* the message was expunged */
};

struct mf_change {
	enum mf_change_kind kind;
	struct mf_msg_info msg;	/* for GONE only msg.id is set */
};

/*
 * How to read a stream of changes:
 *  - snapshot = false: a delta against the cursor the engine passed in.
 *    Messages not mentioned are unchanged.
 *  - snapshot = true: a complete listing. Messages the engine knows that
 *    are not mentioned are gone (subject to the mass-deletion guard).
 *  - reset = true (always with snapshot): the ids the engine knows for
 *    this folder are no longer valid (IMAP UIDVALIDITY changed, Graph or
 *    Gmail cursor expired with re-numbering); re-match by Message-ID,
 *    size and date instead of by id.
 */
struct mf_changes_info {
	bool snapshot;
	bool reset;
	/*
	 * MF_FLAG_* the server neither stores nor lists (Gmail: R, P, T).
	 * The store keeps its own value of these bits instead of taking the
	 * server's (which always lacks them). Set by the engine from
	 * mf_backend_ops.flags_local (not by backends).
	 */
	unsigned int local_flags;
	/*
	 * A delta whose GONE entries mostly mean "left this folder" (Gmail:
	 * a label removed; the message stays in All Mail), each one recorded
	 * by the server's history: the mass-deletion guard, which is there
	 * for servers that lose a folder's contents, does not hold them
	 * back (archiving a whole inbox elsewhere is normal).
	 */
	bool gone_is_relabel;
	/* Set by the engine from MF_CAP_GLOBAL_IDS (not by backends). */
	bool global_ids;
	/*
	 * An id names one message of the account, wherever it is (Graph
	 * immutable ids): a known id listed in another folder is that
	 * message moved there, and keeps its row (name, inode, body).
	 */
	bool ids_follow;
};

/*
 * Called once with *info before the first change (begin), then once per
 * change. Return non-zero from either to abort the listing (the call then
 * returns MF_CANCELED).
 */
struct mf_changes_sink {
	int (*begin)(void *ctx, const struct mf_changes_info *info);
	int (*change)(void *ctx, const struct mf_change *ch);
	void *ctx;
};

/* The engine's hints for fetch_changes. */
struct mf_changes_hint {
	const char *cursor;	/* NULL: never synced; list everything */
	uint64_t known_count;	/* messages the engine has for the folder */
};

/* Hints for append. */
struct mf_append_info {
	unsigned int flags;
	int64_t internaldate;	/* 0: let the server choose */
	uint64_t size;
	/*
	 * An earlier attempt may have got part of the way (the engine did
	 * not find the message in folder): a backend whose upload takes
	 * several requests (Graph) looks for what it left behind.
	 */
	bool retry;
};

struct mf_backend;

struct mf_backend_ops {
	const char *name;	/* "imap" */
	unsigned int caps;	/* MF_CAP_* of the implementation */
	/*
	 * The most sessions the engine may open for one account (each has
	 * at most one request in flight); 0 = no limit. Graph: 4, the
	 * Outlook limit of concurrent requests per mailbox.
	 */
	unsigned int max_sessions;
	/*
	 * The MF_FLAG_* bits set_flags can store on the server; 0 = all.
	 * The engine never sends the others. Of those, flags_local are the
	 * ones the server does not list either (Graph: T; Gmail: R, P, T):
	 * the store keeps them as its own. The rest are listed but cannot
	 * be written (Graph and Gmail: D): a local change of one stays a
	 * local change, never counted as agreed with the server.
	 */
	unsigned int flags_writable;
	unsigned int flags_local;
	/*
	 * The most message ids set_flags takes in one request (IMAP: a UID
	 * set; Graph: a $batch of 20; Gmail: batchModify, 1,000); 0 or 1:
	 * one at a time. The engine sends a run of queued flag changes that
	 * make the same change in the same folder together.
	 */
	unsigned int flag_batch_max;
	/*
	 * Even a lone queued flag change waits a moment for others to join
	 * it (Graph, Gmail: every request costs quota). Without it (IMAP,
	 * where a STORE is cheap) a lone change goes at once, and only a
	 * run already queued waits to settle.
	 */
	bool flag_settle;

	/* Make a session for the account. Does not connect. */
	int (*create)(const struct mf_account *acct, struct mf_backend **be_r,
		      char **error_r);
	void (*destroy)(struct mf_backend *be);

	/* Connect and log in now (tests the account). */
	enum mf_status (*connect)(struct mf_backend *be, char **error_r);

	/* Every folder, in any order, with attributes. */
	enum mf_status (*list_folders)(struct mf_backend *be, mf_folder_cb *cb,
				       void *ctx, char **error_r);

	/*
	 * Changes of one folder since hint->cursor. On MF_OK, *cursor_r
	 * receives the new cursor (caller frees) to store once every change
	 * has been applied durably. *cursor_r may equal the old cursor when
	 * nothing changed.
	 */
	enum mf_status (*fetch_changes)(struct mf_backend *be,
					const char *folder,
					const struct mf_changes_hint *hint,
					const struct mf_changes_sink *sink,
					char **cursor_r, char **error_r);

	/*
	 * Cheap check whether a folder may have changed since the cursor
	 * (IMAP: STATUS). *changed_r = false means fetch_changes would report
	 * nothing. May be NULL in the table (then assume changed).
	 */
	enum mf_status (*probe)(struct mf_backend *be, const char *folder,
				const char *cursor, bool *changed_r,
				char **error_r);

	/*
	 * Write the message's exact bytes to out_fd (at its current offset),
	 * without setting \Seen. *size_r receives the number of bytes written.
	 * max_size caps what will be accepted (MF_PROTO above it).
	 */
	enum mf_status (*fetch_body)(struct mf_backend *be, const char *folder,
				     const char *id, int out_fd,
				     uint64_t max_size, uint64_t *size_r,
				     char **error_r);

	/*
	 * Several bodies of one folder in one pipelined request (IMAP:
	 * UID FETCH set BODY.PEEK[]), each streamed to the file the sink
	 * opens for it; for prefetch, where one round trip per message would
	 * cap the speed. May be NULL in the table (then fetch_body is used).
	 */
	enum mf_status (*fetch_bodies)(struct mf_backend *be,
				       const char *folder,
				       const char *const *ids,
				       unsigned int count, uint64_t max_size,
				       const struct mf_body_sink *sink,
				       char **error_r);

	/* Add and remove flags of messages (ids: count entries). */
	enum mf_status (*set_flags)(struct mf_backend *be, const char *folder,
				    const char *const *ids, unsigned int count,
				    unsigned int add, unsigned int remove,
				    char **error_r);

	/*
	 * Upload the message read from in_fd (from offset 0, info->size
	 * bytes). *id_r receives the new remote id (caller frees), or NULL
	 * when the server does not say (no UIDPLUS); the engine then finds
	 * it on the next listing.
	 */
	enum mf_status (*append)(struct mf_backend *be, const char *folder,
				 int in_fd, const struct mf_append_info *info,
				 char **id_r, char **error_r);

	/*
	 * Move a message to another folder. *id_r as for append. A message
	 * that is already gone from the source returns MF_GONE.
	 */
	enum mf_status (*move)(struct mf_backend *be, const char *from,
			       const char *id, const char *to, char **id_r,
			       char **error_r);

	/* Remove a message for good (IMAP: \Deleted + UID EXPUNGE of it). */
	enum mf_status (*expunge)(struct mf_backend *be, const char *folder,
				  const char *id, char **error_r);

	/*
	 * Folders. path is the local "/"-separated decoded path; the backend
	 * maps it to its own naming (IMAP: delimiter, modified UTF-7) and
	 * returns the remote name in *remote_r (caller frees). create of an
	 * existing folder succeeds.
	 */
	enum mf_status (*create_folder)(struct mf_backend *be, const char *path,
					char **remote_r, char **error_r);
	enum mf_status (*delete_folder)(struct mf_backend *be,
					const char *remote, char **error_r);
	enum mf_status (*rename_folder)(struct mf_backend *be,
					const char *remote, const char *new_path,
					char **remote_r, char **error_r);

	/*
	 * Block until the server reports a change in folder, timeout_ms
	 * passes, or mf_backend_interrupt() is called. *changed_r tells
	 * which. NULL in the table when the backend cannot push.
	 */
	enum mf_status (*wait_push)(struct mf_backend *be, const char *folder,
				    int timeout_ms, bool *changed_r,
				    char **error_r);

	/* Make the current or next blocking call return MF_CANCELED. */
	void (*interrupt)(struct mf_backend *be);
};

#define MF_CAP_PUSH	(1u << 0)	/* wait_push works */
/*
 * A message id names the message in the whole account, not in one
 * folder (Gmail: one message, several labels). A message listed in
 * several folders is one message: the store gives its rows one unique
 * name part and one body, fetched once.
 */
#define MF_CAP_GLOBAL_IDS (1u << 1)

struct mf_backend {
	const struct mf_backend_ops *ops;
};

/* The registry: find the ops for an account's "type". NULL if unknown. */
const struct mf_backend_ops *mf_backend_lookup(const char *type);

#endif
