/* SPDX-License-Identifier: MIT */
/*
 * Single-threaded unit tests of quay/ring.h: every public call with valid
 * input in all four producer/consumer modes (and with both ways of making
 * a ring), the bad-input table of TESTING.md 5.4 and the R3 edge cases
 * (capacity 1/2/max, every element size, positions next to the 63-bit
 * wrap-around and next to UINT32_MAX).
 *
 * The waiting calls and close are in test_ring_wait.c, which meson runs
 * twice (with and without membarrier(2)).
 */
#include "quay_test.h"

#include <limits.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <quay/quay.h>

#include "../../src/quay_internal.h"

/* ASan (and its huge shadow mapping) does not mix with RLIMIT_AS. */
#if defined(__SANITIZE_ADDRESS__)
#define QT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QT_ASAN 1
#endif
#endif

#define POS_MAX (UINT64_MAX >> 1) /* the last 63-bit position */

/* ---- fixture ------------------------------------------------------- */

struct fx {
	const struct qt_mode *mode;
	quay_ring *r;
	void *mem; /* caller memory (quay_ring_init), or NULL */
	size_t cap, esz;
};

static quay_ring *
ring_new(const struct qt_mode *m, size_t cap, size_t esz, void **mem)
{
	quay_ring *r = NULL;

	*mem = NULL;
	if (m->caller_mem) {
		size_t size = quay_ring_memsize(cap, esz);

		assert_true(size > 0);
		size = (size + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
		*mem = aligned_alloc(64, size);
		assert_non_null(*mem);
		memset(*mem, 0xa5, size); /* init must set every field */
		assert_int_equal(quay_ring_init(*mem, cap, esz, m->flags), 0);
		r = *mem;
	} else {
		assert_int_equal(quay_ring_create(cap, esz, m->flags, &r), 0);
		assert_non_null(r);
	}
	return r;
}

static void
ring_free(quay_ring *r, void *mem)
{
	/* For a ring in caller memory destroy must do nothing: were it to free
	 * the memory, the free below would be a double free (glibc and ASan
	 * abort). */
	quay_ring_destroy(r);
	free(mem);
}

static void
fx_reshape(struct fx *f, size_t cap, size_t esz)
{
	ring_free(f->r, f->mem);
	f->r = NULL;
	f->mem = NULL;
	f->r = ring_new(f->mode, cap, esz, &f->mem);
	f->cap = cap;
	f->esz = esz;
}

static int
fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	f->mode = QT_MODE(state);
	f->r = ring_new(f->mode, 8, 8, &f->mem);
	f->cap = 8;
	f->esz = 8;
	*state = f;
	return 0;
}

static int
fx_teardown(void **state)
{
	struct fx *f = *state;

	ring_free(f->r, f->mem);
	free(f);
	return 0;
}

/* Element contents for value v: every byte depends on v and its offset. */
static void
fill_elem(void *dst, size_t esz, uint64_t v)
{
	unsigned char *d = dst;

	for (size_t i = 0; i < esz; i += 8) {
		uint64_t w = (v + 1) * UINT64_C(0x9E3779B97F4A7C15) ^ ((uint64_t)i << 48) ^ i;
		memcpy(d + i, &w, 8);
	}
}

static bool
elem_is(const void *src, size_t esz, uint64_t v)
{
	unsigned char want[QUAY_RING_ELEM_MAX];

	fill_elem(want, esz, v);
	return memcmp(src, want, esz) == 0;
}

static void
assert_elem(const void *src, size_t esz, uint64_t v)
{
	if (!elem_is(src, esz, v))
		fail_msg("element mismatch: expected value %llu (esz %zu)", (unsigned long long)v, esz);
}

/* ---- valid input, every mode ---------------------------------------- */

static void
test_shape_accessors(void **state)
{
	struct fx *f = *state;
	static const size_t shapes[][2] = {
		{ 1, 8 },
		{ 2, 16 },
		{ 8, 8 },
		{ 64, 24 },
		{ 1024, 256 },
		{ 4, QUAY_RING_ELEM_MAX },
	};

	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		fx_reshape(f, shapes[i][0], shapes[i][1]);
		assert_int_equal((uintptr_t)f->r % 64, 0);
		assert_int_equal(quay_ring_capacity(f->r), shapes[i][0]);
		assert_int_equal(quay_ring_elem_size(f->r), shapes[i][1]);
		assert_int_equal(quay_ring_count(f->r), 0);
		assert_false(quay_ring_is_closed(f->r));
	}
}

static void
test_push_pop_fifo(void **state)
{
	struct fx *f = *state;
	uint64_t v, out, next_in = 100, next_out = 100;

	/* Fill: count follows each push; the 9th push finds it full. */
	for (size_t i = 0; i < 8; i++) {
		v = next_in++;
		assert_int_equal(quay_ring_push(f->r, &v), 0);
		assert_int_equal(quay_ring_count(f->r), i + 1);
	}
	v = 999;
	assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
	assert_int_equal(quay_ring_count(f->r), 8);

	/* Drain in order; the full push wrote nothing. */
	for (size_t i = 0; i < 8; i++) {
		out = 0;
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, next_out++);
		assert_int_equal(quay_ring_count(f->r), 7 - i);
	}
	out = 12345;
	assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
	assert_int_equal(out, 12345); /* untouched on failure */
	assert_int_equal(quay_ring_count(f->r), 0);

	/* Many laps with 1..8 elements in flight. */
	for (int lap = 0; lap < 50; lap++) {
		size_t depth = (size_t)lap % 8 + 1;
		for (size_t i = 0; i < depth; i++) {
			v = next_in++;
			assert_int_equal(quay_ring_push(f->r, &v), 0);
		}
		assert_int_equal(quay_ring_count(f->r), depth);
		for (size_t i = 0; i < depth; i++) {
			assert_int_equal(quay_ring_pop(f->r, &out), 0);
			assert_int_equal(out, next_out++);
		}
		assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
	}
}

