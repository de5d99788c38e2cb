/* SPDX-License-Identifier: MIT */
/**
 * @file quay/bus.h
 * Topic fan-out inside one process: subjects, wildcard subscriptions,
 * queue groups and request/reply (docs/BUS.md).
 *
 * Subjects (NATS syntax) are dot-separated tokens: `orders.buy.eu`. A
 * token is 1 or more printable ASCII bytes (0x21..0x7e) other than `.`,
 * `*` and `>`. A subject is 1..QUAY_BUS_SUBJECT_MAX bytes and has at most
 * QUAY_BUS_TOKENS_MAX tokens. A pattern is a subject whose tokens may
 * also be `*` (exactly one token), `#` (zero or more tokens, anywhere, as
 * in AMQP) or, as the last token only, `>` (one or more tokens). `*`
 * and `>` are never part of a longer token (`a*`, `>b` are invalid);
 * inside a longer token `#` is a plain byte (`a#` is a literal token, as
 * in AMQP). No wildcard token appears in a published subject. Empty
 * tokens (`a..b`, a leading or trailing dot), the empty string, bytes
 * outside 0x21..0x7e and over-long strings get -EINVAL.
 *
 * Matching table (pattern: subjects it matches / does not match):
 *
 *   a.b       a.b                       / a, a.b.c, a.c
 *   a.*       a.b, a.x                  / a, a.b.c
 *   a.>       a.b, a.b.c                / a
 *   a.#       a, a.b, a.b.c             / b, ab
 *   #.a       a, x.a, x.y.a             / a.x
 *   a.#.b     a.b, a.x.b, a.x.y.b       / a, b, a.b.c
 *   #         every subject             / -
 *   *.#       every subject             / -
 *   #.*       every subject             / -
 *   #.>       every subject             / -
 *   a.#.>     a.b, a.b.c                / a
 *   a.*.#     a.b, a.b.c                / a
 *   #.#       every subject             / -
 *   *.#.*     a.b, a.b.c                / a
 *
 * Bindings (quay_bus_bind()) attach a quay_queue to a pattern: a publish
 * sends the message to every matching bound queue as it queues it to
 * every matching subscription (the same trie, cache and lock-free
 * publish). The first bound queue that takes a publish gets the
 * publisher's message itself; each other bound queue gets its own copy
 * (quay_msg_clone() in the message's pool), because a queue keeps its
 * per-delivery state (attempts, times, a durable queue's claim) in the
 * message. Subscriptions and bindings may carry a header filter (see
 * quay_filter_check()), tested after the subject matched.
 *
 * A subscription owns a bounded queue of message references: a quay ring
 * (multi-producer, multi-consumer: any number of threads may receive), or
 * a quay priority queue when opts->priorities > 0 (message priority p goes
 * to level p; a publish whose priority exceeds the levels of any target is
 * refused with -EINVAL, as quay/queue.h refuses it). When its queue is
 * full, its policy decides (QUAY_SUB_REJECT, the default, / _DROP_NEWEST /
 * _DROP_OLDEST / _BLOCK below); a full subscription never delays a
 * publisher, nor so the others, unless its policy is QUAY_SUB_BLOCK.
 * Every drop, rejection and block timeout is counted.
 *
 * Queue groups: subscriptions that name the same group share its
 * messages: of the group's subscriptions matching a subject, one gets
 * each message (round robin, skipping members that are full before the
 * chosen member's policy is applied). Other subscriptions still get their
 * own copy. A group counts once in publish's return value.
 *
 * Delivery is by reference: each receiving subscription gets its own
 * reference (quay_msg_ref()); the receiver drops it with quay_msg_unref().
 * The message is shared: receivers must not modify it (see quay/msg.h).
 * Receive latency is sampled: when a matching subscription records
 * latency (not QUAY_SUB_NO_LATENCY), one publish call in latency_sample
 * of each thread (quay_bus_opts; default 64) stamps the message's
 * enqueued_ns with the bus clock, and the others set it to 0; a receive
 * records now - enqueued_ns in the subscription's histogram for each
 * stamped message only. So the histogram counts the sampled messages;
 * every counter (received, delivered, ...) stays exact.
 *
 * Concurrency (synchronisation table):
 *
 *   call                       x call                      needs
 *   publish, publish_batch,    x each other, subscribe,    nothing (publish
 *     publish_many, request,     unsubscribe, receive        takes no lock: RCU)
 *     reply
 *   subscribe, unsubscribe     x each other                nothing (they take
 *                                                            the bus mutex)
 *   receive, receive_burst     x receive on the same sub   nothing
 *   receive (blocked)          x unsubscribe of that sub   nothing: it wakes
 *                                                            with -EPIPE
 *   any call on a sub          x after its unsubscribe     forbidden (the
 *                                returned                    handle is freed)
 *   destroy                    x anything on the bus       caller serialises,
 *                                                            except blocked
 *                                                            receivers,
 *                                                            requesters and
 *                                                            BLOCK publishers
 *                                                            (woken: -EPIPE)
 *
 * RCU: the subscription table is read under liburcu's memb flavour. A
 * thread that calls into the bus is registered with liburcu on its first
 * call and unregistered when it exits (a pthread key destructor): users
 * never call liburcu themselves. A thread registered this way must not
 * also register itself with liburcu's memb flavour.
 *
 * Ordering: everything a publisher wrote before publishing a message
 * happens-before everything a receiver does after receiving it (the
 * queue's release/acquire). Messages from one publishing thread reach
 * each subscription in publish order (per-publisher FIFO; with
 * priorities, FIFO within a level); nothing is promised between
 * publishers. A subscription returned by quay_bus_subscribe() gets every
 * message published after subscribe returned; publishes running
 * concurrently with subscribe or unsubscribe may or may not reach it.
 */
