/* SPDX-License-Identifier: MIT */
/*
 * Private declarations shared by src/queue.c and src/queue_timer.c (and,
 * later, the durability layer in src/queue_durable.c). Never installed.
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

/* ---- timing wheel ------------------------------------------------- */

#define QUAYI_TW_NIL UINT32_MAX
#define QUAYI_TW_L0 256u                 /* level 0 slots: one tick each */
#define QUAYI_TW_LN 64u                  /* slots of levels 1..4 */
#define QUAYI_TW_LEVELS 5u
#define QUAYI_TW_SLOTS (QUAYI_TW_L0 + (QUAYI_TW_LEVELS - 1) * QUAYI_TW_LN)

/* What a timer node stands for. */
enum quayi_tkind {
	QUAYI_T_FREE = 0,
	QUAYI_T_LEASE = 1,      /* a lease moved out of the expiry FIFO (node = slot) */
	QUAYI_T_MSG = 2,        /* a delayed message (not-before or retry backoff) */
	QUAYI_T_DLQ = 3,        /* a message whose dead-lettering waits for room in the DLQ */
};

/* An intrusive, preallocated timer entry. due is absolute (queue clock
 * ns): levels only say when to look at it again, so nothing drifts. */
struct quayi_tnode {
	int64_t due;
	uint64_t seq;           /* insertion order: FIFO among equal due times */
	uint64_t gen;           /* QUAYI_T_LEASE: the lease's generation */
	quay_msg *msg;          /* QUAYI_T_MSG / QUAYI_T_DLQ */
	uint32_t next, prev;    /* list of the wheel slot, QUAYI_TW_NIL ends */
	uint16_t where;         /* wheel slot index, or UINT16_MAX if not linked */
	uint8_t kind;           /* enum quayi_tkind */
	uint8_t reason;         /* QUAYI_T_DLQ: quay_queue_dlq_reason */
	uint8_t prio;           /* QUAYI_T_MSG: the level to push to (saves a
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
	uint64_t cur;                       /* the tick being processed */
	uint64_t seq;
	size_t count;                       /* linked nodes */
	size_t count_l0;                    /* of which in level 0 */
	struct quayi_tnode *nodes;
	uint32_t nnodes;
	uint32_t heads[QUAYI_TW_SLOTS];
	uint64_t l0_bits[QUAYI_TW_L0 / 64];
	struct quayi_fired *fired;          /* nnodes entries of scratch */
};

int quayi_wheel_init(struct quayi_wheel *w, uint32_t nnodes, int64_t tick_ns, int64_t now);
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

/* Lease slot states (low two bits of quayi_lslot.state; gen above). */
#define QUAYI_L_FREE 0u
#define QUAYI_L_LEASED 1u
#define QUAYI_L_BUSY 2u        /* an extend, expiry check or browse holds it */

/* One lease slot, on its own cache line. state = gen << 2 | QUAYI_L_*. */
struct quayi_lslot {
	uint64_t state;
	int64_t deadline;          /* atomic (relaxed); written under BUSY or by the owner */
	int64_t enq;               /* atomic (relaxed): the message's enqueued_ns, for stats */
	quay_msg *msg;             /* written (atomic, relaxed) by the receiver that owns
	                              the FREE slot, published by L1 */
} QUAYI_ALIGNED(QUAY_CACHELINE);

enum quayi_qcounter {
	QC_SENT, QC_RECEIVED, QC_ACKED, QC_NACKED, QC_RETRIED, QC_LEASE_EXPIRED, QC_TTL_EXPIRED,
	QC_DEAD_LETTERED, QC_REDRIVEN, QC_DROPPED, QC_DEDUPLICATED, QC_RESTORED, QC_COUNT
};
enum quayi_qgauge { QG_READY, QG_DELAYED, QG_IN_FLIGHT, QG_OLDEST, QG_COUNT };

struct quayi_dedup_entry {
	uint64_t h1, h2;
	int64_t expires;           /* 0: empty */
};

