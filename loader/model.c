#include "model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cuda.h"
#include "errmsg.h"
#include "io.h"

#define INDEX_NAME "model.safetensors.index.json"
#define MAX_INDEX_BYTES (100u << 20)

/* Prefix the calling thread's message with @path. */
static int err_in(int err, const char *path)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s", err_get());
	return err_set(err, "%s: %s", path, msg);
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread_full(fd, buf, len, off);

	if (n < 0)
		return err_set((int)n, "read: %s", strerror((int)-n));
	if ((size_t)n < len)
		return err_set(-EIO, "unexpected end of file");
	return 0;
}

/*
 * open_regular() - open @path for reading if it is a regular file.
 * Opened with O_NONBLOCK, so that a FIFO (or a device) is refused at once
 * instead of blocking open() or read() forever; O_NONBLOCK is cleared again
 * for the regular file. @return the descriptor and *ret_sb, or a negative
 * errno with the message set (-EINVAL: not a regular file).
 */
static int open_regular(const char *path, struct stat *ret_sb)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	int fl, err;

	if (fd < 0)
		return err_set(-errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, ret_sb) < 0) {
		err = -errno;
		close(fd);
		return err_set(err, "%s: %s", path, strerror(-err));
	}
	if (!S_ISREG(ret_sb->st_mode)) {
		close(fd);
		return err_set(-EINVAL, "%s: not a regular file", path);
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		err = -errno;
		close(fd);
		return err_set(err, "%s: %s", path, strerror(-err));
	}
	return fd;
}

/*
 * link_root() - where the files of model directory @dir may lead through
 * symlinks (into *ret_root, malloc'd): @dir itself, or for a Hugging Face
 * cache snapshot (REPO/snapshots/REV) the whole REPO folder, whose blobs/
 * its links point into. *ret_root stays NULL (anywhere) with
 * WEIGHTFS_FOLLOW_SYMLINKS=1. @return 0 or a negative errno, message set.
 */
static int link_root(const char *dir, char **ret_root)
{
	const char *follow = getenv("WEIGHTFS_FOLLOW_SYMLINKS");
	char *real, *slash, *up;

	*ret_root = NULL;
	if (follow && !strcmp(follow, "1"))
		return 0;
	real = realpath(dir, NULL);
	if (!real)
		return err_set(-errno, "%s: %s", dir, strerror(errno));
	slash = strrchr(real, '/');
	if (slash && slash > real) {
		*slash = '\0';
		up = strrchr(real, '/');
		if (up && up > real && !strcmp(up + 1, "snapshots"))
			*up = '\0';
		else
			*slash = '/';
	}
	*ret_root = real;
	return 0;
}

/* Refuse @fd, opened as @path in a model directory, when what it opened
 * is not inside @root (link_root(); NULL: anything goes). */
static int check_inside(const char *root, int fd, const char *path)
{
	char proc[64], real[PATH_MAX + 1];
	size_t lr;
	ssize_t n;

	if (!root)
		return 0;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, real, PATH_MAX);
	if (n < 0) { /* no /proc: the path, resolved */
		char *r = realpath(path, NULL);

		if (!r || strlen(r) > PATH_MAX) {
			free(r);
			return err_set(-EACCES, "%s: cannot tell where it is",
				       path);
		}
		strcpy(real, r);
		free(r);
	} else {
		real[n] = '\0';
	}
	lr = strlen(root);
	if (!strcmp(root, "/") || (!strncmp(real, root, lr) && real[lr] == '/'))
		return 0;
	return err_set(-EACCES,
		       "%s: a symbolic link to %s, outside the model "
		       "directory %s (WEIGHTFS_FOLLOW_SYMLINKS=1 follows it)",
		       path, real, root);
}

static int open_file(struct model_file *f, const char *root)
{
	uint8_t prefix[8];
	uint64_t n;
	char *json = NULL;
	struct stat sb;
	int r;

	f->fd = open_regular(f->path, &sb);
	if (f->fd < 0) {
		r = f->fd;
		f->fd = -1;
		return r;
	}
	r = check_inside(root, f->fd, f->path);
	if (r < 0)
		return r;
	f->size = (uint64_t)sb.st_size;
	r = f->size >= 8 ? read_full(f->fd, prefix, 8, 0) : 0;
	if (r == 0)
		r = safetensors_header_size(prefix, f->size, &n);
	if (r < 0)
		return err_in(r, f->path);
	json = malloc(n);
	if (!json)
		return err_set(-ENOMEM, "%s: out of memory", f->path);
	r = read_full(f->fd, json, n, 8);
	if (r == 0)
		r = safetensors_parse(json, n, f->size - 8 - n, &f->st);
	free(json);
	if (r < 0)
		return err_in(r, f->path);
	f->data_start = 8 + n;
	return 0;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *s = malloc(a + b + 2);

	if (s) {
		memcpy(s, dir, a);
		s[a] = '/';
		memcpy(s + a + 1, name, b + 1);
	}
	return s;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file name from an index must stay inside the model's directory. */
static bool safe_name(const char *s)
{
	const char *p = s;

	if (!*s || *s == '/')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n;
		if (*p)
			p++;
	}
	return true;
}

