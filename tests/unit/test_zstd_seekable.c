/* Unit tests for common/zstd_seekable.c: objects are built here with libzstd
 * and the module's table writer, then parsed, looked up and decoded; corrupt
 * tables and frames must fail with the documented errno, never give wrong
 * bytes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "check.h"
#include "zstd_seekable.h"

struct obj {
	uint8_t *buf;
	size_t len;
};

/* Build a seekable object of @n bytes of @data in frames of @fsize bytes;
 * @zchk: zstd's own frame checksum; @skip_at: insert an 8-byte skippable
 * frame (decompressed size 0) before frame @skip_at (-1: none). */
static struct obj build(const uint8_t *data, size_t n, size_t fsize,
			int checksums, int grouped, int zchk, int skip_at)
{
	struct zstd_seekable_frame fr[256];
	uint32_t nf = 0;
	struct obj o;
	size_t off = 0, cap, k = 0;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	uint8_t *tmp = malloc(fsize ? fsize : 1);

	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, zchk);
	cap = ZSTD_compressBound(n) + 256 * 64 + 1024;
	o.buf = malloc(cap);
	o.len = 0;
	if (grouped) {
		zstd_seekable_group_header(2, o.buf);
		fr[nf++] = (struct zstd_seekable_frame){ .csize = 8 };
		o.len = 8;
	}
	while (off < n) {
		size_t m = n - off < fsize ? n - off : fsize, c;
		const void *src = data + off;

		if ((int)k == skip_at) {
			static const uint8_t skip[8] = { 0x50, 0x2a, 0x4d,
							 0x18 };

			memcpy(o.buf + o.len, skip, 8);
			o.len += 8;
			fr[nf++] = (struct zstd_seekable_frame){ .csize = 8 };
		}
		if (grouped) {
			zstd_seekable_group(tmp, src, m, 2);
			src = tmp;
		}
		c = ZSTD_compress2(cc, o.buf + o.len, cap - o.len, src, m);
		if (ZSTD_isError(c))
			abort();
		fr[nf].csize = c;
		fr[nf].dsize = m;
		fr[nf].checksum = zstd_seekable_checksum(src, m) ^
				  (grouped ? ZSTD_SEEKABLE_GROUP_MAGIC : 0);
		nf++;
		o.len += c;
		off += m;
		k++;
	}
	o.len += zstd_seekable_write_table(fr, nf, checksums, grouped,
					   o.buf + o.len, cap - o.len);
	ZSTD_freeCCtx(cc);
	free(tmp);
	return o;
}

static uint8_t *sample(size_t n, unsigned seed)
{
	uint8_t *d = malloc(n ? n : 1);
	uint32_t x = seed * 2654435761U + 1;
	size_t i;

	/* compressible but not trivial: small values with noise */
	for (i = 0; i < n; i++) {
		x = x * 1103515245U + 12345U;
		d[i] = (i & 1) ? (uint8_t)(0x3c + ((x >> 16) & 3))
			       : (uint8_t)(x >> 20);
	}
	return d;
}

/* Decode all of @o and compare with @data. @return 0 if equal, else the
 * first negative errno, or 1 for wrong bytes (which must never happen). */
static int decode_all(const struct obj *o, const uint8_t *data, size_t n)
{
	struct zstd_seekable *zs;
	struct zstd_seekable_dctx *dc;
	uint8_t *out;
	uint32_t i;
	int r;

	r = zstd_seekable_parse(o->buf, o->len, o->len, &zs);
	if (r)
		return r;
	if (zs->size != n) {
		zstd_seekable_free(zs);
		return -EPROTO;
	}
	out = malloc(n + 1);
	if (zstd_seekable_dctx_new(&dc))
		abort();
	for (i = 0; i < zs->nframes && r == 0; i++) {
		const struct zstd_seekable_frame *f = &zs->frames[i];
		ssize_t got = zstd_seekable_decode(dc, zs, i, o->buf + f->coff,
						   f->csize, out + f->doff,
						   n + 1 - f->doff);
		if (got < 0)
			r = got;
		else if ((size_t)got != f->dsize)
			r = 1;
	}
	if (r == 0 && memcmp(out, data, n) != 0)
		r = 1;
	free(out);
	zstd_seekable_dctx_free(dc);
	zstd_seekable_free(zs);
	return r;
}

