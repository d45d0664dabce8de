/* weightfs-pack: turn files or model directories into seekable-zstd objects
 * (NAME.zst: independent frames and a seek table, see
 * common/zstd_seekable.h) or sealed ones (NAME.sealed: the same frames
 * encrypted and authenticated, see common/sealed.h), restore them (--unpack)
 * or check them (--test).
 * Frames are compressed and decoded in parallel; every output is written
 * under a temporary name, checked, and renamed into place. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <zstd.h>

#include "sealed.h"
#include "size.h"
#include "zstd_seekable.h"

#define EXIT_USAGE 2
/* --trust refusals (beside the negative errnos of sealed.h) */
#define E_UNSIGNED (-10001)
#define E_UNTRUSTED (-10002)
#define E_BADSIG (-10003)
#define DEFAULT_FRAME_SIZE (1u << 20)
#define DEFAULT_LEVEL 3
/* --group: grouped BF16 frames come out smaller at level 1 than at 3 and
 * decode ~15% faster (tools/bench-zstd, tools/bench-zstd-mount) */
#define DEFAULT_GROUP_LEVEL 1

static const char usage[] =
	"usage: weightfs-pack [OPTIONS] SRC... -o DIR\n"
	"       weightfs-pack --unpack [OPTIONS] SRC... -o DIR\n"
	"       weightfs-pack --test [OPTIONS] SRC...\n"
	"\n"
	"Packs each file SRC (a directory: every file below it, symlinks to\n"
	"files included, the tree kept) into DIR/NAME.zst in the zstd "
	"seekable\n"
	"format: independent frames of --frame-size uncompressed bytes and a\n"
	"seek table in a trailing skippable frame, so a reader can fetch and\n"
	"decode any byte range alone. Plain `zstd -d` restores these files "
	"too\n"
	"(not --group ones).\n"
	"Each output is written under a temporary name, decoded and compared\n"
	"with its source, then renamed into place: a failed or interrupted "
	"run\n"
	"never leaves a partial file under the final name.\n"
	"\n"
	"  -o, --output DIR      where outputs go (created if missing)\n"
	"  -u, --unpack          restore the originals of NAME.zst files (a\n"
	"                        directory: every *.zst below it) as DIR/NAME\n"
	"  -t, --test            decode and verify SRC.zst files, write "
	"nothing\n"
	"  -f, --frame-size SIZE uncompressed bytes per frame (K, M, G "
	"suffixes;\n"
	"                        4K..1G; default 1M: on BF16 weights as small\n"
	"                        as 4M or 16M frames, and a reader can fetch\n"
	"                        and decode 1 MiB alone; tools/bench-zstd)\n"
	"  -l, --level N         zstd level, 1..22 (default 3: on BF16/FP16\n"
	"                        weights levels 1 to 9 give sizes within 0.2%\n"
	"                        of each other, 9 at ~8x the time; 3 does "
	"better\n"
	"                        on the text files of a model directory;\n"
	"                        with --group, default 1: grouped BF16 frames\n"
	"                        are smaller at 1 than at 3, and decode ~15%\n"
	"                        faster)\n"
	"  -T, --threads N       frames compressed/decoded in parallel "
	"(default:\n"
	"                        the online CPUs)\n"
	"  -g, --group           the weightfs byte-grouped variant, for "
	"models\n"
	"                        of 16-bit weights (BF16, FP16): each frame\n"
	"                        holds its high bytes, then its low bytes.\n"
	"                        BF16: ratio 1.46x instead of 1.28x and\n"
	"                        ~1.6x faster decoding (less CPU per byte\n"
	"                        read through a mount). Only weightfs and\n"
	"                        weightfs-pack --unpack read it: plain zstd "
	"-d\n"
	"                        refuses it. Use it for models that are read\n"
	"                        through weightfs; keep the default when\n"
	"                        others must restore them with zstd alone\n"
	"  -e, --encrypt KEYFILE seal each frame with AES-256-GCM under the "
	"key\n"
	"                        in KEYFILE (32 raw bytes or 64 hex digits; a\n"
	"                        file only its owner may read) and write\n"
	"                        DIR/NAME.sealed; composes with --group and\n"
	"                        --store. The key itself is never written:\n"
	"                        a key id (a hash of it) names it\n"
	"  -k, --key KEYFILE     the key of NAME.sealed files, to --unpack or\n"
	"                        --test them\n"
	"  -s, --sign PRIVKEY    with --encrypt: sign each object with this\n"
	"                        Ed25519 private key (PEM, as `openssl "
	"genpkey\n"
	"                        -algorithm ed25519` writes it; a file only "
	"its\n"
	"                        owner may read): a SHA-256 of every frame,\n"
	"                        signed, so mounts with -o trust= read only\n"
	"                        what this publisher packed\n"
	"      --trust PUBKEY    with --unpack or --test: accept only objects\n"
	"                        signed by this Ed25519 public key (PEM, from\n"
	"                        `openssl pkey -pubout`), checking every "
	"frame\n"
	"      --store           with --encrypt: frames are sealed, not\n"
	"                        compressed (incompressible data, or less CPU\n"
	"                        per byte on the reading side)\n"
	"  -q, --quiet           no progress bar, no per-file summary\n"
	"  -h, --help            this help\n"
	"\n"
	"Exit status: 0 done, 1 a file failed, 2 usage.\n";

