/* SPDX-License-Identifier: MIT */
/*
 * Stress test of the priority queue (TESTING.md R6, issue 3 section 5).
 *
 *   stress_pq            every configuration at CI size (one line each)
 *   QUAY_STRESS_SCALE=N  multiply the message counts by N (soaks)
 *
 * Configurations:
 *   mpmc-*    P producers push items (producer, level, seq) at random
 *             levels (single pushes, bursts, or push_wait), C consumers
 *             pop (single, burst, or pop_wait) until every item is popped
 *             (no close: the bitmap alone must lead pops to every item).
 *             Checks: every (producer, seq) popped exactly once
 *             (conservation), and per consumer, per level, per producer
 *             the sequence numbers increase (FIFO within a level).
 *   close-*   the same, but the last producer closes the queue and
 *             consumers stop at -EPIPE: every push that returned 0 is
 *             popped.
 *   quiesce-* producers and consumers run concurrently; once the
 *             producers are done the consumers stop, and one thread pops
 *             the rest: priorities must never increase (strict order at
 *             quiescence; the bitmap lost no level), each level is FIFO
 *             per producer, and nothing is lost over both phases.
 *   share-*   weighted mode: level 0 is pre-filled with M items, the top
 *             level T with enough never to run dry, producers keep
 *             pushing at T, C consumers pop. Bound (quay/pq.h):
 *             before the last level-0 item's pop started, at most
 *             (ceil(M / w0) + 1) * wT top items had been popped. With one
 *             consumer, the gap between two level-0 pops is at most wT.
 * Exit status 1 on any violation.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <quay/pq.h>

#include "test_util.h"


#define MAXP 8
#define MAXC 8
#define SEQ_BITS 40
#define LVL_SHIFT SEQ_BITS
#define PROD_SHIFT (SEQ_BITS + 8)

static uint64_t
enc(unsigned p, unsigned level, uint64_t seq)
{
	return ((uint64_t)p << PROD_SHIFT) | ((uint64_t)level << LVL_SHIFT) | seq;
}

enum style { SINGLE, BURST, WAIT, MIXED };

struct cfg {
	const char *name;
	unsigned levels, flags;
	size_t cap;
	int np, nc;
	enum style style;
	uint64_t n; /* items per producer */
	int mode;   /* END_COUNT, END_CLOSE or END_QUIESCE */
};

/* How consumers stop: when every item was popped (pops alone must find
 * them all: no close, so the slow closed-queue scan cannot hide an item
 * the bitmap lost; stuck for STUCK_S seconds is a violation); when the
 * last producer closes the queue and it is drained; or, quiesce, when the
 * producers are done, after which one thread pops the rest in order. */
enum { END_COUNT, END_CLOSE, END_QUIESCE };
#define STUCK_S (QT_TSAN ? 60.0 : 10.0)

struct run {
	const struct cfg *c;
	quay_pq *pq;
	unsigned char *seen[MAXP]; /* seen[p][seq]: times popped */
	pthread_barrier_t start;
	uint64_t violations;
	uint64_t popped;
	int producers_left;
	int producers_done;
};

struct targ {
	struct run *run;
	int id;
};

static void
violation(struct run *r, const char *what, uint64_t v)
{
	if (__atomic_fetch_add(&r->violations, 1, __ATOMIC_RELAXED) < 5)
		fprintf(stderr, "%s: %s (item %#llx)\n", r->c->name, what, (unsigned long long)v);
}

static void
push_retry(struct run *r, unsigned level, const uint64_t *v, size_t n, enum style st, uint64_t *s)
{
	size_t done = 0;

	while (done < n) {
		enum style use = st == MIXED ? (enum style)(qt_rand(s) % 3) : st;
		int rc;

		if (use == BURST) {
			size_t k = quay_pq_push_burst(r->pq, level, v + done, n - done);
			if (k == 0)
				sched_yield();
			done += k;
			continue;
		}
		rc = use == WAIT ? quay_pq_push_wait(r->pq, level, v + done, -1) :
		                   quay_pq_push(r->pq, level, v + done);
		if (rc == 0)
			done++;
		else if (rc == -EAGAIN)
			sched_yield();
		else
			violation(r, "push failed", v[done]);
		if (rc != 0 && rc != -EAGAIN)
			return;
	}
}

