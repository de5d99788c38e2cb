/* SPDX-License-Identifier: MIT */
/*
 * Durable queue sends (docs/DURABILITY.md): quay_queue_send and
 * quay_queue_send_batch(32) on a queue logging to the WAL in SYNC,
 * INTERVAL and NONE modes, from 1 and 8 threads; peers in the same binary:
 * write()+fdatasync() per message (the naive baseline), SQLite in WAL
 * mode as a durable queue (one INSERT per transaction, synchronous=FULL,
 * a connection per thread, busy_timeout) and, when built with it, RocksDB
 * doing one synced Put per message. Every benchmark checks its result:
 * the queue is reopened and its restored messages counted; the
 * baseline's file size, the SQLite row count and the RocksDB key count
 * are checked. C bodies, registered through bench/shim/quay_bench.h;
 * SQLite and RocksDB through their C APIs (sqlite3.h, rocksdb/c.h).
 * Files go under $QUAY_BENCH_DIR or a mkdtemp in /var/tmp, removed after.
 *
 * Threads of one benchmark share its run's state (g_dq, g_fs, g_sq,
 * g_rk): thread 0 sets it up before the timed loop and checks it after;
 * the shim's loop starts and ends with a barrier of all the threads
 * (Google Benchmark's), which orders the set-up before the others' use
 * and their last sends before the check. The counts the threads share
 * are relaxed atomic adds, read after that barrier.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef QUAY_BENCH_ROCKSDB
#include <rocksdb/c.h>
#endif

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "quay_bench.h"

#define BODY 64
#define PATH_MAX_LEN 512
#define RECV_ITERS 2000 /* BM_durable_receive's fixed iterations */

/* A relaxed count shared by the threads of one run (see the top). */
static void
count_add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t
count_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* A fresh directory in out (PATH_MAX_LEN bytes); false on failure. */
static bool
make_dir(char *out)
{
	const char *base = getenv("QUAY_BENCH_DIR");

	if ((size_t)snprintf(out, PATH_MAX_LEN, "%s/quay-bench-dq-XXXXXX", base != NULL ? base : "/var/tmp") >=
	    PATH_MAX_LEN)
		return false;
	return mkdtemp(out) != NULL;
}

static void
rm_dir(const char *d)
{
	DIR *dh = opendir(d);
	struct dirent *e;
	char p[PATH_MAX_LEN + 256];

	if (dh == NULL)
		return;
	while ((e = readdir(dh)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", d, e->d_name);
		unlink(p);
	}
	closedir(dh);
	rmdir(d);
}

/* ---- quay durable queue ----------------------------------------------- */

static struct {
	char dir[PATH_MAX_LEN];
	quay_pool *pool;
	quay_wal *wal;
	quay_queue *q;
	uint64_t sent, failed; /* count_add */
	uint64_t syncs0;
} g_dq;

static int
open_queue(unsigned mode, quay_queue **q, unsigned flags, int64_t dedup_window)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	wo.sync_mode = mode;
	wo.interval_ms = 10;
	if (quay_wal_open(g_dq.dir, &wo, &g_dq.wal) != 0)
		return -1;
	o.name = "bench";
	o.capacity = (size_t)1 << 20;
	o.wal = g_dq.wal;
	o.pool = g_dq.pool;
	o.flags = flags;
	o.dedup_window_ns = dedup_window;
	return quay_queue_create(&o, q);
}

static bool
dq_setup(unsigned mode, unsigned flags, int64_t dedup_window)
{
	g_dq.pool = NULL;
	g_dq.wal = NULL;
	g_dq.q = NULL;
	return make_dir(g_dq.dir) && quay_pool_create((size_t)256 << 20, NULL, &g_dq.pool) == 0 &&
	    open_queue(mode, &g_dq.q, flags, dedup_window) == 0;
}

static void
dq_teardown(void)
{
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	quay_pool_destroy(g_dq.pool);
	rm_dir(g_dq.dir);
	g_dq.q = NULL;
	g_dq.wal = NULL;
	g_dq.pool = NULL;
}

