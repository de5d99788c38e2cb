/* SPDX-License-Identifier: MIT */
/*
 * An in-memory, fault-injecting implementation of the WAL's file I/O
 * interface (struct quayi_wal_io, src/wal_internal.h), for the unit tests
 * (tests/unit/test_wal.c) and the fuzzer. Header-only (static functions).
 *
 * It models one directory. Each file keeps two images: cur (what reads
 * return: the page cache) and syn (what survived the last fsync or
 * fdatasync: the disk). A file created since the last directory fsync is
 * "not durable" as a name. Faults:
 *   - short writes and EINTR (percent chances),
 *   - EIO (or sync_errno) from the n-th fdatasync/fsync and every later
 *     one (the data stays unsynced),
 *   - ENOSPC once the files would exceed a byte quota (pwrite and
 *     allocate; allocate can also be made "unsupported"),
 *   - a power cut, now (memfs_crash) or at the n-th operation
 *     (crash_at_op): every 512-byte sector that differs between cur and
 *     syn is kept, dropped (reverted to syn) or garbled (its bytes written
 *     since the last sync become random), names that were
 *     never made durable vanish or stay, and the file system goes dead
 *     (every later call fails with EIO and changes nothing) until
 *     memfs_revive().
 * Limits: unlinks are durable at once (a deleted file never comes back).
 */
#ifndef QUAY_WAL_MEMFS_H
#define QUAY_WAL_MEMFS_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "../../src/wal_internal.h"
#include "test_util.h"

#define MEMFS_FILES 64
#define MEMFS_FDS 64
#define MEMFS_SECTOR 512

enum { MEMFS_MIX = 0, MEMFS_KEEP = 1, MEMFS_DROP = 2, MEMFS_GARBLE = 3 };

struct memfs_file {
	char name[48];
	bool exists;
	bool name_durable;
	uint8_t *cur;
	size_t cur_len, cur_cap;
	uint8_t *syn;
	size_t syn_len;
};

struct memfs {
	pthread_mutex_t mu;
	struct memfs_file f[MEMFS_FILES];
	int fd_file[MEMFS_FDS]; /* -1: free */
	bool dir_exists;
	bool locked;
	bool dead;
	uint64_t rng;
	/* faults */
	unsigned short_pct; /* chance of a short write */
	unsigned eintr_pct; /* chance of EINTR from pwrite/pread */
	long sync_fail_at;  /* the n-th (1-based) sync and later fail; 0 never */
	int sync_errno;     /* their errno (0: EIO) */
	long syncs;
	uint64_t quota;   /* bytes over all files; 0: unlimited */
	bool no_allocate; /* allocate returns EOPNOTSUPP */
	long crash_at_op; /* power cut at the n-th operation; 0 never */
	int crash_policy; /* MEMFS_* for crash_at_op */
	long ops;
	/* counters */
	long short_writes, eintrs, enospcs, crashes;
};

static inline void
memfs_init(struct memfs *fs, uint64_t seed)
{
	memset(fs, 0, sizeof(*fs));
	pthread_mutex_init(&fs->mu, NULL);
	for (int i = 0; i < MEMFS_FDS; i++)
		fs->fd_file[i] = -1;
	fs->rng = seed | 1;
}

static inline void
memfs_fini(struct memfs *fs)
{
	for (int i = 0; i < MEMFS_FILES; i++) {
		free(fs->f[i].cur);
		free(fs->f[i].syn);
	}
	pthread_mutex_destroy(&fs->mu);
}

