/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/stats_inline.h
 * Layout of the metric handles and the bodies of the hot paths.
 * Included by quay/stats.h; do not include it directly.
 *
 * Shards. Each thread has a slot number, assigned on its first hot call
 * (quayi_stats_slot_init in src/stats.c: the lowest free slot of
 * QUAY_STATS_SHARDS_MAX, released when the thread exits). A thread that
 * finds every slot taken gets QUAY_STATS_SHARDS_MAX, which owns nothing.
 * The slot lives in the thread-local quayi_stats_tslot, plus one so that
 * 0 means "none yet".
 *
 * Single-writer cells. A metric with S = 2^k shards has S owned cells and
 * one shared cell after them. A thread whose slot s is below S is the only
 * writer of cell s (no other live thread holds slot s, and slots >= S
 * never touch an owned cell), so it adds with a relaxed load and a relaxed
 * store: no lock prefix, and readers still load whole 64-bit values. Every
 * other thread (slot >= S) adds to the shared cell with an atomic
 * read-modify-write. A reader sums all S + 1 cells.
 *
 * Counters: the cells of 8 counters share a chunk of S + 1 cache lines;
 * line i holds cell i of each of the 8. A counter's handle points at its
 * cell in line 0; cell i is QUAYI_STATS_LINE_WORDS * i words on. So two
 * threads with different slots never write one line, and one thread
 * bumping several counters of a chunk touches one line.
 *
 * Histograms: hist_shards + 1 copies of struct quayi_hist_shard (the
 * last is the shared one), each a whole number of lines.
 *
 * Labelled ordering edges:
 *   STATS-H1 quay_hist_record: release store (owned shard) or release
 *      fetch_add (shared shard) on the bucket, after the relaxed updates of
 *      min, max and sum
 *      -> STATS-H2 quay_hist_read (src/stats.c): acquire loads of the buckets,
 *      then min, max and sum: a record whose bucket a reader counted is
 *      also in the min, max and sum it reads.
 *   STATS-S1 slot_release (src/stats.c): release fetch_and clearing the
 *      slot's bit, after the exiting thread's last plain store to its cells
 *      -> STATS-S2 slot_claim: acquire CAS setting the bit: the next owner of
 *      the slot loads the cells only after the previous owner's last store,
 *      so its load + store loses no count (one writer at a time per cell).
 * Everything else is relaxed: a counter or gauge publishes no other data
 * (an exact total is read after joining, or otherwise synchronising
 * with, the threads that bumped it).
 */
#ifndef QUAY_IMPL_STATS_INLINE_H
#define QUAY_IMPL_STATS_INLINE_H

#if !defined(QUAY_STATS_H)
#error "include <quay/stats.h>, not quay/impl/stats_inline.h"
#endif

/* The 64-bit words in a cache line. */
#define QUAYI_STATS_LINE_WORDS (QUAY_CACHELINE / 8)

/* The calling thread's slot plus one; 0 until its first hot call.
 * initial-exec: a plain %fs-relative load, also from inside a shared
 * library (libquay is linked at start-up, not dlopen'ed late). */
QUAY_API extern __thread uint32_t quayi_stats_tslot __attribute__((tls_model("initial-exec")));

/* Assign the calling thread a slot; returns it plus one (never 0). */
QUAY_API uint32_t quayi_stats_slot_init(void);

/*
 * The handles. Transparent only so that the hot paths inline: read-only
 * for users; the layout is part of the ABI (pinned in src/stats.c). Each
 * is the first member of the registry's entry for its metric.
 */
struct quay_counter {
	uint64_t *cells; /* cell 0; cell i at cells[i * LINE_WORDS], i <= mask + 1 */
	uint32_t mask;   /* shards - 1; cell mask + 1 is the shared one */
	uint32_t type;   /* QUAY_STATS_COUNTER */
};

struct quay_gauge {
	uint64_t *cell; /* alone on its line */
	uint32_t pad;
	uint32_t type; /* QUAY_STATS_GAUGE */
};

/* One shard of a histogram: a header line, then the buckets, padded to a
 * whole number of lines. min starts at UINT64_MAX, max at 0. */
struct quayi_hist_shard {
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t pad0[QUAYI_STATS_LINE_WORDS - 3];
	uint64_t buckets[QUAY_HIST_BUCKETS];
	uint64_t pad1[QUAYI_STATS_LINE_WORDS - QUAY_HIST_BUCKETS % QUAYI_STATS_LINE_WORDS];
};

struct quay_hist {
	struct quayi_hist_shard *shards; /* hist_shards + 1, the last shared */
	uint32_t mask;                   /* hist_shards - 1 */
	uint32_t type;                   /* QUAY_STATS_HIST */
};

static inline uint32_t
quayi_stats_slot(void)
{
	uint32_t s = quayi_stats_tslot;

	if (QUAYI_UNLIKELY(s == 0))
		s = quayi_stats_slot_init();
	return s - 1;
}

