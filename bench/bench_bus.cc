// SPDX-License-Identifier: MIT
//
// bench_bus: the bus against ZeroMQ inproc PUB/SUB, in one binary and one
// run.
//
//   publish_exact_1          one exact subscription; publish a batch of
//                            256, then drain it with receive_burst (one
//                            thread: the per-message cost of publish,
//                            delivery and receive)
//   fanout/N                 N subscriptions matching ("fan.>"); publish
//                            256, then drain every subscription. Counter
//                            deliveries/s = messages x N / time
//   fanout_batch/N           the same, published with one
//                            quay_bus_publish_batch of 256 per iteration
//   zmq_fanout/N             the same shape with ZeroMQ: one PUB socket,
//                            N SUB sockets (prefix "fan"), inproc, HWM
//                            above the batch, send 256 then drain each SUB
//                            with ZMQ_DONTWAIT
//   match_10k_hit            10,000 subscriptions of mixed patterns
//                            (m.<i>.x, m.*.<i>, m.<i>.>, <i>.*.z);
//                            publish to 64 subjects that match one each
//                            (cached), drain every 256: ns per publish
//   match_10k_miss           the same table, cache saturated first, each
//                            publish to a subject never seen before
//   fanout_threads/N         one publisher, N receiver threads sleeping in
//                            quay_sub_receive (BLOCK policy, capacity 4096);
//                            2^15 messages per iteration, which ends when
//                            every receiver counted them all (real time)
//   zmq_fanout_threads/N     the same with one SUB socket per thread
//                            (blocking zmq_recv, no HWM)
//   request_reply            round trip through a responder thread
//   routed_subs/N            issue 12 peer row: N subscriptions on
//                            "fan.>", 256 publishes timed, the drain not
//                            (PauseTiming): ns per publish
//   routed_queues/N          the same with N queues bound on "fan.>"
//                            (first queue gets the message, the others
//                            a copy): ns per publish, drain (receive +
//                            ack) not timed
//   filter_miss/N            N bindings on "f.x", binding i with filter
//                            "id = <i>"; each message has id = 3, so one
//                            matches and N - 1 filters miss: ns per
//                            publish (the slope over N is the cost of a
//                            miss)
//   durable_fanout4_bus/M    4 durable queues on one WAL (sync mode M:
//                            0 SYNC, 2 NONE) bound on "d.x": one publish
//                            per message (one appendv for the 4 ADDs)
//   durable_fanout4_sends/M  the peer: the same 4 queues, 4 separate
//                            quay_queue_send calls of 4 copies
//
// Every benchmark counts what arrived and fails with SkipWithError if it
// is not what was sent (the program then exits 1). Message bodies are 16
// bytes; the quay messages come from one pool, the publisher's reference
// is re-taken before each publish (no allocation in the loop).
#include <benchmark/benchmark.h>

#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <quay/bus.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include <stdlib.h>
#include <unistd.h>
#include <quay/msg.h>
#include <quay/pool.h>

namespace {

constexpr int kBatch = 256;
std::atomic<int> g_failed{0};

quay_pool *
pool()
{
	static quay_pool *p = [] {
		quay_pool *np = nullptr;
		if (quay_pool_create(size_t{256} << 20, nullptr, &np) != 0)
			std::abort();
		return np;
	}();
	return p;
}

quay_msg *
new_msg(uint64_t v)
{
	uint64_t body[2] = {v, ~v};
	quay_msg *m = nullptr;
	if (quay_msg_new(pool(), body, sizeof(body), &m) != 0)
		std::abort();
	return m;
}

void
fail(benchmark::State &st, const char *why)
{
	g_failed.store(1);
	st.SkipWithError(why);
}

quay_sub *
subscribe(quay_bus *b, const char *pat, size_t cap, enum quay_sub_policy pol)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	o.capacity = cap;
	o.policy = pol;
	o.flags = QUAY_SUB_NO_LATENCY;
	quay_sub *s = nullptr;
	if (quay_bus_subscribe(b, pat, &o, &s) != 0)
		std::abort();
	return s;
}

