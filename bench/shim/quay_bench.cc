// SPDX-License-Identifier: MIT
//
// quay_bench.cc: the C shim over Google Benchmark (quay_bench.h). A
// qb_state is the benchmark::State itself and a qb_bench the
// benchmark::internal::Benchmark, cast: no wrapper object, no copy, and
// every call is one forward to the C++ method.
//
// Setup/Teardown take a plain function pointer of Google's signature, so
// the C hooks (function + argument) sit in a fixed table and each table
// slot has its own trampoline, instantiated from a template.
#include "quay_bench.h"

#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace {

std::atomic<int> g_failures{0};

inline benchmark::State &
S(qb_state *st)
{
	return *reinterpret_cast<benchmark::State *>(st);
}
inline const benchmark::State &
S(const qb_state *st)
{
	return *reinterpret_cast<const benchmark::State *>(st);
}
inline benchmark::internal::Benchmark *
B(qb_bench *b)
{
	return reinterpret_cast<benchmark::internal::Benchmark *>(b);
}
inline qb_bench *
Q(benchmark::internal::Benchmark *b)
{
	return reinterpret_cast<qb_bench *>(b);
}

// QB_COUNTER_* are Google's flags except QB_COUNTER_INVERT (Google's is
// bit 31, not an int enumerator in C).
static_assert(int{QB_COUNTER_RATE} == int{benchmark::Counter::kIsRate}, "counter flags");
static_assert(int{QB_COUNTER_AVG_THREADS} == int{benchmark::Counter::kAvgThreads}, "counter flags");
static_assert(int{QB_COUNTER_ITER_INVARIANT} == int{benchmark::Counter::kIsIterationInvariant}, "counter flags");
static_assert(int{QB_COUNTER_AVG_ITERATIONS} == int{benchmark::Counter::kAvgIterations}, "counter flags");

benchmark::Counter::Flags
flags_of(int f)
{
	int g = f & (QB_COUNTER_RATE | QB_COUNTER_AVG_THREADS | QB_COUNTER_ITER_INVARIANT | QB_COUNTER_AVG_ITERATIONS);
	if (f & QB_COUNTER_INVERT)
		g |= benchmark::Counter::kInvert;
	return static_cast<benchmark::Counter::Flags>(g);
}

constexpr size_t kHookSlots = 64;
struct Hook {
	qb_hook fn;
	void *arg;
};
Hook g_hooks[kHookSlots];
size_t g_nhooks = 0;

template <size_t I>
void
trampoline(const benchmark::State &st)
{
	g_hooks[I].fn(reinterpret_cast<const qb_state *>(&st), g_hooks[I].arg);
}

using Tramp = void (*)(const benchmark::State &);
template <size_t... I>
constexpr std::array<Tramp, sizeof...(I)>
make_tramps(std::index_sequence<I...>)
{
	return {{&trampoline<I>...}};
}
constexpr auto kTramps = make_tramps(std::make_index_sequence<kHookSlots>{});

// A slot for (fn, arg), or nullptr when the table is full.
Tramp
hook_slot(qb_hook fn, void *arg)
{
	if (g_nhooks == kHookSlots)
		return nullptr;
	g_hooks[g_nhooks] = Hook{fn, arg};
	return kTramps[g_nhooks++];
}

} // namespace

