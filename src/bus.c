/* SPDX-License-Identifier: MIT */
/*
 * The bus: subscriptions, fan-out, queue groups, request/reply, metrics.
 * The trie and the subject cache are in bus_match.c; docs/BUS.md gives
 * the design and the measured figures.
 *
 * RCU (liburcu memb flavour, plain calls: no _LGPL_SOURCE). The current
 * table version is one pointer, bus->table:
 *   T1 subscribe/unsubscribe: store-release of the new version (under the
 *      bus mutex) -> T2 publish: load-acquire inside a read-side section.
 * Replaced versions, removed subscriptions and emptied groups are freed
 * by call_rcu callbacks, after every read-side section that could see
 * them. Receivers are not inside a read-side section while they sleep:
 * they enter one only to check sub->closed and bump sub->inflight (R1);
 * unsubscribe sets closed before its grace period starts, so every
 * receiver either saw closed or is counted in inflight, and the sub's
 * callback waits for inflight to drop to 0 (R2, acquire, pairs with the
 * receiver's release decrement) before freeing.
 *
 * Request/reply. Each waiting request owns a slot of bus->reqs; its
 * inbox subject is "_INBOX.<bus id>.<n>" with n % nreq its slot. The slot
 * word state is 0 (free), n (waiting), n|BUSY (a reply is being stored),
 * n|DONE (stored). Q1 the replier's CAS n -> n|BUSY (acq_rel) makes it
 * the only one to store; Q2 its store-release of n|DONE -> Q3 the
 * requester's load-acquire, which then reads the reply. A requester that
 * times out takes its slot back with a CAS n -> 0, which fails only if a
 * reply is being stored (it then waits for DONE and returns the reply).
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bus_internal.h"

/* container_of through void *, so clang's -Wcast-align stays quiet. */
#define BUS_CONTAINER(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

#define REQ_BUSY ((uint64_t)1 << 63)
#define REQ_DONE ((uint64_t)1 << 62)
#define REQ_N_MASK (REQ_DONE - 1)

struct bus_req {
	_Atomic uint64_t state;     /* Q1..Q3 above */
	_Atomic uint64_t req_id;    /* written by the owner before it publishes */
	_Atomic(quay_msg *) reply;  /* ordered by Q2/Q3 */
	_Atomic uint32_t done;      /* futex word: 1 when the requester should look */
} QUAYI_ALIGNED(QUAY_CACHELINE);

struct quay_sub {
	struct rcu_head rcu;
	struct quay_bus *bus;
	quay_ring *ring;
	quay_pq *pq;
	unsigned levels;
	enum quay_sub_policy policy;
	int64_t block_timeout_ns;
	unsigned flags;
	struct quayi_bus_group *group;
	_Atomic uint32_t closed;
	_Atomic uint32_t inflight;
	uint64_t id;
	struct quayi_bm_toks toks;
	quay_counter *c_delivered, *c_received, *c_dropped, *c_rejected, *c_timeouts, *c_released;
	quay_hist *h_latency;
	quay_gauge *g_pending;            /* measured by its collector */
	struct quay_sub *prev, *next;  /* bus list, under the bus mutex */
	char pattern[QUAY_BUS_SUBJECT_MAX + 1];
};

struct quay_bus {
	_Atomic(struct quayi_bm_table *) table;  /* T1/T2 */
	/* Set by destroy; calls that see it return -EPIPE. Acquire/release
	 * with destroy's store (it only makes late calls fail fast). */
	_Atomic uint32_t closing;
	int64_t (*clock)(void *);
	void *clock_arg;
	uint64_t id;
	char inbox[40];
	size_t inbox_len;
	char name[QUAY_BUS_NAME_MAX + 1];

	pthread_mutex_t lock;             /* subscribe/unsubscribe */
	struct quay_sub *subs;            /* under lock */
	/* Written under lock; relaxed reads by quay_bus_sub_count(). */
	_Atomic size_t nsubs;
	size_t max_subs;
	struct quayi_bus_group *groups;   /* under lock */
	_Atomic uint64_t next_sub_id;     /* relaxed: only uniqueness matters */

	quay_stats *stats;
	bool own_stats;
	quay_counter *c_published, *c_delivered, *c_dropped, *c_rejected, *c_timeouts, *c_nosub,
	    *c_late;

	unsigned nreq;
	struct bus_req *reqs;
	_Atomic uint64_t req_next;        /* relaxed: a ticket, uniqueness only */
	_Atomic uint32_t req_active;      /* requesters inside request(); destroy waits */
	_Atomic uint64_t pending;         /* call_rcu callbacks not yet run */
	struct quayi_bm_cache_pool caches; /* retired caches, for reuse */
	/* BUS-TAP1: set_tap's release store (under lock) -> BUS-TAP2:
	 * publish's acquire load; NULL but for NATS wildcard exports. */
	const struct quayi_bus_tap *tap;
};

/* ---- RCU thread registration --------------------------------------- */

static pthread_once_t rcu_once = PTHREAD_ONCE_INIT;
static pthread_key_t rcu_key;
static bool rcu_key_ok;
/* initial-exec: read on every call; one flag fits the static TLS surplus
 * even when libquay is dlopen()ed (as quayi_stats_tslot in stats.c). */
static __thread bool rcu_registered __attribute__((tls_model("initial-exec")));

static void
rcu_thread_exit(void *arg)
{
	(void)arg;
	urcu_memb_unregister_thread();
	rcu_registered = false;
}

static void
rcu_key_init(void)
{
	rcu_key_ok = pthread_key_create(&rcu_key, rcu_thread_exit) == 0;
}

static int
rcu_register_slow(void)
{
	pthread_once(&rcu_once, rcu_key_init);
	if (!rcu_key_ok)
		return -ENOMEM;
	if (pthread_setspecific(rcu_key, (void *)1) != 0)
		return -ENOMEM;
	urcu_memb_register_thread();
	rcu_registered = true;
	return 0;
}

/* Register the calling thread with liburcu once (unregistered at exit). */
static inline int
rcu_thread(void)
{
	if (QUAYI_LIKELY(rcu_registered))
		return 0;
	return rcu_register_slow();
}

#if QUAYI_BUS_TSAN
/* See bus_internal.h: make grace periods visible to ThreadSanitizer. */
static _Atomic uint64_t tsan_gp;

static inline void
tsan_read_end(void)
{
	atomic_fetch_add_explicit(&tsan_gp, 1, memory_order_release);
}

static inline void
tsan_reclaim(void)
{
	(void)atomic_fetch_add_explicit(&tsan_gp, 0, memory_order_acquire);
}
#else
static inline void
tsan_read_end(void)
{
}

static inline void
tsan_reclaim(void)
{
}
#endif

/* call_rcu, with the hand-over to the callback thread made visible to
 * ThreadSanitizer (liburcu's queue is not instrumented). */
static void
defer_free(struct quay_bus *bus, struct rcu_head *h, void (*fn)(struct rcu_head *))
{
	/* Relaxed: destroy reads it only after this thread's last call
	 * returned (the caller serialises destroy with everything else). */
	atomic_fetch_add_explicit(&bus->pending, 1, memory_order_relaxed);
	tsan_read_end();
	urcu_memb_call_rcu(h, fn);
}

