/* The disk tier's store: round trip, keys, corruption, torn files, the
 * budget, restarts, a full disk and a read-only directory; and the memory
 * cache's side of writing behind: a reader's intent outlives the writer's
 * reference, an evicted block goes once written. Sealed blocks, with a
 * stand-in sealer. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "disk_cache.h"
#include "stats.h"
#include "tree.h"

#define BS (64u << 10)
#define HDR 4096u

#define STAT(f) ((unsigned long long)atomic_load(&stats.f))

static char *buf_new(unsigned seed)
{
	unsigned char *p;
	size_t i;

	if (posix_memalign((void **)&p, 4096, BS))
		abort();
	for (i = 0; i < BS; i++)
		p[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 9));
	return (char *)p;
}

static void key(uint64_t index, const char *version, struct disk_key *k)
{
	disk_key_make("file:///src|", "dir/model.bin", version, 10 * BS, 1234,
		      BS, index, k);
}

static struct disk_cache *open_store(const char *dir, uint64_t budget)
{
	struct disk_cache_config cfg = {
		.dir = dir,
		.budget = budget,
		.block_size = BS,
		.source_id = "file:///src|",
		.max_queued = 4,
	};
	struct disk_cache *dc = NULL;
	int err = disk_cache_new(&cfg, &dc);

	CHECK(err == 0, "disk_cache_new(%s): %d", dir, err);
	return dc;
}

/* The path of @k's block file under @dir. */
static void block_path(const char *dir, const struct disk_key *k, char *out,
		       size_t len)
{
	char hex[33];
	int i;

	for (i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", k->h[i]);
	snprintf(out, len, "%s/wfs1/%.2s/%s.blk", dir, hex, hex);
}

static void rm_rf(const char *dir)
{
	char cmd[4200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static void test_round_trip_and_keys(const char *dir)
{
	struct disk_cache *dc = open_store(dir, 100 * BS);
	struct disk_key k, k2, other;
	char *in = buf_new(1), *out = buf_new(99);
	unsigned long long hits = STAT(disk_hits);
	size_t len = BS - 100; /* not a multiple of 4 KiB */
	int err;

	key(0, "\"etag-1\"", &k);
	key(0, "\"etag-1\"", &k2);
	CHECK(!memcmp(&k, &k2, sizeof(k)), "keys are deterministic");
	key(1, "\"etag-1\"", &other);
	CHECK(memcmp(&k, &other, sizeof(k)), "index is in the key");
	key(0, "\"etag-2\"", &other);
	CHECK(memcmp(&k, &other, sizeof(k)), "version is in the key");
	key(0, NULL, &other);
	CHECK(memcmp(&k, &other, sizeof(k)), "no version differs from one");

	CHECK(disk_cache_read(dc, &k, out, BS, len, NULL) == -ENOENT,
	      "empty: miss");
	err = disk_cache_write(dc, &k, in, BS, len, NULL);
	CHECK(err == 0, "write: %d", err);
	err = disk_cache_read(dc, &k, out, BS, len, NULL);
	CHECK(err == 0, "read back: %d", err);
	CHECK(!memcmp(in, out, len), "same bytes back");
	CHECK(STAT(disk_hits) == hits + 1, "one disk hit");
	/* An unaligned buffer takes the buffered path. */
	memset(out, 0, BS);
	err = disk_cache_read(dc, &k, out + 1, BS - 1, len, NULL);
	CHECK(err == 0 && !memcmp(in, out + 1, len), "unaligned read: %d", err);
	/* The object changed: its new version has no blocks. */
	CHECK(disk_cache_read(dc, &other, out, BS, len, NULL) == -ENOENT,
	      "changed version: miss");
	/* Another length asked for than stored: not served. */
	CHECK(disk_cache_read(dc, &k, out, BS, len - 1, NULL) == -EBADMSG,
	      "wrong length: discarded");
	disk_cache_free(dc);
	free(in);
	free(out);
}

static void test_corruption(const char *dir)
{
	struct disk_cache *dc = open_store(dir, 100 * BS);
	struct disk_key k;
	char *in = buf_new(2), *out = buf_new(98), path[4300];
	unsigned long long corrupt = STAT(disk_corrupt);
	unsigned char c;
	struct stat st;
	int fd, err;

	/* A flipped byte in the data. */
	key(5, "e", &k);
	CHECK(disk_cache_write(dc, &k, in, BS, BS, NULL) == 0, "write");
	block_path(dir, &k, path, sizeof(path));
	fd = open(path, O_RDWR);
	CHECK(fd >= 0, "open %s", path);
	CHECK(pread(fd, &c, 1, HDR + 1000) == 1, "pread");
	c ^= 0x01;
	CHECK(pwrite(fd, &c, 1, HDR + 1000) == 1, "pwrite");
	close(fd);
	err = disk_cache_read(dc, &k, out, BS, BS, NULL);
	CHECK(err == -EBADMSG, "flipped byte: %d", err);
	CHECK(STAT(disk_corrupt) == corrupt + 1, "disk_corrupt counted");
	CHECK(stat(path, &st) < 0 && errno == ENOENT, "bad file discarded");
	CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == -ENOENT,
	      "then a miss");

	/* A flipped byte in the header. */
	CHECK(disk_cache_write(dc, &k, in, BS, BS, NULL) == 0, "write again");
	fd = open(path, O_RDWR);
	CHECK(pread(fd, &c, 1, 20) == 1, "pread");
	c ^= 0x80;
	CHECK(pwrite(fd, &c, 1, 20) == 1, "pwrite");
	close(fd);
	CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == -EBADMSG,
	      "header flipped: discarded");

	/* A torn file: cut short, as after a crash mid-write. */
	CHECK(disk_cache_write(dc, &k, in, BS, BS, NULL) == 0, "write again");
	CHECK(truncate(path, HDR + BS / 2) == 0, "truncate");
	CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == -EBADMSG,
	      "torn: bad");
	/* Torn with its length intact: zeros where the data never landed. */
	CHECK(disk_cache_write(dc, &k, in, BS, BS, NULL) == 0, "write again");
	CHECK(truncate(path, HDR + BS / 2) == 0 &&
		      truncate(path, HDR + BS) == 0,
	      "zero the tail");
	CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == -EBADMSG,
	      "zeroed tail: bad");
	/* Only a header. */
	CHECK(disk_cache_write(dc, &k, in, BS, BS, NULL) == 0, "write again");
	CHECK(truncate(path, HDR) == 0, "truncate to header");
	CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == -EBADMSG,
	      "header only: bad");
	CHECK(STAT(disk_corrupt) == corrupt + 5, "five corrupt files: %llu",
	      STAT(disk_corrupt) - corrupt);
	disk_cache_free(dc);
	free(in);
	free(out);
}

