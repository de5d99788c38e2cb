/* SPDX-License-Identifier: MIT */
/*
 * Subjects, patterns and the subscription trie of the bus.
 *
 * The table is a token trie. A node has a hash table of exact-token
 * edges (open addressing, at most half full), a `*` edge, and two arrays
 * of subscriptions: those whose pattern ends at the node ("here") and
 * those whose pattern ends with `>` after it ("gt"). A version of the
 * table is immutable once published: subscribe and unsubscribe (under the
 * bus mutex) copy the nodes on the pattern's path (path copying; every
 * other node is shared with the previous version), and record the nodes
 * they replaced in the previous version's garbage list, freed with that
 * version after an RCU grace period. A node reachable from a version V
 * that a later version W replaced is in the garbage of the version just
 * before W, which is freed after a grace period that began when W was
 * published, so after every reader that could have reached the node.
 *
 * Each version carries its own subject cache, so a table change
 * invalidates it by construction (retired caches are cleared and reused,
 * see struct quayi_bm_cache). A slot is filled at most once, with a
 * CAS from NULL (BUS-E1, release) of a fully built immutable entry; readers
 * load it with acquire (BUS-E2). A subject that finds its probe window
 * (8 slots) full is resolved into a private entry the caller frees.
 */
#include <stdlib.h>
#include <string.h>

#include "bus_internal.h"

#define BM_PROBE 8u

struct bm_edge {
	uint64_t h;
	struct quayi_bm_node *child;
};

struct quayi_bm_node {
	uint32_t kcap; /* 0 or a power of two */
	uint32_t nkids;
	struct bm_edge *kids;
	struct quayi_bm_node *star;
	struct quayi_bm_node *hash; /* the `#` edge */
	uint32_t nhere;
	uint32_t ngt;
	struct quay_sub **here;
	struct quay_sub **gt;
	uint32_t hcap, gcap; /* entries allocated in here and gt (>= nhere, ngt) */
	uint16_t toklen;
	char tok[];
};

/* ---- hashing and checking ------------------------------------------ */

/* The k bytes at p (1 <= k <= 8) in the low bytes of a word, zeros above,
 * as memcpy into a zeroed word would give on a little-endian machine, but
 * with whole loads: a variable-length copy into a stack word costs a
 * store-forwarding stall when the word is read back (measured: a third
 * of a one-subscriber publish). */
static inline uint64_t
bm_load_tail(const char *p, size_t k)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t w;

	if (k == 8) {
		memcpy(&w, p, 8);
		return w;
	}
	if (k >= 4) {
		uint32_t a, b;
		memcpy(&a, p, 4);
		memcpy(&b, p + k - 4, 4); /* overlaps a: the same bytes */
		return (uint64_t)a | ((uint64_t)b << (8 * (k - 4)));
	}
	w = (unsigned char)p[0];
	w |= (uint64_t)(unsigned char)p[k >> 1] << (8 * (k >> 1));
	w |= (uint64_t)(unsigned char)p[k - 1] << (8 * (k - 1));
	return w;
#else
	uint64_t w = 0;

	memcpy(&w, p, k);
	return w;
#endif
}

static inline uint64_t
bm_hash(const char *s, size_t len)
{
	uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)len;

	while (len >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * UINT64_C(0xff51afd7ed558ccd);
		h ^= h >> 32;
		s += 8;
		len -= 8;
	}
	if (len > 0) {
		uint64_t w = bm_load_tail(s, len);
		h = (h ^ w) * UINT64_C(0xc4ceb9fe1a85ec53);
		h ^= h >> 29;
	}
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	return h;
}

static inline bool
bm_plain_byte(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '.' && c != '*' && c != '>';
}

int
quayi_bm_parse(const char *s, bool pattern, struct quayi_bm_toks *t)
{
	size_t len, start = 0;
	uint32_t n = 0;
	bool wild = false;

	if (s == NULL || t == NULL)
		return -EINVAL;
	len = strnlen(s, QUAY_BUS_SUBJECT_MAX + 1);
	if (len == 0 || len > QUAY_BUS_SUBJECT_MAX)
		return -EINVAL;
	t->nhash = 0;
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = i < len ? (unsigned char)s[i] : (unsigned char)'.';

		if (c == '.') {
			size_t tl = i - start;
			if (tl == 0 || n == QUAY_BUS_TOKENS_MAX)
				return -EINVAL;
			if (wild) {
				/* A wildcard is a whole token; `>` only last. */
				if (!pattern || tl != 1)
					return -EINVAL;
				if (s[start] == '>' && i != len)
					return -EINVAL;
			}
			if (tl == 1 && s[start] == '#') {
				/* `#` alone is the AMQP wildcard; inside a longer
				 * token it is a plain byte. */
				if (!pattern)
					return -EINVAL;
				t->nhash++;
			}
			t->off[n] = (uint16_t)start;
			t->tlen[n] = (uint16_t)tl;
			n++;
			start = i + 1;
			wild = false;
		} else if (c == '*' || c == '>') {
			wild = true;
		} else if (!bm_plain_byte(c)) {
			return -EINVAL;
		}
	}
	t->s = s;
	t->len = (uint32_t)len;
	t->n = n;
	return 0;
}

