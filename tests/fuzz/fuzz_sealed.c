/* Fuzz the sealed-object parser and frame opener (common/sealed.c). Each
 * input is a whole object, read with the fixed key the seeds were sealed
 * with (tests/fuzz/run-fuzz-sealed): the tail alone, then the whole object;
 * a parsed object must be self-consistent, every frame is read alone and a
 * range cut mid-frame is read, and streamed (stored frames) in pieces to
 * the same end. It must not crash, leak or read out of
 * bounds; a damaged frame must fail, never give bytes (the tags cannot be
 * forged, so what decodes is what was sealed). Signed seeds are signed by
 * the fixed Ed25519 key below: the signature check runs on every input,
 * and an object it accepts is read again with its frames' digests checked;
 * it must read the same as without. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "sealed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The seeds' key: 32 bytes 0x01..0x20 (run-fuzz-sealed writes it). */
static const uint8_t key[SEALED_KEY_SIZE] = {
	1,  2,	3,  4,	5,  6,	7,  8,	9,  10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
};

/* Streaming the same stored bytes in pieces (stored frames only) agrees
 * with sealed_read()'s @n bytes @want: the same bytes, or a failure. */
static void stream_agrees(const struct sealed *s, uint64_t off,
			  const uint8_t *src, size_t len, const uint8_t *want,
			  ssize_t n)
{
	struct sealed_stream *st = NULL;
	uint8_t *got = malloc(3000);
	size_t at, piece = 1 + len % 7919;
	int r;

	if (!got || sealed_stream_new(s, off, 3000, got, &st)) {
		free(got);
		return;
	}
	for (r = 0, at = 0; !r && at < len; at += piece)
		r = sealed_stream_put(st, src + at,
				      len - at < piece ? len - at : piece);
	if (!r)
		r = sealed_stream_end(st);
	if ((r == 0) != (n >= 0) || (!r && memcmp(got, want, n)))
		abort();
	sealed_stream_free(st);
	free(got);
}

/* The seeds' signing key: the Ed25519 private key whose seed is 32 bytes
 * 0x21..0x40 (run-fuzz-sealed writes it as PEM). */
static struct sealed_trust *trust(void)
{
	static struct sealed_trust *t;
	uint8_t seed[32], pub[SEALED_PUBKEY_SIZE];
	size_t n = sizeof(pub);
	EVP_PKEY *pk;

	if (t)
		return t;
	for (int i = 0; i < 32; i++)
		seed[i] = 0x21 + i;
	pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
	if (!pk || EVP_PKEY_get_raw_public_key(pk, pub, &n) != 1 ||
	    sealed_trust_new(&t) || sealed_trust_add(t, pub))
		abort();
	EVP_PKEY_free(pk);
	return t;
}

/* A signed object the signature check accepts reads, with its frames'
 * digests checked, what @s (its tags alone) reads. */
static void check_trusted(const uint8_t *data, size_t size, uint64_t tsize,
			  const struct sealed *s, struct sealed_dctx *dc)
{
	struct sealed *st = NULL, *tt = NULL;
	uint8_t *a = NULL, *b = NULL;
	uint32_t i;

	if (sealed_verify(data + size - tsize, tsize, size, trust(), NULL))
		return;
	/* the tail alone and the whole object agree here too */
	if ((sealed_parse_trusted(data + size - tsize, tsize, size, key,
				  trust(), &tt) == 0) !=
	    (sealed_parse_trusted(data, size, size, key, trust(), &st) == 0))
		abort();
	if (!st)
		goto out;
	if (!s || !st->digests)
		abort();
	for (i = 0; i < st->stored.nframes && i < 64; i++) {
		const struct zstd_seekable_frame *f = &st->stored.frames[i];
		ssize_t na, nb;

		if (f->dsize > (1u << 20))
			continue;
		a = malloc(f->dsize);
		b = malloc(f->dsize);
		if (!a || !b)
			break;
		na = sealed_read(dc, st, f->doff, f->dsize, data + f->coff,
				 f->csize, a);
		nb = sealed_read(dc, s, f->doff, f->dsize, data + f->coff,
				 f->csize, b);
		/* the digests were signed over these very bytes */
		if (na != nb || (na > 0 && memcmp(a, b, na)))
			abort();
		free(a);
		free(b);
		a = b = NULL;
	}
out:
	free(a);
	free(b);
	sealed_free(st);
	sealed_free(tt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sealed *tail = NULL, *s = NULL;
	struct sealed_dctx *dc = NULL;
	uint64_t tsize, sum = 0;
	uint32_t i, first, count;
	uint8_t *out = NULL;

	if (size < SEALED_FOOTER_SIZE ||
	    sealed_tail_size(data, size, size, &tsize, NULL))
		return 0;
	if (tsize > size)
		abort();
	/* the tail alone, as a mount fetches it, and the whole object agree */
	if ((sealed_parse(data + size - tsize, tsize, size, key, &tail) == 0) !=
	    (sealed_parse(data, size, size, key, &s) == 0))
		abort();
	if (!s || sealed_dctx_new(&dc))
		goto out;
	check_trusted(data, size, tsize, s, dc);
	for (i = 0; i < s->stored.nframes; i++) {
		const struct zstd_seekable_frame *f = &s->stored.frames[i];

		if (f->coff + f->csize > size - tsize || f->doff != sum)
			abort();
		sum += f->dsize;
	}
	if (sum != s->stored.size)
		abort();
	for (i = 0; i < s->stored.nframes && i < 64; i++) {
		const struct zstd_seekable_frame *f = &s->stored.frames[i];
		ssize_t n;

		if (f->dsize > (1u << 20))
			continue;
		out = malloc(f->dsize);
		if (!out)
			break;
		n = sealed_read(dc, s, f->doff, f->dsize, data + f->coff,
				f->csize, out);
		if (n >= 0 && (uint64_t)n != f->dsize)
			abort();
		free(out);
		out = NULL;
	}
	zstd_seekable_range(&s->stored, size % (s->stored.size + 1), 3000,
			    &first, &count);
	if (count && s->stored.max_dsize <= (1u << 20)) {
		const struct zstd_seekable_frame *a = &s->stored.frames[first];
		const struct zstd_seekable_frame *z =
			&s->stored.frames[first + count - 1];
		ssize_t n;

		out = malloc(3000);
		if (!out)
			goto out;
		n = sealed_read(dc, s, size % (s->stored.size + 1), 3000,
				data + a->coff, z->coff + z->csize - a->coff,
				out);
		if (n > 3000)
			abort();
		stream_agrees(s, size % (s->stored.size + 1), data + a->coff,
			      z->coff + z->csize - a->coff, out, n);
	}
out:
	free(out);
	sealed_dctx_free(dc);
	sealed_free(tail);
	sealed_free(s);
	return 0;
}
