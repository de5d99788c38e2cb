/* SPDX-License-Identifier: MIT */
/*
 * Rings in shared memory (quay_ring_create_shm/attach_shm): create and
 * attach (memfd and named), push and pop through two mappings, waits and
 * close across fork(), the validation of bad files, bad arguments, and
 * the stall bound (a slot held by a dead or stalled process, RING-K1..K4
 * in src/ring_shm.c), including a child killed with SIGKILL holding a slot.
 */
#include "quay_test.h"
#include "shm_test.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <quay/ring.h>

#define HDR 64
#define STALL_NS (50 * QT_MS)

static struct quay_ring_shm_opts
opts_stall(int64_t stall_ns, unsigned flags)
{
	struct quay_ring_shm_opts o = QUAY_RING_SHM_OPTS_INIT;

	o.stall_ns = stall_ns;
	o.flags = flags;
	return o;
}

/* Two mappings of one memfd in one process: the slots are found from each
 * mapping's own header, not through a stored pointer. */
static void
test_memfd_two_mappings(void **state)
{
	quay_ring *a = NULL, *b = NULL;
	uint64_t v[2], w[2];
	int fd = -1;

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 16, NULL, &a, &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(quay_ring_attach_shm(NULL, fd, 16, &b), 0);
	assert_ptr_not_equal(a, b);
	assert_int_equal(quay_ring_capacity(b), 8);
	assert_int_equal(quay_ring_elem_size(b), 16);
	for (uint64_t i = 0; i < 20; i++) {
		v[0] = i;
		v[1] = ~i;
		assert_int_equal(quay_ring_push(i % 2 ? a : b, v), 0);
		assert_int_equal(quay_ring_count(a), 1);
		assert_int_equal(quay_ring_pop(i % 2 ? b : a, w), 0);
		assert_memory_equal(v, w, sizeof(v));
	}
	/* Full and empty as in one process. */
	for (uint64_t i = 0; i < 8; i++)
		assert_int_equal(quay_ring_push(a, v), 0);
	assert_int_equal(quay_ring_push(b, v), -EAGAIN);
	assert_int_equal(quay_ring_push_wait(b, v, 0), -ETIMEDOUT);
	assert_int_equal(quay_ring_pop_burst(b, (uint64_t[16]){ 0 }, 8), 8);
	assert_int_equal(quay_ring_pop(a, w), -EAGAIN);
	assert_int_equal(quay_ring_pop_wait(a, w, 1000000), -ETIMEDOUT);
	/* No pollable descriptor: wakers in other processes could not signal it. */
	assert_int_equal(quay_ring_fd(a), -ENOTSUP);
	assert_int_equal(quay_ring_fd(b), -ENOTSUP);
	/* Close is seen through the other mapping. */
	quay_ring_close(a);
	assert_true(quay_ring_is_closed(b));
	assert_int_equal(quay_ring_push(b, v), -EPIPE);
	assert_int_equal(quay_ring_pop(b, w), -EPIPE);
	quay_ring_destroy(a);
	quay_ring_destroy(b);
	/* The fd keeps the file: attach again. */
	assert_int_equal(quay_ring_attach_shm(NULL, fd, 0, &b), 0);
	assert_true(quay_ring_is_closed(b));
	quay_ring_destroy(b);
	close(fd);
}

/* A named ring: a fork()ed child attaches by name and echoes every element
 * back through a second ring; both sides use the waiting calls. */