static void test_roundtrip(void)
{
	static const size_t sizes[] = {
		0, 1, 4095, 4096, 4097, 3 * 4096, 50001
	};
	size_t s;
	int ck, gr, zc;

	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
		for (ck = 0; ck < 2; ck++)
			for (gr = 0; gr < 2; gr++)
				for (zc = 0; zc < 2; zc++) {
					uint8_t *d = sample(sizes[s], s);
					struct obj o = build(d, sizes[s], 4096,
							     ck, gr, zc, -1);
					int r = decode_all(&o, d, sizes[s]);

					CHECK(r == 0,
					      "roundtrip n=%zu ck=%d gr=%d "
					      "zc=%d: %d",
					      sizes[s], ck, gr, zc, r);
					free(o.buf);
					free(d);
				}
}

static void test_range(void)
{
	uint8_t *d = sample(10000, 1);
	/* frames of 1000 bytes; a skippable frame before data frame 3 */
	struct obj o = build(d, 10000, 1000, 1, 0, 0, 3);
	struct zstd_seekable *zs;
	uint32_t first, count;

	CHECK(decode_all(&o, d, 10000) == 0, "skippable frame in the middle");
	if (zstd_seekable_parse(o.buf, o.len, o.len, &zs)) {
		CHECK(0, "parse");
		return;
	}
	CHECK(zs->nframes == 11 && zs->size == 10000 && zs->max_dsize == 1000,
	      "nframes %u size %llu", zs->nframes,
	      (unsigned long long)zs->size);
	zstd_seekable_range(zs, 0, 1, &first, &count);
	CHECK(first == 0 && count == 1, "[0,1): %u+%u", first, count);
	zstd_seekable_range(zs, 999, 2, &first, &count);
	CHECK(first == 0 && count == 2, "[999,1001): %u+%u", first, count);
	/* frame 3 is the skippable one: data 3000.. is in frame 4 */
	zstd_seekable_range(zs, 3000, 1000, &first, &count);
	CHECK(first == 4 && count == 1, "[3000,4000): %u+%u", first, count);
	zstd_seekable_range(zs, 2500, 1000, &first, &count);
	CHECK(first == 2 && count == 3, "[2500,3500): %u+%u", first, count);
	zstd_seekable_range(zs, 9999, 100, &first, &count);
	CHECK(first == 10 && count == 1, "clamped at end: %u+%u", first, count);
	zstd_seekable_range(zs, 0, UINT64_MAX, &first, &count);
	CHECK(first == 0 && count == 11, "all: %u+%u", first, count);
	zstd_seekable_range(zs, 10000, 1, &first, &count);
	CHECK(count == 0, "past end: %u", count);
	zstd_seekable_range(zs, 5, 0, &first, &count);
	CHECK(count == 0, "empty: %u", count);
	CHECK(zs->frames[4].coff == zs->frames[3].coff + 8, "coff");
	zstd_seekable_free(zs);
	free(o.buf);
	free(d);
}

