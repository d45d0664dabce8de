#include "fastpath.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache.h"
#include "copy_stream.h"
#include "daemon.h"
#include "fastpath_sock.h"
#include "log.h"
#include "mountpoint.h"
#include "readpath.h"
#include "stats.h"
#include "tree.h"
#include "wire.h"

#define MAX_CLIENTS 256
#define OWNER_RESERVED 64 /* connections only the owner and root may take */
#define WIRE_MAX_MAPPED (64ULL << 30) /* per client */

struct region {
	char *base;
	uint64_t len;
};

struct client {
	struct daemon *d;
	int fd;
	unsigned uid;
	uint64_t dev;	/* the mount's st_dev: granted files are on it */
	bool grant_all; /* the fuzz target's: every file counts as granted */
	struct region regions[WIRE_MAX_REGIONS];
	unsigned nregions;
	uint64_t mapped;  /* bytes of all regions */
	uint64_t *grants; /* inodes the peer proved it may read */
	unsigned ngrants, grants_cap;
	bool hello;
};

struct conn {
	struct fastpath *fp;
	int fd; /* open while on fp->conns: closed under fp->lock */
	unsigned uid;
	struct conn *next; /* protected by fp->lock */
};

struct fastpath {
	struct daemon *d;
	int listen_fd;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a client went away */
	struct conn *conns;  /* protected by lock */
	unsigned nconns;     /* protected by lock */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t dev; /* st_dev of the mount, 0 until known */
	pthread_t thread;
	bool started;
	bool bound; /* path is our socket, to remove at the end */
};

/* Who may connect at all: the mount's owner, root, or with allow_other
 * anyone (as for open() through the mount; the files each need a grant). */
static bool peer_allowed(const struct daemon *d, unsigned uid)
{
	return d->opts.allow_other || uid == 0 || uid == getuid();
}

/* The owner or root: may change what the daemon caches. */
static bool peer_owns(const struct client *c)
{
	return c->uid == 0 || c->uid == getuid();
}

static bool granted(const struct client *c, uint64_t ino)
{
	unsigned i;

	if (c->grant_all)
		return true;
	for (i = c->ngrants; i-- > 0;)
		if (c->grants[i] == ino)
			return true;
	return false;
}

/*
 * Take @fd as proof that the peer may read the file it is open on: the
 * kernel checked the file's permissions when the peer opened it. It must
 * be open for reading (an O_PATH descriptor needs no permission on the
 * file), on this mount, and a file of ours. @return 0 and *ret_ino.
 */
static int do_grant(struct client *c, int fd, uint64_t *ret_ino)
{
	struct statx stx;
	struct node *n;
	int fl;

	*ret_ino = 0;
	if (fd < 0)
		return -EBADF;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
		return -EBADF;
	/* DONT_SYNC: the device and inode numbers need no FUSE round trip
	 * to ourselves. */
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
		  STATX_TYPE | STATX_INO, &stx) < 0)
		return -errno;
	if (!c->dev || makedev(stx.stx_dev_major, stx.stx_dev_minor) != c->dev)
		return -EXDEV;
	if (!S_ISREG(stx.stx_mode))
		return -EISDIR;
	n = tree_get(c->d->tree, stx.stx_ino);
	if (!n || n->is_dir)
		return -ENOENT;
	*ret_ino = stx.stx_ino;
	if (granted(c, stx.stx_ino))
		return 0;
	if (c->ngrants == c->grants_cap) {
		unsigned cap = c->grants_cap ? 2 * c->grants_cap : 16;
		uint64_t *g;

		if (c->grants_cap >= WIRE_MAX_GRANTS)
			return -ENOSPC;
		g = realloc(c->grants, cap * sizeof(*g));
		if (!g)
			return -ENOMEM;
		c->grants = g;
		c->grants_cap = cap;
	}
	c->grants[c->ngrants++] = stx.stx_ino;
	return 0;
}

