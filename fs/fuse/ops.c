/* The FUSE operations: the only place that replies to the kernel. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cache.h"
#include "daemon.h"
#include "fastpath.h"
#include "fetch.h"
#include "log.h"
#include "readpath.h"
#include "refresh.h"
#include "source.h"
#include "stats.h"
#include "tree.h"
#include "verify.h"
#include "wire.h"

/* The tree changes only when a file is found changed, which the kernel
 * is told about, so its answers may be cached for long. */
#define TTL 3600.0

#define XATTR_SOURCE "user.weightfs.source"
#define XATTR_ETAG "user.weightfs.etag"
#define XATTR_STATS "user.weightfs.stats"

static struct daemon *daemon_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The daemon's user and group, read once (op_init()): fill_attr() runs
 * for every entry of a READDIRPLUS, and these are system calls. */
static uid_t self_uid;
static gid_t self_gid;

static void fill_attr(struct node *n, struct stat *st)
{
	uint64_t size;

	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	/* file:// shows the source's owner and permissions (less write);
	 * other sources are the daemon's, readable by all. */
	st->st_uid = n->has_perm ? n->uid : self_uid;
	st->st_gid = n->has_perm ? n->gid : self_gid;
	st->st_blksize = 1 << 20;
	pthread_mutex_lock(&n->lock);
	st->st_mtim = n->mtime;
	st->st_ctim = n->mtime;
	st->st_atim = n->mtime;
	size = n->is_dir ? 0 : n->size;
	pthread_mutex_unlock(&n->lock);
	/* A listed size may be anything up to INT64_MAX: no signed math. */
	if (size > (uint64_t)INT64_MAX)
		size = (uint64_t)INT64_MAX;
	st->st_size = (off_t)size;
	if (n->is_dir) {
		st->st_mode = S_IFDIR | (n->has_perm ? n->perm : 0555);
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | (n->has_perm ? n->perm : 0444);
		st->st_nlink = 1;
		st->st_blocks = (blkcnt_t)(((uint64_t)st->st_size + 511) / 512);
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct daemon *d = userdata;

	self_uid = getuid();
	self_gid = getgid();
	/* Large requests: up to 1 MiB per read. The kernel's readahead
	 * becomes the smaller of this and the mount's read_ahead_kb, which
	 * main.c raises where it may. */
	conn->max_read = 0;
	conn->max_write = 1 << 20;
	conn->max_readahead = (unsigned)d->kernel_readahead;
	/* Reads are background requests (async_read): the kernel's default of
	 * 12 in flight lets a few readers of a hung source block every read
	 * of every other file. Well below main.c's worker pool, so that
	 * lookups and stats always find a worker. */
	conn->max_background = FUSE_BACKGROUND_MAX;
	conn->congestion_threshold = FUSE_BACKGROUND_MAX * 3 / 4;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	/* READDIRPLUS for every batch of a directory, not only the first
	 * (the kernel's adaptive mode): attributes cost no request here, and
	 * `ls -l` of a big directory would otherwise LOOKUP each entry of
	 * every other batch. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct daemon *d = daemon_of(req);
	struct node *dir = tree_get(d->tree, parent), *n;
	struct fuse_entry_param e;

	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	/* Lazy listing: a directory is listed when first looked in. */
	if (refresh_list_dir(d, dir) < 0) {
		fuse_reply_err(req, EIO);
		return;
	}
	n = tree_lookup(d->tree, dir, name);
	if (!n) {
		memset(&e, 0, sizeof(e));
		e.entry_timeout = TTL; /* cache the miss too */
		fuse_reply_entry(req, &e);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	e.generation = 1;
	e.attr_timeout = TTL;
	e.entry_timeout = TTL;
	fill_attr(n, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct node *n = tree_get(daemon_of(req)->tree, ino);
	struct stat st;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(n, &st);
	fuse_reply_attr(req, &st, TTL);
}

/* A directory handle remembers how many children the directory had at
 * opendir: children are only appended (or replaced in place by a node of
 * the same name), so the first N are a snapshot that a relist running
 * meanwhile cannot reorder: readdir neither skips nor repeats. */
static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct tree *t = daemon_of(req)->tree;
	struct node *n = tree_get(t, ino);

	if (!n)
		fuse_reply_err(req, ENOENT);
	else if (!n->is_dir)
		fuse_reply_err(req, ENOTDIR);
	else if (refresh_list_dir(daemon_of(req), n) < 0)
		fuse_reply_err(req, EIO); /* lazy listing failed */
	else {
		tree_read_lock(t);
		fi->fh = tree_nchildren(n);
		tree_read_unlock(t);
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
		fuse_reply_open(req, fi);
	}
}

/*
 * READDIR and READDIRPLUS of the snapshot opendir took (fi->fh children).
 * Offsets: 0 ".", 1 "..", 2 + i the i-th child. With @plus the names come
 * with their attributes, so that `ls -l` of a big directory costs no
 * LOOKUP per entry: the listing's, valid until a relist, which tells the
 * kernel what changed (refresh.c), so with a lookup's long timeouts. Each
 * entry but "." and ".." then counts as a lookup; nodes are never freed,
 * so there is nothing to forget.
 */
static void reply_dir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi, bool plus)
{
	struct tree *t = daemon_of(req)->tree;
	struct node *dir = tree_get(t, ino);
	char *buf;
	size_t used = 0;
	off_t i, end = (off_t)fi->fh + 2;

	if (!dir || !dir->is_dir) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	tree_read_lock(t);
	for (i = off < 0 ? 0 : off; i < end; i++) {
		struct node *c = i == 0	  ? dir
				 : i == 1 ? dir->parent
					  : tree_child(dir, (size_t)i - 2);
		const char *name = i == 0 ? "." : i == 1 ? ".." : c->name;
		size_t len;

		if (plus) {
			struct fuse_entry_param e = {
				.ino = c->ino,
				.generation = 1,
				.attr_timeout = TTL,
				.entry_timeout = TTL,
			};

			fill_attr(c, &e.attr);
			len = fuse_add_direntry_plus(
				req, buf + used, size - used, name, &e, i + 1);
		} else {
			struct stat st = { .st_ino = c->ino,
					   .st_mode = c->is_dir ? S_IFDIR
								: S_IFREG };

			len = fuse_add_direntry(req, buf + used, size - used,
						name, &st, i + 1);
		}
		if (len > size - used)
			break;
		used += len;
	}
	tree_read_unlock(t);
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	reply_dir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	reply_dir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0); /* the snapshot is fi->fh: nothing to free */
}

