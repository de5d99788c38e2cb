/* SPDX-License-Identifier: MIT */
/*
 * Allocator hooks (quay/alloc.h): every create path run with an allocator
 * that fails its Nth allocation, for N = 1, 2, ... until the path
 * succeeds. Each failure must return -ENOMEM and leave no byte allocated
 * (the test allocator counts live bytes; ASan/LSan watch the C library's
 * side), and the path must succeed once no allocation fails. The test
 * allocator also checks the sized free: every block comes back with the
 * size and alignment it was allocated with, through the same allocator.
 * Bad input: an allocator missing a function is -EINVAL everywhere.
 */
#include "quay_test.h"

#include <quay/quay.h>

#include <dirent.h>

/* ---- the test allocator --------------------------------------------- */

#define TA_MAGIC 0x51a110c8u

struct ta_hdr {
	uint32_t magic;
	uint32_t pad;
	size_t size;
	size_t align;
	size_t off; /* from the base of the C library's block */
};

struct ta {
	pthread_mutex_t mu;
	long fail_at;  /* fail the allocation with this number (1-based); 0: none */
	long calls;    /* alloc and realloc calls so far */
	size_t live;   /* bytes allocated and not freed */
	long blocks;   /* blocks allocated and not freed */
	long bad_free; /* frees with a wrong size, alignment or pointer */
	long bad_align;
	bool with_realloc;
};

static struct ta ta = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, 0, false };

static size_t
hdr_room(size_t align)
{
	return align > sizeof(struct ta_hdr) ? align : (sizeof(struct ta_hdr) + align - 1) & ~(align - 1);
}

/* Count a call; true if it must fail. */
static bool
ta_fail_now(void)
{
	bool fail;

	pthread_mutex_lock(&ta.mu);
	ta.calls++;
	fail = ta.fail_at != 0 && ta.calls == ta.fail_at;
	pthread_mutex_unlock(&ta.mu);
	return fail;
}

static void *
ta_alloc(void *ctx, size_t size, size_t align)
{
	size_t room = hdr_room(align), total;
	unsigned char *base;
	struct ta_hdr *h;

	assert_ptr_equal(ctx, &ta);
	if (size == 0 || align < sizeof(void *) || (align & (align - 1)) != 0) {
		pthread_mutex_lock(&ta.mu);
		ta.bad_align++;
		pthread_mutex_unlock(&ta.mu);
	}
	if (ta_fail_now())
		return NULL;
	total = (room + size + align - 1) & ~(align - 1);
	base = aligned_alloc(align, total);
	if (base == NULL)
		return NULL;
	memset(base + room, 0xa5, size); /* the library must not expect zeroes */
	h = (struct ta_hdr *)(void *)(base + room - sizeof(*h));
	h->magic = TA_MAGIC;
	h->size = size;
	h->align = align;
	h->off = room;
	pthread_mutex_lock(&ta.mu);
	ta.live += size;
	ta.blocks++;
	pthread_mutex_unlock(&ta.mu);
	return base + room;
}

static void
ta_free(void *ctx, void *p, size_t size, size_t align)
{
	struct ta_hdr *h = (struct ta_hdr *)(void *)((unsigned char *)p - sizeof(*h));
	bool ok = p != NULL && h->magic == TA_MAGIC && h->size == size && h->align == align;

	assert_ptr_equal(ctx, &ta);
	pthread_mutex_lock(&ta.mu);
	if (!ok) {
		ta.bad_free++;
		pthread_mutex_unlock(&ta.mu);
		if (p != NULL && h->magic == TA_MAGIC)
			print_error("bad free: %zu bytes (align %zu) freed as %zu (align %zu)\n", h->size,
			    h->align, size, align);
		return; /* leaked on purpose: the count fails the test */
	}
	ta.live -= size;
	ta.blocks--;
	pthread_mutex_unlock(&ta.mu);
	h->magic = 0;
	free((unsigned char *)p - h->off);
}

