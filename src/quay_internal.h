/* SPDX-License-Identifier: MIT */
/* Private helpers shared by the files in src/. Never installed. */
#ifndef QUAY_INTERNAL_H
#define QUAY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/err.h>

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
/* Counted pools (the NATS module's own import pool, hidden): a pool whose
 * owner may give it up while messages of it are still out; it is freed
 * by whichever comes last, the owner's quayi_pool_put() or the release of
 * its last message (on that thread, with the pool's allocator). Made
 * counted right after quay_pool_create(), before it is shared; it must
 * have no thread caches (QUAY_POOL_NO_CACHE). No message may be taken
 * from it after the put. Counted: 0; -EINVAL (NULL, caches, already
 * counted); -EBUSY if a message is out. */
int quayi_pool_counted(struct quay_pool *pool);
void quayi_pool_put(struct quay_pool *pool);

/*
 * The shared sleep/wake protocol's slow paths (src/wait.c; the inline
 * fast side is in include/quay/impl/wait_inline.h). Deadlines are
 * CLOCK_MONOTONIC ns, < 0 for none (src/clock.h):
 *
 * quayi_wait_init: register for membarrier(2) once per process; true if
 *   the fast protocol is available (false: pass fence = true everywhere).
 * quayi_wait_heavy_barrier: the slow side of WAIT-W1 (WAIT-S1, and
 *   RING-C2 in the ring): a full barrier on every running thread of the
 *   process.
 * quayi_wait_sleep: the sleeper side above. Returns 0 when the caller
 *   should retry (ready() held, woken, spurious wake, EINTR) and
 *   -ETIMEDOUT once deadline passed.
 *
 * Plain futex calls, for a protocol of its own (the pool's POOL-S1/POOL-W1):
 * quayi_futex_wait: sleep while *word == val, until woken or deadline;
 *   -ETIMEDOUT without sleeping if the deadline passed, else 0 (woken,
 *   timed out, EINTR, or *word was not val): the caller re-checks.
 * quayi_futex_wake_all: wake every thread asleep on word.
 */
bool quayi_wait_init(void);
void quayi_wait_heavy_barrier(bool fence);
int quayi_wait_sleep(uint32_t *event, bool fence, bool (*ready)(const void *ctx), const void *ctx,
    int64_t deadline);
int quayi_futex_wait(uint32_t *word, uint32_t val, int64_t deadline);
void quayi_futex_wake_all(uint32_t *word);

/* The body of every waiting call (ring and pq push_wait/pop_wait): try op,
 * spin while ready() says no, try again, sleep on event (WAIT-S1), and so on
 * until op succeeds or fails for good, or timeout_ns (< 0: forever, 0:
 * try once) runs out (-ETIMEDOUT, after one last try). */
struct quayi_waiter {
	int (*op)(void *arg); /* non-blocking: 0, -EAGAIN, or final */
	void *arg;
	bool (*ready)(const void *ctx); /* could op make progress now? a hint */
	const void *ready_ctx;
	uint32_t *event; /* the futex word to sleep on */
	bool fence;      /* no membarrier: fence (see wait.c) */
};
int quayi_wait_for(const struct quayi_waiter *w, int64_t timeout_ns);

/* The registry a gauge belongs to (src/stats.c; NULL for NULL). */
struct quay_stats;
struct quay_gauge;
struct quay_stats *quayi_stats_of_gauge(const struct quay_gauge *g);

/* Test hook (tests/unit/test_ring_wait.c; exported, never installed):
 * move an empty, unused ring to position pos, so tests can start next to
 * the wrap-around. -EINVAL unless quiescent and empty. */
struct quay_ring;
QUAY_API int quayi_ring_test_set_position(struct quay_ring *r, uint64_t pos);

#endif /* QUAY_INTERNAL_H */
