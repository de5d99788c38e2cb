/* SPDX-License-Identifier: MIT */
/*
 * bench_bus: the bus against ZeroMQ inproc PUB/SUB, in one binary and one
 * run. C bodies, registered through bench/shim/quay_bench.h; ZeroMQ
 * through libzmq's C API.
 *
 *   publish_exact_1          one exact subscription; publish a batch of
 *                            256, then drain it with receive_burst (one
 *                            thread: the per-message cost of publish,
 *                            delivery and receive)
 *   publish_exact_1_owned    the same with 256 distinct messages of one
 *                            reference each, handed to the bus and taken
 *                            back by the drain: no reference count
 *                            operation (the bus's own cost)
 *   fanout/N                 N subscriptions matching ("fan.>"); publish
 *                            256, then drain every subscription. Counter
 *                            deliveries/s = messages x N / time
 *   fanout_batch/N           the same, published with one
 *                            quay_bus_publish_batch of 256 per iteration
 *   zmq_fanout/N             the same shape with ZeroMQ: one PUB socket,
 *                            N SUB sockets (prefix "fan"), inproc, HWM
 *                            above the batch, send 256 then drain each SUB
 *                            with ZMQ_DONTWAIT
 *   match_10k_hit            10,000 subscriptions of mixed patterns
 *                            (m.<i>.x, m.*.<i>, m.<i>.>, <i>.*.z);
 *                            publish to 64 subjects that match one each
 *                            (cached), drain every 256: ns per publish
 *   match_10k_miss           the same table, cache saturated first, each
 *                            publish to a subject never seen before
 *   fanout_threads/N         one publisher, N receiver threads sleeping in
 *                            quay_sub_receive (BLOCK policy, capacity 4096);
 *                            2^15 messages per iteration, which ends when
 *                            every receiver counted them all (real time)
 *   zmq_fanout_threads/N     the same with one SUB socket per thread
 *                            (blocking zmq_recv, no HWM)
 *   request_reply            round trip through a responder thread
 *   routed_subs/N            issue 12 peer row: N subscriptions on
 *                            "fan.>", 256 publishes timed, the drain not
 *                            (paused timing): ns per publish
 *   routed_queues/N          the same with N queues bound on "fan.>"
 *                            (first queue gets the message, the others
 *                            a copy): ns per publish, drain (receive +
 *                            ack) not timed
 *   filter_miss/N            N bindings on "f.x", binding i with filter
 *                            "id = <i>"; each message has id = 3, so one
 *                            matches and N - 1 filters miss: ns per
 *                            publish (the slope over N is the cost of a
 *                            miss)
 *   durable_fanout4_bus/M    4 durable queues on one WAL (sync mode M:
 *                            0 SYNC, 2 NONE) bound on "d.x": one publish
 *                            per message (one appendv for the 4 ADDs)
 *   durable_fanout4_sends/M  the peer: the same 4 queues, 4 separate
 *                            quay_queue_send calls of 4 copies
 *
 * (Each registered name carries the BM_ prefix: BM_fanout/4.) Every
 * benchmark counts what arrived and fails with qb_skip_with_error if it is
 * not what was sent (the program then exits 1). A check that fails inside
 * a round with paused parts leaves the loop at once: Google Benchmark
 * aborts on a pause after the skip. Message bodies are 16
 * bytes; the quay messages come from one pool, the publisher's reference
 * is re-taken before each publish (no allocation in the loop).
 *
 * The receiver threads' counts (got) are release increments read with
 * acquire loads by the publisher: when it sees a count, the receiver's
 * unrefs before it are done.
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <quay/bus.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "quay_bench.h"

#define BATCH 256               /* messages per round */
#define THREADED_MSGS (1 << 15) /* messages per iteration, threaded shapes */
#define DUR_BATCH 16            /* messages per round, durable shapes */

static quay_pool *g_pool;
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void
make_pool(void)
{
	if (quay_pool_create((size_t)256 << 20, NULL, &g_pool) != 0)
		abort();
}

/* The pool every message comes from, made on first use. */
static quay_pool *
pool(void)
{
	pthread_once(&g_pool_once, make_pool);
	return g_pool;
}

static quay_msg *
new_msg(uint64_t v)
{
	const uint64_t body[2] = {v, ~v};
	quay_msg *m = NULL;
	if (quay_msg_new(pool(), body, sizeof body, &m) != 0)
		abort();
	return m;
}

static quay_sub *
subscribe(quay_bus *b, const char *pat, size_t cap, enum quay_sub_policy pol)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	o.capacity = cap;
	o.policy = pol;
	o.flags = QUAY_SUB_NO_LATENCY;
	quay_sub *s = NULL;
	if (quay_bus_subscribe(b, pat, &o, &s) != 0)
		abort();
	return s;
}

