/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/pq_inline.h
 * Layout of struct quay_pq and the bodies of its inline functions.
 * Included by quay/pq.h; do not include it directly.
 *
 * The algorithm (see docs/PQ.md for the why):
 *
 *  - Level L is a multi-producer/multi-consumer quay ring. The elements
 *    move through the rings exactly as in quay/ring.h (RING-R1/RING-A1, RING-R2/RING-A2).
 *  - bitmap bit L (word L / 64) says "level L may be non-empty". A pusher
 *    sets it after publishing; a popper that finds level L empty clears
 *    it, then re-checks level L and sets it again if a push slipped in.
 *    Invariant: at quiescence every non-empty level has its bit set, so
 *    no element is ever invisible to pop. (Bits may be stale the other
 *    way round: set for an empty level; the next pop that looks clears
 *    it.)
 *  - Weighted mode adds a scheduler word sched = cursor << 32 | credit,
 *    advanced by one compare-and-swap per pop (see quay/pq.h).
 *
 * Labelled ordering edges (besides the rings' own):
 *   PQ-B0 push: the claim of the slot on level L's ring: a seq_cst CAS on its
 *      tail (quayi_ring_claim_push with sc = true).
 *   PQ-B1 push, after PQ-B0 and RING-R1: seq_cst load of bitmap word; if bit L is
 *      clear, relaxed fetch_or sets it.
 *   PQ-B2 pop, level L found empty with nothing claimed: seq_cst fetch_and
 *      clears bit L.
 *   PQ-B3 pop, after PQ-B2: seq_cst load of L's tail; if a position past head is
 *      claimed, relaxed fetch_or sets bit L again, then WAIT-W1 (below).
 *   PQ-B0/PQ-B1 against PQ-B2/PQ-B3 is a store-buffering pattern; all four are in the
 *   single total order S of seq_cst operations. Suppose that at
 *   quiescence level L holds an element E (claimed by B0_E) and bit L is
 *   clear. Take the last write to bit L in the word's modification order:
 *   it is some popper's PQ-B2 (every PQ-B3 re-set or PQ-B1 set is followed by a
 *   clear). If E's pusher ran the fetch_or of PQ-B1, it comes before that PQ-B2,
 *   so its PQ-B1 load did too; if it skipped the fetch_or, its PQ-B1 load saw
 *   the bit set, which it could not do after that PQ-B2 in S (a seq_cst load
 *   reads the last seq_cst write before it or later, and no later write
 *   sets the bit). Either way B0_E < B1_E < PQ-B2 < PQ-B3 in S, so PQ-B3 saw E's
 *   claim, found tail != head (E was not popped) and set the bit again,
 *   after PQ-B2: a contradiction. On x86 PQ-B0 and PQ-B2 are locked instructions
 *   and the seq_cst loads plain moves, so the protocol adds no fence to
 *   either side; on AArch64 the loads are ldar.
 *   WAIT-W1 push: after PQ-B1, quayi_wait_wake_if_waiting(pop_event) -> pairs with
 *      WAIT-S1 in pop_wait (src/wait.c): the sleeper's ready() check reads the
 *      bitmap and the heads of the marked levels, so either it sees E or
 *      the pusher (or the popper that re-set the bit in PQ-B3) sees it sleep.
 *   WAIT-W1 pop: after RING-A1/RING-R2, the same on push_event for push_wait.
 *   PQ-K1 weighted pop: relaxed CAS on sched. It only elects which level the
 *      next pop serves; elements move through the rings. PQ-K2 (relaxed CAS)
 *      drops the credit of a level found empty; PQ-K3 (relaxed CAS) undoes
 *      a move of the cursor to a level found empty (its bit was stale).
 */
#ifndef QUAY_IMPL_PQ_INLINE_H
#define QUAY_IMPL_PQ_INLINE_H

#if !defined(QUAY_PQ_H)
#error "include <quay/pq.h>, not quay/impl/pq_inline.h"
#endif

#include <quay/impl/wait_inline.h>

