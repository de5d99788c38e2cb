/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the ring's waiting calls and of close, in all four modes.
 * meson runs this program twice: as is (sleepers use membarrier(2) where
 * the kernel has it) and with QUAY_NO_MEMBARRIER=1 (the fence fallback);
 * test_sleep_barrier_path checks that each run takes the path it claims.
 *
 * Timing is asserted as lower bounds only. A lost wake-up shows up as a
 * waiter that does not finish within a generous deadline, which fails the
 * test instead of hanging the suite.
 */
#include "quay_test.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <quay/quay.h>

#include "../../src/quay_internal.h"

#define JOIN_MS 5000 /* a woken waiter must be done well within this */

/* ---- fixture ------------------------------------------------------- */

struct fx {
	const struct qt_mode *mode;
	quay_ring *r;
	bool leak; /* a thread may still use r: do not free it */
};

static int
fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->mode = QT_MODE(state);
	if (quay_ring_create(4, 8, f->mode->flags, &f->r) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
fx_teardown(void **state)
{
	struct fx *f = *state;

	if (!f->leak)
		quay_ring_destroy(f->r);
	free(f);
	return 0;
}

static bool
multi_consumer(const struct fx *f)
{
	return !(f->mode->flags & QUAY_RING_SC);
}

static bool
multi_producer(const struct fx *f)
{
	return !(f->mode->flags & QUAY_RING_SP);
}

static void
fill(quay_ring *r, uint64_t first)
{
	size_t cap = quay_ring_capacity(r);

	for (uint64_t i = 0; i < cap; i++) {
		uint64_t v = first + i;
		assert_int_equal(quay_ring_push(r, &v), 0);
	}
	assert_int_equal(quay_ring_count(r), cap);
}

/* ---- waiter threads ------------------------------------------------ */

struct waiter {
	quay_ring *r;
	bool push;
	int64_t timeout;
	uint64_t val; /* pushed, or popped into */
	int rc;
	int done; /* atomic */
	int64_t t_start, t_end, cpu;
	pthread_t tid;
	int ktid; /* kernel thread id, atomic */
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	int64_t c0 = qt_thread_cpu_ns();

	__atomic_store_n(&w->ktid, qt_gettid(), __ATOMIC_RELEASE);
	w->t_start = qt_now_ns();
	if (w->push)
		w->rc = quay_ring_push_wait(w->r, &w->val, w->timeout);
	else
		w->rc = quay_ring_pop_wait(w->r, &w->val, w->timeout);
	w->t_end = qt_now_ns();
	w->cpu = qt_thread_cpu_ns() - c0;
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Heap-allocated: if a test fails while the thread still runs, the
 * waiter (and the ring) are leaked rather than freed under it. */
static struct waiter *
waiter_start(quay_ring *r, bool push, int64_t timeout, uint64_t val)
{
	struct waiter *w = calloc(1, sizeof(*w));

	assert_non_null(w);
	w->r = r;
	w->push = push;
	w->timeout = timeout;
	w->val = val;
	assert_int_equal(pthread_create(&w->tid, NULL, waiter_main, w), 0);
	return w;
}

static bool
waiter_done(struct waiter *w)
{
	return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE) != 0;
}

static void
waiter_join(struct fx *f, struct waiter *w)
{
	if (!qt_join_within(w->tid, JOIN_MS)) {
		f->leak = true; /* the thread still holds the ring */
		fail_msg("a waiter (%s, timeout %lld) was not woken within %d ms",
		    w->push ? "push_wait" : "pop_wait", (long long)w->timeout, JOIN_MS);
	}
}

/* Wait until waiter w sleeps in futex(2) (seen from /proc, not from the
 * ring's internals). */
static void
await_sleeping(struct fx *f, struct waiter *w)
{
	int64_t end = qt_now_ns() + JOIN_MS * QT_MS;
	int tid;

	while ((tid = __atomic_load_n(&w->ktid, __ATOMIC_ACQUIRE)) == 0) {
		if (qt_now_ns() > end)
			break;
		qt_sleep_ms(1);
	}
	if (tid == 0 || !qt_await_futex_sleep(tid, JOIN_MS)) {
		f->leak = true;
		fail_msg("the waiter never went to sleep (done: %d, rc %d)",
		    __atomic_load_n(&w->done, __ATOMIC_ACQUIRE), w->rc);
	}
}

/* A waiter that slept wall_ns must not have spun through it. The bound is
 * loose (half the time) and only checked for sleeps of 40 ms or more. */
static void
assert_slept(const struct waiter *w)
{
	int64_t wall = w->t_end - w->t_start;

	if (wall >= 40 * QT_MS && w->cpu > wall / 2)
		fail_msg("waiter used %lld ns of CPU in %lld ns: spinning, not sleeping", (long long)w->cpu,
		    (long long)wall);
}

/* ---- which barrier path ------------------------------------------- */

static void
test_sleep_barrier_path(void **state)
{
	quay_ring *r = NULL;
	bool forced = getenv("QUAY_NO_MEMBARRIER") != NULL;
	long q = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);
	bool have = q >= 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED);

	(void)state;
	assert_int_equal(quay_ring_create(2, 8, 0, &r), 0);
	if (forced) {
		assert_true(r->flags & QUAYI_RING_F_FENCE);
	} else if (have) {
		assert_false(r->flags & QUAYI_RING_F_FENCE);
	}
	print_message("      sleeper barrier: %s\n",
	    (r->flags & QUAYI_RING_F_FENCE) ? "full fence (no membarrier)" : "membarrier(2)");
	quay_ring_destroy(r);
}

