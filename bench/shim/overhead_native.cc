// SPDX-License-Identifier: MIT
//
// overhead_native.cc: the native C++ loops overhead.c compares the shim
// against (same bodies, same ring calls, registered first).
#include <benchmark/benchmark.h>

#include <cstdint>

#include <quay/quay.h>

namespace {

void
native_empty(benchmark::State &st)
{
	for (auto _ : st)
		benchmark::ClobberMemory();
}

void
native_ring(benchmark::State &st)
{
	quay_ring *r = nullptr;
	quay_ring_create(1024, sizeof(uint64_t), QUAY_RING_SP | QUAY_RING_SC, &r);
	uint64_t i = 0, bad = 0;
	for (auto _ : st) {
		uint64_t v = 0, x = i++;
		bad += !(quay_ring_push(r, &x) == 0 && quay_ring_pop(r, &v) == 0 && v == x);
	}
	quay_ring_destroy(r);
	if (bad != 0)
		st.SkipWithError("push/pop pair returned the wrong value");
	st.SetItemsProcessed(static_cast<int64_t>(i));
}

} // namespace

extern "C" void
qb_overhead_register_native(void)
{
	benchmark::RegisterBenchmark("native/empty", native_empty);
	benchmark::RegisterBenchmark("native/ring_pair", native_ring);
}
