/* The fetch engine, core and sync transport, with the real cache and an
 * in-process mock source (mock_source.c): retries and their limit, error
 * classes, single flight, queue order (demand before retries and
 * readahead, readahead promoted when a reader waits), shutdown failing fetches at once; and
 * fetch_judge() on the responses a server can send (412, truncation, a
 * wrong range, a compressed body...). No sleeps order anything: reads are
 * held in the mock until the test releases them. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "check.h"
#include "fetch.h"
#include "fetch_impl.h"
#include "http.h"
#include "mock_source.h"
#include "opts.h"
#include "readpath.h"
#include "source.h"
#include "stats.h"
#include "tree.h"

#define BS (64u << 10)

struct rig {
	struct options opts;
	struct mock_source *m;
	struct fetch *f;
	struct cache *c;
	struct node n;
};

static int rig_new(struct rig *r, unsigned connections, unsigned retries,
		   uint64_t size)
{
	memset(r, 0, sizeof(*r));
	r->opts.cache_mem = 16 * BS;
	r->opts.block_size = BS;
	r->opts.readahead_max = 4 * BS;
	r->opts.connections = connections;
	r->opts.retries = retries;
	r->opts.timeout_s = 5;
	r->opts.prefetch = PREFETCH_OFF;
	r->m = mock_new();
	if (!r->m)
		return -ENOMEM;
	pthread_mutex_init(&r->n.lock, NULL);
	r->n.key = "a.bin";
	r->n.size = size;
	r->n.etag = "\"v1\"";
	if (fetch_new(&r->m->s, &r->opts, &r->f) ||
	    cache_new(r->opts.cache_mem, BS, true, &fetch_fill_ops, r->f,
		      &r->c) ||
	    fetch_start(r->f, r->c))
		return -ENOMEM;
	return 0;
}

static void rig_free(struct rig *r)
{
	mock_release(r->m, UINT_MAX);
	fetch_free(r->f);
	cache_free(r->c);
	mock_free(r->m);
	pthread_mutex_destroy(&r->n.lock);
}

static uint64_t load(atomic_uint_fast64_t *a)
{
	return atomic_load(a);
}

static bool block_ok(const struct block *b, uint64_t index)
{
	for (size_t k = 0; k < b->len; k++)
		if ((unsigned char)b->data[k] != mock_byte(index * BS + k))
			return false;
	return true;
}

/* Transient failures are retried until the block arrives. */
static void retry_then_ok(void)
{
	static const int script[] = { -ECONNRESET, -ETIMEDOUT, -EAGAIN };
	struct rig r;
	struct block *b = NULL;
	uint64_t retries = load(&stats.retries);
	int err;

	CHECK(!rig_new(&r, 1, 5, 4 * BS), "rig");
	mock_script(r.m, script, 3);
	err = cache_get(r.c, &r.n, 0, 1, BS, &b);
	CHECK(err == 0, "retried get: %d", err);
	CHECK(mock_calls(r.m) == 4, "reads: %u", mock_calls(r.m));
	CHECK(load(&stats.retries) - retries == 3, "retries counted");
	CHECK(b && b->len == BS && block_ok(b, 1), "bytes of block 1");
	cache_unref(r.c, b);
	rig_free(&r);
}

/* Retries spent: the last error, classified, counted in its class. */
static void retries_spent(void)
{
	static const int script[] = { -ETIMEDOUT, -ETIMEDOUT, -ETIMEDOUT,
				      -ETIMEDOUT };
	struct rig r;
	struct block *b = NULL;
	uint64_t timeouts = load(&stats.errors_timeout);
	int err;

	CHECK(!rig_new(&r, 1, 2, 4 * BS), "rig");
	mock_script(r.m, script, 4);
	err = cache_get(r.c, &r.n, 0, 0, BS, &b);
	CHECK(err == -ETIMEDOUT, "stalled get: %d", err);
	CHECK(mock_calls(r.m) == 3, "1 + 2 retries, got %u", mock_calls(r.m));
	CHECK(load(&stats.errors_timeout) - timeouts == 1, "errors_timeout");
	CHECK(!r.n.changed, "a stall is not a change");
	rig_free(&r);
}

/* A changed object: no retry, the file is marked, later reads fail
 * before fetching. Same for a protocol error (no mark). */
