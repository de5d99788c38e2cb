/* SPDX-License-Identifier: MIT */
/*
 * The priority queue's slow paths: creation, close, the closed-queue
 * drain, and the waiting calls. The fast paths (push/pop/bursts) and the
 * bitmap protocol (PQ-B0..PQ-B3) are inline in include/quay/impl/pq_inline.h;
 * docs/PQ.md says why the queue is built this way.
 *
 * Sleeping uses the protocol shared with the ring (src/wait.c): one futex
 * word for all consumers of the queue (pop_event) and one for all
 * producers (push_event). A push at any level runs WAIT-W1 on pop_event after
 * PQ-B1; a pop runs WAIT-W1 on push_event after taking elements. The ready()
 * checks below read what those calls published before their WAIT-W1.
 */
#include "alloc.h"
#include "pollfd.h"
#include "pq_shm.h"
#include "quay_internal.h"

#include <limits.h>
#include <stdlib.h>

#include <quay/pq.h>

/* The layout is ABI: pin it. */
_Static_assert(offsetof(struct quay_pq, bitmap) == 64, "bitmap on its own line");
_Static_assert(offsetof(struct quay_pq, sched) == 128, "scheduler on its own line");
_Static_assert(offsetof(struct quay_pq, pop_event) == 192, "sleepers' line");
_Static_assert(sizeof(struct quay_pq) == 256, "pq header is four lines");
_Static_assert(QUAYI_PQ_WORDS * 64 == QUAY_PQ_LEVELS_MAX, "bitmap covers every level");
_Static_assert((QUAYI_PQ_F_FENCE & QUAY_PQ_FLAGS_ALL) == 0, "internal flags apart");
_Static_assert((QUAYI_PQ_F_OWNED & QUAY_PQ_FLAGS_ALL) == 0, "internal flags apart");
_Static_assert((QUAYI_PQ_F_SHARED & QUAY_PQ_FLAGS_ALL) == 0, "internal flags apart");
_Static_assert(QUAY_PQ_WEIGHT_MAX <= UINT32_MAX, "credit is 32 bits");

static size_t
round_line(size_t n)
{
	return (n + QUAY_CACHELINE - 1) & ~(size_t)(QUAY_CACHELINE - 1);
}

/* Validate opts; on success return the ring size (0 if invalid). */
static size_t
valid_opts(const struct quay_pq_opts *o)
{
	size_t ring;

	if (o == NULL || (o->size != sizeof(*o) && o->size != offsetof(struct quay_pq_opts, allocator)) ||
	    o->levels == 0 || o->levels > QUAY_PQ_LEVELS_MAX || (o->flags & ~QUAY_PQ_FLAGS_ALL) != 0)
		return 0;
	if (o->weights != NULL) {
		if (!(o->flags & QUAY_PQ_WEIGHTED))
			return 0;
		for (unsigned i = 0; i < o->levels; i++)
			if (o->weights[i] == 0 || o->weights[i] > QUAY_PQ_WEIGHT_MAX)
				return 0;
	}
	ring = quay_ring_memsize(o->capacity, o->elem_size);
	return ring == 0 ? 0 : round_line(ring);
}

static size_t
weights_size(unsigned levels)
{
	return round_line((size_t)levels * sizeof(uint32_t));
}

size_t
quay_pq_memsize(const struct quay_pq_opts *opts)
{
	size_t ring = valid_opts(opts);

	if (ring == 0)
		return 0;
	/* At most 256 rings of 2^30 * 4104 bytes: no overflow in 64 bits. */
	return sizeof(struct quay_pq) + weights_size(opts->levels) + (size_t)opts->levels * ring;
}

