/* Sealed objects: key files, index parsing and authentication, opening and
 * sealing frames (see sealed.h). OpenSSL's codes are translated here only. */
#include "sealed.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#define MAGIC "WFSSEAL1"
#define MAGIC_LEN 8
#define NONCE_LEN 12
#define FLAGS_KNOWN                                                            \
	(SEALED_FLAG_ZSTD | SEALED_FLAG_GROUPED | SEALED_FLAG_SIGNED)
/* Footer fields (sealed.h, docs/sealed-format.md). */
#define F_VERSION 8
#define F_FLAGS 9
#define F_RESERVED 10
#define F_NFRAMES 12
#define F_SIZE 16
#define F_KEY_ID 24
#define F_OBJECT_ID 40
#define F_TAG 56
/* A frame's associated data: "WFSF", object id, u32 index, u32 inner
 * size, u32 plain size. */
#define FRAME_AAD_LEN 32
/* A disk tier block's: "WFST", object id, u64 offset, u64 length. */
#define BLOCK_AAD_LEN 36

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, v);
	wr32(p + 4, v >> 32);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sealed_key_parse(const void *buf, size_t len,
		     uint8_t ret_key[SEALED_KEY_SIZE])
{
	const uint8_t *p = buf;
	uint8_t key[SEALED_KEY_SIZE];
	size_t i;

	if (len == SEALED_KEY_SIZE) {
		memcpy(ret_key, p, SEALED_KEY_SIZE);
		return 0;
	}
	if (len == 2 * SEALED_KEY_SIZE + 1 && p[len - 1] == '\n')
		len--;
	if (len != 2 * SEALED_KEY_SIZE)
		return -EINVAL;
	for (i = 0; i < SEALED_KEY_SIZE; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			OPENSSL_cleanse(key, sizeof(key));
			return -EINVAL;
		}
		key[i] = hi << 4 | lo;
	}
	memcpy(ret_key, key, SEALED_KEY_SIZE);
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

/*
 * Read the regular file @path into @buf: at most @cap bytes, *@ret_len of
 * them. A @secret one (a key file, a signing key) must be one that neither
 * group nor others may read (-EPERM: nothing is read).
 * @return 0, -EPERM, -EINVAL (not a regular file), open()'s -errno.
 */
static int read_small(const char *path, uint8_t *buf, size_t cap,
		      size_t *ret_len, int secret)
{
	struct stat st;
	size_t len = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out;
	}
	if (secret && (st.st_mode & (S_IRWXG | S_IRWXO))) {
		r = -EPERM;
		goto out;
	}
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += n;
	}
	*ret_len = len;
out:
	close(fd);
	return r;
}

int sealed_key_load(const char *path, uint8_t ret_key[SEALED_KEY_SIZE])
{
	uint8_t buf[2 * SEALED_KEY_SIZE + 2];
	size_t len = 0;
	int r = read_small(path, buf, sizeof(buf), &len, 1);

	if (!r)
		r = len < sizeof(buf) ? sealed_key_parse(buf, len, ret_key)
				      : -EINVAL;
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}

void sealed_key_id(const uint8_t key[SEALED_KEY_SIZE],
		   uint8_t ret_id[SEALED_ID_SIZE])
{
	static const char label[] = "weightfs sealed key id";
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	memset(md, 0, sizeof(md));
	if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, label, sizeof(label)) == 1 &&
	    EVP_DigestUpdate(ctx, key, SEALED_KEY_SIZE) == 1)
		EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	memcpy(ret_id, md, SEALED_ID_SIZE);
}

#define INFO_OBJECT "weightfs sealed v1 object key"
#define INFO_TIER "weightfs sealed v1 tier key"
#define INFO_TIER_SIGNED "weightfs sealed v1 signed tier key"

/* HKDF-SHA256(@key, @salt of @salt_len bytes, @info) to @ret. */
static int hkdf(const uint8_t key[SEALED_KEY_SIZE], const uint8_t *salt,
		size_t salt_len, const char *info, uint8_t ret[SEALED_KEY_SIZE])
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
	size_t n = SEALED_KEY_SIZE;
	int ok;

	ok = pc && EVP_PKEY_derive_init(pc) == 1 &&
	     EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) == 1 &&
	     EVP_PKEY_CTX_set1_hkdf_salt(pc, salt, (int)salt_len) == 1 &&
	     EVP_PKEY_CTX_set1_hkdf_key(pc, key, SEALED_KEY_SIZE) == 1 &&
	     EVP_PKEY_CTX_add1_hkdf_info(pc, (const unsigned char *)info,
					 (int)strlen(info)) == 1 &&
	     EVP_PKEY_derive(pc, ret, &n) == 1 && n == SEALED_KEY_SIZE;
	EVP_PKEY_CTX_free(pc);
	return ok ? 0 : -EIO;
}

/* An object's key: HKDF-SHA256(key, salt = object id, @info), @info one of
 * the labels above (each key has its own). */
static int object_key(const uint8_t key[SEALED_KEY_SIZE],
		      const uint8_t id[SEALED_ID_SIZE], const char *info,
		      uint8_t ret[SEALED_KEY_SIZE])
{
	return hkdf(key, id, SEALED_ID_SIZE, info, ret);
}

/* Frame @i's nonce: its index, little-endian, in 12 bytes; the index and
 * footer's tag takes the one nonce no frame can have (all ones). */
