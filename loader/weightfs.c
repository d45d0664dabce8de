/* The small exported functions: version, errors, dtypes, devices, options.
 * The model's are in model.c and load.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "model.h"
#include "safetensors.h"
#include "staging.h"
#include "weightfs.h"

unsigned wfs_version_number(void)
{
	return WFS_VERSION_NUMBER;
}

const char *wfs_version_string(void)
{
	return WFS_VERSION_STRING;
}

const char *wfs_last_error(void)
{
	return err_get();
}

const char *wfs_dtype_name(enum wfs_dtype dtype)
{
	return safetensors_dtype_name(dtype);
}

unsigned wfs_dtype_bits(enum wfs_dtype dtype)
{
	return safetensors_dtype_bits(dtype);
}

int wfs_device_parse(const char *s, int *ret_device)
{
	char *end;
	long n;

	if (!s)
		return -EINVAL;
	if (!strcmp(s, "cpu")) {
		*ret_device = WFS_DEVICE_CPU;
		return 0;
	}
	if (!strcmp(s, "cuda")) {
		*ret_device = 0;
		return 0;
	}
	if (strncmp(s, "cuda:", 5) || s[5] < '0' || s[5] > '9')
		return err_set(-EINVAL, "bad device \"%s\" (cpu, cuda:N)", s);
	errno = 0;
	n = strtol(s + 5, &end, 10);
	if (errno || *end || n > 1 << 20)
		return err_set(-EINVAL, "bad device \"%s\" (cpu, cuda:N)", s);
	*ret_device = (int)n;
	return 0;
}

int wfs_load_opts_init(struct wfs_load_opts *opts, size_t size)
{
	struct wfs_load_opts d = { 0 };

	if (!opts || size < LOAD_OPTS_SIZE_MIN)
		return err_set(-EINVAL,
			       "wfs_load_opts_init: size %zu is smaller than "
			       "any struct wfs_load_opts",
			       size);
	d.struct_size = size;
	d.device = WFS_DEVICE_CPU;
	/* Write the caller's @size bytes, never ours: an older caller's
	 * struct is smaller; a newer caller's tail is zeroed. */
	if (size > sizeof(d)) {
		memset((char *)opts + sizeof(d), 0, size - sizeof(d));
		size = sizeof(d);
	}
	memcpy(opts, &d, size);
	return 0;
}

void wfs_release_staging(void)
{
	staging_release();
}