static void *
ta_realloc(void *ctx, void *p, size_t old, size_t n, size_t align)
{
	void *np;

	if (ta_fail_now())
		return NULL;
	pthread_mutex_lock(&ta.mu);
	ta.calls--; /* ta_alloc counts it again */
	pthread_mutex_unlock(&ta.mu);
	np = ta_alloc(ctx, n, align);
	if (np == NULL)
		return NULL;
	memcpy(np, p, old < n ? old : n);
	ta_free(ctx, p, old, align);
	return np;
}

static const struct quay_allocator TA = { ta_alloc, ta_free, NULL, &ta };
static const struct quay_allocator TA_RE = { ta_alloc, ta_free, ta_realloc, &ta };

static void
ta_reset(long fail_at)
{
	pthread_mutex_lock(&ta.mu);
	ta.fail_at = fail_at;
	ta.calls = 0;
	pthread_mutex_unlock(&ta.mu);
}

/* ---- the sweep ------------------------------------------------------ */

/* A create path: create (and use) objects with allocator a, destroy them
 * all, and return the first failure (0 if none). */
typedef int (*path_fn)(const struct quay_allocator *a);

/* Largest number of allocations a path may make before it succeeds. */
#define SWEEP_MAX 5000

static long
sweep_with(const char *name, path_fn fn, const struct quay_allocator *a)
{
	long n;
	int rc;

	for (n = 1; n <= SWEEP_MAX; n++) {
		bool injected;

		ta_reset(n);
		rc = fn(a);
		injected = ta.calls >= n;
		if (ta.live != 0 || ta.blocks != 0)
			fail_msg("%s: failing allocation %ld: %zu bytes in %ld blocks left (rc %d)", name, n,
			    ta.live, ta.blocks, rc);
		if (ta.bad_free != 0 || ta.bad_align != 0)
			fail_msg("%s: failing allocation %ld: %ld bad frees, %ld bad requests", name, n,
			    ta.bad_free, ta.bad_align);
		if (!injected) {
			/* The path made fewer than n allocations: all succeeded. */
			if (rc != 0)
				fail_msg("%s: %d (%s) with no allocation failing", name, rc,
				    quay_strerror(rc));
			break;
		}
		/* A failure is -ENOMEM; 0 where the library absorbs it (a
		 * best-effort allocation, counted, such as a durable queue's
		 * delivery record). */
		if (rc != 0 && rc != -ENOMEM)
			fail_msg("%s: failing allocation %ld: %d (%s), not -ENOMEM", name, n, rc,
			    quay_strerror(rc));
	}
	if (n > SWEEP_MAX)
		fail_msg("%s: still allocating after %d allocations", name, SWEEP_MAX);
	/* The process keeps working: the path, with the C library. */
	ta_reset(0);
	if ((rc = fn(NULL)) != 0)
		fail_msg("%s: fails with the default allocator after the sweep: %d", name, rc);
	return n - 1;
}

static void
sweep(const char *name, path_fn fn)
{
	long n = sweep_with(name, fn, &TA);

	print_message("%-28s %ld allocations\n", name, n);
	assert_true(n > 0);
}

/* The same, then again with the allocator's realloc (for the paths that
 * resize: the WAL's tables, the HTTP server's buffers). */
static void
sweep_re(const char *name, path_fn fn)
{
	sweep(name, fn);
	(void)sweep_with(name, fn, &TA_RE);
}

/* ---- paths ---------------------------------------------------------- */

static int
path_ring(const struct quay_allocator *a)
{
	struct quay_ring_opts o = QUAY_RING_OPTS_INIT;
	quay_ring *r = NULL;
	uint64_t v = 7;
	int rc;

	o.allocator = a;
	if ((rc = quay_ring_create_opts(64, 8, &o, &r)) != 0)
		return rc;
	assert_int_equal(quay_ring_push(r, &v), 0);
	quay_ring_destroy(r);
	return 0;
}

