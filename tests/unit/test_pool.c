/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of quay/pool.h: creation (every bad input of TESTING.md
 * 5.4 that applies), shapes and limits, exhaustion and reuse, class
 * fallback, thread caches (bounded, flushed at thread exit and by
 * quay_pool_cache_flush), stats, destroy with messages out, and the
 * waiting allocation (timeout, wake-up by a free from another thread,
 * also when that thread has a cache).
 */
#include "quay_test.h"

#include <quay/msg.h>
#include <quay/pool.h>

#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)

static quay_pool *const SENTINEL = (quay_pool *)(uintptr_t)0x5a5a5a5a;
#define SENTINEL_MSG_INIT ((quay_msg *)(uintptr_t)0x5a5a5a5a)

/* A pool of one class of n buffers of size bytes. */
static quay_pool *
one_class(uint32_t size, uint32_t n, uint32_t flags)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;

	o.nclasses = 1;
	o.class_size[0] = size;
	o.class_count[0] = n;
	o.flags = flags;
	assert_int_equal(quay_pool_create((size_t)size * n, &o, &p), 0);
	assert_non_null(p);
	return p;
}

static struct quay_pool_stats
stats_of(const quay_pool *p)
{
	struct quay_pool_stats s;

	assert_int_equal(quay_pool_stats(p, &s), 0);
	return s;
}

/* ---- creation --------------------------------------------------------- */

static void
expect_create_einval(size_t limit, const struct quay_pool_opts *o)
{
	quay_pool *p = SENTINEL;

	assert_int_equal(quay_pool_create(limit, o, &p), -EINVAL);
	assert_ptr_equal(p, SENTINEL);
}

static void
test_create_bad_input(void **state)
{
	struct quay_pool_opts o;

	(void)state;
	assert_int_equal(quay_pool_create(MIB, NULL, NULL), -EINVAL);
	expect_create_einval(0, NULL);
	expect_create_einval(QUAY_POOL_LIMIT_MAX + 1, NULL);
	expect_create_einval(SIZE_MAX, NULL);
	/* Too small for one buffer of each default class. */
	expect_create_einval(64 * KIB, NULL);

#define RESET() \
	do { \
		struct quay_pool_opts d_ = QUAY_POOL_OPTS_INIT; \
		o = d_; \
	} while (0)
	RESET();
	o.size = 0;
	expect_create_einval(MIB, &o);
	RESET();
	o.size = (uint32_t)sizeof(o) + 8;
	expect_create_einval(MIB, &o);
	RESET();
	o.flags = 0x80u;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = QUAY_POOL_CLASSES_MAX + 1;
	expect_create_einval(MIB, &o);
	/* Sizes given without nclasses. */
	RESET();
	o.class_size[0] = 1024;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 2;
	o.class_size[0] = 1024; /* [1] is 0 */
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 1;
	o.class_size[0] = 128;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 1;
	o.class_size[0] = 1000;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 1;
	o.class_size[0] = (uint32_t)QUAY_POOL_CLASS_SIZE_MAX + 64;
	expect_create_einval(64 * MIB, &o);
	RESET();
	o.nclasses = 2;
	o.class_size[0] = 1024;
	o.class_size[1] = 1024;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 2;
	o.class_size[0] = 1024;
	o.class_size[1] = 512;
	expect_create_einval(MIB, &o);
	/* A size past nclasses. */
	RESET();
	o.nclasses = 1;
	o.class_size[0] = 1024;
	o.class_size[1] = 2048;
	expect_create_einval(MIB, &o);
	/* Counts: partly given, past nclasses, too many, over the limit. */
	RESET();
	o.nclasses = 2;
	o.class_size[0] = 256;
	o.class_size[1] = 1024;
	o.class_count[0] = 4;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = 4;
	o.class_count[1] = 4;
	expect_create_einval(MIB, &o);
	RESET();
	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = QUAY_POOL_CLASS_COUNT_MAX + 1;
	expect_create_einval(QUAY_POOL_LIMIT_MAX, &o);
	RESET();
	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = 5;
	expect_create_einval(4 * 256, &o);
	RESET();
	o.cache_size = QUAY_POOL_CACHE_MAX + 1;
	expect_create_einval(MIB, &o);
	RESET();
	o.cache_threads = QUAY_POOL_CACHE_THREADS_MAX + 1;
	expect_create_einval(MIB, &o);
	RESET();
	o.headroom = (uint32_t)QUAY_POOL_CLASS_SIZE_MAX + 1;
	expect_create_einval(MIB, &o);
#undef RESET
}

