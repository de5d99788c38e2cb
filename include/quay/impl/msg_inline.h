/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/msg_inline.h
 * Layout of struct quay_msg and the bodies of its inline functions.
 * Included by quay/msg.h; do not include it directly.
 *
 * Buffer layout (one pool buffer per message):
 *
 *   0     struct quay_msg (the envelope, 128 bytes, 64-aligned)
 *   128   data area, capacity bytes:
 *           [0, body_len)                       the body
 *           [capacity - tail_used, capacity)    header records, newest
 *                                               first (lowest address)
 *   Record: u8 key_len, 3 zero bytes, u32 value_len (host order, read with
 *   memcpy: records are not aligned), key bytes, NUL, value bytes. The
 *   reply-to is the one record with key_len 0; its value ends with a NUL.
 *
 * Labelled ordering edges:
 *   MSG-U1 unref: the count goes 1 -> 0 either by an acq_rel CAS (shared) or
 *      after an acquire load that saw 1 (sole holder), so every other
 *      holder's writes, released by its own MSG-U1 decrement, happen-before
 *      the release of the buffer -> POOL-P1 (push, release) in src/pool.c ->
 *      POOL-P2 (pop, acquire) in the next allocator.
 *   MSG-F1 ref: relaxed; the caller already holds a reference, so the message
 *      cannot be freed meanwhile (Boost/Linux kref reasoning).
 */
#ifndef QUAY_IMPL_MSG_INLINE_H
#define QUAY_IMPL_MSG_INLINE_H

#if !defined(QUAY_MSG_H)
#error "include <quay/msg.h>, not quay/impl/msg_inline.h"
#endif

/*
 * The envelope. Transparent only so that the getters inline into the
 * caller: read-only for users; its layout is part of the ABI (pinned by
 * static asserts in src/msg.c). Fields that holders may read while
 * another sets them are accessed with the __atomic builtins (this header
 * must also compile as C++, where <stdatomic.h> is not available).
 */
struct quay_msg {
	uint64_t id;             /* immutable after creation */
	uint32_t refcount;       /* atomic */
	uint32_t attempts;       /* atomic (relaxed: a single word) */
	uint32_t body_len;       /* sole holder writes */
	uint32_t capacity;       /* data bytes; immutable */
	uint32_t tail_used;      /* bytes of header records; sole holder writes */
	uint8_t priority;        /* atomic (relaxed) */
	uint8_t nheaders;        /* records with key_len > 0 */
	uint8_t cls;             /* pool class; immutable */
	uint8_t has_reply_to;    /* a key_len 0 record exists */
	uint64_t correlation_id; /* atomic (relaxed) */
	int64_t created_ns;      /* atomic (relaxed) */
	int64_t enqueued_ns;     /* atomic (relaxed) */
	int64_t not_before_ns;   /* atomic (relaxed) */
	int64_t expires_ns;      /* atomic (relaxed) */
	struct quay_pool *pool;  /* immutable */
	uint32_t index;          /* buffer index within its class; immutable */
	uint32_t reserved0;
	uint64_t reserved[5]; /* for quay's layers, zeroed at allocation and
	                             not copied by quay_msg_clone: [0] the durable
	                             queue's id (src/queue_internal.h) */
} __attribute__((aligned(64)));

/* Out-of-line slow paths (src/msg.c, src/pool.c). */

/* The count reached 0: give the buffer back to its pool (src/pool.c). */
QUAY_API void quayi_msg_release(quay_msg *msg);

/* Ref or unref of a message whose count is 0: aborts with a message when
 * libquay is built without NDEBUG, else returns -EINVAL (src/msg.c). */
QUAY_API int quayi_msg_misuse(const quay_msg *msg, const char *what);


static inline unsigned char *
quayi_msg_data(const quay_msg *msg)
{
	return (unsigned char *)(uintptr_t)(msg + 1);
}

QUAY_INLINE int
quay_msg_ref(quay_msg *msg)
{
	uint32_t c;

	if (__builtin_expect(msg == NULL, 0))
		return -EINVAL;
	/* MSG-F1: relaxed; the CAS validates the value. */
	c = __atomic_load_n(&msg->refcount, __ATOMIC_RELAXED);
	do {
		if (__builtin_expect(c == 0, 0))
			return quayi_msg_misuse(msg, "quay_msg_ref");
		if (__builtin_expect(c == UINT32_MAX, 0))
			return -EINVAL;
		/* MSG-F1: relaxed; we hold a reference, nothing to publish. */
	} while (!__atomic_compare_exchange_n(&msg->refcount, &c, c + 1, true, __ATOMIC_RELAXED,
	    __ATOMIC_RELAXED));
	return 0;
}

