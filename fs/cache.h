/* The block cache: blocks of files (up to block_size bytes) in one memory
 * budget, counted in bytes.
 *
 * The memory is one arena of slots, more slots than cache_mem/block_size
 * so that small files do not each take a whole block's memory; block i
 * always owns slot i. A block costs what it holds, rounded up to a page
 * (to a huge page in block-size slots, which use them): only that much
 * of its slot is faulted in, and a slot reused for a smaller block gives
 * the rest back. Blocks are evicted until a new one fits the budget.
 * A block is identified by (file, generation, index). The first caller to
 * ask for a missing block starts its fetch; others wait for that one fetch
 * (single flight). Blocks with references are never evicted; unreferenced
 * ready blocks sit on an LRU list and are reused from its cold end.
 *
 * Thread-safe: everything below is protected by cache->lock, except a
 * ready block's data, which is immutable while the caller holds a
 * reference. */
#ifndef WFS_FS_CACHE_H
#define WFS_FS_CACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct node;

enum block_state {
	BLOCK_FREE,
	BLOCK_FETCHING,
	BLOCK_READY,
	BLOCK_FAILED,
};

struct block {
	struct node *file; /* identity: file, generation, index */
	uint32_t generation;
	uint64_t index;
	enum block_state state;
	int err;       /* BLOCK_FAILED: negative errno */
	size_t len;    /* bytes of the file in this block */
	char *data;    /* the block's slot in the arena */
	unsigned refs; /* holders: readers, and the fetch while it runs */
	bool prefetch; /* started by readahead, not read yet */
	size_t mem;    /* bytes of its slot charged to the budget */
	size_t pop;    /* bytes of its slot faulted in */
	struct block *hnext;
	struct block *prev, *next; /* LRU (refs == 0, READY) or free list */
};

/* Starts the fetch of @b (state FETCHING, holding one reference); calls
 * cache_fetch_done() when it ends. Called without cache->lock held. */
typedef void (*cache_fetch_fn)(void *ctx, struct block *b);

struct cache;

/*
 * cache_new() - a cache of @mem bytes in blocks of at most @block_size
 * (@mem at least two blocks). @return 0 and *ret, -EINVAL, or -ENOMEM.
 */
int cache_new(uint64_t mem, size_t block_size, cache_fetch_fn fetch, void *ctx,
	      struct cache **ret);
void cache_free(struct cache *c);

/*
 * cache_get() - block @index of @file at @generation, with a reference
 * held, once it is ready: from the cache, from a fetch already running, or
 * from a fetch this call starts. Waits for a free slot when every block is
 * in use.
 * @return 0 and *ret_block (release with cache_unref()), or the fetch's
 * negative errno.
 */
int cache_get(struct cache *c, struct node *file, uint32_t generation,
	      uint64_t index, size_t len, struct block **ret_block);

/*
 * cache_prefetch() - start fetching a block unless it is cached or being
 * fetched; never waits.
 * @return 1 when a fetch started, 0 when already there, -EBUSY when no
 * slot is free without evicting prefetched blocks not read yet.
 */
int cache_prefetch(struct cache *c, struct node *file, uint32_t generation,
		   uint64_t index, size_t len);

/*
 * cache_prefetch_stream() - cache_prefetch() for a sequential stream
 * through a file of @fsize bytes: when that is more than the whole budget
 * (the stream wraps the cache anyway), the block takes the memory of the
 * stream's own blocks already read, coldest first, rather than touching
 * fresh memory. @fsize 0: cache_prefetch().
 */
int cache_prefetch_stream(struct cache *c, struct node *file,
			  uint32_t generation, uint64_t index, size_t len,
			  uint64_t fsize);

/*
 * cache_set_promote() - @promote(ctx, b) is called, without cache->lock,
 * when a reader starts waiting for a block that readahead queued: the
 * fetch engine then moves it ahead of other readahead.
 */
void cache_set_promote(struct cache *c, cache_fetch_fn promote);

/* cache_unref() - release a reference from cache_get(). NULL is fine. */
void cache_unref(struct cache *c, struct block *b);

/*
 * cache_unref_behind() - as cache_unref(); with @behind, the caller has
 * read the block to its end and its bytes now live elsewhere too (the
 * kernel's page cache), so when the cache is full it goes first.
 */
void cache_unref_behind(struct cache *c, struct block *b, bool behind);

/*
 * cache_fetch_done() - the fetch of @b ended with @err (0: @b->data holds
 * @b->len bytes). Drops the fetch's reference and wakes waiters.
 */
void cache_fetch_done(struct cache *c, struct block *b, int err);

/* cache_drop_file() - forget every unreferenced block of @file. */
void cache_drop_file(struct cache *c, struct node *file);

/* cache_headroom() - bytes that readahead may still claim: the budget not
 * in use and evictable blocks, less those holding prefetched data not
 * read yet. */
uint64_t cache_headroom(struct cache *c);

/* Introspection for stats and the fast path. cache_bytes(): bytes of
 * files held in ready blocks; cache_used(): bytes of the budget charged
 * (what the slots hold, rounded to their pages). */
uint64_t cache_bytes(struct cache *c);
uint64_t cache_used(struct cache *c);
size_t cache_block_size(const struct cache *c);

#endif
