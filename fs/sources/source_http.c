/* http(s)://host/dir/: a web server's directory as the source, listed
 * through its JSON directory index (nginx `autoindex_format json`),
 * recursively. A URL naming one file mounts as a directory holding it. */
#include "source.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_run.h"
#include "json_stream.h"
#include "msg.h"
#include "opts.h"
#include "s3_list.h"
#include "stats.h"
#include "tree.h"

#define MAX_LISTING (64u << 20)

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

/* One listing in progress: its bounds, and the files found, which are
 * HEADed before they go into the tree (a file whose HEAD fails is
 * skipped). */
struct pending {
	char *key;
	uint64_t size;
	struct timespec mtime;
	struct http_response r; /* its HEAD */
	char *url;
	CURL *h; /* while its HEAD runs */
};

struct listing {
	struct source_http *sh;
	struct tree *t;
	struct list_budget budget;
	struct pending *files;
	size_t nfiles;
	size_t cap;
	char **ret_msg;
	char **warnings;
	bool one; /* one level (list_dir()): no recursion, errors fail */
};

static int pending_push(struct listing *l, char *key, uint64_t size,
			struct timespec mtime)
{
	if (l->nfiles == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct pending *f = reallocarray(l->files, cap, sizeof(*f));

		if (!f)
			return -ENOMEM;
		l->files = f;
		l->cap = cap;
	}
	l->files[l->nfiles++] =
		(struct pending){ .key = key, .size = size, .mtime = mtime };
	return 0;
}

/* Whether @r is an HTTP error (not a transport failure) of a listing or
 * HEAD below the root: one bad directory or file is skipped, not the
 * mount failed. */
static bool skippable(int err, const struct http_response *r)
{
	return !err && r->status >= 400 && r->status < 600;
}

/* A file must be HEADed at listing only when the index does not give its
 * size, or when it may be a seekable .zst (its seek table is read at
 * listing, pinned to its ETag). Any other file's validator is taken from
 * its first block (fetch.c), so a listing is one request. */
static bool needs_head(const char *name, size_t len, bool has_size)
{
	return !has_size || (len > 4 && !memcmp(name + len - 4, ".zst", 4));
}

/* Days from 1970-01-01 to @y-@m-@d (proleptic Gregorian; H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, size_t n, unsigned *ret)
{
	unsigned v = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*ret = v;
	return true;
}

/* An index entry's mtime: nginx writes RFC 1123 dates ("Mon, 07 Dec 2026
 * 00:00:00 GMT"), read here without curl_getdate()'s sscanf and locale
 * work (a fifth of a big listing's CPU); anything else goes to it.
 * @return seconds since the epoch, 0 when unreadable. */
static time_t index_mtime(const char *s, size_t len)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	unsigned d, y, hh, mm, ss, m;
	const char *mon;
	time_t t;

	if (len == 29 && s[3] == ',' && s[4] == ' ' && s[7] == ' ' &&
	    s[11] == ' ' && s[16] == ' ' && s[19] == ':' && s[22] == ':' &&
	    !strcmp(s + 25, " GMT") && digits(s + 5, 2, &d) &&
	    digits(s + 12, 4, &y) && digits(s + 17, 2, &hh) &&
	    digits(s + 20, 2, &mm) && digits(s + 23, 2, &ss) && d >= 1 &&
	    d <= 31 && hh < 24 && mm < 60 && ss <= 60 &&
	    (mon = strstr(months, (char[4]){ s[8], s[9], s[10], 0 })) &&
	    (mon - months) % 3 == 0) {
		m = (unsigned)(mon - months) / 3 + 1;
		return (time_t)(days_from_civil(y, m, d) * 86400 + hh * 3600 +
				mm * 60 + ss);
	}
	t = curl_getdate(s, NULL);
	return t < 0 ? 0 : t;
}

/* One directory index being parsed: where its entries go. */
struct index_parse {
	struct listing *l;
	struct node *dir; /* in l->t */
	const char *url;
	int depth;
	struct node **subdirs;
	size_t nsub;
	size_t too_deep;	/* subdirectories skipped */
	struct json_stream *js; /* the response's parse, as it arrives */
	int parse_err;		/* the parse's error, which ended it */
	/* What the listing held before this index (index_attempt()). */
	size_t tree_mark, files_mark, warnings_mark;
	bool had_warnings;
};

/* One entry of the index, from either parse: strings not NUL-terminated
 * (@name and @type NULL when absent or not strings). */
struct index_item {
	const char *name;
	size_t name_len;
	const char *type;
	size_t type_len;
	struct timespec mtime;
	int64_t size;
	bool has_size; /* an integer */
};

static bool is(const char *s, size_t len, const char *word)
{
	return s && len == strlen(word) && !memcmp(s, word, len);
}