static void final_errors(void)
{
	static const int stale[] = { -ESTALE };
	static const int proto[] = { -EPROTO };
	struct rig r;
	struct readpath rp;
	struct block *b = NULL;
	uint64_t st = load(&stats.errors_stale),
		 pr = load(&stats.errors_protocol);
	int err;

	CHECK(!rig_new(&r, 1, 5, 4 * BS), "rig");
	mock_script(r.m, proto, 1);
	err = cache_get(r.c, &r.n, 0, 2, BS, &b);
	CHECK(err == -EPROTO, "protocol error: %d", err);
	CHECK(mock_calls(r.m) == 1, "EPROTO is not retried");
	CHECK(load(&stats.errors_protocol) - pr == 1, "errors_protocol");
	CHECK(!r.n.changed, "a lying server does not mean a change");

	mock_script(r.m, stale, 1);
	err = cache_get(r.c, &r.n, 0, 0, BS, &b);
	CHECK(err == -ESTALE, "changed: %d", err);
	CHECK(mock_calls(r.m) == 2, "ESTALE is not retried");
	CHECK(load(&stats.errors_stale) - st == 1, "errors_stale");
	CHECK(r.n.changed, "the file is marked changed");
	err = readpath_begin(r.c, &r.opts, &r.n, 0, BS, &rp);
	CHECK(err == -ESTALE, "readpath on a changed file: %d", err);
	CHECK(mock_calls(r.m) == 2, "no fetch for a changed file");
	rig_free(&r);
}

struct getter {
	struct rig *r;
	uint64_t index;
	int err;
	bool ok;
	pthread_t t;
};

static void *get_thread(void *arg)
{
	struct getter *g = arg;
	struct block *b = NULL;

	g->err = cache_get(g->r->c, &g->r->n, 0, g->index, BS, &b);
	g->ok = !g->err && block_ok(b, g->index);
	cache_unref(g->r->c, b);
	return NULL;
}

