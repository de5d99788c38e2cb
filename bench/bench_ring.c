/* SPDX-License-Identifier: MIT */
/*
 * bench_ring: the quay ring against its peers, in one binary and one run.
 * C bodies, registered with Google Benchmark through bench/shim/quay_bench.h.
 *
 * Throughput ("<peer>/<PnCn>"): P producer and C consumer threads move a
 * fixed number of 8-byte messages per iteration (QUAY_BENCH_MSGS, default
 * 2^19, split evenly over the producers) through one queue of capacity
 * 1024. Each message encodes (producer id, sequence 1..n). Every consumer
 * checks that each producer's sequences reach it in strictly increasing
 * order; after the run the counts, sums and sums of squares of every
 * producer's sequences must add up to exactly what it sent. Any mismatch,
 * or any queue call failing, ends the benchmark with qb_skip_with_error
 * (and the program exits 1). Peers (ring_peers.h):
 *
 *   quay_spsc[_bN]  quay ring, QUAY_RING_SP|QUAY_RING_SC (1P1C only);
 *                   _bN: push_burst/pop_burst of N on both sides
 *   quay_mpmc[_bN]  quay ring, flags 0
 *   vyukov_mpmc     Dmitry Vyukov's bounded MPMC queue
 *   lamport_spsc    Lamport SPSC ring with cached indices (1P1C only)
 *   ck_spsc         ck_ring_enqueue_spsc / ck_ring_dequeue_spsc (1P1C only)
 *   ck_mpmc         ck_ring_enqueue_mpmc / ck_ring_dequeue_mpmc
 *   wfcq            liburcu cds_wfcq (UNBOUNDED: producers never wait)
 *   mutex           pthread mutex + 2 condvars + circular array, try ops
 *   mutex_cv        the same queue sleeping on its condvars when full/empty
 *
 * All but mutex_cv retry on full/empty with the same policy (backoff):
 * QB_SPIN_LIMIT pause instructions, then sched_yield() per further
 * failure. Threads are started for each iteration, wait on a start flag,
 * and the time runs from that flag to the last thread's finish (manual
 * time). The last producer to finish pushes one stop marker per consumer.
 *
 * 4P4C and 8P8C run 5 repetitions and report each one. A repetition is cut
 * short once it has run QUAY_BENCH_CAP_S seconds (default 5): its threads
 * are told to stop, what they moved still counts (and is still checked),
 * and the counter capped=1 marks it.
 *
 * Latency ("latency/<peer>"): two threads pinned to two CPUs; the first
 * pushes into ring A, the second pops it and pushes it into ring B, the
 * first pops it. Each round trip is timed (rdtsc after lfence, calibrated
 * against CLOCK_MONOTONIC) and p50/p99/p99.9 are reported in ns. "raw" is
 * the floor: the two threads bounce a counter in one 64-byte-aligned line.
 * The first thread checks every reply is the value it sent.
 *
 * Diagnostic counters: full_waits_per_msg / empty_waits_per_msg (failed
 * pushes / pops per message moved) and yields_per_kmsg. Environment:
 * QUAY_BENCH_MSGS, QUAY_BENCH_CAP_S, QUAY_BENCH_ROUNDS (round trips per
 * latency iteration), QUAY_BENCH_FAULT=skip|dup (corrupt one message on
 * purpose: every throughput benchmark must then fail its check).
 *
 * The harness's own flags between threads (go, abort, ready, stops_seen,
 * producers_left) are __atomic accesses: go and ready are release/acquire
 * pairs (the start line: everything set up before go is visible to the
 * threads); abort and broken are relaxed hints, read again after the
 * join (which orders everything); stops_seen is acq_rel (a consumer that
 * sees every stop taken has seen the messages before them taken).
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "quay_bench.h"
#include "ring_peers.h"

#define QB_STOP (~(uint64_t)0) /* stop marker (never a valid message) */
#define QB_SEQ_BITS 40
#define QB_SEQ_MASK (((uint64_t)1 << QB_SEQ_BITS) - 1)
#define QB_SPIN_LIMIT 64 /* pauses before the first yield */
#define QB_MAX_BURST 32  /* largest B of a QB_TPUT_IMPL */
#define QB_ALWAYS_INLINE static inline __attribute__((always_inline))

static struct {
	uint64_t msgs; /* messages per throughput iteration */
	double cap_s;  /* per-repetition time cap */
	size_t rounds; /* timed round trips per latency iteration */
	size_t warmup; /* untimed round trips before them */
} g_opt = {(uint64_t)1 << 19, 5.0, 20000, 2000};
static int g_fault;             /* QUAY_BENCH_FAULT: 1 skip, 2 duplicate */
static int g_cpus[CPU_SETSIZE]; /* CPUs we may run on */
static int g_ncpus;
static double g_ticks_per_ns = 1.0;

static inline uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void
cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/* The one retry policy every peer gets on full/empty. */
struct backoff {
	uint64_t waits; /* failed attempts (diagnostics only) */
	uint64_t yields;
	unsigned spins;
};

static inline void
backoff_wait(struct backoff *b)
{
	++b->waits;
	if (b->spins < QB_SPIN_LIMIT) {
		++b->spins;
		cpu_pause();
	} else {
		++b->yields;
		sched_yield();
	}
}

static inline uint64_t
ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	_mm_lfence(); /* do not read the TSC before earlier loads completed */
	return __rdtsc();
