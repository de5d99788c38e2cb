/* SPDX-License-Identifier: MIT */
/**
 * @file quay/wal.h
 * Write-ahead log: a directory of segment files holding CRC32C-checked
 * records, appended by many threads with group commit, recovered after a
 * crash (docs/WAL-FORMAT.md gives the format byte by byte and the
 * durability promise of each sync mode).
 *
 * A record is (type, payload). Every record gets a log sequence number
 * (LSN): the first is 1, they strictly increase and are never reused, not
 * across checkpoints, segment deletion or reopening either. A batch
 * (quay_wal_appendv) is all-or-nothing after a crash. Record types
 * 1..QUAY_WAL_TYPE_MAX belong to the caller; the WAL's own records (types
 * above QUAY_WAL_TYPE_MAX, e.g. checkpoint marks) take LSNs too but are
 * never shown to replay, so the LSNs a caller sees may have gaps.
 *
 * Sync modes (opts.sync_mode):
 *   QUAY_WAL_SYNC      an append returns once its record is on stable
 *                      storage (fdatasync): survives power loss. Threads
 *                      appending at the same time share one fdatasync.
 *   QUAY_WAL_INTERVAL  an append returns once its record is written to
 *                      the file (survives a crash of the process); a
 *                      background thread fdatasyncs every interval_ms, so
 *                      power loss loses at most the last interval_ms.
 *   QUAY_WAL_NONE      an append returns once its record is copied into
 *                      the WAL's buffer; it reaches the file when the
 *                      buffer fills, at quay_wal_sync, at a segment roll
 *                      or at close. A crash may lose whatever was not
 *                      synced; what is recovered is still a valid prefix.
 *
 * Failures: an fdatasync/fsync error puts the WAL in a sticky failed state:
 * every later call that writes or waits returns -EIO (appends waiting for
 * that sync get -EIO too, never success) until it is closed and reopened;
 * a write failing with ENOSPC does the same with -ENOSPC for appends,
 * syncs, checkpoints and close, but the log stays readable: replay and
 * info still work on that handle (replay reads the valid prefix written
 * before the failure). A segment that cannot be created, or whose
 * preallocation cannot grow, for want of space returns -ENOSPC to that
 * append only (nothing appended; later appends may succeed).
 *
 * Concurrency (synchronisation table):
 *
 *   call                              x call                  needs
 *   append, appendv, sync,            x each other            nothing (thread-safe)
 *     durable_lsn, info
 *   replay                            x append/sync/info      nothing
 *   checkpoint                        x append/sync/info      nothing
 *   checkpoint                        x replay, checkpoint    caller serialises
 *   open                              x anything              nothing (a second
 *                                                             writer on the same
 *                                                             directory: -EAGAIN)
 *   close                             x anything              caller serialises: no
 *                                                             other call on the WAL
 *
 * Ordering: a record's bytes are copied out of the caller's buffer before
 * append returns; a replay started after an append returned sees its
 * record.
 */
#ifndef QUAY_WAL_H
#define QUAY_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/alloc.h>
#include <quay/err.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A write-ahead log (opaque). */
typedef struct quay_wal quay_wal;

/** Sync modes (struct quay_wal_opts.sync_mode). */
enum { QUAY_WAL_SYNC = 0, QUAY_WAL_INTERVAL = 1, QUAY_WAL_NONE = 2 };

/** Flag: open to read and verify; never creates, cuts or writes anything.
 *  Takes no lock: while a writer appends, its newest records may look
 *  like a torn tail (reported, not cut). */
#define QUAY_WAL_READONLY 0x1u
/** Flag: on corruption before the end of the log, keep the valid prefix
 *  and cut (or, with READONLY, ignore) everything after it instead of
 *  failing with -EBADMSG. LOSES the records after the damage, including
 *  ones that were acknowledged as durable; the report says what was lost. */
#define QUAY_WAL_SALVAGE 0x2u
/** Flag: create the missing parent directories of dir too (mode 0755),
 *  like mkdir -p. Without it only dir itself is created, and a missing
 *  parent is -ENOENT. Ignored with READONLY (which creates nothing). */
