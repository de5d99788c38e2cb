/* SPDX-License-Identifier: MIT */
/*
 * Header filters (SNS filter policies, RabbitMQ headers exchanges) for
 * subscriptions and bindings of the bus.
 *
 * Grammar (whitespace: spaces and tabs, anywhere between tokens):
 *
 *   filter  := group { "||" group }                 OR of groups
 *   group   := clause { "&&" clause }               AND of clauses
 *   clause  := name "=" value                       equals
 *            | name "in" "{" value { "," value } "}"   equals one of
 *            | name "!=" value                      anything-but
 *            | name "not" "in" "{" value {...} "}"  anything-but one of
 *            | name "^=" value                      prefix
 *            | name ("<" | "<=" | ">" | ">=") number   numeric comparison
 *            | name "in" ("[" | "(") number "," number ("]" | ")")
 *                                                   numeric range
 *            | "exists" "(" name ")"                the header is present
 *            | "!" "exists" "(" name ")"            it is not
 *   name    := word | quoted                        1..QUAY_MSG_KEY_MAX bytes
 *   value   := word | quoted                        0..QUAY_FILTER_VALUE_MAX bytes
 *   word    := 1+ of [A-Za-z0-9_.:/@+-]
 *   quoted  := '"' { any byte but '"' and '\', or '\"' or '\\' } '"'
 *   number  := ["+"|"-"] digits ["." digits] [("e"|"E") ["+"|"-"] digits]
 *
 * Semantics: every clause but !exists needs the header to be present
 * (anything-but of a missing header is false, as in SNS). A numeric
 * clause needs the header's value to be a whole number by the same
 * grammar (no spaces, at most 63 bytes). Values compare as bytes,
 * exactly. Numbers compare as doubles, rounded as strtod() rounds.
 *
 * Compiled into one allocation (clauses, values and strings); evaluation
 * walks it and allocates nothing.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/bus.h>

#include "filter.h"

#define F_VALS_MAX (QUAY_FILTER_CLAUSES_MAX * 8u)

struct parser {
	const char *s;
	size_t len, pos;
	char *err;
	size_t errlen;
	/* Clauses and values as parsed; strings point into scratch. */
	struct quayi_filter_clause c[QUAY_FILTER_CLAUSES_MAX];
	struct quayi_filter_val v[F_VALS_MAX];
	unsigned nc, nv, ng;
	char *scratch; /* decoded names and values */
	size_t nscratch;
	const struct quay_allocator *alloc; /* of the parser, scratch and the filter */
};

static int
fail(struct parser *p, size_t pos, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->err == NULL || p->errlen == 0)
		return -EINVAL;
	n = snprintf(p->err, p->errlen, "at byte %zu: ", pos);
	if (n >= 0 && (size_t)n < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static void
skip_ws(struct parser *p)
{
	while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
		p->pos++;
}

static bool
word_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	    c == '.' || c == ':' || c == '/' || c == '@' || c == '+' || c == '-';
}

static bool
at(struct parser *p, const char *tok)
{
	size_t n = strlen(tok);

	return p->len - p->pos >= n && memcmp(p->s + p->pos, tok, n) == 0;
}

/* A keyword: tok not followed by a word byte. */
static bool
at_kw(struct parser *p, const char *tok)
{
	size_t n = strlen(tok);

	return at(p, tok) && (p->pos + n == p->len || !word_byte((unsigned char)p->s[p->pos + n]));
}

/* A name or value: a word or a quoted string, decoded into scratch. */
static int
string(struct parser *p, const char *what, size_t maxlen, bool allow_empty, struct quayi_filter_val *out)
{
	size_t start = p->pos, n = 0;
	char *d = p->scratch + p->nscratch;

	if (p->pos < p->len && p->s[p->pos] == '"') {
		p->pos++;
		for (;;) {
			char c;
			if (p->pos >= p->len)
				return fail(p, start,
				    "%s: the quoted string is not closed (a '\"' is missing)", what);
			c = p->s[p->pos++];
			if (c == '"')
				break;
			if (c == '\\') {
				if (p->pos >= p->len || (p->s[p->pos] != '"' && p->s[p->pos] != '\\'))
					return fail(p, p->pos - 1,
					    "%s: only \\\" and \\\\ may follow a backslash", what);
				c = p->s[p->pos++];
			} else if (c == '\0') {
				return fail(p, p->pos - 1, "%s: a NUL byte inside a quoted string", what);
			}
			d[n++] = c;
		}
	} else {
		while (p->pos < p->len && word_byte((unsigned char)p->s[p->pos]))
			d[n++] = p->s[p->pos++];
		if (n == 0) {
			if (p->pos >= p->len)
				return fail(p, p->pos, "expected %s, found the end of the filter", what);
			return fail(p, p->pos,
			    "expected %s (a word of letters, digits and _.:/@+- or a \"quoted "
			    "string\"), found '%c'",
			    what, p->s[p->pos]);
		}
	}
	if (n == 0 && !allow_empty)
		return fail(p, start, "%s is empty", what);
	if (n > maxlen)
		return fail(p, start, "%s is %zu bytes long, more than %zu", what, n, maxlen);
	d[n] = '\0';
	out->s = d;
	out->len = n;
	p->nscratch += n + 1;
	return 0;
}