static void nonce_for(uint32_t i, int tail, uint8_t n[NONCE_LEN])
{
	memset(n, tail ? 0xff : 0, NONCE_LEN);
	if (!tail)
		wr32(n, i);
}

static void frame_aad(const uint8_t id[SEALED_ID_SIZE], uint32_t i,
		      uint32_t inner, uint32_t plain,
		      uint8_t aad[FRAME_AAD_LEN])
{
	memcpy(aad, "WFSF", 4);
	memcpy(aad + 4, id, SEALED_ID_SIZE);
	wr32(aad + 20, i);
	wr32(aad + 24, inner);
	wr32(aad + 28, plain);
}

/*
 * AES-256-GCM of @n bytes @in to @out (may be @in) with associated data in
 * two pieces; @tag is written (@enc) or checked. @ctx may be NULL (one is
 * made). @return 0, -EBADMSG (the tag does not match), -EIO.
 */
static int gcm(EVP_CIPHER_CTX *ctx, int enc, const uint8_t key[32],
	       const uint8_t nonce[NONCE_LEN], const uint8_t *aad1,
	       size_t aad1_len, const uint8_t *aad2, size_t aad2_len,
	       const uint8_t *in, size_t n, uint8_t *out,
	       uint8_t tag[SEALED_TAG_SIZE])
{
	EVP_CIPHER_CTX *own = NULL;
	uint8_t none[16];
	int len, r = -EIO;

	if (!ctx) {
		own = ctx = EVP_CIPHER_CTX_new();
		if (!ctx)
			return -EIO;
	}
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc) !=
	    1)
		goto out;
	if (aad1_len && EVP_CipherUpdate(ctx, NULL, &len, aad1, aad1_len) != 1)
		goto out;
	if (aad2_len && EVP_CipherUpdate(ctx, NULL, &len, aad2, aad2_len) != 1)
		goto out;
	/* EVP lengths are ints: frames are at most SEALED_MAX_FRAME_SIZE. */
	if (n && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1)
		goto out;
	if (!out)
		out = none;
	/* GCM's final step writes no bytes. */
	if (enc) {
		if (EVP_CipherFinal_ex(ctx, out + n, &len) != 1 ||
		    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
					SEALED_TAG_SIZE, tag) != 1)
			goto out;
	} else {
		if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG,
					SEALED_TAG_SIZE, tag) != 1)
			goto out;
		if (EVP_CipherFinal_ex(ctx, out + n, &len) != 1) {
			r = -EBADMSG;
			goto out;
		}
	}
	r = 0;
out:
	EVP_CIPHER_CTX_free(own);
	return r;
}

uint64_t sealed_tail_bytes(uint32_t nframes)
{
	return (uint64_t)nframes * SEALED_ENTRY_SIZE + SEALED_FOOTER_SIZE;
}

uint64_t sealed_tail_bytes_flags(uint32_t nframes, unsigned flags)
{
	uint64_t size = sealed_tail_bytes(nframes);

	if (flags & SEALED_FLAG_SIGNED)
		size += (uint64_t)nframes * SEALED_DIGEST_SIZE +
			SEALED_SIGBLOCK_SIZE;
	return size;
}

int sealed_tail_size(const void *tail, size_t len, uint64_t object_size,
		     uint64_t *ret_size, uint8_t *ret_key_id)
{
	const uint8_t *f;
	uint32_t n;
	uint64_t size;

	if (len < SEALED_FOOTER_SIZE)
		return -EINVAL;
	f = (const uint8_t *)tail + len - SEALED_FOOTER_SIZE;
	if (memcmp(f, MAGIC, MAGIC_LEN))
		return -ENOMSG;
	n = rd32(f + F_NFRAMES);
	if (f[F_VERSION] != SEALED_VERSION || (f[F_FLAGS] & ~FLAGS_KNOWN) ||
	    ((f[F_FLAGS] & SEALED_FLAG_GROUPED) &&
	     !(f[F_FLAGS] & SEALED_FLAG_ZSTD)) ||
	    f[F_RESERVED] || f[F_RESERVED + 1] || n > SEALED_MAX_FRAMES)
		return -EPROTO;
	size = sealed_tail_bytes_flags(n, f[F_FLAGS]);
	if (size > object_size)
		return -EPROTO;
	*ret_size = size;
	if (ret_key_id)
		memcpy(ret_key_id, f + F_KEY_ID, SEALED_ID_SIZE);
	return 0;
}

void sealed_free(struct sealed *s)
{
	if (!s)
		return;
	free(s->stored.frames);
	free(s->inner.frames);
	free(s->digests);
	OPENSSL_cleanse(s->okey, sizeof(s->okey));
	OPENSSL_cleanse(s->tkey, sizeof(s->tkey));
	free(s);
}

