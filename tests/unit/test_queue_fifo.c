/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of FIFO queues (QUAY_QUEUE_FIFO, src/queue_fifo.c) and
 * content dedup (QUAY_QUEUE_CONTENT_DEDUP, src/queue_cdedup.c), on the
 * fake clock: every group rule at its boundary (order, one in flight,
 * the failed head through its backoff and lease expiry, batch, release,
 * delay, TTL of a head, dead letter, redrive into a FIFO queue,
 * priorities), stats and browse, group id limits; content dedup with its
 * window, groups, and forced hash collisions; durable FIFO across a
 * restart (group order and the head's attempts and backoff).
 */
#include "quay_test.h"
#include <stddef.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#define MS ((int64_t)1000000)

/* The content-dedup key hook (src/queue_x.h), via the static library. */
extern void (*quayi_cdedup_test_key)(const quay_msg *msg, uint64_t *h1, uint64_t *h2);

static quay_pool *pool;

static int
setup(void **state)
{
	(void)state;
	return quay_pool_create((size_t)8 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(pool);
}

static struct quay_queue_opts
fifo_opts(void)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	qt_set_time(QT_T0);
	o.clock = qt_fake_clock;
	o.capacity = 64;
	o.visibility_ns = 1000 * MS;
	o.flags = QUAY_QUEUE_NO_JITTER | QUAY_QUEUE_FIFO;
	return o;
}

static quay_queue *
mkq(struct quay_queue_opts *o)
{
	quay_queue *q = NULL;

	assert_int_equal(quay_queue_create(o, &q), 0);
	return q;
}

/* A message of group g (NULL: none) with value v. */
static quay_msg *
gmsg(const char *g, uint64_t v)
{
	quay_msg *m = NULL;

	assert_int_equal(quay_msg_new(pool, &v, sizeof(v), &m), 0);
	if (g != NULL)
		assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_GROUP, g, strlen(g)), 0);
	return m;
}

static void
gsend(quay_queue *q, const char *g, uint64_t v)
{
	assert_int_equal(quay_queue_send(q, gmsg(g, v)), 0);
}

static uint64_t
val(const quay_msg *m)
{
	uint64_t v;

	memcpy(&v, quay_msg_body(m), sizeof(v));
	return v;
}

/* Receive without waiting: the value, or UINT64_MAX if none. */
static uint64_t
recv_v(quay_queue *q, quay_lease *l)
{
	int rc = quay_queue_receive(q, l, 0);

	if (rc != 0) {
		assert_int_equal(rc, -EAGAIN);
		return UINT64_MAX;
	}
	return val(l->msg);
}

static void
ack_v(quay_queue *q, quay_lease *l)
{
	assert_int_equal(quay_queue_ack(q, l), 0);
	quay_msg_unref(l->msg);
}

static void
check_conservation(quay_queue *q)
{
	struct quay_queue_stats s;

	assert_int_equal(quay_queue_stats(q, &s), 0);
	assert_int_equal(s.sent + s.restored,
	    s.ready + s.delayed + s.in_flight + s.acked + s.dead_lettered + s.dropped + s.redriven_out);
}