/* 10^k for the exact fast path (k <= 22: every one is a double). */
static const double pow10_tab[23] = {
	1e0,
	1e1,
	1e2,
	1e3,
	1e4,
	1e5,
	1e6,
	1e7,
	1e8,
	1e9,
	1e10,
	1e11,
	1e12,
	1e13,
	1e14,
	1e15,
	1e16,
	1e17,
	1e18,
	1e19,
	1e20,
	1e21,
	1e22,
};

/* Length of the longest number at s[0..len) by the grammar above, or 0. */
static size_t
number_len(const char *s, size_t len)
{
	size_t i = 0, d = 0;

	if (i < len && (s[i] == '+' || s[i] == '-'))
		i++;
	while (i < len && s[i] >= '0' && s[i] <= '9')
		i++, d++;
	if (d == 0)
		return 0;
	if (i + 1 < len && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
		i++;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		size_t j = i + 1;
		if (j < len && (s[j] == '+' || s[j] == '-'))
			j++;
		if (j < len && s[j] >= '0' && s[j] <= '9') {
			while (j < len && s[j] >= '0' && s[j] <= '9')
				j++;
			i = j;
		}
	}
	return i;
}

bool
quayi_filter_number(const char *s, size_t len, double *out)
{
	uint64_t mant = 0;
	int digits = 0, scale = 0, e = 0;
	bool neg = false, eneg = false;
	size_t i = 0;
	char buf[64];

	if (len == 0 || len >= sizeof(buf) || number_len(s, len) != len)
		return false; /* numbers are 1..63 bytes */
	if (s[i] == '+' || s[i] == '-')
		neg = s[i++] == '-';
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		if (mant == 0 && s[i] == '0')
			continue; /* leading zeros are not significant */
		if (digits < 19)
			mant = mant * 10 + (uint64_t)(s[i] - '0');
		else
			scale++;
		digits++;
	}
	if (i < len && s[i] == '.') {
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
			if (mant == 0 && s[i] == '0') {
				scale--;
				continue;
			}
			if (digits < 19) {
				mant = mant * 10 + (uint64_t)(s[i] - '0');
				scale--;
			}
			digits++;
		}
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (s[i] == '+' || s[i] == '-')
			eneg = s[i++] == '-';
		for (; i < len; i++)
			if (e < 100000)
				e = e * 10 + (s[i] - '0');
	}
	scale += eneg ? -e : e;
	/* Exact when the mantissa is a double and 10^|scale| too (Clinger's
	 * fast path); else strtod on a copy (the C locale's '.'). */
	if (mant == 0) {
		*out = neg ? -0.0 : 0.0;
		return true;
	}
	if (mant < ((uint64_t)1 << 53) && scale >= -22 && scale <= 22) {
		double v = (double)mant;
		v = scale < 0 ? v / pow10_tab[-scale] : v * pow10_tab[scale];
		*out = neg ? -v : v;
		return true;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	*out = strtod(buf, NULL);
	return true;
}

static int
number(struct parser *p, double *out)
{
	size_t n = number_len(p->s + p->pos, p->len - p->pos);

	if (n == 0) {
		if (p->pos >= p->len)
			return fail(p, p->pos, "expected a number, found the end of the filter");
		return fail(p, p->pos,
		    "expected a number (digits, optional sign, fraction and exponent), "
		    "found '%c'",
		    p->s[p->pos]);
	}
	if (p->pos + n < p->len && word_byte((unsigned char)p->s[p->pos + n]))
		return fail(p, p->pos + n, "the number ends in '%c'", p->s[p->pos + n]);
	if (!quayi_filter_number(p->s + p->pos, n, out))
		return fail(p, p->pos, "the number is too long (63 bytes at most)");
	if (!isfinite(*out))
		return fail(p, p->pos, "the number is out of range (beyond a double)");
	p->pos += n;
	return 0;
}

