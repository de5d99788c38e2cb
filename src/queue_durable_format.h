/* SPDX-License-Identifier: MIT */
/*
 * The durable queue's records in the WAL: the one description of their
 * layout, used by the queue that writes and replays them
 * (src/queue_durable.c) and by the tool that decodes them
 * (tools/quay-wal.c). docs/DURABILITY.md gives the same table in prose.
 * Self-contained (C11, <stdint.h> only): never installed.
 *
 * All integers little-endian. Record types (WAL caller types):
 *
 *   ADD   0x51440001  a message enters queue qid (its full image)
 *   DEL   0x51440002  a message leaves queue qid (24 bytes)
 *   RETRY 0x51440003  a delivery's count (failed, or about to be handed
 *                     out: not-before 0): attempts, not-before (32 bytes)
 *   NAME  0x51440004  the name of queue qid (16 bytes + the name)
 *   DEDUP 0x51440005  a key of queue qid's dedup window and its accept
 *                     time (40 bytes), written by compaction
 *
 * Compatibility: a reader ignores a record type of the 0x5144xxxx range
 * it does not know (the queue's replay always has: NAME was added later,
 * issue 11, and logs written before it have none, so a queue id may have
 * no name: show its hash). The layout of a known type never changes; a
 * new layout is a new type.
 */
#ifndef QUAY_QUEUE_DURABLE_FORMAT_H
#define QUAY_QUEUE_DURABLE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Record types (their one definition). */
#define QUAYI_DQ_ADD 0x51440001u
#define QUAYI_DQ_DEL 0x51440002u
#define QUAYI_DQ_RETRY 0x51440003u
#define QUAYI_DQ_NAME 0x51440004u
#define QUAYI_DQ_DEDUP 0x51440005u

/* Common to every type: the queue id (FNV-1a 64 of the queue's name,
 * quayi_dqf_qid) and, but in NAME, the durable id. */
#define QUAYI_DQF_QID 0u
#define QUAYI_DQF_DID 8u /* ADD: 0 means the record's own LSN (a send) */

/* ADD: a fixed part of QUAYI_DQ_ADD_HDR bytes, then reply-to bytes, then
 * nheaders x { u8 klen, u32 vlen, key, value }, then the body; the
 * record's length is exactly that. */
#define QUAYI_DQF_ADD_ATTEMPTS 16u    /* u32 deliveries whose failure was logged */
#define QUAYI_DQF_ADD_PRIORITY 20u    /* u8 */
#define QUAYI_DQF_ADD_FLAGS 21u       /* u8 bit 0: has reply-to; bits 1..3: origin */
#define QUAYI_DQF_ADD_NHEADERS 22u    /* u16 */
#define QUAYI_DQF_ADD_CREATED 24u     /* i64 ns */
#define QUAYI_DQF_ADD_ENQUEUED 32u    /* i64 ns */
#define QUAYI_DQF_ADD_NOT_BEFORE 40u  /* i64 ns, 0: none */
#define QUAYI_DQF_ADD_EXPIRES 48u     /* i64 ns, 0: none */
#define QUAYI_DQF_ADD_CORRELATION 56u /* u64 */
#define QUAYI_DQF_ADD_BODY_LEN 64u    /* u32 */
#define QUAYI_DQF_ADD_REPLY_LEN 68u   /* u16; then u16 zero */
#define QUAYI_DQ_ADD_HDR 72u
#define QUAYI_DQF_HDR_ENTRY 5u /* a header's u8 klen + u32 vlen */

/* ADD origins (flags bits 1..3). */
#define QUAYI_DQF_O_SEND 0u
#define QUAYI_DQF_O_DEAD 1u
#define QUAYI_DQF_O_REDRIVE 2u
#define QUAYI_DQF_O_COPY 3u /* a compaction copy */

/* DEL: qid, did, u8 why, 7 zero bytes. */
#define QUAYI_DQF_DEL_WHY 16u
#define QUAYI_DQ_DEL_LEN 24u
/* why (equal to src/queue_log.h's enum quayi_qlog_why, checked in src/queue_durable.c). */
#define QUAYI_DQF_WHY_ACK 1u       /* acknowledged */
#define QUAYI_DQF_WHY_DROP 2u      /* dropped by the failure policy */
#define QUAYI_DQF_WHY_DEAD 3u      /* dead-lettered to the DLQ */
#define QUAYI_DQF_WHY_DEAD_DROP 4u /* dead letter dropped for want of a DLQ */
#define QUAYI_DQF_WHY_REDRIVE 5u   /* redriven */
#define QUAYI_DQF_WHY_MAX 5u

/* RETRY: qid, did, u32 attempts, u32 zero, i64 not_before_ns. */
#define QUAYI_DQF_RETRY_ATTEMPTS 16u
#define QUAYI_DQF_RETRY_NOT_BEFORE 24u
#define QUAYI_DQ_RETRY_LEN 32u

/* NAME: qid, u16 name_len, 6 zero bytes, then the name (name_len bytes,
 * no NUL; qid == quayi_dqf_qid(name)). Written once per queue (at its
 * first attach to a log that has no NAME for it) and again by every
 * compaction for each open queue, so it outlives the segments it was in. */
#define QUAYI_DQF_NAME_LEN 8u
#define QUAYI_DQ_NAME_HDR 16u

/* DEDUP: qid, u8 kind, 7 zero bytes, i64 accepted_ns (the queue's clock:
 * CLOCK_REALTIME unless the queue was given one), u64 key low, u64 key
 * high. The key: XXH3-128, seed 0, of the quay-dedup-id value (kind 1),
 * or of the body seeded with XXH3-64 of the group id, 0 without one
 * (kind 2, QUAY_QUEUE_CONTENT_DEDUP). Written by every compaction for
 * each live key of each open queue (after its NAME), so that a window
 * outlives the ADD records it was built from: replay takes a queue's
 * window from these and from its send ADDs (origin 0: the key of its
 * image, accepted at its enqueued time). Added by issue 13: older logs
 * have none (their window comes from their send ADDs alone). */
#define QUAYI_DQF_DEDUP_KIND 8u
#define QUAYI_DQF_DEDUP_ACCEPTED 16u
#define QUAYI_DQF_DEDUP_KEY_LO 24u
#define QUAYI_DQF_DEDUP_KEY_HI 32u
#define QUAYI_DQ_DEDUP_LEN 40u
#define QUAYI_DQF_DK_ID 1u      /* a quay-dedup-id */
#define QUAYI_DQF_DK_CONTENT 2u /* content (body and group) */

/* A little-endian unsigned field of n bytes (n <= 8) at p. */
static inline uint64_t
quayi_dqf_get(const void *p, unsigned n)
{
	const unsigned char *b = p;
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

/* The queue id of a name: FNV-1a 64 over its bytes. */
static inline uint64_t
quayi_dqf_qid(const char *name, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * UINT64_C(0x100000001b3);
	return h;
}

#endif /* QUAY_QUEUE_DURABLE_FORMAT_H */
