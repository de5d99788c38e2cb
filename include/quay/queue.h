/* SPDX-License-Identifier: MIT */
/**
 * @file quay/queue.h
 * SQS-like queue: priorities, delays, leases (visibility timeouts), retry
 * with backoff, dead letters, redrive, TTL and deduplication, in process.
 * The message lifecycle and its state diagram are in docs/QUEUE.md.
 *
 * Every message a queue accepted is, at any moment, in exactly one state:
 *
 *   ready       waiting to be received (in the priority queue)
 *   delayed     waiting for its not-before time or its retry backoff
 *               (in the timing wheel)
 *   in flight   received and leased: invisible until ack, nack or lease
 *               expiry
 *   acked       gone (the queue dropped its reference)
 *   dead-lettered  handed to the dead-letter queue (or dropped, counted,
 *               if the queue has none)
 *   dropped     removed by an explicit policy decision (on_failure DROP,
 *               TTL expiry without a DLQ)
 *   redriven    moved out of this queue by quay_queue_redrive()
 *
 * and quay_queue_stats() counts each, so that at quiescence
 *   sent + restored == ready + delayed + in_flight + acked + dead_lettered
 *                      + dropped + redriven_out.
 *
 * Time. Message times (created, enqueued, not-before, expires) and lease
 * deadlines are on the queue's clock: CLOCK_REALTIME nanoseconds from
 * quay_queue_clock_tsc() by default (the calibrated TSC where the kernel
 * keeps time with it, else clock_gettime() itself: see there how close
 * it stays to CLOCK_REALTIME), or the clock given in the options (tests
 * inject a fake one; quay_queue_clock_realtime() for clock_gettime()
 * exactly). Every lease rule holds exactly on the queue's clock. wait_ns of the
 * receive calls is real time (CLOCK_MONOTONIC): it bounds how long the
 * caller sleeps.
 *
 * Timers. Delays, retry backoff and extended leases share one
 * hierarchical timing wheel (tick 1 ms by default). There is no timer
 * thread: due timers are processed by whichever send, receive, tick or
 * stats call finds something due (it takes the timer lock with a
 * try-lock; others go on). Due messages become ready in due-time order,
 * never before their due time and, once a call is made, at most one tick
 * late. A receiver that sleeps wakes at the next due time to process it,
 * and recomputes that time whenever it moves earlier (a delayed message
 * sent, a lease issued or shortened while it sleeps). With a fake clock,
 * call quay_queue_tick() after advancing it: due messages become ready
 * and wake sleeping receivers (a sleeping receiver also looks at the
 * fake clock again when the real time it computed from it has passed).
 *
 * Times in the options and from on_failure are added with saturation:
 * a delay, TTL, visibility, dedup window or retry delay so long that the
 * sum passes INT64_MAX means "never" (INT64_MAX), never a wrapped time.
 *
 * Concurrency (synchronisation table):
 *
 *   call                      x call                     needs
 *   send, receive, ack, nack, x any of them              nothing (ready
 *     release, extend, tick,                             messages and leases
 *     stats                                              are lock-free; timers
 *                                                        use a try-lock)
 *   browse, redrive, close    x anything but destroy     nothing (see each)
 *   create                    x anything                 nothing
 *   destroy                   x anything on this queue   caller serialises
 *
 * Ordering: everything a sender did to a message before quay_queue_send()
 * happens-before everything the receiver does after the receive that
 * leased it (the priority queue's release/acquire edge).
 *
 * Hooks (on_failure, on_dead_letter, browse's visit) run in the thread
 * that makes the decision, possibly while it holds the queue's timer lock:
 * they must be quick and must not call into the same queue.
 */
#ifndef QUAY_QUEUE_H
#define QUAY_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/alloc.h>
#include <quay/err.h>
#include <quay/msg.h>
#include <quay/stats.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A queue (opaque). */
typedef struct quay_queue quay_queue;

/** Most messages a queue may hold (ready + delayed + in flight). */
#define QUAY_QUEUE_CAPACITY_MAX ((size_t)1 << 24)
/** Default capacity. */
#define QUAY_QUEUE_CAPACITY_DEFAULT ((size_t)4096)
/** Default and largest max_attempts (SQS maxReceiveCount is 1..1000). */
#define QUAY_QUEUE_ATTEMPTS_DEFAULT 10u
#define QUAY_QUEUE_ATTEMPTS_MAX 1000u
/** Default visibility timeout: 30 s (SQS). */
#define QUAY_QUEUE_VISIBILITY_DEFAULT ((int64_t)30 * 1000000000)
/** Default backoff: base 100 ms, factor 2, max 60 s. */
#define QUAY_QUEUE_BACKOFF_BASE_DEFAULT ((int64_t)100 * 1000000)
#define QUAY_QUEUE_BACKOFF_MAX_DEFAULT ((int64_t)60 * 1000000000)
/** Default timer tick: 1 ms. */
#define QUAY_QUEUE_TICK_DEFAULT ((int64_t)1000000)
/** Longest queue name, in bytes. */
#define QUAY_QUEUE_NAME_MAX 100u
/** Longest dedup id (the QUAY_MSG_H_DEDUP_ID header value), in bytes. */
#define QUAY_QUEUE_DEDUP_ID_MAX 128u

/** Header a dead letter carries: the source queue's attempt count
 * (decimal) when it was dead-lettered; the DLQ itself delivers it from
 * attempt 1. Removed by redrive, with the other DLQ headers. */
#define QUAY_QUEUE_H_DLQ_ATTEMPTS "quay-dlq-attempts"

/** quay_queue_send() result: the message was a duplicate within the
 * dedup window; the queue took (and dropped) the reference, nothing was
 * enqueued. Positive, so `rc < 0` still tells every failure. */
#define QUAY_QUEUE_DUPLICATE 1

/** Flag: weighted priority scheduling (quay/pq.h); without it, strict. */
#define QUAY_QUEUE_WEIGHTED 0x1u
/** Flag: no jitter: retry delays are exactly min(max, base * factor^(n-1)). */
#define QUAY_QUEUE_NO_JITTER 0x2u
/** Flag: no backoff at all (failed messages are ready again at once). */
#define QUAY_QUEUE_NO_BACKOFF 0x4u
/** Flag: content-based dedup: a message without QUAY_MSG_H_DEDUP_ID has as
 * its dedup id the XXH3-128 hash of its body and group; a hash hit is
 * confirmed by comparing the bodies and groups (the queue keeps a
 * reference to each remembered message for the window). Needs
 * dedup_window_ns > 0. */