/* The file a request names, if the peer proved it may read it. */
static int file_of(struct client *c, const struct wire_read *rq,
		   struct node **ret)
{
	struct node *n;

	if (!granted(c, rq->ino))
		return -EACCES;
	n = tree_get(c->d->tree, rq->ino);
	if (!n)
		return -ENOENT;
	if (n->is_dir)
		return -EISDIR;
	*ret = n;
	return 0;
}

/*
 * A client can take its memory away under the daemon's copy: a hole
 * punched in a hugetlbfs memfd (F_SEAL_SHRINK allows that) is refilled at
 * the next fault only while free huge pages last, else the fault raises
 * SIGBUS. Copies into client regions run under this guard and fail with
 * -EFAULT instead; any other SIGBUS gets the disposition from before.
 */
static __thread sigjmp_buf *copy_guard;
static struct sigaction old_sigbus;
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (copy_guard)
		siglongjmp(*copy_guard, 1);
	/* Not ours: the fault repeats under the old disposition. */
	sigaction(SIGBUS, &old_sigbus, NULL);
}

static void sigbus_install(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus,
				.sa_flags = SA_SIGINFO | SA_NODEFER };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old_sigbus);
}

/* copy_stream() into a client region (the loader moves it on to the GPU
 * or its tensors, not this CPU's cache). @return 0 or -EFAULT (memory
 * gone). */
static int copy_out(void *dst, const void *src, size_t len)
{
	sigjmp_buf jb;

	if (sigsetjmp(jb, 0)) {
		copy_guard = NULL;
		return -EFAULT;
	}
	copy_guard = &jb;
	atomic_signal_fence(memory_order_seq_cst);
	copy_stream(dst, src, len);
	atomic_signal_fence(memory_order_seq_cst);
	copy_guard = NULL;
	return 0;
}

/* Copy file bytes into a client region (READ), or only into the cache
 * (PREFETCH: no region; where a tier below memory keeps bytes,
 * cache_stage() there and not into memory: staging the next model).
 * @return bytes or -errno. */
static int64_t do_read(struct client *c, const struct wire_read *rq, bool copy)
{
	struct daemon *d = c->d;
	struct region *r = NULL;
	struct readpath rp;
	struct node *n;
	struct block *b;
	size_t boff, len;
	uint64_t done = 0;
	int err;

	if (!granted(c, rq->ino))
		return -EACCES; /* before saying anything about the request */
	if (copy) {
		if (rq->region < 0 || (unsigned)rq->region >= c->nregions)
			return -EBADF;
		r = &c->regions[rq->region];
		if (rq->region_off > r->len ||
		    rq->len > r->len - rq->region_off)
			return -EINVAL;
	}
	if (rq->len > WIRE_MAX_READ)
		return -EINVAL;
	if (!copy && !peer_owns(c))
		return -EPERM;
	err = file_of(c, rq, &n);
	if (!err && !copy) {
		int64_t staged = cache_stage(d->cache, n, rq->off, rq->len);

		if (staged != -EOPNOTSUPP)
			return staged;
	}
	if (!err)
		err = readpath_begin(d->cache, &d->opts, n, rq->off, rq->len,
				     &rp);
	while (!err && (err = readpath_next(&rp, &b, &boff, &len)) == 1) {
		err = copy ? copy_out(r->base + rq->region_off + done,
				      b->data + boff, len)
			   : 0;
		if (copy && !err)
			STAT_ADD(fastpath_copied, len);
		cache_unref(d->cache, b);
		done += len;
	}
	return err < 0 ? err : (int64_t)done;
}

/* Forget a file's cached bytes, the daemon's and the kernel's. */
static int64_t do_evict(struct client *c, const struct wire_read *rq)
{
	struct node *n;
	int err = peer_owns(c) ? file_of(c, rq, &n) : -EPERM;

	if (err)
		return err;
	cache_drop_file(c->d->cache, n);
	if (c->d->se)
		fuse_lowlevel_notify_inval_inode(c->d->se, n->ino, 0, 0);
	return 0;
}

