/* Mount options (-o ...), parsed once in cmdline.c and read-only afterwards. */
#ifndef WFS_FS_OPTS_H
#define WFS_FS_OPTS_H

#include <stdbool.h>
#include <stdint.h>

enum prefetch_mode {
	PREFETCH_OFF,
	PREFETCH_SEQUENTIAL, /* adaptive readahead (default) */
	PREFETCH_OPEN,	     /* stream the whole file from open */
};

struct options {
	uint64_t cache_mem;	/* block cache budget, bytes */
	uint64_t block_size;	/* bytes per cache block */
	bool cache_huge;	/* blocks in transparent huge pages */
	uint64_t readahead_max; /* largest readahead window, bytes */
	uint64_t request_size;	/* most bytes per ranged GET, in blocks */
	unsigned connections;	/* parallel connections to the source */
	unsigned retries;	/* attempts after the first, per block */
	unsigned timeout_s;	/* a transfer stalled this long is retried */
	enum prefetch_mode prefetch;
	bool allow_other;
	bool debug;
	bool insecure; /* TLS verification off (tests only) */
	char ca_file
		[4096]; /* CA certificates (PEM) for TLS; "": the system's */
	unsigned list_ttl_s; /* list the source again this often; 0: never */
	bool zstd;	     /* NAME.zst seekable objects shown as NAME */
	/* Keys of sealed objects (NAME.sealed): a key file, or a directory
	 * of them; absolute; "": none (sealed files list, reads EACCES) */
	char key_file[4096];
	/* Publishers trusted (trust=): an Ed25519 public key file (PEM),
	 * or a directory of them; absolute; "": sealed objects need no
	 * signature */
	char trust[4096];
	bool list_lazy;	    /* list directories when first looked in */
	bool verify_sha256; /* check files against their listed SHA-256 */
	/* one listing (list(), or list_dir() of one directory) gives up
	 * after this long or this many entries (list_budget, s3_list.h) */
	unsigned list_time_max_s;
	unsigned list_entries_max;

	/* proxies (proxy.h): proxy= as given, or NULL (the environment's);
	 * the absolute path of a user:password file, or ""; Dragonfly's
	 * task tag, or NULL */
	char *proxy;
	char proxy_credentials[4096];
	char *p2p_tag;
	/* requests start and end on multiples of this (whole blocks; runs
	 * of readahead cut at them), so shared caches line up across nodes */
	uint64_t range_align;

	/* connections=auto: the HTTP/S3 transport tunes how many, from
	 * connections, at most connections_max (fetch_tune.h); a fixed
	 * count: connections_max is connections */
	bool connections_auto;
	unsigned connections_max;

	/* S3 (source_s3.c) */
	char *endpoint; /* URL, or NULL: AWS, from region */
	char *region;	/* or NULL: from the environment, else us-east-1 */
	char *profile;	/* or NULL: $AWS_PROFILE, else "default" */
	bool path_style;
	bool no_sign_request;
};

#endif
