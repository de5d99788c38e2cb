/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/wait_inline.h
 * The sleep/wake protocol shared by every quay object with blocking
 * calls (the ring, the priority queue). Internal: included by the module
 * headers; the names here may change between releases.
 *
 * A futex word ("event") per direction: bit 0 (QUAYI_WAIT_SLEEPERS)
 * means "someone is, or is about to be, asleep on this word"; bit 1
 * (QUAYI_WAIT_POLLED) that a file descriptor (src/pollfd.c) is attached
 * to the word; bit 2 (QUAYI_WAIT_FIRED) that the descriptor was made
 * readable since its last re-arm; bits 3..31 count wake-ups.
 *
 * Sleeper (quayi_wait_sleep, src/wait.c):
 *     ev = fetch_or(event, SLEEPERS) | SLEEPERS
 *     WAIT-S1: membarrier(PRIVATE_EXPEDITED)       (or a full fence, see below)
 *     if ready(): return                      (the object's own re-check)
 *     futex_wait(event, ev)
 * Waker, after publishing whatever ready() looks at
 * (quayi_wait_wake_if_waiting, inline):
 *     WAIT-W1: compiler barrier; if (relaxed load of event) & SLEEPERS: wake
 * membarrier(2) makes every running thread of the process execute a full
 * barrier, so either the waker's publish is visible to the sleeper's
 * ready(), or the waker's load comes after WAIT-S1 and sees the bit (or a later
 * value written by a waker that cleared the bit after our fetch_or and so
 * woke us, or made futex_wait return at once because the word is no longer
 * ev). The waker's fast path has no fence and no shared write; the first
 * waker clears the bit, so a burst of publishes after a sleep costs one
 * futex_wake.
 *
 * A pollable descriptor (POLL-*, src/pollfd.c) is one more sleeper: arming it
 * runs the sleeper's steps (set SLEEPERS, WAIT-S1, re-check) without the
 * futex wait, and quayi_wait_wake, seeing POLLED, also makes the
 * descriptor readable. The wakers' fast path is unchanged. A take that
 * finds the object empty calls quayi_wait_idle (one relaxed load when no
 * descriptor is attached) to re-arm it.
 *
 * Where membarrier(2) is unavailable (old kernel, seccomp, or
 * QUAY_NO_MEMBARRIER=1 in the environment when the first object is made),
 * quayi_wait_init() returns false and the object must pass fence = true
 * to both sides, which then use a full fence.
 */
#ifndef QUAY_IMPL_WAIT_INLINE_H
#define QUAY_IMPL_WAIT_INLINE_H

#if !defined(QUAY_ERR_H)
#error "include <quay/ring.h> or another module header, not quay/impl/wait_inline.h"
#endif

/* Bit 0 of an event word: a thread is, or is about to be, asleep on it. */
#define QUAYI_WAIT_SLEEPERS 1u
/* Bit 1: a pollable descriptor is attached to the word (src/pollfd.c). */
#define QUAYI_WAIT_POLLED 2u
/* Bit 2: the attached descriptor was signalled since its last re-arm. */
#define QUAYI_WAIT_FIRED 4u
/* The wake counter's unit (bits 3..31). */
#define QUAYI_WAIT_COUNT_ONE 8u

/* Out of line, exported because the inline wakers call it (src/wait.c):
 * clear the sleepers bit of *event, bump its counter and wake every
 * thread sleeping on it. Only the first waker after a sleeper makes the
 * system call. */
QUAY_API void quayi_wait_wake(uint32_t *event);

/* The fast side of WAIT-W1: a compiler barrier, which membarrier(2) on the
 * slow side upgrades to a full barrier; a real fence without it. The
 * object passes its (read-only after init) flags word and its fence bit:
 * the word is read after the compiler barrier, where the load is free to
 * be a one-byte test (the code the ring had before it was shared). */
static QUAYI_ALWAYS_INLINE void
quayi_wait_fast_barrier(const uint32_t *flags, uint32_t fence_bit)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (QUAYI_UNLIKELY(*flags & fence_bit))
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* WAIT-W1: after publishing, wake the sleepers on *event if there are any.
 * Relaxed: ordered by quayi_wait_fast_barrier against the sleeper's WAIT-S1.
 * The first waker clears the bit, so one wake serves a sleep episode. */
static QUAYI_ALWAYS_INLINE void
quayi_wait_wake_if_waiting(uint32_t *event, const uint32_t *flags, uint32_t fence_bit)
{
	quayi_wait_fast_barrier(flags, fence_bit);
	if (QUAYI_UNLIKELY(__atomic_load_n(event, __ATOMIC_RELAXED) & QUAYI_WAIT_SLEEPERS))
		quayi_wait_wake(event);
}

/* Out of line (src/pollfd.c): a take found the object of *event empty
 * and a descriptor is attached: re-arm it (POLL-A1). */
QUAY_API void quayi_wait_poll_idle(uint32_t *event);

/* After a take found nothing: re-arm the descriptor attached to *event,
 * if any. Relaxed: POLLED is set once, before the descriptor is handed
 * out, by the thread that then polls it; a take that misses it is one
 * that ran before anyone could have polled. */
static QUAYI_ALWAYS_INLINE void
quayi_wait_idle(uint32_t *event)
{
	if (QUAYI_UNLIKELY(__atomic_load_n(event, __ATOMIC_RELAXED) & QUAYI_WAIT_POLLED))
		quayi_wait_poll_idle(event);
}

#endif /* QUAY_IMPL_WAIT_INLINE_H */
