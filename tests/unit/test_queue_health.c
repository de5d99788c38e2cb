/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the queue's alarms and health (src/queue_health.c,
 * quay_queue_health, opts alarm[]), on the fake clock: each alarm's
 * OK -> ALARM -> OK transitions at its boundary (raise, clear, periods),
 * the callback once per transition, the overall state, the gauges in a
 * Prometheus snapshot, and thresholds that cannot trigger (-EINVAL).
 */
#include "quay_test.h"
#include <math.h>
#include <stddef.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

#define MS ((int64_t)1000000)

static quay_pool *pool;

static int
setup(void **state)
{
	(void)state;
	return quay_pool_create((size_t)8 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(pool);
}

struct calls {
	int n;
	quay_queue_alarm last;
	bool on;
	double value;
};

static void
on_alarm(void *ctx, quay_queue *q, quay_queue_alarm a, bool on, double value)
{
	struct calls *c = ctx;

	(void)q;
	c->n++;
	c->last = a;
	c->on = on;
	c->value = value;
}

static struct quay_queue_opts
fake_opts(struct calls *c)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	qt_set_time(QT_T0);
	o.clock = qt_fake_clock;
	o.capacity = 64;
	o.visibility_ns = 1000 * MS;
	o.flags = QUAY_QUEUE_NO_JITTER | QUAY_QUEUE_NO_BACKOFF;
	o.on_alarm = on_alarm;
	o.alarm_ctx = c;
	return o;
}

static quay_queue *
mkq(struct quay_queue_opts *o)
{
	quay_queue *q = NULL;

	assert_int_equal(quay_queue_create(o, &q), 0);
	return q;
}

static void
send_n(quay_queue *q, int n)
{
	for (int i = 0; i < n; i++) {
		quay_msg *m = NULL;
		uint64_t v = (uint64_t)i;

		assert_int_equal(quay_msg_new(pool, &v, sizeof(v), &m), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
}

static struct quay_queue_health
health(quay_queue *q)
{
	struct quay_queue_health h;

	assert_int_equal(quay_queue_health(q, &h), 0);
	return h;
}

static void
recv_ack(quay_queue *q, int n)
{
	quay_lease l;

	for (int i = 0; i < n; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
}

/* Ready depth: raise 5, clear 2, 2 periods. Each transition needs two
 * evaluations in a row past its threshold; between clear and raise the
 * state holds (hysteresis); an interrupted streak starts again. */
static void
ready_depth_hysteresis(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts o = fake_opts(&c);
	struct quay_queue_health h;
	quay_queue *q;

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_READY] = (struct quay_queue_threshold){ 5, 2, 2 };
	q = mkq(&o);
	send_n(q, 4);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_READY].enabled);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_AGE].enabled);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(h.state, QUAY_QUEUE_HEALTHY);
	send_n(q, 1); /* 5: at raise */
	h = health(q);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on); /* one period of two */
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].streak, 1);
	recv_ack(q, 1); /* 4: streak broken */
	h = health(q);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].streak, 0);
	send_n(q, 1);
	h = health(q);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(c.n, 0);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(h.state, QUAY_QUEUE_DEGRADED);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.last, QUAY_QUEUE_ALARM_READY);
	assert_true(c.on);
	assert_true(c.value == 5.0);
	recv_ack(q, 3); /* 2: not below clear */
	h = health(q);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	recv_ack(q, 1); /* 1 < 2 */
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	h = health(q);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(h.state, QUAY_QUEUE_HEALTHY);
	assert_int_equal(c.n, 2);
	assert_false(c.on);
	assert_true(c.value == 1.0);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].transitions, 2);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].since_ns, QT_T0);
	quay_queue_destroy(q);
}

/* Oldest message age at the nanosecond: raise 100 ms (periods 1, clear =
 * raise): 100 ms - 1 ns is OK, 100 ms is ALARM; the ack clears it. The
 * age counts a ready message (the estimate is exact here: one message). */
static void
age_alarm_boundary(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts o = fake_opts(&c);
	quay_queue *q;

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_AGE].raise = 100 * MS;
	q = mkq(&o);
	send_n(q, 1);
	qt_set_time(QT_T0 + 100 * MS - 1);
	assert_false(health(q).alarm[QUAY_QUEUE_ALARM_AGE].on);
	qt_set_time(QT_T0 + 100 * MS);
	/* The age of a ready message is known after a receive (see docs):
	 * lease it, then the in-flight age is exact. */
	{
		quay_lease l;

		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_true(health(q).alarm[QUAY_QUEUE_ALARM_AGE].on);
		assert_int_equal(health(q).state, QUAY_QUEUE_DEGRADED);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	assert_false(health(q).alarm[QUAY_QUEUE_ALARM_AGE].on);
	assert_int_equal(c.n, 2);
	quay_queue_destroy(q);
}

