/* SPDX-License-Identifier: MIT */
/*
 * Stress test of the write-ahead log: concurrent appenders with group
 * commit, on the real file system (a scratch directory in $TMPDIR or /tmp).
 *
 *   stress_wal            every configuration at CI size (one line each)
 *   QUAY_STRESS_SCALE=N   N times more records (soaks)
 *
 * Configurations (P appender threads, each appending R records as single
 * appends and batches of 2..4, payload derived from (thread, seq)):
 *   sync-P         SYNC mode, P = 1, 2, 4, 8; a side thread calls
 *                  quay_wal_sync(0), quay_wal_info and quay_wal_durable_lsn
 *                  (durable_lsn never goes down nor passes the last LSN;
 *                  every SYNC append returns with durable_lsn >= its LSN)
 *   interval-4     INTERVAL (2 ms), the same side thread
 *   none-4         NONE, the same side thread
 *   replay-4       SYNC, and a thread replaying over and over while the
 *                  appends run (each replay: per thread seqs increase by
 *                  one, LSNs increase, payloads byte-exact)
 *   checkpoint-4   NONE with 64 KiB segments and a thread checkpointing
 *                  at durable_lsn / 2 (segments deleted while appending)
 * After each run: close, reopen, replay. Checks: every (thread, seq)
 * exactly once (or, for checkpoint-4, a gap-free suffix per thread),
 * per-thread order, at the LSN its append returned, byte-exact.
 * Exit status 1 on any violation.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <quay/wal.h>

#include "test_util.h"


#define MAXP 8
#define HDR 16

struct cfg {
	const char *name;
	unsigned mode;
	int p;
	uint64_t records; /* per thread */
	uint64_t seg;
	bool replayer;
	bool checkpointer;
};

struct run;

struct producer {
	struct run *run;
	uint32_t id;
	uint64_t *lsn; /* lsn[seq] as returned */
	uint64_t errors;
	uint64_t early; /* SYNC append returned before durable */
};

struct run {
	const struct cfg *c;
	quay_wal *w;
	struct producer prod[MAXP];
	int done; /* producers finished; atomic */
	uint64_t side_errors;
	uint64_t replays;
	uint64_t checkpoints;
};

static void
payload(uint8_t *p, uint32_t id, uint64_t seq, uint32_t len)
{
	uint64_t s = ((uint64_t)id << 48 ^ seq) * 0x9E3779B97F4A7C15ull + 7;
	memcpy(p, &id, 4);
	memcpy(p + 4, &seq, 8);
	memcpy(p + 12, &len, 4);
	for (uint32_t i = HDR; i < len; i++)
		p[i] = (uint8_t)(qt_rand(&s) >> 56);
}

static uint32_t
len_of(uint32_t id, uint64_t seq)
{
	uint64_t s = (seq + 1) * 2654435761u ^ id;
	return HDR + (uint32_t)(qt_rand(&s) % 1500);
}

static void *
producer_main(void *arg)
{
	struct producer *pr = arg;
	struct run *run = pr->run;
	uint64_t rng = pr->id + 99, n = run->c->records;
	uint8_t bufs[4][HDR + 1500];

	for (uint64_t seq = 0; seq < n;) {
		uint64_t nb = qt_rand(&rng) % 3 == 0 ? 2 + qt_rand(&rng) % 3 : 1;
		if (nb > n - seq)
			nb = n - seq;
		quay_wal_rec recs[4];
		for (uint64_t i = 0; i < nb; i++) {
			uint32_t len = len_of(pr->id, seq + i);
			payload(bufs[i], pr->id, seq + i, len);
			recs[i] = (quay_wal_rec){ 1 + pr->id, bufs[i], len };
		}
		uint64_t last = 0;
		int r = nb == 1 ? quay_wal_append(run->w, recs[0].type, recs[0].data, recs[0].len, &last) :
		                  quay_wal_appendv(run->w, recs, nb, &last);
		if (r != 0) {
			pr->errors++;
			break;
		}
		if (run->c->mode == QUAY_WAL_SYNC && quay_wal_durable_lsn(run->w) < last)
			pr->early++;
		for (uint64_t i = 0; i < nb; i++)
			pr->lsn[seq + i] = last - nb + 1 + i;
		seq += nb;
	}
	__atomic_fetch_add(&run->done, 1,
	    __ATOMIC_RELEASE); /* pairs with the acquire loads of the side threads */
	return NULL;
}