int sealed_parse(const void *tail, size_t len, uint64_t object_size,
		 const uint8_t key[SEALED_KEY_SIZE], struct sealed **ret)
{
	uint8_t kid[SEALED_ID_SIZE], mine[SEALED_ID_SIZE], nonce[NONCE_LEN],
		tag[SEALED_TAG_SIZE];
	const uint8_t *t, *f, *e;
	struct sealed *s;
	uint64_t tsize, coff = 0, doff = 0, csum;
	uint32_t i, n;
	int r;

	r = sealed_tail_size(tail, len, object_size, &tsize, kid);
	if (r)
		return r;
	if (len < tsize)
		return -EINVAL;
	t = (const uint8_t *)tail + len - tsize;
	f = t + tsize - SEALED_FOOTER_SIZE;
	n = rd32(f + F_NFRAMES);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->stored.frames = calloc(n ? n : 1, sizeof(*s->stored.frames));
	s->inner.frames = calloc(n ? n : 1, sizeof(*s->inner.frames));
	if (!s->stored.frames || !s->inner.frames) {
		r = -ENOMEM;
		goto fail;
	}
	s->flags = f[F_FLAGS];
	memcpy(s->object_id, f + F_OBJECT_ID, SEALED_ID_SIZE);
	r = -EPROTO;
	for (i = 0, e = t; i < n; i++, e += SEALED_ENTRY_SIZE) {
		struct zstd_seekable_frame *st = &s->stored.frames[i];
		struct zstd_seekable_frame *in = &s->inner.frames[i];

		in->csize = rd32(e);
		in->dsize = rd32(e + 4);
		/* Every frame holds data; stored frames are the chunk. */
		if (in->dsize == 0 || in->dsize > SEALED_MAX_FRAME_SIZE ||
		    in->csize == 0 || in->csize > SEALED_MAX_INNER_SIZE ||
		    (!(s->flags & SEALED_FLAG_ZSTD) && in->csize != in->dsize))
			goto fail;
		csum = (uint64_t)in->csize + SEALED_TAG_SIZE;
		in->coff = coff;
		in->doff = doff;
		*st = *in;
		st->csize = csum;
		coff += csum;
		doff += in->dsize;
		if (in->dsize > s->stored.max_dsize)
			s->stored.max_dsize = in->dsize;
	}
	if (coff != object_size - tsize || doff != rd64(f + F_SIZE))
		goto fail;
	s->stored.nframes = s->inner.nframes = n;
	s->stored.size = s->inner.size = doff;
	s->stored.object_size = s->inner.object_size = object_size;
	s->stored.table_size = s->inner.table_size = tsize;
	s->inner.max_dsize = s->stored.max_dsize;
	s->inner.group = s->flags & SEALED_FLAG_GROUPED ? 2 : 0;
	sealed_key_id(key, mine);
	if (memcmp(mine, kid, SEALED_ID_SIZE)) {
		r = -EKEYREJECTED;
		goto fail;
	}
	r = object_key(key, s->object_id, INFO_OBJECT, s->okey);
	if (!r)
		r = object_key(key, s->object_id, INFO_TIER, s->tkey);
	if (r)
		goto fail;
	nonce_for(0, 1, nonce);
	memcpy(tag, f + F_TAG, SEALED_TAG_SIZE);
	/* over the whole tail before the footer: the index (and a signed
	 * object's digests and signature block) */
	r = gcm(NULL, 0, s->okey, nonce, f, F_TAG, t,
		(size_t)(tsize - SEALED_FOOTER_SIZE), NULL, 0, NULL, tag);
	if (r)
		goto fail;
	*ret = s;
	return 0;
fail:
	sealed_free(s);
	return r;
}

struct sealed_dctx {
	EVP_CIPHER_CTX *cctx;
	struct zstd_seekable_dctx *zdc;
	uint8_t *plain; /* a frame's plaintext (zstd) or decoded bytes (cut) */
	size_t plain_cap;
	uint8_t *
		frame; /* a zstd frame's decoded bytes, when cut by the range */
	size_t frame_cap;
};

int sealed_dctx_new(struct sealed_dctx **ret)
{
	struct sealed_dctx *dc = calloc(1, sizeof(*dc));

	if (!dc)
		return -ENOMEM;
	dc->cctx = EVP_CIPHER_CTX_new();
	if (!dc->cctx || zstd_seekable_dctx_new(&dc->zdc)) {
		sealed_dctx_free(dc);
		return -ENOMEM;
	}
	*ret = dc;
	return 0;
}

void sealed_dctx_free(struct sealed_dctx *dc)
{
	if (!dc)
		return;
	EVP_CIPHER_CTX_free(dc->cctx);
	zstd_seekable_dctx_free(dc->zdc);
	if (dc->plain)
		OPENSSL_cleanse(dc->plain, dc->plain_cap);
	if (dc->frame)
		OPENSSL_cleanse(dc->frame, dc->frame_cap);
	free(dc->plain);
	free(dc->frame);
	free(dc);
}

static int grow(uint8_t **buf, size_t *cap, size_t n)
{
	uint8_t *p;

	if (*cap >= n)
		return 0;
	p = malloc(n);
	if (!p)
		return -ENOMEM;
	if (*buf)
		OPENSSL_cleanse(*buf, *cap);
	free(*buf);
	*buf = p;
	*cap = n;
	return 0;
}

/* Authenticate and decrypt frame @i's stored bytes @src to @out. */
static int open_frame(struct sealed_dctx *dc, const struct sealed *s,
		      uint32_t i, const uint8_t *src, uint8_t *out)
{
	const struct zstd_seekable_frame *in = &s->inner.frames[i];
	uint8_t nonce[NONCE_LEN], aad[FRAME_AAD_LEN], tag[SEALED_TAG_SIZE];
	uint8_t md[SEALED_DIGEST_SIZE];

	if (s->digests) {
		/* A signed object's frame is its signed bytes, or nothing:
		 * the key holders can forge GCM tags, not SHA-256. */
		sealed_frame_digest(src, in->csize + SEALED_TAG_SIZE, md);
		if (CRYPTO_memcmp(md, s->digests + (size_t)i * sizeof(md),
				  sizeof(md)))
			return -EBADMSG;
	}
	nonce_for(i, 0, nonce);
	frame_aad(s->object_id, i, in->csize, in->dsize, aad);
	memcpy(tag, src + in->csize, SEALED_TAG_SIZE);
	return gcm(dc->cctx, 0, s->okey, nonce, aad, sizeof(aad), NULL, 0, src,
		   in->csize, out, tag);
}

