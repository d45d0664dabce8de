/* The AWS credential provider chain. */
#include "aws_creds.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <expat.h>
#include <json-c/json.h>
#include <openssl/crypto.h>

#include "http.h"
#include "msg.h"
#include "opts.h"
#include "s3_list.h"

#define ASSUMED_LIFETIME_S (15 * 60)
#define MAX_RESPONSE (1u << 20)
#define MAX_TOKEN_FILE (64u << 10)
#define REFRESH_MARGIN_S 300
#define RETRY_AFTER_S 5
#define IMDS_DEFAULT "http://169.254.169.254"
#define ECS_HOST "http://169.254.170.2"

enum kind {
	KIND_STATIC,
	KIND_WEB_IDENTITY,
	KIND_CONTAINER,
	KIND_IMDS,
};

struct aws_creds {
	const struct options *opts;
	enum kind kind;
	char *provider; /* for messages */

	/* KIND_WEB_IDENTITY */
	char *sts_url;
	char *role_arn;
	char *token_file;
	char *session_name;
	/* KIND_CONTAINER */
	char *container_url;
	char *auth_token;      /* or NULL */
	char *auth_token_file; /* or NULL; read at every fetch */
	/* KIND_IMDS */
	char *imds_endpoint;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct aws_credentials cur; /* protected by lock */
	time_t refresh_at;	    /* lock; 0: never */
	time_t retry_at;	    /* lock: after a failed refresh */
	bool refreshing;	    /* lock: one caller is fetching */
	char *last_error;	    /* lock */
};

static void free_secret(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void aws_credentials_done(struct aws_credentials *c)
{
	if (!c)
		return;
	free_secret(c->access_key_id);
	free_secret(c->secret_access_key);
	free_secret(c->session_token);
	memset(c, 0, sizeof(*c));
}

static int credentials_copy(const struct aws_credentials *c,
			    struct aws_credentials *ret)
{
	struct aws_credentials n = { .expiration = c->expiration };

	n.access_key_id = strdup(c->access_key_id);
	n.secret_access_key = strdup(c->secret_access_key);
	if (c->session_token)
		n.session_token = strdup(c->session_token);
	if (!n.access_key_id || !n.secret_access_key ||
	    (c->session_token && !n.session_token)) {
		aws_credentials_done(&n);
		return -ENOMEM;
	}
	*ret = n;
	return 0;
}

static int credentials_set(struct aws_credentials *c, const char *id,
			   const char *secret, const char *token,
			   time_t expiration)
{
	struct aws_credentials n = { .expiration = expiration };

	n.access_key_id = strdup(id);
	n.secret_access_key = strdup(secret);
	if (token && *token)
		n.session_token = strdup(token);
	if (!n.access_key_id || !n.secret_access_key ||
	    (token && *token && !n.session_token)) {
		aws_credentials_done(&n);
		return -ENOMEM;
	}
	*c = n;
	return 0;
}

/* --- files --- */

static char *home_path(const char *rel)
{
	const char *home = getenv("HOME");
	char *p;

	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());

		home = pw ? pw->pw_dir : "/";
	}
	if (asprintf(&p, "%s/%s", home, rel) < 0)
		return NULL;
	return p;
}

/* $VAR, with a leading "~/" expanded as the SDKs do, else ~/@rel. */
static char *file_from_env(const char *var, const char *rel)
{
	const char *v = getenv(var);

	if (!v || !*v)
		return home_path(rel);
	if (v[0] == '~' && v[1] == '/')
		return home_path(v + 2);
	return strdup(v);
}

