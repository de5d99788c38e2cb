/* SPDX-License-Identifier: MIT */
/*
 * bench_queue: what the queue's semantics cost, against the layers below
 * it, in one binary and one run. C bodies, registered through
 * bench/shim/quay_bench.h.
 *
 *   ring/PC:N        quay ring (MPMC, capacity 4096): push/pop an 8-byte value
 *   pq/PC:N          quay pq (1 level, capacity 4096): push/pop an 8-byte value
 *   pq_msg/PC:N      quay_msg_new + pq push of the pointer / pop + unref
 *   queue/PC:N       quay_msg_new + quay_queue_send / receive + ack + unref
 *                    (lease table, expiry FIFO, counters, histograms)
 *   queue_reuse/PC:N the same with messages made once and recycled (the
 *                    benchmark keeps a reference; a message is re-sent once
 *                    its count is back to 1): the queue alone, without the
 *                    pool's cross-thread alloc/free
 *   queue_tsc/PC:N, queue_reuse_tsc/PC:N
 *                    the same two with quay_queue_clock_tsc as the clock of
 *                    the queue and of the pools (the default is
 *                    clock_gettime(CLOCK_REALTIME))
 *   fifo/PC:N/groups:G  the queue benchmark on a FIFO queue (issue 13): each
 *                    message carries a group header; producer p sends to
 *                    the groups g with g % N == p (groups < N: shared),
 *                    round robin. Consumers also check that each group's
 *                    messages from each producer arrive in send order.
 *                    Same run as queue/PC:N, the standard queue (whose
 *                    messages carry the same header, unused).
 *   pair_pq, pair_pq_msg, pair_queue
 *                    one thread: one message through and back, per call
 *                    (pair_queue/clock:1: quay_queue_clock_tsc for the
 *                    queue and the pool)
 *   pair_dedup/mode:M  one thread, 64-byte bodies all different: send +
 *                    receive + ack with no dedup (0), an id dedup header
 *                    (1) or content dedup (2, XXH3-128 of body + group,
 *                    a reference kept per remembered message); the cost
 *                    per send is the difference to mode 0
 *   delayed_1M       1M messages sent with not-before times spread over
 *                    1000 ticks of 1 ms (fake clock): insert rate; then the
 *                    clock steps 1 ms at a time and quay_queue_tick fires
 *                    them: fire rate (time in tick only) and lateness
 *                    (every message must be ready within one tick of its
 *                    due time and never before it)
 *   latency          one message in flight at a time, 1 producer, 1
 *                    consumer sleeping in receive: send -> receive
 *                    latency percentiles (wake-up included)
 *
 * N producers and N consumers move QUAY_BENCH_MSGS (default 2^19) messages
 * per iteration. Consumers check every value arrives exactly once (count
 * and sum); a mismatch ends the benchmark with qb_skip_with_error (the
 * program then exits 1). Manual time from start to the last thread's
 * finish. Counters: items_per_second and ns_per_msg.
 *
 * The start flag go is a release store / acquire load pair (what the main
 * thread set up is visible to the workers). left is a relaxed count (it
 * only tells consumers when to stop); the consumers' sums, counts and bad
 * counts are read after the join.
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/pq.h>
#include <quay/queue.h>
#include <quay/quay.h>
#include <quay/ring.h>
#include <quay/stats.h>

#include "quay_bench.h"

#define MAX_PC 2    /* the PC arguments registered below: 1 and 2 */
#define REUSE 8192  /* recycled messages per producer (queue_reuse) */
#define SEQ_BITS 40 /* a value is producer << 40 | (i + 1) */
#define SEQ_MASK (((uint64_t)1 << SEQ_BITS) - 1)

static uint64_t g_msgs = (uint64_t)1 << 19;

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void
relax(unsigned *spins)
{
	if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else {
		sched_yield();
	}
}

/* A pool of count 256-byte blocks; its clock is quay_queue_clock_tsc when
 * tsc (the stamp quay_msg_new puts on a message). */
static quay_pool *
make_pool(size_t count, bool tsc)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;

	if (tsc)
		o.clock = quay_queue_clock_tsc;
	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = (uint32_t)count;
	if (quay_pool_create(count * 256, &o, &p) != 0)
		return NULL;
	return p;
}

