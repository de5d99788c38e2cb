/* SPDX-License-Identifier: MIT */
/*
 * advanced_mq: the features of an "advanced message queue" service, on
 * quay, each checked.
 *
 *   durable      a child process sends 200 jobs to a queue on the WAL,
 *                acks 60, nacks 10, holds 30 leases, and is killed with
 *                SIGKILL: the parent reopens the log and gets back exactly
 *                the 140 unacked jobs, each once, with its delivery counted
 *   priorities   batch send of 40 orders with priorities 0..3; batch
 *                receive returns them highest first, FIFO within a level
 *   ttl          quotes with a 50 ms TTL are never delivered after it:
 *                they go to the DLQ marked "ttl-expired"
 *   backoff      a failing payment is retried after 10, 20, 40, 80 ms
 *                (exactly: no jitter, a fake clock), then dead-lettered
 *   redrive      poison messages in the DLQ are replayed into the queue
 *                once the bug is "fixed", and each is processed once
 *   rpc          request/reply over the bus: 20 requests through a worker
 *                queue, each reply carrying its request's correlation id;
 *                replies to a named reply-to subject; a request to a slow
 *                worker times out and its late reply is counted
 *   metrics      per-queue counters, the conservation law of
 *                quay/queue.h for each queue, Prometheus lines
 *   throughput   1 producer, 1 consumer, batches of 64, send+receive+ack,
 *                in memory and durable; printed next to the 10,000 msg/s
 *                such services advertise (printed only: not a check)
 *
 * --seed=N changes the priorities drawn (default 12345). Exits 1 if any
 * check fails. --break=<check> (priority, ttl, backoff,
 * redrive, rpc, durable) deliberately breaks one so CI proves it can fail.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>

#include "app_util.h"

static const char *broken = ""; /* --break=<check> */
static uint32_t seed = 12345;   /* --seed=N: the priorities drawn */
static int failures;
static quay_stats *reg; /* one registry: every queue's metrics */

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) { \
			failures++; \
			printf("FAIL  "); \
			printf(__VA_ARGS__); \
			printf("\n"); \
		} \
	} while (0)

static int
broke(const char *check)
{
	return strcmp(broken, check) == 0;
}

/* The fake clock of the timing sections: pool and queues read it, the
 * main thread moves it (no other thread runs while it does). */
static int64_t fake_now = (int64_t)1700000000 * 1000000000;

static int64_t
fake_clock(void *ctx)
{
	(void)ctx;
	return __atomic_load_n(&fake_now, __ATOMIC_ACQUIRE); /* pairs with advance()'s store */
}

static void
advance(quay_queue *q, int64_t ns)
{
	__atomic_store_n(&fake_now, fake_now + ns, __ATOMIC_RELEASE); /* pairs with fake_clock() */
	quay_queue_tick(q);                                           /* due timers fire now */
}

static quay_msg *
mk(quay_pool *pool, const char *fmt, int n)
{
	char body[64];
	quay_msg *m = NULL;
	int len = snprintf(body, sizeof(body), fmt, n);

	if (quay_msg_new(pool, body, (size_t)len, &m) != 0) {
		fprintf(stderr, "pool exhausted\n");
		exit(2);
	}
	return m;
}

/* The number in a message's body ("order 17" -> 17; bodies are not
 * NUL-terminated). */
static int
num(const quay_msg *m)
{
	const char *b = quay_msg_body(m);
	size_t i = 0, len = quay_msg_body_len(m);
	int v = -1;

	while (i < len && (b[i] < '0' || b[i] > '9'))
		i++;
	for (; i < len && b[i] >= '0' && b[i] <= '9'; i++)
		v = (v < 0 ? 0 : v * 10) + (b[i] - '0');
	return v;
}

static quay_queue *
mkq(const char *name, struct quay_queue_opts *o)
{
	quay_queue *q;

	o->name = name;
	o->stats = reg;
	if (quay_queue_create(o, &q) != 0) {
		fprintf(stderr, "cannot create queue %s\n", name);
		exit(2);
	}
	return q;
}

/* Per-queue metrics: read a queue's counters before it goes, check the
 * conservation law of quay/queue.h, keep a row for the summary. */
static struct row {
	char name[24];
	struct quay_queue_stats s;
} rows[16];
static int nrows;

