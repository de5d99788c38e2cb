/* SPDX-License-Identifier: MIT */
/*
 * Priority queues in shared memory, between processes: the file format,
 * create and attach, and the waiting calls. docs/PQ.md ("Shared memory")
 * tells the story. Everything that makes a ring safe between processes
 * (src/ring_shm.c: full fences for WAIT-W1/WAIT-S1, shared futexes, the
 * publish and release by compare-and-swap RING-K3/RING-K4, the stall bound
 * and the repairs RING-K1/RING-K2) applies to each level's ring, which
 * carries QUAYI_RING_F_SHARED; the queue's own wait words (pop_event,
 * push_event) get the same treatment here (QUAYI_PQ_F_FENCE, shared
 * futexes).
 *
 * File layout (native byte order; a reader of the other order sees a bad
 * magic). The header is written before the magic, which is stored last
 * with release (attach loads it with acquire):
 *
 *   offset size  field
 *        0    8  magic      QUAYI_PQ_SHM_MAGIC ("QUAYPQ01" little-endian)
 *        8    4  version    QUAYI_PQ_SHM_VERSION (1)
 *       12    4  hdr_size   64: the offset of struct quay_pq
 *       16    8  file_size  64 + quay_pq_memsize(shape)
 *       24    8  capacity   per level
 *       32    4  elem_size
 *       36    4  levels
 *       40    4  flags      QUAY_PQ_WEIGHTED as given to create
 *       44    4  reserved   0
 *       48    8  stall_ns   the stall bound (> 0)
 *       56    8  check      FNV-1a 64 of bytes 8..55, then of the weights
 *       64  256  struct quay_pq (no pointers: rings_off and weights_off
 *                are offsets from it; its alloc pointer must be NULL and
 *                is never read for a shared queue)
 *      320       the weights, then the level rings (as quay_pq_init)
 *
 * Attach rejects (-EBADMSG) a file whose size differs from file_size, any
 * header field out of range, a bad check, a weight out of range, a queue
 * header that disagrees with the file header (offsets, stride, flags, a
 * bitmap bit at or above levels, a scheduler cursor above levels), and a
 * level ring whose header disagrees with the shape or whose head and tail
 * are more than the capacity apart. Nothing the queue's code indexes with
 * (offsets, levels, stride, bitmap bits, cursor) is left unchecked, so a
 * corrupt file cannot make attach, push or pop reach outside the mapping.
 * After attach the processes trust each other (as for rings).
 *
 * Dead processes. A process killed between a level ring's claim and its
 * publish or release holds that slot; the waiting calls here watch the
 * slot they need (push: the tail slot of its level; pop: the head slots of
 * every level, highest first) and, after the stall bound, repair it with
 * the ring's RING-K1/RING-K2 (src/ring_shm.c). A push or pop that loses
 * its slot to a repair returns -EOWNERDEAD (push) or does not deliver the
 * element (pop), exactly as for a ring. A process killed inside
 * quay_pq_close() leaves the queue closing: pushes fail with -EPIPE, and
 * the levels it had not closed yet stay open for pops.
 */
#include "clock.h"
#include "pq_shm.h"
#include "quay_internal.h"
#include "ring_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <quay/pq.h>

#define QUAYI_PQ_SHM_MAGIC UINT64_C(0x3130515059415551) /* "QUAYPQ01" little-endian */
#define QUAYI_PQ_SHM_VERSION 1u
#define QUAYI_PQ_SHM_HDR 64u

struct quayi_pq_shm_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;
	uint64_t file_size;
	uint64_t capacity;
	uint32_t elem_size;
	uint32_t levels;
	uint32_t flags;
	uint32_t reserved;
	int64_t stall_ns;
	uint64_t check;
};
_Static_assert(sizeof(struct quayi_pq_shm_hdr) == QUAYI_PQ_SHM_HDR, "file header is one line");
_Static_assert(offsetof(struct quayi_pq_shm_hdr, check) == 56, "check covers bytes 8..55");

/* The flags of a shared queue and of each of its level rings. */
#define PQ_SHARED_FLAGS (QUAYI_PQ_F_FENCE | QUAYI_PQ_F_SHARED)
#define RING_SHARED_FLAGS (QUAYI_RING_F_FENCE | QUAYI_RING_F_SHARED)

static struct quayi_pq_shm_hdr *
hdr_of(const struct quay_pq *pq)
{
	return (struct quayi_pq_shm_hdr *)(uintptr_t)((const unsigned char *)pq - QUAYI_PQ_SHM_HDR);
}

/* The check of a header whose levels (1..256) and file size were checked:
 * the weights follow the queue header. */