static inline const char *
memfs_base(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

static inline struct memfs_file *
memfs_find(struct memfs *fs, const char *name)
{
	for (int i = 0; i < MEMFS_FILES; i++)
		if (fs->f[i].exists && strcmp(fs->f[i].name, name) == 0)
			return &fs->f[i];
	return NULL;
}

static inline int
memfs_reserve(struct memfs_file *f, size_t len)
{
	if (len <= f->cur_cap)
		return 0;
	size_t cap = f->cur_cap ? f->cur_cap : 4096;
	while (cap < len)
		cap *= 2;
	uint8_t *n = realloc(f->cur, cap);
	if (n == NULL)
		return -ENOMEM;
	memset(n + f->cur_cap, 0, cap - f->cur_cap);
	f->cur = n;
	f->cur_cap = cap;
	return 0;
}

static inline uint64_t
memfs_used(const struct memfs *fs)
{
	uint64_t u = 0;
	for (int i = 0; i < MEMFS_FILES; i++)
		if (fs->f[i].exists)
			u += fs->f[i].cur_len;
	return u;
}

/* Set a file's length (zero-filled when growing). */
static inline int
memfs_set_len(struct memfs_file *f, size_t len)
{
	if (len > f->cur_len) {
		if (memfs_reserve(f, len) != 0)
			return -ENOMEM;
		memset(f->cur + f->cur_len, 0, len - f->cur_len);
	} else if (f->cur != NULL) {
		memset(f->cur + len, 0, f->cur_len - len);
	}
	f->cur_len = len;
	return 0;
}

static inline void
memfs_sync_file(struct memfs_file *f)
{
	free(f->syn);
	f->syn = malloc(f->cur_len ? f->cur_len : 1);
	if (f->cur_len)
		memcpy(f->syn, f->cur, f->cur_len);
	f->syn_len = f->cur_len;
}

/* The power cut (mu held). */
static inline void
memfs_crash_locked(struct memfs *fs, int policy)
{
	for (int i = 0; i < MEMFS_FILES; i++) {
		struct memfs_file *f = &fs->f[i];
		if (!f->exists)
			continue;
		if (!f->name_durable &&
		    (policy == MEMFS_DROP || (policy == MEMFS_MIX && qt_rand(&fs->rng) % 2))) {
			f->exists = false;
			free(f->cur);
			free(f->syn);
			memset(f, 0, sizeof(*f));
			continue;
		}
		size_t maxl = f->cur_len > f->syn_len ? f->cur_len : f->syn_len;
		size_t nl = f->syn_len;
		if (policy == MEMFS_KEEP || (policy == MEMFS_MIX && qt_rand(&fs->rng) % 2))
			nl = f->cur_len;
		uint8_t *out = calloc(maxl ? maxl : 1, 1);
		for (size_t s = 0; s < maxl; s += MEMFS_SECTOR) {
			size_t e = s + MEMFS_SECTOR < maxl ? s + MEMFS_SECTOR : maxl;
			bool differs = false;
			for (size_t k = s; k < e && !differs; k++) {
				uint8_t c = k < f->cur_len ? f->cur[k] : 0,
				        y = k < f->syn_len ? f->syn[k] : 0;
				differs = c != y;
			}
			int pick = policy == MEMFS_MIX ? (int)(qt_rand(&fs->rng) % 3) + 1 : policy;
			for (size_t k = s; k < e; k++) {
				uint8_t c = k < f->cur_len ? f->cur[k] : 0,
				        y = k < f->syn_len ? f->syn[k] : 0;
				if (!differs || pick == MEMFS_KEEP)
					out[k] = c;
				else if (pick == MEMFS_DROP)
					out[k] = y;
				else if (c != y)
					/* Power-safe overwrite (as SQLite assumes): only
					 * bytes changed since the sync are garbled, the
					 * rest of the sector keeps its synced value (and
					 * space allocated but never written reads as
					 * zero, as fallocate's unwritten extents do). */
					out[k] = (uint8_t)qt_rand(&fs->rng);
				else
					out[k] = y;
			}
		}
		free(f->cur);
		f->cur = out;
		f->cur_cap = maxl ? maxl : 1;
		memfs_set_len(f, nl);
		f->cur_len = nl;
		memfs_sync_file(f);
		f->name_durable = true;
	}
	for (int i = 0; i < MEMFS_FDS; i++)
		fs->fd_file[i] = -1;
	fs->locked = false;
	fs->dead = true;
	fs->crashes++;
}

static inline void
memfs_crash(struct memfs *fs, int policy)
{
	pthread_mutex_lock(&fs->mu);
	memfs_crash_locked(fs, policy);
	pthread_mutex_unlock(&fs->mu);
}

static inline void
memfs_revive(struct memfs *fs)
{
	pthread_mutex_lock(&fs->mu);
	fs->dead = false;
	fs->crash_at_op = 0;
	pthread_mutex_unlock(&fs->mu);
}

/* Entry of every operation: counts it, maybe crashes. false: dead. */
static inline bool
memfs_enter(struct memfs *fs)
{
	pthread_mutex_lock(&fs->mu);
	if (fs->dead)
		return false;
	fs->ops++;
	if (fs->crash_at_op > 0 && fs->ops >= fs->crash_at_op) {
		memfs_crash_locked(fs, fs->crash_policy);
		return false;
	}
	return true;
}

static inline struct memfs_file *
memfs_fd(struct memfs *fs, int fd)
{
	if (fd < 0 || fd >= MEMFS_FDS || fs->fd_file[fd] < 0)
		return NULL;
	return &fs->f[fs->fd_file[fd]];
}

#define MEMFS_ENTER(fs) \
	do { \
		if (!memfs_enter(fs)) { \
			pthread_mutex_unlock(&(fs)->mu); \
			return -EIO; \
		} \
	} while (0)
#define MEMFS_RET(fs, v) \
	do { \
		pthread_mutex_unlock(&(fs)->mu); \
		return (v); \
	} while (0)

static inline int
memfs_open(void *ctx, const char *path, unsigned flags, int *fd)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	const char *name = memfs_base(path);
	struct memfs_file *f = memfs_find(fs, name);
	if (f == NULL) {
		if (!(flags & QUAYI_IO_CREATE))
			MEMFS_RET(fs, -ENOENT);
		for (int i = 0; i < MEMFS_FILES && f == NULL; i++)
			if (!fs->f[i].exists)
				f = &fs->f[i];
		if (f == NULL)
			MEMFS_RET(fs, -ENOSPC);
		memset(f, 0, sizeof(*f));
		snprintf(f->name, sizeof(f->name), "%s", name);
		f->exists = true;
	} else if (flags & QUAYI_IO_CREATE) {
		memfs_set_len(f, 0);
	}
	for (int i = 0; i < MEMFS_FDS; i++) {
		if (fs->fd_file[i] < 0) {
			fs->fd_file[i] = (int)(f - fs->f);
			*fd = i;
			MEMFS_RET(fs, 0);
		}
	}
	MEMFS_RET(fs, -ENOMEM);
}