static int
expect(struct parser *p, char c, const char *ctx)
{
	skip_ws(p);
	if (p->pos < p->len && p->s[p->pos] == c) {
		p->pos++;
		return 0;
	}
	if (p->pos >= p->len)
		return fail(p, p->pos, "expected '%c' %s, found the end of the filter", c, ctx);
	return fail(p, p->pos, "expected '%c' %s, found '%c'", c, ctx, p->s[p->pos]);
}

static int
value_list(struct parser *p, struct quayi_filter_clause *c)
{
	int r;

	c->vals = p->v + p->nv;
	c->nvals = 0;
	for (;;) {
		skip_ws(p);
		if (p->nv == F_VALS_MAX || c->nvals == QUAY_FILTER_VALUES_MAX)
			return fail(p, p->pos, "too many values (at most %u in a list, %u in a filter)",
			    QUAY_FILTER_VALUES_MAX, F_VALS_MAX);
		r = string(p, "a value", QUAY_FILTER_VALUE_MAX, true, &p->v[p->nv]);
		if (r != 0)
			return r;
		p->nv++;
		c->nvals++;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		return expect(p, '}', "or ',' in the list of values");
	}
}

static int
clause(struct parser *p)
{
	struct quayi_filter_clause *c;
	struct quayi_filter_val name;
	size_t opos;
	int r;

	skip_ws(p);
	if (p->nc == QUAY_FILTER_CLAUSES_MAX)
		return fail(p, p->pos, "too many clauses (at most %u)", QUAY_FILTER_CLAUSES_MAX);
	c = &p->c[p->nc];
	memset(c, 0, sizeof(*c));
	c->lo = -INFINITY;
	c->hi = INFINITY;
	if (p->pos < p->len && p->s[p->pos] == '!' && !at(p, "!=")) {
		p->pos++;
		skip_ws(p);
		if (!at_kw(p, "exists"))
			return fail(p, p->pos, "expected 'exists' after '!'");
		c->op = QUAYI_F_MISSING;
	}
	if (c->op == QUAYI_F_MISSING || at_kw(p, "exists")) {
		size_t save = p->pos;
		p->pos += 6;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == '(') {
			p->pos++;
			skip_ws(p);
			if ((r = string(p, "a header name", QUAY_MSG_KEY_MAX, false, &name)) != 0)
				return r;
			if ((r = expect(p, ')', "after the header name")) != 0)
				return r;
			if (c->op == 0)
				c->op = QUAYI_F_EXISTS;
			c->name = name.s;
			p->nc++;
			return 0;
		}
		if (c->op == QUAYI_F_MISSING)
			return fail(p, p->pos, "expected '(' after 'exists'");
		p->pos = save; /* a header named "exists" */
	}
	if ((r = string(p, "a header name", QUAY_MSG_KEY_MAX, false, &name)) != 0)
		return r;
	c->name = name.s;
	skip_ws(p);
	opos = p->pos;
	if (at(p, "!=")) {
		p->pos += 2;
		c->op = QUAYI_F_NE;
	} else if (at(p, "^=")) {
		p->pos += 2;
		c->op = QUAYI_F_PREFIX;
	} else if (at(p, "<=") || at(p, ">=") || at(p, "<") || at(p, ">")) {
		bool ge = p->s[p->pos] == '>', eq = p->pos + 1 < p->len && p->s[p->pos + 1] == '=';
		double v;
		p->pos += eq ? 2 : 1;
		skip_ws(p);
		if ((r = number(p, &v)) != 0)
			return r;
		c->op = QUAYI_F_RANGE;
		if (ge) {
			c->lo = v;
			c->lo_incl = eq;
		} else {
			c->hi = v;
			c->hi_incl = eq;
		}
		p->nc++;
		return 0;
	} else if (at(p, "=")) {
		p->pos += 1;
		c->op = QUAYI_F_EQ;
	} else if (at_kw(p, "not")) {
		p->pos += 3;
		skip_ws(p);
		if (!at_kw(p, "in"))
			return fail(p, p->pos, "expected 'in' after 'not'");
		p->pos += 2;
		skip_ws(p);
		if (p->pos >= p->len || p->s[p->pos] != '{')
			return fail(p, p->pos, "expected '{' after 'not in' (a list of values)");
		p->pos++;
		c->op = QUAYI_F_NE;
		if ((r = value_list(p, c)) != 0)
			return r;
		p->nc++;
		return 0;
	} else if (at_kw(p, "in")) {
		p->pos += 2;
		skip_ws(p);
		if (p->pos < p->len && p->s[p->pos] == '{') {
			p->pos++;
			c->op = QUAYI_F_EQ;
			if ((r = value_list(p, c)) != 0)
				return r;
			p->nc++;
			return 0;
		}
		if (p->pos < p->len && (p->s[p->pos] == '[' || p->s[p->pos] == '(')) {
			size_t lpos = p->pos;
			c->lo_incl = p->s[p->pos++] == '[';
			skip_ws(p);
			if ((r = number(p, &c->lo)) != 0)
				return r;
			if ((r = expect(p, ',', "between the bounds of the range")) != 0)
				return r;
			skip_ws(p);
			if ((r = number(p, &c->hi)) != 0)
				return r;
			skip_ws(p);
			if (p->pos >= p->len || (p->s[p->pos] != ']' && p->s[p->pos] != ')'))
				return fail(p, p->pos, "expected ']' or ')' to close the range");
			c->hi_incl = p->s[p->pos++] == ']';
			if (c->lo > c->hi)
				return fail(p, lpos,
				    "the range is empty: its low bound is above its high bound");
			c->op = QUAYI_F_RANGE;
			p->nc++;
			return 0;
		}
		return fail(p, p->pos,
		    "expected '{' (a list of values) or '[' or '(' (a numeric range) after 'in'");
	} else {
		if (p->pos >= p->len)
			return fail(p, opos,
			    "expected an operator (=, !=, ^=, <, <=, >, >=, in, not in) after "
			    "the header name \"%s\", found the end of the filter",
			    name.s);
		return fail(p, opos,
		    "expected an operator (=, !=, ^=, <, <=, >, >=, in, not in) after the "
		    "header name \"%s\", found '%c'",
		    name.s, p->s[p->pos]);
	}
	skip_ws(p);
	c->vals = p->v + p->nv;
	if (p->nv == F_VALS_MAX)
		return fail(p, p->pos, "too many values (at most %u in a filter)", F_VALS_MAX);
	if ((r = string(p, "a value", QUAY_FILTER_VALUE_MAX, true, &p->v[p->nv])) != 0)
		return r;
	p->nv++;
	c->nvals = 1;
	p->nc++;
	return 0;
}