#else
	return now_ns();
#endif
}

static void
calibrate_ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	const uint64_t c0 = now_ns();
	const uint64_t t0 = ticks();
	const struct timespec d = {0, 50 * 1000 * 1000};
	nanosleep(&d, NULL);
	const uint64_t c1 = now_ns();
	const uint64_t t1 = ticks();
	g_ticks_per_ns = (double)(t1 - t0) / (double)(c1 - c0);
#endif
}

static inline uint64_t
encode(int producer, uint64_t seq)
{
	return ((uint64_t)producer << QB_SEQ_BITS) | seq;
}

/* What one consumer saw, per producer. Kept on the consumer's stack. */
struct tally {
	uint64_t last[QB_MAX_SIDE];
	uint64_t count[QB_MAX_SIDE];
	uint64_t sum[QB_MAX_SIDE];
	uint64_t sq[QB_MAX_SIDE];
	uint64_t bad;
	uint64_t first_bad;
	uint64_t first_bad_prev;
	uint64_t stops;
};

QB_ALWAYS_INLINE void
tally_add(struct tally *t, uint64_t v, int nprod)
{
	const uint64_t p = v >> QB_SEQ_BITS;
	const uint64_t s = v & QB_SEQ_MASK;
	if (__builtin_expect(p >= (uint64_t)nprod || s <= t->last[p], 0)) {
		if (t->bad++ == 0) {
			t->first_bad = v;
			t->first_bad_prev = p < (uint64_t)nprod ? t->last[p] : 0;
		}
		return;
	}
	t->last[p] = s;
	t->count[p]++;
	t->sum[p] += s;
	t->sq[p] += s * s;
}

static void
tally_merge(struct tally *t, const struct tally *o)
{
	for (int i = 0; i < QB_MAX_SIDE; i++) {
		t->count[i] += o->count[i];
		t->sum[i] += o->sum[i];
		t->sq[i] += o->sq[i];
	}
	if (t->bad == 0 && o->bad != 0) {
		t->first_bad = o->first_bad;
		t->first_bad_prev = o->first_bad_prev;
	}
	t->bad += o->bad;
	t->stops += o->stops;
}

/* Per-thread results, written once at the end (own cache lines). */
struct out {
	struct tally tally;
	uint64_t sent;
	uint64_t waits; /* failed pushes (producer) or pops (consumer) */
	uint64_t yields;
	uint64_t finish; /* now_ns() */
} __attribute__((aligned(QB_LINE)));

/* State shared by the threads of one iteration. */
struct shared {
	bool go __attribute__((aligned(QB_LINE)));
	bool abort __attribute__((aligned(QB_LINE))); /* cap reached or a call broke */
	int producers_left __attribute__((aligned(QB_LINE)));
	uint64_t stops_seen __attribute__((aligned(QB_LINE)));
	int ready __attribute__((aligned(QB_LINE)));
	bool broken; /* a queue call returned -1 */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* on CLOCK_MONOTONIC */
	int done;
	int total;
};

static void
arrive_and_wait(struct shared *sh)
{
	/* Pairs with the acquire loads of ready in run_once. */
	__atomic_fetch_add(&sh->ready, 1, __ATOMIC_ACQ_REL);
	struct backoff b = {0, 0, 0};
	/* Pairs with the release store of go in run_once. */
	while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
		backoff_wait(&b);
}

static void
depart(struct shared *sh)
{
	pthread_mutex_lock(&sh->mu);
	if (++sh->done == sh->total)
		pthread_cond_signal(&sh->cv);
	pthread_mutex_unlock(&sh->mu);
}

QB_ALWAYS_INLINE bool
aborted(const struct shared *sh)
{
	return __atomic_load_n(&sh->abort, __ATOMIC_RELAXED); /* a hint: see the file comment */
}

static void
broke(struct shared *sh)
{
	__atomic_store_n(&sh->broken, true, __ATOMIC_RELAXED); /* read after the join */
	__atomic_store_n(&sh->abort, true, __ATOMIC_RELAXED);  /* a hint */
}

/* One thread's part of a run. */
struct thread_arg {
	void *q;
	struct shared *sh;
	int id; /* producer id */
	uint64_t n;
	int nprod;
	int ncons;
	struct out *out;
};

/* Push one value with the common retry policy; false if told to stop. */
QB_ALWAYS_INLINE bool
push_one(const struct qb_peer *ops, void *q, struct shared *sh, int id, uint64_t v, struct backoff *b)
{
	for (;;) {
		const int rc = ops->push(q, id, v);
		if (rc > 0) {
			b->spins = 0;
			return true;
		}
		if (rc < 0) {
			broke(sh);
			return false;
		}
		if (aborted(sh))
			return false;
		backoff_wait(b);
	}
}