extern "C" {

qb_bench *
qb_register(const char *name, qb_fn fn, void *arg)
{
	if (name == nullptr || *name == '\0' || fn == nullptr)
		return nullptr;
	return Q(benchmark::RegisterBenchmark(name,
	    [fn, arg](benchmark::State &st) { fn(reinterpret_cast<qb_state *>(&st), arg); }));
}

#define QB_SET(call) \
	do { \
		if (b != nullptr) \
			B(b)->call; \
		return b; \
	} while (0)

qb_bench *
qb_arg(qb_bench *b, int64_t x)
{
	QB_SET(Arg(x));
}
qb_bench *
qb_args(qb_bench *b, const int64_t *v, size_t n)
{
	QB_SET(Args(std::vector<int64_t>(v, v + n)));
}
qb_bench *
qb_arg_name(qb_bench *b, const char *name)
{
	QB_SET(ArgName(name));
}
qb_bench *
qb_arg_names(qb_bench *b, const char *const *names, size_t n)
{
	QB_SET(ArgNames(std::vector<std::string>(names, names + n)));
}
qb_bench *
qb_range(qb_bench *b, int64_t lo, int64_t hi)
{
	QB_SET(Range(lo, hi));
}
qb_bench *
qb_dense_range(qb_bench *b, int64_t lo, int64_t hi, int step)
{
	QB_SET(DenseRange(lo, hi, step));
}
qb_bench *
qb_threads(qb_bench *b, int n)
{
	QB_SET(Threads(n));
}
qb_bench *
qb_manual_time(qb_bench *b)
{
	QB_SET(UseManualTime());
}
qb_bench *
qb_real_time(qb_bench *b)
{
	QB_SET(UseRealTime());
}
qb_bench *
qb_unit(qb_bench *b, enum qb_time_unit u)
{
	static const benchmark::TimeUnit units[] = {benchmark::kNanosecond, benchmark::kMicrosecond,
	    benchmark::kMillisecond, benchmark::kSecond};
	QB_SET(Unit(units[static_cast<unsigned>(u) & 3]));
}
qb_bench *
qb_iterations(qb_bench *b, int64_t n)
{
	QB_SET(Iterations(n));
}
qb_bench *
qb_min_time(qb_bench *b, double seconds)
{
	QB_SET(MinTime(seconds));
}
qb_bench *
qb_repetitions(qb_bench *b, int n, bool every_one)
{
	if (b != nullptr) {
		B(b)->Repetitions(n);
		if (n > 1)
			B(b)->ReportAggregatesOnly(!every_one);
	}
	return b;
}
qb_bench *
qb_setup(qb_bench *b, qb_hook fn, void *arg)
{
	if (b == nullptr || fn == nullptr)
		return nullptr;
	Tramp t = hook_slot(fn, arg);
	if (t == nullptr)
		return nullptr;
	B(b)->Setup(t);
	return b;
}
qb_bench *
qb_teardown(qb_bench *b, qb_hook fn, void *arg)
{
	if (b == nullptr || fn == nullptr)
		return nullptr;
	Tramp t = hook_slot(fn, arg);
	if (t == nullptr)
		return nullptr;
	B(b)->Teardown(t);
	return b;
}

void
qb_add_context(const char *key, const char *value)
{
	benchmark::AddCustomContext(key, value);
}

int
qb_main(int argc, char **argv)
{
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 2;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return g_failures.load() != 0 ? 1 : 0;
}

int
qb_failures(void)
{
	return g_failures.load();
}

int
qb_init(int *argc, char **argv)
{
	benchmark::Initialize(argc, argv);
	return benchmark::ReportUnrecognizedArguments(*argc, argv) ? 2 : 0;
}

int
qb_run(void)
{
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return g_failures.load() != 0 ? 1 : 0;
}

bool
qb_keep_running(qb_state *st)
{
	return S(st).KeepRunning();
}

uint64_t
qb_batch(qb_state *st)
{
	// KeepRunningBatch(max_iterations) is true exactly once (after the
	// start barrier, timer started) and false on the next call (stop
	// barrier, timer stopped); after an error it is false at once.
	benchmark::State &s = S(st);
	const benchmark::IterationCount n = s.max_iterations;
	return s.KeepRunningBatch(n) ? static_cast<uint64_t>(n) : 0;
}

bool
qb_keep_running_batch(qb_state *st, uint64_t n)
{
	return S(st).KeepRunningBatch(static_cast<benchmark::IterationCount>(n));
}

int64_t
qb_range_of(const qb_state *st, size_t i)
{
	return S(st).range(i);
}
int
qb_thread_index(const qb_state *st)
{
	return S(st).thread_index();
}
int
qb_thread_count(const qb_state *st)
{
	return S(st).threads();
}
uint64_t
qb_iterations_done(const qb_state *st)
{
	return static_cast<uint64_t>(S(st).iterations());
}

void
qb_pause_timing(qb_state *st)
{
	S(st).PauseTiming();
}
void
qb_resume_timing(qb_state *st)
{
	S(st).ResumeTiming();
}
void
qb_set_iteration_time(qb_state *st, double seconds)
{
	S(st).SetIterationTime(seconds);
}
void
qb_set_items_processed(qb_state *st, int64_t n)
{
	S(st).SetItemsProcessed(n);
}
void
qb_set_bytes_processed(qb_state *st, int64_t n)
{
	S(st).SetBytesProcessed(n);
}
void
qb_set_label(qb_state *st, const char *label)
{
	S(st).SetLabel(label);
}
void
qb_counter(qb_state *st, const char *name, double value, int flags)
{
	S(st).counters[name] = benchmark::Counter(value, flags_of(flags));
}

void
qb_skip_with_error(qb_state *st, const char *msg)
{
	g_failures.fetch_add(1);
	S(st).SkipWithError(msg); // copied into the run's result
}

void
qb_skip_with_errorf(qb_state *st, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	std::vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	qb_skip_with_error(st, buf);
}

} // extern "C"
