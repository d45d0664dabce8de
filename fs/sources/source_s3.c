/* s3://bucket[/prefix]: an S3 bucket (or an S3-compatible store) as the
 * source. Listed with ListObjectsV2, read with signed ranged GETs.
 *
 * Everything in struct source_s3 is set by source_s3_new() and read-only
 * afterwards; the credentials provider is thread-safe, so list() and
 * prepare_get() may run at once. */
#include "source.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "aws_creds.h"
#include "http.h"
#include "http_run.h"
#include "msg.h"
#include "opts.h"
#include "s3_endpoint.h"
#include "s3_list.h"
#include "sigv4.h"
#include "stats.h"
#include "tree.h"

#define MAX_LISTING (16u << 20) /* bytes of one page of 1000 keys */
#define MAX_PAGES 1000000
#define MAX_WARNINGS 100

struct source_s3 {
	struct source s;
	const struct options *opts;
	char *bucket;
	char *prefix;	 /* "" or "dir/": the mount's root */
	char *origin;	 /* "https://host[:port]" */
	char *host;	 /* Host header: "host[:port]" */
	char *base_path; /* "" (virtual-hosted) or "/bucket", after any path
			    of the endpoint */
	char *region;
	struct aws_creds *creds; /* NULL: anonymous (no_sign_request) */
};

