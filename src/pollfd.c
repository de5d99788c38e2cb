/* SPDX-License-Identifier: MIT */
/*
 * Pollable descriptors: quay_ring_fd, quay_pq_fd, quay_queue_fd (and
 * quay_sub_fd in src/bus.c, on its ring or pq). The user's contract is in
 * docs/POLLING.md; this is the how.
 *
 * A descriptor is an eventfd (a queue's: an epoll set of an eventfd and a
 * timerfd, for the delayed messages and leases that come due) attached to
 * one or two event words of the wait protocol (quay/impl/wait_inline.h).
 * It behaves as one more sleeper on those words:
 *
 *   arm (POLL-A1, under the descriptor's lock; run when the descriptor is
 *   made and when a take finds the object empty, quayi_wait_poll_idle):
 *       clear FIRED on each word; read the eventfd (drains it)
 *       set SLEEPERS on each word
 *       POLL-S1: the heavy barrier of WAIT-S1 (membarrier, or a fence)
 *       if ready(): signal        else: set the timerfd to due(), if timed
 *   signal (POLL-W1, from quayi_wait_wake, which already cleared SLEEPERS
 *   with its CAS, and from an arm that found the object ready):
 *       write 1 to the eventfd; then set FIRED on each word
 *
 * No lost wake-up: a publish before an arm's POLL-S1 is seen by its
 * ready(); one after it is made by a waker whose WAIT-W1 load sees the
 * SLEEPERS bit (the argument of WAIT-W1/WAIT-S1), and the first such
 * waker signals. Whoever clears SLEEPERS (a waker's CAS) signals, so a
 * word without SLEEPERS has a readable descriptor or one about to be.
 *
 * No busy descriptor: the eventfd is readable only after a write, and
 * every write is followed by setting FIRED; a take that finds the object
 * empty re-arms unless the word shows SLEEPERS set and FIRED clear (armed,
 * and nothing written since the arm's read). A write that lands between an
 * arm's read and the FIRED it sets leaves FIRED set, so the next empty
 * take re-arms and drains it. Steady state under load: takes succeed and
 * never re-arm; wakers see SLEEPERS clear and never make a system call.
 *
 * The words carry no pointer (a ring or pq may live in memory the caller
 * gave, whose layout is fixed): a process-wide table maps a word's
 * address to its descriptor. It is read only by wakers that found
 * POLLED and SLEEPERS (about to make a system call anyway) and by arms.
 */
#include "pollfd.h"

#include "alloc.h"
#include "clock.h"
#include "queue_internal.h"
#include "quay_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <quay/err.h>
#include <quay/pq.h>
#include <quay/queue.h>
#include <quay/ring.h>

struct quayi_pollfd {
	int fd;               /* what the user polls: efd, or the epoll set of efd and tfd */
	int efd;              /* the eventfd */
	int tfd;              /* timed objects: the timerfd; else -1 */
	pthread_mutex_t lock; /* one arm at a time */
	struct quayi_pollfd_spec spec;
};

/* ---- the table: event word -> descriptor --------------------------- */

#define TABLE_BUCKETS 64u

