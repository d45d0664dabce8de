/* s3:// endpoint and region resolution: from the options, the environment
 * and the AWS config file, where requests go and how they are addressed
 * (virtual-hosted or path-style). Thread-safe (no shared state). */
#include "s3_endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "aws_creds.h"
#include "env.h"
#include "msg.h"
#include "opts.h"

/* Whether @b can be a DNS label set under the endpoint's host. */
static bool dns_bucket(const char *b, bool https)
{
	size_t len = strlen(b);

	if (len < 3 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = b[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
		if (c == '.' && (https || i == 0 || b[i - 1] == '.'))
			return false;
	}
	return b[0] != '-' && b[len - 1] != '-' && b[len - 1] != '.';
}

bool s3_bucket_ok(const char *b)
{
	if (!*b || strlen(b) > 255)
		return false;
	for (; *b; b++)
		if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') ||
		      (*b >= '0' && *b <= '9') || *b == '-' || *b == '.' ||
		      *b == '_'))
			return false;
	return true;
}

static bool host_is_ip(const char *host)
{
	unsigned char buf[16];

	return host[0] == '[' || inet_pton(AF_INET, host, buf) == 1 ||
	       !strcasecmp(host, "localhost");
}

static char *region_from_profile(const struct options *opts)
{
	struct aws_profile p;
	char *cred = NULL, *conf = NULL, *name = NULL, *region = NULL;

	if (aws_profile_paths(opts ? opts->profile : NULL, &cred, &conf, &name))
		return NULL;
	/* Only the config file holds the region. */
	if (!aws_profile_load(NULL, conf, name, &p)) {
		region = p.region;
		p.region = NULL;
		aws_profile_done(&p);
	}
	free(cred);
	free(conf);
	free(name);
	return region;
}

int s3_endpoint_resolve(const struct options *o, const char *bucket,
			const char *region, char **ret_origin, char **ret_host,
			char **ret_base_path, char **ret_msg)
{
	const char *ep = o && o->endpoint ? o->endpoint : NULL;
	char *url = NULL, *scheme = NULL, *host = NULL, *port = NULL;
	char *path = NULL;
	CURLU *u = NULL;
	bool path_style = o && o->path_style, https;
	int err = -ENOMEM;
	size_t plen;

	if (!ep)
		ep = env_get("AWS_ENDPOINT_URL_S3");
	if (!ep)
		ep = env_get("AWS_ENDPOINT_URL");
	if (!ep) {
		if (asprintf(&url, "https://s3.%s.amazonaws.com%s", region,
			     strncmp(region, "cn-", 3) ? "" : ".cn") < 0)
			return -ENOMEM;
		ep = url;
	}
	u = curl_url();
	if (!u)
		goto out;
	if (curl_url_set(u, CURLUPART_URL, ep, 0) ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) ||
	    (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))) {
		err = msg_set(ret_msg, -EINVAL,
			      "endpoint '%s': expected http(s)://host[:port]",
			      ep);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PORT, &port, 0))
		port = NULL;
	if (curl_url_get(u, CURLUPART_PATH, &path, 0))
		path = NULL;
	https = !strcasecmp(scheme, "https");
	/* Virtual-hosted addressing needs a bucket that is a DNS name and a
	 * host name under which it can be one. */
	if (!dns_bucket(bucket, https) || host_is_ip(host))
		path_style = true;
	if (asprintf(ret_host, "%s%s%s%s%s", path_style ? "" : bucket,
		     path_style ? "" : ".", host, port ? ":" : "",
		     port ? port : "") < 0) {
		*ret_host = NULL;
		goto out;
	}
	if (asprintf(ret_origin, "%s://%s", https ? "https" : "http",
		     *ret_host) < 0) {
		*ret_origin = NULL;
		goto out;
	}
	plen = path ? strlen(path) : 0;
	while (plen && path[plen - 1] == '/')
		plen--;
	if (asprintf(ret_base_path, "%.*s%s%s", (int)plen, path ? path : "",
		     path_style ? "/" : "", path_style ? bucket : "") < 0) {
		*ret_base_path = NULL;
		goto out;
	}
	err = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	free(url);
	return err;
}

char *s3_region_resolve(const struct options *opts)
{
	const char *region = opts && opts->region ? opts->region : NULL;
	char *r;

	if (!region)
		region = env_get("AWS_REGION");
	if (!region)
		region = env_get("AWS_DEFAULT_REGION");
	if (region)
		return strdup(region);
	r = region_from_profile(opts);
	return r ? r : strdup("us-east-1");
}
