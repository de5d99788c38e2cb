/* SPDX-License-Identifier: MIT */
/*
 * Stress test of quay/stats.h: W writer threads bump counters, move a
 * gauge and record into histograms, all at once, while
 *   - a reader thread reads every counter and histogram in a loop and
 *     takes snapshots (exporting each one to Prometheus and JSON text),
 *     and checks that nothing ever goes backwards: a counter value, a
 *     histogram's count, or any of its buckets;
 *   - a churn thread creates and destroys other metrics in the same
 *     registry (and families), so the registry changes under snapshots.
 * A writer can also be a chain of short-lived threads ("lives"), each
 * doing its share of the writer's iterations and exiting before the next
 * starts: the slots of exited threads are claimed again by new ones
 * (those of other writers' chains too), so a cell passes from owner to
 * owner (STATS-S1/STATS-S2), and more threads run in all than there are
 * slots (QUAY_STATS_SHARDS_MAX). Another shape keeps more threads alive at
 * once than there are slots, so some own none and share the shared cells.
 * After the writers are joined, every counter must equal its exact
 * expected total, the gauge its exact net value, and every histogram's
 * count, sum, min, max and each of its 1025 buckets the values computed
 * by replaying the writers' deterministic value sequences.
 *
 * Run with no arguments: every configuration below at CI size, one
 * summary line each, exit status 1 on any violation. Options:
 *   -n OPS    loop iterations per writer (default 10000000, 1000000 under
 *             TSan; writers beyond 4 share 4x that); each iteration bumps
 *             a counter, records a value and moves the gauge
 *   -c IDX    run only configuration IDX
 * QUAY_STRESS_SCALE=K multiplies OPS (soak runs).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/stats.h>

#include "test_util.h"

/* ThreadSanitizer runs every atomic through its runtime (~20-50x slower):
 * its CI size is a tenth. */
#if QT_TSAN
#define DEFAULT_OPS 1000000
#else
#define DEFAULT_OPS 10000000
#endif

#define NCOUNTERS 9 /* more than one chunk of 8 */
#define NHISTS 2

struct config {
	unsigned writers;
	unsigned shards;      /* counter shards (0: default) */
	unsigned hist_shards; /* 0: default */
	const char *what;
	unsigned lives; /* threads per writer, one after the other (0: 1) */
};

/* Shapes: one writer; as many writers as shards; more writers than cores
 * (2 here); more writers than shards (threads share cells); one shard. */
static const struct config configs[] = {
	{ 1, 0, 0, "1 writer, default shards", 0 },
	{ 2, 2, 2, "2 writers, 2 shards", 0 },
	{ 4, 0, 0, "4 writers (oversubscribed), default shards", 0 },
	{ 8, 2, 1, "8 writers on 2 counter shards, 1 hist shard", 0 },
	{ 4, 1, 1, "4 writers, 1 shard (all share)", 0 },
	{ 16, 256, 4, "16 writers, 256 shards", 0 },
	/* 8 x 40 = 320 threads in all (more than the 256 slots), 8 alive at
	 * a time: slots (and so owned cells) change hands all the time. */
	{ 8, 4, 1, "8 writers x 40 short-lived threads, 4 shards", 40 },
	{ 8, 256, 2, "8 writers x 40 short-lived threads, 256 shards", 40 },
	/* 300 alive at once: 44 of them get no slot (a plain store by any of
	 * them to an owned cell loses counts). */
	{ 300, 256, 4, "300 writers alive (more than the slots)", 0 },
	/* One owned cell: 299 writers on the shared one, next to its owner. */
	{ 300, 1, 1, "300 writers alive, 1 shard", 0 },
};

struct shared {
	quay_stats *s;
	quay_counter *c[NCOUNTERS];
	quay_gauge *g;
	quay_hist *h[NHISTS];
	uint64_t ops;
	unsigned writers;
	pthread_barrier_t start;
	int writers_done;    /* atomic */
	uint64_t violations; /* atomic */
	uint64_t reads, snaps, churns;
	char msg[256];
};

