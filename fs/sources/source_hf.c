/* hf://[datasets/|spaces/]ORG/NAME[@REVISION][/SUBDIR]: a Hugging Face
 * Hub repository as the source.
 *
 * At mount REVISION (a branch, tag or commit; default main) is resolved
 * to a commit sha with the revision API, and everything is listed and
 * read at that commit. Listing: the tree API
 * (/api/KIND/REPO/tree/SHA[/PATH]), paginated with Link: rel="next",
 * one level per directory (lazy), or whole (recursive) when list_ttl is
 * set: then each relist resolves REVISION again and lists the new
 * commit whole, which the tree merges whole. A file's validator is its
 * content's identity: the LFS sha256 (lfs.oid), or the git blob id of a
 * file kept in git.
 *
 * Reads: ranged GETs of the file's resolve URL, whose redirect target (a
 * signed CDN URL) is kept per file and used for later blocks until it
 * expires (its Expires= or X-Amz-Date + X-Amz-Expires) or a GET of it
 * fails (get_failed()), then resolved again. Each resolve checks that
 * the file is still the one listed (X-Linked-Etag, else ETag): a file
 * whose content changed is -ESTALE. The token (HF_TOKEN, HF_TOKEN_PATH,
 * $HF_HOME/token) is sent only to the Hub's own origin (HF_ENDPOINT),
 * never to a redirect target elsewhere.
 *
 * Thread-safety: the fields below the lock change after mount (the
 * commit on relists, the table of resolved URLs) and are protected by
 * it; everything else is set by source_hf_new() and read-only. */
#include "source.h"

#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hf_api.h"
#include "http.h"
#include "log.h"
#include "msg.h"
#include "opts.h"
#include "s3_list.h"
#include "tree.h"

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define MAX_PAGE (64u << 20) /* bytes of one tree page */
#define MAX_SMALL (1u << 20) /* bytes of an API answer */
#define MAX_LINKS 4096	     /* resolved URLs kept */
#define MAX_HOPS 5	     /* same-origin redirects followed */
#define EXPIRY_MARGIN_S 60   /* a URL this close to expiry is renewed */
#define RETRY_AFTER_MAX_MS 60000u

/* One file's resolved read URL. */
struct hf_link {
	char *key;
	char *oid; /* the validator it was resolved for (normalized) */
	char *url;
	bool auth;	/* the Hub itself: send the token */
	bool busy;	/* being resolved (url NULL): others wait on cond */
	time_t expires; /* 0: unknown, used until it fails */
};

struct source_hf {
	struct source s;
	const struct options *opts;
	char *endpoint;	       /* "https://huggingface.co", no trailing '/' */
	char *kind;	       /* "models", "datasets", "spaces" */
	char *repo;	       /* "org/name" */
	char *rev;	       /* as given */
	char *subdir;	       /* "" or "a/b" */
	char *token;	       /* or NULL; never shown */
	struct timespec mtime; /* the commit's date, for every entry */

	pthread_mutex_t lock;
	pthread_cond_t cond; /* a link was resolved */
	char sha[80];	     /* the commit read; protected by lock */
	/* the one before it (list_ttl followed the branch): a file of the
	 * old listing, until the tree merges the new one, is read there;
	 * protected by lock */
	char prev_sha[80];
	bool listed;	       /* list() ran once; protected by lock */
	struct hf_link *links; /* protected by lock */
	size_t nlinks;
};

/* Headers of a Hub answer the sources' common http_response lacks. */
struct hub_answer {
	struct http_response r;
	char *location;	   /* absolute redirect target, or NULL */
	char *link_next;   /* Link: <...>; rel="next", or NULL */
	char *error_code;  /* X-Error-Code, or NULL */
	char *error_msg;   /* X-Error-Message, or NULL */
	char *linked_etag; /* X-Linked-Etag, or NULL */
};

static void answer_done(struct hub_answer *a)
{
	http_response_done(&a->r);
	free(a->location);
	free(a->link_next);
	free(a->error_code);
	free(a->error_msg);
	free(a->linked_etag);
	memset(a, 0, sizeof(*a));
}

static char *header_dup(CURL *h, const char *name)
{
	struct curl_header *hd;

	if (curl_easy_header(h, name, 0, CURLH_HEADER, -1, &hd) != CURLHE_OK)
		return NULL;
	return strdup(hd->value);
}