static void
test_burst_partial_and_fifo(void **state)
{
	struct fx *f = *state;
	uint64_t in[20], out[20], v;
	uint64_t next_out = 0;

	for (size_t i = 0; i < 20; i++)
		in[i] = 1000 + i;

	/* 4 in, so 4 free: a burst of 10 pushes its first 4. */
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(quay_ring_push(f->r, &i), 0);
	assert_int_equal(quay_ring_push_burst(f->r, in, 10), 4);
	assert_int_equal(quay_ring_count(f->r), 8);
	assert_int_equal(quay_ring_push_burst(f->r, in, 10), 0); /* full */
	assert_int_equal(quay_ring_count(f->r), 8);

	memset(out, 0xee, sizeof(out));
	assert_int_equal(quay_ring_pop_burst(f->r, out, 10), 8);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(out[i], i);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(out[4 + i], in[i]);
	assert_int_equal(out[8], UINT64_C(0xeeeeeeeeeeeeeeee)); /* wrote 8, not 10 */
	assert_int_equal(quay_ring_count(f->r), 0);

	/* Empty: 0, out untouched. */
	memset(out, 0xee, sizeof(out));
	assert_int_equal(quay_ring_pop_burst(f->r, out, 5), 0);
	assert_int_equal(out[0], UINT64_C(0xeeeeeeeeeeeeeeee));

	/* n == 0 does nothing. */
	assert_int_equal(quay_ring_push_burst(f->r, in, 0), 0);
	assert_int_equal(quay_ring_count(f->r), 0);

	/* FIFO across bursts of various sizes, several laps. */
	uint64_t next_in = 0;
	for (int round = 0; round < 40; round++) {
		size_t want_in = (size_t)round % 5 + 1, want_out = (size_t)(round * 3) % 6 + 1;
		uint64_t batch[8];
		size_t room = 8 - quay_ring_count(f->r);
		size_t expect_in = want_in < room ? want_in : room;
		for (size_t i = 0; i < want_in; i++)
			batch[i] = next_in + i;
		assert_int_equal(quay_ring_push_burst(f->r, batch, want_in), expect_in);
		next_in += expect_in;

		size_t have = quay_ring_count(f->r);
		size_t expect_out = want_out < have ? want_out : have;
		assert_int_equal(quay_ring_pop_burst(f->r, out, want_out), expect_out);
		for (size_t i = 0; i < expect_out; i++)
			assert_int_equal(out[i], next_out++);
	}
	while (quay_ring_pop(f->r, &v) == 0)
		assert_int_equal(v, next_out++);
	assert_int_equal(next_out, next_in);

	/* A burst larger than the capacity fills the ring and stops. */
	assert_int_equal(quay_ring_push_burst(f->r, in, 20), 8);
	assert_int_equal(quay_ring_count(f->r), 8);
	assert_int_equal(quay_ring_pop_burst(f->r, out, 20), 8);
	for (size_t i = 0; i < 8; i++)
		assert_int_equal(out[i], in[i]);
	assert_int_equal(quay_ring_pop_burst(f->r, out, 0), 0);
}

static void
test_bulk_all_or_nothing(void **state)
{
	struct fx *f = *state;
	uint64_t in[9], out[9];

	for (size_t i = 0; i < 9; i++)
		in[i] = 500 + i;

	/* 4 in, 4 free: a bulk of 5 fails and changes nothing. */
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(quay_ring_push(f->r, &i), 0);
	assert_int_equal(quay_ring_push_bulk(f->r, in, 5), -EAGAIN);
	assert_int_equal(quay_ring_count(f->r), 4);
	assert_int_equal(quay_ring_push_bulk(f->r, in, 0), 0); /* n == 0 */
	assert_int_equal(quay_ring_count(f->r), 4);
	assert_int_equal(quay_ring_push_bulk(f->r, in, 9), -EINVAL); /* > capacity */
	assert_int_equal(quay_ring_count(f->r), 4);

	/* pop_bulk likewise: 5 of 4 fails, nothing removed. */
	memset(out, 0xee, sizeof(out));
	assert_int_equal(quay_ring_pop_bulk(f->r, out, 5), -EAGAIN);
	assert_int_equal(out[0], UINT64_C(0xeeeeeeeeeeeeeeee));
	assert_int_equal(quay_ring_count(f->r), 4);
	assert_int_equal(quay_ring_pop_bulk(f->r, out, 0), 0);
	assert_int_equal(quay_ring_count(f->r), 4);
	assert_int_equal(quay_ring_pop_bulk(f->r, out, 9), -EINVAL);
	assert_int_equal(quay_ring_count(f->r), 4);

	/* Exactly the free space fits. */
	assert_int_equal(quay_ring_push_bulk(f->r, in, 4), 0);
	assert_int_equal(quay_ring_count(f->r), 8);
	assert_int_equal(quay_ring_push_bulk(f->r, in, 1), -EAGAIN);
	assert_int_equal(quay_ring_pop_bulk(f->r, out, 3), 0);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(out[i], i);
	assert_int_equal(quay_ring_pop_bulk(f->r, out, 5), 0);
	assert_int_equal(out[0], 3);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(out[1 + i], in[i]);
	assert_int_equal(quay_ring_count(f->r), 0);
	assert_int_equal(quay_ring_pop_bulk(f->r, out, 1), -EAGAIN);

	/* A whole-capacity bulk, several laps, offset so that it wraps the
	 * slot array. */
	uint64_t v = 77;
	assert_int_equal(quay_ring_push(f->r, &v), 0);
	assert_int_equal(quay_ring_pop(f->r, &v), 0);
	for (int lap = 0; lap < 5; lap++) {
		for (size_t i = 0; i < 8; i++)
			in[i] = (uint64_t)lap * 100 + i;
		assert_int_equal(quay_ring_push_bulk(f->r, in, 8), 0);
		assert_int_equal(quay_ring_count(f->r), 8);
		assert_int_equal(quay_ring_pop_bulk(f->r, out, 8), 0);
		for (size_t i = 0; i < 8; i++)
			assert_int_equal(out[i], in[i]);
	}
}

