/* SPDX-License-Identifier: MIT */
/*
 * Message pool benchmarks (issue 3 section 5): alloc+free per second from
 * one thread, from two threads on one pool, and with the free on another
 * thread (producer -> SPSC ring -> consumer), each against malloc/free in
 * the same binary; and the cost of a message with headers. C bodies,
 * registered through bench/shim/quay_bench.h; the pool is made and
 * destroyed by the setup and teardown hooks of each run.
 *
 *   BM_pool_alloc_unref/{cache,nocache}   quay_msg_alloc(64) + quay_msg_unref
 *   BM_pool_alloc_unref/cache_noclock     the same with an injected clock (no
 *                                          clock_gettime): the pool's own cost
 *   BM_malloc_free                         malloc(192) + free (same footprint)
 *   ..._threads:2                          both threads on one pool / malloc
 *   BM_cross_pool / BM_cross_malloc        allocate here, free on a helper thread
 *   BM_msg_new_headers_unref               new(100 B) + 3 headers + reply-to + unref
 *   BM_msg_new_unref                       new(100 B) + unref
 *   BM_msg_get_header                      one header lookup among three
 *   BM_msg_ref_unref_shared                ref + unref of a shared message
 *
 * The cross-thread benchmarks' done flag is a release store / acquire load
 * pair: the helper that sees it also sees every pointer pushed before it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/quay.h>

#include "quay_bench.h"

static quay_pool *g_pool;

static quay_pool *
make_pool(uint32_t flags)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	quay_pool *p = NULL;

	o.flags = flags;
	if (quay_pool_create((size_t)64 << 20, &o, &p) != 0)
		abort();
	return p;
}

static int64_t
no_clock(void *arg)
{
	(void)arg;
	return 0;
}

static void
setup_cache(const qb_state *st, void *arg)
{
	(void)st, (void)arg;
	g_pool = make_pool(0);
}
/* The same pool without the CLOCK_REALTIME read that stamps created_ns
 * (about 20-50 ns here): the pool's own cost. */
static void
setup_cache_noclock(const qb_state *st, void *arg)
{
	struct quay_pool_opts o = QUAY_POOL_OPTS_INIT;
	(void)st, (void)arg;
	o.clock = no_clock;
	if (quay_pool_create((size_t)64 << 20, &o, &g_pool) != 0)
		abort();
}
static void
setup_nocache(const qb_state *st, void *arg)
{
	(void)st, (void)arg;
	g_pool = make_pool(QUAY_POOL_NO_CACHE);
}
static void
teardown_pool(const qb_state *st, void *arg)
{
	(void)st, (void)arg;
	quay_pool_cache_flush(g_pool);
	if (quay_pool_destroy(g_pool) != 0)
		abort();
	g_pool = NULL;
}

static void
pool_alloc_unref(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			quay_msg *m = NULL;
			if (quay_msg_alloc(g_pool, 64, &m) != 0)
				abort();
			qb_do_not_optimize(m);
			quay_msg_unref(m);
		}
	/* The thread's cache is flushed when the benchmark thread exits (or
	 * at teardown for the main thread). */
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

static void
malloc_free(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			void *p = malloc(QUAY_MSG_ENVELOPE + 64);
			qb_do_not_optimize(p);
			free(p);
		}
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

/* ---- cross-thread free --------------------------------------------------- */

/* Pointers go through a quay SPSC ring to a helper thread that frees them. */
struct cross {
	quay_ring *r;
	bool done;
	bool pool; /* quay messages, else malloc */
};

static inline void *
cross_alloc(bool pool)
{
	if (!pool)
		return malloc(QUAY_MSG_ENVELOPE + 64);
	quay_msg *m = NULL;
	return quay_msg_alloc(g_pool, 64, &m) == 0 ? (void *)m : NULL;
}

static void *
cross_consumer(void *arg)
{
	struct cross *c = arg;
	void *p;
	for (;;) {
		if (quay_ring_pop(c->r, &p) == 0) {
			if (c->pool)
				quay_msg_unref(p);
			else
				free(p);
			continue;
		}
		/* Pairs with the release store in cross_run. */
		if (__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) && quay_ring_count(c->r) == 0)
			break;
	}
	return NULL;
}