static int add_auth(const struct source_hf *s, struct curl_slist **hdrs)
{
	struct curl_slist *l;
	char *line;

	if (!s->token)
		return 0;
	if (asprintf(&line, "Authorization: Bearer %s", s->token) < 0)
		return -ENOMEM;
	l = curl_slist_append(*hdrs, line);
	explicit_bzero(line, strlen(line));
	free(line);
	if (!l)
		return -ENOMEM;
	*hdrs = l;
	return 0;
}

/*
 * One request to the Hub: GET (or HEAD) @url, redirects not followed,
 * the token attached only when @url is on the Hub's origin; retried with
 * the common policy (http_backoff_ms(), at least Retry-After).
 * @return 0 and *ret (any status), or a negative errno.
 */
static int hub_request(const struct source_hf *s, const char *url, bool head,
		       size_t max_body, struct hub_answer *ret)
{
	unsigned attempt = 0, retries = s->opts ? s->opts->retries : 3;
	struct curl_slist *hdrs = NULL;
	int err;

	memset(ret, 0, sizeof(*ret));
	if (hf_same_origin(s->endpoint, url) && (err = add_auth(s, &hdrs)))
		return err;
	for (;;) {
		CURL *h = curl_easy_init();
		unsigned wait;
		char *v;

		if (!h) {
			err = -ENOMEM;
			break;
		}
		http_setup_common(h, s->opts);
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		if (head)
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		err = http_perform(h, max_body, &ret->r);
		if (!err) {
			if (curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &v) ==
				    CURLE_OK &&
			    v)
				ret->location = strdup(v);
			v = header_dup(h, "Link");
			ret->link_next = v ? hf_link_next(v) : NULL;
			free(v);
			ret->error_code = header_dup(h, "X-Error-Code");
			ret->error_msg = header_dup(h, "X-Error-Message");
			ret->linked_etag = header_dup(h, "X-Linked-Etag");
		}
		wait = http_retry_after_ms(h, RETRY_AFTER_MAX_MS);
		curl_easy_cleanup(h);
		if (attempt >= retries || http_cancelled() ||
		    !(err ? err == -ECONNRESET || err == -ETIMEDOUT
			  : http_status_retryable(ret->r.status)))
			break;
		answer_done(ret);
		if (wait < http_backoff_ms(attempt))
			wait = http_backoff_ms(attempt);
		attempt++;
		usleep(wait * 1000u);
	}
	curl_slist_free_all(hdrs);
	return err;
}

/* hub_request() GET, following redirects on the Hub's own origin (a
 * renamed repository answers 307 to its new name). */
static int hub_api_get(const struct source_hf *s, const char *url,
		       size_t max_body, struct hub_answer *ret)
{
	char *next = NULL;
	int err;

	for (int hop = 0;; hop++) {
		err = hub_request(s, next ? next : url, false, max_body, ret);
		free(next);
		next = NULL;
		if (err || ret->r.status < 300 || ret->r.status >= 400 ||
		    !ret->location ||
		    !hf_same_origin(s->endpoint, ret->location) ||
		    hop == MAX_HOPS)
			return err;
		next = ret->location;
		ret->location = NULL;
		answer_done(ret);
	}
}

/* A server's text, safe for one line on a terminal, at most 200 bytes. */
static char *one_line(const char *v)
{
	char *p = strndup(v ? v : "", 200);

	for (char *q = p; q && *q; q++)
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			*q = ' ';
	return p;
}

