/* SPDX-License-Identifier: MIT */
/*
 * Stress test of the message pool (TESTING.md 5.1, issue 3 section 5):
 * many threads allocate, fill, pass and free messages; the pool must
 * never exceed its limit and never hand out one buffer twice.
 *
 * Run with no arguments it runs every configuration at CI size and prints
 * one summary line each; QUAY_STRESS_SCALE=N multiplies the operations
 * (and the time cap) for soaks. Exit status 0 only if no configuration
 * saw a violation. "-c NAME" runs one configuration.
 *
 * Checks, at every step:
 *   limit  an independent counter of the bytes the test holds (each
 *          message's footprint, added on alloc, taken off before the last
 *          unref) never exceeds the pool's limit; occasional concurrent
 *          quay_pool_stats() snapshots never report more than the limit.
 *   dup    a global "owned" flag per buffer (class offset + index): set
 *          with an atomic exchange on alloc that must see 0, cleared with
 *          one that must see 1 before the message is freed.
 *   stamp  the allocating thread writes its id and a sequence number into
 *          the body (head and tail) and a header; whoever frees (or reads a
 *          shared copy) checks them first.
 *   leak   after each configuration (all its threads joined, so their
 *          caches flushed at exit): in use 0, cached 0, free == buffers.
 *   hang   a waiting allocation that times out (a lost wake-up), or a
 *          configuration that does not finish within its deadline.
 *
 * Configurations:
 *   local-{cache,nocache}   4 threads allocate, hold up to 16, free at random.
 *   cross-{cache,nocache}   2 producers -> MPMC ring -> 2 consumers that free
 *                           (every buffer freed on another thread).
 *   shared-{cache,nocache}  1 producer refs each message 3 times and hands
 *                           one reference to each of 3 consumers (fan-out);
 *                           every consumer checks, the last unref frees.
 *   exit                    waves of 4 threads allocate, hand half their
 *                           messages to main, free the rest and exit; main
 *                           checks the exited threads' caches were flushed.
 *   wait-{cache,nocache}    6 threads share 2 or 4 buffers with
 *                           quay_msg_new_wait(); all must make progress.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/ring.h>

#include "test_util.h"

#define MAXT 16
#define STAMP_MAGIC UINT64_C(0x9e3779b97f4a7c15)

/* ---- shared state of one configuration ----------------------------- */

static quay_pool *g_pool;
static size_t g_limit;
static uint8_t *g_owned; /* one flag per buffer */
static uint32_t g_class_off[QUAY_POOL_CLASSES_MAX];
static int64_t g_held_bytes; /* the independent in-use counter */
static uint64_t g_ops;
static uint64_t g_enomem;
static int g_stop;
static int64_t g_deadline_ns;
static uint64_t g_ops_target;

static uint64_t v_limit, v_dup, v_stamp, v_leak, v_hang, v_other;

static void
bump(uint64_t *v)
{
	__atomic_add_fetch(v, 1, __ATOMIC_RELAXED);
}

static bool
stopping(void)
{
	return __atomic_load_n(&g_stop, __ATOMIC_RELAXED) != 0;
}

/* Count one op; stop everybody at the target or the deadline. */
static void
count_op(void)
{
	uint64_t n = __atomic_add_fetch(&g_ops, 1, __ATOMIC_RELAXED);

	if (n >= g_ops_target || ((n & 1023) == 0 && qt_now_ns() > g_deadline_ns))
		__atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
}

/* ---- alloc / check / free with the invariants ------------------------- */

static size_t
slot_of(const quay_msg *m)
{
	return g_class_off[m->cls] + m->index;
}

static size_t
pick_len(uint64_t *rs, size_t min)
{
	/* Keep room for the stamp header (27 bytes) in the largest class. */
	size_t max = quay_pool_max_body(g_pool) - 32;
	size_t len;

	switch (qt_rand(rs) % 8) {
	case 0: len = 0; break;
	case 1:
	case 2:
	case 3: len = qt_rand(rs) % 120; break;
	case 4:
	case 5: len = qt_rand(rs) % 900; break;
	case 6: len = qt_rand(rs) % 12000; break;
	default: len = qt_rand(rs) % (max + 1); break;
	}
	return len < min ? min : len;
}

