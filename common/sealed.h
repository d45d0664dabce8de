/* Sealed objects: weightfs's encrypted, authenticated frame format
 * (docs/sealed-format.md has the byte layout, precise enough to implement
 * elsewhere). An object NAME.sealed holds a file as independent frames, each
 * the file's next chunk (stored, or as one zstd frame) sealed with
 * AES-256-GCM, then an index of the frames' sizes and a footer:
 *
 *   [frame 0]...[frame N-1][index: N x (u32 inner, u32 plain)][footer, 72]
 *
 * Each object has a random 16-byte id and its own key, HKDF-SHA256 of the
 * user's key with the id as salt; a frame's nonce is its index, and its
 * associated data binds it to the object id, its index and its sizes. The
 * footer (version, flags, frame count, plain size, key id, object id) and
 * the index are authenticated together by one more tag. So a flipped bit, a
 * swapped or moved frame, a frame spliced in from another object, a cut or
 * extended object and an edited table are all detected, and a wrong key is
 * told apart from a damaged object by the key id (a hash of the key).
 *
 * Nothing here does I/O except sealed_key_load(): the caller fetches the
 * bytes (the object's tail for the index, a frame's bytes to open it).
 *
 * Errors: -ENOMSG (no sealed footer: not a sealed object), -EPROTO (a
 * footer or index that cannot be right for this object), -EKEYREJECTED
 * (sealed under another key), -EBADMSG (authentication failed: damaged or
 * tampered bytes). A damaged input never yields bytes. Signed objects add
 * -ENODATA (not signed) and -ENOKEY (signed by a key not trusted).
 *
 * Thread-safety: a parsed struct sealed is read-only and may be shared; a
 * struct sealed_dctx belongs to one thread at a time; a struct
 * sealed_writer is read-only after sealed_writer_init().
 */
#ifndef WFS_COMMON_SEALED_H
#define WFS_COMMON_SEALED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "zstd_seekable.h"

#define SEALED_KEY_SIZE 32
#define SEALED_ID_SIZE 16
#define SEALED_TAG_SIZE 16
#define SEALED_FOOTER_SIZE 72
#define SEALED_ENTRY_SIZE 8
#define SEALED_VERSION 1
/* Frame limits as the seekable format's (a table cannot ask for absurd
 * allocations). */
#define SEALED_MAX_FRAMES ZSTD_SEEKABLE_MAX_FRAMES
#define SEALED_MAX_FRAME_SIZE ZSTD_SEEKABLE_MAX_FRAME_SIZE
/* A frame's plaintext: a zstd frame of SEALED_MAX_FRAME_SIZE bytes may
 * grow by ZSTD_compressBound()'s margin (size/256 and a little). */
#define SEALED_MAX_INNER_SIZE                                                  \
	(SEALED_MAX_FRAME_SIZE + (SEALED_MAX_FRAME_SIZE >> 7))

/* Footer flags. */
#define SEALED_FLAG_ZSTD 0x01	 /* each frame's plaintext is a zstd frame */
#define SEALED_FLAG_GROUPED 0x02 /* ... of byte-grouped 2-byte elements */
#define SEALED_FLAG_SIGNED 0x04	 /* a digest table and a signature block */

/* Signed objects (SEALED_FLAG_SIGNED): the tail holds, after the index, a
 * SHA-256 digest of every stored frame, then the publisher's Ed25519
 * public key and signature over the footer, index and digests; a key
 * holder can forge a frame's GCM tag, not a SHA-256 collision. */
#define SEALED_DIGEST_SIZE 32
#define SEALED_PUBKEY_SIZE 32
#define SEALED_SIG_SIZE 64
#define SEALED_SIGBLOCK_SIZE (SEALED_PUBKEY_SIZE + SEALED_SIG_SIZE)
/* Public keys a struct sealed_trust holds at most. */
#define SEALED_TRUST_MAX 256