/* Internal flag bits stored next to the public ones. */
#define QUAYI_PQ_F_FENCE 0x10000u  /* no membarrier: wakers use a full fence */
#define QUAYI_PQ_F_OWNED 0x20000u  /* allocated by quay_pq_create */
#define QUAYI_PQ_F_SHARED 0x40000u /* in a shared memory file (src/pq_shm.c) */

#define QUAYI_PQ_WORDS 4u /* bitmap words: 4 x 64 = QUAY_PQ_LEVELS_MAX */

/* Values of quay_pq.closed. */
#define QUAYI_PQ_OPEN 0u
#define QUAYI_PQ_CLOSING 1u /* close() has started */
#define QUAYI_PQ_CLOSED 2u  /* every level's ring is closed */

/*
 * The priority queue. Transparent only so that push and pop inline into
 * the caller: read-only for users, and its layout is part of the ABI
 * (pinned by static asserts in src/pq.c). Shared fields are accessed with
 * the __atomic builtins (this header must also compile as C++).
 *
 * Memory (quay_pq_memsize bytes, one block): this header (256 bytes),
 * the weights (levels x 4 bytes, rounded up to 64), then `levels` rings of
 * ring_stride bytes each (quay_ring_memsize rounded up to 64). The block
 * holds no pointer into itself (offsets from the header instead), so it
 * can be mapped at different addresses by several processes.
 */
struct quay_pq {
	/* Line 0: written by init only, apart from closed (written by close). */
	uint64_t rings_off;   /* level L's ring at (char *)pq + rings_off + L * ring_stride */
	uint64_t weights_off; /* weight of each level (weighted mode), uint32_t each */
	uint64_t ring_stride;
	uint64_t capacity; /* per level */
	uint32_t levels;
	uint32_t nwords; /* bitmap words in use: (levels + 63) / 64 */
	uint32_t elem_size;
	uint32_t flags;  /* QUAY_PQ_WEIGHTED and QUAYI_PQ_F_* */
	uint32_t closed; /* QUAYI_PQ_OPEN/CLOSING/CLOSED */
	/* quay_pq_create()'s allocator (NULL: the C library); read by destroy
	 * and quay_pq_fd (its descriptor's). NULL and never read in a queue
	 * in shared memory. */
	const struct quay_allocator *alloc;

	/* Bitmap line: read by every push and pop, written only when a level
	 * turns empty or non-empty. */
	uint64_t bitmap[QUAYI_PQ_WORDS] QUAYI_ALIGNED(QUAY_CACHELINE);

	/* Weighted scheduler line: cursor << 32 | credit (PQ-K1). The cursor is
	 * a level, or `levels` before the first pop (above the top). */
	uint64_t sched QUAYI_ALIGNED(QUAY_CACHELINE);

	/* Sleepers' line: futex words of the wait protocol
	 * (quay/impl/wait_inline.h), one per direction for the whole queue. */
	uint32_t pop_event QUAYI_ALIGNED(QUAY_CACHELINE); /* consumers sleep here */
	uint32_t push_event;                              /* producers sleep here */
} QUAYI_ALIGNED(QUAY_CACHELINE);

/* Out-of-line slow path (src/pq.c): pops from a closed queue whose bitmap
 * showed nothing, scanning every level from the top. Returns how many it
 * popped; if 0, *rc is -EAGAIN (a push is still in flight) or -EPIPE
 * (closed and drained). */
QUAY_API size_t quayi_pq_pop_closed(struct quay_pq *pq, unsigned char *out, size_t n, unsigned *prios_out,
    int *rc);

static QUAYI_ALWAYS_INLINE struct quay_ring *
quayi_pq_ring(const struct quay_pq *pq, unsigned level)
{
	return (struct quay_ring *)(void *)((unsigned char *)(uintptr_t)pq + pq->rings_off +
	    (size_t)level * pq->ring_stride);
}

static QUAYI_ALWAYS_INLINE uint32_t
quayi_pq_weight(const struct quay_pq *pq, unsigned level)
{
	return ((const uint32_t *)(const void *)((const unsigned char *)pq + pq->weights_off))[level];
}

/* Out of line (src/pq_shm.c): wake every process asleep on *event of a
 * queue in shared memory (a shared futex). */
