/* SPDX-License-Identifier: MIT */
/*
 * bench_pq: the priority queue against the plain quay ring, in one binary
 * and one run, so the pq's cost per message over the ring is read off
 * directly. C bodies, registered through bench/shim/quay_bench.h.
 *
 *   ring_t/<PC>          quay ring, MPMC (flags 0), capacity 1024
 *   pq_t/<PC>/<L>        quay pq, strict, L = 1, 8 or 256 levels of
 *                        capacity 1024; message i of a producer goes to
 *                        level i % L
 *   pqw_t/<PC>/<L>       the same in weighted mode
 *   pair_ring, pair_pq/<L>, pair_pqw/<L>  one thread: push one, pop one
 *                        (no contention: the pure per-call cost)
 *
 * P producers and C consumers (P = C = PC) move QUAY_BENCH_MSGS (default
 * 2^18) 8-byte messages per iteration (encoded producer, level,
 * sequence). Each consumer checks that per producer and level the
 * sequence increases and that the level reported by pop is the level the
 * message was pushed to; the counts and sums must add up to what was
 * sent. Any mismatch ends the benchmark with qb_skip_with_error and the
 * program exits 1. On full/empty threads spin 64 pauses then sched_yield.
 * Time runs from a start flag to the last thread's finish (manual time);
 * threads are not timed starting. Counters: items/s and s_per_msg (wall
 * time / messages; "95n" = 95 ns).
 *
 * The start flag go is a release store / acquire load pair (what the main
 * thread set up is visible to the workers); received is a relaxed count
 * (it only tells consumers when to stop: the tallies are read after the
 * join).
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <quay/pq.h>
#include <quay/quay.h>

#include "quay_bench.h"

#define SEQ_BITS 40
#define SEQ_MASK (((uint64_t)1 << SEQ_BITS) - 1)
#define MAX_THREADS 4

static uint64_t g_msgs = (uint64_t)1 << 18;

static inline uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
enc(int p, unsigned level, uint64_t seq)
{
	return ((uint64_t)p << 56) | ((uint64_t)level << SEQ_BITS) | seq;
}

static inline void
relax(unsigned *spins)
{
	if (*spins < 64) {
		++*spins;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else {
		sched_yield();
	}
}

/* One queue under test: the ring (levels 1) or a pq; push(value, level),
 * pop(&value, &level), 0 on success. q_push and q_pop are always inlined
 * (GCC kept them out of line in the worker loops). */
struct q {
	quay_ring *ring;
	quay_pq *pq;
	unsigned levels;
};

static int
q_init(struct q *q, bool pq, unsigned levels, unsigned flags)
{
	memset(q, 0, sizeof *q);
	if (!pq) {
		q->levels = 1;
		return quay_ring_create(1024, 8, 0, &q->ring);
	}
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	o.levels = levels;
	o.capacity = 1024;
	o.elem_size = 8;
	o.flags = flags;
	const int rc = quay_pq_create(&o, &q->pq);
	if (rc == 0)
		q->levels = quay_pq_levels(q->pq);
	return rc;
}

static void
q_fini(struct q *q)
{
	if (q->ring != NULL)
		quay_ring_destroy(q->ring);
	if (q->pq != NULL)
		quay_pq_destroy(q->pq);
}

static inline __attribute__((always_inline)) int
q_push(struct q *q, uint64_t v, unsigned level)
{
	return q->pq != NULL ? quay_pq_push(q->pq, level, &v) : quay_ring_push(q->ring, &v);
}

static inline __attribute__((always_inline)) int
q_pop(struct q *q, uint64_t *v, unsigned *level)
{
	if (q->pq != NULL)
		return quay_pq_pop(q->pq, v, level);
	*level = 0;
	return quay_ring_pop(q->ring, v);
}

/* What the benchmark runs: the queue kind and where PC and levels come from. */
struct cfg {
	bool pq;
	unsigned flags;
};

struct run {
	struct q q;
	int np;
	uint64_t per;
	bool go;
	uint64_t received;
	uint64_t end[2 * MAX_THREADS];
};

