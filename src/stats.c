/* SPDX-License-Identifier: MIT */
/*
 * Counters, gauges, histograms: the registry and snapshots (the
 * Prometheus and JSON exporters are in src/stats_export.c).
 * The hot paths are inline in include/quay/impl/stats_inline.h, with the
 * layout of the handles and the ordering edges (STATS-H1/STATS-H2).
 *
 * Registry. One mutex guards the registry's structure (families, series,
 * counter chunks, hash tables); every slow call takes it, no hot path
 * does. Families are kept in creation order, each with its series in
 * creation order, so a snapshot (and so an export) lists a family's
 * series together. Two chained hash tables find a family by name and a
 * series by its key (name and sorted labels) in O(1).
 *
 * Counter cells come from chunks: a chunk is `shards` + 1 cache lines, line
 * i holding cell i of 8 counters (the last line the shared cells). A registry keeps its chunks that have a
 * free cell on a list; a chunk is freed when its last counter goes.
 *
 * Thread slots (quayi_stats_slot_init): a bitmap of QUAY_STATS_SHARDS_MAX
 * slots; a thread claims the lowest free bit and a pthread key destructor
 * clears it when the thread exits, so the threads alive at any time hold
 * the lowest slots. A thread holding slot s < shards is the only writer of
 * cell s of every metric, and adds to it with a plain load and store
 * (stats_inline.h); the slot changes hands through STATS-S1/STATS-S2, so
 * the next owner continues from the last value. When every slot is taken,
 * later threads get QUAY_STATS_SHARDS_MAX, which owns no cell: they (and
 * the threads whose slot is >= a metric's shard count) add atomically to
 * the metric's shared cell.
 */
#include "quay_internal.h"
#include "alloc.h"
#include "stats_internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <quay/stats.h>

/* The layout is ABI: pin it. */
_Static_assert(sizeof(struct quay_counter) == 16, "counter handle");
_Static_assert(sizeof(struct quay_gauge) == 16, "gauge handle");
_Static_assert(sizeof(struct quay_hist) == 16, "hist handle");
_Static_assert(offsetof(struct quayi_hist_shard, buckets) == QUAY_CACHELINE, "hist header line");
_Static_assert(sizeof(struct quayi_hist_shard) % QUAY_CACHELINE == 0, "hist shard in whole lines");
_Static_assert(QUAY_CACHELINE == QUAYI_STATS_LINE_WORDS * 8, "line words");
_Static_assert((QUAY_STATS_SHARDS_MAX & (QUAY_STATS_SHARDS_MAX - 1)) == 0, "shards max pow2");
_Static_assert(QUAY_HIST_BUCKETS == 32 * 32 + 1, "buckets up to 2^36, plus overflow");

#define DEFAULT_MAX_METRICS ((size_t)65536)
#define DEFAULT_SHARDS_MIN 4u
#define DEFAULT_SHARDS_MAX 64u
#define DEFAULT_HIST_SHARDS_MAX 4u
#define CHUNK_CELLS QUAYI_STATS_LINE_WORDS /* counters per chunk */

/* ==== thread slots =================================================== */

__thread uint32_t quayi_stats_tslot __attribute__((tls_model("initial-exec")));

#define SLOT_WORDS (QUAY_STATS_SHARDS_MAX / 64)
static uint64_t slot_bits[SLOT_WORDS];
static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static bool slot_key_ok;

static void
slot_release(void *p)
{
	uint32_t slot = (uint32_t)((uintptr_t)p - 1);

	/* A later hot call from another key's destructor claims anew. */
	quayi_stats_tslot = 0;
	/* STATS-S1: release, after this thread's last plain store to its cells;
	 * pairs with STATS-S2 in slot_claim, so the slot's next owner loads
	 * them after that store. A clear is a read-modify-write, so a later
	 * claimer that reads a value set by other threads' CASes in between
	 * still synchronises with it (release sequence). */
	__atomic_fetch_and(&slot_bits[slot / 64], ~((uint64_t)1 << (slot % 64)), __ATOMIC_RELEASE);
}

static void
slot_key_create(void)
{
	slot_key_ok = pthread_key_create(&slot_key, slot_release) == 0;
}