#define QUAY_QUEUE_CONTENT_DEDUP 0x8u
/** Flag: FIFO queue: messages of one group (QUAY_MSG_H_GROUP) are received
 * in send order, one at a time (docs/QUEUE.md, "FIFO queues"). */
#define QUAY_QUEUE_FIFO 0x10u
/** Flag (durable queues): do not log deliveries. By default a durable
 * queue logs each delivery's count before the lease is handed out, so a
 * message whose processing kills the process is dead-lettered after
 * max_attempts crashes (docs/DURABILITY.md, "Delivery counts"); with
 * this flag only failed deliveries are logged (cheaper receives; a
 * delivery outstanding at a crash is then not counted). Ignored in
 * memory. */
#define QUAY_QUEUE_NO_DELIVERY_LOG 0x20u
/** Every flag a caller may pass; other bits get -EINVAL. */
#define QUAY_QUEUE_FLAGS_ALL \
	(QUAY_QUEUE_WEIGHTED | QUAY_QUEUE_NO_JITTER | QUAY_QUEUE_NO_BACKOFF | QUAY_QUEUE_CONTENT_DEDUP | \
	    QUAY_QUEUE_FIFO | QUAY_QUEUE_NO_DELIVERY_LOG)

#ifndef QUAY_MSG_H_GROUP
/** Reserved header: the message group of a FIFO queue (and of content
 * dedup); no header, or an empty value: the default group. */
#define QUAY_MSG_H_GROUP "quay-group"
#endif
/** Longest group id (the QUAY_MSG_H_GROUP value), in bytes: a longer one is
 * -EINVAL at send (FIFO and content-dedup queues). */
#define QUAY_QUEUE_GROUP_MAX 128u

/** Most messages a rate-limit bucket holds (quay_queue_opts.rate_burst). */
#define QUAY_QUEUE_BURST_MAX ((uint32_t)1 << 24)
/** Highest rate limit, messages per second (the token interval is a whole
 *  nanosecond, at least 1). */
#define QUAY_QUEUE_RATE_MAX 1e9
/** Lowest rate limit, messages per second (one token per 1,000 s). */
#define QUAY_QUEUE_RATE_MIN 1e-3

/** The alarms of a queue (quay_queue_opts.alarm[], quay_queue_health()). */
typedef enum quay_queue_alarm {
	QUAY_QUEUE_ALARM_READY = 0, /**< ready depth (messages; FIFO: with those behind their group's head) */
	QUAY_QUEUE_ALARM_AGE = 1,   /**< oldest message age (nanoseconds, see quay_queue_stats()) */
	QUAY_QUEUE_ALARM_IN_FLIGHT = 2, /**< leases out */
	QUAY_QUEUE_ALARM_DLQ = 3,       /**< messages held by the dead-letter queue */
	QUAY_QUEUE_ALARM_FAILURES = 4,  /**< failed deliveries / all ended deliveries over the window, 0..1 */
	QUAY_QUEUE_ALARM_COUNT = 5
} quay_queue_alarm;

/** Overall state (quay_queue_health()). */
typedef enum quay_queue_health_state {
	QUAY_QUEUE_HEALTHY = 0,  /**< no alarm on */
	QUAY_QUEUE_DEGRADED = 1, /**< an alarm on ready depth, age or in-flight count: work is late */
	QUAY_QUEUE_FAILING = 2, /**< the DLQ or the failure-rate alarm is on: work is being lost or failing */
} quay_queue_health_state;

/**
 * One alarm's thresholds. The alarm goes OK -> ALARM after `periods`
 * consecutive counted evaluations with value >= raise, and ALARM -> OK
 * after `periods` consecutive counted evaluations with value < clear
 * (hysteresis: clear <= raise). raise 0: the alarm is off. An evaluation
 * counts if quay_queue_opts.alarm_period_ns has passed since the last
 * one that counted (0: every evaluation counts); one that does not count
 * updates the value read by quay_queue_health() and nothing else.
 */
struct quay_queue_threshold {
	double raise;     /**< > 0; 0: alarm off */
	double clear;     /**< 0 < clear <= raise; 0: raise */
	uint32_t periods; /**< counted evaluations for each transition, 1..1000; 0: 1 */
};

/** Told about each alarm transition (OK -> ALARM: on true; back: false),
 * with the value that completed it. Runs in the thread that evaluated the
 * alarms (quay_queue_health(), quay_queue_stats() or a registry snapshot),
 * under the queue's alarm lock: quick, and no call into the same queue. */
typedef void (*quay_queue_alarm_fn)(void *ctx, quay_queue *q, quay_queue_alarm alarm, bool on, double value);

/** What on_failure decides for a failed delivery. */
typedef enum quay_queue_verdict {
	QUAY_QUEUE_RETRY = 0,       /**< deliver again after *delay_ns */
	QUAY_QUEUE_DEAD_LETTER = 1, /**< to the dead-letter queue */
	QUAY_QUEUE_DROP = 2,        /**< discard (counted as dropped) */
} quay_queue_verdict;

/** Why a message was dead-lettered (also the QUAY_MSG_H_DLQ_REASON header). */
typedef enum quay_queue_dlq_reason {
	QUAY_QUEUE_DLQ_MAX_ATTEMPTS = 1, /**< header "max-attempts" */
	QUAY_QUEUE_DLQ_TTL = 2,          /**< header "ttl-expired" */
	QUAY_QUEUE_DLQ_REJECTED = 3,     /**< on_failure said DEAD_LETTER: "rejected" */
} quay_queue_dlq_reason;

/** The state a browsed message is in. */
typedef enum quay_queue_state {
	QUAY_QUEUE_READY = 1,
	QUAY_QUEUE_DELAYED = 2,
	QUAY_QUEUE_IN_FLIGHT = 3,
} quay_queue_state;

