/* SPDX-License-Identifier: MIT */
/**
 * @file quay/pq.h
 * Bounded lock-free multi-producer/multi-consumer priority queue.
 *
 * A priority queue has `levels` priority levels (1..256, RabbitMQ's
 * range), numbered 0 (lowest) to levels - 1 (highest). Each level is a
 * quay ring (quay/ring.h) of `capacity` elements of `elem_size` bytes, so
 * a level can be full while others are not; elements are copied in and
 * out. A bitmap of non-empty levels lets a pop find the highest non-empty
 * level with a few loads and one count-leading-zeros. FIFO within a level.
 *
 * Scheduling, chosen at creation:
 *
 *   strict (flags 0)       a pop takes from the highest non-empty level.
 *                          A flood at a high level starves lower ones.
 *   QUAY_PQ_WEIGHTED       weighted round robin: level L has a weight w[L]
 *                          (default L + 1, or the opts.weights array). A
 *                          cursor walks the non-empty levels from the
 *                          highest down and wraps around; each visit
 *                          serves up to w[L] consecutive pops from level
 *                          L (fewer if L runs empty). Exactly (one thread):
 *                          a pop serves the cursor's level if it is non-
 *                          empty and has credit left, spending one credit;
 *                          otherwise the cursor moves to the highest non-
 *                          empty level below it (or, if there is none, to
 *                          the highest non-empty level) and the credit is
 *                          set to that level's weight, one of which the
 *                          pop spends. A level found empty loses the
 *                          rest of its credit. The cursor starts above
 *                          the top.
 *
 * Share in weighted mode (the documented bound, tested): while level L
 * stays non-empty, at most sum of w[M] over the other non-empty levels M
 * pops go to other levels between two pops from L, so L gets at least
 *     w[L] / (sum of w[M] over all non-empty levels M)
 * of the pops. Under a flood at the top level T alone, level L waits at
 * most w[T] pops (default: levels pops) and gets (L+1)/(L+1+levels) of
 * them. With several consumers the schedule is followed by the order in
 * which pops win a compare-and-swap on the scheduler word; see docs/PQ.md.
 *
 * Concurrency (synchronisation table):
 *
 *   call                  x call                  needs
 *   any push              x any push or pop       nothing (lock-free)
 *   any pop               x any pop               nothing (lock-free)
 *   close                 x anything              nothing
 *   count, getters        x anything              nothing (count is a snapshot)
 *   init, destroy         x anything              caller serialises (no user)
 *
 * Ordering: everything a thread wrote before a successful push of an
 * element happens-before everything the thread that pops that element
 * does after its pop (the level ring's release/acquire, RING-R1 -> RING-A1).
 * Priority order is exact at quiescence: when no push or pop is running,
 * every element is visible to the next pop, which (strict mode) takes the
 * highest non-empty level. While other calls run it is not exact: a push
 * still in progress may be overtaken, and while a concurrent pop is
 * between clearing a level's non-empty bit and re-checking that level
 * (PQ-B2..PQ-B3 in impl/pq_inline.h), another pop may miss a completed push to
 * that level, taking a lower level's element or returning -EAGAIN. The
 * element is not lost: the re-check sets the bit again and wakes
 * quay_pq_pop_wait() sleepers.
 *
 * Blocking: quay_pq_pop_wait() sleeps on one futex word for the whole
 * queue, woken by a push at any level; quay_pq_push_wait() sleeps on one
 * word shared by all levels while its level is full, woken by any pop.
 * Non-waiting calls pay one plain load to learn that nobody sleeps (the
 * protocol of quay/impl/wait_inline.h, shared with the ring).
 */
#ifndef QUAY_PQ_H
#define QUAY_PQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/alloc.h>
#include <quay/err.h>
#include <quay/ring.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Flag: weighted scheduling (see above); without it, strict priority. */
#define QUAY_PQ_WEIGHTED 0x1u
/** Every flag a caller may pass; other bits get -EINVAL. */
#define QUAY_PQ_FLAGS_ALL QUAY_PQ_WEIGHTED