static inline int
memfs_close(void *ctx, int fd)
{
	struct memfs *fs = ctx;
	pthread_mutex_lock(&fs->mu);
	if (fd >= 0 && fd < MEMFS_FDS)
		fs->fd_file[fd] = -1;
	MEMFS_RET(fs, 0);
}

static inline ssize_t
memfs_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_fd(fs, fd);
	if (f == NULL)
		MEMFS_RET(fs, -EIO);
	if (fs->eintr_pct && qt_rand(&fs->rng) % 100 < fs->eintr_pct) {
		fs->eintrs++;
		MEMFS_RET(fs, -EINTR);
	}
	if (off >= f->cur_len)
		MEMFS_RET(fs, 0);
	if (len > f->cur_len - off)
		len = f->cur_len - (size_t)off;
	if (fs->short_pct && len > 1 && qt_rand(&fs->rng) % 100 < fs->short_pct)
		len = 1 + (size_t)(qt_rand(&fs->rng) % (len - 1));
	memcpy(buf, f->cur + off, len);
	MEMFS_RET(fs, (ssize_t)len);
}

static inline ssize_t
memfs_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_fd(fs, fd);
	if (f == NULL)
		MEMFS_RET(fs, -EIO);
	if (fs->eintr_pct && qt_rand(&fs->rng) % 100 < fs->eintr_pct) {
		fs->eintrs++;
		MEMFS_RET(fs, -EINTR);
	}
	if (fs->short_pct && len > 1 && qt_rand(&fs->rng) % 100 < fs->short_pct) {
		len = 1 + (size_t)(qt_rand(&fs->rng) % (len - 1));
		fs->short_writes++;
	}
	if (off + len > f->cur_len) {
		uint64_t grow = off + len - f->cur_len;
		if (fs->quota && memfs_used(fs) + grow > fs->quota) {
			/* Write what fits, like a file system running out. */
			uint64_t room = fs->quota > memfs_used(fs) ? fs->quota - memfs_used(fs) : 0;
			fs->enospcs++;
			if (room == 0 || off > f->cur_len)
				MEMFS_RET(fs, -ENOSPC);
			len = (size_t)(f->cur_len + room - off);
			if (len == 0)
				MEMFS_RET(fs, -ENOSPC);
		}
		if (memfs_set_len(f, (size_t)(off + len)) != 0)
			MEMFS_RET(fs, -ENOMEM);
	}
	memcpy(f->cur + off, buf, len);
	MEMFS_RET(fs, (ssize_t)len);
}

static inline int
memfs_dosync(void *ctx, int fd)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_fd(fs, fd);
	if (f == NULL)
		MEMFS_RET(fs, -EIO);
	fs->syncs++;
	if (fs->sync_fail_at > 0 && fs->syncs >= fs->sync_fail_at)
		MEMFS_RET(fs, -(fs->sync_errno ? fs->sync_errno : EIO)); /* the data stays unsynced */
	memfs_sync_file(f);
	MEMFS_RET(fs, 0);
}

static inline int
memfs_truncate(void *ctx, int fd, uint64_t len)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_fd(fs, fd);
	if (f == NULL)
		MEMFS_RET(fs, -EIO);
	MEMFS_RET(fs, memfs_set_len(f, (size_t)len));
}

static inline int
memfs_allocate(void *ctx, int fd, uint64_t len)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_fd(fs, fd);
	if (f == NULL)
		MEMFS_RET(fs, -EIO);
	if (fs->no_allocate)
		MEMFS_RET(fs, -EOPNOTSUPP);
	if (len > f->cur_len) {
		if (fs->quota && memfs_used(fs) + (len - f->cur_len) > fs->quota) {
			fs->enospcs++;
			MEMFS_RET(fs, -ENOSPC);
		}
		MEMFS_RET(fs, memfs_set_len(f, (size_t)len));
	}
	MEMFS_RET(fs, 0);
}

