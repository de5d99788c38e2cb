/* SPDX-License-Identifier: MIT */
/**
 * @file quay/stats.h
 * Counters, gauges and latency histograms, a registry that names them,
 * snapshots, and Prometheus / JSON exporters.
 *
 * A registry (quay_stats) owns every metric made in it. A metric belongs
 * to a family: a name, an optional help text and a type (counter, gauge
 * or histogram); each metric of a family is one series, told apart by
 * its labels (name="value" pairs). The queue and bus layers make one
 * family per thing they count ("quay_queue_sent_total") and one series
 * per queue ({queue="orders"}).
 *
 * Hot paths (inline, in quay/impl/stats_inline.h): quay_counter_add(),
 * quay_counter_inc(), quay_gauge_set/add/sub(), quay_hist_record(). They
 * never allocate, never lock and never make a system call, apart from a
 * thread's very first call (which picks the thread's shard, see below).
 *
 * Sharding (details in docs/STATS.md): every thread gets a slot number
 * once, the lowest one free (slots of exited threads are reused). A
 * counter has `shards` cells (a power of two), each on a different cache
 * line; a thread adds to cell (slot & (shards - 1)). So up to `shards`
 * threads running at once never write the same line, and more threads
 * than shards still count exactly (the adds are atomic). Eight counters
 * share each line, so a counter costs 8 * shards bytes. A histogram is
 * sharded the same way over `hist_shards` copies (about 8 KiB each).
 * Reading sums the shards.
 *
 * Concurrency (synchronisation table):
 *
 *   call                              x call                     needs
 *   counter/gauge/hist hot paths      x each other, any read     nothing (lock-free)
 *   quay_counter_read, _gauge_read,   x anything but destroy     nothing
 *     quay_hist_read
 *   *_create, *_destroy of a metric,  x each other, snapshot     nothing (registry mutex)
 *     quay_stats_snapshot
 *   quay_counter_destroy (etc.)       x hot paths on that metric caller ensures none runs
 *   quay_stats_destroy                x anything on the registry caller serialises
 *   snapshot accessors, exporters     x anything                 nothing (the snapshot
 *                                                                  is a private copy)
 *
 * Ordering: the hot paths are relaxed atomic accesses (a load and a
 * store on a cell only the calling thread writes, or a read-modify-write
 * on a shared cell); they order nothing else. A read (or snapshot) sees every update that
 * happens-before it (for example one made by a thread since joined) and
 * may or may not see updates running concurrently with it. Successive
 * reads of one counter by one thread never go backwards (each shard only
 * grows, and the reader reads each shard once per read; see STATS.md).
 *
 * Export formats:
 *  - Prometheus text exposition format 0.0.4. Counters and gauges are one
 *    sample each. Histograms are Prometheus histograms, in SECONDS: the
 *    fixed `le` bounds of QUAY_HIST_LE_BOUNDS (250 ns .. 60 s, then +Inf)
 *    and `_sum` are converted from the recorded nanoseconds. A fine bucket
 *    is counted under the first bound that its whole range lies below, so
 *    an observation up to 3.2 % below a bound may be counted under the
 *    next one; never under an earlier one.
 *  - JSON: {"metrics":[{"name":...,"type":...,"help":...,"labels":{...},
 *    "value":N}, ...]}; histograms carry count, sum, min, max, p50, p90,
 *    p99, p999 in integer nanoseconds (min, max and the quantiles are null
 *    while the histogram is empty).
 * Exporters write through a callback, or into a caller's buffer
 * snprintf-style. Neither allocates.
 */
#ifndef QUAY_STATS_H
#define QUAY_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/alloc.h>
#include <quay/err.h>
#include <quay/impl/compiler.h>