static bool
all_done(struct run *run)
{
	return __atomic_load_n(&run->done, __ATOMIC_ACQUIRE) == run->c->p;
}

static void *
syncer_main(void *arg)
{
	struct run *run = arg;
	uint64_t prev = 0;
	struct quay_wal_info info;

	while (!all_done(run)) {
		if (quay_wal_sync(run->w, 0) != 0)
			run->side_errors++;
		uint64_t d = quay_wal_durable_lsn(run->w);
		if (quay_wal_info(run->w, &info) != 0 || d < prev || info.durable_lsn < d ||
		    info.durable_lsn > info.next_lsn - 1 || info.failed != 0)
			run->side_errors++;
		prev = d;
		usleep(200);
	}
	return NULL;
}

struct rcheck {
	uint64_t next[MAXP];
	uint64_t prev_lsn;
	bool started[MAXP];
	bool suffix; /* the first seq of a thread may be > 0 */
	uint64_t bad, n;
	uint8_t buf[HDR + 1500];
	struct run *run;
};

static int
rcheck_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct rcheck *c = ctx;
	uint32_t id, l;
	uint64_t seq;

	c->n++;
	if (len < HDR || lsn <= c->prev_lsn) {
		c->bad++;
		return 0;
	}
	c->prev_lsn = lsn;
	memcpy(&id, data, 4);
	memcpy(&seq, (const uint8_t *)data + 4, 8);
	memcpy(&l, (const uint8_t *)data + 12, 4);
	if (id >= MAXP || l != len || type != 1 + id || len != len_of(id, seq)) {
		c->bad++;
		return 0;
	}
	if (!(c->suffix && !c->started[id]) && seq != c->next[id])
		c->bad++;
	c->started[id] = true;
	c->next[id] = seq + 1;
	payload(c->buf, id, seq, l);
	if (memcmp(c->buf, data, len) != 0)
		c->bad++;
	/* The LSN its append returned (only known once the append is back:
	 * 0 until then, skip). */
	if (c->run != NULL) {
		uint64_t want = __atomic_load_n(&c->run->prod[id].lsn[seq], __ATOMIC_RELAXED);
		if (want != 0 && want != lsn)
			c->bad++;
	}
	return 0;
}

static void *
replayer_main(void *arg)
{
	struct run *run = arg;
	struct rcheck *c = malloc(sizeof(*c));

	while (!all_done(run)) {
		memset(c, 0, sizeof(*c));
		if (quay_wal_replay(run->w, 1, rcheck_visit, c) != 0 || c->bad != 0)
			run->side_errors++;
		run->replays++;
	}
	free(c);
	return NULL;
}

static void *
checkpointer_main(void *arg)
{
	struct run *run = arg;

	while (!all_done(run)) {
		uint64_t d = quay_wal_durable_lsn(run->w);
		if (d > 2) {
			if (quay_wal_checkpoint(run->w, d / 2) != 0)
				run->side_errors++;
			run->checkpoints++;
		}
		if (quay_wal_sync(run->w, 0) != 0)
			run->side_errors++;
		usleep(500);
	}
	return NULL;
}


