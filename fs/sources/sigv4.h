/* AWS Signature Version 4 (AWS4-HMAC-SHA256) on OpenSSL's libcrypto.
 *
 * sigv4_sign() is a pure function of its inputs (no clock, no
 * environment), so it is tested against the official AWS test suite.
 * Thread-safe (no shared state). */
#ifndef WFS_FS_SIGV4_H
#define WFS_FS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* SHA-256 of the empty string: x-amz-content-sha256 of a GET or HEAD. */
#define SIGV4_EMPTY_SHA256                                                     \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

struct sigv4_header {
	const char *name;
	const char *value;
};

struct sigv4_request {
	const char *method; /* "GET" */
	/* The path as sent on the wire, already URI-encoded ("/a%20b"). */
	const char *path;
	/* The query as sent, without '?', or NULL. Pairs are decoded and
	 * encoded again the canonical way, then sorted. */
	const char *query;
	/* Every header to sign, Host and X-Amz-Date included; names in any
	 * case, repeated names allowed (values joined in order). */
	const struct sigv4_header *headers;
	size_t nheaders;
	/* Hex SHA-256 of the body, or SIGV4_UNSIGNED_PAYLOAD. */
	const char *payload_hash;
	/* Services other than S3 remove "." and ".." segments and empty
	 * segments from the path and encode it once more; S3 signs the
	 * path exactly as sent (false). */
	bool normalize_path;
};

struct sigv4_key {
	const char *access_key_id;
	const char *secret_access_key;
	const char *region;  /* "us-east-1" */
	const char *service; /* "s3" */
};

/* What sigv4_sign() produced; the intermediate steps are kept for tests
 * and debugging. None of them contains the secret key. */
struct sigv4_signature {
	char *canonical_request;
	char *string_to_sign;
	char *signed_headers; /* "host;x-amz-date" */
	char *authorization;  /* value of the Authorization header */
};

/*
 * sigv4_sign() - sign @req with @key at @amz_date ("20150830T123600Z",
 * the value of the X-Amz-Date header, which must be among the headers).
 * @return 0 and *ret (release with sigv4_signature_done()), -EINVAL for a
 * malformed date, header name or argument, -ENOMEM.
 */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_key *key,
	       const char *amz_date, struct sigv4_signature *ret);

void sigv4_signature_done(struct sigv4_signature *s);

/* sigv4_amz_date() - @t as "YYYYMMDDTHHMMSSZ" (UTC) into @out. */
void sigv4_amz_date(time_t t, char out[17]);

/* sigv4_sha256_hex() - lowercase hex SHA-256 of @data into @out. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/*
 * sigv4_uri_encode() - percent-encode @len bytes of @s as SigV4 wants:
 * everything but A-Z a-z 0-9 - . _ ~ becomes %XX (uppercase hex); '/' is
 * kept when @keep_slash (object key paths) and encoded otherwise (query
 * names and values).
 * @return a malloc'd string, or NULL when out of memory.
 */
char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash);

/*
 * sigv4_uri_decode() - decode %XX sequences of @len bytes of @s (malformed
 * ones are kept as they are); '+' becomes a space only when @plus_space.
 * The result may contain NUL bytes: its length is in *ret_len.
 * @return a malloc'd, NUL-terminated string, or NULL when out of memory.
 */
char *sigv4_uri_decode(const char *s, size_t len, bool plus_space,
		       size_t *ret_len);

#endif
