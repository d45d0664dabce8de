/* Sources: where files come from. One implementation per scheme:
 * file:// (source_file.c), http(s):// (source_http.c), s3:// (source_s3.c),
 * hf:// (source_hf.c).
 *
 * A source lists its objects into a tree, and reads their blocks in one
 * of two ways, which also picks the fetch engine's transport (fetch.h):
 * read_block() (synchronous, run on the engine's worker threads), or
 * prepare_get() (an HTTP GET the engine's curl multi handle runs). A
 * source sets exactly one of them. Nothing outside the sources asks which
 * scheme a source is.
 *
 * Errors are classified here, where they happen (negative errnos):
 * -ESTALE the object changed, -ENOENT it is gone, -EPROTO the server broke
 * the protocol, -ETIMEDOUT it stalled, -EACCES/-EKEYEXPIRED credentials;
 * anything else is a transient I/O error the engine may retry.
 *
 * list() runs on the main thread (and the relisting thread), list_dir()
 * on those and on FUSE worker threads; read_block()
 * and prepare_get() run on the engine's threads; a source must make them
 * safe to run concurrently. */
#ifndef WFS_FS_SOURCE_H
#define WFS_FS_SOURCE_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Listings go this many directories deep and no deeper, eager or lazy:
 * a directory that lists itself (a server-side symlink loop) ends here.
 * Deeper directories are skipped with a warning ("skipping a directory
 * nested too deep") and counted in stats.dirs_too_deep. */
#define SOURCE_MAX_DEPTH 64

/* source_key_depth() - how deep directory @key is: "" (the root) 0, "a"
 * 1, "a/b" 2. */
static inline int source_key_depth(const char *key)
{
	int n = *key ? 1 : 0;

	for (; *key; key++)
		n += *key == '/';
	return n;
}

struct node;
struct options;
struct tree;

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
	 * Optional (NULL: the source is always listed whole, with list()).
	 * List ONE directory level: the children of directory @key ("" the
	 * root) into @t with tree_add(), subdirectories as directories
	 * (their contents are listed by a later call). Same errors and
	 * warnings as list(); a directory that does not exist (any more)
	 * lists as empty or fails with -ENOENT. Runs on FUSE worker threads and the
	 * relisting thread, several at once.
	 */
	int (*list_dir)(struct source *s, const char *key, struct tree *t,
			char **ret_msg, char **ret_warnings);
	/*
	 * Set up @h (already reset, with the engine's common options) for
	 * a GET of bytes [off, off + len) of @file, pinned to @etag when
	 * not NULL (If-Match), and append request headers to *hdrs. The
	 * engine sets the Range header itself; a source that signs
	 * requests must sign it too, so it is passed in @range
	 * ("bytes=A-B").
	 * Only a strong @etag may be sent in If-Match (a weak one, W/"...",
	 * never matches there); the engine compares the response's ETag
	 * with @etag in any case.
	 * @return 0 or a negative errno.
	 */
	int (*prepare_get)(struct source *s, CURL *h, const struct node *file,
			   const char *etag, const char *range,
			   struct curl_slist **hdrs);
	/*
	 * Read bytes [off, off + len) of @file into @buf, all of them,
	 * checking that the object is still the version @etag names.
	 * May block (the engine calls it on a worker thread).
	 * @return 0, or a classified negative errno (above): -ESTALE when
	 * the object changed or shrank.
	 */
	int (*read_block)(struct source *s, const struct node *file,
			  const char *etag, uint64_t off, size_t len,
			  char *buf);
	/*
	 * Optional. A GET set up by prepare_get() on @h failed with @err
	 * (classified, fetch_judge()): the source may forget what it
	 * derived for @file (hf://: a signed URL that expired) and say
	 * what the failure is now, e.g. -EAGAIN so that the retry policy
	 * tries again.
	 * @return the errno to go on with.
	 */
	int (*get_failed)(struct source *s, CURL *h, const struct node *file,
			  int err);
	/*
	 * Optional. The value of extended attribute @name of @n that the
	 * source adds (hf://: user.weightfs.revision, .sha256).
	 * @return 0 and *ret (malloc'd), -ENODATA, -ENOMEM.
	 */
	int (*getxattr)(struct source *s, struct node *n, const char *name,
			char **ret);
	/*
	 * Optional, with getxattr(): the names getxattr() answers for @n,
	 * each NUL-terminated, one after the other (static storage), and
	 * their length in *ret_len.
	 */
	const char *(*xattr_names)(struct source *s, struct node *n,
				   size_t *ret_len);
	/*
	 * Optional. The SHA-256 of @n's whole content as the source keeps
	 * it beside the object (S3: a full-object x-amz-checksum-sha256),
	 * asked now (blocks; -o verify=sha256 asks once per version read).
	 * @return 0 and @ret (64 hex digits), -ENODATA when there is none,
	 * -ESTALE when the object is not the version listed, or another
	 * negative errno.
	 */
	int (*sha256)(struct source *s, struct node *n, char ret[65]);
	void (*free)(struct source *s);
};

struct source {
	const struct source_ops *ops;
	char *display; /* SOURCE as the user gave it, without secrets */
	/* The source checks a file's validator itself when it prepares a
	 * GET (prepare_get() fails with -ESTALE): responses come from
	 * another server (a CDN) whose ETag is not the validator, and the
	 * engine does not compare them. */
	bool pinned_by_source;
};

/*
 * source_redact() - @url as it may be shown (xattrs, logs, stats,
 * messages): without userinfo (user:password@) and without a query
 * string that carries a signature or credentials (X-Amz-Signature,
 * X-Amz-Credential, X-Amz-Security-Token, Signature, sig, token...).
 * @return a malloc'd string, or NULL when out of memory.
 */
char *source_redact(const char *url);

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

/* Constructors, called by source_new() for their scheme. */
int source_file_new(const char *spec, const struct options *opts,
		    struct source **ret, char **ret_msg);
int source_http_new(const char *spec, const struct options *opts,
		    struct source **ret, char **ret_msg);
int source_s3_new(const char *spec, const struct options *opts,
		  struct source **ret, char **ret_msg);
int source_hf_new(const char *spec, const struct options *opts,
		  struct source **ret, char **ret_msg);

#endif
