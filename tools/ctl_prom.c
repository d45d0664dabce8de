#include "ctl_prom.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* Keys that are levels, not counts; and their metric names. Every other
 * number is a counter. */
static const struct {
	const char *key, *name, *help;
} gauges[] = {
	{ "cache_bytes", "cache_bytes", "Bytes of blocks in the block cache" },
	{ "cache_mem", "cache_mem_bytes",
	  "The block cache's budget (cache_mem)" },
	{ "cache_blocks", "cache_blocks", "Blocks in the block cache" },
	{ "files", "files", "Files in the mounted tree" },
	{ "connections_now", "connections_now",
	  "Connections to the source in use now (connections=auto: the "
	  "tuned limit)" },
	{ "connections_max", "connections_max",
	  "The most connections to the source (connections_max)" },
};

/* Help for the counters known today; others get a generic line. */
static const struct {
	const char *key, *help;
} helps[] = {
	{ "bytes_fetched", "Body bytes received from the source" },
	{ "requests", "Range requests started, retries included" },
	{ "retries", "Range requests retried" },
	{ "errors", "Blocks that failed for good" },
	{ "cache_hits", "Block lookups found in the cache" },
	{ "cache_misses", "Block lookups that fetched or waited" },
	{ "cache_evictions", "Blocks evicted from the cache" },
	{ "prefetched_blocks", "Blocks fetched by readahead" },
	{ "reads", "FUSE read requests" },
	{ "bytes_read", "Bytes replied to FUSE reads" },
	{ "objects_changed", "Objects found changed at the source" },
};

/* A metric name from a JSON key: [a-zA-Z0-9_] kept, anything else '_'. */
static void metric_name(char *buf, size_t len, const char *key)
{
	size_t i;

	for (i = 0; key[i] && i + 1 < len; i++)
		buf[i] = isalnum((unsigned char)key[i]) ? key[i] : '_';
	buf[i] = '\0';
}

/* A label value, escaped as the format says: \\, \" and \n. */
static void put_label(FILE *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', out);
		if (*v == '\n') {
			fputs("\\n", out);
			continue;
		}
		fputc(*v, out);
	}
}

static bool is_histogram(struct json_object *v)
{
	struct json_object *x;

	return json_object_is_type(v, json_type_object) &&
	       json_object_object_get_ex(v, "le", &x) &&
	       json_object_is_type(x, json_type_array) &&
	       json_object_object_get_ex(v, "counts", &x) &&
	       json_object_is_type(x, json_type_array) &&
	       json_object_object_get_ex(v, "sum", &x) &&
	       json_object_object_get_ex(v, "count", &x);
}

static void put_histogram(FILE *out, const char *name, const char *mnt,
			  struct json_object *v)
{
	struct json_object *le, *counts, *x;
	size_t n;

	json_object_object_get_ex(v, "le", &le);
	json_object_object_get_ex(v, "counts", &counts);
	n = json_object_array_length(le);
	if (json_object_array_length(counts) < n)
		n = json_object_array_length(counts);
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "weightfs_%s_bucket{mountpoint=\"", name);
		put_label(out, mnt);
		fprintf(out, "\",le=\"%g\"} %llu\n",
			json_object_get_double(
				json_object_array_get_idx(le, i)),
			(unsigned long long)json_object_get_uint64(
				json_object_array_get_idx(counts, i)));
	}
	json_object_object_get_ex(v, "count", &x);
	fprintf(out, "weightfs_%s_bucket{mountpoint=\"", name);
	put_label(out, mnt);
	fprintf(out, "\",le=\"+Inf\"} %llu\n",
		(unsigned long long)json_object_get_uint64(x));
	fprintf(out, "weightfs_%s_count{mountpoint=\"", name);
	put_label(out, mnt);
	fprintf(out, "\"} %llu\n",
		(unsigned long long)json_object_get_uint64(x));
	json_object_object_get_ex(v, "sum", &x);
	fprintf(out, "weightfs_%s_sum{mountpoint=\"", name);
	put_label(out, mnt);
	fprintf(out, "\"} %.9g\n", json_object_get_double(x));
}

