/* SPDX-License-Identifier: MIT */
/*
 * The exporters of stats snapshots (include/quay/stats.h, docs/STATS.md):
 * Prometheus text format 0.0.4 and JSON, through a callback or into a
 * caller's buffer, and the Prometheus histogram bounds (le). They read
 * only a snapshot, never a live registry, and allocate nothing.
 */
#include "quay_internal.h"
#include "stats_internal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <quay/stats.h>

/* ==== Prometheus histogram bounds ====================================== */

static const struct {
	uint64_t ns;
	const char *text;
} le_bounds[QUAY_HIST_LE_COUNT] = {
	{ 250, "2.5e-07" },
	{ 500, "5e-07" },
	{ 1000, "1e-06" },
	{ 2500, "2.5e-06" },
	{ 5000, "5e-06" },
	{ 10000, "1e-05" },
	{ 25000, "2.5e-05" },
	{ 50000, "5e-05" },
	{ 100000, "0.0001" },
	{ 250000, "0.00025" },
	{ 500000, "0.0005" },
	{ 1000000, "0.001" },
	{ 2500000, "0.0025" },
	{ 5000000, "0.005" },
	{ 10000000, "0.01" },
	{ 25000000, "0.025" },
	{ 50000000, "0.05" },
	{ 100000000, "0.1" },
	{ 250000000, "0.25" },
	{ 500000000, "0.5" },
	{ 1000000000, "1" },
	{ 2500000000, "2.5" },
	{ 5000000000, "5" },
	{ 10000000000, "10" },
	{ 30000000000, "30" },
	{ 60000000000, "60" },
};

int
quay_hist_le_bound(size_t i, uint64_t *ns, const char **text)
{
	if (i >= QUAY_HIST_LE_COUNT || ns == NULL)
		return -EINVAL;
	*ns = le_bounds[i].ns;
	if (text != NULL)
		*text = le_bounds[i].text;
	return 0;
}

/* ==== exporters ====================================================== */

/* Output buffered on the stack and handed to fn in pieces. */
struct out {
	quay_stats_write_fn fn;
	void *arg;
	int err;
	size_t n;
	char buf[512];
};

static void
out_flush(struct out *o)
{
	if (o->n != 0 && o->err == 0) {
		int rc = o->fn(o->arg, o->buf, o->n);
		if (rc < 0)
			o->err = rc;
	}
	o->n = 0;
}

static void
out_put(struct out *o, const char *s, size_t len)
{
	while (len != 0 && o->err == 0) {
		size_t k = sizeof(o->buf) - o->n;
		if (k > len)
			k = len;
		memcpy(o->buf + o->n, s, k);
		o->n += k;
		s += k;
		len -= k;
		if (o->n == sizeof(o->buf))
			out_flush(o);
	}
}

static void
out_str(struct out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static void
out_u64(struct out *o, uint64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)v);

	out_put(o, b, (size_t)n);
}

static void
out_i64(struct out *o, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%lld", (long long)v);

	out_put(o, b, (size_t)n);
}

/* Nanoseconds as decimal seconds, exactly: "S.NNNNNNNNN". */
static void
out_seconds(struct out *o, uint64_t ns)
{
	char b[32];
	int n = snprintf(b, sizeof(b), "%llu.%09llu", (unsigned long long)(ns / 1000000000u),
	    (unsigned long long)(ns % 1000000000u));

	out_put(o, b, (size_t)n);
}

/* Copy s, escaping backslash and newline, and double quote if quote. */
static void
out_prom_escaped(struct out *o, const char *s, bool quote)
{
	const char *run = s;

	for (; *s != '\0'; s++) {
		const char *esc = NULL;
		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (quote && *s == '"')
			esc = "\\\"";
		if (esc != NULL) {
			out_put(o, run, (size_t)(s - run));
			out_str(o, esc);
			run = s + 1;
		}
	}
	out_put(o, run, (size_t)(s - run));
}

/* {a="x",b="y"[,le="..."]}, or nothing when there are no labels. */
static void
out_prom_labels(struct out *o, const struct quay_stats_metric *m, const char *le)
{
	if (m->nlabels == 0 && le == NULL)
		return;
	out_put(o, "{", 1);
	for (size_t i = 0; i < m->nlabels; i++) {
		if (i != 0)
			out_put(o, ",", 1);
		out_str(o, m->labels[i].name);
		out_put(o, "=\"", 2);
		out_prom_escaped(o, m->labels[i].value, true);
		out_put(o, "\"", 1);
	}
	if (le != NULL) {
		out_str(o, m->nlabels != 0 ? ",le=\"" : "le=\"");
		out_str(o, le);
		out_put(o, "\"", 1);
	}
	out_put(o, "}", 1);
}

static const char *
type_name(enum quay_stats_type t)
{
	return t == QUAY_STATS_COUNTER ? "counter" : t == QUAY_STATS_GAUGE ? "gauge" : "histogram";
}

