/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the write-ahead log (include/quay/wal.h), TESTING.md
 * W2-W7, and CRC32C. Most tests run on the in-memory, fault-injecting
 * file system of tests/wal/wal_memfs.h; a few on the real one (a scratch
 * directory under $TMPDIR or /tmp).
 *
 * Environment knobs (CI size by default):
 *   QUAY_WAL_W4_TRIALS   power-cut trials (2000)
 *   QUAY_WAL_FLIPS       random bit flips and zeroed sectors (2000 each)
 * Each W test prints its figures on one line ("W2: ...").
 */
#include "quay_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <quay/wal.h>

#include "../../src/le.h"
#include "../../src/wal_internal.h"
#include "wal/wal_memfs.h"

#define DIR_ "/memwal"

/* ---- helpers ----------------------------------------------------------- */

static bool
all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* The payload of record (key, i): deterministic bytes. */
static void
fill_payload(uint8_t *p, size_t len, uint64_t key)
{
	uint64_t s = key * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(qt_rand(&s) >> 56);
}

/* What the test appended, by LSN (index lsn - 1). */
struct model {
	uint32_t *type;
	uint32_t *len;
	uint64_t *key;
	bool *batch_end; /* lsn ends a batch */
	uint64_t n, cap;
	bool attempts; /* also record appends that failed with -EIO */
};

static void
model_add(struct model *m, uint64_t lsn, uint32_t type, uint32_t len, uint64_t key, bool end)
{
	if (lsn > m->cap) {
		uint64_t cap = m->cap ? m->cap * 2 : 1024;
		while (cap < lsn)
			cap *= 2;
		m->type = realloc(m->type, cap * sizeof(*m->type));
		m->len = realloc(m->len, cap * sizeof(*m->len));
		m->key = realloc(m->key, cap * sizeof(*m->key));
		m->batch_end = realloc(m->batch_end, cap * sizeof(*m->batch_end));
		m->cap = cap;
	}
	m->type[lsn - 1] = type;
	m->len[lsn - 1] = len;
	m->key[lsn - 1] = key;
	m->batch_end[lsn - 1] = end;
	if (lsn > m->n)
		m->n = lsn;
}

static void
model_free(struct model *m)
{
	free(m->type);
	free(m->len);
	free(m->key);
	free(m->batch_end);
	memset(m, 0, sizeof(*m));
}

/* Check a replay against the model: records 1..n in order, byte-exact. */
struct check {
	const struct model *m;
	uint64_t next; /* the LSN expected next */
	uint64_t bad;  /* mismatches */
	uint8_t *scratch;
};

static int
check_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct check *c = ctx;
	if (lsn != c->next || lsn > c->m->n || type != c->m->type[lsn - 1] || len != c->m->len[lsn - 1]) {
		c->bad++;
		return 0;
	}
	fill_payload(c->scratch, len, c->m->key[lsn - 1]);
	if (len > 0 && memcmp(data, c->scratch, len) != 0)
		c->bad++;
	c->next = lsn + 1;
	return 0;
}

/* Replay w from from_lsn; returns the last LSN seen (from - 1 if none),
 * counting mismatches in *bad. */
static uint64_t
replay_check(quay_wal *w, const struct model *m, uint64_t from, uint64_t *bad)
{
	static uint8_t scratch[1 << 16];
	struct check c = { m, from, 0, scratch };
	int r = quay_wal_replay(w, from, check_visit, &c);
	if (r != 0)
		c.bad++;
	*bad += c.bad;
	return c.next - 1;
}

static struct quay_wal_opts
opts_mode(unsigned mode, uint64_t seg)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	o.sync_mode = mode;
	o.segment_bytes = seg;
	return o;
}

static int
mopen(struct memfs *fs, const struct quay_wal_opts *o, quay_wal **w)
{
	return quayi_wal_open_io(DIR_, o, &memfs_io, fs, w);
}

/* Append records with keys from *key: a batch of nb (1: single append). */
static int
append_some(quay_wal *w, struct model *m, uint64_t *key, size_t nb, uint32_t maxlen, uint64_t *rng,
    uint64_t *last)
{
	static uint8_t bufs[8][4096];
	quay_wal_rec recs[8];
	uint32_t lens[8];
	uint64_t keys[8];
	int r;

	if (nb > 8)
		nb = 8;
	for (size_t i = 0; i < nb; i++) {
		lens[i] = (uint32_t)(qt_rand(rng) % (maxlen + 1));
		if (lens[i] > sizeof(bufs[i]))
			lens[i] = sizeof(bufs[i]);
		keys[i] = (*key)++;
		fill_payload(bufs[i], lens[i], keys[i]);
		recs[i].type = 1 + (uint32_t)(keys[i] % 7);
		recs[i].data = bufs[i];
		recs[i].len = lens[i];
	}
	uint64_t l = 0;
	if (nb == 1)
		r = quay_wal_append(w, recs[0].type, recs[0].data, recs[0].len, &l);
	else
		r = quay_wal_appendv(w, recs, nb, &l);
	if (r == 0) {
		for (size_t i = 0; i < nb; i++)
			model_add(m, l - nb + 1 + i, recs[i].type, lens[i], keys[i], i + 1 == nb);
		if (last)
			*last = l;
	} else if (r == -EIO && m->attempts) {
		/* Not acknowledged, but it may have reached the file: a
		 * single-thread caller knows the LSNs it would have had. */
		uint64_t first = m->n + 1;
		for (size_t i = 0; i < nb; i++)
			model_add(m, first + i, recs[i].type, lens[i], keys[i], i + 1 == nb);
	}
	return r;
}

static uint64_t
env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	return s && *s ? strtoull(s, NULL, 10) : def;
}

/* ---- CRC32C ---------------------------------------------------------- */

static void
crc32c_known_vectors(void **state)
{
	(void)state;
	uint8_t z[32], f[32], a[32];
	memset(z, 0, sizeof(z));
	memset(f, 0xff, sizeof(f));
	for (int i = 0; i < 32; i++)
		a[i] = (uint8_t)i;
	/* RFC 3720 B.4 and the classic check value. */
	uint32_t (*impl[2])(uint32_t, const void *, size_t) = { quayi_crc32c_sw, quayi_crc32c };
	for (int k = 0; k < 2; k++) {
		assert_int_equal(impl[k](0, "123456789", 9), 0xE3069283u);
		assert_int_equal(impl[k](0, z, 32), 0x8A9136AAu);
		assert_int_equal(impl[k](0, f, 32), 0x62A8AB43u);
		assert_int_equal(impl[k](0, a, 32), 0x46DD794Eu);
		assert_int_equal(impl[k](0, "", 0), 0u);
	}
	if (quayi_crc32c_hw_available()) {
		assert_int_equal(quayi_crc32c_hw(0, "123456789", 9), 0xE3069283u);
		assert_int_equal(quayi_crc32c_hw(0, a, 32), 0x46DD794Eu);
	} else {
		print_message("CRC32C: no SSE4.2 here, hardware path not tested\n");
	}
}

static void
crc32c_hw_matches_sw(void **state)
{
	(void)state;
	static uint8_t buf[5000];
	uint64_t s = 42;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)qt_rand(&s);
	for (int t = 0; t < 2000; t++) {
		size_t off = qt_rand(&s) % 64, len = qt_rand(&s) % (sizeof(buf) - 64);
		uint32_t seed = (uint32_t)qt_rand(&s);
		uint32_t sw = quayi_crc32c_sw(seed, buf + off, len);
		assert_int_equal(quayi_crc32c(seed, buf + off, len), sw);
		if (quayi_crc32c_hw_available())
			assert_int_equal(quayi_crc32c_hw(seed, buf + off, len), sw);
		/* Chaining: crc(a || b) = crc(crc(a), b). */
		size_t cut = len ? qt_rand(&s) % len : 0;
		assert_int_equal(quayi_crc32c_sw(quayi_crc32c_sw(seed, buf + off, cut), buf + off + cut,
		                     len - cut),
		    sw);
	}
}

/* ---- bad input --------------------------------------------------------- */

static void
open_rejects_bad_args(void **state)
{
	(void)state;
	struct memfs fs;
	quay_wal *w = (quay_wal *)(uintptr_t)0x1;
	struct quay_wal_report rep;
	struct {
		const char *name;
		const char *dir;
		bool null_out;
		void (*tweak)(struct quay_wal_opts *);
	} cases[] = {
		{ "NULL dir", NULL, false, NULL },
		{ "empty dir", "", false, NULL },
		{ "NULL out", DIR_, true, NULL },
	};
	memfs_init(&fs, 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		o.report = &rep;
		rep.status = 12345;
		assert_int_equal(quayi_wal_open_io(cases[i].dir, &o, &memfs_io, &fs,
		                     cases[i].null_out ? NULL : &w),
		    -EINVAL);
		assert_int_equal(rep.status, -EINVAL);
		assert_ptr_equal(w, (quay_wal *)(uintptr_t)0x1);
	}
	/* Option fields, one bad value each. */
	struct quay_wal_opts bad[12];
	for (int i = 0; i < 12; i++) {
		struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
		bad[i] = o;
	}
	bad[0].size = 0;
	bad[1].size = sizeof(struct quay_wal_opts) + 8;
	bad[2].flags = 0x8;
	bad[3].flags = 0x80000000u;
	bad[4].sync_mode = 3;
	bad[5].interval_ms = QUAY_WAL_INTERVAL_MAX + 1;
	bad[6].segment_bytes = QUAY_WAL_SEGMENT_MIN - 1;
	bad[7].segment_bytes = QUAY_WAL_SEGMENT_MAX + 1;
	bad[8].max_record = QUAY_WAL_RECORD_MAX + 1;
	bad[9].segment_bytes = QUAY_WAL_SEGMENT_MIN;
	bad[9].max_record = (uint32_t)(QUAY_WAL_SEGMENT_MIN / 2);
	bad[10].segment_bytes = 1;
	bad[11].segment_bytes = UINT64_MAX;
	for (int i = 0; i < 12; i++) {
		assert_int_equal(quayi_wal_open_io(DIR_, &bad[i], &memfs_io, &fs, &w), -EINVAL);
		assert_ptr_equal(w, (quay_wal *)(uintptr_t)0x1);
	}
	/* Nothing was created by any of them. */
	assert_false(fs.dir_exists);
	assert_int_equal(fs.ops, 0);
	/* READONLY on a missing directory. */
	struct quay_wal_opts ro = QUAY_WAL_OPTS_INIT;
	ro.flags = QUAY_WAL_READONLY;
	assert_int_equal(quayi_wal_open_io(DIR_, &ro, &memfs_io, &fs, &w), -ENOENT);
	assert_int_equal(quay_wal_open("/nonexistent-quay-dir/x", &ro, &w), -ENOENT);
	assert_false(fs.dir_exists);
	memfs_fini(&fs);
}

