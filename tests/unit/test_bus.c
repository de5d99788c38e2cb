/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of quay/bus.h: the subject and pattern table (TESTING.md
 * 5.4), every public call with valid and bad input, the matcher against
 * a naive reference on random subjects and patterns (with subscribe and
 * unsubscribe in between, so path copying and pruning are exercised),
 * fan-out, queue groups, each overflow policy, priorities, receive
 * timeouts, unsubscribe and destroy waking receivers with -EPIPE, destroy
 * waking requesters and publishers blocked on a full BLOCK subscription,
 * request/reply with timeouts and late replies, metrics and the latency
 * histogram with an injected clock. Every test checks at the end that all
 * messages went back to the pool.
 */
#include "quay_test.h"

#include <limits.h>
#include <sched.h>
#include <stdatomic.h>

#include <quay/bus.h>

#define JOIN_MS 10000

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

static void
assert_pool_empty(void)
{
	struct quay_pool_stats st;

	assert_int_equal(quay_pool_stats(g_pool, &st), 0);
	assert_int_equal(st.in_use, 0);
}

static quay_bus *
bus_new(void)
{
	quay_bus *b = NULL;

	assert_int_equal(quay_bus_create(NULL, &b), 0);
	assert_non_null(b);
	return b;
}

static quay_sub *
sub_new(quay_bus *b, const char *pat, enum quay_sub_policy pol, size_t cap, const char *group)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_sub *s = NULL;

	o.policy = pol;
	o.capacity = cap;
	o.group = group;
	assert_int_equal(quay_bus_subscribe(b, pat, &o, &s), 0);
	assert_non_null(s);
	return s;
}

/* Receive everything queued; returns the count, values into v. */
static size_t
drain(quay_sub *s, uint64_t *v, size_t max)
{
	quay_msg *m[64];
	size_t n = 0, got;

	while ((got = quay_sub_receive_burst(s, m, 64)) > 0) {
		for (size_t i = 0; i < got; i++) {
			if (v != NULL && n < max)
				v[n] = msg_val(m[i]);
			n++;
			quay_msg_unref(m[i]);
		}
	}
	return n;
}

/* ---- subjects and patterns ------------------------------------------- */

static void
test_subject_table(void **state)
{
	static const struct {
		const char *s;
		int as_subject; /* expected quay_bus_subject_check(s, false) */
		int as_pattern; /* expected quay_bus_subject_check(s, true) */
	} cases[] = {
		{ "a", 0, 0 },
		{ "orders.buy.eu", 0, 0 },
		{ "a-b_c:d!#$%&'()+,/;<=?@[]^`{|}~\"\\", 0, 0 },
		{ "*", -EINVAL, 0 },
		{ ">", -EINVAL, 0 },
		{ "a.*", -EINVAL, 0 },
		{ "a.>", -EINVAL, 0 },
		{ "*.*.>", -EINVAL, 0 },
		{ "a.*.b", -EINVAL, 0 },
		{ "", -EINVAL, -EINVAL },
		{ ".", -EINVAL, -EINVAL },
		{ "a..b", -EINVAL, -EINVAL },
		{ ".a", -EINVAL, -EINVAL },
		{ "a.", -EINVAL, -EINVAL },
		{ "a*", -EINVAL, -EINVAL },
		{ "*b", -EINVAL, -EINVAL },
		{ "a>", -EINVAL, -EINVAL },
		{ ">b", -EINVAL, -EINVAL },
		{ "a.>.b", -EINVAL, -EINVAL },
		{ ">.>", -EINVAL, -EINVAL },
		{ "**", -EINVAL, -EINVAL },
		{ "a b", -EINVAL, -EINVAL },
		{ "a\tb", -EINVAL, -EINVAL },
		{ "a\x7f", -EINVAL, -EINVAL },
		{ "caf\xc3\xa9", -EINVAL, -EINVAL },
		{ "a.\x01", -EINVAL, -EINVAL },
	};
	char buf[QUAY_BUS_SUBJECT_MAX + 8];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(quay_bus_subject_check(cases[i].s, false), cases[i].as_subject);
		assert_int_equal(quay_bus_subject_check(cases[i].s, true), cases[i].as_pattern);
	}
	assert_int_equal(quay_bus_subject_check(NULL, false), -EINVAL);
	assert_int_equal(quay_bus_subject_check(NULL, true), -EINVAL);
	/* Length: 255 ok, 256 not. */
	memset(buf, 'x', sizeof(buf));
	buf[QUAY_BUS_SUBJECT_MAX] = '\0';
	assert_int_equal(quay_bus_subject_check(buf, false), 0);
	buf[QUAY_BUS_SUBJECT_MAX] = 'x';
	buf[QUAY_BUS_SUBJECT_MAX + 1] = '\0';
	assert_int_equal(quay_bus_subject_check(buf, false), -EINVAL);
	assert_int_equal(quay_bus_subject_check(buf, true), -EINVAL);
	/* Tokens: 32 ok, 33 not ("a.a.a..."). */
	for (size_t i = 0; i < 2 * QUAY_BUS_TOKENS_MAX; i += 2) {
		buf[i] = 'a';
		buf[i + 1] = '.';
	}
	buf[2 * QUAY_BUS_TOKENS_MAX - 1] = '\0';
	assert_int_equal(quay_bus_subject_check(buf, false), 0);
	assert_int_equal(quay_bus_subject_check(buf, true), 0);
	buf[2 * QUAY_BUS_TOKENS_MAX - 1] = '.';
	buf[2 * QUAY_BUS_TOKENS_MAX] = 'a';
	buf[2 * QUAY_BUS_TOKENS_MAX + 1] = '\0';
	assert_int_equal(quay_bus_subject_check(buf, false), -EINVAL);
	assert_int_equal(quay_bus_subject_check(buf, true), -EINVAL);
	/* The same limits on publish (its own scanner counts the dots eight
	 * bytes at a time): 33 tokens refused, the message still the caller's;
	 * 32 published. */
	{
		quay_bus *b;
		quay_msg *m = msg_u64(1);

		assert_int_equal(quay_bus_create(NULL, &b), 0);
		assert_int_equal(quay_bus_publish(b, buf, m), -EINVAL);
		buf[2 * QUAY_BUS_TOKENS_MAX - 1] = '\0';
		assert_int_equal(quay_bus_publish(b, buf, m), 0); /* no subscriber: consumed */
		quay_bus_destroy(b);
	}
}