static void
test_named_fork_echo(void **state)
{
	char req_name[64], rep_name[64];
	quay_ring *req = NULL, *rep = NULL;
	struct quay_ring_shm_opts o = QUAY_RING_SHM_OPTS_INIT;
	const uint64_t n = 20000;
	pid_t pid;

	(void)state;
	snprintf(req_name, sizeof(req_name), "%s", tname("req"));
	snprintf(rep_name, sizeof(rep_name), "%s", tname("rep"));
	o.flags = QUAY_RING_SP | QUAY_RING_SC;
	assert_int_equal(quay_ring_create_shm(req_name, 4, 8, &o, &req, NULL), 0);
	assert_int_equal(quay_ring_create_shm(rep_name, 4, 8, &o, &rep, NULL), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		quay_ring *a = NULL, *b = NULL;
		uint64_t v;

		alarm(20);
		if (quay_ring_attach_shm(req_name, -1, 8, &a) != 0 ||
		    quay_ring_attach_shm(rep_name, -1, 8, &b) != 0)
			_exit(2);
		for (;;) {
			int rc = quay_ring_pop_wait(a, &v, -1);
			if (rc == -EPIPE)
				break;
			if (rc != 0 || quay_ring_push_wait(b, &v, -1) != 0)
				_exit(3);
		}
		quay_ring_close(b);
		_exit(0);
	}
	for (uint64_t i = 0, got = 0; got < n;) {
		uint64_t v;
		if (i < n && quay_ring_push(req, &i) == 0) {
			i++;
			continue;
		}
		/* Full (or all sent): wait for a reply, bounded so that a lost
		 * wake-up fails the test instead of hanging it. */
		assert_int_equal(quay_ring_pop_wait(rep, &v, 10000 * QT_MS), 0);
		assert_int_equal(v, got);
		got++;
	}
	quay_ring_close(req);
	{
		uint64_t v;
		assert_int_equal(quay_ring_pop_wait(rep, &v, 10000 * QT_MS), -EPIPE);
	}
	assert_int_equal(child_status(pid), 0);
	quay_ring_destroy(req);
	quay_ring_destroy(rep);
	assert_int_equal(quay_ring_unlink_shm(req_name), 0);
	assert_int_equal(quay_ring_unlink_shm(rep_name), 0);
	assert_int_equal(quay_ring_attach_shm(req_name, -1, 0, &req), -ENOENT);
	assert_int_equal(quay_ring_unlink_shm(req_name), -ENOENT);
}

/* A child asleep in a waiting call (really in futex(2)) is woken by a push,
 * a pop and a close of another process: the futexes are shared. */
static void
test_fork_wakeups(void **state)
{
	quay_ring *r = NULL;
	uint64_t v = 7;
	int fd = -1;
	pid_t pid;

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 2, 8, NULL, &r, &fd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		quay_ring *c = NULL;
		uint64_t x = 0;

		alarm(20);
		if (quay_ring_attach_shm(NULL, fd, 8, &c) != 0)
			_exit(2);
		if (quay_ring_pop_wait(c, &x, -1) != 0 || x != 7) /* woken by a push */
			_exit(3);
		x = 8;
		if (quay_ring_push(c, &x) != 0 || quay_ring_push(c, &x) != 0)
			_exit(4);
		if (quay_ring_push_wait(c, &x, -1) != 0) /* full: woken by a pop */
			_exit(5);
		if (quay_ring_push_wait(c, &x, -1) != -EPIPE) /* full: woken by close */
			_exit(6);
		_exit(0);
	}
	wait_in_futex(pid);
	assert_int_equal(quay_ring_push(r, &v), 0);
	/* Wait for the ring to fill and the child to sleep in push_wait. */
	for (int i = 0; i < 2000 && quay_ring_count(r) < 2; i++)
		usleep(1000);
	wait_in_futex(pid);
	assert_int_equal(quay_ring_pop(r, &v), 0);
	assert_int_equal(v, 8);
	for (int i = 0; i < 2000 && quay_ring_count(r) < 2; i++)
		usleep(1000);
	wait_in_futex(pid);
	quay_ring_close(r);
	assert_int_equal(child_status(pid), 0);
	quay_ring_destroy(r);
	close(fd);
}

