/* SPDX-License-Identifier: MIT */
/*
 * quay_bench.h: Google Benchmark from C.
 *
 * A benchmark body is a C function taking the run's state and the pointer
 * given at registration. It runs its timed loop in one of two ways:
 *
 *     while (qb_keep_running(st))         one out-of-line call per
 *             body();                     iteration (a few ns)
 *
 *     for (uint64_t n; (n = qb_batch(st)) != 0;)
 *             for (uint64_t i = 0; i < n; i++)   one call per run: the loop
 *                     body();                    is the caller's own
 *
 * Everything else mirrors Google Benchmark's C++ API one to one: arguments
 * (qb_range), threads (qb_thread_index, qb_threads), manual time,
 * counters, SkipWithError, setup and teardown per thread group,
 * repetitions. Names, the console and the JSON output are Google
 * Benchmark's own, so a benchmark registered here prints exactly what the
 * same benchmark registered in C++ would.
 *
 * A program is:
 *
 *     static void bm(qb_state *st, void *arg) { ... }
 *
 *     int main(int argc, char **argv)
 *     {
 *             qb_unit(qb_register("my/bench", bm, NULL), QB_NS);
 *             return qb_main(argc, argv);
 *     }
 *
 * qb_main returns 1 when any benchmark called qb_skip_with_error, so a
 * failed check never looks like a pass. Link with bench/shim/quay_bench.cc
 * (C++17) and Google Benchmark. docs/BENCHMARKS.md, "Writing a benchmark
 * in C", and bench/shim/example.c show a whole program.
 */
#ifndef QUAY_BENCH_H
#define QUAY_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One thread's view of a running benchmark (benchmark::State). */
typedef struct qb_state qb_state;
/* A registered benchmark family (benchmark::internal::Benchmark). */
typedef struct qb_bench qb_bench;

typedef void (*qb_fn)(qb_state *st, void *arg);
/* Setup and teardown run once per thread group, outside any thread of the
 * benchmark: only qb_range, qb_threads and qb_thread_index may be called
 * on their state. */
typedef void (*qb_hook)(const qb_state *st, void *arg);

enum qb_time_unit { QB_NS, QB_US, QB_MS, QB_S };

/* Counter flags: the values of benchmark::Counter::Flags. */
enum {
	QB_COUNTER_DEFAULT = 0,
	QB_COUNTER_RATE = 1,        /* divided by the run's time */
	QB_COUNTER_AVG_THREADS = 2, /* divided by the number of threads */
	QB_COUNTER_ITER_INVARIANT = 4,
	QB_COUNTER_AVG_ITERATIONS = 8, /* divided by the iterations */
	QB_COUNTER_INVERT = 16         /* 1 / value (with RATE: s per item) */
};

/* --- Registration (before qb_main) ------------------------------------ */

/* Registers fn under name; arg is handed to fn unchanged. NULL on an
 * empty name or fn. Every setter below returns b (NULL in, NULL out). */
qb_bench *qb_register(const char *name, qb_fn fn, void *arg);
qb_bench *qb_arg(qb_bench *b, int64_t x);
/* One argument tuple of n values; QB_ARGS(b, 1, 8) spells it inline. */
qb_bench *qb_args(qb_bench *b, const int64_t *v, size_t n);
qb_bench *qb_arg_name(qb_bench *b, const char *name);
qb_bench *qb_arg_names(qb_bench *b, const char *const *names, size_t n);
qb_bench *qb_range(qb_bench *b, int64_t lo, int64_t hi);
qb_bench *qb_dense_range(qb_bench *b, int64_t lo, int64_t hi, int step);
qb_bench *qb_threads(qb_bench *b, int n);
qb_bench *qb_manual_time(qb_bench *b);
qb_bench *qb_real_time(qb_bench *b);
qb_bench *qb_unit(qb_bench *b, enum qb_time_unit u);
qb_bench *qb_iterations(qb_bench *b, int64_t n);
qb_bench *qb_min_time(qb_bench *b, double seconds);
/* n repetitions; every_one: report each (ReportAggregatesOnly(false)),
 * else the aggregates only. */
qb_bench *qb_repetitions(qb_bench *b, int n, bool every_one);
/* At most 64 hooked benchmarks per program (returns NULL past that). */
qb_bench *qb_setup(qb_bench *b, qb_hook fn, void *arg);
qb_bench *qb_teardown(qb_bench *b, qb_hook fn, void *arg);

#define QB_ARGS(b, ...) \
	qb_args((b), (const int64_t[]){__VA_ARGS__}, sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define QB_ARG_NAMES(b, ...) \
	qb_arg_names((b), (const char *const[]){__VA_ARGS__}, \
	    sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))

/* Adds "key": "value" to the context printed before the runs. */
void qb_add_context(const char *key, const char *value);

/* Parses --benchmark_* flags, runs what they select, and returns 0, 1 if
 * a benchmark failed (qb_skip_with_error), 2 on an unknown argument. */
int qb_main(int argc, char **argv);
/* How many benchmarks called qb_skip_with_error so far. */
int qb_failures(void);
/* qb_main in two steps, for a program that prepares something after its
 * flags are parsed (a directory, a server) or reports after the runs:
 * qb_init parses the --benchmark_* flags, removing them from argc/argv,
 * and returns 0, or 2 on an unknown argument (then nothing was run and
 * qb_run must not be called); qb_run runs what the flags select and
 * returns 0, or 1 if a benchmark failed. qb_main(argc, argv) is qb_init
 * then qb_run. */
int qb_init(int *argc, char **argv);
int qb_run(void);

/* --- Inside a benchmark body ------------------------------------------ */

/* true while iterations remain (State::KeepRunning). */
bool qb_keep_running(qb_state *st);
/* How many iterations to run now: all of them on the first call, 0 on
 * the next (or at once after an error). One call per run, no cost per
 * iteration. */
uint64_t qb_batch(qb_state *st);
/* Iterations asked for in batches of n (State::KeepRunningBatch). */
bool qb_keep_running_batch(qb_state *st, uint64_t n);

int64_t qb_range_of(const qb_state *st, size_t i);
int qb_thread_index(const qb_state *st);
int qb_thread_count(const qb_state *st);
uint64_t qb_iterations_done(const qb_state *st);

void qb_pause_timing(qb_state *st);
void qb_resume_timing(qb_state *st);
/* With qb_manual_time: this iteration's time in seconds. */
void qb_set_iteration_time(qb_state *st, double seconds);

void qb_set_items_processed(qb_state *st, int64_t n);
void qb_set_bytes_processed(qb_state *st, int64_t n);
void qb_set_label(qb_state *st, const char *label);
/* Sets counter name of this thread to value (threads' values are summed
 * unless flags say otherwise). */
void qb_counter(qb_state *st, const char *name, double value, int flags);

/* Marks the run failed with msg (copied); counted by qb_failures. The
 * body must leave its loop and return: qb_keep_running and qb_batch
 * report no more iterations after it. */
void qb_skip_with_error(qb_state *st, const char *msg);
/* printf-style qb_skip_with_error. */
void qb_skip_with_errorf(qb_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keeps the compiler from dropping a value or the stores to memory
 * (benchmark::DoNotOptimize / ClobberMemory). */
#define qb_do_not_optimize(x) __asm__ volatile("" : : "r,m"(x) : "memory")
#define qb_clobber_memory() __asm__ volatile("" : : : "memory")

#ifdef __cplusplus
}
#endif

#endif /* QUAY_BENCH_H */
