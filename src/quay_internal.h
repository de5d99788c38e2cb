/* SPDX-License-Identifier: MIT */
/* Private helpers shared by the files in src/. Never installed. */
#ifndef QUAY_INTERNAL_H
#define QUAY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct quay_pool;
struct quay_msg;

/* Internal to libquay (hidden): src/msg.c asks src/pool.c for a buffer
 * with at least need data bytes, preferably want (want >= need; the class
 * fitting want is tried first, then the one fitting need ...). The
 * envelope is zeroed but for capacity, cls, index, pool; refcount is 1.
 * timeout_ns as quay_msg_new_wait(), wait false: try once. */
int quayi_pool_take(struct quay_pool *pool, size_t need, size_t want, bool wait, int64_t timeout_ns,
    struct quay_msg **out);
/* The pool's clock, now (hidden). */
int64_t quayi_pool_now(const struct quay_pool *pool);
/* The pool's headroom for quay_msg_new (hidden). */
size_t quayi_pool_headroom(const struct quay_pool *pool);

#endif /* QUAY_INTERNAL_H */
