/* SPDX-License-Identifier: MIT */
/*
 * The multi-queue send (src/queue_route.h): the pending sends of one
 * message to several queues are grouped by log domain; each domain's
 * ADD records go in one log write (the log's add_multi: one WAL appendv,
 * one sync per the WAL's mode), and that write decides for all of them:
 * every send of the domain accepted, or every one rolled back. Queues in
 * memory have no write to share: each is accepted on its own.
 */
#include "queue_route.h"
#include "queue_log.h"
#include "quay_internal.h"

#include <errno.h>
#include <stdbool.h>

void
quayi_queue_send_commit(struct quayi_qsend *s, size_t n)
{
	/* Scratch on the stack: n is bounded (no allocation on the send). */
	void *ctxs[QUAYI_QSEND_MAX];
	quay_msg *msgs[QUAYI_QSEND_MAX];
	uint16_t idx[QUAYI_QSEND_MAX];

	if (QUAYI_UNLIKELY(n > QUAYI_QSEND_MAX)) {
		for (size_t i = 0; i < n; i++)
			if (s[i].pending) {
				/* Its claim is still held: give it back first. */
				quayi_queue_send_end(&s[i], -E2BIG);
			}
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct quayi_qlog *l;
		size_t k = 0;
		int err;

		if (!s[i].pending)
			continue;
		l = quayi_queue_log(s[i].q);
		if (l->ops == NULL) {
			quayi_queue_send_end(&s[i], 0);
			continue;
		}
		/* Every pending send of l's domain, from i on (the earlier
		 * ones are settled). */
		for (size_t j = i; j < n; j++) {
			const struct quayi_qlog *lj;

			if (!s[j].pending)
				continue;
			lj = quayi_queue_log(s[j].q);
			if (lj->ops == NULL || !quayi_qlog_same(l, lj))
				continue;
			ctxs[k] = lj->ctx;
			msgs[k] = s[j].msg;
			idx[k++] = (uint16_t)j;
		}
		err = quayi_qlog_add_multi(l, ctxs, msgs, k);
		for (size_t m = 0; m < k; m++)
			quayi_queue_send_end(&s[idx[m]], err);
	}
}

int
quayi_queue_send_multi(quay_queue **qs, quay_msg **msgs, size_t n, int *rcs)
{
	struct quayi_qsend s[QUAYI_QSEND_MAX];
	int taken = 0;

	if (qs == NULL || msgs == NULL || rcs == NULL || n == 0 || n > QUAYI_QSEND_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		rcs[i] = quayi_queue_send_begin(qs[i], msgs[i], &s[i]);
	quayi_queue_send_commit(s, n);
	for (size_t i = 0; i < n; i++) {
		if (s[i].pending == 0 && rcs[i] == 0)
			rcs[i] = s[i].rc;
		taken += rcs[i] >= 0;
	}
	return taken;
}