/* ---- timeouts ------------------------------------------------------ */

static void
test_wait_timeout_zero(void **state)
{
	struct fx *f = *state;
	uint64_t v = 9, out = 0x1111;

	/* Possible at once: timeout 0 or -1 just does it. */
	assert_int_equal(quay_ring_push_wait(f->r, &v, 0), 0);
	v = 10;
	assert_int_equal(quay_ring_push_wait(f->r, &v, -1), 0);
	assert_int_equal(quay_ring_pop_wait(f->r, &out, 0), 0);
	assert_int_equal(out, 9);
	assert_int_equal(quay_ring_pop_wait(f->r, &out, -1), 0);
	assert_int_equal(out, 10);

	/* Empty: timeout 0 fails at once, out untouched. */
	out = 0x1111;
	assert_int_equal(quay_ring_pop_wait(f->r, &out, 0), -ETIMEDOUT);
	assert_int_equal(out, 0x1111);
	assert_int_equal(quay_ring_count(f->r), 0);

	/* Full: likewise, nothing written. */
	fill(f->r, 100);
	v = 999;
	assert_int_equal(quay_ring_push_wait(f->r, &v, 0), -ETIMEDOUT);
	assert_int_equal(quay_ring_count(f->r), 4);
	for (uint64_t i = 0; i < 4; i++) {
		assert_int_equal(quay_ring_pop_wait(f->r, &out, 0), 0);
		assert_int_equal(out, 100 + i);
	}
}

static void
test_wait_timeout_small(void **state)
{
	struct fx *f = *state;
	const int64_t to = 20 * QT_MS;
	uint64_t v = 5, out = 0x2222;
	int64_t t0, dt, c0, cpu;

	/* Empty ring: pop_wait gives up after (at least) the timeout. */
	c0 = qt_thread_cpu_ns();
	t0 = qt_now_ns();
	assert_int_equal(quay_ring_pop_wait(f->r, &out, to), -ETIMEDOUT);
	dt = qt_now_ns() - t0;
	cpu = qt_thread_cpu_ns() - c0;
	if (dt < to - QT_MS)
		fail_msg("pop_wait(20 ms) timed out after %lld ns", (long long)dt);
	if (cpu > dt / 2)
		fail_msg("pop_wait used %lld ns of CPU in %lld ns: spinning", (long long)cpu, (long long)dt);
	assert_int_equal(out, 0x2222);
	assert_int_equal(quay_ring_count(f->r), 0);

	/* A tiny timeout times out too. */
	assert_int_equal(quay_ring_pop_wait(f->r, &out, 1), -ETIMEDOUT);

	/* Full ring: push_wait likewise. */
	fill(f->r, 0);
	c0 = qt_thread_cpu_ns();
	t0 = qt_now_ns();
	assert_int_equal(quay_ring_push_wait(f->r, &v, to), -ETIMEDOUT);
	dt = qt_now_ns() - t0;
	cpu = qt_thread_cpu_ns() - c0;
	if (dt < to - QT_MS)
		fail_msg("push_wait(20 ms) timed out after %lld ns", (long long)dt);
	if (cpu > dt / 2)
		fail_msg("push_wait used %lld ns of CPU in %lld ns: spinning", (long long)cpu, (long long)dt);
	assert_int_equal(quay_ring_count(f->r), 4);
	for (uint64_t i = 0; i < 4; i++) {
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, i);
	}
}

