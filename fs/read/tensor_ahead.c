#include "tensor_ahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "fetch.h"
#include "safetensors.h"
#include "tree.h"

enum ta_state {
	TA_UNKNOWN, /* not parsed (yet, or since the object changed) */
	TA_PARSING, /* one thread reads and parses the header */
	TA_READY,
	TA_NONE, /* not a safetensors file we can use */
};

enum { ORDER_NAME, ORDER_FILE, ORDERS };

#define SEEN 1u
#define ISSUED 2u
#define PLANNED 4u /* in the plan being made (plan_read()) */

struct tensor_ahead {
	pthread_mutex_t lock;
	/* Everything below is protected by lock. */
	enum ta_state state;
	uint32_t generation; /* the one parsed (TA_READY, TA_NONE) */
	size_t nt;
	uint64_t *begin, *end;	  /* file offsets, in file order */
	uint32_t *by_name;	  /* name-order position -> file index */
	uint32_t *name_pos;	  /* file index -> name-order position */
	uint64_t *prefix[ORDERS]; /* bytes before each position, nt + 1 */
	uint8_t *flags;		  /* per file index: SEEN, ISSUED */
	size_t upto[ORDERS];	  /* positions before it are issued */
	/* For the last 16 tensors reached for the first time, one bit each:
	 * its predecessor in that order had not been reached before. The
	 * order with fewer such misses is the one readers follow. */
	uint16_t miss[ORDERS];
	uint32_t last_new; /* file index of the last tensor reached first */
	size_t reached;	   /* tensors reached so far */
};

static void map_clear(struct tensor_ahead *ta)
{
	free(ta->begin);
	free(ta->end);
	free(ta->by_name);
	free(ta->name_pos);
	free(ta->prefix[0]);
	free(ta->prefix[1]);
	free(ta->flags);
	ta->begin = ta->end = NULL;
	ta->by_name = ta->name_pos = NULL;
	ta->prefix[0] = ta->prefix[1] = NULL;
	ta->flags = NULL;
	ta->nt = 0;
	memset(ta->upto, 0, sizeof(ta->upto));
	memset(ta->miss, 0, sizeof(ta->miss));
	ta->last_new = UINT32_MAX;
	ta->reached = 0;
}

void tensor_ahead_free(struct tensor_ahead *ta)
{
	if (!ta)
		return;
	map_clear(ta);
	pthread_mutex_destroy(&ta->lock);
	free(ta);
}

static bool is_safetensors(const struct node *n)
{
	static const char ext[] = ".safetensors";
	size_t len = strlen(n->name);

	return len > sizeof(ext) - 1 &&
	       !strcmp(n->name + len - (sizeof(ext) - 1), ext);
}

/* @n's state, made on first use (NULL when out of memory). */
static struct tensor_ahead *state_of(struct node *n)
{
	struct tensor_ahead *ta, *exp = NULL;

