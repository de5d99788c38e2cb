/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the bus's routing (issue 12): AMQP `#` in patterns,
 * header filters (each operator at its boundaries, bad expressions with
 * the position of the error), bindings of queues (every overflow policy,
 * groups, copies, publish_ex accounting per kind), the unroutable queue,
 * bad input and the bound-queue destroy check. Every test checks at the
 * end that all messages went back to the pool.
 */
#include "quay_test.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <quay/bus.h>
#include <quay/queue.h>

#include "../../src/filter.h"

static quay_pool *g_pool;

static int
pool_setup(void **state)
{
	(void)state;
	return quay_pool_create((size_t)16 << 20, NULL, &g_pool);
}

static int
pool_teardown(void **state)
{
	(void)state;
	return quay_pool_destroy(g_pool);
}

static void
assert_pool_empty(void)
{
	struct quay_pool_stats st;

	assert_int_equal(quay_pool_stats(g_pool, &st), 0);
	assert_int_equal(st.in_use, 0);
}

static quay_msg *
msg_u64(uint64_t v)
{
	quay_msg *m = NULL;

	assert_int_equal(quay_msg_new(g_pool, &v, sizeof(v), &m), 0);
	return m;
}

static uint64_t
msg_val(const quay_msg *m)
{
	uint64_t v;

	assert_int_equal(quay_msg_body_len(m), sizeof(v));
	memcpy(&v, quay_msg_body(m), sizeof(v));
	return v;
}

/* A message with headers "k1=v1", "k2=v2", ... (NULL-terminated list). */
static quay_msg *
msg_h(uint64_t v, const char *const *kv)
{
	quay_msg *m = msg_u64(v);

	for (size_t i = 0; kv != NULL && kv[i] != NULL; i += 2)
		assert_int_equal(quay_msg_set_header_str(m, kv[i], kv[i + 1]), 0);
	return m;
}

static quay_queue *
queue_new(const char *name, size_t cap)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q = NULL;

	o.name = name;
	o.capacity = cap;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	return q;
}

/* Receive and ack everything ready; returns the count, values into v. */
static size_t
qdrain(quay_queue *q, uint64_t *v, size_t max)
{
	quay_lease l;
	size_t n = 0;

	while (quay_queue_receive(q, &l, 0) == 0) {
		if (v != NULL && n < max)
			v[n] = msg_val(l.msg);
		n++;
		assert_int_equal(quay_queue_ack(q, &l), 0);
		quay_msg_unref(l.msg);
	}
	return n;
}

static size_t
sdrain(quay_sub *s)
{
	quay_msg *m[64];
	size_t n = 0, got;

	while ((got = quay_sub_receive_burst(s, m, 64)) > 0) {
		for (size_t i = 0; i < got; i++)
			quay_msg_unref(m[i]);
		n += got;
	}
	return n;
}

static quay_binding *
bind_new(quay_bus *b, const char *pat, quay_queue *q, enum quay_sub_policy pol, const char *group,
    const char *filter)
{
	struct quay_bind_opts o = QUAY_BIND_OPTS_INIT;
	quay_binding *bd = NULL;

	o.policy = pol;
	o.group = group;
	o.filter = filter;
	assert_int_equal(quay_bus_bind(b, pat, q, &o, &bd), 0);
	assert_non_null(bd);
	return bd;
}

/* ---- `#` ------------------------------------------------------------- */

