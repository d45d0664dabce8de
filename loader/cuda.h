/* The CUDA runtime, as the loader uses it. cuda.c calls the toolkit and
 * translates cudaError_t to negative errno (with a message) in one place;
 * cuda_stub.c, built when there is no toolkit, returns -EOPNOTSUPP.
 * Thread-safe as the CUDA runtime is; cuda_use() sets the calling thread's
 * device. */
#ifndef WFS_LOADER_CUDA_H
#define WFS_LOADER_CUDA_H

#include <stddef.h>

/* cuda_use() - make @device current for the calling thread.
 * @return 0, -ENODEV (no GPU, no driver, no such device), -ELIBBAD (a
 * driver older than the runtime: said with both versions) or -EOPNOTSUPP
 * (built without CUDA). */
int cuda_use(int device);

/* cuda_device_save() - what cuda_device_restore() needs to put the
 * calling thread back as it was: its current device, CUDA_NO_CONTEXT
 * when it has no CUDA context current (a thread that never used CUDA:
 * cudaGetDevice() says 0 there, and setting device 0 again would make a
 * context on GPU 0 when the load was for another), or -1 (no CUDA).
 * A load must not leave the caller on another device. */
#define CUDA_NO_CONTEXT (-2)
int cuda_device_save(void);
void cuda_device_restore(int saved);

/* cuda_malloc()/cuda_free() - device memory on the current device
 * (cudaMalloc: aligned to 256 bytes, no more; cuda_free() of memory of
 * another device than the current one would make a context for it). */
int cuda_malloc(size_t len, void **ret_ptr);
void cuda_free(void *ptr);

/* cuda_host_alloc()/cuda_host_free() - pinned host memory (portable). */
int cuda_host_alloc(size_t len, void **ret_ptr);
void cuda_host_free(void *ptr);

/*
 * cuda_host_register()/cuda_host_unregister() - pin @len bytes of host
 * memory at @ptr that we mapped ourselves (staging shared with the
 * daemon). Slow (about 0.7 s/GiB): once per buffer, not per load.
 */
int cuda_host_register(void *ptr, size_t len);
void cuda_host_unregister(void *ptr);

/*
 * cuda_event_new()/cuda_event_free() - an event whose wait blocks the
 * thread instead of spinning (cudaEventBlockingSync), without timing.
 */
int cuda_event_new(void **ret_event);
void cuda_event_free(void *event);

/* cuda_event_record() - mark the end of what is queued on @stream now. */
int cuda_event_record(void *event, void *stream);

/* cuda_event_sync() - sleep until @event's work is done. */
int cuda_event_sync(void *event);

/* cuda_stream_new()/cuda_stream_free() - a non-blocking stream. */
int cuda_stream_new(void **ret_stream);
void cuda_stream_free(void *stream);

/* cuda_copy_async() - queue a host-to-device copy on @stream. */
int cuda_copy_async(void *stream, void *dst, const void *src, size_t len);

/* cuda_stream_sync() - wait for everything queued on @stream. */
int cuda_stream_sync(void *stream);

/* cuda_copy_to_host() - copy @len bytes from device @src to host @dst. */
int cuda_copy_to_host(void *dst, const void *src, size_t len);

#endif
