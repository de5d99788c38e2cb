/* SPDX-License-Identifier: MIT */
/*
 * Durable routing (issue 12, docs/ROUTING.md): the bound queues of one
 * publish that log to the same WAL take the message with one write, all
 * of them or none (src/queue_route.c). The WAL runs on wal_memfs.h so
 * that its fdatasync or its writes fail on demand: a refused publish is
 * in none of the queues of that WAL (after a crash too), their dedup
 * ids are forgotten and their counters and the binding's say so.
 */
#include "quay_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/bus.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "../../src/queue_route.h"
#include "../../src/wal_internal.h"
#include "wal/wal_memfs.h"

#define RD_DIR "/memwal"
#define RD_MAX 4096u

static quay_pool *pool;

static int
setup(void **state)
{
	(void)state;
	return quay_pool_create((size_t)16 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(pool);
}

static quay_wal *
rd_wal(struct memfs *fs, unsigned mode)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	quay_wal *w = NULL;

	wo.sync_mode = mode;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	assert_int_equal(quayi_wal_open_io(RD_DIR, &wo, &memfs_io, fs, &w), 0);
	return w;
}

static quay_queue *
rd_queue(quay_wal *w, const char *name, size_t capacity)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;

	o.name = name;
	o.capacity = capacity;
	o.wal = w;
	o.pool = w != NULL ? pool : NULL; /* a pool only with a WAL */
	o.dedup_window_ns = (int64_t)3600 * 1000000000;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	return q;
}

/* Message v: body its 8 bytes, dedup id "id-v". */
static quay_msg *
rd_msg(uint64_t v)
{
	quay_msg *m = NULL;
	char id[32];

	assert_int_equal(quay_msg_new_ex(pool, &v, sizeof(v), 64, 0, &m), 0);
	snprintf(id, sizeof(id), "id-%llu", (unsigned long long)v);
	assert_int_equal(quay_msg_set_header_str(m, QUAY_MSG_H_DEDUP_ID, id), 0);
	return m;
}

static uint64_t
rd_ready(quay_queue *q)
{
	struct quay_queue_stats st;

	assert_int_equal(quay_queue_stats(q, &st), 0);
	return st.ready;
}

struct rd_seen {
	uint8_t n[RD_MAX];
	uint64_t found;
};

static int
rd_visit(void *ctx, const quay_msg *m, quay_queue_state st)
{
	struct rd_seen *s = ctx;
	uint64_t v;

	(void)st;
	assert_int_equal(quay_msg_body_len(m), sizeof(v));
	memcpy(&v, quay_msg_body(m), sizeof(v));
	assert_true(v < RD_MAX);
	s->n[v]++;
	s->found++;
	return 0;
}

/* Crash (drop what was not synced), recover the WAL and the two queues
 * and browse them into a and b. */
static void
rd_recover(struct memfs *fs, struct rd_seen *a, struct rd_seen *b)
{
	quay_wal *w;
	quay_queue *qa, *qb;

	memfs_crash(fs, MEMFS_DROP);
	memfs_revive(fs);
	pthread_mutex_lock(&fs->mu);
	fs->sync_fail_at = 0;
	fs->quota = 0;
	pthread_mutex_unlock(&fs->mu);
	memset(a, 0, sizeof(*a));
	memset(b, 0, sizeof(*b));
	w = rd_wal(fs, QUAY_WAL_SYNC);
	qa = rd_queue(w, "rd-a", RD_MAX);
	qb = rd_queue(w, "rd-b", RD_MAX);
	assert_int_equal(quay_queue_browse(qa, rd_visit, a), 0);
	assert_int_equal(quay_queue_browse(qb, rd_visit, b), 0);
	quay_queue_destroy(qa);
	quay_queue_destroy(qb);
	assert_int_equal(quay_wal_close(w), 0);
}

/* Two durable queues on one SYNC WAL and one in memory, all bound: one
 * publish costs one fdatasync (one write for both ADDs). Then fdatasync
 * fails: the publish reaches the queue in memory only; both durable
 * queues are as before (counts, stats), the binding counts a failure,
 * the dedup ids are forgotten (the same id again gets the WAL's error,
 * not "duplicate"), and after a crash neither durable queue has it. */
