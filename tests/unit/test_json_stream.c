/* json_stream: arrays parsed element by element, whatever the split;
 * malformed and non-array documents; a callback's error stops the
 * stream; memory does not grow with the array's length. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_stream.h"
#include "check.h"

struct seen {
	char names[64][16];
	size_t n;
	int stop_at; /* the callback fails at this element (1-based) */
};

static int on_elem(void *arg, json_object *e)
{
	struct seen *s = arg;
	json_object *v;
	const char *name = "?";

	if (s->stop_at && (int)s->n + 1 == s->stop_at)
		return -E2BIG;
	if (json_object_is_type(e, json_type_object) &&
	    json_object_object_get_ex(e, "name", &v))
		name = json_object_get_string(v);
	else if (json_object_is_type(e, json_type_int))
		name = "int";
	if (s->n < 64)
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
	s->n++;
	return 0;
}

/* Parse @doc fed in pieces of @step bytes. @return the end's result. */
static int parse(const char *doc, size_t step, struct seen *s)
{
	struct json_stream *js;
	size_t len = strlen(doc), i;
	int err;

	CHECK_EQ(json_stream_new(on_elem, s, &js), 0);
	for (i = 0, err = 0; i < len && !err; i += step)
		err = json_stream_feed(js, doc + i,
				       len - i < step ? len - i : step);
	if (!err)
		err = json_stream_end(js);
	if (!err)
		CHECK_EQ(json_stream_count(js), s->n);
	json_stream_free(js);
	return err;
}

static void every_split(void)
{
	const char *doc = " [ {\"name\": \"a\", \"lfs\": {\"size\": 3}},\n"
			  "{\"name\":\"b\\u00e9]\",\"x\":[1,{\"y\":\"}\"}]} ,"
			  " 12, {\"name\":\"c\"} ]\n ";
	size_t step;

	for (step = 1; step <= strlen(doc); step++) {
		struct seen s = { 0 };

		CHECK_EQ(parse(doc, step, &s), 0);
		CHECK_EQ(s.n, 4);
		CHECK_STREQ(s.names[0], "a");
		CHECK_STREQ(s.names[1], "b\xc3\xa9]");
		CHECK_STREQ(s.names[2], "int");
		CHECK_STREQ(s.names[3], "c");
	}
}

static void empty_and_bad(void)
{
	static const char *bad[] = {
		"",
		"{\"name\":\"a\"}",
		"[{\"name\":\"a\"}",
		"[1,]",
		"[,1]",
		"[1 2]",
		"[1]]",
		"[1] x",
		"[{\"a\":}]",
		"<html>[]",
		"[\"unterminated]",
	};
	struct seen s = { 0 };
	size_t i;

	CHECK_EQ(parse("[]", 1, &s), 0);
	CHECK_EQ(parse(" [\n] ", 2, &s), 0);
	CHECK_EQ(s.n, 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&s, 0, sizeof(s));
		CHECK_EQ(parse(bad[i], 3, &s), -EPROTO);
	}
}

static void callback_stops(void)
{
	struct seen s = { .stop_at = 2 };
	struct json_stream *js;

	CHECK_EQ(parse("[{\"name\":\"a\"},{\"name\":\"b\"},{}]", 5, &s),
		 -E2BIG);
	CHECK_EQ(s.n, 1);
	/* The error stays. */
	CHECK_EQ(json_stream_new(on_elem, &s, &js), 0);
	s.n = 0;
	CHECK_EQ(json_stream_feed(js, "[{}, {}", 7), -E2BIG);
	CHECK_EQ(json_stream_feed(js, ", {}]", 5), -E2BIG);
	CHECK_EQ(json_stream_end(js), -E2BIG);
	json_stream_free(js);
}

/* 200,000 entries (~13 MB) parsed in 64 KiB pieces: the heap in use
 * stays near one element's worth, not the document's. */
