/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the queue's receive rate limit (src/queue_limit.c,
 * quay_queue_set_rate_limit, opts rate_per_sec / rate_burst), on the
 * fake clock: the rate over 10 s of fake time, the burst at its
 * boundary, a receiver that sleeps (in futex(2)) until a token is due,
 * close waking it, batches, and every bad input (nothing changed).
 */
#include "quay_test.h"
#include <math.h>
#include <pthread.h>
#include <stddef.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>

#define MS ((int64_t)1000000)
#define US ((int64_t)1000)

static quay_pool *pool;

static int
setup(void **state)
{
	(void)state;
	qt_set_time(QT_T0);
	return quay_pool_create((size_t)8 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(pool);
}

static struct quay_queue_opts
fake_opts(void)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	o.clock = qt_fake_clock;
	o.capacity = 64;
	o.visibility_ns = 1000 * MS;
	o.flags = QUAY_QUEUE_NO_JITTER;
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

/* Receive and ack everything a token allows now; returns how many. */
static int
drain(quay_queue *q)
{
	quay_lease l;
	int n = 0;

	while (quay_queue_receive(q, &l, 0) == 0) {
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
		n++;
	}
	return n;
}

/* 1,000/s over 10 s of fake time, the clock moved in uneven steps (each
 * shorter than the burst's 10 ms, so a receiver that keeps up never finds
 * the bucket full): the count is the burst plus rate x time (GCRA is
 * exact), so within 1 %. */
static void
rate_over_ten_seconds(void **state)
{
	static const int64_t steps[] = { 137 * US, 1 * MS, 3 * MS + 1, 50 * US, 9 * MS };
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	int64_t t = QT_T0, end = QT_T0 + 10000 * MS;
	long got = 0;
	unsigned k = 0;

	(void)state;
	qt_set_time(QT_T0);
	o.rate_per_sec = 1000;
	o.rate_burst = 10;
	q = mkq(&o);
	send_n(q, 64);
	while (t <= end) {
		int n;

		qt_set_time(t);
		n = drain(q);
		got += n;
		send_n(q, n); /* keep the queue full: the limit is the bound */
		t += steps[k++ % 5];
	}
	print_message("received %ld in 10 s of fake time at 1,000/s, burst 10\n", got);
	/* Exactly burst + 10 s x 1,000/s, give or take the last token. */
	assert_true(got >= 10000 + 10 - 1 && got <= 10000 + 10 + 1);
	assert_true(fabs((double)(got - 10) / 10000.0 - 1.0) < 0.01);
	quay_queue_destroy(q);
}

/* The burst at its boundary: after an idle spell, burst messages at
 * once and not one more; the next exactly one interval later. */
static void
burst_boundary(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;

	(void)state;
	qt_set_time(QT_T0);
	o.rate_per_sec = 100; /* 10 ms */
	o.rate_burst = 5;
	q = mkq(&o);
	send_n(q, 6);
	assert_int_equal(drain(q), 5);
	qt_set_time(QT_T0 + 10 * MS - 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
	qt_set_time(QT_T0 + 10 * MS);
	assert_int_equal(drain(q), 1);
	/* Idle (empty) for a long time: receives on the empty queue spend
	 * no token, and the bucket holds burst tokens, not one more. */
	qt_set_time(QT_T0 + 10000 * MS);
	assert_int_equal(drain(q), 0);
	assert_int_equal(drain(q), 0);
	send_n(q, 7);
	assert_int_equal(drain(q), 5);
	qt_set_time(QT_T0 + 10010 * MS - 1);
	assert_int_equal(drain(q), 0);
	qt_set_time(QT_T0 + 10010 * MS);
	assert_int_equal(drain(q), 1);
	qt_set_time(QT_T0 + 10020 * MS);
	assert_int_equal(drain(q), 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN); /* empty */
	quay_queue_destroy(q);
}

/* A batch takes one token per message: burst 3 gives a batch of 3. */
static void
batch_takes_a_token_each(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l[10];
	size_t n;

	(void)state;
	qt_set_time(QT_T0);
	o.rate_per_sec = 1;
	o.rate_burst = 3;
	q = mkq(&o);
	send_n(q, 10);
	n = quay_queue_receive_batch(q, l, 10, 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(quay_queue_ack(q, &l[i]), 0);
		quay_msg_unref(l[i].msg);
	}
	assert_int_equal(quay_queue_receive_batch(q, l, 10, 0), 0);
	qt_set_time(QT_T0 + 1000 * MS);
	n = quay_queue_receive_batch(q, l, 10, 0);
	assert_int_equal(n, 1);
	assert_int_equal(quay_queue_ack(q, &l[0]), 0);
	quay_msg_unref(l[0].msg);
	quay_queue_destroy(q);
}

struct waiter {
	quay_queue *q;
	int rc;
	int tid;
	int64_t cpu_ns;
};

static void *
wait_thread(void *arg)
{
	struct waiter *w = arg;
	quay_lease l;
	int64_t c0 = qt_thread_cpu_ns();

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_SEQ_CST);
	w->rc = quay_queue_receive(w->q, &l, 60000 * MS);
	if (w->rc == 0) {
		w->rc = quay_queue_ack(w->q, &l);
		quay_msg_unref(l.msg);
	}
	w->cpu_ns = qt_thread_cpu_ns() - c0;
	return NULL;
}

/* A long poll finding messages but no token sleeps (in futex(2)) until
 * the token is due, rather than spinning: with 1 token a second (fake),
 * the receiver is seen asleep, the fake clock moves a second, and it
 * takes the message once its computed sleep (1 s of real time) ends.
 * Its CPU time stays far below a spinning loop's. Then close wakes a
 * second sleeper with -EPIPE. */
static void
long_poll_sleeps_until_token(void **state)
{
	struct quay_queue_opts o = fake_opts();
	struct waiter w = { NULL, -99, 0, 0 };
	quay_queue *q;
	pthread_t t;

	(void)state;
	qt_set_time(QT_T0);
	o.rate_per_sec = 1;
	q = mkq(&o);
	w.q = q;
	send_n(q, 3);
	assert_int_equal(drain(q), 1);
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	if (!qt_await_futex_sleep(w.tid, 5000)) {
		assert_true(qt_join_within(t, 70000));
		fail_msg("the receiver did not sleep: it returned %d", w.rc);
	}
	qt_set_time(QT_T0 + 1000 * MS);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, 0);
	/* About one second of real time passed: a spinning receiver would
	 * have used most of it. */
	assert_true(w.cpu_ns < 200 * MS);
	/* close wakes a token sleeper. */
	w.tid = 0;
	w.rc = -99;
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w.tid, 5000));
	assert_int_equal(quay_queue_close(q), 0);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, -EPIPE);
	quay_queue_destroy(q);
}

