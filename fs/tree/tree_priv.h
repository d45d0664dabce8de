/* Private to the tree module (tree.c, tree_merge.c): the tree's and a
 * directory's state, and the helpers both files use. Users of the tree
 * include tree.h only.
 *
 * tree.c owns the nodes, the children index, building (tree_add,
 * tree_finish), lookups and the lazy listing state; tree_merge.c plans and
 * applies merges (tree_merge, tree_merge_dir). */
#ifndef WFS_FS_TREE_PRIV_H
#define WFS_FS_TREE_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tree.h"

struct tree_dir {
	struct node **children; /* append-only; sorted by tree_finish() */
	size_t n;
	size_t cap;
	int state; /* enum dir_state; atomic reads, changes under listing */
	unsigned fails; /* failed listings; under t->listing */
	/* While a tree is built: a child was linked out of name order (or
	 * renamed), so a new name may repeat an earlier one. */
	bool unsorted;
};

/* Whether a directory's children are in the tree (tree_list_begin()). A
 * listing adds whole directories (LISTED, the zero value); a one-level
 * listing (tree_merge_dir()) adds its subdirectories UNLISTED. */
enum dir_state { DIR_LISTED, DIR_UNLISTED, DIR_LISTING };

struct tree {
	/* The shape: nodes, slots, every directory's children, the totals.
	 * Readers take it shared; a merge takes it exclusively in steps. */
	pthread_rwlock_t lock;
	/* One merge at a time. Once the tree is shared, only the holder of
	 * this lock changes the shape, so it may read it without @lock. */
	pthread_mutex_t merge;
	/* nodes[0], kept apart: a merge may swap the nodes array (and free
	 * the old one) while a lookup without @lock asks for the root. */
	struct node *root;
	struct node **nodes; /* nodes[ino - 1] */
	size_t count;
	size_t cap;
	/* The children index: open addressing keyed by (parent, name),
	 * linear probing, at most half full; nslots a power of two. */
	struct node **slots;
	size_t nslots;
	size_t nused; /* linked nodes but the root */
	/* A tree being built: children added in name order were linked
	 * without the index, which the first lookup builds (a big listing
	 * adopted whole by a merge is never looked up by name). */
	bool index_stale;
	/* Memory of the nodes tree_add*() made (chunks carved in order),
	 * freed with the tree, or moved with them by an adopting merge. */
	struct slab *slabs;
	char *slab_next;
	size_t slab_left;
	uint64_t bytes; /* sum of file sizes */
	size_t files;
	struct tree_stats stats;
	/* Directory listings in flight (tree_list_begin()): a state change
	 * broadcasts @listed. */
	pthread_mutex_t listing;
	pthread_cond_t listed;
};

/* The slot of @slots (@nslots, a power of two) for linked or linking
 * node @n: its own, its namesake's (a node of another type it replaces),
 * or the empty one where it goes. */
struct node **tree_slot_of_node(struct node **slots, size_t nslots,
				const struct node *n);
/* Child @name (@len bytes) of @dir in @t, or NULL. */
struct node *tree_child_find(struct tree *t, const struct node *dir,
			     const char *name, size_t len);
/* A new index of @nslots slots holding every linked node of @t, or NULL
 * (out of memory). */
struct node **tree_index_build(const struct tree *t, size_t nslots);
/* Slots enough for @n entries at most half full. */
size_t tree_slots_for(size_t n);
/* A node for child @name of @parent (NULL: the root), not yet linked, or
 * NULL (out of memory). */
struct node *tree_node_alloc(struct node *parent, const char *name,
			     size_t name_len, bool is_dir);
void tree_node_free(struct node *n);
/* Give @from's node memory to @to (a merge adopted nodes of @from). */
void tree_slabs_move(struct tree *to, struct tree *from);
/* Grow array *@arrp of *@cap elements of @size bytes to hold @need;
 * 0 or -ENOMEM (the array unchanged). */
int tree_grow(void *arrp, size_t *cap, size_t need, size_t size);

#endif
