/* ListObjectsV2 (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html)
 * and S3 error documents, parsed with expat. */
#include "s3_list.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <expat.h>
#include <xxhash.h>

#include "sigv4.h"

#define MAX_DEPTH 16
#define MAX_TEXT (64u << 10)
#define STR_(x) #x
#define STR(x) STR_(x)

char *s3_list_query(const char *prefix, const char *token)
{
	return s3_list_query_dir(prefix, token, false);
}

char *s3_list_query_dir(const char *prefix, const char *token, bool delimit)
{
	char *p = NULL, *t = NULL, *q = NULL;

	if (!prefix)
		prefix = "";
	p = sigv4_uri_encode(prefix, strlen(prefix), false);
	if (token)
		t = sigv4_uri_encode(token, strlen(token), false);
	if (!p || (token && !t))
		goto out;
	/* Sorted by name: the canonical order, signed as sent. */
	if (asprintf(&q,
		     "%s%s%s%sencoding-type=url&list-type=2&max-keys=%d%s%s",
		     t ? "continuation-token=" : "", t ? t : "", t ? "&" : "",
		     delimit ? "delimiter=%2F&" : "", S3_LIST_MAX_KEYS,
		     *prefix ? "&prefix=" : "", *prefix ? p : "") < 0)
		q = NULL;
out:
	free(p);
	free(t);
	return q;
}

/* Parser state shared by both document kinds. */
struct parse {
	XML_Parser xp;
	int err;
	int depth;
	const char *path[MAX_DEPTH]; /* element names (static strings) */
	char *text;
	size_t text_len;
	bool in_text;

	/* ListBucketResult */
	struct s3_list_page *page;
	size_t cap;
	size_t pcap; /* of page->prefixes */
	bool url_encoded;
	struct s3_object *cur; /* the <Contents> being read, or NULL */
	bool cur_has_size;

	/* Error */
	struct s3_error *error;
	bool found_error;
};

/* The element names we look at, interned so path[] needs no copies. */
static const char *const names[] = {
	"ListBucketResult",
	"Contents",
	"Key",
	"Size",
	"ETag",
	"LastModified",
	"IsTruncated",
	"NextContinuationToken",
	"EncodingType",
	"Error",
	"ErrorResponse",
	"Code",
	"Message",
	"Region",
	"Endpoint",
	"CommonPrefixes",
	"Prefix",
};

static const char *intern(const char *name)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i]))
			return names[i];
	return "";
}

static bool at(const struct parse *p, int depth, const char *a, const char *b,
	       const char *c)
{
	const char *want[3] = { a, b, c };

	if (p->depth != depth)
		return false;
	for (int i = 0; i < depth && i < 3; i++)
		if (strcmp(p->path[i], want[i]))
			return false;
	return true;
}

static void fail(struct parse *p, int err)
{
	if (!p->err)
		p->err = err;
	XML_StopParser(p->xp, XML_FALSE);
}

static void on_start(void *arg, const XML_Char *name, const XML_Char **attrs)
{
	struct parse *p = arg;

	if (p->err)
		return;
	if (p->depth >= MAX_DEPTH) {
		fail(p, -EBADMSG);
		return;
	}
	p->path[p->depth++] = intern(name);
	p->text_len = 0;
	p->in_text = true;
	if (p->depth == 1 && p->page &&
	    strcmp(p->path[0], "ListBucketResult")) {
		fail(p, -EBADMSG);
		return;
	}
	if (p->page && at(p, 2, "ListBucketResult", "Contents", NULL)) {
		if (p->page->nobjects == p->cap) {
			size_t ncap = p->cap ? p->cap * 2 : 64;
			struct s3_object *o = reallocarray(p->page->objects,
							   ncap, sizeof(*o));

			if (!o) {
				fail(p, -ENOMEM);
				return;
			}
			p->page->objects = o;
			p->cap = ncap;
		}
		p->cur = &p->page->objects[p->page->nobjects++];
		memset(p->cur, 0, sizeof(*p->cur));
		p->cur_has_size = false;
	}
}

static void on_text(void *arg, const XML_Char *s, int len)
{
	struct parse *p = arg;
	char *t;

	if (p->err || !p->in_text || len <= 0)
		return;
	if ((size_t)len > MAX_TEXT - p->text_len) {
		fail(p, -EBADMSG);
		return;
	}
	t = realloc(p->text, p->text_len + (size_t)len + 1);
	if (!t) {
		fail(p, -ENOMEM);
		return;
	}
	memcpy(t + p->text_len, s, (size_t)len);
	p->text = t;
	p->text_len += (size_t)len;
	t[p->text_len] = '\0';
}

static int set_str(char **dst, const struct parse *p)
{
	char *s = strndup(p->text ? p->text : "", p->text_len);

	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EBADMSG;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EBADMSG;
	*ret = v;
	return 0;
}

