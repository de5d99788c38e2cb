/* SPDX-License-Identifier: MIT */
/*
 * The ring's slow paths: creation, sleeping and waking, close.
 * The fast paths (push/pop/burst/bulk) are inline in
 * include/quay/impl/ring_inline.h, with the algorithm described there.
 * The sleep/wake protocol is shared with the priority queue: its code is
 * in src/wait.c and include/quay/impl/wait_inline.h; the ring supplies
 * the event words and the ready() checks.
 *
 * Sleeping (WAIT-S1). A waiting consumer:
 *     ev = fetch_or(pop_event, SLEEPERS) | SLEEPERS
 *     WAIT-S1: membarrier(PRIVATE_EXPEDITED)    (or a full fence, see below)
 *     if the slot at head is ready, or the ring is closed: don't sleep
 *     futex_wait(&pop_event, ev)
 * A producer, after publishing (RING-R1), runs WAIT-W1: compiler barrier, then a
 * relaxed load of pop_event; only if the SLEEPERS bit is set does it
 * clear the bit, bump the counter and wake everyone. membarrier makes
 * every running thread of the process execute a full barrier, so either
 * the producer's RING-R1 is visible to the check after WAIT-S1, or the producer's
 * load comes after WAIT-S1 and sees the bit (or a later value, written by a
 * waker that cleared the bit after our fetch_or and so woke us, or made
 * futex_wait return at once because pop_event is no longer ev). No
 * wake-up is lost, the producer's fast path has no fence and no shared
 * write, and a burst of pushes after a sleep costs one futex_wake.
 * Producers waiting for space mirror this on push_event.
 *
 * Where membarrier(2) is unavailable (old kernel, seccomp), rings get
 * QUAYI_RING_F_FENCE and both sides use a full fence instead.
 */
#include "alloc.h"
#include "pollfd.h"
#include "quay_internal.h"
#include "ring_shm.h"

#include <stdlib.h>

#include <quay/ring.h>

/* The layout is ABI: pin it. */
_Static_assert(offsetof(struct quay_ring, tail) == 64, "tail on its own line");
_Static_assert(offsetof(struct quay_ring, head) == 128, "head on its own line");
_Static_assert(offsetof(struct quay_ring, pop_event) == 192, "sleepers' line");
_Static_assert(sizeof(struct quay_ring) == 256, "ring header is four lines");
_Static_assert(((QUAYI_RING_F_FENCE | QUAYI_RING_F_OWNED | QUAYI_RING_F_SHARED | QUAYI_RING_F_SPSC |
                    QUAYI_RING_F_E8) &
                   QUAY_RING_FLAGS_ALL) == 0,
    "internal flags apart");
_Static_assert(offsetof(struct quay_ring, head_cache) < offsetof(struct quay_ring, head) &&
        offsetof(struct quay_ring, pub_cache) < offsetof(struct quay_ring, pop_event),
    "the SPSC fields share their side's line");


/* The slow side of WAIT-W1 and RING-C1: a full barrier on every running thread. */
static void
heavy_barrier(const struct quay_ring *r)
{
	quayi_wait_heavy_barrier((r->flags & QUAYI_RING_F_FENCE) != 0);
}

static bool
valid_shape(size_t capacity, size_t elem_size)
{
	return capacity != 0 && capacity <= QUAY_RING_CAPACITY_MAX && (capacity & (capacity - 1)) == 0 &&
	    elem_size != 0 && elem_size <= QUAY_RING_ELEM_MAX && elem_size % 8 == 0;
}

size_t
quay_ring_memsize(size_t capacity, size_t elem_size)
{
	if (!valid_shape(capacity, elem_size))
		return 0;
	/* At most 2^30 * (4096 + 8) bytes: no overflow in size_t (64-bit). */
	return sizeof(struct quay_ring) + capacity * (elem_size + 8);
}