/*
 * read_error() - what a reader gets for a read (or open) of @n that failed
 * with @err, classified where it happened (source.h), and the cause in the
 * log, once per file and cause, rate-limited (log_once()):
 *
 *   cause            @err                  reader gets
 *   object changed   -ESTALE               EIO
 *   gone at source   -ENOENT               EIO
 *   protocol broken  -EPROTO               EIO
 *   stalled          -ETIMEDOUT            EIO
 *   credentials      -EACCES, -EKEYEXPIRED EACCES
 *   corrupt stored   -EBADMSG (a decoder)  EIO
 *   authentication   -EKEYREJECTED (same)  EIO
 *   out of memory    -ENOMEM               ENOMEM
 *   shutting down    -ESHUTDOWN            EIO (not logged)
 *   anything else    (resets, 5xx...)      EIO
 */
static int read_error(const struct node *n, int err)
{
	const char *why;
	int rerr = EIO;

	switch (err) {
	case -ESTALE:
		why = "changed at the source since it was listed; remount "
		      "(or mount with list_ttl) to see the new version";
		break;
	case -ENOENT:
		why = "is gone from the source";
		break;
	case -EPROTO:
		why = "read failed: the server broke the protocol (a wrong "
		      "range, length or encoding)";
		break;
	case -ETIMEDOUT:
		why = "read failed: the source stalled past every retry";
		break;
	case -EACCES:
	case -EKEYEXPIRED:
		why = "read failed: access denied (credentials)";
		rerr = EACCES;
		break;
	case -EBADMSG:
		why = "read failed: its stored bytes are corrupt (a decoder's "
		      "check failed)";
		break;
	case -EKEYREJECTED:
		why = "read failed: its stored bytes fail authentication (a "
		      "wrong key, or changed in storage)";
		break;
	case -ENOMEM:
		why = "read failed: out of memory";
		rerr = ENOMEM;
		break;
	case -ESHUTDOWN:
		return EIO; /* the daemon is stopping: said once, in main */
	default:
		why = NULL;
	}
	if (log_once(n, err)) {
		if (why)
			log_error("%s %s", n->key, why);
		else
			log_error("%s read failed: %s", n->key, strerror(-err));
	}
	return rerr;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct daemon *d = daemon_of(req);
	struct node *n = tree_get(d->tree, ino);
	bool changed;
	uint64_t size, bs, headroom, i;
	uint32_t gen;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->is_dir) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	changed = node_version(n, &size, &gen);
	if (changed) {
		fuse_reply_err(req, read_error(n, -ESTALE));
		return;
	}
	/* Failed its SHA-256 check: not opened again (the kernel may hold
	 * pages of it). */
	if (d->opts.verify_sha256 && verify_check(n)) {
		fuse_reply_err(req, EIO);
		return;
	}
	fi->keep_cache = 1;
	fi->noflush = 1;
	if (d->opts.prefetch == PREFETCH_OPEN) {
		bs = cache_block_size(d->cache);
		headroom = cache_headroom(d->cache) / 2;
		/* Queued together: consecutive blocks go in few requests. */
		fetch_batch_begin();
		for (i = 0; i * bs < size && i * bs < headroom; i++) {
			uint64_t len = size - i * bs < bs ? size - i * bs : bs;

			if (cache_prefetch(d->cache, n, gen, i, len) < 0)
				break;
		}
		fetch_batch_end();
		readahead_update(node_readahead(n), 0, 0, d->opts.readahead_max,
				 d->opts.readahead_max);
	}
	fuse_reply_open(req, fi);
}

