#include "cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stats.h"

#define HUGE_PAGE (2u << 20)

struct cache {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a fetch ended or a slot was freed */
	size_t block_size;
	size_t nblocks;
	void *map; /* the mapping, of map_len bytes */
	size_t map_len;
	char *arena;	      /* its first huge-page boundary */
	struct block *blocks; /* nblocks, block i owns slot i */
	struct block **hash;  /* protected by lock, as is all below */
	size_t hash_mask;
	struct block *free_list;
	struct block lru;	  /* sentinel: next is hottest, prev coldest */
	size_t nfree;		  /* blocks on the free list */
	size_t nlru;		  /* blocks on the LRU */
	size_t unread_prefetched; /* LRU blocks with prefetch set */
	uint64_t ready_bytes;
	const struct cache_fill_ops *fill;
	void *ctx;
};

static size_t hash_of(const struct node *file, uint32_t gen, uint64_t index)
{
	uint64_t h = (uint64_t)(uintptr_t)file * 0x9E3779B97F4A7C15ULL;

	h ^= (index + ((uint64_t)gen << 40)) * 0xC2B2AE3D27D4EB4FULL;
	return (size_t)(h ^ (h >> 29));
}

int cache_new(uint64_t mem, size_t block_size,
	      const struct cache_fill_ops *fill, void *ctx, struct cache **ret)
{
	struct cache *c;
	size_t i, hsize = 16;

	if (block_size < 4096 || block_size % 4096 || mem / block_size < 2)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->block_size = block_size;
	c->nblocks = mem / block_size;
	c->fill = fill;
	c->ctx = ctx;
	c->map = MAP_FAILED;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->lru.next = c->lru.prev = &c->lru;
	while (hsize < c->nblocks * 2)
		hsize *= 2;
	c->hash_mask = hsize - 1;
	c->hash = calloc(hsize, sizeof(*c->hash));
	c->blocks = calloc(c->nblocks, sizeof(*c->blocks));
	if (!c->hash || !c->blocks)
		goto fail;
	/* Memory is only touched, and so only counted, as blocks fill. */
	c->map_len = c->nblocks * block_size + HUGE_PAGE;
	c->map = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->map == MAP_FAILED)
		goto fail;
	c->arena = (char *)(((uintptr_t)c->map + HUGE_PAGE - 1) &
			    ~(uintptr_t)(HUGE_PAGE - 1));
	/* Huge pages: a 4 KiB page fault per 4 KiB filled cost a third of
	 * the daemon's CPU on a cold read. */
	madvise(c->arena, c->nblocks * block_size, MADV_HUGEPAGE);
	for (i = c->nblocks; i-- > 0;) {
		struct block *b = &c->blocks[i];

		b->data = c->arena + i * block_size;
		b->next = c->free_list;
		c->free_list = b;
	}
	c->nfree = c->nblocks;
	*ret = c;
	return 0;
fail:
	cache_free(c);
	return -ENOMEM;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	if (c->map != MAP_FAILED)
		munmap(c->map, c->map_len);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->blocks);
	free(c->hash);
	free(c);
}

static struct block *find(struct cache *c, const struct node *file,
			  uint32_t gen, uint64_t index)
{
	struct block *b = c->hash[hash_of(file, gen, index) & c->hash_mask];

	for (; b; b = b->hnext)
		if (b->file == file && b->index == index &&
		    b->generation == gen)
			return b;
	return NULL;
}

static void hash_remove(struct cache *c, struct block *b)
{
	struct block **p = &c->hash[hash_of(b->file, b->generation, b->index) &
				    c->hash_mask];

	while (*p && *p != b)
		p = &(*p)->hnext;
	if (*p)
		*p = b->hnext;
	b->hnext = NULL;
}

static void lru_unlink(struct cache *c, struct block *b)
{
	b->prev->next = b->next;
	b->next->prev = b->prev;
	b->prev = b->next = NULL;
	c->nlru--;
	if (b->prefetch)
		c->unread_prefetched--;
}

/* Retire a block nobody references: to the LRU if it holds data (the
 * hot end, or the cold end when @behind), else back to the free list. */
static void retire(struct cache *c, struct block *b, bool behind)
{
	if (b->state == BLOCK_READY) {
		struct block *at = behind ? c->lru.prev : &c->lru;

		b->next = at->next;
		b->prev = at;
		at->next->prev = b;
		at->next = b;
		c->nlru++;
		if (b->prefetch)
			c->unread_prefetched++;
		return;
	}
	hash_remove(c, b);
	b->state = BLOCK_FREE;
	b->file = NULL;
	b->next = c->free_list;
	c->free_list = b;
	c->nfree++;
}

/* A slot for a new block: a free one, else the coldest ready block nobody
 * holds; @keep_unread spares prefetched blocks not read yet. */
static struct block *take_slot(struct cache *c, bool keep_unread)
{
	struct block *b = c->free_list;

	if (b) {
		c->free_list = b->next;
		c->nfree--;
		b->next = NULL;
		return b;
	}
	for (b = c->lru.prev; b != &c->lru; b = b->prev) {
		if (keep_unread && b->prefetch)
			continue;
		lru_unlink(c, b);
		hash_remove(c, b);
		c->ready_bytes -= b->len;
		STAT_ADD(cache_evictions, 1);
		return b;
	}
	return NULL;
}

