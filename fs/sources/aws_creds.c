/* The AWS credential provider chain: which provider applies (resolve()),
 * and temporary credentials refreshed before they expire. The shared files
 * are read in aws_profile.c, the providers that fetch in aws_providers.c,
 * the documents parsed in aws_creds_doc.c. */
#include "aws_creds.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aws_creds_priv.h"
#include "env.h"
#include "msg.h"
#include "opts.h"

#define REFRESH_MARGIN_S 300
#define RETRY_AFTER_S 5

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
	int err = aws_provider_fetch(c, &n, &msg);

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

		if (c->kind == AWS_KIND_STATIC || !c->refresh_at ||
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
	err = aws_credentials_copy(&c->cur, ret);
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
	aws_free_secret(c->auth_token);
	free(c->auth_token_file);
	free(c->imds_endpoint);
	free(c->last_error);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}

/* --- the chain --- */

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
	const char *id = env_get("AWS_ACCESS_KEY_ID");
	const char *secret = env_get("AWS_SECRET_ACCESS_KEY");
	const char *wi_file = env_get("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *wi_role = env_get("AWS_ROLE_ARN");
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
		c->kind = AWS_KIND_STATIC;
		err = aws_credentials_set(&c->cur, id, secret,
					  env_get("AWS_SESSION_TOKEN"), 0);
		return err ?: set_provider(c, "environment");
	}

	/* 2. Web identity from the environment (IRSA). */
	if (!explicit_profile && wi_file && wi_role) {
		err = aws_setup_web_identity(c, region, wi_file, wi_role,
					     env_get("AWS_ROLE_SESSION_NAME"));
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
		c->kind = AWS_KIND_STATIC;
		err = aws_credentials_set(&c->cur, p.access_key_id,
					  p.secret_access_key, p.session_token,
					  0);
		if (!err)
			err = set_provider(c, "%s", p.where);
		goto out;
	}
	if (p.found && p.role_arn && p.web_identity_token_file) {
		err = aws_setup_web_identity(c, region,
					     p.web_identity_token_file,
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
	if (!p.found && (explicit_profile || env_get("AWS_PROFILE"))) {
		err = msg_set(ret_msg, -ENOENT,
			      "AWS profile %s not found in %s or %s", name,
			      cred_path, conf_path);
		goto out;
	}

	/* 4. Container credentials (ECS, EKS Pod Identity). */
	if (env_get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") ||
	    env_get("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
		err = aws_setup_container(c, ret_msg);
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
	err = aws_setup_imds(c);
	if (!err)
		err = set_provider(c, "EC2 instance metadata (%s)",
				   c->imds_endpoint);
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
	if (c->kind != AWS_KIND_STATIC) {
		err = aws_provider_fetch(c, &n, &msg);
		if (err) {
			if (c->kind == AWS_KIND_IMDS)
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
