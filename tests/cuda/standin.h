/* Hooks of the CUDA runtime stand-in (cudart_standin.c) for tests; not
 * part of CUDA. A test that calls them links the stand-in, never the real
 * runtime. */
#ifndef WFS_TESTS_CUDA_STANDIN_H
#define WFS_TESTS_CUDA_STANDIN_H

#include <stddef.h>

/* cudaStandinReset() - read the CUDA_STANDIN_* environment again (after
 * setenv()), zero the call counters of the failure injection and forget
 * which devices have a context. */
void cudaStandinReset(void);

/* cudaStandinContexts() - bit N set: a context was made on device N since
 * the start or the last reset. */
unsigned cudaStandinContexts(void);

/* cudaStandinLeaks() - how many device allocations, pinned ranges, streams
 * and events are alive; describes them in @buf. */
int cudaStandinLeaks(char *buf, size_t len);

/* cudaStandinIsDevice() - whether @p is inside a device allocation. */
int cudaStandinIsDevice(const void *p);

#endif
