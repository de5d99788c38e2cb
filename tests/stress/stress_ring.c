/* SPDX-License-Identifier: MIT */
/*
 * stress_ring: multi-threaded stress test of quay_ring (TESTING.md R1/R2).
 *
 *   stress_ring [-m mpmc|spsc|spmc|mpsc] [-p P] [-c C] [-n msgs/producer]
 *               [-e elem_size] [-q capacity] [-o single|burst|bulk|wait|mixed]
 *               [-w k] [-x] [-R rounds] [-S seed] [-z scale] [-r spin%]
 *               [-b spin_rounds] [-d seconds] [-t hang_s] [-v]
 *
 * P producers push n items each (or stop after -d seconds, whichever
 * comes first: the CI runs are bounded in time, a soak raises both) and C
 * consumers pop them, all released together from a barrier. Styles:
 * single push/pop, burst (random sizes 1..32), bulk (random sizes
 * 1..min(32, capacity)), wait (push_wait/pop_wait, no timeout) and mixed
 * (each call picks one of those). -r is the chance of a random short spin
 * before each call, -b the longest backoff (see struct backoff). -R runs
 * up to that many rounds, each on a fresh ring, until -d runs out: the
 * close-under-load runs close hundreds of rings per second this way.
 *
 * Every item carries (producer, seq, check) in its first word and, past
 * it, a pattern derived from that word that fills the whole element;
 * consumers verify every byte. The run ends in one of two ways:
 *
 *  - non-blocking styles: the main thread joins the producers and sets
 *    a "done" flag; a consumer that saw the flag before a pop that found
 *    nothing stops, and the main thread drains what is left;
 *  - styles that block (wait, mixed), and -x: the ring is closed and
 *    consumers pop until -EPIPE. With -x (close under load) a closer
 *    thread closes the ring while producers are still pushing; producers
 *    stop at -EPIPE.
 *
 * Verified after the run (any violation makes the exit status non-zero):
 *   lost     a (p, seq) that a push reported as done but nobody popped
 *   dup      a (p, seq) popped twice
 *   order    a consumer saw seq go backwards (or repeat) for one producer
 *   corrupt  a bad check word, a bad payload byte, or an item that no
 *            successful push produced
 *   after    with close: a push succeeded after one returned -EPIPE, or an
 *            element could still be popped after every consumer had seen
 *            -EPIPE
 *   count    enq != deq + drained (the accounting does not balance), or
 *            the drained ring's head, tail or count are off
 *
 * -w k starts the fresh ring at position 2^63 - 1 - k, so that the run
 * crosses the 63-bit wrap of the positions; after the drain head and tail
 * must both equal start + enq (mod 2^63). -z and the environment variable
 * QUAY_STRESS_SCALE multiply n and the duration. A watchdog thread prints
 * every counter and the ring's state and exits with status 3 when no
 * element has moved for hang_s seconds (a lost wake-up or a livelock).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/ring.h>

#include "test_util.h"

#include "../../src/quay_internal.h"

#define MAX_THREADS 64
#define MAX_BATCH 32
#define SEQ_BITS 40
#define SEQ_MASK (((uint64_t)1 << SEQ_BITS) - 1)
#define LINE 64

enum style { ST_SINGLE, ST_BURST, ST_BULK, ST_WAIT, ST_MIXED };
static const char *const style_names[] = { "single", "burst", "bulk", "wait", "mixed" };

struct config {
	unsigned flags;
	const char *mode;
	unsigned producers, consumers;
	uint64_t msgs; /* per producer, after scaling */
	size_t elem_size;
	size_t capacity;
	enum style style;
	bool wrap;
	uint64_t wrap_k;
	bool close_under_load;
	uint64_t seed;
	unsigned spin_pct;
	unsigned spin_rounds; /* backoff rounds of spinning before yielding */
	unsigned hang_s;
	unsigned rounds; /* fresh rings, one after another */
	double duration; /* producers stop after this (0: never) */
	bool verbose;
};

/* Per-thread counters: written by their thread only (relaxed stores),
 * read by the watchdog and by main after the join. One line each. */
struct counters {
	uint64_t ok;    /* elements pushed or popped */
	uint64_t tries; /* calls made */
	uint64_t empty; /* calls that moved nothing */
	uint64_t phase; /* where the thread is, for hang reports */
} QUAYI_ALIGNED(LINE);

struct producer {
	struct counters c;
	unsigned id;
	uint64_t next_seq; /* written by its thread, read by main after join */
	uint64_t after;    /* pushes that succeeded after an -EPIPE */
	bool stopped;      /* stopped early: deadline or close */
	pthread_t tid;
	uint64_t rng;
} QUAYI_ALIGNED(LINE);

struct consumer {
	struct counters c;
	unsigned id;
	uint64_t order, corrupt, dup;
	uint64_t *last; /* last seq seen per producer, +1 (0: none) */
	pthread_t tid;
	uint64_t rng;
} QUAYI_ALIGNED(LINE);

