/* SPDX-License-Identifier: MIT */
/*
 * Review demonstration (not registered in meson): quay_queue_fd's
 * timerfd stays readable for ever after it fires for work that turns
 * out to be nothing (here: the stale expiry entry of an acked lease),
 * because the receive that finds nothing does not re-arm: the fast test
 * of quayi_wait_poll_idle looks only at the event word (SLEEPERS set,
 * FIRED clear: "armed, nothing written since"), and a timer expiry
 * writes no word. A level-triggered loop then spins at 100% CPU.
 * Exit 0 when the descriptor goes quiet again, 1 when it stays busy.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>

#include <quay/quay.h>

static int
readable(int fd, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void
ms_sleep(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

#define CHECK(c)                                                          \
	do {                                                              \
		if (!(c)) {                                               \
			fprintf(stderr, "setup failed: %s (line %d)\n", #c, __LINE__); \
			return 2;                                         \
		}                                                         \
	} while (0)

int
main(void)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q;
	quay_lease a, b, l;
	quay_msg *m;
	quay_pool *pool;
	int fd, busy = 0;

	o.capacity = 16;
	o.max_in_flight = 1; /* the empty receive below finds no slot */
	o.visibility_ns = 200 * 1000000LL;
	CHECK(quay_queue_create(&o, &q) == 0);
	CHECK(quay_pool_create(1 << 20, NULL, &pool) == 0);
	fd = quay_queue_fd(q);
	CHECK(fd >= 0);
	for (int i = 0; i < 2; i++) {
		CHECK(quay_msg_new(pool, "x", 1, &m) == 0);
		CHECK(quay_queue_send(q, m) == 0);
	}
	CHECK(readable(fd, 5000));
	/* Lease A, acked: its expiry entry (t0 + 200 ms) stays behind, stale. */
	CHECK(quay_queue_receive(q, &a, 0) == 0);
	CHECK(quay_queue_ack(q, &a) == 0);
	quay_msg_unref(a.msg);
	ms_sleep(100);
	/* Lease B, held (expires at t0 + 300 ms): every slot is out. */
	CHECK(quay_queue_receive(q, &b, 0) == 0);
	/* Drain until the take finds nothing: re-arms, timer at A's stale deadline. */
	while (quay_queue_receive(q, &l, 0) != -EAGAIN)
		;
	CHECK(!readable(fd, 0));
	/* The timer fires (t0 + 200 ms) for A's stale entry: a spurious wake. */
	CHECK(readable(fd, 5000));
	/* "That take re-arms; go back to waiting." B's lease is still 100 ms off. */
	for (int i = 0; i < 5; i++) {
		CHECK(quay_queue_receive(q, &l, 0) == -EAGAIN);
		ms_sleep(10);
		busy += readable(fd, 0);
	}
	printf("after 5 empty receives (10 ms apart, B's lease still held) the descriptor read readable %d times\n",
	    busy);
	quay_queue_ack(q, &b);
	quay_msg_unref(b.msg);
	quay_queue_destroy(q);
	return busy == 5 ? 1 : 0;
}
