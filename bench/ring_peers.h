/* SPDX-License-Identifier: MIT */
/*
 * The queues bench_ring.c compares, in C, each behind the same adaptor so
 * that one harness drives them all (struct qb_peer):
 *
 *   create(P, C, per_producer)       the queue, or NULL
 *   push(q, producer, v)             1 pushed, 0 full (retry), -1 broken
 *   pop(q, &v)                       1 popped, 0 empty (retry), -1 broken
 *   push_burst / pop_burst(q, v, n)  (quay only) how many were moved
 *   reset(q, nstops)                 between iterations, single-threaded
 *   drain(q, &v)                     pop that never sleeps (mutex_cv; the
 *                                    others: NULL, pop is used), run alone
 *
 * The harness instantiates its loops once per peer with the adaptor a
 * compile-time constant (always-inline bodies, a const struct of static
 * functions), so every peer's calls are inlined as quay's are.
 *
 * Every bounded peer gets the same capacity (QB_CAPACITY) and 8-byte
 * values. None retries internally on full/empty: the harness does, with
 * one retry policy for all (bench_ring.c, backoff).
 *
 * Peers:
 *   quay ring       SPSC (QUAY_RING_SP | QUAY_RING_SC) and MPMC (flags 0)
 *   ck_ring         concurrencykit's SPSC and MPMC calls (ck_ring.h is C:
 *                   included as it is, no wrapper)
 *   wfcq            liburcu's cds_wfcq, UNBOUNDED
 *   mutex           pthread mutex + 2 condvars + circular array, try ops
 *   mutex_cv        the same queue sleeping on its condvars
 *   vyukov_mpmc     Dmitry Vyukov's bounded MPMC queue
 *   lamport_spsc    Lamport SPSC ring with cached indices
 * The last two are written here from their published descriptions (not
 * from anyone's code).
 */
#ifndef QUAY_BENCH_RING_PEERS_H
#define QUAY_BENCH_RING_PEERS_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ck_ring.h>
#include <urcu/wfcqueue.h>

#include <quay/quay.h>

#define QB_CAPACITY 1024 /* every bounded peer: 1024 slots of 8 bytes */
#define QB_MASK (QB_CAPACITY - 1)
#define QB_MAX_SIDE 8 /* most producers (or consumers) in a run */
#define QB_LINE 64
/* The adaptor calls: inlined into the harness loops even where the
 * compiler would rather not (a burst call inside a loop). */
#define QB_PEER_CALL static inline __attribute__((always_inline))

_Static_assert((QB_CAPACITY & QB_MASK) == 0, "capacity must be a power of two");

struct qb_peer {
	void *(*create)(int producers, int consumers, size_t per_producer);
	void (*destroy)(void *q);
	void (*reset)(void *q, int nstops); /* NULL: nothing to do */
	int (*push)(void *q, int producer, uint64_t v);
	int (*pop)(void *q, uint64_t *v);
	size_t (*push_burst)(void *q, const uint64_t *v, size_t n); /* NULL: none */
	size_t (*pop_burst)(void *q, uint64_t *v, size_t n);
	int (*drain)(void *q, uint64_t *v); /* NULL: pop */
};

static inline void *
qb_aligned(size_t size)
{
	void *mem = NULL;
	if (posix_memalign(&mem, QB_LINE, size) != 0)
		return NULL;
	memset(mem, 0, size);
	return mem;
}

/* -------------------------------------------------------------------------
 * quay ring */