static void
prom_hist(struct out *o, const struct quay_stats_metric *m)
{
	const struct quay_hist_data *d = m->hist;
	uint64_t cum = 0;
	size_t b = 0;

	for (size_t i = 0; i < QUAY_HIST_LE_COUNT; i++) {
		/* Buckets wholly at or below the bound: those before the one
		 * holding bound + 1. */
		size_t end = quay_hist_bucket_of(le_bounds[i].ns + 1);
		for (; b < end; b++)
			cum += d->buckets[b];
		out_str(o, m->name);
		out_str(o, "_bucket");
		out_prom_labels(o, m, le_bounds[i].text);
		out_put(o, " ", 1);
		out_u64(o, cum);
		out_put(o, "\n", 1);
	}
	out_str(o, m->name);
	out_str(o, "_bucket");
	out_prom_labels(o, m, "+Inf");
	out_put(o, " ", 1);
	out_u64(o, d->count);
	out_put(o, "\n", 1);
	out_str(o, m->name);
	out_str(o, "_sum");
	out_prom_labels(o, m, NULL);
	out_put(o, " ", 1);
	out_seconds(o, d->sum);
	out_put(o, "\n", 1);
	out_str(o, m->name);
	out_str(o, "_count");
	out_prom_labels(o, m, NULL);
	out_put(o, " ", 1);
	out_u64(o, d->count);
	out_put(o, "\n", 1);
}

static void
prom_family(struct out *o, const struct quay_stats_metric *m)
{
	if (m->help[0] != '\0') {
		out_str(o, "# HELP ");
		out_str(o, m->name);
		out_put(o, " ", 1);
		out_prom_escaped(o, m->help, false);
		out_put(o, "\n", 1);
	}
	out_str(o, "# TYPE ");
	out_str(o, m->name);
	out_put(o, " ", 1);
	out_str(o, type_name(m->type));
	out_put(o, "\n", 1);
}

static void
prom_series(struct out *o, const struct quay_stats_metric *m)
{
	if (m->type == QUAY_STATS_HIST) {
		prom_hist(o, m);
		return;
	}
	out_str(o, m->name);
	out_prom_labels(o, m, NULL);
	out_put(o, " ", 1);
	if (m->type == QUAY_STATS_COUNTER) {
		out_u64(o, m->counter);
	} else if (m->seconds) {
		if (m->gauge < 0) {
			out_put(o, "-", 1);
			out_seconds(o, -(uint64_t)m->gauge);
		} else {
			out_seconds(o, (uint64_t)m->gauge);
		}
	} else {
		out_i64(o, m->gauge);
	}
	out_put(o, "\n", 1);
}

int
quay_stats_write_prometheus(const quay_stats_snap *snap, quay_stats_write_fn fn, void *arg)
{
	return quay_stats_write_prometheus_many(&snap, snap != NULL ? 1 : 0, fn, arg);
}

/* Does the snapshot hold a family named name? */
static bool
snap_has_family(const quay_stats_snap *snap, const char *name)
{
	const char *prev = NULL;

	for (size_t i = 0; i < snap->n; i++)
		if (snap->m[i].name != prev) {
			prev = snap->m[i].name;
			if (strcmp(prev, name) == 0)
				return true;
		}
	return false;
}

int
quay_stats_write_prometheus_many(const quay_stats_snap *const *snaps, size_t n, quay_stats_write_fn fn,
    void *arg)
{
	struct out o;

	if (snaps == NULL || n == 0 || fn == NULL)
		return -EINVAL;
	for (size_t k = 0; k < n; k++)
		if (snaps[k] == NULL)
			return -EINVAL;
	o.fn = fn;
	o.arg = arg;
	o.err = 0;
	o.n = 0;
	for (size_t k = 0; k < n && o.err == 0; k++) {
		const quay_stats_snap *snap = snaps[k];

		for (size_t i = 0; i < snap->n && o.err == 0;) {
			const struct quay_stats_metric *m = &snap->m[i];
			const char *name = m->name;
			bool dup = false;

			/* A family an earlier snapshot has was written with it. */
			for (size_t j = 0; j < k && !dup; j++)
				dup = snap_has_family(snaps[j], name);
			if (!dup)
				prom_family(&o, m);
			/* Series of a family are adjacent and share the name string. */
			for (; i < snap->n && snap->m[i].name == name; i++)
				if (!dup)
					prom_series(&o, &snap->m[i]);
			if (dup)
				continue;
			/* The same family in later snapshots, if of the same kind. */
			for (size_t j = k + 1; j < n && o.err == 0; j++)
				for (size_t x = 0; x < snaps[j]->n; x++) {
					const struct quay_stats_metric *y = &snaps[j]->m[x];
					if (y->type == m->type && y->seconds == m->seconds &&
					    strcmp(y->name, name) == 0)
						prom_series(&o, y);
				}
		}
	}
	out_flush(&o);
	return o.err;
}