static size_t
drain(quay_sub *s)
{
	quay_msg *m[64];
	size_t n, total = 0;
	while ((n = quay_sub_receive_burst(s, m, 64)) > 0) {
		for (size_t i = 0; i < n; i++)
			quay_msg_unref(m[i]);
		total += n;
	}
	return total;
}

static void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (p == NULL)
		abort();
	return p;
}

static void
BM_publish_exact_1(qb_state *st, void *arg)
{
	quay_bus *b = NULL;
	uint64_t sent = 0, got = 0;

	(void)arg;
	quay_bus_create(NULL, &b);
	quay_sub *s = subscribe(b, "bench.exact", 1024, QUAY_SUB_BLOCK);
	quay_msg *m = new_msg(1);
	while (qb_keep_running(st)) {
		for (int i = 0; i < BATCH; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "bench.exact", m) != 1) {
				qb_skip_with_error(st, "publish did not deliver");
				break;
			}
		}
		sent += BATCH;
		got += drain(s);
	}
	if (got != sent)
		qb_skip_with_error(st, "lost messages");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	qb_set_items_processed(st, (int64_t)sent);
}

/* publish_exact_1 with BATCH distinct messages of one reference each: a
 * publish hands the publisher's reference to the subscription and the
 * drain takes it back (the received reference is the next round's), so
 * no reference count operation runs: the bus's own cost per message
 * (publish_exact_1 re-publishes one shared message, so it adds a ref CAS
 * per publish and an unref CAS per receive). Each round checks that the
 * same messages came back, in order. */
static void
BM_publish_exact_1_owned(qb_state *st, void *arg)
{
	quay_bus *b = NULL;
	quay_msg *m[BATCH], *orig[BATCH];
	uint64_t sent = 0, got = 0;

	(void)arg;
	quay_bus_create(NULL, &b);
	quay_sub *s = subscribe(b, "bench.exact", 1024, QUAY_SUB_BLOCK);
	for (int i = 0; i < BATCH; i++)
		m[i] = orig[i] = new_msg((uint64_t)i);
	while (qb_keep_running(st)) {
		size_t k = 0, n;
		for (int i = 0; i < BATCH; i++) {
			if (quay_bus_publish(b, "bench.exact", m[i]) != 1) {
				qb_skip_with_error(st, "publish did not deliver");
				goto out;
			}
		}
		sent += BATCH;
		while (k < BATCH && (n = quay_sub_receive_burst(s, m + k, BATCH - k)) > 0)
			k += n;
		got += k;
		if (k != BATCH || memcmp(m, orig, sizeof m) != 0) {
			qb_skip_with_error(st, "lost or reordered messages");
			goto out;
		}
	}
	if (got != sent)
		qb_skip_with_error(st, "lost messages");
	for (int i = 0; i < BATCH; i++)
		quay_msg_unref(orig[i]);
out:
	quay_bus_destroy(b);
	qb_set_items_processed(st, (int64_t)sent);
}

/* ---- fan-out, one thread ------------------------------------------------- */

/* One round: BATCH messages on fan.x.y, each reaching the n subscriptions;
 * false on a wrong result. batch is scratch room for BATCH pointers. */
typedef bool (*publish_round)(quay_bus *b, quay_msg *m, int n, quay_msg **batch);

static bool
round_each(quay_bus *b, quay_msg *m, int n, quay_msg **batch)
{
	(void)batch;
	for (int i = 0; i < BATCH; i++) {
		quay_msg_ref(m);
		if (quay_bus_publish(b, "fan.x.y", m) != n)
			return false;
	}
	return true;
}

/* The same fan-out through quay_bus_publish_batch: BATCH messages per
 * call (one lookup, and each subscription takes 64 at a time with one bulk
 * push). ZeroMQ has no batched send, so its row stays per message. */
static bool
round_batch(quay_bus *b, quay_msg *m, int n, quay_msg **batch)
{
	(void)n;
	for (int i = 0; i < BATCH; i++) {
		quay_msg_ref(m);
		batch[i] = m;
	}
	return quay_bus_publish_batch(b, "fan.x.y", batch, BATCH) == BATCH;
}

/* One thread publishes BATCH messages on fan.x.y per round (arg: how, a
 * publish_round), then drains each of the N subscriptions; every delivery
 * is counted. */