static void
calls_reject_bad_args(void **state)
{
	(void)state;
	struct memfs fs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 1 << 20);
	struct quay_wal_info info;
	uint64_t lsn = 77;
	uint8_t big[2048] = { 0 };

	memfs_init(&fs, 2);
	o.max_record = 1024;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	/* NULL handles. */
	assert_int_equal(quay_wal_append(NULL, 1, "x", 1, &lsn), -EINVAL);
	assert_int_equal(quay_wal_appendv(NULL, NULL, 1, &lsn), -EINVAL);
	assert_int_equal(quay_wal_sync(NULL, 0), -EINVAL);
	assert_int_equal(quay_wal_durable_lsn(NULL), 0);
	assert_int_equal(quay_wal_replay(NULL, 1, check_visit, NULL), -EINVAL);
	assert_int_equal(quay_wal_checkpoint(NULL, 1), -EINVAL);
	assert_int_equal(quay_wal_info(NULL, &info), -EINVAL);
	assert_int_equal(quay_wal_info(w, NULL), -EINVAL);
	assert_int_equal(quay_wal_close(NULL), -EINVAL);
	/* Records. */
	struct {
		uint32_t type;
		const void *data;
		size_t len;
		int want;
	} rc[] = {
		{ 0, "x", 1, -EINVAL },
		{ QUAY_WAL_TYPE_MAX + 1, "x", 1, -EINVAL },
		{ 0xffffffffu, "x", 1, -EINVAL },
		{ 1, NULL, 1, -EINVAL },
		{ 1, big, 1025, -EMSGSIZE },
		{ 1, big, SIZE_MAX, -EMSGSIZE },
	};
	for (size_t i = 0; i < sizeof(rc) / sizeof(rc[0]); i++) {
		assert_int_equal(quay_wal_append(w, rc[i].type, rc[i].data, rc[i].len, &lsn), rc[i].want);
		quay_wal_rec two[2] = { { 1, "ok", 2 }, { rc[i].type, rc[i].data, rc[i].len } };
		assert_int_equal(quay_wal_appendv(w, two, 2, &lsn), rc[i].want);
	}
	assert_int_equal(lsn, 77); /* untouched */
	quay_wal_rec one = { 1, "a", 1 };
	assert_int_equal(quay_wal_appendv(w, NULL, 1, &lsn), -EINVAL);
	assert_int_equal(quay_wal_appendv(w, &one, 0, &lsn), -EINVAL);
	assert_int_equal(quay_wal_appendv(w, &one, (size_t)QUAY_WAL_BATCH_MAX + 1, &lsn), -EINVAL);
	/* A batch bigger than a quarter of the segment. */
	{
		size_t n = 300;
		quay_wal_rec *many = calloc(n, sizeof(*many));
		for (size_t i = 0; i < n; i++)
			many[i] = (quay_wal_rec){ 1, big, 1024 };
		assert_int_equal(quay_wal_appendv(w, many, n, &lsn), -EMSGSIZE);
		free(many);
	}
	/* Zero-length payloads are allowed, with or without data. */
	assert_int_equal(quay_wal_append(w, 1, NULL, 0, NULL), 0);
	assert_int_equal(quay_wal_append(w, QUAY_WAL_TYPE_MAX, big, 0, &lsn), 0);
	assert_int_equal(lsn, 2);
	/* sync: never given out, and 0 = everything. */
	assert_int_equal(quay_wal_sync(w, 3), -EINVAL);
	assert_int_equal(quay_wal_sync(w, UINT64_MAX), -EINVAL);
	assert_int_equal(quay_wal_sync(w, 0), 0);
	assert_int_equal(quay_wal_sync(w, 2), 0);
	/* replay without a callback; checkpoint out of range. */
	assert_int_equal(quay_wal_replay(w, 1, NULL, NULL), -EINVAL);
	assert_int_equal(quay_wal_checkpoint(w, 0), -EINVAL);
	assert_int_equal(quay_wal_checkpoint(w, 4), -EINVAL);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.next_lsn, 3); /* nothing appended by the failures */
	assert_int_equal(info.records, 2);
	/* A second writer on the same directory. */
	quay_wal *w2 = NULL;
	assert_int_equal(mopen(&fs, &o, &w2), -EAGAIN);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
}

static void
reason_strings(void **state)
{
	(void)state;
	for (unsigned r = 0; r <= QUAY_WAL_R_IO; r++) {
		assert_non_null(quay_wal_reason_str(r));
		assert_string_not_equal(quay_wal_reason_str(r), "unknown");
	}
	assert_string_equal(quay_wal_reason_str(QUAY_WAL_R_IO + 1), "unknown");
	assert_string_equal(quay_wal_reason_str(~0u), "unknown");
}

/* ---- round trips --------------------------------------------------------- */

static int
stop_at(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	uint64_t *n = ctx;
	(void)type;
	(void)data;
	(void)len;
	return lsn == *n ? 42 : 0;
}

static void
round_trip_mode(unsigned mode)
{
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(mode, 64 << 10);
	struct quay_wal_info info;
	uint64_t key = 1, rng = 7 + mode, bad = 0, last = 0;

	memfs_init(&fs, 3 + mode);
	o.interval_ms = 5;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.next_lsn, 1);
	assert_int_equal(info.first_lsn, 0);
	assert_int_equal(info.segments, 1);
	assert_int_equal(info.sync_mode, mode);
	for (int i = 0; i < 300; i++)
		assert_int_equal(append_some(w, &m, &key, 1 + qt_rand(&rng) % 4, 900, &rng, &last), 0);
	assert_int_equal(last, m.n);
	if (mode == QUAY_WAL_SYNC)
		assert_int_equal(quay_wal_durable_lsn(w), last);
	if (mode == QUAY_WAL_INTERVAL) {
		/* The background thread makes it durable without a sync call. */
		int64_t end = qt_now_ns() + 10000 * QT_MS;
		while (quay_wal_durable_lsn(w) < last && qt_now_ns() < end)
			qt_sleep_ms(1);
		assert_int_equal(quay_wal_durable_lsn(w), last);
	}
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	assert_int_equal(replay_check(w, &m, m.n / 2, &bad), m.n);
	assert_int_equal(replay_check(w, &m, m.n + 5, &bad), m.n + 4);
	assert_int_equal(bad, 0);
	uint64_t stop = m.n / 3;
	assert_int_equal(quay_wal_replay(w, 1, stop_at, &stop), 42);
	assert_int_equal(quay_wal_sync(w, 0), 0);
	assert_int_equal(quay_wal_durable_lsn(w), last);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_true(info.segments > 1); /* 64 KiB segments rolled */
	assert_int_equal(info.records, m.n);
	assert_int_equal(info.first_lsn, 1);
	assert_int_equal(info.last_lsn, m.n);
	assert_int_equal(info.failed, 0);
	assert_int_equal(quay_wal_close(w), 0);

	/* Reopen: the same records; LSNs continue. */
	struct quay_wal_report rep;
	o.report = &rep;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_false(rep.tail_cut);
	assert_false(rep.corrupt);
	assert_int_equal(rep.records, m.n);
	assert_int_equal(rep.last_lsn, m.n);
	assert_int_equal(quay_wal_durable_lsn(w), m.n);
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	assert_int_equal(append_some(w, &m, &key, 1, 10, &rng, &last), 0);
	assert_int_equal(last, m.n);
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	assert_int_equal(bad, 0);
	assert_int_equal(quay_wal_close(w), 0);
	model_free(&m);
	memfs_fini(&fs);
}

static void
round_trip_sync(void **state)
{
	(void)state;
	round_trip_mode(QUAY_WAL_SYNC);
}

static void
round_trip_interval(void **state)
{
	(void)state;
	round_trip_mode(QUAY_WAL_INTERVAL);
}

static void
round_trip_none(void **state)
{
	(void)state;
	round_trip_mode(QUAY_WAL_NONE);
}

static void
none_mode_durable_only_after_sync(void **state)
{
	(void)state;
	struct memfs fs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_NONE, 1 << 20);
	uint64_t lsn;

	memfs_init(&fs, 4);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_append(w, 5, "hello", 5, &lsn), 0);
	assert_int_equal(lsn, 1);
	assert_int_equal(quay_wal_durable_lsn(w), 0);
	assert_int_equal(quay_wal_sync(w, 1), 0);
	assert_int_equal(quay_wal_durable_lsn(w), 1);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
}

static int
count_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	uint64_t *n = ctx;
	(void)lsn;
	(void)data;
	(void)len;
	assert_true(type >= 1 && type <= QUAY_WAL_TYPE_MAX);
	(*n)++;
	return 0;
}

static void
checkpoint_deletes_segments(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_NONE, 64 << 10);
	struct quay_wal_info info;
	uint64_t key = 1, rng = 11, bad = 0, last = 0;

	memfs_init(&fs, 5);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (int i = 0; i < 400; i++)
		assert_int_equal(append_some(w, &m, &key, 1, 1000, &rng, &last), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	uint64_t segs_before = info.segments;
	assert_true(segs_before >= 4);
	uint64_t cut = m.n - 20;
	assert_int_equal(quay_wal_checkpoint(w, cut), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_true(info.segments < segs_before);
	assert_true(info.first_lsn <= cut);
	assert_true(info.first_lsn > 1);
	assert_int_equal(info.checkpoint_lsn, cut);
	/* The mark took an LSN but is not shown to replay. */
	assert_int_equal(info.next_lsn, m.n + 2);
	assert_true(info.durable_lsn >= m.n + 1);
	uint64_t seen = 0;
	assert_int_equal(quay_wal_replay(w, 1, count_visit, &seen), 0);
	assert_int_equal(seen, m.n - info.first_lsn + 1);
	assert_int_equal(replay_check(w, &m, cut, &bad), m.n);
	/* Everything: only the current segment stays. */
	assert_int_equal(quay_wal_checkpoint(w, info.next_lsn), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.segments, 1);
	assert_int_equal(quay_wal_close(w), 0);
	/* Reopen: checkpoint remembered, LSNs never reused. */
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.checkpoint_lsn, m.n + 2);
	assert_int_equal(info.next_lsn, m.n + 3);
	assert_int_equal(quay_wal_append(w, 1, "z", 1, &last), 0);
	assert_int_equal(last, m.n + 3);
	assert_int_equal(bad, 0);
	assert_int_equal(quay_wal_close(w), 0);
	model_free(&m);
	memfs_fini(&fs);
}