/* Receive cost with and without the delivery log (issue 13): the queue
 * is filled untimed (one send_batch per 32), then each iteration is one
 * receive (batch 1) or one receive_batch of 32, timed; the leases are
 * acked after the loop. Checked: every receive got its messages, and the
 * WAL got exactly one record per delivery with the log and none without. */
static void
bm_durable_receive(qb_state *st, void *arg)
{
	const unsigned mode = (unsigned)qb_range_of(st, 0);
	const bool dlog = qb_range_of(st, 1) != 0;
	const size_t batch = (size_t)qb_range_of(st, 2);
	const size_t total = (size_t)RECV_ITERS * batch;
	unsigned char body[BODY] = {1};
	quay_lease *leases;
	struct quay_wal_info a, b;
	size_t got = 0;

	(void)arg;
	leases = calloc(total, sizeof(*leases));
	if (leases == NULL || !dq_setup(mode, dlog ? 0u : QUAY_QUEUE_NO_DELIVERY_LOG, 0)) {
		qb_skip_with_error(st, "setup failed");
		free(leases);
		return;
	}
	for (size_t i = 0; i < total; i += 32) {
		quay_msg *m[32];
		size_t k = total - i < 32 ? total - i : 32;

		for (size_t j = 0; j < k; j++) {
			if (quay_msg_new(g_dq.pool, body, sizeof(body), &m[j]) != 0) {
				qb_skip_with_error(st, "msg_new failed");
				free(leases);
				return;
			}
		}
		if (quay_queue_send_batch(g_dq.q, m, k, NULL) != (int)k) {
			qb_skip_with_error(st, "fill failed");
			free(leases);
			return;
		}
	}
	quay_wal_info(g_dq.wal, &a);
	while (qb_keep_running(st)) {
		if (batch == 1)
			got += quay_queue_receive(g_dq.q, &leases[got], 0) == 0 ? 1 : 0;
		else
			got += quay_queue_receive_batch(g_dq.q, &leases[got], batch, 0);
	}
	quay_wal_info(g_dq.wal, &b);
	qb_set_items_processed(st, (int64_t)got);
	qb_counter(st, "wal_records_per_receive", got ? (double)(b.records - a.records) / (double)got : 0, 0);
	qb_counter(st, "syncs_per_call", (double)(b.syncs - a.syncs) / (double)qb_iterations_done(st), 0);
	if (got != total)
		qb_skip_with_error(st, "a receive came back short");
	else if (b.records - a.records != (dlog ? total : 0))
		qb_skip_with_error(st, "delivery records != deliveries");
	for (size_t i = 0; i < got; i++) {
		(void)quay_queue_ack(g_dq.q, &leases[i]);
		quay_msg_unref(leases[i].msg);
	}
	free(leases);
	dq_teardown();
}

