/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of durable queues (docs/DURABILITY.md): every transition is
 * logged and recovered (send, ack, nack with delay, lease expiry, DLQ
 * move, redrive, TTL, in-flight at the crash), compaction keeps the log
 * bounded and refuses while another queue's records are live, WAL
 * failures (fdatasync EIO injected through the WAL's I/O table) fail the
 * send and the ack without changing the queue, and bad input.
 *
 * "Reopen" destroys the queues and closes the WAL, then opens both again:
 * what a restart sees. A fake clock drives the timing rules.
 */
#include "quay_test.h"

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../../src/queue_internal.h"
#include "../../src/queue_durable_format.h"
#include "../../src/wal_internal.h"
#include "wal/wal_memfs.h"

#define MS ((int64_t)1000000)

static quay_pool *pool;
static char dir[256];
static quay_wal *wal;
static unsigned wal_mode = QUAY_WAL_SYNC;
static uint64_t wal_segment;


static void
wal_open(void)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;

	o.sync_mode = wal_mode;
	o.segment_bytes = wal_segment;
	assert_int_equal(quay_wal_open(dir, &o, &wal), 0);
}

static int
setup(void **state)
{
	(void)state;
	qt_set_time(QT_T0);
	wal_mode = QUAY_WAL_NONE; /* SYNC where the test says so: fdatasync is slow */
	wal_segment = 0;
	snprintf(dir, sizeof(dir), "/tmp/quay-dur-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	wal_open();
	return quay_pool_create((size_t)16 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	if (wal != NULL)
		quay_wal_close(wal);
	wal = NULL;
	qt_rm_dir(dir);
	return quay_pool_destroy(pool);
}

static struct quay_queue_opts
dopts(const char *name)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	o.name = name;
	o.clock = qt_fake_clock;
	o.capacity = 256;
	o.visibility_ns = 1000 * MS;
	o.flags = QUAY_QUEUE_NO_JITTER;
	o.wal = wal;
	o.pool = pool;
	return o;
}

static quay_queue *
mkq(struct quay_queue_opts *o)
{
	quay_queue *q = NULL;

	assert_int_equal(quay_queue_create(o, &q), 0);
	return q;
}

static quay_msg *
mkmsg(uint64_t v)
{
	quay_msg *m = NULL;
	char body[64];

	memset(body, (int)(v & 0xff), sizeof(body));
	memcpy(body, &v, sizeof(v));
	assert_int_equal(quay_msg_new(pool, body, 8 + v % 50, &m), 0);
	return m;
}

static uint64_t
body_of(const quay_msg *m)
{
	uint64_t v;
	const unsigned char *b = quay_msg_body(m);

	assert_true(quay_msg_body_len(m) >= 8);
	memcpy(&v, b, 8);
	assert_int_equal(quay_msg_body_len(m), 8 + v % 50);
	for (size_t i = 8; i < quay_msg_body_len(m); i++)
		assert_int_equal(b[i], v & 0xff);
	return v;
}

/* Restart: destroy the queues (dlq last), close and reopen the WAL. */
static void
restart(quay_queue **q, quay_queue **dlq)
{
	if (q != NULL && *q != NULL)
		quay_queue_destroy(*q);
	if (dlq != NULL && *dlq != NULL)
		quay_queue_destroy(*dlq);
	assert_int_equal(quay_wal_close(wal), 0);
	wal_open();
}

static struct quay_queue_stats
st(quay_queue *q)
{
	struct quay_queue_stats s;

	assert_int_equal(quay_queue_stats(q, &s), 0);
	assert_int_equal(s.sent + s.restored,
	    s.ready + s.delayed + s.in_flight + s.acked + s.dead_lettered + s.dropped + s.redriven_out);
	return s;
}

/* Receive everything ready (try once each), return how many; bodies into
 * seen[] (if not NULL), acking them when ack is true. */
static size_t
drain(quay_queue *q, uint64_t *seen, size_t max, bool ack)
{
	quay_lease l;
	size_t n = 0;

	while (n < max && quay_queue_receive(q, &l, 0) == 0) {
		if (seen != NULL)
			seen[n] = body_of(l.msg);
		n++;
		if (ack)
			assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	return n;
}

/* ---- send / ack / recovery --------------------------------------------- */

static void
send_ack_recover(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l[3];
	uint64_t seen[16];
	quay_msg *m;
	const void *v;
	size_t vl;

	(void)state;
	wal_mode = QUAY_WAL_SYNC;
	restart(NULL, NULL);
	o = dopts("jobs");
	q = mkq(&o);
	for (uint64_t i = 1; i <= 10; i++) {
		m = mkmsg(i);
		if (i == 4) {
			assert_int_equal(quay_msg_set_header(m, "k", "vv", 2), 0);
			assert_int_equal(quay_msg_set_reply_to(m, "reply.here"), 0);
			assert_int_equal(quay_msg_set_correlation_id(m, 77), 0);
		}
		assert_int_equal(quay_queue_send(q, m), 0);
		/* SYNC: durable when send returned. */
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(quay_queue_receive(q, &l[i], 0), 0);
		assert_int_equal(body_of(l[i].msg), (uint64_t)i + 1);
		assert_int_equal(quay_queue_ack(q, &l[i]), 0);
		quay_msg_unref(l[i].msg);
	}
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 7);
	assert_int_equal(quay_queue_receive(q, &l[0], 0), 0);
	m = l[0].msg;
	assert_int_equal(body_of(m), 4);
	assert_int_equal(quay_msg_get_header(m, "k", &v, &vl), 0);
	assert_int_equal(vl, 2);
	assert_memory_equal(v, "vv", 2);
	assert_string_equal(quay_msg_reply_to(m), "reply.here");
	assert_int_equal(quay_msg_correlation_id(m), 77);
	assert_int_equal(quay_msg_enqueued_ns(m), QT_T0);
	assert_int_equal(quay_msg_attempts(m), 1);
	assert_int_equal(quay_queue_ack(q, &l[0]), 0);
	quay_msg_unref(m);
	assert_int_equal(drain(q, seen, 16, false), 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(seen[i], (uint64_t)i + 5); /* FIFO kept */
	/* In flight at the "crash": all six come back ready; the delivery
	 * each lease was (logged before the hand-over) counts as a failed
	 * attempt (docs/DURABILITY.md, "Delivery counts"). */
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 6);
	assert_int_equal(quay_queue_receive(q, &l[0], 0), 0);
	assert_int_equal(quay_msg_attempts(l[0].msg), 2);
	assert_int_equal(quay_queue_ack(q, &l[0]), 0);
	quay_msg_unref(l[0].msg);
	assert_int_equal(drain(q, NULL, 16, true), 5);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 0);
	quay_queue_destroy(q);
}

static void
send_batch_one_sync(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_msg *ms[32];
	int res[32];
	struct quay_wal_info a, b;

	(void)state;
	wal_mode = QUAY_WAL_SYNC;
	restart(NULL, NULL);
	o = dopts("batch");
	q = mkq(&o);
	for (int i = 0; i < 32; i++)
		ms[i] = mkmsg((uint64_t)i + 100);
	assert_int_equal(quay_wal_info(wal, &a), 0);
	assert_int_equal(quay_queue_send_batch(q, ms, 32, res), 32);
	assert_int_equal(quay_wal_info(wal, &b), 0);
	for (int i = 0; i < 32; i++)
		assert_int_equal(res[i], 0);
	assert_int_equal(b.records - a.records, 32);
	assert_int_equal(b.syncs - a.syncs, 1); /* one fdatasync for 32 */
	/* A bad message in a batch fails alone. */
	ms[0] = mkmsg(1);
	ms[1] = mkmsg(2);
	assert_int_equal(quay_msg_set_priority(ms[1], 9), 0);
	assert_int_equal(quay_queue_send_batch(q, ms, 2, res), 1);
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], -EINVAL);
	quay_msg_unref(ms[1]);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 33);
	quay_queue_destroy(q);
}

/* ---- delivery counts (issue 13) ------------------------------------------ */

/* A poison message: every delivery "kills the process" (restart with the
 * lease outstanding). Each delivery was logged before its hand-over, so
 * after max_attempts crashes the next receive dead-letters it instead of
 * delivering it again. With QUAY_QUEUE_NO_DELIVERY_LOG the count does
 * not survive (today's behaviour before issue 13): it loops. */
static void
poison_reaches_dlq_after_max_attempts_crashes(void **state)
{
	struct quay_queue_opts o, od;
	quay_queue *q, *dlq;
	quay_lease l;
	const void *v;
	size_t vl;

	(void)state;
	od = dopts("poison-dlq");
	dlq = mkq(&od);
	o = dopts("poison");
	o.max_attempts = 3;
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkmsg(9)), 0);
	for (uint32_t crash = 1; crash <= 3; crash++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(body_of(l.msg), 9);
		assert_int_equal(l.attempt, crash);
		quay_msg_unref(l.msg);
		restart(&q, &dlq); /* the consumer died */
		od.wal = wal;
		dlq = mkq(&od);
		o.wal = wal;
		o.dlq = dlq;
		q = mkq(&o);
		assert_int_equal(st(q).restored, 1);
	}
	/* Three deliveries, three crashes: dead-lettered, not delivered. */
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
	assert_int_equal(st(q).dead_lettered, 1);
	assert_int_equal(quay_queue_receive(dlq, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 9);
	assert_int_equal(quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_REASON, &v, &vl), 0);
	assert_int_equal(vl, strlen("max-attempts"));
	assert_memory_equal(v, "max-attempts", vl);
	assert_int_equal(quay_queue_ack(dlq, &l), 0);
	quay_msg_unref(l.msg);
	/* And the move was logged: after one more restart it is gone. */
	restart(&q, &dlq);
	od.wal = wal;
	dlq = mkq(&od);
	o.wal = wal;
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 0);
	assert_int_equal(st(dlq).restored, 0);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static void
no_delivery_log_keeps_old_behaviour(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l;
	struct quay_wal_info a, b;

	(void)state;
	o = dopts("fast");
	o.max_attempts = 2;
	o.flags |= QUAY_QUEUE_NO_DELIVERY_LOG;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkmsg(4)), 0);
	for (int crash = 0; crash < 5; crash++) { /* more than max_attempts */
		assert_int_equal(quay_wal_info(wal, &a), 0);
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(quay_wal_info(wal, &b), 0);
		assert_int_equal(b.records, a.records); /* nothing logged */
		assert_int_equal(l.attempt, 1);         /* not counted */
		quay_msg_unref(l.msg);
		restart(&q, NULL);
		o.wal = wal;
		q = mkq(&o);
		assert_int_equal(st(q).restored, 1);
	}
	/* A failure is still logged (RETRY), as before. */
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	quay_msg_unref(l.msg);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	qt_set_time(qt_fake_clock(NULL) + 3600 * 1000 * MS);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(l.attempt, 2);
	quay_msg_unref(l.msg);
	quay_queue_destroy(q);
}

/* A receive logs one record; a receive_batch of n logs n records in one
 * write (one sync in SYNC mode). */
static void
batch_receive_logs_once(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l[16];
	struct quay_wal_info a, b;

	(void)state;
	wal_mode = QUAY_WAL_SYNC;
	restart(NULL, NULL);
	o = dopts("rb");
	q = mkq(&o);
	for (uint64_t i = 0; i < 17; i++)
		assert_int_equal(quay_queue_send(q, mkmsg(i)), 0);
	assert_int_equal(quay_wal_info(wal, &a), 0);
	assert_int_equal(quay_queue_receive(q, &l[0], 0), 0);
	assert_int_equal(quay_wal_info(wal, &b), 0);
	assert_int_equal(b.records - a.records, 1);
	assert_int_equal(b.syncs - a.syncs, 1);
	quay_msg_unref(l[0].msg);
	a = b;
	assert_int_equal(quay_queue_receive_batch(q, l, 16, 0), 16);
	assert_int_equal(quay_wal_info(wal, &b), 0);
	assert_int_equal(b.records - a.records, 16);
	assert_int_equal(b.syncs - a.syncs, 1); /* one write, one sync */
	for (int i = 0; i < 16; i++) {
		assert_int_equal(l[i].attempt, 1);
		quay_msg_unref(l[i].msg);
	}
	/* All 17 outstanding at the crash: each counted once. */
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 17);
	assert_int_equal(quay_queue_receive_batch(q, l, 16, 0), 16);
	for (int i = 0; i < 16; i++) {
		assert_int_equal(l[i].attempt, 2);
		assert_int_equal(quay_queue_ack(q, &l[i]), 0);
		quay_msg_unref(l[i].msg);
	}
	quay_queue_destroy(q);
}

