/* Unit tests for common/sealed.c: objects are sealed here (stored, zstd and
 * grouped frames), read back whole and in pieces (and streamed: stored
 * frames opened as their bytes arrive), then attacked one way at a time;
 * every attack must fail with the documented errno and give no bytes. Key
 * files: formats and permissions. The disk tier's sealed blocks. Signed
 * objects: verified, refused when unsigned, foreign or altered, and a
 * frame sealed again by a key holder (a valid GCM tag) caught by its
 * signed digest. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <zstd.h>

#include "check.h"
#include "sealed.h"

#define MAXF 64

struct obj {
	uint8_t *buf;
	size_t len;
	uint32_t nframes;
	uint64_t fend[MAXF]; /* each frame's end in the object */
};

static const uint8_t key_a[SEALED_KEY_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8 };
static const uint8_t key_b[SEALED_KEY_SIZE] = { 8, 7, 6, 5, 4, 3, 2, 1 };

/* Seal @n bytes of @data in frames of @fsize with @key and @flags; signed
 * by @sg unless it is NULL. */
static struct obj seal_signed(const uint8_t *data, size_t n, size_t fsize,
			      const uint8_t *key, unsigned flags,
			      const struct sealed_signer *sg)
{
	uint8_t digests[MAXF * SEALED_DIGEST_SIZE];
	struct zstd_seekable_frame fr[MAXF];
	struct sealed_writer w;
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(n) + MAXF * 64 + 1024, off = 0;
	uint8_t *inner = malloc(ZSTD_compressBound(fsize));
	uint8_t *grp = malloc(fsize);
	struct obj o = { .buf = malloc(cap) };
	ssize_t r;

	CHECK(cc && inner && grp && o.buf);
	if (sg)
		flags |= SEALED_FLAG_SIGNED;
	CHECK_EQ(sealed_writer_init(&w, key, flags), 0);
	while (off < n) {
		size_t m = n - off < fsize ? n - off : fsize, ilen = m;
		const uint8_t *src = data + off;

		CHECK(o.nframes < MAXF);
		if (flags & SEALED_FLAG_GROUPED) {
			zstd_seekable_group(grp, src, m, 2);
			src = grp;
		}
		if (flags & SEALED_FLAG_ZSTD) {
			ilen = ZSTD_compress2(cc, inner, ZSTD_compressBound(m),
					      src, m);
			CHECK(!ZSTD_isError(ilen));
			src = inner;
		}
		r = sealed_seal(&w, o.nframes, src, ilen, m, o.buf + o.len);
		CHECK_EQ(r, ilen + SEALED_TAG_SIZE);
		sealed_frame_digest(o.buf + o.len, r,
				    digests + o.nframes * SEALED_DIGEST_SIZE);
		fr[o.nframes] = (struct zstd_seekable_frame){ .csize = ilen,
							      .dsize = m };
		o.len += r;
		o.fend[o.nframes++] = o.len;
		off += m;
	}
	if (sg)
		r = sealed_write_signed_tail(&w, fr, o.nframes, digests, sg,
					     o.buf + o.len, cap - o.len);
	else
		r = sealed_write_tail(&w, fr, o.nframes, o.buf + o.len,
				      cap - o.len);
	CHECK_EQ(r, sealed_tail_bytes_flags(o.nframes, flags));
	o.len += r;
	sealed_writer_done(&w);
	ZSTD_freeCCtx(cc);
	free(inner);
	free(grp);
	return o;
}

static struct obj seal(const uint8_t *data, size_t n, size_t fsize,
		       const uint8_t *key, unsigned flags)
{
	return seal_signed(data, n, fsize, key, flags, NULL);
}

/* Read [off, off + len) of @o with @key, trusting @t's signers (NULL: no
 * signature checked): the bytes or a negative errno. */
static ssize_t read_trusted(const struct obj *o, const uint8_t *key,
			    const struct sealed_trust *t, uint64_t off,
			    uint64_t len, uint8_t *dst)
{
	struct sealed *s = NULL;
	struct sealed_dctx *dc = NULL;
	const struct zstd_seekable_frame *f;
	uint32_t first, count;
	ssize_t r;

	r = t ? sealed_parse_trusted(o->buf, o->len, o->len, key, t, &s)
	      : sealed_parse(o->buf, o->len, o->len, key, &s);
	if (r)
		return r;
	CHECK_EQ(sealed_dctx_new(&dc), 0);
	zstd_seekable_range(&s->stored, off, len, &first, &count);
	r = 0;
	if (count) {
		f = &s->stored.frames[first];
		r = sealed_read(
			dc, s, off, len, o->buf + f->coff,
			s->stored.frames[first + count - 1].coff +
				s->stored.frames[first + count - 1].csize -
				f->coff,
			dst);
	}
	sealed_dctx_free(dc);
	sealed_free(s);
	return r;
}

