/* Sealed objects (common/sealed.h) behind struct decoder_ops: NAME.sealed
 * shown as the file NAME with its plain size, decrypted as read. The keys
 * come from -o key_file (a key file, or a directory of them), each object
 * finding its own by the key id in its footer. An object whose key the
 * mount lacks is still listed (the size in its footer) but its reads fail
 * with EACCES and one log line; a frame, index or footer that fails
 * authentication is EIO, counted in decrypt_failed. With -o trust (a
 * publisher's public key, or a directory of them), an object no trusted
 * publisher signed is refused at listing: listed, one warning, reads
 * EACCES; a signed one has each frame checked against its signed digest
 * (common/sealed.h). The disk tier's blocks are sealed and opened here too
 * (seal_block, open_block). */
#include "sealed_object.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "decoder.h"
#include "opts.h"
#include "sealed.h"
#include "stats.h"

_Static_assert(DECODER_TAG_SIZE == SEALED_TAG_SIZE, "one tag size");

/* The first read of an object's tail: 64 KiB holds the index of 8,000
 * frames (8 GiB of 1 MiB frames). */
#define TAIL_FIRST (64u << 10)
/* An index larger than this is not believed (16 M frames). */
#define TAIL_MAX (128u << 20)
/* Key files in a key directory: at most this many are read. */
#define KEYS_MAX 256

struct keyring {
	struct sealed_trust *trust; /* NULL: no trust= */
	size_t n;
	uint8_t id[KEYS_MAX][SEALED_ID_SIZE];
	uint8_t key[KEYS_MAX][SEALED_KEY_SIZE];
};

/* An object's state: parsed and authenticated with its key, or (no key)
 * only its footer's key id, for the message. */
struct sealed_obj {
	struct sealed *s; /* NULL: the mount has no key for it, or refuses it */
	uint8_t key_id[SEALED_ID_SIZE];
	/* trust= refuses it: -ENODATA (not signed), -ENOKEY (another
	 * signer), -EBADMSG (the signature does not hold); or 0 */
	int refused;
	uint8_t signer[SEALED_PUBKEY_SIZE]; /* when signed */
};

static void keyring_free(void *cfg)
{
	if (!cfg)
		return;
	sealed_trust_free(((struct keyring *)cfg)->trust);
	OPENSSL_cleanse(cfg, sizeof(struct keyring));
	free(cfg);
}

static int add_key(struct keyring *kr, const char *path, char **ret_msg)
{
	uint8_t key[SEALED_KEY_SIZE];
	int err = sealed_key_load(path, key);

	if (err) {
		if (asprintf(ret_msg, "key_file %s: %s", path,
			     err == -EPERM ? "group or others may read it "
					     "(chmod 600)"
			     : err == -EINVAL
				     ? "not a key (32 raw bytes or 64 hex "
				       "digits)"
				     : strerror(-err)) < 0)
			*ret_msg = NULL;
		return -EINVAL;
	}
	if (kr->n == KEYS_MAX) {
		OPENSSL_cleanse(key, sizeof(key));
		if (asprintf(ret_msg, "key_file: more than %d keys", KEYS_MAX) <
		    0)
			*ret_msg = NULL;
		return -EINVAL;
	}
	memcpy(kr->key[kr->n], key, SEALED_KEY_SIZE);
	sealed_key_id(key, kr->id[kr->n++]);
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

static int add_trust(struct keyring *kr, const char *path, char **ret_msg)
{
	int err = sealed_trust_load(kr->trust, path);

	if (!err)
		return 0;
	if (asprintf(ret_msg, "trust %s: %s", path,
		     err == -EINVAL  ? "not an Ed25519 public key in PEM "
				       "(openssl pkey -pubout)"
		     : err == -E2BIG ? "more than 256 keys (SEALED_TRUST_MAX)"
				     : strerror(-err)) < 0)
		*ret_msg = NULL;
	return -EINVAL;
}

/* Every regular file of directory @dir not starting with '.' is added
 * with @add (a key, a public key); @name: the option, for messages. */
static int add_dir(struct keyring *kr, const char *dir, const char *name,
		   int (*add)(struct keyring *, const char *, char **),
		   char **ret_msg)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int err = 0;

	if (!d) {
		err = -errno;
		if (asprintf(ret_msg, "%s %s: %s", name, dir, strerror(-err)) <
		    0)
			*ret_msg = NULL;
		return -EINVAL;
	}
	while (!err && (e = readdir(d))) {
		char path[4096 + 256 + 2];
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		err = add(kr, path, ret_msg);
	}
	closedir(d);
	return err;
}

