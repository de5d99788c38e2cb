/* SPDX-License-Identifier: MIT */
/*
 * Crash trials of a durable FIFO queue (issue 13): kill -9 with
 * consumers mid-flight, then per-group order and exactly-once after the
 * restart.
 *
 * Each trial: a child opens a WAL (SYNC: a send or ack that returned 0
 * is in the file) and a FIFO queue on it (short leases, small backoff,
 * compaction every 96 KiB), and runs two producers, each owning 8 groups
 * (round robin), and two consumers that ack (75 %), nack (15 %) or walk
 * away from the lease (10 %). It reports through shared memory, per
 * group: the seq of a send in progress and the count of sends that
 * returned 0; per group and consumer, the seq of an ack in progress and
 * 1 + the highest seq acked (a lease that expired lets two consumers
 * hold one group's messages, so each records its own; the child checks
 * that no ack returns 0 for a seq older than one already acked, so first
 * successful processing follows send order before the crash too). The
 * parent kills
 * it with SIGKILL at a random moment, reopens the WAL and the queue, and
 * drains it with one consumer, checking per group:
 *   - the first message is the next unacked one (or, if an ack was in
 *     progress at the kill, the one after it: that ack may have reached
 *     the log), and each next one follows in send order: nothing lost,
 *     nothing acked comes back, nothing twice, no reordering;
 *   - the last is the last sent (or the one whose send was in progress);
 *   - bodies are exact.
 * QUAY_CRASH_TRIALS=N sets the trials (default 300). Exit 1 on any
 * violation.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#define MS ((int64_t)1000000)
#define GROUPS 16u
#define PER_GROUP 100000u

/* Shared with the child (MAP_SHARED): written by it, read by the parent
 * after its death. Relaxed atomics: the kill orders nothing; each field
 * is a single word written by one thread at a time (a group's producer;
 * a group's one in-flight holder). */
struct report {
	uint32_t sending[GROUPS]; /* seq of the send in progress (== sent when idle) */
	uint32_t sent[GROUPS];    /* sends that returned 0 */
	/* Per consumer (two): a group's messages pass between consumers when
	 * a lease expires, so a consumer with a stale lease may be acking
	 * while another's ack of the same seq (or the next) is in progress;
	 * one word per group and consumer keeps each a single writer. */
	uint32_t acking[2][GROUPS]; /* seq of this consumer's ack in progress, UINT32_MAX: none */
	uint32_t acked[2][GROUPS];  /* 1 + the highest seq this consumer's ack returned 0 for */
	uint32_t order_bad;         /* child-side violations */
};

struct body {
	uint32_t group, seq;
	uint64_t check;
};

static uint64_t
check_of(uint32_t g, uint32_t s)
{
	return ((uint64_t)g << 32 | s) * UINT64_C(0x9E3779B97F4A7C15) ^ UINT64_C(0x43524153);
}

static int
open_q(const char *dir, quay_pool *pool, quay_wal **w, quay_queue **q)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	int rc;

	wo.sync_mode = QUAY_WAL_SYNC;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	if ((rc = quay_wal_open(dir, &wo, w)) != 0)
		return rc;
	o.name = "fifo";
	o.flags = QUAY_QUEUE_FIFO;
	o.capacity = 4096;
	o.wal = *w;
	o.pool = pool;
	o.compact_bytes = 96 << 10;
	o.max_attempts = QUAY_QUEUE_ATTEMPTS_MAX;
	o.visibility_ns = 10 * MS;
	o.backoff_base_ns = 1 * MS;
	o.backoff_max_ns = 4 * MS;
	return quay_queue_create(&o, q);
}

/* ---- the child ---------------------------------------------------------- */

struct child {
	quay_queue *q;
	quay_pool *pool;
	struct report *r;
	int id;
	unsigned seed;
};