static inline void *
quay_create(unsigned flags)
{
	quay_ring *r = NULL;
	return quay_ring_create(QB_CAPACITY, sizeof(uint64_t), flags, &r) == 0 ? r : NULL;
}
static void *
quay_spsc_create(int p, int c, size_t n)
{
	(void)p, (void)c, (void)n;
	return quay_create(QUAY_RING_SP | QUAY_RING_SC);
}
static void *
quay_mpmc_create(int p, int c, size_t n)
{
	(void)p, (void)c, (void)n;
	return quay_create(0);
}
static void
quay_destroy(void *q)
{
	quay_ring_destroy(q);
}
QB_PEER_CALL int
quay_push(void *q, int producer, uint64_t v)
{
	(void)producer;
	const int rc = quay_ring_push(q, &v);
	return rc == 0 ? 1 : rc == -EAGAIN ? 0 : -1;
}
QB_PEER_CALL int
quay_pop(void *q, uint64_t *v)
{
	const int rc = quay_ring_pop(q, v);
	return rc == 0 ? 1 : rc == -EAGAIN ? 0 : -1;
}
QB_PEER_CALL size_t
quay_push_burst(void *q, const uint64_t *v, size_t n)
{
	return quay_ring_push_burst(q, v, n);
}
QB_PEER_CALL size_t
quay_pop_burst(void *q, uint64_t *v, size_t n)
{
	return quay_ring_pop_burst(q, v, n);
}

static const struct qb_peer qb_quay_spsc = {quay_spsc_create, quay_destroy, NULL, quay_push, quay_pop, quay_push_burst,
    quay_pop_burst, NULL};
static const struct qb_peer qb_quay_mpmc = {quay_mpmc_create, quay_destroy, NULL, quay_push, quay_pop, quay_push_burst,
    quay_pop_burst, NULL};

/* -------------------------------------------------------------------------
 * concurrencykit ck_ring: a ring of pointer-sized values. ck keeps one slot
 * empty, so a 1024-slot ck_ring holds 1023 values. */

struct ck_q {
	ck_ring_t ring __attribute__((aligned(QB_LINE)));
	ck_ring_buffer_t *buf;
};

static void *
ck_create(int p, int c, size_t n)
{
	(void)p, (void)c, (void)n;
	struct ck_q *q = qb_aligned(sizeof *q);
	if (q == NULL)
		return NULL;
	q->buf = qb_aligned(QB_CAPACITY * sizeof(ck_ring_buffer_t));
	if (q->buf == NULL) {
		free(q);
		return NULL;
	}
	ck_ring_init(&q->ring, QB_CAPACITY);
	return q;
}
static void
ck_destroy(void *q)
{
	free(((struct ck_q *)q)->buf);
	free(q);
}
QB_PEER_CALL int
ck_spsc_push(void *qv, int producer, uint64_t v)
{
	struct ck_q *q = qv;
	(void)producer;
	return ck_ring_enqueue_spsc(&q->ring, q->buf, (const void *)(uintptr_t)v) ? 1 : 0;
}
QB_PEER_CALL int
ck_spsc_pop(void *qv, uint64_t *v)
{
	struct ck_q *q = qv;
	void *p = NULL;
	if (!ck_ring_dequeue_spsc(&q->ring, q->buf, &p))
		return 0;
	*v = (uint64_t)(uintptr_t)p;
	return 1;
}
QB_PEER_CALL int
ck_mpmc_push(void *qv, int producer, uint64_t v)
{
	struct ck_q *q = qv;
	(void)producer;
	return ck_ring_enqueue_mpmc(&q->ring, q->buf, (const void *)(uintptr_t)v) ? 1 : 0;
}
QB_PEER_CALL int
ck_mpmc_pop(void *qv, uint64_t *v)
{
	struct ck_q *q = qv;
	void *p = NULL;
	if (!ck_ring_dequeue_mpmc(&q->ring, q->buf, &p))
		return 0;
	*v = (uint64_t)(uintptr_t)p;
	return 1;
}

static const struct qb_peer qb_ck_spsc = {ck_create, ck_destroy, NULL, ck_spsc_push, ck_spsc_pop, NULL, NULL, NULL};
static const struct qb_peer qb_ck_mpmc = {ck_create, ck_destroy, NULL, ck_mpmc_push, ck_mpmc_pop, NULL, NULL, NULL};

/* -------------------------------------------------------------------------
 * liburcu cds_wfcq: an UNBOUNDED wait-free linked queue (never "full").
 * Each producer enqueues the next node of its own preallocated array, so
 * no allocator runs inside the timed region. Many consumers serialise on
 * the queue's dequeue mutex (cds_wfcq_dequeue_blocking); a single consumer
 * uses the lock-free __cds_wfcq_dequeue_blocking, which urcu allows when
 * dequeues are serialised by the caller. Called through liburcu's library
 * functions (no _LGPL_SOURCE), as an ordinary user of the shared library
 * would. */