static void
bm_durable_send(qb_state *st, void *arg)
{
	const unsigned mode = (unsigned)qb_range_of(st, 0);
	const size_t batch = (size_t)qb_range_of(st, 1);
	unsigned char body[BODY] = {1};

	(void)arg;
	if (qb_thread_index(st) == 0) {
		g_dq.sent = 0;
		g_dq.failed = 0;
		if (!dq_setup(mode, 0, 0)) {
			qb_skip_with_error(st, "setup failed");
			return;
		}
		struct quay_wal_info wi;
		quay_wal_info(g_dq.wal, &wi);
		g_dq.syncs0 = wi.syncs;
	}
	while (qb_keep_running(st)) {
		quay_msg *m[32];
		int res[32];

		for (size_t i = 0; i < batch; i++)
			if (quay_msg_new(g_dq.pool, body, sizeof(body), &m[i]) != 0)
				m[i] = NULL;
		if (batch == 1) {
			res[0] = m[0] != NULL ? quay_queue_send(g_dq.q, m[0]) : -ENOMEM;
		} else {
			bool ok = true;
			for (size_t i = 0; i < batch; i++)
				ok = ok && m[i] != NULL;
			if (!ok || quay_queue_send_batch(g_dq.q, m, batch, res) < 0)
				for (size_t i = 0; i < batch; i++)
					res[i] = -ENOMEM;
		}
		for (size_t i = 0; i < batch; i++) {
			if (res[i] == 0) {
				count_add(&g_dq.sent, 1);
			} else {
				count_add(&g_dq.failed, 1);
				if (m[i] != NULL)
					quay_msg_unref(m[i]);
			}
		}
	}
	qb_set_items_processed(st, (int64_t)(qb_iterations_done(st) * batch));
	if (qb_thread_index(st) == 0) {
		struct quay_wal_info wi;
		struct quay_queue_stats qs;
		uint64_t sent = count_get(&g_dq.sent);

		quay_wal_info(g_dq.wal, &wi);
		qb_counter(st, "msgs_per_fdatasync",
		    wi.syncs > g_dq.syncs0 ? (double)sent / (double)(wi.syncs - g_dq.syncs0) : 0.0, 0);
		/* Check: reopen and count what comes back. */
		quay_queue_destroy(g_dq.q);
		quay_wal_close(g_dq.wal);
		g_dq.q = NULL;
		g_dq.wal = NULL;
		if (open_queue(mode, &g_dq.q, 0, 0) != 0 || quay_queue_stats(g_dq.q, &qs) != 0)
			qb_skip_with_error(st, "reopen failed");
		else if (count_get(&g_dq.failed) != 0 || qs.restored != sent)
			qb_skip_with_error(st, "restored != sent");
		dq_teardown();
	}
}

/* Durable dedup (issue 13): one thread, single sends of 64-byte bodies,
 * without dedup, with a unique quay-dedup-id per send, and with content
 * dedup (QUAY_QUEUE_CONTENT_DEDUP, unique bodies), window one hour. The
 * window needs nothing per send in the log (replay rebuilds it from the
 * send ADDs; compaction writes it): counters log_bytes_per_send (WAL
 * bytes appended / sends, a dedup id adds its header to the image) and
 * reopen_ms (the restart that rebuilds the window, 2,000 sends in the
 * log). Checked: every send restored after the reopen, and, with dedup,
 * the first message sent again is refused as a duplicate. */
