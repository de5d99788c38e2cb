/* SPDX-License-Identifier: MIT */
/*
 * Pollable descriptors attached to the event words of the wait protocol
 * (src/pollfd.c; the user's story is docs/POLLING.md). Internal.
 */
#ifndef QUAY_POLLFD_H
#define QUAY_POLLFD_H

#include <stdbool.h>
#include <stdint.h>

/* What a descriptor watches: up to two event words (a queue watches its
 * ready pq and its free lease slots), whether the object fences instead
 * of using membarrier, the object's "a take would make progress" check
 * (called after the arm's barrier) and, for a timed object, the
 * CLOCK_MONOTONIC time at which it next needs a look (< 0: none). */
struct quayi_pollfd_spec {
	uint32_t *events[2];
	unsigned nevents;
	bool fence;
	bool (*ready)(const void *ctx);
	int64_t (*due)(const void *ctx); /* NULL: not timed */
	const void *ctx;
};

/* The descriptor attached to spec->events[0], made (and armed) on the
 * first call. Returns it, or -ENOMEM (also out of descriptors). */
int quayi_pollfd_get(const struct quayi_pollfd_spec *spec);

/* POLL-W1: quayi_wait_wake cleared SLEEPERS of a POLLED word: make its
 * descriptor readable. */
void quayi_pollfd_signal_word(uint32_t *event);

/* The object owning *event is being destroyed: close and free the
 * descriptor attached to it, if any (one load when there is none). */
void quayi_pollfd_forget(uint32_t *event);

#endif /* QUAY_POLLFD_H */
