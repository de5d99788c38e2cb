/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the pollable descriptors (docs/POLLING.md): quay_ring_fd,
 * quay_pq_fd, quay_queue_fd and quay_sub_fd. Each checks that the
 * descriptor reads readable exactly when the header says: not while
 * empty, yes after a push, still yes until a take finds the object empty,
 * yes after close, closed after destroy; and that a burst of pushes into
 * an armed object costs one wake (the event word's counter moves once).
 * meson runs it twice, as the ring's wait tests: with membarrier(2) and
 * with QUAY_NO_MEMBARRIER=1.
 *
 * "Not readable" is polled with a 0 timeout (nothing is in flight when
 * it is asked); "readable" with a generous timeout (a queue's timer fires
 * asynchronously), never as a timing assertion.
 */
#include "quay_test.h"

#include <fcntl.h>
#include <poll.h>

#include <quay/quay.h>

#include "../../src/queue_internal.h" /* the lease slots' event word */

#define SOON_MS 5000 /* a signalled descriptor is readable well within this */

static bool
readable(int fd, int timeout_ms)
{
	struct pollfd p = { fd, POLLIN, 0 };

	return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static bool
fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* The wake counter of an event word (bits 3..31, quay/impl/wait_inline.h). */
static uint32_t
wakes(const uint32_t *event)
{
	return __atomic_load_n(event, __ATOMIC_SEQ_CST) / QUAYI_WAIT_COUNT_ONE;
}

static void
test_bad_input(void **state)
{
	(void)state;
	assert_int_equal(quay_ring_fd(NULL), -EINVAL);
	assert_int_equal(quay_pq_fd(NULL), -EINVAL);
	assert_int_equal(quay_queue_fd(NULL), -EINVAL);
	assert_int_equal(quay_sub_fd(NULL), -EINVAL);
}

/* ---- ring ----------------------------------------------------------- */

static void
ring_cycle(unsigned flags)
{
	quay_ring *r;
	uint64_t v = 7, out;
	int fd, fd2;

	assert_int_equal(quay_ring_create(64, 8, flags, &r), 0);
	fd = quay_ring_fd(r);
	assert_true(fd >= 0);
	fd2 = quay_ring_fd(r);
	assert_int_equal(fd2, fd); /* one descriptor per ring */
	assert_false(readable(fd, 0));

	assert_int_equal(quay_ring_push(r, &v), 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_ring_push(r, &v), 0);
	/* Level: readable while something is left. */
	assert_int_equal(quay_ring_pop(r, &out), 0);
	assert_true(readable(fd, 0));
	assert_int_equal(quay_ring_pop(r, &out), 0);
	/* Drained but not yet re-armed: still readable (documented). */
	assert_true(readable(fd, 0));
	assert_int_equal(quay_ring_pop(r, &out), -EAGAIN);
	assert_false(readable(fd, 0));
	/* Another empty pop keeps it quiet. */
	assert_int_equal(quay_ring_pop(r, &out), -EAGAIN);
	assert_false(readable(fd, 0));

	/* Burst: one wake for many pushes into an armed, empty ring. */
	{
		uint32_t w0 = wakes(&r->pop_event);
		for (int i = 0; i < 50; i++)
			assert_int_equal(quay_ring_push(r, &v), 0);
		assert_int_equal(wakes(&r->pop_event), w0 + 1);
		assert_true(readable(fd, SOON_MS));
		assert_int_equal(quay_ring_pop_burst(r, (uint64_t[64]){ 0 }, 64), 50);
		assert_int_equal(quay_ring_pop_burst(r, &out, 1), 0); /* re-arms */
		assert_false(readable(fd, 0));
	}

	/* Close: readable, and stays so (pop says -EPIPE). */
	quay_ring_close(r);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_ring_pop(r, &out), -EPIPE);
	assert_true(readable(fd, 0));

	quay_ring_destroy(r);
	assert_false(fd_open(fd));
}

static void
test_ring(void **state)
{
	static const unsigned modes[] = { 0, QUAY_RING_SP, QUAY_RING_SC, QUAY_RING_SP | QUAY_RING_SC };

	(void)state;
	for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
		ring_cycle(modes[i]);
}

/* Something already in the ring when the descriptor is made. */
static void
test_ring_ready_before(void **state)
{
	quay_ring *r;
	uint64_t v = 1, out;
	int fd;

	(void)state;
	assert_int_equal(quay_ring_create(8, 8, 0, &r), 0);
	assert_int_equal(quay_ring_push(r, &v), 0);
	fd = quay_ring_fd(r);
	assert_true(fd >= 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_ring_pop(r, &out), 0);
	assert_int_equal(quay_ring_pop(r, &out), -EAGAIN);
	assert_false(readable(fd, 0));
	quay_ring_destroy(r);
	assert_false(fd_open(fd));
}

/* A ring in the caller's memory: destroy closes the descriptor and
 * leaves the memory alone (the ring stays usable). */
static void
test_ring_init(void **state)
{
	size_t sz = quay_ring_memsize(8, 8);
	quay_ring *r = aligned_alloc(64, (sz + 63) & ~(size_t)63);
	uint64_t v = 3, out;
	int fd;

	(void)state;
	assert_non_null(r);
	assert_int_equal(quay_ring_init(r, 8, 8, 0), 0);
	fd = quay_ring_fd(r);
	assert_true(fd >= 0);
	quay_ring_destroy(r);
	assert_false(fd_open(fd));
	assert_int_equal(quay_ring_push(r, &v), 0);
	assert_int_equal(quay_ring_pop(r, &out), 0);
	assert_true(out == 3);
	free(r);
}

/* A thread asleep in pop_wait and a descriptor on the same ring: a push
 * wakes both kinds of sleeper. */
struct waiter {
	quay_ring *r;
	int rc;
};

static void *
pop_waiter(void *arg)
{
	struct waiter *w = arg;
	uint64_t out;

	w->rc = quay_ring_pop_wait(w->r, &out, 10 * 1000 * QT_MS);
	return NULL;
}

static void
test_ring_with_sleeper(void **state)
{
	struct waiter w = { NULL, -1 };
	pthread_t t;
	uint64_t v = 5, out;
	int fd;

	(void)state;
	assert_int_equal(quay_ring_create(8, 8, 0, &w.r), 0);
	fd = quay_ring_fd(w.r);
	assert_true(fd >= 0);
	assert_int_equal(pthread_create(&t, NULL, pop_waiter, &w), 0);
	qt_sleep_ms(50); /* let it sleep (not required for correctness) */
	assert_int_equal(quay_ring_push(w.r, &v), 0);
	assert_int_equal(quay_ring_push(w.r, &v), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.rc, 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_ring_pop(w.r, &out), 0);
	assert_int_equal(quay_ring_pop(w.r, &out), -EAGAIN);
	assert_false(readable(fd, 0));
	quay_ring_destroy(w.r);
}

/* ---- pq ------------------------------------------------------------- */

static void
test_pq(void **state)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	quay_pq *pq;
	uint64_t v = 9, out[8];
	unsigned prio;
	int fd;

	(void)state;
	o.levels = 70; /* two bitmap words */
	o.capacity = 16;
	o.elem_size = 8;
	assert_int_equal(quay_pq_create(&o, &pq), 0);
	fd = quay_pq_fd(pq);
	assert_true(fd >= 0);
	assert_int_equal(quay_pq_fd(pq), fd);
	assert_false(readable(fd, 0));
	assert_int_equal(quay_pq_push(pq, 3, &v), 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_pq_push(pq, 66, &v), 0);
	assert_int_equal(quay_pq_pop(pq, out, &prio), 0);
	assert_int_equal(prio, 66);
	assert_true(readable(fd, 0));
	assert_int_equal(quay_pq_pop(pq, out, &prio), 0);
	assert_int_equal(quay_pq_pop(pq, out, &prio), -EAGAIN);
	assert_false(readable(fd, 0));

	{
		uint32_t w0 = wakes(&pq->pop_event);
		for (unsigned i = 0; i < 40; i++)
			assert_int_equal(quay_pq_push(pq, i % 4, &v), 0);
		assert_int_equal(wakes(&pq->pop_event), w0 + 1);
	}
	assert_true(readable(fd, SOON_MS));
	while (quay_pq_pop_burst(pq, out, 8, NULL) > 0)
		;
	assert_false(readable(fd, 0)); /* the empty burst re-armed */

	quay_pq_close(pq);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_pq_pop(pq, out, NULL), -EPIPE);
	quay_pq_destroy(pq);
	assert_false(fd_open(fd));
}

