/* SPDX-License-Identifier: MIT */
/*
 * quay/http.h: every endpoint's status codes, headers and body shape,
 * the token, 405, oversized requests, port 0, and bad input to every
 * public function; /summary and /health agree with quay_queue_stats().
 * A real server on 127.0.0.1 (port 0), a raw-socket client
 * (tests/http/http_client.h). The JSON is checked strictly by
 * tests/http/validate.py (python's json parser) on a live workload.
 */
#include "quay_test.h"
#include "http/http_client.h"

#include <poll.h>

#include <quay/bus.h>
#include <quay/http.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/stats.h>

static quay_pool *pool;

static int
setup(void **state)
{
	(void)state;
	return quay_pool_create((size_t)8 << 20, NULL, &pool);
}

static int
teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(pool);
}

static quay_http *
start(const char *token)
{
	struct quay_http_opts o = QUAY_HTTP_OPTS_INIT;
	quay_http *h = NULL;

	o.token = token;
	assert_int_equal(quay_http_start(&o, &h), 0);
	assert_non_null(h);
	assert_true(quay_http_port(h) != 0);
	return h;
}

static quay_queue *
mkq(const char *name, size_t cap, quay_queue *dlq, quay_stats *st)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;

	o.name = name;
	o.capacity = cap;
	o.dlq = dlq;
	o.stats = st;
	o.max_attempts = 1;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	return q;
}

static void
send_n(quay_queue *q, int n)
{
	for (int i = 0; i < n; i++) {
		quay_msg *m;
		assert_int_equal(quay_msg_new(pool, &i, sizeof(i), &m), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
	}
}

/* The number after "key": in the object that starts with "name":"<name>". */
static long long
json_num(const char *body, const char *name, const char *key)
{
	char pat[128], kp[64];
	const char *p, *end;

	snprintf(pat, sizeof(pat), "{\"name\":\"%s\"", name);
	p = strstr(body, pat);
	assert_non_null(p);
	end = strstr(p + 1, "{\"name\":");
	snprintf(kp, sizeof(kp), "\"%s\":", key);
	p = strstr(p, kp);
	assert_non_null(p);
	if (end != NULL)
		assert_true(p < end);
	return strtoll(p + strlen(kp), NULL, 10);
}

static void
expect(const struct hc_resp *r, int status, const char *ctype)
{
	char v[256];

	if (r->status != status)
		fprintf(stderr, "response:\n%s\n", r->raw);
	assert_int_equal(r->status, status);
	if (ctype != NULL) {
		assert_non_null(hc_header(r, "Content-Type", v, sizeof(v)));
		assert_string_equal(v, ctype);
	}
}

/* ---- bad input ----------------------------------------------------- */

static void
bad_input(void **state)
{
	struct quay_http_opts o = QUAY_HTTP_OPTS_INIT;
	quay_http *h = (quay_http *)0x1, *ok;
	char longtok[QUAY_HTTP_TOKEN_MAX + 2];
	quay_stats *st;
	quay_queue *q;
	quay_bus *bus;

	(void)state;
	assert_int_equal(quay_http_start(NULL, NULL), -EINVAL);
	assert_int_equal(quay_http_start(&o, NULL), -EINVAL);
#define BAD(field, value) \
	do { \
		struct quay_http_opts b = QUAY_HTTP_OPTS_INIT; \
		b.field = value; \
		assert_int_equal(quay_http_start(&b, &h), -EINVAL); \
		assert_ptr_equal(h, (quay_http *)0x1); \
	} while (0)
	BAD(size, 0);
	BAD(size, sizeof(o) + 8);
	BAD(flags, 1u);
	BAD(addr, "localhost");
	BAD(addr, "");
	BAD(addr, "1.2.3.4.5");
	BAD(token, "with space");
	BAD(token, "tab\there");
	BAD(token, "\x7f");
	BAD(max_connections, 10001u);
	BAD(timeout_s, 3601u);
	BAD(threads, 65u);
	BAD(max_request_bytes, 1023u);
	BAD(max_request_bytes, (size_t)(1u << 20) + 1);
	memset(longtok, 'x', sizeof(longtok) - 1);
	longtok[sizeof(longtok) - 1] = '\0';
	BAD(token, longtok);
#undef BAD
	assert_int_equal(quay_http_add_stats(NULL, NULL), -EINVAL);
	assert_int_equal(quay_http_add_queue(NULL, NULL), -EINVAL);
	assert_int_equal(quay_http_add_bus(NULL, NULL), -EINVAL);
	assert_int_equal(quay_http_port(NULL), 0);
	quay_http_stop(NULL);

	/* An IPv6 loopback and the longest token are fine. */
	o.addr = "::1";
	longtok[QUAY_HTTP_TOKEN_MAX] = '\0';
	o.token = longtok;
	assert_int_equal(quay_http_start(&o, &ok), 0);
	assert_int_equal(quay_http_add_stats(ok, NULL), -EINVAL);
	assert_int_equal(quay_http_add_queue(ok, NULL), -EINVAL);
	assert_int_equal(quay_http_add_bus(ok, NULL), -EINVAL);
	assert_int_equal(quay_stats_create(NULL, &st), 0);
	q = mkq("q", 8, NULL, st);
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_http_add_stats(ok, st), 0);
	assert_int_equal(quay_http_add_stats(ok, st), 0); /* once */
	assert_int_equal(quay_http_add_queue(ok, q), 0);
	assert_int_equal(quay_http_add_queue(ok, q), -EEXIST);
	assert_int_equal(quay_http_add_bus(ok, bus), 0);
	assert_int_equal(quay_http_add_bus(ok, bus), -EEXIST);
	quay_http_stop(ok);
	quay_bus_destroy(bus);
	quay_queue_destroy(q);
	quay_stats_destroy(st);
}

