#include "staging.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "cuda.h"
#include "errmsg.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct staging kept; /* protected by lock */

int staging_take(bool pinned, size_t len, struct staging *ret)
{
	struct staging s = { .pinned = pinned, .len = len };
	int r;

	if (!pinned) {
		if (posix_memalign(&s.buf, 4096, len))
			return err_set(-ENOMEM, "out of memory for staging");
		*ret = s;
		return 0;
	}
	pthread_mutex_lock(&lock);
	if (kept.buf && kept.len >= len) {
		s = kept;
		kept.buf = NULL;
	}
	pthread_mutex_unlock(&lock);
	if (s.buf) {
		*ret = s;
		return 0;
	}
	r = cuda_host_alloc(len, &s.buf);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

void staging_put(struct staging *s)
{
	void *drop = NULL;

	if (!s->buf)
		return;
	if (!s->pinned) {
		free(s->buf);
		s->buf = NULL;
		return;
	}
	pthread_mutex_lock(&lock);
	if (!kept.buf || kept.len < s->len) {
		drop = kept.buf;
		kept = *s;
	} else {
		drop = s->buf;
	}
	pthread_mutex_unlock(&lock);
	cuda_host_free(drop);
	s->buf = NULL;
}

void staging_release(void)
{
	void *drop;

	pthread_mutex_lock(&lock);
	drop = kept.buf;
	kept.buf = NULL;
	pthread_mutex_unlock(&lock);
	cuda_host_free(drop);
}
