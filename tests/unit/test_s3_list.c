/* s3_list: ListObjectsV2 queries, ListBucketResult and error documents,
 * malformed XML. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3_list.h"
#include "check.h"

static int parse(const char *xml, struct s3_list_page *page)
{
	return s3_list_parse(xml, strlen(xml), page);
}

static void query(void)
{
	char *q = s3_list_query("models/a b+/", NULL);

	CHECK(q && !strcmp(q, "encoding-type=url&list-type=2&max-keys=1000&"
			      "prefix=models%2Fa%20b%2B%2F"),
	      "first page: %s", q);
	free(q);
	q = s3_list_query("", "1+x/y==");
	CHECK(q && !strcmp(q, "continuation-token=1%2Bx%2Fy%3D%3D&encoding-"
			      "type=url&list-type=2&max-keys=1000"),
	      "next page: %s", q);
	free(q);
}

static void page_url_encoded(void)
{
	const char *xml =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/"
		"2006-03-01/\"><Name>b</Name><Prefix>m%2F</Prefix>"
		"<KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
		"<EncodingType>url</EncodingType>"
		"<IsTruncated>true</IsTruncated>"
		"<NextContinuationToken>1a+/b=</NextContinuationToken>"
		"<Contents><Key>m/a+b%2Bc%3D%26~%28%29.bin</Key>"
		"<LastModified>2009-10-12T17:50:30.123Z</LastModified>"
		"<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag>"
		"<Size>434234</Size><StorageClass>STANDARD</StorageClass>"
		"</Contents>"
		"<Contents><Key>m/%C3%BC/%00x</Key><Size>0</Size></Contents>"
		"<Contents><Size>18446744073709551615</Size>"
		"<Key>m/big</Key></Contents>"
		"</ListBucketResult>";
	struct s3_list_page p;
	int r = parse(xml, &p);

	CHECK(r == 0, "parse: %d", r);
	if (r)
		return;
	CHECK(p.nobjects == 3, "objects: %zu", p.nobjects);
	CHECK(p.truncated && p.next_token && !strcmp(p.next_token, "1a+/b="),
	      "token: %s", p.next_token);
	CHECK(!strcmp(p.objects[0].key, "m/a b+c=&~().bin"), "key 0: %s",
	      p.objects[0].key);
	CHECK(p.objects[0].size == 434234, "size 0");
	CHECK(p.objects[0].etag &&
		      !strcmp(p.objects[0].etag,
			      "\"fba9dede5f27731c9771645a39863328\""),
	      "etag 0: %s", p.objects[0].etag);
	CHECK(p.objects[0].mtime.tv_sec == 1255369830 &&
		      p.objects[0].mtime.tv_nsec == 123000000,
	      "mtime 0: %ld", (long)p.objects[0].mtime.tv_sec);
	CHECK(p.objects[1].key_len == 7 &&
		      !memcmp(p.objects[1].key, "m/\xc3\xbc/\0x", 7),
	      "key 1 (UTF-8, NUL): %zu", p.objects[1].key_len);
	CHECK(!p.objects[1].etag, "etag 1");
	CHECK(p.objects[2].size == UINT64_MAX - 0 &&
		      !strcmp(p.objects[2].key, "m/big"),
	      "size 2");
	s3_list_page_done(&p);
}

/* s3rver and some other stores ignore encoding-type: keys come as is. */
static void page_plain(void)
{
	const char *xml = "<ListBucketResult><IsTruncated>false</IsTruncated>"
			  "<Contents><Key>a+b%20c &amp; d</Key><Size>1</Size>"
			  "</Contents></ListBucketResult>";
	struct s3_list_page p;

	CHECK(parse(xml, &p) == 0, "parse");
	CHECK(p.nobjects == 1 && !strcmp(p.objects[0].key, "a+b%20c & d"),
	      "raw key: %s", p.nobjects ? p.objects[0].key : "");
	CHECK(!p.truncated && !p.next_token, "not truncated");
	s3_list_page_done(&p);

	CHECK(parse("<ListBucketResult/>", &p) == 0 && p.nobjects == 0,
	      "empty listing");
	s3_list_page_done(&p);
}

