/* SPDX-License-Identifier: MIT */
/* The WAL's on-disk format constants and its recovery scanner over memory
 * (src/wal_scan.c): what the fuzzer, recovery and replay share. The
 * format itself is described at the top of src/wal.c and in
 * docs/WAL-FORMAT.md. Never installed. */
#ifndef QUAY_WAL_SCAN_H
#define QUAY_WAL_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/wal.h>

/* ---- format (the comment at the top of src/wal.c) -------------------- */

#define QUAYI_WAL_MAGIC 0x4C415751u /* "QWAL" read as little-endian bytes */
#define QUAYI_WAL_VERSION 1u
#define QUAYI_WAL_SEG_HDR 32u
#define QUAYI_WAL_REC_HDR 32u
#define QUAYI_WAL_LSN_MAX ((uint64_t)1 << 62) /* largest first_lsn of a valid header */
#define QUAYI_WAL_F_COMMIT 0x1u               /* last record of a batch */
#define QUAYI_WAL_T_CHECKPOINT 0x80000001u    /* payload: u64 checkpoint LSN */

/* The padded size of a record with a len-byte payload. */
static inline uint64_t
quayi_wal_rec_size(uint64_t len)
{
	return QUAYI_WAL_REC_HDR + ((len + 7u) & ~(uint64_t)7u);
}

/* ---- the recovery scanner over a memory buffer ----------------------- */

/* Scan one segment image buf[0..len) + zero_tail zero bytes. In: buf,
 * len, zero_tail, last (the last
 * segment: damage not proven to lie before durable data is a torn tail
 * rather than corruption), expect_lsn (0: take the header's first LSN;
 * else the header's first LSN must equal it), max_record. Out:
 * everything else.
 * Never allocates; reads only inside buf. */
struct quayi_wal_scan {
	const uint8_t *buf;
	size_t len;
	/* Zero bytes that follow buf[len) in the file (0: buf is the whole
	 * file). Recovery reads a segment only up to a little past its last
	 * non-zero byte and passes the rest of the file size here, so that
	 * a preallocated segment costs memory for its data only.
	 * A record may extend into them (a payload ending in zeros); every
	 * record header starting before the last non-zero byte must lie
	 * within buf. */
	uint64_t zero_tail;
	bool last;
	uint64_t expect_lsn;
	/* The largest payload a record of this log may have (0:
	 * QUAY_WAL_RECORD_MAX); bounds the work of the proof search. */
	uint32_t max_record;

	uint32_t salt;
	uint64_t first_lsn;    /* from the header */
	uint64_t end;          /* offset just past the last committed batch */
	uint64_t last_lsn;     /* LSN of the last committed record (first_lsn - 1: none) */
	uint64_t records;      /* committed records, all types */
	uint64_t user_records; /* committed records of caller types */
	uint64_t checkpoint;   /* highest checkpoint mark (0: none) */
	uint64_t bad_off;      /* first byte not part of the valid prefix */
	uint64_t nonzero_end;  /* end of the non-zero bytes after end */
	uint64_t uncommitted;  /* valid records of an unfinished batch at end */
	uint32_t reason;       /* QUAY_WAL_R_* (NONE: clean end) */
	bool proven;           /* damage lies before data proven durable */
	uint64_t proof_bytes;  /* payload bytes the proof search checksummed */
};

/* Returns 0 (clean: nothing but zero bytes after end), 1 (a tail to cut:
 * damage or an unfinished batch after end, not proven to be corruption),
 * or -EBADMSG (bad header; damage in a non-last segment; damage proven to
 * lie before durable data). */
int quayi_wal_scan(struct quayi_wal_scan *s);

/* Walk the records of a scanned prefix buf[QUAYI_WAL_SEG_HDR..end):
 * fn for each (internal types included); stops at fn's non-zero return. */
int quayi_wal_walk(const uint8_t *buf, uint64_t end,
    int (*fn)(void *ctx, uint64_t lsn, uint32_t type, uint32_t flags, const uint8_t *data, uint32_t len),
    void *ctx);

#endif /* QUAY_WAL_SCAN_H */
