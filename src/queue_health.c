/* SPDX-License-Identifier: MIT */
/*
 * Alarms and health of a queue (quay_queue_health, opts alarm[]): five
 * alarms, each OK -> ALARM after `periods` consecutive evaluations at or
 * above `raise`, ALARM -> OK after `periods` consecutive evaluations
 * below `clear` (<= raise: hysteresis). An evaluation is a call of
 * quay_queue_health(), quay_queue_stats() or a snapshot of the queue's
 * registry (whose collect callback measures the queue): there is no
 * thread. With alarm_period_ns 0 every evaluation counts toward
 * `periods` ("a period" is the callers' polling period, all callers
 * together); else an evaluation counts only if alarm_period_ns of queue
 * clock passed since the last counted one (the first counts; so does one
 * whose clock went back), and the others only refresh the values: how
 * soon an alarm trips no longer depends on how many readers poll.
 * Everything here runs under the health lock, off the hot path: the
 * values are the gauges quay_queue_stats() measures, plus the DLQ's held
 * count and the failure rate, computed from the counters over a sliding
 * window.
 */
#include "queue_x.h"
#include "quay_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Failure-rate samples: the cumulative counters, one sample per 1/32 of
 * the window at most, 64 kept (two windows). */
#define HS_N 64u
#define HS_PER_WINDOW 32

struct halarm {
	double raise, clear;
	uint32_t periods;
	bool enabled, on;
	uint32_t streak;
	uint64_t transitions;
	int64_t since;
	double value;
	quay_gauge *g;
};

struct hsample {
	int64_t t;
	uint64_t fail, ended;
};

struct quayi_health {
	const struct quay_allocator *alloc; /* the queue's */
	pthread_mutex_t lock;
	struct halarm a[QUAY_QUEUE_ALARM_COUNT];
	quay_gauge *g_state;
	quay_queue_alarm_fn fn;
	void *ctx;
	int64_t window;
	uint32_t fmin;
	int64_t period;  /* alarm_period_ns; 0: every evaluation counts */
	int64_t counted; /* queue clock of the last counted evaluation */
	bool any_counted;
	quay_queue_health_state state;
	struct hsample s[HS_N];
	unsigned s_head, s_n; /* s[s_head] is the oldest of s_n */
};

static const char *const alarm_name[QUAY_QUEUE_ALARM_COUNT] = {
	"ready",
	"age",
	"in_flight",
	"dlq",
	"failure_rate",
};

const char *
quayi_health_alarm_name(quay_queue_alarm a)
{
	return (unsigned)a < QUAY_QUEUE_ALARM_COUNT ? alarm_name[a] : "unknown";
}

bool
quayi_health_alarm_failing(quay_queue_alarm a)
{
	/* Work lost (dead letters) or failing (nacks, expiries); the others
	 * say work is late. */
	return a == QUAY_QUEUE_ALARM_DLQ || a == QUAY_QUEUE_ALARM_FAILURES;
}

int
quayi_health_validate(const struct quay_queue_opts *o, size_t capacity, size_t max_in_flight)
{
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++) {
		const struct quay_queue_threshold *t = &o->alarm[i];

		if (isnan(t->raise) || isnan(t->clear) || t->raise < 0 || t->clear < 0 || t->periods > 1000)
			return -EINVAL;
		if (t->raise == 0) {
			/* A clear or a period count without a raise: an alarm
			 * that was meant but cannot trigger. */
			if (t->clear != 0 || t->periods != 0)
				return -EINVAL;
			continue;
		}
		if (t->clear > t->raise)
			return -EINVAL;
		/* Thresholds the value can never reach. */
		switch (i) {
		case QUAY_QUEUE_ALARM_READY:
			if (t->raise > (double)capacity)
				return -EINVAL;
			break;
		case QUAY_QUEUE_ALARM_IN_FLIGHT:
			if (t->raise > (double)max_in_flight)
				return -EINVAL;
			break;
		case QUAY_QUEUE_ALARM_DLQ:
			if (o->dlq == NULL || t->raise > (double)o->dlq->capacity)
				return -EINVAL;
			break;
		case QUAY_QUEUE_ALARM_FAILURES:
			if (t->raise > 1.0)
				return -EINVAL;
			break;
		default: /* age: nanoseconds, an int64 */
			if (t->raise > (double)INT64_MAX)
				return -EINVAL;
			break;
		}
	}
	if (o->alarm_period_ns < 0 || o->alarm_period_ns > (int64_t)86400 * 1000000000)
		return -EINVAL;
	if (o->failure_window_ns < 0 ||
	    (o->failure_window_ns != 0 &&
	        (o->failure_window_ns < 1000000 || o->failure_window_ns > (int64_t)86400 * 1000000000)))
		return -EINVAL;
	return 0;
}

