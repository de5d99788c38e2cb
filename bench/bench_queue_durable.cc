// SPDX-License-Identifier: MIT
// Durable queue sends (docs/DURABILITY.md): quay_queue_send and
// quay_queue_send_batch(32) on a queue logging to the WAL in SYNC,
// INTERVAL and NONE modes, from 1 and 8 threads; peers in the same binary:
// write()+fdatasync() per message (the naive baseline) and SQLite in WAL
// mode as a durable queue (one INSERT per transaction, synchronous=FULL,
// a connection per thread, busy_timeout). Every benchmark checks its
// result: the queue is reopened and its restored messages counted; the
// baseline's file size and the SQLite row count are checked.
// Files go under $QUAY_BENCH_DIR or a mkdtemp in /var/tmp, removed after.
#include <benchmark/benchmark.h>

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#ifdef QUAY_BENCH_ROCKSDB
#include <rocksdb/c.h>
#endif
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

namespace {

constexpr size_t kBody = 64;

std::string
make_dir()
{
	const char *base = getenv("QUAY_BENCH_DIR");
	std::string t = std::string(base != nullptr ? base : "/var/tmp") + "/quay-bench-dq-XXXXXX";
	if (mkdtemp(&t[0]) == nullptr)
		return std::string();
	return t;
}

void
rm_dir(const std::string &d)
{
	DIR *dh = opendir(d.c_str());
	struct dirent *e;

	if (dh == nullptr)
		return;
	while ((e = readdir(dh)) != nullptr)
		if (e->d_name[0] != '.')
			unlink((d + "/" + e->d_name).c_str());
	closedir(dh);
	rmdir(d.c_str());
}

// ---- quay durable queue ----------------------------------------------------

struct DurableRun {
	std::string dir;
	quay_pool *pool = nullptr;
	quay_wal *wal = nullptr;
	quay_queue *q = nullptr;
	std::atomic<uint64_t> sent{0}, failed{0};
	uint64_t syncs0 = 0;
} g_dq;

int
open_queue(unsigned mode, quay_queue **q, unsigned flags = 0, int64_t dedup_window = 0)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	wo.sync_mode = mode;
	wo.interval_ms = 10;
	if (quay_wal_open(g_dq.dir.c_str(), &wo, &g_dq.wal) != 0)
		return -1;
	o.name = "bench";
	o.capacity = (size_t)1 << 20;
	o.wal = g_dq.wal;
	o.pool = g_dq.pool;
	o.flags = flags;
	o.dedup_window_ns = dedup_window;
	return quay_queue_create(&o, q);
}

// Receive cost with and without the delivery log (issue 13): the queue
// is filled untimed (one send_batch per 32), then each iteration is one
// receive (batch 1) or one receive_batch of 32, timed; the leases are
// acked after the loop. Checked: every receive got its messages, and the
// WAL got exactly one record per delivery with the log and none without.
void
BM_durable_receive(benchmark::State &state)
{
	const unsigned mode = (unsigned)state.range(0);
	const bool dlog = state.range(1) != 0;
	const size_t batch = (size_t)state.range(2);
	const size_t total = (size_t)state.max_iterations * batch;
	unsigned char body[kBody] = {1};
	std::vector<quay_lease> leases(total);
	struct quay_wal_info a, b;
	size_t got = 0;

	g_dq.dir = make_dir();
	if (g_dq.dir.empty() || quay_pool_create((size_t)256 << 20, nullptr, &g_dq.pool) != 0 ||
	    open_queue(mode, &g_dq.q, dlog ? 0u : QUAY_QUEUE_NO_DELIVERY_LOG) != 0) {
		state.SkipWithError("setup failed");
		return;
	}
	for (size_t i = 0; i < total; i += 32) {
		quay_msg *m[32];
		size_t k = total - i < 32 ? total - i : 32;

		for (size_t j = 0; j < k; j++)
			if (quay_msg_new(g_dq.pool, body, sizeof(body), &m[j]) != 0) {
				state.SkipWithError("msg_new failed");
				return;
			}
		if (quay_queue_send_batch(g_dq.q, m, k, nullptr) != (int)k) {
			state.SkipWithError("fill failed");
			return;
		}
	}
	quay_wal_info(g_dq.wal, &a);
	for (auto _ : state) {
		if (batch == 1)
			got += quay_queue_receive(g_dq.q, &leases[got], 0) == 0 ? 1 : 0;
		else
			got += quay_queue_receive_batch(g_dq.q, &leases[got], batch, 0);
	}
	quay_wal_info(g_dq.wal, &b);
	state.SetItemsProcessed((int64_t)got);
	state.counters["wal_records_per_receive"] = got ? (double)(b.records - a.records) / (double)got : 0;
	state.counters["syncs_per_call"] = (double)(b.syncs - a.syncs) / (double)state.iterations();
	if (got != total)
		state.SkipWithError("a receive came back short");
	else if (b.records - a.records != (dlog ? total : 0))
		state.SkipWithError("delivery records != deliveries");
	for (size_t i = 0; i < got; i++) {
		(void)quay_queue_ack(g_dq.q, &leases[i]);
		quay_msg_unref(leases[i].msg);
	}
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	quay_pool_destroy(g_dq.pool);
	rm_dir(g_dq.dir);
}

