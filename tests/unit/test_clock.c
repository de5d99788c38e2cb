/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the library's clock and deadline home (src/clock.h) and
 * of the plain futex calls of src/wait.c (quayi_futex_wait,
 * quayi_futex_wake_all): the timeout conventions (< 0 forever, 0 now,
 * saturation at INT64_MAX), conversions, and that a futex wait ends on a
 * passed deadline, a changed word and a wake. No timing is asserted: a
 * wait that never ends fails by the join limit.
 */
#include "quay_test.h"

#include <pthread.h>
#include <sched.h>

#include <quay/quay.h>

#include "../../src/clock.h"
#include "../../src/quay_internal.h"

static void
test_deadline_conventions(void **state)
{
	int64_t before, after, d;

	(void)state;
	assert_true(QUAYI_FOREVER < 0);
	assert_int_equal(quayi_deadline(-1), QUAYI_FOREVER);
	assert_int_equal(quayi_deadline(INT64_MIN), QUAYI_FOREVER);
	before = quayi_mono_ns();
	d = quayi_deadline(0);
	after = quayi_mono_ns();
	assert_true(d >= before && d <= after);
	d = quayi_deadline(1000000000);
	assert_true(d >= before + 1000000000);
	/* Far timeouts saturate instead of overflowing. */
	assert_int_equal(quayi_deadline(INT64_MAX), INT64_MAX);
	assert_int_equal(quayi_deadline(INT64_MAX - 1), INT64_MAX);
}

static void
test_deadline_passed_and_left(void **state)
{
	int64_t now, left;

	(void)state;
	assert_false(quayi_deadline_passed(QUAYI_FOREVER));
	assert_false(quayi_deadline_passed(-123));
	assert_false(quayi_deadline_passed(INT64_MAX));
	assert_true(quayi_deadline_passed(0));
	now = quayi_mono_ns();
	assert_true(quayi_deadline_passed(now));
	assert_int_equal(quayi_deadline_left(QUAYI_FOREVER), QUAYI_FOREVER);
	assert_int_equal(quayi_deadline_left(-5), QUAYI_FOREVER);
	assert_int_equal(quayi_deadline_left(0), 0);
	assert_int_equal(quayi_deadline_left(now), 0);
	left = quayi_deadline_left(quayi_deadline(3600 * QUAYI_NS_PER_SEC));
	assert_true(left > 0 && left <= 3600 * QUAYI_NS_PER_SEC);
}

static void
test_conversions(void **state)
{
	struct timespec ts = quayi_ns_to_ts(INT64_C(1234567890123));
	struct timespec a, b, r;
	int64_t before, after;

	(void)state;
	assert_int_equal(ts.tv_sec, 1234);
	assert_int_equal(ts.tv_nsec, 567890123);
	assert_int_equal(quayi_ts_to_ns(&ts), INT64_C(1234567890123));
	ts = quayi_ns_to_ts(0);
	assert_int_equal(ts.tv_sec, 0);
	assert_int_equal(ts.tv_nsec, 0);
	assert_int_equal(quayi_ns_add_sat(1, 2), 3);
	assert_int_equal(quayi_ns_add_sat(INT64_MAX - 1, 5), INT64_MAX);
	assert_int_equal(quayi_ns_add_sat(INT64_MAX, 0), INT64_MAX);
	/* A queue's clock may be negative: no overflow in the check itself
	 * (UBSan would report INT64_MAX - a for a < 0). */
	assert_int_equal(quayi_ns_add_sat(-5, INT64_MAX), INT64_MAX - 5);
	assert_int_equal(quayi_ns_add_sat(INT64_MIN, 10), INT64_MIN + 10);

	/* The real clock, and its callback shape. */
	clock_gettime(CLOCK_REALTIME, &a);
	before = quayi_real_ns();
	after = quayi_real_clock(NULL);
	clock_gettime(CLOCK_REALTIME, &b);
	assert_true(quayi_ts_to_ns(&a) <= before && before <= after && after <= quayi_ts_to_ns(&b));

	/* Absolute times for pthread_cond_timedwait, on either clock;
	 * negative lengths count as 0, huge ones saturate. */
	clock_gettime(CLOCK_MONOTONIC, &a);
	r = quayi_abs_ts(CLOCK_MONOTONIC, QUAYI_NS_PER_SEC);
	assert_true(quayi_ts_to_ns(&r) >= quayi_ts_to_ns(&a) + QUAYI_NS_PER_SEC);
	assert_true(r.tv_nsec >= 0 && r.tv_nsec < QUAYI_NS_PER_SEC);
	r = quayi_abs_ts(CLOCK_MONOTONIC, -5);
	assert_true(quayi_ts_to_ns(&r) >= quayi_ts_to_ns(&a));
	r = quayi_abs_ts(CLOCK_REALTIME, INT64_MAX);
	assert_int_equal(quayi_ts_to_ns(&r), INT64_MAX);
}