/* A parsed, authenticated object; read-only after sealed_parse(). */
struct sealed {
	/* The frames as stored: coff and csize (sealed bytes, tag included)
	 * in the object, doff and dsize in the plain file. */
	struct zstd_seekable stored;
	/* The same frames as zstd frames (csize: the plaintext's bytes), for
	 * zstd_seekable_decode(); used when flags has SEALED_FLAG_ZSTD. */
	struct zstd_seekable inner;
	unsigned flags;
	uint8_t object_id[SEALED_ID_SIZE];
	uint8_t okey[SEALED_KEY_SIZE]; /* the object's own key */
	uint8_t tkey[SEALED_KEY_SIZE]; /* its disk tier key */
	/* sealed_parse_trusted() only: the signed digests of the frames
	 * (nframes x SEALED_DIGEST_SIZE), each checked as its frame is
	 * opened; NULL otherwise (frames rest on their GCM tags alone). */
	uint8_t *digests;
};

/*
 * sealed_key_parse() - a key from a key file's bytes: 32 raw bytes, or 64
 * hex digits (a trailing newline allowed). @return 0, -EINVAL.
 */
int sealed_key_parse(const void *buf, size_t len,
		     uint8_t ret_key[SEALED_KEY_SIZE]);

/*
 * sealed_key_load() - read and parse the key file @path. It must be a
 * regular file that neither group nor others may read (-EPERM otherwise,
 * the key is not read). @return 0, -EPERM, -EINVAL, or open()'s -errno.
 */
int sealed_key_load(const char *path, uint8_t ret_key[SEALED_KEY_SIZE]);

/* sealed_key_id() - the key's id: SHA-256("weightfs sealed key id" key),
 * first 16 bytes. Safe to show; says which key an object needs. */
void sealed_key_id(const uint8_t key[SEALED_KEY_SIZE],
		   uint8_t ret_id[SEALED_ID_SIZE]);

/*
 * sealed_tail_size() - read the footer in the last @len (>= 72) bytes of
 * an object of @object_size bytes: how many trailing bytes the footer and
 * index take (*ret_size), and which key the object needs (*ret_key_id,
 * may be NULL). @return 0, -ENOMSG, -EPROTO, -EINVAL (@len < 72).
 */
int sealed_tail_size(const void *tail, size_t len, uint64_t object_size,
		     uint64_t *ret_size, uint8_t *ret_key_id);

/*
 * sealed_parse() - parse and authenticate the index and footer at the end
 * of @tail, the last @len bytes (at least sealed_tail_size()'s) of an
 * object of @object_size bytes, with @key. Checks the version, flags,
 * that the frames fill exactly the bytes before the index, the frame size
 * limits, the key id, then the tag over footer and index.
 * @return 0 and *ret (free with sealed_free()); -ENOMSG, -EPROTO, -EINVAL,
 * -EKEYREJECTED, -EBADMSG, -ENOMEM.
 */
int sealed_parse(const void *tail, size_t len, uint64_t object_size,
		 const uint8_t key[SEALED_KEY_SIZE], struct sealed **ret);

/* Publisher signatures. */

/* A set of trusted publishers' Ed25519 public keys. Read-only (may be
 * shared) once filled. */
struct sealed_trust;

/* sealed_trust_new() - an empty set. @return 0, -ENOMEM. */
int sealed_trust_new(struct sealed_trust **ret);

/* sealed_trust_free() - NULL ok. */
void sealed_trust_free(struct sealed_trust *t);

/* sealed_trust_count() - how many keys @t holds. */
size_t sealed_trust_count(const struct sealed_trust *t);

/*
 * sealed_trust_add() - add the Ed25519 public key @pub (raw, 32 bytes).
 * @return 0, -E2BIG (SEALED_TRUST_MAX keys already).
 */
int sealed_trust_add(struct sealed_trust *t,
		     const uint8_t pub[SEALED_PUBKEY_SIZE]);

/*
 * sealed_trust_load() - add the public key in PEM file @path (as `openssl
 * pkey -pubout` writes it). @return 0, -EINVAL (not an Ed25519 public key
 * in PEM), -E2BIG, or open()'s -errno.
 */
int sealed_trust_load(struct sealed_trust *t, const char *path);

/*
 * sealed_verify() - check the signature of the object whose last @len
 * bytes (at least sealed_tail_size()'s) are @tail, against @t. Needs no
 * key: a mount refuses an object before it is ever read.
 * @return 0 (signed by a key of @t, and the signature holds), -ENODATA
 * (not signed), -ENOKEY (signed by a key @t does not hold), -EBADMSG (the
 * signature does not hold: changed after signing), -ENOMSG, -EPROTO,
 * -EINVAL, -ENOMEM. *@ret_signer (may be NULL): the signer's public key,
 * when signed (-ENOKEY, -EBADMSG, 0).
 */
