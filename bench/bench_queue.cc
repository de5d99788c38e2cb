// SPDX-License-Identifier: MIT
//
// bench_queue: what the queue's semantics cost, against the layers below
// it, in one binary and one run.
//
//   ring/PC:N        quay ring (MPMC, capacity 4096): push/pop an 8-byte value
//   pq/PC:N          quay pq (1 level, capacity 4096): push/pop an 8-byte value
//   pq_msg/PC:N      quay_msg_new + pq push of the pointer / pop + unref
//   queue/PC:N       quay_msg_new + quay_queue_send / receive + ack + unref
//                    (lease table, expiry FIFO, counters, histograms)
//   queue_reuse/PC:N the same with messages made once and recycled (the
//                    benchmark keeps a reference; a message is re-sent once
//                    its count is back to 1): the queue alone, without the
//                    pool's cross-thread alloc/free
//   queue_tsc/PC:N, queue_reuse_tsc/PC:N
//                    the same two with quay_queue_clock_tsc as the clock of
//                    the queue and of the pools (the default is
//                    clock_gettime(CLOCK_REALTIME))
//   fifo/PC:N/groups:G  the queue benchmark on a FIFO queue (issue 13): each
//                    message carries a group header; producer p sends to
//                    the groups g with g % N == p (groups < N: shared),
//                    round robin. Consumers also check that each group's
//                    messages from each producer arrive in send order.
//                    Same run as queue/PC:N, the standard queue (whose
//                    messages carry the same header, unused).
//   pair_pq, pair_pq_msg, pair_queue
//                    one thread: one message through and back, per call
//                    (pair_queue/clock:1: quay_queue_clock_tsc for the
//                    queue and the pool)
//   pair_dedup/mode:M  one thread, 64-byte bodies all different: send +
//                    receive + ack with no dedup (0), an id dedup header
//                    (1) or content dedup (2, XXH3-128 of body + group,
//                    a reference kept per remembered message); the cost
//                    per send is the difference to mode 0
//   delayed_1M       1M messages sent with not-before times spread over
//                    1000 ticks of 1 ms (fake clock): insert rate; then the
//                    clock steps 1 ms at a time and quay_queue_tick fires
//                    them: fire rate (time in tick only) and lateness
//                    (every message must be ready within one tick of its
//                    due time and never before it)
//   latency          one message in flight at a time, 1 producer, 1
//                    consumer sleeping in receive: send -> receive
//                    latency percentiles (wake-up included)
//
// N producers and N consumers move QUAY_BENCH_MSGS (default 2^19) messages
// per iteration. Consumers check every value arrives exactly once (count
// and sum); a mismatch ends the benchmark with SkipWithError. Manual time
// from start to the last thread's finish. Counters: items_per_second and
// ns_per_msg.
#include <benchmark/benchmark.h>

#include <sched.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <quay/quay.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/pq.h>
#include <quay/queue.h>
#include <quay/ring.h>
#include <quay/stats.h>

