/* SPDX-License-Identifier: MIT */
/*
 * monitor: the HTTP observability endpoint (quay/http.h) over a live
 * workload.
 *
 *   monitor [-p PORT] [-a ADDR] [-t TOKEN] [-s SECONDS] [-q SECONDS] [-e N]
 *
 * Three queues ("orders", "emails", "reports"), each with a DLQ, and a
 * bus "events" with two subscriptions. A producer thread per queue sends
 * at a rate that changes over time (a slow sine wave, and bursts); two
 * worker threads per queue receive, sometimes nack (a job fails, with
 * backoff, then dead-letters after 3 attempts) and ack; a listener drains
 * one subscription, the other one is left to fill and drop. "reports"
 * has an alarm on its DLQ (on from the first dead letter, evaluated at
 * most once a second however many clients poll): once it fires, /health
 * and the dashboard show the queue failing ("error", alarm "dlq").
 *
 * Open http://127.0.0.1:PORT/dashboard (PORT 8080 by default; 0 picks a
 * free one, printed at start). Runs until interrupted (Ctrl-C), or for
 * -s SECONDS. -q SECONDS stops the producers after that long (the
 * workers go on and drain the queues, the DLQs stay): a steady state for
 * the tests. -e N adds N small queues ("extra.00", ...) fed by the
 * "orders" producer in turn and drained by one more worker: how the
 * dashboard looks with many queues. Prints "monitor: listening on
 * http://ADDR:PORT" once ready.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/bus.h>
#include <quay/http.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

#define NQ 3
#define EXTRA_MAX 200
#define MS ((int64_t)1000000)

static const char *const names[NQ] = { "orders", "emails", "reports" };
static const char *const dlq_names[NQ] = { "orders.dlq", "emails.dlq", "reports.dlq" };
static const int base_rate[NQ] = { 400, 150, 40 }; /* messages per second */
static const int fail_pct[NQ] = { 2, 10, 30 };

static quay_pool *pool;
static quay_queue *qs[NQ], *dlqs[NQ];
static quay_queue *extra[EXTRA_MAX];
static int nextra;
static quay_bus *bus;
static volatile sig_atomic_t interrupted;
/* Stop flags: release store by main, acquire load by the threads (so
 * the threads see everything main did before stopping them). */
static int stop_all;       /* workers and listener end */
static int stop_producers; /* producers end (-q, or at the end) */

static void
on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_ns(int64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };

	nanosleep(&ts, NULL);
}

static void *
producer(void *arg)
{
	int i = (int)(intptr_t)arg;
	double t0 = now_s();
	uint64_t n = 0;
	unsigned seed = 17u + (unsigned)i;

	while (!__atomic_load_n(&stop_producers, __ATOMIC_ACQUIRE)) {
		double t = now_s() - t0;
		/* A slow wave (period 20 s) and, every 15 s, a 2 s burst. */
		double rate = base_rate[i] * (1.0 + 0.8 * sin(t * 2 * M_PI / 20.0 + i));
		quay_msg *m;

		if (fmod(t, 15.0) < 2.0)
			rate *= 3;
		if (rate < 1)
			rate = 1;
		if (quay_msg_new(pool, &n, sizeof(n), &m) == 0) {
			quay_msg_set_priority(m, (uint8_t)(rand_r(&seed) % 2));
			if (quay_queue_send(qs[i], m) != 0)
				quay_msg_unref(m); /* full: the producer moves on */
		}
		n++;
		if (i == 0 && nextra > 0 && quay_msg_new(pool, &n, sizeof(n), &m) == 0 &&
		    quay_queue_send(extra[n % (uint64_t)nextra], m) != 0)
			quay_msg_unref(m);
		if (i == 0 && n % 4 == 0) {
			quay_msg *e;
			if (quay_msg_new(pool, &n, sizeof(n), &e) == 0) {
				/* >= 0: the bus took the reference. */
				if (quay_bus_publish(bus, n % 8 == 0 ? "events.audit" : "events.order", e) <
				    0)
					quay_msg_unref(e);
			}
		}
		sleep_ns((int64_t)(1e9 / rate));
	}
	return NULL;
}

