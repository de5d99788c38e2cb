/* SPDX-License-Identifier: MIT */
/* quay_nats_close() against what other threads and the application still
 * do with the handle's work, against a real nats-server started here and
 * a plain libnats client as the other side:
 *   - imported messages held (or left in a local subscription) across
 *     close stay readable, and the handle's memory (its own import pool
 *     included) is all given back at their last unref, not before and
 *     not never (a counting allocator tells);
 *   - a local responder's quay_bus_reply() to an imported NATS request,
 *     and its last unref of that request, run while the requester (the
 *     NATS client) has its reply and the handle is closed: nothing is
 *     freed under them (ASan and TSan watch; the same count checks that
 *     the pool went away once the last request was unref'd), with and
 *     without QUAY_NATS_DIRECT (where the reply is published from the
 *     bus's tap on the responder's thread).
 * QUAY_TEST_ROUNDS (default 8) rounds of the second per mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include <quay/alloc.h>
#include <quay/bus.h>
#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

static struct test_server srv;
static const char *url;
static quay_pool *pool; /* the responders' replies */

/* ---- an allocator that counts the handle's live bytes ---------------- */

struct counting {
	int64_t live; /* atomic: blocks may be freed on any thread */
};

static void *
ca_alloc(void *ctx, size_t size, size_t align)
{
	struct counting *c = ctx;
	void *p = NULL;

	if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, size) != 0)
		return NULL;
	/* Relaxed: a count, read after the threads that free are done. */
	__atomic_add_fetch(&c->live, (int64_t)size, __ATOMIC_RELAXED);
	return p;
}

static void
ca_free(void *ctx, void *p, size_t size, size_t align)
{
	struct counting *c = ctx;

	(void)align;
	/* Relaxed: a count (see ca_alloc). */
	__atomic_sub_fetch(&c->live, (int64_t)size, __ATOMIC_RELAXED);
	free(p);
}

static int64_t
ca_live(struct counting *c)
{
	/* Relaxed: a count (see ca_alloc). */
	return __atomic_load_n(&c->live, __ATOMIC_RELAXED);
}

/* ---- helpers --------------------------------------------------------- */

static int
grp_setup(void **st)
{
	(void)st;
	ts_init(&srv);
	url = srv.url;
	return quay_pool_create((size_t)4 << 20, NULL, &pool);
}

static int
grp_teardown(void **st)
{
	(void)st;
	ts_fini(&srv);
	return quay_pool_destroy(pool);
}

static unsigned no_flags = 0, direct_flag = QUAY_NATS_DIRECT;

static unsigned
flags_of(void **st)
{
	return *st != NULL ? *(unsigned *)*st : 0;
}

static quay_nats *
conn(unsigned flags, const struct quay_allocator *a)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *n = NULL;

	o.urls = &url;
	o.nurls = 1;
	o.flags = flags;
	o.allocator = a;
	assert_int_equal(quay_nats_connect(&o, &n), 0);
	return n;
}

static natsConnection *
client(void)
{
	natsConnection *cli = NULL;

	assert_int_equal(natsConnection_ConnectTo(&cli, url), NATS_OK);
	return cli;
}

static int
rounds(void)
{
	const char *e = getenv("QUAY_TEST_ROUNDS");
	int r = e != NULL ? atoi(e) : 8;

	return r > 0 ? r : 8;
}

/* ---- held across close ------------------------------------------------ */

/* Three NATS messages imported; two received and held, one left in the
 * local subscription; the handle closed. The held ones stay readable;
 * the handle's memory goes back only with the last of the three. */
static void
test_held_across_close(void **st)
{
	struct counting cnt = { 0 };
	const struct quay_allocator a = { ca_alloc, ca_free, NULL, &cnt };
	quay_nats *n = conn(flags_of(st), &a);
	natsConnection *cli = client();
	struct quay_nats_counters c;
	quay_msg *held[2];
	quay_bus *bus;
	quay_sub *sub;

	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, "close.held", NULL, &sub), 0);
	assert_int_equal(quay_nats_import(n, bus, "close.held", NULL), 0);
	assert_int_equal(quay_nats_flush(n, 2000000000), 0); /* the import's SUB is in */
	for (int i = 0; i < 3; i++) {
		char body[8];
		snprintf(body, sizeof(body), "m%d", i);
		assert_int_equal(natsConnection_PublishString(cli, "close.held", body), NATS_OK);
	}
	assert_int_equal(natsConnection_Flush(cli), NATS_OK);
	for (int i = 0; i < 500; i++) {
		assert_int_equal(quay_nats_counters(n, &c), 0);
		if (c.received == 3)
			break;
		usleep(10000);
	}
	assert_int_equal(c.received, 3);
	for (int i = 0; i < 2; i++)
		assert_int_equal(quay_sub_receive(sub, &held[i], 5000000000), 0);

	quay_nats_close(n);

	/* Still the messages they were (ASan: a pool freed at close makes
	 * these reads a use after free). */
	for (int i = 0; i < 2; i++) {
		char body[8];
		const void *v;
		size_t vl;
		snprintf(body, sizeof(body), "m%d", i);
		assert_int_equal(quay_msg_body_len(held[i]), strlen(body));
		assert_memory_equal(quay_msg_body(held[i]), body, strlen(body));
		assert_int_equal(quay_msg_get_header(held[i], QUAY_NATS_H_FROM, &v, &vl), 0);
		assert_int_equal(vl, 4);
		assert_memory_equal(v, "nats", 4);
	}
	assert_true(ca_live(&cnt) > 0); /* the pool lives while they do */
	for (int i = 0; i < 2; i++)
		assert_int_equal(quay_msg_unref(held[i]), 0);
	assert_true(ca_live(&cnt) > 0); /* the third one, in the subscription */
	/* Releases the third: the last reference of the handle's pool. */
	assert_int_equal(quay_bus_unsubscribe(sub), 0);
	assert_int_equal(ca_live(&cnt), 0);
	quay_bus_destroy(bus);
	natsConnection_Destroy(cli);
}