/* In-flight count: raise 2, clear 1. */
static void
in_flight_alarm(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts o = fake_opts(&c);
	quay_queue *q;
	quay_lease l[2];

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_IN_FLIGHT] = (struct quay_queue_threshold){ 2, 1, 0 };
	o.max_in_flight = 2;
	q = mkq(&o);
	send_n(q, 2);
	assert_int_equal(quay_queue_receive(q, &l[0], 0), 0);
	assert_false(health(q).alarm[QUAY_QUEUE_ALARM_IN_FLIGHT].on);
	assert_int_equal(quay_queue_receive(q, &l[1], 0), 0);
	assert_true(health(q).alarm[QUAY_QUEUE_ALARM_IN_FLIGHT].on);
	assert_int_equal(quay_queue_ack(q, &l[0]), 0);
	assert_true(health(q).alarm[QUAY_QUEUE_ALARM_IN_FLIGHT].on); /* 1: not < 1 */
	assert_int_equal(quay_queue_ack(q, &l[1]), 0);
	assert_false(health(q).alarm[QUAY_QUEUE_ALARM_IN_FLIGHT].on);
	quay_msg_unref(l[0].msg);
	quay_msg_unref(l[1].msg);
	assert_int_equal(c.n, 2);
	quay_queue_destroy(q);
}

/* DLQ depth: raise 1 makes the queue FAILING once a message is
 * dead-lettered; redrive clears it. The gauges say so in a snapshot. */
static void
dlq_alarm_and_gauges(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts od = fake_opts(&c), o = fake_opts(&c);
	quay_queue *dlq, *q;
	quay_stats *reg;
	quay_stats_snap *snap;
	quay_lease l;
	char buf[16384];
	size_t len;

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &reg), 0);
	od.name = "dlq";
	od.on_alarm = NULL;
	dlq = mkq(&od);
	o.name = "work";
	o.dlq = dlq;
	o.max_attempts = 1;
	o.stats = reg;
	o.alarm[QUAY_QUEUE_ALARM_DLQ].raise = 1;
	q = mkq(&o);
	send_n(q, 1);
	assert_int_equal(health(q).state, QUAY_QUEUE_HEALTHY);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_nack(q, &l, "no"), 0);
	quay_msg_unref(l.msg);
	/* The snapshot's collect callback is an evaluation too. */
	assert_int_equal(quay_stats_snapshot(reg, &snap), 0);
	assert_int_equal(quay_stats_format_prometheus(snap, buf, sizeof(buf), &len), 0);
	quay_stats_snap_free(snap);
	assert_non_null(strstr(buf, "quay_queue_alarm{alarm=\"dlq\",queue=\"work\"} 1"));
	assert_non_null(strstr(buf, "quay_queue_health{queue=\"work\"} 2"));
	assert_int_equal(c.n, 1);
	assert_int_equal(health(q).state, QUAY_QUEUE_FAILING);
	assert_int_equal(quay_queue_redrive(dlq, q, 10, NULL), 0);
	assert_int_equal(health(q).state, QUAY_QUEUE_HEALTHY);
	assert_int_equal(quay_stats_snapshot(reg, &snap), 0);
	assert_int_equal(quay_stats_format_prometheus(snap, buf, sizeof(buf), &len), 0);
	quay_stats_snap_free(snap);
	assert_non_null(strstr(buf, "quay_queue_alarm{alarm=\"dlq\",queue=\"work\"} 0"));
	assert_non_null(strstr(buf, "quay_queue_health{queue=\"work\"} 0"));
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
	quay_stats_destroy(reg);
}

/* Failure rate over a 10 s window, at least 4 deliveries: 3 failures of 3
 * are too few to judge; the 4th makes it 1.0 (ALARM, FAILING); 12 acks
 * bring it to 4/16 = 0.25 (not below clear 0.2); once the failures leave
 * the window (a window after a sample taken after them) it reads 0 (OK). */
