/* SPDX-License-Identifier: MIT */
/*
 * quickstart: four producer threads send numbered orders through one
 * bounded quay ring to two consumer threads, which sleep (not spin) when
 * the ring is empty. Closing the ring tells the consumers to finish.
 *
 *   build/examples/quickstart
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include <quay/quay.h>

#define PRODUCERS 4
#define CONSUMERS 2
#define ORDERS_EACH 250000

struct order { /* 16 bytes: any multiple of 8 works */
	uint32_t producer;
	uint32_t seq;
	uint64_t amount_cents;
};

static quay_ring *ring;
static uint64_t received[CONSUMERS], total_cents[CONSUMERS];

static void *
producer(void *arg)
{
	struct order o = { .producer = (uint32_t)(uintptr_t)arg };

	for (o.seq = 0; o.seq < ORDERS_EACH; o.seq++) {
		o.amount_cents = 100 + o.seq % 900;
		/* Sleeps while the ring is full; fails only once it is closed. */
		if (quay_ring_push_wait(ring, &o, -1) != 0)
			break;
	}
	return NULL;
}

static void *
consumer(void *arg)
{
	size_t id = (size_t)(uintptr_t)arg;
	struct order o;

	/* -EPIPE: closed and everything already taken. */
	while (quay_ring_pop_wait(ring, &o, -1) == 0) {
		received[id]++;
		total_cents[id] += o.amount_cents;
	}
	return NULL;
}

int
main(void)
{
	pthread_t prod[PRODUCERS], cons[CONSUMERS];
	struct timespec t0, t1;
	uint64_t got = 0, cents = 0, want_cents = 0;
	int rc;

	rc = quay_ring_create(1024, sizeof(struct order), 0 /* MPMC */, &ring);
	if (rc != 0) {
		fprintf(stderr, "quay_ring_create: %s\n", quay_strerror(rc));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < CONSUMERS; i++)
		pthread_create(&cons[i], NULL, consumer, (void *)(uintptr_t)i);
	for (size_t i = 0; i < PRODUCERS; i++)
		pthread_create(&prod[i], NULL, producer, (void *)(uintptr_t)i);
	for (size_t i = 0; i < PRODUCERS; i++)
		pthread_join(prod[i], NULL);
	quay_ring_close(ring); /* consumers drain what is left, then stop */
	for (size_t i = 0; i < CONSUMERS; i++)
		pthread_join(cons[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	for (size_t i = 0; i < CONSUMERS; i++) {
		printf("consumer %zu received %" PRIu64 " orders\n", i, received[i]);
		got += received[i];
		cents += total_cents[i];
	}
	for (uint32_t s = 0; s < ORDERS_EACH; s++)
		want_cents += PRODUCERS * (100 + s % 900);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%d producers sent %d orders; received %" PRIu64 ", total %" PRIu64 " cents (expected %" PRIu64
	       ") in %.3f s (%.1f M orders/s)\n",
	    PRODUCERS, PRODUCERS * ORDERS_EACH, got, cents, want_cents, secs, (double)got / secs / 1e6);
	rc = (got == (uint64_t)PRODUCERS * ORDERS_EACH && cents == want_cents) ? 0 : 1;
	printf("%s\n", rc == 0 ? "OK: every order arrived exactly once" : "MISMATCH");
	quay_ring_destroy(ring);
	return rc;
}
