/* The tree: indexed lookups, merges (updates, additions, files gone, type
 * changes), readdir snapshots across merges, lookups during a merge. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tree.h"

static const struct timespec t0;

/* @t with the nodes of @keys ("d/" ends a directory) added and finished. */
static struct tree *make(const char *const *keys, size_t n)
{
	struct tree *t = NULL;
	size_t i;

	CHECK(tree_new(&t) == 0, "tree_new");
	for (i = 0; t && i < n; i++) {
		size_t len = strlen(keys[i]);
		char *k = strdup(keys[i]);
		bool dir = keys[i][len - 1] == '/';
		int err;

		if (dir)
			k[len - 1] = '\0';
		err = tree_add(t, k, dir, dir ? 0 : len, t0, dir ? NULL : k,
			       NULL);
		CHECK(err == 0, "tree_add %s: %d", keys[i], err);
		free(k);
	}
	if (t)
		CHECK(tree_finish(t) == 0, "tree_finish");
	return t;
}

static struct node *at(struct tree *t, const char *path)
{
	struct node *n = tree_root(t);
	char *p = strdup(path), *s, *save = NULL;

	for (s = strtok_r(p, "/", &save); n && s;
	     s = strtok_r(NULL, "/", &save))
		n = tree_lookup(t, n, s);
	free(p);
	return n;
}

static void test_add_lookup(void)
{
	static const char *const keys[] = { "b", "a/x", "a/y", "c/" };
	struct tree *t = make(keys, 4);
	struct node *n;

	if (!t)
		return;
	CHECK(tree_count(t) == 6, "count %zu", tree_count(t));
	CHECK(tree_files(t) == 3, "files %zu", tree_files(t));
	CHECK(tree_bytes(t) == 1 + 3 + 3, "bytes");
	n = at(t, "a/y");
	CHECK(n && !strcmp(n->key, "a/y") && !strcmp(n->name, "y"), "a/y");
	CHECK(n && n->parent == at(t, "a"), "parent");
	CHECK(at(t, "c") && at(t, "c")->is_dir, "c/");
	CHECK(!at(t, "a/z") && !at(t, "ab"), "misses");
	CHECK(tree_add(t, "b/q", false, 1, t0, NULL, NULL) == -EEXIST,
	      "file as a directory");
	CHECK(tree_add(t, "a", false, 1, t0, NULL, NULL) == -EEXIST,
	      "directory as a file");
	CHECK(tree_add(t, "a/../b", false, 1, t0, NULL, NULL) == -EINVAL, "..");
	CHECK(tree_add(t, "a", true, 0, t0, NULL, NULL) == 0, "dir again");
	/* Sorted by name for readdir. */
	n = tree_root(t);
	CHECK(tree_nchildren(n) == 3, "root children");
	CHECK(!strcmp(tree_child(n, 0)->name, "a") &&
		      !strcmp(tree_child(n, 2)->name, "c"),
	      "sorted");
	tree_free(t);
}

