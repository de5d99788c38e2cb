// SPDX-License-Identifier: MIT
//
// bench_ring: the quay ring against its peers, in one binary and one run.
//
// Throughput ("<peer>/<PnCn>"): P producer and C consumer threads move a
// fixed number of 8-byte messages per iteration (QUAY_BENCH_MSGS, default
// 2^19, split evenly over the producers) through one queue of capacity 1024.
// Each message encodes (producer id, sequence 1..n). Every consumer checks
// that each producer's sequences reach it in strictly increasing order;
// after the run the counts, sums and sums of squares of every producer's
// sequences must add up to exactly what it sent. Any mismatch, or any
// queue call failing, ends the benchmark with SkipWithError (and the
// program exits 1). Peers:
//
//   quay_spsc[_bN]  quay ring, QUAY_RING_SP|QUAY_RING_SC (1P1C only);
//                   _bN: push_burst/pop_burst of N on both sides
//   quay_mpmc[_bN]  quay ring, flags 0
//   vyukov_mpmc     Dmitry Vyukov's bounded MPMC queue (peer_queues.h)
//   lamport_spsc    Lamport SPSC ring with cached indices (peer_queues.h,
//                   1P1C only)
//   ck_spsc         ck_ring_enqueue_spsc / ck_ring_dequeue_spsc (1P1C only)
//   ck_mpmc         ck_ring_enqueue_mpmc / ck_ring_dequeue_mpmc
//   wfcq            liburcu cds_wfcq (UNBOUNDED: producers never wait)
//   mutex           pthread mutex + 2 condvars + circular array, try ops
//   mutex_cv        the same queue sleeping on its condvars when full/empty
//
// All but mutex_cv retry on full/empty with the same policy (Backoff):
// kSpinLimit pause instructions, then sched_yield() per further failure.
// Threads are started for each iteration, wait on a start flag, and the
// time runs from that flag to the last thread's finish (manual time).
// The last producer to finish pushes one stop marker per consumer.
//
// 4P4C and 8P8C run 5 repetitions and report each one. A repetition is cut
// short once it has run QUAY_BENCH_CAP_S seconds (default 5): its threads
// are told to stop, what they moved still counts (and is still checked),
// and the counter capped=1 marks it.
//
// Latency ("latency/<peer>"): two threads pinned to two CPUs; the first
// pushes into ring A, the second pops it and pushes it into ring B, the
// first pops it. Each round trip is timed (rdtsc after lfence, calibrated
// against CLOCK_MONOTONIC) and p50/p99/p99.9 are reported in ns. "raw" is
// the floor: the two threads bounce a counter in one 64-byte-aligned line.
// The first thread checks every reply is the value it sent.
//
// Diagnostic counters: full_waits_per_msg / empty_waits_per_msg (failed
// pushes / pops per message moved) and yields_per_kmsg. Environment:
// QUAY_BENCH_MSGS, QUAY_BENCH_CAP_S, QUAY_BENCH_ROUNDS (round trips per
// latency iteration), QUAY_BENCH_FAULT=skip|dup (corrupt one message on
// purpose: every throughput benchmark must then fail its check).
#include <benchmark/benchmark.h>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "peers.h"
#include "peer_queues.h"

namespace qb {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kStop = ~uint64_t{0}; // stop marker (never a valid message)
constexpr int kSeqBits = 40;
constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
constexpr unsigned kSpinLimit = 64; // pauses before the first yield

struct Options {
	uint64_t msgs = uint64_t{1} << 19; // messages per throughput iteration
	double cap_s = 5.0;                // per-repetition time cap
	size_t rounds = 20000;             // timed round trips per latency iteration
	size_t warmup = 2000;              // untimed round trips before them
};
Options g_opt;
std::atomic<int> g_failed{0}; // benchmarks that failed a check
int g_fault = 0;              // QUAY_BENCH_FAULT: 1 skip, 2 duplicate
std::vector<int> g_cpus;      // CPUs we may run on
double g_ticks_per_ns = 1.0;

inline void
cpu_pause()
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// The one retry policy every peer gets on full/empty.
class Backoff {
public:
	void wait()
	{
		++waits;
		if (spins_ < kSpinLimit) {
			++spins_;
			cpu_pause();
		} else {
			++yields;
			sched_yield();
		}
	}
	void reset() { spins_ = 0; }