/**
 * Decide what happens to a message whose delivery failed (nack or lease
 * expiry). attempt is the number of deliveries so far (>= 1); reason is
 * the nack's reason, "lease expired", or NULL. *delay_ns comes in set to
 * the default backoff for this attempt; a RETRY may change it (>= 0).
 * The hook is asked only while attempt < max_attempts: at the limit the
 * message is dead-lettered (reason max-attempts) without calling it, so
 * a hook cannot keep a message past max_attempts. Without a hook: RETRY.
 * The hook runs as the hooks at the top of this file do.
 */
typedef quay_queue_verdict (*quay_queue_failure_fn)(void *ctx, const quay_msg *msg, uint32_t attempt,
    const char *reason, int64_t *delay_ns);

/** Told about each message dead-lettered (or dropped for want of a DLQ),
 * once per message: when it has moved into the DLQ (a DLQ that is full
 * delays the move and the call). A message moved into a DLQ has its
 * attempts reset to 0 by then; the count it had is in the
 * QUAY_QUEUE_H_DLQ_ATTEMPTS header (if it fit). */
typedef void (*quay_queue_dead_letter_fn)(void *ctx, const quay_msg *msg, quay_queue_dlq_reason reason);

/** Visit one message in quay_queue_browse(): return 0 to go on, non-zero to stop. */
typedef int (*quay_queue_visit_fn)(void *ctx, const quay_msg *msg, quay_queue_state state);

/** The clock: CLOCK_REALTIME-style nanoseconds. Must be thread-safe. */
typedef int64_t (*quay_queue_clock_fn)(void *ctx);

/**
 * A cheaper CLOCK_REALTIME for the clock options (quay_queue_opts.clock,
 * quay_bus_opts.clock, quay_pool_opts.clock; ctx is unused). On x86-64,
 * when the kernel's clock source is the TSC, it scales the time-stamp
 * counter from an anchor that it compares with
 * clock_gettime(CLOCK_REALTIME) about every 1.6 ms: it closes any gap by
 * slewing its rate (at most 488 ppm) rather than jumping, and it follows
 * a step of CLOCK_REALTIME of more than 100 us by stepping too. Within
 * a thread a reading is not below an earlier one, except rarely by up to
 * the gap below: a reading made while another thread moves the anchor
 * is clock_gettime(CLOCK_REALTIME) itself. It is therefore close to
 * CLOCK_REALTIME, not equal to it: the gap is the rate error of one
 * period plus the noise of CLOCK_REALTIME itself (within 130 ns measured
 * on a KVM guest under moderate load; microseconds when the guest's CPUs
 * were heavily overcommitted). The first readings of a process (about 13 ms, while it
 * measures the rate) and every reading where the TSC is not usable are
 * clock_gettime(CLOCK_REALTIME) itself. The TSC is used only when the
 * CPU reports an invariant TSC and the kernel's clock source is "tsc".
 * A step of CLOCK_REALTIME (settimeofday, clock_settime) of more than
 * 100 us is followed by the first reading 1.6 ms or more after the
 * anchor; a smaller one is closed by the slew (488 ppm: 100 us in about
 * 0.2 s). Bound, by construction: a reading is within 100 us of
 * CLOCK_REALTIME (a larger gap is a step, and the clock steps with it;
 * measured gaps are about 1 us), and within a thread a reading may be
 * up to that much below an earlier one. "1.6 ms" is 2^22 ticks of the
 * TSC (4.2 ms at 1 GHz). The kernel may stop keeping time with the TSC
 * after the decision (its watchdog demotes a TSC that drifts or is out
 * of step): the decision is not taken again, and the bound above still
 * holds for the CPU that re-anchors; a thread on a CPU whose TSC is out
 * of step reads up to that offset off until the next re-anchor there.
 * The decision is taken once per process, when the first queue or pool
 * with the default clock is created (or at the first reading); a child
 * of fork() that finds it half done, or the anchor being rewritten,
 * starts over. A queue's lease rules hold on whatever clock it is given.
 * This is the default clock of queues and pools (not of the bus, whose
 * default is clock_gettime(CLOCK_REALTIME)); use
 * quay_queue_clock_realtime() where message times must match
 * CLOCK_REALTIME to the nanosecond.
 *
 * Concurrency: thread-safe, lock-free.
 * Returns: ns since the epoch.
 */
QUAY_API int64_t quay_queue_clock_tsc(void *ctx);

/**
 * clock_gettime(CLOCK_REALTIME) in ns, for the clock options (ctx is
 * unused): the exact clock, for a queue whose message times must match
 * CLOCK_REALTIME to the nanosecond (the default is
 * quay_queue_clock_tsc()). 25-35 ns a reading in a VM against 5-10.
 *
 * Concurrency: thread-safe.
 * Returns: ns since the epoch.
 */
QUAY_API int64_t quay_queue_clock_realtime(void *ctx);

/**
 * Creation options. Start from QUAY_QUEUE_OPTS_INIT; zero means the
 * default for every field.
 */