static bool
run_cfg(const struct cfg *c, const char *dir)
{
	struct run run;
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	pthread_t tid[MAXP], side;
	uint64_t errors = 0, early = 0, bad = 0, lost = 0;
	double t0 = qt_now_s();

	memset(&run, 0, sizeof(run));
	run.c = c;
	o.sync_mode = c->mode;
	o.interval_ms = 2;
	o.segment_bytes = c->seg;
	o.max_record = 4096;
	if (quay_wal_open(dir, &o, &run.w) != 0) {
		printf("%-14s open failed\n", c->name);
		return false;
	}
	for (int i = 0; i < c->p; i++) {
		run.prod[i] =
		    (struct producer){ &run, (uint32_t)i, calloc(c->records, sizeof(uint64_t)), 0, 0 };
		pthread_create(&tid[i], NULL, producer_main, &run.prod[i]);
	}
	pthread_create(&side, NULL,
	    c->replayer         ? replayer_main :
	        c->checkpointer ? checkpointer_main :
	                          syncer_main,
	    &run);
	for (int i = 0; i < c->p; i++) {
		pthread_join(tid[i], NULL);
		errors += run.prod[i].errors;
		early += run.prod[i].early;
	}
	pthread_join(side, NULL);
	struct quay_wal_info info;
	quay_wal_info(run.w, &info);
	double secs = qt_now_s() - t0;
	if (quay_wal_close(run.w) != 0)
		errors++;

	/* Reopen and check everything. */
	struct rcheck *ck = calloc(1, sizeof(*ck));
	quay_wal *w;
	ck->suffix = c->checkpointer;
	if (quay_wal_open(dir, &o, &w) != 0 || quay_wal_replay(w, 1, rcheck_visit, ck) != 0) {
		bad++;
	} else {
		quay_wal_close(w);
	}
	for (int i = 0; i < c->p; i++) {
		if (ck->next[i] != c->records)
			lost++;
		for (uint64_t s = 1; s < c->records; s++)
			if (run.prod[i].lsn[s] <= run.prod[i].lsn[s - 1])
				bad++;
	}
	/* The LSNs returned: check them against a second replay. */
	ck->run = &run;
	memset(ck->next, 0, sizeof(ck->next));
	memset(ck->started, 0, sizeof(ck->started));
	ck->prev_lsn = 0;
	if (quay_wal_open(dir, &o, &w) == 0) {
		quay_wal_replay(w, 1, rcheck_visit, ck);
		quay_wal_close(w);
	} else {
		bad++;
	}
	bad += ck->bad;
	uint64_t total = (uint64_t)c->p * c->records;
	bool ok = errors == 0 && early == 0 && bad == 0 && lost == 0 && run.side_errors == 0;
	printf("%-14s P=%d records=%" PRIu64 " (%.0f/s) segments=%" PRIu64 " replays=%" PRIu64
	       " checkpoints=%" PRIu64 " | errors %" PRIu64 " early-acks %" PRIu64 " lost %" PRIu64
	       " bad %" PRIu64 " side %" PRIu64 " -> %s\n",
	    c->name, c->p, total, (double)total / secs, info.segments, run.replays, run.checkpoints, errors,
	    early, lost, bad, run.side_errors, ok ? "OK" : "FAILED");
	free(ck);
	for (int i = 0; i < c->p; i++)
		free(run.prod[i].lsn);
	return ok;
}

int
main(void)
{
	const char *e = getenv("QUAY_STRESS_SCALE");
	uint64_t scale = e && *e ? strtoull(e, NULL, 10) : 1;
	uint64_t base = QT_TSAN ? 1000 : 2000;
	const char *tmp = getenv("TMPDIR");
	char root[512], dir[600];
	bool ok = true;

	if (scale == 0)
		scale = 1;
	base *= scale;
	const struct cfg cfgs[] = {
		{ "sync-1", QUAY_WAL_SYNC, 1, base / 2, 1 << 20, false, false },
		{ "sync-2", QUAY_WAL_SYNC, 2, base / 2, 1 << 20, false, false },
		{ "sync-4", QUAY_WAL_SYNC, 4, base, 1 << 20, false, false },
		{ "sync-8", QUAY_WAL_SYNC, 8, base, 1 << 20, false, false },
		{ "interval-4", QUAY_WAL_INTERVAL, 4, base * 2, 1 << 20, false, false },
		{ "none-4", QUAY_WAL_NONE, 4, base * 4, 1 << 20, false, false },
		{ "replay-4", QUAY_WAL_SYNC, 4, base, 256 << 10, true, false },
		{ "checkpoint-4", QUAY_WAL_NONE, 4, base * 4, 64 << 10, false, true },
	};
	snprintf(root, sizeof(root), "%s/quay-stress-wal-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(root) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
		snprintf(dir, sizeof(dir), "%s/%s", root, cfgs[i].name);
		ok &= run_cfg(&cfgs[i], dir);
		qt_rm_dir(dir);
	}
	rmdir(root);
	return ok ? 0 : 1;
}
