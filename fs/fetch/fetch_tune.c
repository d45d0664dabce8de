/* Adaptive concurrency: see fetch_tune.h. */
#include "fetch_tune.h"

#include <string.h>

/* The step up from @l: double (@big) or by half, and straight to the
 * maximum once within a fifth of it (a last step of a few connections
 * would gain too little to measure). */
static unsigned step_up(const struct fetch_tune *t, unsigned l, bool big)
{
	unsigned n = big ? 2 * l : l + (l + 1) / 2;

	if (n >= t->max || (uint64_t)n * 5 > (uint64_t)t->max * 4)
		return t->max;
	return n;
}

/* The gain a step from @from to @to must show to be kept: a fifth of
 * what a link that scales would give, at least 5% (noise). */
static double gain_needed(unsigned from, unsigned to)
{
	double g = 0.2 * ((double)to / from - 1);

	return g > 0.05 ? g : 0.05;
}

static void set_limit(struct fetch_tune *t, unsigned l, uint64_t now)
{
	if (l != t->limit) {
		t->limit = l;
		t->changes++;
	}
	t->win_open = false;
	t->settle_until_ms = now + FETCH_TUNE_SETTLE_MS;
}

/* Hold @l. @tried: the step above it that did not pay, measured at
 * @tried_rate (0: none), checked once more against the next window at @l:
 * the step's base may have been measured while the link changed. */
static void settle(struct fetch_tune *t, unsigned l, unsigned tried,
		   double tried_rate, uint64_t now)
{
	t->state = FETCH_TUNE_HOLD;
	t->probing = false;
	t->hold_wins = 0;
	t->tried_limit = t->confirming ? 0 : tried;
	t->tried_rate = tried_rate;
	t->confirming = false;
	t->settled = true;
	set_limit(t, l, now);
}

/* One step up from the current limit, measured against @rate there. */
static void probe(struct fetch_tune *t, double rate, uint64_t now)
{
	t->state = FETCH_TUNE_GROW;
	t->probing = true;
	t->base_limit = t->limit;
	t->base_rate = rate;
	set_limit(t, step_up(t, t->limit, false), now);
}

/* A window at the current limit measured @rate bytes/ms. */
static void window_done(struct fetch_tune *t, uint64_t now, double rate)
{
	t->rate = rate;
	if (t->state == FETCH_TUNE_HOLD) {
		if (t->hold_wins++ == 0) {
			unsigned tried = t->tried_limit;

			t->tried_limit = 0;
			t->hold_rate = rate; /* the reference at this limit */
			if (tried &&
			    t->tried_rate >=
				    rate * (1 + gain_needed(t->limit, tried))) {
				/* The step would pay against this: once
				 * more, from this base. */
				t->confirming = true;
				t->state = FETCH_TUNE_GROW;
				t->probing = true;
				t->base_limit = t->limit;
				t->base_rate = rate;
				set_limit(t, tried, now);
			}
			return;
		}
		if (t->limit >= t->max ||
		    (t->hold_wins < t->hold_len && rate >= 0.7 * t->hold_rate))
			return;
		/* Time to look again, or the link changed. */
		probe(t, rate, now);
		return;
	}
	if (t->base_rate <= 0) {
		/* The first window at the start value: the base. */
		t->base_limit = t->limit;
		t->base_rate = rate;
		if (t->limit >= t->max)
			settle(t, t->limit, 0, 0, now);
		else
			set_limit(t, step_up(t, t->limit, !t->probing), now);
		return;
	}
	if (rate >= t->base_rate * (1 + gain_needed(t->base_limit, t->limit))) {
		/* The step paid: keep it, try the next, double while the
		 * link scales (at least 60% of a linear gain). */
		bool big = rate / t->base_rate - 1 >=
			   0.6 * ((double)t->limit / t->base_limit - 1);

		if (t->probing)
			t->hold_len = FETCH_TUNE_HOLD_WINDOWS;
		t->confirming = false;
		t->base_limit = t->limit;
		t->base_rate = rate;
		if (t->limit >= t->max)
			settle(t, t->limit, 0, 0, now);
		else
			set_limit(t, step_up(t, t->limit, big), now);
		return;
	}
	/* It did not pay (or throughput fell): back to the limit below. */
	if (t->probing && t->hold_len < 16 * FETCH_TUNE_HOLD_WINDOWS)
		t->hold_len *= 2;
	settle(t, t->base_limit, t->limit, rate, now);
}

void fetch_tune_init(struct fetch_tune *t, unsigned start, unsigned max,
		     uint64_t unit)
{
	memset(t, 0, sizeof(*t));
	t->max = max ? max : 1;
	t->limit = start < 1 ? 1 : start > t->max ? t->max : start;
	t->unit = unit;
	t->state = FETCH_TUNE_GROW;
	t->hold_len = FETCH_TUNE_HOLD_WINDOWS;
}

unsigned fetch_tune_update(struct fetch_tune *t, uint64_t now_ms,
			   uint64_t bytes, bool busy)
{
	uint64_t el;

	if (!busy) {
		/* Nothing waits: the limit is not what bounds throughput. */
		if (!t->idle_since_ms)
			t->idle_since_ms = now_ms ? now_ms : 1;
		t->win_open = false;
		return t->limit;
	}
	if (!t->started || t->idle_since_ms) {
		/* Work (re)starts: after a long gap the demand may be
		 * another's, so measure here and probe up again; a step
		 * the gap cut short is undone first (never measured). */
		if (t->started &&
		    now_ms - t->idle_since_ms >= FETCH_TUNE_IDLE_MS) {
			if (t->state == FETCH_TUNE_GROW && t->base_rate > 0)
				set_limit(t, t->base_limit, now_ms);
			if (t->state == FETCH_TUNE_GROW || t->limit < t->max) {
				t->state = FETCH_TUNE_GROW;
				t->probing = true;
				t->base_rate = 0;
			}
		}
		t->started = true;
		t->idle_since_ms = 0;
		t->settle_until_ms = now_ms + FETCH_TUNE_SETTLE_MS;
	}
	if (now_ms < t->settle_until_ms)
		return t->limit;
	if (!t->win_open) {
		/* Bytes reported now arrived before the window. */
		t->win_open = true;
		t->win_start_ms = now_ms;
		t->win_bytes = 0;
		return t->limit;
	}
	t->win_bytes += bytes;
	el = now_ms - t->win_start_ms;
	if (el < FETCH_TUNE_WINDOW_MS ||
	    (t->win_bytes < t->limit * t->unit / 8 &&
	     el < FETCH_TUNE_WINDOW_MAX_MS))
		return t->limit;
	t->win_open = false;
	/* Nothing arrived (a source that hangs): no throughput to compare,
	 * and more connections to it would only hang too. */
	if (t->win_bytes)
		window_done(t, now_ms, (double)t->win_bytes / (double)el);
	if (now_ms >= t->settle_until_ms) {
		/* Same limit: the next window starts here. */
		t->win_open = true;
		t->win_start_ms = now_ms;
		t->win_bytes = 0;
	}
	return t->limit;
}

bool fetch_tune_settled(struct fetch_tune *t, double *ret_rate)
{
	bool s = t->settled;

	t->settled = false;
	if (ret_rate)
		*ret_rate = t->base_rate * 1000; /* measured at the limit */
	return s;
}