int
quayi_health_create(quay_queue *q, const struct quay_queue_opts *o, quay_stats *reg,
    struct quayi_health **out)
{
	struct quayi_health *h;
	bool any = false;
	int rc;

	*out = NULL;
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
		any |= o->alarm[i].raise > 0;
	if (!any)
		return 0;
	if ((h = quayi_calloc(q->alloc, 1, sizeof(*h))) == NULL)
		return -ENOMEM;
	h->alloc = q->alloc;
	pthread_mutex_init(&h->lock, NULL);
	h->fn = o->on_alarm;
	h->ctx = o->alarm_ctx;
	h->window = o->failure_window_ns ? o->failure_window_ns : (int64_t)60 * 1000000000;
	h->fmin = o->failure_min ? o->failure_min : 10u;
	h->period = o->alarm_period_ns;
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++) {
		const struct quay_queue_threshold *t = &o->alarm[i];
		struct halarm *a = &h->a[i];
		/* Label names sorted (quay/stats.h): alarm, queue. */
		struct quay_stats_label lab[2] = { { "alarm", alarm_name[i] }, { "queue", q->name } };

		if (t->raise <= 0)
			continue;
		a->enabled = true;
		a->raise = t->raise;
		a->clear = t->clear > 0 ? t->clear : t->raise;
		a->periods = t->periods ? t->periods : 1u;
		if ((rc = quay_gauge_create(reg, "quay_queue_alarm",
		         "Alarm state of a queue (1: ALARM, 0: OK)", lab, 2, &a->g)) != 0)
			goto fail;
	}
	{
		struct quay_stats_label lab = { "queue", q->name };

		if ((rc = quay_gauge_create(reg, "quay_queue_health",
		         "Health of a queue (0 healthy, 1 degraded, 2 failing)", &lab, 1, &h->g_state)) != 0)
			goto fail;
	}
	*out = h;
	return 0;
fail:
	quayi_health_destroy(h);
	return rc;
}

void
quayi_health_destroy(struct quayi_health *h)
{
	if (h == NULL)
		return;
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
		quay_gauge_destroy(h->a[i].g);
	quay_gauge_destroy(h->g_state);
	pthread_mutex_destroy(&h->lock);
	quayi_free(h->alloc, h, sizeof(*h));
}

/* The failure rate over the window ending now (lock held): failed
 * deliveries (nack, lease expiry) over ended ones (those and acks), from
 * the newest sample at least a window old (or the oldest kept). Fewer
 * than fmin ended deliveries in the window: 0. */
static double
failure_rate(struct quayi_health *h, const struct quay_queue_stats *st, int64_t now)
{
	uint64_t fail = st->nacked + st->lease_expired, ended = fail + st->acked;
	const struct hsample *base = NULL;
	struct hsample *last;

	if (h->s_n == 0 || now - h->s[(h->s_head + h->s_n - 1) % HS_N].t >= h->window / HS_PER_WINDOW) {
		if (h->s_n == HS_N) {
			h->s_head = (h->s_head + 1) % HS_N;
			h->s_n--;
		}
		last = &h->s[(h->s_head + h->s_n) % HS_N];
		*last = (struct hsample){ now, fail, ended };
		h->s_n++;
	}
	for (unsigned k = h->s_n; k-- > 0;) {
		const struct hsample *s = &h->s[(h->s_head + k) % HS_N];

		base = s;
		if (s->t <= now - h->window)
			break;
	}
	if (ended - base->ended < h->fmin || ended == base->ended)
		return 0.0;
	return (double)(fail - base->fail) / (double)(ended - base->ended);
}