static void put_family(FILE *out, const char *key,
		       struct json_object *const *objs, const char *const *mnts,
		       int n)
{
	struct json_object *first = NULL, *v;
	const char *help = NULL, *suffix = "_total", *type = "counter";
	char name[128];
	int i;

	for (i = 0; i < n && !first; i++)
		if (json_object_object_get_ex(objs[i], key, &v))
			first = v;
	metric_name(name, sizeof(name), key);
	if (is_histogram(first)) {
		if (!strcmp(key, "fetch_seconds"))
			fprintf(out,
				"# HELP weightfs_%s Range request latency, "
				"from start to last byte (HTTP, S3)\n",
				name);
		else
			fprintf(out,
				"# HELP weightfs_%s weightfs histogram %s\n",
				name, key);
		fprintf(out, "# TYPE weightfs_%s histogram\n", name);
		for (i = 0; i < n; i++)
			if (json_object_object_get_ex(objs[i], key, &v) &&
			    is_histogram(v))
				put_histogram(out, name, mnts[i], v);
		return;
	}
	if (!json_object_is_type(first, json_type_int) &&
	    !json_object_is_type(first, json_type_double))
		return; /* strings, lists: not metrics */
	for (size_t g = 0; g < sizeof(gauges) / sizeof(gauges[0]); g++)
		if (!strcmp(key, gauges[g].key)) {
			metric_name(name, sizeof(name), gauges[g].name);
			help = gauges[g].help;
			suffix = "";
			type = "gauge";
		}
	for (size_t h = 0; !help && h < sizeof(helps) / sizeof(helps[0]); h++)
		if (!strcmp(key, helps[h].key))
			help = helps[h].help;
	if (!strcmp(type, "counter") && strlen(name) > 6 &&
	    !strcmp(name + strlen(name) - 6, "_total"))
		suffix = "";
	fprintf(out, "# HELP weightfs_%s%s ", name, suffix);
	if (help)
		fprintf(out, "%s\n", help);
	else
		fprintf(out, "weightfs counter %s\n", key);
	fprintf(out, "# TYPE weightfs_%s%s %s\n", name, suffix, type);
	for (i = 0; i < n; i++) {
		if (!json_object_object_get_ex(objs[i], key, &v))
			continue;
		fprintf(out, "weightfs_%s%s{mountpoint=\"", name, suffix);
		put_label(out, mnts[i]);
		if (json_object_is_type(v, json_type_double))
			fprintf(out, "\"} %.17g\n", json_object_get_double(v));
		else
			fprintf(out, "\"} %llu\n",
				(unsigned long long)json_object_get_uint64(v));
	}
}

int prom_write(FILE *out, const char *const *jsons, const char *const *mnts,
	       int n)
{
	struct json_object **objs = calloc((size_t)n, sizeof(*objs));
	int ret = 0, i, j;

	if (!objs)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		objs[i] = json_tokener_parse(jsons[i]);
		if (!json_object_is_type(objs[i], json_type_object)) {
			fprintf(stderr,
				"weightfs-ctl: %s: stats are not a JSON "
				"object\n",
				mnts[i]);
			ret = -EINVAL;
			goto out;
		}
	}
	/* Each family once, in the order of the first mount that has it. */
	for (i = 0; i < n; i++) {
		json_object_object_foreach(objs[i], key, val)
		{
			bool seen = false;

			(void)val;
			for (j = 0; j < i && !seen; j++)
				seen = json_object_object_get_ex(objs[j], key,
								 NULL);
			if (!seen)
				put_family(out, key, objs, mnts, n);
		}
	}
out:
	for (i = 0; i < n; i++)
		json_object_put(objs[i]);
	free(objs);
	return ret;
}