/* Read [off, off + len) of @o with @key: the bytes or a negative errno. */
static ssize_t read_range(const struct obj *o, const uint8_t *key, uint64_t off,
			  uint64_t len, uint8_t *dst)
{
	return read_trusted(o, key, NULL, off, len, dst);
}

static uint8_t *weights(size_t n)
{
	uint8_t *p = malloc(n);
	uint32_t x = 12345;
	size_t i;

	CHECK(p);
	/* BF16-like: a few exponents, noisy mantissas. */
	for (i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		p[i] = i & 1 ? 0x3c + (x >> 29) : x >> 16;
	}
	return p;
}

static void test_round_trips(void)
{
	static const unsigned flags[] = {
		0, SEALED_FLAG_ZSTD, SEALED_FLAG_ZSTD | SEALED_FLAG_GROUPED
	};
	const size_t n = 300001, fsize = 65536;
	uint8_t *data = weights(n), *out = malloc(n);
	size_t k;

	CHECK(out);
	for (k = 0; k < 3; k++) {
		struct obj o = seal(data, n, fsize, key_a, flags[k]);
		static const uint64_t cuts[][2] = {
			{ 0, 300001 },	  { 1, 10 },	      { 65535, 2 },
			{ 65536, 65536 }, { 100000, 200001 }, { 299999, 50 },
		};
		size_t c;

		CHECK_EQ(o.nframes, 5);
		for (c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
			uint64_t want = cuts[c][1];

			if (cuts[c][0] + want > n)
				want = n - cuts[c][0];
			memset(out, 0xee, n);
			CHECK_EQ(read_range(&o, key_a, cuts[c][0], cuts[c][1],
					    out),
				 want);
			CHECK(!memcmp(out, data + cuts[c][0], want),
			      "flags %u cut %zu", flags[k], c);
		}
		CHECK_EQ(read_range(&o, key_a, n, 10, out), 0);
		free(o.buf);
	}
	/* An empty file: no frames, a valid tail. */
	{
		struct obj o = seal(data, 0, fsize, key_a, 0);
		struct sealed *s;

		CHECK_EQ(o.len, sealed_tail_bytes(0));
		CHECK_EQ(sealed_parse(o.buf, o.len, o.len, key_a, &s), 0);
		CHECK_EQ(s->stored.size, 0);
		sealed_free(s);
		free(o.buf);
	}
	free(data);
	free(out);
}

/* Stream [off, off + len) of @o (stored frames) in pieces of @piece bytes
 * (odd sizes: pieces end anywhere in a frame or its tag); a negative
 * @flip flips nothing, else that byte of the streamed range.
 * @return the first error of put or end, or 0. */
static int stream_range(const struct obj *o, const struct sealed_trust *t,
			uint64_t off, uint64_t len, size_t piece, long flip,
			uint8_t *dst)
{
	struct sealed *s = NULL;
	struct sealed_stream *st = NULL;
	uint32_t first, count;
	uint64_t from, to, at;
	uint8_t *src;
	int r;

	CHECK_EQ(t ? sealed_parse_trusted(o->buf, o->len, o->len, key_a, t, &s)
		   : sealed_parse(o->buf, o->len, o->len, key_a, &s),
		 0);
	zstd_seekable_range(&s->stored, off, len, &first, &count);
	CHECK(count);
	from = s->stored.frames[first].coff;
	to = s->stored.frames[first + count - 1].coff +
	     s->stored.frames[first + count - 1].csize;
	src = malloc(to - from);
	CHECK(src);
	memcpy(src, o->buf + from, to - from);
	if (flip >= 0)
		src[flip] ^= 1;
	CHECK_EQ(sealed_stream_new(s, off, len, dst, &st), 0);
	r = 0;
	for (at = 0; !r && at < to - from; at += piece)
		r = sealed_stream_put(st, (char *)src + at,
				      to - from - at < piece ? to - from - at
							     : piece);
	if (!r)
		r = sealed_stream_end(st);
	sealed_stream_free(st);
	sealed_free(s);
	free(src);
	return r;
}