static void
init_slots(struct quay_ring *r, uint64_t pos)
{
	uint64_t cap = r->mask + 1;

	/* Position p (pos <= p < pos + cap) starts free: seq = 2p. */
	for (uint64_t i = 0; i < cap; i++) {
		uint64_t p = pos + i;
		__atomic_store_n(quayi_ring_seq(quayi_ring_slot(r, p)), p << 1, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&r->head, pos, __ATOMIC_RELAXED);
	__atomic_store_n(&r->tail, pos, __ATOMIC_RELAXED);
	/* SPSC mode: nothing published, nothing freed beyond pos. Relaxed:
	 * the ring is not shared yet (init's release fence publishes it). */
	__atomic_store_n(&r->pub, pos, __ATOMIC_RELAXED);
	r->head_cache = pos;
	r->pub_cache = pos;
}

int
quay_ring_init(quay_ring *r, size_t capacity, size_t elem_size, unsigned flags)
{
	if (r == NULL || ((uintptr_t)r % QUAY_CACHELINE) != 0 || !valid_shape(capacity, elem_size) ||
	    (flags & ~QUAY_RING_FLAGS_ALL) != 0)
		return -EINVAL;

	bool membarrier_ok = quayi_wait_init();

	memset(r, 0, sizeof(*r));
	r->mask = capacity - 1;
	r->memsize = quay_ring_memsize(capacity, elem_size);
	r->stride = (uint32_t)(elem_size + 8);
	r->elem_size = (uint32_t)elem_size;
	r->flags = flags | (membarrier_ok ? 0 : QUAYI_RING_F_FENCE);
	/* One producer and one consumer: the layout without sequence words
	 * (ring_inline.h, "SPSC mode"). Shared rings never get it: their
	 * init is called without QUAY_RING_SP (src/ring_shm.c). */
	if ((flags & QUAY_RING_FLAGS_ALL) == QUAY_RING_FLAGS_ALL)
		r->flags |= QUAYI_RING_F_SPSC | (elem_size == 8 ? QUAYI_RING_F_E8 : 0);
	r->closed = QUAYI_RING_OPEN;
	init_slots(r, 0);
	/* Publish the initialised ring to whoever receives the pointer. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	return 0;
}

int
quay_ring_create_opts(size_t capacity, size_t elem_size, const struct quay_ring_opts *opts, quay_ring **out)
{
	static const struct quay_ring_opts defaults = QUAY_RING_OPTS_INIT;
	size_t size = quay_ring_memsize(capacity, elem_size);
	quay_ring *r;
	int rc;

	if (opts == NULL)
		opts = &defaults;
	if (out == NULL || size == 0 || opts->size != sizeof(*opts) ||
	    (opts->flags & ~QUAY_RING_FLAGS_ALL) != 0 || quayi_alloc_check(opts->allocator) != 0)
		return -EINVAL;
	r = quayi_alloc_aligned(opts->allocator, QUAY_CACHELINE, size);
	if (r == NULL)
		return -ENOMEM;
	rc = quay_ring_init(r, capacity, elem_size, opts->flags);
	if (rc != 0) {
		quayi_free_aligned(opts->allocator, r, QUAY_CACHELINE, size);
		return rc;
	}
	r->flags |= QUAYI_RING_F_OWNED;
	r->alloc = opts->allocator;
	*out = r;
	return 0;
}

int
quay_ring_create(size_t capacity, size_t elem_size, unsigned flags, quay_ring **out)
{
	struct quay_ring_opts o = QUAY_RING_OPTS_INIT;

	o.flags = flags;
	return quay_ring_create_opts(capacity, elem_size, &o, out);
}

void
quay_ring_destroy(quay_ring *r)
{
	if (r == NULL)
		return;
	quayi_pollfd_forget(&r->pop_event); /* quay_ring_fd's descriptor, if any */
	if (r->flags & QUAYI_RING_F_SHARED)
		quayi_ring_shm_detach(r);
	else if (r->flags & QUAYI_RING_F_OWNED)
		quayi_free_aligned(r->alloc, r, QUAY_CACHELINE, quay_ring_memsize(r->mask + 1, r->elem_size));
}

int
quayi_ring_test_set_position(struct quay_ring *r, uint64_t pos)
{
	if (r == NULL || quay_ring_count(r) != 0 || quay_ring_is_closed(r))
		return -EINVAL;
	init_slots(r, pos & QUAYI_RING_POS_MASK);
	return 0;
}

int
quayi_ring_pop_status(const struct quay_ring *r, uint64_t head, uint64_t need)
{
	uint64_t tail;

	/* Acquire: pairs with the release store of QUAYI_RING_CLOSED in close;
	 * after it, tail is final (MP: closed bit set; SP: RING-C1/RING-C2). */
	if (__atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) != QUAYI_RING_CLOSED)
		return -EAGAIN;
	tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) & QUAYI_RING_POS_MASK;
	/* Fewer than need claimed (published or in flight) past head: no
	 * later pop can get need elements. In flight ones finish: -EAGAIN. */
	return ((tail - head) & QUAYI_RING_POS_MASK) < need ? -EPIPE : -EAGAIN;
}

