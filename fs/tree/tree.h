/* The mounted tree: directories and files listed from the source.
 *
 * Built single-threaded at mount (tree_add, then tree_finish). Later
 * listings (list_ttl) are merged in with tree_merge(): nodes are added,
 * never freed, so a node pointer stays valid for the tree's life. A
 * directory's children are indexed by a hash table (lookups are O(1)) and
 * kept in an append-only array, so a readdir position stays valid across
 * merges. The tree's shape is protected by a lock private to the module:
 * lookups take it shared, a merge takes it exclusively only for short
 * steps (see tree_merge()). A file's validator (etag, size, mtime) and
 * state are protected by node->lock. */
#ifndef WFS_FS_TREE_H
#define WFS_FS_TREE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "readahead.h"

struct decoded;
struct tensor_ahead;
struct tree;
struct tree_dir; /* a directory's children: private to tree_priv.h */

struct node {
	uint64_t ino; /* FUSE inode number; the root is 1 */
	struct node *parent;
	char *key; /* path under the source root, '/'-separated, no leading / */
	char *name; /* one path component, the tail of key; "" for the root */
	bool is_dir;
	bool unlinked; /* replaced by a node of another type; tree module only */
	bool in_slab;  /* its memory is a tree's (tree.c); tree module only */
	uint32_t hash; /* of name, for the children index; tree module only */
	struct tree_dir *dir; /* directories only; tree module only */
	struct timespec mtime;
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
	/* When the listing gave no validator (HTTP indexes): the ETag of
	 * this version's first block, which pins the rest (fetch.c), or
	 * NULL; cleared when a relist finds a new version. Not part of the
	 * listed identity (etag, size, mtime: disk cache keys); lock. */
	char *pinned;
	bool changed; /* the object changed under us: reads fail; lock */
	uint32_t
		generation; /* bumped when the object's content changed; lock */
	struct readahead *ra;	 /* made on first use: node_readahead() */
	struct tensor_ahead *ta; /* tensor_ahead.c's, made on first read */
	/* A file decoded from a stored object of another form (decoder.h),
	 * or NULL; one reference; replaced with the validator; lock. */
	struct decoded *dec;
	/* -o verify=sha256 (verify.h): made on first read, or NULL; the
	 * pointer is protected by lock, the state by its own. */
	struct verify *verify;
};

/* node_readahead() - @n's readahead state (it has its own lock), made on
 * first use, so a node never read costs nothing for it. Never NULL: out
 * of memory, a state shared by such nodes (thread-safe, less precise). */
struct readahead *node_readahead(struct node *n);

/* node_version() - @n's size and generation, read together under its
 * lock. @return whether the object changed under us (reads must fail). */
bool node_version(struct node *n, uint64_t *ret_size, uint32_t *ret_gen);

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
 * creating missing parent directories. @etag may be NULL. Only for a tree
 * no other thread uses yet (a listing being built).
 * @return 0 and *ret_node (may be NULL), -EINVAL when a component of @key
 * is not tree_name_ok(), -EEXIST when @key exists with another type,
 * -ENOMEM.
 * Adding an existing directory again is not an error.
 */
int tree_add(struct tree *t, const char *key, bool is_dir, uint64_t size,
	     struct timespec mtime, const char *etag, struct node **ret_node);

/*
 * tree_add_child() - tree_add() of one component: child @name (@len
 * bytes) of directory @dir of a tree being built, without walking or
 * building a key. @return 0 and *ret_node (may be NULL), -EINVAL (not
 * tree_name_ok(), @dir not a directory), -EEXIST when @dir has a child
 * of that name (of either type), -ENOMEM.
 */
int tree_add_child(struct tree *t, struct node *dir, const char *name,
		   size_t len, bool is_dir, uint64_t size,
		   struct timespec mtime, const char *etag,
		   struct node **ret_node);

/* tree_truncate() - remove the nodes added to a tree being built since
 * it had @count (tree_count()), e.g. a listing's entries before it is
 * read again; nothing was sorted or renamed since. */
void tree_truncate(struct tree *t, size_t count);

/* tree_set_size() - set the size of file @n of a tree being built (e.g.
 * from a HEAD), keeping tree_bytes() right. */
void tree_set_size(struct tree *t, struct node *n, uint64_t size);

/*
 * tree_trim_name() - rename file @n of a tree being built (before
 * tree_finish()) to the first @len bytes of its name ("w.bin.zst" ->
 * "w.bin"), keeping its inode.
 * @return 0, -EEXIST when a sibling has that name, -EINVAL.
 */
int tree_trim_name(struct tree *t, struct node *n, size_t len);

/* tree_finish() - sort each directory's children by name (readdir
 * order) and index them all; call once after the last tree_add(), before
 * sharing @t. @return 0 or -ENOMEM (@t not to be shared). */
int tree_finish(struct tree *t);

