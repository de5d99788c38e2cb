/* SPDX-License-Identifier: MIT */
/*
 * Rings in shared memory, between processes: the file format, create and
 * attach, and the parts of push, pop and the waiting calls that differ
 * from a ring in one process. docs/RING.md ("Shared memory") tells the
 * story; the algorithm of the ring itself is in impl/ring_inline.h.
 *
 * File layout (native byte order; a reader of the other order sees a bad
 * magic). The header is written before the magic, which is stored last
 * with release (attach loads it with acquire):
 *
 *   offset size  field
 *        0    8  magic      QUAYI_RING_SHM_MAGIC ("QUAYRNG1" little-endian)
 *        8    4  version    QUAYI_RING_SHM_VERSION (1)
 *       12    4  hdr_size   64: the offset of struct quay_ring
 *       16    8  file_size  64 + quay_ring_memsize(capacity, elem_size)
 *       24    8  capacity
 *       32    4  elem_size
 *       36    4  flags      QUAY_RING_SP/SC as given to create
 *       40    8  stall_ns   the stall bound (> 0)
 *       48    8  check      FNV-1a 64 of bytes 8..47
 *       56    8  reserved   0
 *       64  256  struct quay_ring (mask, memsize, stride, elem_size and
 *                flags checked against the header on attach; its alloc
 *                pointer must be NULL and is never read for a shared ring)
 *      320       the slots
 *
 * Attach rejects (-EBADMSG) a file whose size differs from file_size
 * (truncated or extended), any header field out of range, a bad check, a
 * ring header that disagrees with the file header, or head and tail more
 * than the capacity apart. Nothing in the file is a pointer, so nothing
 * in it can make a process read or write outside its mapping.
 *
 * Waking across processes. membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED),
 * the slow side of WAIT-W1 for rings in one process, interrupts only the
 * caller's own threads: a producer in another process would keep its
 * compiler-barrier-only fast path and the sleeper could miss its publish.
 * (MEMBARRIER_CMD_GLOBAL_EXPEDITED reaches other processes, but only
 * those that registered for it; one process that did not, or could not,
 * would lose wake-ups silently, and the choice is per process while the
 * ring's flags are shared.) So a shared ring carries QUAYI_RING_F_FENCE:
 * both sides of WAIT-W1/WAIT-S1 use a full fence, a Dekker pair that holds
 * between processes as between threads. The futexes are shared
 * (FUTEX_WAIT/FUTEX_WAKE without FUTEX_PRIVATE_FLAG): a private futex is
 * keyed by the address space.
 *
 * Close across processes. A single producer claims by storing tail and
 * relies on RING-C2's heavy barrier to meet close; a shared ring keeps the
 * SP flag in its file header but clears it in the ring, so producers
 * claim with the compare-and-swap and close sets bit 63 of tail.
 *
 * Dead processes. A process killed between claim and publish (push) or
 * between claim and release (pop) holds its slot for ever. Slot states
 * tell these holds apart from a plain full or empty ring:
 *   pop side:  the slot at head is free for head (seq == 2 head) and tail
 *              is past head: a producer claimed it and never published;
 *   push side: the slot at tail still belongs to position q = tail - cap
 *              (seq == 2q or 2q + 1) and head is past q: a consumer
 *              claimed it and never released it.
 * A waiting call that sees the same such state (position and seq) for the
 * ring's stall bound presumes the holder dead and repairs:
 *   RING-K1 pop side: claim position head as a pop does (CAS head, or
 *      store it in SC mode), then CAS seq 2 head -> 2 (head + cap): the slot
 *      is free for the next lap and its element skipped (-EOWNERDEAD). If
 *      that CAS fails the element was published meanwhile: pop it.
 *   RING-K2 push side: CAS seq (2q or 2q + 1) -> 2 tail: the slot is free
 *      and the element a dead consumer was reading is dropped.
 * The holder may only have been slow. So on a shared ring producers
 * publish and consumers release with a CAS from the value they expect:
 *   RING-K3 fill: CAS seq 2p -> 2p + 1 (release, as RING-R1); fails if
 *      RING-K1 took the slot: that push returns -EOWNERDEAD.
 *   RING-K4 drain: CAS seq 2p + 1 -> 2 (p + cap) (release, as RING-R2);
 *      fails if RING-K2 took the slot: the copy may be torn, that pop
 *      discards it and returns -EOWNERDEAD.
 * Seq values only grow for a slot, so a CAS cannot succeed on a later lap
 * (no ABA). One window remains, documented in docs/RING.md: a producer
 * stopped for the whole stall bound between its check of seq and the end
 * of its copy can write over the element of the producer that reused the
 * slot. A killed process cannot (it writes nothing more).
 */
