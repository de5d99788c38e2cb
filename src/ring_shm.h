/* SPDX-License-Identifier: MIT */
/*
 * Private glue between src/ring.c and src/ring_shm.c (rings in shared
 * memory). Never installed.
 */
#ifndef QUAYI_RING_SHM_H
#define QUAYI_RING_SHM_H

#include <stdbool.h>
#include <stdint.h>

struct quay_ring;

/* ring.c: whether a pop (push) could make progress now; the re-checks of
 * the sleep protocol (WAIT-S1). ctx is the ring. */
bool quayi_ring_pop_ready(const void *ctx);
bool quayi_ring_push_ready(const void *ctx);

/* ring_shm.c: the waiting calls of a shared ring (shared futexes, the
 * stall bound and the repairs RING-K1/RING-K2). */
int quayi_ring_shm_wait(struct quay_ring *r, bool push, void *elem, int64_t timeout_ns);
/* Wake every process asleep on a shared ring's event word. */
void quayi_ring_shm_wake(uint32_t *event);
/* Unmap a shared ring (quay_ring_destroy). */
void quayi_ring_shm_detach(struct quay_ring *r);

#endif /* QUAYI_RING_SHM_H */
