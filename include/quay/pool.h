/* SPDX-License-Identifier: MIT */
/**
 * @file quay/pool.h
 * Bounded, lock-free pool of message buffers (docs/MESSAGES.md).
 *
 * A pool owns ONE arena of limit_bytes bytes, allocated at creation and
 * never grown. The arena is carved into buffers of a few size classes
 * (default 512 B, 1 KiB, 4 KiB, 16 KiB and 64 KiB; each buffer holds a
 * message envelope, its headers and its body). Every message of
 * quay/msg.h is one buffer; quay_msg_new() takes the smallest class that
 * fits (or the next larger one when that class is exhausted) and the last
 * quay_msg_unref() gives the buffer back, so memory freed by consumers is
 * reused and the pool never holds more than limit_bytes of buffers.
 *
 * Free buffers of each class sit on a lock-free stack whose top is one
 * 64-bit word: a 24-bit buffer index and a 40-bit generation bumped by
 * every push and pop, so a compare-and-swap that raced with a pop and a
 * push of the same buffer fails (the ABA problem; see docs/MESSAGES.md
 * for why tagged indices rather than ck_stack or epochs).
 *
 * Per-thread caches: each thread that uses the pool gets a small cache
 * per class (at most cache_size buffers and never more than a quarter of
 * the class spread over all caches). A cached buffer is counted against
 * the limit like one in use: it is part of the arena; stats report it as
 * "cached". Caches are flushed back to the shared stacks when the thread
 * exits (a pthread key destructor), by quay_pool_cache_flush(), when a
 * thread frees while another waits for memory, and at destroy.
 *
 * Concurrency (synchronisation table):
 *
 *   call                         x call              needs
 *   quay_msg_new/alloc/_wait     x any of them       nothing (lock-free;
 *     and the last unref                             _wait sleeps on a futex)
 *   quay_pool_stats              x anything          nothing (a snapshot)
 *   quay_pool_cache_flush        x anything          nothing (own cache only)
 *   quay_pool_create             x anything          nothing
 *   quay_pool_destroy            x anything          caller serialises: no
 *                                                    other call on the pool
 *
 * Ordering: everything a thread wrote into a message before its last
 * unref happens-before everything the thread that next gets the same
 * buffer does with it.
 */
#ifndef QUAY_POOL_H
#define QUAY_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <quay/alloc.h>
#include <quay/err.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Most size classes a pool may have. */
#define QUAY_POOL_CLASSES_MAX 8
/** Smallest buffer size of a class, in bytes (a multiple of 64). */
#define QUAY_POOL_CLASS_SIZE_MIN ((size_t)256)
/** Largest buffer size of a class, in bytes (16 MiB). */
#define QUAY_POOL_CLASS_SIZE_MAX ((size_t)1 << 24)
/** Most buffers in one class (the 24-bit index of the free stacks). */
#define QUAY_POOL_CLASS_COUNT_MAX (((uint32_t)1 << 24) - 1)
/** Largest limit accepted, in bytes (1 TiB). */
#define QUAY_POOL_LIMIT_MAX ((size_t)1 << 40)
/** Default per-thread cache size, per class, in buffers. */
#define QUAY_POOL_CACHE_DEFAULT 32u
/** Most buffers a thread cache may hold per class. */
#define QUAY_POOL_CACHE_MAX 1024u
/** Default number of threads that may have a cache at the same time. */
#define QUAY_POOL_CACHE_THREADS_DEFAULT 64u
/** Most threads that may have a cache at the same time. */
#define QUAY_POOL_CACHE_THREADS_MAX 4096u
/** Default bytes quay_msg_new() reserves for headers and reply-to beyond
 *  the body: 8 headers whose key and value together are 32 bytes
 *  (QUAY_MSG_HEADER_ROOM(8, 32) of quay/msg.h: 8 x 41 = 328). */
#define QUAY_POOL_HEADROOM_DEFAULT 328u

/** Flag: no per-thread caches (every alloc and free uses the shared stacks). */
#define QUAY_POOL_NO_CACHE 0x1u
/** Flag: never fall back to a larger class when the fitting one is empty. */
#define QUAY_POOL_EXACT_CLASS 0x2u
/** Every flag a caller may pass; other bits get -EINVAL. */
#define QUAY_POOL_FLAGS_ALL (QUAY_POOL_NO_CACHE | QUAY_POOL_EXACT_CLASS)

/** A pool (opaque). */
typedef struct quay_pool quay_pool;

/**
 * Creation options. Start from QUAY_POOL_OPTS_INIT; a zero field means
 * "the default".
 */
struct quay_pool_opts {
	/** sizeof(struct quay_pool_opts): the version of this struct. */
	uint32_t size;
	/** QUAY_POOL_* flags. */
	uint32_t flags;
	/** Number of classes in class_size (0: the five default classes). */
	uint32_t nclasses;
	/** Buffer size of each class in bytes, strictly ascending, each a
	 *  multiple of 64 in QUAY_POOL_CLASS_SIZE_MIN..QUAY_POOL_CLASS_SIZE_MAX.
	 *  A buffer holds the 128-byte envelope, the headers and the body. */
	uint32_t class_size[QUAY_POOL_CLASSES_MAX];
	/** Buffers of each class. All zero: the limit is split evenly in
	 *  bytes between the classes (the rest goes to the smallest). All set:
	 *  the sum of count x size must not exceed the limit. */
	uint32_t class_count[QUAY_POOL_CLASSES_MAX];
	/** Per-thread cache, per class, in buffers (0: QUAY_POOL_CACHE_DEFAULT;
	 *  at most QUAY_POOL_CACHE_MAX; QUAY_POOL_NO_CACHE turns caches off). */
	uint32_t cache_size;
	/** Threads that may hold a cache at once (0: the default; at most
	 *  QUAY_POOL_CACHE_THREADS_MAX). Further threads run without one. */
	uint32_t cache_threads;
	/** Bytes quay_msg_new() reserves for headers and reply-to beyond the
	 *  body (0: QUAY_POOL_HEADROOM_DEFAULT). */
	uint32_t headroom;
	/** Clock stamping a new message's created time, in ns (NULL:
	 *  quay_queue_clock_tsc(), CLOCK_REALTIME from the TSC where the CPU
	 *  has an invariant TSC and the kernel keeps time with it, within
	 *  100 us, as the queue's default; tests inject a fake one). Must be
	 *  thread-safe. */
	int64_t (*clock)(void *clock_arg);
	/** Passed to clock. */
	void *clock_arg;
	/** Where the pool's memory (message buffers included) comes from
	 *  (NULL: the C library); see quay/alloc.h. Kept, not copied: it must
	 *  outlive the pool. */
	const struct quay_allocator *allocator;
};

