/*
 * The IMAP backend: mf_backend_ops over one imap_conn.
 *
 * One struct imap_backend is one session (one connection, used by one
 * thread at a time). It connects lazily, remembers which folder is
 * selected so that flag changes, moves and body fetches do not reselect,
 * and forgets that whenever the connection is re-established.
 *
 * Sync (fetch_changes) follows RFC 7162: the cursor is
 * "UIDVALIDITY:HIGHESTMODSEQ:UIDNEXT:MESSAGES" as of the last SELECT.
 * With QRESYNC and a mod-sequence, MESSAGES is stored as 0: an expunge
 * raises HIGHESTMODSEQ there (RFC 7162 3.2.10), so the count adds
 * nothing, and leaving it out of every LIST-STATUS and STATUS keeps a
 * resync with nothing to do as small as InterIMAP's.
 *  - With QRESYNC enabled and a cursor with a mod-sequence, SELECT
 *    (QRESYNC (uidvalidity modseq)) returns VANISHED (EARLIER) and the
 *    changed flags; new messages are fetched from the old UIDNEXT on.
 *  - With CONDSTORE only, an unchanged UIDNEXT/EXISTS/HIGHESTMODSEQ means
 *    nothing to do; if no message can have been expunged, flags changed
 *    since the old mod-sequence plus the new messages form a delta.
 *  - Otherwise (no cursor, UIDVALIDITY changed, possible expunges without
 *    QRESYNC, no CONDSTORE) a full listing is a snapshot.
 * Listings are streamed to the sink one FETCH response at a time; only the
 * CONDSTORE path buffers the new messages (to count them before deciding
 * between delta and snapshot).
 *
 * Retries: a call that finds its reused connection dead (MF_TEMP) is
 * retried once on a fresh connection when repeating it is harmless
 * (everything except append, move and rename, and fetch_changes or
 * fetch_body once they have produced output).
 */
#include "imap_backend.h"

#include "imap_conn.h"
#include "mf_config.h"
#include "mf_mutf7.h"
#include "mf_names.h"
#include "mf_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Most UIDs reported GONE from one VANISHED before using a snapshot. */
#define IMAP_MAX_VANISHED 5000000u
/* Flag changes kept from a QRESYNC SELECT before using a snapshot. */
#define IMAP_MAX_QRESYNC_CHANGES 5000000u
/* New messages buffered on the CONDSTORE path before using a snapshot. */
#define IMAP_MAX_BUFFERED_NEW 1000000u
/* Folders in one listing. */
#define IMAP_MAX_FOLDERS 100000u
/* Length of the uid set of one UID STORE command. */
#define IMAP_MAX_SET_LEN 4000
/* Length of the uid set of one UID FETCH of bodies. */
#define IMAP_MAX_FETCH_SET_LEN 8000
/* Command bytes written in one round trip of a pipeline. */
#define IMAP_MAX_PIPELINE_BYTES 32000
/* Longest Message-ID kept. */
#define IMAP_MAX_MSGID 998
/* Poll interval without IDLE (ms). */
#define IMAP_NOOP_INTERVAL 30000

#define LISTING_ITEMS \
	"(UID FLAGS RFC822.SIZE INTERNALDATE " \
	"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
/* Header bytes of a new message kept for the views' rules. */
#define IMAP_MAX_VIEW_HEADERS 16384

struct imap_backend {
	struct mf_backend base;
	const struct mf_account *acct;	/* foreign */
	struct imap_conn *conn;		/* owned */
	unsigned int gen;		/* conn generation of the state below */
	char *selected;			/* owned: selected remote name */
	bool sel_readonly;
	char delim;			/* hierarchy delimiter, 0 = flat */
	bool delim_known;
	/*
	 * The FETCH items of new messages: LISTING_ITEMS, plus the header
	 * fields the account's views match on (mf_account.view_fields).
	 */
	char *listing_items;		/* owned */
	/*
	 * The special-use attributes (RFC 6154) of the last LIST that asked
	 * for them, by remote name. A poll's LIST leaves SPECIAL-USE out and
	 * takes them from here: they rarely change, and every poll would
	 * otherwise pay for them in bytes. Asked again on a new connection,
	 * after SPECIAL_MEMO_MS, and when a folder not in here turns up.
	 */
	struct special_memo {
		char *remote;		/* owned */
		unsigned int attrs;	/* SPECIAL_ATTRS bits */
	} *special;			/* owned array */
	size_t special_count;
	int64_t special_at;		/* mf_mono_ms(); 0: ask again */
};

#define SPECIAL_ATTRS (MF_FOLDER_TRASH | MF_FOLDER_SENT | MF_FOLDER_DRAFTS | \
		       MF_FOLDER_JUNK | MF_FOLDER_ARCHIVE | MF_FOLDER_ALL)
#define SPECIAL_MEMO_MS (15 * 60 * 1000)

static void special_forget(struct imap_backend *be);

static struct imap_backend *to_imap(struct mf_backend *be)
{
	return container_of(be, struct imap_backend, base);
}

/* ---- small parsers ---- */

static const char *const month_names[] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static int64_t days_from_civil(int64_t y, unsigned int m, unsigned int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned int yoe = (unsigned int)(y - era * 400);
	unsigned int mp = m > 2 ? m - 3 : m + 9;
	unsigned int doy = (153 * mp + 2) / 5 + d - 1;
	unsigned int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, size_t n, unsigned int *v_r)
{
	uint64_t v;

	if (mf_parse_u64(s, n, 99999, &v) < 0)
		return -EINVAL;
	*v_r = (unsigned int)v;
	return 0;
}

int imap_parse_datetime(const char *s, int64_t *time_r)
{
	unsigned int day, mon = 0, year, hh, mm, ss, zh, zm;
	size_t i = 0, n = strlen(s);
	int64_t t;
	int sign;

	while (i < n && s[i] == ' ')
		i++;
	/* day: 1 or 2 digits */
	size_t ds = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (i - ds < 1 || i - ds > 2 || digits(s + ds, i - ds, &day) < 0)
		return -EINVAL;
	/* "-Mon-yyyy hh:mm:ss +zzzz" */
	if (n - i != 24 || s[i] != '-' || s[i + 4] != '-' ||
	    s[i + 9] != ' ' || s[i + 12] != ':' || s[i + 15] != ':' ||
	    s[i + 18] != ' ')
		return -EINVAL;
	for (mon = 0; mon < 12; mon++) {
		if (strncasecmp(s + i + 1, month_names[mon], 3) == 0)
			break;
	}
	if (mon == 12)
		return -EINVAL;
	if (digits(s + i + 5, 4, &year) < 0 ||
	    digits(s + i + 10, 2, &hh) < 0 ||
	    digits(s + i + 13, 2, &mm) < 0 ||
	    digits(s + i + 16, 2, &ss) < 0)
		return -EINVAL;
	if (s[i + 19] == '+')
		sign = 1;
	else if (s[i + 19] == '-')
		sign = -1;
	else
		return -EINVAL;
	if (digits(s + i + 20, 2, &zh) < 0 || digits(s + i + 22, 2, &zm) < 0)
		return -EINVAL;
	if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 ||
	    zm > 59)
		return -EINVAL;
	t = days_from_civil(year, mon + 1, day) * 86400 + hh * 3600 +
	    mm * 60 + ss;
	t -= sign * (int64_t)(zh * 3600 + zm * 60);
	*time_r = t;
	return 0;
}

char *imap_header_message_id(const char *hdr, size_t len)
{
	return mf_header_message_id(hdr, len);
}

static unsigned int parse_flags(const struct imap_token *list)
{
	static const struct {
		const char *name;
		unsigned int flag;
	} map[] = {
		{ "\\Draft", MF_FLAG_DRAFT },
		{ "\\Flagged", MF_FLAG_FLAGGED },
		{ "$Forwarded", MF_FLAG_PASSED },
		{ "\\Answered", MF_FLAG_REPLIED },
		{ "\\Seen", MF_FLAG_SEEN },
		{ "\\Deleted", MF_FLAG_TRASHED },
	};
	unsigned int flags = 0;

	if (list->type != IMAP_TOK_LIST)
		return 0;
	for (unsigned int i = 0; i < list->count; i++) {
		for (size_t j = 0; j < MF_ARRAY_SIZE(map); j++) {
			if (imap_token_is_atom(&list->list[i], map[j].name))
				flags |= map[j].flag;
		}
	}
	return flags;
}

static void format_flags(struct mf_buf *b, unsigned int flags)
{
	static const char *const names[] = {
		"\\Draft", "\\Flagged", "$Forwarded", "\\Answered",
		"\\Seen", "\\Deleted",
	};
	bool first = true;

	mf_buf_appendc(b, '(');
	for (size_t i = 0; i < MF_ARRAY_SIZE(names); i++) {
		if ((flags & (1u << i)) == 0)
			continue;
		if (!first)
			mf_buf_appendc(b, ' ');
		mf_buf_appends(b, names[i]);
		first = false;
	}
	mf_buf_appendc(b, ')');
}

/* A UID: decimal, 1..2^32-1. */
static int parse_uid(const char *s, uint64_t *uid_r)
{
	if (s == NULL || mf_parse_u64(s, strlen(s), UINT32_MAX, uid_r) < 0 ||
	    *uid_r == 0)
		return -EINVAL;
	return 0;
}

struct cursor {
	uint64_t uidvalidity, modseq, uidnext, messages;
};

static int parse_cursor(const char *s, struct cursor *cur)
{
	uint64_t v[4];
	const char *p = s;

	if (s == NULL)
		return -EINVAL;
	for (int i = 0; i < 4; i++) {
		const char *e = strchr(p, ':');
		size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
		if ((i < 3) != (e != NULL))
			return -EINVAL;
		if (mf_parse_u64(p, n, UINT64_MAX, &v[i]) < 0)
			return -EINVAL;
		p += n + 1;
	}
	cur->uidvalidity = v[0];
	cur->modseq = v[1];
	cur->uidnext = v[2];
	cur->messages = v[3];
	return 0;
}

static char *format_cursor(const struct cursor *c)
{
	return xasprintf("%" PRIu64 ":%" PRIu64 ":%" PRIu64 ":%" PRIu64,
			 c->uidvalidity, c->modseq, c->uidnext, c->messages);
}

/* ---- FETCH responses ---- */

struct fetch_data {
	uint64_t seq;
	bool has_uid;
	uint64_t uid;
	bool has_flags;
	unsigned int flags;
	bool has_size;
	uint64_t size;
	bool has_date;
	int64_t date;
	const struct imap_token *hdr;	/* HEADER.FIELDS value */
	const struct imap_token *body;	/* BODY[] value */
};

/* "* n FETCH (...)": fill *f. false if resp is not a FETCH. */
static bool parse_fetch(const struct imap_response *r, struct fetch_data *f)
{
	const struct imap_token *l;

	memset(f, 0, sizeof(*f));
	if (r->type != IMAP_RESP_UNTAGGED || r->arg_count < 3 ||
	    r->args[0].type != IMAP_TOK_NUMBER ||
	    !imap_token_is_atom(&r->args[1], "FETCH") ||
	    r->args[2].type != IMAP_TOK_LIST)
		return false;
	f->seq = r->args[0].num;
	l = &r->args[2];
	for (unsigned int i = 0; i + 1 < l->count; i += 2) {
		const struct imap_token *k = &l->list[i], *v = &l->list[i + 1];

		if (imap_token_is_atom(k, "UID")) {
			if (v->type == IMAP_TOK_NUMBER && v->num > 0 &&
			    v->num <= UINT32_MAX) {
				f->has_uid = true;
				f->uid = v->num;
			}
		} else if (imap_token_is_atom(k, "FLAGS")) {
			if (v->type == IMAP_TOK_LIST) {
				f->has_flags = true;
				f->flags = parse_flags(v);
			}
		} else if (imap_token_is_atom(k, "RFC822.SIZE")) {
			if (v->type == IMAP_TOK_NUMBER) {
				f->has_size = true;
				f->size = v->num;
			}
		} else if (imap_token_is_atom(k, "INTERNALDATE")) {
			const char *s = imap_token_str(v);
			if (s != NULL && imap_parse_datetime(s, &f->date) == 0)
				f->has_date = true;
		} else if (imap_token_atom_prefix(k, "BODY[HEADER.FIELDS")) {
			f->hdr = v;
		} else if (imap_token_atom_prefix(k, "BODY[]")) {
			f->body = v;
		}
	}
	return true;
}