QUAY_INLINE int
quay_counter_add(quay_counter *c, uint64_t n)
{
	uint32_t slot;
	uint64_t *p;

	if (QUAYI_UNLIKELY(c == NULL))
		return -EINVAL;
	slot = quayi_stats_slot();
	if (QUAYI_LIKELY(slot <= c->mask)) {
		/* Relaxed load + store: this thread is the cell's only writer
		 * (STATS-S1/S2 hand a slot's cells from one owner to the next);
		 * a count publishes nothing. */
		p = c->cells + (size_t)slot * QUAYI_STATS_LINE_WORDS;
		__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
	} else {
		/* Relaxed: the shared cell, atomic because its writers are many. */
		__atomic_fetch_add(c->cells + ((size_t)c->mask + 1) * QUAYI_STATS_LINE_WORDS, n,
		    __ATOMIC_RELAXED);
	}
	return 0;
}

QUAY_INLINE int
quay_counter_inc(quay_counter *c)
{
	return quay_counter_add(c, 1);
}

QUAY_INLINE int
quay_gauge_set(quay_gauge *g, int64_t v)
{
	if (QUAYI_UNLIKELY(g == NULL))
		return -EINVAL;
	/* Relaxed: a gauge publishes nothing. */
	__atomic_store_n(g->cell, (uint64_t)v, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_gauge_add(quay_gauge *g, int64_t v)
{
	if (QUAYI_UNLIKELY(g == NULL))
		return -EINVAL;
	/* Relaxed, as set. Unsigned: wraps instead of overflowing. */
	__atomic_fetch_add(g->cell, (uint64_t)v, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE int
quay_gauge_sub(quay_gauge *g, int64_t v)
{
	if (QUAYI_UNLIKELY(g == NULL))
		return -EINVAL;
	/* Relaxed, as set. */
	__atomic_fetch_sub(g->cell, (uint64_t)v, __ATOMIC_RELAXED);
	return 0;
}

QUAY_INLINE size_t
quay_hist_bucket_of(uint64_t v)
{
	/* e = index of the top bit, at least 5: values below 64 map to
	 * themselves, then each octave [2^e, 2^(e+1)) is 32 buckets from
	 * (e - 4) * 32 on. */
	unsigned e = 63u - (unsigned)__builtin_clzll(v | 32u);
	size_t idx = ((size_t)(e - 5u) << 5) + (size_t)(v >> (e - 5u));

	return idx < QUAY_HIST_BUCKETS - 1 ? idx : QUAY_HIST_BUCKETS - 1;
}

QUAY_INLINE int
quay_hist_record(quay_hist *h, uint64_t v)
{
	struct quayi_hist_shard *sh;
	uint64_t *b;
	uint32_t slot;
	uint64_t m;

	if (QUAYI_UNLIKELY(h == NULL))
		return -EINVAL;
	slot = quayi_stats_slot();
	if (QUAYI_LIKELY(slot <= h->mask)) {
		/* The only writer of this shard (see quay_counter_add): relaxed
		 * loads and stores; STATS-H1 below orders them before the bucket. */
		sh = h->shards + slot;
		if (v < __atomic_load_n(&sh->min, __ATOMIC_RELAXED))
			__atomic_store_n(&sh->min, v, __ATOMIC_RELAXED);
		if (v > __atomic_load_n(&sh->max, __ATOMIC_RELAXED))
			__atomic_store_n(&sh->max, v, __ATOMIC_RELAXED);
		__atomic_store_n(&sh->sum, __atomic_load_n(&sh->sum, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
		b = &sh->buckets[quay_hist_bucket_of(v)];
		/* STATS-H1: release, pairs with STATS-H2 in quay_hist_read. */
		__atomic_store_n(b, __atomic_load_n(b, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
		return 0;
	}
	/* The shared shard: many writers, atomic read-modify-writes. Relaxed:
	 * STATS-H1 below orders these before the bucket. The CAS loops usually
	 * run zero times (v is not a new extreme). */
	sh = h->shards + h->mask + 1;
	m = __atomic_load_n(&sh->min, __ATOMIC_RELAXED);
	while (
	    v < m && !__atomic_compare_exchange_n(&sh->min, &m, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	m = __atomic_load_n(&sh->max, __ATOMIC_RELAXED);
	while (
	    v > m && !__atomic_compare_exchange_n(&sh->max, &m, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	__atomic_fetch_add(&sh->sum, v, __ATOMIC_RELAXED);
	/* STATS-H1: release, pairs with STATS-H2 in quay_hist_read. */
	__atomic_fetch_add(&sh->buckets[quay_hist_bucket_of(v)], 1, __ATOMIC_RELEASE);
	return 0;
}

#endif /* QUAY_IMPL_STATS_INLINE_H */
