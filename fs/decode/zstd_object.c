/* Compressed objects shown as plain files: see zstd_object.h. */
#include "zstd_object.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "fetch.h"
#include "http.h"
#include "log.h"
#include "opts.h"
#include "source.h"
#include "stats.h"
#include "zstd_seekable.h"

/* The first read of an object's tail: most seek tables fit (a 1 MiB
 * frame's entry is 12 bytes: 64 KiB covers 5 GiB of data). */
#define TAIL_FIRST (64u << 10)
/* A seek table larger than this is not believed (128 M frames of 12 bytes
 * would be 1.5 GiB). */
#define TABLE_MAX (256u << 20)

struct zstd_object *zstd_object_ref(struct zstd_object *z)
{
	if (z)
		__atomic_add_fetch(&z->refs, 1, __ATOMIC_RELAXED);
	return z;
}

void zstd_object_unref(struct zstd_object *z)
{
	if (!z || __atomic_sub_fetch(&z->refs, 1, __ATOMIC_ACQ_REL))
		return;
	zstd_seekable_free(z->zs);
	free(z->obj.key);
	free(z->etag);
	free(z);
}

int zstd_object_plan(const struct zstd_object *z, uint64_t off, size_t len,
		     uint64_t *ret_off, size_t *ret_len)
{
	const struct zstd_seekable_frame *fr;
	uint32_t first, count;

	zstd_seekable_range(z->zs, off, len, &first, &count);
	if (!count)
		return -EINVAL;
	fr = &z->zs->frames[first + count - 1];
	*ret_off = z->zs->frames[first].coff;
	*ret_len = (size_t)(fr->coff + fr->csize - *ret_off);
	return 0;
}

bool zstd_object_in_place(const struct zstd_object *z, uint64_t off, size_t len)
{
	return zstd_seekable_in_place(z->zs, off, len);
}

/* A decoding context per thread, freed with it. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;

static void dctx_destroy(void *p)
{
	zstd_seekable_dctx_free(p);
}

static void dctx_key_init(void)
{
	pthread_key_create(&dctx_key, dctx_destroy);
}

static struct zstd_seekable_dctx *thread_dctx(void)
{
	struct zstd_seekable_dctx *dc;

	pthread_once(&dctx_once, dctx_key_init);
	dc = pthread_getspecific(dctx_key);
	if (!dc && !zstd_seekable_dctx_new(&dc))
		pthread_setspecific(dctx_key, dc);
	return dc;
}

/* After a failed decode: which frame of [first, first + count) is bad.
 * The last one that fails: a decode in place has overwritten the input of
 * the frames before the bad one, never of those after it. */
static uint32_t find_bad_frame(struct zstd_seekable_dctx *dc,
			       const struct zstd_object *z, uint32_t first,
			       uint32_t count, const char *src)
{
	const struct zstd_seekable *zs = z->zs;
	char *scratch = malloc(zs->max_dsize ? zs->max_dsize : 1);
	uint64_t base = zs->frames[first].coff;
	uint32_t i;

	for (i = first + count; scratch && i-- > first;) {
		const struct zstd_seekable_frame *fr = &zs->frames[i];

		if (zstd_seekable_decode(dc, zs, i, src + (fr->coff - base),
					 fr->csize, scratch,
					 zs->max_dsize) < 0) {
			free(scratch);
			return i;
		}
	}
	free(scratch);
	return first;
}

int zstd_object_decode(struct zstd_object *z, const char *name, uint64_t off,
		       size_t len, const char *src, size_t src_len, char *dst)
{
	struct zstd_seekable_dctx *dc = thread_dctx();
	uint32_t first, count;
	ssize_t got;

	if (!dc)
		return -ENOMEM;
	zstd_seekable_range(z->zs, off, len, &first, &count);
	got = zstd_seekable_read(dc, z->zs, off, len, src, src_len, dst);
	if (got == (ssize_t)len) {
		STAT_ADD(bytes_decompressed, len);
		STAT_ADD(frames_decoded, count);
		return 0;
	}
	if (got == -ENOMEM)
		return -ENOMEM;
	if (!__atomic_exchange_n(&z->logged, 1, __ATOMIC_RELAXED)) {
		uint32_t bad =
			count ? find_bad_frame(dc, z, first, count, src) : 0;
		const struct zstd_seekable_frame *fr =
			count ? &z->zs->frames[bad] : NULL;

		log_error("%s: frame %" PRIu32 " of %s (compressed bytes "
			  "%" PRIu64 "-%" PRIu64 ") is corrupt: reads of it "
			  "fail with EIO",
			  name, bad, z->obj.key, fr ? fr->coff : 0,
			  fr ? fr->coff + fr->csize : 0);
	}
	return -EBADMSG;
}

