/* The loader against the fixtures written by the official safetensors
 * library: every tensor's dtype, shape and SHA-256 as in EXPECTED.json,
 * through the public API, under several pipeline settings. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "loader_test_util.h"

struct json_object *expected;

static const char *const dtypes_files[] = { "dtypes.safetensors", NULL };
static const char *const llama_files[] = { "tiny-llama/model.safetensors",
					   NULL };
static const char *const sharded_files[] = {
	"tiny-llama-sharded/model-00001-of-00003.safetensors",
	"tiny-llama-sharded/model-00002-of-00003.safetensors",
	"tiny-llama-sharded/model-00003-of-00003.safetensors", NULL
};

static const struct {
	const char *path;
	const char *const *files;
} models[] = {
	{ "dtypes.safetensors", dtypes_files },
	{ "tiny-llama/model.safetensors", llama_files },
	{ "tiny-llama", llama_files },
	{ "tiny-llama-sharded", sharded_files },
};

static void test_api(void)
{
	int dev;

	CHECK(wfs_version_number() == WFS_VERSION_NUMBER);
	CHECK(!strcmp(wfs_version_string(), WFS_VERSION_STRING));
	CHECK(!strcmp(wfs_dtype_name(WFS_DTYPE_BF16), "BF16"));
	CHECK(!strcmp(wfs_dtype_name(WFS_DTYPE_F8_E8M0), "F8_E8M0"));
	CHECK(wfs_dtype_name(WFS_DTYPE_COUNT) == NULL);
	CHECK(wfs_dtype_bits(WFS_DTYPE_F4) == 4);
	CHECK(wfs_dtype_bits(WFS_DTYPE_F6_E3M2) == 6);
	CHECK(wfs_dtype_bits(WFS_DTYPE_C64) == 64);
	CHECK(wfs_device_parse("cpu", &dev) == 0 && dev == WFS_DEVICE_CPU);
	CHECK(wfs_device_parse("cuda", &dev) == 0 && dev == 0);
	CHECK(wfs_device_parse("cuda:3", &dev) == 0 && dev == 3);
	CHECK(wfs_device_parse("cuda:", &dev) == -EINVAL);
	CHECK(wfs_device_parse("cuda:1x", &dev) == -EINVAL);
	CHECK(wfs_device_parse("gpu", &dev) == -EINVAL);
	wfs_model_free(NULL);
}

static void test_digest(void)
{
	char hex[DIGEST_HEX_MAX];
	enum digest_algo a;

	CHECK(digest_buf(DIGEST_SHA256, "abc", 3, hex) == 0);
	CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223"
			   "b00361a396177a9cb410ff61f20015ad"));
	CHECK(digest_buf(DIGEST_XXH3, "", 0, hex) == 0);
	CHECK(!strcmp(hex, "2d06800538d394c2"));
	CHECK(digest_parse("xxh3", &a) == 0 && a == DIGEST_XXH3);
	CHECK(digest_parse("md5", &a) == -EINVAL);
	CHECK(!strcmp(digest_name(DIGEST_SHA256), "sha256"));
}

static void load_and_check(const char *rel, const char *const *files,
			   const struct wfs_load_opts *o)
{
	char path[4200];
	struct wfs_model *m = NULL;
	const struct wfs_load_stats *s;

	snprintf(path, sizeof(path), "%s/%s", fixtures_dir(), rel);
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_model_data(m, NULL) == NULL);
	CHECK(wfs_model_load(m, o) == 0);
	check_tensors(m, expected, files);
	for (size_t i = 0; i < wfs_model_tensor_count(m); i++) {
		const struct wfs_tensor *t = wfs_model_tensor(m, i);

		CHECK(t->data);
		CHECK((uintptr_t)t->data %
			      (o && o->alignment ? o->alignment : 256) ==
		      0);
	}
	s = wfs_model_stats(m);
	CHECK(s && s->path == WFS_PATH_DIRECT && s->threads >= 1);
	wfs_model_free(m);
}

static void test_fixtures(void)
{
	struct wfs_load_opts o;

	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
		load_and_check(models[i].path, models[i].files, NULL);

		wfs_load_opts_init(&o, sizeof(o));
		o.threads = 1;
		load_and_check(models[i].path, models[i].files, &o);

		/* Many small chunks over several threads. */
		wfs_load_opts_init(&o, sizeof(o));
		o.threads = 3;
		o.chunk_bytes = 64 * 1024;
		o.alignment = 4096;
		load_and_check(models[i].path, models[i].files, &o);

		/* Staged through host slots, with O_DIRECT where allowed. */
		wfs_load_opts_init(&o, sizeof(o));
		o.threads = 2;
		o.staging_bytes = 256 * 1024;
		o.direct_io = WFS_DIRECT_IO_ALWAYS;
		load_and_check(models[i].path, models[i].files, &o);
	}
}

static void test_metadata_and_find(void)
{
	char path[4200];
	struct wfs_model *m;

	snprintf(path, sizeof(path), "%s/dtypes.safetensors", fixtures_dir());
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(!strcmp(wfs_model_metadata(m, "note"), "dtype zoo"));
	CHECK(!strcmp(wfs_model_metadata(m, "format"), "pt"));
	CHECK(wfs_model_metadata(m, "nope") == NULL);
	CHECK(wfs_model_find(m, "bf16") != NULL);
	CHECK(wfs_model_find(m, "bf1") == NULL);
	CHECK(wfs_model_tensor(m, wfs_model_tensor_count(m)) == NULL);
	CHECK(wfs_model_find(m, "scalar")->ndim == 0);
	/* Reads before a load fail cleanly. */
	{
		char b[4];

		CHECK(wfs_model_read(m, 0, 0, b, 1) == -ENODATA);
	}
	wfs_model_free(m);
}

