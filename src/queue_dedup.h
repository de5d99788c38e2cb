/* SPDX-License-Identifier: MIT */
/*
 * A queue's dedup window (src/queue_dedup.c): ids remembered for a
 * window of time, in a fixed table allocated at create. Never installed.
 * Thread-safe (its own lock, never held while taking another). An id's
 * key is XXH3-128 of its bytes; two ids with the same key are taken as
 * one (odds: docs/DURABILITY.md, "Dedup after a restart").
 */
#ifndef QUAY_QUEUE_DEDUP_H
#define QUAY_QUEUE_DEDUP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"

struct quayi_dedup_entry {
	uint64_t h1, h2;
	int64_t expires; /* 0: empty */
	bool pending;    /* checked, its send not yet logged: not walked */
};

struct quayi_dedup {
	pthread_mutex_t lock;
	struct quayi_dedup_entry *tab;      /* NULL: no window (every id is new) */
	size_t sets;                        /* of QUAYI_DEDUP_WAYS ways each, a power
	                              of two; an id lives in one of
	                              QUAYI_DEDUP_PROBE sets from its home set */
	int64_t window;                     /* ns an id is remembered */
	const struct quay_allocator *alloc; /* of tab */
};

#define QUAYI_DEDUP_WAYS 8u
/* An id lives in one of QUAYI_DEDUP_PROBE consecutive sets from its home
 * set (linear probing by sets), in a table of at least twice the ids it
 * must hold: the documented capacity is then really available (a set
 * full of live ids sends the next id on to its neighbours). */
#define QUAYI_DEDUP_PROBE 8u

/* window <= 0: no table (check always says new). Room for at least
 * capacity live ids. 0 or -ENOMEM. */
int quayi_dedup_init(struct quayi_dedup *d, const struct quay_allocator *a, int64_t window, size_t capacity);
void quayi_dedup_fini(struct quayi_dedup *d);
/* 1: a duplicate of an id remembered and not expired at now; 0: new (now
 * remembered until now + window); -EAGAIN: its probe window is full of
 * live ids. */
int quayi_dedup_check(struct quayi_dedup *d, const void *id, size_t len, int64_t now);
/* Forget id (a send that remembered it was then refused). */
void quayi_dedup_forget(struct quayi_dedup *d, const void *id, size_t len);

/* ---- a durable queue's window (src/queue_dedup_log.c) ---------------- */

/* The key of an id (XXH3-128, seed 0): what the table and a durable
 * queue's log remember of it. */
void quayi_dedup_key(const void *id, size_t len, uint64_t *h1, uint64_t *h2);
/* Remember a key until expires (recovery); a live entry of the same key
 * keeps the later expiry. 0 (also when already expired at now), or
 * -EAGAIN: its probe window is full of live ids. */
int quayi_dedup_seed(struct quayi_dedup *d, uint64_t h1, uint64_t h2, int64_t expires, int64_t now);
/* The send checked under key (h1, h2) was logged (a durable queue's log,
 * under its lock): the key is no longer pending. */
void quayi_dedup_commit(struct quayi_dedup *d, uint64_t h1, uint64_t h2);
/* Call visit for every entry live at now whose send was logged (not
 * pending: a pending send's key is in its own ADD, logged after any walk
 * that did not see it, or nowhere if the send fails), under the table's
 * lock (visit must not call back into the table). */
void quayi_dedup_walk(struct quayi_dedup *d, int64_t now,
    void (*visit)(void *ctx, uint64_t h1, uint64_t h2, int64_t expires), void *ctx);

#endif /* QUAY_QUEUE_DEDUP_H */
