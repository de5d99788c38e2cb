/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of quay/stats.h: every public call with valid input and with
 * each bad input it documents; histogram buckets and quantiles against a
 * sorted reference over 1 ns .. 60 s (and past 2^36 ns); the Prometheus
 * output parsed back line by line by an independent validator (names,
 * label syntax and escaping, numbers, HELP/TYPE placement, cumulative
 * buckets, +Inf == _count, values round-tripped); the JSON output checked
 * by a strict parser (and by python3's json module when python3 is
 * installed); the buffer exporters' snprintf contract; thread slots.
 */
#include "quay_test.h"

#include <math.h> /* NAN, INFINITY, isinf only: no libm */

#define fabs(x) ((x) < 0 ? -(x) : (x))

#include <quay/stats.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static quay_stats *
new_stats(void)
{
	quay_stats *s = NULL;

	assert_int_equal(quay_stats_create(NULL, &s), 0);
	assert_non_null(s);
	return s;
}

/* ==== registry creation ============================================== */

static void
test_stats_create_opts(void **state)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	quay_stats *s = NULL, *keep = (quay_stats *)(uintptr_t)0x1234;

	(void)state;
	assert_int_equal(quay_stats_create(&o, &s), 0);
	assert_int_equal(quay_stats_count(s), 0);
	quay_stats_destroy(s);

	o.shards = 1;
	o.hist_shards = 1;
	o.max_metrics = 1;
	s = NULL;
	assert_int_equal(quay_stats_create(&o, &s), 0);
	quay_stats_destroy(s);

	o.shards = QUAY_STATS_SHARDS_MAX;
	o.hist_shards = QUAY_STATS_SHARDS_MAX;
	o.max_metrics = QUAY_STATS_METRICS_MAX;
	assert_int_equal(quay_stats_create(&o, &s), 0);
	quay_stats_destroy(s);

	/* A larger struct from a newer caller: fine while the tail is zero. */
	{
		struct {
			struct quay_stats_opts o;
			uint64_t extra[2];
		} big;
		memset(&big, 0, sizeof(big));
		big.o.size = sizeof(big);
		assert_int_equal(quay_stats_create(&big.o, &s), 0);
		quay_stats_destroy(s);
		big.extra[1] = 1;
		s = keep;
		assert_int_equal(quay_stats_create(&big.o, &s), -EINVAL);
		assert_ptr_equal(s, keep);
	}

	/* Bad input: nothing is written to *out. */
	s = keep;
	assert_int_equal(quay_stats_create(NULL, NULL), -EINVAL);
	o = (struct quay_stats_opts)QUAY_STATS_OPTS_INIT;
	assert_int_equal(quay_stats_create(&o, NULL), -EINVAL);
	o.size = 0;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o.size = sizeof(o) - 1;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o = (struct quay_stats_opts)QUAY_STATS_OPTS_INIT;
	o.flags = 1;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o.flags = 0x80000000u;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o = (struct quay_stats_opts)QUAY_STATS_OPTS_INIT;
	o.shards = 3;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o.shards = QUAY_STATS_SHARDS_MAX * 2;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o = (struct quay_stats_opts)QUAY_STATS_OPTS_INIT;
	o.hist_shards = 6;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o.hist_shards = UINT32_MAX;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o = (struct quay_stats_opts)QUAY_STATS_OPTS_INIT;
	o.max_metrics = QUAY_STATS_METRICS_MAX + 1;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	o.max_metrics = SIZE_MAX;
	assert_int_equal(quay_stats_create(&o, &s), -EINVAL);
	assert_ptr_equal(s, keep);

	quay_stats_destroy(NULL);
	assert_int_equal(quay_stats_count(NULL), 0);
}

/* ==== creation rules ================================================= */

typedef int (
    *create_fn)(quay_stats *, const char *, const char *, const struct quay_stats_label *, size_t, void **);

static int
mk_counter(quay_stats *s, const char *n, const char *h, const struct quay_stats_label *l, size_t nl,
    void **out)
{
	return quay_counter_create(s, n, h, l, nl, (quay_counter **)out);
}

static int
mk_gauge(quay_stats *s, const char *n, const char *h, const struct quay_stats_label *l, size_t nl, void **out)
{
	return quay_gauge_create(s, n, h, l, nl, (quay_gauge **)out);
}

static int
mk_hist(quay_stats *s, const char *n, const char *h, const struct quay_stats_label *l, size_t nl, void **out)
{
	return quay_hist_create(s, n, h, l, nl, (quay_hist **)out);
}

static const create_fn creators[] = { mk_counter, mk_gauge, mk_hist };

static char *
repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* Every creator rejects each bad input with -EINVAL, leaves *out and the
 * registry alone; and accepts the edge values that are valid. */
static void
test_create_bad_input(void **state)
{
	char *name_max = repeat('n', QUAY_STATS_NAME_MAX);
	char *name_long = repeat('n', QUAY_STATS_NAME_MAX + 1);
	char *lname_max = repeat('l', QUAY_STATS_LABEL_NAME_MAX);
	char *lname_long = repeat('l', QUAY_STATS_LABEL_NAME_MAX + 1);
	char *val_max = repeat('v', QUAY_STATS_LABEL_VALUE_MAX);
	char *val_long = repeat('v', QUAY_STATS_LABEL_VALUE_MAX + 1);
	char *help_max = repeat('h', QUAY_STATS_HELP_MAX);
	char *help_long = repeat('h', QUAY_STATS_HELP_MAX + 1);
	static const char *const bad_names[] = {
		"",
		"0abc",
		"9",
		"a-b",
		"a b",
		"a.b",
		"a{",
		"é",
		"a\n",
		"a\"",
		"-",
		" a",
	};
	static const char *const good_names[] = {
		"a",
		"_",
		":",
		"a:b_c9",
		"A_Z:0",
		"__x",
		"::",
		"_9",
	};
	static const char *const bad_lnames[] = {
		"",
		"0a",
		"a:b",
		"a-b",
		"__x",
		"__",
		"a b",
		"ü",
	};
	static const char *const bad_utf8[] = {
		"\xff",
		"a\xc0\x80",
		"\xc3",
		"\xe2\x82",
		"\xed\xa0\x80" /* surrogate */,
		"\xf4\x90\x80\x80" /* > U+10FFFF */,
		"\xf0\x82\x82\xac" /* overlong */,
		"\x80",
	};
	void *const keep = (void *)(uintptr_t)0x5555;

	(void)state;
	for (size_t c = 0; c < ARRAY_LEN(creators); c++) {
		quay_stats *s = new_stats();
		create_fn mk = creators[c];
		void *out = keep;
		struct quay_stats_label l[QUAY_STATS_LABELS_MAX + 1];
		char lnames[QUAY_STATS_LABELS_MAX + 1][8];

		for (size_t i = 0; i < ARRAY_LEN(l); i++) {
			snprintf(lnames[i], sizeof(lnames[i]), "k%zu", i);
			l[i].name = lnames[i];
			l[i].value = "v";
		}

		assert_int_equal(mk(NULL, "x", NULL, NULL, 0, &out), -EINVAL);
		assert_int_equal(mk(s, "x", NULL, NULL, 0, NULL), -EINVAL);
		assert_int_equal(mk(s, NULL, NULL, NULL, 0, &out), -EINVAL);
		for (size_t i = 0; i < ARRAY_LEN(bad_names); i++)
			assert_int_equal(mk(s, bad_names[i], NULL, NULL, 0, &out), -EINVAL);
		assert_int_equal(mk(s, name_long, NULL, NULL, 0, &out), -EINVAL);
		assert_int_equal(mk(s, "x", help_long, NULL, 0, &out), -EINVAL);
		for (size_t i = 0; i < ARRAY_LEN(bad_utf8); i++) {
			struct quay_stats_label bl = { "k", bad_utf8[i] };
			assert_int_equal(mk(s, "x", bad_utf8[i], NULL, 0, &out), -EINVAL);
			assert_int_equal(mk(s, "x", NULL, &bl, 1, &out), -EINVAL);
		}
		/* labels NULL with nlabels > 0; too many labels. */
		assert_int_equal(mk(s, "x", NULL, NULL, 1, &out), -EINVAL);
		assert_int_equal(mk(s, "x", NULL, l, QUAY_STATS_LABELS_MAX + 1, &out), -EINVAL);
		assert_int_equal(mk(s, "x", NULL, l, SIZE_MAX, &out), -EINVAL);
		for (size_t i = 0; i < ARRAY_LEN(bad_lnames); i++) {
			struct quay_stats_label bl[2] = { { "ok", "v" }, { bad_lnames[i], "v" } };
			assert_int_equal(mk(s, "x", NULL, bl, 2, &out), -EINVAL);
		}
		{
			struct quay_stats_label bl[] = {
				{ NULL, "v" },
				{ "k", NULL },
				{ "k", "" },
				{ lname_long, "v" },
				{ "k", val_long },
			};
			for (size_t i = 0; i < ARRAY_LEN(bl); i++)
				assert_int_equal(mk(s, "x", NULL, &bl[i], 1, &out), -EINVAL);
		}
		{ /* the same label twice, in any position */
			struct quay_stats_label dl[3] = { { "b", "1" }, { "a", "2" }, { "b", "3" } };
			assert_int_equal(mk(s, "x", NULL, dl, 3, &out), -EINVAL);
		}
		assert_ptr_equal(out, keep);
		assert_int_equal(quay_stats_count(s), 0);

		/* The edges that are valid. */
		for (size_t i = 0; i < ARRAY_LEN(good_names); i++) {
			assert_int_equal(mk(s, good_names[i], "", NULL, 0, &out), 0);
			assert_ptr_not_equal(out, keep);
		}
		assert_int_equal(mk(s, name_max, help_max, l, QUAY_STATS_LABELS_MAX, &out), 0);
		{
			struct quay_stats_label el[] = {
				{ lname_max, val_max },
				{ "_", "x" },
				{ "u", "é中😀\n\"\\" },
				{ "a9", "\t\r" },
			};
			assert_int_equal(mk(s, "edge", "UTF-8 ✓ \\ \n", el, ARRAY_LEN(el), &out), 0);
		}
		assert_int_equal(quay_stats_count(s), ARRAY_LEN(good_names) + 2);
		quay_stats_destroy(s);
	}
	free(name_max);
	free(name_long);
	free(lname_max);
	free(lname_long);
	free(val_max);
	free(val_long);
	free(help_max);
	free(help_long);
}