/* ---- N producers, N consumers ------------------------------------------- */

enum kind { K_RING, K_PQ, K_PQ_MSG, K_QUEUE, K_QUEUE_REUSE, K_QUEUE_HDR, K_FIFO };

/* What a benchmark runs: the kind and whether the clocks are the TSC's. */
struct cfg {
	enum kind kind;
	bool tsc;
};

struct shared {
	enum kind kind;
	quay_ring *ring;
	quay_pq *pq;
	quay_queue *q;
	quay_pool *pool;
	uint64_t per_producer;
	int producers;
	uint64_t left; /* messages not yet consumed */
	uint64_t sum;
	uint64_t count;
	bool go;
	int bad;
	quay_msg **reuse[MAX_PC]; /* K_QUEUE_REUSE: REUSE per producer */
	uint32_t groups;          /* K_FIFO / K_QUEUE_HDR */
	uint64_t *last;           /* K_FIFO, [group * producers + p]: last seq seen */
};

struct worker {
	struct shared *s;
	int p; /* the producer's index */
};

/* A message of group g (header "g<n>"). */
static int
make_grouped(struct shared *s, uint64_t v, uint32_t g, quay_msg **m)
{
	char gid[16];
	const int n = snprintf(gid, sizeof gid, "g%u", g);

	if (quay_msg_new_ex(s->pool, &v, sizeof v, QUAY_MSG_HEADER_ROOM(1, 24), 0, m) != 0)
		return -1;
	return quay_msg_set_header(*m, QUAY_MSG_H_GROUP, gid, (size_t)n);
}

static void
produce_one(struct shared *s, int p, uint64_t i)
{
	uint64_t v = ((uint64_t)p << SEQ_BITS) | (i + 1);
	unsigned spins = 0;

	switch (s->kind) {
	case K_RING:
		while (quay_ring_push(s->ring, &v) != 0)
			relax(&spins);
		break;
	case K_PQ:
		while (quay_pq_push(s->pq, 0, &v) != 0)
			relax(&spins);
		break;
	case K_QUEUE_REUSE: {
		/* The benchmark keeps one reference to each message, so the
		 * consumer's last unref never frees it: once the count is back
		 * to 1 the queue is done with it and it is sent again. */
		quay_msg *m = s->reuse[p][i % REUSE];

		while (quay_msg_refcount(m) != 1)
			relax(&spins);
		/* Pairs with the consumer's unref (its release decrement):
		 * its reads of the message come before this reuse. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		spins = 0;
		quay_msg_set_body(m, &v, sizeof v);
		quay_msg_set_attempts(m, 0);
		quay_msg_ref(m);
		while (quay_queue_send(s->q, m) != 0)
			relax(&spins);
		break;
	}
	case K_QUEUE_HDR:
	case K_FIFO: {
		/* Producer p's groups: p, p + N, p + 2N, ... (all of them
		 * shared when there are fewer groups than producers). */
		const uint32_t np = (uint32_t)s->producers;
		const uint32_t mine = s->groups >= np ? s->groups / np : 1;
		const uint32_t g =
		    s->groups >= np ? (uint32_t)p + np * (uint32_t)(i % mine) : (uint32_t)(i % s->groups);
		quay_msg *m = NULL;

		while (make_grouped(s, v, g, &m) != 0) {
			if (m != NULL) {
				quay_msg_unref(m);
				m = NULL;
			}
			relax(&spins);
		}
		spins = 0;
		while (quay_queue_send(s->q, m) != 0)
			relax(&spins);
		break;
	}
	case K_PQ_MSG:
	case K_QUEUE: {
		quay_msg *m = NULL;

		while (quay_msg_new(s->pool, &v, sizeof v, &m) != 0)
			relax(&spins);
		spins = 0;
		if (s->kind == K_PQ_MSG) {
			while (quay_pq_push(s->pq, 0, &m) != 0)
				relax(&spins);
		} else {
			while (quay_queue_send(s->q, m) != 0)
				relax(&spins);
		}
		break;
	}
	}
}

