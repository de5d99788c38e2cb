/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of quay/pq.h: every public call with valid input, the
 * bad-input table (TESTING.md 5.4: NULL, levels 0 and 257, priority out
 * of range, bad sizes, unknown flags, bad weights), close, the waiting
 * calls, and the single-thread property tests (R6) against a reference
 * model: strict mode (highest level first, FIFO within a level) and the
 * weighted schedule exactly as quay/pq.h documents it, with and without
 * bursts, at 1, 3, 64, 65 and 256 levels.
 *
 * The program runs its tests, then re-runs the waiting-call tests in a
 * child process with QUAY_NO_MEMBARRIER=1 (the fence fallback of the
 * sleep/wake protocol is chosen once per process).
 */
#include "quay_test.h"

#include <sys/wait.h>

#include <quay/pq.h>

#define JOIN_MS 5000

/* ---- helpers ------------------------------------------------------- */

static quay_pq *
pq_new(unsigned levels, size_t cap, size_t esz, unsigned flags, const uint32_t *weights)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq = NULL;

	o.levels = levels;
	o.capacity = cap;
	o.elem_size = esz;
	o.flags = flags;
	o.weights = weights;
	assert_int_equal(quay_pq_create(&o, &pq), 0);
	assert_non_null(pq);
	return pq;
}

static struct quay_pq_opts
opts_of(unsigned levels, size_t cap, size_t esz, unsigned flags)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;

	o.levels = levels;
	o.capacity = cap;
	o.elem_size = esz;
	o.flags = flags;
	return o;
}

/* ---- creation and bad input ---------------------------------------- */

static void
test_create_getters(void **state)
{
	static const unsigned levels[] = { 1, 2, 63, 64, 65, 255, 256 };

	(void)state;
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		for (unsigned flags = 0; flags <= QUAY_PQ_WEIGHTED; flags++) {
			quay_pq *pq = pq_new(levels[i], 4, 16, flags, NULL);

			assert_int_equal(quay_pq_levels(pq), levels[i]);
			assert_int_equal(quay_pq_capacity(pq), 4);
			assert_int_equal(quay_pq_elem_size(pq), 16);
			assert_int_equal(quay_pq_count(pq), 0);
			assert_false(quay_pq_is_closed(pq));
			quay_pq_destroy(pq);
		}
	}
	/* The NULL answers of the getters. */
	assert_int_equal(quay_pq_levels(NULL), 0);
	assert_int_equal(quay_pq_capacity(NULL), 0);
	assert_int_equal(quay_pq_elem_size(NULL), 0);
	assert_int_equal(quay_pq_count(NULL), 0);
	assert_int_equal(quay_pq_level_count(NULL, 0), 0);
	assert_false(quay_pq_is_closed(NULL));
	quay_pq_destroy(NULL);
	quay_pq_close(NULL);
}

static void
test_init_caller_memory(void **state)
{
	struct quay_pq_opts o = opts_of(5, 8, 8, QUAY_PQ_WEIGHTED);
	size_t size = quay_pq_memsize(&o);
	void *mem;
	quay_pq *pq;
	uint64_t v;
	unsigned prio;

	(void)state;
	assert_true(size >= 256 + 5 * quay_ring_memsize(8, 8));
	size = (size + 63) & ~(size_t)63;
	mem = aligned_alloc(64, size);
	assert_non_null(mem);
	memset(mem, 0xa5, size); /* init must set every field */
	pq = mem;
	assert_int_equal(quay_pq_init(pq, &o), 0);
	for (unsigned l = 0; l < 5; l++) {
		v = l;
		assert_int_equal(quay_pq_push(pq, l, &v), 0);
	}
	assert_int_equal(quay_pq_count(pq), 5);
	assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
	assert_int_equal(prio, 4);
	assert_int_equal(v, 4);
	/* destroy must ignore caller memory: were it to free it, the free
	 * below would be a double free. */
	quay_pq_destroy(pq);
	free(mem);
}

