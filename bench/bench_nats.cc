// SPDX-License-Identifier: MIT
//
// bench_nats: what the NATS module costs, against plain libnats calls, in
// one binary and one run, through a nats-server this program starts on
// 127.0.0.1 (JetStream on, store in /tmp).
//
//   publish/plain    natsConnection_Publish of a 16-byte body, N times,
//                    until a subscriber (another connection) counted N
//   publish/bridge/direct:0
//                    quay_msg_new + quay_bus_publish on an exported subject
//                    (bridge thread -> NATS), until the same subscriber
//                    counted N: the bridge's whole path
//   publish/bridge/direct:1
//                    the same with QUAY_NATS_DIRECT (published to NATS on
//                    the publishing thread, from the bus's tap)
//   rr/plain         natsConnection_Request to a plain responder (one
//                    round trip per iteration)
//   rr/bridge        quay_bus_request on an exported subject, the same
//                    plain responder; the reply comes back through the
//                    handle's reply subscription into the bus (direct:0
//                    bridge thread, direct:1 QUAY_NATS_DIRECT)
//   rr/import        natsConnection_Request answered by a local quay
//                    responder (import -> bus -> quay_bus_reply -> reply
//                    bridge -> NATS)
//   jsq/W:w          JetStream queue: one producer quay_nats_queue_send
//                    (each acknowledged by the stream) while w workers,
//                    each on its own connection, receive + ack (AckSync)
//                    QUAY_BENCH_JS_MSGS (default 4000) messages
//   localq/W:w       the in-process quay_queue: send / receive + ack of the
//                    same number of messages, w consumers
//
// Every run checks its count (and the replies' bodies); a mismatch ends it
// with SkipWithError and a non-zero exit.
#include <benchmark/benchmark.h>

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include <quay/bus.h>
#include <quay/msg.h>
#include <quay/nats.h>
#include <quay/pool.h>
#include <quay/queue.h>

#include "nats_shim.h"

namespace {

using Clock = std::chrono::steady_clock;

const char *g_url;
quay_pool *g_pool;
std::atomic<int> g_failed{0};
uint64_t g_pub_msgs = 200000;
uint64_t g_js_msgs = 4000;

struct Counter {
	std::atomic<uint64_t> n{0};
};

void
count_cb(natsConnection *, natsSubscription *, natsMsg *m, void *c)
{
	static_cast<Counter *>(c)->n.fetch_add(1, std::memory_order_relaxed);
	natsMsg_Destroy(m);
}

void
echo_cb(natsConnection *nc, natsSubscription *, natsMsg *m, void *)
{
	if (natsMsg_GetReply(m) != nullptr)
		natsConnection_Publish(nc, natsMsg_GetReply(m), natsMsg_GetData(m), natsMsg_GetDataLength(m));
	natsMsg_Destroy(m);
}

quay_nats *
connect_quay(unsigned flags = 0)
{
	quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *n = nullptr;
	o.flags = flags;
	o.urls = &g_url;
	o.nurls = 1;
	o.export_capacity = 65536;
	if (quay_nats_connect(&o, &n) != 0)
		std::abort();
	return n;
}

// CPU time of the whole process (every thread: the bridge's, libnats's),
// in ns. A wall-clock rate on a loaded two-core machine mostly measures
// the scheduler; the CPU spent per message is the cost the module adds.
double
proc_cpu_ns()
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

void
cpu_per(benchmark::State &st, double cpu0, double items)
{
	st.counters["cpu_us_per_msg"] = (proc_cpu_ns() - cpu0) / 1e3 / items;
}

void
fail(benchmark::State &st, const char *why)
{
	g_failed.store(1);
	st.SkipWithError(why);
}

bool
wait_count(Counter &c, uint64_t want)
{
	for (int i = 0; i < 30000 && c.n.load() < want; i++)
		std::this_thread::sleep_for(std::chrono::microseconds(100));
	return c.n.load() == want;
}

void
publish_plain(benchmark::State &st)
{
	natsConnection *pub, *sub;
	natsSubscription *s;
	Counter c;
	natsConnection_ConnectTo(&pub, g_url);
	natsConnection_ConnectTo(&sub, g_url);
	natsConnection_Subscribe(&s, sub, "bench.pub", count_cb, &c);
	natsSubscription_SetPendingLimits(s, -1, -1);
	natsConnection_Flush(sub);
	double cpu0 = proc_cpu_ns();
	for (auto _ : st) {
		c.n = 0;
		auto t0 = Clock::now();
		for (uint64_t i = 0; i < g_pub_msgs; i++)
			natsConnection_Publish(pub, "bench.pub", "0123456789abcdef", 16);
		natsConnection_Flush(pub);
		if (!wait_count(c, g_pub_msgs))
			return fail(st, "plain: count mismatch");
		st.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
	}
	cpu_per(st, cpu0, static_cast<double>(st.iterations() * g_pub_msgs));
	st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * g_pub_msgs));
	natsSubscription_Destroy(s);
	natsConnection_Destroy(pub);
	natsConnection_Destroy(sub);
}

