/* The fast-path wire protocol between libweightfs and the weightfs daemon,
 * used by both sides (the one definition).
 *
 * Transport: a SOCK_SEQPACKET Unix socket whose path a mounted file names
 * in its xattr "user.weightfs.socket". Every message is one packet that
 * starts with struct wire_hdr; all integers are host-endian (both ends run
 * on one machine).
 *
 * 1. The client sends WIRE_HELLO; the daemon answers WIRE_HELLO with its
 *    version and block size. A version mismatch closes the connection;
 *    the client then reads through the mount as usual.
 * 2. WIRE_MAP, with one memfd in SCM_RIGHTS: shared memory the daemon may
 *    write into; the answer carries its region id. A client maps staging
 *    (or its destination) this way once, not per read.
 * 3. WIRE_READ: bytes [off, off + len) of the file with inode @ino (its
 *    st_ino on the mount), written into region @region at @region_off.
 *    The daemon answers each READ with a WIRE_READ reply holding the same
 *    @tag and the byte count (short only at end of file) or a negative
 *    errno. Several READs may be in flight; replies may come out of order.
 *
 * 4. WIRE_PREFETCH (struct wire_read, no region): bring the range into the
 *    daemon's cache; the reply's @result is the bytes now cached or a
 *    negative errno. WIRE_EVICT (struct wire_read): drop the file from the
 *    daemon's cache and the kernel's page cache; @result 0 or -errno.
 *    (weightfs-ctl prefetch and evict.)
 *
 * The daemon checks each request against the caller's credentials
 * (SO_PEERCRED) and the mount's rules before touching the file. */
#ifndef WFS_COMMON_WIRE_H
#define WFS_COMMON_WIRE_H

#include <stdint.h>

#define WIRE_MAGIC 0x53465457u /* "WTFS" */
#define WIRE_VERSION 1u
#define WIRE_XATTR_SOCKET "user.weightfs.socket"
#define WIRE_MAX_REGION (64ULL << 30)
#define WIRE_MAX_REGIONS 64u
#define WIRE_MAX_READ (256u << 20)

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_MAP = 2,
	WIRE_READ = 3,
	WIRE_PREFETCH = 4,
	WIRE_EVICT = 5,
};

struct wire_hdr {
	uint32_t magic;
	uint32_t type;
	uint64_t tag; /* chosen by the client, echoed in the reply */
};

struct wire_hello {
	struct wire_hdr h;
	uint32_t version;
	uint32_t block_size; /* reply: the daemon's cache block size */
};

struct wire_map {
	struct wire_hdr h;
	uint64_t len;	/* bytes of the memfd to map */
	int32_t region; /* reply: id for WIRE_READ, or a negative errno */
	uint32_t pad;
};

struct wire_read {
	struct wire_hdr h;
	uint64_t ino;
	uint64_t off;
	uint64_t len;
	uint64_t region_off;
	int32_t region;
	uint32_t pad;
	int64_t result; /* reply: bytes written, or a negative errno */
};

#endif
