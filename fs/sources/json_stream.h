/* json_stream: a JSON array parsed element by element as its bytes
 * arrive, for directory listings (nginx `autoindex_format json`, a
 * Hugging Face Hub tree page): each element is handed to a callback as
 * soon as it is complete, then freed, so a listing never exists as a
 * whole document tree. Memory: one element's parse state, whatever the
 * array's length.
 *
 *	struct json_stream *js;
 *	err = json_stream_new(on_entry, arg, &js);
 *	while (!err && more bytes)
 *		err = json_stream_feed(js, buf, len);  // any split
 *	if (!err)
 *		err = json_stream_end(js);
 *	json_stream_free(js);
 *
 * Only a top-level array is accepted (anything else: -EPROTO). Elements
 * may be any JSON value (objects, nested ones included); json-c's tokener
 * parses each one. One stream is used by one thread at a time. */
#ifndef WFS_FS_JSON_STREAM_H
#define WFS_FS_JSON_STREAM_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

struct json_stream;

/*
 * The callback: @elem is borrowed, valid during the call only (take a
 * json_object_get() reference to keep it). @return 0 to go on, or a
 * negative errno, which stops the stream and is what json_stream_feed()
 * returns.
 */
typedef int json_stream_fn(void *arg, json_object *elem);

/* json_stream_new() - a stream calling @fn(@arg, element) per element.
 * @return 0 and *ret, or -ENOMEM. */
int json_stream_new(json_stream_fn *fn, void *arg, struct json_stream **ret);

/*
 * A flat object's member, as json_stream_set_flat() hands it over: @key
 * (@key_len bytes) and either a string (@str, @len bytes, no escapes, no
 * control characters) or an integer (@str NULL, @num). Pointers into the
 * fed bytes, not NUL-terminated, valid during the call only.
 */
struct json_member {
	const char *key;
	size_t key_len;
	const char *str;
	size_t len;
	int64_t num;
};

#define JSON_FLAT_MAX 8 /* members; an object with more takes @fn */

/* The fast path's callback: an object of @n members; a key given twice
 * appears twice (json-c keeps the last). Returns as json_stream_fn, or 1
 * to decline, having done nothing: the object goes to json-c and @fn. */
typedef int json_flat_fn(void *arg, const struct json_member *m, size_t n);

/*
 * json_stream_set_flat() - hand elements that are flat objects (at most
 * JSON_FLAT_MAX members, each a plain string without escapes or an
 * integer of at most 18 digits, whole in one json_stream_feed()) to
 * @flat instead, scanned without building a json_object: a big listing's
 * entries cost a tenth. Every other element still goes to @fn.
 */
void json_stream_set_flat(struct json_stream *js, json_flat_fn *flat);

/*
 * json_stream_feed() - parse the next @len bytes of the document;
 * complete elements are handed to the callback before it returns.
 * @return 0, -EPROTO when the bytes are not (the start of) a JSON array
 * (the error stays: later calls fail the same), or the callback's error.
 */
int json_stream_feed(struct json_stream *js, const char *p, size_t len);

/* json_stream_end() - the document ended. @return 0 when it was a
 * complete array (trailing whitespace allowed), else -EPROTO. */
int json_stream_end(struct json_stream *js);

/* json_stream_count() - elements handed to the callback so far. */
size_t json_stream_count(const struct json_stream *js);

/* json_stream_free() - free @js (NULL is fine). */
void json_stream_free(struct json_stream *js);

#endif
