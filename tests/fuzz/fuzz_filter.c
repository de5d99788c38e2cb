/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of the header-filter parser and evaluator (issue 12),
 * checked against the checker and against reference code in this file.
 *
 * An input is "<filter>\n<key>=<value>\n<key>=<value>..." (the headers
 * of one message; no newline: the whole input is the filter). For each:
 *  - quay_filter_check() and the compiler agree on validity; an error
 *    message says "at byte N: ..." with N within the expression;
 *  - a valid filter printed in canonical form compiles again to the
 *    same canonical form (nothing lost or reinterpreted);
 *  - quayi_filter_match() on the message agrees with ref_eval(): the
 *    compiled clauses evaluated the slow, obvious way (NUL-terminated
 *    copies, strcmp, strtod after a hand-written number check).
 * Any disagreement aborts (a crash for libFuzzer).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/quay.h>

#include "../../src/filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static quay_pool *pool;

static void
check(bool ok, const char *what, const char *expr)
{
	if (!ok) {
		fprintf(stderr, "fuzz_filter: %s: \"%s\"\n", what, expr);
		abort();
	}
}

/* A number by the grammar, checked byte by byte. */
static bool
ref_is_number(const char *s)
{
	size_t i = 0;

	if (s[i] == '+' || s[i] == '-')
		i++;
	if (s[i] < '0' || s[i] > '9')
		return false;
	while (s[i] >= '0' && s[i] <= '9')
		i++;
	if (s[i] == '.') {
		i++;
		if (s[i] < '0' || s[i] > '9')
			return false;
		while (s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (s[i] == 'e' || s[i] == 'E') {
		i++;
		if (s[i] == '+' || s[i] == '-')
			i++;
		if (s[i] < '0' || s[i] > '9')
			return false;
		while (s[i] >= '0' && s[i] <= '9')
			i++;
	}
	return s[i] == '\0' && i < 64;
}

static bool
ref_clause(const struct quayi_filter_clause *c, const quay_msg *m)
{
	const void *v;
	size_t len;
	char *val;
	bool r = false;

	if (quay_msg_get_header(m, c->name, &v, &len) != 0)
		return c->op == QUAYI_F_MISSING;
	if (c->op == QUAYI_F_EXISTS)
		return true;
	if (c->op == QUAYI_F_MISSING)
		return false;
	val = malloc(len + 1);
	if (val == NULL)
		abort();
	memcpy(val, v, len);
	val[len] = '\0';
	if (memchr(v, '\0', len) != NULL) {
		/* A NUL inside: equals nothing textual a filter can hold, is no
		 * number, and has a prefix up to its NUL only. */
		if (c->op == QUAYI_F_NE)
			r = true;
		else if (c->op == QUAYI_F_PREFIX)
			r = c->vals[0].len <= len && memcmp(v, c->vals[0].s, c->vals[0].len) == 0;
		free(val);
		return r;
	}
	switch (c->op) {
	case QUAYI_F_EQ:
	case QUAYI_F_NE:
		for (unsigned i = 0; i < c->nvals; i++)
			if (strcmp(val, c->vals[i].s) == 0)
				r = true;
		if (c->op == QUAYI_F_NE)
			r = !r;
		break;
	case QUAYI_F_PREFIX: r = strncmp(val, c->vals[0].s, c->vals[0].len) == 0; break;
	case QUAYI_F_RANGE:
		if (ref_is_number(val)) {
			double x = strtod(val, NULL);
			r = (c->lo_incl ? x >= c->lo : x > c->lo) && (c->hi_incl ? x <= c->hi : x < c->hi);
		}
		break;
	default: break;
	}
	free(val);
	return r;
}

static bool
ref_eval(const struct quayi_filter *f, const quay_msg *m)
{
	bool group = true;

	for (unsigned i = 0; i < f->nclauses; i++) {
		group = group && ref_clause(&f->c[i], m);
		if (f->c[i].last) {
			if (group)
				return true;
			group = true;
		}
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char expr[QUAY_FILTER_LEN_MAX + 2], err[256], b1[16384], b2[16384];
	const uint8_t *nl = memchr(data, '\n', size);
	size_t en = nl != NULL ? (size_t)(nl - data) : size;
	struct quayi_filter *f = NULL, *g = NULL;
	quay_msg *m;
	int rc, rk;

	if (en >= sizeof(expr))
		return 0;
	if (pool == NULL && quay_pool_create((size_t)1 << 20, NULL, &pool) != 0)
		abort();
	memcpy(expr, data, en);
	expr[en] = '\0';
	rk = quay_filter_check(expr, err, sizeof(err));
	rc = quayi_filter_compile(expr, &f, NULL, 0);
	check(rk == rc, "check and compile disagree", expr);
	if (rk != 0) {
		unsigned long at;
		check(rk == -EINVAL, "not -EINVAL", expr);
		check(sscanf(err, "at byte %lu: ", &at) == 1 && at <= strlen(expr) &&
		        strchr(err, ':')[2] != '\0',
		    "error text", expr);
		return 0;
	}
	/* Canonical round trip. */
	if (quayi_filter_format(f, b1, sizeof(b1)) < sizeof(b1) - 1 && strlen(b1) <= QUAY_FILTER_LEN_MAX) {
		check(quayi_filter_compile(b1, &g, err, sizeof(err)) == 0, "canonical form does not compile",
		    b1);
		quayi_filter_format(g, b2, sizeof(b2));
		check(strcmp(b1, b2) == 0, "canonical form changes", expr);
		check(g->nclauses == f->nclauses && g->ngroups == f->ngroups, "clause count changes", expr);
		quayi_filter_free(g);
	}
	/* Evaluate on the headers after the first line. */
	if (quay_msg_new_ex(pool, "", 0, 8192, 0, &m) != 0)
		abort();
	if (nl != NULL) {
		const uint8_t *p = nl + 1, *end = data + size;
		while (p < end) {
			const uint8_t *e = memchr(p, '\n', (size_t)(end - p));
			const uint8_t *eq;
			char key[QUAY_MSG_KEY_MAX + 1];
			if (e == NULL)
				e = end;
			eq = memchr(p, '=', (size_t)(e - p));
			if (eq != NULL && eq > p && (size_t)(eq - p) <= QUAY_MSG_KEY_MAX &&
			    memchr(p, '\0', (size_t)(eq - p)) == NULL) {
				memcpy(key, p, (size_t)(eq - p));
				key[eq - p] = '\0';
				(void)quay_msg_set_header(m, key, eq + 1, (size_t)(e - eq - 1));
			}
			p = e + 1;
		}
	}
	check(quayi_filter_match(f, m) == ref_eval(f, m), "match differs from the reference", expr);
	quay_msg_unref(m);
	quayi_filter_free(f);
	return 0;
}
