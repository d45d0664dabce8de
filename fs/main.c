/* weightfs: mount an S3 prefix, an HTTP(S) directory or a local directory
 * as a read-only filesystem. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cache.h"
#include "daemon.h"
#include "disk_cache.h"
#include "fastpath.h"
#include "fetch.h"
#include "http.h"
#include "log.h"
#include "refresh.h"
#include "size.h"
#include "source.h"
#include "stats.h"
#include "tree.h"
#include "zstd_object.h"

#define EXIT_USAGE 2
#define KERNEL_RA_MAX (16u << 20)

/* clang-format off */
static const char usage[] =
"usage: weightfs [-f] [-d] [-o OPT[,OPT...]] SOURCE MOUNTPOINT\n"
"\n"
"Mount model weights in S3, behind HTTP(S) or in a directory as local,\n"
"read-only files, read through a block cache with parallel range requests.\n"
"\n"
"SOURCE:\n"
"  file:///abs/dir         a local or NFS directory (or one file)\n"
"  http(s)://host/dir/     a directory served with a JSON index\n"
"                          (nginx: autoindex on; autoindex_format json;),\n"
"                          or the URL of one file\n"
"  s3://bucket[/prefix]    an S3 bucket or prefix\n"
"\n"
"Options:\n"
"  -f                      stay in the foreground (default: daemonize once\n"
"                          the mount is live)\n"
"  -d                      debug log (implies -f)\n"
"  -h, --help              this help\n"
"  -V, --version           print the version\n"
"  -o cache_mem=SIZE       block cache budget (default: 1/8 of RAM, at\n"
"                          least 256M, at most 8G; never more than RAM)\n"
"  -o block_size=SIZE      bytes per range request and cache block\n"
"                          (default 8M, 64K..256M)\n"
"  -o connections=N        parallel connections to the source (default 16)\n"
"  -o readahead_max=SIZE   largest readahead window per stream\n"
"                          (default 256M, or (connections + 1) blocks if\n"
"                          more; never more than half the cache)\n"
"  -o prefetch=MODE        off, sequential (default: adaptive readahead),\n"
"                          or open (stream each file from when it is opened)\n"
"  -o retries=N            attempts after the first per block (default 5)\n"
"  -o timeout=SECONDS      a transfer that stalls this long is retried\n"
"                          (default 30)\n"
"  -o list_ttl=SECONDS     list the source again this often: new files\n"
"                          appear, changed ones show their new version\n"
"                          (default 0: list once, at mount)\n"
"  -o list=MODE            lazy (default): list each directory when first\n"
"                          looked in (the root at mount), so any bucket\n"
"                          mounts at once; eager: list everything at mount\n"
"                          (find/du without listing latency)\n"
"  -o cache_dir=DIR        keep fetched blocks in DIR too (local NVMe): a\n"
"                          new daemon serves them without fetching again;\n"
"                          every block is checked with XXH3 (default: off)\n"
"  -o cache_disk=SIZE      budget of the disk cache, least recently used\n"
"                          blocks go first (default 20G)\n"
"  -o zstd=MODE            auto (default): a seekable-zstd object NAME.zst\n"
"                          (weightfs-pack) shows as NAME, uncompressed;\n"
"                          off: objects show as they are\n"
"  -o allow_other          let other users read the mount (the kernel checks\n"
"                          permissions; file:// shows the source's owners\n"
"                          and modes, less write bits)\n"
"  -o insecure             do not verify TLS certificates (testing only)\n"
"  -o OPT                  mount(8)'s generic options (defaults, ro, rw,\n"
"                          auto, noauto, _netdev, nofail, user, users,\n"
"                          x-*, comment=...) are accepted and ignored, so\n"
"                          fstab lines work; the mount is always read-only\n"
"S3 (credentials come from the environment and the AWS files and\n"
"services, never from the command line):\n"
"  -o endpoint=URL         S3-compatible endpoint (default: AWS, or\n"
"                          $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL)\n"
"  -o region=R             region (default $AWS_REGION, $AWS_DEFAULT_REGION,\n"
"                          the profile's, else us-east-1)\n"
"  -o path_style           path-style addressing (MinIO, Ceph and others)\n"
"  -o no_sign_request      anonymous requests (public buckets)\n"
"  -o profile=NAME         profile of the AWS config files\n"
"\n"
"Sizes accept K, M and G. Unmount with: fusermount3 -u MOUNTPOINT\n"
"Counters, prefetch, evict: weightfs-ctl --help\n"
"Exit status: 0 mounted, 2 bad arguments or source, 1 other failures.\n";
/* clang-format on */

