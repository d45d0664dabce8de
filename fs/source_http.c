/* http(s)://host/dir/: a web server's directory as the source, listed
 * through its JSON directory index (nginx `autoindex_format json`),
 * recursively. A URL naming one file mounts as a directory holding it. */
#include "source.h"

#include <errno.h>
#include <stdarg.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "msg.h"
#include "opts.h"
#include "tree.h"

#define MAX_DEPTH 64
#define MAX_LISTING (64u << 20)
#define MAX_NODES 1000000u

struct source_http {
	struct source s;
	const struct options *opts;
	char *base;   /* URL of the directory, ending in '/' */
	char *single; /* the one file, when the URL names a file */
};

static char *url_of(struct source_http *sh, const char *key, bool dir)
{
	char *esc = http_url_escape_path(key), *url = NULL;

	if (esc &&
	    asprintf(&url, "%s%s%s", sh->base, esc, dir && *key ? "/" : "") < 0)
		url = NULL;
	free(esc);
	return url;
}

/* Failing responses, in one place: unreachable, HTTP errors. */
static int response_error(const char *what, const char *url, int err,
			  const struct http_response *r, char **ret_msg)
{
	char *shown = source_redact(url); /* no credentials in messages */

	if (!shown)
		return -ENOMEM;
	if (err)
		err = msg_set(ret_msg, err, "%s %s: %s", what, shown,
			      r->curl_error[0] ? r->curl_error
					       : strerror(-err));
	else
		err = msg_set(ret_msg, http_status_errno(r->status) ?: -EIO,
			      "%s %s: HTTP %ld", what, shown, r->status);
	free(shown);
	return err;
}

static int list_dir(struct source_http *sh, struct tree *t, const char *rel,
		    int depth, char **ret_msg, char **warnings)
{
	struct http_response r = { 0 };
	json_object *root = NULL;
	char *url = url_of(sh, rel, true);
	size_t i, n;
	int err;

	if (!url)
		return -ENOMEM;
	err = http_get(url, NULL, sh->opts, MAX_LISTING, &r);
	if (err || r.status != 200) {
		err = response_error("listing", url, err, &r, ret_msg);
		goto out;
	}
	root = json_tokener_parse(r.body);
	if (!root || !json_object_is_type(root, json_type_array)) {
		err = msg_set(ret_msg, -EPROTO,
			      "listing %s: not a JSON directory index (the "
			      "server must list directories as JSON, e.g. "
			      "nginx 'autoindex on; autoindex_format json;')",
			      url);
		goto out;
	}
	/* Subdirectories are listed from here: hold the parsed index only. */
	http_response_done(&r);
	n = json_object_array_length(root);
	if (n > MAX_NODES - t->count) {
		err = msg_set(ret_msg, -EFBIG,
			      "listing %s: more than %u entries in all", url,
			      MAX_NODES);
		goto out;
	}
	for (i = 0; i < n && !err; i++) {
		json_object *e = json_object_array_get_idx(root, i), *v;
		const char *name = NULL, *type = NULL;
		size_t name_len = 0;
		struct timespec mtime = { 0 };
		int64_t size = 0;
		char *key = NULL;

		if (json_object_object_get_ex(e, "name", &v) &&
		    json_object_is_type(v, json_type_string)) {
			name = json_object_get_string(v);
			name_len = (size_t)json_object_get_string_len(v);
		}
		if (json_object_object_get_ex(e, "type", &v))
			type = json_object_get_string(v);
		if (json_object_object_get_ex(e, "mtime", &v) &&
		    json_object_is_type(v, json_type_string))
			mtime.tv_sec =
				curl_getdate(json_object_get_string(v), NULL);
		if (mtime.tv_sec < 0)
			mtime.tv_sec = 0;
		if (json_object_object_get_ex(e, "size", &v))
			size = json_object_get_int64(v);
		if (!name || !type ||
		    (strcmp(type, "file") && strcmp(type, "directory")))
			continue;
		/* A NUL inside the JSON string shows as a short strlen. */
		if (!tree_name_ok(name, name_len) || strlen(name) != name_len ||
		    size < 0) {
			/* The name itself may hold control characters:
			 * not for a terminal. */
			err = msg_append(warnings,
					 "%s: skipping an entry with an "
					 "unusable name or size",
					 url);
			continue;
		}
		if (asprintf(&key, "%s%s%s", rel, *rel ? "/" : "", name) < 0) {
			err = -ENOMEM;
			break;
		}
		if (!strcmp(type, "directory")) {
			if (depth >= MAX_DEPTH) {
				err = msg_append(warnings,
						 "%s: skipping a directory "
						 "nested too deep",
						 url);
			} else {
				err = tree_add(t, key, true, 0, mtime, NULL,
					       NULL);
				if (!err)
					err = list_dir(sh, t, key, depth + 1,
						       ret_msg, warnings);
			}
		} else {
			err = tree_add(t, key, false, (uint64_t)size, mtime,
				       NULL, NULL);
		}
		if (err == -EINVAL || err == -EEXIST)
			err = msg_append(warnings,
					 "%s: skipping a duplicate entry", url);
		free(key);
	}
out:
	json_object_put(root);
	http_response_done(&r);
	free(url);
	return err;
}