#ifndef QUAY_BUS_H
#define QUAY_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/err.h>
#include <quay/msg.h>
#include <quay/queue.h>
#include <quay/stats.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Longest subject or pattern, in bytes. */
#define QUAY_BUS_SUBJECT_MAX 255u
/** Most tokens in a subject or pattern. */
#define QUAY_BUS_TOKENS_MAX 32u
/** Longest queue group or bus name, in bytes. */
#define QUAY_BUS_NAME_MAX 64u
/** Default and largest number of subscriptions on one bus. */
#define QUAY_BUS_SUBS_DEFAULT 65536u
#define QUAY_BUS_SUBS_MAX ((size_t)1 << 20)
/** Default and largest number of requests waiting at once on one bus. */
#define QUAY_BUS_REQUESTS_DEFAULT 1024u
#define QUAY_BUS_REQUESTS_MAX 65536u
/** Default of quay_bus_opts.latency_sample: one publish in 64 is timed. */
#define QUAY_BUS_LATENCY_SAMPLE_DEFAULT 64u
/** Largest quay_bus_opts.latency_sample. */
#define QUAY_BUS_LATENCY_SAMPLE_MAX 65536u
/** Entries of the subject -> subscribers cache of each table version. */
#define QUAY_BUS_CACHE_ENTRIES 4096u
/** Default capacity of a subscription's queue (per level with priorities). */
#define QUAY_SUB_CAPACITY_DEFAULT 1024u
/** Default time a QUAY_SUB_BLOCK publisher waits for room (1 s). */
#define QUAY_SUB_BLOCK_TIMEOUT_DEFAULT ((int64_t)1000000000)

/** A bus (opaque). */
typedef struct quay_bus quay_bus;
/** A subscription (opaque). */
typedef struct quay_sub quay_sub;
/** A binding of a queue to a pattern (opaque). */
typedef struct quay_binding quay_binding;

/** Longest header filter, in bytes. */
#define QUAY_FILTER_LEN_MAX 4096u
/** Most clauses in one filter (over all its || groups). */
#define QUAY_FILTER_CLAUSES_MAX 64u
/** Most values in one `in {...}` list. */
#define QUAY_FILTER_VALUES_MAX 64u
/** Longest value in a filter, in bytes. */
#define QUAY_FILTER_VALUE_MAX 255u

/**
 * What a publish does when a subscription's queue is full.
 *
 * The default (NULL options, QUAY_SUB_OPTS_INIT, or 0) is QUAY_SUB_REJECT:
 * a full subscription never makes a publisher wait. Only a subscription
 * that asks for QUAY_SUB_BLOCK can slow its publishers (and through them
 * every other subscriber). (Earlier versions defaulted to BLOCK with a
 * 1 s timeout: see the README's changelog.)
 */
enum quay_sub_policy {
	/** The default. Refuse: count it (rejected); publish reports it
	 *  (-EAGAIN when no target queued the message, see
	 *  quay_bus_publish()), the publisher keeps its message to retry. */
	QUAY_SUB_REJECT = 0,
	/** Drop the new message for this subscription and count it. */
	QUAY_SUB_DROP_NEWEST = 1,
	/** Drop the oldest queued message (unref it), count it, queue the
	 *  new one. Rings only (not with priorities). */
	QUAY_SUB_DROP_OLDEST = 2,
	/** Wait up to block_timeout_ns for room, then count a timeout. The
	 *  publisher (every publisher of a matching subject) waits: lossless,
	 *  but one stalled reader slows them all. */
	QUAY_SUB_BLOCK = 3,
};

/** Subscription flag: no receive-latency histogram (saves ~8 KiB). */
#define QUAY_SUB_NO_LATENCY 0x1u
/** Every subscription flag; other bits get -EINVAL. */
#define QUAY_SUB_FLAGS_ALL QUAY_SUB_NO_LATENCY

