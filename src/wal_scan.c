/* SPDX-License-Identifier: MIT */
/*
 * The WAL's recovery scanner over a memory buffer (src/wal_scan.h): the
 * validity rules WAL-V1..WAL-V5 and the torn-tail proof search (WAL-R3) of the format
 * described at the top of src/wal.c and in docs/WAL-FORMAT.md. It
 * allocates nothing and reads only inside its buffer; recovery, replay
 * and the fuzzer (tests/fuzz/fuzz_wal.c) call it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "le.h"
#include "wal_internal.h"

static bool
all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* ---- the scanner ------------------------------------------------------ */

#define CHECK_ZERO 100 /* an all-zero record header: the end of the data */

static const uint8_t zero_block[4096];

/* The record CRC of the header at off whose payload is len bytes: the
 * payload bytes past the buffer are the zero tail (s->zero_tail). */
static uint32_t
rec_crc(const struct quayi_wal_scan *s, uint64_t off, uint64_t len)
{
	const uint8_t *hdr = s->buf + off;
	uint64_t in = s->len - off - QUAYI_WAL_REC_HDR;
	uint32_t c;

	if (in > len)
		in = len;
	c = quayi_crc32c(s->salt, hdr + QUAYI_WAL_REC_HDR, (size_t)in);
	for (uint64_t z = len - in; z > 0;) {
		size_t k = z < sizeof(zero_block) ? (size_t)z : sizeof(zero_block);
		c = quayi_crc32c(c, zero_block, k);
		z -= k;
	}
	return quayi_crc32c(c, hdr + 4, QUAYI_WAL_REC_HDR - 4);
}

/* Check the record at off (WAL-V1..WAL-V5). Returns 0 and its size, CHECK_ZERO,
 * or a QUAY_WAL_R_* reason. */
static uint32_t
check_rec(const struct quayi_wal_scan *s, uint64_t off, uint64_t expect, uint64_t *size)
{
	uint64_t room = s->len + s->zero_tail - off;
	uint64_t phys = off < s->len ? s->len - off : 0; /* bytes of it in buf */
	const uint8_t *h = s->buf + (off < s->len ? off : s->len);

	if (phys < QUAYI_WAL_REC_HDR) /* in or past the end of buf */
		return all_zero(h, (size_t)phys) ? CHECK_ZERO : QUAY_WAL_R_SHORT;
	if (all_zero(h, QUAYI_WAL_REC_HDR))
		return CHECK_ZERO;
	uint32_t len = quayi_le_get32(h + 4), type = quayi_le_get32(h + 16), flags = quayi_le_get32(h + 20);
	uint64_t lsn = quayi_le_get64(h + 8), synced = quayi_le_get64(h + 24);
	if (lsn != expect)
		return QUAY_WAL_R_LSN;
	if (type == 0 || (flags & ~QUAYI_WAL_F_COMMIT) != 0 || synced >= lsn)
		return QUAY_WAL_R_FIELD;
	uint64_t sz = quayi_wal_rec_size(len);
	if (sz > room)
		return QUAY_WAL_R_SHORT;
	if (rec_crc(s, off, len) != quayi_le_get32(h))
		return QUAY_WAL_R_CRC;
	if (QUAYI_WAL_REC_HDR + (uint64_t)len < phys) {
		uint64_t pad = sz - QUAYI_WAL_REC_HDR - len, in = phys - QUAYI_WAL_REC_HDR - len;
		if (!all_zero(h + QUAYI_WAL_REC_HDR + len, (size_t)(pad < in ? pad : in)))
			return QUAY_WAL_R_PADDING;
	}
	*size = sz;
	return 0;
}

/* WAL-R3: a valid record after the damage whose synced field covers the
 * first LSN after the prefix proves the damage was in durable data.
 * Candidates start at every 8-aligned offset in [from, to), to being the
 * end of the non-zero bytes: a record's header holds a non-zero LSN, so
 * it starts before that end, but it may end well after it (an empty or
 * zero payload, the zero high bytes of its synced field), so the record
 * itself is bounded by the buffer, not by to.
 *
 * The bytes after the damage may be message bodies shaped like headers,
 * and each candidate passing the field filters costs a CRC over its
 * payload; so two more filters that no genuine record fails bound that
 * cost. LSNs are consecutive from s->end and every record takes at least
 * QUAYI_WAL_REC_HDR bytes, so the record at q has an LSN of at most
 * last_lsn + 1 + (q - end) / 32; and no payload exceeds the log's
 * max_record. The search then checksums at most (to - from) / 8 x
 * max_record bytes (s->proof_bytes counts them) rather than a quadratic
 * in the segment size. */
