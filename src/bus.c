/* SPDX-License-Identifier: MIT */
/*
 * The bus: subscriptions, bindings, fan-out, queue groups, metrics.
 * The trie and the subject cache are in bus_match.c; docs/BUS.md gives
 * the design and the measured figures.
 *
 * RCU (liburcu memb flavour, plain calls: no _LGPL_SOURCE). The current
 * table version is one pointer, bus->table:
 *   BUS-T1 subscribe/unsubscribe: store-release of the new version (under the
 *      bus mutex) -> BUS-T2 publish: load-acquire inside a read-side section.
 * Replaced versions, removed subscriptions and emptied groups are freed
 * by call_rcu callbacks, after every read-side section that could see
 * them. Receivers are not inside a read-side section while they sleep:
 * they enter one only to check sub->closed and bump sub->inflight (BUS-R1);
 * unsubscribe sets closed before its grace period starts, so every
 * receiver either saw closed or is counted in inflight, and the sub's
 * callback waits for inflight to drop to 0 (BUS-R2, acquire, pairs with the
 * receiver's release decrement) before freeing.
 *   BUS-R3 a receive that does not wait (a message is queued; every
 *      receive_burst) checks closed and pops inside one read-side
 *      section, without inflight: the grace period before the sub's
 *      callback (and before unsubscribe_ex reads the final counters)
 *      waits for it, as for a publisher.
 *
 * Request/reply is in bus_request.c.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus_internal.h"
#include "filter.h"
#include "msg_internal.h"
#include "queue_internal.h"
#include "queue_log.h"
#include "queue_route.h"

/* container_of through void *, so clang's -Wcast-align stays quiet. */
/* clang-format off */
#define BUS_CONTAINER(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))
/* clang-format on */

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
	uint32_t closed;
	uint32_t inflight;
	uint64_t id;
	struct quayi_bm_toks toks;
	struct quayi_filter *filter; /* NULL: none */
	quay_queue *queue;           /* a binding's queue; NULL: a subscription */
	bool durable;                /* the queue logs to a WAL (fixed at create) */
	quay_counter *c_delivered, *c_received, *c_dropped, *c_rejected, *c_timeouts, *c_released;
	quay_counter *c_failed; /* bindings only */
	quay_hist *h_latency;
	quay_gauge *g_pending;        /* measured by its collector */
	struct quay_sub *prev, *next; /* bus list, under the bus mutex */
	char pattern[QUAY_BUS_SUBJECT_MAX + 1];
};

/* A binding is a target of the table like a subscription, with a queue
 * instead of a ring (one struct: the trie, the cache and the groups hold
 * both). */
struct quay_binding {
	struct quay_sub s;
};
/* A binding is freed as the subscription it starts with (sub_free). */
_Static_assert(sizeof(struct quay_binding) == sizeof(struct quay_sub), "binding is its sub");

/* ---- RCU thread registration --------------------------------------- */

static pthread_once_t rcu_once = PTHREAD_ONCE_INIT;
static pthread_key_t rcu_key;
static bool rcu_key_ok;
/* initial-exec: read on every call; one flag fits the static TLS surplus
 * even when libquay is dlopen()ed (as quayi_stats_tslot in stats.c). */
static __thread bool rcu_registered __attribute__((tls_model("initial-exec")));
/* Publish calls of this thread that could stamp enqueued_ns: the sample
 * of quay_bus_opts.latency_sample (initial-exec, as rcu_registered). */
static __thread uint32_t lat_tick __attribute__((tls_model("initial-exec")));
/* This thread's last resolved subject: the cache entry e of the table
 * version with uid (0: none). e lives as long as that version (a cache
 * slot is never replaced while its table lives), and uids are never
 * reused, so a publish that loads a current table with this uid, inside
 * its read-side section, may use e: no hash, no cache probe. Only this
 * thread reads or writes it (plain accesses). initial-exec, as above. */
static __thread struct {
	uint64_t uid;
	const struct quayi_bm_centry *e;
} last_subj __attribute__((tls_model("initial-exec")));

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
static uint64_t tsan_gp;

static inline void
tsan_read_end(void)
{
	__atomic_fetch_add(&tsan_gp, 1, __ATOMIC_RELEASE);
}

static inline void
tsan_reclaim(void)
{
	(void)__atomic_fetch_add(&tsan_gp, 0, __ATOMIC_ACQUIRE);
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
	__atomic_fetch_add(&bus->pending, 1, __ATOMIC_RELAXED);
	tsan_read_end();
	urcu_memb_call_rcu(h, fn);
}

/* The last step of every callback: the bus may be freed right after. */
static void
deferred_done(struct quay_bus *bus)
{
	/* Release; pairs with destroy's acquire wait for 0. */
	__atomic_fetch_sub(&bus->pending, 1, __ATOMIC_RELEASE);
}

static inline void
read_unlock(void)
{
	tsan_read_end();
	urcu_memb_read_unlock();
}

/* ---- small helpers ------------------------------------------------- */

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

const struct quayi_filter *
quayi_bus_sub_filter(const struct quay_sub *sub)
{
	return sub->filter;
}

