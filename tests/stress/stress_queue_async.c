/* SPDX-License-Identifier: MIT */
/*
 * Stress of pipelined durable sends (quay_queue_send_async): P producer
 * threads each keep up to D sends in flight on one durable queue (SYNC
 * and NONE modes) while C consumer threads receive and ack. Checked:
 *   - every send completes exactly once, with 0;
 *   - completions of one producer come in its send order;
 *   - no message is received before its completion (the callback marks
 *     it, with release; the consumer checks the mark, with acquire);
 *   - every message is received exactly once, and each consumer sees the
 *     messages of one producer in send order (nothing is retried);
 *   - after a reopen the queue is empty (every ack logged).
 * Prints one line per configuration; exits 1 on any violation.
 * QUAY_STRESS_SCALE=N multiplies the messages.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../test_util.h"

#define PMAX 8
#define CMAX 4

struct cfg {
	unsigned mode;
	unsigned producers, consumers, depth;
	uint32_t per; /* messages per producer */
};

static quay_queue *q;
static quay_pool *pool;
static struct cfg cur;
static uint8_t *done;            /* [p * per + seq]: completions seen (atomic) */
static uint8_t *got;             /* [p * per + seq]: receives seen (atomic) */
static uint32_t last_done[PMAX]; /* completion thread only: next seq expected */
static uint64_t received;        /* atomic */
static uint64_t viol_dup_done, viol_rc, viol_order_done, viol_early, viol_dup_got,
    viol_order_got; /* atomic */

static void
nap(void)
{
	struct timespec ts = { 0, 100000 };

	nanosleep(&ts, NULL);
}

static void
bump(uint64_t *v)
{
	/* Relaxed: a violation counter, read after join. */
	__atomic_fetch_add(v, 1, __ATOMIC_RELAXED);
}

static void
body_of(const quay_msg *m, uint32_t *p, uint32_t *seq)
{
	uint32_t b[2];

	memcpy(b, quay_msg_body(m), sizeof(b));
	*p = b[0];
	*seq = b[1];
}

static void
on_sent(void *arg, quay_msg *msg, int rc)
{
	uint32_t p, seq;

	(void)arg;
	body_of(msg, &p, &seq);
	if (rc != 0) {
		bump(&viol_rc);
		quay_msg_unref(msg);
		return;
	}
	if (seq != last_done[p])
		bump(&viol_order_done);
	/* Widen the window a wrong order (placed before its callback) would
	 * open: a consumer would take the message before the mark below. */
	if (seq % 4 == 0)
		sched_yield();
	last_done[p] = seq + 1;
	/* Release: pairs with the consumer's acquire load (the mark is set
	 * before the message is placed, i.e. before it can be received). */
	if (__atomic_fetch_add(&done[(size_t)p * cur.per + seq], 1, __ATOMIC_RELEASE) != 0)
		bump(&viol_dup_done);
}

static void *
producer(void *arg)
{
	uint32_t p = (uint32_t)(uintptr_t)arg;
	uint64_t t = 0;

	for (uint32_t seq = 0; seq < cur.per; seq++) {
		uint32_t b[2] = { p, seq };
		quay_msg *m = NULL;
		int rc;

		if (t >= cur.depth && !quay_queue_send_done(q, t - cur.depth + 1))
			(void)quay_queue_send_wait(q, t - cur.depth + 1);
		while (quay_msg_new(pool, b, sizeof(b), &m) != 0)
			nap();
		while ((rc = quay_queue_send_async(q, m, on_sent, NULL, &t)) == -EBUSY || rc == -EAGAIN)
			nap(); /* in flight (all producers) or queue full: let it drain */
		if (rc != 0) {
			bump(&viol_rc);
			quay_msg_unref(m);
		}
	}
	return NULL;
}

