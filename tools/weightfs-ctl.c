/* weightfs-ctl: talk to a running weightfs mount. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ctl_prom.h"
#include "size.h"
#include "wire.h"
#include "wire_client.h"

#define EXIT_USAGE 2
#define CHUNK (64u << 20)

static const char usage[] =
	"usage: weightfs-ctl stats [--prometheus] MOUNTPOINT...\n"
	"       weightfs-ctl prefetch PATH...\n"
	"       weightfs-ctl evict PATH...\n"
	"       weightfs-ctl verify PATH...\n"
	"\n"
	"  stats MOUNTPOINT   print the mount's counters as JSON: "
	"bytes_fetched,\n"
	"                     requests, retries, errors, cache_hits, "
	"cache_misses,\n"
	"                     cache_evictions, cache_bytes, cache_mem,\n"
	"                     prefetched_blocks, reads, bytes_read, "
	"objects_changed,\n"
	"                     fastpath_bytes_copied, disk_hits, disk_misses,\n"
	"                     disk_bytes, disk_writes, disk_evictions,\n"
	"                     disk_corrupt, disk_errors, files_verified,\n"
	"                     verify_failed, errors by class:\n"
	"                     errors_stale, errors_gone, errors_protocol,\n"
	"                     errors_timeout, errors_auth, errors_other\n"
	"    --prometheus     instead, the Prometheus text format (for\n"
	"                     node_exporter's textfile collector): counters\n"
	"                     weightfs_KEY_total, gauges weightfs_cache_bytes "
	"and\n"
	"                     weightfs_cache_mem_bytes, the histogram\n"
	"                     weightfs_fetch_seconds (range request latency),\n"
	"                     a label mountpoint\n"
	"  prefetch PATH...   bring files (directories: every file below) into "
	"the\n"
	"                     daemon's block cache, without filling the "
	"kernel's\n"
	"                     page cache; a progress line on a terminal.\n"
	"                     With a disk tier (-o cache_dir) it stages them\n"
	"                     on disk instead: blocks already there are\n"
	"                     skipped, the others written to disk and not\n"
	"                     kept in memory\n"
	"  evict PATH...      drop files from the daemon's cache (blocks "
	"waiting\n"
	"                     to be written to disk: once written) and the "
	"kernel's\n"
	"                     page cache\n"
	"  verify PATH...     read files (directories: every file below) "
	"through\n"
	"                     the mount and check each against the SHA-256 "
	"its\n"
	"                     source lists (xattr user.weightfs.sha256: "
	"hf://\n"
	"                     LFS files); a progress line on a terminal, "
	"one\n"
	"                     line per file: OK, MISMATCH, or no checksum\n"
	"  -h, --help         this help\n"
	"\n"
	"Exit status: 0 done, 1 a path failed (verify: a mismatch or a read\n"
	"error), 2 usage.\n";

/* The stats JSON of @mnt into @buf; 0, or 1 said on stderr. */
static int read_stats(const char *mnt, char *buf, size_t len)
{
	ssize_t n = getxattr(mnt, "user.weightfs.stats", buf, len - 1);

	if (n < 0) {
		if (errno == ENODATA || errno == ENOTSUP)
			fprintf(stderr,
				"weightfs-ctl: %s is not a weightfs "
				"mount\n",
				mnt);
		else
			fprintf(stderr, "weightfs-ctl: %s: %s\n", mnt,
				strerror(errno));
		return 1;
	}
	buf[n] = '\0';
	return 0;
}

static int stats(char **mnts, int n)
{
	static char bufs[64][8192];
	const char *jsons[64];
	bool prom = n > 0 && !strcmp(mnts[0], "--prometheus");

	if (prom) {
		mnts++;
		n--;
	}
	if (n < 1 || n > 64 || (!prom && n != 1)) {
		fprintf(stderr, "%s", usage);
		return EXIT_USAGE;
	}
	for (int i = 0; i < n; i++) {
		if (read_stats(mnts[i], bufs[i], sizeof(bufs[i])))
			return 1;
		jsons[i] = bufs[i];
	}
	if (!prom) {
		printf("%s\n", bufs[0]);
		return 0;
	}
	return prom_write(stdout, jsons, (const char *const *)mnts, n) ? 1 : 0;
}

/* One connection, kept while consecutive files are on the same mount. */
static struct {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int fd;
} conn = { .fd = -1 };

static int connect_for(int file_fd)
{
	char sock[sizeof(conn.path)];
	int err = wire_socket_of(file_fd, sock, sizeof(sock));

	if (err < 0)
		return err;
	if (conn.fd >= 0 && !strcmp(sock, conn.path))
		return 0;
	if (conn.fd >= 0)
		close(conn.fd);
	conn.fd = -1;
	err = wire_connect(sock, file_fd, &conn.fd);
	if (err == 0)
		memcpy(conn.path, sock, sizeof(sock));
	return err;
}

static bool show_progress;
static bool evicting;
static bool verifying;
static int failures;
static uint64_t tag;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress(const char *path, uint64_t done, uint64_t size, double t0,
		     bool last)
{
	char a[32], b[32];
	double dt = now() - t0;

	if (!show_progress)
		return;
	size_format(done, a, sizeof(a));
	size_format(size, b, sizeof(b));
	fprintf(stderr, "\r\033[K%s %s: %s / %s (%.0f%%) %.2f GB/s%s",
		verifying ? "verify" : "prefetch", path, a, b,
		size ? 100.0 * (double)done / (double)size : 100.0,
		dt > 0 ? (double)done / dt / 1e9 : 0.0, last ? "\n" : "");
}

