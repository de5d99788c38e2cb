/* SPDX-License-Identifier: MIT */
/*
 * The message pool: one arena carved into size classes, a lock-free
 * free stack per class, bounded per-thread caches, and a futex for
 * allocations that wait. docs/MESSAGES.md explains the choices.
 *
 * Free stacks (ABA). The top of each class's stack is one 64-bit word:
 * bits 0..23 hold the index + 1 of the top buffer (0: empty), bits
 * 24..63 a generation that every push and pop increments. The "next"
 * links live in a separate array of 32-bit indices, never in the buffers,
 * so a pop that read a stale top reads a stale link from our own
 * metadata (never user memory) and its CAS then fails because the
 * generation moved on. An ABA would need 2^40 pushes and pops on one
 * class between a thread's load of the top and its CAS (hours at full
 * speed while that thread stays preempted). ck_stack's MPMC pop needs a
 * double-width CAS (cmpxchg16b: -mcx16, libatomic, not lock-free on every
 * target) and epochs need every thread to pass quiescent points; indices
 * into one arena fit a single-word CAS.
 *
 * Labelled ordering edges (the index is in docs/ARCHITECTURE.md):
 *   POOL-P1 push: CAS on top, seq_cst (release at least: publishes the
 *      link and everything the last holder wrote into the buffer, see
 *      MSG-U1 in impl/msg_inline.h) -> POOL-P2 pop: load/CAS on top,
 *      seq_cst (acquire at least: the link and the buffer's old contents
 *      are visible).
 *   POOL-W1/POOL-S1 (no lost wake-up): a waiting allocator does POOL-S1 =
 *      fetch_or of the SLEEPERS bit into event (seq_cst), then tries every
 *      stack again (POOL-P2 loads, seq_cst), then quayi_futex_wait(event,
 *      value seen). A freer does POOL-P1 (seq_cst) then POOL-W1 = a seq_cst
 *      load of event. In the single total order of seq_cst operations
 *      either the freer's POOL-P1 precedes the waiter's re-check (the
 *      waiter sees the buffer) or the waiter's POOL-S1 precedes the
 *      freer's POOL-W1 load (the freer sees SLEEPERS, and quayi_wait_wake
 *      clears it, bumps the counter and wakes; a futex wait that comes
 *      later returns at once because event changed). On x86 the seq_cst
 *      CAS is the lock cmpxchg a push needs anyway and the POOL-W1 load is
 *      a plain mov.
 *      Why not the ring's protocol (WAIT-S1/WAIT-W1, quayi_wait_sleep):
 *      its sleeper pays a membarrier(2) to spare the waker a fence, but
 *      every pool waker already runs a seq_cst CAS (POOL-P1), so the
 *      seq_cst pair costs nothing extra; and the pool's re-check is the
 *      take itself, which keeps the buffer it finds, where
 *      quayi_wait_sleep's ready() is a side-effect-free hint. The event
 *      word's layout, the wake (quayi_wait_wake) and the futex wait
 *      (quayi_futex_wait) are the shared ones of src/wait.c.
 *   POOL-C1 cache: a free into the caller's cache makes no shared write.
 *      It reads event relaxed first and, if SLEEPERS is set, pushes to the
 *      shared stack instead (with the class's cached buffers). A free that
 *      raced with a waiter going to sleep may still be cached: at most the
 *      caches' capacity, a quarter of the class, as documented.
 *   POOL-K1 cache slots: claimed by CAS (acquire) and released at thread
 *      exit by a release store; the owner alone touches the cached
 *      indices, and stats read each cache's counts relaxed (a snapshot).
 *   POOL-D1/POOL-D2 counted pools (quayi_pool_counted, quay_internal.h):
 *      refs is the owner's reference plus one per buffer out. A take adds
 *      one (POOL-D2, relaxed: the owner's reference keeps it above 0); a
 *      release drops one as its last access to the pool, after the push
 *      and the wake (POOL-D1, acq_rel), and so does the owner's put. The
 *      decrement that reaches 0 frees the pool: every other holder's
 *      accesses were released by its own POOL-D1 before. A pool given up
 *      with messages out is thus freed by the release of the last one,
 *      never under a release still running (quay_pool_destroy's in-use
 *      check reads statistics and cannot tell that).
 */
#include "clock.h"
#include "alloc.h"
#include "quay_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/impl/wait_inline.h>