static void
sync_eio_refuses_in_every_queue_of_the_wal(void **state)
{
	struct memfs fs;
	struct quay_bus_pub_result res;
	struct quay_binding_counters bc;
	struct quay_queue_stats sa, sb, sm;
	struct rd_seen a, b;
	quay_wal *w;
	quay_queue *qa, *qb, *qm;
	quay_bus *bus;
	quay_binding *ba, *bb, *bm;
	quay_msg *m;
	long syncs;
	int rc;

	(void)state;
	memfs_init(&fs, 12);
	w = rd_wal(&fs, QUAY_WAL_SYNC);
	qa = rd_queue(w, "rd-a", RD_MAX);
	qb = rd_queue(w, "rd-b", RD_MAX);
	qm = rd_queue(NULL, "rd-mem", RD_MAX);
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_bind(bus, "r.>", qa, NULL, &ba), 0);
	assert_int_equal(quay_bus_bind(bus, "r.#", qb, NULL, &bb), 0);
	assert_int_equal(quay_bus_bind(bus, "r.*", qm, NULL, &bm), 0);

	pthread_mutex_lock(&fs.mu);
	syncs = fs.syncs;
	pthread_mutex_unlock(&fs.mu);
	assert_int_equal(quay_bus_publish(bus, "r.x", rd_msg(1)), 3);
	pthread_mutex_lock(&fs.mu);
	syncs = fs.syncs - syncs;
	fs.sync_errno = EIO;
	fs.sync_fail_at = fs.syncs + 1;
	pthread_mutex_unlock(&fs.mu);
	assert_int_equal(syncs, 1); /* both ADDs, one write, one sync */

	m = rd_msg(2);
	rc = quay_bus_publish_ex(bus, "r.x", m, &res);
	assert_int_equal(rc, 1); /* the queue in memory took it */
	assert_int_equal(res.queues.matched, 3);
	assert_int_equal(res.queues.delivered, 1);
	assert_int_equal(res.queues.failed, 2);
	assert_int_equal(quay_binding_counters((quay_binding *)ba, &bc), 0);
	assert_int_equal(bc.delivered, 1);
	assert_int_equal(bc.failed, 1);
	assert_int_equal(quay_binding_counters((quay_binding *)bb, &bc), 0);
	assert_int_equal(bc.delivered, 1);
	assert_int_equal(bc.failed, 1);
	assert_int_equal(quay_queue_stats(qa, &sa), 0);
	assert_int_equal(quay_queue_stats(qb, &sb), 0);
	assert_int_equal(quay_queue_stats(qm, &sm), 0);
	assert_int_equal(sa.sent, 1);
	assert_int_equal(sa.ready, 1);
	assert_int_equal(sb.sent, 1);
	assert_int_equal(sb.ready, 1);
	assert_int_equal(sm.sent, 2);
	/* Dedup ids forgotten: not "duplicate", the WAL's (sticky) error. */
	m = rd_msg(2);
	assert_int_equal(quay_queue_send(qa, m), -EIO);
	assert_int_equal(quay_queue_send(qb, m), -EIO);
	quay_msg_unref(m);
	assert_int_equal(quay_queue_stats(qa, &sa), 0);
	assert_int_equal(sa.deduplicated, 0);

	assert_int_equal(quay_bus_unbind(ba), 0);
	assert_int_equal(quay_bus_unbind(bb), 0);
	assert_int_equal(quay_bus_unbind(bm), 0);
	quay_bus_destroy(bus);
	quay_queue_destroy(qa);
	quay_queue_destroy(qb);
	quay_queue_destroy(qm);
	(void)quay_wal_close(w);
	rd_recover(&fs, &a, &b);
	assert_int_equal(a.found, 1);
	assert_int_equal(b.found, 1);
	assert_int_equal(a.n[1], 1);
	assert_int_equal(b.n[1], 1);
	memfs_fini(&fs);
}

/* Writes fail with ENOSPC (a quota set after a random number of
 * publishes): publish until a publish is refused. (The WAL takes its
 * space when a segment grows, so the refusal falls on a growth: after
 * 240, 480 or 720 publishes here.) Every publish that returned 2 is in both queues
 * after a crash, the refused one in neither, none in one only, none
 * twice. Several quotas. */