#include "clock.h"
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

#include <quay/ring.h>

#define QUAYI_RING_SHM_MAGIC UINT64_C(0x31474e5259415551) /* "QUAYRNG1" little-endian */
#define QUAYI_RING_SHM_VERSION 1u
#define QUAYI_RING_SHM_HDR 64u

struct quayi_ring_shm_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;
	uint64_t file_size;
	uint64_t capacity;
	uint32_t elem_size;
	uint32_t flags;
	int64_t stall_ns;
	uint64_t check;
	uint64_t reserved;
};
_Static_assert(sizeof(struct quayi_ring_shm_hdr) == QUAYI_RING_SHM_HDR, "file header is one line");
_Static_assert(offsetof(struct quayi_ring_shm_hdr, check) == 48, "check covers bytes 8..47");

static struct quayi_ring_shm_hdr *
hdr_of(const struct quay_ring *r)
{
	return (struct quayi_ring_shm_hdr *)(uintptr_t)((const unsigned char *)r - QUAYI_RING_SHM_HDR);
}

uint64_t
quayi_shm_fnv(uint64_t x, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x = (x ^ p[i]) * UINT64_C(0x100000001b3);
	return x;
}

static uint64_t
hdr_check(const struct quayi_ring_shm_hdr *h)
{
	return quayi_shm_fnv(QUAYI_SHM_FNV_SEED, (const unsigned char *)h + 8,
	    offsetof(struct quayi_ring_shm_hdr, check) - 8);
}

bool
quayi_shm_name_ok(const char *name)
{
	size_t n;

	if (name == NULL || name[0] != '/')
		return false;
	n = strlen(name + 1);
	return n >= 1 && n <= NAME_MAX && strchr(name + 1, '/') == NULL;
}

/* The ring flags a shared ring carries for the creator's flags. */
static uint32_t
ring_flags(uint32_t flags)
{
	return (flags & ~QUAY_RING_SP) | QUAYI_RING_F_FENCE | QUAYI_RING_F_SHARED;
}

/* The file of a new shared ring or pq: "/name" made with O_EXCL, or a
 * memfd labelled label (sealable); size bytes allocated now (a full tmpfs
 * gives -ENOSPC here, not SIGBUS when init touches the pages) and mapped.
 * On an error nothing is left behind. */
int
quayi_shm_file_create(const char *name, const char *label, uint32_t mode, size_t size, int *fd_out,
    unsigned char **base_out)
{
	unsigned char *base;
	int fd, rc;

	if (name != NULL)
		fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode ? (mode_t)mode : 0600);
	else
		fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) != 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = posix_fallocate(fd, 0, (off_t)size)) != 0) {
		rc = -rc;
		goto fail;
	}
	base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto fail;
	}
	*fd_out = fd;
	*base_out = base;
	return 0;

fail:
	quayi_shm_file_abort(name, fd, MAP_FAILED, size);
	return rc;
}

/* After the header's magic is stored: seal a memfd (it cannot be resized
 * then, so no attacher can truncate it under the others: SIGBUS; a named
 * file can be, see RING.md), then hand fd out or close it. */