/* Order within a group, one in flight per group, groups in parallel. */
static void
group_order_and_one_in_flight(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease a, b, c;
	struct quay_queue_stats s;

	(void)state;
	q = mkq(&o);
	gsend(q, "A", 1);
	gsend(q, "A", 2);
	gsend(q, "B", 10);
	gsend(q, "A", 3);
	gsend(q, "B", 11);
	gsend(q, NULL, 100); /* the default group */
	gsend(q, NULL, 101);
	assert_int_equal(quay_queue_stats(q, &s), 0);
	assert_int_equal(s.ready, 7); /* parked ones count as ready */
	assert_int_equal(recv_v(q, &a), 1);
	assert_int_equal(recv_v(q, &b), 10);
	assert_int_equal(recv_v(q, &c), 100);
	assert_int_equal(recv_v(q, &c + 0), UINT64_MAX); /* every group busy */
	ack_v(q, &b);
	assert_int_equal(recv_v(q, &b), 11);
	ack_v(q, &b);
	assert_int_equal(recv_v(q, &b), UINT64_MAX); /* B done, A and default busy */
	ack_v(q, &a);
	assert_int_equal(recv_v(q, &a), 2);
	ack_v(q, &a);
	assert_int_equal(recv_v(q, &a), 3);
	ack_v(q, &a);
	ack_v(q, &c);
	assert_int_equal(recv_v(q, &c), 101);
	ack_v(q, &c);
	assert_int_equal(recv_v(q, &c), UINT64_MAX);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* A nacked head stays the head through its backoff (100 ms): at 100 ms -
 * 1 ns nothing of the group is received, at 100 ms the head again. */
static void
failed_head_blocks_through_backoff(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l;

	(void)state;
	q = mkq(&o);
	gsend(q, "A", 1);
	gsend(q, "A", 2);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_nack(q, &l, "x"), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 100 * MS - 1);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 100 * MS);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 2);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 2);
	assert_int_equal(l.attempt, 1);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* A head whose lease expires stays the head: at the deadline - 1 nothing
 * else of the group; expiry + backoff, the head again. */
static void
expired_head_stays_head(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l, old;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	gsend(q, "A", 1);
	gsend(q, "A", 2);
	assert_int_equal(recv_v(q, &old), 1);
	qt_set_time(QT_T0 + 1000 * MS - 1);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 1000 * MS);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 2);
	assert_int_equal(quay_queue_ack(q, &old), -ESTALE);
	quay_msg_unref(old.msg);
	/* Extend keeps it: 2 is still not received. */
	assert_int_equal(quay_queue_extend(q, &l, 5000 * MS), 0);
	qt_set_time(QT_T0 + 3000 * MS);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &old), UINT64_MAX);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 2);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* A batch holds at most one message of a group (its head). */
static void
batch_one_per_group(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l[8];
	size_t n;

	(void)state;
	q = mkq(&o);
	for (uint64_t i = 0; i < 3; i++)
		gsend(q, "A", i);
	gsend(q, "B", 10);
	n = quay_queue_receive_batch(q, l, 8, 0);
	assert_int_equal(n, 2);
	assert_int_equal(val(l[0].msg), 0);
	assert_int_equal(val(l[1].msg), 10);
	for (size_t i = 0; i < n; i++)
		ack_v(q, &l[i]);
	n = quay_queue_receive_batch(q, l, 8, 0);
	assert_int_equal(n, 1);
	assert_int_equal(val(l[0].msg), 1);
	ack_v(q, &l[0]);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* Release hands the head back: it is received again (same attempt)
 * before the group's next message. */
static void
release_keeps_head(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l;

	(void)state;
	q = mkq(&o);
	gsend(q, "A", 1);
	gsend(q, "A", 2);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_release(q, &l), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 1);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 2);
	ack_v(q, &l);
	quay_queue_destroy(q);
}

/* A delayed head delays its group (messages behind it wait), not other
 * groups; a delayed message behind a head waits for its own time too. */
static void
delay_blocks_the_group(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l;
	quay_msg *m;

	(void)state;
	q = mkq(&o);
	m = gmsg("A", 1);
	quay_msg_set_not_before_ns(m, QT_T0 + 50 * MS);
	assert_int_equal(quay_queue_send(q, m), 0);
	gsend(q, "A", 2);
	m = gmsg("A", 3);
	quay_msg_set_not_before_ns(m, QT_T0 + 80 * MS);
	assert_int_equal(quay_queue_send(q, m), 0);
	gsend(q, "B", 10);
	assert_int_equal(recv_v(q, &l), 10);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 50 * MS);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &l), 1);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 2);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), UINT64_MAX); /* 3 is the head, delayed */
	qt_set_time(QT_T0 + 80 * MS);
	quay_queue_tick(q);
	assert_int_equal(recv_v(q, &l), 3);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* A head past its TTL is dead-lettered at receive and the group moves
 * on in the same receive; at TTL - 1 it is still delivered. */