namespace {

using Clock = std::chrono::steady_clock;

uint64_t g_msgs = uint64_t{1} << 19;
std::atomic<int> g_failed{0};

// Every failed check ends its benchmark and makes the program exit 1.
void
fail(benchmark::State &st, const char *why)
{
	g_failed.store(1);
	st.SkipWithError(why);
}

inline void
relax(unsigned &spins)
{
	if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else {
		sched_yield();
	}
}

quay_pool *
make_pool(size_t count, bool tsc = false)
{
	quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = nullptr;

	if (tsc)
		o.clock = quay_queue_clock_tsc;

	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = static_cast<uint32_t>(count);
	if (quay_pool_create(count * 256, &o, &p) != 0)
		return nullptr;
	return p;
}

// The four flavours of a producer/consumer pair.
enum class Kind { ring, pq, pq_msg, queue, queue_reuse, queue_hdr, fifo };

constexpr size_t kReuse = 8192; // recycled messages per producer

struct Shared {
	Kind kind;
	quay_ring *ring = nullptr;
	quay_pq *pq = nullptr;
	quay_queue *q = nullptr;
	quay_pool *pool = nullptr;
	uint64_t per_producer = 0;
	int consumers = 0;
	std::atomic<uint64_t> left{0}; // messages not yet consumed
	std::atomic<uint64_t> sum{0};
	std::atomic<uint64_t> count{0};
	std::atomic<bool> go{false};
	std::atomic<int> bad{0};
	std::vector<quay_msg *> reuse[2]; // Kind::queue_reuse: per producer
	uint32_t groups = 0;              // Kind::fifo / queue_hdr
	int producers = 0;
	std::vector<uint64_t> last; // [group * producers + p]: last seq seen
};

// A message of group g (header "g<n>").
int
make_grouped(Shared *s, uint64_t v, uint32_t g, quay_msg **m)
{
	char gid[16];
	int n = std::snprintf(gid, sizeof(gid), "g%u", g);

	if (quay_msg_new_ex(s->pool, &v, sizeof(v), QUAY_MSG_HEADER_ROOM(1, 24), 0, m) != 0)
		return -1;
	return quay_msg_set_header(*m, QUAY_MSG_H_GROUP, gid, static_cast<size_t>(n));
}

void
produce(Shared *s, int p)
{
	while (!s->go.load(std::memory_order_acquire))
		;
	for (uint64_t i = 0; i < s->per_producer; i++) {
		uint64_t v = (static_cast<uint64_t>(p) << 40) | (i + 1);
		unsigned spins = 0;

		switch (s->kind) {
		case Kind::ring:
			while (quay_ring_push(s->ring, &v) != 0)
				relax(spins);
			break;
		case Kind::pq:
			while (quay_pq_push(s->pq, 0, &v) != 0)
				relax(spins);
			break;
		case Kind::queue_reuse: {
			// The benchmark keeps one reference to each message, so the
			// consumer's last unref never frees it: once the count is
			// back to 1 the queue is done with it and it is sent again.
			quay_msg *m = s->reuse[p][i % kReuse];

			while (quay_msg_refcount(m) != 1)
				relax(spins);
			std::atomic_thread_fence(std::memory_order_acquire); // after the consumer's unref
			spins = 0;
			quay_msg_set_body(m, &v, sizeof(v));
			quay_msg_set_attempts(m, 0);
			quay_msg_ref(m);
			while (quay_queue_send(s->q, m) != 0)
				relax(spins);
			break;
		}
		case Kind::queue_hdr:
		case Kind::fifo: {
			// Producer p's groups: p, p + N, p + 2N, ... (all of them
			// shared when there are fewer groups than producers).
			uint32_t np = static_cast<uint32_t>(s->producers);
			uint32_t mine = s->groups >= np ? s->groups / np : 1;
			uint32_t g = s->groups >= np ? static_cast<uint32_t>(p) + np * static_cast<uint32_t>(i % mine) :
			                               static_cast<uint32_t>(i % s->groups);
			quay_msg *m = nullptr;

			while (make_grouped(s, v, g, &m) != 0) {
				if (m != nullptr) {
					quay_msg_unref(m);
					m = nullptr;
				}
				relax(spins);
			}
			spins = 0;
			while (quay_queue_send(s->q, m) != 0)
				relax(spins);
			break;
		}
		case Kind::pq_msg:
		case Kind::queue: {
			quay_msg *m = nullptr;

			while (quay_msg_new(s->pool, &v, sizeof(v), &m) != 0)
				relax(spins);
			spins = 0;
			if (s->kind == Kind::pq_msg) {
				while (quay_pq_push(s->pq, 0, &m) != 0)
					relax(spins);
			} else {
				while (quay_queue_send(s->q, m) != 0)
					relax(spins);
			}
			break;
		}
		}
	}
	quay_pool_cache_flush(s->pool);
}

void
consume(Shared *s)
{
	uint64_t sum = 0, n = 0;

	while (!s->go.load(std::memory_order_acquire))
		;
	for (;;) {
		uint64_t v = 0;
		unsigned spins = 0;
		bool got = false;

		while (!got) {
			if (s->left.load(std::memory_order_relaxed) == 0)
				goto out;
			switch (s->kind) {
			case Kind::ring: got = quay_ring_pop(s->ring, &v) == 0; break;
			case Kind::pq: got = quay_pq_pop(s->pq, &v, nullptr) == 0; break;
			case Kind::pq_msg: {
				quay_msg *m = nullptr;
				if (quay_pq_pop(s->pq, &m, nullptr) == 0) {
					std::memcpy(&v, quay_msg_body(m), sizeof(v));
					quay_msg_unref(m);
					got = true;
				}
				break;
			}
			case Kind::queue:
			case Kind::queue_hdr:
			case Kind::fifo:
			case Kind::queue_reuse: {
				quay_lease l;
				if (quay_queue_receive(s->q, &l, 0) == 0) {
					std::memcpy(&v, quay_msg_body(l.msg), sizeof(v));
					if (s->kind == Kind::fifo) {
						// Per group and producer, in send order. One
						// message of a group is in flight at a time,
						// and the ack below orders this before the
						// next receive of the group.
						const void *gv;
						size_t gl;
						char gid[16] = {0};
						if (quay_msg_get_header(l.msg, QUAY_MSG_H_GROUP, &gv, &gl) == 0 &&
						    gl > 1 && gl < sizeof(gid)) {
							std::memcpy(gid, gv, gl);
							size_t k = std::strtoul(gid + 1, nullptr, 10) *
							        static_cast<size_t>(s->producers) +
							    (v >> 40);
							if ((v & ((uint64_t{1} << 40) - 1)) <= s->last[k])
								s->bad.fetch_add(1);
							s->last[k] = v & ((uint64_t{1} << 40) - 1);
						} else {
							s->bad.fetch_add(1);
						}
					}
					if (quay_queue_ack(s->q, &l) != 0)
						s->bad.fetch_add(1);
					quay_msg_unref(l.msg);
					got = true;
				}
				break;
			}
			}
			if (!got)
				relax(spins);
		}
		sum += v;
		n++;
		s->left.fetch_sub(1, std::memory_order_relaxed);
	}
out:
	s->sum.fetch_add(sum);
	s->count.fetch_add(n);
	quay_pool_cache_flush(s->pool);
}

void
run_pc(benchmark::State &st, Kind kind, bool tsc = false)
{
	const int pc = static_cast<int>(st.range(0));
	const uint32_t groups = st.range(1) > 0 ? static_cast<uint32_t>(st.range(1)) : 0;
	double secs = 0;
	uint64_t total = 0;

	quay_pool *pool = make_pool(8192 + 1024 * static_cast<size_t>(pc), tsc);
	quay_pool *reuse_pool = make_pool(kReuse * 2, tsc);
	for (auto _ : st) {
		Shared s;
		s.kind = kind;
		s.pool = pool;
		s.per_producer = g_msgs / static_cast<uint64_t>(pc);
		s.left = s.per_producer * static_cast<uint64_t>(pc);
		s.groups = groups;
		s.producers = pc;
		if (kind == Kind::fifo)
			s.last.assign(static_cast<size_t>(groups) * static_cast<size_t>(pc), 0);
		if (kind == Kind::ring) {
			quay_ring_create(4096, 8, 0, &s.ring);
		} else if (kind == Kind::queue || kind == Kind::queue_reuse || kind == Kind::queue_hdr ||
		    kind == Kind::fifo) {
			struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
			if (kind == Kind::queue_reuse)
				for (int p = 0; p < pc; p++)
					for (size_t i = 0; i < kReuse; i++) {
						quay_msg *m = nullptr;
						quay_msg_alloc(reuse_pool, 8, &m);
						s.reuse[p].push_back(m);
					}
			o.capacity = 4096;
			o.max_in_flight = 64;
			if (tsc)
				o.clock = quay_queue_clock_tsc;
			if (kind == Kind::fifo)
				o.flags = QUAY_QUEUE_FIFO;
			quay_queue_create(&o, &s.q);
		} else {
			quay_pq_opts o = QUAY_PQ_OPTS_INIT;
			o.levels = 1;
			o.capacity = 4096;
			o.elem_size = 8;
			quay_pq_create(&o, &s.pq);
		}
		std::vector<std::thread> th;
		for (int i = 0; i < pc; i++)
			th.emplace_back(consume, &s);
		for (int i = 0; i < pc; i++)
			th.emplace_back(produce, &s, i);
		auto t0 = Clock::now();
		s.go.store(true, std::memory_order_release);
		for (auto &t : th)
			t.join();
		auto t1 = Clock::now();
		double e = std::chrono::duration<double>(t1 - t0).count();
		st.SetIterationTime(e);
		secs += e;
		uint64_t n = s.per_producer * static_cast<uint64_t>(pc), want = 0;
		for (int p = 0; p < pc; p++)
			want += (static_cast<uint64_t>(p) << 40) * s.per_producer +
			    s.per_producer * (s.per_producer + 1) / 2;
		total += n;
		quay_ring_destroy(s.ring);
		quay_pq_destroy(s.pq);
		quay_queue_destroy(s.q);
		for (int p = 0; p < 2; p++)
			for (quay_msg *m : s.reuse[p])
				quay_msg_unref(m);
		if (s.count != n || s.sum != want || s.bad != 0) {
			fail(st, "lost, duplicated or failed messages");
			break;
		}
	}
	quay_pool_destroy(pool);
	quay_pool_destroy(reuse_pool);
	st.counters["items_per_second"] = benchmark::Counter(static_cast<double>(total) / secs);
	st.counters["ns_per_msg"] = benchmark::Counter(secs * 1e9 / static_cast<double>(total));
}

void
ring_t(benchmark::State &st)
{
	run_pc(st, Kind::ring);
}
void
pq_t(benchmark::State &st)
{
	run_pc(st, Kind::pq);
}
void
pq_msg_t(benchmark::State &st)
{
	run_pc(st, Kind::pq_msg);
}
void
queue_t(benchmark::State &st)
{
	run_pc(st, Kind::queue);
}
void
queue_reuse_t(benchmark::State &st)
{
	run_pc(st, Kind::queue_reuse);
}
void
queue_tsc_t(benchmark::State &st)
{
	run_pc(st, Kind::queue, true);
}
void
queue_reuse_tsc_t(benchmark::State &st)
{
	run_pc(st, Kind::queue_reuse, true);
}
void
queue_hdr_t(benchmark::State &st)
{
	run_pc(st, Kind::queue_hdr);
}
void
fifo_t(benchmark::State &st)
{
	run_pc(st, Kind::fifo);
}

// ---- one thread, per call ----------------------------------------------

void
pair_pq(benchmark::State &st)
{
	quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = nullptr;
	uint64_t n = 0;

	o.levels = 1;
	o.capacity = 1024;
	o.elem_size = 8;
	quay_pq_create(&o, &pq);
	for (auto _ : st) {
		uint64_t out = 0;
		if (quay_pq_push(pq, 0, &n) != 0 || quay_pq_pop(pq, &out, nullptr) != 0 || out != n) {
			fail(st, "pq pair failed");
			break;
		}
		n++;
	}
	quay_pq_destroy(pq);
	st.counters["items_per_second"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
}

void
pair_pq_msg(benchmark::State &st)
{
	quay_pool *pool = make_pool(1024);
	quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = nullptr;
	uint64_t n = 0;

	o.levels = 1;
	o.capacity = 1024;
	o.elem_size = 8;
	quay_pq_create(&o, &pq);
	for (auto _ : st) {
		quay_msg *m = nullptr, *out = nullptr;
		if (quay_msg_new(pool, &n, sizeof(n), &m) != 0 || quay_pq_push(pq, 0, &m) != 0 ||
		    quay_pq_pop(pq, &out, nullptr) != 0 || out != m) {
			fail(st, "pq pair failed");
			break;
		}
		quay_msg_unref(out);
		n++;
	}
	quay_pq_destroy(pq);
	quay_pool_destroy(pool);
	st.counters["items_per_second"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
}

// clock:0 the default clock (clock_gettime(CLOCK_REALTIME) for the pool's
// stamp and the queue's); clock:1 quay_queue_clock_tsc for both.
void
pair_queue(benchmark::State &st)
{
	const bool tsc = st.range(0) != 0;
	quay_pool *pool = make_pool(1024, tsc);
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = nullptr;
	uint64_t n = 0;

	o.capacity = 1024;
	if (tsc)
		o.clock = quay_queue_clock_tsc;
	quay_queue_create(&o, &q);
	for (auto _ : st) {
		quay_msg *m = nullptr;
		quay_lease l;
		if (quay_msg_new(pool, &n, sizeof(n), &m) != 0 || quay_queue_send(q, m) != 0 ||
		    quay_queue_receive(q, &l, 0) != 0 || l.msg != m || quay_queue_ack(q, &l) != 0) {
			fail(st, "queue pair failed");
			break;
		}
		quay_msg_unref(l.msg);
		n++;
	}
	quay_queue_destroy(q);
	quay_pool_destroy(pool);
	st.counters["items_per_second"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
}

// One thread: send + receive + ack of 64-byte bodies, all different, with
// no dedup, an id header, or content dedup (window 1 ms of real time, so
// the table and the pool hold about a millisecond's worth of messages).
void
pair_dedup(benchmark::State &st)
{
	const int mode = static_cast<int>(st.range(0));
	quay_pool_opts po = QUAY_POOL_OPTS_INIT;
	quay_pool *pool = nullptr;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = nullptr;
	uint64_t n = 0;
	unsigned char body[64];

	po.nclasses = 1;
	po.class_size[0] = 512;
	po.class_count[0] = 1u << 17;
	if (quay_pool_create((size_t{1} << 17) * 512, &po, &pool) != 0) {
		fail(st, "pool");
		return;
	}
	o.capacity = 1024;
	if (mode != 0) {
		o.dedup_window_ns = 1000000;
		o.dedup_capacity = 1u << 15;
	}
	if (mode == 2)
		o.flags = QUAY_QUEUE_CONTENT_DEDUP;
	if (quay_queue_create(&o, &q) != 0) {
		fail(st, "create");
		return;
	}
	std::memset(body, 0x5a, sizeof(body));
	for (auto _ : st) {
		quay_msg *m = nullptr;
		quay_lease l;
		std::memcpy(body, &n, sizeof(n));
		if (quay_msg_new(pool, body, sizeof(body), &m) != 0) {
			fail(st, "pool empty");
			break;
		}
		if (mode == 1) {
			char id[24];
			int k = std::snprintf(id, sizeof(id), "%llu", static_cast<unsigned long long>(n));
			quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, static_cast<size_t>(k));
		}
		if (quay_queue_send(q, m) != 0 || quay_queue_receive(q, &l, 0) != 0 || l.msg != m ||
		    quay_queue_ack(q, &l) != 0) {
			fail(st, "dedup pair failed (a false duplicate, or the table full)");
			break;
		}
		quay_msg_unref(l.msg);
		n++;
	}
	quay_queue_destroy(q);
	quay_pool_destroy(pool);
	st.counters["items_per_second"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
}

// ---- 1M delayed messages -------------------------------------------------

std::atomic<int64_t> g_fake{0};
int64_t
fake_clock(void *)
{
	return g_fake.load(std::memory_order_relaxed);
}

void
delayed_1M(benchmark::State &st)
{
	const size_t n = 1000000;
	const int64_t tick = 1000000, t0 = int64_t{1700000000} * 1000000000;
	quay_pool *pool = make_pool(n + 1024);

	for (auto _ : st) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		quay_queue *q = nullptr;
		std::vector<quay_msg *> msgs(n);
		uint64_t rng = 88172645463325252ull;
		size_t got = 0, early = 0, late = 0;
		int64_t worst = 0;
		double tick_secs = 0;

		g_fake = t0;
		o.capacity = n;
		o.max_in_flight = 1024;
		o.clock = fake_clock;
		o.tick_ns = tick;
		if (quay_queue_create(&o, &q) != 0) {
			fail(st, "create failed");
			break;
		}
		for (size_t i = 0; i < n; i++) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			if (quay_msg_alloc(pool, 8, &msgs[i]) != 0) {
				fail(st, "pool too small");
				return;
			}
			// Due 1 ns .. 1000 ms after t0, at any nanosecond.
			quay_msg_set_not_before_ns(msgs[i], t0 + 1 + static_cast<int64_t>(rng % (1000 * tick)));
		}
		auto a = Clock::now();
		for (size_t i = 0; i < n; i++)
			if (quay_queue_send(q, msgs[i]) != 0) {
				fail(st, "send failed");
				return;
			}
		auto b = Clock::now();
		double ins = std::chrono::duration<double>(b - a).count();
		for (int64_t t = t0 + tick; t <= t0 + 1001 * tick; t += tick) {
			g_fake = t;
			auto c = Clock::now();
			quay_queue_tick(q);
			tick_secs += std::chrono::duration<double>(Clock::now() - c).count();
			quay_lease ls[256];
			size_t k;
			while ((k = quay_queue_receive_batch(q, ls, 256, 0)) != 0) {
				for (size_t i = 0; i < k; i++) {
					int64_t due = quay_msg_not_before_ns(ls[i].msg);
					if (due > t)
						early++;
					if (t - due >= tick)
						late++;
					if (t - due > worst)
						worst = t - due;
					quay_queue_ack(q, &ls[i]);
					quay_msg_unref(ls[i].msg);
				}
				got += k;
			}
		}
		st.SetIterationTime(ins + tick_secs);
		quay_queue_destroy(q);
		st.counters["insert_per_second"] = benchmark::Counter(static_cast<double>(n) / ins);
		st.counters["fire_per_second"] = benchmark::Counter(static_cast<double>(n) / tick_secs);
		st.counters["max_late_ns"] = benchmark::Counter(static_cast<double>(worst));
		if (got != n || early != 0 || late != 0) {
			char buf[128];
			std::snprintf(buf, sizeof(buf), "got %zu of %zu, %zu early, %zu late by a tick or more", got, n,
			    early, late);
			fail(st, buf);
			break;
		}
	}
	quay_pool_destroy(pool);
}

// ---- latency --------------------------------------------------------------

int64_t
realtime()
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void
latency(benchmark::State &st)
{
	const int rounds = 20000;
	quay_pool *pool = make_pool(1024);
	quay_stats *reg = nullptr;
	quay_hist *h = nullptr;

	quay_stats_create(nullptr, &reg);
	quay_hist_create(reg, "lat", nullptr, nullptr, 0, &h);
	for (auto _ : st) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		quay_queue *q = nullptr;
		std::atomic<int> acked{0};
		int bad = 0;

		o.capacity = 64;
		quay_queue_create(&o, &q);
		std::thread c([&] {
			for (int i = 0; i < rounds; i++) {
				quay_lease l;
				if (quay_queue_receive(q, &l, int64_t{5} * 1000000000) != 0) {
					bad++;
					break;
				}
				quay_hist_record(h, static_cast<uint64_t>(realtime() - quay_msg_enqueued_ns(l.msg)));
				if (quay_queue_ack(q, &l) != 0)
					bad++;
				quay_msg_unref(l.msg);
				acked.store(i + 1, std::memory_order_release);
			}
			quay_pool_cache_flush(pool);
		});
		auto a = Clock::now();
		for (int i = 0; i < rounds && bad == 0; i++) {
			quay_msg *m = nullptr;
			unsigned spins = 0;
			while (quay_msg_new(pool, &i, sizeof(i), &m) != 0)
				relax(spins);
			quay_queue_send(q, m);
			spins = 0;
			while (acked.load(std::memory_order_acquire) != i + 1 && spins < 100000000)
				relax(spins);
		}
		c.join();
		st.SetIterationTime(std::chrono::duration<double>(Clock::now() - a).count());
		quay_pool_cache_flush(pool);
		quay_queue_destroy(q);
		if (bad != 0 || acked != rounds) {
			fail(st, "lost messages");
			break;
		}
	}
	quay_hist_data *d = new quay_hist_data;
	quay_hist_read(h, d);
	uint64_t p50 = 0, p99 = 0, p999 = 0;
	quay_hist_quantile(d, 0.5, &p50);
	quay_hist_quantile(d, 0.99, &p99);
	quay_hist_quantile(d, 0.999, &p999);
	st.counters["p50_ns"] = benchmark::Counter(static_cast<double>(p50));
	st.counters["p99_ns"] = benchmark::Counter(static_cast<double>(p99));
	st.counters["p999_ns"] = benchmark::Counter(static_cast<double>(p999));
	delete d;
	quay_stats_destroy(reg);
	quay_pool_destroy(pool);
}

} // namespace