static void test_budget_lru_restart(const char *dir)
{
	uint64_t budget = 3 * (HDR + BS);
	struct disk_cache *dc = open_store(dir, budget);
	struct disk_key k[10];
	char *in = buf_new(3), *out = buf_new(97);
	unsigned long long ev = STAT(disk_evictions);
	uint64_t used;
	int i;

	for (i = 0; i < 10; i++)
		key(100 + i, "lru", &k[i]);
	for (i = 0; i < 3; i++) {
		CHECK(disk_cache_write(dc, &k[i], in, BS, BS, NULL) == 0,
		      "write %d", i);
		usleep(20000); /* mtimes are coarse: make the order clear */
	}
	sleep(1); /* a hit touches files older than a second */
	/* k[0] used last: k[1] is now the least recently used. */
	CHECK(disk_cache_read(dc, &k[0], out, BS, BS, NULL) == 0, "read k0");
	CHECK(disk_cache_write(dc, &k[3], in, BS, BS, NULL) == 0, "write k3");
	CHECK(disk_cache_read(dc, &k[1], out, BS, BS, NULL) == -ENOENT,
	      "k1 evicted");
	CHECK(disk_cache_read(dc, &k[0], out, BS, BS, NULL) == 0, "k0 kept");
	CHECK(STAT(disk_evictions) == ev + 1, "one eviction");
	for (i = 4; i < 10; i++) {
		CHECK(disk_cache_write(dc, &k[i], in, BS, BS, NULL) == 0,
		      "write %d", i);
		used = disk_cache_used(dc);
		CHECK(used <= budget + HDR + BS,
		      "budget %llu exceeded by more than a block: %llu",
		      (unsigned long long)budget, (unsigned long long)used);
	}
	disk_cache_free(dc);

	/* A new daemon on the same DIR serves what is there... */
	dc = open_store(dir, budget);
	CHECK(disk_cache_read(dc, &k[9], out, BS, BS, NULL) == 0 &&
		      !memcmp(in, out, BS),
	      "restart: block served");
	disk_cache_free(dc);
	/* ...and keeps a smaller budget from its first write on. */
	dc = open_store(dir, 1 * (HDR + BS));
	key(999, "lru", &k[0]);
	CHECK(disk_cache_write(dc, &k[0], in, BS, BS, NULL) == 0, "write");
	used = disk_cache_used(dc);
	CHECK(used <= HDR + BS, "restart with smaller budget: %llu",
	      (unsigned long long)used);
	/* A block larger than the budget is not written. */
	disk_cache_free(dc);
	free(in);
	free(out);
}

