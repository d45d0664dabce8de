/* Selections: a part of a model (wfs_select_*(), wfs_model_select()).
 * Applying one swaps the model's tensor table for the selected tensors,
 * with their sliced shapes, keeping the whole table to swap back; the
 * pipeline then reads only the selected ranges (model_select_pieces()). */
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "model.h"
#include "pipeline.h"

struct rule {
	char *pattern;
	unsigned dim;
	bool shard;    /* rank/world, else start/length */
	uint64_t a, b; /* rank, world or start, length */
};

struct wfs_select {
	char **names;
	size_t nnames;
	struct rule *rules;
	size_t nrules;
};

/* How one selected tensor is read: @rows ranges of @len bytes, @stride
 * apart, from @file_off. */
struct sel_geom {
	uint64_t file_off;
	uint64_t rows;
	uint64_t len;
	uint64_t stride;
};

struct model_selection {
	/* the whole table, while the model shows the selection */
	struct wfs_tensor *tensors;
	size_t ntensors;
	unsigned *tensor_file;
	uint64_t *tensor_file_off;
	size_t *by_name;
	/* per selected tensor */
	struct sel_geom *geom;
	uint64_t *shapes;
};

int wfs_select_new(struct wfs_select **ret)
{
	struct wfs_select *s = calloc(1, sizeof(*s));

	err_clear();
	if (!s)
		return err_set(-ENOMEM, "out of memory");
	*ret = s;
	return 0;
}

void wfs_select_free(struct wfs_select *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nnames; i++)
		free(s->names[i]);
	for (size_t i = 0; i < s->nrules; i++)
		free(s->rules[i].pattern);
	free(s->names);
	free(s->rules);
	free(s);
}

int wfs_select_name(struct wfs_select *s, const char *pattern)
{
	char **n;

	err_clear();
	if (!s || !pattern)
		return err_set(-EINVAL, "no selection or pattern");
	n = realloc(s->names, (s->nnames + 1) * sizeof(*n));
	if (!n)
		return err_set(-ENOMEM, "out of memory");
	s->names = n;
	n[s->nnames] = strdup(pattern);
	if (!n[s->nnames])
		return err_set(-ENOMEM, "out of memory");
	s->nnames++;
	return 0;
}

static int add_rule(struct wfs_select *s, const char *pattern, unsigned dim,
		    bool shard, uint64_t a, uint64_t b)
{
	struct rule *r;

	if (!s || !pattern)
		return err_set(-EINVAL, "no selection or pattern");
	r = realloc(s->rules, (s->nrules + 1) * sizeof(*r));
	if (!r)
		return err_set(-ENOMEM, "out of memory");
	s->rules = r;
	r[s->nrules] =
		(struct rule){ .dim = dim, .shard = shard, .a = a, .b = b };
	r[s->nrules].pattern = strdup(pattern);
	if (!r[s->nrules].pattern)
		return err_set(-ENOMEM, "out of memory");
	s->nrules++;
	return 0;
}

int wfs_select_shard(struct wfs_select *s, const char *pattern, unsigned dim,
		     uint64_t rank, uint64_t world)
{
	err_clear();
	if (!world || rank >= world)
		return err_set(-EINVAL, "shard %llu of %llu: no such shard",
			       (unsigned long long)rank,
			       (unsigned long long)world);
	return add_rule(s, pattern, dim, true, rank, world);
}

int wfs_select_slice(struct wfs_select *s, const char *pattern, unsigned dim,
		     uint64_t start, uint64_t length)
{
	err_clear();
	return add_rule(s, pattern, dim, false, start, length);
}

static bool selected(const struct wfs_select *s, const char *name)
{
	if (!s->nnames)
		return true;
	for (size_t i = 0; i < s->nnames; i++)
		if (!fnmatch(s->names[i], name, 0))
			return true;
	return false;
}

/* Slice tensor @t (at @file_off) by @s's first matching rule: its new
 * shape into @shape (t->ndim entries), its geometry into @g, its bytes
 * into @ret_bytes. */