QUAY_API void quayi_pq_shm_wake(uint32_t *event);

/* WAIT-W1: after publishing, wake the sleepers on *event if there are any
 * (as quayi_wait_wake_if_waiting; a queue in shared memory carries
 * QUAYI_PQ_F_FENCE, so the barrier is a full fence, and wakes with a
 * shared futex). Relaxed load: ordered by the barrier against WAIT-S1. */
static QUAYI_ALWAYS_INLINE void
quayi_pq_wake_if_waiting(struct quay_pq *pq, uint32_t *event)
{
	quayi_wait_fast_barrier(&pq->flags, QUAYI_PQ_F_FENCE);
	if (QUAYI_UNLIKELY(__atomic_load_n(event, __ATOMIC_RELAXED) & QUAYI_WAIT_SLEEPERS)) {
		if (pq->flags & QUAYI_PQ_F_SHARED)
			quayi_pq_shm_wake(event);
		else
			quayi_wait_wake(event);
	}
}

static QUAYI_ALWAYS_INLINE uint32_t
quayi_pq_fence(const struct quay_pq *pq)
{
	return pq->flags & QUAYI_PQ_F_FENCE;
}

/* Highest set bit of bits[] below index lim (lim <= 256), or -1. */
static QUAYI_ALWAYS_INLINE int
quayi_pq_highest_below(const uint64_t *bits, unsigned lim)
{
	int w = (int)(lim >> 6);

	if (lim & 63) {
		uint64_t m = bits[w] & (((uint64_t)1 << (lim & 63)) - 1);
		if (m)
			return w * 64 + 63 - __builtin_clzll(m);
	}
	for (w--; w >= 0; w--)
		if (bits[w])
			return w * 64 + 63 - __builtin_clzll(bits[w]);
	return -1;
}

/* PQ-B1: after publishing on level L, make sure bit L is set. */
static QUAYI_ALWAYS_INLINE void
quayi_pq_mark(struct quay_pq *pq, unsigned level)
{
	uint64_t *word = &pq->bitmap[(level >> 6) & (QUAYI_PQ_WORDS - 1)]; /* level < 256 */
	uint64_t bit = (uint64_t)1 << (level & 63);

	/* PQ-B1: seq_cst load, ordered after PQ-B0 in S (see the top of this file).
	 * The common case, bit already set, writes nothing. */
	if (!(__atomic_load_n(word, __ATOMIC_SEQ_CST) & bit))
		/* Relaxed: only atomicity against PQ-B2 is needed; the proof
		 * above orders it through the PQ-B1 load. */
		__atomic_fetch_or(word, bit, __ATOMIC_RELAXED);
}

/* PQ-B2/PQ-B3: a pop found level L empty. Clear its bit unless something is
 * claimed there, then re-check and set it again if a push slipped in. */
static QUAYI_ALWAYS_INLINE void
quayi_pq_level_empty(struct quay_pq *pq, unsigned level)
{
	struct quay_ring *r = quayi_pq_ring(pq, level);
	uint64_t *word = &pq->bitmap[(level >> 6) & (QUAYI_PQ_WORDS - 1)]; /* level < 256 */
	uint64_t bit = (uint64_t)1 << (level & 63);
	uint64_t h, t;

	/* Relaxed: hints. Already clear (another popper did it), or a push
	 * claimed a slot that is not yet published: keep things as they are
	 * (that pusher's PQ-B1 follows). */
	if (!(__atomic_load_n(word, __ATOMIC_RELAXED) & bit))
		return;
	h = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	t = __atomic_load_n(&r->tail, __ATOMIC_RELAXED) & QUAYI_RING_POS_MASK;
	if (t != h)
		return;
	/* PQ-B2: seq_cst, pairs with PQ-B0/PQ-B1 in push. */
	__atomic_fetch_and(word, ~bit, __ATOMIC_SEQ_CST);
	/* Relaxed head: a stale (smaller) head only makes us re-set the bit
	 * needlessly. */
	h = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	/* PQ-B3: seq_cst, after PQ-B2 in S: sees the claim PQ-B0 of any push whose PQ-B1
	 * load did not see PQ-B2. */
	t = __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST) & QUAYI_RING_POS_MASK;
	if (t != h) {
		/* Relaxed: as the fetch_or of PQ-B1. */
		__atomic_fetch_or(word, bit, __ATOMIC_RELAXED);
		/* WAIT-W1: a pop_wait sleeper may have checked the bitmap between
		 * PQ-B2 and here, after the pusher's own WAIT-W1 found nobody asleep. */
		quayi_pq_wake_if_waiting(pq, &pq->pop_event);
	}
}