int aws_profile_paths(const char *explicit_name, char **ret_credentials,
		      char **ret_config, char **ret_name)
{
	const char *env = getenv("AWS_PROFILE");
	char *cred = file_from_env("AWS_SHARED_CREDENTIALS_FILE",
				   ".aws/credentials");
	char *conf = file_from_env("AWS_CONFIG_FILE", ".aws/config");
	char *name = strdup(explicit_name && *explicit_name ? explicit_name
			    : env && *env		    ? env
							    : "default");

	if (!cred || !conf || !name) {
		free(cred);
		free(conf);
		free(name);
		return -ENOMEM;
	}
	*ret_credentials = cred;
	*ret_config = conf;
	*ret_name = name;
	return 0;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	return s;
}

/* Whether section header @sec (the text between [ and ]) names profile
 * @name in a credentials file (@config false) or a config file. */
static bool section_is(const char *sec, const char *name, bool config)
{
	if (!config)
		return !strcmp(sec, name);
	if (!strcmp(name, "default") && !strcmp(sec, "default"))
		return true;
	if (strncmp(sec, "profile", 7) || (sec[7] != ' ' && sec[7] != '\t'))
		return false;
	sec += 7;
	while (*sec == ' ' || *sec == '\t')
		sec++;
	return !strcmp(sec, name);
}

struct key_slot {
	const char *key;
	size_t offset;
	bool credential; /* the credentials file's value wins */
};

#define SLOT(k, field, cred)                                                   \
	{                                                                      \
		k, offsetof(struct aws_profile, field), cred                   \
	}
static const struct key_slot slots[] = {
	SLOT("aws_access_key_id", access_key_id, true),
	SLOT("aws_secret_access_key", secret_access_key, true),
	SLOT("aws_session_token", session_token, true),
	SLOT("region", region, false),
	SLOT("role_arn", role_arn, false),
	SLOT("web_identity_token_file", web_identity_token_file, false),
	SLOT("role_session_name", role_session_name, false),
	SLOT("source_profile", source_profile, false),
	SLOT("credential_process", credential_process, false),
	SLOT("sso_session", sso, false),
	SLOT("sso_start_url", sso, false),
};

/* Read @path's section for profile @name into @p. Values already set
 * (from the credentials file, read first) are kept. */
static int ini_read(const char *path, const char *name, bool config,
		    struct aws_profile *p)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	bool in = false, found = false;
	int err = 0;

	if (!path)
		return 0;
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	while (getline(&line, &cap, f) >= 0) {
		char *s, *eq, *k, *v;

		/* Indented lines continue a nested value ("s3 =\n  x = y"). */
		if (line[0] == ' ' || line[0] == '\t')
			continue;
		s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');

			if (!end) {
				in = false;
				continue;
			}
			*end = '\0';
			in = section_is(trim(s + 1), name, config);
			found |= in;
			continue;
		}
		if (!in || !(eq = strchr(s, '=')))
			continue;
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
			char **dst = (char **)((char *)p + slots[i].offset);

			if (strcasecmp(k, slots[i].key))
				continue;
			if (*dst && (slots[i].credential || !config))
				break;
			if (*dst)
				free_secret(*dst);
			*dst = strdup(v);
			if (!*dst)
				err = -ENOMEM;
			break;
		}
	}
	if (ferror(f) && !err)
		err = -EIO;
	if (found && !p->where &&
	    asprintf(&p->where, "profile %s in %s", name, path) < 0) {
		p->where = NULL;
		err = -ENOMEM;
	}
	p->found |= found;
	free_secret(line);
	fclose(f);
	return err;
}

int aws_profile_load(const char *credentials_path, const char *config_path,
		     const char *name, struct aws_profile *ret)
{
	struct aws_profile p = { 0 };
	int err;

	err = ini_read(credentials_path, name, false, &p);
	if (!err)
		err = ini_read(config_path, name, true, &p);
	if (err) {
		aws_profile_done(&p);
		return err;
	}
	*ret = p;
	return 0;
}

