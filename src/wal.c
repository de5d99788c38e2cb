/* SPDX-License-Identifier: MIT */
/*
 * quay write-ahead log (include/quay/wal.h). The format below is also in
 * docs/WAL-FORMAT.md; keep the two identical in substance.
 *
 * DIRECTORY
 *   A log is a directory of segment files named by the LSN of their first
 *   record: 16 lower-case hex digits + ".wal" (0000000000000001.wal), so
 *   that names sort in LSN order. Other names are ignored. Segments roll
 *   at segment_bytes and are preallocated as they fill (PREALLOC_MIN,
 *   doubled as needed); the unused end reads as zero bytes. A
 *   sealed segment (not the last) is truncated to its end before the next
 *   one is created.
 *
 * SEGMENT HEADER (32 bytes, all integers little-endian)
 *    0  u32 magic        0x4C415751 (the bytes "QWAL")
 *    4  u16 version      1
 *    6  u16 hdr_size     32
 *    8  u32 salt         random, new for every segment file
 *   12  u32 flags        0
 *   16  u64 first_lsn    LSN of the segment's first record (1 .. 2^62)
 *   24  u32 reserved     0
 *   28  u32 hdr_crc      CRC32C of bytes 0..27 (seed 0)
 *
 * RECORD (at offset 32, each following at the previous one's end)
 *    0  u32 crc          CRC32C, seed = salt, over the payload and then
 *                        bytes 4..31 of this header:
 *                          crc = c32c(c32c(salt, payload), hdr + 4, 28)
 *                        where c32c(seed, p, n) is the standard CRC-32C
 *                        (pre/post-inverted) continued from seed
 *    4  u32 len          payload bytes
 *    8  u64 lsn          log sequence number
 *   16  u32 type         1..0x7fffffff caller types; 0x80000000.. the WAL's
 *                        own (0x80000001 checkpoint mark: payload u64 LSN)
 *   20  u32 flags        bit 0 COMMIT: the last record of its batch; other
 *                        bits 0
 *   24  u64 synced       an LSN known durable when this record was
 *                        written (< lsn)
 *   32  payload[len], then zero bytes up to a multiple of 8
 *
 * VALIDITY (a record at offset off, expecting LSN E)
 *   WAL-V1 off + 32 <= file size, and off + 32 + pad8(len) <= file size
 *   WAL-V2 lsn == E: E is first_lsn for the first record, then previous + 1
 *   WAL-V3 type != 0, flags has no bit but COMMIT, synced < lsn
 *   WAL-V4 crc matches (the salt makes a record of another file fail)
 *   WAL-V5 padding bytes are zero
 *   A batch is valid iff all its records are and its last has COMMIT. A
 *   segment's valid prefix ends after its last valid batch; what follows
 *   must be zero bytes. A batch never spans segments. Segment k+1's
 *   first_lsn is segment k's last LSN + 1.
 *
 * RECOVERY (on open)
 *   WAL-R1 Segments are read in name order; the name must match first_lsn.
 *   WAL-R2 Any damage (invalid header, record or batch, non-zero bytes after
 *      the prefix, LSN gap between segments) in a segment other than the
 *      last is corruption: -EBADMSG. Sealed segments were fsynced.
 *   WAL-R3 In the last segment, damage at offset P after the valid prefix
 *      ending with LSN L is corruption (-EBADMSG) if a valid record is
 *      found at an 8-aligned offset after P whose synced field is > L:
 *      that record proves the damaged bytes had been made durable. The
 *      proof is searched at every offset before the end of the non-zero
 *      bytes; the record may extend past that end (it may end in zeros).
 *      Otherwise it is a torn tail (a crash cut short unsynced writes):
 *      the file is truncated to the prefix and reopened for appending.
 *   WAL-R4 A last segment with an invalid header and nothing but zero bytes
 *      after it is a segment whose creation was cut short: it is removed.
 *   WAL-R5 SALVAGE turns WAL-R2/WAL-R3 corruption into a cut at the damage: the rest
 *      of that segment and all later segments are discarded.
 *
 * WRITING
 *   Appenders reserve LSNs and buffer space under w->mu, copy their
 *   records into a ring buffer (the payload CRC is computed before taking
 *   the lock), and leave. A flush takes the bytes [wpos, fill) of the
 *   buffer: one thread at a time (the leader, flushing = true) writes them
 *   with pwrite at their file offsets and, when a waiter needs it,
 *   fdatasyncs, with the lock released (a sync round, numbered gen);
 *   appenders arriving meanwhile wait for the next round, and the next
 *   leader covers all of them with one fdatasync (group commit). The end
 *   of a round wakes only the waiters it made durable (futex word
 *   sround[gen & 1]; they leave without taking the lock) and one waiter
 *   of the next round (sround[(gen + 1) & 1]) in case no one else starts
 *   it. SYNC mode gathers (gather_locked): the thread that would start
 *   the next round first waits, for at most half a round's time, until
 *   as many threads wait as the last round released plus those that
 *   waited meanwhile, since senders released by a round usually send
 *   again at once; without it they split into two cohorts that
 *   alternate, each round covering half of them. In SYNC mode the
 *   leader also overwrites the preallocated space ahead of the records
 *   with zeros, a chunk at a time, so that fdatasync finds written
 *   extents and need not commit the file system journal (zero_ahead).
 *   Since writes leave the buffer in order, the file is a prefix of the
 *   log after a process crash.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "le.h"
#include "wal_internal.h"

#define BUF_MIN ((uint64_t)4 << 20)

struct wal_seg {
	uint64_t first_lsn;
	uint64_t last_lsn;   /* first_lsn - 1 when empty */
	uint64_t end;        /* bytes of log data */
	uint64_t records;    /* caller records */
	uint64_t file_bytes; /* file size (the last segment: its preallocation) */
};

struct quay_wal {
	const struct quayi_wal_io *io;
	void *ioctx;
	char *dir;
	const struct quay_allocator *mem; /* quay_wal_opts.allocator: every block of the log's */
	unsigned mode, flags;
	uint32_t interval_ms, max_record;
	uint64_t seg_bytes;
	uint64_t batch_max; /* largest batch in bytes */
	int lock_handle;
	bool locked;

	pthread_mutex_t mu;
	pthread_cond_t cv; /* a flush round finished / failure */
	/* Sync waiters sleep on the futex word sround[g & 1] until sync
	 * round g has ended, so that the end of a round wakes only the
	 * appenders it made durable (and, when the leader stops, one of
	 * those waiting for the next round). The end of a round bumps the
	 * word under mu (WAL-S2); a woken waiter that finds its LSN durable
	 * (WAL-S1) returns without taking mu, so a round's end costs no
	 * chain of mutex hand-offs. nsleep[p]: threads asleep on word p
	 * (no wake-up system call when none). */
	uint32_t sround[2];
	uint32_t nsleep[2];

	/* Under mu. */
	struct wal_seg *segs;
	size_t nsegs, segcap;
	int fd;        /* the last segment, open for writing (-1: none) */
	uint32_t salt; /* of the last segment; also read relaxed outside mu */
	uint8_t *buf;
	uint64_t bufsize;
	uint64_t fill; /* file offset up to which records are buffered */
	uint64_t wpos; /* ... written to the file */
	uint64_t next_lsn;
	uint64_t written_lsn;
	uint64_t durable_lsn; /* written under mu with release; read lock-free (acquire) */
	uint64_t checkpoint_lsn;
	uint64_t zeroed;    /* the current segment reads as zero bytes from
	                      * here on in the page cache (SYNC: zero-ahead) */
	uint64_t alloc;     /* the current segment is preallocated up to here
	                      * (>= fill; grown by grow_locked) */
	uint64_t gen;       /* sync rounds started (the current/last one) */
	uint64_t round_lsn; /* LSN the current/last sync round makes durable */
	uint64_t sync_want; /* highest LSN a SYNC waiter waits for */
	uint64_t syncs;     /* fdatasyncs of flush rounds (quay_wal_info) */
	bool flushing;
	bool sync_round; /* the flush in flight is a sync round (gen) */
	/* Gathering (SYNC mode, see WRITING): every thread waiting for a
	 * sync is counted once per wait, as covered by the round in flight
	 * (wait_round) or waiting for the next one (wait_next). */
	uint32_t wait_round;
	uint32_t wait_next;
	uint32_t gather_want; /* the last round's waiters + those waiting at its end */
	uint32_t gather_skip; /* rounds left to start without gathering (back-off) */
	uint32_t gather_backoff;
	bool gathering;    /* a waiter holds the next round back (gather_locked) */
	int64_t sync_ns;   /* a sync round's write + fdatasync time (moving average) */
	int64_t gather_ns; /* a gather's time when all came (moving average) */
	int failed;

