#include "source.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int source_new(const char *spec, const struct options *opts,
	       struct source **ret, char **ret_msg)
{
	if (!strncmp(spec, "file://", 7))
		return source_file_new(spec, opts, ret, ret_msg);
	if (!strncasecmp(spec, "http://", 7) ||
	    !strncasecmp(spec, "https://", 8))
		return source_http_new(spec, opts, ret, ret_msg);
	if (!strncmp(spec, "s3://", 5))
		return source_s3_new(spec, opts, ret, ret_msg);
	return source_msg(ret_msg, -EINVAL,
			  "unsupported source '%s': expected file:///dir, "
			  "http(s)://host/dir/ or s3://bucket[/prefix]",
			  spec);
}

void source_free(struct source *s)
{
	if (s)
		s->ops->free(s);
}

int source_msg(char **ret_msg, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(ret_msg, fmt, ap) < 0)
		*ret_msg = NULL;
	va_end(ap);
	return err;
}

int source_warn(char **warnings, const char *fmt, ...)
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
