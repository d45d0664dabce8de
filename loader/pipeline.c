#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda.h"
#include "errmsg.h"
#include "staging.h"

#define SLOTS_PER_THREAD 2
#define MIN_CHUNK (64 * 1024)
#define PAGE 4096

struct chunk {
	unsigned file;
	uint64_t off;
	uint64_t len;
	size_t piece; /* the piece that holds @off */
};

struct slot {
	char *buf;
	void *stream;  /* GPU only */
	void *event;   /* GPU only: recorded after the slot's copies */
	bool busy;     /* copies queued from buf, not yet waited for */
	bool recorded; /* event recorded after the last of them: waiting
			* for it is enough (else the stream is synced) */
};

struct pipeline {
	const struct pipe_params *p;
	struct chunk *chunks;
	size_t nchunks;
	uint64_t total;
	bool staged; /* reads go through staging slots */
	size_t chunk_bytes;
	struct staging staging;
	atomic_size_t next;	   /* next chunk to take */
	atomic_uint_fast64_t done; /* bytes loaded */
	atomic_uint finished;	   /* threads that have returned */
	atomic_bool stop;
	/* A wait for copies from staging failed: they may still run, so the
	 * staging is neither reused nor freed (staging_abandon()). */
	atomic_bool staging_unsafe;
	pthread_mutex_t lock;
	int err;       /* protected by lock: the first error */
	char msg[512]; /* protected by lock */
};

struct worker {
	struct pipeline *pl;
	pthread_t tid;
	struct slot slots[SLOTS_PER_THREAD];
};

static void fail(struct pipeline *pl, int err)
{
	pthread_mutex_lock(&pl->lock);
	if (!pl->err) {
		pl->err = err;
		snprintf(pl->msg, sizeof(pl->msg), "%s", err_get());
	}
	pthread_mutex_unlock(&pl->lock);
	atomic_store(&pl->stop, true);
}

static int build_chunks(struct pipeline *pl)
{
	const struct pipe_piece *pc = pl->p->pieces;
	size_t n = pl->p->npieces, cap = 16, i = 0;
	uint64_t cb = pl->chunk_bytes;

	pl->chunks = malloc(cap * sizeof(*pl->chunks));
	if (!pl->chunks)
		return -ENOMEM;
	while (i < n) {
		uint64_t pos = pc[i].file_off, end = pos + pc[i].len;
		size_t j = i + 1, k = i;

		while (j < n && pc[j].file == pc[i].file &&
		       pc[j].file_off == end)
			end += pc[j++].len;
		/* Chunks end at multiples of chunk_bytes in the file, so
		 * that aligned (O_DIRECT) reads of one fit in a slot. */
		while (pos < end) {
			uint64_t stop = (pos / cb + 1) * cb;

			if (stop > end)
				stop = end;
			while (pc[k].file_off + pc[k].len <= pos)
				k++;
			if (pl->nchunks == cap) {
				struct chunk *c = realloc(pl->chunks,
							  2 * cap * sizeof(*c));

				if (!c)
					return -ENOMEM;
				pl->chunks = c;
				cap *= 2;
			}
			pl->chunks[pl->nchunks++] = (struct chunk){
				.file = pc[i].file,
				.off = pos,
				.len = stop - pos,
				.piece = k,
			};
			pl->total += stop - pos;
			pos = stop;
		}
		i = j;
	}
	return 0;
}

/* Put the bytes of chunk @c, read to @src (which holds file offset
 * @src_off), in place: memcpy, or queue copies on @slot's stream. */
static int place(struct pipeline *pl, const struct chunk *c, const char *src,
		 uint64_t src_off, struct slot *slot)
{
	const struct pipe_params *p = pl->p;
	uint64_t pos = c->off, end = c->off + c->len;
	int r;

	for (size_t k = c->piece; pos < end; k++) {
		const struct pipe_piece *pc = &p->pieces[k];
		uint64_t pend = pc->file_off + pc->len;
		uint64_t n = (pend < end ? pend : end) - pos;
		char *dst =
			(char *)p->dest + pc->dst_off + (pos - pc->file_off);

		if (p->device == WFS_DEVICE_CPU) {
			memcpy(dst, src + (pos - src_off), n);
			__atomic_fetch_add(&p->reader->bytes_copied, n,
					   __ATOMIC_RELAXED);
		} else {
			r = cuda_copy_async(slot->stream, dst,
					    src + (pos - src_off), n);
			if (r < 0)
				return r; /* slot_wait() syncs the stream */
			slot->busy = true;
			slot->recorded = false;
		}
		pos += n;
	}
	/* One event per slot: waiting for it sleeps, where a stream sync
	 * would spin a core. If recording fails, slot_wait() syncs the
	 * stream instead: the event would be stale, its wait would return
	 * while copies from the slot are pending. */
	if (slot && slot->busy) {
		r = cuda_event_record(slot->event, slot->stream);
		if (r < 0)
			return r;
		slot->recorded = true;
	}
	return 0;
}

