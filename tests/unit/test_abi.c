/* The ABI of the shared libweightfs, as a caller compiled against another
 * version of weightfs.h sees it: wfs_load_opts_init() writes the caller's
 * size and never more (an older, smaller struct with a canary after it is
 * not overrun), wfs_model_load() reads only what the caller's struct_size
 * says, and a newer caller's unknown fields are refused, not ignored.
 * Links libweightfs.so itself, not the static core. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weightfs.h>

#include "check.h"

#define CANARY 0x5a5a5a5a5a5a5a5aULL

/* struct wfs_load_opts as an older header had it: its first fields only. */
struct old_load_opts {
	size_t struct_size;
	int device;
	unsigned threads;
	size_t staging_bytes;
};

/* A caller's struct followed by a guard word, as on its stack. */
struct old_guarded {
	struct old_load_opts o;
	uint64_t canary[4];
};

/* struct wfs_load_opts as a newer header might have it: one more field. */
struct new_load_opts {
	struct wfs_load_opts o;
	uint64_t future_field;
};

/* A one-tensor safetensors file (F32 [4] = 1, 2, 3, 4) in a temp dir. */
static char *write_model(void)
{
	static char path[] = "/tmp/wfs-test-abi-XXXXXX";
	const char hdr[] = "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],"
			   "\"data_offsets\":[0,16]}}";
	float data[4] = { 1, 2, 3, 4 };
	uint64_t n = sizeof(hdr) - 1;
	int fd = mkstemp(path);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w");

	if (!f || fwrite(&n, 8, 1, f) != 1 || fwrite(hdr, n, 1, f) != 1 ||
	    fwrite(data, sizeof(data), 1, f) != 1 || fclose(f)) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	return path;
}

static int load_and_read(const char *path, const struct wfs_load_opts *o,
			 float *ret)
{
	struct wfs_model *m;
	int r = wfs_model_open(path, &m);

	if (r < 0)
		return r;
	r = wfs_model_load(m, o);
	if (!r)
		r = wfs_model_read(m, 0, 0, ret, 4 * sizeof(float));
	wfs_model_free(m);
	return r;
}

static void test_older_struct(const char *path)
{
	struct old_guarded g;
	float out[4] = { 0 };
	int r;

	memset(&g, 0xa5, sizeof(g));
	for (int i = 0; i < 4; i++)
		g.canary[i] = CANARY;
	r = wfs_load_opts_init((struct wfs_load_opts *)&g.o, sizeof(g.o));
	CHECK(r == 0, "init of an older struct: %d", r);
	for (int i = 0; i < 4; i++)
		CHECK(g.canary[i] == CANARY,
		      "canary %d after an older struct overwritten: %#llx", i,
		      (unsigned long long)g.canary[i]);
	CHECK(g.o.struct_size == sizeof(g.o), "struct_size %zu, not %zu",
	      g.o.struct_size, sizeof(g.o));
	CHECK(g.o.device == WFS_DEVICE_CPU, "device %d", g.o.device);
	CHECK(g.o.threads == 0 && g.o.staging_bytes == 0,
	      "defaults not zero: %u %zu", g.o.threads, g.o.staging_bytes);

	/* The library reads only the older fields: the 0xa5 canary words
	 * after them are not taken for chunk_bytes, alignment... */
	g.o.threads = 1;
	r = load_and_read(path, (struct wfs_load_opts *)&g.o, out);
	CHECK(r == 0, "load with an older struct: %d (%s)", r,
	      wfs_last_error());
	CHECK(out[0] == 1 && out[3] == 4, "wrong data %g %g", out[0], out[3]);
	for (int i = 0; i < 4; i++)
		CHECK(g.canary[i] == CANARY, "canary %d after load", i);
}

static void test_too_small(void)
{
	unsigned char buf[64];
	int r;

	memset(buf, 0xa5, sizeof(buf));
	r = wfs_load_opts_init((struct wfs_load_opts *)buf, sizeof(size_t));
	CHECK(r == -EINVAL, "a struct without device: %d, not -EINVAL", r);
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i] != 0xa5) {
			CHECK(0, "byte %zu written on -EINVAL", i);
			break;
		}
	CHECK(wfs_load_opts_init(NULL, sizeof(struct wfs_load_opts)) == -EINVAL,
	      "NULL accepted");
}

static void test_current_struct(const char *path)
{
	struct wfs_load_opts o;
	float out[4] = { 0 };
	int r;

	memset(&o, 0xa5, sizeof(o));
	CHECK(wfs_load_opts_init(&o, sizeof(o)) == 0, "init");
	CHECK(o.struct_size == sizeof(o) && o.device == WFS_DEVICE_CPU &&
		      o.dest == NULL && o.progress == NULL &&
		      o.chunk_bytes == 0,
	      "defaults wrong");
	r = load_and_read(path, &o, out);
	CHECK(r == 0 && out[1] == 2, "load: %d", r);
	/* Uninitialized (struct_size 0) is refused. */
	memset(&o, 0, sizeof(o));
	r = load_and_read(path, &o, out);
	CHECK(r == -EINVAL, "uninitialized opts: %d, not -EINVAL", r);
}

static void test_newer_struct(const char *path)
{
	struct new_load_opts n;
	float out[4] = { 0 };
	int r;

	memset(&n, 0xa5, sizeof(n));
	CHECK(wfs_load_opts_init(&n.o, sizeof(n)) == 0, "init newer");
	CHECK(n.o.struct_size == sizeof(n), "struct_size %zu", n.o.struct_size);
	CHECK(n.future_field == 0, "unknown tail not zeroed");
	r = load_and_read(path, &n.o, out);
	CHECK(r == 0, "newer struct at defaults: %d (%s)", r, wfs_last_error());
	n.future_field = 1;
	r = load_and_read(path, &n.o, out);
	CHECK(r == -EINVAL, "an unknown field set: %d, not -EINVAL", r);
	CHECK(strstr(wfs_last_error(), "does not know") != NULL, "message: %s",
	      wfs_last_error());
}

static void test_version(void)
{
	char v[32];

	snprintf(v, sizeof(v), "%d.%d.%d", WFS_VERSION_MAJOR, WFS_VERSION_MINOR,
		 WFS_VERSION_PATCH);
	CHECK(!strcmp(v, WFS_VERSION_STRING), "%s vs %s", v,
	      WFS_VERSION_STRING);
	CHECK(!strcmp(wfs_version_string(), WFS_VERSION_STRING),
	      "library %s, header %s", wfs_version_string(),
	      WFS_VERSION_STRING);
	CHECK(wfs_version_number() == WFS_VERSION_NUMBER, "number %u",
	      wfs_version_number());
}

int main(void)
{
	char *path = write_model();

	test_version();
	test_older_struct(path);
	test_too_small();
	test_current_struct(path);
	test_newer_struct(path);
	unlink(path);
	return 0;
}
