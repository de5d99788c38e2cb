/* SPDX-License-Identifier: MIT */
/*
 * Stress of FIFO queues (QUAY_QUEUE_FIFO, issue 13) on the real clock.
 *
 * P producers each own G groups and send N messages round-robin over
 * them, each carrying (group, seq in its group). C consumers receive
 * (single or batch) and at random ack (most), nack (retry with backoff),
 * extend then ack, release, or abandon the lease (usually after
 * shortening it to 1 ms, so the expiry comes soon; rarely as it is).
 *
 * Checked by the consumers, per group:
 *   - never two messages of a group in flight together: each group has a
 *     word holding the deadline of the lease its current holder has (a
 *     lower bound after an extend; 0 once the holder let go before its
 *     ack / nack / release); a receive of the group is a violation if the
 *     clock read after it returned is before that deadline (the previous
 *     lease still valid; one that expired while its holder was slow, or
 *     abandoned, is not in flight);
 *   - the order of first successful processing is send order, and every
 *     message is processed exactly once: an ack that returns 0 is done
 *     under the group's test lock and must carry seq == last + 1;
 *   - at the end every group's last seq is its count - 1, the queue is
 *     empty and conserved (sent == acked, nothing dead-lettered).
 *
 * No arguments: the CI-size run (smaller under ThreadSanitizer);
 * QUAY_STRESS_SCALE=N multiplies the messages. One line per
 * configuration; exit 1 on any violation.
 */
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>

#define MS ((int64_t)1000000)
#define VIS (300 * MS)

struct body {
	uint32_t group; /* global group number */
	uint32_t seq;   /* in its group */
	uint64_t check;
};

struct cfg {
	const char *name;
	int producers, consumers;
	uint32_t groups_per_producer;
	uint32_t msgs; /* total, before scaling */
	bool batch;
};

struct gstate {
	int64_t holder_deadline; /* atomic: deadline of the current holder's lease, 0: none */
	uint32_t lock;           /* atomic: the test's ack lock of the group */
	int64_t last;            /* last seq processed (under lock), -1 first */
	uint32_t sent;           /* messages sent to the group (by its one producer) */
} __attribute__((aligned(64)));

struct run {
	const struct cfg *c;
	quay_queue *q;
	quay_pool *pool;
	uint32_t groups, per_producer;
	uint64_t total;
	struct gstate *g;
	uint64_t done;                                              /* atomic: acks that returned 0 */
	uint64_t overlap, order;                                    /* atomic: violations */
	uint64_t nacks, expired_tries, extends, releases, abandons; /* atomic */
	int pid, cid;                                               /* atomic */
};

static void
on_alarm(int sig)
{
	static const char msg[] = "stress-queue-fifo: watchdog: a configuration hung: FAIL\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(1);
}

static int64_t
real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t
check_of(uint32_t g, uint32_t s)
{
	return ((uint64_t)g << 32 | s) * UINT64_C(0x9E3779B97F4A7C15) ^ UINT64_C(0x46494623);
}

static void *
producer(void *arg)
{
	struct run *r = arg;
	int p = __atomic_fetch_add(&r->pid, 1, __ATOMIC_RELAXED);
	uint32_t g0 = (uint32_t)p * r->c->groups_per_producer;
	char gid[32];

	for (uint32_t i = 0; i < r->per_producer; i++) {
		uint32_t g = g0 + i % r->c->groups_per_producer;
		struct gstate *gs = &r->g[g];
		struct body b = { g, gs->sent, check_of(g, gs->sent) };
		quay_msg *m = NULL;
		int n = snprintf(gid, sizeof(gid), "g%u", g);

		gs->sent++; /* this producer's group only */
		while (quay_msg_new(r->pool, &b, sizeof(b), &m) != 0)
			sched_yield();
		if (quay_msg_set_header(m, QUAY_MSG_H_GROUP, gid, (size_t)n) != 0)
			abort();
		while (quay_queue_send(r->q, m) == -EAGAIN)
			sched_yield();
	}
	return NULL;
}

static void
glock(struct gstate *g)
{
	/* Acquire: pairs with the release in gunlock (the test's lock). */
	while (__atomic_exchange_n(&g->lock, 1u, __ATOMIC_ACQUIRE) != 0)
		sched_yield();
}

static void
gunlock(struct gstate *g)
{
	__atomic_store_n(&g->lock, 0u, __ATOMIC_RELEASE);
}