static void *
produce(void *arg)
{
	const struct worker *w = arg;
	struct shared *s = w->s;

	while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE)) /* pairs with the release store in run_pc */
		;
	for (uint64_t i = 0; i < s->per_producer; i++)
		produce_one(s, w->p, i);
	quay_pool_cache_flush(s->pool);
	return NULL;
}

/* K_FIFO: per group and producer, in send order. One message of a group is
 * in flight at a time, and the ack that follows orders this check before
 * the next receive of the group (so last needs no atomics). */
static void
check_fifo(struct shared *s, quay_msg *m, uint64_t v)
{
	const void *gv;
	size_t gl;
	char gid[16] = {0};

	if (quay_msg_get_header(m, QUAY_MSG_H_GROUP, &gv, &gl) != 0 || gl <= 1 || gl >= sizeof gid) {
		__atomic_fetch_add(&s->bad, 1, __ATOMIC_RELAXED); /* a count only: read after the join */
		return;
	}
	memcpy(gid, gv, gl);
	const size_t g = strtoul(gid + 1, NULL, 10), p = (size_t)(v >> SEQ_BITS);
	if (g >= s->groups || p >= (size_t)s->producers) {
		__atomic_fetch_add(&s->bad, 1, __ATOMIC_RELAXED); /* as above */
		return;
	}
	uint64_t *last = &s->last[g * (size_t)s->producers + p];
	if ((v & SEQ_MASK) <= *last)
		__atomic_fetch_add(&s->bad, 1, __ATOMIC_RELAXED); /* as above */
	*last = v & SEQ_MASK;
}

/* One message taken into *v: true, or false when there was none. */
static bool
consume_one(struct shared *s, uint64_t *v)
{
	switch (s->kind) {
	case K_RING: return quay_ring_pop(s->ring, v) == 0;
	case K_PQ: return quay_pq_pop(s->pq, v, NULL) == 0;
	case K_PQ_MSG: {
		quay_msg *m = NULL;
		if (quay_pq_pop(s->pq, &m, NULL) != 0)
			return false;
		memcpy(v, quay_msg_body(m), sizeof *v);
		quay_msg_unref(m);
		return true;
	}
	case K_QUEUE:
	case K_QUEUE_HDR:
	case K_FIFO:
	case K_QUEUE_REUSE: {
		quay_lease l;
		if (quay_queue_receive(s->q, &l, 0) != 0)
			return false;
		memcpy(v, quay_msg_body(l.msg), sizeof *v);
		if (s->kind == K_FIFO)
			check_fifo(s, l.msg, *v);
		if (quay_queue_ack(s->q, &l) != 0)
			__atomic_fetch_add(&s->bad, 1, __ATOMIC_RELAXED); /* a count only: read after the join */
		quay_msg_unref(l.msg);
		return true;
	}
	}
	return false;
}

static void *
consume(void *arg)
{
	const struct worker *w = arg;
	struct shared *s = w->s;
	uint64_t sum = 0, n = 0;

	while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE)) /* pairs with the release store in run_pc */
		;
	for (;;) {
		uint64_t v = 0;
		unsigned spins = 0;

		for (;;) {
			if (__atomic_load_n(&s->left, __ATOMIC_RELAXED) == 0) /* a count only: see the top */
				goto out;
			if (consume_one(s, &v))
				break;
			relax(&spins);
		}
		sum += v;
		n++;
		__atomic_fetch_sub(&s->left, 1, __ATOMIC_RELAXED); /* as above */
	}
out:
	__atomic_fetch_add(&s->sum, sum, __ATOMIC_RELAXED); /* read after the join */
	__atomic_fetch_add(&s->count, n, __ATOMIC_RELAXED); /* read after the join */
	quay_pool_cache_flush(s->pool);
	return NULL;
}

