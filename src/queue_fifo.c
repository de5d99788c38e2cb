/* SPDX-License-Identifier: MIT */
/*
 * FIFO queues (QUAY_QUEUE_FIFO): message groups (QUAY_MSG_H_GROUP).
 *
 * The rule "one message of a group out at a time" is kept by never
 * letting more than one message of a group into the queue's ready /
 * delayed / in-flight machinery at all. The first message of a group is
 * its head and goes in as any message does (ready, or delayed by its
 * not-before time); every later one is parked here, in its group's list,
 * in arrival order. The head then lives the ordinary life of a message:
 * receive, nack or lease expiry and retry with backoff (it stays the
 * head through its backoff: nothing else of the group is in the queue),
 * release, extend. Only when it leaves for good (ack, dead letter, drop,
 * redrive out) does quayi_fifo_done hand the next parked message back to
 * the queue, which places it as the new head. So the receive path is the
 * standard queue's, unchanged and lock-free: groups cost a lock at the
 * two ends of a message's life (send and ack), on one of 64 stripes.
 *
 * Groups are keyed by XXH3-128 of the group id (no header: the default
 * group, key 0). Two ids with the same 128-bit key would share a group:
 * still in order within each, merely serialised together.
 *
 * Memory is fixed at create: a group needs at least one held message, a
 * parked message is a held one, so `capacity` group entries and
 * `capacity` park nodes always suffice; their free lists are quay rings.
 */
#include "queue_x.h"
#include "quay_internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <quay/ring.h>
#include <xxhash.h>

#define NIL UINT32_MAX
#define STRIPES 64u

struct fgroup {
	uint64_t h1, h2;
	uint32_t next;         /* bucket chain */
	uint32_t phead, ptail; /* parked messages, oldest first */
};

struct fpark {
	quay_msg *msg;
	uint32_t next;
};

struct fstripe {
	pthread_mutex_t lock;
} QUAYI_ALIGNED(QUAY_CACHELINE);

struct quayi_fifo {
	const struct quay_allocator *alloc; /* the queue's */
	uint32_t nbuckets;                  /* a power of two, >= STRIPES */
	uint32_t *bucket;                   /* first group of each bucket, NIL */
	struct fgroup *g;
	struct fpark *p;
	uint32_t n;               /* entries of g and of p (capacity) */
	quay_ring *gfree, *pfree; /* free indexes */
	uint64_t parked QUAYI_ALIGNED(QUAY_CACHELINE);
	struct fstripe stripe[STRIPES];
};

int
quayi_fifo_create(struct quayi_qx *x, size_t capacity)
{
	struct quayi_fifo *f = quayi_calloc_aligned(x->alloc, QUAY_CACHELINE, sizeof(*f));
	struct quay_ring_opts ro = QUAY_RING_OPTS_INIT;
	size_t nb = STRIPES, rc_cap = 1;
	int rc = -ENOMEM;

	if (f == NULL)
		return -ENOMEM;
	f->alloc = ro.allocator = x->alloc;
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_mutex_init(&f->stripe[i].lock, NULL);
	while (nb < capacity)
		nb <<= 1;
	while (rc_cap < capacity)
		rc_cap <<= 1;
	f->nbuckets = (uint32_t)nb;
	f->n = (uint32_t)capacity;
	f->bucket = quayi_alloc(f->alloc, nb * sizeof(*f->bucket));
	f->g = quayi_calloc(f->alloc, capacity, sizeof(*f->g));
	f->p = quayi_calloc(f->alloc, capacity, sizeof(*f->p));
	x->fifo = f;
	if (f->bucket == NULL || f->g == NULL || f->p == NULL)
		return rc;
	memset(f->bucket, 0xff, nb * sizeof(*f->bucket));
	if ((rc = quay_ring_create_opts(rc_cap < 2 ? 2 : rc_cap, 8, &ro, &f->gfree)) != 0 ||
	    (rc = quay_ring_create_opts(rc_cap < 2 ? 2 : rc_cap, 8, &ro, &f->pfree)) != 0)
		return rc;
	for (uint64_t i = 0; i < capacity; i++)
		if (quay_ring_push(f->gfree, &i) != 0 || quay_ring_push(f->pfree, &i) != 0)
			return -ENOMEM;
	return 0;
}

void
quayi_fifo_destroy(struct quayi_fifo *f)
{
	if (f == NULL)
		return;
	if (f->bucket != NULL && f->g != NULL && f->p != NULL)
		for (uint32_t b = 0; b < f->nbuckets; b++)
			for (uint32_t gi = f->bucket[b]; gi != NIL; gi = f->g[gi].next)
				for (uint32_t pi = f->g[gi].phead; pi != NIL; pi = f->p[pi].next)
					quay_msg_unref(f->p[pi].msg);
	quay_ring_destroy(f->gfree);
	quay_ring_destroy(f->pfree);
	quayi_free(f->alloc, f->bucket, (size_t)f->nbuckets * sizeof(*f->bucket));
	quayi_free(f->alloc, f->g, (size_t)f->n * sizeof(*f->g));
	quayi_free(f->alloc, f->p, (size_t)f->n * sizeof(*f->p));
	for (unsigned i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&f->stripe[i].lock);
	quayi_free_aligned(f->alloc, f, QUAY_CACHELINE, sizeof(*f));
}

