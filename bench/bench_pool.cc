// SPDX-License-Identifier: MIT
//
// Message pool benchmarks (issue 3 section 5): alloc+free per second from
// one thread, from two threads on one pool, and with the free on another
// thread (producer -> SPSC ring -> consumer), each against malloc/free in
// the same binary; and the cost of a message with headers.
//
//   BM_pool_alloc_unref/{cache,nocache}   quay_msg_alloc(64) + quay_msg_unref
//   BM_pool_alloc_unref/cache_noclock     the same with an injected clock (no
//                                          clock_gettime): the pool's own cost
//   BM_malloc_free                         malloc(192) + free (same footprint)
//   ..._threads:2                          both threads on one pool / malloc
//   BM_cross_pool / BM_cross_malloc        allocate here, free on a helper thread
//   BM_msg_new_headers_unref               new(100 B) + 3 headers + reply-to + unref
//   BM_msg_new_unref                       new(100 B) + unref
#include <benchmark/benchmark.h>

#include <quay/quay.h>
#include <quay/msg.h>
#include <quay/pool.h>

#include <atomic>
#include <cstdlib>
#include <thread>

namespace {

quay_pool *g_pool;

quay_pool *
make_pool(uint32_t flags)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = nullptr;

	o.flags = flags;
	if (quay_pool_create(size_t(64) << 20, &o, &p) != 0)
		std::abort();
	return p;
}

int64_t
no_clock(void *)
{
	return 0;
}

void
setup_cache(const benchmark::State &)
{
	g_pool = make_pool(0);
}
// The same pool without the CLOCK_REALTIME read that stamps created_ns
// (about 20-50 ns here): the pool's own cost.
void
setup_cache_noclock(const benchmark::State &)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;

	o.clock = no_clock;
	if (quay_pool_create(size_t(64) << 20, &o, &g_pool) != 0)
		std::abort();
}
void
setup_nocache(const benchmark::State &)
{
	g_pool = make_pool(QUAY_POOL_NO_CACHE);
}
void
teardown_pool(const benchmark::State &)
{
	quay_pool_cache_flush(g_pool);
	if (quay_pool_destroy(g_pool) != 0)
		std::abort();
	g_pool = nullptr;
}

void
BM_pool_alloc_unref(benchmark::State &st)
{
	for (auto _ : st) {
		quay_msg *m = nullptr;
		if (quay_msg_alloc(g_pool, 64, &m) != 0)
			std::abort();
		benchmark::DoNotOptimize(m);
		quay_msg_unref(m);
	}
	// The thread's cache is flushed when the benchmark thread exits (or
	// at teardown for the main thread).
	st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_pool_alloc_unref)
    ->Name("BM_pool_alloc_unref/cache")
    ->Setup(setup_cache)
    ->Teardown(teardown_pool)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_pool_alloc_unref)
    ->Name("BM_pool_alloc_unref/cache_noclock")
    ->Setup(setup_cache_noclock)
    ->Teardown(teardown_pool)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_pool_alloc_unref)
    ->Name("BM_pool_alloc_unref/nocache")
    ->Setup(setup_nocache)
    ->Teardown(teardown_pool)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

void
BM_malloc_free(benchmark::State &st)
{
	for (auto _ : st) {
		void *p = std::malloc(QUAY_MSG_ENVELOPE + 64);
		benchmark::DoNotOptimize(p);
		std::free(p);
	}
	st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_malloc_free)->Threads(1)->Threads(2)->UseRealTime();

// ---- cross-thread free ---------------------------------------------------

// Pointers go through a quay SPSC ring to a helper thread that frees them.
template <typename Alloc, typename Free>
void
cross(benchmark::State &st, Alloc alloc, Free release)
{
	quay_ring *r = nullptr;
	std::atomic<bool> done{false};

	if (quay_ring_create(1024, sizeof(void *), QUAY_RING_SP | QUAY_RING_SC, &r) != 0)
		std::abort();
	std::thread consumer([&] {
		void *p;
		for (;;) {
			if (quay_ring_pop(r, &p) == 0) {
				release(p);
				continue;
			}
			if (done.load(std::memory_order_acquire) && quay_ring_count(r) == 0)
				break;
		}
	});
	for (auto _ : st) {
		void *p = alloc();
		while (p == nullptr) // pool momentarily empty: retry
			p = alloc();
		while (quay_ring_push(r, &p) != 0)
			;
	}
	done.store(true, std::memory_order_release);
	consumer.join();
	quay_ring_destroy(r);
	st.SetItemsProcessed(st.iterations());
}

