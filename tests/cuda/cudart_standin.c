/* A stand-in for the CUDA runtime (libcudart.so.13), for tests on machines
 * without a GPU: the ~20 functions the loader calls, behaving as a GPU would
 * where it matters to the loader, and stricter where a GPU would punish a
 * mistake silently (corrupt tensors, a crash much later).
 *
 * - Device memory is host memory this file tracks; cudaMalloc returns
 *   pointers aligned to 256 bytes and deliberately to no more (what the
 *   runtime guarantees), filled with 0xa5 (not zero).
 * - Each stream is a worker thread that performs queued copies in order,
 *   each after a random delay (0 to CUDA_STANDIN_DELAY_US, default 200 us).
 *   A copy from pageable memory is done at once (the real runtime stages
 *   it before returning); from pinned memory it is queued.
 * - Events are per-stream sequence numbers: recording takes the stream's
 *   count of queued operations, synchronizing waits for its count of done
 *   ones. An event never recorded is complete (as in CUDA).
 * - Contexts: cudaSetDevice and every call that needs a context create
 *   one on the calling thread's current device (a fresh thread's is 0).
 *   cudaStandinContexts() says on which devices one was made;
 *   CUDA_STANDIN_NO_CONTEXT=N aborts when one is made on device N.
 *
 * It aborts (the test fails loudly, with the reason on stderr) on:
 * a source buffer changed while its copy is pending (hashed when queued,
 * again when performed); pinned memory unregistered or freed while a copy
 * from it is pending; a destination that is not inside one allocation of
 * the stream's device; a stream or event used from a thread whose current
 * device is another; cudaFree of memory of another device than the
 * current one (the runtime would create a context on the current device
 * to do it); an unknown stream, event or pointer.
 *
 * Failure injection (read at the first call and by cudaStandinReset()):
 * CUDA_STANDIN_FAIL_<WHAT>=N fails the Nth call of that kind (counted from
 * the first call, or the last reset), N+ that call and every later one;
 * WHAT is MEMCPY (cudaMemcpyAsync), EVENT_RECORD, HOST_REGISTER, MALLOC,
 * HOST_ALLOC, EVENT_SYNC, STREAM_SYNC, STREAM_CREATE. CUDA_STANDIN_DEVICES=N
 * (default 1; 0: cudaErrorNoDevice), CUDA_STANDIN_DRIVER=old (every call
 * fails with cudaErrorInsufficientDriver), CUDA_STANDIN_SEED (delays),
 * CUDA_STANDIN_STALL_MS (after each injected failure, copies pending then
 * are held that long, so that an error path that does not wait for them
 * is caught reusing or unregistering their source), CUDA_STANDIN_TRACE
 * (a line on stderr per injected failure, with the copies pending).
 * CUDA_STANDIN_LEAKCHECK=1: at exit, abort if device memory, pinned
 * memory, streams or events are left (cudaStandinLeaks() says how many).
 */
#include <cuda_runtime_api.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "standin.h"

#define MAX_DEV 8
#define ALLOC_ALIGN 256

enum fail_kind {
	F_MEMCPY,
	F_EVENT_RECORD,
	F_HOST_REGISTER,
	F_MALLOC,
	F_HOST_ALLOC,
	F_EVENT_SYNC,
	F_STREAM_SYNC,
	F_STREAM_CREATE,
	F_COUNT
};
static const char *const fail_env[F_COUNT] = {
	"CUDA_STANDIN_FAIL_MEMCPY",	   "CUDA_STANDIN_FAIL_EVENT_RECORD",
	"CUDA_STANDIN_FAIL_HOST_REGISTER", "CUDA_STANDIN_FAIL_MALLOC",
	"CUDA_STANDIN_FAIL_HOST_ALLOC",	   "CUDA_STANDIN_FAIL_EVENT_SYNC",
	"CUDA_STANDIN_FAIL_STREAM_SYNC",   "CUDA_STANDIN_FAIL_STREAM_CREATE",
};

struct devmem {
	struct devmem *next;
	char *raw;
	char *ptr;
	size_t len;
	int dev;
};