/* One entry of the index, into the tree (or l->files, to be HEADed). */
static int index_add(struct index_parse *ip, const struct index_item *it)
{
	struct listing *l = ip->l;
	const char *name = it->name;
	size_t name_len = it->name_len;
	struct node *sub;
	char *key = NULL;
	int err;

	if (!name || (!is(it->type, it->type_len, "file") &&
		      !is(it->type, it->type_len, "directory")))
		return 0;
	if (!tree_name_ok(name, name_len) || it->size < 0) {
		/* The name itself may hold control characters: not for a
		 * terminal. */
		return msg_append(l->warnings,
				  "%s: skipping an entry with an unusable "
				  "name or size",
				  ip->url);
	}
	if (is(it->type, it->type_len, "file")) {
		if (needs_head(name, name_len, it->has_size)) {
			if (asprintf(&key, "%s%s%.*s", ip->dir->key,
				     *ip->dir->key ? "/" : "", (int)name_len,
				     name) < 0)
				return -ENOMEM;
			err = pending_push(l, key, (uint64_t)it->size,
					   it->mtime);
			if (err)
				free(key);
			return err;
		}
		err = tree_add_child(l->t, ip->dir, name, name_len, false,
				     (uint64_t)it->size, it->mtime, NULL, NULL);
		if (err == -EINVAL || err == -EEXIST)
			err = msg_append(l->warnings,
					 "%s: skipping a duplicate entry",
					 ip->url);
		return err;
	}
	if (ip->depth >= SOURCE_MAX_DEPTH) {
		ip->too_deep++;
		return msg_append(l->warnings,
				  "%s: skipping a directory nested too deep",
				  ip->url);
	}
	/* A directory named twice is listed once. */
	err = tree_add_child(l->t, ip->dir, name, name_len, true, 0, it->mtime,
			     NULL, &sub);
	if (!err && !l->one) {
		struct node **more = reallocarray(ip->subdirs, ip->nsub + 1,
						  sizeof(*ip->subdirs));

		if (!more)
			return -ENOMEM;
		ip->subdirs = more;
		ip->subdirs[ip->nsub++] = sub;
	}
	if (err == -EINVAL || err == -EEXIST)
		err = msg_append(l->warnings, "%s: skipping a duplicate entry",
				 ip->url);
	return err;
}

/* An entry json-c parsed (json_stream.h). */
static int index_entry(void *arg, json_object *e)
{
	struct index_item it = { 0 };
	json_object *v;

	if (!json_object_is_type(e, json_type_object))
		return 0;
	if (json_object_object_get_ex(e, "name", &v) &&
	    json_object_is_type(v, json_type_string)) {
		it.name = json_object_get_string(v);
		it.name_len = (size_t)json_object_get_string_len(v);
		/* A NUL inside the JSON string: an unusable name. */
		if (strlen(it.name) != it.name_len)
			it.name_len = 0;
	}
	if (json_object_object_get_ex(e, "type", &v) &&
	    (it.type = json_object_get_string(v)))
		it.type_len = strlen(it.type);
	if (json_object_object_get_ex(e, "mtime", &v) &&
	    json_object_is_type(v, json_type_string))
		it.mtime.tv_sec =
			index_mtime(json_object_get_string(v),
				    (size_t)json_object_get_string_len(v));
	if (json_object_object_get_ex(e, "size", &v)) {
		it.size = json_object_get_int64(v);
		it.has_size = json_object_is_type(v, json_type_int);
	}
	return index_add(arg, &it);
}

/* An entry of plain strings and integers, scanned without json-c (nginx
 * writes every entry so): read as index_entry() reads it. */
static int index_entry_flat(void *arg, const struct json_member *m, size_t n)
{
	struct index_item it = { 0 };
	char buf[64];

	for (size_t i = 0; i < n; i++) {
		const char *k = m[i].key;
		size_t klen = m[i].key_len;

		/* A key given twice: the last one counts, as in json-c. */
		if (is(k, klen, "name")) {
			it.name = m[i].str;
			it.name_len = m[i].len;
		} else if (is(k, klen, "type")) {
			it.type = m[i].str; /* an integer: not a type */
			it.type_len = m[i].len;
		} else if (is(k, klen, "mtime")) {
			it.mtime.tv_sec = 0;
			if (m[i].str && m[i].len < sizeof(buf)) {
				memcpy(buf, m[i].str, m[i].len);
				buf[m[i].len] = '\0';
				it.mtime.tv_sec = index_mtime(buf, m[i].len);
			} else if (m[i].str) {
				char *c = strndup(m[i].str, m[i].len);

				if (!c)
					return -ENOMEM;
				it.mtime.tv_sec = index_mtime(c, m[i].len);
				free(c);
			}
		} else if (is(k, klen, "size")) {
			if (m[i].str) /* json-c's reading of a number in it */
				return 1;
			it.size = m[i].num;
			it.has_size = true;
		}
	}
	return index_add(arg, &it);
}