bool
quayi_bus_sub_special(const struct quay_sub *sub)
{
	return sub->filter != NULL || sub->queue != NULL;
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

static __attribute__((noinline)) int
sub_push_pq(struct quay_sub *s, quay_msg *m)
{
	return quay_pq_push(s->pq, sub_level(s, m), &m);
}

/* The ring push inlines into the fan-out loop (the priority queue's stays
 * out of line: with both inline, the compiler kept sub_push a call). */
static QUAYI_ALWAYS_INLINE int
sub_push(struct quay_sub *s, quay_msg *m)
{
	if (QUAYI_UNLIKELY(s->pq != NULL))
		return sub_push_pq(s, m);
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
 * CAS (quayi_msg_ref_n) and hands each target one of them, the publisher's
 * included, so a message published to one target costs no reference
 * count operation at all. A push that succeeds gives its reference to
 * the queue: after the last one, m may already be freed by a receiver,
 * so nothing reads m after pushing it to its last target. References
 * that no target took are given back at the end (quayi_msg_unref_n).
 *
 * These are quayi_msg_ref_n()/quayi_msg_unref_n() (src/msg_internal.h),
 * the protocol of quay_msg_ref()/quay_msg_unref(): MSG-F1 and MSG-U1.
 */

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

#define BATCH_CHUNK 64     /* messages per bulk push */
#define BATCH_BULK_MAX 256 /* plain targets tried with bulk pushes */

/* Whether plain target i of a batch already took the chunk (bulk push). */
static inline bool
bulk_done(const uint64_t *bulk, uint32_t i)
{
	return bulk != NULL && i < BATCH_BULK_MAX && ((bulk[i >> 6] >> (i & 63)) & 1) != 0;
}

#define FAN_PREFETCH_MIN 8 /* plain targets from which fan_out prefetches */

/*
 * Prefetch (for writing) the slot each plain ring target will push to.
 * In the push, the slot's sequence word is a cache miss (its last writer
 * was the receiver) that the claim's locked instruction, a full barrier,
 * keeps from overlapping with the next target's: with these hints the
 * misses of all targets overlap. A hint only: a stale tail prefetches a
 * neighbouring slot. Relaxed: nothing is read from the slot here.
 */
static void
prefetch_slots(const struct quayi_bm_centry *e)
{
	for (uint32_t i = 0; i < e->nplain; i++) {
		const quay_ring *r = e->subs[i]->ring;

		if (r != NULL)
			__builtin_prefetch(quayi_ring_slot(r,
			                       __atomic_load_n(&r->tail, __ATOMIC_RELAXED) &
			                           QUAYI_RING_POS_MASK),
			    1);
	}
}

/* Deliver m to every target of e (but the plain targets marked in bulk,
 * which already have it), with one reference of m per target held by
 * the caller (see quayi_msg_ref_n). */
static void
fan_out(struct quay_bus *bus, const struct quayi_bm_centry *e, quay_msg *m, struct quay_bus_pub_result *res,
    const uint64_t *bulk)
{
	res->matched = e->ntargets;
	if (e->nplain >= FAN_PREFETCH_MIN)
		prefetch_slots(e);
	for (uint32_t i = 0; i < e->nplain; i++) {
		struct quay_sub *s = e->subs[i];
		enum outcome o;

		if (bulk_done(bulk, i))
			continue;
		/* deliver_try's common case, inlined here (gcc kept it a call). */
		int pr = sub_push(s, m);
		if (QUAYI_LIKELY(pr == 0)) {
			quay_counter_inc(s->c_delivered);
			res->delivered++;
			continue;
		}
		o = pr == -EPIPE ? D_CLOSED : deliver_policy(bus, s, m);
		account(res, o);
	}
	for (uint32_t gi = 0; gi < e->ngroups; gi++) {
		const struct quayi_bm_gref *g = &e->groups[gi];
		struct quay_sub *const *mem = e->subs + g->first;
		uint32_t start = 0;
		enum outcome o = D_FULL;

		if (g->n > 1) {
			/* Relaxed: the cursor only spreads the load. */
			start = __atomic_fetch_add(&g->g->rr, 1, __ATOMIC_RELAXED) % g->n;
		}
		uint32_t full = g->n; /* the first member found full */

		/* The chosen member, then the others that have room. */
		for (uint32_t k = 0; k < g->n && o != D_OK; k++) {
			uint32_t idx = (start + k) % g->n;
			enum outcome ok = deliver_try(mem[idx], m);
			if (ok == D_OK)
				o = D_OK;
			else if (ok == D_FULL && full == g->n)
				full = idx;
		}
		if (o != D_OK) /* every member full (or unsubscribed meanwhile) */
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
	if (QUAYI_UNLIKELY(res->closed > 0) && __atomic_load_n(&bus->closing, __ATOMIC_ACQUIRE) != 0)
		return -EPIPE;
	return 0;
}

/* ---- the general fan-out: filters and bound queues ------------------- */

enum { D_FAILED = D_CLOSED + 1, D_PENDING };

static inline void
account_kind(struct quay_bus_pub_result *res, const struct quay_sub *s, int o)
{
	struct quay_bus_pub_outcomes *k = s->queue != NULL ? &res->queues : &res->subs;

	account(res, (enum outcome)(o == D_FAILED ? D_FULL : o));
	k->matched++;
	switch (o) {
	case D_OK: k->delivered++; break;
	case D_DROPPED: k->dropped++; break;
	case D_REJECTED: k->rejected++; break;
	case D_TIMEDOUT: k->timed_out++; break;
	case D_CLOSED: k->closed++; break;
	case D_FAILED: k->failed++; break;
	default: break;
	}
}

/* Whether a binding was unbound or its bus is closing: a BLOCK publisher
 * stops waiting. Acquire; pairs with the release stores in unbind and
 * destroy. */
static inline bool
bind_gone(const struct quay_sub *b)
{
	return __atomic_load_n(&b->closed, __ATOMIC_ACQUIRE) != 0 ||
	    __atomic_load_n(&b->bus->closing, __ATOMIC_ACQUIRE) != 0;
}

/* Send x (a reference the caller holds for it) to binding b's queue,
 * applying b's policy when the queue is full. D_OK: the queue took the
 * reference (a duplicate by the queue's dedup counts as delivered: the
 * queue has the message); otherwise the reference is still the caller's. */
static inline int
queue_send_or_begin(struct quay_sub *b, quay_msg *x, struct quayi_qsend *s)
{
	return s == NULL ? quay_queue_send(b->queue, x) : quayi_queue_send_begin(b->queue, x, s);
}

/* With s (the multi-queue send): the queue's admission only; D_OK then
 * means admitted (s->pending: decided by the commit, not counted yet) or
 * taken by the queue's dedup window. */
static int
deliver_queue_ref(struct quay_bus *bus, struct quay_sub *b, quay_msg *x, struct quayi_qsend *s)
{
	int r = queue_send_or_begin(b, x, s);
	int64_t deadline, sleep_ns = 2000;

	if (QUAYI_LIKELY(r >= 0))
		goto ok;
	if (r == -EPIPE)
		return D_CLOSED;
	if (r != -EAGAIN) {
		quay_counter_inc(b->c_failed);
		return D_FAILED;
	}
	switch (b->policy) {
	case QUAY_SUB_DROP_NEWEST:
		quay_counter_inc(b->c_dropped);
		quay_counter_inc(bus->c_dropped);
		return D_DROPPED;
	case QUAY_SUB_BLOCK: break;
	default:
		quay_counter_inc(b->c_rejected);
		quay_counter_inc(bus->c_rejected);
		return D_REJECTED;
	}
	/* A queue has no wait for room: retry with a growing sleep (2 us to
	 * 1 ms) until the deadline, an unbind or destroy. */
	deadline = quayi_deadline(b->block_timeout_ns);
	for (;;) {
		int64_t left = deadline < 0 ? sleep_ns : deadline - quayi_mono_ns();
		struct timespec ts;

		if (bind_gone(b))
			return D_CLOSED;
		if (left <= 0) {
			quay_counter_inc(b->c_timeouts);
			quay_counter_inc(bus->c_timeouts);
			return D_TIMEDOUT;
		}
		if (left > sleep_ns)
			left = sleep_ns;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left;
		nanosleep(&ts, NULL);
		if (sleep_ns < 1000000)
			sleep_ns *= 2;
		r = queue_send_or_begin(b, x, s);
		if (r >= 0)
			goto ok;
		if (r == -EPIPE)
			return D_CLOSED;
		if (r != -EAGAIN) {
			quay_counter_inc(b->c_failed);
			return D_FAILED;
		}
	}
ok:
	if (s == NULL || !s->pending)
		quay_counter_inc(b->c_delivered);
	return D_OK;
}

/* State of one general publish. */
struct fan {
	quay_msg *m;
	uint32_t used;    /* references of m handed to targets */
	bool orig_queued; /* a bound queue holds m itself */
};

/* Deliver to one target with the reference accounting of struct fan:
 * a subscription takes one reference of m; the first bound queue that
 * takes the message takes m itself (one reference), the others a copy. */
static int
deliver_any(struct quay_bus *bus, struct quay_sub *s, struct fan *f, bool try_only)
{
	quay_msg *x;
	int o;

	if (s->queue == NULL) {
		o = try_only ? (int)deliver_try(s, f->m) : (int)deliver_policy(bus, s, f->m);
		if (try_only && o == D_FULL)
			return o;
		if (o == D_OK)
			f->used++;
		return o;
	}
	if (try_only) {
		/* Groups: a queue member is tried with REJECT semantics first. */
		if (bind_gone(s))
			return D_CLOSED;
	}
	if (!f->orig_queued) {
		x = f->m;
	} else if (quay_msg_clone(quay_msg_pool(f->m), f->m, &x) != 0) {
		quay_counter_inc(s->c_failed);
		return D_FAILED;
	}
	if (try_only) {
		int r = quay_queue_send(s->queue, x);
		if (r >= 0) {
			quay_counter_inc(s->c_delivered);
			o = D_OK;
		} else {
			o = r == -EAGAIN ? D_FULL : r == -EPIPE ? D_CLOSED : D_FAILED;
			if (o == D_FAILED)
				quay_counter_inc(s->c_failed);
		}
	} else {
		o = deliver_queue_ref(bus, s, x, NULL);
	}
	if (o == D_OK) {
		if (x == f->m) {
			f->orig_queued = true;
			f->used++;
		}
	} else if (x != f->m) {
		(void)quay_msg_unref(x); /* the copy nobody took */
	}
	return o;
}

#define PASS_BITS 1024u /* filter results kept from the counting pass */

/* Whether target i of e passes its filter (the subscription itself is
 * not read: e->filt is contiguous). */
static inline bool
passes(const struct quayi_bm_centry *e, struct quayi_filter_hdrs *h, const uint64_t *pass, uint32_t i)
{
	if (e->filt[i] == NULL)
		return true;
	if (i < PASS_BITS)
		return ((pass[i >> 6] >> (i & 63)) & 1) != 0;
	return quayi_filter_match_hdrs(e->filt[i], h);
}

#define MULTI_STACK 16 /* durable bound queues of a publish without allocating */

/*
 * Durable routing (issue 12): the durable bound queues among e's plain
 * targets that pass their filters (ndur of them, two or more) take m as
 * one multi-queue send (src/queue_route.h): each binding's admission
 * first, with its overflow policy (BLOCK waits here for room, before the
 * write), then one log write per WAL for all the admitted ones, all or
 * none. References as deliver_any: the first queue that takes the
 * message takes m itself, the others a copy.
 */
static void
deliver_durable(struct quay_bus *bus, const struct quayi_bm_centry *e, struct quayi_filter_hdrs *h,
    const uint64_t *pass, uint32_t ndur, struct fan *f, struct quay_bus_pub_result *res)
{
	struct quayi_qsend s1[MULTI_STACK], *s = s1;
	struct quay_sub *b1[MULTI_STACK], **b = b1;
	int o1[MULTI_STACK], *o = o1;
	uint32_t k = 0, n = 0;
	bool lent = false; /* m is in a pending send */

	if (ndur > MULTI_STACK) {
		s = quayi_alloc(bus->alloc, ndur * sizeof(*s));
		b = quayi_alloc(bus->alloc, ndur * sizeof(*b));
		o = quayi_alloc(bus->alloc, ndur * sizeof(*o));
		if (s == NULL || b == NULL || o == NULL) {
			for (uint32_t i = 0; i < e->nplain; i++)
				if (e->subs[i]->durable && passes(e, h, pass, i)) {
					quay_counter_inc(e->subs[i]->c_failed);
					account_kind(res, e->subs[i], D_FAILED);
				}
			goto out;
		}
	}
	for (uint32_t i = 0; i < e->nplain && n < ndur; i++)
		if (e->subs[i]->durable && passes(e, h, pass, i)) {
			/* Insertion sort by queue address (see below). */
			uint32_t j = n++;

			for (; j > 0 && (uintptr_t)b[j - 1]->queue > (uintptr_t)e->subs[i]->queue; j--)
				b[j] = b[j - 1];
			b[j] = e->subs[i];
		}
	/* Admission in queue address order: a BLOCK publisher holds room in
	 * the queues before the one it waits for, all at lower addresses, so
	 * two publishers never wait for each other's reserved room. */
	for (; k < n; k++) {
		struct quay_sub *t = b[k];
		quay_msg *x;

		if (!f->orig_queued && !lent) {
			x = f->m;
		} else if (quay_msg_clone(quay_msg_pool(f->m), f->m, &x) != 0) {
			quay_counter_inc(t->c_failed);
			s[k] = (struct quayi_qsend){ .q = NULL };
			o[k] = D_FAILED;
			continue;
		}
		o[k] = deliver_queue_ref(bus, t, x, &s[k]);
		if (o[k] == D_OK && s[k].pending) {
			o[k] = D_PENDING;
			lent |= x == f->m;
		} else {
			if (o[k] == D_OK && x == f->m) {
				f->orig_queued = true; /* the queue's dedup took m */
				f->used++;
			} else if (o[k] != D_OK && x != f->m) {
				(void)quay_msg_unref(x); /* the copy nobody took */
			}
			s[k].pending = 0;
		}
	}
	/* One write per WAL for every admitted send: all of them or none. */
	quayi_queue_send_commit(s, k);
	for (uint32_t j = 0; j < k; j++) {
		if (o[j] == D_PENDING) {
			if (s[j].rc == 0) {
				o[j] = D_OK;
				quay_counter_inc(b[j]->c_delivered);
				if (s[j].orig == f->m) {
					f->orig_queued = true;
					f->used++;
				}
			} else {
				/* The WAL refused the write: in none of this
				 * domain's queues; the reference is ours again. */
				o[j] = D_FAILED;
				quay_counter_inc(b[j]->c_failed);
				if (s[j].orig != f->m)
					(void)quay_msg_unref(s[j].orig);
			}
		}
		account_kind(res, b[j], o[j]);
	}
out:
	if (s != s1) {
		quayi_free(bus->alloc, s, ndur * sizeof(*s));
		quayi_free(bus->alloc, b, ndur * sizeof(*b));
		quayi_free(bus->alloc, o, ndur * sizeof(*o));
	}
}

/* Send m, reaching no target, to the unroutable queue (consumes m). */
static void
unroutable(struct quay_bus *bus, quay_msg *m, struct quay_bus_pub_result *res, bool tapped)
{
	int r = -ENOENT;

	if (tapped) {
		/* The publish tap (a NATS wildcard export) took it: routed. */
		(void)quay_msg_unref(m); /* the publisher's reference */
		return;
	}

	if (bus->unroutable != NULL)
		r = quay_queue_send(bus->unroutable, m);
	res->unroutable = 1;
	res->unroutable_rc = r > 0 ? 0 : r;
	quay_counter_inc(bus->c_unroutable);
	if (r >= 0)
		quay_counter_inc(bus->c_unroutable_queued);
	else
		(void)quay_msg_unref(m);
}

/*
 * Publish one message to an entry with filters or bound queues. First
 * the filters (each evaluated once; the results of the first PASS_BITS
 * targets are kept), to know how many references to take; then the
 * deliveries. Returns 0 (consumed) or publish's refusal code (the
 * caller keeps m). *delivered counts the targets that queued it.
 */
static int
publish_general(struct quay_bus *bus, const struct quayi_bm_centry *e, quay_msg *m, int64_t now,
    struct quay_bus_pub_result *res, bool tapped)
{
	uint64_t pass[PASS_BITS / 64];
	struct quayi_filter_hdrs hdrs; /* the headers, read once if a filter asks */
	uint32_t need = 0, filtered = 0, ntot = e->nplain, ndur = 0;
	struct fan f = { m, 0, false };
	int r;

	for (uint32_t gi = 0; gi < e->ngroups; gi++)
		ntot += e->groups[gi].n;
	memset(pass, 0, sizeof(pass));
	quayi_filter_hdrs_init(&hdrs, m);
	for (uint32_t i = 0; i < ntot; i++) {
		const struct quayi_filter *flt = e->filt[i];
		if (flt == NULL || quayi_filter_match_hdrs(flt, &hdrs)) {
			if (i < PASS_BITS)
				pass[i >> 6] |= (uint64_t)1 << (i & 63);
			if (i < e->nplain)
				need++;
		} else {
			filtered++;
		}
	}
	for (uint32_t gi = 0; gi < e->ngroups; gi++) {
		const struct quayi_bm_gref *g = &e->groups[gi];
		for (uint32_t k = 0; k < g->n; k++)
			if (passes(e, &hdrs, pass, g->first + k)) {
				need++;
				break;
			}
	}
	res->filtered = filtered;
	if (filtered > 0)
		quay_counter_add(bus->c_filtered, filtered);
	if (need == 0) {
		unroutable(bus, m, res, tapped);
		return 0;
	}
	if (QUAYI_UNLIKELY(quay_msg_priority(m) > e->prio_max) ||
	    (need > 1 && quayi_msg_ref_n(m, need - 1) != 0))
		return -EINVAL; /* nothing taken, nothing stamped */
	if (now >= 0)
		(void)quay_msg_set_enqueued_ns(m, now);
	/* Two or more durable bound queues: one multi-queue send for them
	 * (deliver_durable), the other targets one by one. */
	for (uint32_t i = 0; i < e->nplain; i++)
		ndur += e->subs[i]->durable && passes(e, &hdrs, pass, i);
	for (uint32_t i = 0; i < e->nplain; i++) {
		struct quay_sub *s;
		int o;

		if (!passes(e, &hdrs, pass, i))
			continue;
		s = e->subs[i];
		if (ndur > 1 && s->durable)
			continue;
		o = deliver_any(bus, s, &f, false);
		account_kind(res, s, o);
	}
	if (ndur > 1)
		deliver_durable(bus, e, &hdrs, pass, ndur, &f, res);
	for (uint32_t gi = 0; gi < e->ngroups; gi++) {
		const struct quayi_bm_gref *g = &e->groups[gi];
		struct quay_sub *const *mem = e->subs + g->first;
		uint32_t start = 0, full = g->n, last = g->n;
		int o = D_FULL;
		bool failed = false;

		if (g->n > 1) {
			/* Relaxed: the cursor only spreads the load. */
			start = __atomic_fetch_add(&g->g->rr, 1, __ATOMIC_RELAXED) % g->n;
		}
		for (uint32_t k = 0; k < g->n && o != D_OK; k++) {
			uint32_t idx = (start + k) % g->n;
			int ok;
			if (!passes(e, &hdrs, pass, g->first + idx))
				continue;
			last = idx;
			ok = deliver_any(bus, mem[idx], &f, true);
			if (ok == D_OK)
				o = D_OK;
			else if (ok == D_FULL && full == g->n)
				full = idx;
			else if (ok == D_FAILED)
				failed = true;
		}
		if (last == g->n)
			continue; /* no member passed its filter */
		if (o == D_OK) {
			account_kind(res, mem[last], o);
			continue;
		}
		if (full < g->n) {
			o = deliver_any(bus, mem[full], &f, false);
			last = full;
		} else {
			o = failed ? D_FAILED : D_CLOSED;
		}
		account_kind(res, mem[last], o);
	}
	res->matched = res->subs.matched + res->queues.matched;
	r = refusal(bus, res);
	/* The references no target took; the caller keeps its own when
	 * refused (then none was used). Untouched once all were taken. */
	(void)quayi_msg_unref_n(m, need - f.used - (r != 0 ? 1u : 0u));
	if (res->queues.delivered > 0)
		quay_counter_add(bus->c_bound, res->queues.delivered);
	return r;
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
fan_out_batch(struct quay_bus *bus, const struct quayi_bm_centry *e, quay_msg **msgs, size_t n, int64_t now,
    uint64_t *delivered, int *rc)
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
			if (need > 1 && quayi_msg_ref_n(ms[j], need - 1) != 0)
				break;
			if (now >= 0)
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

			if (nbulk == e->ntargets) { /* every target took the chunk */
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
			(void)quayi_msg_unref_n(ms[j], need - del[j]);
			*delivered += del[j];
		}
		for (; j < c; j++)
			(void)quayi_msg_unref_n(ms[j], need - 1); /* the caller keeps its own */
		done += stop;
		if (stop < c)
			break;
	}
	return done;
}

/* Whether the NUL-terminated s is e's subject. strncmp stops at a NUL of
 * s (never reads past a shorter s); e->subj has no NUL in its len bytes,
 * so equal means s has len bytes, and s[len] may be read. */
static inline bool
same_subject(const char *s, const struct quayi_bm_centry *e)
{
	return strncmp(s, e->subj, e->len) == 0 && s[e->len] == '\0';
}

/* Publish msgs[0..n); returns the count published or a negative code
 * (only when msgs[0] failed). *res describes the last message tried.
 * !caller_res: nobody reads the result but its first six fields (the totals
 * fan_out and refusal use), so the plain one-message path clears only
 * those; caller_res: res is the caller's, zeroed already (n is 1). */
static int
publish_core(struct quay_bus *bus, const char *subject, quay_msg **msgs, size_t n,
    struct quay_bus_pub_result *res, bool caller_res)
{
	const struct quayi_bm_centry *e = NULL;
	struct quayi_bm_table *t;
	struct quay_bus_pub_result local;
	const struct quayi_bus_tap *tap;
	int tapped = 0;
	uint32_t len;
	uint64_t hash, inbox_n;
	bool temp = false, checked = false, locked = false;
	int64_t now;
	size_t k;
	uint64_t delivered = 0;
	int r;

	if (subject == NULL)
		return -EINVAL;
	if (res == NULL)
		res = &local;
	/* The thread's last subject again (the common case: a publisher
	 * repeats a few subjects): its entry, if the table is still the
	 * version it came from. Its subject was checked, and it is not an
	 * inbox (inbox subjects are never resolved). */
	if (QUAYI_LIKELY(rcu_registered) && last_subj.uid != 0) {
		urcu_memb_read_lock();
		locked = true;
		/* BUS-T2: acquire; pairs with BUS-T1 (as below). */
		t = __atomic_load_n(&bus->table, __ATOMIC_ACQUIRE);
		if (t->uid == last_subj.uid && same_subject(subject, last_subj.e)) {
			e = last_subj.e;
			len = e->len;
		}
	}
	if (e == NULL) {
		/* The subject's bytes are checked only when it is not in the
		 * cache (every cached entry was resolved for a checked
		 * subject), or before anything else uses it: the tap, the
		 * unroutable path. An inbox subject is an inbox prefix and
		 * digits: valid. */
		if (quayi_bm_subject_hash(subject, &len, &hash) != 0) {
			if (locked)
				read_unlock();
			return -EINVAL;
		}
		if (quayi_bus_is_inbox(bus, subject, len, &inbox_n)) {
			if (locked)
				read_unlock();
			for (k = 0; k < n; k++) {
				memset(res, 0, sizeof(*res));
				res->matched = 1;
				if (quayi_bus_route_reply(bus, inbox_n, msgs[k]) == 1)
					res->delivered = 1;
			}
			return (int)n;
		}
		if (!locked) {
			r = rcu_thread();
			if (r != 0)
				return r;
			urcu_memb_read_lock();
		}
	}
	/* Acquire: a late call on a bus being destroyed fails fast. */
	if (QUAYI_UNLIKELY(__atomic_load_n(&bus->closing, __ATOMIC_ACQUIRE) != 0)) {
		read_unlock();
		return quayi_bm_check_subject(subject, len) != 0 ? -EINVAL : -EPIPE;
	}
	/* BUS-TAP2: acquire; pairs with BUS-TAP1. One predictable branch. */
	tap = __atomic_load_n(&bus->tap, __ATOMIC_ACQUIRE);
	if (QUAYI_UNLIKELY(tap != NULL)) {
		if (quayi_bm_check_subject(subject, len) != 0) {
			read_unlock();
			return -EINVAL;
		}
		checked = true;
	}
	if (e == NULL) {
		/* BUS-T2: acquire; pairs with BUS-T1 (the version's nodes and cache). */
		t = __atomic_load_n(&bus->table, __ATOMIC_ACQUIRE);
		if (t->nsubs > 0)
			e = quayi_bm_cached(t, subject, len, hash);
		if (e == NULL) {
			if (!checked && quayi_bm_check_subject(subject, len) != 0) {
				read_unlock();
				return -EINVAL;
			}
			if (t->nsubs > 0) {
				e = quayi_bm_lookup(t, subject, len, hash, &temp);
				if (QUAYI_UNLIKELY(e == NULL)) {
					read_unlock();
					return -ENOMEM;
				}
			}
		}
		if (e != NULL && !temp) { /* a cached entry: it lives with t */
			last_subj.uid = t->uid;
			last_subj.e = e;
		}
	}
	if (QUAYI_UNLIKELY(tap != NULL))
		tapped = tap->fn(tap->arg, subject, len, msgs, n);
	/* enqueued_ns when a target records latency: the clock (costs as much
	 * as a delivery) on one call in latency_sample of this thread, 0 on
	 * the others (not timed); -1: untouched. */
	now = -1;
	if (e != NULL && e->stamp)
		now = (lat_tick++ & bus->lat_mask) == 0 ? bus->clock(bus->clock_arg) : 0;
	if (e == NULL || e->ntargets == 0) {
		for (k = 0; k < n; k++) {
			memset(res, 0, sizeof(*res));
			unroutable(bus, msgs[k], res, tapped != 0); /* takes the publisher's reference */
		}
		if (!tapped)
			quay_counter_add(bus->c_nosub, n);
	} else if (e->special) {
		/* Filters or bound queues: one message at a time. */
		for (k = 0; k < n; k++) {
			memset(res, 0, sizeof(*res));
			r = publish_general(bus, e, msgs[k], now, res, tapped != 0);
			if (r != 0)
				break;
			delivered += res->delivered;
		}
	} else if (n > 1) {
		memset(res, 0, sizeof(*res));
		k = fan_out_batch(bus, e, msgs, n, now, &delivered, &r);
	} else {
		quay_msg *m = msgs[0];
		uint32_t need = e->ntargets;

		if (!caller_res) {
			/* The totals only: the 92-byte memset was a sixth of a
			 * publish to one subscriber. */
			res->matched = res->delivered = res->dropped = 0;
			res->rejected = res->timed_out = res->closed = 0;
		}
		k = 0;
		if (QUAYI_UNLIKELY(quay_msg_priority(m) > e->prio_max) ||
		    (need > 1 && quayi_msg_ref_n(m, need - 1) != 0)) {
			r = -EINVAL; /* nothing taken, nothing stamped */
		} else {
			if (now >= 0)
				(void)quay_msg_set_enqueued_ns(m, now);
			fan_out(bus, e, m, res, NULL);
			r = refusal(bus, res);
			/* The references no target took; the caller keeps its
			 * own when refused. Untouched once all were taken. */
			(void)quayi_msg_unref_n(m, need - res->delivered - (r != 0 ? 1 : 0));
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
		quayi_bm_centry_free(t, e);
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
		__atomic_store_n(&bus->tap, tap, __ATOMIC_RELEASE); /* BUS-TAP1 */
	pthread_mutex_unlock(&bus->lock);
	if (r == 0 && tap == NULL) {
		urcu_memb_synchronize_rcu(); /* every publish that saw the old tap left */
		tsan_reclaim();              /* the caller frees what the tap used */
	}
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
	r = publish_core(bus, subject, &msg, 1, res != NULL ? res : &local, res != NULL);
	return r < 0 ? r : (int)(res != NULL ? res : &local)->delivered;
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
		           &(uint64_t){ 0 }) == 0 ?
		    0 :
		    -EINVAL;
	return publish_core(bus, subject, msgs, n, NULL, false);
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

		while (done + run < n &&
		    (subjects[done + run] == subjects[done] ||
		        strcmp(subjects[done + run], subjects[done]) == 0))
			run++;
		/* publish_core reads msgs[] and never writes it. */
		r = publish_core(bus, subjects[done], (quay_msg **)(uintptr_t)(msgs + done), run, NULL,
		    false);
		if (r < 0)
			return done > 0 ? (int)done : r;
		done += (size_t)r;
		if ((size_t)r < run)
			break;
	}
	return (int)done;
}

/* ---- receiving ----------------------------------------------------- */

/* BUS-R1: enter a receive; false if the subscription is closed. */
static bool
recv_enter(struct quay_sub *s)
{
	bool ok;

	urcu_memb_read_lock();
	/* Acquire; pairs with the release store in unsubscribe. */
	ok = __atomic_load_n(&s->closed, __ATOMIC_ACQUIRE) == 0;
	if (ok) {
		/* Relaxed: the grace period orders it before the sub's
		 * callback reads inflight (BUS-R2). */
		__atomic_fetch_add(&s->inflight, 1, __ATOMIC_RELAXED);
	}
	read_unlock();
	return ok;
}

static void
recv_leave(struct quay_sub *s)
{
	/* Release; pairs with BUS-R2's acquire: our last use of s is before. */
	__atomic_fetch_sub(&s->inflight, 1, __ATOMIC_RELEASE);
}

/* The latency of each stamped message (a sampled publish); one clock read
 * per call, only if there is one. */
static void
record_latency(struct quay_sub *s, quay_msg *const *m, size_t n)
{
	int64_t now = 0;

	if (s->h_latency == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		int64_t enq = quay_msg_enqueued_ns(m[i]);
		if (QUAYI_LIKELY(enq <= 0))
			continue;
		if (now == 0)
			now = s->bus->clock(s->bus->clock_arg);
		quay_hist_record(s->h_latency, now > enq ? (uint64_t)(now - enq) : 0);
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
	/* BUS-R3: a message already queued is taken inside one read-side
	 * section, which keeps sub alive (as BUS-R1): no inflight count. */
	urcu_memb_read_lock();
	/* Acquire; pairs with the release store in unsubscribe (as recv_enter). */
	if (QUAYI_LIKELY(__atomic_load_n(&sub->closed, __ATOMIC_ACQUIRE) == 0) && sub_pop(sub, &m) == 0) {
		quay_counter_inc(sub->c_received);
		record_latency(sub, &m, 1);
		read_unlock();
		*out = m;
		return 0;
	}
	read_unlock();
	/* Empty or closed: the waiting path. */
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
	/* BUS-R3: it never waits, so one read-side section covers it. */
	urcu_memb_read_lock();
	/* Acquire; pairs with the release store in unsubscribe (as recv_enter). */
	if (__atomic_load_n(&sub->closed, __ATOMIC_ACQUIRE) == 0) {
		if (sub->pq != NULL)
			got = quay_pq_pop_burst(sub->pq, out, n, NULL);
		else
			got = quay_ring_pop_burst(sub->ring, out, n);
		if (got > 0) {
			quay_counter_add(sub->c_received, got);
			record_latency(sub, out, got);
		}
	}
	read_unlock();
	return got;
}

/* ---- metrics ------------------------------------------------------- */

static int
make_counter(quay_stats *st, const char *name, const char *help, const struct quay_stats_label *l, size_t nl,
    quay_counter **out)
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
		{ "bus", bus->name },
		{ "sub", id },
		{ "pattern", s->pattern },
		{ "group", NULL },
	};
	size_t nl = 3;
	int r;

	snprintf(id, sizeof(id), "%llu", (unsigned long long)s->id);
	if (s->group != NULL) {
		l[3].value = s->group->name;
		nl = 4;
	}
	if ((r = make_counter(bus->stats, "quay_sub_delivered_total", "Messages queued to a subscription", l,
	         nl, &s->c_delivered)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_received_total", "Messages taken by receivers", l, nl,
	         &s->c_received)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_dropped_total", "Messages dropped by policy", l, nl,
	         &s->c_dropped)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_rejected_total", "Messages refused by REJECT", l, nl,
	         &s->c_rejected)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_block_timeouts_total",
	         "Publishers that gave up waiting for room", l, nl, &s->c_timeouts)) != 0 ||
	    (r = make_counter(bus->stats, "quay_sub_released_total",
	         "Queued messages released by unsubscribe", l, nl, &s->c_released)) != 0)
		goto fail;
	if (!(s->flags & QUAY_SUB_NO_LATENCY) &&
	    (r = quay_hist_create(bus->stats, "quay_sub_receive_latency_seconds",
	         "Time from publish to receive", l, nl, &s->h_latency)) != 0)
		goto fail;
	if ((r = quay_gauge_create(bus->stats, "quay_sub_pending", "Messages queued in a subscription", l, nl,
	         &s->g_pending)) != 0 ||
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
	quayi_free(bus->alloc, g, sizeof(*g));
	deferred_done(bus);
}

