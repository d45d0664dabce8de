/* Decoders behind one interface: see decoder.h. */
#include "decoder.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch_range.h"
#include "log.h"
#include "opts.h"
#include "stats.h"
#include "sealed_object.h"
#include "zstd_object.h"

/* Every decoder there is, in the order they are offered an object. */
static const struct decoder_ops *const known[] = {
	&zstd_decoder_ops,
	&sealed_decoder_ops,
};
#define NKNOWN (sizeof(known) / sizeof(*known))

struct decoders {
	const struct decoder_ops *ops[NKNOWN]; /* those enabled */
	void *cfg[NKNOWN];
	size_t n;
};

int decoders_new(const struct options *opts, struct decoders **ret,
		 char **ret_msg)
{
	struct decoders *ds = calloc(1, sizeof(*ds));

	if (!ds)
		return -ENOMEM;
	for (size_t i = 0; i < NKNOWN; i++) {
		void *cfg = NULL;
		int err = known[i]->config_new
				  ? known[i]->config_new(opts, &cfg, ret_msg)
				  : 0;

		if (err) {
			decoders_free(ds);
			return err;
		}
		if (!cfg && known[i]->config_new)
			continue; /* off for this mount */
		ds->ops[ds->n] = known[i];
		ds->cfg[ds->n++] = cfg;
	}
	*ret = ds;
	return 0;
}

void decoders_free(struct decoders *ds)
{
	if (!ds)
		return;
	for (size_t i = 0; i < ds->n; i++)
		if (ds->ops[i]->config_free)
			ds->ops[i]->config_free(ds->cfg[i]);
	free(ds);
}

int decoded_plan(struct decoded *d, const char *name, uint64_t off, size_t len,
		 uint64_t *ret_off, size_t *ret_len, bool *ret_in_place)
{
	char where[512] = "";
	int err = d->ops->plan(d, off, len, ret_off, ret_len, ret_in_place);

	if (err != -EACCES ||
	    __atomic_exchange_n(&d->logged, 1, __ATOMIC_RELAXED))
		return err;
	if (d->ops->describe)
		d->ops->describe(d, off, len, NULL, where, sizeof(where));
	log_error("%s: %s: reads of it fail with EACCES", name,
		  *where ? where : d->obj.key);
	return err;
}

/* The first failure to decode @d is logged, naming @name (the file) and
 * where the fault is. */
static void log_failure(struct decoded *d, const char *name, uint64_t off,
			size_t len, const char *src, int err)
{
	char where[512] = "";

	if (err == -ENOMEM ||
	    __atomic_exchange_n(&d->logged, 1, __ATOMIC_RELAXED))
		return;
	if (d->ops->describe)
		d->ops->describe(d, off, len, src, where, sizeof(where));
	if (!*where)
		snprintf(where, sizeof(where), "%s", d->obj.key);
	if (err == DECODER_EAUTH)
		log_error("%s: %s fails authentication: reads of it fail with "
			  "EIO",
			  name, where);
	else
		log_error("%s: %s is corrupt: reads of it fail with EIO", name,
			  where);
}

int decoded_decode(struct decoded *d, const char *name, uint64_t off,
		   size_t len, const char *src, size_t src_len, char *dst)
{
	int err = d->ops->decode(d, off, len, src, src_len, dst);

	if (!err) {
		STAT_ADD(bytes_decompressed, len);
		return 0;
	}
	log_failure(d, name, off, len, src, err);
	return err;
}

int decoded_stream_new(struct decoded *d, uint64_t off, size_t len, char *dst,
		       void **ret)
{
	if (!d->ops->stream_new)
		return -EOPNOTSUPP;
	return d->ops->stream_new(d, off, len, dst, ret);
}

int decoded_stream_put(struct decoded *d, void *st, const char *p, size_t n)
{
	return d->ops->stream_put(st, p, n);
}