struct tally {
	uint64_t count, sum, bad;
	uint64_t *last; /* per producer x level: last seq + 1 */
} __attribute__((aligned(64)));

struct worker {
	struct run *run;
	int index; /* producer p, or consumer np + c */
	struct tally tally;
};

static void *
consumer(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	struct tally *t = &w->tally;
	const unsigned L = r->q.levels;
	const uint64_t total = r->per * (uint64_t)r->np;
	unsigned spins = 0;

	while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE)) /* pairs with the release store in run_threads */
		;
	while (__atomic_load_n(&r->received, __ATOMIC_RELAXED) < total) { /* a count only: see the top */
		uint64_t v;
		unsigned level;
		if (q_pop(&r->q, &v, &level) != 0) {
			relax(&spins);
			continue;
		}
		spins = 0;
		__atomic_fetch_add(&r->received, 1, __ATOMIC_RELAXED); /* as above */
		const uint64_t p = v >> 56, lv = (v >> SEQ_BITS) & 0xffff, s = v & SEQ_MASK;
		if (p >= (uint64_t)r->np || lv >= L) {
			t->bad++;
			continue;
		}
		uint64_t *last = &t->last[p * L + lv];
		if (lv != level || s < *last)
			t->bad++;
		*last = s + 1;
		t->count++;
		t->sum += s;
	}
	r->end[w->index] = now_ns();
	return NULL;
}

static void *
producer(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	const int p = w->index;
	const unsigned L = r->q.levels;
	unsigned spins = 0;

	while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE)) /* pairs with the release store in run_threads */
		;
	for (uint64_t i = 0; i < r->per; i++) {
		const unsigned level = (unsigned)(i % L);
		while (q_push(&r->q, enc(p, level, i), level) != 0)
			relax(&spins);
		spins = 0;
	}
	r->end[p] = now_ns();
	return NULL;
}

static void
run_threads(qb_state *st, const struct cfg *cfg, unsigned levels, int np, int nc)
{
	while (qb_keep_running(st)) {
		struct run r;
		struct worker w[2 * MAX_THREADS];
		pthread_t ts[2 * MAX_THREADS];
		int n = 0;

		memset(&r, 0, sizeof r);
		if (q_init(&r.q, cfg->pq, levels, cfg->flags) != 0) {
			qb_skip_with_error(st, "could not create the queue");
			return;
		}
		r.np = np;
		r.per = g_msgs / (uint64_t)np;
		memset(w, 0, sizeof w);
		for (int c = 0; c < nc; c++, n++) {
			w[n].run = &r;
			w[n].index = np + c;
			w[n].tally.last = calloc((size_t)np * r.q.levels, sizeof(uint64_t));
			if (w[n].tally.last == NULL || pthread_create(&ts[n], NULL, consumer, &w[n]) != 0)
				abort();
		}
		for (int p = 0; p < np; p++, n++) {
			w[n].run = &r;
			w[n].index = p;
			if (pthread_create(&ts[n], NULL, producer, &w[n]) != 0)
				abort();
		}
		const struct timespec two_ms = {0, 2 * 1000 * 1000};
		nanosleep(&two_ms, NULL);
		const uint64_t t0 = now_ns();
		__atomic_store_n(&r.go, true, __ATOMIC_RELEASE); /* pairs with the workers' acquire loads */
		for (int i = 0; i < n; i++)
			pthread_join(ts[i], NULL);
		uint64_t t1 = t0;
		for (int i = 0; i < np + nc; i++)
			if (r.end[i] > t1)
				t1 = r.end[i];
		uint64_t count = 0, sum = 0, bad = 0;
		for (int c = 0; c < nc; c++) {
			count += w[c].tally.count;
			sum += w[c].tally.sum;
			bad += w[c].tally.bad;
			free(w[c].tally.last);
		}
		q_fini(&r.q);
		const uint64_t want_sum = (uint64_t)np * (r.per * (r.per - 1) / 2);
		if (bad != 0 || count != r.per * (uint64_t)np || sum != want_sum) {
			qb_skip_with_error(st, "received messages do not match what was sent");
			return;
		}
		qb_set_iteration_time(st, (double)(t1 - t0) * 1e-9);
	}
	const double msgs = (double)qb_iterations_done(st) * (double)(g_msgs / (uint64_t)np * (uint64_t)np);
	qb_set_items_processed(st, (int64_t)msgs);
	/* Seconds per message (printed with an SI prefix, e.g. 95n = 95 ns). */
	qb_counter(st, "s_per_msg", msgs, QB_COUNTER_RATE | QB_COUNTER_INVERT);
}

