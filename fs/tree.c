#include "tree.h"
#include "zstd_object.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* A merge holds the write lock for about this long at a time. */
#define STEP_NS 2000000ull

struct tree_dir {
	struct node **children; /* append-only; sorted by tree_finish() */
	size_t n;
	size_t cap;
	int state; /* enum dir_state; atomic reads, changes under listing */
	unsigned fails; /* failed listings; under t->listing */
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
	size_t nused;
	uint64_t bytes; /* sum of file sizes */
	size_t files;
	struct tree_stats stats;
	/* Directory listings in flight (tree_list_begin()): a state change
	 * broadcasts @listed. */
	pthread_mutex_t listing;
	pthread_cond_t listed;
};

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t hash_of(const struct node *dir, const char *name, size_t len)
{
	return (size_t)XXH3_64bits_withSeed(name, len, dir->ino);
}

/* The slot holding child @name (@len bytes) of @dir, or the empty slot
 * where it would go. */
static struct node **slot_of(struct node **slots, size_t nslots,
			     const struct node *dir, const char *name,
			     size_t len)
{
	size_t mask = nslots - 1, i = hash_of(dir, name, len) & mask;

	for (;; i = (i + 1) & mask) {
		struct node *n = slots[i];

		if (!n || (n->parent == dir && !strncmp(n->name, name, len) &&
			   n->name[len] == '\0'))
			return &slots[i];
	}
}

static struct node *child_find(const struct tree *t, const struct node *dir,
			       const char *name, size_t len)
{
	if (!t->nslots || !dir->is_dir)
		return NULL;
	return *slot_of(t->slots, t->nslots, dir, name, len);
}

/* A new index of @nslots slots holding every linked node of @t. */
static struct node **index_build(const struct tree *t, size_t nslots)
{
	struct node **slots = calloc(nslots, sizeof(*slots));
	size_t i;

	if (!slots)
		return NULL;
	for (i = 1; i < t->count; i++) {
		struct node *n = t->nodes[i];

		if (!n->unlinked)
			*slot_of(slots, nslots, n->parent, n->name,
				 strlen(n->name)) = n;
	}
	return slots;
}

/* Slots enough for @n entries at most half full. */
static size_t slots_for(size_t n)
{
	size_t s = 64;

	while (s < 2 * n)
		s *= 2;
	return s;
}

/* A node for child @name of @parent (NULL: the root), not yet linked; its
 * key is stored in the same allocation. */