/* The last step of every callback: the bus may be freed right after. */
static void
deferred_done(struct quay_bus *bus)
{
	/* Release; pairs with destroy's acquire wait for 0. */
	atomic_fetch_sub_explicit(&bus->pending, 1, memory_order_release);
}

static inline void
read_unlock(void)
{
	tsan_read_end();
	urcu_memb_read_unlock();
}

/* ---- small helpers ------------------------------------------------- */

static int64_t
clock_realtime(void *arg)
{
	struct timespec ts;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
futex_wake_all(_Atomic uint32_t *w)
{
	syscall(SYS_futex, (uint32_t *)(void *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Sleep while *w == val, until deadline (CLOCK_MONOTONIC; < 0: none). */
static void
futex_wait(_Atomic uint32_t *w, uint32_t val, int64_t deadline)
{
	struct timespec ts, *tp = NULL;

	if (deadline >= 0) {
		int64_t left = deadline - mono_ns();
		if (left <= 0)
			return;
		ts.tv_sec = (time_t)(left / 1000000000);
		ts.tv_nsec = (long)(left % 1000000000);
		tp = &ts;
	}
	syscall(SYS_futex, (uint32_t *)(void *)w, FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
}

static bool
valid_name(const char *s)
{
	size_t n = strnlen(s, QUAY_BUS_NAME_MAX + 1);

	if (n == 0 || n > QUAY_BUS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

struct quayi_bus_group *
quayi_bus_sub_group(const struct quay_sub *sub)
{
	return sub->group;
}

bool
quayi_bus_sub_stamps(const struct quay_sub *sub)
{
	return sub->h_latency != NULL;
}

uint32_t
quayi_bus_sub_prio_max(const struct quay_sub *sub)
{
	return sub->levels != 0 ? sub->levels - 1 : QUAY_MSG_PRIORITY_MAX;
}

/* ---- the queue of a subscription ------------------------------------ */

/* A message's level in a priority subscription. publish refuses a
 * priority above the levels of any target (-EINVAL, as the queue does);
 * the clamp only guards against a priority changed by another holder
 * after that check (a single-word race, see quay/msg.h "Mutation"). */
static inline unsigned
sub_level(const struct quay_sub *s, const quay_msg *m)
{
	unsigned p = quay_msg_priority(m);

	return p < s->levels ? p : s->levels - 1;
}

static inline int
sub_push(struct quay_sub *s, quay_msg *m)
{
	if (s->pq != NULL)
		return quay_pq_push(s->pq, sub_level(s, m), &m);
	return quay_ring_push(s->ring, &m);
}

static inline int
sub_pop(struct quay_sub *s, quay_msg **m)
{
	if (s->pq != NULL)
		return quay_pq_pop(s->pq, m, NULL);
	return quay_ring_pop(s->ring, m);
}

static inline void
sub_close(struct quay_sub *s)
{
	if (s->pq != NULL)
		quay_pq_close(s->pq);
	else
		quay_ring_close(s->ring);
}

/* ---- delivery ------------------------------------------------------ */

enum outcome { D_OK, D_FULL, D_DROPPED, D_REJECTED, D_TIMEDOUT, D_CLOSED };

/*
 * References. A publish needs one reference of m per target that queues
 * it. The publisher holds one; fan-out takes the others up front with one
 * CAS (msg_ref_n) and hands each target one of them, the publisher's
 * included, so a message published to one target costs no reference
 * count operation at all. A push that succeeds gives its reference to
 * the queue: after the last one, m may already be freed by a receiver,
 * so nothing reads m after pushing it to its last target. References
 * that no target took are given back at the end (msg_unref_n).
 *
 * These two helpers act on quay_msg.refcount directly (the struct is
 * transparent, quay/impl/msg_inline.h) with the same protocol as
 * quay_msg_ref()/quay_msg_unref(): F1 and U1 there.
 */

/* Take k more references of m (the caller holds one): 0, or -EINVAL when
 * the count would overflow (nothing taken). */
static inline int
msg_ref_n(quay_msg *m, uint32_t k)
{
	/* Relaxed (F1 of msg_inline.h): the caller holds a reference, so m
	 * cannot be freed meanwhile and there is nothing to publish; the CAS
	 * validates the value. */
	uint32_t c = __atomic_load_n(&m->refcount, __ATOMIC_RELAXED);

	do {
		if (QUAYI_UNLIKELY(c > UINT32_MAX - k))
			return -EINVAL;
	} while (!__atomic_compare_exchange_n(&m->refcount, &c, c + k, true, __ATOMIC_RELAXED,
	    __ATOMIC_RELAXED));
	return 0;
}

/* Drop k references of m that the caller holds. */
static inline void
msg_unref_n(quay_msg *m, uint32_t k)
{
	if (k == 0)
		return;
	if (k > 1) {
		/* Release (U1 of msg_inline.h): publishes our use of m to
		 * whoever frees it (this RMW joins the release sequence its
		 * acquire reads). We keep one reference, so the count stays
		 * above 0 and only quay_msg_unref() below may free. */
		(void)__atomic_fetch_sub(&m->refcount, k - 1, __ATOMIC_RELEASE);
	}
	(void)quay_msg_unref(m);
}

/* Queue m on s without waiting, with a reference the caller took for it
 * (given to the queue on success, still the caller's otherwise). */
static inline enum outcome
deliver_try(struct quay_sub *s, quay_msg *m)
{
	int r = sub_push(s, m);

	if (QUAYI_LIKELY(r == 0)) {
		quay_counter_inc(s->c_delivered);
		return D_OK;
	}
	return r == -EPIPE ? D_CLOSED : D_FULL;
}

/* s was full (or we did not try yet): apply its policy. */
static enum outcome
deliver_policy(struct quay_bus *bus, struct quay_sub *s, quay_msg *m)
{
	enum outcome o = deliver_try(s, m);
	int r;

	if (o != D_FULL)
		return o;
	switch (s->policy) {
	case QUAY_SUB_DROP_NEWEST:
		quay_counter_inc(s->c_dropped);
		quay_counter_inc(bus->c_dropped);
		return D_DROPPED;
	case QUAY_SUB_REJECT:
		quay_counter_inc(s->c_rejected);
		quay_counter_inc(bus->c_rejected);
		return D_REJECTED;
	case QUAY_SUB_DROP_OLDEST:
		for (int tries = 0; tries < 8; tries++) {
			quay_msg *old;
			r = sub_pop(s, &old);
			if (r == 0) {
				(void)quay_msg_unref(old);
				quay_counter_inc(s->c_dropped);
				quay_counter_inc(bus->c_dropped);
			} else if (r == -EPIPE) {
				return D_CLOSED;
			}
			o = deliver_try(s, m);
			if (o != D_FULL)
				return o;
		}
		/* Other publishers keep refilling it: drop ours instead. */
		quay_counter_inc(s->c_dropped);
		quay_counter_inc(bus->c_dropped);
		return D_DROPPED;
	case QUAY_SUB_BLOCK:
	default:
		if (s->pq != NULL)
			r = quay_pq_push_wait(s->pq, sub_level(s, m), &m, s->block_timeout_ns);
		else
			r = quay_ring_push_wait(s->ring, &m, s->block_timeout_ns);
		if (r == 0) {
			quay_counter_inc(s->c_delivered);
			return D_OK;
		}
		if (r == -EPIPE)
			return D_CLOSED;
		quay_counter_inc(s->c_timeouts);
		quay_counter_inc(bus->c_timeouts);
		return D_TIMEDOUT;
	}
}

static inline void
account(struct quay_bus_pub_result *res, enum outcome o)
{
	switch (o) {
	case D_OK: res->delivered++; break;
	case D_DROPPED: res->dropped++; break;
	case D_REJECTED: res->rejected++; break;
	case D_TIMEDOUT: res->timed_out++; break;
	case D_CLOSED: res->closed++; break;
	case D_FULL: break;
	}
}

#define BATCH_CHUNK 64       /* messages per bulk push */
#define BATCH_BULK_MAX 256   /* plain targets tried with bulk pushes */

/* Whether plain target i of a batch already took the chunk (bulk push). */
static inline bool
bulk_done(const uint64_t *bulk, uint32_t i)
{
	return bulk != NULL && i < BATCH_BULK_MAX && ((bulk[i >> 6] >> (i & 63)) & 1) != 0;
}

/* Deliver m to every target of e (but the plain targets marked in bulk,
 * which already have it), with one reference of m per target held by
 * the caller (see msg_ref_n). */
static void
fan_out(struct quay_bus *bus, const struct quayi_bm_centry *e, quay_msg *m, struct quay_bus_pub_result *res,
    const uint64_t *bulk)
{
	res->matched = e->ntargets;
	for (uint32_t i = 0; i < e->nplain; i++) {
		struct quay_sub *s = e->subs[i];
		enum outcome o;

		if (bulk_done(bulk, i))
			continue;
		o = deliver_try(s, m);
		if (QUAYI_UNLIKELY(o == D_FULL))
			o = deliver_policy(bus, s, m);
		account(res, o);
	}
	for (uint32_t gi = 0; gi < e->ngroups; gi++) {
		const struct quayi_bm_gref *g = &e->groups[gi];
		struct quay_sub *const *mem = e->subs + g->first;
		uint32_t start = 0;
		enum outcome o = D_FULL;

		if (g->n > 1) {
			/* Relaxed: the cursor only spreads the load. */
			start = atomic_fetch_add_explicit(&g->g->rr, 1, memory_order_relaxed) % g->n;
		}
		uint32_t full = g->n;   /* the first member found full */

		/* The chosen member, then the others that have room. */
		for (uint32_t k = 0; k < g->n && o != D_OK; k++) {
			uint32_t idx = (start + k) % g->n;
			enum outcome ok = deliver_try(mem[idx], m);
			if (ok == D_OK)
				o = D_OK;
			else if (ok == D_FULL && full == g->n)
				full = idx;
		}
		if (o != D_OK)   /* every member full (or unsubscribed meanwhile) */
			o = full < g->n ? deliver_policy(bus, mem[full], m) : D_CLOSED;
		account(res, o);
	}
}

/* Whether publish must refuse a message with this outcome, and how. */
static inline int
refusal(const struct quay_bus *bus, const struct quay_bus_pub_result *res)
{
	if (res->delivered > 0)
		return 0;
	if (res->rejected > 0)
		return -EAGAIN;
	if (res->timed_out > 0)
		return -ETIMEDOUT;
	/* A target closed under us by destroy (which closes every queue
	 * first, waking BLOCK publishers): -EPIPE, the caller keeps its
	 * reference. Acquire; pairs with destroy's release store. A target
	 * closed by a plain unsubscribe counts as "closed", not a refusal. */
	if (QUAYI_UNLIKELY(res->closed > 0) && atomic_load_explicit(&bus->closing, memory_order_acquire) != 0)
		return -EPIPE;
	return 0;
}

/*
 * Publish msgs[0..n) to the targets of e (ntargets > 0), chunk by chunk.
 * For each chunk, every plain ring target first gets the whole chunk with
 * one bulk push (all or nothing: one claim, one counter update), then the
 * remaining targets (full rings, priority queues, groups) get each
 * message in turn exactly as publish delivers one. A message is refused
 * only if no target took it, so only when no bulk push succeeded: then
 * the bulk step had no effect and the stop is exactly publish's.
 * Returns how many messages were published; *rc is the code of the first
 * refused one (when fewer than n), *delivered counts the deliveries.
 */
static size_t
fan_out_batch(struct quay_bus *bus, const struct quayi_bm_centry *e, quay_msg **msgs, size_t n,
    int64_t now, uint64_t *delivered, int *rc)
{
	const uint32_t need = e->ntargets;
	size_t done = 0;

	while (done < n) {
		quay_msg **ms = msgs + done;
		uint32_t del[BATCH_CHUNK];
		uint64_t bulk[BATCH_BULK_MAX / 64] = { 0 };
		uint32_t nbulk = 0;
		size_t c = n - done < BATCH_CHUNK ? n - done : BATCH_CHUNK;
		size_t j, stop;

		for (j = 0; j < c; j++) {
			/* A priority some target has no level for, or a
			 * reference count overflow: stop before it (-EINVAL). */
			if (quay_msg_priority(ms[j]) > e->prio_max)
				break;
			if (need > 1 && msg_ref_n(ms[j], need - 1) != 0)
				break;
			if (now > 0)
				(void)quay_msg_set_enqueued_ns(ms[j], now);
		}
		c = j;
		if (c == 0) {
			*rc = -EINVAL;
			break;
		}
		for (uint32_t i = 0; i < e->nplain && i < BATCH_BULK_MAX; i++) {
			struct quay_sub *s = e->subs[i];
			if (s->ring != NULL && quay_ring_push_bulk(s->ring, ms, c) == 0) {
				bulk[i >> 6] |= (uint64_t)1 << (i & 63);
				nbulk++;
				quay_counter_add(s->c_delivered, c);
			}
		}
		stop = c;
		for (j = 0; j < c; j++) {
			struct quay_bus_pub_result res;

			if (nbulk == e->ntargets) {   /* every target took the chunk */
				del[j] = nbulk;
				continue;
			}
			memset(&res, 0, sizeof(res));
			fan_out(bus, e, ms[j], &res, bulk);
			res.delivered += nbulk;
			if (refusal(bus, &res) != 0) {
				*rc = refusal(bus, &res);
				stop = j;
				break;
			}
			del[j] = res.delivered;
		}
		/* Give back the references no target took (none read m after). */
		for (j = 0; j < stop; j++) {
			msg_unref_n(ms[j], need - del[j]);
			*delivered += del[j];
		}
		for (; j < c; j++)
			msg_unref_n(ms[j], need - 1);   /* the caller keeps its own */
		done += stop;
		if (stop < c)
			break;
	}
	return done;
}

/* The reply route: n is the number of an inbox of this bus. */
static int
route_reply(struct quay_bus *bus, uint64_t n, quay_msg *m)
{
	struct bus_req *q = &bus->reqs[n % bus->nreq];
	/* Q3': acquire; pairs with the requester's CAS that claimed the slot
	 * (req_id was written before the request was published). */
	uint64_t st = atomic_load_explicit(&q->state, memory_order_acquire);

	quay_counter_inc(bus->c_published);
	if (st == n && quay_msg_correlation_id(m) ==
	        atomic_load_explicit(&q->req_id, memory_order_relaxed) &&
	    atomic_compare_exchange_strong_explicit(&q->state, &st, n | REQ_BUSY,
	        memory_order_acq_rel, memory_order_relaxed)) {   /* Q1 */
		/* Relaxed: Q2 below publishes it. */
		atomic_store_explicit(&q->reply, m, memory_order_relaxed);
		/* Q2: release; pairs with Q3 in request(). */
		atomic_store_explicit(&q->state, n | REQ_DONE, memory_order_release);
		/* Release: the wake-up word; the requester re-reads state. */
		atomic_store_explicit(&q->done, 1, memory_order_release);
		futex_wake_all(&q->done);
		quay_counter_inc(bus->c_delivered);
		return 1;
	}
	quay_counter_inc(bus->c_late);
	(void)quay_msg_unref(m);
	return 0;
}

/* If subject is an inbox of this bus, its number in *n. */
static bool
is_inbox(const struct quay_bus *bus, const char *subject, uint32_t len, uint64_t *n)
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

/* Publish msgs[0..n); returns the count published or a negative code
 * (only when msgs[0] failed). *res describes the last message tried. */
static int
publish_core(struct quay_bus *bus, const char *subject, quay_msg **msgs, size_t n,
    struct quay_bus_pub_result *res)
{
	const struct quayi_bm_centry *e = NULL;
	struct quayi_bm_table *t;
	struct quay_bus_pub_result local;
	const struct quayi_bus_tap *tap;
	int tapped = 0;
	uint32_t len;
	uint64_t hash, inbox_n;
	bool temp = false;
	int64_t now;
	size_t k;
	uint64_t delivered = 0;
	int r;

	if (subject == NULL || quayi_bm_scan_subject(subject, &len, &hash) != 0)
		return -EINVAL;
	if (res == NULL)
		res = &local;
	if (is_inbox(bus, subject, len, &inbox_n)) {
		for (k = 0; k < n; k++) {
			memset(res, 0, sizeof(*res));
			res->matched = 1;
			if (route_reply(bus, inbox_n, msgs[k]) == 1)
				res->delivered = 1;
		}
		return (int)n;
	}
	r = rcu_thread();
	if (r != 0)
		return r;
	urcu_memb_read_lock();
	/* Acquire: a late call on a bus being destroyed fails fast. */
	if (QUAYI_UNLIKELY(atomic_load_explicit(&bus->closing, memory_order_acquire) != 0)) {
		read_unlock();
		return -EPIPE;
	}
	/* BUS-TAP2: acquire; pairs with BUS-TAP1. One predictable branch. */
	tap = __atomic_load_n(&bus->tap, __ATOMIC_ACQUIRE);
	if (QUAYI_UNLIKELY(tap != NULL))
		tapped = tap->fn(tap->arg, subject, len, msgs, n);
	/* T2: acquire; pairs with T1 (the version's nodes and cache). */
	t = atomic_load_explicit(&bus->table, memory_order_acquire);
	if (t->nsubs > 0) {
		e = quayi_bm_lookup(t, subject, len, hash, &temp);
		if (QUAYI_UNLIKELY(e == NULL)) {
			read_unlock();
			return -ENOMEM;
		}
	}
	/* One clock read per call, and only when a target records latency
	 * (the clock costs as much as a delivery). */
	now = e != NULL && e->stamp ? bus->clock(bus->clock_arg) : 0;
	if (e == NULL || e->ntargets == 0) {
		memset(res, 0, sizeof(*res));
		for (k = 0; k < n; k++)
			(void)quay_msg_unref(msgs[k]);   /* the publisher's reference */
		quay_counter_add(bus->c_nosub, n);
	} else if (n > 1) {
		memset(res, 0, sizeof(*res));
		k = fan_out_batch(bus, e, msgs, n, now, &delivered, &r);
	} else {
		quay_msg *m = msgs[0];
		uint32_t need = e->ntargets;

		memset(res, 0, sizeof(*res));
		k = 0;
		if (QUAYI_UNLIKELY(quay_msg_priority(m) > e->prio_max) ||
		    (need > 1 && msg_ref_n(m, need - 1) != 0)) {
			r = -EINVAL;   /* nothing taken, nothing stamped */
		} else {
			if (now > 0)
				(void)quay_msg_set_enqueued_ns(m, now);
			fan_out(bus, e, m, res, NULL);
			r = refusal(bus, res);
			/* The references no target took; the caller keeps its
			 * own when refused. Untouched once all were taken. */
			msg_unref_n(m, need - res->delivered - (r != 0 ? 1 : 0));
			if (r == 0) {
				delivered = res->delivered;
				k = 1;
			}
		}
	}
	/* Inside the read-side section: a publisher woken by destroy (a BLOCK
	 * target closed) must not touch the bus after its grace period, which
	 * the subscriptions' callbacks, and so destroy, wait for. */
	quay_counter_add(bus->c_published, k);
	if (delivered > 0)
		quay_counter_add(bus->c_delivered, delivered);
	read_unlock();
	if (temp)
		free((void *)(uintptr_t)e);
	if (k == 0 && r < 0)
		return r;
	res->delivered += (uint32_t)tapped;
	return (int)k;
}

int
quayi_bus_set_tap(quay_bus *bus, const struct quayi_bus_tap *tap)
{
	int r = 0;

	if (bus == NULL)
		return -EINVAL;
	pthread_mutex_lock(&bus->lock);
	if (tap != NULL && bus->tap != NULL)
		r = -EBUSY;
	else
		__atomic_store_n(&bus->tap, tap, __ATOMIC_RELEASE);   /* BUS-TAP1 */
	pthread_mutex_unlock(&bus->lock);
	if (r == 0 && tap == NULL)
		urcu_memb_synchronize_rcu();   /* every publish that saw the old tap left */
	return r;
}

QUAY_API int
quay_bus_publish_ex(quay_bus *bus, const char *subject, quay_msg *msg, struct quay_bus_pub_result *res)
{
	struct quay_bus_pub_result local;
	int r;

	if (res != NULL)
		memset(res, 0, sizeof(*res));
	if (bus == NULL || msg == NULL)
		return -EINVAL;
	if (res == NULL)
		res = &local;
	r = publish_core(bus, subject, &msg, 1, res);
	return r < 0 ? r : (int)res->delivered;
}

QUAY_API int
quay_bus_publish(quay_bus *bus, const char *subject, quay_msg *msg)
{
	return quay_bus_publish_ex(bus, subject, msg, NULL);
}

QUAY_API int
quay_bus_publish_batch(quay_bus *bus, const char *subject, quay_msg **msgs, size_t n)
{
	if (bus == NULL || msgs == NULL || n > INT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (msgs[i] == NULL)
			return -EINVAL;
	if (n == 0)
		return quayi_bm_scan_subject(subject != NULL ? subject : "", &(uint32_t){ 0 },
		    &(uint64_t){ 0 }) == 0 ? 0 : -EINVAL;
	return publish_core(bus, subject, msgs, n, NULL);
}

QUAY_API int
quay_bus_publish_many(quay_bus *bus, const char *const *subjects, quay_msg *const *msgs, size_t n)
{
	size_t done = 0;

	if (bus == NULL || subjects == NULL || msgs == NULL || n > INT_MAX)
		return -EINVAL;
	/* Everything checked first: bad input publishes nothing. */
	for (size_t i = 0; i < n; i++) {
		uint32_t len;
		uint64_t hash;

		if (msgs[i] == NULL || subjects[i] == NULL ||
		    quayi_bm_scan_subject(subjects[i], &len, &hash) != 0)
			return -EINVAL;
	}
	while (done < n) {
		size_t run = 1;
		int r;

		while (done + run < n && (subjects[done + run] == subjects[done] ||
		           strcmp(subjects[done + run], subjects[done]) == 0))
			run++;
		/* publish_core reads msgs[] and never writes it. */
		r = publish_core(bus, subjects[done], (quay_msg **)(uintptr_t)(msgs + done), run, NULL);
		if (r < 0)
			return done > 0 ? (int)done : r;
		done += (size_t)r;
		if ((size_t)r < run)
			break;
	}
	return (int)done;
}

/* ---- receiving ----------------------------------------------------- */

/* R1: enter a receive; false if the subscription is closed. */
static bool
recv_enter(struct quay_sub *s)
{
	bool ok;

	urcu_memb_read_lock();
	/* Acquire; pairs with the release store in unsubscribe. */
	ok = atomic_load_explicit(&s->closed, memory_order_acquire) == 0;
	if (ok) {
		/* Relaxed: the grace period orders it before the sub's
		 * callback reads inflight (R2). */
		atomic_fetch_add_explicit(&s->inflight, 1, memory_order_relaxed);
	}
	read_unlock();
	return ok;
}

static void
recv_leave(struct quay_sub *s)
{
	/* Release; pairs with R2's acquire: our last use of s is before. */
	atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_release);
}

static void
record_latency(struct quay_sub *s, quay_msg *const *m, size_t n)
{
	int64_t now;

	if (s->h_latency == NULL)
		return;
	now = s->bus->clock(s->bus->clock_arg);
	for (size_t i = 0; i < n; i++) {
		int64_t enq = quay_msg_enqueued_ns(m[i]);
		quay_hist_record(s->h_latency, enq > 0 && now > enq ? (uint64_t)(now - enq) : 0);
	}
}

QUAY_API int
quay_sub_receive(quay_sub *sub, quay_msg **out, int64_t timeout_ns)
{
	quay_msg *m;
	int r;

	if (sub == NULL || out == NULL)
		return -EINVAL;
	r = rcu_thread();
	if (r != 0)
		return r;
	if (!recv_enter(sub))
		return -EPIPE;
	if (sub->pq != NULL)
		r = quay_pq_pop_wait(sub->pq, &m, NULL, timeout_ns);
	else
		r = quay_ring_pop_wait(sub->ring, &m, timeout_ns);
	if (r == 0) {
		quay_counter_inc(sub->c_received);
		record_latency(sub, &m, 1);
		*out = m;
	}
	recv_leave(sub);
	return r;
}

QUAY_API size_t
quay_sub_receive_burst(quay_sub *sub, quay_msg **out, size_t n)
{
	size_t got = 0;

	if (sub == NULL || out == NULL || n == 0 || rcu_thread() != 0)
		return 0;
	if (!recv_enter(sub))
		return 0;
	if (sub->pq != NULL)
		got = quay_pq_pop_burst(sub->pq, out, n, NULL);
	else
		got = quay_ring_pop_burst(sub->ring, out, n);
	if (got > 0) {
		quay_counter_add(sub->c_received, got);
		record_latency(sub, out, got);
	}
	recv_leave(sub);
	return got;
}

/* ---- metrics ------------------------------------------------------- */

static int
make_counter(quay_stats *st, const char *name, const char *help, const struct quay_stats_label *l,
    size_t nl, quay_counter **out)
{
	return quay_counter_create(st, name, help, l, nl, out);
}

static void
sub_metrics_free(struct quay_sub *s)
{
	/* First: its collector reads the subscription's queue. */
	quay_gauge_destroy(s->g_pending);
	s->g_pending = NULL;
	quay_counter_destroy(s->c_delivered);
	quay_counter_destroy(s->c_received);
	quay_counter_destroy(s->c_dropped);
	quay_counter_destroy(s->c_rejected);
	quay_counter_destroy(s->c_timeouts);
	quay_counter_destroy(s->c_released);
	quay_hist_destroy(s->h_latency);
}

/* The pending gauge is measured: a snapshot runs this first. */
static void
sub_collect(void *arg)
{
	struct quay_sub *s = arg;

	quay_gauge_set(s->g_pending, (int64_t)quay_sub_pending(s));
}

static int
sub_metrics(struct quay_bus *bus, struct quay_sub *s)
{
	char id[24];
	struct quay_stats_label l[4] = {
		{ "bus", bus->name }, { "sub", id }, { "pattern", s->pattern }, { "group", NULL },
	};
	size_t nl = 3;
	int r;

	snprintf(id, sizeof(id), "%llu", (unsigned long long)s->id);
	if (s->group != NULL) {
		l[3].value = s->group->name;
		nl = 4;
	}
	if ((r = make_counter(bus->stats, "quay_sub_delivered_total", "Messages queued to a subscription",
	         l, nl, &s->c_delivered)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_received_total", "Messages taken by receivers",
	         l, nl, &s->c_received)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_dropped_total", "Messages dropped by policy",
	         l, nl, &s->c_dropped)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_rejected_total", "Messages refused by REJECT",
	         l, nl, &s->c_rejected)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_block_timeouts_total",
	         "Publishers that gave up waiting for room", l, nl, &s->c_timeouts)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_released_total",
	         "Queued messages released by unsubscribe", l, nl, &s->c_released)) != 0)
		goto fail;
	if (!(s->flags & QUAY_SUB_NO_LATENCY) &&
	    (r = quay_hist_create(bus->stats, "quay_sub_receive_latency_seconds",
	         "Time from publish to receive", l, nl, &s->h_latency)) != 0)
		goto fail;
	if ((r = quay_gauge_create(bus->stats, "quay_sub_pending", "Messages queued in a subscription",
	         l, nl, &s->g_pending)) != 0 ||
	    (r = quay_gauge_set_collect(s->g_pending, sub_collect, s)) != 0)
		goto fail;
	return 0;
fail:
	sub_metrics_free(s);
	return r == -EINVAL ? -EINVAL : -ENOMEM;
}

/* ---- subscribe / unsubscribe --------------------------------------- */

static void
table_cb(struct rcu_head *h)
{
	struct quayi_bm_table *t = BUS_CONTAINER(h, struct quayi_bm_table, rcu);
	struct quay_bus *bus;

	tsan_reclaim();
	bus = t->bus;
	quayi_bm_table_retire_free(t, &bus->caches);
	deferred_done(bus);
}

static void
group_cb(struct rcu_head *h)
{
	struct quayi_bus_group *g = BUS_CONTAINER(h, struct quayi_bus_group, rcu);
	struct quay_bus *bus;

	tsan_reclaim();
	bus = g->bus;
	free(g);
	deferred_done(bus);
}

static void
sub_free(struct quay_sub *s)
{
	sub_metrics_free(s);
	quay_ring_destroy(s->ring);
	quay_pq_destroy(s->pq);
	free(s);
}

static void
sub_cb(struct rcu_head *h)
{
	struct quay_sub *s = BUS_CONTAINER(h, struct quay_sub, rcu);
	struct quay_bus *bus;

	tsan_reclaim();
	/* R2: acquire; pairs with recv_leave(). Receivers were woken by the
	 * close, so this wait is short. */
	while (atomic_load_explicit(&s->inflight, memory_order_acquire) != 0)
		sched_yield();
	bus = s->bus;
	sub_free(s);
	deferred_done(bus);
}

QUAY_API int
quay_bus_subscribe(quay_bus *bus, const char *pattern, const struct quay_sub_opts *opts, quay_sub **out)
{
	static const struct quay_sub_opts defaults = QUAY_SUB_OPTS_INIT;
	struct quay_sub *s;
	struct quayi_bus_group *g = NULL, *newg = NULL;
	struct quayi_bm_table *old, *t;
	size_t cap;
	int r;

	if (bus == NULL || pattern == NULL || out == NULL)
		return -EINVAL;
	if (opts == NULL)
		opts = &defaults;
	if (opts->size != sizeof(*opts) || (opts->flags & ~QUAY_SUB_FLAGS_ALL) != 0 ||
	    (unsigned)opts->policy > (unsigned)QUAY_SUB_BLOCK || opts->priorities > QUAY_PQ_LEVELS_MAX ||
	    (opts->policy == QUAY_SUB_DROP_OLDEST && opts->priorities > 0) ||
	    (opts->group != NULL && !valid_name(opts->group)))
		return -EINVAL;
	cap = opts->capacity != 0 ? opts->capacity : QUAY_SUB_CAPACITY_DEFAULT;
	if (cap > QUAY_RING_CAPACITY_MAX || (cap & (cap - 1)) != 0)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	if (quayi_bm_parse(pattern, true, &s->toks) != 0) {
		free(s);
		return -EINVAL;
	}
	memcpy(s->pattern, pattern, s->toks.len + 1);
	s->toks.s = s->pattern;
	s->bus = bus;
	s->policy = opts->policy;
	s->block_timeout_ns = opts->block_timeout_ns;
	s->flags = opts->flags;
	s->levels = opts->priorities;
	if (opts->priorities > 0) {
		struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;
		po.levels = opts->priorities;
		po.capacity = cap;
		po.elem_size = sizeof(quay_msg *);
		r = quay_pq_create(&po, &s->pq);
	} else {
		r = quay_ring_create(cap, sizeof(quay_msg *), 0, &s->ring);
	}
	if (r != 0) {
		free(s);
		return r == -EINVAL ? -EINVAL : -ENOMEM;
	}
	r = rcu_thread();
	if (r != 0)
		goto fail_queue;
	/* Relaxed: an id only has to be unique; it orders nothing. */
	s->id = atomic_fetch_add_explicit(&bus->next_sub_id, 1, memory_order_relaxed) + 1;

	pthread_mutex_lock(&bus->lock);
	/* Relaxed under the mutex: destroy sets it before taking the mutex. */
	if (atomic_load_explicit(&bus->closing, memory_order_relaxed) != 0) {
		r = -EPIPE;
		goto fail_locked;
	}
	/* Relaxed: nsubs changes only under bus->lock, which we hold. */
	if (atomic_load_explicit(&bus->nsubs, memory_order_relaxed) >= bus->max_subs) {
		r = -ENOMEM;
		goto fail_locked;
	}
	if (opts->group != NULL) {
		for (g = bus->groups; g != NULL; g = g->next)
			if (strcmp(g->name, opts->group) == 0)
				break;
		if (g == NULL) {
			newg = calloc(1, sizeof(*newg));
			if (newg == NULL) {
				r = -ENOMEM;
				goto fail_locked;
			}
			strcpy(newg->name, opts->group);
			newg->bus = bus;
			g = newg;
		}
		s->group = g;
	}
	r = sub_metrics(bus, s);
	if (r != 0)
		goto fail_locked;
	old = atomic_load_explicit(&bus->table, memory_order_relaxed);  /* ours, under the mutex */
	r = quayi_bm_insert(old, &s->toks, s, &bus->caches, &t);
	if (r != 0) {
		sub_metrics_free(s);
		goto fail_locked;
	}
	t->bus = bus;
	/* T1: release; pairs with T2 in publish. */
	atomic_store_explicit(&bus->table, t, memory_order_release);
	if (newg != NULL) {
		newg->next = bus->groups;
		bus->groups = newg;
	}
	if (g != NULL)
		g->members++;
	s->next = bus->subs;
	if (bus->subs != NULL)
		bus->subs->prev = s;
	bus->subs = s;
	/* Relaxed: written under bus->lock; lock-free readers only report it. */
	atomic_fetch_add_explicit(&bus->nsubs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&bus->lock);
	defer_free(bus, &old->rcu, table_cb);
	*out = s;
	return 0;

fail_locked:
	pthread_mutex_unlock(&bus->lock);
	free(newg);
fail_queue:
	quay_ring_destroy(s->ring);
	quay_pq_destroy(s->pq);
	free(s);
	return r;
}

static void
sub_counters_read(const struct quay_sub *sub, struct quay_sub_counters *out)
{
	out->delivered = quay_counter_read(sub->c_delivered);
	out->received = quay_counter_read(sub->c_received);
	out->dropped = quay_counter_read(sub->c_dropped);
	out->rejected = quay_counter_read(sub->c_rejected);
	out->timed_out = quay_counter_read(sub->c_timeouts);
	out->released = quay_counter_read(sub->c_released);
}

QUAY_API int
quay_bus_unsubscribe(quay_sub *sub)
{
	return quay_bus_unsubscribe_ex(sub, NULL);
}

QUAY_API int
quay_bus_unsubscribe_ex(quay_sub *sub, struct quay_sub_counters *final)
{
	struct quay_bus *bus;
	struct quayi_bm_table *old, *t;
	struct quayi_bus_group *g, **pg;
	quay_msg *m;
	uint64_t released = 0;
	int r;

	if (sub == NULL)
		return -EINVAL;
	bus = sub->bus;
	r = rcu_thread();
	if (r != 0)
		return r;
	pthread_mutex_lock(&bus->lock);
	old = atomic_load_explicit(&bus->table, memory_order_relaxed);  /* ours, under the mutex */
	r = quayi_bm_remove(old, &sub->toks, sub, &bus->caches, &t);
	if (r != 0) {
		pthread_mutex_unlock(&bus->lock);
		return r == -ENOENT ? -EINVAL : r;
	}
	t->bus = bus;
	/* T1: release; pairs with T2 in publish. */
	atomic_store_explicit(&bus->table, t, memory_order_release);
	if (sub->prev != NULL)
		sub->prev->next = sub->next;
	else
		bus->subs = sub->next;
	if (sub->next != NULL)
		sub->next->prev = sub->prev;
	/* Relaxed: as the increment in subscribe (under bus->lock). */
	atomic_fetch_sub_explicit(&bus->nsubs, 1, memory_order_relaxed);
	g = sub->group;
	if (g != NULL && --g->members == 0) {
		for (pg = &bus->groups; *pg != g; pg = &(*pg)->next)
			;
		*pg = g->next;
	} else {
		g = NULL;
	}
	/* Release; pairs with recv_enter()'s acquire. Before call_rcu, so the
	 * grace period orders it before every later receive (R1). */
	atomic_store_explicit(&sub->closed, 1, memory_order_release);
	pthread_mutex_unlock(&bus->lock);

	/* Wake receivers (-EPIPE) and BLOCK publishers; then release what is
	 * left. A pop returns -EPIPE only once the queue is closed and empty
	 * and no push can succeed any more. */
	sub_close(sub);
	for (;;) {
		r = sub_pop(sub, &m);
		if (r == 0) {
			(void)quay_msg_unref(m);
			released++;
		} else if (r == -EPIPE) {
			break;
		} else {
			quayi_cpu_relax();   /* a push completing */
		}
	}
	if (released > 0)
		quay_counter_add(sub->c_released, released);
	if (final != NULL) {
		/* Final means final: every publish that could still reach the
		 * queue (it is closed: they fail) and every receiver that saw
		 * closed == 0 (R1) finish within a grace period; receivers
		 * counted in inflight then leave (they were woken by the
		 * close). R2-style acquire: pairs with recv_leave()'s release,
		 * so their counter updates are visible. */
		urcu_memb_synchronize_rcu();
		tsan_reclaim();
		while (atomic_load_explicit(&sub->inflight, memory_order_acquire) != 0)
			sched_yield();
		sub_counters_read(sub, final);
	}
	defer_free(bus, &old->rcu, table_cb);
	if (g != NULL)
		defer_free(bus, &g->rcu, group_cb);
	defer_free(bus, &sub->rcu, sub_cb);
	return 0;
}

/* ---- request / reply ----------------------------------------------- */

QUAY_API int
quay_bus_request(quay_bus *bus, const char *subject, quay_msg *req, quay_msg **reply, int64_t timeout_ns)
{
	char inbox[64];
	struct bus_req *q = NULL;
	uint64_t n = 0, st;
	int64_t deadline;
	uint32_t len;
	uint64_t hash;
	int r;

	if (req == NULL)
		return -EINVAL;
	if (bus == NULL || subject == NULL || reply == NULL ||
	    quayi_bm_scan_subject(subject, &len, &hash) != 0) {
		(void)quay_msg_unref(req);   /* consumed on every return */
		return -EINVAL;
	}
	/* D1/D2, seq_cst (a store-buffering pair with destroy's D3/D4):
	 * either destroy's wait for req_active == 0 sees this request, or
	 * this request sees closing and leaves. A request path costs
	 * microseconds; the two fences cost nothing next to it. */
	atomic_fetch_add_explicit(&bus->req_active, 1, memory_order_seq_cst);   /* D1 */
	if (atomic_load_explicit(&bus->closing, memory_order_seq_cst) != 0) {   /* D2 */
		r = -EPIPE;
		(void)quay_msg_unref(req);
		goto out;
	}
	for (unsigned tries = 0; tries < bus->nreq && q == NULL; tries++) {
		uint64_t zero = 0;
		n = (atomic_fetch_add_explicit(&bus->req_next, 1, memory_order_relaxed) % REQ_N_MASK) + 1;
		q = &bus->reqs[n % bus->nreq];
		/* Acquire on success: the previous owner's reset happened before. */
		if (!atomic_compare_exchange_strong_explicit(&q->state, &zero, n, memory_order_acquire,
		        memory_order_relaxed))
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
	atomic_store_explicit(&q->req_id, quay_msg_id(req), memory_order_relaxed);
	atomic_store_explicit(&q->done, 0, memory_order_relaxed);
	deadline = timeout_ns < 0 ? -1 : mono_ns() + timeout_ns;
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
		/* Q3: acquire; pairs with Q2 in route_reply(). */
		st = atomic_load_explicit(&q->state, memory_order_acquire);
		if (st == (n | REQ_DONE))
			break;
		if (st == n) {
			bool late = deadline >= 0 && mono_ns() >= deadline;
			/* Acquire: pairs with destroy's release store of closing. */
			bool closing = atomic_load_explicit(&bus->closing, memory_order_acquire) != 0;
			if (late || closing) {
				/* Take the slot back unless a reply is being stored. */
				if (atomic_compare_exchange_strong_explicit(&q->state, &st, 0,
				        memory_order_release, memory_order_acquire)) {
					r = closing ? -EPIPE : -ETIMEDOUT;
					goto out;
				}
				continue;
			}
			futex_wait(&q->done, 0, deadline);
		} else {
			sched_yield();   /* BUSY: the replier is storing */
		}
	}
	*reply = atomic_load_explicit(&q->reply, memory_order_relaxed);  /* ordered by Q3 */
	atomic_store_explicit(&q->reply, NULL, memory_order_relaxed);
	/* Release: the next owner's acquire CAS sees the slot reset. */
	atomic_store_explicit(&q->state, 0, memory_order_release);
	r = 0;
	goto out;
free_slot:
	atomic_store_explicit(&q->state, 0, memory_order_release);
out:
	/* Release; pairs with destroy's acquire wait for 0. */
	atomic_fetch_sub_explicit(&bus->req_active, 1, memory_order_release);
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

/* ---- create / destroy ---------------------------------------------- */

static _Atomic uint64_t bus_ids;   /* relaxed: uniqueness only */

static void
bus_metrics_free(struct quay_bus *bus)
{
	quay_counter_destroy(bus->c_published);
	quay_counter_destroy(bus->c_delivered);
	quay_counter_destroy(bus->c_dropped);
	quay_counter_destroy(bus->c_rejected);
	quay_counter_destroy(bus->c_timeouts);
	quay_counter_destroy(bus->c_nosub);
	quay_counter_destroy(bus->c_late);
}

static int
bus_metrics(struct quay_bus *bus)
{
	const struct quay_stats_label l[1] = { { "bus", bus->name } };
	int r;

	if ((r = make_counter(bus->stats, "quay_bus_published_total", "Messages published", l, 1,
	         &bus->c_published)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_delivered_total", "Deliveries (message x target)",
	         l, 1, &bus->c_delivered)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_dropped_total", "Deliveries dropped by policy",
	         l, 1, &bus->c_dropped)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_rejected_total", "Deliveries refused by REJECT",
	         l, 1, &bus->c_rejected)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_block_timeouts_total",
	         "BLOCK waits that timed out", l, 1, &bus->c_timeouts)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_no_subscriber_total",
	         "Messages that matched no subscription", l, 1, &bus->c_nosub)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_late_replies_total",
	         "Replies that found no waiting request", l, 1, &bus->c_late)) != 0) {
		bus_metrics_free(bus);
		return r == -EINVAL ? -EINVAL : -ENOMEM;
	}
	return 0;
}