static void
failure_rate_window(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts o = fake_opts(&c);
	struct quay_queue_health h;
	quay_queue *q;
	quay_lease l;

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_FAILURES] = (struct quay_queue_threshold){ 0.5, 0.2, 1 };
	o.failure_window_ns = 10000 * MS;
	o.failure_min = 4;
	q = mkq(&o);
	(void)health(q); /* first sample: all 0 */
	send_n(q, 20);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
		quay_msg_unref(l.msg);
	}
	h = health(q);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_FAILURES].on);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].value == 0.0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	quay_msg_unref(l.msg);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].on);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].value == 1.0);
	assert_int_equal(h.state, QUAY_QUEUE_FAILING);
	recv_ack(q, 12);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].on);
	assert_true(fabs(h.alarm[QUAY_QUEUE_ALARM_FAILURES].value - 0.25) < 1e-12);
	/* The window is measured between samples of the counters taken at
	 * evaluations (at most one per window / 32): 10 s later, the base is
	 * still the first sample (taken at T0, before the failures). */
	qt_set_time(QT_T0 + 10000 * MS);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].on);
	qt_set_time(QT_T0 + 20000 * MS - 1);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].on);
	/* A window after the sample of T0 + 10 s, nothing happened. */
	qt_set_time(QT_T0 + 20000 * MS);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_FAILURES].value == 0.0);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_FAILURES].on);
	assert_int_equal(h.state, QUAY_QUEUE_HEALTHY);
	assert_int_equal(c.n, 2);
	quay_queue_destroy(q);
}

/* alarm_period_ns 1 s, ready depth raise 5, clear 2, 3 periods: any
 * number of evaluations (health, stats, snapshots) within a second of
 * the last counted one refresh the value and nothing else, so the alarm
 * trips on the third counted second and clears three seconds after the
 * depth fell, however often it is read. A dip seen by an evaluation that
 * does not count neither counts nor breaks the streak. */
