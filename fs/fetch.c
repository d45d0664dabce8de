#include "fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cache.h"
#include "http.h"
#include "io.h"
#include "opts.h"
#include "source.h"
#include "stats.h"
#include "tree.h"

#define FILE_THREADS_MAX 8

struct job {
	struct block *b;
	struct node *file;
	uint64_t off;
	size_t len;
	uint64_t size; /* the file's size when the fetch started */
	char *etag;    /* validator pinned for every attempt, or NULL */
	unsigned attempt;
	uint64_t not_before_ms;
	int last_err;
	/* one attempt's state */
	CURL *h;
	struct curl_slist *hdrs;
	size_t got;
	int status; /* of the response being received */
	bool overflow;
	bool range_ok;
	bool etag_mismatch;
	uint64_t range_total;
	struct job *next;
};

struct queue {
	struct job *head, *tail;
};

struct fetch {
	struct source *src;
	const struct options *opts;
	struct cache *cache;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* file:// workers wait here */
	struct queue demand; /* protected by lock */
	struct queue ahead;  /* protected by lock */
	bool stop;	     /* protected by lock */
	CURLM *multi;	     /* owned by the curl thread once started */
	CURL **idle;	     /* the curl thread's: reusable handles */
	struct job **act;    /* the curl thread's: transfers running */
	pthread_t threads[FILE_THREADS_MAX];
	unsigned nthreads;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void queue_push(struct queue *q, struct job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static struct job *queue_pop(struct queue *q)
{
	struct job *j = q->head;

	if (j) {
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		j->next = NULL;
	}
	return j;
}

int fetch_new(struct source *src, const struct options *opts,
	      struct fetch **ret)
{
	struct fetch *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->src = src;
	f->opts = opts;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	*ret = f;
	return 0;
}

void fetch_attach(struct fetch *f, struct cache *c)
{
	f->cache = c;
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	curl_slist_free_all(j->hdrs);
	free(j->etag);
	free(j);
}

/* The object changed under us: later reads of it fail until it is
 * re-validated. */
static void mark_changed(struct job *j)
{
	struct node *n = j->file;

	pthread_mutex_lock(&n->lock);
	if (n->generation == j->b->generation && !n->changed) {
		n->changed = true;
		STAT_ADD(changed, 1);
	}
	pthread_mutex_unlock(&n->lock);
}

static void finish(struct fetch *f, struct job *j, int err)
{
	if (err) {
		STAT_ADD(errors, 1);
		if (err == -ESTALE)
			mark_changed(j);
	}
	cache_fetch_done(f->cache, j->b, err);
	job_free(j);
}

/* Retry @j after a capped, jittered exponential backoff, or finish it
 * with @err when its retries are spent. Called with f->lock NOT held. */
static void retry_or_fail(struct fetch *f, struct job *j, int err)
{
	uint64_t delay;

	if (j->attempt >= f->opts->retries) {
		finish(f, j, err);
		return;
	}
	delay = http_backoff_ms(j->attempt);
	j->attempt++;
	j->last_err = err;
	j->not_before_ms = now_ms() + delay;
	STAT_ADD(retries, 1);
	pthread_mutex_lock(&f->lock);
	/* Retries go first: a reader is most likely waiting for them. */
	j->next = f->demand.head;
	f->demand.head = j;
	if (!f->demand.tail)
		f->demand.tail = j;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	if (f->multi)
		curl_multi_wakeup(f->multi);
}

void fetch_block(void *arg, struct block *b)
{
	struct fetch *f = arg;
	struct job *j = calloc(1, sizeof(*j));
	struct node *n = b->file;

	if (!j) {
		cache_fetch_done(f->cache, b, -ENOMEM);
		return;
	}
	j->b = b;
	j->file = n;
	j->off = b->index * cache_block_size(f->cache);
	j->len = b->len;
	pthread_mutex_lock(&n->lock);
	j->size = n->size;
	if (n->etag)
		j->etag = strdup(n->etag);
	pthread_mutex_unlock(&n->lock);
	pthread_mutex_lock(&f->lock);
	if (f->stop) {
		pthread_mutex_unlock(&f->lock);
		finish(f, j, -ESHUTDOWN);
		return;
	}
	queue_push(b->prefetch ? &f->ahead : &f->demand, j);
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	if (f->multi)
		curl_multi_wakeup(f->multi);
}

void fetch_promote(void *arg, struct block *b)
{
	struct fetch *f = arg;
	struct job **p, *prev = NULL;

	pthread_mutex_lock(&f->lock);
	for (p = &f->ahead.head; *p; prev = *p, p = &(*p)->next) {
		struct job *j = *p;

		if (j->b != b)
			continue;
		*p = j->next;
		if (f->ahead.tail == j)
			f->ahead.tail = prev;
		j->next = f->demand.head;
		f->demand.head = j;
		if (!f->demand.tail)
			f->demand.tail = j;
		break;
	}
	pthread_mutex_unlock(&f->lock);
}

/* Next job whose backoff has passed: demand first, then readahead.
 * Called with f->lock held. */
static struct job *take_ready(struct fetch *f, uint64_t now, uint64_t *next_due)
{
	struct queue *qs[2] = { &f->demand, &f->ahead };
	int i;

	for (i = 0; i < 2; i++) {
		struct job **p = &qs[i]->head, *prev = NULL;

		for (; *p; prev = *p, p = &(*p)->next) {
			struct job *j = *p;

			if (j->not_before_ms > now) {
				if (j->not_before_ms < *next_due)
					*next_due = j->not_before_ms;
				continue;
			}
			*p = j->next;
			if (qs[i]->tail == j)
				qs[i]->tail = prev;
			j->next = NULL;
			return j;
		}
	}
	return NULL;
}

/* ---- file:// ---- */

/* Read the block with pread, checking the file is still the one listed
 * (size and mtime). */
static int file_read(struct fetch *f, struct job *j)
{
	char *path = NULL;
	char etag[SOURCE_FILE_ETAG_MAX];
	struct stat st;
	ssize_t n;
	int fd, err = 0;

	if (asprintf(&path, "%s/%s", f->src->root_dir, j->file->key) < 0)
		return -ENOMEM;
	fd = source_file_open(f->src, j->file->key);
	free(path);
	if (fd < 0)
		return errno == ENOENT ? -ESTALE : -errno;
	if (fstat(fd, &st) < 0) {
		err = -errno;
		goto out;
	}
	/* Still the file that was listed (not changed, not swapped)? */
	source_file_etag(&st, etag, sizeof(etag));
	if (!j->etag || strcmp(etag, j->etag)) {
		err = -ESTALE;
		goto out;
	}
	STAT_ADD(requests, 1);
	n = pread_full(fd, j->b->data, j->len, j->off);
	if (n < 0) {
		err = (int)n;
		goto out;
	}
	STAT_ADD(bytes_fetched, (size_t)n);
	if ((size_t)n < j->len)
		err = -ESTALE; /* it shrank: changed */
out:
	close(fd);
	return err;
}

static void *file_worker(void *arg)
{
	struct fetch *f = arg;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		uint64_t next_due = UINT64_MAX;
		struct job *j = take_ready(f, now_ms(), &next_due);
		int err;

		if (!j) {
			if (f->stop)
				break;
			if (next_due == UINT64_MAX) {
				pthread_cond_wait(&f->cond, &f->lock);
			} else {
				struct timespec ts;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += 1; /* backoffs are short */
				pthread_cond_timedwait(&f->cond, &f->lock, &ts);
			}
			continue;
		}
		pthread_mutex_unlock(&f->lock);
		err = file_read(f, j);
		if (err && err != -ESTALE)
			retry_or_fail(f, j, err);
		else
			finish(f, j, err);
		pthread_mutex_lock(&f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* ---- http(s):// and s3:// ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct job *j = arg;
	size_t len = size * n;

	/* An error's body is not the block's: drop it (the status says). */
	if (j->status < 200 || j->status > 299)
		return len;
	if (len > j->len - j->got) {
		j->overflow = true; /* the server sent more than we asked */
		return 0;
	}
	memcpy(j->b->data + j->got, p, len);
	j->got += len;
	return len;
}

/* Check Content-Range and ETag as headers arrive. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct job *j = arg;
	size_t len = size * n;
	unsigned long long start, end, total;
	char line[512];

	if (len >= sizeof(line))
		return len;
	memcpy(line, p, len);
	line[len] = '\0';
	if (!strncasecmp(line, "HTTP/", 5)) {
		const char *sp = strchr(line, ' ');

		j->status = sp ? atoi(sp + 1) : 0;
		j->range_ok = false;
		j->etag_mismatch = false;
	} else if (!strncasecmp(line, "Content-Range:", 14)) {
		if (sscanf(line + 14, " bytes %llu-%llu/%llu", &start, &end,
			   &total) == 3 &&
		    start == j->off && end + 1 == j->off + j->len) {
			j->range_ok = true;
			j->range_total = total;
		}
	} else if (!strncasecmp(line, "ETag:", 5) && j->etag) {
		char *v = line + 5, *e = line + len;

		while (*v == ' ' || *v == '\t')
			v++;
		while (e > v && (e[-1] == '\r' || e[-1] == '\n' ||
				 e[-1] == ' ' || e[-1] == '\t'))
			e--;
		*e = '\0';
		if (strcmp(v, j->etag))
			j->etag_mismatch = true;
	}
	return len;
}

static int curl_prepare(struct fetch *f, struct job *j, CURL *h)
{
	char range[64];
	int err;

	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, j->off,
		 j->off + j->len - 1);
	curl_easy_reset(h);
	http_setup_common(h, f->opts);
	curl_slist_free_all(j->hdrs);
	j->hdrs = NULL;
	err = f->src->ops->prepare_get(f->src, h, j->file, j->etag, range,
				       &j->hdrs);
	if (err)
		return err;
	curl_easy_setopt(h, CURLOPT_RANGE, range + 6);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, j->hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, j);
	curl_easy_setopt(h, CURLOPT_PRIVATE, j);
	/* Large receive buffers, within 64 MiB over all connections. */
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE,
			 (long)(f->opts->connections <= 128
					? 512u << 10
					: (64u << 20) / f->opts->connections));
	j->got = 0;
	j->status = 0;
	j->overflow = j->range_ok = j->etag_mismatch = false;
	j->h = h;
	return 0;
}

/* The outcome of one attempt: 0, a retryable error (> 0 holds -errno
 * to retry), or a final negative errno. */
static int judge(struct job *j, CURLcode code, bool *retry)
{
	curl_off_t us = 0;
	long status = 0;

	*retry = false;
	curl_easy_getinfo(j->h, CURLINFO_RESPONSE_CODE, &status);
	STAT_ADD(bytes_fetched, j->got);
	if (curl_easy_getinfo(j->h, CURLINFO_TOTAL_TIME_T, &us) == CURLE_OK)
		stats_fetch_latency((uint64_t)us);
	if (j->overflow)
		return -EIO; /* more bytes than asked: the server lies */
	if (code != CURLE_OK && code != CURLE_WRITE_ERROR) {
		*retry = true;
		return http_curl_errno(code);
	}
	if (status == 412)
		return -ESTALE;
	if (status == 404 || status == 410)
		return -ESTALE;
	if (http_status_retryable(status)) {
		*retry = true;
		return http_status_errno(status);
	}
	if (status == 200) {
		/* A server that ignores Range: fine only for a whole file. */
		if (j->off != 0 || j->len != j->size || j->got != j->len)
			return -EIO;
	} else if (status == 206) {
		if (!j->range_ok)
			return -EIO;
		if (j->range_total != j->size)
			return -ESTALE;
	} else {
		return http_status_errno(status) ? http_status_errno(status)
						 : -EIO;
	}
	if (j->etag_mismatch)
		return -ESTALE;
	if (j->got != j->len) {
		*retry = true; /* truncated */
		return -ECONNRESET;
	}
	return 0;
}

static void *curl_worker(void *arg)
{
	struct fetch *f = arg;
	unsigned nidle = 0, active = 0, i;
	CURL **idle = f->idle;
	struct job **act = f->act;
	bool stop = false;

	for (;;) {
		uint64_t next_due = UINT64_MAX;
		CURLMsg *msg;
		int running, left, done, timeout = 1000;

		pthread_mutex_lock(&f->lock);
		stop = f->stop;
		while (!stop && active < f->opts->connections) {
			struct job *j = take_ready(f, now_ms(), &next_due);
			CURL *h;
			int err;

			if (!j)
				break;
			pthread_mutex_unlock(&f->lock);
			h = nidle ? idle[--nidle] : curl_easy_init();
			err = h ? curl_prepare(f, j, h) : -ENOMEM;
			if (!err && curl_multi_add_handle(f->multi, h))
				err = -ENOMEM;
			if (err) {
				if (h)
					idle[nidle++] = h;
				finish(f, j, err);
			} else {
				for (i = 0; act[i]; i++)
					;
				act[i] = j;
				active++;
				STAT_ADD(requests, 1);
			}
			pthread_mutex_lock(&f->lock);
		}
		pthread_mutex_unlock(&f->lock);
		if (stop)
			break;

		curl_multi_perform(f->multi, &running);
		done = 0;
		while ((msg = curl_multi_info_read(f->multi, &left))) {
			struct job *j;
			CURL *h = msg->easy_handle;
			bool retry;
			int err;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&j);
			err = judge(j, msg->data.result, &retry);
			curl_multi_remove_handle(f->multi, h);
			idle[nidle++] = h;
			for (i = 0; act[i] != j; i++)
				;
			act[i] = NULL;
			active--;
			j->h = NULL;
			if (err && retry)
				retry_or_fail(f, j, err);
			else
				finish(f, j, err);
			done++;
		}
		/* Connections just came free: start queued jobs at once. */
		if (done)
			continue;
		if (next_due != UINT64_MAX) {
			uint64_t now = now_ms();

			timeout = next_due > now ? (int)(next_due - now) : 0;
			if (timeout > 1000)
				timeout = 1000;
		}
		curl_multi_poll(f->multi, NULL, 0, timeout, NULL);
	}

