/* A model: its safetensors files (one file, or a directory's shards) with
 * their parsed headers, and the table of all its tensors. Opening reads and
 * checks every header and no tensor data; load.c fills the tensors.
 * Not thread-safe: one model, one thread at a time. */
#ifndef WFS_LOADER_MODEL_H
#define WFS_LOADER_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "safetensors.h"
#include "weightfs.h"

/* The smallest struct wfs_load_opts a caller may pass: struct_size and
 * device; the caller's struct_size says which later fields it has. */
#define LOAD_OPTS_SIZE_MIN                                                     \
	(offsetof(struct wfs_load_opts, device) + sizeof(int))

struct model_file {
	char *path;
	int fd;
	uint64_t size;
	uint64_t data_start; /* 8 + header length */
	struct safetensors *st;
};

struct wfs_model {
	struct model_file *files;
	unsigned nfiles;
	char **paths; /* files[i].path, as an array for the reader */
	int *fds;

	struct wfs_tensor *tensors; /* load order: by file, then offset */
	size_t ntensors;
	unsigned *tensor_file;	   /* per tensor: index in files */
	uint64_t *tensor_file_off; /* per tensor: absolute offset in it */
	size_t *by_name;	   /* tensor indexes sorted by name */

	/* A selection applied (select.c), or NULL: it keeps the whole
	 * table, and the fields above are the selection's. */
	struct model_selection *sel;

	/* Set by a load. */
	bool loaded;
	int device;
	void *data;
	void *data_alloc; /* device data: what cudaMalloc gave (data is
			   * aligned past it), for cuda_free() */
	uint64_t data_bytes;
	bool owns_data;
	bool data_mapped;	 /* host data from mmap, else from malloc */
	uint64_t data_map_bytes; /* if data_mapped and not 0: for munmap() */
	struct wfs_load_stats stats;
};

/*
 * model_layout() - place each tensor at a multiple of @alignment (a power
 * of two) and set its offset.
 * @return the bytes needed for all of them.
 */
uint64_t model_layout(struct wfs_model *m, size_t alignment);

/* model_select_pieces() - the file ranges of the selected tensors, for
 * the pipeline (select.c). @return 0, -ENOMEM. */
struct pipe_piece;
int model_select_pieces(const struct wfs_model *m, struct pipe_piece **ret,
			size_t *ret_n);

/* model_select_done() - drop the selection, the whole table back. */
void model_select_done(struct wfs_model *m);

/* load.c's steps, for iter.c: the options with defaults filled in, the
 * reader a load would use, and the pieces of the (selected) tensors at
 * their layout offsets. Negative errno with a message on failure. */
struct reader;
int load_opts_get(const struct wfs_load_opts *user, struct wfs_load_opts *o);
int load_reader_new(struct wfs_model *m, const struct wfs_load_opts *o,
		    struct reader **ret);
int load_pieces(const struct wfs_model *m, struct pipe_piece **ret,
		size_t *ret_n);

/* model_release_data() - free what a load allocated; forget the data. */
void model_release_data(struct wfs_model *m);

#endif
