/* A sequential stream through a file larger than the cache's budget cycles
 * through the memory of its own window (blocks it already read) instead of
 * walking through all of cache_mem in never-touched pages; a file that
 * fits stays cached whole, as before. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "check.h"
#include "opts.h"
#include "readpath.h"
#include "tree.h"

#define MiB (1024u * 1024u)
#define BS (2 * MiB)
#define WINDOW 2 /* blocks prefetched past the one being read */

static struct cache *cache;
static atomic_int fetches;
static struct node file, other;

/* Fetches complete at once, on the caller's thread. */
static void sync_fetch(void *ctx, struct block *b)
{
	atomic_fetch_add(&fetches, 1);
	memset(b->data, (int)(b->index & 0xff), b->len);
	cache_fetch_done(cache, b, 0);
}

static const struct cache_fill_ops sync_fill = { .start = sync_fetch };

/* Read @nblocks blocks of @f (a file of @nblocks * BS bytes) in order,
 * with readahead as readpath.c does it; returns how many distinct slots
 * (memory) the stream used, or -1 on an error or wrong bytes. */
static int stream(struct node *f, uint64_t nblocks)
{
	char *seen[64];
	int nseen = 0, j;
	uint64_t i, k;

	for (i = 0; i < nblocks; i++) {
		struct block *b;

		for (k = i + 1; k <= i + WINDOW && k < nblocks; k++)
			if (cache_prefetch_stream(cache, f, 0, k, BS,
						  nblocks * BS) < 0)
				return -1;
		if (cache_get(cache, f, 0, i, BS, &b))
			return -1;
		if ((unsigned char)b->data[BS - 1] != (i & 0xff)) {
			cache_unref(cache, b);
			return -1;
		}
		for (j = 0; j < nseen && seen[j] != b->data; j++)
			;
		if (j == nseen && nseen < 64)
			seen[nseen++] = b->data;
		cache_unref_behind(cache, b, true);
	}
	return nseen;
}

/* 64 MiB through a 16 MiB cache: a few slots, not all eight. */
static void test_large_file_recycles(void)
{
	int slots;

	CHECK(cache_new(16 * MiB, BS, true, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	atomic_store(&fetches, 0);
	slots = stream(&file, 32);
	CHECK(slots > 0, "stream failed");
	CHECK(slots <= WINDOW + 2, "the stream used %d slots of %d", slots,
	      16 * MiB / BS);
	CHECK(cache_used(cache) <= (WINDOW + 2) * BS,
	      "%llu bytes charged after the stream",
	      (unsigned long long)cache_used(cache));
	CHECK(atomic_load(&fetches) == 32, "%d fetches for 32 blocks",
	      atomic_load(&fetches));
	cache_free(cache);
}

/* 8 MiB through the same cache: every block stays cached, and another
 * file's blocks are never taken by a stream that wraps. */
static void test_small_file_stays(void)
{
	struct block *b;
	int i, err = 0;

	CHECK(cache_new(16 * MiB, BS, true, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	atomic_store(&fetches, 0);
	CHECK(stream(&other, 4) == 4, "the small file did not use 4 slots");
	CHECK(cache_used(cache) == 4 * BS, "used %llu",
	      (unsigned long long)cache_used(cache));
	/* A wrapping stream of another file: it may evict (LRU), but the
	 * small file's blocks are not recycled as its own while it still
	 * has free memory. */
	CHECK(stream(&file, 3) > 0, "stream failed");
	for (i = 0; i < 4 && !err; i++) {
		err = cache_get(cache, &other, 0, (uint64_t)i, BS, &b);
		if (!err)
			cache_unref(cache, b);
	}
	CHECK(!err, "cache_get: %d", err);
	CHECK(atomic_load(&fetches) == 4 + 3,
	      "%d fetches: blocks of the "
	      "file that fits were evicted",
	      atomic_load(&fetches));
	cache_free(cache);
}

/* A read begun before a relist shrank the file (new generation) goes on
 * with the size it was clamped to: no piece runs past its block's end
 * (the new size made a block shorter than the piece asked of it, and the
 * read copied whatever lay beyond it in the arena). */
static void test_read_across_shrink(void)
{
	struct options o = { .prefetch = PREFETCH_OFF };
	struct node f = { .size = BS + BS / 2 };
	struct readpath rp;
	struct block *b = NULL;
	size_t boff = 0, len = 0;
	int r;

	CHECK(cache_new(16 * MiB, BS, true, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	pthread_mutex_init(&f.lock, NULL);
	r = readpath_begin(cache, &o, &f, BS + BS / 4, BS / 4, &rp);
	CHECK(r == 0, "readpath_begin: %d", r);
	pthread_mutex_lock(&f.lock);
	f.size = BS + BS / 8; /* a relist: shorter, a new generation */
	f.generation++;
	pthread_mutex_unlock(&f.lock);
	r = readpath_next(&rp, &b, &boff, &len);
	CHECK(r == 1, "readpath_next: %d", r);
	if (r == 1) {
		CHECK(boff + len <= b->len,
		      "piece [%zu, %zu) of a block of %zu bytes", boff,
		      boff + len, b->len);
		cache_unref(cache, b);
	}
	pthread_mutex_destroy(&f.lock);
	cache_free(cache);
}

int main(void)
{
	test_large_file_recycles();
	test_small_file_stays();
	test_read_across_shrink();
	return 0;
}