/* A lease of group g starts: no other lease of the group may be live. */
static void
took(struct run *r, const quay_lease *l, struct gstate *g)
{
	/* The clock after the receive returned: at or after the hand-over.
	 * (Not deadline - VIS: a receive may read its clock before another
	 * thread's timer expires the previous lease and hands the message
	 * on; the lease is then issued after the expiry from an older
	 * reading.) */
	int64_t now = real_ns();
	/* acq_rel: pairs with the holders' CAS in let_go and abandon. */
	int64_t prev = __atomic_exchange_n(&g->holder_deadline, l->deadline_ns, __ATOMIC_ACQ_REL);

	/* Two valid leases of the group at the instant now: the previous
	 * holder's (its ack would still succeed) and this one. (This one
	 * may be dead already if this thread was preempted past its
	 * deadline between the receive and here: then it is not in flight.) */
	if (prev != 0 && now < prev && now < l->deadline_ns) {
		fprintf(stderr,
		    "stress-queue-fifo: two in flight: now %lld, previous deadline %lld, "
		    "this deadline %lld\n",
		    (long long)now, (long long)prev, (long long)l->deadline_ns);
		__atomic_fetch_add(&r->overlap, 1, __ATOMIC_RELAXED);
	}
}

/* The holder stops processing (before its ack / nack / release). */
static void
let_go(const quay_lease *l, struct gstate *g)
{
	int64_t mine = l->deadline_ns;

	(void)__atomic_compare_exchange_n(&g->holder_deadline, &mine, 0, false, __ATOMIC_ACQ_REL,
	    __ATOMIC_RELAXED);
}

