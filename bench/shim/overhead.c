/* SPDX-License-Identifier: MIT */
/*
 * overhead.c: what the C shim costs, against the same bodies run by a
 * native C++ loop (overhead_native.cc), in one binary and one run.
 *
 *   <how>/empty       an empty body (the loop itself)
 *   <how>/ring_pair   push one value into a quay SPSC ring, pop it, check it
 *
 * <how> is native (for (auto _ : state) in C++), shim_keep_running
 * (while (qb_keep_running(st)): one out-of-line call per iteration) or
 * shim_batch (qb_batch: one call per run, the loop in C).
 */
#include <quay/quay.h>

#include "quay_bench.h"

void qb_overhead_register_native(void); /* overhead_native.cc */

static void
keep_running_empty(qb_state *st, void *arg)
{
	(void)arg;
	while (qb_keep_running(st))
		qb_clobber_memory();
}

static void
batch_empty(qb_state *st, void *arg)
{
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t i = 0; i < n; i++)
			qb_clobber_memory();
}

static quay_ring *
make_ring(void)
{
	quay_ring *r = NULL;
	quay_ring_create(1024, sizeof(uint64_t), QUAY_RING_SP | QUAY_RING_SC, &r);
	return r;
}

/* always_inline: GCC otherwise keeps this (the inlined ring calls are
 * large) as a call per iteration, which the C++ loop does not make. */
static inline __attribute__((always_inline)) int
pair(quay_ring *r, uint64_t i)
{
	uint64_t v = 0;
	return quay_ring_push(r, &i) == 0 && quay_ring_pop(r, &v) == 0 && v == i;
}

static void
keep_running_ring(qb_state *st, void *arg)
{
	quay_ring *r = make_ring();
	uint64_t i = 0, bad = 0;
	(void)arg;
	while (qb_keep_running(st))
		bad += !pair(r, i++);
	quay_ring_destroy(r);
	if (bad != 0)
		qb_skip_with_error(st, "push/pop pair returned the wrong value");
	qb_set_items_processed(st, (int64_t)i);
}

static void
batch_ring(qb_state *st, void *arg)
{
	quay_ring *r = make_ring();
	uint64_t i = 0, bad = 0;
	(void)arg;
	for (uint64_t n; (n = qb_batch(st)) != 0;)
		for (uint64_t k = 0; k < n; k++)
			bad += !pair(r, i++);
	quay_ring_destroy(r);
	if (bad != 0)
		qb_skip_with_error(st, "push/pop pair returned the wrong value");
	qb_set_items_processed(st, (int64_t)i);
}

int
main(int argc, char **argv)
{
	qb_overhead_register_native();
	qb_register("shim_keep_running/empty", keep_running_empty, NULL);
	qb_register("shim_batch/empty", batch_empty, NULL);
	qb_register("shim_keep_running/ring_pair", keep_running_ring, NULL);
	qb_register("shim_batch/ring_pair", batch_ring, NULL);
	return qb_main(argc, argv);
}