#ifdef __cplusplus
extern "C" {
#endif


/** Longest metric name, in bytes. */
#define QUAY_STATS_NAME_MAX 200
/** Longest label name, in bytes. */
#define QUAY_STATS_LABEL_NAME_MAX 100
/** Longest label value, in bytes (UTF-8). */
#define QUAY_STATS_LABEL_VALUE_MAX 1000
/** Longest help text, in bytes (UTF-8). */
#define QUAY_STATS_HELP_MAX 2000
/** Most labels on one metric. */
#define QUAY_STATS_LABELS_MAX 16
/** Most shards a registry may ask for (counters and histograms). */
#define QUAY_STATS_SHARDS_MAX 256
/** Most metrics (series) a registry may hold. */
#define QUAY_STATS_METRICS_MAX ((size_t)1 << 20)

/**
 * Histogram buckets. Values 0..63 ns have a bucket each; from 64 ns up
 * every power of two [2^e, 2^(e+1)) is cut into 32 equal buckets, up to
 * 2^36 ns (68.7 s). Bucket QUAY_HIST_BUCKETS - 1 collects everything from
 * 2^36 ns up (the overflow bucket). The width of a bucket is at most 1/32
 * of its lower bound, so a value read back as its bucket's midpoint is
 * off by at most 1/64 (1.6 %).
 */
#define QUAY_HIST_BUCKETS 1025
/** The first value of the overflow bucket: 2^36 ns. */
#define QUAY_HIST_TRACKABLE_MAX ((uint64_t)1 << 36)
/** Number of `le` bounds (without +Inf) in the Prometheus export. */
#define QUAY_HIST_LE_COUNT 26

/** Metric types. */
enum quay_stats_type {
	QUAY_STATS_COUNTER = 1,
	QUAY_STATS_GAUGE = 2,
	QUAY_STATS_HIST = 3,
};

/** A label: name="value". */
struct quay_stats_label {
	const char *name;
	const char *value;
};

/** Registry options. Zero fields mean "default". */
struct quay_stats_opts {
	/** sizeof(struct quay_stats_opts): lets the struct grow. */
	size_t size;
	/** No flags are defined yet: must be 0. */
	unsigned flags;
	/** Counter shards, a power of two 1..QUAY_STATS_SHARDS_MAX; 0: the
	 *  number of CPUs rounded up to a power of two, at least 4, at most 64. */
	unsigned shards;
	/** Histogram shards, as shards; 0: min(shards, 4). Each costs 8320 bytes
	 *  per histogram: registries with many histograms may want 1 or 2. */
	unsigned hist_shards;
	/** Most metrics, 1..QUAY_STATS_METRICS_MAX; 0: 65536. */
	size_t max_metrics;
	/** Where the registry, its metrics and snapshots come from (NULL: the
	 *  C library); see quay/alloc.h. Kept, not copied: it must outlive
	 *  the registry. */
	const struct quay_allocator *allocator;
};

/** Initialiser for struct quay_stats_opts: every field its default. */
/* clang-format off */
#define QUAY_STATS_OPTS_INIT { sizeof(struct quay_stats_opts), 0u, 0u, 0u, 0u, NULL }
/* clang-format on */

/** A registry of metrics (opaque). */
typedef struct quay_stats quay_stats;
/** A counter (layout in quay/impl/stats_inline.h: read-only for users). */
typedef struct quay_counter quay_counter;
/** A gauge (layout in quay/impl/stats_inline.h: read-only for users). */
typedef struct quay_gauge quay_gauge;
/** A histogram (layout in quay/impl/stats_inline.h: read-only for users). */
typedef struct quay_hist quay_hist;
/** A snapshot of a registry (opaque). */
typedef struct quay_stats_snap quay_stats_snap;

/** The contents of a histogram, as read by quay_hist_read(). */
struct quay_hist_data {
	uint64_t count;                      /**< values recorded (sum of buckets) */
	uint64_t sum;                        /**< their sum, modulo 2^64 */
	uint64_t min;                        /**< smallest value (0 if count is 0) */
	uint64_t max;                        /**< largest value (0 if count is 0) */
	uint64_t buckets[QUAY_HIST_BUCKETS]; /**< values per bucket */
};

/** One metric of a snapshot. Every pointer lives as long as the snapshot. */
struct quay_stats_metric {
	const char *name;
	const char *help; /**< "" when the family has none */
	enum quay_stats_type type;
	size_t nlabels;
	const struct quay_stats_label *labels; /**< sorted by label name */
	uint64_t counter;                      /**< QUAY_STATS_COUNTER: the value */
	int64_t gauge;                         /**< QUAY_STATS_GAUGE: the value */
	const struct quay_hist_data *hist;     /**< QUAY_STATS_HIST: the contents, else NULL */
	bool seconds;                          /**< a gauge of nanoseconds exported in seconds
	                                           (quay_gauge_create_seconds()) */
};

/**
 * A collect callback (quay_gauge_set_collect()): brings metrics up to
 * date just before a snapshot reads them.
 */
typedef void (*quay_stats_collect_fn)(void *arg);

/**
 * Where an exporter writes: called with successive pieces of the output
 * (len >= 1, not NUL-terminated).
 * Returns: 0 to go on; a negative value stops the export, which returns it.
 */
typedef int (*quay_stats_write_fn)(void *arg, const char *data, size_t len);

/* ---- registry ------------------------------------------------------ */

/**
 * Create a registry.
 *
 * opts may be NULL (every default). A larger opts->size than this header's
 * is accepted if the extra bytes are zero.
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL if out is NULL, opts->size is too
 *          small or its extra bytes are not zero, flags has unknown bits,
 *          shards or hist_shards is not a power of two up to
 *          QUAY_STATS_SHARDS_MAX, max_metrics exceeds
 *          QUAY_STATS_METRICS_MAX, or the allocator lacks alloc or free;
 *          -ENOMEM. *out is untouched on failure.
 */
QUAY_API int quay_stats_create(const struct quay_stats_opts *opts, quay_stats **out);

/**
 * Free a registry and every metric in it (their handles become invalid).
 * NULL is ignored. Snapshots stay valid (they are copies).
 *
 * Concurrency: nothing else may use the registry or its metrics.
 */
QUAY_API void quay_stats_destroy(quay_stats *s);

/**
 * Number of metrics (series) in the registry (0 for NULL).
 *
 * Concurrency: safe from any thread (takes the registry mutex).
 */
QUAY_API size_t quay_stats_count(quay_stats *s);

/* ---- creating metrics (slow path; may allocate) -------------------- */

/*
 * The create calls share their rules. name: [a-zA-Z_:][a-zA-Z0-9_:]*,
 * 1..QUAY_STATS_NAME_MAX bytes. help: NULL (none) or valid UTF-8 up to
 * QUAY_STATS_HELP_MAX bytes; every metric of a family must bring the
 * same help ("" and NULL are the same). labels: nlabels (0..
 * QUAY_STATS_LABELS_MAX) pairs, NULL when nlabels is 0; label names
 * [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", distinct, up to
 * QUAY_STATS_LABEL_NAME_MAX bytes ("le" is reserved in histograms);
 * values valid UTF-8, 1..QUAY_STATS_LABEL_VALUE_MAX bytes (Prometheus
 * treats an empty value as a missing label). The order of the labels
 * does not matter. A family has one type; a histogram family "x" also
 * owns the names x_bucket, x_sum and x_count.
 *
 * Every name, help and label string is copied.
 *
 * Concurrency: safe from any thread (registry mutex).
 * Returns: 0 and *out set; -EINVAL if s or out is NULL, any rule above is
 *          broken, the name is taken by a family of another type or with
 *          another help, or a metric with the same name and labels exists;
 *          -ENOMEM if memory runs out or the registry holds max_metrics
 *          metrics. Nothing changes on failure.
 */

/** Create a counter (starts at 0). Rules and returns: see above. */
QUAY_API int quay_counter_create(quay_stats *s, const char *name, const char *help,
    const struct quay_stats_label *labels, size_t nlabels, quay_counter **out);

/** Create a gauge (starts at 0). Rules and returns: see above. */
QUAY_API int quay_gauge_create(quay_stats *s, const char *name, const char *help,
    const struct quay_stats_label *labels, size_t nlabels, quay_gauge **out);

/**
 * Create a gauge that holds nanoseconds and is exported in seconds by the
 * Prometheus exporters (as histograms are; JSON keeps nanoseconds and
 * adds "unit":"ns"). By Prometheus convention its name should end in
 * _seconds. A family's gauges are all of one kind: a name taken by a
 * plain gauge is -EINVAL here, and the other way round. Rules and
 * returns: see above.
 */
QUAY_API int quay_gauge_create_seconds(quay_stats *s, const char *name, const char *help,
    const struct quay_stats_label *labels, size_t nlabels, quay_gauge **out);

/** Create a histogram (empty). Rules and returns: see above. */
QUAY_API int quay_hist_create(quay_stats *s, const char *name, const char *help,
    const struct quay_stats_label *labels, size_t nlabels, quay_hist **out);

/**
 * Attach a collect callback to gauge g: every quay_stats_snapshot() of
 * its registry calls fn(arg) before it reads any metric, so a gauge that
 * is measured rather than kept (a queue's depth) is true at snapshot
 * time. fn may set any metric; it must not create or destroy metrics of
 * this registry or snapshot it (that deadlocks). The callback goes with
 * the gauge: quay_gauge_destroy() removes it, waiting for a snapshot
 * running it to finish.
 *
 * Concurrency: safe from any thread. Collectors of one registry run one
 *              snapshot at a time (a registry collector mutex), outside
 *              the registry mutex.
 * Returns: 0; -EINVAL if g or fn is NULL; -EEXIST if g has a collector;
 *          -ENOMEM.
 */
QUAY_API int quay_gauge_set_collect(quay_gauge *g, quay_stats_collect_fn fn, void *arg);

/**
 * Remove a metric from its registry and free it. NULL is ignored. When
 * the last metric of a family goes, the family goes (its name is free).
 *
 * Concurrency: safe against other registry calls; no thread may be
 *              using the metric (hot paths or reads) or use it after.
 */
QUAY_API void quay_counter_destroy(quay_counter *c);
/** As quay_counter_destroy(), for a gauge. */
QUAY_API void quay_gauge_destroy(quay_gauge *g);
/** As quay_counter_destroy(), for a histogram. */
QUAY_API void quay_hist_destroy(quay_hist *h);

/* ---- hot paths (inline) -------------------------------------------- */

/**
 * Add n to a counter. The counter wraps modulo 2^64.
 *
 * Concurrency: lock-free, any number of threads.
 * Ordering: relaxed (orders nothing).
 * Returns: 0; -EINVAL if c is NULL.
 */
QUAY_INLINE int quay_counter_add(quay_counter *c, uint64_t n);

/** quay_counter_add(c, 1). */
QUAY_INLINE int quay_counter_inc(quay_counter *c);

/**
 * Set a gauge.
 *
 * Concurrency: lock-free, any number of threads (the last store wins).
 * Ordering: relaxed.
 * Returns: 0; -EINVAL if g is NULL.
 */
QUAY_INLINE int quay_gauge_set(quay_gauge *g, int64_t v);

/**
 * Add v (which may be negative) to a gauge; wraps modulo 2^64.
 *
 * Concurrency: lock-free, any number of threads. Ordering: relaxed.
 * Returns: 0; -EINVAL if g is NULL.
 */
QUAY_INLINE int quay_gauge_add(quay_gauge *g, int64_t v);

/** Subtract v from a gauge: quay_gauge_add(g, -v), wrapping. */
QUAY_INLINE int quay_gauge_sub(quay_gauge *g, int64_t v);

/**
 * Record one value (nanoseconds, by convention) in a histogram. Values
 * from QUAY_HIST_TRACKABLE_MAX up go to the overflow bucket; min, max and
 * sum stay exact (sum wraps modulo 2^64).
 *
 * Concurrency: lock-free, any number of threads. Ordering: relaxed.
 * Returns: 0; -EINVAL if h is NULL.
 */
QUAY_INLINE int quay_hist_record(quay_hist *h, uint64_t v);

/* ---- reading ------------------------------------------------------- */

/**
 * The value of a counter: the sum of its shards (0 for NULL).
 *
 * Concurrency: safe from any thread; never less than an earlier read by
 *              the same thread. Ordering: relaxed.
 */
QUAY_API uint64_t quay_counter_read(const quay_counter *c);

/**
 * The value of a gauge (0 for NULL).
 *
 * Concurrency: safe from any thread. Ordering: relaxed.
 */
QUAY_API int64_t quay_gauge_read(const quay_gauge *g);

/**
 * Copy the contents of a histogram (summed over its shards) into *out.
 * Under concurrent recording count (the sum of the buckets) is exact for
 * the buckets read, sum/min/max may include a few records more or fewer.
 *
 * Concurrency: safe from any thread. Ordering: relaxed.
 * Returns: 0; -EINVAL if h or out is NULL.
 */
QUAY_API int quay_hist_read(const quay_hist *h, struct quay_hist_data *out);

/**
 * A quantile of histogram contents: the value at rank ceil(q * count)
 * (at least 1) in sorted order, read as the midpoint of its bucket and
 * clamped to [min, max]; so q = 0 gives min and q = 1 gives max exactly.
 * The relative error is at most 1/64 below 2^36 ns; in the overflow
 * bucket the result is max.
 *
 * Concurrency: safe from any thread (d is only read).
 * Returns: 0 and *out set; -EINVAL if d or out is NULL or q is not in
 *          [0, 1] (NaN included); -ENOENT if d->count is 0.
 */
QUAY_API int quay_hist_quantile(const struct quay_hist_data *d, double q, uint64_t *out);

/**
 * The value range [*lo, *hi] (inclusive) of histogram bucket idx.
 *
 * Concurrency: safe from any thread.
 * Returns: 0; -EINVAL if idx >= QUAY_HIST_BUCKETS or lo or hi is NULL.
 */
QUAY_API int quay_hist_bucket_range(size_t idx, uint64_t *lo, uint64_t *hi);

/**
 * The bucket a value falls in: 0..QUAY_HIST_BUCKETS - 1.
 *
 * Concurrency: safe from any thread.
 */
QUAY_INLINE size_t quay_hist_bucket_of(uint64_t v);

/**
 * The i-th `le` bound of the Prometheus export (i < QUAY_HIST_LE_COUNT):
 * its value in nanoseconds in *ns and, if text is not NULL, the text
 * printed for it (in seconds, e.g. "2.5e-07") in *text.
 *
 * Concurrency: safe from any thread.
 * Returns: 0; -EINVAL if i >= QUAY_HIST_LE_COUNT or ns is NULL.
 */
QUAY_API int quay_hist_le_bound(size_t i, uint64_t *ns, const char **text);

/* ---- snapshots ----------------------------------------------------- */

/**
 * Copy every metric of the registry: names, help, labels and values.
 * Metrics of one family are adjacent, families in creation order, series
 * within a family in creation order. Counters and gauges are read as by
 * quay_counter_read(), histograms as by quay_hist_read(); metrics are
 * read one after the other, not at one instant.
 *
 * First runs the registry's collect callbacks (quay_gauge_set_collect()).
 * Allocates one block, sized by the registry's current contents.
 *
 * Concurrency: safe from any thread (registry mutex); the hot paths go on
 *              while it reads.
 * Returns: 0 and *out set; -EINVAL if s or out is NULL; -ENOMEM.
 */
QUAY_API int quay_stats_snapshot(quay_stats *s, quay_stats_snap **out);

/** Free a snapshot (NULL is ignored). */
QUAY_API void quay_stats_snap_free(quay_stats_snap *snap);

/** Number of metrics in a snapshot (0 for NULL). */
QUAY_API size_t quay_stats_snap_count(const quay_stats_snap *snap);

/**
 * The i-th metric of a snapshot.
 *
 * Returns: 0 and *out set (valid until the snapshot is freed); -EINVAL
 *          if snap or out is NULL; -ENOENT if i >= the count.
 */
QUAY_API int quay_stats_snap_metric(const quay_stats_snap *snap, size_t i,
    const struct quay_stats_metric **out);

/* ---- exporters ----------------------------------------------------- */

/**
 * Write a snapshot in Prometheus text format 0.0.4 through fn (in pieces
 * of at most a few hundred bytes; no allocation).
 *
 * Returns: 0; -EINVAL if snap or fn is NULL; or the negative value fn
 *          returned (the output is then cut short).
 */
QUAY_API int quay_stats_write_prometheus(const quay_stats_snap *snap, quay_stats_write_fn fn, void *arg);

/**
 * Write several snapshots (several registries) as one Prometheus
 * exposition: each family once (HELP and TYPE once), with its series from
 * every snapshot, in the order families first appear. A family of the
 * same name but another type (or gauge kind) in a later snapshot is left
 * out. Series with the same name and labels in two registries are both
 * written (Prometheus rejects that: give them distinct labels).
 *
 * Returns: 0; -EINVAL if snaps or fn is NULL, n is 0 or a snaps[i] is
 *          NULL; or the negative value fn returned.
 */
QUAY_API int quay_stats_write_prometheus_many(const quay_stats_snap *const *snaps, size_t n,
    quay_stats_write_fn fn, void *arg);

/** As quay_stats_write_prometheus(), in JSON. */
QUAY_API int quay_stats_write_json(const quay_stats_snap *snap, quay_stats_write_fn fn, void *arg);

/**
 * Format a snapshot in Prometheus text format 0.0.4 into buf, snprintf
 * style: *len is set to the length of the whole output (without the
 * terminating NUL) whether it fits or not.
 *
 * Returns: 0 if it fitted (buf holds it, NUL-terminated); -ENOSPC if cap
 *          was not more than *len (buf, if cap > 0, holds a NUL-terminated
 *          prefix; call again with cap > *len); -EINVAL if snap or len is
 *          NULL, or buf is NULL with cap > 0.
 */
QUAY_API int quay_stats_format_prometheus(const quay_stats_snap *snap, char *buf, size_t cap, size_t *len);

/** As quay_stats_format_prometheus(), in JSON. */
QUAY_API int quay_stats_format_json(const quay_stats_snap *snap, char *buf, size_t cap, size_t *len);

#include <quay/impl/stats_inline.h>

#ifdef __cplusplus
}
#endif

#endif /* QUAY_STATS_H */
