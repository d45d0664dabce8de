/* hf_api: hf:// source URLs, Link pages, signed URLs' expiry, validators,
 * origins (who gets the token). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hf_api.h"

static void spec_ok(const char *in, const char *kind, const char *repo,
		    const char *rev, const char *subdir)
{
	struct hf_spec sp;
	int err = hf_spec_parse(in, &sp);

	CHECK(err == 0, "%s: %d", in, err);
	if (err)
		return;
	CHECK(!strcmp(sp.kind, kind), "%s: kind %s", in, sp.kind);
	CHECK(!strcmp(sp.repo, repo), "%s: repo %s", in, sp.repo);
	CHECK(!strcmp(sp.rev, rev), "%s: rev %s", in, sp.rev);
	CHECK(!strcmp(sp.subdir, subdir), "%s: subdir %s", in, sp.subdir);
	hf_spec_done(&sp);
}

static void spec_bad(const char *in)
{
	struct hf_spec sp;
	int err = hf_spec_parse(in, &sp);

	CHECK(err == -EINVAL, "%s: %d, expected -EINVAL", in, err);
}

static void specs(void)
{
	spec_ok("hf://org/model", "models", "org/model", "main", "");
	spec_ok("hf://org/model@v1.0", "models", "org/model", "v1.0", "");
	spec_ok("hf://org/model@refs%2Fpr%2F3/sub/dir/", "models", "org/model",
		"refs/pr/3", "sub/dir");
	spec_ok("hf://datasets/org/data/train", "datasets", "org/data", "main",
		"train");
	spec_ok("hf://models/Org-1/Na.me_2", "models", "Org-1/Na.me_2", "main",
		"");
	spec_ok("hf://spaces/o/s@abc123", "spaces", "o/s", "abc123", "");
	spec_bad("hf://justaname");
	spec_bad("hf:///name");
	spec_bad("hf://org/");
	spec_bad("hf://org/@main");
	spec_bad("hf://org/na me");
	spec_bad("hf://org/..");
	spec_bad("hf://../x");
	spec_bad("hf://org/x@");
	spec_bad("hf://org/x@a%0Ab");
	spec_bad("s3://org/x");
}

static void link_ok(const char *in, const char *want)
{
	char *got = hf_link_next(in);

	CHECK(want ? got && !strcmp(got, want) : !got, "%s: %s", in,
	      got ? got : "(null)");
	free(got);
}

static void links(void)
{
	link_ok("<https://h/api/x?cursor=abc>; rel=\"next\"",
		"https://h/api/x?cursor=abc");
	link_ok("<https://h/p1>; rel=\"prev\", <https://h/p3>; rel=\"next\"",
		"https://h/p3");
	link_ok("<https://h/p1>; rel=\"prev\"", NULL);
	link_ok("", NULL);
	link_ok("<https://h/p1; rel=\"next\"", NULL);
}

static void expiry(void)
{
	CHECK(hf_url_expiry("https://cdn/x?Expires=1700000000&Signature=s") ==
		      1700000000,
	      "CloudFront");
	/* 2024-01-02T03:04:05Z is 1704164645. */
	CHECK(hf_url_expiry("https://b.s3/x?X-Amz-Algorithm=A&X-Amz-Date="
			    "20240102T030405Z&X-Amz-Expires=3600&"
			    "X-Amz-Signature=s") == 1704164645 + 3600,
	      "S3 presigned");
	CHECK(hf_url_expiry("https://cdn/x") == 0, "none");
	CHECK(hf_url_expiry("https://cdn/x?X-Amz-Expires=60") == 0, "no date");
}

static void etags(void)
{
	char *e = hf_etag_normalize("\"abc\"");

	CHECK(e && !strcmp(e, "abc"), "quoted");
	free(e);
	e = hf_etag_normalize("W/\"abc\"");
	CHECK(e && !strcmp(e, "abc"), "weak");
	free(e);
	e = hf_etag_normalize("abc");
	CHECK(e && !strcmp(e, "abc"), "bare");
	free(e);
	CHECK(!hf_etag_normalize(NULL), "NULL");
}

static void origins(void)
{
	const char *ep = "https://huggingface.co";

	CHECK(hf_same_origin(ep, "https://huggingface.co/api/x"), "same");
	CHECK(hf_same_origin(ep, "HTTPS://HuggingFace.co/x"), "case");
	CHECK(hf_same_origin(ep, "https://huggingface.co"), "bare");
	CHECK(!hf_same_origin(ep, "https://huggingface.co.evil.net/x"),
	      "suffix");
	CHECK(!hf_same_origin(ep, "https://huggingface.co:8443/x"), "port");
	CHECK(!hf_same_origin(ep, "http://huggingface.co/x"), "scheme");
	CHECK(!hf_same_origin(ep, "https://cdn-lfs.huggingface.co/x"), "cdn");
	CHECK(hf_same_origin("http://127.0.0.1:8080/mirror",
			     "http://127.0.0.1:8080/api/x"),
	      "endpoint with a path");
	CHECK(!hf_same_origin("http://127.0.0.1:8080",
			      "http://127.0.0.1:80801/x"),
	      "longer port");
}

int main(void)
{
	specs();
	links();
	expiry();
	etags();
	origins();
	printf("hf_api: ok\n");
	return 0;
}
