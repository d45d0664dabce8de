/* The Hugging Face Hub's conventions that hf:// (source_hf.c) parses:
 * source URLs, Link pagination, signed URLs' expiry, validators, origins.
 * Pure functions, no I/O; thread-safe. */
#ifndef WFS_FS_HF_API_H
#define WFS_FS_HF_API_H

#include <stdbool.h>
#include <time.h>

/* hf://[datasets/|spaces/|models/]ORG/NAME[@REVISION][/DIR] */
struct hf_spec {
	char *kind;   /* "models" (default), "datasets" or "spaces" */
	char *repo;   /* "ORG/NAME" */
	char *rev;    /* REVISION, percent-decoded; default "main" */
	char *subdir; /* DIR without slashes at either end, or "" */
};

/*
 * hf_spec_parse() - split @spec (starting "hf://").
 * @return 0 and *ret (release with hf_spec_done()), -EINVAL for a
 * malformed one (ORG/NAME missing, a name with characters the Hub does
 * not allow, "..", an empty or multi-line REVISION), -ENOMEM.
 */
int hf_spec_parse(const char *spec, struct hf_spec *ret);
void hf_spec_done(struct hf_spec *sp);

/* hf_link_next() - the URL of rel="next" in a Link header value
 * (RFC 8288, as the Hub's tree API pages), malloc'd, or NULL. */
char *hf_link_next(const char *link);

/* hf_url_expiry() - when signed @url stops working: CloudFront's
 * Expires=EPOCH, or S3's X-Amz-Date=YYYYMMDDTHHMMSSZ plus
 * X-Amz-Expires=SECONDS; 0 when it does not say. */
time_t hf_url_expiry(const char *url);

/* hf_etag_normalize() - a validator without W/ and quotes ("abc" ->
 * abc), malloc'd; NULL for NULL or out of memory. */
char *hf_etag_normalize(const char *etag);

/* hf_same_origin() - whether @url has the scheme, host and port of
 * @endpoint ("https://host[:port][/path]"): who may get the token. */
bool hf_same_origin(const char *endpoint, const char *url);

#endif