static void *
producer(void *arg)
{
	struct child *c = arg;
	char gid[8];

	for (uint32_t i = 0;; i++) {
		uint32_t g = (uint32_t)c->id * (GROUPS / 2) + i % (GROUPS / 2);
		uint32_t s = __atomic_load_n(&c->r->sent[g], __ATOMIC_RELAXED);
		struct body b = { g, s, check_of(g, s) };
		quay_msg *m = NULL;
		int n = snprintf(gid, sizeof(gid), "g%u", g), rc;

		if (s >= PER_GROUP)
			return NULL;
		if (quay_msg_new(c->pool, &b, sizeof(b), &m) != 0 ||
		    quay_msg_set_header(m, QUAY_MSG_H_GROUP, gid, (size_t)n) != 0)
			_exit(3);
		__atomic_store_n(&c->r->sending[g], s, __ATOMIC_RELAXED);
		while ((rc = quay_queue_send(c->q, m)) == -EAGAIN)
			usleep(100);
		if (rc != 0)
			_exit(4);
		__atomic_store_n(&c->r->sent[g], s + 1, __ATOMIC_RELAXED);
	}
}

static uint32_t
acked_max(struct report *r, uint32_t g)
{
	uint32_t a = __atomic_load_n(&r->acked[0][g], __ATOMIC_RELAXED);
	uint32_t b = __atomic_load_n(&r->acked[1][g], __ATOMIC_RELAXED);

	return a > b ? a : b;
}

/* Whether a consumer's ack of seq s of group g was in progress at the kill. */
static bool
acking_at(const struct report *r, uint32_t g, uint32_t s)
{
	return r->acking[0][g] == s || r->acking[1][g] == s;
}

