#include "staging.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_HUGE_2MB /* <linux/memfd.h>: log2 of the page size, << 26 */
#define MFD_HUGE_2MB (21U << 26)
#endif

#include "cuda.h"
#include "errmsg.h"
#include "weightfs.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct staging kept = { .memfd = -1 }; /* protected by lock */

int memfd_sealed(const char *name, size_t len, bool huge, int *ret_fd,
		 size_t *ret_len, size_t *ret_page)
{
	const char *env = getenv("WEIGHTFS_HUGETLB");
	unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	size_t page = 4096;
	struct stat st;
	int fd, r;

	if (huge && env && !strcmp(env, "0"))
		return -ECANCELED;
	/* 2 MiB pages, not the system's default size, which may be 1 GiB:
	 * a model just over a page would then take two. */
	fd = memfd_create(name,
			  flags | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (huge && st.st_blksize > 0)
		page = (size_t)st.st_blksize; /* hugetlbfs: its page size */
	if (len > SIZE_MAX - page) {
		errno = ENOMEM;
		goto fail;
	}
	len = (len + page - 1) / page * page;
	if (ftruncate(fd, (off_t)len) < 0)
		goto fail;
	/* Huge pages allocated now, charged to this process's hugetlb
	 * cgroup: mapping only reserves them from the pool, and a cgroup
	 * limit is charged at the first fault, ours or the daemon's copy
	 * (which fails with EFAULT). Past the pool or the limit this fails
	 * (ENOSPC) and the caller takes normal pages. */
	if (huge && fallocate(fd, 0, 0, (off_t)len) < 0)
		goto fail;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) <
	    0)
		goto fail;
	*ret_fd = fd;
	*ret_len = len;
	*ret_page = page;
	return 0;
fail:
	r = -errno;
	close(fd);
	return r;
}

/* A sealed memfd of at least s->len bytes, mapped shared and pinned, on
 * huge pages if @huge. @return 0 and *s filled (s->len: its size), or a
 * negative errno. */
static int shared_pinned(bool huge, struct staging *s)
{
	size_t len, page;
	void *p;
	int fd, r;

	r = memfd_sealed("weightfs-staging", s->len, huge, &fd, &len, &page);
	if (r < 0)
		return r;
	/* On hugetlbfs the pages are there already (memfd_sealed()): the
	 * populate below cannot SIGBUS. */
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
	s->len = len;
	s->memfd = fd;
	return 0;
}

static void free_pinned(struct staging *s)
{
	int saved;

	if (!s->buf)
		return;
	/* With the device it was pinned with current: on a thread that has
	 * none, the runtime would make a context on device 0 for this. */
	saved = cuda_device_save();
	cuda_use(s->device);
	if (s->memfd >= 0) {
		cuda_host_unregister(s->buf);
		munmap(s->buf, s->len);
		close(s->memfd);
	} else {
		cuda_host_free(s->buf);
	}
	cuda_device_restore(saved);
	s->buf = NULL;
	s->memfd = -1;
}

int staging_take(int device, size_t len, struct staging *ret)
{
	bool pinned = device != WFS_DEVICE_CPU;
	struct staging s = {
		.pinned = pinned, .len = len, .memfd = -1, .device = device
	};
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
	/* Shared with the daemon where that works, else CUDA's own; on
	 * huge pages where the system has them free (fewer pages to pin and
	 * to fault in). */
	if (shared_pinned(true, &s) == 0 || shared_pinned(false, &s) == 0) {
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

void staging_abandon(struct staging *s)
{
	if (!s->pinned) {
		staging_put(s); /* nothing copies from host staging */
		return;
	}
	/* The mapping stays (and the pinning); the fd is not needed. */
	if (s->memfd >= 0)
		close(s->memfd);
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