/* Bytes-of-a-word helpers for the subject scan (SWAR): ones has 0x01 in
 * every byte, highs 0x80. */
#define BM_ONES UINT64_C(0x0101010101010101)
#define BM_HIGHS UINT64_C(0x8080808080808080)

/* 0x80 in exactly the bytes of w that are 0 (no carries between bytes). */
static inline uint64_t
bm_zero_bytes(uint64_t w)
{
	const uint64_t low7 = ~BM_HIGHS;

	return ~(((w & low7) + low7) | w | low7);
}

/* Whether some byte of w is outside the plain range 0x21..0x7e or is one
 * of `*` `>` (dots are checked apart). Exact for a whole word. */
static inline bool
bm_word_bad(uint64_t w)
{
	uint64_t below = (w - BM_ONES * 0x21) & ~w & BM_HIGHS;          /* < 0x21 */
	uint64_t above = ((w + BM_ONES * (127 - 0x7e)) | w) & BM_HIGHS; /* > 0x7e */
	uint64_t star = bm_zero_bytes(w ^ (BM_ONES * '*'));
	uint64_t gt = bm_zero_bytes(w ^ (BM_ONES * '>'));

	return (below | above | star | gt) != 0;
}

int
quayi_bm_subject_hash(const char *s, uint32_t *lenp, uint64_t *hash)
{
	size_t len = strnlen(s, QUAY_BUS_SUBJECT_MAX + 1);

	if (len == 0 || len > QUAY_BUS_SUBJECT_MAX)
		return -EINVAL;
	*lenp = (uint32_t)len;
	*hash = bm_hash(s, len);
	return 0;
}

int
quayi_bm_check_subject(const char *s, uint32_t len)
{
	size_t i, ntok = 1;
	bool prev_dot = true; /* a dot "before" byte 0: a leading dot is an empty token */
	uint64_t hashes = 0;  /* some byte is `#` */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	/* Eight bytes at a time within [0, len): the last partial word is
	 * padded with a plain byte, so no read goes past the string. */
	for (i = 0; i < len; i += 8) {
		uint64_t w, dots;
		size_t k = len - i < 8 ? len - i : 8;

		w = bm_load_tail(s + i, k);
		if (k < 8)
			w |= (BM_ONES * 'a') << (8 * k);
		if (bm_word_bad(w))
			return -EINVAL;
		hashes |= bm_zero_bytes(w ^ (BM_ONES * '#'));
		dots = bm_zero_bytes(w ^ (BM_ONES * '.'));
		if (dots != 0) {
			/* Empty tokens: a dot right after a dot (within the word,
			 * or at byte 0 after the previous word's last byte). */
			if ((dots & (dots << 8)) != 0 || (prev_dot && (dots & 0x80) != 0))
				return -EINVAL;
			/* The dots: one high bit per dot byte. Shifted down to one
			 * 1 per byte, the multiply sums the bytes into the top one
			 * (at most 8): a popcount without the popcnt instruction,
			 * which the baseline x86-64 target lacks (it became a call
			 * to libgcc's __popcountdi2). */
			ntok += (size_t)(((dots >> 7) * BM_ONES) >> 56);
		}
		prev_dot = ((dots >> (8 * (k - 1))) & 0x80) != 0;
	}
#else
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (prev_dot)
				return -EINVAL;
			ntok++;
			prev_dot = true;
		} else if (!bm_plain_byte(c)) {
			return -EINVAL;
		} else {
			hashes |= c == '#';
			prev_dot = false;
		}
	}
#endif
	if (prev_dot || ntok > QUAY_BUS_TOKENS_MAX) /* a trailing dot; too many tokens */
		return -EINVAL;
	if (QUAYI_UNLIKELY(hashes != 0)) {
		/* Rare: a `#` byte. A token that is just `#` is a wildcard,
		 * which a published subject may not have. */
		for (i = 0; i < len; i++)
			if (s[i] == '#' && (i == 0 || s[i - 1] == '.') && (i + 1 == len || s[i + 1] == '.'))
				return -EINVAL;
	}
	return 0;
}

int
quayi_bm_scan_subject(const char *s, uint32_t *lenp, uint64_t *hash)
{
	if (quayi_bm_subject_hash(s, lenp, hash) != 0)
		return -EINVAL;
	return quayi_bm_check_subject(s, *lenp);
}

static inline bool
tok_is(const struct quayi_bm_toks *t, uint32_t i, char c)
{
	return t->tlen[i] == 1 && t->s[t->off[i]] == c;
}

/*
 * The reference matcher, a dynamic programme over (pattern token i,
 * subject token j) so that `#` (zero or more tokens, anywhere) costs
 * O(tokens^2) however many there are, never a backtracking blow-up:
 * ok[j] says whether pattern tokens [0, i) can match subject tokens
 * [0, j).
 */