static void
done(const char *name, quay_queue *q)
{
	struct row *r = &rows[nrows < 15 ? nrows++ : 15];
	struct quay_queue_stats *s = &r->s;

	snprintf(r->name, sizeof(r->name), "%s", name);
	quay_queue_stats(q, s);
	CHECK(s->sent + s->restored ==
	        s->ready + s->delayed + s->in_flight + s->acked + s->dead_lettered + s->dropped +
	            s->redriven_out,
	    "metrics: %s does not add up", name);
	quay_queue_destroy(q);
}

/* ---- durable: kill -9 of a child holding leases -------------------- */

#define DJOBS 200

static int
open_durable(const char *dir, unsigned sync_mode, quay_pool *pool, quay_wal **wal, quay_queue **q)
{
	struct quay_wal_opts w = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	w.sync_mode = sync_mode;
	if (quay_wal_open(dir, &w, wal) != 0)
		return -1;
	o.name = "jobs";
	o.wal = *wal;
	o.pool = pool;
	o.backoff_base_ns = 20 * 1000000; /* nacked jobs come back after 20 ms */
	return quay_queue_create(&o, q);
}

/* The child: a worker that dies with work in its hands. Reports the seqs
 * it acked (each ack durable before it is reported), then waits for the
 * kill. */
static void
durable_child(const char *dir, int fd)
{
	quay_pool *pool;
	quay_wal *wal;
	quay_queue *q;
	quay_msg *batch[50];
	quay_lease l[100];
	unsigned char acked[DJOBS] = { 0 };

	if (quay_pool_create(4 << 20, NULL, &pool) != 0 ||
	    open_durable(dir, broke("durable") ? QUAY_WAL_NONE : QUAY_WAL_SYNC, pool, &wal, &q) != 0)
		_exit(3);
	for (int b = 0; b < DJOBS / 50; b++) {
		for (int i = 0; i < 50; i++)
			batch[i] = mk(pool, "job %d", b * 50 + i);
		if (quay_queue_send_batch(q, batch, 50, NULL) != 50) /* one fdatasync per batch */
			_exit(4);
	}
	if (quay_queue_receive_batch(q, l, 100, 1000000000) != 100)
		_exit(5);
	for (int i = 0; i < 100; i++) {
		int seq = num(l[i].msg);

		if (seq % 10 < 6) { /* done: 60 acks */
			if (quay_queue_ack(q, &l[i]) != 0)
				_exit(6);
			acked[seq] = 1;
		} else if (seq % 10 == 6) { /* failed: 10 nacks, back after backoff */
			quay_queue_nack(q, &l[i], "downstream 503");
		} /* else: 30 leases held when the process dies */
	}
	if (write(fd, acked, sizeof(acked)) != (ssize_t)sizeof(acked))
		_exit(7);
	for (;;)
		pause(); /* the parent's SIGKILL ends us */
}