/* Wait (5 s at most) until a job waits in the demand queue. */
static int wait_demand_queued(struct fetch *f)
{
	for (int i = 0; i < 5000; i++) {
		struct timespec ts = { 0, 1000000 };
		bool queued;

		pthread_mutex_lock(&f->lock);
		queued = f->demand.head != NULL;
		pthread_mutex_unlock(&f->lock);
		if (queued)
			return 0;
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

/* Eight readers of one block: one read of the source. */
static void single_flight(void)
{
	struct rig r;
	struct getter g[8];
	int i;

	CHECK(!rig_new(&r, 4, 0, 4 * BS), "rig");
	r.m->hold = true;
	for (i = 0; i < 8; i++) {
		g[i] = (struct getter){ .r = &r, .index = 3 };
		pthread_create(&g[i].t, NULL, get_thread, &g[i]);
	}
	CHECK(mock_wait_held(r.m, 1) == 0, "the read started");
	mock_release(r.m, UINT_MAX);
	for (i = 0; i < 8; i++) {
		pthread_join(g[i].t, NULL);
		CHECK(g[i].err == 0 && g[i].ok, "reader %d: %d", i, g[i].err);
	}
	CHECK(mock_calls(r.m) == 1, "one read for 8 readers: %u",
	      mock_calls(r.m));
	rig_free(&r);
}

/* One connection, busy: queued readahead 1, 2, 3; a reader then waits
 * for 3 and for 5 (not prefetched). Order: 0, 3 (promoted), 5 (demand),
 * then readahead 1, 2. */
static void queue_order(void)
{
	struct rig r;
	struct getter g3, g5;
	uint64_t want[] = { 0, 3, 5, 1, 2 };
	int i;

	CHECK(!rig_new(&r, 1, 0, 8 * BS), "rig");
	r.m->hold = true;
	CHECK(cache_prefetch(r.c, &r.n, 0, 0, BS) == 1, "prefetch 0");
	CHECK(mock_wait_held(r.m, 1) == 0, "block 0 is being read");
	for (i = 1; i <= 3; i++)
		CHECK(cache_prefetch(r.c, &r.n, 0, i, BS) == 1, "prefetch %d",
		      i);
	g3 = (struct getter){ .r = &r, .index = 3 };
	pthread_create(&g3.t, NULL, get_thread, &g3);
	CHECK(wait_demand_queued(r.f) == 0, "3 promoted");
	g5 = (struct getter){ .r = &r, .index = 5 };
	pthread_mutex_lock(&r.f->lock);
	/* 3 is the demand queue's only job until 5 joins it. */
	CHECK(r.f->demand.head && r.f->demand.head->b->index == 3 &&
		      !r.f->demand.head->next,
	      "3 alone at the front");
	pthread_mutex_unlock(&r.f->lock);
	pthread_create(&g5.t, NULL, get_thread, &g5);
	for (i = 0; i < 5000; i++) {
		struct timespec ts = { 0, 1000000 };
		bool two;

		pthread_mutex_lock(&r.f->lock);
		two = r.f->demand.head && r.f->demand.head->next;
		pthread_mutex_unlock(&r.f->lock);
		if (two)
			break;
		nanosleep(&ts, NULL);
	}
	mock_release(r.m, UINT_MAX);
	pthread_join(g3.t, NULL);
	pthread_join(g5.t, NULL);
	CHECK(g3.err == 0 && g3.ok && g5.err == 0 && g5.ok, "readers");
	for (i = 0; i < 200 && mock_calls(r.m) < 5; i++) {
		struct timespec ts = { 0, 5000000 };

		nanosleep(&ts, NULL);
	}
	CHECK(mock_calls(r.m) == 5, "reads: %u", mock_calls(r.m));
	for (i = 0; i < 5; i++)
		CHECK(r.m->offs[i] == want[i] * BS, "read %d was block %llu", i,
		      (unsigned long long)(r.m->offs[i] / BS));
	rig_free(&r);
}

/* A retry waits behind demand reads: one connection; block 0 fails once
 * and is retried while block 2 is read; then a reader wants block 1. Once
 * the retry is due, the order is 2, then 1 (demand), then 0 (retry). */
static void retry_after_demand(void)
{
	static const int script[] = { -ECONNRESET };
	struct rig r;
	struct getter g0, g1, g2;
	uint64_t want[] = { 0, 2, 1, 0 };
	int i;

	CHECK(!rig_new(&r, 1, 3, 4 * BS), "rig");
	mock_script(r.m, script, 1);
	r.m->hold = true;
	g0 = (struct getter){ .r = &r, .index = 0 };
	pthread_create(&g0.t, NULL, get_thread, &g0);
	CHECK(mock_wait_held(r.m, 1) == 0, "block 0 is being read");
	g2 = (struct getter){ .r = &r, .index = 2 };
	pthread_create(&g2.t, NULL, get_thread, &g2);
	CHECK(wait_demand_queued(r.f) == 0, "block 2 queued");
	mock_release(r.m, 1); /* 0 fails; 2 starts and is held */
	for (i = 0; i < 5000 && mock_calls(r.m) < 2; i++) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
	CHECK(mock_wait_held(r.m, 1) == 0, "block 2 is being read");
	for (i = 0; i < 10000; i++) { /* until the retry of 0 is due */
		struct timespec ts = { 0, 1000000 };
		bool due;

		pthread_mutex_lock(&r.f->lock);
		due = r.f->retry.head &&
		      r.f->retry.head->not_before_ms <= fetch_now_ms();
		pthread_mutex_unlock(&r.f->lock);
		if (due)
			break;
		nanosleep(&ts, NULL);
	}
	g1 = (struct getter){ .r = &r, .index = 1 };
	pthread_create(&g1.t, NULL, get_thread, &g1);
	CHECK(wait_demand_queued(r.f) == 0, "block 1 queued");
	mock_release(r.m, UINT_MAX);
	pthread_join(g0.t, NULL);
	pthread_join(g1.t, NULL);
	pthread_join(g2.t, NULL);
	CHECK(g0.err == 0 && g0.ok && g1.err == 0 && g1.ok && g2.err == 0 &&
		      g2.ok,
	      "readers: %d %d %d", g0.err, g1.err, g2.err);
	CHECK(mock_calls(r.m) == 4, "reads: %u", mock_calls(r.m));
	for (i = 0; i < 4; i++)
		CHECK(r.m->offs[i] == want[i] * BS, "read %d was block %llu", i,
		      (unsigned long long)(r.m->offs[i] / BS));
	rig_free(&r);
}

/* Shutdown fails what is queued at once, and what runs when it returns. */
static void shutdown_fails_at_once(void)
{
	struct rig r;
	struct getter g0, g1;
	struct timespec ts;
	int err;

	CHECK(!rig_new(&r, 1, 5, 4 * BS), "rig");
	r.m->hold = true;
	g0 = (struct getter){ .r = &r, .index = 0 };
	pthread_create(&g0.t, NULL, get_thread, &g0);
	CHECK(mock_wait_held(r.m, 1) == 0, "block 0 is being read");
	g1 = (struct getter){ .r = &r, .index = 1 };
	pthread_create(&g1.t, NULL, get_thread, &g1);
	CHECK(wait_demand_queued(r.f) == 0, "block 1 queued");
	fetch_shutdown(r.f);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	err = pthread_timedjoin_np(g1.t, NULL, &ts);
	CHECK(err == 0, "the queued reader is answered with the read held");
	CHECK(g1.err == -ESHUTDOWN, "queued: %d", g1.err);
	mock_release(r.m, UINT_MAX);
	pthread_join(g0.t, NULL);
	CHECK(g0.err == -ESHUTDOWN, "running: %d", g0.err);
	if (err)
		pthread_join(g1.t, NULL);
	CHECK(cache_prefetch(r.c, &r.n, 0, 2, BS) >= 0, "after shutdown");
	rig_free(&r);
}

/* Responses, judged: what each is, and whether it is retried. */
static void judge(void)
{
	struct fetch_response ok206 = { .status = 206,
					.got = BS,
					.range_ok = true,
					.range_total = 4 * BS };
	struct fetch_response r;

	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &ok206) == 0, "good 206");
	r = ok206;
	r.got = BS - 1;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -ECONNRESET &&
		      fetch_retryable(-ECONNRESET),
	      "truncated: retried");
	r = ok206;
	r.status = 412;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -ESTALE &&
		      !fetch_retryable(-ESTALE),
	      "412: changed");
	r.status = 404;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -ENOENT, "404: gone");
	r.status = 403;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EACCES &&
		      !fetch_retryable(-EACCES),
	      "403: credentials");
	r.status = 503;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EAGAIN &&
		      fetch_retryable(-EAGAIN),
	      "503: retried");
	r.status = 500;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EIO &&
		      fetch_retryable(-EIO),
	      "500: retried");
	r.status = 400;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EPROTO, "400: protocol");
	r = ok206;
	r.range_ok = false;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EPROTO, "wrong range");
	r = ok206;
	r.range_total = 5 * BS;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -ESTALE, "size changed");
	r = ok206;
	r.etag_seen = r.etag_mismatch = true;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -ESTALE, "ETag changed");
	r = ok206;
	r.overflow = true;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EPROTO &&
		      !fetch_retryable(-EPROTO),
	      "too many bytes");
	r = ok206;
	r.encoded = true;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EPROTO, "gzip body");
	r = ok206;
	r.status = 200;
	CHECK(fetch_judge(BS, BS, 4 * BS, 0, &r) == -EPROTO,
	      "200 for a part of the file");
	r.got = 4 * BS;
	CHECK(fetch_judge(0, 4 * BS, 4 * BS, 0, &r) == 0, "200, whole file");
	CHECK(fetch_judge(BS, BS, 4 * BS, -ETIMEDOUT, &ok206) == -ETIMEDOUT &&
		      fetch_retryable(-ETIMEDOUT),
	      "stall: retried");
	CHECK(http_status_errno(416) == -ESTALE, "416: it shrank");
}