static void test_merge(void)
{
	static const char *const before[] = { "keep", "change", "gone",
					      "f2d",  "d2f/in", "dir/old" };
	static const char *const after[] = { "keep", "change",	"f2d/in",
					     "d2f",  "dir/old", "dir/new",
					     "n/e/w" };
	struct tree *t = make(before, 6), *fresh = make(after, 7);
	struct tree_changes c;
	struct node *keep, *change, *gone, *f2d, *d2f, *d2f_in, *root;
	size_t snap, i;
	char *names[8];
	int err;

	if (!t || !fresh)
		return;
	keep = at(t, "keep");
	change = at(t, "change");
	gone = at(t, "gone");
	f2d = at(t, "f2d");
	d2f = at(t, "d2f");
	d2f_in = at(t, "d2f/in");
	root = tree_root(t);
	/* "change" changes: same key, another etag. */
	free(change->etag);
	change->etag = strdup("older");
	snap = tree_nchildren(root);
	for (i = 0; i < snap && i < 8; i++)
		names[i] = strdup(tree_child(root, i)->name);

	err = tree_merge(t, fresh, &c);
	CHECK(err == 0, "merge: %d", err);
	if (err)
		return;
	CHECK(at(t, "keep") == keep && keep->generation == 0 && !keep->changed,
	      "unchanged file untouched");
	CHECK(at(t, "change") == change && change->generation == 1 &&
		      !strcmp(change->etag, "change") && !change->changed,
	      "changed file updated in place");
	CHECK(gone->changed, "gone file marked");
	CHECK(at(t, "f2d") && at(t, "f2d") != f2d && at(t, "f2d")->is_dir,
	      "file -> directory replaced");
	CHECK(f2d->changed, "the replaced file reads as gone");
	CHECK(at(t, "f2d/in") && !at(t, "f2d/in")->is_dir, "f2d/in");
	CHECK(at(t, "d2f") && at(t, "d2f") != d2f && !at(t, "d2f")->is_dir,
	      "directory -> file replaced");
	CHECK(d2f_in->changed, "the file in a replaced directory is gone");
	CHECK(at(t, "dir/new") && at(t, "n/e/w"), "added");
	CHECK(tree_get(t, f2d->ino) == f2d, "old inodes stay valid");
	CHECK(c.nconflicts == 2, "conflicts %zu", c.nconflicts);
	/* changed: change, gone, f2d, d2f/in */
	CHECK(c.nchanged == 4, "changed %zu", c.nchanged);
	/* added: f2d (dir), f2d/in, d2f (file), dir/new, n, n/e, n/e/w */
	CHECK(c.nadded == 7, "added %zu", c.nadded);
	/* The snapshot taken before: the same names at the same places. */
	CHECK(tree_nchildren(root) >= snap, "children only grow");
	for (i = 0; i < snap && i < 8; i++) {
		CHECK(!strcmp(tree_child(root, i)->name, names[i]),
		      "child %zu: %s, was %s", i, tree_child(root, i)->name,
		      names[i]);
		free(names[i]);
	}
	tree_changes_done(&c);

	/* Merging the same listing again changes nothing. */
	err = tree_merge(t, fresh, &c);
	CHECK(err == 0 && c.nchanged == 0 && c.nadded == 0,
	      "second merge: %d %zu %zu", err, c.nchanged, c.nadded);
	tree_changes_done(&c);
	tree_free(fresh);
	tree_free(t);
}

/* Lookups running during a large merge always find what exists. */
struct prober {
	struct tree *t;
	size_t n;
	atomic_bool stop;
	size_t lookups;
	size_t misses;
};

static void *probe(void *arg)
{
	struct prober *p = arg;
	unsigned seed = 7;
	char name[32];

	while (!atomic_load(&p->stop)) {
		snprintf(name, sizeof(name), "f%zu",
			 (size_t)rand_r(&seed) % p->n);
		p->misses += !tree_lookup(p->t, tree_root(p->t), name);
		p->lookups++;
	}
	return NULL;
}

static void test_concurrent(void)
{
	enum { N = 100000 };
	struct tree *t = NULL, *fresh = NULL;
	struct prober p = { 0 };
	struct tree_changes c;
	struct tree_stats st;
	pthread_t th;
	char name[32];
	size_t i;
	int err = tree_new(&t) || tree_new(&fresh);

	CHECK(!err, "tree_new");
	if (err)
		return;
	for (i = 0; i < 2 * N; i++) {
		snprintf(name, sizeof(name), "f%zu", i);
		if (i < N)
			err |= tree_add(t, name, false, i, t0, "a", NULL);
		err |= tree_add(fresh, name, false, i, t0, i % 2 ? "b" : "a",
				NULL);
	}
	CHECK(!err, "adds");
	CHECK(tree_finish(t) == 0, "tree_finish");
	CHECK(tree_finish(fresh) == 0, "tree_finish");
	p.t = t;
	p.n = N;
	pthread_create(&th, NULL, probe, &p);
	err = tree_merge(t, fresh, &c);
	atomic_store(&p.stop, true);
	pthread_join(th, NULL);
	CHECK(err == 0, "merge");
	CHECK(c.nadded == N && c.nchanged == N / 2, "added %zu changed %zu",
	      c.nadded, c.nchanged);
	CHECK(p.misses == 0, "%zu of %zu lookups missed during the merge",
	      p.misses, p.lookups);
	CHECK(tree_count(t) == 2 * N + 1, "count");
	CHECK(tree_nchildren(tree_root(t)) == 2 * N, "children");
	/* Steps are short: CPU time, as wall time on a loaded machine
	 * counts the preemptions too; a lenient bound all the same. */
	tree_stats(t, &st);
	CHECK(st.steps > 1, "one step only");
	CHECK(st.max_hold_cpu_ns < 20000000ull, "lock held %llu ns of CPU",
	      (unsigned long long)st.max_hold_cpu_ns);
	printf("merge of %d: %llu steps, longest lock hold %.2f ms "
	       "(%.2f ms CPU), %zu lookups\n",
	       2 * N, (unsigned long long)st.steps,
	       (double)st.max_hold_ns / 1e6, (double)st.max_hold_cpu_ns / 1e6,
	       p.lookups);
	tree_changes_done(&c);
	tree_free(fresh);
	tree_free(t);
}

