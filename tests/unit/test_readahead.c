/* Readahead: per file and offset, windows grow on sequential reads, stay
 * sequential across interleaved readers, reset on random reads. */
#include <stdio.h>

#include "readahead.h"
#include "check.h"

#define MB (1ULL << 20)

int main(void)
{
	struct readahead ra;
	uint64_t w, prev;
	int i;

	readahead_init(&ra);

	/* A sequential reader: the window doubles up to the maximum. */
	w = readahead_update(&ra, 0, MB, 8 * MB, 64 * MB);
	CHECK_EQ(w, 8 * MB);
	prev = w;
	for (i = 1; i < 10; i++) {
		w = readahead_update(&ra, (uint64_t)i * MB, MB, 8 * MB,
				     64 * MB);
		CHECK(w >= prev && w <= 64 * MB);
		prev = w;
	}
	CHECK_EQ(w, 64 * MB);

	/* The caller lowers the maximum under memory pressure. */
	w = readahead_update(&ra, 10 * MB, MB, 8 * MB, 16 * MB);
	CHECK_EQ(w, 16 * MB);

	/* A second reader far away starts its own stream; the first keeps
	 * its window (several readers of one file, page faults of mmap). */
	w = readahead_update(&ra, 900 * MB, MB, 8 * MB, 64 * MB);
	CHECK_EQ(w, 8 * MB);
	w = readahead_update(&ra, 11 * MB, MB, 8 * MB, 64 * MB);
	CHECK_EQ(w, 32 * MB);
	w = readahead_update(&ra, 901 * MB, MB, 8 * MB, 64 * MB);
	CHECK_EQ(w, 16 * MB);

	/* Reordered reads (two threads, one behind) stay in the stream and
	 * do not grow it. */
	w = readahead_update(&ra, 11 * MB + MB / 2, MB / 2, 8 * MB, 64 * MB);
	CHECK_EQ(w, 32 * MB);

	/* More streams than slots: the least recently used goes. */
	for (i = 0; i < READAHEAD_STREAMS; i++)
		readahead_update(&ra, (uint64_t)(2000 + 100 * i) * MB, MB,
				 8 * MB, 64 * MB);
	w = readahead_update(&ra, 12 * MB, MB, 8 * MB, 64 * MB);
	CHECK_EQ(w, 8 * MB); /* the first stream was forgotten */

	/* No readahead wanted: a zero maximum. */
	CHECK_EQ(readahead_update(&ra, 13 * MB, MB, 8 * MB, 0), 0);

	readahead_done(&ra);
	printf("readahead: ok\n");
	return 0;
}
