/* The block cache: blocks of files (up to block_size bytes) in one memory
 * budget, counted in bytes.
 *
 * The memory is one arena of slots, more slots than cache_mem/block_size
 * so that small files do not each take a whole block's memory; block i
 * always owns slot i. A block costs what it holds, rounded up to a page
 * (to a huge page in block-size slots, which use them): only that much
 * of its slot is faulted in, and a slot reused for a smaller block gives
 * the rest back. A slot whose block is evicted or dropped keeps its memory
 * for the next block (new pages cost a zeroing, more on a VM), within the
 * budget: what the slots hold, data and idle memory, stays within it, and
 * idle memory is given back before any data is evicted. Blocks are
 * evicted until a new one fits the budget.
 * A block is identified by (file, generation, index). The first caller to
 * ask for a missing block starts its fetch; others wait for that one fetch
 * (single flight). Blocks with references are never evicted; unreferenced
 * ready blocks sit on an LRU list and are reused from its cold end.
 *
 * Calls go both ways between the cache and whatever fills it (the fetch
 * engine), through exactly two doors: the cache calls down through the
 * struct cache_fill_ops given to cache_new() (start, promote); the filler
 * calls back up only through cache_fetch_done().
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
	bool behind;   /* a holder let go with behind: the cold end when the
			* last one does (a new cache_get() clears it) */
	bool drop;     /* dropped while held: forgotten when the last holder
			* lets go (a new cache_get() clears it) */
	size_t mem;    /* bytes of its slot charged to the budget */
	size_t pop;    /* bytes of its slot faulted in */
	struct block *hnext;
	struct block *prev, *next; /* LRU (refs == 0, READY) or free list */
};

/* What fills the cache's blocks; called without cache->lock held. */
struct cache_fill_ops {
	/* Start the fetch of @b (state FETCHING, holding one reference);
	 * call cache_fetch_done() when it ends (possibly before returning). */
	void (*start)(void *ctx, struct block *b);
	/* A reader now waits for @b, which readahead queued: fetch it
	 * before other readahead. May be NULL. */
	void (*promote)(void *ctx, struct block *b);
};

struct cache;

/*
 * cache_new() - a cache of @mem bytes in blocks of @block_size (at least
 * two blocks), filled through @fill with @ctx (both kept); with
 * @huge_pages, blocks go in transparent huge pages where @block_size is a
 * multiple of 2 MiB (else 4 KiB pages).
 * @return 0 and *ret, -EINVAL, or -ENOMEM.
 */
int cache_new(uint64_t mem, size_t block_size, bool huge_pages,
	      const struct cache_fill_ops *fill, void *ctx, struct cache **ret);
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

/* Called, without cache->lock, when the fetch of @b ended with @err, holding
 * a reference to @b that it must release with cache_unref(). */
typedef void (*cache_filled_fn)(void *ctx, struct block *b, int err);

/*
 * cache_set_filled() - @filled(ctx, b, err) is called at the end of every
 * fetch (the disk tier writes blocks behind). Set before fetches start.
 */
void cache_set_filled(struct cache *c, cache_filled_fn filled, void *ctx);

/* cache_unref() - release a reference from cache_get(). NULL is fine. */
void cache_unref(struct cache *c, struct block *b);

/*
 * cache_unref_behind() - as cache_unref(); with @behind, the caller has
 * read the block to its end and its bytes now live elsewhere too (the
 * kernel's page cache), so when the cache is full it goes first.
 */
void cache_unref_behind(struct cache *c, struct block *b, bool behind);

/*
 * cache_unref_drop() - as cache_unref(); @b leaves memory at once when
 * nobody else holds it, else it goes to the cold end when the last
 * holder lets go.
 */
void cache_unref_drop(struct cache *c, struct block *b);

/* cache_has() - whether the block is cached or being fetched. */
bool cache_has(struct cache *c, struct node *file, uint32_t generation,
	       uint64_t index);

/*
 * cache_fetch_done() - the fetch of @b ended with @err (0: @b->data holds
 * @b->len bytes). Drops the fetch's reference and wakes waiters.
 */
void cache_fetch_done(struct cache *c, struct block *b, int err);

/* cache_drop_file() - forget every block of @file: unreferenced ones at
 * once, held ones (a reader, a write behind) when the last holder lets go,
 * unless a cache_get() asks for them again before. Their budget is free at
 * once; their memory stays the cache's, for the next blocks. */
void cache_drop_file(struct cache *c, struct node *file);

/* cache_headroom() - bytes that readahead may still claim: the budget not
 * in use and evictable blocks, less those holding prefetched data not
 * read yet. */
uint64_t cache_headroom(struct cache *c);

/* Puts bytes [off, off + len) of @file into a tier below memory without
 * keeping them in memory: @return bytes of the file covered, or a negative
 * errno. */
typedef int64_t (*cache_stage_fn)(void *ctx, struct node *file, uint64_t off,
				  uint64_t len);

/* cache_set_stage() - a tier below @c that keeps bytes (the disk tier
 * sets it when it starts). Set before readers start. */
void cache_set_stage(struct cache *c, cache_stage_fn stage, void *ctx);

/*
 * cache_stage() - stage bytes [@off, @off + @len) of @file in the tiers
 * below memory, for a later reader (weightfs-ctl prefetch), without
 * keeping them in memory; the caller never asks which tier.
 * @return bytes covered, the tier's negative errno, or -EOPNOTSUPP when no
 * tier below memory keeps bytes (warm memory instead).
 */
int64_t cache_stage(struct cache *c, struct node *file, uint64_t off,
		    uint64_t len);

/* Introspection for stats and the fast path. cache_bytes(): bytes of
 * files held in ready blocks; cache_used(): bytes of the budget charged
 * (what the slots hold, rounded to their pages); cache_huge_pages():
 * whether block-size slots are in huge pages. */
uint64_t cache_bytes(struct cache *c);
uint64_t cache_used(struct cache *c);
size_t cache_block_size(const struct cache *c);
bool cache_huge_pages(const struct cache *c);

#endif