/* The message for a failed API call at mount (or relist). */
static int api_error(const struct source_hf *s, const char *what, int err,
		     const struct hub_answer *a, char **ret_msg)
{
	const char *code = a->error_code ? a->error_code : "";
	const char *why;
	char *server;
	long st = a->r.status;

	if (err)
		return msg_set(ret_msg, err, "%s: %s: cannot reach %s: %s",
			       s->s.display, what, s->endpoint,
			       a->r.curl_error[0] ? a->r.curl_error
						  : strerror(-err));
	err = http_status_errno(st) ?: -EPROTO;
	if (!strcmp(code, "GatedRepo"))
		why = "gated repository: accept its conditions on the Hub "
		      "with the account of the token (HF_TOKEN)";
	else if (!strcmp(code, "RevisionNotFound"))
		why = "revision not found";
	else if (!strcmp(code, "EntryNotFound"))
		why = "path not found in the repository";
	else if (!strcmp(code, "RepoNotFound") || (st == 401 && !s->token))
		why = s->token ? "repository not found, or private and not "
				 "readable with this token"
			       : "repository not found, or private or gated "
				 "(no token: set HF_TOKEN)";
	else if (st == 401)
		why = "the token was refused (HF_TOKEN, HF_TOKEN_PATH or "
		      "$HF_HOME/token)";
	else if (st == 403)
		why = "access denied for this token";
	else if (st == 404)
		why = "not found";
	else
		why = "unexpected answer";
	server = one_line(a->error_msg);
	if (!server)
		return -ENOMEM;
	msg_set(ret_msg, err, "%s: %s: %s (HTTP %ld%s%s)", s->s.display, what,
		why, st, *server ? ": " : "", server);
	free(server);
	return err;
}

static const char *kind_path(const struct source_hf *s)
{
	/* Resolve URLs: models have no prefix. */
	return !strcmp(s->kind, "models") ? "" : s->kind;
}

/* The commit @rev names now, into @sha (and the commit's date). */
static int resolve_revision(struct source_hf *s, char sha[80],
			    struct timespec *ret_mtime, char **ret_msg)
{
	struct hub_answer a;
	char *rev = curl_easy_escape(NULL, s->rev, 0), *url = NULL;
	json_object *root = NULL, *v;
	const char *p;
	int err;

	if (!rev || asprintf(&url, "%s/api/%s/%s/revision/%s", s->endpoint,
			     s->kind, s->repo, rev) < 0) {
		curl_free(rev);
		return -ENOMEM;
	}
	curl_free(rev);
	err = hub_api_get(s, url, MAX_SMALL, &a);
	if (err || a.r.status != 200) {
		char *what = NULL;

		if (asprintf(&what, "revision '%s'", s->rev) < 0)
			what = NULL;
		err = api_error(s, what ? what : "revision", err, &a, ret_msg);
		free(what);
		goto out;
	}
	root = json_tokener_parse(a.r.body);
	if (!root || !json_object_object_get_ex(root, "sha", &v) ||
	    !json_object_is_type(v, json_type_string) ||
	    json_object_get_string_len(v) < 7 ||
	    json_object_get_string_len(v) > 64) {
		err = msg_set(ret_msg, -EPROTO,
			      "%s: revision '%s': no commit sha in the answer",
			      s->s.display, s->rev);
		goto out;
	}
	for (p = json_object_get_string(v); *p; p++)
		if (!isxdigit((unsigned char)*p)) {
			err = msg_set(ret_msg, -EPROTO,
				      "%s: revision '%s': malformed commit sha",
				      s->s.display, s->rev);
			goto out;
		}
	snprintf(sha, 80, "%s", json_object_get_string(v));
	if (json_object_object_get_ex(root, "lastModified", &v) &&
	    json_object_is_type(v, json_type_string) &&
	    s3_parse_time(json_object_get_string(v), ret_mtime))
		ret_mtime->tv_sec = 0;
out:
	json_object_put(root);
	answer_done(&a);
	free(url);
	return err;
}

/* "/"-joined @a and @b, either may be "". */
static char *join(const char *a, const char *b)
{
	char *p;

	if (asprintf(&p, "%s%s%s", a, *a && *b ? "/" : "", b) < 0)
		return NULL;
	return p;
}

