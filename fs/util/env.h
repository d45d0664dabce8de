/* Environment lookups, in one place: an empty variable counts as unset
 * (as the AWS SDKs do). Thread-safe as long as nothing calls setenv(). */
#ifndef WFS_FS_ENV_H
#define WFS_FS_ENV_H

#include <stdbool.h>

/* env_get() - $@name, or NULL when unset or empty. */
const char *env_get(const char *name);

/* env_true() - whether $@name is "true" (any case). */
bool env_true(const char *name);

#endif
