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

#include "log.h"

void mountpoint_set_readahead(const char *mountpoint, uint64_t bytes)
{
	char *real = realpath(mountpoint, NULL), line[4096], path[128];
	unsigned maj = 0, min = 0, m1, m2;
	FILE *f;

	if (!real)
		return;
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		char mnt[4096];

		/* The last match wins: the newest mount on that path. */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &m1, &m2, mnt) ==
			    3 &&
		    !strcmp(mnt, real)) {
			maj = m1;
			min = m2;
		}
	}
	if (f)
		fclose(f);
	free(real);
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj,
		 min);
	f = maj || min ? fopen(path, "we") : NULL;
	if (!f) {
		log_debug("kernel readahead stays at its default (%s)",
			  strerror(errno));
		return;
	}
	fprintf(f, "%llu\n", (unsigned long long)(bytes >> 10));
	fclose(f);
}

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
