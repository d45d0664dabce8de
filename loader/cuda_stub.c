/* Built when the CUDA Toolkit is absent: every call fails cleanly. */
#include "cuda.h"

#include <errno.h>

#include "errmsg.h"

static int unsupported(void)
{
	return err_set(-EOPNOTSUPP, "libweightfs was built without CUDA");
}

int cuda_use(int device)
{
	return unsupported();
}

int cuda_device_save(void)
{
	return -1;
}

void cuda_device_restore(int saved)
{
}

int cuda_malloc(size_t len, void **ret_ptr)
{
	return unsupported();
}

void cuda_free(void *ptr)
{
}

int cuda_host_alloc(size_t len, void **ret_ptr)
{
	return unsupported();
}

void cuda_host_free(void *ptr)
{
}

int cuda_host_register(void *ptr, size_t len)
{
	return unsupported();
}

void cuda_host_unregister(void *ptr)
{
}

int cuda_event_new(void **ret_event)
{
	return unsupported();
}

void cuda_event_free(void *event)
{
}

int cuda_event_record(void *event, void *stream)
{
	return unsupported();
}

int cuda_event_sync(void *event)
{
	return unsupported();
}

int cuda_stream_new(void **ret_stream)
{
	return unsupported();
}

void cuda_stream_free(void *stream)
{
}

int cuda_copy_async(void *stream, void *dst, const void *src, size_t len)
{
	return unsupported();
}

int cuda_stream_sync(void *stream)
{
	return unsupported();
}

int cuda_copy_to_host(void *dst, const void *src, size_t len)
{
	return unsupported();
}
