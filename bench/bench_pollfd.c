/* SPDX-License-Identifier: MIT */
/*
 * Pollable descriptors (docs/POLLING.md). C bodies, registered through
 * bench/shim/quay_bench.h.
 *
 *   BM_WakeLatency/fd        a consumer blocked in epoll_wait on the
 *                            ring's descriptor; the producer pushes one
 *                            timestamp, waits for the consumer to take it
 *                            and go back to sleep, and so on: the time
 *                            from push to the consumer holding it.
 *   BM_WakeLatency/pop_wait  the peer: the consumer blocked in
 *                            quay_ring_pop_wait (futex).
 *   BM_EmptyPop/ring|pq      a pop on an empty object that has no
 *                            descriptor (the path the fd hook adds its
 *                            load to), single thread.
 *   BM_Transfer/ring|pq|queue  1 producer, 1 consumer (pop/receive, yield
 *                            when empty), no descriptor: the rate a user
 *                            who never polls sees.
 *
 * For the cost to programs that never poll, build this file a second time
 * against the library before the descriptors (docs/POLLING.md says how)
 * with -DQUAY_BENCH_NO_FD, which leaves out the calls it lacks, and run
 * the two binaries in turn. Every benchmark checks that each element
 * arrives once and fails (qb_skip_with_error, exit 1) otherwise.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>

#include "quay_bench.h"

#ifndef QUAY_BENCH_NO_FD
static int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
spin_until(int64_t t)
{
	while (now_ns() < t) {
	}
}

static int
cmp_i64(const void *a, const void *b)
{
	const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* The p-quantile of v[0..n), sorted. */
static double
pct(int64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)n);
	if (i > n - 1)
		i = n - 1;
	return (double)v[i];
}

#define SEQ_SHIFT 48
#define TS_MASK ((UINT64_C(1) << SEQ_SHIFT) - 1)

/* The consumer's side of BM_WakeLatency. acked is its count of elements
 * taken (release, so the producer's acquire load sees lat written); stop
 * is the producer's "no more" (release / acquire). */
struct wake {
	quay_ring *r;
	int mode; /* 0: epoll on quay_ring_fd; 1: quay_ring_pop_wait */
	int ep;
	uint64_t acked;
	bool stop;
	int64_t *lat; /* latencies, ns, in arrival order */
	size_t nlat, cap;
	uint64_t bad; /* the consumer's: read after the join */
};

/* One element taken: checks its sequence number, keeps its latency. */
static void
took(struct wake *w, uint64_t v, uint64_t *expect)
{
	const int64_t t = now_ns();
	const uint64_t seq = v >> SEQ_SHIFT, ts = v & TS_MASK;

	if (seq != ((*expect)++ & 0xffff))
		w->bad++;
	if (w->nlat == w->cap) {
		size_t cap = w->cap * 2;
		int64_t *p = realloc(w->lat, cap * sizeof *p);
		if (p == NULL)
			abort();
		w->lat = p;
		w->cap = cap;
	}
	w->lat[w->nlat++] = t - (int64_t)ts;
	__atomic_fetch_add(&w->acked, 1, __ATOMIC_RELEASE); /* pairs with the acquire load in BM_WakeLatency */
}

