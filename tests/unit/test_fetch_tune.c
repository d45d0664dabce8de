/* The connections=auto tuner (fetch_tune.c) against synthetic links: the
 * limit must grow while throughput grows with it, stop near where it
 * stops growing, not run to the maximum nor oscillate, back off when more
 * connections lose throughput, ignore idle periods, and look again when
 * the link or the demand changes. */
#include <math.h>
#include <stdio.h>

#include "fetch_tune.h"
#include "check.h"

#define MiB (1024.0 * 1024.0)
#define BLOCK (8ull << 20)
#define TICK_MS 20

/* Throughput in bytes/ms with @n requests in flight at time @ms. */
typedef double (*link_fn)(unsigned n, uint64_t ms);

/* Per connection 10 MiB/s; the link saturates at 12 connections. */
static double sat12(unsigned n, uint64_t ms)
{
	(void)ms;
	return (n < 12 ? n : 12) * 10 * MiB / 1000;
}

static double sat16(unsigned n, uint64_t ms)
{
	(void)ms;
	return (n < 16 ? n : 16) * 10 * MiB / 1000;
}

/* Scales with every connection (a per-connection cap, a wide link). */
static double linear(unsigned n, uint64_t ms)
{
	(void)ms;
	return n * 50 * MiB / 1000;
}

/* A source that hangs: requests wait, no bytes come. */
static double nothing(unsigned n, uint64_t ms)
{
	(void)n;
	(void)ms;
	return 0;
}

/* Slow: 1 MiB/s per connection, so windows wait for bytes. */
static double slow(unsigned n, uint64_t ms)
{
	(void)ms;
	return n * 1 * MiB / 1000;
}

/* A server that gets slower past 20 connections (overload). */
static double peak20(unsigned n, uint64_t ms)
{
	double c = n <= 20 ? n : 20 - 0.5 * (n - 20);

	(void)ms;
	return (c < 1 ? 1 : c) * 10 * MiB / 1000;
}

/* Saturates at 16 for the first 20 s, then scales (the bottleneck went). */
static double sat16_then_linear(unsigned n, uint64_t ms)
{
	return ms < 20000 ? sat16(n, ms) : linear(n, ms);
}

/* Saturates at 16 connections of 10 MiB/s, then each connection gets
 * 4 MiB/s and the link saturates at 64 (a congested path). */
static double slower_per_conn(unsigned n, uint64_t ms)
{
	if (ms < 10000)
		return sat16(n, ms);
	return (n < 64 ? n : 64) * 4 * MiB / 1000;
}

static unsigned long long rng = 88172645463325252ull;

/* Uniform in [-1, 1], deterministic. */
static double noise(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng % 2000001) / 1000000.0 - 1;
}

struct sim {
	struct fetch_tune t;
	uint64_t now;
	unsigned prev_limit;  /* before the last change */
	uint64_t changed_ms;  /* when the limit last rose */
	unsigned max_seen;    /* the highest limit used */
	double limit_ms;      /* integral of the limit over time */
	uint64_t measured_ms; /* time the integral covers */
	double noise;	      /* +-: per 200 ms stretch, and per tick */
	double level;	      /* this stretch's noise */
};

static void sim_init(struct sim *s, unsigned start, unsigned max)
{
	*s = (struct sim){ 0 };
	fetch_tune_init(&s->t, start, max, BLOCK);
	s->now = 1000;
	s->prev_limit = s->t.limit;
	s->max_seen = s->t.limit;
}

/* Run @ms of ticks: @busy or idle, bytes as @link gives them. New
 * connections deliver nothing for their first 60 ms (connect, first
 * byte). */
