/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of the WAL reader (TESTING.md W8). The input is a mode
 * byte (bit 0: recompute the checksums first, so that mutations reach the
 * record rules) and then one segment file image.
 *
 * 1. The recovery scanner over memory (quayi_wal_scan), as the last and
 *    as a sealed segment: it must not crash, must stay inside the buffer
 *    and allocate nothing, and its output must be a prefix: end within
 *    the input, the records of [32, end) consecutive LSNs from first_lsn
 *    ending with a commit, and scanning just that prefix again gives the
 *    same result with a clean end.
 * 2. The whole open path (READONLY, then SALVAGE) on the in-memory file
 *    system of tests/wal/wal_memfs.h, and a replay: the records replayed
 *    are exactly the scanner's caller records.
 *
 *   build-asan/tests/fuzz/fuzz_wal -max_total_time=3600 CORPUS_DIR tests/fuzz/corpus_wal
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/wal.h>

#include "../../src/le.h"
#include "../../src/wal_internal.h"
#include "wal/wal_memfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) \
	do { \
		if (!(x)) { \
			fprintf(stderr, "fuzz_wal: check failed: %s (line %d)\n", #x, __LINE__); \
			abort(); \
		} \
	} while (0)

struct walk_state {
	uint64_t next_lsn;
	uint64_t n, user;
	uint32_t last_flags;
};

static int
walk_fn(void *ctx, uint64_t lsn, uint32_t type, uint32_t flags, const uint8_t *d, uint32_t len)
{
	struct walk_state *s = ctx;
	(void)d;
	(void)len;
	CHECK(lsn == s->next_lsn);
	CHECK(type != 0);
	s->next_lsn++;
	s->n++;
	s->user += type <= QUAY_WAL_TYPE_MAX;
	s->last_flags = flags;
	return 0;
}

static int
count_fn(void *ctx, uint64_t lsn, uint32_t type, const void *d, size_t len)
{
	uint64_t *n = ctx;
	(void)lsn;
	(void)d;
	(void)len;
	CHECK(type >= 1 && type <= QUAY_WAL_TYPE_MAX);
	(*n)++;
	return 0;
}

static void
check_scan(const uint8_t *data, size_t size, bool last)
{
	struct quayi_wal_scan s;

	memset(&s, 0, sizeof(s));
	s.buf = data;
	s.len = size;
	s.last = last;
	int r = quayi_wal_scan(&s);
	CHECK(r == 0 || r == 1 || r == -EBADMSG);
	if (!last)
		CHECK(r != 1);
	if (s.reason == QUAY_WAL_R_HEADER)
		return;
	CHECK(s.end >= QUAYI_WAL_SEG_HDR && s.end <= size && s.end % 8 == 0);
	CHECK(s.bad_off == s.end);
	CHECK(s.last_lsn + 1 >= s.first_lsn);
	CHECK(s.records == s.last_lsn + 1 - s.first_lsn);
	CHECK(s.user_records <= s.records);
	CHECK(s.nonzero_end <= size);
	struct walk_state ws = { s.first_lsn, 0, 0, QUAYI_WAL_F_COMMIT };
	CHECK(quayi_wal_walk(data, s.end, walk_fn, &ws) == 0);
	CHECK(ws.n == s.records && ws.user == s.user_records);
	CHECK(ws.n == 0 || (ws.last_flags & QUAYI_WAL_F_COMMIT));
	/* The prefix alone scans clean, to the same end. */
	struct quayi_wal_scan p;
	memset(&p, 0, sizeof(p));
	p.buf = data;
	p.len = (size_t)s.end;
	p.last = last;
	CHECK(quayi_wal_scan(&p) == 0);
	CHECK(p.end == s.end && p.last_lsn == s.last_lsn && p.records == s.records);
	/* The same image with its zero end given as zero_tail (how recovery
	 * reads a preallocated segment) scans the same. */
	size_t nz = size;
	while (nz > 0 && data[nz - 1] == 0)
		nz--;
	size_t keep = ((nz + 7u) & ~(size_t)7u) + QUAYI_WAL_REC_HDR;
	if (keep < size) {
		struct quayi_wal_scan z;
		memset(&z, 0, sizeof(z));
		z.buf = data;
		z.len = keep;
		z.zero_tail = size - keep;
		z.last = last;
		CHECK(quayi_wal_scan(&z) == r);
		CHECK(z.end == s.end && z.last_lsn == s.last_lsn && z.records == s.records &&
		    z.reason == s.reason && z.proven == s.proven && z.nonzero_end == s.nonzero_end &&
		    z.checkpoint == s.checkpoint && z.uncommitted == s.uncommitted);
	}
}

static void
check_open(const uint8_t *data, size_t size, unsigned flags)
{
	struct memfs fs;
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	struct quay_wal_report rep;
	quay_wal *w;
	char name[32];
	uint64_t first = 1;

	if (size >= 24)
		memcpy(&first, data + 16, 8); /* little-endian hosts: the header's first LSN */
	if (first == 0)
		first = 1;
	snprintf(name, sizeof(name), "%016" PRIx64 ".wal", first);
	memfs_init(&fs, size);
	memfs_put(&fs, name, data, size);
	o.flags = flags;
	o.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	o.report = &rep;
	int r = quayi_wal_open_io("/fuzz", &o, &memfs_io, &fs, &w);
	CHECK(r == 0 || r == -EBADMSG);
	CHECK(rep.status == r);
	if (r == 0) {
		uint64_t n = 0;
		CHECK(quay_wal_replay(w, 1, count_fn, &n) == 0);
		CHECK(n == rep.records);
		struct quay_wal_info info;
		CHECK(quay_wal_info(w, &info) == 0);
		CHECK(info.records == n);
		CHECK(quay_wal_close(w) == 0);
	} else {
		CHECK(rep.corrupt || rep.reason != QUAY_WAL_R_NONE);
	}
	memfs_fini(&fs);
}

/* Mode 1: make the checksums right, so that mutations explore the record
 * rules (LSNs, flags, lengths, commits, padding, proofs) instead of dying
 * at the first CRC. The header's magic, version and size are set, its CRC
 * fixed, and every record that fits gets its CRC recomputed. */
static void
fix_crcs(uint8_t *b, size_t size)
{
	if (size < QUAYI_WAL_SEG_HDR)
		return;
	quayi_le_put32(b, QUAYI_WAL_MAGIC);
	b[4] = QUAYI_WAL_VERSION;
	b[5] = 0;
	b[6] = QUAYI_WAL_SEG_HDR;
	b[7] = 0;
	quayi_le_put32(b + 28, quayi_crc32c(0, b, 28));
	uint32_t salt = quayi_le_get32(b + 8);
	size_t off = QUAYI_WAL_SEG_HDR;
	while (off + QUAYI_WAL_REC_HDR <= size) {
		uint32_t len = quayi_le_get32(b + off + 4);
		uint64_t sz = quayi_wal_rec_size(len);
		if (sz > size - off)
			break;
		uint32_t c = quayi_crc32c(salt, b + off + QUAYI_WAL_REC_HDR, len);
		quayi_le_put32(b + off, quayi_crc32c(c, b + off + 4, QUAYI_WAL_REC_HDR - 4));
		off += (size_t)sz;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Byte 0: mode (bit 0: fix checksums); the rest: the segment image. */
	if (size < 1 || size > (1u << 20))
		return 0;
	uint8_t *img = malloc(size);
	memcpy(img, data + 1, size - 1);
	size--;
	if (data[0] & 1)
		fix_crcs(img, size);
	check_scan(img, size, true);
	check_scan(img, size, false);
	check_open(img, size, QUAY_WAL_READONLY);
	check_open(img, size, QUAY_WAL_READONLY | QUAY_WAL_SALVAGE);
	free(img);
	return 0;
}
