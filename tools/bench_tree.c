/* bench-tree-core: the tree's build, merge and lookup costs, measured on
 * the same static core the daemon links (run by tools/bench-tree).
 *
 * Makes an S3-style listing of N keys (ListObjectsV2 pages of 1000 keys,
 * parsed with s3_list_parse like the S3 source does), builds it into a
 * tree, then merges a second listing of the same keys (a tenth changed,
 * a hundredth new) while a thread looks up random entries, and prints:
 * build time, merge time, the longest write-lock hold of the merge, the
 * worst latency a concurrent lookup saw, and memory per entry.
 *
 *   bench-tree-core [-n KEYS] [-flat]
 *
 * -flat puts every key in one directory; the default spreads them over
 * directories of 1000 (d0000/f0000000.safetensors). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "s3_list.h"
#include "tree.h"

static size_t nkeys = 1000000;
static bool flat;

static double clock_s(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

/* CPU time of the calling thread: what a step cost whatever the load. */
static double cpu(void)
{
	return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static long rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * sysconf(_SC_PAGESIZE);
}

static void key_of(size_t i, char *buf, size_t len)
{
	if (flat)
		snprintf(buf, len, "f%07zu.safetensors", i);
	else
		snprintf(buf, len, "d%04zu/f%07zu.safetensors", i / 1000, i);
}

/* Page @page of the listing, version @v (etags of every tenth key
 * differ between versions 0 and 1). */
static char *page_xml(size_t page, size_t total, int v, size_t *ret_len)
{
	size_t cap = 1 << 20, len = 0, i;
	char *x = malloc(cap), key[64];

	if (!x)
		return NULL;
	len += (size_t)snprintf(x + len, cap - len,
				"<?xml version=\"1.0\"?><ListBucketResult>"
				"<IsTruncated>%s</IsTruncated>",
				(page + 1) * 1000 < total ? "true" : "false");
	for (i = page * 1000; i < total && i < (page + 1) * 1000; i++) {
		key_of(i, key, sizeof(key));
		len += (size_t)snprintf(
			x + len, cap - len,
			"<Contents><Key>%s</Key><Size>%zu</Size>"
			"<ETag>\"%zx-%d\"</ETag><LastModified>"
			"2026-01-01T00:00:00.000Z</LastModified></Contents>",
			key, i * 7, i, v && i % 10 == 0);
	}
	len += (size_t)snprintf(x + len, cap - len, "%s</ListBucketResult>",
				(page + 1) * 1000 < total
					? "<NextContinuationToken>t"
					  "</NextContinuationToken>"
					: "");
	*ret_len = len;
	return x;
}

/* Parse every page and add it, as the S3 source does; *ret_s: the time
 * that took (making the XML pages not counted). */
static int build(struct tree *t, size_t total, int v, double *ret_s,
		 double *ret_cpu)
{
	size_t page, i;
	double t0, c0;

	*ret_s = *ret_cpu = 0;
	for (page = 0; page * 1000 < total; page++) {
		struct s3_list_page p;
		size_t len;
		char *x = page_xml(page, total, v, &len);
		int err;

		t0 = now();
		c0 = cpu();
		err = x ? s3_list_parse(x, len, &p) : -ENOMEM;
		free(x);
		if (err)
			return err;
		for (i = 0; i < p.nobjects && !err; i++)
			err = tree_add(t, p.objects[i].key, false,
				       p.objects[i].size, p.objects[i].mtime,
				       p.objects[i].etag, NULL);
		s3_list_page_done(&p);
		*ret_s += now() - t0;
		*ret_cpu += cpu() - c0;
		if (err)
			return err;
	}
	t0 = now();
	c0 = cpu();
	if (tree_finish(t))
		return -ENOMEM;
	*ret_s += now() - t0;
	*ret_cpu += cpu() - c0;
	return 0;
}

struct prober {
	struct tree *t;
	atomic_bool stop;
	double worst;
	size_t lookups;
	size_t misses;
};

/* Look up random keys (by path, from the root) as fast as possible,
 * noting the slowest. */