/* Streaming opens the same bytes sealed_read() does, in pieces of any
 * size, and fails as it does: a flipped bit anywhere, too few or too many
 * bytes; zstd objects are not streamed. */
static void test_stream(void)
{
	const size_t n = 300001, fsize = 65536;
	uint8_t *data = weights(n), *out = malloc(n);
	struct obj o = seal(data, n, fsize, key_a, 0);
	struct obj z = seal(data, n, fsize, key_a, SEALED_FLAG_ZSTD);
	static const uint64_t cuts[][2] = {
		{ 0, 300001 },	  { 1, 10 },	      { 65535, 2 },
		{ 65536, 65536 }, { 100000, 200001 }, { 299999, 50 },
	};
	static const size_t pieces[] = { 1, 15, 16, 17, 4096, 65553, 1 << 20 };
	struct sealed *s;
	struct sealed_stream *st = NULL;
	size_t c, p;

	CHECK(out);
	for (c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
		uint64_t want = cuts[c][0] + cuts[c][1] > n ? n - cuts[c][0]
							    : cuts[c][1];

		for (p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
			if (pieces[p] == 1 && cuts[c][1] > 70000)
				continue; /* byte by byte: slow, same code */
			memset(out, 0xee, n);
			CHECK(!stream_range(&o, NULL, cuts[c][0], cuts[c][1],
					    pieces[p], -1, out),
			      "cut %zu piece %zu", c, pieces[p]);
			CHECK(!memcmp(out, data + cuts[c][0], want),
			      "cut %zu piece %zu", c, pieces[p]);
		}
	}
	/* A flipped byte: in the first frame, in a tag, in the last frame. */
	CHECK_EQ(stream_range(&o, NULL, 0, n, 4096, 7, out), -EBADMSG);
	CHECK_EQ(stream_range(&o, NULL, 0, n, 4096, fsize + 3, out), -EBADMSG);
	CHECK_EQ(stream_range(&o, NULL, 100000, 200001, 999,
			      (long)(o.fend[4] - o.fend[0] - 30), out),
		 -EBADMSG);
	/* Too few bytes, too many, and every call fails after a failure. */
	CHECK_EQ(sealed_parse(o.buf, o.len, o.len, key_a, &s), 0);
	CHECK_EQ(sealed_stream_new(s, 0, fsize, out, &st), 0);
	CHECK_EQ(sealed_stream_put(st, o.buf, o.fend[0] - 1), 0);
	CHECK_EQ(sealed_stream_end(st), -EINVAL);
	CHECK_EQ(sealed_stream_put(st, o.buf + o.fend[0] - 1, 2), -EINVAL);
	CHECK_EQ(sealed_stream_put(st, o.buf, 1), -EINVAL);
	CHECK_EQ(sealed_stream_end(st), -EINVAL);
	sealed_stream_free(st);
	CHECK_EQ(sealed_stream_new(s, n, 10, out, &st), -EINVAL);
	sealed_free(s);
	CHECK_EQ(sealed_parse(z.buf, z.len, z.len, key_a, &s), 0);
	CHECK_EQ(sealed_stream_new(s, 0, n, out, &st), -EOPNOTSUPP);
	sealed_free(s);
	free(o.buf);
	free(z.buf);
	free(data);
	free(out);
}