static void
readonly_open_changes_nothing(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	struct quay_wal_report rep;
	uint64_t key = 1, rng = 13, bad = 0;

	memfs_init(&fs, 6);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(append_some(w, &m, &key, 1, 100, &rng, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	/* Tear the tail: garbage after the last record. */
	struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
	assert_non_null(f);
	uint64_t end = QUAYI_WAL_SEG_HDR;
	for (uint64_t l = 1; l <= m.n; l++)
		end += quayi_wal_rec_size(m.len[l - 1]);
	memset(f->cur + end + 5, 0xAB, 20);
	memfs_sync_file(f);
	uint8_t *before = malloc(f->cur_len);
	size_t blen = f->cur_len;
	memcpy(before, f->cur, blen);
	long ops_before = fs.ops;

	o.flags = QUAY_WAL_READONLY;
	o.report = &rep;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_true(rep.tail_cut);
	assert_int_equal(rep.offset, end);
	assert_string_equal(rep.segment, "0000000000000001.wal");
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	assert_int_equal(bad, 0);
	assert_int_equal(quay_wal_append(w, 1, "x", 1, NULL), -EINVAL);
	assert_int_equal(quay_wal_appendv(w, &(quay_wal_rec){ 1, "x", 1 }, 1, NULL), -EINVAL);
	assert_int_equal(quay_wal_checkpoint(w, 1), -EINVAL);
	assert_int_equal(quay_wal_sync(w, 0), 0);
	/* A READONLY open takes no lock: a writer may open too. */
	quay_wal *w2;
	struct quay_wal_opts ow = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	assert_int_equal(quay_wal_close(w), 0);
	f = memfs_file(&fs, "0000000000000001.wal");
	assert_int_equal(f->cur_len, blen);
	assert_memory_equal(f->cur, before, blen);
	assert_true(fs.ops > ops_before);
	/* A writer cuts it. */
	assert_int_equal(mopen(&fs, &ow, &w2), 0);
	assert_int_equal(quay_wal_close(w2), 0);
	f = memfs_file(&fs, "0000000000000001.wal");
	assert_true(all_zero(f->cur + end, f->cur_len - end));
	free(before);
	model_free(&m);
	memfs_fini(&fs);
}

/* A torn tail is erased, not just skipped: after the cut a new record of
 * the same size lands where the damaged one was, and a valid record that
 * followed the damage must not come back behind it (it would take the
 * next LSN with old content). */
static void
tail_cut_erases_stale_records(void **state)
{
	(void)state;
	struct memfs fs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_NONE, 64 << 10);
	struct quay_wal_report rep;
	uint8_t x[100], a[100], b[100];
	uint64_t lsn;

	memset(x, 'x', sizeof(x));
	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	memfs_init(&fs, 90);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_append(w, 1, x, sizeof(x), NULL), 0);
	assert_int_equal(quay_wal_sync(w, 0), 0);
	assert_int_equal(quay_wal_append(w, 1, a, sizeof(a), NULL), 0);
	assert_int_equal(quay_wal_append(w, 1, b, sizeof(b), NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	/* Damage A's payload; B stays valid but proves nothing (its synced
	 * field is X's LSN). */
	struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
	uint64_t at = QUAYI_WAL_SEG_HDR + quayi_wal_rec_size(100) + QUAYI_WAL_REC_HDR + 10;
	f->cur[at] ^= 1;
	memfs_sync_file(f);
	o.report = &rep;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_true(rep.tail_cut);
	assert_false(rep.corrupt);
	assert_int_equal(rep.last_lsn, 1);
	memset(a, 'A', sizeof(a));
	assert_int_equal(quay_wal_append(w, 1, a, sizeof(a), &lsn), 0);
	assert_int_equal(lsn, 2);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	struct quay_wal_info info;
	quay_wal_info(w, &info);
	assert_int_equal(info.next_lsn, 3); /* the old B did not come back as LSN 3 */
	assert_false(rep.tail_cut);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
}

/* WAL-R3's proof may end in zero bytes. SYNC mode, A and B
 * acknowledged (fdatasynced), then C; a bit of B flipped. C's synced
 * field (B's LSN) proves B was durable, so open must fail with -EBADMSG
 * whatever C's payload: empty, zeros, or non-zero. Before the fix the
 * proof scan stopped at the last non-zero byte and needed a whole header
 * before it, so a C ending in zero bytes (its synced field's high bytes,
 * or a zero payload) was never seen: open returned 0 and cut B and C. */
static void
proof_record_ending_in_zeros(void **state)
{
	(void)state;
	static const struct {
		size_t len;
		uint8_t fill;
	} cs[] = { { 0, 0 }, { 8, 0 }, { 1, 0 }, { 24, 0 }, { 8, 0x5a }, { 13, 0x5a } };
	uint8_t a[100], b[100], c[32];
	unsigned bad = 0;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
		for (unsigned ro = 0; ro < 2; ro++) {
			struct memfs fs;
			quay_wal *w;
			struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
			struct quay_wal_report rep;
			uint64_t lsn;

			memset(c, cs[i].fill, sizeof(c));
			memfs_init(&fs, 91 + i);
			assert_int_equal(mopen(&fs, &o, &w), 0);
			assert_int_equal(quay_wal_append(w, 1, a, sizeof(a), NULL), 0);
			assert_int_equal(quay_wal_append(w, 1, b, sizeof(b), NULL), 0);
			assert_int_equal(quay_wal_append(w, 1, c, cs[i].len, &lsn), 0);
			assert_int_equal(lsn, 3);
			assert_int_equal(quay_wal_close(w), 0);
			struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
			uint64_t at =
			    QUAYI_WAL_SEG_HDR + quayi_wal_rec_size(sizeof(a)) + QUAYI_WAL_REC_HDR + 10;
			f->cur[at] ^= 4;
			memfs_sync_file(f);
			o.report = &rep;
			o.flags = ro ? QUAY_WAL_READONLY : 0;
			int r = mopen(&fs, &o, &w);
			if (r == 0)
				quay_wal_close(w);
			print_message(
			    "proof C len %zu fill 0x%02x %s: open %d, corrupt %d, tail_cut %d, last_lsn %" PRIu64
			    "\n",
			    cs[i].len, cs[i].fill, ro ? "readonly" : "writable", r, rep.corrupt, rep.tail_cut,
			    rep.last_lsn);
			/* Nothing was cut: B and C are still in the file. */
			f = memfs_file(&fs, "0000000000000001.wal");
			if (r != -EBADMSG || !rep.corrupt || rep.tail_cut ||
			    f->cur_len < QUAYI_WAL_SEG_HDR + 2 * quayi_wal_rec_size(sizeof(a)) +
			            quayi_wal_rec_size(cs[i].len))
				bad++;
			memfs_fini(&fs);
		}
	}
	assert_int_equal(bad, 0);
}

/* The batch limit is one figure, quayi_wal_batch_max, and appendv
 * accepts a batch of exactly that many bytes and refuses one 8 bytes
 * larger (-EMSGSIZE, nothing appended). The cases reach both sides of the
 * limit: a quarter of the segment and (ring) the 4 MiB ring buffer. */
static void
batch_limit_is_exact(void **state)
{
	(void)state;
	static const struct {
		uint64_t seg;
		uint32_t max_record;
		bool ring; /* the limit is the ring buffer, not the quarter */
	} cs[] = { { 64 << 10, 0, false }, { 1 << 20, 0, false }, { 1 << 20, 4096, false },
		{ 32 << 20, 4 << 20, false }, { 32 << 20, 1 << 20, true } };
	static quay_wal_rec recs[8192];
	uint8_t *payload = calloc(1, 4 << 20);

	assert_non_null(payload);
	memset(payload, 0x6b, 4 << 20);
	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
		struct memfs fs;
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(QUAY_WAL_NONE, cs[i].seg);
		struct quay_wal_info info;
		uint64_t lim, left, lsn = 0;
		size_t n = 0;

		o.max_record = cs[i].max_record;
		memfs_init(&fs, 300 + i);
		assert_int_equal(mopen(&fs, &o, &w), 0);
		assert_int_equal(quay_wal_info(w, &info), 0);
		lim = quayi_wal_batch_max(w);
		assert_int_equal(lim, quayi_wal_batch_limit(info.segment_bytes, info.max_record));
		assert_true(lim <= (cs[i].seg - QUAYI_WAL_SEG_HDR) / 4);
		assert_int_equal(lim % 8, 0);
		if (cs[i].ring) {
			assert_true(lim < (cs[i].seg - QUAYI_WAL_SEG_HDR) / 4);
			assert_int_equal(lim, 4 << 20);
		} else {
			assert_int_equal(lim, (cs[i].seg - QUAYI_WAL_SEG_HDR) / 4 & ~(uint64_t)7);
		}
		/* Records of at most max_record adding up to exactly lim. */
		for (left = lim; left > 0; n++) {
			uint64_t take = left - QUAYI_WAL_REC_HDR;

			assert_true(n < sizeof(recs) / sizeof(recs[0]));
			if (take > info.max_record)
				take = info.max_record & ~(uint64_t)7;
			if (left - quayi_wal_rec_size(take) != 0 &&
			    left - quayi_wal_rec_size(take) < QUAYI_WAL_REC_HDR)
				take -= 64; /* leave room for one more whole record */
			recs[n] = (quay_wal_rec){ 7, payload, (size_t)take };
			left -= quayi_wal_rec_size(take);
		}
		assert_int_equal(quay_wal_appendv(w, recs, n, &lsn), 0);
		assert_int_equal(lsn, n);
		recs[n - 1].len += 8;
		assert_int_equal(quay_wal_appendv(w, recs, n, NULL), -EMSGSIZE);
		assert_int_equal(quay_wal_info(w, &info), 0);
		assert_int_equal(info.next_lsn, n + 1);
		print_message("segment %" PRIu64 ", max_record %u: batch limit %" PRIu64
		              " bytes (%zu records) "
		              "accepted, 8 more refused\n",
		    cs[i].seg, info.max_record, lim, n);
		assert_int_equal(quay_wal_close(w), 0);
		memfs_fini(&fs);
	}
	assert_int_equal(quayi_wal_batch_max(NULL), 0);
	free(payload);
}

/* ---- W2: truncation at every offset -------------------------------------- */

/* Build a log in one 256 KiB segment of about target bytes. Single-thread
 * SYNC appends and batches; returns the segment image (malloc'd). */
static uint8_t *
build_image(struct memfs *fs, struct model *m, uint64_t target, size_t *len, uint64_t seed, bool singles_last)
{
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 256 << 10);
	uint64_t key = 1, rng = seed;
	uint64_t end = QUAYI_WAL_SEG_HDR;

	assert_int_equal(mopen(fs, &o, &w), 0);
	while (end < target) {
		size_t nb = 1 + qt_rand(&rng) % 4;
		assert_int_equal(append_some(w, m, &key, nb, 700, &rng, NULL), 0);
		end = QUAYI_WAL_SEG_HDR;
		for (uint64_t l = 1; l <= m->n; l++)
			end += quayi_wal_rec_size(m->len[l - 1]);
	}
	if (singles_last) {
		assert_int_equal(append_some(w, m, &key, 1, 300, &rng, NULL), 0);
		assert_int_equal(append_some(w, m, &key, 1, 300, &rng, NULL), 0);
	}
	assert_int_equal(quay_wal_close(w), 0);
	struct memfs_file *f = memfs_file(fs, "0000000000000001.wal");
	uint8_t *img = malloc(f->cur_len);
	memcpy(img, f->cur, f->cur_len);
	*len = f->cur_len;
	return img;
}

/* Offsets: end of each record (index lsn), for the model. */
static uint64_t
rec_end(const struct model *m, uint64_t lsn)
{
	uint64_t e = QUAYI_WAL_SEG_HDR;
	for (uint64_t l = 1; l <= lsn; l++)
		e += quayi_wal_rec_size(m->len[l - 1]);
	return e;
}

/* The last LSN that ends a batch at or before offset t. */
static uint64_t
prefix_at(const struct model *m, const uint64_t *ends, uint64_t t)
{
	uint64_t best = 0;
	for (uint64_t l = 1; l <= m->n && ends[l] <= t; l++)
		if (m->batch_end[l - 1])
			best = l;
	return best;
}

static void
w2_truncation(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	size_t len;
	uint64_t offsets = 0, failures = 0, appended = 0, bad = 0;

	memfs_init(&fs, 20);
	uint8_t *img = build_image(&fs, &m, 64 << 10, &len, 99, false);
	uint64_t *ends = calloc(m.n + 1, sizeof(*ends));
	for (uint64_t l = 0; l <= m.n; l++)
		ends[l] = rec_end(&m, l);
	uint64_t data_end = ends[m.n];
	uint64_t last2 = ends[m.n - 2];
	const char *name = "0000000000000001.wal";

	for (uint64_t t = 0; t <= data_end; t++) {
		struct memfs tfs;
		quay_wal *w;
		struct quay_wal_report rep;
		memfs_init(&tfs, t + 1);
		memfs_put(&tfs, name, img, (size_t)t);
		uint64_t want = prefix_at(&m, ends, t);
		/* Every offset: a read-only open finds the prefix. */
		struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 256 << 10);
		o.flags = QUAY_WAL_READONLY;
		o.report = &rep;
		offsets++;
		if (mopen(&tfs, &o, &w) != 0) {
			failures++;
			memfs_fini(&tfs);
			continue;
		}
		struct quay_wal_info info;
		quay_wal_info(w, &info);
		if (info.next_lsn != want + 1)
			failures++;
		bool full = t >= last2 || t % 61 == 0;
		if (full) {
			uint64_t b = 0;
			if (replay_check(w, &m, 1, &b) != want || b != 0)
				failures++;
		}
		quay_wal_close(w);
		if (!full) {
			memfs_fini(&tfs);
			continue;
		}
		/* The last 2 records and a sample elsewhere: a writer cuts,
		 * appends, and the reopened log holds prefix + the new one. */
		o.flags = 0;
		if (mopen(&tfs, &o, &w) != 0) {
			failures++;
			memfs_fini(&tfs);
			continue;
		}
		uint64_t lsn = 0;
		if (quay_wal_append(w, 3, "after", 5, &lsn) != 0 || lsn != want + 1)
			failures++;
		quay_wal_close(w);
		struct model m2 = { 0 };
		for (uint64_t l = 1; l <= want; l++)
			model_add(&m2, l, m.type[l - 1], m.len[l - 1], m.key[l - 1], m.batch_end[l - 1]);
		if (mopen(&tfs, &o, &w) != 0) {
			failures++;
		} else {
			uint64_t b = 0;
			struct check c = { &m2, 1, 0, NULL };
			(void)c;
			if (replay_check(w, &m2, 1, &b) != want)
				failures++;
			struct quay_wal_info i2;
			quay_wal_info(w, &i2);
			if (i2.last_lsn != want + 1 || i2.records != want + 1)
				failures++;
			quay_wal_close(w);
			bad += b > 0 ? b - (want < lsn ? 1 : 0) : 0; /* the appended one is not in m2 */
		}
		appended++;
		model_free(&m2);
		memfs_fini(&tfs);
	}
	print_message("W2: log of %" PRIu64 " records, %" PRIu64 " bytes; offsets tested %" PRIu64
	              " (100%%), of which append+reopen %" PRIu64 "; failures %" PRIu64 "\n",
	    m.n, data_end, offsets, appended, failures);
	assert_int_equal(failures, 0);
	(void)bad;
	free(ends);
	free(img);
	model_free(&m);
	memfs_fini(&fs);
}

/* ---- W3: bit flips, zeroed sectors ---------------------------------- */

/* Open a copy of img with a change; classify. Returns the open result and
 * counts corrupt records accepted (a recovered record that differs from
 * the model, or a non-prefix). */
static int
open_variant(const uint8_t *img, size_t len, const struct model *m, unsigned flags, uint64_t *accepted_bad,
    uint64_t *kept)
{
	struct memfs tfs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 256 << 10);
	int r;

	memfs_init(&tfs, len);
	memfs_put(&tfs, "0000000000000001.wal", img, len);
	o.flags = flags;
	r = mopen(&tfs, &o, &w);
	if (r == 0) {
		uint64_t b = 0;
		*kept = replay_check(w, m, 1, &b);
		struct quay_wal_info info;
		quay_wal_info(w, &info);
		if (info.next_lsn != *kept + 1 || (*kept > 0 && !m->batch_end[*kept - 1]))
			b++;
		*accepted_bad += b;
		quay_wal_close(w);
	}
	memfs_fini(&tfs);
	return r;
}