static void sim_run(struct sim *s, link_fn link, uint64_t ms, bool busy)
{
	uint64_t end = s->now + ms;

	while (s->now < end) {
		unsigned n = s->t.limit, before = s->t.limit, lim;
		double bytes;

		if (s->now - s->changed_ms < 60 && s->prev_limit < n)
			n = s->prev_limit;
		if (s->now % 200 < TICK_MS)
			s->level = s->noise * noise();
		bytes = busy ? link(n, s->now) * TICK_MS *
					(1 + s->level + s->noise * noise() / 2)
			     : 0;
		s->now += TICK_MS;
		lim = fetch_tune_update(&s->t, s->now, (uint64_t)bytes, busy);
		CHECK(lim >= 1 && lim <= s->t.max, "limit %u", lim);
		CHECK(lim == s->t.limit, "update returned %u, state says %u",
		      lim, s->t.limit);
		if (lim > s->max_seen)
			s->max_seen = lim;
		if (lim > before) {
			s->prev_limit = before;
			s->changed_ms = s->now;
		}
		s->limit_ms += (double)lim * TICK_MS;
		s->measured_ms += TICK_MS;
	}
}

/* The limit it holds, or, while it looks one step up, the one below. */
static unsigned held(const struct sim *s)
{
	return s->t.state == FETCH_TUNE_HOLD ? s->t.limit : s->t.base_limit;
}

static double sim_avg(struct sim *s)
{
	double a = s->measured_ms ? s->limit_ms / (double)s->measured_ms : 0;

	s->limit_ms = 0;
	s->measured_ms = 0;
	return a;
}

