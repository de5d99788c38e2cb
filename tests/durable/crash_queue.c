/* SPDX-License-Identifier: MIT */
/*
 * S4 crash trials (TESTING.md 5.3; the consumer/DLQ variant of W1).
 *
 * Each trial: a child process opens a WAL (SYNC, INTERVAL or NONE, in
 * turn), a DLQ and a queue on it (max_attempts 2,
 * short leases), and runs two producers, two consumers (random ack, nack
 * or let the lease expire) and a redriver (DLQ -> queue). Through a pipe
 * it reports each send that returned 0 ("S seq"; one of the two
 * producers pipelines its sends, quay_queue_send_async with up to 64 in
 * flight, and reports "S" from each completion that reported 0), each ack it is about to
 * make ("a seq") and the ack's result: returned 0 ("A seq") or refused,
 * e.g. -ESTALE after the lease expired ("F seq"). The parent kills
 * it with SIGKILL at a random moment, reopens the WAL and both queues and
 * checks, for every message found (ready or delayed, in either queue):
 *   - its body is byte-exact (length and bytes derived from its seq);
 *   - it is in one place only (not twice, not in both queues);
 *   - it was not acknowledged (an "A" report): 0 resurrected acks;
 * and that every message reported sent is found, or was acknowledged
 * ("A"), or had an ack in progress at the kill (an "a" without its "A" /
 * "F"; a refused ack excuses nothing: the message must come back): 0
 * lost. SYNC and INTERVAL promise exactly that under kill -9 (a send or
 * ack returned 0 once its record was written to the file).
 *
 * NONE promises less: a send or ack returns once its record is in the
 * WAL's buffer, which goes to the file when half full (and at syncs,
 * rolls, close, compaction checkpoints). A kill -9 loses the records not
 * yet written, and only those: a suffix of the log, at most the buffer
 * (64 KiB with these 64 KiB segments). So in NONE trials a reported send
 * may be missing and an acked message may be back, but (the child also
 * reports "s seq" before each send starts):
 *   - the losses form a suffix: let cut be the first report (in pipe
 *     order) of a send that is missing or of an ack whose message is
 *     back; every send that started after cut (its "s" later in the pipe,
 *     so its record's LSN is higher) must be missing too: 0 out of order;
 *   - the missing sends' records add up to at most the buffer: 0 over;
 *   - bodies byte-exact, nothing in two places, recovery succeeds.
 * Totals are printed per mode; any violation exits 1.
 *
 * Then the poison rounds (issue 13): a message whose every delivery
 * kills its consumer (SIGKILL with the lease outstanding) must be
 * delivered exactly max_attempts times, one per process life, and then
 * be in the DLQ (the delivery count is logged before the hand-over).
 *
 * Usage: crash_queue (QUAY_CRASH_TRIALS=N for more; default 300;
 * QUAY_CRASH_POISON_ROUNDS=N, default 20).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test_util.h"
#include <time.h>
#include <unistd.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../../src/queue_durable_format.h"

#define MAXSEQ 200000u
#define MS ((int64_t)1000000)

/* ---- shared ---------------------------------------------------------- */

static void
body_for(uint64_t seq, unsigned char *b, size_t *len)
{
	*len = 8 + (size_t)(seq * 2654435761u % 200);
	memcpy(b, &seq, 8);
	for (size_t i = 8; i < *len; i++)
		b[i] = (unsigned char)(seq * 31 + i);
}


static int
open_all(const char *dir, unsigned mode, quay_pool *pool, quay_wal **w, quay_queue **q, quay_queue **dlq)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	int rc;

	wo.sync_mode = mode;
	wo.interval_ms = 5;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	if ((rc = quay_wal_open(dir, &wo, w)) != 0)
		return rc;
	o.name = "work-dlq";
	o.capacity = 4096;
	o.wal = *w;
	o.pool = pool;
	o.compact_bytes = 96 << 10;
	if ((rc = quay_queue_create(&o, dlq)) != 0)
		return rc;
	o.name = "work";
	o.dlq = *dlq;
	o.max_attempts = 2;
	o.visibility_ns = 15 * MS;
	o.backoff_base_ns = 2 * MS;
	o.backoff_max_ns = 4 * MS;
	return quay_queue_create(&o, q);
}

/* ---- the child --------------------------------------------------------- */

struct child {
	quay_queue *q, *dlq;
	quay_pool *pool;
	int fd;
	uint64_t next_seq;
	unsigned seed;
};

