/* Selections and the streaming iterator through the public API, on a
 * small file written here: shards along dims 0 and 1 join to the whole
 * tensors, packed splits are refused, the iterator yields every tensor's
 * bytes in load order through a buffer smaller than the model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loader_test_util.h"

#define ROWS 8
#define COLS 16

/* Tensors: "a" U16 [8, 16], "b" F4 [8, 16], "n" F32 [16]. */
static unsigned char a_bytes[ROWS * COLS * 2], b_bytes[ROWS * COLS / 2],
	n_bytes[16 * 4];

static void write_file(const char *path)
{
	char hdr[512];
	FILE *f = fopen(path, "wb");
	size_t ab = sizeof(a_bytes), bb = sizeof(b_bytes), nb = sizeof(n_bytes);
	uint64_t len;
	int n;

	for (size_t i = 0; i < ab; i++)
		a_bytes[i] = (unsigned char)(i * 7 + 1);
	for (size_t i = 0; i < bb; i++)
		b_bytes[i] = (unsigned char)(i * 13 + 5);
	for (size_t i = 0; i < nb; i++)
		n_bytes[i] = (unsigned char)(i * 3);
	n = snprintf(hdr, sizeof(hdr),
		     "{\"a\":{\"dtype\":\"U16\",\"shape\":[8,16],"
		     "\"data_offsets\":[0,%zu]},"
		     "\"b\":{\"dtype\":\"F4\",\"shape\":[8,16],"
		     "\"data_offsets\":[%zu,%zu]},"
		     "\"n\":{\"dtype\":\"F32\",\"shape\":[16],"
		     "\"data_offsets\":[%zu,%zu]}}",
		     ab, ab, ab + bb, ab + bb, ab + bb + nb);
	CHECK(f && n > 0 && (size_t)n < sizeof(hdr));
	len = (uint64_t)n;
	CHECK(fwrite(&len, 8, 1, f) == 1);
	CHECK(fwrite(hdr, 1, (size_t)n, f) == (size_t)n);
	CHECK(fwrite(a_bytes, 1, ab, f) == ab);
	CHECK(fwrite(b_bytes, 1, bb, f) == bb);
	CHECK(fwrite(n_bytes, 1, nb, f) == nb);
	CHECK(fclose(f) == 0);
}

/* Load shard @rank of @world along @dim of every tensor into @out (the
 * whole layout: row r of shard k at its place in the full tensor). */
static void load_shard(const char *path, unsigned dim, unsigned rank,
		       unsigned world)
{
	struct wfs_model *m;
	struct wfs_select *s;
	const struct wfs_tensor *t;

	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_select_new(&s) == 0);
	CHECK(wfs_select_shard(s, "*", dim, rank, world) == 0);
	CHECK(wfs_model_select(m, s) == 0);
	wfs_select_free(s);
	CHECK(wfs_model_load(m, NULL) == 0);
	CHECK(wfs_model_tensor_count(m) == 3);
	t = wfs_model_find(m, "a");
	CHECK(t && t->shape[dim] == (dim ? COLS : ROWS) / world);
	for (unsigned r = 0; r < t->shape[0]; r++) {
		unsigned row = dim ? r : rank * ROWS / world + r;
		size_t w = t->shape[1] * 2, col = dim ? rank * w : 0;

		CHECK(!memcmp((char *)t->data + r * w,
			      a_bytes + row * COLS * 2 + col, w));
	}
	t = wfs_model_find(m, "b");
	CHECK(t && t->nbytes == sizeof(b_bytes) / world);
	for (unsigned r = 0; r < t->shape[0]; r++) {
		unsigned row = dim ? r : rank * ROWS / world + r;
		size_t w = t->shape[1] / 2, col = dim ? rank * w : 0;

		CHECK(!memcmp((char *)t->data + r * w,
			      b_bytes + row * COLS / 2 + col, w));
	}
	/* "n" has one dim: whole under a dim-1 rule, cut under dim 0. */
	t = wfs_model_find(m, "n");
	CHECK(t &&
	      t->nbytes == (dim ? sizeof(n_bytes) : sizeof(n_bytes) / world));
	CHECK(!memcmp(t->data, n_bytes + (dim ? 0 : rank * t->nbytes),
		      t->nbytes));
	CHECK(wfs_model_stats(m)->bytes ==
	      sizeof(a_bytes) / world + sizeof(b_bytes) / world +
		      (dim ? sizeof(n_bytes) : sizeof(n_bytes) / world));
	wfs_model_free(m);
}

static void test_refusals(const char *path)
{
	struct wfs_model *m;
	struct wfs_select *s;

	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_select_new(&s) == 0);
	/* 16 F4 columns over 16 shards: half a byte each. */
	CHECK(wfs_select_shard(s, "b", 1, 0, 16) == 0);
	CHECK(wfs_model_select(m, s) == -EINVAL);
	CHECK(strstr(wfs_last_error(), "split a byte"));
	CHECK(wfs_model_tensor_count(m) == 3);
	wfs_select_free(s);
	CHECK(wfs_select_new(&s) == 0);
	CHECK(wfs_select_shard(s, "x", 0, 2, 2) == -EINVAL);
	CHECK(wfs_select_slice(s, "a", 1, 10, 7) == 0);
	CHECK(wfs_model_select(m, s) == -EINVAL);
	CHECK(strstr(wfs_last_error(), "past"));
	wfs_select_free(s);
	/* Names only, then back to everything. */
	CHECK(wfs_select_new(&s) == 0);
	CHECK(wfs_select_name(s, "[ab]") == 0);
	CHECK(wfs_model_select(m, s) == 0);
	CHECK(wfs_model_tensor_count(m) == 2);
	CHECK(!wfs_model_find(m, "n"));
	CHECK(wfs_model_select(m, s) == 0); /* again, on a selection */
	CHECK(wfs_model_tensor_count(m) == 2);
	wfs_select_free(s);
	CHECK(wfs_model_select(m, NULL) == 0);
	CHECK(wfs_model_tensor_count(m) == 3);
	wfs_model_free(m);
}

static void test_iter(const char *path, size_t group)
{
	const unsigned char *want[] = { a_bytes, b_bytes, n_bytes };
	const char *names[] = { "a", "b", "n" };
	struct wfs_load_opts o;
	const struct wfs_tensor *t;
	struct wfs_model *m;
	struct wfs_iter *it;
	int i = 0, r;

	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_load_opts_init(&o, sizeof(o)) == 0);
	o.staging_bytes = group; /* smaller than the model: several groups */
	CHECK(wfs_iter_new(m, &o, &it) == 0);
	while ((r = wfs_iter_next(it, &t)) == 1) {
		CHECK(i < 3 && !strcmp(t->name, names[i]));
		CHECK(!memcmp(t->data, want[i], t->nbytes));
		i++;
	}
	CHECK(r == 0 && i == 3);
	CHECK(wfs_iter_next(it, &t) == 0);
	wfs_iter_free(it);
	wfs_model_free(m);
}

int main(void)
{
	char path[] = "/tmp/wfs-test-select-XXXXXX";
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
	write_file(path);
	for (unsigned world = 1; world <= 4; world *= 2)
		for (unsigned dim = 0; dim < 2; dim++)
			for (unsigned rank = 0; rank < world; rank++)
				load_shard(path, dim, rank, world);
	test_refusals(path);
	test_iter(path, 1);	  /* the largest tensor per group */
	test_iter(path, 1 << 20); /* one group */
	unlink(path);
	return 0;
}