static void
sub_free(struct quay_sub *s)
{
	sub_metrics_free(s);
	quay_counter_destroy(s->c_failed);
	quay_ring_destroy(s->ring);
	quay_pq_destroy(s->pq);
	quayi_filter_free(s->filter);
	quayi_free(s->bus->alloc, s, sizeof(*s));
}

static void
sub_cb(struct rcu_head *h)
{
	struct quay_sub *s = BUS_CONTAINER(h, struct quay_sub, rcu);
	struct quay_bus *bus;

	tsan_reclaim();
	/* BUS-R2: acquire; pairs with recv_leave(). Receivers were woken by the
	 * close, so this wait is short. */
	while (__atomic_load_n(&s->inflight, __ATOMIC_ACQUIRE) != 0)
		sched_yield();
	bus = s->bus;
	sub_free(s);
	deferred_done(bus);
}

/*
 * Put target s (a subscription or a binding, already in table version t)
 * into the bus: publish t (BUS-T1), link a new group, count s in its
 * group, the bus's list and nsubs; then drop bus->lock, held by the
 * caller. The mirror of target_unlink().
 */
static void
target_link(struct quay_bus *bus, struct quay_sub *s, struct quayi_bm_table *t, struct quayi_bus_group *g,
    struct quayi_bus_group *newg)
{
	/* BUS-T1: release; pairs with BUS-T2 in publish. */
	__atomic_store_n(&bus->table, t, __ATOMIC_RELEASE);
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
	__atomic_fetch_add(&bus->nsubs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&bus->lock);
}