/* ---- queue ---------------------------------------------------------- */

static quay_pool *pool;

static quay_msg *
msg(void)
{
	quay_msg *m;

	assert_int_equal(quay_msg_new(pool, "x", 1, &m), 0);
	return m;
}

/* The loop of docs/POLLING.md for one message: wait for the descriptor,
 * receive; at most max_wakes wakes (each must come within SOON_MS). The
 * bound is loose on purpose: besides the two or three wakes seen in
 * most runs, the timer may wake the loop once per queue tick (1 ms)
 * while due work waits for the wheel (once, 41 wakes in 200 ms were
 * seen); a busy descriptor wakes it tens of thousands of times. */
static int
receive_when_ready(quay_queue *q, int fd, quay_lease *l, int max_wakes)
{
	int rc, wakes_seen = 0;
	int64_t t0 = qt_now_ns();

	while ((rc = quay_queue_receive(q, l, 0)) == -EAGAIN) {
		assert_true(readable(fd, SOON_MS));
		if (++wakes_seen > max_wakes)
			fail_msg("%d wakes (at most %d expected) in %.3f ms", wakes_seen, max_wakes,
			    (double)(qt_now_ns() - t0) / 1e6);
	}
	return rc;
}

static void
test_queue(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q;
	quay_lease l1, l2;
	int fd;

	(void)state;
	o.capacity = 16;
	o.max_in_flight = 1;
	o.visibility_ns = 200 * QT_MS;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	fd = quay_queue_fd(q);
	assert_true(fd >= 0);
	assert_int_equal(quay_queue_fd(q), fd);
	assert_false(readable(fd, 0));

	/* Send -> readable; receive until -EAGAIN -> quiet. */
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_queue_receive(q, &l1, 0), 0);
	assert_int_equal(quay_queue_ack(q, &l1), 0);
	quay_msg_unref(l1.msg);
	assert_int_equal(quay_queue_receive(q, &l1, 0), -EAGAIN);
	assert_false(readable(fd, 0));

	/* max_in_flight 1: a ready message without a free slot is not
	 * "something to take"; the ack that frees the slot signals. */
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_queue_receive(q, &l1, 0), 0);
	assert_int_equal(quay_queue_receive(q, &l2, 0), -EAGAIN);
	assert_false(readable(fd, 0));
	assert_int_equal(quay_queue_ack(q, &l1), 0);
	quay_msg_unref(l1.msg);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_queue_receive(q, &l2, 0), 0);
	assert_int_equal(quay_queue_receive(q, &l1, 0), -EAGAIN);
	assert_false(readable(fd, 0));

	/* Lease expiry: nobody acks l2; the timer makes the descriptor
	 * readable once it is due (then again when its retry backoff ends),
	 * and a receive gets it again. A few wakes, not a busy loop. */
	assert_int_equal(receive_when_ready(q, fd, &l1, 300), 0);
	assert_int_equal(l1.attempt, 2);
	assert_int_equal(quay_queue_ack(q, &l1), 0);
	quay_msg_unref(l1.msg);
	quay_msg_unref(l2.msg);
	assert_int_equal(quay_queue_receive(q, &l1, 0), -EAGAIN);

	/* A delayed message: received only once due, after a wake for the
	 * send (it lowered the next due time), one for the stale expiry
	 * entry of the ack above, one when it comes due (and tick wakes). */
	{
		quay_msg *m = msg();
		int64_t t0 = qt_now_ns();

		assert_int_equal(quay_msg_set_delay_ns(m, 300 * QT_MS), 0);
		assert_int_equal(quay_queue_send(q, m), 0);
		assert_int_equal(receive_when_ready(q, fd, &l1, 300), 0);
		/* The queue's default clock (the TSC's CLOCK_REALTIME) may lead
		 * the monotonic clock measured here by up to 100 us (its bound,
		 * quay/queue.h), so the message may come due that much early. */
		assert_true(qt_now_ns() - t0 >= 300 * QT_MS - 100000);
		assert_int_equal(quay_queue_ack(q, &l1), 0);
		quay_msg_unref(l1.msg);
		assert_int_equal(quay_queue_receive(q, &l1, 0), -EAGAIN);
		assert_false(readable(fd, 0));
	}

	/* Close: readable, receive says -EPIPE. */
	assert_int_equal(quay_queue_close(q), 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_queue_receive(q, &l1, 0), -EPIPE);
	quay_queue_destroy(q);
	assert_false(fd_open(fd));
}

