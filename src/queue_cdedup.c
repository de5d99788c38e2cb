/* SPDX-License-Identifier: MIT */
/*
 * Content-based dedup (QUAY_QUEUE_CONTENT_DEDUP): a message sent without
 * QUAY_MSG_H_DEDUP_ID is a duplicate if a message with the same body and
 * the same group was accepted within the dedup window. The key is
 * XXH3-128 (libxxhash) of the body, seeded with XXH3-64 of the group id;
 * a key hit is only a candidate: the bodies and groups are compared, so
 * two different messages are never taken as one, even on a collision.
 * For that the table keeps a reference to each remembered message until
 * its entry is reused after the window (or the queue is destroyed): the
 * window's messages stay allocated in their pool (docs/QUEUE.md).
 * After a restart of a durable queue, a key recovered from the log keeps
 * its message when the message came back with the queue and its send's
 * ADD is still in the log; a key whose message is gone (acked before the
 * restart), or came back from a DEDUP record, is kept alone, and a hit on
 * it is a duplicate without a comparison (docs/DURABILITY.md, "Dedup
 * after a restart": the odds, and why not keep the bodies).
 *
 * The table is the id dedup table's shape (8-way sets, an id in one of 8
 * sets from its home set, at least twice the ids it must hold), under
 * its own mutex (sends with content dedup serialise on it, as sends with
 * a dedup id do on the id table's).
 */
#include "queue_x.h"
#include "quay_internal.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#define WAYS 8u
#define PROBE 8u

struct centry {
	uint64_t h1, h2;
	int64_t expires; /* 0: empty */
	bool pending;    /* checked, its send not yet logged: not walked */
	quay_msg *msg;   /* the remembered message (a reference), or NULL:
	                    a key recovered from a durable queue's log whose
	                    message is gone (a key hit is then taken as is) */
};

struct quayi_cdedup {
	const struct quay_allocator *alloc; /* the queue's */
	pthread_mutex_t lock;
	struct centry *e;
	size_t sets; /* a power of two, >= PROBE */
	int64_t window;
};

int
quayi_msg_group(const quay_msg *msg, const void **g, size_t *glen)
{
	*g = NULL;
	*glen = 0;
	if (quay_msg_header_count(msg) == 0 || quay_msg_get_header(msg, QUAY_MSG_H_GROUP, g, glen) != 0) {
		*g = NULL;
		*glen = 0;
		return 0;
	}
	return *glen > QUAY_QUEUE_GROUP_MAX ? -EINVAL : 0;
}

int
quayi_cdedup_create(struct quayi_qx *x, size_t ids, int64_t window)
{
	struct quayi_cdedup *d = quayi_calloc(x->alloc, 1, sizeof(*d));
	size_t sets = 1;

	if (d == NULL)
		return -ENOMEM;
	d->alloc = x->alloc;
	while (sets < (2 * ids + WAYS - 1) / WAYS || sets < PROBE)
		sets <<= 1;
	d->sets = sets;
	d->window = window;
	pthread_mutex_init(&d->lock, NULL);
	if ((d->e = quayi_calloc(d->alloc, sets * WAYS, sizeof(*d->e))) == NULL) {
		pthread_mutex_destroy(&d->lock);
		quayi_free(d->alloc, d, sizeof(*d));
		return -ENOMEM;
	}
	x->cdedup = d;
	return 0;
}

void
quayi_cdedup_destroy(struct quayi_cdedup *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->sets * WAYS; i++)
		if (d->e[i].msg != NULL)
			quay_msg_unref(d->e[i].msg);
	quayi_free(d->alloc, d->e, d->sets * WAYS * sizeof(*d->e));
	pthread_mutex_destroy(&d->lock);
	quayi_free(d->alloc, d, sizeof(*d));
}

/* Test hook (tests/unit/test_queue_cdedup.c, through the static
 * library): replaces the key, to force collisions. NULL in production. */
void (*quayi_cdedup_test_key)(const quay_msg *msg, uint64_t *h1, uint64_t *h2);

void
quayi_cdedup_key(const quay_msg *msg, uint64_t *h1, uint64_t *h2)
{
	const void *g;
	size_t gl;
	XXH128_hash_t h;

	if (QUAYI_UNLIKELY(quayi_cdedup_test_key != NULL)) {
		quayi_cdedup_test_key(msg, h1, h2);
		return;
	}
	(void)quayi_msg_group(msg, &g, &gl);
	/* The group seeds the body's hash: (body, group) pairs that differ
	 * in either give unrelated keys, with no buffer to concatenate. */
	h = XXH3_128bits_withSeed(quay_msg_body(msg), quay_msg_body_len(msg),
	    gl != 0 ? XXH3_64bits(g, gl) : 0);
	*h1 = h.low64;
	*h2 = h.high64;
}

/* Same body and same group: the confirmation of a key hit. */
static bool
same_content(const quay_msg *a, const quay_msg *b)
{
	const void *ga, *gb;
	size_t la, lb;

	if (quay_msg_body_len(a) != quay_msg_body_len(b) ||
	    memcmp(quay_msg_body(a), quay_msg_body(b), quay_msg_body_len(a)) != 0)
		return false;
	(void)quayi_msg_group(a, &ga, &la);
	(void)quayi_msg_group(b, &gb, &lb);
	return la == lb && (la == 0 || memcmp(ga, gb, la) == 0);
}

