/* weightfs-load: load safetensors models with libweightfs and say how fast
 * (and, with --digest, exactly what) it loaded. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "digest.h"
#include "size.h"
#include "weightfs.h"

#define READ_BACK (8u << 20)

struct args {
	struct wfs_load_opts opts;
	bool json;
	bool quiet;
	bool have_digest;
	enum digest_algo digest;
	/* a part of the model (--tensors, --shard, --shard-dim, --slice) */
	struct wfs_select *sel;
	uint64_t rank, world;
	unsigned nshard_dims;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: weightfs-load [OPTION]... PATH...\n"
		"Load safetensors models into GPU or host memory with "
		"libweightfs, and print\n"
		"how long it took, the throughput and which path the bytes "
		"took.\n"
		"\n"
		"Each PATH is a .safetensors file or a model directory "
		"(model.safetensors.index.json\n"
		"is honoured; without it every *.safetensors file in the "
		"directory is loaded).\n"
		"\n"
		"Options:\n"
		"  -d, --device=DEV      where to load: cpu (default), cuda "
		"(device 0) or cuda:N\n"
		"  -D, --digest=ALGO     after timing, read every tensor "
		"back and print the digest\n"
		"                        of its raw bytes: sha256 or xxh3\n"
		"  -j, --json            print one JSON object: {\"path\", "
		"\"bytes\", \"seconds\",\n"
		"                        \"gbps\" (the transfer; start-up "
		"apart, in\n"
		"                        \"startup_seconds\": opening, CUDA "
		"context, allocations),\n"
		"                        \"loader_bytes_copied\" (by this "
		"process's CPU),\n"
		"                        \"daemon_bytes_copied\" (by the "
		"weightfs daemon, -1 off a\n"
		"                        mount), \"threads\", \"staging\" "
		"(none, host, shared: pinned\n"
		"                        and shared with the daemon, "
		"host_alloc: pinned, not shared),\n"
		"                        \"direct_io_files\", \"tensors\": "
		"[{\"name\", \"dtype\", \"shape\", \"digest\"}]}\n"
		"  -t, --threads=N       reader threads (default: one per "
		"CPU, at most 16)\n"
		"  -s, --staging=SIZE    staging memory for all threads "
		"together (default 256M)\n"
		"  -c, --chunk=SIZE      bytes per read (default 8M)\n"
		"      --direct-io=WHEN  read with O_DIRECT: auto (default: on "
		"a GPU, for files\n"
		"                        mostly not in the page cache), "
		"never, always\n"
		"      --tensors=GLOB    load only the tensors whose names "
		"match GLOB (repeat:\n"
		"                        any of them)\n"
		"      --shard=RANK/WORLD  load shard RANK of WORLD equal "
		"shards of each tensor\n"
		"                        along the dim --shard-dim gives "
		"(default: dim 0 of\n"
		"                        every tensor; tensors with too few "
		"dims are loaded whole)\n"
		"      --shard-dim=GLOB=DIM  with --shard: tensors matching "
		"GLOB are cut along\n"
		"                        DIM (repeat; the first match wins; "
		"tensors matching none\n"
		"                        are loaded whole)\n"
		"      --slice=GLOB=DIM:START:LEN  load indexes [START, "
		"START+LEN) of DIM of the\n"
		"                        tensors matching GLOB (slice and "
		"--shard-dim rules: the first\n                        that "
		"matches, in the order given)\n"
		"  -q, --quiet           no progress display\n"
		"  -h, --help            print this help and exit\n"
		"  -V, --version         print the version and exit\n"
		"\n"
		"SIZE takes a K, M or G suffix (powers of 1024). "
		"\"seconds\" covers opening\n"
		"(header parsing) and loading, summed over all PATHs; "
		"digests are computed after.\n"
		"On a weightfs mount the bytes come from the daemon's cache "
		"over its socket\n"
		"(\"path\": \"fastpath\"), not through the page cache; "
		"WEIGHTFS_FASTPATH=0\n"
		"reads the files instead (\"direct\"). The host destination "
		"is on huge pages\n"
		"where the system has them free; WEIGHTFS_HUGETLB=0 keeps it "
		"off them.\n"
		"Exit status: 0 on success, 1 if a model failed to load, 2 "
		"on a usage error.\n");
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(void *arg, uint64_t done, uint64_t total)
{
	const char *path = arg;

	if (total < (256u << 20))
		return;
	fprintf(stderr, "\r%s: %3.0f%% %.2f / %.2f GB", path,
		100.0 * (double)done / (double)total, (double)done / 1e9,
		(double)total / 1e9);
	if (done == total)
		fprintf(stderr, "\r\033[K");
	fflush(stderr);
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static int tensor_digest(const struct wfs_model *m, size_t i,
			 enum digest_algo algo, char *buf,
			 char hex[DIGEST_HEX_MAX])
{
	const struct wfs_tensor *t = wfs_model_tensor(m, i);
	struct digest *d = NULL;
	int r = digest_new(algo, &d);

	for (uint64_t off = 0; r == 0 && off < t->nbytes;) {
		size_t n = t->nbytes - off < READ_BACK ? t->nbytes - off
						       : READ_BACK;

		r = wfs_model_read(m, i, off, buf, n);
		if (r == 0)
			r = digest_update(d, buf, n);
		off += n;
	}
	if (r == 0)
		r = digest_final(d, hex);
	digest_free(d);
	return r;
}

/* Print the tensors of @m: JSON array entries, or one line each. */
static int print_tensors(FILE *out, const struct wfs_model *m,
			 const struct args *a, bool *first, char *buf)
{
	char hex[DIGEST_HEX_MAX];

	for (size_t i = 0; i < wfs_model_tensor_count(m); i++) {
		const struct wfs_tensor *t = wfs_model_tensor(m, i);
		int r = 0;

		if (a->have_digest) {
			r = tensor_digest(m, i, a->digest, buf, hex);
			if (r < 0) {
				fprintf(stderr, "weightfs-load: %s: %s\n",
					t->name, wfs_last_error());
				return r;
			}
		}
		if (!a->json) {
			if (!a->have_digest)
				continue;
			fprintf(out, "%s:%s  %s  %s  [", digest_name(a->digest),
				hex, t->name, wfs_dtype_name(t->dtype));
		} else {
			fprintf(out, "%s{\"name\": ", *first ? "" : ", ");
			json_string(out, t->name);
			fprintf(out, ", \"dtype\": \"%s\", \"shape\": [",
				wfs_dtype_name(t->dtype));
		}
		for (unsigned k = 0; k < t->ndim; k++)
			fprintf(out, "%s%llu", k ? ", " : "",
				(unsigned long long)t->shape[k]);
		if (!a->json)
			fprintf(out, "]\n");
		else if (a->have_digest)
			fprintf(out, "], \"digest\": \"%s:%s\"}",
				digest_name(a->digest), hex);
		else
			fprintf(out, "]}");
		*first = false;
	}
	return 0;
}

/* "GLOB=REST": split at the last '=' (a glob may hold one). */
static char *split_eq(char *s)
{
	char *eq = strrchr(s, '=');

	if (!eq || eq == s)
		return NULL;
	*eq = '\0';
	return eq + 1;
}

static int bad(const char *opt, const char *v, const char *want)
{
	fprintf(stderr, "weightfs-load: bad --%s '%s' (%s)\n", opt, v, want);
	return -EINVAL;
}

/* --tensors, --shard, --shard-dim, --slice into a->sel. --shard-dim rules
 * need the rank, so --shard comes first or they wait: kept as given and
 * added when --shard is known (rules keep their order). */
static int select_arg(struct args *a, int c, const char *val)
{
	char *arg = strdup(val), *rest, *end;
	unsigned long long x, y, z;
	int r = -EINVAL;

	if (!arg || (!a->sel && wfs_select_new(&a->sel) < 0)) {
		free(arg);
		fprintf(stderr, "weightfs-load: out of memory\n");
		return -ENOMEM;
	}
	switch (c) {
	case 'T':
		r = wfs_select_name(a->sel, arg);
		break;
	case 'S':
		if (a->world || sscanf(arg, "%llu/%llu", &x, &y) != 2 || !y ||
		    x >= y || strchr(arg, '-')) {
			r = bad("shard", val, "RANK/WORLD, RANK < WORLD, once");
			break;
		}
		a->rank = x;
		a->world = y;
		r = 0;
		break;
	case 'M':
		rest = split_eq(arg);
		errno = 0;
		x = rest ? strtoull(rest, &end, 10) : 0;
		if (!rest || !*rest || errno || *end || x > 64) {
			r = bad("shard-dim", val, "GLOB=DIM");
			break;
		}
		if (!a->world) {
			r = bad("shard-dim", val, "after --shard");
			break;
		}
		r = wfs_select_shard(a->sel, arg, (unsigned)x, a->rank,
				     a->world);
		a->nshard_dims++;
		break;
	case 'L':
		rest = split_eq(arg);
		if (!rest || sscanf(rest, "%llu:%llu:%llu", &x, &y, &z) != 3 ||
		    strchr(rest, '-') || x > 64) {
			r = bad("slice", val, "GLOB=DIM:START:LEN");
			break;
		}
		r = wfs_select_slice(a->sel, arg, (unsigned)x, y, z);
		break;
	}
	free(arg);
	return r;
}

static int parse_args(int argc, char **argv, struct args *a)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "digest", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "threads", required_argument, NULL, 't' },
		{ "staging", required_argument, NULL, 's' },
		{ "chunk", required_argument, NULL, 'c' },
		{ "direct-io", required_argument, NULL, 'O' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "tensors", required_argument, NULL, 'T' },
		{ "shard", required_argument, NULL, 'S' },
		{ "shard-dim", required_argument, NULL, 'M' },
		{ "slice", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	uint64_t v;
	char *end;
	int c;

	wfs_load_opts_init(&a->opts, sizeof(a->opts));
	while ((c = getopt_long(argc, argv, "d:D:jt:s:c:qhV", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'd':
			if (wfs_device_parse(optarg, &a->opts.device) < 0) {
				fprintf(stderr,
					"weightfs-load: bad --device '%s' "
					"(cpu, cuda, cuda:N)\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'D':
			if (digest_parse(optarg, &a->digest) < 0) {
				fprintf(stderr,
					"weightfs-load: bad --digest '%s' "
					"(sha256, xxh3)\n",
					optarg);
				return -EINVAL;
			}
			a->have_digest = true;
			break;
		case 'j':
			a->json = true;
			break;
		case 't':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || !v || v > 1024) {
				fprintf(stderr,
					"weightfs-load: bad --threads '%s'\n",
					optarg);
				return -EINVAL;
			}
			a->opts.threads = (unsigned)v;
			break;
		case 's':
		case 'c':
			if (size_parse(optarg, &v) < 0 || !v || v > SIZE_MAX) {
				fprintf(stderr,
					"weightfs-load: bad size '%s'\n",
					optarg);
				return -EINVAL;
			}
			if (c == 's')
				a->opts.staging_bytes = (size_t)v;
			else
				a->opts.chunk_bytes = (size_t)v;
			break;
		case 'O':
			if (!strcmp(optarg, "auto")) {
				a->opts.direct_io = WFS_DIRECT_IO_AUTO;
			} else if (!strcmp(optarg, "never")) {
				a->opts.direct_io = WFS_DIRECT_IO_NEVER;
			} else if (!strcmp(optarg, "always")) {
				a->opts.direct_io = WFS_DIRECT_IO_ALWAYS;
			} else {
				fprintf(stderr,
					"weightfs-load: bad --direct-io '%s' "
					"(auto, never, always)\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'q':
			a->quiet = true;
			break;
		case 'T':
		case 'S':
		case 'M':
		case 'L':
			if (select_arg(a, c, optarg) < 0)
				return -EINVAL;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("weightfs-load %s (libweightfs %s)\n",
			       WFS_VERSION_STRING, wfs_version_string());
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (a->nshard_dims && !a->world) {
		fprintf(stderr, "weightfs-load: --shard-dim needs --shard\n");
		return -EINVAL;
	}
	if (a->world && !a->nshard_dims &&
	    wfs_select_shard(a->sel, "*", 0, a->rank, a->world) < 0)
		return -ENOMEM;
	if (optind >= argc) {
		fprintf(stderr, "weightfs-load: no PATH given\n");
		usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/*
 * The weightfs daemon's count of bytes it copied to loaders over the fast
 * path, from the stats of the mount that @path is on (the root of the
 * mount: the top directory on the same device), or -1 when unknown.
 */
static long long daemon_copied(const char *path)
{
	char *dir = realpath(path, NULL), buf[8192];
	const char *k;
	struct stat st, up;
	long long v = -1;
	ssize_t n;

	if (!dir || stat(dir, &st) < 0) {
		free(dir);
		return -1;
	}
	for (;;) {
		char *slash = strrchr(dir, '/');

		if (!slash || slash == dir)
			break;
		*slash = '\0';
		if (stat(dir, &up) < 0 || up.st_dev != st.st_dev) {
			*slash = '/';
			break;
		}
	}
	n = getxattr(dir, "user.weightfs.stats", buf, sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = '\0';
		k = strstr(buf, "\"fastpath_bytes_copied\": ");
		if (k)
			v = strtoll(k + 25, NULL, 10);
	}
	free(dir);
	return v;
}

static const char *staging_name(enum wfs_staging s)
{
	switch (s) {
	case WFS_STAGING_NONE:
		return "none";
	case WFS_STAGING_HOST:
		return "host";
	case WFS_STAGING_SHARED:
		return "shared";
	case WFS_STAGING_HOST_ALLOC:
		return "host_alloc";
	}
	return "?";
}

int main(int argc, char **argv)
{
	struct args a = { 0 };
	char *list = NULL, *buf = NULL;
	size_t list_len = 0, ntensors = 0;
	uint64_t bytes = 0;
	double seconds = 0, startup = 0;
	enum wfs_path path = WFS_PATH_DIRECT;
	unsigned threads = 0, direct_files = 0;
	enum wfs_staging staging = WFS_STAGING_NONE;
	uint64_t copied = 0;
	long long daemon_before = -1, daemon_after = -1;
	bool first = true;
	FILE *out;
	int status = 0;

	if (parse_args(argc, argv, &a) < 0) {
		wfs_select_free(a.sel);
		return 2;
	}
	out = a.json ? open_memstream(&list, &list_len) : stdout;
	buf = malloc(READ_BACK);
	if (!out || !buf) {
		fprintf(stderr, "weightfs-load: out of memory\n");
		wfs_select_free(a.sel);
		return 1;
	}
	for (int i = optind; i < argc; i++) {
		struct wfs_model *m = NULL;
		double t0 = now();
		int r;

		a.opts.progress =
			!a.json && !a.quiet && isatty(2) ? progress : NULL;
		a.opts.progress_arg = argv[i];
		r = wfs_model_open(argv[i], &m);
		if (a.json && r == 0 && i == optind)
			daemon_before = daemon_copied(argv[i]);
		if (r == 0 && a.sel)
			r = wfs_model_select(m, a.sel);
		if (r == 0)
			r = wfs_model_load(m, &a.opts);
		if (r < 0) {
			fprintf(stderr, "weightfs-load: %s\n",
				wfs_last_error());
			wfs_model_free(m);
			status = 1;
			break;
		}
		/* The transfer alone: CUDA context creation, allocations and
		 * opening the files are start-up, reported apart. */
		seconds += wfs_model_stats(m)->seconds -
			   wfs_model_stats(m)->setup_seconds;
		startup += now() - t0 -
			   (wfs_model_stats(m)->seconds -
			    wfs_model_stats(m)->setup_seconds);
		bytes += wfs_model_stats(m)->bytes;
		path = wfs_model_stats(m)->path;
		threads = wfs_model_stats(m)->threads;
		staging = wfs_model_stats(m)->staging;
		direct_files += wfs_model_stats(m)->direct_io_files;
		copied += wfs_model_stats(m)->bytes_copied;
		if (a.json && i == argc - 1)
			daemon_after = daemon_copied(argv[i]);
		ntensors += wfs_model_tensor_count(m);
		r = print_tensors(out, m, &a, &first, buf);
		wfs_model_free(m);
		if (r < 0) {
			status = 1;
			break;
		}
	}
	if (a.json)
		fclose(out);
	if (status == 0 && a.json) {
		printf("{\"path\": \"%s\", \"bytes\": %llu, \"seconds\": %.6f, "
		       "\"gbps\": %.4f, \"startup_seconds\": %.6f, "
		       "\"loader_bytes_copied\": %llu, "
		       "\"daemon_bytes_copied\": %lld, \"threads\": %u, "
		       "\"staging\": \"%s\", \"direct_io_files\": %u, "
		       "\"tensors\": [%s]}\n",
		       path == WFS_PATH_FASTPATH ? "fastpath" : "direct",
		       (unsigned long long)bytes, seconds,
		       seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0,
		       startup, (unsigned long long)copied,
		       daemon_before >= 0 && daemon_after >= daemon_before
			       ? daemon_after - daemon_before
			       : -1LL,
		       threads, staging_name(staging), direct_files,
		       list ? list : "");
	} else if (status == 0) {
		printf("loaded %zu tensors, %.3f GB in %.3f s: %.2f GB/s "
		       "(start-up %.3f s apart; path: %s, %u threads, device "
		       "%s)\n",
		       ntensors, (double)bytes / 1e9, seconds,
		       seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0,
		       startup,
		       path == WFS_PATH_FASTPATH ? "fastpath" : "direct",
		       threads,
		       a.opts.device == WFS_DEVICE_CPU ? "cpu" : "cuda");
	}
	/* The pinned staging kept between loads: unpinned before exit, as
	 * a long-lived caller would (and leak checks expect). */
	wfs_release_staging();
	free(list);
	free(buf);
	wfs_select_free(a.sel);
	return status;
}
