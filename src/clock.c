/* SPDX-License-Identifier: MIT */
/*
 * quay_queue_clock_tsc(): CLOCK_REALTIME nanoseconds from the CPU's
 * time-stamp counter, for the clock options of the queue, bus and pool.
 *
 * Why: in the VMs this library is measured on, clock_gettime() costs
 * 25-35 ns (the vDSO's ordered TSC read, its seqlock and its scaling),
 * and a message through a queue reads the clock four times. A plain
 * rdtsc is 11-15 ns (lfence + rdtsc 18, rdtscp 28). The fast path does
 * not order its rdtsc after earlier loads: out of order, it may read the
 * counter a few ns before the instructions before it retire, well inside
 * the clock's documented distance from CLOCK_REALTIME; the calibration
 * pairs are ordered (lfence).
 *
 * How: one anchor (tsc, ns, mult), ns = anchor.ns + (tsc - anchor.tsc) *
 * mult / 2^32. A reading that finds the anchor older than ANCHOR_TICKS
 * (about 1.6 ms) reads clock_gettime(CLOCK_REALTIME) between two TSC
 * reads and moves the anchor to that moment on the current line (so the
 * clock does not jump), with mult = the rate measured since the baseline
 * (the first reading, or the last step of more than STEP_NS) plus a slew
 * that closes the gap to CLOCK_REALTIME over the next period, at most
 * rate / SLEW_DIV. The clock stays within one period's error of
 * CLOCK_REALTIME and goes back in a thread only when a reading falls
 * back to clock_gettime() (another thread holds the seqlock).
 *
 * When the TSC is not usable (the kernel's clock source is not "tsc",
 * which is how the kernel says the counter is constant, non-stop and in
 * step across CPUs, or not x86-64), every reading is clock_gettime().
 *
 * Ordering: the anchor is a seqlock (CLK-S1..S3 below). A reader that
 * sees it change or odd takes the slow path, which re-anchors, or reads
 * the line again, or (while another thread writes, or uncalibrated)
 * returns clock_gettime() itself.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <quay/queue.h>

#include "clock.h"
#include "quay_internal.h"

#if defined(__x86_64__) && defined(__SIZEOF_INT128__)
#define HAVE_TSC 1
#include <cpuid.h>
#include <x86intrin.h>
#else
#define HAVE_TSC 0
#endif

#if HAVE_TSC

/* 128-bit products of a tick count and a 32.32 rate (a GNU C extension). */
__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

/* Re-anchor after 2^22 ticks: 1.6 ms at 2.6 GHz. */
#define ANCHOR_TICKS (UINT64_C(1) << 22)
/* Calibrate over at least 2^25 ticks (13 ms at 2.6 GHz) before the
 * first fast reading; until then every reading is exact. */
#define CAL_TICKS (UINT64_C(1) << 25)
/* A reading further than this from the prediction: CLOCK_REALTIME was
 * stepped; measure the rate again from there. */
#define STEP_NS INT64_C(100000)
/* A clock_gettime() bracketed by TSC reads further apart than this (about
 * 0.8 us at 2.6 GHz; a pair takes 30-150 ns) was interrupted: do not
 * anchor on it (the midpoint's error is up to half the distance). */
#define PAIR_TICKS 2048u
/* The slew is at most rate / SLEW_DIV (1/2048: 488 ppm, about NTP's
 * limit), so the clock always moves forward. */
#define SLEW_DIV 2048u

enum { ST_UNKNOWN, ST_BUSY, ST_TSC, ST_NONE };

static struct {
	/* CLK-S1 seqlock word: odd while the anchor is rewritten. */
	uint32_t seq;
	uint32_t state; /* ST_*: ST_UNKNOWN -> ST_BUSY -> ST_TSC or ST_NONE */
	uint64_t tsc;   /* the anchor: ns at tsc, and the rate */
	int64_t ns;
	uint64_t mult;    /* ns per tick * 2^32; 0 while calibrating */
	uint64_t cal_tsc; /* the rate's baseline (writer only, under seq) */
	int64_t cal_ns;
} g_clk __attribute__((aligned(64)));

static inline uint64_t
tsc_ordered(void)
{
	/* lfence: the read is not taken before the loads that precede it
	 * (a time read after acquiring a message is not older than the
	 * sender's stamp); Linux makes lfence dispatch-serialising on AMD. */
	_mm_lfence();
	return __rdtsc();
}

#ifdef QUAYI_TSC_ORDERED
#define TSC_FAST() tsc_ordered()
#else
#define TSC_FAST() __rdtsc()
#endif

/* CPUID 0x80000007 EDX bit 8: the invariant TSC (constant rate, runs in
 * every C-, P- and T-state). */
