/* SPDX-License-Identifier: MIT */
/*
 * Collect callbacks, nanosecond gauges exported in seconds, and several
 * registries in one Prometheus exposition (quay/stats.h); and what they
 * are for (issue 11 item 5): queue and subscription gauges true at
 * snapshot time, names that match their units, HELP on every family.
 */
#include "quay_test.h"

#include <quay/bus.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

static char *
prom(quay_stats *s)
{
	quay_stats_snap *snap;
	size_t len = 0;
	char *buf;

	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(quay_stats_format_prometheus(snap, NULL, 0, &len), -ENOSPC);
	buf = malloc(len + 1);
	assert_non_null(buf);
	assert_int_equal(quay_stats_format_prometheus(snap, buf, len + 1, &len), 0);
	quay_stats_snap_free(snap);
	return buf;
}

struct cctx {
	quay_gauge *g;
	int calls;
	int64_t v;
};

static void
collect(void *arg)
{
	struct cctx *c = arg;

	c->calls++;
	quay_gauge_set(c->g, c->v);
}

static void
collector_runs_before_snapshot(void **state)
{
	quay_stats *s;
	quay_gauge *g, *other;
	struct cctx c = { NULL, 0, 42 };
	quay_stats_snap *snap;
	const struct quay_stats_metric *m;
	char *t;

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &s), 0);
	assert_int_equal(quay_gauge_create(s, "depth", "Depth", NULL, 0, &g), 0);
	assert_int_equal(quay_gauge_create(s, "other", "Other", NULL, 0, &other), 0);
	c.g = g;
	/* Bad input. */
	assert_int_equal(quay_gauge_set_collect(NULL, collect, &c), -EINVAL);
	assert_int_equal(quay_gauge_set_collect(g, NULL, &c), -EINVAL);
	assert_int_equal(quay_gauge_set_collect(other, collect, &c), 0);
	assert_int_equal(quay_gauge_set_collect(other, collect, &c), -EEXIST);
	quay_gauge_destroy(other); /* takes its collector with it */
	assert_int_equal(quay_gauge_set_collect(g, collect, &c), 0);
	assert_int_equal(quay_gauge_read(g), 0); /* nothing runs until a snapshot */
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(quay_stats_snap_metric(snap, 0, &m), 0);
	assert_int_equal(m->gauge, 42);
	quay_stats_snap_free(snap);
	c.v = 7;
	t = prom(s);
	assert_int_equal(c.calls, 2);
	assert_non_null(strstr(t, "\ndepth 7\n"));
	free(t);
	/* Destroying the gauge removes the callback. */
	quay_gauge_destroy(g);
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(c.calls, 2);
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

/* A gauge destroyed while other threads snapshot: the callback never
 * runs after destroy returns (ASan/TSan would see the freed context). */
struct race {
	quay_stats *s;
	int stop;
};

static void *
snapper(void *arg)
{
	struct race *r = arg;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		quay_stats_snap *snap;
		assert_int_equal(quay_stats_snapshot(r->s, &snap), 0);
		quay_stats_snap_free(snap);
	}
	return NULL;
}

static void
collector_removed_under_snapshots(void **state)
{
	struct race r = { NULL, 0 };
	pthread_t t[2];

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &r.s), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, snapper, &r), 0);
	for (int i = 0; i < 2000; i++) {
		struct cctx *c = malloc(sizeof(*c));
		assert_non_null(c);
		c->calls = 0;
		c->v = i;
		assert_int_equal(quay_gauge_create(r.s, "g", NULL, NULL, 0, &c->g), 0);
		assert_int_equal(quay_gauge_set_collect(c->g, collect, c), 0);
		quay_gauge_destroy(c->g);
		free(c);
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	quay_stats_destroy(r.s);
}

static void
seconds_gauge(void **state)
{
	quay_stats *s;
	quay_gauge *g, *x;
	struct quay_stats_label l = { "k", "v" };
	quay_stats_snap *snap;
	size_t len;
	char *t, json[512];

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &s), 0);
	assert_int_equal(quay_gauge_create_seconds(NULL, "a_seconds", NULL, NULL, 0, &g), -EINVAL);
	assert_int_equal(quay_gauge_create_seconds(s, "a_seconds", NULL, NULL, 0, NULL), -EINVAL);
	assert_int_equal(quay_gauge_create_seconds(s, "bad name", NULL, NULL, 0, &g), -EINVAL);
	assert_int_equal(quay_gauge_create_seconds(s, "age_seconds", "Age", &l, 1, &g), 0);
	/* One kind per family. */
	l.value = "w";
	assert_int_equal(quay_gauge_create(s, "age_seconds", "Age", &l, 1, &x), -EINVAL);
	assert_int_equal(quay_gauge_create(s, "plain", NULL, NULL, 0, &x), 0);
	assert_int_equal(quay_gauge_create_seconds(s, "plain", NULL, &l, 1, &x), -EINVAL);
	quay_gauge_set(g, 1500000000); /* 1.5 s */
	t = prom(s);
	assert_non_null(strstr(t, "age_seconds{k=\"v\"} 1.500000000\n"));
	free(t);
	quay_gauge_set(g, -250);
	t = prom(s);
	assert_non_null(strstr(t, "age_seconds{k=\"v\"} -0.000000250\n"));
	free(t);
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(quay_stats_format_json(snap, json, sizeof(json), &len), 0);
	assert_non_null(strstr(json, "\"unit\":\"ns\",\"value\":-250"));
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