static void
test_match_table(void **state)
{
	static const struct {
		const char *p, *s;
		bool m;
	} cases[] = {
		{ "a.b.c", "a.b.c", true },
		{ "a.b.c", "a.b", false },
		{ "a.b", "a.b.c", false },
		{ "a.*.c", "a.x.c", true },
		{ "a.*.c", "a.c", false },
		{ "*", "a", true },
		{ "*", "a.b", false },
		{ ">", "a", true },
		{ ">", "a.b.c", true },
		{ "a.>", "a", false },
		{ "a.>", "a.b", true },
		{ "a.>", "a.b.c", true },
		{ "*.>", "a", false },
		{ "*.>", "a.b", true },
		{ "a.*.>", "a.b", false },
		{ "ab", "a", false },
		{ "a", "ab", false },
		{ "a.*", "b.x", false },
		{ "a.b", "a.*", false }, /* a subject may not hold a wildcard */
		{ "a..b", "a.x.b", false },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_true(quay_bus_match(cases[i].p, cases[i].s) == cases[i].m);
	assert_false(quay_bus_match(NULL, "a"));
	assert_false(quay_bus_match("a", NULL));
}

/* ---- the property test against a naive reference --------------------- */

/* The naive matcher: split both on dots, compare token by token; `#`
 * tries every number of tokens (plain backtracking: exponential, fine
 * for the short patterns here). */
static bool
ref_match(const char *p, const char *s)
{
	const char *pe = strchr(p, '.'), *se;
	size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl;

	if (pl == 1 && p[0] == '#') {
		if (pe == NULL)
			return true; /* the rest of s, whatever it is (or nothing) */
		/* Zero tokens, then one more each time (t = "": all of them). */
		for (const char *t = s;;) {
			const char *nt;
			if (ref_match(pe + 1, t))
				return true;
			if (*t == '\0')
				break;
			nt = strchr(t, '.');
			t = nt != NULL ? nt + 1 : "";
		}
		return false;
	}
	if (*s == '\0')
		return false; /* pattern tokens left, no subject tokens */
	se = strchr(s, '.');
	sl = se ? (size_t)(se - s) : strlen(s);
	if (pl == 1 && p[0] == '>')
		return true; /* s has at least this token */
	if (!(pl == 1 && p[0] == '*') && (pl != sl || memcmp(p, s, pl) != 0))
		return false;
	if (pe == NULL)
		return se == NULL;
	return ref_match(pe + 1, se != NULL ? se + 1 : "");
}

static void
rand_subject(uint64_t *seed, char *buf, bool pattern)
{
	static const char *const toks[] = { "a", "b", "c", "orders", "eu" };
	unsigned n = 1 + (unsigned)(qt_rand(seed) % 5);
	size_t len = 0;

	for (unsigned i = 0; i < n; i++) {
		const char *t = toks[qt_rand(seed) % 5];
		if (pattern) {
			unsigned r = (unsigned)(qt_rand(seed) % 10);
			if (r < 2)
				t = "*";
			else if (r == 2 && i == n - 1)
				t = ">";
			else if (r == 3)
				t = "#";
		}
		if (i > 0)
			buf[len++] = '.';
		memcpy(buf + len, t, strlen(t));
		len += strlen(t);
	}
	buf[len] = '\0';
}

#define PROP_SUBS 48

static void
test_match_property(void **state)
{
	uint64_t seed = 12345;
	quay_bus *b = bus_new();
	quay_sub *subs[PROP_SUBS] = { 0 };
	char pats[PROP_SUBS][64];
	char subj[64];
	size_t checked = 0;

	(void)state;
	for (int round = 0; round < 4000; round++) {
		/* Now and then replace a subscription (exercises remove/prune). */
		unsigned k = (unsigned)(qt_rand(&seed) % PROP_SUBS);
		if (subs[k] == NULL || qt_rand(&seed) % 8 == 0) {
			if (subs[k] != NULL)
				assert_int_equal(quay_bus_unsubscribe(subs[k]), 0);
			rand_subject(&seed, pats[k], true);
			subs[k] = sub_new(b, pats[k], QUAY_SUB_DROP_NEWEST, 4, NULL);
		}
		rand_subject(&seed, subj, false);
		int expect = 0;
		for (unsigned i = 0; i < PROP_SUBS; i++) {
			if (subs[i] != NULL) {
				bool m = ref_match(pats[i], subj);
				assert_true(quay_bus_match(pats[i], subj) == m);
				expect += m;
			}
		}
		assert_int_equal(quay_bus_publish(b, subj, msg_u64((uint64_t)round)), expect);
		for (unsigned i = 0; i < PROP_SUBS; i++) {
			if (subs[i] == NULL)
				continue;
			uint64_t v[2];
			size_t got = drain(subs[i], v, 2);
			if (ref_match(pats[i], subj)) {
				assert_int_equal(got, 1);
				assert_int_equal(v[0], (uint64_t)round);
			} else {
				assert_int_equal(got, 0);
			}
			checked++;
		}
	}
	assert_true(checked > 100000);
	assert_int_equal(quay_bus_sub_count(b), PROP_SUBS);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* ---- bad input --------------------------------------------------------- */

static void
test_create_bad(void **state)
{
	struct quay_bus_opts o;
	quay_bus *b = (quay_bus *)(uintptr_t)0x1;
	char longname[QUAY_BUS_NAME_MAX + 2];

	(void)state;
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(quay_bus_create(NULL, NULL), -EINVAL);
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.size = 3;
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.flags = 1;
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.name = "";
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o.name = "has space";
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o.name = longname;
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.max_subs = QUAY_BUS_SUBS_MAX + 1;
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.max_requests = QUAY_BUS_REQUESTS_MAX + 1;
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.latency_sample = 3; /* not a power of two */
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	o.latency_sample = QUAY_BUS_LATENCY_SAMPLE_MAX * 2;
	assert_int_equal(quay_bus_create(&o, &b), -EINVAL);
	assert_ptr_equal(b, (quay_bus *)(uintptr_t)0x1); /* untouched */
	/* A struct that stops before latency_sample: the default. */
	o = (struct quay_bus_opts)QUAY_BUS_OPTS_INIT;
	o.size = offsetof(struct quay_bus_opts, latency_sample);
	assert_int_equal(quay_bus_create(&o, &b), 0);
	quay_bus_destroy(b);
	quay_bus_destroy(NULL);
}

static void
test_subscribe_bad(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = (quay_sub *)(uintptr_t)0x1;
	struct quay_sub_opts o;
	static const char *const bad_patterns[] = { "", "a..b", "a*", "a.>.b", ">.a", "a b", "a." };

	(void)state;
	assert_int_equal(quay_bus_subscribe(NULL, "a", NULL, &s), -EINVAL);
	assert_int_equal(quay_bus_subscribe(b, NULL, NULL, &s), -EINVAL);
	assert_int_equal(quay_bus_subscribe(b, "a", NULL, NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_patterns) / sizeof(bad_patterns[0]); i++)
		assert_int_equal(quay_bus_subscribe(b, bad_patterns[i], NULL, &s), -EINVAL);
	o = (struct quay_sub_opts)QUAY_SUB_OPTS_INIT;
	o.size = 1;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o = (struct quay_sub_opts)QUAY_SUB_OPTS_INIT;
	o.flags = 0x100;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o = (struct quay_sub_opts)QUAY_SUB_OPTS_INIT;
	o.policy = (enum quay_sub_policy)7;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o = (struct quay_sub_opts)QUAY_SUB_OPTS_INIT;
	o.capacity = 3;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o.capacity = (size_t)1 << 31;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o = (struct quay_sub_opts)QUAY_SUB_OPTS_INIT;
	o.priorities = 257;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o.priorities = 4;
	o.policy = QUAY_SUB_DROP_OLDEST;
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o = (struct quay_sub_opts)QUAY_SUB_OPTS_INIT;
	o.group = "";
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	o.group = "g h";
	assert_int_equal(quay_bus_subscribe(b, "a", &o, &s), -EINVAL);
	assert_ptr_equal(s, (quay_sub *)(uintptr_t)0x1);
	assert_int_equal(quay_bus_sub_count(b), 0);
	assert_int_equal(quay_bus_unsubscribe(NULL), -EINVAL);
	quay_bus_destroy(b);
}

static void
test_max_subs(void **state)
{
	struct quay_bus_opts o = QUAY_BUS_OPTS_INIT;
	quay_bus *b;
	quay_sub *s1, *s2, *s3;

	(void)state;
	o.max_subs = 2;
	assert_int_equal(quay_bus_create(&o, &b), 0);
	assert_int_equal(quay_bus_subscribe(b, "a", NULL, &s1), 0);
	assert_int_equal(quay_bus_subscribe(b, "a", NULL, &s2), 0);
	assert_int_equal(quay_bus_subscribe(b, "a", NULL, &s3), -ENOMEM);
	assert_int_equal(quay_bus_unsubscribe(s1), 0);
	assert_int_equal(quay_bus_subscribe(b, "a", NULL, &s3), 0);
	assert_int_equal(quay_bus_sub_count(b), 2);
	quay_bus_destroy(b);
}

static void
test_publish_bad(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, ">", QUAY_SUB_DROP_NEWEST, 16, NULL);
	quay_msg *m = msg_u64(1), *arr[2] = { m, NULL };
	static const char *const bad[] = { "", "a.*", "a.>", "*", ">", "a..b", "a.", "a b", "a*" };
	struct quay_bus_pub_result res;

	(void)state;
	assert_int_equal(quay_bus_publish(NULL, "a", m), -EINVAL);
	assert_int_equal(quay_bus_publish(b, NULL, m), -EINVAL);
	assert_int_equal(quay_bus_publish(b, "a", NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(quay_bus_publish(b, bad[i], m), -EINVAL);
		assert_int_equal(quay_bus_publish_ex(b, bad[i], m, &res), -EINVAL);
		assert_int_equal(res.delivered, 0);
		assert_int_equal(quay_bus_publish_batch(b, bad[i], arr, 1), -EINVAL);
	}
	assert_int_equal(quay_bus_publish_batch(NULL, "a", arr, 1), -EINVAL);
	assert_int_equal(quay_bus_publish_batch(b, "a", NULL, 1), -EINVAL);
	assert_int_equal(quay_bus_publish_batch(b, "a", arr, 2), -EINVAL); /* NULL entry */
	assert_int_equal(quay_bus_publish_batch(b, "a", arr, 0), 0);
	assert_int_equal(quay_msg_refcount(m), 1); /* still ours */
	assert_int_equal(quay_sub_pending(s), 0);
	assert_int_equal(quay_bus_publish(b, "a", m), 1); /* consumed */
	assert_int_equal(drain(s, NULL, 0), 1);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* Publish checks subjects with its own word-at-a-time scan (not the
 * parser behind quay_bus_subject_check): the two must agree, in
 * particular where a dot, an empty token or a bad byte sits on either
 * side of an 8-byte boundary. Boundary cases, then random strings. */
static void
test_publish_subject_scan(void **state)
{
	static const char *const cases[] = {
		"abcdefg.h",
		"abcdefgh.i",
		"abcdefg..h",
		"abcdefgh..i",
		"abcdefgh.",
		"abcdefg.",
		".abcdefgh",
		"abcdefghijklmno.p",
		"abcdefghijklmnop.",
		"abcdefghijklmno*",
		"abcdefgh>",
		"abcdefg\x7f",
		"abcdefgh\x7f",
		"abcdefgh\x80",
		"abcdefgh ",
		"abcdefghijklmnop",
		"a.b.c.d.e.f.g.h.i",
		"a.b.c.d.e.f.g.h.",
		"!",
		"~~~~~~~~",
		"~~~~~~~~~",
		"a.~",
		"a.!.b",
	};
	static const char alphabet[] = "ab.*> \x7f\x80~!";
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, ">", QUAY_SUB_DROP_NEWEST, 16, NULL);
	char buf[QUAY_BUS_SUBJECT_MAX + 8];
	uint64_t x = 0x2545f4914f6cdd1dULL;
	size_t checked = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) + 4000; i++) {
		const char *subj;
		if (i < sizeof(cases) / sizeof(cases[0])) {
			subj = cases[i];
		} else {
			size_t len;
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			len = 1 + (size_t)(x % 40);
			for (size_t k = 0; k < len; k++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				/* Mostly plain bytes, so that valid subjects come up. */
				buf[k] = (x % 4 != 0) ? alphabet[(x >> 8) % 2] :
				                        alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
			}
			buf[len] = '\0';
			subj = buf;
		}
		int want = quay_bus_subject_check(subj, false);
		quay_msg *m = msg_u64(i);
		int r = quay_bus_publish(b, subj, m);
		if (want == 0) {
			assert_int_equal(r, 1); /* ">" matches every subject */
			assert_int_equal(drain(s, NULL, 0), 1);
		} else {
			assert_int_equal(r, -EINVAL);
			quay_msg_unref(m);
		}
		checked++;
	}
	assert_true(checked > 4000);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_getters_bad(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "x", QUAY_SUB_BLOCK, 0, NULL);
	struct quay_bus_counters bc;
	struct quay_sub_counters sc;
	struct quay_hist_data *hd = malloc(sizeof(*hd));
	quay_msg *m = NULL, *arr[1];

	(void)state;
	assert_non_null(hd);
	assert_null(quay_bus_stats(NULL));
	assert_non_null(quay_bus_stats(b));
	assert_int_equal(quay_bus_counters(NULL, &bc), -EINVAL);
	assert_int_equal(quay_bus_counters(b, NULL), -EINVAL);
	assert_int_equal(quay_sub_counters(NULL, &sc), -EINVAL);
	assert_int_equal(quay_sub_counters(s, NULL), -EINVAL);
	assert_int_equal(quay_sub_latency(NULL, hd), -EINVAL);
	assert_int_equal(quay_sub_latency(s, NULL), -EINVAL);
	assert_int_equal(quay_sub_latency(s, hd), 0);
	assert_int_equal(quay_sub_pending(NULL), 0);
	assert_int_equal(quay_bus_sub_count(NULL), 0);
	assert_int_equal(quay_bus_sub_count(b), 1);
	assert_int_equal(quay_sub_receive(NULL, &m, 0), -EINVAL);
	assert_int_equal(quay_sub_receive(s, NULL, 0), -EINVAL);
	assert_int_equal(quay_sub_receive(s, &m, 0), -ETIMEDOUT);
	assert_int_equal(quay_sub_receive_burst(NULL, arr, 1), 0);
	assert_int_equal(quay_sub_receive_burst(s, NULL, 1), 0);
	assert_int_equal(quay_sub_receive_burst(s, arr, 0), 0);
	free(hd);
	quay_bus_destroy(b);
}

/* ---- fan-out, groups, policies ----------------------------------------- */

