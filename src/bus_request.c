/* SPDX-License-Identifier: MIT */
/*
 * Request/reply on the bus (moved out of bus.c, issue 10).
 *
 * Each waiting request owns a slot of bus->reqs; its inbox subject is
 * "_INBOX.<bus id>.<n>" with n % nreq its slot. The slot word state is
 * 0 (free), n (waiting), n|BUSY (a reply is being stored), n|DONE
 * (stored). BUS-Q1 the replier's CAS n -> n|BUSY (acq_rel) makes it the
 * only one to store; BUS-Q2 its store-release of n|DONE -> BUS-Q3 the
 * requester's load-acquire, which then reads the reply. A requester that
 * times out takes its slot back with a CAS n -> 0, which fails only if a
 * reply is being stored (it then waits for DONE and returns the reply).
 * Publishing on an inbox of this bus is routed here by publish, never
 * through the trie.
 */
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "bus_internal.h"

/* The reply route: n is the number of an inbox of this bus. */
int
quayi_bus_route_reply(struct quay_bus *bus, uint64_t n, quay_msg *m)
{
	struct quayi_bus_req *q = &bus->reqs[n % bus->nreq];
	/* BUS-Q4: acquire; pairs with the requester's CAS that claimed the slot
	 * (req_id was written before the request was published). */
	uint64_t st = __atomic_load_n(&q->state, __ATOMIC_ACQUIRE);

	quay_counter_inc(bus->c_published);
	if (st == n && quay_msg_correlation_id(m) == __atomic_load_n(&q->req_id, __ATOMIC_RELAXED) &&
	    __atomic_compare_exchange_n(&q->state, &st, n | REQ_BUSY, false, __ATOMIC_ACQ_REL,
	        __ATOMIC_RELAXED)) { /* BUS-Q1 */
		/* Relaxed: BUS-Q2 below publishes it. */
		__atomic_store_n(&q->reply, m, __ATOMIC_RELAXED);
		/* BUS-Q2: release; pairs with BUS-Q3 in request(). */
		__atomic_store_n(&q->state, n | REQ_DONE, __ATOMIC_RELEASE);
		/* Release: the wake-up word; the requester re-reads state. */
		__atomic_store_n(&q->done, 1, __ATOMIC_RELEASE);
		quayi_futex_wake_all(&q->done);
		quay_counter_inc(bus->c_delivered);
		return 1;
	}
	quay_counter_inc(bus->c_late);
	(void)quay_msg_unref(m);
	return 0;
}