/* ---- retry, expiry, DLQ, redrive, TTL -------------------------------- */

static void
nack_delay_and_expiry_recover(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l;
	struct quay_queue_stats s;

	(void)state;
	o = dopts("retry");
	o.backoff_base_ns = 500 * MS;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkmsg(1)), 0);
	assert_int_equal(quay_queue_send(q, mkmsg(2)), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_nack(q, &l, "no"), 0); /* retry at QT_T0 + 500 ms */
	quay_msg_unref(l.msg);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0); /* 2: let its lease expire */
	quay_msg_unref(l.msg);
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(quay_queue_tick(q), 0); /* 2 retries at QT_T0+1500 */
	qt_set_time(QT_T0 + 1100 * MS);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	s = st(q);
	assert_int_equal(s.restored, 2);
	/* 1 was due at QT_T0+500: ready; 2 is due at QT_T0+1500: delayed. */
	assert_int_equal(s.ready, 1);
	assert_int_equal(s.delayed, 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 1);
	assert_int_equal(quay_msg_attempts(l.msg), 2); /* one logged failure + this */
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
	qt_set_time(QT_T0 + 1500 * MS - 1);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN); /* not before */
	qt_set_time(QT_T0 + 1500 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 2);
	assert_int_equal(quay_msg_attempts(l.msg), 2);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	quay_queue_destroy(q);
}

static void
dead_letter_and_redrive_recover(void **state)
{
	struct quay_queue_opts o, od;
	quay_queue *q, *dlq;
	quay_lease l;
	const void *v;
	size_t vl, moved;

	(void)state;
	od = dopts("jobs-dlq");
	dlq = mkq(&od);
	o = dopts("jobs");
	o.max_attempts = 2;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkmsg(5)), 0);
	for (int i = 0; i < 2; i++) { /* 5: two failures -> DLQ */
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(body_of(l.msg), 5);
		assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(quay_queue_send(q, mkmsg(6)), 0);
	assert_int_equal(st(dlq).sent, 1);
	restart(&q, &dlq);
	o.wal = wal;
	od.wal = wal;
	dlq = mkq(&od);
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);   /* only 6 */
	assert_int_equal(st(dlq).restored, 1); /* 5, exactly once */
	assert_int_equal(quay_queue_receive(dlq, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 5);
	assert_int_equal(quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_REASON, &v, &vl), 0);
	assert_memory_equal(v, "max-attempts", vl);
	assert_int_equal(quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_SOURCE, &v, &vl), 0);
	assert_memory_equal(v, "jobs", vl);
	assert_int_equal(quay_queue_nack(dlq, &l, NULL), 0); /* back to ready in the DLQ */
	quay_msg_unref(l.msg);
	qt_set_time(QT_T0 + 10000 * MS);
	assert_int_equal(quay_queue_tick(dlq), 0);
	assert_int_equal(quay_queue_redrive(dlq, q, 10, &moved), 0);
	assert_int_equal(moved, 1);
	restart(&q, &dlq);
	o.wal = wal;
	od.wal = wal;
	dlq = mkq(&od);
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(st(dlq).restored, 0);
	assert_int_equal(st(q).restored, 2);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0); /* 5: the older did */
	assert_int_equal(body_of(l.msg), 5);
	assert_int_equal(quay_msg_attempts(l.msg), 1); /* reset by redrive */
	assert_int_equal(quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_REASON, &v, &vl), -ENOENT);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(drain(q, NULL, 4, true), 1);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static void
ttl_after_restart_dead_letters(void **state)
{
	struct quay_queue_opts o, od;
	quay_queue *q, *dlq;
	quay_lease l;
	quay_msg *m;
	const void *v;
	size_t vl;

	(void)state;
	od = dopts("t-dlq");
	dlq = mkq(&od);
	o = dopts("t");
	o.dlq = dlq;
	q = mkq(&o);
	m = mkmsg(3);
	assert_int_equal(quay_msg_set_expires_ns(m, QT_T0 + 100 * MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	m = mkmsg(4);
	assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + 50 * MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	restart(&q, &dlq);
	o.wal = wal;
	od.wal = wal;
	qt_set_time(QT_T0 + 200 * MS);
	dlq = mkq(&od);
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 2);
	/* 3 is past its TTL: dead-lettered on the way, never delivered. */
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 4);
	assert_int_equal(quay_msg_not_before_ns(l.msg), QT_T0 + 50 * MS);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	restart(&q, &dlq);
	o.wal = wal;
	od.wal = wal;
	dlq = mkq(&od);
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 0);
	assert_int_equal(quay_queue_receive(dlq, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 3);
	assert_int_equal(quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_REASON, &v, &vl), 0);
	assert_memory_equal(v, "ttl-expired", vl);
	quay_msg_unref(l.msg);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* ---- compaction --------------------------------------------------------- */

static void
compaction_keeps_disk_bounded(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	struct quay_wal_info wi;
	struct quayi_dur_info di;
	uint64_t max_bytes = 0, keep = 0;
	quay_lease l;

	(void)state;
	wal_segment = QUAY_WAL_SEGMENT_MIN;
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir); /* no 64 MiB segment left */
	wal_open();
	o = dopts("long");
	o.compact_bytes = 128 << 10;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	/* 50 live messages kept throughout; 20,000 more sent and acked. */
	for (uint64_t i = 0; i < 50; i++) {
		quay_msg *m = mkmsg(1000000 + i);

		assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + (int64_t)1000000 * 1000 * MS), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
	for (uint64_t i = 0; i < 20000; i++) {
		assert_int_equal(quay_queue_send(q, mkmsg(i)), 0);
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(body_of(l.msg), i);
		if (i % 100 == 7) { /* a nack now and then */
			assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
			quay_msg_unref(l.msg);
			qt_set_time(qt_fake_clock(NULL) + 1000 * MS);
			assert_int_equal(quay_queue_receive(q, &l, 0), 0);
			assert_int_equal(body_of(l.msg), i);
			keep++;
		}
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
		if (i % 512 == 0) {
			assert_int_equal(quay_wal_info(wal, &wi), 0);
			if (wi.file_bytes > max_bytes)
				max_bytes = wi.file_bytes;
		}
	}
	assert_int_equal(quayi_queue_durable_info(q, &di), 0);
	print_message("compaction: %" PRIu64 " compactions, max %" PRIu64 " file bytes, %" PRIu64
	              " live, %" PRIu64 " nacks\n",
	    di.compactions, max_bytes, di.live, keep);
	assert_true(di.compactions > 10);
	/* Bound: live set + compact_bytes + a few 64 KiB segments. */
	assert_true(max_bytes <= (uint64_t)8 * QUAY_WAL_SEGMENT_MIN);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, di.live);
	assert_int_equal(di.live, 50);
	quay_queue_destroy(q);
}

/* ---- queue names in the log ---------------------------------------------- */

struct name_count {
	uint64_t qid;
	uint64_t n, first_lsn;
	char name[128];
};

static int
name_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct name_count *c = ctx;
	const unsigned char *p = data;

	if (type != QUAYI_DQ_NAME)
		return 0;
	assert_true(len >= QUAYI_DQ_NAME_HDR);
	size_t nl = (size_t)quayi_dqf_get(p + QUAYI_DQF_NAME_LEN, 2);
	assert_int_equal(nl, len - QUAYI_DQ_NAME_HDR);
	assert_int_equal(quayi_dqf_get(p + QUAYI_DQF_QID, 8),
	    quayi_dqf_qid((const char *)p + QUAYI_DQ_NAME_HDR, nl));
	if (quayi_dqf_get(p + QUAYI_DQF_QID, 8) != c->qid)
		return 0;
	if (c->n++ == 0)
		c->first_lsn = lsn;
	assert_true(nl < sizeof(c->name));
	memcpy(c->name, p + QUAYI_DQ_NAME_HDR, nl);
	c->name[nl] = '\0';
	return 0;
}

static uint64_t
names_in_log(const char *name, uint64_t *first_lsn)
{
	struct name_count c = { quayi_dqf_qid(name, strlen(name)), 0, 0, "" };

	assert_int_equal(quay_wal_replay(wal, 1, name_visit, &c), 0);
	if (c.n > 0)
		assert_string_equal(c.name, name);
	if (first_lsn != NULL)
		*first_lsn = c.first_lsn;
	return c.n;
}

/* A queue's name is logged once (not at every attach), survives a
 * compaction that deletes the segment it was first written in, and the
 * queue replays as before with it in the log. */
static void
queue_name_logged_once_and_kept(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	struct quay_wal_info wi;
	quay_lease l;
	uint64_t lsn0 = 0, lsn1 = 0;

	(void)state;
	wal_segment = QUAY_WAL_SEGMENT_MIN;
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir);
	wal_open();
	o = dopts("orders.eu-1");
	q = mkq(&o);
	assert_int_equal(names_in_log("orders.eu-1", &lsn0), 1);
	for (int k = 0; k < 3; k++) { /* reattach: no second NAME */
		restart(&q, NULL);
		o.wal = wal;
		q = mkq(&o);
		assert_int_equal(names_in_log("orders.eu-1", NULL), 1);
	}
	assert_int_equal(quay_queue_send(q, mkmsg(7)), 0); /* stays live */
	for (uint64_t i = 0; i < 3000; i++) {              /* rolls segments */
		assert_int_equal(quay_queue_send(q, mkmsg(100 + i)), 0);
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		if (body_of(l.msg) == 7) {
			assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
			quay_msg_unref(l.msg);
			assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		}
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(quayi_queue_compact(q), 0);
	assert_int_equal(quay_wal_info(wal, &wi), 0);
	assert_true(wi.first_lsn > lsn0); /* the first NAME's segment is gone */
	/* Every compaction (automatic ones too) names the open queues
	 * again, so there may be several; the reattach adds none. */
	uint64_t n = names_in_log("orders.eu-1", &lsn1);
	assert_true(n >= 1);
	assert_true(lsn1 > lsn0);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);
	assert_int_equal(names_in_log("orders.eu-1", NULL), n);
	quay_queue_destroy(q);
}

static void
compaction_deferred_for_closed_queue(void **state)
{
	struct quay_queue_opts oa, ob;
	quay_queue *a, *b;
	struct quayi_dur_info di;

	(void)state;
	oa = dopts("a");
	ob = dopts("b");
	a = mkq(&oa);
	b = mkq(&ob);
	assert_int_equal(quay_queue_send(b, mkmsg(1)), 0);
	assert_int_equal(quay_queue_send(a, mkmsg(2)), 0);
	assert_int_equal(quayi_queue_compact(a), 0); /* both open: fine */
	quay_queue_destroy(b);
	assert_int_equal(quayi_queue_compact(a), -EAGAIN); /* b's record would be lost */
	assert_int_equal(quayi_queue_durable_info(a, &di), 0);
	assert_int_equal(di.foreign_live, 1);
	assert_int_equal(di.deferred, 1);
	restart(&a, NULL);
	oa.wal = wal;
	ob.wal = wal;
	b = mkq(&ob); /* b alone: a's are foreign now */
	assert_int_equal(st(b).restored, 1);
	assert_int_equal(quayi_queue_compact(b), -EAGAIN);
	a = mkq(&oa);
	assert_int_equal(st(a).restored, 1);
	assert_int_equal(quayi_queue_compact(b), 0);
	restart(&a, &b);
	oa.wal = wal;
	ob.wal = wal;
	a = mkq(&oa);
	b = mkq(&ob);
	assert_int_equal(st(a).restored, 1);
	assert_int_equal(st(b).restored, 1);
	quay_queue_destroy(a);
	quay_queue_destroy(b);
}

