/* AWS Signature Version 4: canonical request, string to sign, signing key
 * and Authorization header, as specified in
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html */
#include "sigv4.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define ALGORITHM "AWS4-HMAC-SHA256"

struct pair {
	char *name;
	char *value;
	size_t order; /* position in the input: keeps sorting stable */
};

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out, *p;

	if (len > (SIZE_MAX - 1) / 3)
		return NULL;
	out = malloc(len * 3 + 1);
	if (!out)
		return NULL;
	p = out;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (unreserved(c) || (keep_slash && c == '/')) {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *sigv4_uri_decode(const char *s, size_t len, bool plus_space,
		       size_t *ret_len)
{
	char *out = malloc(len + 1);
	size_t n = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] == '%' && i + 2 < len &&
		    (hi = hexval(s[i + 1])) >= 0 &&
		    (lo = hexval(s[i + 2])) >= 0) {
			out[n++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (plus_space && s[i] == '+') {
			out[n++] = ' ';
		} else {
			out[n++] = s[i];
		}
	}
	out[n] = '\0';
	if (ret_len)
		*ret_len = n;
	return out;
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL))
		mdlen = 0;
	for (unsigned int i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[2 * mdlen] = '\0';
}

void sigv4_amz_date(time_t t, char out[17])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool date_ok(const char *d)
{
	if (strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
		return false;
	for (int i = 0; i < 15; i++)
		if (i != 8 && (d[i] < '0' || d[i] > '9'))
			return false;
	return true;
}

static int pair_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	c = strcmp(x->value, y->value);
	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Headers sort by name only; equal names keep their input order. */
static int header_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static void pairs_free(struct pair *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].value);
	}
	free(p);
}

/* Trim the value and collapse runs of spaces to one, as SigV4 asks. */
static char *header_value(const char *v)
{
	char *out = malloc(strlen(v) + 1), *p;
	bool space = false;

	if (!out)
		return NULL;
	while (*v == ' ' || *v == '\t')
		v++;
	p = out;
	for (; *v; v++) {
		if (*v == ' ' || *v == '\t') {
			space = true;
			continue;
		}
		if (space && p != out)
			*p++ = ' ';
		space = false;
		*p++ = *v;
	}
	*p = '\0';
	return out;
}

static bool header_name_ok(const char *n)
{
	if (!n || !*n)
		return false;
	for (; *n; n++) {
		unsigned char c = (unsigned char)*n;

		if (c <= ' ' || c >= 127 || c == ':')
			return false;
	}
	return true;
}

static char *header_name(const char *n)
{
	size_t len = strlen(n);
	char *out;

	out = malloc(len + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i <= len; i++)
		out[i] =
			(n[i] >= 'A' && n[i] <= 'Z') ? (char)(n[i] + 32) : n[i];
	return out;
}

/* Write the canonical query string of @query to @f. */
static int canonical_query(FILE *f, const char *query)
{
	struct pair *pairs = NULL;
	size_t n = 0, cap = 0;
	const char *p = query;
	int r = -ENOMEM;

	while (p && *p) {
		const char *end = strchrnul(p, '&');
		const char *eq = memchr(p, '=', (size_t)(end - p));
		const char *vstart = eq ? eq + 1 : end;
		char *raw_name, *raw_value;
		size_t nlen, vlen;

		if (end == p) {
			p = *end ? end + 1 : end;
			continue;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			struct pair *np =
				reallocarray(pairs, ncap, sizeof(*np));

			if (!np)
				goto out;
			pairs = np;
			cap = ncap;
		}
		raw_name = sigv4_uri_decode(p, (size_t)((eq ? eq : end) - p),
					    false, &nlen);
		raw_value = sigv4_uri_decode(vstart, (size_t)(end - vstart),
					     false, &vlen);
		if (!raw_name || !raw_value) {
			free(raw_name);
			free(raw_value);
			goto out;
		}
		pairs[n].name = sigv4_uri_encode(raw_name, nlen, false);
		pairs[n].value = sigv4_uri_encode(raw_value, vlen, false);
		pairs[n].order = n;
		free(raw_name);
		free(raw_value);
		n++;
		if (!pairs[n - 1].name || !pairs[n - 1].value)
			goto out;
		p = *end ? end + 1 : end;
	}
	if (n > 1)
		qsort(pairs, n, sizeof(*pairs), pair_cmp);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%s=%s", i ? "&" : "", pairs[i].name,
			pairs[i].value);
	r = 0;
out:
	pairs_free(pairs, n);
	return r;
}

/* Remove empty, "." and ".." segments (services other than S3). */
static char *normalize_path(const char *path)
{
	size_t len = strlen(path);
	char *out = malloc(len + 2), *q;
	size_t *starts = calloc(len + 1, sizeof(*starts)), depth = 0;
	const char *p = path;
	bool trailing = false;

	if (!out || !starts) {
		free(out);
		free(starts);
		return NULL;
	}
	q = out;
	while (*p) {
		const char *end;
		size_t seg;

		while (*p == '/')
			p++;
		if (!*p) {
			trailing = true;
			break;
		}
		end = strchrnul(p, '/');
		seg = (size_t)(end - p);
		trailing = !*end;
		if (seg == 1 && p[0] == '.') {
			trailing = true;
		} else if (seg == 2 && p[0] == '.' && p[1] == '.') {
			if (depth)
				q = out + starts[--depth];
			trailing = true;
		} else {
			starts[depth++] = (size_t)(q - out);
			*q++ = '/';
			memcpy(q, p, seg);
			q += seg;
			trailing = *end == '/' && !end[1];
		}
		p = end;
	}
	if (q == out || trailing)
		*q++ = '/';
	*q = '\0';
	free(starts);
	return out;
}

