/* SPDX-License-Identifier: MIT */
/*
 * Private declarations of the queue's issue-13 layers: the receive rate
 * limit (src/queue_limit.c), alarms and health (src/queue_health.c),
 * content dedup (src/queue_cdedup.c) and FIFO message groups
 * (src/queue_fifo.c). src/queue.c calls them through small hooks; each
 * layer keeps its state in struct quayi_qx (q->x), made at create.
 * Never installed.
 */
#ifndef QUAY_QUEUE_X_H
#define QUAY_QUEUE_X_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <quay/queue.h>

#include "queue_internal.h"

struct quayi_health;
struct quayi_fifo;
struct quayi_cdedup;

struct quayi_qx {
	/* Rate limit: params = interval_ns << 24 | (burst - 1); 0: none.
	 * Written by create and quay_queue_set_rate_limit, read by receives. */
	uint64_t rparams;
	/* Wait word of receivers asleep for a token (woken by close only;
	 * a token is a time, not an event). */
	uint32_t lwait;
	uint32_t lflags; /* QUAYI_X_F_FENCE if membarrier is off */
	/* The bucket: theoretical arrival time of the next token (queue
	 * clock ns). Its own cache line: every limited receive CASes it. */
	int64_t tat QUAYI_ALIGNED(QUAY_CACHELINE);

	struct quayi_health *health QUAYI_ALIGNED(QUAY_CACHELINE); /* NULL: no alarms */
	struct quayi_cdedup *cdedup;                               /* NULL: no content dedup */
	struct quayi_fifo *fifo;                                   /* NULL: not FIFO */
	const struct quay_allocator *alloc;                        /* the queue's */
};

#define QUAYI_X_F_FENCE 1u

/* ---- create / destroy ---------------------------------------------- */

/* Validate the issue-13 options (before anything is made): 0 or -EINVAL.
 * dlq_cap: the capacity of opts->dlq (0 if none). */
int quayi_x_validate(const struct quay_queue_opts *o, size_t capacity, size_t max_in_flight);
/* Make q->x (after q's metrics exist: registers the alarm gauges). */
int quayi_x_create(quay_queue *q, const struct quay_queue_opts *o, quay_stats *reg);
/* Free q->x (drops the references it holds). */
void quayi_x_destroy(quay_queue *q);

/* ---- rate limit (src/queue_limit.c) ---------------------------------- */

/* Rate and burst check (from_opts: 0 rate with 0 burst is "none"). */
int quayi_limit_validate(double per_sec, uint32_t burst, bool from_opts);
void quayi_limit_init(struct quayi_qx *x, double per_sec, uint32_t burst);
/* Take a token at queue time now: 0, or -EAGAIN with *due the queue time
 * at which the next one is. */
int quayi_limit_take(struct quayi_qx *x, int64_t now, int64_t *due);
/* Give back a token taken by a receive that then found no message. */
void quayi_limit_refund(struct quayi_qx *x);
/* Sleep until queue time due (converted to real time from now) or
 * end_mono (CLOCK_MONOTONIC, < 0: none), or until close. */
void quayi_limit_sleep(quay_queue *q, int64_t now, int64_t due, int64_t end_mono);
/* close: wake receivers asleep for a token. */
void quayi_limit_close(quay_queue *q);

static inline bool
quayi_limited(const struct quayi_qx *x)
{
	/* Relaxed: the params word is self-contained (one store by the
	 * setter); a receive seeing the old one for an instant is fine. */
	return __atomic_load_n(&x->rparams, __ATOMIC_RELAXED) != 0;
}

/* ---- health (src/queue_health.c) -------------------------------------- */

int quayi_health_validate(const struct quay_queue_opts *o, size_t capacity, size_t max_in_flight);
/* NULL health if no alarm is set; -ENOMEM / the registry's error. */
int quayi_health_create(quay_queue *q, const struct quay_queue_opts *o, quay_stats *reg,
    struct quayi_health **out);
