#include "tree.h"
#include "tree_priv.h"
#include "decoder.h"
#include "tensor_ahead.h"
#include "verify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static uint32_t name_hash(const char *name, size_t len)
{
	return (uint32_t)XXH3_64bits(name, len);
}

/* Where child @nh (its name's hash) of @dir starts its probe. The name's
 * hash is kept in the node, so rehashing reads no names, and a node that
 * moves to another directory (tree_merge.c adopts) keeps it. */
static size_t hash_of(const struct node *dir, uint32_t nh)
{
	uint64_t h = (dir->ino + 1) * 0x9e3779b97f4a7c15ull ^ nh;

	return (size_t)(h ^ h >> 29);
}

/* The slot holding child @name (@len bytes, hash @nh) of @dir, or the
 * empty slot where it would go. */
static struct node **slot_of(struct node **slots, size_t nslots,
			     const struct node *dir, uint32_t nh,
			     const char *name, size_t len)
{
	size_t mask = nslots - 1, i = hash_of(dir, nh) & mask;

	for (;; i = (i + 1) & mask) {
		struct node *n = slots[i];

		if (!n ||
		    (n->hash == nh && n->parent == dir &&
		     !strncmp(n->name, name, len) && n->name[len] == '\0'))
			return &slots[i];
	}
}

struct node **tree_slot_of_node(struct node **slots, size_t nslots,
				const struct node *n)
{
	size_t mask = nslots - 1, i = hash_of(n->parent, n->hash) & mask;

	for (;; i = (i + 1) & mask) {
		struct node *m = slots[i];

		if (!m || m == n ||
		    (m->hash == n->hash && m->parent == n->parent &&
		     !strcmp(m->name, n->name)))
			return &slots[i];
	}
}

/* Index the nodes linked without it (tree_add_child()); out of memory,
 * the index stays stale. */
static int index_catch_up(struct tree *t)
{
	size_t ns = tree_slots_for(t->nused);
	struct node **s;

	if (!t->index_stale)
		return 0;
	if (!(s = tree_index_build(t, ns)))
		return -ENOMEM;
	free(t->slots);
	t->slots = s;
	t->nslots = ns;
	t->index_stale = false;
	return 0;
}

struct node *tree_child_find(struct tree *t, const struct node *dir,
			     const char *name, size_t len)
{
	if (!dir->is_dir)
		return NULL;
	/* A few children are looked through rather than indexing the whole
	 * tree (a merge walking to the listed directory); out of memory, all
	 * are: slowly, but right. */
	if ((t->index_stale && dir->dir->n <= 8) || index_catch_up(t)) {
		for (size_t i = 0; i < dir->dir->n; i++) {
			struct node *n = dir->dir->children[i];

			if (!strncmp(n->name, name, len) && !n->name[len])
				return n;
		}
		return NULL;
	}
	if (!t->nslots)
		return NULL;
	return *slot_of(t->slots, t->nslots, dir, name_hash(name, len), name,
			len);
}

/* A new index of @nslots slots holding every linked node of @t. */
struct node **tree_index_build(const struct tree *t, size_t nslots)
{
	struct node **slots = calloc(nslots, sizeof(*slots));
	size_t i;

	if (!slots)
		return NULL;
	for (i = 1; i < t->count; i++) {
		struct node *n = t->nodes[i];

		if (!n->unlinked)
			*tree_slot_of_node(slots, nslots, n) = n;
	}
	return slots;
}

/* Slots enough for @n entries at most half full. */
size_t tree_slots_for(size_t n)
{
	size_t s = 64;

	while (s < 2 * n)
		s *= 2;
	return s;
}

/* Make @n (zeroed, with room for the key after it) child @name of
 * @parent (NULL: the root). */