static void
fanout_run(qb_state *st, void *arg)
{
	const publish_round round = *(const publish_round *)arg;
	const int n = (int)qb_range_of(st, 0);
	quay_bus *b = NULL;
	quay_sub **subs = xcalloc((size_t)n, sizeof *subs);
	quay_msg *batch[BATCH];
	uint64_t sent = 0, got = 0;

	quay_bus_create(NULL, &b);
	for (int i = 0; i < n; i++)
		subs[i] = subscribe(b, "fan.>", 1024, QUAY_SUB_BLOCK);
	quay_msg *m = new_msg(1);
	while (qb_keep_running(st)) {
		if (!round(b, m, n, batch)) {
			qb_skip_with_error(st, "a publish did not reach every subscription");
			break;
		}
		sent += BATCH;
		for (int i = 0; i < n; i++)
			got += drain(subs[i]);
	}
	if (got != sent * (uint64_t)n)
		qb_skip_with_error(st, "lost deliveries");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	free(subs);
	qb_set_items_processed(st, (int64_t)sent);
	qb_counter(st, "deliveries/s", (double)got, QB_COUNTER_RATE);
}

static const publish_round k_round_each = round_each;
static const publish_round k_round_batch = round_batch;

/* A ZeroMQ message: subject "fan.x.y" then a 16-byte body. */
#define ZMSG_LEN (7 + 2 * sizeof(uint64_t))

static void
zmsg(char *msg)
{
	const uint64_t body[2] = {1, 2};
	memcpy(msg, "fan.x.y", 7);
	memcpy(msg + 7, body, sizeof body);
}