int
quayi_shm_file_publish(const char *name, int fd, int *fd_out)
{
	if (name == NULL && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
		return -errno;
	if (fd_out != NULL)
		*fd_out = fd;
	else
		close(fd);
	return 0;
}

/* Undo quayi_shm_file_create (base MAP_FAILED: not mapped). */
void
quayi_shm_file_abort(const char *name, int fd, unsigned char *base, size_t size)
{
	if (base != MAP_FAILED)
		munmap(base, size);
	close(fd);
	if (name != NULL)
		shm_unlink(name);
}

int
quay_ring_create_shm(const char *name, size_t capacity, size_t elem_size,
    const struct quay_ring_shm_opts *opts, quay_ring **out, int *fd_out)
{
	struct quay_ring_shm_opts defaults = QUAY_RING_SHM_OPTS_INIT;
	const struct quay_ring_shm_opts *o = opts ? opts : &defaults;
	size_t memsize = quay_ring_memsize(capacity, elem_size), file_size;
	struct quayi_ring_shm_hdr *h;
	unsigned char *base = MAP_FAILED;
	quay_ring *r;
	int fd, rc;

	if (out == NULL || memsize == 0 || o->size != sizeof(*o) || (o->flags & ~QUAY_RING_FLAGS_ALL) != 0 ||
	    (o->mode & ~0777u) != 0 || o->stall_ns < 0 ||
	    (name != NULL ? !quayi_shm_name_ok(name) : fd_out == NULL))
		return -EINVAL;
	file_size = QUAYI_RING_SHM_HDR + memsize;
	if ((rc = quayi_shm_file_create(name, "quay-ring", o->mode, file_size, &fd, &base)) != 0)
		return rc;
	r = (quay_ring *)(void *)(base + QUAYI_RING_SHM_HDR);
	rc = quay_ring_init(r, capacity, elem_size, o->flags & ~QUAY_RING_SP);
	if (rc != 0)
		goto fail;
	r->flags = ring_flags(o->flags);

	h = (struct quayi_ring_shm_hdr *)(void *)base;
	h->version = QUAYI_RING_SHM_VERSION;
	h->hdr_size = QUAYI_RING_SHM_HDR;
	h->file_size = file_size;
	h->capacity = capacity;
	h->elem_size = (uint32_t)elem_size;
	h->flags = o->flags;
	h->stall_ns = o->stall_ns ? o->stall_ns : QUAY_RING_SHM_STALL_DEFAULT_NS;
	h->check = hdr_check(h);
	/* Release: pairs with the acquire load of the magic in attach; the
	 * header and the initialised ring are visible to whoever sees it. */
	__atomic_store_n(&h->magic, QUAYI_RING_SHM_MAGIC, __ATOMIC_RELEASE);

	if ((rc = quayi_shm_file_publish(name, fd, fd_out)) != 0)
		goto fail;
	*out = r;
	return 0;

fail:
	quayi_shm_file_abort(name, fd, base, file_size);
	return rc;
}

/* Whether the mapping of size bytes at base holds a ring of ours. */
static int
validate(const unsigned char *base, size_t size)
{
	const struct quayi_ring_shm_hdr *h = (const struct quayi_ring_shm_hdr *)(const void *)base;
	const struct quay_ring *r = (const struct quay_ring *)(const void *)(base + QUAYI_RING_SHM_HDR);
	size_t memsize;
	uint64_t head, tail;

	/* Acquire: pairs with the release store of the magic in create. */
	if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != QUAYI_RING_SHM_MAGIC)
		return -EBADMSG;
	if (h->version != QUAYI_RING_SHM_VERSION || h->hdr_size != QUAYI_RING_SHM_HDR ||
	    h->check != hdr_check(h))
		return -EBADMSG;
	if (h->capacity > QUAY_RING_CAPACITY_MAX || (h->flags & ~QUAY_RING_FLAGS_ALL) != 0 ||
	    h->stall_ns <= 0)
		return -EBADMSG;
	memsize = quay_ring_memsize((size_t)h->capacity, h->elem_size);
	if (memsize == 0 || h->file_size != QUAYI_RING_SHM_HDR + memsize || h->file_size != size)
		return -EBADMSG;
	/* Line 0 of the ring is written by create only (closed by close). */
	if (r->mask != h->capacity - 1 || r->memsize != memsize || r->stride != h->elem_size + 8 ||
	    r->elem_size != h->elem_size || r->flags != ring_flags(h->flags) || r->alloc != NULL ||
	    __atomic_load_n(&r->closed, __ATOMIC_RELAXED) > QUAYI_RING_CLOSED)
		return -EBADMSG;
	/* Relaxed: a snapshot; head never passes tail, and tail is at most a
	 * capacity ahead of head. */
	head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED) & QUAYI_RING_POS_MASK;
	if ((head & ~QUAYI_RING_POS_MASK) != 0 || ((tail - head) & QUAYI_RING_POS_MASK) > h->capacity)
		return -EBADMSG;
	return 0;
}