/* Pop up to n elements from level L's ring into out. Returns how many. */
static QUAYI_ALWAYS_INLINE size_t
quayi_pq_level_pop(struct quay_pq *pq, unsigned level, unsigned char *out, size_t n, unsigned *prios_out)
{
	struct quay_ring *r = quayi_pq_ring(pq, level);
	uint64_t pos = 0;
	int rc = 0;
	size_t k;

	if (n > pq->capacity)
		n = (size_t)pq->capacity;
	/* RING-A1 inside: acquire on the slots' seq, pairs with RING-R1 in push. */
	k = quayi_ring_claim_pop(r, n, false, &pos, &rc);
	if (k == 0)
		return 0;
	/* RING-R2 inside. (Its WAIT-W1 on the ring's own word is a load of a line
	 * nobody writes: pq waiters sleep on the pq's words.) In shared memory
	 * fewer than k may be delivered (RING-K4 lost to a repair). */
	k = quayi_ring_drain(r, pos, out, k);
	if (prios_out != NULL)
		for (size_t i = 0; i < k; i++)
			prios_out[i] = level;
	return k;
}

/*
 * PQ-K1: allot up to want pops to a level by the weighted schedule over the
 * non-empty levels in bits[]. Returns the level (and *k, 1..want), or -1
 * if bits[] is empty. If the cursor moved, *set is the word installed and
 * *undo the word that undoes the move (the old cursor, no credit);
 * otherwise *undo is UINT64_MAX.
 */
static QUAYI_ALWAYS_INLINE int
quayi_pq_allot(struct quay_pq *pq, const uint64_t *bits, size_t want, size_t *k, uint64_t *set,
    uint64_t *undo)
{
	/* Relaxed: the CAS below validates it. */
	uint64_t s = __atomic_load_n(&pq->sched, __ATOMIC_RELAXED);

	for (;;) {
		unsigned cur = (unsigned)(s >> 32);
		uint32_t credit = (uint32_t)s;
		uint64_t ns;
		size_t take;
		int level;

		if (cur < pq->levels && credit != 0 && (bits[cur >> 6] >> (cur & 63) & 1)) {
			level = (int)cur;
			take = want < credit ? want : credit;
			ns = s - take;
			*undo = UINT64_MAX;
		} else {
			uint32_t w;

			level = quayi_pq_highest_below(bits, cur < pq->levels ? cur : pq->levels);
			if (level < 0)
				level = quayi_pq_highest_below(bits, pq->levels); /* wrap */
			if (level < 0)
				return -1;
			w = quayi_pq_weight(pq, (unsigned)level);
			take = want < w ? want : w;
			ns = ((uint64_t)(unsigned)level << 32) | (uint64_t)(w - take);
			*undo = (uint64_t)cur << 32;
		}
		/* PQ-K1: relaxed CAS: elects; the elements move through the rings. */
		if (__atomic_compare_exchange_n(&pq->sched, &s, ns, true, __ATOMIC_RELAXED,
		        __ATOMIC_RELAXED)) {
			*k = take;
			*set = ns;
			return level;
		}
	}
}

/* PQ-K2: the cursor's level ran empty: it loses the rest of its credit (as
 * deficit round robin resets an emptied queue's deficit), so that the
 * next pop moves on. Relaxed CAS, as PQ-K1; skipped if the cursor moved. */
