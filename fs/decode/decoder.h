/* Decoders: objects stored in another form (seekable zstd NAME.zst;
 * sealed frames next) shown as plain files, each kind behind struct
 * decoder_ops. Nothing outside fs/decode asks which kind a file has.
 *
 * Listing side: decoders_scan() offers each file just listed to every
 * decoder the mount enabled; one that recognises its name (NAME.zst) has
 * its first range read (a tail, or a header: fetch_ranges(), the one
 * request path), maybe a second, and opens it: the node is renamed NAME,
 * shows the decoded size and holds a struct decoded (node->dec). An
 * object the decoder does not recognise or cannot open stays as it is
 * (with a warning when broken).
 *
 * Read side: the cache's blocks stay in decoded coordinates. The fetch
 * engine fills block [off, off + len) of such a file by fetching the
 * stored bytes decoded_plan() names, then decoded_decode() turns them
 * into the block on a decode worker (decode_pool.h). The disk tier keeps
 * decoded blocks, sealed again by the decoders that offer seal_block.
 *
 * A struct decoded is immutable once made and reference counted: a node
 * holds one, a fetch in flight holds one.
 *
 * Adding a decoder: a file with its struct decoder_ops, a line in
 * decoder.c's list, a line in fs/meson.build. */
#ifndef WFS_FS_DECODER_H
#define WFS_FS_DECODER_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tree.h"

struct decoded;
struct options;
struct source;

/*
 * Errors a decoder returns (negative errnos), beside -ENOMEM:
 * -ENOMSG	open: not an object of this kind (shown as it is, silently)
 * -EPROTO	open: its header or table is broken (shown as it is, warned)
 * -EBADMSG	decode: a frame is corrupt (sizes, checksum)
 * -EKEYREJECTED open or decode: authentication failed (a wrong key, or
 *		bytes changed in storage or on the way): never I/O, never
 *		retried (http_retryable()), said as such in the log
 * The reader gets EIO for the last three (ops.c read_error()).
 */
#define DECODER_EAUTH (-EKEYREJECTED)
/* The tag a sealed disk tier block carries (seal_block below). */
#define DECODER_TAG_SIZE 16