void
quay_ring_close(quay_ring *r)
{
	if (r == NULL)
		return;
	/* Only the first caller closes; later ones find it done or doing. */
	uint32_t expect = QUAYI_RING_OPEN;
	if (!__atomic_compare_exchange_n(&r->closed, &expect, QUAYI_RING_CLOSING, false, __ATOMIC_SEQ_CST,
	        __ATOMIC_ACQUIRE))
		return;
	if (!(r->flags & QUAY_RING_SP)) {
		/* MP: producers claim by CAS on tail; once this bit is set every
		 * CAS fails and tail is final. */
		__atomic_fetch_or(&r->tail, QUAYI_RING_CLOSED_BIT, __ATOMIC_SEQ_CST);
	} else {
		/* RING-C2: pairs with RING-C1 in the single producer's claim. */
		heavy_barrier(r);
	}
	/* Release: pairs with the acquire in quayi_ring_pop_status and
	 * quay_ring_is_closed. */
	__atomic_store_n(&r->closed, QUAYI_RING_CLOSED, __ATOMIC_RELEASE);
	/* Wake everyone, whatever the bit says: sleepers re-check closed. */
	__atomic_fetch_or(&r->pop_event, QUAYI_RING_SLEEPERS, __ATOMIC_SEQ_CST);
	__atomic_fetch_or(&r->push_event, QUAYI_RING_SLEEPERS, __ATOMIC_SEQ_CST);
	if (r->flags & QUAYI_RING_F_SHARED) { /* sleepers in other processes: shared futexes */
		quayi_ring_shm_wake(&r->pop_event);
		quayi_ring_shm_wake(&r->push_event);
		return;
	}
	quayi_wait_wake(&r->pop_event);
	quayi_wait_wake(&r->push_event);
}

/* Whether a pop could make progress now: an element is ready at head, or
 * head moved on under us (retry), or the ring is closed and drained (pop
 * reports -EPIPE). Not ready: the slot at head is not yet published for
 * head. Then head is current (nobody can pop past that slot), and a push
 * still in flight on a closed ring will wake us with its WAIT-W1. */
bool
quayi_ring_pop_ready(const void *ctx)
{
	const struct quay_ring *r = ctx;
	/* Relaxed: a hint, pop re-checks. */
	uint64_t head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);

	return quayi_ring_head_ready(r, head) || quayi_ring_pop_status(r, head, 1) == -EPIPE;
}

/* Whether a push could make progress now: the slot at tail is free, or
 * tail moved on (retry), or the ring is closed (push reports -EPIPE). */
bool
quayi_ring_push_ready(const void *ctx)
{
	const struct quay_ring *r = ctx;
	uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
	uint64_t pos = tail & QUAYI_RING_POS_MASK;

	if (r->flags & QUAYI_RING_F_SPSC) /* Acquire: pairs with RING-R4; a hint, push re-checks. */
		return ((pos - __atomic_load_n(&r->head, __ATOMIC_ACQUIRE)) & QUAYI_RING_POS_MASK) <=
		    r->mask ||
		    __atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) != QUAYI_RING_OPEN;
	/* Acquire: pairs with RING-R2; a hint only, push re-checks. */
	uint64_t seq = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, pos)), __ATOMIC_ACQUIRE);

	return (int64_t)(seq - (pos << 1)) >= 0 || (tail & QUAYI_RING_CLOSED_BIT) ||
	    __atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) != QUAYI_RING_OPEN;
}

/* A waiting call's arguments, for quayi_wait_for. */
struct ring_call {
	quay_ring *r;
	void *elem;
};

static int
push_op(void *arg)
{
	const struct ring_call *c = arg;

	return quay_ring_push(c->r, c->elem);
}

static int
pop_op(void *arg)
{
	const struct ring_call *c = arg;

	return quay_ring_pop(c->r, c->elem);
}

int
quay_ring_push_wait(quay_ring *r, const void *elem, int64_t timeout_ns)
{
	/* push only reads *elem; the cast serves the shared signature. */
	struct ring_call c = { r, (void *)(uintptr_t)elem };
	struct quayi_waiter w = { push_op, &c, quayi_ring_push_ready, r, NULL, false };

	if (r == NULL || elem == NULL)
		return -EINVAL;
	if (r->flags & QUAYI_RING_F_SHARED)
		return quayi_ring_shm_wait(r, true, c.elem, timeout_ns);
	w.event = &r->push_event;
	w.fence = (r->flags & QUAYI_RING_F_FENCE) != 0;
	return quayi_wait_for(&w, timeout_ns);
}

int
quay_ring_pop_wait(quay_ring *r, void *out, int64_t timeout_ns)
{
	struct ring_call c = { r, out };
	struct quayi_waiter w = { pop_op, &c, quayi_ring_pop_ready, r, NULL, false };

	if (r == NULL || out == NULL)
		return -EINVAL;
	if (r->flags & QUAYI_RING_F_SHARED)
		return quayi_ring_shm_wait(r, false, out, timeout_ns);
	w.event = &r->pop_event;
	w.fence = (r->flags & QUAYI_RING_F_FENCE) != 0;
	return quayi_wait_for(&w, timeout_ns);
}
