#include "msg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int msg_set(char **ret_msg, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(ret_msg, fmt, ap) < 0)
		*ret_msg = NULL;
	va_end(ap);
	return err;
}

int msg_append(char **warnings, const char *fmt, ...)
{
	char *line = NULL, *all = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	r = asprintf(&all, "%s%s\n", *warnings ? *warnings : "", line);
	free(line);
	if (r < 0)
		return -ENOMEM;
	free(*warnings);
	*warnings = all;
	return 0;
}
