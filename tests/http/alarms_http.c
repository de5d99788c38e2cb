/* SPDX-License-Identifier: MIT */
/*
 * A queue's alarms (quay_queue_opts.alarm[], quay_queue_health()) on the
 * HTTP endpoint, against the real libmicrohttpd server the test starts:
 * an alarm that fires shows on /health (plain and verbose) and /summary
 * with the right state and status code, and clears after; a FAILING queue
 * makes /health 503; a DLQ alarm replaces the built-in dlq_not_empty rule
 * while a queue without alarms keeps it; `full` stays with the queue's
 * alarms; requests do not speed an alarm up once alarm_period_ns is set.
 * The queues run on the fake clock (tests/quay_test.h), so ages and
 * periods are exact and nothing sleeps.
 */
#include "quay_test.h"
#include "http/http_client.h"

#include <quay/http.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

#define MS ((int64_t)1000000)

static quay_pool *pool;
static quay_http *srv;
static uint16_t port;

static int
setup(void **state)
{
	(void)state;
	qt_set_time(QT_T0);
	if (quay_pool_create((size_t)4 << 20, NULL, &pool) != 0)
		return -1;
	if (quay_http_start(NULL, &srv) != 0)
		return -1;
	port = quay_http_port(srv);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	quay_http_stop(srv); /* NULL when the test stopped it (stop_server) */
	srv = NULL;
	return quay_pool_destroy(pool);
}

/* Registered objects must outlive the server (quay/http.h): a test stops
 * it before destroying its queues, or the sampler thread may read a
 * destroyed queue's counters (it did: SIGSEGV in quay_counter_read). */
static void
stop_server(void)
{
	quay_http_stop(srv);
	srv = NULL;
}

static struct quay_queue_opts
opts(const char *name)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	o.name = name;
	o.clock = qt_fake_clock;
	o.capacity = 16;
	o.visibility_ns = 600000 * MS;
	o.flags = QUAY_QUEUE_NO_JITTER | QUAY_QUEUE_NO_BACKOFF;
	return o;
}

static quay_queue *
mkq(struct quay_queue_opts *o)
{
	quay_queue *q = NULL;

	assert_int_equal(quay_queue_create(o, &q), 0);
	return q;
}