static void *probe(void *arg)
{
	struct prober *p = arg;
	unsigned seed = 1;

	while (!atomic_load(&p->stop)) {
		char key[64], *slash;
		size_t i = (size_t)rand_r(&seed) % nkeys;
		struct node *n = tree_root(p->t);
		double t0 = now(), dt;

		key_of(i, key, sizeof(key));
		slash = strchr(key, '/');
		if (slash) {
			*slash = '\0';
			n = tree_lookup(p->t, n, key);
		}
		n = n ? tree_lookup(p->t, n, slash ? slash + 1 : key) : NULL;
		dt = now() - t0;
		if (dt > p->worst)
			p->worst = dt;
		p->lookups++;
		p->misses += !n;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct tree *t = NULL, *fresh = NULL;
	struct tree_changes c;
	struct prober pr = { 0 };
	struct tree_stats st;
	pthread_t th;
	long rss0, rss1;
	double t0, c0, build_s, build_cpu, fresh_s, fresh_cpu, merge_s,
		merge_cpu;
	size_t names = 0, i;
	int err;

	for (i = 1; i < (size_t)argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < (size_t)argc)
			nkeys = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "-flat"))
			flat = true;
		else {
			fprintf(stderr, "usage: %s [-n KEYS] [-flat]\n",
				argv[0]);
			return 2;
		}
	}
	for (i = 0; i < nkeys; i++) {
		char key[64];

		key_of(i, key, sizeof(key));
		names += strlen(strrchr(key, '/') ? strrchr(key, '/') + 1
						  : key) +
			 1;
	}
	rss0 = rss_bytes();
	err = tree_new(&t);
	if (!err)
		err = build(t, nkeys, 0, &build_s, &build_cpu);
	rss1 = rss_bytes();
	if (err) {
		fprintf(stderr, "build: %s\n", strerror(-err));
		return 1;
	}
	printf("layout            %s, %zu keys, %zu nodes\n",
	       flat ? "one directory" : "directories of 1000", nkeys,
	       tree_count(t));
	printf("build             %.2f s, %.2f s CPU (parse %zu ListObjectsV2 "
	       "pages + tree_add + tree_finish; target <= 3 s for 1M)\n",
	       build_s, build_cpu, (nkeys + 999) / 1000);
	printf("memory per entry  %.0f bytes, of which name+path %.0f "
	       "(RSS growth / nodes; goal <= 200 + name)\n",
	       (double)(rss1 - rss0) / (double)tree_count(t),
	       (double)names / (double)nkeys);

	/* The relist: same keys, a tenth changed, a hundredth new. */
	err = tree_new(&fresh);
	if (!err)
		err = build(fresh, nkeys + nkeys / 100, 1, &fresh_s,
			    &fresh_cpu);
	if (err) {
		fprintf(stderr, "fresh: %s\n", strerror(-err));
		return 1;
	}
	pr.t = t;
	pthread_create(&th, NULL, probe, &pr);
	usleep(100000);
	t0 = now();
	c0 = cpu();
	err = tree_merge(t, fresh, &c);
	merge_s = now() - t0;
	merge_cpu = cpu() - c0;
	usleep(100000);
	atomic_store(&pr.stop, true);
	pthread_join(th, NULL);
	if (err) {
		fprintf(stderr, "merge: %s\n", strerror(-err));
		return 1;
	}
	printf("relist listing    %.2f s, %.2f s CPU (parse + build of the "
	       "fresh one)\n",
	       fresh_s, fresh_cpu);
	printf("merge             %.2f s, %.2f s CPU (%zu changed, %zu added; "
	       "target <= 3 s)\n",
	       merge_s, merge_cpu, c.nchanged, c.nadded);
	tree_stats(t, &st);
	printf("lock held         %.2f ms at most by the merge, %.2f ms of it "
	       "on CPU (target <= 10 ms; %llu steps)\n",
	       (double)st.max_hold_ns / 1e6, (double)st.max_hold_cpu_ns / 1e6,
	       (unsigned long long)st.steps);
	printf("lookup latency    %.2f ms worst of %zu concurrent lookups "
	       "(%zu misses)\n",
	       pr.worst * 1e3, pr.lookups, pr.misses);
	tree_changes_done(&c);
	tree_free(fresh);
	tree_free(t);
	return 0;
}
