/* SPDX-License-Identifier: MIT */
/* The NATS module's calls one by one, against a real nats-server started
 * here, with a plain libnats connection as the other side: bad input,
 * unreachable servers, the header/subject mapping both ways, subjects
 * quay refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include <quay/bus.h>
#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

static struct test_server srv;
static const char *url;
static quay_pool *pool;

static int
grp_setup(void **st)
{
	(void)st;
	ts_init(&srv);
	url = srv.url;
	return quay_pool_create((size_t)16 << 20, NULL, &pool);
}

static int
grp_teardown(void **st)
{
	(void)st;
	ts_fini(&srv);
	return quay_pool_destroy(pool);
}

static quay_nats *
conn_flags(unsigned flags)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *n = NULL;
	o.urls = &url;
	o.nurls = 1;
	o.flags = flags;
	assert_int_equal(quay_nats_connect(&o, &n), 0);
	return n;
}

static quay_nats *
conn(void)
{
	return conn_flags(0);
}

/* A test's flags from its prestate (NULL: 0). */
static unsigned no_flags = 0, direct_flag = QUAY_NATS_DIRECT;

static unsigned
flags_of(void **st)
{
	return *st != NULL ? *(unsigned *)*st : 0;
}

static void
test_connect_bad_opts(void **st)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	const char *urls[2] = { "nats://127.0.0.1:1", NULL };
	quay_nats *n = (quay_nats *)&o;
	(void)st;

	assert_int_equal(quay_nats_connect(&o, NULL), -EINVAL);
	o.size = 8;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.size = sizeof(o);
	o.flags = QUAY_NATS_DIRECT << 1; /* not a flag */
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.flags = 0;
	o.nurls = QUAY_NATS_URLS_MAX + 1;
	o.urls = urls;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.nurls = 1;
	o.urls = NULL;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.urls = urls;
	o.nurls = 2; /* urls[1] is NULL */
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.nurls = 1;
	o.creds_file = "x.creds";
	o.token = "t";
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.creds_file = o.token = NULL;
	/* An nkey needs its seed file and the other way round; it excludes
	 * a token and a creds file. */
	o.nkey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.nkey_seed_file = "/nonexistent/quay.nk";
	o.token = "t";
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.token = NULL;
	o.creds_file = "x.creds";
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.creds_file = NULL;
	o.nkey = NULL;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.nkey_seed_file = NULL;
	o.reconnect_wait_ns = -1;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.reconnect_wait_ns = 0;
	o.connect_timeout_ns = -1;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.connect_timeout_ns = 0;
	o.export_capacity = 3;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	o.export_capacity = 0;
	o.reconnect_buf_bytes = (size_t)1 << 40;
	assert_int_equal(quay_nats_connect(&o, &n), -EINVAL);
	assert_ptr_equal(n, (quay_nats *)&o); /* untouched on failure */
	o.reconnect_buf_bytes = 0;
	o.creds_file = "/nonexistent/quay.creds";
	o.urls = &url;
	assert_int_equal(quay_nats_connect(&o, &n), -ENOENT);
	o.creds_file = NULL;
	o.nkey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";
	o.nkey_seed_file = "/nonexistent/quay.nk";
	assert_int_equal(quay_nats_connect(&o, &n), -ENOENT);
	assert_ptr_equal(n, (quay_nats *)&o);
	quay_nats_close(NULL);
}

static void
test_unreachable(void **st)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	char refused[64];
	const char *u = refused;
	const char *blackhole = "nats://10.255.255.1:4222";
	quay_nats *n = NULL;
	(void)st;

	/* A port nobody listens on: refused at once. */
	snprintf(refused, sizeof(refused), "nats://127.0.0.1:%d", ts_free_port());
	o.urls = &u;
	o.nurls = 1;
	assert_int_equal(quay_nats_connect(&o, &n), -ECONNREFUSED);
	assert_null(n);
	/* An address that never answers: bounded by connect_timeout_ns (the
	 * meson timeout catches a hang; the time is not asserted). */
	o.urls = &blackhole;
	o.connect_timeout_ns = 300000000;
	assert_int_equal(quay_nats_connect(&o, &n), -ECONNREFUSED);
	assert_null(n);
}