static void
test_create_defaults(void **state)
{
	static const size_t sizes[] = { 512, 1024, 4096, 16384, 65536 };
	quay_pool *p = NULL;
	struct quay_pool_stats s;
	size_t arena = 0;

	(void)state;
	assert_int_equal(quay_pool_create(8 * MIB, NULL, &p), 0);
	s = stats_of(p);
	assert_int_equal(s.nclasses, 5);
	assert_int_equal(s.limit_bytes, 8 * MIB);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(s.cls[i].buf_size, sizes[i]);
		assert_true(s.cls[i].buffers > 0);
		assert_int_equal(s.cls[i].in_use, 0);
		assert_int_equal(s.cls[i].cached, 0);
		assert_int_equal(s.cls[i].free, s.cls[i].buffers);
		assert_int_equal(s.cls[i].hwm, 0);
		/* At most a quarter of a class in the (64 default) caches. */
		assert_true(
		    (uint64_t)s.cls[i].cache_cap * QUAY_POOL_CACHE_THREADS_DEFAULT * 4 <= s.cls[i].buffers);
		assert_true(s.cls[i].cache_cap <= QUAY_POOL_CACHE_DEFAULT);
		arena += sizes[i] * s.cls[i].buffers;
		/* The even split: each class gets about a fifth. */
		if (i > 0)
			assert_true(sizes[i] * s.cls[i].buffers <= 8 * MIB / 5);
	}
	assert_int_equal(s.arena_bytes, arena);
	assert_true(s.arena_bytes <= 8 * MIB);
	assert_true(s.arena_bytes > 8 * MIB - 65536); /* little is wasted */
	assert_int_equal(s.in_use, 0);
	assert_int_equal(s.in_use_bytes, 0);
	assert_int_equal(s.alloc_failures, 0);
	assert_int_equal(quay_pool_max_body(p), 65536 - QUAY_MSG_ENVELOPE);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
test_create_explicit_counts(void **state)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;
	struct quay_pool_stats s;

	(void)state;
	o.nclasses = 3;
	o.class_size[0] = 256;
	o.class_size[1] = 512;
	o.class_size[2] = 8192;
	o.class_count[0] = 10;
	o.class_count[1] = 3;
	o.class_count[2] = 2;
	/* Exactly the sum is accepted. */
	assert_int_equal(quay_pool_create(2560 + 1536 + 16384, &o, &p), 0);
	s = stats_of(p);
	assert_int_equal(s.nclasses, 3);
	assert_int_equal(s.cls[0].buffers, 10);
	assert_int_equal(s.cls[1].buffers, 3);
	assert_int_equal(s.cls[2].buffers, 2);
	assert_int_equal(s.arena_bytes, 2560 + 1536 + 16384);
	assert_int_equal(quay_pool_max_body(p), 8192 - QUAY_MSG_ENVELOPE);
	assert_int_equal(quay_pool_destroy(p), 0);
}

/* ---- exhaustion, reuse, fallback ----------------------------------------- */