/* The value writer w records at step i into histogram k: spread over
 * 0 .. 2^37 (past the overflow bound) on a log scale. */
static uint64_t
hist_value(uint64_t *seed)
{
	uint64_t r = qt_rand(seed);
	unsigned e = (unsigned)(r % 38);

	return ((uint64_t)1 << e) - 1 + ((r >> 8) & (((uint64_t)1 << e) - 1));
}

/* Counter k gets k + 1 per op (so a lost or doubled add shows). */
static uint64_t
counter_step(size_t k)
{
	return (uint64_t)k + 1;
}

static void
violation(struct shared *sh, const char *fmt, unsigned long long a, unsigned long long b)
{
	if (__atomic_fetch_add(&sh->violations, 1, __ATOMIC_RELAXED) == 0)
		snprintf(sh->msg, sizeof(sh->msg), fmt, a, b);
}

struct writer {
	struct shared *sh;
	unsigned id;
	unsigned lives;
	uint64_t lo, hi; /* this life's iterations */
	uint64_t seed;   /* carried from life to life (joined in between) */
};

/* One life: iterations lo .. hi - 1 of the writer's sequence. */
static void *
life_main(void *p)
{
	struct writer *w = p;
	struct shared *sh = w->sh;

	for (uint64_t i = w->lo; i < w->hi; i++) {
		quay_counter_add(sh->c[i % NCOUNTERS], counter_step(i % NCOUNTERS));
		quay_hist_record(sh->h[i % NHISTS], hist_value(&w->seed));
		if (i & 1)
			quay_gauge_sub(sh->g, 1);
		else
			quay_gauge_add(sh->g, 2);
	}
	return NULL;
}