static void
test_bad_opts(void **state)
{
	uint32_t w0[4] = { 1, 0, 1, 1 }, wbig[4] = { 1, 1, QUAY_PQ_WEIGHT_MAX + 1, 1 };
	uint32_t wok[4] = { 1, 2, 3, QUAY_PQ_WEIGHT_MAX };
	struct quay_pq_opts bad[32];
	size_t nbad = 0;
	quay_pq *pq = (quay_pq *)(uintptr_t)0x1234, *sentinel = pq;
	struct quay_pq_opts o;

	(void)state;
	o = opts_of(0, 4, 8, 0);
	bad[nbad++] = o; /* levels 0 */
	o = opts_of(257, 4, 8, 0);
	bad[nbad++] = o; /* levels 257 */
	o = opts_of(4, 0, 8, 0);
	bad[nbad++] = o; /* capacity 0 */
	o = opts_of(4, 3, 8, 0);
	bad[nbad++] = o; /* not a power of two */
	o = opts_of(4, QUAY_RING_CAPACITY_MAX * 2, 8, 0);
	bad[nbad++] = o;
	o = opts_of(4, SIZE_MAX, 8, 0);
	bad[nbad++] = o;
	o = opts_of(4, 4, 0, 0);
	bad[nbad++] = o; /* elem 0 */
	o = opts_of(4, 4, 7, 0);
	bad[nbad++] = o; /* not a multiple of 8 */
	o = opts_of(4, 4, QUAY_RING_ELEM_MAX + 8, 0);
	bad[nbad++] = o;
	o = opts_of(4, 4, 8, 0x2);
	bad[nbad++] = o; /* unknown flags */
	o = opts_of(4, 4, 8, 0x80000000u);
	bad[nbad++] = o;
	o = opts_of(4, 4, 8, QUAYI_PQ_F_OWNED);
	bad[nbad++] = o; /* internal flag */
	o = opts_of(4, 4, 8, 0);
	o.weights = wok;
	bad[nbad++] = o; /* weights, strict */
	o = opts_of(4, 4, 8, QUAY_PQ_WEIGHTED);
	o.weights = w0;
	bad[nbad++] = o;
	o = opts_of(4, 4, 8, QUAY_PQ_WEIGHTED);
	o.weights = wbig;
	bad[nbad++] = o;
	o = opts_of(4, 4, 8, 0);
	o.size = 0;
	bad[nbad++] = o; /* unset size */
	o = opts_of(4, 4, 8, 0);
	o.size = sizeof(o) + 8;
	bad[nbad++] = o;
	o = opts_of(4, 4, 8, 0);
	o.size = offsetof(struct quay_pq_opts, allocator) - 8; /* older than any version */
	bad[nbad++] = o;

	for (size_t i = 0; i < nbad; i++) {
		void *mem = aligned_alloc(64, 1 << 16);

		assert_non_null(mem);
		memset(mem, 0x5a, 1 << 16);
		if (quay_pq_memsize(&bad[i]) != 0)
			fail_msg("bad opts #%zu: memsize %zu", i, quay_pq_memsize(&bad[i]));
		if (quay_pq_create(&bad[i], &pq) != -EINVAL)
			fail_msg("bad opts #%zu: create accepted", i);
		assert_ptr_equal(pq, sentinel); /* *out untouched */
		if (quay_pq_init(mem, &bad[i]) != -EINVAL)
			fail_msg("bad opts #%zu: init accepted", i);
		/* Nothing written on failure. */
		for (size_t j = 0; j < (1 << 16); j++)
			if (((unsigned char *)mem)[j] != 0x5a)
				fail_msg("bad opts #%zu: init wrote byte %zu", i, j);
		free(mem);
	}
	/* NULLs and misalignment. */
	o = opts_of(4, 4, 8, QUAY_PQ_WEIGHTED);
	o.weights = wok;
	assert_int_equal(quay_pq_memsize(NULL), 0);
	assert_int_equal(quay_pq_create(NULL, &pq), -EINVAL);
	assert_int_equal(quay_pq_create(&o, NULL), -EINVAL);
	assert_int_equal(quay_pq_init(NULL, &o), -EINVAL);
	{
		size_t size = quay_pq_memsize(&o);
		unsigned char *mem = aligned_alloc(64, ((size + 63) & ~(size_t)63) + 64);

		assert_non_null(mem);
		assert_int_equal(quay_pq_init((quay_pq *)(void *)mem, NULL), -EINVAL);
		assert_int_equal(quay_pq_init((quay_pq *)(void *)(mem + 8), &o), -EINVAL);
		assert_int_equal(quay_pq_init((quay_pq *)(void *)mem, &o), 0); /* the good one */
		free(mem);
	}
	/* The largest valid shapes are accepted by memsize (not allocated). */
	o = opts_of(256, QUAY_RING_CAPACITY_MAX, QUAY_RING_ELEM_MAX, 0);
	assert_true(quay_pq_memsize(&o) > (size_t)256 * QUAY_RING_CAPACITY_MAX * QUAY_RING_ELEM_MAX);
}