ssize_t sealed_read(struct sealed_dctx *dc, const struct sealed *s,
		    uint64_t off, uint64_t len, const void *src, size_t src_len,
		    void *dst)
{
	const int zstd = s->flags & SEALED_FLAG_ZSTD;
	const uint8_t *in = src;
	uint8_t *out = dst;
	uint64_t end, base;
	uint32_t first, count, i;
	int r;

	zstd_seekable_range(&s->stored, off, len, &first, &count);
	if (count == 0)
		return 0;
	end = len > s->stored.size - off ? s->stored.size : off + len;
	base = s->stored.frames[first].coff;
	if (s->stored.frames[first + count - 1].coff +
		    s->stored.frames[first + count - 1].csize - base !=
	    src_len)
		return -EINVAL;
	for (i = first; i < first + count; i++) {
		const struct zstd_seekable_frame *f = &s->stored.frames[i];
		const uint8_t *fsrc = in + (f->coff - base);
		const int whole = f->doff >= off && f->doff + f->dsize <= end;
		uint32_t inner = s->inner.frames[i].csize;
		uint64_t from = f->doff > off ? f->doff : off;
		uint64_t to =
			f->doff + f->dsize < end ? f->doff + f->dsize : end;
		uint8_t *plain, *bytes;

		if (!zstd && whole) {
			/* Straight into @dst: GCM checks the tag at the end,
			 * so a failure leaves @dst unspecified, as said. */
			r = open_frame(dc, s, i, fsrc, out + (f->doff - off));
			if (r)
				return r;
			continue;
		}
		if (grow(&dc->plain, &dc->plain_cap, inner))
			return -ENOMEM;
		plain = dc->plain;
		r = open_frame(dc, s, i, fsrc, plain);
		if (r)
			return r;
		bytes = plain;
		if (zstd) {
			ssize_t d;

			bytes = whole ? out + (f->doff - off) : NULL;
			if (!bytes) {
				if (grow(&dc->frame, &dc->frame_cap, f->dsize))
					return -ENOMEM;
				bytes = dc->frame;
			}
			d = zstd_seekable_decode(dc->zdc, &s->inner, i, plain,
						 inner, bytes, f->dsize);
			if (d < 0)
				return d == -ENOMEM ? -ENOMEM : -EBADMSG;
			if (whole)
				continue;
		}
		memcpy(out + (from - off), bytes + (from - f->doff), to - from);
	}
	return end - off;
}

/* ---- streaming: frames opened as their bytes arrive ---- */

/* A frame's plain bytes outside the wanted range go here, a piece at a
 * time (they are authenticated with the rest, then dropped). */
#define SPILL_SIZE (64u << 10)

struct sealed_stream {
	const struct sealed *s;
	EVP_CIPHER_CTX *cctx;
	uint64_t off, end; /* the plain bytes wanted */
	uint8_t *dst;	   /* byte off's place */
	uint32_t i, last;  /* the frame arriving, the last one */
	uint64_t at;	   /* its stored bytes in so far */
	uint8_t tag[SEALED_TAG_SIZE];
	uint8_t *spill;
	EVP_MD_CTX *md; /* signed and trusted: the frame's SHA-256 so far */
	bool failed;
};