static void test_table_errors(void)
{
	uint8_t *d = sample(5000, 2);
	struct obj o = build(d, 5000, 1000, 1, 0, 0, -1);
	struct zstd_seekable *zs = NULL;
	uint8_t *t, save;
	uint64_t ts;
	size_t tlen = zstd_seekable_table_bytes(5, 1);

	t = o.buf + o.len - tlen;
	CHECK(zstd_seekable_table_size(o.buf, o.len, o.len, &ts) == 0 &&
		      ts == tlen,
	      "table size %llu", (unsigned long long)ts);
	CHECK(zstd_seekable_table_size(o.buf, 8, o.len, &ts) == -EINVAL,
	      "short footer");
	/* only the table, not the whole object: enough */
	CHECK(zstd_seekable_parse(t, tlen, o.len, &zs) == 0, "tail only");
	zstd_seekable_free(zs);
	CHECK(zstd_seekable_parse(t + 1, tlen - 1, o.len, &zs) == -EINVAL,
	      "tail too short");
	CHECK(zstd_seekable_parse(o.buf, o.len, o.len + 1, &zs) == -EPROTO,
	      "object size mismatch");
	CHECK(zstd_seekable_parse(o.buf, o.len, tlen - 1, &zs) == -EPROTO,
	      "object smaller than table");

#define FLIP(ptr, val, want, what)                                             \
	do {                                                                   \
		save = *(ptr);                                                 \
		*(ptr) = (val);                                                \
		CHECK(zstd_seekable_parse(o.buf, o.len, o.len, &zs) == (want), \
		      what);                                                   \
		*(ptr) = save;                                                 \
	} while (0)
	FLIP(o.buf + o.len - 1, 0x00, -ENOMSG, "seekable magic");
	FLIP(t, 0x5f, -EPROTO, "skippable magic");
	FLIP(t + 4, t[4] + 1, -EPROTO, "skippable frame size");
	FLIP(o.buf + o.len - 5, 0x80 | 0x04, -EPROTO, "reserved bit");
	FLIP(o.buf + o.len - 5, 0x80 | 0x03, 0, "unused bits are ignored");
	FLIP(o.buf + o.len - 9, 6, -EPROTO, "frame count too big");
	FLIP(o.buf + o.len - 9, 4, -EPROTO, "frame count too small");
	FLIP(o.buf + o.len - 6, 0x10, -EPROTO, "frame count over the limit");
	FLIP(o.buf + o.len - 5, 0x00, -EPROTO, "checksum flag cleared");
	FLIP(t + 8, t[8] + 1, -EPROTO, "compressed sizes off by one");
	FLIP(t + 8 + 7, 0x41, -EPROTO, "frame over 1 GiB");
	FLIP(o.buf + o.len - 5, 0x80 | 0x40, -EPROTO,
	     "grouped flag without header");
#undef FLIP
	zstd_seekable_free(zs);
	free(o.buf);
	free(d);

	{
		/* a data frame with csize 0 */
		struct zstd_seekable_frame fr[1] = { { .csize = 0,
						       .dsize = 5 } };
		uint8_t buf[64];
		ssize_t n = zstd_seekable_write_table(fr, 1, 0, 0, buf, 64);

		CHECK(zstd_seekable_parse(buf, n, n, &zs) == -EPROTO,
		      "dsize without csize");
		CHECK(zstd_seekable_write_table(fr, 1, 0, 0, buf, 10) ==
			      -EINVAL,
		      "write into small buffer");
	}
	{
		/* grouped: header with a bad magic, whole object given */
		uint8_t *g = sample(3000, 3);
		struct obj og = build(g, 3000, 1000, 1, 1, 0, -1);

		CHECK(decode_all(&og, g, 3000) == 0, "grouped ok");
		og.buf[4] = 4;
		CHECK(decode_all(&og, g, 3000) == -EPROTO, "element size 4");
		og.buf[4] = 2;
		/* bit 6 lost: a plain reader of grouped frames, whose
		 * checksums (XOR the magic) then fail, never wrong bytes */
		og.buf[og.len - 5] &= ~ZSTD_SEEKABLE_GROUPED_FLAG;
		CHECK(decode_all(&og, g, 3000) == -EBADMSG, "bit 6 cleared");
		og.buf[og.len - 5] |= ZSTD_SEEKABLE_GROUPED_FLAG;
		og.buf[0] ^= 1;
		CHECK(decode_all(&og, g, 3000) == -EPROTO, "grouped header");
		free(og.buf);
		free(g);
	}
}