/* ---- WAL failures --------------------------------------------------------- */

static int fail_sync;

static int
io_datasync(void *ctx, int fd)
{
	if (__atomic_load_n(&fail_sync, __ATOMIC_SEQ_CST))
		return -EIO;
	return quayi_wal_io_posix.datasync(ctx, fd);
}

static void
wal_failure_fails_send_and_ack(void **state)
{
	struct quayi_wal_io io = quayi_wal_io_posix;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l;
	quay_msg *m;
	struct quay_queue_stats s;

	(void)state;
	io.datasync = io_datasync;
	assert_int_equal(quay_wal_close(wal), 0);
	assert_int_equal(quayi_wal_open_io(dir, &wo, &io, NULL, &wal), 0);
	o = dopts("f");
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkmsg(1)), 0);
	assert_int_equal(quay_queue_send(q, mkmsg(2)), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	__atomic_store_n(&fail_sync, 1, __ATOMIC_SEQ_CST);
	/* The ack is refused: the message is back, ready. */
	assert_int_equal(quay_queue_ack(q, &l), -EIO);
	assert_int_equal(quay_queue_ack(q, &l), -ESTALE);
	quay_msg_unref(l.msg);
	/* The send is refused: the caller keeps its message, untouched. */
	m = mkmsg(3);
	assert_int_equal(quay_queue_send(q, m), -EIO);
	assert_int_equal(quay_msg_refcount(m), 1);
	assert_int_equal(quay_msg_enqueued_ns(m), 0);
	assert_int_equal(quay_queue_send_batch(q, &m, 1, NULL), 0);
	s = st(q);
	assert_int_equal(s.sent, 2);
	assert_int_equal(s.acked, 0);
	assert_int_equal(s.ready, 2);
	quay_msg_unref(m);
	__atomic_store_n(&fail_sync, 0, __ATOMIC_SEQ_CST);
	quay_queue_destroy(q);
	(void)quay_wal_close(wal); /* -EIO: it had failed */
	wal_open();
	/* A failed WAL cannot be used to create a queue; a reopened one
	 * has both messages. */
	o.wal = wal;
	q = mkq(&o);
	{
		/* 2 is back; 1 too unless the refused ack's record reached the
		 * file anyway (the WAL: "may or may not be found"). */
		uint64_t seen[4];
		size_t n = drain(q, seen, 4, true);

		assert_true(n == 1 || n == 2);
		assert_int_equal(seen[n - 1], 2);
	}
	quay_queue_destroy(q);
}

static void
corrupt_record_is_ebadmsg(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q = NULL;
	unsigned char junk[30] = { 0 };

	(void)state;
	o = dopts("c");
	junk[0] = 1;
	assert_int_equal(quay_wal_append(wal, QUAYI_DQ_ADD, junk, sizeof(junk), NULL), 0);
	assert_int_equal(quay_queue_create(&o, &q), -EBADMSG);
	assert_null(q);
	/* Another module's record types are skipped. */
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir);
	wal_open();
	assert_int_equal(quay_wal_append(wal, 7, junk, sizeof(junk), NULL), 0);
	o.wal = wal;
	q = mkq(&o);
	quay_queue_destroy(q);
}

static void
capacity_below_live_set_is_enospc(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q = NULL;

	(void)state;
	o = dopts("cap");
	q = mkq(&o);
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(quay_queue_send(q, mkmsg(i)), 0);
	restart(&q, NULL);
	o.wal = wal;
	o.capacity = 5;
	q = NULL;
	assert_int_equal(quay_queue_create(&o, &q), -ENOSPC);
	o.capacity = 10;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 10);
	quay_queue_destroy(q);
}

/* ---- bad input ------------------------------------------------------------ */

static void
bad_input(void **state)
{
	struct quay_queue_opts o, od;
	quay_queue *q = NULL, *mem = NULL, *dlq = NULL, *q2 = NULL;
	quay_wal *ro = NULL, *other = NULL;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	char dir2[256];
	quay_msg *m;
	quay_lease l, l2;
	size_t moved;

	(void)state;
	o = dopts("x");
	o.pool = NULL; /* wal without pool */
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	o = dopts("x");
	o.wal = NULL; /* pool without wal */
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	o = dopts("x");
	o.wal = NULL;
	o.pool = NULL;
	o.compact_bytes = 1;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	/* READONLY WAL. */
	wo.flags = QUAY_WAL_READONLY;
	assert_int_equal(quay_wal_open(dir, &wo, &ro), 0);
	o = dopts("x");
	o.wal = ro;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	quay_wal_close(ro);
	assert_null(q);
	/* DLQ in memory for a durable queue, and the reverse. */
	od = dopts("mem");
	od.wal = NULL;
	od.pool = NULL;
	mem = mkq(&od);
	o = dopts("x");
	o.dlq = mem;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	od = dopts("d");
	dlq = mkq(&od);
	o = dopts("x");
	o.wal = NULL;
	o.pool = NULL;
	o.dlq = dlq;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	/* DLQ on another WAL. */
	snprintf(dir2, sizeof(dir2), "%.200s-2", dir);
	wo.flags = 0;
	wo.sync_mode = QUAY_WAL_NONE;
	assert_int_equal(quay_wal_open(dir2, &wo, &other), 0);
	o = dopts("x");
	o.wal = other;
	o.dlq = dlq;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	/* The same name twice on one WAL. */
	o = dopts("d");
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	assert_null(q);
	/* Redrive between a durable queue and an in-memory one, or another WAL. */
	assert_int_equal(quay_queue_redrive(dlq, mem, 1, &moved), -EINVAL);
	assert_int_equal(quay_queue_redrive(mem, dlq, 1, &moved), -EINVAL);
	o = dopts("y");
	o.wal = other;
	q2 = mkq(&o);
	assert_int_equal(quay_queue_redrive(dlq, q2, 1, &moved), -EINVAL);
	/* A message held by a durable queue goes to another durable queue
	 * as a copy (issue 11: it was -EINVAL); the original stays where it
	 * is, and the sender's reference to it is dropped. */
	m = mkmsg(1);
	assert_int_equal(quay_queue_send(dlq, m), 0);
	assert_int_equal(quay_queue_receive(dlq, &l, 0), 0);
	quay_msg_ref(l.msg); /* one to give away */
	assert_int_equal(quay_queue_send(q2, l.msg), 0);
	quay_msg_ref(l.msg);
	assert_int_equal(quay_queue_send_batch(q2, &l.msg, 1, NULL), 1);
	assert_int_equal(quay_msg_refcount(l.msg), 2); /* dlq's and the lease's */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(quay_queue_receive(q2, &l2, 0), 0);
		assert_ptr_not_equal(l2.msg, l.msg);
		assert_int_equal(body_of(l2.msg), 1);
		assert_int_equal(quay_queue_ack(q2, &l2), 0);
		quay_msg_unref(l2.msg);
	}
	assert_int_equal(quay_queue_ack(dlq, &l), 0);
	quay_msg_ref(l.msg);
	assert_int_equal(quay_queue_send(q2, l.msg), 0); /* after the ack: itself, no copy */
	assert_int_equal(quay_queue_receive(q2, &l2, 0), 0);
	assert_ptr_equal(l2.msg, l.msg);
	assert_int_equal(quay_queue_ack(q2, &l2), 0);
	quay_msg_unref(l2.msg);
	quay_msg_unref(l.msg);
	/* The older, shorter options struct: an in-memory queue. */
	o = dopts("old");
	o.size = offsetof(struct quay_queue_opts, wal);
	o.wal = NULL;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	quay_queue_destroy(q);
	o.size = offsetof(struct quay_queue_opts, wal) + 1;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	quay_queue_destroy(q2);
	quay_queue_destroy(dlq);
	quay_queue_destroy(mem);
	quay_wal_close(other);
	qt_rm_dir(dir2);
}

/* ---- regressions (review 2) -------------------------------------------- */

/* Run fn in a child that ends with _exit (a crash: no destroy, no close)
 * on a WAL it opens itself; the parent reopens the WAL afterwards. The
 * child returns 0 if what it saw was right. */
static void
crash_child(int (*fn)(void))
{
	pid_t pid;
	int status = 0;

	assert_int_equal(quay_wal_close(wal), 0);
	wal = NULL;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;

		o.sync_mode = QUAY_WAL_SYNC;
		o.segment_bytes = wal_segment;
		if (quay_wal_open(dir, &o, &wal) != 0)
			_exit(100);
		_exit(fn());
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	wal_open();
}

static int
child_dead_letter_high_priority(void)
{
	struct quay_queue_opts o = dopts("dlq");
	quay_queue *dlq = NULL, *q = NULL, *tgt = NULL;
	quay_msg *m = mkmsg(3);
	quay_lease l;
	size_t moved = 0;

	if (quay_queue_create(&o, &dlq) != 0) /* levels 1 */
		return 1;
	o = dopts("src");
	o.levels = 4;
	o.dlq = dlq;
	o.max_attempts = 1;
	if (quay_queue_create(&o, &q) != 0)
		return 2;
	o = dopts("tgt");
	o.levels = 2;
	if (quay_queue_create(&o, &tgt) != 0)
		return 3;
	/* Message 3 (priority 3) is dead-lettered and stays in the DLQ;
	 * message 4 (priority 3) is dead-lettered, then redriven to tgt. */
	for (uint64_t v = 3; v <= 4; v++) {
		if (v == 4)
			m = mkmsg(4);
		quay_msg_set_priority(m, 3);
		if (quay_queue_send(q, m) != 0 || quay_queue_receive(q, &l, 0) != 0)
			return 4;
		if (quay_queue_nack(q, &l, "no") != 0)
			return 5;
		quay_msg_unref(l.msg);
		if (v == 4) {
			/* the DLQ's oldest is 3: redrive moves one, 3; take 4 back. */
			if (quay_queue_redrive(dlq, tgt, 1, &moved) != 0 || moved != 1)
				return 6;
		}
	}
	return 0; /* crash */
}

/* Review 2, item 1: a DLQ (or redrive target) with fewer priority levels
 * than the source reopens after a crash; the message keeps its priority
 * and is served at the last level. */