/* Validate a ring file of size bytes at base, and its element size (0: any). */
static int
validate_elem(const unsigned char *base, size_t size, size_t elem_size)
{
	int rc = validate(base, size);

	if (rc == 0 && elem_size != 0 &&
	    elem_size != ((const struct quayi_ring_shm_hdr *)(const void *)base)->elem_size)
		rc = -EMSGSIZE;
	return rc;
}

int
quayi_shm_file_attach(const char *name, int fd, uint64_t min, uint64_t max,
    int (*check)(const unsigned char *base, size_t size, size_t elem_size), size_t elem_size,
    unsigned char **base_out)
{
	unsigned char *base;
	struct stat st;
	int rc = 0;

	if (name != NULL ? !quayi_shm_name_ok(name) : fd < 0)
		return -EINVAL;
	if (name != NULL && (fd = shm_open(name, O_RDWR | O_CLOEXEC, 0)) < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		goto out;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size < min || (uint64_t)st.st_size > max) {
		rc = -EBADMSG;
		goto out;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		goto out;
	}
	rc = check(base, (size_t)st.st_size, elem_size);
	if (rc != 0)
		munmap(base, (size_t)st.st_size);
	else
		*base_out = base;
out:
	if (name != NULL)
		close(fd);
	return rc;
}

int
quayi_shm_unlink(const char *name)
{
	if (!quayi_shm_name_ok(name))
		return -EINVAL;
	return shm_unlink(name) == 0 ? 0 : -errno;
}

int
quay_ring_attach_shm(const char *name, int fd, size_t elem_size, quay_ring **out)
{
	uint64_t max = QUAYI_RING_SHM_HDR + quay_ring_memsize(QUAY_RING_CAPACITY_MAX, QUAY_RING_ELEM_MAX);
	unsigned char *base = NULL;
	int rc;

	if (out == NULL)
		return -EINVAL;
	rc = quayi_shm_file_attach(name, fd, QUAYI_RING_SHM_HDR + sizeof(struct quay_ring), max,
	    validate_elem, elem_size, &base);
	if (rc == 0)
		*out = (quay_ring *)(void *)(base + QUAYI_RING_SHM_HDR);
	return rc;
}

int
quay_ring_unlink_shm(const char *name)
{
	return quayi_shm_unlink(name);
}

void
quayi_ring_shm_detach(struct quay_ring *r)
{
	/* From the ring's own line 0, checked on attach; a shape that no
	 * longer makes sense leaves the mapping rather than unmap a wrong
	 * range. */
	size_t memsize = quay_ring_memsize((size_t)r->mask + 1, r->elem_size);

	if (memsize != 0)
		munmap((unsigned char *)r - QUAYI_RING_SHM_HDR, QUAYI_RING_SHM_HDR + memsize);
}

void
quayi_ring_shm_wake(uint32_t *event)
{
	/* As quayi_wait_wake (src/wait.c), with a shared futex. Relaxed
	 * load, release CAS: atomic against the sleepers' fetch_or. */
	uint32_t v = __atomic_load_n(event, __ATOMIC_RELAXED);

	while (v & QUAYI_RING_SLEEPERS) {
		/* The counter's unit: bits 1 and 2 are POLLED and FIRED. */
		if (__atomic_compare_exchange_n(event, &v, (v + QUAYI_WAIT_COUNT_ONE) & ~QUAYI_RING_SLEEPERS,
		        false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
			syscall(SYS_futex, event, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
			return;
		}
	}
}

/* WAIT-W1, fence form: after publishing (RING-K3/K4, K1/K2), a full fence,
 * then a relaxed load of the event word; pairs with the fence WAIT-S1 in
 * shm_sleep. */
static void
wake_if_waiting(uint32_t *event)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(event, __ATOMIC_RELAXED) & QUAYI_RING_SLEEPERS)
		quayi_ring_shm_wake(event);
}

