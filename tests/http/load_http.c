/* SPDX-License-Identifier: MIT */
/*
 * Load: 50 HTTP clients scrape /metrics, /summary and /health (in turn,
 * a new connection each time) for QUAY_HTTP_LOAD_SECONDS (default 10)
 * while 4 threads move messages through a queue (2 send, 2 receive and
 * ack). Fails if any request fails (connection error or a status other
 * than 200, but a 503 from /health that reports the full queue) or the
 * messaging stalls; under ASan, if anything leaks.
 * Reports the messaging rate without scrapers and with them, measured in
 * the same run over the same duration (reported, never asserted).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/http_client.h"

#include <quay/http.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

#define CLIENTS 50
#define MOVERS 4

static quay_pool *pool;
static quay_queue *q;
/* Stop flags: release store by main, acquire load by the threads. */
static int stop_movers, stop_clients;
static uint64_t moved; /* acks, relaxed: a count read after joins */
static uint16_t port;

struct client_stats {
	uint64_t ok, failed;
	int first_status, first_err;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *
sender(void *arg)
{
	uint64_t n = 0;

	(void)arg;
	while (!__atomic_load_n(&stop_movers, __ATOMIC_ACQUIRE)) {
		quay_msg *m;

		if (quay_msg_new(pool, &n, sizeof(n), &m) != 0)
			continue;
		if (quay_queue_send(q, m) != 0) {
			quay_msg_unref(m); /* full: the receivers catch up */
			sched_yield();
		}
		n++;
	}
	return NULL;
}

static void *
receiver(void *arg)
{
	quay_lease l;

	(void)arg;
	while (!__atomic_load_n(&stop_movers, __ATOMIC_ACQUIRE)) {
		if (quay_queue_receive(q, &l, 1000000) != 0)
			continue;
		if (quay_queue_ack(q, &l) == 0)
			/* Relaxed: a total read after the threads are joined. */
			__atomic_fetch_add(&moved, 1, __ATOMIC_RELAXED);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void *
client(void *arg)
{
	static const char *const paths[] = { "/metrics", "/summary", "/health" };
	struct client_stats *cs = arg;
	unsigned i = 0;

	while (!__atomic_load_n(&stop_clients, __ATOMIC_ACQUIRE)) {
		struct hc_resp r;
		const char *path = paths[i++ % 3];
		int rc = hc_get(port, path, &r);

		/* /health is 503 while the queue is full (the senders outrun the
		 * receivers): a correct answer, with its status in the body. */
		bool health_full = strcmp(path, "/health") == 0 && r.status == 503 &&
		    strstr(r.body, "\"status\":\"error\"") != NULL;

		if (rc == 0 && (r.status == 200 || health_full) && r.body_len > 0) {
			cs->ok++;
		} else {
			if (cs->failed++ == 0) {
				cs->first_status = r.status;
				cs->first_err = rc;
			}
		}
		hc_free(&r);
	}
	return NULL;
}

/* Move messages for `secs` seconds; returns acks per second. */
static double
move_for(double secs)
{
	pthread_t t[MOVERS];
	uint64_t before = __atomic_load_n(&moved, __ATOMIC_RELAXED);
	double t0 = now_s(), el;

	__atomic_store_n(&stop_movers, 0, __ATOMIC_RELEASE);
	for (int i = 0; i < MOVERS; i++)
		pthread_create(&t[i], NULL, i < MOVERS / 2 ? sender : receiver, NULL);
	while (now_s() - t0 < secs) {
		struct timespec ts = { 0, 50000000 };
		nanosleep(&ts, NULL);
	}
	__atomic_store_n(&stop_movers, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < MOVERS; i++)
		pthread_join(t[i], NULL);
	el = now_s() - t0;
	return (double)(__atomic_load_n(&moved, __ATOMIC_RELAXED) - before) / el;
}

int
main(void)
{
	const char *env = getenv("QUAY_HTTP_LOAD_SECONDS");
	double secs = env != NULL ? atof(env) : 10.0;
	struct client_stats cs[CLIENTS];
	pthread_t ct[CLIENTS];
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_http *h;
	quay_lease l;
	uint64_t ok = 0, failed = 0;
	double base, loaded;
	int rc;

	if (secs <= 0)
		secs = 10.0;
	if (quay_pool_create((size_t)64 << 20, NULL, &pool) != 0)
		return 1;
	o.name = "load";
	o.capacity = 4096;
	if ((rc = quay_queue_create(&o, &q)) != 0 || (rc = quay_http_start(NULL, &h)) != 0 ||
	    (rc = quay_http_add_queue(h, q)) != 0) {
		fprintf(stderr, "setup: %s\n", quay_strerror(rc));
		return 1;
	}
	port = quay_http_port(h);

	base = move_for(secs);

	memset(cs, 0, sizeof(cs));
	for (int i = 0; i < CLIENTS; i++)
		pthread_create(&ct[i], NULL, client, &cs[i]);
	loaded = move_for(secs);
	__atomic_store_n(&stop_clients, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < CLIENTS; i++) {
		pthread_join(ct[i], NULL);
		ok += cs[i].ok;
		failed += cs[i].failed;
		if (cs[i].failed != 0)
			fprintf(stderr, "client %d: %llu failed, first: status %d, error %s\n", i,
			    (unsigned long long)cs[i].failed, cs[i].first_status,
			    quay_strerror(cs[i].first_err));
	}

	quay_http_stop(h);
	while (quay_queue_receive(q, &l, 0) == 0) {
		quay_queue_ack(q, &l);
		quay_msg_unref(l.msg);
	}
	quay_queue_destroy(q);
	quay_pool_destroy(pool);

	printf("http load: %d clients, %.0f s: %llu requests OK (%.0f/s), %llu failed\n", CLIENTS, secs,
	    (unsigned long long)ok, (double)ok / secs, (unsigned long long)failed);
	printf("http load: messaging %.0f msgs/s without scrapers, %.0f msgs/s with them (%.1f%%)\n", base,
	    loaded, base > 0 ? 100.0 * loaded / base : 0.0);
	if (failed != 0 || ok == 0 || loaded <= 0 || base <= 0) {
		fprintf(stderr, "FAIL\n");
		return 1;
	}
	return 0;
}