static void list_end(struct parse *p)
{
	const char *leaf = p->path[p->depth - 1];
	int err = 0;

	if (p->text)
		p->text[p->text_len] = '\0';
	if (p->cur && p->depth == 3 && p->path[1] == names[1]) {
		struct s3_object *o = p->cur;

		if (!strcmp(leaf, "Key")) {
			err = set_str(&o->key, p);
			o->key_len = p->text_len;
		} else if (!strcmp(leaf, "Size")) {
			err = parse_u64(p->text ? p->text : "", &o->size);
			p->cur_has_size = !err;
		} else if (!strcmp(leaf, "ETag")) {
			err = set_str(&o->etag, p);
		} else if (!strcmp(leaf, "LastModified")) {
			if (s3_parse_time(p->text ? p->text : "", &o->mtime))
				o->mtime = (struct timespec){ 0 };
		}
	} else if (at(p, 2, "ListBucketResult", "Contents", NULL)) {
		if (!p->cur->key || !p->cur_has_size)
			err = -EBADMSG;
		p->cur = NULL;
	} else if (at(p, 3, "ListBucketResult", "CommonPrefixes", "Prefix")) {
		struct s3_list_page *pg = p->page;

		if (pg->nprefixes == p->pcap) {
			size_t ncap = p->pcap ? p->pcap * 2 : 16;
			struct s3_object *o =
				reallocarray(pg->prefixes, ncap, sizeof(*o));

			if (!o) {
				fail(p, -ENOMEM);
				return;
			}
			pg->prefixes = o;
			p->pcap = ncap;
		}
		memset(&pg->prefixes[pg->nprefixes], 0, sizeof(*pg->prefixes));
		err = set_str(&pg->prefixes[pg->nprefixes].key, p);
		if (!err)
			pg->prefixes[pg->nprefixes++].key_len = p->text_len;
	} else if (at(p, 2, "ListBucketResult", "IsTruncated", NULL)) {
		p->page->truncated = p->text && !strcmp(p->text, "true");
	} else if (at(p, 2, "ListBucketResult", "NextContinuationToken",
		      NULL)) {
		if (p->text_len)
			err = set_str(&p->page->next_token, p);
	} else if (at(p, 2, "ListBucketResult", "EncodingType", NULL)) {
		p->url_encoded = p->text && !strcmp(p->text, "url");
	}
	if (err)
		fail(p, err);
}

static void error_end(struct parse *p)
{
	const char *leaf = p->path[p->depth - 1];
	bool in_error = (p->depth == 2 && p->path[0] == names[9]) ||
			(p->depth == 3 && p->path[0] == names[10] &&
			 p->path[1] == names[9]);
	struct s3_error *e = p->error;
	int err = 0;

	if (p->depth == 1 && p->path[0] == names[9])
		p->found_error = true;
	if (p->depth == 2 && p->path[0] == names[10] && p->path[1] == names[9])
		p->found_error = true;
	if (!in_error)
		return;
	if (!strcmp(leaf, "Code"))
		err = set_str(&e->code, p);
	else if (!strcmp(leaf, "Message"))
		err = set_str(&e->message, p);
	else if (!strcmp(leaf, "Region"))
		err = set_str(&e->region, p);
	else if (!strcmp(leaf, "Endpoint"))
		err = set_str(&e->endpoint, p);
	if (err)
		fail(p, err);
}

static void on_end(void *arg, const XML_Char *name)
{
	struct parse *p = arg;

	if (p->err || p->depth <= 0)
		return;
	if (p->page)
		list_end(p);
	else
		error_end(p);
	p->depth--;
	p->text_len = 0;
	p->in_text = false;
}

static int run(struct parse *p, const char *xml, size_t len)
{
	int r = 0;

	if (len > INT_MAX)
		return -EBADMSG;
	p->xp = XML_ParserCreate("UTF-8");
	if (!p->xp)
		return -ENOMEM;
	XML_SetUserData(p->xp, p);
	XML_SetElementHandler(p->xp, on_start, on_end);
	XML_SetCharacterDataHandler(p->xp, on_text);
	if (XML_Parse(p->xp, xml, (int)len, XML_TRUE) != XML_STATUS_OK)
		r = p->err ? p->err : -EBADMSG;
	XML_ParserFree(p->xp);
	free(p->text);
	p->text = NULL;
	return r;
}

int s3_list_parse(const char *xml, size_t len, struct s3_list_page *ret)
{
	struct s3_list_page page = { 0 };
	struct parse p = { .page = &page };
	int r = run(&p, xml, len);

	if (!r && page.truncated && !page.next_token)
		r = -EBADMSG;
	for (size_t i = 0;
	     !r && p.url_encoded && i < page.nobjects + page.nprefixes; i++) {
		struct s3_object *o =
			i < page.nobjects ? &page.objects[i]
					  : &page.prefixes[i - page.nobjects];
		size_t n;
		char *k = sigv4_uri_decode(o->key, o->key_len, true, &n);

		if (!k) {
			r = -ENOMEM;
			break;
		}
		free(o->key);
		o->key = k;
		o->key_len = n;
	}
	if (r) {
		s3_list_page_done(&page);
		return r;
	}
	*ret = page;
	return 0;
}

