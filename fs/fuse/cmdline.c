/* The command line: weightfs's options (-o ...), their defaults and checks,
 * and the --help text. */
#include "cmdline.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "env.h"
#include "host_memory.h"
#include "proxy.h"
#include "size.h"

/* clang-format off */
const char cmdline_usage[] =
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
"  hf://ORG/NAME[@REV][/DIR]  a Hugging Face Hub repository (datasets:\n"
"                          hf://datasets/ORG/NAME) at the commit REV (a\n"
"                          branch, tag or commit; default main) names at\n"
"                          mount; token from HF_TOKEN, HF_TOKEN_PATH or\n"
"                          $HF_HOME/token, sent only to the Hub\n"
"                          (HF_ENDPOINT, default https://huggingface.co)\n"
"\n"
"Options:\n"
"  -f                      stay in the foreground (default: daemonize once\n"
"                          the mount is live)\n"
"  -d                      debug log (implies -f)\n"
"  -h, --help              this help\n"
"  -V, --version           print the version\n"
"  -o cache_mem=SIZE       block cache budget (default: 1/8 of RAM, at\n"
"                          least 256M, at most 8G; never more than RAM)\n"
"  -o block_size=SIZE      bytes per cache block (default 8M, 64K..256M)\n"
"  -o cache_huge=MODE      transparent huge pages for cache blocks: on,\n"
"                          off, or auto (default): on, unless this is a VM\n"
"                          whose host takes free memory back (virtio\n"
"                          balloon free page reporting), where new huge\n"
"                          pages cost more to touch than 4K ones\n"
"  -o request_size=SIZE    most bytes per range request: readahead of\n"
"                          consecutive blocks is fetched with one request\n"
"                          of up to this much (default 32M, or block_size\n"
"                          if more; a multiple of block_size)\n"
"  -o connections=N|auto   parallel connections to the source (default\n"
"                          auto: HTTP and S3 start at 16 and add more while\n"
"                          throughput grows; file:// uses 16)\n"
"  -o connections_max=N    most connections auto may use (default 64)\n"
"  -o readahead_max=SIZE   largest readahead window per stream\n"
"                          (default 256M, or (connections_max + 1) requests\n"
"                          if more; never more than half the cache)\n"
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
"  -o list_time_max=SECONDS\n"
"                          a listing (eager: the whole mount's; lazy: one\n"
"                          directory's) gives up after this long: the\n"
"                          mount fails, naming where it stopped (default\n"
"                          60, below systemd's 90 s to start a mount)\n"
"  -o list_entries_max=N   ... or after this many entries (default\n"
"                          10000000)\n"
"  -o cache_dir=DIR        keep fetched blocks in DIR too (local NVMe): a\n"
"                          new daemon serves them without fetching again;\n"
"                          every block is checked with XXH3 (default: off)\n"
"  -o cache_disk=SIZE      budget of the disk cache, least recently used\n"
"                          blocks go first (default 20G)\n"
"  -o zstd=MODE            auto (default): a seekable-zstd object NAME.zst\n"
"                          (weightfs-pack) shows as NAME, uncompressed;\n"
"                          off: objects show as they are\n"
"  -o key_file=PATH        the key of sealed objects NAME.sealed\n"
"                          (weightfs-pack --encrypt), shown as NAME and\n"
"                          decrypted as read; PATH a key file (32 bytes or\n"
"                          64 hex digits, readable by its owner only) or a\n"
"                          directory of them, each object finding its key\n"
"                          by key id. Without its key a sealed file lists\n"
"                          but its reads fail with EACCES\n"
"  -o trust=PATH           read only sealed objects signed (weightfs-pack\n"
"                          --sign) by a publisher whose Ed25519 public key\n"
"                          (PEM) is PATH, or a file in directory PATH;\n"
"                          others are listed but refused: one log line at\n"
"                          listing, reads fail with EACCES. Each frame is\n"
"                          checked against its signed SHA-256 as read\n"
"  -o verify=MODE          sha256: check a file whose source keeps its\n"
"                          SHA-256 (hf:// LFS files, S3 objects with a\n"
"                          full-object checksum) the first time it is read\n"
"                          whole; a mismatch reads EIO from then on\n"
"                          (default off)\n"
"  -o allow_other          let other users read the mount (the kernel checks\n"
"                          permissions; file:// shows the source's owners\n"
"                          and modes, less write bits)\n"
"  -o ca_file=PATH         verify HTTPS servers against the CA certificates\n"
"                          in PATH (PEM) instead of the system's (S3\n"
"                          sources: default $AWS_CA_BUNDLE)\n"
"  -o insecure             do not verify TLS certificates (testing only)\n"
"  -o proxy=URL[|URL...][|direct]\n"
"                          send every request through this proxy (http://,\n"
"                          https://, socks4://, socks5://); a list fails\n"
"                          over to the next entry while one cannot be\n"
"                          reached, direct (last) meaning the source itself;\n"
"                          none: no proxy, whatever the environment says\n"
"                          (default: $https_proxy, $http_proxy, $HTTP_PROXY,\n"
"                          $ALL_PROXY, with $NO_PROXY)\n"
"  -o proxy_credentials=FILE\n"
"                          user:password for the proxy, on FILE's first line\n"
"                          (never in the URL)\n"
"  -o range_align=SIZE     range requests start and end on multiples of SIZE\n"
"                          (a multiple of block_size; default block_size), so\n"
"                          a rack cache's slices or a P2P engine's pieces\n"
"                          line up across nodes\n"
"  -o p2p_tag=TAG          through a Dragonfly proxy: send X-Dragonfly-Tag:\n"
"                          TAG, X-Dragonfly-Use-P2P and range_align as the\n"
"                          piece length (at least 4M)\n"
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
	OPT("cache_huge=%s", cache_huge),
	OPT("readahead_max=%s", readahead_max),
	OPT("request_size=%s", request_size),
	OPT("prefetch=%s", prefetch),
	OPT("connections=%s", connections),
	OPT("connections_max=%s", connections_max),
	OPT("retries=%s", retries),
	OPT("timeout=%s", timeout),
	OPT("list_ttl=%s", list_ttl),
	OPT("list=%s", list),
	OPT("list_time_max=%s", list_time_max),
	OPT("list_entries_max=%s", list_entries_max),
	OPT("cache_dir=%s", cache_dir),
	OPT("cache_disk=%s", cache_disk),
	OPT("zstd=%s", zstd),
	OPT("key_file=%s", key_file),
	OPT("trust=%s", trust),
	OPT("verify=%s", verify),
	OPT("ca_file=%s", ca_file),
	OPT("insecure", insecure),
	OPT("proxy=%s", proxy),
	OPT("proxy_credentials=%s", proxy_credentials),
	OPT("range_align=%s", range_align),
	OPT("p2p_tag=%s", p2p_tag),
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