static int one_file(const char *path)
{
	struct wire_read rq = { .h = { WIRE_MAGIC, WIRE_PREFETCH, 0 } };
	struct stat st;
	double t0 = now();
	int fd = open(path, O_RDONLY | O_CLOEXEC), err;

	if (fd < 0 || fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	err = connect_for(fd);
	if (err < 0)
		goto out;
	/* The daemon serves only files we show it we could open. */
	err = wire_grant(conn.fd, fd, &rq.ino);
	if (err < 0)
		goto out;
	if (evicting) {
		rq.h.type = WIRE_EVICT;
		rq.h.tag = ++tag;
		err = wire_roundtrip(conn.fd, &rq, sizeof(rq), -1);
		if (!err && rq.result < 0)
			err = (int)rq.result;
		goto out;
	}
	for (rq.off = 0; rq.off < (uint64_t)st.st_size; rq.off += CHUNK) {
		rq.h.type = WIRE_PREFETCH;
		rq.h.tag = ++tag;
		rq.len = CHUNK;
		err = wire_roundtrip(conn.fd, &rq, sizeof(rq), -1);
		if (!err && rq.result < 0)
			err = (int)rq.result;
		if (err)
			break;
		progress(path, rq.off + (uint64_t)rq.result,
			 (uint64_t)st.st_size, t0, false);
	}
	if (!err)
		progress(path, (uint64_t)st.st_size, (uint64_t)st.st_size, t0,
			 true);
out:
	if (fd >= 0)
		close(fd);
	if (err) {
		if (show_progress)
			fputc('\n', stderr);
		fprintf(stderr, "weightfs-ctl: %s: %s\n", path,
			err == -ENOTSUP		  ? "not on a weightfs mount"
			: err == -EPROTONOSUPPORT ? "the daemon is too old"
			: err == -EPIPE ? "the daemon does not support this"
			: err == -EPERM ? "only the mount's owner or root may"
					: strerror(-err));
		failures++;
	}
	return 0;
}

/* Read @path whole and compare its SHA-256 with the one its source
 * lists: what a reader of the mount gets, checked. */
static int verify_file(const char *path)
{
	static char buf[8u << 20];
	unsigned char md[EVP_MAX_MD_SIZE];
	char want[80], got[2 * EVP_MAX_MD_SIZE + 1];
	EVP_MD_CTX *ctx = NULL;
	uint64_t done = 0;
	unsigned mdlen = 0;
	double t0 = now();
	struct stat st;
	ssize_t n;
	int fd = -1, err = 0;

	n = getxattr(path, "user.weightfs.sha256", want, sizeof(want) - 1);
	if (n < 0) {
		if (errno != ENODATA) {
			err = -errno;
			goto out;
		}
		printf("%s: no checksum\n", path);
		return 0;
	}
	want[n] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ctx = EVP_MD_CTX_new();
	if (fd < 0 || fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		err = -ENOMEM;
		goto out;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		done += (uint64_t)n;
		progress(path, done, (uint64_t)st.st_size, t0, false);
	}
	if (n < 0) {
		err = -errno;
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(got + 2 * i, 3, "%02x", md[i]);
	progress(path, done, (uint64_t)st.st_size, t0, true);
	if (strcasecmp(got, want)) {
		printf("%s: MISMATCH (expected %s, read %s)\n", path, want,
		       got);
		failures++;
	} else {
		printf("%s: OK\n", path);
	}
	fflush(stdout);
out:
	EVP_MD_CTX_free(ctx);
	if (fd >= 0)
		close(fd);
	if (err) {
		if (show_progress)
			fputc('\n', stderr);
		fprintf(stderr, "weightfs-ctl: %s: %s\n", path, strerror(-err));
		failures++;
	}
	return 0;
}

static int walk_one(const char *path, const struct stat *st, int type,
		    struct FTW *ftw)
{
	if (type == FTW_F && S_ISREG(st->st_mode))
		(verifying ? verify_file : one_file)(path);
	return 0;
}

static int files(char **paths, int n)
{
	int i;

	show_progress = !evicting && isatty(STDERR_FILENO);
	for (i = 0; i < n; i++) {
		char sock[sizeof(conn.path)];
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC), err;

		/* Say once that a whole tree is not on a mount. */
		err = fd < 0 ? -errno : wire_socket_of(fd, sock, sizeof(sock));
		if (fd >= 0)
			close(fd);
		if (err < 0) {
			fprintf(stderr, "weightfs-ctl: %s: %s\n", paths[i],
				err == -ENOTSUP ? "not on a weightfs mount"
						: strerror(-err));
			failures++;
			continue;
		}
		if (nftw(paths[i], walk_one, 16, FTW_PHYS) < 0) {
			fprintf(stderr, "weightfs-ctl: %s: %s\n", paths[i],
				strerror(errno));
			failures++;
		}
	}
	if (conn.fd >= 0)
		close(conn.fd);
	return failures ? 1 : 0;
}

int main(int argc, char *argv[])
{
	if (argc >= 2 &&
	    (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc >= 3 && !strcmp(argv[1], "stats"))
		return stats(argv + 2, argc - 2);
	if (argc >= 3 && !strcmp(argv[1], "prefetch"))
		return files(argv + 2, argc - 2);
	if (argc >= 3 && !strcmp(argv[1], "verify")) {
		verifying = true;
		return files(argv + 2, argc - 2);
	}
	if (argc >= 3 && !strcmp(argv[1], "evict")) {
		evicting = true;
		return files(argv + 2, argc - 2);
	}
	fputs(usage, stderr);
	return EXIT_USAGE;
}