	/* INTERVAL flusher thread. */
	pthread_t thr;
	bool thr_started;
	bool stop; /* under mu */
	pthread_cond_t tcv;

	/* The first failing system call of open (struct quay_wal_report). */
	int os_errno;
	char os_path[sizeof(((struct quay_wal_report *)0)->os_path)];
};

const char *
quay_wal_reason_str(unsigned reason)
{
	switch (reason) {
	case QUAY_WAL_R_NONE: return "clean end";
	case QUAY_WAL_R_HEADER: return "bad segment header";
	case QUAY_WAL_R_NAME: return "file name does not match the segment header";
	case QUAY_WAL_R_SHORT: return "record extends past the end of the file";
	case QUAY_WAL_R_LSN: return "record LSN out of sequence";
	case QUAY_WAL_R_FIELD: return "bad record field (type, flags, length)";
	case QUAY_WAL_R_CRC: return "record checksum mismatch";
	case QUAY_WAL_R_PADDING: return "non-zero padding after a record";
	case QUAY_WAL_R_UNCOMMITTED: return "batch without its commit record";
	case QUAY_WAL_R_GAP: return "LSNs missing between segments";
	case QUAY_WAL_R_IO: return "file could not be read";
	default: return "unknown";
	}
}

/* ---- file helpers --------------------------------------------------- */

/* An I/O call on path failed with r: remember the first such errno and
 * path for the report, and turn r into what open returns. The causes a
 * user can act on keep their errno (a missing parent, a file where
 * the directory should be, a permission: -EIO would say "durability
 * failed"); anything else is -EIO. */
static int
path_err(quay_wal *w, int r, const char *path)
{
	if (r >= 0 || r == -ENOMEM)
		return r;
	if (w->os_errno == 0) {
		w->os_errno = -r;
		snprintf(w->os_path, sizeof(w->os_path), "%s", path);
	}
	switch (r) {
	case -ENOENT:
	case -ENOTDIR:
	case -EACCES:
	case -ENOSPC:
	case -EAGAIN: return r;
	case -EPERM: return -EACCES;
	case -ENAMETOOLONG: return -EINVAL; /* a path no system call takes */
	default: return -EIO;               /* EROFS, ELOOP, EIO...: os_errno says which */
	}
}

static void
seg_name(char *out, size_t n, uint64_t first_lsn)
{
	snprintf(out, n, "%016" PRIx64 ".wal", first_lsn);
}

static char *
seg_path(const quay_wal *w, uint64_t first_lsn)
{
	char name[QUAY_WAL_NAME_MAX];
	size_t dl = strlen(w->dir);
	char *p;

	seg_name(name, sizeof(name), first_lsn);
	p = quayi_alloc(w->mem, dl + 1 + strlen(name) + 1);
	if (p != NULL)
		sprintf(p, "%s/%s", w->dir, name);
	return p;
}

static void
path_free(const quay_wal *w, char *path)
{
	if (path != NULL)
		quayi_free(w->mem, path, strlen(path) + 1);
}