static void
test_count_exact(void **state)
{
	struct fx *f = *state;
	uint64_t v = 0, buf[16];

	memset(buf, 0, sizeof(buf));
	fx_reshape(f, 16, 8);
	for (size_t i = 1; i <= 16; i++) {
		assert_int_equal(quay_ring_push(f->r, &v), 0);
		assert_int_equal(quay_ring_count(f->r), i);
	}
	assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
	assert_int_equal(quay_ring_count(f->r), 16);
	for (size_t i = 16; i > 0; i--) {
		assert_int_equal(quay_ring_pop(f->r, &v), 0);
		assert_int_equal(quay_ring_count(f->r), i - 1);
	}
	assert_int_equal(quay_ring_pop(f->r, &v), -EAGAIN);
	assert_int_equal(quay_ring_count(f->r), 0);

	/* Through bursts and bulks. */
	assert_int_equal(quay_ring_push_burst(f->r, buf, 5), 5);
	assert_int_equal(quay_ring_count(f->r), 5);
	assert_int_equal(quay_ring_push_bulk(f->r, buf, 11), 0);
	assert_int_equal(quay_ring_count(f->r), 16);
	assert_int_equal(quay_ring_pop_bulk(f->r, buf, 7), 0);
	assert_int_equal(quay_ring_count(f->r), 9);
	assert_int_equal(quay_ring_pop_burst(f->r, buf, 16), 9);
	assert_int_equal(quay_ring_count(f->r), 0);
}

/* ---- R3: capacity 1 and 2 ------------------------------------------ */

static void
test_capacity_1(void **state)
{
	struct fx *f = *state;
	uint64_t v, out, buf[3] = { 1, 2, 3 };

	fx_reshape(f, 1, 8);
	assert_int_equal(quay_ring_capacity(f->r), 1);
	for (uint64_t lap = 0; lap < 20; lap++) {
		v = lap;
		assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
		assert_int_equal(quay_ring_push(f->r, &v), 0); /* no spurious full */
		assert_int_equal(quay_ring_count(f->r), 1);
		assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
		assert_int_equal(quay_ring_count(f->r), 1);
		assert_int_equal(quay_ring_pop(f->r, &out), 0); /* no spurious empty */
		assert_int_equal(out, lap);
		assert_int_equal(quay_ring_count(f->r), 0);
	}
	assert_int_equal(quay_ring_push_burst(f->r, buf, 3), 1);
	assert_int_equal(quay_ring_push_burst(f->r, buf, 3), 0);
	assert_int_equal(quay_ring_pop_burst(f->r, &out, 3), 1);
	assert_int_equal(out, 1);
	assert_int_equal(quay_ring_push_bulk(f->r, buf, 2), -EINVAL);
	assert_int_equal(quay_ring_push_bulk(f->r, buf + 2, 1), 0);
	assert_int_equal(quay_ring_push_bulk(f->r, buf, 1), -EAGAIN);
	assert_int_equal(quay_ring_pop_bulk(f->r, buf, 2), -EINVAL);
	assert_int_equal(quay_ring_pop_bulk(f->r, &out, 1), 0);
	assert_int_equal(out, 3);
	assert_int_equal(quay_ring_pop_bulk(f->r, &out, 1), -EAGAIN);
	assert_int_equal(quay_ring_count(f->r), 0);
}

static void
test_capacity_2(void **state)
{
	struct fx *f = *state;
	uint64_t v, out, next_in = 0, next_out = 0;

	fx_reshape(f, 2, 8);
	for (int lap = 0; lap < 20; lap++) {
		v = next_in++;
		assert_int_equal(quay_ring_push(f->r, &v), 0);
		v = next_in++;
		assert_int_equal(quay_ring_push(f->r, &v), 0);
		assert_int_equal(quay_ring_count(f->r), 2);
		assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
		/* One out, one in: never a spurious full at half-lap offsets. */
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, next_out++);
		assert_int_equal(quay_ring_count(f->r), 1);
		v = next_in++;
		assert_int_equal(quay_ring_push(f->r, &v), 0);
		assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
		for (int i = 0; i < 2; i++) {
			assert_int_equal(quay_ring_pop(f->r, &out), 0);
			assert_int_equal(out, next_out++);
		}
		assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
		assert_int_equal(quay_ring_count(f->r), 0);
		/* Leave one in for odd laps so the next lap starts mid-array. */
		if (lap & 1) {
			v = next_in++;
			assert_int_equal(quay_ring_push(f->r, &v), 0);
			assert_int_equal(quay_ring_pop(f->r, &out), 0);
			assert_int_equal(out, next_out++);
		}
	}
}

/* ---- R3: element sizes --------------------------------------------- */