static void
test_families_and_duplicates(void **state)
{
	quay_stats *s = new_stats();
	quay_counter *c1, *c2, *c3;
	quay_gauge *g;
	quay_hist *h;
	void *out;
	struct quay_stats_label ab[2] = { { "a", "1" }, { "b", "2" } };
	struct quay_stats_label ba[2] = { { "b", "2" }, { "a", "1" } };
	struct quay_stats_label a2[1] = { { "a", "2" } };

	(void)state;
	assert_int_equal(quay_counter_create(s, "req_total", "Requests.", ab, 2, &c1), 0);
	/* Same name and labels (in another order): a duplicate. */
	assert_int_equal(quay_counter_create(s, "req_total", "Requests.", ba, 2, &c2), -EINVAL);
	assert_int_equal(quay_counter_create(s, "req_total", "Requests.", ab, 2, &c2), -EINVAL);
	/* Another label set in the same family: fine. */
	assert_int_equal(quay_counter_create(s, "req_total", "Requests.", a2, 1, &c2), 0);
	assert_int_equal(quay_counter_create(s, "req_total", "Requests.", NULL, 0, &c3), 0);
	/* Same name, other type or other help: rejected. */
	for (size_t c = 1; c < ARRAY_LEN(creators); c++)
		assert_int_equal(creators[c](s, "req_total", "Requests.", NULL, 0, &out), -EINVAL);
	assert_int_equal(quay_counter_create(s, "req_total", "Other.", ab + 1, 1, &c2), -EINVAL);
	assert_int_equal(quay_counter_create(s, "req_total", NULL, ab + 1, 1, &c2), -EINVAL);
	assert_int_equal(quay_stats_count(s), 3);

	/* NULL and "" help are the same. */
	assert_int_equal(quay_gauge_create(s, "depth", NULL, NULL, 0, &g), 0);
	assert_int_equal(quay_gauge_create(s, "depth", "", a2, 1, &g), 0);

	/* A histogram owns name_bucket, name_sum and name_count, both ways. */
	assert_int_equal(quay_hist_create(s, "lat", "Latency.", NULL, 0, &h), 0);
	{
		static const char *const derived[] = { "lat_bucket", "lat_sum", "lat_count" };
		for (size_t i = 0; i < ARRAY_LEN(derived); i++)
			for (size_t c = 0; c < ARRAY_LEN(creators); c++)
				assert_int_equal(creators[c](s, derived[i], NULL, NULL, 0, &out), -EINVAL);
	}
	assert_int_equal(quay_counter_create(s, "x_count", NULL, NULL, 0, &c2), 0);
	assert_int_equal(quay_hist_create(s, "x", NULL, NULL, 0, &h), -EINVAL);
	assert_int_equal(quay_gauge_create(s, "y_sum", NULL, NULL, 0, &g), 0);
	assert_int_equal(quay_hist_create(s, "y", NULL, NULL, 0, &h), -EINVAL);
	assert_int_equal(quay_hist_create(s, "z_bucket", NULL, NULL, 0, &h), 0);
	assert_int_equal(quay_hist_create(s, "z", NULL, NULL, 0, &h), -EINVAL);
	/* Not a clash: counters may be named like that when no histogram is. */
	assert_int_equal(quay_counter_create(s, "lat2_sum", NULL, NULL, 0, &c2), 0);
	/* "le" is reserved in histograms only. */
	{
		struct quay_stats_label le = { "le", "1" };
		assert_int_equal(quay_hist_create(s, "lat", "Latency.", &le, 1, &h), -EINVAL);
		assert_int_equal(quay_counter_create(s, "with_le", NULL, &le, 1, &c2), 0);
		struct quay_stats_label q = { "quantile", "1" };
		assert_int_equal(quay_hist_create(s, "lat", "Latency.", &q, 1, &h), 0);
	}
	assert_int_equal(quay_stats_count(s), 12);
	quay_stats_destroy(s);
}

static void
test_max_metrics(void **state)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	quay_stats *s;
	quay_counter *c;
	quay_hist *h;

	(void)state;
	o.max_metrics = 3;
	assert_int_equal(quay_stats_create(&o, &s), 0);
	assert_int_equal(quay_counter_create(s, "a", NULL, NULL, 0, &c), 0);
	assert_int_equal(quay_counter_create(s, "b", NULL, NULL, 0, &c), 0);
	assert_int_equal(quay_hist_create(s, "h", NULL, NULL, 0, &h), 0);
	assert_int_equal(quay_counter_create(s, "d", NULL, NULL, 0, &c), -ENOMEM);
	assert_int_equal(quay_stats_count(s), 3);
	/* Destroying one makes room again. */
	quay_hist_destroy(h);
	assert_int_equal(quay_counter_create(s, "d", NULL, NULL, 0, &c), 0);
	assert_int_equal(quay_stats_count(s), 3);
	quay_stats_destroy(s);
}

/* ==== counters and gauges ============================================ */

static void
test_counter_ops(void **state)
{
	quay_stats *s = new_stats();
	quay_counter *c[20];

	(void)state;
	/* More than one chunk of counters, all independent. */
	for (size_t i = 0; i < ARRAY_LEN(c); i++) {
		char name[16];
		snprintf(name, sizeof(name), "c%zu", i);
		assert_int_equal(quay_counter_create(s, name, "help", NULL, 0, &c[i]), 0);
		assert_int_equal(quay_counter_read(c[i]), 0);
	}
	for (size_t i = 0; i < ARRAY_LEN(c); i++) {
		for (size_t k = 0; k < i; k++)
			assert_int_equal(quay_counter_inc(c[i]), 0);
		assert_int_equal(quay_counter_add(c[i], 1000 * i), 0);
		assert_int_equal(quay_counter_add(c[i], 0), 0);
	}
	for (size_t i = 0; i < ARRAY_LEN(c); i++)
		assert_int_equal(quay_counter_read(c[i]), 1001 * i);

	/* Wraps modulo 2^64. */
	assert_int_equal(quay_counter_add(c[0], UINT64_MAX), 0);
	assert_true(quay_counter_read(c[0]) == UINT64_MAX);
	assert_int_equal(quay_counter_add(c[0], 2), 0);
	assert_int_equal(quay_counter_read(c[0]), 1);

	/* NULL. */
	assert_int_equal(quay_counter_add(NULL, 1), -EINVAL);
	assert_int_equal(quay_counter_inc(NULL), -EINVAL);
	assert_int_equal(quay_counter_read(NULL), 0);

	/* A destroyed counter's cell is reused zeroed. */
	quay_counter_destroy(c[3]);
	quay_counter_destroy(NULL);
	assert_int_equal(quay_counter_create(s, "c3", "help", NULL, 0, &c[3]), 0);
	assert_int_equal(quay_counter_read(c[3]), 0);
	assert_int_equal(quay_counter_read(c[4]), 4004);
	quay_stats_destroy(s);
}

/* Every shard count: counts from several threads add up. */
struct bump_arg {
	quay_counter *c;
	quay_hist *h;
	uint64_t n;
};

static void *
bump_thread(void *p)
{
	struct bump_arg *a = p;

	for (uint64_t i = 0; i < a->n; i++) {
		quay_counter_inc(a->c);
		quay_hist_record(a->h, i);
	}
	return NULL;
}

static void
test_counter_shards_threads(void **state)
{
	static const unsigned shards[] = { 1, 2, 4, 64, QUAY_STATS_SHARDS_MAX };

	(void)state;
	for (size_t k = 0; k < ARRAY_LEN(shards); k++) {
		struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
		quay_stats *s;
		struct bump_arg a;
		pthread_t t[4];
		struct quay_hist_data *d = malloc(sizeof(*d));

		o.shards = shards[k];
		o.hist_shards = shards[k];
		assert_int_equal(quay_stats_create(&o, &s), 0);
		assert_int_equal(quay_counter_create(s, "n", NULL, NULL, 0, &a.c), 0);
		assert_int_equal(quay_hist_create(s, "h", NULL, NULL, 0, &a.h), 0);
		a.n = 5000;
		for (size_t i = 0; i < ARRAY_LEN(t); i++)
			assert_int_equal(pthread_create(&t[i], NULL, bump_thread, &a), 0);
		for (size_t i = 0; i < ARRAY_LEN(t); i++)
			assert_true(qt_join_within(t[i], 10000));
		assert_int_equal(quay_counter_read(a.c), 4 * 5000);
		assert_int_equal(quay_hist_read(a.h, d), 0);
		assert_int_equal(d->count, 4 * 5000);
		assert_int_equal(d->sum, 4 * (5000 * 4999 / 2));
		assert_int_equal(d->min, 0);
		assert_int_equal(d->max, 4999);
		free(d);
		quay_stats_destroy(s);
	}
}

