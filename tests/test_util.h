/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by every test program (unit tests through
 * quay_test.h, stress programs directly). No cmocka here.
 */
#ifndef QUAY_TEST_UTIL_H
#define QUAY_TEST_UTIL_H

#include <stdint.h>
#include <time.h>

/* Deterministic PRNG (xorshift64*): the same seed gives the same run. */
static inline uint64_t
qt_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(2685821657736338717);
}

/* CLOCK_MONOTONIC in nanoseconds and in seconds. */
static inline int64_t
qt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double
qt_now_s(void)
{
	return (double)qt_now_ns() * 1e-9;
}

#endif /* QUAY_TEST_UTIL_H */