static int add_header(struct curl_slist **l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int add_header(struct curl_slist **l, const char *fmt, ...)
{
	struct curl_slist *n;
	va_list ap;
	char *line;
	int len;

	va_start(ap, fmt);
	len = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (len < 0)
		return -ENOMEM;
	n = curl_slist_append(*l, line);
	free(line);
	if (!n)
		return -ENOMEM;
	*l = n;
	return 0;
}

/*
 * Sign a GET of @path?@query (both as sent) with the current credentials
 * and append the headers to *hdrs: Host, X-Amz-Date, X-Amz-Content-SHA256,
 * X-Amz-Security-Token, Authorization, If-Match. Only Host and the
 * X-Amz-* headers are signed (all S3 requires): a rack cache in front of
 * the origin drops If-Match and rewrites Range to its slice's (nginx
 * proxy_cache + slice does both), and a signature over them would then
 * fail. The caller sets Range. Anonymous: only If-Match.
 */
static int sign_request(struct source_s3 *s, const char *method,
			const char *path, const char *query, const char *range,
			const char *etag, bool checksum_mode,
			struct curl_slist **hdrs, char **ret_msg)
{
	struct aws_credentials cr = { 0 };
	struct sigv4_header h[5];
	struct sigv4_request req = {
		.method = method,
		.path = path,
		.query = query,
		.headers = h,
		.payload_hash = SIGV4_EMPTY_SHA256,
	};
	struct sigv4_key key = { .region = s->region, .service = "s3" };
	struct sigv4_signature sig = { 0 };
	char date[17];
	size_t n = 0;
	int err;

	if (etag && strpbrk(etag, "\r\n"))
		return -EINVAL;
	if (!s->creds) {
		err = etag ? add_header(hdrs, "If-Match: %s", etag) : 0;
		if (!err && checksum_mode)
			err = add_header(hdrs, "x-amz-checksum-mode: ENABLED");
		return err;
	}
	err = aws_creds_get(s->creds, &cr, ret_msg);
	if (err)
		return err;
	sigv4_amz_date(time(NULL), date);
	h[n++] = (struct sigv4_header){ "Host", s->host };
	h[n++] = (struct sigv4_header){ "X-Amz-Date", date };
	h[n++] = (struct sigv4_header){ "X-Amz-Content-SHA256",
					SIGV4_EMPTY_SHA256 };
	if (cr.session_token)
		h[n++] = (struct sigv4_header){ "X-Amz-Security-Token",
						cr.session_token };
	if (checksum_mode)
		h[n++] = (struct sigv4_header){ "x-amz-checksum-mode",
						"ENABLED" };
	req.nheaders = n;
	key.access_key_id = cr.access_key_id;
	key.secret_access_key = cr.secret_access_key;
	err = sigv4_sign(&req, &key, date, &sig);
	if (!err)
		err = add_header(hdrs, "Host: %s", s->host);
	if (!err)
		err = add_header(hdrs, "X-Amz-Date: %s", date);
	if (!err)
		err = add_header(hdrs,
				 "X-Amz-Content-SHA256: " SIGV4_EMPTY_SHA256);
	if (!err && cr.session_token)
		err = add_header(hdrs, "X-Amz-Security-Token: %s",
				 cr.session_token);
	if (!err && etag)
		err = add_header(hdrs, "If-Match: %s", etag);
	if (!err && checksum_mode)
		err = add_header(hdrs, "x-amz-checksum-mode: ENABLED");
	if (!err)
		err = add_header(hdrs, "Authorization: %s", sig.authorization);
	sigv4_signature_done(&sig);
	aws_credentials_done(&cr);
	return err;
}

/* A signed GET (the common case). */
static int sign_get(struct source_s3 *s, const char *path, const char *query,
		    const char *range, const char *etag,
		    struct curl_slist **hdrs, char **ret_msg)
{
	return sign_request(s, "GET", path, query, range, etag, false, hdrs,
			    ret_msg);
}

/* The URL path of object @key (relative to the prefix), encoded. */
static char *object_path(const struct source_s3 *s, const char *key)
{
	char *full = NULL, *enc, *path = NULL;

	if (asprintf(&full, "%s%s", s->prefix, key) < 0)
		return NULL;
	enc = sigv4_uri_encode(full, strlen(full), true);
	if (enc && asprintf(&path, "%s/%s", s->base_path, enc) < 0)
		path = NULL;
	free(enc);
	free(full);
	return path;
}

static int s3_prepare_get(struct source *src, CURL *h, const struct node *file,
			  const char *etag, const char *range,
			  struct curl_slist **hdrs)
{
	struct source_s3 *s = (struct source_s3 *)src;
	char *path = object_path(s, file->key), *url = NULL;
	int err;

	if (!path)
		return -ENOMEM;
	if (asprintf(&url, "%s%s", s->origin, path) < 0) {
		free(path);
		return -ENOMEM;
	}
	/* If-Match only with a strong ETag (a weak one never matches). */
	if (etag && !strncmp(etag, "W/", 2))
		etag = NULL;
	err = curl_easy_setopt(h, CURLOPT_URL, url) == CURLE_OK
		      ? sign_get(s, path, NULL, range, etag, hdrs, NULL)
		      : -EINVAL;
	free(url);
	free(path);
	return err;
}

/* A key as it may appear in a message: control bytes shown as '?'. */
static char *printable(const char *key, size_t len)
{
	char *p = malloc(len + 1);

	if (!p)
		return NULL;
	for (size_t i = 0; i < len; i++)
		p[i] = ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
			       ? '?'
			       : key[i];
	p[len] = '\0';
	return p;
}

static int warn(char **warnings, size_t *count, const char *why,
		const char *key, size_t len)
{
	char *k, *all = NULL;
	int r;

	if (++*count > MAX_WARNINGS)
		return 0;
	k = printable(key, len);
	if (!k)
		return -ENOMEM;
	if (*count == MAX_WARNINGS)
		r = asprintf(&all, "%sfurther keys skipped without a warning\n",
			     *warnings ? *warnings : "");
	else
		r = asprintf(&all, "%sskipping S3 key '%s': %s\n",
			     *warnings ? *warnings : "", k, why);
	free(k);
	if (r < 0)
		return -ENOMEM;
	free(*warnings);
	*warnings = all;
	return 0;
}

static int add_object(struct source_s3 *s, struct tree *t,
		      const struct s3_object *o, char **warnings, size_t *nwarn)
{
	size_t plen = strlen(s->prefix), rlen;
	char *rel;
	bool dir;
	int err;

	if (o->key_len != strlen(o->key))
		return warn(warnings, nwarn, "contains a NUL byte", o->key,
			    o->key_len);
	if (o->key_len < plen || memcmp(o->key, s->prefix, plen))
		return warn(warnings, nwarn, "outside the prefix", o->key,
			    o->key_len);
	rlen = o->key_len - plen;
	if (rlen == 0)
		return 0; /* the prefix's own "directory" marker */
	dir = o->key[o->key_len - 1] == '/';
	if (dir && o->size)
		return warn(warnings, nwarn,
			    "ends in '/' but holds data: not a usable name",
			    o->key, o->key_len);
	/* Sizes are off_t to the kernel and to readers. */
	if (o->size > INT64_MAX)
		return warn(warnings, nwarn, "a size over 2^63 - 1 bytes",
			    o->key, o->key_len);
	rel = strndup(o->key + plen, rlen - (dir ? 1 : 0));
	if (!rel)
		return -ENOMEM;
	if (source_key_depth(rel) > SOURCE_MAX_DEPTH + !dir) {
		free(rel);
		STAT_ADD(dirs_too_deep, 1);
		return warn(warnings, nwarn, "a directory nested too deep",
			    o->key, o->key_len);
	}
	err = tree_add(t, rel, dir, o->size, o->mtime, o->etag, NULL);
	free(rel);
	if (err == -EINVAL)
		return warn(warnings, nwarn,
			    "not a usable path (empty, '.', '..', control "
			    "characters or over 255 bytes in a component)",
			    o->key, o->key_len);
	if (err == -EEXIST)
		return warn(warnings, nwarn,
			    "a file and a directory of the same name", o->key,
			    o->key_len);
	return err;
}

/* The error of a failed listing request, as a message for the user. */
static int list_error(struct source_s3 *s, int err,
		      const struct http_response *r, char **ret_msg)
{
	struct s3_error e;

	if (err)
		return msg_set(ret_msg, err, "listing %s: cannot reach %s: %s",
			       s->s.display, s->origin,
			       r->curl_error[0] ? r->curl_error
						: strerror(-err));
	err = http_status_errno(r->status) ?: -EIO;
	if (r->body && !s3_error_parse(r->body, r->len, &e)) {
		const char *hint = "";
		char *extra = NULL;

		if (!strcmp(e.code, "PermanentRedirect") ||
		    !strcmp(e.code, "AuthorizationHeaderMalformed") ||
		    !strcmp(e.code, "IllegalLocationConstraintException"))
			hint = "; the bucket is in another region: set "
			       "-o region=";
		if (e.region && asprintf(&extra, " (region %s)", e.region) < 0)
			extra = NULL;
		else if (!e.region && e.endpoint &&
			 asprintf(&extra, " (endpoint %s)", e.endpoint) < 0)
			extra = NULL;
		msg_set(ret_msg, err, "listing %s: %s: %s (HTTP %ld)%s%s",
			s->s.display, e.code, e.message ? e.message : "",
			r->status, hint, extra ? extra : "");
		free(extra);
		s3_error_done(&e);
		return err;
	}
	return msg_set(ret_msg, err, "listing %s: HTTP %ld from %s",
		       s->s.display, r->status, s->origin);
}

/* A listing page's signature, for each attempt (it carries its time). */
struct page_sign {
	struct source_s3 *s;
	const char *path, *query;
	char *msg; /* why signing failed */
};

static int page_setup(struct http_whole *w, CURL *h, struct curl_slist **hdrs)
{
	struct page_sign *ps = w->arg;

	free(ps->msg);
	ps->msg = NULL;
	return sign_get(ps->s, ps->path, ps->query, NULL, NULL, hdrs, &ps->msg);
}

/* One page: GET with the runner's retries of transient failures. */
static int get_page(struct source_s3 *s, const char *prefix, bool delimit,
		    const char *token, struct http_response *ret,
		    char **ret_msg)
{
	char *query = s3_list_query_dir(prefix, token, delimit), *url = NULL;
	struct page_sign ps = {
		.s = s,
		.path = *s->base_path ? s->base_path : "/",
		.query = query,
	};
	struct http_whole w = { .max_body = MAX_LISTING,
				.retry_flags = HTTP_RETRY_REACHABLE,
				.setup = page_setup,
				.arg = &ps };
	int err = -ENOMEM;

	if (!query ||
	    asprintf(&url, "%s%s?%s", s->origin, ps.path, query) < 0) {
		url = NULL;
		goto out;
	}
	w.url = url;
	err = http_run_whole(&w, s->opts, ret);
	if (!err && ret->status == 200)
		goto out;
	if (ps.msg || (err && !w.set_up)) {
		/* Not sent: signing failed (or no memory). */
		msg_set(ret_msg, err, "listing %s: %s", s->s.display,
			ps.msg ? ps.msg : strerror(-err));
	} else {
		err = list_error(s, err, ret, ret_msg);
	}
	if (w.set_up)
		http_response_done(ret);
out:
	free(ps.msg);
	free(query);
	free(url);
	return err;
}

/* Every key under @prefix, or (@delimit) one level of them, into @t. */
static int list_pages(struct source_s3 *s, const char *prefix, bool delimit,
		      struct tree *t, char **ret_msg, char **ret_warnings)
{
	char *token = NULL, *warnings = NULL;
	struct list_budget budget; /* bounds, in constant memory */
	const char *why;
	size_t nwarn = 0;
	int err = 0;

	if (s->opts)
		list_budget_init(&budget, s->opts->list_time_max_s,
				 s->opts->list_entries_max, s->opts->list_lazy);
	else
		list_budget_init(&budget, 0, 0, true);

	for (size_t page = 0;; page++) {
		struct http_response r = { 0 };
		struct s3_list_page p;

		if (page == MAX_PAGES) {
			err = msg_set(ret_msg, -E2BIG,
				      "listing %s: more than %d pages",
				      s->s.display, MAX_PAGES);
			break;
		}
		err = get_page(s, prefix, delimit, token, &r, ret_msg);
		free(token);
		token = NULL;
		if (err)
			break;
		err = s3_list_parse(r.body, r.len, &p);
		if (err) {
			http_response_done(&r);
			msg_set(ret_msg, err,
				"listing %s: malformed ListObjectsV2 response",
				s->s.display);
			break;
		}
		err = list_budget_request(&budget, r.len,
					  p.nobjects + p.nprefixes, &why);
		http_response_done(&r);
		for (size_t i = 0; i < p.nobjects && !err; i++)
			err = add_object(s, t, &p.objects[i], &warnings,
					 &nwarn);
		/* Subdirectories: "prefix/dir/", added as directories. */
		for (size_t i = 0; i < p.nprefixes && !err; i++)
			err = add_object(s, t, &p.prefixes[i], &warnings,
					 &nwarn);
		if (!err && p.truncated)
			err = list_budget_token(&budget, p.next_token, &why);
		if (err == -E2BIG || err == -ELOOP)
			msg_set(ret_msg, err == -ELOOP ? -EPROTO : err,
				"listing %s: %s", s->s.display, why);
		if (!err && p.truncated) {
			token = p.next_token;
			p.next_token = NULL;
		}
		s3_list_page_done(&p);
		if (err || !token)
			break;
	}
	free(token);
	if (err == -ELOOP)
		err = -EPROTO;
	if (err == -ENOMEM && !*ret_msg)
		msg_set(ret_msg, err, "listing %s: out of memory",
			s->s.display);
	*ret_warnings = warnings;
	return err;
}

static int s3_list(struct source *src, struct tree *t, char **ret_msg,
		   char **ret_warnings)
{
	struct source_s3 *s = (struct source_s3 *)src;

	return list_pages(s, s->prefix, false, t, ret_msg, ret_warnings);
}

/* One level: ListObjectsV2 with delimiter=/ under the directory's key. */
static int s3_list_dir(struct source *src, const char *key, struct tree *t,
		       char **ret_msg, char **ret_warnings)
{
	struct source_s3 *s = (struct source_s3 *)src;
	char *prefix = NULL;
	int err;

	if (asprintf(&prefix, "%s%s%s", s->prefix, key, *key ? "/" : "") < 0)
		return -ENOMEM;
	err = list_pages(s, prefix, true, t, ret_msg, ret_warnings);
	free(prefix);
	return err;
}

/*
 * The object's full-object SHA-256 as S3 keeps it (uploaded with
 * ChecksumAlgorithm SHA256): HEAD with x-amz-checksum-mode: ENABLED.
 * -ENODATA when it has none or only a composite one (multipart), -ESTALE
 * when the object is not the version listed.
 */
static int s3_sha256(struct source *src, struct node *n, char ret[65])
{
	struct source_s3 *s = (struct source_s3 *)src;
	struct http_response r = { 0 };
	struct curl_slist *hdrs = NULL;
	struct curl_header *hd;
	unsigned char raw[48];
	char b64[45];
	char *path = object_path(s, n->key), *url = NULL, *etag = NULL;
	CURL *h = NULL;
	int err = -ENOMEM, len;

	pthread_mutex_lock(&n->lock);
	if (n->etag)
		etag = strdup(n->etag);
	pthread_mutex_unlock(&n->lock);
	if (!path || asprintf(&url, "%s%s", s->origin, path) < 0) {
		url = NULL;
		goto out;
	}
	if (!(h = curl_easy_init()))
		goto out;
	err = sign_request(s, "HEAD", path, NULL, NULL, NULL, true, &hdrs,
			   NULL);
	if (err)
		goto out;
	http_setup_common(h, s->opts);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	err = http_perform(h, 0, &r);
	if (err)
		goto out;
	err = http_status_errno(r.status);
	if (err)
		goto out;
	err = -ESTALE;
	if (etag && (!r.etag || strcmp(etag, r.etag)))
		goto out;
	/* curl_easy_header() reuses its answer: copy before the next. */
	err = -ENODATA;
	if (curl_easy_header(h, "x-amz-checksum-sha256", 0, CURLH_HEADER, -1,
			     &hd) != CURLHE_OK ||
	    strlen(hd->value) != 44)
		goto out;
	memcpy(b64, hd->value, 45);
	if (curl_easy_header(h, "x-amz-checksum-type", 0, CURLH_HEADER, -1,
			     &hd) == CURLHE_OK &&
	    strcasecmp(hd->value, "FULL_OBJECT"))
		goto out;
	len = EVP_DecodeBlock(raw, (const unsigned char *)b64, 44);
	if (len != 33) /* 32 bytes and the padding's one */
		goto out;
	for (int i = 0; i < 32; i++)
		snprintf(ret + 2 * i, 3, "%02x", raw[i]);
	err = 0;
out:
	curl_easy_cleanup(h);
	curl_slist_free_all(hdrs);
	http_response_done(&r);
	free(etag);
	free(url);
	free(path);
	return err;
}

static void s3_free(struct source *src)
{
	struct source_s3 *s = (struct source_s3 *)src;

	if (!s)
		return;
	aws_creds_free(s->creds);
	free(s->s.display);
	free(s->bucket);
	free(s->prefix);
	free(s->origin);
	free(s->host);
	free(s->base_path);
	free(s->region);
	free(s);
}

static const struct source_ops s3_ops = {
	.list = s3_list,
	.list_dir = s3_list_dir,
	.prepare_get = s3_prepare_get,
	.sha256 = s3_sha256,
	.free = s3_free,
};

int source_s3_new(const char *spec, const struct options *opts,
		  struct source **ret, char **ret_msg)
{
	struct source_s3 *s = calloc(1, sizeof(*s));
	const char *b = spec + 5, *slash;
	char *prefix = NULL;
	size_t plen;
	int err = -ENOMEM;

	if (!s)
		return -ENOMEM;
	s->s.ops = &s3_ops;
	s->opts = opts;
	if (strncmp(spec, "s3://", 5)) {
		err = msg_set(ret_msg, -EINVAL, "not an s3:// source: %s",
			      spec);
		goto fail;
	}
	slash = strchrnul(b, '/');
	s->bucket = strndup(b, (size_t)(slash - b));
	s->s.display = strdup(spec);
	if (!s->bucket || !s->s.display)
		goto fail;
	if (!s3_bucket_ok(s->bucket)) {
		err = msg_set(ret_msg, -EINVAL,
			      "'%s': expected s3://bucket[/prefix] with a "
			      "bucket name of letters, digits, '.', '-', '_'",
			      spec);
		goto fail;
	}
	/* The prefix is a directory: "a/b" and "a/b/" both mean "a/b/". */
	prefix = strdup(*slash ? slash + 1 : "");
	if (!prefix)
		goto fail;
	plen = strlen(prefix);
	while (plen && prefix[plen - 1] == '/')
		prefix[--plen] = '\0';
	if (asprintf(&s->prefix, "%s%s", prefix, plen ? "/" : "") < 0) {
		s->prefix = NULL;
		goto fail;
	}

	s->region = s3_region_resolve(opts);
	if (!s->region)
		goto fail;
	if (strpbrk(s->region, "/\r\n ")) {
		err = msg_set(ret_msg, -EINVAL, "malformed region '%s'",
			      s->region);
		goto fail;
	}
	err = s3_endpoint_resolve(opts, s->bucket, s->region, &s->origin,
				  &s->host, &s->base_path, ret_msg);
	if (err)
		goto fail;
	if (!(opts && opts->no_sign_request)) {
		char *msg = NULL;

		err = aws_creds_new(opts, s->region, &s->creds, &msg);
		if (err) {
			msg_set(ret_msg, err, "%s: %s", spec,
				msg ? msg : strerror(-err));
			free(msg);
			goto fail;
		}
	}
	free(prefix);
	*ret = &s->s;
	return 0;
fail:
	free(prefix);
	s3_free(&s->s);
	return err;
}
