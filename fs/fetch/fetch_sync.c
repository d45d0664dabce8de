/* The fetch engine's transport for sources that read synchronously
 * (source_ops.read_block, e.g. file://): a few worker threads, each
 * running one read at a time. A read already running when the engine
 * stops ends when the source returns; its block then fails with
 * -ESHUTDOWN. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "cache.h"
#include "fetch_impl.h"
#include "opts.h"
#include "source.h"
#include "stats.h"

#define SYNC_THREADS_MAX 8

struct sync_state {
	pthread_t threads[SYNC_THREADS_MAX];
	unsigned nthreads;
	unsigned active; /* protected by f->lock */
};

static void *sync_worker(void *arg)
{
	struct fetch *f = arg;
	struct sync_state *st = f->tpriv;

	pthread_mutex_lock(&f->lock);
	while (!f->stop) {
		uint64_t next_due = UINT64_MAX;
		struct fetch_job *j =
			fetch_take(f, st->active, fetch_now_ms(), &next_due);
		int err;

		if (!j) {
			if (next_due == UINT64_MAX) {
				pthread_cond_wait(&f->cond, &f->lock);
			} else {
				struct timespec ts;
				uint64_t now = fetch_now_ms(), ms;

				ms = next_due > now ? next_due - now : 0;
				if (ms > 1000)
					ms = 1000;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += (time_t)(ms / 1000);
				ts.tv_nsec += (long)(ms % 1000) * 1000000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&f->cond, &f->lock, &ts);
			}
			continue;
		}
		st->active++;
		pthread_mutex_unlock(&f->lock);
		STAT_ADD(requests, 1);
		err = f->src->ops->read_block(f->src, j->obj, j->etag, j->off,
					      j->len, j->dst);
		if (!err)
			STAT_ADD(bytes_fetched, j->len);
		pthread_mutex_lock(&f->lock);
		st->active--;
		if (f->stop)
			err = -ESHUTDOWN; /* stopped while it ran: no retry */
		pthread_mutex_unlock(&f->lock);
		fetch_attempt_done(f, j, err);
		pthread_mutex_lock(&f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

static int sync_start(struct fetch *f)
{
	struct sync_state *st = calloc(1, sizeof(*st));
	unsigned i, n = f->opts->connections;

	if (!st)
		return -ENOMEM;
	f->tpriv = st;
	if (n > SYNC_THREADS_MAX)
		n = SYNC_THREADS_MAX;
	if (n == 0)
		n = 1;
	for (i = 0; i < n; i++) {
		int r = pthread_create(&st->threads[i], NULL, sync_worker, f);

		if (r)
			return -r;
		st->nthreads++;
	}
	return 0;
}

static void sync_wake(struct fetch *f)
{
	/* The core signalled f->cond with the job queued. */
	(void)f;
}

static void sync_stop(struct fetch *f)
{
	struct sync_state *st = f->tpriv;
	unsigned i;

	if (!st)
		return;
	for (i = 0; i < st->nthreads; i++)
		pthread_join(st->threads[i], NULL);
	free(st);
	f->tpriv = NULL;
}

const struct fetch_transport fetch_sync_transport = {
	.start = sync_start,
	.wake = sync_wake,
	.stop = sync_stop,
};