/* ---- wake-ups by the other side ----------------------------------- */

static const int64_t forever_timeouts[] = { -1, INT64_MIN, INT64_MAX, 30 * 1000 * QT_MS };

static void
test_pop_wait_woken_by_push(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(forever_timeouts) / sizeof(forever_timeouts[0]); i++) {
		uint64_t v = 4000 + i;
		int64_t t_push;
		struct waiter *w = waiter_start(f->r, false, forever_timeouts[i], 0);

		await_sleeping(f, w);
		qt_sleep_ms(50);
		if (waiter_done(w)) {
			waiter_join(f, w);
			fail_msg("pop_wait(timeout %lld) returned %d on an empty ring",
			    (long long)forever_timeouts[i], w->rc);
		}
		t_push = qt_now_ns();
		assert_int_equal(quay_ring_push(f->r, &v), 0);
		waiter_join(f, w);
		assert_int_equal(w->rc, 0);
		assert_int_equal(w->val, v);
		assert_true(w->t_end >= t_push);
		assert_slept(w);
		free(w);
		assert_int_equal(quay_ring_count(f->r), 0);
	}
}

static void
test_push_wait_woken_by_pop(void **state)
{
	struct fx *f = *state;
	uint64_t out;

	for (size_t i = 0; i < sizeof(forever_timeouts) / sizeof(forever_timeouts[0]); i++) {
		int64_t t_pop;
		struct waiter *w;

		fill(f->r, 10);
		w = waiter_start(f->r, true, forever_timeouts[i], 77);
		await_sleeping(f, w);
		qt_sleep_ms(50);
		if (waiter_done(w)) {
			waiter_join(f, w);
			fail_msg("push_wait(timeout %lld) returned %d on a full ring",
			    (long long)forever_timeouts[i], w->rc);
		}
		t_pop = qt_now_ns();
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, 10);
		waiter_join(f, w);
		assert_int_equal(w->rc, 0);
		assert_true(w->t_end >= t_pop);
		assert_slept(w);
		free(w);
		/* The waiter's element went in last. */
		for (uint64_t k = 11; k < 14; k++) {
			assert_int_equal(quay_ring_pop(f->r, &out), 0);
			assert_int_equal(out, k);
		}
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, 77);
		assert_int_equal(quay_ring_count(f->r), 0);
	}
}

/* The brief's scenario, the other way round: this thread sleeps in
 * pop_wait(-1) while a second thread pushes after 50 ms. */
struct late_pusher {
	quay_ring *r;
	uint64_t v;
	int rc;
};

static void *
late_pusher_main(void *arg)
{
	struct late_pusher *p = arg;

	qt_sleep_ms(50);
	p->rc = quay_ring_push(p->r, &p->v);
	return NULL;
}

static void
test_pop_wait_forever_then_push_from_thread(void **state)
{
	struct fx *f = *state;
	struct late_pusher *p = calloc(1, sizeof(*p));
	pthread_t t;
	uint64_t out = 0;
	int64_t t0, dt;

	assert_non_null(p);
	p->r = f->r;
	p->v = 0x5151;
	p->rc = -1;
	assert_int_equal(pthread_create(&t, NULL, late_pusher_main, p), 0);
	t0 = qt_now_ns();
	assert_int_equal(quay_ring_pop_wait(f->r, &out, -1), 0);
	dt = qt_now_ns() - t0;
	if (!qt_join_within(t, JOIN_MS)) {
		f->leak = true;
		fail_msg("pusher thread stuck");
	}
	assert_int_equal(p->rc, 0);
	free(p);
	assert_int_equal(out, 0x5151);
	if (dt < 45 * QT_MS)
		fail_msg("pop_wait returned after %lld ns, before the push", (long long)dt);
}

