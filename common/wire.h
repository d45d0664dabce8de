/* The fast-path wire protocol between libweightfs and the weightfs daemon,
 * used by both sides (the one definition).
 *
 * Transport: a SOCK_SEQPACKET Unix socket whose path a mounted file names
 * in its xattr "user.weightfs.socket". Every message is one packet that
 * starts with struct wire_hdr; all integers are host-endian (both ends run
 * on one machine). The daemon answers every request with one reply of the
 * same type, size and @tag, in the order the requests came (one request
 * at a time per connection: a client wanting several in flight opens
 * several connections).
 *
 * 1. The client sends WIRE_HELLO; the daemon answers WIRE_HELLO with its
 *    version, block size and the device number (st_dev) of its mount. A
 *    version mismatch closes the connection; the client then reads
 *    through the mount as usual.
 * 2. WIRE_GRANT, with a descriptor of a file on the mount in SCM_RIGHTS,
 *    open for reading (not O_PATH): the proof that the caller may read
 *    that file, since the kernel checked its permissions at open(). The
 *    daemon checks the descriptor is on its mount and names one of its
 *    files, and from then on serves that file (@ino, its st_ino) on this
 *    connection; @result 0 or a negative errno. READ, PREFETCH and EVICT
 *    of a file not granted get -EACCES.
 * 3. WIRE_MAP, with one memfd in SCM_RIGHTS, sealed against shrinking
 *    (F_SEAL_SHRINK): shared memory the daemon may write into; the answer
 *    carries its region id. A client maps staging (or its destination)
 *    this way once, not per read.
 * 4. WIRE_READ: bytes [off, off + len) of the file with inode @ino,
 *    written into region @region at @region_off; @result is the byte
 *    count (short only at end of file) or a negative errno.
 * 5. WIRE_PREFETCH (struct wire_read, no region): bring the range into the
 *    daemon's cache; @result is the bytes now cached or a negative errno.
 *    WIRE_EVICT (struct wire_read): drop the file from the daemon's cache
 *    and the kernel's page cache; @result 0 or -errno. Both only for the
 *    mount's owner or root (weightfs-ctl prefetch and evict).
 *
 * Access: the daemon accepts a connection only from its own uid, root, or
 * (with allow_other) anyone, at most WIRE_MAX_CONN_PER_UID per uid other
 * than its own and root's; anything else is closed at once. A client
 * trusts a socket only when its peer (SO_PEERCRED) is root or the uid
 * that mounted the file system (user_id= in /proc/self/mountinfo) and
 * the HELLO reply names the device the client's file is on. */
#ifndef WFS_COMMON_WIRE_H
#define WFS_COMMON_WIRE_H

#include <stdint.h>

#define WIRE_MAGIC 0x53465457u /* "WTFS" */
#define WIRE_VERSION 2u
#define WIRE_XATTR_SOCKET "user.weightfs.socket"
#define WIRE_MAX_REGION (64ULL << 30)
#define WIRE_MAX_REGIONS 64u
#define WIRE_MAX_READ (256u << 20)
#define WIRE_MAX_GRANTS 65536u /* files granted per connection */
#define WIRE_MAX_CONN_PER_UID 32u

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_MAP = 2,
	WIRE_READ = 3,
	WIRE_PREFETCH = 4,
	WIRE_EVICT = 5,
	WIRE_GRANT = 6,
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
	uint64_t dev;	     /* reply: st_dev of the daemon's mount */
};

struct wire_grant {
	struct wire_hdr h;
	uint64_t ino;	/* reply: st_ino of the file granted */
	int64_t result; /* reply: 0 or a negative errno */
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
