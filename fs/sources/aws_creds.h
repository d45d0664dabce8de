/* AWS credentials: the provider chain of the AWS SDKs, and temporary
 * credentials refreshed before they expire.
 *
 * Order: environment (AWS_ACCESS_KEY_ID...; skipped when -o profile= names
 * a profile), web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN,
 * STS AssumeRoleWithWebIdentity), the shared credentials and config files
 * (profile from -o profile=, $AWS_PROFILE, else "default"), container
 * credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI), EC2
 * instance metadata (IMDSv2).
 *
 * aws_creds_get() is thread-safe: it hands out copies under c->lock, and
 * one caller refreshes temporary credentials while the others keep using
 * the current ones until they expire. Nothing here logs; no message
 * returned contains a secret.
 *
 * Files: aws_creds.c (the chain, refresh), aws_profile.c (the shared
 * files), aws_providers.c (web identity, container, IMDS), aws_creds_doc.c
 * (credential values, JSON and STS XML documents); aws_creds_priv.h is
 * what they share. */
#ifndef WFS_FS_AWS_CREDS_H
#define WFS_FS_AWS_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct options;

struct aws_credentials {
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* or NULL */
	time_t expiration;   /* 0: does not expire */
};

/* aws_credentials_done() - wipe and free the strings of @c. */
void aws_credentials_done(struct aws_credentials *c);

struct aws_creds;

/*
 * aws_creds_new() - find credentials along the chain, fetching temporary
 * ones now so that a mount fails early. @region is the one STS is called
 * in. @opts must outlive the provider.
 * @return 0 and *ret, or a negative errno and *ret_msg (malloc'd) that
 * says what was tried and what failed.
 */
int aws_creds_new(const struct options *opts, const char *region,
		  struct aws_creds **ret, char **ret_msg);
void aws_creds_free(struct aws_creds *c);

/*
 * aws_creds_get() - a copy of the current credentials into *ret (release
 * with aws_credentials_done()), refreshed first when they expire within
 * 5 minutes (or half their lifetime, if shorter).
 * @return 0, or a negative errno when the credentials expired and could
 * not be refreshed; then *ret_msg (when not NULL) gets a malloc'd message.
 */
int aws_creds_get(struct aws_creds *c, struct aws_credentials *ret,
		  char **ret_msg);

/* aws_creds_provider() - where the credentials came from, for messages
 * ("environment", "profile default in /root/.aws/credentials", ...). */
const char *aws_creds_provider(const struct aws_creds *c);

/* A profile of the shared files, as far as weightfs reads it. */
struct aws_profile {
	bool found; /* the profile exists in one of the files */
	char *access_key_id;
	char *secret_access_key;
	char *session_token;
	char *region;
	char *role_arn;
	char *web_identity_token_file;
	char *role_session_name;
	char *source_profile;
	char *credential_process;
	char *sso;   /* sso_session or sso_start_url, when set */
	char *where; /* "profile NAME in PATH", for messages */
};

/*
 * aws_profile_load() - read profile @name from the credentials file at
 * @credentials_path ("[name]" sections) and the config file at
 * @config_path ("[profile name]", or "[default]"); either path may be
 * NULL or missing. Credential keys of the credentials file win.
 * @return 0 and *ret (release with aws_profile_done()) also when the
 * profile is not found (ret->found false), -ENOMEM or the errno of a file
 * that exists but cannot be read.
 */
int aws_profile_load(const char *credentials_path, const char *config_path,
		     const char *name, struct aws_profile *ret);
void aws_profile_done(struct aws_profile *p);

/*
 * aws_profile_paths() - the shared files from the environment
 * ($AWS_SHARED_CREDENTIALS_FILE, $AWS_CONFIG_FILE, else ~/.aws/...) and
 * the profile name (@explicit_name, else $AWS_PROFILE, else "default").
 * @return 0 and the three malloc'd strings, or -ENOMEM.
 */
int aws_profile_paths(const char *explicit_name, char **ret_credentials,
		      char **ret_config, char **ret_name);

/*
 * aws_creds_parse_json() - credentials from a container credentials or
 * IMDS response ({"AccessKeyId", "SecretAccessKey", "Token",
 * "Expiration", and IMDS's "Code"}).
 * @return 0 and *ret, -EBADMSG (with a reason in *ret_msg, never a secret),
 * -ENOMEM.
 */
int aws_creds_parse_json(const char *json, size_t len,
			 struct aws_credentials *ret, char **ret_msg);

/*
 * aws_creds_parse_sts() - credentials from an STS
 * AssumeRoleWithWebIdentity response document.
 * @return 0 and *ret, -EBADMSG, -ENOMEM.
 */
int aws_creds_parse_sts(const char *xml, size_t len,
			struct aws_credentials *ret);

#endif