static void
test_bad_args(void **state)
{
	struct quay_ring_shm_opts o = QUAY_RING_SHM_OPTS_INIT;
	quay_ring *r = NULL, *r2 = NULL;
	char longname[300];
	int fd = -1, p[2];

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, NULL, NULL, &fd), -EINVAL);
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, NULL, &r, NULL), -EINVAL); /* memfd needs fd_out */
	assert_int_equal(quay_ring_create_shm("noslash", 8, 8, NULL, &r, NULL), -EINVAL);
	assert_int_equal(quay_ring_create_shm("/a/b", 8, 8, NULL, &r, NULL), -EINVAL);
	assert_int_equal(quay_ring_create_shm("/", 8, 8, NULL, &r, NULL), -EINVAL);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(quay_ring_create_shm(longname, 8, 8, NULL, &r, NULL), -EINVAL);
	assert_int_equal(quay_ring_create_shm(NULL, 3, 8, NULL, &r, &fd), -EINVAL);
	assert_int_equal(quay_ring_create_shm(NULL, 8, 12, NULL, &r, &fd), -EINVAL);
	assert_int_equal(quay_ring_create_shm(NULL, 0, 8, NULL, &r, &fd), -EINVAL);
	o.size = 4;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, &o, &r, &fd), -EINVAL);
	o = (struct quay_ring_shm_opts)QUAY_RING_SHM_OPTS_INIT;
	o.flags = 0x100;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, &o, &r, &fd), -EINVAL);
	o.flags = 0;
	o.stall_ns = -1;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, &o, &r, &fd), -EINVAL);
	o.stall_ns = 0;
	o.mode = 01777;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, &o, &r, &fd), -EINVAL);
	assert_null(r);
	assert_int_equal(fd, -1);

	/* A name that exists: -EEXIST, and the existing file is untouched. */
	assert_int_equal(quay_ring_create_shm(tname("dup"), 8, 8, NULL, &r, NULL), 0);
	assert_int_equal(quay_ring_create_shm(shm_test_name, 16, 8, NULL, &r2, NULL), -EEXIST);
	assert_int_equal(quay_ring_attach_shm(shm_test_name, -1, 0, &r2), 0);
	assert_int_equal(quay_ring_capacity(r2), 8);
	assert_int_equal(quay_ring_attach_shm(shm_test_name, -1, 16, &r2), -EMSGSIZE);
	quay_ring_destroy(r2);
	quay_ring_destroy(r);
	assert_int_equal(quay_ring_unlink_shm(shm_test_name), 0);

	r = NULL;
	assert_int_equal(quay_ring_attach_shm(NULL, 0, 0, NULL), -EINVAL);
	assert_int_equal(quay_ring_attach_shm(NULL, -1, 0, &r), -EINVAL);
	assert_int_equal(quay_ring_attach_shm("bad", -1, 0, &r), -EINVAL);
	assert_int_equal(quay_ring_attach_shm(tname("none"), -1, 0, &r), -ENOENT);
	assert_int_equal(quay_ring_attach_shm(NULL, 1000, 0, &r), -EBADF);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(quay_ring_attach_shm(NULL, p[0], 0, &r), -EINVAL);
	close(p[0]);
	close(p[1]);
	assert_null(r);
	assert_int_equal(quay_ring_unlink_shm(NULL), -EINVAL);
	assert_int_equal(quay_ring_unlink_shm("x"), -EINVAL);
	assert_int_equal(quay_ring_unlink_shm(tname("none")), -ENOENT);
	quay_ring_destroy(NULL);
}

/* ---- bad files ------------------------------------------------------ */

/* A copy of a fresh ring file (capacity 8, 8-byte elements) in a new
 * memfd, then edit(bytes) on the copy; returns the attach result. */
