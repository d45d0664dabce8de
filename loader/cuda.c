#include "cuda.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include <cuda_runtime.h>

#include "errmsg.h"

/* A driver too old for this runtime (or none): say which versions. */
static int driver_error(cudaError_t e, const char *what)
{
	int drv = 0, rt = 0;

	cudaDriverGetVersion(&drv);
	cudaRuntimeGetVersion(&rt);
	cudaGetLastError();
	/* No driver at all (no libcuda: a machine without a GPU) reads as
	 * version 0: that is no device, which tests take for a skip. */
	if (!drv)
		return err_set(-ENODEV, "CUDA %s: no CUDA driver (%s)", what,
			       cudaGetErrorString(e));
	return err_set(-ELIBBAD,
		       "CUDA %s: %s: the driver supports CUDA %d.%d, this "
		       "libweightfs was built with runtime %d.%d (update the "
		       "driver)",
		       what, cudaGetErrorString(e), drv / 1000, drv % 1000 / 10,
		       rt / 1000, rt % 1000 / 10);
}

/* The one place a cudaError_t becomes an errno. */
static int from_cuda(cudaError_t e, const char *what)
{
	int err;

	switch (e) {
	case cudaSuccess:
		return 0;
	case cudaErrorMemoryAllocation:
		err = -ENOMEM;
		break;
	case cudaErrorNoDevice:
	case cudaErrorInvalidDevice:
	case cudaErrorDevicesUnavailable:
		err = -ENODEV;
		break;
	case cudaErrorInsufficientDriver:
	case cudaErrorCallRequiresNewerDriver:
	case cudaErrorSystemDriverMismatch:
	case cudaErrorCompatNotSupportedOnDevice:
	case cudaErrorStubLibrary:
		return driver_error(e, what);
	case cudaErrorInvalidValue:
	case cudaErrorInvalidDevicePointer:
	case cudaErrorInvalidResourceHandle:
	case cudaErrorInvalidMemcpyDirection:
		err = -EINVAL;
		break;
	case cudaErrorHostMemoryAlreadyRegistered:
		err = -EEXIST;
		break;
	case cudaErrorHostMemoryNotRegistered:
		err = -ENOENT;
		break;
	case cudaErrorNotPermitted:
		err = -EPERM;
		break;
	case cudaErrorNotSupported:
		err = -EOPNOTSUPP;
		break;
	case cudaErrorNotReady:
		err = -EAGAIN;
		break;
	default:
		/* Among them the sticky ones (illegal address, launch
		 * failure, ECC): the context is lost, and so is the load. */
		err = -EIO;
		break;
	}
	/* Clear the non-sticky per-thread error so later calls start
	 * clean. */
	cudaGetLastError();
	return err_set(err, "CUDA %s: %s (%s)", what, cudaGetErrorString(e),
		       cudaGetErrorName(e));
}

int cuda_use(int device)
{
	char msg[512];
	int n = 0;
	int r = from_cuda(cudaGetDeviceCount(&n), "device count");

	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s", err_get());
		return err_set(r, "cannot use CUDA device %d: %s", device, msg);
	}
	if (device < 0 || device >= n)
		return err_set(-ENODEV, "no CUDA device %d (%d present)",
			       device, n);
	return from_cuda(cudaSetDevice(device), "set device");
}

/* The driver's cuCtxGetCurrent/cuCtxSetCurrent, through the runtime (no
 * link to libcuda); NULL where the driver does not give them. */
typedef int (*ctx_get_fn)(void **ctx);
typedef int (*ctx_set_fn)(void *ctx);
static ctx_get_fn ctx_get;
static ctx_set_fn ctx_set;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void ctx_fns(void)
{
	void *get = NULL, *set = NULL;

	if (cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &get, 12000,
					     cudaEnableDefault,
					     NULL) == cudaSuccess &&
	    cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &set, 12000,
					     cudaEnableDefault,
					     NULL) == cudaSuccess &&
	    get && set) {
		ctx_get = (ctx_get_fn)get;
		ctx_set = (ctx_set_fn)set;
	}
	cudaGetLastError();
}

int cuda_device_save(void)
{
	void *ctx = NULL;
	int d = -1;

	pthread_once(&ctx_once, ctx_fns);
	/* No context current: nothing to go back to but none. */
	if (ctx_get && ctx_get(&ctx) == 0 && !ctx)
		return CUDA_NO_CONTEXT;
	if (cudaGetDevice(&d) != cudaSuccess) {
		cudaGetLastError(); /* not sticky: nothing went wrong */
		return -1;
	}
	return d;
}

void cuda_device_restore(int saved)
{
	if (saved >= 0)
		cudaSetDevice(saved);
	else if (saved == CUDA_NO_CONTEXT && ctx_set)
		ctx_set(NULL); /* as the thread was: no context current */
}

int cuda_malloc(size_t len, void **ret_ptr)
{
	void *p = NULL;
	int r = from_cuda(cudaMalloc(&p, len), "malloc");

	if (r == 0)
		*ret_ptr = p;
	return r;
}

void cuda_free(void *ptr)
{
	if (ptr)
		cudaFree(ptr);
}

int cuda_host_alloc(size_t len, void **ret_ptr)
{
	void *p = NULL;
	int r = from_cuda(cudaHostAlloc(&p, len, cudaHostAllocPortable),
			  "pinned host alloc");

	if (r == 0)
		*ret_ptr = p;
	return r;
}

void cuda_host_free(void *ptr)
{
	if (ptr)
		cudaFreeHost(ptr);
}

int cuda_host_register(void *ptr, size_t len)
{
	return from_cuda(cudaHostRegister(ptr, len, cudaHostRegisterPortable),
			 "host register");
}

void cuda_host_unregister(void *ptr)
{
	if (ptr)
		cudaHostUnregister(ptr);
}

int cuda_event_new(void **ret_event)
{
	cudaEvent_t e;
	int r = from_cuda(
		cudaEventCreateWithFlags(&e, cudaEventBlockingSync |
						     cudaEventDisableTiming),
		"event create");

	if (r == 0)
		*ret_event = e;
	return r;
}

void cuda_event_free(void *event)
{
	if (event)
		cudaEventDestroy(event);
}

int cuda_event_record(void *event, void *stream)
{
	return from_cuda(cudaEventRecord(event, stream), "event record");
}

int cuda_event_sync(void *event)
{
	return from_cuda(cudaEventSynchronize(event), "event sync");
}

int cuda_stream_new(void **ret_stream)
{
	cudaStream_t s;
	int r = from_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
			  "stream create");

	if (r == 0)
		*ret_stream = s;
	return r;
}

void cuda_stream_free(void *stream)
{
	if (stream)
		cudaStreamDestroy(stream);
}

int cuda_copy_async(void *stream, void *dst, const void *src, size_t len)
{
	return from_cuda(
		cudaMemcpyAsync(dst, src, len, cudaMemcpyHostToDevice, stream),
		"copy to device");
}

int cuda_stream_sync(void *stream)
{
	return from_cuda(cudaStreamSynchronize(stream), "stream sync");
}

int cuda_copy_to_host(void *dst, const void *src, size_t len)
{
	return from_cuda(cudaMemcpy(dst, src, len, cudaMemcpyDefault),
			 "copy to host");
}
