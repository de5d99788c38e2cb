/* SPDX-License-Identifier: MIT */
/*
 * The out-of-line half of the sleep/wake protocol shared by the ring and
 * the priority queue: membarrier(2) registration, the heavy barrier (S1),
 * the futex sleep and the wake. The protocol and its argument are at the
 * top of include/quay/impl/wait_inline.h; docs/RING.md tells the story.
 */
#include "quay_internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <quay/ring.h>

static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;

static void
membarrier_register(void)
{
	long q = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);

	if (q < 0 || !(q & MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		return;
	if (getenv("QUAY_NO_MEMBARRIER") != NULL)   /* tests force the fence path */
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
quayi_wait_wake(uint32_t *event)
{
	/* Only the first waker after a sleeper clears the bit and makes the
	 * system call; the others see it clear. Relaxed load, release CAS:
	 * the data itself is handed over by the object (the ring's seq), not
	 * by this word; the CAS only has to be atomic against the sleepers'
	 * fetch_or. */
	uint32_t v = __atomic_load_n(event, __ATOMIC_RELAXED);

	while (v & QUAYI_WAIT_SLEEPERS) {
		if (__atomic_compare_exchange_n(event, &v, (v + 2) & ~QUAYI_WAIT_SLEEPERS, false,
		        __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
			syscall(SYS_futex, event, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
			return;
		}
	}
}

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
quayi_wait_deadline(int64_t timeout_ns)
{
	if (timeout_ns < 0)
		return -1;
	int64_t now = now_ns();
	return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

int
quayi_wait_sleep(uint32_t *event, bool fence, bool (*ready)(const void *ctx),
    const void *ctx, int64_t deadline)
{
	struct timespec ts, *tsp = NULL;
	uint32_t ev;

	/* Callers loop (spin, try, sleep) and a try can lose its race after
	 * ready() said yes, many times under contention: look at the clock on
	 * every round, not only before sleeping, so the overrun is one round. */
	if (deadline >= 0 && now_ns() >= deadline)
		return -ETIMEDOUT;
	/* Relaxed: S1 below orders it before the check. */
	ev = __atomic_fetch_or(event, QUAYI_WAIT_SLEEPERS, __ATOMIC_RELAXED) | QUAYI_WAIT_SLEEPERS;

	quayi_wait_heavy_barrier(fence);                     /* S1 */
	if (ready(ctx))
		return 0;
	if (deadline >= 0) {
		int64_t left = deadline - now_ns();
		if (left <= 0)
			return -ETIMEDOUT;            /* a stale bit costs one spare wake */
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tsp = &ts;
	}
	/* Returns at once if *event moved on since ev. EINTR, EAGAIN and
	 * ETIMEDOUT all send the caller back to retry, which sees the deadline. */
	syscall(SYS_futex, event, FUTEX_WAIT_PRIVATE, ev, tsp, NULL, 0);
	return 0;
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
		return rc;                    /* done, closed, or bad input */
	if (timeout_ns == 0)
		return -ETIMEDOUT;
	deadline = quayi_wait_deadline(timeout_ns);
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