/* B == 0: single push per message; otherwise push_burst of up to B. */
QB_ALWAYS_INLINE void
producer(const struct qb_peer *ops, size_t B, const struct thread_arg *a)
{
	void *q = a->q;
	struct shared *sh = a->sh;
	const int id = a->id;
	const uint64_t n = a->n;
	struct backoff b = {0, 0, 0};
	uint64_t sent = 0;
	bool stopped = false;

	/* Self-test of the checks (QUAY_BENCH_FAULT): producer 0 replaces its
	 * message 100 by one never expected (skip) or by a repeat of 99 (dup). */
	const uint64_t fault_seq = (id == 0 && g_fault != 0 && n > 100) ? 100 : 0;
	const uint64_t fault_val = g_fault == 1 ? n + 1 : 99;
#define SEQ_OF(s) ((s) == fault_seq ? fault_val : (s))

	arrive_and_wait(sh);
	if (B == 0) {
		while (sent < n) {
			if (!push_one(ops, q, sh, id, encode(id, SEQ_OF(sent + 1)), &b)) {
				stopped = true;
				break;
			}
			/* The abort flag sits alone in a line nobody writes until the
			 * end: checking it after every call costs an L1 hit, and a
			 * collapsed queue (one call per scheduler slice) still stops. */
			++sent;
			if (aborted(sh)) {
				stopped = true;
				break;
			}
		}
	} else {
		uint64_t buf[QB_MAX_BURST];
		while (sent < n && !stopped) {
			const size_t k = n - sent < B ? (size_t)(n - sent) : B;
			for (size_t i = 0; i < k; i++)
				buf[i] = encode(id, SEQ_OF(sent + 1 + i));
			size_t done = 0;
			while (done < k) {
				const size_t m = ops->push_burst(q, buf + done, k - done);
				if (m != 0) {
					done += m;
					b.spins = 0;
				} else if (aborted(sh)) {
					stopped = true;
					break;
				} else {
					backoff_wait(&b);
				}
			}
			sent += done;
			if (aborted(sh))
				stopped = true;
		}
	}
#undef SEQ_OF
	a->out->sent = sent;
	/* The last producer out pushes one stop per consumer: after every
	 * other producer's last push, so behind all data in FIFO order.
	 * acq_rel: pairs with the other producers' decrements. */
	if (__atomic_fetch_sub(&sh->producers_left, 1, __ATOMIC_ACQ_REL) == 1 && !stopped) {
		for (int i = 0; i < a->ncons; i++)
			if (!push_one(ops, q, sh, id, QB_STOP, &b))
				break;
	}
	a->out->waits = b.waits;
	a->out->yields = b.yields;
	a->out->finish = now_ns();
	depart(sh);
}

QB_ALWAYS_INLINE void
consumer(const struct qb_peer *ops, size_t B, const struct thread_arg *a)
{
	void *q = a->q;
	struct shared *sh = a->sh;
	const int nprod = a->nprod, ncons = a->ncons;
	struct tally t;
	struct backoff b = {0, 0, 0};

	memset(&t, 0, sizeof t);
	arrive_and_wait(sh);
	for (;;) {
		if (B == 0) {
			uint64_t v;
			const int rc = ops->pop(q, &v);
			if (rc > 0) {
				b.spins = 0;
				if (v == QB_STOP) {
					t.stops++;
					/* Pairs with the acquire loads of stops_seen below. */
					__atomic_fetch_add(&sh->stops_seen, 1, __ATOMIC_ACQ_REL);
					break;
				}
				tally_add(&t, v, nprod);
				if (aborted(sh))
					break;
				continue;
			}
			if (rc < 0) {
				broke(sh);
				break;
			}
		} else {
			uint64_t buf[QB_MAX_BURST];
			const size_t k = ops->pop_burst(q, buf, B);
			if (k != 0) {
				b.spins = 0;
				uint64_t stops = 0;
				for (size_t i = 0; i < k; i++) {
					if (buf[i] == QB_STOP)
						stops++;
					else
						tally_add(&t, buf[i], nprod);
				}
				if (stops != 0) {
					/* A burst may take several stops: whoever is left
					 * sees stops_seen reach ncons on an empty queue. */
					t.stops += stops;
					__atomic_fetch_add(&sh->stops_seen, stops, __ATOMIC_ACQ_REL); /* as above */
					break;
				}
				if (aborted(sh))
					break;
				continue;
			}
		}
		/* Empty. Every stop taken means every message before them is
		 * too (acquire: pairs with the acq_rel adds above). */
		if (__atomic_load_n(&sh->stops_seen, __ATOMIC_ACQUIRE) >= (uint64_t)ncons || aborted(sh))
			break;
		backoff_wait(&b);
	}
	a->out->tally = t;
	a->out->waits = b.waits;
	a->out->yields = b.yields;
	a->out->finish = now_ns();
	depart(sh);
}

/* One (peer, burst) pair: its thread functions, with the adaptor and the
 * burst size compile-time constants. */
struct tput_impl {
	const struct qb_peer *ops;
	void *(*producer)(void *);
	void *(*consumer)(void *);
};