static void *
producer(void *arg)
{
	struct targ *t = arg;
	struct run *r = t->run;
	const struct cfg *c = r->c;
	uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(t->id + 1);
	uint64_t seq = 0;

	pthread_barrier_wait(&r->start);
	while (seq < c->n) {
		unsigned level = (unsigned)(qt_rand(&s) % c->levels);
		uint64_t buf[8];
		size_t n = 1 + (size_t)(qt_rand(&s) % 8);

		if (n > c->n - seq)
			n = (size_t)(c->n - seq);
		for (size_t i = 0; i < n; i++)
			buf[i] = enc((unsigned)t->id, level, seq + i);
		push_retry(r, level, buf, n, c->style, &s);
		seq += n;
	}
	if (__atomic_sub_fetch(&r->producers_left, 1, __ATOMIC_ACQ_REL) == 0) {
		if (c->mode == END_CLOSE)
			quay_pq_close(r->pq);
		__atomic_store_n(&r->producers_done, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

struct ccheck {
	uint64_t next[MAXP][QUAY_PQ_LEVELS_MAX]; /* per producer, level: minimum next seq */
};

static void
consume(struct run *r, struct ccheck *ck, uint64_t v, unsigned prio)
{
	unsigned p = (unsigned)(v >> PROD_SHIFT), level = (unsigned)(v >> LVL_SHIFT) & 0xff;
	uint64_t seq = v & (((uint64_t)1 << SEQ_BITS) - 1);

	if (p >= (unsigned)r->c->np || seq >= r->c->n || level != prio) {
		violation(r, "corrupt item or wrong level", v);
		return;
	}
	if (seq < ck->next[p][level])
		violation(r, "FIFO order within a level broken", v);
	ck->next[p][level] = seq + 1;
	if (__atomic_fetch_add(&r->seen[p][seq], 1, __ATOMIC_RELAXED) != 0)
		violation(r, "duplicate", v);
}

static double qt_now_s(void);

static void *
consumer(void *arg)
{
	struct targ *t = arg;
	struct run *r = t->run;
	const struct cfg *c = r->c;
	struct ccheck *ck = calloc(1, sizeof(*ck));
	uint64_t s = 0x51ed27ull * (uint64_t)(t->id + 7), popped = 0;
	const uint64_t total = (uint64_t)c->np * c->n;
	uint64_t last_seen = 0;
	double last_progress = qt_now_s();

	pthread_barrier_wait(&r->start);
	for (;;) {
		if (c->mode == END_QUIESCE && __atomic_load_n(&r->producers_done, __ATOMIC_ACQUIRE))
			break;
		if (c->mode == END_COUNT) {
			uint64_t all = __atomic_load_n(&r->popped, __ATOMIC_RELAXED);
			if (all >= total)
				break;
			if (all != last_seen) {
				last_seen = all;
				last_progress = qt_now_s();
			} else if (qt_now_s() - last_progress > STUCK_S) {
				violation(r, "stuck: items invisible to pop", total - all);
				break;
			}
		}
		enum style use = c->style == MIXED ? (enum style)(qt_rand(&s) % 3) : c->style;
		uint64_t buf[16];
		unsigned prios[16];
		int rc;

		if (use == BURST) {
			size_t k = quay_pq_pop_burst(r->pq, buf, 1 + (size_t)(qt_rand(&s) % 16), prios);
			for (size_t i = 0; i < k; i++)
				consume(r, ck, buf[i], prios[i]);
			__atomic_fetch_add(&r->popped, k, __ATOMIC_RELAXED);
			if (k != 0)
				continue;
			rc = quay_pq_pop(r->pq, buf, prios); /* tells empty from drained */
		} else {
			/* Timed: END_COUNT and END_QUIESCE runs never close. */
			rc = use == WAIT ?
			    quay_pq_pop_wait(r->pq, buf, prios, c->mode == END_CLOSE ? -1 : 20000000) :
			    quay_pq_pop(r->pq, buf, prios);
		}
		if (rc == 0) {
			consume(r, ck, buf[0], prios[0]);
			__atomic_fetch_add(&r->popped, 1, __ATOMIC_RELAXED);
		} else if (rc == -EPIPE) {
			break;
		} else if (rc == -EAGAIN || rc == -ETIMEDOUT) {
			sched_yield();
		} else {
			violation(r, "pop failed", (uint64_t)rc);
			break;
		}
	}
	(void)popped;
	free(ck);
	return NULL;
}

static quay_pq *
make(unsigned levels, size_t cap, unsigned flags)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = NULL;

	o.levels = levels;
	o.capacity = cap;
	o.elem_size = 8;
	o.flags = flags;
	if (quay_pq_create(&o, &pq) != 0) {
		fprintf(stderr, "create failed\n");
		exit(2);
	}
	return pq;
}

/* mpmc-* (nc > 0) and quiesce-* (nc == 0) runs. */
static uint64_t
run_mpmc(const struct cfg *c)
{
	struct run r;
	pthread_t tp[MAXP], tc[MAXC];
	struct targ ap[MAXP], ac[MAXC];
	uint64_t lost = 0, dup = 0, left = 0;
	double t0 = qt_now_s();

	memset(&r, 0, sizeof(r));
	r.c = c;
	r.pq = make(c->levels, c->cap, c->flags);
	r.producers_left = c->np;
	for (int p = 0; p < c->np; p++)
		r.seen[p] = calloc((size_t)c->n, 1);
	pthread_barrier_init(&r.start, NULL, (unsigned)(c->np + c->nc));
	for (int i = 0; i < c->nc; i++) {
		ac[i] = (struct targ){ &r, i };
		pthread_create(&tc[i], NULL, consumer, &ac[i]);
	}
	for (int i = 0; i < c->np; i++) {
		ap[i] = (struct targ){ &r, i };
		pthread_create(&tp[i], NULL, producer, &ap[i]);
	}
	for (int i = 0; i < c->np; i++)
		pthread_join(tp[i], NULL);
	for (int i = 0; i < c->nc; i++)
		pthread_join(tc[i], NULL);
	if (c->mode == END_QUIESCE) {
		/* Quiescent: one thread pops everything that is left. */
		struct ccheck *ck = calloc(1, sizeof(*ck));
		unsigned last = QUAY_PQ_LEVELS_MAX, prio;
		uint64_t v;
		size_t before = quay_pq_count(r.pq);

		if (before != c->np * c->n - r.popped)
			violation(&r, "count at quiescence", before);
		left = before;
		while (quay_pq_pop(r.pq, &v, &prio) == 0) {
			if (prio > last)
				violation(&r, "priority increased at quiescence", v);
			last = prio;
			consume(&r, ck, v, prio);
			r.popped++;
		}
		free(ck);
	}
	for (int p = 0; p < c->np; p++) {
		for (uint64_t s = 0; s < c->n; s++) {
			lost += r.seen[p][s] == 0;
			dup += r.seen[p][s] > 1;
		}
		free(r.seen[p]);
	}
	if (lost != 0)
		violation(&r, "lost items", lost);
	if (quay_pq_count(r.pq) != 0)
		violation(&r, "count not 0 after the drain", quay_pq_count(r.pq));
	printf("%-28s levels %3u cap %4zu %dP%dC: %llu ops in %.2f s, lost %llu, dup %llu, "
	       "violations %llu",
	    c->name, c->levels, c->cap, c->np, c->nc, (unsigned long long)(c->np * c->n), qt_now_s() - t0,
	    (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)r.violations);
	if (c->mode == END_QUIESCE)
		printf(", %llu popped in order at quiescence", (unsigned long long)left);
	printf("\n");
	pthread_barrier_destroy(&r.start);
	quay_pq_destroy(r.pq);
	return r.violations;
}

/* ---- weighted share under a flood ---------------------------------- */

struct share {
	quay_pq *pq;
	unsigned levels, top;
	uint64_t m;          /* level-0 items */
	uint64_t top_popped; /* completed top pops (shared counter) */
	uint64_t bound_seen; /* top_popped read before the last level-0 pop */
	uint64_t max_gap;    /* one consumer: top pops between level-0 pops */
	uint64_t low_left;
	int stop;
	int nc;
	uint64_t violations;
	pthread_barrier_t start;
};

static void *
share_producer(void *arg)
{
	struct share *sh = arg;
	uint64_t v = 1;

	pthread_barrier_wait(&sh->start);
	while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED))
		if (quay_pq_push_wait(sh->pq, sh->top, &v, 1000000) == -EPIPE)
			break;
	return NULL;
}

