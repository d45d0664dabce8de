/* The fast path: on a weightfs mount, ask the daemon for byte ranges over
 * its Unix socket (common/wire.h) instead of reading through FUSE and the
 * kernel page cache. The daemon copies from its block cache into memory
 * shared with it: straight into the caller's buffer where that is a
 * memfd handed over with reader_share() (pinned staging, a host
 * destination), so each byte is copied once, by the daemon; elsewhere
 * into a 16 MiB bounce memfd per connection, from which read() copies.
 *
 * One connection per concurrent read: a read takes an idle connection (or
 * opens one) and gives it back, so reader threads never wait on each
 * other. */
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "errmsg.h"
#include "wire.h"
#include "wire_client.h"

#define BOUNCE_BYTES (16u << 20)
#define MAX_SHARES 4

/* Memory of ours the daemon may write into (reader_share()). */
struct fp_share {
	char *base;
	size_t len;
	int memfd; /* our dup, sent with WIRE_MAP on each connection */
};

struct fp_conn {
	int fd;
	char *bounce;		/* shared with the daemon as region 0 */
	int region[MAX_SHARES]; /* the daemon's id of each share, or -1 */
	struct fp_conn *next;
};

struct fp_file {
	uint64_t ino;
	int fd; /* borrowed: proves to the daemon that we may read it */
	const char *path;
};

struct fp_reader {
	struct reader base;
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	pthread_mutex_t lock;
	struct fp_share shares[MAX_SHARES]; /* set before reads start */
	unsigned nshares;
	struct fp_conn *idle; /* protected by lock */
	uint64_t tag;	      /* protected by lock */
	unsigned nfiles;
	struct fp_file files[];
};

