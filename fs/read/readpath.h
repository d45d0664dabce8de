/* Reading a file's bytes out of the block cache, shared by the FUSE read
 * operation and the fast path: state checks, readahead, and the walk over
 * the blocks a range spans. Thread-safe. */
#ifndef WFS_FS_READPATH_H
#define WFS_FS_READPATH_H

#include <stddef.h>
#include <stdint.h>

struct block;
struct cache;
struct node;
struct options;

struct readpath {
	struct cache *cache;
	const struct options *opts;
	struct node *n;
	uint32_t generation;
	uint64_t fsize; /* the file's size at that generation */
	uint64_t pos;	/* next byte to get */
	uint64_t end;	/* end of the range, clamped to the file */
};

/*
 * readpath_begin() - start reading [@off, @off + @len) of file @n from
 * @cache, with @opts' readahead: checks the file has not changed, clamps
 * the range to the file, and starts the readahead the read asks for.
 * @return 0 (the range may be empty at or past EOF), or -ESTALE when the
 * object changed (or went away) at the source.
 */
int readpath_begin(struct cache *cache, const struct options *opts,
		   struct node *n, uint64_t off, uint64_t len,
		   struct readpath *ret);

/*
 * readpath_next() - the next piece of the range: a block, with a
 * reference held (release with cache_unref()), and where in it the piece
 * starts and how long it is.
 * @return 1 and the piece, 0 at the end of the range, or the fetch's
 * classified negative errno (source.h).
 */
int readpath_next(struct readpath *rp, struct block **ret_block,
		  size_t *ret_off, size_t *ret_len);

#endif
