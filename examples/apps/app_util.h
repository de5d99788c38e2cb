/* SPDX-License-Identifier: MIT */
/*
 * Small helpers the applications share (clocks, a sleep, a mixer for
 * deterministic choices, a queue's held count, removing a scratch WAL
 * directory). Nothing here is quay API; each application is otherwise
 * self-contained.
 */
#ifndef QUAY_APP_UTIL_H
#define QUAY_APP_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>

static inline int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t
real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void
sleep_ns(int64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };

	nanosleep(&ts, NULL);
}

/* A 64-bit finaliser: the same pseudo-random choice for the same input,
 * so a run repeats with its seed whichever thread makes the choice. */
static inline uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

/* Messages a queue still holds: ready, delayed or in flight. */
static inline uint64_t
held(quay_queue *q)
{
	struct quay_queue_stats st;

	quay_queue_stats(q, &st);
	return st.ready + st.delayed + st.in_flight;
}

/* Remove a flat scratch directory (a WAL's segment files) and its files. */
static inline void
remove_dir(const char *dir)
{
	char path[300];
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

#endif /* QUAY_APP_UTIL_H */