static void *
wake_consumer(void *arg)
{
	struct wake *w = arg;
	uint64_t v, expect = 1;

	for (;;) {
		if (w->mode == 0) {
			struct epoll_event ev;
			/* Pairs with the release store in BM_WakeLatency. */
			if (epoll_wait(w->ep, &ev, 1, 1000) == 0 && __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
				return NULL;
			while (quay_ring_pop(w->r, &v) == 0)
				took(w, v, &expect);
		} else {
			const int rc = quay_ring_pop_wait(w->r, &v, 1000 * 1000 * 1000);
			/* Pairs with the release store in BM_WakeLatency. */
			if (rc == -ETIMEDOUT && __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
				return NULL;
			if (rc != 0)
				continue;
			took(w, v, &expect);
		}
	}
}

/* mode 0: epoll on quay_ring_fd; 1: quay_ring_pop_wait. */
static void
BM_WakeLatency(qb_state *st, void *arg)
{
	const int64_t gap_ns = 50 * 1000; /* the consumer goes to sleep meanwhile */
	struct wake w = {.mode = (int)qb_range_of(st, 0), .ep = -1};
	uint64_t sent = 0, bad = 0;
	pthread_t consumer;

	(void)arg;
	if (quay_ring_create(64, 8, QUAY_RING_SP | QUAY_RING_SC, &w.r) != 0) {
		qb_skip_with_error(st, "ring");
		return;
	}
	if (w.mode == 0) {
		struct epoll_event ev;
		const int fd = quay_ring_fd(w.r);
		memset(&ev, 0, sizeof ev);
		ev.events = EPOLLIN;
		w.ep = epoll_create1(EPOLL_CLOEXEC);
		if (fd < 0 || w.ep < 0 || epoll_ctl(w.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			qb_skip_with_error(st, "fd");
			if (w.ep >= 0)
				close(w.ep);
			quay_ring_destroy(w.r);
			return;
		}
	}
	w.cap = (size_t)1 << 20;
	w.lat = malloc(w.cap * sizeof *w.lat);
	if (w.lat == NULL || pthread_create(&consumer, NULL, wake_consumer, &w) != 0)
		abort();
	while (qb_keep_running(st)) {
		sent++;
		uint64_t v = (sent & 0xffff) << SEQ_SHIFT | ((uint64_t)now_ns() & TS_MASK);
		if (quay_ring_push(w.r, &v) != 0) {
			bad++;
			break;
		}
		while (__atomic_load_n(&w.acked, __ATOMIC_ACQUIRE) != sent) { /* pairs with the consumer's release */
		}
		qb_pause_timing(st);
		spin_until(now_ns() + gap_ns);
		qb_resume_timing(st);
	}
	__atomic_store_n(&w.stop, true, __ATOMIC_RELEASE); /* pairs with the consumer's acquire loads */
	pthread_join(consumer, NULL);
	if (bad + w.bad != 0 || w.nlat != sent) {
		qb_skip_with_error(st, "lost, duplicated or reordered element");
	} else {
		qsort(w.lat, w.nlat, sizeof *w.lat, cmp_i64);
		qb_counter(st, "p50_ns", pct(w.lat, w.nlat, 0.50), QB_COUNTER_DEFAULT);
		qb_counter(st, "p99_ns", pct(w.lat, w.nlat, 0.99), QB_COUNTER_DEFAULT);
		qb_counter(st, "min_ns", pct(w.lat, w.nlat, 0.0), QB_COUNTER_DEFAULT);
	}
	free(w.lat);
	if (w.ep >= 0)
		close(w.ep);
	quay_ring_destroy(w.r);
}
#endif

/* 0: ring, 1: pq. */
static void
BM_EmptyPop(qb_state *st, void *arg)
{
	const bool ring = qb_range_of(st, 0) == 0;
	uint64_t v;
	quay_ring *r = NULL;
	quay_pq *pq = NULL;
	struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;

	(void)arg;
	po.levels = 4;
	po.capacity = 64;
	po.elem_size = 8;
	if (quay_ring_create(64, 8, 0, &r) != 0 || quay_pq_create(&po, &pq) != 0) {
		qb_skip_with_error(st, "create");
		goto out;
	}
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			int rc = ring ? quay_ring_pop(r, &v) : quay_pq_pop(pq, &v, NULL);
			qb_do_not_optimize(rc);
			if (rc != -EAGAIN) {
				qb_skip_with_error(st, "not empty");
				goto out;
			}
		}
out:
	if (r != NULL)
		quay_ring_destroy(r);
	if (pq != NULL)
		quay_pq_destroy(pq);
}

/* BM_Transfer's objects: one of each, kind picks the one used. */
struct xfer {
	int kind; /* 0: ring (MPMC), 1: pq, 2: queue */
	uint64_t n;
	quay_ring *r;
	quay_pq *pq;
	quay_queue *q;
	quay_pool *pool;
};

static void *
xfer_producer(void *arg)
{
	const struct xfer *x = arg;

	for (uint64_t i = 0; i < x->n; i++) {
		if (x->kind == 0) {
			while (quay_ring_push(x->r, &i) != 0)
				sched_yield();
		} else if (x->kind == 1) {
			while (quay_pq_push(x->pq, (unsigned)(i & 3), &i) != 0)
				sched_yield();
		} else {
			quay_msg *m;
			while (quay_msg_new(x->pool, &i, sizeof i, &m) != 0)
				sched_yield();
			while (quay_queue_send(x->q, m) != 0)
				sched_yield();
		}
	}
	return NULL;
}

/* One element into *v: 0, or nonzero when there was none. */
static int
xfer_take(const struct xfer *x, uint64_t *v)
{
	if (x->kind == 0)
		return quay_ring_pop(x->r, v);
	if (x->kind == 1)
		return quay_pq_pop(x->pq, v, NULL);

	quay_lease l;
	const int rc = quay_queue_receive(x->q, &l, 0);
	if (rc == 0) {
		memcpy(v, quay_msg_body(l.msg), sizeof *v);
		quay_queue_ack(x->q, &l);
		quay_msg_unref(l.msg);
	}
	return rc;
}

/* 0: ring (MPMC), 1: pq, 2: queue. n elements per iteration. */
static void
BM_Transfer(qb_state *st, void *arg)
{
	struct xfer x = {.kind = (int)qb_range_of(st, 0), .n = 100000};
	struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	uint64_t bad = 0, total = 0;

	(void)arg;
	po.levels = 4;
	po.capacity = 256;
	po.elem_size = 8;
	qo.capacity = 1024;
	if (quay_ring_create(256, 8, 0, &x.r) != 0 || quay_pq_create(&po, &x.pq) != 0 ||
	    quay_queue_create(&qo, &x.q) != 0 || quay_pool_create((size_t)16 << 20, NULL, &x.pool) != 0) {
		qb_skip_with_error(st, "create");
		goto out;
	}
	while (qb_keep_running(st)) {
		pthread_t prod;
		uint64_t got = 0, sum = 0, v;

		if (pthread_create(&prod, NULL, xfer_producer, &x) != 0)
			abort();
		while (got < x.n) {
			if (xfer_take(&x, &v) == 0) {
				got++;
				sum += v;
			} else {
				sched_yield();
			}
		}
		pthread_join(prod, NULL);
		if (sum != x.n * (x.n - 1) / 2)
			bad++;
		total += x.n;
	}
	if (bad)
		qb_skip_with_error(st, "lost or duplicated element");
	qb_set_items_processed(st, (int64_t)total);
out:
	if (x.r != NULL)
		quay_ring_destroy(x.r);
	if (x.pq != NULL)
		quay_pq_destroy(x.pq);
	if (x.q != NULL)
		quay_queue_destroy(x.q);
	if (x.pool != NULL)
		quay_pool_destroy(x.pool);
}

int
main(int argc, char **argv)
{
#ifndef QUAY_BENCH_NO_FD
	qb_bench *b = qb_register("BM_WakeLatency", BM_WakeLatency, NULL);
	qb_iterations(qb_real_time(qb_arg_name(qb_arg(qb_arg(b, 0), 1), "fd0_popwait1")), 20000);
#endif
	qb_arg_name(qb_arg(qb_arg(qb_register("BM_EmptyPop", BM_EmptyPop, NULL), 0), 1), "ring0_pq1");
	qb_bench *t = qb_register("BM_Transfer", BM_Transfer, NULL);
	qb_min_time(qb_real_time(qb_arg_name(qb_arg(qb_arg(qb_arg(t, 0), 1), 2), "ring0_pq1_queue2")), 0.5);
	return qb_main(argc, argv);
}