/* A read within one block is answered straight from it. A read across
 * blocks is copied out one block at a time, so that a reader never holds
 * one block while it waits for another: with every slot held that way,
 * the cache could not make progress. */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct daemon *d = daemon_of(req);
	struct node *n = tree_get(d->tree, ino);
	struct block *b = NULL;
	struct readpath rp;
	char *buf = NULL;
	size_t boff, len, done = 0;
	uint64_t bs;
	int err;

	if (!n || n->is_dir) {
		fuse_reply_err(req, n ? EISDIR : ENOENT);
		return;
	}
	bs = cache_block_size(d->cache);
	err = readpath_begin(d->cache, &d->opts, n, off < 0 ? 0 : (uint64_t)off,
			     size, &rp);
	if (!err && rp.pos / bs != (rp.end - (rp.end > rp.pos)) / bs) {
		buf = malloc(rp.end - rp.pos);
		if (!buf)
			err = -ENOMEM;
	}
	while (!err && (err = readpath_next(&rp, &b, &boff, &len)) == 1) {
		err = 0;
		if (!buf)
			break; /* the one block, replied from below */
		memcpy(buf + done, b->data + boff, len);
		done += len;
		/* A block read to its end is in the page cache now. */
		cache_unref_behind(d->cache, b, boff + len == b->len);
		b = NULL;
	}
	if (err < 0) {
		err = fuse_reply_err(req, read_error(n, err));
	} else if (b) {
		err = fuse_reply_buf(req, b->data + boff, len);
		cache_unref_behind(d->cache, b, boff + len == b->len);
	} else {
		err = fuse_reply_buf(req, buf, done);
	}
	/* The reader went away (interrupted): nothing is owed to anyone. */
	if (err < 0)
		log_debug("read %s: reply: %s", n->key, strerror(-err));
	free(buf);
}