/* Each attack on a fresh copy of one object: the errno expected. */
static void test_attacks(void)
{
	const size_t n = 200000, fsize = 50000;
	uint8_t *data = weights(n), *out = malloc(n), *buf;
	struct obj a = seal(data, n, fsize, key_a, SEALED_FLAG_ZSTD);
	struct obj other = seal(data, n, fsize, key_a, SEALED_FLAG_ZSTD);
	struct obj plain = seal(data, n, fsize, key_a, 0);
	struct obj t;
	uint64_t f0 = a.fend[0], f1 = a.fend[1];
	struct sealed *s;

	CHECK(out && a.nframes == 4);
	/* The same key and data: another object id, other bytes. */
	CHECK(memcmp(a.buf, other.buf, 64));
	buf = malloc(plain.len + a.len + 64);
	CHECK(buf);
	t = a;
	t.buf = buf;
#define FRESH() memcpy(buf, a.buf, a.len), t.len = a.len

	FRESH(); /* a flipped byte in a frame: its read fails */
	buf[f0 + 10] ^= 1;
	CHECK_EQ(read_range(&t, key_a, fsize, 10, out), -EBADMSG);
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), 10); /* others read */

	FRESH(); /* a flipped tag byte */
	buf[f1 - 1] ^= 0x80;
	CHECK_EQ(read_range(&t, key_a, fsize, 1, out), -EBADMSG);

	FRESH(); /* a flipped byte in the index */
	buf[a.len - SEALED_FOOTER_SIZE - 3] ^= 1;
	CHECK(read_range(&t, key_a, 0, 10, out) < 0);

	FRESH(); /* the index's sizes edited consistently: the tag fails */
	{
		uint8_t *idx = buf + a.len - sealed_tail_bytes(4);

		/* frame 0 one byte shorter in plain size, frame 1 longer */
		idx[4] -= 1;
		idx[12] += 1;
	}
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -EBADMSG);

	FRESH(); /* the footer's plain size */
	buf[a.len - SEALED_FOOTER_SIZE + 16] ^= 1;
	CHECK(read_range(&t, key_a, 0, 10, out) < 0);

	FRESH(); /* the object id in the footer */
	buf[a.len - SEALED_FOOTER_SIZE + 40] ^= 1;
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -EBADMSG);

	FRESH(); /* the flags (zstd -> stored): refused */
	buf[a.len - SEALED_FOOTER_SIZE + 9] = 0;
	CHECK(read_range(&t, key_a, 0, 10, out) < 0);

	/* Frames 0 and 1 swapped (same size in a stored object). */
	memcpy(buf, plain.buf, plain.len);
	t.len = plain.len;
	memcpy(buf, plain.buf + plain.fend[0], plain.fend[0]);
	memcpy(buf + plain.fend[0], plain.buf, plain.fend[0]);
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -EBADMSG);
	CHECK_EQ(read_range(&t, key_a, fsize, 10, out), -EBADMSG);

	/* A frame spliced in from another object under the same key. */
	FRESH();
	CHECK_EQ(other.fend[0], f0); /* same data, same compressed size */
	memcpy(buf, other.buf, f0);
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -EBADMSG);

	FRESH(); /* truncated by one byte, and by one frame */
	t.len = a.len - 1;
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -ENOMSG);
	memmove(buf + f0, buf + f1, a.len - f1);
	t.len = a.len - (f1 - f0);
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -EPROTO);

	FRESH(); /* extended: bytes after the footer, bytes before it */
	memset(buf + a.len, 0, 16);
	t.len = a.len + 16;
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -ENOMSG);
	memmove(buf + 16, buf, a.len);
	t.len = a.len + 16;
	CHECK_EQ(read_range(&t, key_a, 0, 10, out), -EPROTO);

	/* The wrong key: told apart from damage. */
	CHECK_EQ(read_range(&a, key_b, 0, 10, out), -EKEYREJECTED);
	/* Not a sealed object at all. */
	CHECK_EQ(sealed_parse(data, 1000, 1000, key_a, &s), -ENOMSG);
	CHECK_EQ(sealed_parse(data, 10, 10, key_a, &s), -EINVAL);

	free(buf);
	free(a.buf);
	free(other.buf);
	free(plain.buf);
	free(data);
	free(out);
}

static void write_file(const char *path, const void *buf, size_t n, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	CHECK(fd >= 0);
	CHECK_EQ(write(fd, buf, n), n);
	CHECK_EQ(fchmod(fd, mode), 0);
	close(fd);
}