/* Port 0 picks a free port; asking for a taken one is -EADDRINUSE. */
static void
port_zero_and_in_use(void **state)
{
	struct quay_http_opts o = QUAY_HTTP_OPTS_INIT;
	quay_http *a = start(NULL), *b = (quay_http *)0x1;
	struct hc_resp r;

	(void)state;
	o.port = quay_http_port(a);
	assert_int_equal(quay_http_start(&o, &b), -EADDRINUSE);
	assert_ptr_equal(b, (quay_http *)0x1);
	assert_int_equal(hc_get(quay_http_port(a), "/health", &r), 0);
	expect(&r, 200, "application/json");
	hc_free(&r);
	quay_http_stop(a);
}

/* ---- endpoints -------------------------------------------------------- */

/* Issue 11 item 5: a scrape after ten sends shows ready 10 without any
 * quay_queue_stats() call; every family has HELP; latency in seconds. */
static void
metrics_endpoint(void **state)
{
	quay_http *h = start(NULL);
	quay_queue *q = mkq("orders", 64, NULL, NULL); /* a private registry */
	struct hc_resp r, hr;
	char v[64];

	(void)state;
	assert_int_equal(quay_http_add_queue(h, q), 0);
	send_n(q, 10);
	assert_int_equal(hc_get(quay_http_port(h), "/metrics", &r), 0);
	expect(&r, 200, "text/plain; version=0.0.4; charset=utf-8");
	assert_non_null(strstr(r.body, "\nquay_queue_ready{queue=\"orders\"} 10\n"));
	assert_non_null(strstr(r.body, "quay_queue_sent_total{queue=\"orders\"} 10\n"));
	assert_non_null(strstr(r.body, "# TYPE quay_queue_ack_latency_seconds histogram\n"));
	assert_non_null(strstr(r.body, "# TYPE quay_queue_oldest_age_seconds gauge\n"));
	assert_null(strstr(r.body, "_ns"));
	/* Every TYPE line follows its HELP line. */
	for (const char *p = strstr(r.body, "# TYPE "); p != NULL; p = strstr(p + 1, "# TYPE ")) {
		char name[128], help[160];
		const char *prev;

		assert_int_equal(sscanf(p, "# TYPE %127s", name), 1);
		snprintf(help, sizeof(help), "# HELP %s ", name);
		prev = p - 1;
		while (prev > r.body && prev[-1] != '\n')
			prev--;
		assert_true(prev >= r.body);
		assert_memory_equal(prev, help, strlen(help));
	}
	/* HEAD: the same headers, no body. */
	assert_int_equal(hc_req(quay_http_port(h), "HEAD", "/metrics", NULL, &hr), 0);
	expect(&hr, 200, "text/plain; version=0.0.4; charset=utf-8");
	assert_int_equal(hr.body_len, 0);
	assert_non_null(hc_header(&hr, "Content-Length", v, sizeof(v)));
	assert_true(strtoul(v, NULL, 10) > 1000);
	hc_free(&hr);
	hc_free(&r);
	quay_http_stop(h);
	quay_queue_destroy(q);
}

