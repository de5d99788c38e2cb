/* SPDX-License-Identifier: MIT */
/*
 * Crash trials of a durable FIFO queue (issue 13): kill -9 with
 * consumers mid-flight, then per-group order and exactly-once after the
 * restart.
 *
 * Each trial: a child opens a WAL (SYNC: a send or ack that returned 0
 * is in the file) and a FIFO queue on it (short leases, small backoff,
 * compaction every 4 KiB: a compaction writes the dedup window's DEDUP
 * records in some trials; with 64 KiB segments a trial rarely recycles
 * the segment of a send's ADD: that is covered, power cuts included, by
 * tests/unit/test_queue_durable.c's dedup_window_survives_compaction and
 * power_loss_under_durable_queue), and runs two producers, each owning 8 groups
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
 * Then the dedup window (issue 13): every send carries a dedup id (its
 * group and seq) and the queue a window of an hour; after the drain the
 * parent sends every id whose send returned 0 before the kill again
 * (most of them acked, some compacted away) and each must be refused as
 * a duplicate (QUAY_QUEUE_DUPLICATE, counted in `deduplicated`); the one
 * in progress at the kill may go either way; a fresh id per group must
 * be accepted, and a batch receive then finds exactly those.
 * Consumers receive in batches of up to 8 (one delivery-count write and
 * one fdatasync per batch): a message of a group whose earlier message
 * in the batch was nacked or abandoned gets the same, so a group's first
 * successful processing still follows send order.
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
	o.compact_bytes = 4 << 10; /* a compaction in most trials: the window is carried */
	o.max_attempts = QUAY_QUEUE_ATTEMPTS_MAX;
	o.visibility_ns = 10 * MS;
	o.backoff_base_ns = 1 * MS;
	o.backoff_max_ns = 4 * MS;
	o.dedup_window_ns = (int64_t)3600 * 1000 * MS;
	o.dedup_capacity = (size_t)1 << 20; /* every id a trial sends */
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
	char gid[8], did[24];

	for (uint32_t i = 0;; i++) {
		uint32_t g = (uint32_t)c->id * (GROUPS / 2) + i % (GROUPS / 2);
		uint32_t s = __atomic_load_n(&c->r->sent[g], __ATOMIC_RELAXED);
		struct body b = { g, s, check_of(g, s) };
		quay_msg *m = NULL;
		int n = snprintf(gid, sizeof(gid), "g%u", g), rc;
		int dn = snprintf(did, sizeof(did), "g%u-%u", g, s);

		if (s >= PER_GROUP)
			return NULL;
		if (quay_msg_new_ex(c->pool, &b, sizeof(b), QUAY_MSG_HEADER_ROOM(2, 32), 0, &m) != 0 ||
		    quay_msg_set_header(m, QUAY_MSG_H_GROUP, gid, (size_t)n) != 0 ||
		    quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, did, (size_t)dn) != 0)
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

/* One lease's fate: a < 75 ack, < 90 nack, else walk away (the lease
 * expires). */