struct quay_queue_opts {
	size_t size;                      /**< sizeof(struct quay_queue_opts): the version */
	const char *name;                 /**< 1..QUAY_QUEUE_NAME_MAX bytes of [A-Za-z0-9_.:-]; NULL: "queue".
	                                  The stats label and the QUAY_MSG_H_DLQ_SOURCE header */
	unsigned flags;                   /**< QUAY_QUEUE_* flags */
	size_t capacity;                  /**< most messages held (ready + delayed + in flight),
	                                  1..QUAY_QUEUE_CAPACITY_MAX; 0: QUAY_QUEUE_CAPACITY_DEFAULT */
	size_t max_in_flight;             /**< most leases out at once, 1..capacity; 0: capacity */
	unsigned levels;                  /**< priority levels 1..256; 0: 1. A message's priority must
	                                  be < levels */
	const uint32_t *weights;          /**< QUAY_QUEUE_WEIGHTED: as quay_pq_opts.weights */
	int64_t visibility_ns;            /**< lease length; 0: QUAY_QUEUE_VISIBILITY_DEFAULT */
	uint32_t max_attempts;            /**< deliveries before dead-lettering, 1..1000; 0: the
	                                  default, 10 (0 means "default" for every option
	                                  here); > 1000 is -EINVAL */
	quay_queue *dlq;                  /**< dead-letter queue (not this one); NULL: dead letters
	                                  are dropped and counted */
	int64_t delay_ns;                 /**< default delay of a sent message without not-before */
	int64_t ttl_ns;                   /**< default TTL of a sent message without expiry; 0: none */
	int64_t backoff_base_ns;          /**< first retry delay; 0: 100 ms */
	double backoff_factor;            /**< growth per attempt, 1..1000; 0: 2 */
	int64_t backoff_max_ns;           /**< largest retry delay, >= base; 0: 60 s */
	uint64_t jitter_seed;             /**< seed of the full-jitter generator; 0: a fixed default */
	int64_t dedup_window_ns;          /**< 0: no deduplication; else ids seen within it are dropped */
	size_t dedup_capacity;            /**< live dedup ids guaranteed room (the table has at least
	                                  twice as many ways, probed over 8 sets); 0: capacity.
	                                  A send finding no room is -EAGAIN */
	int64_t tick_ns;                  /**< timer tick, 1 us..1 s; 0: 1 ms */
	quay_queue_failure_fn on_failure; /**< NULL: the default policy */
	quay_queue_dead_letter_fn on_dead_letter; /**< NULL: none */
	void *hook_ctx;                           /**< passed to both hooks */
	quay_queue_clock_fn clock;                /**< NULL: quay_queue_clock_tsc */
	void *clock_ctx;                          /**< passed to clock */
	quay_stats *stats; /**< registry for the queue's metrics; NULL: a private one */
	/* Durability (docs/DURABILITY.md). Fields added at the end: a caller
	 * built against the older, shorter struct (size up to `stats`) gets
	 * an in-memory queue. */
	struct quay_wal *wal;   /**< NULL: in memory only. Else a writable WAL (quay/wal.h) the
	                                  queue logs every transition to and recovers from at create;
	                                  it must outlive the queue. Its dlq must use the same WAL */
	quay_pool *pool;        /**< with wal: the pool recovered messages are made in (required) */
	uint64_t compact_bytes; /**< with wal: log bytes appended since the last compaction that
	                                  trigger the next (also at least the live set's bytes);
	                                  0: 4 x the WAL's segment size */
	/* Rate limit and alarms (docs/QUEUE.md). Fields at the end: a caller
	 * built against the struct ending at compact_bytes (or at stats) gets
	 * no limit and no alarms. */
	double rate_per_sec; /**< receive rate limit (token bucket): messages per second,
	                                  QUAY_QUEUE_RATE_MIN..QUAY_QUEUE_RATE_MAX; 0: none;
	                                  negative, NaN or outside the range: -EINVAL */
	uint32_t rate_burst; /**< bucket depth (messages received at once after an idle
	                                  spell), 1..QUAY_QUEUE_BURST_MAX; 0: 1. Needs rate_per_sec */
	struct quay_queue_threshold alarm[QUAY_QUEUE_ALARM_COUNT]; /**< indexed by quay_queue_alarm */
	int64_t failure_window_ns;    /**< window of the failure-rate alarm, 1 ms..1 day; 0: 60 s */
	uint32_t failure_min;         /**< fewest deliveries ended within the window for the
	                                  failure rate to count (else it reads 0); 0: 10 */
	quay_queue_alarm_fn on_alarm; /**< NULL: none (the states are still kept) */
	void *alarm_ctx;              /**< passed to on_alarm */
	/* Memory. A field at the end: a caller built against the struct ending
	 * at alarm_ctx (or before) gets the C library. */
	const struct quay_allocator *allocator; /**< where the queue's memory comes from (its private
	                                  registry and durable state included); NULL: the C
	                                  library. See quay/alloc.h; it must outlive the queue */
	/* Field added at the end: a caller built against the struct ending
	 * at allocator gets 0 (every evaluation counts). */
	int64_t alarm_period_ns; /**< shortest evaluation period of the alarms (queue clock):
	                                  an evaluation counts toward `periods` only if this
	                                  long has passed since the last one that counted, so
	                                  an alarm trips after periods x this much time however
	                                  often stats are read; 0..1 day; 0: every evaluation
	                                  counts (a period is the caller's polling period) */
};

/** Initialiser for struct quay_queue_opts: every field its default. */
/* clang-format off */
#define QUAY_QUEUE_OPTS_INIT { sizeof(struct quay_queue_opts), NULL, 0u, 0u, 0u, 0u, NULL, 0, 0u, NULL, 0, 0, \
	0, 0.0, 0, 0u, 0, 0u, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0u, 0.0, 0u, \
	{ { 0.0, 0.0, 0u }, { 0.0, 0.0, 0u }, { 0.0, 0.0, 0u }, { 0.0, 0.0, 0u }, { 0.0, 0.0, 0u } }, \
	0, 0u, NULL, NULL, NULL, 0 }
/* clang-format on */

/**
 * A lease on a received message: what ack, nack and extend take. Filled
 * by the receive calls; the fields are for reading (msg, deadline_ns):
 * queue, slot and gen are the fence and must not be changed. queue names
 * the queue that issued the lease (an id no other queue of the process
 * has, not even one created after this one is destroyed): every call
 * that takes a lease refuses one another queue issued with -ENOENT, even
 * when that queue's slot and generation happen to be the same.
 *
 * deadline_ns is at least the visibility timeout after the moment the
 * receive hands the lease out: a receive that did slow work before (due
 * timers, TTL-expired messages dead-lettered at the head) reads the clock
 * again after it, and a batch whose later leases needed such work renews
 * its earlier leases before it returns.
 *
 * msg is a reference of the caller's own: it stays valid after ack, nack
 * or expiry until the caller drops it with quay_msg_unref(). Do not
 * change the message while leased (other holders may read it).
 */
typedef struct quay_lease {
	quay_msg *msg;       /**< the message (one reference, the caller's) */
	int64_t deadline_ns; /**< lease expiry on the queue's clock (extend moves it) */
	uint64_t gen;        /**< fence: the slot's generation when leased */
	uint64_t queue;      /**< fence: the issuing queue's id (never 0) */
	uint32_t slot;       /**< lease table slot */
	uint32_t attempt;    /**< this delivery's number (1 = first) */
} quay_lease;

