/* SPDX-License-Identifier: MIT */
/*
 * Durable queues: the log of a queue created with a WAL (the ops of
 * src/queue_log.h: the queue calls them from its transitions), the
 * live set rebuilt at attach, and compaction (docs/DURABILITY.md has the
 * why, the promises and the limits). This file never sees struct
 * quay_queue: what it needs (name, capacity, the DLQ's log, a restore
 * callback) is handed over at attach.
 *
 * RECORD FORMAT (WAL caller records; all integers little-endian; the
 * offsets are named in src/queue_durable_format.h, shared with quay-wal)
 *
 *   ADD  type 0x51440001: a message enters queue qid
 *      0 u64 qid            FNV-1a 64 of the queue's name
 *      8 u64 did            durable id; 0: this record's own LSN (a send)
 *     16 u32 attempts       deliveries whose failure was logged
 *     20 u8  priority
 *     21 u8  flags          bit 0: has reply-to; bits 1..3: origin
 *                           (0 send, 1 dead letter, 2 redrive, 3 compaction copy)
 *     22 u16 nheaders
 *     24 i64 created_ns
 *     32 i64 enqueued_ns
 *     40 i64 not_before_ns  0: none
 *     48 i64 expires_ns     0: none
 *     56 u64 correlation_id
 *     64 u32 body_len
 *     68 u16 reply_to_len
 *     70 u16 zero
 *     72 reply-to bytes, then nheaders x { u8 klen, u32 vlen, key, value },
 *        then the body. The record's length is exactly that.
 *   DEL  type 0x51440002 (24 bytes): u64 qid, u64 did, u8 why
 *        (1 ack, 2 drop, 3 dead-lettered to the DLQ, 4 dead letter dropped
 *        for want of a DLQ, 5 redriven), 7 zero bytes.
 *   RETRY type 0x51440003 (32 bytes): u64 qid, u64 did, u32 attempts,
 *        u32 zero, i64 not_before_ns. Written for a failed delivery
 *        (tr_retry) and, unless QUAY_QUEUE_NO_DELIVERY_LOG, for each
 *        delivery before its lease is handed out and for a release
 *        (dq_deliver: not-before 0).
 *   DEDUP type 0x51440005 (40 bytes): u64 qid, u8 kind (1 a dedup id, 2
 *        content), 7 zero bytes, i64 accepted_ns (the queue's clock),
 *        u64 key low, u64 key high (XXH3-128). Written by compaction for
 *        every live key of each open queue's dedup window; replay takes a
 *        queue's window from these and from its send ADDs (the key of the
 *        image, accepted at its enqueued time): docs/DURABILITY.md,
 *        "Dedup after a restart".
 *   NAME type 0x51440004: u64 qid, u16 name_len, 6 zero bytes, the name.
 *        Appended at attach when the log holds none for the queue, and
 *        by every compaction for each open queue (before its copies), so
 *        that quay-wal can show names; replay needs none (older logs
 *        have none) and reads it only to know whether to write one.
 *
 * A dead-letter or redrive move is ONE appendv batch: DEL(source, did) +
 * ADD(target, did, new image): after a crash the message is in exactly
 * one queue. Replay, per queue, in LSN order: ADD puts (qid, did) in the
 * live set (replacing an older image), DEL takes it out, RETRY updates
 * attempts and not-before.
 *
 * Locks (order: queue timer lock -> ctx->cl (read) -> dur->ilock;
 * ctx->cl (write) -> dur->ilock; ctx->cl (read or write) -> a queue's
 * dedup table locks (a send's dedup_commit; compaction's and recovery's
 * dedup_walk / dedup_seed: those locks are leaves, never held while
 * taking another); registry lock alone):
 *   registry  the list of WAL contexts (one per quay_wal in use)
 *   cl        rwlock (writer-preferring): a transition holds it shared
 *             while it mutates a message and logs it and indexes it;
 *             attach (replay) and compaction hold it exclusive, so the
 *             index they read is exactly the log's live set and no
 *             record can slip between a compaction copy and its source
 *   ilock     one queue's index (did -> message) for compaction
 */
#include "alloc.h"
#include "quay_internal.h"
#include "le.h"
#include "queue_durable_format.h"
#include "queue_log.h"
#include "wal_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/wal.h>

#define STACK_IMG 2048u

/* The queue tells why a message leaves in the DEL record's own terms. */
_Static_assert(QUAYI_QLOG_ACK == QUAYI_DQF_WHY_ACK && QUAYI_QLOG_DROP == QUAYI_DQF_WHY_DROP &&
        QUAYI_QLOG_DEAD == QUAYI_DQF_WHY_DEAD && QUAYI_QLOG_DEAD_DROP == QUAYI_DQF_WHY_DEAD_DROP &&
        QUAYI_QLOG_REDRIVE == QUAYI_DQF_WHY_REDRIVE,
    "DEL why codes");

/*
 * The durable identity of a message held by a durable queue: the LSN of
 * the record that first logged it (its send), kept in the envelope's
 * first reserved word (msg.h leaves five for layers). 0: not held by a
 * durable queue. Written only by the durable queue that holds it.
 */
static inline uint64_t
msg_did(const quay_msg *m)
{
	/* Relaxed: written by the one queue that holds the message, before
	 * it hands the message over (the hand-over orders it). */
	return __atomic_load_n(&m->reserved[0], __ATOMIC_RELAXED);
}

static inline void
msg_set_did(quay_msg *m, uint64_t did)
{
	/* Relaxed: as msg_did. */
	__atomic_store_n(&m->reserved[0], did, __ATOMIC_RELAXED);
}

/* The durable id of a message whose send to a durable queue is in
 * progress (claimed, not yet logged). Never an LSN. */
#define DID_PENDING UINT64_MAX

/* One queue's live message in the index. */
struct dent {
	uint64_t did; /* 0: empty */
	quay_msg *msg;
	int64_t nb;        /* logged not-before */
	uint32_t attempts; /* logged attempts */
	uint32_t bytes;    /* its ADD record's payload bytes */
};

struct dwal;

struct quayi_dur {
	struct dwal *w;
	struct quayi_dur *next;             /* open queues of the WAL (under cl write) */
	char name[QUAY_QUEUE_NAME_MAX + 1]; /* the queue's (host), for NAME */
	size_t capacity;                    /* the queue's: recovery restores at most this */
	int (*restore)(void *queue, quay_msg *msg, uint32_t attempts, int64_t not_before_ns);
	void *queue; /* restore's argument */
	uint64_t qid;
	bool deliveries; /* log each delivery (no QUAY_QUEUE_NO_DELIVERY_LOG) */
	/* The queue's dedup window (host; dedup_walk NULL: none). */
	bool (*dedup_key)(void *queue, const quay_msg *msg, struct quayi_qlog_dkey *k);
	void (*dedup_seed)(void *queue, const struct quayi_qlog_dkey *k, int64_t accepted_ns, quay_msg *msg);
	void (*dedup_commit)(void *queue, const struct quayi_qlog_dkey *k);
	void (*dedup_walk)(void *queue,
	    void (*visit)(void *vctx, const struct quayi_qlog_dkey *k, int64_t accepted_ns), void *vctx);
	quay_pool *pool;
	pthread_mutex_t ilock;
	struct dent *tab;
	size_t mask;
	size_t count;                       /* under ilock */
	const struct quay_allocator *alloc; /* the queue's: d, tab, a call's scratch */
};

