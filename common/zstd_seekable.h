/* The zstd seekable format (zstd's contrib/seekable_format, version 0.1.0):
 * an object is a run of independent frames followed by a seek table in a
 * trailing skippable frame, so any uncompressed byte range can be read by
 * fetching and decoding only the frames that cover it.
 *
 *   [frame 0][frame 1]...[frame N-1][seek table]
 *   seek table = magic 0x184D2A5E, u32 frame size, N entries of
 *                (u32 compressed size, u32 decompressed size[, u32 checksum]),
 *                footer (u32 N, u8 descriptor, u32 magic 0x8F92EAB1)
 *
 * All integers are little-endian. The checksum, when the descriptor's bit 7
 * is set, is the low 32 bits of XXH64 (seed 0) of the frame's decompressed
 * bytes.
 *
 * weightfs extension, the byte-grouped variant (weightfs-pack --group): descriptor
 * bit 6 (a bit the spec reserves for breaking changes, so a compliant reader
 * refuses the table) says every data frame holds its bytes grouped by
 * significance: all high bytes, then all low bytes, of little-endian 2-byte
 * elements (BF16, FP16); a trailing odd byte stays last. Frame 0 is an
 * 8-byte header, "WZG1", the element size as one byte (2: the only one
 * bit 6 stands for; another is refused) and three zero bytes, listed with
 * decompressed size 0. The header is not a zstd frame, so plain `zstd -d`
 * refuses the object instead of writing grouped bytes. It is checked when
 * the whole object is parsed (unpacking, testing); a reader of the tail
 * alone (a mount) takes the element size from bit 6. A frame's checksum is
 * that of its decompressed (grouped) bytes XOR the header magic: libzstd's
 * own frame checksum then verifies them with no second hash, and a table
 * whose bit 6 is lost fails every frame instead of giving grouped bytes.
 * Decoding ungroups after the check: the caller gets the original bytes.
 *
 * Nothing here does I/O: the caller fetches the bytes (the object's tail for
 * the table, a frame's compressed bytes to decode it).
 *
 * Errors: -ENOMSG when the bytes end without the seekable magic (not a
 * seekable object), -EPROTO for a malformed or inconsistent seek table,
 * -EBADMSG for a frame that does not decode to exactly what its entry says.
 * A corrupt input never yields wrong bytes.
 *
 * Thread-safety: a parsed struct zstd_seekable is read-only and may be shared;
 * a struct zstd_seekable_dctx belongs to one thread at a time.
 */
#ifndef WFS_COMMON_ZSTD_SEEKABLE_H
#define WFS_COMMON_ZSTD_SEEKABLE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ZSTD_SEEKABLE_SKIPPABLE_MAGIC 0x184D2A5EU
#define ZSTD_SEEKABLE_MAGIC 0x8F92EAB1U
#define ZSTD_SEEKABLE_FOOTER_SIZE 9
/* Skippable frame header (8) + footer (9): the smallest seek table. */
#define ZSTD_SEEKABLE_TABLE_MIN 17
/* The reference implementation's limits, kept so that what we accept it
 * accepts too (and a table cannot ask for absurd allocations). */
#define ZSTD_SEEKABLE_MAX_FRAMES 0x8000000U
#define ZSTD_SEEKABLE_MAX_FRAME_SIZE 0x40000000U

/* Descriptor bits. */
#define ZSTD_SEEKABLE_CHECKSUM_FLAG 0x80
#define ZSTD_SEEKABLE_GROUPED_FLAG 0x40 /* weightfs extension, above */

/* The grouped variant's header (frame 0). */
#define ZSTD_SEEKABLE_GROUP_MAGIC 0x31475A57U /* "WZG1" */
#define ZSTD_SEEKABLE_GROUP_HEADER_SIZE 8

struct zstd_seekable_frame {
	uint64_t coff;	   /* offset of its compressed bytes in the object */
	uint64_t doff;	   /* offset of its bytes in the uncompressed data */
	uint32_t csize;	   /* compressed bytes */
	uint32_t dsize;	   /* decompressed bytes (0: skippable or header) */
	uint32_t checksum; /* low 32 bits of XXH64; valid if has_checksum */
};

/* A parsed seek table; read-only after zstd_seekable_parse(). */
struct zstd_seekable {
	struct zstd_seekable_frame *frames; /* nframes, by coff and doff */
	uint32_t nframes;
	int has_checksum;
	unsigned group;	      /* element size of the grouped variant, else 0 */
	uint64_t size;	      /* uncompressed bytes: the file as shown */
	uint64_t object_size; /* compressed object, seek table included */
	uint64_t table_size;  /* the seek table frame's bytes */
	uint32_t max_dsize;   /* largest frame's decompressed size */
};

/*
 * zstd_seekable_table_size() - read the footer from the last @len (>= 9)
 * bytes of an object of @object_size bytes and say how many trailing bytes
 * the whole seek table takes, so the caller can fetch exactly those.
 * @return 0 and *ret_size; -ENOMSG (no seekable magic), -EPROTO (a footer
 * that cannot be right for this object), -EINVAL (@len < 9).
 */
int zstd_seekable_table_size(const void *tail, size_t len, uint64_t object_size,
			     uint64_t *ret_size);

/*
 * zstd_seekable_parse() - parse and validate the seek table at the end of
 * @tail, the last @len bytes of an object of @object_size bytes (@len at
 * least the table size; more is fine). Checks the magics, the reserved
 * bits, the frame count against the table's length, that the frames'
 * compressed sizes add up to exactly the bytes before the table, each
 * frame's size limits, and the grouped variant's header entry.
 * @return 0 and *ret (free with zstd_seekable_free()); -ENOMSG, -EPROTO,
 * -EINVAL (@len too short for the table), -ENOMEM.
 */