static void test_key_files(void)
{
	char dir[] = "/tmp/wfs-sealed-XXXXXX", path[64];
	static const char hex[] = "000102030405060708090a0b0c0d0e0f"
				  "101112131415161718191A1B1C1D1E1F\n";
	uint8_t key[SEALED_KEY_SIZE], id1[16], id2[16];
	int i;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	write_file(path, hex, sizeof(hex) - 1, 0600);
	CHECK_EQ(sealed_key_load(path, key), 0);
	for (i = 0; i < SEALED_KEY_SIZE; i++)
		CHECK_EQ(key[i], i);
	write_file(path, key_a, sizeof(key_a), 0400);
	CHECK_EQ(sealed_key_load(path, key), 0);
	CHECK(!memcmp(key, key_a, sizeof(key)));
	/* readable by group or others: refused */
	write_file(path, key_a, sizeof(key_a), 0640);
	CHECK_EQ(sealed_key_load(path, key), -EPERM);
	write_file(path, key_a, sizeof(key_a), 0604);
	CHECK_EQ(sealed_key_load(path, key), -EPERM);
	/* wrong lengths, bad hex */
	write_file(path, key_a, 31, 0600);
	CHECK_EQ(sealed_key_load(path, key), -EINVAL);
	write_file(path, hex, 63, 0600);
	CHECK_EQ(sealed_key_load(path, key), -EINVAL);
	write_file(path, "zz", 2, 0600);
	CHECK_EQ(sealed_key_parse("g0", 2, key), -EINVAL);
	CHECK_EQ(sealed_key_load(dir, key), -EINVAL);
	unlink(path);
	CHECK_EQ(sealed_key_load(path, key), -ENOENT);
	rmdir(dir);
	/* the key id: stable, distinct per key, not the key */
	sealed_key_id(key_a, id1);
	sealed_key_id(key_a, id2);
	CHECK(!memcmp(id1, id2, 16));
	CHECK(memcmp(id1, key_a, 16));
	sealed_key_id(key_b, id2);
	CHECK(memcmp(id1, id2, 16));
}

/* The disk tier's blocks: sealed and opened at their place only. */
static void test_tier_blocks(void)
{
	const size_t n = 100000, bl = 30000;
	uint8_t *data = weights(n), *a = malloc(bl), *b = malloc(bl);
	uint8_t tag[SEALED_TAG_SIZE], tag2[SEALED_TAG_SIZE];
	struct obj o = seal(data, n, 40000, key_a, 0);
	struct obj o2 = seal(data, n, 40000, key_a, 0); /* another id */
	struct sealed *s, *s2;
	struct sealed_dctx *dc;

	CHECK(a && b);
	CHECK_EQ(sealed_parse(o.buf, o.len, o.len, key_a, &s), 0);
	CHECK_EQ(sealed_parse(o2.buf, o2.len, o2.len, key_a, &s2), 0);
	CHECK_EQ(sealed_dctx_new(&dc), 0);
	/* Round trip, in place; no plain byte run survives sealing. */
	CHECK_EQ(sealed_block_seal(dc, s, 1000, bl, data + 1000, a, tag), 0);
	CHECK(!memmem(a, bl, data + 1000 + 5000, 32));
	memcpy(b, a, bl);
	CHECK_EQ(sealed_block_open(dc, s, 1000, bl, b, tag), 0);
	CHECK(!memcmp(b, data + 1000, bl));
	/* Deterministic: the same block seals to the same bytes. */
	CHECK_EQ(sealed_block_seal(dc, s, 1000, bl, data + 1000, b, tag2), 0);
	CHECK(!memcmp(a, b, bl) && !memcmp(tag, tag2, sizeof(tag)));
	/* Opened anywhere else, or changed: refused. */
	memcpy(b, a, bl);
	CHECK_EQ(sealed_block_open(dc, s, 2000, bl, b, tag), -EBADMSG);
	memcpy(b, a, bl);
	CHECK_EQ(sealed_block_open(dc, s, 1000, bl - 1, b, tag), -EBADMSG);
	memcpy(b, a, bl);
	CHECK_EQ(sealed_block_open(dc, s2, 1000, bl, b, tag), -EBADMSG);
	memcpy(b, a, bl);
	b[bl / 2] ^= 1;
	CHECK_EQ(sealed_block_open(dc, s, 1000, bl, b, tag), -EBADMSG);
	memcpy(b, a, bl);
	tag2[0] ^= 1;
	CHECK_EQ(sealed_block_open(dc, s, 1000, bl, b, tag2), -EBADMSG);
	/* Ranges that are no block of the file. */
	CHECK_EQ(sealed_block_seal(dc, s, 0, 0, data, a, tag), -EINVAL);
	CHECK_EQ(sealed_block_seal(dc, s, n - 10, 11, data, a, tag), -EINVAL);
	CHECK_EQ(sealed_block_seal(dc, s, n - 10, 10, data + n - 10, a, tag),
		 0);
	sealed_dctx_free(dc);
	sealed_free(s);
	sealed_free(s2);
	free(o.buf);
	free(o2.buf);
	free(data);
	free(a);
	free(b);
}

/* An Ed25519 key pair from a 32-byte seed of @first, first + 1...: the
 * private key to @priv (mode @mode), the public one to @pub, as PEM. */
