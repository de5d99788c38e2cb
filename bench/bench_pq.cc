// SPDX-License-Identifier: MIT
//
// bench_pq: the priority queue against the plain quay ring, in one binary
// and one run, so the pq's cost per message over the ring is read off
// directly.
//
//   ring/<PnCn>          quay ring, MPMC (flags 0), capacity 1024
//   pq_<L>/<PnCn>        quay pq, strict, L = 1, 8 or 256 levels of
//                        capacity 1024; message i of a producer goes to
//                        level i % L
//   pq_w<L>/<PnCn>       the same in weighted mode
//   pair/ring, pair/pq_<L>  one thread: push one, pop one (no contention:
//                        the pure per-call cost)
//
// P producers and C consumers move QUAY_BENCH_MSGS (default 2^18) 8-byte
// messages per iteration (encoded producer, level, sequence). Each
// consumer checks that per producer and level the sequence increases and
// that the level reported by pop is the level the message was pushed to;
// the counts and sums must add up to what was sent. Any mismatch ends the
// benchmark with SkipWithError and the program exits 1. On full/empty
// threads spin 64 pauses then sched_yield. Time runs from a start flag to
// the last thread's finish (manual time); threads are not timed starting.
// Counters: items/s and s_per_msg (wall time / messages; "95n" = 95 ns).
#include <benchmark/benchmark.h>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <quay/quay.h>
#include <quay/pq.h>

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kSeqBits = 40;
constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
constexpr int kMaxThreads = 4;

uint64_t g_msgs = uint64_t{1} << 18;
std::atomic<int> g_failed{0};

inline uint64_t
enc(int p, unsigned level, uint64_t seq)
{
	return (static_cast<uint64_t>(p) << 56) | (static_cast<uint64_t>(level) << kSeqBits) | seq;
}

