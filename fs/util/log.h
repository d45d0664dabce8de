/* Daemon logging: stderr in the foreground, syslog (facility LOG_DAEMON, so
 * journald on systemd machines) once daemonized, each message prefixed with
 * the mountpoint there. Only
 * the daemon's edge (main.c, ops.c) logs; library-like modules return
 * errors. Thread-safe. */
#ifndef WFS_FS_LOG_H
#define WFS_FS_LOG_H

#include <stdbool.h>
#include <syslog.h>

extern bool log_debug_on;

/* log_set_mountpoint() - name @mountpoint in every syslog message. */
void log_set_mountpoint(const char *mountpoint);
void log_to_syslog(void);
void log_msg(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * log_once() - whether to log cause @cause of object @key now: the first
 * time for each (key, cause), then again at most once a minute, and never
 * more than 20 lines a second over all keys (the rest are counted in
 * stats, not logged). A small table of recent keys: a key pushed out by
 * many others may be logged again early.
 */
bool log_once(const void *key, int cause);

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                         \
	do {                                                                   \
		if (log_debug_on)                                              \
			log_msg(LOG_DEBUG, __VA_ARGS__);                       \
	} while (0)

#endif