/* Option @name's @path: a file, or a directory of them, each @add'ed. */
static int add_path(struct keyring *kr, const char *path, const char *name,
		    int (*add)(struct keyring *, const char *, char **),
		    char **ret_msg)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return add_dir(kr, path, name, add, ret_msg);
	return add(kr, path, ret_msg);
}

static int sealed_config_new(const struct options *opts, void **ret_cfg,
			     char **ret_msg)
{
	struct keyring *kr = calloc(1, sizeof(*kr));
	int err = 0;

	if (!kr)
		return -ENOMEM;
	/* Always on: without keys, sealed files still list as NAME (their
	 * reads fail with EACCES), never as ciphertext under NAME.sealed. */
	if (opts->key_file[0])
		err = add_path(kr, opts->key_file, "key_file", add_key,
			       ret_msg);
	if (!err && opts->trust[0]) {
		err = sealed_trust_new(&kr->trust);
		if (!err)
			err = add_path(kr, opts->trust, "trust", add_trust,
				       ret_msg);
		if (!err && !sealed_trust_count(kr->trust)) {
			if (asprintf(ret_msg, "trust %s: no public key in it",
				     opts->trust) < 0)
				*ret_msg = NULL;
			err = -EINVAL;
		}
	}
	if (err) {
		keyring_free(kr);
		return err;
	}
	*ret_cfg = kr;
	return 0;
}

static const uint8_t *key_for(const struct keyring *kr, const uint8_t *id)
{
	for (size_t i = 0; i < kr->n; i++)
		if (!memcmp(kr->id[i], id, SEALED_ID_SIZE))
			return kr->key[i];
	return NULL;
}

static size_t sealed_shown_len(void *cfg, const char *name, uint64_t size)
{
	size_t len = strlen(name), sl = strlen(SEALED_OBJECT_SUFFIX);

	if (size < SEALED_FOOTER_SIZE || len <= sl ||
	    strcmp(name + len - sl, SEALED_OBJECT_SUFFIX))
		return 0;
	return len - sl;
}

static void sealed_first_range(void *cfg, uint64_t size, uint64_t *ret_off,
			       size_t *ret_len)
{
	*ret_len = size < TAIL_FIRST ? (size_t)size : TAIL_FIRST;
	*ret_off = size - *ret_len;
}