static bool
find_proof(struct quayi_wal_scan *s, uint64_t from, uint64_t to)
{
	uint64_t need = s->last_lsn + 1;
	uint32_t max_len =
	    s->max_record != 0 && s->max_record < QUAY_WAL_RECORD_MAX ? s->max_record : QUAY_WAL_RECORD_MAX;

	for (uint64_t q = from; q < to && q + QUAYI_WAL_REC_HDR <= s->len; q += 8) {
		const uint8_t *h = s->buf + q;
		uint64_t lsn = quayi_le_get64(h + 8), synced = quayi_le_get64(h + 24);
		uint32_t len = quayi_le_get32(h + 4), type = quayi_le_get32(h + 16),
		         flags = quayi_le_get32(h + 20);
		/* Cheap filters first, so garbage costs no CRC. */
		if (lsn <= s->last_lsn || synced < need || synced >= lsn || type == 0 ||
		    (flags & ~QUAYI_WAL_F_COMMIT) != 0)
			continue;
		if (len > max_len || lsn - need > (q - s->end) / QUAYI_WAL_REC_HDR)
			continue;
		if (quayi_wal_rec_size(len) > s->len + s->zero_tail - q)
			continue;
		s->proof_bytes += len;
		if (rec_crc(s, q, len) == quayi_le_get32(h))
			return true;
	}
	return false;
}

int
quayi_wal_scan(struct quayi_wal_scan *s)
{
	const uint8_t *b = s->buf;

	s->salt = 0;
	s->first_lsn = 0;
	s->end = 0;
	s->last_lsn = 0;
	s->records = s->user_records = s->checkpoint = 0;
	s->bad_off = 0;
	s->nonzero_end = 0;
	s->uncommitted = 0;
	s->reason = QUAY_WAL_R_NONE;
	s->proven = false;
	s->proof_bytes = 0;

	if (s->len < QUAYI_WAL_SEG_HDR || quayi_le_get32(b) != QUAYI_WAL_MAGIC ||
	    quayi_le_get16(b + 4) != QUAYI_WAL_VERSION || quayi_le_get16(b + 6) != QUAYI_WAL_SEG_HDR ||
	    quayi_crc32c(0, b, 28) != quayi_le_get32(b + 28) || quayi_le_get64(b + 16) == 0 ||
	    quayi_le_get64(b + 16) > QUAYI_WAL_LSN_MAX) {
		size_t n = s->len;
		while (n > 0 && b[n - 1] == 0)
			n--;
		s->nonzero_end = n;
		s->reason = QUAY_WAL_R_HEADER;
		/* Anything beyond the header region means this file held data. */
		s->proven = n > QUAYI_WAL_SEG_HDR;
		return -EBADMSG;
	}
	s->salt = quayi_le_get32(b + 8);
	s->first_lsn = quayi_le_get64(b + 16);
	if (s->expect_lsn != 0 && s->first_lsn != s->expect_lsn) {
		s->reason = QUAY_WAL_R_GAP;
		s->end = s->bad_off = QUAYI_WAL_SEG_HDR;
		s->last_lsn = s->first_lsn - 1;
		s->proven = true;
		return -EBADMSG;
	}

	uint64_t off = QUAYI_WAL_SEG_HDR, expect = s->first_lsn, bn = 0, bu = 0, bck = 0;
	uint32_t why;
	s->end = off;
	s->last_lsn = s->first_lsn - 1;
	for (;;) {
		uint64_t sz = 0;
		why = check_rec(s, off, expect, &sz);
		if (why != 0)
			break;
		const uint8_t *h = b + off;
		uint32_t type = quayi_le_get32(h + 16);
		bn++;
		if (type <= QUAY_WAL_TYPE_MAX)
			bu++;
		else if (type == QUAYI_WAL_T_CHECKPOINT && quayi_le_get32(h + 4) == 8) {
			uint64_t c = quayi_le_get64(h + QUAYI_WAL_REC_HDR);
			bck = c > bck ? c : bck;
		}
		off += sz;
		if (quayi_le_get32(h + 20) & QUAYI_WAL_F_COMMIT) {
			s->end = off;
			s->last_lsn = expect;
			s->records += bn;
			s->user_records += bu;
			if (bck > s->checkpoint)
				s->checkpoint = bck;
			bn = bu = bck = 0;
		}
		expect++;
	}
	s->bad_off = s->end;
	s->uncommitted = bn;
	uint64_t n = s->len;
	while (n > s->end && b[n - 1] == 0)
		n--;
	if (n <= s->end) {
		/* Clean: zero bytes only (or nothing) after the prefix, which
		 * may end in the zero tail (a payload ending in zeros). */
		s->nonzero_end = s->end;
		return 0;
	}
	s->nonzero_end = n;
	s->reason = (why == CHECK_ZERO) ? (bn > 0 ? QUAY_WAL_R_UNCOMMITTED : QUAY_WAL_R_FIELD) : why;
	s->proven = find_proof(s, s->end + 8, n);
	if (!s->last || s->proven)
		return -EBADMSG;
	return 1;
}

int
quayi_wal_walk(const uint8_t *buf, uint64_t end,
    int (*fn)(void *ctx, uint64_t lsn, uint32_t type, uint32_t flags, const uint8_t *data, uint32_t len),
    void *ctx)
{
	uint64_t off = QUAYI_WAL_SEG_HDR;

	while (off + QUAYI_WAL_REC_HDR <= end) {
		const uint8_t *h = buf + off;
		uint32_t len = quayi_le_get32(h + 4);
		if (quayi_wal_rec_size(len) > end - off)
			return -EBADMSG;
		int r = fn(ctx, quayi_le_get64(h + 8), quayi_le_get32(h + 16), quayi_le_get32(h + 20),
		    h + QUAYI_WAL_REC_HDR, len);
		if (r != 0)
			return r;
		off += quayi_wal_rec_size(len);
	}
	return 0;
}