static int do_map(struct client *c, struct wire_map *m, int memfd)
{
	struct statfs sfs;
	struct stat st;
	void *base;

	int seals;

	if (memfd < 0)
		return -EBADF;
	if (c->nregions >= WIRE_MAX_REGIONS)
		return -ENOSPC;
	/* Only a memfd that cannot shrink: a truncated mapping would kill
	 * the daemon with SIGBUS, and a file elsewhere could block it. */
	seals = fcntl(memfd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK))
		return -EPERM;
	if (m->len == 0 || m->len > WIRE_MAX_REGION ||
	    m->len > WIRE_MAX_MAPPED - c->mapped || fstat(memfd, &st) < 0 ||
	    !S_ISREG(st.st_mode) || (uint64_t)st.st_size < m->len)
		return -EINVAL;
	/* Huge pages: whole ones, or munmap() would fail and leak them. */
	if (fstatfs(memfd, &sfs) < 0 ||
	    (sfs.f_type == HUGETLBFS_MAGIC && st.st_blksize > 0 &&
	     m->len % (uint64_t)st.st_blksize))
		return -EINVAL;
	pthread_once(&sigbus_once, sigbus_install);
	base = mmap(NULL, m->len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (base == MAP_FAILED)
		return -errno;
	c->regions[c->nregions].base = base;
	c->regions[c->nregions].len = m->len;
	c->mapped += m->len;
	return (int)c->nregions++;
}

/* Receive one packet and at most one fd. @return its length, 0 at EOF,
 * or -errno. */
static ssize_t recv_packet(int fd, void *buf, size_t len, int *ret_fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov,
			      .msg_iovlen = 1,
			      .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;
	ssize_t n;

	*ret_fd = -1;
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		int *fds = (int *)CMSG_DATA(cm);
		size_t i, nfds;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < nfds; i++) {
			if (*ret_fd < 0)
				*ret_fd = fds[i];
			else
				close(fds[i]); /* more than one: not ours */
		}
	}
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		return -EMSGSIZE;
	return n;
}

/* Serve one request. @return 0 to go on, or -errno to drop the client. */
static int serve(struct client *c, char *pkt, size_t n, int fd)
{
	struct wire_hdr *h = (struct wire_hdr *)pkt;

	if (n < sizeof(*h) || h->magic != WIRE_MAGIC)
		return -EPROTO;
	if (!c->hello && h->type != WIRE_HELLO)
		return -EPROTO;
	switch (h->type) {
	case WIRE_HELLO: {
		struct wire_hello *m = (struct wire_hello *)pkt;

		if (n != sizeof(*m) || m->version != WIRE_VERSION)
			return -EPROTONOSUPPORT;
		c->hello = true;
		m->block_size = (uint32_t)cache_block_size(c->d->cache);
		m->dev = c->dev;
		return send(c->fd, m, sizeof(*m), MSG_NOSIGNAL) < 0 ? -errno
								    : 0;
	}
	case WIRE_MAP: {
		struct wire_map *m = (struct wire_map *)pkt;

		if (n != sizeof(*m))
			return -EPROTO;
		m->region = do_map(c, m, fd);
		return send(c->fd, m, sizeof(*m), MSG_NOSIGNAL) < 0 ? -errno
								    : 0;
	}
	case WIRE_GRANT: {
		struct wire_grant *m = (struct wire_grant *)pkt;

		if (n != sizeof(*m))
			return -EPROTO;
		m->result = do_grant(c, fd, &m->ino);
		return send(c->fd, m, sizeof(*m), MSG_NOSIGNAL) < 0 ? -errno
								    : 0;
	}
	case WIRE_READ:
	case WIRE_PREFETCH:
	case WIRE_EVICT: {
		struct wire_read *m = (struct wire_read *)pkt;

		if (n != sizeof(*m))
			return -EPROTO;
		m->result = h->type == WIRE_EVICT
				    ? do_evict(c, m)
				    : do_read(c, m, h->type == WIRE_READ);
		return send(c->fd, m, sizeof(*m), MSG_NOSIGNAL) < 0 ? -errno
								    : 0;
	}
	default:
		return -EPROTO;
	}
}

