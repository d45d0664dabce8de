/* The disk tier object (disk_cache_new/free) and its filler: the
 * decorator in front of the source filler (lookup threads, the write-behind
 * thread, their queues), chaining and staging. The contract is in
 * disk_cache.h; the on-disk store is disk_store.c. */
#include "disk_cache.h"
#include "disk_cache_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "decoder.h"
#include "fetch.h"
#include "log.h"
#include "stats.h"
#include "tree.h"

#define LOOKUP_THREADS 8
#define STAGE_AHEAD 8 /* blocks a stage keeps on their way from the source */
#define STAGE_RING 64 /* > STAGE_AHEAD: what a stage knows of each block */
/* Unmount and SIGTERM write what was read and not written yet for at most
 * this long (systemd waits 90 s for a service to stop). */
#define DRAIN_MAX_S 30

static void q_push(struct jobq *q, struct job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	q->n++;
}

static void q_push_front(struct jobq *q, struct job *j)
{
	j->next = q->head;
	q->head = j;
	if (!q->tail)
		q->tail = j;
	q->n++;
}

static struct job *q_pop(struct jobq *q)
{
	struct job *j = q->head;

	if (j) {
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		j->next = NULL;
		q->n--;
	}
	return j;
}

/* Unlink the job of @b from @q; NULL when not there. */
static struct job *q_take(struct jobq *q, const struct block *b)
{
	struct job **p, *prev = NULL;

	for (p = &q->head; *p; prev = *p, p = &(*p)->next) {
		struct job *j = *p;

		if (j->b != b)
			continue;
		*p = j->next;
		if (q->tail == j)
			q->tail = prev;
		j->next = NULL;
		q->n--;
		return j;
	}
	return NULL;
}

/* ---- the decorator ---- */

static size_t pend_slot(const struct block *b)
{
	uintptr_t p = (uintptr_t)b;

	return (size_t)((p >> 4) ^ (p >> 12)) & 255;
}

static void pend_add(struct disk_cache *dc, struct job *j)
{
	size_t s = pend_slot(j->b);

	j->next = dc->pending[s];
	dc->pending[s] = j;
}

static struct job *pend_take(struct disk_cache *dc, const struct block *b)
{
	struct job **p = &dc->pending[pend_slot(b)];

	for (; *p; p = &(*p)->next) {
		struct job *j = *p;

		if (j->b == b) {
			*p = j->next;
			j->next = NULL;
			return j;
		}
	}
	return NULL;
}

/* Unlink job @j from the pending table. */
static void pend_remove(struct disk_cache *dc, struct job *j)
{
	struct job **p = &dc->pending[pend_slot(j->b)];

	for (; *p; p = &(*p)->next) {
		if (*p == j) {
			*p = j->next;
			j->next = NULL;
			return;
		}
	}
}

/* Whether a fill or write of @b is on its way. Under lock. */
static bool in_flight(struct disk_cache *dc, const struct block *b)
{
	struct job *j;

	if (dc->writing == b)
		return true;
	j = dc->writing_later;
	if (j && j->file == b->file && j->generation == b->generation &&
	    j->index == b->index)
		return true;
	for (j = dc->pending[pend_slot(b)]; j; j = j->next)
		if (j->b == b)
			return true;
	for (j = dc->writes.head; j; j = j->next)
		if (j->b == b)
			return true;
	return false;
}

/* Take @b's job off the later queue, if there. Under lock. */
static struct job *later_take(struct disk_cache *dc, const struct block *b)
{
	struct job **p = &dc->later.head, *prev = NULL;

	for (; *p; prev = *p, p = &(*p)->next) {
		struct job *j = *p;

		if (j->file == b->file && j->generation == b->generation &&
		    j->index == b->index) {
			*p = j->next;
			if (dc->later.tail == j)
				dc->later.tail = prev;
			dc->later.n--;
			j->next = NULL;
			return j;
		}
	}
	return NULL;
}