size_t
drain(quay_sub *s)
{
	quay_msg *m[64];
	size_t n, total = 0;
	while ((n = quay_sub_receive_burst(s, m, 64)) > 0) {
		for (size_t i = 0; i < n; i++)
			quay_msg_unref(m[i]);
		total += n;
	}
	return total;
}

void
BM_publish_exact_1(benchmark::State &st)
{
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	quay_sub *s = subscribe(b, "bench.exact", 1024, QUAY_SUB_BLOCK);
	quay_msg *m = new_msg(1);
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		for (int i = 0; i < kBatch; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "bench.exact", m) != 1) {
				fail(st, "publish did not deliver");
				break;
			}
		}
		sent += kBatch;
		got += drain(s);
	}
	if (got != sent)
		fail(st, "lost messages");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	st.SetItemsProcessed(int64_t(sent));
}

// One thread publishes kBatch messages on fan.x.y per round (how: the
// publish_round callable, which returns false on a wrong result), then
// drains each of the N subscriptions; every delivery is counted.
template <typename PublishRound>
static void
fanout_run(benchmark::State &st, PublishRound publish_round)
{
	const int n = int(st.range(0));
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	std::vector<quay_sub *> subs;
	for (int i = 0; i < n; i++)
		subs.push_back(subscribe(b, "fan.>", 1024, QUAY_SUB_BLOCK));
	quay_msg *m = new_msg(1);
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		if (!publish_round(b, m, n)) {
			fail(st, "a publish did not reach every subscription");
			break;
		}
		sent += kBatch;
		for (auto *s : subs)
			got += drain(s);
	}
	if (got != sent * uint64_t(n))
		fail(st, "lost deliveries");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	st.SetItemsProcessed(int64_t(sent));
	st.counters["deliveries/s"] = benchmark::Counter(double(got), benchmark::Counter::kIsRate);
}

void
BM_fanout(benchmark::State &st)
{
	fanout_run(st, [](quay_bus *b, quay_msg *m, int n) {
		for (int i = 0; i < kBatch; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "fan.x.y", m) != n)
				return false;
		}
		return true;
	});
}

// The same fan-out through quay_bus_publish_batch: kBatch messages per
// call (one lookup, and each subscription takes 64 at a time with one bulk
// push). ZeroMQ has no batched send, so its row stays per message.
void
BM_fanout_batch(benchmark::State &st)
{
	std::vector<quay_msg *> batch(static_cast<size_t>(kBatch));
	fanout_run(st, [&batch](quay_bus *b, quay_msg *m, int) {
		for (auto &x : batch) {
			quay_msg_ref(m);
			x = m;
		}
		return quay_bus_publish_batch(b, "fan.x.y", batch.data(), batch.size()) == kBatch;
	});
}

void
BM_zmq_fanout(benchmark::State &st)
{
	const int n = int(st.range(0));
	void *ctx = zmq_ctx_new();
	void *pub = zmq_socket(ctx, ZMQ_PUB);
	int hwm = 100000;
	zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
	zmq_bind(pub, "inproc://bench-fan");
	std::vector<void *> subs;
	for (int i = 0; i < n; i++) {
		void *s = zmq_socket(ctx, ZMQ_SUB);
		zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
		zmq_connect(s, "inproc://bench-fan");
		zmq_setsockopt(s, ZMQ_SUBSCRIBE, "fan", 3);
		subs.push_back(s);
	}
	// Slow joiners: probe until every SUB has seen one message.
	char buf[64];
	std::vector<bool> joined(size_t(n), false);
	for (int left = n, tries = 0; left > 0 && tries < 100000; tries++) {
		zmq_send(pub, "fan.probe", 9, 0);
		for (int i = 0; i < n; i++)
			while (zmq_recv(subs[size_t(i)], buf, sizeof(buf), ZMQ_DONTWAIT) >= 0)
				if (!joined[size_t(i)]) {
					joined[size_t(i)] = true;
					left--;
				}
	}
	uint64_t body[2] = {1, 2};
	char msg[7 + sizeof(body)];
	std::memcpy(msg, "fan.x.y", 7);
	std::memcpy(msg + 7, body, sizeof(body));
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		for (int i = 0; i < kBatch; i++)
			if (zmq_send(pub, msg, sizeof(msg), 0) != int(sizeof(msg))) {
				fail(st, "zmq_send failed");
				break;
			}
		sent += kBatch;
		for (auto *s : subs) {
			for (int k = 0; k < kBatch; k++) {
				int r = zmq_recv(s, buf, sizeof(buf), ZMQ_DONTWAIT);
				if (r < 0) {
					// Delivery is asynchronous inside zmq: wait for it.
					r = zmq_recv(s, buf, sizeof(buf), 0);
				}
				if (r == int(sizeof(msg)))
					got++;
			}
		}
	}
	if (got != sent * uint64_t(n))
		fail(st, "zmq lost deliveries");
	for (auto *s : subs)
		zmq_close(s);
	zmq_close(pub);
	zmq_ctx_term(ctx);
	st.SetItemsProcessed(int64_t(sent));
	st.counters["deliveries/s"] = benchmark::Counter(double(got), benchmark::Counter::kIsRate);
}

