#include "refresh.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "daemon.h"
#include "decoder.h"
#include "http.h"
#include "log.h"
#include "source.h"
#include "stats.h"
#include "tree.h"

struct refresh {
	struct daemon *d;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop; /* protected by lock */
};

/* Tell the kernel: a changed file's pages and attributes are stale; a new
 * entry replaces a cached "no such file" (or the node it replaced), and
 * its directory's cached listing is stale (dropped once per directory).
 * Directories new in this merge are told too: the merge is applied in
 * steps, so the kernel may have seen one half filled. */
static void notify(struct daemon *d, const struct tree_changes *c, bool kernel)
{
	struct fuse_session *se = kernel ? d->se : NULL;
	const struct node *last_dir = NULL;
	size_t i;

	for (i = 0; i < c->nchanged; i++) {
		if (d->cache)
			cache_drop_file(d->cache, c->changed[i]);
		if (se)
			fuse_lowlevel_notify_inval_inode(se, c->changed[i]->ino,
							 0, 0);
	}
	for (i = 0; se && i < c->nadded; i++) {
		struct node *n = c->added[i];

		fuse_lowlevel_notify_inval_entry(se, n->parent->ino, n->name,
						 strlen(n->name));
		if (n->parent != last_dir)
			fuse_lowlevel_notify_inval_inode(se, n->parent->ino, 0,
							 0);
		last_dir = n->parent;
	}
}

/* A listing this big (nodes) gives its freed memory back to the system. */
#define TRIM_NODES 4096

/* A big listing was parsed and merged, on whatever thread: its index and
 * the fresh tree are freed, but glibc keeps freed memory in the thread's
 * arena (one per FUSE worker), so a few big listings would leave the
 * daemon gigabytes it no longer uses. Hand it back. */
static void give_back(size_t nodes)
{
	if (nodes >= TRIM_NODES)
		malloc_trim(0);
}

/*
 * List directory @dir (one level) and merge it in. A first listing
 * (@kernel false) tells the kernel nothing: it has seen nothing below an
 * unlisted directory, and runs inside a lookup or opendir of @dir, where
 * invalidating entries of @dir would deadlock.
 */
static int list_one(struct daemon *d, struct node *dir, bool kernel,
		    char **ret_msg, char **ret_warnings)
{
	struct tree *fresh = NULL;
	struct tree_changes c;
	size_t nodes;
	int err = tree_new(&fresh);

	if (!err)
		err = d->src->ops->list_dir(d->src, dir->key, fresh, ret_msg,
					    ret_warnings);
	/* Relisting a directory gone from the source: its files are gone
	 * (an empty listing). A first listing of it fails. */
	if (err == -ENOENT && kernel && *dir->key) {
		free(*ret_msg);
		*ret_msg = NULL;
		tree_free(fresh);
		err = tree_new(&fresh);
	}
	/* Seekable NAME.zst shown as NAME; unchanged ones keep their table. */
	if (!err &&
	    (err = decoders_scan_tree(d->decoders, d->src, &d->opts, fresh,
				      d->tree, ret_warnings)) > 0)
		err = 0;
	if (!err) {
		tree_sort(fresh);
		err = tree_merge_dir(d->tree, dir, fresh, &c);
	}
	if (!err) {
		STAT_ADD(dirs_listed, 1);
		if (c.nconflicts)
			log_info("relisted '%s': %zu paths changed between "
				 "file and directory; they show the new type",
				 dir->key, c.nconflicts);
		notify(d, &c, kernel);
		tree_changes_done(&c);
	}
	nodes = fresh ? tree_count(fresh) : 0;
	tree_free(fresh);
	give_back(nodes);
	return err;
}

int refresh_list_root(struct daemon *d, char **ret_msg, char **ret_warnings)
{
	struct node *root = tree_root(d->tree);
	int err;

	if (tree_list_begin(d->tree, root) != 1)
		return 0;
	err = list_one(d, root, false, ret_msg, ret_warnings);
	tree_list_end(d->tree, root, !err);
	return err;
}

