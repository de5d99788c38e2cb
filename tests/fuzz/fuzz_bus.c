/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of the bus's subject and pattern parser, the matcher
 * (NATS `*` `>` and AMQP `#`) and the trie (TESTING.md W8), checked
 * against naive reference code in this file.
 *
 * An input is "<pattern>\n<subject>" (no newline: the whole input is
 * both). For each input:
 *  - quay_bus_subject_check() of both strings, as subject and as pattern,
 *    must agree with ref_valid();
 *  - quay_bus_match() must agree with ref_match();
 *  - a valid pattern is subscribed on a bus that lives across inputs (the
 *    oldest of 32 subscriptions is unsubscribed to make room), so the
 *    trie's path copying and pruning run; a valid subject is published
 *    and the number of deliveries must be the number of live patterns
 *    ref_match() accepts, each of those subscriptions holding exactly the
 *    message; then a batch of two is published and each of those holds
 *    both, in order. Subjects starting with "_INBOX." are only published
 *    (they may be this bus's reply subjects, which bypass the trie).
 * Any disagreement aborts (a crash for libFuzzer).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/bus.h>

#define LIVE 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
ref_plain(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '.' && c != '*' && c != '>';
}

/* The rules of quay/bus.h, written the slow, obvious way. */
static bool
ref_valid(const char *s, bool pattern)
{
	size_t len = strlen(s), ntok = 0, start = 0;

	if (len == 0 || len > QUAY_BUS_SUBJECT_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '.')
			continue;
		size_t tl = i - start;
		if (tl == 0 || ++ntok > QUAY_BUS_TOKENS_MAX)
			return false;
		if (tl == 1 && (s[start] == '*' || s[start] == '>' || s[start] == '#')) {
			if (!pattern || (s[start] == '>' && i != len))
				return false;
		} else {
			for (size_t k = start; k < i; k++)
				if (!ref_plain((unsigned char)s[k]))
					return false;
		}
		start = i + 1;
	}
	return true;
}

static size_t
split(const char *s, const char **tok, size_t *tl)
{
	size_t n = 0, start = 0, len = strlen(s);

	for (size_t i = 0; i <= len; i++)
		if (i == len || s[i] == '.') {
			tok[n] = s + start;
			tl[n++] = i - start;
			start = i + 1;
		}
	return n;
}

/* Pattern tokens [i, np) against subject tokens [j, ns): plain
 * backtracking, `#` trying every count, with the failures remembered
 * (ref_failed) so that `#.a.#.a...` stays polynomial. */
static bool ref_failed[QUAY_BUS_TOKENS_MAX + 1][QUAY_BUS_TOKENS_MAX + 1];

static bool
ref_rest(const char **pt, const size_t *pl, size_t i, size_t np, const char **st, const size_t *sl, size_t j,
    size_t ns)
{
	if (ref_failed[i][j])
		return false;
	if (i == np)
		return j == ns;
	if (pl[i] == 1 && pt[i][0] == '#') {
		for (size_t k = j; k <= ns; k++)
			if (ref_rest(pt, pl, i + 1, np, st, sl, k, ns))
				return true;
		ref_failed[i][j] = true;
		return false;
	}
	if (pl[i] == 1 && pt[i][0] == '>')
		return ns > j;
	if (j >= ns)
		return false;
	if (!(pl[i] == 1 && pt[i][0] == '*') && (pl[i] != sl[j] || memcmp(pt[i], st[j], pl[i]) != 0))
		return false;
	return ref_rest(pt, pl, i + 1, np, st, sl, j + 1, ns);
}

static bool
ref_match(const char *p, const char *s)
{
	const char *pt[QUAY_BUS_TOKENS_MAX], *st[QUAY_BUS_TOKENS_MAX];
	size_t pl[QUAY_BUS_TOKENS_MAX], sl[QUAY_BUS_TOKENS_MAX], np, ns;

	if (!ref_valid(p, true) || !ref_valid(s, false))
		return false;
	np = split(p, pt, pl);
	ns = split(s, st, sl);
	/* Consecutive `#` tokens mean what one does: collapse them, so the
	 * backtracking stays small on inputs like `#.#.#.#...`. */
	{
		size_t k = 0;
		for (size_t i = 0; i < np; i++) {
			bool h = pl[i] == 1 && pt[i][0] == '#';
			if (h && k > 0 && pl[k - 1] == 1 && pt[k - 1][0] == '#')
				continue;
			pt[k] = pt[i];
			pl[k++] = pl[i];
		}
		np = k;
	}
	memset(ref_failed, 0, sizeof(ref_failed));
	return ref_rest(pt, pl, 0, np, st, sl, 0, ns);
}

static quay_pool *pool;
static quay_bus *bus;
static quay_sub *live[LIVE];
static char live_pat[LIVE][QUAY_BUS_SUBJECT_MAX + 1];
static unsigned next_slot;

