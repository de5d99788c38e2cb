/* SPDX-License-Identifier: MIT */
/*
 * W1: kill -9 trials of a WAL writer (TESTING.md 5.2).
 *
 *   crash_wal                  QUAY_CRASH_TRIALS trials (default 500)
 *   QUAY_CRASH_TRIALS=10000    a nightly-size run
 *
 * Each trial forks a writer process: it opens the log in SYNC mode, finds
 * where each of its WRITERS threads left off (replay), and the threads
 * append records (single appends and atomic batches of random sizes)
 * whose payloads are derived from (thread, sequence number). Each
 * acknowledged append is reported through a pipe as it returns. The
 * parent SIGKILLs the writer after a random 1..25 ms, drains the pipe and
 * recovers the log:
 *   - every acknowledged (thread, seq) is recovered    (acked lost 0)
 *   - per thread the recovered seqs are 0, 1, 2 ...   (holes 0, dups 0)
 *   - every payload is byte-exact                      (corrupt 0)
 *   - batches are whole                                (torn batches 0)
 * Trials run in groups of 8 on one directory, so each writer starts from
 * a log that was itself recovered from a kill (segments roll at 256 KiB).
 * Prints the totals; exit status 1 on any violation.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <quay/wal.h>

#include "test_util.h"

#define WRITERS 4
#define GROUP 8
#define HDR 20 /* payload: u32 thread, u64 seq, u32 len, u32 batch size */

static void
payload(uint8_t *p, uint32_t thread, uint64_t seq, uint32_t len, uint32_t bsize)
{
	uint64_t s = ((uint64_t)thread << 48 ^ seq) * 0x9E3779B97F4A7C15ull + 1;
	memcpy(p, &thread, 4);
	memcpy(p + 4, &seq, 8);
	memcpy(p + 12, &len, 4);
	memcpy(p + 16, &bsize, 4);
	for (uint32_t i = HDR; i < len; i++)
		p[i] = (uint8_t)(qt_rand(&s) >> 56);
}

/* ---- the writer (child) ----------------------------------------------- */

struct next_ctx {
	uint64_t next[WRITERS];
};

static int
next_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct next_ctx *c = ctx;
	uint32_t t;
	uint64_t seq;
	(void)lsn;
	(void)type;
	if (len < HDR)
		return 0;
	memcpy(&t, data, 4);
	memcpy(&seq, (const uint8_t *)data + 4, 8);
	if (t < WRITERS && seq + 1 > c->next[t])
		c->next[t] = seq + 1;
	return 0;
}

struct wthread {
	quay_wal *w;
	uint32_t id;
	uint64_t seq;
	int fd;
	uint64_t rng;
};

static void *
writer_main(void *arg)
{
	struct wthread *t = arg;
	static __thread uint8_t bufs[4][2100];

	for (;;) {
		uint32_t nb = 1 + (uint32_t)(qt_rand(&t->rng) % 4);
		quay_wal_rec recs[4];
		for (uint32_t i = 0; i < nb; i++) {
			uint32_t len = HDR + (uint32_t)(qt_rand(&t->rng) % 2000);
			payload(bufs[i], t->id, t->seq + i, len, nb);
			recs[i] = (quay_wal_rec){ 1 + t->id, bufs[i], len };
		}
		int r = nb == 1 ? quay_wal_append(t->w, recs[0].type, recs[0].data, recs[0].len, NULL) :
		                  quay_wal_appendv(t->w, recs, nb, NULL);
		if (r != 0)
			_exit(3);
		t->seq += nb;
		uint64_t msg[2] = { t->id, t->seq - 1 };
		/* 16 bytes < PIPE_BUF: each ack arrives whole. */
		if (write(t->fd, msg, sizeof(msg)) != (ssize_t)sizeof(msg))
			_exit(4);
	}
	return NULL;
}

static void
run_writer(const char *dir, int fd, uint64_t seed)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	quay_wal *w;
	struct next_ctx nc;
	struct wthread th[WRITERS];
	pthread_t tid[WRITERS];

	o.sync_mode = QUAY_WAL_SYNC;
	o.segment_bytes = 256 << 10;
	o.max_record = 4096;
	if (quay_wal_open(dir, &o, &w) != 0)
		_exit(2);
	memset(&nc, 0, sizeof(nc));
	if (quay_wal_replay(w, 1, next_visit, &nc) != 0)
		_exit(2);
	for (uint32_t i = 0; i < WRITERS; i++) {
		th[i] = (struct wthread){ w, i, nc.next[i], fd, seed * 31 + i + 1 };
		pthread_create(&tid[i], NULL, writer_main, &th[i]);
	}
	for (;;)
		pause();
}

/* ---- the verifier (parent) -------------------------------------------- */

struct verify {
	uint64_t next[WRITERS]; /* next seq expected per thread */
	uint64_t records, holes, dups, corrupt, torn;
	uint32_t pending_batch[WRITERS];
	uint8_t buf[4200];
};

