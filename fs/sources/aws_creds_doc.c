/* AWS credentials as values, and the documents they arrive in: the JSON of
 * container credentials and IMDS, the XML of STS AssumeRoleWithWebIdentity. */
#include "aws_creds.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <expat.h>
#include <json-c/json.h>
#include <openssl/crypto.h>

#include "aws_creds_priv.h"
#include "msg.h"
#include "s3_list.h"

#define ASSUMED_LIFETIME_S (15 * 60)

void aws_free_secret(char *s)
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
	aws_free_secret(c->access_key_id);
	aws_free_secret(c->secret_access_key);
	aws_free_secret(c->session_token);
	memset(c, 0, sizeof(*c));
}

int aws_credentials_copy(const struct aws_credentials *c,
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

int aws_credentials_set(struct aws_credentials *c, const char *id,
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
	err = aws_credentials_set(ret, id, secret, token, ts.tv_sec);
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
		aws_free_secret(*dst);
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
	err = aws_credentials_set(ret, p.id, p.secret, p.token, ts.tv_sec);
out:
	XML_ParserFree(p.xp);
	aws_free_secret(p.text);
	aws_free_secret(p.id);
	aws_free_secret(p.secret);
	aws_free_secret(p.token);
	free(p.exp);
	return err;
}