static bool
cpu_invariant_tsc(void)
{
	unsigned a, b, c, d;

	if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000007u)
		return false;
	__cpuid(0x80000007u, a, b, c, d);
	return (d & (1u << 8)) != 0;
}

/* The TSC is trusted when the CPU says it is invariant and the kernel
 * keeps time with it (the kernel's watchdog demotes a TSC that drifts or
 * is out of step across CPUs to another clock source). */
static bool
kernel_uses_tsc(void)
{
	char buf[32] = { 0 };
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
	bool ok;

	if (!cpu_invariant_tsc() || f == NULL) {
		if (f != NULL)
			fclose(f);
		return false;
	}
	ok = fgets(buf, sizeof(buf), f) != NULL && strcmp(buf, "tsc\n") == 0;
	fclose(f);
	return ok;
}

/* The anchor's line at tsc t: false if it is being rewritten, not
 * calibrated, or more than a period from t. */
static inline bool
line_at(uint64_t t, int64_t *out)
{
	uint32_t s =
	    __atomic_load_n(&g_clk.seq, __ATOMIC_ACQUIRE); /* CLK-S2 pairs with the writer's release */
	/* relaxed: checked by the seq re-read below (CLK-S1) */
	uint64_t atsc = __atomic_load_n(&g_clk.tsc, __ATOMIC_RELAXED);
	int64_t ans = __atomic_load_n(&g_clk.ns, __ATOMIC_RELAXED);
	uint64_t mult = __atomic_load_n(&g_clk.mult, __ATOMIC_RELAXED);

	/* CLK-S1: the field loads above are done before seq is read again */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if ((s & 1) != 0 || mult == 0 || __atomic_load_n(&g_clk.seq, __ATOMIC_RELAXED) != s ||
	    t - atsc >= ANCHOR_TICKS)
		return false;
	*out = ans + (int64_t)(((u128)(t - atsc) * mult) >> 32);
	return true;
}

/* In a child of fork(): the thread that held the seqlock (odd seq) or was
 * deciding whether to trust the TSC (ST_BUSY) does not exist there, and the
 * anchor may be half written. Start over: undecided, no anchor, seq even.
 * Without this, every reading in such a child would wait 64 pauses for a
 * writer that never finishes. Only this thread runs in the child now. */
static void
clock_atfork_child(void)
{
	uint32_t seq = __atomic_load_n(&g_clk.seq, __ATOMIC_RELAXED);
	uint32_t st = __atomic_load_n(&g_clk.state, __ATOMIC_RELAXED);

	if ((seq & 1) == 0 && st != ST_BUSY)
		return;
	__atomic_store_n(&g_clk.mult, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&g_clk.cal_ns, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&g_clk.seq, (seq + 1) & ~1u, __ATOMIC_RELAXED);
	if (st == ST_BUSY)
		__atomic_store_n(&g_clk.state, ST_UNKNOWN, __ATOMIC_RELAXED);
}