int sealed_verify(const void *tail, size_t len, uint64_t object_size,
		  const struct sealed_trust *t,
		  uint8_t ret_signer[SEALED_PUBKEY_SIZE]);

/*
 * sealed_parse_trusted() - sealed_verify() against @t, then
 * sealed_parse(); every frame is then checked against its signed digest
 * before it is opened (sealed_read(): -EBADMSG). @return as those two.
 */
int sealed_parse_trusted(const void *tail, size_t len, uint64_t object_size,
			 const uint8_t key[SEALED_KEY_SIZE],
			 const struct sealed_trust *t, struct sealed **ret);

/* sealed_free() - NULL ok; wipes the object key. */
void sealed_free(struct sealed *s);

struct sealed_dctx;

/* sealed_dctx_new() - a context for opening frames. @return 0, -ENOMEM. */
int sealed_dctx_new(struct sealed_dctx **ret);

/* sealed_dctx_free() - NULL ok. */
void sealed_dctx_free(struct sealed_dctx *dc);

/*
 * sealed_read() - the plain bytes [@off, @off + @len) (clamped to the file)
 * into @dst, from @src: the @src_len stored bytes of the frames that
 * zstd_seekable_range(&@s->stored, @off, @len) gives, from their first
 * frame's coff on. Every frame is authenticated before any of its bytes
 * is used. @src and @dst must not overlap.
 * @return the bytes written (0 past the end); -EBADMSG (a frame failed
 * authentication or decoding; @dst unspecified), -EINVAL (@src_len is not
 * those frames' size), -ENOMEM.
 */
ssize_t sealed_read(struct sealed_dctx *dc, const struct sealed *s,
		    uint64_t off, uint64_t len, const void *src, size_t src_len,
		    void *dst);

/*
 * Streaming: the plain bytes [@off, @off + @len) (clamped to the file) of
 * an object of stored frames (no SEALED_FLAG_ZSTD) decrypted straight into
 * @dst as the stored bytes sealed_read() would take arrive, in order, in
 * pieces of any size: no buffer for the frames, one pass over memory.
 * GCM checks a frame's tag after its bytes, so until sealed_stream_end()
 * returned 0 @dst holds bytes that are not yet authenticated: the caller
 * uses none of them before. A trusted signed object's frames (@s->digests)
 * are checked against their signed SHA-256 too, before their tags. One
 * stream belongs to one thread at a time.
 *
 * sealed_stream_new() @return 0 and *ret, -EOPNOTSUPP (a zstd object:
 * use sealed_read()), -EINVAL (an empty range), -ENOMEM, -EIO.
 * sealed_stream_put() @return 0, -EBADMSG (a frame failed
 * authentication), -EINVAL (more bytes than the frames), -ENOMEM, -EIO;
 * after a failure every call fails.
 * sealed_stream_end() @return 0 when every frame came and was
 * authenticated, else -EINVAL.
 */
struct sealed_stream;

int sealed_stream_new(const struct sealed *s, uint64_t off, uint64_t len,
		      void *dst, struct sealed_stream **ret);
int sealed_stream_put(struct sealed_stream *st, const void *buf, size_t n);
int sealed_stream_end(const struct sealed_stream *st);
/* sealed_stream_free() - NULL ok; wipes what it held. */
void sealed_stream_free(struct sealed_stream *st);

/*
 * The disk tier keeps an object's decoded blocks sealed under the object's
 * tier key (docs/sealed-format.md, "Disk tier blocks"), never plain.
 *
 * sealed_block_seal() - plain bytes [@off, @off + @len) of the file, @src,
 * sealed to @dst (@len bytes; may be @src) and @tag. Sealing the same
 * block again gives the same bytes.
 * sealed_block_open() - the reverse, in place in @buf; the tag is checked
 * at the end, so after a failure @buf holds unauthenticated bytes that
 * must not be used.
 * @return 0, -EBADMSG (open: not that block of this object under this
 * key, or changed), -EINVAL (an empty range, or one past the file, or
 * over 2 GiB), -EIO.
 */
