/* wfs_model_load(): choose the destination and the read mode, then run the
 * pipeline over every tensor of the model. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cuda.h"
#include "errmsg.h"
#include "model.h"
#include "pipeline.h"
#include "reader.h"
#include "staging.h"

#define DEFAULT_STAGING (256u << 20)
#define DEFAULT_CHUNK (8u << 20)
#define DEFAULT_ALIGN 256
#define MAX_THREADS 16
#define HUGE_PAGE (2u << 20)
#define MAX_ALIGN (1u << 30)
#define MAX_CHUNK (1u << 30)
#define CUDA_MALLOC_ALIGN 256 /* what cudaMalloc promises */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int get_opts(const struct wfs_load_opts *user, struct wfs_load_opts *o)
{
	const unsigned char *tail;
	size_t n;

	wfs_load_opts_init(o, sizeof(*o));
	if (user) {
		if (user->struct_size < LOAD_OPTS_SIZE_MIN)
			return err_set(-EINVAL, "wfs_load_opts not initialized "
						"(use wfs_load_opts_init)");
		n = user->struct_size < sizeof(*o) ? user->struct_size
						   : sizeof(*o);
		/* A newer caller's fields this library does not know must be
		 * left at their defaults (zero), or the load would silently
		 * not do what was asked. */
		tail = (const unsigned char *)user + n;
		for (size_t i = 0; i < user->struct_size - n; i++)
			if (tail[i])
				return err_set(
					-EINVAL,
					"wfs_load_opts sets a field this "
					"libweightfs %s does not know",
					WFS_VERSION_STRING);
		memcpy(o, user, n);
		o->struct_size = sizeof(*o);
	}
	if (!o->threads) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		o->threads = cpus < 1 ? 1 : (unsigned)cpus;
	}
	if (o->threads > MAX_THREADS)
		o->threads = MAX_THREADS;
	if (!o->staging_bytes)
		o->staging_bytes = DEFAULT_STAGING;
	if (!o->chunk_bytes)
		o->chunk_bytes = DEFAULT_CHUNK;
	if (!o->alignment)
		o->alignment = DEFAULT_ALIGN;
	if (o->alignment & (o->alignment - 1) || o->alignment > MAX_ALIGN)
		return err_set(-EINVAL,
			       "alignment %zu is not a power of two up to "
			       "1 GiB",
			       o->alignment);
	if (o->chunk_bytes > MAX_CHUNK)
		o->chunk_bytes = MAX_CHUNK;
	if (o->device < WFS_DEVICE_CPU)
		return err_set(-EINVAL, "bad device %d", o->device);
	return 0;
}

/*
 * Host memory for the model that is a memfd, so that the fast path's
 * daemon maps it and writes the tensors there itself: its copy from its
 * cache is the only one. Sealed against shrinking (the daemon insists).
 * On hugetlbfs pages where the system has enough free (@huge): a fresh
 * 4 KiB shmem page costs a fault and a zeroing each, a huge page one
 * fault per 2 MiB, which on a warm load is most of the difference.
 * @return 0, m->data, *ret_memfd (the caller closes it) and *ret_len (the
 * memfd's size, whole pages), or -errno.
 */
static int alloc_shared(struct wfs_model *m, size_t len, size_t align,
			bool huge, int *ret_memfd, size_t *ret_len)
{
	char *map = MAP_FAILED, *start;
	size_t maplen, page, a;
	int fd, r;

	r = memfd_sealed("weightfs-model", len, huge, &fd, &maplen, &page);
	if (r < 0)
		return r;
	a = align > page ? align : page;
	if (maplen > SIZE_MAX - a)
		goto fail;
	/* Reserve room to align the start, then put the memfd there (on
	 * hugetlbfs this reserves its pages, or fails: no fault later can
	 * find none). */
	map = mmap(NULL, maplen + a, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		   0);
	if (map == MAP_FAILED)
		goto fail;
	start = (char *)(((uintptr_t)map + a - 1) & ~(uintptr_t)(a - 1));
	if (mmap(start, maplen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 fd, 0) == MAP_FAILED)
		goto fail;
	if (start > map)
		munmap(map, (size_t)(start - map));
	if (map + maplen + a > start + maplen)
		munmap(start + maplen,
		       (size_t)(map + maplen + a - (start + maplen)));
	/* Transparent huge pages where the kernel allows them for shmem
	 * (not with shmem_enabled=never: then 4 KiB faults, in the daemon's
	 * copy). */
	if (!huge)
		madvise(start, maplen, MADV_HUGEPAGE);
	m->data = start;
	m->data_bytes = len;
	m->data_map_bytes = maplen;
	m->data_mapped = true;
	m->owns_data = true;
	*ret_memfd = fd;
	*ret_len = maplen;
	return 0;
fail:
	if (map != MAP_FAILED)
		munmap(map, maplen + a);
	close(fd);
	return -ENOMEM;
}