static void
BM_zmq_fanout(qb_state *st, void *arg)
{
	const int n = (int)qb_range_of(st, 0);
	void *ctx = zmq_ctx_new();
	void *pub = zmq_socket(ctx, ZMQ_PUB);
	void **subs = xcalloc((size_t)n, sizeof *subs);
	bool *joined = xcalloc((size_t)n, sizeof *joined);
	int hwm = 100000;
	char buf[64], msg[ZMSG_LEN];
	uint64_t sent = 0, got = 0;

	(void)arg;
	zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_bind(pub, "inproc://bench-fan");
	for (int i = 0; i < n; i++) {
		subs[i] = zmq_socket(ctx, ZMQ_SUB);
		zmq_setsockopt(subs[i], ZMQ_RCVHWM, &hwm, sizeof hwm);
		zmq_connect(subs[i], "inproc://bench-fan");
		zmq_setsockopt(subs[i], ZMQ_SUBSCRIBE, "fan", 3);
	}
	/* Slow joiners: probe until every SUB has seen one message. */
	for (int left = n, tries = 0; left > 0 && tries < 100000; tries++) {
		zmq_send(pub, "fan.probe", 9, 0);
		for (int i = 0; i < n; i++)
			while (zmq_recv(subs[i], buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
				if (!joined[i]) {
					joined[i] = true;
					left--;
				}
	}
	zmsg(msg);
	while (qb_keep_running(st)) {
		for (int i = 0; i < BATCH; i++)
			if (zmq_send(pub, msg, sizeof msg, 0) != (int)sizeof msg) {
				qb_skip_with_error(st, "zmq_send failed");
				break;
			}
		sent += BATCH;
		for (int s = 0; s < n; s++) {
			for (int k = 0; k < BATCH; k++) {
				int r = zmq_recv(subs[s], buf, sizeof buf, ZMQ_DONTWAIT);
				if (r < 0) {
					/* Delivery is asynchronous inside zmq: wait for it. */
					r = zmq_recv(subs[s], buf, sizeof buf, 0);
				}
				if (r == (int)sizeof msg)
					got++;
			}
		}
	}
	if (got != sent * (uint64_t)n)
		qb_skip_with_error(st, "zmq lost deliveries");
	for (int i = 0; i < n; i++)
		zmq_close(subs[i]);
	zmq_close(pub);
	zmq_ctx_term(ctx);
	free(subs);
	free(joined);
	qb_set_items_processed(st, (int64_t)sent);
	qb_counter(st, "deliveries/s", (double)got, QB_COUNTER_RATE);
}

/* ---- 10,000 subscriptions ------------------------------------------------ */

#define TABLE_SUBS 10000

/* 10,000 subscriptions of four pattern shapes. */
struct table10k {
	quay_bus *b;
	quay_sub **subs;
};

static void
table_init(struct table10k *t)
{
	struct quay_bus_opts o = QUAY_BUS_OPTS_INIT;
	char pat[64];

	t->b = NULL;
	quay_bus_create(&o, &t->b);
	t->subs = xcalloc(TABLE_SUBS, sizeof *t->subs);
	for (int i = 0; i < TABLE_SUBS; i++) {
		switch (i % 4) {
		case 0: snprintf(pat, sizeof pat, "m.%d.x", i); break;
		case 1: snprintf(pat, sizeof pat, "m.*.%d", i); break;
		case 2: snprintf(pat, sizeof pat, "m.%d.>", i); break;
		default: snprintf(pat, sizeof pat, "%d.*.z", i); break;
		}
		t->subs[i] = subscribe(t->b, pat, 1024, QUAY_SUB_DROP_NEWEST);
	}
}

static void
table_fini(struct table10k *t)
{
	quay_bus_destroy(t->b);
	free(t->subs);
}

static void
BM_match_10k_hit(qb_state *st, void *arg)
{
	struct table10k t;
	char subj[64][24];
	quay_sub *target[64];
	uint64_t sent = 0, got = 0;
	size_t k = 0;

	(void)arg;
	table_init(&t);
	for (int j = 0; j < 64; j++) {
		const int i = j * 152; /* a multiple of 4: "m.<i>.x" matches one subscription */
		snprintf(subj[j], sizeof subj[j], "m.%d.x", i);
		target[j] = t.subs[i];
	}
	quay_msg *m = new_msg(1);
	while (qb_keep_running(st)) {
		for (int i = 0; i < BATCH; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(t.b, subj[k], m) != 1) {
				qb_skip_with_error(st, "publish did not deliver");
				break;
			}
			k = (k + 1) & 63;
		}
		sent += BATCH;
		for (int j = 0; j < 64; j++)
			got += drain(target[j]);
	}
	if (got != sent)
		qb_skip_with_error(st, "lost messages");
	quay_msg_unref(m);
	qb_set_items_processed(st, (int64_t)sent);
	table_fini(&t);
}

static void
BM_match_10k_miss(qb_state *st, void *arg)
{
	struct table10k t;
	char s[64];
	uint64_t sent = 0, got = 0, expect = 0, seq = 0;

	(void)arg;
	table_init(&t);
	quay_msg *m = new_msg(1);
	/* Saturate the cache of this table version with subjects never used again. */
	for (int i = 0; i < 40000; i++) {
		snprintf(s, sizeof s, "warm.%d", i);
		quay_msg_ref(m);
		quay_bus_publish(t.b, s, m);
	}
	while (qb_keep_running(st)) {
		for (int i = 0; i < BATCH; i++, seq++) {
			/* m.<j>.x with j up to 40,000: 1 target when j < 10,000 and
			 * j % 4 == 0 (m.<j>.x), or j % 4 == 2 (m.<j>.>), else 0;
			 * the fourth token varies so every subject is new. */
			const uint64_t j = seq % 40000;
			snprintf(s, sizeof s, "m.%llu.x.%llu", (unsigned long long)j,
			    (unsigned long long)(seq / 40000));
			quay_msg_ref(m);
			const int r = quay_bus_publish(t.b, s, m);
			const int want = (j < 10000 && j % 4 == 2) ? 1 : 0;
			if (r != want) {
				qb_skip_with_error(st, "wrong match count");
				goto out; /* not through the pause: see the top */
			}
			expect += (uint64_t)want;
		}
		sent += BATCH;
		qb_pause_timing(st);
		for (size_t i = 2; i < TABLE_SUBS; i += 4)
			got += drain(t.subs[i]);
		qb_resume_timing(st);
	}
	if (got != expect)
		qb_skip_with_error(st, "lost messages");
out:
	quay_msg_unref(m);
	qb_set_items_processed(st, (int64_t)sent);
	table_fini(&t);
}

/* ---- request / reply ------------------------------------------------------ */

struct responder {
	quay_bus *b;
	quay_sub *svc;
};

static void *
respond(void *arg)
{
	const struct responder *r = arg;
	quay_msg *req;

	while (quay_sub_receive(r->svc, &req, -1) == 0) {
		quay_msg *rep = new_msg(quay_msg_id(req));
		if (quay_bus_reply(r->b, req, rep) < 0)
			quay_msg_unref(rep);
		quay_msg_unref(req);
	}
	return NULL;
}

static void
BM_request_reply(qb_state *st, void *arg)
{
	struct responder r = {NULL, NULL};
	pthread_t th;
	uint64_t ok = 0;

	(void)arg;
	quay_bus_create(NULL, &r.b);
	r.svc = subscribe(r.b, "svc.echo", 1024, QUAY_SUB_BLOCK);
	if (pthread_create(&th, NULL, respond, &r) != 0)
		abort();
	while (qb_keep_running(st)) {
		quay_msg *req = new_msg(ok), *rep = NULL;
		const uint64_t id = quay_msg_id(req);
		if (quay_bus_request(r.b, "svc.echo", req, &rep, 5000000000LL) != 0) {
			qb_skip_with_error(st, "request failed");
			break;
		}
		uint64_t v;
		memcpy(&v, quay_msg_body(rep), sizeof v);
		if (v != id || quay_msg_correlation_id(rep) != id) {
			qb_skip_with_error(st, "wrong reply");
			quay_msg_unref(rep);
			break;
		}
		quay_msg_unref(rep);
		ok++;
	}
	quay_bus_unsubscribe(r.svc);
	pthread_join(th, NULL);
	quay_bus_destroy(r.b);
	qb_set_items_processed(st, (int64_t)ok);
}

/* ---- fan-out to threads --------------------------------------------------- */

/* Threaded shape: one publisher (the benchmark thread), N receiver threads
 * that sleep in a blocking receive. THREADED_MSGS per iteration; the
 * iteration ends when every receiver has counted all of them. */
static void
wait_counts(const uint64_t *got, int n, uint64_t want)
{
	for (int i = 0; i < n; i++)
		while (__atomic_load_n(&got[i], __ATOMIC_ACQUIRE) < want) /* pairs with the receivers' release */
			sched_yield();
}

struct receiver {
	quay_sub *sub; /* fanout_threads */
	void *ctx;     /* zmq_fanout_threads */
	uint64_t *got; /* this receiver's count */
	int *joined;   /* zmq: set once the probe arrived */
};

static void *
receive_quay(void *arg)
{
	const struct receiver *r = arg;
	quay_msg *m[64];

	for (;;) {
		size_t k = quay_sub_receive_burst(r->sub, m, 64);
		if (k == 0) {
			if (quay_sub_receive(r->sub, &m[0], -1) != 0)
				break;
			k = 1;
		}
		for (size_t j = 0; j < k; j++)
			quay_msg_unref(m[j]);
		__atomic_fetch_add(r->got, k, __ATOMIC_RELEASE); /* pairs with the acquire load in wait_counts */
	}
	return NULL;
}

static void
BM_fanout_threads(qb_state *st, void *arg)
{
	const int n = (int)qb_range_of(st, 0);
	quay_bus *b = NULL;
	quay_sub **subs = xcalloc((size_t)n, sizeof *subs);
	uint64_t *got = xcalloc((size_t)n, sizeof *got);
	struct receiver *rs = xcalloc((size_t)n, sizeof *rs);
	pthread_t *th = xcalloc((size_t)n, sizeof *th);
	uint64_t sent = 0;

	(void)arg;
	quay_bus_create(NULL, &b);
	for (int i = 0; i < n; i++) {
		struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
		o.policy = QUAY_SUB_BLOCK; /* lossless (not the default) */
		o.capacity = 4096;
		o.block_timeout_ns = -1;
		o.flags = QUAY_SUB_NO_LATENCY;
		quay_bus_subscribe(b, "fan.>", &o, &subs[i]);
	}
	for (int i = 0; i < n; i++) {
		rs[i] = (struct receiver){.sub = subs[i], .got = &got[i]};
		if (pthread_create(&th[i], NULL, receive_quay, &rs[i]) != 0)
			abort();
	}
	quay_msg *m = new_msg(1);
	while (qb_keep_running(st)) {
		for (uint64_t i = 0; i < THREADED_MSGS; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "fan.x.y", m) != n) {
				qb_skip_with_error(st, "publish did not reach every subscription");
				break;
			}
		}
		sent += THREADED_MSGS;
		wait_counts(got, n, sent);
	}
	for (int i = 0; i < n; i++)
		quay_bus_unsubscribe(subs[i]);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	uint64_t total = 0;
	for (int i = 0; i < n; i++)
		total += got[i]; /* after the join */
	if (total != sent * (uint64_t)n)
		qb_skip_with_error(st, "lost deliveries");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	free(subs);
	free(got);
	free(rs);
	free(th);
	qb_set_items_processed(st, (int64_t)sent);
	qb_counter(st, "deliveries/s", (double)total, QB_COUNTER_RATE);
}

