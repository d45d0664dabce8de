/* Private to the disk tier (disk_store.c, disk_cache.c): its state and
 * what the two files share. Users include disk_cache.h only.
 *
 * disk_store.c owns the on-disk format, reads, writes and the budget
 * (under wlock); disk_cache.c owns the object (new, free) and the filler:
 * the lookup threads, the writer thread, their queues, chaining and
 * staging (under lock). */
#ifndef WFS_FS_DISK_CACHE_PRIV_H
#define WFS_FS_DISK_CACHE_PRIV_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "disk_cache.h"

/* A block on its way: looked up, then (a miss) filled by the source, then
 * written behind. */
struct job {
	struct block *b; /* NULL on the later queue */
	struct disk_key key;
	bool keyed; /* the node was at b's generation: key is good */
	/* on the later queue: which block, looked up again in memory */
	struct node *file;
	uint32_t generation;
	uint64_t index;
	struct job *next;
};

struct jobq {
	struct job *head, *tail;
	unsigned n;
};

struct disk_cache {
	char *dir; /* DIR/wfs1 */
	uint64_t budget;
	size_t block_size;
	char *source_id;
	unsigned max_queued;
	unsigned nlookup;
	bool direct_ok;	       /* O_DIRECT opens work here */
	atomic_bool read_only; /* writes off (one warning said so) */
	atomic_uint_fast64_t tmp_seq;

	/* the writer's (disk_cache_write() callers'), under wlock */
	pthread_mutex_t wlock;
	uint64_t used; /* bytes of block files, as last known */
	bool scanned;
	unsigned writes_since_scan;
	bool warned_full, warned_error;

	/* sealed writes: the sealed bytes, block_size rounded up to 4 KiB,
	 * made at the first one (aligned for O_DIRECT); under seal_lock */
	pthread_mutex_t seal_lock;
	char *seal_buf;

	/* the decorator */
	const struct cache_fill_ops *next; /* the filler misses go to */
	void *next_ctx;
	struct cache *cache;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct jobq demand, ahead; /* lookups; under lock */
	struct jobq writes;	   /* write-behind; under lock */
	/* blocks filled while the write-behind queue was full, written
	 * from memory when it has room (if still there); at most
	 * max_later, the oldest forgotten first; under lock */
	struct jobq later;
	unsigned max_later;
	uint64_t drain_deadline_ms; /* stop: later jobs after it dropped */
	struct job *writing_later;  /* the writer's now; under lock */
	struct block *writing;	    /* the writer's now; under lock */
	pthread_cond_t wdone;	    /* a job left pending, writes, writing */
	struct job *pending[256];   /* filling from the source; under lock */
	bool stop;		    /* under lock */
	pthread_t *threads;
	unsigned nthreads;
};

/*
 * disk_store_open() - the store's part of disk_cache_new(): DIR (@dir,
 * created one level when missing) and its wfs1/ into dc->dir, and whether
 * it takes writes and O_DIRECT. @dc's locks are set up.
 * @return 0, or a negative errno (@dir missing and not creatable).
 */
int disk_store_open(struct disk_cache *dc, const char *dir);

/* The path of block @k's file under DIR into @buf (@len bytes). */
void disk_key_path(const struct disk_cache *dc, const struct disk_key *k,
		   char *buf, size_t len);

#endif
