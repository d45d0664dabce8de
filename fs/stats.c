#include "stats.h"

#include <errno.h>
#include <stdio.h>

struct stats stats;

#define LOAD(f)                                                                \
	((unsigned long long)atomic_load_explicit(&stats.f,                    \
						  memory_order_relaxed))

int stats_json(char *buf, size_t len, uint64_t cache_bytes, uint64_t cache_mem)
{
	int n = snprintf(
		buf, len,
		"{\"bytes_fetched\": %llu, \"requests\": %llu, "
		"\"retries\": %llu, \"errors\": %llu, \"cache_hits\": %llu, "
		"\"cache_misses\": %llu, \"cache_evictions\": %llu, "
		"\"cache_bytes\": %llu, \"cache_mem\": %llu, "
		"\"prefetched_blocks\": %llu, \"reads\": %llu, "
		"\"bytes_read\": %llu, \"objects_changed\": %llu, "
		"\"fastpath_bytes_copied\": %llu, "
		"\"disk_hits\": %llu, \"disk_misses\": %llu, "
		"\"disk_bytes\": %llu, \"disk_writes\": %llu, "
		"\"disk_evictions\": %llu, \"disk_corrupt\": %llu, "
		"\"disk_errors\": %llu}",
		LOAD(bytes_fetched), LOAD(requests), LOAD(retries),
		LOAD(errors), LOAD(cache_hits), LOAD(cache_misses),
		LOAD(cache_evictions), (unsigned long long)cache_bytes,
		(unsigned long long)cache_mem, LOAD(prefetched), LOAD(reads),
		LOAD(bytes_read), LOAD(changed), LOAD(fastpath_copied),
		LOAD(disk_hits), LOAD(disk_misses), LOAD(disk_bytes),
		LOAD(disk_writes), LOAD(disk_evictions), LOAD(disk_corrupt),
		LOAD(disk_errors));

	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}
