#include "log.h"

#include <stdarg.h>
#include <stdio.h>

bool log_debug_on;
static bool use_syslog;

void log_to_syslog(void)
{
	openlog("weightfs", LOG_PID, LOG_DAEMON);
	use_syslog = true;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (use_syslog) {
		vsyslog(level, fmt, ap);
	} else {
		flockfile(stderr);
		fputs("weightfs: ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		funlockfile(stderr);
	}
	va_end(ap);
}
