/* Daemon counters, shown by `weightfs-ctl stats` (the root's
 * user.weightfs.stats xattr). Lock-free: relaxed atomics. */
#ifndef WFS_FS_STATS_H
#define WFS_FS_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct stats {
	atomic_uint_fast64_t bytes_fetched; /* body bytes from the source */
	atomic_uint_fast64_t requests;	    /* GETs started, retries included */
	atomic_uint_fast64_t retries;
	atomic_uint_fast64_t errors;	 /* blocks that failed for good */
	atomic_uint_fast64_t cache_hits; /* block lookups found ready */
	atomic_uint_fast64_t
		cache_misses; /* block lookups that fetched or waited */
	atomic_uint_fast64_t cache_evictions;
	atomic_uint_fast64_t prefetched; /* blocks fetched by readahead */
	atomic_uint_fast64_t reads;	 /* FUSE read requests */
	atomic_uint_fast64_t bytes_read; /* bytes replied to FUSE reads */
	atomic_uint_fast64_t changed;	 /* objects found changed (412) */
	/* bytes the fast path copied into loaders' memory */
	atomic_uint_fast64_t fastpath_copied;
	/* decoded objects (decoder.c): bytes decoded into blocks; zstd
	 * frames decoded for them (zstd_object.c) */
	atomic_uint_fast64_t bytes_decompressed;
	atomic_uint_fast64_t frames_decoded;
	/* sealed frames (or indexes) that failed authentication */
	atomic_uint_fast64_t decrypt_failed;
	/* the disk tier (disk_cache.c) */
	atomic_uint_fast64_t disk_hits;	  /* blocks read back and verified */
	atomic_uint_fast64_t disk_misses; /* lookups that went to the source */
	atomic_uint_fast64_t disk_bytes;  /* bytes served from disk */
	atomic_uint_fast64_t disk_writes; /* blocks written */
	atomic_uint_fast64_t disk_evictions; /* block files removed for room */
	atomic_uint_fast64_t disk_corrupt; /* block files that failed checks */
	atomic_uint_fast64_t disk_errors;  /* I/O errors, writes dropped */
	/* errors by class (source.h): */
	atomic_uint_fast64_t errors_stale;    /* -ESTALE: object changed */
	atomic_uint_fast64_t errors_gone;     /* -ENOENT: gone at the source */
	atomic_uint_fast64_t errors_protocol; /* -EPROTO: server broke HTTP */
	atomic_uint_fast64_t errors_timeout;  /* -ETIMEDOUT: stalled */
	atomic_uint_fast64_t errors_auth;     /* -EACCES, -EKEYEXPIRED */
	atomic_uint_fast64_t errors_other;    /* resets, 5xx, shutdown... */
	atomic_uint_fast64_t dirs_listed; /* one-level listings (lazy mode) */
	/* levels, not counts: connections in use now (connections=auto: the
	 * tuner's limit, fetch_tune.h), and the most it may use */
	atomic_uint_fast64_t connections_now;
	atomic_uint_fast64_t connections_max;
};

extern struct stats stats;

#define STAT_ADD(field, n)                                                     \
	atomic_fetch_add_explicit(&stats.field, (n), memory_order_relaxed)
#define STAT_SET(field, n)                                                     \
	atomic_store_explicit(&stats.field, (n), memory_order_relaxed)

/* stats_count_error() - a block failed for good with @err: count it in
 * errors and in its class. */
void stats_count_error(int err);

/*
 * stats_fetch_latency() - count one range request that took @us
 * microseconds (curl's total time of the attempt) in the latency histogram
 * that stats_json() reports as "fetch_seconds".
 */
void stats_fetch_latency(uint64_t us);

/*
 * stats_json() - the counters, plus @cache_bytes and @cache_mem, as one
 * JSON object into @buf.
 * @return the length written (without NUL), or -ERANGE when @len is too
 * small.
 */
int stats_json(char *buf, size_t len, uint64_t cache_bytes, uint64_t cache_mem);

#endif