static void
w3_bit_flips(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	size_t len;
	uint64_t accepted_bad = 0, flips = 0, tail_ok = 0, mid_ebadmsg = 0, wrong = 0, kept;

	memfs_init(&fs, 30);
	uint8_t *img = build_image(&fs, &m, 16 << 10, &len, 77, true);
	uint64_t e_prev2 = rec_end(&m, m.n - 2), e_prev = rec_end(&m, m.n - 1), e_last = rec_end(&m, m.n);
	uint8_t *v = malloc(len);

	/* Every bit of the last two records (both single-record batches,
	 * appended in SYNC mode: the last one's synced field proves the one
	 * before it durable). */
	for (uint64_t off = e_prev2; off < e_last; off++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(v, img, len);
			v[off] ^= (uint8_t)(1u << bit);
			flips++;
			kept = 0;
			int r = open_variant(v, len, &m, 0, &accepted_bad, &kept);
			if (off >= e_prev) {
				/* Last record: a torn tail, cut; the rest kept. */
				if (r == 0 && kept == m.n - 1)
					tail_ok++;
				else
					wrong++;
			} else {
				/* Second to last: proven durable, so corruption. */
				if (r == -EBADMSG)
					mid_ebadmsg++;
				else
					wrong++;
				/* SALVAGE keeps the prefix before it. */
				kept = 0;
				r = open_variant(v, len, &m, QUAY_WAL_SALVAGE, &accepted_bad, &kept);
				if (r != 0 || kept != m.n - 2)
					wrong++;
			}
		}
	}
	/* Random flips and zeroed sectors anywhere in the data. */
	uint64_t nrand = env_u64("QUAY_WAL_FLIPS", 2000), rng = 5, rflips = 0, zsect = 0, rej = 0, acc = 0;
	for (uint64_t t = 0; t < 2 * nrand; t++) {
		memcpy(v, img, len);
		bool zero = t >= nrand;
		if (zero) {
			uint64_t s = qt_rand(&rng) % ((e_last + 511) / 512);
			memset(v + s * 512, 0, 512);
			zsect++;
		} else {
			int k = 1 + (int)(qt_rand(&rng) % 3);
			for (int i = 0; i < k; i++) {
				uint64_t o = qt_rand(&rng) % e_last;
				v[o] ^= (uint8_t)(1u << (qt_rand(&rng) % 8));
			}
			rflips++;
		}
		kept = 0;
		int r = open_variant(v, len, &m, 0, &accepted_bad, &kept);
		if (r == -EBADMSG)
			rej++;
		else if (r == 0)
			acc++;
		else
			wrong++;
		r = open_variant(v, len, &m, QUAY_WAL_SALVAGE, &accepted_bad, &kept);
		if (r != 0)
			wrong++;
	}
	print_message("W3: %" PRIu64 " single-bit flips in the last 2 records (tail cut %" PRIu64
	              ", -EBADMSG %" PRIu64 "), %" PRIu64 " random flips + %" PRIu64
	              " zeroed sectors (-EBADMSG %" PRIu64 ", prefix %" PRIu64
	              "); unexpected outcomes %" PRIu64 ", corrupt records accepted %" PRIu64 "\n",
	    flips, tail_ok, mid_ebadmsg, rflips, zsect, rej, acc, wrong, accepted_bad);
	assert_int_equal(wrong, 0);
	assert_int_equal(accepted_bad, 0);
	free(v);
	free(img);
	model_free(&m);
	memfs_fini(&fs);
}

static void
corruption_in_sealed_segment_is_ebadmsg(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_NONE, 64 << 10);
	struct quay_wal_report rep;
	uint64_t key = 1, rng = 17, bad = 0;

	memfs_init(&fs, 31);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (int i = 0; i < 200; i++)
		assert_int_equal(append_some(w, &m, &key, 1, 800, &rng, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
	assert_non_null(f);
	/* The very last byte of the first (sealed) segment's last record. */
	size_t at = f->cur_len - 1;
	f->cur[at - 8] ^= 0x10;
	memfs_sync_file(f);
	o.report = &rep;
	assert_int_equal(mopen(&fs, &o, &w), -EBADMSG);
	assert_int_equal(rep.status, -EBADMSG);
	assert_true(rep.corrupt);
	assert_string_equal(rep.segment, "0000000000000001.wal");
	assert_true(rep.offset > QUAYI_WAL_SEG_HDR && rep.offset < f->cur_len);
	assert_true(rep.reason == QUAY_WAL_R_CRC || rep.reason == QUAY_WAL_R_PADDING);
	/* READONLY reports the same; SALVAGE keeps the prefix. */
	o.flags = QUAY_WAL_READONLY;
	assert_int_equal(mopen(&fs, &o, &w), -EBADMSG);
	o.flags = QUAY_WAL_SALVAGE;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_true(rep.corrupt);
	assert_true(rep.segments_removed >= 1);
	uint64_t kept = replay_check(w, &m, 1, &bad);
	assert_int_equal(bad, 0);
	assert_true(kept < m.n);
	struct quay_wal_info info;
	quay_wal_info(w, &info);
	assert_int_equal(info.segments, 1);
	assert_int_equal(info.next_lsn, kept + 1);
	assert_int_equal(quay_wal_close(w), 0);
	model_free(&m);
	memfs_fini(&fs);
}

/* Issue 10 item 7: SALVAGE keeps the prefix of a damaged segment; a
 * checkpoint mark inside that prefix must count as it does on a normal
 * open (info.checkpoint_lsn), or a salvaged log forgets its checkpoint. */
static void
salvage_keeps_checkpoint(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_NONE, 64 << 10);
	struct quay_wal_report rep;
	struct quay_wal_info info;
	uint64_t key = 1, rng = 23;

	memfs_init(&fs, 37);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(append_some(w, &m, &key, 1, 800, &rng, NULL), 0);
	assert_int_equal(quay_wal_checkpoint(w, 10), 0); /* the mark is LSN 21 */
	while (quay_wal_info(w, &info) == 0 && info.segments < 2)
		assert_int_equal(append_some(w, &m, &key, 1, 800, &rng, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	/* Control: a normal open reads the mark. */
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.checkpoint_lsn, 10);
	assert_int_equal(quay_wal_close(w), 0);
	/* Damage the last record of the sealed first segment: WAL-R2 corruption,
	 * after the mark. */
	struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
	assert_non_null(f);
	f->cur[f->cur_len - 9] ^= 0x10;
	memfs_sync_file(f);
	o.flags = QUAY_WAL_SALVAGE;
	o.report = &rep;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_true(rep.corrupt);
	assert_true(rep.segments_removed >= 1);
	assert_true(rep.last_lsn > 21);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.segments, 1);
	assert_int_equal(info.checkpoint_lsn, 10);
	uint64_t seen = 0;
	assert_int_equal(quay_wal_replay(w, 1, count_visit, &seen), 0);
	assert_int_equal(seen, rep.last_lsn - 1); /* every kept LSN but the mark */
	assert_int_equal(quay_wal_close(w), 0);
	/* And after that salvage, a normal reopen agrees. */
	o.flags = 0;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.checkpoint_lsn, 10);
	assert_int_equal(quay_wal_close(w), 0);
	model_free(&m);
	memfs_fini(&fs);
}

static void
bad_segment_files(void **state)
{
	(void)state;
	struct memfs fs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	struct quay_wal_report rep;
	uint8_t junk[100];

	o.report = &rep;
	/* A last segment with a torn header and nothing else: removed (WAL-R4). */
	memfs_init(&fs, 40);
	memset(junk, 0, sizeof(junk));
	junk[0] = 'Q';
	memfs_put(&fs, "0000000000000001.wal", junk, 10);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_true(rep.tail_cut);
	assert_int_equal(rep.segments_removed, 1);
	assert_int_equal(rep.reason, QUAY_WAL_R_HEADER);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
	/* A header-less file full of data: corruption. */
	memfs_init(&fs, 41);
	memset(junk, 0x5A, sizeof(junk));
	memfs_put(&fs, "0000000000000001.wal", junk, sizeof(junk));
	assert_int_equal(mopen(&fs, &o, &w), -EBADMSG);
	assert_int_equal(rep.reason, QUAY_WAL_R_HEADER);
	memfs_fini(&fs);
	/* A name that does not match the header. */
	memfs_init(&fs, 42);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_append(w, 1, "a", 1, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
	snprintf(f->name, sizeof(f->name), "%s", "0000000000000002.wal");
	assert_int_equal(mopen(&fs, &o, &w), -EBADMSG);
	assert_int_equal(rep.reason, QUAY_WAL_R_NAME);
	memfs_fini(&fs);
	/* A missing segment in the middle: LSN gap. */
	memfs_init(&fs, 43);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	{
		static uint8_t big[4000];
		for (int i = 0; i < 60; i++)
			assert_int_equal(quay_wal_append(w, 1, big, sizeof(big), NULL), 0);
	}
	struct quay_wal_info info;
	quay_wal_info(w, &info);
	assert_true(info.segments >= 3);
	assert_int_equal(quay_wal_close(w), 0);
	/* Remove the second file (by name order). */
	char names[8][48];
	int n = 0;
	for (int i = 0; i < MEMFS_FILES; i++)
		if (fs.f[i].exists && n < 8)
			snprintf(names[n++], 48, "%s", fs.f[i].name);
	qsort(names, (size_t)n, 48, (int (*)(const void *, const void *))strcmp);
	memfs_unlink(&fs, names[1]);
	assert_int_equal(mopen(&fs, &o, &w), -EBADMSG);
	assert_int_equal(rep.reason, QUAY_WAL_R_GAP);
	assert_string_equal(rep.segment, names[2]);
	/* Files with other names are ignored. */
	memfs_fini(&fs);
	memfs_init(&fs, 44);
	memfs_put(&fs, "notes.txt", "hello", 5);
	memfs_put(&fs, "000000000000000G.wal", "x", 1);
	memfs_put(&fs, "0000000000000001.wal.tmp", "x", 1);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(rep.segments, 0);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
}

/* ---- W4: power cuts through the I/O shim -------------------------------- */

static void
w4_power_cuts(void **state)
{
	(void)state;
	uint64_t trials = env_u64("QUAY_WAL_W4_TRIALS", 2000);
	uint64_t violations = 0, lost_acked = 0, corrupt = 0, nonprefix = 0, reopen_fail = 0, acked_total = 0;
	uint64_t recovered_total = 0, cut_tails = 0, rng = 1234;

	for (uint64_t t = 0; t < trials; t++) {
		struct memfs fs;
		struct model m = { 0 };
		quay_wal *w;
		unsigned mode = (t % 3 == 0) ? QUAY_WAL_NONE : QUAY_WAL_SYNC;
		/* One trial in five in 256 KiB segments: cuts while the
		 * preallocation grows (64, 128, 256 KiB). */
		struct quay_wal_opts o = opts_mode(mode, t % 5 == 4 ? 256 << 10 : 64 << 10);
		uint64_t key = 1, acked = 0;

		m.attempts = true;
		memfs_init(&fs, t * 7 + 1);
		fs.crash_at_op = 1 + (long)(qt_rand(&rng) % 400);
		fs.crash_policy = (int)(t % 4);
		if (mopen(&fs, &o, &w) != 0) {
			/* Crashed while creating the first segment. */
			memfs_revive(&fs);
			goto verify;
		}
		for (int i = 0; i < 200; i++) {
			uint64_t last = 0;
			int r = append_some(w, &m, &key, 1 + qt_rand(&rng) % 3, 2500, &rng, &last);
			if (r != 0)
				break;
			if (mode == QUAY_WAL_SYNC)
				acked = last;
			else if (qt_rand(&rng) % 4 == 0) {
				if (quay_wal_sync(w, 0) != 0)
					break;
				acked = last;
			}
		}
		if (!fs.dead)
			memfs_crash(&fs, fs.crash_policy);
		quay_wal_close(w); /* its final write and sync fail: dead */
		memfs_revive(&fs);
verify:
		acked_total += acked;
		struct quay_wal_report rep;
		o.report = &rep;
		int ro = mopen(&fs, &o, &w);
		if (ro != 0) {
			if (reopen_fail == 0)
				print_message("W4 trial %" PRIu64 ": reopen %d, %s at %s+%" PRIu64 "\n", t,
				    ro, quay_wal_reason_str(rep.reason), rep.segment, rep.offset);
			reopen_fail++;
			violations++;
		} else {
			uint64_t b = 0;
			uint64_t got = replay_check(w, &m, 1, &b);
			recovered_total += got;
			cut_tails += rep.tail_cut;
			if (b)
				corrupt++;
			if (got < acked)
				lost_acked++;
			if (got > 0 && !m.batch_end[got - 1])
				nonprefix++;
			/* It still works: append, close, reopen. */
			uint64_t lsn = 0;
			if (quay_wal_append(w, 1, "more", 4, &lsn) != 0 || lsn != got + 1)
				violations++;
			if (quay_wal_close(w) != 0)
				violations++;
			if (b || got < acked || (got > 0 && !m.batch_end[got - 1]))
				violations++;
		}
		model_free(&m);
		memfs_fini(&fs);
	}
	print_message("W4: %" PRIu64
	              " power-cut trials (keep/drop/garble/mixed sectors, unsynced names); acked records "
	              "%" PRIu64 ", recovered %" PRIu64 ", tails cut %" PRIu64 "; acked lost %" PRIu64
	              ", corrupt %" PRIu64 ", torn batches %" PRIu64 ", reopen failures %" PRIu64
	              ", violations %" PRIu64 "\n",
	    trials, acked_total, recovered_total, cut_tails, lost_acked, corrupt, nonprefix, reopen_fail,
	    violations);
	assert_int_equal(violations, 0);
}

/* ---- W5: EIO on fdatasync ---------------------------------------------- */

struct w5_thread {
	quay_wal *w;
	int id;
	uint64_t acked[4096]; /* LSNs acknowledged */
	uint32_t acked_len[4096];
	uint64_t nacked;
	int first_err;
	int later_errs_wrong;
};

static void *
w5_main(void *arg)
{
	struct w5_thread *t = arg;
	uint8_t buf[256];

	for (int i = 0; i < 4096; i++) {
		uint64_t lsn = 0;
		uint32_t len = (uint32_t)((i * 37 + t->id * 11) % 200);
		fill_payload(buf, len, (uint64_t)t->id << 32 | (uint64_t)i);
		int r = quay_wal_append(t->w, 1 + (uint32_t)t->id, buf, len, &lsn);
		if (r == 0) {
			t->acked[t->nacked] = lsn;
			t->acked_len[t->nacked++] = (uint32_t)i;
			continue;
		}
		t->first_err = r;
		/* Sticky: every later call says -EIO. */
		if (quay_wal_append(t->w, 1, "x", 1, NULL) != -EIO)
			t->later_errs_wrong++;
		if (quay_wal_sync(t->w, 0) != -EIO && quay_wal_sync(t->w, 0) != -EINVAL)
			t->later_errs_wrong++;
		break;
	}
	return NULL;
}

struct w5_find {
	uint64_t lsn;
	uint32_t type;
	uint8_t *data;
	size_t len;
	bool found;
};

static int
w5_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct w5_find *f = ctx;
	(void)type;
	if (lsn == f->lsn) {
		f->found = true;
		f->type = type;
		f->len = len;
		memcpy(f->data, data, len);
		return 1;
	}
	return 0;
}