int sealed_block_seal(struct sealed_dctx *dc, const struct sealed *s,
		      uint64_t off, size_t len, const void *src, void *dst,
		      uint8_t tag[SEALED_TAG_SIZE]);
int sealed_block_open(struct sealed_dctx *dc, const struct sealed *s,
		      uint64_t off, size_t len, void *buf,
		      const uint8_t tag[SEALED_TAG_SIZE]);

/* Writing (weightfs-pack, tests). */

struct sealed_writer {
	unsigned flags;
	uint8_t key_id[SEALED_ID_SIZE];
	uint8_t object_id[SEALED_ID_SIZE];
	uint8_t okey[SEALED_KEY_SIZE];
};

/*
 * sealed_writer_init() - start an object sealed with @key: a fresh random
 * object id and the object's key. @flags: SEALED_FLAG_*.
 * @return 0, -EINVAL (bad flags), -EIO (no randomness or no cipher).
 */
int sealed_writer_init(struct sealed_writer *w,
		       const uint8_t key[SEALED_KEY_SIZE], unsigned flags);

/* sealed_writer_done() - wipe the writer's keys. */
void sealed_writer_done(struct sealed_writer *w);

/*
 * sealed_seal() - seal frame @i: @inner (@inner_len bytes: the chunk, or its
 * zstd frame) of a chunk of @plain_len bytes, to @out, which holds
 * @inner_len + SEALED_TAG_SIZE bytes (@out may be @inner). Thread-safe.
 * @return the bytes written, -EINVAL, -EIO.
 */
ssize_t sealed_seal(const struct sealed_writer *w, uint32_t i,
		    const void *inner, size_t inner_len, uint32_t plain_len,
		    void *out);

/* sealed_tail_bytes() - the index and footer's size for @nframes. */
uint64_t sealed_tail_bytes(uint32_t nframes);

/*
 * sealed_write_tail() - the index and footer for @nframes frames (only
 * csize, the plaintext's bytes before sealing, and dsize are read) to @buf,
 * which holds sealed_tail_bytes() bytes. @return the bytes written, -EINVAL,
 * -EIO.
 */
ssize_t sealed_write_tail(const struct sealed_writer *w,
			  const struct zstd_seekable_frame *frames,
			  uint32_t nframes, void *buf, size_t cap);

/* An Ed25519 private key, to sign objects with. */
struct sealed_signer;

/*
 * sealed_signer_load() - the private key in PEM file @path (as `openssl
 * genpkey -algorithm ed25519` writes it; not passphrase-protected). Like
 * a key file, it must be a regular file neither group nor others may read.
 * @return 0, -EPERM (the file is not read), -EINVAL (not an unencrypted
 * Ed25519 private key in PEM), -ENOMEM, or open()'s -errno.
 */
int sealed_signer_load(const char *path, struct sealed_signer **ret);

/* sealed_signer_free() - NULL ok. */
void sealed_signer_free(struct sealed_signer *sg);

/* sealed_signer_public() - the signer's public key. */
void sealed_signer_public(const struct sealed_signer *sg,
			  uint8_t ret[SEALED_PUBKEY_SIZE]);

/* sealed_frame_digest() - the digest table's entry for a frame: SHA-256
 * of its @len stored bytes (as sealed_seal() wrote them, tag included). */
void sealed_frame_digest(const void *frame, size_t len,
			 uint8_t ret[SEALED_DIGEST_SIZE]);

/* sealed_tail_bytes_flags() - the tail's size for @nframes with footer
 * @flags (SEALED_FLAG_SIGNED adds the digests and signature block). */
uint64_t sealed_tail_bytes_flags(uint32_t nframes, unsigned flags);

/*
 * sealed_write_signed_tail() - as sealed_write_tail() for a writer made
 * with SEALED_FLAG_SIGNED: the index, the frames' @digests (sealed_frame_
 * digest(), @nframes x SEALED_DIGEST_SIZE), the signature block by @sg and
 * the footer, in sealed_tail_bytes_flags() bytes. @return as that.
 */
ssize_t sealed_write_signed_tail(const struct sealed_writer *w,
				 const struct zstd_seekable_frame *frames,
				 uint32_t nframes, const uint8_t *digests,
				 const struct sealed_signer *sg, void *buf,
				 size_t cap);

#endif