struct entry {
	uint32_t *event;
	struct quayi_pollfd *p;
	struct entry *next;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *table[TABLE_BUCKETS];

static unsigned
bucket(const uint32_t *event)
{
	uintptr_t a = (uintptr_t)event >> 2;

	return (unsigned)((a ^ (a >> 6) ^ (a >> 12)) % TABLE_BUCKETS);
}

/* Under table_lock. */
static struct quayi_pollfd *
lookup(const uint32_t *event)
{
	for (struct entry *e = table[bucket(event)]; e != NULL; e = e->next)
		if (e->event == event)
			return e->p;
	return NULL;
}

static struct quayi_pollfd *
find(const uint32_t *event)
{
	struct quayi_pollfd *p;

	pthread_mutex_lock(&table_lock);
	p = lookup(event);
	pthread_mutex_unlock(&table_lock);
	return p;
}

/* ---- signal and arm ------------------------------------------------- */

/* POLL-W1: make the descriptor readable, then mark the words FIRED so that
 * the next empty take re-arms (and drains it). */
static void
signal_fd(struct quayi_pollfd *p)
{
	uint64_t one = 1;

	/* Cannot fail short of a counter at 2^64 - 2 (never: arms drain it). */
	(void)!write(p->efd, &one, sizeof one);
	for (unsigned i = 0; i < p->spec.nevents; i++)
		/* Relaxed: FIRED only steers the next arm, which re-reads the
		 * eventfd itself; the syscall orders it after the write. */
		__atomic_fetch_or(p->spec.events[i], QUAYI_WAIT_FIRED, __ATOMIC_RELAXED);
}

/* POLL-A1: the arm (see the top of this file). */
static void
arm(struct quayi_pollfd *p)
{
	uint64_t v;

	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->spec.nevents; i++)
		/* Relaxed: cleared before the read below drains the eventfd; a
		 * signal after the read sets it again. */
		__atomic_fetch_and(p->spec.events[i], ~QUAYI_WAIT_FIRED, __ATOMIC_RELAXED);
	while (read(p->efd, &v, sizeof v) == (ssize_t)sizeof v)
		; /* non-blocking: stops at EAGAIN */
	for (unsigned i = 0; i < p->spec.nevents; i++)
		/* Relaxed: POLL-S1 below orders it before the ready() check,
		 * as WAIT-S1 does for a sleeper's fetch_or. */
		__atomic_fetch_or(p->spec.events[i], QUAYI_WAIT_SLEEPERS, __ATOMIC_RELAXED);
	quayi_wait_heavy_barrier(p->spec.fence); /* POLL-S1 (WAIT-S1) */
	if (p->spec.ready(p->spec.ctx)) {
		signal_fd(p);
	} else if (p->tfd >= 0) {
		/* Settime also resets the timerfd's expiry count: it stops
		 * being readable until the new time. 0 disarms. */
		int64_t due = p->spec.due(p->spec.ctx);
		struct itimerspec its;

		memset(&its, 0, sizeof its);
		if (due >= 0)
			its.it_value = quayi_ns_to_ts(due > 0 ? due : 1);
		(void)timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL);
		/* A timer expiry writes no event word, so leave FIRED set while
		 * the timer is armed: the empty take after its wake (work that
		 * turned out to be nothing, e.g. an acked lease's stale expiry)
		 * must re-arm, which resets the timerfd; else it stays readable. */
		if (due >= 0)
			for (unsigned i = 0; i < p->spec.nevents; i++)
				/* Relaxed: as in signal_fd; only steers the next arm. */
				__atomic_fetch_or(p->spec.events[i], QUAYI_WAIT_FIRED, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&p->lock);
}

void
quayi_pollfd_signal_word(uint32_t *event)
{
	struct quayi_pollfd *p = find(event);

	/* NULL: the word's descriptor is being made (the table entry comes
	 * first, but POLLED is never set without it) or was forgotten by a
	 * destroy that raced with nothing (destroy has no concurrent user). */
	if (p != NULL)
		signal_fd(p);
}

void
quayi_wait_poll_idle(uint32_t *event)
{
	/* Relaxed: the fast test of the top of this file; an arm re-reads
	 * everything under its lock. */
	uint32_t v = __atomic_load_n(event, __ATOMIC_RELAXED);
	struct quayi_pollfd *p;

	if ((v & (QUAYI_WAIT_SLEEPERS | QUAYI_WAIT_FIRED)) == QUAYI_WAIT_SLEEPERS)
		return; /* armed, nothing written since */
	if ((p = find(event)) != NULL)
		arm(p);
}

/* ---- make and forget ------------------------------------------------ */

static void
close_fds(struct quayi_pollfd *p)
{
	if (p->tfd >= 0)
		close(p->tfd);
	if (p->fd != p->efd && p->fd >= 0)
		close(p->fd);
	if (p->efd >= 0)
		close(p->efd);
}

/* Out of descriptors (EMFILE, ENFILE) or kernel memory: -ENOMEM, "a
 * configured limit reached" (quay/err.h). */
static int
fd_errno(void)
{
	return -ENOMEM;
}

