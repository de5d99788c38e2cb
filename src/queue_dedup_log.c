/* SPDX-License-Identifier: MIT */
/*
 * A durable queue's dedup window as its log sees it (the dedup_* host
 * callbacks of src/queue_log.h; docs/DURABILITY.md, "Dedup after a
 * restart"): the key a send was checked under, recovery's seeding of the
 * id and content tables, and the walk of their live keys that a
 * compaction writes as DEDUP records. Times are the queue's clock.
 */
#include "clock.h"
#include "queue_dedup.h"
#include "queue_dedup_log.h"
#include "queue_log.h"
#include "queue_x.h"
#include "quay_internal.h"

#include <quay/msg.h>

static bool
dkey(void *queue, const quay_msg *msg, struct quayi_qlog_dkey *k)
{
	const quay_queue *q = queue;
	size_t len;
	const void *id = quayi_queue_dedup_id(q, msg, &len);

	/* As send_check decides (src/queue.c): the id if there is one,
	 * else the content if the queue dedups by content. */
	if (id != NULL) {
		k->kind = QUAYI_QLOG_DK_ID;
		quayi_dedup_key(id, len, &k->h1, &k->h2);
		return true;
	}
	if (q->x != NULL && q->x->cdedup != NULL) {
		k->kind = QUAYI_QLOG_DK_CONTENT;
		quayi_cdedup_key(msg, &k->h1, &k->h2);
		return true;
	}
	return false;
}

static void
dseed(void *queue, const struct quayi_qlog_dkey *k, int64_t accepted, quay_msg *msg)
{
	quay_queue *q = queue;
	int64_t now = q->clock(q->clock_ctx), window = q->dedup.window, exp;

	if (window <= 0)
		return;
	exp = quayi_ns_add_sat(accepted, window);
	/* A clock that stepped back since: never longer than a window from
	 * now. */
	if (exp > quayi_ns_add_sat(now, window))
		exp = quayi_ns_add_sat(now, window);
	if (k->kind == QUAYI_QLOG_DK_ID)
		(void)quayi_dedup_seed(&q->dedup, k->h1, k->h2, exp, now);
	else if (k->kind == QUAYI_QLOG_DK_CONTENT && q->x != NULL && q->x->cdedup != NULL)
		(void)quayi_cdedup_seed(q, k->h1, k->h2, exp, now, msg);
}

static void
dcommit(void *queue, const struct quayi_qlog_dkey *k)
{
	quay_queue *q = queue;

	if (k->kind == QUAYI_QLOG_DK_ID)
		quayi_dedup_commit(&q->dedup, k->h1, k->h2);
	else if (k->kind == QUAYI_QLOG_DK_CONTENT && q->x != NULL && q->x->cdedup != NULL)
		quayi_cdedup_commit(q, k->h1, k->h2);
}

struct walk {
	void (*visit)(void *vctx, const struct quayi_qlog_dkey *k, int64_t accepted);
	void *vctx;
	int64_t window;
	unsigned kind;
};

static void
walk_one(void *ctx, uint64_t h1, uint64_t h2, int64_t expires)
{
	struct walk *w = ctx;
	struct quayi_qlog_dkey k = { h1, h2, w->kind };

	w->visit(w->vctx, &k, expires - w->window);
}

static void
dwalk(void *queue, void (*visit)(void *vctx, const struct quayi_qlog_dkey *k, int64_t accepted), void *vctx)
{
	quay_queue *q = queue;
	int64_t now = q->clock(q->clock_ctx);
	struct walk w = { visit, vctx, q->dedup.window, QUAYI_QLOG_DK_ID };

	quayi_dedup_walk(&q->dedup, now, walk_one, &w);
	if (q->x != NULL && q->x->cdedup != NULL) {
		w.kind = QUAYI_QLOG_DK_CONTENT;
		quayi_cdedup_walk(q, now, walk_one, &w);
	}
}

void
quayi_dedup_log_host(int64_t window, struct quayi_qlog_host *h)
{
	if (window <= 0)
		return;
	h->dedup_window = window;
	h->dedup_key = dkey;
	h->dedup_seed = dseed;
	h->dedup_commit = dcommit;
	h->dedup_walk = dwalk;
}