static void *
consumer(void *arg)
{
	uint32_t next[PMAX] = { 0 };
	uint64_t total = (uint64_t)cur.producers * cur.per;

	(void)arg;
	/* Relaxed: a progress count; the exit test. */
	while (__atomic_load_n(&received, __ATOMIC_RELAXED) < total) {
		quay_lease l;
		uint32_t p, seq;

		if (quay_queue_receive(q, &l, 20 * 1000000) != 0)
			continue;
		body_of(l.msg, &p, &seq);
		/* Acquire: pairs with on_sent's release. */
		if (__atomic_load_n(&done[(size_t)p * cur.per + seq], __ATOMIC_ACQUIRE) == 0)
			bump(&viol_early);
		/* Relaxed: the count of receives of one message (exactly once). */
		if (__atomic_fetch_add(&got[(size_t)p * cur.per + seq], 1, __ATOMIC_RELAXED) != 0)
			bump(&viol_dup_got);
		if (seq < next[p])
			bump(&viol_order_got);
		next[p] = seq + 1;
		if (quay_queue_ack(q, &l) != 0)
			bump(&viol_rc);
		quay_msg_unref(l.msg);
		/* Relaxed: as above. */
		__atomic_fetch_add(&received, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static int
run(const struct cfg *c)
{
	char dir[] = "/tmp/quay-stress-async-XXXXXX";
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	pthread_t pt[PMAX], ct[CMAX];
	quay_wal *wal;
	size_t n = (size_t)c->producers * c->per;
	struct quay_queue_stats st;
	uint64_t missing = 0;
	int bad;

	cur = *c;
	memset(last_done, 0, sizeof(last_done));
	received = viol_dup_done = viol_rc = viol_order_done = viol_early = viol_dup_got = viol_order_got = 0;
	done = calloc(n, 1);
	got = calloc(n, 1);
	if (done == NULL || got == NULL || mkdtemp(dir) == NULL ||
	    quay_pool_create((size_t)64 << 20, NULL, &pool) != 0)
		return 1;
	wo.sync_mode = c->mode;
	if (quay_wal_open(dir, &wo, &wal) != 0)
		return 1;
	o.name = "s";
	o.capacity = 8192;
	o.max_in_flight = 1024;
	o.wal = wal;
	o.pool = pool;
	if (quay_queue_create(&o, &q) != 0)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned i = 0; i < c->consumers; i++)
		pthread_create(&ct[i], NULL, consumer, NULL);
	for (unsigned i = 0; i < c->producers; i++)
		pthread_create(&pt[i], NULL, producer, (void *)(uintptr_t)i);
	for (unsigned i = 0; i < c->producers; i++)
		pthread_join(pt[i], NULL);
	for (unsigned i = 0; i < c->consumers; i++)
		pthread_join(ct[i], NULL);
	for (size_t i = 0; i < n; i++)
		missing += done[i] != 1 || got[i] != 1;
	quay_queue_destroy(q);
	if (quay_wal_close(wal) != 0 || quay_wal_open(dir, &wo, &wal) != 0)
		return 1;
	o.wal = wal;
	if (quay_queue_create(&o, &q) != 0 || quay_queue_stats(q, &st) != 0)
		return 1;
	bad = missing != 0 || viol_dup_done || viol_rc || viol_order_done || viol_early || viol_dup_got ||
	    viol_order_got || st.restored != 0;
	printf("async mode=%u p=%u c=%u depth=%u msgs=%zu: missing=%llu dup_done=%llu rc=%llu "
	       "order_done=%llu early=%llu dup_got=%llu order_got=%llu restored=%llu %s\n",
	    c->mode, c->producers, c->consumers, c->depth, n, (unsigned long long)missing,
	    (unsigned long long)viol_dup_done, (unsigned long long)viol_rc,
	    (unsigned long long)viol_order_done, (unsigned long long)viol_early,
	    (unsigned long long)viol_dup_got, (unsigned long long)viol_order_got,
	    (unsigned long long)st.restored, bad ? "FAIL" : "ok");
	quay_queue_destroy(q);
	(void)quay_wal_close(wal);
	quay_pool_destroy(pool);
	qt_rm_dir(dir);
	free(done);
	free(got);
	return bad;
}

int
main(void)
{
	const char *env = getenv("QUAY_STRESS_SCALE");
	uint32_t scale = env != NULL && atoi(env) > 0 ? (uint32_t)atoi(env) : 1;
	const struct cfg cfgs[] = {
		{ QUAY_WAL_SYNC, 4, 2, 256, 1000 },
		{ QUAY_WAL_SYNC, 8, 1, 16, 250 },
		{ QUAY_WAL_NONE, 4, 2, 1024, 3000 },
	};
	int bad = 0;

	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
		struct cfg c = cfgs[i];

		c.per *= scale;
		bad |= run(&c);
	}
	return bad;
}