static void
test_bad_calls(void **state)
{
	quay_pq *pq = pq_new(3, 4, 8, 0, NULL);
	uint64_t v = 7, buf[4] = { 1, 2, 3, 4 };
	unsigned prios[4];

	(void)state;
	assert_int_equal(quay_pq_push(NULL, 0, &v), -EINVAL);
	assert_int_equal(quay_pq_push(pq, 0, NULL), -EINVAL);
	assert_int_equal(quay_pq_push(pq, 3, &v), -EINVAL); /* prio == levels */
	assert_int_equal(quay_pq_push(pq, 1000, &v), -EINVAL);
	assert_int_equal(quay_pq_push(pq, UINT32_MAX, &v), -EINVAL);
	assert_int_equal(quay_pq_push_burst(NULL, 0, buf, 4), 0);
	assert_int_equal(quay_pq_push_burst(pq, 0, NULL, 4), 0);
	assert_int_equal(quay_pq_push_burst(pq, 3, buf, 4), 0);
	assert_int_equal(quay_pq_push_burst(pq, 0, buf, 0), 0);
	assert_int_equal(quay_pq_push_wait(NULL, 0, &v, 0), -EINVAL);
	assert_int_equal(quay_pq_push_wait(pq, 0, NULL, 0), -EINVAL);
	assert_int_equal(quay_pq_push_wait(pq, 3, &v, -1), -EINVAL); /* must not wait */
	assert_int_equal(quay_pq_count(pq), 0);                      /* nothing changed */

	assert_int_equal(quay_pq_push(pq, 1, &v), 0);
	assert_int_equal(quay_pq_pop(NULL, &v, NULL), -EINVAL);
	assert_int_equal(quay_pq_pop(pq, NULL, NULL), -EINVAL);
	assert_int_equal(quay_pq_pop_burst(NULL, buf, 4, prios), 0);
	assert_int_equal(quay_pq_pop_burst(pq, NULL, 4, prios), 0);
	assert_int_equal(quay_pq_pop_burst(pq, buf, 0, prios), 0);
	assert_int_equal(quay_pq_pop_wait(NULL, &v, NULL, 0), -EINVAL);
	assert_int_equal(quay_pq_pop_wait(pq, NULL, NULL, -1), -EINVAL);
	assert_int_equal(quay_pq_count(pq), 1);
	assert_int_equal(quay_pq_level_count(pq, 1), 1);
	assert_int_equal(quay_pq_level_count(pq, 3), 0); /* out of range */
	quay_pq_destroy(pq);
}

/* ---- single-thread behaviour --------------------------------------- */

static void
test_strict_order_and_full(void **state)
{
	quay_pq *pq = pq_new(4, 2, 8, 0, NULL);
	uint64_t v;
	unsigned prio = 99;

	(void)state;
	assert_int_equal(quay_pq_pop(pq, &v, &prio), -EAGAIN);
	assert_int_equal(prio, 99); /* untouched */
	/* 2 per level; a third push to a level is -EAGAIN, the others go on. */
	for (unsigned l = 0; l < 4; l++)
		for (uint64_t i = 0; i < 2; i++) {
			v = l * 10 + i;
			assert_int_equal(quay_pq_push(pq, l, &v), 0);
		}
	v = 999;
	for (unsigned l = 0; l < 4; l++)
		assert_int_equal(quay_pq_push(pq, l, &v), -EAGAIN);
	assert_int_equal(quay_pq_push_wait(pq, 2, &v, 0), -ETIMEDOUT);
	assert_int_equal(quay_pq_count(pq), 8);
	for (unsigned l = 4; l-- > 0;)
		for (uint64_t i = 0; i < 2; i++) {
			assert_int_equal(quay_pq_pop(pq, &v, (i & 1) ? NULL : &prio), 0);
			assert_int_equal(v, l * 10 + i);
			if (!(i & 1))
				assert_int_equal(prio, l);
			assert_int_equal(quay_pq_level_count(pq, l), 1 - i);
		}
	assert_int_equal(quay_pq_pop(pq, &v, &prio), -EAGAIN);
	assert_int_equal(quay_pq_pop_wait(pq, &v, &prio, 0), -ETIMEDOUT);
	assert_int_equal(quay_pq_count(pq), 0);
	/* A higher level pushed later still comes first. */
	v = 1;
	assert_int_equal(quay_pq_push(pq, 0, &v), 0);
	v = 2;
	assert_int_equal(quay_pq_push(pq, 3, &v), 0);
	assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
	assert_int_equal(v, 2);
	assert_int_equal(prio, 3);
	quay_pq_destroy(pq);
}

static void
test_bursts(void **state)
{
	quay_pq *pq = pq_new(3, 4, 16, 0, NULL);
	uint64_t in[12][2], out[12][2];
	unsigned prios[12];

	(void)state;
	for (uint64_t i = 0; i < 12; i++) {
		in[i][0] = i;
		in[i][1] = ~i;
	}
	/* A burst larger than the level stops at full. */
	assert_int_equal(quay_pq_push_burst(pq, 0, in[0], 6), 4);
	assert_int_equal(quay_pq_push_burst(pq, 0, in[0], 6), 0);
	assert_int_equal(quay_pq_push_burst(pq, 2, in[4], 3), 3);
	assert_int_equal(quay_pq_push_burst(pq, 1, in[7], 1), 1);
	/* One pop burst crosses levels, highest first. */
	assert_int_equal(quay_pq_pop_burst(pq, out, 12, prios), 8);
	static const uint64_t order[8] = { 4, 5, 6, 7, 0, 1, 2, 3 };
	static const unsigned lv[8] = { 2, 2, 2, 1, 0, 0, 0, 0 };
	for (size_t i = 0; i < 8; i++) {
		assert_int_equal(out[i][0], order[i]);
		assert_int_equal(out[i][1], ~order[i]);
		assert_int_equal(prios[i], lv[i]);
	}
	assert_int_equal(quay_pq_pop_burst(pq, out, 12, NULL), 0);
	/* Partial pop burst, then without prios. */
	assert_int_equal(quay_pq_push_burst(pq, 1, in[0], 4), 4);
	assert_int_equal(quay_pq_pop_burst(pq, out, 3, NULL), 3);
	assert_int_equal(out[2][0], 2);
	assert_int_equal(quay_pq_pop_burst(pq, out, 3, prios), 1);
	assert_int_equal(out[0][0], 3);
	assert_int_equal(prios[0], 1);
	quay_pq_destroy(pq);
}

