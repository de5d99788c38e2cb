/* SPDX-License-Identifier: MIT */
/*
 * The queue's receive rate limit (quay_queue_set_rate_limit, opts
 * rate_per_sec / rate_burst): a token bucket kept as one timestamp, the
 * generic cell rate algorithm (GCRA). With interval T = 1 s / rate and
 * burst b, the bucket is the theoretical arrival time `tat` of the next
 * token: a receive at time now may take one if tat - now <= (b - 1) T,
 * and then sets tat = max(tat, now) + T. One CAS per limited receive, no
 * lock, no refill thread, and exact: over any span of time t the tokens
 * taken are at most b + t / T (so the long-run rate is the rate, whatever
 * the call pattern), and a receiver that finds none knows the time the
 * next one is due (tat - (b - 1) T) and sleeps until then.
 *
 * Ordering: tat and rparams are independent words; a taker needs no
 * ordering with anything else (the message itself comes through the pq),
 * so every access is relaxed, each commented.
 */
#include "clock.h"
#include "queue_x.h"
#include "quay_internal.h"

#include <math.h>

#define BURST_BITS 24u
#define BURST_MASK (((uint64_t)1 << BURST_BITS) - 1)

/* The params word of a rate and burst (both validated): interval in
 * whole nanoseconds (at least 1; at most 1e12, below 2^40) above the
 * burst - 1. */
static uint64_t
rparams_of(double per_sec, uint32_t burst)
{
	double t = floor(1e9 / per_sec + 0.5);

	if (t < 1.0)
		t = 1.0;
	return (uint64_t)t << BURST_BITS | ((uint64_t)burst - 1);
}

static bool
rate_ok(double per_sec)
{
	return isfinite(per_sec) && per_sec >= QUAY_QUEUE_RATE_MIN && per_sec <= QUAY_QUEUE_RATE_MAX;
}

int
quayi_limit_validate(double per_sec, uint32_t burst, bool from_opts)
{
	if (from_opts && per_sec == 0.0)
		return burst == 0 ? 0 : -EINVAL; /* a burst without a rate */
	if (!rate_ok(per_sec) || burst > QUAY_QUEUE_BURST_MAX || (!from_opts && burst == 0))
		return -EINVAL;
	return 0;
}

void
quayi_limit_init(struct quayi_qx *x, double per_sec, uint32_t burst)
{
	x->rparams = per_sec == 0.0 ? 0 : rparams_of(per_sec, burst ? burst : 1u);
	x->tat = 0;
	x->lflags = quayi_wait_init() ? 0u : QUAYI_X_F_FENCE;
}

int
quay_queue_set_rate_limit(quay_queue *q, double per_sec, uint32_t burst)
{
	uint64_t p;

	if (q == NULL || q->x == NULL)
		return -EINVAL;
	if (isinf(per_sec) && per_sec > 0) {
		p = 0;
	} else {
		if (quayi_limit_validate(per_sec, burst, false) != 0)
			return -EINVAL;
		p = rparams_of(per_sec, burst);
	}
	/* Relaxed: a self-contained word (see quayi_limited). */
	__atomic_store_n(&q->x->rparams, p, __ATOMIC_RELAXED);
	return 0;
}

int
quayi_limit_take(struct quayi_qx *x, int64_t now, int64_t *due)
{
	/* Relaxed: see quayi_limited. */
	uint64_t p = __atomic_load_n(&x->rparams, __ATOMIC_RELAXED);
	int64_t t, tau, cur, base;

	if (p == 0)
		return 0;
	t = (int64_t)(p >> BURST_BITS);
	tau = (int64_t)(p & BURST_MASK) * t;
	/* Relaxed: tat orders nothing but itself (the CAS decides). */
	cur = __atomic_load_n(&x->tat, __ATOMIC_RELAXED);
	for (;;) {
		base = cur > now ? cur : now;
		if (base - now > tau) {
			*due = base - tau;
			return -EAGAIN;
		}
		/* Relaxed (both): as the load above. */
		if (__atomic_compare_exchange_n(&x->tat, &cur, base + t, true, __ATOMIC_RELAXED,
		        __ATOMIC_RELAXED))
			return 0;
	}
}

void
quayi_limit_refund(struct quayi_qx *x)
{
	/* Relaxed: as in take. */
	uint64_t p = __atomic_load_n(&x->rparams, __ATOMIC_RELAXED);

	/* The token goes back: the next one is due T earlier. (tat may then
	 * lie in the past: base = max(tat, now) makes that the same as now,
	 * so an idle bucket gains nothing from refunds.) Relaxed: as take. */
	if (p != 0)
		__atomic_fetch_sub(&x->tat, (int64_t)(p >> BURST_BITS), __ATOMIC_RELAXED);
}

static bool
limit_ready(const void *ctx)
{
	const quay_queue *q = ctx;

	/* Relaxed: S1 in quayi_wait_sleep orders it after the sleeper's
	 * bit; quay_queue_close's C1 store and fence precede its wake. */
	return __atomic_load_n(&q->closed, __ATOMIC_RELAXED) != 0;
}

void
quayi_limit_sleep(quay_queue *q, int64_t now, int64_t due, int64_t end_mono)
{
	int64_t dl = quayi_deadline(due > now ? due - now : 0);

	if (end_mono >= 0 && end_mono < dl)
		dl = end_mono;
	(void)quayi_wait_sleep(&q->x->lwait, (q->x->lflags & QUAYI_X_F_FENCE) != 0, limit_ready, q, dl);
}

void
quayi_limit_close(quay_queue *q)
{
	/* After C1 (the seq_cst store of closed): a full fence, then the
	 * wake (pairs with S1 of limit_ready's sleeper). Cold path. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	quayi_wait_wake(&q->x->lwait);
}