QUAY_INLINE int
quay_msg_unref(quay_msg *msg)
{
	uint32_t c;

	if (__builtin_expect(msg == NULL, 0))
		return -EINVAL;
	/* MSG-U1: acquire; pairs with the release CAS of other holders' unrefs:
	 * if we see 1, they are all done with the message. */
	c = __atomic_load_n(&msg->refcount, __ATOMIC_ACQUIRE);
	if (c == 1) {
		/* Sole holder: nobody else may touch the count (a racing ref or
		 * unref would be a use after free), so no locked instruction.
		 * Relaxed: the pool's POOL-P1 push publishes the free. */
		__atomic_store_n(&msg->refcount, 0, __ATOMIC_RELAXED);
		quayi_msg_release(msg);
		return 0;
	}
	do {
		if (__builtin_expect(c == 0, 0))
			return quayi_msg_misuse(msg, "quay_msg_unref");
		/* MSG-U1: acq_rel; release publishes our use of the message to the
		 * holder that frees it, acquire (when we free) takes theirs. */
	} while (!__atomic_compare_exchange_n(&msg->refcount, &c, c - 1, true, __ATOMIC_ACQ_REL,
	    __ATOMIC_ACQUIRE));
	if (c == 1)
		quayi_msg_release(msg);
	return 0;
}

QUAY_INLINE uint32_t
quay_msg_refcount(const quay_msg *msg)
{
	/* Relaxed: a snapshot for diagnostics. */
	return msg ? __atomic_load_n(&msg->refcount, __ATOMIC_RELAXED) : 0;
}

QUAY_INLINE uint64_t
quay_msg_id(const quay_msg *msg)
{
	return msg ? msg->id : 0;
}

/* The scalar getters below are relaxed: each field is one word that a
 * holder may set while others read (see "Mutation" in quay/msg.h); the
 * value read is the old or the new one, nothing else is published. */

QUAY_INLINE unsigned
quay_msg_priority(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->priority, __ATOMIC_RELAXED) : 0u;
}

QUAY_INLINE uint32_t
quay_msg_attempts(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->attempts, __ATOMIC_RELAXED) : 0u;
}

QUAY_INLINE int64_t
quay_msg_created_ns(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->created_ns, __ATOMIC_RELAXED) : 0;
}

QUAY_INLINE int64_t
quay_msg_enqueued_ns(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->enqueued_ns, __ATOMIC_RELAXED) : 0;
}

QUAY_INLINE int64_t
quay_msg_not_before_ns(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->not_before_ns, __ATOMIC_RELAXED) : 0;
}

QUAY_INLINE int64_t
quay_msg_expires_ns(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->expires_ns, __ATOMIC_RELAXED) : 0;
}

QUAY_INLINE uint64_t
quay_msg_correlation_id(const quay_msg *msg)
{
	return msg ? __atomic_load_n(&msg->correlation_id, __ATOMIC_RELAXED) : 0;
}

QUAY_INLINE const void *
quay_msg_body(const quay_msg *msg)
{
	return msg ? (const void *)quayi_msg_data(msg) : NULL;
}

QUAY_INLINE size_t
quay_msg_body_len(const quay_msg *msg)
{
	return msg ? msg->body_len : 0;
}

QUAY_INLINE void *
quay_msg_body_mut(quay_msg *msg)
{
	return msg ? (void *)quayi_msg_data(msg) : NULL;
}

QUAY_INLINE size_t
quay_msg_capacity(const quay_msg *msg)
{
	return msg ? msg->capacity : 0;
}

QUAY_INLINE size_t
quay_msg_room(const quay_msg *msg)
{
	return msg ? (size_t)msg->capacity - msg->body_len - msg->tail_used : 0;
}

QUAY_INLINE size_t
quay_msg_footprint(const quay_msg *msg)
{
	return msg ? (size_t)QUAY_MSG_ENVELOPE + msg->capacity : 0;
}

QUAY_INLINE quay_pool *
quay_msg_pool(const quay_msg *msg)
{
	return msg ? msg->pool : NULL;
}

QUAY_INLINE unsigned
quay_msg_header_count(const quay_msg *msg)
{
	return msg ? msg->nheaders : 0u;
}

/* Setters: relaxed stores, see the getters. */

QUAY_INLINE int
quay_msg_set_priority(quay_msg *msg, unsigned prio)
{
	if (msg == NULL || prio > QUAY_MSG_PRIORITY_MAX)
		return -EINVAL;
	__atomic_store_n(&msg->priority, (uint8_t)prio, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_msg_set_attempts(quay_msg *msg, uint32_t attempts)
{
	if (msg == NULL)
		return -EINVAL;
	__atomic_store_n(&msg->attempts, attempts, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_msg_set_created_ns(quay_msg *msg, int64_t ns)
{
	if (msg == NULL || ns < 0)
		return -EINVAL;
	__atomic_store_n(&msg->created_ns, ns, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_msg_set_enqueued_ns(quay_msg *msg, int64_t ns)
{
	if (msg == NULL || ns < 0)
		return -EINVAL;
	__atomic_store_n(&msg->enqueued_ns, ns, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_msg_set_not_before_ns(quay_msg *msg, int64_t ns)
{
	if (msg == NULL || ns < 0)
		return -EINVAL;
	__atomic_store_n(&msg->not_before_ns, ns, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_msg_set_expires_ns(quay_msg *msg, int64_t ns)
{
	if (msg == NULL || ns < 0)
		return -EINVAL;
	__atomic_store_n(&msg->expires_ns, ns, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_msg_set_correlation_id(quay_msg *msg, uint64_t id)
{
	if (msg == NULL)
		return -EINVAL;
	__atomic_store_n(&msg->correlation_id, id, __ATOMIC_RELAXED);
	return 0;
}

#endif /* QUAY_IMPL_MSG_INLINE_H */