int main(void)
{
	struct sim s;
	double avg, rate;

	/* Saturates at 12, started at the default 16: one look at 32 (no
	 * gain), then it holds 16, never near the maximum. */
	sim_init(&s, 16, 64);
	sim_run(&s, sat12, 5000, true);
	CHECK_EQ(s.t.limit, 16);
	CHECK_EQ(s.t.state, FETCH_TUNE_HOLD);
	CHECK(s.max_seen <= 32, "went to %u", s.max_seen);
	CHECK(fetch_tune_settled(&s.t, &rate));
	CHECK(fabs(rate - 120 * MiB) < 6 * MiB, "settled at %.0f MiB/s",
	      rate / MiB);
	CHECK(!fetch_tune_settled(&s.t, NULL)); /* once per settling */

	/* Over two minutes it looks up again (by half: 24) now and then,
	 * less and less often, and spends its time at 16: no oscillation. */
	sim_avg(&s);
	sim_run(&s, sat12, 120000, true);
	avg = sim_avg(&s);
	CHECK(held(&s) == 16, "limit %u", held(&s));
	CHECK(avg < 17.5, "mean limit %.1f", avg);
	CHECK(s.t.changes <= 10, "%u changes", s.t.changes);
	CHECK(s.max_seen <= 32, "went to %u", s.max_seen);

	/* Started lower (8), it stops near the knee: 16 gained half of
	 * what doubling would, so it tried 24 next, which did not pay. */
	sim_init(&s, 8, 64);
	sim_run(&s, sat12, 8000, true);
	CHECK(s.t.limit >= 12 && s.t.limit <= 16, "limit %u", s.t.limit);
	CHECK(s.max_seen <= 24, "went to %u", s.max_seen);

	/* A link that scales: the maximum, within 1.2 s, and it stays. */
	sim_init(&s, 16, 64);
	sim_run(&s, linear, 1200, true);
	CHECK_EQ(s.t.limit, 64);
	sim_run(&s, linear, 30000, true);
	CHECK_EQ(s.t.limit, 64);
	CHECK_EQ(s.t.changes, 2); /* 16 -> 32 -> 64 */
	/* ... and with a higher maximum it keeps doubling. */
	sim_init(&s, 16, 256);
	sim_run(&s, linear, 3000, true);
	CHECK_EQ(s.t.limit, 256);
	CHECK_EQ(s.t.changes, 4); /* 16 -> 32 -> 64 -> 128 -> 256 */

	/* A maximum below the start: the start is clamped to it. */
	sim_init(&s, 16, 8);
	CHECK_EQ(s.t.limit, 8);
	sim_run(&s, linear, 5000, true);
	CHECK_EQ(s.t.limit, 8);
	CHECK(s.max_seen <= 8);

	/* Slow connections (1 MiB/s, 8 MiB blocks): windows last longer,
	 * growth still reaches the maximum. */
	sim_init(&s, 16, 64);
	sim_run(&s, slow, 15000, true);
	CHECK_EQ(s.t.limit, 64);

	/* A server that loses throughput past 20 connections: more does not
	 * pay, it backs off to where throughput was best seen. */
	sim_init(&s, 16, 64);
	sim_run(&s, peak20, 60000, true);
	CHECK(held(&s) >= 16 && held(&s) <= 24, "limit %u", held(&s));
	CHECK(s.max_seen <= 36, "went to %u", s.max_seen);
	avg = sim_avg(&s);
	CHECK(avg < 26, "mean limit %.1f", avg);

	/* Noise (+-8% per 200 ms, +-4% per tick) on the saturating link:
	 * no false steps beyond one. */
	sim_init(&s, 16, 64);
	s.noise = 0.08;
	sim_run(&s, sat12, 60000, true);
	avg = sim_avg(&s);
	CHECK(held(&s) <= 24, "limit %u", held(&s));
	CHECK(avg < 20, "mean limit %.1f", avg);
	CHECK(s.max_seen <= 36, "went to %u", s.max_seen);
	/* ... nor missed steps on the linear one. */
	sim_init(&s, 16, 64);
	s.noise = 0.08;
	sim_run(&s, linear, 5000, true);
	CHECK_EQ(s.t.limit, 64);

	/* Idle (nothing queued): no signal, the limit does not move, however
	 * much the link would scale. */
	sim_init(&s, 16, 64);
	sim_run(&s, linear, 20000, false);
	CHECK_EQ(s.t.limit, 16);
	CHECK_EQ(s.t.changes, 0);
	/* Work waits but nothing arrives (a hung source): no step up. */
	sim_init(&s, 16, 64);
	sim_run(&s, nothing, 20000, true);
	CHECK_EQ(s.t.limit, 16);
	CHECK_EQ(s.t.changes, 0);

	/* Short idle moments discard windows but do not stop growth. */
	for (int i = 0; i < 20; i++) {
		sim_run(&s, linear, 600, true);
		sim_run(&s, linear, 40, false);
	}
	CHECK_EQ(s.t.limit, 64);

	/* The bottleneck goes away while holding: the periodic look up
	 * finds it, and it grows to the maximum. */
	sim_init(&s, 16, 64);
	sim_run(&s, sat16_then_linear, 19000, true);
	CHECK_EQ(s.t.limit, 16);
	sim_run(&s, sat16_then_linear, 41000, true);
	CHECK_EQ(s.t.limit, 64);

	/* Each connection gets slower (throughput at the held limit falls
	 * below 70%): it looks up at once, within 3 s. */
	sim_init(&s, 16, 64);
	sim_run(&s, slower_per_conn, 10000, true);
	CHECK_EQ(s.t.limit, 16);
	sim_run(&s, slower_per_conn, 3000, true);
	CHECK(s.t.limit > 16, "limit %u", s.t.limit);
	sim_run(&s, slower_per_conn, 10000, true);
	CHECK_EQ(s.t.limit, 64);

	/* After an idle gap the demand may have changed: it measures and
	 * looks up again when work resumes (here: the link now scales). */
	sim_init(&s, 16, 64);
	sim_run(&s, sat16, 5000, true);
	CHECK_EQ(s.t.limit, 16);
	sim_run(&s, sat16, 3000, false);
	sim_run(&s, linear, 3000, true);
	CHECK_EQ(s.t.limit, 64);

	/* A step the end of the work cut short (no window at 32 yet) is
	 * undone when work resumes, then measured afresh: on a link that
	 * now saturates it ends where it was, not one step up. */
	sim_init(&s, 16, 64);
	sim_run(&s, linear, 560, true);
	CHECK_EQ(s.t.limit, 32);
	CHECK_EQ(s.t.state, FETCH_TUNE_GROW);
	sim_run(&s, linear, 3000, false);
	CHECK_EQ(s.t.limit, 32);
	sim_run(&s, sat16, 8000, true);
	CHECK(held(&s) == 16, "limit %u", held(&s));

	printf("fetch_tune: ok\n");
	return 0;
}
