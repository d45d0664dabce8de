/* Decode workers: a few threads (one per core, at most
 * DECODE_POOL_THREADS_MAX) that run decode work off the transports'
 * threads, started on the first work, and the scratch buffers stored bytes
 * are fetched into when they cannot be decoded in place. Generic: a work
 * is a callback; the fetch engine submits its decoded blocks' jobs here.
 *
 * Thread-safe: every function may be called from any thread. */
#ifndef WFS_FS_DECODE_POOL_H
#define WFS_FS_DECODE_POOL_H

#include <stddef.h>

/* Threads at most (one per core). */
#define DECODE_POOL_THREADS_MAX 16
/* Scratch buffers kept for reuse, at most: so many, and so many bytes
 * (or two buffers, whatever their size). */
#define DECODE_POOL_SCRATCH_MAX 16
#define DECODE_POOL_SCRATCH_BYTES (64u << 20)

struct decode_pool;

/* One piece of work, embedded in the submitter's job. */
struct decode_work {
	/* Runs on a worker with @err 0, or with -ESHUTDOWN (on any thread)
	 * when the pool stopped first. */
	void (*run)(struct decode_work *w, int err);
	struct decode_work *next; /* private to the pool */
};

/* decode_pool_new() - a pool, no thread yet. @return 0 and *ret, or
 * -ENOMEM. */
int decode_pool_new(struct decode_pool **ret);

/*
 * decode_pool_submit() - run @w on a worker (the first work starts the
 * threads); after decode_pool_shutdown(), or when no thread could start,
 * @w runs at once on this thread with -ESHUTDOWN.
 */
void decode_pool_submit(struct decode_pool *p, struct decode_work *w);

/* decode_pool_shutdown() - work queued and submitted later runs with
 * -ESHUTDOWN; running work finishes. Idempotent; does not wait. */
void decode_pool_shutdown(struct decode_pool *p);

/* decode_pool_free() - shut down, join the threads, free the scratch
 * buffers. NULL is fine. */
void decode_pool_free(struct decode_pool *p);

/*
 * decode_pool_scratch_get() - a buffer of at least @len bytes (one kept
 * for reuse when there is: a fresh one costs page faults on every
 * block), its size in *ret_cap. @return it, or NULL.
 */
char *decode_pool_scratch_get(struct decode_pool *p, size_t len,
			      size_t *ret_cap);

/* decode_pool_scratch_put() - keep @buf (of @cap bytes) for reuse, or
 * free it. */
void decode_pool_scratch_put(struct decode_pool *p, char *buf, size_t cap);

#endif
