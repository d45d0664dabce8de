/*
 * weightfs.h - load safetensors models into GPU or host memory.
 *
 * The one public header of libweightfs. A model is opened (headers parsed
 * and checked, no tensor data read), then loaded: tensor bytes are read in
 * parallel into a bounded staging ring and copied to one allocation on the
 * device (or in host memory), each tensor at an aligned offset in it.
 *
 *	struct wfs_model *m;
 *	if (wfs_model_open("model-dir", &m) < 0)
 *		fprintf(stderr, "%s\n", wfs_last_error());
 *	wfs_model_load(m, NULL);              // NULL: host memory, defaults
 *	const struct wfs_tensor *t = wfs_model_tensor(m, 0);
 *	... t->name, t->dtype, t->shape, t->data ...
 *	wfs_model_free(m);
 *
 * Errors: functions returning int return 0 (or a count) on success and a
 * negative errno on failure; wfs_last_error() then says what went wrong.
 *
 * Thread safety: functions on different models may run at once; one model
 * must not be used by two threads at once without a lock.
 *
 * Compatibility: the public structs below only ever grow at their end; the
 * library allocates the ones it returns, and callers initialize the ones
 * they pass with their init function, which records the caller's size.
 */
#ifndef WEIGHTFS_H
#define WEIGHTFS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WFS_EXPORT __attribute__((visibility("default")))
#else
#define WFS_EXPORT
#endif

#define WFS_VERSION_MAJOR 0
#define WFS_VERSION_MINOR 1
#define WFS_VERSION_PATCH 0
#define WFS_VERSION_NUMBER                                                     \
	(WFS_VERSION_MAJOR * 10000 + WFS_VERSION_MINOR * 100 +                 \
	 WFS_VERSION_PATCH)

/* wfs_version_number() - WFS_VERSION_NUMBER of the library at run time. */
WFS_EXPORT unsigned wfs_version_number(void);

/* wfs_version_string() - "MAJOR.MINOR.PATCH" of the library at run time. */
WFS_EXPORT const char *wfs_version_string(void);

/*
 * wfs_last_error() - what the calling thread's last failed wfs_ call went
 * wrong on, as one line naming the file and the problem; "" if nothing
 * failed yet. Valid until the thread's next wfs_ call.
 */
WFS_EXPORT const char *wfs_last_error(void);

/* Element types of the safetensors format (values are stable). */
enum wfs_dtype {
	WFS_DTYPE_BOOL = 0,
	WFS_DTYPE_U8,
	WFS_DTYPE_I8,
	WFS_DTYPE_F8_E5M2,
	WFS_DTYPE_F8_E4M3,
	WFS_DTYPE_F8_E8M0,
	WFS_DTYPE_I16,
	WFS_DTYPE_U16,
	WFS_DTYPE_F16,
	WFS_DTYPE_BF16,
	WFS_DTYPE_I32,
	WFS_DTYPE_U32,
	WFS_DTYPE_F32,
	WFS_DTYPE_F64,
	WFS_DTYPE_I64,
	WFS_DTYPE_U64,
	WFS_DTYPE_C64,
	WFS_DTYPE_F4,
	WFS_DTYPE_F6_E2M3,
	WFS_DTYPE_F6_E3M2,
	WFS_DTYPE_COUNT /* not a dtype: the number of them */
};

/* wfs_dtype_name() - the dtype as the format spells it ("BF16"), or NULL. */
WFS_EXPORT const char *wfs_dtype_name(enum wfs_dtype dtype);

/* wfs_dtype_bits() - bits per element (4, 6, 8, 16, 32 or 64), or 0. */
WFS_EXPORT unsigned wfs_dtype_bits(enum wfs_dtype dtype);

/* A device: WFS_DEVICE_CPU for host memory, or a CUDA device ordinal. */
#define WFS_DEVICE_CPU (-1)

/*
 * wfs_device_parse() - parse "cpu", "cuda" (device 0) or "cuda:N".
 * @return 0 and *ret_device, or -EINVAL.
 */
WFS_EXPORT int wfs_device_parse(const char *s, int *ret_device);

/* Whether a file is read with O_DIRECT (bypassing the page cache). */
enum wfs_direct_io {
	WFS_DIRECT_IO_AUTO = 0, /* when the device is a GPU and most of the
				   file is not in the page cache */
	WFS_DIRECT_IO_NEVER,
	WFS_DIRECT_IO_ALWAYS, /* where the file system allows it */
};

/* Load options. Initialize with wfs_load_opts_init(), then set fields. */
struct wfs_load_opts {
	size_t struct_size;   /* set by wfs_load_opts_init() */
	int device;	      /* WFS_DEVICE_CPU (default) or a CUDA ordinal */
	unsigned threads;     /* reader threads; 0: one per CPU, at most 16 */
	size_t staging_bytes; /* pinned staging, all threads together;
				 0: 256 MiB (never more, whatever the model) */
	size_t chunk_bytes;   /* bytes per read; 0: 8 MiB */
	size_t alignment;     /* of each tensor in the allocation, a power of
			     two; 0: 256 */
	enum wfs_direct_io direct_io;
	/* Optional caller-owned destination on @device, at least
	 * wfs_model_alloc_size() bytes; NULL: the library allocates one. */
	void *dest;
	size_t dest_bytes;
	/* Optional progress callback, called from the loading thread about
	 * ten times a second: bytes done so far of total. */
	void (*progress)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
};