/* A tmpfs of @size at @dir, or false (not root, no mount namespace). */
static bool mount_tmpfs(const char *dir, const char *size)
{
	char opts[64];

	snprintf(opts, sizeof(opts), "size=%s,mode=0755", size);
	return mount("tmpfs", dir, "tmpfs", 0, opts) == 0;
}

static void test_full_disk(const char *base)
{
	char dir[4200];
	struct disk_cache *dc;
	struct disk_key k;
	char *in = buf_new(4), *out = buf_new(96);
	unsigned long long errs = STAT(disk_errors);
	int i, err, ok = 0, full = 0;

	snprintf(dir, sizeof(dir), "%s/full", base);
	mkdir(dir, 0755);
	if (!mount_tmpfs(dir, "512k")) {
		CHECK_SKIP("full disk: cannot mount a tmpfs at %s (%s): "
			   "needs root or a mount namespace",
			   dir, strerror(errno));
	}
	/* The budget says 100 blocks; the disk holds about 7. */
	dc = open_store(dir, 100 * (HDR + BS));
	for (i = 0; i < 30; i++) {
		key(200 + i, "full", &k);
		err = disk_cache_write(dc, &k, in, BS, BS, NULL);
		if (err == 0)
			ok++;
		else if (err == -ENOSPC)
			full++;
		else
			CHECK(0, "write %d: unexpected %d", i, err);
	}
	CHECK(full >= 1, "the disk filled up");
	CHECK(STAT(disk_errors) > errs, "disk_errors counted");
	/* The budget shrank to what fits: writes go on, evicting. */
	CHECK(ok >= 20, "writes went on after ENOSPC: %d of 30", ok);
	CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == 0 || err != 0,
	      "the last block written reads back");
	disk_cache_free(dc);
	CHECK(umount(dir) == 0, "umount %s", dir);
	free(in);
	free(out);
}

static void test_read_only(const char *base)
{
	char dir[4200];
	struct disk_cache *dc;
	struct disk_key k, k2;
	char *in = buf_new(5), *out = buf_new(95);
	int err;

	snprintf(dir, sizeof(dir), "%s/ro", base);
	mkdir(dir, 0755);
	if (!mount_tmpfs(dir, "4m")) {
		CHECK_SKIP("read-only: cannot mount a tmpfs at %s (%s): "
			   "needs root or a mount namespace",
			   dir, strerror(errno));
	}
	dc = open_store(dir, 10 * (HDR + BS));
	key(300, "ro", &k);
	CHECK(disk_cache_write(dc, &k, in, BS, BS, NULL) == 0, "write");
	disk_cache_free(dc);
	CHECK(mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0,
	      "remount ro: %s", strerror(errno));
	dc = open_store(dir, 10 * (HDR + BS));
	CHECK(dc != NULL, "a read-only DIR still opens");
	if (dc) {
		CHECK(disk_cache_read(dc, &k, out, BS, BS, NULL) == 0 &&
			      !memcmp(in, out, BS),
		      "read-only DIR serves its blocks");
		key(301, "ro", &k2);
		err = disk_cache_write(dc, &k2, in, BS, BS, NULL);
		CHECK(err == -EROFS, "write to read-only DIR: %d", err);
		disk_cache_free(dc);
	}
	CHECK(umount(dir) == 0, "umount %s", dir);
	free(in);
	free(out);
}

/* ---- the memory cache under write-behind references ---- */

static struct cache *mcache;
static int mfetches;

/* Fills at once, on the caller's thread. */
static void sync_fetch(void *ctx, struct block *b)
{
	mfetches++;
	memset(b->data, (int)(b->index & 0xff), b->len);
	cache_fetch_done(mcache, b, 0);
}

static const struct cache_fill_ops sync_fill = { .start = sync_fetch };