/* Wait until no copy from @slot's buffer is pending. If that fails, the
 * slot stays busy (its copies may still run) and the staging unsafe. */
static int slot_wait(struct pipeline *pl, struct slot *slot)
{
	int r;

	if (!slot->busy)
		return 0;
	r = slot->recorded ? cuda_event_sync(slot->event)
			   : cuda_stream_sync(slot->stream);
	if (r < 0) {
		atomic_store(&pl->staging_unsafe, true);
		return r;
	}
	slot->busy = false;
	return 0;
}

/* Read chunk @c straight into the host destination, piece by piece. */
static int read_in_place(struct pipeline *pl, const struct chunk *c)
{
	const struct pipe_params *p = pl->p;
	uint64_t pos = c->off, end = c->off + c->len;

	for (size_t k = c->piece; pos < end; k++) {
		const struct pipe_piece *pc = &p->pieces[k];
		uint64_t pend = pc->file_off + pc->len;
		size_t n = (size_t)((pend < end ? pend : end) - pos);
		char *dst =
			(char *)p->dest + pc->dst_off + (pos - pc->file_off);
		ssize_t got =
			p->reader->ops->read(p->reader, c->file, pos, dst, n);

		if (got < 0)
			return (int)got;
		if ((size_t)got < n)
			return err_set(-EIO,
				       "%s ended at %llu, before its tensors "
				       "did: changed while loading?",
				       p->paths[c->file],
				       (unsigned long long)(pos + (size_t)got));
		pos += n;
	}
	return 0;
}

static int read_staged(struct pipeline *pl, const struct chunk *c,
		       struct slot *slot)
{
	const struct pipe_params *p = pl->p;
	uint64_t align = p->reader->ops->align(p->reader, c->file);
	uint64_t a = c->off / align * align;
	uint64_t e = (c->off + c->len + align - 1) / align * align;
	ssize_t got;
	int r;

	r = slot_wait(pl, slot);
	if (r < 0)
		return r;
	got = p->reader->ops->read(p->reader, c->file, a, slot->buf,
				   (size_t)(e - a));
	if (got < 0)
		return (int)got;
	if ((uint64_t)got < c->off + c->len - a)
		return err_set(-EIO,
			       "%s ended at %llu, before its tensors "
			       "did: changed while loading?",
			       p->paths[c->file],
			       (unsigned long long)(a + (size_t)got));
	return place(pl, c, slot->buf, a, slot);
}

