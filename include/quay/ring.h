/* SPDX-License-Identifier: MIT */
/**
 * @file quay/ring.h
 * Bounded lock-free ring of fixed-size elements.
 *
 * A ring holds up to `capacity` elements (a power of two) of `elem_size`
 * bytes (a multiple of 8, 8..QUAY_RING_ELEM_MAX). Elements are copied in
 * and out. The producer and consumer sides are chosen at creation:
 *
 *   flags                          producers   consumers
 *   0 (default)                    many        many        (MPMC)
 *   QUAY_RING_SP                   one         many        (SPMC)
 *   QUAY_RING_SC                   many        one         (MPSC)
 *   QUAY_RING_SP | QUAY_RING_SC    one         one         (SPSC)
 *
 * ("any push" is push, push_burst, push_bulk or push_wait; "any pop" alike.)
 * The same calls work in every mode; "one" means the caller guarantees
 * that at most one thread runs that side's calls at a time (the single
 * side then skips its compare-and-swap).
 *
 * Design (details in docs/RING.md): every slot carries a sequence word
 * next to its element, so a push or pop touches one slot and one index;
 * full, empty and ownership are read from the slot itself. A thread that
 * is preempted in the middle of a push or pop holds only its own slot:
 * other producers keep producing into the following slots, and other
 * consumers stop only when they reach that one slot. SPSC mode has no
 * sequence words: the elements lie back to back, each side keeps a copy
 * of the other's index and re-reads it only when that copy says full
 * (empty), and a burst or bulk of n moves with one or two memcpy and one
 * index store. The same calls and guarantees hold in every mode.
 *
 * ABI: push, pop and the bursts are inline, so they are compiled into the
 * program; the program and libquay must come from the same release (the
 * soname changes when what the ring's layout means changes).
 *
 * Concurrency (synchronisation table):
 *
 *   call                  x call                  needs
 *   any push              x any pop               nothing (lock-free)
 *   any push (MP mode)    x any push (MP mode)    nothing
 *   any push (SP mode)    x any push (SP mode)    caller serialises
 *   any pop (MC mode)     x any pop (MC mode)     nothing
 *   any pop (SC mode)     x any pop (SC mode)     caller serialises
 *   close                 x anything              nothing
 *   count, capacity       x anything              nothing (count is a snapshot)
 *   init, destroy         x anything              caller serialises (no user)
 *
 * Ordering: everything a thread wrote before a successful push of an
 * element happens-before everything the thread that pops that element
 * does after its pop (release on push, acquire on pop).
 *
 * Blocking: quay_ring_push_wait()/quay_ring_pop_wait() spin briefly, then
 * sleep on a futex. Non-waiting pushes and pops never make a system call
 * and pay one plain load of a read-mostly word to learn that nobody
 * sleeps; the sleeper side pays for the memory barrier instead (Linux
 * membarrier(2), as liburcu's memb flavour; a fence on both sides where
 * membarrier is unavailable).
 */
#ifndef QUAY_RING_H
#define QUAY_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <quay/err.h>
#include <quay/alloc.h>
#include <quay/impl/compiler.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Flag: a single producer (the caller serialises pushes). */
#define QUAY_RING_SP 0x1u
/** Flag: a single consumer (the caller serialises pops). */
#define QUAY_RING_SC 0x2u
/** Every flag a caller may pass; other bits get -EINVAL. */
#define QUAY_RING_FLAGS_ALL (QUAY_RING_SP | QUAY_RING_SC)

/** Largest capacity accepted (2^30 elements). */
#define QUAY_RING_CAPACITY_MAX ((size_t)1 << 30)
/** Largest element size accepted, in bytes. */
#define QUAY_RING_ELEM_MAX ((size_t)4096)

/** A ring. Layout in quay/impl/ring_inline.h: read-only for users. */
typedef struct quay_ring quay_ring;

/**
 * Bytes of memory a ring of this shape needs (for quay_ring_init()).
 *
 * Concurrency: safe from any thread.
 * Returns: the size in bytes, or 0 if capacity is not a power of two in
 *          1..QUAY_RING_CAPACITY_MAX or elem_size is not a multiple of 8 in
 *          8..QUAY_RING_ELEM_MAX.
 */
