/* SPDX-License-Identifier: MIT */
/*
 * example.c: a C program benchmarking its own use of quay through the
 * shim (docs/BENCHMARKS.md, "Writing a benchmark in C").
 *
 * "example/ring_burst/<n>": one thread pushes a burst of n 8-byte values
 * into a quay ring and pops them back. The ring is made by the setup hook
 * and freed by the teardown hook (once per run, outside the timing); the
 * body checks that every value comes back once and in order, and fails
 * the run (exit status 1) otherwise. QUAY_BENCH_FAULT=dup makes it
 * corrupt one value, to see the check fail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/quay.h>

#include "quay_bench.h"

struct ctx {
	quay_ring *ring;
	int fault;
};

static void
setup(const qb_state *st, void *arg)
{
	struct ctx *c = arg;
	(void)st;
	if (quay_ring_create(1024, sizeof(uint64_t), QUAY_RING_SP | QUAY_RING_SC, &c->ring) != 0)
		abort();
}

static void
teardown(const qb_state *st, void *arg)
{
	struct ctx *c = arg;
	(void)st;
	quay_ring_destroy(c->ring);
	c->ring = NULL;
}

static void
bm_ring_burst(qb_state *st, void *arg)
{
	struct ctx *c = arg;
	const size_t n = (size_t)qb_range_of(st, 0);
	uint64_t in[64], out[64], next = 1;

	/* One call per run: the loop below is plain C. */
	for (uint64_t iters; (iters = qb_batch(st)) != 0;) {
		for (uint64_t it = 0; it < iters; it++) {
			for (size_t i = 0; i < n; i++)
				in[i] = next + i;
			if (c->fault && it == 10)
				in[0] = next - 1; /* a repeat of the last value */
			if (quay_ring_push_burst(c->ring, in, n) != n || quay_ring_pop_burst(c->ring, out, n) != n) {
				qb_skip_with_error(st, "the ring refused a burst");
				return;
			}
			for (size_t i = 0; i < n; i++) {
				if (out[i] != next + i) {
					qb_skip_with_errorf(st, "got %llu, expected %llu", (unsigned long long)out[i],
					    (unsigned long long)(next + i));
					return;
				}
			}
			next += n;
		}
	}
	qb_set_items_processed(st, (int64_t)(next - 1));
	/* Seconds per message: a rate, inverted (printed 2.1n = 2.1 ns). */
	qb_counter(st, "s_per_msg", (double)(next - 1), QB_COUNTER_RATE | QB_COUNTER_INVERT);
}

int
main(int argc, char **argv)
{
	static struct ctx c;
	const char *f = getenv("QUAY_BENCH_FAULT");
	c.fault = f != NULL && strcmp(f, "dup") == 0;

	qb_bench *b = qb_register("example/ring_burst", bm_ring_burst, &c);
	QB_ARGS(b, 1);
	QB_ARGS(b, 8);
	QB_ARGS(b, 32);
	qb_setup(b, setup, &c);
	qb_teardown(b, teardown, &c);
	qb_add_context("quay_version", QUAY_VERSION_STRING);
	return qb_main(argc, argv);
}