static int add_entry(struct source_hf *s, struct tree *t, json_object *e,
		     const char *url, char **warnings)
{
	json_object *v, *lfs;
	const char *type = NULL, *path = NULL, *oid = NULL;
	size_t plen = strlen(s->subdir);
	int64_t size = 0;
	char *etag = NULL;
	int err;

	if (json_object_object_get_ex(e, "type", &v))
		type = json_object_get_string(v);
	if (json_object_object_get_ex(e, "path", &v) &&
	    json_object_is_type(v, json_type_string))
		path = json_object_get_string(v);
	if (json_object_object_get_ex(e, "oid", &v) &&
	    json_object_is_type(v, json_type_string))
		oid = json_object_get_string(v);
	if (json_object_object_get_ex(e, "size", &v))
		size = json_object_get_int64(v);
	if (json_object_object_get_ex(e, "lfs", &lfs) &&
	    json_object_is_type(lfs, json_type_object)) {
		if (json_object_object_get_ex(lfs, "oid", &v) &&
		    json_object_is_type(v, json_type_string))
			oid = json_object_get_string(v);
		if (json_object_object_get_ex(lfs, "size", &v))
			size = json_object_get_int64(v);
	}
	if (!type || !path ||
	    (strcmp(type, "file") && strcmp(type, "directory")))
		return 0;
	if (plen) {
		if (strncmp(path, s->subdir, plen) || path[plen] != '/')
			return msg_append(warnings,
					  "%s: skipping an entry outside the "
					  "listed directory",
					  url);
		path += plen + 1;
	}
	if (size < 0 || (oid && strpbrk(oid, "\"\r\n")))
		return msg_append(warnings,
				  "%s: skipping an entry with an unusable "
				  "size or oid",
				  url);
	if (oid && asprintf(&etag, "\"%s\"", oid) < 0)
		return -ENOMEM;
	err = tree_add(t, path, !strcmp(type, "directory"),
		       (uint64_t)(*type == 'f' ? size : 0), s->mtime, etag,
		       NULL);
	free(etag);
	if (err == -EINVAL || err == -EEXIST)
		err = msg_append(warnings,
				 "%s: skipping an entry with an unusable or "
				 "duplicate name",
				 url);
	return err;
}

/* The entries of directory @dir ("" the mount's root) at commit @sha,
 * one level or (@recursive) all below, every page. */
static int list_tree(struct source_hf *s, const char *sha, const char *dir,
		     bool recursive, bool one, struct tree *t, char **ret_msg,
		     char **ret_warnings)
{
	struct list_budget budget = { 0 };
	char *full = join(s->subdir, dir), *esc = NULL, *url = NULL;
	const char *why;
	int err = -ENOMEM;

	if (!full || !(esc = http_url_escape_path(full)))
		goto out;
	if (asprintf(&url, "%s/api/%s/%s/tree/%s%s%s?recursive=%s", s->endpoint,
		     s->kind, s->repo, sha, *esc ? "/" : "", esc,
		     recursive ? "true" : "false") < 0) {
		url = NULL;
		goto out;
	}
	if (*dir && (err = tree_add(t, dir, true, 0, s->mtime, NULL, NULL)))
		goto out;
	for (;;) {
		struct hub_answer a;
		json_object *root;
		size_t i, n;

		err = hub_api_get(s, url, MAX_PAGE, &a);
		if (!err && a.r.status == 404 && one && *dir) {
			answer_done(&a);
			err = -ENOENT;
			msg_set(ret_msg, err, "%s: listing %s: HTTP 404",
				s->s.display, dir);
			break;
		}
		if (err || a.r.status != 200) {
			err = api_error(s, "listing", err, &a, ret_msg);
			answer_done(&a);
			break;
		}
		root = json_tokener_parse(a.r.body);
		if (!root || !json_object_is_type(root, json_type_array)) {
			json_object_put(root);
			answer_done(&a);
			err = msg_set(ret_msg, -EPROTO,
				      "%s: listing: not a tree API answer",
				      s->s.display);
			break;
		}
		n = json_object_array_length(root);
		err = list_budget_request(&budget, a.r.len, n, &why);
		for (i = 0; i < n && !err; i++)
			err = add_entry(s, t,
					json_object_array_get_idx(root, i), url,
					ret_warnings);
		json_object_put(root);
		if (!err && a.link_next) {
			/* The next page: on the Hub only (it gets the token). */
			if (!hf_same_origin(s->endpoint, a.link_next))
				err = msg_set(ret_msg, -EPROTO,
					      "%s: listing: a next page on "
					      "another server",
					      s->s.display);
			else
				err = list_budget_token(&budget, a.link_next,
							&why);
		} else if (err == -E2BIG) {
			msg_set(ret_msg, err, "%s: listing: %s", s->s.display,
				why);
		}
		if (err == -E2BIG || err == -ELOOP) {
			if (!*ret_msg)
				msg_set(ret_msg, -EPROTO, "%s: listing: %s",
					s->s.display, why);
			err = -EPROTO;
		}
		free(url);
		url = NULL;
		if (!err && a.link_next) {
			url = a.link_next;
			a.link_next = NULL;
		}
		answer_done(&a);
		if (err || !url)
			break;
	}
out:
	free(full);
	free(esc);
	free(url);
	return err;
}