#if defined(__SANITIZE_ADDRESS__)
#define QUAYI_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUAYI_POOL_ASAN 1
#endif
#endif
#ifdef QUAYI_POOL_ASAN
/* Free buffers' data areas are poisoned, so ASan reports a read of a
 * message's body or headers after its last unref. The envelope stays
 * readable: the refcount check of quay_msg_unref() needs it. */
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define IDX_BITS 24
#define IDX_MASK (((uint64_t)1 << IDX_BITS) - 1)
#define GEN_ONE ((uint64_t)1 << IDX_BITS)

#define SLEEPERS QUAYI_WAIT_SLEEPERS /* the futex word protocol of src/wait.c */

#define QUAYI_POOL_LIKELY(x) __builtin_expect(!!(x), 1)
#define QUAYI_POOL_UNLIKELY(x) __builtin_expect(!!(x), 0)

_Static_assert(QUAY_POOL_CLASS_COUNT_MAX == IDX_MASK, "24-bit indices");
_Static_assert(QUAY_POOL_CLASS_SIZE_MIN > QUAY_MSG_ENVELOPE, "room for data");

/* 512: the smallest class holds a short body with the default header
 * room (QUAY_POOL_HEADROOM_DEFAULT, 328 B), so quay_msg_new() of a small
 * message does not spill into the 1 KiB class. */
static const uint32_t default_classes[] = { 512, 1024, 4096, 16384, 65536 };
#define NDEFAULT (sizeof(default_classes) / sizeof(default_classes[0]))

struct pclass {
	/* The tagged top of the free stack: its own line (every shared
	 * alloc and free CASes it). */
	uint64_t top __attribute__((aligned(64)));
	/* Buffers off the shared stack (in use or cached) and its peak:
	 * statistics, updated once per move between stack and caller/cache. */
	uint64_t taken __attribute__((aligned(64)));
	uint64_t hwm;
	/* Read-only after creation. */
	unsigned char *base __attribute__((aligned(64)));
	uint32_t *next; /* next[i]: index + 1 of the buffer below i */
	uint32_t size;  /* buffer bytes */
	uint32_t count;
	uint32_t cache_cap; /* per thread */
	uint32_t cache_off; /* of this class's part of a cache's idx[] */
};

struct tcache {
	quay_pool *pool;
	uint32_t *idx;                     /* cache_stride indices, class parts at cache_off */
	uint32_t claimed;                  /* POOL-K1 */
	uint32_t n[QUAY_POOL_CLASSES_MAX]; /* owner writes, stats read: relaxed */
} __attribute__((aligned(64)));

struct quay_pool {
	struct pclass cls[QUAY_POOL_CLASSES_MAX];
	uint32_t nclasses;
	uint32_t flags;
	uint32_t headroom;
	uint32_t ncaches;
	uint32_t cache_stride;
	bool have_key;
	pthread_key_t key;
	size_t limit;
	size_t arena_bytes;
	unsigned char *arena;
	uint32_t *links;     /* all classes' next[] */
	uint32_t *cache_idx; /* all caches' idx[] */
	struct tcache *caches;
	int64_t (*clock)(void *);
	void *clock_arg;
	const struct quay_allocator *alloc; /* every block below came from it */
	size_t nbuf;                        /* entries of links */
	/* Slow-path statistics. */
	uint64_t failures __attribute__((aligned(64)));
	uint64_t waits;
	/* Futex word of waiting allocators: bit 0 SLEEPERS, bits 1.. a wake
	 * counter. Read by every shared push (POOL-W1): its own line. */
	uint32_t event __attribute__((aligned(64)));
	/* A counted pool (quayi_pool_counted): its owner's reference plus
	 * one per buffer out (POOL-D1/POOL-D2); the one that drops it to 0
	 * frees the pool. counted is read-only once the pool is shared. */
	uint64_t refs __attribute__((aligned(64)));
	bool counted;
};

/* A thread that found no free cache slot stores this, so that it does
 * not look for one on every call. */
static char nocache_marker;

static void pool_unhold(quay_pool *p);

/* ---- free stacks ---------------------------------------------------- */

static inline unsigned char *
buf_at(const struct pclass *c, uint32_t i)
{
	return c->base + (size_t)i * c->size;
}