void
BM_durable_send(benchmark::State &state)
{
	const unsigned mode = (unsigned)state.range(0);
	const size_t batch = (size_t)state.range(1);
	unsigned char body[kBody] = {1};

	if (state.thread_index() == 0) {
		g_dq.dir = make_dir();
		g_dq.sent = 0;
		g_dq.failed = 0;
		if (g_dq.dir.empty() || quay_pool_create((size_t)256 << 20, nullptr, &g_dq.pool) != 0 ||
		    open_queue(mode, &g_dq.q) != 0) {
			state.SkipWithError("setup failed");
			return;
		}
		struct quay_wal_info wi;
		quay_wal_info(g_dq.wal, &wi);
		g_dq.syncs0 = wi.syncs;
	}
	for (auto _ : state) {
		quay_msg *m[32];
		int res[32];

		for (size_t i = 0; i < batch; i++)
			if (quay_msg_new(g_dq.pool, body, sizeof(body), &m[i]) != 0)
				m[i] = nullptr;
		if (batch == 1) {
			res[0] = m[0] != nullptr ? quay_queue_send(g_dq.q, m[0]) : -ENOMEM;
		} else {
			bool ok = true;
			for (size_t i = 0; i < batch; i++)
				ok = ok && m[i] != nullptr;
			if (!ok || quay_queue_send_batch(g_dq.q, m, batch, res) < 0)
				for (size_t i = 0; i < batch; i++)
					res[i] = -ENOMEM;
		}
		for (size_t i = 0; i < batch; i++) {
			if (res[i] == 0) {
				g_dq.sent.fetch_add(1, std::memory_order_relaxed);
			} else {
				g_dq.failed.fetch_add(1, std::memory_order_relaxed);
				if (m[i] != nullptr)
					quay_msg_unref(m[i]);
			}
		}
	}
	state.SetItemsProcessed((int64_t)(state.iterations() * batch));
	if (state.thread_index() == 0) {
		struct quay_wal_info wi;
		struct quay_queue_stats st;
		uint64_t sent = g_dq.sent.load();

		quay_wal_info(g_dq.wal, &wi);
		state.counters["msgs_per_fdatasync"] =
		    wi.syncs > g_dq.syncs0 ? (double)sent / (double)(wi.syncs - g_dq.syncs0) : 0.0;
		// Check: reopen and count what comes back.
		quay_queue_destroy(g_dq.q);
		quay_wal_close(g_dq.wal);
		if (open_queue(mode, &g_dq.q) != 0 || quay_queue_stats(g_dq.q, &st) != 0)
			state.SkipWithError("reopen failed");
		else if (g_dq.failed.load() != 0 || st.restored != sent)
			state.SkipWithError("restored != sent");
		quay_queue_destroy(g_dq.q);
		quay_wal_close(g_dq.wal);
		quay_pool_destroy(g_dq.pool);
		rm_dir(g_dq.dir);
	}
}