int cmdline_parse(struct fuse_args *args, struct cmdline *c)
{
	return fuse_opt_parse(args, c, opt_spec, opt_proc);
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

int cmdline_parse_size(const char *name, const char *v, uint64_t *ret)
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

/* Option @name's path @in (NULL: not given), absolute, into @out. */
static int abs_path(const char *name, const char *in, char *out, size_t cap)
{
	char *real;

	if (!in)
		return 0;
	real = realpath(in, NULL); /* at most PATH_MAX: fits */
	if (!real) {
		fprintf(stderr, "weightfs: %s %s: %s\n", name, in,
			strerror(errno));
		return -EINVAL;
	}
	snprintf(out, cap, "%s", real);
	free(real);
	return 0;
}

/* ca_file, else $AWS_CA_BUNDLE for S3 (as the AWS tools read it), as an
 * absolute path (the daemon leaves its working directory), readable now. */
static int set_ca_file(const struct cmdline *c, struct options *o)
{
	const char *f = c->ca_file;
	char *real;

	if (!f && c->source && !strncmp(c->source, "s3://", 5))
		f = env_get("AWS_CA_BUNDLE");
	if (!f)
		return 0;
	real = realpath(f, NULL); /* at most PATH_MAX: fits o->ca_file */
	if (!real || access(real, R_OK) < 0) {
		int err = errno;

		fprintf(stderr, "weightfs: ca_file %s: %s\n", f, strerror(err));
		free(real);
		return -EINVAL;
	}
	snprintf(o->ca_file, sizeof(o->ca_file), "%s", real);
	free(real);
	return 0;
}

/* range_align: whole blocks; request_size becomes whole granules (the
 * default rounded up to one, a size given must be one already). */
static int set_range_align(const struct cmdline *c, struct options *o)
{
	o->range_align = o->block_size;
	if (cmdline_parse_size("range_align", c->range_align, &o->range_align) <
	    0)
		return -EINVAL;
	if (!o->range_align || o->range_align % o->block_size ||
	    o->range_align > (1u << 30)) {
		fprintf(stderr, "weightfs: range_align must be a multiple of "
				"block_size, at most 1G\n");
		return -EINVAL;
	}
	if (o->request_size % o->range_align) {
		if (c->request_size) {
			fprintf(stderr, "weightfs: request_size must be a "
					"multiple of range_align\n");
			return -EINVAL;
		}
		o->request_size +=
			o->range_align - o->request_size % o->range_align;
	}
	return 0;
}

/* proxy=, proxy_credentials= (an absolute path, readable now) and
 * p2p_tag= (a token Dragonfly takes as it is). */
static int set_proxy(const struct cmdline *c, struct options *o)
{
	char msg[256];

	o->proxy = c->proxy;
	if (c->proxy && proxy_check(c->proxy, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "weightfs: bad proxy: %s\n", msg);
		return -EINVAL;
	}
	if (c->proxy_credentials) {
		char *real = realpath(c->proxy_credentials, NULL);

		if (!real || access(real, R_OK) < 0) {
			fprintf(stderr, "weightfs: proxy_credentials %s: %s\n",
				c->proxy_credentials, strerror(errno));
			free(real);
			return -EINVAL;
		}
		/* at most PATH_MAX: fits */
		snprintf(o->proxy_credentials, sizeof(o->proxy_credentials),
			 "%s", real);
		free(real);
		if (!c->proxy || !strcmp(c->proxy, "none")) {
			fprintf(stderr, "weightfs: proxy_credentials needs "
					"proxy=URL\n");
			return -EINVAL;
		}
	}
	if (c->p2p_tag) {
		size_t n = strspn(c->p2p_tag, "abcdefghijklmnopqrstuvwxyz"
					      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					      "0123456789._-:/@");

		if (!*c->p2p_tag || c->p2p_tag[n] || n > 128) {
			fprintf(stderr,
				"weightfs: bad p2p_tag '%s': up to "
				"128 of A-Z a-z 0-9 . _ - : / @\n",
				c->p2p_tag);
			return -EINVAL;
		}
		if (o->range_align < (4u << 20) ||
		    o->range_align % (1u << 20)) {
			fprintf(stderr,
				"weightfs: p2p_tag needs range_align "
				"of whole MiB, at least 4M (Dragonfly's "
				"smallest piece)\n");
			return -EINVAL;
		}
		o->p2p_tag = c->p2p_tag;
	}
	return 0;
}

int cmdline_make_options(const struct cmdline *c, struct options *o)
{
	memset(o, 0, sizeof(*o));
	o->cache_mem = default_cache_mem();
	o->block_size = 8 << 20;
	o->readahead_max = 256 << 20;
	o->connections = 16;
	o->connections_max = 64;
	o->connections_auto =
		!c->connections || !strcmp(c->connections, "auto");
	o->zstd = true;
	o->retries = 5;
	o->timeout_s = 30;
	o->list_time_max_s = 60;
	o->list_entries_max = 10000000;
	o->prefetch = PREFETCH_SEQUENTIAL;
	o->allow_other = c->allow_other;
	o->debug = c->debug;
	o->insecure = c->insecure;
	o->path_style = c->path_style;
	o->no_sign_request = c->no_sign_request;
	o->endpoint = c->endpoint;
	o->region = c->region;
	o->profile = c->profile;
	if (cmdline_parse_size("cache_mem", c->cache_mem, &o->cache_mem) ||
	    cmdline_parse_size("block_size", c->block_size, &o->block_size) ||
	    cmdline_parse_size("readahead_max", c->readahead_max,
			       &o->readahead_max) ||
	    cmdline_parse_size("request_size", c->request_size,
			       &o->request_size))
		return -EINVAL;
	if (o->block_size < (64 << 10) || o->block_size > (256 << 20) ||
	    o->block_size % 4096) {
		fprintf(stderr, "weightfs: block_size must be a multiple of 4K "
				"between 64K and 256M\n");
		return -EINVAL;
	}
	/* Whole blocks per request; by default 32M (measured: first-byte
	 * latency paid once per 32M costs a few percent at 100 MiB/s). */
	if (!c->request_size)
		o->request_size =
			o->block_size > (32u << 20)
				? o->block_size
				: (32u << 20) / o->block_size * o->block_size;
	if (o->request_size < o->block_size ||
	    o->request_size % o->block_size || o->request_size > (1u << 30)) {
		fprintf(stderr, "weightfs: request_size must be a multiple of "
				"block_size, at most 1G\n");
		return -EINVAL;
	}
	if (set_range_align(c, o) < 0 || set_proxy(c, o) < 0)
		return -EINVAL;
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
	if (parse_uint_opt("connections_max", c->connections_max, 1, 256,
			   &o->connections_max) ||
	    (!o->connections_auto &&
	     parse_uint_opt("connections", c->connections, 1, 256,
			    &o->connections)) ||
	    parse_uint_opt("retries", c->retries, 0, 100, &o->retries) ||
	    parse_uint_opt("timeout", c->timeout, 1, 3600, &o->timeout_s) ||
	    parse_uint_opt("list_ttl", c->list_ttl, 0, 1u << 30,
			   &o->list_ttl_s) ||
	    parse_uint_opt("list_time_max", c->list_time_max, 1, 1u << 30,
			   &o->list_time_max_s) ||
	    parse_uint_opt("list_entries_max", c->list_entries_max, 1, 1u << 30,
			   &o->list_entries_max))
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
	/* auto starts at 16 (or the maximum); a fixed count is its own. */
	if (o->connections_auto && o->connections > o->connections_max)
		o->connections = o->connections_max;
	if (!o->connections_auto)
		o->connections_max = o->connections;
	/* The default window keeps every connection busy: one request each
	 * past the block being read (auto: as many as it may grow to). */
	if (!c->readahead_max &&
	    o->readahead_max < (o->connections_max + 1ull) * o->request_size)
		o->readahead_max =
			(o->connections_max + 1ull) * o->request_size;
	if (!c->cache_huge || !strcmp(c->cache_huge, "auto")) {
		o->cache_huge =
			!host_reclaims_free_memory("/sys/bus/virtio/devices");
	} else if (!strcmp(c->cache_huge, "on") ||
		   !strcmp(c->cache_huge, "off")) {
		o->cache_huge = !strcmp(c->cache_huge, "on");
	} else {
		fprintf(stderr,
			"weightfs: bad cache_huge '%s': expected auto, on or "
			"off\n",
			c->cache_huge);
		return -EINVAL;
	}
	if (set_ca_file(c, o) < 0)
		return -EINVAL;
	if (abs_path("key_file", c->key_file, o->key_file,
		     sizeof(o->key_file)) < 0 ||
	    abs_path("trust", c->trust, o->trust, sizeof(o->trust)) < 0)
		return -EINVAL;
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
	if (c->verify && strcmp(c->verify, "off")) {
		if (strcmp(c->verify, "sha256")) {
			fprintf(stderr,
				"weightfs: bad verify '%s': expected sha256 "
				"or off\n",
				c->verify);
			return -EINVAL;
		}
		o->verify_sha256 = true;
	}
	return 0;
}

void cmdline_free(struct cmdline *c)
{
	free(c->source);
	free(c->mountpoint);
	free(c->cache_mem);
	free(c->block_size);
	free(c->cache_huge);
	free(c->readahead_max);
	free(c->request_size);
	free(c->prefetch);
	free(c->connections);
	free(c->connections_max);
	free(c->retries);
	free(c->timeout);
	free(c->list_ttl);
	free(c->list);
	free(c->list_time_max);
	free(c->list_entries_max);
	free(c->cache_dir);
	free(c->zstd);
	free(c->key_file);
	free(c->trust);
	free(c->verify);
	free(c->cache_disk);
	free(c->endpoint);
	free(c->ca_file);
	free(c->region);
	free(c->profile);
	free(c->proxy);
	free(c->proxy_credentials);
	free(c->range_align);
	free(c->p2p_tag);
}
