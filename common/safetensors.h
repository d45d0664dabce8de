/* The safetensors format: the 8-byte header length and the JSON header,
 * parsed and checked against the format's rules (dtypes, shapes, offsets
 * covering the data section exactly, no overflow). Reads no files: callers
 * hand it bytes, so the fuzzer can too.
 * Thread-safe (no shared state). */
#ifndef WFS_COMMON_SAFETENSORS_H
#define WFS_COMMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "weightfs.h"

/* The official library's limit on the JSON header. */
#define SAFETENSORS_MAX_HEADER 100000000ULL

struct st_tensor {
	char *name;
	enum wfs_dtype dtype;
	unsigned ndim;
	uint64_t *shape;
	uint64_t begin; /* data_offsets, relative to the data section */
	uint64_t end;
};

struct safetensors {
	struct st_tensor *tensors; /* sorted by offset */
	size_t ntensors;
	char **meta;  /* __metadata__: key, value, key, value, ... */
	size_t nmeta; /* pairs */
	uint64_t data_bytes;
};

/*
 * safetensors_header_size() - decode and check the 8-byte length prefix of
 * a file of @file_size bytes.
 * @return 0 and *ret_len (the JSON header's size), or -EINVAL with a
 * message (file too short, header over the limit or past the end).
 */
int safetensors_header_size(const uint8_t prefix[8], uint64_t file_size,
			    uint64_t *ret_len);

/*
 * safetensors_parse() - parse the JSON header @json of @len bytes, of a
 * file whose data section (everything after the header) is @data_bytes.
 * A name or value holding NUL (\u0000) is refused: names are C strings,
 * and "a\u0000x" must not become "a".
 * @return 0 and *ret_st, or -EINVAL (malformed, with a message naming the
 * tensor and the rule) or -ENOMEM.
 */
int safetensors_parse(const char *json, size_t len, uint64_t data_bytes,
		      struct safetensors **ret_st);

/* safetensors_free() - free a parsed header. NULL ok. */
void safetensors_free(struct safetensors *st);

/* safetensors_dtype_parse() - "BF16" -> WFS_DTYPE_BF16; -EINVAL if none. */
int safetensors_dtype_parse(const char *s, enum wfs_dtype *ret_dtype);

/* safetensors_dtype_name() - WFS_DTYPE_BF16 -> "BF16"; NULL if none. */
const char *safetensors_dtype_name(enum wfs_dtype dtype);

/* safetensors_dtype_bits() - bits per element; 0 if no such dtype. */
unsigned safetensors_dtype_bits(enum wfs_dtype dtype);

/*
 * safetensors_tensor_bytes() - bytes of @ndim dims @shape of @dtype.
 * @return 0 and *ret_bytes, -EOVERFLOW, or -EINVAL when the bits do not
 * fill whole bytes (sub-byte dtypes).
 */
int safetensors_tensor_bytes(enum wfs_dtype dtype, unsigned ndim,
			     const uint64_t *shape, uint64_t *ret_bytes);

#endif