/* ---- listing: read seek tables ---- */

struct tail {
	struct node *n;	  /* NAME.zst in the tree being built */
	uint64_t size;	  /* its size when listed */
	const char *etag; /* its validator (n's) */
	uint64_t off;	  /* the range being read */
	size_t len;
	char *buf;
	unsigned attempt;
	bool second; /* reading the whole table after a first tail */
	bool pinned; /* the source checks etag (source.pinned_by_source) */
	int err;     /* final: 0 and zs, or the reason */
	struct zstd_seekable *zs;
	/* curl sources */
	CURL *h;
	struct curl_slist *hdrs;
	struct fetch_response r;
};

/* The bytes to read next for @tl, after a first read of its tail (or
 * none yet): sets off/len and (re)allocates buf. */
static int tail_plan(struct tail *tl, size_t len)
{
	char *b = realloc(tl->buf, len ? len : 1);

	if (!b)
		return -ENOMEM;
	tl->buf = b;
	tl->len = len;
	tl->off = tl->size - len;
	return 0;
}

/* The bytes of @tl's range are in: parse them, or plan a second read
 * when the table is larger. @return 1 when done (tl->err set), 0 when a
 * second read is planned. */
static int tail_got(struct tail *tl)
{
	uint64_t tsize;
	int err;

	err = zstd_seekable_table_size(tl->buf, tl->len, tl->size, &tsize);
	if (!err && tsize > tl->len) {
		if (tl->second || tsize > TABLE_MAX) {
			err = -EPROTO;
		} else if (!(err = tail_plan(tl, (size_t)tsize))) {
			tl->second = true;
			tl->attempt = 0;
			return 0;
		}
	}
	if (!err)
		err = zstd_seekable_parse(tl->buf, tl->len, tl->size, &tl->zs);
	tl->err = err;
	return 1;
}

static void read_sync(struct source *src, struct tail *tls, size_t n,
		      unsigned retries)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct tail *tl = &tls[i];

		for (;;) {
			int err;

			STAT_ADD(requests, 1);
			err = src->ops->read_block(src, tl->n, tl->etag,
						   tl->off, tl->len, tl->buf);
			if (err) {
				if (fetch_retryable(err) &&
				    tl->attempt++ < retries)
					continue;
				tl->err = err;
				break;
			}
			STAT_ADD(bytes_fetched, tl->len);
			if (tail_got(tl))
				break;
		}
	}
}

static size_t on_body(char *p, size_t size, size_t nm, void *arg)
{
	struct tail *tl = arg;
	size_t len = size * nm;

	if (tl->r.status < 200 || tl->r.status > 299)
		return len;
	if (tl->r.encoded)
		return 0;
	if (len > tl->len - tl->r.got) {
		tl->r.overflow = true;
		return 0;
	}
	memcpy(tl->buf + tl->r.got, p, len);
	tl->r.got += len;
	return len;
}

static size_t on_header(char *p, size_t size, size_t nm, void *arg)
{
	struct tail *tl = arg;
	size_t len = size * nm;
	unsigned long long start, end, total;
	char line[512], *v, *e;

	if (len >= sizeof(line))
		return len;
	memcpy(line, p, len);
	line[len] = '\0';
	for (e = line + len; e > line && (e[-1] == '\r' || e[-1] == '\n' ||
					  e[-1] == ' ' || e[-1] == '\t');)
		*--e = '\0';
	if (!strncasecmp(line, "HTTP/", 5)) {
		const char *sp = strchr(line, ' ');

		tl->r.status = sp ? atoi(sp + 1) : 0;
		tl->r.range_ok = tl->r.etag_seen = tl->r.etag_mismatch = false;
		tl->r.encoded = false;
		return len;
	}
	v = strchr(line, ':');
	if (!v)
		return len;
	*v++ = '\0';
	while (*v == ' ' || *v == '\t')
		v++;
	if (!strcasecmp(line, "Content-Range")) {
		if (sscanf(v, "bytes %llu-%llu/%llu", &start, &end, &total) ==
			    3 &&
		    start == tl->off && end + 1 == tl->off + tl->len) {
			tl->r.range_ok = true;
			tl->r.range_total = total;
		}
	} else if (!strcasecmp(line, "ETag")) {
		tl->r.etag_seen = true;
		if (tl->etag && !tl->pinned && strcmp(v, tl->etag))
			tl->r.etag_mismatch = true;
	} else if (!strcasecmp(line, "Content-Encoding")) {
		if (*v && strcasecmp(v, "identity"))
			tl->r.encoded = true;
	}
	return len;
}

static int curl_prepare(struct source *src, const struct options *opts,
			struct tail *tl)
{
	char range[64];
	struct curl_slist *l;
	CURLcode c = CURLE_OK;
	int err;