static void
report(struct child *c, char what, uint64_t seq)
{
	unsigned char rec[9];

	rec[0] = (unsigned char)what;
	memcpy(rec + 1, &seq, 8);
	/* 9 bytes < PIPE_BUF: atomic. */
	if (write(c->fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
		_exit(3);
}

static void *
producer(void *arg)
{
	struct child *c = arg;
	unsigned char b[256];
	size_t len;

	unsigned seed = c->seed ^ (unsigned)(uintptr_t)&seed;

	for (;;) {
		/* A batch of 4 one time in 3; its seqs seq..seq+3 taken at once. */
		size_t n = rand_r(&seed) % 3 == 0 ? 4 : 1;
		uint64_t seq = __atomic_fetch_add(&c->next_seq, n, __ATOMIC_RELAXED);
		quay_msg *m[4];
		int res[4];

		if (seq + n >= MAXSEQ)
			return NULL;
		for (size_t i = 0; i < n; i++) {
			body_for(seq + i, b, &len);
			if (quay_msg_new_wait(c->pool, b, len, -1, &m[i]) != 0)
				_exit(4);
		}
		for (size_t i = 0; i < n; i++)
			report(c, 's', seq + i);
		if (n == 1) {
			res[0] = quay_queue_send(c->q, m[0]);
		} else if (quay_queue_send_batch(c->q, m, n, res) < 0) {
			_exit(5);
		}
		for (size_t i = 0; i < n; i++) {
			if (res[i] == 0)
				report(c, 'S', seq + i);
			else
				quay_msg_unref(m[i]);
		}
		if (res[0] == -EAGAIN)
			usleep(1000);
	}
}

/* A pipelined producer (quay_queue_send_async, up to 64 in flight): "s"
 * before each send, "S" from its completion when it reported 0 (the
 * message is durable as the mode promises, and not receivable before:
 * so "S" precedes any "a" of it in the pipe). */
static void
async_sent(void *arg, quay_msg *msg, int rc)
{
	struct child *c = arg;
	uint64_t seq;

	memcpy(&seq, quay_msg_body(msg), 8);
	if (rc == 0)
		report(c, 'S', seq);
	else
		quay_msg_unref(msg);
}

static void *
producer_async(void *arg)
{
	struct child *c = arg;
	unsigned char b[256];
	size_t len;
	uint64_t t = 0;

	for (;;) {
		uint64_t seq = __atomic_fetch_add(&c->next_seq, 1, __ATOMIC_RELAXED);
		quay_msg *m;
		int rc;

		if (seq + 1 >= MAXSEQ)
			return NULL;
		body_for(seq, b, &len);
		if (quay_msg_new_wait(c->pool, b, len, -1, &m) != 0)
			_exit(4);
		if (t >= 64)
			(void)quay_queue_send_wait(c->q, t - 63);
		report(c, 's', seq);
		while ((rc = quay_queue_send_async(c->q, m, async_sent, c, &t)) == -EAGAIN || rc == -EBUSY)
			usleep(1000);
		if (rc != 0)
			quay_msg_unref(m);
	}
}

static void *
consumer(void *arg)
{
	struct child *c = arg;
	unsigned seed = c->seed ^ (unsigned)(uintptr_t)&seed;

	for (;;) {
		quay_lease l;
		uint64_t seq;
		unsigned r;

		if (quay_queue_receive(c->q, &l, 5 * MS) != 0)
			continue;
		memcpy(&seq, quay_msg_body(l.msg), 8);
		r = (unsigned)rand_r(&seed) % 100;
		if (r < 60) {
			report(c, 'a', seq);
			report(c, quay_queue_ack(c->q, &l) == 0 ? 'A' : 'F', seq);
		} else if (r < 85) {
			(void)quay_queue_nack(c->q, &l, "random");
		} /* else: let the lease expire */
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void *
redriver(void *arg)
{
	struct child *c = arg;

	for (;;) {
		size_t moved;

		usleep(3000);
		(void)quay_queue_redrive(c->dlq, c->q, 8, &moved);
		(void)quay_queue_tick(c->dlq);
	}
	return NULL;
}

static void
child_main(const char *dir, unsigned mode, int fd, unsigned seed)
{
	struct child c = { NULL, NULL, NULL, fd, 0, seed };
	quay_wal *w;
	pthread_t t[5];

	if (quay_pool_create((size_t)32 << 20, NULL, &c.pool) != 0)
		_exit(2);
	if (open_all(dir, mode, c.pool, &w, &c.q, &c.dlq) != 0)
		_exit(2);
	/* Go on from the sequences of earlier lives (none: a new dir). */
	pthread_create(&t[0], NULL, producer, &c);
	pthread_create(&t[1], NULL, producer_async, &c);
	pthread_create(&t[2], NULL, consumer, &c);
	pthread_create(&t[3], NULL, consumer, &c);
	pthread_create(&t[4], NULL, redriver, &c);
	for (;;)
		pause();
}

/* ---- the parent ---------------------------------------------------------- */

enum { F_SENT = 1, F_ACKING = 2, F_ACKED = 4 };

struct found {
	unsigned char *flags; /* per seq: F_* from the reports */
	unsigned char *where; /* per seq: times found */
	unsigned char *dlqn;  /* per seq: times found in the DLQ */
	unsigned char *pend;  /* per seq: acks started ("a") not yet ended ("A"/"F") */
	uint32_t *spos;       /* per seq: pipe position of its "s" (0: none) */
	uint32_t *Spos;       /* per seq: of its "S" */
	uint32_t *Apos;       /* per seq: of its first "A" */
	uint64_t corrupt, found, in_dlq;
};

static int
visit(void *ctx, const quay_msg *m, quay_queue_state state)
{
	struct found *f = ctx;
	unsigned char b[256];
	size_t len;
	uint64_t seq;

	(void)state;
	if (quay_msg_body_len(m) < 8) {
		f->corrupt++;
		return 0;
	}
	memcpy(&seq, quay_msg_body(m), 8);
	if (seq >= MAXSEQ) {
		f->corrupt++;
		return 0;
	}
	body_for(seq, b, &len);
	if (len != quay_msg_body_len(m) || memcmp(b, quay_msg_body(m), len) != 0)
		f->corrupt++;
	if (f->where[seq] < 255)
		f->where[seq]++;
	f->found++;
	return 0;
}

static int
visit_dlq(void *ctx, const quay_msg *m, quay_queue_state state)
{
	struct found *f = ctx;
	uint64_t seq;

	f->in_dlq++;
	if (quay_msg_body_len(m) >= 8) {
		memcpy(&seq, quay_msg_body(m), 8);
		if (seq < MAXSEQ && f->dlqn[seq] < 255)
			f->dlqn[seq]++;
	}
	return visit(ctx, m, state);
}

/* The bytes of a message's ADD record in the log (32-byte header, the
 * 72-byte image header, the body, padding to 8). */
static uint64_t
rec_bytes(uint64_t seq)
{
	unsigned char b[256];
	size_t len;

	body_for(seq, b, &len);
	/* The WAL's 32-byte record header, then the ADD image, padded to 8. */
	return 32 + ((QUAYI_DQ_ADD_HDR + len + 7) & ~(uint64_t)7);
}

static const char *
mode_name(unsigned mode)
{
	return mode == QUAY_WAL_SYNC ? "SYNC" : mode == QUAY_WAL_INTERVAL ? "INTERVAL" : "NONE";
}

/* Forget the last trial's reports and findings. */
static void
found_reset(struct found *f)
{
	memset(f->flags, 0, MAXSEQ);
	memset(f->where, 0, MAXSEQ);
	memset(f->dlqn, 0, MAXSEQ);
	memset(f->pend, 0, MAXSEQ);
	memset(f->spos, 0, MAXSEQ * sizeof(uint32_t));
	memset(f->Spos, 0, MAXSEQ * sizeof(uint32_t));
	memset(f->Apos, 0, MAXSEQ * sizeof(uint32_t));
	f->corrupt = f->found = f->in_dlq = 0;
}

/* Read the child's reports (until the pipe closes: it was killed). */
static void
read_reports(int fd, struct found *f)
{
	unsigned char rec[9];
	uint32_t pos = 0;
	ssize_t r;

	while ((r = read(fd, rec, sizeof(rec))) == (ssize_t)sizeof(rec)) {
		uint64_t seq;

		memcpy(&seq, rec + 1, 8);
		pos++;
		if (seq >= MAXSEQ)
			continue;
		/* One consumer reports "a" then its result, in order (one
		 * pipe); another may ack the same seq after a redelivery:
		 * count the acks in progress. */
		if (rec[0] == 's') {
			f->spos[seq] = pos;
		} else if (rec[0] == 'S') {
			f->flags[seq] |= F_SENT;
			f->Spos[seq] = pos;
		} else if (rec[0] == 'a') {
			f->flags[seq] |= F_ACKING;
			f->pend[seq]++;
		} else {
			if (rec[0] == 'A') {
				f->flags[seq] |= F_ACKED;
				if (f->Apos[seq] == 0)
					f->Apos[seq] = pos;
			}
			if (f->pend[seq] != 0)
				f->pend[seq]--;
		}
	}
}

/* What the trials found, over all of them. */
struct totals {
	uint64_t sent, acked, lost, resurrected, dup;
	/* per mode: trials, sent, lost (NONE: allowed, in the suffix),
	 * acked-but-back (NONE: allowed, in the suffix) */
	uint64_t m_trials[3], m_sent[3], m_lost[3], m_back[3];
	uint64_t none_order, none_over, none_max_lost_bytes;
};

/* Judge trial t (mode) from its reports and what recovery found. */
static void
judge_trial(unsigned t, unsigned mode, const struct found *f, struct totals *tt)
{
	uint32_t cut = UINT32_MAX;
	uint64_t t_lost = 0, t_back = 0, lost_bytes = 0;

	tt->m_trials[mode]++;
	for (uint64_t s = 0; s < MAXSEQ; s++) {
		bool is_lost =
		    (f->flags[s] & F_SENT) && f->where[s] == 0 && !(f->flags[s] & F_ACKED) && f->pend[s] == 0;
		bool is_back = (f->flags[s] & F_ACKED) && f->where[s] != 0;

		if (f->flags[s] & F_SENT) {
			tt->sent++;
			tt->m_sent[mode]++;
		}
		if (f->flags[s] & F_ACKED)
			tt->acked++;
		if (is_lost) {
			t_lost++;
			lost_bytes += rec_bytes(s);
			if (f->Spos[s] < cut)
				cut = f->Spos[s];
		}
		if (is_back) {
			t_back++;
			if (f->Apos[s] < cut)
				cut = f->Apos[s];
		}
		if (mode != QUAY_WAL_NONE && is_lost) {
			if (tt->lost < 10)
				fprintf(stderr, "trial %u: seq %" PRIu64 " lost\n", t, s);
			tt->lost++;
		}
		if (mode != QUAY_WAL_NONE && is_back) {
			if (tt->resurrected < 10)
				fprintf(stderr, "trial %u: seq %" PRIu64 " acked but back\n", t, s);
			tt->resurrected++;
		}
		if (f->where[s] > 1) {
			if (tt->dup < 10)
				fprintf(stderr, "trial %u: seq %" PRIu64 " found %u times (%u in the DLQ)\n",
				    t, s, f->where[s], f->dlqn[s]);
			tt->dup++;
		}
	}
	tt->m_lost[mode] += t_lost;
	tt->m_back[mode] += t_back;
	if (mode != QUAY_WAL_NONE)
		return;
	/* The losses are a suffix of the log: nothing whose send started
	 * after the first loss survived. */
	for (uint64_t s = 0; s < MAXSEQ && cut != UINT32_MAX; s++) {
		if (f->spos[s] > cut && f->where[s] != 0) {
			if (tt->none_order < 10)
				fprintf(stderr,
				    "trial %u (NONE): seq %" PRIu64 " (send started at report %u) "
				    "survived a loss at report %u\n",
				    t, s, f->spos[s], cut);
			tt->none_order++;
		}
	}
	if (lost_bytes > tt->none_max_lost_bytes)
		tt->none_max_lost_bytes = lost_bytes;
	if (lost_bytes > QUAY_WAL_SEGMENT_MIN) {
		fprintf(stderr,
		    "trial %u (NONE): %" PRIu64 " bytes of sends lost, above the 64 KiB "
		    "buffer\n",
		    t, lost_bytes);
		tt->none_over++;
	}
}


/* ---- poison: a message that kills its consumer on every delivery ------ */

#define POISON_MAX 3u

static int
poison_open(const char *dir, quay_pool *pool, quay_wal **w, quay_queue **q, quay_queue **dlq)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	int rc;

	wo.sync_mode = QUAY_WAL_SYNC;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	if ((rc = quay_wal_open(dir, &wo, w)) != 0)
		return rc;
	o.name = "poison-dlq";
	o.wal = *w;
	o.pool = pool;
	if ((rc = quay_queue_create(&o, dlq)) != 0)
		return rc;
	o.name = "poison";
	o.dlq = *dlq;
	o.max_attempts = POISON_MAX;
	return quay_queue_create(&o, q);
}

/*
 * One poison round: a message is sent; then, again and again, a child
 * opens the queues and receives: a delivery kills it (SIGKILL, the lease
 * outstanding); no delivery (the queue dead-lettered it) makes it look
 * in the DLQ and exit 0 (the message there) or 1. The round passes if
 * the message was delivered exactly POISON_MAX times (attempts 1..MAX,
 * one per life) and then found in the DLQ. Returns 0 or 1.
 */
static int
poison_round(unsigned round, quay_pool *pool)
{
	char dir[64];
	quay_wal *w;
	quay_queue *q, *dlq;
	unsigned lives = 0, deliveries = 0;

	snprintf(dir, sizeof(dir), "/tmp/quay-poison-XXXXXX");
	if (mkdtemp(dir) == NULL || poison_open(dir, pool, &w, &q, &dlq) != 0)
		return 1;
	{
		quay_msg *m;

		if (quay_msg_new(pool, "poison", 6, &m) != 0 || quay_queue_send(q, m) != 0)
			return 1;
	}
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
	quay_wal_close(w);
	for (;;) {
		int p[2], status;
		uint32_t att = 0;
		pid_t pid;

		if (pipe(p) != 0 || (pid = fork()) < 0)
			return 1;
		if (pid == 0) {
			quay_lease l;

			close(p[0]);
			if (poison_open(dir, pool, &w, &q, &dlq) != 0)
				_exit(2);
			if (quay_queue_receive(q, &l, 0) == 0) {
				if (write(p[1], &l.attempt, sizeof(l.attempt)) != (ssize_t)sizeof(l.attempt))
					_exit(2);
				raise(SIGKILL); /* processing it kills us */
			}
			_exit(quay_queue_receive(dlq, &l, 0) == 0 ? 0 : 1);
		}
		close(p[1]);
		if (read(p[0], &att, sizeof(att)) == (ssize_t)sizeof(att))
			deliveries++;
		close(p[0]);
		waitpid(pid, &status, 0);
		lives++;
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
			if (att != deliveries || deliveries > POISON_MAX) {
				fprintf(stderr, "poison round %u: delivery %u had attempt %u\n", round,
				    deliveries, att);
				qt_rm_dir(dir);
				return 1;
			}
			continue;
		}
		qt_rm_dir(dir);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || deliveries != POISON_MAX ||
		    lives != POISON_MAX + 1) {
			fprintf(stderr, "poison round %u: %u deliveries, %u lives, child status %d\n", round,
			    deliveries, lives, status);
			return 1;
		}
		return 0;
	}
}

int
main(void)
{
	const char *env = getenv("QUAY_CRASH_TRIALS");
	unsigned trials = env != NULL ? (unsigned)strtoul(env, NULL, 10) : 300;
	uint64_t corrupt = 0, found_total = 0, dlq_total = 0, failures = 0, kept = 0, poison_failures = 0;
	struct totals tt = { 0 };
	struct found f;
	unsigned seed = (unsigned)time(NULL);
	quay_pool *pool;

	if (trials == 0)
		trials = 1;
	f.flags = calloc(MAXSEQ, 1);
	f.where = calloc(MAXSEQ, 1);
	f.dlqn = calloc(MAXSEQ, 1);
	f.pend = calloc(MAXSEQ, 1);
	f.spos = calloc(MAXSEQ, sizeof(uint32_t));
	f.Spos = calloc(MAXSEQ, sizeof(uint32_t));
	f.Apos = calloc(MAXSEQ, sizeof(uint32_t));
	if (f.flags == NULL || f.where == NULL || f.dlqn == NULL || f.pend == NULL || f.spos == NULL ||
	    f.Spos == NULL || f.Apos == NULL || quay_pool_create((size_t)64 << 20, NULL, &pool) != 0)
		return 2;
	printf("crash-queue: %u trials, seed %u\n", trials, seed);
	for (unsigned t = 0; t < trials; t++) {
		char dir[64];
		int p[2], status;
		pid_t pid;
		unsigned mode = t % 3 == 0 ? QUAY_WAL_SYNC : t % 3 == 1 ? QUAY_WAL_INTERVAL : QUAY_WAL_NONE;
		quay_wal *w;
		quay_queue *q, *dlq;
		int rc;

		snprintf(dir, sizeof(dir), "/tmp/quay-crashq-XXXXXX");
		if (mkdtemp(dir) == NULL || pipe(p) != 0)
			return 2;
		(void)fcntl(p[0], F_SETPIPE_SZ, 1 << 20); /* reports never block the child */
		pid = fork();
		if (pid < 0)
			return 2;
		if (pid == 0) {
			close(p[0]);
			child_main(dir, mode, p[1], seed + t);
		}
		close(p[1]);
		usleep((useconds_t)(20000 + rand_r(&seed) % 130000));
		kill(pid, SIGKILL);
		found_reset(&f);
		read_reports(p[0], &f);
		close(p[0]);
		waitpid(pid, &status, 0);
		if (!WIFSIGNALED(status)) {
			fprintf(stderr, "trial %u: child exited %d before the kill\n", t,
			    WEXITSTATUS(status));
			failures++;
			qt_rm_dir(dir);
			continue;
		}
		if ((rc = open_all(dir, mode, pool, &w, &q, &dlq)) != 0) {
			fprintf(stderr, "trial %u: recovery failed: %d (%s)\n", t, rc, quay_strerror(rc));
			failures++;
			qt_rm_dir(dir);
			continue;
		}
		quay_queue_browse(q, visit, &f);
		quay_queue_browse(dlq, visit_dlq, &f);
		judge_trial(t, mode, &f, &tt);
		quay_queue_destroy(q);
		quay_queue_destroy(dlq);
		quay_wal_close(w);
		if (tt.lost + tt.resurrected + tt.dup + corrupt + f.corrupt + tt.none_order + tt.none_over !=
		        0 &&
		    kept < 1) {
			/* Keep the first bad trial's log for quay-wal dump. */
			fprintf(stderr, "trial %u (%s): log kept in %s\n", t, mode_name(mode), dir);
			kept++;
		} else {
			qt_rm_dir(dir);
		}
		corrupt += f.corrupt;
		found_total += f.found;
		dlq_total += f.in_dlq;
	}
	printf("crash-queue: trials %u, sent %" PRIu64 ", acked %" PRIu64 ", recovered %" PRIu64
	       " (in DLQ %" PRIu64 "): lost %" PRIu64 ", acked-but-back %" PRIu64 ", in two places %" PRIu64
	       ", corrupt %" PRIu64 ", failed trials %" PRIu64 "\n",
	    trials, tt.sent, tt.acked, found_total, dlq_total, tt.lost, tt.resurrected, tt.dup, corrupt,
	    failures);
	for (unsigned m = 0; m < 3; m++)
		printf("crash-queue: %s: trials %" PRIu64 ", sent %" PRIu64 ", missing %" PRIu64
		       ", acked-but-back %" PRIu64 "%s\n",
		    mode_name(m), tt.m_trials[m], tt.m_sent[m], tt.m_lost[m], tt.m_back[m],
		    m == QUAY_WAL_NONE ? " (allowed: the unwritten buffer)" : "");
	printf("crash-queue: NONE: losses out of suffix order %" PRIu64
	       ", trials losing more than the buffer %" PRIu64 " (most lost: %" PRIu64 " bytes)\n",
	    tt.none_order, tt.none_over, tt.none_max_lost_bytes);
	{
		const char *pe = getenv("QUAY_CRASH_POISON_ROUNDS");
		unsigned rounds = pe != NULL ? (unsigned)strtoul(pe, NULL, 10) : 20;

		for (unsigned r = 0; r < rounds; r++)
			poison_failures += (uint64_t)poison_round(r, pool);
		printf(
		    "crash-queue: poison: %u rounds (max_attempts %u, SYNC): each delivered %u times, one per "
		    "process killed by it, then found in the DLQ; failed rounds %" PRIu64 "\n",
		    rounds, POISON_MAX, POISON_MAX, poison_failures);
	}
	quay_pool_destroy(pool);
	free(f.flags);
	free(f.where);
	free(f.dlqn);
	free(f.pend);
	free(f.spos);
	free(f.Spos);
	free(f.Apos);
	return tt.lost + tt.resurrected + tt.dup + corrupt + failures + tt.none_order + tt.none_over +
	            poison_failures ==
	        0 ?
	    0 :
	    1;
}