/** Counters and gauges of a queue (quay_queue_stats(); a struct tag only,
 * since the function has the same name). */
struct quay_queue_stats {
	uint64_t sent;     /**< accepted (send, dead letters in, redriven in); not duplicates */
	uint64_t received; /**< leases issued */
	uint64_t acked;
	uint64_t nacked;
	uint64_t retried;       /**< failures that were scheduled for redelivery */
	uint64_t lease_expired; /**< leases that expired (redelivered or dead-lettered) */
	uint64_t ttl_expired;   /**< messages found past their TTL (then dead-lettered or dropped) */
	uint64_t dead_lettered; /**< handed to the DLQ, or dropped for want of one */
	uint64_t redriven_out;  /**< moved to another queue by redrive */
	uint64_t dropped;       /**< removed by on_failure DROP */
	uint64_t deduplicated;  /**< sends refused as duplicates (not in sent) */
	uint64_t restored;      /**< put back by recovery (durable queues; not in sent) */
	uint64_t ready;         /**< gauge: messages ready */
	uint64_t delayed;       /**< gauge: messages waiting in the timer */
	uint64_t in_flight;     /**< gauge: leases out */
	int64_t oldest_age_ns;  /**< gauge: estimate, see quay_queue_stats() */
};

/**
 * Create a queue. Allocates everything it will ever use (the priority
 * queue, the lease table, the timer entries and the dedup table, sized by
 * capacity, max_in_flight and dedup_capacity) and registers its metrics
 * (families quay_queue_*_total, quay_queue_{ready,delayed,in_flight,
 * oldest_age_seconds}, quay_queue_{first_receive,ack}_latency_seconds
 * with label queue=<name>; the gauges are measured, as by
 * quay_queue_stats(), before every snapshot of the registry).
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL if opts or out is NULL, opts->size is
 *          wrong, flags has unknown bits, the name is invalid, a size is
 *          above its maximum, max_in_flight > capacity, levels > 256,
 *          max_attempts > 1000, a time is negative, backoff_max_ns <
 *          backoff_base_ns, backoff_factor is outside 1..1000, tick_ns is
 *          outside 1 us..1 s, dlq is the queue itself (impossible), its
 *          metric names are taken in opts->stats (another queue of the
 *          same name), or the allocator lacks alloc or free; -ENOMEM.
 *
 * Durable (opts->wal, docs/DURABILITY.md): the log is replayed and this
 * queue's live messages restored (counted as restored) before it returns.
 * Also -EINVAL if wal is set without pool, pool or compact_bytes without
 * wal, the WAL is READONLY, the dlq is not durable on the same WAL (or
 * this queue is in memory and the dlq durable), or a queue of this name
 * is open on the WAL; -EIO / -ENOSPC if the WAL has failed; -ENOSPC if
 * the log holds more live messages than capacity; -EBADMSG if a queue
 * record is malformed; -ENOMEM / -EMSGSIZE if the pool cannot make a
 * recovered message.
 */
QUAY_API int quay_queue_create(const struct quay_queue_opts *opts, quay_queue **out);

/**
 * Destroy a queue and drop its references to every message it holds.
 * NULL is ignored. A queue used as another's dlq must outlive it.
 * Pipelined sends in flight (quay_queue_send_async()) complete first:
 * their callbacks run before this returns.
 *
 * Concurrency: no other call may use q, and no thread may be in a call.
 */
QUAY_API void quay_queue_destroy(quay_queue *q);

/**
 * A file descriptor that polls readable while quay_queue_receive() with
 * wait_ns 0 would return something other than -EAGAIN: a message is
 * ready and a lease slot is free, a delayed message or a retry came due,
 * a lease expired (its timer work is due), or the queue is closed
 * (-EPIPE). Timed events are watched with a timer set to the queue's
 * next due time (a queue clock given in the options is read to convert
 * it; work due within the current tick is looked at one tick later), so
 * a loop needs no timeout of its own for them.
 *
 * Made on the first call (an epoll set of an eventfd and a timerfd, which
 * is itself pollable; later calls return the same descriptor); until
 * then nothing changes for the queue's users. Sends still make no system
 * call while the queue is non-empty: the descriptor is signalled once per
 * empty -> non-empty transition, when a send lowers the next due time
 * (a delayed send: one wake, after which the loop's receive re-arms the
 * timer), when a lease slot comes back while all were out, and on close.
 *
 * Re-armed by a receive (quay_queue_receive() or the batch call, any
 * thread) that finds nothing: so after a wake, receive with wait_ns 0
 * until -EAGAIN (or -EPIPE). A spurious wake is possible (receive says
 * -EAGAIN and re-arms). With a rate limit (rate_per_sec) the
 * descriptor may read readable while tokens are out: the loop then sees
 * -EAGAIN until the next token. Never read, write or close it:
 * quay_queue_destroy() closes it; remove it from your poller first.
 * docs/POLLING.md has the loop.
 *
 * Concurrency: safe from any thread, concurrently with anything but
 *              destroy.
 * Returns: the descriptor (>= 0); -EINVAL if q is NULL; -ENOMEM if it cannot be made
 *          (memory, or the process or system is out of descriptors).
 */
QUAY_API int quay_queue_fd(quay_queue *q);