/** Bus options. Start from QUAY_BUS_OPTS_INIT; zero fields mean default. */
struct quay_bus_opts {
	/** sizeof(struct quay_bus_opts): the version. */
	size_t size;
	/** No flags are defined yet: must be 0. */
	unsigned flags;
	/** Value of the bus="..." label of its metrics (NULL: "bus<N>");
	 *  1..QUAY_BUS_NAME_MAX bytes of 0x21..0x7e. */
	const char *name;
	/** Registry for the metrics (NULL: the bus makes its own, one
	 *  histogram shard; quay_bus_stats() returns it). A given registry
	 *  must outlive the bus. */
	quay_stats *stats;
	/** Most subscriptions at once (0: QUAY_BUS_SUBS_DEFAULT). */
	size_t max_subs;
	/** Most requests waiting at once (0: QUAY_BUS_REQUESTS_DEFAULT). */
	unsigned max_requests;
	/** Clock for enqueued_ns and latencies, ns (NULL: clock_gettime(CLOCK_REALTIME);
	 *  queues and pools default to quay_queue_clock_tsc() instead).
	 *  Must be thread-safe. */
	int64_t (*clock)(void *clock_arg);
	/** Passed to clock. */
	void *clock_arg;
	/** A queue that receives each published message that reached no
	 *  target (no subscription or binding matched it, filters
	 *  included), as RabbitMQ's alternate exchange (NULL: none). Such
	 *  messages are counted either way (quay_bus_counters()). It must
	 *  outlive the bus. A struct whose size stops before this field is
	 *  accepted (none). */
	quay_queue *unroutable;
	/** Where the bus's memory comes from: its tables, subscriptions,
	 *  bindings, their rings and filters, its registry (NULL: the C
	 *  library); see quay/alloc.h. Kept, not copied: it must outlive the
	 *  bus. A struct whose size stops before this field is accepted. */
	const struct quay_allocator *allocator;
	/** Receive latency: time one publish call in latency_sample of each
	 *  thread (a power of two up to QUAY_BUS_LATENCY_SAMPLE_MAX; 0:
	 *  QUAY_BUS_LATENCY_SAMPLE_DEFAULT; 1: every call). A clock read
	 *  costs about as much as a delivery. A struct whose size stops
	 *  before this field is accepted (the default). */
	uint32_t latency_sample;
};

/** Initialiser for struct quay_bus_opts: every field its default. */
/* clang-format off */
#define QUAY_BUS_OPTS_INIT { sizeof(struct quay_bus_opts), 0u, NULL, NULL, 0u, 0u, NULL, NULL, NULL, NULL, 0u }
/* clang-format on */

/** Subscription options. Start from QUAY_SUB_OPTS_INIT. */
struct quay_sub_opts {
	/** sizeof(struct quay_sub_opts): the version. */
	size_t size;
	/** QUAY_SUB_* flags. */
	unsigned flags;
	/** Overflow policy (QUAY_SUB_OPTS_INIT and 0: QUAY_SUB_REJECT, which
	 *  never makes a publisher wait). */
	enum quay_sub_policy policy;
	/** Queue capacity, a power of two up to QUAY_RING_CAPACITY_MAX (0:
	 *  QUAY_SUB_CAPACITY_DEFAULT); with priorities, per level. */
	size_t capacity;
	/** 0: a ring; 1..QUAY_PQ_LEVELS_MAX: a priority queue of that many
	 *  levels (strict priority); a message of priority >= priorities is
	 *  refused by publish (-EINVAL). */
	unsigned priorities;
	/** QUAY_SUB_BLOCK: how long a publisher waits for room; < 0 forever,
	 *  0 not at all (QUAY_SUB_OPTS_INIT: QUAY_SUB_BLOCK_TIMEOUT_DEFAULT). */
	int64_t block_timeout_ns;
	/** Queue group name (NULL: none), 1..QUAY_BUS_NAME_MAX bytes of
	 *  0x21..0x7e. */
	const char *group;
	/** Header filter (NULL: none), see quay_filter_check(): a message
	 *  whose subject matches reaches the subscription only if its
	 *  headers satisfy it. Compiled once here. A struct whose size
	 *  stops before this field is accepted (none). */
	const char *filter;
};

/** Initialiser for struct quay_sub_opts: the defaults. */
/* clang-format off */
#define QUAY_SUB_OPTS_INIT \
	{ sizeof(struct quay_sub_opts), 0u, QUAY_SUB_REJECT, 0u, 0u, QUAY_SUB_BLOCK_TIMEOUT_DEFAULT, NULL, NULL }
/* clang-format on */

/** Binding options. Start from QUAY_BIND_OPTS_INIT. */
struct quay_bind_opts {
	/** sizeof(struct quay_bind_opts): the version. */
	size_t size;
	/** No flags are defined yet: must be 0. */
	unsigned flags;
	/** When the queue is full (quay_queue_send() says -EAGAIN):
	 *  QUAY_SUB_REJECT (the default: refused, counted, reported),
	 *  QUAY_SUB_DROP_NEWEST (not queued there, counted) or
	 *  QUAY_SUB_BLOCK (the publisher retries until block_timeout_ns,
	 *  then counts a timeout). QUAY_SUB_DROP_OLDEST is -EINVAL (a queue
	 *  gives up no message it accepted). */
	enum quay_sub_policy policy;
	/** QUAY_SUB_BLOCK: how long a publisher waits for room; < 0 forever,
	 *  0 not at all (QUAY_BIND_OPTS_INIT: QUAY_SUB_BLOCK_TIMEOUT_DEFAULT). */
	int64_t block_timeout_ns;
	/** Queue group (NULL: none): of the group's bindings and
	 *  subscriptions matching a subject, one gets each message (the
	 *  same groups as quay_sub_opts.group). */
	const char *group;
	/** Header filter (NULL: none), as quay_sub_opts.filter. */
	const char *filter;
};