bool
quayi_bm_match_toks(const struct quayi_bm_toks *pat, const struct quayi_bm_toks *subj)
{
	bool ok[QUAY_BUS_TOKENS_MAX + 1], nx[QUAY_BUS_TOKENS_MAX + 1];
	uint32_t i, j, n = subj->n;

	memset(ok, 0, sizeof(ok));
	ok[0] = true;
	for (i = 0; i < pat->n; i++) {
		memset(nx, 0, sizeof(nx));
		if (tok_is(pat, i, '#')) {
			bool any = false;
			for (j = 0; j <= n; j++) {
				any |= ok[j];
				nx[j] = any; /* some k <= j matched [0, i) */
			}
		} else if (tok_is(pat, i, '>')) {
			/* One or more tokens, and it is last: the rest, if any. */
			for (j = 0; j < n; j++)
				if (ok[j])
					return true;
			return false;
		} else {
			for (j = 0; j < n; j++) {
				if (!ok[j])
					continue;
				if (tok_is(pat, i, '*') ||
				    (pat->tlen[i] == subj->tlen[j] &&
				        memcmp(pat->s + pat->off[i], subj->s + subj->off[j], pat->tlen[i]) ==
				            0))
					nx[j + 1] = true;
			}
		}
		memcpy(ok, nx, sizeof(ok));
	}
	return ok[n];
}

QUAY_API int
quay_bus_subject_check(const char *s, bool pattern)
{
	struct quayi_bm_toks t;

	return quayi_bm_parse(s, pattern, &t);
}

QUAY_API bool
quay_bus_match(const char *pattern, const char *subject)
{
	struct quayi_bm_toks p, s;

	if (quayi_bm_parse(pattern, true, &p) != 0 || quayi_bm_parse(subject, false, &s) != 0)
		return false;
	return quayi_bm_match_toks(&p, &s);
}

static void centry_free(const struct quay_allocator *a, const struct quayi_bm_centry *e);

/* ---- nodes --------------------------------------------------------- */

static struct quayi_bm_node *
node_new(const struct quay_allocator *a, const char *tok, size_t len)
{
	struct quayi_bm_node *n = quayi_calloc(a, 1, sizeof(*n) + len + 1);

	if (n == NULL)
		return NULL;
	memcpy(n->tok, tok, len);
	n->toklen = (uint16_t)len;
	return n;
}

/* Free one node and what it owns (not its children). */
static void
node_free(const struct quay_allocator *a, struct quayi_bm_node *n)
{
	if (n == NULL)
		return;
	quayi_free(a, n->kids, (size_t)n->kcap * sizeof(*n->kids));
	quayi_free(a, n->here, (size_t)n->hcap * sizeof(*n->here));
	quayi_free(a, n->gt, (size_t)n->gcap * sizeof(*n->gt));
	quayi_free(a, n, sizeof(*n) + n->toklen + 1);
}

static void
node_free_deep(const struct quay_allocator *a, struct quayi_bm_node *n)
{
	if (n == NULL)
		return;
	for (uint32_t i = 0; i < n->kcap; i++)
		node_free_deep(a, n->kids[i].child);
	node_free_deep(a, n->star);
	node_free_deep(a, n->hash);
	node_free(a, n);
}

static struct quayi_bm_node *
node_find(const struct quayi_bm_node *n, const char *tok, size_t len, uint64_t h)
{
	uint32_t mask, i;

	if (n == NULL || n->kcap == 0)
		return NULL;
	mask = n->kcap - 1;
	for (i = (uint32_t)h & mask; n->kids[i].child != NULL; i = (i + 1) & mask) {
		const struct quayi_bm_node *c = n->kids[i].child;
		if (n->kids[i].h == h && c->toklen == len && memcmp(c->tok, tok, len) == 0)
			return n->kids[i].child;
	}
	return NULL;
}

/* Put child (token h) into n's edge table, replacing the edge with the
 * same token if there is one. The table has room (node_copy's extra). */
static void
node_set_kid(struct quayi_bm_node *n, uint64_t h, struct quayi_bm_node *child)
{
	uint32_t mask = n->kcap - 1, i;

	for (i = (uint32_t)h & mask; n->kids[i].child != NULL; i = (i + 1) & mask) {
		const struct quayi_bm_node *c = n->kids[i].child;
		if (n->kids[i].h == h && c->toklen == child->toklen &&
		    memcmp(c->tok, child->tok, c->toklen) == 0) {
			n->kids[i].child = child;
			return;
		}
	}
	n->kids[i].h = h;
	n->kids[i].child = child;
	n->nkids++;
}

static struct quay_sub **
subs_dup(const struct quay_allocator *a, struct quay_sub *const *v, uint32_t n, uint32_t extra)
{
	struct quay_sub **r;

	if (n + extra == 0)
		return NULL;
	r = quayi_alloc(a, (size_t)(n + extra) * sizeof(*r));
	if (r != NULL && n > 0)
		memcpy(r, v, (size_t)n * sizeof(*r));
	return r;
}