static void
section_durable(void)
{
	char dir[] = "/tmp/quay-advanced-mq-XXXXXX";
	unsigned char acked[DJOBS], seen[DJOBS] = { 0 };
	int fds[2], st, back = 0, dup = 0, wrong_attempt = 0, acked_back = 0;
	quay_pool *pool;
	quay_wal *wal;
	quay_queue *q;
	struct quay_queue_stats s;
	pid_t pid;

	if (mkdtemp(dir) == NULL || pipe(fds) != 0 || (pid = fork()) < 0)
		exit(2);
	if (pid == 0) {
		close(fds[0]);
		durable_child(dir, fds[1]);
	}
	close(fds[1]);
	size_t got = 0;
	while (got < sizeof(acked)) {
		ssize_t r = read(fds[0], acked + got, sizeof(acked) - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fds[0]);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	if (got != sizeof(acked) || !WIFSIGNALED(st)) {
		printf("FAIL  durable: the child died before its report (status %d)\n", st);
		failures++;
		remove_dir(dir);
		return;
	}
	if (quay_pool_create(4 << 20, NULL, &pool) != 0 ||
	    open_durable(dir, QUAY_WAL_SYNC, pool, &wal, &q) != 0)
		exit(2);
	quay_queue_stats(q, &s);
	uint64_t restored = s.restored;
	int64_t deadline = mono_ns() + 5 * (int64_t)1000000000;
	while (back < (int)restored && mono_ns() < deadline) {
		quay_lease l;

		if (quay_queue_receive(q, &l, 100000000) != 0)
			continue;
		int seq = num(l.msg);
		back++;
		dup += seen[seq]++ > 0;
		acked_back += acked[seq];
		/* Jobs the child received and did not ack: their delivery was
		 * logged, so this one is attempt 2; the others attempt 1. */
		wrong_attempt += l.attempt != (seq < 100 ? 2u : 1u);
		quay_queue_ack(q, &l);
		quay_msg_unref(l.msg);
	}
	int missing = 0;
	for (int i = 0; i < DJOBS; i++)
		missing += !acked[i] && !seen[i];
	quay_queue_stats(q, &s);
	printf("durable     child killed with SIGKILL holding 30 leases and 10 nacked jobs; restart restored "
	       "%" PRIu64 " of %d unacked, received back %d\n",
	    restored, DJOBS - 60, back);
	CHECK(restored == DJOBS - 60 && missing == 0,
	    "durable: %" PRIu64 " restored, %d unacked jobs missing", restored, missing);
	CHECK(dup == 0 && acked_back == 0, "durable: %d duplicates, %d acked jobs came back", dup,
	    acked_back);
	CHECK(wrong_attempt == 0, "durable: %d jobs with the wrong attempt number", wrong_attempt);
	CHECK(s.ready + s.delayed + s.in_flight == 0, "durable: queue not empty after the drain");
	done("jobs-durable", q);
	quay_wal_close(wal);
	quay_pool_destroy(pool);
	remove_dir(dir);
}

/* ---- priorities, TTL, backoff, redrive (fake clock) ----------------- */

static void
section_priorities(quay_pool *pool)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_msg *batch[10];
	quay_lease l[8];
	int prio[40], order_ok = 1, n = 0, last_p = 4, last_seq = -1;
	uint32_t x = seed; /* deterministic: --seed */

	o.levels = 4;
	o.clock = fake_clock;
	quay_queue *q = mkq("orders", &o);
	for (int i = 0; i < 40; i++) {
		x = x * 1103515245u + 12345u;
		prio[i] = (int)(x >> 16) % 4;
		batch[i % 10] = mk(pool, "order %d", i);
		if (!broke("priority"))
			quay_msg_set_priority(batch[i % 10], (unsigned)prio[i]);
		if (i % 10 == 9)
			CHECK(quay_queue_send_batch(q, batch, 10, NULL) == 10,
			    "priorities: batch send refused");
	}
	for (size_t got; (got = quay_queue_receive_batch(q, l, 8, 0)) > 0;)
		for (size_t i = 0; i < got; i++, n++) {
			int seq = num(l[i].msg), p = prio[seq];

			if (p > last_p || (p == last_p && seq < last_seq))
				order_ok = 0;
			last_p = p;
			last_seq = seq;
			quay_queue_ack(q, &l[i]);
			quay_msg_unref(l[i].msg);
		}
	printf("priorities  40 orders sent in batches of 10, received in batches of 8: %s\n",
	    order_ok ? "highest priority first, FIFO within each level" : "OUT OF ORDER");
	CHECK(n == 40 && order_ok, "priorities: %d received, order %s", n, order_ok ? "ok" : "wrong");
	done("orders", q);
}

static void
section_ttl(quay_pool *pool)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_lease l;
	int delivered_expired = 0, delivered = 0, dead = 0, reason_ok = 0;

	o.clock = fake_clock;
	quay_queue *dlq = mkq("quotes-dlq", &o);
	o.dlq = dlq;
	quay_queue *q = mkq("quotes", &o);
	for (int i = 0; i < 10; i++) {
		quay_msg *m = mk(pool, "quote %d", i);

		if (i % 2 == 0) /* even quotes are only worth 50 ms */
			quay_msg_set_ttl_ns(m, (broke("ttl") ? 500 : 50) * (int64_t)1000000);
		quay_queue_send(q, m);
	}
	advance(q, 100 * (int64_t)1000000); /* the consumer was slow */
	while (quay_queue_receive(q, &l, 0) == 0) {
		delivered++;
		delivered_expired += num(l.msg) % 2 == 0;
		quay_queue_ack(q, &l);
		quay_msg_unref(l.msg);
	}
	while (quay_queue_receive(dlq, &l, 0) == 0) {
		char why[32];

		dead++;
		quay_msg_get_header_str(l.msg, QUAY_MSG_H_DLQ_REASON, why, sizeof(why));
		reason_ok += strcmp(why, "ttl-expired") == 0;
		quay_queue_ack(dlq, &l);
		quay_msg_unref(l.msg);
	}
	printf("ttl         10 quotes, 5 with a 50 ms TTL, read after 100 ms: %d delivered, %d dead-lettered "
	       "(ttl-expired)\n",
	    delivered, dead);
	CHECK(delivered_expired == 0 && delivered == 5, "ttl: %d expired quotes delivered",
	    delivered_expired);
	CHECK(dead == 5 && reason_ok == 5, "ttl: %d dead letters, %d with reason ttl-expired", dead,
	    reason_ok);
	done("quotes", q);
	done("quotes-dlq", dlq);
}

