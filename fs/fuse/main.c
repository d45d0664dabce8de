/* weightfs: mount an S3 prefix, an HTTP(S) directory or a local directory
 * as a read-only filesystem. */
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cache.h"
#include "cmdline.h"
#include "daemon.h"
#include "decoder.h"
#include "disk_cache.h"
#include "fastpath.h"
#include "fetch.h"
#include "http.h"
#include "log.h"
#include "mountpoint.h"
#include "proxy.h"
#include "refresh.h"
#include "source.h"
#include "stats.h"
#include "tree.h"
#include "verify.h"

#define EXIT_USAGE 2
#define KERNEL_RA_MAX (16u << 20)

/* The disk tier under -o cache_dir=DIR, budget -o cache_disk=SIZE. */
static int open_disk_cache(const struct cmdline *c, const struct daemon *d,
			   struct disk_cache **ret)
{
	struct disk_cache_config cfg = { 0 };
	uint64_t nblocks = d->opts.cache_mem / d->opts.block_size;
	char *id = NULL;
	int err;

	cfg.budget = 20ULL << 30;
	if (cmdline_parse_size("cache_disk", c->cache_disk, &cfg.budget) < 0)
		return -EINVAL;
	if (cfg.budget < 2 * d->opts.block_size) {
		fprintf(stderr, "weightfs: cache_disk must hold at least two "
				"blocks (2 x block_size)\n");
		return -EINVAL;
	}
	/* The source's identity: what it names, and where (S3 endpoint). */
	if (asprintf(&id, "%s|%s", d->src->display,
		     d->opts.endpoint ? d->opts.endpoint : "") < 0)
		return -ENOMEM;
	cfg.dir = c->cache_dir;
	cfg.block_size = d->opts.block_size;
	cfg.source_id = id;
	/* Blocks waiting to be written hold cache slots: an eighth. */
	cfg.max_queued = nblocks / 8 > 64 ? 64 : (unsigned)(nblocks / 8);
	if (cfg.max_queued == 0)
		cfg.max_queued = 1;
	/* Blocks read while that queue was full, written when it has room:
	 * what memory can still hold (their key only, ~90 bytes each). */
	cfg.max_later = nblocks * 2 > 65536 ? 65536 : (unsigned)(nblocks * 2);
	err = disk_cache_new(&cfg, ret);
	free(id);
	if (err < 0)
		fprintf(stderr, "weightfs: cache_dir %s: %s\n", c->cache_dir,
			strerror(-err));
	return err;
}

static void print_warnings(const char *w)
{
	const char *p = w, *nl;

	while (p && *p && (nl = strchr(p, '\n'))) {
		fprintf(stderr, "weightfs: warning: %.*s\n", (int)(nl - p), p);
		p = nl + 1;
	}
}

/*
 * Shutdown: SIGTERM, SIGINT or SIGHUP end the FUSE loop (libfuse's own
 * handler), but the loop then joins its workers, and a worker waits for
 * the block its read needs. So a second handler, chained before libfuse's,
 * wakes a thread that stops fetching at once: every pending fetch fails
 * with -ESHUTDOWN, each waiting read gets EIO, and the loop ends.
 */
static int stop_pipe[2] = { -1, -1 };
static struct sigaction old_action[3];
static const int stop_signals[3] = { SIGTERM, SIGINT, SIGHUP };

static void on_stop_signal(int sig)
{
	int saved = errno;
	char c = 1;
	size_t i;

	if (write(stop_pipe[1], &c, 1) < 0) {
		/* the pipe is full: the thread is woken already */
	}
	for (i = 0; i < 3; i++)
		if (stop_signals[i] == sig &&
		    old_action[i].sa_handler != SIG_DFL &&
		    old_action[i].sa_handler != SIG_IGN)
			old_action[i].sa_handler(sig);
	errno = saved;
}