struct cmdline {
	char *source;
	char *mountpoint;
	char *cache_mem, *block_size, *readahead_max, *prefetch;
	char *connections, *retries, *timeout, *list_ttl, *list;
	int allow_other, insecure, path_style, no_sign_request;
	char *endpoint, *region, *profile;
	char *cache_dir, *cache_disk;
	char *zstd;
	int foreground, debug, help, version;
};

#define OPT(t, p)                                                              \
	{                                                                      \
		t, offsetof(struct cmdline, p), 1                              \
	}
/* Generic mount options that mount(8), mount.fuse3 and fstab pass on are
 * meaningless here (the mount is read-only whatever "rw" says): accepted and
 * dropped, so that fstab lines and systemd mounts work. x-* and comment=*
 * are dropped in opt_proc; dev, suid, exec and their no* forms go to
 * libfuse, which applies them. */
#define IGNORED(t) FUSE_OPT_KEY(t, FUSE_OPT_KEY_DISCARD)
static const struct fuse_opt opt_spec[] = {
	OPT("cache_mem=%s", cache_mem),
	OPT("block_size=%s", block_size),
	OPT("readahead_max=%s", readahead_max),
	OPT("prefetch=%s", prefetch),
	OPT("connections=%s", connections),
	OPT("retries=%s", retries),
	OPT("timeout=%s", timeout),
	OPT("list_ttl=%s", list_ttl),
	OPT("list=%s", list),
	OPT("cache_dir=%s", cache_dir),
	OPT("cache_disk=%s", cache_disk),
	OPT("zstd=%s", zstd),
	OPT("insecure", insecure),
	OPT("path_style", path_style),
	OPT("no_sign_request", no_sign_request),
	OPT("endpoint=%s", endpoint),
	OPT("region=%s", region),
	OPT("profile=%s", profile),
	OPT("-f", foreground),
	OPT("-d", debug),
	OPT("debug", debug),
	OPT("-h", help),
	OPT("--help", help),
	OPT("-V", version),
	OPT("--version", version),
	FUSE_OPT_KEY("allow_other", 1),
	IGNORED("defaults"),
	IGNORED("ro"),
	IGNORED("rw"),
	IGNORED("auto"),
	IGNORED("noauto"),
	IGNORED("_netdev"),
	IGNORED("nofail"),
	IGNORED("user"),
	IGNORED("nouser"),
	IGNORED("users"),
	IGNORED("owner"),
	IGNORED("group"),
	IGNORED("relatime"),
	IGNORED("norelatime"),
	IGNORED("strictatime"),
	IGNORED("nostrictatime"),
	IGNORED("lazytime"),
	IGNORED("nolazytime"),
	IGNORED("diratime"),
	IGNORED("nodiratime"),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct cmdline *c = data;

	if (key == 1) { /* allow_other: ours to know, libfuse's to apply */
		c->allow_other = 1;
		return 1;
	}
	/* mount(8)'s and systemd's own options (x-systemd.automount,
	 * x-mount.mkdir, comment=...): not ours, not libfuse's. */
	if (key == FUSE_OPT_KEY_OPT &&
	    (!strncmp(arg, "x-", 2) || !strncmp(arg, "comment=", 8)))
		return 0;
	if (key == FUSE_OPT_KEY_NONOPT) {
		if (!c->source) {
			c->source = strdup(arg);
			return 0;
		}
		if (!c->mountpoint) {
			c->mountpoint = strdup(arg);
			return 0;
		}
		fprintf(stderr, "weightfs: unexpected argument '%s'\n", arg);
		return -1;
	}
	return 1;
}

static uint64_t default_cache_mem(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * psize : 0;
	uint64_t m = ram / 8;

	if (m < (256ULL << 20))
		m = 256ULL << 20;
	if (m > (8ULL << 30))
		m = 8ULL << 30;
	return m;
}