static void
test_close(void **state)
{
	for (unsigned flags = 0; flags <= QUAY_PQ_WEIGHTED; flags++) {
		quay_pq *pq = pq_new(70, 4, 8, flags, NULL);
		uint64_t v, buf[4];
		unsigned prio;

		(void)state;
		v = 1;
		assert_int_equal(quay_pq_push(pq, 69, &v), 0);
		v = 2;
		assert_int_equal(quay_pq_push(pq, 3, &v), 0);
		v = 3;
		assert_int_equal(quay_pq_push(pq, 3, &v), 0);
		quay_pq_close(pq);
		assert_true(quay_pq_is_closed(pq));
		quay_pq_close(pq); /* idempotent */
		assert_int_equal(quay_pq_push(pq, 0, &v), -EPIPE);
		assert_int_equal(quay_pq_push_burst(pq, 0, buf, 2), 0);
		assert_int_equal(quay_pq_push_wait(pq, 0, &v, -1), -EPIPE);
		assert_int_equal(quay_pq_push(pq, 70, &v), -EINVAL); /* still checked */
		assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
		assert_int_equal(v, 1);
		assert_int_equal(prio, 69);
		assert_int_equal(quay_pq_pop_burst(pq, buf, 4, NULL), 2);
		assert_int_equal(buf[0], 2);
		assert_int_equal(buf[1], 3);
		assert_int_equal(quay_pq_pop(pq, &v, &prio), -EPIPE);
		assert_int_equal(quay_pq_pop_wait(pq, &v, &prio, -1), -EPIPE);
		assert_int_equal(quay_pq_pop_burst(pq, buf, 4, NULL), 0);
		assert_int_equal(quay_pq_count(pq), 0);
		quay_pq_destroy(pq);
	}
}

/* Elements pushed at every level come back before close reports -EPIPE,
 * even when the bitmap had to be consulted level by level (bits of a
 * 256-level queue in all four words). */
static void
test_close_drains_every_level(void **state)
{
	quay_pq *pq = pq_new(256, 1, 8, 0, NULL);
	uint64_t v;
	unsigned prio;

	(void)state;
	for (unsigned l = 0; l < 256; l++) {
		v = l;
		assert_int_equal(quay_pq_push(pq, l, &v), 0);
	}
	quay_pq_close(pq);
	for (unsigned l = 256; l-- > 0;) {
		assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
		assert_int_equal(prio, l);
		assert_int_equal(v, l);
	}
	assert_int_equal(quay_pq_pop(pq, &v, &prio), -EPIPE);
	quay_pq_destroy(pq);
}

/* ---- property tests against a reference model ----------------------- */

struct ref {
	unsigned levels;
	size_t cap;
	uint64_t q[QUAY_PQ_LEVELS_MAX][16];
	size_t head[QUAY_PQ_LEVELS_MAX], len[QUAY_PQ_LEVELS_MAX];
	bool weighted;
	uint32_t w[QUAY_PQ_LEVELS_MAX];
	unsigned cur;
	uint32_t credit;
};

static void
ref_init(struct ref *m, unsigned levels, size_t cap, bool weighted, const uint32_t *w)
{
	memset(m, 0, sizeof(*m));
	m->levels = levels;
	m->cap = cap;
	m->weighted = weighted;
	for (unsigned i = 0; i < levels; i++)
		m->w[i] = w != NULL ? w[i] : i + 1;
	m->cur = levels; /* above the top */
	m->credit = 0;
}

static int
ref_push(struct ref *m, unsigned l, uint64_t v)
{
	if (m->len[l] == m->cap)
		return -EAGAIN;
	m->q[l][(m->head[l] + m->len[l]) % m->cap] = v;
	m->len[l]++;
	return 0;
}