/* ---- connection and selection ---- */

static enum mf_status ensure(struct imap_backend *be, char **error_r)
{
	enum mf_status st;

	st = imap_conn_connect(be->conn, error_r);
	if (st != MF_OK)
		return st;
	if (be->gen != imap_conn_generation(be->conn)) {
		be->gen = imap_conn_generation(be->conn);
		free(be->selected);
		be->selected = NULL;
		be->special_at = 0;
	}
	return MF_OK;
}

/* Forget the selection when the connection dropped during a call. */
static void check_conn(struct imap_backend *be)
{
	if (!imap_conn_is_connected(be->conn)) {
		free(be->selected);
		be->selected = NULL;
	}
}

#define RETRY_LOOP(be, st, error_r, retryable, body)                      \
	for (int attempt_ = 0;; attempt_++) {                              \
		bool reused_ = imap_conn_is_connected((be)->conn);        \
		(st) = ensure((be), (error_r));                            \
		if ((st) == MF_OK) {                                       \
			body;                                              \
		}                                                          \
		check_conn(be);                                            \
		if ((st) != MF_TEMP || !reused_ || attempt_ > 0 ||        \
		    !(retryable))                                          \
			break;                                             \
		mf_debug(MF_DBG_IMAP, "imap: retrying after: %s",         \
			 *(error_r));                                      \
		free(*(error_r));                                          \
		*(error_r) = NULL;                                         \
	}

struct select_state {
	bool collect;		/* QRESYNC: keep VANISHED and FETCH */
	uint64_t old_uidnext;	/* only FETCHes below it are collected */
	bool has_uidvalidity, has_uidnext, has_modseq, nomodseq;
	uint64_t uidvalidity, uidnext, modseq, exists;
	/* collected: */
	struct uid_range {
		uint64_t lo, hi;
	} *vanished;
	size_t vanished_count, vanished_cap;
	uint64_t vanished_total;
	struct flag_change {
		uint64_t uid;
		unsigned int flags;
	} *changes;
	size_t change_count, change_cap;
	bool bad_set;		/* malformed VANISHED, or too much data */
};

static void select_state_free(struct select_state *s)
{
	free(s->vanished);
	free(s->changes);
}

/* Parse "1:3,5,9:7" calling back per range; -EINVAL when malformed. */
static int parse_uid_set(const char *set,
			 void (*cb)(void *ctx, uint64_t lo, uint64_t hi),
			 void *ctx)
{
	const char *p = set;

	if (set == NULL || *set == '\0')
		return -EINVAL;
	while (*p != '\0') {
		const char *e = p + strcspn(p, ",");
		const char *colon = memchr(p, ':', (size_t)(e - p));
		uint64_t lo, hi;

		if (colon == NULL) {
			if (mf_parse_u64(p, (size_t)(e - p), UINT32_MAX,
					 &lo) < 0)
				return -EINVAL;
			hi = lo;
		} else if (mf_parse_u64(p, (size_t)(colon - p), UINT32_MAX,
					&lo) < 0 ||
			   mf_parse_u64(colon + 1, (size_t)(e - colon - 1),
					UINT32_MAX, &hi) < 0) {
			return -EINVAL;
		}
		if (lo > hi) {
			uint64_t t = lo;
			lo = hi;
			hi = t;
		}
		if (lo == 0)
			return -EINVAL;
		cb(ctx, lo, hi);
		p = *e == ',' ? e + 1 : e;
	}
	return 0;
}

static void add_vanished(void *ctx, uint64_t lo, uint64_t hi)
{
	struct select_state *s = ctx;

	/* UIDs at or above the old UIDNEXT were never reported */
	if (lo >= s->old_uidnext)
		return;
	if (hi >= s->old_uidnext)
		hi = s->old_uidnext - 1;
	if (s->vanished_count == s->vanished_cap) {
		s->vanished_cap = s->vanished_cap == 0 ? 16 :
				  s->vanished_cap * 2;
		s->vanished = xrealloc(s->vanished, s->vanished_cap *
					       sizeof(*s->vanished));
	}
	s->vanished[s->vanished_count].lo = lo;
	s->vanished[s->vanished_count].hi = hi;
	s->vanished_count++;
	s->vanished_total += hi - lo + 1;
}

static int select_cb(void *ctx, const struct imap_response *r)
{
	struct select_state *s = ctx;
	struct fetch_data f;

	if (r->type != IMAP_RESP_UNTAGGED)
		return 0;
	if (r->status == IMAP_STATUS_OK && r->code != NULL &&
	    r->code->count >= 1) {
		const struct imap_token *c = r->code->list;
		uint64_t v = 0;
		bool num = r->code->count >= 2 &&
			   imap_token_u64(&c[1], &v) == 0;

		if (imap_token_is_atom(&c[0], "UIDVALIDITY") && num) {
			s->has_uidvalidity = true;
			s->uidvalidity = v;
		} else if (imap_token_is_atom(&c[0], "UIDNEXT") && num) {
			s->has_uidnext = true;
			s->uidnext = v;
		} else if (imap_token_is_atom(&c[0], "HIGHESTMODSEQ") && num) {
			s->has_modseq = true;
			s->modseq = v;
		} else if (imap_token_is_atom(&c[0], "NOMODSEQ")) {
			s->nomodseq = true;
		}
		return 0;
	}
	if (r->arg_count >= 2 && r->args[0].type == IMAP_TOK_NUMBER &&
	    imap_token_is_atom(&r->args[1], "EXISTS")) {
		s->exists = r->args[0].num;
		return 0;
	}
	if (!s->collect)
		return 0;
	if (r->arg_count >= 2 && imap_token_is_atom(&r->args[0], "VANISHED")) {
		const struct imap_token *set = &r->args[r->arg_count - 1];
		if (parse_uid_set(imap_token_str(set), add_vanished, s) < 0)
			s->bad_set = true;
		return 0;
	}
	if (parse_fetch(r, &f) && f.has_uid && f.has_flags &&
	    f.uid < s->old_uidnext) {
		if (s->change_count >= IMAP_MAX_QRESYNC_CHANGES) {
			s->bad_set = true;	/* fall back to a snapshot */
			return 0;
		}
		if (s->change_count == s->change_cap) {
			s->change_cap = s->change_cap == 0 ? 16 :
					s->change_cap * 2;
			s->changes = xrealloc(s->changes, s->change_cap *
						      sizeof(*s->changes));
		}
		s->changes[s->change_count].uid = f.uid;
		s->changes[s->change_count].flags = f.flags;
		s->change_count++;
	}
	return 0;
}

/*
 * SELECT folder. params: NULL or " (CONDSTORE)" etc. The selection is
 * recorded on success and forgotten on failure.
 */