static int hf_list(struct source *src, struct tree *t, char **ret_msg,
		   char **ret_warnings)
{
	struct source_hf *s = (struct source_hf *)src;
	char sha[80];
	bool again;
	int err;

	pthread_mutex_lock(&s->lock);
	again = s->listed;
	s->listed = true;
	snprintf(sha, sizeof(sha), "%s", s->sha);
	pthread_mutex_unlock(&s->lock);
	/* A relist follows the branch: the new commit, listed whole. */
	if (again) {
		struct timespec mtime = s->mtime;

		err = resolve_revision(s, sha, &mtime, ret_msg);
		if (err)
			return err;
		pthread_mutex_lock(&s->lock);
		if (strcmp(sha, s->sha)) {
			log_info("%s: revision '%s' moved to commit %s",
				 s->s.display, s->rev, sha);
			memcpy(s->prev_sha, s->sha, sizeof(s->sha));
		}
		memcpy(s->sha, sha, sizeof(sha));
		pthread_mutex_unlock(&s->lock);
	}
	return list_tree(s, sha, "", true, false, t, ret_msg, ret_warnings);
}

static int hf_list_dir(struct source *src, const char *key, struct tree *t,
		       char **ret_msg, char **ret_warnings)
{
	struct source_hf *s = (struct source_hf *)src;
	char sha[80];

	pthread_mutex_lock(&s->lock);
	snprintf(sha, sizeof(sha), "%s", s->sha);
	pthread_mutex_unlock(&s->lock);
	return list_tree(s, sha, key, false, true, t, ret_msg, ret_warnings);
}

/*
 * Resolve @key (pinned to validator @oid, normalized; NULL: none) at
 * commit @sha: HEAD its resolve URL on the Hub, following redirects
 * on the Hub, up to the first target elsewhere (the CDN) or a 2xx.
 * @return 0 and a new link, -ESTALE when the file is not @oid any more,
 * or the classified errno of the Hub's answer.
 */
static int resolve_at(struct source_hf *s, const char *sha, const char *key,
		      const char *oid, struct hf_link *ret)
{
	char *full = join(s->subdir, key), *esc = NULL, *url = NULL;
	int err = -ENOMEM, hop;

	if (!full || !(esc = http_url_escape_path(full)))
		goto out;
	if (asprintf(&url, "%s/%s%s%s/resolve/%s/%s", s->endpoint, kind_path(s),
		     *kind_path(s) ? "/" : "", s->repo, sha, esc) < 0) {
		url = NULL;
		goto out;
	}
	for (hop = 0;; hop++) {
		struct hub_answer a;
		const char *linked;
		char *got;

		err = hub_request(s, url, true, 0, &a);
		if (err) {
			answer_done(&a);
			break;
		}
		/* The file's identity, as the Hub says it now. */
		linked = a.linked_etag ? a.linked_etag : a.r.etag;
		got = hf_etag_normalize(linked);
		if (oid && got && strcmp(oid, got)) {
			free(got);
			answer_done(&a);
			err = -ESTALE;
			break;
		}
		free(got);
		if (a.r.status >= 200 && a.r.status < 300) {
			*ret = (struct hf_link){ .url = url, .auth = true };
			url = NULL;
			answer_done(&a);
			break;
		}
		if (a.r.status < 300 || a.r.status >= 400 || !a.location ||
		    hop == MAX_HOPS) {
			err = http_status_errno(a.r.status) ?: -EPROTO;
			answer_done(&a);
			break;
		}
		free(url);
		url = a.location;
		a.location = NULL;
		answer_done(&a);
		if (!hf_same_origin(s->endpoint, url)) {
			/* The CDN: never the token. */
			*ret = (struct hf_link){ .url = url,
						 .expires =
							 hf_url_expiry(url) };
			url = NULL;
			break;
		}
	}
out:
	free(full);
	free(esc);
	free(url);
	return err;
}

