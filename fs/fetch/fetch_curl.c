/* The fetch engine's transport for HTTP-like sources
 * (source_ops.prepare_get: http(s)://, s3://): T threads (the online CPUs,
 * at most 4 and at most `connections`), each owning a curl multi handle
 * and its share of `connections`, run ranged GETs over keep-alive
 * connections, each GET a run of consecutive blocks (fetch_take_run(): up
 * to `request_size`, so that first-byte latency and per-request costs are
 * paid once per run, not per block; each block ends as soon as its bytes
 * are in). Receiving and copying the bytes is most of the daemon's
 * CPU; one thread would cap a node at one core of it. All threads take
 * jobs from the core's queues (fetch_take(): demand first, the reserved
 * connections counted over all threads). On stop, running transfers are
 * dropped at once and their blocks fail with -ESHUTDOWN. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cache.h"
#include "copy_stream.h"
#include "fetch_impl.h"
#include "fetch_range.h"
#include "fetch_tune.h"
#include "http.h"
#include "log.h"
#include "opts.h"
#include "proxy.h"
#include "source.h"
#include "stats.h"

/* One connection's transfer: one GET of a run of jobs (fetch_take_run()),
 * [off, off + len) of their object. */
struct xfer {
	CURL *h; /* reused across transfers; NULL until first needed */
	struct curl_slist *hdrs;
	struct fetch *f;
	struct fetch_job *j; /* the run's jobs not ended yet; NULL: idle */
	uint64_t off;	     /* the run's bytes */
	size_t len;
	size_t j_at;	  /* where j's bytes start in the run */
	bool refused;	  /* on_body stopped a wrong response */
	int stream_err;	  /* on_body stopped: the decoder refused */
	bool ended;	  /* out of the multi handle, its jobs not done yet */
	uint64_t last_ms; /* when bytes last came (or it started) */
	struct fetch_response r;
	int err; /* the ended attempt's outcome (fetch_judge()) */
	unsigned retry_after_ms; /* its response's Retry-After, or 0 */
	struct curl_thread *t;
};

#define CURL_THREADS_MAX 4

/* One transfer thread: its multi handle and its share of connections.
 * Stalled transfers (no byte for STALL_MS) do not count against that
 * share for readers' blocks: up to nconns more transfers may start for
 * them, so a reader never waits behind a hung server's transfers. */
struct curl_thread {
	struct fetch *f;
	CURLM *multi;
	struct xfer *x;	   /* 2 * nconns, used by this thread only */
	struct xfer **fin; /* 2 * nconns: transfers that just ended */
	unsigned nconns;
	unsigned active;	 /* protected by f->lock */
	atomic_uint_fast64_t rx; /* body bytes received (connections=auto) */
	pthread_t thread;
	bool started;
};

struct curl_state {
	struct curl_thread t[CURL_THREADS_MAX];
	unsigned nthreads;
	unsigned active; /* over all threads; protected by f->lock */
	/* connections=auto (fetch_tune.h); protected by f->lock */
	bool tuning;
	struct fetch_tune tune;
	uint64_t tick_ms, rx_seen;
};

/* How often the tuner hears of bytes received and waiting work. */
#define TUNE_TICK_MS 20
/* A transfer with no byte for this long (or timeout/2, if less) is
 * stalled: it no longer holds a connection from readers' blocks. */
#define STALL_MS 1000u

/* The most connections: connections=auto's maximum, or the fixed count. */
static unsigned curl_conns_max(const struct options *o)
{
	return o->connections_auto && o->connections_max > o->connections
		       ? o->connections_max
		       : o->connections;
}

/* Whether the response so far passes fetch_judge() for the whole run,
 * its length aside: then its first jobs may end as their bytes arrive. */
