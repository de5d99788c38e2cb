/* SPDX-License-Identifier: MIT */
/*
 * Crash trials of durable routing (issue 12): two durable queues on one
 * WAL (SYNC), both bound to "r.>" on a bus. A child publishes messages
 * (seq, byte-exact bodies) from two threads and reports through a pipe
 * each publish's result: "A seq" when publish returned 2 (both queues
 * took it), "F seq" when it returned a negative code (nobody did), "P
 * seq" for a partial delivery (0 or 1: the publish said which queues
 * refused). The parent kills it with SIGKILL at a random moment, reopens
 * the WAL and both queues and checks:
 *   - every "A" message is in both queues: 0 lost;
 *   - no "F" message is in either: 0 resurrected;
 *   - no message is in one queue twice: 0 duplicated;
 *   - every body found is byte-exact: 0 corrupt;
 *   - a publish interrupted by the kill (no report) is in both queues or
 *     in neither, never in one only: 0 split (the bus gives the queues
 *     of one WAL one appendv for both ADD records, src/queue_route.c).
 *
 * Usage: crash_route (QUAY_CRASH_TRIALS=N for more; default 300).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#include <quay/quay.h>

#define MAXSEQ 100000u

static void
body_for(uint64_t seq, unsigned char *b, size_t *len)
{
	*len = 8 + (size_t)(seq * 2654435761u % 120);
	memcpy(b, &seq, 8);
	for (size_t i = 8; i < *len; i++)
		b[i] = (unsigned char)(seq * 31 + i);
}

static int
open_all(const char *dir, quay_pool *pool, quay_wal **w, quay_queue **qa, quay_queue **qb)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	int rc;

	wo.sync_mode = QUAY_WAL_SYNC;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	if ((rc = quay_wal_open(dir, &wo, w)) != 0)
		return rc;
	o.capacity = MAXSEQ;
	o.wal = *w;
	o.pool = pool;
	o.name = "route-a";
	if ((rc = quay_queue_create(&o, qa)) != 0)
		return rc;
	o.name = "route-b";
	return quay_queue_create(&o, qb);
}

/* ---- the child --------------------------------------------------------- */

struct child {
	quay_bus *bus;
	quay_pool *pool;
	int fd;
	unsigned id;
};