/* wfs_load_opts_init() - fill @opts with the defaults. */
WFS_EXPORT void wfs_load_opts_init(struct wfs_load_opts *opts);

/* One tensor of a model. Owned by the model; read-only for callers. */
struct wfs_tensor {
	const char *name;
	enum wfs_dtype dtype;
	unsigned ndim;
	const uint64_t *shape; /* ndim entries; ndim 0 is a scalar */
	uint64_t nbytes;
	uint64_t offset;  /* in the model's allocation */
	void *data;	  /* host or device address once loaded, else NULL */
	const char *file; /* the safetensors file it comes from */
};

/* Which way the bytes came. */
enum wfs_path {
	WFS_PATH_DIRECT = 0, /* read from the file (pread) */
	WFS_PATH_FASTPATH,   /* from a weightfs daemon's cache */
};

/* What the last load did. Owned by the model. */
struct wfs_load_stats {
	enum wfs_path path;
	uint64_t bytes; /* tensor bytes loaded */
	double seconds; /* wall time of wfs_model_load() */
	unsigned threads;
	size_t staging_bytes;	  /* staging memory used (0: read in place) */
	unsigned direct_io_files; /* files read with O_DIRECT */
	uint64_t bytes_copied;	  /* bytes this process copied with the CPU */
	/* of @seconds, the start-up before the first read: CUDA context,
	 * allocations, pinning staging, connecting to the daemon */
	double setup_seconds;
};

struct wfs_model;

/*
 * wfs_model_open() - open a model: a .safetensors file, or a directory
 * with model.safetensors.index.json (its weight_map names the files), or
 * else with *.safetensors files (all of them, in name order). Reads and
 * checks every header; reads no tensor data.
 * @return 0 and *ret_model, or a negative errno (-ENOENT, -EINVAL for a
 * malformed file, -EIO, -ENOMEM, ...).
 */
WFS_EXPORT int wfs_model_open(const char *path, struct wfs_model **ret_model);

/* wfs_model_free() - free a model and the memory it allocated. NULL ok. */
WFS_EXPORT void wfs_model_free(struct wfs_model *model);

/* wfs_model_tensor_count() - the number of tensors. */
WFS_EXPORT size_t wfs_model_tensor_count(const struct wfs_model *model);

/*
 * wfs_model_tensor() - tensor @index, in load order (by file, then by
 * offset in it); NULL if @index is out of range.
 */
WFS_EXPORT const struct wfs_tensor *
wfs_model_tensor(const struct wfs_model *model, size_t index);

/* wfs_model_find() - the tensor called @name, or NULL. */
WFS_EXPORT const struct wfs_tensor *
wfs_model_find(const struct wfs_model *model, const char *name);

/*
 * wfs_model_metadata() - the value of @key in the __metadata__ of the
 * model's first file that has it, or NULL.
 */
WFS_EXPORT const char *wfs_model_metadata(const struct wfs_model *model,
					  const char *key);

/*
 * wfs_model_alloc_size() - bytes a destination needs to hold every
 * tensor, each at a multiple of @alignment (0: the default, 256).
 */
WFS_EXPORT uint64_t wfs_model_alloc_size(const struct wfs_model *model,
					 size_t alignment);

/*
 * wfs_model_load() - read every tensor into memory on opts->device.
 * @opts: NULL for the defaults (host memory).
 * May be called again (with other options); the previous allocation is
 * freed first. On success each wfs_tensor's data points into it.
 * @return 0, or a negative errno: -ENODEV (no such GPU), -EOPNOTSUPP (built
 * without CUDA), -EIO (a read failed or a file changed), -ENOMEM, ...
 */
WFS_EXPORT int wfs_model_load(struct wfs_model *model,
			      const struct wfs_load_opts *opts);

/* wfs_model_data() - the loaded allocation and its size; NULL if none. */
WFS_EXPORT void *wfs_model_data(const struct wfs_model *model,
				uint64_t *ret_bytes);

/* wfs_model_stats() - what the last successful load did, or NULL. */
WFS_EXPORT const struct wfs_load_stats *
wfs_model_stats(const struct wfs_model *model);

/*
 * wfs_model_read() - copy @len bytes at @offset of loaded tensor @index
 * to host memory @buf (from the GPU if it lives there).
 * @return 0, -ERANGE past the tensor's end, -ENODATA if not loaded, or an
 * error of the device.
 */
WFS_EXPORT int wfs_model_read(const struct wfs_model *model, size_t index,
			      uint64_t offset, void *buf, size_t len);

/*
 * wfs_release_staging() - free the pinned staging memory the library
 * keeps between loads (pinning is slow, so it is kept for the next load).
 */
WFS_EXPORT void wfs_release_staging(void);

#ifdef __cplusplus
}
#endif

#endif
