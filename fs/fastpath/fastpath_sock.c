/* Where the fast-path socket lives: its directory and stale sockets
 * there. */
#include "fastpath_sock.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
