/* The running mount: everything the FUSE operations need, created in
 * main.c before the mount goes live and read-only in shape afterwards. */
#ifndef WFS_FS_DAEMON_H
#define WFS_FS_DAEMON_H

#include <fuse_lowlevel.h>

#include "opts.h"

/* libfuse worker threads at most, and kernel background requests (reads)
 * in flight at most: reads waiting on a hung source each hold a worker,
 * and cannot take more than FUSE_BACKGROUND_MAX of them, so a stat or an
 * open always finds one. */
#define FUSE_THREADS_MAX 256
#define FUSE_BACKGROUND_MAX 128

struct cache;
struct decoders;
struct fastpath;
struct fetch;
struct source;
struct tree;

struct daemon {
	struct options opts;
	struct source *src;
	struct decoders *decoders; /* those the mount enabled (decoder.h) */
	struct tree *tree;
	struct cache *cache;
	struct fetch *fetch;
	struct fuse_session *se;
	struct fastpath *fastpath; /* or NULL: no fast path */
	uint64_t kernel_readahead; /* bytes, for FUSE_INIT */
};

/* The FUSE low-level operations (ops.c); userdata is a struct daemon. */
extern const struct fuse_lowlevel_ops ops;

#endif