/* One per quay_wal used by durable queues. */
struct dwal {
	struct dwal *next; /* registry */
	quay_wal *wal;
	unsigned refs; /* under the registry lock */
	pthread_rwlock_t cl;
	pthread_mutex_t cmu;    /* one compactor at a time (try-lock) */
	struct quayi_dur *open; /* under cl write */
	uint64_t foreign_live;  /* under cl write */
	uint64_t live_bytes;    /* atomic: bytes of ADD payloads live */
	uint64_t appended;      /* atomic: record bytes since the last compaction attempt */
	uint64_t compact_min;
	uint64_t compactions, deferred, log_errors; /* atomic counters */
	size_t batch_limit;                         /* bytes of an appendv batch: quayi_wal_batch_max */
	const struct quay_allocator *alloc;         /* the WAL's: w, compaction's scratch */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dwal *registry;

/* ---- little-endian codec: src/le.h ---------------------------------- */

#define put16 quayi_le_put16
#define put32 quayi_le_put32
#define put64 quayi_le_put64
#define get16 quayi_le_get16
#define get32 quayi_le_get32
#define get64 quayi_le_get64

static uint64_t
name_qid(const char *name)
{
	return quayi_dqf_qid(name, strlen(name));
}

/* Overrides for encoding an image. */
struct img_opts {
	uint64_t did;
	uint32_t attempts;
	int64_t nb;
	unsigned origin;
};

static size_t
img_size(const quay_msg *m)
{
	const char *rt = quay_msg_reply_to(m);
	size_t n = QUAYI_DQ_ADD_HDR + (rt != NULL ? strlen(rt) : 0) + quay_msg_body_len(m);

	for (unsigned i = 0; i < quay_msg_header_count(m); i++) {
		const char *k;
		size_t vl;

		if (quay_msg_header_at(m, i, &k, NULL, &vl) == 0)
			n += 5 + strlen(k) + vl;
	}
	return n;
}

static void
img_encode(unsigned char *p, uint64_t qid, const quay_msg *m, const struct img_opts *o)
{
	const char *rt = quay_msg_reply_to(m);
	size_t rl = rt != NULL ? strlen(rt) : 0, off = QUAYI_DQ_ADD_HDR;
	unsigned nh = quay_msg_header_count(m);

	memset(p, 0, QUAYI_DQ_ADD_HDR);
	put64(p + QUAYI_DQF_QID, qid);
	put64(p + QUAYI_DQF_DID, o->did);
	put32(p + QUAYI_DQF_ADD_ATTEMPTS, o->attempts);
	p[QUAYI_DQF_ADD_PRIORITY] = (unsigned char)quay_msg_priority(m);
	p[QUAYI_DQF_ADD_FLAGS] = (unsigned char)((rt != NULL ? 1u : 0u) | (o->origin << 1));
	put16(p + QUAYI_DQF_ADD_NHEADERS, (uint16_t)nh);
	put64(p + QUAYI_DQF_ADD_CREATED, (uint64_t)quay_msg_created_ns(m));
	put64(p + QUAYI_DQF_ADD_ENQUEUED, (uint64_t)quay_msg_enqueued_ns(m));
	put64(p + QUAYI_DQF_ADD_NOT_BEFORE, (uint64_t)o->nb);
	put64(p + QUAYI_DQF_ADD_EXPIRES, (uint64_t)quay_msg_expires_ns(m));
	put64(p + QUAYI_DQF_ADD_CORRELATION, quay_msg_correlation_id(m));
	put32(p + QUAYI_DQF_ADD_BODY_LEN, (uint32_t)quay_msg_body_len(m));
	put16(p + QUAYI_DQF_ADD_REPLY_LEN, (uint16_t)rl);
	if (rl != 0)
		memcpy(p + off, rt, rl);
	off += rl;
	for (unsigned i = 0; i < nh; i++) {
		const char *k;
		const void *v;
		size_t vl, kl;

		if (quay_msg_header_at(m, i, &k, &v, &vl) != 0)
			continue;
		kl = strlen(k);
		p[off] = (unsigned char)kl;
		put32(p + off + 1, (uint32_t)vl);
		memcpy(p + off + QUAYI_DQF_HDR_ENTRY, k, kl);
		if (vl != 0)
			memcpy(p + off + QUAYI_DQF_HDR_ENTRY + kl, v, vl);
		off += QUAYI_DQF_HDR_ENTRY + kl + vl;
	}
	if (quay_msg_body_len(m) != 0)
		memcpy(p + off, quay_msg_body(m), quay_msg_body_len(m));
}

/* Make a message from an ADD image. 0, -EBADMSG, -ENOMEM, -EMSGSIZE. */
static int
img_decode(quay_pool *pool, const unsigned char *p, size_t len, quay_msg **out)
{
	size_t rl, bl, nh, off = QUAYI_DQ_ADD_HDR, cap, hoff;
	quay_msg *m = NULL;
	char key[QUAY_MSG_KEY_MAX + 1], rt[QUAY_MSG_REPLY_TO_MAX + 1];
	int rc;

	if (len < QUAYI_DQ_ADD_HDR)
		return -EBADMSG;
	nh = get16(p + QUAYI_DQF_ADD_NHEADERS);
	bl = get32(p + QUAYI_DQF_ADD_BODY_LEN);
	rl = get16(p + QUAYI_DQF_ADD_REPLY_LEN);
	if (rl > QUAY_MSG_REPLY_TO_MAX || nh > QUAY_MSG_HEADERS_MAX ||
	    (rl != 0) != ((p[QUAYI_DQF_ADD_FLAGS] & 1u) != 0) || rl > len - off)
		return -EBADMSG;
	cap = (rl != 0 ? 16 + rl : 0);
	off += rl;
	hoff = off;
	for (size_t i = 0; i < nh; i++) {
		size_t kl, vl;

		if (len - off < 5)
			return -EBADMSG;
		kl = p[off];
		vl = get32(p + off + 1);
		if (kl == 0 || vl > len - off - 5 || kl > len - off - 5 - vl)
			return -EBADMSG;
		cap += 16 + kl + vl;
		off += 5 + kl + vl;
	}
	if (bl != len - off)
		return -EBADMSG;
	cap += bl;
	if ((rc = quay_msg_alloc(pool, cap, &m)) != 0)
		return rc;
	rc = -EBADMSG;
	if (quay_msg_set_body(m, p + off, bl) != 0)
		goto bad;
	for (size_t i = 0; i < nh; i++) {
		size_t kl = p[hoff], vl = get32(p + hoff + 1);

		memcpy(key, p + hoff + 5, kl);
		key[kl] = '\0';
		if (memchr(key, '\0', kl) != NULL || quay_msg_set_header(m, key, p + hoff + 5 + kl, vl) != 0)
			goto bad;
		hoff += 5 + kl + vl;
	}
	if (rl != 0) {
		memcpy(rt, p + QUAYI_DQ_ADD_HDR, rl);
		rt[rl] = '\0';
		if (memchr(rt, '\0', rl) != NULL || quay_msg_set_reply_to(m, rt) != 0)
			goto bad;
	}
	if ((int64_t)get64(p + QUAYI_DQF_ADD_CREATED) < 0 || (int64_t)get64(p + QUAYI_DQF_ADD_ENQUEUED) < 0 ||
	    (int64_t)get64(p + QUAYI_DQF_ADD_NOT_BEFORE) < 0 || (int64_t)get64(p + QUAYI_DQF_ADD_EXPIRES) < 0)
		goto bad;
	quay_msg_set_attempts(m, get32(p + QUAYI_DQF_ADD_ATTEMPTS));
	quay_msg_set_priority(m, p[QUAYI_DQF_ADD_PRIORITY]);
	quay_msg_set_created_ns(m, (int64_t)get64(p + QUAYI_DQF_ADD_CREATED));
	quay_msg_set_enqueued_ns(m, (int64_t)get64(p + QUAYI_DQF_ADD_ENQUEUED));
	quay_msg_set_not_before_ns(m, (int64_t)get64(p + QUAYI_DQF_ADD_NOT_BEFORE));
	quay_msg_set_expires_ns(m, (int64_t)get64(p + QUAYI_DQF_ADD_EXPIRES));
	quay_msg_set_correlation_id(m, get64(p + QUAYI_DQF_ADD_CORRELATION));
	*out = m;
	return 0;
bad:
	quay_msg_unref(m);
	return rc;
}

/* ---- the index (did -> message), linear probing ---------------------- */

static size_t
slot_of(const struct quayi_dur *d, uint64_t did)
{
	uint64_t x = did * UINT64_C(0x9E3779B97F4A7C15);

	return (size_t)(x ^ (x >> 29)) & d->mask;
}

static struct dent *
idx_find(struct quayi_dur *d, uint64_t did)
{
	for (size_t i = slot_of(d, did);; i = (i + 1) & d->mask) {
		if (d->tab[i].did == did)
			return &d->tab[i];
		if (d->tab[i].did == 0)
			return NULL;
	}
}

/* The table has twice the queue's capacity and the queue never holds
 * more: there is always an empty slot. */
static void
idx_put(struct quayi_dur *d, uint64_t did, quay_msg *m, int64_t nb, uint32_t attempts, uint32_t bytes)
{
	size_t i = slot_of(d, did);

	while (d->tab[i].did != 0 && d->tab[i].did != did)
		i = (i + 1) & d->mask;
	if (d->tab[i].did == 0)
		d->count++;
	d->tab[i] = (struct dent){ did, m, nb, attempts, bytes };
}

/* Remove with backward shift (no tombstones). Returns the bytes it had. */
static uint32_t
idx_del(struct quayi_dur *d, uint64_t did)
{
	size_t i = slot_of(d, did), j;
	uint32_t bytes;

	while (d->tab[i].did != did) {
		if (d->tab[i].did == 0)
			return 0;
		i = (i + 1) & d->mask;
	}
	bytes = d->tab[i].bytes;
	d->count--;
	for (j = (i + 1) & d->mask; d->tab[j].did != 0; j = (j + 1) & d->mask) {
		size_t h = slot_of(d, d->tab[j].did);

		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
			d->tab[i] = d->tab[j];
			i = j;
		}
	}
	d->tab[i].did = 0;
	d->tab[i].msg = NULL;
	return bytes;
}