struct pinned {
	struct pinned *next;
	char *ptr;
	size_t len;
	bool registered; /* else from cudaHostAlloc */
};

struct op {
	struct op *next;
	char *dst;
	const char *src;
	size_t len;
	uint64_t hash;
};

struct stream {
	struct stream *next;
	int dev;
	pthread_t tid;
	pthread_cond_t cond; /* work queued, or work done */
	struct op *head, *tail;
	uint64_t queued, done;
	bool stop;
	unsigned seed;
};

struct event {
	struct event *next;
	int dev;
	struct stream *stream; /* of the last record, or NULL */
	uint64_t seq;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool inited;
static int ndev = 1;
static bool old_driver;
static int no_context = -1;
static unsigned delay_us = 200;
static unsigned seed = 1;
static unsigned stall_ms;
static struct timespec stall_until; /* no copy is done before (lock held) */
static long fail_at[F_COUNT];
static bool fail_after[F_COUNT];
static long calls[F_COUNT];
static unsigned contexts; /* bit N: a context was made on device N */
static struct devmem *devmems;
static struct pinned *pinneds;
static struct stream *streams;
static struct stream *zombies; /* destroyed; their threads may still copy */
static struct event *events;

static __thread int cur_dev;
static __thread bool has_ctx;
static __thread cudaError_t last_error;

__attribute__((noreturn, format(printf, 1, 2))) static void
misuse(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "cuda stand-in: misuse a GPU would punish: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(NULL);
	abort();
}

static void read_env(void)
{
	const char *e;

	for (int k = 0; k < F_COUNT; k++) {
		e = getenv(fail_env[k]);
		fail_at[k] = e ? strtol(e, NULL, 10) : 0;
		fail_after[k] = e && strchr(e, '+');
		calls[k] = 0;
	}
	e = getenv("CUDA_STANDIN_DEVICES");
	ndev = e ? atoi(e) : 1;
	if (ndev < 0 || ndev > MAX_DEV)
		ndev = MAX_DEV;
	e = getenv("CUDA_STANDIN_DRIVER");
	old_driver = e && !strcmp(e, "old");
	e = getenv("CUDA_STANDIN_NO_CONTEXT");
	no_context = e && *e ? atoi(e) : -1;
	e = getenv("CUDA_STANDIN_DELAY_US");
	if (e)
		delay_us = (unsigned)atoi(e);
	e = getenv("CUDA_STANDIN_STALL_MS");
	stall_ms = e ? (unsigned)atoi(e) : 0;
	e = getenv("CUDA_STANDIN_SEED");
	seed = e ? (unsigned)atoi(e) : (unsigned)getpid();
}

static void leak_check(void);

/* Called with the lock held. */
static void init_locked(void)
{
	const char *e;

	if (inited)
		return;
	inited = true;
	read_env();
	e = getenv("CUDA_STANDIN_LEAKCHECK");
	if (e && !strcmp(e, "1"))
		atexit(leak_check);
}

static cudaError_t ret(cudaError_t e)
{
	if (e != cudaSuccess)
		last_error = e;
	return e;
}

/* Whether this call of @k fails (lock held). If so, copies pending now
 * wait CUDA_STANDIN_STALL_MS more: a loader that does not wait for them
 * on its error path reuses or frees their source while they are. */
static bool inject(enum fail_kind k)
{
	long n = ++calls[k];

	if (fail_at[k] <= 0 ||
	    (n != fail_at[k] && !(fail_after[k] && n > fail_at[k])))
		return false;
	if (getenv("CUDA_STANDIN_TRACE")) {
		int pend = 0;
		for (struct stream *t = streams; t; t = t->next)
			pend += (int)(t->queued - t->done);
		for (struct stream *t = zombies; t; t = t->next)
			pend += (int)(t->queued - t->done);
		fprintf(stderr, "stand-in: inject %d call %ld, %d pending\n", k,
			n, pend);
	}
	if (stall_ms) {
		clock_gettime(CLOCK_MONOTONIC, &stall_until);
		stall_until.tv_sec += stall_ms / 1000;
		stall_until.tv_nsec += (long)(stall_ms % 1000) * 1000000;
		if (stall_until.tv_nsec >= 1000000000) {
			stall_until.tv_sec++;
			stall_until.tv_nsec -= 1000000000;
		}
	}
	return true;
}

/* The calling thread needs a context on its current device (lock held).
 * @return cudaSuccess or the error every call then returns. */
static cudaError_t need_ctx(void)
{
	init_locked();
	if (old_driver)
		return cudaErrorInsufficientDriver;
	if (!ndev)
		return cudaErrorNoDevice;
	if (!has_ctx) {
		if (cur_dev == no_context)
			misuse("a context created on device %d, which this "
			       "test forbids (CUDA_STANDIN_NO_CONTEXT)",
			       cur_dev);
		contexts |= 1u << cur_dev;
		has_ctx = true;
	}
	return cudaSuccess;
}

static uint64_t hash(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ len, w;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		memcpy(&w, b + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 29;
	}
	for (; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static struct devmem *find_devmem(const void *p, size_t len)
{
	for (struct devmem *d = devmems; d; d = d->next)
		if ((const char *)p >= d->ptr &&
		    (const char *)p < d->ptr + d->len)
			return (size_t)(d->ptr + d->len - (const char *)p) >=
					       len
				       ? d
				       : NULL;
	return NULL;
}

static struct pinned *find_pinned(const void *p, size_t len)
{
	for (struct pinned *q = pinneds; q; q = q->next)
		if ((const char *)p >= q->ptr &&
		    (const char *)p + len <= q->ptr + q->len)
			return q;
	return NULL;
}

static struct stream *find_stream(cudaStream_t s)
{
	for (struct stream *t = streams; t; t = t->next)
		if (t == (struct stream *)s)
			return t;
	misuse("unknown stream %p", (void *)s);
}

static struct event *find_event(cudaEvent_t e)
{
	for (struct event *t = events; t; t = t->next)
		if (t == (struct event *)e)
			return t;
	misuse("unknown event %p", (void *)e);
}

/* No copy from [p, p + len) may be pending (lock held). */
static void check_no_pending_from(const char *p, size_t len, const char *what)
{
	struct stream *lists[2] = { streams, zombies };

	for (int l = 0; l < 2; l++)
		for (struct stream *s = lists[l]; s; s = s->next)
			for (struct op *o = s->head; o; o = o->next)
				if (o->src < p + len && o->src + o->len > p)
					misuse("%s %p while a copy from it is "
					       "pending",
					       what, (void *)p);
}

static void *stream_main(void *arg)
{
	struct stream *s = arg;

	pthread_mutex_lock(&lock);
	for (;;) {
		struct op *o;

		while (!s->head && !s->stop)
			pthread_cond_wait(&s->cond, &lock);
		if (!s->head)
			break;
		o = s->head;
		if (delay_us) {
			struct timespec ts = { 0, (long)(rand_r(&s->seed) %
							 (delay_us + 1)) *
							  1000 };

			pthread_mutex_unlock(&lock);
			nanosleep(&ts, NULL);
			pthread_mutex_lock(&lock);
		}
		/* After an injected failure, also a copy that was about to
		 * be done waits. */
		while (stall_until.tv_sec) {
			struct timespec now, until = stall_until;

			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > until.tv_sec ||
			    (now.tv_sec == until.tv_sec &&
			     now.tv_nsec >= until.tv_nsec))
				break;
			pthread_mutex_unlock(&lock);
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until,
					NULL);
			pthread_mutex_lock(&lock);
		}
		if (hash(o->src, o->len) != o->hash)
			misuse("the source of a pending copy (%p, %zu bytes) "
			       "changed before the copy was done",
			       (const void *)o->src, o->len);
		memcpy(o->dst, o->src, o->len);
		s->head = o->next;
		if (!s->head)
			s->tail = NULL;
		free(o);
		s->done++;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

/* Wait (lock held) until @s has done @seq operations. */
static void wait_done(struct stream *s, uint64_t seq)
{
	while (s->done < seq)
		pthread_cond_wait(&s->cond, &lock);
}

#define ENTER(need)                                                            \
	cudaError_t e_ = cudaSuccess;                                          \
	pthread_mutex_lock(&lock);                                             \
	init_locked();                                                         \
	if (need)                                                              \
		e_ = need_ctx();                                               \
	if (e_ != cudaSuccess) {                                               \
		pthread_mutex_unlock(&lock);                                   \
		return ret(e_);                                                \
	}

#define LEAVE(e)                                                               \
	do {                                                                   \
		cudaError_t r_ = (e);                                          \
		pthread_mutex_unlock(&lock);                                   \
		return ret(r_);                                                \
	} while (0)

cudaError_t cudaGetDeviceCount(int *count)
{
	ENTER(false);
	if (old_driver)
		LEAVE(cudaErrorInsufficientDriver);
	if (!ndev)
		LEAVE(cudaErrorNoDevice);
	*count = ndev;
	LEAVE(cudaSuccess);
}

cudaError_t cudaGetDevice(int *device)
{
	ENTER(false);
	if (old_driver)
		LEAVE(cudaErrorInsufficientDriver);
	if (!ndev)
		LEAVE(cudaErrorNoDevice);
	*device = cur_dev;
	LEAVE(cudaSuccess);
}

cudaError_t cudaSetDevice(int device)
{
	ENTER(false);
	if (old_driver)
		LEAVE(cudaErrorInsufficientDriver);
	if (!ndev)
		LEAVE(cudaErrorNoDevice);
	if (device < 0 || device >= ndev)
		LEAVE(cudaErrorInvalidDevice);
	/* Since CUDA 12, cudaSetDevice makes the primary context. */
	cur_dev = device;
	has_ctx = false;
	LEAVE(need_ctx());
}

cudaError_t cudaDriverGetVersion(int *v)
{
	ENTER(false);
	*v = old_driver ? 12020 : 13000;
	LEAVE(cudaSuccess);
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
	*v = 13000;
	return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
	cudaError_t e = last_error;

	last_error = cudaSuccess;
	return e;
}

cudaError_t cudaPeekAtLastError(void)
{
	return last_error;
}

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess:
		return "no error";
	case cudaErrorInvalidValue:
		return "invalid argument";
	case cudaErrorMemoryAllocation:
		return "out of memory";
	case cudaErrorInsufficientDriver:
		return "CUDA driver version is insufficient for CUDA runtime "
		       "version";
	case cudaErrorNoDevice:
		return "no CUDA-capable device is detected";
	case cudaErrorInvalidDevice:
		return "invalid device ordinal";
	case cudaErrorIllegalAddress:
		return "an illegal memory access was encountered";
	case cudaErrorHostMemoryAlreadyRegistered:
		return "part or all of the requested memory range is already "
		       "mapped";
	case cudaErrorHostMemoryNotRegistered:
		return "pointer does not correspond to a registered memory "
		       "region";
	case cudaErrorLaunchFailure:
		return "unspecified launch failure";
	default:
		return "unknown error (stand-in)";
	}
}

const char *cudaGetErrorName(cudaError_t e)
{
	switch (e) {
	case cudaSuccess:
		return "cudaSuccess";
	case cudaErrorInvalidValue:
		return "cudaErrorInvalidValue";
	case cudaErrorMemoryAllocation:
		return "cudaErrorMemoryAllocation";
	case cudaErrorInsufficientDriver:
		return "cudaErrorInsufficientDriver";
	case cudaErrorNoDevice:
		return "cudaErrorNoDevice";
	case cudaErrorInvalidDevice:
		return "cudaErrorInvalidDevice";
	case cudaErrorLaunchFailure:
		return "cudaErrorLaunchFailure";
	default:
		return "cudaErrorUnknown";
	}
}

cudaError_t cudaMalloc(void **ptr, size_t len)
{
	struct devmem *d;
	size_t size;

	ENTER(true);
	if (inject(F_MALLOC))
		LEAVE(cudaErrorMemoryAllocation);
	d = calloc(1, sizeof(*d));
	/* 256-aligned, and never 512-aligned: what the runtime promises. */
	size = (len + ALLOC_ALIGN + 4095) / 4096 * 4096;
	if (!d || posix_memalign((void **)&d->raw, 4096, size)) {
		free(d);
		LEAVE(cudaErrorMemoryAllocation);
	}
	memset(d->raw, 0xa5, size);
	d->ptr = d->raw + ALLOC_ALIGN;
	d->len = len;
	d->dev = cur_dev;
	d->next = devmems;
	devmems = d;
	*ptr = d->ptr;
	LEAVE(cudaSuccess);
}

cudaError_t cudaFree(void *ptr)
{
	struct devmem **pp, *d;

	if (!ptr)
		return cudaSuccess;
	ENTER(true);
	for (pp = &devmems; *pp && (*pp)->ptr != ptr; pp = &(*pp)->next)
		;
	if (!*pp)
		misuse("cudaFree(%p): not from cudaMalloc", ptr);
	d = *pp;
	if (d->dev != cur_dev)
		misuse("cudaFree of device %d memory with device %d current",
		       d->dev, cur_dev);
	/* cudaFree synchronizes the device first. */
	for (struct stream *s = streams; s; s = s->next)
		if (s->dev == d->dev)
			wait_done(s, s->queued);
	for (struct stream *s = zombies; s; s = s->next)
		if (s->dev == d->dev)
			wait_done(s, s->queued);
	*pp = d->next;
	free(d->raw);
	free(d);
	LEAVE(cudaSuccess);
}

static cudaError_t add_pinned(void *p, size_t len, bool registered)
{
	struct pinned *q = calloc(1, sizeof(*q));

	if (!q)
		return cudaErrorMemoryAllocation;
	q->ptr = p;
	q->len = len;
	q->registered = registered;
	q->next = pinneds;
	pinneds = q;
	return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t len, unsigned int flags)
{
	void *p;

	ENTER(true);
	if (inject(F_HOST_ALLOC) || posix_memalign(&p, 4096, len ? len : 1))
		LEAVE(cudaErrorMemoryAllocation);
	if (add_pinned(p, len, false)) {
		free(p);
		LEAVE(cudaErrorMemoryAllocation);
	}
	*ptr = p;
	LEAVE(cudaSuccess);
}

static cudaError_t drop_pinned(void *ptr, bool registered)
{
	struct pinned **pp, *q;

	for (pp = &pinneds; *pp && (*pp)->ptr != ptr; pp = &(*pp)->next)
		;
	if (!*pp || (*pp)->registered != registered) {
		if (registered)
			return cudaErrorHostMemoryNotRegistered;
		misuse("cudaFreeHost(%p): not from cudaHostAlloc", ptr);
	}
	q = *pp;
	check_no_pending_from(q->ptr, q->len,
			      registered ? "unregistered" : "freed");
	*pp = q->next;
	free(q);
	return cudaSuccess;
}

cudaError_t cudaFreeHost(void *ptr)
{
	cudaError_t e;

	if (!ptr)
		return cudaSuccess;
	ENTER(true);
	e = drop_pinned(ptr, false);
	if (e == cudaSuccess)
		free(ptr);
	LEAVE(e);
}

cudaError_t cudaHostRegister(void *ptr, size_t len, unsigned int flags)
{
	ENTER(true);
	if (inject(F_HOST_REGISTER))
		LEAVE(cudaErrorMemoryAllocation);
	for (struct pinned *q = pinneds; q; q = q->next)
		if ((char *)ptr < q->ptr + q->len && (char *)ptr + len > q->ptr)
			LEAVE(cudaErrorHostMemoryAlreadyRegistered);
	LEAVE(add_pinned(ptr, len, true));
}

cudaError_t cudaHostUnregister(void *ptr)
{
	ENTER(true);
	LEAVE(drop_pinned(ptr, true));
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *ret_stream,
				      unsigned int flags)
{
	struct stream *s;

	ENTER(true);
	if (inject(F_STREAM_CREATE))
		LEAVE(cudaErrorMemoryAllocation);
	s = calloc(1, sizeof(*s));
	if (!s)
		LEAVE(cudaErrorMemoryAllocation);
	s->dev = cur_dev;
	s->seed = seed++;
	pthread_cond_init(&s->cond, NULL);
	if (pthread_create(&s->tid, NULL, stream_main, s)) {
		free(s);
		LEAVE(cudaErrorMemoryAllocation);
	}
	s->next = streams;
	streams = s;
	*ret_stream = (cudaStream_t)s;
	LEAVE(cudaSuccess);
}

cudaError_t cudaStreamCreate(cudaStream_t *ret_stream)
{
	return cudaStreamCreateWithFlags(ret_stream, 0);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
	struct stream **pp, *s;

	ENTER(true);
	s = find_stream(stream);
	/* As in CUDA, this returns at once and the work queued still
	 * completes: the stream's thread drains its queue, then ends. The
	 * struct is kept (on zombies) for events recorded on it. */
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_detach(s->tid);
	for (pp = &streams; *pp != s; pp = &(*pp)->next)
		;
	*pp = s->next;
	s->next = zombies;
	zombies = s;
	LEAVE(cudaSuccess);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
	struct stream *s;

	ENTER(true);
	s = find_stream(stream);
	if (inject(F_STREAM_SYNC))
		LEAVE(cudaErrorLaunchFailure);
	wait_done(s, s->queued);
	LEAVE(cudaSuccess);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t len,
			    enum cudaMemcpyKind kind, cudaStream_t stream)
{
	struct devmem *d;
	struct stream *s;
	struct op *o;

