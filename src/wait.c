/* SPDX-License-Identifier: MIT */
/*
 * The out-of-line half of the sleep/wake protocol shared by the ring and
 * the priority queue: membarrier(2) registration, the heavy barrier
 * (WAIT-S1), the futex sleep and the wake. The protocol and its argument
 * are at the top of include/quay/impl/wait_inline.h; docs/RING.md tells
 * the story. Also the library's plain futex calls (quayi_futex_wait,
 * quayi_futex_wake_all) for protocols of their own (the pool's).
 * Pollable descriptors attach to the same words (src/pollfd.c).
 */
#include "clock.h"
#include "pollfd.h"
#include "quay_internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <quay/err.h>
#include <quay/impl/compiler.h>
#include <quay/impl/wait_inline.h>

static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;

static void
membarrier_register(void)
{
	long q = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);

	if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		return;
	if (getenv("QUAY_NO_MEMBARRIER") != NULL) /* tests force the fence path */
		return;
	membarrier_ok = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0;
}

bool
quayi_wait_init(void)
{
	pthread_once(&membarrier_once, membarrier_register);
	return membarrier_ok;
}

void
quayi_wait_heavy_barrier(bool fence)
{
	if (!fence && syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
		return;
	/* Fence objects fence on both sides; a failing membarrier cannot
	 * happen after a successful registration, but fence anyway. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void
quayi_futex_wake_all(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

int
quayi_futex_wait(uint32_t *word, uint32_t val, int64_t deadline)
{
	struct timespec ts, *tsp = NULL;

	if (deadline >= 0) {
		int64_t left = quayi_deadline_left(deadline);

		if (left == 0)
			return -ETIMEDOUT;
		ts = quayi_ns_to_ts(left);
		tsp = &ts;
	}
	/* Returns at once if *word is no longer val. EINTR, EAGAIN and
	 * ETIMEDOUT all send the caller back to its re-check, which sees
	 * the deadline. */
	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
	return 0;
}

void
quayi_wait_wake(uint32_t *event)
{
	/* Only the first waker after a sleeper clears the bit and makes the
	 * system call; the others see it clear. Relaxed load, release CAS:
	 * the data itself is handed over by the object (the ring's seq), not
	 * by this word; the CAS only has to be atomic against the sleepers'
	 * fetch_or. */
	uint32_t v = __atomic_load_n(event, __ATOMIC_RELAXED);

	while (v & QUAYI_WAIT_SLEEPERS) {
		if (__atomic_compare_exchange_n(event, &v, (v + QUAYI_WAIT_COUNT_ONE) & ~QUAYI_WAIT_SLEEPERS,
		        false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
			quayi_futex_wake_all(event);
			/* POLL-W1: an armed descriptor is one of the sleepers this
			 * wake ends (src/pollfd.c). POLLED is set before the first
			 * arm sets SLEEPERS, so the CAS that saw SLEEPERS sees it. */
			if (v & QUAYI_WAIT_POLLED)
				quayi_pollfd_signal_word(event);
			return;
		}
	}
}

int
quayi_wait_sleep(uint32_t *event, bool fence, bool (*ready)(const void *ctx), const void *ctx,
    int64_t deadline)
{
	uint32_t ev;

	/* Callers loop (spin, try, sleep) and a try can lose its race after
	 * ready() said yes, many times under contention: look at the clock on
	 * every round, not only before sleeping, so the overrun is one round. */
	if (quayi_deadline_passed(deadline))
		return -ETIMEDOUT;
	/* Relaxed: WAIT-S1 below orders it before the check. */
	ev = __atomic_fetch_or(event, QUAYI_WAIT_SLEEPERS, __ATOMIC_RELAXED) | QUAYI_WAIT_SLEEPERS;

	quayi_wait_heavy_barrier(fence); /* WAIT-S1 */
	if (ready(ctx))
		return 0;
	/* -ETIMEDOUT if the deadline passed meanwhile: a stale bit costs one
	 * spare wake. */
	return quayi_futex_wait(event, ev, deadline);
}

/* Spins before a waiting call sleeps: long enough to ride out a push or
 * pop in progress on another core, short next to a futex round trip. */
#define QUAYI_WAIT_SPINS 256

int
quayi_wait_for(const struct quayi_waiter *w, int64_t timeout_ns)
{
	int64_t deadline;
	int rc = w->op(w->arg);

	if (rc != -EAGAIN)
		return rc; /* done, closed, or bad input */
	if (timeout_ns == 0)
		return -ETIMEDOUT;
	deadline = quayi_deadline(timeout_ns);
	for (;;) {
		for (int i = 0; i < QUAYI_WAIT_SPINS && !w->ready(w->ready_ctx); i++)
			quayi_cpu_relax();
		rc = w->op(w->arg);
		if (rc != -EAGAIN)
			return rc;
		if (quayi_wait_sleep(w->event, w->fence, w->ready, w->ready_ctx, deadline) != 0) {
			/* Timed out: one last try uses a slot freed just now. */
			rc = w->op(w->arg);
			return rc == -EAGAIN ? -ETIMEDOUT : rc;
		}
	}
}
