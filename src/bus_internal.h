/* SPDX-License-Identifier: MIT */
/* Private declarations shared by src/bus.c and src/bus_match.c. */
#ifndef QUAY_BUS_INTERNAL_H
#define QUAY_BUS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/bus.h>
#include <quay/pq.h>
#include <quay/ring.h>
#include <quay/stats.h>

#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "clock.h"
#include "quay_internal.h"

/* ThreadSanitizer cannot see liburcu's grace periods (membarrier(2) and
 * plain accesses in an uninstrumented library), so TSan builds add a
 * release RMW at the end of every read-side section and an acquire load
 * before every deferred free (see quayi_bus_tsan_*() in bus.c). */
#if defined(__SANITIZE_THREAD__)
#define QUAYI_BUS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define QUAYI_BUS_TSAN 1
#endif
#endif
#ifndef QUAYI_BUS_TSAN
#define QUAYI_BUS_TSAN 0
#endif

/* ---- subjects and patterns (bus_match.c) --------------------------- */

/* A parsed subject or pattern: token offsets and lengths into s. */
struct quayi_bm_toks {
	const char *s;
	uint32_t len;
	uint32_t n;
	uint32_t nhash; /* `#` tokens (patterns) */
	uint16_t off[QUAY_BUS_TOKENS_MAX];
	uint16_t tlen[QUAY_BUS_TOKENS_MAX];
};

/* Parse and check s; pattern allows `*` and a last `>`. 0 or -EINVAL. */
int quayi_bm_parse(const char *s, bool pattern, struct quayi_bm_toks *t);

/* Check a publish subject and hash it in one pass over its bytes.
 * 0 (and *len, *hash set) or -EINVAL. */
int quayi_bm_scan_subject(const char *s, uint32_t *len, uint64_t *hash);
/* The two halves of scan_subject: the length and hash of s (0, or -EINVAL
 * for an empty or too long subject), and the check of its bytes and
 * tokens (0 or -EINVAL). publish checks only a subject that is not in the
 * cache: every cached entry was resolved for a checked subject. */
int quayi_bm_subject_hash(const char *s, uint32_t *len, uint64_t *hash);
int quayi_bm_check_subject(const char *s, uint32_t len);

/* The reference matcher: a pattern against a subject, both parsed. */
bool quayi_bm_match_toks(const struct quayi_bm_toks *pat, const struct quayi_bm_toks *subj);

/* ---- the subscription table ---------------------------------------- */

struct quayi_bus_group;

/* A queue group: its members share delivery. Lives while it has members
 * (count under the bus mutex); freed after a grace period. */
struct quayi_bus_group {
	struct rcu_head rcu;
	struct quay_bus *bus;         /* for the deferred free's accounting */
	struct quayi_bus_group *next; /* bus list, under the bus mutex */
	uint32_t members;             /* under the bus mutex */
	/* Round-robin cursor; relaxed fetch_add: only spreads load, orders
	 * nothing. */
	uint32_t rr;
	char name[QUAY_BUS_NAME_MAX + 1];
};

/* A resolved subject: its plain subscriptions, then per group the
 * members that match. Immutable once published in a cache slot. */
struct quayi_bm_gref {
	struct quayi_bus_group *g;
	uint32_t first; /* index into subs */
	uint32_t n;
};

struct quayi_bm_centry {
	uint64_t hash;
	uint32_t len;
	uint32_t nplain;   /* subs[0..nplain) get their own copy */
	uint32_t ngroups;  /* groups[0..ngroups) */
	uint32_t ntargets; /* nplain + ngroups */
	uint32_t stamp;    /* a target records latency: stamp enqueued_ns */
	uint32_t prio_max; /* highest message priority every target takes
	                      (the fewest levels - 1; 255 with no levels) */
	uint32_t special;  /* a target has a filter or is a bound queue */
	uint32_t nsubs;    /* entries of subs and filt (the entry's size) */
	struct quay_sub **subs;
	/* With special: each target's filter (or NULL), parallel to subs,
	 * so that a filter miss does not touch the subscription. */
	const struct quayi_filter **filt;
	struct quayi_bm_gref *groups;
	char subj[];
};

struct quayi_bm_node;