/* How a block of a decoded file whose decoder seals blocks (decoder.h
 * seal_block) is kept on disk: through its decoder, at its offset. */
struct block_sealer {
	struct disk_sealer s; /* first: the store passes it back */
	struct decoded *dec;  /* a reference, or NULL: kept as it is */
	uint64_t off;
};

static int seal(const struct disk_sealer *s, const void *src, void *dst,
		size_t len, unsigned char tag[DISK_TAG_SIZE])
{
	const struct block_sealer *bs = (const struct block_sealer *)s;

	return bs->dec->ops->seal_block(bs->dec, bs->off, len, src, dst, tag);
}

static int open_sealed(const struct disk_sealer *s, void *buf, size_t len,
		       const unsigned char tag[DISK_TAG_SIZE])
{
	const struct block_sealer *bs = (const struct block_sealer *)s;

	return bs->dec->ops->open_block(bs->dec, bs->off, len, buf, tag);
}

_Static_assert(DISK_TAG_SIZE == DECODER_TAG_SIZE, "one tag size");

/* The sealer the store is given, or NULL: blocks kept as they are. */
static const struct disk_sealer *sealer(const struct block_sealer *bs)
{
	return bs->dec ? &bs->s : NULL;
}

/*
 * The key of block @index of @n, if @n is still at @generation; and, with
 * @ret_bs, how the block is kept (its decoder's seal ops, taken in the
 * same look as the key; release with sealer_done()).
 */
static bool node_key(struct disk_cache *dc, struct node *n, uint32_t generation,
		     uint64_t index, struct disk_key *ret,
		     struct block_sealer *ret_bs)
{
	bool ok;

