/* SPDX-License-Identifier: MIT */
/*
 * Private declarations shared by src/queue.c and src/queue_timer.c.
 * Never installed. The durability layer (src/queue_durable.c) does not
 * see them: it talks to the queue through src/queue_log.h only.
 *
 * The timing wheel (src/queue_timer.c) is not thread-safe: every call
 * below is made with the queue's timer lock held.
 */
#ifndef QUAY_QUEUE_INTERNAL_H
#define QUAY_QUEUE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/msg.h>
#include <quay/pq.h>
#include <quay/queue.h>
#include <quay/ring.h>
#include <quay/stats.h>

#include "alloc.h"
#include "queue_dedup.h"
#include "queue_log.h"

/* ---- timing wheel ------------------------------------------------- */

#define QUAYI_TW_NIL UINT32_MAX
#define QUAYI_TW_L0 256u /* level 0 slots: one tick each */
#define QUAYI_TW_LN 64u  /* slots of levels 1..4 */
#define QUAYI_TW_LEVELS 5u
#define QUAYI_TW_SLOTS (QUAYI_TW_L0 + (QUAYI_TW_LEVELS - 1) * QUAYI_TW_LN)

/* What a timer node stands for. */
enum quayi_tkind {
	QUAYI_T_FREE = 0,
	QUAYI_T_LEASE = 1, /* a lease moved out of the expiry FIFO (node = slot) */
	QUAYI_T_MSG = 2,   /* a delayed message (not-before or retry backoff) */
	QUAYI_T_DLQ = 3,   /* a message whose dead-lettering waits for room in the DLQ */
};

/* An intrusive, preallocated timer entry. due is absolute (queue clock
 * ns): levels only say when to look at it again, so nothing drifts. */
struct quayi_tnode {
	int64_t due;
	uint64_t seq;        /* insertion order: FIFO among equal due times */
	uint64_t gen;        /* QUAYI_T_LEASE: the lease's generation */
	quay_msg *msg;       /* QUAYI_T_MSG / QUAYI_T_DLQ */
	uint32_t next, prev; /* list of the wheel slot, QUAYI_TW_NIL ends */
	uint16_t where;      /* wheel slot index, or UINT16_MAX if not linked */
	uint8_t kind;        /* enum quayi_tkind */
	uint8_t reason;      /* QUAYI_T_DLQ: quay_queue_dlq_reason */
	uint8_t prio;        /* QUAYI_T_MSG: the level to push to (saves a
	                           cache miss on the message when it fires) */
};

/* A fired entry, handed back in (due, seq) order. */
struct quayi_fired {
	int64_t due;
	uint64_t seq;
	uint32_t idx;
};

struct quayi_wheel {
	int64_t tick_ns;
	uint64_t cur; /* the tick being processed */
	uint64_t seq;
	size_t count;    /* linked nodes */
	size_t count_l0; /* of which in level 0 */
	struct quayi_tnode *nodes;
	uint32_t nnodes;
	uint32_t heads[QUAYI_TW_SLOTS];
	uint64_t l0_bits[QUAYI_TW_L0 / 64];
	struct quayi_fired *fired;          /* nnodes entries of scratch */
	const struct quay_allocator *alloc; /* of nodes and fired */
};

int quayi_wheel_init(struct quayi_wheel *w, const struct quay_allocator *a, uint32_t nnodes, int64_t tick_ns,
    int64_t now);
void quayi_wheel_fini(struct quayi_wheel *w);
/* Link node idx (not linked) to fire at due. */
void quayi_wheel_add(struct quayi_wheel *w, uint32_t idx, int64_t due);
/* Unlink node idx if it is linked. */
void quayi_wheel_del(struct quayi_wheel *w, uint32_t idx);
static inline bool
quayi_wheel_linked(const struct quayi_wheel *w, uint32_t idx)
{
	return w->nodes[idx].where != UINT16_MAX;
}
/* Unlink every node due at or before now; returns how many, their indexes
 * in w->fired[0..n) sorted by (due, seq). */
size_t quayi_wheel_advance(struct quayi_wheel *w, int64_t now);
/* A lower bound of the earliest due time (INT64_MAX if empty). Exact when
 * the earliest entry is within 256 ticks. */