static int
parse(struct parser *p)
{
	int r;

	p->ng = 0;
	skip_ws(p);
	if (p->pos >= p->len)
		return fail(p, 0, "the filter is empty");
	for (;;) {
		if ((r = clause(p)) != 0)
			return r;
		skip_ws(p);
		if (p->pos >= p->len) {
			p->c[p->nc - 1].last = true;
			p->ng++;
			return 0;
		}
		if (at(p, "&&")) {
			p->pos += 2;
		} else if (at(p, "||")) {
			p->c[p->nc - 1].last = true;
			p->ng++;
			p->pos += 2;
		} else {
			return fail(p, p->pos,
			    "expected '&&', '||' or the end of the filter after a clause, "
			    "found '%c'",
			    p->s[p->pos]);
		}
		skip_ws(p);
		if (p->pos >= p->len)
			return fail(p, p->pos, "a clause must follow '%s'",
			    p->s[p->pos - 1] == '&' ? "&&" : "||");
	}
}

/* FNV-1a over a key: names are short, and this runs once per header per
 * publish (not per clause). */
static uint64_t
filter_hash(const char *s, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * UINT64_C(0x100000001b3);
	return h;
}

static int
setup(struct parser *p, const char *expr, char *err, size_t errlen)
{
	p->err = err;
	p->errlen = errlen;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (expr == NULL)
		return fail(p, 0, "no filter (NULL)");
	p->s = expr;
	p->len = strnlen(expr, QUAY_FILTER_LEN_MAX + 1);
	p->pos = 0;
	p->nc = p->nv = p->ng = 0;
	p->nscratch = 0;
	if (p->len > QUAY_FILTER_LEN_MAX)
		return fail(p, QUAY_FILTER_LEN_MAX, "the filter is longer than %u bytes",
		    QUAY_FILTER_LEN_MAX);
	for (size_t i = 0; i < p->len; i++) {
		unsigned char ch = (unsigned char)expr[i];
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return fail(p, i, "a control byte (0x%02x)", ch);
	}
	/* Decoded strings are never longer than the text, plus a NUL each. */
	p->scratch = quayi_alloc(p->alloc, 2 * p->len + 2);
	return p->scratch == NULL ? -ENOMEM : 0;
}