/* The schedule exactly as quay/pq.h documents it. */
static int
ref_pop(struct ref *m, uint64_t *v, unsigned *prio)
{
	int l = -1;

	/* A level found empty loses the rest of its credit. */
	if (m->weighted && m->cur < m->levels && m->len[m->cur] == 0)
		m->credit = 0;
	if (!m->weighted) {
		for (unsigned i = m->levels; i-- > 0;)
			if (m->len[i] != 0) {
				l = (int)i;
				break;
			}
	} else if (m->cur < m->levels && m->len[m->cur] != 0 && m->credit > 0) {
		l = (int)m->cur;
		m->credit--;
	} else {
		for (unsigned i = m->cur; i-- > 0;) /* highest non-empty below */
			if (m->len[i] != 0) {
				l = (int)i;
				break;
			}
		if (l < 0)
			for (unsigned i = m->levels; i-- > 0;) /* wrap */
				if (m->len[i] != 0) {
					l = (int)i;
					break;
				}
		if (l >= 0) {
			m->cur = (unsigned)l;
			m->credit = m->w[l] - 1;
		}
	}
	if (l < 0)
		return -EAGAIN;
	*v = m->q[l][m->head[l]];
	m->head[l] = (m->head[l] + 1) % m->cap;
	m->len[l]--;
	*prio = (unsigned)l;
	return 0;
}

static struct ref g_ref;

/* Random pushes (biased per run towards pushing or popping, so the queue
 * also runs full and empty), pops and bursts; every answer must match. */
static void
property_run(unsigned levels, size_t cap, unsigned flags, const uint32_t *w, uint64_t seed, size_t ops)
{
	quay_pq *pq = pq_new(levels, cap, 8, flags, w);
	struct ref *m = &g_ref;
	uint64_t s = seed, next = 1;

	ref_init(m, levels, cap, flags & QUAY_PQ_WEIGHTED, w);
	for (size_t op = 0; op < ops; op++) {
		uint64_t r = qt_rand(&s);
		unsigned bias = (unsigned)((op / 512) % 3); /* 0 fill, 1 mixed, 2 drain */
		unsigned pct = (unsigned)(r % 100);
		bool do_push = bias == 0 ? pct < 75 : bias == 1 ? pct < 50 : pct < 25;
		/* Skew levels: a few hot ones and the full range. */
		unsigned l = (r >> 8) & 1 ? (unsigned)((r >> 16) % levels) :
		                            levels - 1 - (unsigned)((r >> 16) % (levels < 3 ? levels : 3));

		if (do_push && ((r >> 40) & 7) == 0) { /* burst */
			uint64_t buf[8];
			size_t n = 1 + (size_t)((r >> 44) % 8), k = 0;

			for (size_t i = 0; i < n; i++)
				buf[i] = next + i;
			while (k < n && ref_push(m, l, buf[k]) == 0)
				k++;
			assert_int_equal(quay_pq_push_burst(pq, l, buf, n), k);
			next += k;
		} else if (do_push) {
			uint64_t v = next;
			int want = ref_push(m, l, v);

			assert_int_equal(quay_pq_push(pq, l, &v), want);
			if (want == 0)
				next++;
		} else if (((r >> 40) & 7) == 0) {
			uint64_t buf[8], ev;
			unsigned pr[8], ep;
			size_t n = 1 + (size_t)((r >> 44) % 8), k;

			k = quay_pq_pop_burst(pq, buf, n, pr);
			for (size_t i = 0; i < n; i++) {
				if (ref_pop(m, &ev, &ep) != 0) {
					assert_int_equal(k, i);
					break;
				}
				if (i >= k)
					fail_msg("op %zu: pop_burst returned %zu, model has more", op, k);
				if (buf[i] != ev || pr[i] != ep)
					fail_msg("op %zu (burst %zu/%zu): got %llu@%u, model %llu@%u", op, i,
					    n, (unsigned long long)buf[i], pr[i], (unsigned long long)ev, ep);
			}
		} else {
			uint64_t v = 0, ev = 0;
			unsigned p = 0, ep = 0;
			int want = ref_pop(m, &ev, &ep);
			int got = quay_pq_pop(pq, &v, &p);

			if (got != want || (want == 0 && (v != ev || p != ep)))
				fail_msg("op %zu: pop %d %llu@%u, model %d %llu@%u", op, got,
				    (unsigned long long)v, p, want, (unsigned long long)ev, ep);
		}
		/* White box: the scheduler word equals the model's cursor and
		 * credit after every call, not only the popped order. */
		if (m->weighted &&
		    ((unsigned)(pq->sched >> 32) != m->cur || (uint32_t)pq->sched != m->credit))
			fail_msg("op %zu: scheduler %u/%u, model %u/%u", op, (unsigned)(pq->sched >> 32),
			    (unsigned)pq->sched, m->cur, m->credit);
		if ((op & 255) == 0) {
			size_t total = 0;
			for (unsigned i = 0; i < levels; i++)
				total += m->len[i];
			assert_int_equal(quay_pq_count(pq), total);
		}
	}
	quay_pq_destroy(pq);
}