static void
test_bridge_bad_input(void **st)
{
	quay_nats *n = conn();
	quay_bus *bus;
	quay_msg *m;
	struct quay_nats_counters c;
	(void)st;

	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_nats_export(NULL, bus, "a"), -EINVAL);
	assert_int_equal(quay_nats_export(n, NULL, "a"), -EINVAL);
	assert_int_equal(quay_nats_export(n, bus, NULL), -EINVAL);
	assert_int_equal(quay_nats_export(n, bus, "a..b"), -EINVAL);
	assert_int_equal(quay_nats_export(n, bus, "foo*"), -EINVAL);
	assert_int_equal(quay_nats_export(n, bus, "foo.>-"), -EINVAL);
	assert_int_equal(quay_nats_export(n, bus, "a.>.b"), -EINVAL);
	assert_int_equal(quay_nats_export(n, bus, "a.b"), 0);
	assert_int_equal(quay_nats_export(n, bus, "a.b"), -EEXIST);
	assert_int_equal(quay_nats_import(NULL, bus, "a", NULL), -EINVAL);
	assert_int_equal(quay_nats_import(n, NULL, "a", NULL), -EINVAL);
	assert_int_equal(quay_nats_import(n, bus, NULL, NULL), -EINVAL);
	assert_int_equal(quay_nats_import(n, bus, "*bar", NULL), -EINVAL);
	assert_int_equal(quay_nats_import(n, bus, "", NULL), -EINVAL);
	assert_int_equal(quay_nats_import(n, bus, "a", ""), -EINVAL);
	assert_int_equal(quay_nats_import(n, bus, "a", "g h"), -EINVAL);
	assert_int_equal(quay_nats_import(n, bus, "in.>", "g"), 0);
	assert_int_equal(quay_nats_import(n, bus, "in.>", "g"), -EEXIST);
	assert_int_equal(quay_nats_import(n, bus, "in.>", NULL), -EEXIST);
	assert_int_equal(quay_nats_import(n, bus, "in.>", "other"), -EEXIST);
	assert_int_equal(quay_msg_new(pool, "x", 1, &m), 0);
	assert_int_equal(quay_nats_publish(NULL, "a", m), -EINVAL);
	assert_int_equal(quay_nats_publish(n, NULL, m), -EINVAL);
	assert_int_equal(quay_nats_publish(n, "a", NULL), -EINVAL);
	assert_int_equal(quay_nats_publish(n, "a.*", m), -EINVAL);
	assert_int_equal(quay_nats_publish(n, "a", m), 0);
	quay_msg_unref(m);
	assert_int_equal(quay_nats_flush(NULL, 1000000), -EINVAL);
	assert_int_equal(quay_nats_flush(n, 0), -EINVAL);
	assert_int_equal(quay_nats_flush(n, 1000000000), 0);
	assert_true(quay_nats_connected(n));
	assert_false(quay_nats_connected(NULL));
	assert_int_equal(quay_nats_counters(NULL, &c), -EINVAL);
	assert_int_equal(quay_nats_counters(n, NULL), -EINVAL);
	assert_null(quay_nats_stats(NULL));
	assert_non_null(quay_nats_stats(n));
	quay_nats_close(n);
	quay_bus_destroy(bus);
}

static natsConnection *
plain(void)
{
	natsConnection *nc;
	assert_int_equal(natsConnection_ConnectTo(&nc, url), NATS_OK);
	return nc;
}

/* Local -> NATS: subject, body, headers (binary values), priority,
 * correlation id, origin; wildcard exports on the published subject. */