struct quay_queue {
	/* Read-only after create. */
	uint64_t id;                      /* unique in the process: the lease's queue fence */
	char name[QUAY_QUEUE_NAME_MAX + 1];
	unsigned flags;
	unsigned levels;
	size_t capacity;
	size_t max_in_flight;
	int64_t visibility_ns, delay_ns, ttl_ns;
	int64_t bo_base, bo_max;
	double bo_factor;
	uint32_t max_attempts;
	int64_t dedup_window;
	quay_queue *dlq;
	quay_queue_failure_fn on_failure;
	quay_queue_dead_letter_fn on_dead_letter;
	void *hook_ctx;
	quay_queue_clock_fn clock;
	void *clock_ctx;
	uint64_t jitter_seed;
	quay_pq *ready;                   /* quay_msg pointers */
	quay_ring *free_slots;            /* free lease slot indexes */
	quay_ring *expiry;                /* (gen << 24 | slot) of every lease issued */
	struct quayi_lslot *slots;        /* max_in_flight */
	quay_stats *stats_owned;          /* private registry, or NULL */
	quay_counter *ctr[QC_COUNT];
	quay_gauge *gauge[QG_COUNT];
	quay_hist *h_first, *h_ack;

	/* Messages held (ready + delayed + in flight + in transit): bounds
	 * the queue, so that a failed delivery always has room to go back. */
	uint64_t held QUAYI_ALIGNED(QUAY_CACHELINE);

	/* Earliest time at which timer work may be due (INT64_MAX: none). */
	int64_t next_due QUAYI_ALIGNED(QUAY_CACHELINE);
	uint64_t rng_ctr;                 /* jitter draws */
	uint32_t closed;                  /* quay_queue_close(): C1 store, C2 loads */
	int64_t last_recv_enq;            /* enqueued_ns of the last received message */

	/* Timer state: everything below under tlock. */
	pthread_mutex_t tlock QUAYI_ALIGNED(QUAY_CACHELINE);
	struct quayi_wheel wheel;         /* nodes [0, max_in_flight) are the lease slots' */
	uint32_t *node_free;              /* stack of free message nodes */
	uint32_t node_free_n;
	uint64_t delayed;                 /* atomic for stats readers; written under tlock */

	pthread_mutex_t dlock;            /* dedup table */
	struct quayi_dedup_entry *dedup;
	size_t dedup_sets;                /* of 8 ways each, a power of two; an id
	                                     lives in one of DEDUP_PROBE (queue.c)
	                                     sets from its home set on */

	pthread_mutex_t block;            /* one browse at a time */
	quay_msg **browse_buf;
	unsigned *browse_prio;

	struct quayi_dur *dur;            /* durability (src/queue_durable.c), or NULL */
	struct quayi_qx *x;               /* rate limit, alarms, content dedup, FIFO
	                                     (src/queue_x.h); made at create */
};

/*
 * Recovery entry point for the durability layer: put msg (the caller's
 * reference is taken) back into q with the given attempts and not-before
 * time, as ready (not_before_ns <= now) or delayed. It is not a send: no
 * dedup check, no default delay or TTL, `sent` is not counted (`restored`
 * is). A priority at or above q's levels is served at the last level
 * (never an error). Returns 0, or -EAGAIN if q is full, -EINVAL on bad
 * arguments.
 */
int quayi_queue_restore(quay_queue *q, quay_msg *msg, uint32_t attempts, int64_t not_before_ns);

/* Forget a dedup id remembered by a send that then failed (durable
 * queues: the log refused the message). */
void quayi_queue_dedup_forget(quay_queue *q, const quay_msg *msg);

/* ---- durability (src/queue_durable.c; docs/DURABILITY.md) ------------ */

/* Record types of the durable queue in the WAL (caller types). */
#define QUAYI_DQ_ADD 0x51440001u      /* a message enters a queue (full image) */
#define QUAYI_DQ_DEL 0x51440002u      /* a message leaves a queue */
#define QUAYI_DQ_RETRY 0x51440003u    /* a failed delivery: attempts and not-before */

/* ADD origins (flags bits 1..3) and DEL reasons. */
enum { QUAYI_DQ_O_SEND = 0, QUAYI_DQ_O_DEAD = 1, QUAYI_DQ_O_REDRIVE = 2, QUAYI_DQ_O_COPY = 3 };
enum { QUAYI_DQ_ACK = 1, QUAYI_DQ_DROP = 2, QUAYI_DQ_DEAD = 3, QUAYI_DQ_DEAD_DROP = 4, QUAYI_DQ_REDRIVE = 5 };

/* Fixed part of an ADD record; DEL is 24 bytes, RETRY 32. */
#define QUAYI_DQ_ADD_HDR 72u

