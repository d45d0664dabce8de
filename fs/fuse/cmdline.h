/* The command line: parse SOURCE MOUNTPOINT and -o options, check them and
 * fill struct options with defaults. Each function prints what is wrong
 * (on stderr, as "weightfs: ...") before it fails. Not thread-safe: used
 * once, by main(), before the mount. */
#ifndef WFS_FS_CMDLINE_H
#define WFS_FS_CMDLINE_H

#include <stdint.h>

#include "opts.h"

struct fuse_args;

/* The --help text. */
extern const char cmdline_usage[];

/* What the command line said, strings as given (or NULL), owned. */
struct cmdline {
	char *source;
	char *mountpoint;
	char *cache_mem, *block_size, *readahead_max, *prefetch;
	char *cache_huge;
	char *request_size;
	char *connections, *retries, *timeout, *list_ttl, *list;
	char *connections_max;
	char *list_time_max, *list_entries_max;
	int allow_other, insecure, path_style, no_sign_request;
	char *endpoint, *region, *profile;
	char *ca_file;
	char *cache_dir, *cache_disk;
	char *zstd;
	char *proxy, *proxy_credentials, *range_align, *p2p_tag;
	char *key_file;
	char *trust;
	char *verify;
	int foreground, debug, help, version;
};

/*
 * cmdline_parse() - parse @args into @c (zeroed by the caller); libfuse's
 * own options stay in @args for fuse_session_new(). @return 0, or -1 with
 * a message printed.
 */
int cmdline_parse(struct fuse_args *args, struct cmdline *c);

/*
 * cmdline_parse_size() - the size @v (8M, 4G) of option @name into *ret;
 * @v NULL leaves *ret as it is. @return 0 or -EINVAL with a message.
 */
int cmdline_parse_size(const char *name, const char *v, uint64_t *ret);

/*
 * cmdline_make_options() - fill @o from @c with defaults; print what is
 * wrong. @o's strings point into @c. @return 0 or -EINVAL.
 */
int cmdline_make_options(const struct cmdline *c, struct options *o);

/* cmdline_free() - free @c's strings (not @c itself). */
void cmdline_free(struct cmdline *c);

#endif