static void
parser_free(struct parser *p)
{
	if (p->scratch != NULL)
		quayi_free(p->alloc, p->scratch, 2 * p->len + 2);
	quayi_free(p->alloc, p, sizeof(*p));
}

QUAY_API int
quay_filter_check(const char *expr, char *err, size_t errlen)
{
	struct parser *p = quayi_alloc(NULL, sizeof(*p)); /* no object: the C library */
	int r;

	if (p == NULL)
		return -ENOMEM;
	p->scratch = NULL;
	p->alloc = NULL;
	r = setup(p, expr, err, errlen);
	if (r == 0)
		r = parse(p);
	parser_free(p);
	return r;
}

int
quayi_filter_compile(const char *expr, struct quayi_filter **out, char *err, size_t errlen)
{
	return quayi_filter_compile_a(NULL, expr, out, err, errlen);
}

int
quayi_filter_compile_a(const struct quay_allocator *a, const char *expr, struct quayi_filter **out, char *err,
    size_t errlen)
{
	struct parser *p = quayi_alloc(a, sizeof(*p));
	struct quayi_filter *f = NULL;
	struct quayi_filter_clause *c;
	struct quayi_filter_val *v;
	char *str;
	size_t size;
	int r;

	if (p == NULL)
		return -ENOMEM;
	p->scratch = NULL;
	p->alloc = a;
	r = setup(p, expr, err, errlen);
	if (r == 0)
		r = parse(p);
	if (r != 0)
		goto out;
	/* One block: header, clauses, values, strings (rebased). */
	size = sizeof(*f) + p->nc * sizeof(*c) + p->nv * sizeof(*v) + p->nscratch;
	f = quayi_alloc(a, size);
	if (f == NULL) {
		r = -ENOMEM;
		goto out;
	}
	f->alloc = a;
	f->size = size;
	c = (struct quayi_filter_clause *)(void *)(f + 1);
	v = (struct quayi_filter_val *)(void *)(c + p->nc);
	str = (char *)(v + p->nv);
	memcpy(str, p->scratch, p->nscratch);
	memcpy(c, p->c, p->nc * sizeof(*c));
	memcpy(v, p->v, p->nv * sizeof(*v));
	for (unsigned i = 0; i < p->nv; i++)
		v[i].s = str + (p->v[i].s - p->scratch);
	for (unsigned i = 0; i < p->nc; i++) {
		c[i].name = str + (p->c[i].name - p->scratch);
		c[i].namelen = strlen(c[i].name);
		c[i].namehash = filter_hash(c[i].name, c[i].namelen);
		if (p->c[i].nvals > 0)
			c[i].vals = v + (p->c[i].vals - p->v);
		else
			c[i].vals = NULL;
	}
	f->nclauses = p->nc;
	f->ngroups = p->ng;
	f->c = c;
	*out = f;
out:
	parser_free(p);
	return r;
}

void
quayi_filter_free(struct quayi_filter *f)
{
	if (f != NULL)
		quayi_free(f->alloc, f, f->size);
}

static bool
one_of(const struct quayi_filter_clause *c, const char *v, size_t len)
{
	for (unsigned i = 0; i < c->nvals; i++)
		if (c->vals[i].len == len && memcmp(c->vals[i].s, v, len) == 0)
			return true;
	return false;
}

static void
hdrs_load(struct quayi_filter_hdrs *h)
{
	unsigned n = quay_msg_header_count(h->m), k = 0;

	for (unsigned i = 0; i < n && k < QUAY_MSG_HEADERS_MAX; i++) {
		const char *key;
		const void *v;
		size_t len;
		if (quay_msg_header_at(h->m, i, &key, &v, &len) != 0)
			break;
		h->e[k].k = key;
		h->e[k].klen = strlen(key);
		h->e[k].h = filter_hash(key, h->e[k].klen);
		h->e[k].v = v;
		h->e[k].vlen = len;
		k++;
	}
	h->n = (int)k;
}