/* The bus's group called name, or a new one in *newg (not yet linked:
 * the caller links it once the target is in; freed on failure). NULL:
 * out of memory. Under bus->lock. */
static struct quayi_bus_group *
group_get(struct quay_bus *bus, const char *name, struct quayi_bus_group **newg)
{
	struct quayi_bus_group *g;

	for (g = bus->groups; g != NULL; g = g->next)
		if (strcmp(g->name, name) == 0)
			return g;
	g = quayi_calloc(bus->alloc, 1, sizeof(*g));
	if (g == NULL)
		return NULL;
	strcpy(g->name, name);
	g->bus = bus;
	*newg = g;
	return g;
}

QUAY_API int
quay_bus_subscribe(quay_bus *bus, const char *pattern, const struct quay_sub_opts *opts, quay_sub **out)
{
	static const struct quay_sub_opts defaults = QUAY_SUB_OPTS_INIT;
	struct quay_sub_opts o2;
	struct quay_sub *s;
	struct quayi_bus_group *g = NULL, *newg = NULL;
	struct quayi_bm_table *old, *t;
	size_t cap;
	int r;

	if (bus == NULL || pattern == NULL || out == NULL)
		return -EINVAL;
	if (opts == NULL)
		opts = &defaults;
	/* Size-versioned: a struct that ends before filter has none. */
	if (opts->size == offsetof(struct quay_sub_opts, filter)) {
		memcpy(&o2, opts, offsetof(struct quay_sub_opts, filter));
		o2.size = sizeof(o2);
		o2.filter = NULL;
		opts = &o2;
	}
	if (opts->size != sizeof(*opts) || (opts->flags & ~QUAY_SUB_FLAGS_ALL) != 0 ||
	    (unsigned)opts->policy > (unsigned)QUAY_SUB_BLOCK || opts->priorities > QUAY_PQ_LEVELS_MAX ||
	    (opts->policy == QUAY_SUB_DROP_OLDEST && opts->priorities > 0) ||
	    (opts->group != NULL && !valid_name(opts->group)))
		return -EINVAL;
	cap = opts->capacity != 0 ? opts->capacity : QUAY_SUB_CAPACITY_DEFAULT;
	if (cap > QUAY_RING_CAPACITY_MAX || (cap & (cap - 1)) != 0)
		return -EINVAL;
	s = quayi_calloc(bus->alloc, 1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	if (quayi_bm_parse(pattern, true, &s->toks) != 0) {
		quayi_free(bus->alloc, s, sizeof(*s));
		return -EINVAL;
	}
	if (opts->filter != NULL) {
		r = quayi_filter_compile_a(bus->alloc, opts->filter, &s->filter, NULL, 0);
		if (r != 0) {
			quayi_free(bus->alloc, s, sizeof(*s));
			return r;
		}
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
		po.allocator = bus->alloc;
		r = quay_pq_create(&po, &s->pq);
	} else {
		struct quay_ring_opts ro = QUAY_RING_OPTS_INIT;
		ro.allocator = bus->alloc;
		r = quay_ring_create_opts(cap, sizeof(quay_msg *), &ro, &s->ring);
	}
	if (r != 0) {
		quayi_filter_free(s->filter);
		quayi_free(bus->alloc, s, sizeof(*s));
		return r == -EINVAL ? -EINVAL : -ENOMEM;
	}
	r = rcu_thread();
	if (r != 0)
		goto fail_queue;
	/* Relaxed: an id only has to be unique; it orders nothing. */
	s->id = __atomic_fetch_add(&bus->next_sub_id, 1, __ATOMIC_RELAXED) + 1;

	pthread_mutex_lock(&bus->lock);
	/* Relaxed under the mutex: destroy sets it before taking the mutex. */
	if (__atomic_load_n(&bus->closing, __ATOMIC_RELAXED) != 0) {
		r = -EPIPE;
		goto fail_locked;
	}
	/* Relaxed: nsubs changes only under bus->lock, which we hold. */
	if (__atomic_load_n(&bus->nsubs, __ATOMIC_RELAXED) >= bus->max_subs) {
		r = -ENOMEM;
		goto fail_locked;
	}
	if (opts->group != NULL) {
		g = group_get(bus, opts->group, &newg);
		if (g == NULL) {
			r = -ENOMEM;
			goto fail_locked;
		}
		s->group = g;
	}
	r = sub_metrics(bus, s);
	if (r != 0)
		goto fail_locked;
	old = __atomic_load_n(&bus->table, __ATOMIC_RELAXED); /* ours, under the mutex */
	r = quayi_bm_insert(old, &s->toks, s, &bus->caches, &t);
	if (r != 0) {
		sub_metrics_free(s);
		goto fail_locked;
	}
	t->bus = bus;
	target_link(bus, s, t, g, newg); /* unlocks */
	defer_free(bus, &old->rcu, table_cb);
	*out = s;
	return 0;

fail_locked:
	pthread_mutex_unlock(&bus->lock);
	quayi_free(bus->alloc, newg, sizeof(*newg));
fail_queue:
	quay_ring_destroy(s->ring);
	quay_pq_destroy(s->pq);
	quayi_filter_free(s->filter);
	quayi_free(bus->alloc, s, sizeof(*s));
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

/*
 * Take target s (a subscription or a binding) out of the bus: a new table
 * version without it (BUS-T1), off the bus's list, out of its group, and
 * marked closed (release; pairs with recv_enter()'s acquire for a
 * subscription, bind_gone()'s for a binding; before the grace period
 * that frees it, so the grace period orders it before every later
 * receive: BUS-R1). Under bus->lock. 0 with *old the replaced version
 * and *gone the group if s was its last member (both to free after a
 * grace period), or -EINVAL if s is not in the table.
 */
static int
target_unlink(struct quay_bus *bus, struct quay_sub *s, struct quayi_bm_table **old,
    struct quayi_bus_group **gone)
{
	struct quayi_bm_table *t;
	struct quayi_bus_group *g, **pg;
	int r;

	pthread_mutex_lock(&bus->lock);
	*old = __atomic_load_n(&bus->table, __ATOMIC_RELAXED); /* ours, under the mutex */
	r = quayi_bm_remove(*old, &s->toks, s, &bus->caches, &t);
	if (r != 0) {
		pthread_mutex_unlock(&bus->lock);
		return r == -ENOENT ? -EINVAL : r;
	}
	t->bus = bus;
	/* BUS-T1: release; pairs with BUS-T2 in publish. */
	__atomic_store_n(&bus->table, t, __ATOMIC_RELEASE);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		bus->subs = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	/* Relaxed: as the increment in subscribe and bind (under bus->lock). */
	__atomic_fetch_sub(&bus->nsubs, 1, __ATOMIC_RELAXED);
	g = s->group;
	if (g != NULL && --g->members == 0) {
		for (pg = &bus->groups; *pg != g; pg = &(*pg)->next)
			;
		*pg = g->next;
	} else {
		g = NULL;
	}
	*gone = g;
	/* Release: see above. */
	__atomic_store_n(&s->closed, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&bus->lock);
	return 0;
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
	struct quayi_bm_table *old;
	struct quayi_bus_group *g;
	quay_msg *m;
	uint64_t released = 0;
	int r;

	if (sub == NULL || sub->queue != NULL)
		return -EINVAL;
	bus = sub->bus;
	r = rcu_thread();
	if (r != 0)
		return r;
	r = target_unlink(bus, sub, &old, &g);
	if (r != 0)
		return r;

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
			quayi_cpu_relax(); /* a push completing */
		}
	}
	if (released > 0)
		quay_counter_add(sub->c_released, released);
	if (final != NULL) {
		/* Final means final: every publish that could still reach the
		 * queue (it is closed: they fail) and every receiver that saw
		 * closed == 0 (BUS-R1) finish within a grace period; receivers
		 * counted in inflight then leave (they were woken by the
		 * close). BUS-R2-style acquire: pairs with recv_leave()'s release,
		 * so their counter updates are visible. */
		urcu_memb_synchronize_rcu();
		tsan_reclaim();
		while (__atomic_load_n(&sub->inflight, __ATOMIC_ACQUIRE) != 0)
			sched_yield();
		sub_counters_read(sub, final);
	}
	defer_free(bus, &old->rcu, table_cb);
	if (g != NULL)
		defer_free(bus, &g->rcu, group_cb);
	defer_free(bus, &sub->rcu, sub_cb);
	return 0;
}