/* Serve the client on @fd until it hangs up; @fd stays open. */
static void serve_client(struct daemon *d, int fd, unsigned peer_uid,
			 uint64_t mount_dev, bool grant_all)
{
	struct client *c = calloc(1, sizeof(*c));
	union {
		struct wire_read rd;
		struct wire_map map;
		struct wire_hello hello;
		char bytes[256];
	} pkt;
	unsigned i;

	if (c) {
		c->d = d;
		c->fd = fd;
		c->uid = peer_uid;
		c->dev = mount_dev;
		c->grant_all = grant_all;
		for (;;) {
			int mfd;
			ssize_t n = recv_packet(fd, &pkt, sizeof(pkt), &mfd);
			int err = n > 0 ? serve(c, pkt.bytes, (size_t)n, mfd)
					: -1;

			if (mfd >= 0)
				close(mfd); /* mapped (or refused) already */
			if (err)
				break;
		}
		for (i = 0; i < c->nregions; i++)
			munmap(c->regions[i].base, c->regions[i].len);
		free(c->grants);
		free(c);
	}
}

void fastpath_serve_one(struct daemon *d, int fd, unsigned peer_uid,
			uint64_t mount_dev, bool grant_all)
{
	serve_client(d, fd, peer_uid, mount_dev, grant_all);
	close(fd);
}

static void *client_thread(void *arg)
{
	struct conn *cn = arg, **p;
	struct fastpath *fp = cn->fp;

	serve_client(fp->d, cn->fd, cn->uid, fp->dev, false);
	/* Closed only once off the list, under the lock: fastpath_free()
	 * shuts down the fds of the listed connections, and a number closed
	 * while still listed may be another file's by then. */
	pthread_mutex_lock(&fp->lock);
	for (p = &fp->conns; *p != cn; p = &(*p)->next)
		;
	*p = cn->next;
	fp->nconns--;
	close(cn->fd);
	pthread_cond_broadcast(&fp->cond);
	pthread_mutex_unlock(&fp->lock);
	free(cn);
	return NULL;
}

/* Room for one more connection of @uid: at most WIRE_MAX_CONN_PER_UID
 * for each uid other than the owner's and root's, and those together
 * leave OWNER_RESERVED slots for the owner and root. Under fp->lock. */
static bool conn_fits(struct fastpath *fp, unsigned uid)
{
	unsigned mine = 0, others = 0;
	struct conn *cn;

	if (fp->nconns >= MAX_CLIENTS)
		return false;
	if (uid == 0 || uid == getuid())
		return true;
	for (cn = fp->conns; cn; cn = cn->next) {
		if (cn->uid == uid)
			mine++;
		if (cn->uid != 0 && cn->uid != getuid())
			others++;
	}
	return mine < WIRE_MAX_CONN_PER_UID &&
	       others < MAX_CLIENTS - OWNER_RESERVED;
}

static void *accept_thread(void *arg)
{
	struct fastpath *fp = arg;

	for (;;) {
		struct ucred cred;
		socklen_t clen = sizeof(cred);
		struct conn *cn;
		pthread_t t;
		int fd = accept4(fp->listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EMFILE || errno == ENFILE)
				continue;
			break; /* the socket was shut down */
		}
		cn = malloc(sizeof(*cn));
		if (!cn ||
		    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
			free(cn);
			close(fd);
			continue;
		}
		cn->fp = fp;
		cn->fd = fd;
		cn->uid = cred.uid;
		/* Nobody else gets a thread, or a slot. */
		if (!peer_allowed(fp->d, cred.uid)) {
			close(fd);
			free(cn);
			continue;
		}
		pthread_mutex_lock(&fp->lock);
		if (!conn_fits(fp, cred.uid)) {
			pthread_mutex_unlock(&fp->lock);
			close(fd);
			free(cn);
			continue;
		}
		fp->nconns++;
		cn->next = fp->conns;
		fp->conns = cn;
		if (pthread_create(&t, NULL, client_thread, cn)) {
			fp->conns = cn->next;
			fp->nconns--;
			close(fd);
			free(cn);
		} else {
			pthread_detach(t);
		}
		pthread_mutex_unlock(&fp->lock);
	}
	return NULL;
}

