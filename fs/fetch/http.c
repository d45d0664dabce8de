#include "http.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "opts.h"
#include "proxy.h"

void http_response_done(struct http_response *r)
{
	if (!r)
		return;
	free(r->body);
	free(r->etag);
	free(r->last_modified);
	free(r->content_type);
	r->body = r->etag = r->last_modified = r->content_type = NULL;
}

static atomic_bool cancelled;

void http_cancel_all(void)
{
	atomic_store(&cancelled, true);
}

bool http_cancelled(void)
{
	return atomic_load(&cancelled);
}

/* Called by curl at least once a second during a transfer. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	return atomic_load_explicit(&cancelled, memory_order_relaxed);
}

int http_setup_common(CURL *h, const struct options *opts)
{
	long stall = opts && opts->timeout_s ? (long)opts->timeout_s : 30;
	CURLcode c = CURLE_OK;

#define SET(opt, v)                                                            \
	do {                                                                   \
		if (c == CURLE_OK)                                             \
			c = curl_easy_setopt(h, opt, v);                       \
	} while (0)
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT, 10L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_USERAGENT, "weightfs/" WFS_VERSION_STRING);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	/* HTTP/1.1, never HTTP/2: bandwidth comes from many connections (CDNs
	 * and S3 cap each one), and HTTP/2 would carry every transfer of a
	 * thread over one (16 transfers went over 3 connections). */
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	/* A transfer that moves under 1 KiB/s for timeout_s has stalled
	 * (a server trickling a few bytes a second too). */
	SET(CURLOPT_LOW_SPEED_LIMIT, 1024L);
	SET(CURLOPT_LOW_SPEED_TIME, stall);
	/* Shutdown ends every transfer within a second. */
	SET(CURLOPT_XFERINFOFUNCTION, on_progress);
	SET(CURLOPT_NOPROGRESS, 0L);
	if (opts && opts->ca_file[0])
		SET(CURLOPT_CAINFO, opts->ca_file);
	if (opts && opts->insecure) {
		SET(CURLOPT_SSL_VERIFYPEER, 0L);
		SET(CURLOPT_SSL_VERIFYHOST, 0L);
	}
#undef SET
	if (c != CURLE_OK)
		return http_curl_errno(c);
	return proxy_setup(h);
}

size_t http_body_hold(char *p, size_t size, size_t n, void *arg)
{
	struct http_response *r = arg;
	size_t len = size * n;
	char *body;

	if (len > r->max_body - r->len) {
		r->overflow = 1;
		return 0;
	}
	/* One allocation when the length was announced, else doubling: a
	 * big listing is not reallocated (and moved) per chunk. */
	if (r->len + len + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 16384;

		if (!r->body && r->content_length > 0 &&
		    (uint64_t)r->content_length < r->max_body)
			cap = (size_t)r->content_length + 1;
		while (cap < r->len + len + 1)
			cap = cap > SIZE_MAX / 2 ? r->len + len + 1 : 2 * cap;
		body = realloc(r->body, cap);
		if (!body)
			return 0;
		r->body = body;
		r->cap = cap;
	}
	body = r->body;
	memcpy(body + r->len, p, len);
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

const char *http_header_is(const char *line, size_t len, const char *name,
			   size_t *ret_len)
{
	size_t nlen = strlen(name);
	const char *v, *end = line + len;

	if (len <= nlen || strncasecmp(line, name, nlen) || line[nlen] != ':')
		return NULL;
	v = line + nlen + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && isspace((unsigned char)end[-1]))
		end--;
	*ret_len = (size_t)(end - v);
	return v;
}

long http_status_line(const char *line, size_t len)
{
	const char *sp;

	if (len <= 5 || strncmp(line, "HTTP/", 5))
		return -1;
	sp = memchr(line, ' ', len);
	return sp ? atol(sp + 1) : 0;
}

/* header_value() - a copy of the value of header line @line if it is
 * @name, trimmed; NULL otherwise. */
static char *header_value(const char *line, size_t len, const char *name)
{
	size_t vlen;
	const char *v = http_header_is(line, len, name, &vlen);

	return v ? strndup(v, vlen) : NULL;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct http_response *r = arg;
	size_t len = size * n;
	char *v;

	/* A new status line (redirects, 100-continue) starts afresh. */
	if (http_status_line(p, len) >= 0) {
		free(r->etag);
		free(r->last_modified);
		free(r->content_type);
		r->etag = r->last_modified = r->content_type = NULL;
		r->content_length = -1;
	} else if ((v = header_value(p, len, "ETag"))) {
		free(r->etag);
		r->etag = v;
	} else if ((v = header_value(p, len, "Last-Modified"))) {
		free(r->last_modified);
		r->last_modified = v;
	} else if ((v = header_value(p, len, "Content-Type"))) {
		free(r->content_type);
		r->content_type = v;
	} else if ((v = header_value(p, len, "Content-Length"))) {
		char *end;
		long long cl = strtoll(v, &end, 10);

		r->content_length = (*v && !*end && cl >= 0) ? cl : -1;
		free(v);
	}
	return len;
}

