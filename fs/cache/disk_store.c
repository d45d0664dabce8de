/* The disk tier's store: the on-disk format (keys, paths, the header),
 * reads that verify, writes through a temporary file and rename, and the
 * budget (scan, LRU eviction). The contract is in disk_cache.h; the filler
 * that puts the store in front of the source is disk_cache.c. */
#include "disk_cache.h"
#include "disk_cache_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "log.h"
#include "stats.h"

#define HDR_SIZE 4096
#define ALIGN 4096
/* Version 2 added sealed blocks (sealed, tag). Its keys are made with
 * another label, so files of version 1 are never looked up: they are
 * evicted as the least recently used. */
#define MAGIC "WFSBLK02"
#define SUBDIR "wfs1"
#define TMP_PREFIX ".tmp."
#define TMP_STALE_S 600	 /* a temporary file this old is a dead writer's */
#define RESCAN_WRITES 64 /* rescan DIR this often: other mounts write too */
#define TOUCH_S 1	 /* a hit moves its file's mtime when older than this */

struct disk_hdr {
	char magic[8];
	unsigned char key[16];
	uint64_t len;
	uint64_t data_hash; /* XXH3-64 of the len bytes that follow */
	uint8_t sealed;	    /* 1: they are sealed (struct disk_sealer) */
	uint8_t zero[7];
	unsigned char tag[DISK_TAG_SIZE]; /* theirs, when sealed; else 0 */
	uint64_t hdr_hash;		  /* XXH3-64 of the fields above */
};

static void put_u64(XXH3_state_t *st, uint64_t v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	XXH3_128bits_update(st, b, sizeof(b));
}

void disk_key_make(const char *source_id, const char *path, const char *version,
		   uint64_t size, int64_t mtime_s, uint64_t block_size,
		   uint64_t index, struct disk_key *ret)
{
	XXH3_state_t st;
	XXH128_canonical_t c;

	XXH3_128bits_reset(&st);
	XXH3_128bits_update(&st, "weightfs-disk-v2", 17);
	XXH3_128bits_update(&st, source_id, strlen(source_id) + 1);
	XXH3_128bits_update(&st, path, strlen(path) + 1);
	XXH3_128bits_update(&st, version ? "E" : "-", 1);
	if (version)
		XXH3_128bits_update(&st, version, strlen(version) + 1);
	put_u64(&st, size);
	put_u64(&st, (uint64_t)mtime_s);
	put_u64(&st, block_size);
	put_u64(&st, index);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
	memcpy(ret->h, c.digest, sizeof(ret->h));
}

void disk_key_path(const struct disk_cache *dc, const struct disk_key *k,
		   char *buf, size_t len)
{
	char hex[33];
	int i;

	for (i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", k->h[i]);
	snprintf(buf, len, "%s/%.2s/%s.blk", dc->dir, hex, hex);
}

static uint64_t hdr_hash(const struct disk_hdr *h)
{
	return XXH3_64bits(h, offsetof(struct disk_hdr, hdr_hash));
}

static size_t round_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static bool aligned(const void *p)
{
	return ((uintptr_t)p & (ALIGN - 1)) == 0;
}

/* Once: say why the tier no longer writes. */
static void warn_once(struct disk_cache *dc, bool *flag, const char *what,
		      int err)
{
	bool say;

	pthread_mutex_lock(&dc->wlock);
	say = !*flag;
	*flag = true;
	pthread_mutex_unlock(&dc->wlock);
	if (say)
		log_warn("disk cache %s: %s (%s); reads go to the source",
			 dc->dir, what, strerror(err));
}

int disk_store_open(struct disk_cache *dc, const char *dir)
{
	char probe[4200];
	int fd;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		struct stat st;

		if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			return -errno ? -errno : -ENOTDIR;
	}
	if (asprintf(&dc->dir, "%s/" SUBDIR, dir) < 0) {
		dc->dir = NULL;
		return -ENOMEM;
	}
	if (mkdir(dc->dir, 0755) < 0 && errno != EEXIST) {
		atomic_store(&dc->read_only, true);
		warn_once(dc, &dc->warned_error, "cannot be written", errno);
	}
	/* Does this filesystem take O_DIRECT (tmpfs before 6.6 does not)? */
	snprintf(probe, sizeof(probe), "%s/" TMP_PREFIX "probe.%d", dc->dir,
		 (int)getpid());
	fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC,
		  0644);
	if (fd >= 0) {
		dc->direct_ok = true;
		close(fd);
		unlink(probe);
	} else if (errno == EROFS || errno == EACCES || errno == EPERM) {
		if (!atomic_load(&dc->read_only)) {
			atomic_store(&dc->read_only, true);
			warn_once(dc, &dc->warned_error, "cannot be written",
				  errno);
		}
		/* Reads only: assume O_DIRECT, fall back per open. */
		dc->direct_ok = true;
	}
	return 0;
}