/* The queue's timer fires for work that turns out to be nothing (the
 * stale expiry entry of an acked lease) while every lease slot is out:
 * the empty receive after that wake must re-arm (reset the timerfd), or
 * the descriptor stays readable and a level-triggered loop spins until
 * the held lease ends. */
static void
test_queue_stale_timer(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct timespec ten_ms = { 0, 10 * 1000000L };
	quay_queue *q;
	quay_lease a, b, l;
	int fd, busy = 0;

	(void)state;
	o.capacity = 16;
	o.max_in_flight = 1;
	o.visibility_ns = 100 * QT_MS;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	fd = quay_queue_fd(q);
	assert_true(fd >= 0);
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_true(readable(fd, SOON_MS));
	/* Lease A, acked at once: its expiry entry stays behind, stale. */
	assert_int_equal(quay_queue_receive(q, &a, 0), 0);
	assert_int_equal(quay_queue_ack(q, &a), 0);
	quay_msg_unref(a.msg);
	/* Lease B, held for a minute: no slot is free. */
	assert_int_equal(quay_queue_receive(q, &b, 0), 0);
	assert_int_equal(quay_queue_extend(q, &b, 60000 * QT_MS), 0);
	while (quay_queue_receive(q, &l, 0) != -EAGAIN)
		;
	/* The timer fires at A's stale deadline: one spurious wake. */
	assert_true(readable(fd, SOON_MS));
	for (int i = 0; i < 5; i++) {
		assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
		nanosleep(&ten_ms, NULL);
		busy += readable(fd, 0);
	}
	/* A wake per wheel tick at most, never readable for ever. */
	assert_true(busy < 5);
	assert_int_equal(quay_queue_ack(q, &b), 0);
	quay_msg_unref(b.msg);
	quay_queue_destroy(q);
}

