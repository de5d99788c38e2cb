/* SPDX-License-Identifier: MIT */
/*
 * Review demonstration (NOT registered in meson: it fails until the bug
 * is fixed). A send whose dedup check passed, then a compaction of the
 * same WAL (another queue's, or dq_idle on another thread) before the
 * send's ADD is logged, then the ADD fails (-ENOMEM here; a WAL write
 * error does the same): the send returns the error and forgets its key
 * in memory, but the compaction already wrote the key as a DEDUP record.
 * After a restart the key is back: the producer's retry of the refused
 * send is taken as a duplicate (QUAY_QUEUE_DUPLICATE, "taken") and the
 * message is never enqueued.
 *
 * The race is made deterministic with the queue's allocator: dq_add
 * allocates its image buffer (> 2048 bytes) before it takes the WAL's
 * lock; the hook compacts through queue B there and then fails the
 * allocation.
 */
#include "quay_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/alloc.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../../src/queue_log.h"

#define MS ((int64_t)1000000)
#define BODY 3000

static quay_queue *qb;
static int armed, compacted;

static void *
h_alloc(void *ctx, size_t size, size_t align)
{
	(void)ctx;
	if (armed && size > 2048 && size < BODY + 200) { /* dq_add's image buffer */
		armed = 0;
#ifndef NOCOMPACT
		compacted = quayi_queue_compact(qb) == 0;
#else
		compacted = 1;
#endif
		return NULL;
	}
	return aligned_alloc(align, (size + align - 1) / align * align);
}

static void
h_free(void *ctx, void *p, size_t size, size_t align)
{
	(void)ctx;
	(void)size;
	(void)align;
	free(p);
}

static const struct quay_allocator hook = { h_alloc, h_free, NULL, NULL };

static int
send_d(quay_queue *q, quay_pool *pool, const char *id, const char *body)
{
	quay_msg *m = NULL;
	int rc;

	assert_int_equal(quay_msg_new_ex(pool, body, strlen(body), QUAY_MSG_HEADER_ROOM(1, 64), 0, &m), 0);
	assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, strlen(id)), 0);
	rc = quay_queue_send(q, m);
	if (rc < 0)
		quay_msg_unref(m);
	return rc;
}

static void
refused_send_key_not_resurrected(void **state)
{
	char dir[] = "/tmp/quay-review-XXXXXX";
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts oa = QUAY_QUEUE_OPTS_INIT, ob = QUAY_QUEUE_OPTS_INIT;
	quay_wal *wal;
	quay_pool *pool;
	quay_queue *qa;
	static char body[BODY + 1];

	(void)state;
	memset(body, 'b', BODY);
	qt_set_time(QT_T0);
	assert_non_null(mkdtemp(dir));
	wo.sync_mode = QUAY_WAL_NONE;
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	assert_int_equal(quay_pool_create((size_t)16 << 20, NULL, &pool), 0);
	oa.name = "a";
	oa.clock = qt_fake_clock;
	oa.wal = wal;
	oa.pool = pool;
	oa.dedup_window_ns = 10000 * MS;
	oa.allocator = &hook;
	ob.name = "b";
	ob.clock = qt_fake_clock;
	ob.wal = wal;
	ob.pool = pool;
	assert_int_equal(quay_queue_create(&oa, &qa), 0);
	assert_int_equal(quay_queue_create(&ob, &qb), 0);
	armed = 1;
	assert_int_equal(send_d(qa, pool, "x", body), -ENOMEM); /* refused: nothing enqueued */
	assert_true(compacted);
	/* In memory the key was given back: a retry now would be accepted. */
	/* A restart (no further compaction). */
	quay_queue_destroy(qa);
	quay_queue_destroy(qb);
	assert_int_equal(quay_wal_close(wal), 0);
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	oa.wal = wal;
	oa.allocator = NULL;
	assert_int_equal(quay_queue_create(&oa, &qa), 0);
	/* The producer retries the send that was refused. */
	assert_int_equal(send_d(qa, pool, "x", body), 0); /* fails: QUAY_QUEUE_DUPLICATE */
	quay_queue_destroy(qa);
	assert_int_equal(quay_wal_close(wal), 0);
	assert_int_equal(quay_pool_destroy(pool), 0);
	qt_rm_dir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(refused_send_key_not_resurrected),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
