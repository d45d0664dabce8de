/* The loader's CUDA paths against the CUDA runtime stand-in (tests/cuda):
 * odd sizes and offsets, 2 to 16 threads, chunks of 64 KiB to 8 MiB,
 * O_DIRECT on and off, alignments past the runtime's 256 bytes, every
 * injected failure (a clear error, nothing left allocated, staging never
 * reused while a copy from it is pending: the stand-in aborts if it is),
 * two devices (loading to cuda:1 makes no context on device 0) and a
 * driver older than the runtime.
 *
 * Each scenario runs in a child process (this program again, with the
 * scenario's name and its CUDA_STANDIN_* environment), so one that makes
 * the stand-in abort fails alone and the others still run. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "loader_test_util.h"
#include "standin.h"

#define NT 36

static char model_path[] = "/tmp/wfs-test-standin-XXXXXX";
/* The same tensors, every byte inverted: a load after a failed one puts
 * other bytes in the staging, so a copy still pending from it is seen. */
static char model2_path[] = "/tmp/wfs-test-standin2-XXXXXX";
static uint64_t sizes[NT], total;
static unsigned char *data;

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A model of U8 tensors of odd sizes (0, 1, 7 bytes, up to 1.5 MiB) at odd
 * offsets in the file, about 20 MiB: every chunk size splits some. */