static struct node *node_alloc(struct node *parent, const char *name,
			       size_t name_len, bool is_dir)
{
	size_t plen = parent && *parent->key ? strlen(parent->key) + 1 : 0;
	struct node *n = calloc(1, sizeof(*n) + plen + name_len + 1);

	if (!n)
		return NULL;
	if (is_dir && !(n->dir = calloc(1, sizeof(*n->dir)))) {
		free(n);
		return NULL;
	}
	n->key = (char *)(n + 1);
	if (plen) {
		memcpy(n->key, parent->key, plen - 1);
		n->key[plen - 1] = '/';
	}
	memcpy(n->key + plen, name, name_len);
	n->key[plen + name_len] = '\0';
	n->name = n->key + plen;
	n->is_dir = is_dir;
	n->parent = parent ? parent : n;
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

static void node_free(struct node *n)
{
	pthread_mutex_destroy(&n->lock);
	if (n->ra) {
		readahead_done(n->ra);
		free(n->ra);
	}
	if (n->dir)
		free(n->dir->children);
	free(n->dir);
	free(n->etag);
	zstd_object_unref(n->zobj);
	free(n); /* the key with it */
}

static struct readahead shared_ra;
static pthread_once_t shared_ra_once = PTHREAD_ONCE_INIT;

static void shared_ra_init(void)
{
	readahead_init(&shared_ra);
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

static int grow(void *arrp, size_t *cap, size_t need, size_t size)
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
 * parent's children and the index. */
static int node_link(struct tree *t, struct node *n)
{
	struct tree_dir *pd = n->parent->dir;

	if (grow(&t->nodes, &t->cap, t->count + 1, sizeof(*t->nodes)))
		return -ENOMEM;
	if (n != n->parent) {
		if (grow(&pd->children, &pd->cap, pd->n + 1,
			 sizeof(*pd->children)))
			return -ENOMEM;
		if (2 * (t->nused + 1) > t->nslots) {
			size_t ns = slots_for(t->nused + 1);
			struct node **s = index_build(t, ns);

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
		pd->children[pd->n++] = n;
		*slot_of(t->slots, t->nslots, n->parent, n->name,
			 strlen(n->name)) = n;
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
	root = node_alloc(NULL, "", 0, true);
	if (!root || node_link(t, root)) {
		if (root)
			node_free(root);
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
		node_free(t->nodes[i]);
	free(t->nodes);
	free(t->slots);
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

		n = child_find(t, dir, p, len);
		if (n && n->is_dir != want_dir)
			return -EEXIST;
		if (n && last && !is_dir)
			return -EEXIST;
		if (!n) {
			n = node_alloc(dir, p, len, want_dir);
			if (!n)
				return -ENOMEM;
			if (!want_dir && etag && !(n->etag = strdup(etag))) {
				node_free(n);
				return -ENOMEM;
			}
			if (node_link(t, n)) {
				node_free(n);
				return -ENOMEM;
			}
			n->mtime = mtime;
			if (!want_dir) {
				n->size = size;
				t->bytes += size;
				t->files++;
			}
		}
		dir = n;
		p += len;
		if (*p == '/')
			p++;
	}
	if (ret_node)
		*ret_node = n;
	return 0;
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

	if (n == n->parent || n->is_dir || !len || len >= strlen(n->name) ||
	    !t->nslots)
		return -EINVAL;
	if (child_find(t, n->parent, n->name, len))
		return -EEXIST;
	/* Out of the index (linear probing: shift the run back)... */
	s = slot_of(t->slots, t->nslots, n->parent, n->name, strlen(n->name));
	i = (size_t)(s - t->slots);
	t->slots[i] = NULL;
	for (j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
		struct node *m = t->slots[j];
		size_t k = hash_of(m->parent, m->name, strlen(m->name)) & mask;

		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		t->slots[i] = m;
		t->slots[j] = NULL;
		i = j;
	}
	/* ...and back under the new name (the key shrinks in place). */
	n->name[len] = '\0';
	*slot_of(t->slots, t->nslots, n->parent, n->name, len) = n;
	return 0;
}

static int cmp_node(const void *a, const void *b)
{
	const struct node *x = *(struct node *const *)a;
	const struct node *y = *(struct node *const *)b;

	return strcmp(x->name, y->name);
}

void tree_finish(struct tree *t)
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
	n = child_find(t, dir, name, strlen(name));
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

/*
 * Merging. A plan (a list of ops) is made holding only t->merge: the merge
 * is the only writer, so it reads the shape unlocked while lookups go on.
 * Everything an op needs is allocated in the plan, so applying one cannot
 * fail; ops are then applied under the write lock in steps of STEP_NS.
 */
enum op_kind {
	OP_SWAP_NODES, /* install a larger nodes array */
	OP_SWAP_INDEX, /* install a larger index */
	OP_GROW,       /* install a larger children array in a directory */
	OP_ADD,	       /* link new node n */
	OP_REPLACE,    /* link new node n in place of old (other type) */
	OP_UPDATE,     /* file n has a new version */
	OP_GONE,       /* file n is gone from the source */
};

struct op {
	enum op_kind kind;
	struct node *n;
	struct node *old; /* OP_REPLACE */
	size_t index;	  /* OP_REPLACE: old's place among its siblings */
	void *arr;	  /* OP_SWAP_*, OP_GROW: the new array, then the old */
	size_t cap;	  /* OP_SWAP_*, OP_GROW */
	char *etag;	  /* OP_UPDATE */
	uint64_t size;	  /* OP_UPDATE */
	struct timespec mtime;	  /* OP_UPDATE */
	struct zstd_object *zobj; /* OP_UPDATE: the new one, then the old */
};

struct plan {
	struct op *ops;
	size_t nops;
	size_t cap;
	size_t nchanged; /* upper bounds for tree_changes */
	size_t nadded;
};

static struct op *plan_push(struct plan *p, enum op_kind kind, struct node *n)
{
	struct op *o;

	if (grow(&p->ops, &p->cap, p->nops + 1, sizeof(*p->ops)))
		return NULL;
	o = &p->ops[p->nops++];
	memset(o, 0, sizeof(*o));
	o->kind = kind;
	o->n = n;
	return o;
}

/* Free what a plan allocated and did not apply (all of it on failure,
 * only the replaced arrays after success). */
static void plan_free(struct plan *p, bool applied)
{
	size_t i;

	for (i = 0; i < p->nops; i++) {
		struct op *o = &p->ops[i];

		switch (o->kind) {
		case OP_SWAP_NODES:
		case OP_SWAP_INDEX:
		case OP_GROW:
			free(o->arr);
			break;
		case OP_ADD:
		case OP_REPLACE:
			if (!applied)
				node_free(o->n);
			break;
		case OP_UPDATE:
			if (!applied)
				free(o->etag);
			zstd_object_unref(o->zobj);
			break;
		case OP_GONE:
			break;
		}
	}
	free(p->ops);
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static size_t index_in_parent(const struct node *n)
{
	const struct tree_dir *d = n->parent->dir;
	size_t i;

	for (i = 0; i < d->n; i++)
		if (d->children[i] == n)
			return i;
	return 0; /* not reached: a linked node is among its siblings */
}

/* The node at @key in @t (a tree nobody changes meanwhile), or NULL. */
static struct node *find_key(const struct tree *t, const char *key)
{
	struct node *n = tree_root(t);

	while (n && *key) {
		const char *slash = strchr(key, '/');
		size_t len = slash ? (size_t)(slash - key) : strlen(key);

		n = child_find(t, n, key, len);
		key += len + (slash ? 1 : 0);
	}
	return n;
}

/* Whether file @n is still the version it was listed as. */
static bool still_there(struct node *n)
{
	bool r;

	pthread_mutex_lock(&n->lock);
	r = !n->changed;
	pthread_mutex_unlock(&n->lock);
	return r;
}

/*
 * Plan merging @fresh into @t: all of it (@scope NULL), or only what
 * @fresh holds below directory @scope of @t, whose children it lists
 * (one level: what is not in @fresh under @scope is gone from there).
 */
static int plan_merge(struct tree *t, struct node *scope,
		      const struct tree *fresh, struct plan *p)
{
	struct node **map = calloc(fresh->count, sizeof(*map)), *fs = NULL;
	unsigned char *seen = scope ? NULL : calloc(t->count, 1);
	/* new children per directory, by its index in @fresh */
	size_t *adds = calloc(fresh->count, sizeof(*adds));
	size_t next_ino = t->count + 1, nlinks = 0, i, k, norder = 1;
	size_t *order = NULL; /* fresh nodes to visit, by index */
	int err = -ENOMEM;

	if (!map || (!scope && !seen) || !adds)
		goto out;
	if (!scope || scope == tree_root(t)) {
		map[0] = tree_root(t);
		fs = tree_root(fresh);
		/* The root's owner and mode (file://), from its first
		 * listing, at mount: nothing reads them before. */
		if (scope && !scope->has_perm && fs->has_perm) {
			scope->has_perm = true;
			scope->perm = fs->perm;
			scope->uid = fs->uid;
			scope->gid = fs->gid;
		}
	} else if ((fs = find_key(fresh, scope->key)) && fs->is_dir) {
		map[fs->ino - 1] = scope;
	} else {
		fs = NULL; /* nothing listed there: an empty directory */
	}
	if (seen)
		seen[0] = 1;
	/* Parents come before their children in fresh->nodes; below
	 * @scope, walked breadth first in name order, so that a directory
	 * listed lazily reads in name order too. */
	if (scope && fs) {
		order = malloc(fresh->count * sizeof(*order));
		if (!order)
			goto out;
		order[0] = fs->ino - 1; /* @scope itself: skipped below */
		for (k = 0; k < norder; k++) {
			const struct tree_dir *d = fresh->nodes[order[k]]->dir;

			for (i = 0; d && i < d->n; i++)
				order[norder++] = d->children[i]->ino - 1;
		}
	}
	if (!scope)
		norder = fresh->count;
	for (k = 1; fs && k < norder; k++) {
		const struct node *f;

		i = order ? order[k] : k;
		f = fresh->nodes[i];
		struct node *dir = map[f->parent->ino - 1], *n = NULL, *m;
		size_t len = strlen(f->name);
		struct op *o;

		if (!dir || map[i])
			continue; /* outside @scope, or @scope itself */
		if (dir->ino <= t->count)
			n = child_find(t, dir, f->name, len);
		if (n && n->is_dir == f->is_dir) {
			bool differs;

			map[i] = n;
			if (seen)
				seen[n->ino - 1] = 1;
			if (f->is_dir)
				continue;
			pthread_mutex_lock(&n->lock);
			differs = n->size != f->size ||
				  !same(n->etag, f->etag) || n->changed ||
				  !n->zobj != !f->zobj;
			pthread_mutex_unlock(&n->lock);
			if (!differs)
				continue;
			o = plan_push(p, OP_UPDATE, n);
			if (!o)
				goto out;
			o->size = f->size;
			o->mtime = f->mtime;
			o->zobj = zstd_object_ref(f->zobj);
			if (f->etag && !(o->etag = strdup(f->etag)))
				goto out;
			p->nchanged++;
			continue;
		}
		m = node_alloc(dir, f->name, len, f->is_dir);
		if (!m)
			goto out;
		o = plan_push(p, n ? OP_REPLACE : OP_ADD, m);
		if (!o) {
			node_free(m);
			goto out;
		}
		m->ino = next_ino++;
		m->mtime = f->mtime;
		m->size = f->size;
		m->has_perm = f->has_perm; /* file:// owner and mode */
		m->perm = f->perm;
		m->uid = f->uid;
		m->gid = f->gid;
		m->zobj = zstd_object_ref(f->zobj);
		/* A one-level listing says nothing of what a new
		 * subdirectory holds: it is listed when first looked in. */
		if (m->dir)
			m->dir->state = scope ? DIR_UNLISTED : DIR_LISTED;
		if (f->etag && !(m->etag = strdup(f->etag)))
			goto out;
		map[i] = m;
		p->nadded++;
		if (n) {
			o->old = n;
			o->index = index_in_parent(n);
		} else {
			adds[f->parent->ino - 1]++;
			nlinks++;
		}
	}
	/* Files gone from the source (replaced ones included). */
	if (scope) {
		const struct tree_dir *d = scope->dir;

		for (i = 0; i < d->n; i++) {
			struct node *n = d->children[i];
			const struct node *f =
				fs ? child_find(fresh, fs, n->name,
						strlen(n->name))
				   : NULL;

			if (n->is_dir || (f && !f->is_dir) || !still_there(n))
				continue;
			if (!plan_push(p, OP_GONE, n))
				goto out;
			p->nchanged++;
		}
	}
	for (i = 1; !scope && i < t->count; i++) {
		struct node *n = t->nodes[i];

		if (seen[i] || n->is_dir || !still_there(n))
			continue;
		if (!plan_push(p, OP_GONE, n))
			goto out;
		p->nchanged++;
	}
	/* Room: new directories get theirs now, unlinked yet; existing ones,
	 * the nodes array and the index get copies swapped in first. */
	for (i = 0; i < fresh->count; i++) {
		struct node *m = map[i];
		struct tree_dir *d = m ? m->dir : NULL;
		size_t cap;
		struct op *o;

		if (!adds[i] || !d)
			continue;
		if (m->ino > t->count) { /* new in this merge */
			d->children = malloc(adds[i] * sizeof(*d->children));
			if (!d->children)
				goto out;
			d->cap = adds[i];
			continue;
		}
		if (d->n + adds[i] <= d->cap)
			continue;
		cap = d->cap;
		while (cap < d->n + adds[i])
			cap = cap ? 2 * cap : 8;
		o = plan_push(p, OP_GROW, m);
		if (!o || !(o->arr = malloc(cap * sizeof(struct node *))))
			goto out;
		if (d->n) /* an empty one has no array yet */
			memcpy(o->arr, d->children,
			       d->n * sizeof(struct node *));
		o->cap = cap;
	}
	if (next_ino - 1 > t->cap) {
		size_t cap = t->cap;
		struct op *o;

		while (cap < next_ino - 1)
			cap *= 2;
		o = plan_push(p, OP_SWAP_NODES, NULL);
		if (!o || !(o->arr = malloc(cap * sizeof(*t->nodes))))
			goto out;
		memcpy(o->arr, t->nodes, t->count * sizeof(*t->nodes));
		o->cap = cap;
	}
	if (2 * (t->nused + nlinks) > t->nslots) {
		struct op *o = plan_push(p, OP_SWAP_INDEX, NULL);

		if (!o)
			goto out;
		o->cap = slots_for(t->nused + nlinks);
		if (!(o->arr = index_build(t, o->cap)))
			goto out;
	}
	err = 0;
out:
	free(order);
	free(map);
	free(seen);
	free(adds);
	return err;
}

static void apply(struct tree *t, struct op *o, struct tree_changes *c)
{
	struct node *n = o->n, *old = o->old;
	void *prev;

	switch (o->kind) {
	case OP_SWAP_NODES:
		prev = t->nodes;
		t->nodes = o->arr;
		t->cap = o->cap;
		o->arr = prev;
		break;
	case OP_SWAP_INDEX:
		prev = t->slots;
		t->slots = o->arr;
		t->nslots = o->cap;
		o->arr = prev;
		break;
	case OP_GROW:
		prev = n->dir->children;
		n->dir->children = o->arr;
		n->dir->cap = o->cap;
		o->arr = prev;
		break;
	case OP_ADD:
	case OP_REPLACE:
		t->nodes[t->count++] = n; /* n->ino == t->count: planned so */
		if (old) {
			n->parent->dir->children[o->index] = n;
			*slot_of(t->slots, t->nslots, n->parent, n->name,
				 strlen(n->name)) = n;
			old->unlinked = true;
			c->nconflicts++;
			if (!old->is_dir) {
				t->files--;
				t->bytes -= old->size;
			}
		} else {
			struct tree_dir *pd = n->parent->dir;

			pd->children[pd->n++] = n;
			*slot_of(t->slots, t->nslots, n->parent, n->name,
				 strlen(n->name)) = n;
			t->nused++;
		}
		if (!n->is_dir) {
			t->files++;
			t->bytes += n->size;
		}
		c->added[c->nadded++] = n;
		break;
	case OP_UPDATE:
		pthread_mutex_lock(&n->lock);
		if (!n->unlinked)
			t->bytes = t->bytes - n->size + o->size;
		free(n->etag);
		n->etag = o->etag;
		o->etag = NULL;
		n->size = o->size;
		n->mtime = o->mtime;
		prev = n->zobj;
		n->zobj = o->zobj;
		o->zobj = prev;
		n->changed = false;
		n->generation++;
		pthread_mutex_unlock(&n->lock);
		c->changed[c->nchanged++] = n;
		break;
	case OP_GONE:
		pthread_mutex_lock(&n->lock);
		if (!n->changed) {
			n->changed = true;
			c->changed[c->nchanged++] = n;
		}
		pthread_mutex_unlock(&n->lock);
		break;
	}
}

/* Swaps first (they make room), then the rest in plan order. */
static int op_pass(const struct op *o)
{
	return o->kind <= OP_GROW ? 0 : 1;
}

static int merge(struct tree *t, struct node *scope, const struct tree *fresh,
		 struct tree_changes *ret)
{
	struct tree_changes c = { 0 };
	struct plan p = { 0 };
	int err, pass;

	pthread_mutex_lock(&t->merge);
	err = plan_merge(t, scope, fresh, &p);
	if (!err) {
		c.changed = malloc((p.nchanged + 1) * sizeof(*c.changed));
		c.added = malloc((p.nadded + 1) * sizeof(*c.added));
		if (!c.changed || !c.added)
			err = -ENOMEM;
	}
	if (err) {
		plan_free(&p, false);
		tree_changes_done(&c);
		pthread_mutex_unlock(&t->merge);
		return err;
	}
	for (pass = 0; pass < 2; pass++) {
		size_t k = 0;

		while (k < p.nops) {
			uint64_t start, cpu, held;
			unsigned n = 0;

			pthread_rwlock_wrlock(&t->lock);
			start = clock_ns(CLOCK_MONOTONIC);
			cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
			for (; k < p.nops; k++) {
				if (op_pass(&p.ops[k]) != pass)
					continue;
				apply(t, &p.ops[k], &c);
				if (!(++n & 63) &&
				    clock_ns(CLOCK_MONOTONIC) - start >=
					    STEP_NS) {
					k++;
					break;
				}
			}
			held = clock_ns(CLOCK_MONOTONIC) - start;
			if (held > t->stats.max_hold_ns)
				t->stats.max_hold_ns = held;
			cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu;
			if (cpu > t->stats.max_hold_cpu_ns)
				t->stats.max_hold_cpu_ns = cpu;
			t->stats.steps++;
			pthread_rwlock_unlock(&t->lock);
		}
	}
	plan_free(&p, true);
	pthread_mutex_unlock(&t->merge);
	*ret = c;
	return 0;
}

int tree_merge(struct tree *t, const struct tree *fresh,
	       struct tree_changes *ret)
{
	return merge(t, NULL, fresh, ret);
}

int tree_merge_dir(struct tree *t, struct node *dir, const struct tree *fresh,
		   struct tree_changes *ret)
{
	if (!dir->is_dir)
		return -ENOTDIR;
	return merge(t, dir, fresh, ret);
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