/* Frame st->i's nonce and associated data: its bytes may come. */
static int stream_frame_start(struct sealed_stream *st)
{
	const struct zstd_seekable_frame *in = &st->s->inner.frames[st->i];
	uint8_t nonce[NONCE_LEN], aad[FRAME_AAD_LEN];
	int len;

	nonce_for(st->i, 0, nonce);
	frame_aad(st->s->object_id, st->i, in->csize, in->dsize, aad);
	if (EVP_DecryptInit_ex(st->cctx, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(st->cctx, NULL, &len, aad, sizeof(aad)) != 1 ||
	    (st->md && EVP_DigestInit_ex(st->md, EVP_sha256(), NULL) != 1))
		return -EIO;
	return 0;
}

int sealed_stream_new(const struct sealed *s, uint64_t off, uint64_t len,
		      void *dst, struct sealed_stream **ret)
{
	struct sealed_stream *st;
	uint32_t first, count;

	if (s->flags & SEALED_FLAG_ZSTD)
		return -EOPNOTSUPP;
	zstd_seekable_range(&s->stored, off, len, &first, &count);
	if (!count)
		return -EINVAL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->s = s;
	st->off = off;
	st->end = len > s->stored.size - off ? s->stored.size : off + len;
	st->dst = dst;
	st->i = first;
	st->last = first + count - 1;
	st->cctx = EVP_CIPHER_CTX_new();
	if (!st->cctx || (s->digests && !(st->md = EVP_MD_CTX_new()))) {
		sealed_stream_free(st);
		return -ENOMEM;
	}
	/* The key once; each frame sets only its nonce. */
	if (EVP_DecryptInit_ex(st->cctx, EVP_aes_256_gcm(), NULL, s->okey,
			       NULL) != 1 ||
	    stream_frame_start(st)) {
		sealed_stream_free(st);
		return -EIO;
	}
	*ret = st;
	return 0;
}

/* Decrypt @n ciphertext bytes of the frame arriving, whose plain bytes
 * start at @pos in the file, to their place (or the spill). */
static int stream_decrypt(struct sealed_stream *st, uint64_t pos,
			  const uint8_t *p, size_t n)
{
	while (n) {
		size_t k = n;
		uint8_t *out;
		int len;

		if (pos < st->off || pos >= st->end) { /* an edge: spilled */
			uint64_t stop = pos < st->off ? st->off : UINT64_MAX;

			if (k > stop - pos)
				k = stop - pos;
			if (k > SPILL_SIZE)
				k = SPILL_SIZE;
			if (!st->spill && !(st->spill = malloc(SPILL_SIZE)))
				return -ENOMEM;
			out = st->spill;
		} else {
			if (k > st->end - pos)
				k = st->end - pos;
			out = st->dst + (pos - st->off);
		}
		if (EVP_DecryptUpdate(st->cctx, out, &len, p, (int)k) != 1)
			return -EIO;
		pos += k;
		p += k;
		n -= k;
	}
	return 0;
}

/* The frame just in against its signed digest: 0, -EBADMSG, -EIO. */
static int frame_digest_check(struct sealed_stream *st)
{
	uint8_t md[SEALED_DIGEST_SIZE];
	unsigned n = 0;

	if (EVP_DigestFinal_ex(st->md, md, &n) != 1 || n != sizeof(md))
		return -EIO;
	return CRYPTO_memcmp(md, st->s->digests + (size_t)st->i * sizeof(md),
			     sizeof(md))
		       ? -EBADMSG
		       : 0;
}

int sealed_stream_put(struct sealed_stream *st, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	int r, len;

	if (st->failed)
		return -EINVAL;
	while (n) {
		const struct zstd_seekable_frame *f;
		uint64_t inner;
		size_t k;

		if (st->i > st->last) {
			st->failed = true; /* more than the frames */
			return -EINVAL;
		}
		f = &st->s->stored.frames[st->i];
		inner = st->s->inner.frames[st->i].csize;
		if (st->at < inner) {
			k = inner - st->at < n ? (size_t)(inner - st->at) : n;
			r = stream_decrypt(st, f->doff + st->at, p, k);
		} else { /* its tag */
			k = inner + SEALED_TAG_SIZE - st->at < n
				    ? (size_t)(inner + SEALED_TAG_SIZE - st->at)
				    : n;
			memcpy(st->tag + (st->at - inner), p, k);
			r = 0;
		}
		if (!r && st->md && EVP_DigestUpdate(st->md, p, k) != 1)
			r = -EIO;
		if (r) {
			st->failed = true;
			return r;
		}
		st->at += k;
		p += k;
		n -= k;
		if (st->at < inner + SEALED_TAG_SIZE)
			continue;
		/* The frame is in: its signed digest (the key holders can
		 * forge GCM tags, not SHA-256), then its tag decide. */
		if (st->md && (r = frame_digest_check(st))) {
			st->failed = true;
			return r;
		}
		if (EVP_CIPHER_CTX_ctrl(st->cctx, EVP_CTRL_GCM_SET_TAG,
					SEALED_TAG_SIZE, st->tag) != 1 ||
		    EVP_DecryptFinal_ex(st->cctx, st->tag, &len) != 1) {
			st->failed = true;
			return -EBADMSG;
		}
		st->at = 0;
		if (++st->i <= st->last && stream_frame_start(st)) {
			st->failed = true;
			return -EIO;
		}
	}
	return 0;
}

int sealed_stream_end(const struct sealed_stream *st)
{
	return !st->failed && st->i == st->last + 1 && !st->at ? 0 : -EINVAL;
}

void sealed_stream_free(struct sealed_stream *st)
{
	if (!st)
		return;
	EVP_CIPHER_CTX_free(st->cctx);
	EVP_MD_CTX_free(st->md);
	if (st->spill)
		OPENSSL_cleanse(st->spill, SPILL_SIZE);
	free(st->spill);
	free(st);
}

int sealed_writer_init(struct sealed_writer *w,
		       const uint8_t key[SEALED_KEY_SIZE], unsigned flags)
{
	if ((flags & ~FLAGS_KNOWN) ||
	    ((flags & SEALED_FLAG_GROUPED) && !(flags & SEALED_FLAG_ZSTD)))
		return -EINVAL;
	memset(w, 0, sizeof(*w));
	w->flags = flags;
	sealed_key_id(key, w->key_id);
	if (RAND_bytes(w->object_id, SEALED_ID_SIZE) != 1)
		return -EIO;
	return object_key(key, w->object_id, INFO_OBJECT, w->okey);
}

void sealed_writer_done(struct sealed_writer *w)
{
	OPENSSL_cleanse(w, sizeof(*w));
}

ssize_t sealed_seal(const struct sealed_writer *w, uint32_t i,
		    const void *inner, size_t inner_len, uint32_t plain_len,
		    void *out)
{
	uint8_t nonce[NONCE_LEN], aad[FRAME_AAD_LEN];
	uint8_t *o = out;
	int r;

	if (inner_len == 0 || inner_len > SEALED_MAX_INNER_SIZE ||
	    plain_len == 0 || plain_len > SEALED_MAX_FRAME_SIZE)
		return -EINVAL;
	nonce_for(i, 0, nonce);
	frame_aad(w->object_id, i, inner_len, plain_len, aad);
	r = gcm(NULL, 1, w->okey, nonce, aad, sizeof(aad), NULL, 0, inner,
		inner_len, o, o + inner_len);
	return r ? r : (ssize_t)(inner_len + SEALED_TAG_SIZE);
}

static int sign_tail(const struct sealed_signer *sg, const uint8_t *footer,
		     const uint8_t *tail, uint32_t nframes, uint8_t *sigblock);

/* The tail of sealed_write_tail(), or with @digests and @sg (both or
 * neither, as the writer's flags say) sealed_write_signed_tail()'s. */
static ssize_t write_tail(const struct sealed_writer *w,
			  const struct zstd_seekable_frame *frames,
			  uint32_t nframes, const uint8_t *digests,
			  const struct sealed_signer *sg, void *buf, size_t cap)
{
	uint64_t size = sealed_tail_bytes_flags(nframes, w->flags), plain = 0;
	uint8_t nonce[NONCE_LEN], *p = buf, *f, *sigblock = NULL;
	uint32_t i;
	int r;

	if (nframes > SEALED_MAX_FRAMES || cap < size ||
	    !(w->flags & SEALED_FLAG_SIGNED) != !(digests && sg))
		return -EINVAL;
	for (i = 0; i < nframes; i++, p += SEALED_ENTRY_SIZE) {
		wr32(p, frames[i].csize);
		wr32(p + 4, frames[i].dsize);
		plain += frames[i].dsize;
	}
	if (digests) {
		memcpy(p, digests, (size_t)nframes * SEALED_DIGEST_SIZE);
		p += (size_t)nframes * SEALED_DIGEST_SIZE;
		sigblock = p;
		p += SEALED_SIGBLOCK_SIZE;
	}
	f = p;
	memset(f, 0, SEALED_FOOTER_SIZE);
	memcpy(f, MAGIC, MAGIC_LEN);
	f[F_VERSION] = SEALED_VERSION;
	f[F_FLAGS] = w->flags;
	wr32(f + F_NFRAMES, nframes);
	wr64(f + F_SIZE, plain);
	memcpy(f + F_KEY_ID, w->key_id, SEALED_ID_SIZE);
	memcpy(f + F_OBJECT_ID, w->object_id, SEALED_ID_SIZE);
	if (sigblock && (r = sign_tail(sg, f, buf, nframes, sigblock)))
		return r;
	nonce_for(0, 1, nonce);
	r = gcm(NULL, 1, w->okey, nonce, f, F_TAG, buf,
		(size_t)(size - SEALED_FOOTER_SIZE), NULL, 0, NULL, f + F_TAG);
	return r ? r : (ssize_t)size;
}

ssize_t sealed_write_tail(const struct sealed_writer *w,
			  const struct zstd_seekable_frame *frames,
			  uint32_t nframes, void *buf, size_t cap)
{
	return write_tail(w, frames, nframes, NULL, NULL, buf, cap);
}

/* ---- publisher signatures ---- */

/* The signed message: this label (its NUL included) and SHA-256 of the
 * footer's first 56 bytes, the index and the digests. */
#define SIG_LABEL "weightfs sealed signature v1"
#define SIG_MSG_LEN (sizeof(SIG_LABEL) + SEALED_DIGEST_SIZE)

struct sealed_trust {
	size_t n;
	uint8_t pub[SEALED_TRUST_MAX][SEALED_PUBKEY_SIZE];
};

struct sealed_signer {
	EVP_PKEY *pk;
	uint8_t pub[SEALED_PUBKEY_SIZE];
};

void sealed_frame_digest(const void *frame, size_t len,
			 uint8_t ret[SEALED_DIGEST_SIZE])
{
	unsigned n = 0;

	if (EVP_Digest(frame, len, ret, &n, EVP_sha256(), NULL) != 1 ||
	    n != SEALED_DIGEST_SIZE)
		memset(ret, 0, SEALED_DIGEST_SIZE); /* matches no frame */
}

/* The message signed for the tail whose footer is @f and whose index
 * (@nframes entries, then the digests) starts at @t. @return 0, -EIO. */
static int sig_message(const uint8_t *f, const uint8_t *t, uint32_t nframes,
		       uint8_t msg[SIG_MSG_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t body =
		(size_t)nframes * (SEALED_ENTRY_SIZE + SEALED_DIGEST_SIZE);
	unsigned n = 0;
	int ok;

	memcpy(msg, SIG_LABEL, sizeof(SIG_LABEL));
	ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, f, F_TAG) == 1 &&
	     EVP_DigestUpdate(ctx, t, body) == 1 &&
	     EVP_DigestFinal_ex(ctx, msg + sizeof(SIG_LABEL), &n) == 1 &&
	     n == SEALED_DIGEST_SIZE;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -EIO;
}

static int sign_tail(const struct sealed_signer *sg, const uint8_t *footer,
		     const uint8_t *tail, uint32_t nframes, uint8_t *sigblock)
{
	uint8_t msg[SIG_MSG_LEN];
	size_t siglen = SEALED_SIG_SIZE;
	EVP_MD_CTX *ctx;
	int ok;

	if (sig_message(footer, tail, nframes, msg))
		return -EIO;
	ctx = EVP_MD_CTX_new();
	ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, sg->pk) == 1 &&
	     EVP_DigestSign(ctx, sigblock + SEALED_PUBKEY_SIZE, &siglen, msg,
			    sizeof(msg)) == 1 &&
	     siglen == SEALED_SIG_SIZE;
	EVP_MD_CTX_free(ctx);
	memcpy(sigblock, sg->pub, SEALED_PUBKEY_SIZE);
	return ok ? 0 : -EIO;
}