// Durable dedup (issue 13): one thread, single sends of 64-byte bodies,
// without dedup, with a unique quay-dedup-id per send, and with content
// dedup (QUAY_QUEUE_CONTENT_DEDUP, unique bodies), window one hour. The
// window needs nothing per send in the log (replay rebuilds it from the
// send ADDs; compaction writes it): counters log_bytes_per_send (WAL
// bytes appended / sends, a dedup id adds its header to the image) and
// reopen_ms (the restart that rebuilds the window, 2,000 sends in the
// log). Checked: every send restored after the reopen, and, with dedup,
// the first message sent again is refused as a duplicate.
void
BM_durable_send_dedup(benchmark::State &state)
{
	const unsigned mode = (unsigned)state.range(0);
	const int kind = (int)state.range(1); // 0 none, 1 id, 2 content
	const int64_t win = kind != 0 ? (int64_t)3600 * 1000000000 : 0;
	const unsigned flags = kind == 2 ? QUAY_QUEUE_CONTENT_DEDUP : 0u;
	unsigned char body[kBody] = {1};
	struct quay_wal_info a, b;
	uint64_t n = 0, failed = 0;
	char id[32];

	g_dq.dir = make_dir();
	if (g_dq.dir.empty() || quay_pool_create((size_t)256 << 20, nullptr, &g_dq.pool) != 0 ||
	    open_queue(mode, &g_dq.q, flags, win) != 0) {
		state.SkipWithError("setup failed");
		return;
	}
	quay_wal_info(g_dq.wal, &a);
	for (auto _ : state) {
		quay_msg *m = nullptr;
		int rc = -ENOMEM;

		memcpy(body + 8, &n, sizeof(n)); // unique bodies (content dedup)
		if (quay_msg_new_ex(g_dq.pool, body, sizeof(body), QUAY_MSG_HEADER_ROOM(1, 32), 0, &m) == 0) {
			int len = snprintf(id, sizeof(id), "order-%llu", (unsigned long long)n);

			if (kind != 1 || quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, (size_t)len) == 0)
				rc = quay_queue_send(g_dq.q, m);
			if (rc != 0)
				quay_msg_unref(m);
		}
		n++;
		failed += rc != 0;
	}
	quay_wal_info(g_dq.wal, &b);
	state.SetItemsProcessed((int64_t)n);
	state.counters["log_bytes_per_send"] = n != 0 ? (double)(b.bytes - a.bytes) / (double)n : 0.0;
	// Check: reopen (timed), count, and send the first message again.
	struct quay_queue_stats st;
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = open_queue(mode, &g_dq.q, flags, win);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	state.counters["reopen_ms"] = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	if (rc != 0 || quay_queue_stats(g_dq.q, &st) != 0) {
		state.SkipWithError("reopen failed");
	} else if (failed != 0 || st.restored != n) {
		state.SkipWithError("restored != sent");
	} else {
		quay_msg *m = nullptr;
		uint64_t zero = 0;

		memcpy(body + 8, &zero, sizeof(zero));
		if (quay_msg_new_ex(g_dq.pool, body, sizeof(body), QUAY_MSG_HEADER_ROOM(1, 32), 0, &m) != 0 ||
		    (kind == 1 && quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "order-0", 7) != 0)) {
			state.SkipWithError("msg_new failed");
		} else {
			rc = quay_queue_send(g_dq.q, m);
			if (rc < 0)
				quay_msg_unref(m);
			if (rc != (kind != 0 ? QUAY_QUEUE_DUPLICATE : 0))
				state.SkipWithError("the window did not survive the restart");
		}
	}
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	quay_pool_destroy(g_dq.pool);
	rm_dir(g_dq.dir);
}

// ---- peer: write() + fdatasync() per message ----------------------------------

struct FsyncRun {
	std::string dir;
	int fd = -1;
	std::atomic<uint64_t> off{0}, errors{0};
} g_fs;

