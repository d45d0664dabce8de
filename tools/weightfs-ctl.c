/* weightfs-ctl: talk to a running weightfs mount. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define EXIT_USAGE 2

static const char usage[] =
	"usage: weightfs-ctl stats MOUNTPOINT\n"
	"\n"
	"  stats MOUNTPOINT   print the mount's counters as JSON: "
	"bytes_fetched,\n"
	"                     requests, retries, errors, cache_hits, "
	"cache_misses,\n"
	"                     cache_evictions, cache_bytes, cache_mem,\n"
	"                     prefetched_blocks, reads, bytes_read, "
	"objects_changed\n"
	"  -h, --help         this help\n";

static int stats(const char *mnt)
{
	char buf[8192];
	ssize_t n = getxattr(mnt, "user.weightfs.stats", buf, sizeof(buf) - 1);

	if (n < 0) {
		if (errno == ENODATA || errno == ENOTSUP)
			fprintf(stderr,
				"weightfs-ctl: %s is not a weightfs "
				"mount\n",
				mnt);
		else
			fprintf(stderr, "weightfs-ctl: %s: %s\n", mnt,
				strerror(errno));
		return 1;
	}
	buf[n] = '\0';
	printf("%s\n", buf);
	return 0;
}

int main(int argc, char *argv[])
{
	if (argc >= 2 &&
	    (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "stats"))
		return stats(argv[2]);
	fputs(usage, stderr);
	return EXIT_USAGE;
}
