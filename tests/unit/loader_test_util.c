#include "loader_test_util.h"

#include <string.h>
#include <unistd.h>

#include "digest.h"

bool fixtures_required(void)
{
	const char *s = getenv("WEIGHTFS_REQUIRE_FIXTURES");

	return s && !strcmp(s, "1");
}

bool fixtures_present(void)
{
	char dir[4096];
	const char *base = getenv("WEIGHTFS_FIXTURES");

	snprintf(dir, sizeof(dir), "%s/safetensors/EXPECTED.json",
		 base && *base ? base : WFS_FIXTURES_DEFAULT);
	return access(dir, R_OK) == 0;
}

const char *fixtures_dir(void)
{
	static char dir[4096];
	const char *base = getenv("WEIGHTFS_FIXTURES");

	snprintf(dir, sizeof(dir), "%s/safetensors",
		 base && *base ? base : WFS_FIXTURES_DEFAULT);
	if (access(dir, R_OK)) {
		printf("skip: no fixtures at %s (set WEIGHTFS_FIXTURES)\n",
		       dir);
		exit(fixtures_required() ? 1 : 77);
	}
	return dir;
}

struct json_object *expected_load(void)
{
	char path[4200];
	struct json_object *o;

	snprintf(path, sizeof(path), "%s/EXPECTED.json", fixtures_dir());
	o = json_object_from_file(path);
	CHECK(o, "cannot parse %s", path);
	return o;
}

int dtype_from_torch(const char *name)
{
	static const struct {
		const char *torch;
		enum wfs_dtype dtype;
	} map[] = {
		{ "bool", WFS_DTYPE_BOOL },
		{ "uint8", WFS_DTYPE_U8 },
		{ "int8", WFS_DTYPE_I8 },
		{ "float8_e5m2", WFS_DTYPE_F8_E5M2 },
		{ "float8_e4m3fn", WFS_DTYPE_F8_E4M3 },
		{ "float8_e8m0fnu", WFS_DTYPE_F8_E8M0 },
		{ "int16", WFS_DTYPE_I16 },
		{ "uint16", WFS_DTYPE_U16 },
		{ "float16", WFS_DTYPE_F16 },
		{ "bfloat16", WFS_DTYPE_BF16 },
		{ "int32", WFS_DTYPE_I32 },
		{ "uint32", WFS_DTYPE_U32 },
		{ "float32", WFS_DTYPE_F32 },
		{ "float64", WFS_DTYPE_F64 },
		{ "int64", WFS_DTYPE_I64 },
		{ "uint64", WFS_DTYPE_U64 },
		{ "complex64", WFS_DTYPE_C64 },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(map[i].torch, name))
			return (int)map[i].dtype;
	return -1;
}

static void check_one(const struct wfs_model *m, const char *name,
		      struct json_object *want)
{
	const struct wfs_tensor *t = wfs_model_find(m, name);
	struct json_object *dtype, *shape, *sha;
	char hex[DIGEST_HEX_MAX];
	void *buf;
	size_t idx;

	CHECK(t, "tensor %s missing", name);
	CHECK(json_object_object_get_ex(want, "dtype", &dtype));
	CHECK(json_object_object_get_ex(want, "shape", &shape));
	CHECK(json_object_object_get_ex(want, "sha256", &sha));
	CHECK((int)t->dtype == dtype_from_torch(json_object_get_string(dtype)),
	      "%s: dtype %s, expected %s", name, wfs_dtype_name(t->dtype),
	      json_object_get_string(dtype));
	CHECK(t->ndim == json_object_array_length(shape));
	for (unsigned k = 0; k < t->ndim; k++)
		CHECK(t->shape[k] ==
		      (uint64_t)json_object_get_int64(
			      json_object_array_get_idx(shape, k)));
	idx = (size_t)(t - wfs_model_tensor(m, 0));
	buf = malloc(t->nbytes + 1);
	CHECK(buf);
	CHECK(wfs_model_read(m, idx, 0, buf, t->nbytes) == 0);
	CHECK(digest_buf(DIGEST_SHA256, buf, t->nbytes, hex) == 0);
	free(buf);
	CHECK(!strcmp(hex, json_object_get_string(sha)),
	      "%s: sha256 %s, expected %s", name, hex,
	      json_object_get_string(sha));
}

void check_tensors(const struct wfs_model *m, struct json_object *expected,
		   const char *const *files)
{
	struct json_object *all, *file;
	size_t n = 0;

	CHECK(json_object_object_get_ex(expected, "files", &all));
	for (; *files; files++) {
		CHECK(json_object_object_get_ex(all, *files, &file));
		json_object_object_foreach(file, name, want)
		{
			if (!strcmp(name, "__metadata__"))
				continue;
			check_one(m, name, want);
			n++;
		}
	}
	CHECK(wfs_model_tensor_count(m) == n);
}