/** Largest number of levels (priorities 0..255). */
#define QUAY_PQ_LEVELS_MAX 256u
/** Largest weight a level may have in weighted mode. */
#define QUAY_PQ_WEIGHT_MAX 65536u

/** A priority queue. Layout in quay/impl/pq_inline.h: read-only for users. */
typedef struct quay_pq quay_pq;

/**
 * The shape of a priority queue. Start from QUAY_PQ_OPTS_INIT (which sets
 * size; every other field must then be set: there are no defaults for
 * the fields that size the memory).
 */
struct quay_pq_opts {
	size_t size;             /**< sizeof(struct quay_pq_opts): the version */
	unsigned levels;         /**< priority levels, 1..QUAY_PQ_LEVELS_MAX */
	unsigned flags;          /**< 0 (strict) or QUAY_PQ_WEIGHTED */
	size_t capacity;         /**< elements per level: a power of two,
	                               1..QUAY_RING_CAPACITY_MAX */
	size_t elem_size;        /**< a multiple of 8, 8..QUAY_RING_ELEM_MAX */
	const uint32_t *weights; /**< QUAY_PQ_WEIGHTED only: `levels` weights,
	                               each 1..QUAY_PQ_WEIGHT_MAX, copied at
	                               creation; NULL means weight L + 1 */
	/** quay_pq_create(): where the memory comes from (NULL: the C
	 *  library); see quay/alloc.h. Kept, not copied: it must outlive the
	 *  queue. Ignored by quay_pq_init(). */
	const struct quay_allocator *allocator;
};

/** Initialiser for struct quay_pq_opts. */
/* clang-format off */
#define QUAY_PQ_OPTS_INIT { sizeof(struct quay_pq_opts), 0u, 0u, 0u, 0u, NULL, NULL }
/* clang-format on */

/**
 * Bytes of memory a priority queue of this shape needs (for
 * quay_pq_init()).
 *
 * Concurrency: safe from any thread.
 * Returns: the size in bytes, or 0 if opts is NULL or invalid (as for
 *          quay_pq_init()).
 */
QUAY_API size_t quay_pq_memsize(const struct quay_pq_opts *opts);

/**
 * Initialise a priority queue in caller-provided memory.
 *
 * pq must point to at least quay_pq_memsize(opts) bytes aligned to
 * QUAY_CACHELINE (64). The memory stays the caller's: a queue made this
 * way needs no destroy (quay_pq_destroy() ignores it).
 *
 * Concurrency: no other call may use pq until this returns.
 * Returns: 0; -EINVAL if pq or opts is NULL, pq is misaligned, opts->size
 *          is not sizeof(struct quay_pq_opts), levels is not in
 *          1..QUAY_PQ_LEVELS_MAX, capacity or elem_size is not valid for a
 *          ring (quay_ring_init()), flags has unknown bits, weights is set
 *          without QUAY_PQ_WEIGHTED, or a weight is 0 or above
 *          QUAY_PQ_WEIGHT_MAX. Nothing is written on failure.
 */
QUAY_API int quay_pq_init(quay_pq *pq, const struct quay_pq_opts *opts);

/**
 * Allocate and initialise a priority queue.
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL (out NULL, an allocator without alloc
 *          or free, or as quay_pq_init());
 *          -ENOMEM if the memory cannot be allocated. *out is untouched
 *          on failure.
 */
QUAY_API int quay_pq_create(const struct quay_pq_opts *opts, quay_pq **out);

/**
 * Free a priority queue made by quay_pq_create(), or unmap (detach) one
 * made or attached by quay_pq_create_shm() or quay_pq_attach_shm(), whose
 * elements stay in the file for the other processes. NULL and queues made
 * by quay_pq_init() are ignored. Elements still inside a queue that is
 * freed are discarded.
 *
 * Concurrency: no other thread may be using pq (close it and join them).
 */
