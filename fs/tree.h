/* The mounted tree: directories and files listed from the source.
 *
 * Built single-threaded at mount (tree_add, then tree_finish). Later
 * listings (list_ttl) are merged in with tree_merge(): nodes are added,
 * never freed, so a node pointer stays valid for the tree's life, and the
 * tree's arrays (nodes, each directory's children) are protected by
 * tree->lock. A file's validator (etag, size, mtime) and state are
 * protected by node->lock. */
#ifndef WFS_FS_TREE_H
#define WFS_FS_TREE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "readahead.h"

struct node {
	uint64_t ino; /* FUSE inode number; the root is 1 */
	struct node *parent;
	char *name; /* one path component; "" for the root */
	char *key; /* path under the source root, '/'-separated, no leading / */
	bool is_dir;
	struct timespec mtime;
	struct node **children; /* sorted by name once tree_finish() ran */
	size_t nchildren;
	size_t children_cap;
	/* file:// mirrors the source's owner and permissions (less the
	 * write bits); other sources leave has_perm false: 0444/0555, owned
	 * by the daemon's user. Set at listing, read-only afterwards. */
	bool has_perm;
	uint32_t perm; /* permission bits, 07777 */
	uint32_t uid;
	uint32_t gid;

	pthread_mutex_t lock;
	uint64_t size; /* protected by lock once mounted, as are mtime */
	char *etag;    /* validator as the server sent it, or NULL; lock */
	bool changed;  /* the object changed under us: reads fail; lock */
	uint32_t
		generation; /* bumped when the object's content changed; lock */
	struct readahead ra; /* has its own lock */
};

struct tree {
	pthread_rwlock_t lock; /* the arrays below and nodes' children */
	struct node **nodes;   /* nodes[ino - 1] */
	size_t count;
	size_t cap;
	uint64_t bytes; /* sum of file sizes */
	size_t files;
};

int tree_new(struct tree **ret);
void tree_free(struct tree *t);

/*
 * tree_name_ok() - whether @name (of @len bytes) may be a path component:
 * not empty, not "." or "..", no '/', no NUL or control characters, at most
 * 255 bytes, valid as given (no further decoding).
 */
bool tree_name_ok(const char *name, size_t len);

/*
 * tree_add() - add the file or directory at @key (relative, '/'-separated),
 * creating missing parent directories. @etag may be NULL.
 * @return 0 and *ret_node (may be NULL), -EINVAL when a component of @key
 * is not tree_name_ok(), -EEXIST when @key exists with another type,
 * -ENOMEM.
 * Adding an existing directory again is not an error.
 */
int tree_add(struct tree *t, const char *key, bool is_dir, uint64_t size,
	     struct timespec mtime, const char *etag, struct node **ret_node);

/* tree_finish() - sort children; call once after the last tree_add(). */
void tree_finish(struct tree *t);

/* tree_get() - the node of inode @ino, or NULL. */
struct node *tree_get(struct tree *t, uint64_t ino);

/* tree_lookup() - the child @name of directory @dir, or NULL. */
struct node *tree_lookup(struct tree *t, const struct node *dir,
			 const char *name);

/* tree_read_lock() and tree_read_unlock() - hold the tree's shape still,
 * e.g. while walking a directory's children. */
void tree_read_lock(struct tree *t);
void tree_read_unlock(struct tree *t);

/* What a merge changed, for the caller to tell the cache and the kernel. */
struct tree_changes {
	struct node **changed; /* files whose content changed or went away */
	size_t nchanged;
	struct node **added; /* new files and directories */
	size_t nadded;
};

/*
 * tree_merge() - bring @t up to date with @fresh, a new listing of the
 * same source: new entries are added, files whose validator or size
 * changed get the new one and a new generation, files gone from the
 * source are marked changed (reads fail with EIO). Entries of another
 * type than before are left as they were.
 * @return 0 and *ret (release with tree_changes_done()), or -ENOMEM.
 */
int tree_merge(struct tree *t, const struct tree *fresh,
	       struct tree_changes *ret);
void tree_changes_done(struct tree_changes *c);

/* tree_root() - the root directory (inode 1). */
struct node *tree_root(const struct tree *t);

#endif