static int
attach_edited(void (*edit)(unsigned char *buf, size_t *len), bool fix_check)
{
	quay_ring *r = NULL, *a = NULL;
	unsigned char *buf, *m;
	size_t len;
	int fd = -1, fd2, rc;
	uint64_t v = 1;

	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, NULL, &r, &fd), 0);
	assert_int_equal(quay_ring_push(r, &v), 0);
	len = (size_t)lseek(fd, 0, SEEK_END);
	buf = calloc(1, len + 4096);
	assert_non_null(buf);
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	memcpy(buf, m, len);
	munmap(m, len);
	quay_ring_destroy(r);
	close(fd);

	edit(buf, &len);
	if (fix_check) {
		uint64_t c = shm_fnv(UINT64_C(0xcbf29ce484222325), buf + 8, 40);
		memcpy(buf + 48, &c, 8);
	}
	fd2 = memfd_create("quay-test", MFD_CLOEXEC);
	assert_true(fd2 >= 0);
	if (len > 0)
		assert_int_equal(write(fd2, buf, len), (ssize_t)len);
	free(buf);
	rc = quay_ring_attach_shm(NULL, fd2, 0, &a);
	if (rc == 0) {
		/* The unedited copy must work. */
		assert_int_equal(quay_ring_pop(a, &v), 0);
		assert_int_equal(v, 1);
		quay_ring_destroy(a);
	} else {
		assert_null(a);
	}
	close(fd2);
	return rc;
}

static void
ed_none(unsigned char *b, size_t *n)
{
	(void)b;
	(void)n;
}
static void
ed_magic(unsigned char *b, size_t *n)
{
	(void)n;
	b[0] ^= 1;
}
static void
ed_version(unsigned char *b, size_t *n)
{
	(void)n;
	b[8] = 2;
}
static void
ed_check(unsigned char *b, size_t *n)
{
	(void)n;
	b[50] ^= 0x80;
}
static void
ed_capacity(unsigned char *b, size_t *n) /* capacity 16 in the header */
{
	(void)n;
	b[24] = 16;
}
static void
ed_elem(unsigned char *b, size_t *n) /* elem_size 16: the file size no longer matches */
{
	(void)n;
	b[32] = 16;
}
static void
ed_flags(unsigned char *b, size_t *n)
{
	(void)n;
	b[36] = 0x40;
}
static void
ed_stall(unsigned char *b, size_t *n)
{
	(void)n;
	memset(b + 40, 0, 8);
}
static void
ed_truncate(unsigned char *b, size_t *n)
{
	(void)b;
	*n -= 8;
}
static void
ed_truncate_hdr(unsigned char *b, size_t *n)
{
	(void)b;
	*n = 40;
}
static void
ed_empty(unsigned char *b, size_t *n)
{
	(void)b;
	*n = 0;
}
static void
ed_extend(unsigned char *b, size_t *n)
{
	(void)b;
	*n += 64;
}
static void
ed_ring_mask(unsigned char *b, size_t *n)
{
	(void)n;
	b[HDR] = 3; /* mask 3 for capacity 8 */
}
static void
ed_ring_stride(unsigned char *b, size_t *n)
{
	(void)n;
	b[HDR + 16] = 64;
}
static void
ed_ring_flags(unsigned char *b, size_t *n)
{
	(void)n;
	b[HDR + 24] = 0; /* no fence, no shared */
	b[HDR + 26] = 0;
}
static void
ed_ring_alloc(unsigned char *b, size_t *n) /* a pointer where none may be */
{
	(void)n;
	b[HDR + 32] = 0x40;
}
static void
ed_ring_closed(unsigned char *b, size_t *n)
{
	(void)n;
	b[HDR + 28] = 7;
}
static void
ed_ring_head(unsigned char *b, size_t *n) /* head far from tail */
{
	(void)n;
	b[HDR + 128 + 3] = 1;
}
static void
ed_text(unsigned char *b, size_t *n) /* not a quay file at all */
{
	memset(b, 'q', *n);
}

