/* The mountpoint, read from /proc/self/mountinfo: whether it may be
 * mounted on, the mount's device number, and the kernel's readahead on the
 * mount. Thread-safe (no state); used by main() and the fast path. */
#ifndef WFS_FS_MOUNTPOINT_H
#define WFS_FS_MOUNTPOINT_H

#include <stdint.h>

/*
 * mountpoint_check() - check @mp as mount(8) would, before mounting: it
 * must be a directory and not already a weightfs mount (a message, then
 * -EINVAL); one that is not empty only warns, since its files are hidden
 * while mounted. Its parent is resolved rather than @mp itself, so that a
 * dead mount there (ENOTCONN) is still recognized. @return 0, -EINVAL or
 * -ENOMEM.
 */
int mountpoint_check(const char *mp);

/*
 * mountpoint_fuse_dev() - the device number of the newest FUSE mount on
 * @mountpoint (resolved with realpath()), from mountinfo, whose escapes
 * (\040 for a space, \011, \012, \134) are undone before comparing: a
 * stat() would wait for this daemon, not serving yet. @return it, or 0 if
 * there is none.
 */
uint64_t mountpoint_fuse_dev(const char *mountpoint);

/*
 * mountpoint_set_readahead() - let the kernel read ahead up to @bytes on
 * the mount on @mountpoint (its default is 128 KiB, which turns a
 * sequential read into many small round trips).
 * Needs root; without it the default stays. The mount's device comes from
 * mountinfo, since stat() on the mountpoint would wait for this daemon.
 */
void mountpoint_set_readahead(const char *mountpoint, uint64_t bytes);

#endif
