/* Small I/O helpers shared by the daemon and the loader. Thread-safe. */
#ifndef WFS_COMMON_IO_H
#define WFS_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * pread_full() - read @len bytes at @off, retrying short reads and EINTR.
 * @return the bytes read (fewer than @len only at end of file), or a
 * negative errno.
 */
ssize_t pread_full(int fd, void *buf, size_t len, uint64_t off);

#endif