	uint64_t waits = 0; // failed attempts (diagnostics only)
	uint64_t yields = 0;

private:
	unsigned spins_ = 0;
};

inline uint64_t
ticks()
{
#if defined(__x86_64__) || defined(__i386__)
	_mm_lfence(); // do not read the TSC before earlier loads completed
	return __rdtsc();
#else
	return static_cast<uint64_t>(
	    std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
#endif
}

void
calibrate_ticks()
{
#if defined(__x86_64__) || defined(__i386__)
	const auto c0 = Clock::now();
	const uint64_t t0 = ticks();
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	const auto c1 = Clock::now();
	const uint64_t t1 = ticks();
	const double ns = std::chrono::duration<double, std::nano>(c1 - c0).count();
	g_ticks_per_ns = static_cast<double>(t1 - t0) / ns;
#endif
}

inline uint64_t
encode(int producer, uint64_t seq)
{
	return (static_cast<uint64_t>(producer) << kSeqBits) | seq;
}

// What one consumer saw, per producer. Kept on the consumer's stack.
struct Tally {
	uint64_t last[kMaxSide] = {};
	uint64_t count[kMaxSide] = {};
	uint64_t sum[kMaxSide] = {};
	uint64_t sq[kMaxSide] = {};
	uint64_t bad = 0;
	uint64_t first_bad = 0;
	uint64_t first_bad_prev = 0;
	uint64_t stops = 0;

	void add(uint64_t v, int nprod)
	{
		const uint64_t p = v >> kSeqBits;
		const uint64_t s = v & kSeqMask;
		if (__builtin_expect(p >= static_cast<uint64_t>(nprod) || s <= last[p], 0)) {
			if (bad++ == 0) {
				first_bad = v;
				first_bad_prev = p < static_cast<uint64_t>(nprod) ? last[p] : 0;
			}
			return;
		}
		last[p] = s;
		count[p]++;
		sum[p] += s;
		sq[p] += s * s;
	}
	void merge(const Tally &o)
	{
		for (int i = 0; i < kMaxSide; i++) {
			count[i] += o.count[i];
			sum[i] += o.sum[i];
			sq[i] += o.sq[i];
		}
		if (bad == 0 && o.bad != 0) {
			first_bad = o.first_bad;
			first_bad_prev = o.first_bad_prev;
		}
		bad += o.bad;
		stops += o.stops;
	}
};

// Per-thread results, written once at the end (own cache lines).
struct alignas(64) Out {
	Tally tally;
	uint64_t sent = 0;
	uint64_t waits = 0; // failed pushes (producer) or pops (consumer)
	uint64_t yields = 0;
	Clock::time_point finish;
};

// State shared by the threads of one iteration.
struct Shared {
	alignas(64) std::atomic<bool> go{false};
	alignas(64) std::atomic<bool> abort{false}; // cap reached or a call broke
	alignas(64) std::atomic<int> producers_left{0};
	alignas(64) std::atomic<uint64_t> stops_seen{0};
	alignas(64) std::atomic<int> ready{0};
	std::atomic<bool> broken{false}; // a queue call returned -1
	std::mutex mu;
	std::condition_variable cv;
	int done = 0;
	int total = 0;
};

void
arrive_and_wait(Shared &sh)
{
	sh.ready.fetch_add(1, std::memory_order_acq_rel);
	Backoff b;
	while (!sh.go.load(std::memory_order_acquire))
		b.wait();
}

void
depart(Shared &sh)
{
	std::lock_guard<std::mutex> lk(sh.mu);
	if (++sh.done == sh.total)
		sh.cv.notify_one();
}

inline bool
aborted(const Shared &sh)
{
	return sh.abort.load(std::memory_order_relaxed);
}

void
broke(Shared &sh)
{
	sh.broken.store(true, std::memory_order_relaxed);
	sh.abort.store(true, std::memory_order_relaxed);
}

// Push one value with the common retry policy; false if told to stop.
template <class Q>
bool
push_one(Q &q, Shared &sh, int id, uint64_t v, Backoff &b)
{
	for (;;) {
		const int rc = q.push(id, v);
		if (rc > 0) {
			b.reset();
			return true;
		}
		if (rc < 0) {
			broke(sh);
			return false;
		}
		if (aborted(sh))
			return false;
		b.wait();
	}
}

// B == 0: single push per message; otherwise push_burst of up to B.
template <class Q, size_t B>
void
producer(Q &q, Shared &sh, int id, uint64_t n, int ncons, Out &out)
{
	Backoff b;
	uint64_t sent = 0;
	bool stopped = false;

	// Self-test of the checks (QUAY_BENCH_FAULT): producer 0 replaces its
	// message 100 by one never expected (skip) or by a repeat of 99 (dup).
	const uint64_t fault_seq = (id == 0 && g_fault != 0 && n > 100) ? 100 : 0;
	const uint64_t fault_val = g_fault == 1 ? n + 1 : 99;
	auto seq_of = [&](uint64_t s) { return s == fault_seq ? fault_val : s; };

	arrive_and_wait(sh);
	if constexpr (B == 0) {
		while (sent < n) {
			if (!push_one(q, sh, id, encode(id, seq_of(sent + 1)), b)) {
				stopped = true;
				break;
			}
			// The abort flag sits alone in a line nobody writes until the
			// end: checking it after every call costs an L1 hit, and a
			// collapsed queue (one call per scheduler slice) still stops.
			++sent;
			if (aborted(sh)) {
				stopped = true;
				break;
			}
		}
	} else {
		uint64_t buf[B];
		while (sent < n && !stopped) {
			const size_t k = static_cast<size_t>(std::min<uint64_t>(B, n - sent));
			for (size_t i = 0; i < k; i++)
				buf[i] = encode(id, seq_of(sent + 1 + i));
			size_t done = 0;
			while (done < k) {
				const size_t m = q.push_burst(buf + done, k - done);
				if (m != 0) {
					done += m;
					b.reset();
				} else if (aborted(sh)) {
					stopped = true;
					break;
				} else {
					b.wait();
				}
			}
			sent += done;
			if (aborted(sh))
				stopped = true;
		}
	}
	out.sent = sent;
	// The last producer out pushes one stop per consumer: after every
	// other producer's last push, so behind all data in FIFO order.
	if (sh.producers_left.fetch_sub(1, std::memory_order_acq_rel) == 1 && !stopped) {
		for (int i = 0; i < ncons; i++)
			if (!push_one(q, sh, id, kStop, b))
				break;
	}
	out.waits = b.waits;
	out.yields = b.yields;
	out.finish = Clock::now();
	depart(sh);
}

template <class Q, size_t B>
void
consumer(Q &q, Shared &sh, int nprod, int ncons, Out &out)
{
	Tally t;
	Backoff b;

	arrive_and_wait(sh);
	for (;;) {
		if constexpr (B == 0) {
			uint64_t v;
			const int rc = q.pop(&v);
			if (rc > 0) {
				b.reset();
				if (v == kStop) {
					t.stops++;
					sh.stops_seen.fetch_add(1, std::memory_order_acq_rel);
					break;
				}
				t.add(v, nprod);
				if (aborted(sh))
					break;
				continue;
			}
			if (rc < 0) {
				broke(sh);
				break;
			}
		} else {
			uint64_t buf[B];
			const size_t k = q.pop_burst(buf, B);
			if (k != 0) {
				b.reset();
				uint64_t stops = 0;
				for (size_t i = 0; i < k; i++) {
					if (buf[i] == kStop)
						stops++;
					else
						t.add(buf[i], nprod);
				}
				if (stops != 0) {
					// A burst may take several stops: whoever is left
					// sees stops_seen reach ncons on an empty queue.
					t.stops += stops;
					sh.stops_seen.fetch_add(stops, std::memory_order_acq_rel);
					break;
				}
				if (aborted(sh))
					break;
				continue;
			}
		}
		// Empty. Every stop taken means every message before them is too.
		if (sh.stops_seen.load(std::memory_order_acquire) >= static_cast<uint64_t>(ncons) || aborted(sh))
			break;
		b.wait();
	}
	out.tally = t;
	out.waits = b.waits;
	out.yields = b.yields;
	out.finish = Clock::now();
	depart(sh);
}

// Single-threaded pop used to empty the queue after a run.
template <class Q>
auto
drain_one(Q &q, uint64_t *v, int) -> decltype(q.drain(v))
{
	return q.drain(v);
}
template <class Q>
int
drain_one(Q &q, uint64_t *v, long)
{
	return q.pop(v);
}

// 1 + 2 + ... + n and 1^2 + ... + n^2, mod 2^64 like the consumers' sums
// (divide before multiplying: the exact products overflow).
uint64_t
sum_to(uint64_t n)
{
	return n % 2 == 0 ? (n / 2) * (n + 1) : n * ((n + 1) / 2);
}
uint64_t
sum_sq_to(uint64_t n)
{
	uint64_t f[3] = {n, n + 1, 2 * n + 1};
	for (uint64_t &x : f)
		if (x % 2 == 0) {
			x /= 2;
			break;
		}
	for (uint64_t &x : f)
		if (x % 3 == 0) {
			x /= 3;
			break;
		}
	return f[0] * f[1] * f[2];
}

struct IterResult {
	double seconds = 0;
	uint64_t delivered = 0;
	uint64_t full_waits = 0;
	uint64_t empty_waits = 0;
	uint64_t yields = 0;
	bool capped = false;
	std::string error;
};

std::string
fmt(const char *f, unsigned long long a, unsigned long long b = 0, unsigned long long c = 0, unsigned long long d = 0)
{
	char buf[256];
	std::snprintf(buf, sizeof buf, f, a, b, c, d);
	return buf;
}

template <class Q, size_t B>
IterResult
run_once(Q &q, int P, int C, uint64_t per_producer, Clock::time_point deadline)
{
	IterResult r;
	Shared sh;
	sh.producers_left.store(P);
	sh.total = P + C;
	q.reset(C);

	std::vector<Out> outs(static_cast<size_t>(P + C));
	std::vector<std::thread> th;
	th.reserve(static_cast<size_t>(P + C));
	for (int c = 0; c < C; c++)
		th.emplace_back(consumer<Q, B>, std::ref(q), std::ref(sh), P, C,
		    std::ref(outs[static_cast<size_t>(P + c)]));
	for (int p = 0; p < P; p++)
		th.emplace_back(producer<Q, B>, std::ref(q), std::ref(sh), p, per_producer, C,
		    std::ref(outs[static_cast<size_t>(p)]));
	while (sh.ready.load(std::memory_order_acquire) < P + C)
		std::this_thread::yield();

	const auto t0 = Clock::now();
	sh.go.store(true, std::memory_order_release);
	{
		std::unique_lock<std::mutex> lk(sh.mu);
		if (!sh.cv.wait_until(lk, deadline, [&] { return sh.done == sh.total; })) {
			r.capped = true;
			sh.abort.store(true, std::memory_order_relaxed);
			sh.cv.wait(lk, [&] { return sh.done == sh.total; });
		}
	}
	for (auto &t : th)
		t.join();

	auto t1 = t0;
	for (size_t i = 0; i < outs.size(); i++) {
		t1 = std::max(t1, outs[i].finish);
		(i < static_cast<size_t>(P) ? r.full_waits : r.empty_waits) += outs[i].waits;
		r.yields += outs[i].yields;
	}
	r.seconds = std::chrono::duration<double>(t1 - t0).count();

	// Whatever a cut-short run left behind is checked too.
	Tally total;
	{
		Tally rest;
		uint64_t v;
		int rc;
		while ((rc = drain_one(q, &v, 0)) > 0) {
			if (v == kStop)
				rest.stops++;
			else
				rest.add(v, P);
		}
		if (rc < 0)
			sh.broken.store(true);
		total.merge(rest);
	}
	for (int c = 0; c < C; c++)
		total.merge(outs[static_cast<size_t>(P + c)].tally);

	if (sh.broken.load()) {
		r.error = "a queue call failed (returned an unexpected error)";
		return r;
	}
	if (total.bad != 0) {
		r.error =
		    fmt("order/identity check failed: %llu bad messages; first: producer %llu seq %llu after seq %llu",
		        total.bad, total.first_bad >> kSeqBits, total.first_bad & kSeqMask, total.first_bad_prev);
		return r;
	}
	for (int p = 0; p < P; p++) {
		const uint64_t n = outs[static_cast<size_t>(p)].sent;
		const auto i = static_cast<size_t>(p);
		if (!r.capped && n != per_producer) {
			r.error =
			    fmt("producer %llu sent %llu of %llu messages without being stopped", i, n, per_producer);
			return r;
		}
		const uint64_t want_sum = sum_to(n);
		const uint64_t want_sq = sum_sq_to(n);
		if (total.count[i] != n || total.sum[i] != want_sum || total.sq[i] != want_sq) {
			r.error = fmt(
			    "producer %llu sent %llu messages, consumers received %llu (or the wrong ones: sum %llu)",
			    i, n, total.count[i], total.sum[i]);
			return r;
		}
		r.delivered += n;
	}
	if (!r.capped && total.stops != static_cast<uint64_t>(C))
		r.error = fmt("%llu stop markers received, %llu sent", total.stops, static_cast<unsigned long long>(C));
	return r;
}

template <class Q, size_t B>
void
BM_throughput(benchmark::State &st, int P, int C)
{
	const uint64_t per = g_opt.msgs / static_cast<uint64_t>(P);
	std::unique_ptr<Q> q(new Q(P, C, per));
	const auto deadline =
	    Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(g_opt.cap_s));
	uint64_t delivered = 0, full_waits = 0, empty_waits = 0, yields = 0;
	bool capped = false;

	for (auto _ : st) {
		if (capped) { // out of time: the remaining iterations are empty
			st.SetIterationTime(0.0);
			continue;
		}
		IterResult r = run_once<Q, B>(*q, P, C, per, deadline);
		if (!r.error.empty()) {
			g_failed.fetch_add(1);
			st.SkipWithError(r.error.c_str());
			break;
		}
		st.SetIterationTime(r.seconds);
		delivered += r.delivered;
		full_waits += r.full_waits;
		empty_waits += r.empty_waits;
		yields += r.yields;
		capped = r.capped;
	}
	st.SetItemsProcessed(static_cast<int64_t>(delivered));
	st.counters["capped"] = capped ? 1 : 0;
	// How often the retry policy ran, per message moved (diagnostics).
	const double d = delivered != 0 ? static_cast<double>(delivered) : 1.0;
	st.counters["full_waits_per_msg"] = static_cast<double>(full_waits) / d;
	st.counters["empty_waits_per_msg"] = static_cast<double>(empty_waits) / d;
	st.counters["yields_per_kmsg"] = 1000.0 * static_cast<double>(yields) / d;
}

// ---------------------------------------------------------------------------
// Latency

// The floor: one 64-byte line. The first thread writes an odd value, the
// second answers with value + 1.
struct RawLine {
	alignas(64) std::atomic<uint64_t> line{0};
	char pad[64 - sizeof(std::atomic<uint64_t>)] = {};