void quayi_health_destroy(struct quayi_health *h);
/* Evaluate the alarms with the stats just measured (quay_queue_stats). */
void quayi_health_eval(quay_queue *q, const struct quay_queue_stats *st, int64_t now);
/* A queue's alarms as the HTTP endpoint shows them: the states and
 * thresholds, read without evaluating (after the quay_queue_stats() call
 * that evaluated them, so a request is one evaluation). */
struct quayi_health_view {
	struct quay_queue_health h;
	double raise[QUAY_QUEUE_ALARM_COUNT], clear[QUAY_QUEUE_ALARM_COUNT];
};
/* false (and *v zeroed) if q has no alarms. */
bool quayi_health_read(const quay_queue *q, struct quayi_health_view *v);
/* The alarm's name: the alarm label of the quay_queue_alarm gauge. */
const char *quayi_health_alarm_name(quay_queue_alarm a);
/* Whether alarm a being on makes the queue FAILING (else DEGRADED). */
bool quayi_health_alarm_failing(quay_queue_alarm a);

/* ---- message groups (both layers) ------------------------------------ */

/* The group of msg: *g / *glen its QUAY_MSG_H_GROUP value (NULL / 0: the
 * default group). -EINVAL if longer than QUAY_QUEUE_GROUP_MAX. */
int quayi_msg_group(const quay_msg *msg, const void **g, size_t *glen);

/* ---- content dedup (src/queue_cdedup.c) -------------------------------- */

int quayi_cdedup_create(struct quayi_qx *x, size_t ids, int64_t window);
void quayi_cdedup_destroy(struct quayi_cdedup *d);
/* 1: a duplicate (same body and group) within the window; 0: new, and
 * remembered (a reference taken); -EAGAIN: no room. */
int quayi_cdedup_check(quay_queue *q, quay_msg *msg, int64_t now);
/* Test hook: replaces the content key (to force collisions). */
extern void (*quayi_cdedup_test_key)(const quay_msg *msg, uint64_t *h1, uint64_t *h2);
/* Forget msg if it is remembered (its send failed after the check). */
void quayi_cdedup_forget(quay_queue *q, const quay_msg *msg);
/* A durable queue's window (src/queue_dedup_log.c): msg's content key
 * (XXH3-128 of the body, seeded with XXH3-64 of the group; persisted);
 * remember a key until expires (msg: its message, or NULL: gone, a hit
 * is then a duplicate without comparison), 0 or -EAGAIN (no room);
 * visit every live key under the table's lock. */
void quayi_cdedup_key(const quay_msg *msg, uint64_t *h1, uint64_t *h2);
int quayi_cdedup_seed(quay_queue *q, uint64_t h1, uint64_t h2, int64_t expires, int64_t now, quay_msg *msg);
/* The send checked under key (h1, h2) was logged: walked from now on. */
void quayi_cdedup_commit(quay_queue *q, uint64_t h1, uint64_t h2);
void quayi_cdedup_walk(quay_queue *q, int64_t now,
    void (*visit)(void *ctx, uint64_t h1, uint64_t h2, int64_t expires), void *ctx);

/* ---- FIFO groups (src/queue_fifo.c) ------------------------------------ */

int quayi_fifo_create(struct quayi_qx *x, size_t capacity);
void quayi_fifo_destroy(struct quayi_fifo *f);
/* A message enters the queue (send, restore, dead letter or redrive in):
 * true if it was parked behind its group's head (the queue holds it; the
 * caller is done), false if it is now its group's head: the caller
 * places it (ready or delayed). */
bool quayi_fifo_admit(quay_queue *q, quay_msg *msg);
/* msg, its group's head, left the queue for good (ack, dead letter,
 * drop, redrive out): the group's next message (now its head, for the
 * caller to place), or NULL. Call before msg is handed elsewhere. */
quay_msg *quayi_fifo_done(quay_queue *q, const quay_msg *msg);
/* Messages parked behind their group's head (counted as ready). */
uint64_t quayi_fifo_parked(const quay_queue *q);
/* Visit the parked messages (browse), under the FIFO locks one stripe at
 * a time. Returns fn's non-zero value, or 0. */
int quayi_fifo_browse(quay_queue *q, quay_queue_visit_fn fn, void *ctx);

#endif /* QUAY_QUEUE_X_H */