static void
test_bad_files(void **state)
{
	(void)state;
	assert_int_equal(attach_edited(ed_none, false), 0);
	assert_int_equal(attach_edited(ed_magic, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_magic, true), -EBADMSG);
	assert_int_equal(attach_edited(ed_version, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_version, true), -EBADMSG);
	assert_int_equal(attach_edited(ed_check, false), -EBADMSG);
	/* Field checks behind a valid checksum. */
	assert_int_equal(attach_edited(ed_capacity, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_capacity, true), -EBADMSG);
	assert_int_equal(attach_edited(ed_elem, true), -EBADMSG);
	assert_int_equal(attach_edited(ed_flags, true), -EBADMSG);
	assert_int_equal(attach_edited(ed_stall, true), -EBADMSG);
	assert_int_equal(attach_edited(ed_truncate, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_truncate_hdr, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_empty, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_extend, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_ring_mask, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_ring_stride, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_ring_flags, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_ring_closed, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_ring_alloc, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_ring_head, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_text, false), -EBADMSG);
}

/* A truncated named file: by size. */
static void
test_truncated_name(void **state)
{
	quay_ring *r = NULL, *a = NULL;
	int fd = -1;

	(void)state;
	assert_int_equal(quay_ring_create_shm(tname("trunc"), 64, 64, NULL, &r, &fd), 0);
	quay_ring_destroy(r);
	assert_int_equal(ftruncate(fd, 4096), 0);
	assert_int_equal(quay_ring_attach_shm(shm_test_name, -1, 0, &a), -EBADMSG);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(quay_ring_attach_shm(shm_test_name, -1, 0, &a), -EBADMSG);
	assert_null(a);
	close(fd);
	assert_int_equal(quay_ring_unlink_shm(shm_test_name), 0);
}

/* ---- the stall bound ------------------------------------------------ */

/* A producer that claimed a slot and never published (killed, or stopped):
 * pop_wait skips it after the stall bound (RING-K1); the producer, if it
 * comes back, fails to publish (RING-K3). Elements after it survive. */
static void
test_stalled_producer(void **state)
{
	unsigned modes[] = { 0, QUAY_RING_SC, QUAY_RING_SP | QUAY_RING_SC };
	(void)state;

	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		struct quay_ring_shm_opts o = opts_stall(STALL_NS, modes[m]);
		quay_ring *r = NULL;
		uint64_t pos = 0, v = 5, w = 0;
		int rc = 0, fd = -1;
		int64_t t0;

		assert_int_equal(quay_ring_create_shm(NULL, 4, 8, &o, &r, &fd), 0);
		/* The stalled push: claim, do not publish. */
		assert_int_equal(quayi_ring_claim_push(r, 1, true, &pos, &rc, false), 1);
		assert_int_equal(quay_ring_push(r, &v), 0); /* a later element */
		assert_int_equal(quay_ring_pop(r, &w), -EAGAIN);
		t0 = qt_now_ns();
		assert_int_equal(quay_ring_pop_wait(r, &w, -1), -EOWNERDEAD);
		assert_true(qt_now_ns() - t0 >= STALL_NS);
		/* The stalled producer wakes up: its publish fails. */
		assert_int_equal(quayi_ring_shm_fill(r, pos, &v, 1), 0);
		assert_int_equal(quay_ring_pop_wait(r, &w, -1), 0);
		assert_int_equal(w, 5);
		/* The ring goes on: every slot, twice round. */
		for (uint64_t i = 0; i < 8; i++) {
			assert_int_equal(quay_ring_push(r, &i), 0);
			assert_int_equal(quay_ring_pop(r, &w), 0);
			assert_int_equal(w, i);
		}
		assert_int_equal(quay_ring_count(r), 0);
		quay_ring_destroy(r);
		close(fd);
	}
}

/* Holders that finish before the bound: waits shorter than the bound time
 * out without repairing (the bound is 200x the wait, so a loaded machine
 * cannot stretch one into the other), and the late publish and release
 * succeed. */