static int slice(const struct wfs_select *s, const struct wfs_tensor *t,
		 uint64_t file_off, uint64_t *shape, struct sel_geom *g,
		 uint64_t *ret_bytes)
{
	const struct rule *r = NULL;
	unsigned bits = wfs_dtype_bits(t->dtype);
	uint64_t outer = 1, inner = 1, start, len, d;

	memcpy(shape, t->shape, t->ndim * sizeof(*shape));
	*g = (struct sel_geom){ .file_off = file_off,
				.rows = 1,
				.len = t->nbytes,
				.stride = t->nbytes };
	*ret_bytes = t->nbytes;
	for (size_t i = 0; i < s->nrules && !r; i++)
		if (!fnmatch(s->rules[i].pattern, t->name, 0))
			r = &s->rules[i];
	if (!r || (r->shard && r->dim >= t->ndim))
		return 0; /* whole (a shard rule replicates what it cannot cut) */
	if (r->dim >= t->ndim)
		return err_set(-EINVAL,
			       "tensor \"%s\" has %u dims: no dim %u "
			       "to slice",
			       t->name, t->ndim, r->dim);
	d = t->shape[r->dim];
	if (r->shard) {
		if (d % r->b)
			return err_set(-EINVAL,
				       "tensor \"%s\": dim %u (%llu) does not "
				       "divide into %llu shards",
				       t->name, r->dim, (unsigned long long)d,
				       (unsigned long long)r->b);
		len = d / r->b;
		start = r->a * len;
	} else {
		start = r->a;
		len = r->b;
		if (start > d || len > d - start)
			return err_set(-EINVAL,
				       "tensor \"%s\": [%llu, +%llu) is past "
				       "dim %u (%llu)",
				       t->name, (unsigned long long)start,
				       (unsigned long long)len, r->dim,
				       (unsigned long long)d);
	}
	for (unsigned k = 0; k < r->dim; k++)
		outer *= t->shape[k];
	for (unsigned k = r->dim + 1; k < t->ndim; k++)
		inner *= t->shape[k];
	/* Sizes are bounded by the file's (the parser checked the product
	 * of the shape against the data offsets): no overflow in bits. */
	inner *= bits;
	if ((start * inner) % 8 || (len * inner) % 8 || (d * inner) % 8)
		return err_set(-EINVAL,
			       "tensor \"%s\" (%s): a slice [%llu, +%llu) of "
			       "dim %u would split a byte of packed "
			       "%u-bit elements",
			       t->name, wfs_dtype_name(t->dtype),
			       (unsigned long long)start,
			       (unsigned long long)len, r->dim, bits);
	shape[r->dim] = len;
	g->rows = outer;
	g->stride = d * inner / 8;
	g->len = len * inner / 8;
	g->file_off = file_off + start * inner / 8;
	if (g->len == g->stride || outer == 1) {
		/* Contiguous: one range. */
		g->len *= outer;
		g->rows = 1;
		g->stride = g->len;
	}
	*ret_bytes = outer * (len * inner / 8);
	if (!*ret_bytes) {
		g->rows = 0;
		g->len = 0;
	}
	return 0;
}

static void selection_free(struct model_selection *ms)
{
	if (!ms)
		return;
	free(ms->geom);
	free(ms->shapes);
	free(ms);
}

void model_select_done(struct wfs_model *m)
{
	struct model_selection *ms = m->sel;

	if (!ms)
		return;
	free(m->tensors);
	free(m->tensor_file);
	free(m->tensor_file_off);
	free(m->by_name);
	m->tensors = ms->tensors;
	m->ntensors = ms->ntensors;
	m->tensor_file = ms->tensor_file;
	m->tensor_file_off = ms->tensor_file_off;
	m->by_name = ms->by_name;
	m->sel = NULL;
	selection_free(ms);
}

