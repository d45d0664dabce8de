/* Staging memory that reads land in before they are copied to the device.
 * For a GPU it is pinned, and pinning is slow (about 0.7 s/GiB), so one
 * pinned buffer is kept between loads and reused. Pinned staging is a
 * memfd (sealed against shrinking and growing) mapped here and
 * registered with CUDA, so that the weightfs daemon can map it too and
 * write reads straight into it (reader_share()); host staging is plain
 * page-aligned memory. Thread-safe (the kept buffer is under a lock). */
#ifndef WFS_LOADER_STAGING_H
#define WFS_LOADER_STAGING_H

#include <stdbool.h>
#include <stddef.h>

struct staging {
	void *buf;
	size_t len; /* >= what was asked for */
	bool pinned;
	int memfd;  /* >= 0: @buf is this memfd mapped (pinned by register) */
	int device; /* pinned: the CUDA device it was pinned with (freed
		     * with it current: no context made on another) */
};

/*
 * staging_take() - get @len bytes of staging, pinned for CUDA @device
 * (which must be the calling thread's current device), or plain host
 * memory for WFS_DEVICE_CPU.
 * @return 0 and *ret, or a negative errno.
 */
int staging_take(int device, size_t len, struct staging *ret);

/* staging_put() - give staging back (kept for the next load if pinned). */
void staging_put(struct staging *s);

/* staging_abandon() - forget staging that copies may still read (a wait
 * for them failed): neither reused nor freed nor unpinned, so that no
 * pending DMA reads memory given to something else. Leaks it. */
void staging_abandon(struct staging *s);

/* staging_release() - free the pinned buffer kept between loads. */
void staging_release(void);

/*
 * memfd_sealed() - a memfd of at least @len bytes that nobody can shrink
 * or grow (what the fast-path daemon maps). With @huge, on hugetlbfs
 * (MFD_HUGETLB): its size rounded up to whole huge pages, all allocated
 * here; fails (-EINVAL, -ENOSYS...) where the kernel has none and
 * (-ENOSPC) where too few are free or this process's hugetlb cgroup
 * limit is reached, so nothing ever faults on a page that is not there
 * (the daemon's copy included). Not with @huge where WEIGHTFS_HUGETLB=0.
 * @return 0, *ret_fd and *ret_len (the size: a multiple of *ret_page,
 * the page size, and a length that munmap() takes), or -errno.
 */
int memfd_sealed(const char *name, size_t len, bool huge, int *ret_fd,
		 size_t *ret_len, size_t *ret_page);

#endif
