/* SPDX-License-Identifier: MIT */
/*
 * Shared header of the cmocka unit tests (tests/unit/). cmocka.h needs
 * stdarg, stddef and setjmp (and stdint for its integer types) first.
 *
 * Besides the includes it carries a few small helpers: a monotonic clock,
 * a sleep, a deterministic PRNG, a table of ring modes so that one test
 * body runs in all four producer/consumer modes, and a join with a
 * deadline so that a lost wake-up fails a test instead of hanging it.
 */
#ifndef QUAY_TEST_H
#define QUAY_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- time ---------------------------------------------------------- */

#define QT_MS ((int64_t)1000000)

/* qt_now_ns() and qt_now_s(): test_util.h. */

/* A fake CLOCK_REALTIME for the injectable clocks (queue opts.clock):
 * starts at QT_T0 and moves only by qt_set_time(). */
#define QT_T0 ((int64_t)1700000000 * 1000000000)

static inline int64_t *
qt_fake_now(void)
{
	static int64_t now = QT_T0;

	return &now;
}

static inline int64_t
qt_fake_clock(void *ctx)
{
	(void)ctx;
	/* seq_cst: pairs with qt_set_time; a test thread that moved the
	 * clock and a queue call on another thread agree on the time. */
	return __atomic_load_n(qt_fake_now(), __ATOMIC_SEQ_CST);
}

static inline void
qt_set_time(int64_t t)
{
	__atomic_store_n(qt_fake_now(), t, __ATOMIC_SEQ_CST);
}

/* CPU time used by the calling thread: a sleeping waiter uses almost none. */
static inline int64_t
qt_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void
qt_sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---- deterministic PRNG: qt_rand() in test_util.h -------------------- */


/* ---- ring modes ---------------------------------------------------- */

/* One test body runs once per mode: cmocka passes the mode as the initial
 * state. caller_mem: the fixture makes the ring with quay_ring_init() in
 * aligned_alloc memory instead of quay_ring_create(). */
struct qt_mode {
	unsigned flags;
	bool caller_mem;
};

static const struct qt_mode qt_mode_mpmc = { 0u, false };
static const struct qt_mode qt_mode_spmc = { 0x1u, false };
static const struct qt_mode qt_mode_mpsc = { 0x2u, false };
static const struct qt_mode qt_mode_spsc = { 0x3u, false };
static const struct qt_mode qt_mode_mpmc_mem = { 0u, true };
static const struct qt_mode qt_mode_spmc_mem = { 0x1u, true };
static const struct qt_mode qt_mode_mpsc_mem = { 0x2u, true };
static const struct qt_mode qt_mode_spsc_mem = { 0x3u, true };

/* The mode of the running test (its cmocka state). */
#define QT_MODE(state) ((const struct qt_mode *)*(state))

#define QT_TEST_MODE(fn, mode, tag, setup, teardown) \
	{ \
#fn " [" tag "]", fn, setup, teardown, (void *)(uintptr_t) & (mode) \
	}

/* The four modes, rings from quay_ring_create(). */
#define QT_TEST_4(fn, setup, teardown) \
	QT_TEST_MODE(fn, qt_mode_mpmc, "MPMC", setup, teardown), \
	    QT_TEST_MODE(fn, qt_mode_spmc, "SPMC", setup, teardown), \
	    QT_TEST_MODE(fn, qt_mode_mpsc, "MPSC", setup, teardown), \
	    QT_TEST_MODE(fn, qt_mode_spsc, "SPSC", setup, teardown)

/* The four modes, each with quay_ring_create() and quay_ring_init(). */
#define QT_TEST_8(fn, setup, teardown) \
	QT_TEST_4(fn, setup, teardown), QT_TEST_MODE(fn, qt_mode_mpmc_mem, "MPMC init", setup, teardown), \
	    QT_TEST_MODE(fn, qt_mode_spmc_mem, "SPMC init", setup, teardown), \
	    QT_TEST_MODE(fn, qt_mode_mpsc_mem, "MPSC init", setup, teardown), \
	    QT_TEST_MODE(fn, qt_mode_spsc_mem, "SPSC init", setup, teardown)

/* The whole-list variant for tests that take no mode. */
#define QT_TEST(fn) \
	{ \
#fn, fn, NULL, NULL, NULL \
	}

/* ---- threads ------------------------------------------------------- */

/* Join t, failing the test if it has not finished within ms. On failure
 * the thread is left running (and whatever it uses is leaked) so that the
 * test fails instead of hanging the suite. */
static inline bool
qt_join_within(pthread_t t, int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

/* The kernel thread id of the caller. */
static inline int
qt_gettid(void)
{
	return (int)syscall(SYS_gettid);
}

/* Whether thread tid of this process is blocked in futex(2), from
 * /proc/self/task/TID/syscall; where that file is unreadable, whether the
 * thread is sleeping at all (state S in .../stat). Lets tests wait until a
 * waiter really sleeps without looking at the ring's internals. */
static inline bool
qt_thread_in_futex(int tid)
{
	char path[64], buf[512];
	FILE *fp;
	bool r = false;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	fp = fopen(path, "r");
	if (fp != NULL) {
		long nr;
		if (fscanf(fp, "%ld", &nr) == 1)
			r = nr == SYS_futex;
		fclose(fp);
		return r;
	}
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	fp = fopen(path, "r");
	if (fp != NULL) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
		char *p;
		buf[n] = '\0';
		p = strrchr(buf, ')');
		r = p != NULL && p[1] == ' ' && p[2] == 'S';
		fclose(fp);
	}
	return r;
}

/* Poll until thread tid sleeps in futex(2), or ms pass. */
static inline bool
qt_await_futex_sleep(int tid, int64_t ms)
{
	int64_t end = qt_now_ns() + ms * QT_MS;

	while (!qt_thread_in_futex(tid)) {
		if (qt_now_ns() > end)
			return false;
		qt_sleep_ms(1);
	}
	return true;
}

#endif /* QUAY_TEST_H */