static void *
receive_zmq(void *arg)
{
	const struct receiver *r = arg;
	void *s = zmq_socket(r->ctx, ZMQ_SUB);
	int h = 0;
	char buf[64];

	zmq_setsockopt(s, ZMQ_RCVHWM, &h, sizeof h);
	zmq_connect(s, "inproc://bench-fan-threads");
	zmq_setsockopt(s, ZMQ_SUBSCRIBE, "fan", 3);
	for (;;) {
		const int n = zmq_recv(s, buf, sizeof buf, 0);
		if (n < 0)
			break;
		if (n == 9 && memcmp(buf, "fan.probe", 9) == 0) {
			__atomic_store_n(r->joined, 1,
			    __ATOMIC_RELEASE); /* pairs with the acquire load in BM_zmq_fanout_threads */
			continue;
		}
		if (n == 8 && memcmp(buf, "fan.stop", 8) == 0)
			break;
		__atomic_fetch_add(r->got, 1, __ATOMIC_RELEASE); /* pairs with the acquire load in wait_counts */
	}
	zmq_close(s);
	return NULL;
}

static void
BM_zmq_fanout_threads(qb_state *st, void *arg)
{
	const int n = (int)qb_range_of(st, 0);
	void *ctx = zmq_ctx_new();
	void *pub = zmq_socket(ctx, ZMQ_PUB);
	int hwm = 0; /* no limit: the receivers drain every iteration */
	uint64_t *got = xcalloc((size_t)n, sizeof *got);
	int *joined = xcalloc((size_t)n, sizeof *joined);
	struct receiver *rs = xcalloc((size_t)n, sizeof *rs);
	pthread_t *th = xcalloc((size_t)n, sizeof *th);
	char msg[ZMSG_LEN];
	uint64_t sent = 0;

	(void)arg;
	zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_bind(pub, "inproc://bench-fan-threads");
	for (int i = 0; i < n; i++) {
		rs[i] = (struct receiver){.ctx = ctx, .got = &got[i], .joined = &joined[i]};
		if (pthread_create(&th[i], NULL, receive_zmq, &rs[i]) != 0)
			abort();
	}
	for (bool all = false; !all;) {
		const struct timespec one_ms = {0, 1000 * 1000};
		zmq_send(pub, "fan.probe", 9, 0);
		nanosleep(&one_ms, NULL);
		all = true;
		for (int i = 0; i < n; i++)
			all =
			    all && __atomic_load_n(&joined[i], __ATOMIC_ACQUIRE); /* pairs with receive_zmq's release */
	}
	zmsg(msg);
	while (qb_keep_running(st)) {
		for (uint64_t i = 0; i < THREADED_MSGS; i++)
			if (zmq_send(pub, msg, sizeof msg, 0) != (int)sizeof msg) {
				qb_skip_with_error(st, "zmq_send failed");
				break;
			}
		sent += THREADED_MSGS;
		wait_counts(got, n, sent);
	}
	zmq_send(pub, "fan.stop", 8, 0);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	uint64_t total = 0;
	for (int i = 0; i < n; i++)
		total += got[i]; /* after the join */
	if (total != sent * (uint64_t)n)
		qb_skip_with_error(st, "zmq lost deliveries");
	zmq_close(pub);
	zmq_ctx_term(ctx);
	free(got);
	free(joined);
	free(rs);
	free(th);
	qb_set_items_processed(st, (int64_t)sent);
	qb_counter(st, "deliveries/s", (double)total, QB_COUNTER_RATE);
}