static void
test_exhaust_and_reuse(void **state)
{
	quay_pool *p = one_class(512, 4, QUAY_POOL_NO_CACHE);
	quay_msg *m[5] = { NULL };
	quay_msg *extra = SENTINEL_MSG_INIT;
	struct quay_pool_stats s;
	void *freed;

	(void)state;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(quay_msg_new(p, "x", 1, &m[i]), 0);
		for (int j = 0; j < i; j++)
			assert_ptr_not_equal(m[i], m[j]);
	}
	s = stats_of(p);
	assert_int_equal(s.in_use, 4);
	assert_int_equal(s.in_use_bytes, 4 * 512);
	assert_int_equal(s.cls[0].free, 0);
	assert_int_equal(s.cls[0].hwm, 4);
	assert_int_equal(quay_msg_new(p, "x", 1, &extra), -ENOMEM);
	assert_ptr_equal(extra, SENTINEL_MSG_INIT);
	assert_int_equal(quay_msg_alloc(p, 0, &extra), -ENOMEM);
	s = stats_of(p);
	assert_int_equal(s.alloc_failures, 2);

	/* A freed buffer is reused. */
	freed = m[2];
	assert_int_equal(quay_msg_unref(m[2]), 0);
	assert_int_equal(stats_of(p).in_use, 3);
	assert_int_equal(quay_msg_new(p, "y", 1, &m[2]), 0);
	assert_ptr_equal(m[2], freed);
	for (int i = 0; i < 4; i++)
		assert_int_equal(quay_msg_unref(m[i]), 0);
	s = stats_of(p);
	assert_int_equal(s.in_use, 0);
	assert_int_equal(s.cls[0].free, 4);
	assert_int_equal(s.cls[0].hwm, 4);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static struct quay_pool_opts
two_classes(uint32_t flags)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;

	o.nclasses = 2;
	o.class_size[0] = 256;
	o.class_size[1] = 1024;
	o.class_count[0] = 2;
	o.class_count[1] = 2;
	o.flags = flags | QUAY_POOL_NO_CACHE;
	o.headroom = 1;
	return o;
}