static int alloc_dest(struct wfs_model *m, uint64_t need, size_t align)
{
	size_t len = need ? (size_t)need : 1;
	int r;

	if ((uint64_t)len != (need ? need : 1))
		return err_set(-ENOMEM, "model too large for this machine");
	if (m->device != WFS_DEVICE_CPU) {
		/* cudaMalloc aligns to 256 bytes: more room for more. */
		size_t extra = align > CUDA_MALLOC_ALIGN
				       ? align - CUDA_MALLOC_ALIGN
				       : 0;

		if (len > SIZE_MAX - extra)
			return err_set(-ENOMEM, "model too large");
		r = cuda_use(m->device);
		if (r == 0)
			r = cuda_malloc(len + extra, &m->data_alloc);
		if (r < 0)
			return r;
		m->data = (void *)(((uintptr_t)m->data_alloc + extra) &
				   ~(uintptr_t)(align - 1));
	} else if (len >= HUGE_PAGE) {
		/* Huge pages: far fewer page faults while the reads fill
		 * a fresh allocation. */
		size_t a = align > HUGE_PAGE ? align : HUGE_PAGE;
		char *map, *start;

		/* Over-map, then trim to a start aligned for the caller
		 * and for huge pages. */
		if (len > SIZE_MAX - a)
			return err_set(-ENOMEM, "model too large");
		map = mmap(NULL, len + a, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (map == MAP_FAILED)
			return err_set(-ENOMEM,
				       "cannot allocate %zu bytes of host "
				       "memory",
				       len);
		start = (char *)(((uintptr_t)map + a - 1) &
				 ~(uintptr_t)(a - 1));
		if (start > map)
			munmap(map, (size_t)(start - map));
		if (map + len + a > start + len)
			munmap(start + len,
			       (size_t)(map + len + a - (start + len)));
		m->data = start;
		madvise(m->data, len, MADV_HUGEPAGE);
		m->data_mapped = true;
	} else if (posix_memalign(&m->data, align < 64 ? 64 : align, len)) {
		m->data = NULL;
		return err_set(-ENOMEM, "cannot allocate %zu bytes", len);
	}
	m->data_bytes = len;
	m->owns_data = true;
	return 0;
}

/* Whether most of a file is in the page cache. */
static bool mostly_cached(const struct model_file *f)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t pages =
		(size_t)((f->size + (uint64_t)page - 1) / (uint64_t)page);
	size_t in = 0;
	unsigned char *vec;
	void *map;

	if (!f->size)
		return true;
	map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
	if (map == MAP_FAILED)
		return true;
	vec = malloc(pages);
	if (vec && mincore(map, (size_t)f->size, vec) == 0)
		for (size_t i = 0; i < pages; i++)
			in += vec[i] & 1;
	else
		in = pages;
	free(vec);
	munmap(map, (size_t)f->size);
	return in * 2 >= pages;
}

static int check_unchanged(const struct model_file *f)
{
	struct stat sb;

	if (f->fd < 0)
		return err_set(-EBADF, "%s: closed (wfs_model_close_files())",
			       f->path);
	if (fstat(f->fd, &sb) < 0)
		return err_set(-errno, "%s: %s", f->path, strerror(errno));
	if ((uint64_t)sb.st_size != f->size)
		return err_set(-EIO, "%s: size changed since it was opened",
			       f->path);
	return 0;
}

static int make_reader(struct wfs_model *m, const struct wfs_load_opts *o,
		       struct reader **ret)
{
	bool *direct;
	int r;

	/* On a weightfs mount, the daemon's cache without the page cache. */
	if (reader_fastpath_new((const char *const *)m->paths, m->fds,
				m->nfiles, ret) == 0)
		return 0;
	direct = calloc(m->nfiles + 1, sizeof(*direct));
	if (!direct)
		return err_set(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < m->nfiles; i++) {
		if (o->direct_io == WFS_DIRECT_IO_ALWAYS)
			direct[i] = true;
		else if (o->direct_io == WFS_DIRECT_IO_AUTO)
			direct[i] = o->device != WFS_DEVICE_CPU &&
				    !mostly_cached(&m->files[i]);
	}
	r = reader_pread_new((const char *const *)m->paths, m->fds, direct,
			     m->nfiles, ret);
	free(direct);
	return r;
}

static int make_pieces(const struct wfs_model *m, struct pipe_piece **ret,
		       size_t *ret_n)
{
	struct pipe_piece *p;
	size_t n = 0;

	if (m->sel) /* a part of the model: only its ranges */
		return model_select_pieces(m, ret, ret_n);
	p = calloc(m->ntensors + 1, sizeof(*p));
	if (!p)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < m->ntensors; i++) {
		if (!m->tensors[i].nbytes)
			continue;
		p[n++] = (struct pipe_piece){
			.file = m->tensor_file[i],
			.file_off = m->tensor_file_off[i],
			.len = m->tensors[i].nbytes,
			.dst_off = m->tensors[i].offset,
		};
	}
	*ret = p;
	*ret_n = n;
	return 0;
}

