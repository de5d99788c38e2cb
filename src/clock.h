/* SPDX-License-Identifier: MIT */
/*
 * The library's one home for clocks, timeouts and deadlines. Private to
 * src/ (never installed); header-only, so every caller inlines the
 * clock_gettime() call.
 *
 * Two clocks:
 *   quayi_mono_ns()   CLOCK_MONOTONIC ns: every timeout and deadline of a
 *                     waiting call (it never jumps).
 *   quayi_real_ns()   CLOCK_REALTIME ns since the epoch: message times,
 *                     the default clock of the pool, bus and queue (their
 *                     clock callbacks take quayi_real_clock).
 *
 * Timeouts and deadlines, the convention every waiting call follows:
 *   a timeout is relative ns: < 0 forever, 0 "try once", > 0 bounded;
 *   a deadline is absolute CLOCK_MONOTONIC ns, or QUAYI_FOREVER (-1,
 *   any negative value) for none. quayi_deadline(timeout) converts,
 *   saturating at INT64_MAX; quayi_deadline_left() and
 *   quayi_deadline_passed() read it back.
 *
 * The futex helpers that sleep until a deadline are in src/wait.c
 * (declared in quay_internal.h).
 */
#ifndef QUAYI_CLOCK_H
#define QUAYI_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define QUAYI_NS_PER_SEC INT64_C(1000000000)
/* A deadline (or a timeout) that never passes. Any negative value means
 * the same; this is the one the code writes. */
#define QUAYI_FOREVER INT64_C(-1)

/* ns <-> struct timespec (ns >= 0). */
static inline int64_t
quayi_ts_to_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * QUAYI_NS_PER_SEC + ts->tv_nsec;
}

static inline struct timespec
quayi_ns_to_ts(int64_t ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ns / QUAYI_NS_PER_SEC);
	ts.tv_nsec = (long)(ns % QUAYI_NS_PER_SEC);
	return ts;
}

static inline int64_t
quayi_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return quayi_ts_to_ns(&ts);
}

static inline int64_t
quayi_real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return quayi_ts_to_ns(&ts);
}

/* quayi_real_ns() in the shape of the modules' clock callbacks
 * (quay_pool_opts.clock, quay_bus_opts.clock, quay_queue_opts.clock). */
static inline int64_t
quayi_real_clock(void *arg)
{
	(void)arg;
	return quayi_real_ns();
}

/* CLOCK_REALTIME ns from the calibrated TSC where it is trusted, else
 * clock_gettime(CLOCK_REALTIME) (src/clock.c): quay_queue_clock_tsc()
 * without its argument, the default clock of the queue. */
int64_t quayi_clock_fast_ns(void);
/* Take the default clock's one-time decision (whether the TSC is
 * trusted) now: called when a queue or pool is created. */
void quayi_clock_prepare(void);

/* a + b for b >= 0, saturating at INT64_MAX (times far in the future).
 * a may be negative (a queue's clock is a user callback): then a + b
 * cannot overflow. */
static inline int64_t
quayi_ns_add_sat(int64_t a, int64_t b)
{
	return a > 0 && b > INT64_MAX - a ? INT64_MAX : a + b;
}

/* The CLOCK_MONOTONIC deadline timeout_ns from now: QUAYI_FOREVER for a
 * negative timeout, now for 0, saturating at INT64_MAX. */
static inline int64_t
quayi_deadline(int64_t timeout_ns)
{
	if (timeout_ns < 0)
		return QUAYI_FOREVER;
	return quayi_ns_add_sat(quayi_mono_ns(), timeout_ns);
}

/* True once a deadline has passed (never for QUAYI_FOREVER). */
static inline bool
quayi_deadline_passed(int64_t deadline)
{
	return deadline >= 0 && quayi_mono_ns() >= deadline;
}

/* ns left until a deadline: 0 once passed, QUAYI_FOREVER for none. */
static inline int64_t
quayi_deadline_left(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return QUAYI_FOREVER;
	left = deadline - quayi_mono_ns();
	return left > 0 ? left : 0;
}

/* The absolute struct timespec ns from now on a clock, for
 * pthread_cond_timedwait() (CLOCK_MONOTONIC for a condition variable
 * made with pthread_condattr_setclock(CLOCK_MONOTONIC), CLOCK_REALTIME
 * for the default one). ns >= 0, saturating. */
static inline struct timespec
quayi_abs_ts(clockid_t clock, int64_t ns)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return quayi_ns_to_ts(quayi_ns_add_sat(quayi_ts_to_ns(&ts), ns < 0 ? 0 : ns));
}

#endif /* QUAYI_CLOCK_H */