static void *
share_consumer(void *arg)
{
	struct share *sh = arg;
	uint64_t v, gap = 0;
	unsigned prio;

	pthread_barrier_wait(&sh->start);
	while (__atomic_load_n(&sh->low_left, __ATOMIC_ACQUIRE) != 0) {
		/* Read before the pop: these top pops all were allotted before it. */
		uint64_t before = __atomic_load_n(&sh->top_popped, __ATOMIC_ACQUIRE);

		if (quay_pq_pop(sh->pq, &v, &prio) != 0) {
			sched_yield();
			continue;
		}
		if (prio == sh->top) {
			__atomic_fetch_add(&sh->top_popped, 1, __ATOMIC_ACQ_REL);
			gap++;
			continue;
		}
		if (prio != 0)
			__atomic_fetch_add(&sh->violations, 1, __ATOMIC_RELAXED);
		if (sh->nc == 1 && gap > sh->max_gap) /* only one consumer writes it */
			sh->max_gap = gap;
		gap = 0;
		if (v == sh->m - 1) /* FIFO: the last level-0 item */
			sh->bound_seen = before;
		__atomic_fetch_sub(&sh->low_left, 1, __ATOMIC_ACQ_REL);
	}
	return NULL;
}

static uint64_t
run_share(const char *name, int np, int nc, uint64_t m)
{
	struct share sh;
	pthread_t tp[MAXP], tc[MAXC];
	const unsigned levels = 4;
	double t0 = qt_now_s();
	uint64_t w0 = 1, wt = levels, bound, bad = 0;

	memset(&sh, 0, sizeof(sh));
	sh.levels = levels;
	sh.top = levels - 1;
	sh.m = m;
	sh.low_left = m;
	sh.nc = nc;
	sh.pq = make(levels, 1024, QUAY_PQ_WEIGHTED);
	/* Level 0 holds all M items from the start, and the top level enough
	 * that it cannot run empty before level 0 does even if the producers
	 * never ran: a real flood (capacity rounded up). */
	{
		struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
		size_t cap = 1;

		while (cap < (m / w0 + 2) * wt)
			cap <<= 1;
		quay_pq_destroy(sh.pq);
		o.levels = levels;
		o.capacity = cap;
		o.elem_size = 8;
		o.flags = QUAY_PQ_WEIGHTED;
		if (quay_pq_create(&o, &sh.pq) != 0)
			exit(2);
	}
	for (uint64_t i = 0; i < m; i++)
		if (quay_pq_push(sh.pq, 0, &i) != 0)
			exit(2);
	for (uint64_t i = 0; i < (m / w0 + 2) * wt; i++)
		if (quay_pq_push(sh.pq, sh.top, &i) != 0)
			exit(2);
	pthread_barrier_init(&sh.start, NULL, (unsigned)(np + nc));
	for (int i = 0; i < np; i++)
		pthread_create(&tp[i], NULL, share_producer, &sh);
	for (int i = 0; i < nc; i++)
		pthread_create(&tc[i], NULL, share_consumer, &sh);
	for (int i = 0; i < nc; i++)
		pthread_join(tc[i], NULL);
	__atomic_store_n(&sh.stop, 1, __ATOMIC_RELAXED);
	quay_pq_close(sh.pq);
	for (int i = 0; i < np; i++)
		pthread_join(tp[i], NULL);
	bound = ((m + w0 - 1) / w0 + 1) * wt;
	if (sh.bound_seen > bound) {
		fprintf(stderr, "%s: %llu top pops before the last level-0 pop, bound %llu\n", name,
		    (unsigned long long)sh.bound_seen, (unsigned long long)bound);
		bad++;
	}
	if (nc == 1 && sh.max_gap > wt) {
		fprintf(stderr, "%s: gap %llu > w[T] %llu\n", name, (unsigned long long)sh.max_gap,
		    (unsigned long long)wt);
		bad++;
	}
	bad += sh.violations;
	printf("%-28s levels %3u %dP%dC: level 0 %llu items, top popped before its last %llu "
	       "(bound %llu, share %.4f, documented %.4f)%s%llu, %.2f s, violations %llu\n",
	    name, levels, np, nc, (unsigned long long)m, (unsigned long long)sh.bound_seen,
	    (unsigned long long)bound, (double)m / (double)(m + sh.bound_seen),
	    (double)w0 / (double)(w0 + wt), nc == 1 ? ", max gap " : ", gap n/a ",
	    (unsigned long long)(nc == 1 ? sh.max_gap : 0), qt_now_s() - t0, (unsigned long long)bad);
	pthread_barrier_destroy(&sh.start);
	quay_pq_destroy(sh.pq);
	return bad;
}

