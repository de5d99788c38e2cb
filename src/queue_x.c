/* SPDX-License-Identifier: MIT */
/*
 * Create and destroy of the queue's issue-13 layers (src/queue_x.h):
 * the options are checked before anything is made, and each layer's
 * state hangs off q->x.
 */
#include "queue_x.h"
#include "quay_internal.h"

#include <stdlib.h>
#include <string.h>

int
quayi_x_validate(const struct quay_queue_opts *o, size_t capacity, size_t max_in_flight)
{
	int rc;

	if ((rc = quayi_limit_validate(o->rate_per_sec, o->rate_burst, true)) != 0)
		return rc;
	/* Content dedup needs a window to remember content in. */
	if ((o->flags & QUAY_QUEUE_CONTENT_DEDUP) && o->dedup_window_ns <= 0)
		return -EINVAL;
	return quayi_health_validate(o, capacity, max_in_flight);
}

int
quayi_x_create(quay_queue *q, const struct quay_queue_opts *o, quay_stats *reg)
{
	struct quayi_qx *x = quayi_calloc_aligned(q->alloc, QUAY_CACHELINE, sizeof(*x));
	int rc;

	if (x == NULL)
		return -ENOMEM;
	x->alloc = q->alloc;
	q->x = x; /* a failure below: queue_free frees it */
	quayi_limit_init(x, o->rate_per_sec, o->rate_burst);
	if ((rc = quayi_health_create(q, o, reg, &x->health)) != 0)
		return rc;
	if ((o->flags & QUAY_QUEUE_FIFO) && (rc = quayi_fifo_create(x, q->capacity)) != 0)
		return rc;
	if ((o->flags & QUAY_QUEUE_CONTENT_DEDUP) &&
	    (rc = quayi_cdedup_create(x, o->dedup_capacity ? o->dedup_capacity : q->capacity,
	         o->dedup_window_ns)) != 0)
		return rc;
	return 0;
}

void
quayi_x_destroy(quay_queue *q)
{
	struct quayi_qx *x = q->x;

	if (x == NULL)
		return;
	quayi_health_destroy(x->health);
	quayi_fifo_destroy(x->fifo);
	quayi_cdedup_destroy(x->cdedup);
	quayi_free_aligned(x->alloc, x, QUAY_CACHELINE, sizeof(*x));
	q->x = NULL;
}