static void
report(int fd, char what, uint64_t seq)
{
	unsigned char rec[9];

	rec[0] = (unsigned char)what;
	memcpy(rec + 1, &seq, 8);
	if (write(fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
		_exit(3);
}

static void *
publisher(void *arg)
{
	struct child *c = arg;

	for (uint64_t seq = c->id; seq < MAXSEQ; seq += 2) {
		unsigned char b[256];
		size_t len;
		quay_msg *m;
		int r;

		body_for(seq, b, &len);
		if (quay_msg_new(c->pool, b, len, &m) != 0)
			_exit(4);
		r = quay_bus_publish(c->bus, seq % 3 ? "r.x" : "r.y.z", m);
		if (r < 0)
			quay_msg_unref(m);
		report(c->fd, r == 2 ? 'A' : r < 0 ? 'F' : 'P', seq);
	}
	return NULL;
}

static void
child_main(const char *dir, int fd)
{
	struct child c[2];
	pthread_t t[2];
	quay_pool *pool;
	quay_wal *w;
	quay_queue *qa, *qb;
	quay_bus *bus;
	quay_binding *ba, *bb;

	if (quay_pool_create((size_t)64 << 20, NULL, &pool) != 0 || open_all(dir, pool, &w, &qa, &qb) != 0 ||
	    quay_bus_create(NULL, &bus) != 0 || quay_bus_bind(bus, "r.>", qa, NULL, &ba) != 0 ||
	    quay_bus_bind(bus, "r.#", qb, NULL, &bb) != 0)
		_exit(2);
	report(fd, 'R', 0); /* ready: the parent's clock starts */
	for (unsigned i = 0; i < 2; i++) {
		c[i] = (struct child){ bus, pool, fd, i };
		pthread_create(&t[i], NULL, publisher, &c[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pause(); /* wait for the kill */
	_exit(0);
}

/* ---- the parent -------------------------------------------------------- */

static uint8_t flag[MAXSEQ]; /* 'A', 'F', 'P' or 0 */
static uint8_t in[2][MAXSEQ];
static unsigned long corrupt;

struct visit_ctx {
	unsigned which;
};

static int
visit(void *ctx, const quay_msg *m, quay_queue_state st)
{
	const struct visit_ctx *v = ctx;
	unsigned char b[256];
	uint64_t seq;
	size_t len;

	(void)st;
	if (quay_msg_body_len(m) < 8) {
		corrupt++;
		return 0;
	}
	memcpy(&seq, quay_msg_body(m), 8);
	if (seq >= MAXSEQ) {
		corrupt++;
		return 0;
	}
	body_for(seq, b, &len);
	if (quay_msg_body_len(m) != len || memcmp(quay_msg_body(m), b, len) != 0)
		corrupt++;
	if (in[v->which][seq] < 255)
		in[v->which][seq]++;
	return 0;
}

int
main(void)
{
	const char *env = getenv("QUAY_CRASH_TRIALS");
	unsigned trials = env != NULL && atoi(env) > 0 ? (unsigned)atoi(env) : 300;
	unsigned seed = (unsigned)time(NULL);
	unsigned long acked = 0, failed = 0, partial = 0, lost = 0, resurrected = 0, dup = 0, split = 0,
	              failures = 0;
	quay_pool *pool;

	if (quay_pool_create((size_t)64 << 20, NULL, &pool) != 0)
		return 2;
	for (unsigned t = 0; t < trials; t++) {
		char dir[64];
		int p[2], status, rc;
		pid_t pid;
		unsigned char rec[9];
		ssize_t r;
		quay_wal *w;
		quay_queue *qa, *qb;
		struct visit_ctx va = { 0 }, vb = { 1 };

		snprintf(dir, sizeof(dir), "/tmp/quay-crashr-XXXXXX");
		if (mkdtemp(dir) == NULL || pipe(p) != 0)
			return 2;
		(void)fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
		pid = fork();
		if (pid < 0)
			return 2;
		if (pid == 0) {
			close(p[0]);
			child_main(dir, p[1]);
		}
		close(p[1]);
		/* Wait for the child's 'R' (set up), then kill it at random. */
		if (read(p[0], rec, sizeof(rec)) != (ssize_t)sizeof(rec) || rec[0] != 'R') {
			fprintf(stderr, "trial %u: the child did not start\n", t);
			failures++;
		}
		usleep((useconds_t)(rand_r(&seed) % 30000));
		kill(pid, SIGKILL);
		memset(flag, 0, sizeof(flag));
		memset(in, 0, sizeof(in));
		while ((r = read(p[0], rec, sizeof(rec))) == (ssize_t)sizeof(rec)) {
			uint64_t seq;
			memcpy(&seq, rec + 1, 8);
			if (seq < MAXSEQ)
				flag[seq] = rec[0];
		}
		close(p[0]);
		waitpid(pid, &status, 0);
		if (!WIFSIGNALED(status)) {
			fprintf(stderr, "trial %u: child exited %d before the kill\n", t,
			    WEXITSTATUS(status));
			failures++;
			qt_rm_dir(dir);
			continue;
		}
		if ((rc = open_all(dir, pool, &w, &qa, &qb)) != 0) {
			fprintf(stderr, "trial %u: recovery failed: %s\n", t, quay_strerror(rc));
			failures++;
			qt_rm_dir(dir);
			continue;
		}
		quay_queue_browse(qa, visit, &va);
		quay_queue_browse(qb, visit, &vb);
		for (uint64_t s = 0; s < MAXSEQ; s++) {
			acked += flag[s] == 'A';
			failed += flag[s] == 'F';
			partial += flag[s] == 'P';
			if (flag[s] == 'A' && (in[0][s] == 0 || in[1][s] == 0))
				lost++;
			if (flag[s] == 'F' && (in[0][s] != 0 || in[1][s] != 0))
				resurrected++;
			if (in[0][s] > 1 || in[1][s] > 1)
				dup++;
			if ((flag[s] == 0 || flag[s] == 'F') && (in[0][s] != 0) != (in[1][s] != 0))
				split++;
		}
		quay_queue_destroy(qa);
		quay_queue_destroy(qb);
		quay_wal_close(w);
		qt_rm_dir(dir);
	}
	quay_pool_destroy(pool);
	printf(
	    "crash-route: %u trials (SYNC, 2 durable queues on one WAL, 2 publishers): acked publishes %lu, "
	    "failed %lu, partial %lu; lost %lu, resurrected %lu, duplicated %lu, corrupt %lu, "
	    "trial failures %lu; interrupted publishes in one queue only (split) %lu\n",
	    trials, acked, failed, partial, lost, resurrected, dup, corrupt, failures, split);
	return lost + resurrected + dup + corrupt + split + failures == 0 && acked > 0 ? 0 : 1;
}
