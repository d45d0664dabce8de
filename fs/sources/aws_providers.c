/* The AWS credential providers that fetch over HTTP: web identity (STS
 * AssumeRoleWithWebIdentity), container credentials (ECS, EKS Pod Identity)
 * and EC2 instance metadata (IMDSv2); each one's setup from the environment
 * or a profile, and its fetch. */
#include "aws_creds.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "aws_creds_priv.h"
#include "env.h"
#include "http.h"
#include "http_run.h"
#include "msg.h"
#include "opts.h"
#include "s3_list.h"

#define MAX_RESPONSE (1u << 20)
#define IMDS_DEFAULT "http://169.254.169.254"
#define ECS_HOST "http://169.254.170.2"

static char *strip_slash(const char *url)
{
	char *s = strdup(url);
	size_t n;

	if (!s)
		return NULL;
	n = strlen(s);
	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
	return s;
}

/* A token file's content, trimmed, or NULL with an errno. */
int aws_read_token_file(const char *path, char **ret)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf, *t;
	size_t len = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	buf = malloc(MAX_TOKEN_FILE + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (len < MAX_TOKEN_FILE &&
	       (n = read(fd, buf + len, MAX_TOKEN_FILE - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			aws_free_secret(buf);
			return (int)n;
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	t = aws_trim(buf);
	if (!*t || strpbrk(t, "\r\n")) {
		aws_free_secret(buf);
		return -EBADMSG;
	}
	memmove(buf, t, strlen(t) + 1);
	*ret = buf;
	return 0;
}

/* A response's failure as text: the transfer's error, or the status with
 * the error code of an S3/STS error document when there is one. */
static int response_msg(int err, const struct http_response *r, char **ret_msg)
{
	struct s3_error e;

	if (err)
		return msg_set(ret_msg, err, "%s",
			       r->curl_error[0] ? r->curl_error
						: strerror(-err));
	if (r->body && !s3_error_parse(r->body, r->len, &e)) {
		msg_set(ret_msg, 0, "%.100s: %.300s (HTTP %ld)", e.code,
			e.message ? e.message : "", r->status);
		s3_error_done(&e);
	} else {
		msg_set(ret_msg, 0, "HTTP %ld", r->status);
	}
	return http_status_errno(r->status) ?: -EIO;
}

/* A credential provider's request: its method, body and timeouts. */
struct cred_req {
	const char *method, *body;
	bool metadata;
};

static int cred_setup(struct http_whole *w, CURL *h, struct curl_slist **hdrs)
{
	const struct cred_req *cr = w->arg;

	if (cr->method && !strcmp(cr->method, "POST")) {
		curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS,
				 cr->body ? cr->body : "");
	} else if (cr->method) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, cr->method);
	}
	/* Metadata services answer at once, or are not there at all. */
	if (cr->metadata) {
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
	} else {
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	}
	return 0;
}

/* One request, once (HTTP_RETRY_NEVER: the provider chain moves on to
 * the next provider, and refreshes try again later): @method NULL (GET)
 * or "PUT"/"POST". */
static int request(struct aws_creds *c, const char *url, const char *method,
		   const char *body, struct curl_slist *hdrs, bool metadata,
		   struct http_response *ret)
{
	struct cred_req cr = { method, body, metadata };
	struct http_whole w = { .url = url,
				.headers = hdrs,
				.max_body = MAX_RESPONSE,
				.retry_flags = HTTP_RETRY_NEVER,
				.setup = cred_setup,
				.arg = &cr };

	return http_run_whole(&w, c->opts, ret);
}

static char *form_escape(CURL *h, const char *s)
{
	char *e = curl_easy_escape(h, s, 0), *r;

	if (!e)
		return NULL;
	r = strdup(e);
	curl_free(e);
	return r;
}

static int fetch_web_identity(struct aws_creds *c, struct aws_credentials *ret,
			      char **ret_msg)
{
	struct curl_slist *hdrs = NULL;
	struct http_response r = { 0 };
	char *token = NULL, *body = NULL, *e_token = NULL, *e_arn = NULL;
	char *e_name = NULL, *m = NULL;
	CURL *h;
	int err;

	err = aws_read_token_file(c->token_file, &token);
	if (err)
		return msg_set(ret_msg, err, "web identity token file %s: %s",
			       c->token_file, strerror(-err));
	h = curl_easy_init();
	if (h) {
		e_token = form_escape(h, token);
		e_arn = form_escape(h, c->role_arn);
		e_name = form_escape(h, c->session_name);
		curl_easy_cleanup(h);
	}
	if (!e_token || !e_arn || !e_name ||
	    asprintf(&body,
		     "Action=AssumeRoleWithWebIdentity&RoleArn=%s&"
		     "RoleSessionName=%s&Version=2011-06-15&"
		     "WebIdentityToken=%s",
		     e_arn, e_name, e_token) < 0) {
		body = NULL;
		err = -ENOMEM;
		goto out;
	}
	hdrs = curl_slist_append(NULL, "Content-Type: application/"
				       "x-www-form-urlencoded; charset=utf-8");
	if (!hdrs) {
		err = -ENOMEM;
		goto out;
	}
	err = request(c, c->sts_url, "POST", body, hdrs, false, &r);
	if (err || r.status != 200) {
		err = response_msg(err, &r, &m);
		msg_set(ret_msg, err, "STS AssumeRoleWithWebIdentity at %s: %s",
			c->sts_url, m ? m : "failed");
		goto out;
	}
	err = aws_creds_parse_sts(r.body, r.len, ret);
	if (err)
		msg_set(ret_msg, err,
			"STS AssumeRoleWithWebIdentity at %s: malformed "
			"response",
			c->sts_url);
out:
	free(m);
	curl_slist_free_all(hdrs);
	http_response_done(&r);
	aws_free_secret(body);
	aws_free_secret(e_token);
	aws_free_secret(token);
	free(e_arn);
	free(e_name);
	return err;
}