#define QB_TPUT_IMPL(name, peer, B) \
	static void *name##_producer(void *a) \
	{ \
		producer(&peer, B, a); \
		return NULL; \
	} \
	static void *name##_consumer(void *a) \
	{ \
		consumer(&peer, B, a); \
		return NULL; \
	} \
	static const struct tput_impl name = {&peer, name##_producer, name##_consumer}; \
	_Static_assert(B <= QB_MAX_BURST, "burst too large");

QB_TPUT_IMPL(t_quay_spsc, qb_quay_spsc, 0)
QB_TPUT_IMPL(t_quay_spsc_b1, qb_quay_spsc, 1)
QB_TPUT_IMPL(t_quay_spsc_b8, qb_quay_spsc, 8)
QB_TPUT_IMPL(t_quay_spsc_b32, qb_quay_spsc, 32)
QB_TPUT_IMPL(t_quay_mpmc, qb_quay_mpmc, 0)
QB_TPUT_IMPL(t_quay_mpmc_b1, qb_quay_mpmc, 1)
QB_TPUT_IMPL(t_quay_mpmc_b8, qb_quay_mpmc, 8)
QB_TPUT_IMPL(t_quay_mpmc_b32, qb_quay_mpmc, 32)
QB_TPUT_IMPL(t_vyukov_mpmc, qb_vyukov_mpmc, 0)
QB_TPUT_IMPL(t_lamport_spsc, qb_lamport_spsc, 0)
QB_TPUT_IMPL(t_ck_spsc, qb_ck_spsc, 0)
QB_TPUT_IMPL(t_ck_mpmc, qb_ck_mpmc, 0)
QB_TPUT_IMPL(t_wfcq, qb_wfcq, 0)
QB_TPUT_IMPL(t_mutex, qb_mutex, 0)
QB_TPUT_IMPL(t_mutex_cv, qb_mutex_cv, 0)

/* 1 + 2 + ... + n and 1^2 + ... + n^2, mod 2^64 like the consumers' sums
 * (divide before multiplying: the exact products overflow). */
static uint64_t
sum_to(uint64_t n)
{
	return n % 2 == 0 ? (n / 2) * (n + 1) : n * ((n + 1) / 2);
}
static uint64_t
sum_sq_to(uint64_t n)
{
	uint64_t f[3] = {n, n + 1, 2 * n + 1};
	for (int i = 0; i < 3; i++)
		if (f[i] % 2 == 0) {
			f[i] /= 2;
			break;
		}
	for (int i = 0; i < 3; i++)
		if (f[i] % 3 == 0) {
			f[i] /= 3;
			break;
		}
	return f[0] * f[1] * f[2];
}

struct iter_result {
	double seconds;
	uint64_t delivered;
	uint64_t full_waits;
	uint64_t empty_waits;
	uint64_t yields;
	bool capped;
	char error[256]; /* empty: the run passed its checks */
};

static struct timespec
ts_of(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
	return ts;
}

static void
run_once(const struct tput_impl *impl, void *q, int P, int C, uint64_t per_producer, uint64_t deadline,
    struct iter_result *r)
{
	struct shared *sh = qb_aligned(sizeof *sh);
	struct out *outs = qb_aligned(sizeof(struct out) * (size_t)(P + C));
	struct thread_arg args[2 * QB_MAX_SIDE];
	pthread_t th[2 * QB_MAX_SIDE];
	pthread_condattr_t ca;

	memset(r, 0, sizeof *r);
	if (sh == NULL || outs == NULL)
		abort();
	sh->producers_left = P;
	sh->total = P + C;
	pthread_mutex_init(&sh->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sh->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (impl->ops->reset != NULL)
		impl->ops->reset(q, C);

	for (int i = 0; i < P + C; i++) {
		const bool prod = i >= C; /* consumers first, as they wait for data */
		args[i] = (struct thread_arg){q, sh, prod ? i - C : 0, per_producer, P, C, &outs[prod ? i - C : P + i]};
		if (pthread_create(&th[i], NULL, prod ? impl->producer : impl->consumer, &args[i]) != 0)
			abort();
	}
	/* Pairs with the acq_rel adds in arrive_and_wait. */
	while (__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE) < P + C)
		sched_yield();

	const uint64_t t0 = now_ns();
	/* Pairs with the acquire loads in arrive_and_wait. */
	__atomic_store_n(&sh->go, true, __ATOMIC_RELEASE);
	{
		const struct timespec dl = ts_of(deadline);
		pthread_mutex_lock(&sh->mu);
		while (sh->done != sh->total) {
			if (pthread_cond_timedwait(&sh->cv, &sh->mu, &dl) == ETIMEDOUT && sh->done != sh->total) {
				r->capped = true;
				__atomic_store_n(&sh->abort, true, __ATOMIC_RELAXED); /* a hint */
				while (sh->done != sh->total)
					pthread_cond_wait(&sh->cv, &sh->mu);
			}
		}
		pthread_mutex_unlock(&sh->mu);
	}
	for (int i = 0; i < P + C; i++)
		pthread_join(th[i], NULL);

	uint64_t t1 = t0;
	for (int i = 0; i < P + C; i++) {
		if (outs[i].finish > t1)
			t1 = outs[i].finish;
		if (i < P)
			r->full_waits += outs[i].waits;
		else
			r->empty_waits += outs[i].waits;
		r->yields += outs[i].yields;
	}
	r->seconds = (double)(t1 - t0) * 1e-9;

	/* Whatever a cut-short run left behind is checked too. */
	struct tally total, rest;
	memset(&total, 0, sizeof total);
	memset(&rest, 0, sizeof rest);
	{
		int (*drain)(void *, uint64_t *) = impl->ops->drain != NULL ? impl->ops->drain : impl->ops->pop;
		uint64_t v;
		int rc;
		while ((rc = drain(q, &v)) > 0) {
			if (v == QB_STOP)
				rest.stops++;
			else
				tally_add(&rest, v, P);
		}
		if (rc < 0)
			sh->broken = true;
		tally_merge(&total, &rest);
	}
	for (int c = 0; c < C; c++)
		tally_merge(&total, &outs[P + c].tally);

	if (sh->broken) {
		snprintf(r->error, sizeof r->error, "a queue call failed (returned an unexpected error)");
		goto out;
	}
	if (total.bad != 0) {
		snprintf(r->error, sizeof r->error,
		    "order/identity check failed: %llu bad messages; first: producer %llu seq %llu after seq %llu",
		    (unsigned long long)total.bad, (unsigned long long)(total.first_bad >> QB_SEQ_BITS),
		    (unsigned long long)(total.first_bad & QB_SEQ_MASK), (unsigned long long)total.first_bad_prev);
		goto out;
	}
	for (int p = 0; p < P; p++) {
		const uint64_t n = outs[p].sent;
		if (!r->capped && n != per_producer) {
			snprintf(r->error, sizeof r->error,
			    "producer %d sent %llu of %llu messages without being stopped", p, (unsigned long long)n,
			    (unsigned long long)per_producer);
			goto out;
		}
		if (total.count[p] != n || total.sum[p] != sum_to(n) || total.sq[p] != sum_sq_to(n)) {
			snprintf(r->error, sizeof r->error,
			    "producer %d sent %llu messages, consumers received %llu (or the wrong ones: sum %llu)", p,
			    (unsigned long long)n, (unsigned long long)total.count[p],
			    (unsigned long long)total.sum[p]);
			goto out;
		}
		r->delivered += n;
	}
	if (!r->capped && total.stops != (uint64_t)C)
		snprintf(r->error, sizeof r->error, "%llu stop markers received, %d sent",
		    (unsigned long long)total.stops, C);
out:
	pthread_cond_destroy(&sh->cv);
	pthread_mutex_destroy(&sh->mu);
	free(outs);
	free(sh);
}

struct tput_cfg {
	const struct tput_impl *impl;
	int producers;
	int consumers;
};

static void
bm_throughput(qb_state *st, void *arg)
{
	const struct tput_cfg *cfg = arg;
	const int P = cfg->producers, C = cfg->consumers;
	const uint64_t per = g_opt.msgs / (uint64_t)P;
	void *q = cfg->impl->ops->create(P, C, per);
	const uint64_t deadline = now_ns() + (uint64_t)(g_opt.cap_s * 1e9);
	uint64_t delivered = 0, full_waits = 0, empty_waits = 0, yields = 0;
	bool capped = false;
	struct iter_result r;

	if (q == NULL) {
		qb_skip_with_error(st, "could not create the queue");
		return;
	}
	while (qb_keep_running(st)) {
		if (capped) { /* out of time: the remaining iterations are empty */
			qb_set_iteration_time(st, 0.0);
			continue;
		}
		run_once(cfg->impl, q, P, C, per, deadline, &r);
		if (r.error[0] != '\0') {
			qb_skip_with_error(st, r.error);
			break;
		}
		qb_set_iteration_time(st, r.seconds);
		delivered += r.delivered;
		full_waits += r.full_waits;
		empty_waits += r.empty_waits;
		yields += r.yields;
		capped = r.capped;
	}
	cfg->impl->ops->destroy(q);
	qb_set_items_processed(st, (int64_t)delivered);
	qb_counter(st, "capped", capped ? 1 : 0, QB_COUNTER_DEFAULT);
	/* How often the retry policy ran, per message moved (diagnostics). */
	const double d = delivered != 0 ? (double)delivered : 1.0;
	qb_counter(st, "full_waits_per_msg", (double)full_waits / d, QB_COUNTER_DEFAULT);
	qb_counter(st, "empty_waits_per_msg", (double)empty_waits / d, QB_COUNTER_DEFAULT);
	qb_counter(st, "yields_per_kmsg", 1000.0 * (double)yields / d, QB_COUNTER_DEFAULT);
}

/* -------------------------------------------------------------------------
 * Latency */

/* The two sides of a ping-pong: ops NULL is the floor, one 64-byte line
 * (the first thread writes an odd value, the second answers value + 1);
 * otherwise two queues, A carrying the pings and B the echoes. */
struct pingpong {
	uint64_t line __attribute__((aligned(QB_LINE)));
	char pad[QB_LINE - sizeof(uint64_t)];
	void *a;
	void *b;
	/* Results of the first thread. */
	uint64_t *samples;
	size_t nsamples;
	uint64_t tstart, tend;
	bool bad;
	uint64_t bad_sent, bad_got;
	int ready;
	bool go;
};

QB_ALWAYS_INLINE bool
ping_send(const struct qb_peer *ops, struct pingpong *pp, uint64_t v)
{
	if (ops == NULL) {
		/* Pairs with the acquire load in pong_recv. */
		__atomic_store_n(&pp->line, v, __ATOMIC_RELEASE);
		return true;
	}
	return ops->push(pp->a, 0, v) > 0;
}
QB_ALWAYS_INLINE bool
ping_recv(const struct qb_peer *ops, struct pingpong *pp, uint64_t *v)
{
	if (ops == NULL) {
		/* Pairs with the release store in pong_send. */
		const uint64_t x = __atomic_load_n(&pp->line, __ATOMIC_ACQUIRE);
		if (x & 1)
			return false;
		*v = x;
		return true;
	}
	return ops->pop(pp->b, v) > 0;
}
QB_ALWAYS_INLINE bool
pong_recv(const struct qb_peer *ops, struct pingpong *pp, uint64_t *v)
{
	if (ops == NULL) {
		/* Pairs with the release store in ping_send. */
		const uint64_t x = __atomic_load_n(&pp->line, __ATOMIC_ACQUIRE);
		if (!(x & 1))
			return false;
		*v = x;
		return true;
	}
	return ops->pop(pp->a, v) > 0;
}
QB_ALWAYS_INLINE bool
pong_send(const struct qb_peer *ops, struct pingpong *pp, uint64_t v)
{
	if (ops == NULL) {
		/* Pairs with the acquire load in ping_recv. */
		__atomic_store_n(&pp->line, v + 1, __ATOMIC_RELEASE);
		return true;
	}
	return ops->push(pp->b, 0, v) > 0;
}

QB_ALWAYS_INLINE void
lat_start(struct pingpong *pp, struct backoff *b)
{
	__atomic_fetch_add(&pp->ready, 1, __ATOMIC_ACQ_REL); /* pairs with run_pingpong's loads */
	while (!__atomic_load_n(&pp->go, __ATOMIC_ACQUIRE))  /* pairs with run_pingpong's store */
		backoff_wait(b);
}

QB_ALWAYS_INLINE void
pong_body(const struct qb_peer *ops, struct pingpong *pp)
{
	struct backoff b = {0, 0, 0};
	lat_start(pp, &b);
	for (;;) {
		uint64_t v;
		if (!pong_recv(ops, pp, &v)) {
			backoff_wait(&b);
			continue;
		}
		b.spins = 0;
		if (v == QB_STOP)
			break;
		while (!pong_send(ops, pp, v))
			backoff_wait(&b);
		b.spins = 0;
	}
}

QB_ALWAYS_INLINE void
ping_body(const struct qb_peer *ops, struct pingpong *pp)
{
	struct backoff b = {0, 0, 0};
	const size_t warm = g_opt.warmup, rounds = g_opt.rounds;
	lat_start(pp, &b);
	for (size_t i = 0; i < warm + rounds; i++) {
		const uint64_t s = 2 * i + 1;
		uint64_t v = 0;
		if (i == warm)
			pp->tstart = ticks();
		const uint64_t t0 = ticks();
		while (!ping_send(ops, pp, s))
			backoff_wait(&b);
		b.spins = 0;
		while (!ping_recv(ops, pp, &v))
			backoff_wait(&b);
		const uint64_t t1 = ticks();
		b.spins = 0;
		if (v != (ops == NULL ? s + 1 : s)) {
			pp->bad = true;
			pp->bad_sent = s;
			pp->bad_got = v;
			break;
		}
		if (i >= warm)
			pp->samples[pp->nsamples++] = t1 - t0;
	}
	pp->tend = ticks();
	while (!ping_send(ops, pp, QB_STOP))
		backoff_wait(&b);
}

struct lat_impl {
	const struct qb_peer *ops; /* NULL: raw line */
	void *(*ping)(void *);
	void *(*pong)(void *);
};

#define QB_LAT_IMPL(name, peer) \
	static void *name##_ping(void *a) \
	{ \
		ping_body(peer, a); \
		return NULL; \
	} \
	static void *name##_pong(void *a) \
	{ \
		pong_body(peer, a); \
		return NULL; \
	} \
	static const struct lat_impl name = {peer, name##_ping, name##_pong};

QB_LAT_IMPL(l_raw, NULL)
QB_LAT_IMPL(l_quay_spsc, &qb_quay_spsc)
QB_LAT_IMPL(l_quay_mpmc, &qb_quay_mpmc)
QB_LAT_IMPL(l_vyukov_mpmc, &qb_vyukov_mpmc)
QB_LAT_IMPL(l_lamport_spsc, &qb_lamport_spsc)
QB_LAT_IMPL(l_ck_spsc, &qb_ck_spsc)
QB_LAT_IMPL(l_mutex, &qb_mutex)

static void
pin(pthread_t t, int which)
{
	if (g_ncpus < 2)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(g_cpus[which % g_ncpus], &set);
	pthread_setaffinity_np(t, sizeof set, &set);
}

/* One iteration; returns its seconds, or a negative value on a failed echo
 * check (pp->bad_*). */
static double
run_pingpong(const struct lat_impl *impl, struct pingpong *pp)
{
	pthread_t ping, pong;
	pp->ready = 0;
	pp->go = false;
	pp->line = 0;
	if (pthread_create(&pong, NULL, impl->pong, pp) != 0 || pthread_create(&ping, NULL, impl->ping, pp) != 0)
		abort();
	pin(ping, 0);
	pin(pong, 1);
	while (__atomic_load_n(&pp->ready, __ATOMIC_ACQUIRE) < 2) /* pairs with lat_start's add */
		sched_yield();
	__atomic_store_n(&pp->go, true, __ATOMIC_RELEASE); /* pairs with lat_start's loads */
	pthread_join(ping, NULL);
	pthread_join(pong, NULL);
	if (pp->bad)
		return -1.0;
	return (double)(pp->tend - pp->tstart) / g_ticks_per_ns * 1e-9;
}

static int
cmp_u64(const void *a, const void *b)
{
	const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double
pct(const struct pingpong *pp, double q)
{
	size_t i = (size_t)(q * (double)pp->nsamples);
	if (i > pp->nsamples - 1)
		i = pp->nsamples - 1;
	return (double)pp->samples[i] / g_ticks_per_ns;
}

static void
bm_latency(qb_state *st, void *arg)
{
	const struct lat_impl *impl = arg;
	struct pingpong *pp = qb_aligned(sizeof *pp);
	size_t cap = 0;

	if (pp == NULL)
		abort();
	if (impl->ops != NULL) {
		pp->a = impl->ops->create(1, 1, 0);
		pp->b = impl->ops->create(1, 1, 0);
		if (pp->a == NULL || pp->b == NULL)
			abort();
	}
	while (qb_keep_running(st)) {
		if (pp->nsamples + g_opt.rounds > cap) {
			cap = 2 * cap + g_opt.rounds;
			pp->samples = realloc(pp->samples, cap * sizeof(uint64_t));
			if (pp->samples == NULL)
				abort();
		}
		const double s = run_pingpong(impl, pp);
		if (s < 0) {
			qb_skip_with_errorf(st, "echo check failed: sent %llu, got %llu back",
			    (unsigned long long)pp->bad_sent, (unsigned long long)pp->bad_got);
			pp->nsamples = 0;
			break;
		}
		qb_set_iteration_time(st, s);
	}
	if (pp->nsamples != 0) {
		qsort(pp->samples, pp->nsamples, sizeof(uint64_t), cmp_u64);
		qb_set_items_processed(st, (int64_t)pp->nsamples);
		qb_counter(st, "min_ns", pct(pp, 0.0), QB_COUNTER_DEFAULT);
		qb_counter(st, "p50_ns", pct(pp, 0.50), QB_COUNTER_DEFAULT);
		qb_counter(st, "p99_ns", pct(pp, 0.99), QB_COUNTER_DEFAULT);
		qb_counter(st, "p999_ns", pct(pp, 0.999), QB_COUNTER_DEFAULT);
		qb_counter(st, "pinned", g_ncpus >= 2 ? 1 : 0, QB_COUNTER_DEFAULT);
	}
	if (impl->ops != NULL) {
		impl->ops->destroy(pp->a);
		impl->ops->destroy(pp->b);
	}
	free(pp->samples);
	free(pp);
}

/* -------------------------------------------------------------------------
 * One thread: what the calls cost when no line crosses cores
 *
 * one_thread/<peer>/<B>: one thread pushes B values (a burst of B for the
 * _burst peers, B single pushes otherwise), pops them back and checks that
 * the same values came out in order. items = values moved. Nothing is
 * shared with another core, so this is the instruction cost of a push and
 * a pop, the part of a burst that batching can save; the 1P1C runs add the
 * cache line transfers. */

#define QB_ST_IMPL(name, peer, burst) \
	static void name(qb_state *st, void *arg) { one_thread(st, (size_t)(uintptr_t)arg, &peer, burst); }

static QUAYI_ALWAYS_INLINE void
one_thread(qb_state *st, size_t B, const struct qb_peer *ops, bool burst)
{
	void *q = ops->create(1, 1, 0);
	uint64_t in[QB_MAX_BURST], out[QB_MAX_BURST], next = 0;
	bool ok = q != NULL;

	for (uint64_t n; ok && (n = qb_batch(st)) != 0;) {
		for (uint64_t it = 0; ok && it < n; it++) {
			for (size_t i = 0; i < B; i++)
				in[i] = next + i;
			if (burst) {
				ok = ops->push_burst(q, in, B) == B && ops->pop_burst(q, out, B) == B;
			} else {
				for (size_t i = 0; ok && i < B; i++)
					ok = ops->push(q, 0, in[i]) == 1;
				for (size_t i = 0; ok && i < B; i++)
					ok = ops->pop(q, &out[i]) == 1;
			}
			for (size_t i = 0; ok && i < B; i++)
				ok = out[i] == next + i;
			next += B;
		}
	}
	if (q == NULL)
		qb_skip_with_error(st, "could not create the queue");
	else if (!ok)
		qb_skip_with_errorf(st, "one_thread check failed near value %llu", (unsigned long long)next);
	else
		qb_set_items_processed(st, (int64_t)next);
	if (q != NULL)
		ops->destroy(q);
}

QB_ST_IMPL(st_quay_spsc, qb_quay_spsc, false)
QB_ST_IMPL(st_quay_spsc_burst, qb_quay_spsc, true)
QB_ST_IMPL(st_quay_mpmc, qb_quay_mpmc, false)
QB_ST_IMPL(st_quay_mpmc_burst, qb_quay_mpmc, true)
QB_ST_IMPL(st_vyukov_mpmc, qb_vyukov_mpmc, false)
QB_ST_IMPL(st_lamport_spsc, qb_lamport_spsc, false)
QB_ST_IMPL(st_ck_spsc, qb_ck_spsc, false)

static void
add_one_thread(const char *peer, qb_fn fn)
{
	static const int bursts[] = {1, 8, 32};
	char name[128];

	for (size_t i = 0; i < sizeof bursts / sizeof bursts[0]; i++) {
		snprintf(name, sizeof name, "one_thread/%s/%d", peer, bursts[i]);
		qb_unit(qb_register(name, fn, (void *)(uintptr_t)bursts[i]), QB_NS);
	}
}

/* -------------------------------------------------------------------------
 * Registration */

struct config {
	const char *name;
	int producers;
	int consumers;
	int reps; /* > 1: report every repetition */
};

static const struct config k_configs[] = {
    {"1P1C", 1, 1, 1},
    {"2P2C", 2, 2, 1},
    {"4P4C", 4, 4, 5},
    {"8P8C", 8, 8, 5},
};

static void
add_tput(const char *peer, const struct tput_impl *impl, const struct config *c)
{
	struct tput_cfg *cfg = malloc(sizeof *cfg); /* lives as long as the program */
	char name[128];
	if (cfg == NULL)
		abort();
	*cfg = (struct tput_cfg){impl, c->producers, c->consumers};
	snprintf(name, sizeof name, "%s/%s", peer, c->name);
	qb_bench *b = qb_unit(qb_manual_time(qb_register(name, bm_throughput, cfg)), QB_MS);
	if (c->reps > 1)
		qb_repetitions(b, c->reps, true);
}

static void
add_latency(const char *peer, const struct lat_impl *impl)
{
	char name[128];
	snprintf(name, sizeof name, "latency/%s", peer);
	qb_unit(qb_manual_time(qb_register(name, bm_latency, (void *)impl)), QB_US);
}

static void
register_all(void)
{
	for (size_t i = 0; i < sizeof k_configs / sizeof k_configs[0]; i++) {
		const struct config *c = &k_configs[i];
		const bool one_one = c->producers == 1 && c->consumers == 1;
		if (one_one) {
			add_tput("quay_spsc", &t_quay_spsc, c);
			add_tput("quay_spsc_b1", &t_quay_spsc_b1, c);
			add_tput("quay_spsc_b8", &t_quay_spsc_b8, c);
			add_tput("quay_spsc_b32", &t_quay_spsc_b32, c);
		}
		add_tput("quay_mpmc", &t_quay_mpmc, c);
		add_tput("quay_mpmc_b1", &t_quay_mpmc_b1, c);
		add_tput("quay_mpmc_b8", &t_quay_mpmc_b8, c);
		add_tput("quay_mpmc_b32", &t_quay_mpmc_b32, c);
		add_tput("vyukov_mpmc", &t_vyukov_mpmc, c);
		if (one_one) {
			add_tput("lamport_spsc", &t_lamport_spsc, c);
			add_tput("ck_spsc", &t_ck_spsc, c);
		}
		add_tput("ck_mpmc", &t_ck_mpmc, c);
		add_tput("wfcq", &t_wfcq, c);
		add_tput("mutex", &t_mutex, c);
		add_tput("mutex_cv", &t_mutex_cv, c);
	}
	add_latency("raw", &l_raw);
	add_latency("quay_spsc", &l_quay_spsc);
	add_latency("quay_mpmc", &l_quay_mpmc);
	add_latency("vyukov_mpmc", &l_vyukov_mpmc);
	add_latency("lamport_spsc", &l_lamport_spsc);
	add_latency("ck_spsc", &l_ck_spsc);
	add_latency("mutex", &l_mutex);
	add_one_thread("quay_spsc", st_quay_spsc);
	add_one_thread("quay_spsc_burst", st_quay_spsc_burst);
	add_one_thread("quay_mpmc", st_quay_mpmc);
	add_one_thread("quay_mpmc_burst", st_quay_mpmc_burst);
	add_one_thread("vyukov_mpmc", st_vyukov_mpmc);
	add_one_thread("lamport_spsc", st_lamport_spsc);
	add_one_thread("ck_spsc", st_ck_spsc);
}

static void
read_env(void)
{
	const char *s;
	if ((s = getenv("QUAY_BENCH_MSGS")) != NULL) {
		const unsigned long long v = strtoull(s, NULL, 0);
		if (v >= 64)
			g_opt.msgs = v;
	}
	if ((s = getenv("QUAY_BENCH_CAP_S")) != NULL) {
		const double v = strtod(s, NULL);
		if (v > 0)
			g_opt.cap_s = v;
	}
	if ((s = getenv("QUAY_BENCH_FAULT")) != NULL)
		g_fault = strcmp(s, "skip") == 0 ? 1 : strcmp(s, "dup") == 0 ? 2 : 0;
	if ((s = getenv("QUAY_BENCH_ROUNDS")) != NULL) {
		const unsigned long long v = strtoull(s, NULL, 0);
		if (v >= 100)
			g_opt.rounds = (size_t)v;
	}
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		for (int i = 0; i < CPU_SETSIZE; i++)
			if (CPU_ISSET(i, &set))
				g_cpus[g_ncpus++] = i;
}

int
main(int argc, char **argv)
{
	char buf[64];
	read_env();
	calibrate_ticks();
	register_all();
	qb_add_context("quay_version", QUAY_VERSION_STRING);
	snprintf(buf, sizeof buf, "%llu", (unsigned long long)g_opt.msgs);
	qb_add_context("msgs_per_iteration", buf);
	snprintf(buf, sizeof buf, "%d", QB_CAPACITY);
	qb_add_context("ring_capacity", buf);
	snprintf(buf, sizeof buf, "%f", g_opt.cap_s);
	qb_add_context("cap_seconds_per_repetition", buf);
	snprintf(buf, sizeof buf, "%d x pause, then sched_yield", QB_SPIN_LIMIT);
	qb_add_context("retry_policy", buf);
	snprintf(buf, sizeof buf, "%f", g_ticks_per_ns);
	qb_add_context("tsc_ticks_per_ns", buf);
	/* 1 if a check failed: a failed run must not look like a pass. */
	return qb_main(argc, argv);
}