	if (!tl->h && !(tl->h = curl_easy_init()))
		return -ENOMEM;
	curl_easy_reset(tl->h);
	curl_slist_free_all(tl->hdrs);
	tl->hdrs = NULL;
	memset(&tl->r, 0, sizeof(tl->r));
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, tl->off,
		 tl->off + tl->len - 1);
	err = http_setup_common(tl->h, opts);
	if (!err)
		err = src->ops->prepare_get(src, tl->h, tl->n, tl->etag, range,
					    &tl->hdrs);
	if (err)
		return err;
	l = curl_slist_append(tl->hdrs, "Accept-Encoding: identity");
	if (!l)
		return -ENOMEM;
	tl->hdrs = l;
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_RANGE, range + 6);
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_HTTPHEADER, tl->hdrs);
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_WRITEFUNCTION, on_body);
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_WRITEDATA, tl);
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_HEADERFUNCTION, on_header);
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_HEADERDATA, tl);
	if (!c)
		c = curl_easy_setopt(tl->h, CURLOPT_PRIVATE, tl);
	return c ? http_curl_errno(c) : 0;
}

/* Start @tl's request on @m. @return whether it runs (else tl->err). */
static bool tail_start(CURLM *m, struct source *src, const struct options *opts,
		       struct tail *tl)
{
	int err = curl_prepare(src, opts, tl);

	if (!err && curl_multi_add_handle(m, tl->h))
		err = -ENOMEM;
	if (err)
		tl->err = err;
	return !err;
}

/* Run @n tail reads over a curl multi handle, up to opts->connections at
 * once. */
static void read_curl(struct source *src, const struct options *opts,
		      struct tail *tls, size_t n)
{
	CURLM *m = curl_multi_init();
	size_t next = 0, active = 0;

	if (!m) {
		for (size_t i = 0; i < n; i++)
			tls[i].err = -ENOMEM;
		return;
	}
	while (next < n || active) {
		CURLMsg *msg;
		int running, left;

		while (next < n && active < opts->connections)
			active += tail_start(m, src, opts, &tls[next++]);
		if (!active)
			continue;
		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left))) {
			struct tail *tl;
			int xerr, err;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
					  (char **)&tl);
			curl_multi_remove_handle(m, tl->h);
			active--;
			xerr = msg->data.result == CURLE_OK ||
					       (msg->data.result ==
							CURLE_WRITE_ERROR &&
						(tl->r.overflow ||
						 tl->r.encoded))
				       ? 0
				       : http_curl_errno(msg->data.result);
			STAT_ADD(requests, 1);
			err = fetch_judge(tl->off, tl->len, tl->size, xerr,
					  &tl->r);
			if (!err) {
				STAT_ADD(bytes_fetched, tl->len);
				if (tail_got(tl))
					continue;
			} else if (!fetch_retryable(err) ||
				   tl->attempt++ >= opts->retries) {
				tl->err = err;
				continue;
			}
			/* Again (a retry, or the whole table). */
			active += tail_start(m, src, opts, tl);
		}
		if (active)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	curl_multi_cleanup(m);
	for (size_t i = 0; i < n; i++) {
		if (tls[i].h)
			curl_easy_cleanup(tls[i].h);
		curl_slist_free_all(tls[i].hdrs);
		tls[i].h = NULL;
		tls[i].hdrs = NULL;
	}
}

static bool is_candidate(struct tree *t, const struct node *n)
{
	size_t len = strlen(n->name), sl = strlen(ZSTD_OBJECT_SUFFIX);
	char *base;
	bool ok;

	if (n->is_dir || n->size < ZSTD_SEEKABLE_TABLE_MIN || len <= sl ||
	    strcmp(n->name + len - sl, ZSTD_OBJECT_SUFFIX))
		return false;
	base = strndup(n->name, len - sl);
	if (!base)
		return false;
	/* NAME itself, when listed, wins: shown as it is. */
	ok = tree_name_ok(base, len - sl) && !tree_lookup(t, n->parent, base);
	free(base);
	return ok;
}

__attribute__((format(printf, 2, 3))) static void warn(char **warnings,
						       const char *fmt, ...)
{
	char *line = NULL, *all = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		line = NULL;
	va_end(ap);
	if (!line)
		return;
	if (asprintf(&all, "%s%s\n", *warnings ? *warnings : "", line) >= 0) {
		free(*warnings);
		*warnings = all;
	}
	free(line);
}

/* Show @zn (NAME.zst) as NAME with table @z (its reference taken). */
static int show_as(struct tree *t, struct node *zn, struct zstd_object *z)
{
	int err = tree_trim_name(t, zn,
				 strlen(zn->name) - strlen(ZSTD_OBJECT_SUFFIX));

	if (err) {
		zstd_object_unref(z);
		return err;
	}
	/* It keeps the compressed object's validator: when that changes (a
	 * relisting sees it), so does the file, and the table with it. */
	tree_set_size(t, zn, z->zs->size);
	zn->zobj = z;
	return 0;
}