static void claim(struct cache *c, struct block *b, struct node *file,
		  uint32_t gen, uint64_t index, size_t len, bool prefetch)
{
	size_t h = hash_of(file, gen, index) & c->hash_mask;

	b->file = file;
	b->generation = gen;
	b->index = index;
	b->len = len;
	b->state = BLOCK_FETCHING;
	b->err = 0;
	b->prefetch = prefetch;
	b->refs = 1; /* the fetch's */
	b->hnext = c->hash[h];
	c->hash[h] = b;
}

/* Hand a claimed block to the fetch engine. The block is ours alone until
 * then, so a slot's first use is faulted in here, outside the lock, with
 * one call rather than a page fault per page. */
static void start_fetch(struct cache *c, struct block *b)
{
	if (!b->populated) {
		madvise(b->data, c->block_size, MADV_POPULATE_WRITE);
		b->populated = true;
	}
	c->fill->start(c->ctx, b);
}

int cache_get(struct cache *c, struct node *file, uint32_t generation,
	      uint64_t index, size_t len, struct block **ret_block)
{
	struct block *b;
	int err;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		b = find(c, file, generation, index);
		if (b)
			break;
		b = take_slot(c, false);
		if (b) {
			claim(c, b, file, generation, index, len, false);
			b->refs++;
			STAT_ADD(cache_misses, 1);
			pthread_mutex_unlock(&c->lock);
			start_fetch(c, b);
			pthread_mutex_lock(&c->lock);
			goto wait;
		}
		/* Every block is held: wait for one to be released. */
		pthread_cond_wait(&c->cond, &c->lock);
	}
	if (b->refs == 0 && b->state == BLOCK_READY)
		lru_unlink(c, b);
	b->refs++;
	if (b->state == BLOCK_READY) {
		STAT_ADD(cache_hits, 1);
	} else {
		STAT_ADD(cache_misses, 1);
		/* A reader now waits for what readahead queued: it goes
		 * first. Our reference keeps the block from being reused. */
		if (b->prefetch && c->fill->promote) {
			pthread_mutex_unlock(&c->lock);
			c->fill->promote(c->ctx, b);
			pthread_mutex_lock(&c->lock);
		}
	}
wait:
	while (b->state == BLOCK_FETCHING)
		pthread_cond_wait(&c->cond, &c->lock);
	b->prefetch = false;
	err = b->state == BLOCK_READY ? 0 : b->err;
	if (err) {
		if (--b->refs == 0) {
			retire(c, b, false);
			pthread_cond_broadcast(&c->cond); /* a slot came free */
		}
		b = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (err)
		return err;
	*ret_block = b;
	return 0;
}

int cache_prefetch(struct cache *c, struct node *file, uint32_t generation,
		   uint64_t index, size_t len)
{
	struct block *b;

	pthread_mutex_lock(&c->lock);
	if (find(c, file, generation, index)) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	b = take_slot(c, true);
	if (!b) {
		pthread_mutex_unlock(&c->lock);
		return -EBUSY;
	}
	claim(c, b, file, generation, index, len, true);
	pthread_mutex_unlock(&c->lock);
	STAT_ADD(prefetched, 1);
	start_fetch(c, b);
	return 1;
}

void cache_unref(struct cache *c, struct block *b)
{
	cache_unref_behind(c, b, false);
}

void cache_unref_behind(struct cache *c, struct block *b, bool behind)
{
	if (!b)
		return;
	pthread_mutex_lock(&c->lock);
	if (--b->refs == 0) {
		retire(c, b, behind);
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_fetch_done(struct cache *c, struct block *b, int err)
{
	pthread_mutex_lock(&c->lock);
	if (err) {
		b->state = BLOCK_FAILED;
		b->err = err;
		b->prefetch = false;
		/* Nobody finds a failed block again: the next read retries. */
		hash_remove(c, b);
		b->hnext = NULL;
	} else {
		b->state = BLOCK_READY;
		c->ready_bytes += b->len;
	}
	if (--b->refs == 0)
		retire(c, b, false);
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void cache_drop_file(struct cache *c, struct node *file)
{
	struct block *b, *prev;

	pthread_mutex_lock(&c->lock);
	for (b = c->lru.prev; b != &c->lru; b = prev) {
		prev = b->prev;
		if (b->file != file)
			continue;
		lru_unlink(c, b);
		hash_remove(c, b);
		c->ready_bytes -= b->len;
		b->state = BLOCK_FREE;
		b->file = NULL;
		b->next = c->free_list;
		c->free_list = b;
		c->nfree++;
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

uint64_t cache_headroom(struct cache *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->nfree + c->nlru - c->unread_prefetched;
	pthread_mutex_unlock(&c->lock);
	return (uint64_t)n * c->block_size;
}

uint64_t cache_bytes(struct cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->ready_bytes;
	pthread_mutex_unlock(&c->lock);
	return n;
}

size_t cache_block_size(const struct cache *c)
{
	return c->block_size;
}
