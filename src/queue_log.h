/* SPDX-License-Identifier: MIT */
/*
 * The queue's log: the narrow interface through which a queue
 * (src/queue.c) tells a log of its transitions what happened, and the
 * only thing the two sides share. Never installed.
 *
 * A queue in memory has no log (ops == NULL): every call below is then
 * a no-op that succeeds, decided here, in one place, so the queue's
 * logic never asks whether it is durable. A durable queue
 * (src/queue_durable.c, docs/DURABILITY.md) gets its log at create
 * (quayi_qlog_attach_wal); the log never reads the queue: what it needs
 * (name, capacity, a restore callback, the dedup window's callbacks) is
 * handed over at attach.
 *
 * Who calls what (each transition of src/queue.c logs in one place):
 *   claim         send_check (send, send_batch): may this log take msg?
 *                 (no: the queue sends a copy)
 *   add           tr_accept (send, send_batch): ADD, one write per batch
 *   add_multi     quayi_queue_send_commit (the bus's bound queues of one
 *                 publish): one ADD per queue of the domain, one write
 *   del           tr_ack (ACK), tr_drop (DROP), tr_dead_letter without a
 *                 DLQ (DEAD_DROP): DEL
 *   retry         tr_retry: RETRY (attempts and not-before)
 *   deliver       tr_lease (receive; a receive_batch once for the batch,
 *                 after its leases), tr_release: RETRY (attempts, ready),
 *                 before the lease reaches its holder; nothing with
 *                 QUAY_QUEUE_NO_DELIVERY_LOG
 *   begin/move/end  tr_dead_letter (DEAD), tr_redrive (REDRIVE): one
 *                 batch DEL + ADD; rebind when dead-lettering copies a
 *                 shared message
 *   idle          at the end of a public call that may have logged, with
 *                 no queue lock held (compaction)
 *   detach        destroy
 * Not logged: a delayed message becoming ready (tr_due).
 *
 * Locking: add, del, retry, move and rebind may be called with the
 * queue's timer lock held; idle, attach and detach never are.
 */
#ifndef QUAY_QUEUE_LOG_H
#define QUAY_QUEUE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/msg.h>
#include <quay/queue.h>

/* Why a message leaves a queue (del, move). The values are those of the
 * durable DEL record (queue_durable_format.h checks it). */
enum quayi_qlog_why {
	QUAYI_QLOG_ACK = 1,       /* acknowledged */
	QUAYI_QLOG_DROP = 2,      /* dropped by the failure policy */
	QUAYI_QLOG_DEAD = 3,      /* moved to the DLQ */
	QUAYI_QLOG_DEAD_DROP = 4, /* dead letter dropped for want of a DLQ */
	QUAYI_QLOG_REDRIVE = 5,   /* moved out of a DLQ by redrive */
};

struct quayi_qlog_ops {
	/* A send may hand msg to this log: false if another log holds it
	 * (or is taking it). A true claim is given back by add if add does
	 * not log the message. */
	bool (*claim)(void *ctx, quay_msg *msg);
	/* Log n claimed sends (stamped) in as few writes as the log can;
	 * returns how many, a prefix, were logged; *err the error of the
	 * first that was not. */
	size_t (*add)(void *ctx, quay_msg *const *msgs, size_t n, int *err);
	/* Log one claimed send (stamped) into each of n queues of this
	 * log's domain, msgs[i] into the queue whose log ctx is ctxs[i], as
	 * ONE write (src/queue_route.c): all or none. 0, or the log's error
	 * and nothing logged (every claim given back). */
	int (*add_multi)(void *const *ctxs, quay_msg *const *msgs, size_t n);
	/* msg leaves the queue. 0 or the log's error: an ACK it refused
	 * changed nothing (the queue keeps the message); any other reason
	 * goes on in memory (the log keeps the message live: after a
	 * restart it comes back, never lost). */
	int (*del)(void *ctx, quay_msg *msg, enum quayi_qlog_why why);
	/* A failed delivery: msg's attempts and the retry's not-before (0:
	 * ready at once). A refusal keeps the older figures in the log. */
	void (*retry)(void *ctx, quay_msg *msg, int64_t not_before);
	/* Deliveries about to be handed out (or handed back): each lease's
	 * msg has now been delivered lease.attempt times. Called before the
	 * leases reach the caller, once per receive or receive_batch (one
	 * write). A refusal keeps the older count in the log. true if it
	 * wrote (slow work: the caller reads its clock again for the
	 * leases' deadlines). */
	bool (*deliver)(void *ctx, const quay_lease *leases, size_t n);
	/* Bracket of a transition that changes a logged message and then
	 * logs it (move): the log's own readers never see it half done. */
	void (*begin)(void *ctx);
	void (*end)(void *ctx);
	/* Between begin and end: msg moves from this log's queue to `to`'s
	 * (same domain) as one write. 0 or the log's error (then nothing
	 * changed). */
	int (*move)(void *ctx, void *to, quay_msg *msg, enum quayi_qlog_why why);
	/* msg was replaced by copy (copy-on-write of a shared message). */
	void (*rebind)(void *ctx, quay_msg *old, quay_msg *copy);
	/* Housekeeping (compaction), no queue lock held. */
	void (*idle)(void *ctx);
	/* The queue goes away (its records stay in the log). */
	void (*detach)(void *ctx);
};