/* Show the seekable object of @tl as NAME: its node renamed, with the
 * uncompressed size and the table. */
static int add_decoded(struct tree *t, struct tail *tl)
{
	struct node *zn = tl->n;
	struct zstd_object *z = calloc(1, sizeof(*z));

	if (!z)
		return -ENOMEM;
	z->refs = 1;
	z->zs = tl->zs;
	tl->zs = NULL;
	z->object_size = tl->size;
	if (!(z->obj.key = strdup(zn->key)) ||
	    (tl->etag && !(z->etag = strdup(tl->etag)))) {
		zstd_object_unref(z);
		return -ENOMEM;
	}
	z->obj.name = z->obj.key + (zn->name - zn->key);
	return show_as(t, zn, z);
}

/* The node at @key ("a/b/c") in @t, or NULL. */
static struct node *find_key(struct tree *t, const char *key)
{
	struct node *n = tree_root(t);
	char *copy = strdup(key), *p, *save = NULL;

	if (!copy)
		return NULL;
	for (p = strtok_r(copy, "/", &save); n && p;
	     p = strtok_r(NULL, "/", &save))
		n = tree_lookup(t, n, p);
	free(copy);
	return n;
}

/* The table @prev already has for NAME.zst @zn, when it is the same
 * object: a new reference, else NULL. */
static struct zstd_object *reuse(struct tree *prev, const struct node *zn)
{
	size_t klen = strlen(zn->key) - strlen(ZSTD_OBJECT_SUFFIX);
	struct zstd_object *z = NULL;
	struct node *n;
	char *key;

	if (!prev || !zn->etag || !(key = strndup(zn->key, klen)))
		return NULL;
	n = find_key(prev, key);
	free(key);
	if (!n || n->is_dir)
		return NULL;
	pthread_mutex_lock(&n->lock);
	if (n->zobj && n->zobj->etag && !strcmp(n->zobj->etag, zn->etag) &&
	    n->zobj->object_size == zn->size &&
	    !strcmp(n->zobj->obj.key, zn->key))
		z = zstd_object_ref(n->zobj);
	pthread_mutex_unlock(&n->lock);
	return z;
}

int zstd_object_scan(struct source *src, const struct options *opts,
		     struct tree *t, struct node **nodes, size_t n,
		     struct tree *prev, char **ret_warnings)
{
	struct tail *tls = calloc(n ? n : 1, sizeof(*tls));
	size_t i, k = 0;
	int added = 0;

	if (!tls)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct node *nd = nodes[i];

		struct zstd_object *z;

		if (!nd || !is_candidate(t, nd))
			continue;
		if ((z = reuse(prev, nd))) {
			added += show_as(t, nd, z) == 0;
			continue;
		}
		tls[k].n = nd;
		tls[k].size = nd->size;
		tls[k].etag = nd->etag;
		tls[k].pinned = src->pinned_by_source;
		if (tail_plan(&tls[k], nd->size < TAIL_FIRST ? (size_t)nd->size
							     : TAIL_FIRST))
			break;
		k++;
	}
	if (src->ops->read_block)
		read_sync(src, tls, k, opts->retries);
	else if (k)
		read_curl(src, opts, tls, k);
	for (i = 0; i < k; i++) {
		struct tail *tl = &tls[i];

		if (!tl->err) {
			if (add_decoded(t, tl) == 0)
				added++;
		} else if (tl->err == -EPROTO) {
			warn(ret_warnings,
			     "%s: a broken zstd seek table; shown as it is",
			     tl->n->key);
		} else if (tl->err != -ENOMSG) {
			warn(ret_warnings,
			     "%s: reading its zstd seek table failed (%s); "
			     "shown as it is",
			     tl->n->key, strerror(-tl->err));
		}
		zstd_seekable_free(tl->zs);
		free(tl->buf);
	}
	free(tls);
	return added;
}

int zstd_object_scan_tree(struct source *src, const struct options *opts,
			  struct tree *t, struct tree *prev,
			  char **ret_warnings)
{
	size_t count = tree_count(t), i, n = 0;
	struct node **nodes;
	int err;

	if (!opts->zstd)
		return 0;
	nodes = malloc(count * sizeof(*nodes));
	if (!nodes)
		return -ENOMEM;
	for (i = 1; i <= count; i++) {
		struct node *nd = tree_get(t, i);

		if (nd && !nd->is_dir)
			nodes[n++] = nd;
	}
	err = zstd_object_scan(src, opts, t, nodes, n, prev, ret_warnings);
	free(nodes);
	return err;
}
