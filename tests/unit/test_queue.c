/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the queue (quay/queue.h). Every timing rule runs on a fake
 * clock (TESTING.md S1/S2): the tests set the time, call the queue, and
 * check what is ready, exactly at the boundaries. Bad inputs are
 * table-driven (TESTING.md 5.4).
 */
#include "quay_test.h"
#include <pthread.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

/* The recovery entry point (src/queue_internal.h), reached through the
 * static library. */
int quayi_queue_restore(quay_queue *q, quay_msg *msg, uint32_t attempts, int64_t not_before_ns);

#define MS ((int64_t)1000000)

static quay_pool *pool;

static int
setup(void **state)
{
	(void)state;
	qt_set_time(QT_T0);
	return quay_pool_create((size_t)8 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(pool);
}

static struct quay_queue_opts
fake_opts(void)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	o.clock = qt_fake_clock;
	o.capacity = 64;
	o.visibility_ns = 1000 * MS;
	o.flags = QUAY_QUEUE_NO_JITTER;
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

	assert_int_equal(quay_msg_new(pool, &v, sizeof(v), &m), 0);
	return m;
}

static uint64_t
val(const quay_msg *m)
{
	uint64_t v;

	memcpy(&v, quay_msg_body(m), sizeof(v));
	return v;
}

static void
send_v(quay_queue *q, uint64_t v)
{
	assert_int_equal(quay_queue_send(q, mkmsg(v)), 0);
}

/* Receive without waiting; returns the value, or UINT64_MAX if none. */
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
done(quay_lease *l)
{
	quay_msg_unref(l->msg);
}

static void
ack_v(quay_queue *q, quay_lease *l)
{
	assert_int_equal(quay_queue_ack(q, l), 0);
	done(l);
}

static void
check_conservation(quay_queue *q)
{
	struct quay_queue_stats s;

	assert_int_equal(quay_queue_stats(q, &s), 0);
	assert_int_equal(s.sent + s.restored,
	    s.ready + s.delayed + s.in_flight + s.acked + s.dead_lettered + s.dropped + s.redriven_out);
}

static struct quay_queue_stats
stats(quay_queue *q)
{
	struct quay_queue_stats s;

	assert_int_equal(quay_queue_stats(q, &s), 0);
	return s;
}

/* ---- creation ---------------------------------------------------- */

static void
create_rejects_bad_options(void **state)
{
	static const uint32_t w[2] = { 1, 2 };
	quay_queue *self_ref = NULL;
	struct {
		const char *what;
		struct quay_queue_opts o;
	} cases[32];
	size_t n = 0;
	quay_queue *q = (quay_queue *)&self_ref;

	(void)state;
#define CASE(desc, field, value) \
	do { \
		cases[n].what = desc; \
		cases[n].o = fake_opts(); \
		cases[n].o.field = value; \
		n++; \
	} while (0)
	CASE("size", size, 3);
	CASE("flags", flags, 0x100u);
	CASE("empty name", name, "");
	CASE("bad name char", name, "a b");
	CASE("long name", name,
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	CASE("capacity", capacity, QUAY_QUEUE_CAPACITY_MAX + 1);
	CASE("in flight > capacity", max_in_flight, 65);
	CASE("levels", levels, 257);
	CASE("attempts 1001", max_attempts, 1001);
	CASE("visibility", visibility_ns, -1);
	CASE("delay", delay_ns, -1);
	CASE("ttl", ttl_ns, -1);
	CASE("base", backoff_base_ns, -1);
	CASE("max", backoff_max_ns, -1);
	CASE("max < base", backoff_max_ns, 1);
	CASE("factor < 1", backoff_factor, 0.5);
	CASE("factor > 1000", backoff_factor, 1001.0);
	CASE("dedup window", dedup_window_ns, -5);
	CASE("tick too small", tick_ns, 999);
	CASE("tick too large", tick_ns, 1000000001);
	CASE("weights without flag", weights, w);
	CASE("dedup capacity", dedup_capacity, QUAY_QUEUE_CAPACITY_MAX + 1);
#undef CASE
	for (size_t i = 0; i < n; i++) {
		int rc = quay_queue_create(&cases[i].o, &q);

		if (rc != -EINVAL)
			fail_msg("case '%s': got %d", cases[i].what, rc);
		assert_ptr_equal(q, (quay_queue *)&self_ref); /* untouched */
	}
	{
		struct quay_queue_opts o = fake_opts();

		assert_int_equal(quay_queue_create(NULL, &q), -EINVAL);
		assert_int_equal(quay_queue_create(&o, NULL), -EINVAL);
	}
}

static void
create_defaults_and_limits(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;

	(void)state;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	quay_queue_destroy(q);
	o.max_attempts = 1000;
	o.name = "limits.q-1:x";
	o.capacity = 1;
	o.levels = 256;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	quay_queue_destroy(q);
	quay_queue_destroy(NULL);
}

static void
create_same_name_in_registry_fails(void **state)
{
	quay_stats *reg = NULL;
	struct quay_queue_opts o = fake_opts();
	quay_queue *a = NULL, *b = NULL;
	quay_stats_snap *snap = NULL;
	bool found = false;

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &reg), 0);
	o.stats = reg;
	o.name = "orders";
	assert_int_equal(quay_queue_create(&o, &a), 0);
	assert_int_equal(quay_queue_create(&o, &b), -EINVAL);
	assert_null(b);
	send_v(a, 1);
	assert_int_equal(quay_stats_snapshot(reg, &snap), 0);
	for (size_t i = 0; i < quay_stats_snap_count(snap); i++) {
		const struct quay_stats_metric *m;

		assert_int_equal(quay_stats_snap_metric(snap, i, &m), 0);
		if (strcmp(m->name, "quay_queue_sent_total") == 0) {
			assert_int_equal(m->nlabels, 1);
			assert_string_equal(m->labels[0].value, "orders");
			assert_int_equal(m->counter, 1);
			found = true;
		}
	}
	assert_true(found);
	quay_stats_snap_free(snap);
	quay_queue_destroy(a);
	quay_stats_destroy(reg);
}

/* ---- bad input on every call ---------------------------------------- */