	ENTER(true);
	s = find_stream(stream);
	if (s->dev != cur_dev)
		misuse("a stream of device %d used with device %d current",
		       s->dev, cur_dev);
	if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDefault)
		misuse("cudaMemcpyAsync kind %d: the stand-in only copies "
		       "host to device",
		       (int)kind);
	d = find_devmem(dst, len);
	if (!d)
		misuse("cudaMemcpyAsync to %p (%zu bytes): not inside one "
		       "device allocation",
		       dst, len);
	if (d->dev != s->dev)
		misuse("cudaMemcpyAsync to device %d memory on a stream of "
		       "device %d",
		       d->dev, s->dev);
	if (find_devmem(src, 1))
		misuse("cudaMemcpyAsync from device memory %p", src);
	if (inject(F_MEMCPY))
		LEAVE(cudaErrorInvalidValue);
	if (!len)
		LEAVE(cudaSuccess);
	if (!find_pinned(src, len)) {
		/* Pageable: staged by the runtime before it returns. */
		wait_done(s, s->queued);
		memcpy(dst, src, len);
		LEAVE(cudaSuccess);
	}
	o = calloc(1, sizeof(*o));
	if (!o)
		LEAVE(cudaErrorMemoryAllocation);
	*o = (struct op){ .dst = dst, .src = src, .len = len };
	o->hash = hash(src, len);
	if (s->tail)
		s->tail->next = o;
	else
		s->head = o;
	s->tail = o;
	s->queued++;
	pthread_cond_broadcast(&s->cond);
	LEAVE(cudaSuccess);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t len,
		       enum cudaMemcpyKind kind)
{
	struct devmem *ds, *dd;