/* A copy of old (a new node if old is NULL, with token tok) with room
 * for `extra` more edges, leaving out the child `skip` (an edge or the
 * star). The copy shares old's children, not its arrays. */
static struct quayi_bm_node *
node_copy(const struct quay_allocator *a, const struct quayi_bm_node *old, const char *tok, size_t toklen,
    uint32_t extra, const struct quayi_bm_node *skip)
{
	struct quayi_bm_node *n;
	uint32_t need;

	if (old == NULL)
		n = node_new(a, tok, toklen);
	else
		n = node_new(a, old->tok, old->toklen);
	if (n == NULL || old == NULL) {
		if (n != NULL && extra > 0) {
			n->kcap = 4;
			n->kids = quayi_calloc(a, 4, sizeof(*n->kids));
			if (n->kids == NULL) {
				n->kcap = 0;
				node_free(a, n);
				return NULL;
			}
		}
		return n;
	}
	need = old->nkids + extra;
	if (need > 0) {
		uint32_t cap = 4;
		while (cap < 2 * need)
			cap *= 2;
		n->kids = quayi_calloc(a, cap, sizeof(*n->kids));
		if (n->kids == NULL)
			goto oom;
		n->kcap = cap;
		for (uint32_t i = 0; i < old->kcap; i++) {
			struct quayi_bm_node *c = old->kids[i].child;
			if (c != NULL && c != skip)
				node_set_kid(n, old->kids[i].h, c);
		}
	}
	n->star = old->star == skip ? NULL : old->star;
	n->hash = old->hash == skip ? NULL : old->hash;
	n->nhere = old->nhere;
	n->ngt = old->ngt;
	if (old->nhere > 0 && (n->here = subs_dup(a, old->here, old->nhere, 0)) == NULL)
		goto oom;
	n->hcap = old->nhere;
	if (old->ngt > 0 && (n->gt = subs_dup(a, old->gt, old->ngt, 0)) == NULL)
		goto oom;
	n->gcap = old->ngt;
	return n;
oom:
	node_free(a, n);
	return NULL;
}

/* ---- versions ------------------------------------------------------ */

#define BM_POOL_KEEP 8 /* retired caches kept for reuse */

void
quayi_bm_cache_pool_init(struct quayi_bm_cache_pool *p, const struct quay_allocator *a)
{
	p->alloc = a;
	pthread_mutex_init(&p->lock, NULL);
	p->head = NULL;
	p->n = 0;
}

void
quayi_bm_cache_pool_fini(struct quayi_bm_cache_pool *p)
{
	while (p->head != NULL) {
		struct quayi_bm_cache *c = p->head;
		p->head = c->next;
		quayi_free(p->alloc, c, sizeof(*c));
	}
	pthread_mutex_destroy(&p->lock);
}

static struct quayi_bm_cache *
cache_get(struct quayi_bm_cache_pool *p)
{
	struct quayi_bm_cache *c;

	pthread_mutex_lock(&p->lock);
	c = p->head;
	if (c != NULL) {
		p->head = c->next;
		p->n--;
	}
	pthread_mutex_unlock(&p->lock);
	if (c == NULL)
		c = quayi_calloc(p->alloc, 1, sizeof(*c));
	return c;
}

/* Free the entries of a retired cache, clear their slots and keep the
 * cache for reuse (or free it). No reader is left (grace period), so
 * relaxed accesses see everything. */
static void
cache_put(struct quayi_bm_cache_pool *p, struct quayi_bm_cache *c)
{
	uint32_t n;

	if (c == NULL)
		return;
	/* Relaxed: the cache is retired and a grace period has passed, so
	 * no filler or reader is left; the loads and stores race with nobody. */
	n = __atomic_load_n(&c->nused, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < n; i++) {
		uint16_t k = c->used[i];
		centry_free(p->alloc, __atomic_load_n(&c->slot[k], __ATOMIC_RELAXED));
		__atomic_store_n(&c->slot[k], NULL, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&c->nused, 0, __ATOMIC_RELAXED);
	pthread_mutex_lock(&p->lock);
	if (p->n < BM_POOL_KEEP) {
		c->next = p->head;
		p->head = c;
		p->n++;
		c = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	quayi_free(p->alloc, c, sizeof(*c));
}

/* The last table uid handed out (see quayi_bm_table.uid). */
static uint64_t table_uids;

static struct quayi_bm_table *
table_alloc(struct quayi_bm_cache_pool *pool)
{
	struct quayi_bm_table *t = quayi_calloc(pool->alloc, 1, sizeof(*t));

	if (t == NULL)
		return NULL;
	/* Relaxed: only uniqueness matters; the version's publication
	 * (BUS-T1) orders the field for publishers. */
	t->uid = __atomic_add_fetch(&table_uids, 1, __ATOMIC_RELAXED);
	t->alloc = pool->alloc;
	t->cache = cache_get(pool);
	if (t->cache == NULL) {
		quayi_free(t->alloc, t, sizeof(*t));
		return NULL;
	}
	return t;
}

static void
table_unalloc(struct quayi_bm_table *t, struct quayi_bm_cache_pool *pool)
{
	if (t != NULL) {
		cache_put(pool, t->cache);
		quayi_free(t->alloc, t, sizeof(*t));
	}
}

struct quayi_bm_table *
quayi_bm_table_new(struct quayi_bm_cache_pool *pool)
{
	struct quayi_bm_table *t = table_alloc(pool);

	if (t == NULL)
		return NULL;
	t->root = node_new(t->alloc, "", 0);
	if (t->root == NULL) {
		table_unalloc(t, pool);
		return NULL;
	}
	return t;
}

void
quayi_bm_table_retire_free(struct quayi_bm_table *t, struct quayi_bm_cache_pool *pool)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->ngarbage; i++)
		node_free(t->alloc, t->garbage[i]);
	quayi_free(t->alloc, t->garbage, t->ngarbage * sizeof(*t->garbage));
	table_unalloc(t, pool);
}