static int parse_size_opt(const char *name, const char *v, uint64_t *ret)
{
	if (!v)
		return 0;
	if (size_parse(v, ret) < 0) {
		fprintf(stderr,
			"weightfs: bad %s '%s': expected a size like "
			"8M or 4G\n",
			name, v);
		return -EINVAL;
	}
	return 0;
}

static int parse_uint_opt(const char *name, const char *v, unsigned min,
			  unsigned max, unsigned *ret)
{
	char *end;
	unsigned long n;

	if (!v)
		return 0;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (!*v || *end || errno || *v == '-' || n < min || n > max) {
		fprintf(stderr,
			"weightfs: bad %s '%s': expected a number from "
			"%u to %u\n",
			name, v, min, max);
		return -EINVAL;
	}
	*ret = (unsigned)n;
	return 0;
}

/* Fill @o from @c with defaults; print what is wrong. */
static int make_options(const struct cmdline *c, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->cache_mem = default_cache_mem();
	o->block_size = 8 << 20;
	o->readahead_max = 256 << 20;
	o->connections = 16;
	o->zstd = true;
	o->retries = 5;
	o->timeout_s = 30;
	o->prefetch = PREFETCH_SEQUENTIAL;
	o->allow_other = c->allow_other;
	o->debug = c->debug;
	o->insecure = c->insecure;
	o->path_style = c->path_style;
	o->no_sign_request = c->no_sign_request;
	o->endpoint = c->endpoint;
	o->region = c->region;
	o->profile = c->profile;
	if (parse_size_opt("cache_mem", c->cache_mem, &o->cache_mem) ||
	    parse_size_opt("block_size", c->block_size, &o->block_size) ||
	    parse_size_opt("readahead_max", c->readahead_max,
			   &o->readahead_max))
		return -EINVAL;
	if (o->block_size < (64 << 10) || o->block_size > (256 << 20) ||
	    o->block_size % 4096) {
		fprintf(stderr, "weightfs: block_size must be a multiple of 4K "
				"between 64K and 256M\n");
		return -EINVAL;
	}
	if (c->cache_mem && sysconf(_SC_PHYS_PAGES) > 0 &&
	    o->cache_mem / sysconf(_SC_PAGESIZE) >
		    (uint64_t)sysconf(_SC_PHYS_PAGES)) {
		fprintf(stderr,
			"weightfs: cache_mem %s is more than this machine's "
			"memory (%llu MiB)\n",
			c->cache_mem,
			(unsigned long long)sysconf(_SC_PHYS_PAGES) *
					sysconf(_SC_PAGESIZE) >>
				20);
		return -EINVAL;
	}
	if (o->cache_mem < 2 * o->block_size) {
		fprintf(stderr, "weightfs: cache_mem must hold at least two "
				"blocks (2 x block_size)\n");
		return -EINVAL;
	}
	if (parse_uint_opt("connections", c->connections, 1, 256,
			   &o->connections) ||
	    parse_uint_opt("retries", c->retries, 0, 100, &o->retries) ||
	    parse_uint_opt("timeout", c->timeout, 1, 3600, &o->timeout_s) ||
	    parse_uint_opt("list_ttl", c->list_ttl, 0, 1u << 30,
			   &o->list_ttl_s))
		return -EINVAL;
	o->list_lazy = !c->list || !strcmp(c->list, "lazy");
	if (c->list && !o->list_lazy && strcmp(c->list, "eager")) {
		fprintf(stderr, "weightfs: list must be lazy or eager\n");
		return -EINVAL;
	}
	if (c->prefetch) {
		if (!strcmp(c->prefetch, "off"))
			o->prefetch = PREFETCH_OFF;
		else if (!strcmp(c->prefetch, "sequential"))
			o->prefetch = PREFETCH_SEQUENTIAL;
		else if (!strcmp(c->prefetch, "open"))
			o->prefetch = PREFETCH_OPEN;
		else {
			fprintf(stderr,
				"weightfs: bad prefetch '%s': expected "
				"off, sequential or open\n",
				c->prefetch);
			return -EINVAL;
		}
	}
	/* The default window keeps every connection busy: one block each
	 * past the one being read. */
	if (!c->readahead_max &&
	    o->readahead_max < (o->connections + 1ull) * o->block_size)
		o->readahead_max = (o->connections + 1ull) * o->block_size;
	if (c->zstd && strcmp(c->zstd, "auto")) {
		if (strcmp(c->zstd, "off")) {
			fprintf(stderr,
				"weightfs: bad zstd '%s': expected auto or "
				"off\n",
				c->zstd);
			return -EINVAL;
		}
		o->zstd = false;
	}
	return 0;
}