/** Initialiser for struct quay_bind_opts: the defaults. */
/* clang-format off */
#define QUAY_BIND_OPTS_INIT \
	{ sizeof(struct quay_bind_opts), 0u, QUAY_SUB_REJECT, QUAY_SUB_BLOCK_TIMEOUT_DEFAULT, NULL, NULL }
/* clang-format on */

/** Counters of a binding (quay_binding_counters()); also its metrics
 *  quay_binding_*_total (labels bus, binding, pattern, group). */
struct quay_binding_counters {
	uint64_t delivered; /**< messages its queue accepted */
	uint64_t dropped;   /**< DROP_NEWEST refusals (queue full) */
	uint64_t rejected;  /**< REJECT refusals (queue full) */
	uint64_t timed_out; /**< BLOCK waits that timed out */
	uint64_t failed;    /**< other refusals: the copy could not be made
	                          (pool exhausted), or the queue refused the
	                          message (priority, a durable log error) */
};

/** Outcomes of one publish for one kind of target. */
struct quay_bus_pub_outcomes {
	uint32_t matched;   /**< targets matched, filters passed (a group counts once) */
	uint32_t delivered; /**< targets that queued the message */
	uint32_t dropped;   /**< DROP_NEWEST refusals (DROP_OLDEST evictions
	                          are counted on the subscription, not here) */
	uint32_t rejected;  /**< REJECT refusals */
	uint32_t timed_out; /**< BLOCK publishers that gave up */
	uint32_t closed;    /**< targets unsubscribed or unbound meanwhile */
	uint32_t failed;    /**< bound queues that refused otherwise (see
	                          quay_binding_counters.failed) */
};

/** What one publish did (quay_bus_publish_ex()). The first six fields
 *  are the totals over subscriptions and bound queues (a group is counted
 *  with the kind of the member that handled the message). */
struct quay_bus_pub_result {
	uint32_t matched;                    /**< targets matched (a group counts once) */
	uint32_t delivered;                  /**< targets that queued the message */
	uint32_t dropped;                    /**< DROP_NEWEST refusals */
	uint32_t rejected;                   /**< REJECT refusals */
	uint32_t timed_out;                  /**< BLOCK publishers that gave up */
	uint32_t closed;                     /**< targets removed meanwhile */
	struct quay_bus_pub_outcomes subs;   /**< subscriptions only */
	struct quay_bus_pub_outcomes queues; /**< bound queues only */
	uint32_t filtered;                   /**< targets whose pattern matched but whose filter
	                          refused the message (group members each) */
	uint32_t unroutable;                 /**< 1 if the message reached no target */
	int32_t unroutable_rc;               /**< then: 0 if the unroutable queue took it, or
	                          what its send returned (-ENOENT: no such
	                          queue); the message is consumed either way */
};

/** Counters of a bus (quay_bus_counters()); the same as its metrics. */
struct quay_bus_counters {
	uint64_t published;         /**< messages published (reply route included) */
	uint64_t delivered;         /**< deliveries (message x target) */
	uint64_t dropped;           /**< deliveries lost to DROP_NEWEST/_OLDEST */
	uint64_t rejected;          /**< deliveries refused by REJECT */
	uint64_t timed_out;         /**< BLOCK waits that timed out */
	uint64_t no_subscriber;     /**< messages that matched nothing */
	uint64_t late_replies;      /**< replies that found no waiting request */
	uint64_t unroutable;        /**< messages that reached no target (filters
	                              included): the unroutable queue took them
	                              or not */
	uint64_t unroutable_queued; /**< of those, queued in opts.unroutable */
	uint64_t filtered;          /**< targets whose filter refused a message */
	uint64_t bound_delivered;   /**< messages bound queues accepted (in delivered too) */
};

/** Counters of a subscription (quay_sub_counters()). */
struct quay_sub_counters {
	uint64_t delivered; /**< messages queued to it */
	uint64_t received;  /**< messages its receivers took */
	uint64_t dropped;   /**< DROP_NEWEST refusals + DROP_OLDEST evictions */
	uint64_t rejected;  /**< REJECT refusals */
	uint64_t timed_out; /**< BLOCK waits that timed out */
	uint64_t released;  /**< queued messages released by unsubscribe */
};