static void *stop_watcher(void *arg)
{
	struct daemon *d = arg;
	char c;

	while (read(stop_pipe[0], &c, 1) < 0 && errno == EINTR)
		;
	http_cancel_all(); /* listings, credential requests */
	fetch_shutdown(d->fetch);
	return NULL;
}

/* Start the watcher and chain the handler (after libfuse's is set). */
static int stop_watch_start(struct daemon *d, pthread_t *ret)
{
	struct sigaction sa;
	size_t i;
	int r;

	if (pipe2(stop_pipe, O_CLOEXEC) < 0)
		return -errno;
	r = pthread_create(ret, NULL, stop_watcher, d);
	if (r)
		return -r;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < 3; i++)
		if (sigaction(stop_signals[i], &sa, &old_action[i]) < 0)
			return -errno;
	return 0;
}

/* Restore libfuse's handlers, wake the watcher if no signal did, join. */
static void stop_watch_end(pthread_t t)
{
	char c = 1;
	size_t i;

	for (i = 0; i < 3; i++)
		sigaction(stop_signals[i], &old_action[i], NULL);
	if (write(stop_pipe[1], &c, 1) < 0) {
		/* full: it is woken already */
	}
	pthread_join(t, NULL);
	close(stop_pipe[0]);
	close(stop_pipe[1]);
}

/* What main() makes, each step adding to it; teardown() ends it all. */
struct run {
	struct fuse_args args;
	struct cmdline c;
	struct daemon d;
	struct refresh *refresh;
	struct disk_cache *disk;
	char *msg, *warnings;
	pthread_t watcher;
	bool watching;
};

/* Steps return GO_ON, or the exit status, the reason said on stderr. */
#define GO_ON (-1)

/* The command line, and --help or --version. */
static int command_line(struct run *r)
{
	struct cmdline *c = &r->c;

	if (cmdline_parse(&r->args, c) < 0)
		return EXIT_USAGE;
	if (c->help) {
		fputs(cmdline_usage, stdout);
		return 0;
	}
	if (c->version) {
		printf("weightfs %s (libfuse %s, %s)\n", WFS_VERSION_STRING,
		       fuse_pkgversion(), curl_version());
		return 0;
	}
	if (!c->source || !c->mountpoint) {
		fputs(cmdline_usage, stderr);
		return EXIT_USAGE;
	}
	if (cmdline_make_options(c, &r->d.opts) < 0)
		return EXIT_USAGE;
	if (c->cache_disk && !c->cache_dir) {
		fprintf(stderr, "weightfs: cache_disk needs cache_dir\n");
		return EXIT_USAGE;
	}
	if (mountpoint_check(c->mountpoint) < 0)
		return EXIT_USAGE;
	log_debug_on = c->debug;
	log_set_mountpoint(c->mountpoint);
	if (c->debug)
		c->foreground = 1;
	return GO_ON;
}

/* Proxies (proxy.h), before the first request. */
static int proxies(struct run *r)
{
	int err = proxy_init(&r->d.opts, &r->msg);

	if (err < 0) {
		fprintf(stderr, "weightfs: %s\n",
			r->msg ? r->msg : strerror(-err));
		return EXIT_USAGE;
	}
	return GO_ON;
}

/* The source, the mount's decoders, and the tree listed (lazily: the
 * root only, so a bad source still fails the mount). */
