/* The block cache's memory: a block costs what it holds (its length
 * rounded up to its slot's page), only that is faulted in, a slot reused
 * for a smaller block gives the rest back, the budget is counted in bytes
 * and bounds the number of cached files, not cache_mem / block_size. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache.h"
#include "check.h"
#include "tree.h"

#define KiB (1024u)
#define MiB (1024u * 1024u)

static struct cache *cache;
static atomic_int fetches;
static struct node file;

/* Fetches complete at once, on the caller's thread. */
static void sync_fetch(void *ctx, struct block *b)
{
	atomic_fetch_add(&fetches, 1);
	memset(b->data, (int)(b->index & 0xff), b->len);
	cache_fetch_done(cache, b, 0);
}

static const struct cache_fill_ops sync_fill = { .start = sync_fetch };

/* Pages of [p, p + len) resident, per mincore(). */
static size_t resident_pages(const void *p, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 0, i;
	size_t npages = (len + page - 1) / page;
	unsigned char *vec = calloc(npages, 1);

	if (!vec || mincore((void *)p, len, vec) < 0) {
		free(vec);
		return (size_t)-1;
	}
	for (i = 0; i < npages; i++)
		n += vec[i] & 1;
	free(vec);
	return n;
}

static long vm_rss_kib(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "re");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

static int get(uint64_t index, size_t len, struct block **ret)
{
	return cache_get(cache, &file, 0, index, len, ret);
}

/* 2000 files of 400 bytes in a 64 MiB cache of 8 MiB blocks (8 blocks'
 * worth): all stay cached, each costs a page, the RSS barely moves. */