static void write_ed25519(const char *priv, mode_t mode, const char *pub,
			  uint8_t first)
{
	uint8_t seed[32];
	EVP_PKEY *pk;
	FILE *f;

	for (int i = 0; i < 32; i++)
		seed[i] = first + i;
	pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
	CHECK(pk);
	CHECK((f = fopen(priv, "we")));
	CHECK_EQ(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	CHECK_EQ(chmod(priv, mode), 0);
	CHECK((f = fopen(pub, "we")));
	CHECK_EQ(PEM_write_PUBKEY(f, pk), 1);
	fclose(f);
	EVP_PKEY_free(pk);
}

static void test_signatures(void)
{
	static const unsigned flags[] = {
		0, SEALED_FLAG_ZSTD, SEALED_FLAG_ZSTD | SEALED_FLAG_GROUPED
	};
	const size_t n = 300000, fsize = 65536;
	char dir[] = "/tmp/wfs-signed-XXXXXX", priv[64], pub[64], priv2[64],
	     pub2[64];
	struct sealed_signer *sg = NULL, *sg2 = NULL, *bad = NULL;
	struct sealed_trust *t = NULL, *none = NULL;
	struct sealed *s = NULL;
	uint8_t *data = weights(n), *out = malloc(n), signer[32], mine[32];
	struct obj o;
	size_t sb;

	CHECK(out && mkdtemp(dir));
	snprintf(priv, sizeof(priv), "%s/a.pem", dir);
	snprintf(pub, sizeof(pub), "%s/a.pub", dir);
	snprintf(priv2, sizeof(priv2), "%s/b.pem", dir);
	snprintf(pub2, sizeof(pub2), "%s/b.pub", dir);
	write_ed25519(priv, 0600, pub, 0x21);
	write_ed25519(priv2, 0400, pub2, 0x41);
	CHECK_EQ(sealed_signer_load(priv, &sg), 0);
	CHECK_EQ(sealed_signer_load(priv2, &sg2), 0);
	CHECK_EQ(sealed_trust_new(&t), 0);
	CHECK_EQ(sealed_trust_new(&none), 0);
	CHECK_EQ(sealed_trust_load(t, pub), 0);
	CHECK_EQ(sealed_trust_load(t, pub), 0); /* once */
	CHECK_EQ(sealed_trust_count(t), 1);
	sealed_signer_public(sg, mine);
	/* key files: permissions, kinds */
	CHECK_EQ(chmod(priv2, 0640), 0);
	CHECK_EQ(sealed_signer_load(priv2, &bad), -EPERM);
	CHECK_EQ(chmod(pub2, 0600), 0);
	CHECK_EQ(sealed_signer_load(pub2, &bad), -EINVAL);
	CHECK_EQ(sealed_trust_load(none, priv), -EINVAL);
	CHECK_EQ(sealed_trust_load(none, dir), -EINVAL);
	CHECK_EQ(sealed_trust_count(none), 0);

	for (size_t k = 0; k < sizeof(flags) / sizeof(*flags); k++) {
		o = seal_signed(data, n, fsize, key_a, flags[k], sg);
		CHECK_EQ(sealed_verify(o.buf, o.len, o.len, t, signer), 0);
		CHECK(!memcmp(signer, mine, 32));
		CHECK_EQ(read_trusted(&o, key_a, t, 0, n, out), n);
		CHECK(!memcmp(out, data, n));
		CHECK_EQ(read_trusted(&o, key_a, t, 70000, 1000, out), 1000);
		CHECK(!memcmp(out, data + 70000, 1000));
		CHECK_EQ(read_range(&o, key_a, 0, n, out), n); /* untrusting */
		CHECK_EQ(sealed_verify(o.buf, o.len, o.len, none, NULL),
			 -ENOKEY);
		free(o.buf);
	}
	/* unsigned; signed by another key */
	o = seal(data, n, fsize, key_a, 0);
	CHECK_EQ(sealed_verify(o.buf, o.len, o.len, t, NULL), -ENODATA);
	CHECK_EQ(read_trusted(&o, key_a, t, 0, n, out), -ENODATA);
	free(o.buf);
	o = seal_signed(data, n, fsize, key_a, 0, sg2);
	CHECK_EQ(sealed_verify(o.buf, o.len, o.len, t, NULL), -ENOKEY);
	free(o.buf);

	o = seal_signed(data, n, fsize, key_a, 0, sg);
	/* The tier: a trusted object's blocks open only as trusted (a mount
	 * without trust= checks no digest: what it sealed may be forged). */
	{
		struct sealed *su, *st;
		struct sealed_dctx *dc;
		uint8_t tag[SEALED_TAG_SIZE], *blk = malloc(fsize);

		CHECK(blk);
		CHECK_EQ(sealed_dctx_new(&dc), 0);
		CHECK_EQ(sealed_parse(o.buf, o.len, o.len, key_a, &su), 0);
		CHECK_EQ(sealed_parse_trusted(o.buf, o.len, o.len, key_a, t,
					      &st),
			 0);
		CHECK_EQ(sealed_block_seal(dc, su, 0, fsize, data, blk, tag),
			 0);
		CHECK_EQ(sealed_block_open(dc, st, 0, fsize, blk, tag),
			 -EBADMSG);
		CHECK_EQ(sealed_block_seal(dc, st, 0, fsize, data, blk, tag),
			 0);
		CHECK_EQ(sealed_block_open(dc, st, 0, fsize, blk, tag), 0);
		CHECK(!memcmp(blk, data, fsize));
		sealed_free(su);
		sealed_free(st);
		sealed_dctx_free(dc);
		free(blk);
	}
	sb = o.len - SEALED_FOOTER_SIZE - SEALED_SIGBLOCK_SIZE;
	/* a flipped signature byte; a flipped digest (the tail tag also
	 * fails for a reader that checks no signature) */
	o.buf[sb + 40] ^= 1;
	CHECK_EQ(sealed_verify(o.buf, o.len, o.len, t, NULL), -EBADMSG);
	o.buf[sb + 40] ^= 1;
	o.buf[sb - 5] ^= 1;
	CHECK_EQ(sealed_verify(o.buf, o.len, o.len, t, NULL), -EBADMSG);
	CHECK_EQ(read_range(&o, key_a, 0, n, out), -EBADMSG);
	o.buf[sb - 5] ^= 1;
	/* a key holder seals frame 2 again, other bytes, a valid tag: GCM
	 * alone takes it; the signed digest does not */
	CHECK_EQ(sealed_parse(o.buf, o.len, o.len, key_a, &s), 0);
	{
		struct sealed_writer w = { .flags = s->flags };
		uint8_t *frame = o.buf + o.fend[1];
		uint8_t *other = malloc(fsize);

		CHECK(other);
		memcpy(w.object_id, s->object_id, SEALED_ID_SIZE);
		memcpy(w.okey, s->okey, SEALED_KEY_SIZE);
		memset(other, 0x5a, fsize);
		CHECK_EQ(sealed_seal(&w, 2, other, fsize, fsize, frame),
			 fsize + SEALED_TAG_SIZE);
		CHECK_EQ(read_range(&o, key_a, 2 * fsize, fsize, out), fsize);
		CHECK(!memcmp(out, other, fsize)); /* the attack works... */
		CHECK_EQ(read_trusted(&o, key_a, t, 2 * fsize, fsize, out),
			 -EBADMSG); /* ...not against the signature */
		CHECK_EQ(read_trusted(&o, key_a, t, 0, 2 * fsize, out),
			 2 * fsize); /* the other frames read */
		CHECK(!memcmp(out, data, 2 * fsize));
		/* streamed as they arrive: the same verdicts */
		CHECK_EQ(
			stream_range(&o, NULL, 2 * fsize, fsize, 4096, -1, out),
			0);
		CHECK(!memcmp(out, other, fsize));
		CHECK_EQ(stream_range(&o, t, 2 * fsize, fsize, 4096, -1, out),
			 -EBADMSG);
		CHECK_EQ(stream_range(&o, t, fsize, 3 * fsize, 999, -1, out),
			 -EBADMSG);
		CHECK_EQ(stream_range(&o, t, 0, 2 * fsize, 999, -1, out), 0);
		CHECK(!memcmp(out, data, 2 * fsize));
		free(other);
	}
	sealed_free(s);
	free(o.buf);
	sealed_signer_free(sg);
	sealed_signer_free(sg2);
	sealed_trust_free(t);
	sealed_trust_free(none);
	unlink(priv);
	unlink(pub);
	unlink(priv2);
	unlink(pub2);
	rmdir(dir);
	free(data);
	free(out);
}

int main(void)
{
	test_round_trips();
	test_stream();
	test_attacks();
	test_key_files();
	test_tier_blocks();
	test_signatures();
	return 0;
}