static void
test_slow_holders_in_time(void **state)
{
	struct quay_ring_shm_opts o = opts_stall(4000 * QT_MS, 0);
	quay_ring *r = NULL;
	uint64_t pos = 0, pos2 = 0, v = 9, w = 0;
	int rc = 0, fd = -1;

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 2, 8, &o, &r, &fd), 0);
	assert_int_equal(quayi_ring_claim_push(r, 1, true, &pos, &rc, false), 1);
	assert_int_equal(quay_ring_pop_wait(r, &w, 20 * QT_MS), -ETIMEDOUT);
	assert_int_equal(quayi_ring_shm_fill(r, pos, &v, 1), 1);
	assert_int_equal(quay_ring_push(r, &v), 0);
	/* Full; the oldest element's pop stalls. */
	assert_int_equal(quayi_ring_claim_pop(r, 1, true, &pos2, &rc), 1);
	assert_int_equal(quay_ring_push_wait(r, &v, 20 * QT_MS), -ETIMEDOUT);
	assert_int_equal(quayi_ring_shm_drain(r, pos2, &w, 1), 1);
	assert_int_equal(w, 9);
	assert_int_equal(quay_ring_push_wait(r, &v, -1), 0);
	assert_int_equal(quay_ring_count(r), 2);
	quay_ring_destroy(r);
	close(fd);
}

/* A consumer that claimed a slot and never released it: a full ring's
 * push_wait frees it after the bound (RING-K2) and returns -EOWNERDEAD
 * without pushing; the consumer, if it comes back, fails (RING-K4). */
static void
test_stalled_consumer(void **state)
{
	unsigned modes[] = { 0, QUAY_RING_SC, QUAY_RING_SP };
	(void)state;

	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		struct quay_ring_shm_opts o = opts_stall(STALL_NS, modes[m]);
		quay_ring *r = NULL;
		uint64_t pos = 0, v, w = 0;
		int rc = 0, fd = -1;

		assert_int_equal(quay_ring_create_shm(NULL, 4, 8, &o, &r, &fd), 0);
		for (v = 0; v < 4; v++)
			assert_int_equal(quay_ring_push(r, &v), 0);
		/* The stalled pop of element 0. */
		assert_int_equal(quayi_ring_claim_pop(r, 1, true, &pos, &rc), 1);
		assert_int_equal(quay_ring_push(r, &v), -EAGAIN);
		assert_int_equal(quay_ring_push_wait(r, &v, -1), -EOWNERDEAD);
		assert_int_equal(quay_ring_count(r), 3);
		/* The stalled consumer comes back: its release fails. */
		assert_int_equal(quayi_ring_shm_drain(r, pos, &w, 1), 0);
		v = 4;
		assert_int_equal(quay_ring_push_wait(r, &v, -1), 0);
		for (uint64_t i = 1; i <= 4; i++) {
			assert_int_equal(quay_ring_pop(r, &w), 0);
			assert_int_equal(w, i);
		}
		quay_ring_destroy(r);
		close(fd);
	}
}

/* A child killed with SIGKILL between claim and publish: the parent's
 * pop_wait reports it within the bound and the ring goes on. */
static void
test_killed_producer(void **state)
{
	struct quay_ring_shm_opts o = opts_stall(STALL_NS, 0);
	quay_ring *r = NULL;
	uint64_t v = 3, w = 0;
	int fd = -1, st;
	pid_t pid;

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 8, 8, &o, &r, &fd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint64_t pos = 0;
		int rc = 0;

		quayi_ring_claim_push(r, 1, true, &pos, &rc, false);
		raise(SIGKILL);
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(quay_ring_count(r), 1);
	assert_int_equal(quay_ring_push(r, &v), 0);
	assert_int_equal(quay_ring_pop_wait(r, &w, -1), -EOWNERDEAD);
	assert_int_equal(quay_ring_pop_wait(r, &w, -1), 0);
	assert_int_equal(w, 3);
	quay_ring_destroy(r);
	close(fd);
}

/* Threads of one process on a shared ring (what ThreadSanitizer can see):
 * two producers, two consumers, waiting calls, exactly once. */
#define TH_N 20000
struct th_arg {
	quay_ring *r;
	uint64_t base;
	uint64_t sum;
	uint64_t count;
};