/* One immutable version of the table: a trie root and its cache. */
struct quayi_bm_table {
	struct rcu_head rcu;
	struct quay_bus *bus; /* set by bus.c: the deferred free's accounting */
	/* Unique over the process's life (never 0, never reused, even when
	 * the memory is): the key of publish's per-thread last-subject memo,
	 * which a table at a recycled address must not match. */
	uint64_t uid;
	struct quayi_bm_node *root;
	size_t nsubs;
	/* Nodes this version had and the next one replaced: freed with it. */
	struct quayi_bm_node **garbage;
	size_t ngarbage;
	/* Its cache: set before the version is published (BUS-T1), then only
	 * its slots change. */
	struct quayi_bm_cache *cache;
	const struct quay_allocator *alloc; /* the bus's: the table, nodes, entries */
};

/* Cache slots: NULL, or an entry published once with a release CAS (BUS-E1)
 * and read with an acquire load (BUS-E2); never replaced while the table
 * lives. used[0..nused) lists the filled slots, so that retiring a
 * version frees and clears only those and the cache is reused. */
struct quayi_bm_cache {
	struct quayi_bm_cache *next; /* free list */
	/* Relaxed: each filler takes a distinct index; the retiring callback
	 * reads it after a grace period. */
	uint32_t nused;
	uint16_t used[QUAY_BUS_CACHE_ENTRIES];
	struct quayi_bm_centry *slot[QUAY_BUS_CACHE_ENTRIES];
};

/* Retired caches kept for reuse (a zeroed cache costs a 64 KiB memset). */
struct quayi_bm_cache_pool {
	pthread_mutex_t lock;
	struct quayi_bm_cache *head;
	size_t n;
	const struct quay_allocator *alloc; /* the bus's: caches and every table */
};

void quayi_bm_cache_pool_init(struct quayi_bm_cache_pool *p, const struct quay_allocator *a);
void quayi_bm_cache_pool_fini(struct quayi_bm_cache_pool *p);

/* A new empty table (NULL: out of memory). */
struct quayi_bm_table *quayi_bm_table_new(struct quayi_bm_cache_pool *pool);

/* A new version with sub added under pattern pat (or removed), sharing
 * the untouched nodes of old; the replaced nodes are recorded in
 * old->garbage. 0, -ENOMEM (nothing changed), -ENOENT (remove: absent). */
int quayi_bm_insert(struct quayi_bm_table *old, const struct quayi_bm_toks *pat, struct quay_sub *sub,
    struct quayi_bm_cache_pool *pool, struct quayi_bm_table **out);
int quayi_bm_remove(struct quayi_bm_table *old, const struct quayi_bm_toks *pat, struct quay_sub *sub,
    struct quayi_bm_cache_pool *pool, struct quayi_bm_table **out);

/* Free a retired version: the table, its cache entries and its garbage
 * (nodes shared with later versions stay). */
void quayi_bm_table_retire_free(struct quayi_bm_table *t, struct quayi_bm_cache_pool *pool);
/* Free the last version and every node still reachable from it. */
void quayi_bm_table_free_all(struct quayi_bm_table *t, struct quayi_bm_cache_pool *pool);

/* Resolve a checked subject (len bytes, hash from scan_subject) in t.
 * Returns the entry, or NULL on out of memory. *temp is set when the
 * entry could not be cached: the caller frees it (quayi_bm_centry_free()) after use.
 * Called inside an RCU read-side section. */
const struct quayi_bm_centry *quayi_bm_lookup(struct quayi_bm_table *t, const char *subj, uint32_t len,
    uint64_t hash, bool *temp);
/* The cached entry of a subject (len bytes, hash from subject_hash), or
 * NULL if it is not in t's cache (then: check it, and lookup). Inside an
 * RCU read-side section. */
const struct quayi_bm_centry *quayi_bm_cached(struct quayi_bm_table *t, const char *subj, uint32_t len,
    uint64_t hash);
/* Free an entry quayi_bm_lookup() returned with *temp set. */
void quayi_bm_centry_free(const struct quayi_bm_table *t, const struct quayi_bm_centry *e);

/* The group of a subscription (bus.c), for resolution. */
struct quayi_bus_group *quayi_bus_sub_group(const struct quay_sub *sub);
/* Whether a subscription records receive latency (bus.c). */
bool quayi_bus_sub_stamps(const struct quay_sub *sub);
/* The highest message priority a subscription takes (bus.c). */
uint32_t quayi_bus_sub_prio_max(const struct quay_sub *sub);
/* Whether a target needs the general fan-out: a filter or a queue (bus.c). */
bool quayi_bus_sub_special(const struct quay_sub *sub);
struct quayi_filter;
/* A target's compiled header filter, or NULL (bus.c). */
const struct quayi_filter *quayi_bus_sub_filter(const struct quay_sub *sub);