struct wfcq_node {
	struct cds_wfcq_node node; /* first member: a node pointer is the wfcq_node */
	uint64_t value;
};
struct wfcq_cursor {
	size_t next __attribute__((aligned(QB_LINE))); /* written by its producer only */
};
struct wfcq_q {
	struct cds_wfcq_head head __attribute__((aligned(QB_LINE)));
	struct cds_wfcq_tail tail __attribute__((aligned(QB_LINE)));
	struct wfcq_cursor cursor[QB_MAX_SIDE];
	struct wfcq_node *nodes[QB_MAX_SIDE];
	struct wfcq_node stops[QB_MAX_SIDE];
	size_t next_stop;
	bool multi_consumer;
};

static void
wfcq_destroy(void *qv)
{
	struct wfcq_q *q = qv;
	cds_wfcq_destroy(&q->head, &q->tail);
	for (int i = 0; i < QB_MAX_SIDE; i++)
		free(q->nodes[i]);
	free(q);
}
static void *
wfcq_create(int producers, int consumers, size_t per)
{
	struct wfcq_q *q = qb_aligned(sizeof *q);
	if (q == NULL)
		return NULL;
	cds_wfcq_init(&q->head, &q->tail);
	q->multi_consumer = consumers > 1;
	for (int i = 0; i < producers; i++) {
		q->nodes[i] = calloc(per + 1, sizeof(struct wfcq_node));
		if (q->nodes[i] == NULL) {
			wfcq_destroy(q);
			return NULL;
		}
	}
	return q;
}
static void
wfcq_reset(void *qv, int nstops)
{
	struct wfcq_q *q = qv;
	(void)nstops;
	q->next_stop = 0;
	for (int i = 0; i < QB_MAX_SIDE; i++)
		q->cursor[i].next = 0;
}
QB_PEER_CALL int
wfcq_push(void *qv, int producer, uint64_t v)
{
	struct wfcq_q *q = qv;
	struct wfcq_node *n;
	if (v == ~(uint64_t)0) /* a stop marker: only one thread pushes these */
		n = &q->stops[q->next_stop++];
	else
		n = &q->nodes[producer][q->cursor[producer].next++];
	cds_wfcq_node_init(&n->node);
	n->value = v;
	cds_wfcq_enqueue(&q->head, &q->tail, &n->node);
	return 1;
}
QB_PEER_CALL int
wfcq_pop(void *qv, uint64_t *v)
{
	struct wfcq_q *q = qv;
	struct cds_wfcq_node *n = q->multi_consumer ? cds_wfcq_dequeue_blocking(&q->head, &q->tail) :
	                                              __cds_wfcq_dequeue_blocking(&q->head, &q->tail);
	if (n == NULL)
		return 0;
	*v = ((struct wfcq_node *)n)->value;
	return 1;
}

static const struct qb_peer qb_wfcq = {wfcq_create, wfcq_destroy, wfcq_reset, wfcq_push, wfcq_pop, NULL, NULL, NULL};

/* -------------------------------------------------------------------------
 * A bounded queue as a user would write it: one pthread mutex, two
 * condition variables, a circular array. The try calls never sleep (the
 * harness retries with the common policy); the wait calls sleep on the
 * condvars, at most 10 ms at a time (so that a capped run can still stop
 * it). */

struct mutex_q {
	pthread_mutex_t mu;
	pthread_cond_t not_empty;
	pthread_cond_t not_full;
	size_t head;
	size_t count;
	uint64_t buf[QB_CAPACITY];
};