QUAY_API size_t quay_ring_memsize(size_t capacity, size_t elem_size);

/**
 * Initialise a ring in caller-provided memory.
 *
 * r must point to at least quay_ring_memsize(capacity, elem_size) bytes
 * aligned to QUAY_CACHELINE (64). The memory stays the caller's: a ring
 * made this way needs no destroy (quay_ring_destroy() ignores it).
 *
 * Concurrency: no other call may use r until this returns.
 * Returns: 0; -EINVAL if r is NULL or misaligned, capacity is not a power
 *          of two in 1..QUAY_RING_CAPACITY_MAX, elem_size is not a multiple
 *          of 8 in 8..QUAY_RING_ELEM_MAX, or flags has unknown bits.
 */
QUAY_API int quay_ring_init(quay_ring *r, size_t capacity, size_t elem_size, unsigned flags);

/**
 * Allocate and initialise a ring.
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL (out NULL, or as quay_ring_init());
 *          -ENOMEM if the memory cannot be allocated. *out is untouched
 *          on failure.
 */
QUAY_API int quay_ring_create(size_t capacity, size_t elem_size, unsigned flags, quay_ring **out);

/** Options of quay_ring_create_opts(). Start from QUAY_RING_OPTS_INIT. */
struct quay_ring_opts {
	size_t size; /**< sizeof(struct quay_ring_opts) */
	/** QUAY_RING_SP, QUAY_RING_SC (0: multi-producer, multi-consumer). */
	unsigned flags;
	/** Where the ring's memory comes from (NULL: the C library); see
	 *  quay/alloc.h. Kept, not copied: it must outlive the ring. */
	const struct quay_allocator *allocator;
};

/* clang-format off */
#define QUAY_RING_OPTS_INIT { sizeof(struct quay_ring_opts), 0u, NULL }
/* clang-format on */

/**
 * Allocate and initialise a ring, as quay_ring_create() with the options
 * (NULL: QUAY_RING_OPTS_INIT).
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL (out NULL, opts->size not
 *          sizeof(struct quay_ring_opts), an allocator without alloc or
 *          free, or as quay_ring_init()); -ENOMEM if the memory cannot be
 *          allocated. *out is untouched on failure.
 */
QUAY_API int quay_ring_create_opts(size_t capacity, size_t elem_size, const struct quay_ring_opts *opts,
    quay_ring **out);

/**
 * Free a ring made by quay_ring_create() or quay_ring_create_opts(), or
 * unmap (detach) one made or attached by quay_ring_create_shm() or
 * quay_ring_attach_shm(), whose elements stay in the file for the other
 * processes. NULL and rings made by quay_ring_init() are ignored.
 * Elements still inside a ring that is freed are discarded.
 *
 * Concurrency: no other thread may be using r (close it and join them).
 */
QUAY_API void quay_ring_destroy(quay_ring *r);

/**
 * Copy one element into the ring.
 *
 * Concurrency: lock-free; see the table at the top of this file.
 * Ordering: release (RING-R1 in impl/ring_inline.h, pairs with RING-A1 in pop;
 * SPSC mode: RING-R3, pairs with RING-A3).
 * Returns: 0; -EAGAIN if the ring is full; -EPIPE if it is closed;
 *          -EINVAL if r or elem is NULL. Nothing is written on failure.
 *          A shared ring only: -EOWNERDEAD if this call stalled past the
 *          stall bound and its element was dropped (see below).
 */
QUAY_INLINE int quay_ring_push(quay_ring *r, const void *elem);

/**
 * Copy the oldest element out of the ring into out (elem_size bytes).
 *
 * Concurrency: lock-free; see the table at the top of this file.
 * Ordering: acquire (RING-A1, pairs with RING-R1 in push; SPSC mode: RING-A3,
 * pairs with RING-R3).
 * Returns: 0; -EAGAIN if the ring is empty (or its next element is still
 *          being written); -EPIPE if the ring is closed and drained;
 *          -EINVAL if r or out is NULL. A shared ring only: -EOWNERDEAD
 *          if this call stalled past the stall bound and the element it
 *          took was discarded (out holds garbage).
 */
QUAY_INLINE int quay_ring_pop(quay_ring *r, void *out);