/* Block @index of @n, held twice: a reader's and a writer's reference. */
static struct block *get2(struct node *n, uint64_t index)
{
	struct block *b = NULL, *b2 = NULL;

	CHECK(cache_get(mcache, n, 0, index, BS, &b) == 0, "get %llu",
	      (unsigned long long)index);
	CHECK(cache_get(mcache, n, 0, index, BS, &b2) == 0 && b == b2,
	      "get %llu again", (unsigned long long)index);
	return b;
}

static void test_write_behind_refs(void)
{
	struct node n = { 0 };
	struct block *x, *y = NULL;

	/* Two blocks of memory: a third evicts the colder of two. */
	CHECK(cache_new(2 * BS, BS, true, &sync_fill, NULL, &mcache) == 0,
	      "cache");
	/* y is read and let go: hot. */
	CHECK(cache_get(mcache, &n, 0, 1, BS, &y) == 0, "get y");
	cache_unref(mcache, y);
	/* x: the reader finished with it (behind) while the writer still
	 * held it; the writer's plain release keeps the reader's word. */
	x = get2(&n, 0);
	cache_unref_behind(mcache, x, true);
	cache_unref(mcache, x);
	CHECK(cache_get(mcache, &n, 0, 2, BS, &y) == 0, "get z");
	cache_unref(mcache, y);
	CHECK(!cache_has(mcache, &n, 0, 0), "x, read behind, went first");
	CHECK(cache_has(mcache, &n, 0, 1), "y, hot, was kept");

	/* Evicted while the writer holds it: gone once the writer lets
	 * go. */
	cache_drop_file(mcache, &n);
	x = get2(&n, 3);
	cache_unref(mcache, x); /* the reader */
	cache_drop_file(mcache, &n);
	CHECK(cache_has(mcache, &n, 0, 3), "held: still there");
	cache_unref(mcache, x); /* the writer */
	CHECK(!cache_has(mcache, &n, 0, 3), "dropped once let go");
	CHECK(cache_bytes(mcache) == 0, "evict left %llu bytes",
	      (unsigned long long)cache_bytes(mcache));

	/* Asked for again after the evict: kept. */
	x = get2(&n, 4);
	cache_unref(mcache, x);
	cache_drop_file(mcache, &n);
	CHECK(cache_get(mcache, &n, 0, 4, BS, &y) == 0 && y == x, "get again");
	cache_unref(mcache, y);
	cache_unref(mcache, x);
	CHECK(cache_has(mcache, &n, 0, 4), "read after the evict: kept");

	/* cache_unref_drop(): out of memory at once when last. */
	cache_drop_file(mcache, &n);
	CHECK(cache_get(mcache, &n, 0, 5, BS, &x) == 0, "get 5");
	cache_unref_drop(mcache, x);
	CHECK(!cache_has(mcache, &n, 0, 5) && cache_bytes(mcache) == 0,
	      "unref_drop: gone");
	cache_free(mcache);
	mcache = NULL;
}

static const char *tmpfs_base;

static void remove_tmpfs_base(void)
{
	rm_rf(tmpfs_base);
}

/* No arguments: the cases that run anywhere. "tmpfs": a full disk and a
 * read-only one, on a small tmpfs each: skipped (77) where none can be
 * mounted, registered as a test of their own (test_disk_cache_tmpfs) so
 * that a skip is reported as one, not as a pass. */
/* A stand-in for a decoder's sealing: XOR with a byte, the tag the XOR's
 * sum; open refuses a wrong sum, or everything when locked. */
struct toy_sealer {
	struct disk_sealer s;
	unsigned char x;
	bool locked, refuse;
};

static void toy_tag(const unsigned char *p, size_t len,
		    unsigned char tag[DISK_TAG_SIZE])
{
	memset(tag, 0, DISK_TAG_SIZE);
	for (size_t i = 0; i < len; i++)
		tag[i % DISK_TAG_SIZE] += p[i];
}

static int toy_seal(const struct disk_sealer *s, const void *src, void *dst,
		    size_t len, unsigned char tag[DISK_TAG_SIZE])
{
	const struct toy_sealer *t = (const struct toy_sealer *)s;

	for (size_t i = 0; i < len; i++)
		((unsigned char *)dst)[i] =
			((const unsigned char *)src)[i] ^ t->x;
	toy_tag(dst, len, tag);
	return 0;
}

