/* SPDX-License-Identifier: MIT */
/*
 * The queue: leases, retry with backoff, dead letters, redrive, delay,
 * TTL, dedup (quay/queue.h; the why is in docs/QUEUE.md).
 *
 * Where a message lives:
 *   ready      q->ready, a quay_pq of quay_msg pointers (lock-free)
 *   delayed    a QUAYI_T_MSG node of q->wheel (timer lock)
 *   in flight  a lease slot q->slots[i] (state LEASED, lock-free), and
 *              an entry (gen, i) in the expiry FIFO q->expiry or, once the
 *              timer has looked at it, the slot's own wheel node i
 *   dead-letter retry  a QUAYI_T_DLQ node (the DLQ was full)
 *
 * Lease expiry without a lock per receive. The visibility timeout is one
 * value per queue, so leases expire in the order they were issued (extend
 * aside). A receive pushes (gen, slot) into the expiry FIFO (an MPMC
 * ring) and lowers q->next_due to its deadline; an ack only flips the
 * slot's state (one CAS) and leaves its FIFO entry behind, stale. The
 * timer work (run_timers, under the timer lock, by whoever finds
 * next_due passed) drains the whole FIFO: stale entries are dropped,
 * expired leases handled, live ones filed in the wheel at their deadline
 * (their slot's node). A receive whose push finds the FIFO full drains it
 * itself (amortised O(1) per receive).
 *
 * Slot states (state = gen << 2 | st): FREE -> LEASED (the receiver that
 * popped the slot from free_slots; gen + 1) -> FREE (ack or nack: CAS
 * from LEASED; expiry: from BUSY). BUSY is held for a few instructions by
 * extend, by the expiry check and by browse; ack and nack spin past it.
 *
 * Every state transition goes through one function (tr_*), and each
 * logs itself, in that one place, through the queue's log (q->log,
 * src/queue_log.h: no-ops for a queue in memory; a durable queue's log is
 * src/queue_durable.c). What each logs:
 *   tr_accept      send accepted (ready or delayed)      ADD (one write
 *                  for a whole send_batch)
 *   tr_lease       ready -> in flight                    RETRY (the count,
 *                  before the hand-over; one write per receive_batch;
 *                  none with QUAY_QUEUE_NO_DELIVERY_LOG)
 *   tr_ack         in flight -> acked                    DEL (ack); a
 *                  refused ack leaves the message ready again
 *   tr_release     in flight -> ready (the delivery not counted)  RETRY
 *                  (the count one lower, as tr_lease)
 *   tr_fail        in flight -> (policy) retry / dead letter / drop
 *                  (from nack and from lease expiry)     (by the three below)
 *   tr_retry       -> ready or delayed again (attempts kept)  RETRY
 *   tr_due         delayed -> ready                      nothing
 *   tr_dead_letter -> DLQ                                DEL + ADD, one write
 *                  (or dropped for want of one)          DEL (dead, dropped)
 *   tr_drop        -> dropped (policy)                   DEL (drop)
 *   tr_ttl         found past its TTL -> tr_dead_letter
 *   tr_redrive     DLQ -> another queue                  DEL + ADD, one write
 *   quayi_queue_restore  recovery: -> ready or delayed   nothing (the log
 *                  calls it: the restore callback given at attach)
 * Public calls that may have logged end with quayi_qlog_idle (the log's
 * housekeeping: compaction), with no queue lock held.
 *
 * Labelled ordering edges:
 *   Q-L1 receive: release store of LEASED (gen) after writing msg and
 *      deadline -> pairs with Q-L2.
 *   Q-L2 ack/nack/extend/timer: acquire load or CAS of the state; then the
 *      slot's msg and deadline are the ones the receiver wrote.
 *   Q-L3 the slot index handed through free_slots (a quay ring: RING-R1/RING-A1).
 *   Q-N1 receive: release CAS lowering next_due after the FIFO push ->
 *      pairs with Q-N2.
 *   Q-N2 run_timers: acq_rel exchange of next_due before draining the FIFO:
 *      every push whose Q-N1 it reads is visible to the drain.
 *   Q-W2 whoever lowers next_due (schedule, extend, a lease that is now the
 *      earliest): wake_receivers after the store -> pairs with WAIT-S1 in
 *      receive_sleep (quayi_wait_sleep), whose ready() re-reads next_due
 *      and the pq's count: the sleeper sees the new value, or the waker
 *      sees its sleeper bit and wakes it. Pushes to the pq are WAIT-W1.
 *   Q-C1 quay_queue_close: seq_cst store of closed, then wake_receivers (as
 *      Q-W2) -> pairs with Q-C2 (and Q-C3).
 *   Q-C2 send and receive: load of closed; a sleeping receiver's ready()
 *      (recv_ready) reads it after WAIT-S1, so it sees the store or is woken.
 *   Q-C3 quay_queue_closed: acquire load of closed -> pairs with Q-C1.
 */
#include "clock.h"
#include "queue_internal.h"
#include "queue_x.h"
#include "quay_internal.h"
#include "queue_log.h"
#include "queue_dedup_log.h"
#include "queue_route.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>

#include <quay/msg.h>
#include <quay/pq.h>

#define FIFO_GEN_BITS 40u
#define FIFO_SLOT_BITS 24u
#define FIFO_GEN_MASK (((uint64_t)1 << FIFO_GEN_BITS) - 1)

static const char *const dlq_reason_text[] = { "", "max-attempts", "ttl-expired", "rejected" };

/* The last queue id handed out: a lease carries its queue's id, so that
 * a lease is never taken for another queue's (whose slot and generation
 * may well be the same). */
static uint64_t queue_ids;

/* ---- small helpers -------------------------------------------------- */

static inline int64_t
q_now(const quay_queue *q)
{
	/* The default clock (quay_queue_clock_tsc) without the indirect
	 * call. */
	if (QUAYI_LIKELY(q->clock == quay_queue_clock_tsc))
		return quayi_clock_fast_ns();
	return q->clock(q->clock_ctx);
}

static inline void
cnt(quay_queue *q, enum quayi_qcounter c, uint64_t n)
{
	quay_counter_add(q->ctr[c], n);
}

static uint64_t
splitmix64(uint64_t x)
{
	x += UINT64_C(0x9E3779B97F4A7C15);
	x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
	return x ^ (x >> 31);
}

/* The default retry delay after `attempt` deliveries. */
static int64_t
backoff(quay_queue *q, uint32_t attempt)
{
	double d;
	int64_t r;

	if (q->flags & QUAY_QUEUE_NO_BACKOFF)
		return 0;
	d = (double)q->bo_base;
	for (uint32_t i = 1; i < attempt && d < (double)q->bo_max; i++)
		d *= q->bo_factor;
	r = d >= (double)q->bo_max ? q->bo_max : (int64_t)d;
	if (!(q->flags & QUAY_QUEUE_NO_JITTER) && r > 0) {
		/* Full jitter: uniform in [0, r]. Relaxed: only a distinct
		 * draw number is needed. */
		uint64_t k = __atomic_fetch_add(&q->rng_ctr, 1, __ATOMIC_RELAXED);
		r = (int64_t)(splitmix64(q->jitter_seed ^ splitmix64(k)) % ((uint64_t)r + 1));
	}
	return r;
}

/* Lower next_due to t (Q-N1: release, pairs with Q-N2 in run_timers).
 * Returns true if it lowered it. */
static bool
lower_next_due(quay_queue *q, int64_t t)
{
	/* Relaxed load: the CAS validates. */
	int64_t cur = __atomic_load_n(&q->next_due, __ATOMIC_RELAXED);

	while (t < cur)
		if (__atomic_compare_exchange_n(&q->next_due, &cur, t, true, __ATOMIC_RELEASE,
		        __ATOMIC_RELAXED))
			return true;
	return false;
}

/* After lowering next_due: sleeping receivers recompute their deadline
 * (Q-W2: the compiler barrier + load of WAIT-W1 in quay/impl/wait_inline.h on
 * the pq's pop word; pairs with WAIT-S1 in receive_sleep, whose ready() reads
 * next_due). */
static void
wake_receivers(quay_queue *q)
{
	quayi_wait_wake_if_waiting(&q->ready->pop_event, &q->ready->flags, QUAYI_PQ_F_FENCE);
	/* Receivers waiting for a lease slot (slot_wait) sleep on the
	 * free_slots ring's pop word: the same protocol (pairs with WAIT-S1 in
	 * slot_wait's sleep, whose slot_ready reads next_due and closed). */
	quayi_wait_wake_if_waiting(&q->free_slots->pop_event, &q->free_slots->flags, QUAYI_RING_F_FENCE);
}

/* Q-C2: has quay_queue_close run? Relaxed: close publishes nothing but the
 * flag itself (the sleeper side is ordered by WAIT-S1, see wake_receivers). */
static inline bool
is_closed(const quay_queue *q)
{
	return __atomic_load_n(&q->closed, __ATOMIC_RELAXED) != 0;
}

/* A message leaves q (or a reservation is given back): held - 1. */
static void
held_sub(quay_queue *q)
{
	uint32_t slot = quayi_stats_slot();

	if (QUAYI_LIKELY(slot < QUAYI_HOUT_CELLS)) {
		uint64_t *p = &q->held_out[slot][0];

		/* Relaxed load: this thread is the cell's only writer (STATS-S1/S2
		 * hand it from one owner to the next). QUEUE-H1: release, pairs
		 * with QUEUE-H2 in held_reserve: a sender that reads this exit
		 * also sees the held_in increment of the message's own send
		 * (which happened before it left). */
		__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
	} else {
		/* QUEUE-H1 (as above) on the shared cell: atomic, many writers. */
		__atomic_fetch_add(&q->held_out[QUAYI_HOUT_CELLS][0], 1, __ATOMIC_RELEASE);
	}
}

/* Room for one more message: held + 1 if that is at most capacity.
 *
 * held_out is read before held_in is incremented, so every exit the read
 * counts belongs to a send already in our held_in value (QUEUE-H1/H2):
 * in - out never undercounts, and a reservation is granted only when the
 * true count stays <= capacity (node_get and the ready queue are sized by
 * it). Reading held_out after the increment could count the exit of a
 * message sent after it and admit one too many. The fast path reads the
 * senders' copy of held_out, which can only be behind (it only grows):
 * only a send that the copy finds full reads held_out, the consumers'
 * line, and refreshes the copy (a racing store of an older value only
 * makes the copy more behind, which stays safe). */
static bool
held_reserve(quay_queue *q)
{
	/* QUEUE-H2: acquire, pairs with the release store below (another
	 * sender's refresh, itself after an acquire of held_out). */
	uint64_t out = __atomic_load_n(&q->held_out_seen, __ATOMIC_ACQUIRE);
	/* Relaxed: a count; ordered after the load above by its acquire. */
	uint64_t in = __atomic_add_fetch(&q->held_in, 1, __ATOMIC_RELAXED);

	if (QUAYI_LIKELY(in - out <= q->capacity))
		return true;
	/* Give the reservation back, read the exits, try again. Relaxed:
	 * counts, on the senders' line. */
	__atomic_fetch_sub(&q->held_in, 1, __ATOMIC_RELAXED);
	/* QUEUE-H2: acquire loads of the cells, pairs with QUEUE-H1 in
	 * held_sub. */
	out = quayi_queue_held_out(q, __ATOMIC_ACQUIRE);
	/* QUEUE-H2's other half: release, so a sender that loads this copy
	 * with acquire sees what this thread saw through held_out. */
	__atomic_store_n(&q->held_out_seen, out, __ATOMIC_RELEASE);
	in = __atomic_add_fetch(&q->held_in, 1, __ATOMIC_RELAXED); /* as above */
	if (in - out <= q->capacity)
		return true;
	__atomic_fetch_sub(&q->held_in, 1, __ATOMIC_RELAXED); /* as above */
	return false;
}

/* ---- timer side (q->tlock held) ---------------------------------- */