static void check_redact(const char *in, const char *want)
{
	char *out = source_redact(in);

	CHECK(out && !strcmp(out, want), "redact %s: %s", in,
	      out ? out : "(null)");
	free(out);
}

static void redact(void)
{
	check_redact("http://user:pa%40ss@host:81/d/", "http://host:81/d/");
	check_redact("https://u@h/x@y/f.bin", "https://h/x@y/f.bin");
	check_redact("http://h/d/", "http://h/d/");
	check_redact("https://h/f?X-Amz-Signature=abc&X-Amz-Date=1",
		     "https://h/f");
	check_redact("https://h/f?versionId=3", "https://h/f?versionId=3");
	check_redact("s3://bucket/prefix", "s3://bucket/prefix");
}

/* A block claimed for a version a relist has since replaced is not
 * fetched with the new validator: its reader gets -ESTALE, and the new
 * version is neither marked changed nor read. */
static void old_generation_not_fetched(void)
{
	struct rig r;
	struct block *b = NULL;
	int err;

	CHECK(!rig_new(&r, 1, 0, 4 * BS), "rig");
	r.n.generation = 1; /* relisted: generation 0 is gone */
	err = cache_get(r.c, &r.n, 0, 0, BS, &b);
	CHECK(err == -ESTALE, "old generation: %d", err);
	CHECK(mock_calls(r.m) == 0, "reads: %u", mock_calls(r.m));
	CHECK(!r.n.changed, "the new version is not marked changed");
	err = cache_get(r.c, &r.n, 1, 0, BS, &b);
	CHECK(err == 0 && b && block_ok(b, 0), "new generation: %d", err);
	cache_unref(r.c, b);
	rig_free(&r);
}