static void conn_free(struct fp_conn *c)
{
	if (!c)
		return;
	if (c->bounce)
		munmap(c->bounce, BOUNCE_BYTES);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Connect, say hello, prove access to every file, share a bounce
 * region. */
static int conn_open(struct fp_reader *r, struct fp_conn **ret)
{
	struct wire_map map = { .h = { WIRE_MAGIC, WIRE_MAP, 2 },
				.len = BOUNCE_BYTES };
	struct fp_conn *c = calloc(1, sizeof(*c));
	int memfd = -1, err;

	if (!c)
		return -ENOMEM;
	c->fd = -1;
	for (unsigned i = 0; i < MAX_SHARES; i++)
		c->region[i] = -1;
	err = wire_connect(r->sock, r->files[0].fd, &c->fd);
	if (err < 0)
		goto fail;
	for (unsigned i = 0; i < r->nfiles; i++) {
		uint64_t ino;

		err = wire_grant(c->fd, r->files[i].fd, &ino);
		if (err < 0)
			goto fail;
		if (ino != r->files[i].ino) {
			err = -EPROTO;
			goto fail;
		}
	}
	/* Sealed against shrinking (the daemon insists), and faulted in
	 * here so the pages count against the loader, not the daemon. */
	memfd = memfd_create("weightfs-fastpath",
			     MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0 || ftruncate(memfd, BOUNCE_BYTES) < 0 ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		goto fail_errno;
	c->bounce = mmap(NULL, BOUNCE_BYTES, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_POPULATE, memfd, 0);
	if (c->bounce == MAP_FAILED) {
		c->bounce = NULL;
		goto fail_errno;
	}
	if ((err = wire_roundtrip(c->fd, &map, sizeof(map), memfd)) < 0)
		goto fail;
	if (map.region != 0) {
		err = map.region < 0 ? map.region : -EPROTO;
		goto fail;
	}
	close(memfd);
	*ret = c;
	return 0;
fail_errno:
	err = -errno;
fail:
	if (memfd >= 0)
		close(memfd);
	conn_free(c);
	return err;
}

static int conn_take(struct fp_reader *r, struct fp_conn **ret)
{
	struct fp_conn *c;

	pthread_mutex_lock(&r->lock);
	c = r->idle;
	if (c)
		r->idle = c->next;
	pthread_mutex_unlock(&r->lock);
	if (c) {
		*ret = c;
		return 0;
	}
	return conn_open(r, ret);
}

static void conn_give(struct fp_reader *r, struct fp_conn *c)
{
	pthread_mutex_lock(&r->lock);
	c->next = r->idle;
	r->idle = c;
	pthread_mutex_unlock(&r->lock);
}

/* The share holding all of [@buf, @buf + @len), or -1. */
static int share_of(const struct fp_reader *r, const void *buf, size_t len)
{
	const char *p = buf;

	for (unsigned i = 0; i < r->nshares; i++) {
		const struct fp_share *s = &r->shares[i];

		if (p >= s->base && p <= s->base + s->len &&
		    len <= (size_t)(s->base + s->len - p))
			return (int)i;
	}
	return -1;
}

/* Map share @i on connection @c, once. @return its region id or -errno. */
static int conn_region(struct fp_reader *r, struct fp_conn *c, int i)
{
	struct wire_map map = { .h = { WIRE_MAGIC, WIRE_MAP, 2 },
				.len = r->shares[i].len };
	int err;

	if (c->region[i] >= 0)
		return c->region[i];
	err = wire_roundtrip(c->fd, &map, sizeof(map), r->shares[i].memfd);
	if (err < 0)
		return err;
	if (map.region < 0)
		return map.region;
	c->region[i] = map.region;
	return map.region;
}

/*
 * Read into @buf: where it is memory shared with the daemon, the daemon
 * writes there itself and this process copies nothing; elsewhere through
 * the bounce region and one memcpy (counted in bytes_copied).
 */
static ssize_t fp_read(struct reader *base, unsigned file, uint64_t off,
		       void *buf, size_t len)
{
	struct fp_reader *r = (struct fp_reader *)base;
	int sh = share_of(r, buf, len), region = 0;
	struct fp_conn *c;
	size_t done = 0, max = BOUNCE_BYTES;
	int err = conn_take(r, &c);

	if (err < 0)
		return err_set(err, "%s: weightfs fast path: %s",
			       r->files[file].path, strerror(-err));
	if (sh >= 0) {
		region = conn_region(r, c, sh);
		if (region < 0) {
			sh = -1; /* refused: copy as before */
			region = 0;
		} else {
			max = WIRE_MAX_READ;
		}
	}
	while (done < len) {
		struct wire_read rq = {
			.h = { WIRE_MAGIC, WIRE_READ, 0 },
			.ino = r->files[file].ino,
			.off = off + done,
			.len = len - done < max ? len - done : max,
			.region = region,
			.region_off = sh >= 0 ? (uint64_t)((char *)buf + done -
							   r->shares[sh].base)
					      : 0,
		};

		pthread_mutex_lock(&r->lock);
		rq.h.tag = ++r->tag;
		pthread_mutex_unlock(&r->lock);
		err = wire_roundtrip(c->fd, &rq, sizeof(rq), -1);
		if (!err && rq.result > (int64_t)rq.len)
			err = -EPROTO; /* more than asked: not our daemon */
		if (err < 0 || rq.result < 0) {
			conn_free(c);
			err = err < 0 ? err : (int)rq.result;
			return err_set(err,
				       "%s: read at %llu through the "
				       "weightfs fast path: %s",
				       r->files[file].path,
				       (unsigned long long)(off + done),
				       strerror(-err));
		}
		if (sh < 0) {
			memcpy((char *)buf + done, c->bounce,
			       (size_t)rq.result);
			__atomic_fetch_add(&r->base.bytes_copied,
					   (uint64_t)rq.result,
					   __ATOMIC_RELAXED);
		}
		done += (size_t)rq.result;
		if ((uint64_t)rq.result < rq.len)
			break; /* end of file */
	}
	conn_give(r, c);
	return (ssize_t)done;
}

static int fp_share(struct reader *base, void *buf, size_t len, int memfd)
{
	struct fp_reader *r = (struct fp_reader *)base;
	struct fp_share *s;

	if (r->nshares == MAX_SHARES)
		return -ENOSPC;
	if (len > WIRE_MAX_REGION)
		return -EFBIG;
	s = &r->shares[r->nshares];
	s->memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 0);
	if (s->memfd < 0)
		return -errno;
	s->base = buf;
	s->len = len;
	r->nshares++;
	return 0;
}

static size_t fp_align(struct reader *r, unsigned file)
{
	return 1;
}

static void fp_free(struct reader *base)
{
	struct fp_reader *r = (struct fp_reader *)base;
	struct fp_conn *c;

	while ((c = r->idle)) {
		r->idle = c->next;
		conn_free(c);
	}
	for (unsigned i = 0; i < r->nshares; i++)
		close(r->shares[i].memfd);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static const struct reader_ops fp_ops = {
	.read = fp_read,
	.align = fp_align,
	.share = fp_share,
	.free = fp_free,
};

int reader_fastpath_new(const char *const *paths, const int *fds,
			unsigned nfiles, struct reader **ret_reader)
{
	const char *env = getenv("WEIGHTFS_FASTPATH");
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct fp_reader *r;
	struct fp_conn *c;
	int err;

	if (env && !strcmp(env, "0"))
		return -ECANCELED;
	if (nfiles == 0)
		return -ENOTSUP;
	r = calloc(1, sizeof(*r) + nfiles * sizeof(r->files[0]));
	if (!r)
		return -ENOMEM;
	for (unsigned i = 0; i < nfiles; i++) {
		struct stat st;

		/* Every file on a weightfs mount, all on the same one. */
		if (wire_socket_of(fds[i], sock, sizeof(sock)) < 0 ||
		    fstat(fds[i], &st) < 0)
			goto not_here;
		if (i == 0)
			memcpy(r->sock, sock, sizeof(sock));
		else if (strcmp(sock, r->sock))
			goto not_here;
		r->files[i].ino = st.st_ino;
		r->files[i].fd = fds[i];
		r->files[i].path = paths[i];
	}
	r->base.ops = &fp_ops;
	r->base.path = WFS_PATH_FASTPATH;
	r->nfiles = nfiles;
	pthread_mutex_init(&r->lock, NULL);
	/* An old or gone daemon: the caller falls back to plain reads. */
	err = conn_open(r, &c);
	if (err < 0) {
		pthread_mutex_destroy(&r->lock);
		free(r);
		return err;
	}
	r->idle = c;
	*ret_reader = &r->base;
	return 0;
not_here:
	free(r);
	return -ENOTSUP;
}