int refresh_list_dir(struct daemon *d, struct node *dir)
{
	char *msg = NULL, *warnings = NULL;
	int err = tree_list_begin(d->tree, dir);

	if (err <= 0)
		return err;
	err = list_one(d, dir, false, &msg, &warnings);
	tree_list_end(d->tree, dir, !err);
	for (char *w = warnings, *nl; w && (nl = strchr(w, '\n')); w = nl + 1)
		log_warn("listing '%s': %.*s", dir->key, (int)(nl - w), w);
	if (err && log_once(dir, err))
		log_warn("listing directory '%s' failed (lookups in it fail "
			 "with EIO until a later one succeeds): %s",
			 dir->key, msg ? msg : strerror(-err));
	free(msg);
	free(warnings);
	return err ? -EIO : 0;
}

/* Lazy mode: relist each directory listed so far, one at a time; one
 * that fails keeps its old listing. @return the first error. */
static int refresh_lazy(struct daemon *d, char **ret_msg)
{
	struct node **dirs;
	size_t n, i, failed = 0;
	int err = tree_listed_dirs(d->tree, &dirs, &n), first = 0;

	/* Shutting down: transfers are cancelled, stop at once. */
	for (i = 0; !err && i < n && !http_cancelled(); i++) {
		char *msg = NULL, *warnings = NULL;
		int e = 0;

		/* Replaced by a file meanwhile (its parent was relisted). */
		if (tree_linked(d->tree, dirs[i]))
			e = list_one(d, dirs[i], true, &msg, &warnings);

		free(warnings); /* said at the first listing */
		if (e) {
			failed++;
			if (!first) {
				first = e;
				*ret_msg = msg;
				msg = NULL;
			}
		}
		free(msg);
	}
	if (!err) {
		log_debug("relisted %zu directories, %zu failed", n, failed);
		free(dirs);
	}
	return err ? err : first;
}

int refresh_once(struct daemon *d, char **ret_msg)
{
	struct tree *fresh = NULL;
	struct tree_changes c;
	char *warnings = NULL;
	size_t nodes;
	int err;

	if (d->opts.list_lazy)
		return refresh_lazy(d, ret_msg);
	err = tree_new(&fresh);
	if (!err)
		err = d->src->ops->list(d->src, fresh, ret_msg, &warnings);
	if (!err && (err = decoders_scan_tree(d->decoders, d->src, &d->opts,
					      fresh, d->tree, &warnings)) > 0)
		err = 0;
	free(warnings); /* said at mount; not again every time */
	if (!err) {
		tree_sort(fresh);
		err = tree_merge(d->tree, fresh, &c);
	}
	/* A merge applies whole or not at all (tree_merge() plans before it
	 * changes anything), so whatever changed is told to the kernel. */
	if (!err) {
		log_debug("relisted: %zu new, %zu changed or gone", c.nadded,
			  c.nchanged);
		if (c.nconflicts)
			log_info("relisted: %zu paths changed between file and "
				 "directory; they show the new type",
				 c.nconflicts);
		notify(d, &c, true);
		tree_changes_done(&c);
	}
	nodes = fresh ? tree_count(fresh) : 0;
	tree_free(fresh);
	give_back(nodes);
	return err;
}

static void *refresh_thread(void *arg)
{
	struct refresh *r = arg;
	struct timespec at;

	pthread_mutex_lock(&r->lock);
	while (!r->stop) {
		char *msg = NULL;
		int err;

		clock_gettime(CLOCK_MONOTONIC, &at);
		at.tv_sec += r->d->opts.list_ttl_s;
		while (!r->stop && pthread_cond_timedwait(&r->cond, &r->lock,
							  &at) != ETIMEDOUT)
			;
		if (r->stop)
			break;
		pthread_mutex_unlock(&r->lock);
		err = refresh_once(r->d, &msg);
		if (err)
			log_warn("relisting failed, keeping the old listing: "
				 "%s",
				 msg ? msg : strerror(-err));
		free(msg);
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int refresh_start(struct daemon *d, struct refresh **ret)
{
	struct refresh *r = calloc(1, sizeof(*r));
	pthread_condattr_t attr;
	int err;

	if (!r)
		return -ENOMEM;
	r->d = d;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &attr);
	pthread_condattr_destroy(&attr);
	err = -pthread_create(&r->thread, NULL, refresh_thread, r);
	if (err) {
		pthread_cond_destroy(&r->cond);
		pthread_mutex_destroy(&r->lock);
		free(r);
		return err;
	}
	*ret = r;
	return 0;
}

void refresh_stop(struct refresh *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