/* What a transport does with a run it took: the bytes of its first @ok
 * jobs in and each ended at once, the rest ended with @err. @return the
 * number of jobs in the run. */
static unsigned run_finish(struct rig *r, struct fetch_job *j, unsigned ok,
			   int err)
{
	unsigned n = 0;

	while (j) {
		struct fetch_job *next = j->next;

		j->next = NULL;
		for (size_t k = 0; k < j->len; k++)
			j->dst[k] = (char)mock_byte(j->off + k);
		fetch_attempt_done(r->f, j, n < ok ? 0 : err);
		n++;
		j = next;
	}
	return n;
}

/* Take a run (with f->lock, as a transport does): its first block, the
 * number of jobs and its bytes. */
static struct fetch_job *take_run(struct rig *r, uint64_t *ret_first,
				  unsigned *ret_n, size_t *ret_len)
{
	uint64_t due = UINT64_MAX;
	struct fetch_job *j, *k;
	unsigned n = 0;

	pthread_mutex_lock(&r->f->lock);
	j = fetch_take_run(r->f, 0, fetch_now_ms(), &due, ret_len);
	pthread_mutex_unlock(&r->f->lock);
	for (k = j; k; k = k->next) {
		CHECK(k == j || k->b->index == j->b->index + n,
		      "run: block %llu after %llu",
		      (unsigned long long)k->b->index,
		      (unsigned long long)j->b->index);
		n++;
	}
	*ret_first = j ? j->b->index : UINT64_MAX;
	*ret_n = n;
	return j;
}

/* Consecutive readahead queued in one batch is taken as runs of at most
 * request_size; a reader's block goes alone and first; a run failing
 * midway keeps its ended blocks and retries the rest on their own. One
 * connection, busy with block 0 (held), so the test takes the jobs. */
static void runs(void)
{
	struct rig r;
	struct getter g9;
	struct fetch_job *j;
	uint64_t first;
	unsigned n, i;
	size_t len;
	bool empty;

	CHECK(!rig_new(&r, 1, 3, 16 * BS), "rig");
	r.opts.request_size = 4 * BS;
	r.m->hold = true;
	CHECK(cache_prefetch(r.c, &r.n, 0, 0, BS) == 1, "prefetch 0");
	CHECK(mock_wait_held(r.m, 1) == 0, "block 0 is being read");
	fetch_batch_begin();
	for (i = 1; i <= 6; i++)
		CHECK(cache_prefetch(r.c, &r.n, 0, i, BS) == 1, "prefetch %u",
		      i);
	pthread_mutex_lock(&r.f->lock);
	empty = !r.f->ahead.head;
	pthread_mutex_unlock(&r.f->lock);
	CHECK(empty, "a batch is queued at its end, not block by block");
	fetch_batch_end();
	g9 = (struct getter){ .r = &r, .index = 9 };
	pthread_create(&g9.t, NULL, get_thread, &g9);
	CHECK(wait_demand_queued(r.f) == 0, "9 queued");

	j = take_run(&r, &first, &n, &len);
	CHECK(first == 9 && n == 1 && len == BS,
	      "the reader's 9 alone: %llu %u", (unsigned long long)first, n);
	run_finish(&r, j, 1, 0);
	pthread_join(g9.t, NULL);
	CHECK(g9.err == 0 && g9.ok, "reader of 9");

	j = take_run(&r, &first, &n, &len);
	CHECK(first == 1 && n == 4 && len == 4 * BS, "run 1-4: %llu x %u",
	      (unsigned long long)first, n);
	/* Blocks 1, 2 arrive, then the connection resets. */
	run_finish(&r, j, 2, -ECONNRESET);
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 5 && n == 2 && len == 2 * BS, "run 5-6: %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, 2, 0);
	CHECK(mock_calls(r.m) == 1, "the source read only block 0: %u",
	      mock_calls(r.m));

	mock_release(r.m, UINT_MAX);
	for (i = 0; i <= 6; i++) {
		struct block *b = NULL;
		int err = cache_get(r.c, &r.n, 0, i, BS, &b);

		CHECK(err == 0 && b && block_ok(b, i), "block %u: %d", i, err);
		cache_unref(r.c, b);
	}
	/* 0, and the retries of 3 and 4 one by one (the sync transport). */
	CHECK(mock_calls(r.m) == 3, "reads: %u", mock_calls(r.m));
	for (i = 1; i < 3; i++)
		CHECK(r.m->offs[i] == (i + 2) * BS, "retry %u was block %llu",
		      i, (unsigned long long)(r.m->offs[i] / BS));
	rig_free(&r);
}