// 10,000 subscriptions of four pattern shapes.
struct Table10k {
	quay_bus *b = nullptr;
	std::vector<quay_sub *> subs;
	Table10k()
	{
		struct quay_bus_opts o = QUAY_BUS_OPTS_INIT;
		quay_bus_create(&o, &b);
		char pat[64];
		for (int i = 0; i < 10000; i++) {
			switch (i % 4) {
			case 0: std::snprintf(pat, sizeof(pat), "m.%d.x", i); break;
			case 1: std::snprintf(pat, sizeof(pat), "m.*.%d", i); break;
			case 2: std::snprintf(pat, sizeof(pat), "m.%d.>", i); break;
			default: std::snprintf(pat, sizeof(pat), "%d.*.z", i); break;
			}
			subs.push_back(subscribe(b, pat, 1024, QUAY_SUB_DROP_NEWEST));
		}
	}
	~Table10k() { quay_bus_destroy(b); }
};

void
BM_match_10k_hit(benchmark::State &st)
{
	Table10k t;
	std::vector<std::string> subj;
	std::vector<quay_sub *> target;
	for (int k = 0; k < 64; k++) {
		int i = k * 152; // a multiple of 4: "m.<i>.x" matches one subscription
		subj.push_back("m." + std::to_string(i) + ".x");
		target.push_back(t.subs[size_t(i)]);
	}
	quay_msg *m = new_msg(1);
	uint64_t sent = 0, got = 0;
	size_t k = 0;
	for (auto _ : st) {
		for (int i = 0; i < kBatch; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(t.b, subj[k].c_str(), m) != 1) {
				fail(st, "publish did not deliver");
				break;
			}
			k = (k + 1) & 63;
		}
		sent += kBatch;
		for (auto *s : target)
			got += drain(s);
	}
	if (got != sent)
		fail(st, "lost messages");
	quay_msg_unref(m);
	st.SetItemsProcessed(int64_t(sent));
}

void
BM_match_10k_miss(benchmark::State &st)
{
	Table10k t;
	char s[64];
	quay_msg *m = new_msg(1);
	// Saturate the cache of this table version with subjects never used again.
	for (int i = 0; i < 40000; i++) {
		std::snprintf(s, sizeof(s), "warm.%d", i);
		quay_msg_ref(m);
		quay_bus_publish(t.b, s, m);
	}
	uint64_t sent = 0, got = 0, expect = 0, seq = 0;
	for (auto _ : st) {
		for (int i = 0; i < kBatch; i++, seq++) {
			// m.<j>.x with j up to 40,000: 1 target when j < 10,000 and
			// j % 4 == 0 (m.<j>.x), or j % 4 == 2 (m.<j>.>), else 0;
			// the fourth token varies so every subject is new.
			uint64_t j = seq % 40000;
			std::snprintf(s, sizeof(s), "m.%llu.x.%llu", (unsigned long long)j,
			    (unsigned long long)(seq / 40000));
			quay_msg_ref(m);
			int r = quay_bus_publish(t.b, s, m);
			int want = (j < 10000 && j % 4 == 2) ? 1 : 0;
			if (r != want) {
				fail(st, "wrong match count");
				break;
			}
			expect += uint64_t(want);
		}
		sent += kBatch;
		st.PauseTiming();
		for (size_t i = 2; i < t.subs.size(); i += 4)
			got += drain(t.subs[i]);
		st.ResumeTiming();
	}
	if (got != expect)
		fail(st, "lost messages");
	quay_msg_unref(m);
	st.SetItemsProcessed(int64_t(sent));
}

