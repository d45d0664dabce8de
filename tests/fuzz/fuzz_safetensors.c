/* libFuzzer target: the safetensors header parser on arbitrary bytes, both
 * as a whole file (length prefix, header, data) and as a bare header. */
#include <stddef.h>
#include <stdint.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct safetensors *st = NULL;
	uint64_t n;

	if (safetensors_header_size(data, size, &n) == 0 &&
	    safetensors_parse((const char *)data + 8, (size_t)n, size - 8 - n,
			      &st) == 0)
		safetensors_free(st);
	if (size <= 1 << 16 &&
	    safetensors_parse((const char *)data, size, 1 << 20, &st) == 0)
		safetensors_free(st);
	return 0;
}