void
quayi_bm_table_free_all(struct quayi_bm_table *t, struct quayi_bm_cache_pool *pool)
{
	if (t == NULL)
		return;
	node_free_deep(t->alloc, t->root);
	quayi_free(t->alloc, t->garbage, t->ngarbage * sizeof(*t->garbage));
	table_unalloc(t, pool);
}

/* Commit: old's replaced nodes become its garbage. */
static int
commit(struct quayi_bm_table *old, struct quayi_bm_node **repl, size_t nrepl)
{
	struct quayi_bm_node **g = quayi_alloc(old->alloc, nrepl * sizeof(*g));

	if (g == NULL)
		return -ENOMEM;
	memcpy(g, repl, nrepl * sizeof(*g));
	old->garbage = g;
	old->ngarbage = nrepl;
	return 0;
}

int
quayi_bm_insert(struct quayi_bm_table *old, const struct quayi_bm_toks *pat, struct quay_sub *sub,
    struct quayi_bm_cache_pool *pool, struct quayi_bm_table **out)
{
	struct quayi_bm_node *created[QUAY_BUS_TOKENS_MAX + 1];
	struct quayi_bm_node *repl[QUAY_BUS_TOKENS_MAX + 1];
	size_t nc = 0, nr = 0;
	struct quayi_bm_table *t = table_alloc(pool);
	struct quayi_bm_node *on = old->root, *nn;
	struct quay_sub **arr;
	bool gt = false;

	if (t == NULL)
		return -ENOMEM;
	nn = node_copy(t->alloc, on, "", 0, 1, NULL);
	if (nn == NULL)
		goto oom;
	created[nc++] = nn;
	repl[nr++] = on;
	t->root = nn;
	for (uint32_t i = 0; i < pat->n; i++) {
		const char *tok = pat->s + pat->off[i];
		size_t tl = pat->tlen[i];
		struct quayi_bm_node *oc, *ncn;

		if (tok_is(pat, i, '>')) {
			gt = true;
			break;
		}
		if (tok_is(pat, i, '*')) {
			oc = on != NULL ? on->star : NULL;
			ncn = node_copy(t->alloc, oc, "*", 1, 1, NULL);
			if (ncn == NULL)
				goto oom;
			nn->star = ncn;
		} else if (tok_is(pat, i, '#')) {
			oc = on != NULL ? on->hash : NULL;
			ncn = node_copy(t->alloc, oc, "#", 1, 1, NULL);
			if (ncn == NULL)
				goto oom;
			nn->hash = ncn;
		} else {
			uint64_t h = bm_hash(tok, tl);
			oc = node_find(on, tok, tl, h);
			ncn = node_copy(t->alloc, oc, tok, tl, 1, NULL);
			if (ncn == NULL)
				goto oom;
			node_set_kid(nn, h, ncn);
		}
		created[nc++] = ncn;
		if (oc != NULL)
			repl[nr++] = oc;
		on = oc;
		nn = ncn;
	}
	if (gt) {
		arr = subs_dup(t->alloc, nn->gt, nn->ngt, 1);
		if (arr == NULL)
			goto oom;
		arr[nn->ngt++] = sub;
		quayi_free(t->alloc, nn->gt, (size_t)nn->gcap * sizeof(*nn->gt));
		nn->gt = arr;
		nn->gcap = nn->ngt;
	} else {
		arr = subs_dup(t->alloc, nn->here, nn->nhere, 1);
		if (arr == NULL)
			goto oom;
		arr[nn->nhere++] = sub;
		quayi_free(t->alloc, nn->here, (size_t)nn->hcap * sizeof(*nn->here));
		nn->here = arr;
		nn->hcap = nn->nhere;
	}
	if (commit(old, repl, nr) != 0)
		goto oom;
	t->nsubs = old->nsubs + 1;
	*out = t;
	return 0;
oom:
	for (size_t i = 0; i < nc; i++)
		node_free(t->alloc, created[i]);
	table_unalloc(t, pool);
	return -ENOMEM;
}