void
BM_request_reply(benchmark::State &st)
{
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	quay_sub *svc = subscribe(b, "svc.echo", 1024, QUAY_SUB_BLOCK);
	std::thread responder([&] {
		quay_msg *req;
		while (quay_sub_receive(svc, &req, -1) == 0) {
			quay_msg *rep = new_msg(quay_msg_id(req));
			if (quay_bus_reply(b, req, rep) < 0)
				quay_msg_unref(rep);
			quay_msg_unref(req);
		}
	});
	uint64_t ok = 0;
	for (auto _ : st) {
		quay_msg *req = new_msg(ok), *rep = nullptr;
		uint64_t id = quay_msg_id(req);
		if (quay_bus_request(b, "svc.echo", req, &rep, 5000000000LL) != 0) {
			fail(st, "request failed");
			break;
		}
		uint64_t v;
		std::memcpy(&v, quay_msg_body(rep), sizeof(v));
		if (v != id || quay_msg_correlation_id(rep) != id) {
			fail(st, "wrong reply");
			quay_msg_unref(rep);
			break;
		}
		quay_msg_unref(rep);
		ok++;
	}
	quay_bus_unsubscribe(svc);
	responder.join();
	quay_bus_destroy(b);
	st.SetItemsProcessed(int64_t(ok));
}

// Threaded shape: one publisher (the benchmark thread), N receiver threads
// that sleep in a blocking receive. kThreadedMsgs per iteration; the
// iteration ends when every receiver has counted all of them.
constexpr uint64_t kThreadedMsgs = 1 << 15;

void
wait_counts(std::vector<std::atomic<uint64_t>> &got, uint64_t want)
{
	for (auto &g : got)
		while (g.load(std::memory_order_acquire) < want)
			std::this_thread::yield();
}

void
BM_fanout_threads(benchmark::State &st)
{
	const int n = int(st.range(0));
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	std::vector<quay_sub *> subs;
	std::vector<std::atomic<uint64_t>> got(static_cast<size_t>(n));
	std::vector<std::thread> th;
	for (int i = 0; i < n; i++) {
		struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
		o.policy = QUAY_SUB_BLOCK; /* lossless (not the default) */
		o.capacity = 4096;
		o.block_timeout_ns = -1;
		o.flags = QUAY_SUB_NO_LATENCY;
		quay_sub *s = nullptr;
		quay_bus_subscribe(b, "fan.>", &o, &s);
		subs.push_back(s);
		got[size_t(i)] = 0;
	}
	for (int i = 0; i < n; i++)
		th.emplace_back([&, i] {
			quay_msg *m[64];
			for (;;) {
				size_t k = quay_sub_receive_burst(subs[size_t(i)], m, 64);
				if (k == 0) {
					if (quay_sub_receive(subs[size_t(i)], &m[0], -1) != 0)
						break;
					k = 1;
				}
				for (size_t j = 0; j < k; j++)
					quay_msg_unref(m[j]);
				got[size_t(i)].fetch_add(k, std::memory_order_release);
			}
		});
	quay_msg *m = new_msg(1);
	uint64_t sent = 0;
	for (auto _ : st) {
		for (uint64_t i = 0; i < kThreadedMsgs; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "fan.x.y", m) != n) {
				fail(st, "publish did not reach every subscription");
				break;
			}
		}
		sent += kThreadedMsgs;
		wait_counts(got, sent);
	}
	for (auto *s : subs)
		quay_bus_unsubscribe(s);
	for (auto &t : th)
		t.join();
	uint64_t total = 0;
	for (auto &g : got)
		total += g.load();
	if (total != sent * uint64_t(n))
		fail(st, "lost deliveries");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	st.SetItemsProcessed(int64_t(sent));
	st.counters["deliveries/s"] = benchmark::Counter(double(total), benchmark::Counter::kIsRate);
}