static struct config cfg;
static quay_ring *ring;
static pthread_barrier_t start_barrier;
static struct producer *prods;
static struct consumer *conss;
static uint64_t *received;       /* bitmap per producer: msgs bits each */
static size_t bitmap_words;      /* words per producer */
static uint32_t done_flag;       /* non-blocking end protocol */
static uint32_t finished;        /* tells the watchdog to stop */
static uint64_t closer_at;       /* pushes seen when the closer closed */
static unsigned cur_round;       /* for the watchdog's report */
static uint64_t corrupt_reports; /* lines printed, to bound the noise */
static double deadline;          /* set before the barrier; 0: none */
static uint32_t timed_out;       /* some producer stopped at the deadline */

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static uint64_t
mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9u;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebu;
	x ^= x >> 31;
	return x;
}

static unsigned
rng_below(uint64_t *s, unsigned n)
{
	return (unsigned)((qt_rand(s) >> 32) % n);
}

/* aligned_alloc wants a size that is a multiple of the alignment. */
static void *
xalloc_lines(size_t size)
{
	void *p = aligned_alloc(LINE, (size + LINE - 1) / LINE * LINE);

	if (p == NULL) {
		fprintf(stderr, "stress-ring: out of memory\n");
		exit(2);
	}
	return p;
}

static void
relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Random short spin between operations, to shake the interleavings. */
static void
maybe_spin(uint64_t *rng)
{
	if (cfg.spin_pct == 0 || rng_below(rng, 100) >= cfg.spin_pct)
		return;
	for (unsigned i = rng_below(rng, 64); i > 0; i--)
		relax();
}

/*
 * Full or empty: spin a little, then give the CPU away (the 8x8 runs have
 * four times more threads than cores). How long a thread spins before it
 * yields is drawn anew after every success, between 2 and -b rounds (of
 * 4, 8, 16, then 32 pauses, retrying after each): threads that yield
 * at once hand the CPU over, and threads that keep spinning keep two of
 * one side running at the same time, which is what races on the same
 * head or tail need on two cores.
 */
struct backoff {
	unsigned round, limit;
	uint64_t *rng;
};

static void
backoff_reset(struct backoff *bo)
{
	bo->round = 0;
	bo->limit = cfg.spin_rounds <= 2 ? cfg.spin_rounds : 2 + rng_below(bo->rng, cfg.spin_rounds - 1);
}

static void
backoff_init(struct backoff *bo, uint64_t *rng)
{
	bo->rng = rng;
	backoff_reset(bo);
}

static void
backoff(struct backoff *bo)
{
	if (bo->round < bo->limit) {
		unsigned n = bo->round < 3 ? 4u << bo->round : 32u;
		for (unsigned i = 0; i < n; i++)
			relax();
		bo->round++;
	} else {
		sched_yield();
	}
}

static void
count_store(uint64_t *field, uint64_t v)
{
	/* Relaxed: a statistic for the watchdog; main reads after join. */
	__atomic_store_n(field, v, __ATOMIC_RELAXED);
}

static uint64_t
count_load(const uint64_t *field)
{
	return __atomic_load_n(field, __ATOMIC_RELAXED);
}

static void
bump(uint64_t *field, uint64_t by)
{
	count_store(field, *field + by); /* only the owner writes */
}

/* ------------------------------------------------------------------ */
/* Items                                                               */

static uint64_t
check_of(unsigned p, uint64_t seq)
{
	return mix64(((uint64_t)p << SEQ_BITS) ^ seq ^ cfg.seed) & 0xffff;
}

static uint64_t
head_word(unsigned p, uint64_t seq)
{
	return ((uint64_t)p << 56) | ((seq & SEQ_MASK) << 16) | check_of(p, seq);
}

static uint64_t
pattern_word(uint64_t w0, size_t j)
{
	/* Unique per (producer, seq) through w0 and per word through j, and
	 * cheap: consumers that verify fast keep up with the producers, which
	 * is when they meet elements that are still being written. */
	return w0 ^ ((uint64_t)j * 0x9e3779b97f4a7c15u);
}

static void
make_item(unsigned char *dst, unsigned p, uint64_t seq)
{
	uint64_t w0 = head_word(p, seq);

	memcpy(dst, &w0, 8);
	for (size_t j = 1; j < cfg.elem_size / 8; j++) {
		uint64_t w = pattern_word(w0, j);
		memcpy(dst + j * 8, &w, 8);
	}
}