QUAY_API int
quay_bus_create(const struct quay_bus_opts *opts, quay_bus **out)
{
	static const struct quay_bus_opts defaults = QUAY_BUS_OPTS_INIT;
	struct quay_bus *bus;
	struct quayi_bm_table *t;
	int r;

	if (out == NULL)
		return -EINVAL;
	if (opts == NULL)
		opts = &defaults;
	if (opts->size != sizeof(*opts) || opts->flags != 0 ||
	    (opts->name != NULL && !valid_name(opts->name)) || opts->max_subs > QUAY_BUS_SUBS_MAX ||
	    opts->max_requests > QUAY_BUS_REQUESTS_MAX)
		return -EINVAL;
	bus = calloc(1, sizeof(*bus));
	if (bus == NULL)
		return -ENOMEM;
	/* Relaxed: a process-unique id for inbox subjects; orders nothing. */
	bus->id = atomic_fetch_add_explicit(&bus_ids, 1, memory_order_relaxed) + 1;
	if (opts->name != NULL)
		strcpy(bus->name, opts->name);
	else
		snprintf(bus->name, sizeof(bus->name), "bus%llu", (unsigned long long)bus->id);
	bus->inbox_len = (size_t)snprintf(bus->inbox, sizeof(bus->inbox), "_INBOX.%llu.",
	    (unsigned long long)bus->id);
	bus->clock = opts->clock != NULL ? opts->clock : clock_realtime;
	bus->clock_arg = opts->clock_arg;
	bus->max_subs = opts->max_subs != 0 ? opts->max_subs : QUAY_BUS_SUBS_DEFAULT;
	bus->nreq = opts->max_requests != 0 ? opts->max_requests : QUAY_BUS_REQUESTS_DEFAULT;
	bus->reqs = aligned_alloc(QUAY_CACHELINE, bus->nreq * sizeof(*bus->reqs));
	if (bus->reqs == NULL) {
		free(bus);
		return -ENOMEM;
	}
	memset(bus->reqs, 0, bus->nreq * sizeof(*bus->reqs));
	if (opts->stats != NULL) {
		bus->stats = opts->stats;
	} else {
		struct quay_stats_opts so = QUAY_STATS_OPTS_INIT;
		size_t per = 8;  /* metrics per subscription, rounded up */
		so.hist_shards = 1;
		so.max_metrics = bus->max_subs * per + 16;
		if (so.max_metrics > QUAY_STATS_METRICS_MAX)
			so.max_metrics = QUAY_STATS_METRICS_MAX;
		r = quay_stats_create(&so, &bus->stats);
		if (r != 0)
			goto fail;
		bus->own_stats = true;
	}
	r = bus_metrics(bus);
	if (r != 0)
		goto fail;
	quayi_bm_cache_pool_init(&bus->caches);
	t = quayi_bm_table_new(&bus->caches);
	if (t == NULL) {
		quayi_bm_cache_pool_fini(&bus->caches);
		bus_metrics_free(bus);
		r = -ENOMEM;
		goto fail;
	}
	t->bus = bus;
	atomic_init(&bus->table, t);
	pthread_mutex_init(&bus->lock, NULL);
	*out = bus;
	return 0;
fail:
	if (bus->own_stats)
		quay_stats_destroy(bus->stats);
	free(bus->reqs);
	free(bus);
	return r;
}