static void
test_elem_sizes_roundtrip(void **state)
{
	struct fx *f = *state;
	static const size_t sizes[] = { 8, 16, 24, 64, 256, QUAY_RING_ELEM_MAX };
	enum { CAP = 4, GUARD = 64 };
	static unsigned char in[CAP * QUAY_RING_ELEM_MAX], out[CAP * QUAY_RING_ELEM_MAX + GUARD];

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t esz = sizes[s];
		uint64_t val = 0;

		fx_reshape(f, CAP, esz);
		assert_int_equal(quay_ring_elem_size(f->r), esz);

		/* One at a time: byte-exact, and pop writes esz bytes only. */
		for (int lap = 0; lap < 6; lap++) {
			fill_elem(in, esz, val);
			assert_int_equal(quay_ring_push(f->r, in), 0);
			memset(out, 0xcc, esz + GUARD);
			assert_int_equal(quay_ring_pop(f->r, out), 0);
			assert_elem(out, esz, val);
			for (size_t i = esz; i < esz + GUARD; i++)
				assert_int_equal(out[i], 0xcc);
			val++;
		}

		/* Bursts and bulks: contiguous elements keep their order. */
		for (size_t i = 0; i < CAP; i++)
			fill_elem(in + i * esz, esz, val + i);
		assert_int_equal(quay_ring_push_burst(f->r, in, 3), 3);
		memset(out, 0xcc, sizeof(out));
		assert_int_equal(quay_ring_pop_burst(f->r, out, CAP), 3);
		for (size_t i = 0; i < 3; i++)
			assert_elem(out + i * esz, esz, val + i);
		for (size_t i = 3 * esz; i < 3 * esz + GUARD; i++)
			assert_int_equal(out[i], 0xcc);

		assert_int_equal(quay_ring_push_bulk(f->r, in, CAP), 0);
		memset(out, 0xcc, sizeof(out));
		assert_int_equal(quay_ring_pop_bulk(f->r, out, CAP), 0);
		for (size_t i = 0; i < CAP; i++)
			assert_elem(out + i * esz, esz, val + i);
		for (size_t i = CAP * esz; i < CAP * esz + GUARD; i++)
			assert_int_equal(out[i], 0xcc);
	}
}

/* ---- caller memory -------------------------------------------------- */

/* A ring made by init stays inside quay_ring_memsize() bytes: guard bytes
 * after it survive filling and draining every slot. */
static void
test_init_stays_in_memsize(void **state)
{
	static const size_t shapes[][2] = {
		{ 1, 8 },
		{ 2, 8 },
		{ 8, 24 },
		{ 16, 64 },
		{ 4, QUAY_RING_ELEM_MAX },
	};
	static const unsigned flags[] = { 0, QUAY_RING_SP, QUAY_RING_SC, QUAY_RING_SP | QUAY_RING_SC };
	enum { GUARD = 256 };
	unsigned char elem[QUAY_RING_ELEM_MAX];

	(void)state;
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		for (size_t fl = 0; fl < 4; fl++) {
			size_t cap = shapes[s][0], esz = shapes[s][1];
			size_t size = quay_ring_memsize(cap, esz);
			size_t alloc = (size + GUARD + 63) & ~(size_t)63;
			unsigned char *mem;
			quay_ring *r;

			assert_true(size >= cap * esz);
			mem = aligned_alloc(64, alloc);
			assert_non_null(mem);
			memset(mem, 0x5a, alloc);
			assert_int_equal(quay_ring_init((quay_ring *)(void *)mem, cap, esz, flags[fl]), 0);
			r = (quay_ring *)(void *)mem;
			for (int lap = 0; lap < 3; lap++) {
				for (size_t i = 0; i < cap; i++) {
					memset(elem, 0xff, esz);
					assert_int_equal(quay_ring_push(r, elem), 0);
				}
				assert_int_equal(quay_ring_push(r, elem), -EAGAIN);
				for (size_t i = 0; i < cap; i++)
					assert_int_equal(quay_ring_pop(r, elem), 0);
			}
			for (size_t i = size; i < alloc; i++) {
				if (mem[i] != 0x5a)
					fail_msg("byte %zu past memsize %zu written (cap %zu esz %zu)", i,
					    size, cap, esz);
			}
			/* destroy ignores rings made by init; free must then work. */
			quay_ring_destroy(r);
			free(mem);
		}
	}
}

static void
test_init_misaligned(void **state)
{
	size_t size = quay_ring_memsize(8, 8);
	size_t alloc = (size + 128 + 63) & ~(size_t)63;
	unsigned char *mem = aligned_alloc(64, alloc), *copy = malloc(alloc);
	static const size_t offs[] = { 1, 8, 16, 32, 48 };

	(void)state;
	assert_non_null(mem);
	assert_non_null(copy);
	memset(mem, 0x3c, alloc);
	memcpy(copy, mem, alloc);
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		assert_int_equal(quay_ring_init((quay_ring *)(void *)(mem + offs[i]), 8, 8, 0), -EINVAL);
		assert_memory_equal(mem, copy, alloc); /* nothing written */
	}
	/* 64-aligned is fine (also at an offset of one line). */
	assert_int_equal(quay_ring_init((quay_ring *)(void *)(mem + 64), 8, 8, 0), 0);
	free(mem);
	free(copy);
}

/* A failing init on a live ring leaves it as it was. */
static void
test_init_failure_keeps_ring(void **state)
{
	struct fx *f = *state;
	uint64_t v = 42, out = 0;

	if (!f->mode->caller_mem)
		skip();
	assert_int_equal(quay_ring_push(f->r, &v), 0);
	assert_int_equal(quay_ring_init(f->r, 3, 8, f->mode->flags), -EINVAL);
	assert_int_equal(quay_ring_init(f->r, 8, 12, f->mode->flags), -EINVAL);
	assert_int_equal(quay_ring_init(f->r, 8, 8, 0x4u), -EINVAL);
	assert_int_equal(quay_ring_count(f->r), 1);
	assert_int_equal(quay_ring_capacity(f->r), 8);
	assert_int_equal(quay_ring_pop(f->r, &out), 0);
	assert_int_equal(out, 42);
}

/* ---- memsize -------------------------------------------------------- */

static void
test_memsize_valid(void **state)
{
	(void)state;
	for (size_t cap = 1; cap <= 4096; cap <<= 1) {
		size_t prev = 0;
		for (size_t esz = 8; esz <= 64; esz += 8) {
			size_t m = quay_ring_memsize(cap, esz);
			assert_true(m >= cap * esz);
			assert_true(m > prev);
			prev = m;
		}
	}
	/* The largest shape is accepted and does not overflow (never
	 * allocated here). */
	assert_true(quay_ring_memsize(QUAY_RING_CAPACITY_MAX, 8) >= QUAY_RING_CAPACITY_MAX * 8);
	assert_true(quay_ring_memsize(QUAY_RING_CAPACITY_MAX, QUAY_RING_ELEM_MAX) >=
	    QUAY_RING_CAPACITY_MAX * QUAY_RING_ELEM_MAX);
	assert_true(quay_ring_memsize(1, QUAY_RING_ELEM_MAX) >= QUAY_RING_ELEM_MAX);
}