	ENTER(true);
	ds = find_devmem(src, len);
	dd = find_devmem(dst, len);
	if ((kind == cudaMemcpyDeviceToHost && !ds) ||
	    (kind == cudaMemcpyHostToDevice && !dd) ||
	    (kind == cudaMemcpyDefault && !ds && !dd))
		LEAVE(cudaErrorInvalidValue);
	/* On the legacy default stream, which does not wait for the loader's
	 * non-blocking streams: the loader must have waited for them. */
	memcpy(dst, src, len);
	LEAVE(cudaSuccess);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ret_event, unsigned int flags)
{
	struct event *ev;

	ENTER(true);
	ev = calloc(1, sizeof(*ev));
	if (!ev)
		LEAVE(cudaErrorMemoryAllocation);
	ev->dev = cur_dev;
	ev->next = events;
	events = ev;
	*ret_event = (cudaEvent_t)ev;
	LEAVE(cudaSuccess);
}

cudaError_t cudaEventCreate(cudaEvent_t *ret_event)
{
	return cudaEventCreateWithFlags(ret_event, 0);
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
	struct event **pp, *ev;

	ENTER(true);
	ev = find_event(event);
	for (pp = &events; *pp != ev; pp = &(*pp)->next)
		;
	*pp = ev->next;
	free(ev);
	LEAVE(cudaSuccess);
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
	struct event *ev;
	struct stream *s;

	ENTER(true);
	ev = find_event(event);
	s = find_stream(stream);
	if (s->dev != cur_dev || ev->dev != cur_dev)
		misuse("event (device %d) recorded on a stream of device %d "
		       "with device %d current",
		       ev->dev, s->dev, cur_dev);
	if (inject(F_EVENT_RECORD))
		LEAVE(cudaErrorLaunchFailure);
	ev->stream = s;
	ev->seq = s->queued;
	LEAVE(cudaSuccess);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
	struct event *ev;

	ENTER(true);
	ev = find_event(event);
	if (inject(F_EVENT_SYNC))
		LEAVE(cudaErrorLaunchFailure);
	if (ev->stream)
		wait_done(ev->stream, ev->seq);
	LEAVE(cudaSuccess);
}