static void
test_export_mapping(void **st)
{
	natsConnection *nc = plain();
	natsSubscription *ps;
	natsMsg *nm;
	quay_nats *n = conn_flags(flags_of(st));
	quay_bus *bus;
	quay_msg *m;
	const char *v;
	static const unsigned char bin[] = { 0, 1, ':', '%', ' ', 0xff, 'z' };
	struct quay_nats_counters c;

	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(natsConnection_SubscribeSync(&ps, nc, "map.>"), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);
	assert_int_equal(quay_nats_export(n, bus, "map.x"), 0);
	assert_int_equal(quay_nats_export(n, bus, "map.w.>"), 0);

	assert_int_equal(quay_msg_new(pool, "hello", 5, &m), 0);
	assert_int_equal(quay_msg_set_header(m, "k1", "v1", 2), 0);
	assert_int_equal(quay_msg_set_header(m, "bin key", bin, sizeof(bin)), 0);
	quay_msg_set_priority(m, 7);
	quay_msg_set_correlation_id(m, 12345);
	assert_int_equal(quay_bus_publish(bus, "map.x", m), 1);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_string_equal(natsMsg_GetSubject(nm), "map.x");
	assert_int_equal(natsMsg_GetDataLength(nm), 5);
	assert_memory_equal(natsMsg_GetData(nm), "hello", 5);
	assert_int_equal(natsMsgHeader_Get(nm, "k1", &v), NATS_OK);
	assert_string_equal(v, "v1");
	assert_int_equal(natsMsgHeader_Get(nm, "bin%20key", &v), NATS_OK);
	assert_string_equal(v, "%00%01%3A%25%20%FFz");
	assert_int_equal(natsMsgHeader_Get(nm, "Quay-Priority", &v), NATS_OK);
	assert_string_equal(v, "7");
	assert_int_equal(natsMsgHeader_Get(nm, "Quay-Correlation-Id", &v), NATS_OK);
	assert_string_equal(v, "12345");
	assert_int_equal(natsMsgHeader_Get(nm, "Quay-Origin", &v), NATS_OK);
	assert_int_equal(strlen(v), 16);
	natsMsg_Destroy(nm);

	/* Wildcard export: each message on the subject it was published
	 * on (the bus tap), with no local subscriber (the export counts as
	 * the delivery), and not a subject outside the pattern. */
	assert_int_equal(quay_msg_new(pool, "w1", 2, &m), 0);
	assert_int_equal(quay_bus_publish(bus, "map.w.a.b", m), 1);
	assert_int_equal(quay_msg_new(pool, "w2", 2, &m), 0);
	assert_int_equal(quay_bus_publish(bus, "map.w.c", m), 1);
	assert_int_equal(quay_msg_new(pool, "w3", 2, &m), 0);
	assert_int_equal(quay_bus_publish(bus, "other.x", m), 0);
	{
		quay_msg *bm[3];
		for (int i = 0; i < 3; i++)
			assert_int_equal(quay_msg_new(pool, "b", 1, &bm[i]), 0);
		assert_int_equal(quay_bus_publish_batch(bus, "map.w.batch", bm, 3), 3);
	}
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_string_equal(natsMsg_GetSubject(nm), "map.w.a.b");
	assert_memory_equal(natsMsg_GetData(nm), "w1", 2);
	natsMsg_Destroy(nm);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_string_equal(natsMsg_GetSubject(nm), "map.w.c");
	assert_memory_equal(natsMsg_GetData(nm), "w2", 2);
	natsMsg_Destroy(nm);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
		assert_string_equal(natsMsg_GetSubject(nm), "map.w.batch");
		natsMsg_Destroy(nm);
	}
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 300), NATS_TIMEOUT);
	assert_int_equal(quay_nats_counters(n, &c), 0);
	assert_int_equal(c.forwarded, 6);
	assert_int_equal(c.invalid, 0);
	assert_int_equal(c.dropped, 0);
	/* A second handle's wildcard export of the same bus: one tap per
	 * bus. A literal one is fine. */
	{
		quay_nats *n2 = conn();
		assert_int_equal(quay_nats_export(n2, bus, "map.v.*"), -EEXIST);
		assert_int_equal(quay_nats_export(n2, bus, "map.v.x"), 0);
		quay_nats_close(n2);
	}
	quay_nats_close(n);
	quay_bus_destroy(bus);
	natsSubscription_Destroy(ps);
	natsConnection_Destroy(nc);
}

/* Whether a NATS message has no headers at all. */
static bool
headerless(natsMsg *nm)
{
	const char **keys = NULL;
	int nk = 0;
	natsStatus s = natsMsgHeader_Keys(nm, &keys, &nk);
	free((void *)keys);
	return s == NATS_NOT_FOUND || nk == 0;
}

/* Loop rule 2 needs the origin header only with a second handle in the
 * process: alone, a handle sends a message with nothing else for NATS
 * headers header-less; a second handle's connect makes the first send
 * Quay-Origin, so that the second's import of the same subject drops the
 * first's messages (echo_dropped) rather than delivering them again;
 * when the second closes, the first goes header-less again. */
