/* A copy into memory that will not be read again soon by this CPU. */
#ifndef WFS_COMMON_COPY_STREAM_H
#define WFS_COMMON_COPY_STREAM_H

#include <stddef.h>

/*
 * copy_stream() - memcpy(@dst, @src, @n) whose stores bypass the CPU
 * cache when @n is large: the destination's lines are not read first and
 * do not push hotter data out. For filling cache blocks from a receive
 * buffer; the caller's memory ordering is as after memcpy (fenced).
 */
void copy_stream(void *dst, const void *src, size_t n);

#endif
