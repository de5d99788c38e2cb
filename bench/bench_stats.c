/* SPDX-License-Identifier: MIT */
/*
 * bench_stats: the cost of quay's counters, gauges and histograms, and of
 * snapshots and exports, with the obvious peers in the same binary. C
 * bodies, registered through bench/shim/quay_bench.h.
 *
 *   BM_counter_inc_quay        quay_counter_inc on ONE counter shared by
 *                              all threads (each thread bumps its own shard)
 *   BM_counter_inc_shared_atomic  relaxed __atomic_fetch_add on ONE shared
 *                              64-byte-aligned counter: the cache line
 *                              moves between the cores
 *   BM_counter_inc_private_atomic  the same on a per-thread padded
 *                              counter: the floor for an atomic add
 *   BM_counter_inc_quay_noshard  quay counter in a registry with shards=1:
 *                              quay's path with the sharing of shared_atomic
 *   BM_sched_getcpu            what a per-CPU design would add per bump
 *   BM_gauge_add_quay          quay_gauge_add on one shared gauge
 *   BM_hist_record_quay        quay_hist_record of precomputed latencies
 *                              (log-spread 100 ns .. 10 ms) into one histogram
 *   BM_counter_read            quay_counter_read (sums the shards)
 *   BM_hist_read               quay_hist_read (sums 1025 buckets x shards)
 *   BM_snapshot/N              quay_stats_snapshot of a registry of N
 *                              counters, N/8 gauges and N/16 histograms
 *   BM_export_prometheus/N, BM_export_json/N
 *                              formatting that snapshot into a buffer
 *
 * Each multi-threaded benchmark runs with 1 and 2 threads (qb_threads);
 * ns/op is the time per operation of one thread (Google Benchmark's
 * "Time" column with real time is wall time per iteration per thread).
 * The loops run through qb_batch: no shim call per operation.
 */
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <quay/quay.h>
#include <quay/stats.h>

#include "quay_bench.h"

#define NLAT 4096

struct padded {
	uint64_t v __attribute__((aligned(64)));
};

static struct padded g_shared;
static struct padded g_private[64];

/* One registry for the hot-path benchmarks, made before any runs. */
static struct {
	quay_stats *s;
	quay_stats *s1; /* shards = 1 */
	quay_counter *c;
	quay_counter *c1;
	quay_gauge *g;
	quay_hist *h;
	uint64_t lat[NLAT];
} fx;

static void
fixture_init(void)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	if (quay_stats_create(NULL, &fx.s) != 0)
		abort();
	o.shards = 1;
	o.hist_shards = 1;
	if (quay_stats_create(&o, &fx.s1) != 0)
		abort();
	if (quay_counter_create(fx.s, "bench_total", "Bench.", NULL, 0, &fx.c) != 0 ||
	    quay_counter_create(fx.s1, "bench_total", "Bench.", NULL, 0, &fx.c1) != 0 ||
	    quay_gauge_create(fx.s, "bench_depth", NULL, NULL, 0, &fx.g) != 0 ||
	    quay_hist_create(fx.s, "bench_seconds", NULL, NULL, 0, &fx.h) != 0)
		abort();
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < NLAT; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* 100 ns * 2^(0..16.6): 100 ns .. ~10 ms, log-spread */
		const unsigned e = (unsigned)(x % 17);
		fx.lat[i] = 100 * ((uint64_t)1 << e) + (x >> 40) % (100u << e);
	}
}

static void
items(qb_state *st)
{
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

static void
counter_inc(qb_state *st, void *arg)
{
	quay_counter *c = *(quay_counter **)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			quay_counter_inc(c);
	items(st);
}

static void
shared_atomic(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			__atomic_fetch_add(&g_shared.v, 1, __ATOMIC_RELAXED); /* a count: pairs with nothing */
	items(st);
}

static void
private_atomic(qb_state *st, void *arg)
{
	uint64_t *v = &g_private[qb_thread_index(st) % 64].v;
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			__atomic_fetch_add(v, 1, __ATOMIC_RELAXED); /* a count: pairs with nothing */
	items(st);
}

static void
sched_getcpu_loop(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			int cpu = sched_getcpu();
			qb_do_not_optimize(cpu);
		}
	items(st);
}

static void
gauge_add(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			quay_gauge_add(fx.g, 1);
	items(st);
}

static void
hist_record(qb_state *st, void *arg)
{
	size_t k = (size_t)qb_thread_index(st) * 1000;
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			quay_hist_record(fx.h, fx.lat[k++ & (NLAT - 1)]);
	items(st);
}

static void
counter_read(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			uint64_t v = quay_counter_read(fx.c);
			qb_do_not_optimize(v);
		}
	items(st);
}

