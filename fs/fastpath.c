#include "fastpath.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache.h"
#include "daemon.h"
#include "readpath.h"
#include "tree.h"
#include "wire.h"

#define MAX_CLIENTS 256
#define WIRE_MAX_MAPPED (64ULL << 30) /* per client */

struct region {
	char *base;
	uint64_t len;
};

struct client {
	struct daemon *d;
	int fd;
	unsigned uid;
	struct region regions[WIRE_MAX_REGIONS];
	unsigned nregions;
	uint64_t mapped; /* bytes of all regions */
	bool hello;
};

struct conn {
	struct fastpath *fp;
	int fd;
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
	pthread_t thread;
	bool started;
	bool bound; /* path is our socket, to remove at the end */
};

static bool peer_allowed(const struct client *c)
{
	return c->d->opts.allow_other || c->uid == 0 || c->uid == getuid();
}

/* The file a request names, if the peer may read it. */
static int file_of(struct client *c, const struct wire_read *rq,
		   struct node **ret)
{
	struct node *n = tree_get(c->d->tree, rq->ino);

	if (!n)
		return -ENOENT;
	if (n->is_dir)
		return -EISDIR;
	if (!peer_allowed(c))
		return -EACCES;
	*ret = n;
	return 0;
}

/* Copy file bytes into a client region (READ), or only into the cache
 * (PREFETCH: no region). @return bytes or -errno. */
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
	err = file_of(c, rq, &n);
	if (!err)
		err = readpath_begin(d->cache, &d->opts, n, rq->off, rq->len,
				     &rp);
	while (!err && (err = readpath_next(&rp, &b, &boff, &len)) == 1) {
		if (copy)
			memcpy(r->base + rq->region_off + done, b->data + boff,
			       len);
		cache_unref(d->cache, b);
		done += len;
		err = 0;
	}
	return err < 0 ? err : (int64_t)done;
}

/* Forget a file's cached bytes, the daemon's and the kernel's. */
static int64_t do_evict(struct client *c, const struct wire_read *rq)
{
	struct node *n;
	int err = file_of(c, rq, &n);

	if (err)
		return err;
	cache_drop_file(c->d->cache, n);
	if (c->d->se)
		fuse_lowlevel_notify_inval_inode(c->d->se, n->ino, 0, 0);
	return 0;
}

static int do_map(struct client *c, struct wire_map *m, int memfd)
{
	struct stat st;
	void *base;

	int seals;

	if (!peer_allowed(c))
		return -EACCES;
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

void fastpath_serve_one(struct daemon *d, int fd, unsigned peer_uid)
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
		free(c);
	}
	close(fd);
}

static void *client_thread(void *arg)
{
	struct conn *cn = arg, **p;
	struct fastpath *fp = cn->fp;

	fastpath_serve_one(fp->d, cn->fd, cn->uid);
	pthread_mutex_lock(&fp->lock);
	for (p = &fp->conns; *p != cn; p = &(*p)->next)
		;
	*p = cn->next;
	fp->nconns--;
	pthread_cond_broadcast(&fp->cond);
	pthread_mutex_unlock(&fp->lock);
	free(cn);
	return NULL;
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
		pthread_mutex_lock(&fp->lock);
		if (fp->nconns >= MAX_CLIENTS) {
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

/* The directory for the socket: ours alone, so that no other user can
 * put a socket of theirs where a loader looks. */
static int socket_dir(char *buf, size_t len)
{
	const char *base = getuid() == 0 ? "/run" : getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (!base || !*base)
		base = "/tmp";
	if ((size_t)snprintf(buf, len, "%s/weightfs-%u", base,
			     (unsigned)getuid()) >= len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(buf, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022))
		return -EPERM;
	return 0;
}

/* Sockets of daemons that died without cleaning up: nothing answers
 * there any more (a live daemon accepts, so its socket stays). */
static void remove_stale(const char *dir)
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
	err = socket_dir(dir, sizeof(dir));
	if (err)
		goto fail;
	remove_stale(dir);
	fp->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fp->listen_fd < 0) {
		err = -errno;
		goto fail;
	}
	/* A random name, never taken over from a live daemon. */
	for (tries = 0;; tries++) {
		uint64_t r;

		if (getrandom(&r, sizeof(r), 0) != sizeof(r)) {
			err = -EIO;
			goto fail;
		}
		if ((size_t)snprintf(
			    fp->path, sizeof(fp->path), "%s/%016llx.sock", dir,
			    (unsigned long long)r) >= sizeof(fp->path)) {
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
	if (chmod(fp->path, 0666) < 0 || listen(fp->listen_fd, 64) < 0) {
		err = -errno;
		goto fail;
	}
	*ret = fp;
	return 0;
fail:
	fastpath_free(fp);
	return err;
}

int fastpath_start(struct fastpath *fp)
{
	int r = pthread_create(&fp->thread, NULL, accept_thread, fp);

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
