/* Seekable zstd, the first decoder (decoder.h): a seekable-zstd object
 * NAME.zst (common/zstd_seekable.h) shown as the file NAME with its
 * uncompressed size (-o zstd=auto). NAME.zst is then not shown, unless
 * NAME exists too: then both are shown as they are. A struct decoded of
 * this kind holds the parsed seek table (struct zstd_seekable) as its
 * priv. */
#ifndef WFS_FS_ZSTD_OBJECT_H
#define WFS_FS_ZSTD_OBJECT_H

/* A suffix objects must have to be considered. */
#define ZSTD_OBJECT_SUFFIX ".zst"

struct decoder_ops;
extern const struct decoder_ops zstd_decoder_ops;

#endif