/* The setter: a new rate takes effect, INFINITY removes the limit, and
 * bad input is -EINVAL with the limit unchanged. */
static void
set_rate_limit(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;

	(void)state;
	qt_set_time(QT_T0);
	q = mkq(&o);
	send_n(q, 30);
	assert_int_equal(quay_queue_set_rate_limit(q, 10, 2), 0);
	assert_int_equal(drain(q), 2);
	/* Bad input: nothing changes (still 10/s, burst 2). */
	assert_int_equal(quay_queue_set_rate_limit(NULL, 10, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, 0, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, -5, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, NAN, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, -INFINITY, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, 2e9, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, 1e-4, 2), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, 10, 0), -EINVAL);
	assert_int_equal(quay_queue_set_rate_limit(q, 10, QUAY_QUEUE_BURST_MAX + 1), -EINVAL);
	assert_int_equal(drain(q), 0);
	qt_set_time(QT_T0 + 100 * MS);
	assert_int_equal(drain(q), 1);
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(drain(q), 2);
	/* Removed: everything at once. */
	assert_int_equal(quay_queue_set_rate_limit(q, INFINITY, 0), 0);
	assert_int_equal(drain(q), 25);
	quay_queue_destroy(q);
}

/* Bad options: -EINVAL, no queue made. An older struct (ending at
 * compact_bytes) is accepted and has no limit. */
static void
bad_options(void **state)
{
	static const struct {
		double rate;
		uint32_t burst;
	} bad[] = {
		{ -1, 0 },
		{ -1, 1 },
		{ NAN, 1 },
		{ INFINITY, 1 },
		{ 2e9, 1 },
		{ 1e-4, 1 },
		{ 0, 3 },
		{ 10, QUAY_QUEUE_BURST_MAX + 1 },
	};
	quay_queue *q = (quay_queue *)0x1;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct quay_queue_opts o = fake_opts();

		o.rate_per_sec = bad[i].rate;
		o.rate_burst = bad[i].burst;
		assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
		assert_ptr_equal(q, (quay_queue *)0x1);
	}
	{
		struct quay_queue_opts o = fake_opts();

		o.size = offsetof(struct quay_queue_opts, rate_per_sec);
		q = mkq(&o);
		send_n(q, 10);
		assert_int_equal(drain(q), 10);
		quay_queue_destroy(q);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rate_over_ten_seconds),
		cmocka_unit_test(burst_boundary),
		cmocka_unit_test(batch_takes_a_token_each),
		cmocka_unit_test(long_poll_sleeps_until_token),
		cmocka_unit_test(set_rate_limit),
		cmocka_unit_test(bad_options),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
