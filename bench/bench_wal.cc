// SPDX-License-Identifier: MIT
//
// bench_wal: the write-ahead log against what a user would do instead, in
// one binary and one run, on the same disk.
//
//   append/<mode>/<size>B/threads:T
//                   quay_wal_append of <size>-byte records from T threads
//                   for a fixed time (SYNC 0.6 s, INTERVAL and NONE 0.3 s or
//                   until 96 MiB were appended). Modes SYNC, INTERVAL
//                   (100 ms), NONE; sizes 64 B, 1 KiB, 16 KiB; T = 1, 2, 8;
//                   and SYNC 64 B with 32 and 128 threads (group commit
//                   covers at most as many appends as there are waiters).
//                   Timed: the appends (a NONE or INTERVAL append returns
//                   before its data is durable; see none_vs_raw).
//                   Counter syncs_per_append: fdatasyncs the log issued
//                   (quay_wal_info.syncs) per acknowledged append; 1 is no
//                   group commit, 1/T the most T waiting threads can get.
//   naive/<file>/threads:T
//                   the baseline: pwrite of one 64-byte message then
//                   fdatasync, per message. own: each thread its own file;
//                   shared: all threads one file (offsets reserved with an
//                   atomic counter, pwrite, fdatasync).
//   sqlite/<sync>/threads:T
//                   SQLite in WAL journal mode as a durable queue: one
//                   INSERT of a 64-byte blob per transaction (autocommit),
//                   each thread its own connection, busy_timeout 5 s.
//                   synchronous=FULL (matches SYNC), NORMAL (matches
//                   INTERVAL: durable against a process crash only).
//   raw_write       raw sequential bandwidth of the disk: 256 MiB of
//                   pwrite(1 MiB) and one fdatasync at the end.
//   none_vs_raw     quay NONE, 1 thread, 16 KiB records, the same 256 MiB,
//                   then quay_wal_sync: the same work as raw_write.
//   recovery        quay_wal_open of a 256 MiB log (QUAY_BENCH_WAL_RECOVERY_MB)
//                   of 16 KiB records: read, scan, CRC32C every record.
//                   Timed: the first open after trying to drop the page
//                   cache (needs root and a writable /proc/sys/vm/drop_caches;
//                   counter cold = 1 if that worked, 0 if not); counter
//                   MB_per_s_warm: a second open, page cache warm.
//
// Every benchmark checks its own result: the quay cases reopen the log
// and replay it (records found == appends acknowledged, per-thread
// sequence numbers in order, sizes right); naive checks the file sizes,
// SQLite counts its rows, recovery compares the records it found. A
// mismatch ends the benchmark with SkipWithError and the program exits 1.
//
// Files go under $QUAY_BENCH_DIR, or a fresh directory under /var/tmp (a
// real disk, not tmpfs); everything is removed at the end. After the run a
// summary compares the figures with the targets.
//
// The durable queue's SYNC-send benchmark, with the same peers, is
// bench/bench_queue_durable.cc.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <quay/wal.h>