inline void
relax(unsigned &spins)
{
	if (spins < 64) {
		++spins;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else {
		sched_yield();
	}
}

// Adapters: push(producer, value, level), pop(&value, &level).
struct RingQ {
	quay_ring *r = nullptr;
	explicit RingQ(unsigned) { quay_ring_create(1024, 8, 0, &r); }
	~RingQ() { quay_ring_destroy(r); }
	unsigned levels() const { return 1; }
	int push(uint64_t v, unsigned) { return quay_ring_push(r, &v); }
	int pop(uint64_t *v, unsigned *level)
	{
		*level = 0;
		return quay_ring_pop(r, v);
	}
};

template <unsigned Flags>
struct PqQ {
	quay_pq *pq = nullptr;
	explicit PqQ(unsigned levels)
	{
		quay_pq_opts o = QUAY_PQ_OPTS_INIT;
		o.levels = levels;
		o.capacity = 1024;
		o.elem_size = 8;
		o.flags = Flags;
		quay_pq_create(&o, &pq);
	}
	~PqQ() { quay_pq_destroy(pq); }
	unsigned levels() const { return quay_pq_levels(pq); }
	int push(uint64_t v, unsigned level) { return quay_pq_push(pq, level, &v); }
	int pop(uint64_t *v, unsigned *level) { return quay_pq_pop(pq, v, level); }
};

struct alignas(64) Tally {
	uint64_t count = 0, sum = 0, bad = 0;
	std::vector<uint64_t> last; // per producer x level: last seq + 1
};

template <class Q>
void
run_threads(benchmark::State &st, unsigned levels, int np, int nc)
{
	for (auto _ : st) {
		Q q(levels);
		const unsigned L = q.levels();
		const uint64_t per = g_msgs / static_cast<uint64_t>(np);
		std::atomic<bool> go{false};
		std::atomic<uint64_t> received{0};
		std::vector<Tally> tallies(static_cast<size_t>(nc));
		std::vector<std::thread> ts;
		Clock::time_point end[2 * kMaxThreads];

		for (int c = 0; c < nc; c++) {
			ts.emplace_back([&, c] {
				Tally &t = tallies[static_cast<size_t>(c)];
				t.last.assign(static_cast<size_t>(np) * L, 0);
				while (!go.load(std::memory_order_acquire))
					;
				unsigned spins = 0;
				while (received.load(std::memory_order_relaxed) < per * static_cast<uint64_t>(np)) {
					uint64_t v;
					unsigned level;
					if (q.pop(&v, &level) != 0) {
						relax(spins);
						continue;
					}
					spins = 0;
					received.fetch_add(1, std::memory_order_relaxed);
					const uint64_t p = v >> 56, lv = (v >> kSeqBits) & 0xffff, s = v & kSeqMask;
					uint64_t &last = t.last[static_cast<size_t>(p) * L + lv];
					if (p >= static_cast<uint64_t>(np) || lv != level || s < last)
						t.bad++;
					last = s + 1;
					t.count++;
					t.sum += s;
				}
				end[np + c] = Clock::now();
			});
		}
		for (int p = 0; p < np; p++) {
			ts.emplace_back([&, p] {
				while (!go.load(std::memory_order_acquire))
					;
				unsigned spins = 0;
				for (uint64_t i = 0; i < per; i++) {
					const unsigned level = static_cast<unsigned>(i % L);
					while (q.push(enc(p, level, i), level) != 0)
						relax(spins);
					spins = 0;
				}
				end[p] = Clock::now();
			});
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(2));
		const auto t0 = Clock::now();
		go.store(true, std::memory_order_release);
		for (auto &t : ts)
			t.join();
		auto t1 = t0;
		for (int i = 0; i < np + nc; i++)
			t1 = std::max(t1, end[i]);
		uint64_t count = 0, sum = 0, bad = 0;
		for (auto &t : tallies) {
			count += t.count;
			sum += t.sum;
			bad += t.bad;
		}
		const uint64_t want_sum = static_cast<uint64_t>(np) * (per * (per - 1) / 2);
		if (bad != 0 || count != per * static_cast<uint64_t>(np) || sum != want_sum) {
			g_failed.fetch_add(1);
			st.SkipWithError("received messages do not match what was sent");
			return;
		}
		st.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
	}
	const double msgs = static_cast<double>(st.iterations()) *
	    static_cast<double>(g_msgs / static_cast<uint64_t>(np) * static_cast<uint64_t>(np));
	st.SetItemsProcessed(static_cast<int64_t>(msgs));
	// Seconds per message (printed with an SI prefix, e.g. 95n = 95 ns).
	st.counters["s_per_msg"] = benchmark::Counter(msgs, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// One thread, push one then pop one: the uncontended cost of a pair.
template <class Q>
void
run_pair(benchmark::State &st, unsigned levels)
{
	Q q(levels);
	const unsigned L = q.levels();
	uint64_t i = 0, bad = 0;
	for (auto _ : st) {
		uint64_t v;
		unsigned level = static_cast<unsigned>(i % L);
		if (q.push(i, level) != 0 || q.pop(&v, &level) != 0 || v != i || level != i % L)
			bad++;
		i++;
	}
	if (bad != 0) {
		g_failed.fetch_add(1);
		st.SkipWithError("push/pop pair returned the wrong message");
	}
	st.SetItemsProcessed(static_cast<int64_t>(st.iterations()));
}

void
ring_t(benchmark::State &st)
{
	run_threads<RingQ>(st, 1, static_cast<int>(st.range(0)), static_cast<int>(st.range(0)));
}
void
pq_t(benchmark::State &st)
{
	run_threads<PqQ<0>>(st, static_cast<unsigned>(st.range(1)), static_cast<int>(st.range(0)),
	    static_cast<int>(st.range(0)));
}
void
pqw_t(benchmark::State &st)
{
	run_threads<PqQ<QUAY_PQ_WEIGHTED>>(st, static_cast<unsigned>(st.range(1)), static_cast<int>(st.range(0)),
	    static_cast<int>(st.range(0)));
}
void
pair_ring(benchmark::State &st)
{
	run_pair<RingQ>(st, 1);
}
void
pair_pq(benchmark::State &st)
{
	run_pair<PqQ<0>>(st, static_cast<unsigned>(st.range(0)));
}
void
pair_pqw(benchmark::State &st)
{
	run_pair<PqQ<QUAY_PQ_WEIGHTED>>(st, static_cast<unsigned>(st.range(0)));
}

} // namespace

BENCHMARK(pair_ring);
BENCHMARK(pair_pq)->Arg(1)->Arg(8)->Arg(256);
BENCHMARK(pair_pqw)->Arg(8)->Arg(256);
BENCHMARK(ring_t)->ArgName("PC")->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pq_t)
    ->ArgNames({"PC", "levels"})
    ->Args({1, 1})
    ->Args({1, 8})
    ->Args({1, 256})
    ->Args({2, 1})
    ->Args({2, 8})
    ->Args({2, 256})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(pqw_t)
    ->ArgNames({"PC", "levels"})
    ->Args({1, 8})
    ->Args({2, 8})
    ->Args({2, 256})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

int
main(int argc, char **argv)
{
	if (const char *e = std::getenv("QUAY_BENCH_MSGS"))
		g_msgs = std::strtoull(e, nullptr, 10);
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return g_failed.load() != 0 ? 1 : 0;
}