static void
consume(struct child *c, quay_lease *l, const struct body *b, unsigned a)
{
	if (a < 75) {
		__atomic_store_n(&c->r->acking[c->id][b->group], b->seq, __ATOMIC_RELAXED);
		if (quay_queue_ack(c->q, l) == 0) {
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
		(void)quay_queue_nack(c->q, l, "crash");
	}
	quay_msg_unref(l->msg);
}

static void *
consumer(void *arg)
{
	struct child *c = arg;

	for (;;) {
		quay_lease ls[8];
		unsigned failed[GROUPS]; /* this batch's failure of the group: 0 none, else a + 1 */
		size_t n = quay_queue_receive_batch(c->q, ls, 8, 5 * MS);

		memset(failed, 0, sizeof(failed));
		for (size_t i = 0; i < n; i++) {
			quay_lease l = ls[i];
			const struct body *b = quay_msg_body(l.msg);
			unsigned a = (unsigned)rand_r(&c->seed) % 100;

			/* A later message of a group that failed in this batch
			 * fails the same way: acking it would process the group
			 * out of order. */
			if (b->group < GROUPS && failed[b->group] != 0)
				a = failed[b->group] - 1;
			else if (a >= 75 && b->group < GROUPS)
				failed[b->group] = a + 1;
			consume(c, &l, b, a);
		}
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

/* Count the DEDUP records (type 0x51440005, written by compactions). */
static int
count_dedup(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	(void)lsn;
	(void)data;
	(void)len;
	if (type == 0x51440005u)
		++*(uint64_t *)ctx;
	return 0;
}

/* Send (g, seq) with its dedup id, as a producer does: the send's
 * result. With out: only make the message (*out; 0 or -ENOMEM). */
static int
send_id(quay_pool *pool, quay_queue *q, uint32_t g, uint32_t seq, quay_msg **out)
{
	struct body b = { g, seq, check_of(g, seq) };
	char gid[8], did[24];
	int n = snprintf(gid, sizeof(gid), "g%u", g), dn = snprintf(did, sizeof(did), "g%u-%u", g, seq);
	quay_msg *m = NULL;
	int rc;

	if (quay_msg_new_ex(pool, &b, sizeof(b), QUAY_MSG_HEADER_ROOM(2, 32), 0, &m) != 0 ||
	    quay_msg_set_header(m, QUAY_MSG_H_GROUP, gid, (size_t)n) != 0 ||
	    quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, did, (size_t)dn) != 0)
		return -ENOMEM;
	if (out != NULL) {
		*out = m;
		return 0;
	}
	if ((rc = quay_queue_send(q, m)) < 0)
		quay_msg_unref(m);
	return rc;
}

int
main(void)
{
	const char *env = getenv("QUAY_CRASH_TRIALS");
	unsigned trials = env != NULL && atoi(env) > 0 ? (unsigned)atoi(env) : 300;
	unsigned seed = (unsigned)time(NULL);
	uint64_t bad = 0, tot_sent = 0, tot_acked = 0, tot_found = 0, in_flight_acks = 0;
	uint64_t refused = 0, fresh = 0, compacted = 0;
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
		{
			uint64_t nd = 0;

			if (quay_wal_replay(w, 1, count_dedup, &nd) == 0 && nd != 0)
				compacted++;
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
			if ((rc = quay_queue_ack(q, &l)) != 0) {
				fprintf(stderr, "trial %u: ack in the drain: %d\n", t, rc);
				bad++;
			}
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
		/* The dedup window survived: every id sent before the kill is
		 * refused (the one in progress at the kill, if any, may be in
		 * the log or not: not sent again). */
		for (unsigned g = 0; g < GROUPS; g++)
			for (uint32_t sq = 0; sq < r->sent[g]; sq++) {
				rc = send_id(pool, q, g, sq, NULL);
				if (rc != QUAY_QUEUE_DUPLICATE) {
					fprintf(stderr,
					    "trial %u: group %u: id of seq %u (sent before the kill) "
					    "not refused after the restart: %d\n",
					    t, g, sq, rc);
					bad++;
				}
				refused += rc == QUAY_QUEUE_DUPLICATE;
			}
		/* A fresh id per group is accepted (one batch: one fdatasync). */
		{
			quay_msg *fm[GROUPS];
			int res[GROUPS];

			for (unsigned g = 0; g < GROUPS; g++)
				if (send_id(pool, q, g, PER_GROUP + g, &fm[g]) != 0)
					return 2;
			if (quay_queue_send_batch(q, fm, GROUPS, res) != (int)GROUPS) {
				fprintf(stderr, "trial %u: fresh ids refused\n", t);
				bad++;
			}
			for (unsigned g = 0; g < GROUPS; g++) {
				if (res[g] < 0)
					quay_msg_unref(fm[g]);
				fresh += res[g] == 0;
			}
		}
		/* Exactly the fresh ones are in the queue (one per group). */
		{
			quay_lease ls[GROUPS + 1];
			size_t n = quay_queue_receive_batch(q, ls, GROUPS + 1, 20 * MS);

			for (size_t i = 0; i < n; i++) {
				const struct body *b = quay_msg_body(ls[i].msg);

				if (b->seq != PER_GROUP + b->group) {
					fprintf(stderr,
					    "trial %u: group %u: seq %u back after the re-sends\n", t,
					    b->group, b->seq);
					bad++;
				}
				quay_msg_unref(ls[i].msg);
			}
			if (n != GROUPS) {
				fprintf(stderr, "trial %u: %zu messages after the re-sends, not %u\n", t, n,
				    GROUPS);
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
	       "acks in progress at the kill %llu; re-sent ids refused after the restart %llu, "
	       "fresh ids accepted %llu, trials whose log held DEDUP records %llu: %s (%llu violations)\n",
	    trials, (unsigned long long)tot_sent, (unsigned long long)tot_acked,
	    (unsigned long long)tot_found, (unsigned long long)in_flight_acks, (unsigned long long)refused,
	    (unsigned long long)fresh, (unsigned long long)compacted, bad ? "FAIL" : "ok",
	    (unsigned long long)bad);
	quay_pool_destroy(pool);
	return bad != 0;
}