static int fetch_container(struct aws_creds *c, struct aws_credentials *ret,
			   char **ret_msg)
{
	struct curl_slist *hdrs = NULL;
	struct http_response r = { 0 };
	char *token = NULL, *hdr = NULL, *m = NULL;
	int err = 0;

	if (c->auth_token_file) {
		err = aws_read_token_file(c->auth_token_file, &token);
		if (err)
			return msg_set(ret_msg, err,
				       "container authorization token file "
				       "%s: %s",
				       c->auth_token_file, strerror(-err));
	} else if (c->auth_token) {
		token = strdup(c->auth_token);
		if (!token)
			return -ENOMEM;
	}
	if (token) {
		if (strpbrk(token, "\r\n")) {
			err = msg_set(ret_msg, -EINVAL,
				      "container authorization token "
				      "contains a line break");
			goto out;
		}
		if (asprintf(&hdr, "Authorization: %s", token) < 0) {
			hdr = NULL;
			err = -ENOMEM;
			goto out;
		}
		hdrs = curl_slist_append(NULL, hdr);
		if (!hdrs) {
			err = -ENOMEM;
			goto out;
		}
	}
	err = request(c, c->container_url, NULL, NULL, hdrs, true, &r);
	if (err || r.status != 200) {
		err = response_msg(err, &r, &m);
		msg_set(ret_msg, err, "container credentials at %s: %s",
			c->container_url, m ? m : "failed");
		goto out;
	}
	err = aws_creds_parse_json(r.body, r.len, ret, &m);
	if (err)
		msg_set(ret_msg, err, "container credentials at %s: %s",
			c->container_url, m ? m : "malformed response");
out:
	free(m);
	curl_slist_free_all(hdrs);
	http_response_done(&r);
	aws_free_secret(hdr);
	aws_free_secret(token);
	return err;
}

static int fetch_imds(struct aws_creds *c, struct aws_credentials *ret,
		      char **ret_msg)
{
	struct curl_slist *hdrs = NULL;
	struct http_response r = { 0 };
	char *url = NULL, *hdr = NULL, *role = NULL, *m = NULL;
	const char *step = "token";
	int err;

	if (asprintf(&url, "%s/latest/api/token", c->imds_endpoint) < 0)
		return -ENOMEM;
	hdrs = curl_slist_append(NULL,
				 "X-aws-ec2-metadata-token-ttl-seconds: 21600");
	if (!hdrs) {
		err = -ENOMEM;
		goto out;
	}
	err = request(c, url, "PUT", NULL, hdrs, true, &r);
	if (err || r.status != 200)
		goto http_fail;
	curl_slist_free_all(hdrs);
	hdrs = NULL;
	if (strpbrk(r.body, "\r\n") ||
	    asprintf(&hdr, "X-aws-ec2-metadata-token: %s", r.body) < 0) {
		hdr = NULL;
		err = -EBADMSG;
		goto out;
	}
	hdrs = curl_slist_append(NULL, hdr);
	if (!hdrs) {
		err = -ENOMEM;
		goto out;
	}
	http_response_done(&r);

	step = "role";
	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/",
		     c->imds_endpoint) < 0) {
		url = NULL;
		err = -ENOMEM;
		goto out;
	}
	err = request(c, url, NULL, NULL, hdrs, true, &r);
	if (err || r.status != 200)
		goto http_fail;
	role = strndup(r.body, strcspn(r.body, "\r\n"));
	if (!role) {
		err = -ENOMEM;
		goto out;
	}
	if (!*aws_trim(role) || strchr(role, '/')) {
		err = msg_set(ret_msg, -ENOENT,
			      "instance metadata at %s: no IAM role attached",
			      c->imds_endpoint);
		goto out;
	}
	http_response_done(&r);

	step = "credentials";
	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/%s",
		     c->imds_endpoint, aws_trim(role)) < 0) {
		url = NULL;
		err = -ENOMEM;
		goto out;
	}
	err = request(c, url, NULL, NULL, hdrs, true, &r);
	if (err || r.status != 200)
		goto http_fail;
	err = aws_creds_parse_json(r.body, r.len, ret, &m);
	if (err)
		msg_set(ret_msg, err, "instance metadata at %s: %s",
			c->imds_endpoint, m ? m : "malformed credentials");
	goto out;