static void
w5_fsync_eio(void **state)
{
	(void)state;
	uint64_t false_acks = 0, acks = 0, wrong = 0, rounds = 40, eio_seen = 0;

	for (uint64_t round = 0; round < rounds; round++) {
		struct memfs fs;
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
		struct w5_thread *th = calloc(4, sizeof(*th));
		pthread_t tid[4];

		memfs_init(&fs, round + 100);
		assert_int_equal(mopen(&fs, &o, &w), 0);
		fs.sync_fail_at = fs.syncs + 3 + (long)(round * 7 % 60);
		for (int i = 0; i < 4; i++) {
			th[i].w = w;
			th[i].id = i;
			pthread_create(&tid[i], NULL, w5_main, &th[i]);
		}
		for (int i = 0; i < 4; i++)
			pthread_join(tid[i], NULL);
		struct quay_wal_info info;
		quay_wal_info(w, &info);
		if (info.failed != -EIO)
			wrong++;
		if (quay_wal_checkpoint(w, 1) != -EIO)
			wrong++;
		uint64_t stop = 0;
		if (quay_wal_replay(w, 1, stop_at, &stop) != -EIO)
			wrong++;
		if (quay_wal_close(w) != -EIO)
			wrong++;
		/* Power cut: whatever the failed syncs did not persist is gone. */
		memfs_crash(&fs, MEMFS_DROP);
		memfs_revive(&fs);
		fs.sync_fail_at = 0;
		assert_int_equal(mopen(&fs, &o, &w), 0);
		for (int i = 0; i < 4; i++) {
			if (th[i].first_err == -EIO)
				eio_seen++;
			else
				wrong++;
			wrong += (uint64_t)th[i].later_errs_wrong;
			for (uint64_t k = 0; k < th[i].nacked; k++) {
				uint8_t got[256], want[256];
				struct w5_find f = { th[i].acked[k], 0, got, 0, false };
				quay_wal_replay(w, th[i].acked[k], w5_visit, &f);
				uint32_t idx = th[i].acked_len[k];
				uint32_t len = (uint32_t)((idx * 37 + (uint32_t)i * 11) % 200);
				fill_payload(want, len, (uint64_t)i << 32 | idx);
				acks++;
				if (!f.found || f.len != len || f.type != 1u + (uint32_t)i ||
				    memcmp(got, want, len) != 0)
					false_acks++;
			}
		}
		assert_int_equal(quay_wal_close(w), 0);
		free(th);
		memfs_fini(&fs);
	}
	print_message("W5: %" PRIu64
	              " rounds x 4 SYNC threads, EIO injected on an fdatasync/dir fsync; acks %" PRIu64
	              ", threads that saw -EIO %" PRIu64 ", false acks %" PRIu64 ", wrong codes %" PRIu64
	              "\n",
	    rounds, acks, eio_seen, false_acks, wrong);
	assert_int_equal(false_acks, 0);
	assert_int_equal(wrong, 0);
}

/* ---- W6: ENOSPC ---------------------------------------------------------- */