/** Initialiser for struct quay_pool_opts: every field "default". */
/* clang-format off */
#define QUAY_POOL_OPTS_INIT \
	{ (uint32_t)sizeof(struct quay_pool_opts), 0u, 0u, {0}, {0}, 0u, 0u, 0u, NULL, NULL, NULL }
/* clang-format on */

/** One class in struct quay_pool_stats. */
struct quay_pool_class_stats {
	/** Buffer size in bytes (envelope included). */
	size_t buf_size;
	/** Buffers in the class. */
	uint32_t buffers;
	/** Buffers held by messages (handed out, not yet given back). */
	uint32_t in_use;
	/** Free buffers sitting in thread caches. */
	uint32_t cached;
	/** Free buffers on the shared stack (buffers - in_use - cached). */
	uint32_t free;
	/** Most buffers ever off the shared stack at once (in use or cached):
	 *  an upper bound of the peak in use, exact without caches. */
	uint32_t hwm;
	/** Per-thread cache capacity of this class, in buffers. */
	uint32_t cache_cap;
};

/** A snapshot of a pool's use (quay_pool_stats()). */
struct quay_pool_stats {
	/** The limit given at creation, in bytes. */
	size_t limit_bytes;
	/** Bytes of buffers the arena really holds (<= limit_bytes). */
	size_t arena_bytes;
	/** Bytes of buffers held by messages (sum over classes). */
	size_t in_use_bytes;
	/** Buffers held by messages (sum over classes). */
	uint64_t in_use;
	/** Allocations that failed for want of memory (-ENOMEM, and
	 *  -ETIMEDOUT of the waiting calls). */
	uint64_t alloc_failures;
	/** Times a waiting allocation went to sleep. */
	uint64_t waits;
	/** Number of classes (entries of cls that are valid). */
	uint32_t nclasses;
	/** Per class, smallest first. */
	struct quay_pool_class_stats cls[QUAY_POOL_CLASSES_MAX];
};

/**
 * Create a pool of at most limit_bytes bytes of message buffers.
 *
 * The arena (limit_bytes, rounded down to whole buffers) and all the
 * bookkeeping (4 bytes per buffer, plus 4 bytes per cache slot) are
 * allocated here, once. Pages of the arena are touched only when first
 * used.
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL if out is NULL, limit_bytes is 0 or
 *          above QUAY_POOL_LIMIT_MAX, opts has a wrong size, unknown
 *          flags or an allocator without alloc or free, a class size is 0, unaligned, out of range or not
 *          ascending, cache_size or cache_threads is too large, counts
 *          are partly given or exceed the limit, or the limit cannot hold
 *          one buffer of every class; -ENOMEM if the memory cannot be
 *          allocated. *out is untouched on failure. (If no pthread key is
 *          left for the caches, the pool works without them.)
 */
QUAY_API int quay_pool_create(size_t limit_bytes, const struct quay_pool_opts *opts, quay_pool **out);

/**
 * Destroy a pool and free its memory, unless messages are still out.
 *
 * Buffers in thread caches (of threads alive or exited) do not count as
 * out. A pool whose messages are not all unreferenced is left untouched
 * (memory still referenced is never freed): unref them, then call again.
 *
 * Concurrency: no other call may use the pool, and every thread that
 * used it must have returned from its last call (a thread may stay alive
 * if it never uses the pool again; exiting threads must have been joined).
 * Returns: 0; -EAGAIN if messages of this pool are still referenced
 *          (nothing changed); -EINVAL if pool is NULL.
 */
QUAY_API int quay_pool_destroy(quay_pool *pool);

/**
 * Take a snapshot of the pool's use.
 *
 * Concurrency: safe from any thread, concurrently with anything but
 *              destroy. Each counter is read once; the set is exact only
 *              when no thread allocates or frees.
 * Returns: 0; -EINVAL if pool or out is NULL.
 */
QUAY_API int quay_pool_stats(const quay_pool *pool, struct quay_pool_stats *out);

/**
 * Give the calling thread's cached buffers back to the shared stacks
 * (and wake threads waiting for memory). A thread exiting does this by
 * itself; call it from a long-lived thread that stops using the pool.
 *
 * Concurrency: safe from any thread; touches only the caller's cache.
 * Returns: 0; -EINVAL if pool is NULL.
 */
QUAY_API int quay_pool_cache_flush(quay_pool *pool);

/**
 * The largest body a message of this pool can carry (largest class minus
 * the envelope), in bytes; 0 for NULL.
 *
 * Concurrency: safe from any thread.
 */
QUAY_API size_t quay_pool_max_body(const quay_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_POOL_H */