static void
step(quay_queue *q, struct quayi_health *h, int i, double v, int64_t now)
{
	struct halarm *a = &h->a[i];
	bool toward = a->on ? v < a->clear : v >= a->raise;

	a->value = v;
	if (!toward) {
		a->streak = 0;
		return;
	}
	if (++a->streak < a->periods)
		return;
	a->streak = 0;
	a->on = !a->on;
	a->transitions++;
	a->since = now;
	quay_gauge_set(a->g, a->on ? 1 : 0);
	if (h->fn != NULL)
		h->fn(h->ctx, q, (quay_queue_alarm)i, a->on, v);
}

void
quayi_health_eval(quay_queue *q, const struct quay_queue_stats *st, int64_t now)
{
	struct quayi_health *h = q->x != NULL ? q->x->health : NULL;
	double v[QUAY_QUEUE_ALARM_COUNT];
	quay_queue_health_state s = QUAY_QUEUE_HEALTHY;

	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	v[QUAY_QUEUE_ALARM_READY] = (double)st->ready;
	v[QUAY_QUEUE_ALARM_AGE] = (double)st->oldest_age_ns;
	v[QUAY_QUEUE_ALARM_IN_FLIGHT] = (double)st->in_flight;
	/* The DLQ's held: ready, delayed, in flight and in transit there. */
	v[QUAY_QUEUE_ALARM_DLQ] = q->dlq != NULL ? (double)quayi_queue_held(q->dlq) : 0;
	v[QUAY_QUEUE_ALARM_FAILURES] = failure_rate(h, st, now);
	/* Within the period of the last counted evaluation: refresh the
	 * values only (the streaks and states wait for the next period). */
	if (h->period != 0 && h->any_counted && now >= h->counted && now - h->counted < h->period) {
		for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
			if (h->a[i].enabled)
				h->a[i].value = v[i];
		pthread_mutex_unlock(&h->lock);
		return;
	}
	h->counted = now;
	h->any_counted = true;
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
		if (h->a[i].enabled)
			step(q, h, i, v[i], now);
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
		if (h->a[i].on) {
			if (quayi_health_alarm_failing((quay_queue_alarm)i))
				s = QUAY_QUEUE_FAILING;
			else if (s == QUAY_QUEUE_HEALTHY)
				s = QUAY_QUEUE_DEGRADED;
		}
	h->state = s;
	quay_gauge_set(h->g_state, (int64_t)s);
	pthread_mutex_unlock(&h->lock);
}

/* Lock held. */
static void
read_locked(const struct quayi_health *h, struct quay_queue_health *out)
{
	out->state = h->state;
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++) {
		const struct halarm *a = &h->a[i];

		out->alarm[i] = (struct quay_queue_alarm_state){ a->enabled, a->on, a->value, a->streak,
			a->transitions, a->since };
	}
}

bool
quayi_health_read(const quay_queue *q, struct quayi_health_view *v)
{
	struct quayi_health *h = q->x != NULL ? q->x->health : NULL;

	memset(v, 0, sizeof(*v));
	if (h == NULL)
		return false;
	pthread_mutex_lock(&h->lock);
	read_locked(h, &v->h);
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++) {
		v->raise[i] = h->a[i].raise;
		v->clear[i] = h->a[i].clear;
	}
	pthread_mutex_unlock(&h->lock);
	return true;
}

int
quay_queue_health(quay_queue *q, struct quay_queue_health *out)
{
	struct quay_queue_stats st;
	struct quayi_health *h;

	if (q == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	quay_queue_stats(q, &st); /* evaluates (quayi_health_eval) */
	h = q->x != NULL ? q->x->health : NULL;
	if (h == NULL)
		return 0;
	pthread_mutex_lock(&h->lock);
	read_locked(h, out);
	pthread_mutex_unlock(&h->lock);
	return 0;
}