static void
test_origin_rule(void **st)
{
	natsConnection *nc = plain();
	natsSubscription *ps;
	natsMsg *nm;
	quay_nats *n = conn_flags(flags_of(st)), *n2;
	quay_bus *bus, *bus2;
	quay_sub *sub2;
	quay_msg *m;
	const char *v;
	struct quay_nats_counters c;

	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_create(NULL, &bus2), 0);
	assert_int_equal(natsConnection_SubscribeSync(&ps, nc, "orig.x"), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);
	assert_int_equal(quay_nats_export(n, bus, "orig.x"), 0);

	assert_int_equal(quay_msg_new(pool, "a", 1, &m), 0);
	assert_int_equal(quay_bus_publish(bus, "orig.x", m), 1);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_memory_equal(natsMsg_GetData(nm), "a", 1);
	assert_true(headerless(nm));
	natsMsg_Destroy(nm);

	n2 = conn();
	assert_int_equal(quay_bus_subscribe(bus2, "orig.x", NULL, &sub2), 0);
	assert_int_equal(quay_nats_import(n2, bus2, "orig.x", NULL), 0);
	assert_int_equal(quay_nats_flush(n2, 2000000000), 0);
	assert_int_equal(quay_msg_new(pool, "b", 1, &m), 0);
	assert_int_equal(quay_bus_publish(bus, "orig.x", m), 1);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_memory_equal(natsMsg_GetData(nm), "b", 1);
	assert_int_equal(natsMsgHeader_Get(nm, "Quay-Origin", &v), NATS_OK);
	assert_int_equal(strlen(v), 16);
	natsMsg_Destroy(nm);
	/* A plain client's message after it: the import works, and it is
	 * the first thing bus2 gets (b was dropped as an echo). */
	assert_int_equal(natsConnection_PublishString(nc, "orig.x", "p"), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);
	assert_int_equal(quay_sub_receive(sub2, &m, 5000000000), 0);
	assert_memory_equal(quay_msg_body(m), "p", 1);
	quay_msg_unref(m);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK); /* p */
	natsMsg_Destroy(nm);
	assert_int_equal(quay_nats_counters(n2, &c), 0);
	assert_int_equal(c.echo_dropped, 1);
	assert_int_equal(c.received, 1);
	quay_nats_close(n2);

	assert_int_equal(quay_msg_new(pool, "c", 1, &m), 0);
	assert_int_equal(quay_bus_publish(bus, "orig.x", m), 1);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_memory_equal(natsMsg_GetData(nm), "c", 1);
	assert_true(headerless(nm));
	natsMsg_Destroy(nm);
	assert_int_equal(quay_nats_counters(n, &c), 0);
	assert_int_equal(c.forwarded, 3);
	quay_nats_close(n);
	quay_bus_unsubscribe(sub2);
	quay_bus_destroy(bus);
	quay_bus_destroy(bus2);
	natsSubscription_Destroy(ps);
	natsConnection_Destroy(nc);
}

/* NATS -> local: headers decoded, priority, correlation id, the from
 * header; subjects quay refuses are counted, not delivered. */