static void
test_property_strict(void **state)
{
	static const unsigned levels[] = { 1, 3, 64, 65, 256 };

	(void)state;
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		property_run(levels[i], 4, 0, NULL, 1000 + i, 60000);
		property_run(levels[i], 16, 0, NULL, 2000 + i, 60000);
	}
}

static void
test_property_weighted(void **state)
{
	static const unsigned levels[] = { 1, 3, 64, 65, 256 };
	uint32_t w[QUAY_PQ_LEVELS_MAX];
	uint64_t s = 77;

	(void)state;
	for (unsigned i = 0; i < QUAY_PQ_LEVELS_MAX; i++)
		w[i] = 1 + (uint32_t)(qt_rand(&s) % 5);
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		property_run(levels[i], 4, QUAY_PQ_WEIGHTED, NULL, 3000 + i, 60000);
		property_run(levels[i], 16, QUAY_PQ_WEIGHTED, NULL, 4000 + i, 60000);
		property_run(levels[i], 8, QUAY_PQ_WEIGHTED, w, 5000 + i, 60000);
	}
}

/* The documented share, one thread: the top level T is refilled after
 * every pop (a flood), level L holds elements throughout; between two
 * pops from L at most w[T] pops go to T, and over the run L gets exactly
 * w[L] of every w[L] + w[T] pops. */
static void
test_weighted_share(void **state)
{
	static const unsigned lows[] = { 0, 1, 5 };

	(void)state;
	for (size_t t = 0; t < sizeof(lows) / sizeof(lows[0]); t++) {
		const unsigned levels = 8, top = levels - 1, low = lows[t];
		quay_pq *pq = pq_new(levels, 1024, 8, QUAY_PQ_WEIGHTED, NULL);
		uint64_t v = 0;
		unsigned prio, gap = 0, max_gap = 0;
		size_t lows_popped = 0, pops = 0;

		for (int i = 0; i < 1000; i++)
			assert_int_equal(quay_pq_push(pq, low, &v), 0);
		for (int i = 0; i < 1000; i++)
			assert_int_equal(quay_pq_push(pq, top, &v), 0);
		while (lows_popped < 1000) {
			assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
			pops++;
			if (prio == low) {
				lows_popped++;
				gap = 0;
			} else {
				assert_int_equal(prio, top);
				assert_int_equal(quay_pq_push(pq, top, &v), 0); /* flood */
				if (++gap > max_gap)
					max_gap = gap;
			}
		}
		assert_true(max_gap <= levels);    /* w[T] = T + 1 */
		assert_int_equal(max_gap, levels); /* and reached */
		/* Exactly (L+1) of every (L+1)+(T+1) pops; the top goes first. */
		assert_int_equal(pops, 1000 + (1000 + low) / (low + 1) * levels);
		quay_pq_destroy(pq);
	}
	/* Strict mode starves the low level for as long as the flood lasts. */
	{
		quay_pq *pq = pq_new(2, 16, 8, 0, NULL);
		uint64_t v = 0;
		unsigned prio;

		assert_int_equal(quay_pq_push(pq, 0, &v), 0);
		assert_int_equal(quay_pq_push(pq, 1, &v), 0);
		for (int i = 0; i < 10000; i++) {
			assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
			assert_int_equal(prio, 1);
			assert_int_equal(quay_pq_push(pq, 1, &v), 0);
		}
		quay_pq_destroy(pq);
	}
}

/* ---- waiting calls --------------------------------------------------- */

struct waiter {
	quay_pq *pq;
	unsigned prio;
	uint64_t v;
	int64_t timeout;
	int rc;
	int tid;
	unsigned got_prio;
};

static void *
pop_waiter(void *arg)
{
	struct waiter *w = arg;

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_RELEASE);
	w->rc = quay_pq_pop_wait(w->pq, &w->v, &w->got_prio, w->timeout);
	return NULL;
}

static void *
push_waiter(void *arg)
{
	struct waiter *w = arg;

	__atomic_store_n(&w->tid, qt_gettid(), __ATOMIC_RELEASE);
	w->rc = quay_pq_push_wait(w->pq, w->prio, &w->v, w->timeout);
	return NULL;
}

static int
waiter_tid(struct waiter *w)
{
	int tid;

	while ((tid = __atomic_load_n(&w->tid, __ATOMIC_ACQUIRE)) == 0)
		qt_sleep_ms(1);
	return tid;
}