static void
calls_reject_bad_input(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *q2;
	quay_lease l;
	quay_msg *m = mkmsg(1), *arr[2] = { m, NULL };
	int res[2];
	size_t moved = 7;

	(void)state;
	o.levels = 2;
	q = mkq(&o);
	o.name = "other";
	q2 = mkq(&o);
	assert_int_equal(quay_queue_send(NULL, m), -EINVAL);
	assert_int_equal(quay_queue_send(q, NULL), -EINVAL);
	assert_int_equal(quay_msg_set_priority(m, 2), 0);
	assert_int_equal(quay_queue_send(q, m), -EINVAL); /* priority >= levels */
	assert_int_equal(quay_msg_set_priority(m, 0), 0);
	assert_int_equal(quay_queue_send_batch(NULL, arr, 1, res), -EINVAL);
	assert_int_equal(quay_queue_send_batch(q, NULL, 1, res), -EINVAL);
	assert_int_equal(quay_queue_send_batch(q, arr, 0, res), -EINVAL);
	assert_int_equal(quay_queue_send_batch(q, arr, 2, res), -EINVAL); /* arr[1] NULL: nothing sent */
	assert_int_equal(stats(q).sent, 0);
	assert_int_equal(quay_queue_receive(NULL, &l, 0), -EINVAL);
	assert_int_equal(quay_queue_receive(q, NULL, 0), -EINVAL);
	assert_int_equal(quay_queue_receive_batch(NULL, &l, 1, 0), 0);
	assert_int_equal(quay_queue_receive_batch(q, NULL, 1, 0), 0);
	assert_int_equal(quay_queue_receive_batch(q, &l, 0, 0), 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(quay_queue_ack(NULL, &l), -EINVAL);
	assert_int_equal(quay_queue_ack(q, NULL), -EINVAL);
	assert_int_equal(quay_queue_nack(NULL, &l, NULL), -EINVAL);
	assert_int_equal(quay_queue_nack(q, NULL, NULL), -EINVAL);
	assert_int_equal(quay_queue_extend(NULL, &l, 1), -EINVAL);
	assert_int_equal(quay_queue_extend(q, NULL, 1), -EINVAL);
	assert_int_equal(quay_queue_extend(q, &l, 0), -EINVAL);
	assert_int_equal(quay_queue_extend(q, &l, -1), -EINVAL);
	assert_int_equal(quay_queue_redrive(NULL, q, 1, &moved), -EINVAL);
	assert_int_equal(quay_queue_redrive(q, NULL, 1, &moved), -EINVAL);
	assert_int_equal(quay_queue_redrive(q, q, 1, &moved), -EINVAL);
	assert_int_equal(quay_queue_redrive(q, q2, 0, &moved), -EINVAL);
	assert_int_equal(moved, 7);
	assert_int_equal(quay_queue_browse(NULL, NULL, NULL), -EINVAL);
	assert_int_equal(quay_queue_browse(q, NULL, NULL), -EINVAL);
	assert_int_equal(quay_queue_tick(NULL), -EINVAL);
	assert_int_equal(quay_queue_stats(NULL, NULL), -EINVAL);
	assert_int_equal(quay_queue_stats(q, NULL), -EINVAL);
	/* Unknown leases: never issued (gen 0, slot out of range, gen ahead). */
	l.gen = 0;
	assert_int_equal(quay_queue_ack(q, &l), -ENOENT);
	l.gen = 1;
	l.slot = 1000;
	assert_int_equal(quay_queue_ack(q, &l), -ENOENT);
	assert_int_equal(quay_queue_nack(q, &l, "x"), -ENOENT);
	assert_int_equal(quay_queue_extend(q, &l, 5), -ENOENT);
	l.slot = 0;
	l.gen = 99;
	assert_int_equal(quay_queue_ack(q, &l), -ENOENT);
	assert_int_equal(stats(q).sent, 0);
	quay_msg_unref(m);
	quay_queue_destroy(q2);
	quay_queue_destroy(q);
}

/* ---- basics --------------------------------------------------------- */

static void
send_receive_ack(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l, forged;
	struct quay_queue_stats s;

	(void)state;
	q = mkq(&o);
	send_v(q, 42);
	s = stats(q);
	assert_int_equal(s.sent, 1);
	assert_int_equal(s.ready, 1);
	assert_int_equal(recv_v(q, &l), 42);
	assert_int_equal(l.attempt, 1);
	assert_int_equal(quay_msg_attempts(l.msg), 1);
	assert_int_equal(l.deadline_ns, QT_T0 + 1000 * MS);
	assert_int_equal(quay_msg_enqueued_ns(l.msg), QT_T0);
	s = stats(q);
	assert_int_equal(s.ready, 0);
	assert_int_equal(s.in_flight, 1);
	assert_int_equal(s.received, 1);
	check_conservation(q);
	/* Another message pointer with the right slot and gen: unknown. */
	forged = l;
	forged.msg = mkmsg(43);
	assert_int_equal(quay_queue_ack(q, &forged), -ENOENT);
	quay_msg_unref(forged.msg);
	forged = l;
	forged.gen++;
	assert_int_equal(quay_queue_ack(q, &forged), -ENOENT);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	assert_int_equal(quay_queue_ack(q, &l), -ESTALE); /* twice */
	assert_int_equal(quay_queue_nack(q, &l, NULL), -ESTALE);
	assert_int_equal(quay_queue_extend(q, &l, MS), -ESTALE);
	assert_int_equal(val(l.msg), 42); /* still the caller's */
	done(&l);
	s = stats(q);
	assert_int_equal(s.acked, 1);
	assert_int_equal(s.in_flight, 0);
	check_conservation(q);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	quay_queue_destroy(q);
}

static void
receive_empty_and_timeout(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;

	(void)state;
	q = mkq(&o);
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
	assert_int_equal(quay_queue_receive(q, &l, 2 * MS), -ETIMEDOUT);
	assert_int_equal(quay_queue_receive_batch(q, &l, 1, 1 * MS), 0);
	quay_queue_destroy(q);
}

static void
priority_then_fifo(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	static const unsigned prio[] = { 0, 3, 1, 3, 0, 1 };
	static const uint64_t want[] = { 1, 3, 2, 5, 0, 4 };

	(void)state;
	o.levels = 4;
	q = mkq(&o);
	for (uint64_t i = 0; i < 6; i++) {
		quay_msg *m = mkmsg(i);

		assert_int_equal(quay_msg_set_priority(m, prio[i]), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
	for (int i = 0; i < 6; i++) {
		assert_int_equal(recv_v(q, &l), want[i]);
		ack_v(q, &l);
	}
	quay_queue_destroy(q);
}

static void
capacity_and_in_flight_limits(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l[4];
	quay_msg *m;

	(void)state;
	o.capacity = 4;
	o.max_in_flight = 2;
	q = mkq(&o);
	for (uint64_t i = 0; i < 4; i++)
		send_v(q, i);
	m = mkmsg(9);
	assert_int_equal(quay_queue_send(q, m), -EAGAIN); /* full: caller keeps it */
	assert_int_equal(recv_v(q, &l[0]), 0);
	assert_int_equal(recv_v(q, &l[1]), 1);
	assert_int_equal(quay_queue_receive(q, &l[2], 0), -EAGAIN); /* 2 leases out */
	assert_int_equal(quay_queue_send(q, m), -EAGAIN);           /* in flight still counts */
	ack_v(q, &l[0]);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(recv_v(q, &l[2]), 2);
	ack_v(q, &l[1]);
	ack_v(q, &l[2]);
	check_conservation(q);
	quay_queue_destroy(q);
}

static void
batch_calls(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_msg *ms[5];
	int res[5];
	quay_lease l[8];
	size_t n;

	(void)state;
	o.capacity = 4;
	q = mkq(&o);
	for (uint64_t i = 0; i < 5; i++)
		ms[i] = mkmsg(i);
	assert_int_equal(quay_queue_send_batch(q, ms, 5, res), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(res[i], 0);
	assert_int_equal(res[4], -EAGAIN);
	quay_msg_unref(ms[4]);
	n = quay_queue_receive_batch(q, l, 8, 0);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(val(l[i].msg), i);
		ack_v(q, &l[i]);
	}
	quay_queue_destroy(q);
}

/* ---- S1: leases ------------------------------------------------------ */

static void
lease_expiry_exact(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l, l2;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	send_v(q, 7);
	assert_int_equal(recv_v(q, &l), 7);
	qt_set_time(QT_T0 + 1000 * MS - 1); /* one ns before */
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(recv_v(q, &l2), UINT64_MAX);
	assert_int_equal(stats(q).in_flight, 1);
	qt_set_time(QT_T0 + 1000 * MS);                   /* at the deadline */
	assert_int_equal(quay_queue_ack(q, &l), -ESTALE); /* expired: no change */
	assert_int_equal(recv_v(q, &l2), 7);              /* the receive ran the timer */
	assert_int_equal(l2.attempt, 2);
	assert_int_equal(stats(q).lease_expired, 1);
	assert_int_equal(quay_queue_ack(q, &l), -ESTALE); /* fenced */
	assert_int_equal(quay_queue_extend(q, &l, MS), -ESTALE);
	assert_int_equal(quay_queue_nack(q, &l, NULL), -ESTALE);
	ack_v(q, &l2);
	done(&l);
	check_conservation(q);
	assert_int_equal(stats(q).acked, 1);
	quay_queue_destroy(q);
}

/* One lease slot: the redelivery re-leases the same slot with the same
 * message, so only the generation tells the old lease from the new. */
static void
fence_on_reused_slot(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease old, cur;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	o.max_in_flight = 1;
	q = mkq(&o);
	send_v(q, 3);
	assert_int_equal(recv_v(q, &old), 3);
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(recv_v(q, &cur), 3);
	assert_int_equal(cur.slot, old.slot);
	assert_ptr_equal(cur.msg, old.msg);
	assert_int_equal(cur.gen, old.gen + 1);
	assert_int_equal(quay_queue_ack(q, &old), -ESTALE);
	assert_int_equal(quay_queue_nack(q, &old, NULL), -ESTALE);
	assert_int_equal(quay_queue_extend(q, &old, MS), -ESTALE);
	assert_int_equal(stats(q).in_flight, 1);
	ack_v(q, &cur);
	done(&old);
	check_conservation(q);
	quay_queue_destroy(q);
}

static void
ack_before_deadline_deletes(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l, l2;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	send_v(q, 1);
	assert_int_equal(recv_v(q, &l), 1);
	qt_set_time(QT_T0 + 999 * MS);
	ack_v(q, &l);
	qt_set_time(QT_T0 + 5000 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(recv_v(q, &l2), UINT64_MAX);
	assert_int_equal(stats(q).lease_expired, 0);
	quay_queue_destroy(q);
}

static void
extend_moves_deadline(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l, l2;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	send_v(q, 1);
	assert_int_equal(recv_v(q, &l), 1);
	qt_set_time(QT_T0 + 500 * MS);
	assert_int_equal(quay_queue_extend(q, &l, 2000 * MS), 0); /* deadline QT_T0 + 2500 ms */
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(recv_v(q, &l2), UINT64_MAX); /* the old deadline passed */
	qt_set_time(QT_T0 + 2500 * MS - 1);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(recv_v(q, &l2), UINT64_MAX);
	/* Shorten it again (the lease now sits in the wheel). */
	assert_int_equal(quay_queue_extend(q, &l, 10 * MS), 0); /* QT_T0 + 2510 ms - 1 */
	qt_set_time(QT_T0 + 2510 * MS - 2);
	assert_int_equal(recv_v(q, &l2), UINT64_MAX);
	qt_set_time(QT_T0 + 2510 * MS - 1);
	assert_int_equal(recv_v(q, &l2), 1);
	assert_int_equal(l2.attempt, 2);
	assert_int_equal(quay_queue_extend(q, &l, MS), -ESTALE);
	ack_v(q, &l2);
	done(&l);
	check_conservation(q);
	quay_queue_destroy(q);
}

static void
nack_backoff_exact(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	/* base 100 ms, factor 3, max 1 s: 100, 300, 900, 1000, 1000 ms. */
	static const int64_t want[] = { 100, 300, 900, 1000, 1000 };
	int64_t t = QT_T0;

	(void)state;
	o.backoff_base_ns = 100 * MS;
	o.backoff_factor = 3.0;
	o.backoff_max_ns = 1000 * MS;
	o.max_attempts = 6;
	q = mkq(&o);
	send_v(q, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(recv_v(q, &l), 5);
		assert_int_equal(l.attempt, (uint32_t)i + 1);
		assert_int_equal(quay_queue_nack(q, &l, "boom"), 0);
		done(&l);
		assert_int_equal(stats(q).delayed, 1);
		qt_set_time(t + want[i] * MS - 1);
		assert_int_equal(recv_v(q, &l), UINT64_MAX);
		t += want[i] * MS;
		qt_set_time(t);
	}
	assert_int_equal(recv_v(q, &l), 5);
	assert_int_equal(stats(q).retried, 5);
	assert_int_equal(stats(q).nacked, 5);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

static int64_t
first_delay(uint64_t seed)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	int64_t d = -1;

	o.flags = 0; /* jitter on */
	o.jitter_seed = seed;
	o.backoff_base_ns = 1000 * MS;
	qt_set_time(QT_T0);
	q = mkq(&o);
	send_v(q, 1);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	/* Find the due time by stepping 1 ms at a time. */
	for (int64_t ms = 0; ms <= 1001; ms++) {
		qt_set_time(QT_T0 + ms * MS);
		if (recv_v(q, &l) != UINT64_MAX) {
			d = ms;
			ack_v(q, &l);
			break;
		}
	}
	quay_queue_destroy(q);
	return d;
}

static void
jitter_is_seeded_and_bounded(void **state)
{
	int64_t a = first_delay(1), b = first_delay(1), c = first_delay(2), e = first_delay(3);

	(void)state;
	assert_int_equal(a, b);
	assert_true(a >= 0 && a <= 1000);
	assert_true(c >= 0 && c <= 1000);
	assert_true(e >= 0 && e <= 1000);
	assert_false(a == c && c == e); /* it does vary */
}

/* ---- S2: dead letters and redrive ---------------------------------------- */

static void
header_is(const quay_msg *m, const char *key, const char *want)
{
	const void *v;
	size_t len;

	assert_int_equal(quay_msg_get_header(m, key, &v, &len), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(v, want, len);
}

static void
max_attempts_dead_letter_then_redrive(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l;
	struct quay_queue_stats s;
	size_t moved = 0;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	o.name = "dlq";
	dlq = mkq(&o);
	o.name = "work";
	o.dlq = dlq;
	o.max_attempts = 3;
	q = mkq(&o);
	send_v(q, 11);
	for (uint32_t i = 1; i <= 3; i++) {
		assert_int_equal(recv_v(q, &l), 11);
		assert_int_equal(l.attempt, i);
		assert_int_equal(recv_v(dlq, &l) == UINT64_MAX ? 0 : 1, 0);
		if (i < 3) {
			quay_lease l2;
			assert_int_equal(recv_v(dlq, &l2), UINT64_MAX);
		}
		assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
		done(&l);
	}
	/* Received exactly max_attempts times; the 3rd failure moved it. */
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	s = stats(q);
	assert_int_equal(s.dead_lettered, 1);
	assert_int_equal(s.received, 3);
	check_conservation(q);
	assert_int_equal(stats(dlq).sent, 1);
	assert_int_equal(stats(dlq).ready, 1);
	/* Browse the DLQ: the message, with the reason and the source. */
	assert_int_equal(recv_v(dlq, &l), 11);
	header_is(l.msg, QUAY_MSG_H_DLQ_REASON, "max-attempts");
	header_is(l.msg, QUAY_MSG_H_DLQ_SOURCE, "work");
	assert_int_equal(quay_queue_nack(dlq, &l, NULL), 0); /* back to ready in the DLQ */
	done(&l);
	assert_int_equal(quay_queue_redrive(dlq, q, 10, &moved), 0);
	assert_int_equal(moved, 1);
	assert_int_equal(recv_v(dlq, &l), UINT64_MAX); /* in exactly one queue */
	assert_int_equal(recv_v(q, &l), 11);
	assert_int_equal(l.attempt, 1); /* attempts reset */
	assert_int_equal(quay_msg_get_header(l.msg, QUAY_MSG_H_DLQ_REASON, NULL, NULL), -ENOENT);
	ack_v(q, &l);
	s = stats(dlq);
	assert_int_equal(s.redriven_out, 1);
	check_conservation(dlq);
	check_conservation(q);
	assert_int_equal(stats(q).sent, 2); /* the send and the redrive */
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static void
lease_expiry_counts_towards_max(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l;
	int64_t t = QT_T0;

	(void)state;
	o.name = "dead";
	dlq = mkq(&o);
	o.name = "q";
	o.dlq = dlq;
	o.max_attempts = 2;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	send_v(q, 3);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(recv_v(q, &l), 3);
		done(&l);
		t += 1000 * MS;
		qt_set_time(t);
		assert_int_equal(quay_queue_tick(q), 0);
	}
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	assert_int_equal(stats(q).lease_expired, 2);
	assert_int_equal(recv_v(dlq, &l), 3);
	header_is(l.msg, QUAY_MSG_H_DLQ_REASON, "max-attempts");
	ack_v(dlq, &l);
	check_conservation(q);
	check_conservation(dlq);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static void
default_max_attempts_is_ten(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	uint32_t n = 0;

	(void)state;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	send_v(q, 1);
	while (recv_v(q, &l) == 1) {
		n++;
		assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
		done(&l);
	}
	assert_int_equal(n, QUAY_QUEUE_ATTEMPTS_DEFAULT);
	assert_int_equal(stats(q).dead_lettered, 1); /* no DLQ: dropped, counted */
	check_conservation(q);
	quay_queue_destroy(q);
}

static void
shared_message_is_copied_for_headers(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l;
	quay_msg *m = mkmsg(77);

	(void)state;
	o.name = "d";
	dlq = mkq(&o);
	o.name = "s";
	o.dlq = dlq;
	o.max_attempts = 1;
	q = mkq(&o);
	assert_int_equal(quay_msg_ref(m), 0); /* we keep one */
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(recv_v(q, &l), 77);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	assert_int_equal(quay_msg_get_header(m, QUAY_MSG_H_DLQ_REASON, NULL, NULL), -ENOENT);
	assert_int_equal(recv_v(dlq, &l), 77);
	assert_ptr_not_equal(l.msg, m);
	header_is(l.msg, QUAY_MSG_H_DLQ_REASON, "max-attempts");
	ack_v(dlq, &l);
	quay_msg_unref(m);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static void
full_dlq_keeps_message_until_room(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l;
	struct quay_queue_stats s;

	(void)state;
	o.name = "small";
	o.capacity = 1;
	dlq = mkq(&o);
	o.name = "big";
	o.capacity = 8;
	o.dlq = dlq;
	o.max_attempts = 1;
	q = mkq(&o);
	send_v(dlq, 100); /* the DLQ is full */
	send_v(q, 1);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	s = stats(q);
	assert_int_equal(s.dead_lettered, 0);
	assert_int_equal(s.delayed, 1); /* waits here */
	check_conservation(q);
	assert_int_equal(recv_v(dlq, &l), 100);
	ack_v(dlq, &l);
	qt_set_time(QT_T0 + QUAY_QUEUE_BACKOFF_BASE_DEFAULT);
	assert_int_equal(quay_queue_tick(q), 0);
	s = stats(q);
	assert_int_equal(s.dead_lettered, 1);
	assert_int_equal(s.delayed, 0);
	assert_int_equal(recv_v(dlq, &l), 1);
	ack_v(dlq, &l);
	check_conservation(q);
	check_conservation(dlq);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

static void
redrive_stops_when_target_full(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *dlq, *to;
	quay_lease l;
	size_t moved = 0;

	(void)state;
	o.name = "from";
	dlq = mkq(&o);
	o.name = "to";
	o.capacity = 2;
	to = mkq(&o);
	for (uint64_t i = 0; i < 5; i++)
		send_v(dlq, i);
	assert_int_equal(quay_queue_redrive(dlq, to, 10, &moved), -EAGAIN);
	assert_int_equal(moved, 2);
	assert_int_equal(stats(dlq).ready, 3);
	assert_int_equal(stats(to).ready, 2);
	check_conservation(dlq);
	check_conservation(to);
	for (int i = 0; i < 2; i++) {
		assert_true(recv_v(to, &l) < 5);
		ack_v(to, &l);
	}
	assert_int_equal(quay_queue_redrive(dlq, to, 1, NULL), 0);
	assert_int_equal(stats(to).ready, 1);
	quay_queue_destroy(dlq);
	quay_queue_destroy(to);
}

/* ---- hooks ------------------------------------------------------------ */


struct hook_log {
	quay_queue_verdict verdict;
	int64_t delay;
	uint32_t last_attempt;
	char last_reason[32];
	int dead;
	quay_queue_dlq_reason dead_reason;
};

static quay_queue_verdict
on_fail(void *ctx, const quay_msg *msg, uint32_t attempt, const char *reason, int64_t *delay_ns)
{
	struct hook_log *h = ctx;

	(void)msg;
	h->last_attempt = attempt;
	snprintf(h->last_reason, sizeof(h->last_reason), "%s", reason ? reason : "(null)");
	if (h->delay >= 0)
		*delay_ns = h->delay;
	return h->verdict;
}

static void
on_dead(void *ctx, const quay_msg *msg, quay_queue_dlq_reason why)
{
	struct hook_log *h = ctx;

	(void)msg;
	h->dead++;
	h->dead_reason = why;
}

static void
failure_hook_decides(void **state)
{
	struct quay_queue_opts o = fake_opts();
	struct hook_log h = { QUAY_QUEUE_RETRY, 5 * MS, 0, "", 0, 0 };
	quay_queue *q;
	quay_lease l;

	(void)state;
	o.on_failure = on_fail;
	o.on_dead_letter = on_dead;
	o.hook_ctx = &h;
	q = mkq(&o);
	send_v(q, 1);
	/* RETRY with the hook's delay. */
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_nack(q, &l, "bad input"), 0);
	done(&l);
	assert_int_equal(h.last_attempt, 1);
	assert_string_equal(h.last_reason, "bad input");
	qt_set_time(QT_T0 + 5 * MS - 1);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 5 * MS);
	assert_int_equal(recv_v(q, &l), 1);
	/* Lease expiry reaches the hook with its own reason. */
	qt_set_time(QT_T0 + 1005 * MS);
	h.verdict = QUAY_QUEUE_DEAD_LETTER;
	assert_int_equal(quay_queue_tick(q), 0);
	done(&l);
	assert_int_equal(h.last_attempt, 2);
	assert_string_equal(h.last_reason, "lease expired");
	assert_int_equal(h.dead, 1);
	assert_int_equal(h.dead_reason, QUAY_QUEUE_DLQ_REJECTED);
	/* DROP. */
	h.verdict = QUAY_QUEUE_DROP;
	send_v(q, 2);
	assert_int_equal(recv_v(q, &l), 2);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	assert_string_equal(h.last_reason, "(null)");
	assert_int_equal(stats(q).dropped, 1);
	assert_int_equal(stats(q).dead_lettered, 1);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* ---- delays and the timing wheel --------------------------------------- */

static quay_msg *mkdedup(uint64_t v, const char *id);

/* Review 4: a redrive into a full target changes nothing in the DLQ: the
 * messages keep their order, headers, attempts and TTL. */
static void
redrive_into_full_target_changes_nothing(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *dlq, *src, *to;
	quay_lease l;
	size_t moved = 99;
	int64_t exp[3];

	(void)state;
	o.name = "dlq";
	o.ttl_ns = 3600 * 1000 * MS;
	dlq = mkq(&o);
	o = fake_opts();
	o.name = "src";
	o.dlq = dlq;
	o.max_attempts = 1;
	src = mkq(&o);
	o = fake_opts();
	o.name = "to";
	o.capacity = 1;
	to = mkq(&o);
	for (uint64_t v = 1; v <= 3; v++) {
		send_v(src, v);
		assert_int_equal(recv_v(src, &l), v);
		assert_int_equal(quay_queue_nack(src, &l, NULL), 0);
		done(&l);
		qt_set_time(qt_fake_clock(NULL) + MS);
	}
	send_v(to, 99); /* the target is full */
	assert_int_equal(quay_queue_redrive(dlq, to, 10, &moved), -EAGAIN);
	assert_int_equal(moved, 0);
	assert_int_equal(stats(dlq).redriven_out, 0);
	assert_int_equal(stats(dlq).ready, 3);
	for (uint64_t v = 1; v <= 3; v++) {
		assert_int_equal(recv_v(dlq, &l), v); /* order kept */
		header_is(l.msg, QUAY_MSG_H_DLQ_REASON, "max-attempts");
		header_is(l.msg, QUAY_MSG_H_DLQ_SOURCE, "src");
		exp[v - 1] = quay_msg_expires_ns(l.msg);
		assert_int_equal(exp[v - 1], QT_T0 + (int64_t)(v - 1) * MS + 3600 * 1000 * MS);
		assert_int_equal(quay_queue_nack(dlq, &l, NULL), 0); /* back, after backoff */
		done(&l);
	}
	check_conservation(dlq);
	check_conservation(to);
	quay_queue_destroy(src);
	quay_queue_destroy(to);
	quay_queue_destroy(dlq);
}

/* Review 5: on_dead_letter runs once per message, however many times the
 * dead-lettering waits for room in a full DLQ; the reason headers go on
 * once. */
static void
dead_letter_hook_runs_once_when_dlq_full(void **state)
{
	struct hook_log h = { QUAY_QUEUE_RETRY, -1, 0, "", 0, 0 };
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l;

	(void)state;
	o.name = "small";
	o.capacity = 1;
	dlq = mkq(&o);
	o.name = "src";
	o.capacity = 8;
	o.dlq = dlq;
	o.max_attempts = 1;
	o.on_dead_letter = on_dead;
	o.hook_ctx = &h;
	q = mkq(&o);
	send_v(dlq, 100); /* the DLQ is full */
	send_v(q, 1);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	for (int i = 1; i <= 5; i++) { /* five more tries, all full */
		qt_set_time(QT_T0 + i * QUAY_QUEUE_BACKOFF_BASE_DEFAULT);
		assert_int_equal(quay_queue_tick(q), 0);
		assert_int_equal(stats(q).delayed, 1);
	}
	assert_int_equal(h.dead, 0);
	assert_int_equal(stats(q).dead_lettered, 0);
	assert_int_equal(recv_v(dlq, &l), 100);
	ack_v(dlq, &l);
	qt_set_time(QT_T0 + 6 * QUAY_QUEUE_BACKOFF_BASE_DEFAULT);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(h.dead, 1);
	assert_int_equal(h.dead_reason, QUAY_QUEUE_DLQ_MAX_ATTEMPTS);
	assert_int_equal(stats(q).dead_lettered, 1);
	assert_int_equal(recv_v(dlq, &l), 1);
	assert_int_equal(quay_msg_header_count(l.msg), 3); /* reason, source, attempts: once */
	ack_v(dlq, &l);
	check_conservation(q);
	check_conservation(dlq);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* ---- time overflow (review 6) ----------------------------------------- */

static quay_queue_verdict
retry_forever(void *ctx, const quay_msg *msg, uint32_t attempt, const char *reason, int64_t *delay_ns)
{
	(void)ctx;
	(void)msg;
	(void)attempt;
	(void)reason;
	*delay_ns = INT64_MAX;
	return QUAY_QUEUE_RETRY;
}

/* Every option time and hook delay at INT64_MAX means "never", not a
 * wrapped (negative) time. */
static void
huge_times_saturate(void **state)
{
	struct quay_queue_opts o;
	quay_queue *q;
	quay_lease l;
	quay_msg *m;

	(void)state;
	/* visibility: the lease never expires, ack works. */
	o = fake_opts();
	o.visibility_ns = INT64_MAX;
	q = mkq(&o);
	send_v(q, 1);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.deadline_ns, INT64_MAX);
	qt_set_time(QT_T0 + 1000000 * 1000 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(stats(q).lease_expired, 0);
	assert_int_equal(quay_queue_extend(q, &l, INT64_MAX), 0);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
	qt_set_time(QT_T0);
	/* delay: never due. */
	o = fake_opts();
	o.delay_ns = INT64_MAX;
	q = mkq(&o);
	m = mkmsg(2);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_msg_not_before_ns(m), INT64_MAX);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	assert_int_equal(stats(q).delayed, 1);
	check_conservation(q);
	quay_queue_destroy(q);
	/* ttl: never expires. */
	o = fake_opts();
	o.ttl_ns = INT64_MAX;
	q = mkq(&o);
	m = mkmsg(3);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_msg_expires_ns(m), INT64_MAX);
	assert_int_equal(recv_v(q, &l), 3);
	ack_v(q, &l);
	assert_int_equal(stats(q).ttl_expired, 0);
	quay_queue_destroy(q);
	/* dedup window: the id stays remembered. */
	o = fake_opts();
	o.dedup_window_ns = INT64_MAX;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkdedup(4, "x")), 0);
	assert_int_equal(quay_queue_send(q, mkdedup(5, "x")), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(stats(q).deduplicated, 1);
	quay_queue_destroy(q);
	/* on_failure delay: retried never (kept delayed); with a TTL, the
	 * TTL comes first, so it is dead-lettered (dropped: no DLQ) now. */
	o = fake_opts();
	o.on_failure = retry_forever;
	q = mkq(&o);
	send_v(q, 6);
	assert_int_equal(recv_v(q, &l), 6);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	assert_int_equal(stats(q).delayed, 1);
	m = mkmsg(7);
	assert_int_equal(quay_msg_set_expires_ns(m, QT_T0 + 1000 * MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(recv_v(q, &l), 7);
	assert_int_equal(quay_queue_nack(q, &l, NULL), 0);
	done(&l);
	assert_int_equal(stats(q).ttl_expired, 1);
	assert_int_equal(stats(q).delayed, 1);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* Review 11: oldest_age_ns covers in-flight messages (an old lease
 * outlives younger ones). */
static void
oldest_age_covers_in_flight(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l1, l2;

	(void)state;
	o.visibility_ns = 3600 * 1000 * MS;
	q = mkq(&o);
	send_v(q, 1);
	qt_set_time(QT_T0 + 1000 * MS);
	send_v(q, 2);
	assert_int_equal(recv_v(q, &l1), 1);
	assert_int_equal(recv_v(q, &l2), 2);
	ack_v(q, &l2);
	qt_set_time(QT_T0 + 5000 * MS);
	assert_int_equal(stats(q).in_flight, 1);
	assert_int_equal(stats(q).oldest_age_ns, 5000 * MS);
	ack_v(q, &l1);
	assert_int_equal(stats(q).oldest_age_ns, 0);
	quay_queue_destroy(q);
}

static void
delayed_message_exact(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	quay_msg *m = mkmsg(4);

	(void)state;
	q = mkq(&o);
	assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + 5 * MS + 3), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(stats(q).delayed, 1);
	qt_set_time(QT_T0 + 5 * MS + 2);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 5 * MS + 3);
	assert_int_equal(recv_v(q, &l), 4);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

static void
default_delay_applies(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;

	(void)state;
	o.delay_ns = 250 * MS;
	q = mkq(&o);
	send_v(q, 9);
	qt_set_time(QT_T0 + 250 * MS - 1);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	qt_set_time(QT_T0 + 250 * MS);
	assert_int_equal(recv_v(q, &l), 9);
	assert_int_equal(quay_msg_not_before_ns(l.msg), QT_T0 + 250 * MS);
	ack_v(q, &l);
	quay_queue_destroy(q);
}

static void
due_order_is_kept(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	/* Due offsets in ms (several equal: FIFO among them), crossing the
	 * level 0 / level 1 boundary (256 ticks). */
	static const int64_t due[] = { 300, 10, 20, 20, 900, 1, 255, 256, 257, 20, 5000 };
	static const uint64_t want[] = { 5, 1, 2, 3, 9, 6, 7, 8, 0, 4, 10 };
	const size_t n = sizeof(due) / sizeof(due[0]);

	(void)state;
	q = mkq(&o);
	for (uint64_t i = 0; i < n; i++) {
		quay_msg *m = mkmsg(i);

		assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + due[i] * MS), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
	qt_set_time(QT_T0 + 10000 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(recv_v(q, &l), want[i]);
		ack_v(q, &l);
	}
	quay_queue_destroy(q);
}

static void
long_delays_do_not_drift(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	/* 3 days (level 4) and 60 days (beyond the wheel: parked, re-filed),
	 * plus odd nanoseconds. */
	static const int64_t due[] = { (int64_t)3 * 86400 * 1000 * MS + 123457,
		(int64_t)60 * 86400 * 1000 * MS + 987 };

	(void)state;
	q = mkq(&o);
	for (uint64_t i = 0; i < 2; i++) {
		quay_msg *m = mkmsg(i);

		assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + due[i]), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
	for (uint64_t i = 0; i < 2; i++) {
		/* Step through time coarsely (as an idle process would be
		 * called), then to the ns before and at the due time. */
		for (int64_t t = QT_T0; t < QT_T0 + due[i] - 3600 * 1000 * MS; t += 3600 * 1000 * MS) {
			qt_set_time(t);
			assert_int_equal(quay_queue_tick(q), 0);
		}
		qt_set_time(QT_T0 + due[i] - 1);
		assert_int_equal(recv_v(q, &l), UINT64_MAX);
		qt_set_time(QT_T0 + due[i]);
		assert_int_equal(recv_v(q, &l), i);
		ack_v(q, &l);
	}
	quay_queue_destroy(q);
}

static void
ttl_dead_letters_never_delivers(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l;
	struct hook_log h = { QUAY_QUEUE_RETRY, -1, 0, "", 0, 0 };
	quay_msg *m;

	(void)state;
	o.name = "ttl-dlq";
	dlq = mkq(&o);
	o.name = "ttl";
	o.dlq = dlq;
	o.ttl_ns = 10 * MS;
	o.on_dead_letter = on_dead;
	o.hook_ctx = &h;
	q = mkq(&o);
	send_v(q, 1);
	m = mkmsg(2);
	assert_int_equal(quay_msg_set_expires_ns(m, QT_T0 + 50 * MS), 0); /* its own TTL wins */
	assert_int_equal(quay_queue_send(q, m), 0);
	qt_set_time(QT_T0 + 10 * MS);
	assert_int_equal(recv_v(q, &l), 2); /* 1 expired on the way */
	ack_v(q, &l);
	assert_int_equal(h.dead, 1);
	assert_int_equal(h.dead_reason, QUAY_QUEUE_DLQ_TTL);
	assert_int_equal(stats(q).ttl_expired, 1);
	assert_int_equal(stats(q).dead_lettered, 1);
	assert_int_equal(recv_v(dlq, &l), 1);
	header_is(l.msg, QUAY_MSG_H_DLQ_REASON, "ttl-expired");
	assert_int_equal(quay_msg_expires_ns(l.msg), 0);
	ack_v(dlq, &l);
	check_conservation(q);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* ---- dedup ------------------------------------------------------------- */

static quay_msg *
mkdedup(uint64_t v, const char *id)
{
	quay_msg *m = mkmsg(v);

	assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, strlen(id)), 0);
	return m;
}

static void
dedup_window(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	char big[QUAY_QUEUE_DEDUP_ID_MAX + 2];
	quay_msg *m;

	(void)state;
	o.dedup_window_ns = 1000 * MS;
	o.dedup_capacity = 8; /* smallest table: 8 sets */
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkdedup(1, "a")), 0);
	assert_int_equal(quay_queue_send(q, mkdedup(2, "a")), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(quay_queue_send(q, mkdedup(3, "b")), 0);
	send_v(q, 4); /* no id: always */
	assert_int_equal(stats(q).deduplicated, 1);
	assert_int_equal(stats(q).sent, 3);
	qt_set_time(QT_T0 + 999 * MS);
	assert_int_equal(quay_queue_send(q, mkdedup(5, "a")), QUAY_QUEUE_DUPLICATE);
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(quay_queue_send(q, mkdedup(6, "a")), 0); /* window passed */
	assert_int_equal(stats(q).deduplicated, 2);
	static const uint64_t want[] = { 1, 3, 4, 6 };
	for (int i = 0; i < 4; i++) {
		assert_int_equal(recv_v(q, &l), want[i]);
		ack_v(q, &l);
	}
	/* The table holds at least twice dedup_capacity (8 sets of 8 here,
	 * every one in each id's probe window): 1 live id ("a": "b" expired)
	 * and 63 more fill it; then -EAGAIN, the caller keeps the message. */
	for (int i = 0; i < 63; i++) {
		char id[8];
		snprintf(id, sizeof(id), "k%d", i);
		assert_int_equal(quay_queue_send(q, mkdedup(10, id)), 0);
	}
	m = mkdedup(11, "last");
	assert_int_equal(quay_queue_send(q, m), -EAGAIN);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	quay_msg_unref(m);
	assert_int_equal(quay_msg_alloc(pool, 512, &m), 0);
	assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, big, strlen(big)), 0);
	assert_int_equal(quay_queue_send(q, m), -EINVAL);
	quay_msg_unref(m);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* ---- browse ------------------------------------------------------------ */

struct seen {
	int n;
	uint64_t v[16];
	quay_queue_state st[16];
	int stop_at;
};

static int
visit(void *ctx, const quay_msg *msg, quay_queue_state st)
{
	struct seen *s = ctx;

	s->v[s->n] = val(msg);
	s->st[s->n] = st;
	s->n++;
	return s->n == s->stop_at ? 42 : 0;
}

/* Review 7: the documented dedup capacity is really available: as many
 * distinct live ids as dedup_capacity (default: capacity) are all taken,
 * whatever their hashes, and each is then recognised. */
static void
dedup_capacity_is_available(void **state)
{
	static const struct {
		size_t capacity, dedup_capacity;
	} cases[] = { { 4096, 0 }, { 4096, 1000 }, { 1000, 0 }, { 64, 64 } };

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct quay_queue_opts o = fake_opts();
		quay_queue *q;
		size_t n = cases[c].dedup_capacity ? cases[c].dedup_capacity : cases[c].capacity;

		o.capacity = cases[c].capacity;
		o.dedup_capacity = cases[c].dedup_capacity;
		o.dedup_window_ns = 1000 * MS;
		q = mkq(&o);
		for (size_t i = 0; i < n; i++) {
			char id[32];

			snprintf(id, sizeof(id), "case%zu-id%zu", c, i);
			assert_int_equal(quay_queue_send(q, mkdedup(i, id)), 0);
		}
		assert_int_equal(stats(q).sent, n);
		assert_int_equal(stats(q).deduplicated, 0);
		/* Acked, the ids stay remembered for the window (a full queue
		 * would refuse the duplicates before looking at them). */
		for (size_t i = 0; i < n; i++) {
			quay_lease l;

			assert_int_equal(recv_v(q, &l), i);
			ack_v(q, &l);
		}
		for (size_t i = 0; i < n; i += 7) {
			char id[32];

			snprintf(id, sizeof(id), "case%zu-id%zu", c, i);
			assert_int_equal(quay_queue_send(q, mkdedup(i, id)), QUAY_QUEUE_DUPLICATE);
		}
		assert_int_equal(stats(q).deduplicated, (n + 6) / 7);
		check_conservation(q);
		quay_queue_destroy(q);
	}
}

static void
browse_visits_without_leasing(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l, inflight;
	struct seen s = { 0, { 0 }, { 0 }, -1 };
	quay_msg *m;
	struct quay_queue_stats before, after;

	(void)state;
	q = mkq(&o);
	for (uint64_t i = 0; i < 4; i++)
		send_v(q, i);
	m = mkmsg(9);
	assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(recv_v(q, &inflight), 0);
	before = stats(q);
	assert_int_equal(quay_queue_browse(q, visit, &s), 0);
	after = stats(q);
	assert_int_equal(s.n, 5);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(s.v[i], (uint64_t)i + 1);
		assert_int_equal(s.st[i], QUAY_QUEUE_READY);
	}
	assert_int_equal(s.v[3], 9);
	assert_int_equal(s.st[3], QUAY_QUEUE_DELAYED);
	assert_int_equal(s.v[4], 0);
	assert_int_equal(s.st[4], QUAY_QUEUE_IN_FLIGHT);
	assert_int_equal(before.received, after.received);
	assert_int_equal(before.ready, after.ready);
	/* Stops on a non-zero return. */
	s.n = 0;
	s.stop_at = 2;
	assert_int_equal(quay_queue_browse(q, visit, &s), 42);
	assert_int_equal(s.n, 2);
	/* Order kept. */
	for (uint64_t i = 1; i < 4; i++) {
		assert_int_equal(recv_v(q, &l), i);
		ack_v(q, &l);
	}
	ack_v(q, &inflight);
	quay_queue_destroy(q);
}

/* ---- recovery seam ------------------------------------------------------ */

static void
restore_is_not_a_send(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l;
	struct quay_queue_stats s;

	(void)state;
	o.dedup_window_ns = 1000 * MS;
	q = mkq(&o);
	assert_int_equal(quayi_queue_restore(q, mkdedup(1, "x"), 4, 0), 0);
	assert_int_equal(quayi_queue_restore(q, mkdedup(2, "x"), 0, QT_T0 + 7 * MS), 0);
	assert_int_equal(quayi_queue_restore(NULL, NULL, 0, 0), -EINVAL);
	s = stats(q);
	assert_int_equal(s.sent, 0);
	assert_int_equal(s.restored, 2);
	assert_int_equal(s.delayed, 1);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 5);
	ack_v(q, &l);
	qt_set_time(QT_T0 + 7 * MS);
	assert_int_equal(recv_v(q, &l), 2);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* ---- blocking receive ---------------------------------------------------- */

struct waiter {
	quay_queue *q;
	int rc;
	uint64_t v;
	int tid;
};

static void *
wait_thread(void *arg)
{
	struct waiter *w = arg;
	quay_lease l;

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_SEQ_CST);
	w->rc = quay_queue_receive(w->q, &l, 20000 * MS);
	if (w->rc == 0) {
		w->v = val(l.msg);
		w->rc = quay_queue_ack(w->q, &l);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void
blocking_receive_wakes_on_send_and_due(void **state)
{
	struct quay_queue_opts o = fake_opts();
	struct waiter w = { NULL, -1, 0, 0 };
	quay_queue *q;
	pthread_t t;
	quay_msg *m;

	(void)state;
	q = mkq(&o);
	w.q = q;
	/* 1: a send wakes it. */
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w.tid, 5000));
	send_v(q, 5);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.v, 5);
	/* 2: a delayed message becoming due (fake clock + tick) wakes it. */
	w.tid = 0;
	w.rc = -1;
	m = mkmsg(6);
	assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + 3600 * 1000 * MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w.tid, 5000));
	qt_set_time(QT_T0 + 3600 * 1000 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.v, 6);
	quay_queue_destroy(q);
}

