/* The zstd seekable format: seek table parsing, frame lookup and verified
 * decoding (see zstd_seekable.h). libzstd's codes are translated here only. */
#include "zstd_seekable.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader */
#include <zstd.h>
#include <zstd_errors.h>

#define SKIPPABLE_HEADER 8
/* Reserved bits 6-2 must be 0; bits 1-0 are "unused": not interpreted. */
#define RESERVED_BITS 0x7c

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

uint64_t zstd_seekable_table_bytes(uint32_t nframes, int checksums)
{
	return SKIPPABLE_HEADER + (uint64_t)nframes * (checksums ? 12 : 8) +
	       ZSTD_SEEKABLE_FOOTER_SIZE;
}

int zstd_seekable_table_size(const void *tail, size_t len, uint64_t object_size,
			     uint64_t *ret_size)
{
	const uint8_t *f;
	uint32_t nframes;
	uint8_t desc;
	uint64_t size;

	if (len < ZSTD_SEEKABLE_FOOTER_SIZE)
		return -EINVAL;
	f = (const uint8_t *)tail + len - ZSTD_SEEKABLE_FOOTER_SIZE;
	if (rd32(f + 5) != ZSTD_SEEKABLE_MAGIC)
		return -ENOMSG;
	nframes = rd32(f);
	desc = f[4];
	if (desc & RESERVED_BITS & ~ZSTD_SEEKABLE_GROUPED_FLAG)
		return -EPROTO;
	if (nframes > ZSTD_SEEKABLE_MAX_FRAMES)
		return -EPROTO;
	size = zstd_seekable_table_bytes(nframes,
					 desc & ZSTD_SEEKABLE_CHECKSUM_FLAG);
	if (size > object_size || size - SKIPPABLE_HEADER > UINT32_MAX)
		return -EPROTO;
	*ret_size = size;
	return 0;
}

int zstd_seekable_parse(const void *tail, size_t len, uint64_t object_size,
			struct zstd_seekable **ret)
{
	struct zstd_seekable *zs;
	const uint8_t *t, *e;
	uint64_t tsize, coff = 0, doff = 0;
	uint32_t i, n, esz;
	uint8_t desc;
	int r;

	r = zstd_seekable_table_size(tail, len, object_size, &tsize);
	if (r)
		return r;
	if (len < tsize)
		return -EINVAL;
	t = (const uint8_t *)tail + len - tsize;
	desc = t[tsize - 5];
	n = rd32(t + tsize - 9);
	if (rd32(t) != ZSTD_SEEKABLE_SKIPPABLE_MAGIC ||
	    rd32(t + 4) != tsize - SKIPPABLE_HEADER)
		return -EPROTO;

	zs = calloc(1, sizeof(*zs));
	if (!zs)
		return -ENOMEM;
	zs->frames = calloc(n ? n : 1, sizeof(*zs->frames));
	if (!zs->frames) {
		free(zs);
		return -ENOMEM;
	}
	zs->nframes = n;
	zs->has_checksum = !!(desc & ZSTD_SEEKABLE_CHECKSUM_FLAG);
	zs->object_size = object_size;
	zs->table_size = tsize;
	esz = zs->has_checksum ? 12 : 8;
	e = t + SKIPPABLE_HEADER;
	for (i = 0; i < n; i++, e += esz) {
		struct zstd_seekable_frame *fr = &zs->frames[i];

		fr->csize = rd32(e);
		fr->dsize = rd32(e + 4);
		fr->checksum = zs->has_checksum ? rd32(e + 8) : 0;
		fr->coff = coff;
		fr->doff = doff;
		/* A frame with data has at least a zstd frame header; the
		 * sums cannot overflow (2^27 frames of < 2^32 bytes). */
		if ((fr->dsize && fr->csize == 0) ||
		    fr->dsize > ZSTD_SEEKABLE_MAX_FRAME_SIZE)
			goto bad;
		coff += fr->csize;
		doff += fr->dsize;
		if (fr->dsize > zs->max_dsize)
			zs->max_dsize = fr->dsize;
	}
	if (coff != object_size - tsize)
		goto bad;
	zs->size = doff;
	if (desc & ZSTD_SEEKABLE_GROUPED_FLAG) {
		/* Frame 0 is the 8-byte header: its bytes sit at the start of
		 * the object, which @tail holds only when it holds it all. */
		if (n == 0 ||
		    zs->frames[0].csize != ZSTD_SEEKABLE_GROUP_HEADER_SIZE ||
		    zs->frames[0].dsize != 0)
			goto bad;
		zs->group = 2;
		if (len >= object_size) {
			const uint8_t *h =
				(const uint8_t *)tail + len - object_size;

			if (rd32(h) != ZSTD_SEEKABLE_GROUP_MAGIC || h[4] != 2 ||
			    h[5] || h[6] || h[7])
				goto bad;
		}
	}
	*ret = zs;
	return 0;
bad:
	zstd_seekable_free(zs);
	return -EPROTO;
}