void aws_profile_done(struct aws_profile *p)
{
	if (!p)
		return;
	free_secret(p->access_key_id);
	free_secret(p->secret_access_key);
	free_secret(p->session_token);
	free(p->region);
	free(p->role_arn);
	free(p->web_identity_token_file);
	free(p->role_session_name);
	free(p->source_profile);
	free(p->credential_process);
	free(p->sso);
	free(p->where);
	memset(p, 0, sizeof(*p));
}

/* A token file's content, trimmed, or NULL with an errno. */
static int read_token_file(const char *path, char **ret)
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
			free_secret(buf);
			return (int)n;
		}
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	t = trim(buf);
	if (!*t || strpbrk(t, "\r\n")) {
		free_secret(buf);
		return -EBADMSG;
	}
	memmove(buf, t, strlen(t) + 1);
	*ret = buf;
	return 0;
}

/* --- responses --- */

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int aws_creds_parse_json(const char *json, size_t len,
			 struct aws_credentials *ret, char **ret_msg)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = NULL;
	const char *id, *secret, *token, *exp, *code;
	struct timespec ts = { 0 };
	int err = -EBADMSG;

	if (!tok)
		return -ENOMEM;
	if (len <= INT_MAX)
		o = json_tokener_parse_ex(tok, json, (int)len);
	json_tokener_free(tok);
	if (!o || !json_object_is_type(o, json_type_object)) {
		msg_set(ret_msg, 0, "not a JSON object");
		goto out;
	}
	code = jstr(o, "Code");
	if (code && strcmp(code, "Success")) {
		const char *m = jstr(o, "Message");

		msg_set(ret_msg, 0, "%.100s%s%.200s", code, m ? ": " : "",
			m ? m : "");
		goto out;
	}
	id = jstr(o, "AccessKeyId");
	secret = jstr(o, "SecretAccessKey");
	token = jstr(o, "Token");
	exp = jstr(o, "Expiration");
	if (!id || !*id || !secret || !*secret) {
		msg_set(ret_msg, 0, "no AccessKeyId or SecretAccessKey");
		goto out;
	}
	if (exp && s3_parse_time(exp, &ts)) {
		msg_set(ret_msg, 0, "malformed Expiration");
		goto out;
	}
	/* Temporary credentials without an expiry: assume a short life and
	 * refresh, rather than keep them until requests fail. */
	if (token && *token && !exp)
		ts.tv_sec = time(NULL) + ASSUMED_LIFETIME_S;
	err = credentials_set(ret, id, secret, token, ts.tv_sec);
out:
	json_object_put(o);
	return err;
}

struct sts_parse {
	XML_Parser xp;
	int depth;
	bool in_creds;
	char field[32];
	char *text;
	size_t len;
	int err;
	char *id, *secret, *token, *exp;
	bool root_ok;
};

static void sts_start(void *arg, const XML_Char *name, const XML_Char **a)
{
	struct sts_parse *p = arg;

	p->depth++;
	if (p->depth == 1)
		p->root_ok = !strcmp(name, "AssumeRoleWithWebIdentityResponse");
	if (p->depth == 3 && !strcmp(name, "Credentials"))
		p->in_creds = true;
	p->len = 0;
	snprintf(p->field, sizeof(p->field), "%s", p->in_creds ? name : "");
}

static void sts_text(void *arg, const XML_Char *s, int len)
{
	struct sts_parse *p = arg;
	char *t;

	if (p->err || !p->in_creds || p->depth != 4 || len <= 0)
		return;
	if ((size_t)len > MAX_TOKEN_FILE - p->len) {
		p->err = -EBADMSG;
		XML_StopParser(p->xp, XML_FALSE);
		return;
	}
	t = realloc(p->text, p->len + (size_t)len + 1);
	if (!t) {
		p->err = -ENOMEM;
		XML_StopParser(p->xp, XML_FALSE);
		return;
	}
	memcpy(t + p->len, s, (size_t)len);
	p->len += (size_t)len;
	t[p->len] = '\0';
	p->text = t;
}