/* tree_trim_name(): renames in place, and the index (linear probing, an
 * entry removed by shifting its run back) finds every name after many. */
static void test_trim_name(void)
{
	enum { N = 3000 };
	static struct node *nodes[N];
	struct tree *t = NULL;
	char key[64];
	size_t i;

	CHECK(tree_new(&t) == 0, "tree_new");
	if (!t)
		return;
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "d%zu/f%zu.zst", i % 3, i);
		CHECK(tree_add(t, key, false, 10, t0, NULL, &nodes[i]) == 0,
		      "add %s", key);
	}
	CHECK(tree_add(t, "d0/x", false, 1, t0, NULL, NULL) == 0, "x");
	CHECK(tree_add(t, "d0/x.zst", false, 1, t0, NULL, NULL) == 0, "x.zst");
	CHECK(tree_trim_name(t, at(t, "d0/x.zst"), 1) == -EEXIST, "exists");
	CHECK(tree_trim_name(t, at(t, "d0"), 1) == -EINVAL, "a directory");
	CHECK(tree_trim_name(t, nodes[0], 6) == -EINVAL, "not shorter");
	for (i = 1; i < N; i += 2)
		CHECK(tree_trim_name(t, nodes[i], strlen(nodes[i]->name) - 4) ==
			      0,
		      "trim %zu", i);
	CHECK(tree_finish(t) == 0, "tree_finish");
	for (i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "d%zu/f%zu%s", i % 3, i,
			 i % 2 ? "" : ".zst");
		CHECK(at(t, key) == nodes[i], "lookup %s", key);
		CHECK(!strcmp(nodes[i]->key, key), "key %s", nodes[i]->key);
		snprintf(key, sizeof(key), "d%zu/f%zu%s", i % 3, i,
			 i % 2 ? ".zst" : "");
		CHECK(!at(t, key), "old or other name %s", key);
	}
	CHECK(at(t, "d0/x") && at(t, "d0/x.zst"), "x and x.zst");
	tree_free(t);
}

/* One-level merges (lazy listing): only the listed directory's children
 * change; new subdirectories come unlisted; what is below is kept. */