enum mode { PACK, UNPACK, TEST };

static struct {
	enum mode mode;
	const char *outdir;
	uint64_t frame_size;
	int level;
	int threads;
	bool group;
	bool quiet;
	bool progress;
	bool store;
	const char *encrypt;  /* key file: pack sealed objects */
	const char *key_file; /* key file: unpack/test sealed objects */
	bool have_key;
	uint8_t key[SEALED_KEY_SIZE];
	const char *sign; /* private key file: sign sealed objects */
	struct sealed_signer *signer; /* its key */
	const char *trust;	      /* public key file: unpack/test */
	struct sealed_trust *trusted; /* the signer's or --trust's key */
} opt = { .frame_size = DEFAULT_FRAME_SIZE }; /* .level 0: the default */

/* --- progress --- */

static uint64_t total_bytes, done_bytes;
static double t_start, t_last;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress(const char *name, bool force)
{
	char d[32], t[32];
	double tn = now(), rate;
	int i, fill;

	if (!opt.progress || (!force && tn - t_last < 0.1))
		return;
	t_last = tn;
	fill = total_bytes ? (int)(30 * done_bytes / total_bytes) : 30;
	rate = tn > t_start ? done_bytes / (tn - t_start) : 0;
	size_format(done_bytes, d, sizeof(d));
	size_format(total_bytes, t, sizeof(t));
	fputs("\r\033[K[", stderr);
	for (i = 0; i < 30; i++)
		fputc(i < fill ? '#' : '-', stderr);
	fprintf(stderr, "] %3d%% %s / %s %.0f MiB/s %s",
		total_bytes ? (int)(100 * done_bytes / total_bytes) : 100, d, t,
		rate / (1 << 20), name);
	fflush(stderr);
}

static void progress_end(void)
{
	if (opt.progress)
		fputs("\r\033[K", stderr);
}

/* --- parallel frames --- */

/* One batch of frames, run on opt.threads workers; each worker has its own
 * contexts and owns the slots of the frames it takes. */
struct batch {
	uint32_t first, count;
	atomic_uint next;
	atomic_int err;
	int (*fn)(struct batch *b, int worker, uint32_t i);
	/* pack */
	const uint8_t *src;
	uint64_t src_size;
	/* pack and unpack: per-slot outputs */
	uint8_t **slot;
	size_t slot_cap;
	struct zstd_seekable_frame *frames;
	/* pack: the sealed object being written, or NULL */
	const struct sealed_writer *sw;
	uint8_t *digests; /* signed: the object's frame digests, or NULL */
	/* unpack/verify */
	const struct zstd_seekable *zs;
	const struct sealed *sl; /* a sealed object: zs is &sl->stored */
	const uint8_t *obj;
	const uint8_t *expect; /* verify: the original bytes */
};

struct worker {
	struct batch *b;
	int id;
	ZSTD_CCtx *cctx;
	struct zstd_seekable_dctx *dctx;
	struct sealed_dctx *sdctx;
	uint8_t *scratch;
	size_t scratch_cap;
	pthread_t thread;
};

static struct worker *workers;

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct batch *b = w->b;
	uint32_t i;

	while ((i = atomic_fetch_add(&b->next, 1)) < b->count) {
		int r;

		if (atomic_load(&b->err))
			break;
		r = b->fn(b, w->id, b->first + i);
		if (r)
			atomic_store(&b->err, r);
	}
	return NULL;
}

static int run_batch(struct batch *b)
{
	int i, n = opt.threads < (int)b->count ? opt.threads : (int)b->count;

	atomic_store(&b->next, 0);
	atomic_store(&b->err, 0);
	for (i = 0; i < n; i++) {
		workers[i].b = b;
		if (i > 0 && pthread_create(&workers[i].thread, NULL,
					    worker_main, &workers[i])) {
			n = i;
			atomic_store(&b->err, -EAGAIN);
			break;
		}
	}
	if (n > 0)
		worker_main(&workers[0]);
	for (i = 1; i < n; i++)
		pthread_join(workers[i].thread, NULL);
	return atomic_load(&b->err);
}