static int list_source(struct run *r)
{
	struct daemon *d = &r->d;
	int err;

	err = source_new(r->c.source, &d->opts, &d->src, &r->msg);
	if (!err)
		err = decoders_new(&d->opts, &d->decoders, &r->msg);
	if (err) {
		fprintf(stderr, "weightfs: %s\n",
			r->msg ? r->msg : strerror(-err));
		return EXIT_USAGE;
	}
	if ((err = tree_new(&d->tree)) < 0) {
		fprintf(stderr, "weightfs: %s\n", strerror(-err));
		return 1;
	}
	if (!d->src->ops->list_dir)
		d->opts.list_lazy = false; /* this source lists whole */
	if (d->opts.list_lazy) {
		tree_mark_unlisted(d->tree, tree_root(d->tree));
		err = refresh_list_root(d, &r->msg, &r->warnings);
	} else {
		/* NAME.zst shown as NAME (lazy: in each listing). */
		err = d->src->ops->list(d->src, d->tree, &r->msg, &r->warnings);
		if (!err && (err = decoders_scan_tree(d->decoders, d->src,
						      &d->opts, d->tree, NULL,
						      &r->warnings)) > 0) {
			log_debug("%d stored objects shown decoded", err);
			err = 0;
		}
	}
	print_warnings(r->warnings);
	if (err) {
		fprintf(stderr, "weightfs: %s\n",
			r->msg ? r->msg : strerror(-err));
		return EXIT_USAGE;
	}
	if (tree_finish(d->tree)) {
		fprintf(stderr, "weightfs: %s\n", strerror(ENOMEM));
		return EXIT_USAGE;
	}
	log_debug("listed %zu files, %llu bytes", tree_files(d->tree),
		  (unsigned long long)tree_bytes(d->tree));
	return GO_ON;
}

/* Below the tree: the fetch engine, the disk tier wrapping it, the block
 * cache, the fast path (a warning without it), the FUSE session. */
static int build_engine(struct run *r)
{
	struct daemon *d = &r->d;
	const struct cache_fill_ops *fill = &fetch_fill_ops;
	void *fill_ctx;
	int err;

	if (d->opts.verify_sha256)
		verify_set_source(d->src);
	if ((err = fetch_new(d->src, &d->opts, &d->fetch)) < 0)
		goto fail;
	fill_ctx = d->fetch;
	if (r->c.cache_dir) { /* the disk tier wraps the fetch engine */
		if (open_disk_cache(&r->c, d, &r->disk) < 0)
			return EXIT_USAGE;
		disk_cache_chain(r->disk, &fetch_fill_ops, d->fetch);
		fill = &disk_cache_fill_ops;
		fill_ctx = r->disk;
	}
	if ((err = cache_new(d->opts.cache_mem, d->opts.block_size,
			     d->opts.cache_huge, fill, fill_ctx, &d->cache)) <
	    0)
		goto fail;
	log_debug("cache blocks in %s pages",
		  cache_huge_pages(d->cache) ? "2 MiB huge" : "4 KiB");
	err = fastpath_new(d, &d->fastpath);
	if (err < 0) {
		fprintf(stderr,
			"weightfs: warning: no fast path for loaders "
			"(socket: %s)\n",
			strerror(-err));
		d->fastpath = NULL;
	}
	/* libfuse's own options: read-only, and a name for mount(8). */
	if (fuse_opt_add_arg(&r->args, "-oro,default_permissions") ||
	    fuse_opt_add_arg(&r->args, "-ofsname=weightfs") ||
	    fuse_opt_add_arg(&r->args, "-osubtype=weightfs") ||
	    (r->c.debug && fuse_opt_add_arg(&r->args, "-odebug"))) {
		err = -ENOMEM;
		goto fail;
	}
	d->se = fuse_session_new(&r->args, &ops, sizeof(ops), d);
	if (!d->se)
		return EXIT_USAGE; /* libfuse said which option it did not
				      know */
	return GO_ON;
fail:
	fprintf(stderr, "weightfs: %s\n", strerror(-err));
	return 1;
}

/* After daemonizing: the threads, in order. @return 0 or the failure,
 * logged. */