/* ---- routing (issue 12) --------------------------------------------------- */

static quay_queue *
bench_queue(const char *name, size_t cap)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;
	o.name = name;
	o.capacity = cap;
	if (quay_queue_create(&o, &q) != 0)
		abort();
	return q;
}

static size_t
qdrain(quay_queue *q)
{
	quay_lease l[64];
	size_t n, total = 0;
	while ((n = quay_queue_receive_batch(q, l, 64, 0)) > 0) {
		for (size_t i = 0; i < n; i++) {
			(void)quay_queue_ack(q, &l[i]);
			quay_msg_unref(l[i].msg);
		}
		total += n;
	}
	return total;
}

static void
BM_routed_subs(qb_state *st, void *arg)
{
	const int n = (int)qb_range_of(st, 0);
	quay_bus *b = NULL;
	quay_sub **subs = xcalloc((size_t)n, sizeof *subs);
	uint64_t sent = 0, got = 0;

	(void)arg;
	quay_bus_create(NULL, &b);
	for (int i = 0; i < n; i++)
		subs[i] = subscribe(b, "fan.>", 1024, QUAY_SUB_REJECT);
	quay_msg *m = new_msg(1);
	while (qb_keep_running(st)) {
		for (int i = 0; i < BATCH; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "fan.x.y", m) != n) {
				qb_skip_with_error(st, "publish did not reach every subscription");
				goto out; /* not through the pause: see the top */
			}
		}
		sent += BATCH;
		qb_pause_timing(st);
		for (int i = 0; i < n; i++)
			got += drain(subs[i]);
		qb_resume_timing(st);
	}
	if (got != sent * (uint64_t)n)
		qb_skip_with_error(st, "lost deliveries");
out:
	quay_msg_unref(m);
	quay_bus_destroy(b);
	free(subs);
	qb_set_items_processed(st, (int64_t)sent);
}