static int toy_open(const struct disk_sealer *s, void *buf, size_t len,
		    const unsigned char tag[DISK_TAG_SIZE])
{
	const struct toy_sealer *t = (const struct toy_sealer *)s;
	unsigned char want[DISK_TAG_SIZE];

	if (t->locked)
		return -EACCES;
	toy_tag(buf, len, want);
	if (t->refuse || memcmp(want, tag, DISK_TAG_SIZE))
		return -EBADMSG;
	for (size_t i = 0; i < len; i++)
		((unsigned char *)buf)[i] ^= t->x;
	return 0;
}

/* Sealed blocks: stored as the sealer made them, opened on the way back;
 * a block that does not open is corrupt, one the sealer may not open is a
 * miss and stays; a plain read never gets a sealed block, nor the
 * reverse. */
static void test_sealed(const char *dir)
{
	struct disk_cache *dc = open_store(dir, 100 * BS);
	struct toy_sealer ts = { { toy_seal, toy_open }, 0x5a, false, false };
	struct toy_sealer other = ts;
	struct disk_key k;
	char *in = buf_new(3), *out = buf_new(97), *raw = buf_new(0);
	char path[4300];
	unsigned long long corrupt = STAT(disk_corrupt);
	struct stat st;
	int fd, err;

	key(7, "s", &k);
	block_path(dir, &k, path, sizeof(path));
	CHECK(disk_cache_write(dc, &k, in, BS, BS - 5, &ts.s) == 0, "write");
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, raw, BS - 5, HDR) == BS - 5, "raw");
	close(fd);
	for (size_t i = 0; i < BS - 5; i++)
		CHECK((raw[i] ^ in[i]) == 0x5a, "stored sealed at %zu", i);
	err = disk_cache_read(dc, &k, out, BS, BS - 5, &ts.s);
	CHECK(err == 0 && !memcmp(in, out, BS - 5), "opened: %d", err);
	/* Without the key: a miss, the file kept. */
	other.locked = true;
	CHECK(disk_cache_read(dc, &k, out, BS, BS - 5, &other.s) == -EACCES,
	      "locked: EACCES");
	CHECK(stat(path, &st) == 0 && STAT(disk_corrupt) == corrupt,
	      "locked: kept");
	/* Read as plain: never the sealed bytes. */
	CHECK(disk_cache_read(dc, &k, out, BS, BS - 5, NULL) == -EBADMSG,
	      "sealed block read as plain: refused");
	CHECK(stat(path, &st) < 0 && STAT(disk_corrupt) == corrupt + 1,
	      "and discarded");
	/* A plain block read as sealed: refused. */
	CHECK(disk_cache_write(dc, &k, in, BS, BS - 5, NULL) == 0, "plain");
	CHECK(disk_cache_read(dc, &k, out, BS, BS - 5, &ts.s) == -EBADMSG,
	      "plain block read as sealed: refused");
	/* One that does not open: corrupt, discarded, then a miss. */
	CHECK(disk_cache_write(dc, &k, in, BS, BS - 5, &ts.s) == 0, "again");
	other.locked = false;
	other.refuse = true;
	CHECK(disk_cache_read(dc, &k, out, BS, BS - 5, &other.s) == -EBADMSG,
	      "does not open: refused");
	CHECK(stat(path, &st) < 0 && STAT(disk_corrupt) == corrupt + 3,
	      "three corrupt: %llu", STAT(disk_corrupt) - corrupt);
	CHECK(disk_cache_read(dc, &k, out, BS, BS - 5, &ts.s) == -ENOENT,
	      "then a miss");
	disk_cache_free(dc);
	free(in);
	free(out);
	free(raw);
}

int main(int argc, char **argv)
{
	char base[] = "/var/tmp/wfs-disk-test.XXXXXX", dir[4200];
	int i;

	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	if (argc > 1 && !strcmp(argv[1], "tmpfs")) {
		tmpfs_base = base; /* removed on a skip too */
		atexit(remove_tmpfs_base);
		test_full_disk(base);
		test_read_only(base);
		return 0;
	}
	for (i = 0; i < 4; i++) {
		snprintf(dir, sizeof(dir), "%s/d%d", base, i);
		if (i == 0)
			test_round_trip_and_keys(dir);
		else if (i == 1)
			test_corruption(dir);
		else if (i == 2)
			test_budget_lru_restart(dir);
		else
			test_sealed(dir);
	}
	test_write_behind_refs();
	rm_rf(base);
	return 0;
}