/* /summary agrees with quay_queue_stats() at quiescence. */
static void
summary_endpoint(void **state)
{
	quay_stats *st;
	quay_queue *dlq, *q;
	quay_http *h = start(NULL);
	struct quay_queue_stats s, d;
	struct hc_resp r;
	quay_lease l;

	(void)state;
	assert_int_equal(quay_stats_create(NULL, &st), 0);
	dlq = mkq("work.dlq", 64, NULL, st);
	q = mkq("work", 64, dlq, st);
	assert_int_equal(quay_http_add_queue(h, q), 0);
	assert_int_equal(quay_http_add_queue(h, dlq), 0);
	send_n(q, 7);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), 0);
		if (i == 0)
			assert_int_equal(quay_queue_ack(q, &l), 0);
		else if (i == 1)
			assert_int_equal(quay_queue_nack(q, &l, "x"), 0); /* max_attempts 1: DLQ */
		quay_msg_unref(l.msg);                                    /* i == 2: in flight */
	}
	assert_int_equal(hc_get(quay_http_port(h), "/summary", &r), 0);
	expect(&r, 200, "application/json");
	assert_int_equal(quay_queue_stats(q, &s), 0);
	assert_int_equal(quay_queue_stats(dlq, &d), 0);
	assert_int_equal(s.ready, 4);
	assert_int_equal(s.in_flight, 1);
	assert_int_equal(json_num(r.body, "work", "ready"), (long long)s.ready);
	assert_int_equal(json_num(r.body, "work", "delayed"), (long long)s.delayed);
	assert_int_equal(json_num(r.body, "work", "in_flight"), (long long)s.in_flight);
	assert_int_equal(json_num(r.body, "work", "sent"), (long long)s.sent);
	assert_int_equal(json_num(r.body, "work", "acked"), (long long)s.acked);
	assert_int_equal(json_num(r.body, "work", "dead_lettered"), (long long)s.dead_lettered);
	assert_int_equal(json_num(r.body, "work", "dlq_depth"),
	    (long long)(d.ready + d.delayed + d.in_flight));
	assert_int_equal(json_num(r.body, "work", "dlq_depth"), 1);
	assert_int_equal(json_num(r.body, "work", "capacity"), 64);
	assert_int_equal(json_num(r.body, "work.dlq", "ready"), (long long)d.ready);
	assert_non_null(strstr(r.body, "\"dlq\":\"work.dlq\""));
	assert_non_null(strstr(r.body, "\"ack_latency_ns\":{\"count\":1,"));
	assert_non_null(strstr(r.body, "\"rates\":{\"sent_1s\":"));
	assert_non_null(strstr(r.body, "\"buses\":[]"));
	hc_free(&r);
	quay_http_stop(h);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
	quay_stats_destroy(st);
}