/**
 * Push up to n elements (contiguous, elem_size bytes each), in order.
 *
 * Concurrency, Ordering: as quay_ring_push().
 * Returns: the number pushed (the first that many of elems), 0..n. 0 if
 *          the ring is full or closed (quay_ring_is_closed() tells which)
 *          or r or elems is NULL.
 */
QUAY_INLINE size_t quay_ring_push_burst(quay_ring *r, const void *elems, size_t n);

/**
 * Pop up to n elements into out (room for n elements), oldest first.
 *
 * Concurrency, Ordering: as quay_ring_pop().
 * Returns: the number popped, 0..n; 0 if empty, or r or out is NULL.
 */
QUAY_INLINE size_t quay_ring_pop_burst(quay_ring *r, void *out, size_t n);

/**
 * Push all n elements or none.
 *
 * Concurrency, Ordering: as quay_ring_push().
 * Returns: 0 (all pushed; also for n == 0); -EAGAIN if fewer than n slots
 *          are free; -EPIPE if the ring is closed; -EINVAL if r is NULL,
 *          elems is NULL with n > 0, or n exceeds the capacity (it could
 *          never succeed).
 */
QUAY_INLINE int quay_ring_push_bulk(quay_ring *r, const void *elems, size_t n);

/**
 * Pop exactly n elements or none.
 *
 * Concurrency, Ordering: as quay_ring_pop().
 * Returns: 0 (n popped; also for n == 0); -EAGAIN if fewer than n are
 *          ready; -EPIPE if the ring is closed and holds fewer than n
 *          (quay_ring_pop_burst() drains the rest); -EINVAL if r is NULL,
 *          out is NULL with n > 0, or n exceeds the capacity.
 */
QUAY_INLINE int quay_ring_pop_bulk(quay_ring *r, void *out, size_t n);

/**
 * Push one element, sleeping while the ring is full.
 *
 * timeout_ns < 0 waits forever; 0 tries once. Spins briefly before it
 * sleeps; a pop or close wakes it.
 *
 * Concurrency: as quay_ring_push(); any number of threads may wait.
 * Ordering: as quay_ring_push().
 * Returns: 0; -ETIMEDOUT if the ring stayed full for timeout_ns; -EPIPE
 *          if it is or becomes closed; -EINVAL if r or elem is NULL. A
 *          shared ring only: -EOWNERDEAD if it freed a slot held past the
 *          stall bound (nothing pushed; call again) or as quay_ring_push().
 */
QUAY_API int quay_ring_push_wait(quay_ring *r, const void *elem, int64_t timeout_ns);

/**
 * Pop one element, sleeping while the ring is empty.
 *
 * timeout_ns < 0 waits forever; 0 tries once. A push or close wakes it.
 *
 * Concurrency: as quay_ring_pop(); any number of threads may wait.
 * Ordering: as quay_ring_pop().
 * Returns: 0; -ETIMEDOUT if nothing arrived within timeout_ns; -EPIPE if
 *          the ring is closed and drained; -EINVAL if r or out is NULL. A
 *          shared ring only: -EOWNERDEAD if it skipped a slot held past the
 *          stall bound (nothing popped; call again) or as quay_ring_pop().
 */
QUAY_API int quay_ring_pop_wait(quay_ring *r, void *out, int64_t timeout_ns);

/**
 * Close the ring: later pushes fail with -EPIPE, pops return what is
 * left and then -EPIPE, and every thread sleeping in a wait call wakes.
 * Every push that returned 0 is still delivered, and no element is
 * delivered after a pop returned -EPIPE. Idempotent; NULL is ignored.
 *
 * In single-producer mode a push that races with close claims its slot
 * and then takes the claim back; while it does, a pop may return -EAGAIN
 * (and pop_wait waits) even after another pop returned -EPIPE.
 *
 * Concurrency: safe from any thread, concurrently with anything but
 *              destroy. May make one membarrier(2) system call.
 * Ordering: a pop that returns -EPIPE happens after the close.
 */
QUAY_API void quay_ring_close(quay_ring *r);

/**
 * Whether quay_ring_close() has been called (0 for NULL).
 *
 * Concurrency: safe from any thread. Ordering: acquire.
 */
