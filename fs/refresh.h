/* Re-listing the source every list_ttl seconds: new files appear, changed
 * files show their new version (new opens read it; the kernel forgets the
 * old pages), files gone from the source fail with EIO, a path that turned
 * from file into directory (or back) shows its new type. A relist applies
 * whole or not at all, and what it changed is always told to the kernel.
 * One thread. */
#ifndef WFS_FS_REFRESH_H
#define WFS_FS_REFRESH_H

struct daemon;
struct refresh;

/* refresh_start() - start the thread (opts.list_ttl_s > 0). */
int refresh_start(struct daemon *d, struct refresh **ret);

/* refresh_stop() - stop and join the thread. NULL is fine. */
void refresh_stop(struct refresh *r);

/*
 * refresh_once() - list the source again and merge the listing now.
 * @return 0, or a negative errno and *ret_msg (malloc'd) from the source.
 */
int refresh_once(struct daemon *d, char **ret_msg);

#endif
