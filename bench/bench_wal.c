/* SPDX-License-Identifier: MIT */
/*
 * bench_wal: the write-ahead log against what a user would do instead, in
 * one binary and one run, on the same disk. C bodies, registered through
 * bench/shim/quay_bench.h; SQLite through its C API.
 *
 *   append/<mode>/<size>B/threads:T
 *                   quay_wal_append of <size>-byte records from T threads
 *                   for a fixed time (SYNC 0.6 s, INTERVAL and NONE 0.3 s or
 *                   until 96 MiB were appended). Modes SYNC, INTERVAL
 *                   (100 ms), NONE; sizes 64 B, 1 KiB, 16 KiB; T = 1, 2, 8;
 *                   and SYNC 64 B with 32 and 128 threads (group commit
 *                   covers at most as many appends as there are waiters).
 *                   Timed: the appends (a NONE or INTERVAL append returns
 *                   before its data is durable; see none_vs_raw).
 *                   Counter syncs_per_append: fdatasyncs the log issued
 *                   (quay_wal_info.syncs) per acknowledged append; 1 is no
 *                   group commit, 1/T the most T waiting threads can get.
 *   naive/<file>/threads:T
 *                   the baseline: pwrite of one 64-byte message then
 *                   fdatasync, per message. own: each thread its own file;
 *                   shared: all threads one file (offsets reserved with an
 *                   atomic counter, pwrite, fdatasync).
 *   sqlite/<sync>/threads:T
 *                   SQLite in WAL journal mode as a durable queue: one
 *                   INSERT of a 64-byte blob per transaction (autocommit),
 *                   each thread its own connection, busy_timeout 5 s.
 *                   synchronous=FULL (matches SYNC), NORMAL (matches
 *                   INTERVAL: durable against a process crash only).
 *   raw_write       raw sequential bandwidth of the disk: 256 MiB of
 *                   pwrite(1 MiB) and one fdatasync at the end.
 *   none_vs_raw     quay NONE, 1 thread, 16 KiB records, the same 256 MiB,
 *                   then quay_wal_sync: the same work as raw_write.
 *   recovery        quay_wal_open of a 256 MiB log (QUAY_BENCH_WAL_RECOVERY_MB)
 *                   of 16 KiB records: read, scan, CRC32C every record.
 *                   Timed: the first open after trying to drop the page
 *                   cache (needs root and a writable /proc/sys/vm/drop_caches;
 *                   counter cold = 1 if that worked, 0 if not); counter
 *                   MB_per_s_warm: a second open, page cache warm.
 *
 * Every benchmark checks its own result: the quay cases reopen the log
 * and replay it (records found == appends acknowledged, per-thread
 * sequence numbers in order, sizes right); naive checks the file sizes,
 * SQLite counts its rows, recovery compares the records it found. A
 * mismatch ends the benchmark with qb_skip_with_error and the program
 * exits 1.
 *
 * Files go under $QUAY_BENCH_DIR, or a fresh directory under /var/tmp (a
 * real disk, not tmpfs); everything is removed at the end. After the run a
 * summary compares the figures with the targets.
 *
 * Threads start together: each counts itself in (ready), then waits for
 * the release store of go; the time runs from that store to the last
 * join. The shared counters of a run (bytes, the naive shared offset,
 * busy retries, the first error) are relaxed atomics: each is a count or
 * a reservation, and the main thread reads them after the joins.
 *
 * The durable queue's SYNC-send benchmark, with the same peers, is the
 * bench_queue_durable program (in bench/ too).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <quay/wal.h>

#include "quay_bench.h"

#define MIB ((uint64_t)1 << 20)
#define SEQ_BYTES (256 * MIB) /* raw_write and none_vs_raw */
#define MAX_THREADS 128
#define WHY_MAX 256

static char g_root[PATH_MAX]; /* the bench directory */
static int g_case;            /* for fresh sub-directory names */

/* name -> items/s (or MB/s) for the summary. */
static struct {
	char key[48];
	double v;
} g_rate[96];
static size_t g_nrate;

