/* The client side of common/wire.h, shared by libweightfs's fast path and
 * weightfs-ctl. Thread-safe (no shared state). */
#ifndef WFS_COMMON_WIRE_CLIENT_H
#define WFS_COMMON_WIRE_CLIENT_H

#include <stddef.h>

#include <stdint.h>

/*
 * wire_connect() - connect to the daemon socket @path for the mount that
 * @file_fd (open on it) is on, and say hello. The socket is trusted only
 * when its peer (SO_PEERCRED) is root or the uid that mounted @file_fd's
 * file system (user_id= in /proc/self/mountinfo: only that uid or root
 * can be its FUSE server), and the daemon names @file_fd's device as its
 * mount's.
 * @return 0 and *ret_fd, or a negative errno (-EPROTONOSUPPORT: the
 * daemon speaks another version; -EPERM: a socket not of that mount).
 */
int wire_connect(const char *path, int file_fd, int *ret_fd);

/*
 * wire_grant() - prove to the daemon on @sock that we may read the file
 * open as @file_fd (opened for reading on its mount): it then serves
 * that file's bytes on @sock. @return 0 and *ret_ino (its st_ino), or a
 * negative errno.
 */
int wire_grant(int sock, int file_fd, uint64_t *ret_ino);

/*
 * wire_roundtrip() - send the request @msg of @len bytes (with @fd as
 * SCM_RIGHTS unless it is -1) and read its reply, of the same size and tag,
 * into @msg.
 * @return 0 or a negative errno (-EPROTO: a reply that does not fit).
 */
int wire_roundtrip(int sock, void *msg, size_t len, int fd);

/*
 * wire_socket_of() - the daemon socket of the weightfs file or directory
 * open as @fd (a FUSE file system naming it in its xattr), into @buf.
 * @return 0, -ENOTSUP when @fd is not on a weightfs mount, or -errno.
 */
int wire_socket_of(int fd, char *buf, size_t len);

#endif