static int scratch(struct worker *w, size_t n)
{
	if (w->scratch_cap < n) {
		uint8_t *p = malloc(n);

		if (!p)
			return -ENOMEM;
		free(w->scratch);
		w->scratch = p;
		w->scratch_cap = n;
	}
	return 0;
}

static int compress_frame(struct batch *b, int wid, uint32_t i)
{
	struct worker *w = &workers[wid];
	uint64_t off = (uint64_t)i * opt.frame_size;
	size_t n = b->src_size - off < opt.frame_size ? b->src_size - off
						      : opt.frame_size;
	const void *src = b->src + off;
	struct zstd_seekable_frame *f = &b->frames[i - b->first];
	size_t c;

	uint8_t *out = b->slot[i - b->first];

	if (opt.group) {
		if (scratch(w, n))
			return -ENOMEM;
		zstd_seekable_group(w->scratch, src, n, 2);
		src = w->scratch;
	}
	if (opt.store) {
		c = n;
	} else {
		c = ZSTD_compress2(w->cctx, out, b->slot_cap, src, n);
		if (ZSTD_isError(c))
			return -EIO;
	}
	f->csize = c;
	f->dsize = n;
	if (b->sw) {
		/* sealed in place (stored: from the source); csize stays the
		 * plaintext's size, as the index records it */
		ssize_t r =
			sealed_seal(b->sw, i, opt.store ? src : out, c, n, out);

		if (r > 0 && b->digests)
			sealed_frame_digest(
				out, r,
				b->digests + (size_t)i * SEALED_DIGEST_SIZE);
		return r < 0 ? (int)r : 0;
	}
	/* of the frame's bytes as compressed: zstd's own checksum, which a
	 * reader compares for free (grouped: XOR the magic, zstd_seekable.h) */
	f->checksum = zstd_seekable_checksum(src, n) ^
		      (opt.group ? ZSTD_SEEKABLE_GROUP_MAGIC : 0);
	return 0;
}

/* Decode frame @i; with b->expect compare it, else keep it in its slot. */
static int decode_frame(struct batch *b, int wid, uint32_t i)
{
	struct worker *w = &workers[wid];
	const struct zstd_seekable_frame *f = &b->zs->frames[i];
	uint8_t *dst;
	ssize_t n;

	if (b->slot) {
		dst = b->slot[i - b->first];
	} else {
		if (scratch(w, f->dsize ? f->dsize : 1))
			return -ENOMEM;
		dst = w->scratch;
	}
	if (b->sl)
		n = sealed_read(w->sdctx, b->sl, f->doff, f->dsize,
				b->obj + f->coff, f->csize, dst);
	else
		n = zstd_seekable_decode(w->dctx, b->zs, i, b->obj + f->coff,
					 f->csize, dst, f->dsize);
	if (n < 0)
		return n;
	if (b->expect && memcmp(dst, b->expect + f->doff, f->dsize))
		return -EBADMSG;
	return 0;
}

/* --- files --- */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n > k && strcmp(s + n - k, suffix) == 0;
}

static bool ends_sealed(const char *s)
{
	return ends_with(s, ".sealed");
}

/* A packed object's suffix length: 4 (.zst), 7 (.sealed), 0 (neither). */
static size_t packed_suffix(const char *s)
{
	return ends_with(s, ".zst") ? 4 : ends_sealed(s) ? 7 : 0;
}

struct map {
	const uint8_t *p;
	uint64_t size;
};

static int map_file(const char *path, struct map *m)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = S_ISREG(st.st_mode) ? -errno : -EINVAL;

		close(fd);
		return e;
	}
	m->size = st.st_size;
	m->p = NULL;
	if (m->size) {
		void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);

		if (p == MAP_FAILED) {
			int e = -errno;

			close(fd);
			return e;
		}
		madvise(p, m->size, MADV_SEQUENTIAL);
		m->p = p;
	}
	close(fd);
	return 0;
}

static void unmap_file(struct map *m)
{
	if (m->p)
		munmap((void *)m->p, m->size);
	m->p = NULL;
}

static int write_full(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= w;
	}
	return 0;
}

static int mkdirs(char *path)
{
	char *s;

	for (s = path + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			*s = '/';
			return -errno;
		}
		*s = '/';
	}
	return 0;
}

/* The temporary file being written, removed if a signal ends the run. */
static char *volatile cur_tmp;