/* HEAD every file, several at once, for its ETag and exact size. */
static int head_files(struct source_http *sh, struct tree *t, char **ret_msg)
{
	CURLM *multi = curl_multi_init();
	size_t next = 0, i;
	unsigned active = 0, width = sh->opts->connections ?: 8;
	int err = 0;
	struct head {
		struct http_response r;
		char *url;
		struct node *n;
	} *heads = calloc(t->count, sizeof(*heads));

	if (!multi || !heads) {
		err = -ENOMEM;
		goto out;
	}
	while (!err && (next < t->count || active)) {
		CURLMsg *msg;
		int running, left;

		while (next < t->count && active < width) {
			struct node *n = t->nodes[next];
			struct head *hd = &heads[next++];
			CURL *h;

			if (n->is_dir)
				continue;
			h = curl_easy_init();
			hd->n = n;
			hd->url = url_of(sh, n->key, false);
			if (!h || !hd->url) {
				curl_easy_cleanup(h);
				err = -ENOMEM;
				break;
			}
			http_setup_common(h, sh->opts);
			curl_easy_setopt(h, CURLOPT_URL, hd->url);
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
			curl_easy_setopt(h, CURLOPT_PRIVATE, hd);
			http_perform_setup(h, 0, &hd->r);
			if (curl_multi_add_handle(multi, h) != CURLM_OK) {
				curl_easy_cleanup(h); /* else spins forever */
				err = -ENOMEM;
				break;
			}
			active++;
		}
		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct head *hd;
			CURL *h = msg->easy_handle;
			int e;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&hd);
			e = http_perform_finish(h, msg->data.result, &hd->r);
			curl_multi_remove_handle(multi, h);
			curl_easy_cleanup(h);
			active--;
			if (e || hd->r.status != 200) {
				/* Again, one at a time, with retries. */
				http_response_done(&hd->r);
				e = http_head(hd->url, sh->opts, &hd->r);
			}
			if (!err && (e || hd->r.status != 200))
				err = response_error("HEAD", hd->url, e, &hd->r,
						     ret_msg);
			if (!err && hd->r.content_length >= 0)
				hd->n->size = (uint64_t)hd->r.content_length;
			if (!err && hd->r.etag) {
				hd->n->etag = hd->r.etag;
				hd->r.etag = NULL;
			}
		}
		if (active)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
out:
	if (multi) {
		/* Only on errors are handles still attached. */
		for (i = 0; heads && i < t->count; i++) {
			http_response_done(&heads[i].r);
			free(heads[i].url);
		}
		curl_multi_cleanup(multi);
	}
	free(heads);
	return err;
}

static int http_list(struct source *s, struct tree *t, char **ret_msg,
		     char **ret_warnings)
{
	struct source_http *sh = (struct source_http *)s;
	struct timespec now = { 0 };
	int err;

	if (sh->single)
		err = tree_add(t, sh->single, false, 0, now, NULL, NULL);
	else
		err = list_dir(sh, t, "", 0, ret_msg, ret_warnings);
	if (!err)
		err = head_files(sh, t, ret_msg);
	if (!err) {
		size_t i;

		t->bytes = 0;
		for (i = 0; i < t->count; i++)
			t->bytes += t->nodes[i]->size;
	}
	return err;
}