/**
 * Send a message: the queue takes the caller's reference on success.
 * Stamps enqueued_ns; applies the default delay and TTL when the message
 * has none; resets attempts to 0 (max_attempts holds per queue: a
 * message acked in another queue, or a quay_msg_clone() of one, which
 * copies the count, starts here at attempt 1). A message whose not-before time is in the future is delayed,
 * else ready. With a dedup window, a message whose QUAY_MSG_H_DEDUP_ID
 * header was seen within the window is a duplicate: the queue drops the
 * reference, counts it and returns QUAY_QUEUE_DUPLICATE (1).
 *
 * Concurrency: lock-free for a ready message without dedup id; a delayed
 *              one takes the timer lock, a dedup id the dedup lock.
 * Ordering: release (see the top of this file).
 * Returns: 0 (enqueued); QUAY_QUEUE_DUPLICATE (the reference taken,
 *          nothing enqueued); -EINVAL if q or msg is NULL, its priority is >= levels or
 *          the dedup id is longer than QUAY_QUEUE_DEDUP_ID_MAX; -EAGAIN
 *          if the queue holds capacity messages or the dedup table is
 *          full of live ids. The caller keeps its reference on failure.
 *          Durable queue: returns once the message is as durable as the
 *          WAL's sync mode promises; -EIO / -ENOSPC / -EMSGSIZE if the
 *          log refused it (not enqueued, message unchanged). A message
 *          another durable queue holds (a shared message sent to two
 *          durable queues, or the same message twice in one batch) is
 *          sent as a copy (quay_msg_clone() in its pool; the original
 *          reference is dropped once the copy is in): -ENOMEM if the
 *          pool has no room for the copy. Every other message is
 *          enqueued as it is, never copied.
 *          -EPIPE if the queue is closed (quay_queue_close()).
 */
QUAY_API int quay_queue_send(quay_queue *q, quay_msg *msg);

/**
 * Completion of a pipelined send (quay_queue_send_async()): called once
 * per send that quay_queue_send_async() accepted (returned 0), on the
 * queue's completion thread, in the order the sends were accepted.
 *
 * rc 0: the message is as durable as quay_queue_send() would have made
 * it (SYNC: on stable storage) and the queue holds the caller's
 * reference; msg is valid during the call only, and becomes receivable
 * right after the callback returns (never before). rc < 0 (-EIO,
 * -ENOSPC: the WAL failed before the record was durable): the message
 * was not enqueued, its stamp is undone, and the reference is the
 * callback's again (unref it or send it elsewhere).
 *
 * The callback may call any queue function except quay_queue_destroy()
 * and quay_queue_send_wait() (-EDEADLK) of this queue; it runs before
 * the completions queued behind it, so keep it short.
 */
typedef void (*quay_queue_sent_fn)(void *arg, quay_msg *msg, int rc);

/** Most pipelined sends a queue holds in flight (quay_queue_send_async()). */
#define QUAY_QUEUE_ASYNC_MAX 4096u

/**
 * Send a message without waiting for its durability (a pipelined
 * send): admitted as quay_queue_send() (checks, room, dedup window,
 * stamp) and its record appended to the WAL at once, but the call
 * returns before the sync; done(arg, msg, rc) reports the outcome once
 * the record is durable (group commit: one fdatasync completes every
 * send in flight on the WAL). The message is not receivable before its
 * completion. A queue in memory, or a WAL in INTERVAL or NONE mode,
 * completes as soon as the completion thread gets to it.
 *
 * While in flight the queue owns the reference: the caller must not
 * change the message (its record may be read again by a compaction).
 * Sends of one thread complete, and become receivable, in the order
 * they were made; a quay_queue_send() made after them is not ordered
 * behind them unless quay_queue_send_wait() ran in between. Every
 * accepted send completes exactly once: quay_queue_close() does not
 * cancel them; quay_queue_destroy() first waits for every one (their
 * callbacks run before it returns).
 *
 * ticket (optional): the send's ticket, for quay_queue_send_done()
 * and quay_queue_send_wait(); tickets of a queue increase from 1 in
 * acceptance order. done may be NULL (poll the ticket; an rc != 0
 * then drops the reference).
 *
 * Concurrency: safe from any thread; the first call starts the queue's
 *              completion thread.
 * Returns: 0 (in flight: done will be called); QUAY_QUEUE_DUPLICATE
 *          (the dedup window took the reference; no callback); -EBUSY
 *          if QUAY_QUEUE_ASYNC_MAX sends are in flight on q (nothing
 *          done: wait for some, e.g. quay_queue_send_wait()); the codes
 *          of quay_queue_send() (-EINVAL, -EPIPE, -EAGAIN full, -ENOMEM,
 *          -EIO / -ENOSPC / -EMSGSIZE if the WAL refused the append):
 *          no callback, the reference is still the caller's;
 *          -EAGAIN also if the completion thread cannot be started.
 */
QUAY_API int quay_queue_send_async(quay_queue *q, quay_msg *msg, quay_queue_sent_fn done, void *arg,
    uint64_t *ticket);

/**
 * Has the pipelined send with this ticket completed (its callback
 * returned and, if it succeeded, its message is receivable)?
 *
 * Concurrency: lock-free. Ordering: acquire (what the callback did is
 *              visible once this returns true).
 * Returns: true or false; false for a NULL q or ticket 0.
 */
QUAY_API bool quay_queue_send_done(const quay_queue *q, uint64_t ticket);

/**
 * Wait until the pipelined send with this ticket, and every one before
 * it, has completed; ticket 0: every send accepted so far.
 *
 * Concurrency: safe from any thread but the completion thread.
 * Returns: 0; -EINVAL if q is NULL or ticket was never given out;
 *          -EDEADLK if called from a completion callback of q.
 */
QUAY_API int quay_queue_send_wait(quay_queue *q, uint64_t ticket);

/**
 * Send n messages, each as quay_queue_send(); results[i] (if results is
 * not NULL) gets each one's return value (QUAY_QUEUE_DUPLICATE for a
 * duplicate).
 *
 * Durable queue: every message that passes the checks is logged in one
 * WAL batch (one fdatasync in SYNC mode).
 *
 * Returns: the number whose reference the queue took (0..n): sent or
 *          QUAY_QUEUE_DUPLICATE; -EINVAL if q or msgs is NULL, n is 0,
 *          or a msgs[i] is NULL (nothing sent); -ENOMEM (durable: no
 *          room for the batch's bookkeeping; nothing sent).
 */
QUAY_API int quay_queue_send_batch(quay_queue *q, quay_msg **msgs, size_t n, int *results);

