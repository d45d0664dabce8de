/* Fuzz the fast-path server's message handling (fs/fastpath/fastpath.c) with a real
 * daemon core behind it: a file:// source with one 3 MiB file, a block
 * cache and fetch threads. Each input is a series of packets, each
 * [flags:1][len:2 LE][bytes]; flags bit 0 attaches a memfd (of 1 MiB,
 * sealed against shrinking) as SCM_RIGHTS; bit 1 of the first packet's
 * flags serves every file as if granted (WIRE_GRANT needs a mount). The packets go down one end of a socketpair and the server
 * reads the other until EOF. It must not crash, leak or hang. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache.h"
#include "daemon.h"
#include "fastpath.h"
#include "fetch.h"
#include "source.h"
#include "tree.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct daemon d;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/weightfs-fuzz-XXXXXX", path[64], spec[80];
	char *msg = NULL, *warn = NULL;
	static char buf[3 << 20];
	FILE *f;

	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/f.bin", dir);
	f = fopen(path, "w");
	memset(buf, 0x5a, sizeof(buf));
	if (!f || fwrite(buf, 1, sizeof(buf), f) != sizeof(buf))
		abort();
	fclose(f);
	snprintf(spec, sizeof(spec), "file://%s", dir);
	d.opts.cache_mem = 4 << 20;
	d.opts.block_size = 1 << 20;
	d.opts.readahead_max = 2 << 20;
	d.opts.connections = 2;
	d.opts.retries = 1;
	d.opts.timeout_s = 5;
	d.opts.prefetch = PREFETCH_SEQUENTIAL;
	if (source_new(spec, &d.opts, &d.src, &msg) || tree_new(&d.tree) ||
	    d.src->ops->list(d.src, d.tree, &msg, &warn))
		abort();
	if (tree_finish(d.tree))
		abort();
	if (fetch_new(d.src, &d.opts, &d.fetch) ||
	    cache_new(d.opts.cache_mem, d.opts.block_size, true,
		      &fetch_fill_ops, d.fetch, &d.cache))
		abort();
	if (fetch_start(d.fetch, d.cache))
		abort();
	unlink(path);
	rmdir(dir);
	return 0;
}

static void send_packet(int fd, const uint8_t *p, size_t len, bool with_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int memfd = -1;

	if (with_fd) {
		memfd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (memfd >= 0 && ftruncate(memfd, 1 << 20) == 0 &&
		    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK) == 0) {
			struct cmsghdr *cm;

			memset(&u, 0, sizeof(u));
			mh.msg_control = u.buf;
			mh.msg_controllen = sizeof(u.buf);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &memfd, sizeof(int));
		}
	}
	sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (memfd >= 0)
		close(memfd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2], sndbuf = 1 << 20;
	unsigned packets = 0;
	char reply[256];
	/* Flags bit 1 of the first packet: every file counts as granted, to
	 * reach the reads; else only WIRE_GRANT of a memfd (refused). */
	bool grant_all = size && (data[0] & 2);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	while (size >= 3 && packets++ < 64) {
		size_t len = (size_t)data[1] | (size_t)data[2] << 8;
		bool with_fd = data[0] & 1;

		data += 3;
		size -= 3;
		if (len > size)
			len = size;
		send_packet(sv[0], data, len, with_fd);
		data += len;
		size -= len;
	}
	shutdown(sv[0], SHUT_WR);
	fastpath_serve_one(&d, sv[1], 0, 1, grant_all); /* closes sv[1] */
	while (recv(sv[0], reply, sizeof(reply), MSG_DONTWAIT) > 0)
		;
	close(sv[0]);
	return 0;
}
