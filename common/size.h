/* Human sizes ("8M", "1.5G", "4096"), shared by the daemon and the tools.
 * Thread-safe (pure functions). */
#ifndef WFS_COMMON_SIZE_H
#define WFS_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>

/*
 * size_parse() - parse a byte count with an optional K, M, G or T suffix
 * (powers of 1024; an optional trailing "B" or "iB" is accepted).
 * @return 0 and *ret_bytes, or -EINVAL for anything else (empty, negative,
 * trailing junk, overflow).
 */
int size_parse(const char *s, uint64_t *ret_bytes);

/* size_format() - "8.0 MiB" style; writes at most @len bytes to @buf. */
void size_format(uint64_t bytes, char *buf, size_t len);

#endif