/* Ping-pong through a ring of one slot: nearly every call sleeps, so a
 * lost wake-up in either direction stalls it (and fails the join). */
struct pingpong {
	quay_ring *r;
	uint64_t n;
	uint64_t bad; /* first out-of-order value + 1, or 0 */
	int rc;
};

static void *
pp_producer(void *arg)
{
	struct pingpong *p = arg;

	for (uint64_t i = 0; i < p->n; i++) {
		int rc = quay_ring_push_wait(p->r, &i, -1);
		if (rc != 0) {
			p->rc = rc;
			break;
		}
	}
	return NULL;
}

static void *
pp_consumer(void *arg)
{
	struct pingpong *p = arg;

	for (uint64_t i = 0; i < p->n; i++) {
		uint64_t v;
		int rc = quay_ring_pop_wait(p->r, &v, -1);
		if (rc != 0) {
			p->rc = rc;
			break;
		}
		if (v != i && p->bad == 0)
			p->bad = i + 1;
	}
	return NULL;
}

static void
test_wait_pingpong(void **state)
{
	struct fx *f = *state;
	quay_ring *r = NULL;
	struct pingpong *pp = calloc(2, sizeof(*pp)); /* [0] producer, [1] consumer */
	pthread_t tp, tc;

	assert_non_null(pp);
	assert_int_equal(quay_ring_create(1, 8, f->mode->flags, &r), 0);
	pp[0].r = pp[1].r = r;
	pp[0].n = pp[1].n = 3000;
	assert_int_equal(pthread_create(&tc, NULL, pp_consumer, &pp[1]), 0);
	assert_int_equal(pthread_create(&tp, NULL, pp_producer, &pp[0]), 0);
	if (!qt_join_within(tp, JOIN_MS) || !qt_join_within(tc, JOIN_MS))
		fail_msg("ping-pong stalled: lost wake-up (ring leaked)");
	assert_int_equal(pp[0].rc, 0);
	assert_int_equal(pp[1].rc, 0);
	assert_int_equal(pp[1].bad, 0);
	free(pp);
	assert_int_equal(quay_ring_count(r), 0);
	quay_ring_destroy(r);
}

/* ---- close wakes sleepers ----------------------------------------- */

static void
test_close_wakes_pop_waiters(void **state)
{
	struct fx *f = *state;
	struct waiter *w[2];
	size_t n = multi_consumer(f) ? 2 : 1; /* SC: one consumer at a time */

	for (size_t i = 0; i < n; i++)
		w[i] = waiter_start(f->r, false, -1, 0);
	for (size_t i = 0; i < n; i++)
		await_sleeping(f, w[i]);
	qt_sleep_ms(20);
	for (size_t i = 0; i < n; i++)
		assert_false(waiter_done(w[i]));
	quay_ring_close(f->r);
	for (size_t i = 0; i < n; i++) {
		waiter_join(f, w[i]);
		assert_int_equal(w[i]->rc, -EPIPE);
		assert_slept(w[i]);
		free(w[i]);
	}
}

static void
test_close_wakes_push_waiters(void **state)
{
	struct fx *f = *state;
	struct waiter *w[2];
	size_t n = multi_producer(f) ? 2 : 1; /* SP: one producer at a time */
	uint64_t out;

	fill(f->r, 20);
	for (size_t i = 0; i < n; i++)
		w[i] = waiter_start(f->r, true, -1, 900 + i);
	for (size_t i = 0; i < n; i++)
		await_sleeping(f, w[i]);
	qt_sleep_ms(20);
	for (size_t i = 0; i < n; i++)
		assert_false(waiter_done(w[i]));
	quay_ring_close(f->r);
	for (size_t i = 0; i < n; i++) {
		waiter_join(f, w[i]);
		assert_int_equal(w[i]->rc, -EPIPE);
		assert_slept(w[i]);
		free(w[i]);
	}
	/* What was in stays in, in order; the failed pushes added nothing. */
	assert_int_equal(quay_ring_count(f->r), 4);
	for (uint64_t i = 0; i < 4; i++) {
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, 20 + i);
	}
	assert_int_equal(quay_ring_pop(f->r, &out), -EPIPE);
}