size_t
quayi_ring_shm_fill(struct quay_ring *r, uint64_t pos, const void *elems, size_t k)
{
	const unsigned char *src = (const unsigned char *)elems;
	size_t i;

	for (i = 0; i < k; i++, src += r->elem_size) {
		uint64_t p = pos + i, expect = p << 1;
		unsigned char *s = quayi_ring_slot(r, p);

		/* Relaxed: a slot RING-K1 took already is not written at all
		 * (the CAS below decides; see the window in the top comment). */
		if (__atomic_load_n(quayi_ring_seq(s), __ATOMIC_RELAXED) != expect)
			break;
		memcpy(s + 8, src, r->elem_size);
		/* RING-K3: release CAS, pairs with RING-A1 in pop (as RING-R1);
		 * fails if RING-K1 presumed us dead. The rest of a burst stays
		 * claimed: consumers skip it after the stall bound. */
		if (!__atomic_compare_exchange_n(quayi_ring_seq(s), &expect, (p << 1) | 1, false,
		        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			break;
	}
	wake_if_waiting(&r->pop_event);
	return i;
}

size_t
quayi_ring_shm_drain(struct quay_ring *r, uint64_t pos, void *out, size_t k)
{
	unsigned char *dst = (unsigned char *)out;
	uint64_t cap = r->mask + 1;
	size_t got = 0;

	for (size_t i = 0; i < k; i++) {
		uint64_t p = pos + i, expect = (p << 1) | 1;
		unsigned char *s = quayi_ring_slot(r, p);

		memcpy(dst + got * r->elem_size, s + 8, r->elem_size);
		/* RING-K4: release CAS, pairs with RING-A2 in push (as RING-R2);
		 * fails if RING-K2 presumed us dead: the copy may be torn,
		 * the next element overwrites it. */
		if (__atomic_compare_exchange_n(quayi_ring_seq(s), &expect, (p + cap) << 1, false,
		        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			got++;
	}
	wake_if_waiting(&r->push_event);
	return got;
}

/* Whether the slot the waiting side needs is held by a claim that was
 * never completed (the states in the top comment); *pos, *seq say which
 * state, so that the caller can tell whether it persists. */
static bool
held(const struct quay_ring *r, bool push, uint64_t *pos, uint64_t *seq)
{
	uint64_t cap = r->mask + 1, head, tail, q, d;

	/* Relaxed loads: a hint; the repairs re-check with CAS. */
	if (!push) {
		head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
		tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED) & QUAYI_RING_POS_MASK;
		*pos = head;
		*seq = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, head)), __ATOMIC_RELAXED);
		d = (tail - head) & QUAYI_RING_POS_MASK;
		return *seq == head << 1 && d != 0 && d <= cap;
	}
	tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
	if (tail & QUAYI_RING_CLOSED_BIT)
		return false;
	q = (tail - cap) & QUAYI_RING_POS_MASK;
	*pos = tail;
	*seq = __atomic_load_n(quayi_ring_seq(quayi_ring_slot(r, tail)), __ATOMIC_RELAXED);
	head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
	d = (head - q) & QUAYI_RING_POS_MASK;
	return (*seq == q << 1 || *seq == ((q << 1) | 1)) && d != 0 && d <= cap;
}