/* The queue (or ring, or pq) of one iteration; 0 or a negative errno. */
static int
make_target(struct shared *s, const struct cfg *cfg, quay_pool *reuse_pool)
{
	const enum kind kind = cfg->kind;

	if (kind == K_RING)
		return quay_ring_create(4096, 8, 0, &s->ring);
	if (kind == K_PQ || kind == K_PQ_MSG) {
		struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
		o.levels = 1;
		o.capacity = 4096;
		o.elem_size = 8;
		return quay_pq_create(&o, &s->pq);
	}

	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	if (kind == K_QUEUE_REUSE)
		for (int p = 0; p < s->producers; p++) {
			s->reuse[p] = calloc(REUSE, sizeof(quay_msg *));
			if (s->reuse[p] == NULL)
				return -1;
			for (size_t i = 0; i < REUSE; i++)
				if (quay_msg_alloc(reuse_pool, 8, &s->reuse[p][i]) != 0)
					return -1;
		}
	o.capacity = 4096;
	o.max_in_flight = 64;
	if (cfg->tsc)
		o.clock = quay_queue_clock_tsc;
	if (kind == K_FIFO)
		o.flags = QUAY_QUEUE_FIFO;
	return quay_queue_create(&o, &s->q);
}

static void
free_target(struct shared *s)
{
	if (s->ring != NULL)
		quay_ring_destroy(s->ring);
	if (s->pq != NULL)
		quay_pq_destroy(s->pq);
	if (s->q != NULL)
		quay_queue_destroy(s->q);
	for (int p = 0; p < MAX_PC; p++) {
		if (s->reuse[p] == NULL)
			continue;
		for (size_t i = 0; i < REUSE; i++)
			if (s->reuse[p][i] != NULL)
				quay_msg_unref(s->reuse[p][i]);
		free(s->reuse[p]);
	}
	free(s->last);
}

static void
run_pc(qb_state *st, void *arg)
{
	const struct cfg *cfg = arg;
	const int pc = (int)qb_range_of(st, 0);
	const uint32_t groups = cfg->kind == K_FIFO || cfg->kind == K_QUEUE_HDR ? (uint32_t)qb_range_of(st, 1) : 0;
	double secs = 0;
	uint64_t total = 0;

	if (pc < 1 || pc > MAX_PC) {
		qb_skip_with_error(st, "PC out of range");
		return;
	}
	quay_pool *pool = make_pool(8192 + 1024 * (size_t)pc, cfg->tsc);
	quay_pool *reuse_pool = make_pool(REUSE * MAX_PC, cfg->tsc);
	while (qb_keep_running(st)) {
		struct shared s;
		struct worker w[2 * MAX_PC];
		pthread_t th[2 * MAX_PC];
		int nth = 0;

		memset(&s, 0, sizeof s);
		s.kind = cfg->kind;
		s.pool = pool;
		s.per_producer = g_msgs / (uint64_t)pc;
		s.left = s.per_producer * (uint64_t)pc;
		s.groups = groups;
		s.producers = pc;
		if (cfg->kind == K_FIFO)
			s.last = calloc((size_t)groups * (size_t)pc, sizeof(uint64_t));
		if ((cfg->kind == K_FIFO && s.last == NULL) || make_target(&s, cfg, reuse_pool) != 0) {
			free_target(&s);
			qb_skip_with_error(st, "could not create the queue or its messages");
			break;
		}
		for (int i = 0; i < pc; i++, nth++) {
			w[nth] = (struct worker){&s, i};
			if (pthread_create(&th[nth], NULL, consume, &w[nth]) != 0)
				abort();
		}
		for (int i = 0; i < pc; i++, nth++) {
			w[nth] = (struct worker){&s, i};
			if (pthread_create(&th[nth], NULL, produce, &w[nth]) != 0)
				abort();
		}
		const double t0 = now_s();
		__atomic_store_n(&s.go, true, __ATOMIC_RELEASE); /* pairs with the workers' acquire loads */
		for (int i = 0; i < nth; i++)
			pthread_join(th[i], NULL);
		const double e = now_s() - t0;
		qb_set_iteration_time(st, e);
		secs += e;
		const uint64_t n = s.per_producer * (uint64_t)pc;
		uint64_t want = 0;
		for (int p = 0; p < pc; p++)
			want += ((uint64_t)p << SEQ_BITS) * s.per_producer + s.per_producer * (s.per_producer + 1) / 2;
		total += n;
		free_target(&s);
		if (s.count != n || s.sum != want || s.bad != 0) {
			qb_skip_with_error(st, "lost, duplicated or failed messages");
			break;
		}
	}
	quay_pool_destroy(pool);
	quay_pool_destroy(reuse_pool);
	qb_counter(st, "items_per_second", (double)total / secs, QB_COUNTER_DEFAULT);
	qb_counter(st, "ns_per_msg", secs * 1e9 / (double)total, QB_COUNTER_DEFAULT);
}