/* Before each attempt at @ip's index: a parse from the start; after one
 * that was cut off, what it added is taken back first. */
static int index_attempt(struct http_whole *w, CURL *h,
			 struct curl_slist **hdrs)
{
	struct index_parse *ip = w->arg;
	struct listing *l = ip->l;
	int err;

	if (ip->js) {
		tree_truncate(l->t, ip->tree_mark);
		while (l->nfiles > ip->files_mark)
			free(l->files[--l->nfiles].key);
		if (!ip->had_warnings) {
			free(*l->warnings);
			*l->warnings = NULL;
		} else {
			(*l->warnings)[ip->warnings_mark] = '\0';
		}
		ip->nsub = ip->too_deep = 0;
		json_stream_free(ip->js);
		ip->js = NULL;
	}
	ip->tree_mark = tree_count(l->t);
	ip->files_mark = l->nfiles;
	ip->had_warnings = *l->warnings != NULL;
	ip->warnings_mark = ip->had_warnings ? strlen(*l->warnings) : 0;
	err = json_stream_new(index_entry, ip, &ip->js);
	if (!err)
		json_stream_set_flat(ip->js, index_entry_flat);
	return err;
}

/* The index's bytes as they arrive: entries go into the tree as they are
 * read; neither the document nor a tree of it is held. */
static int index_feed(struct http_whole *w, const char *p, size_t len)
{
	struct index_parse *ip = w->arg;

	return ip->parse_err = json_stream_feed(ip->js, p, len);
}

/*
 * List directory @dir (in the tree already, listed once: the caller
 * makes sure): its files go into the tree (or to l->files, to be
 * HEADed), its subdirectories too, then each subdirectory is listed,
 * after this index was done with.
 */
static int list_dir(struct listing *l, struct node *dir, int depth)
{
	struct http_response r = { 0 };
	const char *rel = dir->key;
	char *url = url_of(l->sh, rel, true);
	struct index_parse ip = {
		.l = l, .dir = dir, .url = url, .depth = depth
	};
	struct http_whole w = { .url = url,
				.max_body = MAX_LISTING,
				.retry_flags = HTTP_RETRY_REACHABLE,
				.setup = index_attempt,
				.body = index_feed,
				.arg = &ip };
	size_t i, n = 0;
	const char *why;
	int err;

	if (!url)
		return -ENOMEM;
	err = http_run_whole(&w, l->sh->opts, &r);
	if (!err && !ip.parse_err && r.status == 200) {
		err = ip.parse_err = json_stream_end(ip.js);
		n = json_stream_count(ip.js);
	} else if (ip.parse_err) {
		err = ip.parse_err; /* it ended the transfer */
	}
	if (!ip.parse_err && (err || r.status != 200)) {
		if (*rel && l->one && !err && r.status == 404) {
			err = msg_set(l->ret_msg, -ENOENT,
				      "listing %s: HTTP 404", url);
			goto out;
		}
		if (*rel && !l->one && skippable(err, &r)) {
			err = msg_append(l->warnings,
					 "listing %s: HTTP %ld; skipping "
					 "this directory",
					 url, r.status);
			goto out;
		}
		err = response_error("listing", url, err, &r, l->ret_msg);
		goto out;
	}
	if (err == -EPROTO) {
		if (*rel && !l->one) {
			/* What this index added stays: a partial listing
			 * of a broken subdirectory is still its files. */
			err = msg_append(l->warnings,
					 "listing %s: not a JSON directory "
					 "index; skipping this directory",
					 url);
			goto out;
		}
		err = msg_set(l->ret_msg, -EPROTO,
			      "listing %s: not a JSON directory index (the "
			      "server must list directories as JSON, e.g. "
			      "nginx 'autoindex on; autoindex_format json;')",
			      url);
		goto out;
	}
	if (err)
		goto out;
	err = list_budget_request(&l->budget, r.len, n, &why);
	http_response_done(&r);
	json_stream_free(ip.js);
	ip.js = NULL;
	if (err) {
		err = msg_set(l->ret_msg, err, "listing %s: %s", url, why);
		goto out;
	}
	for (i = 0; i < ip.nsub && !err; i++)
		err = list_dir(l, ip.subdirs[i], depth + 1);
out:
	STAT_ADD(dirs_too_deep, ip.too_deep);
	json_stream_free(ip.js);
	free(ip.subdirs);
	http_response_done(&r);
	free(url);
	return err;
}

/* The outcome of one HEAD: the file goes into the tree with its ETag and
 * exact size, or is skipped with a warning (an HTTP error below the
 * root), or fails the listing. */