/**
 * Receive one message: lease the next ready message (highest priority
 * first, FIFO within a level) for the visibility timeout. Its attempts
 * field is incremented. Messages found past their TTL are dead-lettered
 * on the way and never delivered. The lease's deadline is computed from
 * a clock reading taken after that work and after the due timers the
 * call ran: it is at least visibility_ns after the moment the lease is
 * handed out (see quay_lease). Waits up to wait_ns of real time (< 0:
 * forever; 0: try once) for a message, waking as soon as one is sent or
 * a delayed one becomes due (also one sent after the call went to sleep):
 * after every wake it runs due timers, tries again and, if nothing is
 * ready, sleeps until min(its deadline, the next due time).
 *
 * Concurrency: lock-free but for the timer processing described above.
 * Ordering: acquire (see the top of this file).
 * With every lease slot taken (max_in_flight leases out) it waits too:
 * until a lease ends (ack, nack, release, expiry), the queue is closed
 * or wait_ns passes, then takes a message as above with what is left.
 *
 * Returns: 0 and *lease set; -EAGAIN if nothing is ready and wait_ns is
 *          0, or max_in_flight leases are out and none ended within
 *          wait_ns (at once if wait_ns is 0);
 *          -ETIMEDOUT if nothing came within wait_ns; -EPIPE if the
 *          queue is closed (at once, even with messages ready; a receive
 *          asleep when quay_queue_close() runs wakes with it); -EINVAL if
 *          q or lease is NULL. *lease is untouched on failure.
 */
QUAY_API int quay_queue_receive(quay_queue *q, quay_lease *lease, int64_t wait_ns);

/**
 * Receive up to n messages: waits (as quay_queue_receive()) for the
 * first, then takes what is ready without waiting and without running
 * timers. A TTL-expired message met after the first lease is
 * dead-lettered and ends the batch; if such work was done, the leases
 * taken before it are renewed to now + visibility before the call
 * returns (one that expired meanwhile, by another thread's timer or
 * this batch's own drain of the expiry FIFO, is not returned: its
 * reference is dropped and the delivery counts as an expired attempt).
 * If that leaves nothing and the wait has time left, the batch receives
 * again, so 0 still means timeout (or closed). Every lease returned obeys
 * the rule of quay_queue_receive().
 *
 * A return of 0 does not say why: to tell a closed queue from a timeout,
 * ask quay_queue_closed() after it (it takes nothing), e.g.
 * `if (n == 0 && quay_queue_closed(q)) break;` in a worker loop.
 *
 * Returns: the number received, 0..n (0 also if q or leases is NULL, n
 *          is 0, or the queue is closed: a batch asleep when
 *          quay_queue_close() runs returns 0).
 */
QUAY_API size_t quay_queue_receive_batch(quay_queue *q, quay_lease *leases, size_t n, int64_t wait_ns);

/**
 * Acknowledge: the message is done and leaves the queue (the queue drops
 * its reference; lease->msg stays the caller's). Valid only while the
 * lease has not expired: at or after lease->deadline_ns it is stale.
 *
 * Concurrency: lock-free (one compare-and-swap on the lease slot).
 * Returns: 0; -ESTALE if the lease ended (it expired, so its message is
 *          or will be redelivered or dead-lettered, or it was already
 *          acked or nacked): nothing changes; -ENOENT if the lease was
 *          never issued by this queue (another queue's lease, even one
 *          for the same message with the same slot and generation):
 *          nothing changes; -EINVAL if q or lease is NULL.
 *          Durable queue: 0 once the ack is durable; -EIO / -ENOSPC if
 *          the log refused it: the lease has ended and the message is
 *          ready again (not acked in memory either).
 */
QUAY_API int quay_queue_ack(quay_queue *q, const quay_lease *lease);

/**
 * Negative acknowledgement: the delivery failed. The failure policy
 * (on_failure, default backoff and max_attempts) decides: retry after a
 * delay, dead-letter or drop. reason (may be NULL) is passed to the hook.
 *
 * Returns: as quay_queue_ack().
 */
QUAY_API int quay_queue_nack(quay_queue *q, const quay_lease *lease, const char *reason);

/**
 * Release: hand the message back without a failure (a worker shutting
 * down, or one that took more than it can do). The message is ready
 * again at once, at the tail of its priority level, with no backoff and
 * without counting the delivery: its attempts goes back to what it was
 * before this lease, so the next delivery has the same attempt number
 * and max_attempts still counts real deliveries that failed or expired.
 * Not a nack: on_failure is not asked and nacked is not counted. Works
 * on a closed queue (the message then stays ready, undelivered).
 * Durable queue: nothing is logged (the log counts only failed
 * deliveries), so the message is still in the log and its attempts after
 * a restart do not include the released delivery.
 *
 * Concurrency: lock-free (one compare-and-swap on the lease slot).
 * Returns: 0; -ESTALE, -ENOENT as quay_queue_ack(); -EINVAL if q or
 *          lease is NULL.
 */
QUAY_API int quay_queue_release(quay_queue *q, const quay_lease *lease);

/**
 * Extend a lease: its deadline becomes now + more_ns (the lease's
 * deadline_ns is not updated: the caller's copy is const; read the new
 * deadline as now + more_ns). A shorter deadline than the current one
 * takes the timer lock (to move the lease's timer), before the lease.
 *
 * Returns: 0; -ESTALE, -ENOENT as quay_queue_ack(); -EINVAL if q or
 *          lease is NULL or more_ns <= 0.
 */
QUAY_API int quay_queue_extend(quay_queue *q, const quay_lease *lease, int64_t more_ns);

/**
 * Move up to max ready messages of dlq into to (oldest first within a
 * priority), each exactly once: attempts reset to 0, the DLQ headers
 * (reason, source, QUAY_QUEUE_H_DLQ_ATTEMPTS) and
 * the not-before time removed (headers only if the message is not shared
 * by another holder). Delayed and in-flight messages of dlq stay. Stops
 * early if to is full: room in to is reserved before a message is taken
 * from dlq, so a full target leaves dlq exactly as it was (every message
 * unchanged and in its place). dlq counts them as redriven_out, to as sent.
 * *moved (may be NULL) gets the number moved.
 *
 * Concurrency: safe against every call but destroy of either queue.
 * Returns: 0; -EAGAIN if to became full before max were moved (*moved
 *          says how many were); -EINVAL if dlq or to is NULL, they are
 *          the same queue, max is 0, or they are not both in memory or
 *          both durable on one WAL; -EPIPE if to is closed (a closed
 *          dlq may still be redriven from); durable: -EIO / -ENOSPC /
 *          -EMSGSIZE if the log refused a move (that message stays in
 *          dlq).
 */