/* ---- accounting ------------------------------------------------------ */

static void
note_appended(struct dwal *w, size_t payload)
{
	/* Relaxed: a trigger, read by the compaction check. */
	__atomic_fetch_add(&w->appended, 32 + ((payload + 7) & ~(size_t)7), __ATOMIC_RELAXED);
}

static void
live_add(struct dwal *w, int64_t bytes)
{
	/* Relaxed: a figure for the compaction trigger. */
	__atomic_fetch_add(&w->live_bytes, (uint64_t)bytes, __ATOMIC_RELAXED);
}

static void
log_error(struct dwal *w)
{
	/* Relaxed: a statistic. */
	__atomic_fetch_add(&w->log_errors, 1, __ATOMIC_RELAXED);
}

/* ---- transitions ------------------------------------------------------ */

/* m's send to d's queue was logged (cl held shared): its dedup key, which
 * the queue's check left pending, is walked by compactions from now on.
 * A compaction that ran between the check and this write did not write
 * the key: the send's own ADD, logged after that compaction's first LSN,
 * carries it; and if the write fails the key was never in the log. */
static void
dedup_logged(const struct quayi_dur *d, const quay_msg *m)
{
	struct quayi_qlog_dkey k;

	if (d->dedup_commit != NULL && d->dedup_key(d->queue, m, &k))
		d->dedup_commit(d->queue, &k);
}

/* A durable id a record may carry (0 and the send's claim marker are
 * not: replay rejects did 0). */
static bool
did_ok(uint64_t did)
{
	return did != 0 && did != DID_PENDING;
}

/* The ops (src/queue_log.h); ctx is the queue's struct quayi_dur. */

/* Claim msg for a send: did 0 -> DID_PENDING in one step, so that two
 * sends of the same message (the same pointer twice in a batch, or two
 * threads sending a shared message to two durable queues) cannot both
 * take it. false: held (or being sent) already; the queue then sends a
 * copy. dq_add sets the real id once the log took the message, or 0
 * again if it did not. */
static bool
dq_claim(void *ctx, quay_msg *m)
{
	uint64_t zero = 0;

	(void)ctx;
	/* Relaxed (success and failure): the CAS is the whole decision;
	 * the message's contents are published by the queue hand-over. */
	return __atomic_compare_exchange_n(&m->reserved[0], &zero, DID_PENDING, false, __ATOMIC_RELAXED,
	    __ATOMIC_RELAXED);
}

/* A transition that changes a logged message and logs it holds cl
 * shared: compaction (cl exclusive, reads the messages) never sees it
 * half done. Never held while taking a queue's timer lock. */
static void
dq_begin(void *ctx)
{
	struct quayi_dur *d = ctx;

	pthread_rwlock_rdlock(&d->w->cl);
}

static void
dq_end(void *ctx)
{
	struct quayi_dur *d = ctx;

	pthread_rwlock_unlock(&d->w->cl);
}

/* Log n claimed sends as ADD records (one appendv per chunk, one sync
 * each) and index them; give the claims of those not logged back. */
