/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/ring_inline.h
 * Layout of struct quay_ring and the bodies of its inline functions.
 * Included by quay/ring.h; do not include it directly.
 *
 * The algorithm (see docs/RING.md for the why):
 *
 *  - head and tail are free-running 63-bit positions (bit 63 of tail is
 *    the "closed" mark in multi-producer mode). Position p lives in slot
 *    p & mask.
 *  - Each slot starts with a 64-bit sequence word seq followed by the
 *    element. For position p the slot is
 *        free for the producer of p   when seq == 2p
 *        ready for the consumer of p  when seq == 2p + 1
 *    and a consumer releases it to position p + capacity with
 *    seq = 2(p + capacity). Doubling keeps "ready for p" and "free for
 *    p + 1" apart even at capacity 1. All comparisons are on the signed
 *    difference, so positions may wrap.
 *  - A multi producer claims position p with a CAS on tail after seeing
 *    the slot free; a single producer stores tail. Consumers mirror this
 *    on head. The CAS (or store) orders nothing by itself: ownership of
 *    the slot's contents passes only through seq (edges below).
 *
 * Labelled ordering edges:
 *   RING-R1 push: store-release seq = 2p+1 after writing the element
 *      -> RING-A1 pop: load-acquire seq; reads the element after.
 *   RING-R2 pop: store-release seq = 2(p+cap) after reading the element
 *      -> RING-A2 push: load-acquire seq; overwrites the slot after.
 *   WAIT-W1 push/pop: after RING-R1/RING-R2, a compiler barrier (plus a full fence when
 *      membarrier(2) is unavailable), then a relaxed load of the other
 *      side's event word -> pairs with the sleeper's membarrier WAIT-S1 in
 *      src/wait.c: either the sleeper sees our RING-R1/RING-R2, or we see the
 *      "sleepers" bit it set in the event word (the shared protocol of
 *      quay/impl/wait_inline.h).
 *   RING-C1 single-producer push: store tail (claim), barrier as WAIT-W1, relaxed
 *      load of closed -> pairs with the membarrier RING-C2 in quay_ring_close:
 *      either we see the close and retract the claim, or close's caller
 *      (and every consumer that sees closed == 2) sees the claim.
 *
 * SPSC mode (QUAY_RING_SP | QUAY_RING_SC in one process: QUAYI_RING_F_SPSC)
 * has no sequence words: the elements lie back to back after the header
 * (Lamport's ring with cached indices). The producer claims with RING-C1
 * as above (tail), copies, then publishes every position below pub; the
 * consumer frees every position below head. Each side re-reads the other's
 * index only when its cached copy says full (empty), so a burst of k costs
 * one claim, one or two memcpy and one index store, and the index lines
 * move between the cores only when a cache runs out.
 *   RING-R3 push: store-release pub = pos + k after copying the elements
 *      -> RING-A3 pop: load-acquire pub into pub_cache; reads below it after.
 *   RING-R4 pop: store-release head = pos + k after copying the elements out
 *      -> RING-A4 push: load-acquire head into head_cache; overwrites the
 *      slots below head_cache + capacity after.
 *   WAIT-W1 as above, after RING-R3 (pop_event) and RING-R4 (push_event).
 */
#ifndef QUAY_IMPL_RING_INLINE_H
#define QUAY_IMPL_RING_INLINE_H

#if !defined(QUAY_RING_H)
#error "include <quay/ring.h>, not quay/impl/ring_inline.h"
#endif

#include <quay/impl/wait_inline.h>

/* Internal flag bits stored next to the public ones. */
#define QUAYI_RING_F_FENCE 0x10000u  /* no membarrier: wakers use a full fence */
#define QUAYI_RING_F_OWNED 0x20000u  /* allocated by quay_ring_create */
#define QUAYI_RING_F_SHARED 0x40000u /* in a shared memory file (src/ring_shm.c) */
#define QUAYI_RING_F_SPSC 0x80000u   /* SP|SC in one process: no sequence words (below) */
#define QUAYI_RING_F_E8 0x100000u    /* elem_size is 8 (set by init; a hint for the fast path) */

/* The SPSC fast path: SPSC mode, 8-byte elements, membarrier available (no
 * fence). Push and pop test the flags against this once and then run the
 * SPSC body with these flags as a constant, so that the element size and
 * the fence tests fold away (the body is the same code as the general
 * SPSC path). A program built against headers without it runs the
 * general path on the same ring: the layout is the same. */
#define QUAYI_RING_SPSC8_MASK (QUAYI_RING_F_SPSC | QUAYI_RING_F_E8 | QUAYI_RING_F_FENCE)
#define QUAYI_RING_SPSC8 (QUAYI_RING_F_SPSC | QUAYI_RING_F_E8)

#define QUAYI_RING_POS_MASK (~(uint64_t)0 >> 1)
#define QUAYI_RING_CLOSED_BIT ((uint64_t)1 << 63)

/* Values of quay_ring.closed. */
#define QUAYI_RING_OPEN 0u
#define QUAYI_RING_CLOSING 1u /* close() has started */
#define QUAYI_RING_CLOSED 2u  /* close() has fenced: tail is final */

/* Bit 0 of an event word: a thread is, or is about to be, asleep on it. */
#define QUAYI_RING_SLEEPERS QUAYI_WAIT_SLEEPERS

/*
 * The ring. Transparent only so that push and pop inline into the caller:
 * read-only for users, and its layout is part of the ABI (pinned by
 * static asserts in src/ring.c). Every field is accessed with the
 * __atomic builtins where threads share it (this header must also compile
 * as C++, where <stdatomic.h> is not available before C++23).
 */
struct quay_ring {
	/* Line 0: written by init only, apart from closed (written by close). */
	uint64_t mask;    /* capacity - 1 */
	uint64_t memsize; /* quay_ring_memsize(): this header, then the slots */
	uint32_t stride;  /* 8 (seq) + elem_size */
	uint32_t elem_size;
	uint32_t flags;  /* QUAY_RING_SP/SC and QUAYI_RING_F_* */
	uint32_t closed; /* QUAYI_RING_OPEN/CLOSING/CLOSED */
	/* The allocator quay_ring_create_opts() took the ring from (NULL: the
	 * C library); read by destroy and quay_ring_fd (its descriptor's). */
	const struct quay_allocator *alloc;

	/* Producers' line: the next position to claim. In MP mode bit 63 is
	 * set by close, so that a producer's CAS fails once it is closed. */
	uint64_t tail QUAYI_ALIGNED(QUAY_CACHELINE);
	/* SPSC mode only (QUAYI_RING_F_SPSC): every position below pub is
	 * published (tail may be ahead by a claim in flight); head_cache is
	 * a value of head the producer has seen (the producer's own). */
	uint64_t pub;
	uint64_t head_cache;

	/* Consumers' line: the next position to pop. */
	uint64_t head QUAYI_ALIGNED(QUAY_CACHELINE);
	/* SPSC mode only: a value of pub the consumer has seen (its own). */
	uint64_t pub_cache;

	/* Sleepers' line: read by every push/pop (one plain load), written
	 * only by threads going to sleep and by the first waker after them.
	 * Futex words: bit 0 = someone may sleep on it (QUAYI_RING_SLEEPERS),
	 * bits 1 and 2 = a pollable descriptor's (impl/wait_inline.h),
	 * bits 3..31 = a wake counter. */
	uint32_t pop_event QUAYI_ALIGNED(QUAY_CACHELINE); /* consumers sleep here */
	uint32_t push_event;                              /* producers sleep here */
} QUAYI_ALIGNED(QUAY_CACHELINE);

/* Out-of-line slow paths (src/ring.c). */

/* Called when the slot at head is not ready (need elements wanted): tells
 * a plain empty ring (-EAGAIN) from a closed one that can never yield
 * need more elements (-EPIPE). */
QUAY_API int quayi_ring_pop_status(const struct quay_ring *r, uint64_t head, uint64_t need);

/* Out of line, for rings in shared memory (src/ring_shm.c): fill and drain
 * with the CAS forms RING-K3/RING-K4 (see there). Return how many elements
 * were published (a prefix) or delivered (packed at the front of out). */
QUAY_API size_t quayi_ring_shm_fill(struct quay_ring *r, uint64_t pos, const void *elems, size_t k);
QUAY_API size_t quayi_ring_shm_drain(struct quay_ring *r, uint64_t pos, void *out, size_t k);

/* The slots follow the header (in every process's mapping of a shared
 * ring too: no pointer is stored in the ring). */
static inline unsigned char *
quayi_ring_slot(const struct quay_ring *r, uint64_t pos)
{
	return (unsigned char *)(uintptr_t)(r + 1) + (size_t)(pos & r->mask) * r->stride;
}

static inline uint64_t *
quayi_ring_seq(unsigned char *slot)
{
	return (uint64_t *)(void *)slot;
}

/* Copy one element of esz bytes. Loops pass the ring's shape in locals:
 * the atomic stores between their iterations would otherwise make the
 * compiler reload it from the ring every time. */
static QUAYI_ALWAYS_INLINE void
quayi_ring_copy_esz(uint32_t esz, void *dst, const void *src)
{
	if (esz == 8) { /* the hot case: one 8-byte move */
		uint64_t v;
		memcpy(&v, src, 8);
		memcpy(dst, &v, 8);
	} else {
		memcpy(dst, src, esz);
	}
}

static QUAYI_ALWAYS_INLINE void
quayi_ring_copy(const struct quay_ring *r, void *dst, const void *src)
{
	quayi_ring_copy_esz(r->elem_size, dst, src);
}

/* The slot of position p, from the ring's shape held in locals. */
static QUAYI_ALWAYS_INLINE unsigned char *
quayi_ring_slot_at(unsigned char *base, uint64_t mask, uint32_t stride, uint64_t p)
{
	return base + (size_t)(p & mask) * stride;
}

/* The fast side of WAIT-W1 and RING-C1 (quayi_wait_fast_barrier): a compiler
 * barrier, which membarrier(2) on the slow side upgrades to a full
 * barrier; a real fence without it. */
static QUAYI_ALWAYS_INLINE void
quayi_ring_fast_barrier(const struct quay_ring *r)
{
	quayi_wait_fast_barrier(&r->flags, QUAYI_RING_F_FENCE);
}

/* WAIT-W1: after publishing, wake sleepers on the other side if there are any
 * (quayi_wait_wake_if_waiting: one relaxed load when nobody sleeps). */
static QUAYI_ALWAYS_INLINE void
quayi_ring_wake_if_waiting(struct quay_ring *r, uint32_t *event)
{
	quayi_wait_wake_if_waiting(event, &r->flags, QUAYI_RING_F_FENCE);
}

/*
 * Claim up to n free slots starting at the producer position; store the
 * first position in *pos. Returns how many (0 on failure, *rc says why).
 * exact: all n or nothing. sc: make the multi-producer claim CAS seq_cst
 * instead of relaxed (the same instruction on x86). The ring passes false;
 * the priority queue passes true because its non-empty bitmap (PQ-B1/PQ-B3 in
 * impl/pq_inline.h) needs the claim in the single total order.
 */
static QUAYI_ALWAYS_INLINE size_t
quayi_ring_claim_push(struct quay_ring *r, size_t n, bool exact, uint64_t *pos_out, int *rc, bool sc)
{
	uint64_t pos, k;
	int64_t dif = 0;

	if (r->flags & QUAY_RING_SP) {
		/* Only this thread writes tail: relaxed. */
		pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
		/* Relaxed: an early exit only; RING-C1 below decides. */
		if (QUAYI_UNLIKELY(__atomic_load_n(&r->closed, __ATOMIC_RELAXED) != QUAYI_RING_OPEN)) {
			*rc = -EPIPE;
			return 0;
		}
		unsigned char *base = quayi_ring_slot(r, 0);
		const uint64_t mask = r->mask;
		const uint32_t stride = r->stride;
		for (k = 0; k < n; k++) {
			uint64_t p = pos + k;
			/* RING-A2: acquire, pairs with RING-R2 in pop: the consumer of the
			 * previous lap is done with the slot. */
			uint64_t seq =
			    __atomic_load_n(quayi_ring_seq(quayi_ring_slot_at(base, mask, stride, p)),
			        __ATOMIC_ACQUIRE);
			if (seq != p << 1)
				break;
		}
		if (k == 0 || (exact && k < n)) {
			*rc = -EAGAIN;
			return 0;
		}
		/* RING-C1: claim, then check closed; retract if close came first. */
		__atomic_store_n(&r->tail, (pos + k) & QUAYI_RING_POS_MASK, __ATOMIC_RELAXED);
		quayi_ring_fast_barrier(r);
		if (QUAYI_UNLIKELY(__atomic_load_n(&r->closed, __ATOMIC_RELAXED) != QUAYI_RING_OPEN)) {
			/* A consumer that saw the claim may have gone to sleep
			 * waiting for it: the retraction must wake it (WAIT-W1). */
			__atomic_store_n(&r->tail, pos, __ATOMIC_RELAXED);
			quayi_ring_wake_if_waiting(r, &r->pop_event);
			*rc = -EPIPE;
			return 0;
		}
		*pos_out = pos;
		return (size_t)k;
	}

	unsigned char *base = quayi_ring_slot(r, 0);
	const uint64_t mask = r->mask;
	const uint32_t stride = r->stride;
	/* Relaxed: the CAS below validates the value. */
	pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
	for (;;) {
		if (QUAYI_UNLIKELY(pos & QUAYI_RING_CLOSED_BIT)) {
			*rc = -EPIPE;
			return 0;
		}
		for (k = 0; k < n; k++) {
			uint64_t p = pos + k;
			/* RING-A2: acquire, pairs with RING-R2 in pop. */
			uint64_t seq =
			    __atomic_load_n(quayi_ring_seq(quayi_ring_slot_at(base, mask, stride, p)),
			        __ATOMIC_ACQUIRE);
			dif = (int64_t)(seq - (p << 1));
			if (dif != 0)
				break;
		}
		if (k == n || (k > 0 && !exact)) {
			/* Relaxed CAS: it only elects the owner of positions
			 * pos..pos+k-1; the slot contents move through seq. */
			if (!sc &&
			    __atomic_compare_exchange_n(&r->tail, &pos, (pos + k) & QUAYI_RING_POS_MASK, true,
			        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				break;
			/* sc: PQ-B0 of impl/pq_inline.h, pairs with PQ-B2 there. */
			if (sc &&
			    __atomic_compare_exchange_n(&r->tail, &pos, (pos + k) & QUAYI_RING_POS_MASK, true,
			        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
				break;
			continue; /* pos now holds the fresh tail */
		}
		if (dif > 0) { /* another producer took p: stale */
			pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
			continue;
		}
		/* The slot still holds last lap's element: full. */
		*rc =
		    (__atomic_load_n(&r->tail, __ATOMIC_RELAXED) & QUAYI_RING_CLOSED_BIT) ? -EPIPE : -EAGAIN;
		return 0;
	}
	*pos_out = pos;
	return (size_t)k;
}

/* Copy k elements into claimed positions pos.. and publish each (RING-R1).
 * Returns k (a shared ring: how many were published, see RING-K3). */
static QUAYI_ALWAYS_INLINE size_t
quayi_ring_fill(struct quay_ring *r, uint64_t pos, const void *elems, size_t k)
{
	const unsigned char *src = (const unsigned char *)elems;
	unsigned char *base = quayi_ring_slot(r, 0);
	const uint64_t mask = r->mask;
	const uint32_t stride = r->stride, esz = r->elem_size;

	if (QUAYI_UNLIKELY(r->flags & QUAYI_RING_F_SHARED))
		return quayi_ring_shm_fill(r, pos, elems, k);
	for (size_t i = 0; i < k; i++, src += esz) {
		uint64_t p = pos + i;
		unsigned char *s = quayi_ring_slot_at(base, mask, stride, p);
		quayi_ring_copy_esz(esz, s + 8, src);
		/* RING-R1: release, pairs with RING-A1 in pop: publishes the element. */
		__atomic_store_n(quayi_ring_seq(s), (p << 1) | 1, __ATOMIC_RELEASE);
	}
	quayi_ring_wake_if_waiting(r, &r->pop_event);
	return k;
}

/* Claim up to n ready elements at the consumer position (as above). */
static QUAYI_ALWAYS_INLINE size_t
quayi_ring_claim_pop(struct quay_ring *r, size_t n, bool exact, uint64_t *pos_out, int *rc)
{
	uint64_t pos, k;
	int64_t dif = 0;
	unsigned char *base = quayi_ring_slot(r, 0);
	const uint64_t mask = r->mask;
	const uint32_t stride = r->stride;

	/* Relaxed: SC owns head; MC validates with the CAS below. */
	pos = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	for (;;) {
		for (k = 0; k < n; k++) {
			uint64_t p = pos + k;
			/* RING-A1: acquire, pairs with RING-R1 in push: the element is written. */
			uint64_t seq =
			    __atomic_load_n(quayi_ring_seq(quayi_ring_slot_at(base, mask, stride, p)),
			        __ATOMIC_ACQUIRE);
			dif = (int64_t)(seq - ((p << 1) | 1));
			if (dif != 0)
				break;
		}
		if (k == n || (k > 0 && !exact)) {
			if (r->flags & QUAY_RING_SC) {
				/* Only this thread writes head; readers (count)
				 * take a snapshot: relaxed. */
				__atomic_store_n(&r->head, (pos + k) & QUAYI_RING_POS_MASK, __ATOMIC_RELAXED);
				break;
			}
			/* Relaxed CAS: elects the owner; data moves through seq. */
			if (__atomic_compare_exchange_n(&r->head, &pos, (pos + k) & QUAYI_RING_POS_MASK, true,
			        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
				break;
			continue;
		}
		if (dif > 0 && !(r->flags & QUAY_RING_SC)) { /* stale head */
			pos = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
			continue;
		}
		*rc = quayi_ring_pop_status(r, pos, exact ? (uint64_t)n : 1);
		if (*rc == -EAGAIN)
			quayi_wait_idle(&r->pop_event); /* POLL-A1: re-arm a descriptor */
		return 0;
	}
	*pos_out = pos;
	return (size_t)k;
}

/* Copy k elements out of claimed positions pos.. and free each slot (RING-R2).
 * Returns k (a shared ring: how many were delivered, see RING-K4). */
static QUAYI_ALWAYS_INLINE size_t
quayi_ring_drain(struct quay_ring *r, uint64_t pos, void *out, size_t k)
{
	unsigned char *dst = (unsigned char *)out;
	unsigned char *base = quayi_ring_slot(r, 0);
	const uint64_t mask = r->mask;
	const uint32_t stride = r->stride, esz = r->elem_size;

	if (QUAYI_UNLIKELY(r->flags & QUAYI_RING_F_SHARED))
		return quayi_ring_shm_drain(r, pos, out, k);
	for (size_t i = 0; i < k; i++, dst += esz) {
		uint64_t p = pos + i;
		unsigned char *s = quayi_ring_slot_at(base, mask, stride, p);
		quayi_ring_copy_esz(esz, dst, s + 8);
		/* RING-R2: release, pairs with RING-A2 in push: we are done reading. */
		__atomic_store_n(quayi_ring_seq(s), (p + mask + 1) << 1, __ATOMIC_RELEASE);
	}
	quayi_ring_wake_if_waiting(r, &r->push_event);
	return k;
}

/* Whether the element at position head is published (or head moved on:
 * the pop retries). A hint for sleepers and descriptors; pop re-checks. */
static QUAYI_ALWAYS_INLINE bool
quayi_ring_head_ready(const struct quay_ring *r, uint64_t head)
{
	uint64_t seq;

	if (r->flags & QUAYI_RING_F_SPSC) /* Acquire: pairs with RING-R3. */
		return __atomic_load_n(&r->pub, __ATOMIC_ACQUIRE) != head;
	/* Acquire: pairs with RING-R1. */
	seq = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, head)), __ATOMIC_ACQUIRE);
	return (int64_t)(seq - ((head << 1) | 1)) >= 0;
}

/* quayi_ring_fast_barrier with the ring's flags already in a register
 * (they do not change after init; reading them again after the compiler
 * barrier would cost a load per call). */
static QUAYI_ALWAYS_INLINE void
quayi_ring_barrier_fl(uint32_t fl)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (QUAYI_UNLIKELY(fl & QUAYI_RING_F_FENCE))
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* quayi_ring_wake_if_waiting with the flags in a register (WAIT-W1). */
static QUAYI_ALWAYS_INLINE void
quayi_ring_wake_fl(uint32_t fl, uint32_t *event)
{
	quayi_ring_barrier_fl(fl);
	/* Relaxed: ordered by the barrier against the sleeper's WAIT-S1. */
	if (QUAYI_UNLIKELY(__atomic_load_n(event, __ATOMIC_RELAXED) & QUAYI_WAIT_SLEEPERS))
		quayi_wait_wake(event);
}

/* SPSC mode: where position pos's element lives (no sequence word). */
static QUAYI_ALWAYS_INLINE unsigned char *
quayi_ring_spsc_elem(const struct quay_ring *r, uint64_t pos)
{
	return (unsigned char *)(uintptr_t)(r + 1) + (size_t)(pos & r->mask) * r->elem_size;
}

/* SPSC mode: copy k elements between positions pos.. of the ring (elements
 * from base, mask and esz its shape, in locals) and the flat array buf, in
 * (to_ring) or out; at most two runs (the wrap). */
static QUAYI_ALWAYS_INLINE void
quayi_ring_spsc_copy(unsigned char *base, uint64_t mask, uint32_t esz, uint64_t pos, void *buf, size_t k,
    bool to_ring)
{
	unsigned char *at = base + (size_t)(pos & mask) * esz;
	size_t first = (size_t)(mask + 1 - (pos & mask));

	if (k == 1) {
		if (to_ring)
			quayi_ring_copy_esz(esz, at, buf);
		else
			quayi_ring_copy_esz(esz, buf, at);
		return;
	}
	if (first > k)
		first = k;
	size_t n1 = first * esz, n2 = (k - first) * esz;
	/* Keep both copies calls to the C library's memcpy: with esz a
	 * constant 8 (the SPSC8 fast path) gcc 12 would expand the first into
	 * rep movsq, which made a burst of 32 about 1.5x slower. */
	__asm__("" : "+r"(n1), "+r"(n2));
	if (to_ring) {
		memcpy(at, buf, n1);
		memcpy(base, (unsigned char *)buf + n1, n2);
	} else {
		memcpy(buf, at, n1);
		memcpy((unsigned char *)buf + n1, base, n2);
	}
}

/* SPSC mode push of up to n elements (exact: all n or none). Returns how
 * many; 0 with *rc = -EAGAIN (full) or -EPIPE (closed). */
static QUAYI_ALWAYS_INLINE size_t
quayi_ring_spsc_push(struct quay_ring *r, uint32_t fl, const void *elems, size_t n, bool exact, int *rc)
{
	unsigned char *base = (unsigned char *)(uintptr_t)(r + 1);
	const uint64_t mask = r->mask, cap = mask + 1;
	const uint32_t esz = (fl & QUAYI_RING_F_E8) ? 8u : r->elem_size;
	uint64_t pos, room;

	/* Relaxed: an early exit only; RING-C1 below decides. First, so that
	 * a push on a closed ring touches no producer-private field. */
	if (QUAYI_UNLIKELY(__atomic_load_n(&r->closed, __ATOMIC_RELAXED) != QUAYI_RING_OPEN)) {
		*rc = -EPIPE;
		return 0;
	}
	/* Relaxed: only this thread writes tail. */
	pos = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
	room = cap - ((pos - r->head_cache) & QUAYI_RING_POS_MASK);
	if (room < n) {
		/* RING-A4: acquire, pairs with RING-R4 in pop: the consumer is
		 * done with every slot below head. */
		r->head_cache = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
		room = cap - ((pos - r->head_cache) & QUAYI_RING_POS_MASK);
		if (room == 0 || (exact && room < n)) {
			*rc = -EAGAIN;
			return 0;
		}
		if (n > room)
			n = (size_t)room;
	}
	/* RING-C1: claim, then check closed; retract if close came first. */
	__atomic_store_n(&r->tail, (pos + n) & QUAYI_RING_POS_MASK, __ATOMIC_RELAXED);
	quayi_ring_barrier_fl(fl);
	if (QUAYI_UNLIKELY(__atomic_load_n(&r->closed, __ATOMIC_RELAXED) != QUAYI_RING_OPEN)) {
		/* A consumer that saw the claim may sleep waiting for it. */
		__atomic_store_n(&r->tail, pos, __ATOMIC_RELAXED);
		quayi_ring_wake_fl(fl, &r->pop_event);
		*rc = -EPIPE;
		return 0;
	}
	quayi_ring_spsc_copy(base, mask, esz, pos, (void *)(uintptr_t)elems, n, true);
	/* RING-R3: release, pairs with RING-A3 in pop: publishes the elements. */
	__atomic_store_n(&r->pub, (pos + n) & QUAYI_RING_POS_MASK, __ATOMIC_RELEASE);
	quayi_ring_wake_fl(fl, &r->pop_event);
	return n;
}

/* SPSC mode pop of up to n elements (exact: all n or none). Returns how
 * many; 0 with *rc = -EAGAIN (empty) or -EPIPE (closed and drained). */
static QUAYI_ALWAYS_INLINE size_t
quayi_ring_spsc_pop(struct quay_ring *r, uint32_t fl, void *out, size_t n, bool exact, int *rc)
{
	unsigned char *base = (unsigned char *)(uintptr_t)(r + 1);
	const uint64_t mask = r->mask;
	const uint32_t esz = (fl & QUAYI_RING_F_E8) ? 8u : r->elem_size;
	/* Relaxed: only this thread writes head. */
	uint64_t pos = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	uint64_t avail = (r->pub_cache - pos) & QUAYI_RING_POS_MASK;

	if (avail < n) {
		/* RING-A3: acquire, pairs with RING-R3 in push: every element
		 * below pub is written. */
		r->pub_cache = __atomic_load_n(&r->pub, __ATOMIC_ACQUIRE);
		avail = (r->pub_cache - pos) & QUAYI_RING_POS_MASK;
		if (avail == 0 || (exact && avail < n)) {
			*rc = quayi_ring_pop_status(r, pos, exact ? (uint64_t)n : 1);
			if (*rc == -EAGAIN)
				quayi_wait_idle(&r->pop_event); /* POLL-A1: re-arm a descriptor */
			return 0;
		}
		if (n > avail)
			n = (size_t)avail;
	}
	quayi_ring_spsc_copy(base, mask, esz, pos, out, n, false);
	/* RING-R4: release, pairs with RING-A4 in push: we are done reading. */
	__atomic_store_n(&r->head, (pos + n) & QUAYI_RING_POS_MASK, __ATOMIC_RELEASE);
	quayi_ring_wake_fl(fl, &r->push_event);
	return n;
}

QUAY_INLINE int
quay_ring_push(quay_ring *r, const void *elem)
{
	uint64_t pos = 0;
	int rc = 0;

	if (QUAYI_UNLIKELY(r == NULL || elem == NULL))
		return -EINVAL;
	const uint32_t fl = r->flags;
	if ((fl & QUAYI_RING_SPSC8_MASK) == QUAYI_RING_SPSC8)
		return quayi_ring_spsc_push(r, QUAYI_RING_SPSC8, elem, 1, true, &rc) ? 0 : rc;
	if (fl & QUAYI_RING_F_SPSC)
		return quayi_ring_spsc_push(r, fl, elem, 1, true, &rc) ? 0 : rc;
	if (quayi_ring_claim_push(r, 1, true, &pos, &rc, false) == 0)
		return rc;
	return quayi_ring_fill(r, pos, elem, 1) == 1 ? 0 : -EOWNERDEAD;
}

QUAY_INLINE int
quay_ring_pop(quay_ring *r, void *out)
{
	uint64_t pos = 0;
	int rc = 0;

	if (QUAYI_UNLIKELY(r == NULL || out == NULL))
		return -EINVAL;
	const uint32_t fl = r->flags;
	if ((fl & QUAYI_RING_SPSC8_MASK) == QUAYI_RING_SPSC8)
		return quayi_ring_spsc_pop(r, QUAYI_RING_SPSC8, out, 1, true, &rc) ? 0 : rc;
	if (fl & QUAYI_RING_F_SPSC)
		return quayi_ring_spsc_pop(r, fl, out, 1, true, &rc) ? 0 : rc;
	if (quayi_ring_claim_pop(r, 1, true, &pos, &rc) == 0)
		return rc;
	return quayi_ring_drain(r, pos, out, 1) == 1 ? 0 : -EOWNERDEAD;
}

QUAY_INLINE size_t
quay_ring_push_burst(quay_ring *r, const void *elems, size_t n)
{
	uint64_t pos = 0;
	int rc = 0;
	size_t k;

	if (QUAYI_UNLIKELY(r == NULL || elems == NULL || n == 0))
		return 0;
	if (n > r->mask + 1)
		n = (size_t)r->mask + 1;
	if ((r->flags & QUAYI_RING_SPSC8_MASK) == QUAYI_RING_SPSC8)
		return quayi_ring_spsc_push(r, QUAYI_RING_SPSC8, elems, n, false, &rc);
	if (r->flags & QUAYI_RING_F_SPSC)
		return quayi_ring_spsc_push(r, r->flags, elems, n, false, &rc);
	k = quayi_ring_claim_push(r, n, false, &pos, &rc, false);
	return k ? quayi_ring_fill(r, pos, elems, k) : 0;
}

QUAY_INLINE size_t
quay_ring_pop_burst(quay_ring *r, void *out, size_t n)
{
	uint64_t pos = 0;
	int rc = 0;
	size_t k;

	if (QUAYI_UNLIKELY(r == NULL || out == NULL || n == 0))
		return 0;
	if (n > r->mask + 1)
		n = (size_t)r->mask + 1;
	if ((r->flags & QUAYI_RING_SPSC8_MASK) == QUAYI_RING_SPSC8)
		return quayi_ring_spsc_pop(r, QUAYI_RING_SPSC8, out, n, false, &rc);
	if (r->flags & QUAYI_RING_F_SPSC)
		return quayi_ring_spsc_pop(r, r->flags, out, n, false, &rc);
	k = quayi_ring_claim_pop(r, n, false, &pos, &rc);
	return k ? quayi_ring_drain(r, pos, out, k) : 0;
}

QUAY_INLINE int
quay_ring_push_bulk(quay_ring *r, const void *elems, size_t n)
{
	uint64_t pos = 0;
	int rc = 0;

	if (QUAYI_UNLIKELY(r == NULL || (elems == NULL && n != 0) || n > r->mask + 1))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (r->flags & QUAYI_RING_F_SPSC)
		return quayi_ring_spsc_push(r, r->flags, elems, n, true, &rc) ? 0 : rc;
	if (quayi_ring_claim_push(r, n, true, &pos, &rc, false) == 0)
		return rc;
	return quayi_ring_fill(r, pos, elems, n) == n ? 0 : -EOWNERDEAD;
}

QUAY_INLINE int
quay_ring_pop_bulk(quay_ring *r, void *out, size_t n)
{
	uint64_t pos = 0;
	int rc = 0;

	if (QUAYI_UNLIKELY(r == NULL || (out == NULL && n != 0) || n > r->mask + 1))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (r->flags & QUAYI_RING_F_SPSC)
		return quayi_ring_spsc_pop(r, r->flags, out, n, true, &rc) ? 0 : rc;
	if (quayi_ring_claim_pop(r, n, true, &pos, &rc) == 0)
		return rc;
	return quayi_ring_drain(r, pos, out, n) == n ? 0 : -EOWNERDEAD;
}

QUAY_INLINE bool
quay_ring_is_closed(const quay_ring *r)
{
	/* Acquire: pairs with the release store of closed in close. */
	return r != NULL && __atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) != QUAYI_RING_OPEN;
}

QUAY_INLINE size_t
quay_ring_count(const quay_ring *r)
{
	uint64_t h, t, n;

	if (r == NULL)
		return 0;
	/* A snapshot. Head first, with acquire so that the tail load cannot
	 * be done before it (weakly ordered CPUs): tail never falls behind a
	 * head read earlier, so the difference is never negative; pops and
	 * pushes between the two loads can still push it past the capacity:
	 * clamp. Relaxed tail: a snapshot. */
	h = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
	t = __atomic_load_n(&r->tail, __ATOMIC_RELAXED) & QUAYI_RING_POS_MASK;
	n = (t - h) & QUAYI_RING_POS_MASK;
	return n > r->mask + 1 ? (size_t)r->mask + 1 : (size_t)n;
}

QUAY_INLINE size_t
quay_ring_capacity(const quay_ring *r)
{
	return r == NULL ? 0 : (size_t)r->mask + 1;
}

QUAY_INLINE size_t
quay_ring_elem_size(const quay_ring *r)
{
	return r == NULL ? 0 : r->elem_size;
}

#endif /* QUAY_IMPL_RING_INLINE_H */
