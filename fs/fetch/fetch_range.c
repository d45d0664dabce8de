/* Ranged reads of a source object: see fetch_range.h. */
#include "fetch_range.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http.h"
#include "proxy.h"
#include "opts.h"
#include "source.h"
#include "stats.h"

int fetch_range_setup(CURL *h, struct source *src, const struct node *obj,
		      const char *etag, uint64_t off, size_t len,
		      struct curl_slist **hdrs)
{
	char range[64];
	struct curl_slist *l;
	int err;

	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, off,
		 off + len - 1);
	err = src->ops->prepare_get(src, h, obj, etag, range, hdrs);
	if (err)
		return err;
	/* Bytes as stored: a compressed body is not a range of the file. */
	l = curl_slist_append(*hdrs, "Accept-Encoding: identity");
	if (!l)
		return -ENOMEM;
	*hdrs = l;
	err = proxy_data_headers(hdrs);
	if (err)
		return err;
	return http_curl_errno(curl_easy_setopt(h, CURLOPT_RANGE, range + 6));
}

void fetch_response_header(struct fetch_response *r, const char *line,
			   size_t len, uint64_t off, size_t rlen,
			   const char *etag)
{
	unsigned long long start, end, total;
	long status = http_status_line(line, len);
	const char *v;
	char buf[128];
	size_t vlen;

	if (status >= 0) {
		/* A new response (after 100 Continue): start afresh. */
		r->status = status;
		r->range_ok = r->etag_seen = r->etag_mismatch = false;
		r->encoded = false;
	} else if ((v = http_header_is(line, len, "Content-Range", &vlen))) {
		if (vlen < sizeof(buf)) {
			memcpy(buf, v, vlen);
			buf[vlen] = '\0';
			if (sscanf(buf, "bytes %llu-%llu/%llu", &start, &end,
				   &total) == 3 &&
			    start == off && end + 1 == off + rlen) {
				r->range_ok = true;
				r->range_total = total;
			}
		}
	} else if ((v = http_header_is(line, len, "ETag", &vlen))) {
		r->etag_seen = true;
		if (etag && (strlen(etag) != vlen || memcmp(v, etag, vlen)))
			r->etag_mismatch = true;
	} else if ((v = http_header_is(line, len, "Content-Encoding", &vlen))) {
		if (vlen && (vlen != 8 || strncasecmp(v, "identity", 8)))
			r->encoded = true;
	}
}

int fetch_judge(uint64_t off, size_t len, uint64_t size, int xfer_err,
		const struct fetch_response *r)
{
	if (r->overflow)
		return -EPROTO; /* more bytes than asked: the server lies */
	if (xfer_err)
		return xfer_err;
	if (r->status < 200 || r->status > 299)
		return http_status_errno(r->status);
	if (r->encoded)
		return -EPROTO; /* compressed bytes are not the file's */
	if (r->status == 200) {
		/* A server that ignores Range: fine only for a whole file. */
		if (off != 0 || len != size)
			return -EPROTO;
		if (r->etag_mismatch)
			return -ESTALE;
	} else if (r->status == 206) {
		if (!r->range_ok)
			return -EPROTO;
		if (r->range_total != size || r->etag_mismatch)
			return -ESTALE;
	} else {
		return -EPROTO; /* 204, 203...: not a range */
	}
	if (r->got != len)
		return -ECONNRESET; /* truncated: retried */
	return 0;
}

/* ---- reads outside the block cache ---- */

int fetch_response_body(struct fetch_response *r, size_t len, size_t want)
{
	if (r->status < 200 || r->status > 299)
		return 0;
	if (r->encoded)
		return -1; /* not the object's bytes: stop at once */
	if (len > want - r->got) {
		r->overflow = true; /* the server sent more than asked */
		return -1;
	}
	return 1;
}