static int by_name_cmp(const void *a, const void *b, void *arg)
{
	const struct wfs_tensor *t = arg;

	return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

int wfs_model_select(struct wfs_model *m, const struct wfs_select *s)
{
	struct model_selection *ms = NULL;
	struct wfs_tensor *ft, *tensors = NULL;
	unsigned *tfile = NULL;
	uint64_t *toff = NULL, *shape;
	size_t *by_name = NULL, nf, n = 0, ndims = 0;
	int r = -ENOMEM;

	err_clear();
	if (!m)
		return err_set(-EINVAL, "no model");
	model_release_data(m);
	ft = m->sel ? m->sel->tensors : m->tensors;
	nf = m->sel ? m->sel->ntensors : m->ntensors;
	if (!s) {
		model_select_done(m);
		return 0;
	}
	ms = calloc(1, sizeof(*ms));
	for (size_t i = 0; i < nf; i++)
		ndims += ft[i].ndim;
	tensors = calloc(nf + 1, sizeof(*tensors));
	tfile = calloc(nf + 1, sizeof(*tfile));
	toff = calloc(nf + 1, sizeof(*toff));
	by_name = calloc(nf + 1, sizeof(*by_name));
	if (ms) {
		ms->geom = calloc(nf + 1, sizeof(*ms->geom));
		ms->shapes = calloc(ndims + 1, sizeof(*ms->shapes));
	}
	if (!ms || !tensors || !tfile || !toff || !by_name || !ms->geom ||
	    !ms->shapes) {
		err_set(-ENOMEM, "out of memory");
		goto fail;
	}
	shape = ms->shapes;
	for (size_t i = 0; i < nf; i++) {
		unsigned file =
			m->sel ? m->sel->tensor_file[i] : m->tensor_file[i];
		uint64_t off = m->sel ? m->sel->tensor_file_off[i]
				      : m->tensor_file_off[i];

		if (!selected(s, ft[i].name))
			continue;
		tensors[n] = ft[i];
		tensors[n].data = NULL;
		tensors[n].offset = 0;
		r = slice(s, &ft[i], off, shape, &ms->geom[n],
			  &tensors[n].nbytes);
		if (r < 0)
			goto fail;
		tensors[n].shape = shape;
		shape += ft[i].ndim;
		tfile[n] = file;
		toff[n] = ms->geom[n].file_off;
		by_name[n] = n;
		n++;
	}
	qsort_r(by_name, n, sizeof(*by_name), by_name_cmp, tensors);
	/* Swap in: the whole table moves to the selection. */
	if (m->sel) {
		struct model_selection *old = m->sel;

		ms->tensors = old->tensors;
		ms->ntensors = old->ntensors;
		ms->tensor_file = old->tensor_file;
		ms->tensor_file_off = old->tensor_file_off;
		ms->by_name = old->by_name;
		free(m->tensors);
		free(m->tensor_file);
		free(m->tensor_file_off);
		free(m->by_name);
		selection_free(old);
	} else {
		ms->tensors = m->tensors;
		ms->ntensors = m->ntensors;
		ms->tensor_file = m->tensor_file;
		ms->tensor_file_off = m->tensor_file_off;
		ms->by_name = m->by_name;
	}
	m->tensors = tensors;
	m->ntensors = n;
	m->tensor_file = tfile;
	m->tensor_file_off = toff;
	m->by_name = by_name;
	m->sel = ms;
	return 0;
fail:
	free(tensors);
	free(tfile);
	free(toff);
	free(by_name);
	selection_free(ms);
	return r < 0 ? r : -ENOMEM;
}

int model_select_pieces(const struct wfs_model *m, struct pipe_piece **ret,
			size_t *ret_n)
{
	const struct model_selection *ms = m->sel;
	struct pipe_piece *p;
	size_t n = 0, k = 0;

	for (size_t i = 0; i < m->ntensors; i++)
		n += ms->geom[i].len ? ms->geom[i].rows : 0;
	p = calloc(n + 1, sizeof(*p));
	if (!p)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < m->ntensors; i++) {
		const struct sel_geom *g = &ms->geom[i];

		if (!g->len)
			continue;
		for (uint64_t row = 0; row < g->rows; row++)
			p[k++] = (struct pipe_piece){
				.file = m->tensor_file[i],
				.file_off = g->file_off + row * g->stride,
				.len = g->len,
				.dst_off = m->tensors[i].offset + row * g->len,
			};
	}
	*ret = p;
	*ret_n = k;
	return 0;
}
