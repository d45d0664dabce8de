/* Sources: where files come from. One implementation per scheme:
 * file:// (source_file.c), http(s):// (source_http.c), s3:// (source_s3.c).
 *
 * A source lists its objects into a tree at mount, and sets up the ranged
 * GETs the fetch engine runs (file:// is read with pread instead).
 * list() runs on the main thread before the mount goes live; prepare_get()
 * runs on the fetch thread; a source must make them safe to run
 * concurrently (list() may run again on refresh). */
#ifndef WFS_FS_SOURCE_H
#define WFS_FS_SOURCE_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct node;
struct options;
struct tree;

enum source_kind {
	SOURCE_FILE,
	SOURCE_HTTP,
	SOURCE_S3,
};

struct source;

struct source_ops {
	/*
	 * List every object into @t with tree_add(). Names that are not
	 * tree_name_ok() are skipped with a warning in *ret_warnings (a
	 * malloc'd string of lines; may stay NULL).
	 * @return 0, or a negative errno and *ret_msg, a malloc'd message
	 * for the user that names the problem (e.g. "listing
	 * http://h/d/: HTTP 404").
	 */
	int (*list)(struct source *s, struct tree *t, char **ret_msg,
		    char **ret_warnings);
	/*
	 * Set up @h (already reset, with the engine's common options) for
	 * a GET of bytes [off, off + len) of @file, pinned to @etag when
	 * not NULL (If-Match), and append request headers to *hdrs. The
	 * engine sets the Range header itself; a source that signs
	 * requests must sign it too, so it is passed in @range
	 * ("bytes=A-B").
	 * @return 0 or a negative errno.
	 */
	int (*prepare_get)(struct source *s, CURL *h, const struct node *file,
			   const char *etag, const char *range,
			   struct curl_slist **hdrs);
	void (*free)(struct source *s);
};

struct source {
	const struct source_ops *ops;
	enum source_kind kind;
	char *display;	/* SOURCE as the user gave it, without secrets */
	char *root_dir; /* file:// only: the directory, absolute */
};

/*
 * source_new() - the source named by @spec ("file:///dir",
 * "http://host/dir/", "s3://bucket/prefix"), configured from @opts.
 * @return 0 and *ret, or -EINVAL and *ret_msg for a malformed or
 * unsupported @spec.
 */
int source_new(const char *spec, const struct options *opts,
	       struct source **ret, char **ret_msg);
void source_free(struct source *s);

/* source_file_etag() - the validator file:// gives a file: its device,
 * inode, mtime and size, so a file replaced or changed is noticed. */
#define SOURCE_FILE_ETAG_MAX 96
struct stat;
void source_file_etag(const struct stat *st, char *buf, size_t len);

/* source_file_open() - open @key of the file:// source @s for reading,
 * never outside its root: symlinks are followed only while they stay
 * beneath it. @return a descriptor, or -1 with errno as open(2) (EXDEV:
 * the path leads outside the root). */
int source_file_open(const struct source *s, const char *key);

/* Constructors, called by source_new() for their scheme. */
int source_file_new(const char *spec, const struct options *opts,
		    struct source **ret, char **ret_msg);
int source_http_new(const char *spec, const struct options *opts,
		    struct source **ret, char **ret_msg);
int source_s3_new(const char *spec, const struct options *opts,
		  struct source **ret, char **ret_msg);

#endif
