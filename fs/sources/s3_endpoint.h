/* s3:// endpoint and region resolution (s3_endpoint.c). */
#ifndef WFS_FS_S3_ENDPOINT_H
#define WFS_FS_S3_ENDPOINT_H

#include <stdbool.h>

struct options;

/* s3_bucket_ok() - whether @b is a usable bucket name (letters, digits,
 * '.', '-', '_'; 1..255 bytes). */
bool s3_bucket_ok(const char *b);

/*
 * s3_region_resolve() - the signing region: -o region, $AWS_REGION,
 * $AWS_DEFAULT_REGION, the profile's region, else us-east-1.
 * @return a malloc'd string, or NULL when out of memory.
 */
char *s3_region_resolve(const struct options *opts);

/*
 * s3_endpoint_resolve() - where requests for @bucket in @region go: the
 * endpoint of -o endpoint, $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else
 * AWS; path-style when asked, or when the bucket or host cannot be
 * virtual-hosted. Sets *ret_origin ("https://host[:port]"), *ret_host (the
 * Host header) and *ret_base_path ("" or "/bucket", after any path of the
 * endpoint), all malloc'd.
 * @return 0, -EINVAL and *ret_msg for a malformed endpoint, or -ENOMEM.
 */
int s3_endpoint_resolve(const struct options *o, const char *bucket,
			const char *region, char **ret_origin, char **ret_host,
			char **ret_base_path, char **ret_msg);

#endif
