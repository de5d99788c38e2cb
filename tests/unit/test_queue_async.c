/* SPDX-License-Identifier: MIT */
/*
 * Pipelined durable sends (quay_queue_send_async): one completion per
 * accepted send with the right code, in order, never receivable before
 * its completion, the in-flight bound, bad input, WAL failure (fdatasync
 * EIO injected through the WAL's I/O table: every send in flight gets
 * -EIO and its reference back), destroy draining, and recovery of the
 * completed sends after a reopen.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../test_util.h"
#include "../../src/wal_internal.h"

static quay_pool *pool;
static char dir[256];
static quay_wal *wal;

static int fail_sync;

static int
io_datasync(void *ctx, int fd)
{
	if (__atomic_load_n(&fail_sync, __ATOMIC_SEQ_CST))
		return -EIO;
	return quayi_wal_io_posix.datasync(ctx, fd);
}

static void
wal_open(unsigned mode)
{
	static struct quayi_wal_io io; /* the WAL keeps the pointer */
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;

	io = quayi_wal_io_posix;
	io.datasync = io_datasync;
	o.sync_mode = mode;
	assert_int_equal(quayi_wal_open_io(dir, &o, &io, NULL, &wal), 0);
}

static int
setup(void **state)
{
	(void)state;
	__atomic_store_n(&fail_sync, 0, __ATOMIC_SEQ_CST);
	snprintf(dir, sizeof(dir), "/tmp/quay-async-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	wal_open(QUAY_WAL_SYNC);
	return quay_pool_create((size_t)16 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	if (wal != NULL)
		(void)quay_wal_close(wal);
	wal = NULL;
	qt_rm_dir(dir);
	return quay_pool_destroy(pool);
}

static quay_queue *
mkq(quay_wal *w, size_t capacity)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;

	o.name = "a";
	o.capacity = capacity;
	o.wal = w;
	o.pool = w != NULL ? pool : NULL;
	assert_int_equal(quay_queue_create(&o, &q), 0);
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

/* What the callbacks saw. */
#define N 600
static struct {
	quay_queue *q;
	int calls[N];
	int rc[N];
	uint64_t order[N];
	size_t n;
	int visible_early; /* a message was receivable at its own callback */
	int bad;           /* a callback with the wrong message */
	quay_msg *back[N]; /* references handed back on failure */
} seen;

static void
on_sent(void *arg, quay_msg *msg, int rc)
{
	uint64_t v = (uintptr_t)arg;
	struct quay_queue_stats st;

	/* No cmocka assertion here: this runs on the completion thread. */
	if (v >= N || val(msg) != v) {
		seen.bad++;
		return;
	}
	seen.calls[v]++;
	seen.rc[v] = rc;
	seen.order[seen.n++] = v;
	if (rc != 0) {
		seen.back[v] = msg;
		return;
	}
	/* Not receivable before its completion: the sends completed
	 * before it are ready (nobody receives meanwhile), it is not. */
	if (seen.q != NULL) {
		if (quay_queue_stats(seen.q, &st) != 0 || st.ready != seen.n - 1)
			seen.visible_early = 1;
	}
}

static void
reset_seen(quay_queue *q)
{
	memset(&seen, 0, sizeof(seen));
	seen.q = q;
}

static void
async_completes_once_in_order(void **state)
{
	quay_queue *q = mkq(wal, 1024);
	uint64_t t = 0, prev = 0;
	quay_lease l;

	(void)state;
	reset_seen(q);
	for (uint64_t i = 0; i < N; i++) {
		assert_int_equal(quay_queue_send_async(q, mkmsg(i), on_sent, (void *)(uintptr_t)i, &t), 0);
		assert_true(t > prev);
		prev = t;
	}
	assert_int_equal(quay_queue_send_wait(q, t), 0);
	assert_true(quay_queue_send_done(q, t));
	assert_int_equal(seen.n, N);
	for (uint64_t i = 0; i < N; i++) {
		assert_int_equal(seen.calls[i], 1);
		assert_int_equal(seen.rc[i], 0);
		assert_int_equal(seen.order[i], i);
	}
	assert_int_equal(seen.visible_early, 0);
	assert_int_equal(seen.bad, 0);
	/* Durable: the WAL synced every record. */
	{
		struct quay_wal_info wi;

		assert_int_equal(quay_wal_info(wal, &wi), 0);
		assert_true(wi.durable_lsn >= wi.next_lsn - 1);
	}
	/* Received in send order, once each. */
	for (uint64_t i = 0; i < N; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(val(l.msg), i);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
	quay_queue_destroy(q);
}

static void
async_bad_input(void **state)
{
	quay_queue *q = mkq(wal, 8);
	quay_msg *m = mkmsg(1);
	uint64_t t;

	(void)state;
	assert_int_equal(quay_queue_send_async(NULL, m, NULL, NULL, NULL), -EINVAL);
	assert_int_equal(quay_queue_send_async(q, NULL, NULL, NULL, NULL), -EINVAL);
	assert_false(quay_queue_send_done(NULL, 1));
	assert_false(quay_queue_send_done(q, 0));
	assert_int_equal(quay_queue_send_wait(NULL, 0), -EINVAL);
	assert_int_equal(quay_queue_send_wait(q, 0), 0); /* nothing sent */
	assert_int_equal(quay_queue_send_wait(q, 5), -EINVAL);
	assert_int_equal(quay_queue_send_async(q, m, NULL, NULL, &t), 0);
	assert_int_equal(t, 1);
	assert_int_equal(quay_queue_send_wait(q, 2), -EINVAL); /* never given */
	assert_int_equal(quay_queue_send_wait(q, 1), 0);
	assert_true(quay_queue_send_done(q, 1));
	assert_false(quay_queue_send_done(q, 2));
	/* Full queue: -EAGAIN at once, no callback, reference kept. */
	for (uint64_t i = 0; i < 7; i++)
		assert_int_equal(quay_queue_send_async(q, mkmsg(i), NULL, NULL, NULL), 0);
	m = mkmsg(9);
	assert_int_equal(quay_queue_send_async(q, m, on_sent, (void *)(uintptr_t)9, NULL), -EAGAIN);
	assert_int_equal(quay_msg_refcount(m), 1);
	/* Closed: -EPIPE. */
	assert_int_equal(quay_queue_send_wait(q, 0), 0);
	assert_int_equal(quay_queue_close(q), 0);
	assert_int_equal(quay_queue_send_async(q, m, NULL, NULL, NULL), -EPIPE);
	quay_msg_unref(m);
	quay_queue_destroy(q);
}

/* The bound: with the completion thread held up in a callback, the
 * QUAY_QUEUE_ASYNC_MAX+1-th send in flight is refused with -EBUSY. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_entered;

static void
on_gate(void *arg, quay_msg *msg, int rc)
{
	(void)arg;
	(void)msg;
	(void)rc;
	pthread_mutex_lock(&gate_mu);
	gate_entered = 1;
	pthread_cond_broadcast(&gate_cv);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
}

static int wait_rc;

static void
on_wait_inside(void *arg, quay_msg *msg, int rc)
{
	(void)msg;
	(void)rc;
	wait_rc = quay_queue_send_wait(arg, 0);
}

static void
async_bound(void **state)
{
	quay_queue *q = mkq(NULL, QUAY_QUEUE_ASYNC_MAX + 16); /* in memory: fast */
	quay_msg *m;
	uint64_t t;

	(void)state;
	gate_open = gate_entered = 0;
	assert_int_equal(quay_queue_send_async(q, mkmsg(0), on_gate, NULL, NULL), 0);
	pthread_mutex_lock(&gate_mu);
	while (!gate_entered)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
	/* One in flight (in its callback): MAX - 1 more fit. */
	for (uint64_t i = 1; i < QUAY_QUEUE_ASYNC_MAX; i++)
		assert_int_equal(quay_queue_send_async(q, mkmsg(i), NULL, NULL, NULL), 0);
	m = mkmsg(99);
	assert_int_equal(quay_queue_send_async(q, m, NULL, NULL, NULL), -EBUSY);
	assert_int_equal(quay_msg_refcount(m), 1);
	assert_false(quay_queue_send_done(q, 1));
	pthread_mutex_lock(&gate_mu);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	assert_int_equal(quay_queue_send_wait(q, 0), 0);
	/* Room again; a wait from a callback is refused. */
	assert_int_equal(quay_queue_send_async(q, m, on_wait_inside, q, &t), 0);
	assert_int_equal(quay_queue_send_wait(q, t), 0);
	assert_int_equal(wait_rc, -EDEADLK);
	quay_queue_destroy(q);
}

/* fdatasync fails: every send in flight completes with -EIO, once, and
 * gets its reference back with the message as it was; none is
 * receivable; later sends fail at once. */
static void
async_wal_failure(void **state)
{
	quay_queue *q = mkq(wal, 1024);
	quay_lease l;
	uint64_t t = 0;

	(void)state;
	reset_seen(q);
	__atomic_store_n(&fail_sync, 1, __ATOMIC_SEQ_CST);
	for (uint64_t i = 0; i < 100; i++) {
		quay_msg *m = mkmsg(i);
		int rc = quay_queue_send_async(q, m, on_sent, (void *)(uintptr_t)i, &t);

		/* Accepted until the WAL has failed, then refused at once (the
		 * caller keeps a refused message). */
		if (rc != 0) {
			assert_int_equal(rc, -EIO);
			quay_msg_unref(m);
			break;
		}
	}
	assert_int_equal(quay_queue_send_wait(q, 0), 0);
	assert_true(seen.n >= 1);
	for (size_t k = 0; k < seen.n; k++) {
		uint64_t v = seen.order[k];

		assert_int_equal(v, k);
		assert_int_equal(seen.calls[v], 1);
		assert_int_equal(seen.rc[v], -EIO);
		assert_non_null(seen.back[v]);
		assert_int_equal(quay_msg_refcount(seen.back[v]), 1);
		assert_int_equal(quay_msg_enqueued_ns(seen.back[v]), 0);
		quay_msg_unref(seen.back[v]);
	}
	assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
	{
		quay_msg *m = mkmsg(7);

		assert_int_equal(quay_queue_send_async(q, m, on_sent, NULL, NULL), -EIO);
		quay_msg_unref(m);
	}
	quay_queue_destroy(q);
	__atomic_store_n(&fail_sync, 0, __ATOMIC_SEQ_CST);
	(void)quay_wal_close(wal); /* -EIO: it had failed */
	wal = NULL;
}

/* destroy with sends in flight: each completes (callbacks before destroy
 * returns); after a reopen every send that completed with 0 is back. */
static void
async_destroy_drains_and_recovers(void **state)
{
	quay_queue *q = mkq(wal, 1024);
	quay_lease l;
	size_t got = 0;
	int have[N] = { 0 };

	(void)state;
	reset_seen(NULL);
	for (uint64_t i = 0; i < 300; i++)
		assert_int_equal(quay_queue_send_async(q, mkmsg(i), on_sent, (void *)(uintptr_t)i, NULL), 0);
	quay_queue_destroy(q);
	assert_int_equal(seen.n, 300);
	for (uint64_t i = 0; i < 300; i++)
		assert_int_equal(seen.rc[i], 0);
	assert_int_equal(quay_wal_close(wal), 0);
	wal_open(QUAY_WAL_SYNC);
	q = mkq(wal, 1024);
	while (quay_queue_receive(q, &l, 0) == 0) {
		uint64_t v = val(l.msg);

		assert_true(v < 300);
		assert_int_equal(have[v]++, 0);
		got++;
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(got, 300);
	quay_queue_destroy(q);
}

/* NONE and INTERVAL modes, and a queue in memory, complete too. */
static void
async_other_modes(void **state)
{
	unsigned modes[] = { QUAY_WAL_NONE, QUAY_WAL_INTERVAL };

	(void)state;
	for (size_t k = 0; k < 3; k++) {
		quay_queue *q;
		quay_lease l;

		if (k < 2) {
			assert_int_equal(quay_wal_close(wal), 0);
			wal_open(modes[k]);
			q = mkq(wal, 64);
		} else {
			q = mkq(NULL, 64);
		}
		reset_seen(NULL);
		for (uint64_t i = 0; i < 50; i++)
			assert_int_equal(quay_queue_send_async(q, mkmsg(i), on_sent, (void *)(uintptr_t)i,
			                     NULL),
			    0);
		assert_int_equal(quay_queue_send_wait(q, 0), 0);
		assert_int_equal(seen.n, 50);
		for (uint64_t i = 0; i < 50; i++) {
			assert_int_equal(seen.rc[i], 0);
			assert_int_equal(quay_queue_receive(q, &l, 0), 0);
			assert_int_equal(val(l.msg), i);
			assert_int_equal(quay_queue_ack(q, &l), 0);
			quay_msg_unref(l.msg);
		}
		quay_queue_destroy(q);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(async_completes_once_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(async_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(async_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(async_wal_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(async_destroy_drains_and_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(async_other_modes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