#define QUAY_WAL_MKDIR_PARENTS 0x4u
/** Every flag a caller may pass; other bits get -EINVAL. */
#define QUAY_WAL_FLAGS_ALL (QUAY_WAL_READONLY | QUAY_WAL_SALVAGE | QUAY_WAL_MKDIR_PARENTS)

/** Largest record type a caller may use (types are 1..QUAY_WAL_TYPE_MAX;
 *  0 is invalid, the types above are the WAL's own). */
#define QUAY_WAL_TYPE_MAX 0x7fffffffu

/** Default and bounds of segment_bytes: 64 MiB, 64 KiB .. 1 GiB. */
#define QUAY_WAL_SEGMENT_DEFAULT ((uint64_t)64 << 20)
#define QUAY_WAL_SEGMENT_MIN ((uint64_t)64 << 10)
#define QUAY_WAL_SEGMENT_MAX ((uint64_t)1 << 30)
/** Default max_record: 1 MiB. max_record may be at most a quarter of the
 *  segment size (minus headers) and at most QUAY_WAL_RECORD_MAX. */
#define QUAY_WAL_RECORD_DEFAULT ((uint32_t)1 << 20)
#define QUAY_WAL_RECORD_MAX ((uint32_t)64 << 20)
/** Default INTERVAL period (ms) and the largest accepted. */
#define QUAY_WAL_INTERVAL_DEFAULT 100u
#define QUAY_WAL_INTERVAL_MAX 60000u
/** Most records in one quay_wal_appendv batch. */
#define QUAY_WAL_BATCH_MAX 65536u
/** Room for a segment file name in struct quay_wal_report (with NUL). */
#define QUAY_WAL_NAME_MAX 32

/** Why recovery stopped (struct quay_wal_report.reason). */
enum quay_wal_reason {
	QUAY_WAL_R_NONE = 0,        /**< clean end of the log */
	QUAY_WAL_R_HEADER = 1,      /**< bad segment header (magic, version, crc) */
	QUAY_WAL_R_NAME = 2,        /**< file name does not match its header */
	QUAY_WAL_R_SHORT = 3,       /**< record extends past the end of the file */
	QUAY_WAL_R_LSN = 4,         /**< record LSN out of sequence */
	QUAY_WAL_R_FIELD = 5,       /**< bad type, flags or length field */
	QUAY_WAL_R_CRC = 6,         /**< record checksum mismatch */
	QUAY_WAL_R_PADDING = 7,     /**< non-zero padding after a record */
	QUAY_WAL_R_UNCOMMITTED = 8, /**< batch without its commit record */
	QUAY_WAL_R_GAP = 9,         /**< LSNs missing between two segments */
	QUAY_WAL_R_IO = 10,         /**< a file could not be read */
};

/**
 * What quay_wal_open found (optional out, opts.report). Filled by open
 * even when it fails. offset and segment locate the first bad byte (the
 * damage, or the torn tail that was cut).
 */
struct quay_wal_report {
	/** Segment files scanned. */
	uint32_t segments;
	/** Open's result (0 or the negative error it returned). */
	int status;
	/** A QUAY_WAL_R_* value: why the scan of the log stopped. */
	uint32_t reason;
	/** true if a torn tail of the last segment was cut (READONLY: would be). */
	bool tail_cut;
	/** true if damage was found before data proven durable (mid-log
	 *  corruption): -EBADMSG, or data lost with QUAY_WAL_SALVAGE. */
	bool corrupt;
	/** Segment file holding the first bad byte ("" if none). */
	char segment[QUAY_WAL_NAME_MAX];
	/** Byte offset of the first bad byte in that file. */
	uint64_t offset;
	/** Bytes discarded from that point to the end of that file. */
	uint64_t cut_bytes;
	/** Valid records of uncommitted batches discarded at the tail. */
	uint64_t cut_records;
	/** Segment files removed (a torn, empty last segment; with
	 *  SALVAGE, the segments after the damage). */
	uint32_t segments_removed;
	/** Caller records kept, and the bytes of log data scanned. */
	uint64_t records;
	uint64_t bytes;
	/** LSN range kept (0, 0 when the log holds no record). */
	uint64_t first_lsn;
	uint64_t last_lsn;
	/** The errno of the operating-system call that made open fail
	 *  (e.g. EACCES from mkdir or open; 0 if no system call failed,
	 *  as for -EINVAL or -EBADMSG). status may be more general: a
	 *  read error mid-scan is status -EIO with the OS errno here. */
	int os_errno;
	/** The path that call was given ("" if none): the directory, one
	 *  of its parents, or a segment file. Truncated to fit. */
	char os_path[256];
};