static void
report_corrupt(const char *fmt, ...)
{
	va_list ap;

	if (__atomic_fetch_add(&corrupt_reports, 1, __ATOMIC_RELAXED) >= 10)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* Check one popped element and record it. */
static void
consume_item(struct consumer *c, const unsigned char *src)
{
	uint64_t w0, seq, bit, old;
	unsigned p;

	memcpy(&w0, src, 8);
	p = (unsigned)(w0 >> 56);
	seq = (w0 >> 16) & SEQ_MASK;
	if (p >= cfg.producers || seq >= cfg.msgs || (w0 & 0xffff) != check_of(p, seq)) {
		c->corrupt++;
		report_corrupt("consumer %u: bad head word %016" PRIx64 "\n", c->id, w0);
		return;
	}
	for (size_t j = 1; j < cfg.elem_size / 8; j++) {
		uint64_t w;
		memcpy(&w, src + j * 8, 8);
		if (w != pattern_word(w0, j)) {
			c->corrupt++;
			report_corrupt("consumer %u: p%u seq %" PRIu64 " word %zu is %016" PRIx64
			               ", want %016" PRIx64 "\n",
			    c->id, p, seq, j, w, pattern_word(w0, j));
			return;
		}
	}
	if (c->last[p] != 0 && seq + 1 <= c->last[p]) {
		c->order++;
		report_corrupt("consumer %u: p%u seq %" PRIu64 " after seq %" PRIu64 "\n", c->id, p, seq,
		    c->last[p] - 1);
	}
	c->last[p] = seq + 1;
	bit = (uint64_t)1 << (seq % 64);
	/* Relaxed: the bitmap is read by main after joining everyone. */
	old = __atomic_fetch_or(&received[(size_t)p * bitmap_words + seq / 64], bit, __ATOMIC_RELAXED);
	if (old & bit) {
		c->dup++;
		report_corrupt("consumer %u: p%u seq %" PRIu64 " popped twice\n", c->id, p, seq);
	}
}

/* ------------------------------------------------------------------ */
/* Producers                                                           */

static enum style
pick_style(uint64_t *rng)
{
	return cfg.style == ST_MIXED ? (enum style)rng_below(rng, 4) : cfg.style;
}

static size_t
max_batch(void)
{
	return cfg.capacity < MAX_BATCH ? cfg.capacity : MAX_BATCH;
}

static void *
producer_main(void *arg)
{
	struct producer *pr = arg;
	unsigned char *buf = xalloc_lines(MAX_BATCH * cfg.elem_size);
	uint64_t buf_seq = 0, buf_n = 0; /* items built in buf */
	uint64_t seq = 0;
	struct backoff b;
	bool epipe = false; /* a push returned -EPIPE */

	backoff_init(&b, &pr->rng);
	pthread_barrier_wait(&start_barrier);
	count_store(&pr->c.phase, 1);
	for (unsigned iter = 0; seq < cfg.msgs; iter++) {
		enum style st = pick_style(&pr->rng);
		size_t want = 1, got = 0;
		int rc = 0;

		if (deadline > 0 && iter % 32 == 0 && qt_now_s() > deadline) {
			/* Relaxed: a statistic, read by main after the join. */
			__atomic_store_n(&timed_out, 1, __ATOMIC_RELAXED);
			pr->stopped = true;
			break;
		}

		if (st == ST_BURST)
			want = 1 + rng_below(&pr->rng, MAX_BATCH); /* the ring clamps */
		else if (st == ST_BULK)
			want = 1 + rng_below(&pr->rng, (unsigned)max_batch());
		if (want > cfg.msgs - seq)
			want = (size_t)(cfg.msgs - seq);
		if (seq < buf_seq || seq + want > buf_seq + buf_n) {
			buf_seq = seq;
			buf_n = cfg.msgs - seq < MAX_BATCH ? cfg.msgs - seq : MAX_BATCH;
			for (uint64_t i = 0; i < buf_n; i++)
				make_item(buf + i * cfg.elem_size, pr->id, seq + i);
		}
		const unsigned char *src = buf + (seq - buf_seq) * cfg.elem_size;

		maybe_spin(&pr->rng);
		bump(&pr->c.tries, 1);
		switch (st) {
		case ST_SINGLE:
			rc = quay_ring_push(ring, src);
			got = rc == 0;
			break;
		case ST_BURST:
			got = quay_ring_push_burst(ring, src, want);
			if (got > want) {
				report_corrupt("producer %u: burst pushed %zu of %zu\n", pr->id, got, want);
				abort();
			}
			rc = got ? 0 : -EAGAIN;
			break;
		case ST_BULK:
			rc = quay_ring_push_bulk(ring, src, want);
			got = rc == 0 ? want : 0;
			break;
		default:
			rc = quay_ring_push_wait(ring, src, -1);
			got = rc == 0;
			break;
		}
		if (got) {
			seq += got;
			/* Relaxed store of seq: the closer and watchdog only
			 * take snapshots; main reads it after the join. */
			count_store(&pr->next_seq, seq);
			bump(&pr->c.ok, got);
			backoff_reset(&b);
			continue;
		}
		bump(&pr->c.empty, 1);
		/* A burst that pushed nothing on a ring seen as closed: stop.
		 * Not proof of -EPIPE (in MP mode close may still be under way,
		 * and a push may yet succeed), so no check after it. */
		if (st == ST_BURST && cfg.close_under_load && quay_ring_is_closed(ring)) {
			pr->stopped = true;
			break;
		}
		if (rc == -EPIPE) {
			if (!cfg.close_under_load) {
				report_corrupt("producer %u: -EPIPE from an open ring\n", pr->id);
				pr->after++;
			}
			epipe = true;
			pr->stopped = true;
			break;
		}
		if (rc != -EAGAIN) {
			report_corrupt("producer %u: unexpected rc %d (%s)\n", pr->id, rc, style_names[st]);
			abort();
		}
		backoff(&b);
	}
	/* Closed stays closed: after a real -EPIPE one more push must fail. */
	if (epipe && seq < cfg.msgs) {
		unsigned char tmp[QUAY_RING_ELEM_MAX];
		make_item(tmp, pr->id, seq);
		int rc = quay_ring_push(ring, tmp);
		if (rc == 0) {
			pr->after++;
			seq++;
			count_store(&pr->next_seq, seq);
			report_corrupt("producer %u: push after -EPIPE succeeded\n", pr->id);
		} else if (rc != -EPIPE) {
			pr->after++;
			report_corrupt("producer %u: push after -EPIPE gave %d\n", pr->id, rc);
		}
	}
	count_store(&pr->c.phase, 2);
	free(buf);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Consumers                                                           */

/* After the ring is closed: pop one at a time until -EPIPE. */
static void
consumer_drain_closed(struct consumer *c, unsigned char *buf)
{
	struct backoff b;

	backoff_init(&b, &c->rng);
	count_store(&c->c.phase, 3);
	for (;;) {
		int rc = quay_ring_pop(ring, buf);
		bump(&c->c.tries, 1);
		if (rc == 0) {
			consume_item(c, buf);
			bump(&c->c.ok, 1);
			backoff_reset(&b);
			continue;
		}
		if (rc == -EPIPE)
			return;
		if (rc != -EAGAIN) {
			report_corrupt("consumer %u: pop gave %d\n", c->id, rc);
			abort();
		}
		bump(&c->c.empty, 1);
		backoff(&b);
	}
}

static bool
use_close_protocol(void)
{
	return cfg.close_under_load || cfg.style == ST_WAIT || cfg.style == ST_MIXED;
}

static void *
consumer_main(void *arg)
{
	struct consumer *c = arg;
	unsigned char *buf = xalloc_lines(MAX_BATCH * cfg.elem_size);
	bool closing = use_close_protocol();
	struct backoff b;

	backoff_init(&b, &c->rng);
	pthread_barrier_wait(&start_barrier);
	count_store(&c->c.phase, 1);
	for (;;) {
		enum style st = pick_style(&c->rng);
		size_t got = 0, want = 1;
		int rc = 0;
		/* Acquire: pairs with main's release after joining producers;
		 * read before the pop, so an empty pop after it means empty. */
		bool done = !closing && __atomic_load_n(&done_flag, __ATOMIC_ACQUIRE);

		maybe_spin(&c->rng);
		bump(&c->c.tries, 1);
		switch (st) {
		case ST_SINGLE:
			rc = quay_ring_pop(ring, buf);
			got = rc == 0;
			break;
		case ST_BURST:
			want = 1 + rng_below(&c->rng, MAX_BATCH);
			got = quay_ring_pop_burst(ring, buf, want);
			if (got > want) {
				report_corrupt("consumer %u: burst popped %zu of %zu\n", c->id, got, want);
				abort();
			}
			rc = got ? 0 : -EAGAIN;
			break;
		case ST_BULK:
			want = 1 + rng_below(&c->rng, (unsigned)max_batch());
			rc = quay_ring_pop_bulk(ring, buf, want);
			got = rc == 0 ? want : 0;
			break;
		default:
			rc = quay_ring_pop_wait(ring, buf, -1);
			got = rc == 0;
			break;
		}
		if (got) {
			for (size_t i = 0; i < got; i++)
				consume_item(c, buf + i * cfg.elem_size);
			bump(&c->c.ok, got);
			backoff_reset(&b);
			continue;
		}
		bump(&c->c.empty, 1);
		if (rc != -EAGAIN && rc != -EPIPE) {
			report_corrupt("consumer %u: unexpected rc %d (%s)\n", c->id, rc, style_names[st]);
			abort();
		}
		if (closing) {
			/* -EPIPE, or a burst that found nothing on a closed
			 * ring: fetch the rest one by one until -EPIPE. */
			if (rc == -EPIPE || quay_ring_is_closed(ring)) {
				consumer_drain_closed(c, buf);
				break;
			}
		} else {
			if (rc == -EPIPE) {
				report_corrupt("consumer %u: -EPIPE from an open ring\n", c->id);
				c->corrupt++;
				break;
			}
			if (done)
				break;
		}
		backoff(&b);
	}
	count_store(&c->c.phase, 2);
	free(buf);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Closer and watchdog                                                 */

static uint64_t
pushed_so_far(void)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < cfg.producers; i++)
		n += count_load(&prods[i].next_seq);
	return n;
}

static void *
closer_main(void *arg)
{
	uint64_t rng = *(uint64_t *)arg;
	uint64_t total = cfg.msgs * cfg.producers;
	/* Close somewhere between 10 % and 90 % of the pushes, or at the
	 * deadline (when producers stop) if that comes first. */
	double frac = 0.1 + 0.8 * (double)(qt_rand(&rng) >> 11) / (double)(1ull << 53);
	uint64_t target = (uint64_t)((double)total * frac);

	pthread_barrier_wait(&start_barrier);
	/* Poll asleep, not with sched_yield: producers and consumers keep both
	 * cores, and the closer's wake-up preempts one of them at a random
	 * point (say a producer between its claim and its publish). */
	while (pushed_so_far() < target && (deadline == 0 || qt_now_s() < deadline)) {
		struct timespec ts = { 0, 20 * 1000 };
		nanosleep(&ts, NULL);
	}
	count_store(&closer_at, pushed_so_far());
	quay_ring_close(ring);
	return NULL;
}

static uint64_t
progress(void)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < cfg.producers; i++)
		n += count_load(&prods[i].c.ok);
	for (unsigned i = 0; i < cfg.consumers; i++)
		n += count_load(&conss[i].c.ok);
	return n;
}