static void
test_fanout(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *exact = sub_new(b, "orders.buy.eu", QUAY_SUB_BLOCK, 64, NULL);
	quay_sub *star = sub_new(b, "orders.*.eu", QUAY_SUB_BLOCK, 64, NULL);
	quay_sub *all = sub_new(b, "orders.>", QUAY_SUB_BLOCK, 64, NULL);
	quay_sub *other = sub_new(b, "trades.>", QUAY_SUB_BLOCK, 64, NULL);
	uint64_t v[64];
	struct quay_bus_counters bc;
	struct quay_sub_counters sc;

	(void)state;
	for (uint64_t i = 0; i < 10; i++) {
		quay_msg *m = msg_u64(i);

		assert_int_equal(quay_bus_publish(b, "orders.buy.eu", m), 3);
		/* The publisher's only reference became one per target
		 * (taken without a CAS: the sole-holder path of ref_n); m
		 * is still queued, so the count may be read. */
		assert_int_equal(quay_msg_refcount(m), 3);
		assert_int_equal(quay_bus_publish(b, "orders.sell.eu", msg_u64(100 + i)), 2);
		assert_int_equal(quay_bus_publish(b, "orders.sell", msg_u64(200 + i)), 1);
		assert_int_equal(quay_bus_publish(b, "nobody", msg_u64(300 + i)), 0);
	}
	assert_int_equal(quay_sub_pending(exact), 10);
	assert_int_equal(drain(exact, v, 64), 10);
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(v[i], i);
	assert_int_equal(drain(star, v, 64), 20);
	for (uint64_t i = 0; i < 10; i++) {
		assert_int_equal(v[2 * i], i);
		assert_int_equal(v[2 * i + 1], 100 + i);
	}
	assert_int_equal(drain(all, v, 64), 30);
	assert_int_equal(drain(other, v, 64), 0);
	assert_int_equal(quay_bus_counters(b, &bc), 0);
	assert_int_equal(bc.published, 40);
	assert_int_equal(bc.delivered, 60);
	assert_int_equal(bc.no_subscriber, 10);
	assert_int_equal(quay_sub_counters(star, &sc), 0);
	assert_int_equal(sc.delivered, 20);
	assert_int_equal(sc.received, 20);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_batch(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "x.*", QUAY_SUB_BLOCK, 64, NULL);
	quay_sub *r = sub_new(b, "x.y", QUAY_SUB_REJECT, 4, NULL);
	quay_msg *m[8];
	uint64_t v[16];

	(void)state;
	for (int i = 0; i < 8; i++)
		m[i] = msg_u64((uint64_t)i);
	assert_int_equal(quay_bus_publish_batch(b, "x.z", m, 8), 8);
	assert_int_equal(drain(s, v, 16), 8);
	for (uint64_t i = 0; i < 8; i++)
		assert_int_equal(v[i], i);
	/* Only r matches "x.y" with a full queue after 4: the batch stops. */
	assert_int_equal(quay_bus_unsubscribe(s), 0);
	for (int i = 0; i < 8; i++)
		m[i] = msg_u64((uint64_t)i);
	assert_int_equal(quay_bus_publish_batch(b, "x.y", m, 8), 4);
	for (int i = 4; i < 8; i++)
		assert_int_equal(quay_msg_refcount(m[i]), 1); /* still ours */
	assert_int_equal(quay_bus_publish_batch(b, "x.y", m + 4, 4), -EAGAIN);
	for (int i = 4; i < 8; i++)
		quay_msg_unref(m[i]);
	assert_int_equal(drain(r, v, 16), 4);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* publish_batch over several chunks to every kind of target at once: a
 * plain ring that takes whole chunks (bulk), a small DROP_NEWEST ring
 * that cannot (per message), a priority queue and a group; order,
 * exactly-once and the counters must be those of n single publishes. */
static void
test_batch_mixed_targets(void **state)
{
	enum { N = 200 };
	quay_bus *b = bus_new();
	quay_sub *a = sub_new(b, "t.>", QUAY_SUB_BLOCK, 256, NULL);
	quay_sub *d = sub_new(b, "t.*", QUAY_SUB_DROP_NEWEST, 4, NULL);
	quay_sub *g[2];
	quay_sub *p;
	struct quay_sub_opts po = QUAY_SUB_OPTS_INIT;
	struct quay_bus_counters bc;
	struct quay_sub_counters sc;
	quay_msg *m[N];
	uint64_t v[N];
	bool seen[N] = { false };
	size_t total = 0;

	(void)state;
	po.priorities = 2;
	po.capacity = 256;
	assert_int_equal(quay_bus_subscribe(b, "t.x", &po, &p), 0);
	for (int i = 0; i < 2; i++)
		g[i] = sub_new(b, "t.x", QUAY_SUB_BLOCK, 256, "grp");
	for (int i = 0; i < N; i++)
		m[i] = msg_u64((uint64_t)i);
	assert_int_equal(quay_bus_publish_batch(b, "t.x", m, N), N); /* 64 + 64 + 64 + 8 */
	assert_int_equal(drain(a, v, N), N);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(v[i], i);
	assert_int_equal(drain(d, v, N), 4);
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(v[i], i);
	assert_int_equal(drain(p, v, N), N);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(v[i], i);
	for (int k = 0; k < 2; k++) {
		size_t n = drain(g[k], v, N);
		for (size_t i = 0; i < n; i++) {
			assert_false(seen[v[i]]);
			seen[v[i]] = true;
			if (i > 0)
				assert_true(v[i] > v[i - 1]);
		}
		total += n;
	}
	assert_int_equal(total, N);
	assert_int_equal(quay_sub_counters(a, &sc), 0);
	assert_int_equal(sc.delivered, N);
	assert_int_equal(quay_sub_counters(d, &sc), 0);
	assert_int_equal(sc.delivered, 4);
	assert_int_equal(sc.dropped, N - 4);
	assert_int_equal(quay_bus_counters(b, &bc), 0);
	assert_int_equal(bc.published, N);
	assert_int_equal(bc.delivered, 3 * N + 4);
	assert_int_equal(bc.dropped, N - 4);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* Refusals inside a batch: a lone REJECT target stops the batch at the
 * first message it cannot take, also when that is in a later chunk (the
 * first chunk went in whole); next to a target that took everything, its
 * refusals do not stop anything. */
static void
test_batch_refusal_chunks(void **state)
{
	enum { N = 150 };
	quay_bus *b = bus_new();
	quay_sub *r = sub_new(b, "r.x", QUAY_SUB_REJECT, 128, NULL);
	quay_msg *m[N];
	struct quay_sub_counters sc;

	(void)state;
	for (int i = 0; i < N; i++)
		m[i] = msg_u64((uint64_t)i);
	/* 128 fit: chunk 0 in bulk, chunk 1 (64 + 64 = 128) in bulk, then
	 * message 128 is refused. */
	assert_int_equal(quay_bus_publish_batch(b, "r.x", m, N), 128);
	for (int i = 128; i < N; i++)
		assert_int_equal(quay_msg_refcount(m[i]), 1); /* still ours */
	assert_int_equal(quay_bus_publish_batch(b, "r.x", m + 128, N - 128), -EAGAIN);
	assert_int_equal(quay_sub_counters(r, &sc), 0);
	assert_int_equal(sc.delivered, 128);
	assert_int_equal(sc.rejected, 2); /* one per refused call */
	assert_int_equal(drain(r, NULL, 0), 128);
	/* 100 room: chunk 0 in bulk, chunk 1 message by message (36 fit). */
	for (int i = 0; i < 28; i++)
		assert_int_equal(quay_bus_publish(b, "r.x", msg_u64(0)), 1);
	for (int i = 0; i < 128; i++)
		m[i] = msg_u64((uint64_t)i);
	assert_int_equal(quay_bus_publish_batch(b, "r.x", m, N), 100);
	for (int i = 100; i < N; i++)
		assert_int_equal(quay_msg_refcount(m[i]), 1); /* still ours */
	assert_int_equal(quay_sub_counters(r, &sc), 0);
	assert_int_equal(sc.rejected, 3);
	assert_int_equal(drain(r, NULL, 0), 128);
	/* With a roomy subscription beside it, nothing is refused: chunks 0
	 * and 1 go to both in bulk, chunk 2 (22) only to a. */
	quay_sub *a = sub_new(b, "r.*", QUAY_SUB_BLOCK, 256, NULL);
	for (int i = 0; i < 100; i++)
		m[i] = msg_u64((uint64_t)i);
	assert_int_equal(quay_bus_publish_batch(b, "r.x", m, N), N);
	assert_int_equal(quay_sub_counters(r, &sc), 0);
	assert_int_equal(sc.rejected, 3 + 22);
	assert_int_equal(drain(r, NULL, 0), 128);
	assert_int_equal(drain(a, NULL, 0), N);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* A queue-group member unsubscribed while another thread publishes to the
 * group (single publishes and batches), then members joining and leaving
 * until the publisher is done: every publish still reaches one member,
 * nothing is received twice, each member sees its share in order, at
 * most what a leaving member had queued (capacity 1) is released instead
 * of received, and no reference leaks (a publish that meets a member
 * closed under it must try the next). TSan/ASan check the removal. */
struct grp_churn {
	quay_sub *m1;
	_Atomic uint64_t got1;
	quay_bus *bus;
	_Atomic int pub_half; /* the publisher is half way */
	_Atomic int pub_done;
	_Atomic int unsub_started; /* the publisher waits for it there */
	uint64_t *vals1;
	size_t nvals1;
	int unsub_r;
	size_t cycles; /* churned members */
};

static void *
grp_churn_recv(void *arg)
{
	struct grp_churn *c = arg;
	quay_msg *m;

	while (quay_sub_receive(c->m1, &m, -1) == 0) {
		c->vals1[c->nvals1++] = msg_val(m);
		quay_msg_unref(m);
		atomic_fetch_add(&c->got1, 1);
	}
	return NULL;
}

static void *
grp_churn_unsub(void *arg)
{
	struct grp_churn *c = arg;

	while (atomic_load(&c->got1) < 50 && !atomic_load(&c->pub_half))
		sched_yield();
	atomic_store(&c->unsub_started, 1);
	c->unsub_r = quay_bus_unsubscribe(c->m1);
	/* Then members that join and leave while the publisher goes on
	 * (each may take one message with it when it leaves). */
	while (c->unsub_r == 0 && !atomic_load(&c->pub_done)) {
		struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
		quay_sub *t = NULL;
		o.capacity = 1;
		o.group = "g";
		c->unsub_r = quay_bus_subscribe(c->bus, "w.x", &o, &t);
		for (int k = 0; k < 2 && c->unsub_r == 0; k++)
			sched_yield();
		if (c->unsub_r == 0)
			c->unsub_r = quay_bus_unsubscribe(t);
		c->cycles++;
	}
	return NULL;
}

static void
test_group_member_unsubscribed_mid_publish(void **state)
{
	enum { N = 4000 };
	quay_bus *b = bus_new();
	quay_sub *m0 = sub_new(b, "w.*", QUAY_SUB_BLOCK, 4096, "g");
	quay_sub *m2 = sub_new(b, "w.>", QUAY_SUB_BLOCK, 4096, "g");
	struct grp_churn c = { .m1 = sub_new(b, "w.x", QUAY_SUB_BLOCK, 1, "g"), .bus = b };
	static bool seen[N];
	static uint64_t v[N];
	pthread_t rt, ut;
	size_t total = 0;

	(void)state;
	memset(seen, 0, sizeof(seen));
	c.vals1 = calloc(N, sizeof(uint64_t));
	assert_non_null(c.vals1);
	assert_int_equal(pthread_create(&rt, NULL, grp_churn_recv, &c), 0);
	assert_int_equal(pthread_create(&ut, NULL, grp_churn_unsub, &c), 0);
	for (uint64_t i = 0; i < N;) {
		if (i == N / 2) {
			/* The second half races with the unsubscribe. */
			atomic_store(&c.pub_half, 1);
			while (!atomic_load(&c.unsub_started))
				sched_yield();
		}
		if ((i / 16) % 2 == 0) {
			quay_msg *bm[16];
			for (int k = 0; k < 16; k++)
				bm[k] = msg_u64(i + (uint64_t)k);
			assert_int_equal(quay_bus_publish_batch(b, "w.x", bm, 16), 16);
			i += 16;
		} else {
			assert_int_equal(quay_bus_publish(b, "w.x", msg_u64(i)), 1);
			i++;
		}
	}
	atomic_store(&c.pub_done, 1);
	assert_true(qt_join_within(ut, JOIN_MS));
	assert_int_equal(c.unsub_r, 0);
	assert_true(qt_join_within(rt, JOIN_MS));
	for (size_t i = 0; i < c.nvals1; i++) {
		assert_false(seen[c.vals1[i]]);
		seen[c.vals1[i]] = true;
		if (i > 0)
			assert_true(c.vals1[i] > c.vals1[i - 1]);
	}
	total = c.nvals1;
	quay_sub *rest[2] = { m0, m2 };
	for (int k = 0; k < 2; k++) {
		size_t n = drain(rest[k], v, N);
		for (size_t i = 0; i < n; i++) {
			assert_false(seen[v[i]]);
			seen[v[i]] = true;
			if (i > 0)
				assert_true(v[i] > v[i - 1]);
		}
		total += n;
	}
	/* m1 and each churned member held at most one when it left. */
	assert_true(total <= N && total + 1 + c.cycles >= N);
	free(c.vals1);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_group(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *w[3], *plain = sub_new(b, "jobs.>", QUAY_SUB_BLOCK, 512, NULL);
	quay_sub *other = sub_new(b, "jobs.*", QUAY_SUB_BLOCK, 512, "other");
	uint64_t v[512];
	bool seen[300] = { false };
	size_t total = 0;

	(void)state;
	for (int i = 0; i < 3; i++)
		w[i] = sub_new(b, i == 2 ? "jobs.*" : "jobs.>", QUAY_SUB_BLOCK, 512, "workers");
	for (uint64_t i = 0; i < 300; i++)
		assert_int_equal(quay_bus_publish(b, "jobs.x", msg_u64(i)), 3); /* plain, other, workers */
	for (int i = 0; i < 3; i++) {
		size_t n = drain(w[i], v, 512);
		assert_int_equal(n, 100); /* round robin, nobody full */
		for (size_t k = 0; k < n; k++) {
			assert_false(seen[v[k]]);
			seen[v[k]] = true;
			if (k > 0)
				assert_true(v[k] > v[k - 1]);
		}
		total += n;
	}
	assert_int_equal(total, 300);
	assert_int_equal(drain(plain, NULL, 0), 300);
	assert_int_equal(drain(other, NULL, 0), 300);
	/* "jobs.a.b" matches w[0], w[1] (jobs.>) but not w[2]. */
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(quay_bus_publish(b, "jobs.a.b", msg_u64(i)), 2);
	assert_int_equal(drain(w[2], NULL, 0), 0);
	assert_int_equal(drain(w[0], NULL, 0) + drain(w[1], NULL, 0), 10);
	/* A full member is skipped: fill w[0] (cap 2 group "g2"). */
	quay_sub *f0 = sub_new(b, "q", QUAY_SUB_REJECT, 2, "g2");
	quay_sub *f1 = sub_new(b, "q", QUAY_SUB_REJECT, 64, "g2");
	for (uint64_t i = 0; i < 20; i++)
		assert_int_equal(quay_bus_publish(b, "q", msg_u64(i)), 1);
	assert_int_equal(drain(f0, NULL, 0), 2);
	assert_int_equal(drain(f1, NULL, 0), 18);
	/* Unsubscribing members keeps the group working. */
	assert_int_equal(quay_bus_unsubscribe(w[0]), 0);
	assert_int_equal(quay_bus_unsubscribe(w[1]), 0);
	assert_int_equal(quay_bus_publish(b, "jobs.y", msg_u64(1)), 3);
	assert_int_equal(drain(w[2], NULL, 0), 1);
	assert_int_equal(quay_bus_unsubscribe(w[2]), 0);
	assert_int_equal(quay_bus_publish(b, "jobs.y", msg_u64(1)), 2);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_policy_drop_newest(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "p", QUAY_SUB_DROP_NEWEST, 4, NULL);
	uint64_t v[16];
	struct quay_sub_counters sc;
	struct quay_bus_pub_result res;

	(void)state;
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(quay_bus_publish(b, "p", msg_u64(i)), 1);
	for (uint64_t i = 4; i < 10; i++) {
		assert_int_equal(quay_bus_publish_ex(b, "p", msg_u64(i), &res), 0); /* consumed */
		assert_int_equal(res.matched, 1);
		assert_int_equal(res.dropped, 1);
	}
	assert_int_equal(drain(s, v, 16), 4);
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(v[i], i);
	assert_int_equal(quay_sub_counters(s, &sc), 0);
	assert_int_equal(sc.dropped, 6);
	assert_int_equal(sc.delivered, 4);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_policy_drop_oldest(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "p", QUAY_SUB_DROP_OLDEST, 4, NULL);
	uint64_t v[16];
	struct quay_sub_counters sc;
	struct quay_bus_counters bc;

	(void)state;
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(quay_bus_publish(b, "p", msg_u64(i)), 1);
	assert_int_equal(drain(s, v, 16), 4);
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(v[i], 6 + i);
	assert_int_equal(quay_sub_counters(s, &sc), 0);
	assert_int_equal(sc.dropped, 6);
	assert_int_equal(sc.delivered, 10);
	assert_int_equal(quay_bus_counters(b, &bc), 0);
	assert_int_equal(bc.dropped, 6);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_policy_reject(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "p", QUAY_SUB_REJECT, 2, NULL);
	quay_msg *m;
	struct quay_bus_pub_result res;
	struct quay_sub_counters sc;

	(void)state;
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(0)), 1);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(1)), 1);
	m = msg_u64(2);
	assert_int_equal(quay_bus_publish(b, "p", m), -EAGAIN);
	assert_int_equal(quay_msg_refcount(m), 1); /* the caller keeps it */
	/* With a second subscription that has room: partial delivery. */
	quay_sub *t = sub_new(b, "p", QUAY_SUB_BLOCK, 8, NULL);
	assert_int_equal(quay_bus_publish_ex(b, "p", m, &res), 1); /* consumed */
	assert_int_equal(res.matched, 2);
	assert_int_equal(res.delivered, 1);
	assert_int_equal(res.rejected, 1);
	assert_int_equal(quay_sub_counters(s, &sc), 0);
	assert_int_equal(sc.rejected, 2);
	assert_int_equal(drain(s, NULL, 0), 2);
	assert_int_equal(drain(t, NULL, 0), 1);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* Issue 11 item 6: a subscription made with NULL options (or
 * QUAY_SUB_OPTS_INIT, or a zeroed struct with only size set) never makes
 * a publisher wait: when full it refuses (REJECT, counted), so a stalled
 * reader slows nobody. */
static void
test_default_policy_never_blocks(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = NULL, *z = NULL, *roomy;
	struct quay_sub_opts init = QUAY_SUB_OPTS_INIT, zero;
	struct quay_sub_counters sc;
	struct quay_bus_pub_result res;
	quay_msg *m;

	(void)state;
	assert_int_equal(init.policy, QUAY_SUB_REJECT);
	memset(&zero, 0, sizeof(zero));
	zero.size = sizeof(zero);
	zero.capacity = 2;
	assert_int_equal(quay_bus_subscribe(b, "d", NULL, &s), 0);
	assert_int_equal(quay_bus_subscribe(b, "z", &zero, &z), 0);
	for (uint64_t i = 0; i < QUAY_SUB_CAPACITY_DEFAULT; i++)
		assert_int_equal(quay_bus_publish(b, "d", msg_u64(i)), 1);
	/* Full: refused at once (the old default waited 1 s, then
	 * -ETIMEDOUT). */
	m = msg_u64(9999);
	assert_int_equal(quay_bus_publish_ex(b, "d", m, &res), -EAGAIN);
	assert_int_equal(res.rejected, 1);
	assert_int_equal(res.timed_out, 0);
	assert_int_equal(quay_msg_refcount(m), 1); /* still the caller's */
	assert_int_equal(quay_sub_counters(s, &sc), 0);
	assert_int_equal(sc.rejected, 1);
	assert_int_equal(sc.timed_out, 0);
	/* Beside a subscription with room, the full one costs nothing. */
	roomy = sub_new(b, "d", QUAY_SUB_DROP_NEWEST, 8, NULL);
	assert_int_equal(quay_bus_publish(b, "d", m), 1);
	/* The zeroed struct gets the same default. */
	assert_int_equal(quay_bus_publish(b, "z", msg_u64(1)), 1);
	assert_int_equal(quay_bus_publish(b, "z", msg_u64(2)), 1);
	m = msg_u64(3);
	assert_int_equal(quay_bus_publish(b, "z", m), -EAGAIN);
	quay_msg_unref(m);
	assert_int_equal(drain(s, NULL, 0), QUAY_SUB_CAPACITY_DEFAULT);
	assert_int_equal(drain(roomy, NULL, 0), 1);
	assert_int_equal(drain(z, NULL, 0), 2);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* Issue 11 item 8: a priority above a target's levels is refused with
 * -EINVAL, as the queue refuses it: by publish (nobody gets it, the
 * caller keeps it), by a batch (stops before it) and by publish_many. */
static void
test_priority_above_levels_refused(void **state)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_bus *b = bus_new();
	quay_sub *pq = NULL, *ring, *gpq = NULL;
	quay_msg *m, *batch[3];
	struct quay_sub_counters sc;

	(void)state;
	o.priorities = 4;
	assert_int_equal(quay_bus_subscribe(b, "p.>", &o, &pq), 0);
	ring = sub_new(b, "p.*", QUAY_SUB_REJECT, 8, NULL);
	m = msg_u64(1);
	assert_int_equal(quay_msg_set_priority(m, 3), 0);
	assert_int_equal(quay_bus_publish(b, "p.a", m), 2);
	m = msg_u64(2);
	assert_int_equal(quay_msg_set_priority(m, 4), 0);
	assert_int_equal(quay_bus_publish(b, "p.a", m), -EINVAL);
	assert_int_equal(quay_msg_refcount(m), 1);   /* the caller's */
	assert_int_equal(quay_sub_pending(ring), 1); /* nobody got it */
	assert_int_equal(quay_sub_pending(pq), 1);
	/* A subject that only rings match takes any priority. */
	quay_sub *q = sub_new(b, "q", QUAY_SUB_REJECT, 8, NULL);
	assert_int_equal(quay_bus_publish(b, "q", m), 1);
	assert_int_equal(drain(q, NULL, 0), 1);
	/* Batch: stops at the message a target cannot take. */
	for (int i = 0; i < 3; i++)
		batch[i] = msg_u64((uint64_t)(10 + i));
	assert_int_equal(quay_msg_set_priority(batch[1], 200), 0);
	assert_int_equal(quay_bus_publish_batch(b, "p.a", batch, 3), 1);
	assert_int_equal(quay_msg_refcount(batch[1]), 1);
	assert_int_equal(quay_bus_publish_batch(b, "p.a", batch + 1, 2), -EINVAL);
	quay_msg_unref(batch[1]);
	quay_msg_unref(batch[2]);
	/* A group member with levels counts as a target too. */
	o.group = "g";
	o.priorities = 2;
	assert_int_equal(quay_bus_subscribe(b, "g", &o, &gpq), 0);
	m = msg_u64(3);
	assert_int_equal(quay_msg_set_priority(m, 2), 0);
	assert_int_equal(quay_bus_publish(b, "g", m), -EINVAL);
	assert_int_equal(quay_msg_set_priority(m, 1), 0);
	assert_int_equal(quay_bus_publish(b, "g", m), 1);
	assert_int_equal(quay_sub_counters(pq, &sc), 0);
	assert_int_equal(sc.delivered, 2);
	assert_int_equal(drain(pq, NULL, 0), 2);
	assert_int_equal(drain(ring, NULL, 0), 2);
	assert_int_equal(drain(gpq, NULL, 0), 1);
	quay_bus_destroy(b);
	assert_pool_empty();
}

struct drainer {
	quay_sub *s;
	int64_t delay_ms;
	size_t want, got;
};

static void *
drainer_main(void *arg)
{
	struct drainer *d = arg;
	quay_msg *m;

	qt_sleep_ms(d->delay_ms);
	while (d->got < d->want && quay_sub_receive(d->s, &m, 5000 * QT_MS) == 0) {
		quay_msg_unref(m);
		d->got++;
	}
	return NULL;
}

static void
test_policy_block(void **state)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_bus *b = bus_new();
	quay_sub *s, *fast = sub_new(b, "p", QUAY_SUB_DROP_NEWEST, 64, NULL);
	quay_msg *m;
	struct quay_bus_pub_result res;
	struct quay_bus_counters bc;
	struct drainer d;
	pthread_t th;

	(void)state;
	o.capacity = 2;
	o.policy = QUAY_SUB_BLOCK; /* not the default */
	o.block_timeout_ns = 20 * QT_MS;
	assert_int_equal(quay_bus_subscribe(b, "p", &o, &s), 0);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(0)), 2);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(1)), 2);
	/* Full: waits 20 ms, then gives up; the fast one still gets it. */
	assert_int_equal(quay_bus_publish_ex(b, "p", msg_u64(2), &res), 1);
	assert_int_equal(res.timed_out, 1);
	assert_int_equal(quay_bus_unsubscribe(fast), 0);
	m = msg_u64(3);
	assert_int_equal(quay_bus_publish(b, "p", m), -ETIMEDOUT);
	assert_int_equal(quay_msg_refcount(m), 1);
	quay_msg_unref(m);
	assert_int_equal(quay_bus_counters(b, &bc), 0);
	assert_int_equal(bc.timed_out, 2);
	/* A receiver that starts late unblocks a publisher waiting forever. */
	assert_int_equal(quay_bus_unsubscribe(s), 0);
	o.policy = QUAY_SUB_BLOCK; /* not the default */
	o.block_timeout_ns = -1;
	assert_int_equal(quay_bus_subscribe(b, "p", &o, &s), 0);
	d = (struct drainer){ s, 50, 20, 0 };
	assert_int_equal(pthread_create(&th, NULL, drainer_main, &d), 0);
	for (uint64_t i = 0; i < 20; i++)
		assert_int_equal(quay_bus_publish(b, "p", msg_u64(i)), 1);
	assert_true(qt_join_within(th, JOIN_MS));
	assert_int_equal(d.got, 20);
	quay_bus_destroy(b);
	assert_pool_empty();
}

