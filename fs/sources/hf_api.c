#include "hf_api.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int hf_spec_parse(const char *spec, struct hf_spec *ret)
{
	static const char *const kinds[] = { "models", "datasets", "spaces" };
	struct hf_spec sp = { 0 };
	const char *p = spec + 5, *name, *end, *at;
	int err = -ENOMEM;

	if (strncmp(spec, "hf://", 5))
		return -EINVAL;
	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(kinds[i]);

		if (!strncmp(p, kinds[i], n) && p[n] == '/') {
			sp.kind = strdup(kinds[i]);
			p += n + 1;
			break;
		}
	}
	if (!sp.kind && !(sp.kind = strdup("models")))
		goto fail;
	err = -EINVAL;
	name = strchr(p, '/');
	if (!name || name == p)
		goto fail;
	name++;
	end = name + strcspn(name, "@/");
	if (end == name)
		goto fail;
	err = -ENOMEM;
	sp.repo = strndup(p, (size_t)(end - p));
	if (!sp.repo)
		goto fail;
	err = -EINVAL;
	for (const char *c = sp.repo; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr("-_./", *c))
			goto fail;
	if (strstr(sp.repo, "..") || *sp.repo == '.' || *name == '.')
		goto fail;
	at = end;
	if (*at == '@') {
		const char *rev_end = at + 1 + strcspn(at + 1, "/");
		char *rev = curl_easy_unescape(NULL, at + 1,
					       (int)(rev_end - at - 1), NULL);

		err = -ENOMEM;
		if (!rev)
			goto fail;
		sp.rev = strdup(rev);
		curl_free(rev);
		end = rev_end;
	} else {
		sp.rev = strdup("main");
	}
	err = -ENOMEM;
	if (!sp.rev)
		goto fail;
	err = -EINVAL;
	if (!*sp.rev || strpbrk(sp.rev, "\r\n"))
		goto fail;
	while (*end == '/')
		end++;
	err = -ENOMEM;
	sp.subdir = strdup(end);
	if (!sp.subdir)
		goto fail;
	for (size_t n = strlen(sp.subdir); n && sp.subdir[n - 1] == '/';)
		sp.subdir[--n] = '\0';
	*ret = sp;
	return 0;
fail:
	hf_spec_done(&sp);
	return err;
}

void hf_spec_done(struct hf_spec *sp)
{
	if (!sp)
		return;
	free(sp->kind);
	free(sp->repo);
	free(sp->rev);
	free(sp->subdir);
	sp->kind = sp->repo = sp->rev = sp->subdir = NULL;
}

char *hf_link_next(const char *v)
{
	while (v && *v) {
		const char *lt = strchr(v, '<'), *gt, *end;

		if (!lt || !(gt = strchr(lt, '>')))
			return NULL;
		end = strchr(gt, ',');
		if (!end)
			end = gt + strlen(gt);
		if (memmem(gt, (size_t)(end - gt), "rel=\"next\"", 10) ||
		    memmem(gt, (size_t)(end - gt), "rel=next", 8))
			return strndup(lt + 1, (size_t)(gt - lt - 1));
		v = *end ? end + 1 : end;
	}
	return NULL;
}

char *hf_etag_normalize(const char *e)
{
	size_t n;

	if (!e)
		return NULL;
	if (!strncmp(e, "W/", 2))
		e += 2;
	n = strlen(e);
	if (n >= 2 && e[0] == '"' && e[n - 1] == '"')
		return strndup(e + 1, n - 2);
	return strdup(e);
}

time_t hf_url_expiry(const char *url)
{
	const char *q = strchr(url, '?');
	long long expires = 0, amz_expires = -1;
	time_t amz_date = 0;

	while (q && *q) {
		q++;
		if (!strncmp(q, "Expires=", 8)) {
			expires = strtoll(q + 8, NULL, 10);
		} else if (!strncmp(q, "X-Amz-Expires=", 14)) {
			amz_expires = strtoll(q + 14, NULL, 10);
		} else if (!strncmp(q, "X-Amz-Date=", 11)) {
			struct tm tm = { 0 };

			if (sscanf(q + 11, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year,
				   &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
				   &tm.tm_min, &tm.tm_sec) == 6) {
				tm.tm_year -= 1900;
				tm.tm_mon -= 1;
				amz_date = timegm(&tm);
			}
		}
		q = strchr(q, '&');
	}
	if (expires > 0)
		return (time_t)expires;
	if (amz_date > 0 && amz_expires >= 0)
		return amz_date + (time_t)amz_expires;
	return 0;
}

bool hf_same_origin(const char *endpoint, const char *url)
{
	size_t n = strlen(endpoint);
	const char *rest;

	if (n < 8)
		return false;
	/* The endpoint may carry a path (a mirror under /hf): compare only
	 * scheme://authority, which ends at the first '/' after "://". */
	rest = endpoint + 8 + strcspn(endpoint + 8, "/");
	n = (size_t)(rest - endpoint);
	return !strncasecmp(url, endpoint, n) &&
	       (url[n] == '/' || url[n] == '\0' || url[n] == '?');
}