static void run_timers_locked(quay_queue *q, int64_t now);
static void tr_fail(quay_queue *q, quay_msg *msg, int64_t now, const char *reason, bool locked);
static void tr_dead_letter(quay_queue *q, quay_msg *msg, quay_queue_dlq_reason why, int64_t now, bool locked);

static uint32_t
node_get(quay_queue *q)
{
	/* held <= capacity and every held message needs at most one node,
	 * so the stack never runs dry. */
	return q->node_free[--q->node_free_n];
}

static void
node_put(quay_queue *q, uint32_t idx)
{
	q->wheel.nodes[idx].kind = QUAYI_T_FREE;
	q->wheel.nodes[idx].msg = NULL;
	q->node_free[q->node_free_n++] = idx;
}

static void
delayed_add(quay_queue *q, int64_t d)
{
	/* Written under tlock only; relaxed atomic for readers (stats). */
	__atomic_store_n(&q->delayed, __atomic_load_n(&q->delayed, __ATOMIC_RELAXED) + (uint64_t)d,
	    __ATOMIC_RELAXED);
}

/* File msg in the wheel as delayed until due (kind QUAYI_T_MSG or _DLQ). */
static void
schedule_locked(quay_queue *q, quay_msg *msg, int64_t due, uint8_t kind, uint8_t reason)
{
	uint32_t idx = node_get(q);

	q->wheel.nodes[idx].kind = kind;
	q->wheel.nodes[idx].reason = reason;
	q->wheel.nodes[idx].prio = (uint8_t)quay_msg_priority(msg);
	q->wheel.nodes[idx].msg = msg;
	quayi_wheel_add(&q->wheel, idx, due);
	delayed_add(q, 1);
}

static void
schedule(quay_queue *q, quay_msg *msg, int64_t due, uint8_t kind, uint8_t reason, bool locked)
{
	if (!locked)
		pthread_mutex_lock(&q->tlock);
	schedule_locked(q, msg, due, kind, reason);
	if (!locked)
		pthread_mutex_unlock(&q->tlock);
	lower_next_due(q, due);
	wake_receivers(q);
}

/* Waiting for a preempted consumer to release a ring slot. */
static void
backoff_spin(unsigned *spins)
{
	if (++*spins < 64)
		quayi_cpu_relax();
	else
		sched_yield();
}

/* Push a slot index into free_slots (which has room for all of them; see
 * make_ready for why a push may have to wait). Q-L3: the ring's RING-R1/RING-A1. */
static void
slot_free(quay_queue *q, uint64_t slot)
{
	unsigned spins = 0;

	while (QUAYI_UNLIKELY(quay_ring_push(q->free_slots, &slot) != 0))
		backoff_spin(&spins);
}

/* Push msg into level prio of the ready pq. Cannot fail for good: each
 * level holds capacity. */
static void
push_ready(quay_queue *q, quay_msg *msg, unsigned prio)
{
	unsigned spins = 0;

	if (prio >= q->levels)
		prio = q->levels - 1;
	/* held <= capacity <= the level's capacity, so the level has room;
	 * a push can still see a slot whose previous consumer was preempted
	 * between claiming and releasing it (the ring's RING-R2): wait for it. */
	while (QUAYI_UNLIKELY(quay_pq_push(q->ready, prio, &msg) != 0))
		backoff_spin(&spins);
}

static void
make_ready(quay_queue *q, quay_msg *msg)
{
	push_ready(q, msg, quay_msg_priority(msg));
}

/* delayed -> ready. */
static void
tr_due(quay_queue *q, quay_msg *msg, unsigned prio)
{
	push_ready(q, msg, prio);
}

/*
 * The expiry check of lease slot i at generation gen (timer lock held).
 * Expired: the slot is freed and the message goes to the failure policy.
 * Extended: the slot's node is filed at the new deadline.
 */