static void on_signal(int sig)
{
	char *t = cur_tmp;

	if (t)
		unlink(t);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Open a temporary file next to @final (".NAME.XXXXXX"). */
static int open_tmp(const char *final, char **ret_tmp)
{
	const char *slash = strrchr(final, '/');
	int dlen = slash ? (int)(slash - final + 1) : 0, fd;
	char *tmp;

	if (asprintf(&tmp, "%.*s.%s.XXXXXX", dlen, final,
		     slash ? slash + 1 : final) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		int e = -errno;

		free(tmp);
		return e;
	}
	*ret_tmp = tmp;
	cur_tmp = tmp;
	return fd;
}

/* Slots per batch: enough to keep every thread busy, within ~1 GiB. */
static uint32_t batch_frames(uint64_t slot_size)
{
	uint64_t n = 4 * (uint64_t)opt.threads;

	if (slot_size && n * slot_size > (1ull << 30))
		n = (1ull << 30) / slot_size;
	return n ? n : 1;
}

static uint8_t **slots_new(uint32_t n, size_t cap)
{
	uint8_t **s = calloc(n, sizeof(*s));
	uint32_t i;

	if (!s)
		return NULL;
	for (i = 0; i < n; i++) {
		s[i] = malloc(cap ? cap : 1);
		if (!s[i]) {
			while (i--)
				free(s[i]);
			free(s);
			return NULL;
		}
	}
	return s;
}

static void slots_free(uint8_t **s, uint32_t n)
{
	uint32_t i;

	if (!s)
		return;
	for (i = 0; i < n; i++)
		free(s[i]);
	free(s);
}

/* Decode every frame of @zs (of @sl, if sealed) in @obj and compare with
 * @expect. */
static int verify(const struct zstd_seekable *zs, const struct sealed *sl,
		  const uint8_t *obj, const uint8_t *expect)
{
	struct batch b = { .zs = zs,
			   .sl = sl,
			   .obj = obj,
			   .expect = expect,
			   .fn = decode_frame,
			   .first = 0,
			   .count = zs->nframes };

	return zs->nframes ? run_batch(&b) : 0;
}

static int pack_one(const char *src, const char *dst, const char *name,
		    uint64_t *ret_out)
{
	struct map in = { 0 }, out = { 0 };
	struct zstd_seekable_frame *frames = NULL;
	struct zstd_seekable *zs = NULL;
	struct sealed *sl = NULL;
	struct sealed_writer sw, *swp = NULL;
	uint8_t **slot = NULL, hdr[ZSTD_SEEKABLE_GROUP_HEADER_SIZE], *table;
	uint8_t *digests = NULL;
	uint64_t nf, tsize;
	/* a sealed object has no header frame: its flags say grouped */
	uint32_t per = 0, nhead = opt.group && !opt.encrypt ? 1 : 0, i;
	size_t cap = ZSTD_compressBound(opt.frame_size) + SEALED_TAG_SIZE;
	char *tmp = NULL;
	int fd = -1, r;

	r = map_file(src, &in);
	if (r)
		return r;
	nf = (in.size + opt.frame_size - 1) / opt.frame_size;
	if (nf + nhead > ZSTD_SEEKABLE_MAX_FRAMES) {
		r = -EFBIG;
		goto out;
	}
	frames = calloc(nf + nhead + 1, sizeof(*frames));
	per = batch_frames(cap);
	slot = slots_new(per, cap);
	if (!frames || !slot) {
		r = -ENOMEM;
		goto out;
	}
	if (opt.encrypt) {
		r = sealed_writer_init(
			&sw, opt.key,
			(opt.store ? 0 : SEALED_FLAG_ZSTD) |
				(opt.group ? SEALED_FLAG_GROUPED : 0) |
				(opt.signer ? SEALED_FLAG_SIGNED : 0));
		if (r)
			goto out;
		swp = &sw;
	}
	if (opt.signer &&
	    !(digests = malloc(nf ? nf * SEALED_DIGEST_SIZE : 1))) {
		r = -ENOMEM;
		goto out;
	}
	fd = open_tmp(dst, &tmp);
	if (fd < 0) {
		r = fd;
		goto out;
	}
	if (nhead) {
		zstd_seekable_group_header(2, hdr);
		frames[0].csize = sizeof(hdr);
		r = write_full(fd, hdr, sizeof(hdr));
		if (r)
			goto out;
	}
	for (i = 0; i < nf; i += per) {
		struct batch b = { .src = in.p,
				   .src_size = in.size,
				   .slot = slot,
				   .slot_cap = cap,
				   .frames = frames + nhead + i,
				   .sw = swp,
				   .digests = digests,
				   .fn = compress_frame,
				   .first = i,
				   .count = nf - i < per ? nf - i : per };
		uint32_t k;

		r = run_batch(&b);
		for (k = 0; k < b.count && !r; k++) {
			r = write_full(fd, slot[k],
				       b.frames[k].csize +
					       (swp ? SEALED_TAG_SIZE : 0));
			done_bytes += b.frames[k].dsize;
		}
		if (r)
			goto out;
		progress(name, false);
	}
	tsize = swp ? sealed_tail_bytes_flags(nf, sw.flags)
		    : zstd_seekable_table_bytes(nf + nhead, 1);
	table = malloc(tsize);
	if (!table) {
		r = -ENOMEM;
		goto out;
	}
	if (swp && digests)
		r = sealed_write_signed_tail(swp, frames, nf, digests,
					     opt.signer, table, tsize) < 0
			    ? -EIO
			    : 0;
	else if (swp)
		r = sealed_write_tail(swp, frames, nf, table, tsize) < 0 ? -EIO
									 : 0;
	else
		zstd_seekable_write_table(frames, nf + nhead, 1, opt.group,
					  table, tsize);
	if (r == 0)
		r = write_full(fd, table, tsize);
	free(table);
	if (r || fdatasync(fd) < 0) {
		r = r ? r : -errno;
		goto out;
	}
	/* Read back what was written and decode it all. */
	r = map_file(tmp, &out);
	if (r)
		goto out;
	if (swp) {
		/* signed: as a mount trusting this signer reads it */
		r = opt.signer ? sealed_parse_trusted(out.p, out.size, out.size,
						      opt.key, opt.trusted, &sl)
			       : sealed_parse(out.p, out.size, out.size,
					      opt.key, &sl);
		if (r == 0 &&
		    (sl->stored.size != in.size || sl->stored.nframes != nf))
			r = -EBADMSG;
		if (r == 0)
			r = verify(&sl->stored, sl, out.p, in.p);
	} else {
		r = zstd_seekable_parse(out.p, out.size, out.size, &zs);
		if (r == 0 &&
		    (zs->size != in.size || zs->nframes != nf + nhead))
			r = -EBADMSG;
		if (r == 0)
			r = verify(zs, NULL, out.p, in.p);
	}
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, dst) < 0)
		r = -errno;
	if (r == 0)
		*ret_out = out.size;
