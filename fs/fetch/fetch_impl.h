/* Private to the fetch engine: the core (fetch.c) and its transports
 * (fetch_sync.c, fetch_curl.c). The core owns the queues and decides
 * retries; a transport takes jobs with fetch_take(), moves bytes
 * [off, off + len) of job->obj into job->dst, and hands each attempt's
 * outcome to fetch_attempt_done().
 *
 * Usually obj is the block's file and dst its data. A block decoded from a
 * compressed object (zstd_object.h) is the one exception, kept to this
 * seam: obj names the compressed object, [off, off + len) are the
 * compressed bytes of the frames covering the block, dst a scratch buffer;
 * once they are in, a decode thread turns them into the block's data.
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

struct block;
struct node;
struct zstd_object;

/* Threads decoding compressed blocks, at most (one per core). */
#define FETCH_DECODERS_MAX 16
/* Scratch buffers for compressed bytes kept for reuse, at most: so many,
 * and so many bytes (or two buffers, whatever their size). */
#define FETCH_SCRATCH_MAX 16
#define FETCH_SCRATCH_BYTES (64u << 20)

struct fetch_job {
	struct block *b;
	struct node *file;
	const struct node *obj;	  /* the object read: file, or the compressed */
	char *dst;		  /* where its bytes go: b->data, or scratch */
	size_t dst_cap;		  /* scratch: its size */
	struct zstd_object *zobj; /* set: decode dst into b->data */
	uint64_t off;		  /* bytes [off, off + len) of obj */
	size_t len;
	uint64_t size; /* obj's size when the fetch started */
	char *etag;    /* validator pinned for every attempt, or NULL */
	unsigned attempt;
	uint64_t not_before_ms;
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
	struct fetch_queue decode;  /* fetched, to decode; protected by lock */
	pthread_cond_t decode_cond; /* decode threads wait here */
	pthread_t decoders[FETCH_DECODERS_MAX];
	unsigned ndecoders;
	/* Scratch buffers kept for reuse (a fresh one costs page faults on
	 * every block); protected by lock. */
	struct fetch_scratch {
		char *p;
		size_t cap;
	} scratch[FETCH_SCRATCH_MAX];
	unsigned nscratch;
	size_t scratch_bytes; /* what they hold */
	bool stop;	      /* protected by lock */
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
 * (demand) or a compressed block's, the retry and readahead jobs waiting
 * that continue it (the same file, version and validator, the next block,
 * each a whole block but the last), chained on ->next, the run at most
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

#endif
