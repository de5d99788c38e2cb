/* SPDX-License-Identifier: MIT */
/*
 * Pipelined durable sends (quay_queue_send_async, docs/DURABILITY.md
 * "Pipelined sends").
 *
 * A send is split as the multi-queue send splits it (src/queue_route.h):
 * quayi_queue_send_begin admits and stamps the message; the log's
 * add_async appends its ADD record without waiting for the sync; the
 * send then waits in the queue's ring of sends in flight. One completion
 * thread per queue takes everything in the ring, makes it durable with
 * one add_wait up to the highest LSN among them (the WAL shares one
 * fdatasync among every waiter), then, in ring order, runs each send's
 * callback and accepts it (quayi_queue_send_end: placed, receivable), or
 * on a failed wait aborts it (the log forgets it, the admission is
 * rolled back) and hands the reference back through the callback.
 *
 * Rules kept:
 *   - not receivable before durable: the message is placed only after
 *     add_wait returned 0 for an LSN at or above its record's;
 *   - exactly one completion per accepted send: a send enters the ring
 *     only once accepted, and leaves it only through complete();
 *     destroy drains the ring before the queue goes;
 *   - order of one thread's sends: a thread pushes its sends in order
 *     and the ring completes in ring order;
 *   - a bound: `reserved` counts sends between admission and completion,
 *     at most QUAY_QUEUE_ASYNC_MAX, so the ring never overflows.
 *
 * Locking: mu guards the ring indices, reserved and stop; it is never
 * held across a log call, a callback or a queue call.
 */
#include "alloc.h"
#include "queue_internal.h"
#include "queue_log.h"
#include "queue_route.h"
#include "quay_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <quay/queue.h>

struct aent {
	struct quayi_qsend s;
	quay_queue_sent_fn fn;
	void *arg;
	uint64_t lsn;
};

struct quayi_async {
	quay_queue *q;
	pthread_mutex_t mu;
	pthread_cond_t work; /* the completion thread: sends pushed, or stop */
	pthread_cond_t room; /* waiters: head moved */
	struct aent *ring;   /* QUAY_QUEUE_ASYNC_MAX entries */
	uint64_t head;       /* sends completed (tickets <= head are done): atomic */
	uint64_t tail;       /* sends pushed (under mu) */
	uint32_t reserved;   /* admitted, not yet completed (under mu) */
	bool started, stop;  /* under mu */
	pthread_t thr;
};

static void
complete(quay_queue *q, struct aent *e, int rc)
{
	quay_msg *orig = e->s.orig;

	if (rc == 0) {
		/* Callback first: the message is receivable only after it. */
		if (e->fn != NULL)
			e->fn(e->arg, orig, 0);
		quayi_queue_send_end(&e->s, 0);
		return;
	}
	quayi_qlog_add_abort(&q->log, e->s.msg);
	quayi_queue_send_end(&e->s, rc); /* the reference is orig's holder's again */
	if (e->fn != NULL)
		e->fn(e->arg, orig, rc);
	else
		quay_msg_unref(orig);
}

