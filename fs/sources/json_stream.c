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
	json_flat_fn *flat; /* or NULL */
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

void json_stream_set_flat(struct json_stream *js, json_flat_fn *flat)
{
	js->flat = flat;
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

/* Skip whitespace from @p to @end. */
static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && is_ws(*p))
		p++;
	return p;
}

/* A plain string at @p (after its '"'): its end (the closing '"'), or
 * NULL when it has an escape or a control character, or is cut. */
static const char *plain_string(const char *p, const char *end)
{
	for (; p < end; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"')
			return p;
		if (c == '\\' || c < 0x20)
			return NULL;
	}
	return NULL;
}

/*
 * The flat object at @p (its '{'), up to @end: members into @m. @return
 * the bytes it took, or 0 when it is not one json_stream_set_flat() takes
 * (json-c parses it then, the same way it always did).
 */
static size_t scan_flat(const char *p, const char *end, struct json_member *m,
			size_t *ret_n)
{
	const char *s = p + 1;
	size_t n = 0;

	s = skip_ws(s, end);
	if (s < end && *s == '}') {
		*ret_n = 0;
		return (size_t)(s + 1 - p);
	}
	while (s < end && n < JSON_FLAT_MAX) {
		const char *q;

		if (*s != '"' || !(q = plain_string(s + 1, end)))
			return 0;
		m[n].key = s + 1;
		m[n].key_len = (size_t)(q - s - 1);
		s = skip_ws(q + 1, end);
		if (s >= end || *s != ':')
			return 0;
		s = skip_ws(s + 1, end);
		if (s >= end)
			return 0;
		if (*s == '"') {
			if (!(q = plain_string(s + 1, end)))
				return 0;
			m[n].str = s + 1;
			m[n].len = (size_t)(q - s - 1);
			s = q + 1;
		} else {
			bool neg = *s == '-';
			int64_t v = 0;
			int digits = 0;

			s += neg;
			/* json-c's own reading of anything else (leading
			 * zeros, fractions, big numbers) stays its own. */
			if (s < end && *s == '0' && s + 1 < end &&
			    s[1] >= '0' && s[1] <= '9')
				return 0;
			for (; s < end && *s >= '0' && *s <= '9'; s++)
				if (++digits > 18)
					return 0;
				else
					v = v * 10 + (*s - '0');
			if (!digits || s >= end ||
			    (*s != ',' && *s != '}' && !is_ws(*s)))
				return 0;
			m[n].str = NULL;
			m[n].len = 0;
			m[n].num = neg ? -v : v;
		}
		n++;
		s = skip_ws(s, end);
		if (s < end && *s == '}') {
			*ret_n = n;
			return (size_t)(s + 1 - p);
		}
		if (s >= end || *s != ',')
			return 0;
		s = skip_ws(s + 1, end);
	}
	return 0;
}

/* Hand the flat object at @p to the fast path. @return bytes used, 0
 * when it is not one (the tokener takes it), or a negative errno. */
static long feed_flat(struct json_stream *js, const char *p, size_t len)
{
	struct json_member m[JSON_FLAT_MAX];
	size_t n, used = scan_flat(p, p + len, m, &n);
	int err;

	if (!used)
		return 0;
	err = js->flat(js->arg, m, n);
	if (err > 0)
		return 0; /* declined */
	js->count++;
	if (err)
		return fail(js, err);
	js->state = NEXT;
	return (long)used;
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
				if (c == '{' && js->flat) {
					used = feed_flat(js, p + i, len - i);
					if (used < 0)
						return (int)used;
					i += (size_t)used;
				}
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