void
BM_fdatasync_per_message(benchmark::State &state)
{
	unsigned char body[kBody] = {2};

	if (state.thread_index() == 0) {
		g_fs.dir = make_dir();
		g_fs.off = 0;
		g_fs.errors = 0;
		g_fs.fd = open((g_fs.dir + "/log").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (g_fs.fd < 0) {
			state.SkipWithError("open failed");
			return;
		}
	}
	for (auto _ : state) {
		uint64_t at = g_fs.off.fetch_add(kBody);

		if (pwrite(g_fs.fd, body, kBody, (off_t)at) != (ssize_t)kBody || fdatasync(g_fs.fd) != 0)
			g_fs.errors.fetch_add(1);
	}
	state.SetItemsProcessed(state.iterations());
	if (state.thread_index() == 0) {
		off_t size = lseek(g_fs.fd, 0, SEEK_END);

		if (g_fs.errors.load() != 0 || (uint64_t)size != g_fs.off.load())
			state.SkipWithError("size != messages written");
		close(g_fs.fd);
		rm_dir(g_fs.dir);
	}
}

// ---- peer: SQLite WAL mode as a durable queue --------------------------------

struct SqliteRun {
	std::string dir;
	std::atomic<uint64_t> ok{0}, errors{0};
} g_sq;

sqlite3 *
sq_open(const char *sync)
{
	sqlite3 *db = nullptr;
	std::string path = g_sq.dir + "/q.db";

	if (sqlite3_open(path.c_str(), &db) != SQLITE_OK)
		return nullptr;
	sqlite3_busy_timeout(db, 10000);
	std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") + sync + ";";
	sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, nullptr);
	return db;
}

void
BM_sqlite_wal_insert(benchmark::State &state)
{
	const char *sync = state.range(0) == 0 ? "FULL" : "NORMAL";
	unsigned char body[kBody] = {3};
	sqlite3 *db;
	sqlite3_stmt *st = nullptr;

	if (state.thread_index() == 0) {
		g_sq.dir = make_dir();
		g_sq.ok = 0;
		g_sq.errors = 0;
		sqlite3 *d0 = sq_open(sync);
		if (d0 == nullptr ||
		    sqlite3_exec(d0, "CREATE TABLE q(id INTEGER PRIMARY KEY, body BLOB)", nullptr, nullptr, nullptr) !=
		        SQLITE_OK) {
			state.SkipWithError("sqlite setup failed");
			return;
		}
		sqlite3_close(d0);
	}
	// Each thread its own connection, opened before the loop's barrier
	// can release it (thread 0 made the table first: the others retry).
	db = nullptr;
	for (int tries = 0; tries < 1000 && db == nullptr; tries++) {
		db = sq_open(sync);
		if (db != nullptr &&
		    sqlite3_prepare_v2(db, "INSERT INTO q(body) VALUES(?)", -1, &st, nullptr) != SQLITE_OK) {
			sqlite3_close(db);
			db = nullptr;
			usleep(1000);
		}
	}
	for (auto _ : state) {
		int rc;

		if (st == nullptr) {
			g_sq.errors.fetch_add(1);
			continue;
		}
		sqlite3_bind_blob(st, 1, body, (int)kBody, SQLITE_STATIC);
		rc = sqlite3_step(st); // autocommit: one transaction per message
		sqlite3_reset(st);
		if (rc == SQLITE_DONE)
			g_sq.ok.fetch_add(1);
		else
			g_sq.errors.fetch_add(1);
	}
	state.SetItemsProcessed(state.iterations());
	sqlite3_finalize(st);
	sqlite3_close(db);
	if (state.thread_index() == 0) {
		sqlite3 *d0 = sq_open(sync);
		sqlite3_stmt *c = nullptr;
		int64_t rows = -1;

		if (d0 != nullptr && sqlite3_prepare_v2(d0, "SELECT count(*) FROM q", -1, &c, nullptr) == SQLITE_OK &&
		    sqlite3_step(c) == SQLITE_ROW)
			rows = sqlite3_column_int64(c, 0);
		sqlite3_finalize(c);
		sqlite3_close(d0);
		// Other threads may still be finishing their last insert: every
		// counted success must be there, and no error.
		if (g_sq.errors.load() != 0 || rows < 0 || (uint64_t)rows > g_sq.ok.load() ||
		    (uint64_t)rows + (uint64_t)state.threads() < g_sq.ok.load())
			state.SkipWithError("row count != inserts");
		rm_dir(g_sq.dir);
	}
}

// Pipelined durable sends (quay_queue_send_async): one thread keeps up
// to `depth` sends in flight (waits for the oldest ticket when it has
// depth), 64-byte bodies. Counters: msgs_per_fdatasync. Checked: every
// send completed once with 0, none failed, and every one is restored
// after a reopen.
struct AsyncCount {
	std::atomic<uint64_t> ok{0}, bad{0};
} g_async;