int decoded_stream_end(struct decoded *d, const char *name, uint64_t off,
		       size_t len, void *st, int err)
{
	if (!err)
		err = st ? d->ops->stream_end(st) : -EIO;
	if (!err) {
		STAT_ADD(bytes_decompressed, len);
		return 0;
	}
	/* Only the decoder's own verdicts: a failed transfer is not
	 * the object's fault. */
	if (err == DECODER_EAUTH || err == -EBADMSG)
		log_failure(d, name, off, len, NULL, err);
	return err;
}

void decoded_stream_free(struct decoded *d, void *st)
{
	if (st)
		d->ops->stream_free(st);
}

/* ---- listing: open objects ---- */

struct opening {
	struct fetch_range fr; /* the range being read */
	struct node *n;	       /* the stored object in the tree being built */
	size_t shown_len;      /* of its name */
	const struct decoder_ops *ops;
	void *cfg;
	void *priv;	/* once open */
	uint64_t dsize; /* decoded size */
};

/* Read [off, off + len) next: (re)allocates the buffer. */
static int opening_plan(struct opening *o, uint64_t off, size_t len)
{
	char *b = realloc(o->fr.buf, len ? len : 1);

	if (!b)
		return -ENOMEM;
	o->fr.buf = b;
	o->fr.off = off;
	o->fr.len = len;
	return 0;
}

/* The range's bytes are in: open, or read another range. */
static int opening_got(struct fetch_range *fr)
{
	struct opening *o = fr->arg;
	uint64_t off = 0;
	size_t len = 0;
	int err = o->ops->open(o->cfg, fr->size, fr->off, fr->buf, fr->len,
			       &o->priv, &o->dsize, &off, &len);

	if (err == 1 && (err = opening_plan(o, off, len)) == 0)
		return 1;
	return err;
}

