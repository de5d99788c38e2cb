/* SPDX-License-Identifier: MIT */
/*
 * The message module's private calls for the library's other layers
 * (never installed): taking and dropping k references at once, for a
 * layer that hands one message to many holders (the bus's fan-out).
 *
 * Same protocol and edges as quay_msg_ref() / quay_msg_unref() in
 * include/quay/impl/msg_inline.h (MSG-F1, MSG-U1), in one atomic step
 * instead of k, and the same misuse check: a count of 0 (a freed
 * message) aborts in a debug libquay and is -EINVAL with NDEBUG
 * (quayi_msg_misuse), changing nothing.
 *
 * Header-only so that a publish inlines them; they are not part of the
 * public API.
 */
#ifndef QUAYI_MSG_INTERNAL_H
#define QUAYI_MSG_INTERNAL_H

#include <stdint.h>

#include <quay/msg.h>

/*
 * Add k references to msg, whose caller holds one (so it cannot be freed
 * meanwhile). k == 0 does nothing.
 * Ordering: none (MSG-F1: relaxed; nothing is published by a ref); the
 * sole-holder path loads with acquire (MSG-U1, see there).
 * Returns: 0; -EINVAL for a NULL msg or if the count would pass
 * UINT32_MAX (nothing added); a count of 0 is misuse (see above).
 */
static inline int
quayi_msg_ref_n(quay_msg *msg, uint32_t k)
{
	uint32_t c;

	if (msg == NULL)
		return -EINVAL;
	if (k == 0)
		return 0;
	/* MSG-U1: acquire, as quay_msg_unref()'s sole-holder load: if we see
	 * 1 the reference is the caller's only, the other holders are done
	 * (their release decrements happen-before the plain store below, so
	 * the holder that frees after ours still synchronises with them),
	 * and nobody else may touch the count: no locked instruction (a
	 * fresh message published to several targets). */
	c = __atomic_load_n(&msg->refcount, __ATOMIC_ACQUIRE);
	if (c == 1 && k < UINT32_MAX) {
		/* MSG-F1: relaxed; handing the message on publishes the count. */
		__atomic_store_n(&msg->refcount, 1 + k, __ATOMIC_RELAXED);
		return 0;
	}
	do {
		if (__builtin_expect(c == 0, 0))
			return quayi_msg_misuse(msg, "quayi_msg_ref_n");
		if (__builtin_expect(c > UINT32_MAX - k, 0))
			return -EINVAL;
		/* MSG-F1: relaxed; we hold a reference, nothing to publish. */
	} while (!__atomic_compare_exchange_n(&msg->refcount, &c, c + k, true, __ATOMIC_RELAXED,
	    __ATOMIC_RELAXED));
	return 0;
}

/*
 * Drop k references of msg that the caller holds; if they were the last,
 * the buffer goes back to its pool (msg must not be used after). k == 0
 * does nothing.
 * Ordering: MSG-U1, as quay_msg_unref(): release of our use of the
 * message to whoever frees it, acquire of the others' when we free.
 * Returns: 0; -EINVAL for a NULL msg; a count below k is misuse (see
 * above; with NDEBUG -EINVAL and the count is left as it was).
 */
static inline int
quayi_msg_unref_n(quay_msg *msg, uint32_t k)
{
	uint32_t c;

	if (msg == NULL)
		return -EINVAL;
	if (k == 0)
		return 0;
	/* MSG-U1: acquire; pairs with the release CAS of other holders'
	 * unrefs: if we see k, the other holders are all done. */
	c = __atomic_load_n(&msg->refcount, __ATOMIC_ACQUIRE);
	if (c == k) {
		/* Every reference is ours: nobody else may touch the count (a
		 * racing ref or unref would be a use after free), so no locked
		 * instruction. Relaxed: the pool's POOL-P1 push publishes the
		 * free. */
		__atomic_store_n(&msg->refcount, 0, __ATOMIC_RELAXED);
		quayi_msg_release(msg);
		return 0;
	}
	do {
		if (__builtin_expect(c < k, 0))
			return quayi_msg_misuse(msg, "quayi_msg_unref_n");
		/* MSG-U1: acq_rel; release publishes our use of the message to
		 * the holder that frees it, acquire (when we free) takes theirs. */
	} while (!__atomic_compare_exchange_n(&msg->refcount, &c, c - k, true, __ATOMIC_ACQ_REL,
	    __ATOMIC_ACQUIRE));
	if (c == k)
		quayi_msg_release(msg);
	return 0;
}

#endif /* QUAYI_MSG_INTERNAL_H */
