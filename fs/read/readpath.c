#include "readpath.h"

#include <errno.h>

#include "cache.h"
#include "fetch.h"
#include "opts.h"
#include "stats.h"
#include "tensor_ahead.h"
#include "tree.h"
#include "verify.h"

/* Start fetching the blocks in the readahead window after a read of
 * [off, end), in steps of a request: blocks are asked for once at least
 * request_size of them are missing (or the window reaches the file's end,
 * or a missing block is within a request of the read), and all at once
 * (fetch_batch_begin()), so the fetch engine gets them together and moves
 * them with one ranged GET, not one per block. One thread at a time per
 * file issues (readahead_issue_begin()): two claiming the blocks of one
 * step in turn would split it. */
static void read_ahead(struct cache *c, const struct options *o, struct node *n,
		       uint32_t gen, uint64_t fsize, uint64_t off, uint64_t end)
{
	uint64_t bs = cache_block_size(c);
	uint64_t max = cache_headroom(c) / 2, window, i, first, last, step;
	uint64_t missing = 0, first_missing = UINT64_MAX;
	struct readahead *ra = node_readahead(n);

	if (max > o->readahead_max)
		max = o->readahead_max;
	/* A safetensors file's data section: whole tensors, in the order
	 * readers take them (tensor_ahead.h). */
	if (tensor_ahead_read(c, n, gen, fsize, off, end, max, o->request_size))
		return;
	window = readahead_update(ra, off, end - off, 2 * bs, max);
	if (!window || !readahead_issue_begin(ra, end))
		return;
	first = (end + bs - 1) / bs;
	last = end + window < fsize ? (end + window + bs - 1) / bs
				    : (fsize + bs - 1) / bs;
	step = o->request_size > bs ? o->request_size / bs : 1;
	for (i = first; i < last && step > 1; i++) {
		if (cache_has(c, n, gen, i))
			continue;
		missing++;
		if (first_missing == UINT64_MAX)
			first_missing = i;
	}
	if (step > 1 && (!missing || (missing < step && last * bs < fsize &&
				      first_missing >= first + step))) {
		readahead_issue_end(ra);
		return;
	}
	fetch_batch_begin();
	for (i = first; i < last; i++) {
		uint64_t len = fsize - i * bs < bs ? fsize - i * bs : bs;

		if (cache_prefetch_stream(c, n, gen, i, len, fsize) < 0)
			break;
	}
	fetch_batch_end();
	readahead_issue_end(ra);
}

int readpath_begin(struct cache *cache, const struct options *opts,
		   struct node *n, uint64_t off, uint64_t len,
		   struct readpath *ret)
{
	uint64_t fsize;
	uint32_t gen;
	bool changed;

	changed = node_version(n, &fsize, &gen);
	if (changed)
		return -ESTALE;
	if (opts->verify_sha256 && verify_check(n))
		return -EIO;
	ret->cache = cache;
	ret->opts = opts;
	ret->n = n;
	ret->generation = gen;
	ret->fsize = fsize;
	ret->pos = off < fsize ? off : fsize;
	ret->end = len < fsize - ret->pos ? ret->pos + len : fsize;
	if (ret->pos < ret->end) {
		STAT_ADD(reads, 1);
		if (opts->prefetch != PREFETCH_OFF)
			read_ahead(cache, opts, n, gen, fsize, ret->pos,
				   ret->end);
	}
	return 0;
}

int readpath_next(struct readpath *rp, struct block **ret_block,
		  size_t *ret_off, size_t *ret_len)
{
	uint64_t bs = cache_block_size(rp->cache), fsize, idx, boff, blen, take;
	int err;

	if (rp->pos >= rp->end)
		return 0;
	/* The size the range was clamped to, not one a relist set since:
	 * a block shorter than the range would be read past its end. */
	fsize = rp->fsize;
	idx = rp->pos / bs;
	boff = rp->pos - idx * bs;
	blen = fsize - idx * bs < bs ? fsize - idx * bs : bs;
	take = blen - boff < rp->end - rp->pos ? blen - boff
					       : rp->end - rp->pos;
	err = cache_get(rp->cache, rp->n, rp->generation, idx, blen, ret_block);
	if (err)
		return err;
	if (rp->opts->verify_sha256) {
		err = verify_feed(rp->cache, rp->n, rp->generation, fsize,
				  rp->pos, (*ret_block)->data + boff, take);
		if (err) {
			cache_unref(rp->cache, *ret_block);
			*ret_block = NULL;
			return err;
		}
	}
	rp->pos += take;
	STAT_ADD(bytes_read, take);
	*ret_off = boff;
	*ret_len = take;
	return 1;
}
