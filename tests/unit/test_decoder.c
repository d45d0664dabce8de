/* Unit tests for the decoder seam (fs/decode/decoder.c) with its first
 * decoder, seekable zstd: objects listed into a tree are opened through
 * fetch_ranges() from an in-memory source (read_block, failures
 * scripted), renamed and sized; their blocks plan and decode to the
 * original bytes; broken and foreign objects stay as they are; a relisting
 * reuses what it has. And the one retry policy's verdicts. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "check.h"
#include "decoder.h"
#include "http.h"
#include "opts.h"
#include "source.h"
#include "stats.h"
#include "tree.h"
#include "zstd_seekable.h"

#define STAT(f) ((unsigned long long)atomic_load(&stats.f))

/* An in-memory source: objects by key; the next @fail reads fail. */
struct mem_object {
	const char *key;
	const uint8_t *buf;
	size_t len;
};

struct mem_source {
	struct source s;
	struct mem_object objs[8];
	unsigned nobjs;
	unsigned fail; /* reads still to fail with -ECONNRESET */
	unsigned reads;
};

static int mem_read(struct source *s, const struct node *file, const char *etag,
		    uint64_t off, size_t len, char *buf)
{
	struct mem_source *m = (struct mem_source *)s;

	m->reads++;
	if (m->fail) {
		m->fail--;
		return -ECONNRESET;
	}
	for (unsigned i = 0; i < m->nobjs; i++) {
		const struct mem_object *o = &m->objs[i];

		if (strcmp(o->key, file->key))
			continue;
		if (off + len > o->len)
			return -ESTALE;
		memcpy(buf, o->buf + off, len);
		return 0;
	}
	return -ENOENT;
}

static void mem_free(struct source *s)
{
}

static const struct source_ops mem_ops = {
	.read_block = mem_read,
	.free = mem_free,
};

/* A seekable object of @n bytes of @data in frames of @fsize, checksums
 * on; *ret_len its size. */
static uint8_t *build(const uint8_t *data, size_t n, size_t fsize,
		      size_t *ret_len)
{
	struct zstd_seekable_frame fr[64];
	size_t cap = ZSTD_compressBound(n) + 64 * 64 + 1024, len = 0, off;
	uint8_t *buf = malloc(cap);
	uint32_t nf = 0;

	for (off = 0; off < n; off += fsize) {
		size_t m = n - off < fsize ? n - off : fsize;
		size_t c =
			ZSTD_compress(buf + len, cap - len, data + off, m, 3);

		CHECK(!ZSTD_isError(c) && nf < 64);
		fr[nf].csize = (uint32_t)c;
		fr[nf].dsize = (uint32_t)m;
		fr[nf++].checksum = zstd_seekable_checksum(data + off, m);
		len += c;
	}
	len += zstd_seekable_write_table(fr, nf, 1, 0, buf + len, cap - len);
	*ret_len = len;
	return buf;
}

static uint8_t *sample(size_t n)
{
	uint8_t *d = malloc(n);
	uint32_t x = 12345;

	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245U + 12345U;
		d[i] = (i & 1) ? (uint8_t)(0x3c + ((x >> 16) & 3))
			       : (uint8_t)(x >> 20);
	}
	return d;
}

static struct node *add(struct tree *t, const char *key, uint64_t size,
			const char *etag)
{
	struct timespec mt = { 0 };
	struct node *n = NULL;

	CHECK_EQ(tree_add(t, key, false, size, mt, etag, &n), 0);
	return n;
}

static struct node *lookup(struct tree *t, const char *name)
{
	return tree_lookup(t, tree_root(t), name);
}