/* A JSON string, quoted and escaped (the input is valid UTF-8). */
static void
out_json_str(struct out *o, const char *s)
{
	const char *run = s;

	out_put(o, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		out_put(o, run, (size_t)(s - run));
		run = s + 1;
		switch (c) {
		case '"': out_put(o, "\\\"", 2); break;
		case '\\': out_put(o, "\\\\", 2); break;
		case '\n': out_put(o, "\\n", 2); break;
		case '\r': out_put(o, "\\r", 2); break;
		case '\t': out_put(o, "\\t", 2); break;
		default:
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			out_put(o, esc, 6);
			break;
		}
	}
	out_put(o, run, (size_t)(s - run));
	out_put(o, "\"", 1);
}

static void
json_hist(struct out *o, const struct quay_hist_data *d)
{
	static const struct {
		const char *key;
		double q;
	} qs[] = { { ",\"p50\":", 0.5 }, { ",\"p90\":", 0.9 }, { ",\"p99\":", 0.99 },
		{ ",\"p999\":", 0.999 } };
	uint64_t v;

	out_str(o, ",\"unit\":\"ns\",\"count\":");
	out_u64(o, d->count);
	out_str(o, ",\"sum\":");
	out_u64(o, d->sum);
	out_str(o, ",\"min\":");
	if (d->count != 0)
		out_u64(o, d->min);
	else
		out_str(o, "null");
	out_str(o, ",\"max\":");
	if (d->count != 0)
		out_u64(o, d->max);
	else
		out_str(o, "null");
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		out_str(o, qs[i].key);
		if (quay_hist_quantile(d, qs[i].q, &v) == 0)
			out_u64(o, v);
		else
			out_str(o, "null");
	}
}

int
quay_stats_write_json(const quay_stats_snap *snap, quay_stats_write_fn fn, void *arg)
{
	struct out o;

	if (snap == NULL || fn == NULL)
		return -EINVAL;
	o.fn = fn;
	o.arg = arg;
	o.err = 0;
	o.n = 0;
	out_str(&o, "{\"metrics\":[");
	for (size_t i = 0; i < snap->n && o.err == 0; i++) {
		const struct quay_stats_metric *m = &snap->m[i];
		out_str(&o, i == 0 ? "\n{\"name\":" : ",\n{\"name\":");
		out_json_str(&o, m->name);
		out_str(&o, ",\"type\":\"");
		out_str(&o, type_name(m->type));
		out_str(&o, "\",\"help\":");
		out_json_str(&o, m->help);
		out_str(&o, ",\"labels\":{");
		for (size_t k = 0; k < m->nlabels; k++) {
			if (k != 0)
				out_put(&o, ",", 1);
			out_json_str(&o, m->labels[k].name);
			out_put(&o, ":", 1);
			out_json_str(&o, m->labels[k].value);
		}
		out_put(&o, "}", 1);
		if (m->type == QUAY_STATS_COUNTER) {
			out_str(&o, ",\"value\":");
			out_u64(&o, m->counter);
		} else if (m->type == QUAY_STATS_GAUGE) {
			if (m->seconds)
				out_str(&o, ",\"unit\":\"ns\"");
			out_str(&o, ",\"value\":");
			out_i64(&o, m->gauge);
		} else {
			json_hist(&o, m->hist);
		}
		out_put(&o, "}", 1);
	}
	out_str(&o, "\n]}\n");
	out_flush(&o);
	return o.err;
}

/* The buffer exporters: count everything, keep what fits. */
struct sink {
	char *buf;
	size_t cap;
	size_t len;
};

static int
sink_write(void *arg, const char *data, size_t len)
{
	struct sink *k = arg;

	if (k->len < k->cap) {
		size_t room = k->cap - k->len;
		memcpy(k->buf + k->len, data, len < room ? len : room);
	}
	k->len += len;
	return 0;
}

static int
format_with(int (*writer)(const quay_stats_snap *, quay_stats_write_fn, void *), const quay_stats_snap *snap,
    char *buf, size_t cap, size_t *len)
{
	struct sink k = { buf, cap, 0 };
	int rc;

	if (snap == NULL || len == NULL || (buf == NULL && cap != 0))
		return -EINVAL;
	rc = writer(snap, sink_write, &k);
	if (rc != 0)
		return rc;
	*len = k.len;
	if (k.len < cap) {
		buf[k.len] = '\0';
		return 0;
	}
	if (cap != 0)
		buf[cap - 1] = '\0';
	return -ENOSPC;
}

int
quay_stats_format_prometheus(const quay_stats_snap *snap, char *buf, size_t cap, size_t *len)
{
	return format_with(quay_stats_write_prometheus, snap, buf, cap, len);
}

int
quay_stats_format_json(const quay_stats_snap *snap, char *buf, size_t cap, size_t *len)
{
	return format_with(quay_stats_write_json, snap, buf, cap, len);
}
