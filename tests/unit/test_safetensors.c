/* Malformed safetensors files and model directories: each gives a clear
 * error (the right errno, a message naming the problem), never a crash. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader_test_util.h"
#include "safetensors.h"

static char dir[] = "/tmp/wfs-test-st-XXXXXX";

static void write_raw(const char *name, const void *buf, size_t len)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0);
	CHECK(write(fd, buf, len) == (ssize_t)len);
	close(fd);
}

/* A file with header @json, length field @hlen (0: the real length), and
 * @data bytes of data. */
static void write_st(const char *name, const char *json, uint64_t hlen,
		     size_t data)
{
	size_t n = strlen(json), len = 8 + n + data;
	unsigned char *b = calloc(1, len);

	CHECK(b);
	if (!hlen)
		hlen = n;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(b + 8, json, n);
	for (size_t i = 0; i < data; i++)
		b[8 + n + i] = (unsigned char)i;
	write_raw(name, b, len);
	free(b);
}

static void expect_open(const char *name, int err, const char *msg)
{
	char path[256];
	struct wfs_model *m = (struct wfs_model *)1;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	r = wfs_model_open(path, &m);
	CHECK(r == err && strstr(wfs_last_error(), msg),
	      "%s: got %d \"%s\", expected %d \"%s\"", name, r,
	      wfs_last_error(), err, msg);
	if (err == 0) {
		CHECK(wfs_model_load(m, NULL) == 0);
		wfs_model_free(m);
	} else {
		CHECK(m == (struct wfs_model *)1); /* untouched on failure */
		CHECK(strstr(wfs_last_error(), name)); /* names the file */
	}
}

static void st_case(const char *json, size_t data, int err, const char *msg)
{
	write_st("case.safetensors", json, 0, data);
	expect_open("case.safetensors", err, msg);
}

static void test_files(void)
{
	char deep[200];

	write_raw("empty.safetensors", "", 0);
	expect_open("empty.safetensors", -EINVAL, "too short");
	write_raw("short.safetensors", "\x02\0\0\0", 4);
	expect_open("short.safetensors", -EINVAL, "too short");
	write_st("huge.safetensors", "{}", UINT64_MAX, 0);
	expect_open("huge.safetensors", -EINVAL, "exceeds the limit");
	write_st("limit.safetensors", "{}", SAFETENSORS_MAX_HEADER + 1, 0);
	expect_open("limit.safetensors", -EINVAL, "exceeds the limit");
	write_st("past.safetensors", "{}", 1000, 0);
	expect_open("past.safetensors", -EINVAL, "past the end of the file");

	st_case("{}", 0, 0, "");
	st_case("{}      ", 0, 0, "");
	st_case("{\"__metadata__\":{\"a\":\"b\"}}", 0, 0, "");
	st_case("{\"a\":", 0, -EINVAL, "not valid JSON");
	st_case("{\"a\":{}} x", 0, -EINVAL, "not valid JSON");
	st_case("{\"a\":1,}", 0, -EINVAL, "not valid JSON");
	st_case("[1, 2]", 0, -EINVAL, "does not start with '{'");
	st_case("PK\x03\x04 not at all", 0, -EINVAL, "does not start");
	st_case("{\"a\":\"\xff\xfe\"}", 0, -EINVAL, "not valid JSON");
	st_case("{\"a\":1}", 0, -EINVAL, "is not a JSON object");
	st_case("{\"__metadata__\":{\"a\":1}}", 0, -EINVAL, "__metadata__");
	st_case("{\"__metadata__\":[]}", 0, -EINVAL, "__metadata__");
	st_case("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -EINVAL,
		"no dtype");
	st_case("{\"t\":{\"dtype\":\"F128\",\"shape\":[1],"
		"\"data_offsets\":[0,4]}}",
		4, -EINVAL, "unknown dtype \"F128\"");
	st_case("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
		-EINVAL, "no shape");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, -EINVAL,
		"no data_offsets");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
		"\"data_offsets\":[0,4,8]}}",
		4, -EINVAL, "no data_offsets");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
		"\"data_offsets\":[-4,0]}}",
		4, -EINVAL, "no data_offsets");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],"
		"\"data_offsets\":[0,4]}}",
		4, -EINVAL, "shape[0]");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],"
		"\"data_offsets\":[0,4]}}",
		4, -EINVAL, "shape[0]");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],"
		"\"data_offsets\":[0,4]}}",
		4, -EINVAL, "shape[0]");
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],"
		"\"data_offsets\":[4,0]}}",
		4, -EINVAL, "before begin");
	/* Shape and size disagree. */
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],"
		"\"data_offsets\":[0,8]}}",
		8, -EINVAL, "give 12 bytes but data_offsets span 8");
	/* Shape overflow, in the product and in the bits. */
	st_case("{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,"
		"16],\"data_offsets\":[0,8]}}",
		8, -EINVAL, "overflows");
	st_case("{\"t\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
		"\"data_offsets\":[0,8]}}",
		8, -EINVAL, "overflows");
	st_case("{\"t\":{\"dtype\":\"U8\",\"shape\":[2305843009213693951],"
		"\"data_offsets\":[0,2305843009213693951]}}",
		8, -EINVAL, "past the end of the data");
	/* Truncated data; offsets past the end. */
	st_case("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
		"\"data_offsets\":[0,8]}}",
		4, -EINVAL, "past the end of the data");
	st_case("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		"\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2]"
		","
		"\"data_offsets\":[8,16]}}",
		12, -EINVAL, "past the end of the data");
	/* Overlaps, gaps, trailing bytes. */
	st_case("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		"\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2]"
		","
		"\"data_offsets\":[4,12]}}",
		12, -EINVAL, "overlaps");
	st_case("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
		"\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2]"
		","
		"\"data_offsets\":[0,8]}}",
		8, -EINVAL, "overlaps");
	st_case("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
		"\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1]"
		","
		"\"data_offsets\":[8,12]}}",
		12, -EINVAL, "gap of 4 bytes before tensor \"b\"");
	st_case("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
		"\"data_offsets\":[0,4]}}",
		8, -EINVAL, "4 bytes of data after the last tensor");
	/* Sub-byte dtypes must fill whole bytes. */
	st_case("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],"
		"\"data_offsets\":[0,2]}}",
		2, -EINVAL, "whole bytes");
	st_case("{\"a\":{\"dtype\":\"F4\",\"shape\":[2,3],"
		"\"data_offsets\":[0,3]},\"b\":{\"dtype\":\"F6_E2M3\","
		"\"shape\":[4],\"data_offsets\":[3,6]},\"c\":{\"dtype\":"
		"\"F6_E3M2\",\"shape\":[8],\"data_offsets\":[6,12]},\"d\":{"
		"\"dtype\":\"F8_E8M0\",\"shape\":[2],\"data_offsets\":[12,14]},"
		"\"e\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":"
		"[14,22]},\"z\":{\"dtype\":\"BOOL\",\"shape\":[0],"
		"\"data_offsets\":[22,22]}}",
		22, 0, "");
	/* Too deep for the JSON parser. */
	memset(deep, '[', sizeof(deep));
	memcpy(deep, "{\"a\":", 5);
	deep[sizeof(deep) - 1] = '\0';
	st_case(deep, 0, -EINVAL, "not valid JSON");
	{
		static const char nul[] = "\x0b\0\0\0\0\0\0\0{\"a\":\"x\0y\"}";

		write_raw("nul.safetensors", nul, sizeof(nul) - 1);
		expect_open("nul.safetensors", -EINVAL, "NUL");
	}
}