/**
 * Create a bus.
 *
 * opts may be NULL (every default).
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL if out is NULL, opts->size is not
 *          sizeof(struct quay_bus_opts), flags is not 0, name is empty,
 *          too long or has a byte outside 0x21..0x7e, max_subs exceeds
 *          QUAY_BUS_SUBS_MAX or max_requests QUAY_BUS_REQUESTS_MAX,
 *          latency_sample is not 0 or a power of two up to
 *          QUAY_BUS_LATENCY_SAMPLE_MAX, or the allocator lacks alloc or
 *          free;
 *          -ENOMEM. *out is untouched on failure.
 */
QUAY_API int quay_bus_create(const struct quay_bus_opts *opts, quay_bus **out);

/**
 * Destroy a bus: close every subscription's queue first (waking its
 * blocked receivers and the publishers and requesters waiting for room
 * in a full QUAY_SUB_BLOCK subscription, all with -EPIPE), fail waiting
 * requests with -EPIPE, unsubscribe every remaining subscription
 * (releasing its queued messages), wait for the deferred frees (a
 * per-bus count of liburcu callbacks), then free everything. NULL is
 * ignored. Every subscription handle is invalid afterwards. Waiting for
 * the woken callers sleeps (no busy spin).
 *
 * Concurrency: no other call may use the bus, except receivers blocked
 *              in quay_sub_receive(), requesters blocked in
 *              quay_bus_request() (waiting for room or for the reply), and
 *              publishers (publish, publish_ex, publish_batch, reply)
 *              waiting for room in a full BLOCK subscription: these
 *              return -EPIPE and stop using the bus before destroy
 *              returns. A woken publisher keeps its reference (nothing
 *              was queued); a woken requester's req is consumed.
 *              Must not be called from a call_rcu callback.
 */
QUAY_API void quay_bus_destroy(quay_bus *bus);

/**
 * Subscribe to a pattern.
 *
 * opts may be NULL (QUAY_SUB_OPTS_INIT: a ring of
 * QUAY_SUB_CAPACITY_DEFAULT, policy QUAY_SUB_REJECT: when full, publishes
 * are refused and counted, never delayed). Builds a new table version
 * (path copy of the trie, a fresh cache) and publishes it; the old one is
 * freed after an RCU grace period. Allocates; creates the subscription's
 * metrics in the bus registry (labels bus, sub (a number), pattern, and
 * group if any).
 *
 * Concurrency: safe from any thread; serialised with other subscribes and
 *              unsubscribes by the bus mutex; publishers are not blocked.
 * Ordering: every publish that starts after this returns sees the
 *           subscription.
 * Returns: 0 and *out set; -EINVAL if bus, pattern or out is NULL, the
 *          pattern is invalid (see the top of this file), opts->size is
 *          wrong, flags has unknown bits, the policy is unknown,
 *          DROP_OLDEST is combined with priorities, capacity is not a
 *          power of two up to QUAY_RING_CAPACITY_MAX, priorities exceeds
 *          QUAY_PQ_LEVELS_MAX, or the group name is invalid; -ENOMEM if
 *          memory runs out, the bus holds max_subs subscriptions or the
 *          registry is full; -EPIPE if the bus is being destroyed.
 *          Nothing changes on failure.
 */
QUAY_API int quay_bus_subscribe(quay_bus *bus, const char *pattern, const struct quay_sub_opts *opts,
    quay_sub **out);

/**
 * Remove a subscription: no publish that starts afterwards reaches it;
 * its queue is closed, so receivers blocked in it return -EPIPE and
 * BLOCK publishers waiting for room give up; the messages still queued
 * are released (unref'd, counted as "released"). Its memory and metrics
 * are freed after an RCU grace period and after every receiver still
 * inside quay_sub_receive() has returned, so a concurrent receive is
 * safe; a call on the handle after unsubscribe returned is not.
 *
 * Concurrency: safe from any thread, concurrently with publishes and
 *              receives on the same subscription.
 * Returns: 0; -EINVAL if sub is NULL; -ENOMEM if the new table version
 *          cannot be allocated or the thread cannot be registered with
 *          liburcu (nothing changed: the subscription stays; retry).
 */
QUAY_API int quay_bus_unsubscribe(quay_sub *sub);

/**
 * As quay_bus_unsubscribe(), and if final is not NULL, fill it with the
 * subscription's final counters: read after its queue was closed and
 * released (released included) and after every receiver still inside
 * quay_sub_receive() returned (this waits for an RCU grace period), so
 * nothing changes them afterwards. quay_sub_counters() cannot give them:
 * the handle is invalid once unsubscribe returned.
 *
 * Concurrency: as quay_bus_unsubscribe(); with final, must not be called
 *              from a call_rcu callback, and it waits for an RCU grace
 *              period: a publisher waiting for room in a full
 *              QUAY_SUB_BLOCK subscription (any of the process's buses)
 *              waits inside a read-side section and delays it, up to
 *              that subscription's block_timeout_ns (forever if < 0).
 * Returns: as quay_bus_unsubscribe(); *final is untouched on failure.
 */
QUAY_API int quay_bus_unsubscribe_ex(quay_sub *sub, struct quay_sub_counters *final);

