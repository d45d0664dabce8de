/* Seekable zstd (common/zstd_seekable.h) behind struct decoder_ops: an
 * object NAME.zst shown as the file NAME with its uncompressed size (-o
 * zstd=auto). It is opened from its tail, the seek table (read again
 * whole when the first read held only part of it); a block's compressed
 * bytes are the frames covering it, decoded in place when they fit. */
#include "zstd_object.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decoder.h"
#include "opts.h"
#include "stats.h"
#include "zstd_seekable.h"

/* The first read of an object's tail: most seek tables fit (a 1 MiB
 * frame's entry is 12 bytes: 64 KiB covers 5 GiB of data). */
#define TAIL_FIRST (64u << 10)
/* A seek table larger than this is not believed (128 M frames of 12 bytes
 * would be 1.5 GiB). */
#define TABLE_MAX (256u << 20)

static int zstd_plan(const struct decoded *d, uint64_t off, size_t len,
		     uint64_t *ret_off, size_t *ret_len, bool *ret_in_place)
{
	const struct zstd_seekable *zs = d->priv;
	const struct zstd_seekable_frame *fr;
	uint32_t first, count;

	zstd_seekable_range(zs, off, len, &first, &count);
	if (!count)
		return -EINVAL;
	fr = &zs->frames[first + count - 1];
	*ret_off = zs->frames[first].coff;
	*ret_len = (size_t)(fr->coff + fr->csize - *ret_off);
	*ret_in_place = zstd_seekable_in_place(zs, off, len);
	return 0;
}

/* A decoding context per thread, freed with it. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;

static void dctx_destroy(void *p)
{
	zstd_seekable_dctx_free(p);
}

static void dctx_key_init(void)
{
	pthread_key_create(&dctx_key, dctx_destroy);
}

static struct zstd_seekable_dctx *thread_dctx(void)
{
	struct zstd_seekable_dctx *dc;

	pthread_once(&dctx_once, dctx_key_init);
	dc = pthread_getspecific(dctx_key);
	if (!dc && !zstd_seekable_dctx_new(&dc))
		pthread_setspecific(dctx_key, dc);
	return dc;
}

/* After a failed decode: which frame of [first, first + count) is bad.
 * The last one that fails: a decode in place has overwritten the input of
 * the frames before the bad one, never of those after it. */
static uint32_t find_bad_frame(struct zstd_seekable_dctx *dc,
			       const struct zstd_seekable *zs, uint32_t first,
			       uint32_t count, const char *src)
{
	char *scratch = malloc(zs->max_dsize ? zs->max_dsize : 1);
	uint64_t base = zs->frames[first].coff;
	uint32_t i;

	for (i = first + count; scratch && i-- > first;) {
		const struct zstd_seekable_frame *fr = &zs->frames[i];

		if (zstd_seekable_decode(dc, zs, i, src + (fr->coff - base),
					 fr->csize, scratch,
					 zs->max_dsize) < 0) {
			free(scratch);
			return i;
		}
	}
	free(scratch);
	return first;
}

static int zstd_decode(const struct decoded *d, uint64_t off, size_t len,
		       const char *src, size_t src_len, char *dst)
{
	const struct zstd_seekable *zs = d->priv;
	struct zstd_seekable_dctx *dc = thread_dctx();
	uint32_t first, count;
	ssize_t got;

	if (!dc)
		return -ENOMEM;
	zstd_seekable_range(zs, off, len, &first, &count);
	got = zstd_seekable_read(dc, zs, off, len, src, src_len, dst);
	if (got == (ssize_t)len) {
		STAT_ADD(frames_decoded, count);
		return 0;
	}
	return got == -ENOMEM ? -ENOMEM : -EBADMSG;
}

static void zstd_describe(const struct decoded *d, uint64_t off, size_t len,
			  const char *src, char *buf, size_t cap)
{
	const struct zstd_seekable *zs = d->priv;
	struct zstd_seekable_dctx *dc = thread_dctx();
	const struct zstd_seekable_frame *fr;
	uint32_t first, count, bad;

	zstd_seekable_range(zs, off, len, &first, &count);
	if (!dc || !count)
		return;
	bad = find_bad_frame(dc, zs, first, count, src);
	fr = &zs->frames[bad];
	snprintf(buf, cap,
		 "frame %" PRIu32 " of %s (compressed bytes %" PRIu64
		 "-%" PRIu64 ")",
		 bad, d->obj.key, fr->coff, fr->coff + fr->csize);
}

/* ---- opening: the seek table ---- */

static int zstd_config_new(const struct options *opts, void **ret_cfg,
			   char **ret_msg)
{
	static int on; /* no configuration: a non-NULL token */

	*ret_cfg = opts->zstd ? &on : NULL;
	return 0;
}

static size_t zstd_shown_len(void *cfg, const char *name, uint64_t size)
{
	size_t len = strlen(name), sl = strlen(ZSTD_OBJECT_SUFFIX);

	if (size < ZSTD_SEEKABLE_TABLE_MIN || len <= sl ||
	    strcmp(name + len - sl, ZSTD_OBJECT_SUFFIX))
		return 0;
	return len - sl;
}

static void zstd_first_range(void *cfg, uint64_t size, uint64_t *ret_off,
			     size_t *ret_len)
{
	*ret_len = size < TAIL_FIRST ? (size_t)size : TAIL_FIRST;
	*ret_off = size - *ret_len;
}

/* The tail [off, off + len) is in: parse it, or ask for the whole table
 * when it is larger (once). */
static int zstd_open(void *cfg, uint64_t size, uint64_t off, const char *buf,
		     size_t len, void **priv, uint64_t *ret_size,
		     uint64_t *ret_off, size_t *ret_len)
{
	struct zstd_seekable *zs;
	uint64_t tsize;
	int err;

	err = zstd_seekable_table_size(buf, len, size, &tsize);
	if (!err && tsize > len) {
		/* A second read (longer than the first) held the whole
		 * table: it cannot be larger still. */
		if (len > TAIL_FIRST || tsize > TABLE_MAX || tsize > size)
			return -EPROTO;
		*ret_len = (size_t)tsize;
		*ret_off = size - tsize;
		return 1;
	}
	if (!err)
		err = zstd_seekable_parse(buf, len, size, &zs);
	if (err)
		return err;
	*priv = zs;
	*ret_size = zs->size;
	return 0;
}

static void zstd_free(void *priv)
{
	zstd_seekable_free(priv);
}

const struct decoder_ops zstd_decoder_ops = {
	.name = "zstd",
	.what = "zstd seek table",
	.config_new = zstd_config_new,
	.shown_len = zstd_shown_len,
	.first_range = zstd_first_range,
	.open = zstd_open,
	.plan = zstd_plan,
	.decode = zstd_decode,
	.describe = zstd_describe,
	.free = zstd_free,
};