/* /health: ok -> degraded (DLQ non-empty, near capacity) -> error (full, 503). */
static void
health_endpoint(void **state)
{
	quay_http *h = start(NULL);
	quay_queue *dlq = mkq("h.dlq", 16, NULL, NULL), *q = mkq("h", 10, dlq, NULL);
	struct hc_resp r;
	quay_lease l;
	uint16_t port = quay_http_port(h);

	(void)state;
	assert_int_equal(quay_http_add_queue(h, q), 0);
	assert_int_equal(hc_get(port, "/health", &r), 0);
	expect(&r, 200, "application/json");
	assert_non_null(strstr(r.body, "{\"name\":\"h\",\"state\":\"ok\",\"alarms\":[]}"));
	assert_non_null(strstr(r.body, "\"status\":\"ok\""));
	hc_free(&r);

	send_n(q, 1);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_nack(q, &l, "bad"), 0);
	quay_msg_unref(l.msg);
	assert_int_equal(hc_get(port, "/health", &r), 0);
	expect(&r, 200, "application/json");
	assert_non_null(strstr(r.body, "\"state\":\"degraded\",\"alarms\":[\"dlq_not_empty\"]"));
	assert_non_null(strstr(r.body, "\"status\":\"degraded\""));
	hc_free(&r);

	send_n(q, 9); /* 9 of 10: near capacity */
	assert_int_equal(hc_get(port, "/health", &r), 0);
	expect(&r, 200, NULL);
	assert_non_null(strstr(r.body, "\"alarms\":[\"near_capacity\",\"dlq_not_empty\"]"));
	hc_free(&r);

	send_n(q, 1); /* full */
	assert_int_equal(hc_get(port, "/health", &r), 0);
	expect(&r, 503, "application/json");
	assert_non_null(strstr(r.body, "\"state\":\"error\",\"alarms\":[\"full\",\"dlq_not_empty\"]"));
	assert_non_null(strstr(r.body, "\"status\":\"error\""));
	assert_null(strstr(r.body, "reason"));
	hc_free(&r);
	assert_int_equal(hc_get(port, "/health?verbose", &r), 0);
	expect(&r, 503, "application/json");
	assert_non_null(strstr(r.body, "{\"name\":\"full\",\"severity\":\"error\",\"reason\":"));
	assert_non_null(strstr(r.body, "\"held\":10,\"capacity\":10,\"dlq_depth\":1"));
	hc_free(&r);
	quay_http_stop(h);
	quay_queue_destroy(q);
	quay_queue_destroy(dlq);
}

/* A bus and its subscriptions on /summary and /health. */
static void
bus_on_summary(void **state)
{
	struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	quay_http *h = start(NULL);
	quay_bus *bus;
	quay_sub *a, *b;
	struct hc_resp r;
	quay_msg *m;

	(void)state;
	bo.name = "ev";
	assert_int_equal(quay_bus_create(&bo, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, "x.>", NULL, &a), 0);
	so.policy = QUAY_SUB_DROP_NEWEST;
	so.capacity = 2;
	assert_int_equal(quay_bus_subscribe(bus, "x.y", &so, &b), 0);
	assert_int_equal(quay_http_add_bus(h, bus), 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(quay_msg_new(pool, &i, sizeof(i), &m), 0);
		assert_true(quay_bus_publish(bus, "x.y", m) >= 1);
	}
	assert_int_equal(quay_sub_receive(a, &m, 0), 0);
	quay_msg_unref(m);
	assert_int_equal(hc_get(quay_http_port(h), "/summary", &r), 0);
	expect(&r, 200, "application/json");
	assert_non_null(strstr(r.body, "{\"name\":\"ev\",\"state\":\"ok\",\"alarms\":[],\"published\":5,"));
	assert_non_null(strstr(r.body,
	    "{\"id\":\"1\",\"pattern\":\"x.>\",\"group\":null,"
	    "\"pending\":4,\"delivered\":5,\"received\":1,\"dropped\":0}"));
	assert_non_null(strstr(r.body,
	    "{\"id\":\"2\",\"pattern\":\"x.y\",\"group\":null,"
	    "\"pending\":2,\"delivered\":2,\"received\":0,\"dropped\":3}"));
	assert_int_equal(quay_sub_pending(a), 4);
	hc_free(&r);
	/* /metrics carries the pending gauge, measured at the scrape. */
	assert_int_equal(hc_get(quay_http_port(h), "/metrics", &r), 0);
	assert_non_null(strstr(r.body, "quay_sub_pending{bus=\"ev\",pattern=\"x.>\",sub=\"1\"} 4\n"));
	hc_free(&r);
	quay_http_stop(h);
	quay_bus_unsubscribe(a);
	quay_bus_unsubscribe(b);
	quay_bus_destroy(bus);
}