static bool judged_good(const struct xfer *x)
{
	struct fetch_response r = x->r;

	r.got = x->len;
	return !fetch_judge(x->off, x->len, x->j->size, 0, &r);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n, left = len;
	int take = fetch_response_body(&x->r, len, x->len);

	/* An error's body is not the block's: dropped (the status says). */
	if (take <= 0)
		return take ? 0 : len;
	x->last_ms = fetch_now_ms();
	atomic_fetch_add_explicit(&x->t->rx, len, memory_order_relaxed);
	while (left) {
		struct fetch_job *j = x->j;
		size_t at = x->r.got - x->j_at;
		size_t k = j->len - at < left ? j->len - at : left;

		if (j->streamed) {
			int err = fetch_stream_put(j, p, k);

			if (err) {
				x->stream_err = err;
				return 0;
			}
		} else {
			copy_stream(j->dst + at, p, k);
		}
		p += k;
		left -= k;
		x->r.got += k;
		/* A job's bytes are in: it ends now, not with the run, unless
		 * it is the run's last (the transfer's end judges that one:
		 * overflow, errors) or the response is wrong. */
		if (at + k == j->len && j->next && judged_good(x)) {
			x->j = j->next;
			x->j_at += j->len;
			j->next = NULL;
			fetch_attempt_done(x->f, j, 0);
		} else if (at + k == j->len && j->next) {
			/* A wrong response: no use reading on, the verdict
			 * at the end says why. */
			x->refused = true;
			return 0;
		}
	}
	return len;
}

/* Check status, Content-Range, ETag and Content-Encoding as headers
 * arrive. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	bool pinned = x->f->src->pinned_by_source;
	size_t len = size * n, vlen;
	const char *v;
	char etag[256];

	x->last_ms = fetch_now_ms();
	/* A source that checks identity itself (hf://: the CDN's ETag is not
	 * the file's id) is not compared here. */
	fetch_response_header(&x->r, p, len, x->off, x->len,
			      pinned ? NULL : x->j->etag);
	/* No validator from the listing: the first block's sets it. */
	if (!pinned && !x->j->etag && x->r.status / 100 == 2 &&
	    (v = http_header_is(p, len, "ETag", &vlen)) &&
	    vlen < sizeof(etag)) {
		memcpy(etag, v, vlen);
		etag[vlen] = '\0';
		if (fetch_adopt_etag(x->j, etag))
			x->r.etag_mismatch = true;
	}
	return len;
}

static int setopt_all(struct fetch *f, struct xfer *x)
{
	CURL *h = x->h;
	CURLcode c = CURLE_OK;
	unsigned most = curl_conns_max(f->opts);
	long buf = (long)(most <= 128 ? 512u << 10 : (64u << 20) / most);

	/* Large receive buffers, within 64 MiB over all connections. */
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->hdrs);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	/* A hint: libcurl refuses a new size while a handle still holds its
	 * buffer (it did on handles reused for HTTP/2 streams); a transfer
	 * does not fail for it. */
	if (!c)
		(void)curl_easy_setopt(h, CURLOPT_BUFFERSIZE, buf);
	return c ? http_curl_errno(c) : 0;
}

/* The transfer's own error: none when it ended because on_body refused
 * bytes that were not the block's (fetch_judge() says why). */
static int xfer_errno(const struct xfer *x, CURLcode code)
{
	if (code == CURLE_WRITE_ERROR && x->stream_err)
		return x->stream_err; /* the decoder refused the bytes */
	if (code == CURLE_WRITE_ERROR &&
	    (x->r.overflow || x->r.encoded || x->refused))
		return 0;
	return proxy_judge(x->h, code, http_curl_errno(code));
}

/* Set @x up for one attempt of the run @j, @len bytes. */
static int prepare(struct fetch *f, struct xfer *x, struct fetch_job *j,
		   size_t len)
{
	int err;

	if (!x->h && !(x->h = curl_easy_init()))
		return -ENOMEM;
	curl_easy_reset(x->h);
	err = http_setup_common(x->h, f->opts);
	if (err)
		return err;
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	memset(&x->r, 0, sizeof(x->r));
	x->f = f;
	x->j = j;
	x->off = j->off;
	x->len = len;
	x->j_at = 0;
	x->refused = false;
	x->stream_err = 0;
	x->ended = false;
	x->last_ms = fetch_now_ms();
	for (struct fetch_job *k = j; k; k = k->next)
		if (k->streamed && (err = fetch_stream_renew(k)))
			return err;
	err = fetch_range_setup(x->h, f->src, j->obj, j->etag, j->off, len,
				&x->hdrs);
	return err ? err : setopt_all(f, x);
}

/* The attempt at the jobs of a run not ended yet, @j onwards, ended with
 * @err: each goes through the retry policy on its own. */
static void run_done(struct fetch *f, struct fetch_job *j, int err,
		     unsigned retry_after_ms)
{
	while (j) {
		struct fetch_job *n = j->next;

		j->next = NULL;
		j->retry_after_ms = err ? retry_after_ms : 0;
		fetch_attempt_done(f, j, err);
		j = n;
	}
}

