// SPDX-License-Identifier: MIT
//
// Pollable descriptors (docs/POLLING.md).
//
//   BM_WakeLatency/fd        a consumer blocked in epoll_wait on the
//                            ring's descriptor; the producer pushes one
//                            timestamp, waits for the consumer to take it
//                            and go back to sleep, and so on: the time
//                            from push to the consumer holding it.
//   BM_WakeLatency/pop_wait  the peer: the consumer blocked in
//                            quay_ring_pop_wait (futex).
//   BM_EmptyPop/ring|pq      a pop on an empty object that has no
//                            descriptor (the path the fd hook adds its
//                            load to), single thread.
//   BM_Transfer/ring|pq|queue  1 producer, 1 consumer (pop/receive, yield
//                            when empty), no descriptor: the rate a user
//                            who never polls sees.
//
// For the cost to programs that never poll, build this file a second time
// against the library before the descriptors (docs/POLLING.md says how)
// with -DQUAY_BENCH_NO_FD, which leaves out the calls it lacks, and run
// the two binaries in turn. Every benchmark checks that
// each element arrives once and fails (SkipWithError) otherwise.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>

namespace {

int64_t
now_ns()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
spin_until(int64_t t)
{
	while (now_ns() < t) {
	}
}

double
pct(std::vector<int64_t> &v, double p)
{
	if (v.empty())
		return 0;
	size_t i = std::min(v.size() - 1, (size_t)(p * (double)v.size()));
	std::nth_element(v.begin(), v.begin() + (long)i, v.end());
	return (double)v[i];
}

#ifndef QUAY_BENCH_NO_FD
// mode 0: epoll on quay_ring_fd; 1: quay_ring_pop_wait.
void
BM_WakeLatency(benchmark::State &st)
{
	const int mode = (int)st.range(0);
	const int64_t gap_ns = 50 * 1000; // the consumer goes to sleep meanwhile
	quay_ring *r;
	std::atomic<uint64_t> acked{0};
	std::atomic<bool> stop{false};
	std::vector<int64_t> lat;
	uint64_t sent = 0, bad = 0;
	int ep = -1;

	if (quay_ring_create(64, 8, QUAY_RING_SP | QUAY_RING_SC, &r) != 0) {
		st.SkipWithError("ring");
		return;
	}
	if (mode == 0) {
		struct epoll_event ev;
		int fd = quay_ring_fd(r);
		std::memset(&ev, 0, sizeof ev);
		ev.events = EPOLLIN;
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (fd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			st.SkipWithError("fd");
			return;
		}
	}
	lat.reserve(1 << 20);
	std::thread consumer([&] {
		uint64_t v, expect = 1;
		for (;;) {
			if (mode == 0) {
				struct epoll_event ev;
				if (epoll_wait(ep, &ev, 1, 1000) == 0 && stop.load())
					return;
				while (quay_ring_pop(r, &v) == 0) {
					int64_t t = now_ns();
					uint64_t seq = v >> 48, ts = v & ((UINT64_C(1) << 48) - 1);
					if (seq != (expect++ & 0xffff))
						bad++;
					lat.push_back(t - (int64_t)ts);
					acked.fetch_add(1, std::memory_order_release);
				}
			} else {
				int rc = quay_ring_pop_wait(r, &v, 1000 * 1000 * 1000);
				if (rc == -ETIMEDOUT && stop.load())
					return;
				if (rc != 0)
					continue;
				int64_t t = now_ns();
				uint64_t seq = v >> 48, ts = v & ((UINT64_C(1) << 48) - 1);
				if (seq != (expect++ & 0xffff))
					bad++;
				lat.push_back(t - (int64_t)ts);
				acked.fetch_add(1, std::memory_order_release);
			}
		}
	});
	for (auto _ : st) {
		sent++;
		uint64_t v = (sent & 0xffff) << 48 | ((uint64_t)now_ns() & ((UINT64_C(1) << 48) - 1));
		if (quay_ring_push(r, &v) != 0) {
			bad++;
			break;
		}
		while (acked.load(std::memory_order_acquire) != sent) {
		}
		st.PauseTiming();
		spin_until(now_ns() + gap_ns);
		st.ResumeTiming();
	}
	stop.store(true);
	consumer.join();
	if (bad != 0 || lat.size() != sent) {
		st.SkipWithError("lost, duplicated or reordered element");
	} else {
		st.counters["p50_ns"] = pct(lat, 0.50);
		st.counters["p99_ns"] = pct(lat, 0.99);
		st.counters["min_ns"] = pct(lat, 0.0);
	}
	if (ep >= 0)
		close(ep);
	quay_ring_destroy(r);
}
BENCHMARK(BM_WakeLatency)->Arg(0)->Arg(1)->ArgName("fd0_popwait1")->UseRealTime()->Iterations(20000);
#endif

// 0: ring, 1: pq.
void
BM_EmptyPop(benchmark::State &st)
{
	uint64_t v;
	quay_ring *r = nullptr;
	quay_pq *pq = nullptr;
	struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;
	po.levels = 4;
	po.capacity = 64;
	po.elem_size = 8;
	if (quay_ring_create(64, 8, 0, &r) != 0 || quay_pq_create(&po, &pq) != 0) {
		st.SkipWithError("create");
		return;
	}
	for (auto _ : st) {
		int rc = st.range(0) == 0 ? quay_ring_pop(r, &v) : quay_pq_pop(pq, &v, nullptr);
		benchmark::DoNotOptimize(rc);
		if (rc != -EAGAIN) {
			st.SkipWithError("not empty");
			break;
		}
	}
	quay_ring_destroy(r);
	quay_pq_destroy(pq);
}
BENCHMARK(BM_EmptyPop)->Arg(0)->Arg(1)->ArgName("ring0_pq1");

// 0: ring (MPMC), 1: pq, 2: queue. n elements per iteration.
void
BM_Transfer(benchmark::State &st)
{
	const int kind = (int)st.range(0);
	const uint64_t n = 100000;
	quay_ring *r = nullptr;
	quay_pq *pq = nullptr;
	quay_queue *q = nullptr;
	quay_pool *pool = nullptr;
	struct quay_pq_opts po = QUAY_PQ_OPTS_INIT;
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	uint64_t bad = 0, total = 0;

	po.levels = 4;
	po.capacity = 256;
	po.elem_size = 8;
	qo.capacity = 1024;
	if (quay_ring_create(256, 8, 0, &r) != 0 || quay_pq_create(&po, &pq) != 0 || quay_queue_create(&qo, &q) != 0 ||
	    quay_pool_create((size_t)16 << 20, nullptr, &pool) != 0) {
		st.SkipWithError("create");
		return;
	}
	for (auto _ : st) {
		std::thread prod([&] {
			for (uint64_t i = 0; i < n; i++) {
				if (kind == 0) {
					while (quay_ring_push(r, &i) != 0)
						std::this_thread::yield();
				} else if (kind == 1) {
					while (quay_pq_push(pq, (unsigned)(i & 3), &i) != 0)
						std::this_thread::yield();
				} else {
					quay_msg *m;
					while (quay_msg_new(pool, &i, sizeof i, &m) != 0)
						std::this_thread::yield();
					while (quay_queue_send(q, m) != 0)
						std::this_thread::yield();
				}
			}
		});
		uint64_t got = 0, sum = 0, v;
		while (got < n) {
			int rc;
			if (kind == 0) {
				rc = quay_ring_pop(r, &v);
			} else if (kind == 1) {
				rc = quay_pq_pop(pq, &v, nullptr);
			} else {
				quay_lease l;
				rc = quay_queue_receive(q, &l, 0);
				if (rc == 0) {
					std::memcpy(&v, quay_msg_body(l.msg), sizeof v);
					quay_queue_ack(q, &l);
					quay_msg_unref(l.msg);
				}
			}
			if (rc == 0) {
				got++;
				sum += v;
			} else {
				std::this_thread::yield();
			}
		}
		prod.join();
		if (sum != n * (n - 1) / 2)
			bad++;
		total += n;
	}
	if (bad)
		st.SkipWithError("lost or duplicated element");
	st.SetItemsProcessed((int64_t)total);
	quay_ring_destroy(r);
	quay_pq_destroy(pq);
	quay_queue_destroy(q);
	quay_pool_destroy(pool);
}
BENCHMARK(BM_Transfer)->Arg(0)->Arg(1)->Arg(2)->ArgName("ring0_pq1_queue2")->UseRealTime()->MinTime(0.5);

} // namespace

BENCHMARK_MAIN();