/* ---- bindings ------------------------------------------------------- */

static int
bind_metrics(struct quay_bus *bus, struct quay_sub *b)
{
	char id[24];
	struct quay_stats_label l[4] = {
		{ "bus", bus->name },
		{ "binding", id },
		{ "pattern", b->pattern },
		{ "group", NULL },
	};
	size_t nl = 3;
	int r;

	snprintf(id, sizeof(id), "%llu", (unsigned long long)b->id);
	if (b->group != NULL) {
		l[3].value = b->group->name;
		nl = 4;
	}
	if ((r = make_counter(bus->stats, "quay_binding_delivered_total", "Messages a bound queue accepted",
	         l, nl, &b->c_delivered)) != 0 ||
	    (r = make_counter(bus->stats, "quay_binding_dropped_total",
	         "Messages dropped by DROP_NEWEST (queue full)", l, nl, &b->c_dropped)) != 0 ||
	    (r = make_counter(bus->stats, "quay_binding_rejected_total",
	         "Messages refused by REJECT (queue full)", l, nl, &b->c_rejected)) != 0 ||
	    (r = make_counter(bus->stats, "quay_binding_block_timeouts_total",
	         "Publishers that gave up waiting for room in a bound queue", l, nl, &b->c_timeouts)) != 0 ||
	    (r = make_counter(bus->stats, "quay_binding_failed_total",
	         "Messages a bound queue refused otherwise (copy, priority, log)", l, nl, &b->c_failed)) !=
	        0) {
		sub_metrics_free(b);
		quay_counter_destroy(b->c_failed);
		b->c_failed = NULL;
		return r == -EINVAL ? -EINVAL : -ENOMEM;
	}
	return 0;
}