/* ---- bad input (TESTING.md 5.4) ----------------------------------- */

static const size_t bad_caps[] = {
	0,
	3,
	6,
	7,
	12,
	1000,
	(size_t)1 << 31,
	QUAY_RING_CAPACITY_MAX * 2,
	QUAY_RING_CAPACITY_MAX + 1,
	(size_t)-1,
	((size_t)-1 >> 1) + 1,
};
static const size_t bad_eszs[] = {
	0,
	1,
	4,
	12,
	20,
	QUAY_RING_ELEM_MAX + 8,
	QUAY_RING_ELEM_MAX * 2,
	(size_t)-1,
	(size_t)-8,
};
static const unsigned bad_flags[] = {
	0x4u,
	0x8u,
	0x80000000u,
	0x10000u,
	0x20000u,
	0x5u,
	0x10003u,
	~0u,
};

static void
test_memsize_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++)
		assert_int_equal(quay_ring_memsize(bad_caps[i], 8), 0);
	for (size_t i = 0; i < sizeof(bad_eszs) / sizeof(bad_eszs[0]); i++)
		assert_int_equal(quay_ring_memsize(8, bad_eszs[i]), 0);
}

static void
test_init_bad(void **state)
{
	size_t size = quay_ring_memsize(8, 8);
	size_t alloc = (size + 63) & ~(size_t)63;
	unsigned char *mem = aligned_alloc(64, alloc), *copy = malloc(alloc);
	quay_ring *r = (quay_ring *)(void *)mem;

	(void)state;
	assert_non_null(mem);
	assert_non_null(copy);
	memset(mem, 0x77, alloc);
	memcpy(copy, mem, alloc);

	assert_int_equal(quay_ring_init(NULL, 8, 8, 0), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++) {
		assert_int_equal(quay_ring_init(r, bad_caps[i], 8, 0), -EINVAL);
		assert_memory_equal(mem, copy, alloc);
	}
	for (size_t i = 0; i < sizeof(bad_eszs) / sizeof(bad_eszs[0]); i++) {
		assert_int_equal(quay_ring_init(r, 8, bad_eszs[i], 0), -EINVAL);
		assert_memory_equal(mem, copy, alloc);
	}
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		assert_int_equal(quay_ring_init(r, 8, 8, bad_flags[i]), -EINVAL);
		assert_memory_equal(mem, copy, alloc);
	}
	free(mem);
	free(copy);
}

static void
test_create_bad(void **state)
{
	quay_ring *const sentinel = (quay_ring *)(uintptr_t)0xdeadbee0;
	quay_ring *r;

	(void)state;
	for (size_t i = 0; i < sizeof(bad_caps) / sizeof(bad_caps[0]); i++) {
		r = sentinel;
		assert_int_equal(quay_ring_create(bad_caps[i], 8, 0, &r), -EINVAL);
		assert_ptr_equal(r, sentinel);
	}
	for (size_t i = 0; i < sizeof(bad_eszs) / sizeof(bad_eszs[0]); i++) {
		r = sentinel;
		assert_int_equal(quay_ring_create(8, bad_eszs[i], 0, &r), -EINVAL);
		assert_ptr_equal(r, sentinel);
	}
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		r = sentinel;
		assert_int_equal(quay_ring_create(8, 8, bad_flags[i], &r), -EINVAL);
		assert_ptr_equal(r, sentinel);
	}
	assert_int_equal(quay_ring_create(8, 8, 0, NULL), -EINVAL);
	assert_int_equal(quay_ring_create(0, 8, 0, NULL), -EINVAL);
}

/* create reports -ENOMEM (and leaves *out alone) when the allocation
 * fails: run in a child whose address space is capped at 512 MiB, and
 * ask for a 4 GiB ring. */
static void
test_create_enomem(void **state)
{
	pid_t pid;
	int status = 0;

	(void)state;
#ifdef QT_ASAN
	skip();
#endif
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { (rlim_t)512 << 20, (rlim_t)512 << 20 };
		quay_ring *const sentinel = (quay_ring *)(uintptr_t)0xdeadbee0;
		quay_ring *r = sentinel;
		int rc;

		if (setrlimit(RLIMIT_AS, &rl) != 0)
			_exit(3);
		rc = quay_ring_create((size_t)1 << 20, 4096, 0, &r);
		if (rc != -ENOMEM)
			_exit(rc == 0 ? 4 : 5);
		_exit(r == sentinel ? 0 : 6);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("child: %s",
		    WEXITSTATUS(status) == 3     ? "setrlimit failed" :
		        WEXITSTATUS(status) == 4 ? "create succeeded under the limit" :
		        WEXITSTATUS(status) == 5 ? "create failed, but not with -ENOMEM" :
		                                   "create failed but changed *out");
}