int64_t quayi_wheel_next_due(const struct quayi_wheel *w);

/* ---- the queue ---------------------------------------------------- */

/* Owned cells of quay_queue.held_out (stats slots 0..7); one more is
 * shared. */
#define QUAYI_HOUT_CELLS 8u

/* Lease slot states (low two bits of quayi_lslot.state; gen above). */
#define QUAYI_L_FREE 0u
#define QUAYI_L_LEASED 1u
#define QUAYI_L_BUSY 2u /* an extend, expiry check or browse holds it */

/* One lease slot, on its own cache line. state = gen << 2 | QUAYI_L_*. */
struct quayi_lslot {
	uint64_t state;
	int64_t deadline; /* atomic (relaxed); written under BUSY or by the owner */
	int64_t enq;      /* atomic (relaxed): the message's enqueued_ns, for stats */
	quay_msg *msg;    /* written (atomic, relaxed) by the receiver that owns
	                              the FREE slot, published by L1 */
} QUAYI_ALIGNED(QUAY_CACHELINE);

enum quayi_qcounter {
	QC_SENT,
	QC_RECEIVED,
	QC_ACKED,
	QC_NACKED,
	QC_RETRIED,
	QC_LEASE_EXPIRED,
	QC_TTL_EXPIRED,
	QC_DEAD_LETTERED,
	QC_REDRIVEN,
	QC_DROPPED,
	QC_DEDUPLICATED,
	QC_RESTORED,
	QC_COUNT
};
enum quayi_qgauge { QG_READY, QG_DELAYED, QG_IN_FLIGHT, QG_OLDEST, QG_COUNT };

struct quay_queue {
	/* Read-only after create. */
	uint64_t id; /* unique in the process: the lease's queue fence */
	char name[QUAY_QUEUE_NAME_MAX + 1];
	unsigned flags;
	unsigned levels;
	size_t capacity;
	size_t max_in_flight;
	int64_t visibility_ns, delay_ns, ttl_ns;
	int64_t bo_base, bo_max;
	double bo_factor;
	uint32_t max_attempts;
	quay_queue *dlq;
	struct quayi_qlog log; /* its log (src/queue_log.h); ops NULL: in memory */
	quay_queue_failure_fn on_failure;
	quay_queue_dead_letter_fn on_dead_letter;
	void *hook_ctx;
	quay_queue_clock_fn clock;
	void *clock_ctx;
	uint64_t jitter_seed;
	quay_pq *ready;            /* quay_msg pointers */
	quay_ring *free_slots;     /* free lease slot indexes */
	quay_ring *expiry;         /* (gen << 24 | slot) of every lease issued */
	struct quayi_lslot *slots; /* max_in_flight */
	quay_stats *stats_owned;   /* private registry, or NULL */
	quay_counter *ctr[QC_COUNT];
	quay_gauge *gauge[QG_COUNT];
	quay_hist *h_first, *h_ack;

	/* Messages held (ready + delayed + in flight + in transit) =
	 * held_in - held_out (quayi_queue_held): bounds the queue, so that a
	 * failed delivery always has room to go back. Two counters on two
	 * lines, so that a sender and a consumer do not write one line per
	 * message: a send adds to held_in, an exit (ack, drop, dead letter,
	 * a send refused late) to held_out. A send compares with
	 * held_out_seen, a copy of held_out that can only be behind (the
	 * count only grows): it reads held_out itself only when the copy
	 * says full.
	 *
	 * held_out is the sum of cells, one line each: cell i (i <
	 * QUAYI_HOUT_CELLS) has one writer, the thread holding stats slot i
	 * (STATS-S1/S2 hand a slot's cells from one owner to the next), which
	 * adds with a load and a release store, no locked instruction; the
	 * last cell is shared by the threads with a higher slot (atomic
	 * add). Only a send that finds the queue full, and the gauges, add
	 * them up (quayi_queue_held_out). */
	uint64_t held_in QUAYI_ALIGNED(QUAY_CACHELINE);
	uint64_t held_out_seen;
	uint64_t held_out[QUAYI_HOUT_CELLS + 1][QUAYI_STATS_LINE_WORDS] QUAYI_ALIGNED(QUAY_CACHELINE);