void s3_list_page_done(struct s3_list_page *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nobjects; i++) {
		free(p->objects[i].key);
		free(p->objects[i].etag);
	}
	free(p->objects);
	for (size_t i = 0; i < p->nprefixes; i++)
		free(p->prefixes[i].key);
	free(p->prefixes);
	free(p->next_token);
	memset(p, 0, sizeof(*p));
}

int s3_error_parse(const char *xml, size_t len, struct s3_error *ret)
{
	struct s3_error e = { 0 };
	struct parse p = { .error = &e };
	int r = run(&p, xml, len);

	if (!r && (!p.found_error || !e.code))
		r = -EBADMSG;
	if (r) {
		s3_error_done(&e);
		return r;
	}
	*ret = e;
	return 0;
}

void s3_error_done(struct s3_error *e)
{
	if (!e)
		return;
	free(e->code);
	free(e->message);
	free(e->region);
	free(e->endpoint);
	memset(e, 0, sizeof(*e));
}

static int digits(const char **s, int n, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*s)[i] < '0' || (*s)[i] > '9')
			return -EINVAL;
		v = v * 10 + ((*s)[i] - '0');
	}
	*s += n;
	*ret = v;
	return 0;
}

int s3_parse_time(const char *s, struct timespec *ret)
{
	struct tm tm = { 0 };
	int y, mo, d, h, mi, sec;
	long nsec = 0, scale = 100000000;
	time_t t;

	if (!s || digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) ||
	    *s++ != '-' || digits(&s, 2, &d))
		return -EINVAL;
	if (*s != 'T' && *s != 't')
		return -EINVAL;
	s++;
	if (digits(&s, 2, &h) || *s++ != ':' || digits(&s, 2, &mi) ||
	    *s++ != ':' || digits(&s, 2, &sec))
		return -EINVAL;
	if (*s == '.') {
		s++;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		for (; *s >= '0' && *s <= '9'; s++) {
			nsec += (*s - '0') * scale;
			scale /= 10;
		}
	}
	if (!strcmp(s, "Z") || !strcmp(s, "z") || !strcmp(s, "+00:00"))
		s = "";
	if (*s || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    sec > 60)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	ret->tv_sec = t;
	ret->tv_nsec = nsec;
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void list_budget_init(struct list_budget *b, unsigned max_s, size_t max_objects,
		      bool lazy)
{
	memset(b, 0, sizeof(*b));
	b->max_s = max_s;
	b->deadline_ms = max_s ? now_ms() + (uint64_t)max_s * 1000 : 0;
	b->max_objects = max_objects;
	b->lazy = lazy;
}

int list_budget_request(struct list_budget *b, uint64_t bytes, size_t objects,
			const char **ret_why)
{
	const char *hint = b->lazy ? "" : ", or mount with -o list=lazy";

	b->requests++;
	b->bytes += bytes;
	b->objects += objects;
	if (b->requests > LIST_MAX_REQUESTS) {
		*ret_why = "more than " STR(LIST_MAX_REQUESTS) " requests";
	} else if (b->bytes > LIST_MAX_BYTES) {
		*ret_why = "more than 8 GiB of listings";
	} else if (!b->max_objects && b->objects > LIST_MAX_OBJECTS) {
		*ret_why = "more than " STR(LIST_MAX_OBJECTS) " entries";
	} else if (b->max_objects && b->objects > b->max_objects) {
		snprintf(b->why, sizeof(b->why),
			 "stopped here, past %zu entries (raise -o "
			 "list_entries_max=N%s)",
			 b->max_objects, hint);
		*ret_why = b->why;
	} else if (b->deadline_ms && now_ms() > b->deadline_ms) {
		snprintf(b->why, sizeof(b->why),
			 "stopped here, listing for more than %u s (raise -o "
			 "list_time_max=SECONDS%s)",
			 b->max_s, hint);
		*ret_why = b->why;
	} else {
		return 0;
	}
	return -E2BIG;
}

int list_budget_token(struct list_budget *b, const char *token,
		      const char **ret_why)
{
	size_t len = strlen(token), i, n;
	uint64_t h;

	if (len > LIST_MAX_TOKEN) {
		*ret_why = "a continuation token longer than " STR(
			LIST_MAX_TOKEN) " bytes";
		return -E2BIG;
	}
	h = XXH3_64bits(token, len);
	n = b->ntokens < LIST_RECENT_TOKENS ? b->ntokens : LIST_RECENT_TOKENS;
	for (i = 0; i < n; i++) {
		if (b->recent[i] == h) {
			*ret_why = "the server repeated a continuation token";
			return -ELOOP;
		}
	}
	b->recent[b->ntokens++ % LIST_RECENT_TOKENS] = h;
	return 0;
}