/* NULL ring, element and out for every call; failures change nothing. */
static void
test_null_args(void **state)
{
	struct fx *f = *state;
	uint64_t v = 7, out = 0xabcdef, buf[4] = { 1, 2, 3, 4 };

	assert_int_equal(quay_ring_push(NULL, &v), -EINVAL);
	assert_int_equal(quay_ring_push(f->r, NULL), -EINVAL);
	assert_int_equal(quay_ring_push_burst(NULL, buf, 4), 0);
	assert_int_equal(quay_ring_push_burst(f->r, NULL, 4), 0);
	assert_int_equal(quay_ring_push_bulk(NULL, buf, 4), -EINVAL);
	assert_int_equal(quay_ring_push_bulk(NULL, buf, 0), -EINVAL);
	assert_int_equal(quay_ring_push_bulk(f->r, NULL, 4), -EINVAL);
	assert_int_equal(quay_ring_push_wait(NULL, &v, 0), -EINVAL);
	assert_int_equal(quay_ring_push_wait(NULL, &v, -1), -EINVAL);
	assert_int_equal(quay_ring_push_wait(f->r, NULL, 0), -EINVAL);
	assert_int_equal(quay_ring_push_wait(f->r, NULL, -1), -EINVAL);
	assert_int_equal(quay_ring_count(f->r), 0);

	/* With one element in: the pops with NULL leave it there. */
	assert_int_equal(quay_ring_push(f->r, &v), 0);
	assert_int_equal(quay_ring_pop(NULL, &out), -EINVAL);
	assert_int_equal(out, 0xabcdef);
	assert_int_equal(quay_ring_pop(f->r, NULL), -EINVAL);
	assert_int_equal(quay_ring_pop_burst(NULL, &out, 1), 0);
	assert_int_equal(quay_ring_pop_burst(f->r, NULL, 1), 0);
	assert_int_equal(quay_ring_pop_bulk(NULL, &out, 1), -EINVAL);
	assert_int_equal(quay_ring_pop_bulk(NULL, &out, 0), -EINVAL);
	assert_int_equal(quay_ring_pop_bulk(f->r, NULL, 1), -EINVAL);
	assert_int_equal(quay_ring_pop_wait(NULL, &out, 0), -EINVAL);
	assert_int_equal(quay_ring_pop_wait(NULL, &out, -1), -EINVAL);
	assert_int_equal(quay_ring_pop_wait(f->r, NULL, 0), -EINVAL);
	assert_int_equal(quay_ring_pop_wait(f->r, NULL, -1), -EINVAL);
	assert_int_equal(out, 0xabcdef);
	assert_int_equal(quay_ring_count(f->r), 1);

	/* Queries and no-ops. */
	assert_int_equal(quay_ring_count(NULL), 0);
	assert_int_equal(quay_ring_capacity(NULL), 0);
	assert_int_equal(quay_ring_elem_size(NULL), 0);
	assert_false(quay_ring_is_closed(NULL));
	quay_ring_close(NULL);
	quay_ring_destroy(NULL);
	assert_int_equal(quayi_ring_test_set_position(NULL, 0), -EINVAL);

	assert_false(quay_ring_is_closed(f->r));
	assert_int_equal(quay_ring_pop(f->r, &out), 0);
	assert_int_equal(out, 7);
	assert_int_equal(quay_ring_count(f->r), 0);
}

/* ---- R3: wrap-around of the 63-bit positions ----------------------- */

static const uint64_t wrap_starts[] = {
	POS_MAX - 5,
	POS_MAX - 7,
	POS_MAX - 8,
	POS_MAX - 1,
	POS_MAX,
	UINT64_MAX - 3, /* bit 63 is dropped: POS_MAX - 3 */
	(uint64_t)UINT32_MAX - 5,
	(uint64_t)UINT32_MAX,
	((uint64_t)UINT32_MAX << 1) - 3,
	((uint64_t)1 << 62) - 3,
	(uint64_t)INT64_MAX - 2,
};

static void
test_wrap_push_pop(void **state)
{
	struct fx *f = *state;
	uint64_t v, out, in[10], buf[10];

	for (size_t s = 0; s < sizeof(wrap_starts) / sizeof(wrap_starts[0]); s++) {
		uint64_t start = wrap_starts[s] & POS_MAX, next_in = 0, next_out = 0;

		fx_reshape(f, 8, 8);
		assert_int_equal(quayi_ring_test_set_position(f->r, wrap_starts[s]), 0);
		assert_int_equal(quay_ring_count(f->r), 0);
		assert_int_equal(f->r->head, start);
		assert_int_equal(f->r->tail & POS_MAX, start);

		/* Fill across the wrap, one at a time. */
		assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
		for (size_t i = 0; i < 8; i++) {
			v = next_in++;
			assert_int_equal(quay_ring_push(f->r, &v), 0);
			assert_int_equal(quay_ring_count(f->r), i + 1);
		}
		assert_int_equal(f->r->tail & POS_MAX, (start + 8) & POS_MAX);
		assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
		assert_int_equal(quay_ring_count(f->r), 8);
		for (size_t i = 0; i < 3; i++) {
			assert_int_equal(quay_ring_pop(f->r, &out), 0);
			assert_int_equal(out, next_out++);
		}
		assert_int_equal(quay_ring_count(f->r), 5);
		for (size_t i = 0; i < 3; i++) {
			v = next_in++;
			assert_int_equal(quay_ring_push(f->r, &v), 0);
		}
		assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
		for (size_t i = 0; i < 8; i++) {
			assert_int_equal(quay_ring_pop(f->r, &out), 0);
			assert_int_equal(out, next_out++);
			assert_int_equal(quay_ring_count(f->r), 7 - i);
		}
		assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
		assert_int_equal(f->r->head, (start + 11) & POS_MAX);

		/* Bursts across the (next lap of the) wrap. */
		fx_reshape(f, 8, 8);
		assert_int_equal(quayi_ring_test_set_position(f->r, wrap_starts[s]), 0);
		next_in = next_out = 0;
		for (size_t i = 0; i < 10; i++)
			in[i] = next_in + i;
		assert_int_equal(quay_ring_push_burst(f->r, in, 10), 8);
		next_in += 8;
		assert_int_equal(quay_ring_count(f->r), 8);
		assert_int_equal(quay_ring_pop_burst(f->r, buf, 3), 3);
		for (size_t i = 0; i < 3; i++)
			assert_int_equal(buf[i], next_out++);
		for (size_t i = 0; i < 10; i++)
			in[i] = next_in + i;
		assert_int_equal(quay_ring_push_burst(f->r, in, 10), 3);
		next_in += 3;
		assert_int_equal(quay_ring_pop_burst(f->r, buf, 10), 8);
		for (size_t i = 0; i < 8; i++)
			assert_int_equal(buf[i], next_out++);
		assert_int_equal(quay_ring_count(f->r), 0);

		/* Bulks across the wrap. */
		fx_reshape(f, 8, 8);
		assert_int_equal(quayi_ring_test_set_position(f->r, wrap_starts[s]), 0);
		next_in = next_out = 0;
		for (size_t i = 0; i < 8; i++)
			in[i] = next_in + i;
		assert_int_equal(quay_ring_push_bulk(f->r, in, 5), 0);
		next_in += 5;
		for (size_t i = 0; i < 8; i++)
			in[i] = next_in + i;
		assert_int_equal(quay_ring_push_bulk(f->r, in, 4), -EAGAIN);
		assert_int_equal(quay_ring_count(f->r), 5);
		assert_int_equal(quay_ring_push_bulk(f->r, in, 3), 0);
		next_in += 3;
		assert_int_equal(quay_ring_count(f->r), 8);
		assert_int_equal(quay_ring_pop_bulk(f->r, buf, 9), -EINVAL);
		assert_int_equal(quay_ring_pop_bulk(f->r, buf, 6), 0);
		for (size_t i = 0; i < 6; i++)
			assert_int_equal(buf[i], next_out++);
		assert_int_equal(quay_ring_pop_bulk(f->r, buf, 3), -EAGAIN);
		assert_int_equal(quay_ring_count(f->r), 2);
		for (size_t i = 0; i < 8; i++)
			in[i] = next_in + i;
		assert_int_equal(quay_ring_push_bulk(f->r, in, 6), 0);
		next_in += 6;
		assert_int_equal(quay_ring_pop_bulk(f->r, buf, 8), 0);
		for (size_t i = 0; i < 8; i++)
			assert_int_equal(buf[i], next_out++);
		assert_int_equal(quay_ring_count(f->r), 0);
		assert_int_equal(next_in, next_out);
	}
}