static void
test_gauge_ops(void **state)
{
	quay_stats *s = new_stats();
	quay_gauge *g, *g2;

	(void)state;
	assert_int_equal(quay_gauge_create(s, "g", NULL, NULL, 0, &g), 0);
	assert_int_equal(quay_gauge_create(s, "g2", NULL, NULL, 0, &g2), 0);
	assert_int_equal(quay_gauge_read(g), 0);
	assert_int_equal(quay_gauge_set(g, 42), 0);
	assert_int_equal(quay_gauge_read(g), 42);
	assert_int_equal(quay_gauge_add(g, 8), 0);
	assert_int_equal(quay_gauge_sub(g, 100), 0);
	assert_int_equal(quay_gauge_read(g), -50);
	assert_int_equal(quay_gauge_add(g, -50), 0);
	assert_int_equal(quay_gauge_read(g), -100);
	assert_int_equal(quay_gauge_read(g2), 0);
	/* Extremes wrap instead of trapping (UBSan would catch signed overflow). */
	assert_int_equal(quay_gauge_set(g, INT64_MAX), 0);
	assert_int_equal(quay_gauge_add(g, 1), 0);
	assert_true(quay_gauge_read(g) == INT64_MIN);
	assert_int_equal(quay_gauge_sub(g, INT64_MIN), 0);
	assert_true(quay_gauge_read(g) == 0);
	assert_int_equal(quay_gauge_set(g, INT64_MIN), 0);
	assert_true(quay_gauge_read(g) == INT64_MIN);

	assert_int_equal(quay_gauge_set(NULL, 1), -EINVAL);
	assert_int_equal(quay_gauge_add(NULL, 1), -EINVAL);
	assert_int_equal(quay_gauge_sub(NULL, 1), -EINVAL);
	assert_int_equal(quay_gauge_read(NULL), 0);
	quay_gauge_destroy(g);
	quay_gauge_destroy(NULL);
	assert_int_equal(quay_stats_count(s), 1);
	quay_stats_destroy(s);
}

/* ==== histograms ===================================================== */

static void
test_hist_buckets(void **state)
{
	uint64_t lo, hi, prev_hi = 0, l2, h2;

	(void)state;
	for (size_t i = 0; i < QUAY_HIST_BUCKETS; i++) {
		assert_int_equal(quay_hist_bucket_range(i, &lo, &hi), 0);
		assert_true(lo <= hi);
		/* Contiguous: each bucket starts right after the previous. */
		if (i == 0)
			assert_int_equal(lo, 0);
		else
			assert_true(lo == prev_hi + 1);
		prev_hi = hi;
		assert_int_equal(quay_hist_bucket_of(lo), i);
		assert_int_equal(quay_hist_bucket_of(hi), i);
		assert_int_equal(quay_hist_bucket_of(lo + (hi - lo) / 2), i);
		/* Width at most 1/32 of the lower bound (exact below 64). */
		if (i < QUAY_HIST_BUCKETS - 1) {
			if (lo < 64)
				assert_true(hi == lo);
			else
				assert_true((hi - lo + 1) * 32 <= lo);
		}
	}
	assert_true(prev_hi == UINT64_MAX);
	assert_int_equal(quay_hist_bucket_of(QUAY_HIST_TRACKABLE_MAX - 1), QUAY_HIST_BUCKETS - 2);
	assert_int_equal(quay_hist_bucket_of(QUAY_HIST_TRACKABLE_MAX), QUAY_HIST_BUCKETS - 1);
	assert_int_equal(quay_hist_bucket_of(UINT64_MAX), QUAY_HIST_BUCKETS - 1);
	/* 60 s is a tracked value. */
	assert_true(quay_hist_bucket_of(UINT64_C(60000000000)) < QUAY_HIST_BUCKETS - 1);

	assert_int_equal(quay_hist_bucket_range(QUAY_HIST_BUCKETS, &lo, &hi), -EINVAL);
	assert_int_equal(quay_hist_bucket_range(SIZE_MAX, &lo, &hi), -EINVAL);
	assert_int_equal(quay_hist_bucket_range(0, NULL, &hi), -EINVAL);
	assert_int_equal(quay_hist_bucket_range(0, &lo, NULL), -EINVAL);

	/* le bounds: increasing, in range, their text parses to their value. */
	l2 = 0;
	for (size_t i = 0; i < QUAY_HIST_LE_COUNT; i++) {
		const char *text = NULL;
		char *end;
		assert_int_equal(quay_hist_le_bound(i, &h2, &text), 0);
		assert_non_null(text);
		assert_true(h2 > l2);
		l2 = h2;
		double sec = strtod(text, &end);
		assert_true(*end == '\0');
		assert_true(fabs(sec * 1e9 - (double)h2) < 1e-6 * (double)h2);
		assert_int_equal(quay_hist_le_bound(i, &h2, NULL), 0);
	}
	assert_true(l2 >= UINT64_C(60000000000));
	assert_int_equal(quay_hist_le_bound(QUAY_HIST_LE_COUNT, &h2, NULL), -EINVAL);
	assert_int_equal(quay_hist_le_bound(0, NULL, NULL), -EINVAL);
}