/* Stamp: header "st" = {tid, seq}; body head {tid, seq, counter}, tail
 * seq ^ MAGIC when the body is long enough. */
static void
stamp(quay_msg *m, uint64_t tid, uint64_t seq, uint64_t shares)
{
	uint64_t hv[2] = { tid, seq };
	unsigned char *b = quay_msg_body_mut(m);
	size_t len = quay_msg_body_len(m);

	if (quay_msg_set_header(m, "st", hv, sizeof(hv)) != 0)
		bump(&v_other);
	if (len >= 32) {
		uint64_t t = seq ^ STAMP_MAGIC;

		memcpy(b, &tid, 8);
		memcpy(b + 8, &seq, 8);
		__atomic_store_n((uint64_t *)(void *)(b + 16), shares, __ATOMIC_RELAXED);
		memcpy(b + len - 8, &t, 8);
	}
}

static bool
check(const quay_msg *m, uint64_t tid, uint64_t seq)
{
	const void *v = NULL;
	size_t vl = 0;
	uint64_t hv[2];
	const unsigned char *b = quay_msg_body(m);
	size_t len = quay_msg_body_len(m);

	if (quay_msg_get_header(m, "st", &v, &vl) != 0 || vl != sizeof(hv))
		return false;
	memcpy(hv, v, sizeof(hv));
	if (hv[0] != tid || hv[1] != seq)
		return false;
	if (len >= 32) {
		uint64_t a, s, t;

		memcpy(&a, b, 8);
		memcpy(&s, b + 8, 8);
		memcpy(&t, b + len - 8, 8);
		if (a != tid || s != seq || t != (seq ^ STAMP_MAGIC))
			return false;
	}
	return true;
}

/* The stamp as the reader finds it (for messages from other threads). */
static bool
read_stamp(const quay_msg *m, uint64_t *tid, uint64_t *seq)
{
	const void *v = NULL;
	size_t vl = 0;
	uint64_t hv[2];

	if (quay_msg_get_header(m, "st", &v, &vl) != 0 || vl != sizeof(hv))
		return false;
	memcpy(hv, v, sizeof(hv));
	*tid = hv[0];
	*seq = hv[1];
	return check(m, hv[0], hv[1]);
}

static void
on_alloc(quay_msg *m)
{
	int64_t held = __atomic_add_fetch(&g_held_bytes, (int64_t)quay_msg_footprint(m), __ATOMIC_RELAXED);

	if (held > (int64_t)g_limit)
		bump(&v_limit);
	if (__atomic_exchange_n(&g_owned[slot_of(m)], 1, __ATOMIC_ACQ_REL) != 0)
		bump(&v_dup);
}

static void
on_free(quay_msg *m)
{
	if (__atomic_exchange_n(&g_owned[slot_of(m)], 0, __ATOMIC_ACQ_REL) != 1)
		bump(&v_dup);
	__atomic_sub_fetch(&g_held_bytes, (int64_t)quay_msg_footprint(m), __ATOMIC_RELAXED);
}

static const unsigned char zeros[65536];

/* Make a stamped message of at least min body bytes, by one of the three
 * ways; NULL when the pool is exhausted (counted). */
static quay_msg *
make(uint64_t *rs, uint64_t tid, uint64_t seq, size_t min, uint64_t shares)
{
	size_t len = pick_len(rs, min);
	quay_msg *m = NULL;
	int rc;

	switch (qt_rand(rs) % 3) {
	case 0: rc = quay_msg_new(g_pool, zeros, len, &m); break;
	case 1:
		rc = quay_msg_alloc(g_pool, len + 32, &m);
		if (rc == 0 && quay_msg_set_body_len(m, len) != 0)
			bump(&v_other);
		break;
	default:
		rc = quay_msg_new_wait(g_pool, zeros, len, 0, &m); /* try once */
		break;
	}
	if (rc == -ENOMEM) {
		bump(&g_enomem);
		return NULL;
	}
	if (rc != 0 || quay_msg_body_len(m) != len) {
		bump(&v_other);
		return NULL;
	}
	on_alloc(m);
	stamp(m, tid, seq, shares);
	return m;
}

static void
release(quay_msg *m)
{
	on_free(m);
	if (quay_msg_unref(m) != 0)
		bump(&v_other);
}