static void
dlq_with_fewer_levels_recovers(void **state)
{
	struct quay_queue_opts o;
	quay_queue *dlq, *q, *tgt;
	quay_lease l;

	(void)state;
	crash_child(child_dead_letter_high_priority);
	o = dopts("dlq");
	dlq = mkq(&o); /* was -EINVAL */
	o = dopts("src");
	o.levels = 4;
	o.dlq = dlq;
	q = mkq(&o);
	o = dopts("tgt");
	o.levels = 2;
	tgt = mkq(&o);
	assert_int_equal(st(dlq).restored, 1);
	assert_int_equal(st(tgt).restored, 1);
	assert_int_equal(st(q).restored, 0);
	assert_int_equal(quay_queue_receive(dlq, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 4);
	assert_int_equal(quay_msg_priority(l.msg), 3);
	assert_int_equal(quay_queue_ack(dlq, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(quay_queue_receive(tgt, &l, 0), 0);
	assert_int_equal(body_of(l.msg), 3);
	assert_int_equal(quay_msg_priority(l.msg), 3);
	assert_int_equal(quay_queue_ack(tgt, &l), 0);
	quay_msg_unref(l.msg);
	quay_queue_destroy(tgt);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static int
child_same_message_twice(void)
{
	struct quay_queue_opts o = dopts("q");
	quay_queue *q = NULL;
	quay_msg *m = mkmsg(7), *ms[2];
	int res[2] = { 1, 1 };
	quay_lease l, l2;

	if (quay_queue_create(&o, &q) != 0)
		return 1;
	quay_msg_ref(m);
	ms[0] = m;
	ms[1] = m;
	/* The second is a copy (issue 11: it was -EINVAL): two messages,
	 * two durable ids; both references were given. */
	if (quay_queue_send_batch(q, ms, 2, res) != 2 || res[0] != 0 || res[1] != 0)
		return 2;
	if (quay_msg_refcount(m) != 1) /* the queue's */
		return 3;
	/* Sending it again while the queue holds it: a third, a copy. */
	quay_msg_ref(m);
	if (quay_queue_send(q, m) != 0 || quay_msg_refcount(m) != 1)
		return 4;
	if (quay_queue_receive(q, &l, 0) != 0 || l.msg != m || quay_queue_ack(q, &l) != 0)
		return 5;
	quay_msg_unref(l.msg);
	if (quay_queue_receive(q, &l, 0) != 0 || l.msg == m || body_of(l.msg) != 7 ||
	    quay_queue_receive(q, &l2, 0) != 0 || l2.msg == m || l2.msg == l.msg || body_of(l2.msg) != 7)
		return 6;
	if (quay_queue_ack(q, &l2) != 0)
		return 7;
	quay_msg_unref(l2.msg);
	if (quay_queue_receive(q, &l2, 0) != -EAGAIN)
		return 8;
	return 0; /* crash, one copy unacked */
}

/* Review 2, item 2: the same message twice in one send_batch, and sent
 * again while held: the copies are messages of their own in the log;
 * the log stays readable, the acked ones stay gone, the unacked copy
 * comes back. */
static void
same_message_twice_in_batch(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	struct quayi_dur_info di;
	uint64_t seen[4];

	(void)state;
	crash_child(child_same_message_twice);
	o = dopts("q");
	q = mkq(&o); /* was -EBADMSG */
	assert_int_equal(st(q).restored, 1);
	assert_int_equal(quayi_queue_durable_info(q, &di), 0);
	assert_int_equal(di.live, 1);
	assert_int_equal(drain(q, seen, 4, true), 1);
	assert_int_equal(seen[0], 7);
	quay_queue_destroy(q);
}

/* Issue 11: the copy a send of a held message needs is made in the
 * message's pool. No room there: -ENOMEM, the caller keeps its
 * reference, nothing is enqueued or logged; with room again it goes. */
static void
shared_send_copy_needs_pool_room(void **state)
{
	struct quay_queue_opts o;
	quay_queue *a, *b;
	quay_pool *small;
	quay_msg *m, *f, **fill;
	size_t nf = 0, cap = (size_t)1 << 16;
	struct quayi_dur_info di;
	quay_lease l;

	(void)state;
	assert_int_equal(quay_pool_create((size_t)1 << 20, NULL, &small), 0);
	assert_non_null(fill = malloc(cap * sizeof(*fill)));
	o = dopts("a");
	a = mkq(&o);
	o = dopts("b");
	b = mkq(&o);
	assert_int_equal(quay_msg_new(small, "shared", 6, &m), 0);
	quay_msg_ref(m); /* for b */
	assert_int_equal(quay_queue_send(a, m), 0);
	while (nf < cap && quay_msg_new(small, "f", 1, &f) == 0)
		fill[nf++] = f;
	assert_true(nf > 0 && nf < cap); /* the pool is full */
	assert_int_equal(quay_queue_send(b, m), -ENOMEM);
	assert_int_equal(quay_queue_send_batch(b, &m, 1, NULL), 0);
	assert_int_equal(quay_msg_refcount(m), 2); /* a's and ours */
	assert_int_equal(st(b).sent, 0);
	assert_int_equal(quayi_queue_durable_info(b, &di), 0);
	assert_int_equal(di.live, 0);
	assert_int_equal(quay_queue_receive(b, &l, 0), -EAGAIN);
	quay_msg_unref(fill[--nf]); /* room for one */
	assert_int_equal(quay_queue_send(b, m), 0);
	assert_int_equal(quay_msg_refcount(m), 1); /* a's */
	assert_int_equal(quay_queue_receive(b, &l, 0), 0);
	assert_ptr_not_equal(l.msg, m);
	assert_int_equal(quay_msg_body_len(l.msg), 6);
	assert_memory_equal(quay_msg_body(l.msg), "shared", 6);
	assert_int_equal(quay_queue_ack(b, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(drain(a, NULL, 4, true), 1);
	while (nf > 0)
		quay_msg_unref(fill[--nf]);
	free(fill);
	quay_queue_destroy(b);
	quay_queue_destroy(a);
	assert_int_equal(quay_pool_destroy(small), 0);
}

/* Issue 11 (release): a release does not count an attempt, in memory or
 * after a restart: the log holds only failed deliveries, so a message
 * comes back with the attempts its last logged failure left it. */
static void
release_attempts_across_restart(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l;

	(void)state;
	o = dopts("rel");
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	o.max_attempts = 3;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkmsg(5)), 0);
	for (int i = 0; i < 3; i++) { /* more than max_attempts */
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(l.attempt, 1);
		assert_int_equal(quay_queue_release(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(l.attempt, 1);
	assert_int_equal(quay_msg_attempts(l.msg), 1);
	/* One failure (logged: attempts 1), then releases. */
	assert_int_equal(quay_queue_nack(q, &l, "fail"), 0);
	quay_msg_unref(l.msg);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(l.attempt, 2);
		assert_int_equal(quay_queue_release(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(l.attempt, 2); /* not 3: not dead-lettered yet */
	assert_int_equal(quay_queue_release(q, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(l.attempt, 2);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(st(q).dead_lettered, 0);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 0);
	quay_queue_destroy(q);
}

struct race {
	quay_queue *q[2];
	quay_msg *m;
	pthread_barrier_t bar;
	int rc[2];
	int rounds;
};

static void *
race_sender(void *arg)
{
	struct race *r = arg;

	for (int i = 0; i < r->rounds; i++) {
		pthread_barrier_wait(&r->bar);
		r->rc[1] = quay_queue_send(r->q[1], r->m);
		pthread_barrier_wait(&r->bar);
	}
	return NULL;
}

/* Review 2, item 2 (the race): one message with two references sent by
 * two threads at once to two durable queues on the same WAL: both sends
 * succeed every round (issue 11: the loser of the claim was -EINVAL, it
 * now sends a copy), each queue gets exactly one message, exactly one of
 * the two is the original; after acking everything nothing is live and
 * a restart restores nothing. */
static void
concurrent_send_to_two_durable_queues(void **state)
{
	struct race r = { .rounds = 150 };
	struct quay_queue_opts o;
	pthread_t t;
	int wins[2] = { 0, 0 };
	struct quayi_dur_info di;

	(void)state;
	/* SYNC: the send's fdatasync makes the window of the old bug (check,
	 * log, then set the id) wide enough to be hit every few rounds. */
	assert_int_equal(quay_wal_close(wal), 0);
	wal_mode = QUAY_WAL_SYNC;
	wal_open();
	o = dopts("q1");
	r.q[0] = mkq(&o);
	o = dopts("q2");
	r.q[1] = mkq(&o);
	assert_int_equal(pthread_barrier_init(&r.bar, NULL, 2), 0);
	assert_int_equal(pthread_create(&t, NULL, race_sender, &r), 0);
	for (int i = 0; i < r.rounds; i++) {
		r.m = mkmsg((uint64_t)i);
		quay_msg_ref(r.m);
		pthread_barrier_wait(&r.bar);
		r.rc[0] = quay_queue_send(r.q[0], r.m);
		pthread_barrier_wait(&r.bar);
		/* Both are sent; one of the two queues holds the original. */
		assert_int_equal(r.rc[0], 0);
		assert_int_equal(r.rc[1], 0);
		for (int k = 0; k < 2; k++) {
			quay_lease l;

			assert_int_equal(quay_queue_receive(r.q[k], &l, 0), 0);
			assert_int_equal(body_of(l.msg), (uint64_t)i);
			if (l.msg == r.m)
				wins[k]++;
			assert_int_equal(quay_queue_ack(r.q[k], &l), 0);
			quay_msg_unref(l.msg);
			assert_int_equal(drain(r.q[k], NULL, 4, true), 0);
		}
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	pthread_barrier_destroy(&r.bar);
	assert_int_equal(wins[0] + wins[1], r.rounds);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(quayi_queue_durable_info(r.q[k], &di), 0);
		assert_int_equal(di.live, 0);
		assert_int_equal(di.log_errors, 0);
	}
	quay_queue_destroy(r.q[1]);
	restart(&r.q[0], NULL);
	o = dopts("q1");
	r.q[0] = mkq(&o);
	o = dopts("q2");
	r.q[1] = mkq(&o);
	assert_int_equal(st(r.q[0]).restored, 0);
	assert_int_equal(st(r.q[1]).restored, 0);
	quay_queue_destroy(r.q[1]);
	quay_queue_destroy(r.q[0]);
}

struct seen_state {
	unsigned headers;
	int64_t expires;
	size_t n;
};

static int
visit_src(void *ctx, const quay_msg *m, quay_queue_state s)
{
	struct seen_state *v = ctx;

	(void)s;
	v->headers = quay_msg_header_count(m);
	v->expires = quay_msg_expires_ns(m);
	v->n++;
	return 0;
}

/* Small segments: max_record is a quarter of 64 KiB minus headers. */
static void
small_segment_wal(uint32_t max_record)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;

	assert_int_equal(quay_wal_close(wal), 0);
	wal_segment = QUAY_WAL_SEGMENT_MIN;
	o.sync_mode = QUAY_WAL_NONE;
	o.segment_bytes = wal_segment;
	o.max_record = max_record;
	assert_int_equal(quay_wal_open(dir, &o, &wal), 0);
}

static quay_msg *
big_msg(size_t len)
{
	static char body[QUAY_WAL_SEGMENT_MIN / 4];
	quay_msg *m = NULL;

	memset(body, 'x', sizeof(body));
	assert_true(len <= sizeof(body));
	assert_int_equal(quay_msg_new(pool, body, len, &m), 0);
	return m;
}

/* Review 2, item 3: a dead-letter move the log refuses (the image is at
 * max_record: with or without the DLQ headers the DEL + ADD batch is
 * above the WAL's batch limit) leaves the message as it was (no DLQ
 * headers, its TTL), compaction copies it (was: heap overflow in
 * compact_locked) and a restart restores it as it was. */
static void
refused_dead_letter_leaves_message_unchanged(void **state)
{
	struct quay_queue_opts o;
	quay_queue *dlq, *q;
	struct quay_wal_info wi;
	struct quayi_dur_info di;
	struct seen_state v = { 0, 0, 0 };
	quay_lease l;
	quay_msg *m;
	const int64_t ttl = QT_T0 + 3600 * 1000 * MS;

	(void)state;
	small_segment_wal(0);
	assert_int_equal(quay_wal_info(wal, &wi), 0);
	o = dopts("dlq");
	dlq = mkq(&o);
	o = dopts("a-rather-long-source-queue-name");
	o.dlq = dlq;
	o.max_attempts = 1;
	q = mkq(&o);
	m = big_msg(wi.max_record - QUAYI_DQ_ADD_HDR); /* the image is max_record */
	quay_msg_set_expires_ns(m, ttl);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	quay_msg_unref(l.msg); /* the queue's is the only one */
	assert_int_equal(quay_queue_nack(q, &l, "no"), 0);
	assert_int_equal(quayi_queue_durable_info(q, &di), 0);
	assert_true(di.log_errors >= 1);
	assert_int_equal(st(dlq).ready, 0);
	assert_int_equal(quay_queue_browse(q, visit_src, &v), 0);
	assert_int_equal(v.n, 1);
	assert_int_equal(v.headers, 0);
	assert_int_equal(v.expires, ttl);
	assert_int_equal(quayi_queue_compact(q), 0);
	assert_int_equal(quayi_queue_compact(q), 0);
	restart(&q, &dlq);
	o = dopts("dlq");
	dlq = mkq(&o);
	o = dopts("a-rather-long-source-queue-name");
	o.dlq = dlq;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);
	v = (struct seen_state){ 0, 0, 0 };
	assert_int_equal(quay_queue_browse(q, visit_src, &v), 0);
	assert_int_equal(v.n, 1);
	assert_int_equal(v.headers, 0);
	assert_int_equal(v.expires, ttl);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* Review 2, item 3: when only the DLQ headers make the image too big,
 * the message moves without them; compaction and restart keep it. */
static void
dead_letter_too_big_for_headers_moves_without(void **state)
{
	struct quay_queue_opts o;
	quay_queue *dlq, *q;
	quay_lease l;
	quay_msg *m;

	(void)state;
	small_segment_wal(8192);
	o = dopts("dlq");
	dlq = mkq(&o);
	o = dopts("src");
	o.dlq = dlq;
	o.max_attempts = 1;
	q = mkq(&o);
	m = big_msg(8192 - QUAYI_DQ_ADD_HDR - 8);
	quay_msg_set_expires_ns(m, QT_T0 + 3600 * 1000 * MS);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(quay_queue_nack(q, &l, "no"), 0);
	assert_int_equal(st(dlq).ready, 1);
	assert_int_equal(st(q).dead_lettered, 1);
	assert_int_equal(quayi_queue_compact(q), 0);
	restart(&q, &dlq);
	o = dopts("dlq");
	dlq = mkq(&o);
	assert_int_equal(st(dlq).restored, 1);
	assert_int_equal(quay_queue_receive(dlq, &l, 0), 0);
	assert_int_equal(quay_msg_body_len(l.msg), 8192 - QUAYI_DQ_ADD_HDR - 8);
	assert_int_equal(quay_msg_header_count(l.msg), 0);
	assert_int_equal(quay_msg_expires_ns(l.msg), 0);
	assert_int_equal(quay_queue_ack(dlq, &l), 0);
	quay_msg_unref(l.msg);
	quay_queue_destroy(dlq);
}

/* ---- the WAL's batch limit and compaction back-off ----------------------- */

/* A message whose ADD record takes exactly rec bytes in the log (header
 * and padding included; rec a multiple of 8, at least 32 + 72 + 8), its
 * body then grown by plus bytes. */
static quay_msg *
msg_rec_bytes_plus(uint64_t v, size_t rec, size_t plus)
{
	static unsigned char body[QUAY_WAL_SEGMENT_MIN / 4];
	size_t len = rec - QUAYI_WAL_REC_HDR - QUAYI_DQ_ADD_HDR + plus;
	quay_msg *m = NULL;

	assert_true(len >= 8 && len <= sizeof(body));
	memset(body, (int)(v & 0xff) | 1, len);
	memcpy(body, &v, sizeof(v));
	assert_int_equal(quay_msg_new(pool, body, len, &m), 0);
	return m;
}

static quay_msg *
msg_rec_bytes(uint64_t v, size_t rec)
{
	return msg_rec_bytes_plus(v, rec, 0);
}

struct commit_count {
	uint64_t from, to, commits;
};

static int
count_commit(void *ctx, uint64_t lsn, uint32_t type, uint32_t flags, const uint8_t *data, uint32_t len)
{
	struct commit_count *c = ctx;

	(void)type;
	(void)data;
	(void)len;
	if (lsn >= c->from && lsn < c->to && (flags & QUAYI_WAL_F_COMMIT))
		c->commits++;
	return 0;
}

/* COMMIT records (one per appendv) with LSNs in [from, to) in the WAL's
 * segment files under dir, read after a sync. */
static uint64_t
commits_between(uint64_t from, uint64_t to)
{
	struct commit_count c = { from, to, 0 };
	DIR *d;
	struct dirent *e;

	assert_int_equal(quay_wal_sync(wal, 0), 0);
	assert_non_null(d = opendir(dir));
	while ((e = readdir(d)) != NULL) {
		size_t nl = strlen(e->d_name);
		char path[512];
		FILE *f;
		long n;
		uint8_t *buf;
		struct quayi_wal_scan s;

		if (nl < 4 || strcmp(e->d_name + nl - 4, ".wal") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		assert_non_null(f = fopen(path, "rb"));
		assert_int_equal(fseek(f, 0, SEEK_END), 0);
		n = ftell(f);
		assert_true(n > 0);
		rewind(f);
		assert_non_null(buf = malloc((size_t)n));
		assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
		fclose(f);
		memset(&s, 0, sizeof(s));
		s.buf = buf;
		s.len = (size_t)n;
		s.last = true;
		assert_true(quayi_wal_scan(&s) >= 0);
		assert_int_equal(quayi_wal_walk(buf, s.end, count_commit, &c), 0);
		free(buf);
	}
	closedir(d);
	return c.commits;
}

/* The queue sizes its batches by the WAL's own limit. A queue that
 * sized them at segment/4 while the WAL accepts (segment - 32)/4 sent,
 * with 64 KiB segments, 128 messages with 24-byte bodies (128-byte
 * records: exactly 16,384 bytes) as one batch, which the WAL refused
 * (-EMSGSIZE): every one refused. The batch at the WAL's exact limit is
 * one appendv (one COMMIT record); one byte of body more makes two. */
static void
send_batch_at_wal_batch_limit(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_msg *ms[129];
	int res[129];
	struct quay_wal_info wi0, wi1;
	uint64_t limit;

	(void)state;
	small_segment_wal(0);
	o = dopts("edge");
	q = mkq(&o);
	limit = (QUAY_WAL_SEGMENT_MIN - QUAYI_WAL_SEG_HDR) / 4;
	print_message("64 KiB segments: WAL batch limit %" PRIu64 " bytes\n", limit);
	assert_int_equal(quayi_wal_batch_max(wal), limit); /* the queue's limit too */
	assert_int_equal(quayi_wal_batch_max(NULL), 0);
	/* The repro: 128 x 24-byte bodies = 128 x 128 record bytes. */
	for (size_t i = 0; i < 128; i++)
		ms[i] = msg_rec_bytes(i, 128);
	{
		int sent = quay_queue_send_batch(q, ms, 128, res), first = 0;
		size_t refused = 0;

		for (size_t i = 0; i < 128; i++) {
			if (res[i] != 0) {
				first = first ? first : res[i];
				refused++;
				quay_msg_unref(ms[i]); /* the caller keeps it */
			}
		}
		print_message("send_batch of 128 x 128-byte records: %d sent, %zu refused (%d)\n", sent,
		    refused, first);
		if (sent != 128)
			quay_queue_destroy(q);
		assert_int_equal(sent, 128);
	}
	assert_int_equal(drain(q, NULL, 200, true), 128);
	/* Exactly at the WAL's limit: 127 x 128 + one of 120 = 16,376 bytes
	 * is one batch: LSNs consecutive and one COMMIT record (one
	 * appendv). */
	for (size_t i = 0; i < 128; i++)
		ms[i] = msg_rec_bytes(1000 + i, i == 127 ? limit - 127 * 128 : 128);
	assert_int_equal(quay_wal_info(wal, &wi0), 0);
	assert_int_equal(quay_queue_send_batch(q, ms, 128, res), 128);
	assert_int_equal(quay_wal_info(wal, &wi1), 0);
	assert_int_equal(wi1.next_lsn - wi0.next_lsn, 128);
	for (size_t i = 0; i < 128; i++)
		assert_int_equal(res[i], 0);
	assert_int_equal(commits_between(wi0.next_lsn, wi1.next_lsn), 1);
	assert_int_equal(drain(q, NULL, 200, true), 128);
	/* One byte of body more on the last message (8 more record bytes,
	 * its padding) is over the limit: the same 128 go out as two
	 * appendvs, all of them sent. */
	for (size_t i = 0; i < 128; i++)
		ms[i] = msg_rec_bytes_plus(2000 + i, i == 127 ? limit - 127 * 128 : 128, i == 127);
	assert_int_equal(quay_wal_info(wal, &wi0), 0);
	assert_int_equal(quay_queue_send_batch(q, ms, 128, res), 128);
	assert_int_equal(quay_wal_info(wal, &wi1), 0);
	assert_int_equal(wi1.next_lsn - wi0.next_lsn, 128);
	for (size_t i = 0; i < 128; i++)
		assert_int_equal(res[i], 0);
	assert_int_equal(commits_between(wi0.next_lsn, wi1.next_lsn), 2);
	assert_int_equal(drain(q, NULL, 200, true), 128);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 0);
	quay_queue_destroy(q);
}

/* Compaction copies in batches of the WAL's limit: with 128 such
 * messages live, a copy batch of 16,384 bytes would be refused, never a
 * compaction, and each send and ack retry it. Compactions succeed, the files
 * stay bounded, and no log error is counted. */
static void
compaction_with_batch_at_limit(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	struct quay_wal_info wi;
	struct quayi_dur_info di;
	uint64_t max_bytes = 0;
	quay_lease l;

	(void)state;
	assert_int_equal(quay_wal_close(wal), 0);
	wal = NULL;
	qt_rm_dir(dir); /* no 64 MiB segment left */
	wal_segment = QUAY_WAL_SEGMENT_MIN;
	wal_open();
	o = dopts("keep");
	o.compact_bytes = 64 << 10;
	q = mkq(&o);
	for (uint64_t i = 0; i < 128; i++) {
		quay_msg *m = msg_rec_bytes(1000000 + i, 128);

		assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + (int64_t)1000000 * 1000 * MS), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
	for (uint64_t i = 0; i < 4000; i++) {
		quay_msg *m = msg_rec_bytes(i, 128);

		assert_int_equal(quay_queue_send(q, m), 0);
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
		if (i % 256 == 0) {
			assert_int_equal(quay_wal_info(wal, &wi), 0);
			if (wi.file_bytes > max_bytes)
				max_bytes = wi.file_bytes;
		}
	}
	assert_int_equal(quayi_queue_durable_info(q, &di), 0);
	print_message("128 live at the batch limit: %" PRIu64 " compactions, %" PRIu64
	              " log errors, max %" PRIu64 " file bytes\n",
	    di.compactions, di.log_errors, max_bytes);
	if (di.compactions < 5)
		quay_queue_destroy(q);
	assert_true(di.compactions >= 5);
	assert_int_equal(di.log_errors, 0);
	assert_true(max_bytes <= (uint64_t)8 * QUAY_WAL_SEGMENT_MIN);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 128);
	quay_queue_destroy(q);
}

/* Back-off: a compaction that cannot succeed must not
 * be retried by every send and ack. Made to fail for good: a 6,000-byte
 * message is logged, then the WAL is reopened with max_record 4,096, so
 * its compaction copy is always refused (-EMSGSIZE). 3,000 send+ack
 * cycles append ~550 KB; with compact_bytes 64 KiB a compaction is due
 * about every 64 KiB appended, so about 9 attempts (each a log error),
 * where retrying on every transition would count ~2 per cycle. */
static void
compaction_that_cannot_succeed_backs_off(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quayi_dur_info di;
	quay_lease l;
	uint64_t appended = 0, bound;

	(void)state;
	assert_int_equal(quay_wal_close(wal), 0);
	wal = NULL;
	qt_rm_dir(dir);
	wal_segment = QUAY_WAL_SEGMENT_MIN;
	wal_open();
	o = dopts("stuck");
	o.compact_bytes = 64 << 10;
	q = mkq(&o);
	{
		quay_msg *big = big_msg(6000);

		assert_int_equal(quay_msg_set_not_before_ns(big, QT_T0 + (int64_t)1000000 * 1000 * MS), 0);
		assert_int_equal(quay_queue_send(q, big), 0);
	}
	quay_queue_destroy(q);
	assert_int_equal(quay_wal_close(wal), 0);
	wo.sync_mode = QUAY_WAL_NONE;
	wo.segment_bytes = wal_segment;
	wo.max_record = 4096;
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);
	assert_int_equal(quayi_queue_compact(q), -EMSGSIZE); /* it cannot succeed */
	for (uint64_t i = 0; i < 3000; i++) {
		quay_msg *m = msg_rec_bytes(i, 128);

		assert_int_equal(quay_queue_send(q, m), 0);
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
		appended += 128 + 56 + 64; /* ADD + DEL + RETRY (delivery) */
	}
	assert_int_equal(quayi_queue_durable_info(q, &di), 0);
	bound = appended / (64 << 10) + 2;
	print_message("a compaction that cannot succeed: %" PRIu64
	              " attempts (log errors) over 3000 send+ack "
	              "cycles, bound %" PRIu64 ", %" PRIu64 " compactions\n",
	    di.log_errors - 1, bound, di.compactions);
	if (di.log_errors - 1 > bound)
		quay_queue_destroy(q);
	assert_true(di.log_errors - 1 <= bound);
	assert_true(di.log_errors - 1 >= 1); /* it did try again */
	assert_int_equal(di.compactions, 0);
	quay_queue_destroy(q);
}

/* ---- faults under a durable queue, through the WAL's I/O table ----------- */

#define FQ_MAX 8192u
#define FQ_DIR "/memwal"
enum { FQ_SENT = 1, FQ_SEND_ERR = 2, FQ_ACKED = 4, FQ_ACK_ERR = 8 };

struct fq_seen {
	uint8_t where[FQ_MAX]; /* times found after recovery */
	uint64_t found, corrupt;
};

/* A message's body: 8 + v % 50 bytes, its seq then (v & 0xff). Checked
 * without asserting (the counts are reported). */
static int
fq_visit(void *ctx, const quay_msg *m, quay_queue_state s)
{
	struct fq_seen *f = ctx;
	const unsigned char *b = quay_msg_body(m);
	uint64_t v;
	bool ok;

	(void)s;
	f->found++;
	if (quay_msg_body_len(m) < 8) {
		f->corrupt++;
		return 0;
	}
	memcpy(&v, b, 8);
	ok = v < FQ_MAX && quay_msg_body_len(m) == 8 + v % 50;
	for (size_t i = 8; ok && i < quay_msg_body_len(m); i++)
		ok = b[i] == (v & 0xff);
	if (!ok) {
		f->corrupt++;
		return 0;
	}
	if (f->where[v] < 255)
		f->where[v]++;
	return 0;
}

/* The message of seq v, with the dedup id "fq-v" (issue 13: the window
 * must survive the cut too). */
static quay_msg *
fq_msg(uint64_t v)
{
	quay_msg *m = NULL;
	char body[64], id[32];
	int n = snprintf(id, sizeof(id), "fq-%" PRIu64, v);

	memset(body, (int)(v & 0xff), sizeof(body));
	memcpy(body, &v, sizeof(v));
	if (quay_msg_new_ex(pool, body, 8 + v % 50, QUAY_MSG_HEADER_ROOM(1, 32), 0, &m) != 0)
		return NULL;
	if (quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, (size_t)n) != 0) {
		quay_msg_unref(m);
		return NULL;
	}
	return m;
}

/* Sends whose id fq_check found refused after the recovery. */
static uint64_t fq_dups_refused;

static struct quay_queue_opts
fq_opts(quay_wal *w)
{
	struct quay_queue_opts o = dopts("fq");

	o.wal = w;
	o.capacity = FQ_MAX;
	o.compact_bytes = 16 << 10; /* compactions (copies, checkpoints) during the trial */
	o.visibility_ns = (int64_t)1000000 * 1000 * MS;
	o.dedup_window_ns = (int64_t)1000000 * 1000 * MS; /* all of the trial */
	return o;
}

/* Recover the log in fs and check the SYNC promises against the flags:
 * a send that returned 0 and was not acked comes back exactly once; an
 * acked message never; a refused send or ack may go either way but never
 * twice; every body byte-exact; open succeeds (no corruption accepted,
 * nothing acknowledged cut); the dedup window survived: every send that
 * returned 0, acked or not, is refused as a duplicate when sent again.
 * Returns the violations (printed). */
static uint64_t
fq_check(struct memfs *fs, const uint8_t *flags, uint64_t nseq, const char *what, uint64_t *back)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_wal_report rep;
	struct fq_seen *f = calloc(1, sizeof(*f));
	quay_wal *w = NULL;
	quay_queue *q = NULL;
	struct quay_queue_opts o;
	uint64_t bad = 0;
	int rc;

	assert_non_null(f);
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	wo.report = &rep;
	rc = quayi_wal_open_io(FQ_DIR, &wo, &memfs_io, fs, &w);
	if (rc != 0) {
		print_message("%s: recovery failed: %d (reason %u, corrupt %d)\n", what, rc, rep.reason,
		    rep.corrupt);
		free(f);
		return 1;
	}
	o = fq_opts(w);
	rc = quay_queue_create(&o, &q);
	if (rc != 0) {
		print_message("%s: queue recovery failed: %d\n", what, rc);
		quay_wal_close(w);
		free(f);
		return 1;
	}
	quay_queue_browse(q, fq_visit, f);
	for (uint64_t s = 0; s < nseq; s++) {
		uint8_t fl = flags[s];
		bool must = (fl & FQ_SENT) && !(fl & (FQ_ACKED | FQ_ACK_ERR));
		bool never = (fl & FQ_ACKED) || !(fl & (FQ_SENT | FQ_SEND_ERR));

		if ((must && f->where[s] != 1) || (never && f->where[s] != 0) || f->where[s] > 1) {
			if (bad < 5)
				print_message("%s: seq %" PRIu64 " flags 0x%x found %u times\n", what, s, fl,
				    f->where[s]);
			bad++;
		}
		if ((fl & FQ_SEND_ERR) && f->where[s] != 0)
			(*back)++;
	}
	bad += f->corrupt;
	for (uint64_t s = 0; s < nseq; s++) {
		quay_msg *m;

		if (!(flags[s] & FQ_SENT))
			continue;
		assert_non_null(m = fq_msg(s));
		rc = quay_queue_send(q, m);
		if (rc != QUAY_QUEUE_DUPLICATE) {
			if (bad < 5)
				print_message("%s: seq %" PRIu64 " sent again after the recovery: %d\n", what,
				    s, rc);
			bad++;
			if (rc < 0)
				quay_msg_unref(m);
		} else {
			fq_dups_refused++;
		}
	}
	quay_queue_destroy(q);
	quay_wal_close(w);
	free(f);
	return bad;
}

/* Power loss under a durable queue (SYNC): a single thread sends (alone
 * and in batches), acks, nacks and keeps leases on a queue whose WAL runs
 * on wal_memfs.h; a power cut (keep / drop / garble the unsynced sectors,
 * unsynced names kept or lost) strikes at a random file operation, maybe
 * in the middle of a write, a sync, a roll or a compaction. Then the log
 * is recovered and fq_check's promises are checked. Proven able to
 * fail: with a memfs whose fdatasync returns 0 without syncing, 300
 * trials gave 15,137 violations.
 * QUAY_DUR_POWER_TRIALS sets the trials (default 300). */
static void
power_loss_under_durable_queue(void **state)
{
	const char *env = getenv("QUAY_DUR_POWER_TRIALS");
	unsigned trials = env != NULL ? (unsigned)strtoul(env, NULL, 10) : 300;
	uint8_t *flags = calloc(FQ_MAX, 1);
	uint64_t rng = 0x19191919, bad = 0, sent = 0, acked = 0, refused = 0, back = 0, mid_op = 0;
	uint64_t compactions = 0;

	(void)state;
	assert_non_null(flags);
	for (unsigned t = 0; t < trials; t++) {
		struct memfs fs;
		struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
		struct quayi_dur_info di;
		quay_wal *w;
		quay_queue *q;
		struct quay_queue_opts o;
		quay_lease held[64];
		size_t nheld = 0;
		uint64_t seq = 0, ops = 0, cut_after;
		char what[64];

		memset(flags, 0, FQ_MAX);
		memfs_init(&fs, rng + t);
		wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
		assert_int_equal(quayi_wal_open_io(FQ_DIR, &wo, &memfs_io, &fs, &w), 0);
		o = fq_opts(w);
		assert_int_equal(quay_queue_create(&o, &q), 0);
		/* Half the trials: the cut strikes inside a file operation;
		 * the other half: between two queue calls. */
		cut_after = 1 + qt_rand(&rng) % 600;
		pthread_mutex_lock(&fs.mu);
		fs.crash_policy = (int)(t % 4); /* MIX, KEEP, DROP, GARBLE */
		if (t % 8 < 4)
			fs.crash_at_op = fs.ops + 1 + (long)(qt_rand(&rng) % 1500);
		pthread_mutex_unlock(&fs.mu);
		while (seq + 4 < FQ_MAX && (t % 8 < 4 || ops++ < cut_after)) {
			unsigned r = (unsigned)(qt_rand(&rng) % 16);
			quay_lease l;

			if (r < 7) {
				quay_msg *m[4];
				int res[4];
				size_t n = r < 5 ? 1 : 1 + qt_rand(&rng) % 4;

				for (size_t i = 0; i < n; i++)
					assert_non_null(m[i] = fq_msg(seq + i));
				if (n == 1)
					res[0] = quay_queue_send(q, m[0]);
				else
					assert_true(quay_queue_send_batch(q, m, n, res) >= 0);
				for (size_t i = 0; i < n; i++, seq++) {
					flags[seq] |= res[i] == 0 ? FQ_SENT : FQ_SEND_ERR;
					if (res[i] != 0)
						quay_msg_unref(m[i]);
				}
			} else if (quay_queue_receive(q, &l, 0) == 0) {
				uint64_t v;

				memcpy(&v, quay_msg_body(l.msg), 8);
				if (r < 13) {
					flags[v] |= quay_queue_ack(q, &l) == 0 ? FQ_ACKED : FQ_ACK_ERR;
				} else if (r < 15 || nheld == 64) {
					(void)quay_queue_nack(q, &l, NULL);
				} else {
					held[nheld++] = l; /* in flight at the power cut */
					continue;
				}
				quay_msg_unref(l.msg);
			}
			pthread_mutex_lock(&fs.mu);
			bool dead = fs.dead;
			pthread_mutex_unlock(&fs.mu);
			if (dead) {
				mid_op++;
				break;
			}
		}
		if (!fs.dead)
			memfs_crash(&fs, (int)(t % 4));
		assert_int_equal(quayi_queue_durable_info(q, &di), 0);
		compactions += di.compactions;
		for (size_t i = 0; i < nheld; i++)
			quay_msg_unref(held[i].msg);
		quay_queue_destroy(q);
		(void)quay_wal_close(w); /* -EIO: the file system died */
		memfs_revive(&fs);
		for (uint64_t s = 0; s < seq; s++) {
			sent += (flags[s] & FQ_SENT) != 0;
			acked += (flags[s] & FQ_ACKED) != 0;
			refused += (flags[s] & FQ_SEND_ERR) != 0;
		}
		snprintf(what, sizeof(what), "power trial %u (policy %u)", t, t % 4);
		bad += fq_check(&fs, flags, seq, what, &back);
		memfs_fini(&fs);
	}
	print_message("durable queue power cuts: %u trials (%" PRIu64
	              " cut mid-operation), sends acked %" PRIu64 ", acks %" PRIu64 ", sends refused %" PRIu64
	              " (%" PRIu64 " of them back), compactions %" PRIu64
	              ", ids refused after recovery %" PRIu64 ": violations %" PRIu64 "\n",
	    trials, mid_op, sent, acked, refused, back, compactions, fq_dups_refused, bad);
	assert_int_equal(bad, 0);
	assert_true(sent > 0 && acked > 0);
	free(flags);
}

/* ---- fdatasync EIO / ENOSPC and write ENOSPC under a durable queue ---- */

struct fq_run {
	quay_queue *q;
	uint8_t *flags;             /* FQ_* per seq, atomic OR */
	uint64_t next;              /* atomic: the next seq */
	int want;                   /* the sticky code expected */
	uint64_t after_fail, wrong; /* atomic: ops after this thread saw the failure; wrong codes */
	uint64_t seed;
};

static void *
fq_worker(void *arg)
{
	struct fq_run *r = arg;
	uint64_t rng = __atomic_fetch_add(&r->seed, 7919, __ATOMIC_RELAXED); /* relaxed: a distinct seed */
	bool failed = false;
	unsigned after = 0;

	/* Each thread stops on its own: after 40 calls past the failure,
	 * or when the sequence numbers run out. */
	while (after < 40) {
		int rc;

		if (qt_rand(&rng) % 2 == 0) {
			/* Relaxed: a counter handing out distinct seqs. */
			uint64_t s = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
			quay_msg *m;

			if (s >= FQ_MAX)
				break;
			if ((m = fq_msg(s)) == NULL)
				break;
			/* One in four is delayed past the test: never received or
			 * acked, so it must come back if its send returned 0. */
			if (s % 4 == 0)
				(void)quay_msg_set_not_before_ns(m, QT_T0 + (int64_t)1000000 * 1000 * MS);
			rc = quay_queue_send(r->q, m);
			/* Relaxed: the flags are read after the join. */
			__atomic_fetch_or(&r->flags[s], rc == 0 ? FQ_SENT : FQ_SEND_ERR, __ATOMIC_RELAXED);
			if (rc != 0)
				quay_msg_unref(m);
		} else {
			quay_lease l;
			uint64_t v;

			if (quay_queue_receive(r->q, &l, 0) != 0)
				continue;
			memcpy(&v, quay_msg_body(l.msg), 8);
			rc = quay_queue_ack(r->q, &l);
			/* Relaxed: the flags are read after the join. */
			__atomic_fetch_or(&r->flags[v], rc == 0 ? FQ_ACKED : FQ_ACK_ERR, __ATOMIC_RELAXED);
			quay_msg_unref(l.msg);
		}
		if (failed) {
			after++;
			/* Relaxed: counters read after the join. */
			__atomic_fetch_add(&r->after_fail, 1, __ATOMIC_RELAXED);
			if (rc != r->want)
				__atomic_fetch_add(&r->wrong, 1, __ATOMIC_RELAXED);
		} else if (rc != 0) {
			failed = true;
			if (rc != r->want)
				__atomic_fetch_add(&r->wrong, 1, __ATOMIC_RELAXED); /* relaxed: counter */
		}
	}
	return NULL;
}

/* 4 threads send and ack on a SYNC durable queue; the n-th fdatasync
 * fails (EIO, or ENOSPC, which the WAL reports as -EIO) or the file
 * system fills up (a write fails with ENOSPC: -ENOSPC). From the failure
 * on every send and ack returns that sticky code. Then power is cut
 * dropping every unsynced byte (what an fsync failure may have lost) and
 * the log is recovered: nothing acknowledged is lost (a send that
 * returned 0 is back exactly once unless acked), nothing acked is back,
 * a refused send or ack may go either way. One message in four is
 * delayed past the test, so that some acknowledged sends are never acked
 * and must come back. Proven able to fail: with a memfs whose fdatasync
 * returns 0 without syncing, 385 of 385 such sends were reported lost.
 * QUAY_DUR_FAULT_ROUNDS sets the rounds per fault (default 20). */
static void
sync_and_space_errors_under_durable_queue(void **state)
{
	static const struct {
		const char *name;
		int sync_errno; /* fdatasync fails with it; 0: a write fails with ENOSPC */
		int want;
	} faults[] = { { "fdatasync EIO", EIO, -EIO }, { "fdatasync ENOSPC", ENOSPC, -EIO },
		{ "write ENOSPC", 0, -ENOSPC } };
	const char *env = getenv("QUAY_DUR_FAULT_ROUNDS");
	unsigned rounds = env != NULL ? (unsigned)strtoul(env, NULL, 10) : 20;
	uint8_t *flags = calloc(FQ_MAX, 1);
	uint64_t rng = 0x5eed19;

	(void)state;
	assert_non_null(flags);
	for (size_t k = 0; k < sizeof(faults) / sizeof(faults[0]); k++) {
		uint64_t bad = 0, sent = 0, acked = 0, refused = 0, ack_refused = 0, back = 0, after = 0,
		         wrong = 0;
		uint64_t kept = 0;

		for (unsigned t = 0; t < rounds; t++) {
			struct memfs fs;
			struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
			struct quay_wal_info wi;
			struct fq_run run;
			quay_wal *w;
			struct quay_queue_opts o;
			pthread_t th[4];
			char what[64];

			memset(flags, 0, FQ_MAX);
			memset(&run, 0, sizeof(run));
			memfs_init(&fs, rng + t);
			fs.no_allocate =
			    faults[k].sync_errno == 0; /* writes grow the files: they meet the quota */
			wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
			assert_int_equal(quayi_wal_open_io(FQ_DIR, &wo, &memfs_io, &fs, &w), 0);
			o = fq_opts(w);
			assert_int_equal(quay_queue_create(&o, &run.q), 0);
			pthread_mutex_lock(&fs.mu);
			if (faults[k].sync_errno != 0) {
				fs.sync_errno = faults[k].sync_errno;
				fs.sync_fail_at = fs.syncs + 1 + (long)(qt_rand(&rng) % 300);
			} else {
				fs.quota = memfs_used(&fs) + 4096 + qt_rand(&rng) % (96 << 10);
			}
			pthread_mutex_unlock(&fs.mu);
			run.flags = flags;
			run.want = faults[k].want;
			run.seed = rng + 1000 * t;
			for (int i = 0; i < 4; i++)
				assert_int_equal(pthread_create(&th[i], NULL, fq_worker, &run), 0);
			for (int i = 0; i < 4; i++)
				pthread_join(th[i], NULL);
			assert_int_equal(quay_wal_info(w, &wi), 0);
			if (wi.failed != faults[k].want) {
				print_message("%s round %u: the WAL did not fail with %d (failed %d)\n",
				    faults[k].name, t, faults[k].want, wi.failed);
				bad++;
			}
			quay_queue_destroy(run.q);
			(void)quay_wal_close(w);
			/* The disk holds only what was synced. */
			memfs_crash(&fs, MEMFS_DROP);
			memfs_revive(&fs);
			pthread_mutex_lock(&fs.mu);
			fs.sync_fail_at = 0;
			fs.quota = 0;
			pthread_mutex_unlock(&fs.mu);
			for (uint64_t s = 0; s < FQ_MAX && s < run.next; s++) {
				sent += (flags[s] & FQ_SENT) != 0;
				acked += (flags[s] & FQ_ACKED) != 0;
				refused += (flags[s] & FQ_SEND_ERR) != 0;
				ack_refused += (flags[s] & FQ_ACK_ERR) != 0;
				kept += (flags[s] & FQ_SENT) && !(flags[s] & (FQ_ACKED | FQ_ACK_ERR));
			}
			after += run.after_fail;
			wrong += run.wrong;
			snprintf(what, sizeof(what), "%s round %u", faults[k].name, t);
			bad += fq_check(&fs, flags, run.next < FQ_MAX ? run.next : FQ_MAX, what, &back);
			memfs_fini(&fs);
		}
		print_message("durable queue, %s: %u rounds x 4 threads: sends acked %" PRIu64 " (%" PRIu64
		              " never "
		              "acked: must be back), acks %" PRIu64 ", sends refused %" PRIu64 " (%" PRIu64
		              " back after recovery), "
		              "acks refused %" PRIu64 ", ops after the failure %" PRIu64 " (not %d: %" PRIu64
		              "), violations %" PRIu64 "\n",
		    faults[k].name, rounds, sent, kept, acked, refused, back, ack_refused, after,
		    faults[k].want, wrong, bad);
		assert_int_equal(bad, 0);
		assert_int_equal(wrong, 0);
		assert_true(after > 0 && kept > 0);
	}
	free(flags);
}

/* ---- the dedup window across a restart (issue 13) -------------------------- */

/* Test hook of src/queue_cdedup.c: replaces the content key. */
extern void (*quayi_cdedup_test_key)(const quay_msg *msg, uint64_t *h1, uint64_t *h2);

#define WIN (10000 * MS)

static struct quay_queue_opts
dedup_opts(const char *name, unsigned flags)
{
	struct quay_queue_opts o = dopts(name);

	o.dedup_window_ns = WIN;
	o.flags |= flags;
	return o;
}

/* Send body (with dedup id `id` unless NULL): the send's result. */
static int
send_d(quay_queue *q, const char *id, const char *body)
{
	quay_msg *m = NULL;
	int rc;

	assert_int_equal(quay_msg_new_ex(pool, body, strlen(body), QUAY_MSG_HEADER_ROOM(1, 64), 0, &m), 0);
	if (id != NULL)
		assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, strlen(id)), 0);
	rc = quay_queue_send(q, m);
	if (rc < 0)
		quay_msg_unref(m);
	return rc;
}

/* Receive one message and ack it; its body must be `body`. */
static void
take_ack(quay_queue *q, const char *body)
{
	quay_lease l;

	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_msg_body_len(l.msg), strlen(body));
	assert_memory_equal(quay_msg_body(l.msg), body, strlen(body));
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
}

/* What the log holds of a queue: DEDUP records, and send ADDs whose
 * image carries a given byte string. */
struct dd_count {
	uint64_t qid;
	const char *needle;
	uint64_t dedup, sends_with;
};

static int
dd_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct dd_count *c = ctx;
	const unsigned char *p = data;

	(void)lsn;
	if (len < 8 || quayi_dqf_get(p + QUAYI_DQF_QID, 8) != c->qid)
		return 0;
	if (type == QUAYI_DQ_DEDUP)
		c->dedup++;
	if (type == QUAYI_DQ_ADD && ((p[QUAYI_DQF_ADD_FLAGS] >> 1) & 7u) == QUAYI_DQF_O_SEND &&
	    memmem(p, len, c->needle, strlen(c->needle)) != NULL)
		c->sends_with++;
	return 0;
}

static struct dd_count
dd_in_log(const char *name, const char *needle)
{
	struct dd_count c = { quayi_dqf_qid(name, strlen(name)), needle, 0, 0 };

	assert_int_equal(quay_wal_replay(wal, 1, dd_visit, &c), 0);
	return c;
}

/* Ids sent before a restart are refused after it, inside the window
 * measured from their first accept: one acked before the restart, one
 * still in the queue; at accept + window they are new again. */
static void
dedup_id_survives_restart(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;

	(void)state;
	o = dedup_opts("dd", 0);
	q = mkq(&o);
	assert_int_equal(send_d(q, "a", "A"), 0);
	take_ack(q, "A"); /* acked before the restart: the window outlives it */
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(send_d(q, "b", "B"), 0); /* still in the queue */
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(st(q).restored, 1);
	assert_int_equal(send_d(q, "a", "A2"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, "b", "B2"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, "c", "C"), 0);
	assert_int_equal(st(q).deduplicated, 2);
	/* The window's last nanosecond of "a" (accepted at T0). */
	qt_set_time(QT_T0 + WIN - 1);
	assert_int_equal(send_d(q, "a", "A3"), QUAY_QUEUE_DUPLICATE);
	qt_set_time(QT_T0 + WIN);
	assert_int_equal(send_d(q, "a", "A4"), 0);
	assert_int_equal(send_d(q, "b", "B3"), QUAY_QUEUE_DUPLICATE); /* accepted at T0 + 1 s */
	/* A restart after the window: nothing left of "b". */
	restart(&q, NULL);
	qt_set_time(QT_T0 + 1000 * MS + WIN);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(send_d(q, "b", "B4"), 0);
	/* "a" (A4, accepted at T0 + WIN) is still inside, "c" (T0) not. */
	assert_int_equal(send_d(q, "a", "A5"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, "c", "C2"), 0);
	quay_queue_destroy(q);
}

/* A compaction whose checkpoint deletes the segments of the sends' ADD
 * records carries the window as DEDUP records: twice, and across a
 * restart in between. */
static void
dedup_window_survives_compaction(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	struct dd_count c;
	char body[512];

	(void)state;
	wal_segment = QUAY_WAL_SEGMENT_MIN;
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir);
	wal_open();
	o = dedup_opts("ddc", 0);
	o.compact_bytes = (uint64_t)1 << 40; /* only when the test says */
	q = mkq(&o);
	assert_int_equal(send_d(q, "gone-1", "X"), 0);
	take_ack(q, "X");
	assert_int_equal(send_d(q, "kept-1", "K"), 0);
	/* Enough traffic to fill several 64 KiB segments. */
	memset(body, 'p', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	for (int i = 0; i < 600; i++) {
		assert_int_equal(send_d(q, NULL, body), 0);
		take_ack(q, i == 0 ? "K" : body); /* one message stays in the queue */
	}
	assert_int_equal(quayi_queue_compact(q), 0);
	c = dd_in_log("ddc", "gone-1");
	assert_int_equal(c.sends_with, 0); /* the send's ADD is gone */
	assert_true(c.dedup >= 2);         /* gone-1 and kept-1 */
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(send_d(q, "gone-1", "X2"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, "kept-1", "K2"), QUAY_QUEUE_DUPLICATE);
	/* Compacted again after the restart: the recovered window is carried. */
	for (int i = 0; i < 600; i++) {
		assert_int_equal(send_d(q, NULL, body), 0);
		take_ack(q, body);
	}
	assert_int_equal(quayi_queue_compact(q), 0);
	assert_int_equal(quayi_queue_compact(q), 0);
	c = dd_in_log("ddc", "gone-1");
	assert_int_equal(c.sends_with, 0);
	assert_true(c.dedup >= 2);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(send_d(q, "gone-1", "X3"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, "kept-1", "K3"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(st(q).deduplicated, 2);
	quay_queue_destroy(q);
}

/* A compaction between a send's dedup check and its ADD write does not
 * log the key: the send's own ADD carries it. If that write then fails,
 * the key is in the log nowhere and the producer's retry after a restart
 * is accepted, not refused as a duplicate. The race is made deterministic
 * with the queue's allocator: dq_add allocates an image over 2 KiB
 * before it takes the log's lock; the hook compacts (through another
 * queue of the WAL) there, then fails the allocation. A second send,
 * whose write succeeds after such a compaction, is still refused after
 * the restart (its ADD holds the key). */
static quay_queue *race_other;
static int race_armed, race_compacted;

static void *
race_alloc(void *ctx, size_t size, size_t align)
{
	(void)ctx;
	if (race_armed != 0 && size > 2048 && size < 4000) { /* dq_add's image buffer */
		race_compacted += quayi_queue_compact(race_other) == 0;
		if (race_armed-- == 2)
			return NULL;
	}
	return aligned_alloc(align, (size + align - 1) / align * align);
}

static void
race_free(void *ctx, void *p, size_t size, size_t align)
{
	(void)ctx;
	(void)size;
	(void)align;
	free(p);
}

static void
dedup_key_of_refused_send_not_logged(void **state)
{
	static const struct quay_allocator hook = { race_alloc, race_free, NULL, NULL };
	struct quay_queue_opts o, ob;
	quay_queue *q;
	char body[3001];

	(void)state;
	memset(body, 'r', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	o = dedup_opts("race", 0);
	o.allocator = &hook;
	ob = dopts("other");
	q = mkq(&o);
	race_other = mkq(&ob);
	race_armed = 2; /* the first send fails, the second is logged */
	race_compacted = 0;
	assert_int_equal(send_d(q, "refused", body), -ENOMEM);
	assert_int_equal(send_d(q, "logged", body), 0);
	assert_int_equal(race_compacted, 2);
	quay_queue_destroy(race_other);
	restart(&q, NULL);
	o.wal = wal;
	o.allocator = NULL;
	q = mkq(&o);
	assert_int_equal(send_d(q, "refused", "retry"), 0);
	assert_int_equal(send_d(q, "logged", "again"), QUAY_QUEUE_DUPLICATE);
	quay_queue_destroy(q);
}

static void
same_key(const quay_msg *msg, uint64_t *h1, uint64_t *h2)
{
	(void)msg;
	*h1 = 42;
	*h2 = 43;
}

/* Content dedup after a restart: a body acked before it is refused (its
 * key alone: the body is gone), one still in the queue is refused after
 * comparing bodies; with every key forced equal, a different body is
 * accepted while the remembered message is there to compare with. */
static void
content_dedup_survives_restart(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;

	(void)state;
	o = dedup_opts("cd", QUAY_QUEUE_CONTENT_DEDUP);
	q = mkq(&o);
	assert_int_equal(send_d(q, NULL, "acked body"), 0);
	take_ack(q, "acked body");
	assert_int_equal(send_d(q, NULL, "live body"), 0);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(send_d(q, NULL, "acked body"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, NULL, "live body"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, NULL, "new body"), 0);
	assert_int_equal(st(q).deduplicated, 2);
	qt_set_time(QT_T0 + WIN);
	assert_int_equal(send_d(q, NULL, "acked body"), 0);
	quay_queue_destroy(q);

	/* Forced collisions: only a live message is remembered. */
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir);
	wal_open();
	qt_set_time(QT_T0);
	quayi_cdedup_test_key = same_key;
	o = dedup_opts("cd2", QUAY_QUEUE_CONTENT_DEDUP);
	q = mkq(&o);
	assert_int_equal(send_d(q, NULL, "one"), 0);
	restart(&q, NULL);
	o.wal = wal;
	q = mkq(&o);
	assert_int_equal(send_d(q, NULL, "two"), 0); /* same key, bodies differ */
	assert_int_equal(send_d(q, NULL, "one"), QUAY_QUEUE_DUPLICATE);
	quayi_cdedup_test_key = NULL;
	quay_queue_destroy(q);
}

/* Hand-made ADD image of a send to queue `name` (the layout of
 * src/queue_durable_format.h), with a dedup id header if id != NULL. */
static size_t
old_add(unsigned char *p, const char *name, const char *id, const char *body, int64_t enq)
{
	size_t off = QUAYI_DQ_ADD_HDR, bl = strlen(body);
	uint64_t qid = quayi_dqf_qid(name, strlen(name));

	memset(p, 0, QUAYI_DQ_ADD_HDR);
	for (int i = 0; i < 8; i++) {
		p[QUAYI_DQF_QID + i] = (unsigned char)(qid >> (8 * i));
		p[QUAYI_DQF_ADD_ENQUEUED + i] = (unsigned char)((uint64_t)enq >> (8 * i));
		p[QUAYI_DQF_ADD_CREATED + i] = (unsigned char)((uint64_t)enq >> (8 * i));
	}
	p[QUAYI_DQF_ADD_BODY_LEN] = (unsigned char)bl;
	if (id != NULL) {
		size_t kl = strlen(QUAY_MSG_H_DEDUP_ID), vl = strlen(id);

		p[QUAYI_DQF_ADD_NHEADERS] = 1;
		p[off] = (unsigned char)kl;
		p[off + 1] = (unsigned char)vl;
		p[off + 2] = p[off + 3] = p[off + 4] = 0;
		memcpy(p + off + 5, QUAY_MSG_H_DEDUP_ID, kl);
		memcpy(p + off + 5 + kl, id, vl);
		off += 5 + kl + vl;
	}
	memcpy(p + off, body, bl);
	return off + bl;
}

/* A log written before DEDUP records existed: its window is what its
 * send ADDs still in the log say (none here for an ADD without an id);
 * its messages come back as before. */
static void
old_log_recovers(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	unsigned char img[256];
	size_t n;

	(void)state;
	n = old_add(img, "old", "old-id", "with id", QT_T0 - 1000 * MS);
	assert_int_equal(quay_wal_append(wal, QUAYI_DQ_ADD, img, n, NULL), 0);
	n = old_add(img, "old", NULL, "no id", QT_T0 - 1000 * MS);
	assert_int_equal(quay_wal_append(wal, QUAYI_DQ_ADD, img, n, NULL), 0);
	o = dedup_opts("old", 0);
	q = mkq(&o);
	assert_int_equal(st(q).restored, 2);
	assert_int_equal(send_d(q, "old-id", "again"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_d(q, "other", "no id"), 0);
	take_ack(q, "with id");
	take_ack(q, "no id");
	take_ack(q, "no id");
	/* The window counts from the logged enqueued time. */
	qt_set_time(QT_T0 - 1000 * MS + WIN);
	assert_int_equal(send_d(q, "old-id", "again"), 0);
	quay_queue_destroy(q);
}

/* A DEDUP record of any other length, an unknown kind or non-zero
 * padding is -EBADMSG (strict, as the other record types); one of
 * another queue is skipped. */
static void
dedup_record_corruption_is_ebadmsg(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q = NULL;
	unsigned char rec[QUAYI_DQ_DEDUP_LEN + 8];
	uint64_t qid = quayi_dqf_qid("bad", 3);
	int cases = 0;

	(void)state;
	o = dedup_opts("bad", 0);
	for (int c = 0; c < (int)QUAYI_DQ_DEDUP_LEN + 8 + 4; c++) {
		size_t len = QUAYI_DQ_DEDUP_LEN;

		memset(rec, 0, sizeof(rec));
		for (int i = 0; i < 8; i++)
			rec[QUAYI_DQF_QID + i] = (unsigned char)(qid >> (8 * i));
		rec[QUAYI_DQF_DEDUP_KIND] = QUAYI_DQF_DK_ID;
		if (c < (int)QUAYI_DQ_DEDUP_LEN + 8) /* every other length */
			len = c < (int)QUAYI_DQ_DEDUP_LEN ? (size_t)c : (size_t)c + 1;
		else if (c == QUAYI_DQ_DEDUP_LEN + 8)
			rec[QUAYI_DQF_DEDUP_KIND] = 0;
		else if (c == QUAYI_DQ_DEDUP_LEN + 9)
			rec[QUAYI_DQF_DEDUP_KIND] = 3;
		else
			rec[QUAYI_DQF_DEDUP_KIND + 1 + (c - QUAYI_DQ_DEDUP_LEN - 10) * 3] = 1;
		if (len > sizeof(rec))
			continue;
		assert_int_equal(quay_wal_close(wal), 0);
		qt_rm_dir(dir);
		wal_open();
		o.wal = wal;
		assert_int_equal(quay_wal_append(wal, QUAYI_DQ_DEDUP, rec, len, NULL), 0);
		q = NULL;
		assert_int_equal(quay_queue_create(&o, &q), -EBADMSG);
		assert_null(q);
		cases++;
	}
	assert_true(cases >= (int)QUAYI_DQ_DEDUP_LEN + 8);
	/* The good record: accepted; another queue's: skipped. */
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir);
	wal_open();
	o.wal = wal;
	memset(rec, 0, sizeof(rec));
	rec[QUAYI_DQF_DEDUP_KIND] = QUAYI_DQF_DK_CONTENT;
	assert_int_equal(quay_wal_append(wal, QUAYI_DQ_DEDUP, rec, QUAYI_DQ_DEDUP_LEN, NULL), 0);
	q = mkq(&o);
	quay_queue_destroy(q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(send_ack_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(dedup_id_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(dedup_window_survives_compaction, setup, teardown),
		cmocka_unit_test_setup_teardown(content_dedup_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(dedup_key_of_refused_send_not_logged, setup, teardown),
		cmocka_unit_test_setup_teardown(old_log_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(dedup_record_corruption_is_ebadmsg, setup, teardown),
		cmocka_unit_test_setup_teardown(send_batch_one_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(poison_reaches_dlq_after_max_attempts_crashes, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(no_delivery_log_keeps_old_behaviour, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_receive_logs_once, setup, teardown),
		cmocka_unit_test_setup_teardown(nack_delay_and_expiry_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(dead_letter_and_redrive_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(ttl_after_restart_dead_letters, setup, teardown),
		cmocka_unit_test_setup_teardown(compaction_keeps_disk_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(queue_name_logged_once_and_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(compaction_deferred_for_closed_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(wal_failure_fails_send_and_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_record_is_ebadmsg, setup, teardown),
		cmocka_unit_test_setup_teardown(capacity_below_live_set_is_enospc, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(dlq_with_fewer_levels_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(same_message_twice_in_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_send_to_two_durable_queues, setup, teardown),
		cmocka_unit_test_setup_teardown(shared_send_copy_needs_pool_room, setup, teardown),
		cmocka_unit_test_setup_teardown(release_attempts_across_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(refused_dead_letter_leaves_message_unchanged, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(dead_letter_too_big_for_headers_moves_without, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(send_batch_at_wal_batch_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(compaction_with_batch_at_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(compaction_that_cannot_succeed_backs_off, setup, teardown),
		cmocka_unit_test_setup_teardown(power_loss_under_durable_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(sync_and_space_errors_under_durable_queue, setup, teardown),
	};
	return cmocka_run_group_tests_name("queue-durable", tests, NULL, NULL);
}
