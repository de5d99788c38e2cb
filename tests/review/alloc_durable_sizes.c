#include "quay_test.h"

#include <quay/quay.h>

#include <dirent.h>
#include "../../src/queue_log.h"

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

/* ---- review: the durable paths the sweep does not reach ------------- */

static void
send_body(quay_queue *q, quay_pool *pool, size_t len, int i, bool dedup_id)
{
	static char body[6000];
	char id[32];
	quay_msg *m = NULL;

	memset(body, 'a' + i % 26, len);
	snprintf(body, 16, "%d-", i);
	assert_int_equal(quay_msg_new_ex(pool, body, len, QUAY_MSG_HEADER_ROOM(2, 64), 0, &m), 0);
	if (dedup_id) {
		snprintf(id, sizeof(id), "id-%d", i);
		assert_int_equal(quay_msg_set_header_str(m, QUAY_MSG_H_DEDUP_ID, id), 0);
	}
	assert_int_equal(quay_queue_send(q, m), 0);
}

static void
durable_everything(void **state)
{
	char dir[] = "/dev/shm/quay-review-XXXXXX";
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT, dqo = QUAY_QUEUE_OPTS_INIT,
	                       co = QUAY_QUEUE_OPTS_INIT;
	quay_wal *w;
	quay_pool *pool;
	quay_queue *q, *dlq, *cq;
	quay_lease l;
	size_t moved;

	(void)state;
	ta_reset(0);
	assert_non_null(mkdtemp(dir));
	wo.sync_mode = QUAY_WAL_NONE;
	wo.allocator = &TA;
	wo.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	po.allocator = &TA;
	for (int round = 0; round < 3; round++) {
		assert_int_equal(quay_wal_open(dir, &wo, &w), 0);
		assert_int_equal(quay_pool_create((size_t)32 << 20, &po, &pool), 0);
		dqo.name = "dlq";
		dqo.capacity = 512;
		dqo.wal = w;
		dqo.pool = pool;
		dqo.allocator = &TA_RE;
		dqo.compact_bytes = (uint64_t)1 << 40;
		assert_int_equal(quay_queue_create(&dqo, &dlq), 0);
		qo.name = "q";
		qo.capacity = 512;
		qo.wal = w;
		qo.pool = pool;
		qo.dlq = dlq;
		qo.max_attempts = 1;
		qo.dedup_window_ns = (int64_t)3600 * 1000000000;
		qo.allocator = &TA;
		qo.compact_bytes = (uint64_t)1 << 40;
		assert_int_equal(quay_queue_create(&qo, &q), 0);
		co = qo;
		co.name = "c";
		co.dlq = NULL;
		co.flags = QUAY_QUEUE_CONTENT_DEDUP | QUAY_QUEUE_FIFO;
		co.allocator = NULL;
		assert_int_equal(quay_queue_create(&co, &cq), 0);
		for (int i = 0; i < 150; i++) {
			send_body(q, pool, i % 3 == 0 ? 5000 : 100, round * 1000 + i, true);
			send_body(cq, pool, i % 3 == 0 ? 3000 : 60, round * 1000 + i, false);
		}
		{
			quay_msg *b[20];
			for (int i = 0; i < 20; i++) {
				char body[4000];
				memset(body, 'z', sizeof(body));
				snprintf(body, 16, "b%d-%d", round, i);
				assert_int_equal(quay_msg_new(pool, body, i % 2 ? sizeof(body) : 40, &b[i]),
				    0);
			}
			assert_int_equal(quay_queue_send_batch(q, b, 20, NULL), 20);
		}
		for (int i = 0; i < 60; i++) {
			assert_int_equal(quay_queue_receive(q, &l, 0), 0);
			if (i % 2)
				assert_int_equal(quay_queue_ack(q, &l), 0);
			else
				assert_int_equal(quay_queue_nack(q, &l, "x"), 0); /* -> DLQ */
			quay_msg_unref(l.msg);
			assert_int_equal(quay_queue_receive(cq, &l, 0), 0);
			assert_int_equal(quay_queue_ack(cq, &l), 0);
			quay_msg_unref(l.msg);
		}
		assert_int_equal(quay_queue_redrive(dlq, q, 10, &moved), 0);
		assert_int_equal(quayi_queue_compact(q), 0);
		quay_queue_destroy(q);
		quay_queue_destroy(cq);
		quay_queue_destroy(dlq);
		assert_int_equal(quay_wal_close(w), 0);
		assert_int_equal(quay_pool_destroy(pool), 0);
		print_message("round %d: live %zu blocks %ld bad frees %ld\n", round, ta.live, ta.blocks,
		    ta.bad_free);
		assert_int_equal(ta.bad_free, 0);
		assert_int_equal(ta.bad_align, 0);
		assert_int_equal(ta.blocks, 0);
	}
	qt_rm_dir(dir);
}

/* Recovery under failing allocations: a log with a few hundred messages,
 * DEDUP records and send ADDs (the replay's tables grow), replayed by a
 * queue whose allocator fails its nth allocation, n = 1, 2, ... */
static void
recovery_sweep(void **state)
{
	char dir[] = "/dev/shm/quay-review-XXXXXX";
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	quay_wal *w;
	quay_pool *pool;
	quay_queue *q;
	quay_lease l;
	long n;
	int rc;

	(void)state;
	ta_reset(0);
	assert_non_null(mkdtemp(dir));
	wo.sync_mode = QUAY_WAL_NONE;
	assert_int_equal(quay_wal_open(dir, &wo, &w), 0);
	assert_int_equal(quay_pool_create((size_t)32 << 20, NULL, &pool), 0);
	qo.name = "q";
	qo.capacity = 512;
	qo.wal = w;
	qo.pool = pool;
	qo.dedup_window_ns = (int64_t)3600 * 1000000000;
	qo.flags = QUAY_QUEUE_CONTENT_DEDUP;
	qo.compact_bytes = (uint64_t)1 << 40;
	assert_int_equal(quay_queue_create(&qo, &q), 0);
	for (int i = 0; i < 100; i++)
		send_body(q, pool, 50, i, i % 2 == 0);
	for (int i = 0; i < 30; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	assert_int_equal(quayi_queue_compact(q), 0);
	for (int i = 100; i < 200; i++)
		send_body(q, pool, 50, i, i % 2 == 0);
	quay_queue_destroy(q);
	qo.allocator = &TA_RE;
	for (n = 1; n < 100000; n++) {
		struct quay_queue_stats st;

		ta_reset(n);
		rc = quay_queue_create(&qo, &q);
		if (rc == 0) {
			assert_int_equal(quay_queue_stats(q, &st), 0);
			quay_queue_destroy(q);
		}
		assert_int_equal(ta.bad_free, 0);
		assert_int_equal(ta.blocks, 0);
		if (ta.calls < n) {
			assert_int_equal(rc, 0);
			assert_int_equal(st.restored, 170);
			break;
		}
		if (rc != -ENOMEM)
			fail_msg("failing allocation %ld: %d", n, rc);
	}
	print_message("recovery: %ld allocations\n", n - 1);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(quay_pool_destroy(pool), 0);
	qt_rm_dir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(durable_everything),
		cmocka_unit_test(recovery_sweep),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