static void test_merge_dir(void)
{
	static const char *const keys[] = { "a/",     "a/keep",	    "a/gone",
					    "a/sub/", "a/sub/deep", "b/x" };
	static const char *const one[] = { "a/newdir/", "a/keep", "a/sub/",
					   "a/new" };
	struct tree *t = make(keys, 6), *fresh = make(one, 4), *empty;
	struct tree_changes c;
	struct node *a = at(t, "a"), *gone = at(t, "a/gone");
	struct node *deep = at(t, "a/sub/deep"), *bx = at(t, "b/x");

	tree_mark_unlisted(t, a);
	CHECK(!tree_dir_listed(a) && tree_dir_listed(tree_root(t)), "states");
	CHECK(tree_list_begin(t, a) == 1, "the first caller lists");
	CHECK(tree_merge_dir(t, a, fresh, &c) == 0, "merge_dir");
	tree_list_end(t, a, true);
	CHECK(tree_list_begin(t, a) == 0, "listed now");
	CHECK(c.nadded == 2 && c.nchanged == 1, "added %zu changed %zu",
	      c.nadded, c.nchanged);
	CHECK(gone->changed, "a/gone is gone");
	CHECK(!deep->changed && at(t, "a/sub/deep") == deep,
	      "below the level: untouched");
	CHECK(!bx->changed, "outside the directory: untouched");
	CHECK(at(t, "a/new") && !at(t, "a/new")->is_dir, "a/new");
	CHECK(at(t, "a/newdir") && !tree_dir_listed(at(t, "a/newdir")),
	      "a new subdirectory is unlisted");
	CHECK(tree_dir_listed(at(t, "a/sub")), "a known one keeps its state");
	/* New children in name order, after the old ones. */
	CHECK(tree_nchildren(a) == 5 &&
		      !strcmp(tree_child(a, 3)->name, "new") &&
		      !strcmp(tree_child(a, 4)->name, "newdir"),
	      "readdir order");
	tree_changes_done(&c);
	/* An empty listing (nothing under the key): everything there gone. */
	CHECK(tree_new(&empty) == 0, "tree_new");
	CHECK(tree_finish(empty) == 0, "tree_finish");
	CHECK(tree_merge_dir(t, at(t, "b"), empty, &c) == 0, "empty");
	CHECK(bx->changed && c.nchanged == 1, "b/x gone");
	tree_changes_done(&c);
	/* A failed listing: the waiter gets -EIO, a later caller lists. */
	tree_mark_unlisted(t, at(t, "b"));
	CHECK(tree_list_begin(t, at(t, "b")) == 1, "lister");
	tree_list_end(t, at(t, "b"), false);
	CHECK(tree_list_begin(t, at(t, "b")) == 1, "retried after failure");
	tree_list_end(t, at(t, "b"), true);
	/* A lazy mount: an empty tree whose root is listed by a merge. */
	tree_free(empty);
	CHECK(tree_new(&empty) == 0, "tree_new");
	tree_mark_unlisted(empty, tree_root(empty));
	CHECK(tree_list_begin(empty, tree_root(empty)) == 1, "root unlisted");
	CHECK(tree_merge_dir(empty, tree_root(empty), fresh, &c) == 0,
	      "root merge");
	tree_list_end(empty, tree_root(empty), true);
	CHECK(at(empty, "a/keep") && !tree_dir_listed(at(empty, "a")),
	      "below the root: added, unlisted");
	tree_changes_done(&c);
	tree_free(empty);
	tree_free(fresh);
	tree_free(t);
}

/* A first listing of a directory with no children yet takes the listing's
 * nodes as they are (no copies): the same inodes, order, states, totals
 * and lookups a merge gives; the rest of the listing is freed with it. */