/* The lowest free slot, now taken; UINT32_MAX if none is free. */
static uint32_t
slot_claim(void)
{
	for (uint32_t w = 0; w < SLOT_WORDS; w++) {
		/* Relaxed: only a guess; the CAS below checks it. */
		uint64_t v = __atomic_load_n(&slot_bits[w], __ATOMIC_RELAXED);
		while (~v != 0) {
			uint32_t b = (uint32_t)__builtin_ctzll(~v);
			/* STATS-S2: acquire on success, pairs with STATS-S1 in
			 * slot_release: the previous owner's stores to the slot's
			 * cells happen before this thread's loads of them. */
			if (__atomic_compare_exchange_n(&slot_bits[w], &v, v | ((uint64_t)1 << b), false,
			        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
				return w * 64 + b;
		}
	}
	return UINT32_MAX;
}

uint32_t
quayi_stats_slot_init(void)
{
	uint32_t slot;

	pthread_once(&slot_once, slot_key_create);
	slot = slot_key_ok ? slot_claim() : UINT32_MAX;
	if (slot != UINT32_MAX && pthread_setspecific(slot_key, (void *)(uintptr_t)(slot + 1)) != 0) {
		slot_release((void *)(uintptr_t)(slot + 1));
		slot = UINT32_MAX;
	}
	if (slot == UINT32_MAX)
		slot = QUAY_STATS_SHARDS_MAX; /* owns nothing: the shared cells */
	quayi_stats_tslot = slot + 1;
	return slot + 1;
}

/* ==== validation ===================================================== */

static bool
valid_metric_name(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
		if (!alpha && !(n > 0 && c >= '0' && c <= '9'))
			return false;
		if (n >= QUAY_STATS_NAME_MAX)
			return false;
	}
	return n > 0;
}

static bool
valid_label_name(const char *s)
{
	size_t n = 0;

	if (s == NULL || (s[0] == '_' && s[1] == '_'))
		return false;
	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
		if (!alpha && !(n > 0 && c >= '0' && c <= '9'))
			return false;
		if (n >= QUAY_STATS_LABEL_NAME_MAX)
			return false;
	}
	return n > 0;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF) of at most max bytes; stores the length in *len. */
static bool
valid_utf8(const char *str, size_t max, size_t *len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (s[i] != '\0') {
		unsigned char c = s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			goto next;
		} else if (c >= 0xC2 && c <= 0xDF) {
			k = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			k = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80) /* also stops at the NUL */
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
		    (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
			return false;
		i += k + 1;
next:
		if (i > max)
			return false;
	}
	*len = i;
	return true;
}

/* ==== chained hash table ============================================= */

struct hnode {
	struct hnode *next;
	uint64_t hash;
	const char *key;
	size_t klen;
};

struct htab {
	struct hnode **b;
	size_t nb; /* power of two */
	size_t n;
};

static uint64_t
hash_bytes(const char *p, size_t n)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h ^ (h >> 29);
}

static int
htab_init(const struct quay_allocator *a, struct htab *t)
{
	t->nb = 64;
	t->n = 0;
	t->b = quayi_calloc(a, t->nb, sizeof(*t->b));
	return t->b == NULL ? -ENOMEM : 0;
}

static struct hnode *
htab_find(const struct htab *t, const char *key, size_t klen, uint64_t hash)
{
	for (struct hnode *e = t->b[hash & (t->nb - 1)]; e != NULL; e = e->next)
		if (e->hash == hash && e->klen == klen && memcmp(e->key, key, klen) == 0)
			return e;
	return NULL;
}

/* Grow before an insert so that the insert itself cannot fail. */
static int
htab_reserve(const struct quay_allocator *a, struct htab *t)
{
	struct hnode **nb;
	size_t n2;

	if (t->n < t->nb)
		return 0;
	n2 = t->nb * 2;
	nb = quayi_calloc(a, n2, sizeof(*nb));
	if (nb == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->nb; i++) {
		struct hnode *e = t->b[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = nb[e->hash & (n2 - 1)];
			nb[e->hash & (n2 - 1)] = e;
		}
	}
	quayi_free(a, t->b, t->nb * sizeof(*t->b));
	t->b = nb;
	t->nb = n2;
	return 0;
}

static void
htab_insert(struct htab *t, struct hnode *e)
{
	struct hnode **slot = &t->b[e->hash & (t->nb - 1)];

	e->next = *slot;
	*slot = e;
	t->n++;
}

static void
htab_remove(struct htab *t, struct hnode *e)
{
	for (struct hnode **p = &t->b[e->hash & (t->nb - 1)]; *p != NULL; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			t->n--;
			return;
		}
	}
}

/* ==== registry ======================================================= */

struct chunk {
	struct chunk *prev, *next; /* list of chunks with a free cell */
	uint64_t *lines;           /* shards + 1 lines, line-aligned */
	unsigned used;             /* bit i: cell i taken */
	bool listed;
};

struct family;

struct series {
	union { /* first: the handle is the series */
		struct quay_counter c;
		struct quay_gauge g;
		struct quay_hist h;
	} u;
	struct hnode hn;            /* key: name '\0' (lname '\0' value '\0')* */
	struct series *prev, *next; /* within the family */
	struct family *fam;
	struct quay_stats *reg;
	struct chunk *chunk; /* counters */
	unsigned cell;
	void *mem;              /* gauge line or histogram shards */
	struct collector *coll; /* quay_gauge_set_collect(), or NULL */
	size_t nlabels;
	size_t lstr_len;                  /* bytes of label strings (with NULs) */
	struct quay_stats_label labels[]; /* then the key bytes */
};

struct family {
	struct hnode hn;            /* key: name */
	struct family *prev, *next; /* creation order */
	struct series *first, *last;
	size_t nseries;
	enum quay_stats_type type;
	bool seconds; /* gauges: ns, exported in seconds */
	size_t name_len, help_len;
	char *help;  /* "" if none */
	char name[]; /* then help */
};

/* A collect callback (quay_gauge_set_collect), on the registry's list
 * under coll_lock. */
struct collector {
	struct collector *prev, *next;
	quay_stats_collect_fn fn;
	void *arg;
};

