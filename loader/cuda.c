#include "cuda.h"

#include <errno.h>
#include <stdio.h>

#include <cuda_runtime.h>

#include "errmsg.h"

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
	case cudaErrorInsufficientDriver:
	case cudaErrorDevicesUnavailable:
		err = -ENODEV;
		break;
	case cudaErrorInvalidValue:
		err = -EINVAL;
		break;
	default:
		err = -EIO;
		break;
	}
	/* Clear the sticky per-thread error so later calls start clean. */
	cudaGetLastError();
	return err_set(err, "CUDA %s: %s", what, cudaGetErrorString(e));
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

int cuda_device_save(void)
{
	int d = -1;

	if (cudaGetDevice(&d) != cudaSuccess) {
		cudaGetLastError(); /* not sticky: nothing went wrong */
		return -1;
	}
	return d;
}

void cuda_device_restore(int device)
{
	if (device >= 0)
		cudaSetDevice(device);
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