/* Read the header into @hdr (HDR_SIZE bytes) and up to @req bytes of data
 * into @buf, stopping once @need data bytes arrived or at end of file (an
 * O_DIRECT read past the end is short; reading again at the unaligned end
 * would fail). @return bytes read, header included, or a negative errno. */
static ssize_t read_block(int fd, char *hdr, char *buf, size_t req, size_t need)
{
	size_t done = 0;

	while (done < HDR_SIZE + need) {
		struct iovec iov[2];
		int niov = 0;
		ssize_t n;

		if (done < HDR_SIZE) {
			iov[niov].iov_base = hdr + done;
			iov[niov++].iov_len = HDR_SIZE - done;
			iov[niov].iov_base = buf;
			iov[niov++].iov_len = req;
		} else {
			iov[niov].iov_base = buf + (done - HDR_SIZE);
			iov[niov++].iov_len = req - (done - HDR_SIZE);
		}
		n = preadv(fd, iov, niov, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int open_block(struct disk_cache *dc, const char *path, bool direct)
{
	int fd = -1;

	if (direct && dc->direct_ok) {
		fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
		if (fd >= 0 || errno != EINVAL)
			return fd;
	}
	return open(path, O_RDONLY | O_CLOEXEC);
}

int disk_cache_read(struct disk_cache *dc, const struct disk_key *key,
		    void *buf, size_t cap, size_t len,
		    const struct disk_sealer *sealer)
{
	char path[4200];
	union {
		struct disk_hdr h;
		char raw[HDR_SIZE];
	} hdr __attribute__((aligned(ALIGN)));
	bool direct = aligned(buf) && round_up(len) <= cap;
	struct stat st;
	ssize_t n;
	int fd, err = 0, flags;

	disk_key_path(dc, key, path, sizeof(path));
	fd = open_block(dc, path, direct);
	if (fd < 0) {
		err = -errno;
		STAT_ADD(disk_misses, 1);
		if (err != -ENOENT) {
			STAT_ADD(disk_errors, 1);
			return err;
		}
		return -ENOENT;
	}
	flags = fcntl(fd, F_GETFL);
	direct = flags >= 0 && (flags & O_DIRECT);
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto io_error;
	}
	if ((uint64_t)st.st_size != HDR_SIZE + (uint64_t)len)
		goto corrupt; /* torn, truncated, or another length */
	/* Header and data in one request (one I/O round trip). */
	n = read_block(fd, hdr.raw, buf, direct ? round_up(len) : len, len);
	if (n < 0) {
		err = (int)n;
		goto io_error;
	}
	if ((size_t)n < HDR_SIZE || memcmp(hdr.h.magic, MAGIC, 8) ||
	    hdr.h.hdr_hash != hdr_hash(&hdr.h) ||
	    memcmp(hdr.h.key, key->h, sizeof(key->h)) || hdr.h.len != len ||
	    hdr.h.sealed != (sealer != NULL))
		goto corrupt;
	n -= HDR_SIZE;
	if ((size_t)n < len || XXH3_64bits(buf, len) != hdr.h.data_hash)
		goto corrupt;
	if (sealer) {
		err = sealer->open(sealer, buf, len, hdr.h.tag);
		if (err == -EACCES) { /* not ours to open: kept */
			close(fd);
			STAT_ADD(disk_misses, 1);
			return err;
		}
		if (err)
			goto corrupt;
	}
	if (!direct)
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	/* Last use, for LRU eviction (a second's precision is plenty, and
	 * spares an inode write per read); a read-only DIR keeps its order. */
	if (time(NULL) - st.st_mtime >= TOUCH_S)
		futimens(fd, NULL);
	close(fd);
	STAT_ADD(disk_hits, 1);
	STAT_ADD(disk_bytes, len);
	return 0;
corrupt:
	close(fd);
	unlink(path);
	STAT_ADD(disk_corrupt, 1);
	STAT_ADD(disk_misses, 1);
	return -EBADMSG;
io_error:
	close(fd);
	STAT_ADD(disk_errors, 1);
	STAT_ADD(disk_misses, 1);
	return err;
}

/* ---- eviction ---- */

struct entry {
	char *path;
	uint64_t size;
	struct timespec used;
};

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->used.tv_sec != y->used.tv_sec)
		return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
	if (x->used.tv_nsec != y->used.tv_nsec)
		return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
	return 0;
}

