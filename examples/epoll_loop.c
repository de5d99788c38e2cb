/* SPDX-License-Identifier: MIT */
/*
 * epoll_loop: one thread, one epoll set, 100 bus subscriptions and 3
 * queues (docs/POLLING.md). Four publisher threads send 20,000 messages
 * to random subscriptions and queues (some queue messages delayed by
 * 5 ms); the loop receives and acks all of them without a thread per
 * subscription, then unsubscribes. Exits non-zero if a message is
 * missing or seen twice.
 *
 * The loop's rule: after epoll says a descriptor is readable, take from
 * its object until the take says there is nothing (receive with a zero
 * wait: -ETIMEDOUT for a subscription, -EAGAIN for a queue). That take
 * re-arms the descriptor; the next message to arrive signals it again.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

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
static unsigned char seen[TOTAL];

static void *
publisher(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg, seed = id + 1;

	for (uint32_t i = 0; i < PER_PUB; i++) {
		uint32_t n = id * PER_PUB + i, to = (uint32_t)rand_r(&seed) % (NSUBS + NQUEUES);
		quay_msg *m;
		int rc;

		while (quay_msg_new(pool, &n, sizeof n, &m) != 0)
			usleep(100); /* pool full: the loop frees as it goes */
		if (to < NSUBS) {
			char subject[32];

			snprintf(subject, sizeof subject, "events.%u", to);
			/* REJECT policy: a full subscription refuses; retry. */
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

static int
count(const quay_msg *m)
{
	uint32_t n;

	memcpy(&n, quay_msg_body(m), sizeof n);
	if (n >= TOTAL || seen[n]++) {
		fprintf(stderr, "message %u: unknown or seen twice\n", n);
		return 1;
	}
	return 0;
}

int
main(void)
{
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	struct epoll_event evs[32];
	pthread_t th[NPUB];
	int ep, bad = 0, got = 0, rc;

	if (quay_bus_create(NULL, &bus) != 0 || quay_pool_create((size_t)16 << 20, NULL, &pool) != 0 ||
	    (ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return 1;
	for (int i = 0; i < NSUBS + NQUEUES; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		char pattern[32];
		int fd;

		if (i < NSUBS) {
			snprintf(pattern, sizeof pattern, "events.%d", i);
			if ((rc = quay_bus_subscribe(bus, pattern, NULL, &subs[i])) != 0)
				return 1;
			fd = quay_sub_fd(subs[i]);
		} else {
			if ((rc = quay_queue_create(&qo, &queues[i - NSUBS])) != 0)
				return 1;
			fd = quay_queue_fd(queues[i - NSUBS]);
		}
		if (fd < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			fprintf(stderr, "fd: %s\n", quay_strerror(fd < 0 ? fd : -errno));
			return 1;
		}
	}
	for (int i = 0; i < NPUB; i++)
		pthread_create(&th[i], NULL, publisher, (void *)(uintptr_t)i);

	while (got < TOTAL) {
		int n = epoll_wait(ep, evs, 32, 10 * 1000);

		if (n == 0) {
			fprintf(stderr, "nothing for 10 s with %d of %d received\n", got, TOTAL);
			return 1;
		}
		for (int k = 0; k < n; k++) {
			uint32_t i = evs[k].data.u32;

			if (i < NSUBS) {
				quay_msg *m;

				/* Drain: until the zero-wait receive finds nothing. */
				while (quay_sub_receive(subs[i], &m, 0) == 0) {
					bad |= count(m);
					quay_msg_unref(m);
					got++;
				}
			} else {
				quay_queue *q = queues[i - NSUBS];
				quay_lease l;

				while ((rc = quay_queue_receive(q, &l, 0)) == 0) {
					bad |= count(l.msg);
					quay_queue_ack(q, &l);
					quay_msg_unref(l.msg);
					got++;
				}
				if (rc != -EAGAIN)
					return 1;
			}
		}
	}
	for (int i = 0; i < NPUB; i++)
		pthread_join(th[i], NULL);
	printf("epoll_loop: %d messages through %d subscriptions and %d queues on one thread\n", got, NSUBS,
	    NQUEUES);
	/* Take each descriptor out of the epoll set before its object goes
	 * (destroy closes it). */
	close(ep);
	for (int i = 0; i < NSUBS; i++)
		quay_bus_unsubscribe(subs[i]);
	for (int i = 0; i < NQUEUES; i++)
		quay_queue_destroy(queues[i]);
	quay_bus_destroy(bus);
	quay_pool_destroy(pool);
	return bad;
}