int zstd_seekable_parse(const void *tail, size_t len, uint64_t object_size,
			struct zstd_seekable **ret);

/* zstd_seekable_free() - NULL ok. */
void zstd_seekable_free(struct zstd_seekable *zs);

/*
 * zstd_seekable_range() - the frames holding uncompressed bytes
 * [@off, @off + @len) (clamped to the data): *ret_first and *ret_count
 * (0 when the range is empty or starts at or past the end). Their
 * compressed bytes are contiguous: from frames[first].coff to the end of
 * frames[first + count - 1]. Zero-size frames between them are included.
 */
void zstd_seekable_range(const struct zstd_seekable *zs, uint64_t off,
			 uint64_t len, uint32_t *ret_first,
			 uint32_t *ret_count);

struct zstd_seekable_dctx;

/* zstd_seekable_dctx_new() - a decoding context. @return 0, -ENOMEM. */
int zstd_seekable_dctx_new(struct zstd_seekable_dctx **ret);

/* zstd_seekable_dctx_free() - NULL ok. */
void zstd_seekable_dctx_free(struct zstd_seekable_dctx *dc);

/*
 * zstd_seekable_decode() - decode frame @i of @zs from its @src_len
 * compressed bytes @src into @dst (@dst_cap >= frames[i].dsize). @src_len
 * must equal frames[i].csize and hold exactly one frame; it must decode to
 * exactly frames[i].dsize bytes, whose checksum (when the table has them)
 * must match. A grouped frame is ungrouped into @dst (the original bytes).
 * A zero-size frame writes nothing.
 * @return the bytes written (frames[i].dsize); -EBADMSG for a corrupt
 * frame (@dst's contents are then unspecified), -EINVAL for a bad @i,
 * @src_len or @dst_cap, -ENOMEM.
 */
ssize_t zstd_seekable_decode(struct zstd_seekable_dctx *dc,
			     const struct zstd_seekable *zs, uint32_t i,
			     const void *src, size_t src_len, void *dst,
			     size_t dst_cap);

/*
 * zstd_seekable_read() - the uncompressed bytes [@off, @off + @len) (clamped
 * to the data) into @dst, from @src: the @src_len compressed bytes of frames
 * [first, first + count) that zstd_seekable_range(@zs, @off, @len) gives,
 * i.e. the object's bytes from frames[first].coff on. Frames wholly inside
 * the range are decoded straight into @dst, a frame cut by either end goes
 * through a scratch buffer of the context's. Every frame is verified as by
 * zstd_seekable_decode(). This is what one cache block's fill needs: one
 * ranged GET of [frames[first].coff, end of frames[first + count - 1]),
 * then this call. @src may lie inside @dst only as zstd_seekable_in_place()
 * says: at @dst + (@len - @src_len), for a range it accepts.
 * @return the bytes written (0 past the end); -EBADMSG (a corrupt frame;
 * @dst unspecified), -EINVAL (@src_len is not those frames' size), -ENOMEM.
 */
ssize_t zstd_seekable_read(struct zstd_seekable_dctx *dc,
			   const struct zstd_seekable *zs, uint64_t off,
			   uint64_t len, const void *src, size_t src_len,
			   void *dst);

/*
 * zstd_seekable_in_place() - whether zstd_seekable_read() of [@off, @off +
 * @len) may take its compressed bytes from the end of its own output buffer
 * (@src = @dst + @len - @src_len), so a cache block needs no second buffer:
 * true when the range's frames cover exactly [@off, @off + @len) (it is
 * within the data) and every tail of that run of frames is no bigger
 * compressed than decompressed, so decoding a frame never overwrites the
 * compressed bytes of a later one. Frames that grew (incompressible data)
 * make it false: the caller then uses a separate buffer.
 * @return 1 or 0.
 */
int zstd_seekable_in_place(const struct zstd_seekable *zs, uint64_t off,
			   uint64_t len);

/* Writing (weightfs-pack, tests). */

/* zstd_seekable_table_bytes() - the seek table's size for @nframes. */
uint64_t zstd_seekable_table_bytes(uint32_t nframes, int checksums);

/*
 * zstd_seekable_write_table() - write the seek table for @nframes frames
 * (only csize, dsize and checksum are read) to @buf, which holds
 * zstd_seekable_table_bytes() bytes; @grouped sets the grouped variant's
 * descriptor bit (frames[0] must then be the header). @return the bytes
 * written, or -EINVAL (too many frames, @cap too small).
 */
ssize_t zstd_seekable_write_table(const struct zstd_seekable_frame *frames,
				  uint32_t nframes, int checksums, int grouped,
				  void *buf, size_t cap);

/* zstd_seekable_group_header() - the grouped variant's 8-byte header. */
void zstd_seekable_group_header(unsigned esize,
				uint8_t out[ZSTD_SEEKABLE_GROUP_HEADER_SIZE]);

/*
 * zstd_seekable_group() / _ungroup() - byte grouping of @n bytes of
 * @esize-byte little-endian elements: most significant bytes first, then the
 * next, ...; the n % esize trailing bytes are copied as they are. @dst and
 * @src must not overlap. One is the other's inverse.
 */
void zstd_seekable_group(void *dst, const void *src, size_t n, unsigned esize);
void zstd_seekable_ungroup(void *dst, const void *src, size_t n,
			   unsigned esize);

/* zstd_seekable_checksum() - low 32 bits of XXH64(seed 0) of @n bytes. */
uint32_t zstd_seekable_checksum(const void *buf, size_t n);

#endif