static void *
writer_main(void *p)
{
	struct writer *w = p;
	struct shared *sh = w->sh;
	uint64_t seed = 0x9E3779B97F4A7C15ull * (w->id + 1);

	/* Claim a slot before everyone starts: all the writers hold one (or
	 * find none left) at once. Adding 0 changes no count. */
	if (w->lives <= 1)
		quay_counter_add(sh->c[0], 0);
	pthread_barrier_wait(&sh->start);
	if (w->lives > 1) {
		w->seed = seed;
		for (unsigned l = 0; l < w->lives; l++) {
			pthread_t t;
			w->lo = sh->ops * l / w->lives;
			w->hi = sh->ops * (l + 1) / w->lives;
			if (pthread_create(&t, NULL, life_main, w) != 0 || pthread_join(t, NULL) != 0) {
				fprintf(stderr, "pthread_create/join failed\n");
				exit(2);
			}
		}
		__atomic_fetch_add(&sh->writers_done, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	for (uint64_t i = 0; i < sh->ops; i++) {
		quay_counter_add(sh->c[i % NCOUNTERS], counter_step(i % NCOUNTERS));
		quay_hist_record(sh->h[i % NHISTS], hist_value(&seed));
		if (i & 1)
			quay_gauge_sub(sh->g, 1);
		else
			quay_gauge_add(sh->g, 2);
	}
	__atomic_fetch_add(&sh->writers_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int
discard(void *arg, const char *data, size_t len)
{
	(void)data;
	*(size_t *)arg += len;
	return 0;
}

/* Reads everything until the writers are done (and once more after). */
static void *
reader_main(void *p)
{
	struct shared *sh = p;
	uint64_t last_c[NCOUNTERS] = { 0 };
	struct quay_hist_data *last = calloc(NHISTS, sizeof(*last));
	struct quay_hist_data *cur = malloc(sizeof(*cur));
	bool final = false;

	if (last == NULL || cur == NULL) {
		violation(sh, "reader: out of memory %llu %llu", 0, 0);
		free(last);
		free(cur);
		return NULL;
	}
	pthread_barrier_wait(&sh->start);
	for (;;) {
		/* Acquire: pairs with the writers' release; the last pass then
		 * sees every update (a join would do as well). */
		if (!final && __atomic_load_n(&sh->writers_done, __ATOMIC_ACQUIRE) == (int)sh->writers)
			final = true;
		for (size_t k = 0; k < NCOUNTERS; k++) {
			uint64_t v = quay_counter_read(sh->c[k]);
			if (v < last_c[k])
				violation(sh, "counter went backwards: %llu after %llu", v, last_c[k]);
			last_c[k] = v;
		}
		for (size_t k = 0; k < NHISTS; k++) {
			quay_hist_read(sh->h[k], cur);
			if (cur->count < last[k].count)
				violation(sh, "hist count went backwards: %llu after %llu", cur->count,
				    last[k].count);
			for (size_t b = 0; b < QUAY_HIST_BUCKETS; b++)
				if (cur->buckets[b] < last[k].buckets[b])
					violation(sh, "bucket went backwards: %llu after %llu",
					    cur->buckets[b], last[k].buckets[b]);
			/* A counted record is in min/max/sum too (STATS-H1/STATS-H2). */
			if (cur->count != 0) {
				uint64_t lo, hi, top = 0, bottom = QUAY_HIST_BUCKETS;
				for (size_t b = 0; b < QUAY_HIST_BUCKETS; b++) {
					if (cur->buckets[b] != 0) {
						if (bottom == QUAY_HIST_BUCKETS)
							bottom = b;
						top = b;
					}
				}
				quay_hist_bucket_range(top, &lo, &hi);
				if (cur->max < lo)
					violation(sh, "max %llu below a counted bucket from %llu", cur->max,
					    lo);
				quay_hist_bucket_range(bottom, &lo, &hi);
				if (cur->min > hi)
					violation(sh, "min %llu above a counted bucket up to %llu", cur->min,
					    hi);
			}
			memcpy(&last[k], cur, sizeof(*cur));
		}
		sh->reads++;
		if (sh->reads % 16 == 0 || final) {
			quay_stats_snap *snap;
			size_t n = 0;
			if (quay_stats_snapshot(sh->s, &snap) != 0) {
				violation(sh, "snapshot failed %llu %llu", 0, 0);
			} else {
				/* The snapshot's counter values never go backwards either. */
				for (size_t i = 0; i < quay_stats_snap_count(snap); i++) {
					const struct quay_stats_metric *m;
					quay_stats_snap_metric(snap, i, &m);
					if (strcmp(m->name, "stress_ops_total") == 0 && m->nlabels == 1) {
						size_t k = (size_t)atoi(m->labels[0].value);
						uint64_t v;
						if (k >= NCOUNTERS)
							continue;
						if (m->counter < last_c[k])
							violation(sh, "snapshot %llu < earlier read %llu",
							    m->counter, last_c[k]);
						v = quay_counter_read(sh->c[k]);
						if (v < m->counter)
							violation(sh, "read %llu < earlier snapshot %llu", v,
							    m->counter);
						last_c[k] = v;
					}
				}
				if (quay_stats_write_prometheus(snap, discard, &n) != 0 ||
				    quay_stats_write_json(snap, discard, &n) != 0)
					violation(sh, "export failed %llu %llu", 0, 0);
				quay_stats_snap_free(snap);
				sh->snaps++;
			}
		}
		if (final)
			break;
	}
	free(last);
	free(cur);
	return NULL;
}

/* Creates and destroys metrics in the registry while the others run. */
static void *
churn_main(void *p)
{
	struct shared *sh = p;
	uint64_t seed = 42;

	pthread_barrier_wait(&sh->start);
	while (__atomic_load_n(&sh->writers_done, __ATOMIC_ACQUIRE) != (int)sh->writers) {
		char v[16];
		struct quay_stats_label l = { "n", v };
		quay_counter *c;
		quay_hist *h;
		quay_gauge *g;
		snprintf(v, sizeof(v), "%u", (unsigned)(qt_rand(&seed) % 64));
		if (quay_counter_create(sh->s, "churn_total", "Churn.", &l, 1, &c) == 0) {
			quay_counter_inc(c);
			if (quay_counter_read(c) != 1)
				violation(sh, "reused cell not zeroed: %llu %llu", quay_counter_read(c), 1);
			quay_counter_destroy(c);
		}
		if (quay_hist_create(sh->s, "churn_seconds", NULL, &l, 1, &h) == 0) {
			quay_hist_record(h, 5);
			quay_hist_destroy(h);
		}
		if (quay_gauge_create(sh->s, "churn_gauge", NULL, NULL, 0, &g) == 0)
			quay_gauge_destroy(g);
		sh->churns++;
	}
	return NULL;
}

static int
run(size_t idx, const struct config *cf, uint64_t ops)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	struct shared *sh = calloc(1, sizeof(*sh));
	struct writer *w = calloc(cf->writers, sizeof(*w));
	pthread_t *wt = calloc(cf->writers, sizeof(*wt));
	pthread_t rt, ct;
	struct quay_hist_data *d = malloc(sizeof(*d));
	uint64_t(*want_b)[QUAY_HIST_BUCKETS] = calloc(NHISTS, sizeof(*want_b));
	uint64_t bad = 0, want_sum[NHISTS] = { 0 }, want_min[NHISTS], want_max[NHISTS] = { 0 };
	double t0, t1;
	int rc = 0;

	if (sh == NULL || w == NULL || wt == NULL || d == NULL || want_b == NULL) {
		fprintf(stderr, "out of memory\n");
		exit(2);
	}
	o.shards = cf->shards;
	o.hist_shards = cf->hist_shards;
	if (quay_stats_create(&o, &sh->s) != 0)
		exit(2);
	for (size_t k = 0; k < NCOUNTERS; k++) {
		char v[8];
		struct quay_stats_label l = { "k", v };
		snprintf(v, sizeof(v), "%zu", k);
		if (quay_counter_create(sh->s, "stress_ops_total", "Ops.", &l, 1, &sh->c[k]) != 0)
			exit(2);
	}
	for (size_t k = 0; k < NHISTS; k++) {
		char v[8];
		struct quay_stats_label l = { "k", v };
		snprintf(v, sizeof(v), "%zu", k);
		if (quay_hist_create(sh->s, "stress_latency_seconds", "Lat.", &l, 1, &sh->h[k]) != 0)
			exit(2);
	}
	if (quay_gauge_create(sh->s, "stress_depth", NULL, NULL, 0, &sh->g) != 0)
		exit(2);
	sh->ops = ops;
	sh->writers = cf->writers;
	pthread_barrier_init(&sh->start, NULL, cf->writers + 2);

	t0 = qt_now_s();
	for (unsigned i = 0; i < cf->writers; i++) {
		w[i].sh = sh;
		w[i].id = i;
		w[i].lives = cf->lives;
		if (pthread_create(&wt[i], NULL, writer_main, &w[i]) != 0)
			exit(2);
	}
	if (pthread_create(&rt, NULL, reader_main, sh) != 0 || pthread_create(&ct, NULL, churn_main, sh) != 0)
		exit(2);
	for (unsigned i = 0; i < cf->writers; i++)
		pthread_join(wt[i], NULL);
	pthread_join(rt, NULL);
	pthread_join(ct, NULL);
	t1 = qt_now_s();

	/* The exact totals. */
	for (size_t k = 0; k < NCOUNTERS; k++) {
		uint64_t per = ops / NCOUNTERS + (k < ops % NCOUNTERS ? 1 : 0);
		uint64_t want = per * cf->writers * counter_step(k);
		if (quay_counter_read(sh->c[k]) != want) {
			bad++;
			fprintf(stderr, "counter %zu: %" PRIu64 " != %" PRIu64 "\n", k,
			    quay_counter_read(sh->c[k]), want);
		}
	}
	{
		int64_t want = (int64_t)cf->writers * ((int64_t)((ops + 1) / 2) * 2 - (int64_t)(ops / 2));
		if (quay_gauge_read(sh->g) != want) {
			bad++;
			fprintf(stderr, "gauge: %" PRId64 " != %" PRId64 "\n", quay_gauge_read(sh->g), want);
		}
	}
	for (size_t k = 0; k < NHISTS; k++)
		want_min[k] = UINT64_MAX;
	for (unsigned i = 0; i < cf->writers; i++) {
		uint64_t seed = 0x9E3779B97F4A7C15ull * (i + 1);
		for (uint64_t n = 0; n < ops; n++) {
			uint64_t v = hist_value(&seed);
			size_t k = n % NHISTS;
			want_b[k][quay_hist_bucket_of(v)]++;
			want_sum[k] += v;
			want_min[k] = v < want_min[k] ? v : want_min[k];
			want_max[k] = v > want_max[k] ? v : want_max[k];
		}
	}
	for (size_t k = 0; k < NHISTS; k++) {
		uint64_t want_n = (ops / NHISTS + (k < ops % NHISTS ? 1 : 0)) * cf->writers;
		quay_hist_read(sh->h[k], d);
		if (d->count != want_n || d->sum != want_sum[k] || d->min != want_min[k] ||
		    d->max != want_max[k] || memcmp(d->buckets, want_b[k], sizeof(d->buckets)) != 0) {
			bad++;
			fprintf(stderr,
			    "hist %zu: count %" PRIu64 "/%" PRIu64 " sum %" PRIu64 "/%" PRIu64 " min %" PRIu64
			    "/%" PRIu64 " max %" PRIu64 "/%" PRIu64 "\n",
			    k, d->count, want_n, d->sum, want_sum[k], d->min, want_min[k], d->max,
			    want_max[k]);
		}
	}
	if (sh->violations != 0)
		fprintf(stderr, "first violation: %s\n", sh->msg);
	if (quay_stats_count(sh->s) != NCOUNTERS + NHISTS + 1) {
		bad++;
		fprintf(stderr, "registry holds %zu metrics\n", quay_stats_count(sh->s));
	}
	rc = bad != 0 || sh->violations != 0;
	printf("stress-stats[%zu] %-48s writers=%u ops=%" PRIu64 " reads=%" PRIu64 " snapshots=%" PRIu64
	       " churn=%" PRIu64 " backwards=%" PRIu64 " mismatches=%" PRIu64 " %.2fs %s\n",
	    idx, cf->what, cf->writers, ops * cf->writers * 3, sh->reads, sh->snaps, sh->churns,
	    sh->violations, bad, t1 - t0, rc ? "FAIL" : "ok");
	fflush(stdout);

	pthread_barrier_destroy(&sh->start);
	quay_stats_destroy(sh->s);
	free(sh);
	free(w);
	free(wt);
	free(d);
	free(want_b);
	return rc;
}

int
main(int argc, char **argv)
{
	uint64_t ops = DEFAULT_OPS;
	long only = -1;
	const char *scale = getenv("QUAY_STRESS_SCALE");
	int opt, fails = 0;

	while ((opt = getopt(argc, argv, "n:c:")) != -1) {
		switch (opt) {
		case 'n': ops = strtoull(optarg, NULL, 0); break;
		case 'c': only = strtol(optarg, NULL, 0); break;
		default: fprintf(stderr, "usage: %s [-n ops_per_writer] [-c config]\n", argv[0]); return 2;
		}
	}
	if (scale != NULL && atoi(scale) > 1)
		ops *= (uint64_t)atoi(scale);
	if (ops == 0 || (only >= 0 && (size_t)only >= sizeof(configs) / sizeof(configs[0]))) {
		fprintf(stderr, "bad -n or -c\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
		if (only >= 0 && (size_t)only != i)
			continue;
		/* The big configurations get fewer ops per writer. */
		uint64_t n = configs[i].writers > 4 ? ops * 4 / configs[i].writers : ops;
		/* Thread churn and 300 threads cost more per op: a quarter. */
		if (configs[i].lives > 1 || configs[i].writers > 16)
			n /= 4;
		fails += run(i, &configs[i], n);
	}
	return fails != 0;
}
