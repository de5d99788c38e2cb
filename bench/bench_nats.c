/* SPDX-License-Identifier: MIT */
/*
 * bench_nats: what the NATS module costs, against plain libnats calls, in
 * one binary and one run, through a nats-server this program starts on
 * 127.0.0.1 (JetStream on, store in /tmp; tests/nats/nats_server.h). C
 * bodies, registered through bench/shim/quay_bench.h.
 *
 *   publish/plain    natsConnection_Publish of a 16-byte body, N times,
 *                    until a subscriber (another connection) counted N
 *   publish/bridge/direct:0
 *                    quay_msg_new + quay_bus_publish on an exported subject
 *                    (bridge thread -> NATS), until the same subscriber
 *                    counted N: the bridge's whole path
 *   publish/bridge/direct:1
 *                    the same with QUAY_NATS_DIRECT (published to NATS on
 *                    the publishing thread, from the bus's tap)
 *   rr/plain         natsConnection_Request to a plain responder (one
 *                    round trip per iteration)
 *   rr/bridge        quay_bus_request on an exported subject, the same
 *                    plain responder; the reply comes back through the
 *                    handle's reply subscription into the bus (direct:0
 *                    bridge thread, direct:1 QUAY_NATS_DIRECT)
 *   rr/import        natsConnection_Request answered by a local quay
 *                    responder (import -> bus -> quay_bus_reply -> reply
 *                    bridge -> NATS)
 *   jsq/W:w          JetStream queue: one producer quay_nats_queue_send
 *                    (each acknowledged by the stream) while w workers,
 *                    each on its own connection, receive + ack (AckSync)
 *                    QUAY_BENCH_JS_MSGS (default 4000) messages
 *   localq/W:w       the in-process quay_queue: send / receive + ack of the
 *                    same number of messages, w consumers
 *                    Both time from before the workers start to the last
 *                    ack (not to the last join: a worker idle in its
 *                    100 ms receive then would count its timeout).
 *
 * N is QUAY_BENCH_MSGS (default 200000). Every run checks its count (and
 * the replies' bodies); a mismatch, or a send that fails, ends it with
 * qb_skip_with_error and the program exits 1.
 *
 * The counts shared between threads (messages a subscriber counted,
 * leases acked, the stop flag of the queue workers) are relaxed atomics:
 * each is a count or a flag that only ends a loop, no data is published
 * through it, and the main thread reads the final values after the joins
 * (or, for the subscriber's count, polls it until it is complete).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include <quay/bus.h>
#include <quay/msg.h>
#include <quay/nats.h>
#include <quay/pool.h>
#include <quay/queue.h>

#include "nats_server.h"
#include "quay_bench.h"

#define MAX_WORKERS 8

static const char *g_url;
static quay_pool *g_pool;
static uint64_t g_pub_msgs = 200000;
static uint64_t g_js_msgs = 4000;

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Messages a subscriber received (libnats' delivery thread counts). */
struct counter {
	uint64_t n;
};

static void
count_cb(natsConnection *nc, natsSubscription *s, natsMsg *m, void *c)
{
	(void)nc;
	(void)s;
	__atomic_fetch_add(&((struct counter *)c)->n, 1, __ATOMIC_RELAXED); /* a count: see the top */
	natsMsg_Destroy(m);
}

static void
echo_cb(natsConnection *nc, natsSubscription *s, natsMsg *m, void *arg)
{
	(void)s;
	(void)arg;
	if (natsMsg_GetReply(m) != NULL)
		natsConnection_Publish(nc, natsMsg_GetReply(m), natsMsg_GetData(m), natsMsg_GetDataLength(m));
	natsMsg_Destroy(m);
}

static quay_nats *
connect_quay(unsigned flags)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *n = NULL;

	o.flags = flags;
	o.urls = &g_url;
	o.nurls = 1;
	o.export_capacity = 65536;
	if (quay_nats_connect(&o, &n) != 0)
		abort();
	return n;
}

/* CPU time of the whole process (every thread: the bridge's, libnats's),
 * in ns. A wall-clock rate on a loaded two-core machine mostly measures
 * the scheduler; the CPU spent per message is the cost the module adds. */