/* ---- one thread, per call ----------------------------------------------- */

static void
pair_pq(qb_state *st, void *arg)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = NULL;
	uint64_t n = 0;

	(void)arg;
	o.levels = 1;
	o.capacity = 1024;
	o.elem_size = 8;
	quay_pq_create(&o, &pq);
	for (uint64_t b; (b = qb_batch(st)) != 0;)
		for (uint64_t k = 0; k < b; k++) {
			uint64_t out = 0;
			if (quay_pq_push(pq, 0, &n) != 0 || quay_pq_pop(pq, &out, NULL) != 0 || out != n) {
				qb_skip_with_error(st, "pq pair failed");
				goto out;
			}
			n++;
		}
out:
	quay_pq_destroy(pq);
	qb_counter(st, "items_per_second", (double)n, QB_COUNTER_RATE);
}

static void
pair_pq_msg(qb_state *st, void *arg)
{
	quay_pool *pool = make_pool(1024, false);
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = NULL;
	uint64_t n = 0;

	(void)arg;
	o.levels = 1;
	o.capacity = 1024;
	o.elem_size = 8;
	quay_pq_create(&o, &pq);
	for (uint64_t b; (b = qb_batch(st)) != 0;)
		for (uint64_t k = 0; k < b; k++) {
			quay_msg *m = NULL, *got = NULL;
			if (quay_msg_new(pool, &n, sizeof n, &m) != 0 || quay_pq_push(pq, 0, &m) != 0 ||
			    quay_pq_pop(pq, &got, NULL) != 0 || got != m) {
				qb_skip_with_error(st, "pq pair failed");
				goto out;
			}
			quay_msg_unref(got);
			n++;
		}
out:
	quay_pq_destroy(pq);
	quay_pool_destroy(pool);
	qb_counter(st, "items_per_second", (double)n, QB_COUNTER_RATE);
}

/* clock:0 the default clock (clock_gettime(CLOCK_REALTIME) for the pool's
 * stamp and the queue's); clock:1 quay_queue_clock_tsc for both. */
static void
pair_queue(qb_state *st, void *arg)
{
	const bool tsc = qb_range_of(st, 0) != 0;
	quay_pool *pool = make_pool(1024, tsc);
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;
	uint64_t n = 0;

	(void)arg;
	o.capacity = 1024;
	if (tsc)
		o.clock = quay_queue_clock_tsc;
	quay_queue_create(&o, &q);
	for (uint64_t b; (b = qb_batch(st)) != 0;)
		for (uint64_t k = 0; k < b; k++) {
			quay_msg *m = NULL;
			quay_lease l;
			if (quay_msg_new(pool, &n, sizeof n, &m) != 0 || quay_queue_send(q, m) != 0 ||
			    quay_queue_receive(q, &l, 0) != 0 || l.msg != m || quay_queue_ack(q, &l) != 0) {
				qb_skip_with_error(st, "queue pair failed");
				goto out;
			}
			quay_msg_unref(l.msg);
			n++;
		}
out:
	quay_queue_destroy(q);
	quay_pool_destroy(pool);
	qb_counter(st, "items_per_second", (double)n, QB_COUNTER_RATE);
}

/* One thread: send + receive + ack of 64-byte bodies, all different, with
 * no dedup, an id header, or content dedup (window 1 ms of real time, so
 * the table and the pool hold about a millisecond's worth of messages). */