/* A real clock: a delayed message wakes a sleeping receiver by itself. */
static void
real_clock_delay_wakes_receiver(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q;
	quay_lease l;
	quay_msg *m;
	struct timespec ts;

	(void)state;
	q = mkq(&o);
	m = mkmsg(8);
	clock_gettime(CLOCK_REALTIME, &ts);
	assert_int_equal(quay_msg_set_not_before_ns(m,
	                     (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + 20 * MS),
	    0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_queue_receive(q, &l, 10000 * MS), 0);
	assert_int_equal(val(l.msg), 8);
	ack_v(q, &l);
	quay_queue_destroy(q);
}

/* Review 2: a receiver already asleep wakes for a delayed message sent
 * after it went to sleep, when that message becomes due (real clock: no
 * tick, nobody else runs the timers). */
struct timed_waiter {
	quay_queue *q;
	int64_t wait_ns;
	int rc;
	uint64_t v;
	int tid;
	int64_t took_ns;
};

static void *
timed_wait_thread(void *arg)
{
	struct timed_waiter *w = arg;
	quay_lease l;
	int64_t t0;

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_SEQ_CST);
	t0 = qt_now_ns();
	w->rc = quay_queue_receive(w->q, &l, w->wait_ns);
	w->took_ns = qt_now_ns() - t0;
	if (w->rc == 0) {
		w->v = val(l.msg);
		w->rc = quay_queue_ack(w->q, &l);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void
start_sleeper(struct timed_waiter *w, pthread_t *t)
{
	assert_int_equal(pthread_create(t, NULL, timed_wait_thread, w), 0);
	while (__atomic_load_n(&w->tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w->tid, 5000));
}

static int64_t
realtime_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
sleeping_receiver_wakes_for_later_delayed(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct timed_waiter w = { NULL, 10000 * MS, -1, 0, 0, 0 };
	quay_queue *q;
	pthread_t t;
	quay_msg *m;

	(void)state;
	q = mkq(&o);
	w.q = q;
	start_sleeper(&w, &t);
	m = mkmsg(9);
	assert_int_equal(quay_msg_set_not_before_ns(m, realtime_now() + 50 * MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_true(qt_join_within(t, 20000));
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.v, 9);
	assert_true(w.took_ns < 5000 * MS); /* not the caller's 10 s */
	/* The same with a default delay and no deadline at all. */
	quay_queue_destroy(q);
	o.delay_ns = 50 * MS;
	q = mkq(&o);
	w = (struct timed_waiter){ q, -1, -1, 0, 0, 0 };
	start_sleeper(&w, &t);
	send_v(q, 10);
	assert_true(qt_join_within(t, 20000));
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.v, 10);
	quay_queue_destroy(q);
}

/* The same on the fake clock, without tick: the sleeper recomputes its
 * sleep from the new due time and runs the timers itself when it wakes. */
static void
sleeping_receiver_wakes_for_later_delayed_fake(void **state)
{
	struct quay_queue_opts o = fake_opts();
	struct timed_waiter w = { NULL, 10000 * MS, -1, 0, 0, 0 };
	quay_queue *q;
	pthread_t t;
	quay_msg *m;

	(void)state;
	q = mkq(&o);
	w.q = q;
	start_sleeper(&w, &t);
	m = mkmsg(11);
	assert_int_equal(quay_msg_set_not_before_ns(m, QT_T0 + 50 * MS), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	qt_set_time(QT_T0 + 50 * MS);
	assert_true(qt_join_within(t, 20000));
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.v, 11);
	assert_true(w.took_ns < 5000 * MS);
	quay_queue_destroy(q);
}

/* Review 1: extend (a shorter deadline: the wheel path) concurrent with
 * the timer work must not deadlock. */
struct extend_run {
	quay_queue *q;
	int stop;
	long iters;
	int err;
};

static void *
ticker_thread(void *arg)
{
	struct extend_run *r = arg;

	while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST))
		(void)quay_queue_tick(r->q);
	return NULL;
}

