#include "digest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <xxhash.h>

struct digest {
	enum digest_algo algo;
	EVP_MD_CTX *sha;   /* DIGEST_SHA256 */
	XXH3_state_t *xxh; /* DIGEST_XXH3 */
};

int digest_parse(const char *name, enum digest_algo *ret_algo)
{
	if (!strcmp(name, "sha256"))
		*ret_algo = DIGEST_SHA256;
	else if (!strcmp(name, "xxh3"))
		*ret_algo = DIGEST_XXH3;
	else
		return -EINVAL;
	return 0;
}

const char *digest_name(enum digest_algo algo)
{
	return algo == DIGEST_XXH3 ? "xxh3" : "sha256";
}

int digest_new(enum digest_algo algo, struct digest **ret_digest)
{
	struct digest *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->algo = algo;
	if (algo == DIGEST_SHA256) {
		d->sha = EVP_MD_CTX_new();
		if (!d->sha ||
		    EVP_DigestInit_ex(d->sha, EVP_sha256(), NULL) != 1)
			goto fail;
	} else {
		d->xxh = XXH3_createState();
		if (!d->xxh || XXH3_64bits_reset(d->xxh) != XXH_OK)
			goto fail;
	}
	*ret_digest = d;
	return 0;
fail:
	digest_free(d);
	return -ENOMEM;
}

int digest_update(struct digest *d, const void *buf, size_t len)
{
	if (d->sha)
		return EVP_DigestUpdate(d->sha, buf, len) == 1 ? 0 : -EIO;
	return XXH3_64bits_update(d->xxh, buf, len) == XXH_OK ? 0 : -EIO;
}

static void to_hex(const unsigned char *b, size_t n, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		hex[2 * i] = digits[b[i] >> 4];
		hex[2 * i + 1] = digits[b[i] & 15];
	}
	hex[2 * n] = '\0';
}

int digest_final(struct digest *d, char hex[DIGEST_HEX_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	XXH64_canonical_t c;

	if (d->sha) {
		if (EVP_DigestFinal_ex(d->sha, md, &n) != 1 || n > 32)
			return -EIO;
		to_hex(md, n, hex);
		return 0;
	}
	/* Canonical (big-endian) order, as xxhsum prints it. */
	XXH64_canonicalFromHash(&c, XXH3_64bits_digest(d->xxh));
	to_hex(c.digest, sizeof(c.digest), hex);
	return 0;
}

void digest_free(struct digest *d)
{
	if (!d)
		return;
	EVP_MD_CTX_free(d->sha);
	XXH3_freeState(d->xxh);
	free(d);
}

int digest_buf(enum digest_algo algo, const void *buf, size_t len,
	       char hex[DIGEST_HEX_MAX])
{
	struct digest *d;
	int r = digest_new(algo, &d);

	if (r < 0)
		return r;
	r = digest_update(d, buf, len);
	if (r == 0)
		r = digest_final(d, hex);
	digest_free(d);
	return r;
}