struct quayi_qlog {
	const struct quayi_qlog_ops *ops; /* NULL: in memory, nothing logged */
	void *ctx;
	/* Queues whose messages may move between them (DLQ, redrive) share
	 * a domain: the same log file, or NULL for all queues in memory. */
	const void *domain;
};

/* A key of a queue's dedup window: what it remembers of an accepted send
 * (src/queue_dedup_log.c; persisted as the DEDUP record's kind and key). */
struct quayi_qlog_dkey {
	uint64_t h1, h2; /* XXH3-128: low, high 64 bits */
	unsigned kind;   /* QUAYI_QLOG_DK_ID or QUAYI_QLOG_DK_CONTENT */
};
#define QUAYI_QLOG_DK_ID 1u      /* of a quay-dedup-id header's value */
#define QUAYI_QLOG_DK_CONTENT 2u /* of body and group (QUAY_QUEUE_CONTENT_DEDUP) */

/* What a log gets from its queue at attach. */
struct quayi_qlog_host {
	const char *name;             /* the queue's name (stable for its life) */
	size_t capacity;              /* messages the queue can hold */
	const struct quayi_qlog *dlq; /* the DLQ's log, or NULL: no DLQ */
	/* Put msg (its reference is taken) back into the queue with the
	 * given attempts and not-before, as ready or delayed: not a send (no
	 * dedup, defaults or `sent`; counts `restored`). 0, -EAGAIN (full),
	 * -EINVAL. */
	int (*restore)(void *queue, quay_msg *msg, uint32_t attempts, int64_t not_before_ns);
	void *queue;
	/* The dedup window (src/queue_dedup_log.c); all NULL / 0 without
	 * one. The times are the queue's clock (CLOCK_REALTIME unless the
	 * queue was given a clock). */
	int64_t dedup_window; /* ns; 0: no window, nothing to keep */
	/* The key msg's send to this queue was checked under: false if none
	 * (no dedup id, and no content dedup). */
	bool (*dedup_key)(void *queue, const quay_msg *msg, struct quayi_qlog_dkey *k);
	/* Recovery: k was accepted at accepted_ns; remember it for the rest
	 * of its window (nothing if that has passed). msg: its message if it
	 * came back with the queue (content dedup then compares bodies),
	 * else NULL. */
	void (*dedup_seed)(void *queue, const struct quayi_qlog_dkey *k, int64_t accepted_ns, quay_msg *msg);
	/* The send checked under k was logged (called under the log's lock,
	 * before a compaction can run): from now on dedup_walk visits k. */
	void (*dedup_commit)(void *queue, const struct quayi_qlog_dkey *k);
	/* Compaction: visit every key the window holds now with its accept
	 * time, except those of sends not yet logged (under the window's
	 * locks: visit must not call the queue). */
	void (*dedup_walk)(void *queue,
	    void (*visit)(void *vctx, const struct quayi_qlog_dkey *k, int64_t accepted_ns), void *vctx);
};

/* Attach a log on opts->wal (src/queue_durable.c). 0, or a negative
 * errno and *log left as it was (in memory). */
int quayi_qlog_attach_wal(struct quayi_qlog *log, const struct quayi_qlog_host *host,
    const struct quay_queue_opts *opts);