ssize_t sealed_write_signed_tail(const struct sealed_writer *w,
				 const struct zstd_seekable_frame *frames,
				 uint32_t nframes, const uint8_t *digests,
				 const struct sealed_signer *sg, void *buf,
				 size_t cap)
{
	if (!digests || !sg)
		return -EINVAL;
	return write_tail(w, frames, nframes, digests, sg, buf, cap);
}

int sealed_trust_new(struct sealed_trust **ret)
{
	*ret = calloc(1, sizeof(**ret));
	return *ret ? 0 : -ENOMEM;
}

void sealed_trust_free(struct sealed_trust *t)
{
	free(t);
}

size_t sealed_trust_count(const struct sealed_trust *t)
{
	return t->n;
}

int sealed_trust_add(struct sealed_trust *t,
		     const uint8_t pub[SEALED_PUBKEY_SIZE])
{
	for (size_t i = 0; i < t->n; i++)
		if (!memcmp(t->pub[i], pub, SEALED_PUBKEY_SIZE))
			return 0;
	if (t->n == SEALED_TRUST_MAX)
		return -E2BIG;
	memcpy(t->pub[t->n++], pub, SEALED_PUBKEY_SIZE);
	return 0;
}

/* A PEM file's bytes: at most 16 KiB (an Ed25519 key's PEM is ~120). */
#define PEM_MAX (16u << 10)