static void
test_import_mapping(void **st)
{
	natsConnection *nc = plain();
	natsMsg *nm;
	quay_nats *n = conn();
	quay_bus *bus;
	quay_sub *sub;
	quay_msg *m;
	const void *v;
	size_t vl;
	struct quay_nats_counters c;
	static const unsigned char bin[] = { 0, 1, ':', '%', ' ', 0xff, 'z' };
	(void)st;

	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, "raw.>", NULL, &sub), 0);
	assert_int_equal(quay_nats_import(n, bus, "raw.>", NULL), 0);
	assert_int_equal(quay_nats_flush(n, 2000000000), 0);

	assert_int_equal(natsMsg_Create(&nm, "raw.a", NULL, "body", 4), NATS_OK);
	assert_int_equal(natsMsgHeader_Set(nm, "Quay-Enc", "pct"), NATS_OK);
	assert_int_equal(natsMsgHeader_Set(nm, "bin%20key", "%00%01%3A%25%20%FFz"), NATS_OK);
	assert_int_equal(natsMsgHeader_Set(nm, "Quay-Priority", "9"), NATS_OK);
	assert_int_equal(natsMsgHeader_Set(nm, "Quay-Correlation-Id", "77"), NATS_OK);
	assert_int_equal(natsConnection_PublishMsg(nc, nm), NATS_OK);
	natsMsg_Destroy(nm);
	/* Subjects NATS routes and quay refuses. */
	assert_int_equal(natsConnection_PublishString(nc, "raw.a*b", "x"), NATS_OK);
	assert_int_equal(natsConnection_PublishString(nc, "raw.b>", "x"), NATS_OK);
	assert_int_equal(natsConnection_PublishString(nc, "raw.>", "x"), NATS_OK);
	/* A plain client's message: no quay headers at all. */
	assert_int_equal(natsConnection_PublishString(nc, "raw.plain", "p"), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);

	assert_int_equal(quay_sub_receive(sub, &m, 5000000000), 0);
	assert_int_equal(quay_msg_body_len(m), 4);
	assert_memory_equal(quay_msg_body(m), "body", 4);
	assert_int_equal(quay_msg_get_header(m, "bin key", &v, &vl), 0);
	assert_int_equal(vl, sizeof(bin));
	assert_memory_equal(v, bin, sizeof(bin));
	assert_int_equal(quay_msg_priority(m), 9);
	assert_int_equal(quay_msg_correlation_id(m), 77);
	assert_int_equal(quay_msg_get_header(m, QUAY_NATS_H_FROM, &v, &vl), 0);
	assert_int_equal(vl, 4);
	assert_memory_equal(v, "nats", 4);
	assert_int_equal(quay_msg_get_header(m, "Quay-Priority", NULL, NULL), -ENOENT);
	quay_msg_unref(m);
	assert_int_equal(quay_sub_receive(sub, &m, 5000000000), 0);
	assert_memory_equal(quay_msg_body(m), "p", 1);
	quay_msg_unref(m);
	assert_int_equal(quay_sub_receive(sub, &m, 200000000), -ETIMEDOUT);
	assert_int_equal(quay_nats_counters(n, &c), 0);
	assert_int_equal(c.received, 2);
	assert_int_equal(c.invalid, 3);
	assert_int_equal(c.dropped, 3);
	quay_nats_close(n);
	quay_bus_unsubscribe(sub);
	quay_bus_destroy(bus);
	natsConnection_Destroy(nc);
}