/* RING-K1: skip the slot at head that a presumed-dead producer claimed. */
static int
repair_pop(struct quay_ring *r, void *out, uint64_t head, uint64_t seq)
{
	uint64_t pos, s, cap = r->mask + 1;
	uint64_t *seqp = quayi_ring_seq(quayi_ring_slot(r, head));

	if (!held(r, false, &pos, &s) || pos != head || s != seq)
		return -EAGAIN;
	/* Claim the position as a pop does; the CAS elects one repairer. */
	if (r->flags & QUAY_RING_SC)
		__atomic_store_n(&r->head, (head + 1) & QUAYI_RING_POS_MASK, __ATOMIC_RELAXED);
	else if (!__atomic_compare_exchange_n(&r->head, &pos, (head + 1) & QUAYI_RING_POS_MASK, false,
	             __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return -EAGAIN;
	/* Release: pairs with RING-A2 of the next lap's producer, as RING-R2
	 * does (we read nothing, but the slot changes hands). Fails only if
	 * the element was published meanwhile (RING-K3 came first). */
	s = head << 1;
	if (__atomic_compare_exchange_n(seqp, &s, (head + cap) << 1, false, __ATOMIC_RELEASE,
	        __ATOMIC_RELAXED)) {
		wake_if_waiting(&r->push_event);
		wake_if_waiting(&r->pop_event); /* head moved: sleepers re-check */
		return -EOWNERDEAD;
	}
	return quayi_ring_shm_drain(r, head, out, 1) == 1 ? 0 : -EOWNERDEAD;
}

/* RING-K2: free the slot at tail that a presumed-dead consumer claimed. */
static int
repair_push(struct quay_ring *r, uint64_t tail, uint64_t seq)
{
	uint64_t pos, s;

	if (!held(r, true, &pos, &s) || pos != tail || s != seq)
		return -EAGAIN;
	/* Release: pairs with RING-A2 of our own retry and of other
	 * producers, as RING-R2 does. Fails if the consumer released the
	 * slot meanwhile (RING-K4) or another producer repaired it. */
	if (!__atomic_compare_exchange_n(quayi_ring_seq(quayi_ring_slot(r, tail)), &s, tail << 1, false,
	        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		return -EAGAIN;
	wake_if_waiting(&r->push_event);
	wake_if_waiting(&r->pop_event);
	return -EOWNERDEAD;
}

bool
quayi_ring_shm_held(const struct quay_ring *r, bool push, uint64_t *pos, uint64_t *seq)
{
	return held(r, push, pos, seq);
}

int
quayi_ring_shm_repair(struct quay_ring *r, bool push, void *elem, uint64_t pos, uint64_t seq)
{
	return push ? repair_push(r, pos, seq) : repair_pop(r, elem, pos, seq);
}

/* The sleeper side, fence form: WAIT-S1 is a full fence between setting
 * the sleepers bit and the re-check (pairs with the fence of WAIT-W1 in
 * wake_if_waiting). Sleeps until woken or wake_at (absolute, < 0: none). */
static void
shm_sleep(struct quay_ring *r, bool push, int64_t wake_at)
{
	uint32_t *event = push ? &r->push_event : &r->pop_event;
	struct timespec ts, *tsp = NULL;
	/* Relaxed: WAIT-S1 below orders it before the re-check. */
	uint32_t ev = __atomic_fetch_or(event, QUAYI_RING_SLEEPERS, __ATOMIC_RELAXED) | QUAYI_RING_SLEEPERS;

	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* WAIT-S1 */
	if (push ? quayi_ring_push_ready(r) : quayi_ring_pop_ready(r))
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

/* Spins before sleeping, as quayi_wait_for. */
#define QUAYI_RING_SHM_SPINS 256

int
quayi_ring_shm_wait(struct quay_ring *r, bool push, void *elem, int64_t timeout_ns)
{
	int64_t stall = hdr_of(r)->stall_ns, deadline, since = 0, now, wake_at;
	uint64_t hpos = 0, hseq = 0, pos, seq;
	bool seen = false;
	int rc;

	rc = push ? quay_ring_push(r, elem) : quay_ring_pop(r, elem);
	if (rc != -EAGAIN)
		return rc;
	if (timeout_ns == 0)
		return -ETIMEDOUT;
	deadline = quayi_deadline(timeout_ns);
	for (;;) {
		for (int i = 0;
		     i < QUAYI_RING_SHM_SPINS && !(push ? quayi_ring_push_ready(r) : quayi_ring_pop_ready(r));
		     i++)
			quayi_cpu_relax();
		rc = push ? quay_ring_push(r, elem) : quay_ring_pop(r, elem);
		if (rc != -EAGAIN)
			return rc;
		now = quayi_mono_ns();
		if (held(r, push, &pos, &seq)) {
			if (!seen || pos != hpos || seq != hseq) {
				seen = true;
				hpos = pos;
				hseq = seq;
				since = now;
			} else if (now - since >= stall) {
				seen = false;
				rc = push ? repair_push(r, pos, seq) : repair_pop(r, elem, pos, seq);
				if (rc != -EAGAIN)
					return rc;
				continue;
			}
		} else {
			seen = false;
		}
		if (deadline >= 0 && now >= deadline) {
			rc = push ? quay_ring_push(r, elem) : quay_ring_pop(r, elem);
			return rc == -EAGAIN ? -ETIMEDOUT : rc;
		}
		wake_at = deadline;
		if (seen && (wake_at < 0 || quayi_ns_add_sat(since, stall) < wake_at))
			wake_at = quayi_ns_add_sat(since, stall);
		shm_sleep(r, push, wake_at);
	}
}