static void memory_flat(void)
{
	const size_t n = 200000, piece = 64 << 10;
	char *doc = malloc(n * 80 + 16), *p = doc;
	struct seen s = { 0 };
	struct mallinfo2 before, peak = { 0 }, now;
	struct json_stream *js;
	size_t i, len;

	CHECK(doc);
	*p++ = '[';
	for (i = 0; i < n; i++)
		p += sprintf(p,
			     "%s{\"name\":\"f%07zu\",\"type\":\"file\","
			     "\"size\":%zu}",
			     i ? "," : "", i, i);
	*p++ = ']';
	len = (size_t)(p - doc);
	before = mallinfo2();
	CHECK_EQ(json_stream_new(on_elem, &s, &js), 0);
	for (i = 0; i < len; i += piece) {
		CHECK_EQ(json_stream_feed(js, doc + i,
					  len - i < piece ? len - i : piece),
			 0);
		now = mallinfo2();
		if (now.uordblks > peak.uordblks)
			peak = now;
	}
	CHECK_EQ(json_stream_end(js), 0);
	CHECK_EQ(s.n, n);
	json_stream_free(js);
	CHECK(peak.uordblks < before.uordblks + (1 << 20),
	      "heap grew by %zu bytes parsing %zu",
	      peak.uordblks - before.uordblks, len);
	free(doc);
}

/* The flat fast path: plain objects come as members (whatever the feed's
 * split, as long as they are whole in one feed), everything else through
 * json-c, and an object the callback declines through json-c too. */
static int on_flat(void *arg, const struct json_member *m, size_t n)
{
	struct seen *s = arg;
	char name[16] = "flat:";

	for (size_t i = 0; i < n; i++) {
		if (m[i].key_len == 4 && !memcmp(m[i].key, "name", 4)) {
			if (!m[i].str)
				return 1; /* declined: json-c's */
			snprintf(name + 5, sizeof(name) - 5, "%.*s",
				 (int)m[i].len, m[i].str);
		}
		if (m[i].key_len == 1 && m[i].key[0] == 'n' &&
		    (m[i].str || m[i].num != -42))
			return -EINVAL; /* read wrong */
	}
	if (s->n < 64)
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
	s->n++;
	return 0;
}

static void flat_path(void)
{
	const char *doc = "[{\"name\":\"a\", \"n\" : -42 },"
			  "{\"name\":\"b\\\"\"},"	/* an escape */
			  "{\"name\":\"c\",\"n\":007}," /* json-c's number */
			  "{\"name\":\"d\",\"o\":{}},"	/* nested */
			  "{\"name\":\"e\",\"n\":1.5}," /* a fraction */
			  "{\"name\":5},"		/* declined */
			  "{ },"			/* empty */
			  "{\"name\":\"f\",\"n\":123456789012345678901},"
			  "{\"name\":\"g\",\"type\":\"file\",\"n\":-42}]";
	static const char *const want[] = { "flat:a", "b\"", "c",
					    "d",      "e",   "5",
					    "flat:",  "f",   "flat:g" };

	for (size_t step = 1; step <= strlen(doc); step++) {
		struct seen s = { 0 };
		struct json_stream *js;
		size_t i, len = strlen(doc);
		int err = 0;

		CHECK_EQ(json_stream_new(on_elem, &s, &js), 0);
		json_stream_set_flat(js, on_flat);
		for (i = 0; i < len && !err; i += step)
			err = json_stream_feed(js, doc + i,
					       len - i < step ? len - i : step);
		CHECK_EQ(err, 0);
		CHECK_EQ(json_stream_end(js), 0);
		CHECK_EQ(s.n, 9);
		CHECK_EQ(json_stream_count(js), 9);
		/* Whole in one feed: every object the path takes is flat. */
		for (i = 0; step == len && i < 9; i++)
			CHECK_STREQ(s.names[i], want[i]);
		/* Split: either way, the same name. */
		for (i = 0; i < 9; i++) {
			const char *got = s.names[i];

			if (!strncmp(got, "flat:", 5))
				got += 5;
			CHECK(!strcmp(got,
				      want[i] + (strncmp(want[i], "flat:", 5)
							 ? 0
							 : 5)) ||
				      (i == 6 && !strcmp(got, "?")),
			      "element %zu: %s", i, s.names[i]);
		}
		json_stream_free(js);
	}
}

int main(void)
{
	every_split();
	flat_path();
	empty_and_bad();
	callback_stops();
	memory_flat();
	printf("json_stream: ok\n");
	return 0;
}