/* ---- a reply and a last unref concurrent with close -------------------- */

struct responder {
	quay_bus *bus;
	quay_sub *sub;
	/* Set by the test after close (a responder told to wait, late, keeps
	 * its request until then), or when the request failed. Acquire /
	 * release: only go signals. */
	int closed;
	int stop;
	bool late;
	int replied; /* replies sent; read after the join */
};

/* Answers one request, then returns (a receive must not start once the
 * test unsubscribes: that comes after the join). */
static void *
responder_run(void *arg)
{
	struct responder *r = arg;

	/* Acquire; pairs with the test's release store of stop. */
	while (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) == 0) {
		quay_msg *req, *rep;
		int e = quay_sub_receive(r->sub, &req, 100000000);

		if (e == -ETIMEDOUT)
			continue;
		if (e != 0)
			break;
		if (quay_msg_new(pool, "pong", 4, &rep) == 0) {
			if (quay_bus_reply(r->bus, req, rep) < 0)
				(void)quay_msg_unref(rep);
			else
				r->replied++;
		}
		/* Acquire; pairs with the test's release store after close. */
		while (r->late && __atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) == 0)
			usleep(1000);
		/* The last reference of an imported message: its pool is the
		 * handle's. */
		(void)quay_msg_unref(req);
		break;
	}
	/* Not gone before close returned: the thread's exit (liburcu
	 * unregisters it under the lock a grace period takes) would order
	 * the unref before close for TSan, hiding a missing edge. Acquire;
	 * pairs with the test's release store after close. */
	while (__atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) == 0 &&
	    __atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) == 0)
		usleep(1000);
	return NULL;
}

/* A NATS request answered by a local responder; the handle is closed as
 * soon as the requester has the reply, while the responder may still be
 * inside quay_bus_reply() (its tail in the handle's reply path) or in its
 * last unref of the request (in the handle's pool). In the second half
 * of the rounds the responder holds the request until after close. */
static void
test_reply_races_close(void **st)
{
	int nr = rounds();

	for (int round = 0; round < nr; round++) {
		struct counting cnt = { 0 };
		const struct quay_allocator a = { ca_alloc, ca_free, NULL, &cnt };
		struct responder r = { 0 };
		natsConnection *cli = client();
		natsMsg *reply = NULL;
		quay_nats *n = conn(flags_of(st), &a);
		pthread_t th;

		r.late = round >= nr / 2;
		assert_int_equal(quay_bus_create(NULL, &r.bus), 0);
		assert_int_equal(quay_bus_subscribe(r.bus, "close.rr", NULL, &r.sub), 0);
		assert_int_equal(quay_nats_import(n, r.bus, "close.rr", NULL), 0);
		assert_int_equal(quay_nats_flush(n, 2000000000), 0); /* the import's SUB is in */
		assert_int_equal(pthread_create(&th, NULL, responder_run, &r), 0);
		if (natsConnection_RequestString(&reply, cli, "close.rr", "ping", 5000) != NATS_OK) {
			/* Release; pairs with the responder's acquire. */
			__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
			pthread_join(th, NULL);
			fail_msg("round %d: no reply", round);
		}
		assert_int_equal(natsMsg_GetDataLength(reply), 4);
		assert_memory_equal(natsMsg_GetData(reply), "pong", 4);
		natsMsg_Destroy(reply);

		quay_nats_close(n); /* the responder may be anywhere in its round */

		/* Release; pairs with the responder's acquire. */
		__atomic_store_n(&r.closed, 1, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
		assert_int_equal(r.replied, 1);
		assert_int_equal(quay_bus_unsubscribe(r.sub), 0);
		/* The request was the pool's last message: all memory back. */
		if (ca_live(&cnt) != 0)
			fail_msg("round %d (%s): %lld bytes of the handle's still allocated", round,
			    r.late ? "unref after close" : "unref racing close", (long long)ca_live(&cnt));
		quay_bus_destroy(r.bus);
		natsConnection_Destroy(cli);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_prestate(test_held_across_close, &no_flags),
		cmocka_unit_test_prestate(test_held_across_close, &direct_flag),
		cmocka_unit_test_prestate(test_reply_races_close, &no_flags),
		cmocka_unit_test_prestate(test_reply_races_close, &direct_flag),
	};
	return cmocka_run_group_tests_name("nats_close", tests, grp_setup, grp_teardown);
}