/** Options of quay_wal_open. Start from QUAY_WAL_OPTS_INIT; zero means default. */
struct quay_wal_opts {
	/** sizeof(struct quay_wal_opts). */
	size_t size;
	/** QUAY_WAL_SYNC / QUAY_WAL_INTERVAL / QUAY_WAL_NONE. */
	unsigned sync_mode;
	/** INTERVAL period in ms (0: QUAY_WAL_INTERVAL_DEFAULT; at most
	 *  QUAY_WAL_INTERVAL_MAX). Ignored in the other modes. */
	uint32_t interval_ms;
	/** Segment roll size in bytes (0: QUAY_WAL_SEGMENT_DEFAULT); within
	 *  QUAY_WAL_SEGMENT_MIN..QUAY_WAL_SEGMENT_MAX. The disk a segment
	 *  takes follows its data: preallocated 64 KiB at a time at first,
	 *  doubling as it fills, up to this size (docs/WAL-FORMAT.md). */
	uint64_t segment_bytes;
	/** Largest payload an append accepts (0: QUAY_WAL_RECORD_DEFAULT). */
	uint32_t max_record;
	/** QUAY_WAL_READONLY, QUAY_WAL_SALVAGE, QUAY_WAL_MKDIR_PARENTS. */
	unsigned flags;
	/** Optional: filled by open, also when it fails. */
	struct quay_wal_report *report;
	/** Where the log's memory (buffers, segment table, reads) comes from
	 *  (NULL: the C library); see quay/alloc.h. Kept, not copied: it must
	 *  outlive the log. */
	const struct quay_allocator *allocator;
};

/** Initialiser for struct quay_wal_opts: SYNC mode, every field default. */
/* clang-format off */
#define QUAY_WAL_OPTS_INIT \
	{ sizeof(struct quay_wal_opts), QUAY_WAL_SYNC, 0u, 0u, 0u, 0u, NULL, NULL }
/* clang-format on */

/** One record of a batch (quay_wal_appendv). */
typedef struct quay_wal_rec {
	uint32_t type;    /**< 1..QUAY_WAL_TYPE_MAX */
	const void *data; /**< may be NULL when len is 0 */
	size_t len;       /**< payload bytes, at most max_record */
} quay_wal_rec;

/**
 * Replay callback: called once per caller record with lsn >= from_lsn, in
 * LSN order. data is valid only during the call. A non-zero return stops
 * the replay, and quay_wal_replay returns that value.
 */
typedef int (*quay_wal_visit_fn)(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len);

/** A snapshot of a WAL (quay_wal_info). */
struct quay_wal_info {
	/** Segment files. */
	uint64_t segments;
	/** Caller records in them (WAL-internal records not counted). */
	uint64_t records;
	/** Bytes of log data (headers, records, padding) in them. */
	uint64_t bytes;
	/** Bytes the segment files occupy (the last one's preallocation
	 *  included: below twice its data plus 64 KiB). */
	uint64_t file_bytes;
	/** First and last LSN held (0 when no record is held). */
	uint64_t first_lsn;
	uint64_t last_lsn;
	/** Every LSN <= durable_lsn is on stable storage. */
	uint64_t durable_lsn;
	/** The highest LSN given to quay_wal_checkpoint (0: none). */
	uint64_t checkpoint_lsn;
	/** The LSN the next record will get. */
	uint64_t next_lsn;
	/** 0, or the sticky error (-EIO, -ENOSPC) the WAL has failed with. */
	int failed;
	/** The options in force (defaults resolved). */
	unsigned sync_mode;
	unsigned flags;
	uint32_t interval_ms;
	uint32_t max_record;
	uint64_t segment_bytes;
	/** fdatasyncs the WAL's flushes have issued since open (group commit,
	 *  quay_wal_sync, INTERVAL ticks; not those of segment creation,
	 *  rolls or checkpoints' file deletion). In SYNC mode,
	 *  syncs / appends is the group-commit factor's inverse. */
	uint64_t syncs;
};