static void malformed(void)
{
	static const char *const bad[] = {
		"",
		"not xml",
		"<ListBucketResult>",
		"<ListBucketResult><Contents><Key>a</Key></ListBucketResult>",
		"<Other/>",
		/* missing Size, bad Size, negative Size */
		("<ListBucketResult><Contents><Key>a</Key></Contents>"
		 "</ListBucketResult>"),
		("<ListBucketResult><Contents><Key>a</Key><Size>1x</Size>"
		 "</Contents></ListBucketResult>"),
		("<ListBucketResult><Contents><Key>a</Key><Size>-1</Size>"
		 "</Contents></ListBucketResult>"),
		("<ListBucketResult><Contents><Key>a</Key><Size>"
		 "99999999999999999999999</Size></Contents></"
		 "ListBucketResult>"),
		/* truncated without a token */
		("<ListBucketResult><IsTruncated>true</IsTruncated>"
		 "</ListBucketResult>"),
		/* entity expansion */
		("<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;"
		 "&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;"
		 "&b;&b;\"><!ENTITY d \"&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;\">"
		 "<!ENTITY e \"&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;\"><!ENTITY f \""
		 "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;\">]><ListBucketResult>"
		 "<Contents><Key>&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;</Key><Size>1"
		 "</Size></Contents></ListBucketResult>"),
	};
	struct s3_list_page p;
	char deep[4096] = "<ListBucketResult>";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], &p);

		CHECK(r == -EBADMSG, "malformed %zu: %d", i, r);
		if (!r)
			s3_list_page_done(&p);
	}
	for (int i = 0; i < 100; i++)
		strcat(deep, "<a>");
	CHECK(parse(deep, &p) == -EBADMSG, "deep nesting");
	CHECK(s3_list_parse("<ListBucketResult/>", 5, &p) == -EBADMSG, "short");
}

static void errors(void)
{
	const char *s3 =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>"
		"SignatureDoesNotMatch</Code><Message>The request signature we "
		"calculated does not match</Message><AWSAccessKeyId>AK"
		"</AWSAccessKeyId><RequestId>1</RequestId></Error>";
	const char *redirect =
		"<Error><Code>PermanentRedirect</Code><Message>m</Message>"
		"<Endpoint>b.s3.eu-west-1.amazonaws.com</Endpoint></Error>";
	const char *sts =
		"<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/"
		"2011-06-15/\"><Error><Type>Sender</Type><Code>"
		"InvalidIdentityToken</Code><Message>bad token</Message>"
		"</Error><RequestId>x</RequestId></ErrorResponse>";
	struct s3_error e;

	CHECK(s3_error_parse(s3, strlen(s3), &e) == 0, "s3 error");
	CHECK(e.code && !strcmp(e.code, "SignatureDoesNotMatch"), "code");
	CHECK(e.message && !strncmp(e.message, "The request signature", 21),
	      "message");
	s3_error_done(&e);
	CHECK(s3_error_parse(redirect, strlen(redirect), &e) == 0 &&
		      e.endpoint &&
		      !strcmp(e.endpoint, "b.s3.eu-west-1.amazonaws.com"),
	      "endpoint");
	s3_error_done(&e);
	CHECK(s3_error_parse(sts, strlen(sts), &e) == 0 && e.code &&
		      !strcmp(e.code, "InvalidIdentityToken") &&
		      !strcmp(e.message, "bad token"),
	      "sts error");
	s3_error_done(&e);
	CHECK(s3_error_parse("<html>no</html>", 15, &e) == -EBADMSG, "html");
	CHECK(s3_error_parse("<Error><Message>m</Message></Error>", 35, &e) ==
		      -EBADMSG,
	      "no code");
	CHECK(s3_error_parse("", 0, &e) == -EBADMSG, "empty");
}

static void times(void)
{
	struct timespec t;

	CHECK(s3_parse_time("2024-01-02T03:04:05Z", &t) == 0 &&
		      t.tv_sec == 1704164645 && t.tv_nsec == 0,
	      "plain");
	CHECK(s3_parse_time("2024-01-02T03:04:05+00:00", &t) == 0 &&
		      t.tv_sec == 1704164645,
	      "offset");
	CHECK(s3_parse_time("2024-01-02T03:04:05.5Z", &t) == 0 &&
		      t.tv_nsec == 500000000,
	      "fraction");
	CHECK(s3_parse_time("2024-01-02 03:04:05Z", &t) == -EINVAL, "space");
	CHECK(s3_parse_time("2024-13-02T03:04:05Z", &t) == -EINVAL, "month");
	CHECK(s3_parse_time("2024-01-02T03:04:05+02:00", &t) == -EINVAL,
	      "zone");
	CHECK(s3_parse_time("", &t) == -EINVAL, "empty");
}