static uint64_t
hdr_check(const struct quayi_pq_shm_hdr *h)
{
	const unsigned char *p = (const unsigned char *)h;
	uint64_t x = quayi_shm_fnv(QUAYI_SHM_FNV_SEED, p + 8, offsetof(struct quayi_pq_shm_hdr, check) - 8);

	return quayi_shm_fnv(x, p + QUAYI_PQ_SHM_HDR + sizeof(struct quay_pq),
	    (size_t)h->levels * sizeof(uint32_t));
}


int
quay_pq_create_shm(const char *name, const struct quay_pq_opts *opts, const struct quay_pq_shm_opts *shm,
    quay_pq **out, int *fd_out)
{
	struct quay_pq_shm_opts defaults = QUAY_PQ_SHM_OPTS_INIT;
	const struct quay_pq_shm_opts *o = shm ? shm : &defaults;
	size_t memsize = quay_pq_memsize(opts), file_size;
	struct quayi_pq_shm_hdr *h;
	unsigned char *base = MAP_FAILED;
	quay_pq *pq;
	int fd, rc;

	if (out == NULL || memsize == 0 || (opts->size == sizeof(*opts) && opts->allocator != NULL) ||
	    o->size != sizeof(*o) || (o->mode & ~0777u) != 0 || o->stall_ns < 0 ||
	    (name != NULL ? !quayi_shm_name_ok(name) : fd_out == NULL))
		return -EINVAL;
	file_size = QUAYI_PQ_SHM_HDR + memsize;
	if ((rc = quayi_shm_file_create(name, "quay-pq", o->mode, file_size, &fd, &base)) != 0)
		return rc;
	pq = (quay_pq *)(void *)(base + QUAYI_PQ_SHM_HDR);
	rc = quay_pq_init(pq, opts);
	if (rc != 0)
		goto fail;
	/* Every level ring takes the shared paths (RING-K1..K4, full fences);
	 * the queue's own wake-ups use full fences and shared futexes. */
	for (unsigned i = 0; i < pq->levels; i++)
		quayi_pq_ring(pq, i)->flags = RING_SHARED_FLAGS;
	pq->flags = (pq->flags & QUAY_PQ_FLAGS_ALL) | PQ_SHARED_FLAGS;

	h = (struct quayi_pq_shm_hdr *)(void *)base;
	h->version = QUAYI_PQ_SHM_VERSION;
	h->hdr_size = QUAYI_PQ_SHM_HDR;
	h->file_size = file_size;
	h->capacity = opts->capacity;
	h->elem_size = (uint32_t)opts->elem_size;
	h->levels = opts->levels;
	h->flags = opts->flags;
	h->stall_ns = o->stall_ns ? o->stall_ns : QUAY_PQ_SHM_STALL_DEFAULT_NS;
	h->check = hdr_check(h);
	/* Release: pairs with the acquire load of the magic in attach; the
	 * header and the initialised queue are visible to whoever sees it. */
	__atomic_store_n(&h->magic, QUAYI_PQ_SHM_MAGIC, __ATOMIC_RELEASE);

	if ((rc = quayi_shm_file_publish(name, fd, fd_out)) != 0)
		goto fail;
	*out = pq;
	return 0;

fail:
	quayi_shm_file_abort(name, fd, base, file_size);
	return rc;
}

/* Whether a level ring's header fits the shape (line 0 is written by init
 * only, apart from closed). */
static bool
ring_ok(const struct quay_ring *r, uint64_t cap, uint32_t esz)
{
	uint64_t head, tail;

	if (r->mask != cap - 1 || r->memsize != quay_ring_memsize((size_t)cap, esz) || r->stride != esz + 8 ||
	    r->elem_size != esz || r->flags != RING_SHARED_FLAGS || r->alloc != NULL ||
	    __atomic_load_n(&r->closed, __ATOMIC_RELAXED) > QUAYI_RING_CLOSED)
		return false;
	/* Relaxed: a snapshot; tail is at most a capacity ahead of head. */
	head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED) & QUAYI_RING_POS_MASK;
	return (head & ~QUAYI_RING_POS_MASK) == 0 && ((tail - head) & QUAYI_RING_POS_MASK) <= cap;
}