static void
BM_routed_queues(qb_state *st, void *arg)
{
	const int n = (int)qb_range_of(st, 0);
	quay_bus *b = NULL;
	quay_queue **qs = xcalloc((size_t)n, sizeof *qs);
	quay_binding **bs = xcalloc((size_t)n, sizeof *bs);
	quay_msg *ms[BATCH];
	uint64_t sent = 0, got = 0;

	(void)arg;
	quay_bus_create(NULL, &b);
	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof name, "rq%d", i);
		qs[i] = bench_queue(name, 1024);
		if (quay_bus_bind(b, "fan.>", qs[i], NULL, &bs[i]) != 0)
			abort();
	}
	while (qb_keep_running(st)) {
		/* Fresh messages: a queue keeps its own state in the message it
		 * holds (the first queue takes the published one). */
		qb_pause_timing(st);
		for (int i = 0; i < BATCH; i++)
			ms[i] = new_msg(1);
		qb_resume_timing(st);
		for (int i = 0; i < BATCH; i++) {
			if (quay_bus_publish(b, "fan.x.y", ms[i]) != n) {
				qb_skip_with_error(st, "publish did not reach every queue");
				goto out; /* not through the pause: see the top */
			}
		}
		sent += BATCH;
		qb_pause_timing(st);
		for (int i = 0; i < n; i++)
			got += qdrain(qs[i]);
		qb_resume_timing(st);
	}
	if (got != sent * (uint64_t)n)
		qb_skip_with_error(st, "lost deliveries");
out:
	for (int i = 0; i < n; i++)
		quay_bus_unbind(bs[i]);
	quay_bus_destroy(b);
	for (int i = 0; i < n; i++)
		quay_queue_destroy(qs[i]);
	free(qs);
	free(bs);
	qb_set_items_processed(st, (int64_t)sent);
}

static void
BM_filter_miss(qb_state *st, void *arg)
{
	const int n = (int)qb_range_of(st, 0);
	quay_bus *b = NULL;
	quay_queue **qs = xcalloc((size_t)n, sizeof *qs);
	quay_binding **bs = xcalloc((size_t)n, sizeof *bs);
	quay_msg *ms[BATCH];
	uint64_t sent = 0, got = 0;

	(void)arg;
	quay_bus_create(NULL, &b);
	for (int i = 0; i < n; i++) {
		char name[32], filter[32];
		struct quay_bind_opts o = QUAY_BIND_OPTS_INIT;
		snprintf(name, sizeof name, "fq%d", i);
		snprintf(filter, sizeof filter, "id = %d", i);
		o.filter = filter;
		qs[i] = bench_queue(name, 1024);
		if (quay_bus_bind(b, "f.x", qs[i], &o, &bs[i]) != 0)
			abort();
	}
	while (qb_keep_running(st)) {
		qb_pause_timing(st);
		for (int i = 0; i < BATCH; i++) {
			ms[i] = new_msg(3);
			quay_msg_set_header_str(ms[i], "id", "3");
		}
		qb_resume_timing(st);
		for (int i = 0; i < BATCH; i++)
			if (quay_bus_publish(b, "f.x", ms[i]) != 1) {
				qb_skip_with_error(st, "publish did not reach exactly one queue");
				goto out; /* not through the pause: see the top */
			}
		sent += BATCH;
		qb_pause_timing(st);
		got += qdrain(qs[3]);
		qb_resume_timing(st);
	}
	if (got != sent)
		qb_skip_with_error(st, "lost deliveries");
out:
	for (int i = 0; i < n; i++)
		quay_bus_unbind(bs[i]);
	quay_bus_destroy(b);
	for (int i = 0; i < n; i++)
		quay_queue_destroy(qs[i]);
	free(qs);
	free(bs);
	qb_set_items_processed(st, (int64_t)sent);
}

/* ---- 4 durable queues on one WAL ------------------------------------------ */

struct durable4 {
	char dir[64];
	quay_wal *w;
	quay_queue *q[4];
};

static void
durable4_open(struct durable4 *d, unsigned mode)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;

	memset(d, 0, sizeof *d);
	snprintf(d->dir, sizeof d->dir, "/tmp/quay-bench-route-XXXXXX");
	if (mkdtemp(d->dir) == NULL)
		abort();
	wo.sync_mode = mode;
	if (quay_wal_open(d->dir, &wo, &d->w) != 0)
		abort();
	for (int i = 0; i < 4; i++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		char name[16];
		snprintf(name, sizeof name, "dq%d", i);
		o.name = name;
		o.capacity = 4096;
		o.wal = d->w;
		o.pool = pool();
		if (quay_queue_create(&o, &d->q[i]) != 0)
			abort();
	}
}

static void
durable4_close(struct durable4 *d)
{
	char cmd[96];

	for (int i = 0; i < 4; i++)
		quay_queue_destroy(d->q[i]);
	quay_wal_close(d->w);
	snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", d->dir);
}

static size_t
durable4_drain(struct durable4 *d)
{
	size_t n = 0;
	for (int i = 0; i < 4; i++)
		n += qdrain(d->q[i]);
	return n;
}