static int
path_pq(const struct quay_allocator *a)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = NULL;
	int rc;

	o.levels = 4;
	o.capacity = 16;
	o.elem_size = 8;
	o.allocator = a;
	if ((rc = quay_pq_create(&o, &pq)) != 0)
		return rc;
	quay_pq_destroy(pq);
	return 0;
}

static int
path_pool_msg(const struct quay_allocator *a)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;
	quay_msg *m = NULL;
	int rc;

	o.allocator = a;
	if ((rc = quay_pool_create((size_t)1 << 20, &o, &p)) != 0)
		return rc;
	rc = quay_msg_new(p, "hello", 5, &m);
	if (rc == 0)
		quay_msg_unref(m);
	assert_int_equal(quay_pool_destroy(p), 0);
	return rc;
}

static void
test_sweep_ring_pq_pool(void **state)
{
	(void)state;
	sweep("ring", path_ring);
	sweep("pq", path_pq);
	sweep("pool + msg", path_pool_msg);
}

static void
collect_nop(void *arg)
{
	(void)arg;
}

static int
path_stats(const struct quay_allocator *a)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	struct quay_stats_label l[2] = { { "queue", "q1" }, { "zone", "a" } };
	quay_stats *s = NULL;
	quay_counter *c1 = NULL, *c2 = NULL;
	quay_gauge *g = NULL;
	quay_hist *h = NULL;
	quay_stats_snap *snap = NULL;
	char buf[8192];
	size_t len;
	int rc;

	o.shards = 2;
	o.hist_shards = 1;
	o.allocator = a;
	if ((rc = quay_stats_create(&o, &s)) != 0)
		return rc;
	if ((rc = quay_counter_create(s, "t_total", "help", l, 2, &c1)) == 0 &&
	    (rc = quay_counter_create(s, "t_total", "help", l, 1, &c2)) == 0 &&
	    (rc = quay_gauge_create(s, "t_gauge", NULL, NULL, 0, &g)) == 0 &&
	    (rc = quay_gauge_set_collect(g, collect_nop, NULL)) == 0 &&
	    (rc = quay_hist_create(s, "t_seconds", "latency", l, 1, &h)) == 0 &&
	    (rc = quay_stats_snapshot(s, &snap)) == 0) {
		assert_int_equal(quay_stats_format_prometheus(snap, buf, sizeof(buf), &len), 0);
		assert_int_equal(quay_stats_format_json(snap, buf, sizeof(buf), &len), 0);
		quay_stats_snap_free(snap);
	}
	/* Destroy some metrics before the registry, leave the rest to it. */
	quay_counter_destroy(c2);
	quay_gauge_destroy(g);
	quay_stats_destroy(s);
	return rc;
}

/* Enough metrics that the registry's hash tables grow (64 buckets). */
static int
path_stats_grow(const struct quay_allocator *a)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	quay_stats *s = NULL;
	int rc;

	o.shards = 1;
	o.allocator = a;
	if ((rc = quay_stats_create(&o, &s)) != 0)
		return rc;
	for (int i = 0; i < 70 && rc == 0; i++) {
		char name[32];
		quay_counter *c;

		snprintf(name, sizeof(name), "c%d_total", i);
		rc = quay_counter_create(s, name, NULL, NULL, 0, &c);
	}
	quay_stats_destroy(s);
	return rc;
}

static void
test_sweep_stats(void **state)
{
	(void)state;
	sweep("stats", path_stats);
	sweep("stats, tables grow", path_stats_grow);
}

/* Remove a directory of plain files (a WAL's). */
static void
rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static int
count_rec(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	(void)lsn;
	(void)type;
	(void)data;
	(void)len;
	++*(size_t *)ctx;
	return 0;
}

/* Open (create), append across several segments, checkpoint, close;
 * reopen (recovery reads every segment), replay, close. */