/* If subject is an inbox of this bus, its number in *n. */
bool
quayi_bus_is_inbox(const struct quay_bus *bus, const char *subject, uint32_t len, uint64_t *n)
{
	uint64_t v = 0;

	if (subject[0] != '_' || len <= bus->inbox_len || len - bus->inbox_len > 19 ||
	    memcmp(subject, bus->inbox, bus->inbox_len) != 0)
		return false;
	for (uint32_t i = (uint32_t)bus->inbox_len; i < len; i++) {
		if (subject[i] < '0' || subject[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(subject[i] - '0');
	}
	if (v == 0 || v > REQ_N_MASK)
		return false;
	*n = v;
	return true;
}

/* ---- request / reply ----------------------------------------------- */

QUAY_API int
quay_bus_request(quay_bus *bus, const char *subject, quay_msg *req, quay_msg **reply, int64_t timeout_ns)
{
	char inbox[64];
	struct quayi_bus_req *q = NULL;
	uint64_t n = 0, st;
	int64_t deadline;
	uint32_t len;
	uint64_t hash;
	int r;

	if (req == NULL)
		return -EINVAL;
	if (bus == NULL || subject == NULL || reply == NULL ||
	    quayi_bm_scan_subject(subject, &len, &hash) != 0) {
		(void)quay_msg_unref(req); /* consumed on every return */
		return -EINVAL;
	}
	/* BUS-D1/BUS-D2, seq_cst (a store-buffering pair with destroy's BUS-D3/BUS-D4):
	 * either destroy's wait for req_active == 0 sees this request, or
	 * this request sees closing and leaves. A request path costs
	 * microseconds; the two fences cost nothing next to it. */
	__atomic_fetch_add(&bus->req_active, 1, __ATOMIC_SEQ_CST);   /* BUS-D1 */
	if (__atomic_load_n(&bus->closing, __ATOMIC_SEQ_CST) != 0) { /* BUS-D2 */
		r = -EPIPE;
		(void)quay_msg_unref(req);
		goto out;
	}
	for (unsigned tries = 0; tries < bus->nreq && q == NULL; tries++) {
		uint64_t zero = 0;
		n = (__atomic_fetch_add(&bus->req_next, 1, __ATOMIC_RELAXED) % REQ_N_MASK) + 1;
		q = &bus->reqs[n % bus->nreq];
		/* Acquire on success: the previous owner's reset happened before. */
		if (!__atomic_compare_exchange_n(&q->state, &zero, n, false, __ATOMIC_ACQUIRE,
		        __ATOMIC_RELAXED))
			q = NULL;
	}
	if (q == NULL) {
		r = -ENOMEM;
		(void)quay_msg_unref(req);
		goto out;
	}
	snprintf(inbox, sizeof(inbox), "%s%llu", bus->inbox, (unsigned long long)n);
	r = quay_msg_set_reply_to(req, inbox);
	if (r != 0) {
		(void)quay_msg_unref(req);
		goto free_slot;
	}
	/* Relaxed: publishing the request (a queue's release) orders these
	 * before any reply to it. */
	__atomic_store_n(&q->req_id, quay_msg_id(req), __ATOMIC_RELAXED);
	__atomic_store_n(&q->done, 0, __ATOMIC_RELAXED);
	deadline = quayi_deadline(timeout_ns);
	r = quay_bus_publish(bus, subject, req);
	if (r < 0) {
		/* Refused (nothing published, the reference still ours), or
		 * destroy closed the bus meanwhile: consumed all the same. */
		(void)quay_msg_unref(req);
		goto free_slot;
	}
	if (r == 0) {
		r = -ENOENT;
		goto free_slot;
	}
	for (;;) {
		/* BUS-Q3: acquire; pairs with BUS-Q2 in route_reply(). */
		st = __atomic_load_n(&q->state, __ATOMIC_ACQUIRE);
		if (st == (n | REQ_DONE))
			break;
		if (st == n) {
			bool late = deadline >= 0 && quayi_mono_ns() >= deadline;
			/* Acquire: pairs with destroy's release store of closing. */
			bool closing = __atomic_load_n(&bus->closing, __ATOMIC_ACQUIRE) != 0;
			if (late || closing) {
				/* Take the slot back unless a reply is being stored. */
				if (__atomic_compare_exchange_n(&q->state, &st, 0, false, __ATOMIC_RELEASE,
				        __ATOMIC_ACQUIRE)) {
					r = closing ? -EPIPE : -ETIMEDOUT;
					goto out;
				}
				continue;
			}
			(void)quayi_futex_wait(&q->done, 0, deadline);
		} else {
			sched_yield(); /* BUSY: the replier is storing */
		}
	}
	*reply = __atomic_load_n(&q->reply, __ATOMIC_RELAXED); /* ordered by BUS-Q3 */
	__atomic_store_n(&q->reply, NULL, __ATOMIC_RELAXED);
	/* Release: the next owner's acquire CAS sees the slot reset. */
	__atomic_store_n(&q->state, 0, __ATOMIC_RELEASE);
	r = 0;
	goto out;
free_slot:
	__atomic_store_n(&q->state, 0, __ATOMIC_RELEASE);
out:
	/* Release; pairs with destroy's acquire wait for 0. */
	__atomic_fetch_sub(&bus->req_active, 1, __ATOMIC_RELEASE);
	return r;
}

QUAY_API int
quay_bus_reply(quay_bus *bus, const quay_msg *req, quay_msg *reply)
{
	const char *to;

	if (bus == NULL || req == NULL || reply == NULL)
		return -EINVAL;
	to = quay_msg_reply_to(req);
	if (to == NULL)
		return -EINVAL;
	(void)quay_msg_set_correlation_id(reply, quay_msg_id(req));
	return quay_bus_publish(bus, to, reply);
}