static void *
extender_thread(void *arg)
{
	struct extend_run *r = arg;
	quay_lease l;

	while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
		int rc;

		if (quay_queue_receive(r->q, &l, 0) != 0)
			continue;
		rc = quay_queue_extend(r->q, &l, 1000 * MS); /* < visibility: shorter */
		if (rc == 0)
			rc = quay_queue_extend(r->q, &l, 2000 * MS); /* longer */
		if (rc == 0 && l.attempt + 1 >= QUAY_QUEUE_ATTEMPTS_MAX) {
			/* Before the limit dead-letters it: ack, send a new one. */
			rc = quay_queue_ack(r->q, &l);
			if (rc == 0)
				rc = quay_queue_send(r->q, mkmsg(val(l.msg)));
		} else if (rc == 0) {
			rc = quay_queue_nack(r->q, &l, NULL);
		}
		if (rc != 0)
			__atomic_store_n(&r->err, rc, __ATOMIC_SEQ_CST);
		quay_msg_unref(l.msg);
		__atomic_fetch_add(&r->iters, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static void
extend_concurrent_with_timer(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct extend_run r = { NULL, 0, 0, 0 };
	pthread_t a, b[2];
	long last = -1;

	(void)state;
	o.flags = QUAY_QUEUE_NO_BACKOFF;
	o.max_attempts = QUAY_QUEUE_ATTEMPTS_MAX;
	r.q = mkq(&o);
	for (uint64_t v = 0; v < 4; v++)
		send_v(r.q, v);
	assert_int_equal(pthread_create(&a, NULL, ticker_thread, &r), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&b[i], NULL, extender_thread, &r), 0);
	for (int s = 0; s < 10; s++) {
		long it;

		qt_sleep_ms(100);
		it = __atomic_load_n(&r.iters, __ATOMIC_SEQ_CST);
		if (it == last) {
			/* Stuck threads cannot be joined: report and leave. */
			fprintf(stderr,
			    "extend_concurrent_with_timer: no progress in 100 ms at %ld: deadlock\n", it);
			qt_sleep_ms(1000);
			if (__atomic_load_n(&r.iters, __ATOMIC_SEQ_CST) == it)
				_exit(1);
		}
		last = it;
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_SEQ_CST);
	assert_true(qt_join_within(a, 10000));
	for (int i = 0; i < 2; i++)
		assert_true(qt_join_within(b[i], 10000));
	assert_int_equal(r.err, 0);
	assert_true(r.iters > 0);
	check_conservation(r.q);
	assert_int_equal(stats(r.q).ready, 4);
	quay_queue_destroy(r.q);
}

/* ---- issue 19: stale lease deadlines, foreign leases ------------------ */

/* A dead-letter hook that stands for slow dead-lettering (a durable
 * queue's fdatasync per message): each call moves the fake clock on by
 * the ctx's step. */
static void
on_dead_slow(void *ctx, const quay_msg *msg, quay_queue_dlq_reason why)
{
	(void)msg;
	(void)why;
	qt_set_time(qt_fake_clock(NULL) + *(const int64_t *)ctx);
}

#define SLOW_N 200

/* Send n messages whose TTL has passed by the time the clock is moved
 * past QT_T0 + 2 ms. */
static void
send_expired(quay_queue *q, size_t n, uint64_t base)
{
	for (size_t i = 0; i < n; i++) {
		quay_msg *m = mkmsg(base + i);

		quay_msg_set_expires_ns(m, QT_T0 + MS);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
}

/* The lease rule: a lease handed out now runs at least visibility from
 * now, and an immediate ack succeeds. */
static void
assert_fresh_lease(quay_queue *q, quay_lease *l, int64_t vis)
{
	int64_t now = qt_fake_clock(NULL);

	if (l->deadline_ns - now < vis)
		fail_msg("lease handed out at %lld with deadline %lld: %lld ns left, visibility %lld",
		    (long long)(now - QT_T0), (long long)(l->deadline_ns - QT_T0),
		    (long long)(l->deadline_ns - now), (long long)vis);
	assert_int_equal(quay_queue_ack(q, l), 0);
	done(l);
}

/* Issue 19.3: TTL-expired messages at the head are dead-lettered by the
 * receive; the lease it then issues must not be computed from the clock
 * reading taken before that work. */
static void
lease_deadline_after_ttl_dead_letters(void **state)
{
	struct quay_queue_opts o = fake_opts();
	int64_t step = MS;
	quay_queue *q;
	quay_lease l;

	(void)state;
	o.capacity = 256;
	o.visibility_ns = 50 * MS;
	o.max_attempts = 1;
	o.on_dead_letter = on_dead_slow;
	o.hook_ctx = &step;
	q = mkq(&o);
	send_expired(q, SLOW_N, 1000);
	send_v(q, 7);
	qt_set_time(QT_T0 + 2 * MS);
	assert_int_equal(recv_v(q, &l), 7);
	assert_int_equal(stats(q).ttl_expired, SLOW_N);
	assert_fresh_lease(q, &l, o.visibility_ns);
	assert_int_equal(stats(q).acked, 1);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* A batch whose only lease expired before the hand-over (a slow dead
 * letter moved the clock past it and another thread's timer expired it)
 * must not return 0 while the caller's wait (here: forever) goes on: it
 * receives again and hands out the next ready message, with a deadline a
 * whole visibility after the hand-over. */
static quay_queue *drop_q;
static int drop_calls;

static void *
drop_tick_thread(void *arg)
{
	(void)arg;
	quay_queue_tick(drop_q);
	return NULL;
}

static void
drop_on_dead(void *ctx, const quay_msg *msg, quay_queue_dlq_reason why)
{
	pthread_t t;

	(void)ctx;
	(void)msg;
	(void)why;
	if (drop_calls++ != 0)
		return;
	qt_set_time(qt_fake_clock(NULL) + 60 * MS);
	assert_int_equal(pthread_create(&t, NULL, drop_tick_thread, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
}

static void
batch_whose_leases_expired_receives_again(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_lease l[3];
	size_t k;

	(void)state;
	o.capacity = 64;
	o.visibility_ns = 50 * MS;
	o.max_attempts = 1;
	o.on_dead_letter = drop_on_dead;
	drop_calls = 0;
	drop_q = mkq(&o);
	send_v(drop_q, 1);
	send_expired(drop_q, 1, 1000);
	send_v(drop_q, 2);
	qt_set_time(QT_T0 + 2 * MS);
	k = quay_queue_receive_batch(drop_q, l, 3, -1);
	assert_int_equal(k, 1);
	assert_int_equal(val(l[0].msg), 2);
	assert_true(l[0].deadline_ns >= qt_fake_clock(NULL) + o.visibility_ns);
	assert_int_equal(quay_queue_ack(drop_q, &l[0]), 0);
	done(&l[0]);
	/* Value 1 (its lease expired at max_attempts 1) and the TTL-expired
	 * message: both dead-lettered, neither seen by a caller. */
	assert_int_equal(stats(drop_q).dead_lettered, 2);
	check_conservation(drop_q);
	quay_queue_destroy(drop_q);
}

/* The same through quay_queue_receive_batch(): the slow work happens
 * after the batch's first lease was issued, so every lease of the batch
 * must still run visibility from the moment the batch returns. */
static void
batch_lease_deadlines_after_slow_work(void **state)
{
	struct quay_queue_opts o = fake_opts();
	int64_t step = MS;
	quay_queue *q;
	quay_lease l[3];

	(void)state;
	o.capacity = 256;
	o.visibility_ns = 50 * MS;
	o.max_attempts = 1;
	o.on_dead_letter = on_dead_slow;
	o.hook_ctx = &step;
	q = mkq(&o);
	send_v(q, 1);
	send_expired(q, SLOW_N, 1000);
	send_v(q, 2);
	send_v(q, 3);
	qt_set_time(QT_T0 + 2 * MS);
	/* However the batches split them, 1, 2, 3 come in order, each with
	 * a fresh lease. */
	for (uint64_t seen = 0, calls = 0; seen < 3; calls++) {
		size_t k = quay_queue_receive_batch(q, l, 3, 0);

		assert_true(k >= 1 && k <= 3 - seen && calls < 3);
		for (size_t i = 0; i < k; i++) {
			assert_int_equal(val(l[i].msg), ++seen);
			assert_fresh_lease(q, &l[i], o.visibility_ns);
		}
	}
	assert_int_equal(stats(q).ttl_expired, SLOW_N);
	assert_int_equal(stats(q).acked, 3);
	assert_int_equal(stats(q).lease_expired, 0);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* The timer work a receive runs first (here: expired leases dead-lettered
 * at max_attempts 1) is slow work too. */
static void
lease_deadline_after_timer_work(void **state)
{
	struct quay_queue_opts o = fake_opts();
	int64_t step = MS;
	quay_queue *q;
	static quay_lease old[SLOW_N];
	quay_lease l;

	(void)state;
	o.capacity = 256;
	o.visibility_ns = 50 * MS;
	o.max_attempts = 1;
	o.on_dead_letter = on_dead_slow;
	o.hook_ctx = &step;
	q = mkq(&o);
	for (uint64_t i = 0; i < SLOW_N; i++) {
		send_v(q, 1000 + i);
		assert_int_equal(recv_v(q, &old[i]), 1000 + i);
	}
	send_v(q, 7);
	/* Every lease above has expired; the receive's timer run finds them
	 * (the send came before: its own timer run had nothing due). */
	qt_set_time(QT_T0 + 60 * MS);
	assert_int_equal(recv_v(q, &l), 7);
	assert_fresh_lease(q, &l, o.visibility_ns);
	assert_int_equal(stats(q).lease_expired, SLOW_N);
	for (int i = 0; i < SLOW_N; i++) {
		assert_int_equal(quay_queue_ack(q, &old[i]), -ESTALE);
		done(&old[i]);
	}
	check_conservation(q);
	quay_queue_destroy(q);
}

/* Issue 19.4: two queues holding one message issue the same slot and
 * generation; a lease of one is unknown to the other (-ENOENT for ack,
 * nack and extend) and changes nothing there. */
static void
foreign_lease_is_enoent(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q1, *q2;
	quay_lease l1, l2;
	quay_msg *m = mkmsg(5);

	(void)state;
	q1 = mkq(&o);
	o.name = "other";
	q2 = mkq(&o);
	quay_msg_ref(m);
	assert_int_equal(quay_queue_send(q1, m), 0);
	assert_int_equal(quay_queue_send(q2, m), 0);
	assert_int_equal(recv_v(q1, &l1), 5);
	assert_int_equal(recv_v(q2, &l2), 5);
	/* The fence fields are alike: only the queue tells them apart. */
	assert_int_equal(l1.slot, l2.slot);
	assert_int_equal(l1.gen, l2.gen);
	assert_ptr_equal(l1.msg, l2.msg);
	assert_int_equal(quay_queue_ack(q2, &l1), -ENOENT);
	assert_int_equal(quay_queue_nack(q2, &l1, "x"), -ENOENT);
	assert_int_equal(quay_queue_extend(q2, &l1, 5 * MS), -ENOENT);
	assert_int_equal(quay_queue_extend(q2, &l1, 5000 * MS), -ENOENT);
	assert_int_equal(quay_queue_ack(q1, &l2), -ENOENT);
	assert_int_equal(stats(q2).acked, 0);
	assert_int_equal(stats(q2).nacked, 0);
	assert_int_equal(stats(q2).in_flight, 1);
	/* The real holders are unharmed. */
	assert_int_equal(quay_queue_extend(q2, &l2, 10 * MS), 0);
	assert_int_equal(quay_queue_ack(q2, &l2), 0);
	assert_int_equal(quay_queue_ack(q1, &l1), 0);
	done(&l1);
	done(&l2);
	check_conservation(q1);
	check_conservation(q2);
	quay_queue_destroy(q2);
	quay_queue_destroy(q1);
}

/* ---- issue 11: close ---------------------------------------------- */

struct batch_waiter {
	quay_queue *q;
	size_t got;
	int tid;
};

static void *
batch_wait_thread(void *arg)
{
	struct batch_waiter *w = arg;
	quay_lease l[4];

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_SEQ_CST);
	w->got = quay_queue_receive_batch(w->q, l, 4, -1);
	for (size_t i = 0; i < w->got; i++)
		quay_msg_unref(l[i].msg);
	return NULL;
}

/* A receiver (and a batch receiver) proven asleep in futex(2), waiting
 * forever, wakes with -EPIPE (0) when the queue is closed. */
static void
close_wakes_sleeping_receivers(void **state)
{
	struct quay_queue_opts o = fake_opts();
	struct waiter w = { NULL, -1, 0, 0 };
	struct batch_waiter bw = { NULL, 99, 0 };
	quay_queue *q;
	pthread_t t, bt;

	(void)state;
	q = mkq(&o);
	w.q = q;
	bw.q = q;
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	assert_int_equal(pthread_create(&bt, NULL, batch_wait_thread, &bw), 0);
	while (
	    __atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0 || __atomic_load_n(&bw.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w.tid, 5000));
	assert_true(qt_await_futex_sleep(bw.tid, 5000));
	assert_int_equal(quay_queue_close(q), 0);
	assert_true(qt_join_within(t, 10000));
	assert_true(qt_join_within(bt, 10000));
	assert_int_equal(w.rc, -EPIPE);
	assert_int_equal(bw.got, 0);
	quay_queue_destroy(q);
}

/* After close: receives refuse at once (even with a message ready),
 * sends refuse and leave the reference with the caller, leases out
 * still ack, nack and extend; close is idempotent. */
static void
close_refuses_new_work_keeps_leases(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l1, l2, l3, lx;
	quay_msg *m, *b[2];
	int res[2] = { 7, 7 };
	size_t moved = 9;

	(void)state;
	assert_int_equal(quay_queue_close(NULL), -EINVAL);
	o.dlq = dlq = mkq(&(struct quay_queue_opts){ .size = sizeof(struct quay_queue_opts),
	    .clock = qt_fake_clock,
	    .name = "dlq",
	    .capacity = 8 });
	q = mkq(&o);
	send_v(q, 1);
	send_v(q, 2);
	send_v(q, 3);
	send_v(q, 4);
	assert_int_equal(recv_v(q, &l1), 1);
	assert_int_equal(recv_v(q, &l2), 2);
	assert_int_equal(recv_v(q, &l3), 3);
	send_v(dlq, 9);
	assert_int_equal(quay_queue_close(q), 0);
	assert_int_equal(quay_queue_close(q), 0); /* idempotent */
	memset(&lx, 0x5a, sizeof(lx));
	assert_int_equal(quay_queue_receive(q, &lx, 0), -EPIPE); /* 4 is ready */
	assert_int_equal(quay_queue_receive(q, &lx, 100 * MS), -EPIPE);
	assert_int_equal(quay_queue_receive(q, &lx, -1), -EPIPE);
	assert_int_equal(quay_queue_receive_batch(q, &lx, 1, -1), 0);
	assert_int_equal(lx.slot, 0x5a5a5a5a); /* untouched */
	m = mkmsg(5);
	assert_int_equal(quay_queue_send(q, m), -EPIPE);
	assert_int_equal(quay_msg_refcount(m), 1); /* still the caller's */
	b[0] = m;
	b[1] = mkmsg(6);
	assert_int_equal(quay_queue_send_batch(q, b, 2, res), -EPIPE);
	assert_int_equal(res[0], 7); /* nothing sent */
	quay_msg_unref(b[1]);
	assert_int_equal(quay_queue_redrive(dlq, q, 1, &moved), -EPIPE);
	assert_int_equal(stats(dlq).ready, 1);
	/* The leases out still work. */
	assert_int_equal(quay_queue_extend(q, &l1, 5000 * MS), 0);
	assert_int_equal(quay_queue_ack(q, &l1), 0);
	assert_int_equal(quay_queue_ack(q, &l1), -ESTALE);
	assert_int_equal(quay_queue_nack(q, &l2, "x"), 0);
	/* An expired lease is handled as before (its message held). */
	qt_set_time(QT_T0 + 2000 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(quay_queue_ack(q, &l3), -ESTALE);
	assert_int_equal(stats(q).in_flight, 0);
	assert_int_equal(stats(q).acked, 1);
	check_conservation(q);
	/* Redrive out of a closed queue still works (into an open one). */
	assert_int_equal(quay_queue_redrive(q, dlq, 8, &moved), 0);
	assert_int_equal(moved, 2); /* 4 and 2; 3 is in its backoff */
	done(&l1);
	done(&l2);
	done(&l3);
	quay_msg_unref(m);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* quay_queue_closed: false for NULL and an open queue (empty, or with
 * messages ready and leased), true once closed, with messages still
 * ready; it takes nothing (the worker loop's question after a batch
 * returned 0). */
static void
closed_is_a_predicate(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_lease l, b[4];
	struct quay_queue_stats s;

	(void)state;
	assert_false(quay_queue_closed(NULL));
	q = mkq(&o);
	assert_false(quay_queue_closed(q));
	/* Open and empty: a batch times out (0) and the queue is open. */
	assert_int_equal(quay_queue_receive_batch(q, b, 4, 0), 0);
	assert_false(quay_queue_closed(q));
	send_v(q, 1);
	send_v(q, 2);
	send_v(q, 3);
	assert_int_equal(recv_v(q, &l), 1);
	assert_false(quay_queue_closed(q));
	assert_int_equal(quay_queue_close(q), 0);
	for (int i = 0; i < 3; i++)
		assert_true(quay_queue_closed(q));
	/* Closed with 2 ready and one lease out: nothing was taken. */
	s = stats(q);
	assert_int_equal(s.ready, 2);
	assert_int_equal(s.in_flight, 1);
	assert_int_equal(s.received, 1);
	/* The loop: the batch says 0, the predicate says why. */
	assert_int_equal(quay_queue_receive_batch(q, b, 4, 0), 0);
	assert_true(quay_queue_closed(q));
	assert_int_equal(stats(q).ready, 2);
	ack_v(q, &l);
	assert_true(quay_queue_closed(q));
	quay_queue_destroy(q);
}

/* ---- issue 11: release -------------------------------------------- */

/* A released message is ready again at once, with the same attempt
 * number next time; max_attempts counts only real failures. */
static void
release_hands_back_without_attempt(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q, *dlq;
	quay_lease l, l2, bogus;
	struct quay_queue_stats s;

	(void)state;
	o.name = "dlq";
	dlq = mkq(&o);
	o = fake_opts();
	o.max_attempts = 2;
	o.dlq = dlq;
	q = mkq(&o);
	send_v(q, 1);
	send_v(q, 2);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 1);
	assert_int_equal(quay_queue_release(q, &l), 0);
	/* Ready at once (no tick, no clock move), at the tail of its level. */
	assert_int_equal(quay_msg_attempts(l.msg), 0);
	done(&l);
	assert_int_equal(recv_v(q, &l), 2);
	ack_v(q, &l);
	/* Released five times: still attempt 1 every time. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(recv_v(q, &l), 1);
		assert_int_equal(l.attempt, 1);
		assert_int_equal(quay_queue_release(q, &l), 0);
		/* The ended lease is stale for every call. */
		assert_int_equal(quay_queue_release(q, &l), -ESTALE);
		assert_int_equal(quay_queue_ack(q, &l), -ESTALE);
		done(&l);
	}
	/* Two real failures reach max_attempts 2 (a release in between). */
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_nack(q, &l, "x"), 0);
	done(&l);
	qt_set_time(QT_T0 + 200 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 2);
	assert_int_equal(quay_queue_release(q, &l), 0);
	done(&l);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(l.attempt, 2);
	assert_int_equal(quay_queue_nack(q, &l, "x"), 0);
	done(&l);
	s = stats(q);
	assert_int_equal(s.dead_lettered, 1);
	assert_int_equal(s.nacked, 2);
	assert_int_equal(s.received, 10);
	check_conservation(q);
	/* After the deadline the lease is stale. */
	send_v(q, 3);
	assert_int_equal(recv_v(q, &l), 3);
	qt_set_time(QT_T0 + 200 * MS + 1000 * MS);
	assert_int_equal(quay_queue_release(q, &l), -ESTALE);
	done(&l);
	/* Bad input: NULLs, a foreign lease, a never-issued one. */
	assert_int_equal(quay_queue_release(NULL, &l), -EINVAL);
	assert_int_equal(quay_queue_release(q, NULL), -EINVAL);
	send_v(dlq, 4);
	assert_int_equal(recv_v(dlq, &l2), 1); /* the dead letter */
	ack_v(dlq, &l2);
	assert_int_equal(recv_v(dlq, &l2), 4);
	assert_int_equal(quay_queue_release(q, &l2), -ENOENT);
	bogus = l2;
	bogus.queue = 0;
	assert_int_equal(quay_queue_release(dlq, &bogus), -ENOENT);
	bogus = l2;
	bogus.gen = 0;
	assert_int_equal(quay_queue_release(dlq, &bogus), -ENOENT);
	bogus = l2;
	bogus.gen += 5;
	assert_int_equal(quay_queue_release(dlq, &bogus), -ENOENT);
	bogus = l2;
	bogus.slot = UINT32_MAX;
	assert_int_equal(quay_queue_release(dlq, &bogus), -ENOENT);
	/* On a closed queue: the lease still releases, the message stays. */
	assert_int_equal(quay_queue_close(dlq), 0);
	assert_int_equal(quay_queue_release(dlq, &l2), 0);
	done(&l2);
	assert_int_equal(stats(dlq).ready, 1);
	check_conservation(dlq);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* ---- issue 11: attempts are per queue ------------------------------ */

/* A message acked in one queue on attempt 3 starts again at attempt 1
 * in the next (also a clone, which copies the count); a dead letter is
 * delivered by the DLQ from attempt 1, its old count in a header;
 * redrive resets it and drops the header. */
static void
attempts_are_per_queue(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *a, *b, *dlq;
	quay_lease l;
	quay_msg *m, *c = NULL;

	(void)state;
	o.name = "dlq";
	dlq = mkq(&o);
	o = fake_opts();
	o.max_attempts = 3;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	o.name = "a";
	o.dlq = dlq;
	a = mkq(&o);
	o.name = "b";
	b = mkq(&o);
	send_v(a, 7);
	for (int i = 1; i <= 2; i++) {
		assert_int_equal(recv_v(a, &l), 7);
		assert_int_equal(l.attempt, (uint32_t)i);
		assert_int_equal(quay_queue_nack(a, &l, "x"), 0);
		done(&l);
	}
	assert_int_equal(recv_v(a, &l), 7);
	assert_int_equal(l.attempt, 3);
	m = l.msg; /* the caller's reference */
	assert_int_equal(quay_queue_ack(a, &l), 0);
	assert_int_equal(quay_msg_attempts(m), 3);
	assert_int_equal(quay_msg_clone(pool, m, &c), 0);
	assert_int_equal(quay_msg_attempts(c), 3); /* clone copies the count */
	assert_int_equal(quay_queue_send(b, m), 0);
	assert_int_equal(quay_queue_send(b, c), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(recv_v(b, &l), 7);
		assert_int_equal(l.attempt, 1); /* was 4 */
		assert_int_equal(quay_msg_attempts(l.msg), 1);
		if (i == 0) {
			ack_v(b, &l);
			continue;
		}
		/* This one fails max_attempts 3 times in b: exactly 3 deliveries. */
		assert_int_equal(quay_queue_nack(b, &l, "x"), 0);
		done(&l);
		for (int k = 2; k <= 3; k++) {
			assert_int_equal(recv_v(b, &l), 7);
			assert_int_equal(l.attempt, (uint32_t)k);
			assert_int_equal(quay_queue_nack(b, &l, "x"), 0);
			done(&l);
		}
		assert_int_equal(recv_v(b, &l), UINT64_MAX);
	}
	assert_int_equal(stats(b).dead_lettered, 1);
	/* The DLQ delivers it from attempt 1, the old count in a header. */
	assert_int_equal(recv_v(dlq, &l), 7);
	assert_int_equal(l.attempt, 1);
	header_is(l.msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, "3");
	header_is(l.msg, QUAY_MSG_H_DLQ_SOURCE, "b");
	assert_int_equal(quay_queue_release(dlq, &l), 0);
	done(&l);
	/* Redrive: attempts 0, the header gone. */
	assert_int_equal(quay_queue_redrive(dlq, a, 1, NULL), 0);
	assert_int_equal(recv_v(a, &l), 7);
	assert_int_equal(l.attempt, 1);
	{
		const void *v;
		size_t vl;

		assert_int_equal(quay_msg_get_header(l.msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, &v, &vl), -ENOENT);
	}
	ack_v(a, &l);
	check_conservation(a);
	check_conservation(b);
	check_conservation(dlq);
	quay_queue_destroy(a);
	quay_queue_destroy(b);
	quay_queue_destroy(dlq);
}

/* ---- issue 11: a long poll with every lease slot taken waits ------- */

/* max_in_flight 1, the slot taken: a receive with a long wait must not
 * return -EAGAIN at once; proven asleep, it gets the message once the
 * slot frees (ack; then a lease expiry on the fake clock), and wakes
 * with -EPIPE on close. With wait 0 it is still -EAGAIN at once, and a
 * short wait ends with -EAGAIN (the slot stayed taken). */
static void
long_poll_waits_for_a_slot(void **state)
{
	struct quay_queue_opts o = fake_opts();
	struct waiter w = { NULL, -1, 0, 0 };
	quay_queue *q;
	quay_lease l, lx;
	pthread_t t;

	(void)state;
	o.max_in_flight = 1;
	o.flags |= QUAY_QUEUE_NO_BACKOFF;
	q = mkq(&o);
	w.q = q;
	send_v(q, 1);
	send_v(q, 2);
	send_v(q, 3);
	assert_int_equal(recv_v(q, &l), 1);
	assert_int_equal(quay_queue_receive(q, &lx, 0), -EAGAIN);
	assert_int_equal(quay_queue_receive(q, &lx, 20 * MS), -EAGAIN);
	/* 1: an ack frees the slot. */
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	if (!qt_await_futex_sleep(w.tid, 5000)) {
		/* The old code returned -EAGAIN at once: say so. */
		assert_true(qt_join_within(t, 10000));
		fail_msg("the receiver did not sleep: it returned %d", w.rc);
	}
	ack_v(q, &l);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, 0); /* it acked what it got */
	assert_int_equal(w.v, 2);
	/* 2: an expiry frees it (fake clock + tick). */
	assert_int_equal(recv_v(q, &l), 3);
	send_v(q, 4);
	w.tid = 0;
	w.rc = -1;
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w.tid, 5000));
	qt_set_time(QT_T0 + 1000 * MS);
	assert_int_equal(quay_queue_tick(q), 0);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, 0);
	assert_true(w.v == 4 || w.v == 3); /* 3 came back ready, after 4 */
	assert_int_equal(quay_queue_ack(q, &l), -ESTALE);
	done(&l);
	/* 3: close wakes a receiver waiting for a slot. */
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	w.tid = 0;
	w.rc = -1;
	assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
	while (__atomic_load_n(&w.tid, __ATOMIC_SEQ_CST) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(w.tid, 5000));
	assert_int_equal(quay_queue_close(q), 0);
	assert_true(qt_join_within(t, 10000));
	assert_int_equal(w.rc, -EPIPE);
	ack_v(q, &l);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* ---- issue 11: a duplicate is told apart from a send --------------- */

static void
duplicate_send_is_told(void **state)
{
	struct quay_queue_opts o = fake_opts();
	quay_queue *q;
	quay_msg *b[3];
	int res[3] = { -99, -99, -99 };
	quay_lease l;

	(void)state;
	o.dedup_window_ns = 1000 * MS;
	q = mkq(&o);
	assert_int_equal(quay_queue_send(q, mkdedup(1, "x")), 0);
	assert_int_equal(quay_queue_send(q, mkdedup(2, "x")), QUAY_QUEUE_DUPLICATE);
	b[0] = mkdedup(3, "y");
	b[1] = mkdedup(4, "x");
	b[2] = mkdedup(5, "y");
	assert_int_equal(quay_queue_send_batch(q, b, 3, res), 3); /* 3 references taken */
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], QUAY_QUEUE_DUPLICATE);
	assert_int_equal(res[2], QUAY_QUEUE_DUPLICATE);
	assert_int_equal(stats(q).sent, 2);
	assert_int_equal(stats(q).deduplicated, 3);
	assert_int_equal(recv_v(q, &l), 1);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), 3);
	ack_v(q, &l);
	assert_int_equal(recv_v(q, &l), UINT64_MAX);
	check_conservation(q);
	quay_queue_destroy(q);
}