QUAY_API int
quay_bus_bind(quay_bus *bus, const char *pattern, quay_queue *q, const struct quay_bind_opts *opts,
    quay_binding **out)
{
	static const struct quay_bind_opts defaults = QUAY_BIND_OPTS_INIT;
	struct quay_binding *bd;
	struct quay_sub *b;
	struct quayi_bus_group *g = NULL, *newg = NULL;
	struct quayi_bm_table *old, *t;
	int r;

	if (bus == NULL || pattern == NULL || q == NULL || out == NULL)
		return -EINVAL;
	if (opts == NULL)
		opts = &defaults;
	if (opts->size != sizeof(*opts) || opts->flags != 0 ||
	    (opts->policy != QUAY_SUB_REJECT && opts->policy != QUAY_SUB_DROP_NEWEST &&
	        opts->policy != QUAY_SUB_BLOCK) ||
	    (opts->group != NULL && !valid_name(opts->group)))
		return -EINVAL;
	bd = quayi_calloc(bus->alloc, 1, sizeof(*bd));
	if (bd == NULL)
		return -ENOMEM;
	b = &bd->s;
	if (quayi_bm_parse(pattern, true, &b->toks) != 0) {
		quayi_free(bus->alloc, bd, sizeof(*bd));
		return -EINVAL;
	}
	if (opts->filter != NULL) {
		r = quayi_filter_compile_a(bus->alloc, opts->filter, &b->filter, NULL, 0);
		if (r != 0) {
			quayi_free(bus->alloc, bd, sizeof(*bd));
			return r;
		}
	}
	memcpy(b->pattern, pattern, b->toks.len + 1);
	b->toks.s = b->pattern;
	b->bus = bus;
	b->queue = q;
	b->durable = quayi_queue_log(q)->ops != NULL;
	b->policy = opts->policy;
	b->block_timeout_ns = opts->block_timeout_ns;
	r = rcu_thread();
	if (r != 0)
		goto fail;
	/* Relaxed: an id only has to be unique; it orders nothing. */
	b->id = __atomic_fetch_add(&bus->next_sub_id, 1, __ATOMIC_RELAXED) + 1;

	pthread_mutex_lock(&bus->lock);
	/* Relaxed under the mutex: destroy sets it before taking the mutex. */
	if (__atomic_load_n(&bus->closing, __ATOMIC_RELAXED) != 0) {
		r = -EPIPE;
		goto fail_locked;
	}
	/* Relaxed: nsubs changes only under bus->lock, which we hold. */
	if (__atomic_load_n(&bus->nsubs, __ATOMIC_RELAXED) >= bus->max_subs) {
		r = -ENOMEM;
		goto fail_locked;
	}
	for (struct quay_sub *x = bus->subs; x != NULL; x = x->next) {
		if (x->queue == q && strcmp(x->pattern, b->pattern) == 0) {
			r = -EEXIST;
			goto fail_locked;
		}
	}
	if (opts->group != NULL) {
		g = group_get(bus, opts->group, &newg);
		if (g == NULL) {
			r = -ENOMEM;
			goto fail_locked;
		}
		b->group = g;
	}
	r = bind_metrics(bus, b);
	if (r != 0)
		goto fail_locked;
	old = __atomic_load_n(&bus->table, __ATOMIC_RELAXED); /* ours, under the mutex */
	r = quayi_bm_insert(old, &b->toks, b, &bus->caches, &t);
	if (r != 0) {
		sub_metrics_free(b);
		quay_counter_destroy(b->c_failed);
		goto fail_locked;
	}
	t->bus = bus;
	/* Relaxed: only quay_queue_destroy()'s debug check reads it (acquire),
	 * after the caller's own unbind. */
	__atomic_fetch_add(quayi_queue_bound(q), 1, __ATOMIC_RELAXED);
	target_link(bus, b, t, g, newg); /* unlocks */
	defer_free(bus, &old->rcu, table_cb);
	*out = bd;
	return 0;

fail_locked:
	pthread_mutex_unlock(&bus->lock);
	quayi_free(bus->alloc, newg, sizeof(*newg));
fail:
	quayi_filter_free(b->filter);
	quayi_free(bus->alloc, bd, sizeof(*bd));
	return r;
}