http_fail:
	err = response_msg(err, &r, &m);
	msg_set(ret_msg, err, "instance metadata at %s (%s): %s",
		c->imds_endpoint, step, m ? m : "failed");
out:
	free(m);
	free(role);
	free(url);
	aws_free_secret(hdr);
	curl_slist_free_all(hdrs);
	http_response_done(&r);
	return err;
}

int aws_provider_fetch(struct aws_creds *c, struct aws_credentials *ret,
		       char **ret_msg)
{
	switch (c->kind) {
	case AWS_KIND_WEB_IDENTITY:
		return fetch_web_identity(c, ret, ret_msg);
	case AWS_KIND_CONTAINER:
		return fetch_container(c, ret, ret_msg);
	case AWS_KIND_IMDS:
		return fetch_imds(c, ret, ret_msg);
	case AWS_KIND_STATIC:
		break;
	}
	return -EINVAL;
}

int aws_setup_web_identity(struct aws_creds *c, const char *region,
			   const char *token_file, const char *role_arn,
			   const char *session_name)
{
	const char *sts = env_get("AWS_ENDPOINT_URL_STS");
	char name[64];

	if (!sts)
		sts = env_get("AWS_ENDPOINT_URL");
	if (!session_name) {
		snprintf(name, sizeof(name), "weightfs-%lld",
			 (long long)time(NULL));
		session_name = name;
	}
	c->kind = AWS_KIND_WEB_IDENTITY;
	c->token_file = strdup(token_file);
	c->role_arn = strdup(role_arn);
	c->session_name = strdup(session_name);
	if (sts) {
		char *base = strip_slash(sts);

		if (base && asprintf(&c->sts_url, "%s/", base) < 0)
			c->sts_url = NULL;
		free(base);
	} else if (asprintf(&c->sts_url, "https://sts.%s.amazonaws.com%s/",
			    region,
			    strncmp(region, "cn-", 3) ? "" : ".cn") < 0) {
		c->sts_url = NULL;
	}
	return c->token_file && c->role_arn && c->session_name && c->sts_url
		       ? 0
		       : -ENOMEM;
}

/* Plain http is allowed to loopback and the ECS/EKS agents only, as in the
 * SDKs: the response is a credential. */
static bool container_host_ok(const char *url)
{
	static const char *const allowed[] = {
		"localhost",
		"[::1]",
		"169.254.170.2",
		"169.254.170.23",
		"[fd00:ec2::23]",
		"fd00:ec2::23",
		"::1",
	};
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	bool ok = false;

	if (!u || curl_url_set(u, CURLUPART_URL, url, 0) ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0))
		goto out;
	if (!strcasecmp(scheme, "https")) {
		ok = true;
		goto out;
	}
	if (strcasecmp(scheme, "http"))
		goto out;
	if (!strncmp(host, "127.", 4)) {
		ok = true;
		goto out;
	}
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		if (!strcasecmp(host, allowed[i]))
			ok = true;
out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

int aws_setup_container(struct aws_creds *c, char **ret_msg)
{
	const char *full = env_get("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = env_get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *tok_file =
		env_get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *tok = env_get("AWS_CONTAINER_AUTHORIZATION_TOKEN");

	c->kind = AWS_KIND_CONTAINER;
	if (rel) {
		if (asprintf(&c->container_url, "%s%s%s", ECS_HOST,
			     rel[0] == '/' ? "" : "/", rel) < 0)
			c->container_url = NULL;
	} else {
		if (!container_host_ok(full))
			return msg_set(ret_msg, -EINVAL,
				       "AWS_CONTAINER_CREDENTIALS_FULL_URI %s: "
				       "plain http is allowed only to "
				       "loopback and the ECS/EKS agent "
				       "addresses",
				       full);
		c->container_url = strdup(full);
	}
	if (tok_file)
		c->auth_token_file = strdup(tok_file);
	else if (tok)
		c->auth_token = strdup(tok);
	if (!c->container_url || (tok_file && !c->auth_token_file) ||
	    (!tok_file && tok && !c->auth_token))
		return -ENOMEM;
	return 0;
}

int aws_setup_imds(struct aws_creds *c)
{
	c->kind = AWS_KIND_IMDS;
	c->imds_endpoint = strip_slash(
		env_get("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?: IMDS_DEFAULT);
	return c->imds_endpoint ? 0 : -ENOMEM;
}