/* Write all of buf at off: short writes and EINTR are retried. */
static int
write_full(const quay_wal *w, int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = w->io->pwrite(w->ioctx, fd, buf, (size_t)len, off);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO; /* no progress: do not spin */
		buf += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
read_full(const quay_wal *w, int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = w->io->pread(w->ioctx, fd, buf, (size_t)len, off);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO; /* the file is shorter than it said */
		buf += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* The end of the non-zero bytes of fd's first sz bytes, found reading
 * backwards a piece at a time (memory: one piece, whatever sz is). */
#define TAIL_PIECE 65536u
static int
nonzero_end(const quay_wal *w, int fd, uint64_t sz, uint64_t *end)
{
	uint8_t *p = quayi_alloc(w->mem, TAIL_PIECE);
	uint64_t pos = sz;
	int r = 0;

	if (p == NULL)
		return -ENOMEM;
	*end = 0;
	while (pos > 0) {
		uint64_t k = pos % TAIL_PIECE ? pos % TAIL_PIECE : TAIL_PIECE;
		if ((r = read_full(w, fd, p, k, pos - k)) != 0)
			break;
		uint64_t i = k;
		while (i > 0 && p[i - 1] == 0)
			i--;
		if (i > 0) {
			*end = pos - k + i;
			break;
		}
		pos -= k;
	}
	quayi_free(w->mem, p, TAIL_PIECE);
	return r;
}

/* Read a segment file: *buf (from w's allocator: free with
 * quayi_free(w->mem, *buf, *len)) and *len. limit != 0: its first
 * limit bytes. tail != NULL (recovery): only up to a little past its
 * last non-zero byte, *tail being the zero bytes of the file after *len
 * (struct quayi_wal_scan.zero_tail), so that memory scales with the data
 * and not with the preallocated size. */
static int
read_seg(quay_wal *w, uint64_t first_lsn, uint64_t limit, uint8_t **buf, uint64_t *len, uint64_t *tail)
{
	char *path = seg_path(w, first_lsn);
	int fd, r;
	uint64_t sz;

	*buf = NULL;
	*len = 0;
	if (path == NULL)
		return -ENOMEM;
	r = w->io->open(w->ioctx, path, 0, &fd);
	if (r < 0) {
		/* Recovery (tail != NULL) runs inside open, alone: it may note
		 * the errno for the report; a replay must not write w. */
		if (tail != NULL)
			r = path_err(w, r, path);
		path_free(w, path);
		return r == -ENOMEM ? r : -EIO;
	}
	path_free(w, path);
	r = w->io->size(w->ioctx, fd, &sz);
	if (r == 0 && tail != NULL) {
		uint64_t nz = 0, want;
		r = nonzero_end(w, fd, sz, &nz);
		/* Every record header starting before nz lies within buf. */
		want = ((nz + 7u) & ~(uint64_t)7u) + QUAYI_WAL_REC_HDR;
		*tail = sz > want ? sz - want : 0;
		sz -= *tail;
	}
	if (r == 0) {
		if (limit != 0 && sz > limit)
			sz = limit;
		*buf = quayi_alloc(w->mem, (size_t)sz);
		if (*buf == NULL)
			r = -ENOMEM;
		else if ((r = read_full(w, fd, *buf, sz, 0)) == 0)
			*len = sz;
	}
	w->io->close(w->ioctx, fd);
	if (r != 0) {
		quayi_free(w->mem, *buf, (size_t)sz);
		*buf = NULL;
		return r == -ENOMEM ? r : -EIO;
	}
	return 0;
}

static uint32_t
new_salt(void)
{
	uint32_t s = 0;

	if (getrandom(&s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s)) {
		int64_t ns = quayi_mono_ns();
		s = (uint32_t)(ns % QUAYI_NS_PER_SEC) * 2654435761u ^ (uint32_t)(ns / QUAYI_NS_PER_SEC);
	}
	return s;
}

static int
segs_push(quay_wal *w, uint64_t first_lsn)
{
	if (w->nsegs == w->segcap) {
		size_t cap = w->segcap ? w->segcap * 2 : 8;
		struct wal_seg *n = quayi_realloc(w->mem, w->segs, w->segcap * sizeof(*n), cap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		w->segs = n;
		w->segcap = cap;
	}
	struct wal_seg *s = &w->segs[w->nsegs++];
	memset(s, 0, sizeof(*s));
	s->first_lsn = first_lsn;
	s->last_lsn = first_lsn - 1;
	s->end = QUAYI_WAL_SEG_HDR;
	return 0;
}

/* Preallocation follows the data (issue 11: a tiny log used to take a
 * whole 64 MiB segment on disk): a new segment gets PREALLOC_MIN, and
 * whenever an append would pass the preallocated end it doubles (never
 * past segment_bytes). So the disk a segment takes is below twice its
 * data plus PREALLOC_MIN, and a segment's fdatasyncs change its size only
 * at the few doublings (a 64 MiB segment: 10). */
#define PREALLOC_MIN ((uint64_t)64 << 10)

/* The preallocation to have for need bytes, growing from have. */
static uint64_t
prealloc_size(const quay_wal *w, uint64_t have, uint64_t need)
{
	uint64_t t = have > PREALLOC_MIN ? have : PREALLOC_MIN;

	while (t < need && t < w->seg_bytes)
		t *= 2;
	return t < w->seg_bytes ? t : w->seg_bytes;
}

/* Preallocate fd to len bytes: 0 (also where the file system cannot
 * preallocate: writes then grow the file), -ENOSPC, or another error. */
static int
prealloc(const quay_wal *w, int fd, uint64_t len)
{
	int r = w->io->allocate(w->ioctx, fd, len);

	return r == -EOPNOTSUPP ? 0 : r;
}

/* Create segment file first_lsn: header, preallocation (the first step,
 * *alloc), fdatasync, and a directory fsync. On failure the file is
 * removed. *fd open for writing. */
static int
create_seg(quay_wal *w, uint64_t first_lsn, uint32_t salt, int *fdp, uint64_t *alloc)
{
	uint8_t h[QUAYI_WAL_SEG_HDR];
	char *path = seg_path(w, first_lsn);
	int fd, r;

	if (path == NULL)
		return -ENOMEM;
	memset(h, 0, sizeof(h));
	quayi_le_put32(h, QUAYI_WAL_MAGIC);
	quayi_le_put16(h + 4, QUAYI_WAL_VERSION);
	quayi_le_put16(h + 6, QUAYI_WAL_SEG_HDR);
	quayi_le_put32(h + 8, salt);
	quayi_le_put64(h + 16, first_lsn);
	quayi_le_put32(h + 28, quayi_crc32c(0, h, 28));
	r = w->io->open(w->ioctx, path, QUAYI_IO_WRITE | QUAYI_IO_CREATE, &fd);
	if (r < 0) {
		r = path_err(w, r, path);
		path_free(w, path);
		return r;
	}
	*alloc = prealloc_size(w, 0, QUAYI_WAL_SEG_HDR);
	r = prealloc(w, fd, *alloc);
	if (r == 0)
		r = write_full(w, fd, h, sizeof(h), 0);
	if (r == 0)
		r = w->io->datasync(w->ioctx, fd);
	if (r == 0)
		r = w->io->sync_dir(w->ioctx, w->dir);
	if (r != 0) {
		w->io->close(w->ioctx, fd);
		w->io->unlink(w->ioctx, path);
		/* Best effort: a leftover empty segment is removed by WAL-R4. */
		(void)w->io->sync_dir(w->ioctx, w->dir);
		path_free(w, path);
		return r == -ENOSPC ? -ENOSPC : -EIO;
	}
	path_free(w, path);
	*fdp = fd;
	return 0;
}

/* ---- flushing (see WRITING above) ------------------------------------- */

/* The sync waiters' futex words (struct quay_wal: sround, nsleep). */

/* End of a round of parity p, or a failure (mu held): bump the word, so
 * that a waiter between reading it and sleeping does not sleep, and wake
 * up to n of those asleep. */
static void
round_wake(quay_wal *w, uint64_t p, int n)
{
	uint32_t *word = &w->sround[p & 1];

	/* WAL-S2: a bump under mu; sleepers read the word under mu before
	 * sleeping (round_sleep), so either they see the bump (the kernel's
	 * compare fails) or they are asleep and the wake-up finds them.
	 * Relaxed: mu and the futex call order it; what the waiter then
	 * reads is ordered by WAL-S1 or by mu. */
	__atomic_store_n(word, __atomic_load_n(word, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
	/* Relaxed: incremented under mu by every sleeper before it unlocks,
	 * so a sleeper is counted by now. */
	if (__atomic_load_n(&w->nsleep[p & 1], __ATOMIC_RELAXED) != 0)
		syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Sleep (mu held, released meanwhile) until the round of parity p ends
 * or deadline (absolute CLOCK_MONOTONIC ns, < 0: none) passes. Returns
 * true, mu released, if lsn is durable by then and the caller may leave
 * unlocked (unlocked != NULL; *unlocked set); else false with mu held
 * again: the caller re-checks everything. */
static bool
round_sleep(quay_wal *w, uint64_t p, uint64_t lsn, int64_t deadline, bool *unlocked)
{
	uint32_t *word = &w->sround[p & 1];
	/* WAL-S2: read under mu (relaxed: mu orders it against the bump). */
	uint32_t val = __atomic_load_n(word, __ATOMIC_RELAXED);
	struct timespec ts, *tsp = NULL;

	/* Relaxed: a count for round_wake, which reads it under mu. */
	__atomic_fetch_add(&w->nsleep[p & 1], 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&w->mu);
	if (deadline >= 0) {
		int64_t left = quayi_deadline_left(deadline);
		ts = quayi_ns_to_ts(left);
		tsp = &ts;
	}
	if (tsp == NULL || ts.tv_sec > 0 || ts.tv_nsec > 0)
		syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0); /* EINTR/EAGAIN: re-check */
	/* Relaxed: only a count (see round_wake). */
	__atomic_fetch_sub(&w->nsleep[p & 1], 1, __ATOMIC_RELAXED);
	/* WAL-S1: acquire; pairs with the release store of durable_lsn at
	 * the end of the round that made lsn durable (after its fdatasync). */
	if (unlocked != NULL && __atomic_load_n(&w->durable_lsn, __ATOMIC_ACQUIRE) >= lsn) {
		*unlocked = true;
		return true;
	}
	pthread_mutex_lock(&w->mu);
	return false;
}

static void
fail_locked(quay_wal *w, int err)
{
	/* fsyncgate: a failed sync may have dropped dirty pages; never retry. */
	if (w->failed == 0)
		w->failed = err == -ENOSPC ? -ENOSPC : -EIO;
	pthread_cond_broadcast(&w->cv);
	round_wake(w, 0, INT_MAX);
	round_wake(w, 1, INT_MAX);
}

/* Zero-ahead (SYNC mode): before the leader writes records up to `to`,
 * the chunk after them is overwritten with zero bytes (in ZERO_CHUNK
 * pieces, never past the preallocated end `alloc`, so that the file
 * does not grow beyond the preallocation). fallocate leaves "unwritten" extents:
 * the first write into each block changes the extent tree, and the
 * fdatasync that covers it must then commit the file system journal as
 * well as flush the data. Writing zeros ahead turns the extents into
 * written ones once per chunk, so the fdatasync of a group commit flushes
 * only data (measured on ext4: 120-170 us instead of 260-290 us when a
 * sync spans several blocks; docs/WAL-FORMAT.md). The zeros are what a
 * preallocated segment reads as anyway, so the file's content is the same. */
#define ZERO_CHUNK ((uint64_t)1 << 20)
#define ZERO_PIECE 65536u
static const uint8_t zero_piece[ZERO_PIECE];

static int
zero_ahead(const quay_wal *w, int fd, uint64_t zeroed, uint64_t to, uint64_t alloc, uint64_t *zeroed_out)
{
	uint64_t at = zeroed > to ? zeroed : to;
	uint64_t end = (to / ZERO_CHUNK + 1) * ZERO_CHUNK;
	int r = 0;

	if (zeroed >= to + ZERO_CHUNK / 2)
		return 0; /* still far enough ahead */
	if (end > alloc)
		end = alloc;
	while (r == 0 && at < end) {
		uint64_t n = end - at < ZERO_PIECE ? end - at : ZERO_PIECE;
		r = write_full(w, fd, zero_piece, n, at);
		at += n;
	}
	if (r == 0)
		*zeroed_out = end;
	return r;
}

/* Become the leader: write [wpos, fill) and, if sync, fdatasync (one
 * round). Called and returns with mu held; requires !flushing and !failed.
 *
 * Wake-ups: the end of a sync round wakes every sleeper on sround[gen &
 * 1], where only the appenders it made durable sleep; those that arrived
 * during the sync sleep on the other word, and of them only one is woken,
 * to lead the next round should nobody else (the leader returning to its
 * caller and appending again usually starts it first, covering them
 * all). The waiters it made durable leave without taking mu (WAL-S1). A
 * single condition variable once woke every waiter at every round (a
 * thundering herd on two cores: N-1 futex wake-ups and mutex hand-offs
 * per fdatasync, and waiters racing to lead with one record each). */
static int
flush_locked(quay_wal *w, bool sync)
{
	uint64_t from = w->wpos, to = w->fill, lsn_to = w->next_lsn - 1;
	uint64_t zeroed = w->zeroed, alloc = w->alloc;
	/* Only the leader writes durable_lsn, under mu: relaxed read is enough. */
	bool need_sync = sync && __atomic_load_n(&w->durable_lsn, __ATOMIC_RELAXED) < lsn_to;
	int fd = w->fd, r = 0;
	int64_t t0 = 0;

	w->flushing = true;
	w->sync_round = need_sync;
	if (need_sync) {
		/* A new round: waiters for LSNs up to lsn_to wait on
		 * sround[gen & 1], later ones on the other. */
		w->gen++;
		w->round_lsn = lsn_to;
		w->syncs++;
		/* Every waiter is covered now; a gather in progress ends. */
		w->wait_round += w->wait_next;
		w->wait_next = 0;
		w->gathering = false;
		t0 = quayi_mono_ns();
	}
	pthread_mutex_unlock(&w->mu);
	/* [from, to) of the buffer is stable: appenders only copy beyond
	 * fill, and their room is bounded by wpos, which moves only below. */
	if (w->mode == QUAY_WAL_SYNC)
		r = zero_ahead(w, fd, zeroed, to, alloc, &zeroed);
	while (r == 0 && from < to) {
		uint64_t idx = from % w->bufsize, n = to - from;
		if (n > w->bufsize - idx)
			n = w->bufsize - idx;
		r = write_full(w, fd, w->buf + idx, n, from);
		from += n;
	}
	/* A failed sync is -EIO whatever errno said (an fdatasync may report
	 * ENOSPC for a delayed allocation): the page cache may have dropped
	 * the pages, so this WAL must not read them back either. -ENOSPC is
	 * kept for a write that found no room (the log stays readable). */
	if (r == 0 && need_sync && w->io->datasync(w->ioctx, fd) != 0)
		r = -EIO;
	pthread_mutex_lock(&w->mu);
	w->flushing = false;
	w->sync_round = false;
	if (r != 0) {
		fail_locked(w, r);
		return w->failed;
	}
	w->wpos = to;
	w->zeroed = zeroed;
	w->written_lsn = lsn_to;
	pthread_cond_broadcast(&w->cv);
	if (need_sync) {
		int64_t d = quayi_mono_ns() - t0;

		w->sync_ns = w->sync_ns == 0 ? d : w->sync_ns + (d - w->sync_ns) / 8;
		/* The next round gathers the waiters this one releases (they
		 * usually send again at once) and those waiting already. */
		w->gather_want = w->wait_round + w->wait_next;
		w->wait_round = 0;
		/* WAL-S1: release, after the fdatasync; pairs with the acquire
		 * in round_sleep and in quay_wal_durable_lsn. */
		__atomic_store_n(&w->durable_lsn, lsn_to, __ATOMIC_RELEASE);
		round_wake(w, w->gen, INT_MAX);
		if (w->sync_want > lsn_to)
			round_wake(w, w->gen + 1, 1);
	}
	return 0;
}

/* Gather (SYNC mode): hold the next sync round back until the waiters
 * the last round released are waiting again, so that one fdatasync
 * covers them all. Without it the senders split into two cohorts: a
 * round covers only those that came during the previous one (4 of 8
 * sending threads), the others having been released while it started.
 * The caller waits for a sync and would lead the round; !flushing.
 * Returns once the gather is complete (the last waiter to come starts
 * the round), has timed out, or another thread started a round.
 *
 * Bounds: the wait is at most half a sync round's average time, so the
 * disk idles at most that long for a sender that does not come back;
 * after a gather that timed out, the next rounds (1, 2, 4 .. 64) start
 * at once. One sender alone never gathers (gather_want is 1). */
#define GATHER_BACKOFF_MAX 64u

static bool
gather_wanted(quay_wal *w)
{
	if (w->mode != QUAY_WAL_SYNC || w->gathering || w->wait_next >= w->gather_want || w->sync_ns <= 0)
		return false;
	if (w->gather_skip > 0) {
		w->gather_skip--;
		return false;
	}
	return true;
}

static void
gather_locked(quay_wal *w)
{
	uint64_t gen = w->gen;
	int64_t t0 = quayi_mono_ns(), deadline = t0 + w->sync_ns / 2;

	w->gathering = true;
	while (w->gathering && w->gen == gen && !w->failed && quayi_mono_ns() < deadline) {
		/* Waiters of the next round sleep on its word; the one that
		 * completes the gather starts the round itself. */
		(void)round_sleep(w, gen + 1, 0, deadline, NULL);
	}
	if (w->gathering && w->gen == gen) {
		/* Timed out: lead (after a write-only flush in flight). */
		w->gathering = false;
		w->gather_backoff = w->gather_backoff == 0 ? 1 : w->gather_backoff * 2;
		if (w->gather_backoff > GATHER_BACKOFF_MAX)
			w->gather_backoff = GATHER_BACKOFF_MAX;
		w->gather_skip = w->gather_backoff;
	} else if (w->gen != gen) {
		int64_t d = quayi_mono_ns() - t0;

		w->gather_ns = w->gather_ns == 0 ? d : w->gather_ns + (d - w->gather_ns) / 8;
		w->gather_backoff = 0;
	}
}

/* Wait until lsn is written (sync false) or durable (sync true), leading
 * flushes when no one else does. mu held; returned with mu held, except
 * when unlocked != NULL and *unlocked is set true (0 returned: a waiter
 * woken by the round that made lsn durable, which leaves at once). */
static int
wait_locked_x(quay_wal *w, uint64_t lsn, bool sync, bool *unlocked)
{
	bool counted = false, gathered = false;

	for (;;) {
		/* Relaxed: under mu, which every writer of durable_lsn holds. */
		uint64_t have = sync ? __atomic_load_n(&w->durable_lsn, __ATOMIC_RELAXED) : w->written_lsn;
		if (have >= lsn)
			return 0;
		if (w->failed)
			return w->failed;
		if (sync && !counted) {
			counted = true;
			if (w->flushing && w->sync_round && lsn <= w->round_lsn)
				w->wait_round++;
			else
				w->wait_next++;
		}
		if (w->flushing) {
			if (sync && w->sync_want < lsn)
				w->sync_want = lsn;
			/* A sync round in flight covers lsn: wait for its end
			 * (sround[gen & 1]); else for the next round's end, or to be
			 * signalled to lead it (sround[(gen + 1) & 1]): the end of a
			 * round signals one such waiter when sync_want is beyond
			 * it, so one always comes back to lead. A write-only
			 * flush ends with cv. Everything is re-checked under mu
			 * after a wake-up, so a stray one only costs a loop. */
			if (!sync || !w->sync_round) {
				pthread_cond_wait(&w->cv, &w->mu);
				continue;
			}
			/* lsn beyond the round in flight: the next round. */
			if (round_sleep(w, w->gen + (lsn > w->round_lsn), lsn, -1, unlocked))
				return 0;
			continue;
		}
		if (sync && w->gathering && w->wait_next < w->gather_want) {
			/* Another waiter gathers the next round, which covers
			 * lsn: wait for its end (or for the gatherer to give
			 * up: it then leads the round). */
			if (round_sleep(w, w->gen + 1, lsn, -1, unlocked))
				return 0;
			continue;
		}
		if (sync && !gathered && gather_wanted(w)) {
			gathered = true;
			gather_locked(w);
			continue;
		}
		int r = flush_locked(w, sync);
		if (r != 0)
			return r;
	}
}

static int
wait_locked(quay_wal *w, uint64_t lsn, bool sync)
{
	return wait_locked_x(w, lsn, sync, NULL);
}

/* Seal the last segment and start a new one, or, after waiting for a
 * flush (mu released meanwhile), return 0 so that the caller checks again
 * whether a roll is still needed: another thread may have rolled. mu is
 * held throughout the roll's own I/O: rolls are rare (one per
 * segment_bytes) and every appender would wait for it anyway. */
static int
roll_locked(quay_wal *w)
{
	if (w->failed)
		return w->failed;
	if (w->flushing) {
		pthread_cond_wait(&w->cv, &w->mu);
		return 0;
	}
	/* Relaxed: under mu, which every writer of durable_lsn holds. */
	if (w->wpos < w->fill || __atomic_load_n(&w->durable_lsn, __ATOMIC_RELAXED) < w->next_lsn - 1)
		return flush_locked(w, true);
	/* Shrink the sealed file to its data, and make that durable. */
	int r = w->io->truncate(w->ioctx, w->fd, w->fill);
	if (r == 0)
		r = w->io->fsync(w->ioctx, w->fd);
	if (r != 0) {
		fail_locked(w, -EIO);
		return w->failed;
	}
	int nfd;
	uint64_t alloc = 0;
	uint32_t salt = new_salt();
	r = segs_push(w, w->next_lsn);
	if (r != 0)
		return r;
	r = create_seg(w, w->next_lsn, salt, &nfd, &alloc);
	if (r != 0) {
		w->nsegs--;
		if (r != -ENOSPC && r != -ENOMEM) {
			/* E.g. -EACCES: after open, any such failure is -EIO. */
			fail_locked(w, r);
			r = w->failed;
		}
		return r;
	}
	struct wal_seg *old = &w->segs[w->nsegs - 2];
	old->file_bytes = old->end;
	w->segs[w->nsegs - 1].file_bytes = w->alloc = alloc;
	w->io->close(w->ioctx, w->fd);
	w->fd = nfd;
	/* Relaxed: appenders read salt outside mu only as a guess that they
	 * check again under mu. */
	__atomic_store_n(&w->salt, salt, __ATOMIC_RELAXED);
	w->fill = w->wpos = w->zeroed = QUAYI_WAL_SEG_HDR;
	return 0;
}

static void
copy_in(quay_wal *w, const void *src, uint64_t n)
{
	uint64_t idx = w->fill % w->bufsize, k = n;

	if (k > w->bufsize - idx)
		k = w->bufsize - idx;
	memcpy(w->buf + idx, src, (size_t)k);
	if (n > k)
		memcpy(w->buf, (const uint8_t *)src + k, (size_t)(n - k));
	w->fill += n;
}

static const uint8_t zero_pad[8];

/* Grow the current segment's preallocation to cover need bytes (see
 * PREALLOC_MIN), before the records that need it are accepted. Under mu:
 * growing is rare (a few times per segment) and the leader's writes
 * outside mu only go below fill. No room is -ENOSPC for this append
 * only, as when a segment cannot be created; any other failure fails
 * the WAL. */
static int
grow_locked(quay_wal *w, uint64_t need)
{
	uint64_t to = prealloc_size(w, w->alloc, need);
	int r = prealloc(w, w->fd, to);

	if (r == -ENOSPC)
		return r;
	if (r != 0) {
		fail_locked(w, -EIO);
		return w->failed;
	}
	w->alloc = to;
	w->segs[w->nsegs - 1].file_bytes = to;
	return 0;
}

/* Append n records (validated) as one batch; internal types allowed.
 * nowait: in SYNC mode return once the batch is in the buffer (the
 * caller waits with quay_wal_sync: a pipelined append); the other modes
 * do as always. */
static int
put_batch_x(quay_wal *w, const quay_wal_rec *recs, size_t n, uint64_t *last_lsn, bool nowait)
{
	uint64_t total = 0;
	uint32_t crc1 = 0, salt_guess;
	bool unlocked = false;
	int r = 0;

	for (size_t i = 0; i < n; i++)
		total += quayi_wal_rec_size(recs[i].len);
	if (total > w->batch_max)
		return -EMSGSIZE;
	/* The payload CRC of a single record outside the lock (seeded with
	 * the salt, which a roll may change: checked again below). */
	salt_guess = __atomic_load_n(&w->salt, __ATOMIC_RELAXED);
	if (n == 1)
		crc1 = quayi_crc32c(salt_guess, recs[0].data, recs[0].len);

	pthread_mutex_lock(&w->mu);
	for (;;) {
		if (w->failed) {
			r = w->failed;
			goto out;
		}
		if (w->fill + total > w->seg_bytes) {
			r = roll_locked(w);
			if (r != 0)
				goto out;
			continue;
		}
		if (w->fill + total - w->wpos > w->bufsize) {
			if (w->flushing)
				pthread_cond_wait(&w->cv, &w->mu);
			else if ((r = flush_locked(w, false)) != 0)
				goto out;
			continue;
		}
		if (w->fill + total > w->alloc && (r = grow_locked(w, w->fill + total)) != 0)
			goto out;
		break;
	}
	/* The record's synced field (WAL-R3). Relaxed: under mu, which every
	 * writer of durable_lsn holds. */
	uint64_t synced = __atomic_load_n(&w->durable_lsn, __ATOMIC_RELAXED);
	uint64_t first = w->next_lsn;
	uint64_t user = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t h[QUAYI_WAL_REC_HDR];
		uint32_t c;
		quayi_le_put32(h + 4, (uint32_t)recs[i].len);
		quayi_le_put64(h + 8, first + i);
		quayi_le_put32(h + 16, recs[i].type);
		quayi_le_put32(h + 20, i + 1 == n ? QUAYI_WAL_F_COMMIT : 0u);
		quayi_le_put64(h + 24, synced);
		if (n == 1 && salt_guess == w->salt)
			c = crc1;
		else
			c = quayi_crc32c(w->salt, recs[i].data, recs[i].len);
		quayi_le_put32(h, quayi_crc32c(c, h + 4, QUAYI_WAL_REC_HDR - 4));
		copy_in(w, h, sizeof(h));
		if (recs[i].len > 0)
			copy_in(w, recs[i].data, recs[i].len);
		copy_in(w, zero_pad, quayi_wal_rec_size(recs[i].len) - QUAYI_WAL_REC_HDR - recs[i].len);
		if (recs[i].type <= QUAY_WAL_TYPE_MAX)
			user++;
	}
	w->next_lsn = first + n;
	struct wal_seg *cur = &w->segs[w->nsegs - 1];
	cur->last_lsn = w->next_lsn - 1;
	cur->end = w->fill;
	cur->records += user;
	if (last_lsn != NULL)
		*last_lsn = w->next_lsn - 1;

	switch (w->mode) {
	case QUAY_WAL_SYNC:
		if (!nowait)
			r = wait_locked_x(w, w->next_lsn - 1, true, &unlocked);
		break;
	case QUAY_WAL_INTERVAL: r = wait_locked(w, w->next_lsn - 1, false); break;
	default:
		/* NONE: write in large pieces, once half the buffer is used. */
		if (!w->flushing && w->fill - w->wpos >= w->bufsize / 2)
			r = flush_locked(w, false);
		break;
	}
out:
	if (!unlocked)
		pthread_mutex_unlock(&w->mu);
	return r;
}

static int check_recs(const quay_wal *w, const quay_wal_rec *recs, size_t n);

static int
put_batch(quay_wal *w, const quay_wal_rec *recs, size_t n, uint64_t *last_lsn)
{
	return put_batch_x(w, recs, n, last_lsn, false);
}

int
quayi_wal_append_nowait(quay_wal *w, const quay_wal_rec *recs, size_t n, uint64_t *last_lsn)
{
	int r;

	if (w == NULL || recs == NULL || n == 0 || n > QUAY_WAL_BATCH_MAX || (w->flags & QUAY_WAL_READONLY))
		return -EINVAL;
	if ((r = check_recs(w, recs, n)) != 0)
		return r;
	return put_batch_x(w, recs, n, last_lsn, true);
}

unsigned
quayi_wal_sync_mode(const quay_wal *w)
{
	return w->mode;
}

static int
check_recs(const quay_wal *w, const quay_wal_rec *recs, size_t n)
{
	int r = 0;

	for (size_t i = 0; i < n; i++) {
		if (recs[i].type == 0 || recs[i].type > QUAY_WAL_TYPE_MAX ||
		    (recs[i].data == NULL && recs[i].len > 0))
			return -EINVAL;
		if (recs[i].len > w->max_record)
			r = -EMSGSIZE;
	}
	return r;
}

int
quay_wal_append(quay_wal *w, uint32_t type, const void *data, size_t len, uint64_t *lsn)
{
	quay_wal_rec rec = { type, data, len };
	int r;

	if (w == NULL || (w->flags & QUAY_WAL_READONLY))
		return -EINVAL;
	if ((r = check_recs(w, &rec, 1)) != 0)
		return r;
	return put_batch(w, &rec, 1, lsn);
}

int
quay_wal_appendv(quay_wal *w, const quay_wal_rec *recs, size_t n, uint64_t *last_lsn)
{
	int r;

	if (w == NULL || recs == NULL || n == 0 || n > QUAY_WAL_BATCH_MAX || (w->flags & QUAY_WAL_READONLY))
		return -EINVAL;
	if ((r = check_recs(w, recs, n)) != 0)
		return r;
	return put_batch(w, recs, n, last_lsn);
}

int
quay_wal_sync(quay_wal *w, uint64_t lsn)
{
	int r;

	if (w == NULL)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	if (lsn >= w->next_lsn) {
		pthread_mutex_unlock(&w->mu);
		return -EINVAL;
	}
	if (w->flags & QUAY_WAL_READONLY) {
		pthread_mutex_unlock(&w->mu);
		return 0;
	}
	if (lsn == 0)
		lsn = w->next_lsn - 1;
	bool unlocked = false;
	r = w->failed ? w->failed : wait_locked_x(w, lsn, true, &unlocked);
	if (!unlocked)
		pthread_mutex_unlock(&w->mu);
	return r;
}

uint64_t
quay_wal_durable_lsn(const quay_wal *w)
{
	/* WAL-S1: acquire; pairs with the release in flush_locked. */
	return w == NULL ? 0 : __atomic_load_n(&w->durable_lsn, __ATOMIC_ACQUIRE);
}

int
quay_wal_info(const quay_wal *w, struct quay_wal_info *out)
{
	quay_wal *m = (quay_wal *)(uintptr_t)w; /* the lock is not part of the value */

	if (w == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&m->mu);
	out->segments = m->nsegs;
	for (size_t i = 0; i < m->nsegs; i++) {
		out->records += m->segs[i].records;
		out->bytes += m->segs[i].end;
		out->file_bytes += m->segs[i].file_bytes;
	}
	if (m->nsegs > 0 && m->next_lsn > m->segs[0].first_lsn) {
		out->first_lsn = m->segs[0].first_lsn;
		out->last_lsn = m->next_lsn - 1;
	}
	out->durable_lsn = __atomic_load_n(&m->durable_lsn, __ATOMIC_RELAXED); /* under mu */
	out->checkpoint_lsn = m->checkpoint_lsn;
	out->next_lsn = m->next_lsn;
	out->failed = m->failed;
	out->syncs = m->syncs;
	out->sync_mode = m->mode;
	out->flags = m->flags;
	out->interval_ms = m->interval_ms;
	out->max_record = m->max_record;
	out->segment_bytes = m->seg_bytes;
	pthread_mutex_unlock(&m->mu);
	return 0;
}

/* ---- replay ------------------------------------------------------------ */

struct replay_ctx {
	uint64_t from;
	quay_wal_visit_fn fn;
	void *ctx;
};

static int
replay_one(void *arg, uint64_t lsn, uint32_t type, uint32_t flags, const uint8_t *data, uint32_t len)
{
	struct replay_ctx *rc = arg;

	(void)flags;
	if (lsn < rc->from || type > QUAY_WAL_TYPE_MAX)
		return 0;
	return rc->fn(rc->ctx, lsn, type, data, len);
}

int
quay_wal_replay(quay_wal *w, uint64_t from_lsn, quay_wal_visit_fn fn, void *ctx)
{
	struct wal_seg *snap;
	size_t n;
	int r = 0;

	if (w == NULL || fn == NULL)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	if (!(w->flags & QUAY_WAL_READONLY)) {
		r = wait_locked(w, w->next_lsn - 1, false);
		/*
		 * Failed with -ENOSPC: a write found no room. Nothing was
		 * wrong with what had been written before it, so read that:
		 * the file up to wpos (records whose write completed; those
		 * of the failed write and after it were never acknowledged
		 * and stay unread, a partial one beyond wpos included). No
		 * flush is in flight once failed is set (the leader sets it
		 * itself; no flush starts after), but wait for one anyway.
		 * -EIO stays refused: after a failed fsync the page cache may
		 * no longer match the disk (fsyncgate), so what we would read
		 * may not be what recovery reads after a reopen.
		 */
		if (r == -ENOSPC) {
			while (w->flushing)
				pthread_cond_wait(&w->cv, &w->mu);
			r = 0;
		}
		if (r != 0) {
			pthread_mutex_unlock(&w->mu);
			return r;
		}
	}
	n = w->nsegs;
	snap = quayi_alloc(w->mem, n * sizeof(*snap));
	if (snap == NULL) {
		pthread_mutex_unlock(&w->mu);
		return -ENOMEM;
	}
	if (n > 0)
		memcpy(snap, w->segs, n * sizeof(*snap));
	if (n > 0 && !(w->flags & QUAY_WAL_READONLY))
		snap[n - 1].end = w->wpos; /* written: stable bytes of the file */
	pthread_mutex_unlock(&w->mu);

	struct replay_ctx rc = { from_lsn, fn, ctx };
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t *buf;
		uint64_t len;
		if (i + 1 < n && snap[i + 1].first_lsn <= from_lsn)
			continue;
		if (snap[i].end <= QUAYI_WAL_SEG_HDR)
			continue;
		r = read_seg(w, snap[i].first_lsn, snap[i].end, &buf, &len, NULL);
		if (r != 0)
			break;
		struct quayi_wal_scan s = { .buf = buf,
			.len = (size_t)len,
			.last = true,
			.expect_lsn = snap[i].first_lsn,
			.max_record = w->max_record };
		int sr = quayi_wal_scan(&s);
		/* Everything below the snapshot end was valid at open or was
		 * written by us: anything else is corruption since. */
		if (sr < 0 || s.end < snap[i].end)
			r = -EBADMSG;
		else
			r = quayi_wal_walk(buf, snap[i].end, replay_one, &rc);
		quayi_free(w->mem, buf, (size_t)len);
	}
	quayi_free(w->mem, snap, n * sizeof(*snap));
	return r;
}

/* ---- checkpoint -------------------------------------------------------- */

int
quay_wal_checkpoint(quay_wal *w, uint64_t lsn)
{
	uint8_t payload[8];
	quay_wal_rec rec = { QUAYI_WAL_T_CHECKPOINT, payload, sizeof(payload) };
	uint64_t mark;
	uint64_t *del = NULL;
	size_t ndel = 0;
	int r;

	if (w == NULL || lsn == 0 || (w->flags & QUAY_WAL_READONLY))
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	r = lsn > w->next_lsn ? -EINVAL : w->failed;
	pthread_mutex_unlock(&w->mu);
	if (r != 0)
		return r;
	quayi_le_put64(payload, lsn);
	r = put_batch(w, &rec, 1, &mark);
	if (r == 0)
		r = quay_wal_sync(w, mark);
	if (r != 0)
		return r;

	pthread_mutex_lock(&w->mu);
	if (lsn > w->checkpoint_lsn)
		w->checkpoint_lsn = lsn;
	size_t k = 0;
	while (k + 1 < w->nsegs && w->segs[k + 1].first_lsn <= lsn)
		k++;
	if (k > 0) {
		del = quayi_alloc(w->mem, k * sizeof(*del));
		if (del == NULL) {
			pthread_mutex_unlock(&w->mu);
			return -ENOMEM;
		}
		for (size_t i = 0; i < k; i++)
			del[i] = w->segs[i].first_lsn;
		memmove(w->segs, w->segs + k, (w->nsegs - k) * sizeof(*w->segs));
		w->nsegs -= k;
		ndel = k;
	}
	pthread_mutex_unlock(&w->mu);

	/* Oldest first: a crash half-way leaves a gap-free suffix of segments. */
	for (size_t i = 0; i < ndel && r == 0; i++) {
		char *path = seg_path(w, del[i]);
		if (path == NULL) {
			r = -ENOMEM;
			break;
		}
		if (w->io->unlink(w->ioctx, path) != 0)
			r = -EIO;
		path_free(w, path);
	}
	if (ndel > 0 && r == 0 && w->io->sync_dir(w->ioctx, w->dir) != 0) {
		pthread_mutex_lock(&w->mu);
		fail_locked(w, -EIO);
		pthread_mutex_unlock(&w->mu);
		r = -EIO;
	}
	quayi_free(w->mem, del, ndel * sizeof(*del));
	return r;
}

/* ---- INTERVAL thread -------------------------------------------------- */

static void *
interval_main(void *arg)
{
	quay_wal *w = arg;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec ts = quayi_abs_ts(CLOCK_MONOTONIC, (int64_t)w->interval_ms * 1000000);
		pthread_cond_timedwait(&w->tcv, &w->mu, &ts);
		if (w->stop)
			break;
		/* A failure is sticky and reported to every caller; the thread
		 * just keeps idling until close. */
		if (!w->failed)
			(void)wait_locked(w, w->next_lsn - 1, true);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ---- open / close ----------------------------------------------------- */

struct list_ctx {
	uint64_t *v;
	size_t n, cap;
	int err;
	const struct quay_allocator *alloc; /* of v */
};

static int
list_cb(void *arg, const char *name)
{
	struct list_ctx *lc = arg;
	uint64_t v = 0;

	if (strlen(name) != 20 || strcmp(name + 16, ".wal") != 0)
		return 0;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
		if (d < 0)
			return 0;
		v = v << 4 | (uint64_t)d;
	}
	if (lc->n == lc->cap) {
		size_t cap = lc->cap ? lc->cap * 2 : 16;
		uint64_t *nv = quayi_realloc(lc->alloc, lc->v, lc->cap * sizeof(*nv), cap * sizeof(*nv));
		if (nv == NULL)
			return -ENOMEM;
		lc->v = nv;
		lc->cap = cap;
	}
	lc->v[lc->n++] = v;
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void
wal_free(quay_wal *w)
{
	if (w->fd >= 0)
		w->io->close(w->ioctx, w->fd);
	if (w->locked)
		w->io->unlock_dir(w->ioctx, w->lock_handle);
	pthread_cond_destroy(&w->tcv);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	if (w->buf != NULL)
		quayi_free(w->mem, w->buf, (size_t)w->bufsize);
	quayi_free(w->mem, w->segs, w->segcap * sizeof(*w->segs));
	path_free(w, w->dir);
	quayi_free(w->mem, w, sizeof(*w));
}

static void
report_at(struct quay_wal_report *rep, uint64_t first_lsn, uint64_t off, uint32_t reason)
{
	seg_name(rep->segment, sizeof(rep->segment), first_lsn);
	rep->offset = off;
	rep->reason = reason;
}

/* Remove segment files (SALVAGE and WAL-R4). */
static int
remove_segs(quay_wal *w, const uint64_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *path = seg_path(w, v[i]);
		if (path == NULL)
			return -ENOMEM;
		int r = w->io->unlink(w->ioctx, path);
		path_free(w, path);
		if (r != 0)
			return -EIO;
	}
	return n > 0 && w->io->sync_dir(w->ioctx, w->dir) != 0 ? -EIO : 0;
}

/* Keep the valid prefix of a scanned segment as the next of w->segs: its
 * records, its LSNs and its checkpoint marks. The one place both a clean
 * segment and a salvaged one (WAL-R5) are taken in, so that they cannot
 * differ in what they keep (issue 10: the salvage path once forgot the
 * checkpoint). */
static int
keep_seg(quay_wal *w, const struct quayi_wal_scan *s, uint64_t file_bytes, struct quay_wal_report *rep)
{
	int r = segs_push(w, s->first_lsn);

	if (r != 0)
		return r;
	struct wal_seg *g = &w->segs[w->nsegs - 1];
	g->last_lsn = s->last_lsn;
	g->end = s->end;
	g->records = s->user_records;
	g->file_bytes = file_bytes;
	w->next_lsn = s->last_lsn + 1;
	rep->records += s->user_records;
	if (s->checkpoint > w->checkpoint_lsn)
		w->checkpoint_lsn = s->checkpoint;
	return 0;
}

/* What recovery decided about the segments (filled by scan_segs). */
struct recovery {
	size_t keep;     /* segments kept: lc.v[0 .. keep) */
	uint64_t cut_at; /* offset to truncate the last kept segment to (0: none) */
};

/* WAL-R1: read and scan the i-th segment, first_lsn (expecting the LSN after
 * the previous one); *sr is the scan's result, *file_bytes the file's
 * size. Returns 0 or an I/O error (reported). */
static int
scan_one(quay_wal *w, uint64_t first_lsn, size_t i, bool last, struct quayi_wal_scan *s, int *sr,
    uint64_t *file_bytes, struct quay_wal_report *rep)
{
	uint8_t *buf;
	uint64_t len, tail = 0;
	int r = read_seg(w, first_lsn, 0, &buf, &len, &tail);

	rep->segments++;
	if (r != 0) {
		report_at(rep, first_lsn, 0, QUAY_WAL_R_IO);
		return r;
	}
	memset(s, 0, sizeof(*s));
	s->buf = buf;
	s->len = (size_t)len;
	s->zero_tail = tail;
	s->last = last;
	s->expect_lsn = i > 0 ? w->next_lsn : 0;
	s->max_record = w->max_record;
	*sr = quayi_wal_scan(s);
	quayi_free(w->mem, buf, (size_t)len);
	s->buf = NULL;
	rep->bytes += s->end;
	*file_bytes = len + tail;
	if (*sr >= 0 && s->first_lsn != first_lsn) {
		*sr = -EBADMSG;
		s->reason = QUAY_WAL_R_NAME;
		s->bad_off = 0;
	}
	return 0;
}

/* WAL-R2..WAL-R5: act on one segment's scan (sr its result). Sets *stop when no
 * later segment is to be read; returns 0 or -EBADMSG / an error. */
static int
judge_one(quay_wal *w, const uint64_t *v, size_t n, size_t i, const struct quayi_wal_scan *s, int sr,
    uint64_t file_bytes, struct recovery *rc, struct quay_wal_report *rep, bool *stop)
{
	bool last = i + 1 == n;

	*stop = false;
	if (sr < 0 && s->reason == QUAY_WAL_R_HEADER && last && !s->proven) {
		/* WAL-R4: creation cut short; nothing of the log is in it. */
		report_at(rep, v[i], 0, QUAY_WAL_R_HEADER);
		rep->tail_cut = true;
		rep->cut_bytes = s->nonzero_end;
		rep->segments_removed++;
		rc->keep = i;
		*stop = true;
		return 0;
	}
	if (sr < 0) {
		bool hdr_ok = s->reason != QUAY_WAL_R_HEADER && s->reason != QUAY_WAL_R_NAME &&
		    s->reason != QUAY_WAL_R_GAP;
		report_at(rep, v[i],
		    s->reason == QUAY_WAL_R_HEADER || s->reason == QUAY_WAL_R_NAME ? 0 : s->bad_off,
		    s->reason);
		rep->corrupt = true;
		rep->cut_bytes = s->nonzero_end > s->end ? s->nonzero_end - s->end : 0;
		rep->cut_records = s->uncommitted;
		*stop = true;
		if (!(w->flags & QUAY_WAL_SALVAGE))
			return -EBADMSG;
		/* WAL-R5: keep the prefix of this segment (if its header is
		 * sound), drop the rest. */
		rc->keep = hdr_ok ? i + 1 : i;
		rep->segments_removed += (uint32_t)(n - rc->keep);
		if (!hdr_ok)
			return 0;
		rc->cut_at = s->end;
		return keep_seg(w, s, file_bytes, rep);
	}
	int r = keep_seg(w, s, file_bytes, rep);
	if (r == 0 && sr == 1) {
		/* WAL-R3: a torn tail, cut below. */
		report_at(rep, v[i], s->bad_off, s->reason);
		rep->tail_cut = true;
		rep->cut_bytes = s->nonzero_end - s->end;
		rep->cut_records = s->uncommitted;
		rc->cut_at = s->end;
	}
	*stop = r != 0;
	return r;
}

/* Scan the listed segments in order, filling w->segs and the report. */
static int
scan_segs(quay_wal *w, const uint64_t *v, size_t n, struct recovery *rc, struct quay_wal_report *rep)
{
	int r = 0;
	bool stop = false;

	rc->keep = n;
	rc->cut_at = 0;
	for (size_t i = 0; i < n && !stop; i++) {
		struct quayi_wal_scan s;
		uint64_t file_bytes = 0;
		int sr = 0;
		if ((r = scan_one(w, v[i], i, i + 1 == n, &s, &sr, &file_bytes, rep)) != 0)
			break;
		r = judge_one(w, v, n, i, &s, sr, file_bytes, rc, rep, &stop);
	}
	return r;
}

/* Open the last kept segment for appending: cut a torn tail (WAL-R3: a
 * stale valid record must never follow new ones), set the preallocation
 * to the step that covers the data (growing it, or trimming zero bytes
 * preallocated beyond it, as by older versions that preallocated whole
 * segments), and make what is kept durable before calling it durable;
 * then read its salt. */
static int
reopen_last(quay_wal *w, uint64_t cut_at)
{
	struct wal_seg *g = &w->segs[w->nsegs - 1];
	char *path = seg_path(w, g->first_lsn);
	int r;

	if (path == NULL)
		return -ENOMEM;
	r = w->io->open(w->ioctx, path, QUAYI_IO_WRITE, &w->fd);
	if (r != 0)
		r = path_err(w, r, path);
	path_free(w, path);
	/* The file's size once cut; everything past g->end is zero bytes. */
	uint64_t size = cut_at != 0 ? cut_at : g->file_bytes, want = prealloc_size(w, 0, g->end);
	if (want < g->end)
		want = size; /* written with larger segments: left as it is */
	if (r == 0 && (size > want || cut_at != 0))
		r = w->io->truncate(w->ioctx, w->fd, size > want ? want : cut_at);
	if (r == 0 && size < want)
		r = prealloc(w, w->fd, want);
	if (r == 0)
		g->file_bytes = w->alloc = want;
	if (r == 0)
		r = w->io->fsync(w->ioctx, w->fd);
	if (r != 0 && r != -ENOSPC)
		r = -EIO;
	w->fill = w->wpos = w->zeroed = g->end;
	w->salt = 0;
	if (r == 0) {
		uint8_t h[QUAYI_WAL_SEG_HDR];
		r = read_full(w, w->fd, h, sizeof(h), 0) == 0 ? 0 : -EIO;
		w->salt = quayi_le_get32(h + 8);
	}
	return r;
}

/* No segment kept: start the log (a READONLY open only sets the LSN). */
static int
start_first(quay_wal *w)
{
	int r = 0;

	w->next_lsn = w->next_lsn ? w->next_lsn : 1;
	if (w->flags & QUAY_WAL_READONLY)
		return 0;
	uint32_t salt = new_salt();
	r = segs_push(w, w->next_lsn);
	if (r == 0) {
		r = create_seg(w, w->next_lsn, salt, &w->fd, &w->alloc);
		if (r != 0)
			w->nsegs = 0;
		else
			w->segs[0].file_bytes = w->alloc;
	}
	w->salt = salt;
	w->fill = w->wpos = w->zeroed = QUAYI_WAL_SEG_HDR;
	return r;
}

/* Scan all segments (RECOVERY above). Fills w->segs, next_lsn,
 * checkpoint_lsn and the report; cuts the tail unless READONLY. */
static int
recover(quay_wal *w, struct quay_wal_report *rep)
{
	struct list_ctx lc = { NULL, 0, 0, 0, w->mem };
	struct recovery rc = { 0, 0 };
	bool ro = w->flags & QUAY_WAL_READONLY;
	int r = w->io->list(w->ioctx, w->dir, list_cb, &lc);

	if (r != 0) {
		quayi_free(w->mem, lc.v, lc.cap * sizeof(*lc.v));
		return path_err(w, r, w->dir);
	}
	if (lc.n > 1)
		qsort(lc.v, lc.n, sizeof(*lc.v), cmp_u64);
	r = scan_segs(w, lc.v, lc.n, &rc, rep);
	/* Remove what WAL-R4/WAL-R5 dropped, newest first, so that a crash half-way
	 * still leaves a gap-free prefix. */
	for (size_t i = lc.n; r == 0 && !ro && i > rc.keep; i--)
		r = remove_segs(w, &lc.v[i - 1], 1);
	if (r == 0 && w->nsegs > 0 && !ro)
		r = reopen_last(w, rc.cut_at);
	if (r == 0 && w->nsegs == 0)
		r = start_first(w);
	w->written_lsn = w->next_lsn - 1;
	/* Before any other thread exists: relaxed is enough. */
	__atomic_store_n(&w->durable_lsn, w->next_lsn - 1, __ATOMIC_RELAXED);
	if (w->nsegs > 0 && w->next_lsn > w->segs[0].first_lsn) {
		rep->first_lsn = w->segs[0].first_lsn;
		rep->last_lsn = w->next_lsn - 1;
	}
	quayi_free(w->mem, lc.v, lc.cap * sizeof(*lc.v));
	return r;
}

/* QUAY_WAL_MKDIR_PARENTS: create every missing parent of w->dir, from
 * the top down (an existing one is fine: mkdir returns 0 for it). */
static int
mkdir_parents(quay_wal *w)
{
	char *p = quayi_strdup(w->mem, w->dir);
	int r = 0;

	if (p == NULL)
		return -ENOMEM;
	for (char *s = p + 1; r == 0 && *s != '\0'; s++) {
		if (*s != '/' || s[-1] == '/')
			continue;
		*s = '\0';
		r = path_err(w, w->io->mkdir(w->ioctx, p), p);
		*s = '/';
	}
	path_free(w, p);
	return r;
}

/* The ring buffer: room for two largest records, and 4 MiB (or one
 * segment, if smaller) so that writes go out in large pieces. */
static uint64_t
buf_size(uint64_t segment_bytes, uint32_t max_record)
{
	uint64_t n = segment_bytes < BUF_MIN ? segment_bytes : BUF_MIN;

	if (n < 2 * quayi_wal_rec_size(max_record))
		n = 2 * quayi_wal_rec_size(max_record);
	return n;
}

/* The batch limit (wal_internal.h): the one place it is derived. A batch
 * must fit a quarter of a segment (so that a roll leaves room) and the
 * ring buffer (it is copied in whole). */
uint64_t
quayi_wal_batch_limit(uint64_t segment_bytes, uint32_t max_record)
{
	uint64_t lim = (segment_bytes - QUAYI_WAL_SEG_HDR) / 4, buf = buf_size(segment_bytes, max_record);

	return lim < buf ? lim : buf;
}

const struct quay_allocator *
quayi_wal_allocator(const quay_wal *w)
{
	return w->mem;
}

uint64_t
quayi_wal_batch_max(const quay_wal *w)
{
	/* Set by open, never changed: no lock needed. */
	return w != NULL ? w->batch_max : 0;
}

/* The first version of the options (no allocator), or this one. */
static bool
wal_opts_size_ok(size_t size)
{
	return size == sizeof(struct quay_wal_opts) || size == offsetof(struct quay_wal_opts, allocator);
}

int
quayi_wal_open_io(const char *dir, const struct quay_wal_opts *opts, const struct quayi_wal_io *io,
    void *io_ctx, quay_wal **out)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	struct quay_wal_report scratch, *rep;
	quay_wal *w;
	int r;

	if (opts != NULL && wal_opts_size_ok(opts->size) && opts->report != NULL)
		rep = opts->report;
	else
		rep = &scratch;
	memset(rep, 0, sizeof(*rep));
	if (dir == NULL || dir[0] == '\0' || out == NULL || io == NULL) {
		rep->status = -EINVAL;
		return -EINVAL;
	}
	if (opts != NULL) {
		if (!wal_opts_size_ok(opts->size)) {
			rep->status = -EINVAL;
			return -EINVAL;
		}
		memcpy(&o, opts, opts->size);
		o.size = sizeof(o);
	}
	if (o.interval_ms == 0)
		o.interval_ms = QUAY_WAL_INTERVAL_DEFAULT;
	if (o.segment_bytes == 0)
		o.segment_bytes = QUAY_WAL_SEGMENT_DEFAULT;
	if (o.max_record == 0)
		o.max_record = QUAY_WAL_RECORD_DEFAULT;
	if (o.max_record > (o.segment_bytes - QUAYI_WAL_SEG_HDR) / 4 - QUAYI_WAL_REC_HDR - 8 &&
	    opts != NULL && opts->max_record == 0 && o.segment_bytes >= QUAY_WAL_SEGMENT_MIN &&
	    o.segment_bytes <= QUAY_WAL_SEGMENT_MAX)
		/* A default max_record shrinks to fit a small segment. */
		o.max_record = (uint32_t)((o.segment_bytes - QUAYI_WAL_SEG_HDR) / 4 - QUAYI_WAL_REC_HDR - 8);
	if (o.sync_mode > QUAY_WAL_NONE || (o.flags & ~QUAY_WAL_FLAGS_ALL) ||
	    o.interval_ms > QUAY_WAL_INTERVAL_MAX || o.segment_bytes < QUAY_WAL_SEGMENT_MIN ||
	    o.segment_bytes > QUAY_WAL_SEGMENT_MAX || o.max_record > QUAY_WAL_RECORD_MAX ||
	    o.max_record > (o.segment_bytes - QUAYI_WAL_SEG_HDR) / 4 - QUAYI_WAL_REC_HDR - 8 ||
	    quayi_alloc_check(o.allocator) != 0) {
		rep->status = -EINVAL;
		return -EINVAL;
	}

	w = quayi_calloc(o.allocator, 1, sizeof(*w));
	if (w != NULL)
		w->mem = o.allocator;
	if (w == NULL || (w->dir = quayi_strdup(w->mem, dir)) == NULL) {
		quayi_free(o.allocator, w, sizeof(*w));
		rep->status = -ENOMEM;
		return -ENOMEM;
	}
	w->io = io;
	w->ioctx = io_ctx;
	w->mode = o.sync_mode;
	w->flags = o.flags;
	w->interval_ms = o.interval_ms;
	w->max_record = o.max_record;
	w->seg_bytes = o.segment_bytes;
	w->fd = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&w->tcv, &ca);
		pthread_condattr_destroy(&ca);
	}
	w->bufsize = buf_size(o.segment_bytes, o.max_record);
	w->batch_max = quayi_wal_batch_limit(o.segment_bytes, o.max_record);

	if (!(w->flags & QUAY_WAL_READONLY)) {
		r = (w->flags & QUAY_WAL_MKDIR_PARENTS) ? mkdir_parents(w) : 0;
		if (r == 0)
			r = path_err(w, io->mkdir(io_ctx, dir), dir);
		if (r == 0) {
			r = io->lock_dir(io_ctx, dir, &w->lock_handle);
			w->locked = r == 0;
			if (r != -EAGAIN)
				r = path_err(w, r, dir);
		}
		if (r == 0 && (w->buf = quayi_alloc(w->mem, (size_t)w->bufsize)) == NULL)
			r = -ENOMEM;
	} else {
		r = 0;
	}
	if (r == 0)
		r = recover(w, rep);
	if (r == 0 && w->mode == QUAY_WAL_INTERVAL && !(w->flags & QUAY_WAL_READONLY)) {
		if (pthread_create(&w->thr, NULL, interval_main, w) != 0)
			r = -ENOMEM;
		else
			w->thr_started = true;
	}
	rep->status = r;
	rep->os_errno = w->os_errno;
	memcpy(rep->os_path, w->os_path, sizeof(rep->os_path));
	if (r != 0) {
		wal_free(w);
		return r;
	}
	*out = w;
	return 0;
}

int
quay_wal_open(const char *dir, const struct quay_wal_opts *opts, quay_wal **out)
{
	return quayi_wal_open_io(dir, opts, &quayi_wal_io_posix, NULL, out);
}

int
quay_wal_close(quay_wal *w)
{
	int r = 0;

	if (w == NULL)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_broadcast(&w->tcv);
	pthread_mutex_unlock(&w->mu);
	if (w->thr_started)
		pthread_join(w->thr, NULL);
	pthread_mutex_lock(&w->mu);
	if (!(w->flags & QUAY_WAL_READONLY) && w->fd >= 0)
		r = w->failed ? w->failed : wait_locked(w, w->next_lsn - 1, true);
	pthread_mutex_unlock(&w->mu);
	wal_free(w);
	return r;
}