static double
proc_cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
	    (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

static void
cpu_per(qb_state *st, double cpu0, double items)
{
	qb_counter(st, "cpu_us_per_msg", (proc_cpu_ns() - cpu0) / 1e3 / items, QB_COUNTER_DEFAULT);
}

/* Waits up to 3 s for c to reach want; true if it is exactly want. */
static bool
wait_count(struct counter *c, uint64_t want)
{
	const struct timespec us100 = {0, 100 * 1000};
	for (int i = 0; i < 30000 && __atomic_load_n(&c->n, __ATOMIC_RELAXED) < want; i++) /* a count */
		nanosleep(&us100, NULL);
	return __atomic_load_n(&c->n, __ATOMIC_RELAXED) == want; /* a count */
}

static void
publish_plain(qb_state *st, void *arg)
{
	natsConnection *pub, *sub;
	natsSubscription *s;
	struct counter c = {0};

	(void)arg;
	natsConnection_ConnectTo(&pub, g_url);
	natsConnection_ConnectTo(&sub, g_url);
	natsConnection_Subscribe(&s, sub, "bench.pub", count_cb, &c);
	natsSubscription_SetPendingLimits(s, -1, -1);
	natsConnection_Flush(sub);
	const double cpu0 = proc_cpu_ns();
	while (qb_keep_running(st)) {
		__atomic_store_n(&c.n, 0, __ATOMIC_RELAXED); /* a count; the subscriber is idle here */
		const double t0 = now_s();
		for (uint64_t i = 0; i < g_pub_msgs; i++)
			natsConnection_Publish(pub, "bench.pub", "0123456789abcdef", 16);
		natsConnection_Flush(pub);
		if (!wait_count(&c, g_pub_msgs)) {
			qb_skip_with_error(st, "plain: count mismatch");
			goto out;
		}
		qb_set_iteration_time(st, now_s() - t0);
	}
	cpu_per(st, cpu0, (double)(qb_iterations_done(st) * g_pub_msgs));
	qb_set_items_processed(st, (int64_t)(qb_iterations_done(st) * g_pub_msgs));
out:
	natsSubscription_Destroy(s);
	natsConnection_Destroy(pub);
	natsConnection_Destroy(sub);
}

static void
publish_bridge(qb_state *st, void *arg)
{
	natsConnection *sub;
	natsSubscription *s;
	quay_nats *n = connect_quay((unsigned)qb_range_of(st, 0));
	quay_bus *bus;
	struct counter c = {0};

	(void)arg;
	quay_bus_create(NULL, &bus);
	quay_nats_export(n, bus, "bench.pub");
	natsConnection_ConnectTo(&sub, g_url);
	natsConnection_Subscribe(&s, sub, "bench.pub", count_cb, &c);
	natsSubscription_SetPendingLimits(s, -1, -1);
	natsConnection_Flush(sub);
	const double cpu0 = proc_cpu_ns();
	while (qb_keep_running(st)) {
		__atomic_store_n(&c.n, 0, __ATOMIC_RELAXED); /* a count; the subscriber is idle here */
		const double t0 = now_s();
		for (uint64_t i = 0; i < g_pub_msgs; i++) {
			quay_msg *m;
			while (quay_msg_new(g_pool, "0123456789abcdef", 16, &m) != 0)
				sched_yield();
			if (quay_bus_publish(bus, "bench.pub", m) != 1) {
				qb_skip_with_error(st, "bridge: publish refused");
				goto out;
			}
		}
		if (!wait_count(&c, g_pub_msgs)) {
			qb_skip_with_error(st, "bridge: count mismatch");
			goto out;
		}
		qb_set_iteration_time(st, now_s() - t0);
	}
	cpu_per(st, cpu0, (double)(qb_iterations_done(st) * g_pub_msgs));
	qb_set_items_processed(st, (int64_t)(qb_iterations_done(st) * g_pub_msgs));
out:
	quay_nats_close(n);
	quay_bus_destroy(bus);
	natsSubscription_Destroy(s);
	natsConnection_Destroy(sub);
}

static void
rr_plain(qb_state *st, void *arg)
{
	natsConnection *cli, *srv;
	natsSubscription *s;

	(void)arg;
	natsConnection_ConnectTo(&cli, g_url);
	natsConnection_ConnectTo(&srv, g_url);
	natsConnection_Subscribe(&s, srv, "bench.rr", echo_cb, NULL);
	natsConnection_Flush(srv);
	const double cpu0 = proc_cpu_ns();
	while (qb_keep_running(st)) {
		natsMsg *r = NULL;
		if (natsConnection_Request(&r, cli, "bench.rr", "ping", 4, 5000) != NATS_OK ||
		    natsMsg_GetDataLength(r) != 4) {
			natsMsg_Destroy(r);
			qb_skip_with_error(st, "plain request failed");
			goto out;
		}
		natsMsg_Destroy(r);
	}
	cpu_per(st, cpu0, (double)qb_iterations_done(st));
out:
	natsSubscription_Destroy(s);
	natsConnection_Destroy(cli);
	natsConnection_Destroy(srv);
}

static void
rr_bridge(qb_state *st, void *arg)
{
	natsConnection *srv;
	natsSubscription *s;
	quay_nats *n = connect_quay((unsigned)qb_range_of(st, 0));
	quay_bus *bus;

	(void)arg;
	quay_bus_create(NULL, &bus);
	quay_nats_export(n, bus, "bench.rr");
	natsConnection_ConnectTo(&srv, g_url);
	natsConnection_Subscribe(&s, srv, "bench.rr", echo_cb, NULL);
	natsConnection_Flush(srv);
	const double cpu0 = proc_cpu_ns();
	while (qb_keep_running(st)) {
		quay_msg *req, *rep;
		int rc = quay_msg_new(g_pool, "ping", 4, &req);
		if (rc != 0) {
			qb_skip_with_errorf(st, "quay_msg_new: %s", quay_strerror(rc));
			goto out;
		}
		if (quay_bus_request(bus, "bench.rr", req, &rep, 5000000000) != 0 || quay_msg_body_len(rep) != 4) {
			qb_skip_with_error(st, "bridged request failed");
			goto out;
		}
		quay_msg_unref(rep);
	}
	cpu_per(st, cpu0, (double)qb_iterations_done(st));
out:
	quay_nats_close(n);
	quay_bus_destroy(bus);
	natsSubscription_Destroy(s);
	natsConnection_Destroy(srv);
}

/* rr_import's quay responder: echoes each request until told to stop.
 * It is stopped by a flag and a bounded receive, joined, and only then is
 * its subscription dropped: a receive on a subscription that
 * quay_bus_unsubscribe() has freed is not allowed (quay/bus.h). */
struct responder {
	quay_bus *bus;
	quay_sub *sub;
	bool stop; /* relaxed: only ends the loop, see the top */
};

static void *
responder_main(void *arg)
{
	struct responder *r = arg;
	quay_msg *m;
	int rc;
	while ((rc = quay_sub_receive(r->sub, &m, 10000000)) == 0 || rc == -ETIMEDOUT) {
		if (rc != 0) {
			if (__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) /* a flag */
				break;
			continue;
		}
		quay_msg *rep;
		if (quay_msg_new(g_pool, quay_msg_body(m), quay_msg_body_len(m), &rep) == 0)
			quay_bus_reply(r->bus, m, rep); /* else no reply: the request fails */
		quay_msg_unref(m);
	}
	return NULL;
}

static void
rr_import(qb_state *st, void *arg)
{
	natsConnection *cli;
	quay_nats *n = connect_quay((unsigned)qb_range_of(st, 0));
	struct responder resp;
	pthread_t th;

	(void)arg;
	resp.stop = false;
	quay_bus_create(NULL, &resp.bus);
	quay_bus_subscribe(resp.bus, "bench.rri", NULL, &resp.sub);
	quay_nats_import(n, resp.bus, "bench.rri", NULL);
	quay_nats_flush(n, 2000000000);
	if (pthread_create(&th, NULL, responder_main, &resp) != 0)
		abort();
	natsConnection_ConnectTo(&cli, g_url);
	const double cpu0 = proc_cpu_ns();
	while (qb_keep_running(st)) {
		natsMsg *r = NULL;
		if (natsConnection_Request(&r, cli, "bench.rri", "ping", 4, 5000) != NATS_OK ||
		    natsMsg_GetDataLength(r) != 4) {
			natsMsg_Destroy(r);
			qb_skip_with_error(st, "request to a quay responder failed");
			goto out;
		}
		natsMsg_Destroy(r);
	}
	cpu_per(st, cpu0, (double)qb_iterations_done(st));
out:
	/* The responder first: its last reply may still be in the handle's
	 * reply path and its last unref in the handle's pool (the reply
	 * reached us before it returned), and close frees both. */
	__atomic_store_n(&resp.stop, true, __ATOMIC_RELAXED); /* a flag */
	pthread_join(th, NULL);
	quay_bus_unsubscribe(resp.sub);
	quay_nats_close(n);
	quay_bus_destroy(resp.bus);
	natsConnection_Destroy(cli);
}

/* The workers of jsq and localq: receive + ack until every message sent
 * was acked, or the producer gave up (stop). */
struct qrun {
	uint64_t acked; /* relaxed: a count, see the top */
	bool stop;      /* relaxed: only ends the loops, see the top */
	double end;     /* when the last ack returned: written by the thread
	                 * that made it, read after the joins */
};

/* Counts one ack; the thread whose ack is the last one stops the clock
 * (the others may still sit in a receive until its 100 ms timeout, which
 * is not the queue's time). */
static void
q_acked(struct qrun *r)
{
	if (__atomic_add_fetch(&r->acked, 1, __ATOMIC_RELAXED) == g_js_msgs) /* a count */
		r->end = now_s();
}

struct qworker {
	struct qrun *run;
	quay_nats_queue *nq; /* jsq */
	quay_queue *q;       /* localq */
};

static bool
q_done(const struct qrun *r)
{
	return __atomic_load_n(&r->acked, __ATOMIC_RELAXED) >= g_js_msgs || /* a count */
	    __atomic_load_n(&r->stop, __ATOMIC_RELAXED);                    /* a flag */
}

static void *
jsq_worker(void *arg)
{
	struct qworker *w = arg;
	while (!q_done(w->run)) {
		quay_nats_lease l;
		if (quay_nats_queue_receive(w->nq, &l, 100000000) != 0)
			continue;
		if (quay_nats_queue_ack(w->nq, &l) == 0)
			q_acked(w->run);
	}
	return NULL;
}

static void *
localq_worker(void *arg)
{
	struct qworker *w = arg;
	while (!q_done(w->run)) {
		quay_lease l;
		if (quay_queue_receive(w->q, &l, 100000000) != 0)
			continue;
		if (quay_queue_ack(w->q, &l) == 0)
			q_acked(w->run);
		quay_msg_unref(l.msg); /* the lease's reference stays ours after the ack */
	}
	return NULL;
}

static void
jsq(qb_state *st, void *arg)
{
	const int nw = (int)qb_range_of(st, 0);
	static int run = 0;

	(void)arg;
	if (nw > MAX_WORKERS)
		abort();
	while (qb_keep_running(st)) {
		char name[32];
		struct quay_nats_queue_opts qo = QUAY_NATS_QUEUE_OPTS_INIT;
		quay_nats *wn[MAX_WORKERS];
		struct qworker w[MAX_WORKERS];
		pthread_t th[MAX_WORKERS];
		struct qrun r = {0, false, 0};
		quay_nats_queue *pq;
		int send_err = 0;

		snprintf(name, sizeof name, "bench%d_%d", nw, run++);
		qo.name = name;
		quay_nats *pn = connect_quay(0);
		if (quay_nats_queue_open(pn, &qo, &pq) != 0) {
			quay_nats_close(pn);
			qb_skip_with_error(st, "queue open");
			return;
		}
		for (int i = 0; i < nw; i++) {
			wn[i] = connect_quay(0);
			w[i].run = &r;
			w[i].q = NULL;
			if (quay_nats_queue_open(wn[i], &qo, &w[i].nq) != 0)
				abort(); /* the producer's open of the same queue worked */
		}
		const double t0 = now_s();
		for (int i = 0; i < nw; i++)
			if (pthread_create(&th[i], NULL, jsq_worker, &w[i]) != 0)
				abort();
		for (uint64_t i = 0; i < g_js_msgs && send_err == 0; i++) {
			quay_msg *m;
			send_err = quay_msg_new(g_pool, "0123456789abcdef", 16, &m);
			if (send_err != 0)
				break;
			send_err = quay_nats_queue_send(pq, m);
			if (send_err != 0)
				quay_msg_unref(m);
		}
		if (send_err != 0) /* the workers would wait for the rest forever */
			__atomic_store_n(&r.stop, true, __ATOMIC_RELAXED); /* a flag */
		for (int i = 0; i < nw; i++)
			pthread_join(th[i], NULL);
		qb_set_iteration_time(st, (r.end > 0 ? r.end : now_s()) - t0);
		if (send_err != 0)
			qb_skip_with_errorf(st, "jsq: send: %s", quay_strerror(send_err));
		else if (r.acked != g_js_msgs) /* after the joins */
			qb_skip_with_error(st, "jsq: count mismatch");
		for (int i = 0; i < nw; i++) {
			quay_nats_queue_close(w[i].nq);
			quay_nats_close(wn[i]);
		}
		quay_nats_queue_close(pq);
		quay_nats_close(pn);
	}
	qb_set_items_processed(st, (int64_t)(qb_iterations_done(st) * g_js_msgs));
}

static void
localq(qb_state *st, void *arg)
{
	const int nw = (int)qb_range_of(st, 0);

	(void)arg;
	if (nw > MAX_WORKERS)
		abort();
	while (qb_keep_running(st)) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		struct qworker w[MAX_WORKERS];
		pthread_t th[MAX_WORKERS];
		struct qrun r = {0, false, 0};
		quay_queue *q;
		int send_err = 0;

		o.capacity = 4096;
		if (quay_queue_create(&o, &q) != 0) {
			qb_skip_with_error(st, "localq: queue create");
			return;
		}
		const double t0 = now_s();
		for (int i = 0; i < nw; i++) {
			w[i].run = &r;
			w[i].nq = NULL;
			w[i].q = q;
			if (pthread_create(&th[i], NULL, localq_worker, &w[i]) != 0)
				abort();
		}
		for (uint64_t i = 0; i < g_js_msgs && send_err == 0; i++) {
			quay_msg *m;
			int rc = quay_msg_new(g_pool, "0123456789abcdef", 16, &m);
			if (rc != 0) {
				send_err = rc;
				break;
			}
			while ((rc = quay_queue_send(q, m)) == -EAGAIN)
				sched_yield();
			if (rc < 0) { /* the caller keeps its reference */
				quay_msg_unref(m);
				send_err = rc;
			}
		}
		if (send_err != 0) /* the workers would wait for the rest forever */
			__atomic_store_n(&r.stop, true, __ATOMIC_RELAXED); /* a flag */
		for (int i = 0; i < nw; i++)
			pthread_join(th[i], NULL);
		qb_set_iteration_time(st, (r.end > 0 ? r.end : now_s()) - t0);
		if (send_err != 0)
			qb_skip_with_errorf(st, "localq: send: %s", quay_strerror(send_err));
		else if (r.acked != g_js_msgs) /* after the joins */
			qb_skip_with_error(st, "localq: count mismatch");
		quay_queue_destroy(q);
	}
	qb_set_items_processed(st, (int64_t)(qb_iterations_done(st) * g_js_msgs));
}