void
BM_zmq_fanout_threads(benchmark::State &st)
{
	const int n = int(st.range(0));
	void *ctx = zmq_ctx_new();
	void *pub = zmq_socket(ctx, ZMQ_PUB);
	int hwm = 0; // no limit: the receivers drain every iteration
	zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
	zmq_bind(pub, "inproc://bench-fan-threads");
	std::vector<std::atomic<uint64_t>> got(static_cast<size_t>(n));
	std::vector<std::atomic<int>> joined(static_cast<size_t>(n));
	std::vector<std::thread> th;
	for (int i = 0; i < n; i++) {
		got[size_t(i)] = 0;
		joined[size_t(i)] = 0;
		th.emplace_back([&, i] {
			void *s = zmq_socket(ctx, ZMQ_SUB);
			int h = 0;
			zmq_setsockopt(s, ZMQ_RCVHWM, &h, sizeof(h));
			zmq_connect(s, "inproc://bench-fan-threads");
			zmq_setsockopt(s, ZMQ_SUBSCRIBE, "fan", 3);
			char buf[64];
			for (;;) {
				int r = zmq_recv(s, buf, sizeof(buf), 0);
				if (r < 0)
					break;
				if (r == 9 && std::memcmp(buf, "fan.probe", 9) == 0) {
					joined[size_t(i)].store(1);
					continue;
				}
				if (r == 8 && std::memcmp(buf, "fan.stop", 8) == 0)
					break;
				got[size_t(i)].fetch_add(1, std::memory_order_release);
			}
			zmq_close(s);
		});
	}
	for (bool all = false; !all;) {
		zmq_send(pub, "fan.probe", 9, 0);
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
		all = true;
		for (auto &j : joined)
			all = all && j.load();
	}
	uint64_t body[2] = {1, 2};
	char msg[7 + sizeof(body)];
	std::memcpy(msg, "fan.x.y", 7);
	std::memcpy(msg + 7, body, sizeof(body));
	uint64_t sent = 0;
	for (auto _ : st) {
		for (uint64_t i = 0; i < kThreadedMsgs; i++)
			if (zmq_send(pub, msg, sizeof(msg), 0) != int(sizeof(msg))) {
				fail(st, "zmq_send failed");
				break;
			}
		sent += kThreadedMsgs;
		wait_counts(got, sent);
	}
	zmq_send(pub, "fan.stop", 8, 0);
	for (auto &t : th)
		t.join();
	uint64_t total = 0;
	for (auto &g : got)
		total += g.load();
	if (total != sent * uint64_t(n))
		fail(st, "zmq lost deliveries");
	zmq_close(pub);
	zmq_ctx_term(ctx);
	st.SetItemsProcessed(int64_t(sent));
	st.counters["deliveries/s"] = benchmark::Counter(double(total), benchmark::Counter::kIsRate);
}


// ---- routing (issue 12) -------------------------------------------------

quay_queue *
bench_queue(const char *name, size_t cap)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = nullptr;
	o.name = name;
	o.capacity = cap;
	if (quay_queue_create(&o, &q) != 0)
		std::abort();
	return q;
}

size_t
qdrain(quay_queue *q)
{
	quay_lease l[64];
	size_t n, total = 0;
	while ((n = quay_queue_receive_batch(q, l, 64, 0)) > 0) {
		for (size_t i = 0; i < n; i++) {
			(void)quay_queue_ack(q, &l[i]);
			quay_msg_unref(l[i].msg);
		}
		total += n;
	}
	return total;
}