out:
	cur_tmp = NULL;
	if (fd >= 0)
		close(fd);
	if (r && tmp)
		unlink(tmp);
	free(tmp);
	zstd_seekable_free(zs);
	sealed_free(sl);
	if (swp)
		sealed_writer_done(swp);
	unmap_file(&out);
	unmap_file(&in);
	slots_free(slot, per);
	free(frames);
	free(digests);
	return r;
}

/* --unpack (to @dst) or --test (@dst NULL) one object. */
static int unpack_one(const char *src, const char *dst, const char *name,
		      uint64_t *ret_out)
{
	struct map in = { 0 };
	struct zstd_seekable *own = NULL;
	const struct zstd_seekable *zs;
	struct sealed *sl = NULL;
	uint8_t **slot = NULL;
	uint32_t per = 0, i;
	char *tmp = NULL;
	int fd = -1, r;

	r = map_file(src, &in);
	if (r)
		return r;
	if (ends_sealed(src)) {
		r = opt.have_key ? 0 : -ENOKEY;
		if (!r && opt.trusted) {
			/* the signer first: its errors are told apart */
			r = sealed_verify(in.p, in.size, in.size, opt.trusted,
					  NULL);
			r = r == -ENODATA   ? E_UNSIGNED
			    : r == -ENOKEY  ? E_UNTRUSTED
			    : r == -EBADMSG ? E_BADSIG
					    : r;
		}
		if (!r)
			r = opt.trusted ? sealed_parse_trusted(in.p, in.size,
							       in.size, opt.key,
							       opt.trusted, &sl)
					: sealed_parse(in.p, in.size, in.size,
						       opt.key, &sl);
		zs = sl ? &sl->stored : NULL;
	} else {
		r = zstd_seekable_parse(in.p, in.size, in.size, &own);
		zs = own;
	}
	if (r)
		goto out;
	if (dst) {
		per = batch_frames(zs->max_dsize);
		slot = slots_new(per, zs->max_dsize);
		if (!slot) {
			r = -ENOMEM;
			goto out;
		}
		fd = open_tmp(dst, &tmp);
		if (fd < 0) {
			r = fd;
			goto out;
		}
	} else {
		per = batch_frames(zs->max_dsize);
	}
	for (i = 0; i < zs->nframes; i += per) {
		struct batch b = { .zs = zs,
				   .sl = sl,
				   .obj = in.p,
				   .slot = slot,
				   .fn = decode_frame,
				   .first = i,
				   .count = zs->nframes - i < per
						    ? zs->nframes - i
						    : per };
		uint32_t k;

		r = run_batch(&b);
		for (k = 0; k < b.count && !r; k++) {
			uint32_t ds = zs->frames[i + k].dsize;

			if (fd >= 0)
				r = write_full(fd, slot[k], ds);
			done_bytes += zs->frames[i + k].csize;
		}
		if (r)
			goto out;
		progress(name, false);
	}
	if (fd >= 0) {
		if (fdatasync(fd) < 0 || fchmod(fd, 0644) < 0 ||
		    rename(tmp, dst) < 0) {
			r = -errno;
			goto out;
		}
	}
	*ret_out = zs->size;
out:
	cur_tmp = NULL;
	if (fd >= 0)
		close(fd);
	if (r && tmp)
		unlink(tmp);
	free(tmp);
	slots_free(slot, per);
	zstd_seekable_free(own);
	sealed_free(sl);
	unmap_file(&in);
	return r;
}

