/* SPDX-License-Identifier: MIT */
/* Private declarations of the WAL (src/wal.c, src/wal_io.c, src/crc32c.c;
 * the format and the scanner are in src/wal_scan.h), also used by its
 * tests, crash trials and fuzzer. Never installed. */
#ifndef QUAY_WAL_INTERNAL_H
#define QUAY_WAL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <quay/wal.h>

#include "wal_scan.h"

/* ---- CRC32C (Castagnoli), src/crc32c.c ------------------------------ */

/* crc32c(crc, buf, len): the standard CRC-32C with pre/post inversion, so
 * that quayi_crc32c(0, "123456789", 9) == 0xE3069283 and
 * quayi_crc32c(quayi_crc32c(0, a, n), b, m) == crc of a||b. The dispatcher
 * uses the SSE4.2 instruction when the CPU has it. */
uint32_t quayi_crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t quayi_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* The hardware variant; only call it when quayi_crc32c_hw_available(). */
uint32_t quayi_crc32c_hw(uint32_t crc, const void *buf, size_t len);
bool quayi_crc32c_hw_available(void);

/* ---- file I/O interface, src/wal_io.c -------------------------------- */

/* Open flags of quayi_wal_io.open. */
#define QUAYI_IO_WRITE 0x1u  /* read-write (else read-only) */
#define QUAYI_IO_CREATE 0x2u /* create, truncating an existing file */

/* Every file operation of the WAL goes through this table so that tests
 * can inject faults and simulate power loss. Each returns 0 (or a byte
 * count) or a negative errno. pread/pwrite may be short and may return
 * -EINTR: the WAL retries both. allocate may return -EOPNOTSUPP (ignored).
 * Paths are full paths (directory + "/" + name). */
struct quayi_wal_io {
	int (*open)(void *ctx, const char *path, unsigned flags, int *fd);
	int (*close)(void *ctx, int fd);
	ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, uint64_t off);
	ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len, uint64_t off);
	int (*datasync)(void *ctx, int fd);
	int (*fsync)(void *ctx, int fd);
	int (*truncate)(void *ctx, int fd, uint64_t len);
	int (*allocate)(void *ctx, int fd, uint64_t len);
	int (*size)(void *ctx, int fd, uint64_t *size);
	int (*unlink)(void *ctx, const char *path);
	/* mkdir: 0 if created or already a directory. */
	int (*mkdir)(void *ctx, const char *path);
	/* list: cb once per entry name (not . and ..); a non-zero cb return
	 * stops the listing and is returned. -ENOENT if dir is missing. */
	int (*list)(void *ctx, const char *dir, int (*cb)(void *arg, const char *name), void *arg);
	/* fsync of the directory itself (after creating or deleting files). */
	int (*sync_dir)(void *ctx, const char *dir);
	/* Exclusive advisory lock of the directory: *handle for unlock_dir;
	 * -EAGAIN if another holder has it. */
	int (*lock_dir)(void *ctx, const char *dir, int *handle);
	void (*unlock_dir)(void *ctx, int handle);
};

/* The default implementation: POSIX calls on the real file system. */
extern const struct quayi_wal_io quayi_wal_io_posix;

/* The largest batch quay_wal_appendv accepts on w, in log bytes (per
 * record 32 + its payload rounded up to 8): the smaller of a quarter of
 * the segment after its header, (segment_bytes - 32) / 4, and the ring
 * buffer, max(min(segment_bytes, 4 MiB), 2 x the largest record's size).
 * Derived once, at open (quayi_wal_batch_limit); the durable queue sizes
 * its batches by it. 0 if w is NULL. */
uint64_t quayi_wal_batch_max(const quay_wal *w);
/* The log's allocator (quay_wal_opts.allocator; NULL: the C library). */
const struct quay_allocator *quayi_wal_allocator(const quay_wal *w);
/* The derivation itself, from the resolved options. */
uint64_t quayi_wal_batch_limit(uint64_t segment_bytes, uint32_t max_record);

/* quay_wal_appendv, except that in SYNC mode it returns once the batch
 * is in the WAL's buffer (LSNs given, not yet durable): the caller makes
 * it durable with quay_wal_sync(w, *last_lsn), which shares one
 * fdatasync with every append and sync waiting then (the pipelined
 * durable send, src/queue_async.c). INTERVAL and NONE: as appendv. Same
 * codes as appendv. */
int quayi_wal_append_nowait(quay_wal *w, const quay_wal_rec *recs, size_t n, uint64_t *last_lsn);

/* The sync mode in force (QUAY_WAL_SYNC, ...). */
unsigned quayi_wal_sync_mode(const quay_wal *w);

/* quay_wal_open with another I/O implementation (tests). */
int quayi_wal_open_io(const char *dir, const struct quay_wal_opts *opts, const struct quayi_wal_io *io,
    void *io_ctx, quay_wal **out);

#endif /* QUAY_WAL_INTERNAL_H */