static void
group_key(const quay_msg *msg, uint64_t *h1, uint64_t *h2)
{
	const void *g;
	size_t gl;

	(void)quayi_msg_group(msg, &g, &gl);
	if (gl == 0) {
		*h1 = 0;
		*h2 = 0;
	} else {
		XXH128_hash_t h = XXH3_128bits(g, gl);

		*h1 = h.low64;
		*h2 = h.high64 | 1; /* never the default group's key */
	}
}

/* Take a free index. One always exists (see the top); a pop can still
 * fail for an instant while a freed index's push is unpublished (the
 * ring's R2): wait for it. */
static uint32_t
take(quay_ring *r)
{
	uint64_t i;
	unsigned spins = 0;

	while (quay_ring_pop(r, &i) != 0) {
		if (++spins < 64)
			quayi_cpu_relax();
		else
			sched_yield();
	}
	return (uint32_t)i;
}

static void
give(quay_ring *r, uint32_t idx)
{
	uint64_t i = idx;
	unsigned spins = 0;

	while (quay_ring_push(r, &i) != 0) {
		if (++spins < 64)
			quayi_cpu_relax();
		else
			sched_yield();
	}
}

bool
quayi_fifo_admit(quay_queue *q, quay_msg *msg)
{
	struct quayi_fifo *f = q->x->fifo;
	uint64_t h1, h2;
	uint32_t b, gi;
	pthread_mutex_t *lk;

	group_key(msg, &h1, &h2);
	b = (uint32_t)(h1 ^ h2 ^ (h2 >> 32)) & (f->nbuckets - 1);
	lk = &f->stripe[b & (STRIPES - 1)].lock;
	pthread_mutex_lock(lk);
	for (gi = f->bucket[b]; gi != NIL; gi = f->g[gi].next)
		if (f->g[gi].h1 == h1 && f->g[gi].h2 == h2)
			break;
	if (gi == NIL) {
		/* A new group: msg is its head, the queue places it. */
		gi = take(f->gfree);
		f->g[gi] = (struct fgroup){ h1, h2, f->bucket[b], NIL, NIL };
		f->bucket[b] = gi;
		pthread_mutex_unlock(lk);
		return false;
	}
	{
		uint32_t pi = take(f->pfree);

		f->p[pi].msg = msg;
		f->p[pi].next = NIL;
		if (f->g[gi].ptail == NIL)
			f->g[gi].phead = pi;
		else
			f->p[f->g[gi].ptail].next = pi;
		f->g[gi].ptail = pi;
	}
	pthread_mutex_unlock(lk);
	/* Relaxed: a gauge (stats), not a hand-over (the lock is). */
	__atomic_fetch_add(&f->parked, 1, __ATOMIC_RELAXED);
	return true;
}

quay_msg *
quayi_fifo_done(quay_queue *q, const quay_msg *msg)
{
	struct quayi_fifo *f = q->x->fifo;
	quay_msg *next = NULL;
	uint64_t h1, h2;
	uint32_t b, gi, *link;
	pthread_mutex_t *lk;

	group_key(msg, &h1, &h2);
	b = (uint32_t)(h1 ^ h2 ^ (h2 >> 32)) & (f->nbuckets - 1);
	lk = &f->stripe[b & (STRIPES - 1)].lock;
	pthread_mutex_lock(lk);
	for (link = &f->bucket[b]; (gi = *link) != NIL; link = &f->g[gi].next)
		if (f->g[gi].h1 == h1 && f->g[gi].h2 == h2)
			break;
	if (gi == NIL) {
		/* Not a head of ours (cannot happen: every message that
		 * entered went through admit). */
		pthread_mutex_unlock(lk);
		return NULL;
	}
	if (f->g[gi].phead != NIL) {
		uint32_t pi = f->g[gi].phead;

		next = f->p[pi].msg;
		f->g[gi].phead = f->p[pi].next;
		if (f->g[gi].phead == NIL)
			f->g[gi].ptail = NIL;
		pthread_mutex_unlock(lk);
		give(f->pfree, pi);
		/* Relaxed: as in admit. */
		__atomic_fetch_sub(&f->parked, 1, __ATOMIC_RELAXED);
		return next;
	}
	*link = f->g[gi].next; /* the group is empty: gone */
	pthread_mutex_unlock(lk);
	give(f->gfree, gi);
	return NULL;
}

uint64_t
quayi_fifo_parked(const quay_queue *q)
{
	if (q->x == NULL || q->x->fifo == NULL)
		return 0;
	/* Relaxed: a gauge. */
	return __atomic_load_n(&q->x->fifo->parked, __ATOMIC_RELAXED);
}

int
quayi_fifo_browse(quay_queue *q, quay_queue_visit_fn fn, void *ctx)
{
	struct quayi_fifo *f = q->x != NULL ? q->x->fifo : NULL;
	int stop = 0;

	if (f == NULL)
		return 0;
	for (uint32_t b = 0; b < f->nbuckets && stop == 0; b++) {
		pthread_mutex_t *lk = &f->stripe[b & (STRIPES - 1)].lock;

		pthread_mutex_lock(lk);
		for (uint32_t gi = f->bucket[b]; gi != NIL && stop == 0; gi = f->g[gi].next)
			for (uint32_t pi = f->g[gi].phead; pi != NIL && stop == 0; pi = f->p[pi].next)
				stop = fn(ctx, f->p[pi].msg, QUAY_QUEUE_READY);
		pthread_mutex_unlock(lk);
	}
	return stop;
}