/* --- the list of inputs --- */

struct item {
	char *src; /* path to read */
	char *rel; /* path under the output directory, without .zst */
	uint64_t size;
};

static struct item *items;
static size_t nitems, items_cap;
static size_t walk_root_len;
static int walk_err;

static int add_item(const char *src, const char *rel, uint64_t size)
{
	struct item *it;

	if (nitems == items_cap) {
		size_t cap = items_cap ? 2 * items_cap : 64;
		struct item *p = realloc(items, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		items = p;
		items_cap = cap;
	}
	it = &items[nitems];
	it->src = strdup(src);
	it->rel = strdup(rel);
	it->size = size;
	if (!it->src || !it->rel)
		return -ENOMEM;
	if (opt.mode != PACK)
		it->rel[strlen(it->rel) - packed_suffix(it->rel)] = 0;
	nitems++;
	return 0;
}

static int walk_cb(const char *path, const struct stat *st, int type,
		   struct FTW *ftw)
{
	const char *rel = path + walk_root_len;
	struct stat target;

	/* A symlink to a file counts as that file (a Hugging Face snapshot
	 * is symlinks into its blob store); directories are not followed. */
	if (type == FTW_SL && stat(path, &target) == 0 &&
	    S_ISREG(target.st_mode)) {
		st = &target;
		type = FTW_F;
	}
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	while (*rel == '/')
		rel++;
	if (opt.mode != PACK && !packed_suffix(rel))
		return 0;
	walk_err = add_item(path, rel, st->st_size);
	return walk_err;
}

static int add_source(const char *src)
{
	struct stat st;
	const char *base;

	if (stat(src, &st) < 0) {
		fprintf(stderr, "weightfs-pack: %s: %s\n", src,
			strerror(errno));
		return -errno;
	}
	if (S_ISDIR(st.st_mode)) {
		walk_root_len = strlen(src);
		if (nftw(src, walk_cb, 32, FTW_PHYS) != 0) {
			fprintf(stderr, "weightfs-pack: %s: %s\n", src,
				strerror(walk_err ? -walk_err : errno));
			return -EIO;
		}
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "weightfs-pack: %s: not a file or directory\n",
			src);
		return -EINVAL;
	}
	if (opt.mode != PACK && !packed_suffix(src)) {
		fprintf(stderr,
			"weightfs-pack: %s: not a .zst or .sealed file\n", src);
		return -EINVAL;
	}
	base = strrchr(src, '/');
	return add_item(src, base ? base + 1 : src, st.st_size);
}

static int item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct item *)a)->rel,
		      ((const struct item *)b)->rel);
}

static int parse_int(const char *s, int lo, int hi, int *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*ret = v;
	return 0;
}

static const char *errtext(int r, bool sealed)
{
	switch (r) {
	case -ENOMSG:
		return sealed ? "not a sealed file (no sealed footer)"
			      : "not a seekable zstd file (no seek table; "
				"try zstd -d)";
	case -EPROTO:
		return sealed ? "corrupt index or footer"
			      : "corrupt seek table";
	case -EBADMSG:
		return sealed ? "authentication failed: damaged or tampered "
				"(a frame, the index or the footer)"
			      : "corrupt frame (decoded bytes do not match)";
	case -EKEYREJECTED:
		return "sealed with another key (its key id differs)";
	case -ENOKEY:
		return "a sealed file: give its key with --key KEYFILE";
	case E_UNSIGNED:
		return "not signed (--trust accepts only signed files)";
	case E_UNTRUSTED:
		return "signed by another key than --trust's";
	case E_BADSIG:
		return "its signature does not hold: changed after signing";
	default:
		return strerror(-r);
	}
}