/* Capacity 1 and 2 right at the wrap: the doubled sequence words of
 * neighbouring laps must stay apart there too. */
static void
test_wrap_small_capacity(void **state)
{
	struct fx *f = *state;
	uint64_t v, out;

	for (size_t cap = 1; cap <= 2; cap++) {
		for (uint64_t back = 0; back < 4; back++) {
			uint64_t next_in = 0, next_out = 0;

			fx_reshape(f, cap, 8);
			assert_int_equal(quayi_ring_test_set_position(f->r, POS_MAX - back), 0);
			for (int step = 0; step < 8; step++) {
				for (size_t i = 0; i < cap; i++) {
					v = next_in++;
					assert_int_equal(quay_ring_push(f->r, &v), 0);
				}
				assert_int_equal(quay_ring_count(f->r), cap);
				assert_int_equal(quay_ring_push(f->r, &v), -EAGAIN);
				for (size_t i = 0; i < cap; i++) {
					assert_int_equal(quay_ring_pop(f->r, &out), 0);
					assert_int_equal(out, next_out++);
				}
				assert_int_equal(quay_ring_pop(f->r, &out), -EAGAIN);
				assert_int_equal(quay_ring_count(f->r), 0);
			}
		}
	}
}

static void
test_set_position_bad(void **state)
{
	struct fx *f = *state;
	uint64_t v = 5, out = 0;

	assert_int_equal(quay_ring_push(f->r, &v), 0);
	assert_int_equal(quayi_ring_test_set_position(f->r, POS_MAX - 2), -EINVAL);
	assert_int_equal(quay_ring_count(f->r), 1);
	assert_int_equal(f->r->head, 0);
	assert_int_equal(quay_ring_pop(f->r, &out), 0);
	assert_int_equal(out, 5);

	/* Full ring too. */
	for (uint64_t i = 0; i < 8; i++)
		assert_int_equal(quay_ring_push(f->r, &i), 0);
	assert_int_equal(quayi_ring_test_set_position(f->r, 100), -EINVAL);
	assert_int_equal(quay_ring_count(f->r), 8);
	for (uint64_t i = 0; i < 8; i++) {
		assert_int_equal(quay_ring_pop(f->r, &out), 0);
		assert_int_equal(out, i);
	}

	/* Closed and empty. */
	quay_ring_close(f->r);
	assert_int_equal(quayi_ring_test_set_position(f->r, 100), -EINVAL);
	assert_true(quay_ring_is_closed(f->r));
	assert_int_equal(quay_ring_push(f->r, &v), -EPIPE);
	assert_int_equal(quay_ring_pop(f->r, &out), -EPIPE);
}

/* ---- model-based sequence test ------------------------------------ */

/*
 * Random sequences of every call (push, pop, bursts, bulks, waits with
 * timeout 0, close) checked step by step against a model FIFO: return
 * codes, contents and count. Runs for capacities 1..16, two element sizes
 * and start positions at 0, next to UINT32_MAX and next to the 63-bit
 * wrap, so every lap boundary is crossed many times.
 */
struct model_ctx {
	size_t cap, esz;
	uint64_t start;
	int op;
};

#define MCHECK(ctx, cond) \
	do { \
		if (!(cond)) \
			fail_msg("model: %s (cap %zu esz %zu start %#llx op %d)", #cond, (ctx)->cap, \
			    (ctx)->esz, (unsigned long long)(ctx)->start, (ctx)->op); \
	} while (0)