QUAY_API void quay_pq_destroy(quay_pq *pq);

/**
 * Copy one element into level prio.
 *
 * Concurrency: lock-free; see the table at the top of this file.
 * Ordering: release (the level ring's RING-R1, pairs with RING-A1 in pop).
 * Returns: 0; -EAGAIN if level prio is full; -EPIPE if the queue is
 *          closed; -EINVAL if pq or elem is NULL or prio >= levels;
 *          -EOWNERDEAD (shared memory only) if a waiting call presumed this
 *          push dead and took its slot: the element is not delivered.
 *          Nothing is written on failure.
 */
QUAY_INLINE int quay_pq_push(quay_pq *pq, unsigned prio, const void *elem);

/**
 * Copy the next element out into out (elem_size bytes): the oldest
 * element of the level the scheduling mode picks (strict: the highest
 * non-empty level). If prio_out is not NULL, *prio_out is set to its
 * level.
 *
 * Concurrency: lock-free; see the table at the top of this file.
 * Ordering: acquire (RING-A1, pairs with RING-R1 in push).
 * Returns: 0; -EAGAIN if the queue is empty (or its next elements are
 *          still being written, or a concurrent pop is re-checking the
 *          level that holds them: see Ordering at the top); -EPIPE if it
 *          is closed and drained; -EINVAL if pq or out is NULL.
 */
QUAY_INLINE int quay_pq_pop(quay_pq *pq, void *out, unsigned *prio_out);

/**
 * Push up to n elements (contiguous, elem_size bytes each) into level
 * prio, in order.
 *
 * Concurrency, Ordering: as quay_pq_push().
 * Returns: the number pushed (the first that many of elems), 0..n. 0 if
 *          the level is full or the queue closed (quay_pq_is_closed()
 *          tells which), or pq or elems is NULL, or prio >= levels.
 */
QUAY_INLINE size_t quay_pq_push_burst(quay_pq *pq, unsigned prio, const void *elems, size_t n);

/**
 * Pop up to n elements into out (room for n elements), in the order n
 * successive quay_pq_pop() calls would return them (strict: highest level
 * first, continuing to lower levels; weighted: following the schedule).
 * If prios_out is not NULL, prios_out[i] is set to the level of element i.
 *
 * Concurrency, Ordering: as quay_pq_pop().
 * Returns: the number popped, 0..n; 0 if empty or closed and drained, or
 *          pq or out is NULL.
 */
QUAY_INLINE size_t quay_pq_pop_burst(quay_pq *pq, void *out, size_t n, unsigned *prios_out);

/**
 * Push one element into level prio, sleeping while that level is full.
 *
 * timeout_ns < 0 waits forever; 0 tries once. Spins briefly before it
 * sleeps; a pop at any level or close wakes it (it re-checks its level).
 *
 * Concurrency: as quay_pq_push(); any number of threads may wait.
 * Ordering: as quay_pq_push().
 * Returns: 0; -ETIMEDOUT if the level stayed full for timeout_ns; -EPIPE
 *          if the queue is or becomes closed; -EINVAL if pq or elem is
 *          NULL or prio >= levels; -EOWNERDEAD (shared memory only) if it
 *          freed a slot a dead process held, or lost its own to a repair.
 */
QUAY_API int quay_pq_push_wait(quay_pq *pq, unsigned prio, const void *elem, int64_t timeout_ns);

/**
 * Pop one element (as quay_pq_pop()), sleeping while the queue is empty.
 *
 * timeout_ns < 0 waits forever; 0 tries once. A push at any level or
 * close wakes it.
 *
 * Concurrency: as quay_pq_pop(); any number of threads may wait.
 * Ordering: as quay_pq_pop().
 * Returns: 0; -ETIMEDOUT if nothing arrived within timeout_ns; -EPIPE if
 *          the queue is closed and drained; -EINVAL if pq or out is NULL;
 *          -EOWNERDEAD (shared memory only) if it skipped a slot a dead
 *          process held.
 */