int
quay_pq_init(quay_pq *pq, const struct quay_pq_opts *opts)
{
	size_t ring = valid_opts(opts);
	uint32_t *weights;
	bool membarrier_ok;

	if (pq == NULL || ((uintptr_t)pq % QUAY_CACHELINE) != 0 || ring == 0)
		return -EINVAL;
	membarrier_ok = quayi_wait_init();
	memset(pq, 0, sizeof(*pq));
	weights = (uint32_t *)(void *)(pq + 1);
	for (unsigned i = 0; i < opts->levels; i++)
		weights[i] = opts->weights != NULL ? opts->weights[i] : i + 1;
	pq->weights_off = sizeof(*pq);
	pq->rings_off = sizeof(*pq) + weights_size(opts->levels);
	pq->ring_stride = ring;
	pq->capacity = opts->capacity;
	pq->levels = opts->levels;
	pq->nwords = (opts->levels + 63) / 64;
	pq->elem_size = (uint32_t)opts->elem_size;
	pq->flags = opts->flags | (membarrier_ok ? 0 : QUAYI_PQ_F_FENCE);
	pq->closed = QUAYI_PQ_OPEN;
	/* The cursor starts above the top level with no credit. */
	pq->sched = (uint64_t)opts->levels << 32;
	for (unsigned i = 0; i < opts->levels; i++) {
		/* Multi-producer/multi-consumer rings: the shape was checked. */
		int rc = quay_ring_init(quayi_pq_ring(pq, i), opts->capacity, opts->elem_size, 0);
		if (rc != 0)
			return rc; /* cannot happen: valid_opts */
	}
	/* Publish the initialised queue to whoever receives the pointer. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	return 0;
}

int
quay_pq_create(const struct quay_pq_opts *opts, quay_pq **out)
{
	size_t size = quay_pq_memsize(opts);
	const struct quay_allocator *a;
	quay_pq *pq;
	int rc;

	if (out == NULL || size == 0)
		return -EINVAL;
	a = opts->size == sizeof(*opts) ? opts->allocator : NULL;
	if (quayi_alloc_check(a) != 0)
		return -EINVAL;
	pq = quayi_alloc_aligned(a, QUAY_CACHELINE, size);
	if (pq == NULL)
		return -ENOMEM;
	rc = quay_pq_init(pq, opts);
	if (rc != 0) {
		quayi_free_aligned(a, pq, QUAY_CACHELINE, size);
		return rc;
	}
	pq->flags |= QUAYI_PQ_F_OWNED;
	pq->alloc = a;
	*out = pq;
	return 0;
}

void
quay_pq_destroy(quay_pq *pq)
{
	if (pq == NULL)
		return;
	if (pq->flags & QUAYI_PQ_F_SHARED) { /* no descriptor (quay_pq_fd: -ENOTSUP) */
		quayi_pq_shm_detach(pq);
		return;
	}
	quayi_pollfd_forget(&pq->pop_event); /* quay_pq_fd's descriptor, if any */
	if (pq->flags & QUAYI_PQ_F_OWNED)
		quayi_free_aligned(pq->alloc, pq, QUAY_CACHELINE,
		    sizeof(struct quay_pq) + weights_size(pq->levels) + (size_t)pq->levels * pq->ring_stride);
}

void
quay_pq_close(quay_pq *pq)
{
	uint32_t expect = QUAYI_PQ_OPEN;

	if (pq == NULL)
		return;
	/* Only the first caller closes; later ones find it done or doing. */
	if (!__atomic_compare_exchange_n(&pq->closed, &expect, QUAYI_PQ_CLOSING, false, __ATOMIC_SEQ_CST,
	        __ATOMIC_ACQUIRE))
		return;
	/* Each ring's close makes its tail final (see src/ring.c); a push
	 * that claimed before it is still delivered. */
	for (unsigned i = 0; i < pq->levels; i++)
		quay_ring_close(quayi_pq_ring(pq, i));
	/* Release: pairs with the acquire in quayi_pq_pop_closed and the
	 * ready() checks: every ring is closed. */
	__atomic_store_n(&pq->closed, QUAYI_PQ_CLOSED, __ATOMIC_RELEASE);
	/* Wake everyone, whatever the bit says: sleepers re-check closed. */
	__atomic_fetch_or(&pq->pop_event, QUAYI_WAIT_SLEEPERS, __ATOMIC_SEQ_CST);
	__atomic_fetch_or(&pq->push_event, QUAYI_WAIT_SLEEPERS, __ATOMIC_SEQ_CST);
	if (pq->flags & QUAYI_PQ_F_SHARED) { /* sleepers in other processes: shared futexes */
		quayi_pq_shm_wake(&pq->pop_event);
		quayi_pq_shm_wake(&pq->push_event);
		return;
	}
	quayi_wait_wake(&pq->pop_event);
	quayi_wait_wake(&pq->push_event);
}

size_t
quayi_pq_pop_closed(struct quay_pq *pq, unsigned char *out, size_t n, unsigned *prios_out, int *rc)
{
	size_t got = 0;
	bool in_flight = false;

	/* Acquire: pairs with the release store in close: every level's ring
	 * is closed, so each ring's -EPIPE below is final. */
	if (__atomic_load_n(&pq->closed, __ATOMIC_ACQUIRE) != QUAYI_PQ_CLOSED) {
		*rc = -EAGAIN;
		return 0;
	}
	/* The bitmap showed nothing: look at every level, highest first.
	 * A closed ring's pop returns -EPIPE only once it is drained with
	 * nothing claimed; -EAGAIN means a push that claimed before the close
	 * is still writing, and its element will come. */
	for (unsigned i = pq->levels; i-- > 0 && got < n;) {
		quay_ring *r = quayi_pq_ring(pq, i);

		while (got < n) {
			int prc = quay_ring_pop(r, out + got * pq->elem_size);

			if (prc != 0) {
				in_flight |= prc == -EAGAIN;
				break;
			}
			if (prios_out != NULL)
				prios_out[got] = i;
			got++;
		}
	}
	if (got != 0)
		quayi_pq_wake_if_waiting(pq, &pq->push_event); /* WAIT-W1 */
	*rc = in_flight ? -EAGAIN : -EPIPE;
	return got;
}

/* ---- waiting ------------------------------------------------------- */

/* Whether the slot at the ring's head holds a published element (or head
 * moved on under us: retry). */