static void
test_hist_record_read(void **state)
{
	quay_stats *s = new_stats();
	quay_hist *h;
	struct quay_hist_data *d = malloc(sizeof(*d));
	uint64_t v;
	uint64_t big = QUAY_HIST_TRACKABLE_MAX * 3 + 7;

	(void)state;
	assert_non_null(d);
	assert_int_equal(quay_hist_create(s, "h", "help", NULL, 0, &h), 0);
	memset(d, 0xab, sizeof(*d));
	assert_int_equal(quay_hist_read(h, d), 0);
	assert_int_equal(d->count, 0);
	assert_int_equal(d->sum, 0);
	assert_int_equal(d->min, 0);
	assert_int_equal(d->max, 0);
	for (size_t i = 0; i < QUAY_HIST_BUCKETS; i++)
		assert_int_equal(d->buckets[i], 0);
	assert_int_equal(quay_hist_quantile(d, 0.5, &v), -ENOENT);

	assert_int_equal(quay_hist_record(h, 0), 0);
	assert_int_equal(quay_hist_record(h, 1000), 0);
	assert_int_equal(quay_hist_record(h, big), 0);
	assert_int_equal(quay_hist_read(h, d), 0);
	assert_int_equal(d->count, 3);
	assert_true(d->sum == 1000 + big);
	assert_int_equal(d->min, 0);
	assert_true(d->max == big);
	assert_int_equal(d->buckets[0], 1);
	assert_int_equal(d->buckets[quay_hist_bucket_of(1000)], 1);
	assert_int_equal(d->buckets[QUAY_HIST_BUCKETS - 1], 1);
	assert_int_equal(quay_hist_quantile(d, 0.0, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(quay_hist_quantile(d, 1.0, &v), 0);
	assert_true(v == big); /* overflow bucket: max */
	assert_int_equal(quay_hist_quantile(d, 0.5, &v), 0);
	assert_true(v >= 1000 - 1000 / 64 && v <= 1000 + 1000 / 64);

	/* Bad input. */
	assert_int_equal(quay_hist_record(NULL, 1), -EINVAL);
	assert_int_equal(quay_hist_read(NULL, d), -EINVAL);
	assert_int_equal(quay_hist_read(h, NULL), -EINVAL);
	v = 77;
	assert_int_equal(quay_hist_quantile(NULL, 0.5, &v), -EINVAL);
	assert_int_equal(quay_hist_quantile(d, 0.5, NULL), -EINVAL);
	assert_int_equal(quay_hist_quantile(d, -0.01, &v), -EINVAL);
	assert_int_equal(quay_hist_quantile(d, 1.01, &v), -EINVAL);
	assert_int_equal(quay_hist_quantile(d, NAN, &v), -EINVAL);
	assert_int_equal(quay_hist_quantile(d, INFINITY, &v), -EINVAL);
	assert_int_equal(quay_hist_quantile(d, -INFINITY, &v), -EINVAL);
	assert_int_equal(v, 77);

	quay_hist_destroy(h);
	quay_hist_destroy(NULL);
	assert_int_equal(quay_stats_count(s), 0);
	free(d);
	quay_stats_destroy(s);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The sorted reference's value at quantile q, by the same nearest-rank
 * definition the histogram documents. */
static uint64_t
ref_quantile(const uint64_t *sorted, size_t n, double q)
{
	double r = q * (double)n;
	size_t rank = (size_t)r;

	if ((double)rank < r)
		rank++;
	if (rank == 0)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

/* Random samples from several distributions over 1 ns .. 60 s: every
 * quantile on a fine grid is within 1/64 (the documented bound; 3 % is
 * the requirement) of the sorted reference; count, sum, min, max exact. */
static void
test_hist_quantiles_vs_reference(void **state)
{
	enum { N = 200000 };
	static const double named_q[] = { 0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0 };
	uint64_t *ref = malloc(N * sizeof(*ref));
	struct quay_hist_data *d = malloc(sizeof(*d));
	uint64_t seed = 0x5eed;
	double worst = 0.0;

	(void)state;
	assert_non_null(ref);
	assert_non_null(d);
	for (int dist = 0; dist < 5; dist++) {
		quay_stats *s = new_stats();
		quay_hist *h;
		uint64_t sum = 0;

		assert_int_equal(quay_hist_create(s, "lat", NULL, NULL, 0, &h), 0);
		for (size_t i = 0; i < N; i++) {
			uint64_t r = qt_rand(&seed);
			double u = (double)(r >> 11) / 9007199254740992.0; /* [0,1) */
			uint64_t v;
			switch (dist) {
			case 0: /* log-uniform over 1 ns .. 2^36 ns (clamped to 60 s) */
			{
				unsigned k = (unsigned)(r % 36);
				v = ((uint64_t)1 << k) + (uint64_t)(u * (double)((uint64_t)1 << k));
			} break;
			case 1: /* uniform 1 ns .. 60 s */ v = 1 + (uint64_t)(u * 6e10); break;
			case 2: /* small values: exact buckets and the first octaves */
				v = 1 + r % 5000;
				break;
			case 3: /* a typical latency: ~2 us with a long tail */
				v = 2000 + (r >> 20) % 1500 + (r >> 40) % 3000 +
				    (r % 1000 == 0 ? (uint64_t)(u * 5e9) : 0);
				break;
			default: /* every octave boundary and its neighbours */
				v = ((uint64_t)1 << (r % 36)) + (uint64_t)((int)(r >> 40) % 3) - 1;
				if (v == 0)
					v = 1;
				break;
			}
			if (v > UINT64_C(60000000000))
				v = UINT64_C(60000000000);
			ref[i] = v;
			sum += v;
			assert_int_equal(quay_hist_record(h, v), 0);
		}
		qsort(ref, N, sizeof(*ref), cmp_u64);
		assert_int_equal(quay_hist_read(h, d), 0);
		assert_int_equal(d->count, N);
		assert_true(d->sum == sum);
		assert_true(d->min == ref[0]);
		assert_true(d->max == ref[N - 1]);
		for (int k = 0; k <= 10000 + (int)ARRAY_LEN(named_q); k++) {
			double q = k <= 10000 ? k / 10000.0 : named_q[k - 10001];
			uint64_t want = ref_quantile(ref, N, q), got;
			double err;
			assert_int_equal(quay_hist_quantile(d, q, &got), 0);
			err = fabs((double)got - (double)want) / (double)want;
			if (err > worst)
				worst = err;
			if (err > 1.0 / 64 + 1e-12 || err > 0.03)
				fail_msg("dist %d q %.6f: got %llu want %llu (error %.4f)", dist, q,
				    (unsigned long long)got, (unsigned long long)want, err);
		}
		/* Min and max exactly. */
		uint64_t v;
		assert_int_equal(quay_hist_quantile(d, 0.0, &v), 0);
		assert_true(v == ref[0]);
		assert_int_equal(quay_hist_quantile(d, 1.0, &v), 0);
		assert_true(v == ref[N - 1]);
		quay_stats_destroy(s);
	}
	print_message("worst relative quantile error: %.5f (bound 1/64 = %.5f)\n", worst, 1.0 / 64);
	free(ref);
	free(d);
}

/* For every bucket, the value a quantile reads from it (its midpoint)
 * is within 1/64 of every value the bucket holds, over the whole 0 ..
 * 2^36 ns range: a sample in bucket i between one in bucket 0 and one in
 * the overflow bucket, and the median asked for. */
static void
test_hist_worst_case_per_bucket(void **state)
{
	struct quay_hist_data *d = calloc(1, sizeof(*d));

	(void)state;
	assert_non_null(d);
	for (size_t i = 1; i < QUAY_HIST_BUCKETS - 1; i++) {
		uint64_t lo, hi, got;
		assert_int_equal(quay_hist_bucket_range(i, &lo, &hi), 0);
		memset(d->buckets, 0, sizeof(d->buckets));
		d->buckets[0] = 1;
		d->buckets[i] = 1;
		d->buckets[QUAY_HIST_BUCKETS - 1] = 1;
		d->count = 3;
		d->min = 0;
		d->max = UINT64_MAX;
		assert_int_equal(quay_hist_quantile(d, 0.5, &got), 0);
		assert_true(got >= lo && got <= hi);
		assert_true((double)(got - lo) <= (double)lo / 64);
		assert_true((double)(hi - got) <= (double)hi / 64);
		assert_true((double)(got - lo) <= 0.03 * (double)lo);
	}
	free(d);
}

/* ==== snapshots ====================================================== */

static void
test_snapshot(void **state)
{
	quay_stats *s = new_stats();
	quay_counter *c1, *c2;
	quay_gauge *g;
	quay_hist *h;
	quay_stats_snap *snap = NULL;
	const struct quay_stats_metric *m;
	struct quay_stats_label zl[3] = { { "z", "1" }, { "a", "2" }, { "m", "3" } };
	struct quay_stats_label ql = { "q", "orders" };

	(void)state;
	/* Empty registry. */
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(quay_stats_snap_count(snap), 0);
	assert_int_equal(quay_stats_snap_metric(snap, 0, &m), -ENOENT);
	quay_stats_snap_free(snap);

	/* Interleaved creation: the snapshot groups each family. */
	assert_int_equal(quay_counter_create(s, "sent_total", "Sent.", zl, 3, &c1), 0);
	assert_int_equal(quay_gauge_create(s, "depth", "Depth.", NULL, 0, &g), 0);
	assert_int_equal(quay_counter_create(s, "sent_total", "Sent.", &ql, 1, &c2), 0);
	assert_int_equal(quay_hist_create(s, "lat", NULL, &ql, 1, &h), 0);
	quay_counter_add(c1, 5);
	quay_counter_add(c2, 7);
	quay_gauge_set(g, -3);
	quay_hist_record(h, 100);
	quay_hist_record(h, 200);

	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	/* Later changes do not reach the snapshot; it outlives the registry. */
	quay_counter_add(c1, 1000);
	quay_hist_record(h, 300);
	quay_counter_destroy(c2);
	quay_stats_destroy(s);

	assert_int_equal(quay_stats_snap_count(snap), 4);
	assert_int_equal(quay_stats_snap_metric(snap, 0, &m), 0);
	assert_string_equal(m->name, "sent_total");
	assert_string_equal(m->help, "Sent.");
	assert_int_equal(m->type, QUAY_STATS_COUNTER);
	assert_int_equal(m->counter, 5);
	assert_null(m->hist);
	assert_int_equal(m->nlabels, 3);
	assert_string_equal(m->labels[0].name, "a"); /* sorted */
	assert_string_equal(m->labels[0].value, "2");
	assert_string_equal(m->labels[1].name, "m");
	assert_string_equal(m->labels[2].name, "z");
	assert_int_equal(quay_stats_snap_metric(snap, 1, &m), 0);
	assert_string_equal(m->name, "sent_total");
	assert_int_equal(m->counter, 7);
	assert_int_equal(m->nlabels, 1);
	assert_string_equal(m->labels[0].value, "orders");
	assert_int_equal(quay_stats_snap_metric(snap, 2, &m), 0);
	assert_string_equal(m->name, "depth");
	assert_int_equal(m->type, QUAY_STATS_GAUGE);
	assert_int_equal(m->gauge, -3);
	assert_int_equal(m->nlabels, 0);
	assert_int_equal(quay_stats_snap_metric(snap, 3, &m), 0);
	assert_string_equal(m->name, "lat");
	assert_string_equal(m->help, "");
	assert_int_equal(m->type, QUAY_STATS_HIST);
	assert_non_null(m->hist);
	assert_int_equal(m->hist->count, 2);
	assert_int_equal(m->hist->sum, 300);
	assert_int_equal(m->hist->min, 100);
	assert_int_equal(m->hist->max, 200);

	/* Bad input. */
	m = NULL;
	assert_int_equal(quay_stats_snap_metric(snap, 4, &m), -ENOENT);
	assert_int_equal(quay_stats_snap_metric(snap, SIZE_MAX, &m), -ENOENT);
	assert_null(m);
	assert_int_equal(quay_stats_snap_metric(NULL, 0, &m), -EINVAL);
	assert_int_equal(quay_stats_snap_metric(snap, 0, NULL), -EINVAL);
	assert_int_equal(quay_stats_snap_count(NULL), 0);
	assert_int_equal(quay_stats_snapshot(NULL, &snap), -EINVAL);
	s = new_stats();
	assert_int_equal(quay_stats_snapshot(s, NULL), -EINVAL);
	quay_stats_destroy(s);
	quay_stats_snap_free(snap);
	quay_stats_snap_free(NULL);
}

/* Destroying the last series of a family frees its name for any type. */
static void
test_destroy_frees_family(void **state)
{
	quay_stats *s = new_stats();
	quay_counter *c1, *c2;
	quay_gauge *g;
	quay_hist *h;
	quay_stats_snap *snap;
	struct quay_stats_label l1 = { "k", "1" }, l2 = { "k", "2" };

	(void)state;
	assert_int_equal(quay_counter_create(s, "m", "one", &l1, 1, &c1), 0);
	assert_int_equal(quay_counter_create(s, "m", "one", &l2, 1, &c2), 0);
	quay_counter_destroy(c1);
	assert_int_equal(quay_gauge_create(s, "m", NULL, NULL, 0, &g), -EINVAL);
	/* The same labels again: no longer a duplicate. */
	assert_int_equal(quay_counter_create(s, "m", "one", &l1, 1, &c1), 0);
	quay_counter_destroy(c1);
	quay_counter_destroy(c2);
	assert_int_equal(quay_stats_count(s), 0);
	assert_int_equal(quay_gauge_create(s, "m", "two", NULL, 0, &g), 0);
	quay_gauge_destroy(g);
	assert_int_equal(quay_hist_create(s, "m", "three", NULL, 0, &h), 0);
	assert_int_equal(quay_counter_create(s, "m_sum", NULL, NULL, 0, &c1), -EINVAL);
	quay_hist_destroy(h);
	assert_int_equal(quay_counter_create(s, "m_sum", NULL, NULL, 0, &c1), 0);
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(quay_stats_snap_count(snap), 1);
	quay_stats_snap_free(snap);

	/* Many create/destroy rounds: the hash tables grow and shrink. */
	for (int round = 0; round < 3; round++) {
		quay_counter *cs[300];
		for (size_t i = 0; i < ARRAY_LEN(cs); i++) {
			char v[16];
			struct quay_stats_label l = { "i", v };
			snprintf(v, sizeof(v), "%zu", i);
			assert_int_equal(quay_counter_create(s, round % 2 ? "odd" : "even", NULL, &l, 1,
			                     &cs[i]),
			    0);
			quay_counter_add(cs[i], i);
		}
		assert_int_equal(quay_stats_count(s), 301);
		for (size_t i = 0; i < ARRAY_LEN(cs); i++)
			assert_int_equal(quay_counter_read(cs[i]), i);
		for (size_t i = 0; i < ARRAY_LEN(cs); i += 2)
			quay_counter_destroy(cs[i]);
		for (size_t i = 1; i < ARRAY_LEN(cs); i += 2)
			quay_counter_destroy(cs[i]);
		assert_int_equal(quay_stats_count(s), 1);
	}
	quay_stats_destroy(s);
}

/* ==== Prometheus: an independent parser ============================== */

#define PMAX_SERIES 64

struct pseries {
	char name[QUAY_STATS_NAME_MAX + 16];
	size_t nlabels;
	char lname[QUAY_STATS_LABELS_MAX + 1][QUAY_STATS_LABEL_NAME_MAX + 1];
	char lvalue[QUAY_STATS_LABELS_MAX + 1][QUAY_STATS_LABEL_VALUE_MAX + 1];
	double value;
};

struct pstate {
	char family[QUAY_STATS_NAME_MAX + 1];
	char type[16];
	bool help_seen, type_seen, samples_seen;
	char help[QUAY_STATS_HELP_MAX + 1];
	/* histogram in progress: its label set (without le), last le, cumulative. */
	bool hist_open;
	char hist_key[4096];
	double last_le, last_cum, inf_count;
	bool inf_seen, sum_seen;
	int families;
	int samples;
	/* every family name seen, to catch a second TYPE for one family */
	char seen[64][QUAY_STATS_NAME_MAX + 1];
	int nseen;
	/* samples of counters/gauges, recorded for the round trip */
	struct pseries *out;
	size_t nout;
	char err[256];
};

static bool
pfail(struct pstate *ps, const char *what, const char *line)
{
	snprintf(ps->err, sizeof(ps->err), "%s: \"%.150s\"", what, line);
	return false;
}

static bool
is_name_start(char c, bool colon)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}

static bool
is_name_char(char c, bool colon)
{
	return is_name_start(c, colon) || (c >= '0' && c <= '9');
}

/* Reads a name at *p (metric names allow ':'); returns its length. */
static size_t
read_name(const char **p, char *out, size_t cap, bool colon)
{
	const char *s = *p;
	size_t n = 0;

	if (!is_name_start(*s, colon))
		return 0;
	while (is_name_char(s[n], colon)) {
		if (n + 1 >= cap)
			return 0;
		out[n] = s[n];
		n++;
	}
	out[n] = '\0';
	*p = s + n;
	return n;
}

/* A Prometheus float: [+-]digits/decimal/exponent, or +Inf/-Inf/NaN. */
static bool
read_value(const char *s, double *v)
{
	char *end;

	if (strcmp(s, "+Inf") == 0) {
		*v = INFINITY;
		return true;
	}
	if (strcmp(s, "-Inf") == 0) {
		*v = -INFINITY;
		return true;
	}
	if (strcmp(s, "NaN") == 0) {
		*v = NAN;
		return true;
	}
	/* Only these characters; strtod alone would take "inf", hex, ... */
	for (const char *c = s; *c; c++)
		if (!strchr("0123456789.eE+-", *c))
			return false;
	*v = strtod(s, &end);
	return end != s && *end == '\0';
}

static bool
ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);

	return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Close the histogram series in progress: +Inf, _sum, _count all there. */
static bool
hist_close(struct pstate *ps)
{
	if (!ps->hist_open)
		return true;
	ps->hist_open = false;
	if (!ps->inf_seen || !ps->sum_seen)
		return pfail(ps, "histogram series without +Inf or _sum before _count", ps->hist_key);
	return true;
}

static bool
parse_sample(struct pstate *ps, const char *line)
{
	struct pseries se;
	const char *p = line;
	char key[4096] = "";
	double le = NAN;
	bool has_le = false;

	memset(&se, 0, sizeof(se));
	if (read_name(&p, se.name, sizeof(se.name), true) == 0)
		return pfail(ps, "bad metric name", line);
	if (!ps->type_seen)
		return pfail(ps, "sample before its TYPE line", line);
	if (*p == '{') {
		p++;
		while (*p != '}') {
			char *val;
			size_t vn = 0;
			if (se.nlabels > QUAY_STATS_LABELS_MAX)
				return pfail(ps, "too many labels", line);
			if (read_name(&p, se.lname[se.nlabels], sizeof(se.lname[0]), false) == 0)
				return pfail(ps, "bad label name", line);
			if (strncmp(se.lname[se.nlabels], "__", 2) == 0)
				return pfail(ps, "reserved label name", line);
			for (size_t k = 0; k < se.nlabels; k++)
				if (strcmp(se.lname[k], se.lname[se.nlabels]) == 0)
					return pfail(ps, "repeated label", line);
			if (p[0] != '=' || p[1] != '"')
				return pfail(ps, "expected =\"", line);
			p += 2;
			val = se.lvalue[se.nlabels];
			for (;;) {
				if (*p == '\0' || *p == '\n')
					return pfail(ps, "unterminated label value", line);
				if (*p == '"')
					break;
				if (vn + 1 >= sizeof(se.lvalue[0]))
					return pfail(ps, "label value too long", line);
				if (*p == '\\') {
					if (p[1] == '\\')
						val[vn++] = '\\';
					else if (p[1] == '"')
						val[vn++] = '"';
					else if (p[1] == 'n')
						val[vn++] = '\n';
					else
						return pfail(ps, "bad escape in label value", line);
					p += 2;
				} else {
					val[vn++] = *p++;
				}
			}
			val[vn] = '\0';
			p++;
			if (strcmp(se.lname[se.nlabels], "le") == 0) {
				has_le = true;
				if (!read_value(val, &le))
					return pfail(ps, "bad le value", line);
			} else {
				/* The series key: every label but le. */
				strncat(key, se.lname[se.nlabels], sizeof(key) - strlen(key) - 1);
				strncat(key, "=", sizeof(key) - strlen(key) - 1);
				strncat(key, val, sizeof(key) - strlen(key) - 1);
				strncat(key, "\x01", sizeof(key) - strlen(key) - 1);
			}
			se.nlabels++;
			if (*p == ',')
				p++;
			else if (*p != '}')
				return pfail(ps, "expected , or }", line);
		}
		p++;
	}
	if (*p != ' ')
		return pfail(ps, "expected a space before the value", line);
	p++;
	{
		char vbuf[64];
		const char *sp = strchr(p, ' ');
		size_t vl = sp ? (size_t)(sp - p) : strlen(p);
		if (vl == 0 || vl >= sizeof(vbuf))
			return pfail(ps, "bad value", line);
		memcpy(vbuf, p, vl);
		vbuf[vl] = '\0';
		if (!read_value(vbuf, &se.value))
			return pfail(ps, "bad value", line);
		if (sp != NULL) { /* an optional integer timestamp */
			for (const char *c = sp + 1; *c; c++)
				if (!(*c >= '0' && *c <= '9') && !(c == sp + 1 && *c == '-'))
					return pfail(ps, "bad timestamp", line);
		}
	}
	ps->samples++;
	ps->samples_seen = true;

	if (strcmp(ps->type, "histogram") == 0) {
		char base[sizeof(se.name)];
		snprintf(base, sizeof(base), "%s", ps->family);
		if (strcmp(se.name, base) == 0 ||
		    (!ends_with(se.name, "_bucket") && !ends_with(se.name, "_sum") &&
		        !ends_with(se.name, "_count")))
			return pfail(ps, "histogram sample with a plain name", line);
		if (ends_with(se.name, "_bucket")) {
			if (strlen(se.name) != strlen(base) + 7 || strncmp(se.name, base, strlen(base)) != 0)
				return pfail(ps, "bucket of another family", line);
			if (!has_le)
				return pfail(ps, "bucket without le", line);
			if (!ps->hist_open || strcmp(key, ps->hist_key) != 0) {
				if (!hist_close(ps))
					return false;
				ps->hist_open = true;
				snprintf(ps->hist_key, sizeof(ps->hist_key), "%s", key);
				ps->last_le = -INFINITY;
				ps->last_cum = 0;
				ps->inf_seen = ps->sum_seen = false;
			}
			if (ps->inf_seen)
				return pfail(ps, "bucket after +Inf", line);
			if (!(le > ps->last_le))
				return pfail(ps, "le not increasing", line);
			if (se.value < ps->last_cum)
				return pfail(ps, "cumulative bucket decreased", line);
			if (se.value < 0 || se.value > 1.8e19 || se.value != (double)(uint64_t)se.value)
				return pfail(ps, "bucket count not a whole number", line);
			ps->last_le = le;
			ps->last_cum = se.value;
			if (isinf(le)) {
				ps->inf_seen = true;
				ps->inf_count = se.value;
			}
		} else if (has_le) {
			return pfail(ps, "le on _sum/_count", line);
		} else if (!ps->hist_open || strcmp(key, ps->hist_key) != 0) {
			return pfail(ps, "_sum/_count without its buckets", line);
		} else if (ends_with(se.name, "_sum")) {
			if (!ps->inf_seen || ps->sum_seen)
				return pfail(ps, "_sum out of place", line);
			ps->sum_seen = true;
		} else {
			if (strlen(se.name) != strlen(base) + 6)
				return pfail(ps, "_count of another family", line);
			if (!ps->sum_seen)
				return pfail(ps, "_count before _sum", line);
			if (se.value != ps->inf_count)
				return pfail(ps, "+Inf bucket != _count", line);
			ps->hist_open = false;
		}
		return true;
	}
	if (strcmp(se.name, ps->family) != 0)
		return pfail(ps, "sample name differs from its family", line);
	if (has_le)
		return pfail(ps, "le label outside a histogram", line);
	if (strcmp(ps->type, "counter") == 0 && !(se.value >= 0))
		return pfail(ps, "negative counter", line);
	if (ps->nout < PMAX_SERIES)
		ps->out[ps->nout++] = se;
	return true;
}

static bool
parse_comment(struct pstate *ps, const char *line)
{
	const char *p = line + 1;
	char name[QUAY_STATS_NAME_MAX + 1];
	bool help;

	if (strncmp(p, " HELP ", 6) == 0)
		help = true;
	else if (strncmp(p, " TYPE ", 6) == 0)
		help = false;
	else
		return true; /* any other comment is allowed */
	p += 6;
	if (read_name(&p, name, sizeof(name), true) == 0)
		return pfail(ps, "bad name in HELP/TYPE", line);
	if (strcmp(name, ps->family) != 0) {
		/* A new family: the previous one is complete. */
		if (!hist_close(ps))
			return false;
		if (ps->family[0] != '\0' && !ps->samples_seen)
			return pfail(ps, "family without samples", ps->family);
		for (int i = 0; i < ps->nseen; i++)
			if (strcmp(ps->seen[i], name) == 0)
				return pfail(ps, "family appears twice", line);
		if (ps->nseen < 64)
			snprintf(ps->seen[ps->nseen++], sizeof(ps->seen[0]), "%s", name);
		snprintf(ps->family, sizeof(ps->family), "%s", name);
		ps->help_seen = ps->type_seen = ps->samples_seen = false;
		ps->families++;
	}
	if (ps->samples_seen)
		return pfail(ps, "HELP/TYPE after samples", line);
	if (help) {
		size_t n = 0;
		if (ps->help_seen || ps->type_seen)
			return pfail(ps, "HELP twice or after TYPE", line);
		if (*p != ' ')
			return pfail(ps, "HELP without text", line);
		for (p++; *p; p++) {
			if (*p == '\\') {
				if (p[1] == '\\')
					ps->help[n++] = '\\';
				else if (p[1] == 'n')
					ps->help[n++] = '\n';
				else
					return pfail(ps, "bad escape in HELP", line);
				p++;
			} else {
				ps->help[n++] = *p;
			}
			if (n >= sizeof(ps->help) - 1)
				return pfail(ps, "HELP too long", line);
		}
		ps->help[n] = '\0';
		ps->help_seen = true;
	} else {
		if (ps->type_seen)
			return pfail(ps, "TYPE twice", line);
		if (*p != ' ')
			return pfail(ps, "TYPE without type", line);
		p++;
		if (strcmp(p, "counter") && strcmp(p, "gauge") && strcmp(p, "histogram") &&
		    strcmp(p, "summary") && strcmp(p, "untyped"))
			return pfail(ps, "unknown type", line);
		snprintf(ps->type, sizeof(ps->type), "%s", p);
		ps->type_seen = true;
	}
	return true;
}

/* Validate a whole exposition; fills ps. */
static bool
prom_parse(const char *text, struct pstate *ps)
{
	const char *p = text;
	char *line = malloc(1 << 16);

	assert_non_null(line);
	memset(ps->family, 0, sizeof(ps->family));
	if (*text != '\0' && text[strlen(text) - 1] != '\n') {
		free(line);
		return pfail(ps, "output does not end with a newline", "");
	}
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = (size_t)(nl - p);
		bool ok;
		assert_true(n < (1 << 16));
		memcpy(line, p, n);
		line[n] = '\0';
		p = nl + 1;
		if (n == 0) {
			ok = pfail(ps, "empty line", "");
		} else if (line[0] == '#') {
			ok = parse_comment(ps, line);
		} else {
			ok = parse_sample(ps, line);
		}
		if (!ok) {
			free(line);
			return false;
		}
	}
	free(line);
	if (!hist_close(ps))
		return false;
	if (ps->hist_open)
		return pfail(ps, "histogram without _count at the end", "");
	if (ps->family[0] != '\0' && !ps->samples_seen)
		return pfail(ps, "family without samples", ps->family);
	return true;
}

struct strbuf {
	char *p;
	size_t n, cap;
};

static int
strbuf_write(void *arg, const char *data, size_t len)
{
	struct strbuf *b = arg;

	assert_true(len > 0);
	if (b->n + len + 1 > b->cap) {
		b->cap = (b->n + len + 1) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, data, len);
	b->n += len;
	b->p[b->n] = '\0';
	return 0;
}

/* A registry with everything an exporter must get right. */
static const char *const tricky_values[] = {
	"plain",
	"back\\slash",
	"dq\"uote",
	"new\nline",
	"all\\\"\n\\n",
	"utf8 é 中 😀",
	"{braces}=,",
	"tab\tcr\r",
	"\\",
	"\"",
	"\n",
};

static quay_stats *
tricky_registry(void)
{
	quay_stats *s = new_stats();
	quay_counter *c;
	quay_gauge *g;
	quay_hist *h;

	for (size_t i = 0; i < ARRAY_LEN(tricky_values); i++) {
		struct quay_stats_label l[2] = { { "queue", tricky_values[i] }, { "idx", "x" } };
		char idx[8];
		snprintf(idx, sizeof(idx), "%zu", i);
		l[1].value = idx;
		assert_int_equal(quay_counter_create(s, "quay_sent_total",
		                     "Messages sent.\nSecond line with \\ backslash and \"quotes\".", l, 2,
		                     &c),
		    0);
		quay_counter_add(c, 1000 + i);
	}
	assert_int_equal(quay_gauge_create(s, "quay:depth", NULL, NULL, 0, &g), 0);
	quay_gauge_set(g, -12345);
	assert_int_equal(quay_gauge_create(s, "quay_big", "Extremes.", NULL, 0, &g), 0);
	quay_gauge_set(g, INT64_MIN);
	assert_int_equal(quay_counter_create(s, "quay_max_total", "", NULL, 0, &c), 0);
	quay_counter_add(c, UINT64_MAX);
	{
		struct quay_stats_label l = { "q", "a\"b" };
		uint64_t seed = 7;
		assert_int_equal(quay_hist_create(s, "quay_latency_seconds", "Latency.", &l, 1, &h), 0);
		for (int i = 0; i < 5000; i++)
			quay_hist_record(h, qt_rand(&seed) % UINT64_C(70000000000));
		/* values right at and around the le bounds */
		for (size_t i = 0; i < QUAY_HIST_LE_COUNT; i++) {
			uint64_t ns;
			quay_hist_le_bound(i, &ns, NULL);
			quay_hist_record(h, ns - 1);
			quay_hist_record(h, ns);
			quay_hist_record(h, ns + 1);
		}
		quay_hist_record(h, UINT64_MAX / 2);
		assert_int_equal(quay_hist_create(s, "quay_latency_seconds", "Latency.", NULL, 0, &h), 0);
		/* and one empty histogram series */
		l.value = "empty";
		assert_int_equal(quay_hist_create(s, "quay_latency_seconds", "Latency.", &l, 1, &h), 0);
	}
	return s;
}

static void
test_prometheus_parse_back(void **state)
{
	quay_stats *s = tricky_registry();
	quay_stats_snap *snap;
	struct strbuf b = { NULL, 0, 0 };
	struct pstate *ps = calloc(1, sizeof(*ps));
	struct pseries *series = calloc(PMAX_SERIES, sizeof(*series));

	(void)state;
	assert_non_null(ps);
	assert_non_null(series);
	ps->out = series;
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(quay_stats_write_prometheus(snap, strbuf_write, &b), 0);
	assert_non_null(b.p);
	if (!prom_parse(b.p, ps))
		fail_msg("Prometheus output rejected: %s\n----\n%s", ps->err, b.p);
	assert_int_equal(ps->families, 5);
	/* 11 counters, 2 gauges, 1 counter, 3 histograms x (27 + 2) */
	assert_int_equal(ps->samples, 11 + 2 + 1 + 3 * (QUAY_HIST_LE_COUNT + 3));

	/* Round trip: every label value comes back exactly, with its value. */
	assert_int_equal(ps->nout, ARRAY_LEN(tricky_values) + 3);
	for (size_t i = 0; i < ARRAY_LEN(tricky_values); i++) {
		struct pseries *se = &series[i];
		assert_string_equal(se->name, "quay_sent_total");
		assert_int_equal(se->nlabels, 2);
		assert_string_equal(se->lname[0], "idx"); /* sorted by name */
		assert_string_equal(se->lname[1], "queue");
		assert_string_equal(se->lvalue[1], tricky_values[i]);
		assert_true(se->value == (double)(1000 + i));
	}
	assert_true(series[ARRAY_LEN(tricky_values)].value == -12345.0);
	assert_true(series[ARRAY_LEN(tricky_values) + 1].value == (double)INT64_MIN);
	assert_true(series[ARRAY_LEN(tricky_values) + 2].value == 18446744073709551615.0);
	/* The exact text of a few lines. */
	assert_non_null(strstr(b.p,
	    "# HELP quay_sent_total Messages sent.\\nSecond line with \\\\ backslash and \"quotes\".\n"));
	assert_non_null(strstr(b.p, "# TYPE quay_sent_total counter\n"));
	assert_non_null(strstr(b.p, "quay_sent_total{idx=\"4\",queue=\"all\\\\\\\"\\n\\\\n\"} 1004\n"));
	assert_non_null(strstr(b.p, "\nquay:depth -12345\n"));
	assert_null(strstr(b.p, "# HELP quay:depth")); /* no help: no HELP line */
	assert_null(strstr(b.p, "# HELP quay_max_total"));
	assert_non_null(strstr(b.p, "quay_max_total 18446744073709551615\n"));
	assert_non_null(strstr(b.p, "# TYPE quay_latency_seconds histogram\n"));
	assert_non_null(strstr(b.p, "quay_latency_seconds_bucket{q=\"empty\",le=\"+Inf\"} 0\n"));
	assert_non_null(strstr(b.p, "quay_latency_seconds_sum{q=\"empty\"} 0.000000000\n"));
	assert_non_null(strstr(b.p, "quay_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
	assert_non_null(strstr(b.p, "quay_latency_seconds_bucket{q=\"a\\\"b\",le=\"2.5e-07\"} "));

	/* The buckets against the data: le=B counts exactly the samples whose
	 * fine bucket lies wholly at or below B. */
	{
		const struct quay_stats_metric *m = NULL;
		for (size_t i = 0; i < quay_stats_snap_count(snap); i++) {
			assert_int_equal(quay_stats_snap_metric(snap, i, &m), 0);
			if (m->hist != NULL && m->nlabels == 1 && strcmp(m->labels[0].value, "a\"b") == 0)
				break;
		}
		assert_non_null(m->hist);
		assert_int_equal(m->hist->count, 5000 + 3 * QUAY_HIST_LE_COUNT + 1);
		for (size_t i = 0; i < QUAY_HIST_LE_COUNT; i++) {
			uint64_t ns, want = 0, lo, hi;
			const char *text;
			char needle[128];
			quay_hist_le_bound(i, &ns, &text);
			for (size_t k = 0; k < QUAY_HIST_BUCKETS; k++) {
				quay_hist_bucket_range(k, &lo, &hi);
				if (hi <= ns)
					want += m->hist->buckets[k];
			}
			snprintf(needle, sizeof(needle),
			    "quay_latency_seconds_bucket{q=\"a\\\"b\",le=\"%s\"} %llu\n", text,
			    (unsigned long long)want);
			if (strstr(b.p, needle) == NULL)
				fail_msg("missing %s", needle);
		}
		/* _sum is the exact sum in seconds. */
		char needle[128];
		snprintf(needle, sizeof(needle), "quay_latency_seconds_sum{q=\"a\\\"b\"} %llu.%09llu\n",
		    (unsigned long long)(m->hist->sum / 1000000000u),
		    (unsigned long long)(m->hist->sum % 1000000000u));
		assert_non_null(strstr(b.p, needle));
	}

	/* The parser itself rejects broken expositions (it can fail). */
	{
		static const char *const broken[] = {
			"# TYPE a counter\na 1",                     /* no final newline */
			"a 1\n",                                     /* no TYPE */
			"# TYPE a counter\na{l=\"x} 1\n",            /* unterminated */
			"# TYPE a counter\na{l=\"\\t\"} 1\n",        /* bad escape */
			"# TYPE a counter\na{__l=\"x\"} 1\n",        /* reserved label */
			"# TYPE a counter\na{1l=\"x\"} 1\n",         /* bad label name */
			"# TYPE a counter\na{l=\"x\",l=\"y\"} 1\n",  /* repeated label */
			"# TYPE a counter\na 1x\n",                  /* bad value */
			"# TYPE a counter\na  1\n",                  /* double space */
			"# TYPE a counter\nb 1\n",                   /* other family */
			"# TYPE a counter\na 1\n# TYPE a counter\n", /* TYPE twice */
			"# HELP a x\\ty\n# TYPE a counter\na 1\n",   /* bad HELP escape */
			"# TYPE a histogram\na_bucket{le=\"1\"} 2\na_bucket{le=\"+Inf\"} 1\na_sum 1\na_count 1\n",
			"# TYPE a histogram\na_bucket{le=\"1\"} 1\na_bucket{le=\"+Inf\"} 2\na_sum 1\na_count 3\n",
			"# TYPE a histogram\na_bucket{le=\"1\"} 1\na_sum 1\na_count 1\n", /* no +Inf */
			"# TYPE a histogram\na_bucket{le=\"2\"} 1\na_bucket{le=\"1\"} 1\na_bucket{le=\"+Inf\"} 1\na_sum 1\na_count 1\n",
			"# TYPE a histogram\na 1\n",
			"# TYPE a counter\n\na 1\n", /* empty line */
			"# TYPE 0a counter\n0a 1\n",
			"# TYPE a gauge\na{le=\"1\"} 1\n",
		};
		for (size_t i = 0; i < ARRAY_LEN(broken); i++) {
			struct pstate *bad = calloc(1, sizeof(*bad));
			bad->out = series;
			if (prom_parse(broken[i], bad))
				fail_msg("validator accepted broken input %zu", i);
			free(bad);
		}
		struct pstate *good = calloc(1, sizeof(*good));
		good->out = series;
		assert_true(prom_parse("# HELP a x\\ny\\\\\n# TYPE a histogram\na_bucket{le=\"1\"} 1\n"
		                       "a_bucket{le=\"+Inf\"} 2\na_sum 1.5\na_count 2\n",
		    good));
		free(good);
	}

	free(b.p);
	free(ps);
	free(series);
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

/* ==== JSON: a strict parser ========================================== */

struct jparser {
	const char *p;
	int depth;
	char strings[512][1100]; /* decoded strings, in order (the first 512) */
	size_t nstrings;
	size_t nnumbers, nnulls;
};

static bool jvalue(struct jparser *j);

static void
jws(struct jparser *j)
{
	while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
		j->p++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
jstring(struct jparser *j)
{
	char tmp[1100];
	size_t n = 0;

	if (*j->p != '"')
		return false;
	j->p++;
	for (;;) {
		unsigned char c = (unsigned char)*j->p;
		if (c == '"')
			break;
		if (c < 0x20)
			return false; /* raw control character (or end) */
		if (c == '\\') {
			char e = j->p[1];
			unsigned cp = 0;
			j->p += 2;
			switch (e) {
			case '"': cp = '"'; break;
			case '\\': cp = '\\'; break;
			case '/': cp = '/'; break;
			case 'b': cp = '\b'; break;
			case 'f': cp = '\f'; break;
			case 'n': cp = '\n'; break;
			case 'r': cp = '\r'; break;
			case 't': cp = '\t'; break;
			case 'u':
				for (int i = 0; i < 4; i++) {
					int h = hexval(j->p[i]);
					if (h < 0)
						return false;
					cp = cp * 16 + (unsigned)h;
				}
				j->p += 4;
				if (cp >= 0x80)
					return false; /* our exporter only escapes controls */
				break;
			default: return false;
			}
			if (n < sizeof(tmp) - 1)
				tmp[n++] = (char)cp;
			continue;
		}
		/* UTF-8 sequences: check structure. */
		if (c >= 0x80) {
			int k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 ? 1 : -1;
			if (k < 0 || c > 0xF4)
				return false;
			for (int i = 1; i <= k; i++)
				if (((unsigned char)j->p[i] & 0xC0) != 0x80)
					return false;
			for (int i = 0; i <= k; i++)
				if (n < sizeof(tmp) - 1)
					tmp[n++] = j->p[i];
			j->p += k + 1;
			continue;
		}
		if (n < sizeof(tmp) - 1)
			tmp[n++] = (char)c;
		j->p++;
	}
	j->p++;
	tmp[n] = '\0';
	if (j->nstrings < ARRAY_LEN(j->strings))
		memcpy(j->strings[j->nstrings++], tmp, n + 1);
	return true;
}

static bool
jnumber(struct jparser *j)
{
	const char *p = j->p;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return false;
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!(*p >= '0' && *p <= '9'))
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	j->p = p;
	j->nnumbers++;
	return true;
}

static bool
jvalue(struct jparser *j)
{
	bool ok = false;

	if (++j->depth > 64)
		return false;
	jws(j);
	switch (*j->p) {
	case '{':
		j->p++;
		jws(j);
		if (*j->p == '}') {
			j->p++;
			ok = true;
			break;
		}
		for (;;) {
			jws(j);
			if (!jstring(j))
				goto out;
			jws(j);
			if (*j->p != ':')
				goto out;
			j->p++;
			if (!jvalue(j))
				goto out;
			jws(j);
			if (*j->p == ',') {
				j->p++;
				continue;
			}
			if (*j->p != '}')
				goto out;
			j->p++;
			break;
		}
		ok = true;
		break;
	case '[':
		j->p++;
		jws(j);
		if (*j->p == ']') {
			j->p++;
			ok = true;
			break;
		}
		for (;;) {
			if (!jvalue(j))
				goto out;
			jws(j);
			if (*j->p == ',') {
				j->p++;
				continue;
			}
			if (*j->p != ']')
				goto out;
			j->p++;
			break;
		}
		ok = true;
		break;
	case '"': ok = jstring(j); break;
	case 't': ok = strncmp(j->p, "true", 4) == 0 && (j->p += 4); break;
	case 'f': ok = strncmp(j->p, "false", 5) == 0 && (j->p += 5); break;
	case 'n':
		ok = strncmp(j->p, "null", 4) == 0 && (j->p += 4);
		j->nnulls += ok;
		break;
	default: ok = jnumber(j); break;
	}
out:
	j->depth--;
	return ok;
}

static bool
json_valid(const char *text, struct jparser *j)
{
	memset(j, 0, sizeof(*j));
	j->p = text;
	if (!jvalue(j))
		return false;
	jws(j);
	return *j->p == '\0';
}

static bool
jhas_string(const struct jparser *j, const char *s)
{
	for (size_t i = 0; i < j->nstrings; i++)
		if (strcmp(j->strings[i], s) == 0)
			return true;
	return false;
}

/* Pipe text through python3's json module, when python3 exists. Returns
 * 1 valid, 0 invalid, -1 no python3. */
static int
python_json_check(const char *text)
{
	FILE *fp;
	int st;

	if (system("command -v python3 >/dev/null 2>&1") != 0)
		return -1;
	fp = popen("python3 -c 'import json,sys; json.load(sys.stdin)' 2>/dev/null", "w");
	if (fp == NULL)
		return -1;
	fwrite(text, 1, strlen(text), fp);
	st = pclose(fp);
	return st == 0 ? 1 : 0;
}

static void
test_json_valid(void **state)
{
	quay_stats *s = tricky_registry();
	quay_stats_snap *snap;
	struct strbuf b = { NULL, 0, 0 };
	struct jparser *j = malloc(sizeof(*j));

	(void)state;
	assert_non_null(j);
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	assert_int_equal(quay_stats_write_json(snap, strbuf_write, &b), 0);
	if (!json_valid(b.p, j))
		fail_msg("JSON rejected near offset %td: %.60s", j->p - b.p, j->p);
	for (size_t i = 0; i < ARRAY_LEN(tricky_values); i++)
		if (!jhas_string(j, tricky_values[i]))
			fail_msg("label value %zu did not round-trip", i);
	assert_true(jhas_string(j, "Messages sent.\nSecond line with \\ backslash and \"quotes\"."));
	assert_true(jhas_string(j, "quay:depth"));
	assert_true(jhas_string(j, "histogram"));
	assert_non_null(strstr(b.p, "\"value\":-9223372036854775808"));
	assert_non_null(strstr(b.p, "\"value\":18446744073709551615"));
	/* The two empty histograms: min, max and 4 quantiles null. */
	assert_int_equal(j->nnulls, 12);
	assert_non_null(strstr(b.p, "\"count\":0,\"sum\":0,\"min\":null,\"max\":null,\"p50\":null"));
	int py = python_json_check(b.p);
	if (py >= 0)
		assert_int_equal(py, 1);
	else
		print_message("python3 not found: strict C parser only\n");

	/* An empty registry is valid JSON too. */
	{
		quay_stats *e = new_stats();
		quay_stats_snap *es;
		char buf[64];
		size_t len;
		assert_int_equal(quay_stats_snapshot(e, &es), 0);
		assert_int_equal(quay_stats_format_json(es, buf, sizeof(buf), &len), 0);
		assert_true(json_valid(buf, j));
		assert_string_equal(buf, "{\"metrics\":[\n]}\n");
		assert_int_equal(quay_stats_format_prometheus(es, buf, sizeof(buf), &len), 0);
		assert_int_equal(len, 0);
		assert_string_equal(buf, "");
		quay_stats_snap_free(es);
		quay_stats_destroy(e);
	}
	/* The parser can fail. */
	{
		static const char *const broken[] = {
			"",
			"{",
			"{\"a\":}",
			"{\"a\":1,}",
			"[1 2]",
			"{\"a\":\"x\ny\"}",
			"{\"a\":01}",
			"{\"a\":1} x",
			"{\"a\":\"\\q\"}",
			"{a:1}",
			"{\"a\":nul}",
			"[\"\xff\"]",
		};
		for (size_t i = 0; i < ARRAY_LEN(broken); i++)
			if (json_valid(broken[i], j))
				fail_msg("JSON validator accepted broken input %zu", i);
	}
	free(j);
	free(b.p);
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

/* ==== buffer exporters and callback errors =========================== */

static int
fail_after(void *arg, const char *data, size_t len)
{
	int *calls = arg;

	(void)data;
	(void)len;
	return ++*calls >= 2 ? -EIO : 0;
}

static int
count_calls(void *arg, const char *data, size_t len)
{
	size_t *total = arg;

	(void)data;
	*total += len;
	return 0;
}

static void
test_format_buffers(void **state)
{
	typedef int (*fmt_fn)(const quay_stats_snap *, char *, size_t, size_t *);
	typedef int (*wr_fn)(const quay_stats_snap *, quay_stats_write_fn, void *);
	static const fmt_fn fmts[] = { quay_stats_format_prometheus, quay_stats_format_json };
	static const wr_fn wrs[] = { quay_stats_write_prometheus, quay_stats_write_json };
	quay_stats *s = tricky_registry();
	quay_stats_snap *snap;

	(void)state;
	assert_int_equal(quay_stats_snapshot(s, &snap), 0);
	for (size_t f = 0; f < 2; f++) {
		struct strbuf ref = { NULL, 0, 0 };
		size_t len = 0, total = 0;
		char *buf;
		int calls = 0;

		assert_int_equal(wrs[f](snap, strbuf_write, &ref), 0);
		/* Size query. */
		assert_int_equal(fmts[f](snap, NULL, 0, &len), -ENOSPC);
		assert_int_equal(len, ref.n);
		buf = malloc(ref.n + 1);
		assert_non_null(buf);
		/* Every short size: -ENOSPC, the same *len, a NUL-terminated prefix. */
		for (size_t cap = 1; cap <= ref.n; cap += (cap < 64 ? 1 : 97)) {
			memset(buf, 'X', ref.n + 1);
			len = 0;
			assert_int_equal(fmts[f](snap, buf, cap, &len), -ENOSPC);
			assert_int_equal(len, ref.n);
			assert_int_equal(buf[cap - 1], '\0');
			assert_memory_equal(buf, ref.p, cap - 1);
			if (cap < ref.n)
				assert_int_equal(buf[cap], 'X'); /* nothing past cap */
		}
		memset(buf, 'X', ref.n + 1);
		assert_int_equal(fmts[f](snap, buf, ref.n, &len), -ENOSPC); /* no room for NUL */
		assert_int_equal(fmts[f](snap, buf, ref.n + 1, &len), 0);
		assert_int_equal(len, ref.n);
		assert_string_equal(buf, ref.p);

		/* Bad input. */
		assert_int_equal(fmts[f](NULL, buf, ref.n + 1, &len), -EINVAL);
		assert_int_equal(fmts[f](snap, buf, ref.n + 1, NULL), -EINVAL);
		assert_int_equal(fmts[f](snap, NULL, 10, &len), -EINVAL);
		assert_int_equal(wrs[f](NULL, strbuf_write, &ref), -EINVAL);
		assert_int_equal(wrs[f](snap, NULL, &ref), -EINVAL);

		/* A callback error stops the export and is returned. */
		assert_int_equal(wrs[f](snap, fail_after, &calls), -EIO);
		assert_int_equal(calls, 2);
		/* Pieces are bounded (no hidden buffer growth) and add up. */
		assert_int_equal(wrs[f](snap, count_calls, &total), 0);
		assert_int_equal(total, ref.n);
		free(buf);
		free(ref.p);
	}
	quay_stats_snap_free(snap);
	quay_stats_destroy(s);
}

/* ==== thread slots =================================================== */

struct slot_arg {
	uint32_t slot;
	pthread_barrier_t *bar;
};

static void *
slot_thread(void *p)
{
	struct slot_arg *a = p;

	a->slot = quayi_stats_slot();
	pthread_barrier_wait(a->bar); /* all alive at once */
	return NULL;
}

/* Live threads hold distinct slots, the lowest free ones; an exited
 * thread's slot is handed out again. */
static void
test_thread_slots(void **state)
{
	enum { T = 6 };
	pthread_barrier_t bar;
	pthread_t t[T];
	struct slot_arg a[T];
	uint32_t first[T];

	(void)state;
	(void)quayi_stats_slot(); /* the main thread holds one too */
	for (int round = 0; round < 2; round++) {
		pthread_barrier_init(&bar, NULL, T);
		for (int i = 0; i < T; i++) {
			a[i].bar = &bar;
			assert_int_equal(pthread_create(&t[i], NULL, slot_thread, &a[i]), 0);
		}
		for (int i = 0; i < T; i++)
			assert_true(qt_join_within(t[i], 10000));
		pthread_barrier_destroy(&bar);
		for (int i = 0; i < T; i++) {
			assert_true(a[i].slot < QUAY_STATS_SHARDS_MAX);
			for (int k = 0; k < i; k++)
				assert_true(a[i].slot != a[k].slot);
			if (round == 0)
				first[i] = a[i].slot;
		}
		if (round == 1) {
			/* The same set of slots was reused (the lowest free ones). */
			for (int i = 0; i < T; i++) {
				bool found = false;
				for (int k = 0; k < T; k++)
					found |= a[i].slot == first[k];
				assert_true(found);
			}
		}
	}
	/* This thread's slot is stable. */
	assert_int_equal(quayi_stats_slot(), quayi_stats_slot());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_stats_create_opts),
		QT_TEST(test_create_bad_input),
		QT_TEST(test_families_and_duplicates),
		QT_TEST(test_max_metrics),
		QT_TEST(test_counter_ops),
		QT_TEST(test_counter_shards_threads),
		QT_TEST(test_gauge_ops),
		QT_TEST(test_hist_buckets),
		QT_TEST(test_hist_record_read),
		QT_TEST(test_hist_quantiles_vs_reference),
		QT_TEST(test_hist_worst_case_per_bucket),
		QT_TEST(test_snapshot),
		QT_TEST(test_destroy_frees_family),
		QT_TEST(test_prometheus_parse_back),
		QT_TEST(test_json_valid),
		QT_TEST(test_format_buffers),
		QT_TEST(test_thread_slots),
	};
	return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