static void
w6_enospc(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	struct quay_wal_info info;
	uint64_t key = 1, rng = 3, bad = 0, corruptions = 0;
	int r = 0, enospc = 0;

	/* (a) No room for the next segment: -ENOSPC, not sticky. */
	memfs_init(&fs, 50);
	fs.quota = 3 * (64 << 10) + 100;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (int i = 0; i < 1000 && enospc < 3; i++) {
		r = append_some(w, &m, &key, 1, 2000, &rng, NULL);
		if (r == -ENOSPC)
			enospc++;
		else
			assert_int_equal(r, 0);
	}
	assert_int_equal(enospc, 3);
	quay_wal_info(w, &info);
	assert_int_equal(info.failed, 0);
	assert_int_equal(info.segments, 3);
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n); /* readable */
	fs.quota = 0;                                        /* space returns */
	assert_int_equal(append_some(w, &m, &key, 1, 2000, &rng, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	corruptions += replay_check(w, &m, 1, &bad) != m.n;
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
	model_free(&m);

	/* (b) No preallocation: a write fails with ENOSPC, half written.
	 * Sticky -ENOSPC; after reopen the log is a valid prefix holding
	 * every acknowledged record. */
	uint64_t acked = 0;
	key = 1;
	memfs_init(&fs, 51);
	fs.no_allocate = true;
	fs.quota = 150000;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (;;) {
		uint64_t last;
		r = append_some(w, &m, &key, 1 + qt_rand(&rng) % 3, 3000, &rng, &last);
		if (r != 0)
			break;
		acked = last;
	}
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(quay_wal_append(w, 1, "x", 1, NULL), -ENOSPC);
	assert_int_equal(quay_wal_sync(w, 0), -ENOSPC);
	quay_wal_info(w, &info);
	assert_int_equal(info.failed, -ENOSPC);
	assert_true(info.last_lsn >= acked);
	/* Still readable on the same handle: replay returns 0 and visits
	 * every acknowledged record, byte-exact, and nothing not in the model
	 * (replay_check counts a non-zero return and any mismatch in bad). */
	uint64_t bad_same = 0, got_same = replay_check(w, &m, 1, &bad_same);
	assert_int_equal(bad_same, 0);
	assert_true(got_same >= acked);
	assert_int_equal(quay_wal_append(w, 1, "x", 1, NULL), -ENOSPC); /* still sticky */
	assert_int_equal(quay_wal_checkpoint(w, 1), -ENOSPC);
	assert_int_equal(replay_check(w, &m, acked, &bad_same), got_same); /* from a later LSN */
	assert_int_equal(bad_same, 0);
	assert_int_equal(quay_wal_close(w), -ENOSPC);
	assert_true(fs.enospcs > 0);
	fs.quota = 0;
	struct quay_wal_report rep;
	o.report = &rep;
	assert_int_equal(mopen(&fs, &o, &w), 0);
	uint64_t got = replay_check(w, &m, 1, &bad);
	corruptions += got < acked || (got > 0 && !m.batch_end[got - 1]);
	assert_int_equal(append_some(w, &m, &key, 1, 100, &rng, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	print_message(
	    "W6: ENOSPC at segment creation (3 refusals, not sticky, recovered when space returned) and on a "
	    "write (sticky, %" PRIu64 " acked, %" PRIu64 " replayed on the failed handle, %" PRIu64
	    " recovered, tail cut %d); corruptions %" PRIu64 "\n",
	    acked, got_same, got, rep.tail_cut, corruptions + bad);
	assert_int_equal(bad, 0);
	assert_int_equal(corruptions, 0);
	memfs_fini(&fs);
	model_free(&m);

	/* (c) The same in INTERVAL mode (an append returns once written):
	 * replay on the failed handle visits every acknowledged record. */
	struct quay_wal_opts oi = opts_mode(QUAY_WAL_INTERVAL, 64 << 10);
	memset(&m, 0, sizeof(m));
	key = 1;
	acked = 0;
	memfs_init(&fs, 52);
	fs.no_allocate = true;
	fs.quota = 120000;
	assert_int_equal(mopen(&fs, &oi, &w), 0);
	for (;;) {
		uint64_t last;
		r = append_some(w, &m, &key, 1 + qt_rand(&rng) % 3, 3000, &rng, &last);
		if (r != 0)
			break;
		acked = last;
	}
	assert_int_equal(r, -ENOSPC);
	quay_wal_info(w, &info);
	assert_int_equal(info.failed, -ENOSPC);
	bad_same = 0;
	got_same = replay_check(w, &m, 1, &bad_same);
	assert_int_equal(bad_same, 0);
	assert_true(acked > 0 && got_same >= acked);
	assert_int_equal(quay_wal_sync(w, 0), -ENOSPC);
	assert_int_equal(quay_wal_close(w), -ENOSPC);
	memfs_fini(&fs);
	model_free(&m);
}

/* ---- W7: short writes and EINTR ------------------------------------------ */

static void
w7_short_writes(void **state)
{
	(void)state;
	uint64_t mismatches = 0, records = 0;
	long shorts = 0, eintrs = 0;

	for (unsigned mode = 0; mode <= QUAY_WAL_NONE; mode++) {
		struct memfs fs;
		struct model m = { 0 };
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(mode, 64 << 10);
		struct quay_wal_report rep;
		uint64_t key = 1, rng = 9 + mode, bad = 0;

		memfs_init(&fs, 60 + mode);
		fs.short_pct = 40;
		fs.eintr_pct = 20;
		o.interval_ms = 2;
		assert_int_equal(mopen(&fs, &o, &w), 0);
		for (int i = 0; i < 300; i++)
			assert_int_equal(append_some(w, &m, &key, 1 + qt_rand(&rng) % 3, 3000, &rng, NULL),
			    0);
		assert_int_equal(quay_wal_close(w), 0);
		/* Reopen with the faults still on (reads are retried too). */
		o.report = &rep;
		assert_int_equal(mopen(&fs, &o, &w), 0);
		mismatches += rep.tail_cut || rep.corrupt;
		mismatches += replay_check(w, &m, 1, &bad) != m.n;
		mismatches += bad;
		/* Byte-exact: the files hold exactly the expected bytes. */
		struct quay_wal_info info;
		quay_wal_info(w, &info);
		uint64_t expect = 0;
		for (uint64_t l = 1; l <= m.n; l++)
			expect += quayi_wal_rec_size(m.len[l - 1]);
		mismatches += info.bytes != expect + info.segments * QUAYI_WAL_SEG_HDR;
		assert_int_equal(quay_wal_close(w), 0);
		records += m.n;
		shorts += fs.short_writes;
		eintrs += fs.eintrs;
		model_free(&m);
		memfs_fini(&fs);
	}
	print_message("W7: %" PRIu64
	              " records in 3 modes with %ld short writes and %ld EINTRs injected; mismatches %" PRIu64
	              "\n",
	    records, shorts, eintrs, mismatches);
	assert_int_equal(mismatches, 0);
	assert_true(shorts > 0);
	assert_true(eintrs > 0);
}

/* ---- concurrency: group commit ------------------------------------------ */

struct gc_thread {
	quay_wal *w;
	int id;
	int n;
	int err;
};

static void *
gc_main(void *arg)
{
	struct gc_thread *t = arg;
	uint8_t buf[64];
	for (int i = 0; i < t->n; i++) {
		memset(buf, 0, sizeof(buf));
		memcpy(buf, &t->id, sizeof(t->id));
		memcpy(buf + 4, &i, sizeof(i));
		if (i % 5 == 4) {
			quay_wal_rec two[2] = { { 1, buf, 8 }, { 2, buf, 8 } };
			if (quay_wal_appendv(t->w, two, 2, NULL) != 0)
				t->err++;
		} else if (quay_wal_append(t->w, 1, buf, 8 + (size_t)(i % 50), NULL) != 0) {
			t->err++;
		}
	}
	return NULL;
}

struct gc_check {
	int next[8];
	bool pending_pair[8];
	uint64_t bad;
	uint64_t n;
};

static int
gc_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct gc_check *c = ctx;
	int id, i;
	(void)lsn;
	memcpy(&id, data, 4);
	memcpy(&i, (const uint8_t *)data + 4, 4);
	c->n++;
	if (id < 0 || id >= 8 || len < 8) {
		c->bad++;
		return 0;
	}
	if (type == 2) {
		if (!c->pending_pair[id] || i != c->next[id] - 1)
			c->bad++;
		c->pending_pair[id] = false;
		return 0;
	}
	if (c->pending_pair[id] || i != c->next[id])
		c->bad++;
	c->pending_pair[id] = i % 5 == 4;
	c->next[id] = i + 1;
	return 0;
}

static void
group_commit_threads(void **state)
{
	(void)state;
	for (unsigned mode = 0; mode <= QUAY_WAL_NONE; mode++) {
		struct memfs fs;
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(mode, 64 << 10);
		struct gc_thread th[4];
		pthread_t tid[4];
		long syncs0;

		memfs_init(&fs, 70 + mode);
		o.interval_ms = 1;
		assert_int_equal(mopen(&fs, &o, &w), 0);
		syncs0 = fs.syncs;
		for (int i = 0; i < 4; i++) {
			th[i] = (struct gc_thread){ w, i, 400, 0 };
			pthread_create(&tid[i], NULL, gc_main, &th[i]);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(tid[i], NULL);
			assert_int_equal(th[i].err, 0);
		}
		long syncs = fs.syncs - syncs0;
		assert_int_equal(quay_wal_close(w), 0);
		assert_int_equal(mopen(&fs, &o, &w), 0);
		struct gc_check c;
		memset(&c, 0, sizeof(c));
		assert_int_equal(quay_wal_replay(w, 1, gc_visit, &c), 0);
		assert_int_equal(c.bad, 0);
		assert_int_equal(c.n, 4 * (400 + 80));
		for (int i = 0; i < 4; i++)
			assert_int_equal(c.next[i], 400);
		assert_int_equal(quay_wal_close(w), 0);
		if (mode == QUAY_WAL_SYNC)
			print_message(
			    "group commit: 4 threads, 1600 SYNC appends (1920 records) took %ld syncs\n",
			    syncs);
		memfs_fini(&fs);
	}
}

/* One appender in SYNC mode: exactly one fdatasync per append (the
 * naive baseline's cost, no more), counted by quay_wal_info.syncs and by
 * the file system alike; the other modes sync only when asked. */
static void
sync_counter(void **state)
{
	(void)state;
	for (unsigned mode = 0; mode <= QUAY_WAL_NONE; mode++) {
		struct memfs fs;
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(mode, 64 << 10);
		struct quay_wal_info info;

		memfs_init(&fs, 90 + mode);
		o.interval_ms = QUAY_WAL_INTERVAL_MAX; /* no tick during the test */
		assert_int_equal(mopen(&fs, &o, &w), 0);
		assert_int_equal(quay_wal_info(w, &info), 0);
		assert_int_equal(info.syncs, 0);
		long fs0 = fs.syncs;
		for (int i = 0; i < 50; i++)
			assert_int_equal(quay_wal_append(w, 1, "record", 6, NULL), 0);
		assert_int_equal(quay_wal_info(w, &info), 0);
		assert_int_equal(info.syncs, mode == QUAY_WAL_SYNC ? 50 : 0);
		assert_int_equal(fs.syncs - fs0, (long)info.syncs);
		/* Nothing new: quay_wal_sync costs no fdatasync. */
		assert_int_equal(quay_wal_sync(w, 0), 0);
		uint64_t s1 = mode == QUAY_WAL_SYNC ? 50 : 1;
		assert_int_equal(quay_wal_info(w, &info), 0);
		assert_int_equal(info.syncs, s1);
		assert_int_equal(quay_wal_sync(w, 0), 0);
		assert_int_equal(quay_wal_info(w, &info), 0);
		assert_int_equal(info.syncs, s1);
		assert_int_equal(fs.syncs - fs0, (long)s1);
		assert_int_equal(quay_wal_close(w), 0);
		memfs_fini(&fs);
	}
}

/* SYNC mode writes zeros ahead of the records (so that the fdatasyncs of
 * group commit find written, not unwritten, extents): visible when the
 * file system cannot preallocate, as a file that grows past the records.
 * The zeros change nothing that recovery sees. */
static void
sync_zero_ahead(void **state)
{
	(void)state;
	for (unsigned mode = 0; mode <= QUAY_WAL_NONE; mode++) {
		struct memfs fs;
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(mode, 64 << 10);
		uint64_t rec = quayi_wal_rec_size(100);

		memfs_init(&fs, 95 + mode);
		fs.no_allocate = true;
		assert_int_equal(mopen(&fs, &o, &w), 0);
		uint8_t buf[100];
		memset(buf, 0xA5, sizeof(buf));
		for (int i = 0; i < 3; i++)
			assert_int_equal(quay_wal_append(w, 1, buf, sizeof(buf), NULL), 0);
		assert_int_equal(quay_wal_sync(w, 0), 0);
		struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
		assert_non_null(f);
		uint64_t end = QUAYI_WAL_SEG_HDR + 3 * rec;
		if (mode == QUAY_WAL_SYNC) {
			/* Zeroed to the end of the chunk (here the segment). */
			assert_int_equal(f->cur_len, 64 << 10);
			assert_true(all_zero(f->cur + end, f->cur_len - end));
		} else {
			assert_int_equal(f->cur_len, end);
		}
		assert_int_equal(quay_wal_close(w), 0);
		struct quay_wal_report rep;
		o.report = &rep;
		assert_int_equal(mopen(&fs, &o, &w), 0);
		assert_false(rep.tail_cut);
		assert_false(rep.corrupt);
		assert_int_equal(rep.records, 3);
		assert_int_equal(quay_wal_close(w), 0);
		memfs_fini(&fs);
	}
}

/* Many SYNC appenders and quay_wal_sync callers (some for LSNs already in
 * a round in flight, some for the newest): every call returns, every
 * acknowledged record is durable when acknowledged, and the rounds never
 * outnumber the appends. Exercises the two condition variables of the
 * group commit and the hand-over to a waiter of the next round. */
struct gc16_thread {
	quay_wal *w;
	int id;
	int err;
	uint64_t late; /* acks whose LSN was not durable yet */
};

static void *
gc16_main(void *arg)
{
	struct gc16_thread *t = arg;
	uint8_t buf[40];

	for (int i = 0; i < 300; i++) {
		uint64_t lsn = 0;
		memset(buf, t->id, sizeof(buf));
		if (quay_wal_append(t->w, 1, buf, (size_t)(i % 40), &lsn) != 0)
			t->err++;
		if (quay_wal_durable_lsn(t->w) < lsn)
			t->late++;
		if (i % 7 == 3 && quay_wal_sync(t->w, lsn > 3 ? lsn - 3 : 0) != 0)
			t->err++;
		if (i % 11 == 5 && quay_wal_sync(t->w, 0) != 0)
			t->err++;
	}
	return NULL;
}

static void
group_commit_many_waiters(void **state)
{
	(void)state;
	enum { T = 16 };
	struct memfs fs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	struct gc16_thread th[T];
	pthread_t tid[T];
	struct quay_wal_info info;

	memfs_init(&fs, 99);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	for (int i = 0; i < T; i++) {
		th[i] = (struct gc16_thread){ w, i, 0, 0 };
		pthread_create(&tid[i], NULL, gc16_main, &th[i]);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(tid[i], NULL);
		assert_int_equal(th[i].err, 0);
		assert_int_equal(th[i].late, 0);
	}
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.next_lsn, T * 300 + 1);
	assert_int_equal(info.durable_lsn, T * 300);
	assert_true(info.syncs >= 1 && info.syncs <= T * 300);
	print_message("group commit: %d SYNC threads, %d appends took %" PRIu64 " fdatasyncs\n", T, T * 300,
	    info.syncs);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.records, T * 300);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
}

/* The hand-over: A leads a round whose fdatasync is slow; B appends
 * during it and waits for the next round; A's thread then makes no more
 * calls. The end of A's round must wake B to lead its own round (else B
 * sleeps forever: the test hangs). */
struct ho_ctx {
	struct memfs *fs;
	int armed;     /* atomic: delay the next datasync */
	int b_started; /* atomic: B is about to append */
};
static struct ho_ctx ho;

static int
ho_datasync(void *ctx, int fd)
{
	/* Acquire/release: pairs with the test thread arming and B starting. */
	if (__atomic_exchange_n(&ho.armed, 0, __ATOMIC_ACQ_REL)) {
		for (int i = 0; i < 5000 && !__atomic_load_n(&ho.b_started, __ATOMIC_ACQUIRE); i++)
			usleep(1000);
		usleep(30000); /* let B copy its record and go to sleep */
	}
	return memfs_io.datasync(ctx, fd);
}

static void *
ho_b_main(void *arg)
{
	quay_wal *w = arg;
	uint64_t lsn = 0;
	/* Wait until A's round is in its fdatasync. */
	while (__atomic_load_n(&ho.armed, __ATOMIC_ACQUIRE))
		usleep(100);
	__atomic_store_n(&ho.b_started, 1, __ATOMIC_RELEASE);
	if (quay_wal_append(w, 1, "B", 1, &lsn) != 0 || quay_wal_durable_lsn(w) < lsn)
		return (void *)1;
	return NULL;
}

static void
group_commit_handover(void **state)
{
	(void)state;
	struct memfs fs;
	struct quayi_wal_io io = memfs_io;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	pthread_t b;
	void *res = (void *)2;

	io.datasync = ho_datasync;
	memfs_init(&fs, 101);
	memset(&ho, 0, sizeof(ho));
	assert_int_equal(quayi_wal_open_io(DIR_, &o, &io, &fs, &w), 0);
	__atomic_store_n(&ho.armed, 1, __ATOMIC_RELEASE);
	pthread_create(&b, NULL, ho_b_main, w);
	assert_int_equal(quay_wal_append(w, 1, "A", 1, NULL), 0); /* leads, slow sync */
	pthread_join(b, &res);
	assert_null(res);
	struct quay_wal_info info;
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.durable_lsn, 2);
	assert_int_equal(info.syncs, 2);
	assert_int_equal(quay_wal_close(w), 0);
	memfs_fini(&fs);
}

/* Power cuts under concurrent SYNC appenders (the group commit with its
 * gathering, src/wal.c WRITING): 6 threads append single records and
 * batches of 2 on a file system whose fdatasync takes 20-300 us (so that
 * rounds overlap appends, waiters pile up and the next round gathers
 * them), until the power is cut at a random file operation. Every
 * append that returned 0 must be back after recovery, exactly once and
 * in its thread's order; the first error of every thread is -EIO (the
 * WAL failed) and nothing hangs: every waiter of a round or a gather
 * is told. QUAY_WAL_GATHER_TRIALS sets the trials (default 60). */
enum { PG_T = 6, PG_N = 150 };

struct pg_thread {
	quay_wal *w;
	int id;
	uint32_t acked; /* records 0 .. acked-1 of this thread returned 0 */
	int err;        /* the first error */
	uint64_t late;  /* returned 0 before durable_lsn covered it */
};

static uint64_t pg_rng_seed;

static int
pg_datasync(void *ctx, int fd)
{
	/* Relaxed: a per-call delay, any value will do. */
	uint64_t r = __atomic_add_fetch(&pg_rng_seed, 0x9E3779B97F4A7C15ull, __ATOMIC_RELAXED);
	usleep((useconds_t)(20 + (r >> 33) % 280));
	return memfs_io.datasync(ctx, fd);
}

static void *
pg_main(void *arg)
{
	struct pg_thread *t = arg;
	uint8_t buf[2][48];

	for (uint32_t i = 0; i < PG_N;) {
		uint64_t lsn = 0;
		uint32_t n = i % 5 == 3 && i + 1 < PG_N ? 2 : 1;
		quay_wal_rec recs[2];
		int r;

		for (uint32_t k = 0; k < n; k++) {
			uint32_t seq = i + k;
			memset(buf[k], 0, sizeof(buf[k]));
			memcpy(buf[k], &t->id, sizeof(t->id));
			memcpy(buf[k] + 4, &seq, sizeof(seq));
			recs[k] = (quay_wal_rec){ 1, buf[k], 8 + (size_t)(seq % 40) };
		}
		r = n == 1 ? quay_wal_append(t->w, 1, recs[0].data, recs[0].len, &lsn) :
		             quay_wal_appendv(t->w, recs, 2, &lsn);
		if (r != 0) {
			t->err = r;
			break;
		}
		if (quay_wal_durable_lsn(t->w) < lsn)
			t->late++;
		i += n;
		t->acked = i;
	}
	return NULL;
}