static void *
async_main(void *arg)
{
	struct quayi_async *a = arg;
	quay_queue *q = a->q;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		/* Relaxed: head is written only by this thread. */
		uint64_t head = __atomic_load_n(&a->head, __ATOMIC_RELAXED), end, lsn = 0;
		int rc;

		if (head == a->tail) {
			if (a->stop)
				break;
			pthread_cond_wait(&a->work, &a->mu);
			continue;
		}
		end = a->tail;
		pthread_mutex_unlock(&a->mu);
		/* [head, end) was filled before tail moved past it (under mu). */
		for (uint64_t i = head; i < end; i++) {
			uint64_t l = a->ring[i % QUAY_QUEUE_ASYNC_MAX].lsn;

			lsn = l > lsn ? l : lsn;
		}
		rc = quayi_qlog_add_wait(&q->log, lsn);
		for (uint64_t i = head; i < end; i++) {
			complete(q, &a->ring[i % QUAY_QUEUE_ASYNC_MAX], rc);
			/* QASYNC-D1: release; pairs with the acquire in
			 * quay_queue_send_done (the callback's effects and the
			 * placement are visible to whoever sees the ticket done). */
			__atomic_store_n(&a->head, i + 1, __ATOMIC_RELEASE);
		}
		pthread_mutex_lock(&a->mu);
		a->reserved -= (uint32_t)(end - head);
		pthread_cond_broadcast(&a->room);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* q's async state, made on first use. NULL: -ENOMEM. */
static struct quayi_async *
async_get(quay_queue *q)
{
	/* QASYNC-S1: acquire; pairs with the release CAS below (the state's
	 * fields are initialised before it is published). */
	struct quayi_async *a = __atomic_load_n(&q->async, __ATOMIC_ACQUIRE), *none = NULL;

	if (QUAYI_LIKELY(a != NULL))
		return a;
	if ((a = quayi_alloc(q->alloc, sizeof(*a))) == NULL)
		return NULL;
	*a = (struct quayi_async){ .q = q };
	a->ring = quayi_alloc(q->alloc, QUAY_QUEUE_ASYNC_MAX * sizeof(*a->ring));
	if (a->ring == NULL) {
		quayi_free(q->alloc, a, sizeof(*a));
		return NULL;
	}
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->work, NULL);
	pthread_cond_init(&a->room, NULL);
	/* QASYNC-S1: release on success (publishes the initialised state);
	 * acquire on failure (we then use the winner's). */
	if (__atomic_compare_exchange_n(&q->async, &none, a, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return a;
	pthread_cond_destroy(&a->room);
	pthread_cond_destroy(&a->work);
	pthread_mutex_destroy(&a->mu);
	quayi_free(q->alloc, a->ring, QUAY_QUEUE_ASYNC_MAX * sizeof(*a->ring));
	quayi_free(q->alloc, a, sizeof(*a));
	return none;
}

int
quay_queue_send_async(quay_queue *q, quay_msg *msg, quay_queue_sent_fn done, void *arg, uint64_t *ticket)
{
	struct quayi_async *a;
	struct aent e = { .fn = done, .arg = arg };
	uint64_t t;
	int rc;

	if (q == NULL || msg == NULL)
		return -EINVAL;
	if ((a = async_get(q)) == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&a->mu);
	if (!a->started) {
		if (pthread_create(&a->thr, NULL, async_main, a) != 0) {
			pthread_mutex_unlock(&a->mu);
			return -EAGAIN;
		}
		a->started = true;
	}
	if (a->reserved >= QUAY_QUEUE_ASYNC_MAX) {
		pthread_mutex_unlock(&a->mu);
		return -EBUSY;
	}
	a->reserved++;
	pthread_mutex_unlock(&a->mu);

	rc = quayi_queue_send_begin(q, msg, &e.s);
	if (rc == 0 && (rc = quayi_qlog_add_async(&q->log, e.s.msg, &e.lsn)) != 0)
		quayi_queue_send_end(&e.s, rc); /* rolled back: the caller keeps msg */
	pthread_mutex_lock(&a->mu);
	if (rc != 0) {
		a->reserved--;
		pthread_cond_broadcast(&a->room);
		pthread_mutex_unlock(&a->mu);
		return rc; /* QUAY_QUEUE_DUPLICATE or an error */
	}
	/* reserved <= MAX and head + reserved >= tail + 1: the slot is free. */
	t = a->tail++;
	a->ring[t % QUAY_QUEUE_ASYNC_MAX] = e;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->mu);
	if (ticket != NULL)
		*ticket = t + 1;
	return 0;
}

bool
quay_queue_send_done(const quay_queue *q, uint64_t ticket)
{
	const struct quayi_async *a;

	if (q == NULL || ticket == 0)
		return false;
	/* QASYNC-S1: acquire; pairs with async_get's CAS. */
	a = __atomic_load_n(&q->async, __ATOMIC_ACQUIRE);
	/* QASYNC-D1: acquire; pairs with async_main's release store. */
	return a != NULL && __atomic_load_n(&a->head, __ATOMIC_ACQUIRE) >= ticket;
}

int
quay_queue_send_wait(quay_queue *q, uint64_t ticket)
{
	struct quayi_async *a;

	if (q == NULL)
		return -EINVAL;
	/* QASYNC-S1: acquire; pairs with async_get's CAS. */
	a = __atomic_load_n(&q->async, __ATOMIC_ACQUIRE);
	if (a == NULL)
		return ticket == 0 ? 0 : -EINVAL;
	pthread_mutex_lock(&a->mu);
	if (ticket > a->tail) {
		pthread_mutex_unlock(&a->mu);
		return -EINVAL;
	}
	if (a->started && pthread_equal(a->thr, pthread_self())) {
		pthread_mutex_unlock(&a->mu);
		return -EDEADLK;
	}
	if (ticket == 0)
		ticket = a->tail;
	/* Relaxed: under mu, the wake-up (room) follows the store. */
	while (__atomic_load_n(&a->head, __ATOMIC_RELAXED) < ticket)
		pthread_cond_wait(&a->room, &a->mu);
	pthread_mutex_unlock(&a->mu);
	return 0;
}

void
quayi_async_fini(quay_queue *q)
{
	/* Relaxed: destroy is serialised with every other call on q. */
	struct quayi_async *a = __atomic_load_n(&q->async, __ATOMIC_RELAXED);

	if (a == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	a->stop = true;
	pthread_cond_signal(&a->work);
	pthread_mutex_unlock(&a->mu);
	if (a->started)
		pthread_join(a->thr, NULL); /* it completes every send first */
	pthread_cond_destroy(&a->room);
	pthread_cond_destroy(&a->work);
	pthread_mutex_destroy(&a->mu);
	quayi_free(q->alloc, a->ring, QUAY_QUEUE_ASYNC_MAX * sizeof(*a->ring));
	quayi_free(q->alloc, a, sizeof(*a));
	q->async = NULL;
}