static void
pair_dedup(qb_state *st, void *arg)
{
	const int mode = (int)qb_range_of(st, 0);
	struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
	quay_pool *pool = NULL;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;
	uint64_t n = 0;
	unsigned char body[64];

	(void)arg;
	po.nclasses = 1;
	po.class_size[0] = 512;
	po.class_count[0] = 1u << 17;
	if (quay_pool_create(((size_t)1 << 17) * 512, &po, &pool) != 0) {
		qb_skip_with_error(st, "pool");
		return;
	}
	o.capacity = 1024;
	if (mode != 0) {
		o.dedup_window_ns = 1000000;
		o.dedup_capacity = 1u << 15;
	}
	if (mode == 2)
		o.flags = QUAY_QUEUE_CONTENT_DEDUP;
	if (quay_queue_create(&o, &q) != 0) {
		quay_pool_destroy(pool);
		qb_skip_with_error(st, "create");
		return;
	}
	memset(body, 0x5a, sizeof body);
	for (uint64_t b; (b = qb_batch(st)) != 0;)
		for (uint64_t k = 0; k < b; k++) {
			quay_msg *m = NULL;
			quay_lease l;
			memcpy(body, &n, sizeof n);
			if (quay_msg_new(pool, body, sizeof body, &m) != 0) {
				qb_skip_with_error(st, "pool empty");
				goto out;
			}
			if (mode == 1) {
				char id[24];
				const int len = snprintf(id, sizeof id, "%llu", (unsigned long long)n);
				quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, (size_t)len);
			}
			if (quay_queue_send(q, m) != 0 || quay_queue_receive(q, &l, 0) != 0 || l.msg != m ||
			    quay_queue_ack(q, &l) != 0) {
				qb_skip_with_error(st, "dedup pair failed (a false duplicate, or the table full)");
				goto out;
			}
			quay_msg_unref(l.msg);
			n++;
		}
out:
	quay_queue_destroy(q);
	quay_pool_destroy(pool);
	qb_counter(st, "items_per_second", (double)n, QB_COUNTER_RATE);
}

/* ---- 1M delayed messages ------------------------------------------------ */

static int64_t g_fake;

/* The fake clock of delayed_1M: only the benchmark thread sets it, between
 * calls into the queue, so relaxed is enough. */
static int64_t
fake_clock(void *ctx)
{
	(void)ctx;
	return __atomic_load_n(&g_fake, __ATOMIC_RELAXED); /* pairs with the stores in delayed_1M (same thread) */
}

static void
delayed_1M(qb_state *st, void *arg)
{
	const size_t n = 1000000;
	const int64_t tick = 1000000, t0 = (int64_t)1700000000 * 1000000000;
	quay_pool *pool = make_pool(n + 1024, false);
	quay_msg **msgs = malloc(n * sizeof *msgs);

	(void)arg;
	if (pool == NULL || msgs == NULL) {
		qb_skip_with_error(st, "pool too small");
		goto done;
	}
	while (qb_keep_running(st)) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		quay_queue *q = NULL;
		uint64_t rng = 88172645463325252ull;
		size_t got = 0, early = 0, late = 0, made = 0, sent = 0;
		int64_t worst = 0;
		double tick_secs = 0;

		__atomic_store_n(&g_fake, t0, __ATOMIC_RELAXED); /* see fake_clock */
		o.capacity = n;
		o.max_in_flight = 1024;
		o.clock = fake_clock;
		o.tick_ns = tick;
		if (quay_queue_create(&o, &q) != 0) {
			qb_skip_with_error(st, "create failed");
			break;
		}
		for (; made < n; made++) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			if (quay_msg_alloc(pool, 8, &msgs[made]) != 0) {
				qb_skip_with_error(st, "pool too small");
				goto fail;
			}
			/* Due 1 ns .. 1000 ms after t0, at any nanosecond. */
			quay_msg_set_not_before_ns(msgs[made], t0 + 1 + (int64_t)(rng % (uint64_t)(1000 * tick)));
		}
		const double a = now_s();
		for (; sent < n; sent++)
			if (quay_queue_send(q, msgs[sent]) != 0) {
				qb_skip_with_error(st, "send failed");
				goto fail;
			}
		const double ins = now_s() - a;
		for (int64_t t = t0 + tick; t <= t0 + 1001 * tick; t += tick) {
			__atomic_store_n(&g_fake, t, __ATOMIC_RELAXED); /* see fake_clock */
			const double c = now_s();
			quay_queue_tick(q);
			tick_secs += now_s() - c;
			quay_lease ls[256];
			size_t k;
			while ((k = quay_queue_receive_batch(q, ls, 256, 0)) != 0) {
				for (size_t i = 0; i < k; i++) {
					const int64_t due = quay_msg_not_before_ns(ls[i].msg);
					if (due > t)
						early++;
					if (t - due >= tick)
						late++;
					if (t - due > worst)
						worst = t - due;
					quay_queue_ack(q, &ls[i]);
					quay_msg_unref(ls[i].msg);
				}
				got += k;
			}
		}
		qb_set_iteration_time(st, ins + tick_secs);
		quay_queue_destroy(q);
		qb_counter(st, "insert_per_second", (double)n / ins, QB_COUNTER_DEFAULT);
		qb_counter(st, "fire_per_second", (double)n / tick_secs, QB_COUNTER_DEFAULT);
		qb_counter(st, "max_late_ns", (double)worst, QB_COUNTER_DEFAULT);
		if (got != n || early != 0 || late != 0) {
			qb_skip_with_errorf(st, "got %zu of %zu, %zu early, %zu late by a tick or more", got, n, early,
			    late);
			break;
		}
		continue;
