/* SPDX-License-Identifier: MIT */
/*
 * stress_pollfd: one epoll loop serving rings, priority queues, bus
 * subscriptions and queues through their pollable descriptors
 * (docs/POLLING.md), fed by many producer threads.
 *
 *   stress_pollfd [-p producers] [-n msgs/producer] [-r rings] [-P pqs]
 *                 [-s subs] [-q queues] [-b bound_ms] [-d seconds]
 *                 [-S seed] [-v]
 *
 * Producers send (producer, seq) items to objects picked at random, in
 * bursts with random pauses so that the objects keep going empty and
 * non-empty (the transitions the descriptors signal); some queue sends
 * are delayed 1..3 ms (the queue's timer must make its descriptor
 * readable). Half the descriptors are registered edge-triggered
 * (EPOLLET), half level-triggered. The loop (the main thread) waits in
 * epoll_wait with a timeout of bound_ms, and after each wake drains the
 * woken object until its take says there is nothing (-EAGAIN).
 *
 * Checked (exit status 1 on any violation):
 *   lost     an item sent (the send returned 0) and never taken
 *   dup      an item taken twice
 *   corrupt  an item no producer sent
 *   sleep    a lost wake-up: epoll_wait timed out (the loop slept
 *            bound_ms) and a take on some object then returned an item
 *            that was ready before the wait began (its send had returned,
 *            and its delay had passed): its descriptor did not report it.
 *            An item that became ready during the wait is not counted
 *            (its signal may have landed just after the timeout).
 *   hang     the loop saw nothing for 30 bound periods while items were
 *            outstanding (exit 3)
 * Runs until every producer is done and everything is taken; -d bounds
 * the producers' time (they stop early), so the run length is bounded.
 */
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <quay/quay.h>

enum kind { K_RING, K_PQ, K_SUB, K_QUEUE };

struct obj {
	enum kind kind;
	int fd;
	quay_ring *ring;
	quay_pq *pq;
	quay_sub *sub;
	quay_queue *queue;
	char subject[32];
};

static struct {
	int producers;
	uint64_t per_producer;
	int rings, pqs, subs, queues;
	int bound_ms;
	double secs;
	uint64_t seed;
	bool verbose;
} opt = { 8, 20000, 4, 2, 100, 3, 2000, 2.0, 1, false };

static struct obj *objs;
static int nobjs;
static quay_bus *bus;
static quay_pool *pool;
static uint64_t *sent;     /* per producer: items sent (seq 0..sent-1) */
static uint8_t **seen;     /* per producer: times each seq was taken */
static int64_t **ready_at; /* per producer: when each seq was ready (after its send) */
static int finished;       /* producers done */
static int64_t wait_start; /* when the loop's current epoll_wait began */
static bool after_timeout; /* takes now follow a wait that timed out */
static uint64_t taken;     /* loop thread only */
static uint64_t stop_at;   /* CLOCK_MONOTONIC ns at which producers stop */
static uint64_t bad_lost, bad_dup, bad_corrupt, bad_sleep;

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static quay_msg *
new_msg(uint64_t item)
{
	quay_msg *m;

	while (quay_msg_new(pool, &item, sizeof item, &m) != 0)
		sched_yield(); /* pool full: the loop frees as it takes */
	return m;
}

/* One send; 0, or -EAGAIN (full: the caller retries). *delay: the
 * delay given to a queue message. */
static int
send_one(struct obj *o, uint64_t item, uint64_t *rs, int64_t *delay)
{
	quay_msg *m;
	int rc;

	switch (o->kind) {
	case K_RING: return quay_ring_push(o->ring, &item);
	case K_PQ: return quay_pq_push(o->pq, (unsigned)(rnd(rs) % 4), &item);
	case K_SUB:
		m = new_msg(item);
		rc = quay_bus_publish(bus, o->subject, m);
		if (rc < 0) {
			quay_msg_unref(m);
			return rc;
		}
		return rc == 1 ? 0 : -EIO;
	case K_QUEUE:
		m = new_msg(item);
		*delay = rnd(rs) % 16 == 0 ? (int64_t)(1 + rnd(rs) % 3) * 1000000 : 0;
		if (*delay)
			quay_msg_set_delay_ns(m, *delay);
		rc = quay_queue_send(o->queue, m);
		if (rc != 0)
			quay_msg_unref(m);
		return rc;
	}
	return -EINVAL;
}