void
BM_cross_pool(benchmark::State &st)
{
	cross(
	    st,
	    [] {
		    quay_msg *m = nullptr;
		    return quay_msg_alloc(g_pool, 64, &m) == 0 ? static_cast<void *>(m) : nullptr;
	    },
	    [](void *p) { quay_msg_unref(static_cast<quay_msg *>(p)); });
}
BENCHMARK(BM_cross_pool)->Name("BM_cross_pool/cache")->Setup(setup_cache)->Teardown(teardown_pool)->UseRealTime();
BENCHMARK(BM_cross_pool)->Name("BM_cross_pool/nocache")->Setup(setup_nocache)->Teardown(teardown_pool)->UseRealTime();

void
BM_cross_malloc(benchmark::State &st)
{
	cross(
	    st, [] { return std::malloc(QUAY_MSG_ENVELOPE + 64); }, [](void *p) { std::free(p); });
}
BENCHMARK(BM_cross_malloc)->UseRealTime();

// ---- a message with headers --------------------------------------------------

const char body[100] = "benchmark body";

void
BM_msg_new_unref(benchmark::State &st)
{
	for (auto _ : st) {
		quay_msg *m = nullptr;
		if (quay_msg_new(g_pool, body, sizeof(body), &m) != 0)
			std::abort();
		benchmark::DoNotOptimize(m);
		quay_msg_unref(m);
	}
	st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_msg_new_unref)->Setup(setup_cache)->Teardown(teardown_pool);

void
BM_msg_new_headers_unref(benchmark::State &st)
{
	const uint64_t trace = 42;
	for (auto _ : st) {
		quay_msg *m = nullptr;
		if (quay_msg_new(g_pool, body, sizeof(body), &m) != 0)
			std::abort();
		quay_msg_set_header(m, "content-type", "application/json", 16);
		quay_msg_set_header(m, "trace", &trace, sizeof(trace));
		quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "order-1234", 10);
		quay_msg_set_reply_to(m, "_INBOX.abc");
		quay_msg_set_priority(m, 5);
		benchmark::DoNotOptimize(m);
		quay_msg_unref(m);
	}
	st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_msg_new_headers_unref)->Setup(setup_cache)->Teardown(teardown_pool);
BENCHMARK(BM_msg_new_headers_unref)
    ->Name("BM_msg_new_headers_unref/noclock")
    ->Setup(setup_cache_noclock)
    ->Teardown(teardown_pool);

void
BM_msg_get_header(benchmark::State &st)
{
	quay_msg *m = nullptr;
	if (quay_msg_new(g_pool, body, sizeof(body), &m) != 0)
		std::abort();
	quay_msg_set_header(m, "content-type", "application/json", 16);
	quay_msg_set_header(m, "trace", "x", 1);
	quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "order-1234", 10);
	for (auto _ : st) {
		const void *v = nullptr;
		size_t len = 0;
		benchmark::DoNotOptimize(quay_msg_get_header(m, "content-type", &v, &len));
		benchmark::DoNotOptimize(v);
	}
	quay_msg_unref(m);
	st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_msg_get_header)->Setup(setup_cache)->Teardown(teardown_pool);

// Fan-out cost: ref N times, unref N + 1 times (the shared path's CAS).
void
BM_msg_ref_unref_shared(benchmark::State &st)
{
	quay_msg *m = nullptr;
	if (quay_msg_new(g_pool, body, 1, &m) != 0)
		std::abort();
	for (auto _ : st) {
		quay_msg_ref(m);
		quay_msg_unref(m);
	}
	quay_msg_unref(m);
	st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_msg_ref_unref_shared)->Setup(setup_cache)->Teardown(teardown_pool);

} // namespace

BENCHMARK_MAIN();