static int sealed_open(void *cfg, uint64_t size, uint64_t off, const char *buf,
		       size_t len, void **priv, uint64_t *ret_size,
		       uint64_t *ret_off, size_t *ret_len)
{
	const struct keyring *kr = cfg;
	struct sealed_obj *o;
	const uint8_t *key;
	uint8_t id[SEALED_ID_SIZE];
	uint64_t tsize;
	int err;

	err = sealed_tail_size(buf, len, size, &tsize, id);
	if (!err && tsize > len) {
		if (len > TAIL_FIRST || tsize > TAIL_MAX)
			return -EPROTO;
		*ret_len = (size_t)tsize;
		*ret_off = size - tsize;
		return 1;
	}
	if (err)
		return err;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	memcpy(o->key_id, id, SEALED_ID_SIZE);
	if (kr->trust) {
		/* before the key: refused whether the mount has it or not */
		err = sealed_verify(buf, len, size, kr->trust, o->signer);
		if (err == -EBADMSG)
			STAT_ADD(decrypt_failed, 1);
		if (err == -ENODATA || err == -ENOKEY || err == -EBADMSG)
			o->refused = err;
		else if (err) {
			free(o);
			return err;
		}
	}
	key = o->refused ? NULL : key_for(kr, id);
	if (key) {
		err = kr->trust ? sealed_parse_trusted(buf, len, size, key,
						       kr->trust, &o->s)
				: sealed_parse(buf, len, size, key, &o->s);
		if (err == -EBADMSG) {
			STAT_ADD(decrypt_failed, 1);
			err = DECODER_EAUTH;
		}
		if (err) {
			free(o);
			return err;
		}
		*ret_size = o->s->stored.size;
	} else {
		/* Listed with its footer's size (unauthenticated: nothing
		 * is ever read from it). */
		const uint8_t *f =
			(const uint8_t *)buf + len - SEALED_FOOTER_SIZE;
		uint64_t plain = 0;

		for (int i = 7; i >= 0; i--)
			plain = plain << 8 | f[16 + i];
		/* no more than its frames can hold */
		if (plain > (uint64_t)(tsize / SEALED_ENTRY_SIZE) *
				    SEALED_MAX_FRAME_SIZE) {
			free(o);
			return -EPROTO;
		}
		*ret_size = plain;
	}
	*priv = o;
	return 0;
}

static int sealed_plan(const struct decoded *d, uint64_t off, size_t len,
		       uint64_t *ret_off, size_t *ret_len, bool *ret_in_place)
{
	const struct sealed_obj *o = d->priv;
	const struct zstd_seekable_frame *fr;
	uint32_t first, count;

	if (!o->s)
		return -EACCES; /* nothing fetched: the key is missing */
	zstd_seekable_range(&o->s->stored, off, len, &first, &count);
	if (!count)
		return -EINVAL;
	fr = &o->s->stored.frames[first + count - 1];
	*ret_off = o->s->stored.frames[first].coff;
	*ret_len = (size_t)(fr->coff + fr->csize - *ret_off);
	*ret_in_place = false; /* frames open from one buffer into another */
	return 0;
}

/* An opening context per thread, freed with it. */
static pthread_key_t dctx_key;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;

static void dctx_destroy(void *p)
{
	sealed_dctx_free(p);
}

static void dctx_key_init(void)
{
	pthread_key_create(&dctx_key, dctx_destroy);
}

static struct sealed_dctx *thread_dctx(void)
{
	struct sealed_dctx *dc;

	pthread_once(&dctx_once, dctx_key_init);
	dc = pthread_getspecific(dctx_key);
	if (!dc && !sealed_dctx_new(&dc))
		pthread_setspecific(dctx_key, dc);
	return dc;
}

static int sealed_decode(const struct decoded *d, uint64_t off, size_t len,
			 const char *src, size_t src_len, char *dst)
{
	const struct sealed_obj *o = d->priv;
	struct sealed_dctx *dc = thread_dctx();
	ssize_t got;

	if (!o->s)
		return -EACCES;
	if (!dc)
		return -ENOMEM;
	got = sealed_read(dc, o->s, off, len, src, src_len, dst);
	if (got == (ssize_t)len)
		return 0;
	if (got == -ENOMEM)
		return -ENOMEM;
	STAT_ADD(decrypt_failed, 1);
	return DECODER_EAUTH;
}

/* Stored frames open as they arrive (sealed_stream_new(): not zstd). */
static int sealed_stream_new_op(const struct decoded *d, uint64_t off,
				size_t len, char *dst, void **ret)
{
	const struct sealed_obj *o = d->priv;

	if (!o->s)
		return -EACCES;
	return sealed_stream_new(o->s, off, len, dst,
				 (struct sealed_stream **)ret);
}

static int sealed_stream_put_op(void *st, const char *p, size_t n)
{
	int r = sealed_stream_put(st, p, n);

	if (r == -EBADMSG) {
		STAT_ADD(decrypt_failed, 1);
		return DECODER_EAUTH;
	}
	return r == -ENOMEM ? r : r ? -EIO : 0;
}