/* Exits are counted in per-thread cells (one per stats slot, one shared
 * by the threads past them): exits made by many threads alive at once,
 * so that some have stats slots past the owned cells, all give their
 * room back, and the bound stays exact after. */
#define HOUT_THREADS 16

static quay_queue *hout_q;
static pthread_barrier_t hout_bar;

static void *
hout_thread(void *arg)
{
	quay_lease l;
	int *rc = arg;

	pthread_barrier_wait(&hout_bar);
	*rc = quay_queue_receive(hout_q, &l, 0);
	if (*rc == 0) {
		*rc = quay_queue_ack(hout_q, &l);
		quay_msg_unref(l.msg);
	}
	/* Stay alive (and keep the stats slot) until every thread acked. */
	pthread_barrier_wait(&hout_bar);
	return NULL;
}

static void
exits_from_many_threads_give_room_back(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	pthread_t t[HOUT_THREADS];
	int rc[HOUT_THREADS];
	quay_msg *m;

	(void)state;
	o.capacity = HOUT_THREADS;
	hout_q = mkq(&o);
	for (int round = 0; round < 3; round++) {
		for (uint64_t i = 0; i < HOUT_THREADS; i++)
			assert_int_equal(quay_queue_send(hout_q, mkmsg(i)), 0);
		m = mkmsg(99);
		assert_int_equal(quay_queue_send(hout_q, m), -EAGAIN); /* full */
		assert_int_equal(quay_msg_unref(m), 0);
		assert_int_equal(pthread_barrier_init(&hout_bar, NULL, HOUT_THREADS), 0);
		for (int i = 0; i < HOUT_THREADS; i++)
			assert_int_equal(pthread_create(&t[i], NULL, hout_thread, &rc[i]), 0);
		for (int i = 0; i < HOUT_THREADS; i++) {
			assert_int_equal(pthread_join(t[i], NULL), 0);
			assert_int_equal(rc[i], 0);
		}
		pthread_barrier_destroy(&hout_bar);
	}
	quay_queue_destroy(hout_q);
}