static void
test_hash_table(void **state)
{
	static const struct {
		const char *p, *s;
		bool m;
	} cases[] = {
		/* at the start */
		{ "#.eu", "eu", true },
		{ "#.eu", "x.eu", true },
		{ "#.eu", "x.y.eu", true },
		{ "#.eu", "eu.x", false },
		{ "#.eu", "xeu", false },
		/* at the end */
		{ "orders.#", "orders", true },
		{ "orders.#", "orders.a", true },
		{ "orders.#", "orders.a.b", true },
		{ "orders.#", "order", false },
		{ "orders.#", "x.orders", false },
		/* in the middle */
		{ "a.#.b", "a.b", true },
		{ "a.#.b", "a.x.b", true },
		{ "a.#.b", "a.x.y.b", true },
		{ "a.#.b", "a", false },
		{ "a.#.b", "b", false },
		{ "a.#.b", "a.b.c", false },
		{ "a.#.b", "a.b.b", true },
		/* alone and combined */
		{ "#", "a", true },
		{ "#", "a.b.c", true },
		{ "#.#", "a", true },
		{ "*.#", "a", true },
		{ "#.*", "a.b", true },
		{ "#.>", "a", true },
		{ "a.#.>", "a", false },
		{ "a.#.>", "a.b", true },
		{ "a.*.#", "a", false },
		{ "a.*.#", "a.b.c.d", true },
		{ "*.#.*", "a", false },
		{ "*.#.*", "a.b", true },
		{ "#.a.#.a.#", "a.a", true },
		{ "#.a.#.a.#", "b.a.b", false },
		{ "#.a.#.a.#", "x.a.y.z.a.w", true },
		/* `#` inside a token is a plain byte */
		{ "a#", "a#", true },
		{ "a#", "a", false },
		{ "#a.b", "#a.b", true },
	};
	quay_bus *b;

	(void)state;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		quay_sub *s;
		int r;

		if (quay_bus_match(cases[i].p, cases[i].s) != cases[i].m)
			fail_msg("quay_bus_match(%s, %s) != %d", cases[i].p, cases[i].s, cases[i].m);
		/* And through the trie (one subscription at a time). */
		assert_int_equal(quay_bus_subscribe(b, cases[i].p, NULL, &s), 0);
		r = quay_bus_publish(b, cases[i].s, msg_u64(i));
		assert_int_equal(r, cases[i].m ? 1 : 0);
		assert_int_equal(sdrain(s), cases[i].m ? 1u : 0u);
		assert_int_equal(quay_bus_unsubscribe(s), 0);
	}
	/* A subscription reached along several ways gets one copy. */
	{
		quay_sub *s;
		assert_int_equal(quay_bus_subscribe(b, "#.a.#", NULL, &s), 0);
		assert_int_equal(quay_bus_publish(b, "a.a.a.a", msg_u64(1)), 1);
		assert_int_equal(sdrain(s), 1);
		assert_int_equal(quay_bus_unsubscribe(s), 0);
	}
	/* Validity. */
	assert_int_equal(quay_bus_subject_check("#", true), 0);
	assert_int_equal(quay_bus_subject_check("a.#.b.#", true), 0);
	assert_int_equal(quay_bus_subject_check("#", false), -EINVAL);
	assert_int_equal(quay_bus_subject_check("a.#", false), -EINVAL);
	assert_int_equal(quay_bus_subject_check("#.a", false), -EINVAL);
	assert_int_equal(quay_bus_subject_check("a.#.b", false), -EINVAL);
	assert_int_equal(quay_bus_subject_check("a#", false), 0);
	assert_int_equal(quay_bus_subject_check("a.b#.c", false), 0);
	assert_int_equal(quay_bus_subject_check("a.##", true), 0); /* a literal token */
	assert_int_equal(quay_bus_subject_check("a.#.", true), -EINVAL);
	{
		/* the scan's fallback at word boundaries: '#' tokens at bytes 7/8 */
		quay_msg *m = msg_u64(0);
		assert_int_equal(quay_bus_publish(b, "a.#", m), -EINVAL);
		assert_int_equal(quay_bus_publish(b, "abcdef.#", m), -EINVAL);
		assert_int_equal(quay_bus_publish(b, "abcdefg.#", m), -EINVAL);
		assert_int_equal(quay_bus_publish(b, "abcdefg.#x", m), 0); /* consumed */
	}
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* A pattern of many `#` against a long subject resolves quickly (the
 * memo keeps the walk at nodes x tokens; this would take ~C(32,16)
 * walks without it). Timing is not asserted: the test just finishes. */