static void
test_class_fallback(void **state)
{
	struct quay_pool_opts o = two_classes(0);
	quay_pool *p = NULL;
	quay_msg *m[5];

	(void)state;
	assert_int_equal(quay_pool_create(3 * KIB, &o, &p), 0);
	assert_int_equal(quay_msg_new(p, "a", 1, &m[0]), 0);
	assert_int_equal(quay_msg_new(p, "b", 1, &m[1]), 0);
	assert_int_equal(quay_msg_footprint(m[0]), 256);
	assert_int_equal(quay_msg_footprint(m[1]), 256);
	/* The small class is empty: a larger buffer serves. */
	assert_int_equal(quay_msg_new(p, "c", 1, &m[2]), 0);
	assert_int_equal(quay_msg_footprint(m[2]), 1024);
	assert_int_equal(quay_msg_capacity(m[2]), 1024 - QUAY_MSG_ENVELOPE);
	assert_int_equal(quay_msg_new(p, "d", 1, &m[3]), 0);
	assert_int_equal(quay_msg_new(p, "e", 1, &m[4]), -ENOMEM);
	/* Big messages skip the small class. */
	assert_int_equal(quay_msg_unref(m[0]), 0);
	assert_int_equal(quay_msg_alloc(p, 300, &m[4]), -ENOMEM);
	assert_int_equal(quay_msg_unref(m[3]), 0);
	assert_int_equal(quay_msg_alloc(p, 300, &m[4]), 0);
	assert_int_equal(quay_msg_footprint(m[4]), 1024);
	assert_int_equal(quay_msg_unref(m[1]), 0);
	assert_int_equal(quay_msg_unref(m[2]), 0);
	assert_int_equal(quay_msg_unref(m[4]), 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
test_exact_class(void **state)
{
	struct quay_pool_opts o = two_classes(QUAY_POOL_EXACT_CLASS);
	quay_pool *p = NULL;
	quay_msg *m[3];

	(void)state;
	assert_int_equal(quay_pool_create(3 * KIB, &o, &p), 0);
	assert_int_equal(quay_msg_new(p, "a", 1, &m[0]), 0);
	assert_int_equal(quay_msg_new(p, "b", 1, &m[1]), 0);
	assert_int_equal(quay_msg_new(p, "c", 1, &m[2]), -ENOMEM);
	assert_int_equal(quay_msg_alloc(p, 500, &m[2]), 0);
	assert_int_equal(quay_msg_footprint(m[2]), 1024);
	for (int i = 0; i < 3; i++)
		assert_int_equal(quay_msg_unref(m[i]), 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
test_msgsize(void **state)
{
	quay_pool *p = NULL;
	quay_msg *m = NULL;
	size_t max;
	void *big;

	(void)state;
	assert_int_equal(quay_pool_create(MIB, NULL, &p), 0);
	max = quay_pool_max_body(p);
	big = calloc(1, max + 1);
	assert_non_null(big);
	assert_int_equal(quay_msg_new(p, big, max + 1, &m), -EMSGSIZE);
	assert_null(m);
	assert_int_equal(quay_msg_alloc(p, max + 1, &m), -EMSGSIZE);
	assert_int_equal(quay_msg_alloc(p, SIZE_MAX, &m), -EMSGSIZE);
	assert_int_equal(quay_msg_new_wait(p, big, max + 1, -1, &m), -EMSGSIZE);
	assert_int_equal(quay_msg_alloc_wait(p, max + 1, -1, &m), -EMSGSIZE);
	assert_null(m);
	/* The largest body fits exactly (with no headroom left). */
	assert_int_equal(quay_msg_new(p, big, max, &m), 0);
	assert_int_equal(quay_msg_body_len(m), max);
	assert_int_equal(quay_msg_room(m), 0);
	assert_int_equal(quay_msg_unref(m), 0);
	/* A too-large message is no allocation failure. */
	assert_int_equal(stats_of(p).alloc_failures, 0);
	free(big);
	assert_int_equal(quay_pool_destroy(p), 0);
}

/* ---- stats, destroy, flush: bad input ------------------------------- */

static void
test_misc_bad_input(void **state)
{
	quay_pool *p = NULL;
	struct quay_pool_stats s;

	(void)state;
	assert_int_equal(quay_pool_stats(NULL, &s), -EINVAL);
	assert_int_equal(quay_pool_create(MIB, NULL, &p), 0);
	assert_int_equal(quay_pool_stats(p, NULL), -EINVAL);
	assert_int_equal(quay_pool_destroy(NULL), -EINVAL);
	assert_int_equal(quay_pool_cache_flush(NULL), -EINVAL);
	assert_int_equal(quay_pool_max_body(NULL), 0);
	assert_int_equal(quay_pool_cache_flush(p), 0); /* nothing cached yet */
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
test_destroy_busy(void **state)
{
	quay_pool *p = NULL;
	quay_msg *m = NULL, *m2 = NULL;

	(void)state;
	assert_int_equal(quay_pool_create(MIB, NULL, &p), 0);
	assert_int_equal(quay_msg_new(p, "hold", 4, &m), 0);
	assert_int_equal(quay_pool_destroy(p), -EAGAIN);
	/* Nothing changed: the message and the pool still work. */
	assert_memory_equal(quay_msg_body(m), "hold", 4);
	assert_int_equal(quay_msg_new(p, "more", 4, &m2), 0);
	assert_int_equal(quay_msg_unref(m2), 0);
	assert_int_equal(quay_msg_ref(m), 0);
	assert_int_equal(quay_msg_unref(m), 0);
	assert_int_equal(quay_pool_destroy(p), -EAGAIN); /* one reference left */
	assert_int_equal(quay_msg_unref(m), 0);
	/* Cached buffers (this thread's) do not block destroy. */
	assert_true(stats_of(p).cls[0].cached > 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

/* ---- caches ------------------------------------------------------------- */

static void
test_cache_flush(void **state)
{
	quay_pool *p = NULL;
	quay_msg *m[8];
	struct quay_pool_stats s;

	(void)state;
	/* 8 MiB: the smallest class has a cache of more than 8 buffers. */
	assert_int_equal(quay_pool_create(8 * MIB, NULL, &p), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(quay_msg_new(p, "c", 1, &m[i]), 0);
	s = stats_of(p);
	assert_int_equal(s.cls[0].in_use, 8);
	assert_true(s.cls[0].cached <= s.cls[0].cache_cap);
	/* A refill took more than one off the stack: hwm counts them. */
	assert_true(s.cls[0].hwm >= 8);
	for (int i = 0; i < 8; i++)
		assert_int_equal(quay_msg_unref(m[i]), 0);
	s = stats_of(p);
	assert_int_equal(s.cls[0].in_use, 0);
	assert_true(s.cls[0].cached >= 8 || s.cls[0].cached == s.cls[0].cache_cap);
	assert_true(s.cls[0].cached <= s.cls[0].cache_cap);
	assert_int_equal(s.cls[0].free + s.cls[0].cached, s.cls[0].buffers);
	assert_int_equal(quay_pool_cache_flush(p), 0);
	s = stats_of(p);
	assert_int_equal(s.cls[0].cached, 0);
	assert_int_equal(s.cls[0].free, s.cls[0].buffers);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
test_cache_bounded(void **state)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;
	quay_msg *m[200];
	struct quay_pool_stats s;

	(void)state;
	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = 1000;
	o.cache_size = 8;
	o.cache_threads = 2;
	assert_int_equal(quay_pool_create(1000 * 256, &o, &p), 0);
	s = stats_of(p);
	assert_int_equal(s.cls[0].cache_cap, 8);
	for (int i = 0; i < 200; i++)
		assert_int_equal(quay_msg_new(p, "b", 1, &m[i]), 0);
	for (int i = 0; i < 200; i++) {
		assert_int_equal(quay_msg_unref(m[i]), 0);
		assert_true(stats_of(p).cls[0].cached <= 8);
	}
	s = stats_of(p);
	assert_int_equal(s.cls[0].free + s.cls[0].cached, 1000);
	assert_int_equal(quay_pool_destroy(p), 0);

	/* Small classes get no cache at all (a quarter of 40 over 64 threads). */
	o.class_count[0] = 40;
	o.cache_size = 0;
	o.cache_threads = 0;
	assert_int_equal(quay_pool_create(40 * 256, &o, &p), 0);
	assert_int_equal(stats_of(p).cls[0].cache_cap, 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

struct churn_arg {
	quay_pool *p;
	int n;
	int rc;
};

static void *
churn_thread(void *v)
{
	struct churn_arg *a = v;
	quay_msg *m[64];

	a->rc = 0;
	for (int round = 0; round < 10; round++) {
		for (int i = 0; i < a->n; i++)
			if (quay_msg_new(a->p, "t", 1, &m[i]) != 0)
				a->rc = -1;
		for (int i = 0; i < a->n; i++)
			if (a->rc == 0)
				quay_msg_unref(m[i]);
	}
	return NULL;
}

static void
test_thread_exit_flushes(void **state)
{
	quay_pool *p = NULL;
	struct churn_arg a[3];
	pthread_t t[3];
	struct quay_pool_stats s;

	(void)state;
	assert_int_equal(quay_pool_create(4 * MIB, NULL, &p), 0);
	for (int i = 0; i < 3; i++) {
		a[i].p = p;
		a[i].n = 48;
		assert_int_equal(pthread_create(&t[i], NULL, churn_thread, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_true(qt_join_within(t[i], 10000));
		assert_int_equal(a[i].rc, 0);
	}
	/* The threads' caches went back to the stacks when they exited. */
	s = stats_of(p);
	assert_int_equal(s.in_use, 0);
	for (unsigned c = 0; c < s.nclasses; c++) {
		assert_int_equal(s.cls[c].cached, 0);
		assert_int_equal(s.cls[c].free, s.cls[c].buffers);
	}
	assert_true(s.cls[0].hwm >= 48);
	assert_int_equal(quay_pool_destroy(p), 0);
}

/* More threads than cache slots: the extra ones work without a cache. */
static void
test_more_threads_than_caches(void **state)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;
	struct churn_arg a[3];
	pthread_t t[3];
	quay_msg *m = NULL;

	(void)state;
	o.cache_threads = 1;
	assert_int_equal(quay_pool_create(4 * MIB, &o, &p), 0);
	assert_int_equal(quay_msg_new(p, "main", 4, &m), 0); /* main takes the slot */
	for (int i = 0; i < 3; i++) {
		a[i].p = p;
		a[i].n = 16;
		assert_int_equal(pthread_create(&t[i], NULL, churn_thread, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		assert_true(qt_join_within(t[i], 10000));
		assert_int_equal(a[i].rc, 0);
	}
	assert_int_equal(quay_msg_unref(m), 0);
	assert_int_equal(stats_of(p).in_use, 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

/* ---- waiting ---------------------------------------------------------- */

static void
test_wait_timeout(void **state)
{
	quay_pool *p = one_class(256, 1, QUAY_POOL_NO_CACHE);
	quay_msg *m = NULL, *m2 = NULL;

	(void)state;
	assert_int_equal(quay_msg_new_wait(p, "a", 1, 0, &m), 0);
	assert_int_equal(quay_msg_new_wait(p, "b", 1, 0, &m2), -ENOMEM); /* try once */
	assert_int_equal(quay_msg_alloc_wait(p, 8, 0, &m2), -ENOMEM);
	assert_int_equal(quay_msg_new_wait(p, "b", 1, 20 * QT_MS, &m2), -ETIMEDOUT);
	assert_int_equal(quay_msg_alloc_wait(p, 8, 5 * QT_MS, &m2), -ETIMEDOUT);
	assert_null(m2);
	assert_int_equal(stats_of(p).alloc_failures, 4);
	assert_true(stats_of(p).waits >= 1);
	assert_int_equal(quay_msg_new_wait(NULL, "b", 1, 0, &m2), -EINVAL);
	assert_int_equal(quay_msg_new_wait(p, NULL, 1, 0, &m2), -EINVAL);
	assert_int_equal(quay_msg_new_wait(p, "b", 1, 0, NULL), -EINVAL);
	assert_int_equal(quay_msg_alloc_wait(NULL, 1, 0, &m2), -EINVAL);
	assert_int_equal(quay_msg_alloc_wait(p, 1, 0, NULL), -EINVAL);
	assert_int_equal(quay_msg_unref(m), 0);
	assert_int_equal(quay_msg_alloc_wait(p, 8, -1, &m2), 0); /* free now */
	assert_int_equal(quay_msg_unref(m2), 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

struct waiter {
	quay_pool *p;
	int64_t timeout;
	int tid;
	int rc;
	quay_msg *m;
};

static void *
waiter_thread(void *v)
{
	struct waiter *w = v;

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_RELEASE);
	w->rc = quay_msg_new_wait(w->p, "w", 1, w->timeout, &w->m);
	return NULL;
}

struct freer {
	quay_msg *m[8];
	int n;
};

static void *
freer_thread(void *v)
{
	struct freer *f = v;

	for (int i = 0; i < f->n; i++)
		quay_msg_unref(f->m[i]);
	/* Stay alive (the cache is not flushed by exit) until joined. */
	return NULL;
}

/* A waiter sleeps (in futex) until another thread frees: the free must
 * wake it, with caches off and with caches on (the freer's cache must not
 * swallow the buffer while someone waits). */
static void
wait_woken_for(uint32_t flags, bool from_thread, int64_t timeout)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;
	quay_msg *held[4];
	struct waiter w = { NULL, -1, 0, 1, NULL };
	pthread_t t, ft;
	struct freer f;
	int tid;

	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = 4;
	o.cache_threads = 1; /* with 4 buffers the cache cap would be 0 */
	o.flags = flags;
	assert_int_equal(quay_pool_create(4 * 256, &o, &p), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(quay_msg_new(p, "h", 1, &held[i]), 0);
	w.p = p;
	w.timeout = timeout;
	assert_int_equal(pthread_create(&t, NULL, waiter_thread, &w), 0);
	while ((tid = __atomic_load_n(&w.tid, __ATOMIC_ACQUIRE)) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(tid, 5000));
	if (from_thread) {
		f.n = 1;
		f.m[0] = held[0];
		assert_int_equal(pthread_create(&ft, NULL, freer_thread, &f), 0);
		assert_true(qt_join_within(ft, 5000));
	} else {
		assert_int_equal(quay_msg_unref(held[0]), 0);
	}
	assert_true(qt_join_within(t, 5000));
	assert_int_equal(w.rc, 0);
	assert_non_null(w.m);
	assert_int_equal(quay_msg_unref(w.m), 0);
	for (int i = 1; i < 4; i++)
		assert_int_equal(quay_msg_unref(held[i]), 0);
	assert_int_equal(stats_of(p).in_use, 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
wait_woken(uint32_t flags, bool from_thread)
{
	wait_woken_for(flags, from_thread, -1);
}

/* A huge finite timeout is not "already expired": its deadline must not
 * overflow (it once did: mono_ns() + INT64_MAX). */
static void
test_wait_woken_huge_timeout(void **state)
{
	(void)state;
	wait_woken_for(QUAY_POOL_NO_CACHE, false, INT64_MAX);
	wait_woken_for(QUAY_POOL_NO_CACHE, true, INT64_MAX - 1);
}

static void
test_wait_woken_nocache(void **state)
{
	(void)state;
	wait_woken(QUAY_POOL_NO_CACHE, false);
	wait_woken(QUAY_POOL_NO_CACHE, true);
}

static void
test_wait_woken_cache(void **state)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;

	(void)state;
	/* The shape used by wait_woken really has a cache. */
	o.nclasses = 1;
	o.class_size[0] = 256;
	o.class_count[0] = 4;
	o.cache_threads = 1;
	assert_int_equal(quay_pool_create(4 * 256, &o, &p), 0);
	assert_int_equal(stats_of(p).cls[0].cache_cap, 1);
	assert_int_equal(quay_pool_destroy(p), 0);
	wait_woken(0, false);
	wait_woken(0, true);
}

/* ---- clock -------------------------------------------------------------- */

static int64_t
fake_clock(void *arg)
{
	return *(int64_t *)arg;
}

static void
test_injected_clock(void **state)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	int64_t now = 1234567890;
	quay_pool *p = NULL;
	quay_msg *m = NULL;

	(void)state;
	o.clock = fake_clock;
	o.clock_arg = &now;
	assert_int_equal(quay_pool_create(MIB, &o, &p), 0);
	assert_int_equal(quay_msg_new(p, "t", 1, &m), 0);
	assert_int_equal(quay_msg_created_ns(m), 1234567890);
	assert_int_equal(quay_msg_unref(m), 0);
	now = 42;
	assert_int_equal(quay_msg_alloc(p, 10, &m), 0);
	assert_int_equal(quay_msg_created_ns(m), 42);
	assert_int_equal(quay_msg_unref(m), 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

static void
test_headroom_opt(void **state)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;
	quay_msg *m = NULL;

	(void)state;
	o.headroom = 2000;
	assert_int_equal(quay_pool_create(MIB, &o, &p), 0);
	assert_int_equal(quay_msg_new(p, "t", 1, &m), 0);
	assert_true(quay_msg_room(m) >= 2000);
	assert_int_equal(quay_msg_footprint(m), 4096);
	assert_int_equal(quay_msg_unref(m), 0);
	assert_int_equal(quay_pool_destroy(p), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_create_bad_input),
		QT_TEST(test_create_defaults),
		QT_TEST(test_create_explicit_counts),
		QT_TEST(test_exhaust_and_reuse),
		QT_TEST(test_class_fallback),
		QT_TEST(test_exact_class),
		QT_TEST(test_msgsize),
		QT_TEST(test_misc_bad_input),
		QT_TEST(test_destroy_busy),
		QT_TEST(test_cache_flush),
		QT_TEST(test_cache_bounded),
		QT_TEST(test_thread_exit_flushes),
		QT_TEST(test_more_threads_than_caches),
		QT_TEST(test_wait_timeout),
		QT_TEST(test_wait_woken_nocache),
		QT_TEST(test_wait_woken_cache),
		QT_TEST(test_wait_woken_huge_timeout),
		QT_TEST(test_injected_clock),
		QT_TEST(test_headroom_opt),
	};

	return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