static bool
head_ready(const quay_ring *r)
{
	uint64_t head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	/* Acquire: pairs with RING-R1; a hint only, pop re-checks. */
	uint64_t seq = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, head)), __ATOMIC_ACQUIRE);

	return (int64_t)(seq - ((head << 1) | 1)) >= 0;
}

/*
 * Whether a pop could make progress now. Open queue: some marked level
 * has a published element at its head. A marked level whose head is
 * claimed but unpublished is not ready: its pusher's WAIT-W1 follows its
 * publish. A published element on an unmarked level cannot escape us:
 * its pusher either marked the level before its WAIT-W1, or saw the bit set
 * and then the popper that cleared it re-set it in PQ-B3 and runs WAIT-W1 (see
 * pq_inline.h). Closed queue: some level has a published head, or no
 * level has a push in flight (pop returns -EPIPE).
 */
bool
quayi_pq_pop_ready(const void *ctx)
{
	const struct quay_pq *pq = ctx;

	for (unsigned w = pq->nwords; w-- > 0;) {
		/* Relaxed: WAIT-S1 (or the caller's retry loop) orders it. */
		uint64_t bits = __atomic_load_n(&pq->bitmap[w], __ATOMIC_RELAXED);

		while (bits != 0) {
			unsigned b = 63u - (unsigned)__builtin_clzll(bits);

			if (head_ready(quayi_pq_ring(pq, w * 64u + b)))
				return true;
			bits &= ~((uint64_t)1 << b);
		}
	}
	/* Acquire: pairs with the release store of CLOSED in close. */
	if (__atomic_load_n(&pq->closed, __ATOMIC_ACQUIRE) != QUAYI_PQ_CLOSED)
		return false;
	for (unsigned i = 0; i < pq->levels; i++) {
		const quay_ring *r = quayi_pq_ring(pq, i);
		uint64_t head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);

		if (head_ready(r))
			return true;
		if (quayi_ring_pop_status(r, head, 1) == -EAGAIN)
			return false; /* in flight: its WAIT-W1 wakes us */
	}
	return true; /* drained: pop returns -EPIPE */
}

struct push_ctx {
	const struct quay_pq *pq;
	unsigned level;
};

/* Whether a push to the level could make progress now: the slot at its
 * tail is free, or tail moved on (retry), or the queue is closing. */
bool
quayi_pq_push_ready(const struct quay_pq *pq, unsigned level)
{
	const quay_ring *r = quayi_pq_ring(pq, level);
	uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
	uint64_t pos = tail & QUAYI_RING_POS_MASK;
	/* Acquire: pairs with RING-R2; a hint only, push re-checks. */
	uint64_t seq = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, pos)), __ATOMIC_ACQUIRE);

	return (int64_t)(seq - (pos << 1)) >= 0 || (tail & QUAYI_RING_CLOSED_BIT) ||
	    __atomic_load_n(&pq->closed, __ATOMIC_ACQUIRE) != QUAYI_PQ_OPEN;
}

static bool
push_ready(const void *ctx)
{
	const struct push_ctx *c = ctx;

	return quayi_pq_push_ready(c->pq, c->level);
}

/* A waiting call's arguments, for quayi_wait_for. */
struct pq_call {
	quay_pq *pq;
	unsigned prio;
	void *elem;
	unsigned *prio_out;
};

static int
push_op(void *arg)
{
	const struct pq_call *c = arg;

	return quay_pq_push(c->pq, c->prio, c->elem);
}

static int
pop_op(void *arg)
{
	const struct pq_call *c = arg;

	return quay_pq_pop(c->pq, c->elem, c->prio_out);
}

int
quay_pq_push_wait(quay_pq *pq, unsigned prio, const void *elem, int64_t timeout_ns)
{
	/* push only reads *elem; the cast serves the shared signature. */
	struct pq_call c = { pq, prio, (void *)(uintptr_t)elem, NULL };
	struct push_ctx ctx = { pq, prio };
	struct quayi_waiter w = { push_op, &c, push_ready, &ctx, NULL, false };

	if (pq == NULL || elem == NULL || prio >= pq->levels)
		return -EINVAL;
	if (pq->flags & QUAYI_PQ_F_SHARED)
		return quayi_pq_shm_wait(pq, prio, (void *)(uintptr_t)elem, NULL, timeout_ns);
	w.event = &pq->push_event;
	w.fence = quayi_pq_fence(pq) != 0;
	return quayi_wait_for(&w, timeout_ns);
}

int
quay_pq_pop_wait(quay_pq *pq, void *out, unsigned *prio_out, int64_t timeout_ns)
{
	struct pq_call c = { pq, 0, out, prio_out };
	struct quayi_waiter w = { pop_op, &c, quayi_pq_pop_ready, pq, NULL, false };

	if (pq == NULL || out == NULL)
		return -EINVAL;
	if (pq->flags & QUAYI_PQ_F_SHARED)
		return quayi_pq_shm_wait(pq, UINT_MAX, out, prio_out, timeout_ns);
	w.event = &pq->pop_event;
	w.fence = quayi_pq_fence(pq) != 0;
	return quayi_wait_for(&w, timeout_ns);
}
