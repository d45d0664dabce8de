#include "env.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *env_get(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

bool env_true(const char *name)
{
	const char *v = env_get(name);

	return v && !strcasecmp(v, "true");
}
