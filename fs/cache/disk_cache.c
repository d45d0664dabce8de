/* The disk tier's filler: the decorator in front of the source filler
 * (lookup threads, the write-behind thread, their queues), chaining and
 * staging. The contract is in disk_cache.h; the on-disk store is
 * disk_store.c. */
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
#include <unistd.h>

#include "decoder.h"
#include "fetch.h"
#include "stats.h"
#include "tree.h"

#define STAGE_AHEAD 8 /* blocks a stage keeps on their way from the source */
#define STAGE_RING 64 /* > STAGE_AHEAD: what a stage knows of each block */

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
	for (j = dc->pending[pend_slot(b)]; j; j = j->next)
		if (j->b == b)
			return true;
	for (j = dc->writes.head; j; j = j->next)
		if (j->b == b)
			return true;
	return false;
}

/* The key of block @index of @n, if @n is still at @generation. */
static bool node_key(struct disk_cache *dc, struct node *n, uint32_t generation,
		     uint64_t index, struct disk_key *ret)
{
	bool ok;

	pthread_mutex_lock(&n->lock);
	/* Not a block a decoder keeps off disk (decrypted sealed bytes). */
	ok = n->generation == generation && !n->changed &&
	     !(n->dec && n->dec->ops->keep_off_disk);
	if (ok)
		disk_key_make(dc->source_id, n->key, n->etag, n->size,
			      (int64_t)n->mtime.tv_sec, dc->block_size, index,
			      ret);
	pthread_mutex_unlock(&n->lock);
	return ok;
}

/* The key of @b from its node, if the node is still at b's generation. */
static bool block_key(struct disk_cache *dc, struct block *b,
		      struct disk_key *ret)
{
	return node_key(dc, b->file, b->generation, b->index, ret);
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
	j->keyed = block_key(dc, b, &j->key);
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

	if (disk_cache_read(dc, &j->key, b->data, dc->block_size, b->len) ==
	    0) {
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
	bool queued = false;

	pthread_mutex_lock(&dc->lock);
	j = pend_take(dc, b); /* NULL: served from disk */
	if (j && !err && j->keyed && !dc->stop &&
	    !atomic_load(&dc->read_only) && dc->writes.n < dc->max_queued) {
		q_push(&dc->writes, j);
		pthread_cond_broadcast(&dc->cond);
		queued = true;
	} else if (j) {
		pend_add(dc, j); /* in flight until let go: a stage waits */
	}
	pthread_mutex_unlock(&dc->lock);
	if (!queued) {
		cache_unref(dc->cache, b);
		if (j) {
			pthread_mutex_lock(&dc->lock);
			pend_remove(dc, j);
			pthread_cond_broadcast(&dc->wdone);
			pthread_mutex_unlock(&dc->lock);
			free(j);
		}
	}
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
		struct disk_key k;

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
		if (block_key(dc, j->b, &k) && !memcmp(&k, &j->key, sizeof(k)))
			disk_cache_write(dc, &j->key, j->b->data,
					 dc->block_size, j->b->len);
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
	struct disk_key k;
	struct block *b;
	int err = cache_get(dc->cache, n, gen, index, len, &b);

	if (err)
		return err;
	pthread_mutex_lock(&dc->lock);
	while (in_flight(dc, b))
		pthread_cond_wait(&dc->wdone, &dc->lock);
	pthread_mutex_unlock(&dc->lock);
	if (!node_key(dc, n, gen, index, &k))
		err = -EIO;	   /* the object changed under us */
	else if (!on_disk(dc, &k)) /* not written behind: queue full */
		err = disk_cache_write(dc, &k, b->data, dc->block_size, b->len);
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

			if (!node_key(dc, n, gen, next, &k)) {
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
	/* The threads finish what is queued (a bounded few blocks), so
	 * what was read before an unmount is on disk after it. */
	pthread_mutex_lock(&dc->lock);
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

void disk_cache_free(struct disk_cache *dc)
{
	size_t i;

	if (!dc)
		return;
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
	free(dc->dir);
	free(dc->source_id);
	free(dc);
}