static void test_dirs(void)
{
	static const char t1[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],"
				 "\"data_offsets\":[0,4]}}";
	static const char t2[] = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],"
				 "\"data_offsets\":[0,2]}}";
	char path[256];
	struct wfs_model *m;

	expect_open("missing", -ENOENT, "No such file");

	CHECK(mkdir(strcat(strcpy(path, dir), "/d"), 0755) == 0);
	expect_open("d", -ENOENT, "no model.safetensors.index.json");
	write_st("d/2.safetensors", t2, 0, 2);
	write_st("d/1.safetensors", t1, 0, 4);
	snprintf(path, sizeof(path), "%s/d", dir);
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_model_tensor_count(m) == 2);
	CHECK(!strcmp(wfs_model_tensor(m, 0)->name, "a"));
	CHECK(wfs_model_load(m, NULL) == 0);
	CHECK(((unsigned char *)wfs_model_find(m, "b")->data)[1] == 1);
	wfs_model_free(m);

	/* The same tensor in two shards. */
	write_st("d/3.safetensors", t1, 0, 4);
	expect_open("d", -EINVAL, "is in both");
	unlink(strcat(strcpy(path, dir), "/d/3.safetensors"));

	/* An index: honoured, checked, and kept inside the directory. */
	write_raw("d/model.safetensors.index.json",
		  "{\"weight_map\":{\"a\":\"1.safetensors\"}}", 36);
	expect_open("d", 0, "");
	snprintf(path, sizeof(path), "%s/d", dir);
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_model_tensor_count(m) == 1);
	wfs_model_free(m);
	write_raw("d/model.safetensors.index.json",
		  "{\"weight_map\":{\"a\":\"2.safetensors\"}}", 36);
	expect_open("d", -EINVAL, "\"a\" is not in 2.safetensors");
	write_raw("d/model.safetensors.index.json",
		  "{\"weight_map\":{\"a\":\"9.safetensors\"}}", 36);
	expect_open("d", -ENOENT, "9.safetensors");
	write_raw("d/model.safetensors.index.json",
		  "{\"weight_map\":{\"a\":\"../1.safetensors\"}}", 39);
	expect_open("d", -EINVAL, "not a file name");
	write_raw("d/model.safetensors.index.json", "{\"weight_map\":[]}", 17);
	expect_open("d", -EINVAL, "no weight_map");
	write_raw("d/model.safetensors.index.json", "{\"weight_map\":{}}", 17);
	expect_open("d", -EINVAL, "weight_map is empty");
	write_raw("d/model.safetensors.index.json", "{\"weight_", 9);
	expect_open("d", -EINVAL, "not valid JSON");
}

