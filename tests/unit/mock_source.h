/* An in-process source for the fetch engine's unit tests: implements
 * source_ops.read_block with scripted results, records every read, and can
 * hold reads until the test releases them, so tests order events with
 * condition variables instead of sleeps. */
#ifndef WFS_TESTS_MOCK_SOURCE_H
#define WFS_TESTS_MOCK_SOURCE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "source.h"

#define MOCK_MAX 256

struct mock_source {
	struct source s;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int script[MOCK_MAX]; /* result of read i: 0 (data) or -errno */
	unsigned nscript;     /* past the script: 0 */
	unsigned calls;	      /* reads started */
	uint64_t offs[MOCK_MAX];
	bool hold;	  /* reads wait until mock_release() */
	unsigned waiting; /* reads waiting now */
	unsigned passes;  /* reads mock_release() lets through */
};

/* mock_new() - a mock source; its bytes are mock_byte(off). */
struct mock_source *mock_new(void);
void mock_free(struct mock_source *m);

static inline unsigned char mock_byte(uint64_t off)
{
	return (unsigned char)(off * 131 + (off >> 13));
}

/* mock_script() - the next reads return @n results from @r. */
void mock_script(struct mock_source *m, const int *r, unsigned n);

/* mock_wait_reads() - wait until @n reads wait in hold (5 s at most).
 * @return 0 or -ETIMEDOUT. */
int mock_wait_held(struct mock_source *m, unsigned n);

/* mock_release() - let @n held reads (and later ones) through; UINT_MAX:
 * stop holding. */
void mock_release(struct mock_source *m, unsigned n);

unsigned mock_calls(struct mock_source *m);

#endif
