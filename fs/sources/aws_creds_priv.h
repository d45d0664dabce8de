/* Private to the aws_* files of the daemon (aws_creds.c, aws_profile.c,
 * aws_providers.c, aws_creds_doc.c): the provider's state and the helpers
 * they share. Users of credentials include aws_creds.h only. */
#ifndef WFS_FS_AWS_CREDS_PRIV_H
#define WFS_FS_AWS_CREDS_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "aws_creds.h"

/* Longest token file, and longest text of one STS response element. */
#define MAX_TOKEN_FILE (64u << 10)

enum aws_kind {
	AWS_KIND_STATIC,
	AWS_KIND_WEB_IDENTITY,
	AWS_KIND_CONTAINER,
	AWS_KIND_IMDS,
};

struct aws_creds {
	const struct options *opts;
	enum aws_kind kind;
	char *provider; /* for messages */

	/* AWS_KIND_WEB_IDENTITY */
	char *sts_url;
	char *role_arn;
	char *token_file;
	char *session_name;
	/* AWS_KIND_CONTAINER */
	char *container_url;
	char *auth_token;      /* or NULL */
	char *auth_token_file; /* or NULL; read at every fetch */
	/* AWS_KIND_IMDS */
	char *imds_endpoint;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct aws_credentials cur; /* protected by lock */
	time_t refresh_at;	    /* lock; 0: never */
	time_t retry_at;	    /* lock: after a failed refresh */
	bool refreshing;	    /* lock: one caller is fetching */
	char *last_error;	    /* lock */
};

/* --- aws_creds_doc.c --- */

/* aws_free_secret() - wipe and free @s. NULL ok. */
void aws_free_secret(char *s);

/* aws_credentials_set() - *c = copies of @id, @secret, @token (NULL or
 * "": none). @return 0 or -ENOMEM (*c untouched). */
int aws_credentials_set(struct aws_credentials *c, const char *id,
			const char *secret, const char *token,
			time_t expiration);

/* aws_credentials_copy() - *ret = a copy of @c. @return 0 or -ENOMEM. */
int aws_credentials_copy(const struct aws_credentials *c,
			 struct aws_credentials *ret);

/* --- aws_profile.c --- */

/* aws_trim() - @s without leading and trailing white space (in place). */
char *aws_trim(char *s);

/* --- aws_providers.c --- */

/* aws_read_token_file() - @path's content, trimmed, into *ret (malloc'd).
 * @return 0, a negative errno, or -EBADMSG (empty or several lines). */
int aws_read_token_file(const char *path, char **ret);

/* Set @c up as one provider: web identity (STS in @region), container
 * credentials from the environment, EC2 instance metadata. @return 0,
 * -ENOMEM, or (container) -EINVAL with *ret_msg. */
int aws_setup_web_identity(struct aws_creds *c, const char *region,
			   const char *token_file, const char *role_arn,
			   const char *session_name);
int aws_setup_container(struct aws_creds *c, char **ret_msg);
int aws_setup_imds(struct aws_creds *c);

/* aws_provider_fetch() - fetch credentials from @c's provider (not
 * AWS_KIND_STATIC) into *ret. @return 0, or a negative errno and
 * *ret_msg. Blocks for up to the provider's timeouts; takes no lock. */
int aws_provider_fetch(struct aws_creds *c, struct aws_credentials *ret,
		       char **ret_msg);

#endif