static int http_prepare_get(struct source *s, CURL *h, const struct node *file,
			    const char *etag, const char *range,
			    struct curl_slist **hdrs)
{
	struct source_http *sh = (struct source_http *)s;
	char *url = url_of(sh, file->key, false), *hdr = NULL;

	if (!url)
		return -ENOMEM;
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK) {
		free(url);
		return -EINVAL;
	}
	free(url);
	/* If-Match compares strongly: a weak ETag (W/"...") never matches
	 * there, so it is checked against the response's ETag only. */
	if (etag && strncmp(etag, "W/", 2)) {
		struct curl_slist *l;

		if (asprintf(&hdr, "If-Match: %s", etag) < 0)
			return -ENOMEM;
		l = curl_slist_append(*hdrs, hdr);
		free(hdr);
		if (!l)
			return -ENOMEM;
		*hdrs = l;
	}
	return 0;
}

static void http_free(struct source *s)
{
	struct source_http *sh = (struct source_http *)s;

	free(sh->base);
	free(sh->single);
	free(s->display);
	free(sh);
}

static const struct source_ops http_ops = {
	.list = http_list,
	.prepare_get = http_prepare_get,
	.free = http_free,
};

/* Whether the URL without a trailing slash names a file: HEAD it; a
 * directory answers with a redirect to the URL with a slash or with a
 * JSON index. */
static int probe_single(struct source_http *sh, const char *url, char **ret_msg)
{
	struct http_response r = { 0 };
	int err = http_head(url, sh->opts, &r);

	if (err) {
		err = response_error("cannot reach", url, err, &r, ret_msg);
	} else if (r.status >= 300 && r.status < 400) {
		err = 1; /* a directory: nginx redirects to dir/ */
	} else if (r.status != 200) {
		err = response_error("source", url, 0, &r, ret_msg);
	} else if (r.content_type && strstr(r.content_type, "json")) {
		err = 1;
	}
	http_response_done(&r);
	return err;
}

int source_http_new(const char *spec, const struct options *opts,
		    struct source **ret, char **ret_msg)
{
	struct source_http *sh;
	CURLU *u = curl_url();
	char *path = NULL;
	size_t len;
	int err = -ENOMEM;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, spec, 0) ||
	    curl_url_get(u, CURLUPART_PATH, &path, 0)) {
		curl_url_cleanup(u);
		return msg_set(ret_msg, -EINVAL,
			       "bad source URL '%s': expected "
			       "http(s)://host[:port]/dir/",
			       spec);
	}
	curl_url_cleanup(u);
	sh = calloc(1, sizeof(*sh));
	if (!sh)
		goto fail;
	sh->s.ops = &http_ops;
	sh->opts = opts;
	sh->s.display = source_redact(spec);
	if (!sh->s.display)
		goto fail;
	len = strlen(spec);
	if (spec[len - 1] == '/' || !strcmp(path, "/")) {
		if (asprintf(&sh->base, "%s%s", spec,
			     spec[len - 1] == '/' ? "" : "/") < 0)
			goto fail;
	} else {
		const char *slash = strrchr(spec, '/');

		err = probe_single(sh, spec, ret_msg);
		if (err < 0)
			goto fail;
		if (err == 1) {
			if (asprintf(&sh->base, "%s/", spec) < 0)
				goto fail;
		} else {
			char *name =
				curl_easy_unescape(NULL, slash + 1, 0, NULL);

			sh->single = name ? strdup(name) : NULL;
			curl_free(name);
			sh->base = strndup(spec, (size_t)(slash - spec + 1));
			if (!sh->single || !sh->base)
				goto fail;
			if (!tree_name_ok(sh->single, strlen(sh->single))) {
				err = msg_set(ret_msg, -EINVAL,
					      "bad source URL '%s': unusable "
					      "file name",
					      spec);
				goto fail;
			}
		}
	}
	curl_free(path);
	*ret = &sh->s;
	return 0;
fail:
	curl_free(path);
	if (sh) {
		sh->s.display = sh->s.display;
		http_free(&sh->s);
	}
	return err < 0 ? err : -ENOMEM;
}