static void
bm_durable_send_dedup(qb_state *st, void *arg)
{
	const unsigned mode = (unsigned)qb_range_of(st, 0);
	const int kind = (int)qb_range_of(st, 1); /* 0 none, 1 id, 2 content */
	const int64_t win = kind != 0 ? (int64_t)3600 * 1000000000 : 0;
	const unsigned flags = kind == 2 ? QUAY_QUEUE_CONTENT_DEDUP : 0u;
	unsigned char body[BODY] = {1};
	struct quay_wal_info a, b;
	uint64_t n = 0, failed = 0;
	char id[32];

	(void)arg;
	if (!dq_setup(mode, flags, win)) {
		qb_skip_with_error(st, "setup failed");
		return;
	}
	quay_wal_info(g_dq.wal, &a);
	while (qb_keep_running(st)) {
		quay_msg *m = NULL;
		int rc = -ENOMEM;

		memcpy(body + 8, &n, sizeof(n)); /* unique bodies (content dedup) */
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
	qb_set_items_processed(st, (int64_t)n);
	qb_counter(st, "log_bytes_per_send", n != 0 ? (double)(b.bytes - a.bytes) / (double)n : 0.0, 0);
	/* Check: reopen (timed), count, and send the first message again. */
	struct quay_queue_stats qs;
	struct timespec t0, t1;
	int rc;

	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	g_dq.q = NULL;
	g_dq.wal = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = open_queue(mode, &g_dq.q, flags, win);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	qb_counter(st, "reopen_ms", (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6, 0);
	if (rc != 0 || quay_queue_stats(g_dq.q, &qs) != 0) {
		qb_skip_with_error(st, "reopen failed");
	} else if (failed != 0 || qs.restored != n) {
		qb_skip_with_error(st, "restored != sent");
	} else {
		quay_msg *m = NULL;
		uint64_t zero = 0;

		memcpy(body + 8, &zero, sizeof(zero));
		if (quay_msg_new_ex(g_dq.pool, body, sizeof(body), QUAY_MSG_HEADER_ROOM(1, 32), 0, &m) != 0 ||
		    (kind == 1 && quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "order-0", 7) != 0)) {
			qb_skip_with_error(st, "msg_new failed");
		} else {
			rc = quay_queue_send(g_dq.q, m);
			if (rc < 0)
				quay_msg_unref(m);
			if (rc != (kind != 0 ? QUAY_QUEUE_DUPLICATE : 0))
				qb_skip_with_error(st, "the window did not survive the restart");
		}
	}
	dq_teardown();
}

/* ---- peer: write() + fdatasync() per message ---------------------------- */

static struct {
	char dir[PATH_MAX_LEN];
	int fd;
	uint64_t off, errors; /* count_add */
} g_fs;

static void
bm_fdatasync_per_message(qb_state *st, void *arg)
{
	unsigned char body[BODY] = {2};

	(void)arg;
	if (qb_thread_index(st) == 0) {
		char path[PATH_MAX_LEN + 8];

		g_fs.off = 0;
		g_fs.errors = 0;
		g_fs.fd = -1;
		if (make_dir(g_fs.dir)) {
			snprintf(path, sizeof(path), "%s/log", g_fs.dir);
			g_fs.fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		}
		if (g_fs.fd < 0) {
			qb_skip_with_error(st, "open failed");
			return;
		}
	}
	while (qb_keep_running(st)) {
		uint64_t at = __atomic_fetch_add(&g_fs.off, BODY, __ATOMIC_RELAXED); /* a slot of its own */

		if (pwrite(g_fs.fd, body, BODY, (off_t)at) != (ssize_t)BODY || fdatasync(g_fs.fd) != 0)
			count_add(&g_fs.errors, 1);
	}
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
	if (qb_thread_index(st) == 0) {
		off_t size = lseek(g_fs.fd, 0, SEEK_END);

		if (count_get(&g_fs.errors) != 0 || (uint64_t)size != count_get(&g_fs.off))
			qb_skip_with_error(st, "size != messages written");
		close(g_fs.fd);
		rm_dir(g_fs.dir);
	}
}

/* ---- peer: SQLite WAL mode as a durable queue ---------------------------- */

static struct {
	char dir[PATH_MAX_LEN];
	uint64_t ok, errors; /* count_add */
} g_sq;

static sqlite3 *
sq_open(const char *sync)
{
	sqlite3 *db = NULL;
	char path[PATH_MAX_LEN + 8], pragmas[96];

	snprintf(path, sizeof(path), "%s/q.db", g_sq.dir);
	if (sqlite3_open(path, &db) != SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 10000);
	snprintf(pragmas, sizeof(pragmas), "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;", sync);
	sqlite3_exec(db, pragmas, NULL, NULL, NULL);
	return db;
}

static void
bm_sqlite_wal_insert(qb_state *st, void *arg)
{
	const char *sync = qb_range_of(st, 0) == 0 ? "FULL" : "NORMAL";
	unsigned char body[BODY] = {3};
	sqlite3 *db;
	sqlite3_stmt *stmt = NULL;

	(void)arg;
	if (qb_thread_index(st) == 0) {
		g_sq.ok = 0;
		g_sq.errors = 0;
		sqlite3 *d0 = make_dir(g_sq.dir) ? sq_open(sync) : NULL;
		if (d0 == NULL ||
		    sqlite3_exec(d0, "CREATE TABLE q(id INTEGER PRIMARY KEY, body BLOB)", NULL, NULL, NULL) !=
		        SQLITE_OK) {
			sqlite3_close(d0);
			qb_skip_with_error(st, "sqlite setup failed");
			return;
		}
		sqlite3_close(d0);
	}
	/* Each thread its own connection, opened before the loop's barrier
	 * can release it (thread 0 made the table first: the others retry). */
	db = NULL;
	for (int tries = 0; tries < 1000 && db == NULL; tries++) {
		db = sq_open(sync);
		if (db != NULL &&
		    sqlite3_prepare_v2(db, "INSERT INTO q(body) VALUES(?)", -1, &stmt, NULL) != SQLITE_OK) {
			sqlite3_close(db);
			db = NULL;
			usleep(1000);
		}
	}
	while (qb_keep_running(st)) {
		int rc;

		if (stmt == NULL) {
			count_add(&g_sq.errors, 1);
			continue;
		}
		sqlite3_bind_blob(stmt, 1, body, (int)BODY, SQLITE_STATIC);
		rc = sqlite3_step(stmt); /* autocommit: one transaction per message */
		sqlite3_reset(stmt);
		if (rc == SQLITE_DONE)
			count_add(&g_sq.ok, 1);
		else
			count_add(&g_sq.errors, 1);
	}
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	if (qb_thread_index(st) == 0) {
		sqlite3 *d0 = sq_open(sync);
		sqlite3_stmt *c = NULL;
		int64_t rows = -1;
		uint64_t ok = count_get(&g_sq.ok);

		if (d0 != NULL && sqlite3_prepare_v2(d0, "SELECT count(*) FROM q", -1, &c, NULL) == SQLITE_OK &&
		    sqlite3_step(c) == SQLITE_ROW)
			rows = sqlite3_column_int64(c, 0);
		sqlite3_finalize(c);
		sqlite3_close(d0);
		/* Other threads may still be finishing their last insert: every
		 * counted success must be there, and no error. */
		if (count_get(&g_sq.errors) != 0 || rows < 0 || (uint64_t)rows > ok ||
		    (uint64_t)rows + (uint64_t)qb_thread_count(st) < ok)
			qb_skip_with_error(st, "row count != inserts");
		rm_dir(g_sq.dir);
	}
}

/* Pipelined durable sends (quay_queue_send_async): one thread keeps up
 * to `depth` sends in flight (waits for the oldest ticket when it has
 * depth), 64-byte bodies. Counters: msgs_per_fdatasync. Checked: every
 * send completed once with 0, none failed, and every one is restored
 * after a reopen. */
static struct {
	uint64_t ok, bad; /* count_add (the queue's completion thread) */
} g_async;

static void
async_done(void *arg, quay_msg *msg, int rc)
{
	(void)arg;
	if (rc == 0) {
		count_add(&g_async.ok, 1);
	} else {
		count_add(&g_async.bad, 1);
		quay_msg_unref(msg);
	}
}

static void
bm_durable_send_async(qb_state *st, void *arg)
{
	const unsigned mode = (unsigned)qb_range_of(st, 0);
	const uint64_t depth = (uint64_t)qb_range_of(st, 1);
	unsigned char body[BODY] = {1};
	uint64_t sent = 0, failed = 0, t = 0, syncs0;
	struct quay_wal_info wi;
	struct quay_queue_stats qs;

	(void)arg;
	g_async.ok = 0;
	g_async.bad = 0;
	if (!dq_setup(mode, 0, 0)) {
		qb_skip_with_error(st, "setup failed");
		return;
	}
	quay_wal_info(g_dq.wal, &wi);
	syncs0 = wi.syncs;
	while (qb_keep_running(st)) {
		quay_msg *m = NULL;
		int rc;

		if (t >= depth && !quay_queue_send_done(g_dq.q, t - depth + 1))
			(void)quay_queue_send_wait(g_dq.q, t - depth + 1);
		if (quay_msg_new(g_dq.pool, body, sizeof(body), &m) != 0) {
			failed++;
			continue;
		}
		while ((rc = quay_queue_send_async(g_dq.q, m, async_done, NULL, &t)) == -EBUSY)
			(void)quay_queue_send_wait(g_dq.q, 0);
		if (rc == 0) {
			sent++;
		} else {
			failed++;
			quay_msg_unref(m);
		}
	}
	(void)quay_queue_send_wait(g_dq.q, 0); /* the last ones' durability is part of the time */
	qb_set_items_processed(st, (int64_t)sent);
	quay_wal_info(g_dq.wal, &wi);
	qb_counter(st, "msgs_per_fdatasync", wi.syncs > syncs0 ? (double)sent / (double)(wi.syncs - syncs0) : 0.0, 0);
	quay_queue_destroy(g_dq.q);
	quay_wal_close(g_dq.wal);
	g_dq.q = NULL;
	g_dq.wal = NULL;
	if (open_queue(mode, &g_dq.q, 0, 0) != 0 || quay_queue_stats(g_dq.q, &qs) != 0)
		qb_skip_with_error(st, "reopen failed");
	else if (failed != 0 || count_get(&g_async.bad) != 0 || count_get(&g_async.ok) != sent || qs.restored != sent)
		qb_skip_with_error(st, "completions or restored != sent");
	dq_teardown();
}

#ifdef QUAY_BENCH_ROCKSDB
/* ---- peer: RocksDB, one synced Put per message ---------------------------- */

static struct {
	char dir[PATH_MAX_LEN];
	char db_path[PATH_MAX_LEN + 8];
	rocksdb_t *db;
	uint64_t next, ok, errors; /* count_add */
} g_rk;

/* Default options but for create_if_missing; WriteOptions.sync = true:
 * each Put returns once its WAL record is fdatasync'ed (RocksDB's group
 * commit shares the sync among concurrent writers, as quay's WAL does). */
static void
bm_rocksdb_put_sync(qb_state *st, void *arg)
{
	unsigned char body[BODY] = {4};
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();

	(void)arg;
	rocksdb_writeoptions_set_sync(wo, 1);
	if (qb_thread_index(st) == 0) {
		rocksdb_options_t *o = rocksdb_options_create();
		char *err = NULL;

		g_rk.next = 0;
		g_rk.ok = 0;
		g_rk.errors = 0;
		g_rk.db = NULL;
		rocksdb_options_set_create_if_missing(o, 1);
		if (make_dir(g_rk.dir)) {
			snprintf(g_rk.db_path, sizeof(g_rk.db_path), "%s/db", g_rk.dir);
			g_rk.db = rocksdb_open(o, g_rk.db_path, &err);
		}
		rocksdb_options_destroy(o);
		if (err != NULL) {
			rocksdb_free(err);
			g_rk.db = NULL;
		}
		if (g_rk.db == NULL)
			qb_skip_with_error(st, "rocksdb open failed");
	}
	while (qb_keep_running(st)) {
		uint64_t k = __atomic_fetch_add(&g_rk.next, 1, __ATOMIC_RELAXED); /* a key of its own */
		char *err = NULL;

		if (g_rk.db == NULL) {
			count_add(&g_rk.errors, 1);
			continue;
		}
		rocksdb_put(g_rk.db, wo, (const char *)&k, sizeof(k), (const char *)body, BODY, &err);
		if (err != NULL) {
			rocksdb_free(err);
			count_add(&g_rk.errors, 1);
		} else {
			count_add(&g_rk.ok, 1);
		}
	}
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
	rocksdb_writeoptions_destroy(wo);
	if (qb_thread_index(st) == 0 && g_rk.db != NULL) {
		/* Count the keys (other threads may be finishing their last Put:
		 * every counted success must be there, and no error). */
		rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
		rocksdb_iterator_t *it = rocksdb_create_iterator(g_rk.db, ro);
		uint64_t keys = 0, ok = count_get(&g_rk.ok);
		uint64_t threads = (uint64_t)qb_thread_count(st);

		for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it))
			keys++;
		rocksdb_iter_destroy(it);
		rocksdb_readoptions_destroy(ro);
		if (count_get(&g_rk.errors) != 0 || keys > ok + threads || keys + threads < ok)
			qb_skip_with_error(st, "keys != puts");
		rocksdb_close(g_rk.db);
		g_rk.db = NULL;
		rm_dir(g_rk.db_path);
		rm_dir(g_rk.dir);
	}
}
#endif