/* ---- local: alloc, hold, free on the same thread ----------------------- */

struct targ {
	uint64_t tid;
	uint64_t seed;
	quay_ring *ring;   /* cross / shared: where to push or pop */
	quay_ring **rings; /* shared: one ring per consumer */
	int nrings;
	int *producers_left;
	quay_msg **handoff; /* exit: messages for main */
	uint64_t *handoff_seq;
	int nhandoff;
};

static void *
local_thread(void *v)
{
	struct targ *a = v;
	uint64_t rs = a->seed, seq = 0;
	quay_msg *held[16];
	uint64_t hseq[16];
	int n = 0;

	while (!stopping()) {
		bool do_alloc = n == 0 || (n < 16 && qt_rand(&rs) % 2 == 0);

		if (do_alloc) {
			quay_msg *m = make(&rs, a->tid, seq, 0, 0);

			if (m != NULL) {
				hseq[n] = seq++;
				held[n++] = m;
				count_op();
				continue;
			}
			if (n == 0) {
				sched_yield();
				continue;
			}
		}
		{
			int i = (int)(qt_rand(&rs) % (uint64_t)n);

			if (!check(held[i], a->tid, hseq[i]))
				bump(&v_stamp);
			release(held[i]);
			held[i] = held[--n];
			hseq[i] = hseq[n];
		}
		if ((seq & 4095) == 0) {
			struct quay_pool_stats s;

			if (quay_pool_stats(g_pool, &s) != 0 || s.in_use_bytes > g_limit)
				bump(&v_limit);
		}
	}
	while (n > 0) {
		n--;
		if (!check(held[n], a->tid, hseq[n]))
			bump(&v_stamp);
		release(held[n]);
	}
	return NULL;
}

/* ---- cross: producers -> ring -> consumers ----------------------------- */

