/* HTTP helpers shared by the sources and the fetch engine: common curl
 * options, whole-body GETs for listings, and the one place HTTP statuses
 * and curl codes become errnos. Thread-safe (no shared state). */
#ifndef WFS_FS_HTTP_H
#define WFS_FS_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sigv4.h"

struct options;

/* A response held in memory (listings, errors, credentials). */
struct http_response {
	long status;
	char *body; /* NUL-terminated */
	size_t len;
	char *etag;		/* ETag header or NULL */
	char *last_modified;	/* Last-Modified header or NULL */
	char *content_type;	/* Content-Type header or NULL */
	int64_t content_length; /* -1 when absent */
	char curl_error[CURL_ERROR_SIZE];
	size_t max_body; /* private to http.c */
	int overflow;	 /* private to http.c */
};

void http_response_done(struct http_response *r);

/*
 * http_setup_common() - options every request gets: timeouts, TLS
 * verification (off only with -o insecure), keep-alive, no signals,
 * User-Agent.
 * @return 0, or the negative errno of the first option curl refused.
 */
int http_setup_common(CURL *h, const struct options *opts);

/*
 * http_perform() - run @h (already set up by the caller: URL, method,
 * headers) and collect the response into @ret, body bounded by @max_body
 * bytes (-EFBIG beyond).
 * @return 0 when a response arrived (any status: check ret->status), or
 * the negative errno of http_curl_errno() with ret->curl_error set.
 */
int http_perform(CURL *h, size_t max_body, struct http_response *ret);

/*
 * http_perform_setup() and http_perform_finish() - http_perform() in two
 * halves, for transfers run by a multi handle: setup before adding @h,
 * finish with the transfer's result once it is done.
 */
void http_perform_setup(CURL *h, size_t max_body, struct http_response *ret);
int http_perform_finish(CURL *h, CURLcode code, struct http_response *ret);

/*
 * http_get() - GET @url with @hdrs (may be NULL) into @ret; as
 * http_perform() on a fresh handle set up with http_setup_common(),
 * retried (opts->retries times, with backoff) on 5xx, 429, 408, resets
 * and stalls. A refused connection is not retried.
 */
int http_get(const char *url, struct curl_slist *hdrs,
	     const struct options *opts, size_t max_body,
	     struct http_response *ret);

/* http_head() - as http_get(), with HEAD. */
int http_head(const char *url, const struct options *opts,
	      struct http_response *ret);

/*
 * http_cancel_all() - the daemon is stopping: every transfer set up with
 * http_setup_common() ends within a second with -ESHUTDOWN, and the retry
 * loops give up. Async-signal-safe; irreversible. http_cancelled() says
 * whether it was called.
 */
void http_cancel_all(void);
bool http_cancelled(void);

#define HTTP_BACKOFF_BASE_MS 100u
#define HTTP_BACKOFF_CAP_MS 5000u

/* http_backoff_ms() - how long to wait before retry @attempt (0-based):
 * exponential from 100 ms, capped at 5 s, with jitter (half to whole). */
unsigned http_backoff_ms(unsigned attempt);

/*
 * http_retry_after_ms() - the wait a 429 or 503 response on @h (after
 * its transfer) asks for with Retry-After (seconds or an HTTP date), at
 * most @cap_ms; 0 when none.
 */
unsigned http_retry_after_ms(CURL *h, unsigned cap_ms);

/* http_curl_errno() - the errno for a failed transfer. */
int http_curl_errno(CURLcode code);

/* http_status_errno() - the one HTTP status -> errno map, for listings
 * and block reads alike (0 for 2xx): 401/403 -EACCES, 404/410 -ENOENT,
 * 412/416 -ESTALE, 408/504 -ETIMEDOUT, 429/503 -EAGAIN, other 5xx -EIO,
 * anything else -EPROTO. */
int http_status_errno(long status);

/* http_status_retryable() - 5xx, 429 and 408 are worth another try. */
int http_status_retryable(long status);

/*
 * http_url_escape_path() - percent-encode @key for a URL path, keeping
 * '/' and RFC 3986 unreserved characters: the one URI encoder,
 * sigv4_uri_encode(). @return malloc'd or NULL.
 */
static inline char *http_url_escape_path(const char *key)
{
	return sigv4_uri_encode(key, strlen(key), true);
}

#endif