static size_t on_body(char *p, size_t size, size_t nm, void *arg)
{
	struct fetch_range *fr = arg;
	size_t len = size * nm;
	int take = fetch_response_body(&fr->r, len, fr->len);

	if (take <= 0)
		return take ? 0 : len;
	memcpy(fr->buf + fr->r.got, p, len);
	fr->r.got += len;
	return len;
}

static size_t on_header(char *p, size_t size, size_t nm, void *arg)
{
	struct fetch_range *fr = arg;

	fetch_response_header(&fr->r, p, size * nm, fr->off, fr->len,
			      fr->src->pinned_by_source ? NULL : fr->etag);
	return size * nm;
}

static struct fetch_range *range_of(struct http_req *rq)
{
	return (struct fetch_range *)((char *)rq -
				      offsetof(struct fetch_range, rq));
}

static int range_prepare(struct http_req *rq, CURL *h, struct curl_slist **hdrs)
{
	struct fetch_range *fr = range_of(rq);
	CURLcode c = CURLE_OK;
	int err;

	memset(&fr->r, 0, sizeof(fr->r));
	err = fetch_range_setup(h, fr->src, fr->obj, fr->etag, fr->off, fr->len,
				hdrs);
	if (err)
		return err;
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_WRITEDATA, fr);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	if (!c)
		c = curl_easy_setopt(h, CURLOPT_HEADERDATA, fr);
	return http_curl_errno(c);
}

/* The bytes are in and judged good: 0, 1 (again) or the caller's error. */
static int range_got(struct fetch_range *fr)
{
	STAT_ADD(bytes_fetched, fr->len);
	return fr->got ? fr->got(fr) : 0;
}

static int range_done(struct http_req *rq, CURL *h, CURLcode code)
{
	struct fetch_range *fr = range_of(rq);
	int xerr = code == CURLE_OK || (code == CURLE_WRITE_ERROR &&
					(fr->r.overflow || fr->r.encoded))
			   ? 0
			   : proxy_judge(h, code, http_curl_errno(code));
	int err;

	STAT_ADD(requests, 1);
	err = fetch_judge(fr->off, fr->len, fr->size, xerr, &fr->r);
	if (err)
		return err;
	err = range_got(fr);
	/* The caller's verdict on good bytes is final, not retried. */
	rq->final = err < 0;
	return err;
}

static const struct http_req_ops range_ops = {
	.prepare = range_prepare,
	.done = range_done,
};

/* Through read_block(), one at a time, with the one policy's retries. */
static void ranges_sync(struct source *src, const struct options *opts,
			struct fetch_range **rs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct fetch_range *fr = rs[i];
		unsigned attempt = 0;

		for (;;) {
			int err;

			STAT_ADD(requests, 1);
			err = src->ops->read_block(src, fr->obj, fr->etag,
						   fr->off, fr->len, fr->buf);
			if (!err) {
				err = range_got(fr);
				if (err == 1) {
					attempt = 0;
					continue;
				}
				fr->err = err;
				break;
			}
			if (!http_retryable(err, 0) ||
			    attempt >= opts->retries || http_cancelled()) {
				fr->err = err;
				break;
			}
			usleep(http_backoff_ms(attempt++) * 1000u);
		}
	}
}

void fetch_ranges(struct source *src, const struct options *opts,
		  struct fetch_range **rs, size_t n)
{
	struct http_req **reqs;
	size_t i;

	for (i = 0; i < n; i++) {
		rs[i]->err = 0;
		rs[i]->src = src;
		rs[i]->rq = (struct http_req){ .ops = &range_ops };
	}
	if (src->ops->read_block) {
		ranges_sync(src, opts, rs, n);
		return;
	}
	reqs = calloc(n ? n : 1, sizeof(*reqs));
	if (!reqs) {
		for (i = 0; i < n; i++)
			rs[i]->err = -ENOMEM;
		return;
	}
	for (i = 0; i < n; i++)
		reqs[i] = &rs[i]->rq;
	http_run(reqs, n, opts->connections, opts);
	for (i = 0; i < n; i++)
		rs[i]->err = reqs[i]->err;
	free(reqs);
}
