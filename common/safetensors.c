#include "safetensors.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "errmsg.h"

static const struct {
	const char *name;
	unsigned bits;
} dtypes[WFS_DTYPE_COUNT] = {
	[WFS_DTYPE_BOOL] = { "BOOL", 8 },
	[WFS_DTYPE_U8] = { "U8", 8 },
	[WFS_DTYPE_I8] = { "I8", 8 },
	[WFS_DTYPE_F8_E5M2] = { "F8_E5M2", 8 },
	[WFS_DTYPE_F8_E4M3] = { "F8_E4M3", 8 },
	[WFS_DTYPE_F8_E8M0] = { "F8_E8M0", 8 },
	[WFS_DTYPE_I16] = { "I16", 16 },
	[WFS_DTYPE_U16] = { "U16", 16 },
	[WFS_DTYPE_F16] = { "F16", 16 },
	[WFS_DTYPE_BF16] = { "BF16", 16 },
	[WFS_DTYPE_I32] = { "I32", 32 },
	[WFS_DTYPE_U32] = { "U32", 32 },
	[WFS_DTYPE_F32] = { "F32", 32 },
	[WFS_DTYPE_F64] = { "F64", 64 },
	[WFS_DTYPE_I64] = { "I64", 64 },
	[WFS_DTYPE_U64] = { "U64", 64 },
	[WFS_DTYPE_C64] = { "C64", 64 },
	[WFS_DTYPE_F4] = { "F4", 4 },
	[WFS_DTYPE_F6_E2M3] = { "F6_E2M3", 6 },
	[WFS_DTYPE_F6_E3M2] = { "F6_E3M2", 6 },
};