static void
dump_state(const char *why)
{
	/* Acquire: pairs with the release store in run_round. */
	const struct quay_ring *r = __atomic_load_n(&ring, __ATOMIC_ACQUIRE);
	uint64_t head, tail, hs, ts;

	fprintf(stderr, "stress-ring %s: %s %ux%u elem=%zu cap=%zu style=%s seed=%" PRIu64 " round=%u\n", why,
	    cfg.mode, cfg.producers, cfg.consumers, cfg.elem_size, cfg.capacity, style_names[cfg.style],
	    cfg.seed, __atomic_load_n(&cur_round, __ATOMIC_RELAXED));
	if (r == NULL) {
		fprintf(stderr, "  (between rounds)\n");
		return;
	}
	head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);

	/* Relaxed snapshots of the ring's internals, for the report only. */
	if (r->flags & QUAYI_RING_F_SPSC) { /* no seq words: pub instead */
		fprintf(stderr,
		    "  ring (SPSC): head=%#" PRIx64 " tail=%#" PRIx64 " pub=%#" PRIx64
		    " closed=%u count=%zu\n",
		    head, tail, __atomic_load_n(&r->pub, __ATOMIC_RELAXED),
		    __atomic_load_n(&r->closed, __ATOMIC_RELAXED), quay_ring_count(r));
	} else {
		hs = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, head)), __ATOMIC_RELAXED);
		ts = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, tail)), __ATOMIC_RELAXED);
		fprintf(stderr,
		    "  ring: head=%#" PRIx64 " tail=%#" PRIx64 " seq@head=%#" PRIx64 " seq@tail=%#" PRIx64
		    " closed=%u count=%zu\n",
		    head, tail, hs, ts, __atomic_load_n(&r->closed, __ATOMIC_RELAXED), quay_ring_count(r));
	}
	/* The sleepers' line (futex words), raw: the test does not depend on
	 * how the ring names its fields there. */
	{
		const uint32_t *w = (const uint32_t *)(const void *)((const char *)r + 192);
		fprintf(stderr, "  sleepers' line: %#x %#x %#x %#x\n",
		    __atomic_load_n(&w[0], __ATOMIC_RELAXED), __atomic_load_n(&w[1], __ATOMIC_RELAXED),
		    __atomic_load_n(&w[2], __ATOMIC_RELAXED), __atomic_load_n(&w[3], __ATOMIC_RELAXED));
	}
	fprintf(stderr, "  done=%u closer_at=%" PRIu64 "\n", __atomic_load_n(&done_flag, __ATOMIC_RELAXED),
	    count_load(&closer_at));
	for (unsigned i = 0; i < cfg.producers; i++)
		fprintf(stderr,
		    "  producer %u: phase=%" PRIu64 " pushed=%" PRIu64 "/%" PRIu64 " tries=%" PRIu64
		    " fails=%" PRIu64 "\n",
		    i, count_load(&prods[i].c.phase), count_load(&prods[i].c.ok), cfg.msgs,
		    count_load(&prods[i].c.tries), count_load(&prods[i].c.empty));
	for (unsigned i = 0; i < cfg.consumers; i++)
		fprintf(stderr,
		    "  consumer %u: phase=%" PRIu64 " popped=%" PRIu64 " tries=%" PRIu64 " empty=%" PRIu64
		    "\n",
		    i, count_load(&conss[i].c.phase), count_load(&conss[i].c.ok),
		    count_load(&conss[i].c.tries), count_load(&conss[i].c.empty));
}