static void *
consumer(void *arg)
{
	struct child *c = arg;

	for (;;) {
		quay_lease l;
		const struct body *b;
		unsigned a;

		if (quay_queue_receive(c->q, &l, 5 * MS) != 0)
			continue;
		b = quay_msg_body(l.msg);
		a = (unsigned)rand_r(&c->seed) % 100;
		if (a < 75) {
			__atomic_store_n(&c->r->acking[c->id][b->group], b->seq, __ATOMIC_RELAXED);
			if (quay_queue_ack(c->q, &l) == 0) {
				/* A later seq of the group acked before this one: the
				 * group's order broke. (The other consumer may not have
				 * recorded the ack just before this one yet, so only
				 * "newer already acked" is checkable here.) */
				if (b->seq + 1 <= acked_max(c->r, b->group))
					__atomic_fetch_add(&c->r->order_bad, 1, __ATOMIC_RELAXED);
				__atomic_store_n(&c->r->acked[c->id][b->group], b->seq + 1, __ATOMIC_RELAXED);
			}
			__atomic_store_n(&c->r->acking[c->id][b->group], UINT32_MAX, __ATOMIC_RELAXED);
		} else if (a < 90) {
			(void)quay_queue_nack(c->q, &l, "crash");
		}
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void
child_main(const char *dir, struct report *r, unsigned seed)
{
	struct child c[4];
	pthread_t th[4];
	quay_pool *pool;
	quay_wal *w;
	quay_queue *q;

	if (quay_pool_create((size_t)32 << 20, NULL, &pool) != 0 || open_q(dir, pool, &w, &q) != 0)
		_exit(5);
	for (int i = 0; i < 4; i++) {
		c[i] = (struct child){ q, pool, r, i % 2, seed + (unsigned)i * 7919u };
		pthread_create(&th[i], NULL, i < 2 ? producer : consumer, &c[i]);
	}
	for (;;)
		pause();
}

/* ---- the parent --------------------------------------------------------- */

int
main(void)
{
	const char *env = getenv("QUAY_CRASH_TRIALS");
	unsigned trials = env != NULL && atoi(env) > 0 ? (unsigned)atoi(env) : 300;
	unsigned seed = (unsigned)time(NULL);
	uint64_t bad = 0, tot_sent = 0, tot_acked = 0, tot_found = 0, in_flight_acks = 0;
	struct report *r = mmap(NULL, sizeof(*r), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	quay_pool *pool;

	if (r == MAP_FAILED || quay_pool_create((size_t)32 << 20, NULL, &pool) != 0)
		return 2;
	printf("crash-queue-fifo: %u trials, seed %u\n", trials, seed);
	for (unsigned t = 0; t < trials; t++) {
		char dir[64];
		uint32_t next[GROUPS];
		bool first[GROUPS];
		pid_t pid;
		int status;
		quay_wal *w;
		quay_queue *q;
		quay_lease l;
		int rc;

		memset(r, 0, sizeof(*r));
		for (unsigned g = 0; g < GROUPS; g++)
			r->acking[0][g] = r->acking[1][g] = UINT32_MAX;
		snprintf(dir, sizeof(dir), "/tmp/quay-crashf-XXXXXX");
		if (mkdtemp(dir) == NULL)
			return 2;
		pid = fork();
		if (pid < 0)
			return 2;
		if (pid == 0)
			child_main(dir, r, seed + t);
		usleep((useconds_t)(20000 + rand_r(&seed) % 80000));
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		if (!WIFSIGNALED(status)) {
			fprintf(stderr, "trial %u: the child exited (%d) before the kill\n", t, status);
			bad++;
		}
		if ((rc = open_q(dir, pool, &w, &q)) != 0) {
			fprintf(stderr, "trial %u: recovery failed: %d\n", t, rc);
			return 1;
		}
		for (unsigned g = 0; g < GROUPS; g++) {
			next[g] = acked_max(r, g);
			first[g] = true;
			tot_sent += r->sent[g];
			tot_acked += next[g];
			in_flight_acks += (r->acking[0][g] != UINT32_MAX) + (r->acking[1][g] != UINT32_MAX);
		}
		/* Drain: heads in their backoff come due within a few ms. */
		while ((rc = quay_queue_receive(q, &l, 50 * MS)) == 0) {
			const struct body *b = quay_msg_body(l.msg);
			uint32_t g = b->group;

			tot_found++;
			if (quay_msg_body_len(l.msg) != sizeof(*b) || g >= GROUPS ||
			    b->check != check_of(g, b->seq)) {
				fprintf(stderr, "trial %u: corrupt body\n", t);
				bad++;
			} else {
				/* An ack in progress at the kill may have reached
				 * the log: then its group resumes one later. */
				if (first[g] && acking_at(r, g, next[g]) && b->seq == next[g] + 1)
					next[g]++;
				first[g] = false;
				if (b->seq != next[g]) {
					fprintf(stderr,
					    "trial %u: group %u: got seq %u, expected %u (acked %u, sent %u)\n",
					    t, g, b->seq, next[g], acked_max(r, g), r->sent[g]);
					bad++;
				}
				next[g] = b->seq + 1;
			}
			if (quay_queue_ack(q, &l) != 0)
				bad++;
			quay_msg_unref(l.msg);
		}
		for (unsigned g = 0; g < GROUPS; g++) {
			/* A send in progress at the kill may be in the log. */
			uint32_t hi = r->sending[g] == r->sent[g] ? r->sent[g] + 1 : r->sent[g];

			/* Nothing of the group came back: an ack in progress at
			 * the kill may have taken its last message. */
			if (first[g] && acking_at(r, g, next[g]))
				next[g]++;

			if (next[g] < r->sent[g] || next[g] > hi) {
				fprintf(stderr,
				    "trial %u: group %u: drained to %u, sent %u (acked %u, acking %u/%u)\n",
				    t, g, next[g], r->sent[g], acked_max(r, g), r->acking[0][g],
				    r->acking[1][g]);
				bad++;
			}
		}
		if (r->order_bad != 0) {
			fprintf(stderr, "trial %u: %u acks out of order before the crash\n", t, r->order_bad);
			bad++;
		}
		quay_queue_destroy(q);
		quay_wal_close(w);
		qt_rm_dir(dir);
	}
	printf("crash-queue-fifo: %u trials: sent %llu, acked before the kill %llu, recovered %llu, "
	       "acks in progress at the kill %llu: %s (%llu violations)\n",
	    trials, (unsigned long long)tot_sent, (unsigned long long)tot_acked,
	    (unsigned long long)tot_found, (unsigned long long)in_flight_acks, bad ? "FAIL" : "ok",
	    (unsigned long long)bad);
	quay_pool_destroy(pool);
	return bad != 0;
}