static void
check_lease(quay_queue *q, uint32_t i, uint64_t gen, bool gen_is_low, int64_t now)
{
	struct quayi_lslot *s = &q->slots[i];
	uint64_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */

	for (;;) {
		uint64_t sgen = st >> 2;

		if (gen_is_low ? (sgen & FIFO_GEN_MASK) != gen : sgen != gen)
			return; /* stale: acked or reused */
		if ((st & 3u) == QUAYI_L_FREE)
			return; /* ended */
		if ((st & 3u) == QUAYI_L_BUSY) {
			quayi_cpu_relax();
			st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */
			continue;
		}
		/* Q-L2: acquire CAS LEASED -> BUSY. */
		if (__atomic_compare_exchange_n(&s->state, &st, (st & ~(uint64_t)3) | QUAYI_L_BUSY, false,
		        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
			break;
	}
	{
		/* Relaxed: written under BUSY (extend) or before Q-L1. */
		int64_t d = __atomic_load_n(&s->deadline, __ATOMIC_RELAXED);
		uint64_t g = st >> 2;

		if (d > now) {
			struct quayi_tnode *n = &q->wheel.nodes[i];

			quayi_wheel_del(&q->wheel, i);
			n->kind = QUAYI_T_LEASE;
			n->gen = g;
			quayi_wheel_add(&q->wheel, i, d);
			/* Release: back to LEASED, same gen (pairs with Q-L2). */
			__atomic_store_n(&s->state, (g << 2) | QUAYI_L_LEASED, __ATOMIC_RELEASE);
			return;
		}
		{
			quay_msg *msg = s->msg;
			uint64_t slot = i;

			/* Release: FREE at the same gen, so the lease's holder gets
			 * -ESTALE (pairs with Q-L2 in ack). */
			__atomic_store_n(&s->state, (g << 2) | QUAYI_L_FREE, __ATOMIC_RELEASE);
			quayi_wheel_del(&q->wheel, i);
			cnt(q, QC_LEASE_EXPIRED, 1);
			tr_fail(q, msg, now, "lease expired", true);
			slot_free(q, slot);
		}
	}
}

static void
drain_expiry_locked(quay_queue *q, int64_t now)
{
	uint64_t buf[64];
	size_t k;

	while ((k = quay_ring_pop_burst(q->expiry, buf, 64)) != 0)
		for (size_t j = 0; j < k; j++)
			check_lease(q, (uint32_t)(buf[j] & ((1u << FIFO_SLOT_BITS) - 1)),
			    buf[j] >> FIFO_SLOT_BITS, true, now);
}

static void
run_timers_locked(quay_queue *q, int64_t now)
{
	size_t n;

	/* Q-N2: acq_rel exchange: every FIFO push whose Q-N1 this reads is
	 * visible to the drain below; later pushes lower next_due again. */
	(void)__atomic_exchange_n(&q->next_due, INT64_MAX, __ATOMIC_ACQ_REL);
	drain_expiry_locked(q, now);
	n = quayi_wheel_advance(&q->wheel, now);
	for (size_t j = 0; j < n; j++) {
		uint32_t idx = q->wheel.fired[j].idx;
		struct quayi_tnode *nd = &q->wheel.nodes[idx];

		if (nd->kind == QUAYI_T_LEASE) {
			check_lease(q, idx, nd->gen, false, now);
		} else if (nd->kind == QUAYI_T_MSG) {
			quay_msg *msg = nd->msg;
			unsigned prio = nd->prio;

			node_put(q, idx);
			delayed_add(q, -1);
			tr_due(q, msg, prio);
		} else if (nd->kind == QUAYI_T_DLQ) {
			quay_msg *msg = nd->msg;
			quay_queue_dlq_reason why = (quay_queue_dlq_reason)nd->reason;

			node_put(q, idx);
			delayed_add(q, -1);
			tr_dead_letter(q, msg, why, now, true);
		}
	}
	lower_next_due(q, quayi_wheel_next_due(&q->wheel));
	/* A push that raced with the drain is still in the FIFO: look again
	 * soon rather than at its deadline only. */
	if (quay_ring_count(q->expiry) != 0)
		lower_next_due(q, quayi_ns_add_sat(now, q->wheel.tick_ns));
}

/* Run the timer work if something may be due and nobody else is at it.
 * Returns true if it ran it (which may have taken long: the caller's
 * clock reading is then old). */
static inline bool
maybe_run_timers(quay_queue *q, int64_t now)
{
	/* Relaxed: a hint; run_timers re-reads it with Q-N2. */
	if (QUAYI_LIKELY(now < __atomic_load_n(&q->next_due, __ATOMIC_RELAXED)))
		return false;
	if (pthread_mutex_trylock(&q->tlock) != 0)
		return false;
	run_timers_locked(q, now);
	pthread_mutex_unlock(&q->tlock);
	return true;
}

/* ---- transitions ------------------------------------------------------ */

/* Put msg into q as ready or delayed (the caller reserved held). */
static void
place_now(quay_queue *q, quay_msg *msg, int64_t now, bool locked)
{
	int64_t nb = quay_msg_not_before_ns(msg);

	if (nb > now)
		schedule(q, msg, nb, QUAYI_T_MSG, 0, locked);
	else
		make_ready(q, msg);
}

/* A message enters q: placed, or (FIFO) parked behind its group's head
 * (src/queue_fifo.c). */
static void
place(quay_queue *q, quay_msg *msg, int64_t now, bool locked)
{
	if (QUAYI_UNLIKELY(q->x->fifo != NULL) && quayi_fifo_admit(q, msg))
		return;
	place_now(q, msg, now, locked);
}

/* msg (its group's head) leaves q for good: a FIFO queue places the
 * group's next message. Before msg is handed anywhere else. */
static inline void
group_next(quay_queue *q, const quay_msg *msg, int64_t now, bool locked)
{
	quay_msg *next;

	if (QUAYI_LIKELY(q->x->fifo == NULL))
		return;
	if ((next = quayi_fifo_done(q, msg)) != NULL)
		place_now(q, next, now, locked);
}

/* failed delivery -> ready or delayed again. */
static void
tr_retry(quay_queue *q, quay_msg *msg, int64_t delay, int64_t now, bool locked)
{
	cnt(q, QC_RETRIED, 1);
	quayi_qlog_retry(&q->log, msg, delay > 0 ? quayi_ns_add_sat(now, delay) : 0);
	if (delay > 0)
		schedule(q, msg, quayi_ns_add_sat(now, delay), QUAYI_T_MSG, 0, locked);
	else
		make_ready(q, msg);
}

/* -> dropped by policy. */
static void
tr_drop(quay_queue *q, quay_msg *msg, int64_t now, bool locked)
{
	cnt(q, QC_DROPPED, 1);
	group_next(q, msg, now, locked);
	/* A refused DEL leaves the message live in the log: after a restart
	 * it comes back (at least once), never lost. */
	(void)quayi_qlog_del(&q->log, msg, QUAYI_QLOG_DROP);
	held_sub(q);
	quay_msg_unref(msg);
}

/* Stamp a message entering another queue (dead letters and redrive):
 * its enqueue time and that queue's default TTL. */
static void
stamp_other(quay_queue *to, quay_msg *msg, int64_t now)
{
	quay_msg_set_enqueued_ns(msg, now);
	if (quay_msg_expires_ns(msg) == 0 && to->ttl_ns > 0)
		quay_msg_set_expires_ns(msg, quayi_ns_add_sat(now, to->ttl_ns));
}

/* Put msg into another queue whose held the caller reserved; no dedup,
 * no timer work. */
static void
put_other(quay_queue *to, quay_msg *msg, int64_t now)
{
	cnt(to, QC_SENT, 1);
	place(to, msg, now, false);
}

/* A header's value saved (dead-lettering and redrive put it back if the
 * log refuses the move). */
struct saved_hdr {
	char val[QUAY_QUEUE_NAME_MAX + 1];
	size_t len;
	bool had;
	bool big; /* present but too long to save: leave it */
};

static void
hdr_save(quay_msg *msg, const char *key, struct saved_hdr *h)
{
	const void *v;

	h->had = quay_msg_get_header(msg, key, &v, &h->len) == 0;
	h->big = h->had && h->len > sizeof(h->val);
	if (h->big)
		h->had = false;
	else if (h->had)
		memcpy(h->val, v, h->len);
}

static void
hdr_take(quay_msg *msg, const char *key, struct saved_hdr *h)
{
	hdr_save(msg, key, h);
	if (!h->big)
		(void)quay_msg_del_header(msg, key);
}

/* Put a header back as hdr_save found it. */
static void
hdr_restore(quay_msg *msg, const char *key, const struct saved_hdr *h)
{
	if (h->big)
		return;
	if (h->had)
		(void)quay_msg_set_header(msg, key, h->val, h->len);
	else
		(void)quay_msg_del_header(msg, key);
}

/* -> the DLQ (or dropped, counted, for want of one). */
static void
tr_dead_letter(quay_queue *q, quay_msg *msg, quay_queue_dlq_reason why, int64_t now, bool locked)
{
	quay_queue *dlq = q->dlq;
	struct saved_hdr hr = { .had = false }, hs = { .had = false }, ha = { .had = false };
	int64_t nb, ex, enq;
	uint32_t att;
	bool hdrs = false;
	int rc;

	if (dlq == NULL) {
		group_next(q, msg, now, locked);
		if (q->on_dead_letter != NULL)
			q->on_dead_letter(q->hook_ctx, msg, why);
		(void)quayi_qlog_del(&q->log, msg, QUAYI_QLOG_DEAD_DROP); /* refused: see tr_drop */
		cnt(q, QC_DEAD_LETTERED, 1);
		held_sub(q);
		quay_msg_unref(msg);
		return;
	}
	if (!held_reserve(dlq))
		goto later;
	/* The reason goes on the message as headers, which needs the only
	 * reference: a shared message is copied (the copy carries them). */
	if (quay_msg_refcount(msg) != 1) {
		quay_msg *copy = NULL;

		if (quay_msg_clone(quay_msg_pool(msg), msg, &copy) == 0) {
			quayi_qlog_rebind(&q->log, msg, copy);
			quay_msg_unref(msg);
			msg = copy;
		}
	}
	/* The changes and the move's log write are one step that the log's
	 * own readers (a compaction reads the message) never see half done. */
	quayi_qlog_begin(&q->log);
	nb = quay_msg_not_before_ns(msg);
	ex = quay_msg_expires_ns(msg);
	enq = quay_msg_enqueued_ns(msg);
	att = quay_msg_attempts(msg);
	if (quay_msg_refcount(msg) == 1) {
		const char *r = dlq_reason_text[why];
		char a[16];
		int al = snprintf(a, sizeof(a), "%u", (unsigned)att);

		hdr_save(msg, QUAY_MSG_H_DLQ_REASON, &hr);
		hdr_save(msg, QUAY_MSG_H_DLQ_SOURCE, &hs);
		hdr_save(msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, &ha);
		hdrs = true;
		/* Best effort: a message too full for the headers still goes. */
		if (!hr.big)
			(void)quay_msg_set_header(msg, QUAY_MSG_H_DLQ_REASON, r, strlen(r));
		if (!hs.big)
			(void)quay_msg_set_header(msg, QUAY_MSG_H_DLQ_SOURCE, q->name, strlen(q->name));
		if (!ha.big)
			(void)quay_msg_set_header(msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, a, (size_t)al);
	}
	/* The DLQ delivers from attempt 1 (its own max_attempts); the count
	 * of this queue is in the header above, for inspection. */
	quay_msg_set_attempts(msg, 0);
	/* Dead letters are not delayed and do not expire with their TTL in
	 * the source queue (the DLQ's own TTL applies). */
	quay_msg_set_not_before_ns(msg, 0);
	quay_msg_set_expires_ns(msg, 0);
	stamp_other(dlq, msg, now);
	rc = quayi_qlog_move(&q->log, &dlq->log, msg, QUAYI_QLOG_DEAD);
	if (rc == -EMSGSIZE && hdrs) {
		/* The headers made the image too big for the log: they are
		 * best effort, the move is not. */
		hdr_restore(msg, QUAY_MSG_H_DLQ_REASON, &hr);
		hdr_restore(msg, QUAY_MSG_H_DLQ_SOURCE, &hs);
		hdr_restore(msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, &ha);
		hdrs = false;
		rc = quayi_qlog_move(&q->log, &dlq->log, msg, QUAYI_QLOG_DEAD);
	}
	if (rc != 0) {
		/* The log still has it here, as it was: so does memory (never
		 * in two places, never an image the log does not have); it
		 * tries again later. */
		quay_msg_set_not_before_ns(msg, nb);
		quay_msg_set_expires_ns(msg, ex);
		quay_msg_set_enqueued_ns(msg, enq);
		quay_msg_set_attempts(msg, att);
		if (hdrs) {
			hdr_restore(msg, QUAY_MSG_H_DLQ_REASON, &hr);
			hdr_restore(msg, QUAY_MSG_H_DLQ_SOURCE, &hs);
			hdr_restore(msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, &ha);
		}
		quayi_qlog_end(&q->log);
		held_sub(dlq);
		goto later;
	}
	quayi_qlog_end(&q->log);
	group_next(q, msg, now, locked);
	if (q->on_dead_letter != NULL)
		q->on_dead_letter(q->hook_ctx, msg, why);
	put_other(dlq, msg, now);
	cnt(q, QC_DEAD_LETTERED, 1);
	held_sub(q);
	return;
later:
	/* The DLQ is full: the message stays here (delayed) and tries again
	 * a backoff base later. */
	schedule(q, msg, quayi_ns_add_sat(now, q->bo_base > q->wheel.tick_ns ? q->bo_base : q->wheel.tick_ns),
	    QUAYI_T_DLQ, (uint8_t)why, locked);
}

/* ready message found past its TTL. */
static void
tr_ttl(quay_queue *q, quay_msg *msg, int64_t now, bool locked)
{
	cnt(q, QC_TTL_EXPIRED, 1);
	tr_dead_letter(q, msg, QUAY_QUEUE_DLQ_TTL, now, locked);
}

static inline bool
ttl_passed(const quay_msg *msg, int64_t now)
{
	int64_t e = quay_msg_expires_ns(msg);

	return e != 0 && e <= now;
}

/* in flight -> decided by the failure policy. */
static void
tr_fail(quay_queue *q, quay_msg *msg, int64_t now, const char *reason, bool locked)
{
	uint32_t attempt = quay_msg_attempts(msg);
	int64_t delay;
	quay_queue_verdict v;

	if (attempt >= q->max_attempts) {
		tr_dead_letter(q, msg, QUAY_QUEUE_DLQ_MAX_ATTEMPTS, now, locked);
		return;
	}
	delay = backoff(q, attempt);
	v = QUAY_QUEUE_RETRY;
	if (q->on_failure != NULL) {
		v = q->on_failure(q->hook_ctx, msg, attempt, reason, &delay);
		if (delay < 0)
			delay = 0;
	}
	switch (v) {
	case QUAY_QUEUE_DEAD_LETTER: tr_dead_letter(q, msg, QUAY_QUEUE_DLQ_REJECTED, now, locked); break;
	case QUAY_QUEUE_DROP: tr_drop(q, msg, now, locked); break;
	default:
		if (ttl_passed(msg, quayi_ns_add_sat(now, delay)))
			tr_ttl(q, msg, now, locked);
		else
			tr_retry(q, msg, delay, now, locked);
		break;
	}
}

/*
 * ready -> in flight: msg popped, slot owned (FREE). Fills *lease. now
 * must have been read after any slow work of this receive (the lease
 * rule: deadline >= handout + visibility). If the expiry FIFO is full,
 * the drain here is slow work of its own: the deadline is then computed
 * again after it and *slow set.
 */
static void
tr_lease(quay_queue *q, quay_msg *msg, uint32_t i, int64_t now, quay_lease *lease, bool *slow, bool batch)
{
	struct quayi_lslot *s = &q->slots[i];
	/* Relaxed: the slot is ours (Q-L3). */
	uint64_t gen = (__atomic_load_n(&s->state, __ATOMIC_RELAXED) >> 2) + 1;
	uint32_t attempt = quay_msg_attempts(msg) + 1;
	int64_t deadline;
	uint64_t entry = (gen & FIFO_GEN_MASK) << FIFO_SLOT_BITS | i;

	int64_t enq = quay_msg_enqueued_ns(msg);

	/* Everything that touches msg comes before Q-L1: once the slot says
	 * LEASED the lease may expire (a receiver preempted past its
	 * deadline), the message be redelivered, acked elsewhere and freed. */
	quay_msg_set_attempts(msg, attempt);
	/* The delivery count reaches the log before the lease exists (a
	 * batch logs all of its leases at once, before the hand-over:
	 * quay_queue_receive_batch). */
	lease->msg = msg;
	lease->attempt = attempt;
	if (!batch && quayi_qlog_deliver(&q->log, lease, 1)) {
		now = q_now(q); /* slow work: the lease starts after it */
		*slow = true;
	}
	deadline = quayi_ns_add_sat(now, q->visibility_ns);
	quay_msg_ref(msg); /* the caller's */
	cnt(q, QC_RECEIVED, 1);
	if (attempt == 1 && now >= enq)
		quay_hist_record(q->h_first, (uint64_t)(now - enq));
	/* Relaxed: an estimate for stats. */
	__atomic_store_n(&q->last_recv_enq, enq, __ATOMIC_RELAXED);
	/* Relaxed: published by Q-L1; atomic because end_lease, holding a
	 * lease that ended meanwhile, may read it while this slot is being
	 * reused (it then sees the state moved on and discards it). */
	__atomic_store_n(&s->msg, msg, __ATOMIC_RELAXED);
	/* Relaxed: read by stats only, as an estimate. */
	__atomic_store_n(&s->enq, enq, __ATOMIC_RELAXED);
	/* Relaxed: published by Q-L1. */
	__atomic_store_n(&s->deadline, deadline, __ATOMIC_RELAXED);
	/* Q-L1: release; pairs with Q-L2. */
	__atomic_store_n(&s->state, (gen << 2) | QUAYI_L_LEASED, __ATOMIC_RELEASE);
	if (QUAYI_UNLIKELY(quay_ring_push(q->expiry, &entry) != 0)) {
		/* Full of stale entries: drain it (amortised over the
		 * capacity's worth of receives that filled it). */
		unsigned spins = 0;

		/* Other receivers go on pushing meanwhile and may fill it again
		 * before our push: drain until it goes in. */
		pthread_mutex_lock(&q->tlock);
		for (;;) {
			drain_expiry_locked(q, now);
			if (quay_ring_push(q->expiry, &entry) == 0)
				break;
			backoff_spin(&spins);
		}
		/* The drain may have handled expired leases (durable: logged
		 * them): the lease starts now. Nothing else reads this
		 * deadline yet but the timer, which needs the lock we hold
		 * (its entry is in the FIFO, drained under the lock), and
		 * stale holders of older generations, which discard it.
		 * Relaxed: published to the timer by the unlock. */
		now = q_now(q);
		if (quayi_ns_add_sat(now, q->visibility_ns) > deadline) {
			deadline = quayi_ns_add_sat(now, q->visibility_ns);
			__atomic_store_n(&s->deadline, deadline, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&q->tlock);
		*slow = true;
	}
	/* Q-N1. A receiver asleep on an empty queue with no timer due must
	 * wake at this lease's expiry (its message comes back then). */
	if (lower_next_due(q, deadline))
		wake_receivers(q);
	lease->msg = msg;
	lease->deadline_ns = deadline;
	lease->gen = gen;
	lease->queue = q->id;
	lease->slot = i;
	lease->attempt = attempt;
}

/* in flight -> acked (the slot is already FREE and ours). The log first:
 * an ack it does not record, memory does not either (the lease has
 * ended: the message is ready again, attempts kept); its error. */
static int
tr_ack(quay_queue *q, quay_msg *msg, int64_t now)
{
	int64_t enq = quay_msg_enqueued_ns(msg);
	int rc = quayi_qlog_del(&q->log, msg, QUAYI_QLOG_ACK);

	if (QUAYI_UNLIKELY(rc != 0)) {
		make_ready(q, msg);
		return rc;
	}
	cnt(q, QC_ACKED, 1);
	if (now >= enq)
		quay_hist_record(q->h_ack, (uint64_t)(now - enq));
	group_next(q, msg, now, false);
	held_sub(q);
	quay_msg_unref(msg);
	return 0;
}

/* in flight -> ready, handed back by the holder (the slot is already FREE
 * and ours): the delivery does not count, so attempts goes back to what
 * it was before the lease, in the log too (the delivery log counted it). */
static void
tr_release(quay_queue *q, quay_msg *msg)
{
	uint32_t a = quay_msg_attempts(msg);
	quay_lease l = { .msg = msg };

	if (a > 0)
		quay_msg_set_attempts(msg, a - 1);
	l.attempt = quay_msg_attempts(msg);
	(void)quayi_qlog_deliver(&q->log, &l, 1);
	make_ready(q, msg);
}

/* DLQ -> to; the caller reserved room in to (and gives it back if this
 * fails). */
static int
tr_redrive(quay_queue *dlq, quay_queue *to, quay_msg *msg, int64_t now)
{
	struct saved_hdr hr = { .had = false }, hs = { .had = false }, ha = { .had = false };
	uint32_t att = quay_msg_attempts(msg);
	int64_t nb = quay_msg_not_before_ns(msg), ex = quay_msg_expires_ns(msg);
	int64_t enq = quay_msg_enqueued_ns(msg);
	int rc;

	quayi_qlog_begin(&dlq->log); /* as in tr_dead_letter */
	quay_msg_set_attempts(msg, 0);
	quay_msg_set_not_before_ns(msg, 0);
	quay_msg_set_expires_ns(msg, 0);
	if (quay_msg_refcount(msg) == 1) {
		hdr_take(msg, QUAY_MSG_H_DLQ_REASON, &hr);
		hdr_take(msg, QUAY_MSG_H_DLQ_SOURCE, &hs);
		hdr_take(msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, &ha);
	}
	stamp_other(to, msg, now);
	if ((rc = quayi_qlog_move(&dlq->log, &to->log, msg, QUAYI_QLOG_REDRIVE)) != 0) {
		/* Not moved: the message stays in the DLQ as it was. */
		quay_msg_set_attempts(msg, att);
		quay_msg_set_not_before_ns(msg, nb);
		quay_msg_set_expires_ns(msg, ex);
		quay_msg_set_enqueued_ns(msg, enq);
		if (hr.had)
			hdr_restore(msg, QUAY_MSG_H_DLQ_REASON, &hr);
		if (hs.had)
			hdr_restore(msg, QUAY_MSG_H_DLQ_SOURCE, &hs);
		if (ha.had)
			hdr_restore(msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, &ha);
		quayi_qlog_end(&dlq->log);
		return rc;
	}
	quayi_qlog_end(&dlq->log);
	group_next(dlq, msg, now, false);
	put_other(to, msg, now);
	cnt(dlq, QC_REDRIVEN, 1);
	held_sub(dlq);
	return 0;
}

int
quayi_queue_restore(quay_queue *q, quay_msg *msg, uint32_t attempts, int64_t not_before_ns)
{
	int64_t now;

	/* A priority above the queue's levels is not an error: a message
	 * dead-lettered or redriven from a queue with more levels keeps its
	 * priority and is served at the last level (as push_ready does in
	 * memory); recovery must never fail for it. */
	if (q == NULL || msg == NULL || not_before_ns < 0)
		return -EINVAL;
	if (!held_reserve(q))
		return -EAGAIN;
	now = q_now(q);
	quay_msg_set_attempts(msg, attempts);
	quay_msg_set_not_before_ns(msg, not_before_ns);
	cnt(q, QC_RESTORED, 1);
	place(q, msg, now, false);
	return 0;
}

/* The restore callback a log gets at attach. */
static int
restore_cb(void *queue, quay_msg *msg, uint32_t attempts, int64_t not_before_ns)
{
	return quayi_queue_restore(queue, msg, attempts, not_before_ns);
}

const struct quayi_qlog *
quayi_queue_log(const quay_queue *q)
{
	return &q->log;
}

/* ---- create / destroy ------------------------------------------------ */

static size_t
pow2_at_least(size_t n)
{
	size_t p = 1;

	while (p < n)
		p <<= 1;
	return p;
}

static bool
name_ok(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		char c = s[n];

		if (n >= QUAY_QUEUE_NAME_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		        c == '_' || c == '.' || c == ':' || c == '-'))
			return false;
	}
	return n != 0;
}

static int
validate(const struct quay_queue_opts *o)
{
	if ((o->flags & ~QUAY_QUEUE_FLAGS_ALL) != 0)
		return -EINVAL;
	if (o->wal == NULL && (o->pool != NULL || o->compact_bytes != 0))
		return -EINVAL;
	if (o->name != NULL && !name_ok(o->name))
		return -EINVAL;
	if (o->capacity > QUAY_QUEUE_CAPACITY_MAX || o->levels > QUAY_PQ_LEVELS_MAX)
		return -EINVAL;
	if (o->max_in_flight > (o->capacity ? o->capacity : QUAY_QUEUE_CAPACITY_DEFAULT))
		return -EINVAL;
	if (o->max_attempts > QUAY_QUEUE_ATTEMPTS_MAX)
		return -EINVAL;
	if (o->visibility_ns < 0 || o->delay_ns < 0 || o->ttl_ns < 0 || o->backoff_base_ns < 0 ||
	    o->backoff_max_ns < 0 || o->dedup_window_ns < 0 || o->tick_ns < 0)
		return -EINVAL;
	if (o->backoff_factor != 0.0 && !(o->backoff_factor >= 1.0 && o->backoff_factor <= 1000.0))
		return -EINVAL;
	if (o->tick_ns != 0 && (o->tick_ns < 1000 || o->tick_ns > 1000000000))
		return -EINVAL;
	if (o->dedup_capacity > QUAY_QUEUE_CAPACITY_MAX)
		return -EINVAL;
	return 0;
}

/* The gauges are measured, not kept: a snapshot of the registry runs
 * this first (quay_gauge_set_collect) so they are true when exported. */
static void
collect_gauges(void *arg)
{
	struct quay_queue_stats st;

	quay_queue_stats(arg, &st);
}

static int
make_metrics(quay_queue *q, quay_stats *reg)
{
	static const char *const cname[QC_COUNT][2] = {
		{ "quay_queue_sent_total", "Messages accepted (sends, dead letters in, redriven in)" },
		{ "quay_queue_received_total", "Leases issued" },
		{ "quay_queue_acked_total", "Messages acknowledged" },
		{ "quay_queue_nacked_total", "Negative acknowledgements" },
		{ "quay_queue_retried_total", "Failures scheduled for redelivery" },
		{ "quay_queue_lease_expired_total", "Leases that expired" },
		{ "quay_queue_ttl_expired_total", "Messages found past their TTL" },
		{ "quay_queue_dead_lettered_total", "Messages dead-lettered (or dropped for want of a DLQ)" },
		{ "quay_queue_redriven_total", "Messages moved out by redrive" },
		{ "quay_queue_dropped_total", "Messages dropped by the failure policy" },
		{ "quay_queue_deduplicated_total", "Sends refused as duplicates" },
		{ "quay_queue_restored_total", "Messages put back by recovery" },
	};
	static const char *const gname[QG_COUNT][2] = {
		{ "quay_queue_ready", "Messages ready to be received" },
		{ "quay_queue_delayed", "Messages waiting for their delay or retry backoff" },
		{ "quay_queue_in_flight", "Leases out" },
		{ "quay_queue_oldest_age_seconds", "Age of the oldest message held (estimate)" },
	};
	struct quay_stats_label lab = { "queue", q->name };
	int rc;

	for (int i = 0; i < QC_COUNT; i++)
		if ((rc = quay_counter_create(reg, cname[i][0], cname[i][1], &lab, 1, &q->ctr[i])) != 0)
			return rc;
	for (int i = 0; i < QG_COUNT; i++)
		if ((rc = (i == QG_OLDEST ? quay_gauge_create_seconds : quay_gauge_create)(reg, gname[i][0],
		         gname[i][1], &lab, 1, &q->gauge[i])) != 0)
			return rc;
	if ((rc = quay_hist_create(reg, "quay_queue_first_receive_latency_seconds",
	         "Time from send to first receive", &lab, 1, &q->h_first)) != 0 ||
	    (rc = quay_hist_create(reg, "quay_queue_ack_latency_seconds", "Time from send to ack", &lab, 1,
	         &q->h_ack)) != 0)
		return rc;
	/* Last: the callback may run as soon as it is set. */
	return quay_gauge_set_collect(q->gauge[QG_READY], collect_gauges, q);
}

static void
free_metrics(quay_queue *q)
{
	for (int i = 0; i < QC_COUNT; i++)
		quay_counter_destroy(q->ctr[i]);
	for (int i = 0; i < QG_COUNT; i++)
		quay_gauge_destroy(q->gauge[i]);
	quay_hist_destroy(q->h_first);
	quay_hist_destroy(q->h_ack);
	quay_stats_destroy(q->stats_owned);
}

static void
drop_all(quay_queue *q)
{
	quay_msg *m;

	if (q->ready != NULL)
		while (quay_pq_pop(q->ready, &m, NULL) == 0)
			quay_msg_unref(m);
	if (q->slots != NULL)
		for (size_t i = 0; i < q->max_in_flight; i++)
			if ((q->slots[i].state & 3u) != QUAYI_L_FREE)
				quay_msg_unref(q->slots[i].msg);
	if (q->wheel.nodes != NULL)
		for (uint32_t i = (uint32_t)q->max_in_flight; i < q->wheel.nnodes; i++)
			if (quayi_wheel_linked(&q->wheel, i) && q->wheel.nodes[i].msg != NULL)
				quay_msg_unref(q->wheel.nodes[i].msg);
}

static void
queue_free(quay_queue *q)
{
	/* First the ready gauge, which carries the collector: once it is
	 * gone no snapshot of a shared registry measures this queue. */
	quay_gauge_destroy(q->gauge[QG_READY]);
	q->gauge[QG_READY] = NULL;
	quayi_qlog_detach(&q->log);
	quayi_x_destroy(q);
	drop_all(q);
	quay_pq_destroy(q->ready);
	quay_ring_destroy(q->free_slots);
	quay_ring_destroy(q->expiry);
	quayi_free_aligned(q->alloc, q->slots, QUAY_CACHELINE, q->max_in_flight * sizeof(*q->slots));
	quayi_wheel_fini(&q->wheel);
	quayi_free(q->alloc, q->node_free, q->capacity * sizeof(*q->node_free));
	quayi_dedup_fini(&q->dedup);
	quayi_free(q->alloc, q->browse_buf, q->capacity * sizeof(*q->browse_buf));
	quayi_free(q->alloc, q->browse_prio, q->capacity * sizeof(*q->browse_prio));
	free_metrics(q);
	pthread_mutex_destroy(&q->tlock);
	pthread_mutex_destroy(&q->block);
	quayi_free_aligned(q->alloc, q, QUAY_CACHELINE, sizeof(*q));
}

int
quay_queue_create(const struct quay_queue_opts *user_opts, quay_queue **out)
{
	struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;
	struct quay_ring_opts ro = QUAY_RING_OPTS_INIT;
	struct quay_queue_opts full;
	const struct quay_queue_opts *opts = &full;
	quay_queue *q;
	size_t cap, inflight, fifo;
	int rc;

	if (user_opts == NULL || out == NULL)
		return -EINVAL;
	/* The current struct, or an older one that ends at `stats` (no
	 * durability fields), at `compact_bytes` (no issue-13 fields), at
	 * `alarm_ctx` (no allocator) or at `allocator` (no alarm period): the
	 * rest reads as zero. */
	if (user_opts->size != sizeof(full) && user_opts->size != offsetof(struct quay_queue_opts, wal) &&
	    user_opts->size != offsetof(struct quay_queue_opts, rate_per_sec) &&
	    user_opts->size != offsetof(struct quay_queue_opts, allocator) &&
	    user_opts->size != offsetof(struct quay_queue_opts, alarm_period_ns))
		return -EINVAL;
	memset(&full, 0, sizeof(full));
	memcpy(&full, user_opts, user_opts->size);
	if ((rc = validate(opts)) != 0)
		return rc;
	cap = opts->capacity ? opts->capacity : QUAY_QUEUE_CAPACITY_DEFAULT;
	if ((rc = quayi_x_validate(opts, cap, opts->max_in_flight ? opts->max_in_flight : cap)) != 0)
		return rc;
	if (quayi_alloc_check(opts->allocator) != 0)
		return -EINVAL;
	q = quayi_calloc_aligned(opts->allocator, QUAY_CACHELINE, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->alloc = opts->allocator;
	pthread_mutex_init(&q->tlock, NULL);
	pthread_mutex_init(&q->block, NULL);

	snprintf(q->name, sizeof(q->name), "%s", opts->name != NULL ? opts->name : "queue");
	/* Relaxed: only a distinct value is needed (64 bits never wrap). */
	q->id = __atomic_add_fetch(&queue_ids, 1, __ATOMIC_RELAXED);
	cap = opts->capacity ? opts->capacity : QUAY_QUEUE_CAPACITY_DEFAULT;
	inflight = opts->max_in_flight ? opts->max_in_flight : cap;
	q->flags = opts->flags;
	q->levels = opts->levels ? opts->levels : 1u;
	q->capacity = cap;
	q->max_in_flight = inflight;
	q->visibility_ns = opts->visibility_ns ? opts->visibility_ns : QUAY_QUEUE_VISIBILITY_DEFAULT;
	q->delay_ns = opts->delay_ns;
	q->ttl_ns = opts->ttl_ns;
	q->bo_base = opts->backoff_base_ns ? opts->backoff_base_ns : QUAY_QUEUE_BACKOFF_BASE_DEFAULT;
	q->bo_max = opts->backoff_max_ns ? opts->backoff_max_ns : QUAY_QUEUE_BACKOFF_MAX_DEFAULT;
	q->bo_factor = opts->backoff_factor != 0.0 ? opts->backoff_factor : 2.0;
	q->max_attempts = opts->max_attempts ? opts->max_attempts : QUAY_QUEUE_ATTEMPTS_DEFAULT;
	q->dlq = opts->dlq;
	q->on_failure = opts->on_failure;
	q->on_dead_letter = opts->on_dead_letter;
	q->hook_ctx = opts->hook_ctx;
	q->clock = opts->clock ? opts->clock : quay_queue_clock_tsc;
	q->clock_ctx = opts->clock ? opts->clock_ctx : NULL;
	if (q->clock == quay_queue_clock_tsc)
		quayi_clock_prepare();
	q->jitter_seed = opts->jitter_seed ? opts->jitter_seed : UINT64_C(0x5175617951756179);
	q->next_due = INT64_MAX;
	if ((rc = quayi_dedup_init(&q->dedup, q->alloc, opts->dedup_window_ns,
	         opts->dedup_capacity ? opts->dedup_capacity : cap)) != 0)
		goto fail;
	rc = -EINVAL;
	if (q->bo_max < q->bo_base)
		goto fail;

	po.levels = q->levels;
	po.flags = (q->flags & QUAY_QUEUE_WEIGHTED) ? QUAY_PQ_WEIGHTED : 0u;
	po.weights = opts->weights;
	po.capacity = pow2_at_least(cap);
	po.elem_size = sizeof(quay_msg *);
	po.allocator = q->alloc;
	if ((rc = quay_pq_create(&po, &q->ready)) != 0)
		goto fail;
	fifo = pow2_at_least(2 * inflight < 1024 ? 1024 : 2 * inflight);
	ro.allocator = q->alloc;
	if ((rc = quay_ring_create_opts(pow2_at_least(2 * inflight), 8, &ro, &q->free_slots)) != 0 ||
	    (rc = quay_ring_create_opts(fifo, 8, &ro, &q->expiry)) != 0)
		goto fail;
	rc = -ENOMEM;
	q->slots = quayi_calloc_aligned(q->alloc, QUAY_CACHELINE, inflight * sizeof(*q->slots));
	q->node_free = quayi_calloc(q->alloc, cap, sizeof(*q->node_free));
	q->browse_buf = quayi_calloc(q->alloc, cap, sizeof(*q->browse_buf));
	q->browse_prio = quayi_calloc(q->alloc, cap, sizeof(*q->browse_prio));
	if (q->slots == NULL || q->node_free == NULL || q->browse_buf == NULL || q->browse_prio == NULL)
		goto fail;
	for (uint64_t i = 0; i < inflight; i++)
		if (quay_ring_push(q->free_slots, &i) != 0)
			goto fail;
	if ((rc = quayi_wheel_init(&q->wheel, q->alloc, (uint32_t)(inflight + cap),
	         opts->tick_ns ? opts->tick_ns : QUAY_QUEUE_TICK_DEFAULT, q_now(q))) != 0)
		goto fail;
	for (size_t i = 0; i < cap; i++)
		q->node_free[i] = (uint32_t)(inflight + cap - 1 - i);
	q->node_free_n = (uint32_t)cap;
	if (opts->stats == NULL) {
		struct quay_stats_opts so = QUAY_STATS_OPTS_INIT;

		/* The registry's default histogram shards (min(shards, 4)), not
		 * 1: with one, every thread but the one holding stats slot 0
		 * (typically every consumer but one) recorded both latency
		 * histograms on the shared shard, two locked adds each, on a
		 * line all consumers write. 8320 bytes per shard and histogram. */
		so.allocator = q->alloc;
		if ((rc = quay_stats_create(&so, &q->stats_owned)) != 0)
			goto fail;
	}
	/* Before make_metrics: its collect callback (set last) evaluates
	 * the alarms. */
	if ((rc = quayi_x_create(q, opts, opts->stats != NULL ? opts->stats : q->stats_owned)) != 0 ||
	    (rc = make_metrics(q, opts->stats != NULL ? opts->stats : q->stats_owned)) != 0)
		goto fail;
	if (opts->wal != NULL) {
		struct quayi_qlog_host host = { .name = q->name,
			.capacity = q->capacity,
			.dlq = q->dlq != NULL ? &q->dlq->log : NULL,
			.restore = restore_cb,
			.queue = q };

		/* The dedup window survives a restart (src/queue_dedup_log.c). */
		quayi_dedup_log_host(opts->dedup_window_ns, &host);
		if ((rc = quayi_qlog_attach_wal(&q->log, &host, opts)) != 0)
			goto fail;
	}
	/* A queue and its DLQ share a log, or are both in memory: a dead
	 * letter moves in one log write. */
	rc = -EINVAL;
	if (q->dlq != NULL && !quayi_qlog_same(&q->log, &q->dlq->log))
		goto fail;
	*out = q;
	return 0;
fail:
	queue_free(q);
	return rc;
}

uint32_t *
quayi_queue_bound(quay_queue *q)
{
	return &q->bound;
}

void
quay_queue_destroy(quay_queue *q)
{
	/* Acquire; pairs with unbind's release decrement (src/bus.c). */
	assert(q == NULL || __atomic_load_n(&q->bound, __ATOMIC_ACQUIRE) == 0); /* still bound */
	if (q != NULL) {
		quayi_async_fini(q); /* pipelined sends complete first */
		queue_free(q);
	}
}

/* ---- send --------------------------------------------------------- */

/* The fields a send stamps, saved so that a send the log refuses leaves
 * the caller's message as it was. */
struct stamp {
	int64_t enq, nb, exp;
	uint32_t att;
};

static void
stamp_send(quay_queue *q, quay_msg *msg, int64_t now, struct stamp *old)
{
	*old = (struct stamp){ quay_msg_enqueued_ns(msg), quay_msg_not_before_ns(msg),
		quay_msg_expires_ns(msg), quay_msg_attempts(msg) };
	/* max_attempts is per queue: a message acked (or cloned) elsewhere
	 * starts here at attempt 1, not where the other queue left it. */
	quay_msg_set_attempts(msg, 0);
	quay_msg_set_enqueued_ns(msg, now);
	if (q->delay_ns > 0 && old->nb == 0)
		quay_msg_set_not_before_ns(msg, quayi_ns_add_sat(now, q->delay_ns));
	if (q->ttl_ns > 0 && old->exp == 0)
		quay_msg_set_expires_ns(msg, quayi_ns_add_sat(now, q->ttl_ns));
}

static void
stamp_undo(quay_msg *msg, const struct stamp *old)
{
	quay_msg_set_enqueued_ns(msg, old->enq);
	quay_msg_set_not_before_ns(msg, old->nb);
	quay_msg_set_expires_ns(msg, old->exp);
	quay_msg_set_attempts(msg, old->att);
}

/* Forget the dedup id a send remembered for msg (the send was refused). */
static void
dedup_forget_msg(quay_queue *q, const quay_msg *msg)
{
	size_t len;
	const void *id = quayi_queue_dedup_id(q, msg, &len);

	if (id != NULL)
		quayi_dedup_forget(&q->dedup, id, len);
	else
		quayi_cdedup_forget(q, msg); /* content dedup, if any */
}

/*
 * send -> ready or delayed: n messages that passed send_check. They are
 * stamped and logged in one log write (ADD; none without a log), and
 * those the log took are accepted; the others are left as they were
 * (stamp undone, room and dedup id given back; the log gave its claim
 * back). res[i] gets 0 or the log's error; st is n entries of scratch.
 */
static void
tr_accept(quay_queue *q, quay_msg *const *msgs, size_t n, struct stamp *st, int *res, int64_t now)
{
	size_t logged;
	int err;

	for (size_t i = 0; i < n; i++)
		stamp_send(q, msgs[i], now, &st[i]);
	logged = quayi_qlog_add(&q->log, msgs, n, &err);
	for (size_t i = 0; i < n; i++) {
		if (QUAYI_LIKELY(i < logged)) {
			res[i] = 0;
			cnt(q, QC_SENT, 1);
			place(q, msgs[i], now, false); /* msgs[i] may be gone after this */
		} else {
			res[i] = err;
			stamp_undo(msgs[i], &st[i]);
			dedup_forget_msg(q, msgs[i]);
			held_sub(q);
		}
	}
}

/*
 * The checks of a send of *msgp (valid, queue not closed): room, the
 * dedup window, the log's claim. 0: go on to tr_accept; else
 * QUAY_QUEUE_DUPLICATE (the reference taken) or an error, nothing kept.
 * A message another queue's log holds (one message fanned out to two
 * durable queues, or sent twice in one batch) is sent as a copy, so that
 * no two logs share a message: *msgp becomes the copy, and the caller
 * drops the original once the copy is accepted, or the copy if it is not
 * (-ENOMEM: no room in the pool for a copy). Every other message goes as
 * it is (no copy).
 */
static int
send_check(quay_queue *q, quay_msg **msgp, const void *id, size_t idlen, int64_t now)
{
	quay_msg *msg = *msgp, *copy = NULL;
	int rc;

	if (QUAYI_UNLIKELY(!held_reserve(q)))
		return -EAGAIN;
	if ((id != NULL || QUAYI_UNLIKELY(q->x->cdedup != NULL)) &&
	    (rc = id != NULL ? quayi_dedup_check(&q->dedup, id, idlen, now) :
	                       quayi_cdedup_check(q, msg, now)) != 0) {
		held_sub(q);
		if (rc < 0)
			return rc;
		cnt(q, QC_DEDUPLICATED, 1);
		quay_msg_unref(msg);
		return QUAY_QUEUE_DUPLICATE;
	}
	if (QUAYI_LIKELY(quayi_qlog_claim(&q->log, msg)))
		return 0;
	/* A fresh copy belongs to nobody (a clone's durable id is 0): its
	 * claim cannot fail; -EINVAL if it ever did. */
	rc = quay_msg_clone(quay_msg_pool(msg), msg, &copy);
	if (rc == 0 && !quayi_qlog_claim(&q->log, copy))
		rc = -EINVAL;
	if (QUAYI_UNLIKELY(rc != 0)) {
		if (copy != NULL)
			quay_msg_unref(copy);
		if (id != NULL)
			quayi_dedup_forget(&q->dedup, id, idlen);
		else
			quayi_cdedup_forget(q, msg);
		held_sub(q);
		return rc;
	}
	*msgp = copy;
	return 0;
}

int
quay_queue_send(quay_queue *q, quay_msg *msg)
{
	quay_msg *orig = msg;
	struct stamp st;
	const void *id;
	size_t idlen = 0;
	int64_t now;
	int rc;

	if (QUAYI_UNLIKELY(q == NULL || msg == NULL || quay_msg_priority(msg) >= q->levels))
		return -EINVAL;
	if (QUAYI_UNLIKELY(is_closed(q)))
		return -EPIPE;
	id = quayi_queue_dedup_id(q, msg, &idlen);
	if (id != NULL && idlen > QUAY_QUEUE_DEDUP_ID_MAX)
		return -EINVAL;
	if (QUAYI_UNLIKELY(q->flags & (QUAY_QUEUE_FIFO | QUAY_QUEUE_CONTENT_DEDUP))) {
		const void *g;
		size_t gl;

		if (quayi_msg_group(msg, &g, &gl) != 0)
			return -EINVAL; /* group id too long */
	}
	now = q_now(q);
	maybe_run_timers(q, now);
	if ((rc = send_check(q, &msg, id, idlen, now)) != 0)
		return rc;
	tr_accept(q, &msg, 1, &st, &rc, now);
	if (QUAYI_UNLIKELY(msg != orig))
		quay_msg_unref(rc == 0 ? orig : msg);
	quayi_qlog_idle(&q->log);
	return rc;
}

/* Free send_batch's scratch arrays of chunk entries (any may be NULL). */
static void
batch_free(const quay_queue *q, size_t chunk, quay_msg **acc, struct stamp *st, size_t *where, int *res)
{
	quayi_free(q->alloc, acc, chunk * sizeof(*acc));
	quayi_free(q->alloc, st, chunk * sizeof(*st));
	quayi_free(q->alloc, where, chunk * sizeof(*where));
	quayi_free(q->alloc, res, chunk * sizeof(*res));
}

int
quay_queue_send_batch(quay_queue *q, quay_msg **msgs, size_t n, int *results)
{
	/* Scratch for one message at a time (no allocation). */
	quay_msg *acc1, **acc = &acc1;
	struct stamp st1, *st = &st1;
	size_t where1, *where = &where1, chunk;
	int res1, *res = &res1;
	int sent = 0;

	if (q == NULL || msgs == NULL || n == 0 || n > INT32_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (msgs[i] == NULL)
			return -EINVAL;
	if (is_closed(q))
		return -EPIPE;
	/* A log wants the batch whole (one write, one sync): every message
	 * is checked, then all are logged and accepted together. */
	chunk = quayi_qlog_chunk(&q->log, n);
	if (chunk > 1) {
		acc = quayi_alloc(q->alloc, chunk * sizeof(*acc));
		st = quayi_alloc(q->alloc, chunk * sizeof(*st));
		where = quayi_alloc(q->alloc, chunk * sizeof(*where));
		res = quayi_alloc(q->alloc, chunk * sizeof(*res));
		if (acc == NULL || st == NULL || where == NULL || res == NULL) {
			batch_free(q, chunk, acc, st, where, res);
			return -ENOMEM;
		}
	}
	for (size_t base = 0; base < n; base += chunk) {
		size_t end = n - base > chunk ? base + chunk : n, k = 0;
		int64_t now = q_now(q);

		if (base != 0 && is_closed(q)) {
			for (size_t i = base; results != NULL && i < n; i++)
				results[i] = -EPIPE;
			break;
		}
		maybe_run_timers(q, now);
		for (size_t i = base; i < end; i++) {
			quay_msg *m = msgs[i];
			size_t idlen = 0;
			const void *id = quayi_queue_dedup_id(q, m, &idlen);
			int rc = -EINVAL;

			const void *g;
			size_t gl;

			if (quay_msg_priority(m) < q->levels &&
			    (id == NULL || idlen <= QUAY_QUEUE_DEDUP_ID_MAX) &&
			    (!(q->flags & (QUAY_QUEUE_FIFO | QUAY_QUEUE_CONTENT_DEDUP)) ||
			        quayi_msg_group(m, &g, &gl) == 0) &&
			    (rc = send_check(q, &m, id, idlen, now)) == 0) {
				where[k] = i;
				acc[k++] = m;
				continue;
			}
			if (results != NULL)
				results[i] = rc;
			if (rc >= 0) /* QUAY_QUEUE_DUPLICATE: taken */
				sent++;
		}
		if (k == 0)
			continue;
		tr_accept(q, acc, k, st, res, now);
		for (size_t j = 0; j < k; j++) {
			quay_msg *orig = msgs[where[j]];

			if (QUAYI_UNLIKELY(acc[j] != orig))
				quay_msg_unref(res[j] == 0 ? orig : acc[j]);
			if (results != NULL)
				results[where[j]] = res[j];
			if (res[j] == 0)
				sent++;
		}
	}
	if (chunk > 1)
		batch_free(q, chunk, acc, st, where, res);
	quayi_qlog_idle(&q->log);
	return sent;
}

/* ---- the multi-queue send's halves (src/queue_route.c) --------------- */

/* quay_queue_send up to tr_accept: the checks and send_check, then the
 * stamp (src/queue_route.h). */
int
quayi_queue_send_begin(quay_queue *q, quay_msg *msg, struct quayi_qsend *s)
{
	struct stamp st;
	const void *id;
	size_t idlen = 0;
	int rc;

	*s = (struct quayi_qsend){ .q = q, .orig = msg, .msg = msg };
	if (QUAYI_UNLIKELY(q == NULL || msg == NULL || quay_msg_priority(msg) >= q->levels))
		return -EINVAL;
	if (QUAYI_UNLIKELY(is_closed(q)))
		return -EPIPE;
	id = quayi_queue_dedup_id(q, msg, &idlen);
	if (id != NULL && idlen > QUAY_QUEUE_DEDUP_ID_MAX)
		return -EINVAL;
	if (QUAYI_UNLIKELY(q->flags & (QUAY_QUEUE_FIFO | QUAY_QUEUE_CONTENT_DEDUP))) {
		const void *g;
		size_t gl;

		if (quayi_msg_group(msg, &g, &gl) != 0)
			return -EINVAL; /* group id too long */
	}
	s->now = q_now(q);
	maybe_run_timers(q, s->now);
	if ((rc = send_check(q, &s->msg, id, idlen, s->now)) != 0)
		return rc;
	stamp_send(q, s->msg, s->now, &st);
	s->enq = st.enq;
	s->nb = st.nb;
	s->exp = st.exp;
	s->att = st.att;
	s->pending = 1;
	return 0;
}

/* tr_accept after its log write, for one send begun above: accepted
 * (err 0: the log took it) or rolled back (err: the log refused it and
 * gave the claim back). Then the caller's reference is settled as
 * quay_queue_send does. */
void
quayi_queue_send_end(struct quayi_qsend *s, int err)
{
	quay_queue *q = s->q;
	struct stamp st = { s->enq, s->nb, s->exp, s->att };

	s->pending = 0;
	s->rc = err;
	if (QUAYI_LIKELY(err == 0)) {
		cnt(q, QC_SENT, 1);
		place(q, s->msg, s->now, false); /* s->msg may be gone after this */
	} else {
		stamp_undo(s->msg, &st);
		dedup_forget_msg(q, s->msg);
		held_sub(q);
	}
	if (QUAYI_UNLIKELY(s->msg != s->orig))
		quay_msg_unref(err == 0 ? s->orig : s->msg);
	quayi_qlog_idle(&q->log);
}

/* ---- receive ------------------------------------------------------ */

/*
 * One non-blocking receive with slot i already owned. 0, or -EAGAIN.
 * Messages past their TTL at the head are dead-lettered on the way: slow
 * work (a durable queue logs each), after which the clock is read again,
 * so that the lease is computed from a reading taken after it (the fast
 * path reads the clock once per receive). *slow is set if it did any.
 * quick (the later receives of a batch): stop after one such message, so
 * that the batch's earlier leases lose little of their time.
 */
static QUAYI_ALWAYS_INLINE int
take_one(quay_queue *q, uint32_t i, int64_t now, quay_lease *lease, bool quick, bool batch, bool *slow)
{
	quay_msg *msg;

	for (;;) {
		if (quay_pq_pop(q->ready, &msg, NULL) != 0)
			return -EAGAIN;
		if (QUAYI_UNLIKELY(ttl_passed(msg, now))) {
			tr_ttl(q, msg, now, false);
			*slow = true;
			if (quick)
				return -EAGAIN;
			now = q_now(q);
			continue;
		}
		if (QUAYI_UNLIKELY(quay_msg_attempts(msg) >= q->max_attempts)) {
			/* Only after a restart (in memory tr_fail dead-letters at
			 * max_attempts): the log counted max_attempts deliveries,
			 * each outstanding at a crash, i.e. failed. Slow, as TTL. */
			tr_dead_letter(q, msg, QUAY_QUEUE_DLQ_MAX_ATTEMPTS, now, false);
			*slow = true;
			if (quick)
				return -EAGAIN;
			now = q_now(q);
			continue;
		}
		tr_lease(q, msg, i, now, lease, slow, batch);
		return 0;
	}
}

/* take_one behind the rate limit (src/queue_limit.c): a token first
 * (given back if no message came). *tdue: 0, or the queue time the next
 * token is due when there was none (a message is ready). */
static QUAYI_ALWAYS_INLINE int
take_limited(quay_queue *q, uint32_t i, int64_t now, quay_lease *lease, bool quick, bool batch, bool *slow,
    int64_t *tdue)
{
	int rc;

	*tdue = 0;
	if (QUAYI_LIKELY(!quayi_limited(q->x)))
		return take_one(q, i, now, lease, quick, batch, slow);
	if (quay_pq_count(q->ready) == 0)
		return -EAGAIN; /* no token spent on nothing */
	if (quayi_limit_take(q->x, now, tdue) != 0)
		return -EAGAIN;
	if ((rc = take_one(q, i, now, lease, quick, batch, slow)) != 0)
		quayi_limit_refund(q->x);
	return rc;
}

/* What a sleeping receiver waits for (the ready() of quayi_wait_sleep):
 * a message in the ready pq (recv_ready) or a free lease slot
 * (slot_ready), next_due moved below the value its sleep was computed
 * from (a delayed message sent, an extend, a lease issued), or close. */
struct recv_wait {
	const quay_queue *q;
	int64_t due;
};

/*
 * The deadline of a receiver's sleep: end_mono (CLOCK_MONOTONIC, < 0:
 * none), or the next due time if earlier, so that the timer work it
 * triggers runs; c->due gets the next_due the sleep is computed from.
 * Returns false if something is due already (another thread holds the
 * timer lock and runs it): yield instead of sleeping. now is the queue
 * clock.
 */
static bool
sleep_deadline(quay_queue *q, int64_t now, int64_t end_mono, struct recv_wait *c, int64_t *dl)
{
	*dl = end_mono;
	/* Relaxed: a hint for the sleep length; the ready() callback
	 * re-reads it. */
	c->due = __atomic_load_n(&q->next_due, __ATOMIC_RELAXED);
	if (c->due != INT64_MAX) {
		int64_t t;

		if (c->due <= now)
			return false;
		t = quayi_ns_add_sat(quayi_mono_ns(), c->due - now); /* due - now > 0 */
		if (*dl < 0 || t < *dl)
			*dl = t;
	}
	return true;
}

static bool
recv_ready(const void *ctx)
{
	const struct recv_wait *c = ctx;

	/* Relaxed: WAIT-S1 in quayi_wait_sleep orders both loads after the
	 * sleeper's bit; WAIT-W1 (push) and Q-W2 (wake_receivers) follow the
	 * stores they look for. */
	return quay_pq_count(c->q->ready) != 0 ||
	    __atomic_load_n(&c->q->next_due, __ATOMIC_RELAXED) < c->due || is_closed(c->q);
}

/*
 * Sleep until something may have changed for a receiver: a push to the
 * ready pq, next_due lowered, the earliest due time now known (so the
 * timer work it triggers runs), or end_mono (CLOCK_MONOTONIC, < 0: none).
 * now is the queue clock. The caller re-evaluates after every return.
 */
static void
receive_sleep(quay_queue *q, int64_t now, int64_t end_mono, unsigned *idle)
{
	struct recv_wait c = { q, INT64_MAX };
	int64_t dl;

	if (!sleep_deadline(q, now, end_mono, &c, &dl)) {
		sched_yield();
		return;
	}
	/* A push claimed but not yet published counts while the pop still
	 * fails: spin, then give the pusher the CPU. */
	if (quay_pq_count(q->ready) != 0) {
		if (++*idle > 64)
			sched_yield();
		else
			quayi_cpu_relax();
		return;
	}
	(void)quayi_wait_sleep(&q->ready->pop_event, quayi_pq_fence(q->ready) != 0, recv_ready, &c, dl);
}

/* A receiver waiting for a lease slot (slot_wait) wakes for a slot
 * pushed back into free_slots (the ring's WAIT-W1 on its pop word), next_due
 * lowered below the value its sleep was computed from (Q-W2), or close
 * (Q-C1). */
static bool
slot_ready(const void *ctx)
{
	const struct recv_wait *c = ctx;

	/* Relaxed: WAIT-S1 in quayi_wait_sleep orders these loads after the
	 * sleeper's bit; the wakers' WAIT-W1/Q-W2/Q-C1 follow their stores. */
	return quay_ring_count(c->q->free_slots) != 0 ||
	    __atomic_load_n(&c->q->next_due, __ATOMIC_RELAXED) < c->due || is_closed(c->q);
}

/*
 * Every lease slot is out: wait for one to come back (ack, nack, release,
 * or an expiry, which the timer work run here or by another call
 * handles), for close (-EPIPE) or for end_mono (-EAGAIN: the slots stayed
 * taken). Sleeps until the next due time at the latest, to run it.
 */
static int
slot_wait(quay_queue *q, uint64_t *slot, int64_t end_mono, bool *slow)
{
	unsigned idle = 0;

	for (;;) {
		struct recv_wait c = { q, INT64_MAX };
		int64_t now, dl;

		if (is_closed(q))
			return -EPIPE;
		if (quay_ring_pop(q->free_slots, slot) == 0) /* Q-L3 */
			return 0;
		if (quayi_deadline_passed(end_mono))
			return -EAGAIN;
		now = q_now(q);
		if (maybe_run_timers(q, now)) {
			*slow = true;
			continue;
		}
		if (quay_ring_count(q->free_slots) != 0) {
			/* A push claimed but not yet published: spin, then
			 * give the pusher the CPU. */
			if (++idle > 64)
				sched_yield();
			else
				quayi_cpu_relax();
			continue;
		}
		if (!sleep_deadline(q, now, end_mono, &c, &dl)) {
			sched_yield();
			continue;
		}
		(void)quayi_wait_sleep(&q->free_slots->pop_event,
		    (q->free_slots->flags & QUAYI_RING_F_FENCE) != 0, slot_ready, &c, dl);
	}
}

/*
 * One receive. The clock is read once on the fast path; whatever slow work
 * comes before the lease (the timer run, dead-lettering TTL-expired
 * messages, a full expiry FIFO) is followed by a new reading, and *slow
 * is set. quick: no timer run, and stop after one TTL-expired message
 * (take_one), for the later receives of a batch.
 */
static QUAYI_ALWAYS_INLINE int
receive_one(quay_queue *q, quay_lease *lease, int64_t wait_ns, int64_t end_mono, bool quick, bool batch,
    bool *slow)
{
	uint64_t slot;
	int64_t now = q_now(q), tdue;
	unsigned idle = 0;
	int rc;

	if (QUAYI_UNLIKELY(is_closed(q)))
		return -EPIPE;
	if (!quick && maybe_run_timers(q, now)) {
		now = q_now(q);
		*slow = true;
	}
	/* A poll (wait 0) of an empty queue takes no lease slot: popping one
	 * and pushing it back would wake a descriptor armed on free_slots
	 * (quay_queue_fd) for nothing, six system calls per empty poll. A
	 * message pushed after this look is a later arrival. */
	if (wait_ns == 0 && quay_pq_count(q->ready) == 0)
		return -EAGAIN;
	if (QUAYI_UNLIKELY(quay_ring_pop(q->free_slots, &slot) != 0)) { /* Q-L3 */
		/* Every lease is out: a long poll waits for one to end rather
		 * than return at once (a worker loop would spin). */
		if (wait_ns == 0)
			return -EAGAIN;
		if ((rc = slot_wait(q, &slot, end_mono, slow)) != 0)
			return rc;
		now = q_now(q);
	}
	rc = take_limited(q, (uint32_t)slot, now, lease, quick, batch, slow, &tdue);
	/* Long poll: sleep, then run what became due and try again, until a
	 * message, or the caller's deadline (one last try after it). */
	while (rc == -EAGAIN && wait_ns != 0) {
		if (quayi_deadline_passed(end_mono)) {
			rc = -ETIMEDOUT;
			break;
		}
		if (tdue != 0)
			quayi_limit_sleep(q, now, tdue, end_mono); /* till a token */
		else
			receive_sleep(q, now, end_mono, &idle);
		if (is_closed(q)) {
			rc = -EPIPE;
			break;
		}
		now = q_now(q);
		if (maybe_run_timers(q, now)) {
			now = q_now(q);
			*slow = true;
		}
		rc = take_limited(q, (uint32_t)slot, now, lease, quick, batch, slow, &tdue);
	}
	if (rc != 0)
		slot_free(q, slot);
	return rc;
}

int
quay_queue_receive(quay_queue *q, quay_lease *lease, int64_t wait_ns)
{
	bool slow = false;

	int rc;

	if (QUAYI_UNLIKELY(q == NULL || lease == NULL))
		return -EINVAL;
	rc = receive_one(q, lease, wait_ns, wait_ns > 0 ? quayi_deadline(wait_ns) : QUAYI_FOREVER, false,
	    false, &slow);
	if (rc == -EAGAIN) /* POLL-A1: re-arm quay_queue_fd's descriptor (src/pollfd.c) */
		quayi_wait_idle(&q->ready->pop_event);
	return rc;
}

/*
 * Renew a lease this receive issued and has not handed out yet: its
 * deadline becomes at least nd. Longer only, so no wheel node moves (the
 * timer refiles a lease it finds not yet expired, as for extend). False
 * if the lease ended meanwhile (another thread's timer run expired it:
 * its message is already redelivered or dead-lettered).
 */
static bool
lease_renew(quay_queue *q, quay_lease *lease, int64_t nd)
{
	struct quayi_lslot *s = &q->slots[lease->slot];
	uint64_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */

	for (;;) {
		if ((st >> 2) != lease->gen || (st & 3u) == QUAYI_L_FREE)
			return false;
		if ((st & 3u) == QUAYI_L_BUSY) {
			quayi_cpu_relax();
			st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */
			continue;
		}
		/* Q-L2: acquire CAS LEASED -> BUSY, as extend. */
		if (__atomic_compare_exchange_n(&s->state, &st, (st & ~(uint64_t)3) | QUAYI_L_BUSY, false,
		        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
			break;
	}
	/* Relaxed: ours under BUSY; published by the release store below. */
	if (nd > __atomic_load_n(&s->deadline, __ATOMIC_RELAXED))
		__atomic_store_n(&s->deadline, nd, __ATOMIC_RELAXED);
	lease->deadline_ns = __atomic_load_n(&s->deadline, __ATOMIC_RELAXED);
	/* Release: back to LEASED (pairs with Q-L2). */
	__atomic_store_n(&s->state, st, __ATOMIC_RELEASE);
	return true;
}

size_t
quay_queue_receive_batch(quay_queue *q, quay_lease *leases, size_t n, int64_t wait_ns)
{
	int64_t end_mono;

	if (q == NULL || leases == NULL || n == 0)
		return 0;
	end_mono = wait_ns > 0 ? quayi_deadline(wait_ns) : QUAYI_FOREVER;
	for (;;) {
		size_t got, stale_before = 0, kept = 0;
		bool slow = false;
		int64_t nd;

		/* The first lease is computed after whatever slow work its
		 * receive did. The others are quick receives (no timer run; a
		 * TTL-expired message ends the batch): one that still did slow
		 * work (a dead letter, an expiry FIFO drain) leaves the leases
		 * before it with an old deadline, renewed below. */
		if (receive_one(q, &leases[0], wait_ns, end_mono, false, true, &slow) != 0) {
			quayi_wait_idle(&q->ready->pop_event); /* POLL-A1, as receive */
			return 0;
		}
		for (got = 1; got < n; got++) {
			int rc;

			slow = false;
			rc = receive_one(q, &leases[got], 0, -1, true, true, &slow);
			if (slow)
				stale_before = got;
			if (rc != 0)
				break;
		}
		/* One write for the batch's delivery counts, before any lease
		 * is handed out. Its leases already exist: one that expired
		 * meanwhile (a batch outlasting the visibility timeout) may
		 * have its count logged after its redelivery's; the log then
		 * holds one delivery fewer (never a lost message). */
		if (quayi_qlog_deliver(&q->log, leases, got))
			stale_before = got; /* slow work: renew them all */
		if (QUAYI_LIKELY(stale_before == 0))
			return got;
		nd = quayi_ns_add_sat(q_now(q), q->visibility_ns);
		for (size_t i = 0; i < got; i++) {
			if (i < stale_before && !lease_renew(q, &leases[i], nd)) {
				/* Expired before it was handed out (the delivery
				 * counts as an expired attempt): not the caller's. */
				quay_msg_unref(leases[i].msg);
				continue;
			}
			leases[kept++] = leases[i];
		}
		/* Every lease of this round expired before the hand-over: 0
		 * would read as "timed out" to a caller still inside its wait,
		 * so receive again (a wait of 0, or a passed deadline, ends it). */
		if (kept > 0 || wait_ns == 0 || quayi_deadline_passed(end_mono))
			return kept;
	}
}

/* ---- ack / nack / extend ---------------------------------------------- */

/* Validate the lease and take its slot from LEASED to FREE (to_busy:
 * BUSY instead). Returns 0 with *st_out the old state, or an error. */
static int
end_lease(quay_queue *q, const quay_lease *lease, bool to_busy, int64_t now, uint64_t *st_out)
{
	struct quayi_lslot *s;
	uint64_t st;

	if (lease->queue != q->id || lease->slot >= q->max_in_flight || lease->gen == 0)
		return -ENOENT;
	s = &q->slots[lease->slot];
	st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */
	for (;;) {
		uint64_t sgen = st >> 2;

		if (lease->gen > sgen)
			return -ENOENT;
		if (lease->gen < sgen || (st & 3u) == QUAYI_L_FREE)
			return -ESTALE;
		if ((st & 3u) == QUAYI_L_BUSY) {
			quayi_cpu_relax();
			st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */
			continue;
		}
		/* Relaxed: ordered by Q-L2 when the state has not moved since; if
		 * the slot was reused meanwhile the state says so. */
		if (__atomic_load_n(&s->msg, __ATOMIC_RELAXED) != lease->msg) {
			uint64_t st2 = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */

			if (st2 != st) {
				st = st2; /* the lease moved on meanwhile: look again */
				continue;
			}
			return -ENOENT;
		}
		/* Relaxed: written before Q-L1, under BUSY, or by tr_lease after
		 * Q-L1 under the timer lock while no holder has the lease yet (a
		 * holder of an older generation got -ESTALE above, and expiry
		 * needs the lock tr_lease holds); each is ordered by Q-L2. */
		if (__atomic_load_n(&s->deadline, __ATOMIC_RELAXED) <= now)
			return -ESTALE;
		/* Q-L2: acq_rel CAS; a concurrent expiry or extend holds BUSY. */
		if (__atomic_compare_exchange_n(&s->state, &st,
		        (sgen << 2) | (to_busy ? QUAYI_L_BUSY : QUAYI_L_FREE), false, __ATOMIC_ACQ_REL,
		        __ATOMIC_ACQUIRE)) {
			*st_out = st;
			return 0;
		}
	}
}

int
quay_queue_ack(quay_queue *q, const quay_lease *lease)
{
	uint64_t st, slot;
	quay_msg *msg;
	int64_t now;
	int rc;

	if (QUAYI_UNLIKELY(q == NULL || lease == NULL))
		return -EINVAL;
	now = q_now(q);
	rc = end_lease(q, lease, false, now, &st);
	if (rc != 0)
		return rc;
	msg = q->slots[lease->slot].msg;
	slot = lease->slot;
	slot_free(q, slot);
	if ((rc = tr_ack(q, msg, now)) == 0)
		quayi_qlog_idle(&q->log);
	return rc;
}

int
quay_queue_release(quay_queue *q, const quay_lease *lease)
{
	uint64_t st;
	quay_msg *msg;
	int rc;

	if (q == NULL || lease == NULL)
		return -EINVAL;
	rc = end_lease(q, lease, false, q_now(q), &st);
	if (rc != 0)
		return rc;
	msg = q->slots[lease->slot].msg;
	slot_free(q, lease->slot);
	tr_release(q, msg);
	return 0;
}

int
quay_queue_nack(quay_queue *q, const quay_lease *lease, const char *reason)
{
	uint64_t st, slot;
	quay_msg *msg;
	int64_t now;
	int rc;

	if (q == NULL || lease == NULL)
		return -EINVAL;
	now = q_now(q);
	rc = end_lease(q, lease, false, now, &st);
	if (rc != 0)
		return rc;
	msg = q->slots[lease->slot].msg;
	slot = lease->slot;
	slot_free(q, slot);
	cnt(q, QC_NACKED, 1);
	tr_fail(q, msg, now, reason, false);
	quayi_qlog_idle(&q->log);
	return 0;
}

int
quay_queue_extend(quay_queue *q, const quay_lease *lease, int64_t more_ns)
{
	struct quayi_lslot *s;
	uint64_t st;
	int64_t now, old, nd;
	bool locked = false;
	int rc;

	if (q == NULL || lease == NULL || more_ns <= 0)
		return -EINVAL;
	now = q_now(q);
	nd = quayi_ns_add_sat(now, more_ns);
	/* Lock order: the timer lock before BUSY, never the other way (the
	 * timer's check_lease waits for BUSY with the lock held). A shorter
	 * deadline moves a wheel node, under the lock: take it first when
	 * the deadline seen now says so (relaxed peek; re-checked below). */
	if (lease->queue == q->id && lease->slot < q->max_in_flight &&
	    nd < __atomic_load_n(&q->slots[lease->slot].deadline, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&q->tlock);
		locked = true;
	}
	for (;;) {
		rc = end_lease(q, lease, true, now, &st);
		if (rc != 0) {
			if (locked)
				pthread_mutex_unlock(&q->tlock);
			return rc;
		}
		s = &q->slots[lease->slot];
		old = __atomic_load_n(&s->deadline, __ATOMIC_RELAXED); /* ours under BUSY */
		if (locked || nd >= old)
			break;
		/* Another extend of this lease lengthened it meanwhile: give
		 * BUSY back (release, pairs with Q-L2), lock, and take it again. */
		__atomic_store_n(&s->state, st, __ATOMIC_RELEASE);
		pthread_mutex_lock(&q->tlock);
		locked = true;
	}
	/* Relaxed: published by the release store of the state below. */
	__atomic_store_n(&s->deadline, nd, __ATOMIC_RELAXED);
	if (nd < old && quayi_wheel_linked(&q->wheel, lease->slot) &&
	    q->wheel.nodes[lease->slot].kind == QUAYI_T_LEASE) {
		/* Shorter: the wheel node filed at the old deadline moves. */
		quayi_wheel_del(&q->wheel, lease->slot);
		quayi_wheel_add(&q->wheel, lease->slot, nd);
	}
	/* Release: back to LEASED (pairs with Q-L2). */
	__atomic_store_n(&s->state, st, __ATOMIC_RELEASE);
	if (locked)
		pthread_mutex_unlock(&q->tlock);
	if (nd < old && lower_next_due(q, nd))
		wake_receivers(q);
	return 0;
}

/* ---- redrive / browse / tick / stats ---------------------------------- */

int
quay_queue_redrive(quay_queue *dlq, quay_queue *to, size_t max, size_t *moved)
{
	size_t n = 0;
	int rc = 0;
	int64_t now;

	if (dlq == NULL || to == NULL || dlq == to || max == 0)
		return -EINVAL;
	/* A move is one log write: both on one log, or both in memory. */
	if (!quayi_qlog_same(&dlq->log, &to->log))
		return -EINVAL;
	if (is_closed(to))
		return -EPIPE;
	now = q_now(to);
	while (n < max) {
		quay_msg *msg;
		unsigned prio = 0;

		/* Room in `to` first: a full target leaves the DLQ as it was,
		 * every message in its place. */
		if (!held_reserve(to)) {
			rc = -EAGAIN;
			break;
		}
		if (quay_pq_pop(dlq->ready, &msg, &prio) != 0) {
			held_sub(to);
			break;
		}
		if ((rc = tr_redrive(dlq, to, msg, now)) != 0) {
			/* The log refused the move (durable): back, unchanged, at
			 * the tail (its room is still held). */
			held_sub(to);
			make_ready(dlq, msg);
			break;
		}
		n++;
	}
	if (moved != NULL)
		*moved = n;
	quayi_qlog_idle(&dlq->log);
	return rc;
}

int
quay_queue_browse(quay_queue *q, quay_queue_visit_fn fn, void *ctx)
{
	size_t n = 0;
	int stop = 0;

	if (q == NULL || fn == NULL)
		return -EINVAL;
	pthread_mutex_lock(&q->block);
	while (n < q->capacity && quay_pq_pop(q->ready, &q->browse_buf[n], &q->browse_prio[n]) == 0)
		n++;
	for (size_t i = 0; i < n && stop == 0; i++)
		stop = fn(ctx, q->browse_buf[i], QUAY_QUEUE_READY);
	for (size_t i = 0; i < n; i++)
		make_ready(q, q->browse_buf[i]);
	pthread_mutex_unlock(&q->block);
	if (stop == 0)
		stop = quayi_fifo_browse(q, fn, ctx); /* parked: ready too */
	if (stop == 0) {
		pthread_mutex_lock(&q->tlock);
		for (uint32_t i = (uint32_t)q->max_in_flight; i < q->wheel.nnodes && stop == 0; i++)
			if (quayi_wheel_linked(&q->wheel, i))
				stop = fn(ctx, q->wheel.nodes[i].msg, QUAY_QUEUE_DELAYED);
		pthread_mutex_unlock(&q->tlock);
	}
	for (size_t i = 0; i < q->max_in_flight && stop == 0; i++) {
		struct quayi_lslot *s = &q->slots[i];
		uint64_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE); /* Q-L2 */
		quay_msg *msg;

		if ((st & 3u) != QUAYI_L_LEASED)
			continue;
		/* Q-L2: hold BUSY while taking a reference. */
		if (!__atomic_compare_exchange_n(&s->state, &st, (st & ~(uint64_t)3) | QUAYI_L_BUSY, false,
		        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			continue; /* it just ended */
		msg = s->msg;
		quay_msg_ref(msg);
		__atomic_store_n(&s->state, st, __ATOMIC_RELEASE); /* pairs with Q-L2 */
		stop = fn(ctx, msg, QUAY_QUEUE_IN_FLIGHT);
		quay_msg_unref(msg);
	}
	return stop;
}

int
quay_queue_close(quay_queue *q)
{
	if (q == NULL)
		return -EINVAL;
	/* Q-C1: seq_cst store, then wake every sleeping receiver (their
	 * recv_ready reads it after WAIT-S1: they see it or are woken). */
	__atomic_store_n(&q->closed, 1u, __ATOMIC_SEQ_CST);
	wake_receivers(q);
	quayi_limit_close(q);
	return 0;
}

bool
quay_queue_closed(const quay_queue *q)
{
	/* Q-C3: acquire, pairs with the seq_cst store of Q-C1: what the
	 * closing thread wrote before quay_queue_close() is visible once this
	 * reads true. The flag is never cleared. */
	return q != NULL && __atomic_load_n(&q->closed, __ATOMIC_ACQUIRE) != 0;
}

int
quay_queue_tick(quay_queue *q)
{
	if (q == NULL)
		return -EINVAL;
	pthread_mutex_lock(&q->tlock);
	run_timers_locked(q, q_now(q));
	pthread_mutex_unlock(&q->tlock);
	return 0;
}

int
quay_queue_stats(quay_queue *q, struct quay_queue_stats *out)
{
	int64_t now, oldest = 0, e;
	uint64_t inflight = 0;

	if (q == NULL || out == NULL)
		return -EINVAL;
	quay_queue_tick(q);
	now = q_now(q);
	memset(out, 0, sizeof(*out));
	out->sent = quay_counter_read(q->ctr[QC_SENT]);
	out->received = quay_counter_read(q->ctr[QC_RECEIVED]);
	out->acked = quay_counter_read(q->ctr[QC_ACKED]);
	out->nacked = quay_counter_read(q->ctr[QC_NACKED]);
	out->retried = quay_counter_read(q->ctr[QC_RETRIED]);
	out->lease_expired = quay_counter_read(q->ctr[QC_LEASE_EXPIRED]);
	out->ttl_expired = quay_counter_read(q->ctr[QC_TTL_EXPIRED]);
	out->dead_lettered = quay_counter_read(q->ctr[QC_DEAD_LETTERED]);
	out->redriven_out = quay_counter_read(q->ctr[QC_REDRIVEN]);
	out->dropped = quay_counter_read(q->ctr[QC_DROPPED]);
	out->deduplicated = quay_counter_read(q->ctr[QC_DEDUPLICATED]);
	out->restored = quay_counter_read(q->ctr[QC_RESTORED]);
	/* FIFO: with the messages parked behind their group's head. */
	out->ready = quay_pq_count(q->ready) + quayi_fifo_parked(q);
	pthread_mutex_lock(&q->tlock);
	out->delayed = q->delayed;
	for (uint32_t i = (uint32_t)q->max_in_flight; i < q->wheel.nnodes; i++)
		if (quayi_wheel_linked(&q->wheel, i) &&
		    (e = quay_msg_enqueued_ns(q->wheel.nodes[i].msg)) != 0 && now - e > oldest)
			oldest = now - e;
	pthread_mutex_unlock(&q->tlock);
	for (size_t i = 0; i < q->max_in_flight; i++) {
		struct quayi_lslot *s = &q->slots[i];

		/* Relaxed: a count and an estimate; the message is not touched
		 * (enq is the slot's copy of its enqueued_ns, set at lease). */
		if ((__atomic_load_n(&s->state, __ATOMIC_RELAXED) & 3u) != QUAYI_L_FREE) {
			inflight++;
			e = __atomic_load_n(&s->enq, __ATOMIC_RELAXED);
			if (e != 0 && now - e > oldest)
				oldest = now - e;
		}
	}
	out->in_flight = inflight;
	/* Ready messages: the enqueue time of the last one received is that
	 * of one older than every ready one of its level (an estimate).
	 * Relaxed: an estimate. */
	e = __atomic_load_n(&q->last_recv_enq, __ATOMIC_RELAXED);
	if (out->ready != 0 && e != 0 && now - e > oldest)
		oldest = now - e;
	out->oldest_age_ns = oldest;
	quay_gauge_set(q->gauge[QG_READY], (int64_t)out->ready);
	quay_gauge_set(q->gauge[QG_DELAYED], (int64_t)out->delayed);
	quay_gauge_set(q->gauge[QG_IN_FLIGHT], (int64_t)out->in_flight);
	quay_gauge_set(q->gauge[QG_OLDEST], oldest);
	quayi_health_eval(q, out, now);
	return 0;
}
