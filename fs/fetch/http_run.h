/* The request runner: every HTTP request the daemon makes outside the
 * fetch engine's block transfers (listings, HEADs, seek tables and other
 * object tails, Hub API calls) runs here, with the one retry policy
 * (http_retryable(), http_backoff_ms()) and the one header parser
 * (http_header_is()). The fetch engine's transport (fetch_curl.c) runs
 * block GETs on its own long-lived multi handles, with the same policy,
 * parser and request set-up (fetch_range.h).
 *
 * A request is a struct http_req whose ops set a curl handle up for each
 * attempt and judge each attempt's outcome; the runner owns the handle,
 * the retries and the backoff. http_run_one() runs one request on the
 * calling thread; http_run() runs many, up to @width at once, over one
 * multi handle. After http_cancel_all() nothing is retried and transfers
 * end within a second (-ESHUTDOWN).
 *
 * Thread-safe: runs share nothing; a request belongs to one run at a
 * time. */
#ifndef WFS_FS_HTTP_RUN_H
#define WFS_FS_HTTP_RUN_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct options;
struct http_req;

struct http_req_ops {
	/*
	 * Set @h up for attempt rq->attempt (0 first): URL, method, body and
	 * header callbacks; request headers are appended to *@hdrs (the
	 * runner sends and frees them). @h is reset, with
	 * http_setup_common()'s options. Called again for every retry, so a
	 * signed request is signed afresh.
	 * @return 0 or a negative errno (final, not retried).
	 */
	int (*prepare)(struct http_req *rq, CURL *h, struct curl_slist **hdrs);
	/*
	 * The attempt ended with curl's @code. @return 0 when the request is
	 * done, a classified negative errno for this attempt (retried when
	 * http_retryable(err, rq->retry_flags) and attempts remain, else
	 * final), or 1 to run the request again at once as a new request
	 * (attempts counted afresh; e.g. a second, larger read of a tail).
	 * Setting rq->final makes an error final whatever its class (the
	 * response arrived whole, but its content is unusable).
	 */
	int (*done)(struct http_req *rq, CURL *h, CURLcode code);
};

struct http_req {
	const struct http_req_ops *ops;
	unsigned retry_flags; /* http_retryable()'s flags */
	bool final;	      /* done() says: its error is not retried */
	/* Set by the runner. */
	unsigned attempt; /* of this request, from 0 */
	int err;	  /* the outcome: 0, or the final negative errno */
	/* Private to the runner. */
	CURL *h;
	struct curl_slist *hdrs;
	uint64_t not_before_ms;
	struct http_req *next;
};

/*
 * http_run_one() - run @rq on this thread until done, its retries spent
 * or the daemon stopping (backoff slept here).
 * @return rq->err.
 */
int http_run_one(struct http_req *rq, const struct options *opts);

/*
 * http_run() - run the @n requests of @reqs, at most @width (0: 8) at
 * once, each with its own retries; returns when all have ended. Each
 * outcome is in its rq->err.
 * @return 0, or -ENOMEM when no multi handle could be made (then every
 * rq->err is -ENOMEM).
 */
int http_run(struct http_req **reqs, size_t n, unsigned width,
	     const struct options *opts);

/* A request whose response is held whole in memory (struct
 * http_response, http.h): listings, HEADs, API calls. */
struct http_whole {
	struct http_req rq; /* set by http_run_whole() */
	const char *url;
	struct curl_slist *headers; /* sent with every attempt, or NULL */
	bool head;		    /* HEAD: no body */
	size_t max_body;	    /* more is -EFBIG (final) */
	unsigned retry_flags;	    /* http_retryable()'s */
	/*
	 * Optional: more set-up for each attempt (a method, a body,
	 * timeouts; headers such as a signature's appended to *@hdrs).
	 * @return 0 or a negative errno (final: http_run_whole() returns
	 * it).
	 */
	int (*setup)(struct http_whole *w, CURL *h, struct curl_slist **hdrs);
	/*
	 * Optional: the body of a 200 response is handed to this as it
	 * arrives instead of being held (ret->body stays empty, ret->len
	 * counts it, max_body still bounds it); other statuses' bodies are
	 * held as usual. setup() runs before each attempt, so a retry can
	 * start its consumer afresh. @return 0, or a negative errno: the
	 * request ends with it at once (final).
	 */
	int (*body)(struct http_whole *w, const char *p, size_t len);
	void *arg; /* setup's and body's */
	/* Private to http_run.c. */
	struct http_response *ret;
	bool set_up;   /* ret holds an attempt's response */
	int xfer_err;  /* the last attempt's transport error */
	int setup_err; /* setup's, or the headers' */
	int body_err;  /* body's */
};

/*
 * http_run_whole() - run @w with http_run_one(): retried on transport
 * failures and on 5xx, 429 and 408 (by @w->retry_flags), the last
 * attempt's response in @ret (release with http_response_done()).
 * @return 0 when a response arrived, whatever its status (ret->status);
 * the transport's negative errno (ret->curl_error says more); or
 * setup's. http_get() and http_head() are this with
 * HTTP_RETRY_REACHABLE.
 */
struct http_response;
int http_run_whole(struct http_whole *w, const struct options *opts,
		   struct http_response *ret);

#endif
