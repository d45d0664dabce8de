#include "copy_stream.h"

#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Below this, a plain memcpy: streaming pays off only for many lines. */
#define STREAM_MIN 4096u

void copy_stream(void *dst, const void *src, size_t n)
{
#ifdef __SSE2__
	uint8_t *d = dst;
	const uint8_t *s = src;
	size_t head;

	if (n < STREAM_MIN) {
		memcpy(dst, src, n);
		return;
	}
	/* Whole aligned lines are streamed; the ragged ends are copied. */
	head = (64 - ((uintptr_t)d & 63)) & 63;
	memcpy(d, s, head);
	d += head;
	s += head;
	n -= head;
	for (; n >= 64; n -= 64, d += 64, s += 64) {
		__m128i a = _mm_loadu_si128((const __m128i *)s);
		__m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
		__m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
		__m128i e = _mm_loadu_si128((const __m128i *)(s + 48));

		_mm_stream_si128((__m128i *)d, a);
		_mm_stream_si128((__m128i *)(d + 16), b);
		_mm_stream_si128((__m128i *)(d + 32), c);
		_mm_stream_si128((__m128i *)(d + 48), e);
	}
	memcpy(d, s, n);
	_mm_sfence();
#else
	memcpy(dst, src, n);
#endif
}
