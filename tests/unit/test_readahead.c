/* Readahead: per file and offset, windows grow on sequential reads, stay
 * sequential across interleaved readers, reset on random reads; one
 * thread at a time issues a file's steps, and a second stream waits for
 * its turn rather than losing its step. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "readahead.h"
#include "check.h"

#define MB (1ULL << 20)

struct other {
	struct readahead *ra;
	uint64_t off;
	atomic_int done;
	bool issued;
};

/* A reader of another stream: accounts its read, then asks to issue. */
static void *other_stream(void *arg)
{
	struct other *o = arg;

	readahead_update(o->ra, o->off, MB, 8 * MB, 64 * MB);
	o->issued = readahead_issue_begin(o->ra, o->off + MB);
	atomic_store(&o->done, 1);
	if (o->issued)
		readahead_issue_end(o->ra);
	return NULL;
}

/* Two streams in one file: while a thread issues stream A's step, a
 * reader continuing A skips (that step covers it), and a reader of stream
 * B waits until A's issuer is done, then issues its own. */
static void test_issue_two_streams(void)
{
	struct readahead ra;
	struct other o = { .ra = &ra, .off = 500 * MB };
	struct timespec ms100 = { 0, 100 * 1000 * 1000 };
	pthread_t t;

	readahead_init(&ra);
	readahead_update(&ra, 0, MB, 8 * MB, 64 * MB);
	CHECK(readahead_issue_begin(&ra, MB));
	/* Stream A again, from this thread (a trylock fails here too). */
	readahead_update(&ra, MB, MB, 8 * MB, 64 * MB);
	CHECK(!readahead_issue_begin(&ra, 2 * MB));
	CHECK_EQ(pthread_create(&t, NULL, other_stream, &o), 0);
	nanosleep(&ms100, NULL);
	CHECK(!atomic_load(&o.done),
	      "stream B's reader returned (issued=%d) while A's step was "
	      "being issued: it should wait for its turn",
	      o.issued);
	readahead_issue_end(&ra);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK(o.issued, "stream B's step was skipped");
	/* Nobody holds it now. */
	CHECK(readahead_issue_begin(&ra, 2 * MB));
	readahead_issue_end(&ra);
	readahead_done(&ra);
}

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
	test_issue_two_streams();
	printf("readahead: ok\n");
	return 0;
}
