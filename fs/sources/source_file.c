/* file:///dir: a local or NFS directory (or one file) as the source. */
#include "source.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io.h"
#include "msg.h"
#include "stats.h"
#include "tree.h"

struct source_file {
	struct source s;
	char *root_dir; /* the directory, absolute */
	char *single;	/* the one file, when the source names a file */
	int root_fd;	/* root_dir, O_PATH: every open starts here */
};

void source_file_etag(const struct stat *st, char *buf, size_t len)
{
	snprintf(buf, len, "\"%llx-%llx-%llx-%llx\"",
		 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
		 (unsigned long long)st->st_mtim.tv_sec * 1000000000ULL +
			 (unsigned long long)st->st_mtim.tv_nsec,
		 (unsigned long long)st->st_size);
}

/* Whether the canonical path @real is @root or below it. */
static bool within(const char *root, const char *real)
{
	size_t n = strlen(root);

	if (!strcmp(root, "/"))
		return real[0] == '/';
	return !strncmp(real, root, n) && (real[n] == '\0' || real[n] == '/');
}

/*
 * Open @key (relative to the source root) with @flags, following symlinks
 * only while they stay beneath the root: openat2(RESOLVE_BENEATH). Where
 * that is refused for a symlink that is absolute (EXDEV) or openat2 is
 * missing (ENOSYS, or EPERM from a seccomp filter), the object is opened
 * O_PATH, which has no side effects, its canonical path read back from
 * /proc/self/fd is checked to be under the root, and only then is it
 * reopened for reading (regular files and directories only).
 * @return a descriptor, or -1 with errno (EXDEV: it leads outside).
 */
