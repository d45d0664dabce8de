/* What every source shares: freeing, and URLs as they may be shown. */
#include "source.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void source_free(struct source *s)
{
	if (s)
		s->ops->free(s);
}

/* Query parameters whose value is a secret or proves one. */
static const char *const secret_params[] = {
	"x-amz-signature",
	"x-amz-credential",
	"x-amz-security-token",
	"signature",
	"sig",
	"token",
	"access_token",
	"awsaccesskeyid",
	"x-goog-signature",
	"x-goog-credential",
};

static bool query_has_secret(const char *q)
{
	while (*q) {
		size_t len = strcspn(q, "=&");
		size_t i;

		for (i = 0; i < sizeof(secret_params) / sizeof(*secret_params);
		     i++)
			if (strlen(secret_params[i]) == len &&
			    !strncasecmp(q, secret_params[i], len))
				return true;
		q += strcspn(q, "&");
		if (*q == '&')
			q++;
	}
	return false;
}

char *source_redact(const char *url)
{
	const char *auth = strstr(url, "://"), *end, *at, *q;
	char *out, *p;

	out = malloc(strlen(url) + 1);
	if (!out)
		return NULL;
	auth = auth ? auth + 3 : url;
	end = auth + strcspn(auth, "/?#");
	/* The last '@' of the authority ends the userinfo. */
	for (at = NULL, q = auth; q < end; q++)
		if (*q == '@')
			at = q;
	p = out;
	memcpy(p, url, (size_t)(auth - url));
	p += auth - url;
	if (at)
		auth = at + 1;
	q = strchr(end, '?');
	if (q && query_has_secret(q + 1)) {
		const char *frag = strchr(q, '#');

		memcpy(p, auth, (size_t)(q - auth));
		p += q - auth;
		if (frag) {
			strcpy(p, frag);
			p += strlen(frag);
		}
		*p = '\0';
	} else {
		strcpy(p, auth);
	}
	return out;
}
