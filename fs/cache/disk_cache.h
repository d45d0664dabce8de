/* The disk tier of the block cache: blocks kept in a local directory, so a
 * restarted daemon serves what an earlier one fetched.
 *
 * Layout: DIR/wfs1/XX/KEY.blk, KEY the XXH3-128 (32 hex digits, XX its
 * first two) of the key material: source identity, file path, object
 * version (ETag, else size and mtime), size, mtime, block size and index.
 * A changed object has another key, so its old blocks are never served.
 *
 * A block file is a 4 KiB header (magic, the key, the length, an XXH3-64
 * of the data, whether the data is sealed and its tag, an XXH3-64 of the
 * header) and the data. Every read checks all of it, and opens sealed
 * data (struct disk_sealer); a file that fails is unlinked and counted
 * disk_corrupt, and the read is a miss.
 *
 * Crash safety: a block is written to a temporary file in the same
 * directory and renamed into place, so a killed daemon leaves either no
 * block or a whole one. There is no fsync: after a power loss a renamed
 * file may be short or hold zeros, which the length and checksum catch.
 *
 * Sharing: several daemons may use one DIR at once with no locks: names
 * are content keys, temporary names are unique per process, rename is
 * atomic and readers verify. The budget is kept by whichever daemon
 * writes: before a write that would pass it, the writer rescans DIR and
 * unlinks the least recently used files (a hit touches its file's mtime).
 *
 * Reads use O_DIRECT where the filesystem allows it (else fadvise
 * DONTNEED), so the page cache holds no second copy. Writes use O_DIRECT
 * likewise. A full disk or a read-only DIR turns writes off or shrinks the
 * budget, with one warning; readers never see an error from the tier.
 *
 * Thread-safe. */
#ifndef WFS_FS_DISK_CACHE_H
#define WFS_FS_DISK_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

struct disk_key {
	unsigned char h[16]; /* XXH3-128 of the key material, canonical */
};

/*
 * disk_key_make() - the key of block @index (of @block_size bytes) of the
 * object @path of source @source_id at version @version (an ETag, or
 * NULL), @size bytes, modified at @mtime_s.
 */
void disk_key_make(const char *source_id, const char *path, const char *version,
		   uint64_t size, int64_t mtime_s, uint64_t block_size,
		   uint64_t index, struct disk_key *ret);

#define DISK_TAG_SIZE 16

/*
 * A block kept sealed on disk (a sealed object's: its decoded bytes are
 * plaintext). The store writes what seal() made of the block, with its
 * tag, and a read opens it in place before the block counts as a hit. A
 * read that expects one kind (sealed or not) and finds the other fails its
 * check. Callers embed it in a struct of their own.
 */
struct disk_sealer {
	/* @len bytes @src sealed into @dst (not @src) and @tag.
	 * @return 0 or a negative errno (the write is not made). */
	int (*seal)(const struct disk_sealer *s, const void *src, void *dst,
		    size_t len, unsigned char tag[DISK_TAG_SIZE]);
	/* @len sealed bytes opened in place in @buf. @return 0; -EACCES:
	 * this mount cannot open it (no key), a miss and the file is kept;
	 * another negative errno: the file fails its check. */
	int (*open)(const struct disk_sealer *s, void *buf, size_t len,
		    const unsigned char tag[DISK_TAG_SIZE]);
};

struct disk_cache_config {
	const char *dir;	 /* created (one level) when missing */
	uint64_t budget;	 /* bytes of block files, headers included */
	size_t block_size;	 /* largest block */
	const char *source_id;	 /* identity of the source, for keys */
	unsigned max_queued;	 /* write-behind blocks held at once */
	unsigned max_later;	 /* blocks to write later, remembered */
	unsigned lookup_threads; /* 0: 4 */
};

struct disk_cache;