void
publish_bridge(benchmark::State &st)
{
	natsConnection *sub;
	natsSubscription *s;
	quay_nats *n = connect_quay(static_cast<unsigned>(st.range(0)));
	quay_bus *bus;
	Counter c;
	quay_bus_create(nullptr, &bus);
	quay_nats_export(n, bus, "bench.pub");
	natsConnection_ConnectTo(&sub, g_url);
	natsConnection_Subscribe(&s, sub, "bench.pub", count_cb, &c);
	natsSubscription_SetPendingLimits(s, -1, -1);
	natsConnection_Flush(sub);
	double cpu0 = proc_cpu_ns();
	for (auto _ : st) {
		c.n = 0;
		auto t0 = Clock::now();
		for (uint64_t i = 0; i < g_pub_msgs; i++) {
			quay_msg *m;
			while (quay_msg_new(g_pool, "0123456789abcdef", 16, &m) != 0)
				std::this_thread::yield();
			if (quay_bus_publish(bus, "bench.pub", m) != 1)
				return fail(st, "bridge: publish refused");
		}
		if (!wait_count(c, g_pub_msgs))
			return fail(st, "bridge: count mismatch");
		st.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
	}
	cpu_per(st, cpu0, static_cast<double>(st.iterations() * g_pub_msgs));
	st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * g_pub_msgs));
	quay_nats_close(n);
	quay_bus_destroy(bus);
	natsSubscription_Destroy(s);
	natsConnection_Destroy(sub);
}

void
rr_plain(benchmark::State &st)
{
	natsConnection *cli, *srv;
	natsSubscription *s;
	natsConnection_ConnectTo(&cli, g_url);
	natsConnection_ConnectTo(&srv, g_url);
	natsConnection_Subscribe(&s, srv, "bench.rr", echo_cb, nullptr);
	natsConnection_Flush(srv);
	double cpu0 = proc_cpu_ns();
	for (auto _ : st) {
		natsMsg *r = nullptr;
		if (natsConnection_Request(&r, cli, "bench.rr", "ping", 4, 5000) != NATS_OK ||
		    natsMsg_GetDataLength(r) != 4)
			return fail(st, "plain request failed");
		natsMsg_Destroy(r);
	}
	cpu_per(st, cpu0, static_cast<double>(st.iterations()));
	natsSubscription_Destroy(s);
	natsConnection_Destroy(cli);
	natsConnection_Destroy(srv);
}

void
rr_bridge(benchmark::State &st)
{
	natsConnection *srv;
	natsSubscription *s;
	quay_nats *n = connect_quay(static_cast<unsigned>(st.range(0)));
	quay_bus *bus;
	quay_bus_create(nullptr, &bus);
	quay_nats_export(n, bus, "bench.rr");
	natsConnection_ConnectTo(&srv, g_url);
	natsConnection_Subscribe(&s, srv, "bench.rr", echo_cb, nullptr);
	natsConnection_Flush(srv);
	double cpu0 = proc_cpu_ns();
	for (auto _ : st) {
		quay_msg *req, *rep;
		quay_msg_new(g_pool, "ping", 4, &req);
		if (quay_bus_request(bus, "bench.rr", req, &rep, 5000000000) != 0 || quay_msg_body_len(rep) != 4)
			return fail(st, "bridged request failed");
		quay_msg_unref(rep);
	}
	cpu_per(st, cpu0, static_cast<double>(st.iterations()));
	quay_nats_close(n);
	quay_bus_destroy(bus);
	natsSubscription_Destroy(s);
	natsConnection_Destroy(srv);
}

void
rr_import(benchmark::State &st)
{
	natsConnection *cli;
	quay_nats *n = connect_quay(static_cast<unsigned>(st.range(0)));
	quay_bus *bus;
	quay_sub *sub;
	std::atomic<bool> stop{false};
	quay_bus_create(nullptr, &bus);
	quay_bus_subscribe(bus, "bench.rri", nullptr, &sub);
	quay_nats_import(n, bus, "bench.rri", nullptr);
	quay_nats_flush(n, 2000000000);
	std::thread resp([&] {
		quay_msg *m;
		while (quay_sub_receive(sub, &m, -1) == 0) {
			quay_msg *r;
			quay_msg_new(g_pool, quay_msg_body(m), quay_msg_body_len(m), &r);
			quay_bus_reply(bus, m, r);
			quay_msg_unref(m);
		}
	});
	natsConnection_ConnectTo(&cli, g_url);
	double cpu0 = proc_cpu_ns();
	for (auto _ : st) {
		natsMsg *r = nullptr;
		if (natsConnection_Request(&r, cli, "bench.rri", "ping", 4, 5000) != NATS_OK ||
		    natsMsg_GetDataLength(r) != 4)
			return fail(st, "request to a quay responder failed");
		natsMsg_Destroy(r);
	}
	cpu_per(st, cpu0, static_cast<double>(st.iterations()));
	quay_nats_close(n);
	quay_bus_unsubscribe(sub);
	resp.join();
	quay_bus_destroy(bus);
	natsConnection_Destroy(cli);
	(void)stop;
}