struct pub_arg {
	quay_bus *b;
	const char *subj;
	int r;
	int tid;
};

static void *
pub_main(void *arg)
{
	struct pub_arg *p = arg;
	quay_msg *m = msg_u64(7);

	__atomic_store_n(&p->tid, qt_gettid(), __ATOMIC_RELEASE);
	p->r = quay_bus_publish(p->b, p->subj, m);
	if (p->r < 0)
		quay_msg_unref(m);
	return NULL;
}

static void
test_block_publisher_woken_by_unsubscribe(void **state)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_bus *b = bus_new();
	quay_sub *s;
	struct pub_arg p = { b, "p", 99, 0 };
	pthread_t th;

	(void)state;
	o.capacity = 1;
	o.policy = QUAY_SUB_BLOCK; /* not the default */
	o.block_timeout_ns = -1;
	assert_int_equal(quay_bus_subscribe(b, "p", &o, &s), 0);
	assert_int_equal(quay_bus_publish(b, "p", msg_u64(0)), 1);
	assert_int_equal(pthread_create(&th, NULL, pub_main, &p), 0);
	while (__atomic_load_n(&p.tid, __ATOMIC_ACQUIRE) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(p.tid, JOIN_MS));
	assert_int_equal(quay_bus_unsubscribe(s), 0);
	assert_true(qt_join_within(th, JOIN_MS));
	assert_int_equal(p.r, 0); /* its only target went away: 0, consumed */
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_priorities(void **state)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_bus *b = bus_new();
	quay_sub *s;
	static const unsigned prio[] = { 0, 3, 1, 3, 2, 0 };
	static const uint64_t want[] = { 1, 3, 4, 2, 0, 5 }; /* FIFO in a level */
	quay_msg *m;

	(void)state;
	o.priorities = 4;
	o.policy = QUAY_SUB_REJECT;
	o.capacity = 2;
	assert_int_equal(quay_bus_subscribe(b, "p", &o, &s), 0);
	for (uint64_t i = 0; i < 6; i++) {
		m = msg_u64(i);
		assert_int_equal(quay_msg_set_priority(m, prio[i]), 0);
		assert_int_equal(quay_bus_publish(b, "p", m), 1);
	}
	/* Level 3 holds 2 (cap 2): a third is rejected. */
	m = msg_u64(99);
	assert_int_equal(quay_msg_set_priority(m, 3), 0);
	assert_int_equal(quay_bus_publish(b, "p", m), -EAGAIN);
	quay_msg_unref(m);
	assert_int_equal(quay_sub_pending(s), 6);
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(quay_sub_receive(s, &m, 0), 0);
		assert_int_equal(msg_val(m), want[i]);
		quay_msg_unref(m);
	}
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* ---- receive, unsubscribe, destroy ------------------------------------ */