static void test_many_small_files(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct block *b;
	long rss0, rss1;
	int i, err = 0, wrong = 0;

	CHECK(cache_new(64 * MiB, 8 * MiB, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	atomic_store(&fetches, 0);
	rss0 = vm_rss_kib();
	for (i = 0; i < 1000; i++) {
		err |= get((uint64_t)i, 400, &b);
		if (err)
			break;
		wrong += b->mem != page || b->pop != page ||
			 (unsigned char)b->data[399] != (i & 0xff);
		cache_unref(cache, b);
	}
	rss1 = vm_rss_kib();
	CHECK(!err, "cache_get failed: %d", err);
	CHECK(!wrong, "%d blocks did not cost one page or held wrong bytes",
	      wrong);
	CHECK(cache_bytes(cache) == 1000 * 400, "cache_bytes %llu",
	      (unsigned long long)cache_bytes(cache));
	CHECK(cache_used(cache) == 1000 * page, "cache_used %llu",
	      (unsigned long long)cache_used(cache));
	CHECK(rss1 - rss0 < 16 * 1024,
	      "RSS grew by %ld KiB for 1000 small blocks", rss1 - rss0);
	/* Every one is still cached: no new fetch. */
	for (i = 0; i < 1000 && !err; i++) {
		err = get((uint64_t)i, 400, &b);
		if (!err)
			cache_unref(cache, b);
	}
	CHECK(atomic_load(&fetches) == 1000,
	      "%d fetches: small files were evicted", atomic_load(&fetches));
	cache_free(cache);
}

/* Full blocks use the whole budget; a small block then evicts one of them
 * and the budget holds, counted in bytes. */
static void test_budget_in_bytes(void)
{
	struct block *b, *held[4];
	int i, err = 0;

	CHECK(cache_new(8 * MiB, 2 * MiB, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	atomic_store(&fetches, 0);
	for (i = 0; i < 4 && !err; i++) {
		err = get((uint64_t)i, 2 * MiB, &b);
		if (!err)
			cache_unref(cache, b);
	}
	CHECK(!err && cache_used(cache) == 8 * MiB, "used %llu",
	      (unsigned long long)cache_used(cache));
	CHECK(cache_headroom(cache) == 8 * MiB, "headroom %llu",
	      (unsigned long long)cache_headroom(cache));
	err = get(100, 5000, &b);
	CHECK(!err, "small block: %d", err);
	if (!err) {
		CHECK(b->mem == 8 * KiB, "5000 bytes cost %zu", b->mem);
		cache_unref(cache, b);
	}
	CHECK(cache_used(cache) == 6 * MiB + 8 * KiB, "used %llu",
	      (unsigned long long)cache_used(cache));
	/* Block 0 was the coldest: evicted; 1..3 stayed. */
	for (i = 1; i < 4 && !err; i++) {
		err = get((uint64_t)i, 2 * MiB, &b);
		if (!err)
			cache_unref(cache, b);
	}
	CHECK(atomic_load(&fetches) == 5, "%d fetches", atomic_load(&fetches));
	/* With every full block held, another one cannot fit: a prefetch
	 * is refused rather than going over the budget. */
	for (i = 0; i < 4 && !err; i++)
		err = get((uint64_t)(10 + i), 2 * MiB, &held[i]);
	CHECK(!err, "holding 4 blocks: %d", err);
	CHECK(cache_used(cache) <= 8 * MiB, "used %llu over the budget",
	      (unsigned long long)cache_used(cache));
	CHECK(cache_prefetch(cache, &file, 0, 50, 2 * MiB) == -EBUSY,
	      "prefetch past the budget");
	CHECK(cache_headroom(cache) == 0, "headroom %llu",
	      (unsigned long long)cache_headroom(cache));
	for (i = 0; i < 4 && !err; i++)
		cache_unref(cache, held[i]);
	cache_free(cache);
}

/* A slot reused for a smaller block gives the rest of its memory back;
 * block sizes that are not a huge page multiple (one class of slots). */
static void test_slot_shrinks(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct block *b;
	int i, err = 0;
	char *data = NULL;

	/* 256 KiB of 64 KiB blocks: four slots, exactly four full blocks. */
	CHECK(cache_new(256 * KiB, 64 * KiB, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	for (i = 0; i < 4 && !err; i++) {
		err = get((uint64_t)i, 64 * KiB, &b);
		if (!err) {
			if (i == 0)
				data = b->data;
			CHECK(resident_pages(b->data, 64 * KiB) ==
				      64 * KiB / page,
			      "a full block is not all resident");
			cache_unref(cache, b);
		}
	}
	/* Block 0's slot is the coldest: reused for 100 bytes. */
	err = get(9, 100, &b);
	CHECK(!err, "get: %d", err);
	if (!err) {
		CHECK(b->data == data, "not the coldest slot reused");
		CHECK(b->mem == page && b->pop == page, "mem %zu pop %zu",
		      b->mem, b->pop);
		CHECK(resident_pages(b->data, 64 * KiB) == 1,
		      "%zu pages resident after shrinking to one",
		      resident_pages(b->data, 64 * KiB));
		CHECK((unsigned char)b->data[99] == 9, "wrong bytes");
		cache_unref(cache, b);
	}
	CHECK(cache_used(cache) == 3 * 64 * KiB + page, "used %llu",
	      (unsigned long long)cache_used(cache));
	/* Dropping the file gives every slot's memory back. */
	cache_drop_file(cache, &file);
	CHECK(cache_used(cache) == 0 && cache_bytes(cache) == 0,
	      "after drop: used %llu bytes %llu",
	      (unsigned long long)cache_used(cache),
	      (unsigned long long)cache_bytes(cache));
	CHECK(data && resident_pages(data, 64 * KiB) == 0,
	      "a dropped block's memory stayed resident");
	cache_free(cache);
}

/* Huge-page slots are charged by the huge page: what they really take. */
static void test_huge_cost(void)
{
	struct block *b;
	int err;

	CHECK(cache_new(32 * MiB, 8 * MiB, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	err = get(0, 3 * MiB, &b);
	CHECK(!err, "get: %d", err);
	if (!err) {
		CHECK(b->mem == 4 * MiB, "3 MiB cost %zu", b->mem);
		cache_unref(cache, b);
	}
	err = get(1, 2 * MiB - 1, &b);
	CHECK(!err, "get: %d", err);
	if (!err) {
		CHECK(b->mem == 2 * MiB, "2 MiB - 1 cost %zu", b->mem);
		cache_unref(cache, b);
	}
	cache_free(cache);
}

/* Out of slots of one class, not of memory: a block of that class is
 * evicted, not the colder small blocks that hold little. */
static void test_class_short_of_slots(void)
{
	struct block *b;
	int i, err = 0;

	/* 8 MiB of 4 MiB blocks: two block-size slots. */
	CHECK(cache_new(8 * MiB, 4 * MiB, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	atomic_store(&fetches, 0);
	for (i = 0; i < 10 && !err; i++) { /* small, and coldest */
		err = get((uint64_t)(100 + i), 1000, &b);
		if (!err)
			cache_unref(cache, b);
	}
	for (i = 0; i < 2 && !err; i++) { /* two 2 MiB tails */
		err = get((uint64_t)i, 2 * MiB, &b);
		if (!err)
			cache_unref(cache, b);
	}
	err = err ? err : get(2, 2 * MiB, &b);
	CHECK(!err, "get: %d", err);
	if (!err)
		cache_unref(cache, b);
	for (i = 0; i < 10 && !err; i++) {
		err = get((uint64_t)(100 + i), 1000, &b);
		if (!err)
			cache_unref(cache, b);
	}
	CHECK(atomic_load(&fetches) == 13,
	      "%d fetches: small blocks were evicted for a slot",
	      atomic_load(&fetches));
	CHECK(cache_used(cache) == 4 * MiB + 10 * 4 * KiB, "used %llu",
	      (unsigned long long)cache_used(cache));
	cache_free(cache);
}

int main(void)
{
	test_many_small_files();
	test_budget_in_bytes();
	test_slot_shrinks();
	test_huge_cost();
	test_class_short_of_slots();
	if (failures)
		fprintf(stderr, "%d checks failed\n", failures);
	return failures != 0;
}
