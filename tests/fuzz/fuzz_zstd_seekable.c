/* Fuzz the seekable-zstd seek table parser and frame decoder
 * (common/zstd_seekable.c). Each input is a whole object: its tail is parsed
 * as a seek table (first the footer alone, then the table alone, then the
 * whole input), every range lookup must stay inside the table, every frame
 * is decoded into a buffer of exactly its size (grouped frames ungrouped),
 * and a range cut mid-frame is read; a grouped object that parses whole
 * starts with its header. It must not crash, leak or read out of bounds, and
 * what parses must be self-consistent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "zstd_seekable.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct zstd_seekable *zs = NULL, *whole = NULL;
	struct zstd_seekable_dctx *dc = NULL;
	uint64_t tsize, sum = 0;
	uint32_t i, first, count;
	int r;

	if (size < ZSTD_SEEKABLE_FOOTER_SIZE)
		return 0;
	r = zstd_seekable_table_size(data, size, size, &tsize);
	if (r)
		return 0;
	if (tsize > size)
		abort();
	/* the table alone, as the mount would fetch it */
	r = zstd_seekable_parse(data + size - tsize, tsize, size, &zs);
	/* the whole object is checked for more (the grouped variant's
	 * header), never for less */
	if (zstd_seekable_parse(data, size, size, &whole) == 0 && r != 0)
		abort();
	if (r)
		goto out;
	for (i = 0; i < zs->nframes; i++) {
		const struct zstd_seekable_frame *f = &zs->frames[i];

		if (f->coff + f->csize > size - tsize || f->doff != sum)
			abort();
		sum += f->dsize;
	}
	if (sum != zs->size)
		abort();
	zstd_seekable_range(zs, size % (zs->size + 1), size, &first, &count);
	if (count && (first >= zs->nframes || first + count > zs->nframes))
		abort();
	if (!whole || zstd_seekable_dctx_new(&dc))
		goto out;
	/* a whole grouped object that parses starts with its header */
	if (whole->group &&
	    (whole->group != 2 || size < 8 || memcmp(data, "WZG1\2\0\0\0", 8)))
		abort();
	for (i = 0; i < whole->nframes && i < 64; i++) {
		const struct zstd_seekable_frame *f = &whole->frames[i];
		uint8_t *out;
		ssize_t n;

		/* a frame claiming more than 64x its input cannot be one of
		 * these small inputs: skip the allocation (speed) */
		if (f->dsize > (1u << 20) && f->dsize / 64 > f->csize)
			continue;
		out = malloc(f->dsize ? f->dsize : 1);
		if (!out)
			break;
		n = zstd_seekable_decode(dc, whole, i, data + f->coff, f->csize,
					 out, f->dsize);
		if (n >= 0 && (size_t)n != f->dsize)
			abort();
		free(out);
	}
	/* a read of a range cut mid-frame at both ends, when small */
	zstd_seekable_range(whole, size % (whole->size + 1), 3000, &first,
			    &count);
	if (count && whole->max_dsize <= (1u << 20)) {
		const struct zstd_seekable_frame *a = &whole->frames[first];
		const struct zstd_seekable_frame *z =
			&whole->frames[first + count - 1];
		uint8_t *out = malloc(3000);
		ssize_t n;

		if (!out)
			goto out;
		n = zstd_seekable_read(dc, whole, size % (whole->size + 1),
				       3000, data + a->coff,
				       z->coff + z->csize - a->coff, out);
		if (n > 3000)
			abort();
		free(out);
	}
out:
	zstd_seekable_dctx_free(dc);
	zstd_seekable_free(zs);
	zstd_seekable_free(whole);
	return 0;
}