struct quay_stats {
	pthread_mutex_t lock;
	/* Collectors: taken before (never inside) lock. A snapshot holds it
	 * while the callbacks run, so removing one waits for a running call. */
	pthread_mutex_t coll_lock;
	struct collector *coll;
	unsigned shards, hist_shards;
	size_t max_metrics;
	size_t nseries;
	size_t nhist;
	struct family *fam_first, *fam_last;
	struct chunk *partial;
	struct htab fams, series;
	const struct quay_allocator *alloc; /* every block of the registry's */
};

static unsigned
default_shards(void)
{
	long n = sysconf(_SC_NPROCESSORS_CONF);
	unsigned s = DEFAULT_SHARDS_MIN;

	while (n > 0 && s < (unsigned long)n && s < DEFAULT_SHARDS_MAX)
		s *= 2;
	return s;
}

static bool
valid_shard_count(unsigned n)
{
	return n == 0 || (n <= QUAY_STATS_SHARDS_MAX && (n & (n - 1)) == 0);
}

/* Free the registry's block and its hash tables (either may be NULL). */
static void
stats_free(quay_stats *s)
{
	quayi_free(s->alloc, s->fams.b, s->fams.nb * sizeof(*s->fams.b));
	quayi_free(s->alloc, s->series.b, s->series.nb * sizeof(*s->series.b));
	quayi_free(s->alloc, s, sizeof(*s));
}