static void
test_hash_many(void **state)
{
	char pat[QUAY_BUS_SUBJECT_MAX + 1], subj[QUAY_BUS_SUBJECT_MAX + 1];
	quay_bus *b;
	quay_sub *s;
	size_t n = 0;

	(void)state;
	for (int i = 0; i < 16; i++)
		n += (size_t)snprintf(pat + n, sizeof(pat) - n, "%s#.a", i ? "." : "");
	n = 0;
	for (int i = 0; i < 32; i++)
		n += (size_t)snprintf(subj + n, sizeof(subj) - n, "%sa", i ? "." : "");
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	assert_int_equal(quay_bus_subscribe(b, pat, NULL, &s), 0);
	assert_true(quay_bus_match(pat, subj));
	assert_int_equal(quay_bus_publish(b, subj, msg_u64(1)), 1);
	assert_int_equal(sdrain(s), 1);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* ---- filters --------------------------------------------------------- */

static bool
fmatch(const char *expr, const char *const *kv)
{
	struct quayi_filter *f;
	quay_msg *m = msg_h(0, kv);
	char err[256];
	bool r;

	if (quayi_filter_compile(expr, &f, err, sizeof(err)) != 0)
		fail_msg("compile '%s': %s", expr, err);
	r = quayi_filter_match(f, m);
	quayi_filter_free(f);
	quay_msg_unref(m);
	return r;
}

#define H(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void
test_filter_operators(void **state)
{
	(void)state;
	/* equals / one of */
	assert_true(fmatch("region = eu", H("region", "eu")));
	assert_false(fmatch("region = eu", H("region", "eu2")));
	assert_false(fmatch("region = eu", H("region", "e")));
	assert_false(fmatch("region = eu", H("other", "eu")));
	assert_true(fmatch("region = \"\"", H("region", "")));
	assert_false(fmatch("region = \"\"", H("other", "")));
	assert_true(fmatch("region in {eu, us}", H("region", "us")));
	assert_false(fmatch("region in {eu, us}", H("region", "asia")));
	assert_true(fmatch("region in {\"a b\", \"q\\\"x\"}", H("region", "q\"x")));
	/* anything-but */
	assert_true(fmatch("region != eu", H("region", "us")));
	assert_false(fmatch("region != eu", H("region", "eu")));
	assert_false(fmatch("region != eu", H("x", "y"))); /* absent: false */
	assert_true(fmatch("region not in {eu, us}", H("region", "asia")));
	assert_false(fmatch("region not in {eu, us}", H("region", "eu")));
	assert_false(fmatch("region not in {eu, us}", H("x", "y")));
	/* prefix */
	assert_true(fmatch("mint ^= So1", H("mint", "So1"))); /* equal is a prefix */
	assert_true(fmatch("mint ^= So1", H("mint", "So11111")));
	assert_false(fmatch("mint ^= So1", H("mint", "So")));
	assert_false(fmatch("mint ^= So1", H("mint", "so1")));
	assert_true(fmatch("mint ^= \"\"", H("mint", "")));
	/* numeric comparisons at their boundaries */
	assert_true(fmatch("amount >= 1000", H("amount", "1000")));
	assert_false(fmatch("amount > 1000", H("amount", "1000")));
	assert_true(fmatch("amount > 1000", H("amount", "1000.0001")));
	assert_true(fmatch("amount > 1000", H("amount", "1e4")));
	assert_true(fmatch("amount < 0", H("amount", "-0.5")));
	assert_false(fmatch("amount < 0", H("amount", "0")));
	assert_true(fmatch("amount <= 0", H("amount", "-0")));
	assert_true(fmatch("amount <= -1.5e-3", H("amount", "-0.0015")));
	assert_false(fmatch("amount < 10", H("amount", "ten"))); /* not a number */
	assert_false(fmatch("amount < 10", H("amount", "5 ")));
	assert_false(fmatch("amount < 10", H("amount", "")));
	assert_false(fmatch("amount < 10", H("x", "5")));
	assert_true(fmatch("amount = 10", H("amount", "10"))); /* = is textual */
	assert_false(fmatch("amount = 10", H("amount", "10.0")));
	assert_true(fmatch("amount in [10, 10]", H("amount", "10.0"))); /* numeric equality */
	/* ranges: each end open and closed */
	assert_true(fmatch("p in [10, 20]", H("p", "10")));
	assert_true(fmatch("p in [10, 20]", H("p", "20")));
	assert_false(fmatch("p in (10, 20]", H("p", "10")));
	assert_false(fmatch("p in [10, 20)", H("p", "20")));
	assert_true(fmatch("p in (10, 20)", H("p", "19.999")));
	assert_false(fmatch("p in (10, 20)", H("p", "9.999")));
	assert_false(fmatch("p in (10, 20)", H("p", "20.0001")));
	/* large and precise numbers */
	assert_true(fmatch("n > 18446744073709551615", H("n", "18446744073709551616000")));
	assert_true(fmatch("n in [0.1, 0.1]", H("n", "0.10000000000000000000001")));
	/* exists / not exists */
	assert_true(fmatch("exists(vip)", H("vip", "")));
	assert_false(fmatch("exists(vip)", H("x", "1")));
	assert_true(fmatch("!exists(vip)", H("x", "1")));
	assert_false(fmatch("! exists ( vip )", H("vip", "1")));
	assert_true(fmatch("exists = 1", H("exists", "1"))); /* a header named exists */
	/* and / or */
	assert_true(fmatch("a = 1 && b = 2", H("a", "1", "b", "2")));
	assert_false(fmatch("a = 1 && b = 2", H("a", "1", "b", "3")));
	assert_true(fmatch("a = 1 && b = 2 || c = 3", H("c", "3")));
	assert_false(fmatch("a = 1 && b = 2 || c = 3", H("a", "1", "c", "4")));
	assert_true(fmatch("a = 9 || a = 8 || a = 1", H("a", "1")));
	assert_true(fmatch("\"key with space\" = v", H("key with space", "v")));
	/* the issue's example */
	assert_true(fmatch("movement_type in {buy, sell} && token_mint ^= So1 && whale_address != 0x0",
	    H("movement_type", "sell", "token_mint", "So1abc", "whale_address", "0x9")));
}

static void
test_filter_errors(void **state)
{
	static const struct {
		const char *expr;
		const char *at; /* expected start of the message */
	} cases[] = {
		{ "", "at byte 0: the filter is empty" },
		{ "   ", "at byte 0: the filter is empty" },
		{ "region", "at byte 6: expected an operator" },
		{ "region ~ eu", "at byte 7: expected an operator" },
		{ "region = ", "at byte 9: expected a value" },
		{ "region = eu &&", "at byte 14: a clause must follow '&&'" },
		{ "region = eu ||   ", "at byte 17: a clause must follow '||'" },
		{ "region = eu us", "at byte 12: expected '&&', '||'" },
		{ "region = \"eu", "at byte 9: a value: the quoted string is not closed" },
		{ "region = \"e\\u\"", "at byte 11: a value: only" },
		{ "region in {eu, }", "at byte 15: expected a value" },
		{ "region in {eu us}", "at byte 14: expected '}'" },
		{ "region in {eu", "at byte 13: expected '}'" },
		{ "region in eu", "at byte 10: expected '{'" },
		{ "region not eu", "at byte 11: expected 'in' after 'not'" },
		{ "amount > x", "at byte 9: expected a number" },
		{ "amount > 10x", "at byte 11: the number ends in 'x'" },
		{ "amount > 1e999", "at byte 9: the number is out of range" },
		{ "amount in [20, 10]", "at byte 10: the range is empty" },
		{ "amount in [1 2]", "at byte 13: expected ','" },
		{ "amount in [1, 2", "at byte 15: expected ']' or ')'" },
		{ "exists(", "at byte 7: expected a header name" },
		{ "exists(a", "at byte 8: expected ')'" },
		{ "!a = 1", "at byte 1: expected 'exists' after '!'" },
		{ "!exists a", "at byte 8: expected '(' after 'exists'" },
		{ "= 1", "at byte 0: expected a header name" },
		{ "\"\" = 1", "at byte 0: a header name is empty" },
		{ "a = 1\n", "at byte 5: a control byte (0x0a)" },
	};
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = quay_filter_check(cases[i].expr, err, sizeof(err));
		if (r != -EINVAL || strncmp(err, cases[i].at, strlen(cases[i].at)) != 0)
			fail_msg("'%s': rc %d, '%s' (wanted '%s...')", cases[i].expr, r, err, cases[i].at);
	}
	/* Limits. */
	{
		char big[QUAY_FILTER_LEN_MAX + 2];
		memset(big, ' ', sizeof(big));
		big[QUAY_FILTER_LEN_MAX + 1] = '\0';
		assert_int_equal(quay_filter_check(big, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, "at byte 4096: the filter is longer than 4096 bytes");
	}
	{
		char many[QUAY_FILTER_LEN_MAX];
		size_t n = 0;
		for (unsigned i = 0; i <= QUAY_FILTER_CLAUSES_MAX; i++)
			n += (size_t)snprintf(many + n, sizeof(many) - n, "%sa = 1", i ? " && " : "");
		assert_int_equal(quay_filter_check(many, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "too many clauses"));
		many[n - 9] = '\0'; /* drop the last clause: exactly the limit */
		assert_int_equal(quay_filter_check(many, err, sizeof(err)), 0);
		assert_string_equal(err, "");
	}
	/* NULL and a short buffer (truncated, still terminated). */
	assert_int_equal(quay_filter_check(NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(quay_filter_check("x", NULL, 0), -EINVAL);
	assert_int_equal(quay_filter_check("x", err, 8), -EINVAL);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(quay_filter_check("x = 1", NULL, 0), 0);
}

/* Canonical form round trip: format(compile(x)) compiles to the same form. */
static void
test_filter_format(void **state)
{
	static const char *const exprs[] = {
		"a=1",
		"a in {x,\"y z\"}&&b!=\"q\\\"\"",
		"n>=1.5||n<-2e3",
		"n in (1, 2]",
		"exists(a)&&!exists(b)",
		"p^=pre || q not in {1,2,3}",
	};
	char b1[512], b2[512];

	(void)state;
	for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
		struct quayi_filter *f, *g;
		assert_int_equal(quayi_filter_compile(exprs[i], &f, NULL, 0), 0);
		quayi_filter_format(f, b1, sizeof(b1));
		assert_int_equal(quayi_filter_compile(b1, &g, b2, sizeof(b2)), 0);
		quayi_filter_format(g, b2, sizeof(b2));
		assert_string_equal(b1, b2);
		quayi_filter_free(f);
		quayi_filter_free(g);
	}
}

/* Filters on subscriptions, through the bus. */
static void
test_filter_subscription(void **state)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	struct quay_bus_pub_result res;
	struct quay_bus_counters c;
	quay_bus *b;
	quay_sub *eu, *all;

	(void)state;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	o.filter = "region = eu && amount >= 100";
	assert_int_equal(quay_bus_subscribe(b, "orders.>", &o, &eu), 0);
	assert_int_equal(quay_bus_subscribe(b, "orders.>", NULL, &all), 0);
	assert_int_equal(quay_bus_publish_ex(b, "orders.new", msg_h(1, H("region", "eu", "amount", "100")),
	                     &res),
	    2);
	assert_int_equal(res.matched, 2);
	assert_int_equal(res.filtered, 0);
	assert_int_equal(quay_bus_publish_ex(b, "orders.new", msg_h(2, H("region", "eu", "amount", "99")),
	                     &res),
	    1);
	assert_int_equal(res.matched, 1);
	assert_int_equal(res.filtered, 1);
	assert_int_equal(res.subs.matched, 1);
	assert_int_equal(sdrain(eu), 1);
	assert_int_equal(sdrain(all), 2);
	assert_int_equal(quay_bus_counters(b, &c), 0);
	assert_int_equal(c.filtered, 1);
	/* Invalid filter: -EINVAL, nothing subscribed. */
	o.filter = "region ~ eu";
	assert_int_equal(quay_bus_subscribe(b, "x", &o, &eu), -EINVAL);
	assert_int_equal(quay_bus_sub_count(b), 2);
	/* A struct of the size before issue 12 (no filter field). */
	o.size = offsetof(struct quay_sub_opts, filter);
	assert_int_equal(quay_bus_subscribe(b, "x", &o, &eu), 0);
	o.size = offsetof(struct quay_sub_opts, filter) - 1;
	assert_int_equal(quay_bus_subscribe(b, "x", &o, &all), -EINVAL);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* ---- bindings -------------------------------------------------------- */

static void
test_bind_fanout(void **state)
{
	struct quay_bus_pub_result res;
	struct quay_binding_counters bc;
	struct quay_bus_counters c;
	quay_bus *b;
	quay_queue *q1 = queue_new("q1", 16), *q2 = queue_new("q2", 16);
	quay_binding *b1, *b2;
	quay_sub *s;
	quay_lease l1, l2;
	quay_msg *m;

	(void)state;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	b1 = bind_new(b, "orders.*", q1, QUAY_SUB_REJECT, NULL, NULL);
	b2 = bind_new(b, "orders.#", q2, QUAY_SUB_REJECT, NULL, NULL);
	assert_int_equal(quay_bus_subscribe(b, "orders.>", NULL, &s), 0);
	m = msg_u64(7);
	assert_int_equal(quay_bus_publish_ex(b, "orders.eu", m, &res), 3);
	assert_int_equal(res.matched, 3);
	assert_int_equal(res.delivered, 3);
	assert_int_equal(res.subs.matched, 1);
	assert_int_equal(res.subs.delivered, 1);
	assert_int_equal(res.queues.matched, 2);
	assert_int_equal(res.queues.delivered, 2);
	assert_int_equal(res.unroutable, 0);
	/* Each queue has its own message: one the original, one a copy. */
	assert_int_equal(quay_queue_receive(q1, &l1, 0), 0);
	assert_int_equal(quay_queue_receive(q2, &l2, 0), 0);
	assert_int_equal(msg_val(l1.msg), 7);
	assert_int_equal(msg_val(l2.msg), 7);
	assert_true(l1.msg != l2.msg);
	assert_true(l1.msg == m || l2.msg == m);
	assert_int_equal(l1.attempt, 1);
	assert_int_equal(l2.attempt, 1);
	assert_int_equal(quay_queue_ack(q1, &l1), 0);
	assert_int_equal(quay_queue_ack(q2, &l2), 0);
	quay_msg_unref(l1.msg);
	quay_msg_unref(l2.msg);
	assert_int_equal(sdrain(s), 1);
	/* "orders" only reaches the `#` binding. */
	assert_int_equal(quay_bus_publish(b, "orders", msg_u64(8)), 1);
	assert_int_equal(qdrain(q2, NULL, 0), 1);
	assert_int_equal(quay_binding_counters(b1, &bc), 0);
	assert_int_equal(bc.delivered, 1);
	assert_int_equal(quay_binding_counters(b2, &bc), 0);
	assert_int_equal(bc.delivered, 2);
	assert_int_equal(quay_bus_counters(b, &c), 0);
	assert_int_equal(c.bound_delivered, 3);
	assert_int_equal(c.delivered, 4);
	/* The same queue twice on one pattern: -EEXIST; another pattern: fine. */
	{
		quay_binding *x;
		assert_int_equal(quay_bus_bind(b, "orders.*", q1, NULL, &x), -EEXIST);
		assert_int_equal(quay_bus_bind(b, "orders.eu", q1, NULL, &x), 0);
		assert_int_equal(quay_bus_publish(b, "orders.eu", msg_u64(9)), 4);
		assert_int_equal(qdrain(q1, NULL, 0), 2); /* one per binding */
		assert_int_equal(quay_bus_unbind(x), 0);
	}
	assert_int_equal(qdrain(q2, NULL, 0), 1);
	assert_int_equal(sdrain(s), 1);
	assert_int_equal(quay_bus_unbind(b1), 0);
	assert_int_equal(quay_bus_unbind(b2), 0);
	quay_queue_destroy(q1); /* unbound: allowed */
	quay_bus_destroy(b);
	quay_queue_destroy(q2);
	assert_pool_empty();
}

static void
test_bind_policies(void **state)
{
	struct quay_bind_opts o = QUAY_BIND_OPTS_INIT;
	struct quay_binding_counters bc;
	struct quay_bus_pub_result res;
	quay_bus *b;
	quay_queue *q = queue_new("full", 1);
	quay_binding *bd;
	quay_msg *m;

	(void)state;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	/* REJECT (the default). */
	assert_int_equal(quay_bus_bind(b, "p", q, NULL, &bd), 0);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(1)), 1);
	m = msg_u64(2);
	assert_int_equal(quay_bus_publish_ex(b, "p", m, &res), -EAGAIN); /* the caller keeps m */
	assert_int_equal(res.queues.rejected, 1);
	assert_int_equal(res.rejected, 1);
	assert_int_equal(quay_binding_counters(bd, &bc), 0);
	assert_int_equal(bc.rejected, 1);
	assert_int_equal(quay_bus_unbind(bd), 0);
	/* DROP_NEWEST: consumed, counted. */
	o.policy = QUAY_SUB_DROP_NEWEST;
	assert_int_equal(quay_bus_bind(b, "p", q, &o, &bd), 0);
	assert_int_equal(quay_bus_publish_ex(b, "p", m, &res), 0);
	assert_int_equal(res.queues.dropped, 1);
	assert_int_equal(quay_binding_counters(bd, &bc), 0);
	assert_int_equal(bc.dropped, 1);
	assert_int_equal(quay_bus_unbind(bd), 0);
	/* BLOCK with a timeout: -ETIMEDOUT, counted. */
	o.policy = QUAY_SUB_BLOCK;
	o.block_timeout_ns = 2000000;
	assert_int_equal(quay_bus_bind(b, "p", q, &o, &bd), 0);
	m = msg_u64(3);
	assert_int_equal(quay_bus_publish_ex(b, "p", m, &res), -ETIMEDOUT);
	assert_int_equal(res.queues.timed_out, 1);
	assert_int_equal(quay_binding_counters(bd, &bc), 0);
	assert_int_equal(bc.timed_out, 1);
	/* 0: not at all. */
	assert_int_equal(quay_bus_unbind(bd), 0);
	o.block_timeout_ns = 0;
	assert_int_equal(quay_bus_bind(b, "p", q, &o, &bd), 0);
	assert_int_equal(quay_bus_publish(b, "p", m), -ETIMEDOUT);
	/* Room made: delivered. */
	assert_int_equal(qdrain(q, NULL, 0), 1);
	assert_int_equal(quay_bus_publish(b, "p", m), 1);
	assert_int_equal(qdrain(q, NULL, 0), 1);
	/* Closed queue: counted as closed, publish returns 0 (consumed). */
	assert_int_equal(quay_queue_close(q), 0);
	m = msg_u64(4);
	assert_int_equal(quay_bus_publish_ex(b, "p", m, &res), 0);
	assert_int_equal(res.queues.closed, 1);
	assert_int_equal(quay_bus_unbind(bd), 0);
	/* DROP_OLDEST and unknown policies: -EINVAL. */
	o.policy = QUAY_SUB_DROP_OLDEST;
	assert_int_equal(quay_bus_bind(b, "p", q, &o, &bd), -EINVAL);
	o.policy = (enum quay_sub_policy)9;
	assert_int_equal(quay_bus_bind(b, "p", q, &o, &bd), -EINVAL);
	quay_bus_destroy(b);
	quay_queue_destroy(q);
	assert_pool_empty();
}