/* The exact reading, and a new anchor from it if nobody else is writing. */
static __attribute__((noinline)) int64_t
slow_read(void)
{
	uint32_t st =
	    __atomic_load_n(&g_clk.state, __ATOMIC_ACQUIRE); /* CLK-S3 pairs with the release below */
	uint32_t seq;
	uint64_t t0, t1, t;
	int64_t ns, ret;

	if (st == ST_UNKNOWN) {
		uint32_t want = ST_UNKNOWN;

		/* relaxed CAS: ST_BUSY only elects the thread that looks */
		if (__atomic_compare_exchange_n(&g_clk.state, &want, ST_BUSY, false, __ATOMIC_RELAXED,
		        __ATOMIC_RELAXED)) {
			/* No anchor yet (cal_ns 0): the first uninterrupted pair of
			 * the path below starts the rate's baseline. The fork
			 * handler is registered before the TSC can be used (once:
			 * only the thread elected here gets to this line, and a
			 * child that starts over inherits the registration). */
			static bool atfork_done;
			if (!atfork_done)
				atfork_done = pthread_atfork(NULL, NULL, clock_atfork_child) == 0;
			bool ok = atfork_done && kernel_uses_tsc();

			/* CLK-S3: release, pairs with the acquire loads of state */
			__atomic_store_n(&g_clk.state, ok ? ST_TSC : ST_NONE, __ATOMIC_RELEASE);
		}
		return quayi_real_ns();
	}
	if (st != ST_TSC)
		return quayi_real_ns();

	t0 = tsc_ordered();
	ns = quayi_real_ns();
	t1 = tsc_ordered();
	t = t0 + (t1 - t0) / 2;
	if (t1 - t0 > PAIR_TICKS) {
		/* Interrupted: no anchor from this pair; the line if it holds
		 * (the exact ns can be a few hundred ns off it), else ns. */
		int64_t v;

		return line_at(t1, &v) ? v : ns;
	}
	seq = __atomic_load_n(&g_clk.seq, __ATOMIC_RELAXED); /* CLK-S1: the CAS below decides */
	if ((seq & 1) != 0 ||
	    !__atomic_compare_exchange_n(&g_clk.seq, &seq, seq + 1, false, __ATOMIC_ACQUIRE,
	        __ATOMIC_RELAXED)) {
		/* Another thread is re-anchoring: its line once it is done
		 * (a few stores), ns if that takes more than 64 pauses. */
		int64_t v;

		for (int i = 0; i < 64; i++) {
			if (line_at(tsc_ordered(), &v))
				return v;
			_mm_pause();
		}
		return ns;
	}
	/* CLK-S1: the odd seq is visible before the fields change (a reader
	 * that sees a new field sees the odd seq, or a later one, again). */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	{
		/* relaxed: only the writer (odd seq) touches these */
		uint64_t ctsc = __atomic_load_n(&g_clk.cal_tsc, __ATOMIC_RELAXED);
		int64_t cns = __atomic_load_n(&g_clk.cal_ns, __ATOMIC_RELAXED);
		uint64_t atsc = __atomic_load_n(&g_clk.tsc, __ATOMIC_RELAXED);
		int64_t ans = __atomic_load_n(&g_clk.ns, __ATOMIC_RELAXED);
		uint64_t mult = __atomic_load_n(&g_clk.mult, __ATOMIC_RELAXED);
		int64_t pred = ans + (int64_t)(((i128)(int64_t)(t - atsc) * (i128)mult) >> 32);
		int64_t err = ns - pred;

		ret = ns;

		if (cns == 0 || t <= ctsc || ns <= cns || (mult != 0 && (err > STEP_NS || err < -STEP_NS))) {
			/* the first pair, or a step of CLOCK_REALTIME (or a counter
			 * that went back): measure the rate from here, exact until
			 * then */
			ctsc = t;
			cns = ns;
			mult = 0;
			atsc = t;
			ans = ns;
		} else if (t - ctsc >= CAL_TICKS) {
			/* the rate since the baseline, plus a slew that closes the
			 * gap to CLOCK_REALTIME over the next period; the new anchor
			 * is the old line at t, so the clock does not jump */
			uint64_t rate = (uint64_t)(((u128)(uint64_t)(ns - cns) << 32) / (t - ctsc));
			/* a multiply, not << 32: err may be negative (UB to shift) */
			int64_t slew =
			    (int64_t)((i128)(mult == 0 ? 0 : err) * ((i128)1 << 32) / (i128)ANCHOR_TICKS);
			int64_t lim = (int64_t)(rate / SLEW_DIV);

			slew = slew > lim ? lim : slew < -lim ? -lim : slew;
			atsc = t;
			ans = mult != 0 ? pred : ns;
			ret = ans;
			mult = (uint64_t)((int64_t)rate + slew);
		} else {
			atsc = t;
			ans = ns;
		}
		__atomic_store_n(&g_clk.cal_tsc, ctsc, __ATOMIC_RELAXED);
		__atomic_store_n(&g_clk.cal_ns, cns, __ATOMIC_RELAXED);
		__atomic_store_n(&g_clk.tsc, atsc, __ATOMIC_RELAXED);
		__atomic_store_n(&g_clk.ns, ans, __ATOMIC_RELAXED);
		__atomic_store_n(&g_clk.mult, mult, __ATOMIC_RELAXED);
	}
	/* CLK-S2: release, pairs with the acquire load of seq in quay_queue_clock_tsc */
	__atomic_store_n(&g_clk.seq, seq + 2, __ATOMIC_RELEASE);
	return ret;
}

static inline int64_t
fast_ns(void)
{
	int64_t v;

	if (QUAYI_LIKELY(line_at(TSC_FAST(), &v)))
		return v;
	return slow_read();
}

#else /* !HAVE_TSC */

static inline int64_t
fast_ns(void)
{
	return quayi_real_ns();
}

#endif

void
quayi_clock_prepare(void)
{
	/* The first reading decides whether the TSC is trusted (CPUID and a
	 * read of sysfs): done here, when a queue or pool is created, rather
	 * than in the first message's path. */
	(void)fast_ns();
}

/* Two copies of one body (no call from one to the other): the queue
 * calls the first, a pool or bus given quay_queue_clock_tsc the second. */
int64_t
quayi_clock_fast_ns(void)
{
	return fast_ns();
}

int64_t
quay_queue_clock_tsc(void *arg)
{
	(void)arg;
	return fast_ns();
}

int64_t
quay_queue_clock_realtime(void *arg)
{
	(void)arg;
	return quayi_real_ns();
}