/**
 * Open (creating if needed) the log in directory dir and recover it.
 *
 * The directory is created if missing (not with READONLY); its parents
 * too with QUAY_WAL_MKDIR_PARENTS. Recovery scans
 * every segment: the longest valid prefix of whole batches is kept, a torn
 * tail of the last segment (damage after the last record proven durable)
 * is cut and reported, damage anywhere earlier fails with -EBADMSG unless
 * QUAY_WAL_SALVAGE. With INTERVAL a background thread is started.
 *
 * Concurrency: safe from any thread; one writer per directory (an
 * advisory lock on the directory; READONLY opens take no lock).
 * Returns: 0 and *out set; -EINVAL if dir or out is NULL, dir is empty,
 *          opts has a wrong size, unknown flags, an unknown sync mode, an
 *          allocator without alloc or free, or
 *          an out-of-range field; -ENOENT if dir does not exist and
 *          READONLY is set, or a parent of dir does not exist (without
 *          QUAY_WAL_MKDIR_PARENTS); -ENOTDIR if dir or one of its parents
 *          is not a directory; -EACCES if the caller may not read, enter
 *          or write dir (or create it: EPERM is reported as -EACCES);
 *          -EINVAL too if the path is longer than the OS takes;
 *          -EBADMSG on corruption (opts->report says where); -EAGAIN if
 *          another open WAL writes to dir; -ENOSPC if the first segment
 *          cannot be created for want of space; -EIO if the directory or
 *          a segment cannot be read or written for another reason
 *          (a read-only file system, a symlink loop, ...); -ENOMEM. In every case opts->report->os_errno and os_path
 *          name the failing system call's errno and path.
 *          *out is untouched on failure.
 */
QUAY_API int quay_wal_open(const char *dir, const struct quay_wal_opts *opts, quay_wal **out);

/**
 * Append one record; returns when it is as durable as the sync mode
 * promises (see the file comment).
 *
 * Concurrency: thread-safe; concurrent SYNC appends share an fdatasync.
 * Ordering: LSNs follow the order in which appends reserve their place
 *           (serialised by a short internal lock).
 * Returns: 0 and *lsn (if lsn is not NULL) set to the record's LSN;
 *          -EINVAL if w is NULL, type is 0 or above QUAY_WAL_TYPE_MAX,
 *          data is NULL with len > 0, or the WAL is READONLY; -EMSGSIZE
 *          if len > max_record; -EIO / -ENOSPC if the WAL has failed (or
 *          fails now: the record may or may not be found after reopen,
 *          but it was never acknowledged); -ENOSPC also, without failing
 *          the WAL and with nothing appended, when a new segment or more
 *          preallocation finds no space.
 */
QUAY_API int quay_wal_append(quay_wal *w, uint32_t type, const void *data, size_t len, uint64_t *lsn);

/**
 * Append n records as one atomic batch: after a crash either all of them
 * are recovered or none. Their LSNs are consecutive.
 *
 * Concurrency, Ordering: as quay_wal_append.
 * Returns: 0 and *last_lsn (if not NULL) set to the LSN of the last
 *          record; -EINVAL if w or recs is NULL, n is 0 or above
 *          QUAY_WAL_BATCH_MAX, a record is invalid as for
 *          quay_wal_append, or the WAL is READONLY; -EMSGSIZE if a record
 *          is above max_record or the batch's bytes (per record a 32-byte
 *          header plus the payload rounded up to 8) exceed the batch
 *          limit: the smaller of (segment_bytes - 32) / 4 and the ring
 *          buffer, max(min(segment_bytes, 4 MiB), 2 x (32 + max_record
 *          rounded up to 8)); with segments up to 16 MiB that is
 *          (segment_bytes - 32) / 4, e.g. 16,376 bytes for 64 KiB;
 *          -EIO / -ENOSPC as append.
 *          Nothing is appended on failure.
 */