/*
 * Let the kernel read ahead up to @bytes on this mount (its default is
 * 128 KiB, which turns a sequential read into many small round trips).
 * Needs root; without it the default stays. The mount's device comes from
 * mountinfo, since stat() on the mountpoint would wait for this daemon.
 */
static void set_kernel_readahead(const char *mountpoint, uint64_t bytes)
{
	char *real = realpath(mountpoint, NULL), line[4096], path[128];
	unsigned maj = 0, min = 0, m1, m2;
	FILE *f;

	if (!real)
		return;
	f = fopen("/proc/self/mountinfo", "re");
	while (f && fgets(line, sizeof(line), f)) {
		char mnt[4096];

		/* The last match wins: the newest mount on that path. */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &m1, &m2, mnt) ==
			    3 &&
		    !strcmp(mnt, real)) {
			maj = m1;
			min = m2;
		}
	}
	if (f)
		fclose(f);
	free(real);
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj,
		 min);
	f = maj || min ? fopen(path, "we") : NULL;
	if (!f) {
		log_debug("kernel readahead stays at its default (%s)",
			  strerror(errno));
		return;
	}
	fprintf(f, "%llu\n", (unsigned long long)(bytes >> 10));
	fclose(f);
}

/* Undo mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* Whether the absolute path @path is a weightfs mount, per mountinfo. */
static bool is_weightfs_mount(const char *path)
{
	char line[8192], mnt[4096], type[256];
	bool found = false;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	const char *sep;

	while (f && fgets(line, sizeof(line), f)) {
		sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*u %*u %*s %*s %4095s", mnt) != 1 ||
		    sscanf(sep, " - %255s", type) != 1)
			continue;
		unescape_mountinfo(mnt);
		/* The last mount on a path is the one seen there. */
		if (!strcmp(mnt, path))
			found = !strcmp(type, "fuse.weightfs");
	}
	if (f)
		fclose(f);
	return found;
}

/*
 * Check @mp as mount(8) would, before mounting: it must be a directory
 * and not already a weightfs mount (a message, then -EINVAL); one that is
 * not empty only warns, since its files are hidden while mounted.
 * Its parent is resolved rather than @mp itself, so that a dead mount
 * there (ENOTCONN) is still recognized.
 */
static int check_mountpoint(const char *mp)
{
	char *copy = strdup(mp), *slash, *parent, real[PATH_MAX + 1];
	const char *base;
	struct stat st;
	struct dirent *e;
	DIR *d;
	bool mounted = false;

	if (!copy)
		return -ENOMEM;
	while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
		copy[strlen(copy) - 1] = '\0';
	slash = strrchr(copy, '/');
	parent = slash ? (slash == copy ? "/" : copy) : ".";
	base = slash ? slash + 1 : copy;
	if (slash)
		*slash = '\0';
	if (*base && strcmp(base, ".") && strcmp(base, "..") &&
	    realpath(parent, real) &&
	    strlen(real) + strlen(base) + 2 <= sizeof(real)) {
		if (strcmp(real, "/"))
			strcat(real, "/");
		strcat(real, base);
		mounted = is_weightfs_mount(real);
	} else if (realpath(mp, real)) {
		mounted = is_weightfs_mount(real);
	}
	free(copy);
	if (mounted) {
		fprintf(stderr,
			"weightfs: %s is already mounted (a weightfs mount; "
			"unmount it first: fusermount3 -u %s)\n",
			mp, mp);
		return -EINVAL;
	}
	if (stat(mp, &st) < 0) {
		fprintf(stderr, "weightfs: mountpoint %s: %s\n", mp,
			strerror(errno));
		return -EINVAL;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "weightfs: mountpoint %s is not a directory\n",
			mp);
		return -EINVAL;
	}
	d = opendir(mp);
	while (d && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			fprintf(stderr,
				"weightfs: warning: mountpoint %s is not "
				"empty: its files are hidden while mounted\n",
				mp);
			break;
		}
	}
	if (d)
		closedir(d);
	return 0;
}

