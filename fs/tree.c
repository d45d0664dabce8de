#include "tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct node *node_new(struct tree *t, struct node *parent,
			     const char *name, size_t name_len, bool is_dir)
{
	struct node *n;

	if (t->count == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct node **nodes = realloc(t->nodes, cap * sizeof(*nodes));

		if (!nodes)
			return NULL;
		t->nodes = nodes;
		t->cap = cap;
	}
	if (parent && parent->nchildren == parent->children_cap) {
		size_t cap =
			parent->children_cap ? parent->children_cap * 2 : 8;
		struct node **c = realloc(parent->children, cap * sizeof(*c));

		if (!c)
			return NULL;
		parent->children = c;
		parent->children_cap = cap;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strndup(name, name_len);
	if (parent && *parent->key) {
		if (asprintf(&n->key, "%s/%.*s", parent->key, (int)name_len,
			     name) < 0)
			n->key = NULL;
	} else {
		n->key = strndup(name, name_len);
	}
	if (!n->name || !n->key) {
		free(n->name);
		free(n->key);
		free(n);
		return NULL;
	}
	n->is_dir = is_dir;
	n->parent = parent ? parent : n;
	pthread_mutex_init(&n->lock, NULL);
	readahead_init(&n->ra);
	t->nodes[t->count++] = n;
	n->ino = t->count;
	if (parent)
		parent->children[parent->nchildren++] = n;
	return n;
}

int tree_new(struct tree **ret)
{
	struct tree *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	pthread_rwlock_init(&t->lock, NULL);
	if (!node_new(t, NULL, "", 0, true)) {
		pthread_rwlock_destroy(&t->lock);
		free(t);
		return -ENOMEM;
	}
	*ret = t;
	return 0;
}

void tree_free(struct tree *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->count; i++) {
		struct node *n = t->nodes[i];

		pthread_mutex_destroy(&n->lock);
		readahead_done(&n->ra);
		free(n->children);
		free(n->name);
		free(n->key);
		free(n->etag);
		free(n);
	}
	free(t->nodes);
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

/* Children are unsorted while building, so this is linear then; after
 * tree_finish() lookups use bsearch. */
static struct node *child_find(const struct node *dir, const char *name,
			       size_t len)
{
	size_t i;

	for (i = 0; i < dir->nchildren; i++) {
		struct node *c = dir->children[i];

		if (strlen(c->name) == len && !memcmp(c->name, name, len))
			return c;
	}
	return NULL;
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

		n = child_find(dir, p, len);
		if (n && n->is_dir != want_dir)
			return -EEXIST;
		if (n && last && !is_dir)
			return -EEXIST;
		if (!n) {
			n = node_new(t, dir, p, len, want_dir);
			if (!n)
				return -ENOMEM;
			n->mtime = mtime;
			if (!want_dir) {
				n->size = size;
				if (etag && !(n->etag = strdup(etag)))
					return -ENOMEM;
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

static int cmp_node(const void *a, const void *b)
{
	const struct node *x = *(struct node *const *)a;
	const struct node *y = *(struct node *const *)b;

	return strcmp(x->name, y->name);
}

void tree_finish(struct tree *t)
{
	size_t i;

	for (i = 0; i < t->count; i++)
		if (t->nodes[i]->nchildren)
			qsort(t->nodes[i]->children, t->nodes[i]->nchildren,
			      sizeof(struct node *), cmp_node);
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
	return t->nodes[0]; /* never moves: the first node */
}

struct node *tree_lookup(struct tree *t, const struct node *dir,
			 const char *name)
{
	struct node key = { .name = (char *)name }, *kp = &key, **found;
	struct node *n = NULL;

	if (!dir->is_dir)
		return NULL;
	pthread_rwlock_rdlock(&t->lock);
	if (dir->nchildren) {
		found = bsearch(&kp, dir->children, dir->nchildren,
				sizeof(struct node *), cmp_node);
		n = found ? *found : NULL;
	}
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

/* The node at @key, or NULL. */
static struct node *find_key(const struct tree *t, const char *key)
{
	struct node *n = t->nodes[0];
	const char *p = key;

	while (n && *p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);

		n = child_find(n, p, len);
		p += len;
		if (*p == '/')
			p++;
	}
	return n;
}

static int push(struct node ***list, size_t *n, struct node *node)
{
	struct node **l = realloc(*list, (*n + 1) * sizeof(*l));

	if (!l)
		return -ENOMEM;
	l[(*n)++] = node;
	*list = l;
	return 0;
}

static bool same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

int tree_merge(struct tree *t, const struct tree *fresh,
	       struct tree_changes *ret)
{
	struct tree_changes c = { 0 };
	size_t i, count;
	int err = 0;

	pthread_rwlock_wrlock(&t->lock);
	for (i = 1; i < fresh->count && !err; i++) {
		const struct node *f = fresh->nodes[i];
		struct node *n = find_key(t, f->key);

		if (!n) {
			err = tree_add(t, f->key, f->is_dir, f->size, f->mtime,
				       f->etag, &n);
			if (!err) {
				n->has_perm = f->has_perm; /* file:// owner */
				n->perm = f->perm;
				n->uid = f->uid;
				n->gid = f->gid;
			}
			if (!err)
				err = push(&c.added, &c.nadded, n);
			continue;
		}
		if (n->is_dir || f->is_dir)
			continue;
		pthread_mutex_lock(&n->lock);
		if (n->size != f->size || !same(n->etag, f->etag) ||
		    n->changed) {
			char *etag = f->etag ? strdup(f->etag) : NULL;

			if (f->etag && !etag) {
				err = -ENOMEM;
			} else {
				t->bytes = t->bytes - n->size + f->size;
				free(n->etag);
				n->etag = etag;
				n->size = f->size;
				n->mtime = f->mtime;
				n->changed = false;
				n->generation++;
				err = push(&c.changed, &c.nchanged, n);
			}
		}
		pthread_mutex_unlock(&n->lock);
	}
	/* Files gone from the source: reads fail from now on. */
	count = t->count;
	for (i = 1; i < count && !err; i++) {
		struct node *n = t->nodes[i];

		if (n->is_dir || find_key(fresh, n->key))
			continue;
		pthread_mutex_lock(&n->lock);
		if (!n->changed) {
			n->changed = true;
			err = push(&c.changed, &c.nchanged, n);
		}
		pthread_mutex_unlock(&n->lock);
	}
	tree_finish(t);
	pthread_rwlock_unlock(&t->lock);
	if (err) {
		tree_changes_done(&c);
		return err;
	}
	*ret = c;
	return 0;
}

void tree_changes_done(struct tree_changes *c)
{
	free(c->changed);
	free(c->added);
	c->changed = c->added = NULL;
	c->nchanged = c->nadded = 0;
}
