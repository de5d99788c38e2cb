/* SPDX-License-Identifier: MIT */
/*
 * Review demonstration (not registered in meson): with quay_queue_fd
 * attached (armed), every empty quay_queue_receive makes system calls:
 * the receive pops a lease slot, finds the pq empty and pushes the slot
 * back into free_slots, whose WAIT-W1 sees the SLEEPERS bit the arm set
 * on free_slots' pop word, wakes (futex_wake + eventfd write, the
 * descriptor reads readable), and the receive's re-arm then drains it
 * (eventfd read, membarrier, timerfd_settime). POLLING.md says "Takes
 * that find it empty again later cost nothing more". Run under
 * `strace -c -f` to count; prints the wake counter of free_slots' word.
 */
#include <errno.h>
#include <stdio.h>

#include "queue_internal.h"
#include <quay/quay.h>

int
main(int argc, char **argv)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_queue *q;
	quay_lease l;
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	uint32_t w0, w1;

	o.capacity = 16;
	if (quay_queue_create(&o, &q) != 0 || quay_queue_fd(q) < 0)
		return 2;
	w0 = __atomic_load_n(&q->free_slots->pop_event, __ATOMIC_SEQ_CST) / QUAYI_WAIT_COUNT_ONE;
	for (int i = 0; i < n; i++)
		if (quay_queue_receive(q, &l, 0) != -EAGAIN)
			return 2;
	w1 = __atomic_load_n(&q->free_slots->pop_event, __ATOMIC_SEQ_CST) / QUAYI_WAIT_COUNT_ONE;
	printf("%d empty receives: %u wakes of free_slots' word\n", n, w1 - w0);
	quay_queue_destroy(q);
	return w1 - w0 > 1 ? 1 : 0;
}