static void test_frame_errors(void)
{
	uint8_t *d = sample(8000, 4);
	struct obj o = build(d, 8000, 2000, 1, 0, 0, -1);
	struct zstd_seekable *zs;
	struct zstd_seekable_dctx *dc;
	uint8_t out[4000];
	const struct zstd_seekable_frame *f;
	uint8_t *src;
	ssize_t r;

	if (zstd_seekable_parse(o.buf, o.len, o.len, &zs) ||
	    zstd_seekable_dctx_new(&dc)) {
		CHECK(0, "setup");
		return;
	}
	f = &zs->frames[1];
	src = malloc(2 * f->csize + 16);
	memcpy(src, o.buf + f->coff, f->csize);
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize, out, 2000) == 2000,
	      "good frame");
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize, out, 1999) ==
		      -EINVAL,
	      "dst too small");
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize - 1, out, 2000) ==
		      -EINVAL,
	      "src_len != csize");
	CHECK(zstd_seekable_decode(dc, zs, 4, src, f->csize, out, 2000) ==
		      -EINVAL,
	      "no such frame");
	/* checksum in the table wrong */
	zs->frames[1].checksum ^= 1;
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize, out, 2000) ==
		      -EBADMSG,
	      "checksum");
	zs->frames[1].checksum ^= 1;
	/* table says more/less than the frame holds */
	zs->frames[1].dsize = 2001;
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize, out, 4000) ==
		      -EBADMSG,
	      "dsize too big");
	zs->frames[1].dsize = 1999;
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize, out, 4000) ==
		      -EBADMSG,
	      "dsize too small");
	zs->frames[1].dsize = 2000;
	/* two frames in one entry */
	memcpy(src + f->csize, o.buf + zs->frames[2].coff, zs->frames[2].csize);
	zs->frames[1].csize += zs->frames[2].csize;
	r = zstd_seekable_decode(dc, zs, 1, src, zs->frames[1].csize, out,
				 4000);
	CHECK(r == -EBADMSG, "two frames in one entry: %zd", r);
	zs->frames[1].csize -= zs->frames[2].csize;
	/* garbage */
	memset(src, 0xa5, f->csize);
	CHECK(zstd_seekable_decode(dc, zs, 1, src, f->csize, out, 2000) ==
		      -EBADMSG,
	      "garbage");
	free(src);
	zstd_seekable_dctx_free(dc);
	zstd_seekable_free(zs);
	free(o.buf);
	free(d);
}

/* Every single-byte corruption of a small object (with checksums): the table
 * is refused, or a frame fails, or the bytes are right. Never wrong bytes. */
static void test_every_flip(void)
{
	int gr, zc;

	for (gr = 0; gr < 2; gr++)
		for (zc = 0; zc < 2; zc++) {
			uint8_t *d = sample(3000, 5);
			struct obj o = build(d, 3000, 700, 1, gr, zc, 2);
			size_t i;
			int bit, wrong = 0, caught = 0;

			for (i = 0; i < o.len; i++)
				for (bit = 0; bit < 8; bit += 3) {
					int r;

					o.buf[i] ^= 1 << bit;
					r = decode_all(&o, d, 3000);
					o.buf[i] ^= 1 << bit;
					if (r == 1)
						wrong++;
					else if (r < 0)
						caught++;
					CHECK(r <= 0,
					      "flip at %zu bit %d "
					      "(gr=%d zc=%d): wrong "
					      "bytes",
					      i, bit, gr, zc);
				}
			CHECK(wrong == 0 && caught > (int)o.len,
			      "flips: %d caught of %zu", caught, o.len * 3);
			free(o.buf);
			free(d);
		}
}

/* zstd_seekable_read() over random ranges, as a cache block fill would
 * use it: one contiguous run of compressed bytes in, the range out; plain
 * and @grouped (ungrouped into the range, cut frames included). */
