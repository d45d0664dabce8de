#include "wire_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "wire.h"

#define FUSE_SUPER_MAGIC 0x65735546

static int send_msg(int sock, const void *msg, size_t len, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	ssize_t n;

	if (fd >= 0) {
		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EPIPE;
}

int wire_roundtrip(int sock, void *msg, size_t len, int fd)
{
	struct wire_hdr *h = msg;
	uint64_t tag = h->tag;
	ssize_t n;
	int err = send_msg(sock, msg, len, fd);

	if (err < 0)
		return err;
	do
		n = recv(sock, msg, len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -EPIPE; /* the daemon hung up: an unknown request */
	if (n != (ssize_t)len || h->magic != WIRE_MAGIC || h->tag != tag)
		return -EPROTO;
	return 0;
}

/*
 * The uid that mounted the FUSE file system on device @dev (its user_id=
 * super option; the kernel sets it from the mounter's credentials).
 * @return 0 and *ret_uid, or -ENOENT.
 */
static int mount_owner(dev_t dev, unsigned *ret_uid)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	int err = -ENOENT;

	while (f && fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		const char *sep = strstr(line, " - "), *u;
		int opts = 0;

		/* " - TYPE SOURCE OPTIONS": the options, not a SOURCE that
		 * says user_id= (the mounter names it). */
		if (sscanf(line, "%*u %*u %u:%u", &maj, &min) != 2 ||
		    makedev(maj, min) != dev || !sep ||
		    strncmp(sep + 3, "fuse", 4) ||
		    sscanf(sep + 3, "%*s %*s %n", &opts) != 0 || !opts)
			continue;
		u = strstr(sep + 3 + opts, "user_id=");
		if (u && (u == sep + 3 + opts || u[-1] == ',') &&
		    sscanf(u + 8, "%u", ret_uid) == 1)
			err = 0;
	}
	if (f)
		fclose(f);
	return err;
}

int wire_connect(const char *path, int file_fd, int *ret_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct wire_hello hello = { .h = { WIRE_MAGIC, WIRE_HELLO, 1 },
				    .version = WIRE_VERSION };
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct stat st;
	unsigned owner;
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (fstat(file_fd, &st) < 0)
		return -errno;
	err = mount_owner(st.st_dev, &owner);
	if (err < 0)
		return -EPERM;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		goto fail;
	}
	/* Whoever serves the mount could serve other bytes anyway; anyone
	 * else must not. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != owner)) {
		err = -EPERM;
		goto fail;
	}
	err = wire_roundtrip(fd, &hello, sizeof(hello), -1);
	if (err == -EPIPE)
		err = -EPROTONOSUPPORT;
	if (err < 0)
		goto fail;
	if (hello.dev != (uint64_t)st.st_dev) {
		err = -EPERM; /* the daemon of another mount */
		goto fail;
	}
	*ret_fd = fd;
	return 0;
fail:
	close(fd);
	return err;
}

int wire_grant(int sock, int file_fd, uint64_t *ret_ino)
{
	struct wire_grant g = { .h = { WIRE_MAGIC, WIRE_GRANT, 3 } };
	int err = wire_roundtrip(sock, &g, sizeof(g), file_fd);

	if (err < 0)
		return err;
	if (g.result < 0)
		return (int)g.result;
	*ret_ino = g.ino;
	return 0;
}

int wire_socket_of(int fd, char *buf, size_t len)
{
	struct statfs sfs;
	ssize_t n;

	if (fstatfs(fd, &sfs) < 0)
		return -errno;
	if (sfs.f_type != FUSE_SUPER_MAGIC)
		return -ENOTSUP;
	n = fgetxattr(fd, WIRE_XATTR_SOCKET, buf, len - 1);
	if (n <= 0)
		return -ENOTSUP;
	buf[n] = '\0';
	return 0;
}