/* Under f->lock: @n of @t's transfers started (n > 0) or ended. */
static void count_active(struct curl_state *cs, struct curl_thread *t, int n)
{
	t->active += n;
	cs->active += n;
}

/* Under f->lock: @t's share of the connections in use now. */
static unsigned curl_share(struct fetch *f, struct curl_state *cs,
			   struct curl_thread *t)
{
	unsigned i = (unsigned)(t - cs->t), n = cs->nthreads;

	return f->limit / n + (i < f->limit % n);
}

/* Under f->lock, after a thread took what it could: tell the tuner the
 * bytes received and whether work still waits for a connection (every
 * TUNE_TICK_MS), and use the limit it answers. */
static void tune_tick(struct fetch *f, struct curl_state *cs)
{
	uint64_t now, rx = 0;
	unsigned i, limit;
	double rate;

	if (!cs->tuning)
		return;
	now = fetch_now_ms();
	if (now < cs->tick_ms)
		return;
	cs->tick_ms = now + TUNE_TICK_MS;
	for (i = 0; i < cs->nthreads; i++)
		rx += atomic_load_explicit(&cs->t[i].rx, memory_order_relaxed);
	limit = fetch_tune_update(&cs->tune, now, rx - cs->rx_seen,
				  f->demand.head || f->ahead.head);
	cs->rx_seen = rx;
	if (limit != f->limit) {
		log_debug("connections=auto: %u -> %u (%.0f MiB/s at %u)",
			  f->limit, limit, cs->tune.rate * 1000 / (1 << 20),
			  f->limit);
		fetch_set_limit(f, limit);
	}
	if (fetch_tune_settled(&cs->tune, &rate))
		log_debug("connections=auto: settled at %u (%.0f MiB/s)", limit,
			  rate / (1 << 20));
}

static uint64_t stall_ms(const struct fetch *f)
{
	uint64_t half = f->opts->timeout_s * 500ull;

	return half && half < STALL_MS ? half : STALL_MS;
}

/* @t's transfers running with no byte for stall_ms(); *next_ms is
 * lowered to when the next one would become stalled. */
static unsigned count_stalled(struct curl_thread *t, uint64_t now,
			      uint64_t *next_ms)
{
	uint64_t wait = stall_ms(t->f);
	unsigned i, n = 0;

	for (i = 0; i < 2 * t->nconns; i++) {
		struct xfer *x = &t->x[i];

		if (!x->j || x->ended)
			continue;
		if (now - x->last_ms >= wait)
			n++;
		else if (x->last_ms + wait < *next_ms)
			*next_ms = x->last_ms + wait;
	}
	return n;
}

/* End @t's transfers with no byte for `timeout` seconds, at that moment
 * (-ETIMEDOUT; libcurl's low-speed check comes up to a second later),
 * into t->fin from @ended on. @return the new count in t->fin; *next_ms
 * is lowered to the next such deadline. */
static unsigned cut_stalled(struct fetch *f, struct curl_thread *t,
			    unsigned ended, uint64_t now, uint64_t *next_ms)
{
	uint64_t limit = f->opts->timeout_s * 1000ull;
	unsigned i;

	for (i = 0; limit && i < 2 * t->nconns; i++) {
		struct xfer *x = &t->x[i];
		CURLMcode mc;

		if (!x->j || x->ended)
			continue;
		if (now - x->last_ms < limit) {
			if (x->last_ms + limit < *next_ms)
				*next_ms = x->last_ms + limit;
			continue;
		}
		mc = curl_multi_remove_handle(t->multi, x->h);
		if (mc)
			log_warn("curl_multi_remove_handle: %s",
				 curl_multi_strerror(mc));
		STAT_ADD(bytes_fetched, x->r.got);
		x->err = -ETIMEDOUT;
		x->retry_after_ms = 0;
		x->ended = true;
		t->fin[ended++] = x;
	}
	return ended;
}