/* Exits from 4 threads at once (each cell of the exit count has one
 * writer: two writers on a cell lose exits); afterwards exactly capacity
 * sends fit again (a lost exit leaves the queue short for good). */
static quay_queue *exits_q;
static void *
exits_thread(void *arg)
{
	(void)arg;
	for (int i = 0; i < 100000; i++) {
		quay_lease l;
		quay_msg *m = mkmsg((uint64_t)i);
		if (quay_queue_send(exits_q, m) != 0) {
			quay_msg_unref(m);
			continue;
		}
		if (quay_queue_receive(exits_q, &l, 0) == 0) {
			quay_queue_ack(exits_q, &l);
			quay_msg_unref(l.msg);
		}
	}
	return NULL;
}

static void
concurrent_exits_give_every_slot_back(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	pthread_t t[4];
	quay_lease l;
	int ok = 0;

	(void)state;
	o.capacity = 64;
	exits_q = mkq(&o);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, exits_thread, NULL), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	while (quay_queue_receive(exits_q, &l, 0) == 0) {
		quay_queue_ack(exits_q, &l);
		quay_msg_unref(l.msg);
	}
	for (int i = 0; i < 65; i++) {
		quay_msg *m = mkmsg((uint64_t)i);
		if (quay_queue_send(exits_q, m) == 0)
			ok++;
		else
			quay_msg_unref(m);
	}
	assert_int_equal(ok, 64);
	quay_queue_destroy(exits_q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(create_rejects_bad_options, setup, teardown),
		cmocka_unit_test_setup_teardown(create_defaults_and_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(create_same_name_in_registry_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(calls_reject_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(send_receive_ack, setup, teardown),
		cmocka_unit_test_setup_teardown(receive_empty_and_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(priority_then_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(capacity_and_in_flight_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_calls, setup, teardown),
		cmocka_unit_test_setup_teardown(lease_expiry_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(fence_on_reused_slot, setup, teardown),
		cmocka_unit_test_setup_teardown(ack_before_deadline_deletes, setup, teardown),
		cmocka_unit_test_setup_teardown(extend_moves_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(nack_backoff_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(jitter_is_seeded_and_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(max_attempts_dead_letter_then_redrive, setup, teardown),
		cmocka_unit_test_setup_teardown(lease_expiry_counts_towards_max, setup, teardown),
		cmocka_unit_test_setup_teardown(default_max_attempts_is_ten, setup, teardown),
		cmocka_unit_test_setup_teardown(shared_message_is_copied_for_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(full_dlq_keeps_message_until_room, setup, teardown),
		cmocka_unit_test_setup_teardown(redrive_stops_when_target_full, setup, teardown),
		cmocka_unit_test_setup_teardown(failure_hook_decides, setup, teardown),
		cmocka_unit_test_setup_teardown(delayed_message_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(default_delay_applies, setup, teardown),
		cmocka_unit_test_setup_teardown(due_order_is_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(long_delays_do_not_drift, setup, teardown),
		cmocka_unit_test_setup_teardown(ttl_dead_letters_never_delivers, setup, teardown),
		cmocka_unit_test_setup_teardown(dedup_window, setup, teardown),
		cmocka_unit_test_setup_teardown(browse_visits_without_leasing, setup, teardown),
		cmocka_unit_test_setup_teardown(restore_is_not_a_send, setup, teardown),
		cmocka_unit_test_setup_teardown(blocking_receive_wakes_on_send_and_due, setup, teardown),
		cmocka_unit_test_setup_teardown(real_clock_delay_wakes_receiver, setup, teardown),
		cmocka_unit_test_setup_teardown(sleeping_receiver_wakes_for_later_delayed, setup, teardown),
		cmocka_unit_test_setup_teardown(sleeping_receiver_wakes_for_later_delayed_fake, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(extend_concurrent_with_timer, setup, teardown),
		cmocka_unit_test_setup_teardown(redrive_into_full_target_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(dead_letter_hook_runs_once_when_dlq_full, setup, teardown),
		cmocka_unit_test_setup_teardown(huge_times_saturate, setup, teardown),
		cmocka_unit_test_setup_teardown(oldest_age_covers_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(dedup_capacity_is_available, setup, teardown),
		cmocka_unit_test_setup_teardown(lease_deadline_after_ttl_dead_letters, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_lease_deadlines_after_slow_work, setup, teardown),
		cmocka_unit_test_setup_teardown(batch_whose_leases_expired_receives_again, setup, teardown),
		cmocka_unit_test_setup_teardown(lease_deadline_after_timer_work, setup, teardown),
		cmocka_unit_test_setup_teardown(foreign_lease_is_enoent, setup, teardown),
		cmocka_unit_test_setup_teardown(close_wakes_sleeping_receivers, setup, teardown),
		cmocka_unit_test_setup_teardown(close_refuses_new_work_keeps_leases, setup, teardown),
		cmocka_unit_test_setup_teardown(closed_is_a_predicate, setup, teardown),
		cmocka_unit_test_setup_teardown(release_hands_back_without_attempt, setup, teardown),
		cmocka_unit_test_setup_teardown(attempts_are_per_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(long_poll_waits_for_a_slot, setup, teardown),
		cmocka_unit_test_setup_teardown(duplicate_send_is_told, setup, teardown),
		cmocka_unit_test_setup_teardown(exits_from_many_threads_give_room_back, setup, teardown),
		cmocka_unit_test_setup_teardown(concurrent_exits_give_every_slot_back, setup, teardown),
	};
	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
