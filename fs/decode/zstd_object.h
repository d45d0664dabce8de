/* Compressed objects: a seekable-zstd object NAME.zst (common/zstd_seekable.h)
 * shown as the file NAME with its uncompressed size (-o zstd=auto).
 *
 * Listing side: zstd_object_scan() reads the seek table of each NAME.zst
 * just listed (its tail, pinned to its validator) and renames its node NAME,
 * with the uncompressed size and a struct zstd_object, the parsed table, on
 * it (node->zobj). NAME.zst is then not shown, unless NAME exists too: then
 * both are shown as they are.
 *
 * Read side: the cache's blocks stay in uncompressed coordinates. The fetch
 * engine fills block [off, off + len) of such a file by fetching the
 * compressed bytes of the frames covering it (zstd_object_plan()), then
 * decoding them into the block on a decode thread (zstd_object_decode()).
 *
 * A struct zstd_object is immutable once made and reference counted: a
 * node holds one, a fetch in flight holds one. */
#ifndef WFS_FS_ZSTD_OBJECT_H
#define WFS_FS_ZSTD_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tree.h"

struct options;
struct source;
struct zstd_seekable;

struct zstd_object {
	/* The compressed object as the sources read it (they read only
	 * node->key): a stand-in, only key and name set. */
	struct node obj;
	uint64_t object_size; /* compressed bytes, seek table included */
	char *etag;	      /* its validator, or NULL */
	struct zstd_seekable *zs;
	int refs;   /* atomic */
	int logged; /* atomic: a corrupt frame was logged */
};

/* A suffix objects must have to be considered. */
#define ZSTD_OBJECT_SUFFIX ".zst"

/*
 * zstd_object_scan() - for each of the @n nodes just listed into @t (a tree
 * being built: before tree_finish()) that is a file NAME.zst of at least 17
 * bytes whose sibling NAME does not exist, read its seek table from @src
 * (in parallel, at most opts->connections at once); a seekable object's
 * node becomes NAME, with the uncompressed size and the table. When @prev
 * (the live tree, at a relisting; or NULL) shows NAME from the same object
 * (same validator and size), its table is reused without a request. Plain
 * .zst files stay as they are; a broken seek table is said in
 * *ret_warnings (appended lines, malloc'd) and the object stays as it is.
 * Other nodes are ignored.
 * @return the number of objects shown decoded, or -ENOMEM.
 */
int zstd_object_scan(struct source *src, const struct options *opts,
		     struct tree *t, struct node **nodes, size_t n,
		     struct tree *prev, char **ret_warnings);

/* zstd_object_scan_tree() - zstd_object_scan() of every node of @t. */
int zstd_object_scan_tree(struct source *src, const struct options *opts,
			  struct tree *t, struct tree *prev,
			  char **ret_warnings);

struct zstd_object *zstd_object_ref(struct zstd_object *z);
/* zstd_object_unref() - NULL is fine. */
void zstd_object_unref(struct zstd_object *z);

/*
 * zstd_object_plan() - the compressed bytes [*ret_off, *ret_off + *ret_len)
 * of @z's object that uncompressed bytes [@off, @off + @len) need.
 * @return 0, or -EINVAL for an empty range.
 */
int zstd_object_plan(const struct zstd_object *z, uint64_t off, size_t len,
		     uint64_t *ret_off, size_t *ret_len);

/*
 * zstd_object_in_place() - whether uncompressed bytes [@off, @off + @len)
 * can be decoded in place: their compressed bytes (zstd_object_plan()'s
 * *ret_len of them) fetched into the end of the @len-byte output buffer
 * itself, and zstd_object_decode() given that as @src (see
 * zstd_seekable_in_place()). Else they need a buffer of their own.
 */
bool zstd_object_in_place(const struct zstd_object *z, uint64_t off,
			  size_t len);

/*
 * zstd_object_decode() - decode uncompressed bytes [@off, @off + @len) of
 * @z into @dst from @src, the @src_len bytes zstd_object_plan() named
 * (separate, or at the end of @dst when zstd_object_in_place() said so).
 * Frames are verified (sizes, checksums); counted in stats. The first
 * corrupt frame of an object is logged, naming it.
 * @return 0, -EBADMSG (corrupt: @dst unspecified), -ENOMEM.
 */
int zstd_object_decode(struct zstd_object *z, const char *name, uint64_t off,
		       size_t len, const char *src, size_t src_len, char *dst);

#endif
