/* SPDX-License-Identifier: MIT */
/*
 * Header filters of subscriptions and bindings (src/filter.c): compiled
 * once at subscribe/bind time, evaluated per message without allocation.
 * The grammar is at the top of filter.c and in docs/ROUTING.md.
 */
#ifndef QUAY_FILTER_INTERNAL_H
#define QUAY_FILTER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "alloc.h"
#include <stdint.h>

#include <quay/msg.h>

struct quayi_filter;

/* Compile expr. 0 and *out set (free with quayi_filter_free()); -EINVAL
 * (err, if errlen > 0, says where and why, as quay_filter_check()); or
 * -ENOMEM. */
int quayi_filter_compile(const char *expr, struct quayi_filter **out, char *err, size_t errlen);
/* The same with the memory (the filter, and the parser's while it runs) from a. */
int quayi_filter_compile_a(const struct quay_allocator *a, const char *expr, struct quayi_filter **out,
    char *err, size_t errlen);

void quayi_filter_free(struct quayi_filter *f);

/* A message's headers, read once per publish (on the stack) so that each
 * filter of the fan-out compares precomputed hashes instead of walking
 * the message's records per clause. Loaded lazily by the first filter. */
struct quayi_filter_hdrs {
	const quay_msg *m;
	int n; /* -1: not loaded yet */
	struct {
		uint64_t h;
		const char *k, *v;
		size_t klen, vlen;
	} e[QUAY_MSG_HEADERS_MAX];
};

static inline void
quayi_filter_hdrs_init(struct quayi_filter_hdrs *h, const quay_msg *m)
{
	h->m = m;
	h->n = -1;
}

/* Whether the message's headers satisfy f. Reads only; allocates nothing. */
bool quayi_filter_match_hdrs(const struct quayi_filter *f, struct quayi_filter_hdrs *h);

/* The same for one message (loads its headers each call). */
bool quayi_filter_match(const struct quayi_filter *f, const quay_msg *m);

/* Parse a whole number in s[0..len) the way filters do (digits, one
 * optional fraction and exponent, an optional sign; no spaces). */
bool quayi_filter_number(const char *s, size_t len, double *out);

/* Print f in canonical form (one space around operators, values quoted,
 * numbers with %.17g) into buf; the length it needs (as snprintf). */
size_t quayi_filter_format(const struct quayi_filter *f, char *buf, size_t cap);

/* ---- read access for tests and the fuzz reference ------------------- */

enum quayi_filter_op {
	QUAYI_F_EQ = 1, /* one of vals */
	QUAYI_F_NE,     /* present and none of vals (anything-but) */
	QUAYI_F_PREFIX, /* present and starts with vals[0] */
	QUAYI_F_RANGE,  /* present, a number, within lo..hi */
	QUAYI_F_EXISTS,
	QUAYI_F_MISSING,
};

struct quayi_filter_val {
	const char *s;
	size_t len;
};

struct quayi_filter_clause {
	enum quayi_filter_op op;
	bool last; /* last clause of its && group */
	bool lo_incl, hi_incl;
	const char *name; /* NUL-terminated */
	size_t namelen;
	uint64_t namehash; /* filter_hash(name) */
	double lo, hi;     /* RANGE; -inf / +inf when open */
	unsigned nvals;
	const struct quayi_filter_val *vals;
};

struct quayi_filter {
	unsigned nclauses;
	unsigned ngroups;
	const struct quayi_filter_clause *c;
	const struct quay_allocator *alloc; /* the block's */
	size_t size;                        /* of the block */
};

#endif /* QUAY_FILTER_INTERNAL_H */