BENCHMARK(pair_pq);
BENCHMARK(pair_pq_msg);
BENCHMARK(pair_queue)->ArgName("clock")->Arg(0)->Arg(1);
BENCHMARK(ring_t)->Name("ring")->ArgName("PC")->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pq_t)->Name("pq")->ArgName("PC")->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(pq_msg_t)->Name("pq_msg")->ArgName("PC")->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(queue_t)->Name("queue")->ArgName("PC")->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(queue_reuse_t)
    ->Name("queue_reuse")
    ->ArgName("PC")
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(queue_tsc_t)
    ->Name("queue_tsc")
    ->ArgName("PC")
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(queue_reuse_tsc_t)
    ->Name("queue_reuse_tsc")
    ->ArgName("PC")
    ->Arg(1)
    ->Arg(2)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(pair_dedup)->ArgName("mode")->Arg(0)->Arg(1)->Arg(2);
BENCHMARK(queue_hdr_t)
    ->Name("queue_hdr")
    ->ArgNames({"PC", "groups"})
    ->Args({1, 1})
    ->Args({2, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(fifo_t)
    ->Name("fifo")
    ->ArgNames({"PC", "groups"})
    ->Args({1, 1})
    ->Args({1, 100})
    ->Args({1, 10000})
    ->Args({2, 1})
    ->Args({2, 100})
    ->Args({2, 10000})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(delayed_1M)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(latency)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

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
