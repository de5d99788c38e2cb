/* SPDX-License-Identifier: MIT */
/*
 * The HTTP observability endpoint (quay/http.h) on libmicrohttpd.
 *
 * Threads. libmicrohttpd runs `threads` polling threads (a thread pool
 * over one listening socket); each request is answered in one call of
 * handle(), which builds the whole body in memory and hands it over. One
 * sampler thread of ours wakes every second and reads the counters of
 * every registered queue and bus into a ring of samples (rates) and,
 * every ten seconds, copies each queue's ack-latency histogram (windowed
 * percentiles).
 *
 * Locking. h->lock (a mutex) guards the object lists and the sample
 * rings. A request takes it for the time it reads the samples and the
 * objects; the objects are read through their own lock-free reads
 * (counters, pq counts, quay_queue_stats() and registry snapshots, which
 * take their own locks). The order is h->lock -> a registry's locks ->
 * a queue's timer lock -> its alarm lock; nothing in the library takes
 * h->lock.
 *
 * Health. A queue's state on /health and /summary is the worst of the
 * built-in rules (full, near_capacity; dlq_not_empty unless the queue
 * has a DLQ alarm, which then says when the DLQ matters) and of its own
 * alarms (quay_queue_health(): DEGRADED -> degraded, FAILING -> error).
 * A request evaluates each queue's alarms once, in its quay_queue_stats()
 * call (docs/QUEUE.md: so each request is an evaluation; alarm_period_ns
 * keeps the requests from speeding the alarms up).
 *
 * Nothing here is on a messaging hot path: the cost of a scrape falls on
 * the server's threads (docs/HTTP.md has the measured effect).
 */
#include "clock.h"
#include "quay_internal.h"
#include "queue_internal.h"
#include "queue_x.h"
#include "bus_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <quay/http.h>

#define SAMPLES 64u /* one a second: a minute and a bit */
#define HWIN 8u     /* ack-latency copies, every 10 s: 70..80 s */
#define HWIN_EVERY 10u
#define NEAR_FULL_PCT 90u

/* The dashboard page (src/http_dashboard.c, generated from
 * src/http_dashboard.html). */
extern const char quayi_http_dashboard[];
extern const size_t quayi_http_dashboard_len;

enum { QS_SENT, QS_RECEIVED, QS_ACKED, QS_NACKED, QS_DEAD, QS_N };
enum { BS_PUBLISHED, BS_DELIVERED, BS_LOST, BS_N }; /* lost: dropped + rejected + timed out */

struct sample {
	int64_t t; /* CLOCK_MONOTONIC ns; 0: empty */
	uint64_t v[QS_N];
};

struct hq {
	quay_queue *q;
	struct sample s[SAMPLES];
	struct quay_hist_data *hw; /* HWIN copies */
	int64_t hw_t[HWIN];        /* when taken; 0: empty */
};

struct hb {
	quay_bus *bus;
	struct sample s[SAMPLES];
};

struct quay_http {
	struct MHD_Daemon *d;
	uint16_t port;
	char token[QUAY_HTTP_TOKEN_MAX + 1];
	size_t token_len;
	int64_t started_ns;

	pthread_mutex_t lock;
	quay_stats **reg;
	size_t nreg, capreg;
	struct hq **qs;
	size_t nq, capq;
	struct hb **bs;
	size_t nb, capb;
	uint64_t ticks; /* sampler rounds, under lock */

	pthread_t sampler;
	pthread_cond_t cv; /* wakes the sampler to stop */
	bool stopping;     /* under lock */
};

/* ---- a growable output buffer ------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void
b_put(struct buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		char *np;

		while (nc < b->len + n + 1)
			nc *= 2;
		np = realloc(b->p, nc);
		if (np == NULL) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
b_str(struct buf *b, const char *s)
{
	b_put(b, s, strlen(s));
}

static void b_fmt(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
b_fmt(struct buf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		b_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string: quoted, with ", \ and control bytes escaped (names and
 * labels are valid UTF-8 already). */
static void
b_json_str(struct buf *b, const char *s)
{
	b_put(b, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			b_put(b, e, 2);
		} else if (c < 0x20) {
			b_fmt(b, "\\u%04x", c);
		} else {
			b_put(b, s, 1);
		}
	}
	b_put(b, "\"", 1);
}

/* A rate as JSON: a number with 3 decimals. */
static void
b_rate(struct buf *b, const char *key, double r)
{
	b_fmt(b, "\"%s\":%.3f", key, r);
}

static int
b_write(void *arg, const char *data, size_t len)
{
	struct buf *b = arg;

	b_put(b, data, len);
	return b->oom ? -ENOMEM : 0;
}

/* ---- registration --------------------------------------------------- */

static size_t
nobjects(const quay_http *h)
{
	return h->nreg + h->nq + h->nb;
}