static bool
stack_pop(struct pclass *c, uint32_t *out)
{
	/* POOL-P2: seq_cst (acquire + the POOL-S1/POOL-W1 total order); pairs with POOL-P1. */
	uint64_t top = __atomic_load_n(&c->top, __ATOMIC_SEQ_CST);

	for (;;) {
		uint32_t i1 = (uint32_t)(top & IDX_MASK);
		uint32_t nx;

		if (i1 == 0)
			return false;
		/* Relaxed: ordered after POOL-P2's acquire; if the link is stale
		 * the top moved on and the CAS below fails. */
		nx = __atomic_load_n(&c->next[i1 - 1], __ATOMIC_RELAXED);
		/* POOL-P2: seq_cst, see above. */
		if (__atomic_compare_exchange_n(&c->top, &top, ((top & ~IDX_MASK) + GEN_ONE) | nx, true,
		        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
			*out = i1 - 1;
			return true;
		}
	}
}

/* Push the k indices idx[0..k) (idx[0] ends on top) with one CAS. */
static void
stack_push_n(struct pclass *c, const uint32_t *idx, uint32_t k)
{
	uint64_t top;

	/* Chain the batch; relaxed: published by POOL-P1. */
	for (uint32_t j = 0; j + 1 < k; j++)
		__atomic_store_n(&c->next[idx[j]], idx[j + 1] + 1, __ATOMIC_RELAXED);
	/* Relaxed: the CAS validates the value. */
	top = __atomic_load_n(&c->top, __ATOMIC_RELAXED);
	do {
		/* Relaxed: published by POOL-P1. */
		__atomic_store_n(&c->next[idx[k - 1]], (uint32_t)(top & IDX_MASK), __ATOMIC_RELAXED);
		/* POOL-P1: seq_cst (release + the POOL-W1 order); pairs with POOL-P2. */
	} while (!__atomic_compare_exchange_n(&c->top, &top, ((top & ~IDX_MASK) + GEN_ONE) | (idx[0] + 1u),
	    true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
}

static void
taken_add(struct pclass *c, uint32_t k)
{
	/* Relaxed: statistics; the stack itself enforces the limit. */
	uint64_t now = __atomic_add_fetch(&c->taken, k, __ATOMIC_RELAXED);
	uint64_t h = __atomic_load_n(&c->hwm, __ATOMIC_RELAXED);

	while (now > h &&
	    !__atomic_compare_exchange_n(&c->hwm, &h, now, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static void
taken_sub(struct pclass *c, uint32_t k)
{
	/* Relaxed: statistics. Done BEFORE the push, so taken never counts a
	 * buffer twice and the peak never exceeds the class. */
	__atomic_sub_fetch(&c->taken, k, __ATOMIC_RELAXED);
}

/* POOL-W1: after a POOL-P1 push, wake the waiters if there are any. */
static void
wake_waiters(quay_pool *p)
{
	/* POOL-W1: seq_cst; pairs with POOL-S1 in quayi_pool_take (see the top of the
	 * file). quayi_wait_wake clears the bit and wakes once. */
	if (__atomic_load_n(&p->event, __ATOMIC_SEQ_CST) & SLEEPERS)
		quayi_wait_wake(&p->event);
}

/* Give k buffers of class ci back to the shared stack and wake waiters. */
static void
give_shared(quay_pool *p, uint32_t ci, const uint32_t *idx, uint32_t k)
{
	struct pclass *c = &p->cls[ci];

	taken_sub(c, k);
	stack_push_n(c, idx, k);
	wake_waiters(p);
}

/* ---- thread caches ------------------------------------------------ */

static uint32_t *
tc_part(const quay_pool *p, const struct tcache *tc, uint32_t ci)
{
	return tc->idx + p->cls[ci].cache_off;
}

/* Move every cached buffer of class ci back to the shared stack. The
 * caller is the cache's owner (or destroy/exit, with no owner left). */
static void
tc_flush_class(quay_pool *p, struct tcache *tc, uint32_t ci)
{
	/* Relaxed: only the owner writes n. */
	uint32_t n = __atomic_load_n(&tc->n[ci], __ATOMIC_RELAXED);

	if (n == 0)
		return;
	__atomic_store_n(&tc->n[ci], 0, __ATOMIC_RELAXED);
	give_shared(p, ci, tc_part(p, tc, ci), n);
}

static void
tc_flush(struct tcache *tc)
{
	for (uint32_t ci = 0; ci < tc->pool->nclasses; ci++)
		tc_flush_class(tc->pool, tc, ci);
}

/* pthread key destructor: the thread exits. */
static void
tc_exit(void *v)
{
	struct tcache *tc = (struct tcache *)v;

	if (v == NULL || v == &nocache_marker)
		return;
	tc_flush(tc);
	/* POOL-K1: release; pairs with the claim's acquire: the next owner finds
	 * the cache empty. */
	__atomic_store_n(&tc->claimed, 0u, __ATOMIC_RELEASE);
}

static struct tcache *
tc_claim(quay_pool *p)
{
	for (uint32_t i = 0; i < p->ncaches; i++) {
		struct tcache *tc = &p->caches[i];
		uint32_t zero = 0;

		/* POOL-K1: acquire, pairs with the release in tc_exit. Relaxed
		 * pre-check avoids CAS traffic on taken slots. */
		if (__atomic_load_n(&tc->claimed, __ATOMIC_RELAXED) != 0 ||
		    !__atomic_compare_exchange_n(&tc->claimed, &zero, 1u, false, __ATOMIC_ACQUIRE,
		        __ATOMIC_RELAXED))
			continue;
		if (pthread_setspecific(p->key, tc) != 0) {
			/* POOL-K1: release, as in tc_exit. */
			__atomic_store_n(&tc->claimed, 0u, __ATOMIC_RELEASE);
			return NULL;
		}
		return tc;
	}
	(void)pthread_setspecific(p->key, &nocache_marker);
	return NULL;
}

static inline struct tcache *
tc_get(quay_pool *p)
{
	void *v;

	if (!p->have_key)
		return NULL;
	v = pthread_getspecific(p->key);
	if (QUAYI_POOL_LIKELY(v != NULL))
		return v == &nocache_marker ? NULL : (struct tcache *)v;
	return tc_claim(p);
}

/* ---- take and give -------------------------------------------------- */

/* One attempt over classes first..last. */
static bool
try_take(quay_pool *p, struct tcache *tc, uint32_t first, uint32_t last, uint32_t *ci_out, uint32_t *idx_out)
{
	for (uint32_t ci = first; ci <= last; ci++) {
		struct pclass *c = &p->cls[ci];
		uint32_t got = 0, idx;

		if (tc != NULL && c->cache_cap != 0) {
			uint32_t *part = tc_part(p, tc, ci);
			/* Relaxed: only this thread writes n. */
			uint32_t n = __atomic_load_n(&tc->n[ci], __ATOMIC_RELAXED);

			if (n != 0) {
				*idx_out = part[n - 1];
				__atomic_store_n(&tc->n[ci], n - 1, __ATOMIC_RELAXED);
				*ci_out = ci;
				return true;
			}
			/* Refill: one for the caller, up to half the cache more. */
			if (!stack_pop(c, idx_out))
				continue;
			got = 1;
			while (got <= c->cache_cap / 2 && stack_pop(c, &idx)) {
				part[n++] = idx;
				got++;
			}
			__atomic_store_n(&tc->n[ci], n, __ATOMIC_RELAXED);
			taken_add(c, got);
			*ci_out = ci;
			return true;
		}
		if (stack_pop(c, idx_out)) {
			taken_add(c, 1);
			*ci_out = ci;
			return true;
		}
	}
	return false;
}

int
quayi_pool_take(quay_pool *p, size_t need, size_t want, bool wait, int64_t timeout_ns, quay_msg **out)
{
	uint32_t first = p->nclasses, last, ci = 0, idx = 0;
	struct tcache *tc;
	int64_t deadline;
	quay_msg *m;

	if (need > (size_t)p->cls[p->nclasses - 1].size - QUAY_MSG_ENVELOPE)
		return -EMSGSIZE;
	if (want < need)
		want = need;
	for (uint32_t i = 0; i < p->nclasses; i++) {
		if ((size_t)p->cls[i].size - QUAY_MSG_ENVELOPE >= want) {
			first = i;
			break;
		}
	}
	if (first == p->nclasses) /* only the largest holds need */
		first = p->nclasses - 1;
	last = (p->flags & QUAY_POOL_EXACT_CLASS) ? first : p->nclasses - 1;

	tc = tc_get(p);
	if (!try_take(p, tc, first, last, &ci, &idx)) {
		if (!wait || timeout_ns == 0) {
			/* Relaxed: a statistic. */
			__atomic_add_fetch(&p->failures, 1, __ATOMIC_RELAXED);
			return -ENOMEM;
		}
		deadline = quayi_deadline(timeout_ns); /* < 0: forever */
		for (;;) {
			/* POOL-S1: seq_cst; pairs with POOL-W1 (see the top of
			 * the file). */
			uint32_t ev = __atomic_or_fetch(&p->event, SLEEPERS, __ATOMIC_SEQ_CST);

			if (try_take(p, tc, first, last, &ci, &idx))
				break;
			if (quayi_deadline_passed(deadline)) {
				/* Relaxed: a statistic. */
				__atomic_add_fetch(&p->failures, 1, __ATOMIC_RELAXED);
				return -ETIMEDOUT;
			}
			/* Relaxed: a statistic. */
			__atomic_add_fetch(&p->waits, 1, __ATOMIC_RELAXED);
			/* Returns at once if event moved on since ev; a deadline
			 * passed meanwhile is seen by the check above after one
			 * more try. */
			(void)quayi_futex_wait(&p->event, ev, deadline);
			if (try_take(p, tc, first, last, &ci, &idx))
				break;
		}
	}

	if (QUAYI_POOL_UNLIKELY(p->counted))
		/* POOL-D2: relaxed; the owner's reference (allocations stop
		 * before its put) keeps refs above 0, nothing to order. */
		__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
	m = (quay_msg *)(void *)buf_at(&p->cls[ci], idx);
	UNPOISON(m, p->cls[ci].size);
	/* The buffer is ours (POOL-P2); the previous holder's writes happened
	 * before (MSG-U1 -> POOL-P1 -> POOL-P2). */
	memset(m, 0, sizeof(*m));
	m->capacity = p->cls[ci].size - QUAY_MSG_ENVELOPE;
	m->cls = (uint8_t)ci;
	m->index = idx;
	m->pool = p;
	/* Relaxed: the message is not shared yet. */
	__atomic_store_n(&m->refcount, 1u, __ATOMIC_RELAXED);
	*out = m;
	return 0;
}

void
quayi_msg_release(quay_msg *m)
{
	quay_pool *p = m->pool;
	uint32_t ci = m->cls, idx = m->index;
	struct pclass *c = &p->cls[ci];
	struct tcache *tc;

	POISON(quayi_msg_data(m), m->capacity);
	tc = c->cache_cap != 0 ? tc_get(p) : NULL;
	if (tc != NULL) {
		uint32_t *part = tc_part(p, tc, ci);
		/* Relaxed: only this thread writes n. */
		uint32_t n = __atomic_load_n(&tc->n[ci], __ATOMIC_RELAXED);

		/* POOL-C1: relaxed peek at the sleepers bit. */
		if (QUAYI_POOL_LIKELY(!(__atomic_load_n(&p->event, __ATOMIC_RELAXED) & SLEEPERS))) {
			if (n == c->cache_cap) {
				/* Full: the older half goes back to the stack. */
				uint32_t half = n / 2 > 0 ? n / 2 : 1;

				give_shared(p, ci, part, half);
				memmove(part, part + half, (size_t)(n - half) * sizeof(*part));
				n -= half;
			}
			part[n] = idx;
			__atomic_store_n(&tc->n[ci], n + 1, __ATOMIC_RELAXED);
			return;
		}
		/* Someone waits: this buffer and the class's cached ones go to
		 * the shared stack, and the waiters wake. */
		part[n] = idx;
		__atomic_store_n(&tc->n[ci], n + 1, __ATOMIC_RELAXED);
		tc_flush_class(p, tc, ci);
		return;
	}
	give_shared(p, ci, &idx, 1);
	if (QUAYI_POOL_UNLIKELY(p->counted)) /* never cached: counted pools have no caches */
		pool_unhold(p);
}

int64_t
quayi_pool_now(const quay_pool *p)
{
	if (p->clock != NULL)
		return p->clock(p->clock_arg);
	return quayi_clock_fast_ns(); /* quay_queue_clock_tsc, as the queue's default */
}

size_t
quayi_pool_headroom(const quay_pool *p)
{
	return p->headroom;
}

/* ---- creation ------------------------------------------------------- */

static int
shape(size_t limit, const struct quay_pool_opts *o, uint32_t *nclasses, uint32_t *size, uint32_t *count)
{
	uint32_t n = o->nclasses;
	bool any_count = false, all_count = true;
	size_t total = 0;

	if (n > QUAY_POOL_CLASSES_MAX)
		return -EINVAL;
	if (n == 0) {
		for (uint32_t i = 0; i < QUAY_POOL_CLASSES_MAX; i++)
			if (o->class_size[i] != 0)
				return -EINVAL;
		n = (uint32_t)NDEFAULT;
		memcpy(size, default_classes, sizeof(default_classes));
	} else {
		for (uint32_t i = 0; i < QUAY_POOL_CLASSES_MAX; i++) {
			uint32_t s = o->class_size[i];

			if (i >= n) {
				if (s != 0)
					return -EINVAL;
				continue;
			}
			if (s < QUAY_POOL_CLASS_SIZE_MIN || s > QUAY_POOL_CLASS_SIZE_MAX || s % 64 != 0 ||
			    (i > 0 && s <= size[i - 1]))
				return -EINVAL;
			size[i] = s;
		}
	}
	for (uint32_t i = 0; i < QUAY_POOL_CLASSES_MAX; i++) {
		if (i >= n) {
			if (o->class_count[i] != 0)
				return -EINVAL;
			continue;
		}
		if (o->class_count[i] > QUAY_POOL_CLASS_COUNT_MAX)
			return -EINVAL;
		any_count |= o->class_count[i] != 0;
		all_count &= o->class_count[i] != 0;
	}
	if (any_count && !all_count)
		return -EINVAL;
	if (any_count) {
		for (uint32_t i = 0; i < n; i++) {
			count[i] = o->class_count[i];
			total += (size_t)count[i] * size[i];
		}
		if (total > limit)
			return -EINVAL;
	} else {
		size_t per = limit / n;

		for (uint32_t i = 0; i < n; i++) {
			size_t k = per / size[i];

			if (k == 0)
				return -EINVAL; /* cannot hold one buffer of every class */
			if (k > QUAY_POOL_CLASS_COUNT_MAX)
				k = QUAY_POOL_CLASS_COUNT_MAX;
			count[i] = (uint32_t)k;
			total += k * size[i];
		}
		/* What the even split leaves goes to the smallest class. */
		if (count[0] < QUAY_POOL_CLASS_COUNT_MAX) {
			size_t more = (limit - total) / size[0];

			if (more > QUAY_POOL_CLASS_COUNT_MAX - count[0])
				more = QUAY_POOL_CLASS_COUNT_MAX - count[0];
			count[0] += (uint32_t)more;
		}
	}
	*nclasses = n;
	return 0;
}

/* Free p and its blocks (any may be NULL), each with the size it was taken with. */
static void
free_pool(quay_pool *p)
{
	const struct quay_allocator *a = p->alloc;

	quayi_free_aligned(a, p->arena, 4096, p->arena_bytes);
	quayi_free(a, p->links, p->nbuf * sizeof(uint32_t));
	quayi_free_aligned(a, p->caches, 64, (size_t)p->ncaches * sizeof(struct tcache));
	quayi_free(a, p->cache_idx, (size_t)p->ncaches * p->cache_stride * sizeof(uint32_t));
	quayi_free_aligned(a, p, 64, sizeof(*p));
}

int
quay_pool_create(size_t limit, const struct quay_pool_opts *opts, quay_pool **out)
{
	struct quay_pool_opts defaults = QUAY_POOL_OPTS_INIT;
	const struct quay_pool_opts *o = opts ? opts : &defaults;
	uint32_t nclasses = 0, size[QUAY_POOL_CLASSES_MAX] = { 0 }, count[QUAY_POOL_CLASSES_MAX] = { 0 };
	uint32_t cache_size, cache_threads, stride = 0;
	size_t arena = 0, nbuf = 0, off = 0, lnk = 0;
	quay_pool *p;
	int rc;

	const struct quay_allocator *a = o->size == sizeof(*o) ? o->allocator : NULL;

	if (out == NULL || limit == 0 || limit > QUAY_POOL_LIMIT_MAX ||
	    (o->size != sizeof(*o) && o->size != offsetof(struct quay_pool_opts, allocator)) ||
	    quayi_alloc_check(a) != 0 || (o->flags & ~QUAY_POOL_FLAGS_ALL) != 0 ||
	    o->cache_size > QUAY_POOL_CACHE_MAX || o->cache_threads > QUAY_POOL_CACHE_THREADS_MAX ||
	    o->headroom > QUAY_POOL_CLASS_SIZE_MAX)
		return -EINVAL;
	rc = shape(limit, o, &nclasses, size, count);
	if (rc != 0)
		return rc;
	cache_size = o->cache_size ? o->cache_size : QUAY_POOL_CACHE_DEFAULT;
	cache_threads = o->cache_threads ? o->cache_threads : QUAY_POOL_CACHE_THREADS_DEFAULT;

	p = quayi_calloc_aligned(a, 64, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->alloc = a;
	p->nclasses = nclasses;
	p->flags = o->flags;
	p->headroom = o->headroom ? o->headroom : QUAY_POOL_HEADROOM_DEFAULT;
	p->limit = limit;
	p->clock = o->clock;
	p->clock_arg = o->clock_arg;
	if (p->clock == NULL)
		quayi_clock_prepare();
	for (uint32_t i = 0; i < nclasses; i++) {
		struct pclass *c = &p->cls[i];
		/* At most a quarter of the class sits in caches. */
		size_t cap = count[i] / ((size_t)4 * cache_threads);

		c->size = size[i];
		c->count = count[i];
		c->cache_cap =
		    (o->flags & QUAY_POOL_NO_CACHE) ? 0 : (uint32_t)(cap < cache_size ? cap : cache_size);
		c->cache_off = stride;
		stride += c->cache_cap;
		arena += (size_t)size[i] * count[i];
		nbuf += count[i];
	}
	p->arena_bytes = arena;
	p->cache_stride = stride;
	p->ncaches = stride ? cache_threads : 0;

	p->nbuf = nbuf;
	p->arena = quayi_alloc_aligned(a, 4096, arena);
	p->links = quayi_alloc(a, nbuf * sizeof(uint32_t));
	if (stride) {
		p->caches = quayi_alloc_aligned(a, 64, (size_t)p->ncaches * sizeof(struct tcache));
		p->cache_idx = quayi_alloc(a, (size_t)p->ncaches * stride * sizeof(uint32_t));
	}
	if (p->arena == NULL || p->links == NULL || (stride && (p->caches == NULL || p->cache_idx == NULL)))
		goto nomem;
	if (stride) {
		/* Without a key the pool simply runs without caches. */
		p->have_key = pthread_key_create(&p->key, tc_exit) == 0;
		memset(p->caches, 0, (size_t)p->ncaches * sizeof(struct tcache));
		for (uint32_t t = 0; t < p->ncaches; t++) {
			p->caches[t].pool = p;
			p->caches[t].idx = p->cache_idx + (size_t)t * stride;
		}
	}
	POISON(p->arena, arena);
	for (uint32_t i = 0; i < nclasses; i++) {
		struct pclass *c = &p->cls[i];

		c->base = p->arena + off;
		c->next = p->links + lnk;
		off += (size_t)c->size * c->count;
		lnk += c->count;
		/* Buffer 0 on top, then 1, 2, ...: low addresses first, so a
		 * lightly used pool touches few pages. Not shared yet: relaxed. */
		for (uint32_t b = 0; b < c->count; b++)
			__atomic_store_n(&c->next[b], b + 1 < c->count ? b + 2 : 0u, __ATOMIC_RELAXED);
		__atomic_store_n(&c->top, (uint64_t)1, __ATOMIC_RELAXED);
	}
	*out = p;
	return 0;

nomem:
	free_pool(p);
	return -ENOMEM;
}

/* Buffers of class ci held by messages: off the stack and not cached.
 * Exact when nothing runs concurrently; a snapshot otherwise. */
static uint64_t
class_in_use(const quay_pool *p, uint32_t ci, uint32_t *cached_out)
{
	/* Relaxed: statistics (see taken_add). */
	uint64_t taken = __atomic_load_n(&p->cls[ci].taken, __ATOMIC_RELAXED);
	uint64_t cached = 0;

	for (uint32_t t = 0; t < p->ncaches; t++)
		/* Relaxed: a snapshot of another thread's count (POOL-K1). */
		cached += __atomic_load_n(&p->caches[t].n[ci], __ATOMIC_RELAXED);
	if (cached_out != NULL)
		*cached_out = (uint32_t)(cached < p->cls[ci].count ? cached : p->cls[ci].count);
	return taken > cached ? taken - cached : 0;
}

/* The end of a counted pool's destroy, once nothing uses it. */
static void
pool_free_now(quay_pool *p)
{
	/* Threads still alive keep a pointer to their cache in the key's
	 * slot; once the key is deleted their exit runs no destructor, and a
	 * new key (even with the same number) reads NULL in every thread. */
	if (p->have_key)
		pthread_key_delete(p->key);
	UNPOISON(p->arena, p->arena_bytes);
	free_pool(p);
}

/* Drop one reference of a counted pool (a released buffer's, after the
 * release's last access to the pool; or the owner's): the last frees it. */
static void
pool_unhold(quay_pool *p)
{
	/* POOL-D1: acq_rel; pairs with every other POOL-D1 on refs: the one
	 * that reaches 0 sees each earlier holder's accesses to the pool
	 * (each released by its own decrement) before it frees. */
	if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
		pool_free_now(p);
}

int
quayi_pool_counted(quay_pool *p)
{
	if (p == NULL || p->cache_stride != 0 || p->counted)
		return -EINVAL;
	for (uint32_t ci = 0; ci < p->nclasses; ci++)
		if (class_in_use(p, ci, NULL) != 0)
			return -EBUSY;
	/* Relaxed: the pool is not shared yet (see quay_internal.h). */
	__atomic_store_n(&p->refs, (uint64_t)1, __ATOMIC_RELAXED);
	p->counted = true;
	return 0;
}

void
quayi_pool_put(quay_pool *p)
{
	if (p != NULL)
		pool_unhold(p);
}

int
quay_pool_destroy(quay_pool *p)
{
	if (p == NULL)
		return -EINVAL;
	for (uint32_t ci = 0; ci < p->nclasses; ci++)
		if (class_in_use(p, ci, NULL) != 0)
			return -EAGAIN;
	pool_free_now(p);
	return 0;
}

int
quay_pool_stats(const quay_pool *p, struct quay_pool_stats *out)
{
	struct quay_pool_stats s;

	if (p == NULL || out == NULL)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.limit_bytes = p->limit;
	s.arena_bytes = p->arena_bytes;
	s.nclasses = p->nclasses;
	/* Relaxed: statistics. */
	s.alloc_failures = __atomic_load_n(&p->failures, __ATOMIC_RELAXED);
	s.waits = __atomic_load_n(&p->waits, __ATOMIC_RELAXED);
	for (uint32_t ci = 0; ci < p->nclasses; ci++) {
		const struct pclass *c = &p->cls[ci];
		struct quay_pool_class_stats *cs = &s.cls[ci];
		uint32_t cached = 0;
		uint64_t in_use = class_in_use(p, ci, &cached);
		/* Relaxed: statistics. */
		uint64_t taken = __atomic_load_n(&c->taken, __ATOMIC_RELAXED);
		uint64_t hwm = __atomic_load_n(&c->hwm, __ATOMIC_RELAXED);

		if (in_use > c->count)
			in_use = c->count;
		if (taken > c->count)
			taken = c->count;
		if (cached + in_use > c->count)
			cached = c->count - (uint32_t)in_use;
		cs->buf_size = c->size;
		cs->buffers = c->count;
		cs->in_use = (uint32_t)in_use;
		cs->cached = cached;
		cs->free = c->count - cs->in_use - cached;
		cs->hwm = (uint32_t)(hwm < c->count ? hwm : c->count);
		cs->cache_cap = c->cache_cap;
		s.in_use += in_use;
		s.in_use_bytes += (size_t)in_use * c->size;
	}
	*out = s;
	return 0;
}

int
quay_pool_cache_flush(quay_pool *p)
{
	void *v;

	if (p == NULL)
		return -EINVAL;
	if (!p->have_key)
		return 0;
	v = pthread_getspecific(p->key);
	if (v != NULL && v != &nocache_marker)
		tc_flush((struct tcache *)v);
	return 0;
}

size_t
quay_pool_max_body(const quay_pool *p)
{
	return p ? (size_t)p->cls[p->nclasses - 1].size - QUAY_MSG_ENVELOPE : 0;
}