QUAY_API int quay_queue_redrive(quay_queue *dlq, quay_queue *to, size_t max, size_t *moved);

/**
 * Visit every message the queue holds without leasing it: the ready ones
 * (in priority order), then the delayed ones, then the in-flight ones.
 * Stops when fn returns non-zero. msg is valid during the call only.
 *
 * Browsing takes the ready messages out of the priority queue and puts
 * them back in the same order: while it runs (one browse at a time)
 * receivers may miss them, and messages sent meanwhile may end up ahead
 * of them. It is an administrative tool, not a hot-path call.
 *
 * Returns: 0; the non-zero value fn returned; -EINVAL if q or fn is NULL.
 */
QUAY_API int quay_queue_browse(quay_queue *q, quay_queue_visit_fn fn, void *ctx);

/**
 * Close the queue, for shutdown (SQS has no such call): every receiver
 * asleep in quay_queue_receive() or quay_queue_receive_batch() wakes at
 * once with -EPIPE (a batch: 0), and every later receive returns -EPIPE
 * at once without delivering what is ready; sends and send batches
 * return -EPIPE (the caller keeps its reference), redrive into it too.
 * Leases already out stay valid: ack, nack, release and extend work as
 * before, and a nacked, released or expired message goes back to ready
 * or delayed as usual (the queue keeps holding it; stats, browse, tick
 * and redrive out of it still work). Dead letters from other queues are
 * still accepted (losing them would be worse). A receive that was
 * already taking a message when close ran may still return it.
 * There is no reopen. Durable queues: close is not logged; the queue
 * created again on the WAL after a restart is open and has its
 * messages. Closing twice is a no-op (0).
 *
 * Concurrency: safe against every call but destroy.
 * Returns: 0; -EINVAL if q is NULL.
 */
QUAY_API int quay_queue_close(quay_queue *q);

/**
 * Has quay_queue_close() run on q? A predicate with no side effect: it
 * takes no message, runs no timer and evaluates no alarm, so a worker
 * can ask it after quay_queue_receive_batch() returned 0 to tell a closed
 * queue (stop) from a timeout (poll again). Once true it stays true (there
 * is no reopen); messages still ready or in flight do not change it.
 *
 * Concurrency: safe from any thread, against every call but destroy.
 * Ordering: acquire: what the closing thread wrote before
 *           quay_queue_close() is visible once this returns true.
 * Returns: true if q is closed; false if it is open or q is NULL.
 */
QUAY_API bool quay_queue_closed(const quay_queue *q);

/**
 * Process due timers now: delayed messages that are due become ready
 * (waking sleeping receivers), expired leases are redelivered or
 * dead-lettered. Every send and receive does this when something is
 * due; call it after advancing a fake clock, or from an idle loop.
 *
 * Concurrency: safe from any thread (waits for the timer lock).
 * Returns: 0; -EINVAL if q is NULL.
 */
QUAY_API int quay_queue_tick(quay_queue *q);

/**
 * Read the counters and gauges (after processing due timers). The gauges
 * are measured (ready: the priority queue's count; delayed: the timer's
 * count; in_flight: the lease table's leased slots) and also written to
 * the registry's gauges. oldest_age_ns: the largest age (now - enqueued)
 * among delayed messages, in-flight messages (each lease slot keeps its
 * message's enqueue time) and, if any message is ready, the message most
 * recently received (an estimate of the oldest ready one); 0 if empty.
 *
 * Concurrency: safe from any thread; exact at quiescence only.
 * Returns: 0; -EINVAL if q or out is NULL.
 */
QUAY_API int quay_queue_stats(quay_queue *q, struct quay_queue_stats *out);

/**
 * Set (or change) the receive rate limit: a token bucket of `burst`
 * tokens refilled at per_sec tokens a second; each message received takes
 * one. per_sec = INFINITY removes the limit. A receive finding no token
 * returns -EAGAIN at once with wait_ns 0; a long poll sleeps until the
 * next token is due (it does not spin), then receives as usual. The
 * bucket is a single timestamp (GCRA), so a change takes effect on the
 * next token; tokens saved while idle are kept up to the new burst.
 *
 * Concurrency: safe from any thread (one atomic store).
 * Returns: 0; -EINVAL (nothing changed) if q is NULL, per_sec is zero,
 *          negative, NaN or outside QUAY_QUEUE_RATE_MIN..QUAY_QUEUE_RATE_MAX
 *          (INFINITY aside), or burst is 0 or above QUAY_QUEUE_BURST_MAX.
 */
QUAY_API int quay_queue_set_rate_limit(quay_queue *q, double per_sec, uint32_t burst);

/** One alarm in quay_queue_health(). */
struct quay_queue_alarm_state {
	bool enabled;         /**< its threshold is set */
	bool on;              /**< ALARM (else OK) */
	double value;         /**< the value at the last evaluation */
	uint32_t streak;      /**< consecutive counted evaluations toward the other state */
	uint64_t transitions; /**< OK -> ALARM and back, counted */
	int64_t since_ns;     /**< queue clock of the last transition (0: never) */
};

/** The health of a queue (quay_queue_health(); a struct tag only, as stats). */
struct quay_queue_health {
	quay_queue_health_state state;
	struct quay_queue_alarm_state alarm[QUAY_QUEUE_ALARM_COUNT];
};

/**
 * Evaluate every alarm now (an evaluation: quay_queue_stats() and every
 * snapshot of the queue's metrics registry are evaluations too; it counts
 * toward `periods` as quay_queue_opts.alarm_period_ns says) and read the
 * states and the overall state: FAILING if the DLQ or failure-rate
 * alarm is on, else DEGRADED if any other alarm is on, else HEALTHY.
 * Transitions call on_alarm and set the gauges quay_queue_alarm{queue,
 * alarm} (0/1) and quay_queue_health{queue} (0/1/2) of the queue's registry.
 *
 * Concurrency: safe from any thread (takes the queue's alarm lock).
 * Returns: 0; -EINVAL if q or out is NULL.
 */
QUAY_API int quay_queue_health(quay_queue *q, struct quay_queue_health *out);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_QUEUE_H */