static QUAYI_ALWAYS_INLINE void
quayi_pq_drop_credit(struct quay_pq *pq, unsigned level)
{
	uint64_t s = __atomic_load_n(&pq->sched, __ATOMIC_RELAXED);

	while ((unsigned)(s >> 32) == level && (uint32_t)s != 0)
		if (__atomic_compare_exchange_n(&pq->sched, &s, (uint64_t)level << 32, true, __ATOMIC_RELAXED,
		        __ATOMIC_RELAXED))
			break;
}

/* The body of pop and pop_burst: up to n elements, in schedule order. */
static QUAYI_ALWAYS_INLINE size_t
quayi_pq_take(struct quay_pq *pq, unsigned char *out, size_t n, unsigned *prios_out)
{
	uint64_t bits[QUAYI_PQ_WORDS];
	const size_t esz = pq->elem_size;
	const unsigned nw = pq->nwords;
	size_t got = 0;

	/* Relaxed: a snapshot of hints; every element is handed over by its
	 * ring's seq (RING-A1). A bit set by a push we miss here belongs to a push
	 * concurrent with this pop. */
	for (unsigned i = 0; i < nw; i++)
		bits[i] = __atomic_load_n(&pq->bitmap[i], __ATOMIC_RELAXED);

	if (!(pq->flags & QUAY_PQ_WEIGHTED)) {
		for (unsigned i = nw; i-- > 0 && got < n;) {
			while (bits[i] != 0 && got < n) {
				unsigned b = 63u - (unsigned)__builtin_clzll(bits[i]);
				unsigned level = i * 64u + b;
				size_t want = n - got;
				size_t k = quayi_pq_level_pop(pq, level, out + got * esz, want,
				    prios_out != NULL ? prios_out + got : NULL);

				got += k;
				if (k < want) {
					quayi_pq_level_empty(pq, level);
					bits[i] &= ~((uint64_t)1 << b);
				}
			}
		}
	} else {
		for (unsigned i = nw; i < QUAYI_PQ_WORDS; i++)
			bits[i] = 0;
		while (got < n) {
			size_t want = 0;
			uint64_t set = 0, undo = 0;
			int level = quayi_pq_allot(pq, bits, n - got, &want, &set, &undo);
			size_t k;

			if (level < 0)
				break;
			k = quayi_pq_level_pop(pq, (unsigned)level, out + got * esz, want,
			    prios_out != NULL ? prios_out + got : NULL);
			got += k;
			if (k < want) {
				if (k == 0 && undo != UINT64_MAX)
					/* PQ-K3: the level we moved to was empty (a stale
					 * bit): as if the cursor had skipped it. Relaxed
					 * CAS, as PQ-K1; skipped if another pop moved on. */
					__atomic_compare_exchange_n(&pq->sched, &set, undo, false,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
				else
					quayi_pq_drop_credit(pq, (unsigned)level);
				quayi_pq_level_empty(pq, (unsigned)level);
				bits[(unsigned)level >> 6] &= ~((uint64_t)1 << ((unsigned)level & 63));
			}
		}
	}
	if (got != 0)
		quayi_pq_wake_if_waiting(pq, &pq->push_event); /* WAIT-W1 */
	return got;
}

/* Push up to n (exact: all or nothing) elements into level L. */
static QUAYI_ALWAYS_INLINE size_t
quayi_pq_put(struct quay_pq *pq, unsigned level, const void *elems, size_t n, bool exact, int *rc)
{
	struct quay_ring *r = quayi_pq_ring(pq, level);
	uint64_t pos = 0;
	size_t k;

	/* PQ-B0: seq_cst claim (sc = true), then RING-R1 in quayi_ring_fill. */
	k = quayi_ring_claim_push(r, n, exact, &pos, rc, true);
	if (k == 0)
		return 0;
	/* In shared memory fewer than k may be published (RING-K3 lost to a
	 * repair): those not published are not delivered. */
	k = quayi_ring_fill(r, pos, elems, k);
	if (QUAYI_UNLIKELY(k == 0)) {
		*rc = -EOWNERDEAD;
		return 0;
	}
	quayi_pq_mark(pq, level);                     /* PQ-B1 */
	quayi_pq_wake_if_waiting(pq, &pq->pop_event); /* WAIT-W1 */
	return k;
}

QUAY_INLINE int
quay_pq_push(quay_pq *pq, unsigned prio, const void *elem)
{
	int rc = 0;

	if (QUAYI_UNLIKELY(pq == NULL || elem == NULL || prio >= pq->levels))
		return -EINVAL;
	if (quayi_pq_put(pq, prio, elem, 1, true, &rc) == 0)
		return rc;
	return 0;
}

QUAY_INLINE int
quay_pq_pop(quay_pq *pq, void *out, unsigned *prio_out)
{
	int rc = -EAGAIN;

	if (QUAYI_UNLIKELY(pq == NULL || out == NULL))
		return -EINVAL;
	if (QUAYI_LIKELY(quayi_pq_take(pq, (unsigned char *)out, 1, prio_out) == 1))
		return 0;
	/* Relaxed: an early exit; the slow path re-reads it with acquire. */
	if (QUAYI_UNLIKELY(__atomic_load_n(&pq->closed, __ATOMIC_RELAXED) != QUAYI_PQ_OPEN) &&
	    quayi_pq_pop_closed(pq, (unsigned char *)out, 1, prio_out, &rc) == 1)
		return 0;
	if (rc == -EAGAIN)
		quayi_wait_idle(&pq->pop_event); /* POLL-A1: re-arm a descriptor */
	return rc;
}

QUAY_INLINE size_t
quay_pq_push_burst(quay_pq *pq, unsigned prio, const void *elems, size_t n)
{
	int rc = 0;

	if (QUAYI_UNLIKELY(pq == NULL || elems == NULL || n == 0 || prio >= pq->levels))
		return 0;
	if (n > pq->capacity)
		n = (size_t)pq->capacity;
	return quayi_pq_put(pq, prio, elems, n, false, &rc);
}

QUAY_INLINE size_t
quay_pq_pop_burst(quay_pq *pq, void *out, size_t n, unsigned *prios_out)
{
	size_t k;
	int rc = 0;

	if (QUAYI_UNLIKELY(pq == NULL || out == NULL || n == 0))
		return 0;
	k = quayi_pq_take(pq, (unsigned char *)out, n, prios_out);
	/* Relaxed: an early exit, as in pop. */
	if (k == 0 && QUAYI_UNLIKELY(__atomic_load_n(&pq->closed, __ATOMIC_RELAXED) != QUAYI_PQ_OPEN))
		k = quayi_pq_pop_closed(pq, (unsigned char *)out, n, prios_out, &rc);
	if (k == 0 && rc != -EPIPE)
		quayi_wait_idle(&pq->pop_event); /* POLL-A1: re-arm a descriptor */
	return k;
}

QUAY_INLINE bool
quay_pq_is_closed(const quay_pq *pq)
{
	/* Acquire: pairs with the release store of CLOSING/CLOSED in close. */
	return pq != NULL && __atomic_load_n(&pq->closed, __ATOMIC_ACQUIRE) != QUAYI_PQ_OPEN;
}

QUAY_INLINE size_t
quay_pq_level_count(const quay_pq *pq, unsigned prio)
{
	if (pq == NULL || prio >= pq->levels)
		return 0;
	return quay_ring_count(quayi_pq_ring(pq, prio));
}

QUAY_INLINE size_t
quay_pq_count(const quay_pq *pq)
{
	size_t n = 0;

	if (pq == NULL)
		return 0;
	for (unsigned i = 0; i < pq->levels; i++)
		n += quay_ring_count(quayi_pq_ring(pq, i));
	return n;
}

QUAY_INLINE unsigned
quay_pq_levels(const quay_pq *pq)
{
	return pq == NULL ? 0 : pq->levels;
}

QUAY_INLINE size_t
quay_pq_capacity(const quay_pq *pq)
{
	return pq == NULL ? 0 : (size_t)pq->capacity;
}

QUAY_INLINE size_t
quay_pq_elem_size(const quay_pq *pq)
{
	return pq == NULL ? 0 : pq->elem_size;
}

#endif /* QUAY_IMPL_PQ_INLINE_H */