static void test_read(int grouped)
{
	const size_t n = 50001;
	uint8_t *d = sample(n, 9), *out = malloc(n + 64);
	struct obj o = build(d, n, 4096, 1, grouped, grouped, 3);
	struct zstd_seekable *zs;
	struct zstd_seekable_dctx *dc;
	uint32_t x = 12345, first, count;
	int k, bad = 0;

	if (zstd_seekable_parse(o.buf, o.len, o.len, &zs) ||
	    zstd_seekable_dctx_new(&dc)) {
		CHECK(0, "setup");
		return;
	}
	for (k = 0; k < 3000; k++) {
		uint64_t off, len, want;
		const uint8_t *src;
		size_t src_len;
		ssize_t r;

		x = x * 1103515245U + 12345U;
		off = k == 0 ? 0 : (x >> 8) % (n + 10);
		x = x * 1103515245U + 12345U;
		len = k == 0	   ? n
		      : k % 7 == 0 ? UINT64_MAX / 2
				   : (x >> 8) % 20000;
		zstd_seekable_range(zs, off, len, &first, &count);
		src = count ? o.buf + zs->frames[first].coff : o.buf;
		src_len = count ? zs->frames[first + count - 1].coff +
					  zs->frames[first + count - 1].csize -
					  zs->frames[first].coff
				: 0;
		want = off >= n ? 0 : len > n - off ? n - off : len;
		memset(out, 0xee, n + 64);
		r = zstd_seekable_read(dc, zs, off, len, src, src_len, out);
		if (r != (ssize_t)want ||
		    memcmp(out, d + (off < n ? off : 0), want) ||
		    out[want] != 0xee) {
			if (bad++ < 5)
				CHECK(0, "read [%llu,+%llu): %zd",
				      (unsigned long long)off,
				      (unsigned long long)len, r);
		}
	}
	CHECK(bad == 0, "%d bad reads", bad);
	/* the wrong compressed length, a corrupt frame in the range */
	zstd_seekable_range(zs, 5000, 10000, &first, &count);
	{
		size_t sl = zs->frames[first + count - 1].coff +
			    zs->frames[first + count - 1].csize -
			    zs->frames[first].coff;
		uint8_t *copy = malloc(sl);

		memcpy(copy, o.buf + zs->frames[first].coff, sl);
		CHECK(zstd_seekable_read(dc, zs, 5000, 10000, copy, sl - 1,
					 out) == -EINVAL,
		      "short src");
		copy[sl / 2] ^= 0x10;
		CHECK(zstd_seekable_read(dc, zs, 5000, 10000, copy, sl, out) ==
			      -EBADMSG,
		      "corrupt frame in range");
		free(copy);
	}
	zstd_seekable_dctx_free(dc);
	zstd_seekable_free(zs);
	free(o.buf);
	free(out);
	free(d);
}

/* Reads in place: the compressed bytes at the end of the output buffer
 * (a cache block without a second buffer). Frames of 4 KiB, blocks of 4
 * frames; frame 9 holds random bytes (it grows compressed), so a block that
 * ends with it cannot be read in place, one that starts with it can. */