static int
collect_out(void *arg, const char *data, size_t len)
{
	char **p = arg;
	size_t n = strlen(*p);

	*p = realloc(*p, n + len + 1);
	memcpy(*p + n, data, len);
	(*p)[n + len] = '\0';
	return 0;
}

static size_t
count_of(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void
many_registries(void **state)
{
	quay_stats *a, *b;
	quay_counter *c;
	quay_gauge *g;
	struct quay_stats_label la = { "r", "a" }, lb = { "r", "b" };
	quay_stats_snap *snaps[2];
	char *out = calloc(1, 1);

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &a), 0);
	assert_int_equal(quay_stats_create(NULL, &b), 0);
	assert_int_equal(quay_counter_create(a, "x_total", "X", &la, 1, &c), 0);
	quay_counter_add(c, 3);
	assert_int_equal(quay_counter_create(b, "y_total", "Y", &lb, 1, &c), 0);
	assert_int_equal(quay_counter_create(b, "x_total", "X", &lb, 1, &c), 0);
	quay_counter_add(c, 5);
	assert_int_equal(quay_gauge_create(b, "z", "Z", NULL, 0, &g), 0);
	assert_int_equal(quay_stats_snapshot(a, &snaps[0]), 0);
	assert_int_equal(quay_stats_snapshot(b, &snaps[1]), 0);
	assert_int_equal(quay_stats_write_prometheus_many(NULL, 2, collect_out, &out), -EINVAL);
	assert_int_equal(quay_stats_write_prometheus_many((const quay_stats_snap *const *)snaps, 0,
	                     collect_out, &out),
	    -EINVAL);
	assert_int_equal(quay_stats_write_prometheus_many((const quay_stats_snap *const *)snaps, 2, NULL,
	                     &out),
	    -EINVAL);
	assert_int_equal(quay_stats_write_prometheus_many((const quay_stats_snap *const *)snaps, 2,
	                     collect_out, &out),
	    0);
	/* x_total once, with both series, before y_total and z. */
	assert_string_equal(out,
	    "# HELP x_total X\n# TYPE x_total counter\nx_total{r=\"a\"} 3\nx_total{r=\"b\"} 5\n"
	    "# HELP y_total Y\n# TYPE y_total counter\ny_total{r=\"b\"} 0\n"
	    "# HELP z Z\n# TYPE z gauge\nz 0\n");
	assert_int_equal(count_of(out, "# TYPE"), 3);
	free(out);
	quay_stats_snap_free(snaps[0]);
	quay_stats_snap_free(snaps[1]);
	quay_stats_destroy(a);
	quay_stats_destroy(b);
}

/* Issue 11 item 5: a scrape after ten sends shows ready 10, with no
 * quay_queue_stats() call; the subscription's pending likewise. */
static void
queue_and_sub_gauges_true_at_snapshot(void **state)
{
	quay_stats *s;
	quay_pool *pool;
	quay_queue *q;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
	quay_bus *bus;
	quay_sub *sub;
	quay_lease l;
	char *t;

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &s), 0);
	assert_int_equal(quay_pool_create((size_t)1 << 20, NULL, &pool), 0);
	o.name = "orders";
	o.stats = s;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	bo.name = "b";
	bo.stats = s;
	assert_int_equal(quay_bus_create(&bo, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, "t", NULL, &sub), 0);
	for (int i = 0; i < 10; i++) {
		quay_msg *m;
		assert_int_equal(quay_msg_new(pool, &i, sizeof(i), &m), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
		assert_int_equal(quay_msg_new(pool, &i, sizeof(i), &m), 0);
		assert_int_equal(quay_bus_publish(bus, "t", m), 1);
	}
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	t = prom(s);
	assert_non_null(strstr(t, "\nquay_queue_ready{queue=\"orders\"} 9\n"));
	assert_non_null(strstr(t, "\nquay_queue_in_flight{queue=\"orders\"} 1\n"));
	assert_non_null(strstr(t, "\nquay_queue_delayed{queue=\"orders\"} 0\n"));
	assert_non_null(strstr(t, "\nquay_sub_pending{bus=\"b\",pattern=\"t\",sub=\"1\"} 10\n"));
	/* Units in the names; HELP on every family. */
	assert_non_null(strstr(t, "# TYPE quay_queue_ack_latency_seconds histogram\n"));
	assert_non_null(strstr(t, "# TYPE quay_queue_first_receive_latency_seconds histogram\n"));
	assert_non_null(strstr(t, "# TYPE quay_queue_oldest_age_seconds gauge\n"));
	assert_non_null(strstr(t, "# TYPE quay_sub_receive_latency_seconds histogram\n"));
	assert_null(strstr(t, "_ns"));
	assert_int_equal(count_of(t, "# HELP "), count_of(t, "# TYPE "));
	free(t);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	t = prom(s);
	assert_non_null(strstr(t, "\nquay_queue_in_flight{queue=\"orders\"} 0\n"));
	free(t);
	/* Destroyed: its collector is gone with it (a snapshot still works). */
	quay_queue_destroy(q);
	quay_bus_unsubscribe(sub);
	quay_bus_destroy(bus);
	t = prom(s);
	assert_null(strstr(t, "quay_queue_ready"));
	free(t);
	quay_stats_destroy(s);
	assert_int_equal(quay_pool_destroy(pool), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(collector_runs_before_snapshot),
		cmocka_unit_test(collector_removed_under_snapshots),
		cmocka_unit_test(seconds_gauge),
		cmocka_unit_test(many_registries),
		cmocka_unit_test(queue_and_sub_gauges_true_at_snapshot),
	};
	return cmocka_run_group_tests_name("stats_collect", tests, NULL, NULL);
}