/* Grow an array of pointers to hold one more. Lock held. */
static int
grow(void *arrp, size_t n, size_t *cap)
{
	void ***arr = arrp;
	size_t nc;
	void **na;

	if (n < *cap)
		return 0;
	nc = *cap ? *cap * 2 : 16;
	na = realloc(*arr, nc * sizeof(void *));
	if (na == NULL)
		return -ENOMEM;
	*arr = na;
	*cap = nc;
	return 0;
}

/* Add a registry unless it is there. Lock held. */
static int
add_reg_locked(quay_http *h, quay_stats *s)
{
	int rc;

	for (size_t i = 0; i < h->nreg; i++)
		if (h->reg[i] == s)
			return 0;
	if (nobjects(h) >= QUAY_HTTP_OBJECTS_MAX)
		return -ENOSPC;
	if ((rc = grow(&h->reg, h->nreg, &h->capreg)) != 0)
		return rc;
	h->reg[h->nreg++] = s;
	return 0;
}

int
quay_http_add_stats(quay_http *h, quay_stats *s)
{
	int rc;

	if (h == NULL || s == NULL)
		return -EINVAL;
	pthread_mutex_lock(&h->lock);
	rc = add_reg_locked(h, s);
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/* A queue's registry: its private one, or the shared one its gauges were
 * made in (the queue does not keep that pointer: the gauge's series
 * does). */
static quay_stats *queue_registry(const quay_queue *q);

int
quay_http_add_queue(quay_http *h, quay_queue *q)
{
	struct hq *e;
	int rc;

	if (h == NULL || q == NULL)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	e->hw = calloc(HWIN, sizeof(*e->hw));
	if (e->hw == NULL) {
		free(e);
		return -ENOMEM;
	}
	e->q = q;
	pthread_mutex_lock(&h->lock);
	rc = 0;
	for (size_t i = 0; i < h->nq && rc == 0; i++)
		if (h->qs[i]->q == q)
			rc = -EEXIST;
	if (rc == 0 && nobjects(h) + 2 > QUAY_HTTP_OBJECTS_MAX)
		rc = -ENOSPC;
	if (rc == 0)
		rc = grow(&h->qs, h->nq, &h->capq);
	if (rc == 0)
		rc = add_reg_locked(h, queue_registry(q));
	if (rc == 0)
		h->qs[h->nq++] = e;
	pthread_mutex_unlock(&h->lock);
	if (rc != 0) {
		free(e->hw);
		free(e);
	}
	return rc;
}

int
quay_http_add_bus(quay_http *h, quay_bus *bus)
{
	struct hb *e;
	int rc;

	if (h == NULL || bus == NULL)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	e->bus = bus;
	pthread_mutex_lock(&h->lock);
	rc = 0;
	for (size_t i = 0; i < h->nb && rc == 0; i++)
		if (h->bs[i]->bus == bus)
			rc = -EEXIST;
	if (rc == 0 && nobjects(h) + 2 > QUAY_HTTP_OBJECTS_MAX)
		rc = -ENOSPC;
	if (rc == 0)
		rc = grow(&h->bs, h->nb, &h->capb);
	if (rc == 0)
		rc = add_reg_locked(h, quay_bus_stats(bus));
	if (rc == 0)
		h->bs[h->nb++] = e;
	pthread_mutex_unlock(&h->lock);
	if (rc != 0)
		free(e);
	return rc;
}

uint16_t
quay_http_port(const quay_http *h)
{
	return h != NULL ? h->port : 0;
}

/* ---- sampling ------------------------------------------------------- */

static void
queue_counters(const quay_queue *q, uint64_t v[QS_N])
{
	v[QS_SENT] = quay_counter_read(q->ctr[QC_SENT]);
	v[QS_RECEIVED] = quay_counter_read(q->ctr[QC_RECEIVED]);
	v[QS_ACKED] = quay_counter_read(q->ctr[QC_ACKED]);
	v[QS_NACKED] = quay_counter_read(q->ctr[QC_NACKED]);
	v[QS_DEAD] = quay_counter_read(q->ctr[QC_DEAD_LETTERED]);
}

static void
bus_counters(const quay_bus *bus, uint64_t v[QS_N])
{
	struct quay_bus_counters c;

	memset(v, 0, QS_N * sizeof(v[0]));
	if (quay_bus_counters(bus, &c) != 0)
		return;
	v[BS_PUBLISHED] = c.published;
	v[BS_DELIVERED] = c.delivered;
	v[BS_LOST] = c.dropped + c.rejected + c.timed_out;
}

/* Lock held. */
static void
sample_all(quay_http *h)
{
	int64_t now = quayi_mono_ns();
	size_t slot = h->ticks % SAMPLES;
	bool hist = h->ticks % HWIN_EVERY == 0;

	for (size_t i = 0; i < h->nq; i++) {
		struct hq *e = h->qs[i];
		e->s[slot].t = now;
		queue_counters(e->q, e->s[slot].v);
		if (hist) {
			size_t k = (h->ticks / HWIN_EVERY) % HWIN;
			if (quay_hist_read(e->q->h_ack, &e->hw[k]) == 0)
				e->hw_t[k] = now;
		}
	}
	for (size_t i = 0; i < h->nb; i++) {
		struct hb *e = h->bs[i];
		e->s[slot].t = now;
		bus_counters(e->bus, e->s[slot].v);
	}
	h->ticks++;
}

static void *
sampler_main(void *arg)
{
	quay_http *h = arg;
	struct timespec ts;

	pthread_mutex_lock(&h->lock);
	while (!h->stopping) {
		sample_all(h);
		ts = quayi_abs_ts(CLOCK_MONOTONIC, QUAYI_NS_PER_SEC); /* cv's clock */
		while (!h->stopping && pthread_cond_timedwait(&h->cv, &h->lock, &ts) == 0)
			;
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

/*
 * Rate per second of counter k from the newest sample at least 0.9 x
 * span old to now (cur, read at tnow): about `span`, never much less.
 * While no sample is that old (a young server), from the oldest one.
 * 0 when there is no sample at least 1 ms old. Lock held.
 */
static double
rate(const struct sample *s, const uint64_t *cur, int64_t tnow, size_t k, int64_t span)
{
	const struct sample *best = NULL, *oldest = NULL;
	int64_t min_age = span - span / 10;

	for (size_t i = 0; i < SAMPLES; i++) {
		int64_t age = tnow - s[i].t;

		if (s[i].t == 0 || age < 1000000)
			continue;
		if (age >= min_age && (best == NULL || s[i].t > best->t))
			best = &s[i];
		if (oldest == NULL || s[i].t < oldest->t)
			oldest = &s[i];
	}
	if (best == NULL)
		best = oldest;
	if (best == NULL)
		return 0.0;
	return (double)(cur[k] - best->v[k]) * 1e9 / (double)(tnow - best->t);
}

/* The ack-latency histogram over the last minute: now minus the newest
 * copy taken at least 60 s ago (so 60..70 s); all of it (since the queue
 * was created) while no copy is that old. Lock held. */
static void
latency_window(const struct hq *e, struct quay_hist_data *now, struct quay_hist_data *win)
{
	const struct quay_hist_data *base = NULL;
	int64_t t = quayi_mono_ns(), bt = 0;
	uint64_t lo, hi;
	bool any = false;

	for (size_t i = 0; i < HWIN; i++)
		if (e->hw_t[i] != 0 && t - e->hw_t[i] >= 60 * (int64_t)1000000000 &&
		    (base == NULL || e->hw_t[i] > bt)) {
			base = &e->hw[i];
			bt = e->hw_t[i];
		}
	quay_hist_read(e->q->h_ack, now);
	memset(win, 0, sizeof(*win));
	for (size_t i = 0; i < QUAY_HIST_BUCKETS; i++) {
		uint64_t b = now->buckets[i], a = base != NULL ? base->buckets[i] : 0;
		/* A read under concurrent recording may lag: never negative. */
		win->buckets[i] = b > a ? b - a : 0;
		if (win->buckets[i] == 0)
			continue;
		win->count += win->buckets[i];
		quay_hist_bucket_range(i, &lo, &hi);
		if (!any)
			win->min = lo;
		win->max = hi;
		any = true;
	}
	if (any) {
		/* Clamp to what was recorded (the overflow bucket's range ends
		 * at UINT64_MAX). */
		if (win->max > now->max)
			win->max = now->max;
		if (win->min < now->min)
			win->min = now->min;
	}
}

/* ---- queue and bus state -------------------------------------------- */

struct qview {
	struct quay_queue_stats st;
	uint64_t held, dlq_depth;
	bool has_dlq;
	unsigned alarms;             /* built-in rules, A_* bits */
	bool has_health;             /* the queue has alarms (opts.alarm[]) */
	struct quayi_health_view hv; /* their states and thresholds */
	unsigned on;                 /* bit i: alarm i is in ALARM */
	int sev;                     /* SEV_*: the worst of both */
};

enum { SEV_OK, SEV_DEGRADED, SEV_ERROR };
static const char *const sev_name[] = { "ok", "degraded", "error" };
static const char *const health_name[] = { "healthy", "degraded", "failing" };

enum {
	A_FULL = 1u << 0,      /* error */
	A_NEAR_FULL = 1u << 1, /* degraded */
	A_DLQ = 1u << 2,       /* degraded */
	A_BUS_LOST = 1u << 3,  /* degraded */
};

static const struct {
	unsigned bit;
	const char *name;
	bool error;
	const char *why;
} alarm_tab[] = {
	{ A_FULL, "full", true, "the queue holds its capacity: sends fail with -EAGAIN" },
	{ A_NEAR_FULL, "near_capacity", false, "the queue holds 90% or more of its capacity" },
	{ A_DLQ, "dlq_not_empty", false, "the dead-letter queue holds messages" },
	{ A_BUS_LOST, "losing_messages", false,
	    "deliveries were dropped, rejected or timed out in the last minute" },
};

static int sev_of(unsigned alarms);

static void
queue_view(const quay_queue *q, struct qview *v)
{
	memset(v, 0, sizeof(*v));
	quay_queue_stats((quay_queue *)q, &v->st); /* evaluates the alarms */
	v->has_health = quayi_health_read(q, &v->hv);
	v->held = v->st.ready + v->st.delayed + v->st.in_flight;
	if (q->dlq != NULL) {
		struct quay_queue_stats d;

		v->has_dlq = true;
		if (quay_queue_stats(q->dlq, &d) == 0)
			v->dlq_depth = d.ready + d.delayed + d.in_flight;
	}
	if (v->held >= q->capacity)
		v->alarms |= A_FULL;
	else if (v->held * 100 >= (uint64_t)q->capacity * NEAR_FULL_PCT)
		v->alarms |= A_NEAR_FULL;
	/* A DLQ alarm replaces the built-in rule: its threshold and periods
	 * say when the DLQ matters. */
	if (v->dlq_depth != 0 && !v->hv.h.alarm[QUAY_QUEUE_ALARM_DLQ].enabled)
		v->alarms |= A_DLQ;
	v->sev = sev_of(v->alarms);
	if (v->has_health) {
		for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++)
			if (v->hv.h.alarm[i].on)
				v->on |= 1u << i;
		if (v->hv.h.state == QUAY_QUEUE_FAILING)
			v->sev = SEV_ERROR;
		else if (v->hv.h.state == QUAY_QUEUE_DEGRADED && v->sev < SEV_DEGRADED)
			v->sev = SEV_DEGRADED;
	}
}

static int
sev_of(unsigned alarms)
{
	int sev = SEV_OK;

	for (size_t i = 0; i < sizeof(alarm_tab) / sizeof(alarm_tab[0]); i++)
		if (alarms & alarm_tab[i].bit) {
			if (alarm_tab[i].error)
				return SEV_ERROR;
			sev = SEV_DEGRADED;
		}
	return sev;
}

/* A JSON number for a double (finite: thresholds and values are). */
static void
b_num(struct buf *b, double d)
{
	if (d > -9e15 && d < 9e15 && d == (double)(int64_t)d)
		b_fmt(b, "%lld", (long long)d);
	else
		b_fmt(b, "%.17g", d);
}

/* The queue's own alarms in ALARM state, after the built-in ones in
 * "alarms":[...] (first: none of those written). */
static void
b_queue_alarms(struct buf *b, const struct qview *v, bool verbose, bool first)
{
	for (int i = 0; i < QUAY_QUEUE_ALARM_COUNT; i++) {
		const struct quay_queue_alarm_state *a = &v->hv.h.alarm[i];
		const char *name = quayi_health_alarm_name((quay_queue_alarm)i);
		bool failing = quayi_health_alarm_failing((quay_queue_alarm)i);

		if (!(v->on & (1u << i)))
			continue;
		if (!first)
			b_put(b, ",", 1);
		first = false;
		if (!verbose) {
			b_json_str(b, name);
			continue;
		}
		b_str(b, "{\"name\":");
		b_json_str(b, name);
		b_str(b, ",\"severity\":");
		b_json_str(b, failing ? "error" : "degraded");
		b_fmt(b, ",\"reason\":\"the queue's %s alarm is on (raise ", name);
		b_num(b, v->hv.raise[i]);
		b_str(b, ", clear below ");
		b_num(b, v->hv.clear[i]);
		b_str(b, failing ? "): work fails or is lost\"" : "): work is late\"");
		b_str(b, ",\"value\":");
		b_num(b, a->value);
		b_str(b, ",\"raise\":");
		b_num(b, v->hv.raise[i]);
		b_str(b, ",\"clear\":");
		b_num(b, v->hv.clear[i]);
		b_fmt(b, ",\"since_ns\":%lld}", (long long)a->since_ns);
	}
}

/* The built-in alarms; the queue's own too if v is not NULL. */
static void
b_alarms(struct buf *b, unsigned alarms, bool verbose, const struct qview *v)
{
	bool first = true;

	b_str(b, "\"alarms\":[");
	for (size_t i = 0; i < sizeof(alarm_tab) / sizeof(alarm_tab[0]); i++)
		if (alarms & alarm_tab[i].bit) {
			if (!first)
				b_put(b, ",", 1);
			first = false;
			if (verbose) {
				b_str(b, "{\"name\":");
				b_json_str(b, alarm_tab[i].name);
				b_str(b, ",\"severity\":");
				b_json_str(b, alarm_tab[i].error ? "error" : "degraded");
				b_str(b, ",\"reason\":");
				b_json_str(b, alarm_tab[i].why);
				b_put(b, "}", 1);
			} else {
				b_json_str(b, alarm_tab[i].name);
			}
		}
	if (v != NULL)
		b_queue_alarms(b, v, verbose, first);
	b_put(b, "]", 1);
}

/* "health": the queue's own state, null without alarms. */
static void
b_health(struct buf *b, const struct qview *v)
{
	b_str(b, ",\"health\":");
	if (v->has_health)
		b_json_str(b, health_name[v->hv.h.state]);
	else
		b_str(b, "null");
}

/* Bus alarms from its samples. Lock held. */
static unsigned
bus_alarms(const struct hb *e, const uint64_t *cur, int64_t tnow)
{
	return rate(e->s, cur, tnow, BS_LOST, 60 * (int64_t)1000000000) > 0.0 ? A_BUS_LOST : 0;
}

/* ---- /health ---------------------------------------------------------- */

static int
page_health(quay_http *h, bool verbose, struct buf *b)
{
	int all = SEV_OK;
	int64_t tnow;

	pthread_mutex_lock(&h->lock);
	tnow = quayi_mono_ns();
	b_str(b, "{\"queues\":[");
	for (size_t i = 0; i < h->nq; i++) {
		struct qview v;
		const quay_queue *q = h->qs[i]->q;

		queue_view(q, &v);
		if (v.sev > all)
			all = v.sev;
		b_str(b, i ? ",\n{\"name\":" : "\n{\"name\":");
		b_json_str(b, q->name);
		b_str(b, ",\"state\":");
		b_json_str(b, sev_name[v.sev]);
		b_put(b, ",", 1);
		b_alarms(b, v.alarms, verbose, &v);
		if (verbose) {
			b_fmt(b, ",\"held\":%llu,\"capacity\":%llu,\"dlq_depth\":%llu",
			    (unsigned long long)v.held, (unsigned long long)q->capacity,
			    (unsigned long long)v.dlq_depth);
			b_health(b, &v);
		}
		b_put(b, "}", 1);
	}
	b_str(b, "],\"buses\":[");
	for (size_t i = 0; i < h->nb; i++) {
		const struct hb *e = h->bs[i];
		uint64_t cur[QS_N];
		unsigned a;

		bus_counters(e->bus, cur);
		a = bus_alarms(e, cur, tnow);
		if (sev_of(a) > all)
			all = sev_of(a);
		b_str(b, i ? ",\n{\"name\":" : "\n{\"name\":");
		b_json_str(b, quayi_bus_name(e->bus));
		b_str(b, ",\"state\":");
		b_json_str(b, sev_name[sev_of(a)]);
		b_put(b, ",", 1);
		b_alarms(b, a, verbose, NULL);
		b_put(b, "}", 1);
	}
	pthread_mutex_unlock(&h->lock);
	b_str(b, "],\"status\":");
	b_json_str(b, sev_name[all]);
	b_str(b, "}\n");
	return all == SEV_ERROR ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK;
}

/* ---- /summary ---------------------------------------------------------- */

static void
b_quantiles(struct buf *b, const struct quay_hist_data *d)
{
	static const struct {
		const char *key;
		double q;
	} qs[] = { { "p50", 0.5 }, { "p99", 0.99 }, { "p999", 0.999 } };
	uint64_t v;

	b_fmt(b, "{\"count\":%llu", (unsigned long long)d->count);
	for (size_t i = 0; i < 3; i++) {
		if (quay_hist_quantile(d, qs[i].q, &v) == 0)
			b_fmt(b, ",\"%s\":%llu", qs[i].key, (unsigned long long)v);
		else
			b_fmt(b, ",\"%s\":null", qs[i].key);
	}
	b_put(b, "}", 1);
}

static const char *
label(const struct quay_stats_metric *m, const char *name)
{
	for (size_t i = 0; i < m->nlabels; i++)
		if (strcmp(m->labels[i].name, name) == 0)
			return m->labels[i].value;
	return NULL;
}

/* The subscriptions of one bus, from its registry: one entry per sub id,
 * in creation order (the snapshot's series order). */
static void
b_subs(struct buf *b, const quay_bus *bus)
{
	static const char *const fam[] = {
		"quay_sub_pending",
		"quay_sub_delivered_total",
		"quay_sub_received_total",
		"quay_sub_dropped_total",
	};
	static const char *const key[] = { "pending", "delivered", "received", "dropped" };
	quay_stats_snap *snap;
	const struct quay_stats_metric *m, *x;
	const char *name = quayi_bus_name(bus);
	size_t n;
	bool first = true;

	b_str(b, "\"subs\":[");
	if (quay_stats_snapshot(quay_bus_stats(bus), &snap) != 0) {
		b_put(b, "]", 1);
		return;
	}
	n = quay_stats_snap_count(snap);
	for (size_t i = 0; i < n; i++) {
		const char *id, *bn, *grp;

		quay_stats_snap_metric(snap, i, &m);
		if (strcmp(m->name, fam[0]) != 0 || (bn = label(m, "bus")) == NULL || strcmp(bn, name) != 0 ||
		    (id = label(m, "sub")) == NULL)
			continue;
		b_str(b, first ? "\n{\"id\":" : ",\n{\"id\":");
		first = false;
		b_json_str(b, id);
		b_str(b, ",\"pattern\":");
		b_json_str(b, label(m, "pattern") != NULL ? label(m, "pattern") : "");
		b_str(b, ",\"group\":");
		if ((grp = label(m, "group")) != NULL)
			b_json_str(b, grp);
		else
			b_str(b, "null");
		b_fmt(b, ",\"%s\":%lld", key[0], (long long)m->gauge);
		for (size_t f = 1; f < 4; f++) {
			uint64_t v = 0;
			for (size_t j = 0; j < n; j++) {
				const char *xb, *xi;
				quay_stats_snap_metric(snap, j, &x);
				if (strcmp(x->name, fam[f]) == 0 && (xb = label(x, "bus")) != NULL &&
				    strcmp(xb, name) == 0 && (xi = label(x, "sub")) != NULL &&
				    strcmp(xi, id) == 0) {
					v = x->counter;
					break;
				}
			}
			b_fmt(b, ",\"%s\":%llu", key[f], (unsigned long long)v);
		}
		b_put(b, "}", 1);
	}
	quay_stats_snap_free(snap);
	b_put(b, "]", 1);
}

static int
page_summary(quay_http *h, struct buf *b)
{
	static const char *const qk[QS_N] = { "sent", "received", "acked", "nacked", "dead_lettered" };
	static const char *const bk[BS_N] = { "published", "delivered", "lost" };
	struct quay_hist_data *now, *win;
	int64_t tnow;

	now = malloc(2 * sizeof(*now));
	if (now == NULL)
		return -ENOMEM;
	win = now + 1;
	pthread_mutex_lock(&h->lock);
	b_fmt(b, "{\"time_ms\":%lld,\"uptime_s\":%.3f,\"queues\":[", (long long)(quayi_real_ns() / 1000000),
	    (double)(quayi_mono_ns() - h->started_ns) / 1e9);
	for (size_t i = 0; i < h->nq; i++) {
		const struct hq *e = h->qs[i];
		const quay_queue *q = e->q;
		struct qview v;
		uint64_t cur[QS_N];
		char k[48];

		queue_view(q, &v);
		tnow = quayi_mono_ns();
		queue_counters(q, cur);
		b_str(b, i ? ",\n{\"name\":" : "\n{\"name\":");
		b_json_str(b, q->name);
		b_str(b, ",\"dlq\":");
		if (q->dlq != NULL)
			b_json_str(b, q->dlq->name);
		else
			b_str(b, "null");
		b_str(b, ",\"state\":");
		b_json_str(b, sev_name[v.sev]);
		b_put(b, ",", 1);
		b_alarms(b, v.alarms, false, &v);
		b_health(b, &v);
		b_fmt(b,
		    ",\"capacity\":%llu,\"ready\":%llu,\"delayed\":%llu,\"in_flight\":%llu,"
		    "\"dlq_depth\":%llu,\"oldest_age_ns\":%lld",
		    (unsigned long long)q->capacity, (unsigned long long)v.st.ready,
		    (unsigned long long)v.st.delayed, (unsigned long long)v.st.in_flight,
		    (unsigned long long)v.dlq_depth, (long long)v.st.oldest_age_ns);
		for (size_t c = 0; c < QS_N; c++)
			b_fmt(b, ",\"%s\":%llu", qk[c], (unsigned long long)cur[c]);
		b_str(b, ",\"rates\":{");
		for (size_t c = 0; c < QS_N; c++) {
			if (c != 0)
				b_put(b, ",", 1);
			snprintf(k, sizeof(k), "%s_1s", qk[c]);
			b_rate(b, k, rate(e->s, cur, tnow, c, 1000000000));
			b_put(b, ",", 1);
			snprintf(k, sizeof(k), "%s_1m", qk[c]);
			b_rate(b, k, rate(e->s, cur, tnow, c, 60 * (int64_t)1000000000));
		}
		b_str(b, "},\"ack_latency_ns\":");
		latency_window(e, now, win);
		b_quantiles(b, win);
		b_put(b, "}", 1);
	}
	b_str(b, "],\"buses\":[");
	for (size_t i = 0; i < h->nb; i++) {
		const struct hb *e = h->bs[i];
		uint64_t cur[QS_N];
		unsigned a;
		char k[48];

		tnow = quayi_mono_ns();
		bus_counters(e->bus, cur);
		a = bus_alarms(e, cur, tnow);
		b_str(b, i ? ",\n{\"name\":" : "\n{\"name\":");
		b_json_str(b, quayi_bus_name(e->bus));
		b_str(b, ",\"state\":");
		b_json_str(b, sev_name[sev_of(a)]);
		b_put(b, ",", 1);
		b_alarms(b, a, false, NULL);
		for (size_t c = 0; c < BS_N; c++)
			b_fmt(b, ",\"%s\":%llu", bk[c], (unsigned long long)cur[c]);
		b_str(b, ",\"rates\":{");
		for (size_t c = 0; c < BS_N; c++) {
			if (c != 0)
				b_put(b, ",", 1);
			snprintf(k, sizeof(k), "%s_1s", bk[c]);
			b_rate(b, k, rate(e->s, cur, tnow, c, 1000000000));
			b_put(b, ",", 1);
			snprintf(k, sizeof(k), "%s_1m", bk[c]);
			b_rate(b, k, rate(e->s, cur, tnow, c, 60 * (int64_t)1000000000));
		}
		b_str(b, "},");
		b_subs(b, e->bus);
		b_put(b, "}", 1);
	}
	pthread_mutex_unlock(&h->lock);
	b_str(b, "]}\n");
	free(now);
	return MHD_HTTP_OK;
}

/* ---- /metrics ---------------------------------------------------------- */

static int
page_metrics(quay_http *h, struct buf *b)
{
	quay_stats_snap **snaps;
	size_t n = 0;
	int rc = 0;

	pthread_mutex_lock(&h->lock);
	snaps = calloc(h->nreg ? h->nreg : 1, sizeof(*snaps));
	if (snaps == NULL) {
		pthread_mutex_unlock(&h->lock);
		return -ENOMEM;
	}
	for (; n < h->nreg && rc == 0; n++)
		rc = quay_stats_snapshot(h->reg[n], &snaps[n]);
	pthread_mutex_unlock(&h->lock);
	if (rc != 0)
		n--; /* the failed one is NULL */
	else if (n != 0)
		rc = quay_stats_write_prometheus_many((const quay_stats_snap *const *)snaps, n, b_write, b);
	for (size_t i = 0; i < n; i++)
		quay_stats_snap_free(snaps[i]);
	free(snaps);
	return rc != 0 ? rc : MHD_HTTP_OK;
}

/* ---- request handling ----------------------------------------------- */

static enum MHD_Result
reply(struct MHD_Connection *c, unsigned status, const char *type, struct buf *b, bool head,
    const char *allow)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	if (b->oom) {
		free(b->p);
		return MHD_NO; /* closes the connection */
	}
	/* HEAD: the same response (Content-Length included); libmicrohttpd
	 * sends its headers only. */
	(void)head;
	r = MHD_create_response_from_buffer(b->len, b->p, MHD_RESPMEM_MUST_FREE);
	if (r == NULL) {
		free(b->p);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	if (allow != NULL)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	if (status == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"quay\"");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
reply_text(struct MHD_Connection *c, unsigned status, const char *text, const char *allow)
{
	struct buf b = { 0 };

	b_str(&b, text);
	return reply(c, status, "text/plain; charset=utf-8", &b, false, allow);
}

/* Compare the token in constant time (for its length). */
static bool
token_ok(const quay_http *h, struct MHD_Connection *c)
{
	const char *v;
	size_t n;
	unsigned char diff = 0;

	if (h->token_len == 0)
		return true;
	v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (v == NULL || strncmp(v, "Bearer ", 7) != 0)
		return false;
	v += 7;
	n = strlen(v);
	if (n != h->token_len)
		return false;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(v[i] ^ h->token[i]);
	return diff == 0;
}

static enum MHD_Result
find_verbose(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	(void)value;
	if (strcmp(key, "verbose") == 0)
		*(bool *)cls = true;
	return MHD_YES;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
    const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	quay_http *h = cls;
	struct buf b = { 0 };
	bool head;
	int st;

	(void)version;
	(void)upload_data;
	/* The first call for a request carries only its headers: answer at
	 * once (no request here has a body worth reading). A body sent
	 * anyway is refused: the connection is closed after the reply. */
	if (*con_cls == NULL)
		*con_cls = (void *)1;
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	head = strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	if (!head && strcmp(method, MHD_HTTP_METHOD_GET) != 0)
		return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, HEAD");
	if (!token_ok(h, c))
		return reply_text(c, MHD_HTTP_UNAUTHORIZED, "unauthorized\n", NULL);
	if (strcmp(url, "/metrics") == 0) {
		st = page_metrics(h, &b);
		if (st < 0) {
			free(b.p);
			return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
		}
		return reply(c, (unsigned)st, "text/plain; version=0.0.4; charset=utf-8", &b, head, NULL);
	}
	if (strcmp(url, "/health") == 0) {
		bool verbose = false;

		/* "?verbose" (no value) is a key with a NULL value: look for the key. */
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, find_verbose, &verbose);
		st = page_health(h, verbose, &b);
		return reply(c, (unsigned)st, "application/json", &b, head, NULL);
	}
	if (strcmp(url, "/summary") == 0) {
		st = page_summary(h, &b);
		if (st < 0) {
			free(b.p);
			return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", NULL);
		}
		return reply(c, (unsigned)st, "application/json", &b, head, NULL);
	}
	if (strcmp(url, "/dashboard") == 0 || strcmp(url, "/") == 0) {
		b_put(&b, quayi_http_dashboard, quayi_http_dashboard_len);
		return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", &b, head, NULL);
	}
	return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
}

static void
no_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	(void)fmt;
	(void)ap;
}

/* ---- start / stop ------------------------------------------------------ */

static quay_stats *
queue_registry(const quay_queue *q)
{
	return q->stats_owned != NULL ? q->stats_owned : quayi_stats_of_gauge(q->gauge[QG_DELAYED]);
}

static void
http_free(quay_http *h)
{
	for (size_t i = 0; i < h->nq; i++) {
		free(h->qs[i]->hw);
		free(h->qs[i]);
	}
	for (size_t i = 0; i < h->nb; i++)
		free(h->bs[i]);
	free(h->qs);
	free(h->bs);
	free(h->reg);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

int
quay_http_start(const struct quay_http_opts *opts, quay_http **out)
{
	struct quay_http_opts o = QUAY_HTTP_OPTS_INIT;
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	} addr;
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_AUTO;
	pthread_condattr_t ca;
	quay_http *h;
	int rc;

	if (out == NULL)
		return -EINVAL;
	if (opts != NULL) {
		if (opts->size != sizeof(o))
			return -EINVAL;
		o = *opts;
	}
	if (o.flags != 0 || o.max_connections > 10000 || o.timeout_s > 3600 || o.threads > 64 ||
	    (o.max_request_bytes != 0 && (o.max_request_bytes < 1024 || o.max_request_bytes > (1u << 20))))
		return -EINVAL;
	if (o.addr == NULL)
		o.addr = "127.0.0.1";
	memset(&addr, 0, sizeof(addr));
	if (inet_pton(AF_INET, o.addr, &addr.in4.sin_addr) == 1) {
		addr.in4.sin_family = AF_INET;
		addr.in4.sin_port = htons(o.port);
	} else if (inet_pton(AF_INET6, o.addr, &addr.in6.sin6_addr) == 1) {
		addr.in6.sin6_family = AF_INET6;
		addr.in6.sin6_port = htons(o.port);
		flags |= MHD_USE_IPv6;
	} else {
		return -EINVAL;
	}
	if (o.token != NULL) {
		size_t n = strnlen(o.token, QUAY_HTTP_TOKEN_MAX + 1);
		if (n > QUAY_HTTP_TOKEN_MAX)
			return -EINVAL;
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)o.token[i] < 0x21 || (unsigned char)o.token[i] > 0x7e)
				return -EINVAL;
	}
	if (o.max_connections == 0)
		o.max_connections = 128;
	if (o.max_request_bytes == 0)
		o.max_request_bytes = 16384;
	if (o.timeout_s == 0)
		o.timeout_s = 10;
	if (o.threads == 0)
		o.threads = 2;

	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	if (o.token != NULL) {
		h->token_len = strlen(o.token);
		memcpy(h->token, o.token, h->token_len);
	}
	h->started_ns = quayi_mono_ns();
	if (pthread_mutex_init(&h->lock, NULL) != 0) {
		free(h);
		return -ENOMEM;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0) {
		pthread_mutex_destroy(&h->lock);
		free(h);
		return -ENOMEM;
	}

	errno = 0;
	/* One option and its values per line. */
	/* clang-format off */
	h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h,
	    MHD_OPTION_SOCK_ADDR, &addr.sa,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)o.max_connections,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o.timeout_s,
	    /* The per-connection pool holds the request line and headers:
	     * the request size limit (MHD answers 413/414/431 past it). */
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)o.max_request_bytes,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o.threads,
	    MHD_OPTION_EXTERNAL_LOGGER, no_log, NULL,
	    MHD_OPTION_END);
	/* clang-format on */
	if (h->d == NULL) {
		rc = errno == EADDRINUSE ? -EADDRINUSE :
		    errno == EACCES      ? -EACCES :
		    errno == ENOMEM      ? -ENOMEM :
		                           -EIO;
		http_free(h);
		return rc;
	}
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info != NULL ? info->port : o.port;
	if (pthread_create(&h->sampler, NULL, sampler_main, h) != 0) {
		MHD_stop_daemon(h->d);
		http_free(h);
		return -ENOMEM;
	}
	*out = h;
	return 0;
}

void
quay_http_stop(quay_http *h)
{
	if (h == NULL)
		return;
	/* The daemon first: no request runs once it has returned. */
	MHD_stop_daemon(h->d);
	pthread_mutex_lock(&h->lock);
	h->stopping = true;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->sampler, NULL);
	http_free(h);
}
