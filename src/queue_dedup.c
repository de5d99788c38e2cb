/* SPDX-License-Identifier: MIT */
/*
 * The dedup window of a queue (src/queue_dedup.h; docs/QUEUE.md, "Dedup").
 * A set-associative table of id hashes with their expiry, under one
 * mutex: a send with a dedup id takes it once.
 */
#include "queue_dedup.h"

#include "clock.h"

#include <errno.h>
#include <stdlib.h>

#include <xxhash.h>

static size_t
pow2_at_least(size_t n)
{
	size_t p = 1;

	while (p < n)
		p <<= 1;
	return p;
}

/* The key of an id: XXH3-128 of its bytes, seed 0 (libxxhash). It is
 * persisted (a durable queue's DEDUP records, docs/DURABILITY.md): never
 * change it without a new record type. */
void
quayi_dedup_key(const void *id, size_t len, uint64_t *h1, uint64_t *h2)
{
	XXH128_hash_t h = XXH3_128bits(id, len);

	*h1 = h.low64;
	*h2 = h.high64;
}

/* The entry of way w in the probe-th set after id's home set h1. */
static inline struct quayi_dedup_entry *
entry(const struct quayi_dedup *d, uint64_t h1, unsigned probe, unsigned w)
{
	return &d->tab[((h1 + probe) & (d->sets - 1)) * QUAYI_DEDUP_WAYS + w];
}

int
quayi_dedup_init(struct quayi_dedup *d, const struct quay_allocator *a, int64_t window, size_t capacity)
{
	pthread_mutex_init(&d->lock, NULL);
	d->alloc = a;
	d->tab = NULL;
	d->sets = 0;
	d->window = window;
	if (window <= 0)
		return 0;
	/* At least twice the ids (see QUAYI_DEDUP_PROBE), and a full window. */
	d->sets = pow2_at_least((2 * capacity + QUAYI_DEDUP_WAYS - 1) / QUAYI_DEDUP_WAYS);
	if (d->sets < QUAYI_DEDUP_PROBE)
		d->sets = QUAYI_DEDUP_PROBE;
	d->tab = quayi_calloc(a, d->sets * QUAYI_DEDUP_WAYS, sizeof(*d->tab));
	return d->tab != NULL ? 0 : -ENOMEM;
}

void
quayi_dedup_fini(struct quayi_dedup *d)
{
	quayi_free(d->alloc, d->tab, d->sets * QUAYI_DEDUP_WAYS * sizeof(*d->tab));
	d->tab = NULL;
	pthread_mutex_destroy(&d->lock);
}

int
quayi_dedup_check(struct quayi_dedup *d, const void *id, size_t len, int64_t now)
{
	uint64_t h1, h2;
	struct quayi_dedup_entry *room = NULL;
	int rc = 0;

	if (d->tab == NULL)
		return 0;
	quayi_dedup_key(id, len, &h1, &h2);
	pthread_mutex_lock(&d->lock);
	/* Expired entries are reused in place, so a live copy of id may sit
	 * after a free way: look at the whole window. */
	for (unsigned p = 0; p < QUAYI_DEDUP_PROBE && rc == 0; p++) {
		for (unsigned w = 0; w < QUAYI_DEDUP_WAYS; w++) {
			struct quayi_dedup_entry *e = entry(d, h1, p, w);

			if (e->expires > now && e->h1 == h1 && e->h2 == h2) {
				rc = 1;
				break;
			}
			if (e->expires <= now && room == NULL)
				room = e;
		}
	}
	if (rc == 0) {
		if (room == NULL) {
			rc = -EAGAIN;
		} else {
			room->h1 = h1;
			room->h2 = h2;
			room->expires = quayi_ns_add_sat(now, d->window);
			room->pending = true;
		}
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

void
quayi_dedup_forget(struct quayi_dedup *d, const void *id, size_t len)
{
	uint64_t h1, h2;

	if (d->tab == NULL)
		return;
	quayi_dedup_key(id, len, &h1, &h2);
	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < QUAYI_DEDUP_PROBE; p++)
		for (unsigned w = 0; w < QUAYI_DEDUP_WAYS; w++) {
			struct quayi_dedup_entry *e = entry(d, h1, p, w);

			if (e->expires != 0 && e->h1 == h1 && e->h2 == h2)
				e->expires = 0;
		}
	pthread_mutex_unlock(&d->lock);
}

int
quayi_dedup_seed(struct quayi_dedup *d, uint64_t h1, uint64_t h2, int64_t expires, int64_t now)
{
	struct quayi_dedup_entry *room = NULL;
	int rc = -EAGAIN;

	if (d->tab == NULL || expires <= now)
		return 0;
	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < QUAYI_DEDUP_PROBE && rc != 0; p++)
		for (unsigned w = 0; w < QUAYI_DEDUP_WAYS; w++) {
			struct quayi_dedup_entry *e = entry(d, h1, p, w);

			if (e->expires > now && e->h1 == h1 && e->h2 == h2) {
				if (expires > e->expires)
					e->expires = expires; /* the later of two accepts */
				rc = 0;
				break;
			}
			if (e->expires <= now && room == NULL)
				room = e;
		}
	if (rc != 0 && room != NULL) {
		*room = (struct quayi_dedup_entry){ h1, h2, expires, false };
		rc = 0;
	}
	pthread_mutex_unlock(&d->lock);
	return rc;
}

void
quayi_dedup_commit(struct quayi_dedup *d, uint64_t h1, uint64_t h2)
{
	if (d->tab == NULL)
		return;
	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < QUAYI_DEDUP_PROBE; p++)
		for (unsigned w = 0; w < QUAYI_DEDUP_WAYS; w++) {
			struct quayi_dedup_entry *e = entry(d, h1, p, w);

			if (e->pending && e->h1 == h1 && e->h2 == h2)
				e->pending = false;
		}
	pthread_mutex_unlock(&d->lock);
}

void
quayi_dedup_walk(struct quayi_dedup *d, int64_t now,
    void (*visit)(void *ctx, uint64_t h1, uint64_t h2, int64_t expires), void *ctx)
{
	if (d->tab == NULL)
		return;
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->sets * QUAYI_DEDUP_WAYS; i++)
		if (d->tab[i].expires > now && !d->tab[i].pending)
			visit(ctx, d->tab[i].h1, d->tab[i].h2, d->tab[i].expires);
	pthread_mutex_unlock(&d->lock);
}
