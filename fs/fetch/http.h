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
	size_t cap;	 /* private to http.c: body's allocation */
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
/* http_body_hold() - the body callback http_perform_setup() installs
 * (CURLOPT_WRITEFUNCTION, @arg the struct http_response). */
size_t http_body_hold(char *p, size_t size, size_t n, void *arg);
int http_perform_finish(CURL *h, CURLcode code, struct http_response *ret);

/*
 * http_get() - GET @url with @hdrs (may be NULL) into @ret; as
 * http_perform() on a fresh handle set up with http_setup_common(),
 * through the request runner (http_run.h): retried (opts->retries times,
 * with backoff) by http_retryable() with HTTP_RETRY_REACHABLE (5xx, 429,
 * 408, resets, stalls; not a refused connection). Defined in http_run.c.
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
 * http_retryable() - the one retry policy's verdict on a failure of class
 * @err (a negative errno from http_curl_errno(), http_status_errno() or a
 * response check): whether another attempt, after http_backoff_ms(), may
 * help. Changed, gone, lying, unauthorised and local failures are final;
 * resets, stalls, 5xx, 429 and 408 are not. With HTTP_RETRY_REACHABLE in
 * @flags a refused or unresolved connection is final too (listings and
 * HEADs: an unreachable source is said at once).
 */
#define HTTP_RETRY_REACHABLE 1u
/* ... or with HTTP_RETRY_NEVER every failure is final (a caller with a
 * fallback of its own: the AWS credential providers' chain). */
#define HTTP_RETRY_NEVER 2u
bool http_retryable(int err, unsigned flags);

/*
 * http_retry_after_ms() - the wait a 429 or 503 response on @h (after
 * its transfer) asks for with Retry-After (seconds or an HTTP date), at
 * most @cap_ms; 0 when none.
 */
unsigned http_retry_after_ms(CURL *h, unsigned cap_ms);
/* The longest Retry-After the request runner honours. */
#define HTTP_RETRY_AFTER_CAP_MS 60000u

/* http_curl_errno() - the errno for a failed transfer. */
int http_curl_errno(CURLcode code);

/*
 * http_status_line() - the status of header line @line of @len bytes when
 * it is a status line ("HTTP/1.1 206 ...": a new response starts, after a
 * 100 Continue or a redirect), 0 for a status line without a number, -1
 * for any other line.
 */
long http_status_line(const char *line, size_t len);

/*
 * http_header_is() - the one header-line parser: when @line (@len bytes,
 * as curl hands it, CRLF included) is header @name (case-insensitive),
 * its value, trimmed, not NUL-terminated, @ret_len bytes long, pointing
 * into @line; else NULL.
 */
const char *http_header_is(const char *line, size_t len, const char *name,
			   size_t *ret_len);

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