/* Refuses to prompt for a passphrase: encrypted keys are not read. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* An Ed25519 key (private: @priv) from the PEM bytes @buf. */
static EVP_PKEY *pem_ed25519(const uint8_t *buf, size_t len, int priv)
{
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	EVP_PKEY *pk = NULL;

	if (!bio)
		return NULL;
	pk = priv ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
		  : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (pk && EVP_PKEY_id(pk) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	return pk;
}

static int raw_public(EVP_PKEY *pk, uint8_t ret[SEALED_PUBKEY_SIZE])
{
	size_t n = SEALED_PUBKEY_SIZE;

	return EVP_PKEY_get_raw_public_key(pk, ret, &n) == 1 &&
			       n == SEALED_PUBKEY_SIZE
		       ? 0
		       : -EINVAL;
}

int sealed_trust_load(struct sealed_trust *t, const char *path)
{
	uint8_t buf[PEM_MAX], pub[SEALED_PUBKEY_SIZE];
	size_t len = 0;
	EVP_PKEY *pk;
	int r = read_small(path, buf, sizeof(buf), &len, 0);

	if (r)
		return r;
	if (len == sizeof(buf) || !(pk = pem_ed25519(buf, len, 0)))
		return -EINVAL;
	r = raw_public(pk, pub);
	EVP_PKEY_free(pk);
	return r ? r : sealed_trust_add(t, pub);
}

int sealed_signer_load(const char *path, struct sealed_signer **ret)
{
	uint8_t *buf = malloc(PEM_MAX);
	struct sealed_signer *sg = NULL;
	size_t len = 0;
	int r;

	if (!buf)
		return -ENOMEM;
	r = read_small(path, buf, PEM_MAX, &len, 1);
	if (r)
		goto out;
	r = -EINVAL;
	if (len == PEM_MAX)
		goto out;
	sg = calloc(1, sizeof(*sg));
	if (!sg) {
		r = -ENOMEM;
		goto out;
	}
	sg->pk = pem_ed25519(buf, len, 1);
	if (!sg->pk || raw_public(sg->pk, sg->pub))
		goto out;
	*ret = sg;
	sg = NULL;
	r = 0;
out:
	OPENSSL_cleanse(buf, PEM_MAX);
	free(buf);
	sealed_signer_free(sg);
	return r;
}

void sealed_signer_free(struct sealed_signer *sg)
{
	if (!sg)
		return;
	EVP_PKEY_free(sg->pk);
	free(sg);
}

void sealed_signer_public(const struct sealed_signer *sg,
			  uint8_t ret[SEALED_PUBKEY_SIZE])
{
	memcpy(ret, sg->pub, SEALED_PUBKEY_SIZE);
}

int sealed_verify(const void *tail, size_t len, uint64_t object_size,
		  const struct sealed_trust *t,
		  uint8_t ret_signer[SEALED_PUBKEY_SIZE])
{
	uint8_t msg[SIG_MSG_LEN];
	const uint8_t *tl, *f, *sb;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *ctx = NULL;
	uint64_t tsize;
	size_t i;
	int r;

	r = sealed_tail_size(tail, len, object_size, &tsize, NULL);
	if (r)
		return r;
	if (len < tsize)
		return -EINVAL;
	tl = (const uint8_t *)tail + len - tsize;
	f = tl + tsize - SEALED_FOOTER_SIZE;
	if (!(f[F_FLAGS] & SEALED_FLAG_SIGNED))
		return -ENODATA;
	sb = f - SEALED_SIGBLOCK_SIZE;
	if (ret_signer)
		memcpy(ret_signer, sb, SEALED_PUBKEY_SIZE);
	for (i = 0; i < t->n; i++)
		if (!memcmp(t->pub[i], sb, SEALED_PUBKEY_SIZE))
			break;
	if (i == t->n)
		return -ENOKEY;
	if (sig_message(f, tl, rd32(f + F_NFRAMES), msg))
		return -ENOMEM;
	/* the trusted key's copy, not the object's */
	pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, t->pub[i],
					 SEALED_PUBKEY_SIZE);
	ctx = EVP_MD_CTX_new();
	if (!pk || !ctx || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) != 1)
		r = -ENOMEM;
	else if (EVP_DigestVerify(ctx, sb + SEALED_PUBKEY_SIZE, SEALED_SIG_SIZE,
				  msg, sizeof(msg)) != 1)
		r = -EBADMSG;
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return r;
}