static int sealed_stream_end_op(void *st)
{
	return sealed_stream_end(st) ? -EIO : 0;
}

static void sealed_stream_free_op(void *st)
{
	sealed_stream_free(st);
}

/* @n bytes @b as 2 @n hex digits and a NUL into @out. */
static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Why trust= refuses @o, into @buf. */
static void refusal(const struct sealed_obj *o, char *buf, size_t cap)
{
	char pub[2 * SEALED_PUBKEY_SIZE + 1];

	hex(o->signer, SEALED_PUBKEY_SIZE, pub);
	if (o->refused == -ENODATA)
		snprintf(buf, cap,
			 "not signed by a publisher, and trust= "
			 "accepts only signed objects");
	else if (o->refused == -ENOKEY)
		snprintf(buf, cap,
			 "signed by public key %s, which trust= does not hold",
			 pub);
	else
		snprintf(buf, cap,
			 "its publisher signature (by public key %s) does not "
			 "hold: changed after signing",
			 pub);
}

static bool sealed_refused(const void *priv, char *buf, size_t cap)
{
	const struct sealed_obj *o = priv;

	if (!o->refused)
		return false;
	refusal(o, buf, cap);
	return true;
}

static void sealed_describe(const struct decoded *d, uint64_t off, size_t len,
			    const char *src, char *buf, size_t cap)
{
	const struct sealed_obj *o = d->priv;
	char id[2 * SEALED_ID_SIZE + 1];
	uint32_t first, count;

	if (o->refused) {
		snprintf(buf, cap, "%s, ", d->obj.key);
		refusal(o, buf + strlen(buf), cap - strlen(buf));
		return;
	}
	if (!o->s) {
		hex(o->key_id, SEALED_ID_SIZE, id);
		snprintf(buf, cap,
			 "%s, sealed with key id %s, which no key_file holds",
			 d->obj.key, id);
		return;
	}
	zstd_seekable_range(&o->s->stored, off, len, &first, &count);
	snprintf(buf, cap, "frames %" PRIu32 "-%" PRIu32 " of %s", first,
		 first + (count ? count - 1 : 0), d->obj.key);
}

static int sealed_seal_block(const struct decoded *d, uint64_t off, size_t len,
			     const char *src, char *dst,
			     unsigned char tag[DECODER_TAG_SIZE])
{
	const struct sealed_obj *o = d->priv;
	struct sealed_dctx *dc = thread_dctx();

	if (!o->s)
		return -EACCES;
	if (!dc)
		return -ENOMEM;
	return sealed_block_seal(dc, o->s, off, len, src, dst, tag);
}

static int sealed_open_block(const struct decoded *d, uint64_t off, size_t len,
			     char *buf,
			     const unsigned char tag[DECODER_TAG_SIZE])
{
	const struct sealed_obj *o = d->priv;
	struct sealed_dctx *dc = thread_dctx();
	int err;

	if (!o->s)
		return -EACCES;
	if (!dc)
		return -ENOMEM;
	err = sealed_block_open(dc, o->s, off, len, buf, tag);
	return err == -EBADMSG ? DECODER_EAUTH : err;
}

static void sealed_free_obj(void *priv)
{
	struct sealed_obj *o = priv;

	if (!o)
		return;
	sealed_free(o->s);
	free(o);
}

const struct decoder_ops sealed_decoder_ops = {
	.name = "sealed",
	.what = "sealed index",
	.config_new = sealed_config_new,
	.config_free = keyring_free,
	.shown_len = sealed_shown_len,
	.first_range = sealed_first_range,
	.open = sealed_open,
	.plan = sealed_plan,
	.decode = sealed_decode,
	.stream_new = sealed_stream_new_op,
	.stream_put = sealed_stream_put_op,
	.stream_end = sealed_stream_end_op,
	.stream_free = sealed_stream_free_op,
	.describe = sealed_describe,
	.seal_block = sealed_seal_block,
	.open_block = sealed_open_block,
	.refused = sealed_refused,
	.free = sealed_free_obj,
};