static void
bind_cb(struct rcu_head *h)
{
	struct quay_sub *b = BUS_CONTAINER(h, struct quay_sub, rcu);
	struct quay_bus *bus;

	tsan_reclaim();
	bus = b->bus;
	sub_free(b);
	deferred_done(bus);
}

QUAY_API int
quay_bus_unbind(quay_binding *bd)
{
	struct quay_bus *bus;
	struct quay_sub *b;
	struct quayi_bm_table *old;
	struct quayi_bus_group *g;
	int r;

	if (bd == NULL)
		return -EINVAL;
	b = &bd->s;
	bus = b->bus;
	r = rcu_thread();
	if (r != 0)
		return r;
	r = target_unlink(bus, b, &old, &g);
	if (r != 0)
		return r;
	/* Every publish that could still send to the queue runs inside a
	 * read-side section that began before the new version was published:
	 * after this grace period none is left, and the queue may go. */
	urcu_memb_synchronize_rcu();
	tsan_reclaim();
	/* Release; pairs with quay_queue_destroy()'s acquire debug check. */
	__atomic_fetch_sub(quayi_queue_bound(b->queue), 1, __ATOMIC_RELEASE);
	defer_free(bus, &old->rcu, table_cb);
	if (g != NULL)
		defer_free(bus, &g->rcu, group_cb);
	defer_free(bus, &b->rcu, bind_cb);
	return 0;
}

QUAY_API int
quay_binding_counters(const quay_binding *bd, struct quay_binding_counters *out)
{
	const struct quay_sub *b;

	if (bd == NULL || out == NULL)
		return -EINVAL;
	b = &bd->s;
	out->delivered = quay_counter_read(b->c_delivered);
	out->dropped = quay_counter_read(b->c_dropped);
	out->rejected = quay_counter_read(b->c_rejected);
	out->timed_out = quay_counter_read(b->c_timeouts);
	out->failed = quay_counter_read(b->c_failed);
	return 0;
}

/* ---- create / destroy ---------------------------------------------- */

static uint64_t bus_ids; /* relaxed: uniqueness only */

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
	quay_counter_destroy(bus->c_unroutable);
	quay_counter_destroy(bus->c_unroutable_queued);
	quay_counter_destroy(bus->c_filtered);
	quay_counter_destroy(bus->c_bound);
}

static int
bus_metrics(struct quay_bus *bus)
{
	const struct quay_stats_label l[1] = { { "bus", bus->name } };
	int r;

	if ((r = make_counter(bus->stats, "quay_bus_published_total", "Messages published", l, 1,
	         &bus->c_published)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_delivered_total", "Deliveries (message x target)", l, 1,
	         &bus->c_delivered)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_dropped_total", "Deliveries dropped by policy", l, 1,
	         &bus->c_dropped)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_rejected_total", "Deliveries refused by REJECT", l, 1,
	         &bus->c_rejected)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_block_timeouts_total", "BLOCK waits that timed out", l, 1,
	         &bus->c_timeouts)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_no_subscriber_total",
	         "Messages that matched no subscription", l, 1, &bus->c_nosub)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_late_replies_total",
	         "Replies that found no waiting request", l, 1, &bus->c_late)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_unroutable_total",
	         "Messages that reached no target (filters included)", l, 1, &bus->c_unroutable)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_unroutable_queued_total",
	         "Unroutable messages queued in the unroutable queue", l, 1, &bus->c_unroutable_queued)) !=
	        0 ||
	    (r = make_counter(bus->stats, "quay_bus_filtered_total",
	         "Targets whose header filter refused a message", l, 1, &bus->c_filtered)) != 0 ||
	    (r = make_counter(bus->stats, "quay_bus_bound_delivered_total", "Messages bound queues accepted",
	         l, 1, &bus->c_bound)) != 0) {
		bus_metrics_free(bus);
		return r == -EINVAL ? -EINVAL : -ENOMEM;
	}
	return 0;
}

static void
bus_free(struct quay_bus *bus)
{
	quayi_free_aligned(bus->alloc, bus->reqs, QUAY_CACHELINE, bus->nreq * sizeof(*bus->reqs));
	quayi_free(bus->alloc, bus, sizeof(*bus));
}