static void hmac(const void *key, size_t klen, const char *msg,
		 unsigned char out[32])
{
	unsigned int len = 32;

	if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg,
		  strlen(msg), out, &len))
		memset(out, 0, 32);
}

static void hex32(const unsigned char in[32], char out[65])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[64] = '\0';
}

static char *finish(FILE *f, char **buf)
{
	if (fclose(f) != 0) {
		free(*buf);
		return NULL;
	}
	return *buf;
}

int sigv4_sign(const struct sigv4_request *req, const struct sigv4_key *key,
	       const char *amz_date, struct sigv4_signature *ret)
{
	struct sigv4_signature s = { 0 };
	struct pair *hdrs = NULL;
	size_t nh = 0, size;
	char date[9], creq_hash[65], sig_hex[65], *buf = NULL, *path = NULL;
	char *secret = NULL;
	unsigned char k[32];
	FILE *f;
	int r = -EINVAL;

	if (!req || !key || !amz_date || !req->method || !req->path ||
	    req->path[0] != '/' || !req->payload_hash || !key->access_key_id ||
	    !key->secret_access_key || !key->region || !key->service ||
	    !date_ok(amz_date))
		return -EINVAL;
	memcpy(date, amz_date, 8);
	date[8] = '\0';

	hdrs = calloc(req->nheaders ? req->nheaders : 1, sizeof(*hdrs));
	if (!hdrs)
		return -ENOMEM;
	for (nh = 0; nh < req->nheaders; nh++) {
		const struct sigv4_header *h = &req->headers[nh];

		if (!header_name_ok(h->name) || !h->value ||
		    strpbrk(h->value, "\r\n"))
			goto fail;
		hdrs[nh].name = header_name(h->name);
		hdrs[nh].value = header_value(h->value);
		hdrs[nh].order = nh;
		if (!hdrs[nh].name || !hdrs[nh].value) {
			nh++;
			goto nomem;
		}
	}
	if (nh > 1)
		qsort(hdrs, nh, sizeof(*hdrs), header_cmp);

	/* Signed headers: the distinct names, sorted. */
	f = open_memstream(&buf, &size);
	if (!f)
		goto nomem;
	for (size_t i = 0; i < nh; i++)
		if (i == 0 || strcmp(hdrs[i].name, hdrs[i - 1].name))
			fprintf(f, "%s%s", i ? ";" : "", hdrs[i].name);
	s.signed_headers = finish(f, &buf);
	if (!s.signed_headers)
		goto nomem;

	/* Canonical request. */
	if (req->normalize_path) {
		char *n = normalize_path(req->path);

		if (!n)
			goto nomem;
		path = sigv4_uri_encode(n, strlen(n), true);
		free(n);
	} else {
		path = strdup(req->path);
	}
	if (!path)
		goto nomem;
	buf = NULL;
	f = open_memstream(&buf, &size);
	if (!f)
		goto nomem;
	fprintf(f, "%s\n%s\n", req->method, path);
	r = canonical_query(f, req->query);
	if (r < 0) {
		fclose(f);
		free(buf);
		goto fail;
	}
	fputc('\n', f);
	for (size_t i = 0; i < nh; i++) {
		bool first = i == 0 || strcmp(hdrs[i].name, hdrs[i - 1].name);
		bool last =
			i + 1 == nh || strcmp(hdrs[i].name, hdrs[i + 1].name);

		if (first)
			fprintf(f, "%s:", hdrs[i].name);
		else
			fputc(',', f);
		fputs(hdrs[i].value, f);
		if (last)
			fputc('\n', f);
	}
	fprintf(f, "\n%s\n%s", s.signed_headers, req->payload_hash);
	s.canonical_request = finish(f, &buf);
	if (!s.canonical_request)
		goto nomem;

	/* String to sign. */
	sigv4_sha256_hex(s.canonical_request, strlen(s.canonical_request),
			 creq_hash);
	if (asprintf(&s.string_to_sign,
		     ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", amz_date,
		     date, key->region, key->service, creq_hash) < 0) {
		s.string_to_sign = NULL;
		goto nomem;
	}

	/* Signing key and signature. */
	if (asprintf(&secret, "AWS4%s", key->secret_access_key) < 0) {
		secret = NULL;
		goto nomem;
	}
	hmac(secret, strlen(secret), date, k);
	hmac(k, sizeof(k), key->region, k);
	hmac(k, sizeof(k), key->service, k);
	hmac(k, sizeof(k), "aws4_request", k);
	hmac(k, sizeof(k), s.string_to_sign, k);
	hex32(k, sig_hex);
	OPENSSL_cleanse(k, sizeof(k));

	if (asprintf(&s.authorization,
		     ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, "
			       "SignedHeaders=%s, Signature=%s",
		     key->access_key_id, date, key->region, key->service,
		     s.signed_headers, sig_hex) < 0) {
		s.authorization = NULL;
		goto nomem;
	}
	r = 0;
	*ret = s;
	goto out;

nomem:
	r = -ENOMEM;
fail:
	sigv4_signature_done(&s);
out:
	if (secret) {
		OPENSSL_cleanse(secret, strlen(secret));
		free(secret);
	}
	free(path);
	pairs_free(hdrs, nh);
	return r;
}

void sigv4_signature_done(struct sigv4_signature *s)
{
	if (!s)
		return;
	free(s->canonical_request);
	free(s->string_to_sign);
	free(s->signed_headers);
	free(s->authorization);
	memset(s, 0, sizeof(*s));
}
