#include "mock_source.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int mock_read_block(struct source *s, const struct node *file,
			   const char *etag, uint64_t off, size_t len,
			   char *buf)
{
	struct mock_source *m = (struct mock_source *)s;
	unsigned i;
	int r = 0;

	pthread_mutex_lock(&m->lock);
	i = m->calls++;
	if (i < MOCK_MAX)
		m->offs[i] = off;
	while (m->hold && !m->passes) {
		m->waiting++;
		pthread_cond_broadcast(&m->cond);
		pthread_cond_wait(&m->cond, &m->lock);
		m->waiting--;
	}
	if (m->hold && m->passes != UINT_MAX)
		m->passes--;
	if (i < m->nscript)
		r = m->script[i];
	pthread_mutex_unlock(&m->lock);
	if (!r)
		for (size_t k = 0; k < len; k++)
			buf[k] = (char)mock_byte(off + k);
	return r;
}

static void mock_free_op(struct source *s)
{
	mock_free((struct mock_source *)s);
}

static const struct source_ops mock_ops = {
	.read_block = mock_read_block,
	.free = mock_free_op,
};

struct mock_source *mock_new(void)
{
	struct mock_source *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->s.ops = &mock_ops;
	m->s.display = strdup("mock://");
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	return m;
}

void mock_free(struct mock_source *m)
{
	if (!m)
		return;
	free(m->s.display);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void mock_script(struct mock_source *m, const int *r, unsigned n)
{
	pthread_mutex_lock(&m->lock);
	for (unsigned i = 0; i < n && m->calls + i < MOCK_MAX; i++)
		m->script[m->calls + i] = r[i];
	m->nscript = m->calls + n;
	pthread_mutex_unlock(&m->lock);
}

int mock_wait_held(struct mock_source *m, unsigned n)
{
	struct timespec ts;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	pthread_mutex_lock(&m->lock);
	while (m->waiting < n && !err)
		err = pthread_cond_timedwait(&m->cond, &m->lock, &ts);
	err = m->waiting >= n ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&m->lock);
	return err;
}

void mock_release(struct mock_source *m, unsigned n)
{
	pthread_mutex_lock(&m->lock);
	if (n == UINT_MAX)
		m->hold = false;
	else
		m->passes += n;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

unsigned mock_calls(struct mock_source *m)
{
	unsigned n;

	pthread_mutex_lock(&m->lock);
	n = m->calls;
	pthread_mutex_unlock(&m->lock);
	return n;
}
