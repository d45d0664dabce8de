/* The load pipeline: reader threads take chunks of the model's files in
 * order, read them (through a struct reader) into their staging slots, and
 * copy each slot's pieces to their places in the destination: with
 * cudaMemcpyAsync on the slot's own stream for a GPU, so reads and copies
 * overlap; with memcpy for host memory, or, when the host destination can
 * take the reads directly, with no staging at all.
 * Staging is bounded (two slots per thread) whatever the model's size.
 * pipeline_run() is reentrant; it blocks until the load is done. */
#ifndef WFS_LOADER_PIPELINE_H
#define WFS_LOADER_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "reader.h"
#include "weightfs.h"

/* A contiguous range of a file that goes to one place in the destination
 * (one tensor). */
struct pipe_piece {
	unsigned file;
	uint64_t file_off;
	uint64_t len; /* > 0 */
	uint64_t dst_off;
};

struct pipe_params {
	struct reader *reader;
	const char *const *paths;	 /* of the files, for messages */
	const struct pipe_piece *pieces; /* sorted by file, then file_off */
	size_t npieces;
	int device;	      /* WFS_DEVICE_CPU or a CUDA ordinal */
	void *dest;	      /* base address on @device */
	unsigned threads;     /* > 0 */
	size_t staging_bytes; /* > 0 */
	size_t chunk_bytes;   /* > 0 */
	void (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
};

struct pipe_result {
	unsigned threads;
	size_t staging_bytes;
	enum wfs_staging staging;
	/* CLOCK_MONOTONIC seconds when staging was ready and the threads
	 * started reading (the end of the start-up) */
	double io_start;
};

/*
 * pipeline_run() - load every piece.
 * @return 0 and *ret, or the first error a thread met (negative errno,
 * with its message).
 */
int pipeline_run(const struct pipe_params *p, struct pipe_result *ret);

#endif