/* Every queue call with bad input. */
static void
test_queue_bad_input(void **st)
{
	quay_nats *n = conn();
	struct quay_nats_queue_opts o = QUAY_NATS_QUEUE_OPTS_INIT;
	struct quay_nats_queue_counters qc;
	quay_nats_queue *q = NULL;
	quay_nats_lease l = { 0 };
	quay_msg *m, *out[2];
	uint64_t depth;
	(void)st;

	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL); /* no name */
	o.name = "bad name";
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.name = "a.b";
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.name = "0123456789012345678901234567890123"; /* 34 bytes */
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.name = "unitq";
	o.max_attempts = 1001;
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.max_attempts = 0;
	o.replicas = 6;
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.replicas = 0;
	o.backoff_factor = 0.5;
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.backoff_factor = 0;
	o.backoff_base_ns = 2000000000;
	o.backoff_max_ns = 1000000000;
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.backoff_base_ns = o.backoff_max_ns = 0;
	o.size = 4;
	assert_int_equal(quay_nats_queue_open(n, &o, &q), -EINVAL);
	o.size = sizeof(o);
	assert_int_equal(quay_nats_queue_open(NULL, &o, &q), -EINVAL);
	assert_int_equal(quay_nats_queue_open(n, NULL, &q), -EINVAL);
	assert_int_equal(quay_nats_queue_open(n, &o, NULL), -EINVAL);
	assert_null(q);
	assert_int_equal(quay_nats_queue_open(n, &o, &q), 0);

	assert_int_equal(quay_msg_new(pool, "x", 1, &m), 0);
	assert_int_equal(quay_nats_queue_send(NULL, m), -EINVAL);
	assert_int_equal(quay_nats_queue_send(q, NULL), -EINVAL);
	assert_int_equal(quay_nats_queue_receive(NULL, &l, 0), -EINVAL);
	assert_int_equal(quay_nats_queue_receive(q, NULL, 0), -EINVAL);
	assert_int_equal(quay_nats_queue_receive(q, &l, -1), -EINVAL);
	assert_int_equal(quay_nats_queue_receive(q, &l, 0), -ETIMEDOUT); /* empty */
	assert_int_equal(quay_nats_queue_ack(q, NULL), -EINVAL);
	assert_int_equal(quay_nats_queue_ack(NULL, &l), -EINVAL);
	assert_int_equal(quay_nats_queue_ack(q, &l), -EINVAL); /* an empty lease */
	assert_int_equal(quay_nats_queue_nack(q, &l, "r"), -EINVAL);
	assert_int_equal(quay_nats_queue_extend(q, &l), -EINVAL);
	assert_int_equal(quay_nats_queue_dlq_take(NULL, out, 2, 0), -EINVAL);
	assert_int_equal(quay_nats_queue_dlq_take(q, NULL, 2, 0), -EINVAL);
	assert_int_equal(quay_nats_queue_dlq_take(q, out, 0, 0), -EINVAL);
	assert_int_equal(quay_nats_queue_dlq_take(q, out, 2, -1), -EINVAL);
	assert_int_equal(quay_nats_queue_depth(NULL, &depth), -EINVAL);
	assert_int_equal(quay_nats_queue_depth(q, NULL), -EINVAL);
	assert_int_equal(quay_nats_queue_counters(NULL, &qc), -EINVAL);
	assert_int_equal(quay_nats_queue_counters(q, NULL), -EINVAL);

	/* One message through: send, receive, nack (attempt 1 of 10),
	 * receive again (attempt 2), extend, ack; then the queue is empty. */
	assert_int_equal(quay_nats_queue_send(q, m), 0);
	assert_int_equal(quay_nats_queue_depth(q, &depth), 0);
	assert_int_equal(depth, 1);
	assert_int_equal(quay_nats_queue_receive(q, &l, 5000000000), 0);
	assert_int_equal(l.attempt, 1);
	assert_int_equal(quay_nats_queue_nack(q, &l, NULL), 0);
	assert_null(l.msg);
	assert_int_equal(quay_nats_queue_receive(q, &l, 5000000000), 0);
	assert_int_equal(l.attempt, 2);
	assert_int_equal(quay_msg_attempts(l.msg), 2);
	assert_memory_equal(quay_msg_body(l.msg), "x", 1);
	assert_int_equal(quay_nats_queue_extend(q, &l), 0);
	assert_int_equal(quay_nats_queue_ack(q, &l), 0);
	assert_int_equal(quay_nats_queue_depth(q, &depth), 0);
	assert_int_equal(depth, 0);
	assert_int_equal(quay_nats_queue_dlq_take(q, out, 2, 1000000), 0);
	assert_int_equal(quay_nats_queue_counters(q, &qc), 0);
	assert_int_equal(qc.sent, 1);
	assert_int_equal(qc.received, 2);
	assert_int_equal(qc.nacked, 1);
	assert_int_equal(qc.extended, 1);
	assert_int_equal(qc.acked, 1);
	quay_nats_queue_close(q);
	quay_nats_queue_close(NULL);
	quay_nats_close(n);
}

/* A lease that expires at the last attempt: the next receive
 * dead-letters the message with reason "lease expired". */