/* Polling an empty queue (wait 0) wakes nothing: an empty receive takes
 * no lease slot, whose push back would wake the descriptor armed on
 * free_slots (and the receive's re-arm drain it again: six system calls
 * per empty poll, invisible to poll(2) but counted on the event word). */
static void
test_queue_empty_polls_quiet(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q;
	quay_lease l;
	int fd, woke = 0;

	(void)state;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	fd = quay_queue_fd(q);
	assert_true(fd >= 0);
	assert_false(readable(fd, 0));
	{
		uint32_t *slots_word = &q->free_slots->pop_event;
		uint32_t w0 = wakes(slots_word);

		for (int i = 0; i < 100; i++) {
			assert_int_equal(quay_queue_receive(q, &l, 0), -EAGAIN);
			woke += readable(fd, 0);
		}
		assert_int_equal(woke, 0);
		assert_int_equal(wakes(slots_word), w0);
	}
	/* And a send still makes it readable. */
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	quay_queue_destroy(q);
}

/* Destroy closes the descriptor of a queue that was never closed. */
static void
test_queue_destroy(void **state)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q;
	int fd;

	(void)state;
	assert_int_equal(quay_queue_create(&o, &q), 0);
	fd = quay_queue_fd(q);
	assert_true(fd >= 0);
	assert_int_equal(quay_queue_send(q, msg()), 0);
	assert_true(readable(fd, SOON_MS));
	quay_queue_destroy(q);
	assert_false(fd_open(fd));
}

/* ---- subscription --------------------------------------------------- */

static void
sub_cycle(unsigned priorities)
{
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	quay_bus *bus;
	quay_sub *s;
	quay_msg *m;
	int fd;

	so.priorities = priorities;
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, "a.>", &so, &s), 0);
	fd = quay_sub_fd(s);
	assert_true(fd >= 0);
	assert_int_equal(quay_sub_fd(s), fd);
	assert_false(readable(fd, 0));
	assert_true(quay_bus_publish(bus, "a.b", msg()) >= 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_sub_receive(s, &m, 0), 0);
	quay_msg_unref(m);
	assert_int_equal(quay_sub_receive(s, &m, 0), -ETIMEDOUT);
	assert_false(readable(fd, 0));
	assert_true(quay_bus_publish(bus, "a.c", msg()) >= 0);
	assert_true(readable(fd, SOON_MS));
	assert_int_equal(quay_sub_receive_burst(s, &m, 1), 1);
	quay_msg_unref(m);
	assert_int_equal(quay_sub_receive_burst(s, &m, 1), 0);
	assert_false(readable(fd, 0));
	/* Another subject does not wake it. */
	assert_true(quay_bus_publish(bus, "b.c", msg()) >= 0);
	assert_false(readable(fd, 0));
	assert_true(quay_bus_publish(bus, "a.d", msg()) >= 0);
	assert_true(readable(fd, SOON_MS));
	/* Destroying the bus frees the subscription: the descriptor is closed. */
	quay_bus_destroy(bus);
	assert_false(fd_open(fd));
}

static void
test_sub(void **state)
{
	(void)state;
	sub_cycle(0);
	sub_cycle(4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_ring),
		cmocka_unit_test(test_ring_ready_before),
		cmocka_unit_test(test_ring_init),
		cmocka_unit_test(test_ring_with_sleeper),
		cmocka_unit_test(test_pq),
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_queue_stale_timer),
		cmocka_unit_test(test_queue_empty_polls_quiet),
		cmocka_unit_test(test_queue_destroy),
		cmocka_unit_test(test_sub),
	};

	int rc;

	if (quay_pool_create((size_t)4 << 20, NULL, &pool) != 0)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	quay_pool_destroy(pool);
	return rc;
}