static void
cross_run(qb_state *st, void *arg)
{
	struct cross c = {NULL, false, arg != NULL};
	pthread_t consumer;

	if (quay_ring_create(1024, sizeof(void *), QUAY_RING_SP | QUAY_RING_SC, &c.r) != 0 ||
	    pthread_create(&consumer, NULL, cross_consumer, &c) != 0)
		abort();
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			void *p = cross_alloc(c.pool);
			while (p == NULL) /* pool momentarily empty: retry */
				p = cross_alloc(c.pool);
			while (quay_ring_push(c.r, &p) != 0)
				;
		}
	__atomic_store_n(&c.done, true, __ATOMIC_RELEASE); /* pairs with cross_consumer's load */
	pthread_join(consumer, NULL);
	quay_ring_destroy(c.r);
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

/* ---- a message with headers ---------------------------------------------- */

static const char body[100] = "benchmark body";

static void
msg_new_unref(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			quay_msg *m = NULL;
			if (quay_msg_new(g_pool, body, sizeof(body), &m) != 0)
				abort();
			qb_do_not_optimize(m);
			quay_msg_unref(m);
		}
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

static void
msg_new_headers_unref(qb_state *st, void *arg)
{
	const uint64_t trace = 42;
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			quay_msg *m = NULL;
			if (quay_msg_new(g_pool, body, sizeof(body), &m) != 0)
				abort();
			quay_msg_set_header(m, "content-type", "application/json", 16);
			quay_msg_set_header(m, "trace", &trace, sizeof(trace));
			quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "order-1234", 10);
			quay_msg_set_reply_to(m, "_INBOX.abc");
			quay_msg_set_priority(m, 5);
			qb_do_not_optimize(m);
			quay_msg_unref(m);
		}
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

static void
msg_get_header(qb_state *st, void *arg)
{
	quay_msg *m = NULL;
	(void)arg;
	if (quay_msg_new(g_pool, body, sizeof(body), &m) != 0)
		abort();
	quay_msg_set_header(m, "content-type", "application/json", 16);
	quay_msg_set_header(m, "trace", "x", 1);
	quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "order-1234", 10);
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			const void *v = NULL;
			size_t len = 0;
			int rc = quay_msg_get_header(m, "content-type", &v, &len);
			qb_do_not_optimize(rc);
			qb_do_not_optimize(v);
		}
	quay_msg_unref(m);
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

/* Fan-out cost: ref N times, unref N + 1 times (the shared path's CAS). */
static void
msg_ref_unref_shared(qb_state *st, void *arg)
{
	quay_msg *m = NULL;
	(void)arg;
	if (quay_msg_new(g_pool, body, 1, &m) != 0)
		abort();
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++) {
			quay_msg_ref(m);
			quay_msg_unref(m);
		}
	quay_msg_unref(m);
	qb_set_items_processed(st, (int64_t)qb_iterations_done(st));
}

/* name, body, pool setup (NULL: none); with a pool, teardown_pool. */
static qb_bench *
add(const char *name, qb_fn fn, void *arg, qb_hook setup)
{
	qb_bench *b = qb_register(name, fn, arg);
	if (setup != NULL)
		qb_teardown(qb_setup(b, setup, NULL), teardown_pool, NULL);
	return b;
}

int
main(int argc, char **argv)
{
	static const qb_hook alloc_setups[] = {setup_cache, setup_cache_noclock, setup_nocache};
	static const char *const alloc_names[] = {"BM_pool_alloc_unref/cache", "BM_pool_alloc_unref/cache_noclock",
	    "BM_pool_alloc_unref/nocache"};
	for (int i = 0; i < 3; i++)
		qb_real_time(
		    qb_threads(qb_threads(add(alloc_names[i], pool_alloc_unref, NULL, alloc_setups[i]), 1), 2));
	qb_real_time(qb_threads(qb_threads(add("BM_malloc_free", malloc_free, NULL, NULL), 1), 2));
	qb_real_time(add("BM_cross_pool/cache", cross_run, (void *)1, setup_cache));
	qb_real_time(add("BM_cross_pool/nocache", cross_run, (void *)1, setup_nocache));
	qb_real_time(add("BM_cross_malloc", cross_run, NULL, NULL));
	add("BM_msg_new_unref", msg_new_unref, NULL, setup_cache);
	add("BM_msg_new_headers_unref", msg_new_headers_unref, NULL, setup_cache);
	add("BM_msg_new_headers_unref/noclock", msg_new_headers_unref, NULL, setup_cache_noclock);
	add("BM_msg_get_header", msg_get_header, NULL, setup_cache);
	add("BM_msg_ref_unref_shared", msg_ref_unref_shared, NULL, setup_cache);
	return qb_main(argc, argv);
}