struct recv_arg {
	quay_sub *s;
	int r;
	int tid;
};

static void *
recv_main(void *arg)
{
	struct recv_arg *a = arg;
	quay_msg *m;

	__atomic_store_n(&a->tid, qt_gettid(), __ATOMIC_RELEASE);
	a->r = quay_sub_receive(a->s, &m, -1);
	if (a->r == 0)
		quay_msg_unref(m);
	return NULL;
}

static void
test_receive_wakes_on_publish(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "r", QUAY_SUB_BLOCK, 8, NULL);
	struct recv_arg a = { s, 99, 0 };
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, recv_main, &a), 0);
	while (__atomic_load_n(&a.tid, __ATOMIC_ACQUIRE) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(a.tid, JOIN_MS));
	assert_int_equal(quay_bus_publish(b, "r", msg_u64(1)), 1);
	assert_true(qt_join_within(th, JOIN_MS));
	assert_int_equal(a.r, 0);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_unsubscribe_wakes_receiver(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "r", QUAY_SUB_BLOCK, 8, NULL);
	struct recv_arg a[3];
	pthread_t th[3];

	(void)state;
	for (int i = 0; i < 3; i++) {
		a[i] = (struct recv_arg){ s, 99, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, recv_main, &a[i]), 0);
	}
	for (int i = 0; i < 3; i++) {
		while (__atomic_load_n(&a[i].tid, __ATOMIC_ACQUIRE) == 0)
			qt_sleep_ms(1);
		assert_true(qt_await_futex_sleep(a[i].tid, JOIN_MS));
	}
	assert_int_equal(quay_bus_unsubscribe(s), 0);
	for (int i = 0; i < 3; i++) {
		assert_true(qt_join_within(th[i], JOIN_MS));
		assert_int_equal(a[i].r, -EPIPE);
	}
	assert_int_equal(quay_bus_publish(b, "r", msg_u64(1)), 0);
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_destroy_wakes_receiver_and_releases(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "r", QUAY_SUB_BLOCK, 8, NULL);
	quay_sub *q = sub_new(b, "q", QUAY_SUB_BLOCK, 64, NULL);
	struct recv_arg a = { s, 99, 0 };
	pthread_t th;
	struct quay_pool_stats st;

	(void)state;
	(void)q;
	for (uint64_t i = 0; i < 50; i++)
		assert_int_equal(quay_bus_publish(b, "q", msg_u64(i)), 1);
	assert_int_equal(quay_pool_stats(g_pool, &st), 0);
	assert_int_equal(st.in_use, 50);
	assert_int_equal(pthread_create(&th, NULL, recv_main, &a), 0);
	while (__atomic_load_n(&a.tid, __ATOMIC_ACQUIRE) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(a.tid, JOIN_MS));
	quay_bus_destroy(b);
	assert_true(qt_join_within(th, JOIN_MS));
	assert_int_equal(a.r, -EPIPE);
	assert_pool_empty(); /* the 50 queued went back */
}

static void
test_unsubscribe_releases_counted(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "r", QUAY_SUB_BLOCK, 64, NULL);
	struct quay_sub_counters sc;
	quay_msg *m;

	(void)state;
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(quay_bus_publish(b, "r", msg_u64(i)), 1);
	assert_int_equal(quay_sub_receive(s, &m, 0), 0);
	quay_msg_unref(m);
	assert_int_equal(quay_sub_counters(s, &sc), 0);
	assert_int_equal(sc.received, 1);
	assert_int_equal(sc.released, 0);
	assert_int_equal(quay_bus_unsubscribe(s), 0);
	assert_pool_empty();
	quay_bus_destroy(b);
}