static void *
mutex_create(int p, int c, size_t n)
{
	(void)p, (void)c, (void)n;
	struct mutex_q *q = qb_aligned(sizeof *q);
	if (q == NULL)
		return NULL;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->not_empty, NULL);
	pthread_cond_init(&q->not_full, NULL);
	return q;
}
static void
mutex_destroy(void *qv)
{
	struct mutex_q *q = qv;
	pthread_cond_destroy(&q->not_full);
	pthread_cond_destroy(&q->not_empty);
	pthread_mutex_destroy(&q->mu);
	free(q);
}
/* Both called with mu held; each wakes one waiter of the other side. */
static inline void
mutex_put(struct mutex_q *q, uint64_t v)
{
	q->buf[(q->head + q->count) & QB_MASK] = v;
	q->count++;
	pthread_cond_signal(&q->not_empty);
}
static inline uint64_t
mutex_take(struct mutex_q *q)
{
	const uint64_t v = q->buf[q->head];
	q->head = (q->head + 1) & QB_MASK;
	q->count--;
	pthread_cond_signal(&q->not_full);
	return v;
}
QB_PEER_CALL int
mutex_try_push(void *qv, int producer, uint64_t v)
{
	struct mutex_q *q = qv;
	(void)producer;
	pthread_mutex_lock(&q->mu);
	if (q->count == QB_CAPACITY) {
		pthread_mutex_unlock(&q->mu);
		return 0;
	}
	mutex_put(q, v);
	pthread_mutex_unlock(&q->mu);
	return 1;
}
QB_PEER_CALL int
mutex_try_pop(void *qv, uint64_t *v)
{
	struct mutex_q *q = qv;
	pthread_mutex_lock(&q->mu);
	if (q->count == 0) {
		pthread_mutex_unlock(&q->mu);
		return 0;
	}
	*v = mutex_take(q);
	pthread_mutex_unlock(&q->mu);
	return 1;
}
static inline struct timespec
mutex_deadline(long ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (ms % 1000) * 1000000L;
	ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	return ts;
}
QB_PEER_CALL int
mutex_push_wait(void *qv, int producer, uint64_t v)
{
	struct mutex_q *q = qv;
	const struct timespec dl = mutex_deadline(10);
	(void)producer;
	pthread_mutex_lock(&q->mu);
	while (q->count == QB_CAPACITY) {
		if (pthread_cond_timedwait(&q->not_full, &q->mu, &dl) == ETIMEDOUT) {
			pthread_mutex_unlock(&q->mu);
			return 0;
		}
	}
	mutex_put(q, v);
	pthread_mutex_unlock(&q->mu);
	return 1;
}
QB_PEER_CALL int
mutex_pop_wait(void *qv, uint64_t *v)
{
	struct mutex_q *q = qv;
	const struct timespec dl = mutex_deadline(10);
	pthread_mutex_lock(&q->mu);
	while (q->count == 0) {
		if (pthread_cond_timedwait(&q->not_empty, &q->mu, &dl) == ETIMEDOUT) {
			pthread_mutex_unlock(&q->mu);
			return 0;
		}
	}
	*v = mutex_take(q);
	pthread_mutex_unlock(&q->mu);
	return 1;
}

/* The mutex queue with the common retry policy (the reference peer). */
static const struct qb_peer qb_mutex = {mutex_create, mutex_destroy, NULL, mutex_try_push, mutex_try_pop, NULL, NULL,
    NULL};
/* The same queue used the way its API invites: sleep when full/empty. */
static const struct qb_peer qb_mutex_cv = {mutex_create, mutex_destroy, NULL, mutex_push_wait, mutex_pop_wait, NULL,
    NULL, mutex_try_pop};

/* -------------------------------------------------------------------------
 * Vyukov's bounded MPMC queue ("Bounded MPMC queue", 1024cores.net): an
 * array of cells, each a sequence number next to its value; producers and
 * consumers claim positions with a CAS on an enqueue / dequeue position
 * and hand each cell over through its sequence number.
 *
 * Cell i starts with seq = i. For position p (cell p & mask):
 *   seq == p        the cell is free for the producer of p
 *   seq == p + 1    the cell holds the value of p, ready for its consumer
 *   seq == p + cap  freed by the consumer of p, free for the producer of
 *                   p + cap (next lap)
 * A producer reads enqueue_pos, looks at the cell: seq - pos == 0 means
 * free (try to claim with the CAS), < 0 means full (the previous lap's
 * value is still there), > 0 means another producer already took pos
 * (reload). Consumers mirror this with pos + 1.
 *
 * Orderings:
 *   VY-R1 enqueue: store-release seq = pos + 1 after writing the value
 *         -> VY-A1 dequeue: load-acquire of seq, reads the value after.
 *   VY-R2 dequeue: store-release seq = pos + cap after reading the value
 *         -> VY-A2 enqueue: load-acquire of seq, overwrites the value after.
 *   The position CASes are relaxed: they only elect the owner of a
 *   position; the value moves only through seq (VY-R1/A1, VY-R2/A2).
 *   Position loads are relaxed: a stale one is caught by the seq check or
 *   by the CAS.
 *
 * Layout as published: the two positions on their own cache lines, cells
 * of {seq, value} packed (16 bytes, four per line), like quay's slots.
 * Both peers below use every slot (free-running positions), so a full
 * queue holds 1024 values. */