static int
verify_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct verify *v = ctx;
	uint32_t t, l, b;
	uint64_t seq;
	(void)lsn;
	if (len < HDR) {
		v->corrupt++;
		return 0;
	}
	memcpy(&t, data, 4);
	memcpy(&seq, (const uint8_t *)data + 4, 8);
	memcpy(&l, (const uint8_t *)data + 12, 4);
	memcpy(&b, (const uint8_t *)data + 16, 4);
	if (t >= WRITERS || l != len || type != 1 + t || b == 0 || b > 4) {
		v->corrupt++;
		return 0;
	}
	payload(v->buf, t, seq, l, b);
	if (memcmp(v->buf, data, len) != 0)
		v->corrupt++;
	v->records++;
	if (seq < v->next[t])
		v->dups++;
	else if (seq > v->next[t])
		v->holes++;
	v->next[t] = seq + 1;
	/* Batches: b records in a row from the same thread. */
	if (v->pending_batch[t] == 0)
		v->pending_batch[t] = b;
	v->pending_batch[t]--;
	return 0;
}


int
main(void)
{
	const char *e = getenv("QUAY_CRASH_TRIALS");
	uint64_t trials = e && *e ? strtoull(e, NULL, 10) : 500;
	const char *tmp = getenv("TMPDIR");
	char base[512], dir[600];
	uint64_t rng = 0x5eed;
	uint64_t acked_total = 0, lost = 0, holes = 0, dups = 0, corrupt = 0, torn = 0, recovered = 0;
	uint64_t open_fail = 0, tails = 0, writer_errors = 0, killed_early = 0;
	uint64_t acked_max[WRITERS];
	bool have_ack[WRITERS];
	double t0 = qt_now_s();

	signal(SIGPIPE, SIG_IGN);
	snprintf(base, sizeof(base), "%s/quay-crash-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(base) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	for (uint64_t trial = 0; trial < trials; trial++) {
		if (trial % GROUP == 0) {
			if (trial > 0)
				qt_rm_dir(dir);
			snprintf(dir, sizeof(dir), "%s/g%" PRIu64, base, trial / GROUP);
			memset(acked_max, 0, sizeof(acked_max));
			memset(have_ack, 0, sizeof(have_ack));
		}
		int p[2];
		if (pipe(p) != 0) {
			perror("pipe");
			return 1;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			close(p[0]);
			run_writer(dir, p[1], trial + 1);
			_exit(0);
		}
		close(p[1]);
		/* Read acks until the kill time, then kill and drain. */
		int64_t kill_at = qt_now_ns() + (int64_t)(1 + qt_rand(&rng) % 25) * 1000000;
		bool killed = false;
		for (;;) {
			int64_t left = kill_at - qt_now_ns();
			if (!killed && left <= 0) {
				kill(pid, SIGKILL);
				killed = true;
			}
			struct pollfd pf = { p[0], POLLIN, 0 };
			int pr = poll(&pf, 1, killed ? 1000 : (int)(left / 1000000) + 1);
			if (pr <= 0)
				continue;
			uint64_t msg[2];
			ssize_t n = read(p[0], msg, sizeof(msg));
			if (n == 0)
				break; /* the writer is gone */
			if (n != (ssize_t)sizeof(msg))
				continue;
			if (msg[0] < WRITERS) {
				acked_total++;
				if (!have_ack[msg[0]] || msg[1] > acked_max[msg[0]])
					acked_max[msg[0]] = msg[1];
				have_ack[msg[0]] = true;
			}
		}
		close(p[0]);
		int st;
		waitpid(pid, &st, 0);
		if (!WIFSIGNALED(st)) {
			writer_errors++;
			killed_early += WIFEXITED(st) && WEXITSTATUS(st) == 2;
		}
		/* Recover and check. */
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		struct quay_wal_report rep;
		quay_wal *w;
		struct verify v;
		o.segment_bytes = 256 << 10;
		o.max_record = 4096;
		o.report = &rep;
		if (quay_wal_open(dir, &o, &w) != 0) {
			fprintf(stderr, "trial %" PRIu64 ": open failed: %s at %s+%" PRIu64 "\n", trial,
			    quay_wal_reason_str(rep.reason), rep.segment, rep.offset);
			open_fail++;
			continue;
		}
		tails += rep.tail_cut;
		memset(&v, 0, sizeof(v));
		if (quay_wal_replay(w, 1, verify_visit, &v) != 0)
			corrupt++;
		quay_wal_close(w);
		for (int t = 0; t < WRITERS; t++) {
			if (have_ack[t] && v.next[t] <= acked_max[t])
				lost += acked_max[t] - v.next[t] + 1;
			if (v.pending_batch[t] != 0)
				torn++;
		}
		holes += v.holes;
		dups += v.dups;
		corrupt += v.corrupt;
		recovered = v.records;
	}
	qt_rm_dir(dir);
	rmdir(base);
	bool ok = lost == 0 && holes == 0 && dups == 0 && corrupt == 0 && torn == 0 && open_fail == 0 &&
	    writer_errors == 0;
	printf("W1 kill -9: %" PRIu64
	       " trials (%d SYNC writer threads, groups of %d per log) in %.1f s: acks %" PRIu64
	       ", records in the last log %" PRIu64 ", tails cut %" PRIu64 "; acked lost %" PRIu64
	       ", holes %" PRIu64 ", dups %" PRIu64 ", corrupt %" PRIu64 ", torn batches %" PRIu64
	       ", open failures %" PRIu64 ", writer errors %" PRIu64 " -> %s\n",
	    trials, WRITERS, GROUP, qt_now_s() - t0, acked_total, recovered, tails, lost, holes, dups,
	    corrupt, torn, open_fail, writer_errors, ok ? "OK" : "FAILED");
	(void)killed_early;
	return ok ? 0 : 1;
}