static inline struct centry *
entry(struct quayi_cdedup *d, uint64_t h1, unsigned p, unsigned w)
{
	return &d->e[((h1 + p) & (d->sets - 1)) * WAYS + w];
}

int
quayi_cdedup_check(quay_queue *q, quay_msg *msg, int64_t now)
{
	struct quayi_cdedup *d = q->x->cdedup;
	struct centry *room = NULL;
	quay_msg *old = NULL;
	uint64_t h1, h2;
	int rc = 0;

	quayi_cdedup_key(msg, &h1, &h2);
	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < PROBE && rc == 0; p++) {
		for (unsigned w = 0; w < WAYS; w++) {
			struct centry *e = entry(d, h1, p, w);

			if (e->expires > now) {
				if (e->h1 == h1 && e->h2 == h2 &&
				    (e->msg == NULL || same_content(e->msg, msg))) {
					rc = 1;
					break;
				}
			} else if (room == NULL) {
				room = e;
			}
		}
	}
	if (rc == 0) {
		if (room == NULL) {
			rc = -EAGAIN;
		} else {
			old = room->msg; /* expired: dropped below, unlocked */
			room->h1 = h1;
			room->h2 = h2;
			room->expires = now > 0 && d->window > INT64_MAX - now ? INT64_MAX : now + d->window;
			room->pending = true;
			quay_msg_ref(msg);
			room->msg = msg;
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (old != NULL)
		quay_msg_unref(old);
	return rc;
}

void
quayi_cdedup_forget(quay_queue *q, const quay_msg *msg)
{
	struct quayi_cdedup *d = q->x != NULL ? q->x->cdedup : NULL;
	quay_msg *drop[PROBE * WAYS];
	size_t n = 0;
	uint64_t h1, h2;

	if (d == NULL)
		return;
	quayi_cdedup_key(msg, &h1, &h2);
	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < PROBE; p++)
		for (unsigned w = 0; w < WAYS; w++) {
			struct centry *e = entry(d, h1, p, w);

			/* The message itself, or (a send that went as a copy)
			 * the one remembered for its content. */
			if (e->msg != NULL &&
			    (e->msg == msg || (e->h1 == h1 && e->h2 == h2 && same_content(e->msg, msg)))) {
				e->expires = 0;
				drop[n++] = e->msg;
				e->msg = NULL;
			}
		}
	pthread_mutex_unlock(&d->lock);
	while (n > 0)
		quay_msg_unref(drop[--n]);
}

int
quayi_cdedup_seed(quay_queue *q, uint64_t h1, uint64_t h2, int64_t expires, int64_t now, quay_msg *msg)
{
	struct quayi_cdedup *d = q->x->cdedup;
	struct centry *room = NULL;
	quay_msg *old = NULL;
	int rc = -EAGAIN;

	if (expires <= now)
		return 0;
	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < PROBE && rc != 0; p++)
		for (unsigned w = 0; w < WAYS; w++) {
			struct centry *e = entry(d, h1, p, w);

			if (e->expires > now && e->h1 == h1 && e->h2 == h2) {
				/* The same key twice (a send's ADD and a compaction's
				 * DEDUP): one entry, the later expiry, a message if
				 * either has one. */
				if (expires > e->expires)
					e->expires = expires;
				if (e->msg == NULL && msg != NULL) {
					quay_msg_ref(msg);
					e->msg = msg;
				}
				rc = 0;
				break;
			}
			if (e->expires <= now && room == NULL)
				room = e;
		}
	if (rc != 0 && room != NULL) {
		old = room->msg;
		room->h1 = h1;
		room->h2 = h2;
		room->expires = expires;
		room->pending = false;
		if (msg != NULL)
			quay_msg_ref(msg);
		room->msg = msg;
		rc = 0;
	}
	pthread_mutex_unlock(&d->lock);
	if (old != NULL)
		quay_msg_unref(old);
	return rc;
}

void
quayi_cdedup_commit(quay_queue *q, uint64_t h1, uint64_t h2)
{
	struct quayi_cdedup *d = q->x->cdedup;

	pthread_mutex_lock(&d->lock);
	for (unsigned p = 0; p < PROBE; p++)
		for (unsigned w = 0; w < WAYS; w++) {
			struct centry *e = entry(d, h1, p, w);

			if (e->pending && e->h1 == h1 && e->h2 == h2)
				e->pending = false;
		}
	pthread_mutex_unlock(&d->lock);
}

void
quayi_cdedup_walk(quay_queue *q, int64_t now,
    void (*visit)(void *ctx, uint64_t h1, uint64_t h2, int64_t expires), void *ctx)
{
	struct quayi_cdedup *d = q->x->cdedup;

	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->sets * WAYS; i++)
		if (d->e[i].expires > now && !d->e[i].pending)
			visit(ctx, d->e[i].h1, d->e[i].h2, d->e[i].expires);
	pthread_mutex_unlock(&d->lock);
}