struct vy_cell {
	size_t seq;
	uint64_t value; /* plain: ownership passes through seq */
};
struct vy_q {
	size_t enq __attribute__((aligned(QB_LINE)));
	size_t deq __attribute__((aligned(QB_LINE)));
	struct vy_cell cells[QB_CAPACITY] __attribute__((aligned(QB_LINE)));
};

static void *
vy_create(int p, int c, size_t n)
{
	(void)p, (void)c, (void)n;
	struct vy_q *q = qb_aligned(sizeof *q);
	if (q == NULL)
		return NULL;
	for (size_t i = 0; i < QB_CAPACITY; i++)
		q->cells[i].seq = i; /* plain: no thread runs yet (thread creation orders it) */
	return q;
}
static void
vy_destroy(void *q)
{
	free(q);
}
QB_PEER_CALL int
vy_push(void *qv, int producer, uint64_t v)
{
	struct vy_q *q = qv;
	struct vy_cell *c;
	(void)producer;
	/* Relaxed: validated by the seq check and the CAS below. */
	size_t pos = __atomic_load_n(&q->enq, __ATOMIC_RELAXED);
	for (;;) {
		c = &q->cells[pos & QB_MASK];
		/* VY-A2: acquire, pairs with VY-R2 in vy_pop: the consumer of
		 * the previous lap has read its value from this cell. */
		const size_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
		const intptr_t dif = (intptr_t)seq - (intptr_t)pos;
		if (dif == 0) {
			/* Relaxed CAS: elects the owner of pos only; on failure
			 * pos holds the current value: retry. */
			if (__atomic_compare_exchange_n(&q->enq, &pos, pos + 1, true, __ATOMIC_RELAXED,
			        __ATOMIC_RELAXED))
				break;
		} else if (dif < 0) {
			return 0; /* full */
		} else {
			pos = __atomic_load_n(&q->enq, __ATOMIC_RELAXED); /* taken: reload (relaxed, as above) */
		}
	}
	c->value = v;
	/* VY-R1: release, pairs with VY-A1 in vy_pop: publishes the value. */
	__atomic_store_n(&c->seq, pos + 1, __ATOMIC_RELEASE);
	return 1;
}
QB_PEER_CALL int
vy_pop(void *qv, uint64_t *v)
{
	struct vy_q *q = qv;
	struct vy_cell *c;
	/* Relaxed: validated by the seq check and the CAS below. */
	size_t pos = __atomic_load_n(&q->deq, __ATOMIC_RELAXED);
	for (;;) {
		c = &q->cells[pos & QB_MASK];
		/* VY-A1: acquire, pairs with VY-R1 in vy_push: the value is written. */
		const size_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
		const intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
		if (dif == 0) {
			/* Relaxed CAS: elects the owner of pos only. */
			if (__atomic_compare_exchange_n(&q->deq, &pos, pos + 1, true, __ATOMIC_RELAXED,
			        __ATOMIC_RELAXED))
				break;
		} else if (dif < 0) {
			return 0; /* empty (or the producer of pos has not published yet) */
		} else {
			pos = __atomic_load_n(&q->deq, __ATOMIC_RELAXED); /* relaxed, as above */
		}
	}
	*v = c->value;
	/* VY-R2: release, pairs with VY-A2 in vy_push: frees the cell for the
	 * producer of pos + cap. */
	__atomic_store_n(&c->seq, pos + QB_CAPACITY, __ATOMIC_RELEASE);
	return 1;
}

