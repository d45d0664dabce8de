/* What the machine's host does with the memory this system frees. */
#ifndef WFS_FS_HOST_MEMORY_H
#define WFS_FS_HOST_MEMORY_H

#include <stdbool.h>

/*
 * host_reclaims_free_memory() - whether this system is a VM whose host
 * takes free memory back: a virtio balloon offering free page reporting,
 * found under @virtio_devices ("/sys/bus/virtio/devices"). There, memory
 * the kernel hands out may have to be faulted in again by the host on
 * first touch, and whole free 2 MiB blocks (what a transparent huge page
 * takes) are the ones reported first.
 */
bool host_reclaims_free_memory(const char *virtio_devices);

#endif
