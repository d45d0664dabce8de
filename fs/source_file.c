/* file:///dir: a local or NFS directory (or one file) as the source. */
#include "source.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "msg.h"
#include "tree.h"

#define MAX_DEPTH 64

struct source_file {
	struct source s;
	char *root_dir; /* the directory, absolute */
	char *single;	/* the one file, when the source names a file */
};

void source_file_etag(const struct stat *st, char *buf, size_t len)
{
	snprintf(buf, len, "\"%llx-%llx-%llx-%llx\"",
		 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_mtim.tv_sec * 1000000000ULL +
			 (unsigned long long)st->st_mtim.tv_nsec,
		 (unsigned long long)st->st_size);
}

static int add_file(struct tree *t, const char *key, const struct stat *st)
{
	char etag[SOURCE_FILE_ETAG_MAX];

	source_file_etag(st, etag, sizeof(etag));
	return tree_add(t, key, false, (uint64_t)st->st_size, st->st_mtim, etag,
			NULL);
}

static int walk(struct source_file *sf, struct tree *t, const char *rel,
		int depth, char **ret_msg, char **warnings)
{
	char *path = NULL;
	DIR *d;
	struct dirent *e;
	int err = 0;

	if (asprintf(&path, "%s%s%s", sf->root_dir, *rel ? "/" : "", rel) < 0)
		return -ENOMEM;
	d = opendir(path);
	if (!d) {
		err = -errno;
		msg_set(ret_msg, err, "cannot list %s: %s", path,
			strerror(-err));
		free(path);
		return err;
	}
	while ((e = readdir(d))) {
		char *key = NULL, *full = NULL;
		struct stat st, lst;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (asprintf(&key, "%s%s%s", rel, *rel ? "/" : "", e->d_name) <
			    0 ||
		    asprintf(&full, "%s/%s", path, e->d_name) < 0) {
			free(key);
			err = -ENOMEM;
			break;
		}
		if (stat(full, &st) < 0 || lstat(full, &lst) < 0) {
			err = msg_append(warnings, "skipping %s: unreadable",
					 full);
		} else if (S_ISDIR(st.st_mode) && S_ISLNK(lst.st_mode)) {
			/* Symlinked files are followed (a Hugging Face cache
			 * is made of them), symlinked directories are not:
			 * they can loop. */
			err = msg_append(warnings,
					 "skipping %s: a symlink to a "
					 "directory",
					 full);
		} else if (!tree_name_ok(e->d_name, strlen(e->d_name))) {
			err = msg_append(warnings, "skipping %s: unusable name",
					 full);
		} else if (S_ISDIR(st.st_mode)) {
			if (depth >= MAX_DEPTH)
				err = msg_append(warnings,
						 "skipping %s: too deep", full);
			else if (!(err = tree_add(t, key, true, 0, st.st_mtim,
						  NULL, NULL)))
				err = walk(sf, t, key, depth + 1, ret_msg,
					   warnings);
		} else if (S_ISREG(st.st_mode)) {
			err = add_file(t, key, &st);
		}
		free(key);
		free(full);
		if (err)
			break;
	}
	closedir(d);
	free(path);
	return err;
}

static int file_list(struct source *s, struct tree *t, char **ret_msg,
		     char **ret_warnings)
{
	struct source_file *sf = (struct source_file *)s;
	struct stat st;
	char *path = NULL;
	int err;

	if (!sf->single)
		return walk(sf, t, "", 0, ret_msg, ret_warnings);
	if (asprintf(&path, "%s/%s", sf->root_dir, sf->single) < 0)
		return -ENOMEM;
	if (stat(path, &st) < 0) {
		err = -errno;
		msg_set(ret_msg, err, "%s: %s", path, strerror(-err));
		free(path);
		return err;
	}
	free(path);
	return add_file(t, sf->single, &st);
}

/* Read with pread, checking the file is still the one listed (device,
 * inode, mtime, size): a file replaced, changed or gone is -ESTALE or
 * -ENOENT, never a mix of versions. */
static int file_read_block(struct source *s, const struct node *file,
			   const char *etag, uint64_t off, size_t len,
			   char *buf)
{
	struct source_file *sf = (struct source_file *)s;
	char *path = NULL, now[SOURCE_FILE_ETAG_MAX];
	struct stat st;
	ssize_t n;
	int fd, err = 0;

	if (asprintf(&path, "%s/%s", sf->root_dir, file->key) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	source_file_etag(&st, now, sizeof(now));
	if (!etag || strcmp(now, etag)) {
		err = -ESTALE;
		goto out;
	}
	n = pread_full(fd, buf, len, off);
	if (n < 0)
		err = (int)n;
	else if ((size_t)n < len)
		err = -ESTALE; /* it shrank: changed */
out:
	close(fd);
	return err;
}

static void file_free(struct source *s)
{
	struct source_file *sf = (struct source_file *)s;

	free(sf->single);
	free(sf->root_dir);
	free(s->display);
	free(sf);
}

static const struct source_ops file_ops = {
	.list = file_list,
	.read_block = file_read_block,
	.free = file_free,
};

int source_file_new(const char *spec, const struct options *opts,
		    struct source **ret, char **ret_msg)
{
	const char *path = spec + strlen("file://");
	struct source_file *sf;
	struct stat st;
	char *real;

	if (path[0] != '/') {
		return msg_set(ret_msg, -EINVAL,
			       "bad source '%s': expected "
			       "file:///absolute/dir",
			       spec);
	}
	real = realpath(path, NULL);
	if (!real || stat(real, &st) < 0) {
		int err = -errno;

		msg_set(ret_msg, err, "source %s: %s", path, strerror(-err));
		free(real);
		return err;
	}
	sf = calloc(1, sizeof(*sf));
	if (!sf) {
		free(real);
		return -ENOMEM;
	}
	sf->s.ops = &file_ops;
	sf->s.display = strdup(spec);
	if (S_ISDIR(st.st_mode)) {
		sf->root_dir = real;
	} else {
		char *slash = strrchr(real, '/');

		sf->single = strdup(slash + 1);
		*slash = '\0';
		sf->root_dir = *real ? real : strdup("/");
		if (!*real)
			free(real);
	}
	if (!sf->s.display || !sf->root_dir) {
		file_free(&sf->s);
		return -ENOMEM;
	}
	*ret = &sf->s;
	return 0;
}