static int add_name(char ***names, size_t *n, const char *name)
{
	char **v = realloc(*names, (*n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	*names = v;
	v[*n] = strdup(name);
	if (!v[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* The index at @path (in a model directory whose links stay inside
 * @inside), parsed. NULL with the message set, and *ret_err -EACCES when
 * it leads outside, else -EINVAL. */
static struct json_object *read_index(const char *path, const char *inside,
				      int *ret_err)
{
	struct json_object *root = NULL;
	struct stat sb;
	char *buf = NULL;
	int fd = open_regular(path, &sb), r;

	*ret_err = -EINVAL;
	if (fd < 0)
		return NULL;
	if ((r = check_inside(inside, fd, path)) < 0) {
		*ret_err = r;
		goto out;
	}
	if (sb.st_size > MAX_INDEX_BYTES) {
		err_set(-EINVAL, "%s: too large", path);
		goto out;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		err_set(-ENOMEM, "%s: out of memory", path);
		goto out;
	}
	r = read_full(fd, buf, (size_t)sb.st_size, 0);
	if (r < 0) {
		err_in(r, path);
		goto out;
	}
	buf[sb.st_size] = '\0';
	root = json_tokener_parse(buf);
	if (!root)
		err_set(-EINVAL, "%s: not valid JSON", path);
out:
	free(buf);
	close(fd);
	return root;
}

/* The files an index's weight_map names, sorted and without repeats. */
static int index_files(const char *index, struct json_object *root,
		       char ***names, size_t *n)
{
	struct json_object *map;
	size_t w = 0;
	int r;

	if (!json_object_object_get_ex(root, "weight_map", &map) ||
	    !json_object_is_type(map, json_type_object))
		return err_set(-EINVAL, "%s: no weight_map object", index);
	json_object_object_foreach(map, key, val)
	{
		const char *file = json_object_get_string(val);

		if (!json_object_is_type(val, json_type_string) ||
		    !safe_name(file))
			return err_set(-EINVAL,
				       "%s: weight_map entry \"%s\" is not a "
				       "file name in the model's directory",
				       index, key);
		r = add_name(names, n, file);
		if (r < 0)
			return err_set(r, "out of memory");
	}
	if (!*n)
		return err_set(-EINVAL, "%s: weight_map is empty", index);
	qsort(*names, *n, sizeof(**names), cmp_str);
	for (size_t i = 0; i < *n; i++) {
		if (w && !strcmp((*names)[w - 1], (*names)[i]))
			free((*names)[i]);
		else
			(*names)[w++] = (*names)[i];
	}
	*n = w;
	return 0;
}

static int dir_files(const char *dir, char ***names, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int r = 0;

	if (!d)
		return err_set(-errno, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (e->d_name[0] == '.' || len <= 12 ||
		    strcmp(e->d_name + len - 12, ".safetensors"))
			continue;
		r = add_name(names, n, e->d_name);
		if (r < 0) {
			err_set(r, "out of memory");
			break;
		}
	}
	closedir(d);
	if (r == 0 && !*n)
		r = err_set(-ENOENT,
			    "%s: no " INDEX_NAME " and no "
			    "*.safetensors files",
			    dir);
	if (r == 0)
		qsort(*names, *n, sizeof(**names), cmp_str);
	return r;
}

static int by_name_cmp(const void *a, const void *b, void *arg)
{
	const struct wfs_tensor *t = arg;

	return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int build_table(struct wfs_model *m)
{
	size_t n = 0, k = 0;

	for (unsigned i = 0; i < m->nfiles; i++)
		n += m->files[i].st->ntensors;
	m->tensors = calloc(n + 1, sizeof(*m->tensors));
	m->tensor_file = calloc(n + 1, sizeof(*m->tensor_file));
	m->tensor_file_off = calloc(n + 1, sizeof(*m->tensor_file_off));
	m->by_name = calloc(n + 1, sizeof(*m->by_name));
	if (!m->tensors || !m->tensor_file || !m->tensor_file_off ||
	    !m->by_name)
		return err_set(-ENOMEM, "out of memory");
	for (unsigned i = 0; i < m->nfiles; i++) {
		const struct model_file *f = &m->files[i];

		for (size_t j = 0; j < f->st->ntensors; j++, k++) {
			const struct st_tensor *st = &f->st->tensors[j];

			m->tensors[k] = (struct wfs_tensor){
				.name = st->name,
				.dtype = st->dtype,
				.ndim = st->ndim,
				.shape = st->shape,
				.nbytes = st->end - st->begin,
				.file = f->path,
			};
			m->tensor_file[k] = i;
			m->tensor_file_off[k] = f->data_start + st->begin;
			m->by_name[k] = k;
		}
	}
	m->ntensors = n;
	qsort_r(m->by_name, n, sizeof(*m->by_name), by_name_cmp, m->tensors);
	for (size_t i = 1; i < n; i++) {
		const struct wfs_tensor *a = &m->tensors[m->by_name[i - 1]];
		const struct wfs_tensor *b = &m->tensors[m->by_name[i]];

		if (!strcmp(a->name, b->name))
			return err_set(-EINVAL,
				       "tensor \"%s\" is in both %s and %s",
				       a->name, a->file, b->file);
	}
	return 0;
}

/* Every tensor the index names must be in the file it names. */
static int check_index(const struct wfs_model *m, const char *index,
		       struct json_object *root)
{
	struct json_object *map;

	json_object_object_get_ex(root, "weight_map", &map);
	json_object_object_foreach(map, key, val)
	{
		const struct wfs_tensor *t = wfs_model_find(m, key);
		const char *want = json_object_get_string(val);
		size_t lt, lw = strlen(want);

		if (!t)
			return err_set(-EINVAL,
				       "%s: tensor \"%s\" is not in %s", index,
				       key, want);
		lt = strlen(t->file);
		if (lt <= lw || strcmp(t->file + lt - lw, want) ||
		    t->file[lt - lw - 1] != '/')
			return err_set(-EINVAL,
				       "%s: tensor \"%s\" is in %s, not in %s",
				       index, key, t->file, want);
	}
	return 0;
}

static int open_files(struct wfs_model *m, const char *dir, const char *root,
		      char **names, size_t n)
{
	m->files = calloc(n + 1, sizeof(*m->files));
	m->paths = calloc(n + 1, sizeof(*m->paths));
	m->fds = calloc(n + 1, sizeof(*m->fds));
	if (!m->files || !m->paths || !m->fds)
		return err_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct model_file *f = &m->files[m->nfiles];
		int r;

		f->fd = -1;
		f->path = dir ? join(dir, names[i]) : strdup(names[i]);
		if (!f->path)
			return err_set(-ENOMEM, "out of memory");
		m->nfiles++;
		r = open_file(f, root);
		if (r < 0)
			return r;
		m->paths[i] = f->path;
		m->fds[i] = f->fd;
	}
	return 0;
}

int wfs_model_open(const char *path, struct wfs_model **ret_model)
{
	struct wfs_model *m;
	struct json_object *index = NULL;
	char *index_path = NULL, **names = NULL, *root = NULL;
	const char *dir = NULL;
	size_t nnames = 0;
	struct stat sb;
	int r;

	err_clear();
	if (!path || !ret_model)
		return err_set(-EINVAL, "no path");
	m = calloc(1, sizeof(*m));
	if (!m)
		return err_set(-ENOMEM, "out of memory");
	if (stat(path, &sb) < 0) {
		r = err_set(-errno, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(sb.st_mode)) {
		dir = path;
		index_path = join(path, INDEX_NAME);
		if (!index_path) {
			r = err_set(-ENOMEM, "out of memory");
			goto fail;
		}
		r = link_root(path, &root);
		if (r < 0)
			goto fail;
		if (access(index_path, F_OK) == 0) {
			index = read_index(index_path, root, &r);
			if (index)
				r = index_files(index_path, index, &names,
						&nnames);
		} else {
			r = dir_files(path, &names, &nnames);
		}
	} else {
		r = add_name(&names, &nnames, path);
		if (r < 0)
			err_set(r, "out of memory");
	}
	if (r == 0)
		r = open_files(m, dir, root, names, nnames);
	if (r == 0)
		r = build_table(m);
	if (r == 0 && index)
		r = check_index(m, index_path, index);
	if (r < 0)
		goto fail;
	model_layout(m, 0);
	*ret_model = m;
	r = 0;
	goto out;
fail:
	if (r == -EINVAL && !*err_get())
		err_set(r, "%s: invalid model", path);
	wfs_model_free(m);
out:
	for (size_t i = 0; i < nnames; i++)
		free(names[i]);
	free(names);
	free(index_path);
	free(root);
	json_object_put(index);
	return r;
}

void model_release_data(struct wfs_model *m)
{
	if (m->owns_data && m->data) {
		if (m->device != WFS_DEVICE_CPU) {
			/* With the model's device current: cudaFree with
			 * another would make a context there for it. */
			int saved = cuda_device_save();

			cuda_use(m->device);
			cuda_free(m->data_alloc);
			cuda_device_restore(saved);
		} else if (m->data_mapped)
			munmap(m->data, m->data_map_bytes ? m->data_map_bytes
							  : m->data_bytes);
		else
			free(m->data);
	}
	m->data = NULL;
	m->data_alloc = NULL;
	m->data_bytes = 0;
	m->data_map_bytes = 0;
	m->data_mapped = false;
	m->owns_data = false;
	m->loaded = false;
	for (size_t i = 0; i < m->ntensors; i++)
		m->tensors[i].data = NULL;
}

void wfs_model_free(struct wfs_model *m)
{
	if (!m)
		return;
	model_release_data(m);
	model_select_done(m);
	for (unsigned i = 0; i < m->nfiles; i++) {
		if (m->files[i].fd >= 0)
			close(m->files[i].fd);
		free(m->files[i].path);
		safetensors_free(m->files[i].st);
	}
	free(m->files);
	free(m->paths);
	free(m->fds);
	free(m->tensors);
	free(m->tensor_file);
	free(m->tensor_file_off);
	free(m->by_name);
	free(m);
}

void wfs_model_close_files(struct wfs_model *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->nfiles; i++) {
		if (m->files[i].fd >= 0)
			close(m->files[i].fd);
		m->files[i].fd = -1;
		m->fds[i] = -1;
	}
}

uint64_t model_layout(struct wfs_model *m, size_t alignment)
{
	uint64_t pos = 0;

	if (!alignment)
		alignment = 256;
	for (size_t i = 0; i < m->ntensors; i++) {
		pos = (pos + alignment - 1) & ~(uint64_t)(alignment - 1);
		m->tensors[i].offset = pos;
		pos += m->tensors[i].nbytes;
	}
	return pos;
}

size_t wfs_model_tensor_count(const struct wfs_model *m)
{
	return m ? m->ntensors : 0;
}

const struct wfs_tensor *wfs_model_tensor(const struct wfs_model *m,
					  size_t index)
{
	if (!m || index >= m->ntensors)
		return NULL;
	return &m->tensors[index];
}

const struct wfs_tensor *wfs_model_find(const struct wfs_model *m,
					const char *name)
{
	size_t lo = 0, hi;

	if (!m || !name)
		return NULL;
	hi = m->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct wfs_tensor *t = &m->tensors[m->by_name[mid]];
		int c = strcmp(name, t->name);

		if (c == 0)
			return t;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const char *wfs_model_metadata(const struct wfs_model *m, const char *key)
{
	if (!m || !key)
		return NULL;
	for (unsigned i = 0; i < m->nfiles; i++) {
		const struct safetensors *st = m->files[i].st;

		for (size_t j = 0; j < st->nmeta; j++)
			if (!strcmp(st->meta[2 * j], key))
				return st->meta[2 * j + 1];
	}
	return NULL;
}

uint64_t wfs_model_alloc_size(const struct wfs_model *m, size_t alignment)
{
	uint64_t pos = 0;

	if (!m)
		return 0;
	if (!alignment)
		alignment = 256;
	for (size_t i = 0; i < m->ntensors; i++) {
		pos = (pos + alignment - 1) & ~(uint64_t)(alignment - 1);
		pos += m->tensors[i].nbytes;
	}
	return pos;
}

void *wfs_model_data(const struct wfs_model *m, uint64_t *ret_bytes)
{
	if (!m || !m->loaded)
		return NULL;
	if (ret_bytes)
		*ret_bytes = m->data_bytes;
	return m->data;
}

const struct wfs_load_stats *wfs_model_stats(const struct wfs_model *m)
{
	return m && m->loaded ? &m->stats : NULL;
}