/* Timed waiters are woken by close too, long before their timeout. */
static void
test_close_wakes_timed_waiter(void **state)
{
	struct fx *f = *state;
	struct waiter *w = waiter_start(f->r, false, 20 * 1000 * QT_MS, 0);

	await_sleeping(f, w);
	quay_ring_close(f->r);
	waiter_join(f, w);
	assert_int_equal(w->rc, -EPIPE);
	free(w);
}

/* ---- close, single-threaded --------------------------------------- */

static void
assert_pushes_fail_closed(quay_ring *r)
{
	uint64_t v = 31337, buf[4] = { 1, 2, 3, 4 };
	size_t before = quay_ring_count(r);

	assert_int_equal(quay_ring_push(r, &v), -EPIPE);
	assert_int_equal(quay_ring_push_burst(r, buf, 4), 0);
	assert_int_equal(quay_ring_push_burst(r, buf, 1), 0);
	assert_int_equal(quay_ring_push_bulk(r, buf, 1), -EPIPE);
	assert_int_equal(quay_ring_push_bulk(r, buf, 4), -EPIPE);
	assert_int_equal(quay_ring_push_wait(r, &v, 0), -EPIPE);
	assert_int_equal(quay_ring_push_wait(r, &v, 10 * QT_MS), -EPIPE);
	assert_int_equal(quay_ring_push_wait(r, &v, -1), -EPIPE); /* must not block */
	assert_int_equal(quay_ring_count(r), before);
	assert_true(quay_ring_is_closed(r));
}

static void
assert_pops_fail_closed(quay_ring *r)
{
	uint64_t out = 0x4444, buf[4] = { 0 };

	assert_int_equal(quay_ring_pop(r, &out), -EPIPE);
	assert_int_equal(quay_ring_pop_burst(r, buf, 4), 0);
	assert_int_equal(quay_ring_pop_bulk(r, buf, 1), -EPIPE);
	assert_int_equal(quay_ring_pop_wait(r, &out, 0), -EPIPE);
	assert_int_equal(quay_ring_pop_wait(r, &out, 10 * QT_MS), -EPIPE);
	assert_int_equal(quay_ring_pop_wait(r, &out, -1), -EPIPE); /* must not block */
	assert_int_equal(out, 0x4444);
	assert_int_equal(quay_ring_count(r), 0);
}

static void
test_close_empty(void **state)
{
	struct fx *f = *state;

	assert_false(quay_ring_is_closed(f->r));
	quay_ring_close(f->r);
	assert_true(quay_ring_is_closed(f->r));
	assert_int_equal(quay_ring_count(f->r), 0);
	assert_int_equal(quay_ring_capacity(f->r), 4);
	assert_int_equal(quay_ring_elem_size(f->r), 8);
	assert_pushes_fail_closed(f->r);
	assert_pops_fail_closed(f->r);
}

static void
test_close_drains_in_order(void **state)
{
	struct fx *f = *state;
	uint64_t v, out;

	for (v = 1; v <= 3; v++)
		assert_int_equal(quay_ring_push(f->r, &v), 0);
	quay_ring_close(f->r);
	assert_pushes_fail_closed(f->r);
	assert_int_equal(quay_ring_count(f->r), 3);
	for (v = 1; v <= 3; v++) {
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, v);
		assert_int_equal(quay_ring_count(f->r), 3 - v);
	}
	assert_pops_fail_closed(f->r);
}

static void
test_close_full(void **state)
{
	struct fx *f = *state;
	uint64_t out;

	fill(f->r, 50);
	quay_ring_close(f->r);
	assert_pushes_fail_closed(f->r); /* -EPIPE, not -EAGAIN */
	for (uint64_t i = 0; i < 4; i++) {
		assert_int_equal(quay_ring_pop_wait(f->r, &out, -1), 0);
		assert_int_equal(out, 50 + i);
	}
	assert_pops_fail_closed(f->r);
}