static void
write_enospc_all_or_none(void **state)
{
	uint64_t rng = 0x70a7e;
	unsigned rounds = 20, acked_total = 0;

	(void)state;
	for (unsigned t = 0; t < rounds; t++) {
		struct memfs fs;
		struct rd_seen a, b;
		quay_wal *w;
		quay_queue *qa, *qb;
		quay_bus *bus;
		quay_binding *ba, *bb;
		uint8_t rep[RD_MAX];
		uint64_t v, failed_at = RD_MAX, quota_at;

		memset(rep, 0, sizeof(rep));
		memfs_init(&fs, rng + t);
		fs.no_allocate = true; /* writes grow the files: they meet the quota */
		w = rd_wal(&fs, QUAY_WAL_SYNC);
		qa = rd_queue(w, "rd-a", RD_MAX);
		qb = rd_queue(w, "rd-b", RD_MAX);
		assert_int_equal(quay_bus_create(NULL, &bus), 0);
		assert_int_equal(quay_bus_bind(bus, "r.>", qa, NULL, &ba), 0);
		assert_int_equal(quay_bus_bind(bus, "r.>", qb, NULL, &bb), 0);
		quota_at = qt_rand(&rng) % 600; /* the quota is set after this many */
		for (v = 0; v < RD_MAX; v++) {
			int r;

			if (v == quota_at) {
				pthread_mutex_lock(&fs.mu);
				fs.quota = memfs_used(&fs) + 1 + qt_rand(&rng) % 4096;
				pthread_mutex_unlock(&fs.mu);
			}
			r = quay_bus_publish(bus, "r.x", rd_msg(v));

			assert_true(r == 2 || r == 0);
			rep[v] = (uint8_t)r;
			if (r == 0) {
				failed_at = v;
				break;
			}
			acked_total++;
		}
		assert_true(failed_at < RD_MAX);
		if (getenv("QUAY_RD_VERBOSE") != NULL)
			print_message("round %u: refused at %llu\n", t, (unsigned long long)failed_at);
		assert_int_equal(quay_bus_unbind(ba), 0);
		assert_int_equal(quay_bus_unbind(bb), 0);
		quay_bus_destroy(bus);
		quay_queue_destroy(qa);
		quay_queue_destroy(qb);
		(void)quay_wal_close(w);
		rd_recover(&fs, &a, &b);
		for (uint64_t s = 0; s <= failed_at; s++) {
			uint8_t want = rep[s] == 2 ? 1 : 0;

			if (a.n[s] != want || b.n[s] != want)
				print_message("round %u: seq %llu published %u: in a %u, in b %u\n", t,
				    (unsigned long long)s, rep[s], a.n[s], b.n[s]);
			assert_int_equal(a.n[s], want);
			assert_int_equal(b.n[s], want);
		}
		assert_int_equal(a.found, failed_at);
		assert_int_equal(b.found, failed_at);
		memfs_fini(&fs);
	}
	print_message("write ENOSPC: %u rounds, %u publishes acknowledged in both queues\n", rounds,
	    acked_total);
}

/* Policies still apply per binding: a full queue under REJECT is left
 * out, the other queue of the WAL takes the message alone. A duplicate
 * (the dedup window took it) counts as delivered and costs no write. */
static void
full_queue_left_out_and_duplicates(void **state)
{
	struct memfs fs;
	struct quay_bus_pub_result res;
	quay_wal *w;
	quay_queue *qa, *qb;
	quay_bus *bus;
	quay_binding *ba, *bb;
	struct quay_wal_info wi;
	uint64_t recs;

	(void)state;
	memfs_init(&fs, 7);
	w = rd_wal(&fs, QUAY_WAL_NONE);
	qa = rd_queue(w, "rd-a", 1);
	qb = rd_queue(w, "rd-b", 16);
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_bind(bus, "r.>", qa, NULL, &ba), 0);
	assert_int_equal(quay_bus_bind(bus, "r.>", qb, NULL, &bb), 0);
	assert_int_equal(quay_bus_publish(bus, "r.x", rd_msg(1)), 2);
	assert_int_equal(quay_bus_publish_ex(bus, "r.x", rd_msg(2), &res), 1);
	assert_int_equal(res.queues.rejected, 1);
	assert_int_equal(res.queues.delivered, 1);
	assert_int_equal(rd_ready(qa), 1);
	assert_int_equal(rd_ready(qb), 2);
	assert_int_equal(quay_wal_info(w, &wi), 0);
	recs = wi.records;
	/* The full queue refuses before its dedup window is asked; the
	 * other one's window takes the duplicate: no write at all. */
	assert_int_equal(quay_bus_publish_ex(bus, "r.x", rd_msg(1), &res), 1);
	assert_int_equal(res.queues.rejected, 1);
	assert_int_equal(res.queues.delivered, 1);
	assert_int_equal(quay_wal_info(w, &wi), 0);
	assert_int_equal(wi.records, recs);
	assert_int_equal(rd_ready(qb), 2);
	assert_int_equal(quay_bus_unbind(ba), 0);
	assert_int_equal(quay_bus_unbind(bb), 0);
	quay_bus_destroy(bus);
	quay_queue_destroy(qa);
	quay_queue_destroy(qb);
	(void)quay_wal_close(w);
	memfs_fini(&fs);
}

/* BLOCK in the multi-queue send: the full queue is waited for (1 ms)
 * before the write, then left out as timed out; the other queue of the
 * WAL takes the message alone, with one record. */
