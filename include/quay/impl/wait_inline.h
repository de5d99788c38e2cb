/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/wait_inline.h
 * The sleep/wake protocol shared by every quay object with blocking
 * calls (the ring, the priority queue). Internal: included by the module
 * headers; the names here may change between releases.
 *
 * A futex word ("event") per direction: bit 0 (QUAYI_WAIT_SLEEPERS)
 * means "someone is, or is about to be, asleep on this word", bits 1..31
 * count wake-ups.
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

#endif /* QUAY_IMPL_WAIT_INLINE_H */