/**
 * Bind a queue to a pattern: every message published on a matching
 * subject (and passing opts->filter) is sent to q with quay_queue_send():
 * the first bound queue that takes a publish gets the publisher's message,
 * each other one a copy (quay_msg_clone() in the message's pool). When q
 * is full, opts->policy decides (QUAY_SUB_REJECT by default). A group
 * (opts->group) shares delivery with the other members of that group,
 * bindings and subscriptions alike. Builds a new table version, as
 * quay_bus_subscribe() does, and creates the binding's metrics
 * (quay_binding_{delivered,dropped,rejected,block_timeouts,failed}_total,
 * labels bus, binding, pattern, group).
 *
 * Lifecycle: q must outlive the binding. A queue that is still bound
 * must not be destroyed: unbind first. Builds without NDEBUG abort in
 * quay_queue_destroy() when it is.
 *
 * Concurrency: as quay_bus_subscribe().
 * Ordering: every publish that starts after this returns sees it.
 * Returns: 0 and *out set; -EINVAL if bus, pattern, q or out is NULL,
 *          the pattern is invalid, opts->size is wrong, flags is not 0,
 *          the policy is unknown or DROP_OLDEST, the group name or the
 *          filter is invalid (quay_filter_check() says why); -EEXIST if q
 *          is already bound to this pattern on this bus; -ENOMEM; -EPIPE
 *          if the bus is being destroyed. Nothing changes on failure.
 */
QUAY_API int quay_bus_bind(quay_bus *bus, const char *pattern, quay_queue *q,
    const struct quay_bind_opts *opts, quay_binding **out);

/**
 * Remove a binding: no publish reaches its queue after this returns (it
 * waits for an RCU grace period, so a publish still sending to the queue
 * finishes first; a publisher waiting on a full QUAY_SUB_BLOCK binding
 * gives up at once and counts the message as closed). Afterwards the
 * queue may be destroyed. The handle is freed.
 *
 * Concurrency: safe from any thread, concurrently with publishes; must
 *              not be called from a call_rcu callback or while the
 *              calling thread is inside a publish.
 * Returns: 0; -EINVAL if b is NULL; -ENOMEM if the new table version
 *          cannot be allocated (nothing changed: retry).
 */
QUAY_API int quay_bus_unbind(quay_binding *b);

/**
 * Read a binding's counters (as quay_bus_counters()).
 *
 * Concurrency: safe from any thread until unbind returns.
 * Returns: 0; -EINVAL if b or out is NULL.
 */
QUAY_API int quay_binding_counters(const quay_binding *b, struct quay_binding_counters *out);

/**
 * Check a header filter expression, the language of quay_sub_opts.filter
 * and quay_bind_opts.filter (docs/ROUTING.md has it with examples):
 *
 *   region = eu && amount >= 1000 || vip in {gold, platinum}
 *
 * Clauses, joined by `&&` (and) into groups joined by `||` (or; `&&`
 * binds tighter; no parentheses): `name = v` (equals), `name in {v, w}`
 * (equals one of), `name != v` and `name not in {v, w}` (anything-but:
 * present and none of them), `name ^= v` (prefix), `name < n`, `<=`, `>`,
 * `>=` (numeric), `name in [lo, hi]` with `[`/`(` and `]`/`)` for closed
 * or open ends (numeric range), `exists(name)` and `!exists(name)`. Names
 * and values are words of [A-Za-z0-9_.:/@+-] or "quoted strings" (with
 * \" and \\). Every clause but !exists needs the header present; a
 * numeric clause needs its value to be a number.
 *
 * If the expression is invalid and errlen > 0, err gets a NUL-terminated
 * sentence saying where and what: "at byte 9: expected an operator (=,
 * ...) after the header name \"region\", found '~'" (truncated to
 * errlen).
 *
 * Concurrency: safe from any thread.
 * Returns: 0 if valid; -EINVAL if expr is NULL or invalid; -ENOMEM.
 */
QUAY_API int quay_filter_check(const char *expr, char *err, size_t errlen);

/**
 * Publish msg on subject to every matching subscription and bound queue
 * (whose filter, if any, the message's headers satisfy). A message that
 * reaches no target goes to the bus's unroutable queue, if it has one
 * (counted either way), and publish returns 0.
 *
 * Ownership: when it returns >= 0 the caller's reference is consumed
 * (given to the receivers, or dropped if nobody took it). When it returns
 * a negative code the caller keeps its reference, and no subscription got
 * the message.
 *
 * Takes no lock and allocates nothing when the subject is in the cache of
 * the current table version; a miss resolves the subject in the trie and
 * allocates the cache entry (once per subject per table version).
 * If a matching subscription records latency, sets msg's enqueued_ns:
 * the bus clock (one clock read) on a sampled call (see latency_sample
 * in struct quay_bus_opts), 0 on the others. A QUAY_SUB_BLOCK target that is full makes
 * this call wait up to its block_timeout_ns.
 *
 * Concurrency: lock-free unless a BLOCK target is full; any thread.
 * Ordering: see the top of this file.
 * Returns: the number of targets (subscriptions and bound queues, a
 *          queue group counting once) that queued the message, 0 if none matched or all
 *          matching dropped it by policy; -EAGAIN if targets matched,
 *          none queued it and at least one REJECT target refused it;
 *          -ETIMEDOUT if targets matched, none queued it, none rejected
 *          and a BLOCK target timed out; -EINVAL if bus, subject or msg is
 *          NULL, the subject is invalid or has a wildcard, msg's priority
 *          is >= the priorities of a matching subscription made with
 *          priorities (no target gets it: one rule with quay/queue.h), or
 *          msg's reference count would pass UINT32_MAX; -EPIPE if
 *          the bus is being destroyed; -ENOMEM if a cache miss cannot
 *          allocate its entry, or the thread cannot be registered with
 *          liburcu (no pthread key left). Partial delivery (some targets
 *          refused) returns the count; quay_bus_publish_ex() tells why.
 */