static void
test_futex_wait_ends(void **state)
{
	uint32_t word = 0;

	(void)state;
	/* A passed deadline: -ETIMEDOUT without sleeping. */
	assert_int_equal(quayi_futex_wait(&word, 0, 0), -ETIMEDOUT);
	assert_int_equal(quayi_futex_wait(&word, 0, quayi_mono_ns()), -ETIMEDOUT);
	/* The word is not val: back at once (0), even with no deadline. */
	assert_int_equal(quayi_futex_wait(&word, 1, QUAYI_FOREVER), 0);
	/* A short deadline: sleeps until it (0: the caller re-checks), and
	 * the next call sees it passed. Loops because a wait may also end
	 * early (a signal). */
	{
		int64_t d = quayi_deadline(20 * 1000000);
		int rc, rounds = 0;

		while ((rc = quayi_futex_wait(&word, 0, d)) == 0)
			rounds++;
		assert_int_equal(rc, -ETIMEDOUT);
		assert_true(rounds >= 1);
		assert_true(quayi_deadline_passed(d));
	}
}

struct waiter {
	uint32_t word;
	int woke;
};

static void *
waiter_main(void *v)
{
	struct waiter *w = v;

	/* Acquire: pairs with the release store in the test. */
	while (__atomic_load_n(&w->word, __ATOMIC_ACQUIRE) == 0)
		(void)quayi_futex_wait(&w->word, 0, QUAYI_FOREVER);
	/* Relaxed: read after the joins. */
	__atomic_fetch_add(&w->woke, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void
test_futex_wake_all(void **state)
{
	enum { T = 3 };
	struct waiter w = { 0, 0 };
	pthread_t t[T];

	(void)state;
	for (int i = 0; i < T; i++)
		assert_int_equal(pthread_create(&t[i], NULL, waiter_main, &w), 0);
	/* Let them sleep (not required: a waiter that comes late sees the
	 * word changed and does not sleep). */
	for (int i = 0; i < 100; i++)
		sched_yield();
	/* Release: pairs with the waiters' acquire loads. */
	__atomic_store_n(&w.word, 1u, __ATOMIC_RELEASE);
	quayi_futex_wake_all(&w.word);
	for (int i = 0; i < T; i++)
		assert_true(qt_join_within(t[i], 10000));
	assert_int_equal(w.woke, T);
}

/* quay_queue_clock_tsc: CLOCK_REALTIME within 50 us (an error bound
 * far above its measured tens of ns, far below any rate mistake that
 * lasts one anchor period), never back by more than that in a thread
 * (it may be by the noise of CLOCK_REALTIME, see its contract), across the
 * calibration (about 13 ms) and while other threads read (and re-anchor)
 * it, and usable as a queue's clock. Each check brackets the reading
 * between two clock_gettime() calls, so a thread preempted in between
 * only widens the window. */
static int tsc_bad; /* set by a tsc_reader that saw a wrong reading */

static void *
tsc_reader(void *arg)
{
	const int64_t tol = 50 * 1000;
	int64_t prev = 0, start = quayi_real_ns();
	long n = 0;

	(void)arg;
	while (quayi_real_ns() - start < 60 * INT64_C(1000000) || n < 100000) {
		int64_t a = quayi_real_ns();
		int64_t x = quay_queue_clock_tsc(&n); /* ctx is ignored */
		int64_t b = quayi_real_ns();

		if (x < a - tol || x > b + tol) {
			fprintf(stderr, "tsc clock %lld outside [%lld, %lld] +- %lld\n", (long long)x,
			    (long long)a, (long long)b, (long long)tol);
			/* Relaxed: read after the join. */
			__atomic_store_n(&tsc_bad, 1, __ATOMIC_RELAXED);
			return NULL;
		}
		if (x < prev - tol) {
			fprintf(stderr, "tsc clock went back: %lld after %lld\n", (long long)x,
			    (long long)prev);
			/* Relaxed: read after the join. */
			__atomic_store_n(&tsc_bad, 1, __ATOMIC_RELAXED);
			return NULL;
		}
		prev = x;
		n++;
	}
	return NULL;
}

static void
test_tsc_clock(void **state)
{
	pthread_t t;

	(void)state;
	assert_true(quay_queue_clock_tsc(NULL) > 0);
	assert_int_equal(pthread_create(&t, NULL, tsc_reader, NULL), 0);
	(void)tsc_reader(NULL);
	assert_true(qt_join_within(t, 30000));
	assert_int_equal(__atomic_load_n(&tsc_bad, __ATOMIC_RELAXED), 0);
	/* As a queue's clock: a lease of 1 s is acked, its deadline on
	 * the same clock. */
	{
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		quay_pool *pool = NULL;
		quay_queue *q = NULL;
		quay_msg *m = NULL;
		quay_lease l;
		int64_t t0;

		o.clock = quay_queue_clock_tsc;
		o.visibility_ns = 1000 * INT64_C(1000000);
		assert_int_equal(quay_pool_create((size_t)8 << 20, NULL, &pool), 0);
		assert_int_equal(quay_queue_create(&o, &q), 0);
		assert_int_equal(quay_msg_new(pool, "x", 1, &m), 0);
		t0 = quay_queue_clock_tsc(NULL);
		assert_int_equal(quay_queue_send(q, m), 0);
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_true(l.deadline_ns >= t0 + o.visibility_ns);
		assert_true(l.deadline_ns <= quay_queue_clock_tsc(NULL) + o.visibility_ns);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
		quay_queue_destroy(q);
		quay_pool_destroy(pool);
	}
}

/* The default clocks of a queue and a pool are quay_queue_clock_tsc (the
 * queue calls it directly, not through the pointer): their stamps stay
 * within tsc_reader's tolerance of CLOCK_REALTIME, and a queue given
 * quay_queue_clock_realtime stamps within the exact bracket. */
static void
test_default_clocks(void **state)
{
	const int64_t tol = 50 * 1000;

	(void)state;
	for (int exact = 0; exact < 2; exact++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		quay_pool *pool = NULL;
		quay_queue *q = NULL;
		quay_msg *m = NULL;
		quay_lease l;
		int64_t a, b, t = exact ? 0 : tol;

		if (exact)
			o.clock = quay_queue_clock_realtime;
		o.visibility_ns = 1000 * INT64_C(1000000);
		assert_int_equal(quay_pool_create((size_t)8 << 20, NULL, &pool), 0);
		assert_int_equal(quay_queue_create(&o, &q), 0);
		for (int i = 0; i < 20000; i++) {
			a = quayi_real_ns();
			assert_int_equal(quay_msg_new(pool, "x", 1, &m), 0);
			assert_int_equal(quay_queue_send(q, m), 0);
			assert_int_equal(quay_queue_receive(q, &l, 0), 0);
			b = quayi_real_ns();
			assert_true(quay_msg_created_ns(m) >= a - tol && quay_msg_created_ns(m) <= b + tol);
			assert_true(quay_msg_enqueued_ns(m) >= a - t && quay_msg_enqueued_ns(m) <= b + t);
			assert_true(l.deadline_ns >= a - t + o.visibility_ns &&
			    l.deadline_ns <= b + t + o.visibility_ns);
			assert_int_equal(quay_queue_ack(q, &l), 0);
			quay_msg_unref(l.msg);
		}
		a = quayi_real_ns();
		assert_true(quay_queue_clock_realtime(NULL) >= a);
		assert_true(quay_queue_clock_realtime(&a) <= quayi_real_ns()); /* ctx is ignored */
		quay_queue_destroy(q);
		quay_pool_destroy(pool);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_deadline_conventions),
		QT_TEST(test_deadline_passed_and_left),
		QT_TEST(test_conversions),
		QT_TEST(test_futex_wait_ends),
		QT_TEST(test_futex_wake_all),
		QT_TEST(test_tsc_clock),
		QT_TEST(test_default_clocks),
	};

	return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
