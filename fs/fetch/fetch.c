/* The fetch engine's source-independent core: queues, the retry policy,
 * response validation, error classes. Transports: fetch_sync.c,
 * fetch_curl.c. */
#include "fetch.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "decoder.h"
#include "fetch_impl.h"
#include "http.h"
#include "opts.h"
#include "source.h"
#include "stats.h"
#include "tree.h"

uint64_t fetch_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void queue_push(struct fetch_queue *q, struct fetch_job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static struct fetch_job *queue_pop(struct fetch_queue *q)
{
	struct fetch_job *j = q->head;

	if (j) {
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		j->next = NULL;
	}
	return j;
}

/* Unlink and return the first job of @q whose backoff has passed. */
static struct fetch_job *queue_take(struct fetch_queue *q, uint64_t now,
				    uint64_t *next_due)
{
	struct fetch_job **p = &q->head, *prev = NULL;

	for (; *p; prev = *p, p = &(*p)->next) {
		struct fetch_job *j = *p;

		if (j->not_before_ms > now) {
			if (j->not_before_ms < *next_due)
				*next_due = j->not_before_ms;
			continue;
		}
		*p = j->next;
		if (q->tail == j)
			q->tail = prev;
		j->next = NULL;
		return j;
	}
	return NULL;
}

void fetch_set_limit(struct fetch *f, unsigned limit)
{
	/* An eighth of the connections, at least one when there are two,
	 * stay for readers: hung readahead or retries cannot hold them all.
	 * (A quarter left a sequential stream ~9 of 16 in flight.) */
	f->limit = limit;
	f->reserved = limit / 8;
	if (!f->reserved && limit >= 2)
		f->reserved = 1;
	STAT_SET(connections_now, limit);
}

/* Unlink and return the first due job of @q that a reader waits for. */
static struct fetch_job *queue_take_demand(struct fetch_queue *q, uint64_t now,
					   uint64_t *next_due)
{
	struct fetch_job **p = &q->head, *prev = NULL;

	for (; *p; prev = *p, p = &(*p)->next) {
		struct fetch_job *j = *p;

		if (!j->demand)
			continue;
		if (j->not_before_ms > now) {
			if (j->not_before_ms < *next_due)
				*next_due = j->not_before_ms;
			continue;
		}
		*p = j->next;
		if (q->tail == j)
			q->tail = prev;
		j->next = NULL;
		return j;
	}
	return NULL;
}

struct fetch_job *fetch_take(struct fetch *f, unsigned active, uint64_t now,
			     uint64_t *next_due)
{
	struct fetch_job *j = queue_take(&f->demand, now, next_due);

	if (!j)
		j = queue_take_demand(&f->retry, now, next_due);
	if (j || active + f->reserved >= f->limit)
		return j;
	j = queue_take(&f->retry, now, next_due);
	return j ? j : queue_take(&f->ahead, now, next_due);
}

/* Whether @b's bytes follow @a's in the same version of the same object,
 * so that one request can fetch both. */
static bool continues(const struct fetch_job *a, const struct fetch_job *b)
{
	/* Streamed decoded blocks continue one another where their stored
	 * bytes do (frames that end where blocks end). */
	return !b->demand && (!b->dec || (a->streamed && b->streamed)) &&
	       b->file == a->file && b->obj == a->obj &&
	       b->b->generation == a->b->generation &&
	       b->b->index == a->b->index + 1 && b->off == a->off + a->len &&
	       b->size == a->size &&
	       (a->etag ? b->etag && !strcmp(a->etag, b->etag) : !b->etag);
}

/* Unlink and return the job of @q, due at @now, that continues @prev. */
static struct fetch_job *queue_take_next(struct fetch_queue *q,
					 const struct fetch_job *prev,
					 uint64_t now)
{
	struct fetch_job **p = &q->head, *pv = NULL;

	for (; *p; pv = *p, p = &(*p)->next) {
		struct fetch_job *j = *p;

		if (j->not_before_ms > now || !continues(prev, j))
			continue;
		*p = j->next;
		if (q->tail == j)
			q->tail = pv;
		j->next = NULL;
		return j;
	}
	return NULL;
}

struct fetch_job *fetch_take_run(struct fetch *f, unsigned active, uint64_t now,
				 uint64_t *next_due, size_t *ret_len)
{
	struct fetch_job *j = fetch_take(f, active, now, next_due), *last = j;
	uint64_t max = f->opts->request_size, rest;
	uint64_t g = f->opts->range_align;
	unsigned conns = f->limit; /* what connections=auto allows now */
	size_t len, blocks;	   /* the run's bytes; its blocks' (decoded) */

	if (!j)
		return NULL;
	len = j->len;
	blocks = j->b->len;
	/* Near the file's end a run takes only an even share of what is
	 * left over the connections readahead may use (guided
	 * self-scheduling), so the stream's last requests end together
	 * instead of one whole request running on while the others idle. */
	conns = conns > f->reserved ? conns - f->reserved : 1;
	rest = j->size > j->off ? j->size - j->off : 0;
	if (max > rest / conns)
		max = rest / conns;
	/* A run ends on a granule boundary (range_align), where the next
	 * granule starts: at most max rounded down to one, but never short
	 * of the end of the granule it starts in; so the ranges a node asks
	 * for are whole slices of a rack cache or pieces of a P2P engine. */
	if (g && !j->dec) {
		uint64_t end = j->off + max, first = j->off - j->off % g + g;

		end -= end % g;
		max = (end < first ? first : end) - j->off;
	}
	/* A reader's block goes alone (its bytes first and only); a
	 * decoded block's stored bytes are not the block's, unless they
	 * are streamed to it (a run of whole blocks then, their frames'
	 * tags aside). Later blocks are never longer than earlier ones:
	 * blocks + last's bounds the next. */
	while (!j->demand && (!j->dec || j->streamed) &&
	       blocks + last->b->len <= max) {
		struct fetch_job *n = queue_take_next(&f->retry, last, now);

		if (!n)
			n = queue_take_next(&f->ahead, last, now);
		if (!n)
			break;
		last->next = n;
		last = n;
		len += n->len;
		blocks += n->b->len;
	}
	*ret_len = len;
	return j;
}

int fetch_new(struct source *src, const struct options *opts,
	      struct fetch **ret)
{
	struct fetch *f;

	if (!src->ops->read_block == !src->ops->prepare_get)
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->src = src;
	f->opts = opts;
	/* Capability, not kind: the source says how it reads. */
	f->tp = src->ops->read_block ? &fetch_sync_transport
				     : &fetch_curl_transport;
	if (decode_pool_new(&f->decode)) {
		free(f);
		return -ENOMEM;
	}
	fetch_set_limit(f, opts->connections);
	STAT_SET(connections_max, opts->connections);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	*ret = f;
	return 0;
}

static void job_free(struct fetch *f, struct fetch_job *j)
{
	if (j) {
		if (j->dst && j->dst_cap)
			decode_pool_scratch_put(f->decode, j->dst, j->dst_cap);
		if (j->stream)
			decoded_stream_free(j->dec, j->stream);
		decoded_unref(j->dec);
		free(j->etag);
		free(j);
	}
}

/* The object changed or went away under us: later reads of it fail until
 * it is listed again. */
static void mark_changed(struct fetch_job *j)
{
	struct node *n = j->file;

	pthread_mutex_lock(&n->lock);
	if (n->generation == j->b->generation && !n->changed) {
		n->changed = true;
		STAT_ADD(changed, 1);
	}
	pthread_mutex_unlock(&n->lock);
}

bool fetch_adopt_etag(struct fetch_job *j, const char *etag)
{
	struct node *n = j->file;
	bool differs;

	/* A compressed object's validator comes from its listing. */
	if (j->obj != j->file)
		return false;
	pthread_mutex_lock(&n->lock);
	if (n->generation != j->b->generation)
		differs = true; /* relisted meanwhile: another version */
	else if (n->etag || n->pinned)
		differs = strcmp(n->etag ? n->etag : n->pinned, etag) != 0;
	else
		differs = false, n->pinned = strdup(etag); /* NULL: unpinned */
	pthread_mutex_unlock(&n->lock);
	return differs;
}

static void finish(struct fetch *f, struct fetch_job *j, int err)
{
	if (err) {
		stats_count_error(err);
		if (err == -ESTALE || err == -ENOENT)
			mark_changed(j);
	}
	cache_fetch_done(f->cache, j->b, err);
	job_free(f, j);
}

bool fetch_retryable(int err)
{
	return http_retryable(err, 0); /* the one policy */
}

/* Where block @j starts in its file. */
static uint64_t block_off(const struct fetch_job *j)
{
	return j->b->index * cache_block_size(j->f->cache);
}

/* On a decode worker: @j's stored bytes are in; make the block of them
 * (or fail it with @err: the pool stopped). */
static void decode_job(struct decode_work *w, int err)
{
	struct fetch_job *j =
		(struct fetch_job *)((char *)w -
				     offsetof(struct fetch_job, work));
	struct fetch *f = j->f;

	if (!err)
		err = decoded_decode(j->dec, j->file->key, block_off(j),
				     j->b->len, j->dst, j->len, j->b->data);
	finish(f, j, err);
}

/* Fetch the stored bytes block @j needs instead: streamed to the decoder
 * when the transport and the decoder can, else into scratch or the
 * block's end. */
static int plan_decoded(struct fetch *f, struct fetch_job *j)
{
	struct decoded *d = j->dec;
	bool in_place;
	int err = decoded_plan(d, j->file->key, j->off, j->len, &j->off,
			       &j->len, &in_place);

	if (err)
		return err;
	j->obj = &d->obj;
	j->size = d->object_size;
	j->f = f;
	j->work.run = decode_job;
	if (f->tp->streams) {
		err = decoded_stream_new(d, block_off(j), j->b->len, j->b->data,
					 &j->stream);
		if (err != -EOPNOTSUPP) {
			j->streamed = true;
			return err;
		}
		j->stream = NULL;
	}
	if (in_place) { /* into the block's end, decoded there */
		j->dst = j->b->data + (j->b->len - j->len);
		return 0;
	}
	j->dst = decode_pool_scratch_get(f->decode, j->len, &j->dst_cap);
	return j->dst ? 0 : -ENOMEM;
}

int fetch_stream_renew(struct fetch_job *j)
{
	if (j->stream && !j->stream_fed)
		return 0;
	decoded_stream_free(j->dec, j->stream);
	j->stream = NULL;
	j->stream_fed = false;
	return decoded_stream_new(j->dec, block_off(j), j->b->len, j->b->data,
				  &j->stream);
}

int fetch_stream_put(struct fetch_job *j, const char *p, size_t n)
{
	j->stream_fed = true;
	return decoded_stream_put(j->dec, j->stream, p, n);
}

void fetch_attempt_done(struct fetch *f, struct fetch_job *j, int err)
{
	unsigned wait;
	bool stop;

	if (j->streamed)
		err = decoded_stream_end(j->dec, j->file->key, block_off(j),
					 j->b->len, j->stream, err);
	else if (!err && j->dec) {
		decode_pool_submit(f->decode, &j->work);
		return;
	}
	if (!err || !fetch_retryable(err) || j->attempt >= f->opts->retries) {
		finish(f, j, err);
		return;
	}
	/* A 429 or 503 that says when to come back is not asked sooner. */
	wait = http_backoff_ms(j->attempt);
	if (j->retry_after_ms > wait)
		wait = j->retry_after_ms;
	j->not_before_ms = fetch_now_ms() + wait;
	j->attempt++;
	STAT_ADD(retries, 1);
	pthread_mutex_lock(&f->lock);
	stop = f->stop;
	if (!stop) {
		/* After demand reads: a retry must not hold up a reader of
		 * another file (a hung source is retried the most). But a
		 * reader's block stays a reader's (fetch_take()): retried
		 * before any readahead, on any connection; behind readahead
		 * of a dead server it would wait for each to time out. */
		for (unsigned i = 0; i < 16 && !j->demand; i++) {
			if (f->early[i] == j->b) {
				f->early[i] = NULL;
				j->demand = true;
			}
		}
		queue_push(&f->retry, j);
		pthread_cond_signal(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	if (stop)
		finish(f, j, -ESHUTDOWN);
	else
		f->tp->wake(f);
}

/* Fills this thread started between fetch_batch_begin() and _end(),
 * queued at the end together. */
static __thread struct {
	struct fetch *f;
	struct fetch_queue q;
	unsigned depth;
} batch;

/* Queue the jobs chained from @j (on ->next) and wake the transport
 * once: readers' blocks as demand, the others as readahead. */
static void enqueue(struct fetch *f, struct fetch_job *j)
{
	struct fetch_job *n;
	bool stop;

	pthread_mutex_lock(&f->lock);
	stop = f->stop;
	for (n = j; !stop && n; n = j) {
		struct block *b = n->b;
		unsigned i;

		j = n->next;
		n->demand = !b->prefetch;
		for (i = 0; i < 16 && !n->demand; i++) {
			if (f->early[i] == b) {
				f->early[i] = NULL;
				n->demand = true;
			}
		}
		queue_push(n->demand ? &f->demand : &f->ahead, n);
	}
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	if (!stop) {
		f->tp->wake(f);
		return;
	}
	for (n = j; n; n = j) {
		j = n->next;
		finish(f, n, -ESHUTDOWN);
	}
}

static void fill_start(void *arg, struct block *b)
{
	struct fetch *f = arg;
	struct fetch_job *j = calloc(1, sizeof(*j));
	struct node *n = b->file;
	bool stale;

	if (!j) {
		stats_count_error(-ENOMEM);
		cache_fetch_done(f->cache, b, -ENOMEM);
		return;
	}
	j->b = b;
	j->file = n;
	j->obj = n;
	j->dst = b->data;
	j->off = b->index * cache_block_size(f->cache);
	j->len = b->len;
	pthread_mutex_lock(&n->lock);
	stale = n->generation != b->generation;
	j->size = n->size;
	if (n->etag || n->pinned)
		j->etag = strdup(n->etag ? n->etag : n->pinned);
	j->dec = decoded_ref(n->dec);
	pthread_mutex_unlock(&n->lock);
	/* Claimed for a version a relist has since replaced: the validator
	 * is the new version's, so fetching would put its bytes under the
	 * old generation (a mix). The reader of the old version gets ESTALE. */
	if (stale) {
		finish(f, j, -ESTALE);
		return;
	}
	if (j->dec) {
		int err = plan_decoded(f, j);

		if (err) {
			finish(f, j, err);
			return;
		}
	}
	if (batch.depth && (!batch.f || batch.f == f)) {
		batch.f = f;
		queue_push(&batch.q, j);
		return;
	}
	j->next = NULL;
	enqueue(f, j);
}

void fetch_batch_begin(void)
{
	batch.depth++;
}

void fetch_batch_end(void)
{
	struct fetch *f = batch.f;

	if (!batch.depth || --batch.depth)
		return;
	batch.f = NULL;
	if (f)
		enqueue(f, batch.q.head);
	batch.q.head = batch.q.tail = NULL;
}

/* Move @b's job, if it still waits among readahead, to the demand
 * queue's front: a reader waits for it now. */
static void fill_promote(void *arg, struct block *b)
{
	struct fetch *f = arg;
	struct fetch_job **p, *prev = NULL;

	pthread_mutex_lock(&f->lock);
	for (p = &f->ahead.head; *p; prev = *p, p = &(*p)->next) {
		struct fetch_job *j = *p;

		if (j->b != b)
			continue;
		*p = j->next;
		if (f->ahead.tail == j)
			f->ahead.tail = prev;
		j->demand = true;
		j->next = f->demand.head;
		f->demand.head = j;
		if (!f->demand.tail)
			f->demand.tail = j;
		pthread_cond_signal(&f->cond);
		break;
	}
	/* Not queued yet (or running already, then this is harmless). */
	if (!*p)
		f->early[f->nearly++ % 16] = b;
	pthread_mutex_unlock(&f->lock);
	f->tp->wake(f);
}

const struct cache_fill_ops fetch_fill_ops = {
	.start = fill_start,
	.promote = fill_promote,
};

int fetch_start(struct fetch *f, struct cache *cache)
{
	f->cache = cache;
	return f->tp->start(f);
}

void fetch_shutdown(struct fetch *f)
{
	struct fetch_queue q = { 0 };
	struct fetch_job *j;

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	/* Everything queued fails now, not when a thread gets to it. */
	while ((j = queue_pop(&f->demand)) || (j = queue_pop(&f->retry)) ||
	       (j = queue_pop(&f->ahead)))
		queue_push(&q, j);
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	while ((j = queue_pop(&q)))
		finish(f, j, -ESHUTDOWN);
	decode_pool_shutdown(f->decode);
	if (f->cache)
		f->tp->wake(f);
}

void fetch_free(struct fetch *f)
{
	if (!f)
		return;
	fetch_shutdown(f);
	if (f->cache)
		f->tp->stop(f);
	decode_pool_free(f->decode);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}
