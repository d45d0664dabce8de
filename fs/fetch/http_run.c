/* The request runner: see http_run.h. */
#include "http_run.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "opts.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Set @rq's handle up for its next attempt. @return 0 or a final errno. */
static int attempt_prepare(struct http_req *rq, const struct options *opts)
{
	CURLcode c = CURLE_OK;
	int err;

	if (!rq->h && !(rq->h = curl_easy_init()))
		return -ENOMEM;
	curl_easy_reset(rq->h);
	curl_slist_free_all(rq->hdrs);
	rq->hdrs = NULL;
	err = http_setup_common(rq->h, opts);
	if (!err)
		err = rq->ops->prepare(rq, rq->h, &rq->hdrs);
	if (!err && rq->hdrs)
		c = curl_easy_setopt(rq->h, CURLOPT_HTTPHEADER, rq->hdrs);
	if (!err && !c)
		c = curl_easy_setopt(rq->h, CURLOPT_PRIVATE, rq);
	return err ? err : http_curl_errno(c);
}

/* An attempt of @rq ended with @code. @return true when @rq has ended
 * (rq->err set), false when it runs again (not before
 * rq->not_before_ms). */
static bool attempt_done(struct http_req *rq, CURLcode code,
			 const struct options *opts)
{
	unsigned retries = opts ? opts->retries : 0, wait;
	int err;

	rq->final = false;
	err = rq->ops->done(rq, rq->h, code);

	if (err == 1) { /* a new request: at once, attempts afresh */
		rq->attempt = 0;
		rq->not_before_ms = 0;
		return false;
	}
	if (!err || rq->final || rq->attempt >= retries || http_cancelled() ||
	    !http_retryable(err, rq->retry_flags)) {
		rq->err = err;
		return true;
	}
	/* A 429 or 503 that says when to come back is not asked sooner. */
	wait = http_retry_after_ms(rq->h, HTTP_RETRY_AFTER_CAP_MS);
	if (wait < http_backoff_ms(rq->attempt))
		wait = http_backoff_ms(rq->attempt);
	rq->attempt++;
	rq->not_before_ms = now_ms() + wait;
	return false;
}

static void req_release(struct http_req *rq)
{
	if (rq->h)
		curl_easy_cleanup(rq->h);
	curl_slist_free_all(rq->hdrs);
	rq->h = NULL;
	rq->hdrs = NULL;
}

int http_run_one(struct http_req *rq, const struct options *opts)
{
	rq->attempt = 0;
	rq->err = 0;
	for (;;) {
		uint64_t now;
		int err = attempt_prepare(rq, opts);

		if (err) {
			rq->err = err;
			break;
		}
		if (attempt_done(rq, curl_easy_perform(rq->h), opts))
			break;
		now = now_ms();
		if (rq->not_before_ms > now)
			usleep((useconds_t)(rq->not_before_ms - now) * 1000u);
	}
	req_release(rq);
	return rq->err;
}

/* Start @rq on @m. @return whether it runs (else it ended: rq->err). */
static bool start(CURLM *m, struct http_req *rq, const struct options *opts)
{
	int err = attempt_prepare(rq, opts);

	if (!err && curl_multi_add_handle(m, rq->h) != CURLM_OK)
		err = -ENOMEM;
	if (err)
		rq->err = err;
	return !err;
}

int http_run(struct http_req **reqs, size_t n, unsigned width,
	     const struct options *opts)
{
	CURLM *m = curl_multi_init();
	struct http_req *waiting = NULL; /* retries in their backoff */
	size_t next = 0, i;
	unsigned active = 0;

	if (!width)
		width = 8;
	for (i = 0; i < n; i++) {
		reqs[i]->attempt = 0;
		reqs[i]->err = m ? 0 : -ENOMEM;
		reqs[i]->not_before_ms = 0;
	}
	if (!m)
		return -ENOMEM;
	while (next < n || active || waiting) {
		uint64_t now = now_ms(), due = UINT64_MAX;
		struct http_req **p = &waiting;
		CURLMsg *msg;
		int running, left, timeout;

		/* Retries whose backoff passed first, then new requests. */
		while (*p && active < width) {
			struct http_req *rq = *p;

			if (rq->not_before_ms > now) {
				if (rq->not_before_ms < due)
					due = rq->not_before_ms;
				p = &rq->next;
				continue;
			}
			*p = rq->next;
			active += start(m, rq, opts);
		}
		for (; *p; p = &(*p)->next)
			if ((*p)->not_before_ms < due)
				due = (*p)->not_before_ms;
		while (next < n && active < width)
			active += start(m, reqs[next++], opts);
		if (active)
			curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left))) {
			struct http_req *rq = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
					  (char **)&rq);
			curl_multi_remove_handle(m, rq->h);
			active--;
			if (attempt_done(rq, msg->data.result, opts))
				continue;
			rq->next = waiting;
			waiting = rq;
			due = 0; /* look again at once */
		}
		if (!active && !waiting)
			continue;
		now = now_ms();
		timeout = 1000;
		if (due <= now)
			timeout = 0;
		else if (due - now < 1000)
			timeout = (int)(due - now);
		if (timeout)
			curl_multi_poll(m, NULL, 0, timeout, NULL);
	}
	curl_multi_cleanup(m);
	for (i = 0; i < n; i++)
		req_release(reqs[i]);
	return 0;
}