static void *curl_worker(void *arg)
{
	struct curl_thread *t = arg;
	struct fetch *f = t->f;
	struct curl_state *cs = f->tpriv;
	unsigned i, conns = t->nconns, ended = 0;

	for (;;) {
		uint64_t next_due = UINT64_MAX;
		CURLMsg *msg;
		CURLMcode mc;
		int running, left, timeout = 1000;

		pthread_mutex_lock(&f->lock);
		/* Free the ended transfers' connections before their jobs'
		 * outcomes (retries) are queued: counted over all threads. */
		count_active(cs, t, -(int)ended);
		pthread_mutex_unlock(&f->lock);
		for (i = 0; i < ended; i++) {
			struct xfer *x = t->fin[i];

			run_done(f, x->j, x->err, x->retry_after_ms);
			x->j = NULL;
		}
		ended = 0;

		pthread_mutex_lock(&f->lock);
		while (!f->stop && t->active < 2 * t->nconns) {
			size_t len = 0;
			uint64_t now = fetch_now_ms();
			/* Every connection busy: one more for a reader's
			 * block while as many are stalled. */
			bool spare = t->active >= t->nconns;
			/* Over its share of the limit (the tuner lowered it while
			 * runs were in flight): a reader's block still starts
			 * here, readahead and retries wait (as when all of the
			 * limit is in use). */
			bool over = spare || t->active >= curl_share(f, cs, t);
			struct fetch_job *j;
			struct xfer *x = NULL;
			int err;

			if (spare &&
			    t->active - count_stalled(t, now, &next_due) >=
				    t->nconns)
				break;
			j = fetch_take_run(f, over ? f->limit : cs->active, now,
					   &next_due, &len);
			if (!j)
				break;
			count_active(cs, t, 1);
			pthread_mutex_unlock(&f->lock);
			for (i = 0; i < 2 * conns && !x; i++)
				if (!t->x[i].j)
					x = &t->x[i];
			err = prepare(f, x, j, len);
			if (!err &&
			    (mc = curl_multi_add_handle(t->multi, x->h))) {
				log_warn("curl_multi_add_handle: %s",
					 curl_multi_strerror(mc));
				err = mc == CURLM_OUT_OF_MEMORY ? -ENOMEM
								: -EIO;
			}
			if (err) {
				x->j = NULL;
				pthread_mutex_lock(&f->lock);
				count_active(cs, t, -1);
				pthread_mutex_unlock(&f->lock);
				/* Through the retry policy: a transient
				 * error is retried, after a backoff, so
				 * this loop cannot spin. */
				run_done(f, j, err, 0);
			} else {
				STAT_ADD(requests, 1);
			}
			pthread_mutex_lock(&f->lock);
		}
		if (f->stop) {
			pthread_mutex_unlock(&f->lock);
			break;
		}
		tune_tick(f, cs);
		pthread_mutex_unlock(&f->lock);

		mc = curl_multi_perform(t->multi, &running);
		if (mc && mc != CURLM_CALL_MULTI_PERFORM)
			log_warn("curl_multi_perform: %s",
				 curl_multi_strerror(mc));
		while ((msg = curl_multi_info_read(t->multi, &left))) {
			struct xfer *x;
			struct fetch_job *j;
			curl_off_t us = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			if (curl_easy_getinfo(msg->easy_handle,
					      CURLINFO_PRIVATE,
					      (char **)&x) != CURLE_OK ||
			    !x || !x->j)
				continue;
			j = x->j;
			x->err = fetch_judge(x->off, x->len, j->size,
					     xfer_errno(x, msg->data.result),
					     &x->r);
			if (x->err && f->src->ops->get_failed)
				x->err = f->src->ops->get_failed(
					f->src, x->h, j->obj, x->err);
			x->retry_after_ms =
				x->err ? http_retry_after_ms(
						 x->h, HTTP_RETRY_AFTER_CAP_MS)
				       : 0;
			STAT_ADD(bytes_fetched, x->r.got);
			if (curl_easy_getinfo(x->h, CURLINFO_TOTAL_TIME_T,
					      &us) == CURLE_OK)
				stats_fetch_latency((uint64_t)us);
			mc = curl_multi_remove_handle(t->multi, x->h);
			if (mc)
				log_warn("curl_multi_remove_handle: %s",
					 curl_multi_strerror(mc));
			x->ended = true;
			t->fin[ended++] = x;
		}
		ended = cut_stalled(f, t, ended, fetch_now_ms(), &next_due);
		/* Connections just came free: start queued jobs at once. */
		if (ended)
			continue;
		if (next_due != UINT64_MAX) {
			uint64_t now = fetch_now_ms();

			timeout = next_due > now ? (int)(next_due - now) : 0;
			if (timeout > 1000)
				timeout = 1000;
		}
		mc = curl_multi_poll(t->multi, NULL, 0, timeout, NULL);
		if (mc) {
			struct timespec ts = { 0, 10 * 1000000 };

			/* Cannot wait on the sockets: do not spin. */
			log_warn("curl_multi_poll: %s",
				 curl_multi_strerror(mc));
			nanosleep(&ts, NULL);
		}
	}

	/* Stopped: fail what still runs, at once. */
	for (i = 0; i < 2 * conns; i++) {
		struct fetch_job *j = t->x[i].j;

		if (!j)
			continue;
		if (!t->x[i].ended)
			curl_multi_remove_handle(t->multi, t->x[i].h);
		t->x[i].j = NULL;
		run_done(f, j, -ESHUTDOWN, 0);
	}
	return NULL;
}