static void
model_run(struct fx *f, struct model_ctx *c, uint64_t seed)
{
	enum { MAXN = 20, OPS = 1500 };
	static unsigned char in[MAXN * 32], out[MAXN * 32];
	uint64_t rng = seed, next_in = 0, next_out = 0;
	bool closed = false, close_at_end = (seed & 1) != 0;
	size_t cap = c->cap, esz = c->esz;
	int push_bias = 50;

	fx_reshape(f, cap, esz);
	MCHECK(c, quayi_ring_test_set_position(f->r, c->start) == 0);
	for (c->op = 0; c->op < OPS; c->op++) {
		size_t count = (size_t)(next_in - next_out), room = cap - count;
		uint64_t r = qt_rand(&rng);
		bool push = (int)(r % 100) < push_bias;
		unsigned kind = (unsigned)(r >> 8) % 4;
		size_t n = (size_t)(r >> 16) % (cap + 3); /* 0..cap+2 */
		int rc;
		size_t k;

		if (c->op % 64 == 0) /* swing between full and empty */
			push_bias = (int)((r >> 32) % 3) * 25 + 25;
		if (close_at_end && c->op == OPS * 3 / 4) {
			quay_ring_close(f->r);
			closed = true;
		}
		for (size_t i = 0; i == 0 || (i < n && i < MAXN); i++)
			fill_elem(in + i * esz, esz, next_in + i);

		if (push) {
			switch (kind) {
			case 0:
				rc = quay_ring_push(f->r, in);
				MCHECK(c, rc == (closed ? -EPIPE : room == 0 ? -EAGAIN : 0));
				next_in += rc == 0;
				break;
			case 1:
				k = quay_ring_push_burst(f->r, in, n);
				MCHECK(c, k == (closed ? 0 : n < room ? n : room));
				next_in += k;
				break;
			case 2:
				if (n == 0)
					n = 1; /* n == 0 on a closed ring: not specified */
				rc = quay_ring_push_bulk(f->r, in, n);
				MCHECK(c,
				    rc ==
				        (n > cap         ? -EINVAL :
				                closed   ? -EPIPE :
				                n > room ? -EAGAIN :
				                           0));
				if (rc == 0)
					next_in += n;
				break;
			default:
				rc = quay_ring_push_wait(f->r, in, 0);
				MCHECK(c, rc == (closed ? -EPIPE : room == 0 ? -ETIMEDOUT : 0));
				next_in += rc == 0;
				break;
			}
		} else {
			memset(out, 0xcc, sizeof(out));
			switch (kind) {
			case 0:
				rc = quay_ring_pop(f->r, out);
				MCHECK(c, rc == (count ? 0 : closed ? -EPIPE : -EAGAIN));
				k = rc == 0;
				break;
			case 1:
				k = quay_ring_pop_burst(f->r, out, n);
				MCHECK(c, k == (n < count ? n : count));
				break;
			case 2:
				if (n == 0)
					n = 1;
				rc = quay_ring_pop_bulk(f->r, out, n);
				MCHECK(c,
				    rc ==
				        (n > cap           ? -EINVAL :
				                n <= count ? 0 :
				                closed     ? -EPIPE :
				                             -EAGAIN));
				k = rc == 0 ? n : 0;
				break;
			default:
				rc = quay_ring_pop_wait(f->r, out, 0);
				MCHECK(c, rc == (count ? 0 : closed ? -EPIPE : -ETIMEDOUT));
				k = rc == 0;
				break;
			}
			for (size_t i = 0; i < k; i++)
				MCHECK(c, elem_is(out + i * esz, esz, next_out + i));
			MCHECK(c, out[k * esz] == 0xcc);
			next_out += k;
		}
		MCHECK(c, quay_ring_count(f->r) == (size_t)(next_in - next_out));
		MCHECK(c, quay_ring_is_closed(f->r) == closed);
	}
}

static void
test_model_random(void **state)
{
	struct fx *f = *state;
	static const size_t caps[] = { 1, 2, 4, 8, 16 };
	static const size_t eszs[] = { 8, 24 };
	static const uint64_t starts[] = {
		0,
		(uint64_t)UINT32_MAX - 9,
		POS_MAX - 10,
		POS_MAX - 1,
		POS_MAX,
	};
	struct model_ctx c;
	uint64_t seed = UINT64_C(0x243F6A8885A308D3) ^ f->mode->flags;

	for (size_t ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++)
		for (size_t ei = 0; ei < sizeof(eszs) / sizeof(eszs[0]); ei++)
			for (size_t si = 0; si < sizeof(starts) / sizeof(starts[0]); si++) {
				c.cap = caps[ci];
				c.esz = eszs[ei];
				c.start = starts[si];
				c.op = 0;
				seed = seed * 6364136223846793005u + 1442695040888963407u;
				model_run(f, &c, seed | 1); /* with a close */
				seed = seed * 6364136223846793005u + 1442695040888963407u;
				model_run(f, &c, seed & ~(uint64_t)1); /* without */
			}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST_8(test_shape_accessors, fx_setup, fx_teardown),
		QT_TEST_8(test_push_pop_fifo, fx_setup, fx_teardown),
		QT_TEST_8(test_burst_partial_and_fifo, fx_setup, fx_teardown),
		QT_TEST_8(test_bulk_all_or_nothing, fx_setup, fx_teardown),
		QT_TEST_8(test_count_exact, fx_setup, fx_teardown),
		QT_TEST_8(test_capacity_1, fx_setup, fx_teardown),
		QT_TEST_8(test_capacity_2, fx_setup, fx_teardown),
		QT_TEST_8(test_elem_sizes_roundtrip, fx_setup, fx_teardown),
		QT_TEST(test_init_stays_in_memsize),
		QT_TEST(test_init_misaligned),
		QT_TEST_MODE(test_init_failure_keeps_ring, qt_mode_mpmc_mem, "MPMC init", fx_setup,
		    fx_teardown),
		QT_TEST_MODE(test_init_failure_keeps_ring, qt_mode_spsc_mem, "SPSC init", fx_setup,
		    fx_teardown),
		QT_TEST(test_memsize_valid),
		QT_TEST(test_memsize_bad),
		QT_TEST(test_init_bad),
		QT_TEST(test_create_bad),
		QT_TEST(test_create_enomem),
		QT_TEST_8(test_null_args, fx_setup, fx_teardown),
		QT_TEST_8(test_wrap_push_pop, fx_setup, fx_teardown),
		QT_TEST_4(test_wrap_small_capacity, fx_setup, fx_teardown),
		QT_TEST_4(test_set_position_bad, fx_setup, fx_teardown),
		QT_TEST_8(test_model_random, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