int
main(void)
{
	const char *env = getenv("QUAY_STRESS_SCALE");
	uint64_t scale = env != NULL && atoll(env) > 0 ? (uint64_t)atoll(env) : 1;
	uint64_t n = (QT_TSAN ? 200000 : 1500000) * scale;
	uint64_t bad = 0;
	const uint64_t nq = (QT_TSAN ? 80000 : 400000) * scale;
	const struct cfg cfgs[] = {
		{ "mpmc-strict-single", 8, 0, 64, 4, 4, SINGLE, n, END_COUNT },
		{ "mpmc-strict-burst", 8, 0, 16, 2, 2, BURST, n, END_COUNT },
		{ "mpmc-strict-wait", 3, 0, 4, 2, 2, WAIT, n / 8, END_COUNT },
		{ "mpmc-strict-mixed-256", 256, 0, 8, 4, 2, MIXED, n / 2, END_COUNT },
		{ "mpmc-strict-1level", 1, 0, 32, 2, 2, MIXED, n, END_COUNT },
		{ "mpmc-weighted-single", 8, QUAY_PQ_WEIGHTED, 64, 4, 4, SINGLE, n, END_COUNT },
		{ "mpmc-weighted-mixed-70", 70, QUAY_PQ_WEIGHTED, 8, 2, 4, MIXED, n / 2, END_COUNT },
		{ "mpmc-weighted-wait", 5, QUAY_PQ_WEIGHTED, 2, 4, 2, WAIT, n / 8, END_COUNT },
		{ "close-strict-mixed-130", 130, 0, 4, 3, 3, MIXED, n / 4, END_CLOSE },
		{ "close-weighted-wait", 4, QUAY_PQ_WEIGHTED, 2, 2, 2, WAIT, n / 8, END_CLOSE },
		/* Full levels are fine: consumers run until the producers are done. */
		{ "quiesce-strict-256", 256, 0, 256, 4, 2, MIXED, nq, END_QUIESCE },
		{ "quiesce-strict-65", 65, 0, 1024, 2, 2, BURST, nq, END_QUIESCE },
		{ "quiesce-strict-8", 8, 0, 4096, 2, 1, SINGLE, nq, END_QUIESCE },
	};

	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
		struct cfg c = cfgs[i];
		bad += run_mpmc(&c);
	}
	bad += run_share("share-weighted-4P1C", 4, 1, (QT_TSAN ? 20000 : 100000) * scale);
	bad += run_share("share-weighted-2P3C", 2, 3, (QT_TSAN ? 20000 : 100000) * scale);
	printf("stress_pq: %s\n", bad ? "FAILED" : "ok");
	return bad ? 1 : 0;
}
