#include "stats.h"

#include <errno.h>
#include <stdio.h>

struct stats stats;

/* The fetch latency histogram: upper bounds in microseconds, a count per
 * bucket (not cumulative; stats_json() sums them), the sum and the count. */
static const uint64_t latency_le_us[] = { 1000,	   2500,    5000,    10000,
					  25000,   50000,   100000,  250000,
					  500000,  1000000, 2500000, 5000000,
					  10000000 };
#define NLAT (sizeof(latency_le_us) / sizeof(latency_le_us[0]))
static struct {
	atomic_uint_fast64_t bucket[NLAT];
	atomic_uint_fast64_t sum_us, count;
} latency;

void stats_fetch_latency(uint64_t us)
{
	size_t i = 0;

	while (i < NLAT && us > latency_le_us[i])
		i++;
	if (i < NLAT)
		atomic_fetch_add_explicit(&latency.bucket[i], 1,
					  memory_order_relaxed);
	atomic_fetch_add_explicit(&latency.sum_us, us, memory_order_relaxed);
	atomic_fetch_add_explicit(&latency.count, 1, memory_order_relaxed);
}

/* Replace the closing brace of the object of @n bytes in @buf by
 * , "fetch_seconds": {"le": [...], "counts": [cumulative], "sum": s,
 * "count": n}}. @return the new length, or -1 when it does not fit. */
static int append_latency(char *buf, size_t len, int n)
{
	uint64_t cum = 0;
	size_t i;
	int k;

	if (n < 1 || (size_t)n >= len || buf[n - 1] != '}')
		return -1;
	n--;
	k = snprintf(buf + n, len - n, ", \"fetch_seconds\": {\"le\": [");
	for (i = 0; k >= 0 && (size_t)(n += k) < len && i < NLAT; i++)
		k = snprintf(buf + n, len - n, "%s%g", i ? ", " : "",
			     (double)latency_le_us[i] / 1e6);
	if (k < 0 || (size_t)n >= len)
		return -1;
	k = snprintf(buf + n, len - n, "], \"counts\": [");
	for (i = 0; k >= 0 && (size_t)(n += k) < len && i < NLAT; i++) {
		cum += atomic_load_explicit(&latency.bucket[i],
					    memory_order_relaxed);
		k = snprintf(buf + n, len - n, "%s%llu", i ? ", " : "",
			     (unsigned long long)cum);
	}
	if (k < 0 || (size_t)n >= len)
		return -1;
	k = snprintf(buf + n, len - n, "], \"sum\": %.6f, \"count\": %llu}}",
		     (double)atomic_load_explicit(&latency.sum_us,
						  memory_order_relaxed) /
			     1e6,
		     (unsigned long long)atomic_load_explicit(
			     &latency.count, memory_order_relaxed));
	if (k < 0 || (size_t)(n += k) >= len)
		return -1;
	return n;
}

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
		"\"fastpath_bytes_copied\": %llu, "
		"\"disk_hits\": %llu, \"disk_misses\": %llu, "
		"\"disk_bytes\": %llu, \"disk_writes\": %llu, "
		"\"disk_evictions\": %llu, \"disk_corrupt\": %llu, "
		"\"disk_errors\": %llu, "
		"\"bytes_decompressed\": %llu, \"frames_decoded\": %llu, "
		"\"decrypt_failed\": %llu, "
		"\"dirs_listed\": %llu, "
		"\"connections_now\": %llu, \"connections_max\": %llu, "

		"\"errors_stale\": %llu, \"errors_gone\": %llu, "
		"\"errors_protocol\": %llu, \"errors_timeout\": %llu, "
		"\"errors_auth\": %llu, \"errors_other\": %llu}",
		LOAD(bytes_fetched), LOAD(requests), LOAD(retries),
		LOAD(errors), LOAD(cache_hits), LOAD(cache_misses),
		LOAD(cache_evictions), (unsigned long long)cache_bytes,
		(unsigned long long)cache_mem, LOAD(prefetched), LOAD(reads),
		LOAD(bytes_read), LOAD(changed), LOAD(fastpath_copied),
		LOAD(disk_hits), LOAD(disk_misses), LOAD(disk_bytes),
		LOAD(disk_writes), LOAD(disk_evictions), LOAD(disk_corrupt),
		LOAD(disk_errors), LOAD(bytes_decompressed),
		LOAD(frames_decoded), LOAD(decrypt_failed), LOAD(dirs_listed),
		LOAD(connections_now), LOAD(connections_max),

		LOAD(errors_stale), LOAD(errors_gone), LOAD(errors_protocol),
		LOAD(errors_timeout), LOAD(errors_auth), LOAD(errors_other));

	if (n > 0 && (size_t)n < len)
		n = append_latency(buf, len, n);
	if (n < 0 || (size_t)n >= len)
		return -ERANGE;
	return n;
}
