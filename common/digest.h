/* Digests of byte strings, as lowercase hex: SHA-256 (OpenSSL libcrypto)
 * and XXH3-64 (libxxhash). Shared by the daemon and the tools.
 * Thread-safe (each struct digest belongs to one caller). */
#ifndef WFS_COMMON_DIGEST_H
#define WFS_COMMON_DIGEST_H

#include <stddef.h>

enum digest_algo {
	DIGEST_SHA256,
	DIGEST_XXH3,
};

/* Room for the longest hex digest and its NUL. */
#define DIGEST_HEX_MAX 65

/* digest_parse() - "sha256" or "xxh3". @return 0, or -EINVAL. */
int digest_parse(const char *name, enum digest_algo *ret_algo);

/* digest_name() - "sha256" or "xxh3". */
const char *digest_name(enum digest_algo algo);

struct digest;

/* digest_new() - start a digest. @return 0 and *ret, or -ENOMEM. */
int digest_new(enum digest_algo algo, struct digest **ret_digest);

/* digest_update() - add @len bytes. @return 0, or -EIO. */
int digest_update(struct digest *d, const void *buf, size_t len);

/*
 * digest_final() - write the hex digest (NUL-terminated) to @hex, which
 * holds DIGEST_HEX_MAX bytes. The digest cannot be updated afterwards.
 * @return 0, or -EIO.
 */
int digest_final(struct digest *d, char hex[DIGEST_HEX_MAX]);

/* digest_free() - NULL ok. */
void digest_free(struct digest *d);

/* digest_buf() - digest of one buffer. @return 0 or a negative errno. */
int digest_buf(enum digest_algo algo, const void *buf, size_t len,
	       char hex[DIGEST_HEX_MAX]);

#endif