/* Listing bounds: caps on requests, bytes and objects; tokens too long
 * or repeating; memory that does not grow with the number of tokens. */
static void budget(void)
{
	struct list_budget b = { 0 };
	const char *why = NULL;
	char tok[32], *big;
	size_t i;
	int err = 0;

	for (i = 0; i < LIST_MAX_REQUESTS && !err; i++)
		err = list_budget_request(&b, 100, 1, &why);
	CHECK(!err, "under the request cap: %d", err);
	err = list_budget_request(&b, 100, 1, &why);
	CHECK(err == -E2BIG && why && strstr(why, "requests"),
	      "request cap: %d %s", err, why ? why : "");

	memset(&b, 0, sizeof(b));
	err = list_budget_request(&b, LIST_MAX_BYTES + 1, 1, &why);
	CHECK(err == -E2BIG && strstr(why, "GiB"), "byte cap: %d", err);
	memset(&b, 0, sizeof(b));
	err = list_budget_request(&b, 1, LIST_MAX_OBJECTS + 1, &why);
	CHECK(err == -E2BIG && strstr(why, "entries"), "object cap: %d", err);

	/* A million fresh tokens: accepted, in the same fixed struct. */
	memset(&b, 0, sizeof(b));
	for (i = 0, err = 0; i < 1000000 && !err; i++) {
		snprintf(tok, sizeof(tok), "token-%zu", i);
		err = list_budget_token(&b, tok, &why);
	}
	CHECK(!err, "fresh tokens: %d at %zu", err, i);
	/* A cycle among the recent ones is noticed. */
	err = list_budget_token(&b, "token-999990", &why);
	CHECK(err == -ELOOP && strstr(why, "repeated"), "cycle: %d", err);
	memset(&b, 0, sizeof(b));
	CHECK(!list_budget_token(&b, "A", &why) &&
		      !list_budget_token(&b, "B", &why) &&
		      list_budget_token(&b, "A", &why) == -ELOOP,
	      "A B A");

	big = malloc(LIST_MAX_TOKEN + 2);
	if (big) {
		memset(big, 't', LIST_MAX_TOKEN + 1);
		big[LIST_MAX_TOKEN + 1] = '\0';
		err = list_budget_token(&b, big, &why);
		CHECK(err == -E2BIG && strstr(why, "longer"), "long: %d", err);
		big[LIST_MAX_TOKEN] = '\0';
		CHECK(!list_budget_token(&b, big, &why), "at the limit");
		free(big);
	}
}

/* The option bounds (-o list_entries_max, list_time_max): their
 * messages name the option, and list=lazy when the mount is eager. */
static void budget_options(void)
{
	struct list_budget b;
	const char *why = NULL;
	int err;

	list_budget_init(&b, 60, 5, false);
	err = list_budget_request(&b, 10, 5, &why);
	CHECK(!err, "at the entries bound: %d", err);
	err = list_budget_request(&b, 10, 1, &why);
	CHECK(err == -E2BIG && strstr(why, "list_entries_max") &&
		      strstr(why, "list=lazy"),
	      "entries bound: %d %s", err, why ? why : "");

	list_budget_init(&b, 60, 0, true);
	err = list_budget_request(&b, 10, 1, &why);
	CHECK(!err, "within the time bound: %d", err);
	b.deadline_ms = 1; /* long past */
	err = list_budget_request(&b, 10, 1, &why);
	CHECK(err == -E2BIG && strstr(why, "list_time_max") &&
		      !strstr(why, "list=lazy"),
	      "time bound: %d %s", err, why ? why : "");
}

int main(void)
{
	query();
	page_url_encoded();
	page_plain();
	malformed();
	errors();
	times();
	budget();
	budget_options();
	printf("s3_list: ok\n");
	return 0;
}