/* Whether the mapping of size bytes at base holds a queue of ours. */
static int
validate(const unsigned char *base, size_t size)
{
	const struct quayi_pq_shm_hdr *h = (const struct quayi_pq_shm_hdr *)(const void *)base;
	const struct quay_pq *pq = (const struct quay_pq *)(const void *)(base + QUAYI_PQ_SHM_HDR);
	struct quay_pq_opts shape = QUAY_PQ_OPTS_INIT;
	size_t memsize, ring;
	uint64_t sched;

	/* Acquire: pairs with the release store of the magic in create. */
	if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != QUAYI_PQ_SHM_MAGIC)
		return -EBADMSG;
	if (h->version != QUAYI_PQ_SHM_VERSION || h->hdr_size != QUAYI_PQ_SHM_HDR || h->reserved != 0 ||
	    h->stall_ns <= 0 || (h->flags & ~QUAY_PQ_FLAGS_ALL) != 0)
		return -EBADMSG;
	shape.levels = h->levels;
	shape.flags = h->flags;
	shape.capacity = (size_t)h->capacity;
	shape.elem_size = h->elem_size;
	memsize = quay_pq_memsize(&shape); /* 0: levels, capacity or elem_size out of range */
	if (h->capacity > QUAY_RING_CAPACITY_MAX || memsize == 0 ||
	    h->file_size != QUAYI_PQ_SHM_HDR + memsize || h->file_size != size)
		return -EBADMSG;
	/* The weights lie inside the mapping now (size checked). */
	if (h->check != hdr_check(h))
		return -EBADMSG;
	ring = (quay_ring_memsize((size_t)h->capacity, h->elem_size) + QUAY_CACHELINE - 1) &
	    ~(size_t)(QUAY_CACHELINE - 1);
	if (pq->weights_off != sizeof(*pq) || pq->rings_off != memsize - (size_t)h->levels * ring ||
	    pq->ring_stride != ring || pq->capacity != h->capacity || pq->levels != h->levels ||
	    pq->nwords != (h->levels + 63) / 64 || pq->elem_size != h->elem_size ||
	    pq->flags != (h->flags | PQ_SHARED_FLAGS) || pq->alloc != NULL ||
	    __atomic_load_n(&pq->closed, __ATOMIC_RELAXED) > QUAYI_PQ_CLOSED)
		return -EBADMSG;
	for (unsigned i = 0; i < h->levels; i++) {
		uint32_t w = quayi_pq_weight(pq, i);

		if (w == 0 || w > QUAY_PQ_WEIGHT_MAX)
			return -EBADMSG;
	}
	/* Relaxed: snapshots. Pop indexes levels by bitmap bits and by the
	 * cursor: none may be at or above levels (the cursor may be levels). */
	for (unsigned w = 0; w < QUAYI_PQ_WORDS; w++) {
		uint64_t bits = __atomic_load_n(&pq->bitmap[w], __ATOMIC_RELAXED);
		uint64_t valid = w * 64 >= h->levels ? 0 :
		    h->levels - w * 64 >= 64         ? ~(uint64_t)0 :
		                                       ((uint64_t)1 << (h->levels - w * 64)) - 1;

		if (bits & ~valid)
			return -EBADMSG;
	}
	sched = __atomic_load_n(&pq->sched, __ATOMIC_RELAXED);
	if ((sched >> 32) > h->levels || (uint32_t)sched > QUAY_PQ_WEIGHT_MAX)
		return -EBADMSG;
	for (unsigned i = 0; i < h->levels; i++)
		if (!ring_ok(quayi_pq_ring(pq, i), h->capacity, h->elem_size))
			return -EBADMSG;
	return 0;
}

/* Validate a pq file of size bytes at base, and its element size (0: any). */
static int
validate_elem(const unsigned char *base, size_t size, size_t elem_size)
{
	int rc = validate(base, size);

	if (rc == 0 && elem_size != 0 &&
	    elem_size != ((const struct quayi_pq_shm_hdr *)(const void *)base)->elem_size)
		rc = -EMSGSIZE;
	return rc;
}

int
quay_pq_attach_shm(const char *name, int fd, size_t elem_size, quay_pq **out)
{
	unsigned char *base = NULL;
	int rc;

	if (out == NULL)
		return -EINVAL;
	/* The header, the queue header and one line of weights at least; the
	 * exact size is checked against the header in validate. */
	rc = quayi_shm_file_attach(name, fd, QUAYI_PQ_SHM_HDR + sizeof(struct quay_pq) + QUAY_CACHELINE,
	    UINT64_MAX, validate_elem, elem_size, &base);
	if (rc == 0)
		*out = (quay_pq *)(void *)(base + QUAYI_PQ_SHM_HDR);
	return rc;
}

int
quay_pq_unlink_shm(const char *name)
{
	return quayi_shm_unlink(name);
}

void
quayi_pq_shm_detach(struct quay_pq *pq)
{
	/* From the queue's line 0, checked on attach. */
	munmap((unsigned char *)pq - QUAYI_PQ_SHM_HDR,
	    QUAYI_PQ_SHM_HDR + pq->rings_off + (size_t)pq->levels * pq->ring_stride);
}

void
quayi_pq_shm_wake(uint32_t *event)
{
	/* The pq's words have the ring's format: the ring's shared wake. */
	quayi_ring_shm_wake(event);
}

