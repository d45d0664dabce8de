/* The CUDA backend: the fixtures loaded into GPU memory and read back
 * match EXPECTED.json. Exits 77 (skip) without a GPU or without CUDA. */
#include <errno.h>
#include <string.h>

#include "cuda.h"
#include "loader_test_util.h"

static const char *const sharded_files[] = {
	"tiny-llama-sharded/model-00001-of-00003.safetensors",
	"tiny-llama-sharded/model-00002-of-00003.safetensors",
	"tiny-llama-sharded/model-00003-of-00003.safetensors", NULL
};
static const char *const dtypes_files[] = { "dtypes.safetensors", NULL };

static void load_check(struct json_object *expected, const char *rel,
		       const char *const *files, struct wfs_load_opts *o)
{
	char path[4200];
	struct wfs_model *m;

	snprintf(path, sizeof(path), "%s/%s", fixtures_dir(), rel);
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_model_load(m, o) == 0);
	CHECK(wfs_model_stats(m)->staging_bytes > 0);
	check_tensors(m, expected, files);
	wfs_model_free(m);
}

int main(void)
{
	struct json_object *expected;
	struct wfs_load_opts o;
	struct wfs_model *m;
	char path[4200];
	void *dest;
	int r;

	fixtures_dir();
	r = cuda_use(0);
	if (r == -ENODEV || r == -EOPNOTSUPP) {
		printf("skip: no usable CUDA device: %s\n", wfs_last_error());
		return 77;
	}
	CHECK(r == 0);
	expected = expected_load();

	wfs_load_opts_init(&o, sizeof(o));
	o.device = 0;
	for (int i = 0; i < 10; i++)
		load_check(expected, "tiny-llama-sharded", sharded_files, &o);
	load_check(expected, "dtypes.safetensors", dtypes_files, &o);

	/* Many chunks and slots, several streams, O_DIRECT where allowed. */
	o.threads = 4;
	o.chunk_bytes = 64 * 1024;
	o.direct_io = WFS_DIRECT_IO_ALWAYS;
	load_check(expected, "dtypes.safetensors", dtypes_files, &o);
	load_check(expected, "tiny-llama-sharded", sharded_files, &o);

	/* A caller-provided device allocation. */
	snprintf(path, sizeof(path), "%s/tiny-llama", fixtures_dir());
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(cuda_malloc(wfs_model_alloc_size(m, 0), &dest) == 0);
	wfs_load_opts_init(&o, sizeof(o));
	o.device = 0;
	o.dest = dest;
	o.dest_bytes = wfs_model_alloc_size(m, 0);
	CHECK(wfs_model_load(m, &o) == 0);
	CHECK(wfs_model_data(m, NULL) == dest);
	{
		static const char *const files[] = {
			"tiny-llama/model.safetensors", NULL
		};

		check_tensors(m, expected, files);
	}
	wfs_model_free(m);
	cuda_free(dest);

	/* No such device. */
	CHECK(wfs_model_open(path, &m) == 0);
	o.device = 4096;
	o.dest = NULL;
	CHECK(wfs_model_load(m, &o) == -ENODEV);
	wfs_model_free(m);

	wfs_release_staging();
	json_object_put(expected);
	printf("ok\n");
	return 0;
}
