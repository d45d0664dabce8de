/* The client side of common/wire.h, shared by libweightfs's fast path and
 * weightfs-ctl. Thread-safe (no shared state). */
#ifndef WFS_COMMON_WIRE_CLIENT_H
#define WFS_COMMON_WIRE_CLIENT_H

#include <stddef.h>

/*
 * wire_connect() - connect to the daemon socket @path and say hello.
 * @return 0 and *ret_fd, or a negative errno (-EPROTONOSUPPORT: the
 * daemon speaks another version).
 */
int wire_connect(const char *path, int *ret_fd);

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