static bool
subs_remove(const struct quay_allocator *a, struct quay_sub ***v, uint32_t *n, uint32_t *cap,
    struct quay_sub *sub)
{
	for (uint32_t i = 0; i < *n; i++) {
		if ((*v)[i] == sub) {
			(*v)[i] = (*v)[*n - 1];
			(*n)--;
			if (*n == 0) {
				quayi_free(a, *v, (size_t)*cap * sizeof(**v));
				*v = NULL;
				*cap = 0;
			}
			return true;
		}
	}
	return false;
}

int
quayi_bm_remove(struct quayi_bm_table *old, const struct quayi_bm_toks *pat, struct quay_sub *sub,
    struct quayi_bm_cache_pool *pool, struct quayi_bm_table **out)
{
	struct quayi_bm_node *path[QUAY_BUS_TOKENS_MAX + 1];
	struct quayi_bm_node *created[QUAY_BUS_TOKENS_MAX + 1];
	uint64_t hs[QUAY_BUS_TOKENS_MAX];
	char wild[QUAY_BUS_TOKENS_MAX]; /* 0, '*' or '#' */
	size_t nc = 0;
	uint32_t k, j, i;
	bool gt = false, found = false;
	struct quayi_bm_node *f;
	struct quayi_bm_table *t;

	path[0] = old->root;
	for (k = 0; k < pat->n; k++) {
		const char *tok = pat->s + pat->off[k];
		struct quayi_bm_node *c;

		if (tok_is(pat, k, '>')) {
			gt = true;
			break;
		}
		wild[k] = tok_is(pat, k, '*') ? '*' : tok_is(pat, k, '#') ? '#' : 0;
		hs[k] = wild[k] != 0 ? 0 : bm_hash(tok, pat->tlen[k]);
		c = wild[k] == '*' ? path[k]->star :
		    wild[k] == '#' ? path[k]->hash :
		                     node_find(path[k], tok, pat->tlen[k], hs[k]);
		if (c == NULL)
			return -ENOENT;
		path[k + 1] = c;
	}
	f = path[k];
	for (i = 0; i < (gt ? f->ngt : f->nhere); i++)
		found |= (gt ? f->gt[i] : f->here[i]) == sub;
	if (!found)
		return -ENOENT;

	/* Prune: drop the deepest chain of nodes left empty. */
	j = k;
	if (f->nkids == 0 && f->star == NULL && f->hash == NULL && f->nhere + f->ngt == 1 && k > 0) {
		j = k - 1;
		while (j > 0 &&
		    path[j]->nkids + (path[j]->star != NULL ? 1u : 0u) + (path[j]->hash != NULL ? 1u : 0u) ==
		        1 &&
		    path[j]->nhere == 0 && path[j]->ngt == 0)
			j--;
	}
	t = table_alloc(pool);
	if (t == NULL)
		return -ENOMEM;
	for (i = 0; i <= j; i++) {
		const struct quayi_bm_node *skip = (i == j && j < k) ? path[j + 1] : NULL;
		created[nc] = node_copy(t->alloc, path[i], "", 0, 0, skip);
		if (created[nc] == NULL)
			goto oom;
		nc++;
	}
	for (i = 0; i < j; i++) {
		if (wild[i] == '*')
			created[i]->star = created[i + 1];
		else if (wild[i] == '#')
			created[i]->hash = created[i + 1];
		else
			node_set_kid(created[i], hs[i], created[i + 1]);
	}
	if (j == k) {
		if (gt)
			subs_remove(t->alloc, &created[k]->gt, &created[k]->ngt, &created[k]->gcap, sub);
		else
			subs_remove(t->alloc, &created[k]->here, &created[k]->nhere, &created[k]->hcap, sub);
	}
	if (commit(old, path, (size_t)k + 1) != 0)
		goto oom;
	t->root = created[0];
	t->nsubs = old->nsubs - 1;
	*out = t;
	return 0;
oom:
	for (i = 0; i < nc; i++)
		node_free(t->alloc, created[i]);
	table_unalloc(t, pool);
	return -ENOMEM;
}

/* ---- resolution and the cache -------------------------------------- */

#define BM_MEMO 1024u /* (node, token) pairs remembered under a `#` */

struct collect {
	const struct quay_allocator *alloc; /* of v when not local */
	struct quay_sub **v;
	size_t n, cap;
	bool oom;
	bool hashed; /* a `#` edge was taken: v may hold duplicates */
	uint32_t nmemo;
	struct quay_sub *local[128];
	/* Visited (node, token index) pairs below a `#` edge: the same pair
	 * reached twice adds nothing, so a pattern with many `#` costs
	 * nodes x tokens, not one walk per way of splitting the subject. */
	uintptr_t memo[BM_MEMO];
};

static void
collect_add(struct collect *c, struct quay_sub *const *v, uint32_t n)
{
	if (c->n + n > c->cap) {
		size_t cap = c->cap * 2;
		struct quay_sub **nv;

		while (cap < c->n + n)
			cap *= 2;
		nv = quayi_alloc(c->alloc, cap * sizeof(*nv));
		if (nv == NULL) {
			c->oom = true;
			return;
		}
		memcpy(nv, c->v, c->n * sizeof(*nv));
		if (c->v != c->local)
			quayi_free(c->alloc, c->v, c->cap * sizeof(*c->v));
		c->v = nv;
		c->cap = cap;
	}
	memcpy(c->v + c->n, v, (size_t)n * sizeof(*v));
	c->n += n;
}