/* ---- whole responses in memory ---- */

/* A body for w->body (a 200 response's), else held as http.c holds it. */
static size_t whole_body(char *p, size_t size, size_t n, void *arg)
{
	struct http_whole *w = arg;
	struct http_response *r = w->ret;
	size_t len = size * n;
	long status = 0;

	curl_easy_getinfo(w->rq.h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		return http_body_hold(p, size, n, r);
	if (len > r->max_body - r->len) {
		r->overflow = 1;
		return 0;
	}
	r->len += len;
	if ((w->body_err = w->body(w, p, len)))
		return 0;
	return len;
}

static int whole_prepare(struct http_req *rq, CURL *h, struct curl_slist **hdrs)
{
	struct http_whole *w = (struct http_whole *)rq;
	CURLcode c = curl_easy_setopt(h, CURLOPT_URL, w->url);
	int err = 0;

	for (struct curl_slist *l = w->headers; !c && l; l = l->next) {
		struct curl_slist *n = curl_slist_append(*hdrs, l->data);

		if (!n) {
			err = -ENOMEM;
			goto fail;
		}
		*hdrs = n;
	}
	if (!c && w->head)
		c = curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (c) {
		err = http_curl_errno(c);
		goto fail;
	}
	if (w->setup && (err = w->setup(w, h, hdrs)))
		goto fail;
	if (w->set_up)
		http_response_done(w->ret);
	http_perform_setup(h, w->max_body, w->ret);
	if (w->body) {
		w->body_err = 0;
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, whole_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
	}
	w->set_up = true;
	return 0;
fail:
	w->setup_err = err;
	return err;
}

/* Retried on the transport's failure or the status's; the caller gets
 * the response whatever its status. */
static int whole_done(struct http_req *rq, CURL *h, CURLcode code)
{
	struct http_whole *w = (struct http_whole *)rq;

	w->xfer_err = http_perform_finish(h, code, w->ret);
	if (w->body_err) {
		rq->final = true; /* the consumer's, not the transport's */
		return w->xfer_err = w->body_err;
	}
	return w->xfer_err ? w->xfer_err : http_status_errno(w->ret->status);
}

static const struct http_req_ops whole_ops = {
	.prepare = whole_prepare,
	.done = whole_done,
};

int http_run_whole(struct http_whole *w, const struct options *opts,
		   struct http_response *ret)
{
	int err;

	w->rq.ops = &whole_ops;
	w->rq.retry_flags = w->retry_flags;
	w->ret = ret;
	w->set_up = false;
	w->xfer_err = w->setup_err = w->body_err = 0;
	err = http_run_one(&w->rq, opts);
	if (w->setup_err)
		return w->setup_err;
	/* A response arrived: its status is the caller's to judge. */
	if (w->set_up && !w->xfer_err)
		return 0;
	return err;
}

int http_get(const char *url, struct curl_slist *hdrs,
	     const struct options *opts, size_t max_body,
	     struct http_response *ret)
{
	struct http_whole w = { .url = url,
				.headers = hdrs,
				.max_body = max_body,
				.retry_flags = HTTP_RETRY_REACHABLE };

	return http_run_whole(&w, opts, ret);
}

int http_head(const char *url, const struct options *opts,
	      struct http_response *ret)
{
	struct http_whole w = { .url = url,
				.head = true,
				.retry_flags = HTTP_RETRY_REACHABLE };

	return http_run_whole(&w, opts, ret);
}
