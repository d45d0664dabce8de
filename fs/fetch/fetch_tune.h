/* Adaptive concurrency (`connections=auto`): how many requests to keep in
 * flight. Pure logic, no threads, no I/O, no clock of its own: the
 * transport reports, every few tens of milliseconds, the body bytes
 * received since its last report and whether work waited for a
 * connection; the tuner answers the limit to use from then on.
 *
 * It measures aggregate throughput over windows (at least
 * FETCH_TUNE_WINDOW_MS, and an eighth of a request's bytes per
 * connection, or FETCH_TUNE_WINDOW_MAX_MS) in which work waited for a
 * connection at every report: an idle moment (nothing queued) discards
 * the window, since then the limit did not bound throughput. After each
 * change the limit settles for FETCH_TUNE_SETTLE_MS before a window opens.
 *
 * Growth: from the start value, step up (straight to the maximum once
 * within a fifth of it) while each step gains at least a fifth of what it
 * would give on a link that scales (at least 5%: +20% for a step of x2,
 * +10% for x1.5); steps double while the last gained at least 60% of
 * that (the first step from the start value doubles too), else grow by
 * half, and a look up from a held limit grows by half. A step that gains
 * less, or loses, is undone and the tuner holds the limit below it
 * (settled). The first window after settling is
 * the reference at that limit; if the undone step would have paid against
 * it (its base was measured while the link changed), the step is tried
 * once more. While holding it keeps measuring: it probes one step up
 * again after FETCH_TUNE_HOLD_WINDOWS windows (doubling after each probe
 * that did not pay, up to 16x), at once when throughput falls below 70%
 * of the reference, and when work resumes after an idle gap of
 * FETCH_TUNE_IDLE_MS (the demand changed). */
#ifndef WFS_FS_FETCH_TUNE_H
#define WFS_FS_FETCH_TUNE_H

#include <stdbool.h>
#include <stdint.h>

#define FETCH_TUNE_WINDOW_MS 300
#define FETCH_TUNE_WINDOW_MAX_MS 2000
#define FETCH_TUNE_SETTLE_MS 100
#define FETCH_TUNE_HOLD_WINDOWS 20
#define FETCH_TUNE_IDLE_MS 2000

enum fetch_tune_state {
	FETCH_TUNE_GROW, /* measuring a step up (or the start) */
	FETCH_TUNE_HOLD, /* settled */
};

struct fetch_tune {
	unsigned max;	/* the limit never goes above */
	unsigned limit; /* what to use now */
	uint64_t unit;	/* bytes of one request (a block) */
	enum fetch_tune_state state;
	/* The window: open from win_start_ms (after settle_until_ms). */
	bool win_open;
	uint64_t win_start_ms, win_bytes;
	uint64_t settle_until_ms;
	uint64_t idle_since_ms; /* 0: busy at the last report */
	bool started;		/* reported at least once */
	/* The last accepted measurement: base_rate bytes/ms at base_limit
	 * (0: none yet). */
	unsigned base_limit;
	double base_rate;
	double rate;	      /* the last window's, bytes/ms */
	double hold_rate;     /* the first window's after settling */
	unsigned hold_wins;   /* windows measured while holding */
	unsigned hold_len;    /* ...before probing up again */
	bool probing;	      /* this growth is a re-probe from HOLD */
	bool confirming;      /* ...checking a step that did not pay */
	unsigned tried_limit; /* the step that did not pay, or 0 */
	double tried_rate;    /* what it gave */
	unsigned changes;     /* limit changes so far */
	bool settled;	      /* just settled: fetch_tune_settled() */
};

/*
 * fetch_tune_init() - start at @start requests in flight (at least 1, at
 * most @max), @unit bytes per request.
 */
void fetch_tune_init(struct fetch_tune *t, unsigned start, unsigned max,
		     uint64_t unit);

/*
 * fetch_tune_update() - @bytes more body bytes were received by @now_ms
 * (monotonic) since the last call; @busy: work is waiting for a
 * connection now (queued requests the limit keeps from starting).
 * @return the limit to use from now on.
 */
unsigned fetch_tune_update(struct fetch_tune *t, uint64_t now_ms,
			   uint64_t bytes, bool busy);

/*
 * fetch_tune_settled() - whether the last update settled the limit (once
 * per settling; for a log line). @ret_rate: the throughput it settled
 * at, bytes per second.
 */
bool fetch_tune_settled(struct fetch_tune *t, double *ret_rate);

#endif