static void *
producer_thread(void *v)
{
	struct targ *a = v;
	uint64_t rs = a->seed, seq = 0;

	while (!stopping()) {
		quay_msg *m = make(&rs, a->tid, seq, 0, 0);

		if (m == NULL) {
			sched_yield();
			continue;
		}
		seq++;
		while (quay_ring_push(a->ring, &m) != 0)
			sched_yield();
		count_op();
	}
	__atomic_sub_fetch(a->producers_left, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *
consumer_thread(void *v)
{
	struct targ *a = v;
	uint64_t last[MAXT];

	memset(last, 0xff, sizeof(last));
	for (;;) {
		quay_msg *m;
		uint64_t tid, seq;

		if (quay_ring_pop(a->ring, &m) != 0) {
			if (__atomic_load_n(a->producers_left, __ATOMIC_ACQUIRE) == 0 &&
			    quay_ring_count(a->ring) == 0)
				break;
			sched_yield();
			continue;
		}
		if (!read_stamp(m, &tid, &seq) || tid >= MAXT)
			bump(&v_stamp);
		release(m);
	}
	return NULL;
}

/* ---- shared: one message, one reference per consumer ------------------ */

static void *
fanout_producer(void *v)
{
	struct targ *a = v;
	uint64_t rs = a->seed, seq = 0;

	while (!stopping()) {
		quay_msg *m = make(&rs, a->tid, seq, 32, (uint64_t)a->nrings);

		if (m == NULL) {
			sched_yield();
			continue;
		}
		seq++;
		for (int i = 1; i < a->nrings; i++)
			if (quay_msg_ref(m) != 0)
				bump(&v_other);
		for (int i = 0; i < a->nrings; i++)
			while (quay_ring_push(a->rings[i], &m) != 0)
				sched_yield();
		count_op();
	}
	__atomic_sub_fetch(a->producers_left, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *
fanout_consumer(void *v)
{
	struct targ *a = v;

	for (;;) {
		quay_msg *m;
		uint64_t tid, seq;
		uint64_t *shares;

		if (quay_ring_pop(a->ring, &m) != 0) {
			if (__atomic_load_n(a->producers_left, __ATOMIC_ACQUIRE) == 0 &&
			    quay_ring_count(a->ring) == 0)
				break;
			sched_yield();
			continue;
		}
		if (!read_stamp(m, &tid, &seq) || quay_msg_body_len(m) < 32)
			bump(&v_stamp);
		/* The consumer that takes the test's share count to 0 clears the
		 * owned flag; then every consumer drops its reference. */
		shares = (uint64_t *)(void *)((unsigned char *)quay_msg_body_mut(m) + 16);
		if (__atomic_sub_fetch(shares, 1, __ATOMIC_ACQ_REL) == 0) {
			on_free(m);
		}
		if (quay_msg_unref(m) != 0)
			bump(&v_other);
	}
	return NULL;
}

/* ---- exit: threads allocate, hand some to main, exit ----------------- */

static void *
exit_thread(void *v)
{
	struct targ *a = v;
	uint64_t rs = a->seed;
	quay_msg *mine[32];
	int n = 0;

	for (int i = 0; i < 32; i++) {
		quay_msg *m = make(&rs, a->tid, (uint64_t)i, 0, 0);

		if (m == NULL)
			continue;
		count_op();
		if (i % 2 == 0 && a->nhandoff < 16) {
			a->handoff_seq[a->nhandoff] = (uint64_t)i;
			a->handoff[a->nhandoff++] = m;
		} else {
			mine[n++] = m;
		}
	}
	while (n > 0)
		release(mine[--n]);
	return NULL;
}

/* ---- wait: more threads than buffers ---------------------------------- */

static void *
wait_thread(void *v)
{
	struct targ *a = v;
	uint64_t rs = a->seed, seq = 0;

	while (!stopping()) {
		quay_msg *m = NULL;
		int rc = quay_msg_new_wait(g_pool, NULL, 0, (int64_t)10 * 1000000000, &m);

		if (rc == -ETIMEDOUT) {
			bump(&v_hang);
			continue;
		}
		if (rc != 0) {
			bump(&v_other);
			continue;
		}
		on_alloc(m);
		stamp(m, a->tid, seq, 0);
		/* Hold it briefly, sometimes across a yield. */
		for (int spin = (int)(qt_rand(&rs) % 200); spin > 0; spin--)
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
		if (qt_rand(&rs) % 4 == 0)
			sched_yield();
		if (!check(m, a->tid, seq))
			bump(&v_stamp);
		seq++;
		release(m);
		count_op();
	}
	return NULL;
}

/* ---- driver --------------------------------------------------------------- */

struct config {
	const char *name;
	void (*run)(const struct config *c, uint64_t scale);
	uint32_t flags;
};

static int
pool_for(size_t limit, const struct quay_pool_opts *o)
{
	struct quay_pool_stats s;
	size_t total = 0;

	g_limit = limit;
	if (quay_pool_create(limit, o, &g_pool) != 0)
		return -1;
	quay_pool_stats(g_pool, &s);
	for (uint32_t i = 0; i < s.nclasses; i++) {
		g_class_off[i] = (uint32_t)total;
		total += s.cls[i].buffers;
	}
	g_owned = calloc(total, 1);
	g_held_bytes = 0;
	g_ops = 0;
	g_enomem = 0;
	g_stop = 0;
	return g_owned ? 0 : -1;
}

/* Join with a deadline; a thread that does not finish is a hang. */
static bool
join_all(pthread_t *t, int n, int64_t grace_ms)
{
	bool ok = true;

	for (int i = 0; i < n; i++) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(grace_ms / 1000);
		if (pthread_timedjoin_np(t[i], NULL, &ts) != 0) {
			bump(&v_hang);
			ok = false;
		}
	}
	return ok;
}

/* After a configuration: nothing in use, nothing cached, all free. The
 * main thread flushes its own cache first (its threads flushed at exit). */
static void
finish(const struct config *c, int64_t t0, bool joined)
{
	struct quay_pool_stats s;
	uint64_t leak = 0;
	double secs = (double)(qt_now_ns() - t0) / 1e9;

	if (!joined) {
		printf("stress-pool %-16s HANG: threads did not finish\n", c->name);
		fflush(stdout);
		_exit(1); /* threads still run on the pool: cannot clean up */
	}
	quay_pool_cache_flush(g_pool);
	quay_pool_stats(g_pool, &s);
	if (s.in_use != 0 || s.in_use_bytes != 0 || g_held_bytes != 0)
		leak++;
	for (uint32_t i = 0; i < s.nclasses; i++) {
		if (s.cls[i].cached != 0 || s.cls[i].free != s.cls[i].buffers ||
		    s.cls[i].hwm > s.cls[i].buffers)
			leak++;
	}
	for (uint32_t i = 0; i < s.nclasses; i++)
		for (uint32_t b = 0; b < s.cls[i].buffers; b++)
			if (g_owned[g_class_off[i] + b] != 0)
				leak++;
	v_leak += leak;
	if (quay_pool_destroy(g_pool) != 0)
		v_leak++;
	free(g_owned);
	printf("stress-pool %-16s ops %10" PRIu64 " in %5.2fs  enomem %9" PRIu64 " waits %7" PRIu64
	       "  limit %" PRIu64 " dup %" PRIu64 " stamp %" PRIu64 " leak %" PRIu64 " hang %" PRIu64
	       " other %" PRIu64 "\n",
	    c->name, g_ops, secs, g_enomem, s.waits, v_limit, v_dup, v_stamp, v_leak, v_hang, v_other);
	fflush(stdout);
}

static void
set_targets(uint64_t ops, uint64_t scale)
{
	g_ops_target = ops * scale;
	g_deadline_ns = qt_now_ns() + (int64_t)(3000000000LL * (int64_t)scale);
}

static void
run_local(const struct config *c, uint64_t scale)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	struct targ a[4];
	pthread_t t[4];
	int64_t t0 = qt_now_ns();

	o.flags = c->flags;
	if (pool_for((size_t)2 << 20, &o) != 0)
		exit(2);
	set_targets(4000000, scale);
	for (int i = 0; i < 4; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].tid = (uint64_t)i;
		a[i].seed = 0x1234567ull + (uint64_t)i * 7919;
		pthread_create(&t[i], NULL, local_thread, &a[i]);
	}
	finish(c, t0, join_all(t, 4, 60000));
}

static void
run_cross(const struct config *c, uint64_t scale)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	struct targ a[4];
	pthread_t t[4];
	quay_ring *ring = NULL;
	int left = 2;
	int64_t t0 = qt_now_ns();

	o.flags = c->flags;
	if (pool_for((size_t)2 << 20, &o) != 0 || quay_ring_create(64, sizeof(quay_msg *), 0, &ring) != 0)
		exit(2);
	set_targets(3000000, scale);
	for (int i = 0; i < 4; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].tid = (uint64_t)i;
		a[i].seed = 0xabcdefull + (uint64_t)i * 104729;
		a[i].ring = ring;
		a[i].producers_left = &left;
		pthread_create(&t[i], NULL, i < 2 ? producer_thread : consumer_thread, &a[i]);
	}
	finish(c, t0, join_all(t, 4, 60000));
	quay_ring_destroy(ring);
}