static void
ttl_of_group_head(void **state)
{
	struct quay_queue_opts od = fifo_opts(), o = fifo_opts();
	quay_queue *dlq, *q;
	quay_lease l;
	quay_msg *m;
	struct quay_queue_stats s;

	(void)state;
	od.flags = QUAY_QUEUE_NO_JITTER; /* a FIFO queue's DLQ need not be FIFO */
	dlq = mkq(&od);
	o.dlq = dlq;
	q = mkq(&o);
	m = gmsg("A", 1);
	quay_msg_set_expires_ns(m, QT_T0 + 10 * MS);
	assert_int_equal(quay_queue_send(q, m), 0);
	gsend(q, "A", 2);
	m = gmsg("A", 3);
	quay_msg_set_expires_ns(m, QT_T0 + 20 * MS);
	assert_int_equal(quay_queue_send(q, m), 0);
	qt_set_time(QT_T0 + 10 * MS);
	assert_int_equal(recv_v(q, &l), 2); /* 1 expired on the way */
	assert_int_equal(quay_queue_stats(dlq, &s), 0);
	assert_int_equal(s.ready, 1);
	qt_set_time(QT_T0 + 20 * MS - 1);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 3); /* TTL - 1: delivered */
	ack_v(q, &l);
	check_conservation(q);
	check_conservation(dlq);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* After max_attempts the head goes to the DLQ and the group moves on;
 * redriving it into the FIFO queue puts it at its group's tail. */
static void
dead_letter_and_redrive_into_fifo(void **state)
{
	struct quay_queue_opts od = fifo_opts(), o = fifo_opts();
	quay_queue *dlq, *q;
	quay_lease l;
	size_t moved = 0;

	(void)state;
	od.flags = QUAY_QUEUE_NO_JITTER;
	dlq = mkq(&od);
	o.dlq = dlq;
	o.max_attempts = 2;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	gsend(q, "A", 1);
	gsend(q, "A", 2);
	gsend(q, "A", 3);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(recv_v(q, &l), 1);
		assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(recv_v(q, &l), 2); /* 1 went to the DLQ */
	/* Redrive 1 back while 2 is in flight: it goes behind 3. */
	assert_int_equal(quay_queue_redrive(dlq, q, 10, &moved), 0);
	assert_int_equal(moved, 1);
	{
		quay_lease x;

		assert_int_equal(recv_v(q, &x), UINT64_MAX);
	}
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 3);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 1);
	ack_v(q, &l);
	check_conservation(q);
	check_conservation(dlq);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* Priorities: the head's own priority orders it among groups; within a
 * group send order wins (a later, higher-priority message waits). */
static void
priorities_between_groups_only(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l;
	quay_msg *m;

	(void)state;
	o.levels = 2;
	q = mkq(&o);
	m = gmsg("A", 1);
	quay_msg_set_priority(m, 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	m = gmsg("A", 2);
	quay_msg_set_priority(m, 1);
	assert_int_equal(quay_queue_send(q, m), 0);
	m = gmsg("B", 10);
	quay_msg_set_priority(m, 1);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(recv_v(q, &l), 10); /* level 1 (highest) first, among heads */
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 1); /* A's head, though 2 is level 1 */
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 2);
	ack_v(q, &l);
	quay_queue_destroy(q);
}

static int
count_visit(void *ctx, const quay_msg *m, quay_queue_state st)
{
	(void)m;
	((int *)ctx)[st]++;
	return 0;
}

/* Browse sees the parked messages (as ready); destroy with parked
 * messages leaks nothing (the pool check in teardown). Group ids: 128
 * bytes fine, 129 -EINVAL (send and batch), the message kept. */