static size_t
dq_add(void *ctx, quay_msg *const *msgs, size_t n, int *err)
{
	struct quayi_dur *d = ctx;
	struct dwal *w = d->w;
	unsigned char stack[STACK_IMG];
	quay_wal_rec recs1[1], *recs = recs1;
	unsigned char *buf = stack;
	size_t *sizes = NULL, total = 0, done = 0;
	size_t size1;
	int rc = 0;

	*err = 0;
	if (n == 1) {
		sizes = &size1;
	} else {
		sizes = quayi_alloc(d->alloc, n * sizeof(*sizes));
		recs = quayi_alloc(d->alloc, n * sizeof(*recs));
		if (sizes == NULL || recs == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++) {
		sizes[i] = img_size(msgs[i]);
		total += sizes[i];
	}
	if (total > sizeof(stack) && (buf = quayi_alloc(d->alloc, total)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0, off = 0; i < n; i++) {
		struct img_opts o = { 0, 0, quay_msg_not_before_ns(msgs[i]), QUAYI_DQF_O_SEND };

		o.attempts = quay_msg_attempts(msgs[i]);
		img_encode(buf + off, d->qid, msgs[i], &o);
		recs[i] = (quay_wal_rec){ QUAYI_DQ_ADD, buf + off, sizes[i] };
		off += sizes[i];
	}
	pthread_rwlock_rdlock(&w->cl);
	while (done < n) {
		size_t k = 0, bytes = 0;
		uint64_t last = 0;

		/* A chunk within the WAL's batch limit (at least one record:
		 * an oversized one gets the WAL's -EMSGSIZE). */
		while (done + k < n && k < QUAY_WAL_BATCH_MAX &&
		    (k == 0 || bytes + 32 + ((sizes[done + k] + 7) & ~(size_t)7) <= w->batch_limit)) {
			bytes += 32 + ((sizes[done + k] + 7) & ~(size_t)7);
			k++;
		}
		rc = k == 1 ? quay_wal_append(w->wal, QUAYI_DQ_ADD, recs[done].data, recs[done].len, &last) :
		              quay_wal_appendv(w->wal, &recs[done], k, &last);
		if (rc != 0)
			break;
		pthread_mutex_lock(&d->ilock);
		for (size_t i = 0; i < k; i++) {
			quay_msg *m = msgs[done + i];
			uint64_t did = last - (k - 1) + i;

			msg_set_did(m, did);
			idx_put(d, did, m, quay_msg_not_before_ns(m), quay_msg_attempts(m),
			    (uint32_t)sizes[done + i]);
		}
		pthread_mutex_unlock(&d->ilock);
		for (size_t i = 0; i < k; i++)
			dedup_logged(d, msgs[done + i]);
		live_add(w, (int64_t)(bytes - 32 * k));
		__atomic_fetch_add(&w->appended, bytes, __ATOMIC_RELAXED); /* relaxed: a trigger */
		done += k;
	}
	pthread_rwlock_unlock(&w->cl);
out:
	if (buf != stack)
		quayi_free(d->alloc, buf, total);
	if (n != 1) {
		quayi_free(d->alloc, sizes, n * sizeof(*sizes));
		quayi_free(d->alloc, recs, n * sizeof(*recs));
	}
	if (done < n) {
		*err = rc;
		for (size_t i = done; i < n; i++)
			msg_set_did(msgs[i], 0); /* give the claim back */
	}
	return done;
}

/* Log one claimed send into each of n queues of one WAL (ctxs[i] the
 * queue of msgs[i]) as ONE batch (an appendv: after a crash all of the
 * ADDs are there or none), one sync per the WAL's mode, and index them.
 * A batch over the WAL's limits is refused whole (-EMSGSIZE): never cut
 * in two writes. 0, or the error with every claim given back. */
static int
dq_add_multi(void *const *ctxs, quay_msg *const *msgs, size_t n)
{
	struct dwal *w = ((struct quayi_dur *)ctxs[0])->w;
	const struct quay_allocator *a = ((struct quayi_dur *)ctxs[0])->alloc; /* the scratch's */
	unsigned char stack[STACK_IMG], *buf = stack;
	quay_wal_rec recs8[8], *recs = recs8;
	size_t total = 0, bytes = 0;
	uint64_t last = 0;
	int rc = 0;

	if (n > QUAY_WAL_BATCH_MAX) {
		rc = -EMSGSIZE;
		goto out;
	}
	if (n > 8 && (recs = quayi_alloc(a, n * sizeof(*recs))) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		size_t sz = img_size(msgs[i]);

		recs[i].len = sz;
		total += sz;
		bytes += 32 + ((sz + 7) & ~(size_t)7);
	}
	if (n > 1 && bytes > w->batch_limit) {
		rc = -EMSGSIZE;
		goto out;
	}
	if (total > sizeof(stack) && (buf = quayi_alloc(a, total)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0, off = 0; i < n; i++) {
		const struct quayi_dur *d = ctxs[i];
		struct img_opts o = { 0, quay_msg_attempts(msgs[i]), quay_msg_not_before_ns(msgs[i]),
			QUAYI_DQF_O_SEND };

		img_encode(buf + off, d->qid, msgs[i], &o);
		recs[i].type = QUAYI_DQ_ADD;
		recs[i].data = buf + off;
		off += recs[i].len;
	}
	pthread_rwlock_rdlock(&w->cl);
	rc = n == 1 ? quay_wal_append(w->wal, QUAYI_DQ_ADD, recs[0].data, recs[0].len, &last) :
	              quay_wal_appendv(w->wal, recs, n, &last);
	if (rc == 0) {
		for (size_t i = 0; i < n; i++) {
			struct quayi_dur *d = ctxs[i];
			uint64_t did = last - (n - 1) + i;

			msg_set_did(msgs[i], did);
			pthread_mutex_lock(&d->ilock);
			idx_put(d, did, msgs[i], quay_msg_not_before_ns(msgs[i]), quay_msg_attempts(msgs[i]),
			    (uint32_t)recs[i].len);
			pthread_mutex_unlock(&d->ilock);
			dedup_logged(d, msgs[i]);
		}
		live_add(w, (int64_t)(bytes - 32 * n));
		__atomic_fetch_add(&w->appended, bytes, __ATOMIC_RELAXED); /* relaxed: a trigger */
	}
	pthread_rwlock_unlock(&w->cl);
out:
	if (buf != stack)
		quayi_free(a, buf, total);
	if (recs != recs8)
		quayi_free(a, recs, n * sizeof(*recs));
	if (rc != 0)
		for (size_t i = 0; i < n; i++)
			msg_set_did(msgs[i], 0); /* give the claims back */
	return rc;
}

/* Log that msg left the queue (DEL) and unindex it. 0 or the WAL's
 * error: then an ACK changed nothing, any other reason still unindexes
 * (the queue drops the message in memory; the log keeps it live). */
static int
dq_del(void *ctx, quay_msg *msg, enum quayi_qlog_why why)
{
	struct quayi_dur *d = ctx;
	struct dwal *w = d->w;
	unsigned char rec[QUAYI_DQ_DEL_LEN] = { 0 };
	uint64_t did = msg_did(msg);
	uint32_t bytes;
	int rc;

	if (QUAYI_UNLIKELY(!did_ok(did))) {
		/* Cannot happen (the send's claim): never log a DEL the
		 * replay would reject; count it, go on in memory. */
		log_error(w);
		return 0;
	}
	put64(rec + QUAYI_DQF_QID, d->qid);
	put64(rec + QUAYI_DQF_DID, did);
	rec[QUAYI_DQF_DEL_WHY] = (unsigned char)why;
	pthread_rwlock_rdlock(&w->cl);
	rc = quay_wal_append(w->wal, QUAYI_DQ_DEL, rec, sizeof(rec), NULL);
	if (rc != 0)
		log_error(w);
	/* An ack the log refused keeps the message (it goes back to ready);
	 * a drop goes on in memory, so the index must not keep a pointer to
	 * a message about to be freed. */
	if (rc == 0 || why != QUAYI_QLOG_ACK) {
		pthread_mutex_lock(&d->ilock);
		bytes = idx_del(d, did);
		pthread_mutex_unlock(&d->ilock);
		live_add(w, -(int64_t)bytes);
		if (rc == 0)
			note_appended(w, sizeof(rec));
		msg_set_did(msg, 0);
	}
	pthread_rwlock_unlock(&w->cl);
	return rc;
}

/* Log a failed delivery (RETRY: attempts from msg, the retry's
 * not-before). */
static void
dq_retry(void *ctx, quay_msg *msg, int64_t not_before)
{
	struct quayi_dur *d = ctx;
	struct dwal *w = d->w;
	unsigned char rec[QUAYI_DQ_RETRY_LEN] = { 0 };
	uint64_t did = msg_did(msg);
	uint32_t att = quay_msg_attempts(msg);

	if (QUAYI_UNLIKELY(!did_ok(did))) {
		log_error(w); /* cannot happen: see dq_del */
		return;
	}
	put64(rec + QUAYI_DQF_QID, d->qid);
	put64(rec + QUAYI_DQF_DID, did);
	put32(rec + QUAYI_DQF_RETRY_ATTEMPTS, att);
	put64(rec + QUAYI_DQF_RETRY_NOT_BEFORE, (uint64_t)not_before);
	pthread_rwlock_rdlock(&w->cl);
	if (quay_wal_append(w->wal, QUAYI_DQ_RETRY, rec, sizeof(rec), NULL) == 0) {
		struct dent *e;

		pthread_mutex_lock(&d->ilock);
		if ((e = idx_find(d, did)) != NULL) {
			e->attempts = att;
			e->nb = not_before;
		}
		pthread_mutex_unlock(&d->ilock);
		note_appended(w, sizeof(rec));
	} else {
		/* The log keeps the older attempts: after a restart the message
		 * comes back with fewer, never lost. */
		log_error(w);
	}
	pthread_rwlock_unlock(&w->cl);
}

/* Log the delivery counts of n leases (or of a release: its lease's
 * attempt one lower) BEFORE they are handed out, as RETRY records with
 * not-before 0 (ready at once after a restart), one write for all n:
 * after a crash a delivery whose lease was outstanding counts as a
 * failed attempt. Nothing with QUAY_QUEUE_NO_DELIVERY_LOG. A refusal
 * keeps the older count in the log (counted as log_errors). */
static bool
dq_deliver(void *ctx, const quay_lease *leases, size_t n)
{
	struct quayi_dur *d = ctx;
	struct dwal *w = d->w;
	unsigned char stack[8][QUAYI_DQ_RETRY_LEN], (*rec)[QUAYI_DQ_RETRY_LEN] = stack;
	quay_wal_rec rs1[8], *rs = rs1;
	size_t k = 0;

	if (!d->deliveries || n == 0)
		return false;
	if (n > 8) {
		rec = quayi_alloc(d->alloc, n * sizeof(*rec));
		rs = quayi_alloc(d->alloc, n * sizeof(*rs));
		if (rec == NULL || rs == NULL) {
			quayi_free(d->alloc, rec, n * sizeof(*rec));
			quayi_free(d->alloc, rs, n * sizeof(*rs));
			log_error(w);
			return false;
		}
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t did = msg_did(leases[i].msg);

		/* A batch's lease that ended before this (acked elsewhere
		 * after its expiry): nothing left to count. */
		if (!did_ok(did))
			continue;
		memset(rec[k], 0, QUAYI_DQ_RETRY_LEN);
		put64(rec[k] + QUAYI_DQF_QID, d->qid);
		put64(rec[k] + QUAYI_DQF_DID, did);
		put32(rec[k] + QUAYI_DQF_RETRY_ATTEMPTS, leases[i].attempt);
		rs[k] = (quay_wal_rec){ QUAYI_DQ_RETRY, rec[k], QUAYI_DQ_RETRY_LEN };
		k++;
	}
	pthread_rwlock_rdlock(&w->cl);
	if (k > 0) {
		int rc = 0;

		/* In chunks of the WAL's batch limits (RETRY records are small:
		 * only the record count can bind). */
		for (size_t off = 0; off < k && rc == 0; off += QUAY_WAL_BATCH_MAX) {
			size_t m = k - off < QUAY_WAL_BATCH_MAX ? k - off : QUAY_WAL_BATCH_MAX;

			rc = m == 1 ?
			    quay_wal_append(w->wal, QUAYI_DQ_RETRY, rs[off].data, rs[off].len, NULL) :
			    quay_wal_appendv(w->wal, &rs[off], m, NULL);
			if (rc != 0)
				break;
			pthread_mutex_lock(&d->ilock);
			for (size_t i = off; i < off + m; i++) {
				struct dent *e = idx_find(d, get64(rec[i] + QUAYI_DQF_DID));

				if (e != NULL) {
					e->attempts = get32(rec[i] + QUAYI_DQF_RETRY_ATTEMPTS);
					e->nb = 0;
				}
			}
			pthread_mutex_unlock(&d->ilock);
			for (size_t i = 0; i < m; i++)
				note_appended(w, QUAYI_DQ_RETRY_LEN);
		}
		if (rc != 0)
			log_error(w);
	}
	pthread_rwlock_unlock(&w->cl);
	if (rec != stack) {
		quayi_free(d->alloc, rec, n * sizeof(*rec));
		quayi_free(d->alloc, rs, n * sizeof(*rs));
	}
	return true;
}

/* Between dq_begin and dq_end: log the move of msg from this queue to
 * `to` (same WAL) as one batch (DEL + ADD) and move its index entry. 0
 * or the WAL's error (then nothing changed). */
static int
dq_move(void *ctx, void *to, quay_msg *msg, enum quayi_qlog_why why)
{
	struct quayi_dur *df = ctx, *dt = to;
	struct dwal *w = df->w;
	unsigned char del[QUAYI_DQ_DEL_LEN] = { 0 }, stack[STACK_IMG], *img = stack;
	uint64_t did = msg_did(msg);
	size_t sz = img_size(msg);
	struct img_opts o = { did, quay_msg_attempts(msg), quay_msg_not_before_ns(msg),
		why == QUAYI_QLOG_REDRIVE ? QUAYI_DQF_O_REDRIVE : QUAYI_DQF_O_DEAD };
	quay_wal_rec recs[2];
	uint32_t old;
	int rc;

	if (QUAYI_UNLIKELY(!did_ok(did))) {
		log_error(w); /* cannot happen: see dq_del */
		return 0;
	}
	if (sz > sizeof(stack) && (img = quayi_alloc(df->alloc, sz)) == NULL) {
		log_error(w);
		return -ENOMEM;
	}
	put64(del + QUAYI_DQF_QID, df->qid);
	put64(del + QUAYI_DQF_DID, did);
	del[QUAYI_DQF_DEL_WHY] = (unsigned char)why;
	img_encode(img, dt->qid, msg, &o);
	recs[0] = (quay_wal_rec){ QUAYI_DQ_DEL, del, sizeof(del) };
	recs[1] = (quay_wal_rec){ QUAYI_DQ_ADD, img, sz };
	rc = quay_wal_appendv(w->wal, recs, 2, NULL);
	if (img != stack)
		quayi_free(df->alloc, img, sz);
	if (rc != 0) {
		log_error(w);
		return rc;
	}
	pthread_mutex_lock(&df->ilock);
	old = idx_del(df, did);
	pthread_mutex_unlock(&df->ilock);
	pthread_mutex_lock(&dt->ilock);
	idx_put(dt, did, msg, o.nb, o.attempts, (uint32_t)sz);
	pthread_mutex_unlock(&dt->ilock);
	live_add(w, (int64_t)sz - (int64_t)old);
	note_appended(w, sizeof(del));
	note_appended(w, sz);
	return 0;
}

/* msg was replaced by its copy (copy-on-write for DLQ headers). */
static void
dq_rebind(void *ctx, quay_msg *old, quay_msg *copy)
{
	struct quayi_dur *d = ctx;
	uint64_t did = msg_did(old);
	struct dent *e;

	msg_set_did(copy, did);
	pthread_mutex_lock(&d->ilock);
	if ((e = idx_find(d, did)) != NULL)
		e->msg = copy;
	pthread_mutex_unlock(&d->ilock);
	/* The original goes back to its other holders: no longer ours. */
	msg_set_did(old, 0);
}

/* ---- compaction ------------------------------------------------------- */

/* Append the NAME record of d's queue (names are at most
 * QUAY_QUEUE_NAME_MAX bytes, queue.h). */
static int
name_append(struct quayi_dur *d)
{
	unsigned char rec[QUAYI_DQ_NAME_HDR + QUAY_QUEUE_NAME_MAX];
	size_t nl = strlen(d->name);

	if (nl > QUAY_QUEUE_NAME_MAX)
		return -EINVAL;
	memset(rec, 0, QUAYI_DQ_NAME_HDR);
	put64(rec + QUAYI_DQF_QID, d->qid);
	put16(rec + QUAYI_DQF_NAME_LEN, (uint16_t)nl);
	memcpy(rec + QUAYI_DQ_NAME_HDR, d->name, nl);
	return quay_wal_append(d->w->wal, QUAYI_DQ_NAME, rec, QUAYI_DQ_NAME_HDR + nl, NULL);
}

/* A compaction's records, packed into appendv batches of the WAL's
 * limits (payloads at 8-byte steps in buf, as the WAL frames them). */
struct cbatch {
	struct dwal *w;
	quay_wal_rec *recs;
	unsigned char *buf;
	size_t nrec, used;
	int rc;
};

static size_t
rec_bytes(size_t payload)
{
	return 32 + ((payload + 7) & ~(size_t)7);
}

/* Room in b for a payload of sz bytes (rec_bytes(sz) <= batch_limit),
 * after writing out the batch if it is full; NULL after an error. */
static unsigned char *
cb_room(struct cbatch *b, size_t sz)
{
	if (b->rc != 0)
		return NULL;
	if (b->nrec != 0 && (b->used + rec_bytes(sz) > b->w->batch_limit || b->nrec == QUAY_WAL_BATCH_MAX)) {
		b->rc = quay_wal_appendv(b->w->wal, b->recs, b->nrec, NULL);
		b->nrec = 0;
		b->used = 0;
		if (b->rc != 0)
			return NULL;
	}
	return b->buf + b->used;
}

/* The record just encoded at cb_room's pointer joins the batch. */
static void
cb_push(struct cbatch *b, uint32_t type, size_t sz)
{
	b->recs[b->nrec++] = (quay_wal_rec){ type, b->buf + b->used, sz };
	b->used += rec_bytes(sz);
}

/* The rest of the batch; 0 or the first error. */
static int
cb_flush(struct cbatch *b)
{
	if (b->rc == 0 && b->nrec != 0)
		b->rc = quay_wal_appendv(b->w->wal, b->recs, b->nrec, NULL);
	b->nrec = 0;
	b->used = 0;
	return b->rc;
}

struct dvisit {
	struct cbatch *b;
	uint64_t qid;
};

/* A live key of a queue's dedup window as a DEDUP record (dedup_walk). */
static void
dedup_visit(void *vctx, const struct quayi_qlog_dkey *k, int64_t accepted)
{
	struct dvisit *v = vctx;
	unsigned char *p = cb_room(v->b, QUAYI_DQ_DEDUP_LEN);

	if (p == NULL)
		return;
	memset(p, 0, QUAYI_DQ_DEDUP_LEN);
	put64(p + QUAYI_DQF_QID, v->qid);
	p[QUAYI_DQF_DEDUP_KIND] = (unsigned char)k->kind;
	put64(p + QUAYI_DQF_DEDUP_ACCEPTED, (uint64_t)accepted);
	put64(p + QUAYI_DQF_DEDUP_KEY_LO, k->h1);
	put64(p + QUAYI_DQF_DEDUP_KEY_HI, k->h2);
	cb_push(v->b, QUAYI_DQ_DEDUP, QUAYI_DQ_DEDUP_LEN);
}

/* Append one compaction copy as a record of its own. */
static int
copy_alone(struct dwal *w, uint64_t qid, const quay_msg *m, const struct img_opts *o, size_t sz)
{
	unsigned char *img = quayi_alloc(w->alloc, sz);
	int rc;

	if (img == NULL)
		return -ENOMEM;
	img_encode(img, qid, m, o);
	rc = quay_wal_append(w->wal, QUAYI_DQ_ADD, img, sz, NULL);
	quayi_free(w->alloc, img, sz);
	return rc;
}

/*
 * Re-append every live message of every open queue as an ADD copy (its
 * logged attempts and not-before), and every live key of its dedup
 * window as a DEDUP record (after its NAME, before its copies), then
 * checkpoint below the first of them: the WAL deletes every segment
 * wholly below it. cl is held exclusive, so the index is the log's live
 * set and no transition runs meanwhile. The window is the queue's table
 * (a key is in it from its send's check, before the send's ADD is
 * logged: every key of an ADD below the checkpoint is there, unless its
 * window has passed; keys of sends not yet logged are pending and not
 * walked: dedup_logged).
 * Refused (deferred) while the log holds live records of queues that are
 * not open: they could not be copied.
 */
static int
compact_locked(struct dwal *w)
{
	struct quay_wal_info info;
	struct cbatch b = { w, NULL, NULL, 0, 0, 0 };
	uint64_t first;
	int rc;

	if (w->foreign_live != 0) {
		__atomic_fetch_add(&w->deferred, 1, __ATOMIC_RELAXED); /* relaxed: statistic */
		return -EAGAIN;
	}
	if ((rc = quay_wal_info(w->wal, &info)) != 0) {
		log_error(w); /* every failed attempt counts */
		return rc;
	}
	first = info.next_lsn;
	b.recs = quayi_alloc(w->alloc, QUAY_WAL_BATCH_MAX * sizeof(*b.recs));
	b.buf = quayi_alloc(w->alloc, w->batch_limit);
	if (b.recs == NULL || b.buf == NULL) {
		rc = -ENOMEM;
		log_error(w);
		goto out;
	}
	/* The names first, after `first`: they outlive the checkpoint. */
	for (struct quayi_dur *d = w->open; d != NULL && rc == 0; d = d->next)
		rc = name_append(d);
	/* The windows, after `first` too: they outlive the send ADDs they
	 * were built from. */
	for (struct quayi_dur *d = w->open; d != NULL && rc == 0; d = d->next) {
		struct dvisit v = { &b, d->qid };

		if (d->dedup_walk != NULL) {
			d->dedup_walk(d->queue, dedup_visit, &v);
			rc = b.rc;
		}
	}
	for (struct quayi_dur *d = w->open; d != NULL && rc == 0; d = d->next) {
		pthread_mutex_lock(&d->ilock);
		for (size_t i = 0; i <= d->mask && rc == 0; i++) {
			struct dent *e = &d->tab[i];
			struct img_opts o;
			unsigned char *p;
			size_t sz;

			if (e->did == 0)
				continue;
			o = (struct img_opts){ e->did, e->attempts, e->nb, QUAYI_DQF_O_COPY };
			sz = img_size(e->msg);
			if (rec_bytes(sz) > w->batch_limit) {
				/* Too big to share a batch (a record near max_record):
				 * copied alone, never encoded into buf. The log took
				 * this very image before, so it takes it again; if
				 * not, the compaction fails (no checkpoint). */
				rc = copy_alone(w, d->qid, e->msg, &o, sz);
				continue;
			}
			if ((p = cb_room(&b, sz)) == NULL) {
				rc = b.rc;
				break;
			}
			img_encode(p, d->qid, e->msg, &o);
			cb_push(&b, QUAYI_DQ_ADD, sz);
		}
		pthread_mutex_unlock(&d->ilock);
	}
	if (rc == 0)
		rc = cb_flush(&b);
	/* A failure leaves extra copies of live messages: replay takes the
	 * newest image of each, so the log stays right; no checkpoint. */
	if (rc == 0)
		rc = quay_wal_checkpoint(w->wal, first);
	if (rc == 0) {
		__atomic_store_n(&w->appended, 0, __ATOMIC_RELAXED);      /* relaxed: a trigger */
		__atomic_fetch_add(&w->compactions, 1, __ATOMIC_RELAXED); /* relaxed: statistic */
	} else {
		log_error(w);
	}
out:
	quayi_free(w->alloc, b.recs, QUAY_WAL_BATCH_MAX * sizeof(*b.recs));
	quayi_free(w->alloc, b.buf, w->batch_limit);
	return rc;
}

/* Compact the log if enough was appended since the last time (no queue
 * lock held). */
static void
dq_idle(void *ctx)
{
	struct dwal *w = ((struct quayi_dur *)ctx)->w;
	/* Relaxed: a trigger; compaction itself runs under cl exclusive. */
	uint64_t app = __atomic_load_n(&w->appended, __ATOMIC_RELAXED);
	uint64_t live = __atomic_load_n(&w->live_bytes, __ATOMIC_RELAXED);

	if (QUAYI_LIKELY(app < w->compact_min || app < live))
		return;
	if (pthread_mutex_trylock(&w->cmu) != 0)
		return;
	pthread_rwlock_wrlock(&w->cl);
	/* Deferred or failed: try again only after as many bytes again
	 * (max(compact_min, live)) have been appended, as after a success.
	 * A compaction that cannot succeed (a copy the WAL refuses, a failed
	 * WAL) must not be retried by every send and ack under the exclusive
	 * lock. Relaxed: a trigger. */
	if (compact_locked(w) != 0)
		__atomic_store_n(&w->appended, 0, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&w->cl);
	pthread_mutex_unlock(&w->cmu);
}

static void dq_detach(void *ctx);

static const struct quayi_qlog_ops dq_ops = {
	.claim = dq_claim,
	.add = dq_add,
	.add_multi = dq_add_multi,
	.del = dq_del,
	.retry = dq_retry,
	.deliver = dq_deliver,
	.begin = dq_begin,
	.end = dq_end,
	.move = dq_move,
	.rebind = dq_rebind,
	.idle = dq_idle,
	.detach = dq_detach,
};

/* q's durable log, or NULL if q is in memory. */
static struct quayi_dur *
dur_of(quay_queue *q)
{
	const struct quayi_qlog *l = q != NULL ? quayi_queue_log(q) : NULL;

	return l != NULL && l->ops == &dq_ops ? l->ctx : NULL;
}

int
quayi_queue_compact(quay_queue *q)
{
	struct quayi_dur *d = dur_of(q);
	struct dwal *w;
	int rc;

	if (d == NULL)
		return -EINVAL;
	w = d->w;
	pthread_mutex_lock(&w->cmu);
	pthread_rwlock_wrlock(&w->cl);
	rc = compact_locked(w);
	pthread_rwlock_unlock(&w->cl);
	pthread_mutex_unlock(&w->cmu);
	return rc;
}

int
quayi_queue_durable_info(quay_queue *q, struct quayi_dur_info *out)
{
	struct quayi_dur *d = dur_of(q);
	struct dwal *w;

	if (d == NULL || out == NULL)
		return -EINVAL;
	w = d->w;
	pthread_rwlock_wrlock(&w->cl);
	pthread_mutex_lock(&d->ilock);
	out->live = d->count;
	pthread_mutex_unlock(&d->ilock);
	out->foreign_live = w->foreign_live;
	pthread_rwlock_unlock(&w->cl);
	/* Relaxed: statistics. */
	out->live_bytes = __atomic_load_n(&w->live_bytes, __ATOMIC_RELAXED);
	out->compactions = __atomic_load_n(&w->compactions, __ATOMIC_RELAXED);
	out->deferred = __atomic_load_n(&w->deferred, __ATOMIC_RELAXED);
	out->log_errors = __atomic_load_n(&w->log_errors, __ATOMIC_RELAXED);
	return 0;
}

/* ---- recovery --------------------------------------------------------- */

/* The replay's view of the log: every live (qid, did); this queue's
 * with its message. Grows (create is not a hot path). */
struct rent {
	uint64_t qid, did; /* did 0: empty */
	quay_msg *msg;     /* this queue's, else NULL */
};

/* A key of the queue's dedup window found by the replay. */
struct rseed {
	struct quayi_qlog_dkey k;
	int64_t accepted;
	uint64_t did; /* the send's (its message, if still live), or 0 (DEDUP) */
};

struct replay {
	struct quayi_dur *d;
	struct rent *tab;
	size_t mask, count;
	int err;
	bool named; /* the log holds a NAME record of d's queue */
	struct rseed *seeds;
	size_t nseeds, capseeds;
};

static int
seed_push(struct replay *r, const struct quayi_qlog_dkey *k, int64_t accepted, uint64_t did)
{
	if (r->nseeds == r->capseeds) {
		size_t n = r->capseeds != 0 ? 2 * r->capseeds : 64;
		struct rseed *ns =
		    quayi_realloc(r->d->alloc, r->seeds, r->capseeds * sizeof(*ns), n * sizeof(*ns));

		if (ns == NULL)
			return -ENOMEM;
		r->seeds = ns;
		r->capseeds = n;
	}
	r->seeds[r->nseeds++] = (struct rseed){ *k, accepted, did };
	return 0;
}

static size_t
rslot(const struct replay *r, uint64_t qid, uint64_t did)
{
	uint64_t x = (did ^ qid * UINT64_C(0xBF58476D1CE4E5B9)) * UINT64_C(0x9E3779B97F4A7C15);

	return (size_t)(x ^ (x >> 31)) & r->mask;
}

static struct rent *
rfind(struct replay *r, uint64_t qid, uint64_t did, bool add)
{
	size_t i;

	if (add && (r->count + 1) * 2 > r->mask + 1) {
		struct rent *old = r->tab;
		size_t oldn = r->mask + 1;
		struct rent *nt = quayi_calloc(r->d->alloc, oldn * 2, sizeof(*nt));

		if (nt == NULL)
			return NULL;
		r->tab = nt;
		r->mask = oldn * 2 - 1;
		for (size_t j = 0; j < oldn; j++)
			if (old[j].did != 0) {
				size_t k = rslot(r, old[j].qid, old[j].did);

				while (nt[k].did != 0)
					k = (k + 1) & r->mask;
				nt[k] = old[j];
			}
		quayi_free(r->d->alloc, old, oldn * sizeof(*old));
	}
	for (i = rslot(r, qid, did); r->tab[i].did != 0; i = (i + 1) & r->mask)
		if (r->tab[i].did == did && r->tab[i].qid == qid)
			return &r->tab[i];
	if (!add)
		return NULL;
	r->tab[i].qid = qid;
	r->tab[i].did = did;
	r->tab[i].msg = NULL;
	r->count++;
	return &r->tab[i];
}

static void
rdel(struct replay *r, struct rent *e)
{
	size_t i = (size_t)(e - r->tab), j;

	if (e->msg != NULL)
		quay_msg_unref(e->msg);
	r->count--;
	for (j = (i + 1) & r->mask; r->tab[j].did != 0; j = (j + 1) & r->mask) {
		size_t h = rslot(r, r->tab[j].qid, r->tab[j].did);

		if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
			r->tab[i] = r->tab[j];
			i = j;
		}
	}
	r->tab[i].did = 0;
	r->tab[i].msg = NULL;
}

static int
replay_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct replay *r = ctx;
	const unsigned char *p = data;
	uint64_t qid, did;
	struct rent *e;

	if (type == QUAYI_DQ_NAME) {
		/* Informational (the tool's): only note that this queue has one. */
		if (len >= QUAYI_DQ_NAME_HDR && get64(p + QUAYI_DQF_QID) == r->d->qid)
			r->named = true;
		return 0;
	}
	if (type == QUAYI_DQ_DEDUP) {
		struct quayi_qlog_dkey k;
		unsigned char zero[7] = { 0 };

		if (len != QUAYI_DQ_DEDUP_LEN || memcmp(p + QUAYI_DQF_DEDUP_KIND + 1, zero, 7) != 0 ||
		    (p[QUAYI_DQF_DEDUP_KIND] != QUAYI_DQF_DK_ID &&
		        p[QUAYI_DQF_DEDUP_KIND] != QUAYI_DQF_DK_CONTENT))
			return r->err = -EBADMSG;
		if (get64(p + QUAYI_DQF_QID) != r->d->qid || r->d->dedup_seed == NULL)
			return 0;
		k = (struct quayi_qlog_dkey){ get64(p + QUAYI_DQF_DEDUP_KEY_LO),
			get64(p + QUAYI_DQF_DEDUP_KEY_HI), p[QUAYI_DQF_DEDUP_KIND] };
		if (seed_push(r, &k, (int64_t)get64(p + QUAYI_DQF_DEDUP_ACCEPTED), 0) != 0)
			return r->err = -ENOMEM;
		return 0;
	}
	if (type != QUAYI_DQ_ADD && type != QUAYI_DQ_DEL && type != QUAYI_DQ_RETRY)
		return 0; /* another module's record */
	if (len < QUAYI_DQ_DEL_LEN || (type == QUAYI_DQ_DEL && len != QUAYI_DQ_DEL_LEN) ||
	    (type == QUAYI_DQ_RETRY && len != QUAYI_DQ_RETRY_LEN))
		return r->err = -EBADMSG;
	qid = get64(p + QUAYI_DQF_QID);
	did = get64(p + QUAYI_DQF_DID);
	if (type == QUAYI_DQ_ADD && did == 0)
		did = lsn;
	if (did == 0)
		return r->err = -EBADMSG;
	if (type == QUAYI_DQ_ADD) {
		quay_msg *m = NULL;

		if (qid == r->d->qid) {
			struct quayi_qlog_dkey k;
			int rc = img_decode(r->d->pool, p, len, &m);

			if (rc != 0)
				return r->err = rc;
			/* A send was checked against the window: its key, accepted
			 * at its enqueued time (the queue's clock at the check). */
			if (((p[QUAYI_DQF_ADD_FLAGS] >> 1) & 7u) == QUAYI_DQF_O_SEND &&
			    r->d->dedup_key != NULL && r->d->dedup_key(r->d->queue, m, &k) &&
			    seed_push(r, &k, quay_msg_enqueued_ns(m), did) != 0) {
				quay_msg_unref(m);
				return r->err = -ENOMEM;
			}
		} else if (len < QUAYI_DQ_ADD_HDR) {
			return r->err = -EBADMSG;
		}
		if ((e = rfind(r, qid, did, true)) == NULL) {
			quay_msg_unref(m);
			return r->err = -ENOMEM;
		}
		if (e->msg != NULL)
			quay_msg_unref(e->msg);
		e->msg = m;
		return 0;
	}
	if ((e = rfind(r, qid, did, false)) == NULL)
		return 0; /* its ADD was compacted away */
	if (type == QUAYI_DQ_DEL) {
		rdel(r, e);
	} else if (e->msg != NULL) {
		quay_msg_set_attempts(e->msg, get32(p + QUAYI_DQF_RETRY_ATTEMPTS));
		if ((int64_t)get64(p + QUAYI_DQF_RETRY_NOT_BEFORE) < 0)
			return r->err = -EBADMSG;
		quay_msg_set_not_before_ns(e->msg, (int64_t)get64(p + QUAYI_DQF_RETRY_NOT_BEFORE));
	}
	return 0;
}

static int
cmp_did(const void *a, const void *b)
{
	const struct rent *x = a, *y = b;

	return x->did < y->did ? -1 : x->did > y->did;
}

static bool
qid_open(const struct dwal *w, uint64_t qid)
{
	for (const struct quayi_dur *d = w->open; d != NULL; d = d->next)
		if (d->qid == qid)
			return true;
	return false;
}

/* Replay the whole log; restore this queue's live messages (cl write). */
static int
recover_locked(struct quayi_dur *d)
{
	struct replay r = { d, NULL, 15, 0, 0, false, NULL, 0, 0 };
	struct rent *mine = NULL;
	size_t nmine = 0;
	uint64_t foreign = 0, bytes = 0;
	int rc;

	if ((r.tab = quayi_calloc(d->alloc, 16, sizeof(*r.tab))) == NULL)
		return -ENOMEM;
	rc = quay_wal_replay(d->w->wal, 1, replay_visit, &r);
	if (rc != 0 && r.err != 0)
		rc = r.err;
	if (rc == 0) {
		for (size_t i = 0; i <= r.mask; i++)
			if (r.tab[i].did != 0 && r.tab[i].qid == d->qid)
				nmine++;
		if (nmine > d->capacity)
			rc = -ENOSPC;
		else if (nmine != 0 && (mine = quayi_alloc(d->alloc, nmine * sizeof(*mine))) == NULL)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		size_t k = 0;

		for (size_t i = 0; i <= r.mask; i++) {
			if (r.tab[i].did == 0)
				continue;
			if (r.tab[i].qid == d->qid)
				mine[k++] = r.tab[i];
			else if (!qid_open(d->w, r.tab[i].qid))
				foreign++;
		}
		if (nmine != 0)
			qsort(mine, nmine, sizeof(*mine), cmp_did);
		/* The window first (a seed may take a reference to a live
		 * message, which restore then hands to the queue). */
		for (size_t i = 0; i < r.nseeds; i++) {
			struct rent *e =
			    r.seeds[i].did != 0 ? rfind(&r, d->qid, r.seeds[i].did, false) : NULL;

			d->dedup_seed(d->queue, &r.seeds[i].k, r.seeds[i].accepted,
			    e != NULL ? e->msg : NULL);
		}
		for (k = 0; k < nmine; k++) {
			quay_msg *m = mine[k].msg;
			uint32_t sz = (uint32_t)img_size(m);
			int64_t nb = quay_msg_not_before_ns(m);
			uint32_t att = quay_msg_attempts(m);

			msg_set_did(m, mine[k].did);
			idx_put(d, mine[k].did, m, nb, att, sz);
			bytes += sz;
			rc = d->restore(d->queue, m, att, nb);
			if (rc != 0) {
				/* Cannot happen (capacity checked); keep the
				 * message out of the queue but freed below. */
				rc = rc == -EAGAIN ? -ENOSPC : rc;
				for (; k < nmine; k++) {
					idx_del(d, mine[k].did);
					quay_msg_unref(mine[k].msg);
				}
				break;
			}
		}
		/* The messages now belong to the queue. */
		for (size_t i = 0; i <= r.mask; i++)
			if (r.tab[i].qid == d->qid)
				r.tab[i].msg = NULL;
	}
	for (size_t i = 0; i <= r.mask; i++)
		if (r.tab[i].did != 0 && r.tab[i].msg != NULL)
			quay_msg_unref(r.tab[i].msg);
	quayi_free(d->alloc, r.tab, (r.mask + 1) * sizeof(*r.tab));
	quayi_free(d->alloc, r.seeds, r.capseeds * sizeof(*r.seeds));
	quayi_free(d->alloc, mine, nmine * sizeof(*mine));
	if (rc == 0) {
		d->w->foreign_live = foreign;
		live_add(d->w, (int64_t)bytes);
		/* Name the queue in the log once. Best effort: the name is for
		 * operators (quay-wal), the queue works without it; a failure
		 * is counted, and the next attach tries again. */
		if (!r.named && name_append(d) != 0)
			log_error(d->w);
	}
	return rc;
}

static struct dwal *
dwal_get(quay_wal *wal, uint64_t compact_min)
{
	struct dwal *w;

	pthread_mutex_lock(&registry_lock);
	for (w = registry; w != NULL; w = w->next)
		if (w->wal == wal)
			break;
	if (w == NULL && (w = quayi_calloc(quayi_wal_allocator(wal), 1, sizeof(*w))) != NULL) {
		pthread_rwlockattr_t a;

		w->alloc = quayi_wal_allocator(wal);
		pthread_rwlockattr_init(&a);
		/* Writer-preferring: a compaction is not starved by sends. */
		pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&w->cl, &a);
		pthread_rwlockattr_destroy(&a);
		pthread_mutex_init(&w->cmu, NULL);
		w->wal = wal;
		/* The WAL's own limit, never a copy of its formula: a copy
		 * that differs (segment/4 against (segment - 32)/4) refuses
		 * every batch and compaction adding up to the difference. */
		w->batch_limit = (size_t)quayi_wal_batch_max(wal);
		w->compact_min = compact_min;
		w->next = registry;
		registry = w;
	}
	if (w != NULL) {
		w->refs++;
		if (compact_min < w->compact_min)
			w->compact_min = compact_min;
	}
	pthread_mutex_unlock(&registry_lock);
	return w;
}