namespace {

using Clock = std::chrono::steady_clock;

std::string g_root;       // the bench directory
bool g_root_made = false; // we made it (and remove it)
int g_case = 0;           // for fresh sub-directory names
std::atomic<int> g_failed{0};
std::map<std::string, double> g_rate; // name -> items/s (or MB/s) for the summary

constexpr uint64_t kMiB = uint64_t{1} << 20;

int
rm_cb(const char *path, const struct stat *, int, struct FTW *)
{
	return remove(path);
}

void
rm_rf(const std::string &p)
{
	nftw(p.c_str(), rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

std::string
fresh_dir(const char *tag)
{
	std::string d = g_root + "/" + tag + "-" + std::to_string(g_case++);
	rm_rf(d);
	return d;
}

void
fail(benchmark::State &st, const std::string &why)
{
	g_failed.store(1, std::memory_order_relaxed); // read by main after the run
	st.SkipWithError(why.c_str());
}

double
secs(Clock::time_point a, Clock::time_point b)
{
	return std::chrono::duration<double>(b - a).count();
}

// Start T threads at once; each runs fn(thread index).
template <typename F>
double
run_threads(int nthreads, F fn)
{
	std::atomic<int> ready{0};
	std::atomic<bool> go{false};
	std::vector<std::thread> th;
	for (int t = 0; t < nthreads; t++)
		th.emplace_back([&, t] {
			// acq_rel: counts arrivals; the main thread waits for all.
			ready.fetch_add(1, std::memory_order_acq_rel);
			// acquire: pairs with the release store of go below.
			while (!go.load(std::memory_order_acquire))
				std::this_thread::yield();
			fn(t);
		});
	while (ready.load(std::memory_order_acquire) < nthreads)
		std::this_thread::yield();
	auto t0 = Clock::now();
	go.store(true, std::memory_order_release);
	for (auto &x : th)
		x.join();
	return secs(t0, Clock::now());
}

// ---- quay appends --------------------------------------------------------

const char *
mode_name(unsigned m)
{
	return m == QUAY_WAL_SYNC ? "SYNC" : m == QUAY_WAL_INTERVAL ? "INTERVAL" : "NONE";
}

// A record: u32 thread, u64 seq, then filler derived from both.
void
fill_rec(unsigned char *p, size_t len, uint32_t t, uint64_t seq)
{
	memcpy(p, &t, 4);
	memcpy(p + 4, &seq, 8);
	for (size_t i = 12; i < len; i++)
		p[i] = (unsigned char)(seq + i + t);
}

struct CheckCtx {
	size_t len;
	std::vector<uint64_t> next; // per thread: the next seq expected
	uint64_t records = 0;
	bool bad = false;
};

int
check_visit(void *ctx, uint64_t, uint32_t type, const void *data, size_t len)
{
	auto *c = static_cast<CheckCtx *>(ctx);
	uint32_t t;
	uint64_t seq;
	if (type != 1 || len != c->len) {
		c->bad = true;
		return 1;
	}
	memcpy(&t, data, 4);
	memcpy(&seq, static_cast<const unsigned char *>(data) + 4, 8);
	if (t >= c->next.size() || seq != c->next[t]) {
		c->bad = true;
		return 1;
	}
	if (len > 12) { // spot-check the last byte
		unsigned char want = (unsigned char)(seq + (len - 1) + t);
		if (static_cast<const unsigned char *>(data)[len - 1] != want) {
			c->bad = true;
			return 1;
		}
	}
	c->next[t]++;
	c->records++;
	return 0;
}

// Reopen dir read-only and check it holds exactly acked[t] records of
// each thread t, in order. Returns "" or what is wrong.
std::string
verify_log(const std::string &dir, size_t len, const std::vector<uint64_t> &acked)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	o.flags = QUAY_WAL_READONLY;
	quay_wal *w;
	int r = quay_wal_open(dir.c_str(), &o, &w);
	if (r != 0)
		return std::string("reopen: ") + quay_strerror(r);
	CheckCtx c;
	c.len = len;
	c.next.assign(acked.size(), 0);
	r = quay_wal_replay(w, 0, check_visit, &c);
	quay_wal_close(w);
	if (r != 0 || c.bad)
		return "replay found a wrong record";
	for (size_t t = 0; t < acked.size(); t++)
		if (c.next[t] != acked[t])
			return "thread " + std::to_string(t) + ": " + std::to_string(acked[t]) + " acked, " +
			    std::to_string(c.next[t]) + " recovered";
	return "";
}

void
BM_append(benchmark::State &st)
{
	const unsigned mode = (unsigned)st.range(0);
	const size_t len = (size_t)st.range(1);
	const int nthreads = (int)st.range(2);
	const double limit_s = mode == QUAY_WAL_SYNC ? 0.6 : 0.3;
	const uint64_t byte_cap = 96 * kMiB;

	for (auto _ : st) {
		std::string dir = fresh_dir("append");
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		o.sync_mode = mode;
		quay_wal *w;
		int r = quay_wal_open(dir.c_str(), &o, &w);
		if (r != 0) {
			fail(st, std::string("open: ") + quay_strerror(r));
			break;
		}
		std::vector<uint64_t> acked((size_t)nthreads, 0);
		std::atomic<uint64_t> bytes{0};
		std::atomic<int> err{0};
		double el = run_threads(nthreads, [&](int t) {
			std::vector<unsigned char> buf(len);
			auto deadline = Clock::now() + std::chrono::duration<double>(limit_s);
			uint64_t n = 0;
			for (;;) {
				if ((n & 15) == 0) {
					if (Clock::now() >= deadline)
						break;
					// relaxed: a soft cap on the volume, no data depends on it.
					if (bytes.load(std::memory_order_relaxed) >= byte_cap)
						break;
				}
				fill_rec(buf.data(), len, (uint32_t)t, n);
				int e = quay_wal_append(w, 1, buf.data(), len, nullptr);
				if (e != 0) {
					err.store(e, std::memory_order_relaxed); // read after join
					break;
				}
				n++;
				if ((n & 15) == 0)
					bytes.fetch_add(16 * len, std::memory_order_relaxed);
			}
			acked[(size_t)t] = n;
		});
		st.SetIterationTime(el);
		struct quay_wal_info info;
		uint64_t syncs = quay_wal_info(w, &info) == 0 ? info.syncs : 0;
		int rc = quay_wal_close(w);
		uint64_t total = 0;
		for (auto a : acked)
			total += a;
		std::string why;
		if (err.load() != 0)
			why = std::string("append: ") + quay_strerror(err.load());
		else if (rc != 0)
			why = std::string("close: ") + quay_strerror(rc);
		else
			why = verify_log(dir, len, acked);
		rm_rf(dir);
		if (!why.empty()) {
			fail(st, why);
			break;
		}
		st.SetItemsProcessed((int64_t)total);
		st.SetBytesProcessed((int64_t)(total * len));
		double rate = (double)total / el;
		st.counters["MB_per_s"] = rate * (double)len / 1e6;
		// fdatasyncs per acknowledged append: 1 means no group commit,
		// 1/T the best T waiting threads can get.
		st.counters["syncs_per_append"] = total > 0 ? (double)syncs / (double)total : 0.0;
		char key[64];
		snprintf(key, sizeof(key), "append/%s/%zu/%d", mode_name(mode), len, nthreads);
		g_rate[key] = rate;
	}
}

void
append_args(benchmark::internal::Benchmark *b)
{
	for (int mode : {QUAY_WAL_SYNC, QUAY_WAL_INTERVAL, QUAY_WAL_NONE})
		for (int len : {64, 1024, 16384})
			for (int t : {1, 2, 8})
				b->Args({mode, len, t});
	// Group commit grows with the number of waiting appenders.
	b->Args({QUAY_WAL_SYNC, 64, 32});
	b->Args({QUAY_WAL_SYNC, 64, 128});
	b->ArgNames({"mode", "size", "threads"});
}

// ---- naive: pwrite + fdatasync per message -----------------------------

void
BM_naive(benchmark::State &st)
{
	const bool shared = st.range(0) != 0;
	const int nthreads = (int)st.range(1);
	const size_t len = 64;
	const double limit_s = 0.6;

	for (auto _ : st) {
		std::string dir = fresh_dir("naive");
		mkdir(dir.c_str(), 0755);
		std::vector<int> fds((size_t)(shared ? 1 : nthreads), -1);
		for (size_t i = 0; i < fds.size(); i++) {
			std::string p = dir + "/f" + std::to_string(i);
			fds[i] = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		}
		std::atomic<uint64_t> off{0};
		std::vector<uint64_t> acked((size_t)nthreads, 0);
		std::atomic<int> err{0};
		double el = run_threads(nthreads, [&](int t) {
			int fd = fds[shared ? 0 : (size_t)t];
			unsigned char buf[64];
			uint64_t n = 0, myoff = 0;
			auto deadline = Clock::now() + std::chrono::duration<double>(limit_s);
			while (Clock::now() < deadline) {
				fill_rec(buf, len, (uint32_t)t, n);
				// relaxed: only reserves distinct file ranges.
				uint64_t at = shared ? off.fetch_add(len, std::memory_order_relaxed) : myoff;
				if (fd < 0 || pwrite(fd, buf, len, (off_t)at) != (ssize_t)len || fdatasync(fd) != 0) {
					err.store(errno ? errno : EIO, std::memory_order_relaxed); // read after join
					break;
				}
				myoff += len;
				n++;
			}
			acked[(size_t)t] = n;
		});
		st.SetIterationTime(el);
		uint64_t total = 0;
		for (auto a : acked)
			total += a;
		uint64_t size = 0;
		for (int fd : fds) {
			struct stat sb;
			if (fd >= 0 && fstat(fd, &sb) == 0)
				size += (uint64_t)sb.st_size;
			if (fd >= 0)
				close(fd);
		}
		rm_rf(dir);
		if (err.load() != 0) {
			fail(st, std::string("write/fdatasync: ") + strerror(err.load()));
			break;
		}
		if (size != total * len) {
			fail(st, "file bytes " + std::to_string(size) + " != " + std::to_string(total * len));
			break;
		}
		st.SetItemsProcessed((int64_t)total);
		st.SetBytesProcessed((int64_t)(total * len));
		char key[64];
		snprintf(key, sizeof(key), "naive/%s/%d", shared ? "shared" : "own", nthreads);
		g_rate[key] = (double)total / el;
	}
}

// ---- SQLite in WAL mode as a durable queue --------------------------------

bool
sql_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
}

void
BM_sqlite(benchmark::State &st)
{
	const bool full = st.range(0) != 0;
	const int nthreads = (int)st.range(1);
	const size_t len = 64;
	const double limit_s = 0.6;

	for (auto _ : st) {
		std::string dir = fresh_dir("sqlite");
		mkdir(dir.c_str(), 0755);
		std::string path = dir + "/q.db";
		sqlite3 *db0 = nullptr;
		if (sqlite3_open(path.c_str(), &db0) != SQLITE_OK || !sql_exec(db0, "PRAGMA journal_mode=WAL") ||
		    !sql_exec(db0, "CREATE TABLE q(id INTEGER PRIMARY KEY, body BLOB NOT NULL)")) {
			fail(st, std::string("sqlite setup: ") + sqlite3_errmsg(db0));
			sqlite3_close(db0);
			break;
		}
		std::vector<uint64_t> acked((size_t)nthreads, 0);
		std::atomic<int> err{0};
		std::atomic<uint64_t> busy{0};
		std::vector<sqlite3 *> dbs((size_t)nthreads, nullptr);
		for (int t = 0; t < nthreads; t++) {
			sqlite3 *db;
			if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
				err.store(1);
				break;
			}
			sqlite3_busy_timeout(db, 5000);
			if (!sql_exec(db, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"))
				err.store(1);
			dbs[(size_t)t] = db;
		}
		double el = 0;
		if (err.load() == 0)
			el = run_threads(nthreads, [&](int t) {
				sqlite3 *db = dbs[(size_t)t];
				sqlite3_stmt *ins = nullptr;
				unsigned char buf[64];
				uint64_t n = 0;
				if (sqlite3_prepare_v2(db, "INSERT INTO q(body) VALUES (?)", -1, &ins, nullptr) !=
				    SQLITE_OK) {
					err.store(1, std::memory_order_relaxed); // read after join
					return;
				}
				auto deadline = Clock::now() + std::chrono::duration<double>(limit_s);
				while (Clock::now() < deadline) {
					fill_rec(buf, len, (uint32_t)t, n);
					sqlite3_bind_blob(ins, 1, buf, (int)len, SQLITE_STATIC);
					int rc = sqlite3_step(ins);
					sqlite3_reset(ins);
					if (rc == SQLITE_BUSY) { // retried: not acknowledged
						busy.fetch_add(1, std::memory_order_relaxed);
						continue;
					}
					if (rc != SQLITE_DONE) {
						err.store(rc, std::memory_order_relaxed); // read after join
						break;
					}
					n++;
				}
				sqlite3_finalize(ins);
				acked[(size_t)t] = n;
			});
		st.SetIterationTime(el > 0 ? el : 1e-9);
		for (auto *db : dbs)
			sqlite3_close(db);
		uint64_t total = 0;
		for (auto a : acked)
			total += a;
		int64_t rows = -1;
		sqlite3_stmt *cnt = nullptr;
		if (sqlite3_prepare_v2(db0, "SELECT count(*) FROM q", -1, &cnt, nullptr) == SQLITE_OK &&
		    sqlite3_step(cnt) == SQLITE_ROW)
			rows = sqlite3_column_int64(cnt, 0);
		sqlite3_finalize(cnt);
		sqlite3_close(db0);
		rm_rf(dir);
		if (err.load() != 0) {
			fail(st, "sqlite insert failed: " + std::to_string(err.load()));
			break;
		}
		if (rows < 0 || (uint64_t)rows != total) {
			fail(st, "sqlite rows " + std::to_string(rows) + " != inserts " + std::to_string(total));
			break;
		}
		st.SetItemsProcessed((int64_t)total);
		st.SetBytesProcessed((int64_t)(total * len));
		st.counters["busy_retries"] = (double)busy.load();
		char key[64];
		snprintf(key, sizeof(key), "sqlite/%s/%d", full ? "FULL" : "NORMAL", nthreads);
		g_rate[key] = (double)total / el;
	}
}

// ---- raw sequential bandwidth, and NONE doing the same work ----------------

constexpr uint64_t kSeqBytes = 256 * kMiB;

void
BM_raw_write(benchmark::State &st)
{
	for (auto _ : st) {
		std::string dir = fresh_dir("raw");
		mkdir(dir.c_str(), 0755);
		std::string p = dir + "/raw";
		int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		std::vector<unsigned char> buf(kMiB, 0x5a);
		bool ok = fd >= 0;
		auto t0 = Clock::now();
		for (uint64_t off = 0; ok && off < kSeqBytes; off += kMiB)
			ok = pwrite(fd, buf.data(), kMiB, (off_t)off) == (ssize_t)kMiB;
		ok = ok && fdatasync(fd) == 0;
		double el = secs(t0, Clock::now());
		struct stat sb;
		ok = ok && fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == kSeqBytes;
		if (fd >= 0)
			close(fd);
		rm_rf(dir);
		if (!ok) {
			fail(st, "raw write failed or short");
			break;
		}
		st.SetIterationTime(el);
		st.SetBytesProcessed((int64_t)kSeqBytes);
		st.counters["MB_per_s"] = (double)kSeqBytes / el / 1e6;
		g_rate["raw_MBps"] = (double)kSeqBytes / el / 1e6;
	}
}

void
BM_none_vs_raw(benchmark::State &st)
{
	const size_t len = 16384;
	for (auto _ : st) {
		std::string dir = fresh_dir("none");
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		o.sync_mode = QUAY_WAL_NONE;
		quay_wal *w;
		int r = quay_wal_open(dir.c_str(), &o, &w);
		if (r != 0) {
			fail(st, std::string("open: ") + quay_strerror(r));
			break;
		}
		std::vector<unsigned char> buf(len);
		uint64_t n = 0, nrec = kSeqBytes / len;
		auto t0 = Clock::now();
		for (; r == 0 && n < nrec; n++) {
			fill_rec(buf.data(), len, 0, n);
			r = quay_wal_append(w, 1, buf.data(), len, nullptr);
		}
		if (r == 0)
			r = quay_wal_sync(w, 0);
		double el = secs(t0, Clock::now());
		int rc = quay_wal_close(w);
		std::string why = r != 0 ? std::string("append/sync: ") + quay_strerror(r) :
		    rc != 0              ? std::string("close: ") + quay_strerror(rc) :
		                           verify_log(dir, len, std::vector<uint64_t>{nrec});
		rm_rf(dir);
		if (!why.empty()) {
			fail(st, why);
			break;
		}
		st.SetIterationTime(el);
		st.SetItemsProcessed((int64_t)nrec);
		st.SetBytesProcessed((int64_t)kSeqBytes);
		st.counters["MB_per_s"] = (double)kSeqBytes / el / 1e6;
		g_rate["none_MBps"] = (double)kSeqBytes / el / 1e6;
	}
}

// ---- recovery ---------------------------------------------------------------

bool
drop_caches()
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd < 0)
		return false;
	bool ok = write(fd, "1", 1) == 1;
	close(fd);
	return ok;
}