static void *
watchdog_main(void *arg)
{
	uint64_t last = UINT64_MAX;
	double since = qt_now_s();
	struct timespec tick = { 0, 50 * 1000 * 1000 };

	(void)arg;
	while (!__atomic_load_n(&finished, __ATOMIC_ACQUIRE)) {
		uint64_t p = progress();
		double t = qt_now_s();
		if (p != last) {
			last = p;
			since = t;
		} else if (t - since > (double)cfg.hang_s) {
			dump_state("HANG (no progress)");
			fflush(stderr);
			_Exit(3);
		}
		nanosleep(&tick, NULL);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Setup, run, verify                                                  */

static void
usage(const char *argv0)
{
	fprintf(stderr,
	    "usage: %s [-m mpmc|spsc|spmc|mpsc] [-p producers] [-c consumers]\n"
	    "          [-n msgs/producer] [-e elem_size] [-q capacity]\n"
	    "          [-o single|burst|bulk|wait|mixed] [-w k (start at 2^63-1-k)]\n"
	    "          [-x (close under load)] [-R rounds] [-S seed] [-z scale] [-r spin%%]\n"
	    "          [-b spin_rounds] [-d seconds] [-t hang_seconds] [-v]\n"
	    "env QUAY_STRESS_SCALE multiplies -n and -d (as does -z).\n",
	    argv0);
	exit(2);
}

static uint64_t
parse_u64(const char *s, const char *argv0)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
		usage(argv0);
	return (uint64_t)v;
}

static void
parse_args(int argc, char **argv)
{
	uint64_t scale = 1;
	const char *env;
	int opt;

	cfg.mode = "mpmc";
	cfg.flags = 0;
	cfg.producers = 2;
	cfg.consumers = 2;
	cfg.msgs = 100000;
	cfg.elem_size = 8;
	cfg.capacity = 1024;
	cfg.style = ST_SINGLE;
	cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	cfg.spin_pct = 25;
	cfg.spin_rounds = 256;
	cfg.hang_s = 20;
	cfg.rounds = 1;
	while ((opt = getopt(argc, argv, "m:p:c:n:e:q:o:w:xR:S:z:r:b:d:t:v")) != -1) {
		switch (opt) {
		case 'm':
			cfg.mode = optarg;
			if (strcmp(optarg, "mpmc") == 0)
				cfg.flags = 0;
			else if (strcmp(optarg, "spsc") == 0)
				cfg.flags = QUAY_RING_SP | QUAY_RING_SC;
			else if (strcmp(optarg, "spmc") == 0)
				cfg.flags = QUAY_RING_SP;
			else if (strcmp(optarg, "mpsc") == 0)
				cfg.flags = QUAY_RING_SC;
			else
				usage(argv[0]);
			break;
		case 'p': cfg.producers = (unsigned)parse_u64(optarg, argv[0]); break;
		case 'c': cfg.consumers = (unsigned)parse_u64(optarg, argv[0]); break;
		case 'n': cfg.msgs = parse_u64(optarg, argv[0]); break;
		case 'e': cfg.elem_size = (size_t)parse_u64(optarg, argv[0]); break;
		case 'q': cfg.capacity = (size_t)parse_u64(optarg, argv[0]); break;
		case 'o': {
			size_t i;
			for (i = 0; i < sizeof(style_names) / sizeof(style_names[0]); i++)
				if (strcmp(optarg, style_names[i]) == 0)
					break;
			if (i == sizeof(style_names) / sizeof(style_names[0]))
				usage(argv[0]);
			cfg.style = (enum style)i;
			break;
		}
		case 'w':
			cfg.wrap = true;
			cfg.wrap_k = parse_u64(optarg, argv[0]);
			break;
		case 'x': cfg.close_under_load = true; break;
		case 'R': cfg.rounds = (unsigned)parse_u64(optarg, argv[0]); break;
		case 'S': cfg.seed = parse_u64(optarg, argv[0]); break;
		case 'z': scale *= parse_u64(optarg, argv[0]); break;
		case 'r': cfg.spin_pct = (unsigned)parse_u64(optarg, argv[0]); break;
		case 'b': cfg.spin_rounds = (unsigned)parse_u64(optarg, argv[0]); break;
		case 'd': {
			char *end;
			cfg.duration = strtod(optarg, &end);
			if (end == optarg || *end != '\0' || !(cfg.duration >= 0))
				usage(argv[0]);
			break;
		}
		case 't': cfg.hang_s = (unsigned)parse_u64(optarg, argv[0]); break;
		case 'v': cfg.verbose = true; break;
		default: usage(argv[0]);
		}
	}
	if (optind != argc)
		usage(argv[0]);
	env = getenv("QUAY_STRESS_SCALE");
	if (env != NULL && *env != '\0')
		scale *= parse_u64(env, argv[0]);
	if (scale == 0)
		usage(argv[0]);
	cfg.msgs *= scale;
	cfg.duration *= (double)scale;
	if (cfg.producers == 0 || cfg.consumers == 0 || cfg.producers > MAX_THREADS ||
	    cfg.consumers > MAX_THREADS || cfg.msgs == 0 || cfg.msgs > SEQ_MASK || cfg.elem_size < 8 ||
	    cfg.elem_size > QUAY_RING_ELEM_MAX || cfg.elem_size % 8 != 0 || cfg.spin_pct > 100 ||
	    cfg.spin_rounds == 0 || cfg.hang_s == 0 || cfg.rounds == 0) {
		fprintf(stderr, "stress-ring: bad configuration\n");
		usage(argv[0]);
	}
	if (((cfg.flags & QUAY_RING_SP) && cfg.producers != 1) ||
	    ((cfg.flags & QUAY_RING_SC) && cfg.consumers != 1)) {
		fprintf(stderr, "stress-ring: mode %s needs a single producer/consumer\n", cfg.mode);
		usage(argv[0]);
	}
}

struct totals {
	uint64_t enq, deq, drained, calls;
	uint64_t lost, dup, order, corrupt, after, count_bad;
	unsigned rounds, wrapped, timed;
};

/* Reset what the watchdog may read with atomic loads, and the rest. */
static void
reset_threads(unsigned round)
{
	uint64_t rs = mix64(cfg.seed + round);

	for (unsigned i = 0; i < cfg.producers; i++) {
		struct producer *pr = &prods[i];
		count_store(&pr->c.ok, 0);
		count_store(&pr->c.tries, 0);
		count_store(&pr->c.empty, 0);
		count_store(&pr->c.phase, 0);
		count_store(&pr->next_seq, 0);
		pr->id = i;
		pr->after = 0;
		pr->stopped = false;
		pr->rng = mix64(rs ^ (0x90000 + i)) | 1;
	}
	for (unsigned i = 0; i < cfg.consumers; i++) {
		struct consumer *c = &conss[i];
		count_store(&c->c.ok, 0);
		count_store(&c->c.tries, 0);
		count_store(&c->c.empty, 0);
		count_store(&c->c.phase, 0);
		c->id = i;
		c->order = c->corrupt = c->dup = 0;
		memset(c->last, 0, sizeof(uint64_t) * cfg.producers);
		c->rng = mix64(rs ^ (0xc0000 + i)) | 1;
	}
}

/* One run on a fresh ring: start, end, drain, verify; add to *t. */
static void
run_round(unsigned round, struct totals *t)
{
	pthread_t closer;
	uint64_t closer_seed = mix64(cfg.seed ^ 0xc105e ^ ((uint64_t)round << 32));
	uint64_t enq = 0, deq = 0, drained = 0, lost = 0, dup = 0, order = 0, corrupt = 0;
	uint64_t after = 0, phantom = 0, count_bad = 0, start = 0;
	unsigned nthreads = cfg.producers + cfg.consumers + 1 + (cfg.close_under_load ? 1 : 0);
	quay_ring *r;
	int rc;

	rc = quay_ring_create(cfg.capacity, cfg.elem_size, cfg.flags, &r);
	if (rc != 0) {
		fprintf(stderr, "stress-ring: quay_ring_create(%zu, %zu, %#x): %d\n", cfg.capacity,
		    cfg.elem_size, cfg.flags, rc);
		exit(2);
	}
	if (cfg.wrap) {
		start = (UINT64_MAX >> 1) - cfg.wrap_k;
		rc = quayi_ring_test_set_position(r, start);
		if (rc != 0) {
			fprintf(stderr, "stress-ring: set_position: %d\n", rc);
			exit(2);
		}
	}
	/* Release: the watchdog's dump reads the ring through this pointer. */
	__atomic_store_n(&ring, r, __ATOMIC_RELEASE);
	memset(received, 0, (size_t)cfg.producers * bitmap_words * sizeof(*received));
	reset_threads(round);
	__atomic_store_n(&done_flag, 0, __ATOMIC_RELAXED); /* threads start later */
	count_store(&closer_at, 0);
	__atomic_store_n(&cur_round, round, __ATOMIC_RELAXED);

	if (pthread_barrier_init(&start_barrier, NULL, nthreads) != 0)
		exit(2);
	for (unsigned i = 0; i < cfg.consumers; i++)
		if (pthread_create(&conss[i].tid, NULL, consumer_main, &conss[i]) != 0)
			exit(2);
	for (unsigned i = 0; i < cfg.producers; i++)
		if (pthread_create(&prods[i].tid, NULL, producer_main, &prods[i]) != 0)
			exit(2);
	if (cfg.close_under_load && pthread_create(&closer, NULL, closer_main, &closer_seed) != 0)
		exit(2);

	pthread_barrier_wait(&start_barrier);
	for (unsigned i = 0; i < cfg.producers; i++)
		pthread_join(prods[i].tid, NULL);
	if (cfg.close_under_load)
		pthread_join(closer, NULL);
	else if (use_close_protocol())
		quay_ring_close(ring);
	else
		/* Release: every push is done; pairs with the consumers' acquire. */
		__atomic_store_n(&done_flag, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < cfg.consumers; i++)
		pthread_join(conss[i].tid, NULL);
	pthread_barrier_destroy(&start_barrier);

	/* Drain what the consumers left (non-blocking end protocol), or check
	 * that nothing is left (close: every consumer saw -EPIPE). */
	{
		struct consumer *c = &conss[0];
		unsigned char *buf = xalloc_lines(cfg.elem_size);

		/* Main checks items as consumer 0 would, with its order view:
		 * what is left comes after everything it popped. */
		while ((rc = quay_ring_pop(r, buf)) == 0) {
			consume_item(c, buf);
			drained++;
		}
		if (use_close_protocol()) {
			if (rc != -EPIPE) {
				fprintf(stderr, "stress-ring: closed ring: final pop gave %d\n", rc);
				after++;
			}
			if (drained != 0) {
				fprintf(stderr,
				    "stress-ring: %" PRIu64 " element(s) left after "
				    "every consumer saw -EPIPE\n",
				    drained);
				after += drained;
			}
		} else if (rc != -EAGAIN) {
			fprintf(stderr, "stress-ring: open ring: final pop gave %d\n", rc);
			after++;
		}
		free(buf);
	}

	for (unsigned i = 0; i < cfg.producers; i++) {
		uint64_t n = prods[i].next_seq;
		const uint64_t *bm = &received[(size_t)i * bitmap_words];

		enq += n;
		t->calls += prods[i].c.tries;
		after += prods[i].after;
		if (!prods[i].stopped && n != cfg.msgs) {
			fprintf(stderr, "stress-ring: producer %u pushed %" PRIu64 " of %" PRIu64 "\n", i, n,
			    cfg.msgs);
			lost += cfg.msgs - n;
		}
		for (uint64_t q = 0; q < cfg.msgs; q++) {
			bool got = (bm[q / 64] >> (q % 64)) & 1;
			if (q < n && !got) {
				if (lost < 10)
					fprintf(stderr, "stress-ring: lost p%u seq %" PRIu64 "\n", i, q);
				lost++;
			} else if (q >= n && got) {
				if (phantom < 10)
					fprintf(stderr,
					    "stress-ring: p%u seq %" PRIu64 " popped but "
					    "never pushed\n",
					    i, q);
				phantom++;
			}
		}
	}
	for (unsigned i = 0; i < cfg.consumers; i++) {
		deq += conss[i].c.ok;
		t->calls += conss[i].c.tries;
		dup += conss[i].dup;
		order += conss[i].order;
		corrupt += conss[i].corrupt;
	}
	corrupt += phantom;
	if (enq != deq + drained) {
		fprintf(stderr, "stress-ring: enq %" PRIu64 " != deq %" PRIu64 " + drained %" PRIu64 "\n",
		    enq, deq, drained);
		count_bad++;
	}
	/* Quiescent and empty: both positions have moved by exactly enq from
	 * the start (mod 2^63), and count is 0. The ring's layout is public
	 * (read-only) and all threads are joined: plain reads. */
	{
		uint64_t head = r->head, tail = r->tail & QUAYI_RING_POS_MASK;
		uint64_t want = (start + enq) & QUAYI_RING_POS_MASK;

		if (start + enq > QUAYI_RING_POS_MASK)
			t->wrapped++;
		if (head != want || tail != want || quay_ring_count(r) != 0) {
			fprintf(stderr,
			    "stress-ring: after drain head=%#" PRIx64 " tail=%#" PRIx64
			    " count=%zu, want head=tail=%#" PRIx64 "\n",
			    head, tail, quay_ring_count(r), want);
			count_bad++;
		}
	}
	if (lost + dup + order + corrupt + after + count_bad != 0)
		fprintf(stderr,
		    "stress-ring: round %u (seed %" PRIu64 ") failed: enq=%" PRIu64 " closed after %" PRIu64
		    " pushes\n",
		    round, cfg.seed, enq, count_load(&closer_at));
	if (cfg.verbose && cfg.close_under_load)
		printf("  round %u: closed after %" PRIu64 " pushes, %" PRIu64 " delivered\n", round,
		    count_load(&closer_at), enq);
	/* Relaxed: every writer is joined. */
	if (__atomic_exchange_n(&timed_out, 0, __ATOMIC_RELAXED))
		t->timed++;

	t->rounds++;
	t->enq += enq;
	t->deq += deq;
	t->drained += drained;
	t->lost += lost;
	t->dup += dup;
	t->order += order;
	t->corrupt += corrupt;
	t->after += after;
	t->count_bad += count_bad;
	__atomic_store_n(&ring, NULL, __ATOMIC_RELEASE);
	quay_ring_destroy(r);
}

int
main(int argc, char **argv)
{
	pthread_t watchdog;
	struct totals t;
	double t0, t1;
	bool ok;

	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv);

	bitmap_words = (size_t)((cfg.msgs + 63) / 64);
	received = calloc((size_t)cfg.producers * bitmap_words, sizeof(*received));
	prods = xalloc_lines(sizeof(*prods) * cfg.producers);
	conss = xalloc_lines(sizeof(*conss) * cfg.consumers);
	if (received == NULL)
		return 2;
	memset(prods, 0, sizeof(*prods) * cfg.producers);
	memset(conss, 0, sizeof(*conss) * cfg.consumers);
	for (unsigned i = 0; i < cfg.consumers; i++) {
		conss[i].last = calloc(cfg.producers, sizeof(uint64_t));
		if (conss[i].last == NULL)
			return 2;
	}
	memset(&t, 0, sizeof(t));

	t0 = qt_now_s();
	if (cfg.duration > 0)
		deadline = t0 + cfg.duration; /* published by pthread_create */
	if (pthread_create(&watchdog, NULL, watchdog_main, NULL) != 0)
		return 2;
	for (unsigned round = 0; round < cfg.rounds; round++) {
		if (round > 0 && deadline > 0 && qt_now_s() >= deadline)
			break;
		run_round(round, &t);
	}
	t1 = qt_now_s();
	__atomic_store_n(&finished, 1, __ATOMIC_RELEASE);
	pthread_join(watchdog, NULL);

	ok = t.lost == 0 && t.dup == 0 && t.order == 0 && t.corrupt == 0 && t.after == 0 && t.count_bad == 0;
	printf("stress-ring %s %ux%u elem=%zu cap=%zu style=%s start=%s%" PRIu64 " close=%s seed=%" PRIu64
	       " rounds=%u wrapped=%u msgs/prod/round=%" PRIu64 " timed-out=%u enq=%" PRIu64 " deq=%" PRIu64
	       " drained=%" PRIu64 " ops=%" PRIu64 " calls=%" PRIu64 " lost=%" PRIu64 " dup=%" PRIu64
	       " order=%" PRIu64 " corrupt=%" PRIu64 " after=%" PRIu64 " count=%" PRIu64 " time=%.2fs %s\n",
	    cfg.mode, cfg.producers, cfg.consumers, cfg.elem_size, cfg.capacity, style_names[cfg.style],
	    cfg.wrap ? "wrap-" : "", cfg.wrap ? cfg.wrap_k : 0,
	    cfg.close_under_load ? "load" : (use_close_protocol() ? "end" : "no"), cfg.seed, t.rounds,
	    t.wrapped, cfg.msgs, t.timed, t.enq, t.deq, t.drained, t.enq + t.deq + t.drained, t.calls, t.lost,
	    t.dup, t.order, t.corrupt, t.after, t.count_bad, t1 - t0, ok ? "OK" : "FAIL");

	for (unsigned i = 0; i < cfg.consumers; i++)
		free(conss[i].last);
	free(conss);
	free(prods);
	free(received);
	return ok ? 0 : 1;
}