/* The disk tier under -o cache_dir=DIR, budget -o cache_disk=SIZE. */
static int open_disk_cache(const struct cmdline *c, const struct daemon *d,
			   struct disk_cache **ret)
{
	struct disk_cache_config cfg = { 0 };
	uint64_t nblocks = d->opts.cache_mem / d->opts.block_size;
	char *id = NULL;
	int err;

	cfg.budget = 20ULL << 30;
	if (parse_size_opt("cache_disk", c->cache_disk, &cfg.budget) < 0)
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

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline c = { 0 };
	struct daemon d = { 0 };
	struct fuse_loop_config *loop_cfg = NULL;
	struct refresh *refresh = NULL;
	struct disk_cache *disk = NULL;
	const struct cache_fill_ops *fill = &fetch_fill_ops;
	void *fill_ctx;
	char *msg = NULL, *warnings = NULL;
	pthread_t watcher;
	bool watching = false;
	int ret = EXIT_USAGE, err;

	if (fuse_opt_parse(&args, &c, opt_spec, opt_proc) < 0)
		goto out;
	if (c.help) {
		fputs(usage, stdout);
		ret = 0;
		goto out;
	}
	if (c.version) {
		printf("weightfs %s (libfuse %s, %s)\n", WFS_VERSION_STRING,
		       fuse_pkgversion(), curl_version());
		ret = 0;
		goto out;
	}
	if (!c.source || !c.mountpoint) {
		fputs(usage, stderr);
		goto out;
	}
	if (make_options(&c, &d.opts) < 0)
		goto out;
	if (c.cache_disk && !c.cache_dir) {
		fprintf(stderr, "weightfs: cache_disk needs cache_dir\n");
		goto out;
	}
	if (check_mountpoint(c.mountpoint) < 0)
		goto out;
	log_debug_on = c.debug;
	log_set_mountpoint(c.mountpoint);
	if (c.debug)
		c.foreground = 1;
	curl_global_init(CURL_GLOBAL_ALL);

	err = source_new(c.source, &d.opts, &d.src, &msg);
	if (err) {
		fprintf(stderr, "weightfs: %s\n", msg ? msg : strerror(-err));
		goto out;
	}
	if ((err = tree_new(&d.tree)) < 0)
		goto fail;
	/* Lazy: the root only, so a bad source still fails the mount. */
	if (!d.src->ops->list_dir)
		d.opts.list_lazy = false; /* this source lists whole */
	if (d.opts.list_lazy) {
		tree_mark_unlisted(d.tree, tree_root(d.tree));
		err = refresh_list_root(&d, &msg, &warnings);
	} else {
		/* Seekable NAME.zst shown as NAME (lazy: in each listing). */
		err = d.src->ops->list(d.src, d.tree, &msg, &warnings);
		if (!err &&
		    (err = zstd_object_scan_tree(d.src, &d.opts, d.tree, NULL,
						 &warnings)) > 0) {
			log_debug("%d compressed objects shown uncompressed",
				  err);
			err = 0;
		}
	}
	print_warnings(warnings);
	if (err) {
		fprintf(stderr, "weightfs: %s\n", msg ? msg : strerror(-err));
		goto out;
	}
	tree_finish(d.tree);
	log_debug("listed %zu files, %llu bytes", tree_files(d.tree),
		  (unsigned long long)tree_bytes(d.tree));

	if ((err = fetch_new(d.src, &d.opts, &d.fetch)) < 0)
		goto fail;
	fill_ctx = d.fetch;
	if (c.cache_dir) { /* the disk tier wraps the fetch engine */
		if ((err = open_disk_cache(&c, &d, &disk)) < 0)
			goto out;
		disk_cache_chain(disk, &fetch_fill_ops, d.fetch);
		fill = &disk_cache_fill_ops;
		fill_ctx = disk;
	}
	if ((err = cache_new(d.opts.cache_mem, d.opts.block_size, fill,
			     fill_ctx, &d.cache)) < 0)
		goto fail;
	err = fastpath_new(&d, &d.fastpath);
	if (err < 0) {
		fprintf(stderr,
			"weightfs: warning: no fast path for loaders "
			"(socket: %s)\n",
			strerror(-err));
		d.fastpath = NULL;
	}