static void test_merge_dir_adopts(void)
{
	static const char *const keys[] = { "x/", "y" };
	struct tree *t = make(keys, 2), *fresh = NULL;
	struct node *x = at(t, "x"), *f1 = NULL, *sub = NULL, *deep = NULL;
	struct tree_changes c;
	size_t before = tree_count(t), i;
	uint64_t bytes = tree_bytes(t);
	char name[32];

	CHECK(tree_new(&fresh) == 0, "tree_new");
	if (!t || !fresh)
		return;
	/* Unsorted on purpose: tree_sort() orders them. */
	for (i = 1000; i-- > 0;) {
		snprintf(name, sizeof(name), "x/f%04zu", i);
		CHECK(tree_add(fresh, name, false, i, t0, i % 2 ? "e" : NULL,
			       i == 1 ? &f1 : NULL) == 0,
		      "add %s", name);
	}
	CHECK(tree_add(fresh, "x/sub/deep", false, 7, t0, NULL, &deep) == 0,
	      "deep");
	sub = deep ? deep->parent : NULL;
	CHECK(tree_add_child(fresh, sub, "deep", 4, false, 1, t0, NULL, NULL) ==
		      -EEXIST,
	      "add_child: a file there");
	CHECK(tree_add_child(fresh, sub, "deep", 4, true, 1, t0, NULL, NULL) ==
		      -EEXIST,
	      "add_child: a directory of a file's name");
	CHECK(tree_add_child(fresh, sub, "..", 2, false, 1, t0, NULL, NULL) ==
		      -EINVAL,
	      "add_child: a bad name");
	tree_sort(fresh); /* as refresh.c does: merged, never shared */
	tree_mark_unlisted(t, x);
	CHECK(tree_list_begin(t, x) == 1, "lister");
	CHECK(tree_merge_dir(t, x, fresh, &c) == 0, "merge_dir");
	tree_list_end(t, x, true);
	CHECK(c.nadded == 1002 && c.nchanged == 0, "added %zu changed %zu",
	      c.nadded, c.nchanged);
	CHECK(at(t, "x/f0001") == f1 && f1->parent == x, "adopted as is");
	CHECK(at(t, "x/sub") == sub && !tree_dir_listed(sub),
	      "a subdirectory: adopted, unlisted");
	CHECK(at(t, "x/sub/deep") == deep && tree_nchildren(sub) == 1,
	      "below it too");
	CHECK(tree_nchildren(x) == 1001, "children %zu", tree_nchildren(x));
	for (i = 0; i < tree_nchildren(x); i++) {
		struct node *n = tree_child(x, i);

		snprintf(name, sizeof(name), i < 1000 ? "f%04zu" : "sub", i);
		CHECK(!strcmp(n->name, name) && n->ino == before + 1 + i &&
			      tree_get(t, n->ino) == n,
		      "child %zu: %s ino %llu", i, n->name,
		      (unsigned long long)n->ino);
	}
	CHECK(deep->ino == before + 1002, "breadth first: deep last");
	CHECK(tree_count(t) == before + 1002 && tree_files(t) == 1 + 1001 &&
		      tree_bytes(t) == bytes + 999 * 1000 / 2 + 7,
	      "totals");
	CHECK(f1->etag && !strcmp(f1->etag, "e") && f1->size == 1 &&
		      !strcmp(f1->key, "x/f0001"),
	      "its validator and key");
	tree_changes_done(&c);
	tree_free(fresh); /* what was not adopted: the root and x */
	CHECK(at(t, "x/f0999") && at(t, "x/f0999")->size == 999, "still there");
	tree_free(t);
}

/* tree_add_child(): a repeated name is found whether the names so far
 * came in order (compared with the last one) or not (looked up). */
static void test_add_child(void)
{
	static const char *const names[] = { "a", "b",	"b",  "bb", "b", "a",
					     "c", "ab", "bb", "c",  "d" };
	static const int want[] = { 0, 0, -EEXIST, 0,	    -EEXIST, -EEXIST,
				    0, 0, -EEXIST, -EEXIST, 0 };
	struct tree *t = NULL;
	struct node *d = NULL;
	size_t i;

	CHECK(tree_new(&t) == 0 && tree_add(t, "d", true, 0, t0, NULL, &d) == 0,
	      "tree");
	if (!d)
		return;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int err = tree_add_child(t, d, names[i], strlen(names[i]),
					 i == 6, 1, t0, NULL, NULL);

		CHECK(err == want[i], "%zu %s: %d", i, names[i], err);
	}
	CHECK(tree_nchildren(d) == 6, "children %zu", tree_nchildren(d));
	CHECK(tree_add_child(t, d, "x", 1, false, 1, t0, NULL, NULL) == 0 &&
		      tree_add_child(t, tree_root(t), "d", 1, false, 1, t0,
				     NULL, NULL) == -EEXIST,
	      "in order again; a file named as a directory");
	CHECK(tree_finish(t) == 0, "tree_finish");
	CHECK(!strcmp(tree_child(d, 0)->name, "a") &&
		      !strcmp(tree_child(d, 1)->name, "ab") &&
		      !strcmp(tree_child(d, 6)->name, "x"),
	      "sorted");
	tree_free(t);
}

int main(void)
{
	test_merge_dir();
	test_merge_dir_adopts();
	test_add_lookup();
	test_add_child();
	test_trim_name();
	test_merge();
	test_concurrent();
	printf("ok\n");
	return 0;
}
