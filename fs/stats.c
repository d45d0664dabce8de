#include "stats.h"

#include <errno.h>
#include <stdio.h>

struct stats stats;

#define LOAD(f)                                                                \
	((unsigned long long)atomic_load_explicit(&stats.f,                    \
						  memory_order_relaxed))

void stats_count_error(int err)
{
	STAT_ADD(errors, 1);
	switch (err) {
	case -ESTALE:
		STAT_ADD(errors_stale, 1);
		break;
	case -ENOENT:
		STAT_ADD(errors_gone, 1);
		break;
	case -EPROTO:
		STAT_ADD(errors_protocol, 1);
		break;
	case -ETIMEDOUT:
		STAT_ADD(errors_timeout, 1);
		break;
	case -EACCES:
	case -EKEYEXPIRED:
		STAT_ADD(errors_auth, 1);
		break;
	default:
		STAT_ADD(errors_other, 1);
	}
}

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
		"\"errors_stale\": %llu, \"errors_gone\": %llu, "
		"\"errors_protocol\": %llu, \"errors_timeout\": %llu, "
		"\"errors_auth\": %llu, \"errors_other\": %llu}",
		LOAD(bytes_fetched), LOAD(requests), LOAD(retries),
		LOAD(errors), LOAD(cache_hits), LOAD(cache_misses),
		LOAD(cache_evictions), (unsigned long long)cache_bytes,
		(unsigned long long)cache_mem, LOAD(prefetched), LOAD(reads),
		LOAD(bytes_read), LOAD(changed), LOAD(errors_stale),
		LOAD(errors_gone), LOAD(errors_protocol), LOAD(errors_timeout),
		LOAD(errors_auth), LOAD(errors_other));

	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}