static void sts_end(void *arg, const XML_Char *name)
{
	struct sts_parse *p = arg;
	char **dst = NULL;

	if (p->in_creds && p->depth == 4) {
		if (!strcmp(name, "AccessKeyId"))
			dst = &p->id;
		else if (!strcmp(name, "SecretAccessKey"))
			dst = &p->secret;
		else if (!strcmp(name, "SessionToken"))
			dst = &p->token;
		else if (!strcmp(name, "Expiration"))
			dst = &p->exp;
	}
	if (dst && !p->err) {
		free_secret(*dst);
		*dst = strndup(p->text ? p->text : "", p->len);
		if (!*dst) {
			p->err = -ENOMEM;
			XML_StopParser(p->xp, XML_FALSE);
		}
	}
	if (p->depth == 3 && p->in_creds)
		p->in_creds = false;
	p->depth--;
	p->len = 0;
}

int aws_creds_parse_sts(const char *xml, size_t len,
			struct aws_credentials *ret)
{
	struct sts_parse p = { 0 };
	struct timespec ts = { 0 };
	int err = -EBADMSG;

	if (len > INT_MAX)
		return -EBADMSG;
	p.xp = XML_ParserCreate("UTF-8");
	if (!p.xp)
		return -ENOMEM;
	XML_SetUserData(p.xp, &p);
	XML_SetElementHandler(p.xp, sts_start, sts_end);
	XML_SetCharacterDataHandler(p.xp, sts_text);
	if (XML_Parse(p.xp, xml, (int)len, XML_TRUE) != XML_STATUS_OK) {
		err = p.err ? p.err : -EBADMSG;
		goto out;
	}
	if (!p.root_ok || !p.id || !*p.id || !p.secret || !*p.secret ||
	    !p.token || !p.exp || s3_parse_time(p.exp, &ts))
		goto out;
	err = credentials_set(ret, p.id, p.secret, p.token, ts.tv_sec);
out:
	XML_ParserFree(p.xp);
	free_secret(p.text);
	free_secret(p.id);
	free_secret(p.secret);
	free_secret(p.token);
	free(p.exp);
	return err;
}

/* --- fetching --- */

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

/* One request on a fresh handle: @method NULL (GET) or "PUT"/"POST". */
static int request(struct aws_creds *c, const char *url, const char *method,
		   const char *body, struct curl_slist *hdrs, bool metadata,
		   struct http_response *ret)
{
	CURL *h = curl_easy_init();
	int err;

	if (!h)
		return -ENOMEM;
	http_setup_common(h, c->opts);
	curl_easy_setopt(h, CURLOPT_URL, url);
	if (hdrs)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (method && !strcmp(method, "POST")) {
		curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body ? body : "");
	} else if (method) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	/* Metadata services answer at once, or are not there at all. */
	if (metadata) {
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
	} else {
		curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	}
	err = http_perform(h, MAX_RESPONSE, ret);
	curl_easy_cleanup(h);
	return err;
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

	err = read_token_file(c->token_file, &token);
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
	free_secret(body);
	free_secret(e_token);
	free_secret(token);
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
		err = read_token_file(c->auth_token_file, &token);
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
	free_secret(hdr);
	free_secret(token);
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
	if (!*trim(role) || strchr(role, '/')) {
		err = msg_set(ret_msg, -ENOENT,
			      "instance metadata at %s: no IAM role attached",
			      c->imds_endpoint);
		goto out;
	}
	http_response_done(&r);

	step = "credentials";
	free(url);
	if (asprintf(&url, "%s/latest/meta-data/iam/security-credentials/%s",
		     c->imds_endpoint, trim(role)) < 0) {
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
	free_secret(hdr);
	curl_slist_free_all(hdrs);
	http_response_done(&r);
	return err;
}