QUAY_API void
quay_bus_destroy(quay_bus *bus)
{
	if (bus == NULL)
		return;
	/* D3: seq_cst; pairs with the acquire loads in publish, and with
	 * request()'s D2 (see D1/D2 there). */
	atomic_store_explicit(&bus->closing, 1, memory_order_seq_cst);
	for (unsigned i = 0; i < bus->nreq; i++) {
		/* Acquire: pairs with a requester's claim of the slot. The done
		 * store (release) pairs with the requester's futex wait value. */
		if (atomic_load_explicit(&bus->reqs[i].state, memory_order_acquire) != 0) {
			atomic_store_explicit(&bus->reqs[i].done, 1, memory_order_release);
			futex_wake_all(&bus->reqs[i].done);
		}
	}
	/* Close every subscription's queue before waiting for anyone: a
	 * requester or publisher waiting for room in a full BLOCK target
	 * wakes with -EPIPE (refusal()), a blocked receiver too. The queues
	 * are released by the unsubscribes below. Under the mutex: the list
	 * is stable, and no subscribe adds to it once closing is set. */
	pthread_mutex_lock(&bus->lock);
	for (struct quay_sub *s = bus->subs; s != NULL; s = s->next)
		sub_close(s);
	pthread_mutex_unlock(&bus->lock);
	/* D4 (seq_cst, so also acquire): pairs with request()'s release
	 * decrement and with D1 (see request()). A requester may
	 * have reset its done word after the wake above (it did so before
	 * publishing), so wake every slot again each round; sleep between
	 * rounds rather than spin. */
	while (atomic_load_explicit(&bus->req_active, memory_order_seq_cst) != 0) {   /* D4 */
		struct timespec ts = { 0, 200000 };
		for (unsigned i = 0; i < bus->nreq; i++) {
			atomic_store_explicit(&bus->reqs[i].done, 1, memory_order_release);
			futex_wake_all(&bus->reqs[i].done);
		}
		nanosleep(&ts, NULL);
	}
	for (;;) {
		struct quay_sub *s;
		pthread_mutex_lock(&bus->lock);
		s = bus->subs;
		pthread_mutex_unlock(&bus->lock);
		if (s == NULL)
			break;
		if (quay_bus_unsubscribe(s) != 0)
			sched_yield();   /* out of memory for a moment: retry */
	}
	/* Wait for every callback queued for this bus (tables, groups, subs):
	 * a per-bus count rather than urcu_memb_barrier(), which would also
	 * wait for other users' callbacks (and whose internal hand-over
	 * ThreadSanitizer cannot see). Acquire; pairs with deferred_done(). */
	while (atomic_load_explicit(&bus->pending, memory_order_acquire) != 0) {
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
	/* Relaxed: every reader and callback has finished (waited for above). */
	quayi_bm_table_free_all(atomic_load_explicit(&bus->table, memory_order_relaxed), &bus->caches);
	quayi_bm_cache_pool_fini(&bus->caches);
	bus_metrics_free(bus);
	if (bus->own_stats)
		quay_stats_destroy(bus->stats);
	pthread_mutex_destroy(&bus->lock);
	free(bus->reqs);
	free(bus);
}

/* ---- getters ------------------------------------------------------- */

QUAY_API quay_stats *
quay_bus_stats(const quay_bus *bus)
{
	return bus != NULL ? bus->stats : NULL;
}

QUAY_API int
quay_bus_counters(const quay_bus *bus, struct quay_bus_counters *out)
{
	if (bus == NULL || out == NULL)
		return -EINVAL;
	out->published = quay_counter_read(bus->c_published);
	out->delivered = quay_counter_read(bus->c_delivered);
	out->dropped = quay_counter_read(bus->c_dropped);
	out->rejected = quay_counter_read(bus->c_rejected);
	out->timed_out = quay_counter_read(bus->c_timeouts);
	out->no_subscriber = quay_counter_read(bus->c_nosub);
	out->late_replies = quay_counter_read(bus->c_late);
	return 0;
}

QUAY_API int
quay_sub_counters(const quay_sub *sub, struct quay_sub_counters *out)
{
	if (sub == NULL || out == NULL)
		return -EINVAL;
	sub_counters_read(sub, out);
	return 0;
}

QUAY_API int
quay_sub_latency(const quay_sub *sub, struct quay_hist_data *out)
{
	if (sub == NULL || out == NULL)
		return -EINVAL;
	if (sub->h_latency == NULL)
		return -ENOENT;
	return quay_hist_read(sub->h_latency, out);
}

QUAY_API size_t
quay_sub_pending(const quay_sub *sub)
{
	if (sub == NULL)
		return 0;
	return sub->pq != NULL ? quay_pq_count(sub->pq) : quay_ring_count(sub->ring);
}

const char *
quayi_bus_name(const quay_bus *bus)
{
	return bus->name;
}

QUAY_API size_t
quay_bus_sub_count(const quay_bus *bus)
{
	if (bus == NULL)
		return 0;
	/* Relaxed: a snapshot. */
	return atomic_load_explicit(&bus->nsubs, memory_order_relaxed);
}
