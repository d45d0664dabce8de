/* Merging a new listing into the tree: tree_merge() and tree_merge_dir()
 * (the contract is in tree.h). Private state in tree_priv.h. */
#include "tree.h"
#include "tree_priv.h"
#include "zstd_object.h"

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
			n = tree_child_find(t, dir, f->name, len);
		if (n && n->is_dir == f->is_dir) {
			bool differs;

			map[i] = n;
			if (seen)
				seen[n->ino - 1] = 1;
			if (f->is_dir)
				continue;
			pthread_mutex_lock(&n->lock);
			/* A listing without validators (HTTP indexes) is
			 * compared by size and mtime. */
			differs =
				n->size != f->size ||
				(f->etag ? !same(n->etag, f->etag)
					 : n->mtime.tv_sec != f->mtime.tv_sec ||
						   n->mtime.tv_nsec !=
							   f->mtime.tv_nsec) ||
				n->changed || !n->zobj != !f->zobj;
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
		m = tree_node_alloc(dir, f->name, len, f->is_dir);
		if (!m)
			goto out;
		o = plan_push(p, n ? OP_REPLACE : OP_ADD, m);
		if (!o) {
			tree_node_free(m);
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
				fs ? tree_child_find(fresh, fs, n->name,
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
		o->cap = tree_slots_for(t->nused + nlinks);
		if (!(o->arr = tree_index_build(t, o->cap)))
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
			*tree_slot_of(t->slots, t->nslots, n->parent, n->name,
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
			*tree_slot_of(t->slots, t->nslots, n->parent, n->name,
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
		free(n->pinned); /* the new version's comes with its reads */
		n->pinned = NULL;
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
