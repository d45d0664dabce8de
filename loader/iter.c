/* Streaming a model's tensors (wfs_iter_*()): groups of consecutive
 * tensors are loaded with the pipeline into one buffer, reused for the
 * next group, so memory stays the buffer (and the pipeline's staging)
 * whatever the model's size. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "errmsg.h"
#include "model.h"
#include "pipeline.h"
#include "reader.h"

struct wfs_iter {
	struct wfs_model *m;
	struct wfs_load_opts o;
	struct reader *reader;
	struct pipe_piece *pieces; /* of every tensor, at layout offsets */
	size_t npieces;
	size_t next_piece;
	void *buf; /* on o.device */
	size_t buf_bytes;
	bool owns_buf;
	size_t next;	     /* the next tensor to yield */
	size_t group_end;    /* tensors before it are in buf */
	uint64_t group_base; /* layout offset of buf's start */
	struct wfs_tensor cur;
};

void wfs_iter_free(struct wfs_iter *it)
{
	if (!it)
		return;
	if (it->owns_buf && it->buf) {
		if (it->o.device != WFS_DEVICE_CPU)
			cuda_free(it->buf);
		else
			free(it->buf);
	}
	reader_free(it->reader);
	free(it->pieces);
	free(it);
}

int wfs_iter_new(struct wfs_model *m, const struct wfs_load_opts *user,
		 struct wfs_iter **ret)
{
	struct wfs_iter *it;
	uint64_t most = 0;
	int r, dev = -1;

	err_clear();
	if (!m || !ret)
		return err_set(-EINVAL, "no model");
	it = calloc(1, sizeof(*it));
	if (!it)
		return err_set(-ENOMEM, "out of memory");
	it->m = m;
	r = load_opts_get(user, &it->o);
	if (r < 0)
		goto fail;
	model_release_data(m);
	model_layout(m, it->o.alignment);
	for (size_t i = 0; i < m->ntensors; i++)
		if (m->tensors[i].nbytes > most)
			most = m->tensors[i].nbytes;
	if (it->o.device != WFS_DEVICE_CPU) {
		dev = cuda_device_save();
		r = cuda_use(it->o.device);
		if (r < 0)
			goto fail;
	}
	if (it->o.dest) {
		if (it->o.dest_bytes < most) {
			r = err_set(-ENOSPC,
				    "buffer holds %zu bytes, the largest "
				    "tensor has %llu",
				    it->o.dest_bytes, (unsigned long long)most);
			goto fail;
		}
		if ((uintptr_t)it->o.dest % it->o.alignment) {
			r = err_set(-EINVAL,
				    "buffer is not aligned to %zu bytes",
				    it->o.alignment);
			goto fail;
		}
		it->buf = it->o.dest;
		it->buf_bytes = it->o.dest_bytes;
	} else {
		if (most > SIZE_MAX) {
			r = err_set(-ENOMEM, "tensor too large");
			goto fail;
		}
		it->buf_bytes = it->o.staging_bytes > most ? it->o.staging_bytes
							   : (size_t)most;
		if (it->o.device != WFS_DEVICE_CPU)
			r = cuda_malloc(it->buf_bytes ? it->buf_bytes : 1,
					&it->buf);
		else if (posix_memalign(&it->buf,
					it->o.alignment < 64 ? 64
							     : it->o.alignment,
					it->buf_bytes ? it->buf_bytes : 1))
			r = err_set(-ENOMEM, "cannot allocate %zu bytes",
				    it->buf_bytes);
		if (r < 0) {
			it->buf = NULL;
			goto fail;
		}
		it->owns_buf = true;
	}
	r = load_reader_new(m, &it->o, &it->reader);
	if (r == 0)
		r = load_pieces(m, &it->pieces, &it->npieces);
	if (r < 0)
		goto fail;
	cuda_device_restore(dev);
	*ret = it;
	return 0;
fail:
	cuda_device_restore(dev);
	wfs_iter_free(it);
	return r;
}

/* Load the tensors from it->next on that fit in the buffer. */
static int load_group(struct wfs_iter *it)
{
	struct wfs_model *m = it->m;
	uint64_t base = m->tensors[it->next].offset, end = base;
	size_t g1 = it->next, p0 = it->next_piece, p1, n;
	struct pipe_piece *pc = NULL;
	struct pipe_result res;
	struct pipe_params pp;
	int r = 0;

	while (g1 < m->ntensors &&
	       m->tensors[g1].offset + m->tensors[g1].nbytes - base <=
		       it->buf_bytes) {
		end = m->tensors[g1].offset + m->tensors[g1].nbytes;
		g1++;
	}
	for (p1 = p0; p1 < it->npieces && it->pieces[p1].dst_off < end; p1++)
		;
	n = p1 - p0;
	if (n) {
		pc = malloc(n * sizeof(*pc));
		if (!pc)
			return err_set(-ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			pc[i] = it->pieces[p0 + i];
			pc[i].dst_off -= base;
		}
		pp = (struct pipe_params){
			.reader = it->reader,
			.paths = (const char *const *)m->paths,
			.pieces = pc,
			.npieces = n,
			.device = it->o.device,
			.dest = it->buf,
			.threads = it->o.threads,
			.staging_bytes = it->o.staging_bytes,
			.chunk_bytes = it->o.chunk_bytes,
		};
		r = pipeline_run(&pp, &res);
		free(pc);
	}
	if (r < 0)
		return r;
	it->next_piece = p1;
	it->group_base = base;
	it->group_end = g1;
	return 0;
}

int wfs_iter_next(struct wfs_iter *it, const struct wfs_tensor **ret)
{
	const struct wfs_tensor *t;
	int r = 0, dev = -1;

	err_clear();
	if (!it || !ret)
		return err_set(-EINVAL, "no iterator");
	if (it->next >= it->m->ntensors)
		return 0;
	if (it->next >= it->group_end) {
		if (it->o.device != WFS_DEVICE_CPU) {
			dev = cuda_device_save();
			r = cuda_use(it->o.device);
		}
		if (r == 0)
			r = load_group(it);
		cuda_device_restore(dev);
		if (r < 0)
			return r;
	}
	t = &it->m->tensors[it->next++];
	it->cur = *t;
	it->cur.data = (char *)it->buf + (t->offset - it->group_base);
	*ret = &it->cur;
	return 1;
}
