/* SPDX-License-Identifier: MIT */
/*
 * The multi-queue send (issue 12, durable routing): one message sent to
 * several queues at once, so that the queues that log to the same WAL
 * (one log domain, quayi_qlog_same) take it with ONE log write, all of
 * them or none. The bus routes the bound queues of one publish through
 * it (src/bus.c). Never installed.
 *
 * A send is split in two: quayi_queue_send_begin runs the queue's
 * admission for its copy (valid, not closed, room, the dedup window,
 * the log's claim: send_check in src/queue.c) and stamps it;
 * quayi_queue_send_commit then logs every admitted send of a domain in
 * one write (the log's add_multi) and accepts each (tr_accept's second
 * half), or, if that write failed, rolls every admission of the domain
 * back (stamp undone, room and dedup id given back, claim given back):
 * the message is then in none of them. Queues in memory, and each other
 * domain, are committed on their own.
 */
#ifndef QUAY_QUEUE_ROUTE_H
#define QUAY_QUEUE_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include <quay/msg.h>
#include <quay/queue.h>

/* One send between begin and commit; opaque to the caller except rc. */
struct quayi_qsend {
	quay_queue *q;
	quay_msg *orig; /* the message the caller handed over */
	quay_msg *msg;  /* what goes in: orig, or send_check's copy */
	int64_t now;
	int64_t enq, nb, exp; /* the stamp to undo */
	uint32_t att;
	int rc;                /* after commit: 0 (accepted) or the log's error */
	unsigned char pending; /* admitted, not yet committed */
};

/*
 * Admit msg (the caller's reference) to q. 0: admitted, s pending (the
 * queue holds room for it; commit decides); QUAY_QUEUE_DUPLICATE: the
 * dedup window took the reference (done, s not pending); a negative
 * errno (-EINVAL, -EPIPE closed, -EAGAIN full, -ENOMEM): nothing kept,
 * the reference is still the caller's.
 */
int quayi_queue_send_begin(quay_queue *q, quay_msg *msg, struct quayi_qsend *s);

/*
 * Commit the pending sends of s[0..n) (others are skipped): one log
 * write per domain, all or none within it. Each pending s[i] gets rc:
 * 0, the queue took the caller's reference; else the log's error, the
 * reference is the caller's again and the queue is as before begin.
 * At most QUAYI_QSEND_MAX sends (more: every pending one gets -E2BIG and
 * is rolled back).
 */
void quayi_queue_send_commit(struct quayi_qsend *s, size_t n);

#define QUAYI_QSEND_MAX 256u

/* src/queue.c, for commit: settle one pending send after its domain's
 * write (err 0: accept it; else roll its admission back). */
void quayi_queue_send_end(struct quayi_qsend *s, int err);

/*
 * Send msgs[i] to qs[i] for i < n (each a reference of the caller's):
 * begin each, then commit. rcs[i]: 0, QUAY_QUEUE_DUPLICATE or a
 * negative errno as quay_queue_send's. Returns how many were taken (0
 * or QUAY_QUEUE_DUPLICATE), or -EINVAL (NULLs, n == 0 or > QUAYI_QSEND_MAX).
 */
int quayi_queue_send_multi(quay_queue **qs, quay_msg **msgs, size_t n, int *rcs);

#endif /* QUAY_QUEUE_ROUTE_H */