/*
 * disk_cache_new() - the store under @cfg->dir. A DIR that exists but
 * cannot be written serves reads only (one warning).
 * @return 0 and *ret, or a negative errno (DIR missing and not creatable).
 */
int disk_cache_new(const struct disk_cache_config *cfg,
		   struct disk_cache **ret);

/* --- the store, synchronous --- */

/*
 * disk_cache_read() - block @key, of @len bytes, into @buf (@cap bytes;
 * O_DIRECT when @buf is 4 KiB-aligned and @len rounded up to 4 KiB fits),
 * opened with @sealer when it was stored sealed (@sealer NULL: it must
 * not have been). Counts disk_hits and disk_bytes, or disk_misses.
 * @return 0, -ENOENT (not there), -EBADMSG (failed its check: unlinked,
 * disk_corrupt counted), -EACCES (@sealer cannot open it) or another
 * negative errno (disk_errors). After a failure @buf is unspecified.
 */
int disk_cache_read(struct disk_cache *dc, const struct disk_key *key,
		    void *buf, size_t cap, size_t len,
		    const struct disk_sealer *sealer);

/*
 * disk_cache_write() - store @len bytes of @buf (@cap bytes) as @key,
 * sealed with @sealer first unless it is NULL (@buf is left as it is: the
 * store seals into a block of its own, one writer at a time), evicting
 * least recently used blocks first so the budget holds.
 * @return 0, or a negative errno (counted in disk_errors; the first
 * ENOSPC, EROFS or EACCES is logged once and degrades the tier; a failed
 * seal is only returned).
 */
int disk_cache_write(struct disk_cache *dc, const struct disk_key *key,
		     const void *buf, size_t cap, size_t len,
		     const struct disk_sealer *sealer);

/* disk_cache_used() - bytes of block files in DIR now (a scan). */
uint64_t disk_cache_used(struct disk_cache *dc);

/* --- the filler decorator --- */

/*
 * disk_cache_chain() - where misses go: @next with @ctx fills a block from
 * the source (and calls cache_fetch_done()). Call before
 * disk_cache_start().
 */
void disk_cache_chain(struct disk_cache *dc, const struct cache_fill_ops *next,
		      void *ctx);

/*
 * disk_cache_start() - fill blocks of @c: sets @c's filled hook (blocks
 * the source filled are written behind) and starts the threads.
 * @return 0 or a negative errno.
 */
int disk_cache_start(struct disk_cache *dc, struct cache *c);

/* For cache_new(), with the struct disk_cache as its context: a block
 * whose file is in DIR is read and checked on a lookup thread; a block not
 * there (one access(2) on the caller's thread), or that fails its check,
 * goes to the chained filler; promote passes a reader's wait on. */
extern const struct cache_fill_ops disk_cache_fill_ops;

/*
 * disk_cache_stage() - put bytes [@off, @off + @len) of file @n on disk
 * without keeping them in memory (weightfs-ctl prefetch): blocks already
 * there are only marked used (no fetch); the others come through the
 * memory cache, a few ahead from the source, each written before its turn
 * ends and dropped from memory unless it was there before. After
 * disk_cache_start().
 * @return bytes of the file covered (the range clamped to it), or a
 * negative errno: the fetch's, -EIO (the object changed), -EROFS (the
 * tier does not write), or the write's.
 */
int64_t disk_cache_stage(struct disk_cache *dc, struct node *n, uint64_t off,
			 uint64_t len);

/*
 * disk_cache_stop() - stop the threads once they finished what is queued
 * (lookups go on to the chained filler, queued writes are written, then
 * blocks filled while the write queue was full and still in memory, for
 * at most 30 s). Fills ending later are not written. Call before stopping
 * the chained filler, while the memory cache is still there.
 */
void disk_cache_stop(struct disk_cache *dc);

/* disk_cache_free() - after disk_cache_stop() and the chained filler's
 * end. NULL is fine. */
void disk_cache_free(struct disk_cache *dc);

#endif