static void make_model(void)
{
	char *json = malloc(NT * 128 + 16);
	uint64_t seed = 7;
	unsigned char pre[8];
	size_t jl = 0;
	int fd = mkstemp(model_path);

	CHECK(fd >= 0 && json);
	jl += (size_t)sprintf(json + jl, "{");
	for (int i = 0; i < NT; i++) {
		sizes[i] = i % 9 == 0 ? 0
			   : i == 1   ? 1
			   : i == 2   ? 7
				      : next_rand(&seed) % (1536 * 1024) + 1;
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
	while (jl % 8 != 3) /* the data starts at an odd offset */
		json[jl++] = ' ';
	data = malloc(total);
	CHECK(data);
	for (uint64_t i = 0; i < total; i++)
		data[i] = (unsigned char)next_rand(&seed);
	for (int i = 0; i < 8; i++)
		pre[i] = (unsigned char)((uint64_t)jl >> (8 * i));
	CHECK(write(fd, pre, 8) == 8);
	CHECK(write(fd, json, jl) == (ssize_t)jl);
	CHECK(write(fd, data, total) == (ssize_t)total);
	close(fd);
	fd = mkstemp(model2_path);
	CHECK(fd >= 0);
	for (uint64_t i = 0; i < total; i++)
		data[i] ^= 0xff;
	CHECK(write(fd, pre, 8) == 8);
	CHECK(write(fd, json, jl) == (ssize_t)jl);
	CHECK(write(fd, data, total) == (ssize_t)total);
	close(fd);
	for (uint64_t i = 0; i < total; i++)
		data[i] ^= 0xff;
	free(json);
}

/* Every tensor of the loaded model, read back, is the file's bytes. */
static void check_model2(const struct wfs_model *m, size_t align,
			 unsigned char x)
{
	unsigned char *buf = malloc(1536 * 1024 + 1);
	uint64_t off = 0;

	CHECK(buf);
	CHECK_EQ(wfs_model_tensor_count(m), NT);
	for (int i = 0; i < NT; i++) {
		const struct wfs_tensor *t = wfs_model_tensor(m, (size_t)i);

		CHECK_EQ(t->nbytes, sizes[i]);
		if (t->nbytes) {
			CHECK(cudaStandinIsDevice(t->data));
			CHECK((uintptr_t)t->data % align == 0,
			      "tensor %d at %p, not aligned to %zu", i, t->data,
			      align);
		}
		CHECK(wfs_model_read(m, (size_t)i, 0, buf, t->nbytes) == 0);
		for (uint64_t j = 0; j < t->nbytes; j++)
			CHECK(buf[j] == (data[off + j] ^ x), "tensor %d", i);
		off += sizes[i];
	}
	free(buf);
}

static void check_model(const struct wfs_model *m, size_t align)
{
	check_model2(m, align, 0);
}

static int load(struct wfs_model **ret, const struct wfs_load_opts *o)
{
	CHECK(wfs_model_open(model_path, ret) == 0);
	return wfs_model_load(*ret, o);
}

static void no_leaks(void)
{
	char msg[256];

	wfs_release_staging();
	CHECK(cudaStandinLeaks(msg, sizeof(msg)) == 0, "left: %s", msg);
}

/* --- scenarios --- */

static void matrix(void)
{
	static const unsigned threads[] = { 2, 5, 16 };
	static const size_t chunks[] = { 64 << 10, 1 << 20, 8 << 20 };

	for (size_t t = 0; t < 3; t++)
		for (size_t c = 0; c < 3; c++)
			for (int d = 0; d < 2; d++) {
				struct wfs_load_opts o;
				struct wfs_model *m;

				wfs_load_opts_init(&o, sizeof(o));
				o.device = 0;
				o.threads = threads[t];
				o.chunk_bytes = chunks[c];
				o.staging_bytes = 2 * threads[t] * chunks[c];
				o.direct_io = d ? WFS_DIRECT_IO_ALWAYS
						: WFS_DIRECT_IO_NEVER;
				CHECK(load(&m, &o) == 0,
				      "threads %u chunk %zu direct %d",
				      threads[t], chunks[c], d);
				CHECK(wfs_model_stats(m)->staging_bytes > 0);
				check_model(m, 256);
				wfs_model_free(m);
			}
	no_leaks();
}

static void dtypes(void)
{
	static const char *const files[] = { "dtypes.safetensors", NULL };
	struct json_object *expected = expected_load();
	struct wfs_load_opts o;
	struct wfs_model *m;
	char path[4200];

	snprintf(path, sizeof(path), "%s/dtypes.safetensors", fixtures_dir());
	for (int v = 0; v < 3; v++) {
		wfs_load_opts_init(&o, sizeof(o));
		o.device = 0;
		o.threads = v ? 3 : 1;
		o.chunk_bytes = v == 2 ? 64 << 10 : 0;
		o.direct_io = v == 1 ? WFS_DIRECT_IO_ALWAYS : 0;
		CHECK(wfs_model_open(path, &m) == 0);
		CHECK(wfs_model_load(m, &o) == 0);
		check_tensors(m, expected, files);
		wfs_model_free(m);
	}
	json_object_put(expected);
	no_leaks();
}

/* The API accepts alignments up to 1 GiB; cudaMalloc gives 256. */
static void alignment(void)
{
	static const size_t aligns[] = { 512, 4096, 1 << 20 };

	for (size_t a = 0; a < 3; a++) {
		struct wfs_load_opts o;
		struct wfs_model *m;

		wfs_load_opts_init(&o, sizeof(o));
		o.device = 0;
		o.threads = 4;
		o.alignment = aligns[a];
		CHECK(load(&m, &o) == 0);
		check_model(m, aligns[a]);
		wfs_model_free(m);
	}
	no_leaks();
}

/* One injected failure (the environment says which): the load fails with
 * a message naming CUDA, or (EXPECT_OK=1) succeeds by a fallback; then a
 * clean load reuses the kept staging and is right; nothing is left. With
 * KEEPS_STAGING=1 the failure left the loader unsure whether copies from
 * its staging were done: it must abandon that staging (one pinned range
 * left), never reuse it. */
static void inject(void)
{
	const char *ok = getenv("EXPECT_OK");
	const char *keeps = getenv("KEEPS_STAGING");
	const char *threads = getenv("THREADS");
	bool own_dest = !getenv("CUDA_STANDIN_FAIL_MALLOC");
	struct wfs_load_opts o;
	struct wfs_model *m;
	void *dest = NULL, *dest2 = NULL;
	char msg[256];
	int r;

	wfs_load_opts_init(&o, sizeof(o));
	o.device = 0;
	/* One thread where others' waits would hide its missing one. */
	o.threads = threads ? (unsigned)atoi(threads) : 4;
	o.chunk_bytes = 64 << 10;
	o.staging_bytes = 8 * (64 << 10);
	CHECK(wfs_model_open(model_path, &m) == 0);
	/* A destination of the caller's (as weightfs.torch passes): no
	 * cudaFree on the error path synchronizes the device for the
	 * loader. */
	if (own_dest) {
		o.dest_bytes = wfs_model_alloc_size(m, 0);
		CHECK(cudaMalloc(&dest, o.dest_bytes) == cudaSuccess);
		o.dest = dest;
	}
	r = wfs_model_load(m, &o);
	if (ok && !strcmp(ok, "1")) {
		CHECK(r == 0);
		check_model(m, 256);
	} else {
		CHECK(r < 0, "the injected failure went unnoticed");
		CHECK(strstr(wfs_last_error(), "CUDA"), "unclear error: %s",
		      wfs_last_error());
		CHECK(!wfs_model_data(m, NULL));
		printf("error (as expected): %s\n", wfs_last_error());
	}
	wfs_model_free(m);
	/* No more failures: the next load takes the kept staging, if any,
	 * and reads other bytes into it; a copy still pending from it
	 * would see its source change (the stand-in aborts). */
	for (int k = 0; k < 8; k++) {
		static const char *const vars[] = {
			"CUDA_STANDIN_FAIL_MEMCPY",
			"CUDA_STANDIN_FAIL_EVENT_RECORD",
			"CUDA_STANDIN_FAIL_HOST_REGISTER",
			"CUDA_STANDIN_FAIL_MALLOC",
			"CUDA_STANDIN_FAIL_HOST_ALLOC",
			"CUDA_STANDIN_FAIL_EVENT_SYNC",
			"CUDA_STANDIN_FAIL_STREAM_SYNC",
			"CUDA_STANDIN_FAIL_STREAM_CREATE",
		};
		unsetenv(vars[k]);
	}
	cudaStandinReset();
	/* Another destination: where a wait failed, copies of the failed
	 * load may still land in the first (on a GPU such an error is
	 * sticky: the context is lost, and with it the memory). */
	if (own_dest) {
		CHECK(cudaMalloc(&dest2, o.dest_bytes) == cudaSuccess);
		o.dest = dest2;
	}
	CHECK(wfs_model_open(model2_path, &m) == 0);
	CHECK(wfs_model_load(m, &o) == 0);
	check_model2(m, 256, 0xff);
	wfs_model_free(m);
	CHECK(cudaFree(dest) == cudaSuccess);
	CHECK(cudaFree(dest2) == cudaSuccess);
	wfs_release_staging();
	r = cudaStandinLeaks(msg, sizeof(msg));
	if (keeps && !strcmp(keeps, "1"))
		CHECK(r == 1 && strstr(msg, "1 pinned"),
		      "staging should be abandoned, not freed: %s", msg);
	else
		CHECK(r == 0, "left: %s", msg);
}

static void *load_to_1(void *arg)
{
	static const char *const files[] = { "tiny-llama/model.safetensors",
					     NULL };
	struct json_object *expected = arg;
	struct wfs_load_opts o;
	struct wfs_model *m;
	char path[4200];

	snprintf(path, sizeof(path), "%s/tiny-llama", fixtures_dir());
	wfs_load_opts_init(&o, sizeof(o));
	o.device = 1;
	o.threads = 3;
	CHECK(wfs_model_open(path, &m) == 0);
	CHECK(wfs_model_load(m, &o) == 0);
	check_tensors(m, expected, files);
	wfs_model_free(m);
	wfs_release_staging();
	return NULL;
}

/* Two devices: a load to cuda:1 from a thread that never chose a device
 * makes no context on device 0 (its save/restore of the "current" device,
 * 0 on a fresh thread, used to); a thread on device 1 that loads to
 * device 0 is on device 1 after, and frees the model without a cudaFree
 * of device 0 memory while device 1 is current. */
static void two_devices(void)
{
	struct json_object *expected = expected_load();
	struct wfs_load_opts o;
	struct wfs_model *m;
	pthread_t tid;
	int dev = -1;

	CHECK(pthread_create(&tid, NULL, load_to_1, expected) == 0);
	CHECK(pthread_join(tid, NULL) == 0);
	CHECK_EQ(cudaStandinContexts(), 1u << 1);

	CHECK(cudaSetDevice(1) == cudaSuccess);
	wfs_load_opts_init(&o, sizeof(o));
	o.device = 0;
	CHECK(load(&m, &o) == 0);
	CHECK(cudaGetDevice(&dev) == cudaSuccess && dev == 1);
	check_model(m, 256);
	CHECK(cudaGetDevice(&dev) == cudaSuccess && dev == 1);
	wfs_model_free(m);
	CHECK(cudaGetDevice(&dev) == cudaSuccess && dev == 1);
	json_object_put(expected);
	no_leaks();
}

/* A driver older than the runtime is an error that says so, not "no
 * device" (which the GPU tests take for a skip). */
static void old_driver(void)
{
	struct wfs_load_opts o;
	struct wfs_model *m;
	int r;

	wfs_load_opts_init(&o, sizeof(o));
	o.device = 0;
	r = load(&m, &o);
	CHECK(r < 0 && r != -ENODEV && r != -EOPNOTSUPP, "got %d", r);
	CHECK(strstr(wfs_last_error(), "driver"), "%s", wfs_last_error());
	printf("error (as expected): %s\n", wfs_last_error());
	wfs_model_free(m);
}

static void no_device(void)
{
	struct wfs_load_opts o;
	struct wfs_model *m;

	wfs_load_opts_init(&o, sizeof(o));
	o.device = 0;
	CHECK(load(&m, &o) == -ENODEV);
	wfs_model_free(m);
}

/* The stand-in itself: each misuse it is there to catch aborts (a check
 * that never fires would prove nothing). */
static void misuse_dst(void)
{
	static char host[4096], src[4096];
	cudaStream_t s;

	CHECK(cudaStreamCreateWithFlags(&s, 1) == cudaSuccess);
	cudaMemcpyAsync(host, src, sizeof(src), cudaMemcpyHostToDevice, s);
}

/* An injected failure (CUDA_STANDIN_FAIL_EVENT_RECORD=1): copies queued
 * in the next CUDA_STANDIN_STALL_MS wait that long, surely pending. */
static void stall(cudaStream_t s)
{
	cudaEvent_t e;

	CHECK(cudaEventCreateWithFlags(&e, 0) == cudaSuccess);
	CHECK(cudaEventRecord(e, s) != cudaSuccess);
}

static void misuse_src_changed(void)
{
	cudaStream_t s;
	void *dst, *src;

	CHECK(cudaStreamCreateWithFlags(&s, 1) == cudaSuccess);
	stall(s);
	CHECK(cudaMalloc(&dst, 1 << 20) == cudaSuccess);
	CHECK(cudaHostAlloc(&src, 1 << 20, 0) == cudaSuccess);
	memset(src, 1, 1 << 20);
	CHECK(cudaMemcpyAsync(dst, src, 1 << 20, cudaMemcpyHostToDevice, s) ==
	      cudaSuccess);
	memset(src, 2, 1 << 20); /* before the copy is done */
	cudaStreamSynchronize(s);
}

static void misuse_unregister_pending(void)
{
	cudaStream_t s;
	void *dst, *src;

	CHECK(posix_memalign(&src, 4096, 1 << 20) == 0);
	CHECK(cudaStreamCreateWithFlags(&s, 1) == cudaSuccess);
	stall(s);
	CHECK(cudaMalloc(&dst, 1 << 20) == cudaSuccess);
	CHECK(cudaHostRegister(src, 1 << 20, 0) == cudaSuccess);
	CHECK(cudaMemcpyAsync(dst, src, 1 << 20, cudaMemcpyHostToDevice, s) ==
	      cudaSuccess);
	cudaHostUnregister(src); /* while the copy is pending */
}

static void misuse_stream_device(void)
{
	cudaStream_t s;
	void *dst, *src;

	CHECK(cudaSetDevice(0) == cudaSuccess);
	CHECK(cudaStreamCreateWithFlags(&s, 1) == cudaSuccess);
	CHECK(cudaMalloc(&dst, 4096) == cudaSuccess);
	CHECK(cudaHostAlloc(&src, 4096, 0) == cudaSuccess);
	CHECK(cudaSetDevice(1) == cudaSuccess);
	cudaMemcpyAsync(dst, src, 4096, cudaMemcpyHostToDevice, s);
}

static void misuse_free_other_device(void)
{
	void *p;

	CHECK(cudaSetDevice(1) == cudaSuccess);
	CHECK(cudaMalloc(&p, 4096) == cudaSuccess);
	CHECK(cudaSetDevice(0) == cudaSuccess);
	cudaFree(p);
}

static void misuse_context(void)
{
	int n;

	CHECK(cudaGetDeviceCount(&n) == cudaSuccess && n == 2);
	CHECK(cudaSetDevice(1) == cudaSuccess);
	CHECK(cudaSetDevice(0) == cudaSuccess); /* forbidden */
}

static void misuse_leak(void)
{
	void *p;

	CHECK(cudaMalloc(&p, 4096) == cudaSuccess);
}

static const struct scenario {
	const char *name;
	void (*fn)(void);
	const char *env; /* NAME=VALUE ... for the child */
	bool aborts;	 /* the stand-in must abort it */
} scenarios[] = {
	{ "matrix", matrix, "" },
	{ "dtypes", dtypes, "" },
	{ "alignment", alignment, "" },
	{ "memcpy-first", inject, "CUDA_STANDIN_FAIL_MEMCPY=1" },
	{ "memcpy-mid", inject, "CUDA_STANDIN_FAIL_MEMCPY=40" },
	{ "memcpy-all-after", inject, "CUDA_STANDIN_FAIL_MEMCPY=20+" },
	{ "event-record", inject,
	  "CUDA_STANDIN_FAIL_EVENT_RECORD=3 THREADS=1" },
	{ "event-record-4", inject, "CUDA_STANDIN_FAIL_EVENT_RECORD=3" },
	{ "event-record-all", inject,
	  "CUDA_STANDIN_FAIL_EVENT_RECORD=2+ THREADS=1" },
	{ "event-record-and-stream-sync", inject,
	  "CUDA_STANDIN_FAIL_EVENT_RECORD=3 CUDA_STANDIN_FAIL_STREAM_SYNC=1+ "
	  "KEEPS_STAGING=1" },
	{ "event-sync", inject,
	  "CUDA_STANDIN_FAIL_EVENT_SYNC=5+ KEEPS_STAGING=1" },
	{ "malloc", inject, "CUDA_STANDIN_FAIL_MALLOC=1" },
	{ "host-register", inject,
	  "CUDA_STANDIN_FAIL_HOST_REGISTER=1+ EXPECT_OK=1" },
	{ "host-register-and-alloc", inject,
	  "CUDA_STANDIN_FAIL_HOST_REGISTER=1+ CUDA_STANDIN_FAIL_HOST_ALLOC=1" },
	{ "stream-create", inject, "CUDA_STANDIN_FAIL_STREAM_CREATE=3" },
	{ "two-devices", two_devices, "CUDA_STANDIN_DEVICES=2" },
	{ "old-driver", old_driver, "CUDA_STANDIN_DRIVER=old" },
	{ "no-device", no_device, "CUDA_STANDIN_DEVICES=0" },
	{ "stand-in: dst not device", misuse_dst, "", true },
	{ "stand-in: src changed", misuse_src_changed,
	  "CUDA_STANDIN_FAIL_EVENT_RECORD=1", true },
	{ "stand-in: unregister pending", misuse_unregister_pending,
	  "CUDA_STANDIN_FAIL_EVENT_RECORD=1", true },
	{ "stand-in: stream of device 0 on 1", misuse_stream_device,
	  "CUDA_STANDIN_DEVICES=2", true },
	{ "stand-in: free with other device", misuse_free_other_device,
	  "CUDA_STANDIN_DEVICES=2", true },
	{ "stand-in: forbidden context", misuse_context,
	  "CUDA_STANDIN_DEVICES=2 CUDA_STANDIN_NO_CONTEXT=0", true },
	{ "stand-in: leak at exit", misuse_leak, "CUDA_STANDIN_LEAKCHECK=1",
	  true },
};

static void remove_model(void)
{
	unlink(model_path);
	unlink(model2_path);
}

static int run_child(const struct scenario *s, const char *self)
{
	pid_t pid = fork();
	int st;

	CHECK(pid >= 0);
	if (pid == 0) {
		char env[512], *save = NULL;

		snprintf(env, sizeof(env), "%s", s->env);
		for (char *kv = strtok_r(env, " ", &save); kv;
		     kv = strtok_r(NULL, " ", &save))
			putenv(strdup(kv));
		/* Copies take long enough for a reuse to be seen; after an
		 * injected failure, those pending wait 300 ms more. */
		setenv("CUDA_STANDIN_DELAY_US",
		       strstr(s->name, "matrix") ? "100" : "1000", 0);
		setenv("CUDA_STANDIN_STALL_MS", "300", 0);
		{
			char idx[16];

			snprintf(idx, sizeof(idx), "%d", (int)(s - scenarios));
			execl(self, self, idx, (char *)NULL);
		}
		_exit(127);
	}
	CHECK(waitpid(pid, &st, 0) == pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	char self[4096];
	ssize_t n;
	int failed = 0;

	fixtures_dir();
	if (argc == 2) {
		size_t i = strtoul(argv[1], NULL, 10);

		CHECK(i < sizeof(scenarios) / sizeof(*scenarios));
		make_model();
		atexit(remove_model);
		scenarios[i].fn();
		free(data);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	CHECK(n > 0);
	self[n] = 0;
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(*scenarios); i++) {
		int r;

		fflush(NULL);
		r = run_child(&scenarios[i], self);
		/* killed by SIGABRT (134), or ASan's exit on an abort */
		if (scenarios[i].aborts)
			r = r == 0 || r == 1;
		printf("%-36s %s\n", scenarios[i].name, r ? "FAIL" : "ok");
		if (r) {
			printf("  (exit %d; environment: %s)\n", r,
			       scenarios[i].env);
			failed++;
		}
	}
	CHECK(failed == 0, "%d scenarios failed", failed);
	printf("ok\n");
	return 0;
}
