#include "host_memory.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/virtio_balloon.h>
#include <linux/virtio_ids.h>

/* The first line of @dir/@name into @buf; false if unreadable. */
static bool read_attr(const char *dir, const char *name, char *buf, size_t size)
{
	char path[4096];
	FILE *f;
	bool ok;

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    (int)sizeof(path))
		return false;
	f = fopen(path, "re");
	if (!f)
		return false;
	ok = fgets(buf, (int)size, f) != NULL;
	fclose(f);
	return ok;
}

bool host_reclaims_free_memory(const char *virtio_devices)
{
	DIR *dp = opendir(virtio_devices);
	struct dirent *e;
	bool found = false;

	while (dp && !found && (e = readdir(dp))) {
		char dir[4096], id[32], features[256];

		if (e->d_name[0] == '.')
			continue;
		if (snprintf(dir, sizeof(dir), "%s/%s", virtio_devices,
			     e->d_name) >= (int)sizeof(dir))
			continue;
		/* features: one '0' or '1' per feature bit, bit 0 first */
		found = read_attr(dir, "device", id, sizeof(id)) &&
			strtoul(id, NULL, 16) == VIRTIO_ID_BALLOON &&
			read_attr(dir, "features", features,
				  sizeof(features)) &&
			strlen(features) > VIRTIO_BALLOON_F_REPORTING &&
			features[VIRTIO_BALLOON_F_REPORTING] == '1';
	}
	if (dp)
		closedir(dp);
	return found;
}