/* Whether (n, i) was visited below a `#`; records it if not. A full memo
 * only stops remembering: the walk stays correct (duplicates are
 * removed after it), just slower. */
static bool
memo_seen(struct collect *c, const struct quayi_bm_node *n, uint32_t i)
{
	uintptr_t key = ((uintptr_t)n << 6) | i; /* i <= 32; user-space pointers fit in 58 bits */
	uint64_t h = ((uint64_t)key * UINT64_C(0x9e3779b97f4a7c15)) >> 54; /* 10 bits */

	for (uint32_t p = 0; p < 16; p++) {
		uintptr_t *slot = &c->memo[(h + p) & (BM_MEMO - 1)];
		if (*slot == key)
			return true;
		if (*slot == 0) {
			if (c->nmemo < BM_MEMO / 2) {
				*slot = key;
				c->nmemo++;
			}
			return false;
		}
	}
	return false;
}

static void
walk(const struct quayi_bm_node *n, const struct quayi_bm_toks *s, uint32_t i, struct collect *c,
    bool under_hash)
{
	const struct quayi_bm_node *child;

	if (under_hash && memo_seen(c, n, i))
		return;
	if (n->hash != NULL) {
		/* `#`: zero or more tokens, so go on from every later token. */
		c->hashed = true;
		for (uint32_t j = i; j <= s->n; j++)
			walk(n->hash, s, j, c, true);
	}
	if (i == s->n) {
		if (n->nhere > 0)
			collect_add(c, n->here, n->nhere);
		return;
	}
	if (n->ngt > 0)
		collect_add(c, n->gt, n->ngt);
	child = node_find(n, s->s + s->off[i], s->tlen[i], bm_hash(s->s + s->off[i], s->tlen[i]));
	if (child != NULL)
		walk(child, s, i + 1, c, under_hash);
	if (n->star != NULL)
		walk(n->star, s, i + 1, c, under_hash);
}

static int
cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (struct quay_sub *const *)a,
	          y = (uintptr_t) * (struct quay_sub *const *)b;

	return x < y ? -1 : x > y;
}

static int
cmp_group(const void *a, const void *b)
{
	uintptr_t ga = (uintptr_t)quayi_bus_sub_group(*(struct quay_sub *const *)a);
	uintptr_t gb = (uintptr_t)quayi_bus_sub_group(*(struct quay_sub *const *)b);

	return ga < gb ? -1 : ga > gb;
}

static struct quayi_bm_centry *
resolve(struct quayi_bm_table *t, const char *subj, uint32_t len, uint64_t hash)
{
	struct quayi_bm_toks s;
	struct collect c;
	struct quayi_bm_centry *e = NULL;
	size_t nplain = 0, ngroups = 0, off_subs, off_filt, off_groups, size;

	c.alloc = t->alloc;
	c.v = c.local;
	c.n = 0;
	c.cap = sizeof(c.local) / sizeof(c.local[0]);
	c.oom = false;
	c.hashed = false;
	c.nmemo = 0;
	memset(c.memo, 0, sizeof(c.memo));
	if (quayi_bm_parse(subj, false, &s) != 0)
		return NULL; /* cannot happen: scan_subject checked it */
	walk(t->root, &s, 0, &c, false);
	if (c.oom)
		goto out;
	if (c.hashed && c.n > 1) {
		/* A subscription reached along several ways counts once. */
		size_t k = 1;
		qsort(c.v, c.n, sizeof(*c.v), cmp_ptr);
		for (size_t i = 1; i < c.n; i++)
			if (c.v[i] != c.v[k - 1])
				c.v[k++] = c.v[i];
		c.n = k;
	}
	/* Plain subscriptions first, then the grouped ones, by group. */
	for (size_t i = 0; i < c.n; i++) {
		if (quayi_bus_sub_group(c.v[i]) == NULL) {
			struct quay_sub *x = c.v[nplain];
			c.v[nplain++] = c.v[i];
			c.v[i] = x;
		}
	}
	if (c.n - nplain > 1)
		qsort(c.v + nplain, c.n - nplain, sizeof(*c.v), cmp_group);
	for (size_t i = nplain; i < c.n; i++)
		if (i == nplain || quayi_bus_sub_group(c.v[i]) != quayi_bus_sub_group(c.v[i - 1]))
			ngroups++;
	off_subs = (sizeof(*e) + len + 1 + 7) & ~(size_t)7;
	off_filt = off_subs + c.n * sizeof(*c.v);
	off_groups = off_filt + c.n * sizeof(struct quayi_filter *);
	size = off_groups + ngroups * sizeof(struct quayi_bm_gref);
	e = quayi_alloc(t->alloc, size);
	if (e == NULL)
		goto out;
	e->nsubs = (uint32_t)c.n;
	e->hash = hash;
	e->len = len;
	e->nplain = (uint32_t)nplain;
	e->ngroups = (uint32_t)ngroups;
	e->ntargets = (uint32_t)(nplain + ngroups);
	e->stamp = 0;
	e->prio_max = QUAY_MSG_PRIORITY_MAX;
	e->special = 0;
	for (size_t i = 0; i < c.n; i++) {
		uint32_t pm = quayi_bus_sub_prio_max(c.v[i]);
		e->stamp |= quayi_bus_sub_stamps(c.v[i]);
		e->special |= quayi_bus_sub_special(c.v[i]);
		if (pm < e->prio_max)
			e->prio_max = pm;
	}
	memcpy(e->subj, subj, len + 1);
	e->subs = (struct quay_sub **)(void *)((char *)e + off_subs);
	e->filt = (const struct quayi_filter **)(void *)((char *)e + off_filt);
	e->groups = (struct quayi_bm_gref *)(void *)((char *)e + off_groups);
	if (c.n > 0)
		memcpy(e->subs, c.v, c.n * sizeof(*c.v));
	for (size_t i = 0; i < c.n; i++)
		e->filt[i] = quayi_bus_sub_filter(c.v[i]);
	ngroups = 0;
	for (size_t i = nplain; i < c.n; i++) {
		struct quayi_bus_group *g = quayi_bus_sub_group(c.v[i]);
		if (i == nplain || g != quayi_bus_sub_group(c.v[i - 1])) {
			e->groups[ngroups].g = g;
			e->groups[ngroups].first = (uint32_t)i;
			e->groups[ngroups].n = 0;
			ngroups++;
		}
		e->groups[ngroups - 1].n++;
	}
out:
	if (c.v != c.local)
		quayi_free(c.alloc, c.v, c.cap * sizeof(*c.v));
	return e;
}