static int open_beneath(const struct source_file *sf, const char *key,
			int flags)
{
	struct open_how how = {
		/* O_PATH takes no other flags (EINVAL). */
		.flags = (uint64_t)(flags | O_CLOEXEC |
				    (flags & O_PATH ? 0 : O_NOCTTY)),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	char proc[64], real[PATH_MAX + 1];
	struct stat st;
	ssize_t n;
	int fd, pfd, e;

	fd = (int)syscall(SYS_openat2, sf->root_fd, key, &how, sizeof(how));
	if (fd >= 0 || (errno != EXDEV && errno != ENOSYS && errno != EPERM))
		return fd;
	pfd = openat(sf->root_fd, key, O_PATH | O_CLOEXEC);
	if (pfd < 0)
		return -1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	n = readlink(proc, real, sizeof(real) - 1);
	if (n < 0 || (size_t)n >= sizeof(real) - 1) {
		e = n < 0 ? errno : ENAMETOOLONG;
		goto fail;
	}
	real[n] = '\0';
	if (!within(sf->root_dir, real)) {
		e = EXDEV;
		goto fail;
	}
	if (flags & O_PATH)
		return pfd;
	if (fstat(pfd, &st) < 0) {
		e = errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
		e = ENXIO; /* no FIFOs, devices: opening them may block */
		goto fail;
	}
	fd = open(proc, flags | O_CLOEXEC | O_NOCTTY);
	e = errno;
	close(pfd);
	errno = e;
	return fd;
fail:
	close(pfd);
	errno = e;
	return -1;
}

/* The source's owner and permissions, less the write bits (and set-id
 * bits): with allow_other the kernel checks them (default_permissions). */
static void set_perm(struct node *n, const struct stat *st)
{
	n->has_perm = true;
	n->perm = st->st_mode & 01555;
	n->uid = st->st_uid;
	n->gid = st->st_gid;
}

static int add_file(struct tree *t, const char *key, const struct stat *st)
{
	char etag[SOURCE_FILE_ETAG_MAX];
	struct node *n = NULL;
	int err;

	source_file_etag(st, etag, sizeof(etag));
	err = tree_add(t, key, false, (uint64_t)st->st_size, st->st_mtim, etag,
		       &n);
	if (!err && n)
		set_perm(n, st);
	return err;
}

/* A symlink at @key: its target is listed as a file when it is one and
 * lies beneath the root; anything else is skipped with a warning. */
static int add_link(struct source_file *sf, struct tree *t, const char *key,
		    char **warnings)
{
	const char *root = sf->root_dir;
	const char *sep = strcmp(root, "/") ? "/" : "";
	struct stat st;
	int fd = open_beneath(sf, key, O_PATH), err = 0;

	if (fd < 0)
		return errno == EXDEV
			       ? msg_append(warnings,
					    "skipping %s%s%s: a symlink that "
					    "leads outside the source",
					    root, sep, key)
			       : msg_append(warnings,
					    "skipping %s%s%s: unreadable (%s)",
					    root, sep, key, strerror(errno));
	if (fstat(fd, &st) < 0)
		err = msg_append(warnings, "skipping %s%s%s: unreadable", root,
				 sep, key);
	else if (S_ISDIR(st.st_mode))
		/* Symlinked files are followed (a Hugging Face cache is made
		 * of them), symlinked directories are not: they can loop. */
		err = msg_append(warnings,
				 "skipping %s%s%s: a symlink to a directory",
				 root, sep, key);
	else if (S_ISREG(st.st_mode))
		err = add_file(t, key, &st);
	close(fd);
	return err;
}

/* List the directory @dfd (which this takes over), at @rel. Entries are
 * looked at without following symlinks, subdirectories opened with
 * O_NOFOLLOW: a directory swapped for a symlink is not walked into. */
static int walk(struct source_file *sf, struct tree *t, int dfd,
		const char *rel, int depth, char **ret_msg, char **warnings)
{
	bool one = depth < 0; /* one level: list_dir() */

	const char *root = sf->root_dir;
	const char *sep = strcmp(root, "/") ? "/" : "";
	DIR *d = fdopendir(dfd);
	struct dirent *e;
	int err = 0;

	if (!d) {
		err = -errno;
		close(dfd);
		return msg_set(ret_msg, err, "cannot list %s%s%s: %s", root,
			       *rel ? sep : "", rel, strerror(-err));
	}
	while ((e = readdir(d))) {
		char *key = NULL;
		struct stat st;
		struct node *n = NULL;
		int sub;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (asprintf(&key, "%s%s%s", rel, *rel ? "/" : "", e->d_name) <
		    0) {
			err = -ENOMEM;
			break;
		}
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) <
		    0) {
			err = msg_append(warnings,
					 "skipping %s%s%s: unreadable", root,
					 sep, key);
		} else if (!tree_name_ok(e->d_name, strlen(e->d_name))) {
			err = msg_append(warnings,
					 "skipping %s%s%s: unusable name", root,
					 sep, key);
		} else if (S_ISLNK(st.st_mode)) {
			err = add_link(sf, t, key, warnings);
		} else if (S_ISDIR(st.st_mode)) {
			if ((one ? source_key_depth(rel) : depth) >=
			    SOURCE_MAX_DEPTH) {
				STAT_ADD(dirs_too_deep, 1);
				err = msg_append(warnings,
						 "skipping %s%s%s: too deep",
						 root, sep, key);
			} else if (!(err = tree_add(t, key, true, 0, st.st_mtim,
						    NULL, &n))) {
				if (n)
					set_perm(n, &st);
				if (one) /* listed when looked in */
					sub = -2;
				else
					sub = openat(dirfd(d), e->d_name,
						     O_RDONLY | O_DIRECTORY |
							     O_NOFOLLOW |
							     O_CLOEXEC);
				if (sub == -2) {
					err = 0;
				} else if (sub < 0) {
					err = -errno;
					msg_set(ret_msg, err,
						"cannot list %s%s%s: %s", root,
						sep, key, strerror(-err));
				} else {
					err = walk(sf, t, sub, key, depth + 1,
						   ret_msg, warnings);
				}
			}
		} else if (S_ISREG(st.st_mode)) {
			err = add_file(t, key, &st);
		}
		free(key);
		if (err)
			break;
	}
	closedir(d);
	return err;
}