/* Issue 11 item 8: the final counters, read by unsubscribe itself (the
 * handle is freed afterwards, so quay_sub_counters() cannot). */
static void
test_unsubscribe_ex_final_counters(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "f", QUAY_SUB_REJECT, 8, NULL);
	struct quay_sub_counters fin;
	quay_msg *m;

	(void)state;
	for (uint64_t i = 0; i < 10; i++) {
		m = msg_u64(i);
		if (quay_bus_publish(b, "f", m) != 1)
			quay_msg_unref(m); /* 9 and 10 rejected */
	}
	assert_int_equal(quay_sub_receive(s, &m, 0), 0);
	quay_msg_unref(m);
	memset(&fin, 0xff, sizeof(fin));
	assert_int_equal(quay_bus_unsubscribe_ex(s, &fin), 0);
	assert_int_equal(fin.delivered, 8);
	assert_int_equal(fin.received, 1);
	assert_int_equal(fin.rejected, 2);
	assert_int_equal(fin.dropped, 0);
	assert_int_equal(fin.timed_out, 0);
	assert_int_equal(fin.released, 7);
	/* final is optional; bad input. */
	s = sub_new(b, "f", QUAY_SUB_REJECT, 8, NULL);
	assert_int_equal(quay_bus_unsubscribe_ex(s, NULL), 0);
	assert_int_equal(quay_bus_unsubscribe_ex(NULL, &fin), -EINVAL);
	assert_int_equal(quay_bus_unsubscribe_ex(NULL, NULL), -EINVAL);
	assert_pool_empty();
	quay_bus_destroy(b);
}

/* Issue 11 item 10: a batch whose messages carry their own subjects. */
static void
test_publish_many(void **state)
{
	enum { N = 200 };
	quay_bus *b = bus_new();
	quay_sub *a = sub_new(b, "m.a", QUAY_SUB_REJECT, 256, NULL);
	quay_sub *all = sub_new(b, "m.*", QUAY_SUB_REJECT, 256, NULL);
	quay_sub *r = sub_new(b, "m.r", QUAY_SUB_REJECT, 1, NULL);
	const char *subj[N];
	quay_msg *m[N];
	uint64_t va[N], vall[N];
	size_t na, nall;

	(void)state;
	/* Runs of one subject (a chunked batch inside) and changes. */
	for (int i = 0; i < N; i++) {
		subj[i] = (i / 70) % 2 == 0 ? "m.a" : (i % 2 ? "m.b" : "m.c");
		m[i] = msg_u64((uint64_t)i);
	}
	assert_int_equal(quay_bus_publish_many(b, subj, m, N), N);
	na = drain(a, va, N);
	nall = drain(all, vall, N);
	assert_int_equal(nall, N);
	for (size_t i = 0; i < nall; i++)
		assert_int_equal(vall[i], i); /* the batch's order */
	for (size_t i = 1; i < na; i++)
		assert_true(va[i] > va[i - 1]);
	assert_int_equal(na, 70 + 60);
	/* Stops at the first refused message; the caller keeps the rest. */
	subj[0] = "m.r";
	subj[1] = "m.r";
	subj[2] = "m.a";
	assert_int_equal(quay_bus_unsubscribe(all), 0);
	for (int i = 0; i < 3; i++)
		m[i] = msg_u64((uint64_t)i);
	assert_int_equal(quay_bus_publish_many(b, subj, m, 3), 1);
	assert_int_equal(quay_msg_refcount(m[1]), 1);
	assert_int_equal(quay_bus_publish_many(b, subj + 1, m + 1, 2), -EAGAIN);
	assert_int_equal(quay_bus_publish_many(b, subj + 2, m + 2, 1), 1);
	quay_msg_unref(m[1]);
	/* Bad input: nothing published, the caller keeps everything. */
	m[0] = msg_u64(0);
	m[1] = msg_u64(1);
	subj[0] = "m.a";
	subj[1] = "m.*"; /* wildcard */
	assert_int_equal(quay_bus_publish_many(b, subj, m, 2), -EINVAL);
	subj[1] = NULL;
	assert_int_equal(quay_bus_publish_many(b, subj, m, 2), -EINVAL);
	subj[1] = "m..a";
	assert_int_equal(quay_bus_publish_many(b, subj, m, 2), -EINVAL);
	subj[1] = "m.a";
	assert_int_equal(quay_bus_publish_many(NULL, subj, m, 2), -EINVAL);
	assert_int_equal(quay_bus_publish_many(b, NULL, m, 2), -EINVAL);
	assert_int_equal(quay_bus_publish_many(b, subj, NULL, 2), -EINVAL);
	assert_int_equal(quay_bus_publish_many(b, subj, m, (size_t)INT_MAX + 1), -EINVAL);
	{
		quay_msg *holes[2] = { m[0], NULL };
		assert_int_equal(quay_bus_publish_many(b, subj, holes, 2), -EINVAL);
	}
	{
		char longsubj[QUAY_BUS_SUBJECT_MAX + 2];
		memset(longsubj, 'x', sizeof(longsubj));
		longsubj[QUAY_BUS_SUBJECT_MAX + 1] = '\0';
		subj[1] = longsubj;
		assert_int_equal(quay_bus_publish_many(b, subj, m, 2), -EINVAL);
		subj[1] = "m.a";
	}
	assert_int_equal(quay_sub_pending(a), 1); /* m[2] above only */
	assert_int_equal(quay_msg_refcount(m[0]), 1);
	assert_int_equal(quay_msg_refcount(m[1]), 1);
	assert_int_equal(quay_bus_publish_many(b, subj, m, 0), 0);
	assert_int_equal(quay_bus_publish_many(b, subj, m, 2), 2);
	assert_int_equal(drain(a, NULL, 0), 3);
	assert_int_equal(drain(r, NULL, 0), 1);
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* ---- request / reply -------------------------------------------------- */

struct responder {
	quay_bus *b;
	quay_sub *s;
	int mode; /* 0: echo +1; 1: never reply; 2: reply after delay */
	int64_t delay_ms;
	int handled;
	int last_reply;
};

static void *
responder_main(void *arg)
{
	struct responder *r = arg;
	quay_msg *req, *rep;

	while (quay_sub_receive(r->s, &req, -1) == 0) {
		uint64_t v = msg_val(req);
		r->handled++;
		if (r->mode != 1) {
			if (r->mode == 2)
				qt_sleep_ms(r->delay_ms);
			rep = msg_u64(v + 1);
			r->last_reply = quay_bus_reply(r->b, req, rep);
			if (r->last_reply < 0)
				quay_msg_unref(rep);
		}
		quay_msg_unref(req);
	}
	return NULL;
}

static void
test_request_reply(void **state)
{
	quay_bus *b = bus_new();
	struct responder r = { b, sub_new(b, "svc.echo", QUAY_SUB_BLOCK, 64, NULL), 0, 0, 0, 0 };
	pthread_t th;
	quay_msg *req, *rep = NULL;
	struct quay_bus_counters bc;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, responder_main, &r), 0);
	for (uint64_t i = 0; i < 200; i++) {
		req = msg_u64(i);
		uint64_t id = quay_msg_id(req);
		assert_int_equal(quay_bus_request(b, "svc.echo", req, &rep, 5000 * QT_MS), 0);
		assert_int_equal(msg_val(rep), i + 1);
		assert_int_equal(quay_msg_correlation_id(rep), id);
		quay_msg_unref(rep);
	}
	assert_int_equal(quay_bus_counters(b, &bc), 0);
	assert_int_equal(bc.late_replies, 0);
	/* No responder: -ENOENT, the request was consumed. */
	req = msg_u64(1);
	assert_int_equal(quay_bus_request(b, "svc.none", req, &rep, 1000 * QT_MS), -ENOENT);
	/* A slow responder: timeout, then the late reply is dropped. */
	r.mode = 2;
	r.delay_ms = 100;
	req = msg_u64(5);
	assert_int_equal(quay_bus_request(b, "svc.echo", req, &rep, 10 * QT_MS), -ETIMEDOUT);
	for (int i = 0; i < 500; i++) {
		assert_int_equal(quay_bus_counters(b, &bc), 0);
		if (bc.late_replies == 1)
			break;
		qt_sleep_ms(10);
	}
	assert_int_equal(bc.late_replies, 1);
	assert_int_equal(r.last_reply, 0);
	assert_int_equal(quay_bus_unsubscribe(r.s), 0);
	assert_true(qt_join_within(th, JOIN_MS));
	quay_bus_destroy(b);
	assert_pool_empty();
}

static void
test_request_bad(void **state)
{
	quay_bus *b = bus_new();
	quay_msg *req = msg_u64(1), *rep = NULL, *plain = msg_u64(2);
	(void)state;
	/* Issue 11 item 8: the request's reference is taken on every
	 * return. We hold a second one to watch the count drop. */
	quay_msg_ref(req);
	assert_int_equal(quay_bus_request(NULL, "a", req, &rep, 0), -EINVAL);
	assert_int_equal(quay_msg_refcount(req), 1);
	quay_msg_ref(req);
	assert_int_equal(quay_bus_request(b, NULL, req, &rep, 0), -EINVAL);
	assert_int_equal(quay_msg_refcount(req), 1);
	assert_int_equal(quay_bus_request(b, "a", NULL, &rep, 0), -EINVAL);
	quay_msg_ref(req);
	assert_int_equal(quay_bus_request(b, "a", req, NULL, 0), -EINVAL);
	assert_int_equal(quay_msg_refcount(req), 1);
	quay_msg_ref(req);
	assert_int_equal(quay_bus_request(b, "a.*", req, &rep, 0), -EINVAL);
	assert_int_equal(quay_msg_refcount(req), 1);
	/* A shared request cannot take a reply-to: refused, and consumed. */
	quay_msg_ref(req);
	assert_int_equal(quay_bus_request(b, "a", req, &rep, 0), -EINVAL);
	assert_int_equal(quay_msg_refcount(req), 1);
	/* Refused by a full REJECT target (nothing published): consumed. */
	{
		quay_sub *full = sub_new(b, "full", QUAY_SUB_REJECT, 1, NULL);
		quay_msg *x = msg_u64(3), *y = msg_u64(4);
		struct quay_pool_stats st;
		assert_int_equal(quay_bus_publish(b, "full", x), 1);
		assert_int_equal(quay_pool_stats(g_pool, &st), 0);
		assert_int_equal(st.in_use, 4); /* req, plain, x, y */
		/* y must not be shared (its reply-to is set): watch the pool. */
		assert_int_equal(quay_bus_request(b, "full", y, &rep, 0), -EAGAIN);
		assert_int_equal(quay_pool_stats(g_pool, &st), 0);
		assert_int_equal(st.in_use, 3); /* y is gone */
		assert_int_equal(quay_bus_unsubscribe(full), 0);
	}
	assert_int_equal(quay_bus_reply(NULL, req, plain), -EINVAL);
	assert_int_equal(quay_bus_reply(b, NULL, plain), -EINVAL);
	assert_int_equal(quay_bus_reply(b, req, NULL), -EINVAL);
	assert_int_equal(quay_bus_reply(b, req, plain), -EINVAL); /* no reply-to */
	/* A reply to a made-up inbox of this bus is late (dropped, counted). */
	assert_int_equal(quay_msg_set_reply_to(req, "_INBOX.999999.5"), 0);
	assert_int_equal(quay_bus_reply(b, req, plain), 0);
	quay_msg_unref(req);
	quay_bus_destroy(b);
	assert_pool_empty();
}