void zstd_seekable_free(struct zstd_seekable *zs)
{
	if (!zs)
		return;
	free(zs->frames);
	free(zs);
}

void zstd_seekable_range(const struct zstd_seekable *zs, uint64_t off,
			 uint64_t len, uint32_t *ret_first, uint32_t *ret_count)
{
	uint64_t end;
	uint32_t lo, hi, first;

	*ret_first = 0;
	*ret_count = 0;
	if (len == 0 || off >= zs->size)
		return;
	end = len > zs->size - off ? zs->size : off + len;
	/* first: the first frame whose data ends after @off */
	lo = 0;
	hi = zs->nframes;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct zstd_seekable_frame *f = &zs->frames[mid];

		if (f->doff + f->dsize <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	first = lo;
	/* last + 1: the first frame starting at or after @end */
	hi = zs->nframes;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (zs->frames[mid].doff < end)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_first = first;
	*ret_count = lo - first;
}

struct zstd_seekable_dctx {
	ZSTD_DCtx *dctx;
	uint8_t *scratch; /* a frame cut by a read's range */
	size_t scratch_cap;
	void *gscratch; /* the grouped variant's frame before ungrouping */
	size_t gscratch_cap;
};

int zstd_seekable_dctx_new(struct zstd_seekable_dctx **ret)
{
	struct zstd_seekable_dctx *dc = calloc(1, sizeof(*dc));

	if (!dc)
		return -ENOMEM;
	dc->dctx = ZSTD_createDCtx();
	if (!dc->dctx) {
		free(dc);
		return -ENOMEM;
	}
	*ret = dc;
	return 0;
}

void zstd_seekable_dctx_free(struct zstd_seekable_dctx *dc)
{
	if (!dc)
		return;
	ZSTD_freeDCtx(dc->dctx);
	free(dc->scratch);
	free(dc->gscratch);
	free(dc);
}

ssize_t zstd_seekable_decode(struct zstd_seekable_dctx *dc,
			     const struct zstd_seekable *zs, uint32_t i,
			     const void *src, size_t src_len, void *dst,
			     size_t dst_cap)
{
	const struct zstd_seekable_frame *f;
	unsigned long long content;
	ZSTD_frameHeader fh;
	int verified = 0;
	void *out = dst;
	uint32_t expect;
	size_t r;

	if (i >= zs->nframes)
		return -EINVAL;
	f = &zs->frames[i];
	expect = f->checksum ^ (zs->group ? ZSTD_SEEKABLE_GROUP_MAGIC : 0);
	if (src_len != f->csize || dst_cap < f->dsize)
		return -EINVAL;
	if (f->dsize == 0)
		return 0;
	/* Exactly one zstd frame, no trailing bytes or second frame. */
	r = ZSTD_findFrameCompressedSize(src, src_len);
	if (ZSTD_isError(r) || r != src_len)
		return -EBADMSG;
	content = ZSTD_getFrameContentSize(src, src_len);
	if (content == ZSTD_CONTENTSIZE_ERROR ||
	    (content != ZSTD_CONTENTSIZE_UNKNOWN && content != f->dsize))
		return -EBADMSG;
	/* A zstd frame with its own checksum (the same XXH64 low 32 bits, of
	 * what it decodes to: grouped bytes for grouped frames) is verified by
	 * libzstd: if the table's agrees with it, hashing again would check
	 * nothing more. */
	if (zs->has_checksum && ZSTD_getFrameHeader(&fh, src, src_len) == 0 &&
	    fh.checksumFlag) {
		if (rd32((const uint8_t *)src + src_len - 4) != expect)
			return -EBADMSG;
		verified = 1;
	}
	if (zs->group) {
		if (dc->gscratch_cap < f->dsize) {
			void *p = malloc(f->dsize);

			if (!p)
				return -ENOMEM;
			free(dc->gscratch);
			dc->gscratch = p;
			dc->gscratch_cap = f->dsize;
		}
		out = dc->gscratch;
	}
	/* Capacity exactly dsize: a frame that holds more fails here. */
	r = ZSTD_decompressDCtx(dc->dctx, out, f->dsize, src, src_len);
	if (ZSTD_isError(r)) {
		if (ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
			return -ENOMEM;
		return -EBADMSG;
	}
	if (r != f->dsize)
		return -EBADMSG;
	if (zs->has_checksum && !verified &&
	    zstd_seekable_checksum(out, f->dsize) != expect)
		return -EBADMSG;
	if (zs->group)
		zstd_seekable_ungroup(dst, out, f->dsize, zs->group);
	return f->dsize;
}

ssize_t zstd_seekable_read(struct zstd_seekable_dctx *dc,
			   const struct zstd_seekable *zs, uint64_t off,
			   uint64_t len, const void *src, size_t src_len,
			   void *dst)
{
	const uint8_t *in = src;
	uint8_t *out = dst;
	uint64_t end, base;
	uint32_t first, count, i;

	zstd_seekable_range(zs, off, len, &first, &count);
	if (count == 0)
		return 0;
	end = len > zs->size - off ? zs->size : off + len;
	base = zs->frames[first].coff;
	if (zs->frames[first + count - 1].coff +
		    zs->frames[first + count - 1].csize - base !=
	    src_len)
		return -EINVAL;
	for (i = first; i < first + count; i++) {
		const struct zstd_seekable_frame *f = &zs->frames[i];
		const uint8_t *fsrc = in + (f->coff - base);
		uintptr_t o = (uintptr_t)out + (f->doff - off);
		ssize_t r;

		if (f->dsize == 0)
			continue;
		/* Straight into @dst, unless the frame is cut, or (in place)
		 * its output would overwrite its own input while it is read:
		 * a grouped frame goes through the context's scratch anyway. */
		if (f->doff >= off && f->doff + f->dsize <= end &&
		    (zs->group || o + f->dsize <= (uintptr_t)fsrc ||
		     o >= (uintptr_t)fsrc + f->csize)) {
			r = zstd_seekable_decode(dc, zs, i, fsrc, f->csize,
						 out + (f->doff - off),
						 f->dsize);
		} else {
			uint64_t from = f->doff > off ? f->doff : off;
			uint64_t to = f->doff + f->dsize < end
					      ? f->doff + f->dsize
					      : end;

			if (dc->scratch_cap < f->dsize) {
				uint8_t *p = malloc(f->dsize);

				if (!p)
					return -ENOMEM;
				free(dc->scratch);
				dc->scratch = p;
				dc->scratch_cap = f->dsize;
			}
			r = zstd_seekable_decode(dc, zs, i, fsrc, f->csize,
						 dc->scratch, f->dsize);
			if (r >= 0)
				memcpy(out + (from - off),
				       dc->scratch + (from - f->doff),
				       to - from);
		}
		if (r < 0)
			return r;
	}
	return end - off;
}

int zstd_seekable_in_place(const struct zstd_seekable *zs, uint64_t off,
			   uint64_t len)
{
	const struct zstd_seekable_frame *last;
	uint32_t first, count, i;
	int64_t slack = 0;

	zstd_seekable_range(zs, off, len, &first, &count);
	if (!count)
		return 0;
	last = &zs->frames[first + count - 1];
	if (zs->frames[first].doff != off ||
	    last->doff + last->dsize != off + len)
		return 0;
	/* Frame i's output ends where the input of the frames after it
	 * begins, or before: each suffix of the run is no bigger compressed
	 * than decompressed (the whole run included: @src fits in @dst). */
	for (i = first + count; i-- > first;) {
		slack += (int64_t)zs->frames[i].dsize - zs->frames[i].csize;
		if (slack < 0)
			return 0;
	}
	return 1;
}

ssize_t zstd_seekable_write_table(const struct zstd_seekable_frame *frames,
				  uint32_t nframes, int checksums, int grouped,
				  void *buf, size_t cap)
{
	uint64_t size = zstd_seekable_table_bytes(nframes, checksums);
	uint8_t *p = buf;
	uint32_t i;

	if (nframes > ZSTD_SEEKABLE_MAX_FRAMES || cap < size)
		return -EINVAL;
	wr32(p, ZSTD_SEEKABLE_SKIPPABLE_MAGIC);
	wr32(p + 4, size - SKIPPABLE_HEADER);
	p += SKIPPABLE_HEADER;
	for (i = 0; i < nframes; i++) {
		wr32(p, frames[i].csize);
		wr32(p + 4, frames[i].dsize);
		p += 8;
		if (checksums) {
			wr32(p, frames[i].checksum);
			p += 4;
		}
	}
	wr32(p, nframes);
	p[4] = (checksums ? ZSTD_SEEKABLE_CHECKSUM_FLAG : 0) |
	       (grouped ? ZSTD_SEEKABLE_GROUPED_FLAG : 0);
	wr32(p + 5, ZSTD_SEEKABLE_MAGIC);
	return size;
}

void zstd_seekable_group_header(unsigned esize,
				uint8_t out[ZSTD_SEEKABLE_GROUP_HEADER_SIZE])
{
	wr32(out, ZSTD_SEEKABLE_GROUP_MAGIC);
	out[4] = esize;
	out[5] = out[6] = out[7] = 0;
}

void zstd_seekable_group(void *dst, const void *src, size_t n, unsigned esize)
{
	const uint8_t *s = src;
	uint8_t *d = dst;
	size_t count = n / esize, i;
	unsigned k;

	if (esize == 2) {
		i = 0;
#ifdef __SSE2__
		/* 16 elements a step: low bytes masked, high bytes shifted
		 * down, each packed into 16 bytes */
		for (; i + 16 <= count; i += 16) {
			__m128i a =
				_mm_loadu_si128((const __m128i *)(s + 2 * i));
			__m128i b = _mm_loadu_si128(
				(const __m128i *)(s + 2 * i + 16));
			__m128i m = _mm_set1_epi16(0xff);

			_mm_storeu_si128(
				(__m128i *)(d + i),
				_mm_packus_epi16(_mm_srli_epi16(a, 8),
						 _mm_srli_epi16(b, 8)));
			_mm_storeu_si128((__m128i *)(d + count + i),
					 _mm_packus_epi16(_mm_and_si128(a, m),
							  _mm_and_si128(b, m)));
		}
#endif
		for (; i < count; i++) {
			d[i] = s[2 * i + 1];
			d[count + i] = s[2 * i];
		}
	} else {
		for (k = 0; k < esize; k++)
			for (i = 0; i < count; i++)
				d[k * count + i] = s[i * esize + esize - 1 - k];
	}
	memcpy(d + count * esize, s + count * esize, n - count * esize);
}

/* Ungrouping at least so many bytes streams them to memory. */
#define UNGROUP_STREAM_MIN (256u << 10)

void zstd_seekable_ungroup(void *dst, const void *src, size_t n, unsigned esize)
{
	const uint8_t *s = src;
	uint8_t *d = dst;
	size_t count = n / esize, i;
	unsigned k;

	if (esize == 2) {
		i = 0;
#ifdef __SSE2__
		/* A frame's worth into a cache block: stores that bypass the
		 * cache (no read of the destination's lines first) take half
		 * the time; @src, the decoder's output, is in the cache. */
		if (n >= UNGROUP_STREAM_MIN && !((uintptr_t)d & 15)) {
			for (; i + 16 <= count; i += 16) {
				__m128i hi = _mm_loadu_si128(
					(const __m128i *)(s + i));
				__m128i lo = _mm_loadu_si128(
					(const __m128i *)(s + count + i));

				_mm_stream_si128((__m128i *)(d + 2 * i),
						 _mm_unpacklo_epi8(lo, hi));
				_mm_stream_si128((__m128i *)(d + 2 * i + 16),
						 _mm_unpackhi_epi8(lo, hi));
			}
			_mm_sfence();
		}
		/* 16 elements a step: interleave 16 low and 16 high bytes */
		for (; i + 16 <= count; i += 16) {
			__m128i hi = _mm_loadu_si128((const __m128i *)(s + i));
			__m128i lo = _mm_loadu_si128(
				(const __m128i *)(s + count + i));

			_mm_storeu_si128((__m128i *)(d + 2 * i),
					 _mm_unpacklo_epi8(lo, hi));
			_mm_storeu_si128((__m128i *)(d + 2 * i + 16),
					 _mm_unpackhi_epi8(lo, hi));
		}
#endif
		for (; i < count; i++) {
			d[2 * i + 1] = s[i];
			d[2 * i] = s[count + i];
		}
	} else {
		for (k = 0; k < esize; k++)
			for (i = 0; i < count; i++)
				d[i * esize + esize - 1 - k] = s[k * count + i];
	}
	memcpy(d + count * esize, s + count * esize, n - count * esize);
}

uint32_t zstd_seekable_checksum(const void *buf, size_t n)
{
	return (uint32_t)XXH64(buf, n, 0);
}