static struct node *node_init(struct node *n, struct node *parent,
			      const char *name, size_t name_len, size_t plen,
			      bool is_dir)
{
	if (is_dir && !(n->dir = calloc(1, sizeof(*n->dir))))
		return NULL;
	n->key = (char *)(n + 1);
	if (plen) {
		memcpy(n->key, parent->key, plen - 1);
		n->key[plen - 1] = '/';
	}
	memcpy(n->key + plen, name, name_len);
	n->key[plen + name_len] = '\0';
	n->name = n->key + plen;
	n->hash = name_hash(name, name_len);
	n->is_dir = is_dir;
	n->parent = parent ? parent : n;
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

static size_t key_prefix(const struct node *parent)
{
	return parent && *parent->key ? strlen(parent->key) + 1 : 0;
}

/* A node for child @name of @parent (NULL: the root), not yet linked; its
 * key is stored in the same allocation. */
struct node *tree_node_alloc(struct node *parent, const char *name,
			     size_t name_len, bool is_dir)
{
	size_t plen = key_prefix(parent);
	struct node *n = calloc(1, sizeof(*n) + plen + name_len + 1);

	if (n && !node_init(n, parent, name, name_len, plen, is_dir)) {
		free(n);
		n = NULL;
	}
	return n;
}

/* A chunk of node memory (struct tree's slabs), 16-byte aligned after. */
struct slab {
	struct slab *next;
	size_t size;
};

#define SLAB_FIRST (16u << 10)
#define SLAB_MAX (1u << 20)

/* tree_node_alloc() for a tree being built: carved from @t's slabs, no
 * allocator call, header or rounding per node (a big listing makes
 * hundreds of thousands). */
static struct node *node_new_in(struct tree *t, struct node *parent,
				const char *name, size_t name_len, bool is_dir)
{
	size_t plen = key_prefix(parent);
	size_t bytes =
		(sizeof(struct node) + plen + name_len + 1 + 7) & ~(size_t)7;
	struct node *n;

	if (bytes > t->slab_left) {
		size_t size = t->slabs ? 2 * t->slabs->size : SLAB_FIRST;
		struct slab *s;

		if (size > SLAB_MAX)
			size = SLAB_MAX;

		if (size < sizeof(*s) + bytes)
			size = sizeof(*s) + bytes;
		if (!(s = malloc(size)))
			return NULL;
		s->next = t->slabs;
		s->size = size;
		t->slabs = s;
		t->slab_next = (char *)(s + 1);
		t->slab_left = size - sizeof(*s);
	}
	n = (struct node *)t->slab_next;
	memset(n, 0, sizeof(*n));
	if (!node_init(n, parent, name, name_len, plen, is_dir))
		return NULL; /* the memory stays free for the next one */
	n->in_slab = true;
	t->slab_next += bytes;
	t->slab_left -= bytes;
	return n;
}

void tree_slabs_move(struct tree *to, struct tree *from)
{
	struct slab **tail = &from->slabs;

	while (*tail)
		tail = &(*tail)->next;
	*tail = to->slabs;
	to->slabs = from->slabs;
	from->slabs = NULL;
	from->slab_next = NULL;
	from->slab_left = 0;
}

void tree_node_free(struct node *n)
{
	pthread_mutex_destroy(&n->lock);
	if (n->ra) {
		readahead_done(n->ra);
		free(n->ra);
	}
	tensor_ahead_free(n->ta);
	if (n->dir)
		free(n->dir->children);
	free(n->dir);
	free(n->etag);
	free(n->pinned);
	decoded_unref(n->dec);
	verify_free(n->verify);
	if (!n->in_slab)
		free(n); /* the key with it */
}

static struct readahead shared_ra;
static pthread_once_t shared_ra_once = PTHREAD_ONCE_INIT;

static void shared_ra_init(void)
{
	readahead_init(&shared_ra);
}

bool node_version(struct node *n, uint64_t *ret_size, uint32_t *ret_gen)
{
	bool changed;

	pthread_mutex_lock(&n->lock);
	*ret_size = n->size;
	*ret_gen = n->generation;
	changed = n->changed;
	pthread_mutex_unlock(&n->lock);
	return changed;
}

struct readahead *node_readahead(struct node *n)
{
	struct readahead *ra = __atomic_load_n(&n->ra, __ATOMIC_ACQUIRE), *exp;

	if (ra)
		return ra;
	ra = malloc(sizeof(*ra));
	if (!ra) {
		pthread_once(&shared_ra_once, shared_ra_init);
		return &shared_ra;
	}
	readahead_init(ra);
	exp = NULL;
	if (__atomic_compare_exchange_n(&n->ra, &exp, ra, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return ra;
	readahead_done(ra); /* another thread made it first */
	free(ra);
	return exp;
}

int tree_grow(void *arrp, size_t *cap, size_t need, size_t size)
{
	void **arr = arrp;
	size_t ncap = *cap ? *cap : 8;
	void *a;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	a = realloc(*arr, ncap * size);
	if (!a)
		return -ENOMEM;
	*arr = a;
	*cap = ncap;
	return 0;
}

/* Link @n into an unshared @t: give it the next inode, put it in its
 * parent's children and (unless @defer: see index_stale) the index. */
static int node_link(struct tree *t, struct node *n, bool defer)
{
	struct tree_dir *pd = n->parent->dir;

	if (tree_grow(&t->nodes, &t->cap, t->count + 1, sizeof(*t->nodes)))
		return -ENOMEM;
	if (!defer && index_catch_up(t))
		return -ENOMEM;
	if (n != n->parent) {
		if (tree_grow(&pd->children, &pd->cap, pd->n + 1,
			      sizeof(*pd->children)))
			return -ENOMEM;
		if (!defer && 2 * (t->nused + 1) > t->nslots) {
			size_t ns = tree_slots_for(t->nused + 1);
			struct node **s = tree_index_build(t, ns);

			if (!s)
				return -ENOMEM;
			free(t->slots);
			t->slots = s;
			t->nslots = ns;
		}
	}
	t->nodes[t->count++] = n;
	n->ino = t->count;
	if (n != n->parent) {
		if (pd->n &&
		    strcmp(pd->children[pd->n - 1]->name, n->name) >= 0)
			pd->unsorted = true;
		pd->children[pd->n++] = n;
		if (defer)
			t->index_stale = true;
		else
			*tree_slot_of_node(t->slots, t->nslots, n) = n;
		t->nused++;
	}
	return 0;
}

int tree_new(struct tree **ret)
{
	struct tree *t = calloc(1, sizeof(*t));
	struct node *root;

	if (!t)
		return -ENOMEM;
	pthread_rwlock_init(&t->lock, NULL);
	pthread_mutex_init(&t->merge, NULL);
	pthread_mutex_init(&t->listing, NULL);
	pthread_cond_init(&t->listed, NULL);
	root = tree_node_alloc(NULL, "", 0, true);
	if (!root || node_link(t, root, false)) {
		if (root)
			tree_node_free(root);
		tree_free(t);
		return -ENOMEM;
	}
	t->root = root;
	*ret = t;
	return 0;
}

void tree_free(struct tree *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->count; i++)
		if (t->nodes[i]) /* NULL: moved out by a merge */
			tree_node_free(t->nodes[i]);
	free(t->nodes);
	free(t->slots);
	while (t->slabs) {
		struct slab *s = t->slabs;

		t->slabs = s->next;
		free(s);
	}
	pthread_mutex_destroy(&t->merge);
	pthread_mutex_destroy(&t->listing);
	pthread_cond_destroy(&t->listed);
	pthread_rwlock_destroy(&t->lock);
	free(t);
}

bool tree_name_ok(const char *name, size_t len)
{
	size_t i;

	if (len == 0 || len > 255)
		return false;
	if ((len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '/' || c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* New child @name (@len bytes, a valid name) of directory @dir of an
 * unshared @t, not there yet. */
static int child_new(struct tree *t, struct node *dir, const char *name,
		     size_t len, bool is_dir, uint64_t size,
		     struct timespec mtime, const char *etag, bool defer,
		     struct node **ret_node)
{
	struct node *n = node_new_in(t, dir, name, len, is_dir);

	if (!n)
		return -ENOMEM;
	if (!is_dir && etag && !(n->etag = strdup(etag))) {
		tree_node_free(n);
		return -ENOMEM;
	}
	if (node_link(t, n, defer)) {
		tree_node_free(n);
		return -ENOMEM;
	}
	n->mtime = mtime;
	if (!is_dir) {
		n->size = size;
		t->bytes += size;
		t->files++;
	}
	*ret_node = n;
	return 0;
}

int tree_add(struct tree *t, const char *key, bool is_dir, uint64_t size,
	     struct timespec mtime, const char *etag, struct node **ret_node)
{
	struct node *dir = tree_root(t), *n = NULL;
	const char *p = key;

	if (!*key || size > (uint64_t)INT64_MAX)
		return -EINVAL;
	/* Validate every component before changing anything. */
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);

		if (!tree_name_ok(p, len))
			return -EINVAL;
		p += len;
		if (*p == '/')
			p++;
	}
	p = key;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		bool last = p[len] == '\0';
		bool want_dir = last ? is_dir : true;
		int err;

		n = tree_child_find(t, dir, p, len);
		if (n && n->is_dir != want_dir)
			return -EEXIST;
		if (n && last && !is_dir)
			return -EEXIST;
		if (!n && (err = child_new(t, dir, p, len, want_dir, size,
					   mtime, etag, false, &n)))
			return err;
		dir = n;
		p += len;
		if (*p == '/')
			p++;
	}
	if (ret_node)
		*ret_node = n;
	return 0;
}

/* Whether @name (@len bytes) sorts after @prev (strcmp() order). */
static bool name_after(const char *prev, const char *name, size_t len)
{
	/* A shorter @prev: its NUL sorts first. */
	return strncmp(prev, name, len) < 0;
}

int tree_add_child(struct tree *t, struct node *dir, const char *name,
		   size_t len, bool is_dir, uint64_t size,
		   struct timespec mtime, const char *etag,
		   struct node **ret_node)
{
	struct tree_dir *d = dir->dir;
	struct node *n;
	bool in_order;

	if (!dir->is_dir || !tree_name_ok(name, len) ||
	    size > (uint64_t)INT64_MAX)
		return -EINVAL;
	/* Listings mostly come sorted: a name after every sibling's is new,
	 * and is indexed only if the tree is ever looked up by name. */
	in_order =
		!d->unsorted &&
		(!d->n || name_after(d->children[d->n - 1]->name, name, len));
	if (!in_order && tree_child_find(t, dir, name, len))
		return -EEXIST;
	return child_new(t, dir, name, len, is_dir, size, mtime, etag, in_order,
			 ret_node ? ret_node : &n);
}

void tree_truncate(struct tree *t, size_t count)
{
	if (count >= t->count)
		return;
	while (t->count > count) {
		struct node *n = t->nodes[--t->count];

		/* Children are appended in inode order: the last one. */
		n->parent->dir->n--;
		t->nused--;
		if (!n->is_dir) {
			t->files--;
			t->bytes -= n->size;
		}
		tree_node_free(n);
	}
	/* The index may name them: built again when next needed. */
	free(t->slots);
	t->slots = NULL;
	t->nslots = 0;
	t->index_stale = t->nused > 0;
}

void tree_set_size(struct tree *t, struct node *n, uint64_t size)
{
	pthread_mutex_lock(&n->lock);
	t->bytes = t->bytes - n->size + size;
	n->size = size;
	pthread_mutex_unlock(&n->lock);
}

int tree_trim_name(struct tree *t, struct node *n, size_t len)
{
	size_t mask = t->nslots - 1, i, j;
	struct node **s;

	if (n == n->parent || n->is_dir || !len || len >= strlen(n->name))
		return -EINVAL;
	if (index_catch_up(t))
		return -ENOMEM;
	if (!t->nslots)
		return -EINVAL;
	if (tree_child_find(t, n->parent, n->name, len))
		return -EEXIST;
	/* Out of the index (linear probing: shift the run back)... */
	s = tree_slot_of_node(t->slots, t->nslots, n);
	i = (size_t)(s - t->slots);
	t->slots[i] = NULL;
	for (j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
		struct node *m = t->slots[j];
		size_t k = hash_of(m->parent, m->hash) & mask;

		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		t->slots[i] = m;
		t->slots[j] = NULL;
		i = j;
	}
	/* ...and back under the new name (the key shrinks in place). */
	n->name[len] = '\0';
	n->hash = name_hash(n->name, len);
	n->parent->dir->unsorted = true;
	*tree_slot_of_node(t->slots, t->nslots, n) = n;
	return 0;
}

static int cmp_node(const void *a, const void *b)
{
	const struct node *x = *(struct node *const *)a;
	const struct node *y = *(struct node *const *)b;

	return strcmp(x->name, y->name);
}

int tree_finish(struct tree *t)
{
	tree_sort(t);
	return index_catch_up(t);
}

void tree_sort(struct tree *t)
{
	size_t i;

	for (i = 0; i < t->count; i++) {
		struct tree_dir *d = t->nodes[i]->dir;

		size_t k = 1;

		/* Listings mostly come sorted (S3's do): check first. */
		while (d && k < d->n &&
		       cmp_node(&d->children[k - 1], &d->children[k]) <= 0)
			k++;
		if (d && k < d->n)
			qsort(d->children, d->n, sizeof(*d->children),
			      cmp_node);
	}
}

struct node *tree_get(struct tree *t, uint64_t ino)
{
	struct node *n = NULL;

	pthread_rwlock_rdlock(&t->lock);
	if (ino > 0 && ino <= t->count)
		n = t->nodes[ino - 1];
	pthread_rwlock_unlock(&t->lock);
	return n;
}

struct node *tree_root(const struct tree *t)
{
	return t->root; /* never changes: the first node */
}

struct node *tree_lookup(struct tree *t, const struct node *dir,
			 const char *name)
{
	struct node *n;

	pthread_rwlock_rdlock(&t->lock);
	n = tree_child_find(t, dir, name, strlen(name));
	pthread_rwlock_unlock(&t->lock);
	return n;
}

void tree_read_lock(struct tree *t)
{
	pthread_rwlock_rdlock(&t->lock);
}

void tree_read_unlock(struct tree *t)
{
	pthread_rwlock_unlock(&t->lock);
}

size_t tree_nchildren(const struct node *dir)
{
	return dir->dir ? dir->dir->n : 0;
}

struct node *tree_child(const struct node *dir, size_t i)
{
	return dir->dir->children[i];
}

size_t tree_count(struct tree *t)
{
	size_t n;

	pthread_rwlock_rdlock(&t->lock);
	n = t->count;
	pthread_rwlock_unlock(&t->lock);
	return n;
}

size_t tree_files(struct tree *t)
{
	size_t n;

	pthread_rwlock_rdlock(&t->lock);
	n = t->files;
	pthread_rwlock_unlock(&t->lock);
	return n;
}

uint64_t tree_bytes(struct tree *t)
{
	uint64_t n;

	pthread_rwlock_rdlock(&t->lock);
	n = t->bytes;
	pthread_rwlock_unlock(&t->lock);
	return n;
}

void tree_stats(struct tree *t, struct tree_stats *ret)
{
	pthread_rwlock_rdlock(&t->lock);
	*ret = t->stats;
	pthread_rwlock_unlock(&t->lock);
}

void tree_mark_unlisted(struct tree *t, struct node *dir)
{
	(void)t;
	if (dir->dir)
		dir->dir->state = DIR_UNLISTED;
}

int tree_list_begin(struct tree *t, struct node *dir)
{
	struct tree_dir *d = dir->dir;
	unsigned fails;
	int r;

	if (!d || __atomic_load_n(&d->state, __ATOMIC_ACQUIRE) == DIR_LISTED)
		return 0;
	pthread_mutex_lock(&t->listing);
	fails = d->fails;
	while (d->state == DIR_LISTING)
		pthread_cond_wait(&t->listed, &t->listing);
	if (d->state == DIR_LISTED)
		r = 0;
	else if (d->fails != fails)
		r = -EIO; /* the listing this waited for failed */
	else {
		__atomic_store_n(&d->state, DIR_LISTING, __ATOMIC_RELAXED);
		r = 1;
	}
	pthread_mutex_unlock(&t->listing);
	return r;
}

void tree_list_end(struct tree *t, struct node *dir, bool ok)
{
	struct tree_dir *d = dir->dir;

	pthread_mutex_lock(&t->listing);
	if (ok) {
		__atomic_store_n(&d->state, DIR_LISTED, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&d->state, DIR_UNLISTED, __ATOMIC_RELAXED);
		d->fails++;
	}
	pthread_cond_broadcast(&t->listed);
	pthread_mutex_unlock(&t->listing);
}

bool tree_linked(struct tree *t, const struct node *n)
{
	bool r;

	pthread_rwlock_rdlock(&t->lock);
	r = !n->unlinked;
	pthread_rwlock_unlock(&t->lock);
	return r;
}

bool tree_dir_listed(const struct node *dir)
{
	return !dir->dir || __atomic_load_n(&dir->dir->state,
					    __ATOMIC_ACQUIRE) == DIR_LISTED;
}

int tree_listed_dirs(struct tree *t, struct node ***ret, size_t *ret_n)
{
	struct node **a;
	size_t i, n = 0;

	pthread_rwlock_rdlock(&t->lock);
	a = malloc(t->count * sizeof(*a));
	for (i = 0; a && i < t->count; i++) {
		struct node *d = t->nodes[i];

		if (d->dir && !d->unlinked && tree_dir_listed(d))
			a[n++] = d;
	}
	pthread_rwlock_unlock(&t->lock);
	if (!a)
		return -ENOMEM;
	*ret = a;
	*ret_n = n;
	return 0;
}

void tree_changes_done(struct tree_changes *c)
{
	free(c->changed);
	free(c->added);
	c->changed = c->added = NULL;
	c->nchanged = c->nadded = c->nconflicts = 0;
}
