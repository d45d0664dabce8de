#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool log_debug_on;
static bool use_syslog;
static char log_mountpoint[256];

void log_set_mountpoint(const char *mountpoint)
{
	char *real = mountpoint ? realpath(mountpoint, NULL) : NULL;

	snprintf(log_mountpoint, sizeof(log_mountpoint), "%s",
		 real	      ? real
		 : mountpoint ? mountpoint
			      : "");
	free(real);
}

void log_to_syslog(void)
{
	openlog("weightfs", LOG_PID, LOG_DAEMON);
	use_syslog = true;
}

void log_msg(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	if (use_syslog) {
		/* One journal or syslog line per message, naming the mount
		 * (several weightfs daemons log under the same identifier). */
		vsnprintf(buf, sizeof(buf), fmt, ap);
		if (log_mountpoint[0])
			syslog(LOG_DAEMON | level, "%s: %s", log_mountpoint,
			       buf);
		else
			syslog(LOG_DAEMON | level, "%s", buf);
	} else {
		flockfile(stderr);
		fputs("weightfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		funlockfile(stderr);
	}
	va_end(ap);
}

#define ONCE_SLOTS 256
#define ONCE_AGAIN_S 60
#define BURST_PER_S 20

static struct {
	const void *key;
	int cause;
	time_t at;
} once[ONCE_SLOTS];
static time_t burst_at;
static unsigned burst_n;
static pthread_mutex_t once_lock = PTHREAD_MUTEX_INITIALIZER;

bool log_once(const void *key, int cause)
{
	uint64_t h = ((uint64_t)(uintptr_t)key ^ (uint64_t)(unsigned)cause) *
		     0x9E3779B97F4A7C15ULL;
	size_t i = (size_t)(h >> 56) % ONCE_SLOTS;
	struct timespec ts;
	bool ok;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	pthread_mutex_lock(&once_lock);
	ok = once[i].key != key || once[i].cause != cause ||
	     ts.tv_sec - once[i].at >= ONCE_AGAIN_S;
	if (ok) {
		if (burst_at != ts.tv_sec) {
			burst_at = ts.tv_sec;
			burst_n = 0;
		}
		ok = burst_n++ < BURST_PER_S;
	}
	if (ok) {
		once[i].key = key;
		once[i].cause = cause;
		once[i].at = ts.tv_sec;
	}
	pthread_mutex_unlock(&once_lock);
	return ok;
}