/* The driver's cuCtxGetCurrent and cuCtxSetCurrent(NULL), as
 * cudaGetDriverEntryPointByVersion hands them out. */
static int standin_ctx_get_current(void **ctx)
{
	*ctx = has_ctx ? (void *)(uintptr_t)(cur_dev + 1) : NULL;
	return 0;
}

static int standin_ctx_set_current(void *ctx)
{
	if (ctx)
		misuse("cuCtxSetCurrent with a context: the loader only "
		       "unbinds");
	has_ctx = false;
	cur_dev = 0;
	return 0;
}

cudaError_t
cudaGetDriverEntryPointByVersion(const char *symbol, void **fn,
				 unsigned int version, unsigned long long flags,
				 enum cudaDriverEntryPointQueryResult *status)
{
	ENTER(false);
	if (old_driver)
		LEAVE(cudaErrorInsufficientDriver);
	*fn = NULL;
	if (!strcmp(symbol, "cuCtxGetCurrent"))
		*fn = (void *)standin_ctx_get_current;
	else if (!strcmp(symbol, "cuCtxSetCurrent"))
		*fn = (void *)standin_ctx_set_current;
	if (status)
		*status = *fn ? cudaDriverEntryPointSuccess
			      : cudaDriverEntryPointSymbolNotFound;
	LEAVE(cudaSuccess);
}