QUAY_API int
quay_bus_create(const struct quay_bus_opts *opts, quay_bus **out)
{
	static const struct quay_bus_opts defaults = QUAY_BUS_OPTS_INIT;
	struct quay_bus_opts o2;
	struct quay_bus *bus;
	struct quayi_bm_table *t;
	int r;

	if (out == NULL)
		return -EINVAL;
	if (opts == NULL)
		opts = &defaults;
	/* Size-versioned: a struct that ends before unroutable has none, one
	 * that ends before allocator the C library's. */
	if (opts->size == offsetof(struct quay_bus_opts, unroutable) ||
	    opts->size == offsetof(struct quay_bus_opts, allocator) ||
	    opts->size == offsetof(struct quay_bus_opts, latency_sample)) {
		memset(&o2, 0, sizeof(o2));
		memcpy(&o2, opts, opts->size);
		o2.size = sizeof(o2);
		opts = &o2;
	}
	if (opts->size != sizeof(*opts) || opts->flags != 0 ||
	    (opts->name != NULL && !valid_name(opts->name)) || opts->max_subs > QUAY_BUS_SUBS_MAX ||
	    opts->max_requests > QUAY_BUS_REQUESTS_MAX || quayi_alloc_check(opts->allocator) != 0 ||
	    opts->latency_sample > QUAY_BUS_LATENCY_SAMPLE_MAX ||
	    (opts->latency_sample & (opts->latency_sample - 1)) != 0)
		return -EINVAL;
	bus = quayi_calloc(opts->allocator, 1, sizeof(*bus));
	if (bus == NULL)
		return -ENOMEM;
	bus->alloc = opts->allocator;
	/* Relaxed: a process-unique id for inbox subjects; orders nothing. */
	bus->id = __atomic_fetch_add(&bus_ids, 1, __ATOMIC_RELAXED) + 1;
	if (opts->name != NULL)
		strcpy(bus->name, opts->name);
	else
		snprintf(bus->name, sizeof(bus->name), "bus%llu", (unsigned long long)bus->id);
	bus->inbox_len =
	    (size_t)snprintf(bus->inbox, sizeof(bus->inbox), "_INBOX.%llu.", (unsigned long long)bus->id);
	bus->clock = opts->clock != NULL ? opts->clock : quayi_real_clock;
	bus->clock_arg = opts->clock_arg;
	bus->lat_mask =
	    (opts->latency_sample != 0 ? opts->latency_sample : QUAY_BUS_LATENCY_SAMPLE_DEFAULT) - 1;
	bus->max_subs = opts->max_subs != 0 ? opts->max_subs : QUAY_BUS_SUBS_DEFAULT;
	bus->nreq = opts->max_requests != 0 ? opts->max_requests : QUAY_BUS_REQUESTS_DEFAULT;
	bus->reqs = quayi_calloc_aligned(bus->alloc, QUAY_CACHELINE, bus->nreq * sizeof(*bus->reqs));
	if (bus->reqs == NULL) {
		quayi_free(bus->alloc, bus, sizeof(*bus));
		return -ENOMEM;
	}
	if (opts->stats != NULL) {
		bus->stats = opts->stats;
	} else {
		struct quay_stats_opts so = QUAY_STATS_OPTS_INIT;
		size_t per = 8; /* metrics per subscription, rounded up */
		so.hist_shards = 1;
		so.allocator = bus->alloc;
		so.max_metrics = bus->max_subs * per + 32;
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
	quayi_bm_cache_pool_init(&bus->caches, bus->alloc);
	t = quayi_bm_table_new(&bus->caches);
	if (t == NULL) {
		quayi_bm_cache_pool_fini(&bus->caches);
		bus_metrics_free(bus);
		r = -ENOMEM;
		goto fail;
	}
	t->bus = bus;
	/* Relaxed: the bus is not shared yet; create's return publishes it. */
	__atomic_store_n(&bus->table, t, __ATOMIC_RELAXED);
	pthread_mutex_init(&bus->lock, NULL);
	bus->unroutable = opts->unroutable;
	if (bus->unroutable != NULL) {
		/* Relaxed: as in bind; destroy's release decrement pairs with
		 * quay_queue_destroy()'s debug check. */
		__atomic_fetch_add(quayi_queue_bound(bus->unroutable), 1, __ATOMIC_RELAXED);
	}
	*out = bus;
	return 0;
fail:
	if (bus->own_stats)
		quay_stats_destroy(bus->stats);
	bus_free(bus);
	return r;
}

QUAY_API void
quay_bus_destroy(quay_bus *bus)
{
	if (bus == NULL)
		return;
	/* BUS-D3: seq_cst; pairs with the acquire loads in publish, and with
	 * request()'s BUS-D2 (see BUS-D1/BUS-D2 there). */
	__atomic_store_n(&bus->closing, 1, __ATOMIC_SEQ_CST);
	for (unsigned i = 0; i < bus->nreq; i++) {
		/* Acquire: pairs with a requester's claim of the slot. The done
		 * store (release) pairs with the requester's futex wait value. */
		if (__atomic_load_n(&bus->reqs[i].state, __ATOMIC_ACQUIRE) != 0) {
			__atomic_store_n(&bus->reqs[i].done, 1, __ATOMIC_RELEASE);
			quayi_futex_wake_all(&bus->reqs[i].done);
		}
	}
	/* Close every subscription's queue before waiting for anyone: a
	 * requester or publisher waiting for room in a full BLOCK target
	 * wakes with -EPIPE (refusal()), a blocked receiver too. The queues
	 * are released by the unsubscribes below. Under the mutex: the list
	 * is stable, and no subscribe adds to it once closing is set. */
	pthread_mutex_lock(&bus->lock);
	for (struct quay_sub *s = bus->subs; s != NULL; s = s->next)
		if (s->queue == NULL) /* bindings: publishers see closing */
			sub_close(s);
	pthread_mutex_unlock(&bus->lock);
	/* BUS-D4 (seq_cst, so also acquire): pairs with request()'s release
	 * decrement and with BUS-D1 (see request()). A requester may
	 * have reset its done word after the wake above (it did so before
	 * publishing), so wake every slot again each round; sleep between
	 * rounds rather than spin. */
	while (__atomic_load_n(&bus->req_active, __ATOMIC_SEQ_CST) != 0) { /* BUS-D4 */
		struct timespec ts = { 0, 200000 };
		for (unsigned i = 0; i < bus->nreq; i++) {
			__atomic_store_n(&bus->reqs[i].done, 1, __ATOMIC_RELEASE);
			quayi_futex_wake_all(&bus->reqs[i].done);
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
		if ((s->queue != NULL ? quay_bus_unbind((quay_binding *)(void *)s) :
		                        quay_bus_unsubscribe(s)) != 0)
			sched_yield(); /* out of memory for a moment: retry */
	}
	/* Wait for every callback queued for this bus (tables, groups, subs):
	 * a per-bus count rather than urcu_memb_barrier(), which would also
	 * wait for other users' callbacks (and whose internal hand-over
	 * ThreadSanitizer cannot see). Acquire; pairs with deferred_done(). */
	while (__atomic_load_n(&bus->pending, __ATOMIC_ACQUIRE) != 0) {
		struct timespec ts = { 0, 200000 };
		nanosleep(&ts, NULL);
	}
	/* Relaxed: every reader and callback has finished (waited for above). */
	quayi_bm_table_free_all(__atomic_load_n(&bus->table, __ATOMIC_RELAXED), &bus->caches);
	quayi_bm_cache_pool_fini(&bus->caches);
	bus_metrics_free(bus);
	if (bus->own_stats)
		quay_stats_destroy(bus->stats);
	if (bus->unroutable != NULL) {
		/* Release; pairs with quay_queue_destroy()'s acquire debug
		 * check, as in unbind: the bus is done with the queue. */
		__atomic_fetch_sub(quayi_queue_bound(bus->unroutable), 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_destroy(&bus->lock);
	bus_free(bus);
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
	out->unroutable = quay_counter_read(bus->c_unroutable);
	out->unroutable_queued = quay_counter_read(bus->c_unroutable_queued);
	out->filtered = quay_counter_read(bus->c_filtered);
	out->bound_delivered = quay_counter_read(bus->c_bound);
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
	return __atomic_load_n(&bus->nsubs, __ATOMIC_RELAXED);
}

QUAY_API int
quay_sub_fd(quay_sub *sub)
{
	if (sub == NULL || sub->queue != NULL)
		return -EINVAL;
	return sub->pq != NULL ? quay_pq_fd(sub->pq) : quay_ring_fd(sub->ring);
}