void
jsq(benchmark::State &st)
{
	int w = static_cast<int>(st.range(0));
	static int run = 0;
	for (auto _ : st) {
		char name[32];
		std::snprintf(name, sizeof(name), "bench%d_%d", w, run++);
		quay_nats_queue_opts qo = QUAY_NATS_QUEUE_OPTS_INIT;
		qo.name = name;
		quay_nats *pn = connect_quay();
		quay_nats_queue *pq;
		if (quay_nats_queue_open(pn, &qo, &pq) != 0)
			return fail(st, "queue open");
		std::vector<quay_nats *> wn(w);
		std::vector<quay_nats_queue *> wq(w);
		for (int i = 0; i < w; i++) {
			wn[i] = connect_quay();
			quay_nats_queue_open(wn[i], &qo, &wq[i]);
		}
		std::atomic<uint64_t> acked{0};
		auto t0 = Clock::now();
		std::vector<std::thread> th;
		for (int i = 0; i < w; i++)
			th.emplace_back([&, i] {
				while (acked.load() < g_js_msgs) {
					quay_nats_lease l;
					if (quay_nats_queue_receive(wq[i], &l, 100000000) != 0)
						continue;
					if (quay_nats_queue_ack(wq[i], &l) == 0)
						acked.fetch_add(1);
				}
			});
		for (uint64_t i = 0; i < g_js_msgs; i++) {
			quay_msg *m;
			quay_msg_new(g_pool, "0123456789abcdef", 16, &m);
			if (quay_nats_queue_send(pq, m) != 0) {
				quay_msg_unref(m);
				g_failed.store(1);
			}
		}
		for (auto &t : th)
			t.join();
		st.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
		if (acked.load() != g_js_msgs)
			fail(st, "jsq: count mismatch");
		for (int i = 0; i < w; i++) {
			quay_nats_queue_close(wq[i]);
			quay_nats_close(wn[i]);
		}
		quay_nats_queue_close(pq);
		quay_nats_close(pn);
	}
	st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * g_js_msgs));
}

void
localq(benchmark::State &st)
{
	int w = static_cast<int>(st.range(0));
	for (auto _ : st) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		quay_queue *q;
		o.capacity = 4096;
		quay_queue_create(&o, &q);
		std::atomic<uint64_t> acked{0};
		auto t0 = Clock::now();
		std::vector<std::thread> th;
		for (int i = 0; i < w; i++)
			th.emplace_back([&] {
				while (acked.load() < g_js_msgs) {
					quay_lease l;
					if (quay_queue_receive(q, &l, 100000000) != 0)
						continue;
					if (quay_queue_ack(q, &l) == 0)
						acked.fetch_add(1);
				}
			});
		for (uint64_t i = 0; i < g_js_msgs; i++) {
			quay_msg *m;
			quay_msg_new(g_pool, "0123456789abcdef", 16, &m);
			while (quay_queue_send(q, m) == -EAGAIN)
				std::this_thread::yield();
		}
		for (auto &t : th)
			t.join();
		st.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
		if (acked.load() != g_js_msgs)
			fail(st, "localq: count mismatch");
		quay_queue_destroy(q);
	}
	st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * g_js_msgs));
}

} // namespace

BENCHMARK(publish_plain)->Name("publish/plain")->UseManualTime()->Unit(benchmark::kMillisecond);
// Arg 0: export bridge threads (the default); Arg 1: QUAY_NATS_DIRECT.
BENCHMARK(publish_bridge)
    ->Name("publish/bridge")
    ->ArgName("direct")
    ->Arg(0)
    ->Arg(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(rr_plain)->Name("rr/plain")->Unit(benchmark::kMicrosecond);
BENCHMARK(rr_bridge)->Name("rr/bridge")->ArgName("direct")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(rr_import)->Name("rr/import")->ArgName("direct")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
BENCHMARK(jsq)->Name("jsq")->ArgName("W")->Arg(1)->Arg(4)->Iterations(1)->UseManualTime()->Unit(
    benchmark::kMillisecond);
BENCHMARK(localq)->Name("localq")->ArgName("W")->Arg(1)->Arg(4)->Iterations(3)->UseManualTime()->Unit(
    benchmark::kMillisecond);

int
main(int argc, char **argv)
{
	if (const char *e = std::getenv("QUAY_BENCH_MSGS"))
		g_pub_msgs = std::strtoull(e, nullptr, 10);
	if (const char *e = std::getenv("QUAY_BENCH_JS_MSGS"))
		g_js_msgs = std::strtoull(e, nullptr, 10);
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	g_url = qb_nats_server_start();
	quay_pool_create(size_t{256} << 20, nullptr, &g_pool);
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	quay_pool_destroy(g_pool);
	qb_nats_server_stop();
	return g_failed.load() != 0 ? 1 : 0;
}
