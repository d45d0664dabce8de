/* Where the fast-path socket lives: its directory, stale sockets there,
 * and the device number of the mount that grants are checked against. */
#include "fastpath_sock.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon.h"

int fastpath_sock_dir(const struct daemon *d, char *buf, size_t len)
{
	const char *base = getuid() == 0 ? "/run" : getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (!base || !*base || (getuid() != 0 && d->opts.allow_other))
		base = "/tmp";
	if ((size_t)snprintf(buf, len, "%s/weightfs-%u", base,
			     (unsigned)getuid()) >= len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0711) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(buf, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022))
		return -EPERM;
	/* One made by an older daemon was listable. */
	if ((st.st_mode & 07777) != 0711 && chmod(buf, 0711) < 0)
		return -errno;
	return 0;
}

void fastpath_sock_remove_stale(const char *dir)
{
	DIR *dp = opendir(dir);
	struct dirent *e;

	while (dp && (e = readdir(dp))) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		size_t len = strlen(e->d_name);
		int fd;

		if (len < 6 || strcmp(e->d_name + len - 5, ".sock") ||
		    (size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s",
				     dir, e->d_name) >= sizeof(sa.sun_path))
			continue;
		fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (fd >= 0 &&
		    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
		    errno == ECONNREFUSED)
			unlink(sa.sun_path);
		if (fd >= 0)
			close(fd);
	}
	if (dp)
		closedir(dp);
}

uint64_t fastpath_sock_mount_dev(const char *mountpoint)
{
	char *real = realpath(mountpoint, NULL), line[4096];
	uint64_t dev = 0;
	unsigned m1, m2;
	FILE *f;

	if (!real)
		return 0;
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		char mnt[4096];
		const char *sep = strstr(line, " - ");

		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &m1, &m2, mnt) ==
			    3 &&
		    !strcmp(mnt, real) && sep && !strncmp(sep + 3, "fuse", 4))
			dev = makedev(m1, m2);
	}
	if (f)
		fclose(f);
	free(real);
	return dev;
}