	/* libfuse's own options: read-only, and a name for mount(8). */
	if (fuse_opt_add_arg(&args, "-oro,default_permissions") ||
	    fuse_opt_add_arg(&args, "-ofsname=weightfs") ||
	    fuse_opt_add_arg(&args, "-osubtype=weightfs") ||
	    (c.debug && fuse_opt_add_arg(&args, "-odebug"))) {
		err = -ENOMEM;
		goto fail;
	}
	d.se = fuse_session_new(&args, &ops, sizeof(ops), &d);
	if (!d.se)
		goto out; /* libfuse said which option it did not know */
	ret = 1;
	if (fuse_set_signal_handlers(d.se) < 0)
		goto out;
	if (fuse_session_mount(d.se, c.mountpoint) < 0) {
		fprintf(stderr, "weightfs: cannot mount on %s\n", c.mountpoint);
		ret = EXIT_USAGE;
		goto out_signals;
	}
	d.kernel_readahead = d.opts.readahead_max < KERNEL_RA_MAX
				     ? d.opts.readahead_max
				     : KERNEL_RA_MAX;
	set_kernel_readahead(c.mountpoint, d.kernel_readahead);
	/* The mount is live: only now may the parent exit 0. */
	if (fuse_daemonize(c.foreground) < 0)
		goto out_unmount;
	if (!c.foreground)
		log_to_syslog();
	if (disk && (err = disk_cache_start(disk, d.cache)) < 0) {
		log_error("cannot start disk cache threads: %s",
			  strerror(-err));
		goto out_unmount;
	}
	if ((err = stop_watch_start(&d, &watcher)) < 0) {
		log_error("cannot watch for signals: %s", strerror(-err));
		goto out_unmount;
	}
	watching = true;
	if ((err = fetch_start(d.fetch, d.cache)) < 0) {
		log_error("cannot start fetch threads: %s", strerror(-err));
		goto out_unmount;
	}
	if (d.fastpath &&
	    (err = fastpath_start(d.fastpath, c.mountpoint)) < 0) {
		log_error("cannot start the fast path: %s", strerror(-err));
		goto out_unmount;
	}
	if (d.opts.list_ttl_s && (err = refresh_start(&d, &refresh)) < 0) {
		log_error("cannot start relisting: %s", strerror(-err));
		goto out_unmount;
	}
	loop_cfg = fuse_loop_cfg_create();
	if (!loop_cfg)
		goto out_unmount;
	fuse_loop_cfg_set_clone_fd(loop_cfg, 1);
	fuse_loop_cfg_set_max_threads(loop_cfg, FUSE_THREADS_MAX);
	fuse_loop_cfg_set_idle_threads(loop_cfg, 16);
	/* 0 on unmount, the signal number on SIGTERM/SIGINT: both clean. */
	err = fuse_session_loop_mt(d.se, loop_cfg);
	ret = err < 0 ? 1 : 0;
	fuse_loop_cfg_destroy(loop_cfg);
out_unmount:
	/* Stop fetching first: whatever still waits for a block (relisting,
	 * fast-path clients) gets its answer now, so the joins below are
	 * quick whatever the source does. */
	http_cancel_all();
	fetch_shutdown(d.fetch);
	if (watching)
		stop_watch_end(watcher);
	refresh_stop(refresh);
	fuse_session_unmount(d.se);
out_signals:
	fuse_remove_signal_handlers(d.se);
	goto out;
fail:
	fprintf(stderr, "weightfs: %s\n", strerror(-err));
	ret = 1;
out:
	fetch_shutdown(d.fetch);
	if (d.se)
		fuse_session_destroy(d.se);
	fastpath_free(d.fastpath);
	disk_cache_stop(disk); /* before the fetch engine it hands misses to */
	fetch_free(d.fetch);
	disk_cache_free(disk);
	cache_free(d.cache);
	tree_free(d.tree);
	source_free(d.src);
	free(msg);
	free(warnings);
	free(c.source);
	free(c.mountpoint);
	free(c.cache_mem);
	free(c.block_size);
	free(c.readahead_max);
	free(c.prefetch);
	free(c.connections);
	free(c.retries);
	free(c.timeout);
	free(c.list_ttl);
	free(c.list);
	free(c.cache_dir);
	free(c.zstd);
	free(c.cache_disk);
	free(c.endpoint);
	free(c.region);
	free(c.profile);
	fuse_opt_free_args(&args);
	curl_global_cleanup();
	return ret;
}
