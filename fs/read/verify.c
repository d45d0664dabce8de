#include "verify.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "log.h"
#include "source.h"
#include "stats.h"
#include "tree.h"

struct verify {
	pthread_mutex_t lock;
	EVP_MD_CTX *ctx; /* protected by lock, as is everything below */
	uint32_t gen;	 /* the version being hashed */
	uint64_t done;	 /* bytes [0, done) hashed */
	uint64_t seen;	 /* the furthest byte a reader got, within reach */
	bool finished;	 /* checked (or given up on) */
	int want_state;	 /* 0 not asked yet, 1 want holds it, -1 none */
	char want[65];	 /* the SHA-256 the source lists */
	bool failed;	 /* read only, once set (atomic enough: a bool) */
};

/* The source asked for checksums it keeps beside objects (S3). */
static struct source *checksum_source;

void verify_set_source(struct source *src)
{
	checksum_source = src;
}

/* The 64 hex digits @n's validator names, into @out; false if none. */
static bool expected(struct node *n, char out[65])
{
	const char *e;
	size_t len;
	bool ok = false;

	pthread_mutex_lock(&n->lock);
	e = n->etag;
	if (e) {
		if (*e == '"')
			e++;
		len = strcspn(e, "\"");
		if (len == 64) {
			ok = true;
			for (size_t i = 0; i < 64 && ok; i++)
				ok = isxdigit((unsigned char)e[i]);
			if (ok) {
				memcpy(out, e, 64);
				out[64] = '\0';
			}
		}
	}
	pthread_mutex_unlock(&n->lock);
	return ok;
}

/* @n's state, made on first use; NULL when out of memory. */
static struct verify *state_of(struct node *n)
{
	struct verify *v;

	pthread_mutex_lock(&n->lock);
	v = n->verify;
	if (!v && (v = calloc(1, sizeof(*v)))) {
		pthread_mutex_init(&v->lock, NULL);
		v->ctx = EVP_MD_CTX_new();
		if (!v->ctx || !EVP_DigestInit_ex(v->ctx, EVP_sha256(), NULL)) {
			EVP_MD_CTX_free(v->ctx);
			pthread_mutex_destroy(&v->lock);
			free(v);
			v = NULL;
		} else {
			v->gen = n->generation;
			n->verify = v;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return v;
}

int verify_check(struct node *n)
{
	struct verify *v;
	bool failed;

	pthread_mutex_lock(&n->lock);
	v = n->verify;
	pthread_mutex_unlock(&n->lock);
	if (!v)
		return 0;
	pthread_mutex_lock(&v->lock);
	failed = v->failed;
	pthread_mutex_unlock(&v->lock);
	return failed ? -EIO : 0;
}

/* With v->lock held: the run reached the end; compare. */
static int finish(struct verify *v, struct node *n, const char *want)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	char got[2 * EVP_MAX_MD_SIZE + 1];
	unsigned mdlen = 0;

	v->finished = true;
	if (!EVP_DigestFinal_ex(v->ctx, md, &mdlen))
		return 0;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(got + 2 * i, 3, "%02x", md[i]);
	if (!strcasecmp(got, want)) {
		STAT_ADD(verified, 1);
		log_debug("%s: sha256 verified", n->key);
		return 0;
	}
	v->failed = true;
	STAT_ADD(verify_failed, 1);
	log_warn("%s: sha256 mismatch: the source lists %s, the bytes read "
		 "hash to %s; the file reads EIO from now on",
		 n->key, want, got);
	return -EIO;
}

/* With v->lock held: hash [v->done, v->seen) from the cache. */
static int catch_up(struct verify *v, struct cache *c, struct node *n,
		    uint64_t fsize)
{
	uint64_t bs = cache_block_size(c);

	while (v->done < v->seen) {
		uint64_t idx = v->done / bs, boff = v->done - idx * bs;
		uint64_t blen = fsize - idx * bs < bs ? fsize - idx * bs : bs;
		uint64_t take = blen - boff;
		struct block *b;
		int err;

		if (take > v->seen - v->done)
			take = v->seen - v->done;
		err = cache_get(c, n, v->gen, idx, blen, &b);
		if (err)
			return err; /* the reader will see it; try later */
		EVP_DigestUpdate(v->ctx, b->data + boff, take);
		cache_unref(c, b);
		v->done += take;
	}
	return 0;
}

int verify_feed(struct cache *c, struct node *n, uint32_t gen, uint64_t fsize,
		uint64_t pos, const char *data, size_t len)
{
	struct verify *v;
	int err = 0;

	v = state_of(n);
	if (!v)
		return 0; /* out of memory: not checked, still served */
	pthread_mutex_lock(&v->lock);
	if (v->failed) {
		err = -EIO;
		goto out;
	}
	if (v->gen != gen) { /* a new version: start again */
		EVP_DigestInit_ex(v->ctx, EVP_sha256(), NULL);
		v->gen = gen;
		v->done = v->seen = 0;
		v->finished = false;
		v->want_state = 0;
	}
	if (v->finished || pos > v->done + VERIFY_WINDOW)
		goto out;
	if (pos + len > v->seen)
		v->seen = pos + len;
	/* What to check against, asked once per version, when a read from
	 * the start begins: the validator (hf://: the LFS sha256), else the
	 * source's checksum (S3), else nothing. */
	if (!v->want_state) {
		if (pos != 0)
			goto out;
		int e = -ENODATA;

		if (expected(n, v->want))
			e = 0;
		else if (checksum_source && checksum_source->ops->sha256)
			e = checksum_source->ops->sha256(checksum_source, n,
							 v->want);
		if (e && e != -ENODATA)
			log_debug("%s: no SHA-256 to check against: %s", n->key,
				  strerror(-e));
		if (!e)
			v->want_state = 1;
		else if (e == -ENODATA || e == -ESTALE)
			v->want_state = -1;
		else
			goto out; /* asked again by the next read from 0 */
	}
	if (v->want_state < 0) {
		v->finished = true; /* nothing to check this version against */
		goto out;
	}
	if (pos > v->done)
		goto out; /* ahead: caught up when the run gets here */
	if (pos + len > v->done) {
		size_t skip = (size_t)(v->done - pos);

		EVP_DigestUpdate(v->ctx, data + skip, len - skip);
		v->done = pos + len;
	}
	if (catch_up(v, c, n, fsize) == 0 && v->done == fsize)
		err = finish(v, n, v->want);
out:
	pthread_mutex_unlock(&v->lock);
	return err;
}

void verify_free(struct verify *v)
{
	if (!v)
		return;
	EVP_MD_CTX_free(v->ctx);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