/* tree_sort() - tree_finish() without the index, for a listing that is
 * only merged into another (tree_merge*()) and never shared: children
 * added in name order were not indexed, and a merge that looks names up
 * in it indexes it then; one adopted whole never is. */
void tree_sort(struct tree *t);

/* tree_get() - the node of inode @ino, or NULL. */
struct node *tree_get(struct tree *t, uint64_t ino);

/* tree_lookup() - the child @name of directory @dir, or NULL. */
struct node *tree_lookup(struct tree *t, const struct node *dir,
			 const char *name);

/* tree_read_lock() and tree_read_unlock() - hold the tree's shape still,
 * e.g. while walking a directory's children with tree_child(). Held only
 * briefly: a merge waits for it. */
void tree_read_lock(struct tree *t);
void tree_read_unlock(struct tree *t);

/* tree_nchildren() - how many children directory @dir has now; with the
 * read lock held. Children are only ever appended (or replaced in place
 * by a node of the same name), so the first N stay the same N names: a
 * readdir that remembers N at opendir is a snapshot. */
size_t tree_nchildren(const struct node *dir);

/* tree_child() - the @i-th child of @dir (i < tree_nchildren()); with the
 * read lock held. */
struct node *tree_child(const struct node *dir, size_t i);

/* Totals, for statfs and logs. */
size_t tree_count(struct tree *t); /* nodes, the root included */
size_t tree_files(struct tree *t);
uint64_t tree_bytes(struct tree *t);

/* What merges cost, since the tree was made (for benchmarks and tests):
 * the longest time one held the lock lookups need, as wall time and as
 * the CPU time it spent then (the difference: the thread was preempted
 * while holding it), and how many steps they took. */
struct tree_stats {
	uint64_t max_hold_ns;
	uint64_t max_hold_cpu_ns;
	uint64_t steps;
};
void tree_stats(struct tree *t, struct tree_stats *ret);

/* What a merge changed, for the caller to tell the cache and the kernel. */
struct tree_changes {
	struct node **changed; /* files whose content changed or went away */
	size_t nchanged;
	struct node **added; /* new files and directories, by inode */
	size_t nadded;
	size_t nconflicts; /* paths whose type changed (replaced) */
};

/*
 * tree_merge() - bring @t up to date with @fresh, a new listing of the
 * same source (finished, not shared): new entries are added, files whose
 * validator or size changed get the new one and a new generation, files
 * gone from the source are marked changed (reads fail with EIO), and a
 * path whose type changed (file <-> directory) is replaced by a new node
 * of the new type (the old one reads as gone).
 *
 * The whole merge is planned and allocated first, without blocking
 * lookups; then applied in steps that hold the lock lookups need for at
 * most a few milliseconds each. Applying cannot fail: either nothing
 * changed (an error return) or every change is in *ret.
 * @return 0 and *ret (release with tree_changes_done()), or -ENOMEM.
 */
int tree_merge(struct tree *t, struct tree *fresh, struct tree_changes *ret);
void tree_changes_done(struct tree_changes *c);

/*
 * tree_merge_dir() - like tree_merge(), for a listing of ONE directory
 * level: @fresh holds @dir's key (its ancestors as directories) and
 * @dir's children, nothing else is looked at. Children of @dir missing
 * from @fresh are gone; new subdirectories are unlisted (below).
 * A first listing of @dir (no children yet) moves @fresh's nodes into @t
 * as they are: after any merge, @fresh is only good for tree_free().
 * @return 0 and *ret, -ENOTDIR, -ENOMEM.
 */
int tree_merge_dir(struct tree *t, struct node *dir, struct tree *fresh,
		   struct tree_changes *ret);

/*
 * Lazy listing. A directory is listed (its children are in the tree) or
 * not yet: trees built by tree_add() are listed throughout; a one-level
 * merge adds its new subdirectories unlisted, and tree_mark_unlisted()
 * makes a tree's root so (before sharing it).
 *
 * tree_list_begin() - before looking in @dir: 0 when it is listed; 1
 * when the caller must list it now (and then call tree_list_end()); a
 * caller that finds another listing it waits for that one (single
 * flight) and gets 0, or -EIO when that listing failed (a later call
 * tries again).
 */
void tree_mark_unlisted(struct tree *t, struct node *dir);
int tree_list_begin(struct tree *t, struct node *dir);
void tree_list_end(struct tree *t, struct node *dir, bool ok);
bool tree_dir_listed(const struct node *dir);

/* tree_linked() - whether @n is still in the tree (not replaced by a node
 * of another type). */
bool tree_linked(struct tree *t, const struct node *n);

/* tree_listed_dirs() - every directory listed now (for relisting them):
 * a malloc'd array in *ret of *ret_n nodes. @return 0 or -ENOMEM. */
int tree_listed_dirs(struct tree *t, struct node ***ret, size_t *ret_n);

/* tree_root() - the root directory (inode 1). */
struct node *tree_root(const struct tree *t);

#endif