int safetensors_dtype_parse(const char *s, enum wfs_dtype *ret_dtype)
{
	for (unsigned i = 0; i < WFS_DTYPE_COUNT; i++) {
		if (!strcmp(s, dtypes[i].name)) {
			*ret_dtype = (enum wfs_dtype)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *safetensors_dtype_name(enum wfs_dtype dtype)
{
	if ((unsigned)dtype >= WFS_DTYPE_COUNT)
		return NULL;
	return dtypes[dtype].name;
}

unsigned safetensors_dtype_bits(enum wfs_dtype dtype)
{
	if ((unsigned)dtype >= WFS_DTYPE_COUNT)
		return 0;
	return dtypes[dtype].bits;
}

int safetensors_tensor_bytes(enum wfs_dtype dtype, unsigned ndim,
			     const uint64_t *shape, uint64_t *ret_bytes)
{
	uint64_t n = 1, bits;

	for (unsigned i = 0; i < ndim; i++)
		if (__builtin_mul_overflow(n, shape[i], &n))
			return -EOVERFLOW;
	if (__builtin_mul_overflow(n, (uint64_t)safetensors_dtype_bits(dtype),
				   &bits))
		return -EOVERFLOW;
	if (bits % 8)
		return -EINVAL;
	*ret_bytes = bits / 8;
	return 0;
}

int safetensors_header_size(const uint8_t prefix[8], uint64_t file_size,
			    uint64_t *ret_len)
{
	uint64_t n = 0;

	if (file_size < 8)
		return err_set(-EINVAL,
			       "file too short for a safetensors header "
			       "(%llu bytes)",
			       (unsigned long long)file_size);
	for (int i = 7; i >= 0; i--)
		n = n << 8 | prefix[i];
	if (n > SAFETENSORS_MAX_HEADER)
		return err_set(-EINVAL,
			       "header length %llu exceeds the limit of %llu "
			       "bytes",
			       (unsigned long long)n, SAFETENSORS_MAX_HEADER);
	if (n > file_size - 8)
		return err_set(-EINVAL,
			       "header length %llu runs past the end of the "
			       "file (%llu bytes)",
			       (unsigned long long)n,
			       (unsigned long long)file_size);
	if (n < 2)
		return err_set(-EINVAL, "header length %llu is too short",
			       (unsigned long long)n);
	*ret_len = n;
	return 0;
}

void safetensors_free(struct safetensors *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->ntensors; i++) {
		free(st->tensors[i].name);
		free(st->tensors[i].shape);
	}
	free(st->tensors);
	for (size_t i = 0; i < 2 * st->nmeta; i++)
		free(st->meta[i]);
	free(st->meta);
	free(st);
}

/* A non-negative JSON integer (not a float, not a string). */
static int get_u64(struct json_object *o, uint64_t *ret)
{
	if (!json_object_is_type(o, json_type_int))
		return -EINVAL;
	if (json_object_get_int64(o) < 0)
		return -EINVAL;
	*ret = json_object_get_uint64(o);
	return 0;
}

static int parse_metadata(struct safetensors *st, struct json_object *o)
{
	size_t n = 0;

	if (!json_object_is_type(o, json_type_object))
		return err_set(-EINVAL, "__metadata__ is not a JSON object");
	n = (size_t)json_object_object_length(o);
	st->meta = calloc(2 * n + 1, sizeof(*st->meta));
	if (!st->meta)
		return -ENOMEM;
	json_object_object_foreach(o, key, val)
	{
		if (!json_object_is_type(val, json_type_string))
			return err_set(-EINVAL,
				       "__metadata__ value of \"%s\" is not a "
				       "string",
				       key);
		st->meta[2 * st->nmeta] = strdup(key);
		st->meta[2 * st->nmeta + 1] =
			strdup(json_object_get_string(val));
		st->nmeta++;
		if (!st->meta[2 * st->nmeta - 2] ||
		    !st->meta[2 * st->nmeta - 1])
			return -ENOMEM;
	}
	return 0;
}

static int parse_tensor(struct st_tensor *t, const char *name,
			struct json_object *o)
{
	struct json_object *dtype, *shape, *offsets;
	uint64_t bytes;
	size_t ndim;
	int r;

	if (!json_object_is_type(o, json_type_object))
		return err_set(-EINVAL, "tensor \"%s\" is not a JSON object",
			       name);
	if (!json_object_object_get_ex(o, "dtype", &dtype) ||
	    !json_object_is_type(dtype, json_type_string))
		return err_set(-EINVAL, "tensor \"%s\" has no dtype string",
			       name);
	if (safetensors_dtype_parse(json_object_get_string(dtype), &t->dtype))
		return err_set(-EINVAL,
			       "tensor \"%s\" has unknown dtype \"%s\"", name,
			       json_object_get_string(dtype));
	if (!json_object_object_get_ex(o, "shape", &shape) ||
	    !json_object_is_type(shape, json_type_array))
		return err_set(-EINVAL, "tensor \"%s\" has no shape array",
			       name);
	ndim = json_object_array_length(shape);
	if (ndim > UINT16_MAX)
		return err_set(-EINVAL, "tensor \"%s\" has %zu dimensions",
			       name, ndim);
	t->shape = calloc(ndim + 1, sizeof(*t->shape));
	if (!t->shape)
		return -ENOMEM;
	t->ndim = (unsigned)ndim;
	for (size_t i = 0; i < ndim; i++)
		if (get_u64(json_object_array_get_idx(shape, i), &t->shape[i]))
			return err_set(-EINVAL,
				       "tensor \"%s\": shape[%zu] is not a "
				       "non-negative integer",
				       name, i);
	if (!json_object_object_get_ex(o, "data_offsets", &offsets) ||
	    !json_object_is_type(offsets, json_type_array) ||
	    json_object_array_length(offsets) != 2 ||
	    get_u64(json_object_array_get_idx(offsets, 0), &t->begin) ||
	    get_u64(json_object_array_get_idx(offsets, 1), &t->end))
		return err_set(-EINVAL,
			       "tensor \"%s\" has no data_offsets [begin, end] "
			       "of non-negative integers",
			       name);
	if (t->end < t->begin)
		return err_set(-EINVAL,
			       "tensor \"%s\": data_offsets end %llu is before "
			       "begin %llu",
			       name, (unsigned long long)t->end,
			       (unsigned long long)t->begin);
	r = safetensors_tensor_bytes(t->dtype, t->ndim, t->shape, &bytes);
	if (r == -EOVERFLOW)
		return err_set(-EINVAL,
			       "tensor \"%s\": shape x dtype size overflows",
			       name);
	if (r < 0)
		return err_set(-EINVAL,
			       "tensor \"%s\": %s elements do not fill whole "
			       "bytes",
			       name, dtypes[t->dtype].name);
	if (bytes != t->end - t->begin)
		return err_set(-EINVAL,
			       "tensor \"%s\": shape and dtype give %llu bytes "
			       "but data_offsets span %llu",
			       name, (unsigned long long)bytes,
			       (unsigned long long)(t->end - t->begin));
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	const struct st_tensor *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* The tensors must tile the data section: sorted by offset, each begins
 * where the previous ends, and the last ends at the end of the file. */
static int check_layout(const struct safetensors *st)
{
	uint64_t pos = 0;

	for (size_t i = 0; i < st->ntensors; i++) {
		const struct st_tensor *t = &st->tensors[i];

		if (t->begin < pos)
			return err_set(-EINVAL,
				       "tensor \"%s\" overlaps tensor \"%s\"",
				       t->name, st->tensors[i - 1].name);
		if (t->begin > pos)
			return err_set(-EINVAL,
				       "gap of %llu bytes before tensor \"%s\"",
				       (unsigned long long)(t->begin - pos),
				       t->name);
		if (t->end > st->data_bytes)
			return err_set(-EINVAL,
				       "tensor \"%s\" ends at %llu, past the "
				       "end of the data (%llu bytes): "
				       "truncated file?",
				       t->name, (unsigned long long)t->end,
				       (unsigned long long)st->data_bytes);
		pos = t->end;
	}
	if (pos != st->data_bytes)
		return err_set(-EINVAL,
			       "%llu bytes of data after the last tensor",
			       (unsigned long long)(st->data_bytes - pos));
	return 0;
}

static int parse_root(struct safetensors *st, struct json_object *root)
{
	size_t n;
	int r;

	if (!json_object_is_type(root, json_type_object))
		return err_set(-EINVAL, "header is not a JSON object");
	n = (size_t)json_object_object_length(root);
	st->tensors = calloc(n + 1, sizeof(*st->tensors));
	if (!st->tensors)
		return -ENOMEM;
	json_object_object_foreach(root, key, val)
	{
		struct st_tensor *t;

		if (!strcmp(key, "__metadata__")) {
			r = parse_metadata(st, val);
			if (r < 0)
				return r;
			continue;
		}
		t = &st->tensors[st->ntensors++];
		t->name = strdup(key);
		if (!t->name)
			return -ENOMEM;
		r = parse_tensor(t, key, val);
		if (r < 0)
			return r;
	}
	qsort(st->tensors, st->ntensors, sizeof(*st->tensors), by_offset);
	return check_layout(st);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Whether the JSON text @s of @len bytes has an escaped NUL (\u0000) in a
 * string. The parser's names and values are C strings: "a\u0000x" would
 * become "a" and merge with a tensor "a" that a strict parser keeps apart,
 * so such a header is refused. A backslash outside a string is invalid
 * JSON anyway; each escape pair is skipped whole, so "\\u0000" (an escaped
 * backslash, then text) is not one.
 */
static bool has_escaped_nul(const char *s, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (s[i] != '\\')
			continue;
		if (s[i + 1] == 'u' && i + 6 <= len &&
		    !memcmp(s + i + 2, "0000", 4))
			return true;
		i++; /* the escaped character */
	}
	return false;
}

int safetensors_parse(const char *json, size_t len, uint64_t data_bytes,
		      struct safetensors **ret_st)
{
	struct safetensors *st = NULL;
	struct json_tokener *tok = NULL;
	struct json_object *root = NULL;
	enum json_tokener_error jerr;
	char *buf = NULL;
	int r;

	if (len > SAFETENSORS_MAX_HEADER)
		return err_set(-EINVAL, "header over the size limit");
	/* The writer pads the header with spaces to a multiple of 8. */
	while (len > 0 && is_space(json[len - 1]))
		len--;
	if (len == 0 || json[0] != '{')
		return err_set(-EINVAL, "header does not start with '{': "
					"not a safetensors file");
	if (memchr(json, '\0', len))
		return err_set(-EINVAL, "header contains a NUL byte");
	if (has_escaped_nul(json, len))
		return err_set(-EINVAL, "header contains an escaped NUL "
					"(\\u0000): names and values cannot "
					"hold NUL");
	buf = malloc(len + 1);
	st = calloc(1, sizeof(*st));
	tok = json_tokener_new();
	if (!buf || !st || !tok) {
		r = -ENOMEM;
		goto fail;
	}
	memcpy(buf, json, len);
	buf[len] = '\0';
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
					    JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, buf, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	if (jerr != json_tokener_success || !root) {
		r = err_set(-EINVAL, "header is not valid JSON: %s at byte %zu",
			    json_tokener_error_desc(jerr),
			    json_tokener_get_parse_end(tok));
		goto fail;
	}
	if (json_tokener_get_parse_end(tok) < len) {
		r = err_set(-EINVAL, "trailing bytes after the JSON header");
		goto fail;
	}
	st->data_bytes = data_bytes;
	r = parse_root(st, root);
	if (r < 0)
		goto fail;
	json_object_put(root);
	json_tokener_free(tok);
	free(buf);
	*ret_st = st;
	return 0;
fail:
	if (r == -ENOMEM)
		err_set(r, "out of memory parsing the header");
	json_object_put(root);
	json_tokener_free(tok);
	free(buf);
	safetensors_free(st);
	return r;
}