static void
BM_durable_fanout4_bus(qb_state *st, void *arg)
{
	struct durable4 d;
	quay_bus *b = NULL;
	quay_binding *bs[4];
	quay_msg *ms[DUR_BATCH];
	uint64_t sent = 0, got = 0;

	(void)arg;
	durable4_open(&d, (unsigned)qb_range_of(st, 0));
	quay_bus_create(NULL, &b);
	for (int i = 0; i < 4; i++)
		if (quay_bus_bind(b, "d.x", d.q[i], NULL, &bs[i]) != 0)
			abort();
	while (qb_keep_running(st)) {
		qb_pause_timing(st);
		for (int i = 0; i < DUR_BATCH; i++)
			ms[i] = new_msg(1);
		qb_resume_timing(st);
		for (int i = 0; i < DUR_BATCH; i++)
			if (quay_bus_publish(b, "d.x", ms[i]) != 4) {
				qb_skip_with_error(st, "publish did not reach the 4 durable queues");
				goto out; /* not through the pause: see the top */
			}
		sent += DUR_BATCH;
		qb_pause_timing(st);
		got += durable4_drain(&d);
		qb_resume_timing(st);
	}
	if (got != sent * 4)
		qb_skip_with_error(st, "lost deliveries");
out:
	for (int i = 0; i < 4; i++)
		quay_bus_unbind(bs[i]);
	quay_bus_destroy(b);
	qb_set_items_processed(st, (int64_t)sent);
	durable4_close(&d);
}

static void
BM_durable_fanout4_sends(qb_state *st, void *arg)
{
	struct durable4 d;
	quay_msg *ms[DUR_BATCH * 4];
	uint64_t sent = 0, got = 0;

	(void)arg;
	durable4_open(&d, (unsigned)qb_range_of(st, 0));
	while (qb_keep_running(st)) {
		qb_pause_timing(st);
		for (int i = 0; i < DUR_BATCH * 4; i++)
			ms[i] = new_msg(1);
		qb_resume_timing(st);
		for (int i = 0; i < DUR_BATCH * 4; i++)
			if (quay_queue_send(d.q[i % 4], ms[i]) != 0) {
				qb_skip_with_error(st, "send refused");
				goto out; /* not through the pause: see the top */
			}
		sent += DUR_BATCH;
		qb_pause_timing(st);
		got += durable4_drain(&d);
		qb_resume_timing(st);
	}
	if (got != sent * 4)
		qb_skip_with_error(st, "lost deliveries");
out:
	qb_set_items_processed(st, (int64_t)sent);
	durable4_close(&d);
}

/* ---- registration ----------------------------------------------------------- */

/* name/<ns[0]>, name/<ns[1]>, ...: one row per argument. */
static qb_bench *
reg_n(const char *name, qb_fn fn, const void *arg, const int64_t *ns, size_t k)
{
	qb_bench *b = qb_register(name, fn, (void *)arg);
	for (size_t i = 0; i < k; i++)
		qb_arg(b, ns[i]);
	return b;
}

int
main(int argc, char **argv)
{
	static const int64_t fan[] = {1, 4, 16, 64}, two[] = {1, 4}, routed[] = {1, 4, 16}, filters[] = {10, 100, 1000},
	                     modes[] = {QUAY_WAL_SYNC, QUAY_WAL_NONE};

	/* The order of the C++ original's BENCHMARK lines: the list and the
	 * run order stay what they were. */
	qb_register("BM_publish_exact_1", BM_publish_exact_1, NULL);
	reg_n("BM_fanout", fanout_run, &k_round_each, fan, 4);
	reg_n("BM_fanout_batch", fanout_run, &k_round_batch, fan, 4);
	reg_n("BM_zmq_fanout", BM_zmq_fanout, NULL, fan, 4);
	qb_register("BM_match_10k_hit", BM_match_10k_hit, NULL);
	qb_register("BM_match_10k_miss", BM_match_10k_miss, NULL);
	qb_real_time(reg_n("BM_fanout_threads", BM_fanout_threads, NULL, two, 2));
	qb_real_time(reg_n("BM_zmq_fanout_threads", BM_zmq_fanout_threads, NULL, two, 2));
	qb_real_time(qb_register("BM_request_reply", BM_request_reply, NULL));
	reg_n("BM_routed_subs", BM_routed_subs, NULL, routed, 3);
	reg_n("BM_routed_queues", BM_routed_queues, NULL, routed, 3);
	reg_n("BM_filter_miss", BM_filter_miss, NULL, filters, 3);
	qb_real_time(reg_n("BM_durable_fanout4_bus", BM_durable_fanout4_bus, NULL, modes, 2));
	qb_real_time(reg_n("BM_durable_fanout4_sends", BM_durable_fanout4_sends, NULL, modes, 2));
	qb_register("BM_publish_exact_1_owned", BM_publish_exact_1_owned, NULL);
	return qb_main(argc, argv);
}