/* One thread, push one then pop one: the uncontended cost of a pair. */
static void
run_pair(qb_state *st, const struct cfg *cfg, unsigned levels)
{
	struct q q;
	if (q_init(&q, cfg->pq, levels, cfg->flags) != 0) {
		qb_skip_with_error(st, "could not create the queue");
		return;
	}
	const unsigned L = q.levels;
	uint64_t i = 0, bad = 0;
	for (uint64_t n; (n = qb_batch(st)) != 0;) {
		for (uint64_t k = 0; k < n; k++) {
			uint64_t v;
			unsigned level = (unsigned)(i % L);
			if (q_push(&q, i, level) != 0 || q_pop(&q, &v, &level) != 0 || v != i || level != i % L)
				bad++;
			i++;
		}
	}
	q_fini(&q);
	if (bad != 0)
		qb_skip_with_error(st, "push/pop pair returned the wrong message");
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

static const struct cfg k_ring = {false, 0};
static const struct cfg k_pq = {true, 0};
static const struct cfg k_pqw = {true, QUAY_PQ_WEIGHTED};

static void
threads_ring(qb_state *st, void *arg)
{
	const int pc = (int)qb_range_of(st, 0);
	run_threads(st, arg, 1, pc, pc);
}
static void
threads_pq(qb_state *st, void *arg)
{
	const int pc = (int)qb_range_of(st, 0);
	run_threads(st, arg, (unsigned)qb_range_of(st, 1), pc, pc);
}
static void
pair_ring(qb_state *st, void *arg)
{
	run_pair(st, arg, 1);
}
static void
pair_pq(qb_state *st, void *arg)
{
	run_pair(st, arg, (unsigned)qb_range_of(st, 0));
}

int
main(int argc, char **argv)
{
	const char *e = getenv("QUAY_BENCH_MSGS");
	if (e != NULL)
		g_msgs = strtoull(e, NULL, 10);

	qb_register("pair_ring", pair_ring, (void *)&k_ring);
	qb_bench *b = qb_register("pair_pq", pair_pq, (void *)&k_pq);
	qb_arg(qb_arg(qb_arg(b, 1), 8), 256);
	b = qb_register("pair_pqw", pair_pq, (void *)&k_pqw);
	qb_arg(qb_arg(b, 8), 256);

	b = qb_register("ring_t", threads_ring, (void *)&k_ring);
	qb_unit(qb_manual_time(qb_arg(qb_arg(qb_arg_name(b, "PC"), 1), 2)), QB_MS);
	b = QB_ARG_NAMES(qb_register("pq_t", threads_pq, (void *)&k_pq), "PC", "levels");
	QB_ARGS(b, 1, 1);
	QB_ARGS(b, 1, 8);
	QB_ARGS(b, 1, 256);
	QB_ARGS(b, 2, 1);
	QB_ARGS(b, 2, 8);
	QB_ARGS(b, 2, 256);
	qb_unit(qb_manual_time(b), QB_MS);
	b = QB_ARG_NAMES(qb_register("pqw_t", threads_pq, (void *)&k_pqw), "PC", "levels");
	QB_ARGS(b, 1, 8);
	QB_ARGS(b, 2, 8);
	QB_ARGS(b, 2, 256);
	qb_unit(qb_manual_time(b), QB_MS);
	return qb_main(argc, argv);
}