static void
test_queue_lease_expired(void **st)
{
	quay_nats *n = conn();
	struct quay_nats_queue_opts o = QUAY_NATS_QUEUE_OPTS_INIT;
	struct quay_nats_queue_counters qc;
	quay_nats_queue *q;
	quay_nats_lease l;
	quay_msg *m, *out[2];
	const void *v;
	size_t vl;
	(void)st;

	o.name = "expire";
	o.visibility_ns = 1000000000;
	o.max_attempts = 1;
	assert_int_equal(quay_nats_queue_open(n, &o, &q), 0);
	assert_int_equal(quay_msg_new(pool, "e", 1, &m), 0);
	assert_int_equal(quay_msg_set_header(m, "k", "v", 1), 0);
	assert_int_equal(quay_nats_queue_send(q, m), 0);
	assert_int_equal(quay_nats_queue_receive(q, &l, 5000000000), 0);
	assert_int_equal(l.attempt, 1);
	quay_msg_unref(l.msg); /* abandon the lease: the holder "died" */
	natsMsg_Destroy(l.impl);
	assert_int_equal(quay_nats_queue_receive(q, &l, 3000000000), -ETIMEDOUT);
	assert_int_equal(quay_nats_queue_dlq_take(q, out, 2, 2000000000), 1);
	assert_memory_equal(quay_msg_body(out[0]), "e", 1);
	assert_int_equal(quay_msg_get_header(out[0], QUAY_MSG_H_DLQ_REASON, &v, &vl), 0);
	assert_int_equal(vl, 13);
	assert_memory_equal(v, "lease expired", 13);
	assert_int_equal(quay_msg_get_header(out[0], QUAY_MSG_H_DLQ_SOURCE, &v, &vl), 0);
	assert_memory_equal(v, "expire", 6);
	assert_int_equal(quay_msg_get_header(out[0], "k", &v, &vl), 0);
	assert_memory_equal(v, "v", 1);
	quay_msg_unref(out[0]);
	assert_int_equal(quay_nats_queue_counters(q, &qc), 0);
	assert_int_equal(qc.dead_lettered, 1);
	quay_nats_queue_close(q);
	quay_nats_close(n);
}

/* A server without JetStream: the bus works, a queue is -ENOTSUP. */
static void
test_queue_no_jetstream(void **st)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	struct quay_nats_queue_opts qo = QUAY_NATS_QUEUE_OPTS_INIT;
	struct test_server plain_srv = { 0 };
	const char *u;
	quay_nats *n;
	quay_nats_queue *q = NULL;
	(void)st;

	plain_srv.no_js = 1;
	ts_init(&plain_srv);
	u = plain_srv.url;
	o.urls = &u;
	o.nurls = 1;
	assert_int_equal(quay_nats_connect(&o, &n), 0);
	qo.name = "nojs";
	qo.op_timeout_ns = 1000000000;
	assert_int_equal(quay_nats_queue_open(n, &qo, &q), -ENOTSUP);
	assert_null(q);
	quay_nats_close(n);
	ts_fini(&plain_srv);
}

/* A local subscriber that never takes anything (BLOCK, capacity 1, no
 * timeout) stalls the import's callback; libnats's pending limit is
 * passed and the slow-consumer events are counted. */
static void
test_slow_consumer(void **st)
{
	natsConnection *nc = plain();
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	struct quay_nats_counters c = { 0 };
	quay_nats *n = conn();
	quay_bus *bus;
	quay_sub *sub;
	(void)st;

	so.capacity = 1;
	so.policy = QUAY_SUB_BLOCK; /* not the default since issue 11 */
	so.block_timeout_ns = -1;
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, "slow.x", &so, &sub), 0);
	assert_int_equal(quay_nats_import(n, bus, "slow.x", NULL), 0);
	assert_int_equal(quay_nats_flush(n, 2000000000), 0);
	for (int i = 0; i < 70000; i++)
		assert_int_equal(natsConnection_PublishString(nc, "slow.x", "s"), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);
	for (int i = 0; i < 500 && c.slow_consumer == 0; i++) {
		usleep(10000);
		assert_int_equal(quay_nats_counters(n, &c), 0);
	}
	assert_true(c.slow_consumer > 0);
	/* Unsubscribing wakes the stalled callback (-EPIPE: counted as
	 * dropped); close then completes. */
	assert_int_equal(quay_bus_unsubscribe(sub), 0);
	quay_nats_close(n);
	quay_bus_destroy(bus);
	natsConnection_Destroy(nc);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_bad_opts),
		cmocka_unit_test(test_unreachable),
		cmocka_unit_test(test_bridge_bad_input),
		cmocka_unit_test_prestate(test_export_mapping, &no_flags),
		cmocka_unit_test_prestate(test_export_mapping, &direct_flag),
		cmocka_unit_test_prestate(test_origin_rule, &no_flags),
		cmocka_unit_test_prestate(test_origin_rule, &direct_flag),
		cmocka_unit_test(test_import_mapping),
		cmocka_unit_test(test_queue_bad_input),
		cmocka_unit_test(test_queue_lease_expired),
		cmocka_unit_test(test_queue_no_jetstream),
		cmocka_unit_test(test_slow_consumer),
	};
	return cmocka_run_group_tests(tests, grp_setup, grp_teardown);
}