/* Runs join only what continues: another version, a gap, or no
 * request_size (0) keep blocks apart. */
static void runs_split(void)
{
	struct rig r;
	struct fetch_job *j;
	uint64_t first;
	unsigned n;
	size_t len;

	CHECK(!rig_new(&r, 1, 0, 16 * BS), "rig");
	r.opts.request_size = 8 * BS;
	r.m->hold = true;
	CHECK(cache_prefetch(r.c, &r.n, 0, 0, BS) == 1, "prefetch 0");
	CHECK(mock_wait_held(r.m, 1) == 0, "block 0 is being read");
	fetch_batch_begin();
	CHECK(cache_prefetch(r.c, &r.n, 0, 1, BS) == 1, "prefetch 1");
	CHECK(cache_prefetch(r.c, &r.n, 0, 2, BS) == 1, "prefetch 2");
	CHECK(cache_prefetch(r.c, &r.n, 0, 4, BS) == 1, "prefetch 4");
	fetch_batch_end();
	/* A relist: generation 1, another ETag. */
	pthread_mutex_lock(&r.n.lock);
	r.n.generation = 1;
	r.n.etag = "\"v2\"";
	pthread_mutex_unlock(&r.n.lock);
	CHECK(cache_prefetch(r.c, &r.n, 1, 3, BS) == 1, "prefetch 3 (v2)");
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 1 && n == 2, "1-2, not 3 of v2: %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, n, 0);
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 4 && n == 1, "4 alone (a gap): %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, n, 0);
	r.opts.request_size = 0;
	CHECK(cache_prefetch(r.c, &r.n, 1, 4, BS) == 1, "prefetch 4 (v2)");
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 3 && n == 1, "no request_size: alone: %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, n, 0);
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 4 && n == 1, "then 4 (v2): %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, n, 0);
	rig_free(&r);
}

/* With range_align a run ends on a granule boundary: from 2, at most
 * request_size (8 blocks) rounded down to one: 2-7; from 8, 8-13 (what is
 * queued of the last granule). */
static void runs_align(void)
{
	struct rig r;
	struct fetch_job *j;
	uint64_t first;
	unsigned n, i;
	size_t len;

	CHECK(!rig_new(&r, 1, 0, 16 * BS), "rig");
	r.opts.request_size = 8 * BS;
	r.opts.range_align = 4 * BS;
	r.m->hold = true;
	CHECK(cache_prefetch(r.c, &r.n, 0, 0, BS) == 1, "prefetch 0");
	CHECK(mock_wait_held(r.m, 1) == 0, "block 0 is being read");
	fetch_batch_begin();
	for (i = 2; i <= 13; i++)
		CHECK(cache_prefetch(r.c, &r.n, 0, i, BS) == 1, "prefetch %u",
		      i);
	fetch_batch_end();
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 2 && n == 6 && len == 6 * BS, "2-7: %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, n, 0);
	j = take_run(&r, &first, &n, &len);
	CHECK(first == 8 && n == 6, "8-13: %llu x %u",
	      (unsigned long long)first, n);
	run_finish(&r, j, n, 0);
	/* Without alignment the first run would have been 2-9. */
	mock_release(r.m, UINT_MAX);
	rig_free(&r);
}

int main(void)
{
	retry_then_ok();
	retries_spent();
	final_errors();
	single_flight();
	queue_order();
	retry_after_demand();
	shutdown_fails_at_once();
	judge();
	redact();
	old_generation_not_fetched();
	runs();
	runs_split();
	runs_align();
	printf("fetch: ok\n");
	return 0;
}