int
main(int argc, char **argv)
{
	static struct test_server srv;
	const char *e;
	qb_bench *b;

	if ((e = getenv("QUAY_BENCH_MSGS")) != NULL)
		g_pub_msgs = strtoull(e, NULL, 10);
	if ((e = getenv("QUAY_BENCH_JS_MSGS")) != NULL)
		g_js_msgs = strtoull(e, NULL, 10);

	qb_unit(qb_manual_time(qb_register("publish/plain", publish_plain, NULL)), QB_MS);
	/* Arg 0: export bridge threads (the default); Arg 1: QUAY_NATS_DIRECT. */
	b = qb_arg(qb_arg(qb_arg_name(qb_register("publish/bridge", publish_bridge, NULL), "direct"), 0), 1);
	qb_unit(qb_manual_time(b), QB_MS);
	qb_unit(qb_register("rr/plain", rr_plain, NULL), QB_US);
	qb_unit(qb_arg(qb_arg(qb_arg_name(qb_register("rr/bridge", rr_bridge, NULL), "direct"), 0), 1), QB_US);
	qb_unit(qb_arg(qb_arg(qb_arg_name(qb_register("rr/import", rr_import, NULL), "direct"), 0), 1), QB_US);
	b = qb_arg(qb_arg(qb_arg_name(qb_register("jsq", jsq, NULL), "W"), 1), 4);
	qb_unit(qb_manual_time(qb_iterations(b, 1)), QB_MS);
	b = qb_arg(qb_arg(qb_arg_name(qb_register("localq", localq, NULL), "W"), 1), 4);
	qb_unit(qb_manual_time(qb_iterations(b, 3)), QB_MS);

	int rc = qb_init(&argc, argv);
	if (rc != 0)
		return rc;
	ts_init(&srv); /* exits 2 if the server does not start */
	g_url = srv.url;
	quay_pool_create((size_t)256 << 20, NULL, &g_pool);
	rc = qb_run();
	quay_pool_destroy(g_pool);
	ts_fini(&srv);
	return rc;
}