int main(void)
{
	size_t n = 300000, zlen, i;
	uint8_t *data = sample(n), *z = build(data, n, 65536, &zlen);
	uint8_t *broken = malloc(zlen), junk[4096];
	struct mem_source m = { .s = { .ops = &mem_ops, .display = "mem" } };
	struct options opts = { .connections = 4, .retries = 3, .zstd = true };
	struct decoders *ds = NULL;
	struct tree *t = NULL, *t2 = NULL;
	char *msg = NULL, *warnings = NULL, *out = malloc(n);
	struct node *w;
	unsigned reads;

	memcpy(broken, z, zlen);
	broken[zlen - 9] ^= 0x01; /* the footer's frame count */
	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7);
	m.objs[m.nobjs++] = (struct mem_object){ "w.bin.zst", z, zlen };
	m.objs[m.nobjs++] =
		(struct mem_object){ "broken.bin.zst", broken, zlen };
	m.objs[m.nobjs++] =
		(struct mem_object){ "plain.zst", junk, sizeof(junk) };
	m.objs[m.nobjs++] = (struct mem_object){ "side.bin.zst", z, zlen };

	/* Listing: opened through two transient failures (retried). */
	CHECK_EQ(decoders_new(&opts, &ds, &msg), 0);
	CHECK_EQ(tree_new(&t), 0);
	add(t, "w.bin.zst", zlen, "\"e1\"");
	add(t, "broken.bin.zst", zlen, "\"e2\"");
	add(t, "plain.zst", sizeof(junk), "\"e3\"");
	add(t, "side.bin.zst", zlen, "\"e4\"");
	add(t, "side.bin", 5, "\"e5\"");
	m.fail = 2;
	CHECK_EQ(decoders_scan_tree(ds, &m.s, &opts, t, NULL, &warnings), 1);
	CHECK(tree_finish(t) == 0, "tree_finish");
	w = lookup(t, "w.bin");
	CHECK(w && w->dec, "w.bin.zst shown as w.bin");
	CHECK(!lookup(t, "w.bin.zst"), "and not as itself");
	CHECK_EQ(w->size, n);
	CHECK_EQ(w->dec->object_size, zlen);
	CHECK_STREQ(w->dec->obj.key, "w.bin.zst");
	CHECK_STREQ(w->etag, "\"e1\"");
	CHECK(lookup(t, "broken.bin.zst") && !lookup(t, "broken.bin"),
	      "a broken table: as it is");
	CHECK(lookup(t, "plain.zst") && !lookup(t, "plain"),
	      "not seekable: as it is");
	CHECK(lookup(t, "side.bin.zst") && !lookup(t, "side.bin.zst")->dec,
	      "NAME listed too: both as they are");
	CHECK(warnings && strstr(warnings, "broken.bin.zst: a broken zstd "
					   "seek table; shown as it is"),
	      "%s", warnings ? warnings : "(none)");
	CHECK(!strstr(warnings, "plain.zst"), "%s", warnings);

	/* Reading: plan and decode, whole and from the middle. */
	for (int pass = 0; pass < 2; pass++) {
		uint64_t off = pass ? 70000 : 0, soff;
		size_t len = pass ? 100000 : n, slen;
		bool in_place;

		CHECK_EQ(decoded_plan(w->dec, "w.bin", off, len, &soff, &slen,
				      &in_place),
			 0);
		CHECK(soff + slen <= zlen);
		memset(out, 0, n);
		CHECK_EQ(decoded_decode(w->dec, "w.bin", off, len,
					(const char *)z + soff, slen, out),
			 0);
		CHECK(!memcmp(out, data + off, len), "pass %d bytes", pass);
	}
	{
		uint64_t soff;
		size_t slen;
		bool in_place;
		char *bad;

		CHECK_EQ(decoded_plan(w->dec, "w.bin", 0, 1000, &soff, &slen,
				      &in_place),
			 0);
		bad = malloc(slen);
		memcpy(bad, z + soff, slen);
		bad[slen / 2] ^= 0x40;
		CHECK_EQ(decoded_decode(w->dec, "w.bin", 0, 1000, bad, slen,
					out),
			 -EBADMSG);
		free(bad);
	}

	/* A relisting of the same objects reuses the state: no reads. */
	CHECK_EQ(tree_new(&t2), 0);
	add(t2, "w.bin.zst", zlen, "\"e1\"");
	reads = m.reads;
	CHECK_EQ(decoders_scan_tree(ds, &m.s, &opts, t2, t, &warnings), 1);
	CHECK_EQ(m.reads, reads);
	CHECK(lookup(t2, "w.bin") && lookup(t2, "w.bin")->dec == w->dec,
	      "the same state, shared");
	tree_free(t2);

	/* A read failing past every retry: as it is, said why. */
	CHECK_EQ(tree_new(&t2), 0);
	add(t2, "w.bin.zst", zlen, "\"e9\"");
	m.fail = 10;
	CHECK_EQ(decoders_scan_tree(ds, &m.s, &opts, t2, NULL, &warnings), 0);
	CHECK(strstr(warnings, "w.bin.zst: reading its zstd seek table "
			       "failed"),
	      "%s", warnings);
	CHECK_EQ(m.fail, 10 - 4); /* the first attempt and 3 retries */
	m.fail = 0;
	tree_free(t2);
	decoders_free(ds);

	/* -o zstd=off: no decoder, nothing read. */
	opts.zstd = false;
	CHECK_EQ(decoders_new(&opts, &ds, &msg), 0);
	CHECK_EQ(tree_new(&t2), 0);
	add(t2, "w.bin.zst", zlen, "\"e1\"");
	reads = m.reads;
	CHECK_EQ(decoders_scan_tree(ds, &m.s, &opts, t2, NULL, &warnings), 0);
	CHECK_EQ(m.reads, reads);
	tree_free(t2);
	decoders_free(ds);

	/* The one retry policy. */
	CHECK(http_retryable(-ECONNRESET, 0) && http_retryable(-EIO, 0) &&
	      http_retryable(-EAGAIN, 0) && http_retryable(-ETIMEDOUT, 0));
	CHECK(http_retryable(-ECONNREFUSED, 0));
	CHECK(!http_retryable(-ECONNREFUSED, HTTP_RETRY_REACHABLE));
	CHECK(!http_retryable(-EHOSTUNREACH, HTTP_RETRY_REACHABLE));
	CHECK(http_retryable(-ECONNRESET, HTTP_RETRY_REACHABLE));
	CHECK(!http_retryable(-ECONNRESET, HTTP_RETRY_NEVER));
	CHECK(!http_retryable(-ESTALE, 0) && !http_retryable(-ENOENT, 0) &&
	      !http_retryable(-EPROTO, 0) && !http_retryable(-EACCES, 0));
	CHECK(!http_retryable(-EBADMSG, 0) &&
	      !http_retryable(DECODER_EAUTH, 0));

	tree_free(t);
	free(warnings);
	free(msg);
	free(out);
	free(broken);
	free(z);
	free(data);
	printf("decoder: ok\n");
	return 0;
}