struct pg_check {
	uint32_t next[PG_T];
	uint64_t bad;
};

static int
pg_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct pg_check *c = ctx;
	int id;
	uint32_t seq;

	(void)lsn;
	(void)type;
	memcpy(&id, data, 4);
	memcpy(&seq, (const uint8_t *)data + 4, 4);
	if (len < 8 || id < 0 || id >= PG_T || seq != c->next[id] || len != 8 + seq % 40)
		c->bad++;
	else
		c->next[id] = seq + 1;
	return 0;
}

static void
group_commit_power_cuts(void **state)
{
	(void)state;
	uint64_t trials = env_u64("QUAY_WAL_GATHER_TRIALS", 60), rng = 4321;
	uint64_t acked_total = 0, back_total = 0, lost = 0, bad = 0, wrong_err = 0, late = 0, syncs = 0;
	struct quayi_wal_io io = memfs_io;

	io.datasync = pg_datasync;
	for (uint64_t t = 0; t < trials; t++) {
		struct memfs fs;
		quay_wal *w;
		struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
		struct pg_thread th[PG_T];
		pthread_t tid[PG_T];
		struct quay_wal_info info;
		struct pg_check c;

		memfs_init(&fs, 500 + t);
		assert_int_equal(quayi_wal_open_io(DIR_, &o, &io, &fs, &w), 0);
		pthread_mutex_lock(&fs.mu);
		fs.crash_policy = (int)(t % 4);
		fs.crash_at_op = fs.ops + 20 + (long)(qt_rand(&rng) % 600);
		pthread_mutex_unlock(&fs.mu);
		for (int i = 0; i < PG_T; i++) {
			th[i] = (struct pg_thread){ w, i, 0, 0, 0 };
			assert_int_equal(pthread_create(&tid[i], NULL, pg_main, &th[i]), 0);
		}
		for (int i = 0; i < PG_T; i++)
			pthread_join(tid[i], NULL);
		assert_int_equal(quay_wal_info(w, &info), 0);
		syncs += info.syncs;
		if (!fs.dead)
			memfs_crash(&fs, fs.crash_policy);
		(void)quay_wal_close(w);
		memfs_revive(&fs);
		memset(&c, 0, sizeof(c));
		assert_int_equal(mopen(&fs, &o, &w), 0);
		assert_int_equal(quay_wal_replay(w, 1, pg_visit, &c), 0);
		assert_int_equal(quay_wal_close(w), 0);
		bad += c.bad;
		for (int i = 0; i < PG_T; i++) {
			acked_total += th[i].acked;
			back_total += c.next[i];
			lost += c.next[i] < th[i].acked ? th[i].acked - c.next[i] : 0;
			wrong_err += th[i].err != 0 && th[i].err != -EIO;
			late += th[i].late;
		}
		memfs_fini(&fs);
	}
	print_message("group commit power cuts: %" PRIu64 " trials x %d SYNC threads, %" PRIu64
	              " fdatasyncs; appends acked %" PRIu64 ", back %" PRIu64 "; acked lost %" PRIu64
	              ", out of order %" PRIu64 ", acked before durable %" PRIu64 ", errors not -EIO %" PRIu64
	              "\n",
	    trials, PG_T, syncs, acked_total, back_total, lost, bad, late, wrong_err);
	assert_int_equal(lost, 0);
	assert_int_equal(bad, 0);
	assert_int_equal(late, 0);
	assert_int_equal(wrong_err, 0);
}

/* ---- the real file system --------------------------------------------- */

static void
posix_round_trip(void **state)
{
	(void)state;
	char tmpl[512];
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpl, sizeof(tmpl), "%s/quay-wal-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(tmpl));
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/log", tmpl);

	struct model m = { 0 };
	quay_wal *w, *w2;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	struct quay_wal_info info;
	uint64_t key = 1, rng = 5, bad = 0;

	assert_int_equal(quay_wal_open(dir, &o, &w), 0); /* creates dir */
	assert_int_equal(quay_wal_open(dir, &o, &w2), -EAGAIN);
	for (int i = 0; i < 100; i++)
		assert_int_equal(append_some(w, &m, &key, 1 + qt_rand(&rng) % 3, 2000, &rng, NULL), 0);
	assert_int_equal(quay_wal_durable_lsn(w), m.n);
	quay_wal_info(w, &info);
	assert_true(info.segments > 1);
	assert_true(info.file_bytes >= info.bytes);
	assert_int_equal(quay_wal_checkpoint(w, m.n / 2), 0);
	assert_int_equal(quay_wal_close(w), 0);
	/* Readonly while no writer; then a writer. */
	struct quay_wal_opts ro = o;
	ro.flags = QUAY_WAL_READONLY;
	assert_int_equal(quay_wal_open(dir, &ro, &w2), 0);
	quay_wal_info(w2, &info);
	assert_int_equal(replay_check(w2, &m, m.n / 2, &bad), m.n);
	assert_int_equal(quay_wal_open(dir, &o, &w), 0);
	assert_int_equal(replay_check(w, &m, m.n / 2, &bad), m.n);
	assert_int_equal(quay_wal_close(w2), 0);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(bad, 0);
	/* A file where the directory should be. */
	char file[700];
	snprintf(file, sizeof(file), "%s/plain", tmpl);
	FILE *fp = fopen(file, "w");
	fclose(fp);
	assert_int_equal(quay_wal_open(file, &o, &w), -ENOTDIR);
	unlink(file);
	qt_rm_dir(dir);
	rmdir(tmpl);
	model_free(&m);
}

/* Open names the cause. A missing parent is -ENOENT, a
 * regular file where the directory should be -ENOTDIR, a directory the
 * caller may not enter or write -EACCES; the report keeps the OS errno.
 * EACCES is real: the open runs in a child process that drops to uid
 * 65534 when the test runs as root (root ignores permission bits). */
static int
open_as_nobody(const char *dir, const struct quay_wal_opts *o, int *os_errno)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int res[2] = { 1, 0 };
		struct quay_wal_report rep;
		struct quay_wal_opts c = *o;
		quay_wal *w;
		c.report = &rep;
		if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
			_exit(2);
		res[0] = quay_wal_open(dir, &c, &w);
		res[1] = rep.os_errno;
		if (write(pfd[1], res, sizeof(res)) != (ssize_t)sizeof(res))
			_exit(3);
		_exit(0);
	}
	close(pfd[1]);
	int res[2] = { 1, 0 }, st = 0;
	ssize_t n = read(pfd[0], res, sizeof(res));
	close(pfd[0]);
	waitpid(pid, &st, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0 && n == (ssize_t)sizeof(res));
	*os_errno = res[1];
	return res[0];
}