static void
browse_and_group_limits(void **state)
{
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l;
	int seen[4] = { 0 };
	char g[QUAY_QUEUE_GROUP_MAX + 2];
	quay_msg *m;
	int res = 0;

	(void)state;
	q = mkq(&o);
	gsend(q, "A", 1);
	gsend(q, "A", 2);
	gsend(q, "A", 3);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_browse(q, count_visit, seen), 0);
	assert_int_equal(seen[QUAY_QUEUE_READY], 2);
	assert_int_equal(seen[QUAY_QUEUE_IN_FLIGHT], 1);
	memset(g, 'g', sizeof(g));
	g[QUAY_QUEUE_GROUP_MAX] = '\0';
	gsend(q, g, 4);
	g[QUAY_QUEUE_GROUP_MAX] = 'g';
	g[QUAY_QUEUE_GROUP_MAX + 1] = '\0';
	m = gmsg(g, 5);
	assert_int_equal(quay_queue_send(q, m), -EINVAL);
	assert_int_equal(quay_queue_send_batch(q, &m, 1, &res), 0);
	assert_int_equal(res, -EINVAL);
	quay_msg_unref(m);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q); /* 2 parked, 1 ready, 1 head */
}

/* ---- content dedup ---------------------------------------------------- */

static struct quay_queue_opts
cd_opts(void)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	qt_set_time(QT_T0);
	o.clock = qt_fake_clock;
	o.capacity = 64;
	o.flags = QUAY_QUEUE_CONTENT_DEDUP;
	o.dedup_window_ns = 100 * MS;
	return o;
}

static int
csend(quay_queue *q, const char *g, const char *body)
{
	quay_msg *m = NULL;

	assert_int_equal(quay_msg_new(pool, body, strlen(body), &m), 0);
	if (g != NULL)
		assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_GROUP, g, strlen(g)), 0);
	return quay_queue_send(q, m);
}

/* Same body (and group) within the window: a duplicate; at window - 1 ns
 * still, at the window no more. Another body, or another group: new. A
 * dedup id header takes the id path instead. */
