#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errmsg.h"
#include "io.h"

/* O_DIRECT needs the buffer, offset and length aligned to the logical
 * block size; 4096 covers every common device. */
#define DIRECT_ALIGN 4096

struct pread_file {
	int fd;	       /* borrowed */
	int direct_fd; /* owned, or -1 */
	const char *path;
};

struct pread_reader {
	struct reader base;
	unsigned nfiles;
	struct pread_file files[];
};

static ssize_t pread_read(struct reader *r, unsigned file, uint64_t off,
			  void *buf, size_t len)
{
	struct pread_reader *pr = (struct pread_reader *)r;
	const struct pread_file *f = &pr->files[file];
	int fd = f->direct_fd >= 0 ? f->direct_fd : f->fd;
	ssize_t n = pread_full(fd, buf, len, off);

	if (n < 0)
		return err_set((int)n, "%s: read at %llu: %s", f->path,
			       (unsigned long long)off, strerror((int)-n));
	return n;
}

static size_t pread_align(struct reader *r, unsigned file)
{
	struct pread_reader *pr = (struct pread_reader *)r;

	return pr->files[file].direct_fd >= 0 ? DIRECT_ALIGN : 1;
}

static void pread_free(struct reader *r)
{
	struct pread_reader *pr = (struct pread_reader *)r;

	for (unsigned i = 0; i < pr->nfiles; i++)
		if (pr->files[i].direct_fd >= 0)
			close(pr->files[i].direct_fd);
	free(pr);
}

static const struct reader_ops pread_ops = {
	.read = pread_read,
	.align = pread_align,
	.free = pread_free,
};

/* Open @path with O_DIRECT if it is still the file @fd has open. */
static int open_direct(const char *path, int fd)
{
	struct stat a, b;
	int dfd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);

	if (dfd < 0)
		return -1;
	if (fstat(fd, &a) || fstat(dfd, &b) || a.st_dev != b.st_dev ||
	    a.st_ino != b.st_ino) {
		close(dfd);
		return -1;
	}
	return dfd;
}

int reader_pread_new(const char *const *paths, const int *fds,
		     const bool *direct, unsigned nfiles,
		     struct reader **ret_reader)
{
	struct pread_reader *pr;

	pr = calloc(1, sizeof(*pr) + nfiles * sizeof(pr->files[0]));
	if (!pr)
		return err_set(-ENOMEM, "out of memory");
	pr->base.ops = &pread_ops;
	pr->base.path = WFS_PATH_DIRECT;
	pr->nfiles = nfiles;
	for (unsigned i = 0; i < nfiles; i++) {
		pr->files[i].fd = fds[i];
		pr->files[i].path = paths[i];
		pr->files[i].direct_fd = direct && direct[i]
						 ? open_direct(paths[i], fds[i])
						 : -1;
		if (pr->files[i].direct_fd >= 0)
			pr->base.direct_io_files++;
	}
	*ret_reader = &pr->base;
	return 0;
}

int reader_share(struct reader *r, void *base, size_t len, int memfd)
{
	return r->ops->share ? r->ops->share(r, base, len, memfd) : -ENOTSUP;
}

void reader_free(struct reader *r)
{
	if (r)
		r->ops->free(r);
}
