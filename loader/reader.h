/* Where loaded bytes come from. The load pipeline asks a reader for byte
 * ranges of the model's files and never reads files itself. Today's reader
 * is pread on the files (optionally with O_DIRECT); the weightfs daemon's
 * fast path (blocks from its cache straight into staging slots over a Unix
 * socket) is another implementation of the same interface.
 * A reader's read() may run on several threads at once. */
#ifndef WFS_LOADER_READER_H
#define WFS_LOADER_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "weightfs.h"

struct reader;

struct reader_ops {
	/*
	 * read() - read up to @len bytes at @off of file @file into @buf;
	 * short only at the end of the file. When align(@file) > 1, @off,
	 * @len and @buf are multiples of it.
	 * @return bytes read, or a negative errno (with err_set()).
	 */
	ssize_t (*read)(struct reader *r, unsigned file, uint64_t off,
			void *buf, size_t len);
	/* align() - the alignment reads of @file need (1: none). */
	size_t (*align)(struct reader *r, unsigned file);
	/*
	 * share() - optional (NULL: not supported): the memory [@base,
	 * @base + @len) is @memfd mapped from offset 0, so reads into it
	 * may be written there by the daemon itself, with no copy here.
	 * Call before the reads start; the reader keeps a dup of @memfd.
	 * @return 0 or a negative errno (then reads there copy as usual).
	 */
	int (*share)(struct reader *r, void *base, size_t len, int memfd);
	void (*free)(struct reader *r);
};

struct reader {
	const struct reader_ops *ops;
	enum wfs_path path;
	unsigned direct_io_files; /* files read with O_DIRECT */
	/* Bytes this process copied with the CPU (memcpy) on their way to
	 * the destination: the reader's and the pipeline's. Updated with
	 * __atomic builtins. */
	uint64_t bytes_copied;
};

/* reader_share() - ops->share() where the reader has it, else -ENOTSUP. */
int reader_share(struct reader *r, void *base, size_t len, int memfd);

/*
 * reader_pread_new() - a reader that preads @nfiles files. @fds are the
 * open files (borrowed, not closed); where @direct[i], file i is opened
 * again by @paths[i] with O_DIRECT (if the file system refuses, the plain
 * fd is used) after checking it is still the same file.
 * @return 0 and *ret_reader, or a negative errno.
 */
int reader_pread_new(const char *const *paths, const int *fds,
		     const bool *direct, unsigned nfiles,
		     struct reader **ret_reader);

/*
 * reader_fastpath_new() - a reader that asks the weightfs daemon serving
 * @fds for their bytes (reader_fastpath.c), when every file is on one
 * weightfs mount and $WEIGHTFS_FASTPATH is not "0".
 * @return 0 and *ret_reader; -ENOTSUP (not a weightfs mount), -ECANCELED
 * (turned off) or another negative errno (daemon unreachable or too old):
 * then read the files as usual.
 */
int reader_fastpath_new(const char *const *paths, const int *fds,
			unsigned nfiles, struct reader **ret_reader);

/* reader_free() - free a reader of any kind. NULL ok. */
void reader_free(struct reader *r);

#endif