struct unblocker {
	quay_queue *q;
	int got;
};

static void *
unblock_thread(void *arg)
{
	struct unblocker *u = arg;
	quay_lease l;

	/* Take the message that fills the queue after a moment. */
	usleep(20000);
	if (quay_queue_receive(u->q, &l, 1000000000) == 0) {
		(void)quay_queue_ack(u->q, &l);
		quay_msg_unref(l.msg);
		u->got = 1;
	}
	return NULL;
}

/* BLOCK waits until a consumer makes room (lossless). */
static void
test_bind_block_waits(void **state)
{
	struct quay_bind_opts o = QUAY_BIND_OPTS_INIT;
	quay_bus *b;
	quay_queue *q = queue_new("blk", 1);
	quay_binding *bd;
	struct unblocker u = { q, 0 };
	pthread_t t;

	(void)state;
	o.policy = QUAY_SUB_BLOCK;
	o.block_timeout_ns = -1;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	assert_int_equal(quay_bus_bind(b, "p", q, &o, &bd), 0);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(1)), 1);
	assert_int_equal(pthread_create(&t, NULL, unblock_thread, &u), 0);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(2)), 1); /* waits */
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(u.got, 1);
	assert_int_equal(qdrain(q, NULL, 0), 1);
	quay_bus_destroy(b); /* unbinds */
	quay_queue_destroy(q);
	assert_pool_empty();
}

