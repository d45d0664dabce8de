/* Until the S3 source lands. */
#include <errno.h>
#include <stdio.h>

#include "source.h"

int source_s3_new(const char *spec, const struct options *opts,
		  struct source **ret, char **ret_msg)
{
	if (asprintf(ret_msg, "s3:// sources are not built in") < 0)
		*ret_msg = NULL;
	return -EOPNOTSUPP;
}
