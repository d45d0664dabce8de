/* Private to the fetch engine: the core (fetch.c) and its transports
 * (fetch_sync.c, fetch_curl.c). The core owns the queues and decides
 * retries; a transport takes jobs with fetch_take(), moves bytes
 * [off, off + len) of job->obj into job->dst, and hands each attempt's
 * outcome to fetch_attempt_done().
 *
 * Usually obj is the block's file and dst its data. A block decoded from a
 * stored object of another form (decoder.h) is the one exception, kept to
 * this seam: obj names the stored object, [off, off + len) are the stored
 * bytes decoded_plan() names, dst a scratch buffer of the decode pool (or
 * the block's end, decoded in place); once they are in, a decode worker
 * (decode_pool.h) turns them into the block's data. A transport that
 * streams (fetch_curl.c) hands the stored bytes of a decoder that can
 * take them as they arrive (job->stream: decryption) straight to it
 * instead (job->streamed), which writes the block's data; no dst, no
 * decode worker.
 *
 * Runs: a transport that can (fetch_curl.c) takes a job with
 * fetch_take_run(), which chains on job->next the queued jobs continuing
 * it (the same version of the same file, the next blocks), and moves the
 * whole run with one ranged GET. Each job still ends on its own: a job
 * whose bytes are in (and whose response was judged good so far) ends
 * before the rest of the run arrives. */
#ifndef WFS_FS_FETCH_IMPL_H
#define WFS_FS_FETCH_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fetch.h"

#include "decode_pool.h"

struct block;
struct decoded;
struct node;

struct fetch_job {
	struct block *b;
	struct node *file;
	const struct node *obj;	 /* the object read: file, or the stored */
	char *dst;		 /* where its bytes go: b->data, or scratch */
	size_t dst_cap;		 /* scratch: its size */
	struct decoded *dec;	 /* set: decode dst into b->data */
	struct decode_work work; /* dec: its decoding */
	struct fetch *f;	 /* dec: the engine */
	bool streamed;		 /* dec: its bytes go to a decoder's stream */
	void *stream;		 /* streamed: decoded_stream_new()'s, or NULL */
	bool stream_fed;	 /* bytes went into stream: renew to retry */
	uint64_t off;		 /* bytes [off, off + len) of obj */
	size_t len;
	uint64_t size; /* obj's size when the fetch started */
	char *etag;    /* validator pinned for every attempt, or NULL */
	unsigned attempt;
	uint64_t not_before_ms;
	/* the failed attempt's response asked to wait this long before
	 * another (429/503 Retry-After); set by the transport, or 0 */
	unsigned retry_after_ms;
	bool demand; /* a reader waits for it: runs alone, retried first */
	struct fetch_job *next; /* its queue; taken: the rest of its run */
};

struct fetch_queue {
	struct fetch_job *head, *tail;
};

struct fetch;

/* A way to move bytes. Each op is called without f->lock held. */
struct fetch_transport {
	/* Set up and start threads; f->cache is set. */
	int (*start)(struct fetch *f);
	/* Work was queued, or f->stop was set: look again. */
	void (*wake)(struct fetch *f);
	/* f->stop is set: fail running jobs with -ESHUTDOWN (as soon as
	 * possible), join the threads, free the transport's state. Called
	 * once, even when start() failed or never ran. */
	void (*stop)(struct fetch *f);
	/* Hands decoders' streams their bytes (fetch_stream_renew() before
	 * each attempt), so the core may give it streamed jobs. */
	bool streams;
};

struct fetch {
	struct source *src;
	const struct options *opts;
	struct cache *cache;
	const struct fetch_transport *tp;
	void *tpriv;	   /* the transport's */
	unsigned reserved; /* connections only demand reads may use */
	unsigned limit;	   /* connections in use now (auto: the tuner's) */
	pthread_mutex_t lock;
	pthread_cond_t cond;	    /* sync workers wait here */
	struct fetch_queue demand;  /* protected by lock */
	struct fetch_queue retry;   /* protected by lock */
	struct fetch_queue ahead;   /* protected by lock */
	struct decode_pool *decode; /* decoded blocks' workers, scratch */
	bool stop;		    /* protected by lock */
	/* Blocks a reader waited for before their fetch was queued (the
	 * cache starts fetches outside its lock): queued as demand when
	 * they arrive. A small ring; protected by lock. */
	struct block *early[16];
	unsigned nearly;
};

extern const struct fetch_transport fetch_sync_transport;
extern const struct fetch_transport fetch_curl_transport;

uint64_t fetch_now_ms(void);

/*
 * fetch_set_limit() - with f->lock held (or before any thread runs):
 * use @limit connections from now, an eighth of them (at least one of
 * two or more) reserved for demand reads.
 */
void fetch_set_limit(struct fetch *f, unsigned limit);

/*
 * fetch_take() - with f->lock held: the next job to start when @active
 * jobs run, whose backoff has passed: demand first, then retries of
 * blocks readers wait for, then other retries, then readahead (those two
 * only while fewer than limit - reserved run).
 * NULL when none; *next_due is lowered to when a waiting job's backoff
 * ends.
 */
struct fetch_job *fetch_take(struct fetch *f, unsigned active, uint64_t now,
			     uint64_t *next_due);

/*
 * fetch_take_run() - fetch_take(), and unless the job is a reader's
 * (demand) or a decoded block's not streamed, the retry and readahead
 * jobs waiting that continue it (the same file, version and validator, the
 * next block, each a whole block but the last; streamed: its stored bytes
 * next too), chained on ->next, the run at most
 * opts->request_size bytes, and near the file's end at most its share of
 * the rest over the connections readahead may use. Sets *ret_len to the
 * run's bytes (its first
 * job's off onwards).
 */
struct fetch_job *fetch_take_run(struct fetch *f, unsigned active, uint64_t now,
				 uint64_t *next_due, size_t *ret_len);

/*
 * fetch_attempt_done() - one attempt of @j ended with @err (0: the
 * block's data is in). Retries it after a backoff when @err is transient
 * and retries remain, else ends it (cache_fetch_done()). f->lock not
 * held.
 */
void fetch_attempt_done(struct fetch *f, struct fetch_job *j, int err);

/*
 * fetch_stream_renew() - before an attempt at streamed job @j: a fresh
 * stream if the last attempt fed bytes to it (or has none). @return 0,
 * or the decoder's error (the attempt fails with it).
 */
int fetch_stream_renew(struct fetch_job *j);

/* fetch_stream_put() - @n stored bytes of streamed job @j arrived (in
 * order): to its decoder. @return 0, or its error (the attempt fails). */
int fetch_stream_put(struct fetch_job *j, const char *p, size_t n);

/*
 * fetch_adopt_etag() - a 2xx response to @j, which has no validator (its
 * listing gave none: HTTP directory indexes), carries @etag. The first
 * such response of a version makes @etag the file's pinned validator
 * (node->pinned), so later blocks are pinned to it (If-Match) and every
 * block of one version comes from one object. Any thread; takes the
 * node's lock.
 * @return whether @etag differs from the validator of @j's version (the
 * object changed since: the response is -ESTALE).
 */
bool fetch_adopt_etag(struct fetch_job *j, const char *etag);

#endif