/* Load --sign's private key or --trust's public key, or, for --sign, add
 * its own public key to opt.trusted (the self-check reads as a mount that
 * trusts it would); exit status 2 on failure. */
static int load_signing(void)
{
	uint8_t pub[SEALED_PUBKEY_SIZE];
	const char *path = opt.sign ? opt.sign : opt.trust;
	int r;

	if (sealed_trust_new(&opt.trusted))
		return 1;
	if (opt.sign) {
		r = sealed_signer_load(opt.sign, &opt.signer);
		if (r == 0) {
			sealed_signer_public(opt.signer, pub);
			r = sealed_trust_add(opt.trusted, pub);
		}
	} else {
		r = sealed_trust_load(opt.trusted, opt.trust);
	}
	if (r == 0)
		return 0;
	if (r == -EPERM)
		fprintf(stderr,
			"weightfs-pack: %s: group or others may read this "
			"private key: chmod 600 it\n",
			path);
	else if (r == -EINVAL)
		fprintf(stderr,
			"weightfs-pack: %s: not an Ed25519 %s key in PEM "
			"(%s)\n",
			path, opt.sign ? "private" : "public",
			opt.sign
				? "unencrypted, as `openssl genpkey -algorithm "
				  "ed25519` writes it"
				: "as `openssl pkey -pubout` writes it");
	else
		fprintf(stderr, "weightfs-pack: %s: %s\n", path, strerror(-r));
	return EXIT_USAGE;
}