/* resolve_at() the commit read now; a file that is not @oid there any
 * more, or gone (list_ttl moved to a new commit, the tree has not merged
 * it yet), at the commit before. */
static int resolve(struct source_hf *s, const char *key, const char *oid,
		   struct hf_link *ret)
{
	char sha[80], prev[80];
	int err;

	pthread_mutex_lock(&s->lock);
	snprintf(sha, sizeof(sha), "%s", s->sha);
	snprintf(prev, sizeof(prev), "%s", s->prev_sha);
	pthread_mutex_unlock(&s->lock);
	err = resolve_at(s, sha, key, oid, ret);
	if ((err == -ESTALE || err == -ENOENT) && *prev && strcmp(prev, sha))
		err = resolve_at(s, prev, key, oid, ret);
	return err;
}

static void link_done(struct hf_link *l)
{
	free(l->key);
	free(l->oid);
	free(l->url);
}

/* With s->lock held: the link of @key, or NULL. */
static struct hf_link *link_find(struct source_hf *s, const char *key)
{
	for (size_t i = 0; i < s->nlinks; i++)
		if (!strcmp(s->links[i].key, key))
			return &s->links[i];
	return NULL;
}

/* With s->lock held: forget @l. */
static void link_drop(struct source_hf *s, struct hf_link *l)
{
	link_done(l);
	*l = s->links[--s->nlinks];
}

/* With s->lock held: keep @l (taken over) as @key's link. */
static void link_keep(struct source_hf *s, struct hf_link *l)
{
	struct hf_link *old = link_find(s, l->key);

	if (old) {
		link_done(old);
		*old = *l;
		return;
	}
	/* Full: forget one not being resolved (few are, one per thread). */
	for (size_t i = 0; s->nlinks == MAX_LINKS && i < s->nlinks; i++)
		if (!s->links[i].busy)
			link_drop(s, &s->links[i]);
	s->links[s->nlinks++] = *l;
}

/*
 * The URL to read @key (pinned to @oid) from, and whether it is the
 * Hub's: the link kept, or a new one resolved now. Single flight: while
 * one thread resolves a file, others wanting it wait for its answer.
 */
static int link_get(struct source_hf *s, const char *key, const char *oid,
		    char **ret_url, bool *ret_auth)
{
	struct hf_link *l, fresh = { 0 };
	int err = 0;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		time_t now = time(NULL);

		l = link_find(s, key);
		if (l && l->busy) {
			pthread_cond_wait(&s->cond, &s->lock);
			continue;
		}
		if (l && l->url && (!oid || (l->oid && !strcmp(l->oid, oid))) &&
		    (!l->expires || l->expires - EXPIRY_MARGIN_S > now)) {
			*ret_url = strdup(l->url);
			*ret_auth = l->auth;
			err = *ret_url ? 0 : -ENOMEM;
			pthread_mutex_unlock(&s->lock);
			return err;
		}
		break;
	}
	/* Ours to resolve: others wait on the busy entry. */
	if (l)
		link_drop(s, l);
	fresh.key = strdup(key);
	fresh.busy = true;
	if (!fresh.key) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	link_keep(s, &fresh);
	pthread_mutex_unlock(&s->lock);

	memset(&fresh, 0, sizeof(fresh));
	err = resolve(s, key, oid, &fresh);
	if (!err) {
		fresh.key = strdup(key);
		fresh.oid = oid ? strdup(oid) : NULL;
		*ret_url = strdup(fresh.url);
		*ret_auth = fresh.auth;
		if (!fresh.key || (oid && !fresh.oid) || !*ret_url) {
			free(*ret_url);
			err = -ENOMEM;
		}
	}
	pthread_mutex_lock(&s->lock);
	l = link_find(s, key);
	if (l && l->busy)
		link_drop(s, l);
	if (!err)
		link_keep(s, &fresh);
	else
		link_done(&fresh);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return err;
}

static int hf_prepare_get(struct source *src, CURL *h, const struct node *file,
			  const char *etag, const char *range,
			  struct curl_slist **hdrs)
{
	struct source_hf *s = (struct source_hf *)src;
	char *oid = hf_etag_normalize(etag), *url = NULL;
	bool auth = false;
	int err;