/* The page: HTML, self-contained (nothing fetched from elsewhere). */
static void
dashboard_endpoint(void **state)
{
	quay_http *h = start(NULL);
	struct hc_resp r;

	(void)state;
	assert_int_equal(hc_get(quay_http_port(h), "/dashboard", &r), 0);
	expect(&r, 200, "text/html; charset=utf-8");
	assert_non_null(strstr(r.body, "<!DOCTYPE html>"));
	assert_non_null(strstr(r.body, "fetch(\"/summary\""));
	assert_null(strstr(r.body, "http://"));
	assert_null(strstr(r.body, "https://"));
	assert_null(strstr(r.body, "src="));
	assert_null(strstr(r.body, "<link"));
	assert_null(strstr(r.body, "@import"));
	assert_null(strstr(r.body, "url("));
	hc_free(&r);
	assert_int_equal(hc_get(quay_http_port(h), "/nope", &r), 0);
	expect(&r, 404, NULL);
	hc_free(&r);
	quay_http_stop(h);
}

static void
token_required(void **state)
{
	quay_http *h = start("s3cret-T0ken");
	uint16_t port = quay_http_port(h);
	static const char *const paths[] = { "/metrics", "/health", "/summary", "/dashboard" };
	struct hc_resp r;
	char v[128];

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(hc_get(port, paths[i], &r), 0);
		expect(&r, 401, NULL);
		assert_non_null(hc_header(&r, "WWW-Authenticate", v, sizeof(v)));
		assert_non_null(strstr(v, "Bearer"));
		hc_free(&r);
		assert_int_equal(hc_req(port, "GET", paths[i], "Authorization: Bearer s3cret-T0ke", &r), 0);
		expect(&r, 401, NULL);
		hc_free(&r);
		assert_int_equal(hc_req(port, "GET", paths[i], "Authorization: Bearer s3cret-T0ken2", &r), 0);
		expect(&r, 401, NULL);
		hc_free(&r);
		assert_int_equal(hc_req(port, "GET", paths[i], "Authorization: Basic s3cret-T0ken", &r), 0);
		expect(&r, 401, NULL);
		hc_free(&r);
		assert_int_equal(hc_req(port, "GET", paths[i], "Authorization: Bearer s3cret-T0ken", &r), 0);
		expect(&r, 200, NULL);
		hc_free(&r);
	}
	quay_http_stop(h);
}

static void
methods_not_allowed(void **state)
{
	quay_http *h = start(NULL);
	static const char *const methods[] = { "POST", "PUT", "DELETE", "PATCH", "OPTIONS" };
	struct hc_resp r;
	char v[64];
	const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	                    "Content-Length: 5\r\n\r\nhello";

	(void)state;
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(hc_req(quay_http_port(h), methods[i], "/metrics", NULL, &r), 0);
		expect(&r, 405, NULL);
		assert_non_null(hc_header(&r, "Allow", v, sizeof(v)));
		assert_string_equal(v, "GET, HEAD");
		hc_free(&r);
	}
	assert_int_equal(hc_raw(quay_http_port(h), post, sizeof(post) - 1, &r), 0);
	expect(&r, 405, NULL);
	hc_free(&r);
	quay_http_stop(h);
}

/* Request line and headers past max_request_bytes: refused (4xx), and
 * the server goes on serving. */