static const struct qb_peer qb_vyukov_mpmc = {vy_create, vy_destroy, NULL, vy_push, vy_pop, NULL, NULL, NULL};

/* -------------------------------------------------------------------------
 * Lamport's single-producer single-consumer ring with cached indices (as
 * in FastForward / MCRingBuffer / folly's ProducerConsumerQueue).
 *
 * tail: next position the producer writes (written by the producer only);
 * head: next position the consumer reads (written by the consumer only).
 * Both free-running; full when tail - head == cap, empty when head == tail.
 * The producer keeps head_cache (a head it has seen) and re-reads head
 * only when tail - head_cache == cap; the consumer keeps tail_cache and
 * re-reads tail only when head == tail_cache. A stale cache only ever
 * says "fuller" (producer) or "emptier" (consumer) than the truth, so it
 * is safe, and the shared index lines move only when a cache runs out.
 *
 * Orderings:
 *   LS-R1 push: store-release tail = t + 1 after writing buf[t]
 *         -> LS-A1 pop: load-acquire of tail (refreshing tail_cache),
 *         reads buf[h] for h < tail_cache after.
 *   LS-R2 pop: store-release head = h + 1 after reading buf[h]
 *         -> LS-A2 push: load-acquire of head (refreshing head_cache),
 *         overwrites buf[t] for t < head_cache + cap after.
 *   Each side's own index is a private copy (it is the only writer).
 *
 * Layout: the shared tail and head each on their own line; each side's
 * private state (own position and cache) on a line of its own, so the
 * fast path touches only private lines and the buffer. */

struct ls_side {
	size_t pos __attribute__((aligned(QB_LINE))); /* own index (private copy of what we published) */
	size_t cache;                                 /* last value seen of the other side's index */
};
struct ls_q {
	size_t tail __attribute__((aligned(QB_LINE))); /* written by the producer */
	size_t head __attribute__((aligned(QB_LINE))); /* written by the consumer */
	struct ls_side prod;                           /* producer's private line */
	struct ls_side cons;                           /* consumer's private line */
	uint64_t buf[QB_CAPACITY] __attribute__((aligned(QB_LINE)));
};

static void *
ls_create(int p, int c, size_t n)
{
	(void)p, (void)c, (void)n;
	return qb_aligned(sizeof(struct ls_q));
}
QB_PEER_CALL int
ls_push(void *qv, int producer, uint64_t v)
{
	struct ls_q *q = qv;
	const size_t t = q->prod.pos;
	(void)producer;
	if (t - q->prod.cache == QB_CAPACITY) {
		/* LS-A2: acquire, pairs with LS-R2 in ls_pop: the consumer has
		 * read every slot below head. */
		q->prod.cache = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
		if (t - q->prod.cache == QB_CAPACITY)
			return 0; /* full */
	}
	q->buf[t & QB_MASK] = v;
	q->prod.pos = t + 1;
	/* LS-R1: release, pairs with LS-A1 in ls_pop: publishes buf[t]. */
	__atomic_store_n(&q->tail, t + 1, __ATOMIC_RELEASE);
	return 1;
}
QB_PEER_CALL int
ls_pop(void *qv, uint64_t *v)
{
	struct ls_q *q = qv;
	const size_t h = q->cons.pos;
	if (h == q->cons.cache) {
		/* LS-A1: acquire, pairs with LS-R1 in ls_push: every slot below
		 * tail is written. */
		q->cons.cache = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
		if (h == q->cons.cache)
			return 0; /* empty */
	}
	*v = q->buf[h & QB_MASK];
	q->cons.pos = h + 1;
	/* LS-R2: release, pairs with LS-A2 in ls_push: frees buf[h]. */
	__atomic_store_n(&q->head, h + 1, __ATOMIC_RELEASE);
	return 1;
}

static const struct qb_peer qb_lamport_spsc = {ls_create, vy_destroy, NULL, ls_push, ls_pop, NULL, NULL, NULL};

#endif /* QUAY_BENCH_RING_PEERS_H */