static int file_list(struct source *s, struct tree *t, char **ret_msg,
		     char **ret_warnings)
{
	struct source_file *sf = (struct source_file *)s;
	struct stat st;
	int fd, err;

	/* The root directory's own permissions gate the whole mount. */
	if (fstat(sf->root_fd, &st) == 0)
		set_perm(tree_root(t), &st);
	if (!sf->single) {
		fd = openat(sf->root_fd, ".",
			    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			err = -errno;
			return msg_set(ret_msg, err, "cannot list %s: %s",
				       sf->root_dir, strerror(-err));
		}
		return walk(sf, t, fd, "", 0, ret_msg, ret_warnings);
	}
	fd = open_beneath(sf, sf->single, O_PATH);
	if (fd < 0 || fstat(fd, &st) < 0) {
		err = errno == EXDEV ? -EACCES : -errno;
		msg_set(ret_msg, err, "%s/%s: %s", sf->root_dir, sf->single,
			errno == EXDEV ? "leads outside its directory"
				       : strerror(errno));
		if (fd >= 0)
			close(fd);
		return err;
	}
	close(fd);
	return add_file(t, sf->single, &st);
}

/* One level: directory @key, opened a component at a time without
 * following symlinks (the walk never enters a symlinked directory
 * either), listed with the walk's rules. */
static int file_list_dir(struct source *s, const char *key, struct tree *t,
			 char **ret_msg, char **ret_warnings)
{
	struct source_file *sf = (struct source_file *)s;
	char *path = strdup(key), *comp, *save = NULL;
	struct timespec t0 = { 0 };
	struct stat st;
	int fd, next, err = 0;

	if (sf->single) {
		free(path);
		return file_list(s, t, ret_msg, ret_warnings); /* one file */
	}
	if (!path)
		return -ENOMEM;
	fd = openat(sf->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (comp = strtok_r(path, "/", &save); fd >= 0 && comp;
	     comp = strtok_r(NULL, "/", &save)) {
		next = openat(fd, comp,
			      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	free(path);
	if (fd < 0) {
		err = errno == ENOENT || errno == ENOTDIR ? -ENOENT : -errno;
		return msg_set(ret_msg, err, "cannot list %s/%s: %s",
			       sf->root_dir, key, strerror(-err));
	}
	/* Its path first, so an empty directory is there too; the root's
	 * permissions gate the whole mount. */
	if (!*key && fstat(fd, &st) == 0)
		set_perm(tree_root(t), &st);
	if (*key)
		err = tree_add(t, key, true, 0, t0, NULL, NULL);
	if (err) {
		close(fd);
		return err;
	}
	return walk(sf, t, fd, key, -1, ret_msg, ret_warnings);
}

/* Read with pread, checking the file is still the one listed (device,
 * inode, mtime, size): a file replaced, changed or gone is -ESTALE or
 * -ENOENT, never a mix of versions. */
static int file_read_block(struct source *s, const struct node *file,
			   const char *etag, uint64_t off, size_t len,
			   char *buf)
{
	struct source_file *sf = (struct source_file *)s;
	char now[SOURCE_FILE_ETAG_MAX];
	struct stat st;
	ssize_t n;
	int fd, err = 0;

	/* Beneath the root again: a symlink swapped in since the listing
	 * cannot lead outside it. O_NONBLOCK: nor can a FIFO block us. */
	fd = open_beneath(sf, file->key, O_RDONLY | O_NONBLOCK);
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

	if (sf->root_fd >= 0)
		close(sf->root_fd);
	free(sf->single);
	free(sf->root_dir);
	free(s->display);
	free(sf);
}

static const struct source_ops file_ops = {
	.list = file_list,
	.list_dir = file_list_dir,
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
	sf->root_fd = -1;
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
	if (!sf->s.display || !sf->root_dir ||
	    (!S_ISDIR(st.st_mode) && !sf->single)) {
		file_free(&sf->s);
		return -ENOMEM;
	}
	sf->root_fd = open(sf->root_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (sf->root_fd < 0) {
		int err = -errno;

		msg_set(ret_msg, err, "source %s: %s", sf->root_dir,
			strerror(-err));
		file_free(&sf->s);
		return err;
	}
	*ret = &sf->s;
	return 0;
}