static int
path_wal(const struct quay_allocator *a)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	char tmpl[] = "/tmp/quay-alloc-XXXXXX", dir[64];
	static char rec[2000];
	uint64_t lsn = 0;
	size_t seen = 0;
	quay_wal *w = NULL;
	int rc;

	assert_non_null(mkdtemp(tmpl));
	snprintf(dir, sizeof(dir), "%s/a/wal", tmpl);
	o.sync_mode = QUAY_WAL_NONE;
	o.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	o.max_record = sizeof(rec);
	o.flags = QUAY_WAL_MKDIR_PARENTS;
	o.allocator = a;
	if ((rc = quay_wal_open(dir, &o, &w)) != 0)
		goto out;
	for (int i = 0; i < 100 && rc == 0; i++)
		rc = quay_wal_append(w, 1, rec, sizeof(rec), &lsn);
	if (rc == 0)
		rc = quay_wal_sync(w, lsn);
	if (rc == 0)
		rc = quay_wal_checkpoint(w, 10);
	if (rc == 0)
		rc = quay_wal_replay(w, 0, count_rec, &seen);
	assert_int_equal(quay_wal_close(w), 0);
	w = NULL;
	if (rc == 0)
		rc = quay_wal_open(dir, &o, &w);
	if (rc == 0) {
		rc = quay_wal_replay(w, 0, count_rec, &seen);
		assert_int_equal(quay_wal_close(w), 0);
	}
out:
	rm_dir(dir);
	snprintf(dir, sizeof(dir), "%s/a", tmpl);
	rmdir(dir);
	rmdir(tmpl);
	return rc;
}

static void
test_sweep_wal(void **state)
{
	(void)state;
	sweep_re("wal", path_wal);
}

/* Queue paths: a pool, optionally a WAL (durable), a DLQ and the queue,
 * all from a; sends (one by one and a batch), receives, an ack and a
 * nack, then everything destroyed. */
enum { QP_DURABLE = 1, QP_FIFO = 2, QP_CDEDUP = 4, QP_DEDUP = 8, QP_ALARMS = 16, QP_DLQ = 32 };

