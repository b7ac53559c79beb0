/*
 * The notifier thread. libfuse forbids notify calls from inside a request
 * handler or while holding a lock a handler needs (fuse_lowlevel.h,
 * "deadlock"), so the store's engine-side code only enqueues here and
 * this thread talks to the kernel.
 */
#include "fs.h"
#include "mf_store.h"
#include "mf_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum note_kind { NOTE_ENTRY, NOTE_DELETE, NOTE_INODE };

struct note {
	enum note_kind kind;
	uint64_t parent;
	uint64_t child;
	char *name;		/* owned or NULL */
	struct note *next;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct note *head, *tail;	/* protected by lock */
	bool stop;			/* protected by lock */
	bool running;
	pthread_t thread;
	struct fuse_session *se;
} nt = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

static void push(enum note_kind kind, uint64_t parent, uint64_t child,
		 const char *name)
{
	struct note *n = xcalloc(1, sizeof(*n));

	n->kind = kind;
	n->parent = parent;
	n->child = child;
	n->name = name ? xstrdup(name) : NULL;
	pthread_mutex_lock(&nt.lock);
	if (nt.stop || !nt.running) {
		pthread_mutex_unlock(&nt.lock);
		free(n->name);
		free(n);
		return;
	}
	if (nt.tail)
		nt.tail->next = n;
	else
		nt.head = n;
	nt.tail = n;
	pthread_cond_signal(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
}

static void op_inval_entry(uint64_t parent, const char *name)
{
	push(NOTE_ENTRY, parent, 0, name);
}

static void op_delete_entry(uint64_t parent, uint64_t child, const char *name)
{
	push(NOTE_DELETE, parent, child, name);
}

static void op_inval_inode(uint64_t ino)
{
	push(NOTE_INODE, ino, 0, NULL);
}

static const struct mf_notify_ops notifier_ops = {
	.inval_entry = op_inval_entry,
	.delete_entry = op_delete_entry,
	.inval_inode = op_inval_inode,
};

const struct mf_notify_ops *mf_notifier_ops(void)
{
	return &notifier_ops;
}

static void deliver(struct note *n)
{
	int ret = 0;

	switch (n->kind) {
	case NOTE_ENTRY:
		ret = fuse_lowlevel_notify_inval_entry(nt.se, n->parent,
						       n->name,
						       strlen(n->name));
		break;
	case NOTE_DELETE:
		ret = fuse_lowlevel_notify_delete(nt.se, n->parent, n->child,
						  n->name, strlen(n->name));
		if (ret == -ENOENT || ret == -ENOTDIR || ret == -EBUSY)
			ret = fuse_lowlevel_notify_inval_entry(
				nt.se, n->parent, n->name, strlen(n->name));
		break;
	case NOTE_INODE:
		/* Offset 0 drops cached pages too: a directory's cached
		 * listing, a body whose size was corrected. */
		ret = fuse_lowlevel_notify_inval_inode(nt.se, n->parent, 0,
						       0);
		break;
	}
	/* ENOENT: the kernel did not have it cached. Nothing to do. */
	if (ret < 0 && ret != -ENOENT)
		mf_debug(MF_DBG_FS, "notify %d (%llu %s): %s", n->kind,
			 (unsigned long long)n->parent,
			 n->name ? n->name : "", strerror(-ret));
}

static void *notifier_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&nt.lock);
	for (;;) {
		struct note *n;

		while (!nt.stop && !nt.head)
			pthread_cond_wait(&nt.cond, &nt.lock);
		if (nt.stop)
			break;
		n = nt.head;
		nt.head = n->next;
		if (!nt.head)
			nt.tail = NULL;
		pthread_mutex_unlock(&nt.lock);
		deliver(n);
		free(n->name);
		free(n);
		pthread_mutex_lock(&nt.lock);
	}
	pthread_mutex_unlock(&nt.lock);
	return NULL;
}

void mf_notifier_start(struct fuse_session *se)
{
	nt.se = se;
	nt.stop = false;
	nt.running = true;
	pthread_create(&nt.thread, NULL, notifier_main, NULL);
}

void mf_notifier_stop(void)
{
	struct note *n;

	if (!nt.running)
		return;
	pthread_mutex_lock(&nt.lock);
	nt.stop = true;
	pthread_cond_broadcast(&nt.cond);
	pthread_mutex_unlock(&nt.lock);
	pthread_join(nt.thread, NULL);
	nt.running = false;
	while ((n = nt.head)) {
		nt.head = n->next;
		free(n->name);
		free(n);
	}
	nt.tail = NULL;
}