/* A caller-provided destination; and reloading one model ten times. */
static void test_dest_and_reload(void)
{
	char path[4200];
	struct wfs_model *m;
	struct wfs_load_opts o;
	uint64_t need;
	void *dest;

	snprintf(path, sizeof(path), "%s/tiny-llama-sharded", fixtures_dir());
	CHECK(wfs_model_open(path, &m) == 0);
	need = wfs_model_alloc_size(m, 0);
	CHECK(need >= 408448);
	CHECK(posix_memalign(&dest, 4096, need) == 0);
	wfs_load_opts_init(&o, sizeof(o));
	o.dest = dest;
	o.dest_bytes = need - 1;
	CHECK(wfs_model_load(m, &o) == -ENOSPC);
	CHECK(strstr(wfs_last_error(), "destination"));
	o.dest_bytes = need;
	CHECK(wfs_model_load(m, &o) == 0);
	CHECK(wfs_model_data(m, NULL) == dest);
	CHECK(wfs_model_tensor(m, 0)->data == dest);
	check_tensors(m, expected, sharded_files);
	for (int i = 0; i < 10; i++) {
		CHECK(wfs_model_load(m, NULL) == 0);
		CHECK(wfs_model_data(m, NULL) != dest);
	}
	check_tensors(m, expected, sharded_files);
	{
		char b[8];
		size_t i = (size_t)(wfs_model_find(m, "model.norm.weight") -
				    wfs_model_tensor(m, 0));

		CHECK(wfs_model_read(m, i, 120, b, 8) == 0);
		CHECK(wfs_model_read(m, i, 121, b, 8) == -ERANGE);
		CHECK(wfs_model_read(m, i, UINT64_MAX, b, 8) == -ERANGE);
	}
	wfs_model_free(m);
	free(dest);
	for (int i = 0; i < 10; i++) {
		CHECK(wfs_model_open(path, &m) == 0);
		CHECK(wfs_model_load(m, NULL) == 0);
		wfs_model_free(m);
	}
}

/* A generated model of odd-sized tensors, larger than a chunk, loaded under
 * settings that cut it into many chunks and pieces. */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void test_synthetic(void)
{
	enum { N = 40 };
	char path[] = "/tmp/wfs-test-synth-XXXXXX";
	char *json = malloc(N * 128 + 16);
	uint64_t sizes[N], seed = 42, total = 0;
	unsigned char *data;
	size_t jl = 0, hl;
	int fd = mkstemp(path);

	CHECK(fd >= 0 && json);
	jl += (size_t)sprintf(json + jl, "{");
	for (int i = 0; i < N; i++) {
		sizes[i] = i % 7 == 0 ? 0 : next_rand(&seed) % (1536 * 1024);
		jl += (size_t)sprintf(json + jl,
				      "%s\"t%02d\":{\"dtype\":\"U8\",\"shape\":"
				      "[%llu],\"data_offsets\":[%llu,%llu]}",
				      i ? "," : "", i,
				      (unsigned long long)sizes[i],
				      (unsigned long long)total,
				      (unsigned long long)(total + sizes[i]));
		total += sizes[i];
	}
	jl += (size_t)sprintf(json + jl, "}");
	while (jl % 8)
		json[jl++] = ' ';
	hl = jl;
	data = malloc(total);
	CHECK(data);
	for (uint64_t i = 0; i < total; i++)
		data[i] = (unsigned char)next_rand(&seed);
	{
		unsigned char pre[8];

		for (int i = 0; i < 8; i++)
			pre[i] = (unsigned char)((uint64_t)hl >> (8 * i));
		CHECK(write(fd, pre, 8) == 8);
		CHECK(write(fd, json, hl) == (ssize_t)hl);
		CHECK(write(fd, data, total) == (ssize_t)total);
		close(fd);
	}
	for (int v = 0; v < 5; v++) {
		struct wfs_load_opts o;
		struct wfs_model *m;
		uint64_t off = 0;

		wfs_load_opts_init(&o, sizeof(o));
		if (v == 1) {
			o.threads = 4;
			o.chunk_bytes = 64 * 1024;
		} else if (v == 2) {
			o.threads = 3;
			o.staging_bytes = 1 << 20;
			o.direct_io = WFS_DIRECT_IO_ALWAYS;
		} else if (v == 3) {
			o.alignment = 64;
			o.chunk_bytes = 100000; /* not a multiple of a page */
		} else if (v == 4) {
			o.threads = 16;
			o.staging_bytes = 1; /* far too small: clamped */
			o.direct_io = WFS_DIRECT_IO_ALWAYS;
		}
		CHECK(wfs_model_open(path, &m) == 0);
		CHECK(wfs_model_load(m, &o) == 0);
		CHECK(wfs_model_stats(m)->bytes == total);
		for (int i = 0; i < N; i++) {
			const struct wfs_tensor *t = wfs_model_tensor(m, i);

			CHECK(t->nbytes == sizes[i]);
			CHECK(!memcmp(t->data, data + off, sizes[i]));
			off += sizes[i];
		}
		wfs_model_free(m);
	}
	unlink(path);
	free(data);
	free(json);
}

int main(void)
{
	/* The checks that need no fixture run first, whatever follows. */
	test_api();
	test_digest();
	test_synthetic();
	if (!fixtures_present() && !fixtures_required()) {
		printf("fixture-free checks ok; skip the rest: no fixtures "
		       "(set WEIGHTFS_FIXTURES)\n");
		return 77;
	}
	expected = expected_load();
	test_fixtures();
	test_metadata_and_find();
	test_dest_and_reload();
	json_object_put(expected);
	printf("ok\n");
	return 0;
}