fail:
		/* The messages not handed to the queue are still ours. */
		for (size_t i = sent; i < made; i++)
			quay_msg_unref(msgs[i]);
		quay_queue_destroy(q);
		break;
	}
done:
	free(msgs);
	if (pool != NULL)
		quay_pool_destroy(pool);
}

/* ---- latency ------------------------------------------------------------ */

#define LAT_ROUNDS 20000

static int64_t
realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct lat_run {
	quay_queue *q;
	quay_pool *pool;
	quay_hist *h;
	int acked; /* messages the consumer has acked */
	int bad;   /* the consumer's failures */
};

static void *
lat_consumer(void *arg)
{
	struct lat_run *r = arg;

	for (int i = 0; i < LAT_ROUNDS; i++) {
		quay_lease l;
		if (quay_queue_receive(r->q, &l, (int64_t)5 * 1000000000) != 0) {
			/* Stops the producer's loop; read again after the join. */
			__atomic_fetch_add(&r->bad, 1, __ATOMIC_RELAXED);
			break;
		}
		quay_hist_record(r->h, (uint64_t)(realtime_ns() - quay_msg_enqueued_ns(l.msg)));
		if (quay_queue_ack(r->q, &l) != 0)
			__atomic_fetch_add(&r->bad, 1, __ATOMIC_RELAXED); /* as above */
		quay_msg_unref(l.msg);
		__atomic_store_n(&r->acked, i + 1, __ATOMIC_RELEASE); /* pairs with the acquire load in latency */
	}
	quay_pool_cache_flush(r->pool);
	return NULL;
}

static void
latency(qb_state *st, void *arg)
{
	quay_pool *pool = make_pool(1024, false);
	quay_stats *reg = NULL;
	quay_hist *h = NULL;

	(void)arg;
	quay_stats_create(NULL, &reg);
	quay_hist_create(reg, "lat", NULL, NULL, 0, &h);
	while (qb_keep_running(st)) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		struct lat_run r = {.pool = pool, .h = h};
		pthread_t c;

		o.capacity = 64;
		quay_queue_create(&o, &r.q);
		if (pthread_create(&c, NULL, lat_consumer, &r) != 0)
			abort();
		const double a = now_s();
		/* bad: a flag only here (see lat_consumer). */
		for (int i = 0; i < LAT_ROUNDS && __atomic_load_n(&r.bad, __ATOMIC_RELAXED) == 0; i++) {
			quay_msg *m = NULL;
			unsigned spins = 0;
			while (quay_msg_new(pool, &i, sizeof i, &m) != 0)
				relax(&spins);
			quay_queue_send(r.q, m);
			spins = 0;
			/* Pairs with the consumer's release store of acked. */
			while (__atomic_load_n(&r.acked, __ATOMIC_ACQUIRE) != i + 1 && spins < 100000000)
				relax(&spins);
		}
		pthread_join(c, NULL);
		qb_set_iteration_time(st, now_s() - a);
		quay_pool_cache_flush(pool);
		quay_queue_destroy(r.q);
		if (r.bad != 0 || r.acked != LAT_ROUNDS) {
			qb_skip_with_error(st, "lost messages");
			break;
		}
	}
	struct quay_hist_data *d = malloc(sizeof *d);
	uint64_t p50 = 0, p99 = 0, p999 = 0;
	if (d == NULL)
		abort();
	quay_hist_read(h, d);
	quay_hist_quantile(d, 0.5, &p50);
	quay_hist_quantile(d, 0.99, &p99);
	quay_hist_quantile(d, 0.999, &p999);
	qb_counter(st, "p50_ns", (double)p50, QB_COUNTER_DEFAULT);
	qb_counter(st, "p99_ns", (double)p99, QB_COUNTER_DEFAULT);
	qb_counter(st, "p999_ns", (double)p999, QB_COUNTER_DEFAULT);
	free(d);
	quay_stats_destroy(reg);
	quay_pool_destroy(pool);
}