static void *
producer(void *arg)
{
	uint64_t p = (uint64_t)(uintptr_t)arg, rs = opt.seed * 7919 + p * 104729 + 1, seq;

	for (seq = 0; seq < opt.per_producer; seq++) {
		struct obj *o = &objs[rnd(&rs) % (uint64_t)nobjs];
		uint64_t item = p << 40 | seq;
		int64_t delay = 0;
		int rc;

		if ((seq & 255) == 0 && qt_now_ns() > (int64_t)stop_at)
			break;
		while ((rc = send_one(o, item, &rs, &delay)) == -EAGAIN)
			sched_yield();
		/* Relaxed: the loop reads it after taking the item, a hint for
		 * the sleep check (0, not yet written, counts as "just now"). */
		__atomic_store_n(&ready_at[p][seq], qt_now_ns() + delay, __ATOMIC_RELAXED);
		if (rc != 0) {
			fprintf(stderr, "producer %llu: send failed: %d\n", (unsigned long long)p, rc);
			exit(2);
		}
		/* Let the objects run empty now and then. */
		if (rnd(&rs) % 64 == 0)
			usleep((useconds_t)(rnd(&rs) % 200));
	}
	__atomic_store_n(&sent[p], seq, __ATOMIC_RELEASE);
	__atomic_fetch_add(&finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void
account(uint64_t item)
{
	uint64_t p = item >> 40, seq = item & ((UINT64_C(1) << 40) - 1);

	if (p >= (uint64_t)opt.producers || seq >= opt.per_producer) {
		bad_corrupt++;
		return;
	}
	if (seen[p][seq]++ != 0)
		bad_dup++;
	taken++;
	if (after_timeout) {
		int64_t t = __atomic_load_n(&ready_at[p][seq], __ATOMIC_RELAXED);

		if (t != 0 && t < wait_start) {
			bad_sleep++;
			fprintf(stderr,
			    "sleep: item %llu:%llu was ready %.3f ms before a %d ms wait that timed out\n",
			    (unsigned long long)p, (unsigned long long)seq, (double)(wait_start - t) / 1e6,
			    opt.bound_ms);
		}
	}
}

/* Take one item; 0, or nonzero when there was nothing (-EAGAIN and the
 * like: the descriptor is re-armed). */
static int
take_one(struct obj *o)
{
	uint64_t v;
	quay_msg *m;
	quay_lease l;
	int rc;

	switch (o->kind) {
	case K_RING:
		if ((rc = quay_ring_pop(o->ring, &v)) == 0)
			account(v);
		return rc;
	case K_PQ:
		if ((rc = quay_pq_pop(o->pq, &v, NULL)) == 0)
			account(v);
		return rc;
	case K_SUB:
		if ((rc = quay_sub_receive(o->sub, &m, 0)) == 0) {
			memcpy(&v, quay_msg_body(m), sizeof v);
			account(v);
			quay_msg_unref(m);
		}
		return rc;
	case K_QUEUE:
		if ((rc = quay_queue_receive(o->queue, &l, 0)) == 0) {
			memcpy(&v, quay_msg_body(l.msg), sizeof v);
			account(v);
			if (quay_queue_ack(o->queue, &l) != 0)
				bad_corrupt++;
			quay_msg_unref(l.msg);
		}
		return rc;
	}
	return -EINVAL;
}

static uint64_t
total_sent(void)
{
	uint64_t t = 0;

	for (int p = 0; p < opt.producers; p++)
		t += __atomic_load_n(&sent[p], __ATOMIC_ACQUIRE);
	return t;
}

static void
make_objects(void)
{
	struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	int i = 0;

	nobjs = opt.rings + opt.pqs + opt.subs + opt.queues;
	objs = calloc((size_t)nobjs, sizeof *objs);
	po.levels = 4;
	po.capacity = 64;
	po.elem_size = 8;
	qo.capacity = 256;
	qo.max_in_flight = 4;
	so.capacity = 64;
	if (quay_bus_create(NULL, &bus) != 0 || quay_pool_create((size_t)32 << 20, NULL, &pool) != 0)
		exit(2);
	for (int k = 0; k < opt.rings; k++, i++) {
		objs[i].kind = K_RING;
		if (quay_ring_create(64, 8, QUAY_RING_SC, &objs[i].ring) != 0)
			exit(2);
		objs[i].fd = quay_ring_fd(objs[i].ring);
	}
	for (int k = 0; k < opt.pqs; k++, i++) {
		objs[i].kind = K_PQ;
		if (quay_pq_create(&po, &objs[i].pq) != 0)
			exit(2);
		objs[i].fd = quay_pq_fd(objs[i].pq);
	}
	for (int k = 0; k < opt.subs; k++, i++) {
		objs[i].kind = K_SUB;
		snprintf(objs[i].subject, sizeof objs[i].subject, "s.%d", k);
		so.priorities = k % 5 == 0 ? 3 : 0;
		if (quay_bus_subscribe(bus, objs[i].subject, &so, &objs[i].sub) != 0)
			exit(2);
		objs[i].fd = quay_sub_fd(objs[i].sub);
	}
	for (int k = 0; k < opt.queues; k++, i++) {
		objs[i].kind = K_QUEUE;
		if (quay_queue_create(&qo, &objs[i].queue) != 0)
			exit(2);
		objs[i].fd = quay_queue_fd(objs[i].queue);
	}
	for (i = 0; i < nobjs; i++)
		if (objs[i].fd < 0) {
			fprintf(stderr, "fd: %d\n", objs[i].fd);
			exit(2);
		}
}

int
main(int argc, char **argv)
{
	struct epoll_event evs[64];
	pthread_t *th;
	int c, ep, idle = 0;
	uint64_t wakes = 0, timeouts = 0, expected;
	bool producers_done = false;

	while ((c = getopt(argc, argv, "p:n:r:P:s:q:b:d:S:v")) != -1) {
		switch (c) {
		case 'p': opt.producers = atoi(optarg); break;
		case 'n': opt.per_producer = strtoull(optarg, NULL, 10); break;
		case 'r': opt.rings = atoi(optarg); break;
		case 'P': opt.pqs = atoi(optarg); break;
		case 's': opt.subs = atoi(optarg); break;
		case 'q': opt.queues = atoi(optarg); break;
		case 'b': opt.bound_ms = atoi(optarg); break;
		case 'd': opt.secs = atof(optarg); break;
		case 'S': opt.seed = strtoull(optarg, NULL, 10); break;
		case 'v': opt.verbose = true; break;
		default: fprintf(stderr, "usage: see the top of stress_pollfd.c\n"); return 2;
		}
	}
	if (opt.producers < 1 || opt.producers > 1000 || opt.per_producer == 0 ||
	    opt.per_producer >= (UINT64_C(1) << 40) || opt.bound_ms < 1)
		return 2;
	make_objects();
	sent = calloc((size_t)opt.producers, sizeof *sent);
	seen = calloc((size_t)opt.producers, sizeof *seen);
	ready_at = calloc((size_t)opt.producers, sizeof *ready_at);
	for (int p = 0; p < opt.producers; p++) {
		seen[p] = calloc(opt.per_producer, 1);
		ready_at[p] = calloc(opt.per_producer, sizeof **ready_at);
	}
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return 2;
	for (int i = 0; i < nobjs; i++) {
		struct epoll_event ev;

		memset(&ev, 0, sizeof ev);
		ev.events = EPOLLIN | (i % 2 ? EPOLLET : 0);
		ev.data.u32 = (uint32_t)i;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, objs[i].fd, &ev) != 0)
			return 2;
	}

	stop_at = (uint64_t)qt_now_ns() + (uint64_t)(opt.secs * 1e9);
	th = calloc((size_t)opt.producers, sizeof *th);
	for (int p = 0; p < opt.producers; p++)
		pthread_create(&th[p], NULL, producer, (void *)(uintptr_t)p);

	for (;;) {
		int n;

		wait_start = qt_now_ns();
		n = epoll_wait(ep, evs, 64, opt.bound_ms);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return 2;
		if (n == 0) {
			/* Slept the whole bound: nothing may have been ready. */
			timeouts++;
			after_timeout = true;
			for (int i = 0; i < nobjs; i++)
				while (take_one(&objs[i]) == 0)
					;
			after_timeout = false;
			if (producers_done && taken >= expected)
				break;
			if (++idle > 30 && !producers_done) {
				fprintf(stderr, "hang: nothing for %d ms\n", 30 * opt.bound_ms);
				return 3;
			}
		} else {
			idle = 0;
		}
		for (int k = 0; k < n; k++) {
			struct obj *o = &objs[evs[k].data.u32];

			wakes++;
			while (take_one(o) == 0)
				;
		}
		if (!producers_done) {
			if (__atomic_load_n(&finished, __ATOMIC_ACQUIRE) == opt.producers) {
				for (int p = 0; p < opt.producers; p++)
					pthread_join(th[p], NULL);
				producers_done = true;
				expected = total_sent();
			}
		}
		if (producers_done && taken >= expected)
			break;
		if (producers_done && idle > 30) {
			fprintf(stderr, "hang: %llu of %llu taken\n", (unsigned long long)taken,
			    (unsigned long long)expected);
			return 3;
		}
	}

	for (int p = 0; p < opt.producers; p++)
		for (uint64_t s = 0; s < sent[p]; s++)
			if (seen[p][s] == 0)
				bad_lost++;
	printf(
	    "stress_pollfd: producers %d objects %d (rings %d pqs %d subs %d queues %d) taken %llu of %llu, "
	    "wakes %llu, timeouts %llu: lost %llu dup %llu corrupt %llu sleep %llu\n",
	    opt.producers, nobjs, opt.rings, opt.pqs, opt.subs, opt.queues, (unsigned long long)taken,
	    (unsigned long long)expected, (unsigned long long)wakes, (unsigned long long)timeouts,
	    (unsigned long long)bad_lost, (unsigned long long)bad_dup, (unsigned long long)bad_corrupt,
	    (unsigned long long)bad_sleep);
	for (int i = 0; i < nobjs; i++) {
		epoll_ctl(ep, EPOLL_CTL_DEL, objs[i].fd, NULL);
		quay_ring_destroy(objs[i].ring);
		quay_pq_destroy(objs[i].pq);
		quay_queue_destroy(objs[i].queue);
	}
	quay_bus_destroy(bus);
	quay_pool_destroy(pool);
	close(ep);
	for (int p = 0; p < opt.producers; p++) {
		free(seen[p]);
		free(ready_at[p]);
	}
	free(seen);
	free(ready_at);
	free(sent);
	free(th);
	free(objs);
	return bad_lost || bad_dup || bad_corrupt || bad_sleep ? 1 : 0;
}