static int worker_run(struct worker *w)
{
	struct pipeline *pl = w->pl;
	unsigned s = 0;
	int r;

	if (pl->p->device != WFS_DEVICE_CPU) {
		r = cuda_use(pl->p->device);
		if (r < 0)
			return r;
		for (unsigned i = 0; i < SLOTS_PER_THREAD; i++) {
			r = cuda_stream_new(&w->slots[i].stream);
			if (r == 0)
				r = cuda_event_new(&w->slots[i].event);
			if (r < 0)
				return r;
		}
	}
	while (!atomic_load(&pl->stop)) {
		size_t i = atomic_fetch_add(&pl->next, 1);
		const struct chunk *c;

		if (i >= pl->nchunks)
			break;
		c = &pl->chunks[i];
		if (pl->staged) {
			r = read_staged(pl, c, &w->slots[s]);
			s = (s + 1) % SLOTS_PER_THREAD;
		} else {
			r = read_in_place(pl, c);
		}
		if (r < 0)
			return r;
		atomic_fetch_add(&pl->done, c->len);
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int r = worker_run(w);

	if (r < 0)
		fail(w->pl, r);
	for (unsigned i = 0; i < SLOTS_PER_THREAD; i++) {
		r = slot_wait(w->pl, &w->slots[i]);
		if (r < 0)
			fail(w->pl, r);
		cuda_event_free(w->slots[i].event);
		cuda_stream_free(w->slots[i].stream);
	}
	atomic_fetch_add(&w->pl->finished, 1);
	return NULL;
}

static bool needs_staging(const struct pipe_params *p)
{
	if (p->device != WFS_DEVICE_CPU)
		return true;
	for (size_t i = 0; i < p->npieces; i++)
		if (p->reader->ops->align(p->reader, p->pieces[i].file) > 1)
			return true;
	return false;
}

/* Fit the threads' slots in the staging budget. */
static void size_slots(struct pipeline *pl, unsigned *threads)
{
	size_t per_slot;

	while (*threads > 1 &&
	       pl->p->staging_bytes / (*threads * SLOTS_PER_THREAD) < MIN_CHUNK)
		(*threads)--;
	per_slot = pl->p->staging_bytes / (*threads * SLOTS_PER_THREAD);
	if (per_slot < pl->chunk_bytes)
		pl->chunk_bytes = per_slot;
	pl->chunk_bytes = pl->chunk_bytes / PAGE * PAGE;
	if (pl->chunk_bytes < MIN_CHUNK)
		pl->chunk_bytes = MIN_CHUNK;
}

static void wait_with_progress(struct pipeline *pl, unsigned n)
{
	const struct pipe_params *p = pl->p;
	struct timespec tick = { 0, 100 * 1000 * 1000 };

	if (!p->progress)
		return;
	while (atomic_load(&pl->finished) < n) {
		p->progress(p->progress_arg, atomic_load(&pl->done), pl->total);
		nanosleep(&tick, NULL);
	}
	p->progress(p->progress_arg, atomic_load(&pl->done), pl->total);
}

int pipeline_run(const struct pipe_params *p, struct pipe_result *ret)
{
	struct pipeline pl = { .p = p, .chunk_bytes = p->chunk_bytes };
	struct worker *workers = NULL;
	unsigned threads = p->threads, started = 0;
	int r;

	pthread_mutex_init(&pl.lock, NULL);
	pl.staged = needs_staging(p);
	if (pl.staged)
		size_slots(&pl, &threads);
	else
		pl.chunk_bytes = (pl.chunk_bytes + PAGE - 1) / PAGE * PAGE;
	r = build_chunks(&pl);
	if (r < 0) {
		err_set(r, "out of memory");
		goto out;
	}
	if (threads > pl.nchunks)
		threads = pl.nchunks ? (unsigned)pl.nchunks : 1;
	workers = calloc(threads, sizeof(*workers));
	if (!workers) {
		r = err_set(-ENOMEM, "out of memory");
		goto out;
	}
	if (pl.staged) {
		size_t per = pl.chunk_bytes * SLOTS_PER_THREAD;

		if (p->device != WFS_DEVICE_CPU) {
			r = cuda_use(p->device);
			if (r < 0)
				goto out;
		}
		r = staging_take(p->device, per * threads, &pl.staging);
		if (r < 0)
			goto out;
		/* Staging shared with the daemon: it writes the reads there
		 * itself (a reader that cannot just copies). */
		if (pl.staging.memfd >= 0)
			reader_share(p->reader, pl.staging.buf, pl.staging.len,
				     pl.staging.memfd);
		for (unsigned t = 0; t < threads; t++)
			for (unsigned i = 0; i < SLOTS_PER_THREAD; i++)
				workers[t].slots[i].buf =
					(char *)pl.staging.buf + t * per +
					i * pl.chunk_bytes;
	}
	{
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ret->io_start = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
	}
	for (; started < threads; started++) {
		workers[started].pl = &pl;
		if (pthread_create(&workers[started].tid, NULL, worker_main,
				   &workers[started]))
			break;
	}
	if (!started) {
		r = err_set(-EAGAIN, "cannot start reader threads");
		goto out;
	}
	wait_with_progress(&pl, started);
	for (unsigned t = 0; t < started; t++)
		pthread_join(workers[t].tid, NULL);
	if (pl.err) {
		r = err_set(pl.err, "%s", pl.msg);
		goto out;
	}
	ret->threads = started;
	ret->staging_bytes = pl.staged ? pl.staging.len : 0;
	ret->staging = !pl.staged	       ? WFS_STAGING_NONE
		       : !pl.staging.pinned    ? WFS_STAGING_HOST
		       : pl.staging.memfd >= 0 ? WFS_STAGING_SHARED
					       : WFS_STAGING_HOST_ALLOC;
	r = 0;
out:
	if (atomic_load(&pl.staging_unsafe))
		staging_abandon(&pl.staging);
	else
		staging_put(&pl.staging);
	free(workers);
	free(pl.chunks);
	pthread_mutex_destroy(&pl.lock);
	return r;
}