struct req_arg {
	quay_bus *b;
	int r;
	int tid;
};

static void *
req_main(void *arg)
{
	struct req_arg *a = arg;
	quay_msg *req = msg_u64(1), *rep;

	__atomic_store_n(&a->tid, qt_gettid(), __ATOMIC_RELEASE);
	a->r = quay_bus_request(a->b, "svc", req, &rep, -1);
	if (a->r == 0)
		quay_msg_unref(rep);
	return NULL;
}

static void
test_request_limit_and_destroy(void **state)
{
	struct quay_bus_opts o = QUAY_BUS_OPTS_INIT;
	quay_bus *b;
	quay_sub *s;
	struct req_arg a;
	pthread_t th;
	quay_msg *req, *rep;

	(void)state;
	o.max_requests = 1;
	assert_int_equal(quay_bus_create(&o, &b), 0);
	s = sub_new(b, "svc", QUAY_SUB_BLOCK, 8, NULL);
	a = (struct req_arg){ b, 99, 0 };
	assert_int_equal(pthread_create(&th, NULL, req_main, &a), 0);
	while (__atomic_load_n(&a.tid, __ATOMIC_ACQUIRE) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(a.tid, JOIN_MS));
	req = msg_u64(2);
	quay_msg_ref(req);
	assert_int_equal(quay_bus_request(b, "svc", req, &rep, 0), -ENOMEM);
	assert_int_equal(quay_msg_refcount(req), 1); /* consumed: ours is left */
	quay_msg_unref(req);
	(void)s;
	quay_bus_destroy(b); /* wakes the requester with -EPIPE */
	assert_true(qt_join_within(th, JOIN_MS));
	assert_int_equal(a.r, -EPIPE);
	assert_pool_empty();
}

/* destroy from its own thread, so a hang fails the test instead of it */
static void *
destroy_main(void *arg)
{
	quay_bus_destroy(arg);
	return NULL;
}

/* A full BLOCK subscription (capacity 1, pre-filled, no timeout). */
static quay_sub *
sub_full_block(quay_bus *b, const char *pat, unsigned priorities)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_sub *s = NULL;

	o.capacity = 1;
	o.priorities = priorities;
	o.policy = QUAY_SUB_BLOCK; /* not the default */
	o.block_timeout_ns = -1;
	assert_int_equal(quay_bus_subscribe(b, pat, &o, &s), 0);
	assert_int_equal(quay_bus_publish(b, pat, msg_u64(0)), 1);
	return s;
}

static void
test_destroy_wakes_requester_blocked_on_full_sub(void **state)
{
	quay_bus *b = bus_new();
	struct req_arg a = { b, 99, 0 };
	pthread_t th, dt;

	(void)state;
	(void)sub_full_block(b, "svc", 0);
	assert_int_equal(pthread_create(&th, NULL, req_main, &a), 0);
	while (__atomic_load_n(&a.tid, __ATOMIC_ACQUIRE) == 0)
		qt_sleep_ms(1);
	assert_true(qt_await_futex_sleep(a.tid, JOIN_MS)); /* in push_wait */
	assert_int_equal(pthread_create(&dt, NULL, destroy_main, b), 0);
	assert_true(qt_join_within(dt, JOIN_MS));
	assert_true(qt_join_within(th, JOIN_MS));
	assert_int_equal(a.r, -EPIPE); /* req consumed: the pool is empty */
	assert_pool_empty();
}

static void
test_destroy_wakes_publishers_blocked_on_full_sub(void **state)
{
	quay_bus *b = bus_new();
	struct pub_arg p[3] = { { b, "p", 99, 0 }, { b, "q", 99, 0 }, { b, "p", 99, 0 } };
	pthread_t th[3], dt;

	(void)state;
	(void)sub_full_block(b, "p", 0); /* a ring */
	(void)sub_full_block(b, "q", 4); /* a priority queue */
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, pub_main, &p[i]), 0);
	for (int i = 0; i < 3; i++) {
		while (__atomic_load_n(&p[i].tid, __ATOMIC_ACQUIRE) == 0)
			qt_sleep_ms(1);
		assert_true(qt_await_futex_sleep(p[i].tid, JOIN_MS));
	}
	assert_int_equal(pthread_create(&dt, NULL, destroy_main, b), 0);
	assert_true(qt_join_within(dt, JOIN_MS));
	for (int i = 0; i < 3; i++) {
		assert_true(qt_join_within(th[i], JOIN_MS));
		/* nothing queued, the publisher kept (and dropped) its ref */
		assert_int_equal(p[i].r, -EPIPE);
	}
	assert_pool_empty();
}

/* ---- metrics ---------------------------------------------------------- */

static int64_t
fake_clock(void *arg)
{
	return __atomic_add_fetch((int64_t *)arg, 1000, __ATOMIC_RELAXED);
}

struct lat_pub {
	quay_bus *b;
	int n;
	int rc;
};

/* Publishes from a new thread: its sample count starts at 0. */
static void *
lat_pub_main(void *arg)
{
	struct lat_pub *p = arg;

	for (int i = 0; i < p->n && p->rc == 0; i++) {
		quay_msg *m = msg_u64((uint64_t)i);
		/* A stale stamp (as a message received and published again
		 * has): an untimed publish must clear it. */
		(void)quay_msg_set_enqueued_ns(m, 1);
		if (quay_bus_publish(p->b, "lat.x", m) != 1)
			p->rc = -1;
	}
	return NULL;
}

/* The latency histogram is a sample: one publish call in latency_sample
 * of each thread is timed (enqueued_ns stamped), the others set
 * enqueued_ns to 0 and are not recorded; the counters stay exact. */