QUAY_INLINE bool quay_ring_is_closed(const quay_ring *r);

/**
 * A file descriptor that polls readable while a pop would make progress:
 * an element is ready, or the ring is closed and drained (pop says
 * -EPIPE). For epoll, poll, select, libuv and the like (docs/POLLING.md).
 *
 * Made on the first call (an eventfd; later calls return the same one);
 * until then nothing changes for the ring's users. Then pushes still make
 * no system call while the ring is non-empty: the descriptor is signalled
 * once per empty -> non-empty transition, and on close.
 *
 * Level-triggered while something is ready, with one rule: readiness is
 * cleared (re-armed) only by a pop (any pop call, by any thread) that
 * finds the ring empty. So after a wake, pop until -EAGAIN (or -EPIPE);
 * the descriptor may then still read readable once with nothing left
 * (a spurious wake: pop says -EAGAIN and re-arms). Never read or write
 * the descriptor yourself, and never close it: quay_ring_destroy() does
 * (also for a ring made by quay_ring_init(), which must then be passed to
 * quay_ring_destroy() once no thread uses it; the memory stays yours).
 * Remove it from your poller before destroying the ring. Not for a ring
 * in memory shared with another process (the signal is per process).
 *
 * Concurrency: safe from any thread, concurrently with anything but
 *              destroy.
 * Returns: the descriptor (>= 0); -EINVAL if r is NULL; -ENOTSUP if r is
 *          in shared memory (quay_ring_create_shm(): wakers in other
 *          processes could not signal it); -ENOMEM if it cannot be made
 *          (memory, or the process or system is out of descriptors).
 */
QUAY_API int quay_ring_fd(quay_ring *r);

/**
 * Number of elements in the ring (pushed and not yet popped; includes
 * pushes in progress). A snapshot: exact when no push or pop runs.
 *
 * Concurrency: safe from any thread. Returns: 0..capacity (0 for NULL).
 */
QUAY_INLINE size_t quay_ring_count(const quay_ring *r);

/**
 * The capacity given at creation (0 for NULL).
 *
 * Concurrency: safe from any thread.
 */
QUAY_INLINE size_t quay_ring_capacity(const quay_ring *r);

/**
 * The element size given at creation (0 for NULL).
 *
 * Concurrency: safe from any thread.
 */
QUAY_INLINE size_t quay_ring_elem_size(const quay_ring *r);

/*
 * Rings in shared memory, between processes (docs/RING.md, "Shared
 * memory"). The ring lives in a file: a new memfd, or a name under
 * /dev/shm. Every process that maps it uses the calls above on its own
 * quay_ring pointer (the ring holds no pointers). Elements are copied
 * bytes: never put a pointer in one.
 *
 * Differences from a ring in one process:
 *  - Wakers use a full fence (membarrier(2) reaches one process only) and
 *    the futexes are shared; QUAY_RING_SP is accepted but producers still
 *    claim with a compare-and-swap (close needs it across processes).
 *  - A process that dies (or stalls) inside a push or pop holds its slot.
 *    A waiting call (quay_ring_push_wait/quay_ring_pop_wait, timeout not 0)
 *    that finds the slot it needs held for the ring's stall bound
 *    (stall_ns) presumes the holder dead, frees the slot and returns
 *    -EOWNERDEAD: a pop_wait skips the element a dead producer was
 *    writing, a push_wait discards the element a dead consumer was
 *    reading, and nothing is pushed or popped by that call. A holder that
 *    was only slow then fails: its push or pop returns -EOWNERDEAD (its
 *    element was not delivered, or was discarded). So every push that
 *    returned 0 is popped at most once, and exactly once unless its
 *    consumer died or stalled past stall_ns inside that pop. Calls that
 *    do not wait (timeout 0, push, pop, bursts) never free a slot: they
 *    return -EAGAIN (or 0 elements) while it is held.
 *  - On a shared ring, push_bulk and pop_bulk return -EOWNERDEAD when some
 *    of their elements were lost that way; push_burst returns how many of
 *    the first elements were published; pop_burst packs the delivered
 *    elements at the front of out and returns their number.
 *  - The processes sharing a ring trust each other: quay_ring_attach_shm()
 *    validates the file, but the shape is read from the mapping on every
 *    call, so a process that writes into the ring's header later can make
 *    the others write past their buffers or outside the mapping.
 */

