/* SPDX-License-Identifier: MIT */
/*
 * Review demonstration (NOT registered in meson: it fails until fixed).
 * docs/DURABILITY.md ("Content dedup without the body") and the header
 * of src/queue_cdedup.c say that after a restart a content key keeps its
 * message when the message came back with the queue, so a key hit on it
 * is still confirmed by comparing bodies. That holds only while the
 * send's ADD record is still in the log. Once a compaction has deleted
 * the segment of that ADD, the key comes back from the DEDUP record
 * alone (did 0, no message) and the live message comes back from its
 * compaction copy (origin 3, never seeded): the key is hash-only, and a
 * different body with the same key is refused as a duplicate.
 * Collisions are forced with src/queue_cdedup.c's test hook for two
 * bodies only (the filler traffic keeps real keys).
 */
#include "quay_test.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../../src/queue_log.h"

#define MS ((int64_t)1000000)

extern void (*quayi_cdedup_test_key)(const quay_msg *msg, uint64_t *h1, uint64_t *h2);

static void
key_one_two(const quay_msg *msg, uint64_t *h1, uint64_t *h2)
{
	size_t n = quay_msg_body_len(msg);
	XXH128_hash_t h;

	if (n == 3 &&
	    (memcmp(quay_msg_body(msg), "one", 3) == 0 || memcmp(quay_msg_body(msg), "two", 3) == 0)) {
		*h1 = 42;
		*h2 = 43;
		return;
	}
	h = XXH3_128bits(quay_msg_body(msg), n);
	*h1 = h.low64;
	*h2 = h.high64;
}

static int
send_b(quay_queue *q, quay_pool *pool, const char *body)
{
	quay_msg *m = NULL;
	int rc;

	assert_int_equal(quay_msg_new(pool, body, strlen(body), &m), 0);
	rc = quay_queue_send(q, m);
	if (rc < 0)
		quay_msg_unref(m);
	return rc;
}

static void
live_message_compared_after_compaction(void **state)
{
	char dir[] = "/dev/shm/quay-review-XXXXXX";
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT, fo;
	quay_wal *wal;
	quay_pool *pool;
	quay_queue *q, *f;
	quay_lease l;
	char body[512];

	(void)state;
	qt_set_time(QT_T0);
	quayi_cdedup_test_key = key_one_two;
	assert_non_null(mkdtemp(dir));
	wo.sync_mode = QUAY_WAL_NONE;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	assert_int_equal(quay_pool_create((size_t)16 << 20, NULL, &pool), 0);
	o.name = "cd";
	o.clock = qt_fake_clock;
	o.wal = wal;
	o.pool = pool;
	o.dedup_window_ns = 10000 * MS;
	o.flags = QUAY_QUEUE_CONTENT_DEDUP;
	o.compact_bytes = (uint64_t)1 << 40;
	fo = o;
	fo.name = "filler";
	fo.flags = 0;
	fo.dedup_window_ns = 0;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	assert_int_equal(quay_queue_create(&fo, &f), 0);
	assert_int_equal(send_b(q, pool, "one"), 0); /* stays in the queue */
	memset(body, 'p', sizeof(body) - 1);
	body[sizeof(body) - 1] = '\0';
	for (int i = 0; i < 600; i++) { /* several 64 KiB segments */
		assert_int_equal(send_b(f, pool, body), 0);
		assert_int_equal(quay_queue_receive(f, &l, 0), 0);
		assert_int_equal(quay_queue_ack(f, &l), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(quayi_queue_compact(q), 0); /* deletes the segment of "one"'s ADD */
	quay_queue_destroy(q);
	quay_queue_destroy(f);
	assert_int_equal(quay_wal_close(wal), 0);
	assert_int_equal(quay_wal_open(dir, &wo, &wal), 0);
	o.wal = wal;
	fo.wal = wal;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	assert_int_equal(quay_queue_create(&fo, &f), 0);
	/* "one" came back with the queue: per the docs the bodies are compared. */
	assert_int_equal(send_b(q, pool, "one"), QUAY_QUEUE_DUPLICATE);
	assert_int_equal(send_b(q, pool, "two"), 0); /* fails: QUAY_QUEUE_DUPLICATE */
	quayi_cdedup_test_key = NULL;
	quay_queue_destroy(q);
	quay_queue_destroy(f);
	assert_int_equal(quay_wal_close(wal), 0);
	assert_int_equal(quay_pool_destroy(pool), 0);
	qt_rm_dir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(live_message_compared_after_compaction),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
