/* The mounted tree: directories and files listed from the source.
 *
 * Built single-threaded at mount (tree_add, then tree_finish) and read-only
 * in shape afterwards, so lookups need no lock. The per-file validator
 * (etag, size) may change when the daemon notices the object changed; that
 * is protected by node->lock. */
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

	pthread_mutex_t lock;
	uint64_t size; /* protected by lock once mounted */
	char *etag;    /* validator as the server sent it, or NULL; lock */
	bool changed;  /* the object changed under us: reads fail; lock */
	uint32_t
		generation; /* bumped when the object's content changed; lock */
	struct readahead ra; /* has its own lock */
};

struct tree {
	struct node **nodes; /* nodes[ino - 1] */
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
struct node *tree_get(const struct tree *t, uint64_t ino);

/* tree_lookup() - the child @name of directory @dir, or NULL. */
struct node *tree_lookup(const struct node *dir, const char *name);

/* tree_root() - the root directory (inode 1). */
struct node *tree_root(const struct tree *t);

#endif
