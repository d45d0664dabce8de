#include "staging.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda.h"
#include "errmsg.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct staging kept = { .memfd = -1 }; /* protected by lock */

/* A memfd of @len bytes that nobody can shrink or grow, mapped shared and
 * pinned. @return 0 and *s filled, or a negative errno. */
static int shared_pinned(size_t len, struct staging *s)
{
	int fd = memfd_create("weightfs-staging",
			      MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *p;
	int r;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) <
		    0) {
		r = -errno;
		close(fd);
		return r;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		 fd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		close(fd);
		return r;
	}
	r = cuda_host_register(p, len);
	if (r < 0) {
		munmap(p, len);
		close(fd);
		return r;
	}
	s->buf = p;
	s->memfd = fd;
	return 0;
}

static void free_pinned(struct staging *s)
{
	if (!s->buf)
		return;
	if (s->memfd >= 0) {
		cuda_host_unregister(s->buf);
		munmap(s->buf, s->len);
		close(s->memfd);
	} else {
		cuda_host_free(s->buf);
	}
	s->buf = NULL;
	s->memfd = -1;
}

int staging_take(bool pinned, size_t len, struct staging *ret)
{
	struct staging s = { .pinned = pinned, .len = len, .memfd = -1 };
	int r;

	if (!pinned) {
		if (posix_memalign(&s.buf, 4096, len))
			return err_set(-ENOMEM, "out of memory for staging");
		*ret = s;
		return 0;
	}
	pthread_mutex_lock(&lock);
	if (kept.buf && kept.len >= len) {
		s = kept;
		kept.buf = NULL;
		kept.memfd = -1;
	}
	pthread_mutex_unlock(&lock);
	if (s.buf) {
		*ret = s;
		return 0;
	}
	/* Shared with the daemon where that works, else CUDA's own. */
	len = (len + 4095) / 4096 * 4096;
	s.len = len;
	if (shared_pinned(len, &s) == 0) {
		*ret = s;
		return 0;
	}
	r = cuda_host_alloc(len, &s.buf);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

void staging_put(struct staging *s)
{
	struct staging drop = { .memfd = -1 };

	if (!s->buf)
		return;
	if (!s->pinned) {
		free(s->buf);
		s->buf = NULL;
		return;
	}
	pthread_mutex_lock(&lock);
	if (!kept.buf || kept.len < s->len) {
		drop = kept;
		kept = *s;
	} else {
		drop = *s;
	}
	pthread_mutex_unlock(&lock);
	free_pinned(&drop);
	s->buf = NULL;
	s->memfd = -1;
}

void staging_release(void)
{
	struct staging drop;

	pthread_mutex_lock(&lock);
	drop = kept;
	kept.buf = NULL;
	kept.memfd = -1;
	pthread_mutex_unlock(&lock);
	free_pinned(&drop);
}