static inline int
memfs_size(void *ctx, int fd, uint64_t *size)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_fd(fs, fd);
	if (f == NULL)
		MEMFS_RET(fs, -EIO);
	*size = f->cur_len;
	MEMFS_RET(fs, 0);
}

static inline int
memfs_unlink(void *ctx, const char *path)
{
	struct memfs *fs = ctx;
	MEMFS_ENTER(fs);
	struct memfs_file *f = memfs_find(fs, memfs_base(path));
	if (f == NULL)
		MEMFS_RET(fs, -ENOENT);
	for (int i = 0; i < MEMFS_FDS; i++)
		if (fs->fd_file[i] == (int)(f - fs->f))
			fs->fd_file[i] = -1;
	free(f->cur);
	free(f->syn);
	memset(f, 0, sizeof(*f));
	MEMFS_RET(fs, 0);
}

static inline int
memfs_mkdir(void *ctx, const char *path)
{
	struct memfs *fs = ctx;
	(void)path;
	MEMFS_ENTER(fs);
	fs->dir_exists = true;
	MEMFS_RET(fs, 0);
}

static inline int
memfs_list(void *ctx, const char *dir, int (*cb)(void *arg, const char *name), void *arg)
{
	struct memfs *fs = ctx;
	char names[MEMFS_FILES][48];
	int n = 0, r = 0;
	(void)dir;
	MEMFS_ENTER(fs);
	if (!fs->dir_exists)
		MEMFS_RET(fs, -ENOENT);
	for (int i = 0; i < MEMFS_FILES; i++)
		if (fs->f[i].exists)
			memcpy(names[n++], fs->f[i].name, 48);
	pthread_mutex_unlock(&fs->mu);
	for (int i = 0; i < n && r == 0; i++)
		r = cb(arg, names[i]);
	return r;
}

static inline int
memfs_sync_dir(void *ctx, const char *dir)
{
	struct memfs *fs = ctx;
	(void)dir;
	MEMFS_ENTER(fs);
	fs->syncs++;
	if (fs->sync_fail_at > 0 && fs->syncs >= fs->sync_fail_at)
		MEMFS_RET(fs, -EIO);
	for (int i = 0; i < MEMFS_FILES; i++)
		if (fs->f[i].exists)
			fs->f[i].name_durable = true;
	MEMFS_RET(fs, 0);
}

static inline int
memfs_lock_dir(void *ctx, const char *dir, int *handle)
{
	struct memfs *fs = ctx;
	(void)dir;
	MEMFS_ENTER(fs);
	if (fs->locked)
		MEMFS_RET(fs, -EAGAIN);
	fs->locked = true;
	*handle = 1;
	MEMFS_RET(fs, 0);
}

static inline void
memfs_unlock_dir(void *ctx, int handle)
{
	struct memfs *fs = ctx;
	(void)handle;
	pthread_mutex_lock(&fs->mu);
	if (!fs->dead)
		fs->locked = false;
	pthread_mutex_unlock(&fs->mu);
}

static const struct quayi_wal_io memfs_io = {
	.open = memfs_open,
	.close = memfs_close,
	.pread = memfs_pread,
	.pwrite = memfs_pwrite,
	.datasync = memfs_dosync,
	.fsync = memfs_dosync,
	.truncate = memfs_truncate,
	.allocate = memfs_allocate,
	.size = memfs_size,
	.unlink = memfs_unlink,
	.mkdir = memfs_mkdir,
	.list = memfs_list,
	.sync_dir = memfs_sync_dir,
	.lock_dir = memfs_lock_dir,
	.unlock_dir = memfs_unlock_dir,
};

/* Direct access for tests: a file's current image (NULL if missing). */
static inline struct memfs_file *
memfs_file(struct memfs *fs, const char *name)
{
	return memfs_find(fs, name);
}

/* Replace a file's content (created if missing, name and data durable). */
static inline void
memfs_put(struct memfs *fs, const char *name, const void *data, size_t len)
{
	struct memfs_file *f = memfs_find(fs, name);
	if (f == NULL) {
		for (int i = 0; i < MEMFS_FILES && f == NULL; i++)
			if (!fs->f[i].exists)
				f = &fs->f[i];
		if (f == NULL)
			abort(); /* a test put more than MEMFS_FILES files */
		memset(f, 0, sizeof(*f));
		snprintf(f->name, sizeof(f->name), "%s", name);
		f->exists = true;
	}
	memfs_set_len(f, 0);
	memfs_set_len(f, len);
	if (len)
		memcpy(f->cur, data, len);
	memfs_sync_file(f);
	f->name_durable = true;
	fs->dir_exists = true;
}

#endif /* QUAY_WAL_MEMFS_H */