static void *
worker(void *arg)
{
	int i = (int)(intptr_t)arg % NQ;
	unsigned seed = (unsigned)(intptr_t)arg * 7919u;
	quay_lease l;

	while (!__atomic_load_n(&stop_all, __ATOMIC_ACQUIRE)) {
		if (quay_queue_receive(qs[i], &l, 50 * MS) != 0)
			continue;
		/* Work: 0.2..2 ms, longer for reports. */
		sleep_ns((int64_t)(200000 + rand_r(&seed) % 1800000) * (i == 2 ? 3 : 1));
		if ((int)(rand_r(&seed) % 100) < fail_pct[i])
			quay_queue_nack(qs[i], &l, "job failed");
		else
			quay_queue_ack(qs[i], &l);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void *
extra_worker(void *arg)
{
	quay_lease l;
	int k = 0;

	(void)arg;
	while (!__atomic_load_n(&stop_all, __ATOMIC_ACQUIRE)) {
		if (quay_queue_receive(extra[k++ % nextra], &l, 0) != 0) {
			if (k % nextra == 0)
				sleep_ns(MS);
			continue;
		}
		quay_queue_ack(extra[(k - 1) % nextra], &l);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void *
listener(void *arg)
{
	quay_sub *sub = arg;
	quay_msg *m;

	while (!__atomic_load_n(&stop_all, __ATOMIC_ACQUIRE))
		if (quay_sub_receive(sub, &m, 50 * MS) == 0)
			quay_msg_unref(m);
	return NULL;
}

static void
usage(void)
{
	fprintf(stderr, "usage: monitor [-p PORT] [-a ADDR] [-t TOKEN] [-s SECONDS] [-q SECONDS] [-e N]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct quay_http_opts ho = QUAY_HTTP_OPTS_INIT;
	struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	quay_sub *s_all, *s_audit;
	pthread_t prod[NQ], work[2 * NQ], lis, xw;
	double seconds = 0, quiesce = 0, t0;
	quay_stats *stats;
	quay_http *http;
	int opt, rc, port = 8080;

	while ((opt = getopt(argc, argv, "p:a:t:s:q:e:h")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'a': ho.addr = optarg; break;
		case 't': ho.token = optarg; break;
		case 's': seconds = atof(optarg); break;
		case 'q': quiesce = atof(optarg); break;
		case 'e': nextra = atoi(optarg); break;
		default: usage();
		}
	}
	if (port < 0 || port > 65535 || nextra < 0 || nextra > EXTRA_MAX || optind != argc)
		usage();
	ho.port = (uint16_t)port;

	if (quay_stats_create(NULL, &stats) != 0 || quay_pool_create((size_t)64 << 20, NULL, &pool) != 0)
		return 1;
	for (int i = 0; i < NQ; i++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

		o.stats = stats;
		o.name = dlq_names[i];
		o.capacity = 100000;
		if ((rc = quay_queue_create(&o, &dlqs[i])) != 0)
			goto fail;
		o.name = names[i];
		o.capacity = 20000;
		o.dlq = dlqs[i];
		o.max_attempts = 3;
		o.backoff_base_ns = 50 * MS;
		o.backoff_max_ns = 400 * MS;
		o.visibility_ns = 5000 * MS;
		if (i == 2) {
			o.alarm[QUAY_QUEUE_ALARM_DLQ].raise = 1;
			o.alarm_period_ns = 1000 * MS;
		}
		if ((rc = quay_queue_create(&o, &qs[i])) != 0)
			goto fail;
	}
	for (int i = 0; i < nextra; i++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		char name[32];

		snprintf(name, sizeof(name), "extra.%02d", i);
		o.stats = stats;
		o.name = name;
		o.capacity = 1000;
		if ((rc = quay_queue_create(&o, &extra[i])) != 0)
			goto fail;
	}
	bo.name = "events";
	bo.stats = stats;
	if ((rc = quay_bus_create(&bo, &bus)) != 0)
		goto fail;
	if ((rc = quay_bus_subscribe(bus, "events.>", NULL, &s_all)) != 0)
		goto fail;
	/* Nobody reads this one: small, and it drops the oldest when full. */
	so.policy = QUAY_SUB_DROP_OLDEST;
	so.capacity = 256;
	if ((rc = quay_bus_subscribe(bus, "events.audit", &so, &s_audit)) != 0)
		goto fail;

	if ((rc = quay_http_start(&ho, &http)) != 0) {
		fprintf(stderr, "monitor: cannot listen on %s:%d: %s\n", ho.addr ? ho.addr : "127.0.0.1",
		    port, quay_strerror(rc));
		return 1;
	}
	for (int i = 0; i < NQ; i++)
		if ((rc = quay_http_add_queue(http, qs[i])) != 0 ||
		    (rc = quay_http_add_queue(http, dlqs[i])) != 0)
			goto fail;
	for (int i = 0; i < nextra; i++)
		if ((rc = quay_http_add_queue(http, extra[i])) != 0)
			goto fail;
	if ((rc = quay_http_add_bus(http, bus)) != 0)
		goto fail;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	for (int i = 0; i < NQ; i++)
		pthread_create(&prod[i], NULL, producer, (void *)(intptr_t)i);
	for (int i = 0; i < 2 * NQ; i++)
		pthread_create(&work[i], NULL, worker, (void *)(intptr_t)i);
	pthread_create(&lis, NULL, listener, s_all);
	if (nextra > 0)
		pthread_create(&xw, NULL, extra_worker, NULL);
	printf("monitor: listening on http://%s:%u (dashboard: /dashboard)\n",
	    ho.addr ? ho.addr : "127.0.0.1", (unsigned)quay_http_port(http));
	fflush(stdout);

	t0 = now_s();
	while (!interrupted && (seconds <= 0 || now_s() - t0 < seconds)) {
		if (quiesce > 0 && now_s() - t0 >= quiesce)
			__atomic_store_n(&stop_producers, 1, __ATOMIC_RELEASE);
		sleep_ns(50 * MS);
	}
	__atomic_store_n(&stop_producers, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&stop_all, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < NQ; i++)
		pthread_join(prod[i], NULL);
	for (int i = 0; i < 2 * NQ; i++)
		pthread_join(work[i], NULL);
	pthread_join(lis, NULL);
	if (nextra > 0)
		pthread_join(xw, NULL);

	/* The server first: it reads the queues and the bus. */
	quay_http_stop(http);
	for (int i = 0; i < NQ; i++) {
		struct quay_queue_stats st;
		quay_queue_stats(qs[i], &st);
		printf("monitor: %-8s sent %llu acked %llu dead-lettered %llu\n", names[i],
		    (unsigned long long)st.sent, (unsigned long long)st.acked,
		    (unsigned long long)st.dead_lettered);
	}
	quay_bus_unsubscribe(s_all);
	quay_bus_unsubscribe(s_audit);
	quay_bus_destroy(bus);
	for (int i = 0; i < NQ; i++) {
		quay_queue_destroy(qs[i]);
		quay_queue_destroy(dlqs[i]);
	}
	for (int i = 0; i < nextra; i++) {
		quay_lease l;
		while (quay_queue_receive(extra[i], &l, 0) == 0) {
			quay_queue_ack(extra[i], &l);
			quay_msg_unref(l.msg);
		}
		quay_queue_destroy(extra[i]);
	}
	quay_stats_destroy(stats);
	quay_pool_destroy(pool);
	return 0;
fail:
	fprintf(stderr, "monitor: setup failed: %s\n", quay_strerror(rc));
	return 1;
}