static void
send_n(quay_queue *q, int n)
{
	for (int i = 0; i < n; i++) {
		quay_msg *m = NULL;

		assert_int_equal(quay_msg_new(pool, &i, sizeof(i), &m), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
}

/* GET path: expect status and every string of want[] (NULL-terminated)
 * in the body, none of avoid[]. */
static void
get(const char *path, int status, const char *const *want, const char *const *avoid)
{
	struct hc_resp r;

	assert_int_equal(hc_get(port, path, &r), 0);
	if (r.status != status)
		fail_msg("%s: status %d, want %d: %s", path, r.status, status, r.body);
	for (; want != NULL && *want != NULL; want++)
		if (strstr(r.body, *want) == NULL)
			fail_msg("%s: no %s in %s", path, *want, r.body);
	for (; avoid != NULL && *avoid != NULL; avoid++)
		if (strstr(r.body, *avoid) != NULL)
			fail_msg("%s: %s in %s", path, *avoid, r.body);
	hc_free(&r);
}

#define LIST(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* An age alarm (raise 2 s, clear 1 s): OK, then ALARM once the message in
 * flight is 2 s old (degraded, 200, on /health, verbose and /summary),
 * then OK after the ack. */
static void
age_alarm_fires_and_clears(void **state)
{
	struct quay_queue_opts o = opts("jobs");
	quay_queue *q;
	quay_lease l;

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_AGE] = (struct quay_queue_threshold){ 2000 * MS, 1000 * MS, 1 };
	q = mkq(&o);
	assert_int_equal(quay_http_add_queue(srv, q), 0);
	send_n(q, 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	get("/health", 200, LIST("{\"name\":\"jobs\",\"state\":\"ok\",\"alarms\":[]}", "\"status\":\"ok\""),
	    NULL);
	get("/health?verbose", 200, LIST("\"health\":\"healthy\""), NULL);
	qt_set_time(QT_T0 + 2000 * MS - 1);
	get("/health", 200, LIST("\"state\":\"ok\",\"alarms\":[]"), NULL);
	qt_set_time(QT_T0 + 2000 * MS);
	get("/health", 200,
	    LIST("{\"name\":\"jobs\",\"state\":\"degraded\",\"alarms\":[\"age\"]}",
	        "\"status\":\"degraded\""),
	    NULL);
	get("/health?verbose", 200,
	    LIST("{\"name\":\"age\",\"severity\":\"degraded\",\"reason\":\"the queue's age alarm is on "
	         "(raise 2000000000, clear below 1000000000): work is late\",\"value\":2000000000,"
	         "\"raise\":2000000000,\"clear\":1000000000,\"since_ns\":1700000002000000000}",
	        "\"health\":\"degraded\"", "\"status\":\"degraded\""),
	    NULL);
	get("/summary", 200,
	    LIST("\"name\":\"jobs\",\"dlq\":null,\"state\":\"degraded\",\"alarms\":[\"age\"],"
	         "\"health\":\"degraded\","),
	    NULL);
	/* Between clear and raise: still on (hysteresis). */
	qt_set_time(QT_T0 + 2500 * MS);
	get("/health", 200, LIST("\"alarms\":[\"age\"]"), NULL);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	get("/health", 200, LIST("{\"name\":\"jobs\",\"state\":\"ok\",\"alarms\":[]}", "\"status\":\"ok\""),
	    NULL);
	get("/summary", 200, LIST("\"state\":\"ok\",\"alarms\":[],\"health\":\"healthy\","), NULL);
	stop_server();
	quay_queue_destroy(q);
}

/* A DLQ alarm makes its queue FAILING: error and 503; it replaces the
 * built-in dlq_not_empty rule, which a queue without alarms keeps
 * (degraded). A redrive clears it: 200 again. */
static void
failing_queue_is_503(void **state)
{
	struct quay_queue_opts od = opts("work.dlq"), o = opts("work"), pd = opts("plain.dlq"),
	                       p = opts("plain");
	quay_queue *dlq, *q, *pdlq, *pq;
	quay_lease l;

	(void)state;
	dlq = mkq(&od);
	o.dlq = dlq;
	o.max_attempts = 1;
	o.alarm[QUAY_QUEUE_ALARM_DLQ].raise = 1;
	q = mkq(&o);
	pdlq = mkq(&pd);
	p.dlq = pdlq;
	p.max_attempts = 1;
	pq = mkq(&p);
	assert_int_equal(quay_http_add_queue(srv, q), 0);
	assert_int_equal(quay_http_add_queue(srv, pq), 0);
	get("/health", 200, LIST("\"status\":\"ok\""), NULL);
	/* One dead letter in each. */
	send_n(q, 1);
	send_n(pq, 1);
	assert_int_equal(quay_queue_receive(pq, &l, 0), 0);
	assert_int_equal(quay_queue_nack(pq, &l, "no"), 0);
	quay_msg_unref(l.msg);
	get("/health", 200,
	    LIST("{\"name\":\"plain\",\"state\":\"degraded\",\"alarms\":[\"dlq_not_empty\"]}",
	        "{\"name\":\"work\",\"state\":\"ok\",\"alarms\":[]}", "\"status\":\"degraded\""),
	    NULL);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_nack(q, &l, "no"), 0);
	quay_msg_unref(l.msg);
	get("/health", 503,
	    LIST("{\"name\":\"work\",\"state\":\"error\",\"alarms\":[\"dlq\"]}",
	        "{\"name\":\"plain\",\"state\":\"degraded\",\"alarms\":[\"dlq_not_empty\"]}",
	        "\"status\":\"error\""),
	    NULL);
	get("/health?verbose", 503,
	    LIST("{\"name\":\"dlq\",\"severity\":\"error\",", "\"health\":\"failing\"", "\"health\":null"),
	    NULL);
	get("/summary", 200,
	    LIST("\"name\":\"work\",\"dlq\":\"work.dlq\",\"state\":\"error\",\"alarms\":[\"dlq\"]"), NULL);
	assert_int_equal(quay_queue_redrive(dlq, q, 10, NULL), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	get("/health", 200,
	    LIST("{\"name\":\"work\",\"state\":\"ok\",\"alarms\":[]}", "\"status\":\"degraded\""), NULL);
	stop_server();
	quay_queue_destroy(q);
	quay_queue_destroy(pq);
	quay_queue_destroy(dlq);
	quay_queue_destroy(pdlq);
}

/* The capacity rules stay for a queue with alarms (its sends fail when
 * full, whatever the thresholds say): near capacity and full show next
 * to the ready alarm, full as error. */
static void
full_stays_with_alarms(void **state)
{
	struct quay_queue_opts o = opts("small");
	quay_queue *q;

	(void)state;
	o.capacity = 10;
	o.alarm[QUAY_QUEUE_ALARM_READY].raise = 5;
	q = mkq(&o);
	assert_int_equal(quay_http_add_queue(srv, q), 0);
	send_n(q, 5);
	get("/health", 200, LIST("{\"name\":\"small\",\"state\":\"degraded\",\"alarms\":[\"ready\"]}"), NULL);
	send_n(q, 4); /* 9 of 10 */
	get("/health", 200,
	    LIST("{\"name\":\"small\",\"state\":\"degraded\",\"alarms\":[\"near_capacity\",\"ready\"]}"),
	    NULL);
	send_n(q, 1);
	get("/health", 503, LIST("{\"name\":\"small\",\"state\":\"error\",\"alarms\":[\"full\",\"ready\"]}"),
	    NULL);
	stop_server();
	quay_queue_destroy(q);
}

/* alarm_period_ns 1 s, ready raise 1, 2 periods: any number of requests
 * (each one an evaluation) within a second count once, so the alarm is
 * on only after a second of queue clock, however often the page is read;
 * with every evaluation counting, the second request would trip it. */
static void
requests_do_not_speed_alarms_up(void **state)
{
	struct quay_queue_opts o = opts("paced");
	quay_queue *q;

	(void)state;
	o.alarm[QUAY_QUEUE_ALARM_READY] = (struct quay_queue_threshold){ 1, 0, 2 };
	o.alarm_period_ns = 1000 * MS;
	q = mkq(&o);
	assert_int_equal(quay_http_add_queue(srv, q), 0);
	send_n(q, 1);
	for (int i = 0; i < 4; i++) {
		get("/health", 200, LIST("{\"name\":\"paced\",\"state\":\"ok\",\"alarms\":[]}"), NULL);
		get("/summary", 200, LIST("\"state\":\"ok\",\"alarms\":[]"), NULL);
		get("/metrics", 200, LIST("quay_queue_alarm{alarm=\"ready\",queue=\"paced\"} 0"), NULL);
	}
	qt_set_time(QT_T0 + 1000 * MS);
	get("/health", 200, LIST("{\"name\":\"paced\",\"state\":\"degraded\",\"alarms\":[\"ready\"]}"), NULL);
	get("/metrics", 200,
	    LIST("quay_queue_alarm{alarm=\"ready\",queue=\"paced\"} 1",
	        "quay_queue_health{queue=\"paced\"} 1"),
	    NULL);
	stop_server();
	quay_queue_destroy(q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(age_alarm_fires_and_clears, setup, teardown),
		cmocka_unit_test_setup_teardown(failing_queue_is_503, setup, teardown),
		cmocka_unit_test_setup_teardown(full_stays_with_alarms, setup, teardown),
		cmocka_unit_test_setup_teardown(requests_do_not_speed_alarms_up, setup, teardown),
	};

	return cmocka_run_group_tests_name("http-alarms", tests, NULL, NULL);
}
