/* The fetch engine: fills cache blocks from the source.
 *
 * HTTP and S3 sources: one thread owns a curl multi handle and runs up to
 * `connections` ranged GETs at once over keep-alive connections; file://
 * sources: a few threads pread. Blocks a reader waits for go before
 * readahead. Each GET is pinned to the validator the file had when listed
 * (If-Match) and its response checked (status, Content-Range, length); 5xx,
 * resets, stalls and short bodies are retried with capped, jittered
 * exponential backoff. A changed object marks its node changed and fails
 * with -ESTALE; retries spent fail with the last error.
 *
 * Thread-safe: fetch_block() may be called from any thread. */
#ifndef WFS_FS_FETCH_H
#define WFS_FS_FETCH_H

struct block;
struct cache;
struct options;
struct source;

struct fetch;

int fetch_new(struct source *src, const struct options *opts,
	      struct fetch **ret);

/* fetch_attach() - the cache whose blocks this engine fills. */
void fetch_attach(struct fetch *f, struct cache *c);

/* fetch_start() - start the engine's threads (after daemonizing). */
int fetch_start(struct fetch *f);

/* fetch_free() - stop the threads, failing queued blocks with -ESHUTDOWN. */
void fetch_free(struct fetch *f);

/* fetch_block() - a cache_fetch_fn: queue the fetch of @b. */
void fetch_block(void *fetch, struct block *b);

/* fetch_promote() - a cache_fetch_fn: if @b's fetch still waits among
 * readahead, move it to the front (a reader waits for it). */
void fetch_promote(void *fetch, struct block *b);

#endif