static bool
clause_true(const struct quayi_filter_clause *c, struct quayi_filter_hdrs *h)
{
	const char *v = NULL;
	size_t len = 0;
	double x;
	bool present = false;

	if (h->n < 0)
		hdrs_load(h);
	for (int i = 0; i < h->n; i++) {
		if (h->e[i].h == c->namehash && h->e[i].klen == c->namelen &&
		    memcmp(h->e[i].k, c->name, c->namelen) == 0) {
			present = true;
			v = h->e[i].v;
			len = h->e[i].vlen;
			break;
		}
	}
	switch (c->op) {
	case QUAYI_F_EXISTS: return present;
	case QUAYI_F_MISSING: return !present;
	case QUAYI_F_EQ: return present && one_of(c, v, len);
	case QUAYI_F_NE: return present && !one_of(c, v, len);
	case QUAYI_F_PREFIX:
		return present && len >= c->vals[0].len && memcmp(v, c->vals[0].s, c->vals[0].len) == 0;
	case QUAYI_F_RANGE:
		if (!present || !quayi_filter_number(v, len, &x))
			return false;
		return (c->lo_incl ? x >= c->lo : x > c->lo) && (c->hi_incl ? x <= c->hi : x < c->hi);
	}
	return false;
}

bool
quayi_filter_match_hdrs(const struct quayi_filter *f, struct quayi_filter_hdrs *h)
{
	const struct quayi_filter_clause *c = f->c, *end = f->c + f->nclauses;

	/* Each group: true when all its clauses are; the first false clause
	 * skips to the next group. */
	while (c < end) {
		bool ok = true;
		for (;;) {
			if (ok && !clause_true(c, h))
				ok = false;
			if (c++->last)
				break;
		}
		if (ok)
			return true;
	}
	return false;
}

bool
quayi_filter_match(const struct quayi_filter *f, const quay_msg *m)
{
	struct quayi_filter_hdrs h;

	quayi_filter_hdrs_init(&h, m);
	return quayi_filter_match_hdrs(f, &h);
}

/* Append a quoted string. */
static size_t
put_quoted(char *buf, size_t cap, size_t n, const char *s, size_t len)
{
	if (n < cap)
		buf[n] = '"';
	n++;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\') {
			if (n < cap)
				buf[n] = '\\';
			n++;
		}
		if (n < cap)
			buf[n] = s[i];
		n++;
	}
	if (n < cap)
		buf[n] = '"';
	return n + 1;
}

static size_t
put(char *buf, size_t cap, size_t n, const char *fmt, ...)
{
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(n < cap ? buf + n : NULL, n < cap ? cap - n : 0, fmt, ap);
	va_end(ap);
	return n + (k > 0 ? (size_t)k : 0);
}

size_t
quayi_filter_format(const struct quayi_filter *f, char *buf, size_t cap)
{
	size_t n = 0;

	for (unsigned i = 0; i < f->nclauses; i++) {
		const struct quayi_filter_clause *c = &f->c[i];

		if (c->op == QUAYI_F_EXISTS || c->op == QUAYI_F_MISSING) {
			n = put(buf, cap, n, c->op == QUAYI_F_MISSING ? "!exists(" : "exists(");
			n = put_quoted(buf, cap, n, c->name, strlen(c->name));
			n = put(buf, cap, n, ")");
		} else {
			n = put_quoted(buf, cap, n, c->name, strlen(c->name));
			if (c->op == QUAYI_F_RANGE && isinf(c->lo)) {
				n = put(buf, cap, n, c->hi_incl ? " <= %.17g" : " < %.17g", c->hi);
			} else if (c->op == QUAYI_F_RANGE && isinf(c->hi)) {
				n = put(buf, cap, n, c->lo_incl ? " >= %.17g" : " > %.17g", c->lo);
			} else if (c->op == QUAYI_F_RANGE) {
				n = put(buf, cap, n, " in %c%.17g, %.17g%c", c->lo_incl ? '[' : '(', c->lo,
				    c->hi, c->hi_incl ? ']' : ')');
			} else if (c->op == QUAYI_F_PREFIX) {
				n = put(buf, cap, n, " ^= ");
				n = put_quoted(buf, cap, n, c->vals[0].s, c->vals[0].len);
			} else {
				n = put(buf, cap, n, c->op == QUAYI_F_NE ? " not in {" : " in {");
				for (unsigned k = 0; k < c->nvals; k++) {
					if (k > 0)
						n = put(buf, cap, n, ", ");
					n = put_quoted(buf, cap, n, c->vals[k].s, c->vals[k].len);
				}
				n = put(buf, cap, n, "}");
			}
		}
		if (i + 1 < f->nclauses)
			n = put(buf, cap, n, c->last ? " || " : " && ");
	}
	if (cap > 0)
		buf[n < cap ? n : cap - 1] = '\0';
	return n;
}