/*
 * The durable identity of a message held by a durable queue: the LSN of
 * the record that first logged it (its send), kept in the envelope's
 * first reserved word (msg.h leaves five for layers). 0: not held by a
 * durable queue. Written only by the durable queue that holds it.
 */
static inline uint64_t
quayi_msg_did(const quay_msg *m)
{
	/* Relaxed: written by the one queue that holds the message, before
	 * it hands the message over (the hand-over orders it). */
	return __atomic_load_n(&m->reserved[0], __ATOMIC_RELAXED);
}

static inline void
quayi_msg_set_did(quay_msg *m, uint64_t did)
{
	/* Relaxed: as quayi_msg_did. */
	__atomic_store_n(&m->reserved[0], did, __ATOMIC_RELAXED);
}

/* The durable id of a message whose send to a durable queue is in
 * progress (claimed, not yet logged). Never an LSN. */
#define QUAYI_DID_PENDING UINT64_MAX

/*
 * Claim msg for a send to a durable queue: did 0 -> QUAYI_DID_PENDING in
 * one step, so that two sends of the same message (the same pointer twice
 * in a batch, or two threads sending a shared message to two durable
 * queues) cannot both pass the "not held by a durable queue" check.
 * false: it is held (or being sent) already. The sender then sets the
 * real id once the log took the message, or 0 again if it did not.
 */
static inline bool
quayi_msg_claim_did(quay_msg *m)
{
	uint64_t zero = 0;

	/* Relaxed (success and failure): the CAS is the whole decision;
	 * the message's contents are published by the queue hand-over. */
	return __atomic_compare_exchange_n(&m->reserved[0], &zero, QUAYI_DID_PENDING, false,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* Create: validate the WAL options, replay the log, restore this queue's
 * live messages. 0 or a negative errno (the queue is then freed). */
int quayi_dur_attach(quay_queue *q, const quay_queue_opts *o);
/* Destroy: leave the WAL (its records stay). */
void quayi_dur_detach(quay_queue *q);
/* Log n sends as ADD records (one appendv per chunk, one sync each) and
 * index them. Returns how many (a prefix) were logged; *err the error of
 * the first that was not. */
size_t quayi_dur_send(quay_queue *q, quay_msg *const *msgs, size_t n, int *err);
/* Log that msg left q (why: QUAYI_DQ_*) and unindex it. 0 or the WAL's
 * error: then an ACK changed nothing, any other reason still unindexes
 * (the caller drops the message in memory; the log keeps it live). */
int quayi_dur_del(quay_queue *q, quay_msg *msg, unsigned why);
/* Log a failed delivery (attempts from msg, the retry's not-before). */
void quayi_dur_retry(quay_queue *q, quay_msg *msg, int64_t not_before);
/* Exclude compaction while a transition mutates a message and logs it
 * (a shared read lock; never held while taking a queue's timer lock). */
void quayi_dur_enter(quay_queue *q);
void quayi_dur_leave(quay_queue *q);
/* Between enter and leave: log the move of msg from `from` to `to` as one
 * batch (DEL + ADD) and move its index entry. 0 or the WAL's error (then
 * nothing changed). */
int quayi_dur_move_locked(quay_queue *from, quay_queue *to, quay_msg *msg, unsigned why);
/* msg was replaced by its copy (copy-on-write for DLQ headers). */
void quayi_dur_rebind(quay_queue *q, quay_msg *old, quay_msg *copy);
/* Compact the log if enough was appended since the last time. Called
 * with no queue lock held. */
void quayi_dur_maybe_compact(quay_queue *q);
/* true if a and b are both durable on the same WAL, or both in memory. */
bool quayi_dur_same_wal(const quay_queue *a, const quay_queue *b);

/* Figures of a durable queue and its WAL (tests, docs). */
struct quayi_dur_info {
	uint64_t live;             /* messages of this queue in the log's live set */
	uint64_t live_bytes;       /* bytes of the live set (all queues of the WAL) */
	uint64_t compactions;      /* compactions of the WAL done */
	uint64_t deferred;         /* compactions refused (records of queues not open) */
	uint64_t foreign_live;     /* live records of queues not open on this WAL */
	uint64_t log_errors;       /* transitions the log refused (in-memory state went on) */
};
int quayi_queue_durable_info(quay_queue *q, struct quayi_dur_info *out);
/* Compact now (tests): 0, -EAGAIN if deferred, or the WAL's error. */
int quayi_queue_compact(quay_queue *q);

#endif /* QUAY_QUEUE_INTERNAL_H */
