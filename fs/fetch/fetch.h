/* The fetch engine: fills cache blocks from the source.
 *
 * A source-independent core (fetch.c) keeps the queues and the one retry
 * policy; a transport moves the bytes, chosen by what the source can do
 * (source.h): read_block() runs on worker threads (fetch_sync.c),
 * prepare_get() on a few threads, each owning a curl multi handle and its
 * share of `connections` ranged GETs (fetch_curl.c), each GET fetching a
 * run of consecutive readahead blocks (up to `request_size`).
 *
 * Order: blocks a reader waits for first, then retries, then readahead;
 * retries and readahead never take the last eighth of the connections
 * (at least one of two or more), which stay for readers. Each attempt is pinned to the validator the file
 * had when listed and its response checked (fetch_judge()); transient
 * failures (5xx, resets, stalls, short bodies) are retried with capped,
 * jittered exponential backoff (http_backoff_ms(), the one policy). A changed or vanished
 * object marks its node changed. Failures end with a classified errno
 * (source.h) and are counted by class in stats.
 *
 * Calls: the cache calls down into the engine through fetch_fill_ops
 * (start, promote); the engine calls up through cache_fetch_done() only.
 *
 * Thread-safe: fill ops and fetch_shutdown() may be called from any
 * thread. */
#ifndef WFS_FS_FETCH_H
#define WFS_FS_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fetch_range.h"

struct cache;
struct options;
struct source;

struct fetch;

/* For cache_new(): with the struct fetch as its context. */
extern const struct cache_fill_ops fetch_fill_ops;

/*
 * fetch_new() - an engine reading from @src with @opts (both kept).
 * @return 0 and *ret, -EINVAL when @src offers no way to read blocks, or
 * -ENOMEM.
 */
int fetch_new(struct source *src, const struct options *opts,
	      struct fetch **ret);

/* fetch_start() - start filling @cache's blocks: the engine's threads
 * (after daemonizing). @return 0 or a negative errno. */
int fetch_start(struct fetch *f, struct cache *cache);

/*
 * fetch_shutdown() - stop fetching at once: every queued and running
 * fetch, and every one started later, fails with -ESHUTDOWN, so readers
 * waiting in the cache get their answer now. Idempotent; returns without
 * waiting for the engine's threads.
 */
void fetch_shutdown(struct fetch *f);

/* fetch_free() - fetch_shutdown(), join the threads, free. NULL is fine. */
void fetch_free(struct fetch *f);

/*
 * fetch_batch_begin(), fetch_batch_end() - the fetches this thread starts
 * in between (cache_prefetch() of a readahead step) are queued together
 * at the end, with one wakeup, so that a transport finds the step whole
 * and fetches consecutive blocks with one request. Nest; a reader waiting
 * for a block of the batch meanwhile is served when it is queued.
 */
void fetch_batch_begin(void);
void fetch_batch_end(void);

/* ---- the core's contract with transports and tests ---- */

/* struct fetch_response and fetch_judge(): fetch_range.h. */

/* fetch_retryable() - whether a failure of class @err is transient. */
bool fetch_retryable(int err);

#endif
