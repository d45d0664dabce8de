/* Messages for the user, built where the context is known and printed by
 * the daemon's edge (main.c). Thread-safe (no shared state). */
#ifndef WFS_FS_MSG_H
#define WFS_FS_MSG_H

/*
 * msg_set() - format a message into *@ret_msg (malloc'd; NULL when out of
 * memory). @return @err, so callers can write
 * "return msg_set(ret_msg, -EIO, ...)".
 */
int msg_set(char **ret_msg, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * msg_append() - append a line to *@lines (malloc'd, may start NULL).
 * @return 0 or -ENOMEM.
 */
int msg_append(char **lines, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