static void
test_latency_sample(void **state)
{
	static const uint32_t samples[] = { 0, 16 }; /* 0: the default, 64 */
	int64_t now = 1000000;
	struct quay_hist_data *hd = malloc(sizeof(*hd));

	(void)state;
	assert_non_null(hd);
	for (size_t k = 0; k < sizeof(samples) / sizeof(samples[0]); k++) {
		struct quay_bus_opts o = QUAY_BUS_OPTS_INIT;
		uint32_t every = samples[k] != 0 ? samples[k] : QUAY_BUS_LATENCY_SAMPLE_DEFAULT;
		struct lat_pub p = { NULL, 130, 0 };
		struct quay_sub_counters c;
		quay_sub *s;
		quay_msg *m[64];
		pthread_t th;
		uint64_t got = 0, stamped = 0;
		size_t n;

		o.clock = fake_clock;
		o.clock_arg = &now;
		o.latency_sample = samples[k];
		assert_int_equal(quay_bus_create(&o, &p.b), 0);
		assert_int_equal(quay_bus_subscribe(p.b, "lat.>", NULL, &s), 0);
		assert_int_equal(pthread_create(&th, NULL, lat_pub_main, &p), 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_int_equal(p.rc, 0);
		/* Half with receive_burst, half one at a time. */
		while (got < 65 && (n = quay_sub_receive_burst(s, m, 5)) > 0) {
			for (size_t i = 0; i < n; i++) {
				stamped += quay_msg_enqueued_ns(m[i]) > 0;
				quay_msg_unref(m[i]);
			}
			got += n;
		}
		while (quay_sub_receive(s, &m[0], 0) == 0) {
			stamped += quay_msg_enqueued_ns(m[0]) > 0;
			quay_msg_unref(m[0]);
			got++;
		}
		assert_int_equal(got, 130);
		/* Calls 0, every, 2 * every, ... of the thread were timed. */
		assert_int_equal(stamped, (130 + every - 1) / every);
		assert_int_equal(quay_sub_latency(s, hd), 0);
		assert_int_equal(hd->count, stamped);
		assert_true(hd->min >= 1000 && hd->min % 1000 == 0);
		assert_int_equal(quay_sub_counters(s, &c), 0);
		assert_int_equal(c.received, 130);
		assert_int_equal(c.delivered, 130);
		quay_bus_destroy(p.b);
	}
	free(hd);
	assert_pool_empty();
}

static void
test_metrics(void **state)
{
	int64_t now = 1000000;
	struct quay_bus_opts o = QUAY_BUS_OPTS_INIT;
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	quay_stats *reg;
	quay_bus *b;
	quay_sub *s, *nolat;
	struct quay_hist_data *hd = malloc(sizeof(*hd));
	quay_stats_snap *snap;
	char *text = malloc(1 << 16);
	size_t len;
	quay_msg *m;

	(void)state;
	assert_non_null(hd);
	assert_non_null(text);
	assert_int_equal(quay_stats_create(NULL, &reg), 0);
	o.stats = reg;
	o.name = "main";
	o.clock = fake_clock;
	o.clock_arg = &now;
	o.latency_sample = 1; /* every publish timed */
	assert_int_equal(quay_bus_create(&o, &b), 0);
	assert_ptr_equal(quay_bus_stats(b), reg);
	/* A second bus with the same name in the same registry clashes. */
	quay_bus *dup = (quay_bus *)(uintptr_t)0x1;
	assert_int_equal(quay_bus_create(&o, &dup), -EINVAL);
	so.group = "g";
	assert_int_equal(quay_bus_subscribe(b, "m.>", &so, &s), 0);
	so.group = NULL;
	so.flags = QUAY_SUB_NO_LATENCY;
	assert_int_equal(quay_bus_subscribe(b, "m.x", &so, &nolat), 0);
	for (uint64_t i = 0; i < 5; i++)
		assert_int_equal(quay_bus_publish(b, "m.x", msg_u64(i)), 2);
	/* Each publish reads the clock once, each receive once: the fake
	 * clock makes every latency a whole number of microseconds. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(quay_sub_receive(s, &m, 0), 0);
		quay_msg_unref(m);
	}
	assert_int_equal(quay_sub_latency(s, hd), 0);
	assert_int_equal(hd->count, 5);
	assert_true(hd->min >= 1000 && hd->max <= 10000 && hd->min % 1000 == 0);
	assert_int_equal(quay_sub_latency(nolat, hd), -ENOENT);
	assert_int_equal(quay_stats_snapshot(reg, &snap), 0);
	assert_int_equal(quay_stats_format_prometheus(snap, text, 1 << 16, &len), 0);
	assert_non_null(strstr(text, "quay_bus_published_total{bus=\"main\"} 5"));
	assert_non_null(
	    strstr(text, "quay_sub_received_total{bus=\"main\",group=\"g\",pattern=\"m.>\",sub=\"1\"} 5"));
	assert_non_null(strstr(text,
	    "quay_sub_receive_latency_seconds_count{bus=\"main\",group=\"g\",pattern=\"m.>\",sub=\"1\"} 5"));
	quay_stats_snap_free(snap);
	quay_bus_destroy(b);
	/* Every metric of the bus went with it. */
	assert_int_equal(quay_stats_count(reg), 0);
	quay_stats_destroy(reg);
	free(text);
	free(hd);
	assert_pool_empty();
}

/* Publish v on subject and expect it in exactly the subscription `want`
 * of subs[0..n) (want == n: in none). */
static void
publish_expect(quay_bus *b, const char *subject, uint64_t v, quay_sub *const *subs, size_t n, size_t want)
{
	uint64_t got;

	assert_int_equal(quay_bus_publish(b, subject, msg_u64(v)), want < n ? 1 : 0);
	for (size_t i = 0; i < n; i++) {
		got = 0;
		assert_int_equal(drain(subs[i], &got, 1), i == want ? 1 : 0);
		if (i == want)
			assert_int_equal(got, v);
	}
}

/* publish remembers each thread's last subject and its entry (keyed by
 * the table version's uid): subjects that share a prefix with it, an
 * invalid subject that extends it, a new table version, another bus and
 * a table at a recycled address must all miss it. */
static void
test_last_subject_memo(void **state)
{
	quay_bus *b = bus_new(), *b2 = bus_new();
	quay_sub *s[5];
	quay_msg *m;
	uint64_t v = 1;

	(void)state;
	s[0] = sub_new(b, "m.ab", QUAY_SUB_BLOCK, 8, NULL);
	s[1] = sub_new(b, "m.abc", QUAY_SUB_BLOCK, 8, NULL);
	s[2] = sub_new(b, "m.a", QUAY_SUB_BLOCK, 8, NULL);
	s[3] = sub_new(b, "m.ab.c", QUAY_SUB_BLOCK, 8, NULL);
	s[4] = sub_new(b2, "m.ab", QUAY_SUB_BLOCK, 8, NULL);
	/* Longer, shorter and extended subjects after "m.ab". */
	static const struct {
		const char *subj;
		size_t want;
	} seq[] = { { "m.ab", 0 }, { "m.ab", 0 }, { "m.abc", 1 }, { "m.ab", 0 }, { "m.a", 2 }, { "m.ab", 0 },
		{ "m.ab.c", 3 }, { "m.ab", 0 }, { "m.abd", 5 }, { "m.ab", 0 }, { "m.a", 2 }, { "m.ab", 0 } };
	for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
		publish_expect(b, seq[i].subj, v++, s, 5, seq[i].want);
	/* Invalid subjects that start with the remembered one: refused. */
	m = msg_u64(v++);
	publish_expect(b, "m.ab", v++, s, 5, 0);
	assert_int_equal(quay_bus_publish(b, "m.ab.", m), -EINVAL);
	assert_int_equal(quay_bus_publish(b, "m.ab ", m), -EINVAL);
	assert_int_equal(quay_bus_publish(b, "m.ab.>", m), -EINVAL);
	/* The same subject on another bus, alternately. */
	for (int i = 0; i < 3; i++) {
		publish_expect(b, "m.ab", v++, s, 5, 0);
		publish_expect(b2, "m.ab", v++, s, 5, 4);
	}
	/* A new version of the table: the next publish sees the new target,
	 * then no longer the removed one. */
	publish_expect(b, "n.x", v++, s, 4, 4);
	s[4] = sub_new(b, "n.x", QUAY_SUB_BLOCK, 8, NULL);
	publish_expect(b, "n.x", v++, s, 5, 4);
	assert_int_equal(quay_bus_unsubscribe(s[4]), 0);
	publish_expect(b, "n.x", v++, s, 4, 4);
	assert_int_equal(quay_msg_unref(m), 0);
	quay_bus_destroy(b2);
	quay_bus_destroy(b);
	/* Buses made and destroyed in turn: their tables may come back at
	 * the same address; only every other one has a target for "r.s". */
	for (int i = 0; i < 16; i++) {
		quay_bus *bi = bus_new();
		quay_sub *si = sub_new(bi, (i & 1) ? "q" : "r.s", QUAY_SUB_BLOCK, 8, NULL);

		publish_expect(bi, "r.s", v++, &si, 1, (i & 1) ? 1 : 0);
		quay_bus_destroy(bi);
	}
	assert_pool_empty();
}

/* Many distinct subjects: more than the cache holds (uncached entries). */
static void
test_cache_overflow(void **state)
{
	quay_bus *b = bus_new();
	quay_sub *s = sub_new(b, "c.>", QUAY_SUB_DROP_NEWEST, 64, NULL);
	quay_sub *e = sub_new(b, "c.*.end", QUAY_SUB_DROP_NEWEST, 64, NULL);
	char subj[64];

	(void)state;
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3 * (int)QUAY_BUS_CACHE_ENTRIES; i++) {
			snprintf(subj, sizeof(subj), "c.%d%s", i, i % 2 ? ".end" : "");
			assert_int_equal(quay_bus_publish(b, subj, msg_u64((uint64_t)i)), i % 2 ? 2 : 1);
			assert_int_equal(drain(s, NULL, 0), 1);
			assert_int_equal(drain(e, NULL, 0), (size_t)(i % 2));
		}
	}
	quay_bus_destroy(b);
	assert_pool_empty();
}

/* An allocator that recycles blocks LIFO per size and never
 * returns them (no quarantine, no scribbling): a later bus's table and
 * entries land on an earlier bus's addresses deterministically. */
#define RV_KEEP 4096
static struct {
	size_t size;
	void *p;
} rv_free[RV_KEEP];
static size_t rv_n;
static void *
rv_alloc(void *ctx, size_t size, size_t align)
{
	(void)ctx;
	for (size_t i = rv_n; i-- > 0;)
		if (rv_free[i].size == size && ((uintptr_t)rv_free[i].p % (align ? align : 16)) == 0) {
			void *p = rv_free[i].p;
			rv_free[i] = rv_free[--rv_n];
			return p;
		}
	void *p = NULL;
	if (posix_memalign(&p, align < 64 ? 64 : align, size) != 0)
		return NULL;
	return p;
}
static void
rv_freef(void *ctx, void *p, size_t size, size_t align)
{
	(void)ctx;
	(void)align;
	if (p == NULL)
		return;
	if (rv_n < RV_KEEP) {
		rv_free[rv_n].size = size;
		rv_free[rv_n].p = p;
		rv_n++;
	} else {
		free(p);
	}
}
static void *
rv_realloc(void *ctx, void *p, size_t o, size_t n, size_t align)
{
	void *q = rv_alloc(ctx, n, align);
	if (q != NULL && p != NULL) {
		memcpy(q, p, o < n ? o : n);
		rv_freef(ctx, p, o, align);
	}
	return q;
}
static const struct quay_allocator rv_hooks = { rv_alloc, rv_freef, rv_realloc, NULL };

static void
last_subject_memo_recycled_memory(void **state)
{
	struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
	int hits = 0;

	(void)state;
	bo.allocator = &rv_hooks;
	for (int round = 0; round < 8; round++) {
		quay_bus *a = NULL, *b = NULL;
		quay_sub *sa, *sb[4];
		char pat[16];

		assert_int_equal(quay_bus_create(&bo, &a), 0);
		sa = sub_new(a, "r.s", QUAY_SUB_BLOCK, 8, NULL);
		assert_int_equal(quay_bus_publish(a, "r.s", msg_u64(1)), 1);
		assert_int_equal(drain(sa, NULL, 0), 1);
		quay_bus_destroy(a);
		assert_int_equal(quay_bus_create(&bo, &b), 0);
		for (int k = 0; k < 4; k++) {
			snprintf(pat, sizeof pat, "x.%d", k);
			sb[k] = sub_new(b, pat, QUAY_SUB_BLOCK, 8, NULL);
			assert_non_null(sb[k]);
			int r = quay_bus_publish(b, "r.s", msg_u64(2));
			if (r != 0)
				hits++;
			assert_int_equal(r, 0); /* nothing on b matches r.s */
		}
		quay_bus_destroy(b);
	}
	(void)hits;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_subject_table),
		cmocka_unit_test(test_match_table),
		cmocka_unit_test(test_match_property),
		cmocka_unit_test(test_create_bad),
		cmocka_unit_test(test_subscribe_bad),
		cmocka_unit_test(test_max_subs),
		cmocka_unit_test(test_publish_bad),
		cmocka_unit_test(test_publish_subject_scan),
		cmocka_unit_test(test_getters_bad),
		cmocka_unit_test(test_fanout),
		cmocka_unit_test(test_batch),
		cmocka_unit_test(test_batch_mixed_targets),
		cmocka_unit_test(test_batch_refusal_chunks),
		cmocka_unit_test(test_group_member_unsubscribed_mid_publish),
		cmocka_unit_test(test_group),
		cmocka_unit_test(test_policy_drop_newest),
		cmocka_unit_test(test_policy_drop_oldest),
		cmocka_unit_test(test_policy_reject),
		cmocka_unit_test(test_default_policy_never_blocks),
		cmocka_unit_test(test_priority_above_levels_refused),
		cmocka_unit_test(test_policy_block),
		cmocka_unit_test(test_block_publisher_woken_by_unsubscribe),
		cmocka_unit_test(test_priorities),
		cmocka_unit_test(test_receive_wakes_on_publish),
		cmocka_unit_test(test_unsubscribe_wakes_receiver),
		cmocka_unit_test(test_destroy_wakes_receiver_and_releases),
		cmocka_unit_test(test_unsubscribe_releases_counted),
		cmocka_unit_test(test_unsubscribe_ex_final_counters),
		cmocka_unit_test(test_publish_many),
		cmocka_unit_test(test_request_reply),
		cmocka_unit_test(test_request_bad),
		cmocka_unit_test(test_request_limit_and_destroy),
		cmocka_unit_test(test_destroy_wakes_requester_blocked_on_full_sub),
		cmocka_unit_test(test_destroy_wakes_publishers_blocked_on_full_sub),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_latency_sample),
		cmocka_unit_test(test_cache_overflow),
		cmocka_unit_test(test_last_subject_memo),
		cmocka_unit_test(last_subject_memo_recycled_memory),
	};
	return cmocka_run_group_tests_name("bus", tests, pool_setup, pool_teardown);
}