	void reset() { line.store(0); }
	bool ping_send(uint64_t v)
	{
		line.store(v, std::memory_order_release);
		return true;
	}
	bool ping_recv(uint64_t *v)
	{
		const uint64_t x = line.load(std::memory_order_acquire);
		if (x & 1)
			return false;
		*v = x;
		return true;
	}
	bool pong_recv(uint64_t *v)
	{
		const uint64_t x = line.load(std::memory_order_acquire);
		if (!(x & 1))
			return false;
		*v = x;
		return true;
	}
	bool pong_send(uint64_t v)
	{
		line.store(v + 1, std::memory_order_release);
		return true;
	}
	static uint64_t reply(uint64_t v) { return v + 1; }
};

// Two queues: A carries pings, B carries the echoes.
template <class Q>
struct QueuePair {
	Q a{1, 1, 0};
	Q b{1, 1, 0};

	void reset() {}
	bool ping_send(uint64_t v) { return a.push(0, v) > 0; }
	bool ping_recv(uint64_t *v) { return b.pop(v) > 0; }
	bool pong_recv(uint64_t *v) { return a.pop(v) > 0; }
	bool pong_send(uint64_t v) { return b.push(0, v) > 0; }
	static uint64_t reply(uint64_t v) { return v; }
};

void
pin(std::thread &t, size_t which)
{
	if (g_cpus.size() < 2)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(g_cpus[which % g_cpus.size()], &set);
	pthread_setaffinity_np(t.native_handle(), sizeof set, &set);
}

struct LatResult {
	double seconds = 0;
	std::string error;
};

template <class PP>
LatResult
run_pingpong(PP &pp, std::vector<uint64_t> &samples)
{
	LatResult r;
	std::atomic<int> ready{0};
	std::atomic<bool> go{false};
	const size_t warm = g_opt.warmup, rounds = g_opt.rounds;
	uint64_t bad_sent = 0, bad_got = 0;
	bool bad = false;
	uint64_t tstart = 0, tend = 0;

	pp.reset();
	std::thread pong([&] {
		Backoff b;
		ready.fetch_add(1);
		while (!go.load(std::memory_order_acquire))
			b.wait();
		for (;;) {
			uint64_t v;
			if (!pp.pong_recv(&v)) {
				b.wait();
				continue;
			}
			b.reset();
			if (v == kStop)
				break;
			while (!pp.pong_send(v))
				b.wait();
			b.reset();
		}
	});
	std::thread ping([&] {
		Backoff b;
		ready.fetch_add(1);
		while (!go.load(std::memory_order_acquire))
			b.wait();
		for (size_t i = 0; i < warm + rounds; i++) {
			const uint64_t s = 2 * i + 1;
			uint64_t v = 0;
			if (i == warm)
				tstart = ticks();
			const uint64_t t0 = ticks();
			while (!pp.ping_send(s))
				b.wait();
			b.reset();
			while (!pp.ping_recv(&v))
				b.wait();
			const uint64_t t1 = ticks();
			b.reset();
			if (v != PP::reply(s)) {
				bad = true;
				bad_sent = s;
				bad_got = v;
				break;
			}
			if (i >= warm)
				samples.push_back(t1 - t0);
		}
		tend = ticks();
		while (!pp.ping_send(kStop))
			b.wait();
	});
	pin(ping, 0);
	pin(pong, 1);
	while (ready.load() < 2)
		std::this_thread::yield();
	go.store(true, std::memory_order_release);
	ping.join();
	pong.join();
	if (bad)
		r.error = fmt("echo check failed: sent %llu, got %llu back", bad_sent, bad_got);
	r.seconds = static_cast<double>(tend - tstart) / g_ticks_per_ns * 1e-9;
	return r;
}

template <class PP>
void
BM_latency(benchmark::State &st)
{
	std::unique_ptr<PP> pp(new PP());
	std::vector<uint64_t> samples;

	for (auto _ : st) {
		samples.reserve(samples.size() + g_opt.rounds);
		LatResult r = run_pingpong(*pp, samples);
		if (!r.error.empty()) {
			g_failed.fetch_add(1);
			st.SkipWithError(r.error.c_str());
			return;
		}
		st.SetIterationTime(r.seconds);
	}
	if (samples.empty())
		return;
	std::sort(samples.begin(), samples.end());
	auto pct = [&](double q) {
		size_t i = static_cast<size_t>(q * static_cast<double>(samples.size()));
		return static_cast<double>(samples[std::min(i, samples.size() - 1)]) / g_ticks_per_ns;
	};
	st.SetItemsProcessed(static_cast<int64_t>(samples.size()));
	st.counters["min_ns"] = pct(0.0);
	st.counters["p50_ns"] = pct(0.50);
	st.counters["p99_ns"] = pct(0.99);
	st.counters["p999_ns"] = pct(0.999);
	st.counters["pinned"] = g_cpus.size() >= 2 ? 1 : 0;
}

// ---------------------------------------------------------------------------
// Registration

struct Config {
	const char *name;
	int producers;
	int consumers;
	int reps; // > 1: report every repetition
};

const Config kConfigs[] = {
    {"1P1C", 1, 1, 1},
    {"2P2C", 2, 2, 1},
    {"4P4C", 4, 4, 5},
    {"8P8C", 8, 8, 5},
};

template <class Q, size_t B>
void
add_tput(const std::string &peer, const Config &c)
{
	const int P = c.producers, C = c.consumers;
	auto *b = benchmark::RegisterBenchmark((peer + "/" + c.name).c_str(),
	    [P, C](benchmark::State &st) { BM_throughput<Q, B>(st, P, C); });
	b->UseManualTime()->Unit(benchmark::kMillisecond);
	if (c.reps > 1)
		b->Repetitions(c.reps)->ReportAggregatesOnly(false);
}

template <class PP>
void
add_latency(const std::string &peer)
{
	benchmark::RegisterBenchmark(("latency/" + peer).c_str(), [](benchmark::State &st) { BM_latency<PP>(st); })
	    ->UseManualTime()
	    ->Unit(benchmark::kMicrosecond);
}

void
register_all()
{
	for (const Config &c : kConfigs) {
		const bool one_one = c.producers == 1 && c.consumers == 1;
		if (one_one) {
			add_tput<QuaySpsc, 0>("quay_spsc", c);
			add_tput<QuaySpsc, 1>("quay_spsc_b1", c);
			add_tput<QuaySpsc, 8>("quay_spsc_b8", c);
			add_tput<QuaySpsc, 32>("quay_spsc_b32", c);
		}
		add_tput<QuayMpmc, 0>("quay_mpmc", c);
		add_tput<QuayMpmc, 1>("quay_mpmc_b1", c);
		add_tput<QuayMpmc, 8>("quay_mpmc_b8", c);
		add_tput<QuayMpmc, 32>("quay_mpmc_b32", c);
		add_tput<VyukovMpmc, 0>("vyukov_mpmc", c);
		if (one_one) {
			add_tput<LamportSpsc, 0>("lamport_spsc", c);
			add_tput<CkSpsc, 0>("ck_spsc", c);
		}
		add_tput<CkMpmc, 0>("ck_mpmc", c);
		add_tput<Wfcq, 0>("wfcq", c);
		add_tput<MutexSpin, 0>("mutex", c);
		add_tput<MutexCv, 0>("mutex_cv", c);
	}
	add_latency<RawLine>("raw");
	add_latency<QueuePair<QuaySpsc>>("quay_spsc");
	add_latency<QueuePair<QuayMpmc>>("quay_mpmc");
	add_latency<QueuePair<VyukovMpmc>>("vyukov_mpmc");
	add_latency<QueuePair<LamportSpsc>>("lamport_spsc");
	add_latency<QueuePair<CkSpsc>>("ck_spsc");
	add_latency<QueuePair<MutexSpin>>("mutex");
}

void
read_env()
{
	if (const char *s = std::getenv("QUAY_BENCH_MSGS")) {
		const unsigned long long v = std::strtoull(s, nullptr, 0);
		if (v >= 64)
			g_opt.msgs = v;
	}
	if (const char *s = std::getenv("QUAY_BENCH_CAP_S")) {
		const double v = std::strtod(s, nullptr);
		if (v > 0)
			g_opt.cap_s = v;
	}
	if (const char *s = std::getenv("QUAY_BENCH_FAULT"))
		g_fault = std::string(s) == "skip" ? 1 : std::string(s) == "dup" ? 2 : 0;
	if (const char *s = std::getenv("QUAY_BENCH_ROUNDS")) {
		const unsigned long long v = std::strtoull(s, nullptr, 0);
		if (v >= 100)
			g_opt.rounds = static_cast<size_t>(v);
	}
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof set, &set) == 0)
		for (int i = 0; i < CPU_SETSIZE; i++)
			if (CPU_ISSET(i, &set))
				g_cpus.push_back(i);
}

} // namespace
} // namespace qb

int
main(int argc, char **argv)
{
	qb::read_env();
	qb::calibrate_ticks();
	qb::register_all();
	benchmark::AddCustomContext("quay_version", QUAY_VERSION_STRING);
	benchmark::AddCustomContext("msgs_per_iteration", std::to_string(qb::g_opt.msgs));
	benchmark::AddCustomContext("ring_capacity", std::to_string(qb::kCapacity));
	benchmark::AddCustomContext("cap_seconds_per_repetition", std::to_string(qb::g_opt.cap_s));
	benchmark::AddCustomContext("retry_policy", std::to_string(qb::kSpinLimit) + " x pause, then sched_yield");
	benchmark::AddCustomContext("tsc_ticks_per_ns", std::to_string(qb::g_ticks_per_ns));
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 2;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	// A failed check must not look like a pass to meson or scripts.
	return qb::g_failed.load() != 0 ? 1 : 0;
}