/* How many transfer threads: the online CPUs, at most CURL_THREADS_MAX
 * and at most @conns, at least one. */
static unsigned curl_nthreads(unsigned conns)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = cpus > 0 ? (unsigned)cpus : 1;

	if (n > CURL_THREADS_MAX)
		n = CURL_THREADS_MAX;
	if (n > conns)
		n = conns;
	return n ? n : 1;
}

static int curl_start(struct fetch *f)
{
	struct curl_state *cs = calloc(1, sizeof(*cs));
	unsigned i, k, conns = curl_conns_max(f->opts);

	if (!cs)
		return -ENOMEM;
	f->tpriv = cs;
	cs->nthreads = curl_nthreads(conns);
	/* Transfers for the most connections, used up to f->limit. */
	cs->tuning = conns > f->opts->connections;
	if (cs->tuning) {
		fetch_tune_init(&cs->tune, f->opts->connections, conns,
				cache_block_size(f->cache));
		pthread_mutex_lock(&f->lock);
		fetch_set_limit(f, cs->tune.limit);
		pthread_mutex_unlock(&f->lock);
		STAT_SET(connections_max, conns);
	}
	/* Everything allocated before any thread starts: a thread cannot
	 * fail to start work, and wake() may look at every multi handle. */
	for (i = 0; i < cs->nthreads; i++) {
		struct curl_thread *t = &cs->t[i];
		unsigned n = conns / cs->nthreads + (i < conns % cs->nthreads);

		if (!n)
			n = 1;
		t->f = f;
		t->nconns = n;
		t->multi = curl_multi_init();
		t->x = calloc(2 * n, sizeof(*t->x));
		t->fin = calloc(2 * n, sizeof(*t->fin));
		if (!t->multi || !t->x || !t->fin)
			return -ENOMEM;
		for (k = 0; k < 2 * n; k++)
			t->x[k].t = t;
		/* Up to n more for readers while as many stall; only n
		 * idle connections are kept. */
		if (curl_multi_setopt(t->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
				      (long)(2 * n)) ||
		    curl_multi_setopt(t->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
				      (long)(2 * n)) ||
		    curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, (long)n))
			return -EINVAL;
	}
	for (i = 0; i < cs->nthreads; i++) {
		struct curl_thread *t = &cs->t[i];
		int r = pthread_create(&t->thread, NULL, curl_worker, t);

		if (r)
			return -r;
		t->started = true;
	}
	return 0;
}

/* Every thread looks again: any of them may have a free connection, and
 * on stop each must fail its running transfers. A few wakeups per block
 * (8 MiB) cost nothing next to receiving it. */
static void curl_wake(struct fetch *f)
{
	struct curl_state *cs = f->tpriv;
	unsigned i;

	for (i = 0; cs && i < cs->nthreads; i++) {
		CURLMcode mc;

		if (!cs->t[i].multi)
			continue;
		mc = curl_multi_wakeup(cs->t[i].multi);
		if (mc)
			log_warn("curl_multi_wakeup: %s",
				 curl_multi_strerror(mc));
	}
}

static void curl_stop(struct fetch *f)
{
	struct curl_state *cs = f->tpriv;
	unsigned i, k;

	if (!cs)
		return;
	curl_wake(f);
	for (i = 0; i < cs->nthreads; i++)
		if (cs->t[i].started)
			pthread_join(cs->t[i].thread, NULL);
	for (i = 0; i < cs->nthreads; i++) {
		struct curl_thread *t = &cs->t[i];

		for (k = 0; t->x && k < 2 * t->nconns; k++) {
			if (t->x[k].h)
				curl_easy_cleanup(t->x[k].h);
			curl_slist_free_all(t->x[k].hdrs);
		}
		if (t->multi)
			curl_multi_cleanup(t->multi);
		free(t->x);
		free(t->fin);
	}
	free(cs);
	f->tpriv = NULL;
}

const struct fetch_transport fetch_curl_transport = {
	.start = curl_start,
	.wake = curl_wake,
	.stop = curl_stop,
	.streams = true,
};