static void
open_errors_name_the_cause(void **state)
{
	(void)state;
	char tmpl[512], path[700], file[700];
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpl, sizeof(tmpl), "%s/quay-wal-err-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(tmpl));
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	struct quay_wal_report rep;
	quay_wal *w = NULL;
	int e = 0;
	o.report = &rep;

	/* Missing parent. */
	snprintf(path, sizeof(path), "%s/no/such/log", tmpl);
	assert_int_equal(quay_wal_open(path, &o, &w), -ENOENT);
	assert_int_equal(rep.status, -ENOENT);
	assert_int_equal(rep.os_errno, ENOENT);
	assert_non_null(strstr(rep.os_path, "/no/such/log"));
	/* A regular file where the directory should be; and as a parent. */
	snprintf(file, sizeof(file), "%s/plain", tmpl);
	FILE *fp = fopen(file, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(quay_wal_open(file, &o, &w), -ENOTDIR);
	assert_int_equal(rep.os_errno, ENOTDIR);
	assert_string_equal(rep.os_path, file);
	snprintf(path, sizeof(path), "%s/plain/log", tmpl);
	assert_int_equal(quay_wal_open(path, &o, &w), -ENOTDIR);
	struct quay_wal_opts ro = o;
	ro.flags = QUAY_WAL_READONLY;
	assert_int_equal(quay_wal_open(file, &ro, &w), -ENOTDIR);
	assert_int_equal(rep.os_errno, ENOTDIR);
	/* No permission: a directory only root may write, opened as nobody;
	 * and a log directory nobody may not enter. */
	assert_int_equal(chmod(tmpl, 0755), 0);
	snprintf(path, sizeof(path), "%s/log", tmpl);
	assert_int_equal(open_as_nobody(path, &o, &e), -EACCES);
	assert_int_equal(e, EACCES);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(open_as_nobody(path, &o, &e), -EACCES);
	assert_int_equal(e, EACCES);
	assert_int_equal(open_as_nobody(path, &ro, &e), -EACCES);
	assert_int_equal(e, EACCES);
	rmdir(path);
	/* MKDIR_PARENTS creates the missing parents, and the log works. */
	struct quay_wal_opts mp = o;
	mp.flags = QUAY_WAL_MKDIR_PARENTS;
	snprintf(path, sizeof(path), "%s/a//b/log/", tmpl);
	assert_int_equal(quay_wal_open(path, &mp, &w), 0);
	assert_int_equal(rep.status, 0);
	assert_int_equal(rep.os_errno, 0);
	assert_int_equal(quay_wal_append(w, 1, "x", 1, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(quay_wal_open(path, &mp, &w), 0);
	assert_int_equal(rep.records, 1);
	assert_int_equal(quay_wal_close(w), 0);
	/* ... but not through a file. */
	snprintf(path, sizeof(path), "%s/plain/x/log", tmpl);
	assert_int_equal(quay_wal_open(path, &mp, &w), -ENOTDIR);
	assert_int_equal(rep.os_errno, ENOTDIR);
	assert_string_equal(rep.os_path, file);
	unlink(file);
	qt_rm_dir(tmpl);
}

/* Reopening a small log in a large (default 64 MiB,
 * preallocated) segment must take memory in proportion to the data, not
 * to the segment. Measured as the process's peak resident set (VmHWM of
 * /proc/self/status, reset through /proc/self/clear_refs) across the
 * open: a memory bound, not a timing. */
static long
proc_kib(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, key, strlen(key)) == 0)
			v = strtol(line + strlen(key), NULL, 10);
	fclose(f);
	return v;
}

static bool
reset_peak_rss(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	if (f == NULL)
		return false;
	bool ok = fputs("5", f) >= 0;
	return fclose(f) == 0 && ok;
}

static void
reopen_memory_scales_with_data(void **state)
{
	(void)state;
	char tmpl[512], dir[600];
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpl, sizeof(tmpl), "%s/quay-wal-rss-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(tmpl));
	snprintf(dir, sizeof(dir), "%s/log", tmpl);
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT; /* 64 MiB segments */
	struct quay_wal_report rep;
	struct quay_wal_info info;
	quay_wal *w;
	uint8_t rec[400];
	o.sync_mode = QUAY_WAL_NONE;
	assert_int_equal(quay_wal_open(dir, &o, &w), 0);
	for (int i = 0; i < 400; i++) {
		fill_payload(rec, sizeof(rec), (uint64_t)i);
		assert_int_equal(quay_wal_append(w, 1, rec, sizeof(rec), NULL), 0);
	}
	assert_int_equal(quay_wal_sync(w, 0), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(quay_wal_close(w), 0);
	if (!reset_peak_rss() || proc_kib("VmHWM:") < 0) {
		qt_rm_dir(tmpl);
		skip();
	}
	long before = proc_kib("VmRSS:");
	o.report = &rep;
	assert_int_equal(quay_wal_open(dir, &o, &w), 0);
	long peak = proc_kib("VmHWM:");
	assert_int_equal(rep.records, 400);
	uint64_t seen = 0;
	assert_int_equal(quay_wal_replay(w, 1, count_visit, &seen), 0);
	assert_int_equal(seen, 400);
	assert_int_equal(quay_wal_close(w), 0);
	long grew = peak - before;
	printf("reopen: %" PRIu64 " bytes of log in a %" PRIu64 "-byte segment; peak RSS grew %ld KiB\n",
	    info.bytes, info.segment_bytes, grew);
	/* The data is 172,832 bytes; the segment 65,536 KiB. Allow 4 MiB
	 * for the ring buffer's touched pages, stacks and the like. */
	assert_true(grew < 4096);
	qt_rm_dir(tmpl);
}

/* The disk blocks of the files in dir. */
static uint64_t
dir_disk_bytes(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t sum = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		char p[1024];
		struct stat st;
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (stat(p, &st) == 0)
			sum += (uint64_t)st.st_blocks * 512u;
	}
	closedir(d);
	return sum;
}

/* Issue 11: a tiny log in the default 64 MiB segments used to take the
 * whole segment on disk. Preallocation now follows the data (64 KiB,
 * doubled as needed): below twice the data plus 64 KiB, counted in the
 * file's blocks (st_blocks). A segment preallocated whole (by an older
 * version) is trimmed at reopen. */
static void
small_log_small_disk(void **state)
{
	(void)state;
	char tmpl[512];
	const char *tmp = getenv("TMPDIR");
	snprintf(tmpl, sizeof(tmpl), "%s/quay-wal-disk-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(tmpl));
	char dir[600], seg[700];
	snprintf(dir, sizeof(dir), "%s/log", tmpl);
	snprintf(seg, sizeof(seg), "%s/0000000000000001.wal", dir);

	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT; /* SYNC, 64 MiB segments */
	struct quay_wal_info info;
	uint64_t key = 1, rng = 9, bad = 0;

	assert_int_equal(quay_wal_open(dir, &o, &w), 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(append_some(w, &m, &key, 1, 200, &rng, NULL), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	uint64_t tiny = dir_disk_bytes(dir);
	print_message("small log: %" PRIu64 " bytes of log, %" PRIu64 " preallocated, %" PRIu64
	              " on disk (segment_bytes %" PRIu64 ")\n",
	    info.bytes, info.file_bytes, tiny, info.segment_bytes);
	assert_int_equal(info.segment_bytes, QUAY_WAL_SEGMENT_DEFAULT);
	assert_true(info.bytes < (16 << 10));
	assert_int_equal(info.file_bytes, 64 << 10);
	assert_true(tiny <= (128 << 10)); /* 64 KiB and the file system's own blocks */
	/* Growing: about 3 MiB more, still in the first segment. */
	while (info.bytes < (3u << 20)) {
		assert_int_equal(append_some(w, &m, &key, 1 + qt_rand(&rng) % 4, 4000, &rng, NULL), 0);
		assert_int_equal(quay_wal_info(w, &info), 0);
	}
	uint64_t grown = dir_disk_bytes(dir);
	print_message("grown log: %" PRIu64 " bytes of log, %" PRIu64 " preallocated, %" PRIu64 " on disk\n",
	    info.bytes, info.file_bytes, grown);
	assert_int_equal(info.segments, 1);
	assert_true(info.file_bytes >= info.bytes);
	assert_true(info.file_bytes < 2 * info.bytes + (64 << 10));
	assert_true(grown <= info.file_bytes + (64 << 10));
	assert_int_equal(quay_wal_close(w), 0);
	/* An older version's whole-segment preallocation is trimmed. */
	int fd = open(seg, O_RDWR);
	assert_true(fd >= 0);
	int fr = posix_fallocate(fd, 0, (off_t)QUAY_WAL_SEGMENT_DEFAULT);
	close(fd);
	if (fr == 0) {
		assert_true(dir_disk_bytes(dir) >= QUAY_WAL_SEGMENT_DEFAULT);
		assert_int_equal(quay_wal_open(dir, &o, &w), 0);
		assert_int_equal(quay_wal_info(w, &info), 0);
		uint64_t trimmed = dir_disk_bytes(dir);
		print_message("whole 64 MiB segment reopened: %" PRIu64 " on disk\n", trimmed);
		assert_true(info.file_bytes < 2 * info.bytes + (64 << 10));
		assert_true(trimmed <= info.file_bytes + (64 << 10));
		assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
		assert_int_equal(quay_wal_close(w), 0);
	}
	assert_int_equal(quay_wal_open(dir, &o, &w), 0);
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(bad, 0);
	model_free(&m);
	qt_rm_dir(tmpl);
}

/* Growing the preallocation with no room left fails that append only
 * (-ENOSPC, not sticky), as a segment that cannot be created does. */
static void
prealloc_growth_enospc(void **state)
{
	(void)state;
	struct memfs fs;
	struct model m = { 0 };
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 1 << 20);
	struct quay_wal_info info;
	uint64_t key = 1, rng = 13, bad = 0;
	int r = 0;

	memfs_init(&fs, 61);
	fs.quota = 200 << 10; /* 64 and 128 KiB fit, 256 KiB does not */
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_true(memfs_used(&fs) <= (64 << 10));
	for (int i = 0; i < 1000 && r == 0; i++)
		r = append_some(w, &m, &key, 1, 2000, &rng, NULL);
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.failed, 0);
	assert_int_equal(info.segments, 1);
	assert_int_equal(info.file_bytes, 128 << 10);
	assert_true(info.bytes > (64 << 10));
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	fs.quota = 0; /* space returns */
	assert_int_equal(append_some(w, &m, &key, 1, 2000, &rng, NULL), 0);
	assert_int_equal(quay_wal_info(w, &info), 0);
	assert_int_equal(info.file_bytes, 256 << 10);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(replay_check(w, &m, 1, &bad), m.n);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(bad, 0);
	model_free(&m);
	memfs_fini(&fs);
}

/* ---- the scanner on memory (the fuzzer's entry) --------------------------- */

/* The WAL-R3 proof search over a torn tail of header-shaped message bodies
 * costs a bounded number of CRC bytes: a 4 MiB segment whose first
 * record is damaged, followed by a header-shaped candidate in every
 * 32-byte block. Candidates claiming the rest of the segment as payload
 * (more than max_record) or an LSN no record that far along can have are
 * skipped; the others cost at most max_record each. Without those two
 * filters the search checksums about 90 GiB here (quadratic in the
 * segment size). A genuine proof record at the end is still found. */
static void
proof_search_is_bounded(void **state)
{
	(void)state;
	const size_t seg = 4 << 20;
	const uint32_t max_record = 4096, salt = 0x5eed1234u;
	uint8_t *b = calloc(1, seg);
	struct quayi_wal_scan s;
	uint64_t blocks = 0, plausible = 0;

	assert_non_null(b);
	quayi_le_put32(b, QUAYI_WAL_MAGIC);
	b[4] = QUAYI_WAL_VERSION;
	b[6] = QUAYI_WAL_SEG_HDR;
	quayi_le_put32(b + 8, salt);
	quayi_le_put64(b + 16, 1);
	quayi_le_put32(b + 28, quayi_crc32c(0, b, 28));
	/* The first record (LSN 1): a header with a wrong CRC. */
	quayi_le_put32(b + 32, 0xdeadbeefu);
	quayi_le_put64(b + 40, 1);
	quayi_le_put32(b + 48, 1);
	quayi_le_put32(b + 52, QUAYI_WAL_F_COMMIT);
	/* Candidates: last_lsn is 0, so LSN 2 with synced 1 proves damage. */
	size_t stop = seg - 4096;
	for (size_t q = 64; q + QUAYI_WAL_REC_HDR <= stop; q += QUAYI_WAL_REC_HDR, blocks++) {
		uint8_t *h = b + q;
		switch (blocks % 3) {
		case 0: /* the rest of the segment as payload: > max_record
			 * but near the end (there it is plausible too) */
			quayi_le_put32(h + 4, (uint32_t)((seg - q - QUAYI_WAL_REC_HDR) & ~(size_t)7));
			quayi_le_put64(h + 8, 2);
			if (quayi_le_get32(h + 4) <= max_record)
				plausible++;
			break;
		case 1: /* an LSN far past what fits between the damage and q */
			quayi_le_put32(h + 4, 64);
			quayi_le_put64(h + 8, (uint64_t)1 << 40);
			break;
		default: /* plausible: costs one CRC of max_record bytes */
			plausible++;
			quayi_le_put32(h + 4, max_record);
			quayi_le_put64(h + 8, 2);
			break;
		}
		quayi_le_put32(h, 0x0badc0deu);
		quayi_le_put32(h + 16, 1);
		quayi_le_put64(h + 24, 1);
	}
	/* Zero bytes from stop: the tail of the segment (a real one is
	 * preallocated with zeros); the scan sees the non-zero end at stop. */
	memset(b + stop, 0, seg - stop);
	memset(&s, 0, sizeof(s));
	s.buf = b;
	s.len = seg;
	s.last = true;
	s.max_record = max_record;
	assert_int_equal(quayi_wal_scan(&s), 1);
	assert_int_equal(s.end, QUAYI_WAL_SEG_HDR);
	assert_int_equal(s.reason, QUAY_WAL_R_CRC);
	assert_false(s.proven);
	/* The bound: every 8-aligned candidate at most max_record. */
	uint64_t bound = (s.nonzero_end - s.end) / 8 * max_record;
	print_message("proof search over %zu bytes, %" PRIu64 " header-shaped blocks: %" PRIu64
	              " CRC bytes (bound %" PRIu64 ")\n",
	    seg, blocks, s.proof_bytes, bound);
	assert_true(s.proof_bytes <= bound);
	/* Exactly the plausible ones were checksummed (the candidates at
	 * the offsets inside each block fail the field or LSN filters). */
	assert_int_equal(s.proof_bytes, plausible * max_record);

	/* A genuine proof record after them all is still found. */
	size_t q = stop;
	uint8_t *h = b + q;
	quayi_le_put32(h + 4, 8);
	quayi_le_put64(h + 8, 2);
	quayi_le_put32(h + 16, 1);
	quayi_le_put64(h + 24, 1);
	memset(h + QUAYI_WAL_REC_HDR, 0x77, 8);
	uint32_t c = quayi_crc32c(salt, h + QUAYI_WAL_REC_HDR, 8);
	quayi_le_put32(h, quayi_crc32c(c, h + 4, QUAYI_WAL_REC_HDR - 4));
	assert_int_equal(quayi_wal_scan(&s), -EBADMSG);
	assert_true(s.proven);
	free(b);
}

static void
scan_memory_edges(void **state)
{
	(void)state;
	struct quayi_wal_scan s;
	uint8_t z[64];
	memset(z, 0, sizeof(z));
	memset(&s, 0, sizeof(s));
	s.buf = z;
	s.len = 0;
	s.last = true;
	assert_int_equal(quayi_wal_scan(&s), -EBADMSG);
	assert_int_equal(s.reason, QUAY_WAL_R_HEADER);
	assert_false(s.proven);
	s.len = sizeof(z);
	assert_int_equal(quayi_wal_scan(&s), -EBADMSG);
	assert_false(s.proven);
	/* A valid empty segment: header only. */
	struct memfs fs;
	quay_wal *w;
	struct quay_wal_opts o = opts_mode(QUAY_WAL_SYNC, 64 << 10);
	memfs_init(&fs, 80);
	assert_int_equal(mopen(&fs, &o, &w), 0);
	assert_int_equal(quay_wal_close(w), 0);
	struct memfs_file *f = memfs_file(&fs, "0000000000000001.wal");
	s.buf = f->cur;
	s.len = f->cur_len;
	assert_int_equal(quayi_wal_scan(&s), 0);
	assert_int_equal(s.first_lsn, 1);
	assert_int_equal(s.last_lsn, 0);
	assert_int_equal(s.end, QUAYI_WAL_SEG_HDR);
	s.expect_lsn = 2;
	assert_int_equal(quayi_wal_scan(&s), -EBADMSG);
	assert_int_equal(s.reason, QUAY_WAL_R_GAP);
	memfs_fini(&fs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(crc32c_known_vectors),
		QT_TEST(crc32c_hw_matches_sw),
		QT_TEST(open_rejects_bad_args),
		QT_TEST(calls_reject_bad_args),
		QT_TEST(reason_strings),
		QT_TEST(round_trip_sync),
		QT_TEST(round_trip_interval),
		QT_TEST(round_trip_none),
		QT_TEST(none_mode_durable_only_after_sync),
		QT_TEST(checkpoint_deletes_segments),
		QT_TEST(readonly_open_changes_nothing),
		QT_TEST(tail_cut_erases_stale_records),
		QT_TEST(proof_record_ending_in_zeros),
		QT_TEST(batch_limit_is_exact),
		QT_TEST(corruption_in_sealed_segment_is_ebadmsg),
		QT_TEST(salvage_keeps_checkpoint),
		QT_TEST(bad_segment_files),
		QT_TEST(scan_memory_edges),
		QT_TEST(proof_search_is_bounded),
		QT_TEST(group_commit_threads),
		QT_TEST(sync_counter),
		QT_TEST(sync_zero_ahead),
		QT_TEST(group_commit_many_waiters),
		QT_TEST(group_commit_handover),
		QT_TEST(group_commit_power_cuts),
		QT_TEST(posix_round_trip),
		QT_TEST(open_errors_name_the_cause),
		QT_TEST(reopen_memory_scales_with_data),
		QT_TEST(small_log_small_disk),
		QT_TEST(prealloc_growth_enospc),
		QT_TEST(w2_truncation),
		QT_TEST(w3_bit_flips),
		QT_TEST(w4_power_cuts),
		QT_TEST(w5_fsync_eio),
		QT_TEST(w6_enospc),
		QT_TEST(w7_short_writes),
	};
	return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
