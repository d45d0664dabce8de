/* The mountpoint: checks before mounting, the kernel's readahead after. */
#include "mountpoint.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "log.h"

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

uint64_t mountpoint_fuse_dev(const char *mountpoint)
{
	char *real = realpath(mountpoint, NULL), *line = NULL;
	size_t cap = 0;
	uint64_t dev = 0;
	FILE *f;

	if (!real)
		return 0;
	f = fopen("/proc/self/mountinfo", "re");
	while (f && getline(&line, &cap, f) > 0) {
		const char *sep = strstr(line, " - ");
		unsigned maj, min;
		int at = 0, end = 0;

		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - TYPE ...", the
		 * mountpoint escaped (\040 for a space). */
		if (!sep || strncmp(sep + 3, "fuse", 4) ||
		    sscanf(line, "%*u %*u %u:%u %*s %n%*s%n", &maj, &min, &at,
			   &end) != 2 ||
		    !end)
			continue;
		line[end] = '\0';
		unescape_mountinfo(line + at);
		/* The last match wins: the newest mount on that path. */
		if (!strcmp(line + at, real))
			dev = makedev(maj, min);
	}
	if (f)
		fclose(f);
	free(line);
	free(real);
	return dev;
}

void mountpoint_set_readahead(const char *mountpoint, uint64_t bytes)
{
	uint64_t dev = mountpoint_fuse_dev(mountpoint);
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb",
		 major(dev), minor(dev));
	f = dev ? fopen(path, "we") : NULL;
	if (!f) {
		log_debug("kernel readahead stays at its default (%s)",
			  dev ? strerror(errno) : "mount not in mountinfo");
		return;
	}
	fprintf(f, "%llu\n", (unsigned long long)(bytes >> 10));
	fclose(f);
}

/* Whether the absolute path @path is a weightfs mount, per mountinfo. */
static bool is_weightfs_mount(const char *path)
{
	char line[8192], mnt[4096], type[256];
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	const char *sep;

	while (f && fgets(line, sizeof(line), f)) {
		sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*u %*u %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep, " - %255s", type) != 1)
			continue;
		unescape_mountinfo(mnt);
		/* The last mount on a path is the one seen there. */
		if (!strcmp(mnt, path))
			found = !strcmp(type, "fuse.weightfs");
	}
	if (f)
		fclose(f);
	return found;
}

int mountpoint_check(const char *mp)
{
	char *copy = strdup(mp), *slash, *parent, real[PATH_MAX + 1];
	const char *base;
	struct stat st;
	struct dirent *e;
	DIR *d;
	bool mounted = false;

	if (!copy)
		return -ENOMEM;
	while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
		copy[strlen(copy) - 1] = '\0';
	slash = strrchr(copy, '/');
	parent = slash ? (slash == copy ? "/" : copy) : ".";
	base = slash ? slash + 1 : copy;
	if (slash)
		*slash = '\0';
	if (*base && strcmp(base, ".") && strcmp(base, "..") &&
	    realpath(parent, real) &&
	    strlen(real) + strlen(base) + 2 <= sizeof(real)) {
		if (strcmp(real, "/"))
			strcat(real, "/");
		strcat(real, base);
		mounted = is_weightfs_mount(real);
	} else if (realpath(mp, real)) {
		mounted = is_weightfs_mount(real);
	}
	free(copy);
	if (mounted) {
		fprintf(stderr,
			"weightfs: %s is already mounted (a weightfs mount; "
			"unmount it first: fusermount3 -u %s)\n",
			mp, mp);
		return -EINVAL;
	}
	if (stat(mp, &st) < 0) {
		fprintf(stderr, "weightfs: mountpoint %s: %s\n", mp,
			strerror(errno));
		return -EINVAL;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "weightfs: mountpoint %s is not a directory\n",
			mp);
		return -EINVAL;
	}
	d = opendir(mp);
	while (d && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			fprintf(stderr,
				"weightfs: warning: mountpoint %s is not "
				"empty: its files are hidden while mounted\n",
				mp);
			break;
		}
	}
	if (d)
		closedir(d);
	return 0;
}
