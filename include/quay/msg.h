/* SPDX-License-Identifier: MIT */
/**
 * @file quay/msg.h
 * The message envelope every quay layer carries (docs/MESSAGES.md).
 *
 * A message is ONE buffer of a quay_pool (quay/pool.h): a 128-byte
 * envelope, then a data area of quay_msg_capacity() bytes that holds the
 * body at its start and the headers and reply-to packed at its end.
 * Making a message never calls malloc; a message larger than the pool's
 * largest class gets -EMSGSIZE.
 *
 * Fields:
 *   id              unique within the process, never 0. Ids are handed out
 *                   to each thread in blocks of QUAY_MSG_ID_BLOCK, so they
 *                   increase strictly in creation order WITHIN A THREAD;
 *                   between threads they are unique but not in time order.
 *   priority        0..255 (default 0; higher is more urgent).
 *   attempts        delivery attempts so far (default 0).
 *   created_ns      stamped by quay_msg_new()/alloc() with the pool's clock.
 *   enqueued_ns     set by the layer that enqueues it (default 0).
 *   not_before_ns   delay: not to be delivered before (0: no delay).
 *   expires_ns      TTL: not to be delivered after (0: never expires).
 *                   All times are CLOCK_REALTIME nanoseconds since the
 *                   Unix epoch (0 = unset): they must mean the same after
 *                   a restart (the WAL stores them) and to other programs.
 *   correlation_id  request/reply: a reply carries its request's id
 *                   (0: none).
 *   reply-to        request/reply: the subject to reply on (a string of
 *                   1..QUAY_MSG_REPLY_TO_MAX bytes, or none).
 *   headers         up to QUAY_MSG_HEADERS_MAX of key (a string of
 *                   1..QUAY_MSG_KEY_MAX bytes, case-sensitive, unique) ->
 *                   value (bytes, may be empty). Keys starting "quay-" are
 *                   reserved for quay's layers (QUAY_MSG_H_*).
 *   body            bytes, zero-length allowed.
 *
 * Space: the body, and every header (8 + key length + 1 + value length
 * bytes) and the reply-to (10 + its length bytes) share the data area;
 * quay_msg_room() says what is left. quay_msg_new() leaves the pool's
 * headroom (default QUAY_POOL_HEADROOM_DEFAULT: 8 headers of 32 bytes of
 * key + value) and a message may use all of its class's buffer, so often
 * more; quay_msg_new_ex() takes the caller's estimate instead. A header
 * or reply-to that does not fit gets -ENOSPC (header room), a body that
 * does not fit -EMSGSIZE (too large).
 *
 * Ownership: a new message has one reference, its creator's. Whoever
 * hands a message to another owner (a queue, each subscriber of a
 * fan-out) gives a reference; quay_msg_ref() makes another and each is
 * dropped by one quay_msg_unref(). The last unref gives the buffer back
 * to the pool. Unref past zero is a bug: a libquay built without NDEBUG
 * aborts with a message, a release build returns -EINVAL (see
 * quay_msg_unref()). Using a message after its last unref is undefined.
 *
 * Mutation: the body, headers and reply-to may change only while the
 * caller holds the only reference (they return -EINVAL on a shared
 * message). The scalar fields (priority, attempts, times, correlation id)
 * are single words: a setter may run while other holders read, and they
 * see the old or the new value. Two holders must not set the same field.
 *
 * Concurrency: any number of threads may read a message and ref/unref it
 * concurrently. Ordering: everything a thread did to a message before an
 * unref happens-before the buffer is reused (release on unref, acquire in
 * the pool); passing a message between threads through a ring or queue
 * orders the writes before the push with the reads after the pop.
 */
#ifndef QUAY_MSG_H
#define QUAY_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/err.h>
#include <quay/impl/compiler.h>
#include <quay/pool.h>