static void
test_bind_group(void **state)
{
	quay_bus *b;
	quay_queue *q[3] = { queue_new("g0", 64), queue_new("g1", 64), queue_new("g2", 64) };
	quay_sub *s;
	size_t n[3], total = 0;
	struct quay_bus_pub_result res;

	(void)state;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	for (int i = 0; i < 3; i++)
		(void)bind_new(b, i == 2 ? "w.#" : "w.*", q[i], QUAY_SUB_REJECT, "workers", NULL);
	assert_int_equal(quay_bus_subscribe(b, "w.*", NULL, &s), 0);
	for (uint64_t i = 0; i < 30; i++) {
		assert_int_equal(quay_bus_publish_ex(b, "w.x", msg_u64(i), &res), 2); /* group once */
		assert_int_equal(res.queues.matched, 1);
		assert_int_equal(res.subs.matched, 1);
	}
	for (int i = 0; i < 3; i++) {
		n[i] = qdrain(q[i], NULL, 0);
		assert_int_equal(n[i], 10); /* round robin */
		total += n[i];
	}
	assert_int_equal(total, 30);
	assert_int_equal(sdrain(s), 30);
	/* A full member is skipped. */
	for (uint64_t i = 0; i < 64; i++)
		assert_int_equal(quay_queue_send(q[0], msg_u64(i)), 0);
	for (uint64_t i = 0; i < 30; i++)
		assert_int_equal(quay_bus_publish(b, "w.x", msg_u64(i)), 2);
	assert_int_equal(qdrain(q[0], NULL, 0), 64);
	assert_int_equal(qdrain(q[1], NULL, 0) + qdrain(q[2], NULL, 0), 30);
	assert_int_equal(sdrain(s), 30);
	/* A filter on a member: only members whose filter passes compete. */
	{
		quay_queue *qf = queue_new("gf", 64);
		quay_binding *bf = bind_new(b, "f.x", qf, QUAY_SUB_REJECT, "fgroup", "k = 1");
		quay_queue *qn = queue_new("gn", 64);
		quay_binding *bn = bind_new(b, "f.x", qn, QUAY_SUB_REJECT, "fgroup", "k = 2");
		for (uint64_t i = 0; i < 10; i++)
			assert_int_equal(quay_bus_publish(b, "f.x", msg_h(i, H("k", "1"))), 1);
		assert_int_equal(quay_bus_publish_ex(b, "f.x", msg_h(0, H("k", "3")), &res), 0);
		assert_int_equal(res.unroutable, 1);
		assert_int_equal(res.unroutable_rc, -ENOENT);
		assert_int_equal(res.filtered, 2);
		assert_int_equal(qdrain(qf, NULL, 0), 10);
		assert_int_equal(qdrain(qn, NULL, 0), 0);
		assert_int_equal(quay_bus_unbind(bf), 0);
		assert_int_equal(quay_bus_unbind(bn), 0);
		quay_queue_destroy(qf);
		quay_queue_destroy(qn);
	}
	quay_bus_destroy(b);
	for (int i = 0; i < 3; i++)
		quay_queue_destroy(q[i]);
	assert_pool_empty();
}