	if (etag && !oid)
		return -ENOMEM;
	err = link_get(s, file->key, oid, &url, &auth);
	free(oid);
	if (err)
		return err;
	err = curl_easy_setopt(h, CURLOPT_URL, url) == CURLE_OK ? 0 : -EINVAL;
	if (!err && auth)
		err = add_auth(s, hdrs);
	free(url);
	return err;
}

static int hf_get_failed(struct source *src, CURL *h, const struct node *file,
			 int err)
{
	struct source_hf *s = (struct source_hf *)src;
	struct hf_link *l;
	char *used = NULL;
	bool cdn = false;

	if (err == -ESHUTDOWN || err == -ENOMEM)
		return err;
	curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &used);
	pthread_mutex_lock(&s->lock);
	l = link_find(s, file->key);
	if (l && l->url && used && !strcmp(l->url, used)) {
		cdn = !l->auth;
		link_drop(s, l);
	}
	pthread_mutex_unlock(&s->lock);
	/* A signed URL that expired or was revoked answers 403 (or 404,
	 * 410, a redirect, a wrong length): resolve again (the next
	 * attempt), which says whether the file itself changed. */
	if (cdn && (err == -EACCES || err == -ENOENT || err == -EPROTO ||
		    err == -ESTALE)) {
		log_debug("%s: a read URL of %s failed (%s); resolving again",
			  s->s.display, file->key, strerror(-err));
		return -EAGAIN;
	}
	return err;
}

static int hf_getxattr(struct source *src, struct node *n, const char *name,
		       char **ret)
{
	struct source_hf *s = (struct source_hf *)src;
	char *v = NULL;

	if (!strcmp(name, "user.weightfs.revision")) {
		pthread_mutex_lock(&s->lock);
		v = strdup(s->sha);
		pthread_mutex_unlock(&s->lock);
	} else if (!strcmp(name, "user.weightfs.sha256") && !n->is_dir) {
		pthread_mutex_lock(&n->lock);
		v = hf_etag_normalize(n->etag);
		pthread_mutex_unlock(&n->lock);
		/* Only LFS files have one: a git blob id is 40 digits. */
		if (v && strlen(v) != 64) {
			free(v);
			return -ENODATA;
		}
	} else {
		return -ENODATA;
	}
	if (!v)
		return -ENOMEM;
	*ret = v;
	return 0;
}

static const char *hf_xattr_names(struct source *src, struct node *n,
				  size_t *ret_len)
{
	static const char both[] = "user.weightfs.revision\0"
				   "user.weightfs.sha256";
	char *v = NULL;

	if (!n->is_dir && !hf_getxattr(src, n, "user.weightfs.sha256", &v)) {
		free(v);
		*ret_len = sizeof(both);
		return both;
	}
	*ret_len = sizeof("user.weightfs.revision");
	return both;
}

static void hf_free(struct source *src)
{
	struct source_hf *s = (struct source_hf *)src;

	if (!s)
		return;
	for (size_t i = 0; i < s->nlinks; i++)
		link_done(&s->links[i]);
	free(s->links);
	free(s->s.display);
	free(s->endpoint);
	free(s->kind);
	free(s->repo);
	free(s->rev);
	free(s->subdir);
	if (s->token)
		explicit_bzero(s->token, strlen(s->token));
	free(s->token);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	free(s);
}

/* Listed one directory at a time (the default)... */
static const struct source_ops hf_ops_lazy = {
	.list = hf_list,
	.list_dir = hf_list_dir,
	.prepare_get = hf_prepare_get,
	.get_failed = hf_get_failed,
	.getxattr = hf_getxattr,
	.xattr_names = hf_xattr_names,
	.free = hf_free,
};

/* ... or whole, so that a relist (list_ttl) applies a new commit whole. */
static const struct source_ops hf_ops_whole = {
	.list = hf_list,
	.prepare_get = hf_prepare_get,
	.get_failed = hf_get_failed,
	.getxattr = hf_getxattr,
	.xattr_names = hf_xattr_names,
	.free = hf_free,
};