static void
args_modes(qb_bench *b, int64_t batch)
{
	QB_ARGS(b, QUAY_WAL_SYNC, batch);
	QB_ARGS(b, QUAY_WAL_INTERVAL, batch);
	QB_ARGS(b, QUAY_WAL_NONE, batch);
	QB_ARG_NAMES(b, "mode", "batch");
}

int
main(int argc, char **argv)
{
	qb_bench *b;

	/* mode: 0 SYNC, 1 INTERVAL, 2 NONE. Fixed iterations keep the queue
	 * and the pool bounded (the messages stay in the queue to be counted). */
	b = qb_register("BM_durable_send", bm_durable_send, NULL);
	args_modes(b, 1);
	qb_real_time(qb_iterations(qb_threads(qb_threads(b, 1), 8), 2000));
	b = qb_register("BM_durable_send", bm_durable_send, NULL);
	args_modes(b, 32);
	qb_real_time(qb_iterations(qb_threads(qb_threads(b, 1), 8), 250));
	/* mode (0 SYNC, 2 NONE) x delivery log (1 on, 0
	 * QUAY_QUEUE_NO_DELIVERY_LOG) x batch, in Google Benchmark's
	 * ArgsProduct order (the first argument varies fastest). */
	b = qb_register("BM_durable_receive", bm_durable_receive, NULL);
	for (int64_t batch = 1; batch <= 32; batch += 31)
		for (int64_t dlog = 1; dlog >= 0; dlog--) {
			QB_ARGS(b, QUAY_WAL_SYNC, dlog, batch);
			QB_ARGS(b, QUAY_WAL_NONE, dlog, batch);
		}
	qb_real_time(qb_iterations(QB_ARG_NAMES(b, "mode", "dlog", "batch"), RECV_ITERS));
	/* mode (0 SYNC, 2 NONE) x dedup (0 none, 1 id, 2 content). */
	b = qb_register("BM_durable_send_dedup", bm_durable_send_dedup, NULL);
	for (int64_t dedup = 0; dedup <= 2; dedup++) {
		QB_ARGS(b, QUAY_WAL_SYNC, dedup);
		QB_ARGS(b, QUAY_WAL_NONE, dedup);
	}
	qb_real_time(qb_iterations(QB_ARG_NAMES(b, "mode", "dedup"), 2000));
	/* Pipelined sends, SYNC, one thread: mode x in-flight depth. */
	b = qb_register("BM_durable_send_async", bm_durable_send_async, NULL);
	qb_real_time(qb_iterations(QB_ARG_NAMES(QB_ARGS(b, QUAY_WAL_SYNC, 1), "mode", "depth"), 1000));
	b = qb_register("BM_durable_send_async", bm_durable_send_async, NULL);
	qb_real_time(qb_iterations(QB_ARG_NAMES(QB_ARGS(b, QUAY_WAL_SYNC, 16), "mode", "depth"), 5000));
	b = qb_register("BM_durable_send_async", bm_durable_send_async, NULL);
	QB_ARGS(b, QUAY_WAL_SYNC, 128);
	QB_ARGS(b, QUAY_WAL_SYNC, 1024);
	qb_real_time(qb_iterations(QB_ARG_NAMES(b, "mode", "depth"), 50000));
#ifdef QUAY_BENCH_ROCKSDB
	b = qb_register("BM_rocksdb_put_sync", bm_rocksdb_put_sync, NULL);
	qb_real_time(qb_iterations(qb_threads(qb_threads(b, 1), 8), 1000));
#endif
	b = qb_register("BM_fdatasync_per_message", bm_fdatasync_per_message, NULL);
	qb_real_time(qb_iterations(qb_threads(qb_threads(b, 1), 8), 1000));
	b = qb_register("BM_sqlite_wal_insert", bm_sqlite_wal_insert, NULL);
	qb_arg_name(qb_arg(qb_arg(b, 0), 1), "normal");
	qb_real_time(qb_iterations(qb_threads(qb_threads(b, 1), 8), 1000));
	return qb_main(argc, argv);
}