	/* Earliest time at which timer work may be due (INT64_MAX: none). */
	int64_t next_due QUAYI_ALIGNED(QUAY_CACHELINE);
	uint64_t rng_ctr; /* jitter draws */
	uint32_t closed;  /* quay_queue_close(): C1 store, C2 loads */

	/* enqueued_ns of the last received message. Written by every
	 * receive: on a line of its own, so that senders reading next_due
	 * and closed above do not miss the cache on each receive. */
	int64_t last_recv_enq QUAYI_ALIGNED(QUAY_CACHELINE);

	/* Timer state: everything below under tlock. */
	pthread_mutex_t tlock QUAYI_ALIGNED(QUAY_CACHELINE);
	struct quayi_wheel wheel; /* nodes [0, max_in_flight) are the lease slots' */
	uint32_t *node_free;      /* stack of free message nodes */
	uint32_t node_free_n;
	uint64_t delayed; /* atomic for stats readers; written under tlock */

	struct quayi_dedup dedup; /* the dedup window (src/queue_dedup.c) */

	pthread_mutex_t block; /* one browse at a time */
	quay_msg **browse_buf;
	unsigned *browse_prio;
	/* Bindings of a bus sending here (src/bus.c, __atomic); destroy asserts 0. */
	uint32_t bound;
	struct quayi_qx *x;                 /* rate limit, alarms, content dedup, FIFO
	                                     (src/queue_x.h); made at create */
	const struct quay_allocator *alloc; /* quay_queue_opts.allocator: every block of q's */
	struct quayi_async *async;          /* pipelined sends (src/queue_async.c); NULL
	                                     until the first, set once by CAS */
};

/* src/queue_async.c: complete every pipelined send of q, stop its
 * completion thread and free its state (destroy, before anything). */
void quayi_async_fini(quay_queue *q);

/*
 * Recovery (the restore callback a log gets at attach): put msg (the
 * caller's reference is taken) back into q with the given attempts and not-before
 * time, as ready (not_before_ns <= now) or delayed. It is not a send: no
 * dedup check, no default delay or TTL, `sent` is not counted (`restored`
 * is). A priority at or above q's levels is served at the last level
 * (never an error). Returns 0, or -EAGAIN if q is full, -EINVAL on bad
 * arguments.
 */
int quayi_queue_restore(quay_queue *q, quay_msg *msg, uint32_t attempts, int64_t not_before_ns);

/* msg's dedup id header if q has an id window (NULL: none). */
static inline const void *
quayi_queue_dedup_id(const quay_queue *q, const quay_msg *msg, size_t *len)
{
	const void *id;

	if (q->dedup.window <= 0 || quay_msg_header_count(msg) == 0 ||
	    quay_msg_get_header(msg, QUAY_MSG_H_DEDUP_ID, &id, len) != 0)
		return NULL;
	return id;
}

/* The exits counted in q's held_out cells (see held_in), each loaded
 * with order (__ATOMIC_ACQUIRE: QUEUE-H2; __ATOMIC_RELAXED: a gauge).
 * Each cell only grows: the sum can only be behind the true count. */
static inline uint64_t
quayi_queue_held_out(const quay_queue *q, int order)
{
	uint64_t out = 0;

	for (unsigned i = 0; i <= QUAYI_HOUT_CELLS; i++)
		out += __atomic_load_n(&q->held_out[i][0], order); /* order: see above */
	return out;
}

/* Messages held by q (see held_in): a snapshot, relaxed (a gauge). */
static inline uint64_t
quayi_queue_held(const quay_queue *q)
{
	/* Relaxed: counts that publish nothing. The loads are not one
	 * snapshot (a reservation undone between them, an exit counted
	 * before its entry is seen), hence the clamp. */
	uint64_t out = quayi_queue_held_out(q, __ATOMIC_RELAXED);
	int64_t d = (int64_t)(__atomic_load_n(&q->held_in, __ATOMIC_RELAXED) - out);

	return d > 0 ? (uint64_t)d : 0;
}

/* The number of bus bindings sending to q (src/bus.c). */
uint32_t *quayi_queue_bound(quay_queue *q);

#endif /* QUAY_QUEUE_INTERNAL_H */