/* Whether the slot a waiting call needs is held by an unfinished claim:
 * push: the tail slot of its level; pop: the head slot of some level,
 * highest first. *level, *pos, *seq name the state. */
static bool
held(const struct quay_pq *pq, unsigned prio, unsigned *level, uint64_t *pos, uint64_t *seq)
{
	if (prio != UINT_MAX) {
		*level = prio;
		return quayi_ring_shm_held(quayi_pq_ring(pq, prio), true, pos, seq);
	}
	for (unsigned i = pq->levels; i-- > 0;)
		if (quayi_ring_shm_held(quayi_pq_ring(pq, i), false, pos, seq)) {
			*level = i;
			return true;
		}
	return false;
}

/* The sleeper side, fence form: WAIT-S1 is a full fence between setting
 * the sleepers bit and the re-check (pairs with the fence of WAIT-W1 in
 * quayi_pq_wake_if_waiting). Sleeps until woken or wake_at (< 0: none). */
static void
shm_sleep(struct quay_pq *pq, unsigned prio, int64_t wake_at)
{
	bool push = prio != UINT_MAX;
	uint32_t *event = push ? &pq->push_event : &pq->pop_event;
	struct timespec ts, *tsp = NULL;
	/* Relaxed: WAIT-S1 below orders it before the re-check. */
	uint32_t ev = __atomic_fetch_or(event, QUAYI_WAIT_SLEEPERS, __ATOMIC_RELAXED) | QUAYI_WAIT_SLEEPERS;

	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* WAIT-S1 */
	if (push ? quayi_pq_push_ready(pq, prio) : quayi_pq_pop_ready(pq))
		return;
	if (wake_at >= 0) {
		int64_t left = wake_at - quayi_mono_ns();

		if (left <= 0)
			return;
		ts = quayi_ns_to_ts(left);
		tsp = &ts;
	}
	/* Shared futex: the sleepers and the wakers are in other processes. */
	syscall(SYS_futex, event, FUTEX_WAIT, ev, tsp, NULL, 0);
}

static int
try_once(struct quay_pq *pq, unsigned prio, void *elem, unsigned *prio_out)
{
	return prio != UINT_MAX ? quay_pq_push(pq, prio, elem) : quay_pq_pop(pq, elem, prio_out);
}

/* Spins before sleeping, as quayi_wait_for. */
#define QUAYI_PQ_SHM_SPINS 256

int
quayi_pq_shm_wait(struct quay_pq *pq, unsigned prio, void *elem, unsigned *prio_out, int64_t timeout_ns)
{
	int64_t stall = hdr_of(pq)->stall_ns, deadline, since = 0, now, wake_at;
	uint64_t hpos = 0, hseq = 0, pos, seq;
	unsigned hlevel = 0, level;
	bool push = prio != UINT_MAX, seen = false;
	int rc;

	rc = try_once(pq, prio, elem, prio_out);
	if (rc != -EAGAIN)
		return rc;
	if (timeout_ns == 0)
		return -ETIMEDOUT;
	deadline = quayi_deadline(timeout_ns);
	for (;;) {
		for (int i = 0; i < QUAYI_PQ_SHM_SPINS &&
		     !(push ? quayi_pq_push_ready(pq, prio) : quayi_pq_pop_ready(pq));
		     i++)
			quayi_cpu_relax();
		rc = try_once(pq, prio, elem, prio_out);
		if (rc != -EAGAIN)
			return rc;
		now = quayi_mono_ns();
		if (held(pq, prio, &level, &pos, &seq)) {
			if (!seen || level != hlevel || pos != hpos || seq != hseq) {
				seen = true;
				hlevel = level;
				hpos = pos;
				hseq = seq;
				since = now;
			} else if (now - since >= stall) {
				seen = false;
				/* RING-K1/RING-K2 on the level's ring. */
				rc = quayi_ring_shm_repair(quayi_pq_ring(pq, level), push, elem, pos, seq);
				if (rc != -EAGAIN) {
					if (rc == 0 && !push && prio_out != NULL)
						*prio_out = level;
					/* A slot changed hands: sleepers on both sides
					 * re-check (WAIT-W1, fence form). */
					quayi_pq_wake_if_waiting(pq, &pq->pop_event);
					quayi_pq_wake_if_waiting(pq, &pq->push_event);
					return rc;
				}
				continue;
			}
		} else {
			seen = false;
		}
		if (deadline >= 0 && now >= deadline) {
			rc = try_once(pq, prio, elem, prio_out);
			return rc == -EAGAIN ? -ETIMEDOUT : rc;
		}
		wake_at = deadline;
		if (seen && (wake_at < 0 || quayi_ns_add_sat(since, stall) < wake_at))
			wake_at = quayi_ns_add_sat(since, stall);
		shm_sleep(pq, prio, wake_at);
	}
}
