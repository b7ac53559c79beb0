/*
 * Client-side views ([view NAME] in mailfs.conf): each is a read-mostly
 * Maildir at MOUNT/@NAME/{cur,new,tmp} listing the messages of every
 * account that match the view's rules, with the same inode numbers and
 * the same names as in their folders. See fs/views.c.
 *
 * ops.c calls these at a few hook points: inodes at or above
 * MF_INO_VIEW_BASE belong to views and every request on them is answered
 * here.
 */
#ifndef MF_FS_VIEWS_H
#define MF_FS_VIEWS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "mf_config.h"

/* View i: MF_INO_VIEW_BASE + 4 * i + (0 dir, 1 cur, 2 new, 3 tmp). */
#define MF_INO_VIEW_BASE (1ULL << 60)

void mf_views_init(const struct mf_config *cfg);
unsigned int mf_views_count(void);

/* Is ino a view's directory (or its cur/new/tmp)? */
bool mf_views_ino(uint64_t ino);

/* The root's entry "@NAME" -> inode, or -ENOENT. */
int mf_views_root_resolve(const char *name, uint64_t *ino_r);
/* The root's i-th view entry (name and inode), for readdir. */
const char *mf_views_root_entry(unsigned int i, uint64_t *ino_r);

/* Attributes of a view directory inode. */
int mf_views_getattr(uint64_t ino, struct stat *st);

/* Requests on view inodes (parent or target is one). */
void mf_views_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void mf_views_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      bool plus);
void mf_views_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags);
void mf_views_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
/* A message named name left its place in a folder (rename, unlink made
 * there): drop the name from the views' cached entries. */
void mf_views_forget_name(const char *name);

/* create, mknod, mkdir, link, symlink into a view: EROFS, logged. */
void mf_views_refuse(fuse_req_t req, fuse_ino_t parent, const char *name,
		     const char *what);

#endif
