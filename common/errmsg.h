/* The library's error messages: one per thread, for the last failed call.
 * Library code does not log; it returns a negative errno and leaves a
 * message here, which wfs_last_error() hands to the caller.
 * Thread-safe (the message is thread-local). */
#ifndef WFS_COMMON_ERRMSG_H
#define WFS_COMMON_ERRMSG_H

#include <stddef.h>

/*
 * err_set() - record a message for the calling thread.
 * @err: a negative errno, returned unchanged so callers can write
 *       "return err_set(-EINVAL, ...)".
 * @return @err
 */
int err_set(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* err_get() - the calling thread's last message ("" if none). */
const char *err_get(void);

/* err_clear() - forget the calling thread's message. */
void err_clear(void);

#endif
