/* copy_stream(): the same bytes as memcpy for every size and alignment
 * around its streaming threshold and line boundaries, and not one byte
 * written outside the destination. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "copy_stream.h"

#define MAXN (64u << 10)
#define GUARD 128

static void one(uint8_t *src, uint8_t *dst, size_t soff, size_t doff, size_t n)
{
	size_t i;

	memset(dst, 0xa5, MAXN + 2 * GUARD + 64);
	copy_stream(dst + GUARD + doff, src + soff, n);
	CHECK(!memcmp(dst + GUARD + doff, src + soff, n),
	      "n %zu soff %zu doff %zu", n, soff, doff);
	for (i = 0; i < GUARD + doff; i++)
		CHECK_EQ(dst[i], 0xa5);
	for (i = GUARD + doff + n; i < MAXN + 2 * GUARD + 64; i++)
		CHECK_EQ(dst[i], 0xa5);
}

int main(void)
{
	static const size_t sizes[] = {
		0, 1, 63, 64, 65, 4095, 4096, 4097, 4160, 8191, 65536 - 7, 65536
	};
	uint8_t *src = malloc(MAXN + 64), *dst = malloc(MAXN + 2 * GUARD + 64);
	size_t i, s, d;

	CHECK(src && dst);
	for (i = 0; i < MAXN + 64; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 8));
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (s = 0; s < 64; s += 7)
			for (d = 0; d < 64; d += 5)
				one(src, dst, s, d, sizes[i]);
	free(src);
	free(dst);
	return 0;
}
