/* SPDX-License-Identifier: MIT */
/*
 * The callable copies of the inline API (src/inline_export.c), as an FFI
 * binding or dlsym() user sees them. Linked against the SHARED libquay
 * and deliberately without any quay header: the prototypes below are
 * written out by hand, so every call goes to the exported symbol, not to
 * an inline body.
 */
#include "quay_test.h"

#include <dlfcn.h>

#ifdef QUAY_RING_H
#error "this test must not include the quay headers"
#endif

/* Hand-written prototypes (an FFI binding's view of libquay). */
typedef struct quay_ring quay_ring;
extern int quay_ring_create(size_t capacity, size_t elem_size, unsigned flags, quay_ring **out);
extern void quay_ring_destroy(quay_ring *r);
extern void quay_ring_close(quay_ring *r);
extern int quay_ring_push(quay_ring *r, const void *elem);
extern int quay_ring_pop(quay_ring *r, void *out);
extern size_t quay_ring_push_burst(quay_ring *r, const void *elems, size_t n);
extern size_t quay_ring_pop_burst(quay_ring *r, void *out, size_t n);
extern int quay_ring_push_bulk(quay_ring *r, const void *elems, size_t n);
extern int quay_ring_pop_bulk(quay_ring *r, void *out, size_t n);
extern bool quay_ring_is_closed(const quay_ring *r);
extern size_t quay_ring_count(const quay_ring *r);
extern size_t quay_ring_capacity(const quay_ring *r);
extern size_t quay_ring_elem_size(const quay_ring *r);

/* Every function the headers define inline. */
static const char *const inline_api[] = {
	"quay_ring_push",
	"quay_ring_pop",
	"quay_ring_push_burst",
	"quay_ring_pop_burst",
	"quay_ring_push_bulk",
	"quay_ring_pop_bulk",
	"quay_ring_is_closed",
	"quay_ring_count",
	"quay_ring_capacity",
	"quay_ring_elem_size",
};

static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static void
test_symbols_exported(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(inline_api) / sizeof(inline_api[0]); i++) {
		void *sym;
		Dl_info info;

		dlerror();
		sym = dlsym(RTLD_DEFAULT, inline_api[i]);
		if (sym == NULL)
			fail_msg("libquay does not export %s (%s)", inline_api[i], dlerror());
		/* ... from the shared library, not from this program. */
		assert_true(dladdr(sym, &info) != 0);
		assert_non_null(info.dli_fname);
		if (strstr(base_name(info.dli_fname), "libquay") == NULL)
			fail_msg("%s resolves to %s, not libquay", inline_api[i], info.dli_fname);
	}
	/* The private inline helpers stay private. */
	assert_null(dlsym(RTLD_DEFAULT, "quayi_ring_claim_push"));
	assert_null(dlsym(RTLD_DEFAULT, "quayi_ring_fill"));
}

static void
test_calls_through_exports(void **state)
{
	quay_ring *r = NULL;
	uint64_t v, out, buf[4] = { 10, 11, 12, 13 }, got[4];

	(void)state;
	assert_int_equal(quay_ring_create(4, 8, 0, &r), 0);
	assert_int_equal(quay_ring_capacity(r), 4);
	assert_int_equal(quay_ring_elem_size(r), 8);
	assert_int_equal(quay_ring_count(r), 0);
	assert_false(quay_ring_is_closed(r));

	v = 1;
	assert_int_equal(quay_ring_push(r, &v), 0);
	v = 2;
	assert_int_equal(quay_ring_push(r, &v), 0);
	assert_int_equal(quay_ring_count(r), 2);
	assert_int_equal(quay_ring_push_burst(r, buf, 4), 2); /* 2 free */
	assert_int_equal(quay_ring_count(r), 4);
	assert_int_equal(quay_ring_push(r, &v), -EAGAIN);
	assert_int_equal(quay_ring_pop(r, &out), 0);
	assert_int_equal(out, 1);
	assert_int_equal(quay_ring_pop_burst(r, got, 4), 3);
	assert_int_equal(got[0], 2);
	assert_int_equal(got[1], 10);
	assert_int_equal(got[2], 11);
	assert_int_equal(quay_ring_pop(r, &out), -EAGAIN);

	assert_int_equal(quay_ring_push_bulk(r, buf, 5), -EINVAL);
	assert_int_equal(quay_ring_push_bulk(r, buf, 3), 0);
	assert_int_equal(quay_ring_push_bulk(r, buf, 2), -EAGAIN);
	assert_int_equal(quay_ring_pop_bulk(r, got, 4), -EAGAIN);
	assert_int_equal(quay_ring_pop_bulk(r, got, 3), 0);
	assert_int_equal(got[2], 12);

	assert_int_equal(quay_ring_push(NULL, &v), -EINVAL);
	assert_int_equal(quay_ring_count(NULL), 0);

	quay_ring_close(r);
	assert_true(quay_ring_is_closed(r));
	assert_int_equal(quay_ring_push(r, &v), -EPIPE);
	assert_int_equal(quay_ring_pop(r, &out), -EPIPE);
	quay_ring_destroy(r);
}

/* The same through pointers from dlsym, as a binding would do it. */
static void
test_calls_through_dlsym(void **state)
{
	int (*push)(quay_ring *, const void *);
	int (*pop)(quay_ring *, void *);
	size_t (*count)(const quay_ring *);
	void *p;
	quay_ring *r = NULL;
	uint64_t v = 99, out = 0;

	(void)state;
	p = dlsym(RTLD_DEFAULT, "quay_ring_push");
	assert_non_null(p);
	memcpy(&push, &p, sizeof(p));
	p = dlsym(RTLD_DEFAULT, "quay_ring_pop");
	assert_non_null(p);
	memcpy(&pop, &p, sizeof(p));
	p = dlsym(RTLD_DEFAULT, "quay_ring_count");
	assert_non_null(p);
	memcpy(&count, &p, sizeof(p));

	assert_int_equal(quay_ring_create(2, 8, 3u, &r), 0);
	assert_int_equal(push(r, &v), 0);
	assert_int_equal(count(r), 1);
	assert_int_equal(pop(r, &out), 0);
	assert_int_equal(out, 99);
	assert_int_equal(count(r), 0);
	assert_int_equal(pop(r, &out), -EAGAIN);
	quay_ring_destroy(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_symbols_exported),
		QT_TEST(test_calls_through_exports),
		QT_TEST(test_calls_through_dlsym),
	};

	return cmocka_run_group_tests_name("inline-export", tests, NULL, NULL);
}