#ifdef __cplusplus
extern "C" {
#endif


/** Most headers a message may carry (reply-to not counted). */
#define QUAY_MSG_HEADERS_MAX 32u
/** Longest header key, in bytes. */
#define QUAY_MSG_KEY_MAX 255u
/** Longest reply-to subject, in bytes. */
#define QUAY_MSG_REPLY_TO_MAX 255u
/** Largest priority. */
#define QUAY_MSG_PRIORITY_MAX 255u
/** Ids each thread takes from the process-wide counter at a time. */
#define QUAY_MSG_ID_BLOCK 256u
/** Bytes of the envelope at the start of every buffer. */
#define QUAY_MSG_ENVELOPE 128u
/** Header room n headers take whose key and value together are kv bytes
 *  each (each record is 8 + key + 1 + value bytes); a reply-to of length
 *  L takes QUAY_MSG_HEADER_ROOM(1, L + 1). For quay_msg_new_ex(). */
#define QUAY_MSG_HEADER_ROOM(n, kv) ((size_t)(n) * ((size_t)(kv) + 9u))

/** Reserved header: deduplication id (queue). */
#define QUAY_MSG_H_DEDUP_ID "quay-dedup-id"
/** Reserved header: why a message was dead-lettered (queue). */
#define QUAY_MSG_H_DLQ_REASON "quay-dlq-reason"
/** Reserved header: the queue a dead-lettered message came from. */
#define QUAY_MSG_H_DLQ_SOURCE "quay-dlq-source"

/** A message. Layout in quay/impl/msg_inline.h: read-only for users. */
typedef struct quay_msg quay_msg;

/* ---- making messages -------------------------------------------- */

/**
 * Make a message whose body is a copy of body[0..len), with
 * QUAY_POOL_HEADROOM_DEFAULT (or the pool's headroom) bytes to spare for
 * headers, or less if only the largest class can hold the body.
 * Stamps id and created_ns; everything else is 0 / empty.
 *
 * Concurrency: lock-free (see quay/pool.h). No system call, no malloc.
 * Ordering: see the top of this file.
 * Returns: 0 and *out set (one reference); -EINVAL if pool or out is NULL,
 *          or body is NULL with len > 0; -EMSGSIZE if no class can hold
 *          len bytes; -ENOMEM if the pool is exhausted. *out is untouched
 *          on failure.
 */
QUAY_API int quay_msg_new(quay_pool *pool, const void *body, size_t len, quay_msg **out);

/**
 * Make a message whose body is a copy of body[0..len) with at least
 * header_room bytes free for headers and reply-to
 * (QUAY_MSG_HEADER_ROOM() estimates it; 0: none asked, the class's
 * spare bytes still serve). Unlike quay_msg_new(), the room is never
 * shrunk to fit: quay_msg_room() >= header_room on success. While the
 * pool is exhausted, wait as quay_msg_new_wait() does for at most
 * timeout_ns (0: try once, as quay_msg_new(); < 0: forever).
 *
 * Concurrency, Ordering: as quay_msg_new(). No malloc.
 * Returns: 0 and *out set (one reference); -EINVAL if pool or out is
 *          NULL, or body is NULL with len > 0; -EMSGSIZE if no class holds
 *          len + header_room bytes; -ENOMEM if the pool is exhausted
 *          (timeout_ns 0); -ETIMEDOUT if it stayed exhausted for
 *          timeout_ns. *out is untouched on failure.
 */
QUAY_API int quay_msg_new_ex(quay_pool *pool, const void *body, size_t len, size_t header_room,
    int64_t timeout_ns, quay_msg **out);

/**
 * As quay_msg_new(), but while the pool is exhausted, sleep (on a futex,
 * not spinning) until a buffer is given back, for at most timeout_ns
 * (< 0: forever; 0: try once).
 *
 * A buffer given back to a thread cache (see quay/pool.h) may not wake
 * the waiter: frees that see a waiter go to the shared stacks, but up to
 * the caches' capacity (a quarter of a class at most) may stay cached.
 *
 * Concurrency: as quay_msg_new(); any number of threads may wait.
 * Returns: as quay_msg_new(), or -ETIMEDOUT instead of -ENOMEM.
 */
QUAY_API int quay_msg_new_wait(quay_pool *pool, const void *body, size_t len, int64_t timeout_ns,
    quay_msg **out);

/**
 * Make an empty message (body_len 0) with at least capacity bytes of data
 * area for body, headers and reply-to (fill it with quay_msg_set_body(),
 * or quay_msg_body_mut() + quay_msg_set_body_len()).
 *
 * Concurrency, Ordering: as quay_msg_new().
 * Returns: 0 and *out set; -EINVAL if pool or out is NULL; -EMSGSIZE if
 *          no class has capacity bytes of data area; -ENOMEM if the pool
 *          is exhausted.
 */
QUAY_API int quay_msg_alloc(quay_pool *pool, size_t capacity, quay_msg **out);

/**
 * As quay_msg_alloc(), waiting as quay_msg_new_wait() does.
 *
 * Returns: as quay_msg_alloc(), or -ETIMEDOUT instead of -ENOMEM.
 */
QUAY_API int quay_msg_alloc_wait(quay_pool *pool, size_t capacity, int64_t timeout_ns, quay_msg **out);

/**
 * Make a copy of src in pool (which may be src's pool or another): body,
 * headers, reply-to, priority, attempts, times and correlation id. The
 * copy has its own new id and one reference; src is unchanged. Used for
 * copy-on-write of a shared message (e.g. dead-lettering one subscriber's
 * copy with a reason header).
 *
 * Concurrency: src may be read by others meanwhile (not modified).
 * Returns: 0 and *out set; -EINVAL if pool, src or out is NULL;
 *          -EMSGSIZE if no class of pool holds src's data; -ENOMEM if
 *          pool is exhausted.
 */
QUAY_API int quay_msg_clone(quay_pool *pool, const quay_msg *src, quay_msg **out);

/* ---- references --------------------------------------------------- */

/**
 * Take one more reference.
 *
 * Concurrency: lock-free, from any thread holding a reference.
 * Ordering: relaxed (the caller already holds a reference).
 * A ref of a message whose count is 0 (already freed) is reported as an
 * unref past zero is (see quay_msg_unref()) and never resurrects it.
 *
 * Returns: 0; -EINVAL if msg is NULL, its count is at UINT32_MAX, or
 *          (release builds) its count is 0.
 */
QUAY_INLINE int quay_msg_ref(quay_msg *msg);

/**
 * Drop one reference; the last one gives the buffer back to its pool.
 *
 * Unref past zero (the count was already 0: a double unref of a message
 * not yet reused) changes nothing and is reported: a libquay built
 * without NDEBUG prints "quay: quay_msg_unref past zero" to stderr and
 * aborts; a release build (NDEBUG) returns -EINVAL. An unref of a
 * message whose buffer was already handed out again cannot be caught.
 *
 * Concurrency: lock-free, from any thread holding a reference.
 * Ordering: release; the thread that frees synchronises with every other
 *           unref (acquire) before the buffer is reused.
 * Returns: 0; -EINVAL if msg is NULL or (release builds) past zero.
 */
QUAY_INLINE int quay_msg_unref(quay_msg *msg);

/** The reference count now (a snapshot; 0 for NULL). */
QUAY_INLINE uint32_t quay_msg_refcount(const quay_msg *msg);

/* ---- envelope getters (cheap, inline; 0/NULL for a NULL msg) -------- */

/** The id (unique within the process; see the top of this file). */
QUAY_INLINE uint64_t quay_msg_id(const quay_msg *msg);
/** The priority, 0..255. */
QUAY_INLINE unsigned quay_msg_priority(const quay_msg *msg);
/** Delivery attempts so far. */
QUAY_INLINE uint32_t quay_msg_attempts(const quay_msg *msg);
/** Creation time, CLOCK_REALTIME ns. */
QUAY_INLINE int64_t quay_msg_created_ns(const quay_msg *msg);
/** Enqueue time, CLOCK_REALTIME ns (0: unset). */
QUAY_INLINE int64_t quay_msg_enqueued_ns(const quay_msg *msg);
/** Not to be delivered before this time (0: no delay). */
QUAY_INLINE int64_t quay_msg_not_before_ns(const quay_msg *msg);
/** Not to be delivered after this time (0: no expiry). */
QUAY_INLINE int64_t quay_msg_expires_ns(const quay_msg *msg);
/** The correlation id (0: none). */
QUAY_INLINE uint64_t quay_msg_correlation_id(const quay_msg *msg);
/** The body (valid while a reference is held; 64-byte aligned). */
QUAY_INLINE const void *quay_msg_body(const quay_msg *msg);
/** The body's length in bytes. */
QUAY_INLINE size_t quay_msg_body_len(const quay_msg *msg);
/** The writable body area (capacity bytes; only the sole holder writes). */
QUAY_INLINE void *quay_msg_body_mut(quay_msg *msg);
/** Bytes of data area (body + headers + reply-to). */
QUAY_INLINE size_t quay_msg_capacity(const quay_msg *msg);
/** Bytes of data area still free. */
QUAY_INLINE size_t quay_msg_room(const quay_msg *msg);
/** Bytes of pool memory the message occupies (its class's buffer size). */
QUAY_INLINE size_t quay_msg_footprint(const quay_msg *msg);
/** The pool the message came from. */
QUAY_INLINE quay_pool *quay_msg_pool(const quay_msg *msg);
/** Number of headers (reply-to not counted). */
QUAY_INLINE unsigned quay_msg_header_count(const quay_msg *msg);

/* ---- envelope setters (single words; see "Mutation" above) -------- */

/**
 * Set the priority.
 * Returns: 0; -EINVAL if msg is NULL or prio > QUAY_MSG_PRIORITY_MAX.
 */
QUAY_INLINE int quay_msg_set_priority(quay_msg *msg, unsigned prio);
/**
 * Set the delivery attempts.
 * Returns: 0; -EINVAL if msg is NULL.
 */
QUAY_INLINE int quay_msg_set_attempts(quay_msg *msg, uint32_t attempts);
/**
 * Set the creation time (ns, >= 0).
 * Returns: 0; -EINVAL if msg is NULL or ns < 0.
 */
QUAY_INLINE int quay_msg_set_created_ns(quay_msg *msg, int64_t ns);
/**
 * Set the enqueue time (ns, >= 0; 0 unsets).
 * Returns: 0; -EINVAL if msg is NULL or ns < 0.
 */
QUAY_INLINE int quay_msg_set_enqueued_ns(quay_msg *msg, int64_t ns);
/**
 * Set the delay: not before this time (ns, >= 0; 0: no delay).
 * Returns: 0; -EINVAL if msg is NULL or ns < 0.
 */
QUAY_INLINE int quay_msg_set_not_before_ns(quay_msg *msg, int64_t ns);
/**
 * Set the expiry (TTL) time (ns, >= 0; 0: never).
 * Returns: 0; -EINVAL if msg is NULL or ns < 0.
 */
QUAY_INLINE int quay_msg_set_expires_ns(quay_msg *msg, int64_t ns);
/**
 * Set the correlation id (0: none).
 * Returns: 0; -EINVAL if msg is NULL.
 */
QUAY_INLINE int quay_msg_set_correlation_id(quay_msg *msg, uint64_t id);

/**
 * Expire ttl_ns from now: set expires_ns to the pool's clock (the one
 * that stamps created_ns: quay_queue_clock_tsc() by default, CLOCK_REALTIME
 * within 100 us) + ttl_ns. A queue
 * compares it with its own clock: give both the same one. To remove the
 * expiry, quay_msg_set_expires_ns(msg, 0).
 *
 * Concurrency: as the other scalar setters (see "Mutation").
 * Returns: 0; -EINVAL if msg is NULL, ttl_ns <= 0, or now + ttl_ns
 *          passes INT64_MAX.
 */
QUAY_API int quay_msg_set_ttl_ns(quay_msg *msg, int64_t ttl_ns);

/**
 * Delay delivery by delay_ns from now: set not_before_ns to the pool's
 * clock + delay_ns (0: no delay, not_before_ns 0). Clock: as
 * quay_msg_set_ttl_ns().
 *
 * Returns: 0; -EINVAL if msg is NULL, delay_ns < 0, or now + delay_ns
 *          passes INT64_MAX.
 */
QUAY_API int quay_msg_set_delay_ns(quay_msg *msg, int64_t delay_ns);

/* ---- body, headers, reply-to (sole holder only) ------------------- */

/**
 * Replace the body with a copy of data[0..len).
 *
 * Concurrency: the caller must hold the only reference.
 * Returns: 0; -EINVAL if msg is NULL, data is NULL with len > 0, or the
 *          message is shared; -EMSGSIZE if len does not fit next to the
 *          headers (quay_msg_room() + the current body length). Nothing
 *          changes on failure.
 */
QUAY_API int quay_msg_set_body(quay_msg *msg, const void *data, size_t len);

/**
 * Set the body's length after writing it through quay_msg_body_mut();
 * bytes beyond the old length are whatever was written there.
 *
 * Returns: 0; -EINVAL if msg is NULL or shared; -EMSGSIZE as
 *          quay_msg_set_body().
 */
QUAY_API int quay_msg_set_body_len(quay_msg *msg, size_t len);

/**
 * Set header key to a copy of value[0..len) (replacing an existing key;
 * it then moves to the end of the header order). key may come from
 * quay_msg_header_at() of the same message; value may come from the
 * message's body but not from its own headers or the free room after the
 * body (which the new record is written into): copy it first.
 *
 * Returns: 0; -EINVAL if msg or key is NULL, key is empty or longer than
 *          QUAY_MSG_KEY_MAX, value is NULL with len > 0 or overlaps
 *          msg's headers or free room, or the message is shared;
 *          -ENOSPC (no header room) if the message already has
 *          QUAY_MSG_HEADERS_MAX headers (and not key) or the header does
 *          not fit in quay_msg_room() (plus the size of the header it
 *          replaces). Nothing changes on failure.
 */
QUAY_API int quay_msg_set_header(quay_msg *msg, const char *key, const void *value, size_t len);

/**
 * Set header key to the bytes of the NUL-terminated string value (without
 * its NUL): quay_msg_set_header(msg, key, value, strlen(value)).
 *
 * Returns: as quay_msg_set_header(); -EINVAL also if value is NULL;
 *          -ENOSPC if value is longer than the room.
 */
QUAY_API int quay_msg_set_header_str(quay_msg *msg, const char *key, const char *value);

/**
 * Copy header key's value into buf as a NUL-terminated string (cap bytes
 * at most, the NUL included). On every failure with buf and cap > 0,
 * buf is set to "".
 *
 * Concurrency: as quay_msg_get_header().
 * Returns: 0; -ENOENT if there is no such header (or key is empty or
 *          longer than QUAY_MSG_KEY_MAX); -ENOSPC if the value and its
 *          NUL do not fit in cap bytes; -EINVAL if msg, key or buf is NULL,
 *          cap is 0, or the value holds a NUL byte (it is not a string).
 */
QUAY_API int quay_msg_get_header_str(const quay_msg *msg, const char *key, char *buf, size_t cap);

/**
 * Look up header key. *value (bytes, not NUL-terminated, no alignment)
 * stays valid until the header changes or the last reference is dropped.
 * value and len may be NULL.
 *
 * Concurrency: safe while no holder changes the headers.
 * Returns: 0; -ENOENT if there is no such header; -EINVAL if msg or key
 *          is NULL.
 */
QUAY_API int quay_msg_get_header(const quay_msg *msg, const char *key, const void **value, size_t *len);

/**
 * Remove header key.
 *
 * Returns: 0; -ENOENT if there is no such header; -EINVAL if msg or key
 *          is NULL, or the message is shared.
 */
QUAY_API int quay_msg_del_header(quay_msg *msg, const char *key);

/**
 * The i-th header (0 = the oldest set). key is NUL-terminated. Any of
 * key, value, len may be NULL.
 *
 * Returns: 0; -ENOENT if i >= quay_msg_header_count(); -EINVAL if msg is
 *          NULL.
 */
QUAY_API int quay_msg_header_at(const quay_msg *msg, unsigned i, const char **key, const void **value,
    size_t *len);

/**
 * Set the reply-to subject (a copy); NULL or "" removes it.
 *
 * Returns: 0; -EINVAL if msg is NULL, the message is shared, subject is
 *          longer than QUAY_MSG_REPLY_TO_MAX or points into msg's
 *          headers; -ENOSPC (no header room) if it does not fit in
 *          quay_msg_room(). Nothing changes on failure.
 */
QUAY_API int quay_msg_set_reply_to(quay_msg *msg, const char *subject);

/**
 * The reply-to subject (NUL-terminated), or NULL if none (or msg NULL).
 * Valid until it changes or the last reference is dropped.
 */
QUAY_API const char *quay_msg_reply_to(const quay_msg *msg);

#include <quay/impl/msg_inline.h>

#ifdef __cplusplus
}
#endif

#endif /* QUAY_MSG_H */