static void
section_backoff(quay_pool *pool)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	const int64_t ms = 1000000;
	int64_t seen[8] = { 0 };
	int attempts = 0, early = 0;
	quay_lease l;

	o.clock = fake_clock;
	quay_queue *dlq = mkq("payments-dlq", &o);
	o.dlq = dlq;
	o.flags = QUAY_QUEUE_NO_JITTER; /* exact delays: min(max, base * factor^(n-1)) */
	o.max_attempts = 5;
	o.backoff_base_ns = 10 * ms;
	o.backoff_factor = broke("backoff") ? 3.0 : 2.0;
	quay_queue *q = mkq("payments", &o);
	quay_queue_send(q, mk(pool, "payment %d to a flaky gateway", 1));
	while (quay_queue_receive(q, &l, 0) == 0) {
		attempts++;
		quay_queue_nack(q, &l, "gateway timeout");
		quay_msg_unref(l.msg);
		if (attempts == 5)
			break;
		/* Find when it comes back, one millisecond at a time. */
		int64_t waited = 0;
		while (quay_queue_receive(q, &l, 0) != 0 && waited < 1000 * ms) {
			advance(q, ms);
			waited += ms;
		}
		if (waited == 0) {
			early++;
			quay_queue_release(q, &l);
			quay_msg_unref(l.msg);
			continue;
		}
		seen[attempts] = waited / ms;
		quay_queue_release(q, &l); /* give it back: the loop's receive takes it */
		quay_msg_unref(l.msg);
	}
	int dead = quay_queue_receive(dlq, &l, 0) == 0;
	char a[16] = "";
	if (dead) {
		quay_msg_get_header_str(l.msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, a, sizeof(a));
		quay_queue_ack(dlq, &l);
		quay_msg_unref(l.msg);
	}
	printf("backoff     a payment failing 5 times came back after %" PRId64 ", %" PRId64 ", %" PRId64
	       ", %" PRId64 " ms, then went to the DLQ after attempt %s\n",
	    seen[1], seen[2], seen[3], seen[4], a);
	CHECK(early == 0 && seen[1] == 10 && seen[2] == 20 && seen[3] == 40 && seen[4] == 80,
	    "backoff: delays %" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 " ms, expected 10/20/40/80",
	    seen[1], seen[2], seen[3], seen[4]);
	CHECK(dead && strcmp(a, "5") == 0, "backoff: not dead-lettered after 5 attempts");
	done("payments", q);
	done("payments-dlq", dlq);
}