static void
run_shared(const struct config *c, uint64_t scale)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	struct targ a[4];
	pthread_t t[4];
	quay_ring *rings[3] = { NULL, NULL, NULL };
	int left = 1;
	int64_t t0 = qt_now_ns();

	o.flags = c->flags;
	if (pool_for((size_t)2 << 20, &o) != 0)
		exit(2);
	for (int i = 0; i < 3; i++)
		if (quay_ring_create(32, sizeof(quay_msg *), QUAY_RING_SP | QUAY_RING_SC, &rings[i]) != 0)
			exit(2);
	set_targets(1500000, scale);
	for (int i = 0; i < 4; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].tid = (uint64_t)i;
		a[i].seed = 0x5151ull + (uint64_t)i * 31337;
		a[i].producers_left = &left;
		if (i == 0) {
			a[i].rings = rings;
			a[i].nrings = 3;
		} else {
			a[i].ring = rings[i - 1];
		}
		pthread_create(&t[i], NULL, i == 0 ? fanout_producer : fanout_consumer, &a[i]);
	}
	finish(c, t0, join_all(t, 4, 60000));
	for (int i = 0; i < 3; i++)
		quay_ring_destroy(rings[i]);
}

static void
run_exit(const struct config *c, uint64_t scale)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	int64_t t0 = qt_now_ns();
	bool joined = true;
	uint64_t waves = 1000 * scale;

	o.flags = c->flags;
	if (pool_for((size_t)4 << 20, &o) != 0)
		exit(2);
	set_targets(UINT64_MAX / 2, 1);
	for (uint64_t w = 0; w < waves && joined && qt_now_ns() < g_deadline_ns; w++) {
		struct targ a[4];
		quay_msg *handoff[4][16];
		uint64_t handoff_seq[4][16];
		pthread_t t[4];
		struct quay_pool_stats s;

		for (int i = 0; i < 4; i++) {
			memset(&a[i], 0, sizeof(a[i]));
			a[i].tid = (uint64_t)i;
			a[i].seed = 0x777ull + w * 4 + (uint64_t)i;
			a[i].handoff = handoff[i];
			a[i].handoff_seq = handoff_seq[i];
			pthread_create(&t[i], NULL, exit_thread, &a[i]);
		}
		joined = join_all(t, 4, 60000);
		if (!joined)
			break;
		/* The threads are gone: only main's handoffs are in use, and no
		 * cache holds anything (main has not touched the pool). */
		quay_pool_stats(g_pool, &s);
		{
			uint64_t expect = 0;

			for (int i = 0; i < 4; i++)
				expect += (uint64_t)a[i].nhandoff;
			if (s.in_use != expect)
				bump(&v_leak);
		}
		for (uint32_t k = 0; k < s.nclasses; k++)
			if (s.cls[k].cached != 0)
				bump(&v_leak);
		/* Messages outlive the thread that made them. */
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < a[i].nhandoff; j++) {
				if (!check(handoff[i][j], (uint64_t)i, handoff_seq[i][j]))
					bump(&v_stamp);
				release(handoff[i][j]);
			}
		quay_pool_cache_flush(g_pool);
	}
	finish(c, t0, joined);
}