/* Every block file under DIR into *ret (malloc'd, *ret_n of them);
 * temporary files of dead writers are removed on the way.
 * @return total bytes. */
static uint64_t scan(struct disk_cache *dc, struct entry **ret, size_t *ret_n)
{
	struct entry *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	time_t now = time(NULL);
	DIR *top = opendir(dc->dir);
	struct dirent *de;

	while (top && (de = readdir(top))) {
		char sub[4200];
		DIR *d;
		struct dirent *fe;

		if (de->d_name[0] == '.' || strlen(de->d_name) != 2)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dc->dir, de->d_name);
		d = opendir(sub);
		while (d && (fe = readdir(d))) {
			char path[4500];
			struct stat st;
			bool tmp = !strncmp(fe->d_name, TMP_PREFIX,
					    strlen(TMP_PREFIX));
			size_t nl = strlen(fe->d_name);

			if (!tmp &&
			    (nl < 4 || strcmp(fe->d_name + nl - 4, ".blk")))
				continue;
			snprintf(path, sizeof(path), "%s/%s", sub, fe->d_name);
			if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
				continue;
			if (tmp) {
				if (now - st.st_mtime > TMP_STALE_S)
					unlink(path);
				else
					total += (uint64_t)st.st_size;
				continue;
			}
			total += (uint64_t)st.st_size;
			if (!ret)
				continue;
			if (n == cap) {
				size_t nc = cap ? 2 * cap : 256;
				struct entry *nv = realloc(v, nc * sizeof(*v));

				if (!nv)
					continue;
				v = nv;
				cap = nc;
			}
			v[n].path = strdup(path);
			if (!v[n].path)
				continue;
			v[n].size = (uint64_t)st.st_size;
			v[n].used = st.st_mtim;
			n++;
		}
		if (d)
			closedir(d);
	}
	if (top)
		closedir(top);
	if (ret) {
		*ret = v;
		*ret_n = n;
	}
	return total;
}

uint64_t disk_cache_used(struct disk_cache *dc)
{
	return scan(dc, NULL, NULL);
}

/* Make room for @need bytes: rescan DIR, and unlink least recently used
 * block files until used + need fits the budget. Called with wlock. */
static void make_room(struct disk_cache *dc, uint64_t need)
{
	struct entry *v = NULL;
	size_t n = 0, i;

	dc->used = scan(dc, &v, &n);
	dc->scanned = true;
	dc->writes_since_scan = 0;
	if (dc->used + need > dc->budget) {
		qsort(v, n, sizeof(*v), entry_cmp);
		for (i = 0; i < n && dc->used + need > dc->budget; i++) {
			if (unlink(v[i].path) == 0 || errno == ENOENT) {
				dc->used -= v[i].size < dc->used ? v[i].size
								 : dc->used;
				STAT_ADD(disk_evictions, 1);
			}
		}
	}
	for (i = 0; i < n; i++)
		free(v[i].path);
	free(v);
}

/* ---- writing ---- */

static int write_file(struct disk_cache *dc, const char *tmp,
		      const struct disk_hdr *hdr, const void *buf, size_t cap,
		      size_t len)
{
	union {
		struct disk_hdr h;
		char raw[HDR_SIZE];
	} page __attribute__((aligned(ALIGN)));
	bool direct = dc->direct_ok && aligned(buf) && round_up(len) <= cap;
	ssize_t n;
	int fd = -1, err = 0;

	memset(page.raw, 0, sizeof(page.raw));
	page.h = *hdr;
	if (direct) {
		fd = open(tmp,
			  O_WRONLY | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC,
			  0644);
		if (fd < 0 && errno == EINVAL)
			direct = false;
		else if (fd < 0)
			return -errno;
	}
	if (!direct) {
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
	}
	n = pwrite(fd, page.raw, HDR_SIZE, 0);
	if (n != HDR_SIZE) {
		err = n < 0 ? -errno : -ENOSPC;
		goto out;
	}
	/* O_DIRECT writes whole pages; the slack is cut off below. */
	n = pwrite(fd, buf, direct ? round_up(len) : len, HDR_SIZE);
	if (n < 0 || (size_t)n < len) {
		err = n < 0 ? -errno : -ENOSPC; /* a short write: full */
		goto out;
	}
	if (direct && ftruncate(fd, HDR_SIZE + (off_t)len) < 0) {
		err = -errno;
		goto out;
	}
	if (!direct)
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
out:
	if (close(fd) < 0 && !err)
		err = -errno;
	return err;
}