static void
test_close_bulk_vs_burst(void **state)
{
	struct fx *f = *state;
	uint64_t buf[4], v;

	for (v = 1; v <= 3; v++)
		assert_int_equal(quay_ring_push(f->r, &v), 0);
	quay_ring_close(f->r);

	/* Fewer than n remain and none can come: -EPIPE, nothing removed. */
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(quay_ring_pop_bulk(f->r, buf, 4), -EPIPE);
	assert_int_equal(buf[0], UINT64_C(0xeeeeeeeeeeeeeeee));
	assert_int_equal(quay_ring_count(f->r), 3);
	assert_int_equal(quay_ring_pop_bulk(f->r, buf, 5), -EINVAL); /* > capacity */
	assert_int_equal(quay_ring_pop_bulk(f->r, buf, 2), 0);
	assert_int_equal(buf[0], 1);
	assert_int_equal(buf[1], 2);
	assert_int_equal(quay_ring_pop_bulk(f->r, buf, 2), -EPIPE);
	assert_int_equal(quay_ring_count(f->r), 1);
	/* pop_burst still drains what is left. */
	assert_int_equal(quay_ring_pop_burst(f->r, buf, 4), 1);
	assert_int_equal(buf[0], 3);
	assert_pops_fail_closed(f->r);
}

static void
test_close_idempotent(void **state)
{
	struct fx *f = *state;
	uint64_t v = 8, out;

	assert_int_equal(quay_ring_push(f->r, &v), 0);
	quay_ring_close(f->r);
	quay_ring_close(f->r);
	assert_true(quay_ring_is_closed(f->r));
	quay_ring_close(f->r);
	assert_int_equal(quay_ring_count(f->r), 1);
	assert_pushes_fail_closed(f->r);
	assert_int_equal(quay_ring_pop(f->r, &out), 0);
	assert_int_equal(out, 8);
	quay_ring_close(f->r);
	assert_pops_fail_closed(f->r);
	assert_true(quay_ring_is_closed(f->r));
}

/* Close after the positions wrapped (the MP closed mark is bit 63 of tail,
 * right above the position bits). */
static void
test_close_at_wrap(void **state)
{
	struct fx *f = *state;
	uint64_t v, out;

	assert_int_equal(quayi_ring_test_set_position(f->r, (UINT64_MAX >> 1) - 1), 0);
	for (v = 0; v < 4; v++)
		assert_int_equal(quay_ring_push(f->r, &v), 0);
	quay_ring_close(f->r);
	assert_int_equal(quay_ring_count(f->r), 4);
	assert_pushes_fail_closed(f->r);
	assert_int_equal(quay_ring_pop_bulk(f->r, &out, 1), 0);
	assert_int_equal(out, 0);
	for (v = 1; v < 4; v++) {
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, v);
	}
	assert_pops_fail_closed(f->r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_sleep_barrier_path),
		QT_TEST_4(test_wait_timeout_zero, fx_setup, fx_teardown),
		QT_TEST_4(test_wait_timeout_small, fx_setup, fx_teardown),
		QT_TEST_4(test_pop_wait_woken_by_push, fx_setup, fx_teardown),
		QT_TEST_4(test_push_wait_woken_by_pop, fx_setup, fx_teardown),
		QT_TEST_4(test_pop_wait_forever_then_push_from_thread, fx_setup, fx_teardown),
		QT_TEST_4(test_wait_pingpong, fx_setup, fx_teardown),
		QT_TEST_4(test_close_wakes_pop_waiters, fx_setup, fx_teardown),
		QT_TEST_4(test_close_wakes_push_waiters, fx_setup, fx_teardown),
		QT_TEST_4(test_close_wakes_timed_waiter, fx_setup, fx_teardown),
		QT_TEST_4(test_close_empty, fx_setup, fx_teardown),
		QT_TEST_4(test_close_drains_in_order, fx_setup, fx_teardown),
		QT_TEST_4(test_close_full, fx_setup, fx_teardown),
		QT_TEST_4(test_close_bulk_vs_burst, fx_setup, fx_teardown),
		QT_TEST_4(test_close_idempotent, fx_setup, fx_teardown),
		QT_TEST_4(test_close_at_wrap, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests_name("ring-wait", tests, NULL, NULL);
}