/* Load a key file for --encrypt or --key; exit status 2 on failure. */
static int load_key(const char *path)
{
	int r = sealed_key_load(path, opt.key);

	if (r == 0) {
		opt.have_key = true;
		return 0;
	}
	if (r == -EPERM)
		fprintf(stderr,
			"weightfs-pack: %s: group or others may read this key "
			"file: chmod 600 it\n",
			path);
	else if (r == -EINVAL)
		fprintf(stderr,
			"weightfs-pack: %s: not a key (32 raw bytes or 64 "
			"hex digits)\n",
			path);
	else
		fprintf(stderr, "weightfs-pack: %s: %s\n", path, strerror(-r));
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "unpack", no_argument, NULL, 'u' },
		{ "test", no_argument, NULL, 't' },
		{ "frame-size", required_argument, NULL, 'f' },
		{ "level", required_argument, NULL, 'l' },
		{ "threads", required_argument, NULL, 'T' },
		{ "group", no_argument, NULL, 'g' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "encrypt", required_argument, NULL, 'e' },
		{ "key", required_argument, NULL, 'k' },
		{ "store", no_argument, NULL, 'S' },
		{ "sign", required_argument, NULL, 's' },
		{ "trust", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t in_total = 0, out_total = 0;
	int c, i, failed = 0;
	size_t k;

	while ((c = getopt_long(argc, argv, "o:utf:l:T:gqe:k:s:h", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'o':
			opt.outdir = optarg;
			break;
		case 'u':
			opt.mode = UNPACK;
			break;
		case 't':
			opt.mode = TEST;
			break;
		case 'f':
			if (size_parse(optarg, &opt.frame_size) ||
			    opt.frame_size < 4096 ||
			    opt.frame_size > ZSTD_SEEKABLE_MAX_FRAME_SIZE) {
				fprintf(stderr,
					"weightfs-pack: bad frame "
					"size %s (4K..1G)\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'l':
			if (parse_int(optarg, 1, ZSTD_maxCLevel(),
				      &opt.level)) {
				fprintf(stderr, "weightfs-pack: bad level %s\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'T':
			if (parse_int(optarg, 1, 1024, &opt.threads)) {
				fprintf(stderr,
					"weightfs-pack: bad thread count %s\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'g':
			opt.group = true;
			break;
		case 'q':
			opt.quiet = true;
			break;
		case 'e':
			opt.encrypt = optarg;
			break;
		case 'k':
			opt.key_file = optarg;
			break;
		case 'S':
			opt.store = true;
			break;
		case 's':
			opt.sign = optarg;
			break;
		case 'R':
			opt.trust = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc || (opt.mode != TEST && !opt.outdir) ||
	    (opt.mode == TEST && opt.outdir)) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	if (opt.group && opt.mode != PACK) {
		fprintf(stderr, "weightfs-pack: --group is for packing; "
				"--unpack and --test read it from the file\n");
		return EXIT_USAGE;
	}
	if ((opt.encrypt && opt.mode != PACK) ||
	    (opt.key_file && opt.mode == PACK) ||
	    (opt.store && (!opt.encrypt || opt.group))) {
		fprintf(stderr, "weightfs-pack: --encrypt and --store are for "
				"packing (--store needs --encrypt, not "
				"--group); --key is for --unpack and --test\n");
		return EXIT_USAGE;
	}
	if ((opt.sign && !opt.encrypt) || (opt.trust && opt.mode == PACK)) {
		fprintf(stderr, "weightfs-pack: --sign is for packing with "
				"--encrypt; --trust is for --unpack and "
				"--test\n");
		return EXIT_USAGE;
	}
	if ((opt.encrypt || opt.key_file) &&
	    load_key(opt.encrypt ? opt.encrypt : opt.key_file))
		return EXIT_USAGE;
	if ((opt.sign || opt.trust) && load_signing())
		return EXIT_USAGE;
	if (!opt.level)
		opt.level = opt.group ? DEFAULT_GROUP_LEVEL : DEFAULT_LEVEL;
	if (!opt.threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		opt.threads = n > 0 ? (n > 256 ? 256 : n) : 1;
	}
	workers = calloc(opt.threads, sizeof(*workers));
	if (!workers)
		return 1;
	for (i = 0; i < opt.threads; i++) {
		workers[i].id = i;
		workers[i].cctx = ZSTD_createCCtx();
		if (!workers[i].cctx ||
		    zstd_seekable_dctx_new(&workers[i].dctx) ||
		    sealed_dctx_new(&workers[i].sdctx))
			return 1;
		ZSTD_CCtx_setParameter(workers[i].cctx, ZSTD_c_compressionLevel,
				       opt.level);
		/* zstd -d checks these; our reader checks the table's */
		ZSTD_CCtx_setParameter(workers[i].cctx, ZSTD_c_checksumFlag, 1);
	}
	for (i = optind; i < argc; i++)
		if (add_source(argv[i]))
			return 1;
	if (nitems > 1)
		qsort(items, nitems, sizeof(*items), item_cmp);
	for (k = 0; k < nitems; k++)
		total_bytes += items[k].size;
	opt.progress = !opt.quiet && isatty(STDERR_FILENO);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	t_start = now();

	for (k = 0; k < nitems; k++) {
		struct item *it = &items[k];
		char *dst = NULL;
		uint64_t out = 0;
		double t0 = now();
		int r;

		if (opt.mode != TEST &&
		    asprintf(&dst, "%s/%s%s", opt.outdir, it->rel,
			     opt.mode != PACK ? ""
			     : opt.encrypt    ? ".sealed"
					      : ".zst") < 0)
			return 1;
		r = dst ? mkdirs(dst) : 0;
		if (r == 0)
			r = opt.mode == PACK
				    ? pack_one(it->src, dst, it->rel, &out)
				    : unpack_one(it->src, dst, it->rel, &out);
		progress_end();
		if (r) {
			fprintf(stderr, "weightfs-pack: %s: %s\n", it->src,
				errtext(r, opt.mode == PACK
						   ? opt.encrypt != NULL
						   : ends_sealed(it->src)));
			failed = 1;
		} else if (!opt.quiet) {
			char a[32], b[32];
			uint64_t raw = opt.mode == PACK ? it->size : out;
			uint64_t z = opt.mode == PACK ? out : it->size;

			size_format(raw, a, sizeof(a));
			size_format(z, b, sizeof(b));
			printf("%s: %s %s %s (%.1f%%) %.2fs\n",
			       dst ? dst : it->src, a,
			       opt.mode == PACK ? "->" : "<-", b,
			       raw ? 100.0 * z / raw : 100.0, now() - t0);
		}
		if (r == 0) {
			in_total += opt.mode == PACK ? it->size : out;
			out_total += opt.mode == PACK ? out : it->size;
		}
		free(dst);
		progress(it->rel, true);
	}
	progress_end();
	if (!opt.quiet && nitems > 1) {
		char a[32], b[32];

		size_format(in_total, a, sizeof(a));
		size_format(out_total, b, sizeof(b));
		printf("total: %s uncompressed, %s compressed (%.1f%%)\n", a, b,
		       in_total ? 100.0 * out_total / in_total : 100.0);
	}
	for (i = 0; i < opt.threads; i++) {
		ZSTD_freeCCtx(workers[i].cctx);
		zstd_seekable_dctx_free(workers[i].dctx);
		sealed_dctx_free(workers[i].sdctx);
		free(workers[i].scratch);
	}
	free(workers);
	if (opt.have_key)
		OPENSSL_cleanse(opt.key, sizeof(opt.key));
	sealed_signer_free(opt.signer);
	sealed_trust_free(opt.trusted);
	for (k = 0; k < nitems; k++) {
		free(items[k].src);
		free(items[k].rel);
	}
	free(items);
	return failed;
}