static int start_threads(struct run *r)
{
	struct daemon *d = &r->d;
	int err;

	if (r->disk && (err = disk_cache_start(r->disk, d->cache)) < 0) {
		log_error("cannot start disk cache threads: %s",
			  strerror(-err));
		return err;
	}
	if ((err = stop_watch_start(d, &r->watcher)) < 0) {
		log_error("cannot watch for signals: %s", strerror(-err));
		return err;
	}
	r->watching = true;
	if ((err = fetch_start(d->fetch, d->cache)) < 0) {
		log_error("cannot start fetch threads: %s", strerror(-err));
		return err;
	}
	if (d->fastpath &&
	    (err = fastpath_start(d->fastpath, r->c.mountpoint)) < 0) {
		log_error("cannot start the fast path: %s", strerror(-err));
		return err;
	}
	if (d->opts.list_ttl_s && (err = refresh_start(d, &r->refresh)) < 0) {
		log_error("cannot start relisting: %s", strerror(-err));
		return err;
	}
	return 0;
}

/* The FUSE loop on its threads. @return the exit status: 0 on unmount
 * and on SIGTERM/SIGINT (both clean). */
static int loop(struct run *r)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int err;

	if (!cfg)
		return 1;
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, FUSE_THREADS_MAX);
	fuse_loop_cfg_set_idle_threads(cfg, 16);
	err = fuse_session_loop_mt(r->d.se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return err < 0 ? 1 : 0;
}

/* Mount, go to the background once the mount is live, serve until
 * unmounted or signalled, unmount. @return the exit status. */
static int serve(struct run *r)
{
	struct daemon *d = &r->d;
	int ret = 1;

	if (fuse_set_signal_handlers(d->se) < 0)
		return 1;
	if (fuse_session_mount(d->se, r->c.mountpoint) < 0) {
		fprintf(stderr, "weightfs: cannot mount on %s\n",
			r->c.mountpoint);
		fuse_remove_signal_handlers(d->se);
		return EXIT_USAGE;
	}
	d->kernel_readahead = d->opts.readahead_max < KERNEL_RA_MAX
				      ? d->opts.readahead_max
				      : KERNEL_RA_MAX;
	mountpoint_set_readahead(r->c.mountpoint, d->kernel_readahead);
	/* The mount is live: only now may the parent exit 0. */
	if (fuse_daemonize(r->c.foreground) >= 0) {
		if (!r->c.foreground)
			log_to_syslog();
		if (!start_threads(r))
			ret = loop(r);
	}
	/* Stop fetching first: whatever still waits for a block (relisting,
	 * fast-path clients) gets its answer now, so the joins below are
	 * quick whatever the source does. */
	http_cancel_all();
	fetch_shutdown(d->fetch);
	if (r->watching)
		stop_watch_end(r->watcher);
	refresh_stop(r->refresh);
	fuse_session_unmount(d->se);
	fuse_remove_signal_handlers(d->se);
	return ret;
}

/* End everything main() made, in reverse. */
static void teardown(struct run *r)
{
	struct daemon *d = &r->d;

	fetch_shutdown(d->fetch);
	if (d->se)
		fuse_session_destroy(d->se);
	fastpath_free(d->fastpath);
	disk_cache_stop(
		r->disk); /* before the fetch engine it hands misses to */
	fetch_free(d->fetch);
	disk_cache_free(r->disk);
	cache_free(d->cache);
	tree_free(d->tree);
	decoders_free(d->decoders); /* after every decoded object */
	source_free(d->src);
	free(r->msg);
	free(r->warnings);
	cmdline_free(&r->c);
	fuse_opt_free_args(&r->args);
	curl_global_cleanup();
}

int main(int argc, char *argv[])
{
	struct run r = { .args = FUSE_ARGS_INIT(argc, argv) };
	int ret = command_line(&r);

	curl_global_init(CURL_GLOBAL_ALL);
	if (ret == GO_ON)
		ret = proxies(&r);
	if (ret == GO_ON)
		ret = list_source(&r);
	if (ret == GO_ON)
		ret = build_engine(&r);
	if (ret == GO_ON)
		ret = serve(&r);
	teardown(&r);
	return ret;
}