static void
test_wait_timeouts(void **state)
{
	quay_pq *pq = pq_new(4, 1, 8, 0, NULL);
	uint64_t v = 1;
	unsigned prio;
	int64_t t0;

	(void)state;
	t0 = qt_now_ns();
	assert_int_equal(quay_pq_pop_wait(pq, &v, &prio, 20 * QT_MS), -ETIMEDOUT);
	assert_true(qt_now_ns() - t0 >= 20 * QT_MS);
	assert_int_equal(quay_pq_push(pq, 2, &v), 0);
	t0 = qt_now_ns();
	assert_int_equal(quay_pq_push_wait(pq, 2, &v, 20 * QT_MS), -ETIMEDOUT);
	assert_true(qt_now_ns() - t0 >= 20 * QT_MS);
	/* Another level is not full: no wait. */
	assert_int_equal(quay_pq_push_wait(pq, 1, &v, -1), 0);
	assert_int_equal(quay_pq_pop_wait(pq, &v, &prio, -1), 0);
	assert_int_equal(prio, 2);
	quay_pq_destroy(pq);
}

/* A sleeping pop_wait is woken by a push at any level. */
static void
test_pop_wait_wakes_on_any_level(void **state)
{
	static const unsigned lv[] = { 0, 63, 64, 200, 255 };

	(void)state;
	for (size_t i = 0; i < sizeof(lv) / sizeof(lv[0]); i++) {
		quay_pq *pq = pq_new(256, 2, 8, i & 1 ? QUAY_PQ_WEIGHTED : 0, NULL);
		struct waiter w = { .pq = pq, .timeout = -1 };
		pthread_t t;
		uint64_t v = 100 + i;

		assert_int_equal(pthread_create(&t, NULL, pop_waiter, &w), 0);
		assert_true(qt_await_futex_sleep(waiter_tid(&w), JOIN_MS));
		assert_int_equal(quay_pq_push(pq, lv[i], &v), 0);
		assert_true(qt_join_within(t, JOIN_MS));
		assert_int_equal(w.rc, 0);
		assert_int_equal(w.v, 100 + i);
		assert_int_equal(w.got_prio, lv[i]);
		quay_pq_destroy(pq);
	}
}

/* A push_wait on a full level sleeps through pops at other levels and
 * is woken by a pop at its own. */
static void
test_push_wait_wakes_on_pop(void **state)
{
	quay_pq *pq = pq_new(3, 1, 8, 0, NULL);
	struct waiter w = { .pq = pq, .prio = 0, .v = 42, .timeout = -1 };
	pthread_t t;
	uint64_t v = 1;
	unsigned prio;

	(void)state;
	assert_int_equal(quay_pq_push(pq, 0, &v), 0);
	v = 2;
	assert_int_equal(quay_pq_push(pq, 2, &v), 0);
	assert_int_equal(pthread_create(&t, NULL, push_waiter, &w), 0);
	assert_true(qt_await_futex_sleep(waiter_tid(&w), JOIN_MS));
	assert_int_equal(quay_pq_pop(pq, &v, &prio), 0); /* level 2 */
	assert_int_equal(prio, 2);
	/* The waiter wakes, finds level 0 still full and sleeps again. */
	assert_true(qt_await_futex_sleep(w.tid, JOIN_MS));
	assert_int_equal(quay_pq_pop(pq, &v, &prio), 0); /* level 0 */
	assert_int_equal(v, 1);
	assert_true(qt_join_within(t, JOIN_MS));
	assert_int_equal(w.rc, 0);
	assert_int_equal(quay_pq_pop(pq, &v, &prio), 0);
	assert_int_equal(v, 42);
	quay_pq_destroy(pq);
}

static void
test_close_wakes_waiters(void **state)
{
	quay_pq *pq = pq_new(2, 1, 8, 0, NULL);
	struct waiter wp = { .pq = pq, .timeout = -1 };
	struct waiter wq = { .pq = pq, .prio = 1, .v = 5, .timeout = -1 };
	struct waiter wc = { .pq = pq, .timeout = -1 };
	pthread_t tp, tq, tc;
	quay_pq *pq2 = pq_new(2, 1, 8, 0, NULL);
	uint64_t v = 9;

	(void)state;
	wc.pq = pq2;
	assert_int_equal(quay_pq_push(pq2, 1, &v), 0); /* pq2 level 1 full */
	wq.pq = pq2;
	assert_int_equal(pthread_create(&tp, NULL, pop_waiter, &wp), 0);
	assert_int_equal(pthread_create(&tq, NULL, push_waiter, &wq), 0);
	assert_true(qt_await_futex_sleep(waiter_tid(&wp), JOIN_MS));
	assert_true(qt_await_futex_sleep(waiter_tid(&wq), JOIN_MS));
	quay_pq_close(pq);
	quay_pq_close(pq2);
	assert_true(qt_join_within(tp, JOIN_MS));
	assert_true(qt_join_within(tq, JOIN_MS));
	assert_int_equal(wp.rc, -EPIPE);
	assert_int_equal(wq.rc, -EPIPE);
	/* A pop_wait on a closed queue still drains it first. */
	assert_int_equal(pthread_create(&tc, NULL, pop_waiter, &wc), 0);
	assert_true(qt_join_within(tc, JOIN_MS));
	assert_int_equal(wc.rc, 0);
	assert_int_equal(wc.v, 9);
	assert_int_equal(quay_pq_pop_wait(pq2, &v, NULL, -1), -EPIPE);
	quay_pq_destroy(pq);
	quay_pq_destroy(pq2);
}

