// SPDX-License-Identifier: MIT
//
// bench_stats: the cost of quay's counters, gauges and histograms, and of
// snapshots and exports, with the obvious peers in the same binary.
//
//   counter_inc/quay          quay_counter_inc on ONE counter shared by all
//                             threads (each thread bumps its own shard)
//   counter_inc/shared_atomic std::atomic<uint64_t>::fetch_add(relaxed) on
//                             ONE shared 64-byte-aligned counter: the
//                             cache line moves between the cores
//   counter_inc/private_atomic fetch_add on a per-thread padded atomic:
//                             the floor for an atomic add
//   counter_inc/quay_noshard  quay counter in a registry with shards=1:
//                             quay's path with the sharing of shared_atomic
//   sched_getcpu              what a per-CPU design would add per bump
//   gauge_add/quay            quay_gauge_add on one shared gauge
//   hist_record/quay          quay_hist_record of precomputed latencies
//                             (log-spread 100 ns .. 10 ms) into one histogram
//   counter_read              quay_counter_read (sums the shards)
//   hist_read                 quay_hist_read (sums 1025 buckets x shards)
//   snapshot/N                quay_stats_snapshot of a registry of N
//                             counters, N/8 gauges and N/16 histograms
//   export_prometheus/N, export_json/N
//                             formatting that snapshot into a buffer
//
// Each multi-threaded benchmark runs with 1 and 2 threads (->Threads);
// ns/op is the time per operation of one thread (Google Benchmark's
// "Time" column with UseRealTime is wall time per iteration per thread).
#include <benchmark/benchmark.h>

#include <quay/quay.h>
#include <quay/stats.h>

#include <sched.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

struct alignas(64) PaddedAtomic {
	std::atomic<uint64_t> v{0};
};

PaddedAtomic g_shared;
PaddedAtomic g_private[64];

// One registry for the hot-path benchmarks, made before any runs.
struct Fixture {
	quay_stats *s = nullptr;
	quay_stats *s1 = nullptr; // shards = 1
	quay_counter *c = nullptr;
	quay_counter *c1 = nullptr;
	quay_gauge *g = nullptr;
	quay_hist *h = nullptr;
	std::vector<uint64_t> lat; // 4096 latencies

	Fixture()
	{
		struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
		if (quay_stats_create(nullptr, &s) != 0)
			std::abort();
		o.shards = 1;
		o.hist_shards = 1;
		if (quay_stats_create(&o, &s1) != 0)
			std::abort();
		if (quay_counter_create(s, "bench_total", "Bench.", nullptr, 0, &c) != 0 ||
		    quay_counter_create(s1, "bench_total", "Bench.", nullptr, 0, &c1) != 0 ||
		    quay_gauge_create(s, "bench_depth", nullptr, nullptr, 0, &g) != 0 ||
		    quay_hist_create(s, "bench_seconds", nullptr, nullptr, 0, &h) != 0)
			std::abort();
		uint64_t x = 88172645463325252ull;
		for (int i = 0; i < 4096; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			// 100 ns * 2^(0..16.6): 100 ns .. ~10 ms, log-spread
			unsigned e = (unsigned)(x % 17);
			lat.push_back(100 * ((uint64_t)1 << e) + (x >> 40) % (100u << e));
		}
	}
	~Fixture()
	{
		quay_stats_destroy(s);
		quay_stats_destroy(s1);
	}
};

Fixture &
fx()
{
	static Fixture f;
	return f;
}

void
BM_counter_inc_quay(benchmark::State &st)
{
	quay_counter *c = fx().c;
	for (auto _ : st)
		quay_counter_inc(c);
	st.SetItemsProcessed(st.iterations());
}

void
BM_counter_inc_quay_noshard(benchmark::State &st)
{
	quay_counter *c = fx().c1;
	for (auto _ : st)
		quay_counter_inc(c);
	st.SetItemsProcessed(st.iterations());
}

void
BM_counter_inc_shared_atomic(benchmark::State &st)
{
	for (auto _ : st)
		g_shared.v.fetch_add(1, std::memory_order_relaxed);
	st.SetItemsProcessed(st.iterations());
}

void
BM_counter_inc_private_atomic(benchmark::State &st)
{
	std::atomic<uint64_t> &v = g_private[st.thread_index() % 64].v;
	for (auto _ : st)
		v.fetch_add(1, std::memory_order_relaxed);
	st.SetItemsProcessed(st.iterations());
}

void
BM_sched_getcpu(benchmark::State &st)
{
	for (auto _ : st)
		benchmark::DoNotOptimize(sched_getcpu());
	st.SetItemsProcessed(st.iterations());
}