static int head_done(struct listing *l, struct pending *f, int e)
{
	int err;

	if (e || f->r.status != 200) {
		if (!l->sh->single && skippable(e, &f->r))
			return msg_append(l->warnings,
					  "HEAD %s: HTTP %ld; skipping this "
					  "file",
					  f->url, f->r.status);
		return response_error("HEAD", f->url, e, &f->r, l->ret_msg);
	}
	if (f->r.content_length >= 0)
		f->size = (uint64_t)f->r.content_length;
	err = tree_add(l->t, f->key, false, f->size, f->mtime, f->r.etag, NULL);
	if (err == -EINVAL || err == -EEXIST)
		err = msg_append(l->warnings, "%s: skipping a duplicate entry",
				 f->url);
	return err;
}

/* HEAD every file, several at once, for its ETag and exact size. */
static int head_files(struct listing *l)
{
	CURLM *multi = curl_multi_init();
	size_t next = 0, i;
	unsigned active = 0, width = l->sh->opts->connections ?: 8;
	int err = multi ? 0 : -ENOMEM;

	while (!err && (next < l->nfiles || active)) {
		CURLMsg *msg;
		int running, left;

		while (next < l->nfiles && active < width) {
			struct pending *f = &l->files[next++];
			CURL *h = curl_easy_init();

			f->url = url_of(l->sh, f->key, false);
			if (!h || !f->url) {
				curl_easy_cleanup(h);
				err = -ENOMEM;
				break;
			}
			http_setup_common(h, l->sh->opts);
			curl_easy_setopt(h, CURLOPT_URL, f->url);
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
			curl_easy_setopt(h, CURLOPT_PRIVATE, f);
			http_perform_setup(h, 0, &f->r);
			if (curl_multi_add_handle(multi, h) != CURLM_OK) {
				curl_easy_cleanup(h);
				err = -ENOMEM;
				break;
			}
			f->h = h;
			active++;
		}
		if (err)
			break;
		if (curl_multi_perform(multi, &running) != CURLM_OK) {
			err = -EIO;
			break;
		}
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct pending *f;
			CURL *h = msg->easy_handle;
			int e;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&f);
			e = http_perform_finish(h, msg->data.result, &f->r);
			curl_multi_remove_handle(multi, h);
			curl_easy_cleanup(h);
			f->h = NULL;
			active--;
			if (e || f->r.status != 200) {
				/* Again, one at a time, with retries. */
				http_response_done(&f->r);
				e = http_head(f->url, l->sh->opts, &f->r);
			}
			if (!err)
				err = head_done(l, f, e);
			http_response_done(&f->r);
			free(f->url);
			f->url = NULL;
		}
		if (active)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	if (multi) {
		/* Only on errors are handles still attached. */
		for (i = 0; i < next; i++) {
			if (l->files[i].h) {
				curl_multi_remove_handle(multi, l->files[i].h);
				curl_easy_cleanup(l->files[i].h);
			}
			http_response_done(&l->files[i].r);
			free(l->files[i].url);
			l->files[i].url = NULL;
		}
		curl_multi_cleanup(multi);
	}
	return err;
}

/* Everything (@dir NULL), or one directory's index and its files' HEADs. */
static int list(struct source *s, const char *dir, struct tree *t,
		char **ret_msg, char **ret_warnings)
{
	struct source_http *sh = (struct source_http *)s;
	struct listing l = { .sh = sh,
			     .t = t,
			     .ret_msg = ret_msg,
			     .warnings = ret_warnings,
			     .one = dir != NULL };
	struct timespec now = { 0 };
	char *key = NULL;
	size_t i;
	int err;

	list_budget_init(&l.budget, sh->opts->list_time_max_s,
			 sh->opts->list_entries_max, sh->opts->list_lazy);
	if (sh->single) {
		key = strdup(sh->single);
		err = key ? pending_push(&l, key, 0, now) : -ENOMEM;
		if (err)
			free(key);
	} else if (dir && *dir) {
		struct node *n;

		/* Its path in the tree first, so an empty one is there. */
		err = tree_add(t, dir, true, 0, now, NULL, &n);
		if (!err)
			err = list_dir(&l, n, source_key_depth(dir));
	} else {
		err = list_dir(&l, tree_root(t), 0);
	}
	if (!err)
		err = head_files(&l);
	for (i = 0; i < l.nfiles; i++)
		free(l.files[i].key);
	free(l.files);
	return err;
}

static int http_list(struct source *s, struct tree *t, char **ret_msg,
		     char **ret_warnings)
{
	return list(s, NULL, t, ret_msg, ret_warnings);
}

static int http_list_dir(struct source *s, const char *key, struct tree *t,
			 char **ret_msg, char **ret_warnings)
{
	if (((struct source_http *)s)->single)
		return list(s, NULL, t, ret_msg, ret_warnings); /* one file */
	return list(s, key, t, ret_msg, ret_warnings);
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
	.list_dir = http_list_dir,
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