/* ---- registration ------------------------------------------------------- */

static const struct cfg k_ring = {K_RING, false};
static const struct cfg k_pq = {K_PQ, false};
static const struct cfg k_pq_msg = {K_PQ_MSG, false};
static const struct cfg k_queue = {K_QUEUE, false};
static const struct cfg k_queue_reuse = {K_QUEUE_REUSE, false};
static const struct cfg k_queue_tsc = {K_QUEUE, true};
static const struct cfg k_queue_reuse_tsc = {K_QUEUE_REUSE, true};
static const struct cfg k_queue_hdr = {K_QUEUE_HDR, false};
static const struct cfg k_fifo = {K_FIFO, false};

/* name/PC:1, name/PC:2, manual time in ms. */
static void
reg_pc(const char *name, const struct cfg *cfg)
{
	qb_bench *b = qb_register(name, run_pc, (void *)cfg);
	qb_unit(qb_manual_time(qb_arg(qb_arg(qb_arg_name(b, "PC"), 1), 2)), QB_MS);
}

int
main(int argc, char **argv)
{
	const char *e = getenv("QUAY_BENCH_MSGS");
	if (e != NULL)
		g_msgs = strtoull(e, NULL, 10);

	/* The order of the C++ original's BENCHMARK lines: the list and the
	 * run order stay what they were. */
	qb_register("pair_pq", pair_pq, NULL);
	qb_register("pair_pq_msg", pair_pq_msg, NULL);
	qb_arg(qb_arg(qb_arg_name(qb_register("pair_queue", pair_queue, NULL), "clock"), 0), 1);
	reg_pc("ring", &k_ring);
	reg_pc("pq", &k_pq);
	reg_pc("pq_msg", &k_pq_msg);
	reg_pc("queue", &k_queue);
	reg_pc("queue_reuse", &k_queue_reuse);
	reg_pc("queue_tsc", &k_queue_tsc);
	reg_pc("queue_reuse_tsc", &k_queue_reuse_tsc);
	qb_arg(qb_arg(qb_arg(qb_arg_name(qb_register("pair_dedup", pair_dedup, NULL), "mode"), 0), 1), 2);
	qb_bench *b = QB_ARG_NAMES(qb_register("queue_hdr", run_pc, (void *)&k_queue_hdr), "PC", "groups");
	QB_ARGS(b, 1, 1);
	QB_ARGS(b, 2, 1);
	qb_unit(qb_manual_time(b), QB_MS);
	b = QB_ARG_NAMES(qb_register("fifo", run_pc, (void *)&k_fifo), "PC", "groups");
	QB_ARGS(b, 1, 1);
	QB_ARGS(b, 1, 100);
	QB_ARGS(b, 1, 10000);
	QB_ARGS(b, 2, 1);
	QB_ARGS(b, 2, 100);
	QB_ARGS(b, 2, 10000);
	qb_unit(qb_manual_time(b), QB_MS);
	qb_unit(qb_manual_time(qb_iterations(qb_register("delayed_1M", delayed_1M, NULL), 1)), QB_MS);
	qb_unit(qb_manual_time(qb_iterations(qb_register("latency", latency, NULL), 1)), QB_MS);
	return qb_main(argc, argv);
}