static void test_in_place(int grouped)
{
	const size_t fs = 4096, bs = 4 * fs, n = 13 * fs + 100;
	uint8_t *d = sample(n, 11), *out = malloc(bs + 64);
	struct obj o;
	struct zstd_seekable *zs;
	struct zstd_seekable_dctx *dc;
	uint32_t x = 777, first, count;
	uint64_t off;
	size_t i;
	int blocks = 0;

	for (i = 9 * fs; i < 10 * fs; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		d[i] = (uint8_t)x;
	}
	o = build(d, n, fs, 1, grouped, grouped, -1);
	if (zstd_seekable_parse(o.buf, o.len, o.len, &zs) ||
	    zstd_seekable_dctx_new(&dc)) {
		CHECK(0, "setup");
		return;
	}
	/* not frame-aligned, or cutting a frame, or past the end: no */
	CHECK(!zstd_seekable_in_place(zs, 1, bs), "unaligned start");
	CHECK(!zstd_seekable_in_place(zs, 0, bs - 1), "cut last frame");
	CHECK(!zstd_seekable_in_place(zs, 12 * fs, 2 * fs), "past the end");
	CHECK(!zstd_seekable_in_place(zs, 6 * fs, 4 * fs),
	      "ends incompressible");
	CHECK(zstd_seekable_in_place(zs, 9 * fs, 3 * fs),
	      "starts incompressible");
	CHECK(zstd_seekable_in_place(zs, 0, bs), "compressible");
	for (off = 0; off < n; off += bs / 2) {
		uint64_t len = n - off < bs ? n - off : bs;
		size_t sl;
		uint8_t *src;
		ssize_t r;

		if (!zstd_seekable_in_place(zs, off, len))
			continue;
		blocks++;
		zstd_seekable_range(zs, off, len, &first, &count);
		sl = zs->frames[first + count - 1].coff +
		     zs->frames[first + count - 1].csize -
		     zs->frames[first].coff;
		CHECK(sl <= len, "src fits");
		memset(out, 0xee, bs + 64);
		src = out + (len - sl);
		memcpy(src, o.buf + zs->frames[first].coff, sl);
		r = zstd_seekable_read(dc, zs, off, len, src, sl, out);
		CHECK(r == (ssize_t)len && !memcmp(out, d + off, len) &&
			      out[len] == 0xee,
		      "in place [%llu,+%llu): %zd", (unsigned long long)off,
		      (unsigned long long)len, r);
		/* a corrupt frame in place: an error, never success */
		memcpy(src, o.buf + zs->frames[first].coff, sl);
		src[sl - zs->frames[first + count - 1].csize / 2] ^= 0x08;
		CHECK(zstd_seekable_read(dc, zs, off, len, src, sl, out) ==
			      -EBADMSG,
		      "corrupt in place at %llu", (unsigned long long)off);
	}
	CHECK(blocks >= 4, "%d blocks read in place", blocks);
	zstd_seekable_dctx_free(dc);
	zstd_seekable_free(zs);
	free(o.buf);
	free(out);
	free(d);
}

static void test_group(void)
{
	static const size_t sizes[] = { 0, 1, 2, 3, 7, 64, 1001 };
	unsigned es;
	size_t s, i;

	for (es = 1; es <= 4; es++)
		for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			size_t n = sizes[s];
			uint8_t *a = sample(n, 7), *g = malloc(n + 1),
				*b = malloc(n + 1);

			zstd_seekable_group(g, a, n, es);
			zstd_seekable_ungroup(b, g, n, es);
			CHECK(memcmp(a, b, n) == 0,
			      "ungroup(group) es=%u n=%zu", es, n);
			/* the layout itself, past the vectorised steps too */
			for (i = 0; es == 2 && i < n / 2; i++)
				CHECK(g[i] == a[2 * i + 1] &&
					      g[n / 2 + i] == a[2 * i],
				      "grouped layout n=%zu at %zu", n, i);
			free(a);
			free(g);
			free(b);
		}
	{
		const uint8_t in[5] = { 0x11, 0xa1, 0x22, 0xa2, 0x33 };
		uint8_t out[5];

		zstd_seekable_group(out, in, 5, 2);
		CHECK(out[0] == 0xa1 && out[1] == 0xa2 && out[2] == 0x11 &&
			      out[3] == 0x22 && out[4] == 0x33,
		      "high bytes first, odd byte last");
	}
	/* a frame's worth (streamed to memory), to an aligned destination
	 * and to an odd one (not streamed), an odd trailing byte */
	{
		const size_t n = (1u << 20) + 37;
		uint8_t *a = sample(n, 8), *g = malloc(n), *b = malloc(n + 1);
		int k;

		zstd_seekable_group(g, a, n, 2);
		for (k = 0; k < 2; k++) {
			memset(b, 0, n + 1);
			zstd_seekable_ungroup(b + k, g, n, 2);
			CHECK(memcmp(a, b + k, n) == 0, "ungroup 1 MiB at +%d",
			      k);
		}
		free(a);
		free(g);
		free(b);
	}
	/* XXH64("") = 0xEF46DB3751D8E999 */
	CHECK(zstd_seekable_checksum("", 0) == 0x51D8E999U, "xxh64 low 32");
	(void)i;
}

int main(void)
{
	test_roundtrip();
	test_range();
	test_table_errors();
	test_frame_errors();
	test_every_flip();
	test_read(0);
	test_read(1);
	test_in_place(0);
	test_in_place(1);
	test_group();
	return 0;
}