void
BM_recovery(benchmark::State &st)
{
	const size_t len = 16384;
	uint64_t mb = 256;
	if (const char *e = getenv("QUAY_BENCH_WAL_RECOVERY_MB"))
		mb = strtoull(e, nullptr, 10) ? strtoull(e, nullptr, 10) : 256;
	for (auto _ : st) {
		std::string dir = fresh_dir("recovery");
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		o.sync_mode = QUAY_WAL_NONE;
		quay_wal *w;
		int r = quay_wal_open(dir.c_str(), &o, &w);
		if (r != 0) {
			fail(st, std::string("open: ") + quay_strerror(r));
			break;
		}
		std::vector<unsigned char> buf(len);
		uint64_t nrec = mb * kMiB / len;
		for (uint64_t n = 0; r == 0 && n < nrec; n++) {
			fill_rec(buf.data(), len, 0, n);
			r = quay_wal_append(w, 1, buf.data(), len, nullptr);
		}
		int rc = quay_wal_close(w);
		if (r != 0 || rc != 0) {
			rm_rf(dir);
			fail(st, "writing the log failed");
			break;
		}
		// First open after dropping the page cache (if allowed), then a
		// second one with the log in the page cache.
		bool cold = drop_caches();
		struct quay_wal_report rep;
		double el[2] = {0, 0};
		std::string why;
		for (int k = 0; k < 2 && why.empty(); k++) {
			o = QUAY_WAL_OPTS_INIT;
			o.report = &rep;
			auto t0 = Clock::now();
			r = quay_wal_open(dir.c_str(), &o, &w);
			el[k] = secs(t0, Clock::now());
			if (r == 0)
				quay_wal_close(w);
			if (r != 0 || rep.records != nrec || rep.tail_cut || rep.corrupt)
				why = "recovery found " + std::to_string(rep.records) + " of " + std::to_string(nrec) +
				    " records: " + quay_strerror(r);
		}
		rm_rf(dir);
		if (!why.empty()) {
			fail(st, why);
			break;
		}
		st.SetIterationTime(el[0]);
		st.SetItemsProcessed((int64_t)rep.records);
		st.SetBytesProcessed((int64_t)rep.bytes);
		st.counters["MB_per_s"] = (double)rep.bytes / el[0] / 1e6;
		st.counters["MB_per_s_warm"] = (double)rep.bytes / el[1] / 1e6;
		st.counters["log_MB"] = (double)rep.bytes / 1e6;
		st.counters["segments"] = rep.segments;
		st.counters["cold"] = cold ? 1 : 0;
		g_rate["recovery_MBps"] = (double)rep.bytes / el[0] / 1e6;
		g_rate["recovery_warm_MBps"] = (double)rep.bytes / el[1] / 1e6;
		g_rate["recovery_cold"] = cold ? 1 : 0;
	}
}