void http_perform_setup(CURL *h, size_t max_body, struct http_response *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->content_length = -1;
	ret->max_body = max_body;
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_body_hold);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, ret);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, ret);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ret->curl_error);
}

int http_perform_finish(CURL *h, CURLcode code, struct http_response *ret)
{
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ret->status);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	if (ret->overflow) {
		snprintf(ret->curl_error, sizeof(ret->curl_error),
			 "response larger than %zu bytes", ret->max_body);
		return -EFBIG;
	}
	if (code != CURLE_OK) {
		if (!ret->curl_error[0])
			snprintf(ret->curl_error, sizeof(ret->curl_error), "%s",
				 curl_easy_strerror(code));
		return proxy_judge(h, code, http_curl_errno(code));
	}
	if (!ret->body) {
		ret->body = strdup("");
		if (!ret->body)
			return -ENOMEM;
	}
	return 0;
}

int http_perform(CURL *h, size_t max_body, struct http_response *ret)
{
	http_perform_setup(h, max_body, ret);
	return http_perform_finish(h, curl_easy_perform(h), ret);
}

unsigned http_backoff_ms(unsigned attempt)
{
	unsigned delay = HTTP_BACKOFF_BASE_MS << (attempt < 6 ? attempt : 6);

	if (delay > HTTP_BACKOFF_CAP_MS)
		delay = HTTP_BACKOFF_CAP_MS;
	return delay / 2 + (unsigned)rand() % (delay / 2 + 1);
}

bool http_retryable(int err, unsigned flags)
{
	if (flags & HTTP_RETRY_NEVER)
		return false;
	switch (err) {
	case -ESTALE:	   /* changed: the same request gets the same */
	case -ENOENT:	   /* gone */
	case -EPROTO:	   /* a server that lies once lies again */
	case -EACCES:	   /* credentials: not better in a second */
	case -EKEYEXPIRED: /* the provider already tried to refresh */
	case -ESHUTDOWN:
	case -ENOMEM:
	case -EINVAL:
	case -ERANGE:
	case -EFBIG:
	case -EBADMSG:	    /* decoded bytes failed their check */
	case -EKEYREJECTED: /* ... their authentication */
		return false;
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
		/* At first contact the source is down: say so at once. */
		return !(flags & HTTP_RETRY_REACHABLE);
	default:
		return true; /* resets, stalls, 5xx, 429, EIO */
	}
}

unsigned http_retry_after_ms(CURL *h, unsigned cap_ms)
{
	struct curl_header *hd;
	long status = 0;
	long long secs;
	char *end;

	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if ((status != 429 && status != 503) ||
	    curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hd) !=
		    CURLHE_OK)
		return 0;
	secs = strtoll(hd->value, &end, 10);
	if (end == hd->value || *end) {
		time_t at = curl_getdate(hd->value, NULL);

		secs = at > 0 ? (long long)(at - time(NULL)) : 0;
	}
	if (secs <= 0)
		return 0;
	return secs >= cap_ms / 1000 ? cap_ms : (unsigned)secs * 1000u;
}

int http_curl_errno(CURLcode code)
{
	switch (code) {
	case CURLE_OK:
		return 0;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_ABORTED_BY_CALLBACK:
		return -ESHUTDOWN; /* http_cancel_all() */
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
		return -EPROTO;
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		return -ECONNRESET;
	default:
		return -EIO;
	}
}

int http_status_errno(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
	case 410:
		return -ENOENT;
	case 412: /* If-Match failed: the object changed */
	case 416: /* the range is past its end: it shrank */
		return -ESTALE;
	case 408:
	case 504:
		return -ETIMEDOUT;
	case 429:
	case 503:
		return -EAGAIN;
	default:
		/* 5xx: the server's trouble, transient; anything else
		 * (3xx, other 4xx) is not an answer we asked for. */
		return status >= 500 && status < 600 ? -EIO : -EPROTO;
	}
}

int http_status_retryable(long status)
{
	return status >= 500 || status == 429 || status == 408;
}