void
BM_routed_subs(benchmark::State &st)
{
	const int n = int(st.range(0));
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	std::vector<quay_sub *> subs;
	for (int i = 0; i < n; i++)
		subs.push_back(subscribe(b, "fan.>", 1024, QUAY_SUB_REJECT));
	quay_msg *m = new_msg(1);
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		for (int i = 0; i < kBatch; i++) {
			quay_msg_ref(m);
			if (quay_bus_publish(b, "fan.x.y", m) != n) {
				fail(st, "publish did not reach every subscription");
				break;
			}
		}
		sent += kBatch;
		st.PauseTiming();
		for (auto *s : subs)
			got += drain(s);
		st.ResumeTiming();
	}
	if (got != sent * uint64_t(n))
		fail(st, "lost deliveries");
	quay_msg_unref(m);
	quay_bus_destroy(b);
	st.SetItemsProcessed(int64_t(sent));
}

void
BM_routed_queues(benchmark::State &st)
{
	const int n = int(st.range(0));
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	std::vector<quay_queue *> qs;
	std::vector<quay_binding *> bs;
	for (int i = 0; i < n; i++) {
		std::string name = "rq" + std::to_string(i);
		qs.push_back(bench_queue(name.c_str(), 1024));
		quay_binding *bd = nullptr;
		if (quay_bus_bind(b, "fan.>", qs.back(), nullptr, &bd) != 0)
			std::abort();
		bs.push_back(bd);
	}
	std::vector<quay_msg *> ms(static_cast<size_t>(kBatch));
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		// Fresh messages: a queue keeps its own state in the message it
		// holds (the first queue takes the published one).
		st.PauseTiming();
		for (auto &x : ms)
			x = new_msg(1);
		st.ResumeTiming();
		for (auto *m : ms) {
			if (quay_bus_publish(b, "fan.x.y", m) != n) {
				fail(st, "publish did not reach every queue");
				break;
			}
		}
		sent += kBatch;
		st.PauseTiming();
		for (auto *q : qs)
			got += qdrain(q);
		st.ResumeTiming();
	}
	if (got != sent * uint64_t(n))
		fail(st, "lost deliveries");
	for (auto *bd : bs)
		quay_bus_unbind(bd);
	quay_bus_destroy(b);
	for (auto *q : qs)
		quay_queue_destroy(q);
	st.SetItemsProcessed(int64_t(sent));
}

void
BM_filter_miss(benchmark::State &st)
{
	const int n = int(st.range(0));
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	std::vector<quay_queue *> qs;
	std::vector<quay_binding *> bs;
	for (int i = 0; i < n; i++) {
		std::string name = "fq" + std::to_string(i), filter = "id = " + std::to_string(i);
		struct quay_bind_opts o = QUAY_BIND_OPTS_INIT;
		o.filter = filter.c_str();
		qs.push_back(bench_queue(name.c_str(), 1024));
		quay_binding *bd = nullptr;
		if (quay_bus_bind(b, "f.x", qs.back(), &o, &bd) != 0)
			std::abort();
		bs.push_back(bd);
	}
	std::vector<quay_msg *> ms(static_cast<size_t>(kBatch));
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		st.PauseTiming();
		for (auto &m : ms) {
			m = new_msg(3);
			quay_msg_set_header_str(m, "id", "3");
		}
		st.ResumeTiming();
		for (auto *m : ms)
			if (quay_bus_publish(b, "f.x", m) != 1) {
				fail(st, "publish did not reach exactly one queue");
				break;
			}
		sent += kBatch;
		st.PauseTiming();
		got += qdrain(qs[3]);
		st.ResumeTiming();
	}
	if (got != sent)
		fail(st, "lost deliveries");
	for (auto *bd : bs)
		quay_bus_unbind(bd);
	quay_bus_destroy(b);
	for (auto *q : qs)
		quay_queue_destroy(q);
	st.SetItemsProcessed(int64_t(sent));
}