/* A name holding NUL ("a\u0000x") would be cut to "a" and merge with
 * tensor "a", where strict parsers see two tensors: refused. An escaped
 * backslash followed by "u0000" is just text. */
static void test_nul_names(void)
{
	static const char lit[] = "{\"a\\\\u0000\":{\"dtype\":\"U8\","
				  "\"shape\":[1],\"data_offsets\":[0,1]}}";
	char path[256];
	struct wfs_model *m;

	st_case("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
		"\"data_offsets\":[0,1]},"
		"\"a\\u0000x\":{\"dtype\":\"U8\",\"shape\":[1],"
		"\"data_offsets\":[1,2]}}",
		2, -EINVAL, "escaped NUL");
	st_case("{\"a\\u0000\":{\"dtype\":\"U8\",\"shape\":[1],"
		"\"data_offsets\":[0,1]}}",
		1, -EINVAL, "escaped NUL");
	st_case("{\"__metadata__\":{\"k\":\"v\\u0000w\"}}", 0, -EINVAL,
		"escaped NUL");

	write_st("lit.safetensors", lit, 0, 1);
	snprintf(path, sizeof(path), "%s/lit.safetensors", dir);
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK_EQ(wfs_model_tensor_count(m), 1);
	CHECK_STREQ(wfs_model_tensor(m, 0)->name, "a\\u0000");
	wfs_model_free(m);
}

/* A FIFO as the model, a shard or the index is refused at once: opening
 * or reading one would block forever (alarm() fails the test if so). */
static void test_fifos(void)
{
	static const char t1[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],"
				 "\"data_offsets\":[0,4]}}";
	char path[256];

	alarm(30);
	snprintf(path, sizeof(path), "%s/fifo.safetensors", dir);
	CHECK(mkfifo(path, 0644) == 0);
	expect_open("fifo.safetensors", -EINVAL, "not a regular file");

	CHECK(mkdir(strcat(strcpy(path, dir), "/shards"), 0755) == 0);
	write_st("shards/1.safetensors", t1, 0, 4);
	CHECK(mkfifo(strcat(strcpy(path, dir), "/shards/2.safetensors"),
		     0644) == 0);
	expect_open("shards", -EINVAL, "2.safetensors: not a regular file");

	CHECK(mkdir(strcat(strcpy(path, dir), "/index"), 0755) == 0);
	write_st("index/1.safetensors", t1, 0, 4);
	CHECK(mkfifo(strcat(strcpy(path, dir),
			    "/index/model.safetensors.index.json"),
		     0644) == 0);
	expect_open("index", -EINVAL,
		    "model.safetensors.index.json: not a regular file");
	alarm(0);
}

/* A file that changes between open and load fails the load with EIO. */
static void test_changed(void)
{
	static const char t[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[64],"
				"\"data_offsets\":[0,64]}}";
	char path[256];
	struct wfs_model *m;

	write_st("changed.safetensors", t, 0, 64);
	snprintf(path, sizeof(path), "%s/changed.safetensors", dir);
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(truncate(path, 40) == 0);
	CHECK(wfs_model_load(m, NULL) == -EIO);
	CHECK(strstr(wfs_last_error(), "changed"));
	CHECK(wfs_model_data(m, NULL) == NULL);
	wfs_model_free(m);
}

/* The parser on its own: sizes and dtypes. */
static void test_parser(void)
{
	uint8_t p[8] = { 2, 0, 0, 0, 0, 0, 0, 0 };
	uint64_t n, shape[2] = { 3, 5 };
	enum wfs_dtype d;

	CHECK(safetensors_header_size(p, 10, &n) == 0 && n == 2);
	CHECK(safetensors_header_size(p, 9, &n) == -EINVAL);
	CHECK(safetensors_header_size(p, 7, &n) == -EINVAL);
	CHECK(safetensors_dtype_parse("F8_E4M3", &d) == 0 &&
	      d == WFS_DTYPE_F8_E4M3);
	CHECK(safetensors_dtype_parse("bf16", &d) == -EINVAL);
	CHECK(safetensors_tensor_bytes(WFS_DTYPE_BF16, 2, shape, &n) == 0 &&
	      n == 30);
	CHECK(safetensors_tensor_bytes(WFS_DTYPE_F6_E2M3, 2, shape, &n) ==
	      -EINVAL);
	CHECK(safetensors_tensor_bytes(WFS_DTYPE_F32, 0, shape, &n) == 0 &&
	      n == 4);
	for (unsigned i = 0; i < WFS_DTYPE_COUNT; i++) {
		CHECK(safetensors_dtype_parse(safetensors_dtype_name(i), &d) ==
		      0);
		CHECK((unsigned)d == i);
	}
}

static void cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
	CHECK(mkdtemp(dir));
	atexit(cleanup);
	test_parser();
	test_files();
	test_dirs();
	test_changed();
	test_nul_names();
	test_fifos();
	printf("ok\n");
	return 0;
}
