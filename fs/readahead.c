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

bool readahead_issue_begin(struct readahead *ra)
{
	return pthread_mutex_trylock(&ra->issue) == 0;
}

void readahead_issue_end(struct readahead *ra)
{
	pthread_mutex_unlock(&ra->issue);
}

/* A read continues a stream when it starts between the stream's end minus
 * its window (reordered reads from several threads or faults) and its end
 * plus its window (a reader that skipped a little). */
static int continues(const struct readahead_stream *s, uint64_t off)
{
	uint64_t lo = s->next > s->window ? s->next - s->window : 0;

	return s->window && off >= lo && off <= s->next + s->window;
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
	}
	s->last_use = ra->clock;
	window = s->window;
	pthread_mutex_unlock(&ra->lock);
	return window;
}
