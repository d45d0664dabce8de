/* The fast-path socket's surroundings (fastpath.c's helpers): the
 * directory it is bound in and stale sockets of dead daemons (the mount's
 * device number: mountpoint_fuse_dev()). No state; thread-safe. */
#ifndef WFS_FS_FASTPATH_SOCK_H
#define WFS_FS_FASTPATH_SOCK_H

#include <stddef.h>

struct daemon;

/*
 * fastpath_sock_dir() - make and check the directory for the socket, its
 * path into @buf of @len bytes: ours alone, so that no other user can put
 * a socket of theirs where a loader looks, and 0711, so that others may
 * reach a socket whose name they were told (the xattr, readable only by
 * those who may read a file of the mount) but cannot list the names.
 * With allow_other the base must let others through: not
 * $XDG_RUNTIME_DIR (0700). @return 0 or a negative errno.
 */
int fastpath_sock_dir(const struct daemon *d, char *buf, size_t len);

/* fastpath_sock_remove_stale() - remove, in @dir, the sockets of daemons
 * that died without cleaning up: nothing answers there any more (a live
 * daemon accepts, so its socket stays). */
void fastpath_sock_remove_stale(const char *dir);

#endif