static void
section_redrive(quay_pool *pool)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	int processed[12] = { 0 }, fixed = 0, headers_left = 0;
	size_t moved = 0;
	quay_lease l;

	o.clock = fake_clock;
	quay_queue *dlq = mkq("invoices-dlq", &o);
	o.dlq = dlq;
	o.flags = QUAY_QUEUE_NO_BACKOFF;
	o.max_attempts = 3;
	quay_queue *q = mkq("invoices", &o);
	for (int i = 0; i < 12; i++)
		quay_queue_send(q, mk(pool, "invoice %d", i));
	for (int round = 0; round < 2; round++) {
		/* Round 0: the parser has a bug with every third invoice. */
		while (quay_queue_receive(q, &l, 0) == 0) {
			int seq = num(l.msg);

			if (!fixed && seq % 3 == 0) {
				quay_queue_nack(q, &l, "parse error");
			} else {
				processed[seq]++;
				headers_left +=
				    quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_REASON, NULL, NULL) == 0;
				quay_queue_ack(q, &l);
			}
			quay_msg_unref(l.msg);
		}
		if (round == 0) { /* deploy the fix, replay the dead letters */
			fixed = 1;
			quay_queue_redrive(dlq, q, broke("redrive") ? 2 : 100, &moved);
		}
	}
	int once = 0;
	for (int i = 0; i < 12; i++)
		once += processed[i] == 1;
	struct quay_queue_stats ds;
	quay_queue_stats(dlq, &ds);
	printf("redrive     12 invoices, 4 dead-lettered by a parser bug; after the fix %zu redriven, "
	       "%d of 12 processed exactly once\n",
	    moved, once);
	CHECK(once == 12 && moved == 4 && ds.ready == 0,
	    "redrive: %d processed once, %zu moved, %" PRIu64 " left in the DLQ", once, moved, ds.ready);
	CHECK(headers_left == 0, "redrive: %d redriven messages kept their DLQ headers", headers_left);
	done("invoices", q);
	done("invoices-dlq", dlq);
}

/* The live queues' metrics as Prometheus text (the same registry an
 * HTTP endpoint would serve, quay/http.h). */
static void
print_prometheus(void)
{
	quay_stats_snap *snap;
	char *buf = malloc(1 << 20);
	size_t len, lines = 0;

	if (buf == NULL || quay_stats_snapshot(reg, &snap) != 0 ||
	    quay_stats_format_prometheus(snap, buf, 1 << 20, &len) != 0)
		exit(2);
	printf("metrics     Prometheus text of the registry, %zu bytes, e.g.:\n", len);
	for (char *p = strtok(buf, "\n"); p != NULL; p = strtok(NULL, "\n"))
		if (strncmp(p, "quay_queue_acked_total{", 23) == 0 ||
		    strncmp(p, "quay_queue_ready{", 17) == 0) {
			printf("            %s\n", p);
			lines++;
		}
	CHECK(lines == 4, "metrics: %zu lines for the 2 rpc queues", lines);
	quay_stats_snap_free(snap);
	free(buf);
}

/* ---- request/reply over the bus (real clock) ----------------------- */

struct rpc {
	quay_bus *bus;
	quay_queue *requests;
	quay_pool *pool;
	int stop;
};

