/* Decode workers and scratch buffers: see decode_pool.h. */
#include "decode_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct decode_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;		 /* workers wait here */
	struct decode_work *head, *tail; /* queued; protected by lock */
	bool stop;			 /* protected by lock */
	bool started;			 /* threads started; lock */
	pthread_t threads[DECODE_POOL_THREADS_MAX];
	unsigned nthreads; /* protected by lock */
	/* Scratch buffers kept for reuse; protected by lock. */
	struct {
		char *p;
		size_t cap;
	} scratch[DECODE_POOL_SCRATCH_MAX];
	unsigned nscratch;
	size_t scratch_bytes; /* what they hold */
};

int decode_pool_new(struct decode_pool **ret)
{
	struct decode_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	*ret = p;
	return 0;
}

static struct decode_work *pop(struct decode_pool *p)
{
	struct decode_work *w = p->head;

	if (w) {
		p->head = w->next;
		if (!p->head)
			p->tail = NULL;
		w->next = NULL;
	}
	return w;
}

static void *worker(void *arg)
{
	struct decode_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		struct decode_work *w = pop(p);

		if (!w) {
			pthread_cond_wait(&p->cond, &p->lock);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		w->run(w, 0);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* With p->lock held: the threads, one per core. */
static void start_locked(struct decode_pool *p)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = cpus < 1 ? 1 : (unsigned)cpus;

	p->started = true;
	if (n > DECODE_POOL_THREADS_MAX)
		n = DECODE_POOL_THREADS_MAX;
	while (p->nthreads < n &&
	       !pthread_create(&p->threads[p->nthreads], NULL, worker, p))
		p->nthreads++;
}

void decode_pool_submit(struct decode_pool *p, struct decode_work *w)
{
	bool stop;

	pthread_mutex_lock(&p->lock);
	if (!p->started && !p->stop)
		start_locked(p);
	stop = p->stop || !p->nthreads;
	if (!stop) {
		w->next = NULL;
		if (p->tail)
			p->tail->next = w;
		else
			p->head = w;
		p->tail = w;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	if (stop)
		w->run(w, -ESHUTDOWN);
}

void decode_pool_shutdown(struct decode_pool *p)
{
	struct decode_work *q, *w;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	q = p->head;
	p->head = p->tail = NULL;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	/* Everything queued fails now, not when a thread gets to it. */
	while ((w = q)) {
		q = w->next;
		w->next = NULL;
		w->run(w, -ESHUTDOWN);
	}
}

void decode_pool_free(struct decode_pool *p)
{
	if (!p)
		return;
	decode_pool_shutdown(p);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	while (p->nscratch)
		free(p->scratch[--p->nscratch].p);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

char *decode_pool_scratch_get(struct decode_pool *p, size_t len,
			      size_t *ret_cap)
{
	char *buf = NULL;
	unsigned i;

	pthread_mutex_lock(&p->lock);
	for (i = 0; i < p->nscratch; i++) {
		if (p->scratch[i].cap >= len) {
			buf = p->scratch[i].p;
			*ret_cap = p->scratch[i].cap;
			p->scratch_bytes -= p->scratch[i].cap;
			p->scratch[i] = p->scratch[--p->nscratch];
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!buf && (buf = malloc(len ? len : 1)))
		*ret_cap = len ? len : 1;
	return buf;
}

void decode_pool_scratch_put(struct decode_pool *p, char *buf, size_t cap)
{
	pthread_mutex_lock(&p->lock);
	if (p->nscratch < 2 ||
	    (p->nscratch < DECODE_POOL_SCRATCH_MAX &&
	     p->scratch_bytes + cap <= DECODE_POOL_SCRATCH_BYTES)) {
		p->scratch_bytes += cap;
		p->scratch[p->nscratch].p = buf;
		p->scratch[p->nscratch++].cap = cap;
		buf = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(buf);
}
