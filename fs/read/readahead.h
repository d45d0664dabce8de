/* Readahead, decided per file and offset (not per file handle), so several
 * readers of one file and the page faults of an mmap still look
 * sequential. Each file tracks a few streams; a read that continues one
 * (lands within its window of where it ended) grows that stream's window,
 * doubling up to the maximum; any other read starts a new stream, replacing
 * the least recently used. Thread-safe: each struct has its own lock. */
#ifndef WFS_FS_READAHEAD_H
#define WFS_FS_READAHEAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define READAHEAD_STREAMS 8

struct readahead_stream {
	uint64_t next;	 /* where the last read ended */
	uint64_t window; /* bytes to keep fetched ahead of next; 0: unused */
	uint64_t last_use;
	uint64_t id; /* the clock when it started: slots are reused */
};

struct readahead {
	pthread_mutex_t lock;
	pthread_mutex_t issue; /* held by the thread starting fetches */
	struct readahead_stream s[READAHEAD_STREAMS]; /* protected by lock */
	uint64_t clock;				      /* protected by lock */
	uint64_t issuer; /* stream id issue is held for, 0: none; by lock */
};

void readahead_init(struct readahead *ra);
void readahead_done(struct readahead *ra);

/*
 * readahead_update() - account a read of [@off, @off + @len) and say how
 * far ahead to fetch: returns the window (bytes past @off + @len, 0 for
 * none; always 0 when @max is 0). A new stream starts at @initial (0:
 * @max); windows double per sequential read up to @max (which the
 * caller lowers under memory pressure).
 */
uint64_t readahead_update(struct readahead *ra, uint64_t off, uint64_t len,
			  uint64_t initial, uint64_t max);

/*
 * readahead_issue_begin() - whether this thread may start the file's
 * readahead fetches for the read that readahead_update() accounted, which
 * ended at @end: false while another thread does for the same stream (its
 * step covers the window; two threads claiming blocks of one step in turn
 * would split it into runs of one block). While one does for another
 * stream it waits for that thread to finish issuing (queueing fetches,
 * never waiting for them), then returns true: a second stream in the file
 * loses no step. readahead_issue_end() after a true.
 */
bool readahead_issue_begin(struct readahead *ra, uint64_t end);
void readahead_issue_end(struct readahead *ra);

#endif