static void
set_rate(const char *key, double v)
{
	size_t i = 0;
	while (i < g_nrate && strcmp(g_rate[i].key, key) != 0)
		i++;
	if (i == sizeof g_rate / sizeof g_rate[0])
		return; /* full: more keys than cases, cannot happen */
	if (i == g_nrate) {
		snprintf(g_rate[i].key, sizeof g_rate[i].key, "%s", key);
		g_nrate++;
	}
	g_rate[i].v = v;
}

static double
rate(const char *key)
{
	for (size_t i = 0; i < g_nrate; i++)
		if (strcmp(g_rate[i].key, key) == 0)
			return g_rate[i].v;
	return 0;
}

static int
rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void
rm_rf(const char *p)
{
	nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void
fresh_dir(char *d, size_t n, const char *tag)
{
	snprintf(d, n, "%s/%s-%d", g_root, tag, g_case++);
	rm_rf(d);
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- T threads started at once ----------------------------------------- */

typedef void (*thread_fn)(void *ctx, int t);

struct start {
	thread_fn fn;
	void *ctx;
	int ready;
	bool go;
};

struct start_arg {
	struct start *s;
	int t;
};

static void *
thread_main(void *p)
{
	const struct start_arg *a = p;
	/* acq_rel: counts arrivals; pairs with the acquire load in run_threads. */
	__atomic_fetch_add(&a->s->ready, 1, __ATOMIC_ACQ_REL);
	/* acquire: pairs with the release store of go in run_threads. */
	while (!__atomic_load_n(&a->s->go, __ATOMIC_ACQUIRE))
		sched_yield();
	a->s->fn(a->s->ctx, a->t);
	return NULL;
}

/* Starts nthreads (at most MAX_THREADS) threads at once, each running
 * fn(ctx, its index); returns the seconds from the start to the last join. */
static double
run_threads(int nthreads, thread_fn fn, void *ctx)
{
	struct start s = {fn, ctx, 0, false};
	struct start_arg args[MAX_THREADS];
	pthread_t th[MAX_THREADS];

	if (nthreads > MAX_THREADS)
		abort();
	for (int t = 0; t < nthreads; t++) {
		args[t].s = &s;
		args[t].t = t;
		if (pthread_create(&th[t], NULL, thread_main, &args[t]) != 0)
			abort();
	}
	/* acquire: pairs with the threads' acq_rel arrivals. */
	while (__atomic_load_n(&s.ready, __ATOMIC_ACQUIRE) < nthreads)
		sched_yield();
	const double t0 = now_s();
	__atomic_store_n(&s.go, true, __ATOMIC_RELEASE); /* pairs with the acquire loads in thread_main */
	for (int t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	return now_s() - t0;
}

/* ---- quay appends ------------------------------------------------------- */

static const char *
mode_name(unsigned m)
{
	return m == QUAY_WAL_SYNC ? "SYNC" : m == QUAY_WAL_INTERVAL ? "INTERVAL" : "NONE";
}

/* A record: u32 thread, u64 seq, then filler derived from both. */
static void
fill_rec(unsigned char *p, size_t len, uint32_t t, uint64_t seq)
{
	memcpy(p, &t, 4);
	memcpy(p + 4, &seq, 8);
	for (size_t i = 12; i < len; i++)
		p[i] = (unsigned char)(seq + i + t);
}

struct check_ctx {
	size_t len;
	size_t nthreads;
	uint64_t *next; /* per thread: the next seq expected */
	uint64_t records;
	bool bad;
};

static int
check_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct check_ctx *c = ctx;
	const unsigned char *d = data;
	uint32_t t;
	uint64_t seq;

	(void)lsn;
	if (type != 1 || len != c->len) {
		c->bad = true;
		return 1;
	}
	memcpy(&t, d, 4);
	memcpy(&seq, d + 4, 8);
	if (t >= c->nthreads || seq != c->next[t]) {
		c->bad = true;
		return 1;
	}
	if (len > 12) { /* spot-check the last byte */
		const unsigned char want = (unsigned char)(seq + (len - 1) + t);
		if (d[len - 1] != want) {
			c->bad = true;
			return 1;
		}
	}
	c->next[t]++;
	c->records++;
	return 0;
}

/* Reopens dir read-only and checks it holds exactly acked[t] records of
 * each thread t < nthreads, in order. Returns true, or false with what is
 * wrong in why. */
static bool
verify_log(const char *dir, size_t len, const uint64_t *acked, size_t nthreads, char *why, size_t whylen)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	quay_wal *w;

	o.flags = QUAY_WAL_READONLY;
	int r = quay_wal_open(dir, &o, &w);
	if (r != 0) {
		snprintf(why, whylen, "reopen: %s", quay_strerror(r));
		return false;
	}
	struct check_ctx c = {len, nthreads, calloc(nthreads, sizeof(uint64_t)), 0, false};
	if (c.next == NULL)
		abort();
	r = quay_wal_replay(w, 0, check_visit, &c);
	quay_wal_close(w);
	bool ok = true;
	if (r != 0 || c.bad) {
		snprintf(why, whylen, "replay found a wrong record");
		ok = false;
	}
	for (size_t t = 0; ok && t < nthreads; t++)
		if (c.next[t] != acked[t]) {
			snprintf(why, whylen, "thread %zu: %" PRIu64 " acked, %" PRIu64 " recovered", t, acked[t],
			    c.next[t]);
			ok = false;
		}
	free(c.next);
	return ok;
}

struct append_run {
	quay_wal *w;
	size_t len;
	double limit_s;
	uint64_t byte_cap;
	uint64_t bytes; /* a soft cap on the volume: relaxed, see the top */
	int err;        /* the last append error: relaxed, read after the joins */
	uint64_t acked[MAX_THREADS];
};

static void
append_thread(void *ctx, int t)
{
	struct append_run *a = ctx;
	unsigned char *buf = calloc(1, a->len);
	const double deadline = now_s() + a->limit_s;
	uint64_t n = 0;

	if (buf == NULL)
		abort();
	for (;;) {
		if ((n & 15) == 0) {
			if (now_s() >= deadline)
				break;
			/* relaxed: a soft cap on the volume, no data depends on it. */
			if (__atomic_load_n(&a->bytes, __ATOMIC_RELAXED) >= a->byte_cap)
				break;
		}
		fill_rec(buf, a->len, (uint32_t)t, n);
		const int e = quay_wal_append(a->w, 1, buf, a->len, NULL);
		if (e != 0) {
			__atomic_store_n(&a->err, e, __ATOMIC_RELAXED); /* read after the joins */
			break;
		}
		n++;
		if ((n & 15) == 0)
			__atomic_fetch_add(&a->bytes, 16 * a->len, __ATOMIC_RELAXED); /* as above */
	}
	a->acked[t] = n;
	free(buf);
}

static void
bm_append(qb_state *st, void *arg)
{
	const unsigned mode = (unsigned)qb_range_of(st, 0);
	const size_t len = (size_t)qb_range_of(st, 1);
	const int nthreads = (int)qb_range_of(st, 2);

	(void)arg;
	while (qb_keep_running(st)) {
		char dir[PATH_MAX + 32], why[WHY_MAX] = "";
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		struct append_run a;
		quay_wal *w;

		fresh_dir(dir, sizeof dir, "append");
		o.sync_mode = mode;
		int r = quay_wal_open(dir, &o, &w);
		if (r != 0) {
			qb_skip_with_errorf(st, "open: %s", quay_strerror(r));
			break;
		}
		memset(&a, 0, sizeof a);
		a.w = w;
		a.len = len;
		a.limit_s = mode == QUAY_WAL_SYNC ? 0.6 : 0.3;
		a.byte_cap = 96 * MIB;
		const double el = run_threads(nthreads, append_thread, &a);
		qb_set_iteration_time(st, el);
		struct quay_wal_info info;
		const uint64_t syncs = quay_wal_info(w, &info) == 0 ? info.syncs : 0;
		const int rc = quay_wal_close(w);
		uint64_t total = 0;
		for (int t = 0; t < nthreads; t++)
			total += a.acked[t];
		const int err = __atomic_load_n(&a.err, __ATOMIC_RELAXED); /* after the joins */
		if (err != 0)
			snprintf(why, sizeof why, "append: %s", quay_strerror(err));
		else if (rc != 0)
			snprintf(why, sizeof why, "close: %s", quay_strerror(rc));
		else
			verify_log(dir, len, a.acked, (size_t)nthreads, why, sizeof why);
		rm_rf(dir);
		if (why[0] != '\0') {
			qb_skip_with_error(st, why);
			break;
		}
		qb_set_items_processed(st, (int64_t)total);
		qb_set_bytes_processed(st, (int64_t)(total * len));
		const double r_s = (double)total / el;
		qb_counter(st, "MB_per_s", r_s * (double)len / 1e6, QB_COUNTER_DEFAULT);
		/* fdatasyncs per acknowledged append: 1 means no group commit,
		 * 1/T the best T waiting threads can get. */
		qb_counter(st, "syncs_per_append", total > 0 ? (double)syncs / (double)total : 0.0, QB_COUNTER_DEFAULT);
		char key[64];
		snprintf(key, sizeof key, "append/%s/%zu/%d", mode_name(mode), len, nthreads);
		set_rate(key, r_s);
	}
}

static void
append_args(qb_bench *b)
{
	static const int64_t modes[] = {QUAY_WAL_SYNC, QUAY_WAL_INTERVAL, QUAY_WAL_NONE};
	static const int64_t lens[] = {64, 1024, 16384};
	static const int64_t threads[] = {1, 2, 8};

	for (size_t m = 0; m < 3; m++)
		for (size_t l = 0; l < 3; l++)
			for (size_t t = 0; t < 3; t++)
				QB_ARGS(b, modes[m], lens[l], threads[t]);
	/* Group commit grows with the number of waiting appenders. */
	QB_ARGS(b, QUAY_WAL_SYNC, 64, 32);
	QB_ARGS(b, QUAY_WAL_SYNC, 64, 128);
	QB_ARG_NAMES(b, "mode", "size", "threads");
}

/* ---- naive: pwrite + fdatasync per message ------------------------------ */

struct naive_run {
	const int *fds;
	bool shared;
	size_t len;
	double limit_s;
	uint64_t off; /* shared file: the next free offset (relaxed, see the top) */
	int err;      /* relaxed, read after the joins */
	uint64_t acked[MAX_THREADS];
};

static void
naive_thread(void *ctx, int t)
{
	struct naive_run *a = ctx;
	const int fd = a->fds[a->shared ? 0 : t];
	unsigned char buf[64];
	uint64_t n = 0, myoff = 0;
	const double deadline = now_s() + a->limit_s;

	while (now_s() < deadline) {
		fill_rec(buf, a->len, (uint32_t)t, n);
		/* relaxed: only reserves distinct file ranges. */
		const uint64_t at = a->shared ? __atomic_fetch_add(&a->off, a->len, __ATOMIC_RELAXED) : myoff;
		if (fd < 0 || pwrite(fd, buf, a->len, (off_t)at) != (ssize_t)a->len || fdatasync(fd) != 0) {
			__atomic_store_n(&a->err, errno ? errno : EIO, __ATOMIC_RELAXED); /* read after the joins */
			break;
		}
		myoff += a->len;
		n++;
	}
	a->acked[t] = n;
}

static void
bm_naive(qb_state *st, void *arg)
{
	const bool shared = qb_range_of(st, 0) != 0;
	const int nthreads = (int)qb_range_of(st, 1);
	const size_t len = 64;

	(void)arg;
	while (qb_keep_running(st)) {
		char dir[PATH_MAX + 32], path[PATH_MAX + 64];
		int fds[MAX_THREADS];
		const int nfds = shared ? 1 : nthreads;
		struct naive_run a;

		fresh_dir(dir, sizeof dir, "naive");
		mkdir(dir, 0755);
		for (int i = 0; i < nfds; i++) {
			snprintf(path, sizeof path, "%s/f%d", dir, i);
			fds[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		}
		memset(&a, 0, sizeof a);
		a.fds = fds;
		a.shared = shared;
		a.len = len;
		a.limit_s = 0.6;
		const double el = run_threads(nthreads, naive_thread, &a);
		qb_set_iteration_time(st, el);
		uint64_t total = 0;
		for (int t = 0; t < nthreads; t++)
			total += a.acked[t];
		uint64_t size = 0;
		for (int i = 0; i < nfds; i++) {
			struct stat sb;
			if (fds[i] >= 0 && fstat(fds[i], &sb) == 0)
				size += (uint64_t)sb.st_size;
			if (fds[i] >= 0)
				close(fds[i]);
		}
		rm_rf(dir);
		const int err = __atomic_load_n(&a.err, __ATOMIC_RELAXED); /* after the joins */
		if (err != 0) {
			qb_skip_with_errorf(st, "write/fdatasync: %s", strerror(err));
			break;
		}
		if (size != total * len) {
			qb_skip_with_errorf(st, "file bytes %" PRIu64 " != %" PRIu64, size, total * len);
			break;
		}
		qb_set_items_processed(st, (int64_t)total);
		qb_set_bytes_processed(st, (int64_t)(total * len));
		char key[64];
		snprintf(key, sizeof key, "naive/%s/%d", shared ? "shared" : "own", nthreads);
		set_rate(key, (double)total / el);
	}
}

/* ---- SQLite in WAL mode as a durable queue ------------------------------ */

static bool
sql_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
}

struct sqlite_run {
	sqlite3 **dbs;
	size_t len;
	double limit_s;
	int err;       /* relaxed, read after the joins */
	uint64_t busy; /* SQLITE_BUSY retries: relaxed, read after the joins */
	uint64_t acked[MAX_THREADS];
};

static void
sqlite_thread(void *ctx, int t)
{
	struct sqlite_run *a = ctx;
	sqlite3 *db = a->dbs[t];
	sqlite3_stmt *ins = NULL;
	unsigned char buf[64];
	uint64_t n = 0;

	if (sqlite3_prepare_v2(db, "INSERT INTO q(body) VALUES (?)", -1, &ins, NULL) != SQLITE_OK) {
		__atomic_store_n(&a->err, 1, __ATOMIC_RELAXED); /* read after the joins */
		return;
	}
	const double deadline = now_s() + a->limit_s;
	while (now_s() < deadline) {
		fill_rec(buf, a->len, (uint32_t)t, n);
		sqlite3_bind_blob(ins, 1, buf, (int)a->len, SQLITE_STATIC);
		const int rc = sqlite3_step(ins);
		sqlite3_reset(ins);
		if (rc == SQLITE_BUSY) {                                   /* retried: not acknowledged */
			__atomic_fetch_add(&a->busy, 1, __ATOMIC_RELAXED); /* read after the joins */
			continue;
		}
		if (rc != SQLITE_DONE) {
			__atomic_store_n(&a->err, rc, __ATOMIC_RELAXED); /* read after the joins */
			break;
		}
		n++;
	}
	sqlite3_finalize(ins);
	a->acked[t] = n;
}

static void
bm_sqlite(qb_state *st, void *arg)
{
	const bool full = qb_range_of(st, 0) != 0;
	const int nthreads = (int)qb_range_of(st, 1);
	const size_t len = 64;

	(void)arg;
	while (qb_keep_running(st)) {
		char dir[PATH_MAX + 32], path[PATH_MAX + 64];
		sqlite3 *db0 = NULL;
		sqlite3 *dbs[MAX_THREADS] = {NULL};
		struct sqlite_run a;

		fresh_dir(dir, sizeof dir, "sqlite");
		mkdir(dir, 0755);
		snprintf(path, sizeof path, "%s/q.db", dir);
		if (sqlite3_open(path, &db0) != SQLITE_OK || !sql_exec(db0, "PRAGMA journal_mode=WAL") ||
		    !sql_exec(db0, "CREATE TABLE q(id INTEGER PRIMARY KEY, body BLOB NOT NULL)")) {
			qb_skip_with_errorf(st, "sqlite setup: %s", sqlite3_errmsg(db0));
			sqlite3_close(db0);
			break;
		}
		memset(&a, 0, sizeof a);
		a.dbs = dbs;
		a.len = len;
		a.limit_s = 0.6;
		for (int t = 0; t < nthreads; t++) {
			sqlite3 *db;
			if (sqlite3_open(path, &db) != SQLITE_OK) {
				dbs[t] = db; /* closed below, as a handle that failed to open must be */
				a.err = 1;
				break;
			}
			sqlite3_busy_timeout(db, 5000);
			if (!sql_exec(db, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"))
				a.err = 1;
			dbs[t] = db;
		}
		double el = 0;
		if (a.err == 0) /* no thread runs yet */
			el = run_threads(nthreads, sqlite_thread, &a);
		qb_set_iteration_time(st, el > 0 ? el : 1e-9);
		for (int t = 0; t < nthreads; t++)
			sqlite3_close(dbs[t]);
		uint64_t total = 0;
		for (int t = 0; t < nthreads; t++)
			total += a.acked[t];
		int64_t rows = -1;
		sqlite3_stmt *cnt = NULL;
		if (sqlite3_prepare_v2(db0, "SELECT count(*) FROM q", -1, &cnt, NULL) == SQLITE_OK &&
		    sqlite3_step(cnt) == SQLITE_ROW)
			rows = sqlite3_column_int64(cnt, 0);
		sqlite3_finalize(cnt);
		sqlite3_close(db0);
		rm_rf(dir);
		const int err = __atomic_load_n(&a.err, __ATOMIC_RELAXED); /* after the joins */
		if (err != 0) {
			qb_skip_with_errorf(st, "sqlite insert failed: %d", err);
			break;
		}
		if (rows < 0 || (uint64_t)rows != total) {
			qb_skip_with_errorf(st, "sqlite rows %" PRId64 " != inserts %" PRIu64, rows, total);
			break;
		}
		qb_set_items_processed(st, (int64_t)total);
		qb_set_bytes_processed(st, (int64_t)(total * len));
		qb_counter(st, "busy_retries", (double)__atomic_load_n(&a.busy, __ATOMIC_RELAXED), /* after the joins */
		    QB_COUNTER_DEFAULT);
		char key[64];
		snprintf(key, sizeof key, "sqlite/%s/%d", full ? "FULL" : "NORMAL", nthreads);
		set_rate(key, (double)total / el);
	}
}

/* ---- raw sequential bandwidth, and NONE doing the same work ------------- */

static void
bm_raw_write(qb_state *st, void *arg)
{
	(void)arg;
	while (qb_keep_running(st)) {
		char dir[PATH_MAX + 32], path[PATH_MAX + 64];

		fresh_dir(dir, sizeof dir, "raw");
		mkdir(dir, 0755);
		snprintf(path, sizeof path, "%s/raw", dir);
		const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		unsigned char *buf = malloc(MIB);
		if (buf == NULL)
			abort();
		memset(buf, 0x5a, MIB);
		bool ok = fd >= 0;
		const double t0 = now_s();
		for (uint64_t off = 0; ok && off < SEQ_BYTES; off += MIB)
			ok = pwrite(fd, buf, MIB, (off_t)off) == (ssize_t)MIB;
		ok = ok && fdatasync(fd) == 0;
		const double el = now_s() - t0;
		struct stat sb;
		ok = ok && fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == SEQ_BYTES;
		if (fd >= 0)
			close(fd);
		free(buf);
		rm_rf(dir);
		if (!ok) {
			qb_skip_with_error(st, "raw write failed or short");
			break;
		}
		qb_set_iteration_time(st, el);
		qb_set_bytes_processed(st, (int64_t)SEQ_BYTES);
		qb_counter(st, "MB_per_s", (double)SEQ_BYTES / el / 1e6, QB_COUNTER_DEFAULT);
		set_rate("raw_MBps", (double)SEQ_BYTES / el / 1e6);
	}
}

static void
bm_none_vs_raw(qb_state *st, void *arg)
{
	const size_t len = 16384;

	(void)arg;
	while (qb_keep_running(st)) {
		char dir[PATH_MAX + 32], why[WHY_MAX] = "";
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		quay_wal *w;

		fresh_dir(dir, sizeof dir, "none");
		o.sync_mode = QUAY_WAL_NONE;
		int r = quay_wal_open(dir, &o, &w);
		if (r != 0) {
			qb_skip_with_errorf(st, "open: %s", quay_strerror(r));
			break;
		}
		unsigned char *buf = calloc(1, len);
		if (buf == NULL)
			abort();
		uint64_t n = 0;
		const uint64_t nrec = SEQ_BYTES / len;
		const double t0 = now_s();
		for (; r == 0 && n < nrec; n++) {
			fill_rec(buf, len, 0, n);
			r = quay_wal_append(w, 1, buf, len, NULL);
		}
		if (r == 0)
			r = quay_wal_sync(w, 0);
		const double el = now_s() - t0;
		const int rc = quay_wal_close(w);
		free(buf);
		if (r != 0)
			snprintf(why, sizeof why, "append/sync: %s", quay_strerror(r));
		else if (rc != 0)
			snprintf(why, sizeof why, "close: %s", quay_strerror(rc));
		else
			verify_log(dir, len, &nrec, 1, why, sizeof why);
		rm_rf(dir);
		if (why[0] != '\0') {
			qb_skip_with_error(st, why);
			break;
		}
		qb_set_iteration_time(st, el);
		qb_set_items_processed(st, (int64_t)nrec);
		qb_set_bytes_processed(st, (int64_t)SEQ_BYTES);
		qb_counter(st, "MB_per_s", (double)SEQ_BYTES / el / 1e6, QB_COUNTER_DEFAULT);
		set_rate("none_MBps", (double)SEQ_BYTES / el / 1e6);
	}
}

/* ---- recovery ----------------------------------------------------------- */

static bool
drop_caches(void)
{
	sync();
	const int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd < 0)
		return false;
	const bool ok = write(fd, "1", 1) == 1;
	close(fd);
	return ok;
}

static void
bm_recovery(qb_state *st, void *arg)
{
	const size_t len = 16384;
	uint64_t mb = 256;
	const char *e = getenv("QUAY_BENCH_WAL_RECOVERY_MB");

	(void)arg;
	if (e != NULL && strtoull(e, NULL, 10) != 0)
		mb = strtoull(e, NULL, 10);
	while (qb_keep_running(st)) {
		char dir[PATH_MAX + 32], why[WHY_MAX] = "";
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		quay_wal *w;

		fresh_dir(dir, sizeof dir, "recovery");
		o.sync_mode = QUAY_WAL_NONE;
		int r = quay_wal_open(dir, &o, &w);
		if (r != 0) {
			qb_skip_with_errorf(st, "open: %s", quay_strerror(r));
			break;
		}
		unsigned char *buf = calloc(1, len);
		if (buf == NULL)
			abort();
		const uint64_t nrec = mb * MIB / len;
		for (uint64_t n = 0; r == 0 && n < nrec; n++) {
			fill_rec(buf, len, 0, n);
			r = quay_wal_append(w, 1, buf, len, NULL);
		}
		free(buf);
		const int rc = quay_wal_close(w);
		if (r != 0 || rc != 0) {
			rm_rf(dir);
			qb_skip_with_error(st, "writing the log failed");
			break;
		}
		/* First open after dropping the page cache (if allowed), then a
		 * second one with the log in the page cache. */
		const bool cold = drop_caches();
		struct quay_wal_report rep;
		double el[2] = {0, 0};
		memset(&rep, 0, sizeof rep);
		for (int k = 0; k < 2 && why[0] == '\0'; k++) {
			o = (struct quay_wal_opts)QUAY_WAL_OPTS_INIT;
			o.report = &rep;
			const double t0 = now_s();
			r = quay_wal_open(dir, &o, &w);
			el[k] = now_s() - t0;
			if (r == 0)
				quay_wal_close(w);
			if (r != 0 || rep.records != nrec || rep.tail_cut || rep.corrupt)
				snprintf(why, sizeof why, "recovery found %" PRIu64 " of %" PRIu64 " records: %s",
				    rep.records, nrec, quay_strerror(r));
		}
		rm_rf(dir);
		if (why[0] != '\0') {
			qb_skip_with_error(st, why);
			break;
		}
		qb_set_iteration_time(st, el[0]);
		qb_set_items_processed(st, (int64_t)rep.records);
		qb_set_bytes_processed(st, (int64_t)rep.bytes);
		qb_counter(st, "MB_per_s", (double)rep.bytes / el[0] / 1e6, QB_COUNTER_DEFAULT);
		qb_counter(st, "MB_per_s_warm", (double)rep.bytes / el[1] / 1e6, QB_COUNTER_DEFAULT);
		qb_counter(st, "log_MB", (double)rep.bytes / 1e6, QB_COUNTER_DEFAULT);
		qb_counter(st, "segments", (double)rep.segments, QB_COUNTER_DEFAULT);
		qb_counter(st, "cold", cold ? 1 : 0, QB_COUNTER_DEFAULT);
		set_rate("recovery_MBps", (double)rep.bytes / el[0] / 1e6);
		set_rate("recovery_warm_MBps", (double)rep.bytes / el[1] / 1e6);
		set_rate("recovery_cold", cold ? 1 : 0);
	}
}

/* ---- the summary against the targets ---------------------------- */

static void
ratio_line(const char *what, double a, double b, double target)
{
	if (a <= 0 || b <= 0) {
		printf("  %-52s n/a (a case did not run)\n", what);
		return;
	}
	const double x = a / b;
	printf("  %-52s %10.2fx  target %5.2fx  %s\n", what, x, target, x >= target ? "MET" : "NOT MET");
}

static void
summary(void)
{
	printf("\nTargets (issue 6), this run:\n");
	const double s8 = rate("append/SYNC/64/8");
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
	const double rec = rate("recovery_MBps");
	const double warm = rate("recovery_warm_MBps");
	printf("  %-52s %10.0f MB/s target 500 MB/s  %s\n",
	    rate("recovery_cold") > 0 ? "recovery, first open (page cache dropped)" :
	                                "recovery, first open (cache NOT dropped)",
	    rec, rec >= 500 ? "MET" : "NOT MET");
	printf("  %-52s %10.0f MB/s target 500 MB/s  %s\n", "recovery, second open (page cache warm)", warm,
	    warm >= 500 ? "MET" : "NOT MET");
	printf("  durable queue SYNC send: see bench_queue_durable\n");
}

/* Manual time, one iteration, milliseconds: every benchmark here. */
static qb_bench *
once_ms(qb_bench *b)
{
	return qb_unit(qb_iterations(qb_manual_time(b), 1), QB_MS);
}

int
main(int argc, char **argv)
{
	qb_bench *b;

	once_ms(qb_register("BM_raw_write", bm_raw_write, NULL));
	once_ms(qb_register("BM_none_vs_raw", bm_none_vs_raw, NULL));
	b = QB_ARG_NAMES(qb_register("BM_naive", bm_naive, NULL), "shared", "threads");
	QB_ARGS(b, 0, 1);
	QB_ARGS(b, 0, 8);
	QB_ARGS(b, 1, 1);
	QB_ARGS(b, 1, 8);
	once_ms(b);
	b = QB_ARG_NAMES(qb_register("BM_sqlite", bm_sqlite, NULL), "full", "threads");
	QB_ARGS(b, 1, 1);
	QB_ARGS(b, 1, 8);
	QB_ARGS(b, 0, 1);
	QB_ARGS(b, 0, 8);
	once_ms(b);
	b = qb_register("BM_append", bm_append, NULL);
	append_args(b);
	once_ms(b);
	once_ms(qb_register("BM_recovery", bm_recovery, NULL));

	int rc = qb_init(&argc, argv);
	if (rc != 0)
		return rc;
	const char *d = getenv("QUAY_BENCH_DIR");
	if (d != NULL && *d != '\0') {
		snprintf(g_root, sizeof g_root, "%s/bench_wal.%d", d, (int)getpid());
		if (mkdir(g_root, 0755) != 0) {
			fprintf(stderr, "bench_wal: cannot make %s: %s\n", g_root, strerror(errno));
			return 2;
		}
	} else {
		snprintf(g_root, sizeof g_root, "/var/tmp/quay-bench-wal.XXXXXX");
		if (mkdtemp(g_root) == NULL) {
			fprintf(stderr, "bench_wal: mkdtemp under /var/tmp: %s\n", strerror(errno));
			return 2;
		}
	}
	printf("bench_wal: files under %s\n", g_root);
	rc = qb_run();
	summary();
	rm_rf(g_root);
	return rc;
}
