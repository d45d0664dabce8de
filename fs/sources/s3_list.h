/* S3 ListObjectsV2 and S3 error documents: query strings and XML parsing
 * (expat). Pure functions, no I/O; thread-safe (no shared state). */
#ifndef WFS_FS_S3_LIST_H
#define WFS_FS_S3_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Objects per page S3 returns at most; asking for more gets this many. */
#define S3_LIST_MAX_KEYS 1000

struct s3_object {
	char *key; /* decoded; may contain NUL bytes: see key_len */
	size_t key_len;
	uint64_t size;
	char *etag; /* as sent, quotes included, or NULL */
	struct timespec mtime;
};

struct s3_list_page {
	struct s3_object *objects;
	size_t nobjects;
	/* CommonPrefixes (a listing with a delimiter): only key, key_len */
	struct s3_object *prefixes;
	size_t nprefixes;
	bool truncated;
	char *next_token; /* NextContinuationToken, or NULL */
};

/*
 * s3_list_query() - the query string of a ListObjectsV2 request for the
 * keys under @prefix (may be "" or NULL), continuing after @token (NULL
 * for the first page): canonical SigV4 order and encoding, so it is sent
 * and signed as is. Asks for url encoding-type so any key survives XML.
 * @return a malloc'd string, or NULL when out of memory.
 */
char *s3_list_query(const char *prefix, const char *token);

/* s3_list_query_dir() - the same, with delimiter=/ when @delimit: one
 * "directory" level, deeper keys rolled up into CommonPrefixes. */
char *s3_list_query_dir(const char *prefix, const char *token, bool delimit);

/*
 * s3_list_parse() - parse a ListBucketResult document of @len bytes.
 * Keys are decoded (the request asked for encoding-type=url).
 * @return 0 and *ret (release with s3_list_page_done()), -EBADMSG for
 * malformed XML or another document, -ENOMEM.
 */
int s3_list_parse(const char *xml, size_t len, struct s3_list_page *ret);
void s3_list_page_done(struct s3_list_page *p);

/* An S3 (or STS) error document: <Error><Code>...</Code>... */
struct s3_error {
	char *code;	/* "AccessDenied", or NULL */
	char *message;	/* or NULL */
	char *region;	/* <Region> of AuthorizationHeaderMalformed, or NULL */
	char *endpoint; /* <Endpoint> of PermanentRedirect, or NULL */
};

/*
 * s3_error_parse() - the first <Error> element of @len bytes of @xml
 * (S3's <Error> root or STS's <ErrorResponse><Error>).
 * @return 0 and *ret (release with s3_error_done()), -EBADMSG when @xml
 * is not an error document, -ENOMEM.
 */
int s3_error_parse(const char *xml, size_t len, struct s3_error *ret);
void s3_error_done(struct s3_error *e);

/*
 * s3_parse_time() - an ISO 8601 UTC time ("2009-10-12T17:50:30.000Z",
 * fractions and "+00:00" accepted) into *ret.
 * @return 0, or -EINVAL.
 */
int s3_parse_time(const char *s, struct timespec *ret);

/*
 * Bounds on one whole listing (every page or directory index of one
 * list() call), shared by the S3 and HTTP sources: a hostile or broken
 * server cannot make a listing use unbounded requests, bytes, objects or
 * memory. Continuation tokens are checked in constant memory: each is
 * at most LIST_MAX_TOKEN bytes, and only hashes of the last
 * LIST_RECENT_TOKENS are kept to notice a server going round in a cycle
 * (a longer cycle ends at LIST_MAX_REQUESTS).
 */
#define LIST_MAX_REQUESTS 100000
#define LIST_MAX_BYTES (8ull << 30)
#define LIST_MAX_OBJECTS 10000000
#define LIST_MAX_TOKEN 4096
#define LIST_RECENT_TOKENS 64u

struct list_budget {
	size_t requests;
	uint64_t bytes;
	size_t objects;
	uint64_t recent[LIST_RECENT_TOKENS]; /* hashes of recent tokens */
	size_t ntokens;
	/* set by list_budget_init() (zero: LIST_MAX_OBJECTS, no time
	 * limit): -o list_time_max and list_entries_max */
	uint64_t deadline_ms; /* CLOCK_MONOTONIC */
	unsigned max_s;
	size_t max_objects;
	bool lazy;     /* the message suggests list=lazy when not */
	char why[192]; /* the message for a passed option bound */
};

/*
 * list_budget_init() - start a listing's budget: it may take @max_s
 * seconds (0: no limit) and name @max_objects entries (0:
 * LIST_MAX_OBJECTS); @lazy says whether the mount lists lazily.
 */
void list_budget_init(struct list_budget *b, unsigned max_s, size_t max_objects,
		      bool lazy);

/*
 * list_budget_request() - account one response of @bytes bytes naming
 * @objects entries (call once per page or directory index, after it
 * arrived).
 * @return 0, or -E2BIG and *ret_why ("more than 100000 requests", a
 * string that lives as long as @b) when a bound is passed. The time and
 * entries bounds name the option that raises them.
 */
int list_budget_request(struct list_budget *b, uint64_t bytes, size_t objects,
			const char **ret_why);

/*
 * list_budget_token() - check continuation @token before following it.
 * @return 0; -E2BIG and *ret_why when it is longer than LIST_MAX_TOKEN;
 * -ELOOP and *ret_why when it repeats one of the recent tokens.
 */
int list_budget_token(struct list_budget *b, const char *token,
		      const char **ret_why);

#endif
