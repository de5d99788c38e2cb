/* SPDX-License-Identifier: MIT */
/*
 * The WAL's file I/O interface (struct quayi_wal_io in wal_internal.h):
 * the default POSIX implementation. Tests replace the table with one that
 * injects short writes, EINTR, EIO, ENOSPC and power loss
 * (tests/wal/wal_memfs.h). Every function returns a negative errno on
 * failure and does no retrying: the WAL retries short transfers and EINTR.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "wal_internal.h"

static int
neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

static int
px_open(void *ctx, const char *path, unsigned flags, int *fd)
{
	int of = O_CLOEXEC;

	(void)ctx;
	of |= (flags & QUAYI_IO_WRITE) ? O_RDWR : O_RDONLY;
	if (flags & QUAYI_IO_CREATE)
		of |= O_CREAT | O_TRUNC;
	int f = open(path, of, 0644);
	if (f < 0)
		return neg_errno();
	*fd = f;
	return 0;
}

static int
px_close(void *ctx, int fd)
{
	(void)ctx;
	/* A failed close after fsync has nothing to report that fsync did not. */
	return close(fd) == 0 ? 0 : neg_errno();
}

static ssize_t
px_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off)
{
	(void)ctx;
	ssize_t n = pread(fd, buf, len, (off_t)off);
	return n >= 0 ? n : neg_errno();
}

static ssize_t
px_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
	(void)ctx;
	ssize_t n = pwrite(fd, buf, len, (off_t)off);
	return n >= 0 ? n : neg_errno();
}

static int
px_datasync(void *ctx, int fd)
{
	(void)ctx;
	return fdatasync(fd) == 0 ? 0 : neg_errno();
}

static int
px_fsync(void *ctx, int fd)
{
	(void)ctx;
	return fsync(fd) == 0 ? 0 : neg_errno();
}

static int
px_truncate(void *ctx, int fd, uint64_t len)
{
	(void)ctx;
	return ftruncate(fd, (off_t)len) == 0 ? 0 : neg_errno();
}

static int
px_allocate(void *ctx, int fd, uint64_t len)
{
	(void)ctx;
	/* Mode 0: allocate blocks and extend the size, so that later
	 * fdatasyncs of writes inside the file need no size update. */
	if (fallocate(fd, 0, 0, (off_t)len) == 0)
		return 0;
	if (errno == EOPNOTSUPP || errno == ENOSYS)
		return -EOPNOTSUPP;
	return neg_errno();
}

static int
px_size(void *ctx, int fd, uint64_t *size)
{
	struct stat st;

	(void)ctx;
	if (fstat(fd, &st) != 0)
		return neg_errno();
	*size = (uint64_t)st.st_size;
	return 0;
}

static int
px_unlink(void *ctx, const char *path)
{
	(void)ctx;
	return unlink(path) == 0 ? 0 : neg_errno();
}

static int
px_mkdir(void *ctx, const char *path)
{
	struct stat st;

	(void)ctx;
	if (mkdir(path, 0755) == 0)
		return 0;
	if (errno == EEXIST) {
		if (stat(path, &st) != 0)
			return neg_errno();
		/* Something else has the name: say so, not "it exists". */
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	}
	return neg_errno();
}

static int
px_list(void *ctx, const char *dir, int (*cb)(void *arg, const char *name), void *arg)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int r = 0;

	(void)ctx;
	if (d == NULL)
		return neg_errno();
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			if (errno != 0)
				r = neg_errno();
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		r = cb(arg, de->d_name);
		if (r != 0)
			break;
	}
	closedir(d);
	return r;
}

static int
px_sync_dir(void *ctx, const char *dir)
{
	int fd, r;

	(void)ctx;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return neg_errno();
	r = fsync(fd) == 0 ? 0 : neg_errno();
	close(fd);
	return r;
}

static int
px_lock_dir(void *ctx, const char *dir, int *handle)
{
	int fd;

	(void)ctx;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return neg_errno();
	/* flock: per open file description, so a second open in this same
	 * process is refused too. Released by close, also by a crash. */
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno == EWOULDBLOCK ? -EAGAIN : neg_errno();
		close(fd);
		return e;
	}
	*handle = fd;
	return 0;
}

static void
px_unlock_dir(void *ctx, int handle)
{
	(void)ctx;
	close(handle);
}

const struct quayi_wal_io quayi_wal_io_posix = {
	.open = px_open,
	.close = px_close,
	.pread = px_pread,
	.pwrite = px_pwrite,
	.datasync = px_datasync,
	.fsync = px_fsync,
	.truncate = px_truncate,
	.allocate = px_allocate,
	.size = px_size,
	.unlink = px_unlink,
	.mkdir = px_mkdir,
	.list = px_list,
	.sync_dir = px_sync_dir,
	.lock_dir = px_lock_dir,
	.unlock_dir = px_unlock_dir,
};