	pthread_mutex_lock(&n->lock);
	ok = n->generation == generation && !n->changed;
	if (ok)
		disk_key_make(dc->source_id, n->key, n->etag, n->size,
			      (int64_t)n->mtime.tv_sec, dc->block_size, index,
			      ret);
	if (ok && ret_bs) {
		memset(ret_bs, 0, sizeof(*ret_bs));
		if (n->dec && n->dec->ops->seal_block) {
			ret_bs->s.seal = seal;
			ret_bs->s.open = open_sealed;
			ret_bs->dec = decoded_ref(n->dec);
			ret_bs->off = index * dc->block_size;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return ok;
}

static void sealer_done(struct block_sealer *bs)
{
	decoded_unref(bs->dec);
	bs->dec = NULL;
}

/* The key of @b from its node, if the node is still at b's generation. */
static bool block_key(struct disk_cache *dc, struct block *b,
		      struct disk_key *ret, struct block_sealer *ret_bs)
{
	return node_key(dc, b->file, b->generation, b->index, ret, ret_bs);
}

/* Write block @b as @key, if its node is still at the version @key was
 * made for, sealed when its decoder seals. */
static int write_if_current(struct disk_cache *dc, const struct disk_key *key,
			    struct block *b)
{
	struct block_sealer bs;
	struct disk_key k;
	int err = -ESTALE;

	if (!block_key(dc, b, &k, &bs))
		return err;
	if (!memcmp(&k, key, sizeof(k)))
		err = disk_cache_write(dc, key, b->data, dc->block_size, b->len,
				       sealer(&bs));
	sealer_done(&bs);
	return err;
}

static void disk_cache_fill(void *arg, struct block *b)
{
	struct disk_cache *dc = arg;
	struct job *j = calloc(1, sizeof(*j));
	char path[4200];
	bool there;

	if (!j) {
		dc->next->start(dc->next_ctx, b);
		return;
	}
	j->b = b;
	j->keyed = block_key(dc, b, &j->key, NULL);
	/* A block not on disk goes to the source at once: a failed lookup
	 * of a name costs the caller less than a hop to a lookup thread,
	 * and the first read with the tier on is as fast as without. */
	if (j->keyed) {
		disk_key_path(dc, &j->key, path, sizeof(path));
		there = access(path, F_OK) == 0;
		if (!there)
			STAT_ADD(disk_misses, 1);
	} else {
		there = false;
	}
	pthread_mutex_lock(&dc->lock);
	if (dc->stop) {
		pthread_mutex_unlock(&dc->lock);
		free(j);
		dc->next->start(dc->next_ctx, b);
		return;
	}
	if (!there) {
		pend_add(dc, j);
		pthread_mutex_unlock(&dc->lock);
		dc->next->start(dc->next_ctx, b);
		return;
	}
	q_push(b->prefetch ? &dc->ahead : &dc->demand, j);
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
}

static void disk_cache_promote(void *arg, struct block *b)
{
	struct disk_cache *dc = arg;
	struct job *j;

	pthread_mutex_lock(&dc->lock);
	j = q_take(&dc->ahead, b);
	if (j)
		q_push_front(&dc->demand, j);
	pthread_mutex_unlock(&dc->lock);
	if (!j && dc->next->promote)
		dc->next->promote(dc->next_ctx, b);
}

/* A lookup: serve @j's block from disk, or pass it to the source with
 * its key kept for writing behind. */
static void lookup(struct disk_cache *dc, struct job *j)
{
	struct block *b = j->b;
	struct block_sealer bs;
	struct disk_key k;
	int err = -ESTALE;

	/* A sealed block opens with the decoder the node has now, so the
	 * key must still be the node's. */
	if (block_key(dc, b, &k, &bs)) {
		if (!memcmp(&k, &j->key, sizeof(k)))
			err = disk_cache_read(dc, &j->key, b->data,
					      dc->block_size, b->len,
					      sealer(&bs));
		sealer_done(&bs);
	}
	if (!err) {
		free(j);
		cache_fetch_done(dc->cache, b, 0);
		return;
	}
	pthread_mutex_lock(&dc->lock);
	pend_add(dc, j);
	pthread_mutex_unlock(&dc->lock);
	dc->next->start(dc->next_ctx, b);
}

static void *lookup_worker(void *arg)
{
	struct disk_cache *dc = arg;

	pthread_mutex_lock(&dc->lock);
	for (;;) {
		struct job *j = q_pop(&dc->demand);

		if (!j)
			j = q_pop(&dc->ahead);
		if (!j) {
			if (dc->stop)
				break;
			pthread_cond_wait(&dc->cond, &dc->lock);
			continue;
		}
		pthread_mutex_unlock(&dc->lock);
		lookup(dc, j);
		pthread_mutex_lock(&dc->lock);
	}
	pthread_mutex_unlock(&dc->lock);
	return NULL;
}

/* The cache's filled hook: a fill from the source ended, and we hold a
 * reference to @b. */
static void filled(void *arg, struct block *b, int err)
{
	struct disk_cache *dc = arg;
	struct job *j;
	bool queued = false, later = false;

	pthread_mutex_lock(&dc->lock);
	j = pend_take(dc, b); /* NULL: served from disk */
	if (j && !err && j->keyed && !dc->stop &&
	    !atomic_load(&dc->read_only) && dc->writes.n < dc->max_queued) {
		q_push(&dc->writes, j);
		pthread_cond_broadcast(&dc->cond);
		queued = true;
	} else if (j) {
		/* Queue full: remembered, not held (what holds a block
		 * pins its memory), and written later from memory. */
		later = !err && j->keyed && !dc->stop &&
			!atomic_load(&dc->read_only) && dc->max_later;
		j->file = b->file;
		j->generation = b->generation;
		j->index = b->index;
		pend_add(dc, j); /* in flight until let go: a stage waits */
	}
	pthread_mutex_unlock(&dc->lock);
	if (later)
		cache_set_unwritten(dc->cache, b, true);
	if (!queued) {
		cache_unref(dc->cache, b);
		if (j) {
			struct job *old = NULL;

			pthread_mutex_lock(&dc->lock);
			pend_remove(dc, j);
			pthread_cond_broadcast(&dc->wdone);
			if (later) {
				if (dc->later.n >= dc->max_later)
					old = q_pop(&dc->later);
				j->b = NULL;
				q_push(&dc->later, j);
				pthread_cond_broadcast(&dc->cond);
				j = old;
			}
			pthread_mutex_unlock(&dc->lock);
			if (j && later) { /* the oldest, forgotten */
				struct block *ob;

				STAT_ADD(disk_unwritten, 1);
				if (!cache_peek(dc->cache, j->file,
						j->generation, j->index, &ob))
					cache_unref_written(dc->cache, ob);
			}
			free(j);
		}
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A block remembered on the later queue: written if it is still in
 * memory at the version it was fetched for and not on disk yet; a block
 * gone from memory meanwhile is counted disk_unwritten. */
static void write_later(struct disk_cache *dc, struct job *j)
{
	struct block *b;
	char path[4200];

	if (cache_peek(dc->cache, j->file, j->generation, j->index, &b) < 0) {
		STAT_ADD(disk_unwritten, 1);
		return;
	}
	disk_key_path(dc, &j->key, path, sizeof(path));
	if (access(path, F_OK) < 0)
		write_if_current(dc, &j->key, b);
	cache_unref_written(dc->cache, b);
}

/* Writing behind yields to readers: this thread's CPU and I/O priority go
 * down (best effort, lowest level: never starved for good). */
static void lower_priority(void)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);

	setpriority(PRIO_PROCESS, (id_t)tid, 10);
	syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, tid,
		(2 << 13) | 7 /* IOPRIO_CLASS_BE, level 7 */);
}

static void *writer(void *arg)
{
	struct disk_cache *dc = arg;

	lower_priority();
	pthread_mutex_lock(&dc->lock);
	for (;;) {
		struct job *j = q_pop(&dc->writes);

		if (!j && (j = q_pop(&dc->later))) {
			/* Stopping: as long as the drain may take. */
			if (dc->stop && now_ms() > dc->drain_deadline_ms) {
				STAT_ADD(disk_unwritten, 1);
			} else {
				dc->writing_later = j;
				pthread_mutex_unlock(&dc->lock);
				write_later(dc, j);
				pthread_mutex_lock(&dc->lock);
				dc->writing_later = NULL;
				pthread_cond_broadcast(&dc->wdone);
			}
			free(j);
			continue;
		}
		if (!j) {
			if (dc->stop)
				break;
			pthread_cond_wait(&dc->cond, &dc->lock);
			continue;
		}
		dc->writing = j->b;
		pthread_mutex_unlock(&dc->lock);
		/* Written only if the node is still at the version the
		 * block was fetched for. */
		write_if_current(dc, &j->key, j->b);
		/* What readers said (behind, dropped) holds: the block
		 * remembers it. Let go before a stage waiting for it does,
		 * so that the stage's drop is the last word. */
		cache_unref(dc->cache, j->b);
		free(j);
		pthread_mutex_lock(&dc->lock);
		dc->writing = NULL;
		pthread_cond_broadcast(&dc->wdone);
	}
	pthread_mutex_unlock(&dc->lock);
	return NULL;
}

/* ---- staging: the disk filled, memory not ---- */

enum stage_state { ST_NEW, ST_DISK, ST_OURS, ST_THEIRS };

/* Whether block @k's file is in DIR; one that is counts as used now, so
 * that staging keeps it from eviction. */
static bool on_disk(struct disk_cache *dc, const struct disk_key *k)
{
	char path[4200];

	disk_key_path(dc, k, path, sizeof(path));
	if (access(path, F_OK) < 0)
		return false;
	if (!atomic_load(&dc->read_only))
		utimensat(AT_FDCWD, path, NULL, 0);
	return true;
}

/* Put block @index (@len bytes) on disk: through the memory cache (from
 * memory, from disk, or the source), its write behind waited for or done
 * here, then dropped from memory when @ours (this stage brought it in). */
static int stage_one(struct disk_cache *dc, struct node *n, uint32_t gen,
		     uint64_t index, size_t len, bool ours)
{
	struct block_sealer bs;
	struct disk_key k;
	struct block *b;
	struct job *j;
	int err = cache_get(dc->cache, n, gen, index, len, &b);

	if (err)
		return err;
	pthread_mutex_lock(&dc->lock);
	while (in_flight(dc, b))
		pthread_cond_wait(&dc->wdone, &dc->lock);
	j = later_take(dc, b); /* written here, not later */
	pthread_mutex_unlock(&dc->lock);
	if (j)
		cache_set_unwritten(dc->cache, b, false);
	free(j);
	if (!node_key(dc, n, gen, index, &k, &bs)) {
		err = -EIO; /* the object changed under us */
	} else {
		if (!on_disk(dc, &k)) /* not written behind: queue full */
			err = disk_cache_write(dc, &k, b->data, dc->block_size,
					       b->len, sealer(&bs));
		sealer_done(&bs);
	}
	if (ours)
		cache_unref_drop(dc->cache, b);
	else
		cache_unref(dc->cache, b);
	return err;
}

int64_t disk_cache_stage(struct disk_cache *dc, struct node *n, uint64_t off,
			 uint64_t len)
{
	unsigned char st[STAGE_RING];
	uint64_t bs = dc->block_size, fsize, pos, end, i, next, last;
	uint32_t gen;
	bool changed;
	int err;

	changed = node_version(n, &fsize, &gen);
	if (changed)
		return -EIO;
	if (atomic_load(&dc->read_only))
		return -EROFS;
	pos = off < fsize ? off : fsize;
	end = len < fsize - pos ? pos + len : fsize;
	if (pos >= end)
		return 0;
	last = (end + bs - 1) / bs;
	for (i = next = pos / bs; i < last; i++) {
		uint64_t ahead = cache_headroom(dc->cache) / 2 / bs;

		if (ahead > STAGE_AHEAD)
			ahead = STAGE_AHEAD;
		/* Blocks not on disk start from the source a few ahead,
		 * as far as memory not in use allows, queued together so
		 * that consecutive blocks go in few requests. */
		fetch_batch_begin();
		for (; next < last && next <= i + ahead; next++) {
			uint64_t blen =
				fsize - next * bs < bs ? fsize - next * bs : bs;
			struct disk_key k;
			int r;

			if (!node_key(dc, n, gen, next, &k, NULL)) {
				fetch_batch_end();
				return -EIO;
			}
			if (on_disk(dc, &k)) {
				st[next % STAGE_RING] = ST_DISK;
				continue;
			}
			if (next == i) {
				st[next % STAGE_RING] = ST_NEW;
				continue;
			}
			r = cache_prefetch(dc->cache, n, gen, next, blen);
			if (r < 0)
				break; /* no room: in turn, below */
			st[next % STAGE_RING] = r ? ST_OURS : ST_THEIRS;
		}
		fetch_batch_end();
		if (next <= i) { /* not looked at yet: no room ahead */
			st[i % STAGE_RING] = ST_NEW;
			next = i + 1;
		}
		if (st[i % STAGE_RING] == ST_DISK)
			continue;
		if (st[i % STAGE_RING] == ST_NEW)
			st[i % STAGE_RING] = cache_has(dc->cache, n, gen, i)
						     ? ST_THEIRS
						     : ST_OURS;
		err = stage_one(dc, n, gen, i,
				fsize - i * bs < bs ? fsize - i * bs : bs,
				st[i % STAGE_RING] == ST_OURS);
		if (err)
			return err;
	}
	return (int64_t)(end - pos);
}

void disk_cache_chain(struct disk_cache *dc, const struct cache_fill_ops *next,
		      void *ctx)
{
	dc->next = next;
	dc->next_ctx = ctx;
}

const struct cache_fill_ops disk_cache_fill_ops = {
	.start = disk_cache_fill,
	.promote = disk_cache_promote,
};

/* disk_cache_stage() as the cache's stage hook. */
static int64_t stage(void *ctx, struct node *n, uint64_t off, uint64_t len)
{
	return disk_cache_stage(ctx, n, off, len);
}

int disk_cache_start(struct disk_cache *dc, struct cache *c)
{
	unsigned i;

	dc->cache = c;
	cache_set_filled(c, filled, dc);
	cache_set_stage(c, stage, dc);
	dc->threads = calloc(dc->nlookup + 1, sizeof(*dc->threads));
	if (!dc->threads)
		return -ENOMEM;
	for (i = 0; i <= dc->nlookup; i++) {
		int r = pthread_create(&dc->threads[i], NULL,
				       i ? lookup_worker : writer, dc);

		if (r)
			return -r;
		dc->nthreads++;
	}
	return 0;
}

void disk_cache_stop(struct disk_cache *dc)
{
	struct job *j;
	unsigned i;

	if (!dc)
		return;
	/* The threads finish what is queued, so what was read before an
	 * unmount is on disk after it: the write-behind queue (a few
	 * blocks, held), then blocks remembered for later that are still
	 * in memory, for at most DRAIN_MAX_S. */
	pthread_mutex_lock(&dc->lock);
	if (dc->later.n)
		log_info("disk cache: writing %u blocks read but not written "
			 "yet (at most %d s)",
			 dc->later.n, DRAIN_MAX_S);
	dc->drain_deadline_ms = now_ms() + DRAIN_MAX_S * 1000ull;
	dc->stop = true;
	pthread_cond_broadcast(&dc->cond);
	pthread_mutex_unlock(&dc->lock);
	for (i = 0; i < dc->nthreads; i++)
		pthread_join(dc->threads[i], NULL);
	dc->nthreads = 0;
	/* Not started: lookups queued before still need their fill. */
	while ((j = q_pop(&dc->demand)) || (j = q_pop(&dc->ahead))) {
		struct block *b = j->b;

		free(j);
		dc->next->start(dc->next_ctx, b);
	}
}

int disk_cache_new(const struct disk_cache_config *cfg, struct disk_cache **ret)
{
	struct disk_cache *dc;
	int err;

	if (!cfg->dir || !cfg->source_id || !cfg->block_size)
		return -EINVAL;
	dc = calloc(1, sizeof(*dc));
	if (!dc)
		return -ENOMEM;
	pthread_mutex_init(&dc->wlock, NULL);
	pthread_mutex_init(&dc->seal_lock, NULL);
	pthread_mutex_init(&dc->lock, NULL);
	pthread_cond_init(&dc->cond, NULL);
	pthread_cond_init(&dc->wdone, NULL);
	dc->source_id = strdup(cfg->source_id);
	dc->budget = cfg->budget;
	dc->block_size = cfg->block_size;
	dc->max_queued = cfg->max_queued;
	dc->max_later = cfg->max_later;
	dc->nlookup =
		cfg->lookup_threads ? cfg->lookup_threads : LOOKUP_THREADS;
	err = dc->source_id ? disk_store_open(dc, cfg->dir) : -ENOMEM;
	if (err) {
		disk_cache_free(dc);
		return err;
	}
	*ret = dc;
	return 0;
}

void disk_cache_free(struct disk_cache *dc)
{
	size_t i;

	if (!dc)
		return;
	for (struct job *j; (j = q_pop(&dc->later));)
		free(j);
	for (i = 0; i < 256; i++) {
		struct job *j;

		while ((j = dc->pending[i])) {
			dc->pending[i] = j->next;
			free(j);
		}
	}
	free(dc->threads);
	pthread_cond_destroy(&dc->cond);
	pthread_cond_destroy(&dc->wdone);
	pthread_mutex_destroy(&dc->lock);
	pthread_mutex_destroy(&dc->wlock);
	pthread_mutex_destroy(&dc->seal_lock);
	free(dc->seal_buf);
	free(dc->dir);
	free(dc->source_id);
	free(dc);
}
