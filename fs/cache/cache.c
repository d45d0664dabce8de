#include "cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stats.h"

#define HUGE_PAGE (2u << 20)
/* Slots for small blocks: a cached file costs at least a page, but the
 * slots (and so the number of files cached) are capped at one per
 * SMALL_COST of the budget, and MAX_SLOTS in all. */
#define SMALL_COST (64u << 10)
#define MAX_SLOTS 32768
/* Cold blocks looked at for one of the same stream to recycle. */
#define RECYCLE_SCAN 8

/*
 * Slots come in up to two classes, each a contiguous part of the arena:
 * class 0, nbig slots of block_size bytes; class 1, nsmall slots of
 * HUGE_PAGE bytes for blocks shorter than that. Where huge pages are
 * wanted (cache_new()'s @huge_pages) and block_size is a multiple of one,
 * class 0 uses huge pages (a 4 KiB fault per 4 KiB filled cost a third
 * of the daemon's CPU on a cold read) and class 1 holds small blocks in
 * 4 KiB pages; otherwise there is only class 0, in 4 KiB pages, with more
 * slots than blocks fit the budget.
 */
struct cache {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a fetch ended or a slot was freed */
	size_t block_size;
	size_t page;
	bool huge; /* class 0 uses huge pages; class 1 exists */
	size_t nbig, nsmall;
	void *map; /* the mapping, of map_len bytes */
	size_t map_len;
	char *arena;	      /* its first huge-page boundary */
	struct block *blocks; /* nbig + nsmall, block i owns slot i */
	struct block **hash;  /* protected by lock, as is all below */
	size_t hash_mask;
	/* Free slots per class, holding no data: warm ones keep the memory
	 * their last block faulted in (idle_pop bytes in all), reused first,
	 * so that a block after an eviction or drop costs no new pages (the
	 * kernel zeroes every new page, and on a VM that handed freed memory
	 * back to its host, first touch costs ten times that); cold ones
	 * hold none. used + idle_pop stays within the budget: idle memory
	 * is given back, never data evicted, when a block needs the room. */
	struct block *warm[2], *cold[2];
	uint64_t idle_pop;
	struct block lru;    /* sentinel: next is hottest, prev coldest */
	uint64_t mem;	     /* the budget */
	uint64_t used;	     /* sum of blocks' mem */
	uint64_t lru_mem;    /* sum of mem of blocks on the LRU */
	uint64_t unread_mem; /* ... of those with prefetch set */
	uint64_t ready_bytes;
	const struct cache_fill_ops *fill;
	void *ctx;
	cache_filled_fn filled; /* or NULL */
	void *filled_ctx;
	cache_stage_fn stage; /* a tier below memory, or NULL */
	void *stage_ctx;
};

static size_t hash_of(const struct node *file, uint32_t gen, uint64_t index)
{
	uint64_t h = (uint64_t)(uintptr_t)file * 0x9E3779B97F4A7C15ULL;

	h ^= (index + ((uint64_t)gen << 40)) * 0xC2B2AE3D27D4EB4FULL;
	return (size_t)(h ^ (h >> 29));
}

static int class_of(const struct cache *c, const struct block *b)
{
	return (size_t)(b - c->blocks) >= c->nbig;
}

/* The class of slot a block of @len bytes goes to. */
static int class_for(const struct cache *c, size_t len)
{
	return c->huge && len < HUGE_PAGE;
}

/* What a block of @len bytes in a slot of class @cls costs: its pages. */
static size_t cost(const struct cache *c, int cls, size_t len)
{
	size_t unit = c->huge && cls == 0 ? HUGE_PAGE : c->page;

	if (len == 0)
		len = 1; /* an empty block still takes its slot */
	return (len + unit - 1) / unit * unit;
}

