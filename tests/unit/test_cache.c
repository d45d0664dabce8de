/* The block cache: single flight, LRU eviction, blocks in use never
 * evicted, failed fetches not cached, the budget respected. Fetches run
 * on a thread of this test, as the real engine's do. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "stats.h"
#include "tree.h"
#include "check.h"

#define BS (64u << 10)

static struct cache *cache;
static atomic_int fetches;
static atomic_int fail_next;

static void *complete(void *arg)
{
	struct block *b = arg;
	int err = atomic_exchange(&fail_next, 0);

	usleep(20000); /* long enough for the readers to pile up */
	if (!err)
		memset(b->data, (int)(b->index & 0xff), b->len);
	cache_fetch_done(cache, b, err);
	return NULL;
}

static void fake_fetch(void *ctx, struct block *b)
{
	pthread_t t;

	atomic_fetch_add(&fetches, 1);
	CHECK_EQ(b->state, BLOCK_FETCHING);
	pthread_create(&t, NULL, complete, b);
	pthread_detach(t);
}

static struct node file;
static atomic_int promotes;

static void fake_promote(void *ctx, struct block *b)
{
	CHECK(b->state == BLOCK_FETCHING || b->state == BLOCK_READY);
	atomic_fetch_add(&promotes, 1);
}

static const struct cache_fill_ops fill = { fake_fetch, NULL };
static const struct cache_fill_ops fill_promote = { fake_fetch, fake_promote };

static void *reader(void *arg)
{
	struct block *b;
	int err = cache_get(cache, &file, 0, 7, BS, &b);

	CHECK(!err);
	CHECK(b->len == BS && (unsigned char)b->data[BS - 1] == 7);
	cache_unref(cache, b);
	return NULL;
}