static void
block_timeout_left_out(void **state)
{
	struct memfs fs;
	struct quay_bus_pub_result res;
	struct quay_bind_opts bo = QUAY_BIND_OPTS_INIT;
	struct quay_binding_counters bc;
	struct quay_wal_info wi;
	quay_wal *w;
	quay_queue *qa, *qb;
	quay_bus *bus;
	quay_binding *ba, *bb;
	uint64_t recs;

	(void)state;
	memfs_init(&fs, 5);
	w = rd_wal(&fs, QUAY_WAL_NONE);
	qa = rd_queue(w, "rd-a", 1);
	qb = rd_queue(w, "rd-b", 16);
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	bo.policy = QUAY_SUB_BLOCK;
	bo.block_timeout_ns = 1000000;
	assert_int_equal(quay_bus_bind(bus, "r.>", qa, &bo, &ba), 0);
	assert_int_equal(quay_bus_bind(bus, "r.>", qb, &bo, &bb), 0);
	assert_int_equal(quay_bus_publish(bus, "r.x", rd_msg(1)), 2);
	assert_int_equal(quay_wal_info(w, &wi), 0);
	recs = wi.records;
	assert_int_equal(quay_bus_publish_ex(bus, "r.x", rd_msg(2), &res), 1);
	assert_int_equal(res.queues.timed_out, 1);
	assert_int_equal(res.queues.delivered, 1);
	assert_int_equal(quay_wal_info(w, &wi), 0);
	assert_int_equal(wi.records, recs + 1);
	assert_int_equal(quay_binding_counters(ba, &bc), 0);
	assert_int_equal(bc.timed_out, 1);
	assert_int_equal(bc.delivered, 1);
	assert_int_equal(rd_ready(qa), 1);
	assert_int_equal(rd_ready(qb), 2);
	assert_int_equal(quay_bus_unbind(ba), 0);
	assert_int_equal(quay_bus_unbind(bb), 0);
	quay_bus_destroy(bus);
	quay_queue_destroy(qa);
	quay_queue_destroy(qb);
	(void)quay_wal_close(w);
	memfs_fini(&fs);
}

/* The internal multi-queue send directly: bad input, a queue in memory
 * beside two of one WAL, and a closed queue left out. */
static void
send_multi_direct(void **state)
{
	struct memfs fs;
	quay_wal *w;
	quay_queue *qs[3];
	quay_msg *ms[3];
	int rcs[3];

	(void)state;
	memfs_init(&fs, 9);
	w = rd_wal(&fs, QUAY_WAL_NONE);
	qs[0] = rd_queue(w, "rd-a", 16);
	qs[1] = rd_queue(NULL, "rd-mem", 16);
	qs[2] = rd_queue(w, "rd-b", 16);
	assert_int_equal(quayi_queue_send_multi(NULL, ms, 1, rcs), -EINVAL);
	assert_int_equal(quayi_queue_send_multi(qs, NULL, 1, rcs), -EINVAL);
	assert_int_equal(quayi_queue_send_multi(qs, ms, 1, NULL), -EINVAL);
	assert_int_equal(quayi_queue_send_multi(qs, ms, 0, rcs), -EINVAL);
	assert_int_equal(quayi_queue_send_multi(qs, ms, QUAYI_QSEND_MAX + 1, rcs), -EINVAL);
	/* One message to all three (the second and third get copies). */
	ms[0] = rd_msg(1);
	assert_int_equal(quay_msg_ref(ms[0]), 0);
	assert_int_equal(quay_msg_ref(ms[0]), 0);
	ms[1] = ms[0];
	ms[2] = ms[0];
	assert_int_equal(quayi_queue_send_multi(qs, ms, 3, rcs), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(rcs[i], 0);
		assert_int_equal(rd_ready(qs[i]), 1);
	}
	/* A NULL message and a closed queue are refused alone. */
	assert_int_equal(quay_queue_close(qs[2]), 0);
	ms[0] = rd_msg(2);
	ms[1] = NULL;
	ms[2] = rd_msg(3);
	assert_int_equal(quayi_queue_send_multi(qs, ms, 3, rcs), 1);
	assert_int_equal(rcs[0], 0);
	assert_int_equal(rcs[1], -EINVAL);
	assert_int_equal(rcs[2], -EPIPE);
	quay_msg_unref(ms[2]);
	assert_int_equal(rd_ready(qs[0]), 2);
	for (int i = 0; i < 3; i++)
		quay_queue_destroy(qs[i]);
	(void)quay_wal_close(w);
	memfs_fini(&fs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(sync_eio_refuses_in_every_queue_of_the_wal, setup, teardown),
		cmocka_unit_test_setup_teardown(write_enospc_all_or_none, setup, teardown),
		cmocka_unit_test_setup_teardown(full_queue_left_out_and_duplicates, setup, teardown),
		cmocka_unit_test_setup_teardown(block_timeout_left_out, setup, teardown),
		cmocka_unit_test_setup_teardown(send_multi_direct, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