static void
check(bool ok, const char *what, const char *p, const char *s)
{
	if (!ok) {
		fprintf(stderr, "fuzz_bus: %s: pattern \"%s\" subject \"%s\"\n", what, p, s);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char p[512], s[512];
	const uint8_t *nl = memchr(data, '\n', size);
	size_t pn = nl != NULL ? (size_t)(nl - data) : size;
	size_t sn = nl != NULL ? size - pn - 1 : size;
	const uint8_t *sp = nl != NULL ? nl + 1 : data;

	if (pn >= sizeof(p) || sn >= sizeof(s))
		return 0;
	memcpy(p, data, pn);
	p[pn] = '\0';
	memcpy(s, sp, sn);
	s[sn] = '\0';
	if (bus == NULL) {
		if (quay_pool_create((size_t)1 << 20, NULL, &pool) != 0 || quay_bus_create(NULL, &bus) != 0)
			abort();
	}

	check((quay_bus_subject_check(p, true) == 0) == ref_valid(p, true), "pattern check", p, s);
	check((quay_bus_subject_check(p, false) == 0) == ref_valid(p, false), "subject check", p, s);
	check((quay_bus_subject_check(s, true) == 0) == ref_valid(s, true), "pattern check", s, s);
	check((quay_bus_subject_check(s, false) == 0) == ref_valid(s, false), "subject check", p, s);
	check(quay_bus_match(p, s) == ref_match(p, s), "match", p, s);

	if (ref_valid(p, true)) {
		struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
		unsigned k = next_slot++ % LIVE;
		o.policy = QUAY_SUB_DROP_NEWEST;
		o.capacity = 4;
		o.flags = QUAY_SUB_NO_LATENCY;
		if (live[k] != NULL)
			check(quay_bus_unsubscribe(live[k]) == 0, "unsubscribe", live_pat[k], s);
		live[k] = NULL;
		check(quay_bus_subscribe(bus, p, &o, &live[k]) == 0, "subscribe", p, s);
		strcpy(live_pat[k], p);
	}
	if (ref_valid(s, false) && strncmp(s, "_INBOX.", 7) == 0) {
		/* Reply subjects of this bus ("_INBOX.<bus id>.<n>") go to the
		 * request slots, never through the trie (docs/BUS.md): no
		 * reference count here; just publish and empty every queue. */
		quay_msg *m, *two[2];
		if (quay_msg_new(pool, "x", 1, &m) != 0 || quay_msg_new(pool, "y", 1, &two[0]) != 0 ||
		    quay_msg_new(pool, "z", 1, &two[1]) != 0)
			abort();
		check(quay_bus_publish(bus, s, m) >= 0, "inbox publish", p, s);
		check(quay_bus_publish_batch(bus, s, two, 2) == 2, "inbox batch", p, s);
		for (unsigned k = 0; k < LIVE; k++) {
			quay_msg *got[4];
			size_t n = live[k] != NULL ? quay_sub_receive_burst(live[k], got, 4) : 0;
			for (size_t i = 0; i < n; i++)
				quay_msg_unref(got[i]);
		}
	} else if (ref_valid(s, false)) {
		quay_msg *m;
		int want = 0;
		if (quay_msg_new(pool, "x", 1, &m) != 0)
			abort();
		for (unsigned k = 0; k < LIVE; k++)
			want += live[k] != NULL && ref_match(live_pat[k], s);
		check(quay_bus_publish(bus, s, m) == want, "delivery count", p, s);
		for (unsigned k = 0; k < LIVE; k++) {
			quay_msg *got[2];
			size_t n;
			if (live[k] == NULL)
				continue;
			n = quay_sub_receive_burst(live[k], got, 2);
			check(n == (ref_match(live_pat[k], s) ? 1u : 0u), "delivered to", live_pat[k], s);
			for (size_t i = 0; i < n; i++) {
				check(got[i] == m, "wrong message", live_pat[k], s);
				quay_msg_unref(got[i]);
			}
		}
		/* The batch path: two messages, each matching subscription gets
		 * both, in order. */
		quay_msg *two[2];
		if (quay_msg_new(pool, "y", 1, &two[0]) != 0 || quay_msg_new(pool, "z", 1, &two[1]) != 0)
			abort();
		check(quay_bus_publish_batch(bus, s, two, 2) == 2, "batch published", p, s);
		for (unsigned k = 0; k < LIVE; k++) {
			quay_msg *got[3];
			size_t n;
			if (live[k] == NULL)
				continue;
			n = quay_sub_receive_burst(live[k], got, 3);
			check(n == (ref_match(live_pat[k], s) ? 2u : 0u), "batch delivered to", live_pat[k],
			    s);
			for (size_t i = 0; i < n; i++) {
				check(got[i] == two[i], "batch order", live_pat[k], s);
				quay_msg_unref(got[i]);
			}
		}
	} else {
		quay_msg *m;
		if (quay_msg_new(pool, "x", 1, &m) != 0)
			abort();
		check(quay_bus_publish(bus, s, m) == -EINVAL, "bad subject published", p, s);
		quay_msg_unref(m);
	}
	return 0;
}
