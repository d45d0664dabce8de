/* json_stream: a JSON array parsed element by element (json_stream.h).
 *
 * The array's own syntax ('[', ',', ']', whitespace) is read here; each
 * element between them is fed to a json-c tokener, which keeps its state
 * across calls, so an element may arrive split anywhere. */
#include "json_stream.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>

enum state {
	OPEN,	   /* before '[' */
	FIRST,	   /* after '[': an element or ']' */
	ELEM,	   /* inside an element (the tokener has part of it) */
	NEXT,	   /* after an element: ',' or ']' */
	AFTER_SEP, /* after ',': an element */
	DONE,	   /* after ']': whitespace only */
	FAILED,
};

struct json_stream {
	json_tokener *tok;
	json_stream_fn *fn;
	void *arg;
	enum state state;
	size_t count;
	int err; /* FAILED: why */
};

int json_stream_new(json_stream_fn *fn, void *arg, struct json_stream **ret)
{
	struct json_stream *js = calloc(1, sizeof(*js));

	if (!js)
		return -ENOMEM;
	js->tok = json_tokener_new();
	if (!js->tok) {
		free(js);
		return -ENOMEM;
	}
	js->fn = fn;
	js->arg = arg;
	*ret = js;
	return 0;
}

void json_stream_free(struct json_stream *js)
{
	if (!js)
		return;
	json_tokener_free(js->tok);
	free(js);
}

size_t json_stream_count(const struct json_stream *js)
{
	return js->count;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int fail(struct json_stream *js, int err)
{
	js->state = FAILED;
	js->err = err;
	return err;
}

/* Feed up to INT_MAX bytes of an element to the tokener. @return bytes
 * used, or a negative errno. */
static long feed_elem(struct json_stream *js, const char *p, size_t len)
{
	int n = len > INT_MAX ? INT_MAX : (int)len, err;
	json_object *o = json_tokener_parse_ex(js->tok, p, n);
	enum json_tokener_error e = json_tokener_get_error(js->tok);
	size_t used = json_tokener_get_parse_end(js->tok);

	if (e == json_tokener_continue)
		return n; /* all of it taken, the element goes on */
	if (e != json_tokener_success)
		return fail(js, -EPROTO);
	js->count++;
	err = js->fn(js->arg, o);
	json_object_put(o);
	json_tokener_reset(js->tok);
	if (err)
		return fail(js, err);
	js->state = NEXT;
	return (long)used;
}

int json_stream_feed(struct json_stream *js, const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		char c = p[i];
		long used;

		switch (js->state) {
		case FAILED:
			return js->err;
		case ELEM:
			used = feed_elem(js, p + i, len - i);
			if (used < 0)
				return (int)used;
			i += (size_t)used;
			continue;
		default:
			break;
		}
		if (is_ws(c)) {
			i++;
			continue;
		}
		switch (js->state) {
		case OPEN:
			if (c != '[')
				return fail(js, -EPROTO);
			js->state = FIRST;
			i++;
			break;
		case FIRST:
		case AFTER_SEP:
			if (c == ']' && js->state == FIRST) {
				js->state = DONE;
				i++;
			} else if (c == ']' || c == ',') {
				return fail(js, -EPROTO);
			} else {
				js->state = ELEM; /* the tokener takes c */
			}
			break;
		case NEXT:
			if (c == ',')
				js->state = AFTER_SEP;
			else if (c == ']')
				js->state = DONE;
			else
				return fail(js, -EPROTO);
			i++;
			break;
		default: /* DONE: nothing but whitespace after the array */
			return fail(js, -EPROTO);
		}
	}
	return js->state == FAILED ? js->err : 0;
}

int json_stream_end(struct json_stream *js)
{
	if (js->state == FAILED)
		return js->err;
	/* Anything but a closed array (an element still open included) is
	 * a truncated document. */
	return js->state == DONE ? 0 : fail(js, -EPROTO);
}
