/* SPDX-License-Identifier: MIT */
/*
 * fanout: one publisher sends orders on subjects orders.<side>.<region>;
 * an auditor sees everything (orders.>), a European desk sees
 * orders.*.eu, and a queue group of three workers shares orders.buy.*
 * (each buy order goes to exactly one worker). Unsubscribing wakes every
 * receiver with -EPIPE. Exits 1 if any count is wrong.
 *
 *   build/examples/fanout
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#include <quay/bus.h>

#define ORDERS 30000
#define WORKERS 3

static const char *const subjects[] = { "orders.buy.eu", "orders.sell.eu", "orders.buy.us" };

struct reader {
	quay_sub *sub; /* the subscription this thread drains */
	uint64_t got;  /* messages it received */
	pthread_t th;
};

static void *
reader_main(void *arg)
{
	struct reader *r = arg;
	quay_msg *m;

	/* Sleeps while the queue is empty; -EPIPE once unsubscribed. */
	while (quay_sub_receive(r->sub, &m, -1) == 0) {
		r->got++;
		quay_msg_unref(m); /* every delivery holds its own reference */
	}
	return NULL;
}

static int
subscribe(quay_bus *bus, const char *pattern, const char *group, struct reader *r)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;

	o.policy = QUAY_SUB_BLOCK; /* lossless: the publisher waits (the default rejects) */
	o.group = group;
	o.block_timeout_ns = -1;
	r->got = 0;
	if (quay_bus_subscribe(bus, pattern, &o, &r->sub) != 0)
		return -1;
	return pthread_create(&r->th, NULL, reader_main, r) == 0 ? 0 : -1;
}

int
main(void)
{
	quay_pool *pool = NULL;
	quay_bus *bus = NULL;
	struct reader audit, eu, workers[WORKERS];
	quay_sub *all[2 + WORKERS];
	uint64_t work = 0;
	int rc = 1;

	if (quay_pool_create((size_t)16 << 20, NULL, &pool) != 0 || quay_bus_create(NULL, &bus) != 0)
		goto out;
	if (subscribe(bus, "orders.>", NULL, &audit) != 0 || subscribe(bus, "orders.*.eu", NULL, &eu) != 0)
		goto out;
	for (int i = 0; i < WORKERS; i++)
		if (subscribe(bus, "orders.buy.*", "workers", &workers[i]) != 0)
			goto out;

	for (uint32_t i = 0; i < ORDERS; i++) {
		quay_msg *m;
		if (quay_msg_new_wait(pool, &i, sizeof(i), -1, &m) != 0)
			goto out;
		/* Returns how many targets got it; the group counts once. */
		if (quay_bus_publish(bus, subjects[i % 3], m) < 0)
			goto out;
	}

	/* Wait until the queues are empty, then stop the readers. */
	all[0] = audit.sub;
	all[1] = eu.sub;
	for (int i = 0; i < WORKERS; i++)
		all[2 + i] = workers[i].sub;
	for (int i = 0; i < 2 + WORKERS; i++) {
		while (quay_sub_pending(all[i]) > 0)
			sched_yield();
		quay_bus_unsubscribe(all[i]); /* the reader wakes with -EPIPE */
	}
	pthread_join(audit.th, NULL);
	pthread_join(eu.th, NULL);
	for (int i = 0; i < WORKERS; i++) {
		pthread_join(workers[i].th, NULL);
		printf("worker %d: %" PRIu64 " buy orders\n", i, workers[i].got);
		work += workers[i].got;
	}
	printf("audit %" PRIu64 ", eu desk %" PRIu64 ", workers together %" PRIu64 "\n", audit.got, eu.got,
	    work);
	rc = audit.got == ORDERS && eu.got == 2 * ORDERS / 3 && work == 2 * ORDERS / 3 ? 0 : 1;
	if (rc != 0)
		fprintf(stderr, "fanout: wrong counts\n");
out:
	quay_bus_destroy(bus);
	if (pool != NULL && quay_pool_destroy(pool) != 0)
		rc = 1;
	return rc;
}