struct decoder_ops {
	const char *name; /* "zstd": for logs */
	const char *what; /* what open() reads, for messages: "zstd seek
			     table" */
	/*
	 * Optional: the mount's configuration of this decoder (a key file's
	 * key...), made once at mount from @opts. *ret_cfg NULL: the decoder
	 * is off for this mount (e.g. -o zstd=off).
	 * @return 0, or a negative errno and *ret_msg (the mount fails).
	 * NULL op: on, with no configuration.
	 */
	int (*config_new)(const struct options *opts, void **ret_cfg,
			  char **ret_msg);
	void (*config_free)(void *cfg);
	/*
	 * The length of the name listed file @name (@size stored bytes) is
	 * shown as when it may be an object of this kind ("w.bin.zst": 5,
	 * "w.bin"), or 0 when it cannot be.
	 */
	size_t (*shown_len)(void *cfg, const char *name, uint64_t size);
	/* The first stored bytes to read to open an object of @size bytes:
	 * its tail, or its header. */
	void (*first_range)(void *cfg, uint64_t size, uint64_t *ret_off,
			    size_t *ret_len);
	/*
	 * Open an object of @size stored bytes from its bytes [@off, @off +
	 * @len) in @buf (the last range asked for). *@priv is NULL at the
	 * first call and kept between calls (a header read first, kept
	 * while the tail is read); after a failure, what is left there is
	 * freed with the free op below.
	 * @return 0 and *@priv (the object's state) and *ret_size (its
	 * decoded size); 1 and *ret_off, *ret_len: read that range next and
	 * call again; or an error above.
	 */
	int (*open)(void *cfg, uint64_t size, uint64_t off, const char *buf,
		    size_t len, void **priv, uint64_t *ret_size,
		    uint64_t *ret_off, size_t *ret_len);
	/*
	 * The stored bytes [*ret_off, *ret_off + *ret_len) that decoded
	 * bytes [@off, @off + @len) need (whole frames, one contiguous
	 * range), and whether they may be fetched into the end of the
	 * @len-byte output buffer and decoded in place (*ret_in_place).
	 * @return 0, or -EINVAL for an empty range.
	 */
	int (*plan)(const struct decoded *d, uint64_t off, size_t len,
		    uint64_t *ret_off, size_t *ret_len, bool *ret_in_place);
	/*
	 * Decode bytes [@off, @off + @len) of @d into @dst from @src, the
	 * @src_len bytes plan() named (separate, or at the end of @dst when
	 * it said in place). Thread-safe; runs on decode workers.
	 * @return 0, -EBADMSG, DECODER_EAUTH (@dst unspecified), -ENOMEM.
	 */
	int (*decode)(const struct decoded *d, uint64_t off, size_t len,
		      const char *src, size_t src_len, char *dst);
	/*
	 * Optional, for decoders cheap per byte (decryption): decode bytes
	 * [@off, @off + @len) of @d into @dst as plan()'s stored bytes
	 * arrive, in order and in pieces of any size, on the thread that
	 * receives them: no scratch buffer, one pass over memory. @dst's
	 * bytes are the block's only once stream_end() returned 0.
	 * stream_new @return 0 and *@ret, -EOPNOTSUPP (not this object:
	 * plan() and decode() it), -ENOMEM, -EIO; stream_put and stream_end
	 * @return 0 or decode()'s errors; stream_free takes NULL.
	 */
	int (*stream_new)(const struct decoded *d, uint64_t off, size_t len,
			  char *dst, void **ret);
	int (*stream_put)(void *st, const char *p, size_t n);
	int (*stream_end)(void *st);
	void (*stream_free)(void *st);
	/*
	 * Optional: after a failed decode of [@off, @off + @len) from @src,
	 * where the fault is, naming the stored object (d->obj.key), for
	 * the log (e.g. "frame 3 of w.bin.zst (compressed bytes 100-200)"),
	 * into @buf. Without it, the log names the object.
	 */
	void (*describe)(const struct decoded *d, uint64_t off, size_t len,
			 const char *src, char *buf, size_t cap);
	/*
	 * Optional, both or neither: the disk tier keeps this decoder's
	 * blocks sealed, never as decoded bytes (sealed objects: those are
	 * plaintext). Without them it keeps decoded blocks as they are.
	 * seal_block(): decoded bytes [@off, @off + @len) of @d, @src, sealed
	 * into @dst (@len bytes, not @src) and @tag; sealing a block again
	 * gives the same bytes.
	 * open_block(): the reverse, in place in @buf, authenticated: after a
	 * failure @buf holds bytes that must not be used.
	 * Thread-safe.
	 * @return 0; -EACCES (the mount has no key for @d: nothing done);
	 * DECODER_EAUTH (open: not this block of @d, or changed); -ENOMEM,
	 * -EINVAL, -EIO.
	 */
	int (*seal_block)(const struct decoded *d, uint64_t off, size_t len,
			  const char *src, char *dst,
			  unsigned char tag[DECODER_TAG_SIZE]);
	int (*open_block)(const struct decoded *d, uint64_t off, size_t len,
			  char *buf, const unsigned char tag[DECODER_TAG_SIZE]);
	/*
	 * Optional: whether the mount refuses object @priv, just opened
	 * (listed, its reads fail with EACCES: plan() says so), and why,
	 * into @buf, for one warning at listing (a sealed object that no
	 * trusted publisher signed).
	 */
	bool (*refused)(const void *priv, char *buf, size_t cap);
	/* Free an object's state. */
	void (*free)(void *priv);
};