void
BM_gauge_add_quay(benchmark::State &st)
{
	quay_gauge *g = fx().g;
	for (auto _ : st)
		quay_gauge_add(g, 1);
	st.SetItemsProcessed(st.iterations());
}

void
BM_hist_record_quay(benchmark::State &st)
{
	quay_hist *h = fx().h;
	const uint64_t *lat = fx().lat.data();
	size_t i = (size_t)st.thread_index() * 1000;
	for (auto _ : st)
		quay_hist_record(h, lat[i++ & 4095]);
	st.SetItemsProcessed(st.iterations());
}

void
BM_counter_read(benchmark::State &st)
{
	quay_counter *c = fx().c;
	for (auto _ : st)
		benchmark::DoNotOptimize(quay_counter_read(c));
	st.SetItemsProcessed(st.iterations());
}

void
BM_hist_read(benchmark::State &st)
{
	quay_hist *h = fx().h;
	std::vector<char> mem(sizeof(struct quay_hist_data));
	auto *d = reinterpret_cast<struct quay_hist_data *>(mem.data());
	for (auto _ : st) {
		quay_hist_read(h, d);
		benchmark::DoNotOptimize(d->count);
	}
	st.SetItemsProcessed(st.iterations());
}

// A registry of n counters (labelled like per-queue series), n/8 gauges
// and n/16 histograms with some data.
quay_stats *
make_registry(size_t n)
{
	quay_stats *s;
	if (quay_stats_create(nullptr, &s) != 0)
		std::abort();
	for (size_t i = 0; i < n; i++) {
		std::string q = "queue-" + std::to_string(i % 64);
		std::string k = std::to_string(i / 64);
		struct quay_stats_label l[2] = {{"queue", q.c_str()}, {"kind", k.c_str()}};
		quay_counter *c;
		if (quay_counter_create(s, "quay_sent_total", "Messages sent.", l, 2, &c) != 0)
			std::abort();
		quay_counter_add(c, i * 12345);
		if (i % 8 == 0) {
			quay_gauge *g;
			if (quay_gauge_create(s, "quay_depth", "Depth.", l, 2, &g) != 0)
				std::abort();
			quay_gauge_set(g, (int64_t)i);
		}
		if (i % 16 == 0) {
			quay_hist *h;
			if (quay_hist_create(s, "quay_latency_seconds", "Latency.", l, 2, &h) != 0)
				std::abort();
			for (uint64_t v : fx().lat)
				quay_hist_record(h, v);
		}
	}
	return s;
}

void
BM_snapshot(benchmark::State &st)
{
	quay_stats *s = make_registry((size_t)st.range(0));
	for (auto _ : st) {
		quay_stats_snap *snap;
		if (quay_stats_snapshot(s, &snap) != 0)
			std::abort();
		quay_stats_snap_free(snap);
	}
	st.counters["metrics"] = (double)quay_stats_count(s);
	quay_stats_destroy(s);
}

template <int (*Fmt)(const quay_stats_snap *, char *, size_t, size_t *)>
void
BM_export(benchmark::State &st)
{
	quay_stats *s = make_registry((size_t)st.range(0));
	quay_stats_snap *snap;
	size_t len = 0;
	if (quay_stats_snapshot(s, &snap) != 0)
		std::abort();
	Fmt(snap, nullptr, 0, &len);
	std::vector<char> buf(len + 1);
	for (auto _ : st) {
		if (Fmt(snap, buf.data(), buf.size(), &len) != 0)
			std::abort();
		benchmark::DoNotOptimize(buf.data());
	}
	st.SetBytesProcessed((int64_t)(st.iterations() * len));
	st.counters["bytes"] = (double)len;
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

void
BM_export_prometheus(benchmark::State &st)
{
	BM_export<quay_stats_format_prometheus>(st);
}
void
BM_export_json(benchmark::State &st)
{
	BM_export<quay_stats_format_json>(st);
}

} // namespace

BENCHMARK(BM_counter_inc_quay)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_counter_inc_shared_atomic)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_counter_inc_private_atomic)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_counter_inc_quay_noshard)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_sched_getcpu)->Threads(1)->UseRealTime();
BENCHMARK(BM_gauge_add_quay)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_hist_record_quay)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_counter_read);
BENCHMARK(BM_hist_read);
BENCHMARK(BM_snapshot)->Arg(64)->Arg(1024);
BENCHMARK(BM_export_prometheus)->Arg(64)->Arg(1024);
BENCHMARK(BM_export_json)->Arg(64)->Arg(1024);

int
main(int argc, char **argv)
{
	fx(); // build the fixture before any timed run
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