static void
handle(struct run *r, quay_lease *l, uint64_t *rng)
{
	const struct body *b = quay_msg_body(l->msg);
	struct gstate *g;
	unsigned act = (unsigned)(qt_rand(rng) % 100);
	int rc;

	if (quay_msg_body_len(l->msg) != sizeof(*b) || b->group >= r->groups ||
	    b->check != check_of(b->group, b->seq)) {
		fprintf(stderr, "stress-queue-fifo: corrupt body\n");
		exit(1);
	}
	g = &r->g[b->group];
	took(r, l, g);
	if (act < 10) { /* nack: retry after backoff */
		let_go(l, g);
		if (quay_queue_nack(r->q, l, "stress") == 0)
			__atomic_fetch_add(&r->nacks, 1, __ATOMIC_RELAXED);
		quay_msg_unref(l->msg);
		return;
	}
	if (act < 14) { /* release */
		let_go(l, g);
		if (quay_queue_release(r->q, l) == 0)
			__atomic_fetch_add(&r->releases, 1, __ATOMIC_RELAXED);
		quay_msg_unref(l->msg);
		return;
	}
	if (act < 18) { /* abandon */
		__atomic_fetch_add(&r->abandons, 1, __ATOMIC_RELAXED);
		if (qt_rand(rng) % 1000 != 0) {
			int64_t now0 = real_ns(), mine = l->deadline_ns;

			/* Shorter: the word goes down first (a lower bound of
			 * the deadline at every instant; after the extend the
			 * lease may expire and move on before this thread runs
			 * again). */
			(void)__atomic_compare_exchange_n(&g->holder_deadline, &mine, now0 + 1 * MS, false,
			    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
			(void)quay_queue_extend(r->q, l, 1 * MS);
		}
		quay_msg_unref(l->msg);
		return;
	}
	if (act < 26) { /* extend, then ack */
		int64_t now0 = real_ns();

		if (quay_queue_extend(r->q, l, VIS) == 0) {
			int64_t mine = l->deadline_ns;

			__atomic_fetch_add(&r->extends, 1, __ATOMIC_RELAXED);
			if (__atomic_compare_exchange_n(&g->holder_deadline, &mine, now0 + VIS, false,
			        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
				l->deadline_ns = now0 + VIS;
		}
	}
	glock(g);
	let_go(l, g);
	rc = quay_queue_ack(r->q, l);
	if (rc == 0) {
		if ((int64_t)b->seq != g->last + 1) {
			fprintf(stderr, "stress-queue-fifo: group %u: processed seq %u after %lld\n",
			    b->group, b->seq, (long long)g->last);
			__atomic_fetch_add(&r->order, 1, __ATOMIC_RELAXED);
		}
		if ((int64_t)b->seq > g->last)
			g->last = b->seq;
		__atomic_fetch_add(&r->done, 1, __ATOMIC_RELEASE);
	} else {
		__atomic_fetch_add(&r->expired_tries, 1, __ATOMIC_RELAXED);
	}
	gunlock(g);
	quay_msg_unref(l->msg);
}

static void *
consumer(void *arg)
{
	struct run *r = arg;
	uint64_t rng = 0x9E3779B97F4A7C15u ^ (uint64_t)(__atomic_fetch_add(&r->cid, 1, __ATOMIC_RELAXED) + 1);
	quay_lease ls[8];

	/* Acquire: pairs with the release increments of done. */
	while (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) < r->total) {
		if (r->c->batch) {
			size_t n = quay_queue_receive_batch(r->q, ls, 8, 2 * MS);

			for (size_t i = 0; i < n; i++)
				handle(r, &ls[i], &rng);
		} else if (quay_queue_receive(r->q, &ls[0], 2 * MS) == 0) {
			handle(r, &ls[0], &rng);
		}
	}
	return NULL;
}

static int
run_cfg(const struct cfg *c, unsigned scale)
{
	struct run r;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct quay_queue_stats s;
	pthread_t th[32];
	int nth = 0, fail = 0;
	double t0 = qt_now_s();
	uint64_t msgs = (uint64_t)c->msgs * scale / (QT_TSAN ? 8 : 1);

	memset(&r, 0, sizeof(r));
	r.c = c;
	r.groups = (uint32_t)c->producers * c->groups_per_producer;
	r.per_producer = (uint32_t)(msgs / (uint64_t)c->producers);
	r.total = (uint64_t)r.per_producer * (uint64_t)c->producers;
	r.g = aligned_alloc(64, r.groups * sizeof(*r.g));
	if (r.g == NULL)
		return 1;
	memset(r.g, 0, r.groups * sizeof(*r.g));
	for (uint32_t i = 0; i < r.groups; i++)
		r.g[i].last = -1;
	if (quay_pool_create((size_t)64 << 20, NULL, &r.pool) != 0)
		return 1;
	o.name = "fifo";
	o.flags = QUAY_QUEUE_FIFO;
	o.capacity = 4096;
	o.max_in_flight = 256;
	o.visibility_ns = VIS;
	o.max_attempts = QUAY_QUEUE_ATTEMPTS_MAX;
	o.backoff_base_ns = 1 * MS;
	o.backoff_max_ns = 4 * MS;
	if (quay_queue_create(&o, &r.q) != 0)
		return 1;
	alarm(QT_TSAN ? 600 : 180);
	for (int i = 0; i < c->producers; i++)
		pthread_create(&th[nth++], NULL, producer, &r);
	for (int i = 0; i < c->consumers; i++)
		pthread_create(&th[nth++], NULL, consumer, &r);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	alarm(0);
	for (uint32_t i = 0; i < r.groups; i++)
		if (r.g[i].last != (int64_t)r.g[i].sent - 1) {
			if (fail++ < 5)
				fprintf(stderr, "stress-queue-fifo: group %u: last %lld of %u sent\n", i,
				    (long long)r.g[i].last, r.g[i].sent);
		}
	quay_queue_stats(r.q, &s);
	if (s.sent != r.total || s.acked != r.total || s.ready + s.delayed + s.in_flight != 0 ||
	    s.dead_lettered != 0)
		fail++;
	if (r.overlap != 0 || r.order != 0)
		fail++;
	printf("%-10s P%d C%d groups %-6u msgs %-7llu %s overlap %llu order %llu | nack %llu release %llu "
	       "abandon %llu extend %llu stale-ack %llu expired %llu | %.2f s\n",
	    c->name, c->producers, c->consumers, r.groups, (unsigned long long)r.total, fail ? "FAIL" : "ok",
	    (unsigned long long)r.overlap, (unsigned long long)r.order, (unsigned long long)r.nacks,
	    (unsigned long long)r.releases, (unsigned long long)r.abandons, (unsigned long long)r.extends,
	    (unsigned long long)r.expired_tries, (unsigned long long)s.lease_expired, qt_now_s() - t0);
	quay_queue_destroy(r.q);
	if (quay_pool_destroy(r.pool) != 0) {
		fprintf(stderr, "stress-queue-fifo: pool not empty (a leak)\n");
		fail++;
	}
	free(r.g);
	return fail != 0;
}

int
main(void)
{
	static const struct cfg cfgs[] = {
		{ "1group", 2, 3, 1, 20000, false },
		{ "few", 4, 4, 4, 100000, false },
		{ "many", 4, 4, 250, 200000, false },
		{ "batch", 2, 4, 100, 200000, true },
		{ "groups10k", 4, 2, 2500, 200000, false },
	};
	const char *env = getenv("QUAY_STRESS_SCALE");
	unsigned scale = env != NULL && atoi(env) > 0 ? (unsigned)atoi(env) : 1;
	int fail = 0;

	signal(SIGALRM, on_alarm);
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		fail |= run_cfg(&cfgs[i], scale);
	return fail;
}