/* Producers and consumers that only use the waiting calls on a tiny
 * queue: every element arrives once (a lost wake-up hangs, and fails the
 * join deadline). */
struct pc {
	quay_pq *pq;
	int id;
	uint64_t n;
	uint64_t sum;
	uint64_t count;
};

static void *
pc_producer(void *arg)
{
	struct pc *p = arg;

	for (uint64_t i = 1; i <= p->n; i++) {
		uint64_t v = ((uint64_t)p->id << 32) | i;
		if (quay_pq_push_wait(p->pq, (unsigned)(i % quay_pq_levels(p->pq)), &v, -1) != 0)
			break;
	}
	return NULL;
}

static void *
pc_consumer(void *arg)
{
	struct pc *p = arg;
	uint64_t v;

	while (quay_pq_pop_wait(p->pq, &v, NULL, -1) == 0) {
		p->sum += v & 0xffffffffu;
		p->count++;
	}
	return NULL;
}

static void
test_wait_ping_pong(void **state)
{
	for (unsigned flags = 0; flags <= QUAY_PQ_WEIGHTED; flags++) {
		quay_pq *pq = pq_new(3, 1, 8, flags, NULL);
		struct pc prod[2] = { { pq, 0, 20000, 0, 0 }, { pq, 1, 20000, 0, 0 } };
		struct pc cons[2] = { { pq, 0, 0, 0, 0 }, { pq, 1, 0, 0, 0 } };
		pthread_t tp[2], tc[2];

		(void)state;
		for (int i = 0; i < 2; i++) {
			assert_int_equal(pthread_create(&tc[i], NULL, pc_consumer, &cons[i]), 0);
			assert_int_equal(pthread_create(&tp[i], NULL, pc_producer, &prod[i]), 0);
		}
		for (int i = 0; i < 2; i++)
			assert_true(qt_join_within(tp[i], 4 * JOIN_MS));
		quay_pq_close(pq);
		for (int i = 0; i < 2; i++)
			assert_true(qt_join_within(tc[i], JOIN_MS));
		assert_int_equal(cons[0].count + cons[1].count, 40000);
		assert_int_equal(cons[0].sum + cons[1].sum, 2 * (20000ull * 20001 / 2));
		quay_pq_destroy(pq);
	}
}

/* Each run takes the barrier path it claims. */
static void
test_sleep_barrier_path(void **state)
{
	quay_pq *pq = pq_new(1, 1, 8, 0, NULL);
	bool fence = getenv("QUAY_NO_MEMBARRIER") != NULL;

	(void)state;
	if (fence)
		assert_true(pq->flags & QUAYI_PQ_F_FENCE);
	else if (syscall(SYS_membarrier, 0 /* QUERY */, 0) > 0)
		assert_false(pq->flags & QUAYI_PQ_F_FENCE);
	print_message("pq sleepers use %s\n",
	    (pq->flags & QUAYI_PQ_F_FENCE) ? "a full fence" : "membarrier(2)");
	quay_pq_destroy(pq);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_getters),
		cmocka_unit_test(test_init_caller_memory),
		cmocka_unit_test(test_bad_opts),
		cmocka_unit_test(test_bad_calls),
		cmocka_unit_test(test_strict_order_and_full),
		cmocka_unit_test(test_bursts),
		cmocka_unit_test(test_close),
		cmocka_unit_test(test_close_drains_every_level),
		cmocka_unit_test(test_property_strict),
		cmocka_unit_test(test_property_weighted),
		cmocka_unit_test(test_weighted_share),
	};
	const struct CMUnitTest wait_tests[] = {
		cmocka_unit_test(test_sleep_barrier_path),
		cmocka_unit_test(test_wait_timeouts),
		cmocka_unit_test(test_pop_wait_wakes_on_any_level),
		cmocka_unit_test(test_push_wait_wakes_on_pop),
		cmocka_unit_test(test_close_wakes_waiters),
		cmocka_unit_test(test_wait_ping_pong),
	};
	int status, fails;
	pid_t pid;

	if (argc > 1 && strcmp(argv[1], "--wait-only") == 0)
		return cmocka_run_group_tests_name("pq-wait (fence)", wait_tests, NULL, NULL);
	fails = cmocka_run_group_tests_name("pq", tests, NULL, NULL);
	fails += cmocka_run_group_tests_name("pq-wait", wait_tests, NULL, NULL);
	/* The fence fallback is chosen once per process: re-run the waiting
	 * tests in a child that has it. */
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		char *args[] = { argv[0], (char *)"--wait-only", NULL };
		setenv("QUAY_NO_MEMBARRIER", "1", 1);
		execv("/proc/self/exe", args);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fails++;
	return fails;
}
