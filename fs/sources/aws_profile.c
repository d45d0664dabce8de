/* The AWS shared files: ~/.aws/credentials and ~/.aws/config, read as the
 * SDKs read them, for one profile. */
#include "aws_creds.h"

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "aws_creds_priv.h"
#include "env.h"

static char *home_path(const char *rel)
{
	const char *home = env_get("HOME");
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
	const char *v = env_get(var);

	if (!v)
		return home_path(rel);
	if (v[0] == '~' && v[1] == '/')
		return home_path(v + 2);
	return strdup(v);
}

int aws_profile_paths(const char *explicit_name, char **ret_credentials,
		      char **ret_config, char **ret_name)
{
	const char *env = env_get("AWS_PROFILE");
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

char *aws_trim(char *s)
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
		s = aws_trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');

			if (!end) {
				in = false;
				continue;
			}
			*end = '\0';
			in = section_is(aws_trim(s + 1), name, config);
			found |= in;
			continue;
		}
		if (!in || !(eq = strchr(s, '=')))
			continue;
		*eq = '\0';
		k = aws_trim(s);
		v = aws_trim(eq + 1);
		for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
			char **dst = (char **)((char *)p + slots[i].offset);

			if (strcasecmp(k, slots[i].key))
				continue;
			if (*dst && (slots[i].credential || !config))
				break;
			if (*dst)
				aws_free_secret(*dst);
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
	aws_free_secret(line);
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
	aws_free_secret(p->access_key_id);
	aws_free_secret(p->secret_access_key);
	aws_free_secret(p->session_token);
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