QUAY_API int quay_wal_appendv(quay_wal *w, const quay_wal_rec *recs, size_t n, uint64_t *last_lsn);

/**
 * Make every record up to lsn durable (write and fdatasync), in any sync
 * mode. lsn 0 means every record appended so far.
 *
 * Concurrency: thread-safe; shares fdatasyncs with concurrent appends.
 * Returns: 0 once durable_lsn >= lsn; -EINVAL if w is NULL or lsn was
 *          never given out (above the last LSN); -EIO / -ENOSPC if the
 *          WAL has failed. On a READONLY WAL: 0 (everything read is on disk).
 */
QUAY_API int quay_wal_sync(quay_wal *w, uint64_t lsn);

/**
 * The LSN up to which every record is durable (0 for NULL or none).
 *
 * Concurrency: lock-free; Ordering: acquire (a value read is durable).
 */
QUAY_API uint64_t quay_wal_durable_lsn(const quay_wal *w);

/**
 * Call fn for every caller record with lsn >= from_lsn, in LSN order,
 * re-checking each record's checksum. Records appended while the replay
 * runs may or may not be visited. On a writable WAL buffered records are
 * written to the file first (not synced).
 *
 * On a WAL failed with -ENOSPC, replay reads what was written before the
 * failure: every record acknowledged as written is visited (SYNC and
 * INTERVAL appends that returned 0; a NONE append's record only if its
 * buffer was written before the failure, as after a crash); records
 * never acknowledged (appends that returned an error) are visited if
 * their write completed before the failure and not otherwise. On a WAL failed with -EIO, replay returns
 * -EIO: after a failed fsync the page cache may not match the disk, so
 * reopen (recovery reads the disk) to read it.
 *
 * Concurrency: see the table (not concurrent with checkpoint or close).
 * fn may call quay_wal_append/sync/info (appends on a failed WAL fail).
 * Returns: 0 after the last record; fn's non-zero return value if it
 *          stopped the replay; -EINVAL if w or fn is NULL; -EBADMSG if
 *          a record no longer passes its checksum; -EIO if a segment
 *          cannot be read or the WAL has failed with -EIO; -ENOMEM.
 */
QUAY_API int quay_wal_replay(quay_wal *w, uint64_t from_lsn, quay_wal_visit_fn fn, void *ctx);

/**
 * Declare that the records with an LSN below lsn are no longer needed:
 * a checkpoint mark (a WAL-internal record, made durable) is appended and
 * every segment holding only records below lsn is deleted. The current
 * segment is never deleted. checkpoint_lsn never goes down.
 *
 * Concurrency: see the table.
 * Returns: 0; -EINVAL if w is NULL, lsn is 0 or above the next LSN, or
 *          the WAL is READONLY; -EIO / -ENOSPC if the WAL has failed or a
 *          file cannot be deleted.
 */
QUAY_API int quay_wal_checkpoint(quay_wal *w, uint64_t lsn);

/**
 * Fill *out with a snapshot of the WAL.
 *
 * Concurrency: thread-safe (takes the internal lock briefly).
 * Returns: 0; -EINVAL if w or out is NULL.
 */
QUAY_API int quay_wal_info(const quay_wal *w, struct quay_wal_info *out);

/**
 * Name a QUAY_WAL_R_* reason ("crc mismatch", ...).
 *
 * Returns: a static string; "unknown" for other values.
 */
QUAY_API const char *quay_wal_reason_str(unsigned reason);

/**
 * Write and sync everything appended (unless the WAL has failed), stop
 * the INTERVAL thread, close the files and free the WAL. The WAL is
 * freed even when an error is returned.
 *
 * Concurrency: no other call may use w, now or later.
 * Returns: 0; -EINVAL if w is NULL; -EIO / -ENOSPC if the WAL had failed
 *          or the final write/sync failed (records not durable before
 *          may be lost).
 */
QUAY_API int quay_wal_close(quay_wal *w);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_WAL_H */
