/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by every test program (unit tests through
 * quay_test.h, stress programs directly). No cmocka here.
 */
#ifndef QUAY_TEST_UTIL_H
#define QUAY_TEST_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* 1 in a ThreadSanitizer build (gcc or clang), else 0: stress programs
 * run a smaller CI size there (TSan is 10-20x slower per operation). */
#if defined(__SANITIZE_THREAD__)
#define QT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define QT_TSAN 1
#endif
#endif
#ifndef QT_TSAN
#define QT_TSAN 0
#endif

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

/* Remove a scratch directory and the files in it (one level: the WAL
 * tests' segment directories have no subdirectories). */
static inline void
qt_rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[4096];

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

#endif /* QUAY_TEST_UTIL_H */