int
quay_stats_create(const struct quay_stats_opts *opts, quay_stats **out)
{
	struct quay_stats_opts o = QUAY_STATS_OPTS_INIT;
	quay_stats *s;

	if (out == NULL)
		return -EINVAL;
	if (opts != NULL) {
		size_t end = offsetof(struct quay_stats_opts, max_metrics) + sizeof(o.max_metrics);
		/* The first version (no allocator), or this one or larger. */
		if (opts->size < end || (opts->size < sizeof(o) && opts->size != end))
			return -EINVAL;
		/* A newer caller's struct: its extra fields must be unused. */
		for (size_t i = sizeof(o); i < opts->size; i++)
			if (((const unsigned char *)opts)[i] != 0)
				return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		o.size = sizeof(o);
	}
	if (o.flags != 0 || !valid_shard_count(o.shards) || !valid_shard_count(o.hist_shards) ||
	    o.max_metrics > QUAY_STATS_METRICS_MAX || quayi_alloc_check(o.allocator) != 0)
		return -EINVAL;
	if (o.shards == 0)
		o.shards = default_shards();
	if (o.hist_shards == 0)
		o.hist_shards = o.shards < DEFAULT_HIST_SHARDS_MAX ? o.shards : DEFAULT_HIST_SHARDS_MAX;
	if (o.max_metrics == 0)
		o.max_metrics = DEFAULT_MAX_METRICS;

	s = quayi_calloc(o.allocator, 1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->alloc = o.allocator;
	if (htab_init(s->alloc, &s->fams) != 0 || htab_init(s->alloc, &s->series) != 0 ||
	    pthread_mutex_init(&s->lock, NULL) != 0) {
		stats_free(s);
		return -ENOMEM;
	}
	if (pthread_mutex_init(&s->coll_lock, NULL) != 0) {
		pthread_mutex_destroy(&s->lock);
		stats_free(s);
		return -ENOMEM;
	}
	s->shards = o.shards;
	s->hist_shards = o.hist_shards;
	s->max_metrics = o.max_metrics;
	*out = s;
	return 0;
}

size_t
quay_stats_count(quay_stats *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	pthread_mutex_lock(&s->lock);
	n = s->nseries;
	pthread_mutex_unlock(&s->lock);
	return n;
}

static void *
alloc_lines(const quay_stats *s, size_t bytes)
{
	return quayi_calloc_aligned(s->alloc, QUAY_CACHELINE, bytes);
}

static void
free_lines(const quay_stats *s, void *p, size_t bytes)
{
	quayi_free_aligned(s->alloc, p, QUAY_CACHELINE, bytes);
}

static void
chunk_unlist(quay_stats *s, struct chunk *c)
{
	if (!c->listed)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->partial = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->listed = false;
}

static void
chunk_list(quay_stats *s, struct chunk *c)
{
	if (c->listed)
		return;
	c->prev = NULL;
	c->next = s->partial;
	if (s->partial != NULL)
		s->partial->prev = c;
	s->partial = c;
	c->listed = true;
}

/* Take a zeroed counter cell. Lock held. */
static int
cell_take(quay_stats *s, struct chunk **out, unsigned *cell)
{
	struct chunk *c = s->partial;
	unsigned i;

	if (c == NULL) {
		c = quayi_calloc(s->alloc, 1, sizeof(*c));
		if (c == NULL)
			return -ENOMEM;
		c->lines = alloc_lines(s, ((size_t)s->shards + 1) * QUAY_CACHELINE);
		if (c->lines == NULL) {
			quayi_free(s->alloc, c, sizeof(*c));
			return -ENOMEM;
		}
		chunk_list(s, c);
	}
	i = (unsigned)__builtin_ctz(~c->used);
	c->used |= 1u << i;
	if (c->used == (1u << CHUNK_CELLS) - 1)
		chunk_unlist(s, c);
	/* A reused cell may hold a destroyed counter's counts. Relaxed: the
	 * handle reaches other threads through the caller's own hand-over,
	 * and snapshots through the registry mutex. */
	for (unsigned k = 0; k <= s->shards; k++)
		__atomic_store_n(&c->lines[(size_t)k * QUAYI_STATS_LINE_WORDS + i], 0, __ATOMIC_RELAXED);
	*out = c;
	*cell = i;
	return 0;
}

static void
cell_put(quay_stats *s, struct chunk *c, unsigned cell)
{
	c->used &= ~(1u << cell);
	if (c->used == 0) {
		chunk_unlist(s, c);
		free_lines(s, c->lines, ((size_t)s->shards + 1) * QUAY_CACHELINE);
		quayi_free(s->alloc, c, sizeof(*c));
	} else {
		chunk_list(s, c);
	}
}

static int
label_cmp(const void *a, const void *b)
{
	return strcmp(((const struct quay_stats_label *)a)->name, ((const struct quay_stats_label *)b)->name);
}

static const char *const hist_suffixes[] = { "_bucket", "_sum", "_count" };

static struct family *
family_find(const quay_stats *s, const char *name, size_t len)
{
	struct hnode *e = htab_find(&s->fams, name, len, hash_bytes(name, len));

	return e == NULL ? NULL : (struct family *)(void *)((char *)e - offsetof(struct family, hn));
}

/* Whether a new family (name, type) would clash with a histogram's
 * derived names. Lock held. */
static bool
names_clash(const quay_stats *s, const char *name, size_t len, enum quay_stats_type type)
{
	char buf[QUAY_STATS_NAME_MAX + 16];

	for (size_t i = 0; i < 3; i++) {
		size_t sl = strlen(hist_suffixes[i]);
		if (type == QUAY_STATS_HIST) {
			memcpy(buf, name, len);
			memcpy(buf + len, hist_suffixes[i], sl);
			if (family_find(s, buf, len + sl) != NULL)
				return true;
		}
		if (len > sl && memcmp(name + len - sl, hist_suffixes[i], sl) == 0) {
			struct family *f = family_find(s, name, len - sl);
			if (f != NULL && f->type == QUAY_STATS_HIST)
				return true;
		}
	}
	return false;
}

static void
family_free(const quay_stats *s, struct family *f)
{
	quayi_free(s->alloc, f, sizeof(*f) + f->name_len + 1 + f->help_len + 1);
}

/* Bytes of se's block (series_new) and of its gauge line or histogram
 * shards (series_storage_locked). */
static size_t
series_size(const struct series *se)
{
	return sizeof(*se) + se->nlabels * sizeof(se->labels[0]) + se->lstr_len + se->hn.klen;
}

static size_t
series_mem_size(const quay_stats *s, enum quay_stats_type type)
{
	return type == QUAY_STATS_GAUGE ? (size_t)QUAY_CACHELINE :
	                                  ((size_t)s->hist_shards + 1) * sizeof(struct quayi_hist_shard);
}

static void
series_unlink(quay_stats *s, struct series *se)
{
	struct family *f = se->fam;

	htab_remove(&s->series, &se->hn);
	if (se->prev != NULL)
		se->prev->next = se->next;
	else
		f->first = se->next;
	if (se->next != NULL)
		se->next->prev = se->prev;
	else
		f->last = se->prev;
	s->nseries--;
	if (se->u.c.type == QUAY_STATS_HIST)
		s->nhist--;
	if (--f->nseries == 0) {
		htab_remove(&s->fams, &f->hn);
		if (f->prev != NULL)
			f->prev->next = f->next;
		else
			s->fam_first = f->next;
		if (f->next != NULL)
			f->next->prev = f->prev;
		else
			s->fam_last = f->prev;
		family_free(s, f);
	}
}

static void
series_free(quay_stats *s, struct series *se)
{
	quayi_free(s->alloc, se->coll, sizeof(*se->coll));
	if (se->chunk != NULL)
		cell_put(s, se->chunk, se->cell);
	if (se->mem != NULL)
		free_lines(s, se->mem, series_mem_size(s, se->u.c.type));
	quayi_free(s->alloc, se, series_size(se));
}

/* metric_create, step 1: check the help text and the labels (all before
 * anything is allocated, so bad input changes nothing), and sort the
 * labels into sorted[]. *help_len and *lstr (bytes of the label strings
 * with their NULs) are set. */
static int
check_labels(enum quay_stats_type type, const char *help, const struct quay_stats_label *labels,
    size_t nlabels, struct quay_stats_label *sorted, size_t *help_len, size_t *lstr)
{
	*help_len = 0;
	*lstr = 0;
	if (help != NULL && !valid_utf8(help, QUAY_STATS_HELP_MAX, help_len))
		return -EINVAL;
	for (size_t i = 0; i < nlabels; i++) {
		size_t vl;
		if (!valid_label_name(labels[i].name) || labels[i].value == NULL ||
		    !valid_utf8(labels[i].value, QUAY_STATS_LABEL_VALUE_MAX, &vl) || vl == 0)
			return -EINVAL;
		if (type == QUAY_STATS_HIST && strcmp(labels[i].name, "le") == 0)
			return -EINVAL;
		sorted[i] = labels[i];
		*lstr += strlen(labels[i].name) + 1 + vl + 1;
	}
	if (nlabels > 1)
		qsort(sorted, nlabels, sizeof(sorted[0]), label_cmp);
	for (size_t i = 1; i < nlabels; i++)
		if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
			return -EINVAL;
	return 0;
}

/* Step 2: a new series in one block: the series, its label array, the
 * label strings, then its key (name '\0' and the label strings again).
 * NULL if out of memory. */
static struct series *
series_new(quay_stats *s, const char *name, size_t name_len, const struct quay_stats_label *sorted,
    size_t nlabels, size_t lstr)
{
	size_t klen = name_len + 1 + lstr;
	struct series *se =
	    quayi_calloc(s->alloc, 1, sizeof(*se) + nlabels * sizeof(se->labels[0]) + lstr + klen);
	char *p;

	if (se == NULL)
		return NULL;
	p = (char *)(se->labels + nlabels);
	for (size_t i = 0; i < nlabels; i++) {
		size_t a = strlen(sorted[i].name) + 1, b = strlen(sorted[i].value) + 1;
		memcpy(p, sorted[i].name, a);
		se->labels[i].name = p;
		memcpy(p + a, sorted[i].value, b);
		se->labels[i].value = p + a;
		p += a + b;
	}
	se->nlabels = nlabels;
	se->lstr_len = lstr;
	memcpy(p, name, name_len + 1);
	memcpy(p + name_len + 1, se->labels + nlabels, lstr);
	se->hn.key = p;
	se->hn.klen = klen;
	se->hn.hash = hash_bytes(p, klen);
	se->reg = s;
	return se;
}

/* Step 3, lock held: may se join family f (NULL: a new family name)?
 * -EINVAL if the family has another type, kind or help, the series
 * exists, or a new name clashes with a histogram's; -ENOMEM if the
 * registry is full or its hash tables cannot grow. */
static int
admit_locked(quay_stats *s, const struct family *f, const struct series *se, enum quay_stats_type type,
    bool seconds, const char *name, size_t name_len, const char *help, size_t help_len)
{
	if (f != NULL) {
		if (f->type != type || f->seconds != seconds || f->help_len != help_len ||
		    (help_len != 0 && memcmp(f->help, help, help_len) != 0))
			return -EINVAL;
		if (htab_find(&s->series, se->hn.key, se->hn.klen, se->hn.hash) != NULL)
			return -EINVAL; /* duplicate name and labels */
	} else if (names_clash(s, name, name_len, type)) {
		return -EINVAL;
	}
	if (s->nseries >= s->max_metrics)
		return -ENOMEM;
	int rc = htab_reserve(s->alloc, &s->series);
	if (rc == 0 && f == NULL)
		rc = htab_reserve(s->alloc, &s->fams);
	return rc;
}

/* Step 4: a new family (not linked yet); NULL if out of memory. */
static struct family *
family_new(const quay_stats *s, enum quay_stats_type type, bool seconds, const char *name, size_t name_len,
    const char *help, size_t help_len)
{
	struct family *f = quayi_calloc(s->alloc, 1, sizeof(*f) + name_len + 1 + help_len + 1);

	if (f == NULL)
		return NULL;
	memcpy(f->name, name, name_len + 1);
	f->help = f->name + name_len + 1;
	if (help_len != 0)
		memcpy(f->help, help, help_len);
	f->help[help_len] = '\0';
	f->name_len = name_len;
	f->help_len = help_len;
	f->type = type;
	f->seconds = seconds;
	f->hn.key = f->name;
	f->hn.klen = name_len;
	f->hn.hash = hash_bytes(name, name_len);
	return f;
}

/* Step 5, lock held: the series' hot memory (a counter cell, a gauge
 * line, histogram shards) and its handle. */
static int
series_storage_locked(quay_stats *s, struct series *se, enum quay_stats_type type)
{
	int rc;

	switch (type) {
	case QUAY_STATS_COUNTER:
		if ((rc = cell_take(s, &se->chunk, &se->cell)) != 0)
			return rc;
		se->u.c.cells = se->chunk->lines + se->cell;
		se->u.c.mask = s->shards - 1;
		se->u.c.type = QUAY_STATS_COUNTER;
		return 0;
	case QUAY_STATS_GAUGE:
		se->mem = alloc_lines(s, series_mem_size(s, type));
		if (se->mem == NULL)
			return -ENOMEM;
		se->u.g.cell = se->mem;
		se->u.g.type = QUAY_STATS_GAUGE;
		return 0;
	default:
		se->mem = alloc_lines(s, series_mem_size(s, type));
		if (se->mem == NULL)
			return -ENOMEM;
		se->u.h.shards = se->mem;
		for (unsigned i = 0; i <= s->hist_shards; i++)
			se->u.h.shards[i].min = UINT64_MAX;
		se->u.h.mask = s->hist_shards - 1;
		se->u.h.type = QUAY_STATS_HIST;
		s->nhist++;
		return 0;
	}
}

/* Step 6, lock held: link the new family (if any) and the series, in
 * creation order and in the hash tables (reserved by admit_locked). */
static void
link_locked(quay_stats *s, struct family *f, struct family *newf, struct series *se)
{
	if (newf != NULL) {
		htab_insert(&s->fams, &newf->hn);
		newf->prev = s->fam_last;
		if (s->fam_last != NULL)
			s->fam_last->next = newf;
		else
			s->fam_first = newf;
		s->fam_last = newf;
		f = newf;
	}
	se->fam = f;
	se->prev = f->last;
	if (f->last != NULL)
		f->last->next = se;
	else
		f->first = se;
	f->last = se;
	f->nseries++;
	htab_insert(&s->series, &se->hn);
	s->nseries++;
}

/* Create a series of family name (creating the family with its first
 * series): check, build the series outside the lock, then admit it,
 * give it storage and link it under the lock. */
static int
metric_create(quay_stats *s, enum quay_stats_type type, bool seconds, const char *name, const char *help,
    const struct quay_stats_label *labels, size_t nlabels, struct series **out)
{
	struct quay_stats_label sorted[QUAY_STATS_LABELS_MAX];
	size_t name_len, help_len, lstr;
	struct series *se;
	struct family *f, *newf = NULL;
	int rc;

	if (s == NULL || out == NULL || !valid_metric_name(name) || nlabels > QUAY_STATS_LABELS_MAX ||
	    (labels == NULL && nlabels != 0))
		return -EINVAL;
	name_len = strlen(name);
	if ((rc = check_labels(type, help, labels, nlabels, sorted, &help_len, &lstr)) != 0)
		return rc;
	if ((se = series_new(s, name, name_len, sorted, nlabels, lstr)) == NULL)
		return -ENOMEM;

	pthread_mutex_lock(&s->lock);
	f = family_find(s, name, name_len);
	rc = admit_locked(s, f, se, type, seconds, name, name_len, help, help_len);
	if (rc == 0 && f == NULL &&
	    (newf = family_new(s, type, seconds, name, name_len, help, help_len)) == NULL)
		rc = -ENOMEM;
	if (rc == 0)
		rc = series_storage_locked(s, se, type);
	if (rc != 0) {
		if (se->chunk != NULL)
			cell_put(s, se->chunk, se->cell);
		pthread_mutex_unlock(&s->lock);
		if (newf != NULL)
			family_free(s, newf);
		if (se->mem != NULL)
			free_lines(s, se->mem, series_mem_size(s, type));
		quayi_free(s->alloc, se, series_size(se));
		return rc;
	}
	link_locked(s, f, newf, se);
	pthread_mutex_unlock(&s->lock);
	*out = se;
	return 0;
}

int
quay_counter_create(quay_stats *s, const char *name, const char *help, const struct quay_stats_label *labels,
    size_t nlabels, quay_counter **out)
{
	struct series *se;
	int rc = out == NULL ? -EINVAL :
	                       metric_create(s, QUAY_STATS_COUNTER, false, name, help, labels, nlabels, &se);

	if (rc == 0)
		*out = &se->u.c;
	return rc;
}

int
quay_gauge_create(quay_stats *s, const char *name, const char *help, const struct quay_stats_label *labels,
    size_t nlabels, quay_gauge **out)
{
	struct series *se;
	int rc = out == NULL ? -EINVAL :
	                       metric_create(s, QUAY_STATS_GAUGE, false, name, help, labels, nlabels, &se);

	if (rc == 0)
		*out = &se->u.g;
	return rc;
}

int
quay_gauge_create_seconds(quay_stats *s, const char *name, const char *help,
    const struct quay_stats_label *labels, size_t nlabels, quay_gauge **out)
{
	struct series *se;
	int rc = out == NULL ? -EINVAL :
	                       metric_create(s, QUAY_STATS_GAUGE, true, name, help, labels, nlabels, &se);

	if (rc == 0)
		*out = &se->u.g;
	return rc;
}

quay_stats *
quayi_stats_of_gauge(const quay_gauge *g)
{
	return g != NULL ? ((const struct series *)(const void *)g)->reg : NULL;
}

int
quay_gauge_set_collect(quay_gauge *g, quay_stats_collect_fn fn, void *arg)
{
	struct series *se = (struct series *)g;
	struct collector *c;
	quay_stats *s;

	if (g == NULL || g->type != QUAY_STATS_GAUGE || fn == NULL)
		return -EINVAL;
	s = se->reg;
	c = quayi_calloc(s->alloc, 1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->fn = fn;
	c->arg = arg;
	pthread_mutex_lock(&s->coll_lock);
	if (se->coll != NULL) {
		pthread_mutex_unlock(&s->coll_lock);
		quayi_free(s->alloc, c, sizeof(*c));
		return -EEXIST;
	}
	c->next = s->coll;
	if (s->coll != NULL)
		s->coll->prev = c;
	s->coll = c;
	se->coll = c;
	pthread_mutex_unlock(&s->coll_lock);
	return 0;
}

/* Take a series' collector off the list; waits for a snapshot running it. */
static void
collector_unlink(quay_stats *s, struct series *se)
{
	struct collector *c;

	pthread_mutex_lock(&s->coll_lock);
	c = se->coll;
	if (c != NULL) {
		if (c->prev != NULL)
			c->prev->next = c->next;
		else
			s->coll = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		se->coll = NULL;
	}
	pthread_mutex_unlock(&s->coll_lock);
	quayi_free(s->alloc, c, sizeof(*c));
}

int
quay_hist_create(quay_stats *s, const char *name, const char *help, const struct quay_stats_label *labels,
    size_t nlabels, quay_hist **out)
{
	struct series *se;
	int rc = out == NULL ? -EINVAL :
	                       metric_create(s, QUAY_STATS_HIST, false, name, help, labels, nlabels, &se);

	if (rc == 0)
		*out = &se->u.h;
	return rc;
}

/* The handle is the first member of its series. */
static void
metric_destroy(void *handle)
{
	struct series *se = handle;
	quay_stats *s = se->reg;

	collector_unlink(s, se);
	pthread_mutex_lock(&s->lock);
	series_unlink(s, se);
	series_free(s, se);
	pthread_mutex_unlock(&s->lock);
}

void
quay_counter_destroy(quay_counter *c)
{
	if (c != NULL && c->type == QUAY_STATS_COUNTER)
		metric_destroy(c);
}

void
quay_gauge_destroy(quay_gauge *g)
{
	if (g != NULL && g->type == QUAY_STATS_GAUGE)
		metric_destroy(g);
}

void
quay_hist_destroy(quay_hist *h)
{
	if (h != NULL && h->type == QUAY_STATS_HIST)
		metric_destroy(h);
}

void
quay_stats_destroy(quay_stats *s)
{
	struct family *f, *fn;

	if (s == NULL)
		return;
	for (f = s->fam_first; f != NULL; f = fn) {
		struct series *se, *sn;
		fn = f->next;
		for (se = f->first; se != NULL; se = sn) {
			sn = se->next;
			series_free(s, se);
		}
		family_free(s, f);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->coll_lock);
	stats_free(s);
}

/* ==== reading ======================================================== */

uint64_t
quay_counter_read(const quay_counter *c)
{
	uint64_t sum = 0;

	if (c == NULL)
		return 0;
	/* Relaxed: see the Ordering note in quay/stats.h. One load per shard;
	 * a later read by this thread loads each shard again and, by
	 * coherence, gets the same or a newer (larger) value. */
	for (uint32_t i = 0; i <= c->mask + 1; i++) /* the owned cells, then the shared one */
		sum += __atomic_load_n(c->cells + (size_t)i * QUAYI_STATS_LINE_WORDS, __ATOMIC_RELAXED);
	return sum;
}

int64_t
quay_gauge_read(const quay_gauge *g)
{
	/* Relaxed: a gauge publishes nothing. */
	return g == NULL ? 0 : (int64_t)__atomic_load_n(g->cell, __ATOMIC_RELAXED);
}

int
quay_hist_read(const quay_hist *h, struct quay_hist_data *out)
{
	uint64_t count = 0, sum = 0, mn = UINT64_MAX, mx = 0;

	if (h == NULL || out == NULL)
		return -EINVAL;
	memset(out->buckets, 0, sizeof(out->buckets));
	for (uint32_t i = 0; i <= h->mask + 1; i++) { /* owned shards, then the shared one */
		const struct quayi_hist_shard *sh = &h->shards[i];
		uint64_t v;
		for (size_t b = 0; b < QUAY_HIST_BUCKETS; b++) {
			/* STATS-H2: acquire, pairs with STATS-H1 in quay_hist_record. */
			v = __atomic_load_n(&sh->buckets[b], __ATOMIC_ACQUIRE);
			out->buckets[b] += v;
			count += v;
		}
		/* Relaxed: after STATS-H2, so they include every record counted. */
		sum += __atomic_load_n(&sh->sum, __ATOMIC_RELAXED);
		v = __atomic_load_n(&sh->min, __ATOMIC_RELAXED);
		mn = v < mn ? v : mn;
		v = __atomic_load_n(&sh->max, __ATOMIC_RELAXED);
		mx = v > mx ? v : mx;
	}
	out->count = count;
	out->sum = sum;
	out->min = count == 0 ? 0 : mn;
	out->max = count == 0 ? 0 : mx;
	return 0;
}

int
quay_hist_bucket_range(size_t idx, uint64_t *lo, uint64_t *hi)
{
	unsigned shift;

	if (idx >= QUAY_HIST_BUCKETS || lo == NULL || hi == NULL)
		return -EINVAL;
	if (idx == QUAY_HIST_BUCKETS - 1) {
		*lo = QUAY_HIST_TRACKABLE_MAX;
		*hi = UINT64_MAX;
		return 0;
	}
	if (idx < 64) {
		*lo = *hi = idx;
		return 0;
	}
	shift = (unsigned)(idx >> 5) - 1;
	*lo = (uint64_t)(32 + (idx & 31)) << shift;
	*hi = *lo + ((uint64_t)1 << shift) - 1;
	return 0;
}

int
quay_hist_quantile(const struct quay_hist_data *d, double q, uint64_t *out)
{
	uint64_t rank, cum = 0, lo, hi, v;
	size_t b;

	if (d == NULL || out == NULL || !(q >= 0.0 && q <= 1.0))
		return -EINVAL;
	if (d->count == 0)
		return -ENOENT;
	/* Nearest rank: the ceil(q * count)-th smallest, at least the 1st. */
	{
		double r = q * (double)d->count;
		rank = (uint64_t)r;
		if ((double)rank < r)
			rank++;
		if (rank == 0)
			rank = 1;
		if (rank > d->count)
			rank = d->count;
	}
	/* The extremes are known exactly. */
	if (rank == 1 || rank == d->count) {
		*out = rank == 1 ? d->min : d->max;
		return 0;
	}
	for (b = 0; b < QUAY_HIST_BUCKETS - 1; b++) {
		cum += d->buckets[b];
		if (cum >= rank)
			break;
	}
	if (b == QUAY_HIST_BUCKETS - 1) {
		v = d->max; /* overflow (or counts still moving) */
	} else {
		quay_hist_bucket_range(b, &lo, &hi);
		v = lo + (hi - lo) / 2;
	}
	if (v < d->min)
		v = d->min;
	if (v > d->max)
		v = d->max;
	*out = v;
	return 0;
}

/* ==== snapshots ====================================================== */

/* Bytes a snapshot of s needs. Lock held. */
static size_t
snap_size(const quay_stats *s)
{
	size_t sz = sizeof(struct quay_stats_snap) + s->nseries * sizeof(struct quay_stats_metric) +
	    s->nhist * sizeof(struct quay_hist_data);

	for (const struct family *f = s->fam_first; f != NULL; f = f->next) {
		sz += f->name_len + 1 + f->help_len + 1;
		for (const struct series *se = f->first; se != NULL; se = se->next)
			sz += se->nlabels * sizeof(struct quay_stats_label) + se->lstr_len;
	}
	return sz;
}

int
quay_stats_snapshot(quay_stats *s, quay_stats_snap **out)
{
	struct quay_stats_snap *snap;
	struct quay_hist_data *hd;
	struct quay_stats_label *lab;
	char *str;
	size_t bytes;
	size_t i = 0;

	if (s == NULL || out == NULL)
		return -EINVAL;
	/* Collectors first, outside the registry mutex: they may read other
	 * structures (a queue's timer lock) and set gauges. */
	pthread_mutex_lock(&s->coll_lock);
	for (const struct collector *c = s->coll; c != NULL; c = c->next)
		c->fn(c->arg);
	pthread_mutex_unlock(&s->coll_lock);
	pthread_mutex_lock(&s->lock);
	/* Layout: header, metrics, hist data (8-aligned), labels, strings. */
	bytes = snap_size(s);
	snap = quayi_alloc(s->alloc, bytes);
	if (snap == NULL) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	snap->alloc = s->alloc;
	snap->bytes = bytes;
	snap->n = s->nseries;
	snap->m = (struct quay_stats_metric *)(snap + 1);
	hd = (struct quay_hist_data *)(snap->m + s->nseries);
	lab = (struct quay_stats_label *)(hd + s->nhist);
	str = (char *)lab;
	for (const struct family *f = s->fam_first; f != NULL; f = f->next)
		for (const struct series *se = f->first; se != NULL; se = se->next)
			str += se->nlabels * sizeof(*lab);
	for (const struct family *f = s->fam_first; f != NULL; f = f->next) {
		char *name = str, *help = str + f->name_len + 1;
		memcpy(name, f->name, f->name_len + 1);
		memcpy(help, f->help, f->help_len + 1);
		str = help + f->help_len + 1;
		for (const struct series *se = f->first; se != NULL; se = se->next, i++) {
			struct quay_stats_metric *m = &snap->m[i];
			memset(m, 0, sizeof(*m));
			m->name = name;
			m->help = help;
			m->type = f->type;
			m->seconds = f->seconds;
			m->nlabels = se->nlabels;
			m->labels = lab;
			for (size_t k = 0; k < se->nlabels; k++) {
				size_t a = strlen(se->labels[k].name) + 1;
				size_t b = strlen(se->labels[k].value) + 1;
				memcpy(str, se->labels[k].name, a);
				lab[k].name = str;
				memcpy(str + a, se->labels[k].value, b);
				lab[k].value = str + a;
				str += a + b;
			}
			lab += se->nlabels;
			switch (f->type) {
			case QUAY_STATS_COUNTER: m->counter = quay_counter_read(&se->u.c); break;
			case QUAY_STATS_GAUGE: m->gauge = quay_gauge_read(&se->u.g); break;
			default:
				quay_hist_read(&se->u.h, hd);
				m->hist = hd++;
				break;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	*out = snap;
	return 0;
}

void
quay_stats_snap_free(quay_stats_snap *snap)
{
	if (snap != NULL)
		quayi_free(snap->alloc, snap, snap->bytes);
}

size_t
quay_stats_snap_count(const quay_stats_snap *snap)
{
	return snap == NULL ? 0 : snap->n;
}

int
quay_stats_snap_metric(const quay_stats_snap *snap, size_t i, const struct quay_stats_metric **out)
{
	if (snap == NULL || out == NULL)
		return -EINVAL;
	if (i >= snap->n)
		return -ENOENT;
	*out = &snap->m[i];
	return 0;
}
