/* Merging a new listing into the tree: tree_merge() and tree_merge_dir()
 * (the contract is in tree.h). Private state in tree_priv.h. */
#include "tree.h"
#include "tree_priv.h"
#include "decoder.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A merge holds the write lock for about this long at a time. */
#define STEP_NS 2000000ull

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
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
	struct timespec mtime; /* OP_UPDATE */
	struct decoded *dec;   /* OP_UPDATE: the new one, then the old */
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

	if (tree_grow(&p->ops, &p->cap, p->nops + 1, sizeof(*p->ops)))
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
				tree_node_free(o->n);
			break;
		case OP_UPDATE:
			if (!applied)
				free(o->etag);
			decoded_unref(o->dec);
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
static struct node *find_key(struct tree *t, const char *key)
{
	struct node *n = tree_root(t);

	while (n && *key) {
		const char *slash = strchr(key, '/');
		size_t len = slash ? (size_t)(slash - key) : strlen(key);

		n = tree_child_find(t, n, key, len);
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

/* A merge being planned: plan_merge() and its steps. */
struct planner {
	struct tree *t;
	struct node *scope; /* NULL: all of @fresh */
	struct tree *fresh;
	struct plan *p;
	struct node *fs;     /* @scope's node in @fresh, or NULL: none */
	struct node **map;   /* fresh node (by index) -> its node in t */
	unsigned char *seen; /* whole merges: nodes of t in @fresh */
	size_t *adds;  /* new children per directory, by its index in fresh */
	size_t *order; /* fresh nodes to visit, by index; NULL: all */
	size_t norder;
	size_t next_ino, nlinks;
};

/* Where the merge starts: @fresh's root, or @scope's node in @fresh. */
static void plan_start(struct planner *pl)
{
	struct tree *t = pl->t;
	struct node *scope = pl->scope;

	if (!scope || scope == tree_root(t)) {
		pl->map[0] = tree_root(t);
		pl->fs = tree_root(pl->fresh);
		/* The root's owner and mode (file://), from its first
		 * listing, at mount: nothing reads them before. */
		if (scope && !scope->has_perm && pl->fs->has_perm) {
			scope->has_perm = true;
			scope->perm = pl->fs->perm;
			scope->uid = pl->fs->uid;
			scope->gid = pl->fs->gid;
		}
	} else if ((pl->fs = find_key(pl->fresh, scope->key)) &&
		   pl->fs->is_dir) {
		pl->map[pl->fs->ino - 1] = scope;
	} else {
		pl->fs = NULL; /* nothing listed there: an empty directory */
	}
	if (pl->seen)
		pl->seen[0] = 1;
}

/* The order to visit @fresh in. Parents come before their children in
 * fresh->nodes; below @scope, walked breadth first in name order, so
 * that a directory listed lazily reads in name order too. */
static int plan_order(struct planner *pl)
{
	const struct tree *fresh = pl->fresh;
	size_t i, k;

	if (!pl->scope) {
		pl->norder = fresh->count;
		return 0;
	}
	if (!pl->fs)
		return 0;
	pl->order = malloc(fresh->count * sizeof(*pl->order));
	if (!pl->order)
		return -ENOMEM;
	pl->order[0] = pl->fs->ino - 1; /* @scope itself: skipped */
	for (k = 0; k < pl->norder; k++) {
		const struct tree_dir *d = fresh->nodes[pl->order[k]]->dir;

		for (i = 0; d && i < d->n; i++)
			pl->order[pl->norder++] = d->children[i]->ino - 1;
	}
	return 0;
}

/* File @n of the tree is listed again as @f: a new version when its
 * validator, size or decoder changed. */
static int plan_update(struct planner *pl, struct node *n, const struct node *f)
{
	struct op *o;
	bool differs;

	pthread_mutex_lock(&n->lock);
	/* A listing without validators (HTTP indexes) is compared by size
	 * and mtime. */
	differs = n->size != f->size ||
		  (f->etag ? !same(n->etag, f->etag)
			   : n->mtime.tv_sec != f->mtime.tv_sec ||
				     n->mtime.tv_nsec != f->mtime.tv_nsec) ||
		  n->changed || !n->dec != !f->dec;
	pthread_mutex_unlock(&n->lock);
	if (!differs)
		return 0;
	o = plan_push(pl->p, OP_UPDATE, n);
	if (!o)
		return -ENOMEM;
	o->size = f->size;
	o->mtime = f->mtime;
	o->dec = decoded_ref(f->dec);
	if (f->etag && !(o->etag = strdup(f->etag)))
		return -ENOMEM;
	pl->p->nchanged++;
	return 0;
}

/* @f, the fresh node of index @i, is new in directory @dir: added, or in
 * place of @n, a node of the other type. */
static int plan_new(struct planner *pl, struct node *dir, struct node *n,
		    const struct node *f, size_t i)
{
	struct node *m =
		tree_node_alloc(dir, f->name, strlen(f->name), f->is_dir);
	struct op *o;

	if (!m)
		return -ENOMEM;
	o = plan_push(pl->p, n ? OP_REPLACE : OP_ADD, m);
	if (!o) {
		tree_node_free(m);
		return -ENOMEM;
	}
	m->ino = pl->next_ino++;
	m->mtime = f->mtime;
	m->size = f->size;
	m->has_perm = f->has_perm; /* file:// owner and mode */
	m->perm = f->perm;
	m->uid = f->uid;
	m->gid = f->gid;
	m->dec = decoded_ref(f->dec);
	/* A one-level listing says nothing of what a new subdirectory
	 * holds: it is listed when first looked in. */
	if (m->dir)
		m->dir->state = pl->scope ? DIR_UNLISTED : DIR_LISTED;
	if (f->etag && !(m->etag = strdup(f->etag)))
		return -ENOMEM;
	pl->map[i] = m;
	pl->p->nadded++;
	if (n) {
		o->old = n;
		o->index = index_in_parent(n);
	} else {
		pl->adds[f->parent->ino - 1]++;
		pl->nlinks++;
	}
	return 0;
}

/* Every node of @fresh in order: matched, updated, added or replacing. */
static int plan_entries(struct planner *pl)
{
	for (size_t k = 1; pl->fs && k < pl->norder; k++) {
		size_t i = pl->order ? pl->order[k] : k;
		const struct node *f = pl->fresh->nodes[i];
		struct node *dir = pl->map[f->parent->ino - 1], *n = NULL;
		int err;

		if (!dir || pl->map[i])
			continue; /* outside @scope, or @scope itself */
		if (dir->ino <= pl->t->count)
			n = tree_child_find(pl->t, dir, f->name,
					    strlen(f->name));
		if (n && n->is_dir == f->is_dir) {
			pl->map[i] = n;
			if (pl->seen)
				pl->seen[n->ino - 1] = 1;
			err = f->is_dir ? 0 : plan_update(pl, n, f);
		} else {
			err = plan_new(pl, dir, n, f, i);
		}
		if (err)
			return err;
	}
	return 0;
}

/* Files gone from the source (replaced ones included): not in @fresh
 * under @scope, or (a whole merge) not seen at all. */
static int plan_gone(struct planner *pl)
{
	struct tree *t = pl->t;
	size_t i;

	if (pl->scope) {
		const struct tree_dir *d = pl->scope->dir;

		for (i = 0; i < d->n; i++) {
			struct node *n = d->children[i];
			const struct node *f =
				pl->fs ? tree_child_find(pl->fresh, pl->fs,
							 n->name,
							 strlen(n->name))
				       : NULL;

			if (n->is_dir || (f && !f->is_dir) || !still_there(n))
				continue;
			if (!plan_push(pl->p, OP_GONE, n))
				return -ENOMEM;
			pl->p->nchanged++;
		}
		return 0;
	}
	for (i = 1; i < t->count; i++) {
		struct node *n = t->nodes[i];

		if (pl->seen[i] || n->is_dir || !still_there(n))
			continue;
		if (!plan_push(pl->p, OP_GONE, n))
			return -ENOMEM;
		pl->p->nchanged++;
	}
	return 0;
}

/* Room in @t's nodes array for @count nodes in all, and in its index for
 * @nlinks more: larger copies, swapped in first. */
static int plan_tree_room(struct tree *t, struct plan *p, size_t count,
			  size_t nlinks)
{
	if (count > t->cap) {
		size_t cap = t->cap;
		struct op *o;

		while (cap < count)
			cap *= 2;
		o = plan_push(p, OP_SWAP_NODES, NULL);
		if (!o || !(o->arr = malloc(cap * sizeof(*t->nodes))))
			return -ENOMEM;
		memcpy(o->arr, t->nodes, t->count * sizeof(*t->nodes));
		o->cap = cap;
	}
	if (2 * (t->nused + nlinks) > t->nslots) {
		struct op *o = plan_push(p, OP_SWAP_INDEX, NULL);

		if (!o)
			return -ENOMEM;
		o->cap = tree_slots_for(t->nused + nlinks);
		if (!(o->arr = tree_index_build(t, o->cap)))
			return -ENOMEM;
	}
	return 0;
}

/* Room: new directories get theirs now, unlinked yet; existing ones, the
 * nodes array and the index get copies swapped in first. */
static int plan_room(struct planner *pl)
{
	struct tree *t = pl->t;
	size_t i;

	for (i = 0; i < pl->fresh->count; i++) {
		struct node *m = pl->map[i];
		struct tree_dir *d = m ? m->dir : NULL;
		size_t cap, adds = pl->adds[i];
		struct op *o;

		if (!adds || !d)
			continue;
		if (m->ino > t->count) { /* new in this merge */
			d->children = malloc(adds * sizeof(*d->children));
			if (!d->children)
				return -ENOMEM;
			d->cap = adds;
			continue;
		}
		if (d->n + adds <= d->cap)
			continue;
		cap = d->cap;
		while (cap < d->n + adds)
			cap = cap ? 2 * cap : 8;
		o = plan_push(pl->p, OP_GROW, m);
		if (!o || !(o->arr = malloc(cap * sizeof(struct node *))))
			return -ENOMEM;
		if (d->n) /* an empty one has no array yet */
			memcpy(o->arr, d->children,
			       d->n * sizeof(struct node *));
		o->cap = cap;
	}
	return plan_tree_room(t, pl->p, pl->next_ino - 1, pl->nlinks);
}

static int adopt(struct tree *t, struct planner *pl, struct tree_changes *c);

/*
 * Plan merging @fresh into @t: all of it (@scope NULL), or only what
 * @fresh holds below directory @scope of @t, whose children it lists
 * (one level: what is not in @fresh under @scope is gone from there).
 * @return 0, 1 when it was applied at once by adopting (*@c filled), or
 * -ENOMEM.
 */
static int plan_merge(struct tree *t, struct node *scope, struct tree *fresh,
		      struct plan *p, struct tree_changes *c)
{
	struct planner pl = {
		.t = t,
		.scope = scope,
		.fresh = fresh,
		.p = p,
		.map = calloc(fresh->count, sizeof(*pl.map)),
		.seen = scope ? NULL : calloc(t->count, 1),
		.adds = calloc(fresh->count, sizeof(*pl.adds)),
		.norder = 1,
		.next_ino = t->count + 1,
	};
	int err = -ENOMEM;

	if (pl.map && (scope || pl.seen) && pl.adds) {
		plan_start(&pl);
		err = plan_order(&pl);
	}
	/* Nothing there yet: everything is new. */
	if (!err && scope && !scope->dir->n && pl.fs && pl.norder > 1) {
		err = adopt(t, &pl, c);
		if (!err)
			err = 1;
		goto out;
	}
	if (!err)
		err = plan_entries(&pl);
	if (!err)
		err = plan_gone(&pl);
	if (!err)
		err = plan_room(&pl);
out:
	free(pl.order);
	free(pl.map);
	free(pl.seen);
	free(pl.adds);
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
			*tree_slot_of_node(t->slots, t->nslots, n) = n;
			old->unlinked = true;
			c->nconflicts++;
			if (!old->is_dir) {
				t->files--;
				t->bytes -= old->size;
			}
		} else {
			struct tree_dir *pd = n->parent->dir;

			pd->children[pd->n++] = n;
			*tree_slot_of_node(t->slots, t->nslots, n) = n;
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
		free(n->pinned); /* the new version's comes with its reads */
		n->pinned = NULL;
		o->etag = NULL;
		n->size = o->size;
		n->mtime = o->mtime;
		prev = n->dec;
		n->dec = o->dec;
		o->dec = prev;
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

/* Apply @n items by @fn(@arg, i) in order, under the write lock, in steps
 * of about STEP_NS: lookups wait for one step at most. */
static void in_steps(struct tree *t, size_t n, void (*fn)(void *, size_t),
		     void *arg)
{
	size_t k = 0;

	while (k < n) {
		uint64_t start, cpu, held;

		pthread_rwlock_wrlock(&t->lock);
		start = clock_ns(CLOCK_MONOTONIC);
		cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
		while (k < n) {
			fn(arg, k++);
			if (!(k & 63) &&
			    clock_ns(CLOCK_MONOTONIC) - start >= STEP_NS)
				break;
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

/* A plan being applied: one pass of its ops (op_pass()). */
struct applying {
	struct tree *t;
	struct plan *p;
	struct tree_changes *c;
	int pass;
};

static void apply_op(void *arg, size_t i)
{
	struct applying *a = arg;

	if (op_pass(&a->p->ops[i]) == a->pass)
		apply(a->t, &a->p->ops[i], a->c);
}

static void apply_plan(struct tree *t, struct plan *p, struct tree_changes *c)
{
	struct applying a = { .t = t, .p = p, .c = c };

	for (a.pass = 0; a.pass < 2; a.pass++)
		in_steps(t, p->nops, apply_op, &a);
}

/*
 * Adopting: the first listing of a directory that has no children yet
 * (lazy listing) adds everything @fresh holds below it, so @fresh's nodes
 * move into @t as they are, with their children arrays, instead of being
 * copied and planned one op each: the same result as plan_merge()'s adds
 * (same order, inodes and states) at a fraction of the memory and time.
 */
struct adopting {
	struct tree *t;
	struct planner *pl;
	struct tree_changes *c;
};

/* Link the @k-th node of the order (k >= 1), as OP_ADD does. */
static void adopt_one(void *arg, size_t k)
{
	struct adopting *a = arg;
	struct tree *t = a->t;
	struct node *n = a->pl->fresh->nodes[a->pl->order[k + 1]];
	struct tree_dir *pd;

	if (n->parent == a->pl->fs)
		n->parent = a->pl->scope;
	pd = n->parent->dir;
	t->nodes[t->count++] = n;
	n->ino = t->count;
	pd->children[pd->n++] = n; /* the same place it had in @fresh */
	*tree_slot_of_node(t->slots, t->nslots, n) = n;
	t->nused++;
	if (!n->is_dir) {
		t->files++;
		t->bytes += n->size;
	}
	a->c->added[a->c->nadded++] = n;
}

static int adopt(struct tree *t, struct planner *pl, struct tree_changes *c)
{
	struct node *fs = pl->fs, *scope = pl->scope;
	size_t count = pl->norder - 1, k;
	struct adopting a = { .t = t, .pl = pl, .c = c };
	struct plan p = { 0 };
	struct op *o;
	int err;

	err = plan_tree_room(t, &p, t->count + count, count);
	c->changed = malloc(sizeof(*c->changed));
	c->added = malloc(count * sizeof(*c->added));
	/* Last: nothing may fail after it (plan_free() would free the
	 * array @fresh still owns). */
	if (!err && c->changed && c->added &&
	    (o = plan_push(&p, OP_GROW, scope))) {
		o->arr = fs->dir->children;
		o->cap = fs->dir->cap;
	} else {
		plan_free(&p, false);
		tree_changes_done(c);
		return -ENOMEM;
	}
	/* From here on @fresh gives its nodes up: each directory's children
	 * are linked again one by one into the array it keeps. */
	fs->dir->children = NULL;
	fs->dir->n = fs->dir->cap = 0;
	for (k = 1; k <= count; k++) {
		struct node *n = pl->fresh->nodes[pl->order[k]];

		if (n->dir) {
			n->dir->n = 0;
			n->dir->state = DIR_UNLISTED;
		}
	}
	apply_plan(t, &p, c);
	in_steps(t, count, adopt_one, &a);
	for (k = 1; k <= count; k++)
		pl->fresh->nodes[pl->order[k]] = NULL;
	tree_slabs_move(t, pl->fresh); /* the memory of what it adopted */
	plan_free(&p, true);
	return 0;
}

static int merge(struct tree *t, struct node *scope, struct tree *fresh,
		 struct tree_changes *ret)
{
	struct tree_changes c = { 0 };
	struct plan p = { 0 };
	int err;

	pthread_mutex_lock(&t->merge);
	err = plan_merge(t, scope, fresh, &p, &c);
	if (err == 1) { /* adopted */
		pthread_mutex_unlock(&t->merge);
		*ret = c;
		return 0;
	}
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
	apply_plan(t, &p, &c);
	plan_free(&p, true);
	pthread_mutex_unlock(&t->merge);
	*ret = c;
	return 0;
}

int tree_merge(struct tree *t, struct tree *fresh, struct tree_changes *ret)
{
	return merge(t, NULL, fresh, ret);
}

int tree_merge_dir(struct tree *t, struct node *dir, struct tree *fresh,
		   struct tree_changes *ret)
{
	if (!dir->is_dir)
		return -ENOTDIR;
	return merge(t, dir, fresh, ret);
}
