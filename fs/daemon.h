/* The running mount: everything the FUSE operations need, created in
 * main.c before the mount goes live and read-only in shape afterwards. */
#ifndef WFS_FS_DAEMON_H
#define WFS_FS_DAEMON_H

#include <fuse_lowlevel.h>

#include "opts.h"

struct cache;
struct fastpath;
struct fetch;
struct source;
struct tree;

struct daemon {
	struct options opts;
	struct source *src;
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
