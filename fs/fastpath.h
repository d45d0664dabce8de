/* The fast-path server: libweightfs connects over a Unix socket, shares
 * memory (memfds) with the daemon, and asks for byte ranges of files; the
 * daemon copies them from its block cache straight into that memory, with
 * no trip through the kernel page cache. Protocol: common/wire.h.
 *
 * One thread accepts; each client gets a thread of its own, so a slow or
 * hostile client blocks only itself. A request is served only when the
 * peer (SO_PEERCRED) may read the mount: it is the mount's owner, root,
 * or the mount has allow_other. Shared memory must be a memfd sealed
 * against shrinking; clients, regions and mapped bytes are capped. */
#ifndef WFS_FS_FASTPATH_H
#define WFS_FS_FASTPATH_H

struct daemon;
struct fastpath;

/*
 * fastpath_new() - bind the socket, under a random name in
 * /run/weightfs-UID when root, else $XDG_RUNTIME_DIR/weightfs-UID or
 * /tmp/weightfs-UID (a directory the daemon's user owns and nobody else
 * may write), without serving yet.
 * @return 0 and *ret, or a negative errno.
 */
int fastpath_new(struct daemon *d, struct fastpath **ret);

/* fastpath_start() - start accepting (after daemonizing). */
int fastpath_start(struct fastpath *fp);

/* fastpath_socket() - the socket's path, for the xattr. */
const char *fastpath_socket(const struct fastpath *fp);

/* fastpath_free() - stop serving, disconnect clients, remove the socket. */
void fastpath_free(struct fastpath *fp);

/*
 * fastpath_serve_one() - serve one client connection @fd until it closes
 * (exposed for the fuzz target). Takes ownership of @fd.
 */
void fastpath_serve_one(struct daemon *d, int fd, unsigned peer_uid);

#endif