static void
run_wait(const struct config *c, uint64_t scale)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	struct targ a[6];
	pthread_t t[6];
	int64_t t0 = qt_now_ns();
	/* Fewer buffers than threads (6), so that allocations wait. With
	 * caches, 4 buffers give the one cache slot a capacity of 1. */
	uint32_t nbuf = (c->flags & QUAY_POOL_NO_CACHE) ? 2 : 4;

	o.flags = c->flags;
	o.nclasses = 1;
	o.class_size[0] = 512;
	o.class_count[0] = nbuf;
	o.cache_threads = 1;
	if (pool_for((size_t)512 * nbuf, &o) != 0)
		exit(2);
	set_targets(1000000, scale);
	for (int i = 0; i < 6; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].tid = (uint64_t)i;
		a[i].seed = 0x3141ull + (uint64_t)i * 271;
		pthread_create(&t[i], NULL, wait_thread, &a[i]);
	}
	finish(c, t0, join_all(t, 6, 60000));
}

static const struct config configs[] = {
	{ "local-cache", run_local, 0 },
	{ "local-nocache", run_local, QUAY_POOL_NO_CACHE },
	{ "cross-cache", run_cross, 0 },
	{ "cross-nocache", run_cross, QUAY_POOL_NO_CACHE },
	{ "shared-cache", run_shared, 0 },
	{ "shared-nocache", run_shared, QUAY_POOL_NO_CACHE },
	{ "exit", run_exit, 0 },
	{ "wait-cache", run_wait, 0 },
	{ "wait-nocache", run_wait, QUAY_POOL_NO_CACHE },
};

int
main(int argc, char **argv)
{
	const char *only = NULL, *env = getenv("QUAY_STRESS_SCALE");
	uint64_t scale = 1;
	uint64_t total;
	bool ran = false;

	if (env != NULL && atoi(env) > 0)
		scale = (uint64_t)atoi(env);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			only = argv[++i];
		} else {
			fprintf(stderr, "usage: %s [-c CONFIG]   (env QUAY_STRESS_SCALE=N)\n", argv[0]);
			return 2;
		}
	}
	for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
		if (only != NULL && strcmp(only, configs[i].name) != 0)
			continue;
		configs[i].run(&configs[i], scale);
		ran = true;
	}
	if (!ran) {
		fprintf(stderr, "unknown configuration %s\n", only);
		return 2;
	}
	total = v_limit + v_dup + v_stamp + v_leak + v_hang + v_other;
	printf("stress-pool %s: %" PRIu64 " violations\n", total ? "FAILED" : "passed", total);
	return total ? 1 : 0;
}