static void
content_dedup_window(void **state)
{
	struct quay_queue_opts o = cd_opts();
	quay_queue *q;
	struct quay_queue_stats s;
	quay_msg *m = NULL;

	(void)state;
	q = mkq(&o);
	assert_int_equal(csend(q, NULL, "hello"), 0);
	assert_int_equal(csend(q, NULL, "hello"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(csend(q, NULL, "hellO"), 0);
	assert_int_equal(csend(q, "g1", "hello"), 0);
	assert_int_equal(csend(q, "g1", "hello"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(csend(q, "g2", "hello"), 0);
	assert_int_equal(csend(q, NULL, ""), 0);
	assert_int_equal(csend(q, NULL, ""), QUAY_QUEUE_DUPLICATE);
	qt_set_time(QT_T0 + 100 * MS - 1);
	assert_int_equal(csend(q, NULL, "hello"), QUAY_QUEUE_DUPLICATE);
	qt_set_time(QT_T0 + 100 * MS);
	assert_int_equal(csend(q, NULL, "hello"), 0);
	/* A message with a dedup id is judged by its id, not its body. */
	assert_int_equal(quay_msg_new(pool, "hello", 5, &m), 0);
	assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "id1", 3), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_queue_stats(q, &s), 0);
	assert_int_equal(s.deduplicated, 4);
	assert_int_equal(s.sent, 7);
	check_conservation(q);
	quay_queue_destroy(q);
}

static void
one_key(const quay_msg *msg, uint64_t *h1, uint64_t *h2)
{
	(void)msg;
	*h1 = 42;
	*h2 = 42;
}

/* Every message given the same key (forced collisions): only equal
 * bodies in equal groups are duplicates. */
static void
content_dedup_collisions_confirmed(void **state)
{
	struct quay_queue_opts o = cd_opts();
	quay_queue *q;

	(void)state;
	q = mkq(&o);
	quayi_cdedup_test_key = one_key;
	assert_int_equal(csend(q, NULL, "a"), 0);
	assert_int_equal(csend(q, NULL, "b"), 0);
	assert_int_equal(csend(q, NULL, "ab"), 0);
	assert_int_equal(csend(q, "x", "a"), 0);
	assert_int_equal(csend(q, "y", "a"), 0);
	assert_int_equal(csend(q, NULL, "a"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(csend(q, "x", "a"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(csend(q, NULL, "ab"), QUAY_QUEUE_DUPLICATE);
	quayi_cdedup_test_key = NULL;
	check_conservation(q);
	quay_queue_destroy(q);
}

/* Content dedup without a window cannot work: -EINVAL; unknown flags
 * too. A FIFO queue with content dedup: both rules. */
static void
content_dedup_bad_input(void **state)
{
	struct quay_queue_opts o = cd_opts();
	quay_queue *q = (quay_queue *)0x1;
	quay_lease l;

	(void)state;
	o.dedup_window_ns = 0;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	o = cd_opts();
	o.flags |= 0x100u;
	assert_int_equal(quay_queue_create(&o, &q), -EINVAL);
	assert_ptr_equal(q, (quay_queue *)0x1);
	o = cd_opts();
	o.flags |= QUAY_QUEUE_FIFO;
	q = mkq(&o);
	assert_int_equal(csend(q, "A", "1"), 0);
	assert_int_equal(csend(q, "A", "2"), 0);
	assert_int_equal(csend(q, "A", "1"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_receive(q, &l + 0, 0) == -EAGAIN ? 0 : 1, 0);
	quay_queue_destroy(q);
	quay_msg_unref(l.msg);
}

/* ---- durable FIFO: a restart keeps group order and the head's state --- */

static void
durable_fifo_restart(void **state)
{
	char dir[] = "/tmp/quay-fifo-XXXXXX";
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	quay_wal *wal;
	struct quay_queue_opts o = fifo_opts();
	quay_queue *q;
	quay_lease l;

	(void)state;
	assert_non_null(mkdtemp(dir));
	wo.sync_mode = QUAY_WAL_NONE;
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	o.name = "fifo";
	o.wal = wal;
	o.pool = pool;
	q = mkq(&o);
	for (uint64_t i = 0; i < 5; i++) {
		gsend(q, "A", i);
		gsend(q, "B", 100 + i);
	}
	assert_int_equal(recv_v(q, &l), 0);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0); /* A0: attempt 1, backoff 100 ms */
	quay_msg_unref(l.msg);
	assert_int_equal(recv_v(q, &l), 100);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 101); /* in flight at the "crash" */
	quay_msg_unref(l.msg);
	quay_queue_destroy(q);
	assert_int_equal(quay_wal_close(wal), 0);
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	o.wal = wal;
	q = mkq(&o);
	/* A's head (0) is still in its backoff: nothing of A; B resumes at 101. */
	assert_int_equal(recv_v(q, &l), 101);
	ack_v(q, &l);
	for (uint64_t i = 2; i < 5; i++) {
		assert_int_equal(recv_v(q, &l), 100 + i);
		ack_v(q, &l);
	}
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 100 * MS);
	quay_queue_tick(q);
	for (uint64_t i = 0; i < 5; i++) {
		assert_int_equal(recv_v(q, &l), i);
		assert_int_equal(l.attempt, i == 0 ? 2u : 1u);
		ack_v(q, &l);
	}
	check_conservation(q);
	quay_queue_destroy(q);
	assert_int_equal(quay_wal_close(wal), 0);
	qt_rm_dir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(group_order_and_one_in_flight),
		cmocka_unit_test(failed_head_blocks_through_backoff),
		cmocka_unit_test(expired_head_stays_head),
		cmocka_unit_test(batch_one_per_group),
		cmocka_unit_test(release_keeps_head),
		cmocka_unit_test(delay_blocks_the_group),
		cmocka_unit_test(ttl_of_group_head),
		cmocka_unit_test(dead_letter_and_redrive_into_fifo),
		cmocka_unit_test(priorities_between_groups_only),
		cmocka_unit_test(browse_and_group_limits),
		cmocka_unit_test(content_dedup_window),
		cmocka_unit_test(content_dedup_collisions_confirmed),
		cmocka_unit_test(content_dedup_bad_input),
		cmocka_unit_test(durable_fifo_restart),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