void
async_done(void *arg, quay_msg *msg, int rc)
{
	(void)arg;
	if (rc == 0) {
		g_async.ok.fetch_add(1, std::memory_order_relaxed);
	} else {
		g_async.bad.fetch_add(1, std::memory_order_relaxed);
		quay_msg_unref(msg);
	}
}

void
BM_durable_send_async(benchmark::State &state)
{
	const unsigned mode = (unsigned)state.range(0);
	const uint64_t depth = (uint64_t)state.range(1);
	unsigned char body[kBody] = {1};
	uint64_t sent = 0, failed = 0, t = 0, syncs0;
	struct quay_wal_info wi;
	struct quay_queue_stats st;

	g_dq.dir = make_dir();
	g_async.ok = 0;
	g_async.bad = 0;
	if (g_dq.dir.empty() || quay_pool_create((size_t)256 << 20, nullptr, &g_dq.pool) != 0 ||
	    open_queue(mode, &g_dq.q) != 0) {
		state.SkipWithError("setup failed");
		return;
	}
	quay_wal_info(g_dq.wal, &wi);
	syncs0 = wi.syncs;
	for (auto _ : state) {
		quay_msg *m = nullptr;
		int rc;

		if (t >= depth && !quay_queue_send_done(g_dq.q, t - depth + 1))
			(void)quay_queue_send_wait(g_dq.q, t - depth + 1);
		if (quay_msg_new(g_dq.pool, body, sizeof(body), &m) != 0) {
			failed++;
			continue;
		}
		while ((rc = quay_queue_send_async(g_dq.q, m, async_done, nullptr, &t)) == -EBUSY)
			(void)quay_queue_send_wait(g_dq.q, 0);
		if (rc == 0) {
			sent++;
		} else {
			failed++;
			quay_msg_unref(m);
		}
	}
	(void)quay_queue_send_wait(g_dq.q, 0); // the last ones' durability is part of the time
	state.SetItemsProcessed((int64_t)sent);
	quay_wal_info(g_dq.wal, &wi);
	state.counters["msgs_per_fdatasync"] = wi.syncs > syncs0 ? (double)sent / (double)(wi.syncs - syncs0) : 0.0;
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	if (open_queue(mode, &g_dq.q) != 0 || quay_queue_stats(g_dq.q, &st) != 0)
		state.SkipWithError("reopen failed");
	else if (failed != 0 || g_async.bad.load() != 0 || g_async.ok.load() != sent || st.restored != sent)
		state.SkipWithError("completions or restored != sent");
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	quay_pool_destroy(g_dq.pool);
	rm_dir(g_dq.dir);
}

#ifdef QUAY_BENCH_ROCKSDB
// ---- peer: RocksDB, one synced Put per message ---------------------------------

struct RocksRun {
	std::string dir;
	rocksdb_t *db = nullptr;
	std::atomic<uint64_t> next{0}, ok{0}, errors{0};
} g_rk;