struct durable4 {
	char dir[64];
	quay_wal *w = nullptr;
	quay_queue *q[4] = {};
	explicit durable4(unsigned mode)
	{
		struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
		snprintf(dir, sizeof(dir), "/tmp/quay-bench-route-XXXXXX");
		if (mkdtemp(dir) == nullptr)
			std::abort();
		wo.sync_mode = mode;
		if (quay_wal_open(dir, &wo, &w) != 0)
			std::abort();
		for (int i = 0; i < 4; i++) {
			struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
			std::string name = "dq" + std::to_string(i);
			o.name = name.c_str();
			o.capacity = 4096;
			o.wal = w;
			o.pool = pool();
			if (quay_queue_create(&o, &q[i]) != 0)
				std::abort();
		}
	}
	~durable4()
	{
		for (auto *x : q)
			quay_queue_destroy(x);
		quay_wal_close(w);
		std::string cmd = std::string("rm -rf ") + dir;
		if (system(cmd.c_str()) != 0)
			std::fprintf(stderr, "could not remove %s\n", dir);
	}
	size_t drain()
	{
		size_t n = 0;
		for (auto *x : q)
			n += qdrain(x);
		return n;
	}
};

constexpr int kDurBatch = 16;

void
BM_durable_fanout4_bus(benchmark::State &st)
{
	durable4 d(unsigned(st.range(0)));
	quay_bus *b = nullptr;
	quay_bus_create(nullptr, &b);
	quay_binding *bs[4];
	for (int i = 0; i < 4; i++)
		if (quay_bus_bind(b, "d.x", d.q[i], nullptr, &bs[i]) != 0)
			std::abort();
	std::vector<quay_msg *> ms(static_cast<size_t>(kDurBatch));
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		st.PauseTiming();
		for (auto &m : ms)
			m = new_msg(1);
		st.ResumeTiming();
		for (auto *m : ms)
			if (quay_bus_publish(b, "d.x", m) != 4) {
				fail(st, "publish did not reach the 4 durable queues");
				break;
			}
		sent += kDurBatch;
		st.PauseTiming();
		got += d.drain();
		st.ResumeTiming();
	}
	if (got != sent * 4)
		fail(st, "lost deliveries");
	for (auto *x : bs)
		quay_bus_unbind(x);
	quay_bus_destroy(b);
	st.SetItemsProcessed(int64_t(sent));
}

void
BM_durable_fanout4_sends(benchmark::State &st)
{
	durable4 d(unsigned(st.range(0)));
	std::vector<quay_msg *> ms(static_cast<size_t>(kDurBatch) * 4);
	uint64_t sent = 0, got = 0;
	for (auto _ : st) {
		st.PauseTiming();
		for (auto &m : ms)
			m = new_msg(1);
		st.ResumeTiming();
		for (size_t i = 0; i < ms.size(); i++)
			if (quay_queue_send(d.q[i % 4], ms[i]) != 0) {
				fail(st, "send refused");
				break;
			}
		sent += kDurBatch;
		st.PauseTiming();
		got += d.drain();
		st.ResumeTiming();
	}
	if (got != sent * 4)
		fail(st, "lost deliveries");
	st.SetItemsProcessed(int64_t(sent));
}

} // namespace

BENCHMARK(BM_publish_exact_1);
BENCHMARK(BM_fanout)->Arg(1)->Arg(4)->Arg(16)->Arg(64);
BENCHMARK(BM_fanout_batch)->Arg(1)->Arg(4)->Arg(16)->Arg(64);
BENCHMARK(BM_zmq_fanout)->Arg(1)->Arg(4)->Arg(16)->Arg(64);
BENCHMARK(BM_match_10k_hit);
BENCHMARK(BM_match_10k_miss);
BENCHMARK(BM_fanout_threads)->Arg(1)->Arg(4)->UseRealTime();
BENCHMARK(BM_zmq_fanout_threads)->Arg(1)->Arg(4)->UseRealTime();
BENCHMARK(BM_request_reply)->UseRealTime();
BENCHMARK(BM_routed_subs)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK(BM_routed_queues)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK(BM_filter_miss)->Arg(10)->Arg(100)->Arg(1000);
BENCHMARK(BM_durable_fanout4_bus)->Arg(QUAY_WAL_SYNC)->Arg(QUAY_WAL_NONE)->UseRealTime();
BENCHMARK(BM_durable_fanout4_sends)->Arg(QUAY_WAL_SYNC)->Arg(QUAY_WAL_NONE)->UseRealTime();

int
main(int argc, char **argv)
{
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return g_failed.load() ? 1 : 0;
}