static enum mf_status do_select(struct imap_backend *be, const char *folder,
				const char *params, struct select_state *s,
				char **error_r)
{
	struct imap_result res;
	struct imap_cmd cmd;
	enum mf_status st;

	free(be->selected);
	be->selected = NULL;
	imap_cmd_init(&cmd, "SELECT");
	imap_cmd_add_string(&cmd, folder);
	if (params != NULL)
		imap_cmd_add(&cmd, params);
	st = imap_conn_run(be->conn, &cmd, select_cb, s, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		return st;
	st = imap_result_status(&res, "SELECT", error_r);
	if (st == MF_OK) {
		be->selected = xstrdup(folder);
		be->sel_readonly = imap_result_has_code(&res, "READ-ONLY");
	}
	imap_result_clear(&res);
	return st;
}

/* Select unless already selected (read-write unless may_be_ro). */
static enum mf_status select_folder(struct imap_backend *be,
				    const char *folder, bool may_be_ro,
				    char **error_r)
{
	struct select_state s;
	enum mf_status st;

	if (be->selected != NULL && strcmp(be->selected, folder) == 0 &&
	    (may_be_ro || !be->sel_readonly))
		return MF_OK;
	memset(&s, 0, sizeof(s));
	st = do_select(be, folder, NULL, &s, error_r);
	select_state_free(&s);
	return st;
}

/* ---- create / destroy / connect ---- */

static int imap_create(const struct mf_account *acct,
		       struct mf_backend **be_r, char **error_r)
{
	struct imap_backend *be;

	/* a tunnel needs no host: the command is the server */
	if ((acct->tunnel == NULL || acct->tunnel[0] == '\0') &&
	    (acct->host == NULL || acct->host[0] == '\0')) {
		*error_r = xasprintf("account %s: no host", acct->name);
		return -EINVAL;
	}
	be = xcalloc(1, sizeof(*be));
	be->base.ops = &mf_imap_backend_ops;
	be->acct = acct;
	be->conn = imap_conn_new(acct);
	be->listing_items =
		acct->view_fields
			? xasprintf("(UID FLAGS RFC822.SIZE INTERNALDATE "
				    "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID "
				    "%s)])", acct->view_fields)
			: xstrdup(LISTING_ITEMS);
	*be_r = &be->base;
	return 0;
}

static void imap_destroy(struct mf_backend *base)
{
	struct imap_backend *be;

	if (base == NULL)
		return;
	be = to_imap(base);
	imap_conn_logout(be->conn);
	imap_conn_free(&be->conn);
	free(be->selected);
	free(be->listing_items);
	special_forget(be);
	free(be);
}

static enum mf_status imap_connect(struct mf_backend *base, char **error_r)
{
	return ensure(to_imap(base), error_r);
}

static void imap_interrupt(struct mf_backend *base)
{
	imap_conn_interrupt(to_imap(base)->conn);
}

/* ---- STATUS replies (probe and LIST-STATUS) ---- */

struct status_state {
	bool seen;
	bool has_uidvalidity, has_uidnext, has_messages, has_modseq;
	uint64_t uidvalidity, uidnext, messages, modseq;
};

/* The attribute list of "* STATUS name (...)" into *s. */
static void parse_status_items(const struct imap_token *l,
			       struct status_state *s)
{
	s->seen = true;
	for (unsigned int i = 0; i + 1 < l->count; i += 2) {
		uint64_t v;

		if (imap_token_u64(&l->list[i + 1], &v) < 0)
			continue;
		if (imap_token_is_atom(&l->list[i], "UIDVALIDITY")) {
			s->uidvalidity = v;
			s->has_uidvalidity = true;
		} else if (imap_token_is_atom(&l->list[i], "UIDNEXT")) {
			s->uidnext = v;
			s->has_uidnext = true;
		} else if (imap_token_is_atom(&l->list[i], "MESSAGES")) {
			s->messages = v;
			s->has_messages = true;
		} else if (imap_token_is_atom(&l->list[i], "HIGHESTMODSEQ")) {
			s->modseq = v;
			s->has_modseq = true;
		}
	}
}

/* "* STATUS name (...)": the name token and the list, or false. */
static bool is_status(const struct imap_response *r,
		      const struct imap_token **name_r,
		      const struct imap_token **list_r)
{
	if (r->type != IMAP_RESP_UNTAGGED || r->arg_count < 3 ||
	    !imap_token_is_atom(&r->args[0], "STATUS") ||
	    r->args[2].type != IMAP_TOK_LIST)
		return false;
	*name_r = &r->args[1];
	*list_r = &r->args[2];
	return true;
}

static int status_cb(void *ctx, const struct imap_response *r)
{
	const struct imap_token *name, *l;

	if (is_status(r, &name, &l))
		parse_status_items(l, ctx);
	return 0;
}

/*
 * The cursor fetch_changes would return for a folder with this STATUS if
 * nothing changed since: built like its "now" cursor (HIGHESTMODSEQ 0
 * means NOMODSEQ, which fetch_changes stores as 0 too). NULL when the
 * reply lacks something the cursor needs.
 */
static char *status_cursor(const struct status_state *s, bool condstore,
			   bool qresync)
{
	struct cursor c;

	if (!s->seen || !s->has_uidvalidity || !s->has_uidnext ||
	    (condstore && !s->has_modseq) || s->uidvalidity == 0 ||
	    s->uidnext == 0)
		return NULL;
	c.uidvalidity = s->uidvalidity;
	c.modseq = condstore ? s->modseq : 0;
	c.uidnext = s->uidnext;
	if (qresync && c.modseq != 0) {
		c.messages = 0;		/* not tracked: see the top */
	} else if (s->has_messages) {
		c.messages = s->messages;
	} else {
		return NULL;	/* NOMODSEQ folder under QRESYNC: unknown */
	}
	return format_cursor(&c);
}

/* The STATUS items a cursor needs (see status_cursor). */
static const char *status_items(bool condstore, bool qresync)
{
	if (qresync)
		return "(UIDVALIDITY UIDNEXT HIGHESTMODSEQ)";
	return condstore ? "(UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)"
			 : "(UIDVALIDITY UIDNEXT MESSAGES)";
}

/* CONDSTORE as fetch_changes uses it (QRESYNC implies it). */
static bool use_condstore(struct imap_backend *be)
{
	return imap_conn_qresync(be->conn) ||
	       imap_conn_has_cap(be->conn, IMAP_CAP_CONDSTORE);
}

/* ---- list_folders ---- */

struct list_entry {
	char *remote;
	char *decoded;
	char delim;
	unsigned int attrs;
	struct status_state status;	/* LIST-STATUS */
};

struct list_state {
	struct list_entry *e;
	size_t count, cap;
	bool delim_seen;
	char delim;
	bool too_many;
	bool want_status;	/* collect "* STATUS" replies */
};

/* The entry a LIST-STATUS "* STATUS name" reply belongs to, or NULL. */
static struct list_entry *list_find(struct list_state *ls, const char *name)
{
	/* the reply follows its LIST reply: try the last entry first */
	if (ls->count > 0 && strcmp(ls->e[ls->count - 1].remote, name) == 0)
		return &ls->e[ls->count - 1];
	for (size_t i = 0; i < ls->count; i++) {
		if (strcmp(ls->e[i].remote, name) == 0)
			return &ls->e[i];
	}
	if (strcasecmp(name, "INBOX") != 0)
		return NULL;
	for (size_t i = 0; i < ls->count; i++) {
		if ((ls->e[i].attrs & MF_FOLDER_INBOX) != 0)
			return &ls->e[i];
	}
	return NULL;
}

static void list_status(struct list_state *ls, const struct imap_token *name,
			const struct imap_token *l)
{
	const char *n = imap_token_str(name);
	struct list_entry *e;

	if (n == NULL || strlen(n) != name->len)
		return;
	e = list_find(ls, n);
	if (e == NULL)
		return;
	memset(&e->status, 0, sizeof(e->status));
	parse_status_items(l, &e->status);
}

static int list_cb(void *ctx, const struct imap_response *r)
{
	static const struct {
		const char *name;
		unsigned int attr;
	} attrs[] = {
		{ "\\Noselect", MF_FOLDER_NOSELECT },
		{ "\\NonExistent", MF_FOLDER_NOSELECT },
		{ "\\HasChildren", MF_FOLDER_HASCHILDREN },
		{ "\\Trash", MF_FOLDER_TRASH },
		{ "\\Sent", MF_FOLDER_SENT },
		{ "\\Drafts", MF_FOLDER_DRAFTS },
		{ "\\Junk", MF_FOLDER_JUNK },
		{ "\\Archive", MF_FOLDER_ARCHIVE },
		{ "\\All", MF_FOLDER_ALL },
	};
	struct list_state *ls = ctx;
	const struct imap_token *fl, *sname, *sl;
	const char *name, *d;
	struct list_entry *e;
	char *decoded;

	if (ls->want_status && is_status(r, &sname, &sl)) {
		list_status(ls, sname, sl);
		return 0;
	}
	if (r->type != IMAP_RESP_UNTAGGED || r->arg_count < 4 ||
	    !imap_token_is_atom(&r->args[0], "LIST") ||
	    r->args[1].type != IMAP_TOK_LIST)
		return 0;
	fl = &r->args[1];
	d = imap_token_str(&r->args[2]);
	name = imap_token_str(&r->args[3]);
	if (name == NULL || strlen(name) != r->args[3].len)
		return 0;	/* NIL or NUL inside: unusable */
	if (!ls->delim_seen && d != NULL && strlen(d) == 1) {
		ls->delim = d[0];
		ls->delim_seen = true;
	} else if (!ls->delim_seen && r->args[2].type == IMAP_TOK_NIL) {
		ls->delim = 0;
		ls->delim_seen = true;
	}
	if (name[0] == '\0')
		return 0;	/* LIST "" "" reply */
	if (ls->count >= IMAP_MAX_FOLDERS) {
		ls->too_many = true;
		return 0;
	}
	if (ls->count == ls->cap) {
		ls->cap = ls->cap == 0 ? 32 : ls->cap * 2;
		ls->e = xrealloc(ls->e, ls->cap * sizeof(*ls->e));
	}
	e = &ls->e[ls->count++];
	memset(e, 0, sizeof(*e));
	e->remote = xstrdup(name);
	e->delim = d != NULL && strlen(d) == 1 ? d[0] : 0;
	if (mf_mutf7_decode(name, &decoded) < 0)
		decoded = xstrdup(name);
	e->decoded = decoded;
	for (unsigned int i = 0; i < fl->count; i++) {
		for (size_t j = 0; j < MF_ARRAY_SIZE(attrs); j++) {
			if (imap_token_is_atom(&fl->list[i], attrs[j].name))
				e->attrs |= attrs[j].attr;
		}
	}
	if (strcasecmp(name, "INBOX") == 0)
		e->attrs |= MF_FOLDER_INBOX;
	return 0;
}

/* Name-based special-use guess for servers that give none. */
static void guess_special_use(struct list_state *ls)
{
	static const struct {
		const char *name;
		unsigned int attr;
	} names[] = {
		{ "Trash", MF_FOLDER_TRASH },
		{ "Deleted Items", MF_FOLDER_TRASH },
		{ "Sent", MF_FOLDER_SENT },
		{ "Sent Items", MF_FOLDER_SENT },
		{ "Drafts", MF_FOLDER_DRAFTS },
		{ "Junk", MF_FOLDER_JUNK },
		{ "Spam", MF_FOLDER_JUNK },
	};
	unsigned int have = 0;

	for (size_t i = 0; i < ls->count; i++)
		have |= ls->e[i].attrs;
	for (size_t j = 0; j < MF_ARRAY_SIZE(names); j++) {
		if ((have & names[j].attr) != 0)
			continue;
		for (size_t i = 0; i < ls->count; i++) {
			const char *n = ls->e[i].decoded;
			/* "Trash", or "INBOX.Trash" on INBOX-rooted servers */
			if (ls->e[i].delim != 0 &&
			    strncasecmp(n, "INBOX", 5) == 0 &&
			    n[5] == ls->e[i].delim)
				n += 6;
			if (strcasecmp(n, names[j].name) == 0 &&
			    (ls->e[i].attrs & MF_FOLDER_NOSELECT) == 0) {
				ls->e[i].attrs |= names[j].attr;
				have |= names[j].attr;
				break;
			}
		}
	}
}

static void list_state_free(struct list_state *ls)
{
	for (size_t i = 0; i < ls->count; i++) {
		free(ls->e[i].remote);
		free(ls->e[i].decoded);
	}
	free(ls->e);
	ls->e = NULL;
	ls->count = 0;
}

/*
 * Run the LIST command cmd. With LIST-STATUS and a selected folder, an
 * UNSELECT goes first in the same round trip: Dovecot answers STATUS of
 * the selected mailbox from the session's own view, which may be stale
 * ([CLIENTBUG]). *stale_r is set when the selected folder's status cannot
 * be trusted (no UNSELECT, or it failed); it is borrowed from
 * be->selected.
 */
static enum mf_status run_list(struct imap_backend *be, struct imap_cmd *cmd,
			       struct list_state *ls, char **stale_r,
			       char **error_r)
{
	struct imap_result res[2];
	struct imap_cmd unselect;
	struct imap_cmd *cmds[2];
	enum mf_status st;

	*stale_r = NULL;
	if (!ls->want_status || be->selected == NULL)
		return imap_conn_simple(be->conn, cmd, list_cb, ls, "LIST",
					error_r);
	if (!imap_conn_has_cap(be->conn, IMAP_CAP_UNSELECT)) {
		*stale_r = be->selected;
		return imap_conn_simple(be->conn, cmd, list_cb, ls, "LIST",
					error_r);
	}
	imap_cmd_init(&unselect, "UNSELECT");
	cmds[0] = &unselect;
	cmds[1] = cmd;
	st = imap_conn_run_pipeline(be->conn, cmds, 2, list_cb, ls, res,
				    error_r);
	imap_cmd_clear(&unselect);
	if (st != MF_OK)
		return st;
	if (res[0].status == IMAP_STATUS_OK) {
		free(be->selected);
		be->selected = NULL;
	} else {
		*stale_r = be->selected;
	}
	st = imap_result_status(&res[1], "LIST", error_r);
	imap_result_clear(&res[0]);
	imap_result_clear(&res[1]);
	return st;
}

static void special_forget(struct imap_backend *be)
{
	for (size_t i = 0; i < be->special_count; i++)
		free(be->special[i].remote);
	free(be->special);
	be->special = NULL;
	be->special_count = 0;
	be->special_at = 0;
}

/* Keep what a LIST with SPECIAL-USE said (before any guessing). */
static void special_remember(struct imap_backend *be,
			     const struct list_state *ls)
{
	special_forget(be);
	be->special = xcalloc(ls->count ? ls->count : 1,
			      sizeof(*be->special));
	for (size_t i = 0; i < ls->count; i++) {
		be->special[i].remote = xstrdup(ls->e[i].remote);
		be->special[i].attrs = ls->e[i].attrs & SPECIAL_ATTRS;
	}
	be->special_count = ls->count;
	be->special_at = MF_MAX(mf_mono_ms(), 1);
}

/*
 * Put back the remembered attributes into a LIST without SPECIAL-USE.
 * False when a folder is not known: the LIST must be asked again in full.
 */
static bool special_recall(const struct imap_backend *be,
			   struct list_state *ls)
{
	for (size_t i = 0; i < ls->count; i++) {
		struct list_entry *e = &ls->e[i];
		size_t j;

		for (j = 0; j < be->special_count; j++) {
			if (strcmp(be->special[j].remote, e->remote) == 0)
				break;
		}
		if (j == be->special_count)
			return false;
		e->attrs |= be->special[j].attrs;
	}
	return true;
}

static enum mf_status list_once(struct imap_backend *be, mf_folder_cb *cb,
				void *ctx, char **error_r)
{
	struct list_state ls;
	struct imap_cmd cmd;
	enum mf_status st;
	bool special, ask_special, lstatus, condstore, qresync;
	char *stale = NULL;

	lstatus = imap_conn_has_cap(be->conn, IMAP_CAP_LIST_STATUS);
	special = (lstatus || imap_conn_has_cap(be->conn,
						IMAP_CAP_LIST_EXTENDED)) &&
		  imap_conn_has_cap(be->conn, IMAP_CAP_SPECIAL_USE);
	condstore = use_condstore(be);
	qresync = imap_conn_qresync(be->conn);
	if (be->special_at != 0 &&
	    mf_mono_ms() - be->special_at >= SPECIAL_MEMO_MS)
		be->special_at = 0;
again:
	ask_special = special && be->special_at == 0;
	memset(&ls, 0, sizeof(ls));
	ls.want_status = lstatus;
	imap_cmd_init(&cmd, "LIST \"\" \"*\"");
	if (ask_special || lstatus) {
		imap_cmd_add(&cmd, " RETURN (");
		if (ask_special)
			imap_cmd_add(&cmd, lstatus ? "SPECIAL-USE " :
				     "SPECIAL-USE");
		if (lstatus) {
			imap_cmd_add(&cmd, "STATUS ");
			imap_cmd_add(&cmd, status_items(condstore, qresync));
		}
		imap_cmd_add(&cmd, ")");
	}
	st = run_list(be, &cmd, &ls, &stale, error_r);
	imap_cmd_clear(&cmd);
	if (st == MF_OK && ls.too_many) {
		*error_r = xasprintf("more than %u folders", IMAP_MAX_FOLDERS);
		st = MF_PROTO;
	}
	if (st == MF_OK && ask_special) {
		special_remember(be, &ls);
	} else if (st == MF_OK && special && !special_recall(be, &ls)) {
		/* A folder turned up since: ask for its special use now. */
		list_state_free(&ls);
		be->special_at = 0;
		goto again;
	}
	if (st == MF_OK) {
		if (ls.delim_seen) {
			be->delim = ls.delim;
			be->delim_known = true;
		}
		guess_special_use(&ls);
		for (size_t i = 0; i < ls.count; i++) {
			struct list_entry *e = &ls.e[i];
			struct mf_remote_folder f;
			char *path, *status = NULL;

			if ((e->attrs & MF_FOLDER_INBOX) != 0)
				path = xstrdup("INBOX");
			else
				path = mf_folder_path_from_remote(e->decoded,
								  e->delim);
			if (lstatus && (e->attrs & MF_FOLDER_NOSELECT) == 0 &&
			    (stale == NULL || strcmp(stale, e->remote) != 0))
				status = status_cursor(&e->status, condstore,
						       qresync);
			memset(&f, 0, sizeof(f));
			f.remote = e->remote;
			f.path = path;
			f.attrs = e->attrs;
			f.status = status;
			int r = cb(ctx, &f);
			free(path);
			free(status);
			if (r != 0) {
				*error_r = xstrdup("folder listing canceled");
				st = MF_CANCELED;
				break;
			}
		}
	}
	list_state_free(&ls);
	return st;
}

static enum mf_status imap_list_folders(struct mf_backend *base,
					mf_folder_cb *cb, void *ctx,
					char **error_r)
{
	struct imap_backend *be = to_imap(base);
	enum mf_status st;

	RETRY_LOOP(be, st, error_r, true,
		   st = list_once(be, cb, ctx, error_r));
	return st;
}

/* The hierarchy delimiter, asking LIST "" "" if not known yet. */
static enum mf_status get_delim(struct imap_backend *be, char **error_r)
{
	struct list_state ls;
	struct imap_cmd cmd;
	enum mf_status st;

	if (be->delim_known)
		return MF_OK;
	memset(&ls, 0, sizeof(ls));
	imap_cmd_init(&cmd, "LIST \"\" \"\"");
	st = imap_conn_simple(be->conn, &cmd, list_cb, &ls, "LIST", error_r);
	imap_cmd_clear(&cmd);
	list_state_free(&ls);
	if (st != MF_OK)
		return st;
	be->delim = ls.delim_seen ? ls.delim : '/';
	be->delim_known = true;
	return MF_OK;
}

/* ---- fetch_changes ---- */

struct buffered_msg {
	uint64_t uid;
	unsigned int flags;
	uint64_t size;
	int64_t date;
	char *msgid;
	char *headers;		/* views' header lines, or NULL */
};

struct listing {
	const struct mf_changes_sink *sink;
	bool meta;		/* expect and report meta data */
	bool headers;		/* report the header lines (views) */
	uint64_t min_uid, max_uid;
	bool buffer;		/* keep in msgs instead of reporting */
	struct buffered_msg *msgs;
	size_t count, cap;
	bool canceled;		/* the sink said stop */
	bool overflow;		/* buffer full: use a snapshot instead */
	uint64_t reported;
};

static int report(struct listing *l, uint64_t uid, unsigned int flags,
		  bool meta, uint64_t size, int64_t date, const char *msgid,
		  const char *headers)
{
	struct mf_change ch;
	char id[24];

	snprintf(id, sizeof(id), "%" PRIu64, uid);
	memset(&ch, 0, sizeof(ch));
	ch.kind = MF_CHANGE_UPSERT;
	ch.msg.id = id;
	ch.msg.flags = flags;
	ch.msg.has_meta = meta;
	if (meta) {
		ch.msg.size = size;
		ch.msg.size_exact = true;
		ch.msg.internaldate = date;
		ch.msg.message_id = msgid;
		ch.msg.headers = headers;
	}
	l->reported++;
	if (l->sink->change(l->sink->ctx, &ch) != 0) {
		l->canceled = true;
		return -1;
	}
	return 0;
}

static int listing_cb(void *ctx, const struct imap_response *r)
{
	struct listing *l = ctx;
	struct fetch_data f;
	char *msgid = NULL, *headers = NULL;
	int ret = 0;

	if (!parse_fetch(r, &f) || !f.has_uid || !f.has_flags)
		return 0;
	if (f.uid < l->min_uid || f.uid > l->max_uid)
		return 0;
	if (l->meta && !f.has_size)
		return 0;	/* an unsolicited flag update */
	if (l->meta && f.hdr != NULL) {
		const char *h = imap_token_str(f.hdr);
		if (h != NULL)
			msgid = imap_header_message_id(h, f.hdr->len);
		if (h != NULL && l->headers)
			headers = xstrndup(h, MF_MIN(f.hdr->len,
						     IMAP_MAX_VIEW_HEADERS));
	}
	if (l->buffer) {
		if (l->count >= IMAP_MAX_BUFFERED_NEW) {
			l->overflow = true;
			free(msgid);
			free(headers);
			return 0;
		}
		if (l->count == l->cap) {
			l->cap = l->cap == 0 ? 64 : l->cap * 2;
			l->msgs = xrealloc(l->msgs, l->cap * sizeof(*l->msgs));
		}
		struct buffered_msg *m = &l->msgs[l->count++];
		m->uid = f.uid;
		m->flags = f.flags;
		m->size = f.size;
		m->date = f.has_date ? f.date : 0;
		m->msgid = msgid;
		m->headers = headers;
		return 0;
	}
	ret = report(l, f.uid, f.flags, l->meta, f.size,
		     f.has_date ? f.date : 0, msgid, headers);
	free(msgid);
	free(headers);
	return ret;
}

static void listing_free(struct listing *l)
{
	for (size_t i = 0; i < l->count; i++) {
		free(l->msgs[i].msgid);
		free(l->msgs[i].headers);
	}
	free(l->msgs);
	l->msgs = NULL;
	l->count = 0;
}

/* UID FETCH range items [modifier] with listing l. */
static enum mf_status uid_fetch(struct imap_backend *be, const char *range,
				const char *items, const char *modifier,
				struct listing *l, char **error_r)
{
	struct imap_cmd cmd;
	enum mf_status st;

	imap_cmd_init(&cmd, "UID FETCH ");
	imap_cmd_add(&cmd, range);
	imap_cmd_add(&cmd, " ");
	imap_cmd_add(&cmd, items);
	if (modifier != NULL)
		imap_cmd_add(&cmd, modifier);
	st = imap_conn_simple(be->conn, &cmd, listing_cb, l, "UID FETCH",
			      error_r);
	imap_cmd_clear(&cmd);
	if (l->canceled) {
		free(*error_r);
		*error_r = xstrdup("listing canceled by the consumer");
		return MF_CANCELED;
	}
	return st;
}

static enum mf_status sink_begin(const struct mf_changes_sink *sink,
				 bool snapshot, bool reset, bool *begun,
				 char **error_r)
{
	/* Initialised whole: the struct gains fields for other backends. */
	struct mf_changes_info info = { .snapshot = snapshot, .reset = reset };

	*begun = true;
	if (sink->begin(sink->ctx, &info) != 0) {
		*error_r = xstrdup("listing canceled by the consumer");
		return MF_CANCELED;
	}
	return MF_OK;
}

static enum mf_status snapshot(struct imap_backend *be,
			       const struct mf_changes_sink *sink,
			       uint64_t exists, bool reset, bool *begun,
			       char **error_r)
{
	struct listing l;
	enum mf_status st;

	st = sink_begin(sink, true, reset, begun, error_r);
	if (st != MF_OK || exists == 0)
		return st;
	memset(&l, 0, sizeof(l));
	l.sink = sink;
	l.meta = true;
	l.headers = be->acct->view_fields != NULL;
	l.min_uid = 1;
	l.max_uid = UINT64_MAX;
	return uid_fetch(be, "1:*", be->listing_items, NULL, &l, error_r);
}

/* New messages: UID FETCH old_uidnext:* with meta; only uid >= old. */
static enum mf_status new_messages(struct imap_backend *be,
				   const struct mf_changes_sink *sink,
				   uint64_t old_uidnext, struct listing *l,
				   bool buffer, char **error_r)
{
	char range[32];

	memset(l, 0, sizeof(*l));
	l->sink = sink;
	l->meta = true;
	l->headers = be->acct->view_fields != NULL;
	l->min_uid = MF_MAX(old_uidnext, 1);
	l->max_uid = UINT64_MAX;
	l->buffer = buffer;
	snprintf(range, sizeof(range), "%" PRIu64 ":*", l->min_uid);
	return uid_fetch(be, range, be->listing_items, NULL, l, error_r);
}

static enum mf_status report_gone(const struct mf_changes_sink *sink,
				  const struct select_state *s,
				  char **error_r)
{
	struct mf_change ch;
	char id[24];

	memset(&ch, 0, sizeof(ch));
	ch.kind = MF_CHANGE_GONE;
	ch.msg.id = id;
	for (size_t i = 0; i < s->vanished_count; i++) {
		for (uint64_t u = s->vanished[i].lo; u <= s->vanished[i].hi;
		     u++) {
			snprintf(id, sizeof(id), "%" PRIu64, u);
			if (sink->change(sink->ctx, &ch) != 0) {
				*error_r = xstrdup("listing canceled by the "
						   "consumer");
				return MF_CANCELED;
			}
		}
	}
	return MF_OK;
}

static enum mf_status changes_once(struct imap_backend *be,
				   const char *folder,
				   const struct mf_changes_hint *hint,
				   const struct mf_changes_sink *sink,
				   char **cursor_r, bool *begun,
				   char **error_r)
{
	struct select_state s;
	struct listing l;
	struct cursor cur, now;
	char params[80];
	bool have_cur, qresync, condstore, use_qresync, cs_folder;
	enum mf_status st;

	memset(&s, 0, sizeof(s));
	memset(&l, 0, sizeof(l));
	have_cur = parse_cursor(hint->cursor, &cur) == 0;
	qresync = imap_conn_qresync(be->conn);
	condstore = qresync || imap_conn_has_cap(be->conn,
						 IMAP_CAP_CONDSTORE);
	use_qresync = qresync && have_cur && cur.modseq != 0 &&
		      cur.uidvalidity != 0;
	params[0] = '\0';
	if (use_qresync) {
		snprintf(params, sizeof(params),
			 " (QRESYNC (%" PRIu64 " %" PRIu64 "))",
			 cur.uidvalidity, cur.modseq);
		s.collect = true;
		s.old_uidnext = cur.uidnext;
	} else if (condstore && !qresync) {
		snprintf(params, sizeof(params), " (CONDSTORE)");
	}
	st = do_select(be, folder, params[0] != '\0' ? params : NULL, &s,
		       error_r);
	if (st != MF_OK)
		goto out;
	if (!s.has_uidvalidity) {
		*error_r = xasprintf("SELECT %s: no UIDVALIDITY", folder);
		st = MF_PROTO;
		goto out;
	}
	cs_folder = condstore && s.has_modseq && !s.nomodseq &&
		    s.modseq != 0;
	now.uidvalidity = s.uidvalidity;
	now.modseq = cs_folder ? s.modseq : 0;
	now.uidnext = s.has_uidnext ? s.uidnext : 0;
	/* With QRESYNC the count is not needed (see the top). */
	now.messages = qresync && cs_folder ? 0 : s.exists;

	if (!have_cur || cur.uidvalidity != now.uidvalidity) {
		st = snapshot(be, sink, s.exists, hint->cursor != NULL, begun,
			      error_r);
	} else if (use_qresync && cs_folder && !s.bad_set &&
		   s.vanished_total <= IMAP_MAX_VANISHED) {
		st = sink_begin(sink, false, false, begun, error_r);
		if (st == MF_OK)
			st = report_gone(sink, &s, error_r);
		l.sink = sink;
		for (size_t i = 0; st == MF_OK && i < s.change_count; i++) {
			if (report(&l, s.changes[i].uid, s.changes[i].flags,
				   false, 0, 0, NULL, NULL) < 0) {
				*error_r = xstrdup("listing canceled by the "
						   "consumer");
				st = MF_CANCELED;
			}
		}
		if (st == MF_OK && now.uidnext > cur.uidnext &&
		    s.exists > 0)
			st = new_messages(be, sink, cur.uidnext, &l, false,
					  error_r);
	} else if (now.uidnext != 0 && now.uidnext == cur.uidnext &&
		   s.exists == hint->known_count &&
		   (!cs_folder || now.modseq == cur.modseq)) {
		st = sink_begin(sink, false, false, begun, error_r);
	} else if (cs_folder && cur.modseq != 0 && now.uidnext != 0 &&
		   now.uidnext >= cur.uidnext) {
		if (now.uidnext > cur.uidnext && s.exists > 0) {
			st = new_messages(be, sink, cur.uidnext, &l, true,
					  error_r);
			if (st != MF_OK)
				goto out;
		}
		if (!l.overflow && s.exists >= l.count &&
		    s.exists - l.count == hint->known_count) {
			struct listing fl;
			char range[48];

			st = sink_begin(sink, false, false, begun, error_r);
			if (st == MF_OK && cur.uidnext > 1) {
				memset(&fl, 0, sizeof(fl));
				fl.sink = sink;
				fl.min_uid = 1;
				fl.max_uid = cur.uidnext - 1;
				snprintf(range, sizeof(range), "1:%" PRIu64,
					 cur.uidnext - 1);
				snprintf(params, sizeof(params),
					 " (CHANGEDSINCE %" PRIu64 ")",
					 cur.modseq);
				st = uid_fetch(be, range, "(UID FLAGS)",
					       params, &fl, error_r);
			}
			for (size_t i = 0; st == MF_OK && i < l.count; i++) {
				struct buffered_msg *m = &l.msgs[i];
				if (report(&l, m->uid, m->flags, true, m->size,
					   m->date, m->msgid,
					   m->headers) < 0) {
					*error_r = xstrdup("listing canceled "
							   "by the consumer");
					st = MF_CANCELED;
				}
			}
		} else {
			st = snapshot(be, sink, s.exists, false, begun,
				      error_r);
		}
	} else {
		st = snapshot(be, sink, s.exists, false, begun, error_r);
	}
	if (st == MF_OK)
		*cursor_r = format_cursor(&now);
out:
	listing_free(&l);
	select_state_free(&s);
	return st;
}

static enum mf_status imap_fetch_changes(struct mf_backend *base,
					 const char *folder,
					 const struct mf_changes_hint *hint,
					 const struct mf_changes_sink *sink,
					 char **cursor_r, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	bool begun = false;
	enum mf_status st;

	*cursor_r = NULL;
	RETRY_LOOP(be, st, error_r, !begun,
		   st = changes_once(be, folder, hint, sink, cursor_r, &begun,
				     error_r));
	return st;
}

/* ---- probe ---- */

static enum mf_status probe_once(struct imap_backend *be, const char *folder,
				 const struct cursor *cur, bool *changed_r,
				 char **error_r)
{
	struct status_state s;
	struct imap_cmd cmd;
	enum mf_status st;
	bool condstore = imap_conn_has_cap(be->conn, IMAP_CAP_CONDSTORE) ||
			 imap_conn_qresync(be->conn);

	/*
	 * STATUS of the mailbox this session has selected answers from the
	 * session's own view, which lags until the session processes
	 * updates (Dovecot says so with [CLIENTBUG]): a change by another
	 * client would be missed for good. Let fetch_changes re-SELECT it;
	 * with QRESYNC that is one round trip as well.
	 */
	if (be->selected != NULL && strcmp(be->selected, folder) == 0) {
		*changed_r = true;
		return MF_OK;
	}
	memset(&s, 0, sizeof(s));
	imap_cmd_init(&cmd, "STATUS");
	imap_cmd_add_string(&cmd, folder);
	imap_cmd_add(&cmd, " ");
	imap_cmd_add(&cmd, status_items(condstore,
					imap_conn_qresync(be->conn)));
	st = imap_conn_simple(be->conn, &cmd, status_cb, &s, "STATUS",
			      error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		return st;
	if (!s.seen) {
		*changed_r = true;
		return MF_OK;
	}
	*changed_r = s.uidvalidity != cur->uidvalidity ||
		     s.uidnext != cur->uidnext ||
		     (s.has_messages ? s.messages != cur->messages
				     : cur->messages != 0) ||
		     (s.has_modseq && s.modseq != cur->modseq);
	return MF_OK;
}

static enum mf_status imap_probe(struct mf_backend *base, const char *folder,
				 const char *cursor, bool *changed_r,
				 char **error_r)
{
	struct imap_backend *be = to_imap(base);
	struct cursor cur;
	enum mf_status st;

	*changed_r = true;
	if (parse_cursor(cursor, &cur) < 0)
		return MF_OK;
	RETRY_LOOP(be, st, error_r, true,
		   st = probe_once(be, folder, &cur, changed_r, error_r));
	return st;
}

/* ---- fetch_body ---- */

struct body_state {
	int fd;
	uint64_t max_size;
	uint64_t written;
	uint64_t announced;
	int write_err;		/* errno of the first failed write */
	bool streamed;		/* a BODY[] literal was streamed */
	bool too_big;
	bool got;		/* a FETCH with BODY[] arrived */
	bool nil;
	uint64_t uid;
};

static int body_begin(void *ctx, const char *prev, uint64_t size)
{
	struct body_state *b = ctx;

	if (prev == NULL || strncasecmp(prev, "BODY[]", 6) != 0 ||
	    b->streamed)
		return 0;
	if (size > b->max_size) {
		b->too_big = true;
		b->announced = size;
		return -1;
	}
	b->streamed = true;
	b->announced = size;
	return 1;
}

static void body_write(struct body_state *b, const void *data, size_t len)
{
	int r;

	if (b->write_err != 0)
		return;
	r = mf_write_all(b->fd, data, len);
	if (r < 0) {
		b->write_err = -r;
		return;
	}
	b->written += len;
}

static void body_data(void *ctx, const void *data, size_t len)
{
	body_write(ctx, data, len);
}

static int body_cb(void *ctx, const struct imap_response *r)
{
	struct body_state *b = ctx;
	struct fetch_data f;

	if (!parse_fetch(r, &f) || f.body == NULL)
		return 0;
	if (f.has_uid && f.uid != b->uid)
		return 0;
	b->got = true;
	if (f.body->type == IMAP_TOK_NIL) {
		b->nil = true;
		return 0;
	}
	if (f.body->type == IMAP_TOK_LITERAL && f.body->streamed)
		return 0;	/* already written */
	if (!b->streamed && imap_token_str(f.body) != NULL) {
		if (f.body->len > b->max_size) {
			b->too_big = true;
			b->announced = f.body->len;
			return 0;
		}
		body_write(b, f.body->str, f.body->len);
		b->announced = f.body->len;
		b->streamed = true;
	}
	return 0;
}

static enum mf_status body_once(struct imap_backend *be, const char *folder,
				uint64_t uid, struct body_state *b,
				char **error_r)
{
	struct imap_literal_sink sink;
	struct imap_cmd cmd;
	enum mf_status st;

	st = select_folder(be, folder, true, error_r);
	if (st != MF_OK)
		return st;
	memset(&sink, 0, sizeof(sink));
	sink.threshold = 0;
	sink.max_size = b->max_size;
	sink.begin = body_begin;
	sink.data = body_data;
	sink.ctx = b;
	imap_cmd_init(&cmd, "UID FETCH");
	imap_cmd_addf(&cmd, " %" PRIu64 " (BODY.PEEK[])", uid);
	cmd.sink = &sink;
	st = imap_conn_simple(be->conn, &cmd, body_cb, b, "UID FETCH",
			      error_r);
	imap_cmd_clear(&cmd);
	if (b->too_big) {
		free(*error_r);
		*error_r = xasprintf("message %" PRIu64 " in %s is %" PRIu64
				     " bytes, more than the limit of %" PRIu64,
				     uid, folder, b->announced, b->max_size);
		return MF_PROTO;
	}
	if (st != MF_OK)
		return st;
	if (b->write_err != 0) {
		*error_r = xasprintf("writing message %" PRIu64 " of %s: %s",
				     uid, folder, strerror(b->write_err));
		return MF_TEMP;
	}
	if (!b->got || b->nil) {
		*error_r = xasprintf("message %" PRIu64 " not found in %s",
				     uid, folder);
		return MF_GONE;
	}
	if (b->written != b->announced) {
		*error_r = xasprintf("message %" PRIu64 ": wrote %" PRIu64
				     " of %" PRIu64 " bytes", uid, b->written,
				     b->announced);
		return MF_TEMP;
	}
	return MF_OK;
}

static enum mf_status imap_fetch_body(struct mf_backend *base,
				      const char *folder, const char *id,
				      int out_fd, uint64_t max_size,
				      uint64_t *size_r, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	struct body_state b;
	enum mf_status st;
	uint64_t uid;
	bool reused;

	*size_r = 0;
	if (parse_uid(id, &uid) < 0) {
		*error_r = xasprintf("invalid IMAP UID \"%s\"", id);
		return MF_GONE;
	}
	memset(&b, 0, sizeof(b));
	reused = be->selected != NULL && strcmp(be->selected, folder) == 0;
	RETRY_LOOP(be, st, error_r, b.written == 0 && b.write_err == 0, {
		memset(&b, 0, sizeof(b));
		b.fd = out_fd;
		b.uid = uid;
		b.max_size = max_size != 0 ? max_size : UINT64_MAX;
		st = body_once(be, folder, uid, &b, error_r);
	});
	if (st == MF_GONE && reused && b.written == 0) {
		/*
		 * A session that has had the folder selected for a while
		 * does not know messages another client added since; a
		 * NOOP tells it (mail appended just before a read). Then
		 * once more.
		 */
		struct imap_cmd cmd;

		free(*error_r);
		*error_r = NULL;
		imap_cmd_init(&cmd, "NOOP");
		st = imap_conn_simple(be->conn, &cmd, NULL, NULL, "NOOP",
				      error_r);
		imap_cmd_clear(&cmd);
		if (st == MF_OK) {
			memset(&b, 0, sizeof(b));
			b.fd = out_fd;
			b.uid = uid;
			b.max_size = max_size != 0 ? max_size : UINT64_MAX;
			st = body_once(be, folder, uid, &b, error_r);
		}
	}
	*size_r = b.written;
	return st;
}

/* ---- pipelining ---- */

/*
 * Run cmds[0..n) pipelined, at most IMAP_MAX_PIPELINE_BYTES of commands
 * per round trip (nothing is read while a round is written). lsink (or
 * NULL) is the literal sink for all of them; cb gets every untagged
 * response. MF_OK when every command was answered OK (or, with
 * expunged_ok, NO [EXPUNGEISSUED]); else the first failure, after which
 * no further round is sent.
 */
static enum mf_status run_pipelined(struct imap_backend *be,
				    struct imap_cmd *cmds, size_t n,
				    const struct imap_literal_sink *lsink,
				    imap_untagged_cb *cb, void *ctx,
				    const char *what, bool expunged_ok,
				    char **error_r)
{
	struct imap_cmd **round;
	struct imap_result *res;
	enum mf_status st = MF_OK;
	size_t i = 0;

	if (n == 0)
		return MF_OK;
	round = xcalloc(n, sizeof(*round));
	res = xcalloc(n, sizeof(*res));
	while (st == MF_OK && i < n) {
		size_t k = 0, bytes = 0;

		while (i + k < n && (k == 0 || bytes + cmds[i + k].text.len <=
					       IMAP_MAX_PIPELINE_BYTES)) {
			bytes += cmds[i + k].text.len;
			round[k] = &cmds[i + k];
			round[k]->sink = lsink;
			k++;
		}
		st = imap_conn_run_pipeline(be->conn, round, (unsigned int)k,
					    cb, ctx, res, error_r);
		for (size_t j = 0; j < k; j++) {
			if (st == MF_OK &&
			    !(expunged_ok && res[j].status == IMAP_STATUS_NO &&
			      imap_result_has_code(&res[j], "EXPUNGEISSUED")))
				st = imap_result_status(&res[j], what,
							error_r);
			imap_result_clear(&res[j]);
		}
		i += k;
	}
	free(round);
	free(res);
	return st;
}

/* ---- set_flags ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorted unique uids into sets of about max_len chars at most. */
static char **build_sets(const uint64_t *uids, size_t n, size_t max_len,
			 size_t *count_r)
{
	char **sets = NULL;
	size_t count = 0;
	struct mf_buf b;

	mf_buf_init(&b);
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (b.len > max_len) {
			sets = xrealloc(sets, (count + 1) * sizeof(*sets));
			sets[count++] = mf_buf_steal(&b);
		}
		if (b.len > 0)
			mf_buf_appendc(&b, ',');
		if (j > i)
			mf_buf_printf(&b, "%" PRIu64 ":%" PRIu64, uids[i],
				      uids[j]);
		else
			mf_buf_printf(&b, "%" PRIu64, uids[i]);
		i = j + 1;
	}
	if (b.len > 0) {
		sets = xrealloc(sets, (count + 1) * sizeof(*sets));
		sets[count++] = mf_buf_steal(&b);
	}
	mf_buf_free(&b);
	*count_r = count;
	return sets;
}

static void store_cmd(struct imap_cmd *cmd, const char *set, char op,
		      unsigned int flags)
{
	struct mf_buf fl;

	mf_buf_init(&fl);
	format_flags(&fl, flags);
	imap_cmd_init(cmd, "UID STORE ");
	imap_cmd_addf(cmd, "%s %cFLAGS.SILENT %s", set, op, fl.data);
	mf_buf_free(&fl);
}

static enum mf_status store(struct imap_backend *be, const char *set,
			    char op, unsigned int flags, char **error_r)
{
	struct imap_cmd cmd;
	enum mf_status st;

	store_cmd(&cmd, set, op, flags);
	st = imap_conn_simple(be->conn, &cmd, NULL, NULL, "UID STORE",
			      error_r);
	imap_cmd_clear(&cmd);
	return st;
}

/* Every STORE of the change, pipelined. */
static enum mf_status flags_once(struct imap_backend *be, const char *folder,
				 char **sets, size_t nsets, unsigned int add,
				 unsigned int remove, char **error_r)
{
	struct imap_cmd *cmds;
	enum mf_status st;
	size_t n = 0;

	st = select_folder(be, folder, false, error_r);
	if (st != MF_OK)
		return st;
	cmds = xcalloc(nsets * 2, sizeof(*cmds));
	for (size_t i = 0; i < nsets; i++) {
		if (add != 0)
			store_cmd(&cmds[n++], sets[i], '+', add);
		if (remove != 0)
			store_cmd(&cmds[n++], sets[i], '-', remove);
	}
	st = run_pipelined(be, cmds, n, NULL, NULL, NULL, "UID STORE", false,
			   error_r);
	for (size_t i = 0; i < n; i++)
		imap_cmd_clear(&cmds[i]);
	free(cmds);
	return st;
}

static enum mf_status imap_set_flags(struct mf_backend *base,
				     const char *folder,
				     const char *const *ids,
				     unsigned int count, unsigned int add,
				     unsigned int remove, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	enum mf_status st;
	uint64_t *uids;
	size_t n = 0, nsets;
	char **sets;

	add &= MF_FLAG_ALL;
	remove &= MF_FLAG_ALL;
	if (count == 0 || (add == 0 && remove == 0))
		return MF_OK;
	uids = xmalloc(count * sizeof(*uids));
	for (unsigned int i = 0; i < count; i++) {
		if (parse_uid(ids[i], &uids[n]) < 0) {
			*error_r = xasprintf("invalid IMAP UID \"%s\"",
					     ids[i]);
			free(uids);
			return MF_PROTO;
		}
		n++;
	}
	qsort(uids, n, sizeof(*uids), cmp_u64);
	size_t u = 0;
	for (size_t i = 0; i < n; i++) {
		if (u == 0 || uids[u - 1] != uids[i])
			uids[u++] = uids[i];
	}
	sets = build_sets(uids, u, IMAP_MAX_SET_LEN, &nsets);
	free(uids);
	RETRY_LOOP(be, st, error_r, true,
		   st = flags_once(be, folder, sets, nsets, add, remove,
				   error_r));
	for (size_t i = 0; i < nsets; i++)
		free(sets[i]);
	free(sets);
	return st;
}

/* ---- fetch_bodies ---- */

/*
 * Several bodies of one folder: UID FETCH set (UID BODY.PEEK[]) with sets
 * of up to IMAP_MAX_FETCH_SET_LEN characters, pipelined in rounds (see
 * run_pipelined()). Each BODY[] literal is streamed into the file the
 * sink opens for its UID: the parser's begin_in hook shows the "UID n"
 * that precedes BODY[] in the same FETCH response. A server that sends
 * BODY[] before UID gets that body dropped and asked for again alone,
 * where the UID is known in advance.
 */

enum body_item_state {
	BODY_ITEM_PENDING,	/* nothing arrived yet */
	BODY_ITEM_OPEN,		/* open() accepted it; done() is due */
	BODY_ITEM_FINISHED,	/* done() was called, or open() refused */
};

struct body_item {
	uint64_t uid;
	size_t index;		/* in the caller's ids (sort tie-break) */
	const char *id;		/* foreign: the caller's id */
	enum body_item_state state;
	bool refetch;		/* BODY[] came before UID: fetch alone */
	bool too_big;
	int fd;
	uint64_t announced, written;
	int write_err;		/* errno of the first failed write */
};

struct bodies_state {
	const struct mf_body_sink *sink;
	struct body_item *items;	/* sorted by uid, unique */
	size_t count;
	uint64_t max_size;
	const char *folder;	/* foreign, for messages */
	uint64_t single_uid;	/* the only UID asked for, or 0 */
	struct body_item *cur;	/* whose literal is being streamed */
	bool discard;		/* the literal being streamed is dropped */
	bool called;		/* the sink was called: no retry */
};

static struct body_item *bodies_find(struct bodies_state *bs, uint64_t uid)
{
	size_t lo = 0, hi = bs->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (bs->items[mid].uid == uid)
			return &bs->items[mid];
		if (bs->items[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* open() the item's file. false when the sink refused it. */
static bool bodies_open(struct bodies_state *bs, struct body_item *it,
			uint64_t size)
{
	int fd = -1;

	bs->called = true;
	if (bs->sink->open(bs->sink->ctx, it->id, &fd) < 0) {
		it->state = BODY_ITEM_FINISHED;
		return false;
	}
	it->state = BODY_ITEM_OPEN;
	it->fd = fd;
	it->announced = size;
	it->written = 0;
	it->write_err = 0;
	it->too_big = size > bs->max_size;
	return true;
}

static void bodies_write(struct body_item *it, const void *data, size_t len)
{
	int r;

	if (it->write_err != 0 || it->too_big)
		return;
	r = mf_write_all(it->fd, data, len);
	if (r < 0) {
		it->write_err = -r;
		return;
	}
	it->written += len;
}

/* done() for an open item: OK when its whole body was written. */
static void bodies_finish(struct bodies_state *bs, struct body_item *it,
			  enum mf_status fail)
{
	enum mf_status st = MF_OK;

	if (it->state != BODY_ITEM_OPEN)
		return;
	if (it->too_big) {
		mf_debug(MF_DBG_IMAP, "imap: message %" PRIu64 " in %s is %"
			 PRIu64 " bytes, more than the limit of %" PRIu64,
			 it->uid, bs->folder, it->announced, bs->max_size);
		st = MF_PROTO;
	} else if (fail != MF_OK) {
		st = fail;
	} else if (it->write_err != 0) {
		mf_debug(MF_DBG_IMAP, "imap: writing message %" PRIu64
			 " of %s: %s", it->uid, bs->folder,
			 strerror(it->write_err));
		st = MF_TEMP;
	} else if (it->written != it->announced) {
		st = MF_TEMP;
	}
	it->state = BODY_ITEM_FINISHED;
	bs->called = true;
	bs->sink->done(bs->sink->ctx, it->id, st, it->written);
}

static int bodies_begin(void *ctx, const struct imap_token *list,
			const char *prev, uint64_t size)
{
	struct bodies_state *bs = ctx;
	struct body_item *it;
	uint64_t uid = 0;

	if (prev == NULL || strcasecmp(prev, "BODY[]") != 0)
		return 0;	/* not a body: keep it inline */
	bs->cur = NULL;
	bs->discard = true;
	/* the pairs before "BODY[]" {n} */
	for (unsigned int i = 0; i + 2 < list->count; i += 2) {
		const struct imap_token *v = &list->list[i + 1];

		if (imap_token_is_atom(&list->list[i], "UID") &&
		    v->type == IMAP_TOK_NUMBER)
			uid = v->num;
	}
	if (uid == 0)
		uid = bs->single_uid;
	if (uid == 0)
		return 1;	/* UID after BODY[]: dropped, refetched */
	it = bodies_find(bs, uid);
	if (it == NULL || it->state != BODY_ITEM_PENDING)
		return 1;	/* not asked for, or a repeat */
	if (!bodies_open(bs, it, size))
		return 1;
	bs->cur = it;
	bs->discard = it->too_big;
	return 1;
}

static void bodies_data(void *ctx, const void *data, size_t len)
{
	struct bodies_state *bs = ctx;

	if (!bs->discard && bs->cur != NULL)
		bodies_write(bs->cur, data, len);
}

static int bodies_cb(void *ctx, const struct imap_response *r)
{
	struct bodies_state *bs = ctx;
	struct body_item *it, *cur = bs->cur;
	struct fetch_data f;
	uint64_t uid;

	/* a streamed literal ends with the response that holds it */
	bs->cur = NULL;
	bs->discard = false;
	if (cur != NULL) {
		bodies_finish(bs, cur, MF_OK);
		return 0;
	}
	if (!parse_fetch(r, &f) || f.body == NULL)
		return 0;
	uid = f.has_uid ? f.uid : bs->single_uid;
	it = bodies_find(bs, uid);
	if (it == NULL || it->state != BODY_ITEM_PENDING)
		return 0;
	if (f.body->type == IMAP_TOK_LITERAL && f.body->streamed) {
		/* dropped in bodies_begin: the UID came after BODY[] */
		it->refetch = true;
		return 0;
	}
	if (f.body->type == IMAP_TOK_NIL) {
		it->state = BODY_ITEM_FINISHED;
		bs->called = true;
		bs->sink->done(bs->sink->ctx, it->id, MF_GONE, 0);
		return 0;
	}
	if (imap_token_str(f.body) == NULL)
		return 0;
	/* a body kept inline ({0} or a quoted string) */
	if (bodies_open(bs, it, f.body->len)) {
		bodies_write(it, f.body->str, f.body->len);
		bodies_finish(bs, it, MF_OK);
	}
	return 0;
}

static void bodies_fetch_cmd(struct imap_cmd *cmd, const char *set)
{
	imap_cmd_init(cmd, "UID FETCH ");
	imap_cmd_add(cmd, set);
	imap_cmd_add(cmd, " (UID BODY.PEEK[])");
}

/* The pipelined fetch of every pending item. */
static enum mf_status bodies_sets(struct imap_backend *be,
				  struct bodies_state *bs,
				  const struct imap_literal_sink *lsink,
				  char **error_r)
{
	struct imap_cmd *cmds;
	enum mf_status st;
	uint64_t *uids;
	size_t n = 0, nsets;
	char **sets;

	uids = xcalloc(MF_MAX(bs->count, 1), sizeof(*uids));
	for (size_t i = 0; i < bs->count; i++) {
		if (bs->items[i].state == BODY_ITEM_PENDING)
			uids[n++] = bs->items[i].uid;
	}
	sets = build_sets(uids, n, IMAP_MAX_FETCH_SET_LEN, &nsets);
	free(uids);
	cmds = xcalloc(MF_MAX(nsets, 1), sizeof(*cmds));
	for (size_t i = 0; i < nsets; i++)
		bodies_fetch_cmd(&cmds[i], sets[i]);
	st = run_pipelined(be, cmds, nsets, lsink, bodies_cb, bs,
			   "UID FETCH", true, error_r);
	for (size_t i = 0; i < nsets; i++) {
		imap_cmd_clear(&cmds[i]);
		free(sets[i]);
	}
	free(cmds);
	free(sets);
	return st;
}

static enum mf_status bodies_once(struct imap_backend *be, const char *folder,
				  struct bodies_state *bs, char **error_r)
{
	struct imap_literal_sink lsink;
	enum mf_status st;

	for (size_t i = 0; i < bs->count; i++)
		bs->items[i].refetch = false;
	bs->cur = NULL;
	bs->discard = false;
	bs->single_uid = 0;
	st = select_folder(be, folder, true, error_r);
	if (st != MF_OK)
		return st;
	memset(&lsink, 0, sizeof(lsink));
	lsink.threshold = 0;
	/* too big bodies are dropped here, not refused by the parser */
	lsink.max_size = IMAP_PARSER_MAX_LITERAL_SIZE;
	lsink.begin_in = bodies_begin;
	lsink.data = bodies_data;
	lsink.ctx = bs;
	st = bodies_sets(be, bs, &lsink, error_r);
	/* bodies that came before their UID, one at a time */
	for (size_t i = 0; st == MF_OK && i < bs->count; i++) {
		struct body_item *it = &bs->items[i];
		struct imap_cmd cmd;
		char set[24];

		if (!it->refetch || it->state != BODY_ITEM_PENDING)
			continue;
		mf_debug(MF_DBG_IMAP, "imap: BODY[] of %" PRIu64 " in %s came "
			 "before its UID; fetching it alone", it->uid, folder);
		snprintf(set, sizeof(set), "%" PRIu64, it->uid);
		bodies_fetch_cmd(&cmd, set);
		bs->single_uid = it->uid;
		st = run_pipelined(be, &cmd, 1, &lsink, bodies_cb, bs,
				   "UID FETCH", true, error_r);
		bs->single_uid = 0;
		imap_cmd_clear(&cmd);
	}
	/* a body cut short by a failure */
	for (size_t i = 0; i < bs->count; i++)
		bodies_finish(bs, &bs->items[i], st != MF_OK ? st : MF_TEMP);
	bs->cur = NULL;
	if (st != MF_OK)
		return st;
	/* what the server did not return does not exist */
	for (size_t i = 0; i < bs->count; i++) {
		struct body_item *it = &bs->items[i];

		if (it->state != BODY_ITEM_PENDING)
			continue;
		it->state = BODY_ITEM_FINISHED;
		bs->called = true;
		bs->sink->done(bs->sink->ctx, it->id, MF_GONE, 0);
	}
	return MF_OK;
}

static int cmp_body_item(const void *a, const void *b)
{
	const struct body_item *x = a, *y = b;

	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static enum mf_status imap_fetch_bodies(struct mf_backend *base,
					const char *folder,
					const char *const *ids,
					unsigned int count, uint64_t max_size,
					const struct mf_body_sink *sink,
					char **error_r)
{
	struct imap_backend *be = to_imap(base);
	struct bodies_state bs;
	enum mf_status st;
	size_t n = 0, u = 0;

	memset(&bs, 0, sizeof(bs));
	bs.sink = sink;
	bs.folder = folder;
	bs.max_size = max_size != 0 ? max_size : UINT64_MAX;
	bs.items = xcalloc(MF_MAX(count, 1), sizeof(*bs.items));
	for (unsigned int i = 0; i < count; i++) {
		uint64_t uid;
		bool dup = false;

		if (parse_uid(ids[i], &uid) == 0) {
			bs.items[n].uid = uid;
			bs.items[n].index = i;
			bs.items[n].id = ids[i];
			bs.items[n].fd = -1;
			n++;
			continue;
		}
		/* cannot exist: gone, once per id */
		for (unsigned int j = 0; j < i && !dup; j++)
			dup = strcmp(ids[j], ids[i]) == 0;
		if (!dup)
			sink->done(sink->ctx, ids[i], MF_GONE, 0);
	}
	qsort(bs.items, n, sizeof(*bs.items), cmp_body_item);
	for (size_t i = 0; i < n; i++) {
		if (u == 0 || bs.items[u - 1].uid != bs.items[i].uid)
			bs.items[u++] = bs.items[i];
	}
	bs.count = u;
	st = MF_OK;
	if (bs.count > 0) {
		RETRY_LOOP(be, st, error_r, !bs.called,
			   st = bodies_once(be, folder, &bs, error_r));
	}
	free(bs.items);
	return st;
}

/* ---- append ---- */

/* The second word of "APPENDUID v uid" / third of "COPYUID v src dst". */
static char *code_word(const char *code, unsigned int index)
{
	const char *p = code;

	for (unsigned int i = 0; i < index; i++) {
		p = strchr(p, ' ');
		if (p == NULL)
			return NULL;
		p++;
	}
	size_t n = strcspn(p, " ");
	uint64_t v;
	if (mf_parse_u64(p, n, UINT32_MAX, &v) < 0 || v == 0)
		return NULL;	/* a range or junk: let the sync find it */
	return xstrndup(p, n);
}

static enum mf_status imap_append(struct mf_backend *base, const char *folder,
				  int in_fd, const struct mf_append_info *info,
				  char **id_r, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	struct imap_result res;
	struct imap_cmd cmd;
	struct mf_buf fl;
	struct stat stt;
	enum mf_status st;
	uint64_t size;

	*id_r = NULL;
	if (fstat(in_fd, &stt) < 0) {
		*error_r = xasprintf("cannot stat the message to upload: %s",
				     strerror(errno));
		return MF_PROTO;
	}
	size = info->size != 0 ? info->size : (uint64_t)stt.st_size;
	if ((uint64_t)stt.st_size < size) {
		*error_r = xasprintf("message to upload has %lld bytes, "
				     "expected %" PRIu64,
				     (long long)stt.st_size, size);
		return MF_PROTO;
	}
	st = ensure(be, error_r);
	if (st != MF_OK)
		return st;
	imap_cmd_init(&cmd, "APPEND");
	imap_cmd_add_string(&cmd, folder);
	if ((info->flags & MF_FLAG_ALL) != 0) {
		mf_buf_init(&fl);
		format_flags(&fl, info->flags & MF_FLAG_ALL);
		imap_cmd_addf(&cmd, " %s", fl.data);
		mf_buf_free(&fl);
	}
	if (info->internaldate != 0) {
		time_t t = (time_t)info->internaldate;
		struct tm tm;
		gmtime_r(&t, &tm);
		imap_cmd_addf(&cmd, " \"%02d-%s-%04d %02d:%02d:%02d +0000\"",
			      tm.tm_mday, month_names[tm.tm_mon],
			      tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
			      tm.tm_sec);
	}
	imap_cmd_add_fd_literal(&cmd, in_fd, size);
	st = imap_conn_run(be->conn, &cmd, NULL, NULL, &res, error_r);
	imap_cmd_clear(&cmd);
	check_conn(be);
	if (st != MF_OK)
		return st;
	st = imap_result_status(&res, "APPEND", error_r);
	if (st == MF_OK && imap_result_has_code(&res, "APPENDUID"))
		*id_r = code_word(res.code, 2);
	imap_result_clear(&res);
	return st;
}

/* ---- move / expunge ---- */

struct move_state {
	char *copyuid;		/* owned: code of an untagged OK */
	bool expunged;
};

static int move_cb(void *ctx, const struct imap_response *r)
{
	struct move_state *m = ctx;

	if (r->type != IMAP_RESP_UNTAGGED)
		return 0;
	if (r->status == IMAP_STATUS_OK && r->code != NULL &&
	    r->code->count >= 4 &&
	    imap_token_is_atom(&r->code->list[0], "COPYUID")) {
		const char *d = imap_token_str(&r->code->list[3]);
		uint64_t v;
		if (d != NULL && parse_uid(d, &v) == 0) {
			free(m->copyuid);
			m->copyuid = xstrdup(d);
		}
		return 0;
	}
	if ((r->arg_count >= 2 && imap_token_is_atom(&r->args[1], "EXPUNGE")) ||
	    (r->arg_count >= 1 && imap_token_is_atom(&r->args[0], "VANISHED")))
		m->expunged = true;
	return 0;
}

struct exists_state {
	uint64_t uid;
	bool found;
};

static int exists_cb(void *ctx, const struct imap_response *r)
{
	struct exists_state *e = ctx;
	struct fetch_data f;

	if (parse_fetch(r, &f) && f.has_uid && f.uid == e->uid)
		e->found = true;
	return 0;
}

/* Does the selected folder have this UID? */
static enum mf_status uid_exists(struct imap_backend *be, uint64_t uid,
				 bool *exists_r, char **error_r)
{
	struct exists_state e = { .uid = uid, .found = false };
	struct imap_cmd cmd;
	enum mf_status st;

	imap_cmd_init(&cmd, "UID FETCH");
	imap_cmd_addf(&cmd, " %" PRIu64 " (UID)", uid);
	st = imap_conn_simple(be->conn, &cmd, exists_cb, &e, "UID FETCH",
			      error_r);
	imap_cmd_clear(&cmd);
	*exists_r = e.found;
	return st;
}

static enum mf_status uid_expunge(struct imap_backend *be, uint64_t uid,
				  char **error_r)
{
	struct imap_cmd cmd;
	enum mf_status st;
	char set[24];

	snprintf(set, sizeof(set), "%" PRIu64, uid);
	st = store(be, set, '+', MF_FLAG_TRASHED, error_r);
	if (st != MF_OK)
		return st;
	imap_cmd_init(&cmd, "UID EXPUNGE ");
	imap_cmd_add(&cmd, set);
	st = imap_conn_simple(be->conn, &cmd, NULL, NULL, "UID EXPUNGE",
			      error_r);
	imap_cmd_clear(&cmd);
	return st;
}

static enum mf_status imap_move(struct mf_backend *base, const char *from,
				const char *id, const char *to, char **id_r,
				char **error_r)
{
	struct imap_backend *be = to_imap(base);
	struct move_state m;
	struct imap_result res;
	struct imap_cmd cmd;
	enum mf_status st;
	bool uidplus, has_move, exists;
	uint64_t uid;

	*id_r = NULL;
	if (parse_uid(id, &uid) < 0) {
		*error_r = xasprintf("invalid IMAP UID \"%s\"", id);
		return MF_GONE;
	}
	memset(&m, 0, sizeof(m));
	memset(&res, 0, sizeof(res));
	st = ensure(be, error_r);
	if (st == MF_OK)
		st = select_folder(be, from, false, error_r);
	if (st != MF_OK)
		goto out;
	uidplus = imap_conn_has_cap(be->conn, IMAP_CAP_UIDPLUS);
	has_move = imap_conn_has_cap(be->conn, IMAP_CAP_MOVE);
	if (!uidplus) {
		/* without COPYUID the answer cannot tell us; ask first */
		st = uid_exists(be, uid, &exists, error_r);
		if (st != MF_OK)
			goto out;
		if (!exists) {
			*error_r = xasprintf("message %s not found in %s", id,
					     from);
			st = MF_GONE;
			goto out;
		}
	}
	imap_cmd_init(&cmd, has_move ? "UID MOVE" : "UID COPY");
	imap_cmd_addf(&cmd, " %" PRIu64, uid);
	imap_cmd_add_string(&cmd, to);
	st = imap_conn_run(be->conn, &cmd, move_cb, &m, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		goto out;
	st = imap_result_status(&res, has_move ? "UID MOVE" : "UID COPY",
				error_r);
	if (st == MF_GONE) {
		/*
		 * [TRYCREATE]: the *target* is missing. MF_GONE would say the
		 * message is gone, and the caller would wait to find it in a
		 * folder that does not exist; it is still in the source.
		 */
		st = MF_PROTO;
		goto out;
	}
	if (st != MF_OK)
		goto out;
	if (m.copyuid != NULL)
		*id_r = xstrdup(m.copyuid);
	else if (imap_result_has_code(&res, "COPYUID"))
		*id_r = code_word(res.code, 3);
	if (uidplus && *id_r == NULL) {
		/* RFC 4315: no COPYUID when nothing was copied */
		*error_r = xasprintf("message %s not found in %s", id, from);
		st = MF_GONE;
		goto out;
	}
	if (!has_move) {
		char set[24];
		snprintf(set, sizeof(set), "%" PRIu64, uid);
		if (uidplus) {
			st = uid_expunge(be, uid, error_r);
		} else {
			st = store(be, set, '+', MF_FLAG_TRASHED, error_r);
			if (st == MF_OK)
				mf_warn("imap %s: no UIDPLUS: message %s "
					"copied to %s and marked \\Deleted in "
					"%s, but not expunged",
					be->acct->name, id, to, from);
		}
	}
out:
	check_conn(be);
	imap_result_clear(&res);
	free(m.copyuid);
	if (st != MF_OK) {
		free(*id_r);
		*id_r = NULL;
	}
	return st;
}

static enum mf_status expunge_once(struct imap_backend *be,
				   const char *folder, uint64_t uid,
				   char **error_r)
{
	enum mf_status st;

	if (!imap_conn_has_cap(be->conn, IMAP_CAP_UIDPLUS)) {
		*error_r = xasprintf("%s lacks UIDPLUS: cannot expunge a "
				     "single message safely", be->acct->host);
		return MF_NOTSUP;
	}
	st = select_folder(be, folder, false, error_r);
	if (st != MF_OK)
		return st;
	return uid_expunge(be, uid, error_r);
}

static enum mf_status imap_expunge(struct mf_backend *base,
				   const char *folder, const char *id,
				   char **error_r)
{
	struct imap_backend *be = to_imap(base);
	enum mf_status st;
	uint64_t uid;

	if (parse_uid(id, &uid) < 0)
		return MF_OK;	/* cannot exist, so it is gone */
	RETRY_LOOP(be, st, error_r, true,
		   st = expunge_once(be, folder, uid, error_r));
	return st;
}

/* ---- folders ---- */

/* Local path -> remote (delimiter-joined, modified UTF-7) name. */
static enum mf_status remote_name(struct imap_backend *be, const char *path,
				  char **remote_r, char **error_r)
{
	struct mf_buf b;
	const char *p = path;
	unsigned int n = 0;
	enum mf_status st;

	st = get_delim(be, error_r);
	if (st != MF_OK)
		return st;
	mf_buf_init(&b);
	for (;;) {
		size_t len = strcspn(p, "/");
		char *comp = xstrndup(p, len);
		char *u = mf_folder_unescape(comp);

		free(comp);
		if (u == NULL || u[0] == '\0') {
			*error_r = xasprintf("invalid folder name \"%s\"",
					     path);
			free(u);
			mf_buf_free(&b);
			return MF_PROTO;
		}
		if ((be->delim != 0 && strchr(u, be->delim) != NULL) ||
		    (n > 0 && be->delim == 0)) {
			*error_r = xasprintf("folder name \"%s\" cannot be "
					     "expressed on this server "
					     "(hierarchy delimiter '%c')",
					     path, be->delim != 0 ?
					     be->delim : ' ');
			free(u);
			mf_buf_free(&b);
			return MF_PROTO;
		}
		if (n > 0)
			mf_buf_appendc(&b, be->delim);
		if (n == 0 && strcasecmp(u, "INBOX") == 0)
			mf_buf_appends(&b, "INBOX");
		else
			mf_buf_appends(&b, u);
		free(u);
		n++;
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
	*remote_r = mf_mutf7_encode(b.data);
	mf_buf_free(&b);
	if (*remote_r == NULL) {
		*error_r = xasprintf("folder name \"%s\" is not valid UTF-8",
				     path);
		return MF_PROTO;
	}
	return MF_OK;
}

static enum mf_status create_once(struct imap_backend *be, const char *path,
				  char **remote_r, char **error_r)
{
	struct imap_result res;
	struct imap_cmd cmd;
	enum mf_status st;
	char *remote = NULL;

	st = remote_name(be, path, &remote, error_r);
	if (st != MF_OK)
		return st;
	imap_cmd_init(&cmd, "CREATE");
	imap_cmd_add_string(&cmd, remote);
	st = imap_conn_run(be->conn, &cmd, NULL, NULL, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st == MF_OK) {
		if (res.status != IMAP_STATUS_OK &&
		    imap_result_has_code(&res, "ALREADYEXISTS"))
			st = MF_OK;
		else
			st = imap_result_status(&res, "CREATE", error_r);
		imap_result_clear(&res);
	}
	if (st == MF_OK)
		*remote_r = remote;
	else
		free(remote);
	return st;
}

static enum mf_status imap_create_folder(struct mf_backend *base,
					 const char *path, char **remote_r,
					 char **error_r)
{
	struct imap_backend *be = to_imap(base);
	enum mf_status st;

	*remote_r = NULL;
	RETRY_LOOP(be, st, error_r, true,
		   st = create_once(be, path, remote_r, error_r));
	return st;
}

/* Leave the selected folder if it is name (before DELETE/RENAME). */
static enum mf_status leave_folder(struct imap_backend *be, const char *name,
				   char **error_r)
{
	enum mf_status st = MF_OK;
	struct imap_cmd cmd;

	if (be->selected == NULL || strcmp(be->selected, name) != 0)
		return MF_OK;
	free(be->selected);
	be->selected = NULL;
	if (imap_conn_has_cap(be->conn, IMAP_CAP_UNSELECT)) {
		imap_cmd_init(&cmd, "UNSELECT");
		st = imap_conn_simple(be->conn, &cmd, NULL, NULL, "UNSELECT",
				      error_r);
		imap_cmd_clear(&cmd);
		if (st == MF_PROTO) {
			free(*error_r);
			*error_r = NULL;
			st = MF_OK;
		}
	}
	return st;
}

static enum mf_status delete_once(struct imap_backend *be,
				  const char *remote, char **error_r)
{
	struct imap_result res;
	struct imap_cmd cmd;
	enum mf_status st;

	st = leave_folder(be, remote, error_r);
	if (st != MF_OK)
		return st;
	imap_cmd_init(&cmd, "DELETE");
	imap_cmd_add_string(&cmd, remote);
	st = imap_conn_run(be->conn, &cmd, NULL, NULL, &res, error_r);
	imap_cmd_clear(&cmd);
	if (st != MF_OK)
		return st;
	if (res.status == IMAP_STATUS_NO &&
	    imap_result_has_code(&res, "NONEXISTENT"))
		st = MF_OK;
	else
		st = imap_result_status(&res, "DELETE", error_r);
	imap_result_clear(&res);
	return st;
}

static enum mf_status imap_delete_folder(struct mf_backend *base,
					 const char *remote, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	enum mf_status st;

	RETRY_LOOP(be, st, error_r, true,
		   st = delete_once(be, remote, error_r));
	return st;
}

static enum mf_status imap_rename_folder(struct mf_backend *base,
					 const char *remote,
					 const char *new_path,
					 char **remote_r, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	struct imap_cmd cmd;
	enum mf_status st;
	char *newname = NULL;

	*remote_r = NULL;
	st = ensure(be, error_r);
	if (st == MF_OK)
		st = remote_name(be, new_path, &newname, error_r);
	if (st == MF_OK)
		st = leave_folder(be, remote, error_r);
	if (st == MF_OK) {
		imap_cmd_init(&cmd, "RENAME");
		imap_cmd_add_string(&cmd, remote);
		imap_cmd_add_string(&cmd, newname);
		st = imap_conn_simple(be->conn, &cmd, NULL, NULL, "RENAME",
				      error_r);
		imap_cmd_clear(&cmd);
	}
	check_conn(be);
	if (st == MF_OK)
		*remote_r = newname;
	else
		free(newname);
	return st;
}

/* ---- wait_push ---- */

static int push_cb(void *ctx, const struct imap_response *r)
{
	if (r->type != IMAP_RESP_UNTAGGED || r->status != IMAP_STATUS_NONE)
		return 0;
	if (r->arg_count >= 2 && r->args[0].type == IMAP_TOK_NUMBER &&
	    (imap_token_is_atom(&r->args[1], "EXISTS") ||
	     imap_token_is_atom(&r->args[1], "EXPUNGE") ||
	     imap_token_is_atom(&r->args[1], "FETCH")))
		return 1;
	if (r->arg_count >= 1 && imap_token_is_atom(&r->args[0], "VANISHED"))
		return 1;
	return 0;
}

struct noop_state {
	bool changed;
};

static int noop_cb(void *ctx, const struct imap_response *r)
{
	struct noop_state *n = ctx;

	if (push_cb(NULL, r) > 0)
		n->changed = true;
	return 0;
}

static enum mf_status push_once(struct imap_backend *be, const char *folder,
				int timeout_ms, bool *changed_r,
				char **error_r)
{
	enum mf_status st;

	st = select_folder(be, folder, true, error_r);
	if (st != MF_OK)
		return st;
	if (imap_conn_has_cap(be->conn, IMAP_CAP_IDLE))
		return imap_conn_idle(be->conn, timeout_ms, push_cb, NULL,
				      changed_r, error_r);

	int64_t end = mf_mono_ms() + MF_MAX(timeout_ms, 0);
	for (;;) {
		struct noop_state n = { false };
		struct imap_cmd cmd;

		imap_cmd_init(&cmd, "NOOP");
		st = imap_conn_simple(be->conn, &cmd, noop_cb, &n, "NOOP",
				      error_r);
		imap_cmd_clear(&cmd);
		if (st != MF_OK || n.changed) {
			*changed_r = n.changed;
			return st;
		}
		int64_t left = end - mf_mono_ms();
		if (left <= 0)
			return MF_OK;
		st = imap_conn_sleep(be->conn,
				     (int)MF_MIN(left, IMAP_NOOP_INTERVAL),
				     error_r);
		if (st != MF_OK) {
			imap_conn_close(be->conn);
			return st;
		}
	}
}

static enum mf_status imap_wait_push(struct mf_backend *base,
				     const char *folder, int timeout_ms,
				     bool *changed_r, char **error_r)
{
	struct imap_backend *be = to_imap(base);
	enum mf_status st;

	*changed_r = false;
	RETRY_LOOP(be, st, error_r, true,
		   st = push_once(be, folder, timeout_ms, changed_r, error_r));
	return st;
}

const struct mf_backend_ops mf_imap_backend_ops = {
	.name = "imap",
	.caps = MF_CAP_PUSH,
	.flag_batch_max = 1000,	/* UID sets, split by IMAP_MAX_SET_LEN */
	.create = imap_create,
	.destroy = imap_destroy,
	.connect = imap_connect,
	.list_folders = imap_list_folders,
	.fetch_changes = imap_fetch_changes,
	.probe = imap_probe,
	.fetch_body = imap_fetch_body,
	.fetch_bodies = imap_fetch_bodies,
	.set_flags = imap_set_flags,
	.append = imap_append,
	.move = imap_move,
	.expunge = imap_expunge,
	.create_folder = imap_create_folder,
	.delete_folder = imap_delete_folder,
	.rename_folder = imap_rename_folder,
	.wait_push = imap_wait_push,
	.interrupt = imap_interrupt,
};