/* ---- hooks for tests (not part of CUDA) ---- */

void cudaStandinReset(void)
{
	pthread_mutex_lock(&lock);
	inited = true;
	read_env();
	contexts = 0;
	pthread_mutex_unlock(&lock);
}

unsigned cudaStandinContexts(void)
{
	unsigned c;

	pthread_mutex_lock(&lock);
	c = contexts;
	pthread_mutex_unlock(&lock);
	return c;
}

int cudaStandinLeaks(char *buf, size_t len)
{
	int nd = 0, np = 0, ns = 0, ne = 0;
	size_t bytes = 0;

	pthread_mutex_lock(&lock);
	for (struct devmem *d = devmems; d; d = d->next, nd++)
		bytes += d->len;
	for (struct pinned *q = pinneds; q; q = q->next)
		np++;
	for (struct stream *s = streams; s; s = s->next)
		ns++;
	for (struct event *ev = events; ev; ev = ev->next)
		ne++;
	pthread_mutex_unlock(&lock);
	if (buf && len)
		snprintf(buf, len,
			 "%d device allocations (%zu bytes), %d pinned ranges, "
			 "%d streams, %d events",
			 nd, bytes, np, ns, ne);
	return nd + np + ns + ne;
}

int cudaStandinIsDevice(const void *p)
{
	int r;

	pthread_mutex_lock(&lock);
	r = find_devmem(p, 1) != NULL;
	pthread_mutex_unlock(&lock);
	return r;
}

static void leak_check(void)
{
	char msg[256];

	if (cudaStandinLeaks(msg, sizeof(msg)))
		misuse("left at exit: %s", msg);
}