/* The decoder of @ds that recognises @n, whose shown name is free. */
static const struct decoder_ops *recognise(struct decoders *ds, struct tree *t,
					   const struct node *n, void **ret_cfg,
					   size_t *ret_len)
{
	for (size_t i = 0; i < ds->n; i++) {
		size_t len =
			ds->ops[i]->shown_len(ds->cfg[i], n->name, n->size);
		char *base;
		bool ok;

		if (!len || len >= strlen(n->name))
			continue;
		base = strndup(n->name, len);
		if (!base)
			return NULL;
		/* NAME itself, when listed, wins: shown as it is. */
		ok = tree_name_ok(base, len) &&
		     !tree_lookup(t, n->parent, base);
		free(base);
		if (!ok)
			continue;
		*ret_cfg = ds->cfg[i];
		*ret_len = len;
		return ds->ops[i];
	}
	return NULL;
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

/* Show stored object @n as its first @len name bytes, decoded by @d (its
 * reference taken). */
static int show_as(struct tree *t, struct node *n, size_t len,
		   struct decoded *d)
{
	int err = tree_trim_name(t, n, len);

	if (err) {
		decoded_unref(d);
		return err;
	}
	/* It keeps the stored object's validator: when that changes (a
	 * relisting sees it), so does the file, and the decoder's state
	 * with it. */
	tree_set_size(t, n, d->size);
	n->dec = d;
	return 0;
}

/* Show the object @o opened as its shown name. */
static int add_decoded(struct tree *t, struct opening *o)
{
	struct node *n = o->n;
	struct decoded *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->refs = 1;
	d->ops = o->ops;
	d->cfg = o->cfg;
	d->priv = o->priv;
	o->priv = NULL;
	d->size = o->dsize;
	d->object_size = o->fr.size;
	if (!(d->obj.key = strdup(n->key)) ||
	    (o->fr.etag && !(d->etag = strdup(o->fr.etag)))) {
		decoded_unref(d);
		return -ENOMEM;
	}
	d->obj.name = d->obj.key + (n->name - n->key);
	return show_as(t, n, o->shown_len, d);
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

/* The state @prev already has for stored object @n shown as its first
 * @len name bytes, when it is the same object: a new reference, else
 * NULL. */
static struct decoded *reuse(struct tree *prev, const struct node *n,
			     size_t len, const struct decoder_ops *ops)
{
	size_t klen = strlen(n->key) - (strlen(n->name) - len);
	struct decoded *d = NULL;
	struct node *p;
	char *key;

	if (!prev || !n->etag || !(key = strndup(n->key, klen)))
		return NULL;
	p = find_key(prev, key);
	free(key);
	if (!p || p->is_dir)
		return NULL;
	pthread_mutex_lock(&p->lock);
	if (p->dec && p->dec->ops == ops && p->dec->etag &&
	    !strcmp(p->dec->etag, n->etag) && p->dec->object_size == n->size &&
	    !strcmp(p->dec->obj.key, n->key))
		d = decoded_ref(p->dec);
	pthread_mutex_unlock(&p->lock);
	return d;
}

/* Say why @o's object is shown as it is, when that is news. */
static void warn_failed(struct opening *o, char **warnings)
{
	int err = o->fr.err;

	if (err == -ENOMSG)
		return;
	if (err == -EPROTO)
		warn(warnings, "%s: a broken %s; shown as it is", o->n->key,
		     o->ops->what);
	else if (err == DECODER_EAUTH)
		warn(warnings,
		     "%s: its %s fails authentication; shown as it is",
		     o->n->key, o->ops->what);
	else
		warn(warnings, "%s: reading its %s failed (%s); shown as it is",
		     o->n->key, o->ops->what, strerror(-err));
}

int decoders_scan(struct decoders *ds, struct source *src,
		  const struct options *opts, struct tree *t,
		  struct node **nodes, size_t n, struct tree *prev,
		  char **ret_warnings)
{
	struct opening *os;
	struct fetch_range **frs;
	size_t i, k = 0;
	int added = 0;

	if (!ds || !ds->n || !n)
		return 0;
	os = calloc(n, sizeof(*os));
	frs = calloc(n, sizeof(*frs));
	if (!os || !frs) {
		free(os);
		free(frs);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct node *nd = nodes[i];
		struct opening *o = &os[k];
		struct decoded *d;
		uint64_t off;
		size_t len;

		if (!nd || nd->is_dir ||
		    !(o->ops = recognise(ds, t, nd, &o->cfg, &o->shown_len)))
			continue;
		if ((d = reuse(prev, nd, o->shown_len, o->ops))) {
			added += show_as(t, nd, o->shown_len, d) == 0;
			continue;
		}
		o->n = nd;
		o->fr.obj = nd;
		o->fr.etag = nd->etag;
		o->fr.size = nd->size;
		o->fr.got = opening_got;
		o->fr.arg = o;
		o->ops->first_range(o->cfg, nd->size, &off, &len);
		if (opening_plan(o, off, len))
			break;
		frs[k++] = &o->fr;
	}
	fetch_ranges(src, opts, frs, k);
	for (i = 0; i < k; i++) {
		struct opening *o = &os[i];
		char why[512];

		if (!o->fr.err && o->ops->refused &&
		    o->ops->refused(o->priv, why, sizeof(why)))
			warn(ret_warnings,
			     "%s: %s; listed, its reads fail with EACCES",
			     o->n->key, why);
		if (!o->fr.err && add_decoded(t, o) == 0)
			added++;
		else if (o->fr.err)
			warn_failed(o, ret_warnings);
		if (o->priv)
			o->ops->free(o->priv);
		free(o->fr.buf);
	}
	free(frs);
	free(os);
	return added;
}

int decoders_scan_tree(struct decoders *ds, struct source *src,
		       const struct options *opts, struct tree *t,
		       struct tree *prev, char **ret_warnings)
{
	size_t count = tree_count(t), i, n = 0;
	struct node **nodes;
	int err;

	if (!ds || !ds->n)
		return 0;
	nodes = malloc(count * sizeof(*nodes));
	if (!nodes)
		return -ENOMEM;
	for (i = 1; i <= count; i++) {
		struct node *nd = tree_get(t, i);

		if (nd && !nd->is_dir)
			nodes[n++] = nd;
	}
	err = decoders_scan(ds, src, opts, t, nodes, n, prev, ret_warnings);
	free(nodes);
	return err;
}