static int fetch(struct aws_creds *c, struct aws_credentials *ret,
		 char **ret_msg)
{
	switch (c->kind) {
	case KIND_WEB_IDENTITY:
		return fetch_web_identity(c, ret, ret_msg);
	case KIND_CONTAINER:
		return fetch_container(c, ret, ret_msg);
	case KIND_IMDS:
		return fetch_imds(c, ret, ret_msg);
	case KIND_STATIC:
		break;
	}
	return -EINVAL;
}

/* When to refresh credentials expiring at @exp, fetched at @now. */
static time_t refresh_time(time_t now, time_t exp)
{
	time_t margin;

	if (!exp)
		return 0;
	margin = exp > now ? (exp - now) / 2 : 0;
	if (margin > REFRESH_MARGIN_S)
		margin = REFRESH_MARGIN_S;
	return exp - margin;
}

/* Install freshly fetched @n; called with c->lock held, or before the
 * provider is shared. */
static void install(struct aws_creds *c, struct aws_credentials *n, time_t now)
{
	aws_credentials_done(&c->cur);
	c->cur = *n;
	memset(n, 0, sizeof(*n));
	c->refresh_at = refresh_time(now, c->cur.expiration);
	c->retry_at = 0;
}

/* Fetch new credentials and install them, or note why not. Called with
 * c->refreshing set by the caller and c->lock NOT held. @return 0 or the
 * fetch's negative errno. */
static int refresh(struct aws_creds *c)
{
	struct aws_credentials n = { 0 };
	char *msg = NULL;
	time_t now;
	int err = fetch(c, &n, &msg);

	pthread_mutex_lock(&c->lock);
	c->refreshing = false;
	now = time(NULL);
	if (!err && n.expiration && n.expiration <= now) {
		/* Already expired on arrival (a clock or server problem):
		 * not something to fetch again at every request. */
		aws_credentials_done(&n);
		err = -EKEYEXPIRED;
		msg_set(&msg, err, "they arrived already expired");
	}
	if (!err) {
		install(c, &n, now);
	} else {
		c->retry_at = now + RETRY_AFTER_S;
		free(c->last_error);
		c->last_error = msg;
		msg = NULL;
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	free(msg);
	return err;
}

static void *refresh_thread(void *arg)
{
	refresh(arg);
	return NULL;
}

int aws_creds_get(struct aws_creds *c, struct aws_credentials *ret,
		  char **ret_msg)
{
	time_t now = time(NULL);
	pthread_t t;
	int err;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		bool valid = !c->cur.expiration || now < c->cur.expiration;

		if (c->kind == KIND_STATIC || !c->refresh_at ||
		    now < c->refresh_at)
			goto copy;
		/* Someone is refreshing, or a refresh just failed: the
		 * current credentials serve while they last. */
		if (valid && (c->refreshing || now < c->retry_at))
			goto copy;
		/* Still valid: refresh in the background. The caller may be
		 * the fetch thread, which must not wait for STS or IMDS. */
		if (valid) {
			c->refreshing = true;
			if (pthread_create(&t, NULL, refresh_thread, c) == 0) {
				pthread_detach(t);
				goto copy;
			}
			c->refreshing = false;
			break;
		}
		if (!c->refreshing)
			break;
		pthread_cond_wait(&c->cond, &c->lock);
		now = time(NULL);
	}
	if (now < c->retry_at) {
		err = msg_set(ret_msg, -EKEYEXPIRED,
			      "credentials from %s expired: %s", c->provider,
			      c->last_error ? c->last_error : "refresh failed");
		pthread_mutex_unlock(&c->lock);
		return err;
	}
	/* Expired (or none yet): this caller fetches, and waits. */
	c->refreshing = true;
	pthread_mutex_unlock(&c->lock);
	refresh(c);
	pthread_mutex_lock(&c->lock);
	now = time(NULL);
	if (c->cur.expiration && now >= c->cur.expiration) {
		err = msg_set(ret_msg, -EKEYEXPIRED,
			      "credentials from %s expired: %s", c->provider,
			      c->last_error ? c->last_error : "refresh failed");
		pthread_mutex_unlock(&c->lock);
		return err;
	}
copy:
	err = credentials_copy(&c->cur, ret);
	pthread_mutex_unlock(&c->lock);
	return err;
}