/* The log of q (tests, and the durable module's test hooks below). */
const struct quayi_qlog *quayi_queue_log(const quay_queue *q);

/* Figures of a durable queue and its WAL (tests, docs). */
struct quayi_dur_info {
	uint64_t live;         /* messages of this queue in the log's live set */
	uint64_t live_bytes;   /* bytes of the live set (all queues of the WAL) */
	uint64_t compactions;  /* compactions of the WAL done */
	uint64_t deferred;     /* compactions refused (records of queues not open) */
	uint64_t foreign_live; /* live records of queues not open on this WAL */
	uint64_t log_errors;   /* transitions the log refused (in-memory state went on) */
};
/* -EINVAL unless q is durable. */
int quayi_queue_durable_info(quay_queue *q, struct quayi_dur_info *out);
/* Compact now (tests): 0, -EAGAIN if deferred, or the WAL's error. */
int quayi_queue_compact(quay_queue *q);

/* ---- the calls the queue makes (no-ops without a log) ---------------- */

static inline bool
quayi_qlog_claim(const struct quayi_qlog *l, quay_msg *msg)
{
	return l->ops == NULL || l->ops->claim(l->ctx, msg);
}

/* How many sends of a batch of n to check and log at once: a log wants
 * the batch whole (one write, one sync); without one, one at a time (no
 * scratch to allocate). */
static inline size_t
quayi_qlog_chunk(const struct quayi_qlog *l, size_t n)
{
	return l->ops == NULL ? 1 : n;
}

static inline size_t
quayi_qlog_add(const struct quayi_qlog *l, quay_msg *const *msgs, size_t n, int *err)
{
	*err = 0;
	return l->ops == NULL ? n : l->ops->add(l->ctx, msgs, n, err);
}

/* ctxs: the logs' ctx of n queues sharing l's domain (l among them). */
static inline int
quayi_qlog_add_multi(const struct quayi_qlog *l, void *const *ctxs, quay_msg *const *msgs, size_t n)
{
	return l->ops == NULL ? 0 : l->ops->add_multi(ctxs, msgs, n);
}

static inline int
quayi_qlog_del(const struct quayi_qlog *l, quay_msg *msg, enum quayi_qlog_why why)
{
	return l->ops == NULL ? 0 : l->ops->del(l->ctx, msg, why);
}

static inline void
quayi_qlog_retry(const struct quayi_qlog *l, quay_msg *msg, int64_t not_before)
{
	if (l->ops != NULL)
		l->ops->retry(l->ctx, msg, not_before);
}

static inline bool
quayi_qlog_deliver(const struct quayi_qlog *l, const quay_lease *leases, size_t n)
{
	return l->ops != NULL && l->ops->deliver(l->ctx, leases, n);
}

static inline void
quayi_qlog_begin(const struct quayi_qlog *l)
{
	if (l->ops != NULL)
		l->ops->begin(l->ctx);
}

static inline void
quayi_qlog_end(const struct quayi_qlog *l)
{
	if (l->ops != NULL)
		l->ops->end(l->ctx);
}

/* from and to share a domain (quayi_qlog_same). */
static inline int
quayi_qlog_move(const struct quayi_qlog *from, const struct quayi_qlog *to, quay_msg *msg,
    enum quayi_qlog_why why)
{
	return from->ops == NULL ? 0 : from->ops->move(from->ctx, to->ctx, msg, why);
}

static inline void
quayi_qlog_rebind(const struct quayi_qlog *l, quay_msg *old, quay_msg *copy)
{
	if (l->ops != NULL)
		l->ops->rebind(l->ctx, old, copy);
}

static inline void
quayi_qlog_idle(const struct quayi_qlog *l)
{
	if (l->ops != NULL)
		l->ops->idle(l->ctx);
}

static inline void
quayi_qlog_detach(struct quayi_qlog *l)
{
	if (l->ops != NULL)
		l->ops->detach(l->ctx);
	l->ops = NULL;
	l->ctx = NULL;
	l->domain = NULL;
}

/* May messages move between a and b (one log write, or both in memory)? */
static inline bool
quayi_qlog_same(const struct quayi_qlog *a, const struct quayi_qlog *b)
{
	return a->domain == b->domain;
}

#endif /* QUAY_QUEUE_LOG_H */