// Default options but for create_if_missing; WriteOptions.sync = true:
// each Put returns once its WAL record is fdatasync'ed (RocksDB's group
// commit shares the sync among concurrent writers, as quay's WAL does).
void
BM_rocksdb_put_sync(benchmark::State &state)
{
	unsigned char body[kBody] = {4};
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();

	rocksdb_writeoptions_set_sync(wo, 1);
	if (state.thread_index() == 0) {
		rocksdb_options_t *o = rocksdb_options_create();
		char *err = nullptr;

		g_rk.dir = make_dir();
		g_rk.next = 0;
		g_rk.ok = 0;
		g_rk.errors = 0;
		rocksdb_options_set_create_if_missing(o, 1);
		g_rk.db = rocksdb_open(o, (g_rk.dir + "/db").c_str(), &err);
		rocksdb_options_destroy(o);
		if (err != nullptr) {
			rocksdb_free(err);
			g_rk.db = nullptr;
			state.SkipWithError("rocksdb open failed");
		}
	}
	for (auto _ : state) {
		uint64_t k = g_rk.next.fetch_add(1);
		char *err = nullptr;

		if (g_rk.db == nullptr) {
			g_rk.errors.fetch_add(1);
			continue;
		}
		rocksdb_put(g_rk.db, wo, (const char *)&k, sizeof(k), (const char *)body, kBody, &err);
		if (err != nullptr) {
			rocksdb_free(err);
			g_rk.errors.fetch_add(1);
		} else {
			g_rk.ok.fetch_add(1);
		}
	}
	state.SetItemsProcessed(state.iterations());
	rocksdb_writeoptions_destroy(wo);
	if (state.thread_index() == 0 && g_rk.db != nullptr) {
		// Count the keys (other threads may be finishing their last Put:
		// every counted success must be there, and no error).
		rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
		rocksdb_iterator_t *it = rocksdb_create_iterator(g_rk.db, ro);
		uint64_t keys = 0;

		for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it))
			keys++;
		rocksdb_iter_destroy(it);
		rocksdb_readoptions_destroy(ro);
		if (g_rk.errors.load() != 0 || keys > g_rk.ok.load() + (uint64_t)state.threads() ||
		    keys + (uint64_t)state.threads() < g_rk.ok.load())
			state.SkipWithError("keys != puts");
		rocksdb_close(g_rk.db);
		g_rk.db = nullptr;
		rm_dir(g_rk.dir + "/db");
		rm_dir(g_rk.dir);
	}
}
#endif

template <int Batch>
void
args_modes(benchmark::internal::Benchmark *b)
{
	for (int mode : {QUAY_WAL_SYNC, QUAY_WAL_INTERVAL, QUAY_WAL_NONE})
		b->Args({mode, Batch});
	b->ArgNames({"mode", "batch"});
}

} // namespace

// mode: 0 SYNC, 1 INTERVAL, 2 NONE. Fixed iterations keep the queue and
// the pool bounded (the messages stay in the queue to be counted).
BENCHMARK(BM_durable_send)->Apply(args_modes<1>)->Threads(1)->Threads(8)->Iterations(2000)->UseRealTime();
BENCHMARK(BM_durable_send)->Apply(args_modes<32>)->Threads(1)->Threads(8)->Iterations(250)->UseRealTime();
// mode (0 SYNC, 2 NONE) x delivery log (1 on, 0 QUAY_QUEUE_NO_DELIVERY_LOG) x batch.
BENCHMARK(BM_durable_receive)
    ->ArgsProduct({{QUAY_WAL_SYNC, QUAY_WAL_NONE}, {1, 0}, {1, 32}})
    ->ArgNames({"mode", "dlog", "batch"})
    ->Iterations(2000)
    ->UseRealTime();
// mode (0 SYNC, 2 NONE) x dedup (0 none, 1 id, 2 content).
BENCHMARK(BM_durable_send_dedup)
    ->ArgsProduct({{QUAY_WAL_SYNC, QUAY_WAL_NONE}, {0, 1, 2}})
    ->ArgNames({"mode", "dedup"})
    ->Iterations(2000)
    ->UseRealTime();
// Pipelined sends, SYNC, one thread: mode x in-flight depth.
BENCHMARK(BM_durable_send_async)
    ->Args({QUAY_WAL_SYNC, 1})
    ->ArgNames({"mode", "depth"})
    ->Iterations(1000)
    ->UseRealTime();
BENCHMARK(BM_durable_send_async)
    ->Args({QUAY_WAL_SYNC, 16})
    ->ArgNames({"mode", "depth"})
    ->Iterations(5000)
    ->UseRealTime();
BENCHMARK(BM_durable_send_async)
    ->Args({QUAY_WAL_SYNC, 128})
    ->Args({QUAY_WAL_SYNC, 1024})
    ->ArgNames({"mode", "depth"})
    ->Iterations(50000)
    ->UseRealTime();
#ifdef QUAY_BENCH_ROCKSDB
BENCHMARK(BM_rocksdb_put_sync)->Threads(1)->Threads(8)->Iterations(1000)->UseRealTime();
#endif
BENCHMARK(BM_fdatasync_per_message)->Threads(1)->Threads(8)->Iterations(1000)->UseRealTime();
BENCHMARK(BM_sqlite_wal_insert)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("normal")
    ->Threads(1)
    ->Threads(8)
    ->Iterations(1000)
    ->UseRealTime();

BENCHMARK_MAIN();