static void *
th_push(void *p)
{
	struct th_arg *a = p;

	for (uint64_t i = 0; i < TH_N; i++) {
		uint64_t v = a->base + i;
		if (quay_ring_push_wait(a->r, &v, -1) != 0)
			return (void *)1;
	}
	return NULL;
}

static void *
th_pop(void *p)
{
	struct th_arg *a = p;
	uint64_t v;

	while (quay_ring_pop_wait(a->r, &v, -1) == 0) {
		a->sum += v;
		a->count++;
	}
	return NULL;
}

static void
test_threads(void **state)
{
	struct th_arg args[4];
	pthread_t t[4];
	quay_ring *r = NULL;
	uint64_t sum = 0, count = 0, want = 0;
	int fd = -1;

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 16, 8, NULL, &r, &fd), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct th_arg){ r, (uint64_t)i * 1000000, 0, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, i < 2 ? th_push : th_pop, &args[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_true(qt_join_within(t[i], 25000));
	quay_ring_close(r);
	for (int i = 2; i < 4; i++) {
		assert_true(qt_join_within(t[i], 25000));
		sum += args[i].sum;
		count += args[i].count;
	}
	for (uint64_t p = 0; p < 2; p++)
		for (uint64_t i = 0; i < TH_N; i++)
			want += p * 1000000 + i;
	assert_int_equal(count, 2 * TH_N);
	assert_int_equal(sum, want);
	quay_ring_destroy(r);
	close(fd);
}

static int th_pop_one_rc = -1;

static void *
th_pop_one(void *p)
{
	uint64_t v;

	th_pop_one_rc = quay_ring_pop_wait(p, &v, -1);
	return NULL;
}

/* A shared ring's wake counts in the wait protocol's unit: bits 1 and 2
 * of its event words (POLLED, FIRED: a pollable descriptor, which a
 * shared ring never has) stay clear, or every empty pop would look the
 * word up in the process-wide descriptor table (a mutex). */
static void
test_wake_counter_unit(void **state)
{
	quay_ring *r = NULL;
	pthread_t t;
	uint64_t one = 1;
	int fd = -1;

	(void)state;
	assert_int_equal(quay_ring_create_shm(NULL, 16, 8, NULL, &r, &fd), 0);
	assert_int_equal(pthread_create(&t, NULL, th_pop_one, r), 0);
	for (int i = 0;
	     i < 20000 && !(__atomic_load_n(&r->pop_event, __ATOMIC_SEQ_CST) & QUAYI_WAIT_SLEEPERS); i++)
		usleep(100);
	assert_true(__atomic_load_n(&r->pop_event, __ATOMIC_SEQ_CST) & QUAYI_WAIT_SLEEPERS);
	assert_int_equal(quay_ring_push(r, &one), 0);
	assert_true(qt_join_within(t, 25000));
	assert_int_equal(th_pop_one_rc, 0);
	assert_int_equal(__atomic_load_n(&r->pop_event, __ATOMIC_SEQ_CST) &
	        (QUAYI_WAIT_POLLED | QUAYI_WAIT_FIRED),
	    0);
	assert_true(__atomic_load_n(&r->pop_event, __ATOMIC_SEQ_CST) >= QUAYI_WAIT_COUNT_ONE);
	quay_ring_destroy(r);
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_memfd_two_mappings),
		QT_TEST(test_named_fork_echo),
		QT_TEST(test_fork_wakeups),
		QT_TEST(test_bad_args),
		QT_TEST(test_bad_files),
		QT_TEST(test_truncated_name),
		QT_TEST(test_stalled_producer),
		QT_TEST(test_slow_holders_in_time),
		QT_TEST(test_stalled_consumer),
		QT_TEST(test_killed_producer),
		QT_TEST(test_threads),
		QT_TEST(test_wake_counter_unit),
	};

	return cmocka_run_group_tests_name("ring_shm", tests, NULL, NULL);
}