BENCHMARK(BM_raw_write)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_none_vs_raw)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_naive)
    ->ArgNames({"shared", "threads"})
    ->Args({0, 1})
    ->Args({0, 8})
    ->Args({1, 1})
    ->Args({1, 8})
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sqlite)
    ->ArgNames({"full", "threads"})
    ->Args({1, 1})
    ->Args({1, 8})
    ->Args({0, 1})
    ->Args({0, 8})
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_append)->Apply(append_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_recovery)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

double
rate(const char *k)
{
	auto it = g_rate.find(k);
	return it == g_rate.end() ? 0 : it->second;
}

void
ratio_line(const char *what, double a, double b, double target)
{
	if (a <= 0 || b <= 0) {
		printf("  %-52s n/a (a case did not run)\n", what);
		return;
	}
	double x = a / b;
	printf("  %-52s %10.2fx  target %5.2fx  %s\n", what, x, target, x >= target ? "MET" : "NOT MET");
}

void
summary()
{
	printf("\nTargets (issue 6), this run:\n");
	double s8 = rate("append/SYNC/64/8");
	printf("  quay SYNC 64 B: 1 thread %.0f/s, 8 threads %.0f/s\n", rate("append/SYNC/64/1"), s8);
	printf("  naive 64 B: own file 1 thread %.0f/s, 8 threads %.0f/s; shared file 8 threads %.0f/s\n",
	    rate("naive/own/1"), rate("naive/own/8"), rate("naive/shared/8"));
	printf("  sqlite FULL: 1 thread %.0f/s, 8 threads %.0f/s; NORMAL 8 threads %.0f/s\n", rate("sqlite/FULL/1"),
	    rate("sqlite/FULL/8"), rate("sqlite/NORMAL/8"));
	ratio_line("SYNC 8 threads / naive 1 thread (own file)", s8, rate("naive/own/1"), 50);
	ratio_line("SYNC 8 threads / naive 8 threads (own files)", s8, rate("naive/own/8"), 50);
	ratio_line("SYNC 32 threads / naive 1 thread (own file)", rate("append/SYNC/64/32"), rate("naive/own/1"), 50);
	ratio_line("SYNC 128 threads / naive 1 thread (own file)", rate("append/SYNC/64/128"), rate("naive/own/1"), 50);
	ratio_line("SYNC 8 threads / SQLite FULL 8 threads", s8, rate("sqlite/FULL/8"), 10);
	ratio_line("INTERVAL 8 threads / SQLite NORMAL 8 threads", rate("append/INTERVAL/64/8"),
	    rate("sqlite/NORMAL/8"), 10);
	ratio_line("NONE 16 KiB + sync / raw sequential write", rate("none_MBps"), rate("raw_MBps"), 0.7);
	double rec = rate("recovery_MBps");
	double warm = rate("recovery_warm_MBps");
	printf("  %-52s %10.0f MB/s target 500 MB/s  %s\n",
	    rate("recovery_cold") > 0 ? "recovery, first open (page cache dropped)" :
	                                "recovery, first open (cache NOT dropped)",
	    rec, rec >= 500 ? "MET" : "NOT MET");
	printf("  %-52s %10.0f MB/s target 500 MB/s  %s\n", "recovery, second open (page cache warm)", warm,
	    warm >= 500 ? "MET" : "NOT MET");
	printf("  durable queue SYNC send: see bench_queue_durable\n");
}

} // namespace

int
main(int argc, char **argv)
{
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 2;
	if (const char *d = getenv("QUAY_BENCH_DIR"); d != nullptr && *d) {
		g_root = std::string(d) + "/bench_wal." + std::to_string(getpid());
		if (mkdir(g_root.c_str(), 0755) != 0) {
			fprintf(stderr, "bench_wal: cannot make %s: %s\n", g_root.c_str(), strerror(errno));
			return 2;
		}
	} else {
		char tmpl[] = "/var/tmp/quay-bench-wal.XXXXXX";
		if (mkdtemp(tmpl) == nullptr) {
			fprintf(stderr, "bench_wal: mkdtemp under /var/tmp: %s\n", strerror(errno));
			return 2;
		}
		g_root = tmpl;
	}
	g_root_made = true;
	printf("bench_wal: files under %s\n", g_root.c_str());
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	summary();
	if (g_root_made)
		rm_rf(g_root);
	return g_failed.load() ? 1 : 0;
}