	/* Shutting down: fail what still runs. */
	for (i = 0; i < f->opts->connections; i++) {
		if (!act[i])
			continue;
		curl_multi_remove_handle(f->multi, act[i]->h);
		curl_easy_cleanup(act[i]->h);
		finish(f, act[i], -ESHUTDOWN);
	}
	while (nidle)
		curl_easy_cleanup(idle[--nidle]);
	return NULL;
}

int fetch_start(struct fetch *f)
{
	unsigned i, n = 1;
	void *(*fn)(void *) = curl_worker;

	if (f->src->kind == SOURCE_FILE) {
		fn = file_worker;
		n = f->opts->connections < FILE_THREADS_MAX
			    ? f->opts->connections
			    : FILE_THREADS_MAX;
		if (n == 0)
			n = 1;
	} else {
		/* Allocated here, so the thread cannot fail to start work. */
		f->multi = curl_multi_init();
		f->idle = calloc(f->opts->connections, sizeof(CURL *));
		f->act = calloc(f->opts->connections, sizeof(struct job *));
		if (!f->multi || !f->idle || !f->act)
			return -ENOMEM;
		curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
				  (long)f->opts->connections);
		curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
				  (long)f->opts->connections);
		curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS,
				  (long)f->opts->connections);
	}
	for (i = 0; i < n; i++) {
		int r = pthread_create(&f->threads[i], NULL, fn, f);

		if (r)
			return -r;
		f->nthreads++;
	}
	return 0;
}

void fetch_free(struct fetch *f)
{
	struct job *j;
	unsigned i;

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	if (f->multi)
		curl_multi_wakeup(f->multi);
	for (i = 0; i < f->nthreads; i++)
		pthread_join(f->threads[i], NULL);
	while ((j = queue_pop(&f->demand)) || (j = queue_pop(&f->ahead)))
		finish(f, j, -ESHUTDOWN);
	if (f->multi)
		curl_multi_cleanup(f->multi);
	free(f->idle);
	free(f->act);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}