/* The first line of file @path, trimmed, or NULL (absent or empty). */
static char *read_token_file(const char *path)
{
	FILE *f = fopen(path, "re");
	char buf[4096], *p = NULL;
	size_t n;

	if (!f)
		return NULL;
	if (fgets(buf, sizeof(buf), f)) {
		n = strcspn(buf, "\r\n");
		while (n && isspace((unsigned char)buf[n - 1]))
			n--;
		if (n)
			p = strndup(buf, n);
	}
	explicit_bzero(buf, sizeof(buf));
	fclose(f);
	return p;
}

/* The token as the Hub's own tools find it: $HF_TOKEN, the file
 * $HF_TOKEN_PATH, $HF_HOME/token, ~/.cache/huggingface/token. */
static int find_token(char **ret, char **ret_msg)
{
	const char *v = getenv("HF_TOKEN"), *home;
	char *path = NULL;

	*ret = NULL;
	if (v && *v) {
		*ret = strdup(v);
		return *ret ? 0 : -ENOMEM;
	}
	v = getenv("HF_TOKEN_PATH");
	if (v && *v) {
		if (access(v, R_OK))
			return msg_set(ret_msg, -errno, "HF_TOKEN_PATH %s: %s",
				       v, strerror(errno));
		*ret = read_token_file(v);
		return 0;
	}
	if ((home = getenv("HF_HOME")) && *home) {
		if (asprintf(&path, "%s/token", home) < 0)
			return -ENOMEM;
	} else if ((home = getenv("XDG_CACHE_HOME")) && *home) {
		if (asprintf(&path, "%s/huggingface/token", home) < 0)
			return -ENOMEM;
	} else if ((home = getenv("HOME")) && *home) {
		if (asprintf(&path, "%s/.cache/huggingface/token", home) < 0)
			return -ENOMEM;
	}
	if (path)
		*ret = read_token_file(path);
	free(path);
	return 0;
}

int source_hf_new(const char *spec, const struct options *opts,
		  struct source **ret, char **ret_msg)
{
	struct source_hf *s = calloc(1, sizeof(*s));
	const char *ep = getenv("HF_ENDPOINT");
	struct hf_spec sp;
	size_t n;
	int err = -ENOMEM;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->opts = opts;
	s->s.ops = opts && opts->list_ttl_s ? &hf_ops_whole : &hf_ops_lazy;
	s->s.pinned_by_source = true;
	s->s.display = source_redact(spec);
	s->links = calloc(MAX_LINKS, sizeof(*s->links));
	if (!s->s.display || !s->links)
		goto fail;
	if (strncmp(spec, "hf://", 5)) {
		err = msg_set(ret_msg, -EINVAL, "not an hf:// source: %s",
			      spec);
		goto fail;
	}
	err = hf_spec_parse(spec, &sp);
	if (err == -EINVAL)
		err = msg_set(ret_msg, err,
			      "bad source '%s': expected "
			      "hf://[datasets/]ORG/NAME[@REVISION][/DIR]",
			      spec);
	if (err)
		goto fail;
	s->kind = sp.kind;
	s->repo = sp.repo;
	s->rev = sp.rev;
	s->subdir = sp.subdir;
	s->endpoint = strdup(ep && *ep ? ep : DEFAULT_ENDPOINT);
	if (!s->endpoint)
		goto fail;
	n = strlen(s->endpoint);
	while (n && s->endpoint[n - 1] == '/')
		s->endpoint[--n] = '\0';
	if (strncasecmp(s->endpoint, "http://", 7) &&
	    strncasecmp(s->endpoint, "https://", 8)) {
		err = msg_set(ret_msg, -EINVAL,
			      "HF_ENDPOINT '%s': expected http(s)://host",
			      s->endpoint);
		goto fail;
	}
	if ((err = find_token(&s->token, ret_msg)))
		goto fail;
	if (s->token && strpbrk(s->token, "\r\n")) {
		err = msg_set(ret_msg, -EINVAL,
			      "the Hub token holds a newline");
		goto fail;
	}
	err = resolve_revision(s, s->sha, &s->mtime, ret_msg);
	if (err)
		goto fail;
	log_debug("%s: revision '%s' is commit %s", s->s.display, s->rev,
		  s->sha);
	*ret = &s->s;
	return 0;
fail:
	hf_free(&s->s);
	return err < 0 ? err : -ENOMEM;
}