struct decoded {
	const struct decoder_ops *ops;
	void *cfg;  /* the mount's configuration of ops */
	void *priv; /* the object's state: ops->open()'s */
	/* The stored object as the sources read it (they read only
	 * node->key): a stand-in, only key and name set. */
	struct node obj;
	uint64_t object_size; /* stored bytes */
	uint64_t size;	      /* decoded bytes */
	char *etag;	      /* its validator, or NULL */
	int refs;	      /* atomic */
	int logged;	      /* atomic: a failed decode was logged */
};

/* decoded_ref(), decoded_unref() - inline, so that the tree and the
 * fetch engine hold references without calling into the decode layer
 * (which calls the tree). decoded_unref(): NULL is fine. */
static inline struct decoded *decoded_ref(struct decoded *d)
{
	if (d)
		__atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
	return d;
}

static inline void decoded_unref(struct decoded *d)
{
	if (!d || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL))
		return;
	d->ops->free(d->priv);
	free(d->obj.key);
	free(d->etag);
	free(d);
}

/* decoded_plan() - @d's ops->plan(); an object the mount has no key for
 * (-EACCES) is logged once, naming @name (the file). */
int decoded_plan(struct decoded *d, const char *name, uint64_t off, size_t len,
		 uint64_t *ret_off, size_t *ret_len, bool *ret_in_place);

/*
 * decoded_decode() - @d's ops->decode(), counted in stats; the first
 * failure of an object is logged, naming @name (the file) and where the
 * fault is.
 */
int decoded_decode(struct decoded *d, const char *name, uint64_t off,
		   size_t len, const char *src, size_t src_len, char *dst);

/*
 * decoded_stream_new() - @d's ops->stream_new(); -EOPNOTSUPP when its
 * decoder has none. decoded_stream_put(), decoded_stream_free(): its
 * ops. decoded_stream_end() - the attempt that fed the stream ended with
 * @err (0: every stored byte came): 0 when the stream also says every
 * byte decoded (counted in stats), else the error, the first failure of
 * the object to decode logged as decoded_decode() does.
 */
int decoded_stream_new(struct decoded *d, uint64_t off, size_t len, char *dst,
		       void **ret);
int decoded_stream_put(struct decoded *d, void *st, const char *p, size_t n);
int decoded_stream_end(struct decoded *d, const char *name, uint64_t off,
		       size_t len, void *st, int err);
void decoded_stream_free(struct decoded *d, void *st);

/* The decoders a mount enabled, each with its configuration. */
struct decoders;

/*
 * decoders_new() - every known decoder that @opts enables, configured.
 * @return 0 and *ret, or a negative errno and *ret_msg.
 */
int decoders_new(const struct options *opts, struct decoders **ret,
		 char **ret_msg);
/* decoders_free() - NULL is fine; after every struct decoded is gone. */
void decoders_free(struct decoders *ds);

/*
 * decoders_scan() - for each of the @n nodes just listed into @t (a tree
 * being built: before tree_finish()) that a decoder of @ds recognises and
 * whose shown name does not exist, open it from @src (in parallel, at
 * most opts->connections at once): its node is renamed, with the decoded
 * size and node->dec. When @prev (the live tree, at a relisting; or NULL)
 * shows the name from the same object (same validator and size), its
 * state is reused without a request. A broken object is said in
 * *ret_warnings (appended lines, malloc'd) and stays as it is; other
 * nodes are ignored. @ds NULL: nothing.
 * @return the number of objects shown decoded, or -ENOMEM.
 */
int decoders_scan(struct decoders *ds, struct source *src,
		  const struct options *opts, struct tree *t,
		  struct node **nodes, size_t n, struct tree *prev,
		  char **ret_warnings);

/* decoders_scan_tree() - decoders_scan() of every file of @t. */
int decoders_scan_tree(struct decoders *ds, struct source *src,
		       const struct options *opts, struct tree *t,
		       struct tree *prev, char **ret_warnings);

#endif
