#include "readahead.h"

#include <string.h>

void readahead_init(struct readahead *ra)
{
	memset(ra, 0, sizeof(*ra));
	pthread_mutex_init(&ra->lock, NULL);
	pthread_mutex_init(&ra->issue, NULL);
}

void readahead_done(struct readahead *ra)
{
	pthread_mutex_destroy(&ra->issue);
	pthread_mutex_destroy(&ra->lock);
}

/* A read continues a stream when it starts between the stream's end minus
 * its window (reordered reads from several threads or faults) and its end
 * plus its window (a reader that skipped a little). */
static int continues(const struct readahead_stream *s, uint64_t off)
{
	uint64_t lo = s->next > s->window ? s->next - s->window : 0;

	return s->window && off >= lo && off <= s->next + s->window;
}

/* The id of the stream a read ending at @end was accounted to: the one
 * ending there, else one it continues (a read behind the end), else 0.
 * Under ra->lock. */
static uint64_t stream_at(const struct readahead *ra, uint64_t end)
{
	int i;

	for (i = 0; i < READAHEAD_STREAMS; i++)
		if (ra->s[i].window && ra->s[i].next == end)
			return ra->s[i].id;
	for (i = 0; i < READAHEAD_STREAMS; i++)
		if (continues(&ra->s[i], end))
			return ra->s[i].id;
	return 0;
}

bool readahead_issue_begin(struct readahead *ra, uint64_t end)
{
	uint64_t id;

	pthread_mutex_lock(&ra->lock);
	id = stream_at(ra, end);
	if (pthread_mutex_trylock(&ra->issue) != 0) {
		/* The holder's step covers this stream's window. */
		if (id && id == ra->issuer) {
			pthread_mutex_unlock(&ra->lock);
			return false;
		}
		/* Another stream's: the holder only queues fetches, so this
		 * is a short wait, and skipping would lose this stream's step
		 * until its next read. */
		pthread_mutex_unlock(&ra->lock);
		pthread_mutex_lock(&ra->issue);
		pthread_mutex_lock(&ra->lock);
		id = stream_at(ra, end);
	}
	ra->issuer = id;
	pthread_mutex_unlock(&ra->lock);
	return true;
}

void readahead_issue_end(struct readahead *ra)
{
	pthread_mutex_lock(&ra->lock);
	ra->issuer = 0;
	pthread_mutex_unlock(&ra->lock);
	pthread_mutex_unlock(&ra->issue);
}

uint64_t readahead_update(struct readahead *ra, uint64_t off, uint64_t len,
			  uint64_t initial, uint64_t max)
{
	struct readahead_stream *s = NULL, *oldest = &ra->s[0];
	uint64_t end = off + len, window;
	int i;

	if (max == 0)
		return 0;
	if (initial == 0 || initial > max)
		initial = max;
	pthread_mutex_lock(&ra->lock);
	ra->clock++;
	for (i = 0; i < READAHEAD_STREAMS; i++) {
		if (continues(&ra->s[i], off)) {
			s = &ra->s[i];
			break;
		}
		if (ra->s[i].last_use < oldest->last_use)
			oldest = &ra->s[i];
	}
	if (s) {
		/* A read behind the end (reordered) neither moves nor grows
		 * the stream. */
		if (end > s->next) {
			s->next = end;
			s->window = s->window * 2 < max ? s->window * 2 : max;
		}
		if (s->window > max)
			s->window = max;
	} else {
		s = oldest;
		s->next = end;
		s->window = initial;
		s->id = ra->clock;
	}
	s->last_use = ra->clock;
	window = s->window;
	pthread_mutex_unlock(&ra->lock);
	return window;
}