static void
oversized_requests(void **state)
{
	struct quay_http_opts o = QUAY_HTTP_OPTS_INIT;
	size_t big = 64 * 1024;
	char *req = malloc(big + 256), *path = malloc(big + 2);
	struct hc_resp r;
	quay_http *h;
	int n;

	(void)state;
	o.max_request_bytes = 4096;
	assert_int_equal(quay_http_start(&o, &h), 0);
	/* A huge header. */
	n = snprintf(req, 256, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
	memset(req + n, 'a', big);
	memcpy(req + n + big, "\r\n\r\n", 5);
	assert_int_equal(hc_raw(quay_http_port(h), req, strlen(req), &r), 0);
	assert_true(r.status == 413 || r.status == 431);
	hc_free(&r);
	/* A huge URL. */
	path[0] = '/';
	memset(path + 1, 'p', big);
	path[big + 1] = '\0';
	n = snprintf(req, big + 256, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	assert_int_equal(hc_raw(quay_http_port(h), req, (size_t)n, &r), 0);
	assert_true(r.status == 413 || r.status == 414 || r.status == 431);
	hc_free(&r);
	/* Still serving. */
	assert_int_equal(hc_get(quay_http_port(h), "/health", &r), 0);
	expect(&r, 200, NULL);
	hc_free(&r);
	quay_http_stop(h);
	free(req);
	free(path);
}

/* Connections past max_connections wait (unaccepted) until one closes;
 * a connection idle for timeout_s is closed, which frees its place. */
static int
wait_readable(int fd, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };

	return poll(&p, 1, ms);
}

static void
connection_and_time_limits(void **state)
{
	struct quay_http_opts o = QUAY_HTTP_OPTS_INIT;
	struct sockaddr_in a;
	int fds[4], fd;
	char buf[256];
	ssize_t n;
	const char req[] = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	quay_http *h;

	(void)state;
	o.max_connections = 4;
	o.threads = 1;
	o.timeout_s = 1;
	assert_int_equal(quay_http_start(&o, &h), 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(quay_http_port(h));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 4; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
		/* Half a request: accepted, and the server waits for the rest. */
		assert_int_equal(send(fds[i], "GET /health HTTP/1.1\r\n", 22, 0), 22);
	}
	qt_sleep_ms(100);
	/* The fifth is not served while the four are open... */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(send(fd, req, sizeof(req) - 1, 0), (ssize_t)(sizeof(req) - 1));
	assert_int_equal(wait_readable(fd, 300), 0);
	/* ...the idle four are closed after timeout_s (EOF, or a 408)... */
	for (int i = 0; i < 4; i++) {
		assert_int_equal(wait_readable(fds[i], 10000), 1);
		n = recv(fds[i], buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			assert_non_null(strstr(buf, " 408 "));
		}
		close(fds[i]);
	}
	/* ...and then the fifth is answered. */
	assert_int_equal(wait_readable(fd, 10000), 1);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 12);
	buf[n] = '\0';
	assert_memory_equal(buf, "HTTP/1.1 200", 12);
	close(fd);
	quay_http_stop(h);
}

/* Stop with clients hammering it and idle connections open: returns, the
 * clients see closed connections (ASan checks nothing is leaked). */
struct hammer {
	uint16_t port;
	int stop;            /* release by the test, acquire by the clients */
	unsigned ok, failed; /* relaxed: counts, read after the joins */
};

static void *
hammer_main(void *arg)
{
	struct hammer *hm = arg;

	while (!__atomic_load_n(&hm->stop, __ATOMIC_ACQUIRE)) {
		struct hc_resp r;
		if (hc_get(hm->port, "/summary", &r) == 0 && r.status == 200)
			__atomic_fetch_add(&hm->ok, 1, __ATOMIC_RELAXED);
		else
			__atomic_fetch_add(&hm->failed, 1, __ATOMIC_RELAXED);
		hc_free(&r);
	}
	return NULL;
}

static void
stop_under_load(void **state)
{
	quay_http *h = start(NULL);
	quay_queue *q = mkq("s", 64, NULL, NULL);
	struct hammer hm = { quay_http_port(h), 0, 0, 0 };
	pthread_t t[8];
	struct sockaddr_in a;
	int64_t t0;
	int idle;

	(void)state;
	assert_int_equal(quay_http_add_queue(h, q), 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(hm.port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	idle = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(idle, (struct sockaddr *)&a, sizeof(a)), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &hm), 0);
	while (__atomic_load_n(&hm.ok, __ATOMIC_RELAXED) < 50)
		qt_sleep_ms(5);
	t0 = qt_now_ns();
	quay_http_stop(h);
	/* Reported, not asserted (timings are never asserted). */
	fprintf(stderr, "quay_http_stop under load: %.1f ms\n", (double)(qt_now_ns() - t0) / 1e6);
	__atomic_store_n(&hm.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < 8; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	close(idle);
	assert_true(hm.ok >= 50);
	quay_queue_destroy(q);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(port_zero_and_in_use, setup, teardown),
		cmocka_unit_test_setup_teardown(metrics_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(summary_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(health_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(bus_on_summary, setup, teardown),
		cmocka_unit_test_setup_teardown(dashboard_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(token_required, setup, teardown),
		cmocka_unit_test_setup_teardown(methods_not_allowed, setup, teardown),
		cmocka_unit_test_setup_teardown(oversized_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(connection_and_time_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(stop_under_load, setup, teardown),
	};
	return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