int fastpath_new(struct daemon *d, struct fastpath **ret)
{
	struct fastpath *fp = calloc(1, sizeof(*fp));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[96];
	int err, tries;

	if (!fp)
		return -ENOMEM;
	fp->d = d;
	fp->listen_fd = -1;
	pthread_mutex_init(&fp->lock, NULL);
	pthread_cond_init(&fp->cond, NULL);
	err = fastpath_sock_dir(d, dir, sizeof(dir));
	if (err)
		goto fail;
	fastpath_sock_remove_stale(dir);
	fp->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fp->listen_fd < 0) {
		err = -errno;
		goto fail;
	}
	/* A random name, never taken over from a live daemon. */
	for (tries = 0;; tries++) {
		uint64_t r[2];

		if (getrandom(r, sizeof(r), 0) != sizeof(r)) {
			err = -EIO;
			goto fail;
		}
		if ((size_t)snprintf(fp->path, sizeof(fp->path),
				     "%s/%016llx%016llx.sock", dir,
				     (unsigned long long)r[0],
				     (unsigned long long)r[1]) >=
		    sizeof(fp->path)) {
			err = -ENAMETOOLONG;
			goto fail;
		}
		memcpy(sa.sun_path, fp->path, strlen(fp->path) + 1);
		if (bind(fp->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ==
		    0)
			break;
		if (errno != EADDRINUSE || tries == 4) {
			err = -errno;
			goto fail;
		}
	}
	fp->bound = true;
	/* Others connect only where they may read the mount at all. */
	if (chmod(fp->path, d->opts.allow_other ? 0666 : 0600) < 0 ||
	    listen(fp->listen_fd, 64) < 0) {
		err = -errno;
		goto fail;
	}
	*ret = fp;
	return 0;
fail:
	fastpath_free(fp);
	return err;
}

int fastpath_start(struct fastpath *fp, const char *mountpoint)
{
	int r;

	/* Without it every grant fails and loaders read through FUSE. */
	fp->dev = mountpoint_fuse_dev(mountpoint);
	if (!fp->dev)
		log_error("fast path: %s not in mountinfo, serving nothing",
			  mountpoint);
	r = pthread_create(&fp->thread, NULL, accept_thread, fp);
	if (r)
		return -r;
	fp->started = true;
	return 0;
}

const char *fastpath_socket(const struct fastpath *fp)
{
	return fp->path;
}

void fastpath_free(struct fastpath *fp)
{
	struct conn *cn;

	if (!fp)
		return;
	if (fp->listen_fd >= 0) {
		shutdown(fp->listen_fd, SHUT_RDWR);
		if (fp->started)
			pthread_join(fp->thread, NULL);
		close(fp->listen_fd);
		if (fp->bound)
			unlink(fp->path);
	}
	/* Disconnect the clients and wait for their threads to let go. */
	pthread_mutex_lock(&fp->lock);
	for (cn = fp->conns; cn; cn = cn->next)
		shutdown(cn->fd, SHUT_RDWR);
	while (fp->conns)
		pthread_cond_wait(&fp->cond, &fp->lock);
	pthread_mutex_unlock(&fp->lock);
	pthread_cond_destroy(&fp->cond);
	pthread_mutex_destroy(&fp->lock);
	free(fp);
}