QUAY_API int quay_bus_publish(quay_bus *bus, const char *subject, quay_msg *msg);

/**
 * As quay_bus_publish(), and if res is not NULL, fill *res (zeroed
 * first) with what happened to each matching target.
 *
 * Returns: as quay_bus_publish().
 */
QUAY_API int quay_bus_publish_ex(quay_bus *bus, const char *subject, quay_msg *msg,
    struct quay_bus_pub_result *res);

/**
 * Publish msgs[0..n) on one subject, in order, with one subject lookup.
 * Stops at the first message that quay_bus_publish() would have returned
 * a negative code for.
 *
 * Ownership: the references of msgs[0..r) are consumed, where r is the
 * return value; the caller keeps msgs[r..n).
 * Concurrency, Ordering: as quay_bus_publish().
 * Returns: r, the number of messages published (0..n); -EINVAL if bus,
 *          subject or msgs is NULL, an entry of msgs[0..n) is NULL, or
 *          the subject is invalid (nothing published); -EPIPE as publish.
 *          When the first message fails, the code publish would return.
 */
QUAY_API int quay_bus_publish_batch(quay_bus *bus, const char *subject, quay_msg **msgs, size_t n);

/**
 * Publish msgs[i] on subjects[i] for i in 0..n, in order: the batch of
 * quay_bus_publish_batch() for messages that carry their own subjects.
 * Each run of consecutive equal subjects is published as one
 * quay_bus_publish_batch() (one lookup). Stops at the first message that
 * quay_bus_publish() would have returned a negative code for.
 *
 * Ownership: the references of msgs[0..r) are consumed, where r is the
 * return value; the caller keeps msgs[r..n).
 * Concurrency, Ordering: as quay_bus_publish(); messages of one call
 *           reach each subscription in array order.
 * Returns: r, the number of messages published (0..n); -EINVAL if bus,
 *          subjects or msgs is NULL, n > INT_MAX, an entry of
 *          subjects[0..n) or msgs[0..n) is NULL, or a subject is invalid
 *          or has a wildcard (all checked first: nothing published);
 *          when the first message fails, the code publish would return.
 */
QUAY_API int quay_bus_publish_many(quay_bus *bus, const char *const *subjects, quay_msg *const *msgs,
    size_t n);

/**
 * Take the next message of a subscription, sleeping (futex) up to
 * timeout_ns while its queue is empty (< 0: forever; 0: try once).
 *
 * Ownership: *out holds one reference, the caller's (quay_msg_unref()).
 * Records now - enqueued_ns in the latency histogram if the message was
 * stamped (a sampled publish).
 * Concurrency: any number of threads; safe against a concurrent
 *              unsubscribe (returns -EPIPE).
 * Ordering: acquire (see the top of this file).
 * Returns: 0; -ETIMEDOUT if nothing came in time; -EPIPE if the
 *          subscription was unsubscribed (or its bus destroyed); -EINVAL
 *          if sub or out is NULL; -ENOMEM if the thread cannot be
 *          registered with liburcu (no pthread key left).
 */
QUAY_API int quay_sub_receive(quay_sub *sub, quay_msg **out, int64_t timeout_ns);

/**
 * Take up to n queued messages without waiting (oldest first; with
 * priorities, highest level first).
 *
 * Ownership: out[0..r) hold one reference each, the caller's.
 * Concurrency, Ordering: as quay_sub_receive().
 * Returns: r, 0..n; 0 if the queue is empty or closed, or sub or out is
 *          NULL.
 */
QUAY_API size_t quay_sub_receive_burst(quay_sub *sub, quay_msg **out, size_t n);