int cache_new(uint64_t mem, size_t block_size, bool huge_pages,
	      const struct cache_fill_ops *fill, void *ctx, struct cache **ret)
{
	struct cache *c;
	size_t i, n, hsize = 16, want;
	long page = sysconf(_SC_PAGESIZE);

	if (block_size < 4096 || block_size % 4096 || mem / block_size < 2)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->block_size = block_size;
	c->page = page > 0 ? (size_t)page : 4096;
	c->mem = mem;
	c->huge = huge_pages && block_size % HUGE_PAGE == 0;
	c->fill = fill;
	c->ctx = ctx;
	c->map = MAP_FAILED;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->lru.next = c->lru.prev = &c->lru;
	n = mem / block_size; /* full blocks that fit */
	want = mem / SMALL_COST < MAX_SLOTS ? mem / SMALL_COST : MAX_SLOTS;
	c->nbig = n;
	if (c->huge)
		c->nsmall = want;
	else if (want > n)
		c->nbig = want;
	/* Address space only (MAP_NORESERVE); halve the extra slots where
	 * even that is refused. */
	for (;;) {
		c->map_len = c->nbig * block_size + c->nsmall * HUGE_PAGE +
			     HUGE_PAGE;
		c->map = mmap(NULL, c->map_len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
			      0);
		if (c->map != MAP_FAILED)
			break;
		if (c->huge && c->nsmall > 0)
			c->nsmall /= 2;
		else if (!c->huge && c->nbig > n)
			c->nbig = c->nbig / 2 > n ? c->nbig / 2 : n;
		else
			goto fail;
	}
	c->arena = (char *)(((uintptr_t)c->map + HUGE_PAGE - 1) &
			    ~(uintptr_t)(HUGE_PAGE - 1));
	/* Core dumps leave the cached bytes out: a mount's files may be
	 * decrypted models, or readable only by some users. */
	madvise(c->map, c->map_len, MADV_DONTDUMP);
	/* Memory is only touched, and so only counted, as blocks fill. */
	madvise(c->arena, c->nbig * block_size,
		c->huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (c->nsmall)
		madvise(c->arena + c->nbig * block_size, c->nsmall * HUGE_PAGE,
			MADV_NOHUGEPAGE);
	while (hsize < (c->nbig + c->nsmall) * 2)
		hsize *= 2;
	c->hash_mask = hsize - 1;
	c->hash = calloc(hsize, sizeof(*c->hash));
	c->blocks = calloc(c->nbig + c->nsmall, sizeof(*c->blocks));
	if (!c->hash || !c->blocks)
		goto fail;
	for (i = c->nbig + c->nsmall; i-- > 0;) {
		struct block *b = &c->blocks[i];
		int cls = i >= c->nbig;

		b->data = cls ? c->arena + c->nbig * block_size +
					  (i - c->nbig) * HUGE_PAGE
			      : c->arena + i * block_size;
		b->next = c->cold[cls];
		c->cold[cls] = b;
	}
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
	c->lru_mem -= b->mem;
	if (b->prefetch)
		c->unread_mem -= b->mem;
}

/* Give a block's slot back to its class's free slots: it holds nothing
 * now, its memory stays faulted in (warm) for the next block. Its data is
 * nobody's (no references, or it is being evicted). */
static void release(struct cache *c, struct block *b)
{
	struct block **list =
		b->pop ? &c->warm[class_of(c, b)] : &c->cold[class_of(c, b)];

	c->used -= b->mem;
	c->idle_pop += b->pop;
	b->mem = 0;
	b->state = BLOCK_FREE;
	b->file = NULL;
	b->next = *list;
	*list = b;
}

/* A free slot of class @cls, warm first; NULL when there is none. */
static struct block *free_slot(struct cache *c, int cls)
{
	return c->warm[cls] ? c->warm[cls] : c->cold[cls];
}

/* Take @b, the head of its free list, off it. */
static void unfree(struct cache *c, struct block *b)
{
	int cls = class_of(c, b);

	if (c->warm[cls] == b) {
		c->warm[cls] = b->next;
		c->idle_pop -= b->pop;
	} else {
		c->cold[cls] = b->next;
	}
	b->next = NULL;
}

/* Give back the memory of warm free slots, small ones first, until what
 * the slots hold (data charged, and idle) fits the budget again. The slot
 * just taken is charged already: at most it will hold what it is charged,
 * as start_fetch() gives back the rest. */
static void trim_idle(struct cache *c)
{
	int cls;

	while (c->used + c->idle_pop > c->mem) {
		struct block *b = NULL;

		for (cls = 1; cls >= 0 && !b; cls--)
			b = c->warm[cls];
		if (!b)
			return;
		unfree(c, b);
		madvise(b->data, b->pop, MADV_DONTNEED);
		b->pop = 0;
		b->next = c->cold[class_of(c, b)];
		c->cold[class_of(c, b)] = b;
	}
}

/* Retire a block nobody references: to the LRU if it holds data (the
 * hot end, or the cold end when @behind or a holder said so), else, or
 * when it was dropped, back to the free list. */
static void retire(struct cache *c, struct block *b, bool behind)
{
	behind = behind || b->behind;
	b->behind = false;
	if (b->state == BLOCK_READY && b->drop) {
		b->drop = false;
		c->ready_bytes -= b->len;
	} else if (b->state == BLOCK_READY) {
		struct block *at = behind ? c->lru.prev : &c->lru;

		b->next = at->next;
		b->prev = at;
		at->next->prev = b;
		at->next = b;
		c->lru_mem += b->mem;
		if (b->prefetch)
			c->unread_mem += b->mem;
		return;
	}
	hash_remove(c, b);
	release(c, b);
}

/*
 * A slot for a new block of @len bytes, its cost charged: a free slot of
 * its class while the budget allows, else the coldest ready blocks nobody
 * holds (of its class, when none of those is free) are evicted until it
 * does (one of the same class is reused as is, the others give their
 * memory back); @keep_unread spares prefetched blocks not read yet. NULL
 * when nothing more can be evicted.
 */
static struct block *take_slot(struct cache *c, size_t len, bool keep_unread)
{
	int cls = class_for(c, len);
	size_t need = cost(c, cls, len);
	struct block *b;

	for (;;) {
		b = free_slot(c, cls);
		if (b && c->used + need <= c->mem) {
			unfree(c, b);
			b->mem = need;
			c->used += need;
			trim_idle(c);
			return b;
		}
		/* Short of slots of its class rather than of memory: the
		 * coldest of that class goes, not every colder other one. */
		for (b = c->lru.prev; b != &c->lru; b = b->prev)
			if ((!keep_unread || !b->prefetch) &&
			    (free_slot(c, cls) || class_of(c, b) == cls))
				break;
		if (b == &c->lru)
			return NULL;
		lru_unlink(c, b);
		hash_remove(c, b);
		c->ready_bytes -= b->len;
		STAT_ADD(cache_evictions, 1);
		if (class_of(c, b) == cls &&
		    c->used - b->mem + need <= c->mem) {
			c->used = c->used - b->mem + need;
			b->mem = need;
			trim_idle(c);
			return b;
		}
		release(c, b);
	}
}

/*
 * A slot for block @index of a stream through a file of @fsize bytes,
 * more than the whole budget: one of the coldest ready blocks, when it is
 * one of the same stream already read (behind @index), memory faulted in.
 * Such a stream wraps the cache anyway (and LRU keeps nothing a second
 * pass could use), so it cycles through the memory of its own readahead
 * window instead of walking through all of cache_mem in never-touched
 * pages, which the kernel must zero (huge-page faults cost a first cold
 * read more than the network did). NULL otherwise.
 */
static struct block *recycle(struct cache *c, struct node *file, uint32_t gen,
			     uint64_t index, size_t len, uint64_t fsize)
{
	int cls = class_for(c, len);
	size_t need = cost(c, cls, len);
	struct block *b = c->lru.prev;
	int i;

	if (fsize <= c->mem)
		return NULL;
	/* Among the coldest few: a block read to its end by one thread
	 * while another still replied from it went to the hot end. */
	for (i = 0; b != &c->lru && i < RECYCLE_SCAN; i++, b = b->prev)
		if (b->file == file && b->generation == gen &&
		    b->index < index && !b->prefetch && class_of(c, b) == cls &&
		    b->pop >= need && c->used - b->mem + need <= c->mem)
			break;
	if (b == &c->lru || i == RECYCLE_SCAN)
		return NULL;
	lru_unlink(c, b);
	hash_remove(c, b);
	c->ready_bytes -= b->len;
	STAT_ADD(cache_evictions, 1);
	c->used = c->used - b->mem + need;
	b->mem = need;
	trim_idle(c);
	return b;
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
	b->behind = false;
	b->drop = false;
	b->refs = 1; /* the fetch's */
	b->hnext = c->hash[h];
	c->hash[h] = b;
}

/* Hand a claimed block to the fetch engine. The block is ours alone until
 * then, so its slot is sized here, outside the lock: the memory it needs
 * faulted in with one call rather than a page fault per page, what a
 * larger block left beyond it given back. */
static void start_fetch(struct cache *c, struct block *b)
{
	if (b->pop > b->mem)
		madvise(b->data + b->mem, b->pop - b->mem, MADV_DONTNEED);
	else if (b->pop < b->mem)
		madvise(b->data + b->pop, b->mem - b->pop, MADV_POPULATE_WRITE);
	b->pop = b->mem;
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
		b = take_slot(c, len, false);
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
	/* Wanted again: what earlier holders said no longer goes. */
	b->behind = false;
	b->drop = false;
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
	return cache_prefetch_stream(c, file, generation, index, len, 0);
}

int cache_prefetch_stream(struct cache *c, struct node *file,
			  uint32_t generation, uint64_t index, size_t len,
			  uint64_t fsize)
{
	struct block *b;

	pthread_mutex_lock(&c->lock);
	if (find(c, file, generation, index)) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	b = recycle(c, file, generation, index, len, fsize);
	if (!b)
		b = take_slot(c, len, true);
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
	} else if (behind) {
		b->behind = true; /* kept for the last holder's release */
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_unref_drop(struct cache *c, struct block *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&c->lock);
	if (--b->refs == 0) {
		b->drop = true;
		retire(c, b, true);
		pthread_cond_broadcast(&c->cond);
	} else {
		b->behind = true;
	}
	pthread_mutex_unlock(&c->lock);
}

bool cache_has(struct cache *c, struct node *file, uint32_t generation,
	       uint64_t index)
{
	bool has;

	pthread_mutex_lock(&c->lock);
	has = find(c, file, generation, index) != NULL;
	pthread_mutex_unlock(&c->lock);
	return has;
}

void cache_fetch_done(struct cache *c, struct block *b, int err)
{
	pthread_mutex_lock(&c->lock);
	if (c->filled)
		b->refs++; /* the filled hook's */
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
	if (c->filled)
		c->filled(c->filled_ctx, b, err);
}

void cache_drop_file(struct cache *c, struct node *file)
{
	struct block *b, *prev;
	size_t i;

	pthread_mutex_lock(&c->lock);
	for (b = c->lru.prev; b != &c->lru; b = prev) {
		prev = b->prev;
		if (b->file != file)
			continue;
		lru_unlink(c, b);
		hash_remove(c, b);
		c->ready_bytes -= b->len;
		release(c, b);
	}
	/* Held ones (a write behind, a reader) go when let go. */
	for (i = 0; i < c->nbig + c->nsmall; i++) {
		b = &c->blocks[i];
		if (b->file == file && b->refs > 0)
			b->drop = true;
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void cache_set_filled(struct cache *c, cache_filled_fn filled, void *ctx)
{
	c->filled_ctx = ctx;
	c->filled = filled;
}

void cache_set_stage(struct cache *c, cache_stage_fn stage, void *ctx)
{
	c->stage_ctx = ctx;
	c->stage = stage;
}

int64_t cache_stage(struct cache *c, struct node *file, uint64_t off,
		    uint64_t len)
{
	return c->stage ? c->stage(c->stage_ctx, file, off, len) : -EOPNOTSUPP;
}

uint64_t cache_headroom(struct cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->mem - c->used + c->lru_mem - c->unread_mem;
	pthread_mutex_unlock(&c->lock);
	return n;
}

uint64_t cache_bytes(struct cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->ready_bytes;
	pthread_mutex_unlock(&c->lock);
	return n;
}

uint64_t cache_used(struct cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->used;
	pthread_mutex_unlock(&c->lock);
	return n;
}

bool cache_huge_pages(const struct cache *c)
{
	return c->huge;
}

size_t cache_block_size(const struct cache *c)
{
	return c->block_size;
}
