/* The fast-path server: libweightfs connects over a Unix socket, shares
 * memory (memfds) with the daemon, and asks for byte ranges of files; the
 * daemon copies them from its block cache straight into that memory, with
 * no trip through the kernel page cache. Protocol: common/wire.h.
 *
 * One thread accepts; each client gets a thread of its own, so a slow or
 * hostile client blocks only itself. A peer (SO_PEERCRED) that is not the
 * mount's owner or root is closed at once unless the mount has
 * allow_other, and such uids get a few connections each, never the
 * owner's. A file is served on a connection only after the peer sent a
 * descriptor it opened on the mount for reading (WIRE_GRANT): the fast
 * path grants what open() through the mount would, no more. PREFETCH and
 * EVICT are for the owner and root. Shared memory must be a memfd sealed
 * against shrinking; clients, regions, grants and mapped bytes are
 * capped. */
#ifndef WFS_FS_FASTPATH_H
#define WFS_FS_FASTPATH_H

#include <stdbool.h>
#include <stdint.h>

struct daemon;
struct fastpath;

/*
 * fastpath_new() - bind the socket, under a random 128-bit name in
 * /run/weightfs-UID when root, else $XDG_RUNTIME_DIR/weightfs-UID (without
 * allow_other) or /tmp/weightfs-UID (a directory 0711 the daemon's user
 * owns: nobody else may write or list it), mode 0666 with allow_other,
 * else 0600, without serving yet.
 * @return 0 and *ret, or a negative errno.
 */
int fastpath_new(struct daemon *d, struct fastpath **ret);

/*
 * fastpath_start() - start accepting (after mounting on @mountpoint and
 * daemonizing). A mount not found in mountinfo is logged: then no grant
 * succeeds and loaders read through FUSE. @return 0 or a negative errno.
 */
int fastpath_start(struct fastpath *fp, const char *mountpoint);

/* fastpath_socket() - the socket's path, for the xattr. */
const char *fastpath_socket(const struct fastpath *fp);

/* fastpath_free() - stop serving, disconnect clients, remove the socket. */
void fastpath_free(struct fastpath *fp);

/*
 * fastpath_serve_one() - serve one client connection @fd of @peer_uid
 * until it closes, granting files on the device @mount_dev (exposed for
 * the fuzz target, which sets @grant_all to reach the reads without a
 * mount; the daemon never does). Takes ownership of @fd.
 */
void fastpath_serve_one(struct daemon *d, int fd, unsigned peer_uid,
			uint64_t mount_dev, bool grant_all);

#endif