/**
 * Send a request and wait for its reply (the RPC pattern).
 *
 * Sets req's reply-to to a private inbox subject of this bus
 * ("_INBOX.<bus>.<n>", routed straight to this call, never through the
 * subscription table), publishes req on subject, then sleeps until a
 * reply whose correlation id is req's id arrives on that inbox, or
 * timeout_ns passes (< 0: forever). A reply arriving after this call
 * returned is dropped and counted (late_replies).
 *
 * Ownership: req's reference is ALWAYS consumed (when req is not NULL),
 * whatever this returns: published and handed to subscribers, or
 * dropped. A caller that wants to retry a refused request keeps its own
 * reference first (quay_msg_ref()) or makes a new one.
 * On 0, *reply holds one reference, the caller's.
 * Concurrency: any thread; up to max_requests at once per bus.
 * Returns: 0; -ETIMEDOUT if no reply came in time; -ENOENT if no
 *          subscription took the request (nobody matched, or all dropped
 *          it); -EINVAL if bus, subject, req or reply is NULL, subject is
 *          invalid, or req is shared (its reply-to cannot be set);
 *          -ENOSPC if req has no header room for the reply-to; -ENOMEM if
 *          max_requests requests are waiting; -EAGAIN, -ETIMEDOUT or
 *          -EINVAL (priority) as quay_bus_publish() (nothing published);
 *          -EPIPE if the bus is being destroyed.
 */
QUAY_API int quay_bus_request(quay_bus *bus, const char *subject, quay_msg *req, quay_msg **reply,
    int64_t timeout_ns);

/**
 * Reply to a request: set reply's correlation id to req's id and publish
 * reply on req's reply-to subject (the requester's inbox, or any subject
 * a hand-made request named).
 *
 * Ownership: as quay_bus_publish() for reply; req is only read.
 * Concurrency: any thread.
 * Returns: as quay_bus_publish(): 1 if the waiting requester got it, 0 if
 *          it came too late (dropped and counted); -EINVAL also if req or
 *          reply is NULL or req has no reply-to.
 */
QUAY_API int quay_bus_reply(quay_bus *bus, const quay_msg *req, quay_msg *reply);

/**
 * Check a subject (publish form: no wildcards) or a pattern.
 *
 * Concurrency: safe from any thread.
 * Returns: 0 if valid; -EINVAL if s is NULL or invalid (see the top of
 *          this file).
 */
QUAY_API int quay_bus_subject_check(const char *s, bool pattern);

/**
 * Whether pattern matches subject (both checked first).
 *
 * Concurrency: safe from any thread.
 * Returns: true if both are valid and the pattern matches.
 */
QUAY_API bool quay_bus_match(const char *pattern, const char *subject);

/**
 * The bus's metric registry (its own, or the one given in its opts).
 *
 * Concurrency: safe from any thread. Returns: the registry; NULL for NULL.
 */
QUAY_API quay_stats *quay_bus_stats(const quay_bus *bus);

/**
 * Read the bus's counters (each read once; exact when nothing runs).
 *
 * Concurrency: safe from any thread.
 * Returns: 0; -EINVAL if bus or out is NULL.
 */
QUAY_API int quay_bus_counters(const quay_bus *bus, struct quay_bus_counters *out);

/**
 * Read a subscription's counters (as quay_bus_counters()).
 *
 * Concurrency: safe from any thread until unsubscribe returns.
 * Returns: 0; -EINVAL if sub or out is NULL.
 */
QUAY_API int quay_sub_counters(const quay_sub *sub, struct quay_sub_counters *out);

/**
 * Read a subscription's receive-latency histogram (ns): one record per
 * received message that its publish stamped (quay_bus_opts.latency_sample),
 * so its count is that of the sampled messages, not of every receive.
 *
 * Concurrency: safe from any thread until unsubscribe returns.
 * Returns: 0; -EINVAL if sub or out is NULL; -ENOENT if the subscription
 *          was made with QUAY_SUB_NO_LATENCY.
 */
QUAY_API int quay_sub_latency(const quay_sub *sub, struct quay_hist_data *out);

/**
 * Messages queued in a subscription now (a snapshot; 0 for NULL).
 *
 * Concurrency: safe from any thread until unsubscribe returns.
 */
QUAY_API size_t quay_sub_pending(const quay_sub *sub);

/**
 * A file descriptor that polls readable while the subscription has a
 * message to take (quay_sub_receive() with timeout 0 or
 * quay_sub_receive_burst()), or is unsubscribed (receive says -EPIPE);
 * the descriptor of its queue, as quay_ring_fd() (quay_pq_fd() with
 * priorities): made on first use, signalled once per empty -> non-empty
 * transition, re-armed by a receive that finds the queue empty. So after
 * a wake, receive until -ETIMEDOUT (timeout 0) or a burst of 0.
 * Never read, write or close it; it is closed when the subscription is
 * freed, at quay_bus_unsubscribe() or after it (once no publisher can
 * still reach it): remove it from your poller before unsubscribing.
 * docs/POLLING.md has the loop.
 *
 * Concurrency: safe from any thread until unsubscribe returns.
 * Returns: the descriptor (>= 0); -EINVAL if sub is NULL or a queue
 *          binding; -ENOMEM if it cannot be made
 *          (memory, or the process or system is out of descriptors).
 */
QUAY_API int quay_sub_fd(quay_sub *sub);

/** Number of subscriptions on the bus now (0 for NULL). */
QUAY_API size_t quay_bus_sub_count(const quay_bus *bus);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_BUS_H */