static int
open_fds(struct quayi_pollfd *p)
{
	struct epoll_event ev;

	p->fd = p->efd = p->tfd = -1;
	if ((p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		return fd_errno();
	if (p->spec.due == NULL) {
		p->fd = p->efd;
		return 0;
	}
	if ((p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0 ||
	    (p->fd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return fd_errno();
	memset(&ev, 0, sizeof ev);
	ev.events = EPOLLIN;
	if (epoll_ctl(p->fd, EPOLL_CTL_ADD, p->efd, &ev) != 0 ||
	    epoll_ctl(p->fd, EPOLL_CTL_ADD, p->tfd, &ev) != 0)
		return fd_errno();
	return 0;
}

int
quayi_pollfd_get(const struct quayi_pollfd_spec *spec)
{
	struct quayi_pollfd *p;
	struct entry *e[2] = { NULL, NULL };
	int rc;

	pthread_mutex_lock(&table_lock);
	if ((p = lookup(spec->events[0])) != NULL) {
		rc = p->fd;
		pthread_mutex_unlock(&table_lock);
		return rc;
	}
	p = quayi_calloc(spec->alloc, 1, sizeof *p);
	for (unsigned i = 0; i < spec->nevents; i++)
		e[i] = quayi_calloc(spec->alloc, 1, sizeof *e[i]);
	if (p == NULL || e[0] == NULL || (spec->nevents > 1 && e[1] == NULL)) {
		rc = -ENOMEM;
		goto fail;
	}
	p->spec = *spec;
	if ((rc = open_fds(p)) != 0) {
		close_fds(p);
		goto fail;
	}
	pthread_mutex_init(&p->lock, NULL);
	for (unsigned i = 0; i < spec->nevents; i++) {
		unsigned b = bucket(spec->events[i]);

		e[i]->event = spec->events[i];
		e[i]->p = p;
		e[i]->next = table[b];
		table[b] = e[i];
		/* Relaxed: set before the arm below sets SLEEPERS on the same
		 * word, so a waker whose CAS sees SLEEPERS sees POLLED (POLL-W1). */
		__atomic_fetch_or(spec->events[i], QUAYI_WAIT_POLLED, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&table_lock);
	arm(p);
	return p->fd;
fail:
	pthread_mutex_unlock(&table_lock);
	quayi_free(spec->alloc, e[0], sizeof *e[0]);
	quayi_free(spec->alloc, e[1], sizeof *e[1]);
	quayi_free(spec->alloc, p, sizeof *p);
	return rc;
}

void
quayi_pollfd_forget(uint32_t *event)
{
	struct quayi_pollfd *p;

	/* Relaxed: destroy has no concurrent user; POLLED was set by a
	 * get that happened before it. */
	if (event == NULL || !(__atomic_load_n(event, __ATOMIC_RELAXED) & QUAYI_WAIT_POLLED))
		return;
	pthread_mutex_lock(&table_lock);
	if ((p = lookup(event)) != NULL) {
		for (unsigned i = 0; i < p->spec.nevents; i++) {
			struct entry **pp = &table[bucket(p->spec.events[i])];

			while (*pp != NULL && (*pp)->p != p)
				pp = &(*pp)->next;
			if (*pp != NULL) {
				struct entry *dead = *pp;
				*pp = dead->next;
				quayi_free(p->spec.alloc, dead, sizeof *dead);
			}
			/* Relaxed: no concurrent user (destroy). The word may
			 * outlive the descriptor (a ring in the caller's memory). */
			__atomic_fetch_and(p->spec.events[i], ~(QUAYI_WAIT_POLLED | QUAYI_WAIT_FIRED),
			    __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&table_lock);
	if (p != NULL) {
		close_fds(p);
		pthread_mutex_destroy(&p->lock);
		quayi_free(p->spec.alloc, p, sizeof *p);
	}
}

/* ---- the objects' ready() and due() -------------------------------- */

/* The element at the ring's head is published (the slot's seq, or in
 * SPSC mode pub != head), or head moved on: the take retries. */
static bool
head_ready(const struct quay_ring *r)
{
	/* Relaxed: a hint only, the take re-checks. */
	return quayi_ring_head_ready(r, __atomic_load_n(&r->head, __ATOMIC_RELAXED));
}

/* A closed ring with nothing claimed past head: pop says -EPIPE for ever. */
static bool
ring_drained_closed(const struct quay_ring *r)
{
	uint64_t head, tail;

	/* Acquire: pairs with the release store of CLOSED in quay_ring_close;
	 * tail is final after it. */
	if (__atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) != QUAYI_RING_CLOSED)
		return false;
	head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) & QUAYI_RING_POS_MASK;
	return ((tail - head) & QUAYI_RING_POS_MASK) == 0;
}

/* Ring: a pop would return an element or -EPIPE. A claimed but not yet
 * published head is not ready: its pusher's WAIT-W1 follows its RING-R1. */
static bool
ring_ready(const void *ctx)
{
	const struct quay_ring *r = ctx;

	return head_ready(r) || ring_drained_closed(r);
}

/* Pq: some level has a published head (a scan of every level: arms are
 * rare), or the queue is closed and drained. */
static bool
pq_ready(const void *ctx)
{
	const struct quay_pq *pq = ctx;
	bool drained = true;

	for (unsigned i = pq->levels; i-- > 0;) {
		const struct quay_ring *r = quayi_pq_ring(pq, i);

		if (head_ready(r))
			return true;
		drained = drained && ring_drained_closed(r);
	}
	/* Acquire: pairs with the release store of CLOSED in quay_pq_close. */
	return drained && __atomic_load_n(&pq->closed, __ATOMIC_ACQUIRE) == QUAYI_PQ_CLOSED;
}

int
quay_ring_fd(quay_ring *r)
{
	struct quayi_pollfd_spec s = { { NULL, NULL }, 1, false, ring_ready, NULL, NULL, NULL };

	if (r == NULL)
		return -EINVAL;
	/* A shared ring's event words are in the file, seen by wakers of
	 * other processes, whose descriptor tables do not know this one. */
	if (r->flags & QUAYI_RING_F_SHARED)
		return -ENOTSUP;
	s.events[0] = &r->pop_event;
	s.fence = (r->flags & QUAYI_RING_F_FENCE) != 0;
	s.ctx = r;
	s.alloc = r->alloc;
	return quayi_pollfd_get(&s);
}

int
quay_pq_fd(quay_pq *pq)
{
	struct quayi_pollfd_spec s = { { NULL, NULL }, 1, false, pq_ready, NULL, NULL, NULL };

	if (pq == NULL)
		return -EINVAL;
	if (pq->flags & QUAYI_PQ_F_SHARED)
		return -ENOTSUP; /* wakers in other processes could not signal it */
	s.events[0] = &pq->pop_event;
	s.fence = quayi_pq_fence(pq) != 0;
	s.ctx = pq;
	s.alloc = pq->alloc;
	return quayi_pollfd_get(&s);
}

/* Queue: a receive would return something: closed (-EPIPE), or a ready
 * message and a free lease slot. Without a slot the arm also watches
 * free_slots, whose push (an ack, a nack, an expiry) wakes it. Timer work
 * (delayed messages, retries, lease expiries) is the timerfd's: see
 * queue_due. */
static bool
queue_ready(const void *ctx)
{
	const struct quay_queue *q = ctx;

	/* Relaxed: POLL-S1 orders these loads after the arm's SLEEPERS; the
	 * wakers (WAIT-W1 on the pq and free_slots, Q-C1) follow their stores,
	 * as for a sleeping receiver (recv_ready in src/queue.c). */
	if (__atomic_load_n(&q->closed, __ATOMIC_RELAXED) != 0)
		return true;
	return quay_ring_count(q->free_slots) != 0 && pq_ready(q->ready);
}

/* Queue: the CLOCK_MONOTONIC time of its next timer work (next_due is on
 * the queue's clock), or -1. An arm follows a receive that ran the timer
 * work due by then (or found another thread at it, whose results wake
 * the descriptor), so a next_due already passed is work the wheel files
 * in the current tick: look again one tick later rather than at once (a
 * blocking receiver yields for the same reason). Lowering next_due
 * wakes (Q-W2), and the re-arm sets the timer again. */
static int64_t
queue_due(const void *ctx)
{
	const struct quay_queue *q = ctx;
	/* Relaxed: a hint for the timer; lowering it wakes (Q-W2). */
	int64_t due = __atomic_load_n(&q->next_due, __ATOMIC_RELAXED), d;

	if (due == INT64_MAX)
		return -1;
	d = due - q->clock(q->clock_ctx);
	if (d <= 0)
		d = q->wheel.tick_ns;
	return quayi_ns_add_sat(quayi_mono_ns(), d);
}

int
quay_queue_fd(quay_queue *q)
{
	struct quayi_pollfd_spec s = { { NULL, NULL }, 2, false, queue_ready, queue_due, NULL, NULL };

	if (q == NULL)
		return -EINVAL;
	s.events[0] = &q->ready->pop_event;
	s.events[1] = &q->free_slots->pop_event;
	s.fence = quayi_pq_fence(q->ready) != 0 || (q->free_slots->flags & QUAYI_RING_F_FENCE) != 0;
	s.ctx = q;
	s.alloc = q->alloc;
	return quayi_pollfd_get(&s);
}