static void *
rpc_worker(void *arg)
{
	struct rpc *r = arg;
	quay_lease l;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) { /* pairs with the main thread's store */
		if (quay_queue_receive(r->requests, &l, 20000000) != 0)
			continue;
		int n = num(l.msg);
		if (memcmp(quay_msg_body(l.msg), "slow", 4) == 0)
			usleep(300000); /* far past the requester's 50 ms */
		quay_msg *rep = mk(r->pool, "price %d", n * 3);
		if (quay_bus_reply(r->bus, l.msg, rep) < 0) /* 0: too late, dropped and counted */
			quay_msg_unref(rep);
		quay_queue_ack(r->requests, &l);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void
section_rpc(quay_pool *pool)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct rpc r = { .pool = pool };
	quay_binding *b1, *b2;
	pthread_t t;
	int good = 0, async_good = 0;
	quay_lease l;

	if (quay_bus_create(NULL, &r.bus) != 0)
		exit(2);
	r.requests = mkq("rpc-requests", &o);
	quay_queue *replies = mkq("rpc-replies", &o);
	quay_bus_bind(r.bus, "rpc.*", r.requests, NULL, &b1);
	quay_bus_bind(r.bus, "replies.>", replies, NULL, &b2);
	pthread_create(&t, NULL, rpc_worker, &r);
	/* Synchronous: quay_bus_request sets a private reply-to and waits. */
	for (int i = 0; i < 20; i++) {
		quay_msg *req = mk(pool, "price? %d", i), *rep;
		uint64_t id = quay_msg_id(req);

		if (quay_bus_request(r.bus, "rpc.price", req, &rep, 5 * (int64_t)1000000000) == 0) {
			good += quay_msg_correlation_id(rep) == id && num(rep) == i * 3;
			quay_msg_unref(rep);
		}
	}
	/* Asynchronous: a named reply-to, replies collected from a queue. */
	uint64_t ids[5];
	for (int i = 0; i < 5; i++) {
		quay_msg *req = mk(pool, "price? %d", 100 + i);

		ids[i] = quay_msg_id(req);
		quay_msg_set_reply_to(req, "replies.desk-7");
		if (quay_bus_publish(r.bus, "rpc.price", req) < 0)
			quay_msg_unref(req);
	}
	for (int i = 0; i < 5 && quay_queue_receive(replies, &l, 5 * (int64_t)1000000000) == 0; i++) {
		for (int j = 0; j < 5; j++)
			async_good += quay_msg_correlation_id(l.msg) == ids[j] && num(l.msg) == (100 + j) * 3;
		quay_queue_ack(replies, &l);
		quay_msg_unref(l.msg);
	}
	/* A request that the worker answers too late. */
	quay_msg *rep = NULL;
	int64_t t0 = mono_ns();
	int rc = quay_bus_request(r.bus, "rpc.slow", mk(pool, "slow %d", 7), &rep,
	    (broke("rpc") ? 5000 : 50) * (int64_t)1000000);
	int64_t waited_ms = (mono_ns() - t0) / 1000000;
	if (rep != NULL)
		quay_msg_unref(rep);
	/* Wait until the worker has answered everything (the late reply
	 * included), however slowly this machine runs it. */
	for (int64_t end = mono_ns() + 10 * (int64_t)1000000000; mono_ns() < end; usleep(10000)) {
		struct quay_queue_stats qs;

		quay_queue_stats(r.requests, &qs);
		if (qs.acked == 26)
			break;
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE); /* pairs with rpc_worker's load */
	pthread_join(t, NULL);
	struct quay_bus_counters c;
	quay_bus_counters(r.bus, &c);
	printf("rpc         20 requests answered with their correlation id: %d; 5 to reply-to "
	       "\"replies.desk-7\": %d; slow request: %s after %" PRId64 " ms, late replies %" PRIu64 "\n",
	    good, async_good, quay_strerror(rc), waited_ms, c.late_replies);
	CHECK(good == 20 && async_good == 5, "rpc: %d + %d of 25 replies correct", good, async_good);
	CHECK(rc == -ETIMEDOUT && c.late_replies == 1,
	    "rpc: slow request returned %d, %" PRIu64 " late replies", rc, c.late_replies);
	print_prometheus();
	quay_bus_unbind(b1);
	quay_bus_unbind(b2);
	quay_bus_destroy(r.bus);
	done("rpc-requests", r.requests);
	done("rpc-replies", replies);
}

/* ---- throughput ----------------------------------------------------- */

struct tp {
	quay_queue *q;
	quay_pool *pool;
	int64_t budget_ns;
	int sent, received, dup, done;
	unsigned char *seen;
	int max;
};

static void *
tp_producer(void *arg)
{
	struct tp *t = arg;
	quay_msg *b[64];
	int64_t end = mono_ns() + t->budget_ns;

	while (t->sent < t->max && mono_ns() < end) {
		int n = 0;

		while (n < 64 && t->sent + n < t->max)
			if (quay_msg_new(t->pool, &(int){ t->sent + n }, sizeof(int), &b[n]) == 0)
				n++;
			else
				sched_yield(); /* pool exhausted: the consumer frees */
		for (int left = n; left > 0;) {
			int res[64], k = 0;

			quay_queue_send_batch(t->q, b, (size_t)left, res);
			for (int i = 0; i < left; i++)
				if (res[i] < 0) /* -EAGAIN, full: keep it for the next try */
					b[k++] = b[i];
			if ((left = k) > 0)
				sched_yield(); /* the consumer catches up */
		}
		__atomic_store_n(&t->sent, t->sent + n, __ATOMIC_RELEASE); /* pairs with tp_consumer */
	}
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE); /* pairs with tp_consumer */
	return NULL;
}

static void *
tp_consumer(void *arg)
{
	struct tp *t = arg;
	quay_lease l[64];

	for (;;) {
		size_t n = quay_queue_receive_batch(t->q, l, 64, 1000000);
		for (size_t i = 0; i < n; i++) {
			int v;

			memcpy(&v, quay_msg_body(l[i].msg), sizeof(v));
			t->dup += t->seen[v]++ > 0;
			quay_queue_ack(t->q, &l[i]);
			quay_msg_unref(l[i].msg);
		}
		t->received += (int)n;
		if (n == 0 && __atomic_load_n(&t->done, __ATOMIC_ACQUIRE) && /* pairs with tp_producer */
		    t->received == __atomic_load_n(&t->sent, __ATOMIC_ACQUIRE))
			return NULL;
	}
}