static void
dwal_put(struct dwal *w)
{
	struct dwal **pp;

	pthread_mutex_lock(&registry_lock);
	if (--w->refs != 0) {
		pthread_mutex_unlock(&registry_lock);
		return;
	}
	for (pp = &registry; *pp != w; pp = &(*pp)->next)
		;
	*pp = w->next;
	pthread_mutex_unlock(&registry_lock);
	pthread_rwlock_destroy(&w->cl);
	pthread_mutex_destroy(&w->cmu);
	quayi_free(w->alloc, w, sizeof(*w));
}

static void
dur_free(struct quayi_dur *d)
{
	quayi_free(d->alloc, d->tab, (d->mask + 1) * sizeof(*d->tab));
	quayi_free(d->alloc, d, sizeof(*d));
}

int
quayi_qlog_attach_wal(struct quayi_qlog *log, const struct quayi_qlog_host *host,
    const struct quay_queue_opts *o)
{
	struct quay_wal_info info;
	struct quayi_dur *d;
	size_t slots = 2;
	int rc;

	if (o->pool == NULL || quay_wal_info(o->wal, &info) != 0 || (info.flags & QUAY_WAL_READONLY))
		return -EINVAL;
	if (info.failed != 0)
		return info.failed;
	/* The DLQ must be durable on the same WAL (dead-lettering is one
	 * batch: remove here + add there). */
	if (host->dlq != NULL && (host->dlq->ops != &dq_ops || host->dlq->domain != (const void *)o->wal))
		return -EINVAL;
	if (strlen(host->name) > QUAY_QUEUE_NAME_MAX)
		return -EINVAL;
	while (slots < 2 * host->capacity)
		slots <<= 1;
	if ((d = quayi_calloc(o->allocator, 1, sizeof(*d))) == NULL)
		return -ENOMEM;
	d->alloc = o->allocator;
	if ((d->tab = quayi_calloc(d->alloc, slots, sizeof(*d->tab))) == NULL) {
		quayi_free(d->alloc, d, sizeof(*d));
		return -ENOMEM;
	}
	pthread_mutex_init(&d->ilock, NULL);
	d->mask = slots - 1;
	strcpy(d->name, host->name);
	d->capacity = host->capacity;
	d->restore = host->restore;
	d->queue = host->queue;
	d->pool = o->pool;
	d->qid = name_qid(d->name);
	d->deliveries = (o->flags & QUAY_QUEUE_NO_DELIVERY_LOG) == 0;
	if (host->dedup_window > 0) {
		d->dedup_key = host->dedup_key;
		d->dedup_seed = host->dedup_seed;
		d->dedup_commit = host->dedup_commit;
		d->dedup_walk = host->dedup_walk;
	}
	d->w = dwal_get(o->wal, o->compact_bytes ? o->compact_bytes : 4 * info.segment_bytes);
	if (d->w == NULL) {
		dur_free(d);
		return -ENOMEM;
	}
	pthread_rwlock_wrlock(&d->w->cl);
	if (qid_open(d->w, d->qid)) {
		rc = -EINVAL; /* this name is open on this WAL */
	} else {
		rc = recover_locked(d);
		if (rc == 0) {
			d->next = d->w->open;
			d->w->open = d;
		}
	}
	pthread_rwlock_unlock(&d->w->cl);
	if (rc != 0) {
		struct dwal *w = d->w;

		/* Messages restored before the failure are dropped by the
		 * queue's own teardown; they stay in the log. */
		for (size_t i = 0; i <= d->mask; i++)
			if (d->tab[i].did != 0)
				msg_set_did(d->tab[i].msg, 0);
		pthread_mutex_destroy(&d->ilock);
		dur_free(d);
		dwal_put(w);
		return rc;
	}
	log->ops = &dq_ops;
	log->ctx = d;
	log->domain = o->wal;
	return 0;
}

/* The queue goes away: leave the WAL (its records stay). */
static void
dq_detach(void *ctx)
{
	struct quayi_dur *d = ctx, **pp;
	struct dwal *w = d->w;
	uint64_t bytes = 0;

	pthread_rwlock_wrlock(&w->cl);
	for (pp = &w->open; *pp != d; pp = &(*pp)->next)
		;
	*pp = d->next;
	/* Its live records stay in the log, now a queue that is not open. */
	w->foreign_live += d->count;
	for (size_t i = 0; i <= d->mask; i++)
		if (d->tab[i].did != 0) {
			bytes += d->tab[i].bytes;
			msg_set_did(d->tab[i].msg, 0);
		}
	live_add(w, -(int64_t)bytes);
	pthread_rwlock_unlock(&w->cl);
	pthread_mutex_destroy(&d->ilock);
	dur_free(d);
	dwal_put(w);
}