static int
queue_path(const struct quay_allocator *a, unsigned what)
{
	struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT, dqo = QUAY_QUEUE_OPTS_INIT;
	char tmpl[] = "/tmp/quay-alloc-XXXXXX";
	quay_pool *pool = NULL;
	quay_wal *w = NULL;
	quay_queue *q = NULL, *dlq = NULL;
	quay_msg *batch[3] = { NULL, NULL, NULL };
	quay_lease l;
	int rc;

	po.allocator = a;
	if ((rc = quay_pool_create((size_t)1 << 20, &po, &pool)) != 0)
		return rc;
	if (what & QP_DURABLE) {
		assert_non_null(mkdtemp(tmpl));
		wo.sync_mode = QUAY_WAL_NONE;
		wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
		wo.allocator = a;
		if ((rc = quay_wal_open(tmpl, &wo, &w)) != 0)
			goto out;
		qo.wal = dqo.wal = w;
		qo.pool = dqo.pool = pool;
	}
	if (what & QP_DLQ) {
		dqo.name = "dlq";
		dqo.capacity = 16;
		dqo.allocator = a;
		if ((rc = quay_queue_create(&dqo, &dlq)) != 0)
			goto out;
		qo.dlq = dlq;
		qo.max_attempts = 1;
	}
	qo.name = "q";
	qo.capacity = 32;
	qo.allocator = a;
	if (what & QP_FIFO)
		qo.flags |= QUAY_QUEUE_FIFO;
	if (what & (QP_CDEDUP | QP_DEDUP))
		qo.dedup_window_ns = (int64_t)1000000000;
	if (what & QP_CDEDUP)
		qo.flags |= QUAY_QUEUE_CONTENT_DEDUP;
	if (what & QP_ALARMS) {
		qo.alarm[QUAY_QUEUE_ALARM_READY].raise = 10;
		qo.alarm[QUAY_QUEUE_ALARM_FAILURES].raise = 0.5;
		qo.rate_per_sec = 1000000;
		qo.rate_burst = 100;
	}
	if ((rc = quay_queue_create(&qo, &q)) != 0)
		goto out;
	for (int i = 0; i < 4 && rc == 0; i++) {
		quay_msg *m;
		char body[16];

		snprintf(body, sizeof(body), "m%d", i);
		assert_int_equal(quay_msg_new(pool, body, strlen(body), &m), 0);
		assert_int_equal(quay_msg_set_header_str(m, QUAY_MSG_H_GROUP, i % 2 ? "g1" : "g2"), 0);
		if (what & QP_DEDUP)
			assert_int_equal(quay_msg_set_header_str(m, QUAY_MSG_H_DEDUP_ID, body), 0);
		rc = quay_queue_send(q, m);
		if (rc != 0)
			quay_msg_unref(m);
	}
	if (rc == 0) {
		int n;

		for (int i = 0; i < 3; i++) {
			assert_int_equal(quay_msg_new(pool, "batch", 5 + (size_t)i, &batch[i]), 0);
			assert_int_equal(quay_msg_set_header_str(batch[i], QUAY_MSG_H_GROUP, "g3"), 0);
		}
		n = quay_queue_send_batch(q, batch, 3, NULL);
		if (n < 0)
			rc = n;
		for (int i = n < 0 ? 0 : n; i < 3; i++)
			quay_msg_unref(batch[i]);
		if (rc == 0 && n != 3)
			rc = -ENOMEM; /* a batch's scratch: nothing sent */
	}
	if (rc == 0 && (rc = quay_queue_receive(q, &l, 0)) == 0) {
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	if (rc == 0 && (rc = quay_queue_receive(q, &l, 0)) == 0) {
		/* With a DLQ and one attempt: dead-lettered (moved in the log). */
		rc = quay_queue_nack(q, &l, "test");
		quay_msg_unref(l.msg);
	}
	if (rc == 0) {
		struct quay_queue_stats st;

		rc = quay_queue_stats(q, &st);
	}
	if (rc == 0 && (what & QP_DURABLE)) {
		/* Reopen: recovery replays the log into new queues. */
		quay_queue_destroy(q);
		quay_queue_destroy(dlq);
		q = dlq = NULL;
		if ((what & QP_DLQ) && (rc = quay_queue_create(&dqo, &dlq)) == 0)
			qo.dlq = dlq;
		if (rc == 0 && (rc = quay_queue_create(&qo, &q)) == 0 &&
		    (rc = quay_queue_receive(q, &l, 0)) == 0) {
			assert_int_equal(quay_queue_ack(q, &l), 0);
			quay_msg_unref(l.msg);
		}
	}
out:
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
	if (w != NULL)
		assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(quay_pool_destroy(pool), 0);
	if (what & QP_DURABLE)
		rm_dir(tmpl);
	return rc;
}

static int
path_queue(const struct quay_allocator *a)
{
	return queue_path(a, QP_DEDUP | QP_ALARMS);
}

static int
path_queue_dlq(const struct quay_allocator *a)
{
	return queue_path(a, QP_DLQ);
}

static int
path_queue_fifo(const struct quay_allocator *a)
{
	return queue_path(a, QP_FIFO);
}

static int
path_queue_cdedup(const struct quay_allocator *a)
{
	return queue_path(a, QP_CDEDUP);
}

static int
path_queue_durable(const struct quay_allocator *a)
{
	return queue_path(a, QP_DURABLE | QP_DLQ);
}

static int
path_queue_durable_reopen(const struct quay_allocator *a)
{
	int rc = queue_path(a, QP_DURABLE | QP_FIFO | QP_CDEDUP);

	return rc;
}

static void
test_sweep_queue(void **state)
{
	(void)state;
	sweep("queue (dedup, alarms, rate)", path_queue);
	sweep("queue + DLQ", path_queue_dlq);
	sweep("queue FIFO", path_queue_fifo);
	sweep("queue content dedup", path_queue_cdedup);
	sweep("durable queue + DLQ", path_queue_durable);
	sweep("durable FIFO, content dedup", path_queue_durable_reopen);
}

/* ---- bad input ------------------------------------------------------ */

static void *
never_alloc(void *ctx, size_t size, size_t align)
{
	(void)ctx;
	(void)size;
	(void)align;
	fail_msg("a rejected allocator was called");
	return NULL;
}

static void
never_free(void *ctx, void *p, size_t size, size_t align)
{
	(void)ctx;
	(void)p;
	(void)size;
	(void)align;
	fail_msg("a rejected allocator was called");
}

static const struct quay_allocator NO_ALLOC = { NULL, never_free, NULL, NULL };
static const struct quay_allocator NO_FREE = { never_alloc, NULL, NULL, NULL };

static void
test_bad_allocator(void **state)
{
	const struct quay_allocator *bad[] = { &NO_ALLOC, &NO_FREE };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		void *const sentinel = (void *)(uintptr_t)0x5a5a5a5a;
		struct quay_ring_opts ro = QUAY_RING_OPTS_INIT;
		struct quay_pq_opts qo = QUAY_PQ_OPTS_INIT;
		struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
		quay_ring *r = sentinel;
		quay_pq *pq = sentinel;
		quay_pool *p = sentinel;

		ro.allocator = bad[i];
		assert_int_equal(quay_ring_create_opts(64, 8, &ro, &r), -EINVAL);
		assert_ptr_equal(r, sentinel);
		qo.levels = 2;
		qo.capacity = 4;
		qo.elem_size = 8;
		qo.allocator = bad[i];
		assert_int_equal(quay_pq_create(&qo, &pq), -EINVAL);
		assert_ptr_equal(pq, sentinel);
		po.allocator = bad[i];
		assert_int_equal(quay_pool_create((size_t)1 << 20, &po, &p), -EINVAL);
		assert_ptr_equal(p, sentinel);
		{
			struct quay_stats_opts so = QUAY_STATS_OPTS_INIT;
			quay_stats *st = sentinel;

			so.allocator = bad[i];
			assert_int_equal(quay_stats_create(&so, &st), -EINVAL);
			assert_ptr_equal(st, sentinel);
		}
		{
			struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
			quay_wal *w = sentinel;

			wo.allocator = bad[i];
			assert_int_equal(quay_wal_open("/tmp/quay-alloc-never", &wo, &w), -EINVAL);
			assert_ptr_equal(w, sentinel);
		}
		{
			struct quay_queue_opts uo = QUAY_QUEUE_OPTS_INIT;
			quay_queue *q = sentinel;

			uo.allocator = bad[i];
			assert_int_equal(quay_queue_create(&uo, &q), -EINVAL);
			assert_ptr_equal(q, sentinel);
		}
	}
}

/* The ring's other bad inputs through the _opts variant. */
static void
test_ring_opts_bad_input(void **state)
{
	struct quay_ring_opts o = QUAY_RING_OPTS_INIT;
	quay_ring *r = NULL;

	(void)state;
	assert_int_equal(quay_ring_create_opts(64, 8, &o, NULL), -EINVAL);
	assert_int_equal(quay_ring_create_opts(63, 8, &o, &r), -EINVAL);
	o.size = 0;
	assert_int_equal(quay_ring_create_opts(64, 8, &o, &r), -EINVAL);
	o.size = sizeof(o);
	o.flags = 0x100;
	assert_int_equal(quay_ring_create_opts(64, 8, &o, &r), -EINVAL);
	assert_null(r);
	assert_int_equal(quay_ring_create_opts(64, 8, NULL, &r), 0);
	quay_ring_destroy(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_allocator),
		cmocka_unit_test(test_ring_opts_bad_input),
		cmocka_unit_test(test_sweep_ring_pq_pool),
		cmocka_unit_test(test_sweep_stats),
		cmocka_unit_test(test_sweep_wal),
		cmocka_unit_test(test_sweep_queue),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