QUAY_API int quay_pq_pop_wait(quay_pq *pq, void *out, unsigned *prio_out, int64_t timeout_ns);

/**
 * Close the queue: later pushes fail with -EPIPE, pops return what is
 * left (highest level first once the weighted schedule has run dry) and
 * then -EPIPE, and every thread sleeping in a wait call wakes. Every push
 * that returned 0 is still delivered, and no element is delivered after
 * a pop returned -EPIPE. Idempotent; NULL is ignored.
 *
 * Concurrency: safe from any thread, concurrently with anything but
 *              destroy. Closes every level's ring (quay_ring_close()),
 *              which makes a few system calls per level.
 * Ordering: a pop that returns -EPIPE happens after the close.
 */
QUAY_API void quay_pq_close(quay_pq *pq);

/**
 * A file descriptor that polls readable while a pop would make progress
 * (an element is ready at some level, or the queue is closed and
 * drained), as quay_ring_fd() for a ring: made on first use, signalled
 * once per empty -> non-empty transition and on close, re-armed by a pop
 * (or pop_burst) that finds the queue empty; so after a wake, pop until
 * -EAGAIN. quay_pq_destroy() closes it (also for a queue made by
 * quay_pq_init(), which must then be passed to quay_pq_destroy()).
 * docs/POLLING.md has the loop.
 *
 * Concurrency: safe from any thread, concurrently with anything but
 *              destroy.
 * Returns: the descriptor (>= 0); -EINVAL if pq is NULL; -ENOTSUP if pq is
 *          in shared memory (quay_pq_create_shm(): wakers in other
 *          processes could not signal it); -ENOMEM if it cannot be made
 *          (memory, or the process or system is out of descriptors).
 */
QUAY_API int quay_pq_fd(quay_pq *pq);

/**
 * Whether quay_pq_close() has been called (false for NULL).
 *
 * Concurrency: safe from any thread. Ordering: acquire.
 */
QUAY_INLINE bool quay_pq_is_closed(const quay_pq *pq);

/**
 * Number of elements in the queue, all levels (pushed and not yet
 * popped; includes pushes in progress). A snapshot, summed level by
 * level: exact when no push or pop runs. Costs one load per level.
 *
 * Concurrency: safe from any thread. Returns: 0..levels*capacity (0 for NULL).
 */
QUAY_INLINE size_t quay_pq_count(const quay_pq *pq);

/**
 * Number of elements in level prio (as quay_pq_count()).
 *
 * Concurrency: safe from any thread.
 * Returns: 0..capacity; 0 for NULL or prio >= levels.
 */
QUAY_INLINE size_t quay_pq_level_count(const quay_pq *pq, unsigned prio);

/**
 * The number of levels given at creation (0 for NULL).
 *
 * Concurrency: safe from any thread.
 */
QUAY_INLINE unsigned quay_pq_levels(const quay_pq *pq);

/**
 * The capacity of each level given at creation (0 for NULL).
 *
 * Concurrency: safe from any thread.
 */
QUAY_INLINE size_t quay_pq_capacity(const quay_pq *pq);

/**
 * The element size given at creation (0 for NULL).
 *
 * Concurrency: safe from any thread.
 */
QUAY_INLINE size_t quay_pq_elem_size(const quay_pq *pq);

/*
 * Priority queues in shared memory, between processes (docs/PQ.md,
 * "Shared memory"). A queue created in a shared memory file is attached
 * by other processes and used with the same calls, including the waiting
 * ones. As for rings (quay/ring.h, "Shared memory"):
 *  - every call costs a little more than in one process (full fences on
 *    the wake-up paths, compare-and-swap publish and release);
 *  - a process killed while it holds a slot of a level (between its claim
 *    and its publish or release) blocks that slot until a waiting call has
 *    seen it held for the stall bound; that call then frees it and returns
 *    -EOWNERDEAD (the element being pushed or popped is lost). A push that
 *    returned 0 is delivered once, unless it is that element;
 *  - quay_pq_fd() is not available (-ENOTSUP);
 *  - the processes sharing a queue trust each other: attach validates the
 *    file, but a process that writes into the mapping can make the others
 *    misbehave.
 * The waiting calls may then also return -EOWNERDEAD, and quay_pq_push()
 * and quay_pq_push_burst() may publish fewer elements than they claimed
 * (-EOWNERDEAD, or a smaller count) if a waiting call presumed them dead.
 */