/** Default stall bound of a shared ring (1 s). */
#define QUAY_RING_SHM_STALL_DEFAULT_NS ((int64_t)1000000000)

/**
 * Options of quay_ring_create_shm(). Start from QUAY_RING_SHM_OPTS_INIT;
 * a zero field means "the default".
 */
struct quay_ring_shm_opts {
	/** sizeof(struct quay_ring_shm_opts): the version of this struct. */
	size_t size;
	/** QUAY_RING_SP and/or QUAY_RING_SC, as for quay_ring_create(). */
	uint32_t flags;
	/** Permission bits of a named file (0: 0600). */
	uint32_t mode;
	/** How long a waiting call lets a slot stay held before it presumes
	 *  the holder dead, in ns (0: QUAY_RING_SHM_STALL_DEFAULT_NS). */
	int64_t stall_ns;
};

/** Initialiser for struct quay_ring_shm_opts: every field "default". */
/* clang-format off */
#define QUAY_RING_SHM_OPTS_INIT { sizeof(struct quay_ring_shm_opts), 0u, 0u, 0 }
/* clang-format on */

/**
 * Create a ring in a new shared memory file and map it.
 *
 * name "/something" (one leading slash, no other, at most 255 bytes)
 * creates /dev/shm/something, which must not exist; other processes
 * attach by name, and quay_ring_unlink_shm() removes the name. name NULL
 * creates an anonymous memfd, sealed against resizing; other processes
 * attach with its file descriptor (inherited over fork(), or passed over
 * a Unix socket). opts may be NULL.
 *
 * fd_out, if not NULL, receives an open file descriptor of the file
 * (close-on-exec), which the caller owns and closes; it is required for a
 * memfd (it is the only way to reach the file).
 *
 * The ring stays in the file until the file goes (the name is unlinked,
 * or the last descriptor and mapping of the memfd are gone). Unmap it
 * with quay_ring_destroy().
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL (out NULL, name malformed, fd_out NULL
 *          for a memfd, bad opts, or a shape quay_ring_init() rejects);
 *          -EEXIST if the name exists; -EACCES; -ENOMEM; or another
 *          negative errno of shm_open/memfd_create/ftruncate/mmap. On
 *          failure nothing is left behind (a name this call created is
 *          unlinked) and *out and *fd_out are untouched.
 */
QUAY_API int quay_ring_create_shm(const char *name, size_t capacity, size_t elem_size,
    const struct quay_ring_shm_opts *opts, quay_ring **out, int *fd_out);

/**
 * Map a ring made by quay_ring_create_shm() in this or another process.
 *
 * Give the name (fd ignored) or, with name NULL, an open descriptor of
 * the file (which stays the caller's). elem_size is the element size the
 * caller expects, or 0 to accept the file's (quay_ring_elem_size() tells).
 * The file is checked before use: its magic, version, header checksum,
 * size (a truncated or extended file is rejected), shape and flags.
 *
 * Concurrency: safe from any thread, and while other processes use the ring.
 * Returns: 0 and *out set; -EINVAL (out NULL, name malformed, fd < 0
 *          without a name, or fd not a regular file); -EBADF (fd not
 *          open); -ENOENT (no such name); -EACCES; -EBADMSG if the file is
 *          not a quay ring or is corrupt, truncated or of another version;
 *          -EMSGSIZE if elem_size is not 0 and not the file's; -ENOMEM.
 *          *out is untouched on failure.
 */
QUAY_API int quay_ring_attach_shm(const char *name, int fd, size_t elem_size, quay_ring **out);

/**
 * Remove the name of a shared ring (shm_unlink): later attaches by name
 * fail; processes that have it mapped keep using it.
 *
 * Concurrency: safe from any thread.
 * Returns: 0; -EINVAL if name is malformed or NULL; -ENOENT; -EACCES.
 */
QUAY_API int quay_ring_unlink_shm(const char *name);

#include <quay/impl/ring_inline.h>

#ifdef __cplusplus
}
#endif

#endif /* QUAY_RING_H */
