/* The block cache's memory: a block costs what it holds (its length
 * rounded up to its slot's page), only that is faulted in, a slot reused
 * for a smaller block gives the rest back, a freed slot keeps its memory
 * for the next block within the budget, the budget is counted in bytes
 * and bounds the number of cached files, not cache_mem / block_size. */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
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

	CHECK(cache_new(64 * MiB, 8 * MiB, true, &sync_fill, NULL, &cache) == 0,
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

	CHECK(cache_new(8 * MiB, 2 * MiB, true, &sync_fill, NULL, &cache) == 0,
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
	CHECK(cache_new(256 * KiB, 64 * KiB, true, &sync_fill, NULL, &cache) ==
		      0,
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
	/* Dropping the file frees the budget; the memory stays, for reuse. */
	cache_drop_file(cache, &file);
	CHECK(cache_used(cache) == 0 && cache_bytes(cache) == 0,
	      "after drop: used %llu bytes %llu",
	      (unsigned long long)cache_used(cache),
	      (unsigned long long)cache_bytes(cache));
	CHECK(data && resident_pages(data, 64 * KiB) == 1,
	      "%zu pages of the dropped small block resident",
	      data ? resident_pages(data, 64 * KiB) : 0);
	cache_free(cache);
}

/* Sum of resident pages over the blocks' slots in @slots. */
static size_t resident_slots(char **slots, int n, size_t len)
{
	size_t sum = 0;
	int i;

	for (i = 0; i < n; i++)
		sum += resident_pages(slots[i], len);
	return sum;
}

/* A file read, dropped (weightfs-ctl evict), read again: the second read
 * goes to the slots the first one faulted in, most recently freed first,
 * and faults in no new memory; with huge-page slots too. */
static void test_drop_then_reuse(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t bs[2] = { 64 * KiB, 2 * MiB };
	char *slots[4];
	struct block *b;
	int i, k, err = 0, reused;

	for (k = 0; k < 2; k++) {
		/* Room for 8 blocks; the file has 4. */
		CHECK(cache_new(8 * bs[k], bs[k], true, &sync_fill, NULL,
				&cache) == 0,
		      "cache_new");
		for (i = 0; i < 4 && !err; i++) {
			err = get((uint64_t)i, bs[k], &b);
			if (!err) {
				slots[i] = b->data;
				cache_unref(cache, b);
			}
		}
		CHECK(!err, "get: %d", err);
		cache_drop_file(cache, &file);
		CHECK(cache_used(cache) == 0, "used %llu after drop",
		      (unsigned long long)cache_used(cache));
		CHECK(resident_slots(slots, 4, bs[k]) == 4 * bs[k] / page,
		      "block %zu: %zu pages resident after drop, want %zu",
		      bs[k], resident_slots(slots, 4, bs[k]), 4 * bs[k] / page);
		atomic_store(&fetches, 0);
		reused = 0;
		for (i = 0; i < 4 && !err; i++) {
			err = get((uint64_t)(10 + i), bs[k], &b);
			if (!err) {
				reused += b->data == slots[0] ||
					  b->data == slots[1] ||
					  b->data == slots[2] ||
					  b->data == slots[3];
				CHECK((unsigned char)b->data[bs[k] - 1] ==
					      10 + i,
				      "wrong bytes");
				cache_unref(cache, b);
			}
		}
		CHECK(!err && atomic_load(&fetches) == 4, "refetch: %d", err);
		CHECK(reused == 4,
		      "block %zu: %d of 4 blocks went to memory already "
		      "faulted in",
		      bs[k], reused);
		cache_free(cache);
		cache = NULL;
	}
}

/* Memory kept by free slots counts against the budget with the data: a
 * block that needs room gets it from that memory, given back, before any
 * cached block is evicted, and the slots never hold more than cache_mem. */
static void test_idle_memory_within_budget(void)
{
	char *slots[4];
	struct block *b;
	int i, err = 0;

	/* 32 MiB of 8 MiB blocks: huge-page slots, and small ones. */
	CHECK(cache_new(32 * MiB, 8 * MiB, true, &sync_fill, NULL, &cache) == 0,
	      "cache_new");
	for (i = 0; i < 4 && !err; i++) {
		err = get((uint64_t)i, 8 * MiB, &b);
		if (!err) {
			slots[i] = b->data;
			cache_unref(cache, b);
		}
	}
	CHECK(!err, "get: %d", err);
	cache_drop_file(cache, &file);
	CHECK(resident_slots(slots, 4, 8 * MiB) == 4 * 8 * MiB / 4096,
	      "%zu pages resident after drop",
	      resident_slots(slots, 4, 8 * MiB));
	/* Three new blocks go to three of the warm slots. */
	for (i = 0; i < 3 && !err; i++) {
		err = get((uint64_t)(10 + i), 8 * MiB, &b);
		if (!err)
			cache_unref(cache, b);
	}
	CHECK(!err && cache_used(cache) == 3 * 8 * MiB, "used %llu",
	      (unsigned long long)cache_used(cache));
	CHECK(resident_slots(slots, 4, 8 * MiB) == 4 * 8 * MiB / 4096,
	      "%zu pages resident", resident_slots(slots, 4, 8 * MiB));
	/* A small file needs a page more than the budget leaves beside the
	 * idle slot: the idle slot's memory goes back, no block is evicted. */
	atomic_store(&fetches, 0);
	err = err ? err : get(100, 400, &b);
	if (!err)
		cache_unref(cache, b);
	CHECK(!err && cache_used(cache) == 3 * 8 * MiB + 4 * KiB, "used %llu",
	      (unsigned long long)cache_used(cache));
	for (i = 0; i < 3; i++)
		CHECK(cache_has(cache, &file, 0, (uint64_t)(10 + i)),
		      "block %d evicted for idle memory", 10 + i);
	CHECK(resident_slots(slots, 4, 8 * MiB) == 3 * 8 * MiB / 4096,
	      "%zu pages resident in the big slots: idle memory kept over "
	      "the budget",
	      resident_slots(slots, 4, 8 * MiB));
	cache_free(cache);
}

/* Huge-page slots are charged by the huge page: what they really take. */
static void test_huge_cost(void)
{
	struct block *b;
	int err;

	CHECK(cache_new(32 * MiB, 8 * MiB, true, &sync_fill, NULL, &cache) == 0,
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

/* The VmFlags of the mapping holding @addr carry @flag ("hg": huge pages
 * advised, "nh": refused), per /proc/self/smaps. */
static bool vma_has_flag(const void *addr, const char *flag)
{
	char line[512];
	unsigned long lo, hi;
	bool in = false, has = false;
	FILE *f = fopen("/proc/self/smaps", "re");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping */
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
		else if (in && !strncmp(line, "VmFlags:", 8))
			has = strstr(line + 8, flag) != NULL;
	}
	if (f)
		fclose(f);
	return has;
}

/* cache_new()'s @huge_pages: 8 MiB slots in huge pages, charged by the
 * huge page, or in 4 KiB pages, charged by the page. */
static void test_page_size_choice(void)
{
	static const struct {
		bool huge;
		const char *flag;
		size_t cost;
	} cases[] = { { true, " hg", 4 * MiB }, { false, " nh", 3 * MiB } };
	struct block *b;
	size_t i;
	int err;

	for (i = 0; i < 2; i++) {
		CHECK(cache_new(32 * MiB, 8 * MiB, cases[i].huge, &sync_fill,
				NULL, &cache) == 0,
		      "cache_new");
		err = get(0, 3 * MiB, &b);
		CHECK(!err, "get: %d", err);
		CHECK(b->mem == cases[i].cost, "huge %d: 3 MiB cost %zu",
		      cases[i].huge, b->mem);
		CHECK(vma_has_flag(b->data, cases[i].flag),
		      "huge %d: the slot's mapping lacks VmFlags%s",
		      cases[i].huge, cases[i].flag);
		cache_unref(cache, b);
		cache_free(cache);
	}
}

/* Out of slots of one class, not of memory: a block of that class is
 * evicted, not the colder small blocks that hold little. */
static void test_class_short_of_slots(void)
{
	struct block *b;
	int i, err = 0;

	/* 8 MiB of 4 MiB blocks: two block-size slots. */
	CHECK(cache_new(8 * MiB, 4 * MiB, true, &sync_fill, NULL, &cache) == 0,
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
	test_page_size_choice();
	test_class_short_of_slots();
	test_drop_then_reuse();
	test_idle_memory_within_budget();
	return 0;
}