int main(void)
{
	struct block *held[4], *b;
	pthread_t t[8];
	int i;

	CHECK_EQ(cache_new(BS, BS, true, &fill, NULL, &cache), -EINVAL);
	CHECK_EQ(cache_new(4 * BS, 1000, true, &fill, NULL, &cache), -EINVAL);
	CHECK_EQ(cache_new(4 * BS, BS, true, &fill_promote, NULL, &cache), 0);

	/* Single flight: eight readers of one block, one fetch. */
	for (i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, reader, NULL);
	for (i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	CHECK_EQ(atomic_load(&fetches), 1);
	CHECK_EQ(cache_bytes(cache), BS);

	/* A hit fetches nothing. */
	CHECK_EQ(cache_get(cache, &file, 0, 7, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&fetches), 1);

	/* Another generation of the file is another block. */
	CHECK_EQ(cache_get(cache, &file, 1, 7, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&fetches), 2);

	/* Fill the cache and hold every block: prefetch finds no slot. */
	for (i = 0; i < 4; i++)
		CHECK_EQ(cache_get(cache, &file, 2, (uint64_t)i, BS, &held[i]),
			 0);
	CHECK_EQ(cache_prefetch(cache, &file, 2, 99, BS), -EBUSY);
	CHECK_EQ(cache_headroom(cache), 0);
	/* Blocks in use were not evicted: their bytes are intact. */
	for (i = 0; i < 4; i++)
		CHECK_EQ((unsigned char)held[i]->data[0], i);
	for (i = 0; i < 4; i++)
		cache_unref(cache, held[i]);
	CHECK_EQ(cache_headroom(cache), 4 * BS);

	/* LRU: touch block 0, then a new block evicts the coldest (1). */
	CHECK_EQ(cache_get(cache, &file, 2, 0, BS, &b), 0);
	cache_unref(cache, b);
	i = atomic_load(&fetches);
	CHECK_EQ(cache_get(cache, &file, 2, 50, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(cache_get(cache, &file, 2, 0, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&fetches), i + 1);
	CHECK_EQ(cache_get(cache, &file, 2, 1, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&fetches), i + 2);

	/* Prefetched blocks not read yet are not taken by more readahead. */
	cache_drop_file(cache, &file);
	CHECK_EQ(cache_headroom(cache), 4 * BS);
	for (i = 0; i < 4; i++)
		CHECK_EQ(cache_prefetch(cache, &file, 3, (uint64_t)i, BS), 1);
	usleep(100000);
	CHECK_EQ(cache_prefetch(cache, &file, 3, 10, BS), -EBUSY);
	CHECK_EQ(cache_prefetch(cache, &file, 3, 2, BS), 0);
	CHECK_EQ(cache_headroom(cache), 0);
	/* ... and reading one makes it evictable. */
	CHECK_EQ(cache_get(cache, &file, 3, 2, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(cache_headroom(cache), BS);

	/* A failed fetch is reported and not cached: the next get retries. */
	atomic_store(&fail_next, -EIO);
	i = atomic_load(&fetches);
	CHECK_EQ(cache_get(cache, &file, 4, 0, BS, &b), -EIO);
	CHECK_EQ(cache_get(cache, &file, 4, 0, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&fetches), i + 2);

	/* A reader waiting for a block readahead queued promotes its fetch;
	 * one that finds it ready does not. */
	cache_drop_file(cache, &file);
	CHECK_EQ(cache_prefetch(cache, &file, 5, 0, BS), 1);
	CHECK_EQ(cache_get(cache, &file, 5, 0, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&promotes), 1);
	CHECK_EQ(cache_get(cache, &file, 5, 0, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&promotes), 1);

	/* A fetch that timed out for good fails again at once for a while
	 * (the kernel's second read of the page), then is retried. */
	atomic_store(&fail_next, -ETIMEDOUT);
	i = atomic_load(&fetches);
	CHECK_EQ(cache_get(cache, &file, 6, 0, BS, &b), -ETIMEDOUT);
	CHECK_EQ(cache_get(cache, &file, 6, 0, BS, &b), -ETIMEDOUT);
	CHECK_EQ(cache_prefetch(cache, &file, 6, 0, BS), 0);
	CHECK_EQ(atomic_load(&fetches), i + 1);
	usleep(1100000);
	CHECK_EQ(cache_get(cache, &file, 6, 0, BS, &b), 0);
	cache_unref(cache, b);
	CHECK_EQ(atomic_load(&fetches), i + 2);

	/* cache_peek(): a ready block, never a fetch. */
	CHECK_EQ(cache_peek(cache, &file, 6, 0, &b), 0);
	CHECK_EQ((unsigned char)b->data[0], 0);
	cache_unref(cache, b);
	CHECK_EQ(cache_peek(cache, &file, 6, 1, &b), -ENOENT);
	CHECK_EQ(atomic_load(&fetches), i + 2);

	/* Blocks the disk tier has yet to write: readahead does not evict
	 * them, and they are no headroom; once written they are. */
	cache_drop_file(cache, &file);
	for (i = 0; i < 4; i++) {
		CHECK_EQ(cache_get(cache, &file, 7, (uint64_t)i, BS, &held[i]),
			 0);
		cache_set_unwritten(cache, held[i], true);
		cache_unref(cache, held[i]);
	}
	CHECK_EQ(cache_headroom(cache), 0);
	CHECK_EQ(cache_prefetch(cache, &file, 7, 10, BS), -EBUSY);
	CHECK_EQ(cache_peek(cache, &file, 7, 1, &b), 0);
	cache_unref_written(cache, b);
	CHECK_EQ(cache_headroom(cache), BS);
	CHECK_EQ(cache_prefetch(cache, &file, 7, 10, BS), 1);
	usleep(100000);
	CHECK_EQ(cache_peek(cache, &file, 7, 1, &b), -ENOENT); /* evicted */
	CHECK_EQ(cache_peek(cache, &file, 7, 0, &b), 0);       /* kept */
	cache_unref(cache, b);

	/* Budget: never more ready bytes than the cache holds. */
	CHECK(cache_bytes(cache) <= 4 * BS);

	cache_free(cache);
	cache_free(NULL);
	printf("cache: ok\n");
	return 0;
}