/* @s's tier key, made HKDF(it, salt = the signed message's hash,
 * INFO_TIER_SIGNED), from its verified @tail. */
static int trusted_tier_key(const void *tail, size_t len, uint64_t object_size,
			    struct sealed *s)
{
	uint8_t msg[SIG_MSG_LEN], k[SEALED_KEY_SIZE];
	const uint8_t *tl, *f;
	uint64_t tsize;
	int r = sealed_tail_size(tail, len, object_size, &tsize, NULL);

	if (r)
		return r;
	tl = (const uint8_t *)tail + len - tsize;
	f = tl + tsize - SEALED_FOOTER_SIZE;
	r = sig_message(f, tl, rd32(f + F_NFRAMES), msg);
	if (!r)
		r = hkdf(s->tkey, msg + sizeof(SIG_LABEL), SEALED_DIGEST_SIZE,
			 INFO_TIER_SIGNED, k);
	if (!r)
		memcpy(s->tkey, k, sizeof(k));
	OPENSSL_cleanse(k, sizeof(k));
	return r;
}

int sealed_parse_trusted(const void *tail, size_t len, uint64_t object_size,
			 const uint8_t key[SEALED_KEY_SIZE],
			 const struct sealed_trust *t, struct sealed **ret)
{
	struct sealed *s;
	size_t n;
	int r;

	r = sealed_verify(tail, len, object_size, t, NULL);
	if (r)
		return r;
	r = sealed_parse(tail, len, object_size, key, &s);
	if (r)
		return r;
	/* the digests sit between the index and the signature block */
	n = (size_t)s->stored.nframes * SEALED_DIGEST_SIZE;
	s->digests = malloc(n ? n : 1);
	if (!s->digests) {
		sealed_free(s);
		return -ENOMEM;
	}
	memcpy(s->digests,
	       (const uint8_t *)tail + len - SEALED_FOOTER_SIZE -
		       SEALED_SIGBLOCK_SIZE - n,
	       n);
	/* The tier's blocks of a trusted object are bound to what was
	 * signed: blocks a mount without trust= sealed (it checks no
	 * digest, so they may hold a key holder's frames) do not open. */
	r = trusted_tier_key(tail, len, object_size, s);
	if (r) {
		sealed_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

/* ---- the disk tier's blocks ---- */

/* A block's nonce and associated data: the nonce is u64 offset || u32
 * length; the aad "WFST" || object id || u64 offset || u64 length. */
static int block_params(const struct sealed *s, uint64_t off, size_t len,
			uint8_t nonce[NONCE_LEN], uint8_t aad[BLOCK_AAD_LEN])
{
	if (len == 0 || len > INT_MAX || off > s->stored.size ||
	    len > s->stored.size - off)
		return -EINVAL;
	wr64(nonce, off);
	wr32(nonce + 8, (uint32_t)len);
	memcpy(aad, "WFST", 4);
	memcpy(aad + 4, s->object_id, SEALED_ID_SIZE);
	wr64(aad + 20, off);
	wr64(aad + 28, len);
	return 0;
}

/*
 * The tier key is the object's, so no two objects share one; within an
 * object the nonce is the block's place (offset, length), and the plain
 * bytes there are fixed (authenticated by the object's frames). So a
 * (key, nonce) pair only ever seals one message: sealing it again gives
 * the same bytes, which tells a reader of the disk no more than that
 * they are the same block, and GCM's nonce-reuse failures (the XOR of
 * two plaintexts, forged tags) need two different messages.
 */
int sealed_block_seal(struct sealed_dctx *dc, const struct sealed *s,
		      uint64_t off, size_t len, const void *src, void *dst,
		      uint8_t tag[SEALED_TAG_SIZE])
{
	uint8_t nonce[NONCE_LEN], aad[BLOCK_AAD_LEN];
	int r = block_params(s, off, len, nonce, aad);

	if (r)
		return r;
	return gcm(dc->cctx, 1, s->tkey, nonce, aad, sizeof(aad), NULL, 0, src,
		   len, dst, tag);
}

int sealed_block_open(struct sealed_dctx *dc, const struct sealed *s,
		      uint64_t off, size_t len, void *buf,
		      const uint8_t tag[SEALED_TAG_SIZE])
{
	uint8_t nonce[NONCE_LEN], aad[BLOCK_AAD_LEN], t[SEALED_TAG_SIZE];
	int r = block_params(s, off, len, nonce, aad);

	if (r)
		return r;
	memcpy(t, tag, sizeof(t));
	return gcm(dc->cctx, 0, s->tkey, nonce, aad, sizeof(aad), NULL, 0, buf,
		   len, buf, t);
}
