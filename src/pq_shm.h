/* SPDX-License-Identifier: MIT */
/*
 * Private glue between src/pq.c and src/pq_shm.c (priority queues in
 * shared memory). Never installed.
 */
#ifndef QUAYI_PQ_SHM_H
#define QUAYI_PQ_SHM_H

#include <stdbool.h>
#include <stdint.h>

struct quay_pq;

/* pq.c: whether a pop (a push to level) could make progress now; the
 * re-checks of the sleep protocol (WAIT-S1). ctx is the queue. */
bool quayi_pq_pop_ready(const void *ctx);
bool quayi_pq_push_ready(const struct quay_pq *pq, unsigned level);

/* pq_shm.c: the waiting calls of a shared queue: a push to level prio, or
 * (prio UINT_MAX) a pop into elem; shared futexes and the stall bound. */
int quayi_pq_shm_wait(struct quay_pq *pq, unsigned prio, void *elem, unsigned *prio_out, int64_t timeout_ns);
/* Unmap a shared queue (quay_pq_destroy). */
void quayi_pq_shm_detach(struct quay_pq *pq);

#endif /* QUAYI_PQ_SHM_H */
