/* -o verify=sha256: a file whose source lists its SHA-256 (hf:// LFS
 * files: the validator is the 64-digit sha256) is checked the first time
 * it is read whole from its start, through the mount or the fast path;
 * an S3 object uploaded with a full-object SHA-256 checksum likewise
 * (asked with a HEAD when a read from its start begins).
 * The bytes are hashed as readers get them (readpath_next()), in order;
 * a piece read ahead of the hashed run is caught up from the cache when
 * the run reaches it (a window of VERIFY_WINDOW bytes: a reader jumping
 * further is not a whole read, and is not hashed). A file that does not
 * match reads EIO from then on, counts verify_failed and is logged once.
 *
 * State per file, made on first read, behind its own lock (hashing does
 * not hold node->lock). Thread-safe. */
#ifndef WFS_FS_VERIFY_H
#define WFS_FS_VERIFY_H

#include <stddef.h>
#include <stdint.h>

struct block;
struct cache;
struct node;
struct verify;

#define VERIFY_WINDOW (256ull << 20)

/* verify_check() - -EIO when @n failed its check (reads must fail),
 * else 0. */
int verify_check(struct node *n);

/*
 * verify_feed() - a reader got bytes [@pos, @pos + @len) of @n at
 * generation @gen, @len bytes at @data; hash them if they continue the
 * run (and what was read ahead of it, from @c).
 * @return 0, or -EIO when the file is now known not to match.
 */
int verify_feed(struct cache *c, struct node *n, uint32_t gen, uint64_t fsize,
		uint64_t pos, const char *data, size_t len);

struct source;

/* verify_set_source() - ask @src for checksums it keeps beside objects
 * (source_ops.sha256: S3's x-amz-checksum-sha256) for files whose
 * validator is not one. Once, before reads start. */
void verify_set_source(struct source *src);

/* verify_free() - a node's state, at its end. NULL is fine. */
void verify_free(struct verify *v);

#endif
