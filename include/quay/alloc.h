/* SPDX-License-Identifier: MIT */
/**
 * @file quay/alloc.h
 * Allocator hooks: where an object's memory comes from.
 *
 * Every allocating constructor takes an optional allocator in its options
 * (a field named allocator; for the ring, quay_ring_create_opts()). NULL,
 * the default, is the C library (malloc, aligned_alloc, free). There is no
 * global allocator: the choice is per object, and every object an object
 * creates (a bus's subscriptions and their rings, a queue's timer wheel,
 * dedup tables and durable state, a WAL's buffers, a registry's metrics, a
 * pool's message memory, an HTTP or NATS handle's tables) comes from its
 * parent's allocator, as do the temporary buffers its calls use.
 *
 * The library keeps the pointer, not a copy: the struct (and whatever ctx
 * points to) must stay valid and unchanged until the last object created
 * with it is destroyed. Allocations the library cannot route through it
 * (those made inside libnats, libmicrohttpd, liburcu and the C library's
 * stdio) are listed in docs/MEMORY.md.
 */
#ifndef QUAY_ALLOC_H
#define QUAY_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * An application-supplied allocator (ck_malloc's shape: a sized free).
 *
 * alloc: return size bytes (size > 0) aligned to align (a power of two,
 *   at least sizeof(void *); the library asks for more than
 *   alignof(max_align_t) only for cache-line (64) and page (4096) aligned
 *   objects), or NULL when it cannot; the library then fails the call with
 *   -ENOMEM and releases what it took before.
 * free: release p, which alloc (or realloc) returned with exactly this
 *   size and align. Never called with NULL.
 * realloc: optional (NULL: the library allocates, copies and frees).
 *   Resize p (old_size bytes, alignment align) to new_size bytes keeping
 *   the first min(old_size, new_size); on failure return NULL and leave p
 *   as it was.
 * ctx: passed to every call, untouched by the library.
 *
 * Concurrency: the functions are called from any thread that uses an
 * object made with the allocator, concurrently, and must be thread-safe.
 * They must not call back into quay on the same object.
 */
struct quay_allocator {
	void *(*alloc)(void *ctx, size_t size, size_t align);
	void (*free)(void *ctx, void *p, size_t size, size_t align);
	void *(*realloc)(void *ctx, void *p, size_t old_size, size_t new_size, size_t align);
	void *ctx;
};

#ifdef __cplusplus
}
#endif

#endif /* QUAY_ALLOC_H */