/* The bus's name (read-only after create; for the HTTP module). */
const char *quayi_bus_name(const quay_bus *bus);

/* ---- the publish tap (the NATS module's wildcard exports) ---------- */

/* Called on the publisher's thread by every publish call on the bus
 * (publish, publish_ex, batch, many; not a reply to an inbox) with the
 * checked subject (len bytes) and msgs[0..n), before they are delivered,
 * inside the RCU read-side section. It takes its own reference of each
 * message it keeps and may wait (bounded). Returns 1 if it took them: a
 * publish of one message then counts the tap as one more delivery (so a
 * request through it is not "no subscriber"); 0 if not. */
struct quayi_bus_tap {
	int (*fn)(void *arg, const char *subject, uint32_t len, quay_msg *const *msgs, size_t n);
	void *arg;
};

/* Set the bus's tap (one per bus), or remove it (tap NULL: then waits for
 * a grace period, so no call of the old tap runs after it returns; not
 * from inside a publish). 0; -EBUSY if another is set; -EINVAL. */
int quayi_bus_set_tap(quay_bus *bus, const struct quayi_bus_tap *tap);


/* ---- the bus object (bus.c; request/reply in bus_request.c) ---------- */

#define REQ_BUSY ((uint64_t)1 << 63)
#define REQ_DONE ((uint64_t)1 << 62)
#define REQ_N_MASK (REQ_DONE - 1)

struct quayi_bus_req {
	uint64_t state;  /* BUS-Q1..BUS-Q3 above */
	uint64_t req_id; /* written by the owner before it publishes */
	quay_msg *reply; /* ordered by BUS-Q2/BUS-Q3 */
	uint32_t done;   /* futex word: 1 when the requester should look */
} QUAYI_ALIGNED(QUAY_CACHELINE);

struct quay_bus {
	struct quayi_bm_table *table; /* BUS-T1/BUS-T2 */
	/* Set by destroy; calls that see it return -EPIPE. Acquire/release
	 * with destroy's store (it only makes late calls fail fast). */
	uint32_t closing;
	int64_t (*clock)(void *);
	void *clock_arg;
	uint32_t lat_mask; /* latency_sample - 1 */
	uint64_t id;
	char inbox[40];
	size_t inbox_len;
	char name[QUAY_BUS_NAME_MAX + 1];

	pthread_mutex_t lock;  /* subscribe/unsubscribe */
	struct quay_sub *subs; /* under lock */
	/* Written under lock; relaxed reads by quay_bus_sub_count(). */
	size_t nsubs;
	size_t max_subs;
	struct quayi_bus_group *groups; /* under lock */
	uint64_t next_sub_id;           /* relaxed: only uniqueness matters */

	quay_stats *stats;
	bool own_stats;
	const struct quay_allocator *alloc; /* quay_bus_opts.allocator: every block of the bus's */
	quay_counter *c_published, *c_delivered, *c_dropped, *c_rejected, *c_timeouts, *c_nosub, *c_late,
	    *c_unroutable, *c_unroutable_queued, *c_filtered, *c_bound;
	quay_queue *unroutable; /* opts.unroutable; read-only */

	unsigned nreq;
	struct quayi_bus_req *reqs;
	uint64_t req_next;                 /* relaxed: a ticket, uniqueness only */
	uint32_t req_active;               /* requesters inside request(); destroy waits */
	uint64_t pending;                  /* call_rcu callbacks not yet run */
	struct quayi_bm_cache_pool caches; /* retired caches, for reuse */
	/* BUS-TAP1: set_tap's release store (under lock) -> BUS-TAP2:
	 * publish's acquire load; NULL but for NATS wildcard exports. */
	const struct quayi_bus_tap *tap;
};

/* Clocks and futex calls: src/clock.h (quayi_mono_ns, quayi_real_clock,
 * deadlines) and src/quay_internal.h (quayi_futex_wait/_wake_all). */

/* The reply route (bus_request.c): whether subject is an inbox of this
 * bus (its number in *n), and the delivery of m to the request waiting on
 * inbox n (1), or its drop as a late reply (0). */
bool quayi_bus_is_inbox(const struct quay_bus *bus, const char *subject, uint32_t len, uint64_t *n);
int quayi_bus_route_reply(struct quay_bus *bus, uint64_t n, quay_msg *m);

#endif /* QUAY_BUS_INTERNAL_H */