/* The URL of @n as the user gave the source, without secrets. */
static char *source_of(struct daemon *d, const struct node *n)
{
	const char *base = d->src->display;
	size_t len = strlen(base);
	char *s = NULL;

	if (!*n->key)
		return strdup(base);
	if (asprintf(&s, "%s%s%s", base, len && base[len - 1] == '/' ? "" : "/",
		     n->key) < 0)
		return NULL;
	return s;
}

static void reply_xattr_value(fuse_req_t req, const char *v, size_t len,
			      size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, v, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct daemon *d = daemon_of(req);
	struct node *n = tree_get(d->tree, ino);
	char *v = NULL;
	int len;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!strcmp(name, XATTR_SOURCE)) {
		v = source_of(d, n);
	} else if (!strcmp(name, XATTR_ETAG) && !n->is_dir) {
		pthread_mutex_lock(&n->lock);
		v = n->etag	? strdup(n->etag)
		    : n->pinned ? strdup(n->pinned)
				: NULL;
		pthread_mutex_unlock(&n->lock);
		if (!v) {
			fuse_reply_err(req, ENODATA);
			return;
		}
	} else if (!strcmp(name, WIRE_XATTR_SOCKET) && d->fastpath) {
		v = strdup(fastpath_socket(d->fastpath));
	} else if (!strcmp(name, XATTR_STATS) && ino == FUSE_ROOT_ID) {
		v = malloc(4096);
		len = v ? stats_json(v, 4096, cache_bytes(d->cache),
				     d->opts.cache_mem)
			: -ENOMEM;
		if (len < 0) {
			free(v);
			fuse_reply_err(req, -len);
			return;
		}
	} else if (strncmp(name, "user.", 5)) {
		/* No ACLs, no security labels: "not supported", which `ls
		 * -l` remembers per filesystem, instead of asking again for
		 * each file (two round trips per file: security.selinux,
		 * system.posix_acl_access). */
		fuse_reply_err(req, ENOTSUP);
		return;
	} else if (d->src->ops->getxattr) {
		len = d->src->ops->getxattr(d->src, n, name, &v);
		if (len < 0) {
			fuse_reply_err(req, -len);
			return;
		}
	} else {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (!v) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	reply_xattr_value(req, v, strlen(v), size);
	free(v);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct node *n = tree_get(daemon_of(req)->tree, ino);
	static const char file_names[] =
		XATTR_SOURCE "\0" XATTR_ETAG "\0" WIRE_XATTR_SOCKET;
	static const char root_names[] =
		XATTR_SOURCE "\0" XATTR_STATS "\0" WIRE_XATTR_SOCKET;
	static const char dir_names[] = XATTR_SOURCE "\0" WIRE_XATTR_SOCKET;

	struct source *src = daemon_of(req)->src;
	const char *names, *more = NULL;
	size_t len, more_len = 0;
	char *all;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!n->is_dir) {
		names = file_names;
		len = sizeof(file_names);
	} else if (ino == FUSE_ROOT_ID) {
		names = root_names;
		len = sizeof(root_names);
	} else {
		names = dir_names;
		len = sizeof(dir_names);
	}
	if (src->ops->xattr_names)
		more = src->ops->xattr_names(src, n, &more_len);
	if (!more || !more_len) {
		reply_xattr_value(req, names, len, size);
		return;
	}
	all = malloc(len + more_len);
	if (!all) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(all, names, len);
	memcpy(all + len, more, more_len);
	reply_xattr_value(req, all, len + more_len, size);
	free(all);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct daemon *d = daemon_of(req);
	struct statvfs st = {
		.f_bsize = 4096,
		.f_frsize = 4096,
		.f_blocks = (tree_bytes(d->tree) + 4095) / 4096,
		.f_files = tree_count(d->tree),
		.f_namemax = 255,
		.f_flag = ST_RDONLY,
	};

	fuse_reply_statfs(req, &st);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.statfs = op_statfs,
	.access = op_access,
};
