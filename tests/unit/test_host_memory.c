/* host_reclaims_free_memory(): a virtio balloon (device 0x0005) with
 * feature bit 5 (free page reporting) set, and nothing else, counts. The
 * sysfs tree is a temporary directory laid out as the kernel's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "host_memory.h"

static char root[] = "/tmp/wfs-virtio-XXXXXX";

static void put(const char *dev, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, dev);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", root, dev, name);
	f = fopen(path, "w");
	CHECK(f != NULL, "%s", path);
	fputs(text, f);
	fclose(f);
}

int main(void)
{
	/* bits 1, 2, 5 and 7, as a Firecracker balloon offers them */
	const char *reporting = "01100101000000000000000000000000100000\n";
	const char *no_reporting = "01100001000000000000000000000000100000\n";
	char cmd[64];

	CHECK(mkdtemp(root) != NULL);
	CHECK(!host_reclaims_free_memory("/nonexistent/virtio"));
	CHECK(!host_reclaims_free_memory(root), "an empty bus");

	put("virtio1", "device", "0x0002\n"); /* a disk with bit 5 set */
	put("virtio1", "features", reporting);
	CHECK(!host_reclaims_free_memory(root), "a disk is no balloon");

	put("virtio0", "device", "0x0005\n");
	put("virtio0", "features", no_reporting);
	CHECK(!host_reclaims_free_memory(root), "a balloon without reporting");

	put("virtio0", "features", "0110\n"); /* too short to hold bit 5 */
	CHECK(!host_reclaims_free_memory(root), "a short feature string");

	put("virtio0", "features", reporting);
	CHECK(host_reclaims_free_memory(root), "a reporting balloon");

	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	CHECK(system(cmd) == 0);
	return 0;
}