	ta = __atomic_load_n(&n->ta, __ATOMIC_ACQUIRE);
	if (ta)
		return ta;
	ta = calloc(1, sizeof(*ta));
	if (!ta)
		return NULL;
	pthread_mutex_init(&ta->lock, NULL);
	ta->last_new = UINT32_MAX;
	if (__atomic_compare_exchange_n(&n->ta, &exp, ta, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return ta;
	tensor_ahead_free(ta); /* another thread made it first */
	return exp;
}

/* Copy [@off, @off + @len) of the file out of the cache into @buf. */
static int read_bytes(struct cache *c, struct node *n, uint32_t gen,
		      uint64_t fsize, uint64_t off, size_t len, char *buf)
{
	uint64_t bs = cache_block_size(c);

	while (len) {
		uint64_t idx = off / bs, boff = off - idx * bs;
		uint64_t blen = fsize - idx * bs < bs ? fsize - idx * bs : bs;
		size_t take = blen - boff < len ? blen - boff : len;
		struct block *b;
		int err = cache_get(c, n, gen, idx, blen, &b);

		if (err)
			return err;
		memcpy(buf, b->data + boff, take);
		cache_unref(c, b);
		buf += take;
		off += take;
		len -= take;
	}
	return 0;
}

static const struct safetensors *sort_st; /* qsort has no context */

static int by_name_cmp(const void *a, const void *b)
{
	const uint32_t *x = a, *y = b;

	return strcmp(sort_st->tensors[*x].name, sort_st->tensors[*y].name);
}

static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

/* Build the map of @st (data section at @base) into @ta. */
static int map_build(struct tensor_ahead *ta, const struct safetensors *st,
		     uint64_t base)
{
	size_t i, nt = st->ntensors;

	ta->begin = calloc(nt ? nt : 1, sizeof(*ta->begin));
	ta->end = calloc(nt ? nt : 1, sizeof(*ta->end));
	ta->by_name = calloc(nt ? nt : 1, sizeof(*ta->by_name));
	ta->name_pos = calloc(nt ? nt : 1, sizeof(*ta->name_pos));
	ta->prefix[0] = calloc(nt + 1, sizeof(uint64_t));
	ta->prefix[1] = calloc(nt + 1, sizeof(uint64_t));
	ta->flags = calloc(nt ? nt : 1, 1);
	if (!ta->begin || !ta->end || !ta->by_name || !ta->name_pos ||
	    !ta->prefix[0] || !ta->prefix[1] || !ta->flags || nt > UINT32_MAX)
		return -ENOMEM;
	ta->nt = nt;
	for (i = 0; i < nt; i++) {
		ta->begin[i] = base + st->tensors[i].begin;
		ta->end[i] = base + st->tensors[i].end;
		ta->by_name[i] = (uint32_t)i;
	}
	pthread_mutex_lock(&sort_lock);
	sort_st = st;
	qsort(ta->by_name, nt, sizeof(*ta->by_name), by_name_cmp);
	pthread_mutex_unlock(&sort_lock);
	for (i = 0; i < nt; i++) {
		uint32_t f = ta->by_name[i];

		ta->name_pos[f] = (uint32_t)i;
		ta->prefix[ORDER_NAME][i + 1] =
			ta->prefix[ORDER_NAME][i] + ta->end[f] - ta->begin[f];
		ta->prefix[ORDER_FILE][i + 1] =
			ta->prefix[ORDER_FILE][i] + ta->end[i] - ta->begin[i];
	}
	return 0;
}

/* Start fetching the block after the first while the header is read
 * from the first: readers of either order want the first tensors soon,
 * and the plan that knows which waits for the header. One block, in a
 * request of its own: the engine would join two into one request, and
 * on a link capped per connection that one takes twice as long. */
static void prefetch_second(struct cache *c, struct node *n, uint32_t gen,
			    uint64_t fsize)
{
	uint64_t bs = cache_block_size(c);

	if (bs < fsize)
		cache_prefetch_stream(c, n, gen, 1,
				      fsize - bs < bs ? fsize - bs : bs, fsize);
}

/* Read and parse the header; @return the state it leaves. */
static enum ta_state parse(struct cache *c, struct node *n, uint32_t gen,
			   uint64_t fsize, struct tensor_ahead *ta)
{
	struct safetensors *st = NULL;
	uint8_t prefix[8];
	uint64_t hlen;
	char *json = NULL;
	int err;

	if (fsize < 8)
		return TA_NONE;
	err = read_bytes(c, n, gen, fsize, 0, 8, (char *)prefix);
	if (err)
		return TA_UNKNOWN; /* the next read tries again */
	if (safetensors_header_size(prefix, fsize, &hlen) ||
	    hlen > TENSOR_AHEAD_MAX_HEADER)
		return TA_NONE;
	json = malloc(hlen ? hlen : 1);
	if (!json)
		return TA_UNKNOWN;
	err = read_bytes(c, n, gen, fsize, 8, hlen, json);
	if (err) {
		free(json);
		return TA_UNKNOWN;
	}
	err = safetensors_parse(json, hlen, fsize - 8 - hlen, &st);
	free(json);
	if (err)
		return err == -ENOMEM ? TA_UNKNOWN : TA_NONE;
	pthread_mutex_lock(&ta->lock);
	map_clear(ta);
	err = map_build(ta, st, 8 + hlen);
	if (err)
		map_clear(ta);
	pthread_mutex_unlock(&ta->lock);
	safetensors_free(st);
	return err ? TA_UNKNOWN : TA_READY;
}

/* The file index of the first tensor ending after @off (nt if none). */
static size_t tensor_at(const struct tensor_ahead *ta, uint64_t off)
{
	size_t lo = 0, hi = ta->nt;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ta->end[mid] <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The order readers follow, from the misses of each: the file order only
 * when it has fewer (a tie, as when the file is in name order as the
 * official library writes it, is the name order: mmap faults around a
 * name-order reader's reads reach its file neighbours too). */
static int order_of(const struct tensor_ahead *ta)
{
	return __builtin_popcount(ta->miss[ORDER_FILE]) <
			       __builtin_popcount(ta->miss[ORDER_NAME])
		       ? ORDER_FILE
		       : ORDER_NAME;
}

/* Tensor @f is reached for the first time. */
static void reach(struct tensor_ahead *ta, uint32_t f)
{
	uint32_t np = ta->name_pos[f];
	bool miss_file = f > 0 && !(ta->flags[f - 1] & SEEN);
	bool miss_name = np > 0 && !(ta->flags[ta->by_name[np - 1]] & SEEN);

	ta->flags[f] |= SEEN;
	ta->miss[ORDER_FILE] =
		(uint16_t)(ta->miss[ORDER_FILE] << 1 | miss_file);
	ta->miss[ORDER_NAME] =
		(uint16_t)(ta->miss[ORDER_NAME] << 1 | miss_name);
	ta->last_new = f;
	ta->reached++;
}

static uint32_t at_pos(const struct tensor_ahead *ta, int order, size_t pos)
{
	return order == ORDER_NAME ? ta->by_name[pos] : (uint32_t)pos;
}

static size_t pos_of(const struct tensor_ahead *ta, int order, uint32_t f)
{
	return order == ORDER_NAME ? ta->name_pos[f] : f;
}

struct range {
	uint64_t begin, end;
	uint32_t f;
};

/* Whether tensor @f was issued and its first and last blocks are still
 * cached or coming (else its bytes went, or never came: fetch it again). */
static bool issued(struct tensor_ahead *ta, struct cache *c, struct node *n,
		   uint32_t gen, uint32_t f)
{
	uint64_t bs = cache_block_size(c);

	if (!(ta->flags[f] & ISSUED))
		return false;
	if (ta->begin[f] == ta->end[f] || ta->flags[f] & PLANNED)
		return true;
	return cache_has(c, n, gen, ta->begin[f] / bs) &&
	       cache_has(c, n, gen, (ta->end[f] - 1) / bs);
}

struct plan {
	struct range r[256];
	size_t n;
	uint64_t left; /* bytes the plan may still take */
};

/* Add [@begin, @end) of tensor @f to @p, within its budget (the part
 * beyond it is left for a later read). @return whether all of it went
 * in. */
static bool plan_range(uint32_t f, uint64_t begin, uint64_t end, struct plan *p)
{
	size_t cap = sizeof(p->r) / sizeof(p->r[0]);
	uint64_t len = end - begin;

	if (begin >= end)
		return true;
	if (p->n == cap || !p->left)
		return false;
	if (len > p->left)
		len = p->left;
	p->r[p->n].begin = begin;
	p->r[p->n].end = begin + len;
	p->r[p->n].f = f;
	p->n++;
	p->left -= len;
	return begin + len == end;
}

/* Under ta->lock: add tensor @t to @p unless issued. @return false when
 * the plan is full (@t goes next time). */
static bool plan_tensor(struct tensor_ahead *ta, struct cache *c,
			struct node *n, uint32_t gen, uint32_t t,
			struct plan *p)
{
	if (issued(ta, c, n, gen, t))
		return true;
	if (!plan_range(t, ta->begin[t], ta->end[t], p))
		return false;
	ta->flags[t] |= ISSUED | PLANNED;
	return true;
}

/* Under ta->lock: the window while the readers' order is not known yet
 * (the first reads reach a tensor or two, whatever order comes next):
 * the tensors not issued from the start of the name order and of the
 * file order in turn, so that both a safe_open reader (its first name
 * may be the file's last tensor) and a sequential one find their first
 * tensors coming first. */
static void plan_start(struct tensor_ahead *ta, struct cache *c, struct node *n,
		       uint32_t gen, struct plan *p)
{
	size_t pos[ORDERS];
	int o = ORDER_NAME, i;

	for (i = 0; i < ORDERS; i++)
		pos[i] = ta->upto[i];
	while (p->left &&
	       (pos[ORDER_NAME] < ta->nt || pos[ORDER_FILE] < ta->nt)) {
		if (pos[o] < ta->nt) {
			if (!plan_tensor(ta, c, n, gen, at_pos(ta, o, pos[o]),
					 p))
				break; /* cut short: this one again next time */
			pos[o]++;
		}
		o = o == ORDER_NAME ? ORDER_FILE : ORDER_NAME;
	}
	for (i = 0; i < ORDERS; i++)
		ta->upto[i] = pos[i];
}

/* Under ta->lock: the ranges to fetch for a read of [off, end), at most
 * @max bytes past the read. A tensor the read reaches for the first time
 * is fetched whole (faults into it come in any order); one reached before
 * from where the read is on (its bytes before were read: a reader that
 * came back for them gets them from the cache or on demand). Then the
 * tensors after it in the readers' order, while the budget lasts. */
static void plan_read(struct tensor_ahead *ta, struct cache *c, struct node *n,
		      uint32_t gen, uint64_t off, uint64_t end, uint64_t max,
		      uint64_t step, struct plan *p)
{
	size_t first = tensor_at(ta, off), f, pos, stop, from;
	uint32_t cur = (uint32_t)first;
	bool reached = false, go = true;
	int order;

	if (first >= ta->nt || ta->begin[first] >= end)
		return; /* padding or past the last tensor */
	p->left = max + (end - off);
	for (f = first; go && f < ta->nt && ta->begin[f] < end; f++) {
		bool fresh = !(ta->flags[f] & SEEN), full;
		uint64_t from_off = off > ta->begin[f] ? off : ta->begin[f];

		if (fresh) {
			reach(ta, (uint32_t)f);
			if (!reached)
				cur = (uint32_t)f;
			reached = true;
		}
		if (issued(ta, c, n, gen, (uint32_t)f))
			continue;
		if (fresh && ta->end[f] - ta->begin[f] <= p->left)
			from_off = ta->begin[f]; /* whole, in one range */
		full = plan_range((uint32_t)f, from_off, ta->end[f], p);
		if (fresh && full)
			full = plan_range((uint32_t)f, ta->begin[f], from_off,
					  p);
		if (full)
			ta->flags[f] |= ISSUED | PLANNED;
		go = full && p->left;
	}
	if (!go)
		return;
	/* The window: the tensors after the one reached, in the readers'
	 * order, while the budget lasts. */
	order = order_of(ta);
	if (ta->reached < 4) {
		p->left = p->left < max / 8 ? p->left : max / 8;
		plan_start(ta, c, n, gen, p);
		return;
	}
	from = pos_of(ta, order, cur) + 1;
	pos = ta->upto[order] > from ? ta->upto[order] : from;
	/* What the window already holds from an earlier read counts. */
	if (pos > from) {
		uint64_t held =
			ta->prefix[order][pos] - ta->prefix[order][from];

		p->left = held < p->left ? p->left - held : 0;
	}
	/* In steps of a request at least (or the rest of the order), as
	 * the plain readahead: a tensor per read would be a request each. */
	if (p->left < step &&
	    ta->prefix[order][ta->nt] - ta->prefix[order][pos] > p->left)
		return;
	for (stop = pos; stop < ta->nt && p->left; stop++)
		if (!plan_tensor(ta, c, n, gen, at_pos(ta, order, stop), p))
			break; /* cut short: this one again next time */
	if (stop > ta->upto[order])
		ta->upto[order] = stop;
	/* Queued in the readers' order, after the read's own tensors: the
	 * engine still joins adjacent blocks into one request wherever they
	 * are in its queue (fetch_take_run()). */
}

/* Start fetching the blocks of the planned tensors, in plan order, queued
 * in batches of @step bytes or more: each block's memory is faulted in as
 * it is queued (start_fetch()), so one batch for a window of hundreds of
 * MiB would hold back its first request for as long as all of it takes
 * (tens of ms), while the reader waits for the first. On a full cache
 * the rest are marked not issued again. */
static void issue(struct cache *c, struct node *n, uint32_t gen, uint64_t fsize,
		  uint64_t step, struct tensor_ahead *ta, const struct plan *p)
{
	const struct range *plan = p->r;
	size_t np = p->n;
	uint64_t bs = cache_block_size(c), queued = 0;
	size_t i, failed;
	int r;

	failed = np;
	fetch_batch_begin();
	for (i = 0; i < np && failed == np; i++) {
		uint64_t b;

		if (plan[i].begin == plan[i].end)
			continue;
		for (b = plan[i].begin / bs; b * bs < plan[i].end; b++) {
			uint64_t len =
				fsize - b * bs < bs ? fsize - b * bs : bs;

			r = cache_prefetch_stream(c, n, gen, b, len, fsize);
			if (r < 0) {
				failed = i;
				break;
			}
			queued += r > 0 ? len : 0;
		}
		if (queued >= step) {
			fetch_batch_end();
			fetch_batch_begin();
			queued = 0;
		}
	}
	fetch_batch_end();
	if (failed == np)
		return;
	pthread_mutex_lock(&ta->lock);
	if (ta->state == TA_READY && ta->generation == gen) {
		for (i = failed; i < np; i++)
			ta->flags[plan[i].f] &= (uint8_t)~ISSUED;
		memset(ta->upto, 0, sizeof(ta->upto));
	}
	pthread_mutex_unlock(&ta->lock);
}

bool tensor_ahead_read(struct cache *c, struct node *n, uint32_t generation,
		       uint64_t fsize, uint64_t off, uint64_t end, uint64_t max,
		       uint64_t step)
{
	struct tensor_ahead *ta;
	struct plan *p;
	enum ta_state st;
	size_t i;

	if (!is_safetensors(n) || !(ta = state_of(n)))
		return false;
	pthread_mutex_lock(&ta->lock);
	if (ta->state != TA_PARSING && ta->generation != generation) {
		map_clear(ta);
		ta->state = TA_UNKNOWN;
	}
	if (ta->state == TA_UNKNOWN) {
		ta->state = TA_PARSING;
		ta->generation = generation;
		pthread_mutex_unlock(&ta->lock);
		prefetch_second(c, n, generation, fsize);
		st = parse(c, n, generation, fsize, ta);
		pthread_mutex_lock(&ta->lock);
		ta->state = st;
	}
	if (ta->state != TA_READY || ta->generation != generation || !ta->nt ||
	    off < ta->begin[0]) {
		pthread_mutex_unlock(&ta->lock);
		return false;
	}
	p = malloc(sizeof(*p));
	if (!p) {
		pthread_mutex_unlock(&ta->lock);
		return false;
	}
	p->n = 0;
	plan_read(ta, c, n, generation, off, end, max, step, p);
	for (i = 0; i < p->n; i++)
		ta->flags[p->r[i].f] &= (uint8_t)~PLANNED;
	pthread_mutex_unlock(&ta->lock);
	if (p->n)
		issue(c, n, generation, fsize, step, ta, p);
	free(p);
	return true;
}
