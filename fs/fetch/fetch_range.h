/* Ranged reads of a source object, the pieces every one shares: the
 * request set-up (the source's prepare_get(), Range, bytes as stored),
 * the response's headers (fetch_response_header()) and its verdict
 * (fetch_judge()). The fetch engine's curl transport uses them for block
 * runs; fetch_ranges() for reads outside the block cache (a decoder
 * opening an object from its tail or header), through the request runner
 * (http_run.h) or the source's read_block().
 *
 * Thread-safe: nothing shared. */
#ifndef WFS_FS_FETCH_RANGE_H
#define WFS_FS_FETCH_RANGE_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_run.h"

struct node;
struct options;
struct source;

/* What a transport saw of one HTTP response, for fetch_judge(). */
struct fetch_response {
	long status;	      /* 0: no response */
	size_t got;	      /* body bytes stored */
	bool overflow;	      /* more body than asked for */
	bool range_ok;	      /* Content-Range is the range asked for */
	uint64_t range_total; /* its complete length */
	bool etag_seen;	      /* an ETag header arrived */
	bool etag_mismatch;   /* ... and it is not the pinned one */
	bool encoded;	      /* Content-Encoding other than identity */
};

/*
 * fetch_judge() - the outcome of one ranged GET of [@off, @off + @len) of
 * a file of @size bytes: @xfer_err is the transport's negative errno (0
 * when a response arrived), @r what arrived.
 * @return 0, or the classified negative errno (source.h);
 * http_retryable() says whether another attempt may help.
 */
int fetch_judge(uint64_t off, size_t len, uint64_t size, int xfer_err,
		const struct fetch_response *r);

/*
 * fetch_range_setup() - set @h (reset, with http_setup_common()'s options)
 * up for a GET of bytes [@off, @off + @len) of @obj from @src, pinned to
 * @etag when not NULL: the source's prepare_get(), the Range, and
 * Accept-Encoding: identity (a compressed body is not a range of the
 * object); request headers are appended to *@hdrs, which the caller sets
 * on @h and frees.
 * @return 0 or a negative errno.
 */
int fetch_range_setup(CURL *h, struct source *src, const struct node *obj,
		      const char *etag, uint64_t off, size_t len,
		      struct curl_slist **hdrs);

/*
 * fetch_response_header() - take header line @line (@len bytes, as curl
 * hands it) of the response to a GET of [@off, @off + @rlen) pinned to
 * @etag (or NULL) into @r: the status (a new response after 100 Continue
 * starts afresh), whether Content-Range is the range asked for and the
 * object's length it names, the ETag and whether it is not @etag, a
 * Content-Encoding other than identity.
 */
void fetch_response_header(struct fetch_response *r, const char *line,
			   size_t len, uint64_t off, size_t rlen,
			   const char *etag);

/*
 * fetch_response_body() - what to do with @len more body bytes of @r, the
 * response to a GET of @want bytes: 1 store them; 0 drop them (an
 * error's body: the status says); -1 stop the transfer (a compressed
 * body, or more than asked for: r->overflow set).
 */
int fetch_response_body(struct fetch_response *r, size_t len, size_t want);

/* One read of bytes [off, off + len) of an object outside the block
 * cache. */
struct fetch_range {
	const struct node *obj; /* the object: sources read only ->key */
	const char *etag;	/* the validator pinned, or NULL */
	uint64_t size;		/* the object's size when listed */
	uint64_t off;		/* the range */
	size_t len;
	char *buf; /* len bytes: where they go */
	/*
	 * The range's bytes are in buf: @return 0 (done), 1 to read again
	 * (off, len and buf set anew: e.g. a larger tail), or a negative
	 * errno (final).
	 */
	int (*got)(struct fetch_range *fr);
	void *arg; /* the caller's */
	int err;   /* the outcome: 0 or a classified negative errno */
	/* Private to fetch_range.c. */
	struct http_req rq;
	struct source *src;
	struct fetch_response r;
};

/*
 * fetch_ranges() - read the @n ranges of @rs from @src, at most
 * opts->connections at once, each attempt judged (fetch_judge()) and
 * retried by the one policy; counted in stats (requests, bytes_fetched).
 * Each outcome is in its ->err.
 */
void fetch_ranges(struct source *src, const struct options *opts,
		  struct fetch_range **rs, size_t n);

#endif
