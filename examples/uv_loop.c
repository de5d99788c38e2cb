/* SPDX-License-Identifier: MIT */
/*
 * uv_loop: epoll_loop.c with libuv: 100 bus subscriptions and 3 queues
 * served by one uv_loop_t through uv_poll_t handles on their quay
 * descriptors (docs/POLLING.md). Four publisher threads send 20,000
 * messages (some queue messages delayed by 5 ms); the poll callbacks
 * receive and ack them, and a uv timer fails the run if nothing arrives
 * for 10 s. Exits non-zero if a message is missing or seen twice.
 *
 * Each callback drains its object until the zero-wait receive finds
 * nothing, which re-arms the descriptor.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include <quay/quay.h>

#define NSUBS 100
#define NQUEUES 3
#define NPUB 4
#define PER_PUB 5000
#define TOTAL (NPUB * PER_PUB)

static quay_bus *bus;
static quay_pool *pool;
static quay_sub *subs[NSUBS];
static quay_queue *queues[NQUEUES];
static uv_poll_t polls[NSUBS + NQUEUES];
static uv_timer_t watchdog;
static unsigned char seen[TOTAL];
static int got, bad, last_got = -1;

static void *
publisher(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg, seed = id + 1;

	for (uint32_t i = 0; i < PER_PUB; i++) {
		uint32_t n = id * PER_PUB + i, to = (uint32_t)rand_r(&seed) % (NSUBS + NQUEUES);
		quay_msg *m;
		int rc;

		while (quay_msg_new(pool, &n, sizeof n, &m) != 0)
			usleep(100);
		if (to < NSUBS) {
			char subject[32];

			snprintf(subject, sizeof subject, "events.%u", to);
			while ((rc = quay_bus_publish(bus, subject, m)) == -EAGAIN)
				usleep(50);
		} else {
			if (i % 50 == 0)
				quay_msg_set_delay_ns(m, 5 * 1000 * 1000);
			while ((rc = quay_queue_send(queues[to - NSUBS], m)) == -EAGAIN)
				usleep(50);
		}
		if (rc < 0) {
			fprintf(stderr, "send: %s\n", quay_strerror(rc));
			exit(1);
		}
	}
	return NULL;
}

static void
count(const quay_msg *m)
{
	uint32_t n;

	memcpy(&n, quay_msg_body(m), sizeof n);
	if (n >= TOTAL || seen[n]++) {
		fprintf(stderr, "message %u: unknown or seen twice\n", n);
		bad = 1;
	}
	got++;
}

static void
stop_all(void)
{
	for (int i = 0; i < NSUBS + NQUEUES; i++)
		uv_poll_stop(&polls[i]);
	uv_timer_stop(&watchdog);
}

static void
on_readable(uv_poll_t *h, int status, int events)
{
	uintptr_t i = (uintptr_t)h->data;

	(void)events;
	if (status < 0) {
		fprintf(stderr, "poll: %s\n", uv_strerror(status));
		bad = 1;
		stop_all();
		return;
	}
	if (i < NSUBS) {
		quay_msg *m;

		while (quay_sub_receive(subs[i], &m, 0) == 0) {
			count(m);
			quay_msg_unref(m);
		}
	} else {
		quay_queue *q = queues[i - NSUBS];
		quay_lease l;

		while (quay_queue_receive(q, &l, 0) == 0) {
			count(l.msg);
			quay_queue_ack(q, &l);
			quay_msg_unref(l.msg);
		}
	}
	if (got == TOTAL)
		stop_all(); /* no active handle left: uv_run returns */
}

static void
on_watchdog(uv_timer_t *t)
{
	(void)t;
	if (got == last_got) {
		fprintf(stderr, "nothing for 10 s with %d of %d received\n", got, TOTAL);
		bad = 1;
		stop_all();
	}
	last_got = got;
}

int
main(void)
{
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	uv_loop_t *loop = uv_default_loop();
	pthread_t th[NPUB];

	if (quay_bus_create(NULL, &bus) != 0 || quay_pool_create((size_t)16 << 20, NULL, &pool) != 0)
		return 1;
	for (int i = 0; i < NSUBS + NQUEUES; i++) {
		char pattern[32];
		int fd;

		if (i < NSUBS) {
			snprintf(pattern, sizeof pattern, "events.%d", i);
			if (quay_bus_subscribe(bus, pattern, NULL, &subs[i]) != 0)
				return 1;
			fd = quay_sub_fd(subs[i]);
		} else {
			if (quay_queue_create(&qo, &queues[i - NSUBS]) != 0)
				return 1;
			fd = quay_queue_fd(queues[i - NSUBS]);
		}
		if (fd < 0 || uv_poll_init(loop, &polls[i], fd) != 0)
			return 1;
		polls[i].data = (void *)(uintptr_t)i;
		uv_poll_start(&polls[i], UV_READABLE, on_readable);
	}
	uv_timer_init(loop, &watchdog);
	uv_timer_start(&watchdog, on_watchdog, 10000, 10000);
	for (int i = 0; i < NPUB; i++)
		pthread_create(&th[i], NULL, publisher, (void *)(uintptr_t)i);

	uv_run(loop, UV_RUN_DEFAULT);

	for (int i = 0; i < NPUB; i++)
		pthread_join(th[i], NULL);
	printf("uv_loop: %d messages through %d subscriptions and %d queues on one libuv loop\n", got, NSUBS,
	    NQUEUES);
	/* Close the poll handles before the objects close their descriptors. */
	for (int i = 0; i < NSUBS + NQUEUES; i++)
		uv_close((uv_handle_t *)&polls[i], NULL);
	uv_close((uv_handle_t *)&watchdog, NULL);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	for (int i = 0; i < NSUBS; i++)
		quay_bus_unsubscribe(subs[i]);
	for (int i = 0; i < NQUEUES; i++)
		quay_queue_destroy(queues[i]);
	quay_bus_destroy(bus);
	quay_pool_destroy(pool);
	return bad || got != TOTAL;
}
