/* source_new(): the one place that knows every scheme. Sources do not
 * call it, so nothing points back up from a source to the others. */
#include "source.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "msg.h"

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
	return msg_set(ret_msg, -EINVAL,
		       "unsupported source '%s': expected file:///dir, "
		       "http(s)://host/dir/ or s3://bucket[/prefix]",
		       spec);
}