/* disk_cache_write() of @len bytes @buf as they are; sealed when @tag
 * (DISK_TAG_SIZE bytes) is not NULL. */
static int write_block(struct disk_cache *dc, const struct disk_key *key,
		       const void *buf, size_t cap, size_t len,
		       const unsigned char *tag)
{
	char path[4200], tmp[4300];
	struct disk_hdr hdr;
	uint64_t need = HDR_SIZE + (uint64_t)len;
	char *slash;
	bool too_big;
	int err;

	if (atomic_load(&dc->read_only))
		return -EROFS;
	pthread_mutex_lock(&dc->wlock); /* a full disk shrinks the budget */
	too_big = need > dc->budget;
	pthread_mutex_unlock(&dc->wlock);
	if (too_big)
		return -EFBIG;
	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.magic, MAGIC, 8);
	memcpy(hdr.key, key->h, sizeof(hdr.key));
	hdr.len = len;
	hdr.data_hash = XXH3_64bits(buf, len);
	if (tag) {
		hdr.sealed = 1;
		memcpy(hdr.tag, tag, DISK_TAG_SIZE);
	}
	hdr.hdr_hash = hdr_hash(&hdr);
	disk_key_path(dc, key, path, sizeof(path));
	slash = strrchr(path, '/');
	snprintf(tmp, sizeof(tmp), "%.*s/" TMP_PREFIX "%d.%" PRIuFAST64,
		 (int)(slash - path), path, (int)getpid(),
		 atomic_fetch_add(&dc->tmp_seq, 1));

	pthread_mutex_lock(&dc->wlock);
	if (!dc->scanned || dc->writes_since_scan >= RESCAN_WRITES ||
	    dc->used + need > dc->budget)
		make_room(dc, need);
	dc->used += need; /* counted before writing: the budget holds */
	dc->writes_since_scan++;
	pthread_mutex_unlock(&dc->wlock);

	err = write_file(dc, tmp, &hdr, buf, cap, len);
	if (err == -ENOENT) {
		*slash = '\0';
		mkdir(path, 0755);
		*slash = '/';
		err = write_file(dc, tmp, &hdr, buf, cap, len);
	}
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (!err) {
		STAT_ADD(disk_writes, 1);
		return 0;
	}
	unlink(tmp);
	STAT_ADD(disk_errors, 1);
	pthread_mutex_lock(&dc->wlock);
	dc->used -= need < dc->used ? need : dc->used;
	if (err == -ENOSPC || err == -EDQUOT) {
		/* The disk holds less than the budget: the budget shrinks
		 * to what fits, and LRU eviction goes on within it. */
		dc->budget = dc->used > need ? dc->used - need : need;
		dc->scanned = false;
	}
	pthread_mutex_unlock(&dc->wlock);
	if (err == -ENOSPC || err == -EDQUOT) {
		warn_once(dc, &dc->warned_full, "is full", -err);
	} else if (err == -EROFS || err == -EACCES || err == -EPERM) {
		atomic_store(&dc->read_only, true);
		warn_once(dc, &dc->warned_error, "cannot be written", -err);
	} else {
		warn_once(dc, &dc->warned_error, "write failed", -err);
	}
	return err;
}

/* The store's block for sealed bytes, made at the first use. Under
 * seal_lock. @return it, or NULL (no memory). */
static char *seal_buf(struct disk_cache *dc)
{
	void *p;

	if (!dc->seal_buf &&
	    !posix_memalign(&p, ALIGN, round_up(dc->block_size)))
		dc->seal_buf = p;
	return dc->seal_buf;
}

int disk_cache_write(struct disk_cache *dc, const struct disk_key *key,
		     const void *buf, size_t cap, size_t len,
		     const struct disk_sealer *sealer)
{
	unsigned char tag[DISK_TAG_SIZE];
	char *sb;
	int err;

	if (!sealer)
		return write_block(dc, key, buf, cap, len, NULL);
	if (atomic_load(&dc->read_only))
		return -EROFS;
	if (len > dc->block_size)
		return -EINVAL;
	/* One block for sealed bytes, so one sealed write at a time (the
	 * writer thread makes nearly all of them). */
	pthread_mutex_lock(&dc->seal_lock);
	sb = seal_buf(dc);
	err = sb ? sealer->seal(sealer, buf, sb, len, tag) : -ENOMEM;
	if (!err)
		err = write_block(dc, key, sb, round_up(dc->block_size), len,
				  tag);
	pthread_mutex_unlock(&dc->seal_lock);
	return err;
}