static void
period_counts_time_not_calls(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts o = fake_opts(&c);
	struct quay_queue_health h;
	struct quay_queue_stats st;
	quay_stats_snap *snap;
	quay_stats *reg;
	quay_queue *q;

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &reg), 0);
	o.stats = reg;
	o.alarm[QUAY_QUEUE_ALARM_READY] = (struct quay_queue_threshold){ 5, 2, 3 };
	o.alarm_period_ns = 1000 * MS;
	q = mkq(&o);
	send_n(q, 5);
	for (int i = 0; i < 10; i++) {
		h = health(q);
		assert_int_equal(quay_queue_stats(q, &st), 0);
		assert_int_equal(quay_stats_snapshot(reg, &snap), 0);
		quay_stats_snap_free(snap);
	}
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].streak, 1);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	qt_set_time(QT_T0 + 1000 * MS - 1);
	for (int i = 0; i < 5; i++)
		h = health(q);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].streak, 1);
	qt_set_time(QT_T0 + 1000 * MS);
	for (int i = 0; i < 5; i++)
		h = health(q);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].streak, 2);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	/* A dip within the period: the value is refreshed, the streak kept. */
	recv_ack(q, 1);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_READY].value == 4.0);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].streak, 2);
	send_n(q, 1);
	qt_set_time(QT_T0 + 2000 * MS - 1);
	assert_false(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(c.n, 0);
	qt_set_time(QT_T0 + 2500 * MS);
	h = health(q);
	assert_true(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(h.state, QUAY_QUEUE_DEGRADED);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].since_ns, QT_T0 + 2500 * MS);
	assert_int_equal(c.n, 1);
	assert_true(c.on);
	/* Down to 1 (< clear 2): on until three counted seconds saw it. */
	recv_ack(q, 4);
	for (int i = 0; i < 10; i++)
		assert_true(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
	qt_set_time(QT_T0 + 3500 * MS);
	assert_true(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
	qt_set_time(QT_T0 + 4500 * MS);
	for (int i = 0; i < 10; i++)
		assert_true(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
	qt_set_time(QT_T0 + 5500 * MS);
	h = health(q);
	assert_false(h.alarm[QUAY_QUEUE_ALARM_READY].on);
	assert_int_equal(h.state, QUAY_QUEUE_HEALTHY);
	assert_int_equal(c.n, 2);
	assert_false(c.on);
	assert_int_equal(h.alarm[QUAY_QUEUE_ALARM_READY].transitions, 2);
	quay_queue_destroy(q);
	quay_stats_destroy(reg);
}

/* A clock that steps back (a wall clock set back) starts a new period
 * at once: the alarms do not freeze until it catches up. */
static void
period_clock_back_counts(void **state)
{
	struct calls c = { 0 };
	struct quay_queue_opts o = fake_opts(&c);
	quay_queue *q;

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_READY] = (struct quay_queue_threshold){ 1, 0, 2 };
	o.alarm_period_ns = 1000 * MS;
	q = mkq(&o);
	send_n(q, 1);
	assert_int_equal(health(q).alarm[QUAY_QUEUE_ALARM_READY].streak, 1);
	qt_set_time(QT_T0 - 3600000 * MS);
	assert_true(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
	/* ... and the period runs from the new reading. */
	recv_ack(q, 1);
	assert_true(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
	qt_set_time(QT_T0 - 3599000 * MS);
	assert_int_equal(health(q).alarm[QUAY_QUEUE_ALARM_READY].streak, 1);
	assert_int_equal(c.n, 1);
	quay_queue_destroy(q);
}

/* Thresholds that cannot trigger, and malformed ones: -EINVAL. */
static void
bad_thresholds(void **state)
{
	static const struct {
		int alarm;
		struct quay_queue_threshold t;
	} bad[] = {
		{ QUAY_QUEUE_ALARM_READY, { 65, 0, 0 } },     /* above capacity 64 */
		{ QUAY_QUEUE_ALARM_IN_FLIGHT, { 9, 0, 0 } },  /* above max_in_flight 8 */
		{ QUAY_QUEUE_ALARM_DLQ, { 1, 0, 0 } },        /* no dlq */
		{ QUAY_QUEUE_ALARM_FAILURES, { 1.5, 0, 0 } }, /* rate above 1 */
		{ QUAY_QUEUE_ALARM_AGE, { 1e30, 0, 0 } },     /* beyond int64 ns */
		{ QUAY_QUEUE_ALARM_READY, { -1, 0, 0 } },
		{ QUAY_QUEUE_ALARM_READY, { NAN, 0, 0 } },
		{ QUAY_QUEUE_ALARM_READY, { 5, 6, 0 } }, /* clear above raise */
		{ QUAY_QUEUE_ALARM_READY, { 5, NAN, 0 } },
		{ QUAY_QUEUE_ALARM_READY, { 0, 3, 0 } }, /* clear without raise */
		{ QUAY_QUEUE_ALARM_READY, { 0, 0, 2 } }, /* periods without raise */
		{ QUAY_QUEUE_ALARM_READY, { 5, 0, 1001 } },
	};
	quay_queue *q = (quay_queue *)0x1;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct quay_queue_opts o = fake_opts(NULL);

		o.max_in_flight = 8;
		o.alarm[bad[i].alarm] = bad[i].t;
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
		assert_ptr_equal(q, (quay_queue *)0x1);
	}
	{
		struct quay_queue_opts o = fake_opts(NULL);

		o.alarm[QUAY_QUEUE_ALARM_FAILURES].raise = 0.5;
		o.failure_window_ns = 1000; /* below 1 ms */
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
		o.failure_window_ns = -1;
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
		o.failure_window_ns = 0;
		o.alarm_period_ns = -1;
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
		o.alarm_period_ns = (int64_t)86400 * 1000000000 + 1; /* beyond a day */
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
		assert_ptr_equal(q, (quay_queue *)0x1);
		o.alarm_period_ns = (int64_t)86400 * 1000000000;
		q = mkq(&o);
		quay_queue_destroy(q);
		/* A caller built against the struct ending at alarm_ctx: the
		 * bytes past it are not read (every evaluation counts). */
		o.size = offsetof(struct quay_queue_opts, alarm_period_ns);
		o.alarm_period_ns = -1;
		o.on_alarm = NULL;
		o.alarm[QUAY_QUEUE_ALARM_FAILURES].raise = 0;
		o.alarm[QUAY_QUEUE_ALARM_READY] = (struct quay_queue_threshold){ 1, 0, 2 };
		q = mkq(&o);
		send_n(q, 1);
		(void)health(q);
		assert_true(health(q).alarm[QUAY_QUEUE_ALARM_READY].on);
		quay_queue_destroy(q);
		o.size = offsetof(struct quay_queue_opts, alarm_period_ns) + 1;
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	}
	assert_int_equal(quay_queue_health(NULL, NULL), -EINVAL);
	{
		struct quay_queue_opts o = fake_opts(NULL);
		struct quay_queue_health h;

		q = mkq(&o);
		assert_int_equal(quay_queue_health(q, NULL), -EINVAL);
		/* No alarm set: every alarm off, HEALTHY. */
		assert_int_equal(quay_queue_health(q, &h), 0);
		assert_int_equal(h.state, QUAY_QUEUE_HEALTHY);
		for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
			assert_false(h.alarm[i].enabled);
		quay_queue_destroy(q);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ready_depth_hysteresis),
		cmocka_unit_test(age_alarm_boundary),
		cmocka_unit_test(in_flight_alarm),
		cmocka_unit_test(dlq_alarm_and_gauges),
		cmocka_unit_test(failure_rate_window),
		cmocka_unit_test(period_counts_time_not_calls),
		cmocka_unit_test(period_clock_back_counts),
		cmocka_unit_test(bad_thresholds),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
