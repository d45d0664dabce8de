#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