static double
run_tp(quay_queue *q, quay_pool *pool, int max, int *ok)
{
	struct tp t = { .q = q, .pool = pool, .budget_ns = 500000000, .max = max };
	pthread_t a, b;

	t.seen = calloc((size_t)max, 1);
	int64_t t0 = mono_ns();
	pthread_create(&a, NULL, tp_producer, &t);
	pthread_create(&b, NULL, tp_consumer, &t);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	double secs = (double)(mono_ns() - t0) / 1e9;
	*ok = t.dup == 0 && t.received == t.sent && t.sent > 0;
	free(t.seen);
	return t.received / secs;
}

static void
section_throughput(void)
{
	char dir[] = "/tmp/quay-advanced-mq-XXXXXX";
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct quay_wal_opts w = QUAY_WAL_OPTS_INIT;
	quay_pool *pool;
	quay_wal *wal;
	int ok1, ok2;

	if (quay_pool_create(64 << 20, NULL, &pool) != 0 || mkdtemp(dir) == NULL)
		exit(2);
	o.capacity = 8192;
	quay_queue *mem = mkq("bench-memory", &o);
	double r1 = run_tp(mem, pool, 2000000, &ok1);
	done("bench-memory", mem);
	w.sync_mode = QUAY_WAL_INTERVAL; /* survives kill -9; power loss: the last 100 ms */
	if (quay_wal_open(dir, &w, &wal) != 0)
		exit(2);
	o.wal = wal;
	o.pool = pool;
	quay_queue *dur = mkq("bench-durable", &o);
	double r2 = run_tp(dur, pool, 200000, &ok2);
	done("bench-durable", dur);
	quay_wal_close(wal);
	remove_dir(dir);
	quay_pool_destroy(pool);
	printf("throughput  send+receive+ack, 1 producer, 1 consumer, batches of 64, 0.5 s each:\n"
	       "            in memory          %10.0f msg/s  (%.0fx the 10,000 msg/s advertised)\n"
	       "            durable (INTERVAL) %10.0f msg/s  (%.1fx)\n",
	    r1, r1 / 1e4, r2, r2 / 1e4);
	CHECK(ok1 && ok2, "throughput: a message was lost or duplicated");
}

static void
print_table(void)
{
	printf("per-queue   %-14s %8s %8s %8s %8s %7s %7s %6s %7s %8s\n", "queue", "sent", "restored",
	    "received", "acked", "nacked", "retried", "dead", "expired", "redriven");
	for (int i = 0; i < nrows; i++) {
		struct quay_queue_stats *s = &rows[i].s;

		printf("            %-14s %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %7" PRIu64
		       " %7" PRIu64 " %6" PRIu64 " %7" PRIu64 " %8" PRIu64 "\n",
		    rows[i].name, s->sent, s->restored, s->received, s->acked, s->nacked, s->retried,
		    s->dead_lettered, s->ttl_expired, s->redriven_out);
	}
}

int
main(int argc, char **argv)
{
	struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
	quay_pool *fpool, *pool;

	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--break=", 8) == 0)
			broken = argv[i] + 8;
		else if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = (uint32_t)strtoul(argv[i] + 7, NULL, 0);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = (uint32_t)strtoul(argv[++i], NULL, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	section_durable(); /* first: it forks, before any thread exists */
	po.clock = fake_clock;
	if (quay_stats_create(NULL, &reg) != 0 || quay_pool_create(4 << 20, &po, &fpool) != 0 ||
	    quay_pool_create(4 << 20, NULL, &pool) != 0)
		return 2;
	section_priorities(fpool);
	section_ttl(fpool);
	section_backoff(fpool);
	section_redrive(fpool);
	section_rpc(pool);
	section_throughput();
	print_table();
	CHECK(quay_pool_destroy(fpool) == 0 && quay_pool_destroy(pool) == 0, "a message was never unref'd");
	quay_stats_destroy(reg);
	printf("%s\n", failures ? "advanced_mq: BROKEN PROMISES" : "advanced_mq: every check passed");
	return failures ? 1 : 0;
}
