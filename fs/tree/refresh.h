/* Re-listing the source every list_ttl seconds: new files appear, changed
 * files show their new version (new opens read it; the kernel forgets the
 * old pages), files gone from the source fail with EIO, a path that turned
 * from file into directory (or back) shows its new type. A relist applies
 * whole or not at all, and what it changed is always told to the kernel.
 * One thread.
 *
 * Lazy listing (opts.list_lazy): a directory is listed, one level, when
 * first looked in (refresh_list_dir()), and a relist lists again only the
 * directories listed so far, each applied whole or not at all. */
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

struct node;

/*
 * refresh_list_dir() - make sure directory @dir is listed (lazy mode),
 * listing it now if not: concurrent callers wait for one listing. A
 * failure is logged (log_once()) and tried again by a later call.
 * @return 0, or -EIO when the listing failed.
 */
int refresh_list_dir(struct daemon *d, struct node *dir);

/* refresh_list_root() - list the root (lazy mode, at mount, before the
 * tree is shared), with the source's message and warnings. */
int refresh_list_root(struct daemon *d, char **ret_msg, char **ret_warnings);

#endif