static void
hist_read(qb_state *st, void *arg)
{
	struct quay_hist_data *d = malloc(sizeof *d);
	(void)arg;
	if (d == NULL)
		abort();
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			quay_hist_read(fx.h, d);
			qb_do_not_optimize(d->count);
		}
	free(d);
	items(st);
}

/* A registry of n counters (labelled like per-queue series), n/8 gauges
 * and n/16 histograms with some data. */
static quay_stats *
make_registry(size_t n)
{
	quay_stats *s;
	if (quay_stats_create(NULL, &s) != 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		char q[32], k[32];
		snprintf(q, sizeof q, "queue-%zu", i % 64);
		snprintf(k, sizeof k, "%zu", i / 64);
		struct quay_stats_label l[2] = {{"queue", q}, {"kind", k}};
		quay_counter *c;
		if (quay_counter_create(s, "quay_sent_total", "Messages sent.", l, 2, &c) != 0)
			abort();
		quay_counter_add(c, i * 12345);
		if (i % 8 == 0) {
			quay_gauge *g;
			if (quay_gauge_create(s, "quay_depth", "Depth.", l, 2, &g) != 0)
				abort();
			quay_gauge_set(g, (int64_t)i);
		}
		if (i % 16 == 0) {
			quay_hist *h;
			if (quay_hist_create(s, "quay_latency_seconds", "Latency.", l, 2, &h) != 0)
				abort();
			for (int j = 0; j < NLAT; j++)
				quay_hist_record(h, fx.lat[j]);
		}
	}
	return s;
}

static void
snapshot(qb_state *st, void *arg)
{
	quay_stats *s = make_registry((size_t)qb_range_of(st, 0));
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			quay_stats_snap *snap;
			if (quay_stats_snapshot(s, &snap) != 0)
				abort();
			quay_stats_snap_free(snap);
		}
	qb_counter(st, "metrics", (double)quay_stats_count(s), QB_COUNTER_DEFAULT);
	quay_stats_destroy(s);
}

typedef int (*fmt_fn)(const quay_stats_snap *, char *, size_t, size_t *);

static void export(qb_state *st, void *arg)
{
	const fmt_fn fmt = *(const fmt_fn *)arg;
	quay_stats *s = make_registry((size_t)qb_range_of(st, 0));
	quay_stats_snap *snap;
	size_t len = 0;
	if (quay_stats_snapshot(s, &snap) != 0)
		abort();
	fmt(snap, NULL, 0, &len);
	char *buf = malloc(len + 1);
	if (buf == NULL)
		abort();
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			if (fmt(snap, buf, len + 1, &len) != 0)
				abort();
			qb_do_not_optimize(buf);
		}
	qb_set_bytes_processed(st, (int64_t)(qb_iterations_done(st) * len));
	qb_counter(st, "bytes", (double)len, QB_COUNTER_DEFAULT);
	free(buf);
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

static const fmt_fn k_prometheus = quay_stats_format_prometheus;
static const fmt_fn k_json = quay_stats_format_json;

/* Threads(1)->Threads(2)->UseRealTime(), or Threads(1) alone. */
static void
threaded(const char *name, qb_fn fn, void *arg, int max_threads)
{
	qb_bench *b = qb_threads(qb_register(name, fn, arg), 1);
	if (max_threads > 1)
		qb_threads(b, 2);
	qb_real_time(b);
}

int
main(int argc, char **argv)
{
	fixture_init(); /* before any timed run */
	threaded("BM_counter_inc_quay", counter_inc, &fx.c, 2);
	threaded("BM_counter_inc_shared_atomic", shared_atomic, NULL, 2);
	threaded("BM_counter_inc_private_atomic", private_atomic, NULL, 2);
	threaded("BM_counter_inc_quay_noshard", counter_inc, &fx.c1, 2);
	threaded("BM_sched_getcpu", sched_getcpu_loop, NULL, 1);
	threaded("BM_gauge_add_quay", gauge_add, NULL, 2);
	threaded("BM_hist_record_quay", hist_record, NULL, 2);
	qb_register("BM_counter_read", counter_read, NULL);
	qb_register("BM_hist_read", hist_read, NULL);
	qb_arg(qb_arg(qb_register("BM_snapshot", snapshot, NULL), 64), 1024);
	qb_arg(qb_arg(qb_register("BM_export_prometheus", export, (void *)&k_prometheus), 64), 1024);
	qb_arg(qb_arg(qb_register("BM_export_json", export, (void *)&k_json), 64), 1024);
	const int rc = qb_main(argc, argv);
	quay_stats_destroy(fx.s);
	quay_stats_destroy(fx.s1);
	return rc;
}