static int load(struct wfs_model *m, const struct wfs_load_opts *user)
{
	struct wfs_load_opts o;
	struct pipe_piece *pieces = NULL;
	struct reader *reader = NULL;
	struct pipe_result res = { 0 };
	struct pipe_params pp;
	uint64_t need, bytes = 0;
	size_t npieces = 0, maplen = 0;
	double t0 = now();
	int memfd = -1, r = 0;

	err_clear();
	if (!m)
		return err_set(-EINVAL, "no model");
	r = get_opts(user, &o);
	if (r < 0)
		return r;
	model_release_data(m);
	m->device = o.device;
	need = model_layout(m, o.alignment);
	if (o.dest) {
		if (o.dest_bytes < need)
			return err_set(-ENOSPC,
				       "destination holds %zu bytes, the model "
				       "needs %llu",
				       o.dest_bytes, (unsigned long long)need);
		if ((uintptr_t)o.dest % o.alignment)
			return err_set(-EINVAL,
				       "destination is not aligned "
				       "to %zu bytes",
				       o.alignment);
		m->data = o.dest;
		m->data_bytes = o.dest_bytes;
		if (o.device != WFS_DEVICE_CPU) {
			r = cuda_use(o.device);
			if (r < 0)
				goto fail;
		}
	}
	for (unsigned i = 0; i < m->nfiles && r == 0; i++)
		r = check_unchanged(&m->files[i]);
	if (r == 0)
		r = make_reader(m, &o, &reader);
	if (r < 0)
		goto fail;
	/* A host destination on the fast path: memory the daemon writes
	 * into itself (else, or if the daemon refuses it, the reads copy
	 * from its bounce buffer). */
	if (!o.dest && o.device == WFS_DEVICE_CPU &&
	    reader->path == WFS_PATH_FASTPATH &&
	    ((need >= HUGE_PAGE && alloc_shared(m, (size_t)need, o.alignment,
						true, &memfd, &maplen) == 0) ||
	     alloc_shared(m, need ? (size_t)need : 1, o.alignment, false,
			  &memfd, &maplen) == 0)) {
		reader_share(reader, m->data, maplen, memfd);
		close(memfd);
	} else if (!o.dest) {
		r = alloc_dest(m, need, o.alignment);
	}
	if (r == 0)
		r = make_pieces(m, &pieces, &npieces);
	if (r < 0)
		goto fail;
	pp = (struct pipe_params){
		.reader = reader,
		.paths = (const char *const *)m->paths,
		.pieces = pieces,
		.npieces = npieces,
		.device = o.device,
		.dest = m->data,
		.threads = o.threads,
		.staging_bytes = o.staging_bytes,
		.chunk_bytes = o.chunk_bytes,
		.progress = o.progress,
		.progress_arg = o.progress_arg,
	};
	r = pipeline_run(&pp, &res);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < m->ntensors; i++) {
		m->tensors[i].data = (char *)m->data + m->tensors[i].offset;
		bytes += m->tensors[i].nbytes;
	}
	m->loaded = true;
	m->stats = (struct wfs_load_stats){
		.path = reader->path,
		.bytes = bytes,
		.seconds = now() - t0,
		.threads = res.threads,
		.staging_bytes = res.staging_bytes,
		.direct_io_files = reader->direct_io_files,
		.bytes_copied = reader->bytes_copied,
		.setup_seconds = res.io_start > t0 ? res.io_start - t0 : 0,
		.staging = res.staging,
	};
	reader_free(reader);
	free(pieces);
	return 0;
fail:
	reader_free(reader);
	free(pieces);
	model_release_data(m);
	return r;
}

int wfs_model_load(struct wfs_model *m, const struct wfs_load_opts *user)
{
	int dev = user && user->device != WFS_DEVICE_CPU ? cuda_device_save()
							 : -1;
	int r = load(m, user);

	cuda_device_restore(dev);
	return r;
}

int wfs_model_read(const struct wfs_model *m, size_t index, uint64_t offset,
		   void *buf, size_t len)
{
	const struct wfs_tensor *t = wfs_model_tensor(m, index);
	int r, dev;

	err_clear();
	if (!t)
		return err_set(-EINVAL, "no tensor %zu", index);
	if (!m->loaded)
		return err_set(-ENODATA, "model not loaded");
	if (offset > t->nbytes || len > t->nbytes - offset)
		return err_set(-ERANGE, "read past the end of tensor \"%s\"",
			       t->name);
	if (!len)
		return 0;
	if (m->device == WFS_DEVICE_CPU) {
		memcpy(buf, (const char *)t->data + offset, len);
		return 0;
	}
	dev = cuda_device_save();
	r = cuda_use(m->device);
	if (r == 0)
		r = cuda_copy_to_host(buf, (const char *)t->data + offset, len);
	cuda_device_restore(dev);
	return r;
}

/* For iter.c: the same options, reader and pieces as a load. */
int load_opts_get(const struct wfs_load_opts *user, struct wfs_load_opts *o)
{
	return get_opts(user, o);
}

int load_reader_new(struct wfs_model *m, const struct wfs_load_opts *o,
		    struct reader **ret)
{
	return make_reader(m, o, ret);
}

int load_pieces(const struct wfs_model *m, struct pipe_piece **ret,
		size_t *ret_n)
{
	return make_pieces(m, ret, ret_n);
}
