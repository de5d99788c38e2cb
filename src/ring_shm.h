/* SPDX-License-Identifier: MIT */
/*
 * Private glue between src/ring.c and src/ring_shm.c (rings in shared
 * memory). Never installed.
 */
#ifndef QUAYI_RING_SHM_H
#define QUAYI_RING_SHM_H

#include <stdbool.h>
#include <stddef.h>
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

/* Shared by the ring's and the pq's file formats (src/pq_shm.c): the
 * FNV-1a 64 of their header checks, from QUAYI_SHM_FNV_SEED, and the
 * rule of a shared memory name: "/name", one leading slash and no other,
 * 1..NAME_MAX bytes after it. */
#define QUAYI_SHM_FNV_SEED UINT64_C(0xcbf29ce484222325)
uint64_t quayi_shm_fnv(uint64_t x, const unsigned char *p, size_t n);
bool quayi_shm_name_ok(const char *name);
/* For the rings of a priority queue in shared memory (src/pq_shm.c), which
 * keep their stall bound in the queue's file header: whether the slot the
 * waiting side needs is held by a claim never completed (*pos, *seq name
 * the state), and the repair RING-K2 (push) or RING-K1 (pop, which may
 * pop an element into elem: 0) of that state. Repair returns -EOWNERDEAD
 * (a slot freed), 0, or -EAGAIN (the state changed meanwhile). */
bool quayi_ring_shm_held(const struct quay_ring *r, bool push, uint64_t *pos, uint64_t *seq);
int quayi_ring_shm_repair(struct quay_ring *r, bool push, void *elem, uint64_t pos, uint64_t seq);
/* The file of a shared ring or pq (src/ring_shm.c): create and map it,
 * seal and hand it out once its header is published, or undo the create. */
int quayi_shm_file_create(const char *name, const char *label, uint32_t mode, size_t size, int *fd_out,
    unsigned char **base_out);
int quayi_shm_file_publish(const char *name, int fd, int *fd_out);
void quayi_shm_file_abort(const char *name, int fd, unsigned char *base, size_t size);
/* Attach: open name (or use fd), check it is a regular file of min..max
 * bytes, map it read-write and run check (the format's validation and the
 * element size, 0: any) on it. The descriptor opened by name is closed. */
int quayi_shm_file_attach(const char *name, int fd, uint64_t min, uint64_t max,
    int (*check)(const unsigned char *base, size_t size, size_t elem_size), size_t elem_size,
    unsigned char **base_out);
/* shm_unlink of a checked name. */
int quayi_shm_unlink(const char *name);
/* Unmap a shared ring (quay_ring_destroy). */
void quayi_ring_shm_detach(struct quay_ring *r);

#endif /* QUAYI_RING_SHM_H */