const char *aws_creds_provider(const struct aws_creds *c)
{
	return c->provider;
}

void aws_creds_free(struct aws_creds *c)
{
	if (!c)
		return;
	/* A background refresh still uses @c. */
	pthread_mutex_lock(&c->lock);
	while (c->refreshing)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	aws_credentials_done(&c->cur);
	free(c->provider);
	free(c->sts_url);
	free(c->role_arn);
	free(c->token_file);
	free(c->session_name);
	free(c->container_url);
	free_secret(c->auth_token);
	free(c->auth_token_file);
	free(c->imds_endpoint);
	free(c->last_error);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}

/* --- the chain --- */

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

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

static int setup_web_identity(struct aws_creds *c, const char *region,
			      const char *token_file, const char *role_arn,
			      const char *session_name)
{
	const char *sts = env("AWS_ENDPOINT_URL_STS");
	char name[64];

	if (!sts)
		sts = env("AWS_ENDPOINT_URL");
	if (!session_name) {
		snprintf(name, sizeof(name), "weightfs-%lld",
			 (long long)time(NULL));
		session_name = name;
	}
	c->kind = KIND_WEB_IDENTITY;
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

static int setup_container(struct aws_creds *c, char **ret_msg)
{
	const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *tok_file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *tok = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");

	c->kind = KIND_CONTAINER;
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

static bool env_true(const char *name)
{
	const char *v = env(name);

	return v && !strcasecmp(v, "true");
}

static int set_provider(struct aws_creds *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int set_provider(struct aws_creds *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&c->provider, fmt, ap);
	va_end(ap);
	if (n < 0) {
		c->provider = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Resolve the chain into @c: its kind, and static credentials. @return 0,
 * 1 when nothing before IMDS applies, or a negative errno. */
static int resolve(struct aws_creds *c, const char *region, char **ret_msg)
{
	const char *explicit_profile = c->opts ? c->opts->profile : NULL;
	const char *id = env("AWS_ACCESS_KEY_ID");
	const char *secret = env("AWS_SECRET_ACCESS_KEY");
	const char *wi_file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *wi_role = env("AWS_ROLE_ARN");
	char *cred_path = NULL, *conf_path = NULL, *name = NULL;
	struct aws_profile p = { 0 };
	int err;

	/* 1. Environment, unless a profile was asked for by name. */
	if (!explicit_profile && (id || secret)) {
		if (!id || !secret)
			return msg_set(ret_msg, -EINVAL,
				       "%s is set but %s is not",
				       id ? "AWS_ACCESS_KEY_ID"
					  : "AWS_SECRET_ACCESS_KEY",
				       id ? "AWS_SECRET_ACCESS_KEY"
					  : "AWS_ACCESS_KEY_ID");
		c->kind = KIND_STATIC;
		err = credentials_set(&c->cur, id, secret,
				      env("AWS_SESSION_TOKEN"), 0);
		return err ?: set_provider(c, "environment");
	}

	/* 2. Web identity from the environment (IRSA). */
	if (!explicit_profile && wi_file && wi_role) {
		err = setup_web_identity(c, region, wi_file, wi_role,
					 env("AWS_ROLE_SESSION_NAME"));
		return err
			       ?: set_provider(c, "web identity (role %s)",
					       wi_role);
	}

	/* 3. Shared files. */
	err = aws_profile_paths(explicit_profile, &cred_path, &conf_path,
				&name);
	if (err)
		return err;
	err = aws_profile_load(cred_path, conf_path, name, &p);
	if (err) {
		msg_set(ret_msg, err, "reading %s or %s: %s", cred_path,
			conf_path, strerror(-err));
		goto out;
	}
	if (p.found && p.access_key_id && p.secret_access_key) {
		c->kind = KIND_STATIC;
		err = credentials_set(&c->cur, p.access_key_id,
				      p.secret_access_key, p.session_token, 0);
		if (!err)
			err = set_provider(c, "%s", p.where);
		goto out;
	}
	if (p.found && p.role_arn && p.web_identity_token_file) {
		err = setup_web_identity(c, region, p.web_identity_token_file,
					 p.role_arn, p.role_session_name);
		if (!err)
			err = set_provider(c, "web identity (role %s, %s)",
					   p.role_arn, p.where);
		goto out;
	}
	if (p.found && (p.role_arn || p.credential_process || p.sso)) {
		err = msg_set(ret_msg, -EOPNOTSUPP,
			      "%s uses %s, which weightfs does not support; "
			      "use static keys, web identity, container or "
			      "instance credentials",
			      p.where,
			      p.credential_process ? "credential_process"
			      : p.sso		   ? "AWS SSO"
						   : "role_arn with "
						     "source_profile");
		goto out;
	}
	if (p.found && (p.access_key_id || p.secret_access_key)) {
		err = msg_set(ret_msg, -EINVAL,
			      "%s has only one of aws_access_key_id and "
			      "aws_secret_access_key",
			      p.where);
		goto out;
	}
	if (!p.found && (explicit_profile || env("AWS_PROFILE"))) {
		err = msg_set(ret_msg, -ENOENT,
			      "AWS profile %s not found in %s or %s", name,
			      cred_path, conf_path);
		goto out;
	}

	/* 4. Container credentials (ECS, EKS Pod Identity). */
	if (env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") ||
	    env("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
		err = setup_container(c, ret_msg);
		if (!err)
			err = set_provider(c, "container credentials (%s)",
					   c->container_url);
		goto out;
	}

	/* 5. EC2 instance metadata. */
	if (env_true("AWS_EC2_METADATA_DISABLED")) {
		err = 1;
		goto out;
	}
	c->kind = KIND_IMDS;
	c->imds_endpoint = strip_slash(env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
					       ?: IMDS_DEFAULT);
	err = c->imds_endpoint ? set_provider(c, "EC2 instance metadata (%s)",
					      c->imds_endpoint)
			       : -ENOMEM;
out:
	aws_profile_done(&p);
	free(cred_path);
	free(conf_path);
	free(name);
	return err;
}

int aws_creds_new(const struct options *opts, const char *region,
		  struct aws_creds **ret, char **ret_msg)
{
	struct aws_creds *c = calloc(1, sizeof(*c));
	struct aws_credentials n = { 0 };
	char *msg = NULL;
	int err;

	if (!c)
		return -ENOMEM;
	c->opts = opts;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	err = resolve(c, region ? region : "us-east-1", ret_msg);
	if (err == 1) {
		err = msg_set(ret_msg, -ENOKEY,
			      "no AWS credentials found (looked in the "
			      "environment, web identity, the shared files, "
			      "container credentials; instance metadata is "
			      "disabled by AWS_EC2_METADATA_DISABLED); use -o "
			      "no_sign_request for a public bucket");
		goto fail;
	}
	if (err)
		goto fail;
	if (c->kind != KIND_STATIC) {
		err = fetch(c, &n, &msg);
		if (err) {
			if (c->kind == KIND_IMDS)
				msg_set(ret_msg, err,
					"no AWS credentials found (looked in "
					"the environment, web identity, the "
					"shared files, container credentials "
					"and instance metadata: %s); use -o "
					"no_sign_request for a public bucket",
					msg ? msg : "failed");
			else
				msg_set(ret_msg, err, "%s", msg ? msg : "");
			free(msg);
			goto fail;
		}
		install(c, &n, time(NULL));
	}
	*ret = c;
	return 0;
fail:
	aws_creds_free(c);
	return err;
}