/* Bytes of an entry (resolve's layout). */
static size_t
centry_size(const struct quayi_bm_centry *e)
{
	size_t off_subs = (sizeof(*e) + e->len + 1 + 7) & ~(size_t)7;

	return off_subs + e->nsubs * (sizeof(struct quay_sub *) + sizeof(struct quayi_filter *)) +
	    e->ngroups * sizeof(struct quayi_bm_gref);
}

static void
centry_free(const struct quay_allocator *a, const struct quayi_bm_centry *e)
{
	if (e != NULL)
		quayi_free(a, (void *)(uintptr_t)e, centry_size(e));
}

void
quayi_bm_centry_free(const struct quayi_bm_table *t, const struct quayi_bm_centry *e)
{
	centry_free(t->alloc, e);
}

const struct quayi_bm_centry *
quayi_bm_cached(struct quayi_bm_table *t, const char *subj, uint32_t len, uint64_t hash)
{
	const uint32_t mask = QUAY_BUS_CACHE_ENTRIES - 1;
	struct quayi_bm_cache *c = t->cache;

	for (uint32_t p = 0; p < BM_PROBE; p++) {
		/* BUS-E2: acquire; pairs with BUS-E1 (the entry's contents). */
		const struct quayi_bm_centry *e =
		    __atomic_load_n(&c->slot[(hash + p) & mask], __ATOMIC_ACQUIRE);
		if (e == NULL)
			break;
		if (e->hash == hash && e->len == len && memcmp(e->subj, subj, len) == 0)
			return e;
	}
	return NULL;
}

const struct quayi_bm_centry *
quayi_bm_lookup(struct quayi_bm_table *t, const char *subj, uint32_t len, uint64_t hash, bool *temp)
{
	const uint32_t mask = QUAY_BUS_CACHE_ENTRIES - 1;
	struct quayi_bm_cache *c = t->cache;
	struct quayi_bm_centry *e;

	*temp = false;
	e = (struct quayi_bm_centry *)(uintptr_t)quayi_bm_cached(t, subj, len, hash);
	if (e != NULL)
		return e;
	e = resolve(t, subj, len, hash);
	if (e == NULL)
		return NULL;
	for (uint32_t p = 0; p < BM_PROBE; p++) {
		struct quayi_bm_centry *cur = NULL;
		/* BUS-E1: release on success publishes the entry's contents; acquire
		 * on failure pairs with another thread's BUS-E1 (we may read it). */
		if (__atomic_compare_exchange_n(&c->slot[(hash + p) & mask], &cur, e, false, __ATOMIC_ACQ_REL,
		        __ATOMIC_ACQUIRE)) {
			/* Relaxed: only hands each filler its own used[] index;
			 * used[] is read after a grace period (cache clear). */
			uint32_t k = __atomic_fetch_add(&c->nused, 1, __ATOMIC_RELAXED);
			c->used[k] = (uint16_t)((hash + p) & mask);
			return e;
		}
		if (cur->hash == hash && cur->len == len && memcmp(cur->subj, subj, len) == 0) {
			centry_free(t->alloc, e);
			return cur;
		}
	}
	*temp = true;
	return e;
}