/** Default stall bound of a shared priority queue (1 s). */
#define QUAY_PQ_SHM_STALL_DEFAULT_NS ((int64_t)1000000000)

/**
 * Options of quay_pq_create_shm(). Start from QUAY_PQ_SHM_OPTS_INIT; a
 * zero field means "the default".
 */
struct quay_pq_shm_opts {
	/** sizeof(struct quay_pq_shm_opts): the version of this struct. */
	uint32_t size;
	/** Permission bits of a named file (0: 0600). */
	uint32_t mode;
	/** How long a waiting call lets a slot stay held before it presumes
	 *  the holder dead, in ns (0: QUAY_PQ_SHM_STALL_DEFAULT_NS). */
	int64_t stall_ns;
};

/** Initialiser for struct quay_pq_shm_opts: every field "default". */
/* clang-format off */
#define QUAY_PQ_SHM_OPTS_INIT { (uint32_t)sizeof(struct quay_pq_shm_opts), 0u, 0 }
/* clang-format on */

/**
 * Create a priority queue in a new shared memory file and map it.
 *
 * name and fd_out as for quay_ring_create_shm(): "/something" creates
 * /dev/shm/something, which must not exist; NULL creates a sealed memfd
 * whose descriptor goes to fd_out (then required). opts gives the shape
 * as for quay_pq_create(), with no allocator (the memory is the file's).
 * shm may be NULL (defaults). Unmap with quay_pq_destroy().
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL (out NULL, name malformed, fd_out NULL
 *          for a memfd, opts invalid as for quay_pq_init() or with an
 *          allocator, bad shm options); -EEXIST if the name exists;
 *          -EACCES; -ENOMEM; or another negative errno of
 *          shm_open/memfd_create/ftruncate/mmap. On failure nothing is
 *          left behind and *out and *fd_out are untouched.
 */
QUAY_API int quay_pq_create_shm(const char *name, const struct quay_pq_opts *opts,
    const struct quay_pq_shm_opts *shm, quay_pq **out, int *fd_out);

/**
 * Map a priority queue made by quay_pq_create_shm() in this or another
 * process: by name (fd ignored) or, name NULL, by an open descriptor
 * (which stays the caller's). elem_size is the element size the caller
 * expects, or 0 to accept the file's. The file is checked before use: its
 * magic, version, checksum, size, shape, weights, the queue header and
 * every level ring's header.
 *
 * Concurrency: safe from any thread, and while other processes use the queue.
 * Returns: 0 and *out set; -EINVAL (out NULL, name malformed, fd < 0
 *          without a name, or fd not a regular file); -EBADF; -ENOENT;
 *          -EACCES; -EBADMSG if the file is not a quay priority queue or
 *          is corrupt, truncated or of another version; -EMSGSIZE if
 *          elem_size is not 0 and not the file's; -ENOMEM. *out is
 *          untouched on failure.
 */
QUAY_API int quay_pq_attach_shm(const char *name, int fd, size_t elem_size, quay_pq **out);

/**
 * Remove the name of a shared priority queue (shm_unlink): later attaches
 * by name fail; processes that have it mapped keep using it.
 *
 * Concurrency: safe from any thread.
 * Returns: 0; -EINVAL if name is malformed or NULL; -ENOENT; -EACCES.
 */
QUAY_API int quay_pq_unlink_shm(const char *name);

#include <quay/impl/pq_inline.h>

#ifdef __cplusplus
}
#endif

#endif /* QUAY_PQ_H */