static void
test_unroutable(void **state)
{
	struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
	struct quay_bus_pub_result res;
	struct quay_bus_counters c;
	quay_queue *un = queue_new("unroutable", 2), *q = queue_new("q", 8);
	quay_bus *b;
	uint64_t v[4];

	(void)state;
	bo.unroutable = un;
	assert_int_equal(quay_bus_create(&bo, &b), 0);
	/* Nothing bound yet: to the unroutable queue. */
	assert_int_equal(quay_bus_publish_ex(b, "a.b", msg_u64(1), &res), 0);
	assert_int_equal(res.unroutable, 1);
	assert_int_equal(res.unroutable_rc, 0);
	(void)bind_new(b, "a.*", q, QUAY_SUB_REJECT, NULL, "x = 1");
	/* Matched nothing in the trie. */
	assert_int_equal(quay_bus_publish(b, "z", msg_u64(2)), 0);
	/* Matched, filtered out. */
	assert_int_equal(quay_bus_publish_ex(b, "a.b", msg_h(3, H("x", "2")), &res), 0);
	assert_int_equal(res.unroutable, 1);
	assert_int_equal(res.filtered, 1);
	assert_int_equal(res.unroutable_rc, -EAGAIN); /* the unroutable queue is full: counted, consumed */
	/* Routed: not unroutable. */
	assert_int_equal(quay_bus_publish_ex(b, "a.b", msg_h(4, H("x", "1")), &res), 1);
	assert_int_equal(res.unroutable, 0);
	assert_int_equal(quay_bus_counters(b, &c), 0);
	assert_int_equal(c.unroutable, 3);
	assert_int_equal(c.unroutable_queued, 2);
	assert_int_equal(c.filtered, 1);
	assert_int_equal(c.no_subscriber, 2);
	assert_int_equal(qdrain(un, v, 4), 2);
	assert_int_equal(v[0], 1);
	assert_int_equal(v[1], 2);
	assert_int_equal(qdrain(q, v, 4), 1);
	assert_int_equal(v[0], 4);
	/* Batches too. */
	{
		quay_msg *ms[3] = { msg_u64(5), msg_u64(6), msg_u64(7) };
		assert_int_equal(quay_bus_publish_batch(b, "none", ms, 3), 3);
		assert_int_equal(qdrain(un, NULL, 0), 2); /* capacity 2: one refused, counted */
		assert_int_equal(quay_bus_counters(b, &c), 0);
		assert_int_equal(c.unroutable, 6);
		assert_int_equal(c.unroutable_queued, 4);
	}
	quay_bus_destroy(b);
	quay_queue_destroy(un);
	quay_queue_destroy(q);
	/* A bus_opts of the size before issue 12: no unroutable queue. */
	bo.size = offsetof(struct quay_bus_opts, unroutable);
	assert_int_equal(quay_bus_create(&bo, &b), 0);
	assert_int_equal(quay_bus_publish_ex(b, "a", msg_u64(1), &res), 0);
	assert_int_equal(res.unroutable_rc, -ENOENT);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_bind_bad_input(void **state)
{
	struct quay_bind_opts o = QUAY_BIND_OPTS_INIT;
	struct quay_binding_counters bc;
	quay_bus *b;
	quay_queue *q = queue_new("bad", 4);
	quay_binding *bd;

	(void)state;
	assert_int_equal(quay_bus_create(NULL, &b), 0);
	assert_int_equal(quay_bus_bind(NULL, "a", q, NULL, &bd), -EINVAL);
	assert_int_equal(quay_bus_bind(b, NULL, q, NULL, &bd), -EINVAL);
	assert_int_equal(quay_bus_bind(b, "a", NULL, NULL, &bd), -EINVAL);
	assert_int_equal(quay_bus_bind(b, "a", q, NULL, NULL), -EINVAL);
	assert_int_equal(quay_bus_bind(b, "a..b", q, NULL, &bd), -EINVAL);
	assert_int_equal(quay_bus_bind(b, "a.>.b", q, NULL, &bd), -EINVAL);
	assert_int_equal(quay_bus_bind(b, "", q, NULL, &bd), -EINVAL);
	o.size = 1;
	assert_int_equal(quay_bus_bind(b, "a", q, &o, &bd), -EINVAL);
	o.size = sizeof(o);
	o.flags = 1;
	assert_int_equal(quay_bus_bind(b, "a", q, &o, &bd), -EINVAL);
	o.flags = 0;
	o.group = "";
	assert_int_equal(quay_bus_bind(b, "a", q, &o, &bd), -EINVAL);
	o.group = NULL;
	o.filter = "a = ";
	assert_int_equal(quay_bus_bind(b, "a", q, &o, &bd), -EINVAL);
	o.filter = "";
	assert_int_equal(quay_bus_bind(b, "a", q, &o, &bd), -EINVAL);
	assert_int_equal(quay_bus_sub_count(b), 0);
	assert_int_equal(quay_bus_unbind(NULL), -EINVAL);
	assert_int_equal(quay_binding_counters(NULL, &bc), -EINVAL);
	o.filter = NULL;
	assert_int_equal(quay_bus_bind(b, "a", q, &o, &bd), 0);
	assert_int_equal(quay_binding_counters(bd, NULL), -EINVAL);
	assert_int_equal(quay_bus_unsubscribe((quay_sub *)(void *)bd), -EINVAL); /* not a subscription */
	assert_int_equal(quay_bus_unbind(bd), 0);
	quay_bus_destroy(b);
	quay_queue_destroy(q);
	assert_pool_empty();
}

/* Destroying a queue that is still bound aborts in builds with asserts. */
static void
test_destroy_bound_queue(void **state)
{
#ifdef NDEBUG
	(void)state;
	skip();
#else
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		quay_bus *b;
		quay_queue *q = queue_new("bound", 4);
		quay_binding *bd;
		/* No core dump for the expected abort. */
		signal(SIGABRT, SIG_DFL);
		if (quay_bus_create(NULL, &b) != 0 || quay_bus_bind(b, "a", q, NULL, &bd) != 0)
			_exit(2);
		fclose(stderr);
		quay_queue_destroy(q); /* still bound */
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGABRT);
	/* The unroutable queue counts as bound too, until the bus goes. */
	pid = fork();
	if (pid == 0) {
		struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
		quay_bus *b;
		bo.unroutable = queue_new("un", 4);
		if (quay_bus_create(&bo, &b) != 0)
			_exit(2);
		fclose(stderr);
		quay_queue_destroy(bo.unroutable);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
#endif
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_table),
		cmocka_unit_test(test_hash_many),
		cmocka_unit_test(test_filter_operators),
		cmocka_unit_test(test_filter_errors),
		cmocka_unit_test(test_filter_format),
		cmocka_unit_test(test_filter_subscription),
		cmocka_unit_test(test_bind_fanout),
		cmocka_unit_test(test_bind_policies),
		cmocka_unit_test(test_bind_block_waits),
		cmocka_unit_test(test_bind_group),
		cmocka_unit_test(test_unroutable),
		cmocka_unit_test(test_bind_bad_input),
		cmocka_unit_test(test_destroy_bound_queue),
	};
	return cmocka_run_group_tests_name("routing", tests, pool_setup, pool_teardown);
}
