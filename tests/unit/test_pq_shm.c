/* SPDX-License-Identifier: MIT */
/*
 * Priority queues in shared memory (quay_pq_create_shm/attach_shm): two
 * mappings in one process, a fork()ed child echoing by priority with the
 * waiting calls, wake-ups across processes (shared futexes), bad
 * arguments, the validation of bad and truncated files, and the stall
 * bound: a child killed with SIGKILL holding a slot of a level.
 */
#include "quay_test.h"
#include "shm_test.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <quay/pq.h>

#define HDR 64
#define STALL_NS (50 * QT_MS)

static struct quay_pq_opts
shape(unsigned levels, unsigned flags, size_t capacity, size_t elem_size)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;

	o.levels = levels;
	o.flags = flags;
	o.capacity = capacity;
	o.elem_size = elem_size;
	return o;
}

/* Two mappings of one memfd in one process: the rings and the weights are
 * found from each mapping's own header, not through a stored pointer. */
static void
test_memfd_two_mappings(void **state)
{
	struct quay_pq_opts o = shape(4, 0, 4, 16);
	quay_pq *a = NULL, *b = NULL;
	uint64_t v[2], w[2];
	unsigned prio = 99;
	int fd = -1;

	(void)state;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &a, &fd), 0);
	assert_true(fd >= 0);
	assert_int_equal(quay_pq_attach_shm(NULL, fd, 16, &b), 0);
	assert_ptr_not_equal(a, b);
	assert_int_equal(quay_pq_levels(b), 4);
	assert_int_equal(quay_pq_capacity(b), 4);
	assert_int_equal(quay_pq_elem_size(b), 16);
	/* Pushed through one mapping, popped through the other, by priority. */
	for (uint64_t i = 0; i < 12; i++) {
		v[0] = i;
		v[1] = ~i;
		assert_int_equal(quay_pq_push(i % 2 ? a : b, (unsigned)(i % 4), v), 0);
	}
	assert_int_equal(quay_pq_count(a), 12);
	assert_int_equal(quay_pq_level_count(b, 3), 3);
	for (unsigned lvl = 4; lvl-- > 0;)
		for (uint64_t k = 0; k < 3; k++) {
			assert_int_equal(quay_pq_pop(k % 2 ? a : b, w, &prio), 0);
			assert_int_equal(prio, lvl);
			assert_int_equal(w[0], lvl + 4 * k);
			assert_int_equal(w[1], ~(lvl + 4 * k));
		}
	/* Full and empty as in one process. */
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(quay_pq_push(a, 1, v), 0);
	assert_int_equal(quay_pq_push(b, 1, v), -EAGAIN);
	assert_int_equal(quay_pq_push_wait(b, 1, v, 0), -ETIMEDOUT);
	assert_int_equal(quay_pq_push_wait(b, 1, v, QT_MS), -ETIMEDOUT);
	assert_int_equal(quay_pq_push(b, 2, v), 0);
	assert_int_equal(quay_pq_pop_burst(b, (uint64_t[16]){ 0 }, 8, NULL), 5);
	assert_int_equal(quay_pq_pop(a, w, NULL), -EAGAIN);
	assert_int_equal(quay_pq_pop_wait(a, w, NULL, QT_MS), -ETIMEDOUT);
	/* No pollable descriptor: wakers in other processes could not signal it. */
	assert_int_equal(quay_pq_fd(a), -ENOTSUP);
	assert_int_equal(quay_pq_fd(b), -ENOTSUP);
	/* Close is seen through the other mapping. */
	assert_int_equal(quay_pq_push(a, 0, v), 0);
	quay_pq_close(a);
	assert_true(quay_pq_is_closed(b));
	assert_int_equal(quay_pq_push(b, 0, v), -EPIPE);
	assert_int_equal(quay_pq_pop(b, w, &prio), 0);
	assert_int_equal(prio, 0);
	assert_int_equal(quay_pq_pop(b, w, NULL), -EPIPE);
	assert_int_equal(quay_pq_pop_wait(a, w, NULL, -1), -EPIPE);
	quay_pq_destroy(a);
	quay_pq_destroy(b);
	/* The fd keeps the file: attach again. */
	assert_int_equal(quay_pq_attach_shm(NULL, fd, 0, &b), 0);
	assert_true(quay_pq_is_closed(b));
	quay_pq_destroy(b);
	close(fd);
}

/* Weighted mode through two mappings: the weights live in the file. */
static void
test_weighted_two_mappings(void **state)
{
	static const uint32_t weights[2] = { 1, 3 };
	struct quay_pq_opts o = shape(2, QUAY_PQ_WEIGHTED, 16, 8);
	quay_pq *a = NULL, *b = NULL;
	unsigned prio, ones = 0;
	uint64_t v = 0;
	int fd = -1;

	(void)state;
	o.weights = weights;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &a, &fd), 0);
	assert_int_equal(quay_pq_attach_shm(NULL, fd, 8, &b), 0);
	for (unsigned i = 0; i < 16; i++) {
		assert_int_equal(quay_pq_push(a, 0, &v), 0);
		assert_int_equal(quay_pq_push(a, 1, &v), 0);
	}
	/* 8 pops: two rounds of 3 from level 1 and 1 from level 0, plus 2. */
	for (unsigned i = 0; i < 8; i++) {
		assert_int_equal(quay_pq_pop(i % 2 ? a : b, &v, &prio), 0);
		ones += prio == 1;
	}
	assert_int_equal(ones, 6);
	quay_pq_destroy(a);
	quay_pq_destroy(b);
	close(fd);
}

/* A named queue: a fork()ed child attaches by name and echoes every
 * element back through a second queue at the same priority; both sides
 * use the waiting calls. Exactly once, FIFO within each level. */
#define ECHO_LEVELS 3
static void
test_named_fork_echo(void **state)
{
	char req_name[64], rep_name[64];
	struct quay_pq_opts o = shape(ECHO_LEVELS, 0, 4, 8);
	quay_pq *req = NULL, *rep = NULL;
	const uint64_t n = 20000;
	uint64_t next[ECHO_LEVELS] = { 0 }, got = 0;
	pid_t pid;

	(void)state;
	snprintf(req_name, sizeof(req_name), "%s", tname("pq-req"));
	snprintf(rep_name, sizeof(rep_name), "%s", tname("pq-rep"));
	assert_int_equal(quay_pq_create_shm(req_name, &o, NULL, &req, NULL), 0);
	assert_int_equal(quay_pq_create_shm(rep_name, &o, NULL, &rep, NULL), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		quay_pq *a = NULL, *b = NULL;
		unsigned prio;
		uint64_t v;

		alarm(20);
		if (quay_pq_attach_shm(req_name, -1, 8, &a) != 0 ||
		    quay_pq_attach_shm(rep_name, -1, 8, &b) != 0)
			_exit(2);
		for (;;) {
			int rc = quay_pq_pop_wait(a, &v, &prio, -1);
			if (rc == -EPIPE)
				break;
			if (rc != 0 || v % ECHO_LEVELS != prio || quay_pq_push_wait(b, prio, &v, -1) != 0)
				_exit(3);
		}
		quay_pq_close(b);
		_exit(0);
	}
	for (uint64_t i = 0; got < n;) {
		unsigned prio = 99;
		uint64_t v;

		if (i < n && quay_pq_push(req, (unsigned)(i % ECHO_LEVELS), &i) == 0) {
			i++;
			continue;
		}
		/* Full (or all sent): wait for a reply, bounded so that a lost
		 * wake-up fails the test instead of hanging it. */
		assert_int_equal(quay_pq_pop_wait(rep, &v, &prio, 10000 * QT_MS), 0);
		assert_int_equal(prio, v % ECHO_LEVELS);
		assert_int_equal(v, next[prio] * ECHO_LEVELS + prio); /* FIFO within a level */
		next[prio]++;
		got++;
	}
	quay_pq_close(req);
	{
		uint64_t v;
		assert_int_equal(quay_pq_pop_wait(rep, &v, NULL, 10000 * QT_MS), -EPIPE);
	}
	assert_int_equal(child_status(pid), 0);
	quay_pq_destroy(req);
	quay_pq_destroy(rep);
	assert_int_equal(quay_pq_unlink_shm(req_name), 0);
	assert_int_equal(quay_pq_unlink_shm(rep_name), 0);
	assert_int_equal(quay_pq_attach_shm(req_name, -1, 0, &req), -ENOENT);
	assert_int_equal(quay_pq_unlink_shm(req_name), -ENOENT);
}

/* A child asleep in a waiting call (really in futex(2)) is woken by a push,
 * a pop and a close of another process: the futexes are shared. */
static void
test_fork_wakeups(void **state)
{
	struct quay_pq_opts o = shape(2, 0, 1, 8);
	quay_pq *q = NULL;
	uint64_t v = 7;
	int fd = -1, drained[2];
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), 0);
	assert_int_equal(pipe(drained), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		unsigned prio = 0;
		uint64_t w = 0;

		alarm(20);
		/* 1: woken by the parent's push. */
		if (quay_pq_pop_wait(q, &w, &prio, 10000 * QT_MS) != 0 || w != 7 || prio != 1)
			_exit(2);
		/* 2: level 0 is full; woken by the parent's pop. */
		w = 8;
		if (quay_pq_push(q, 0, &w) != 0)
			_exit(3);
		w = 9;
		if (quay_pq_push_wait(q, 0, &w, 10000 * QT_MS) != 0)
			_exit(4);
		/* 3: woken by close. */
		while (quay_pq_pop(q, &w, NULL) == 0)
			;
		if (write(drained[1], "d", 1) != 1) /* tell the parent: 9 is gone */
			_exit(6);
		if (quay_pq_pop_wait(q, &w, NULL, 10000 * QT_MS) != -EPIPE)
			_exit(5);
		_exit(0);
	}
	wait_in_futex(pid);
	assert_true(proc_in_futex(pid));
	assert_int_equal(quay_pq_push(q, 1, &v), 0);
	/* The child pushes 8, then sleeps pushing 9. */
	while (quay_pq_level_count(q, 0) == 0)
		usleep(1000);
	wait_in_futex(pid);
	assert_true(proc_in_futex(pid));
	assert_int_equal(quay_pq_pop(q, &v, NULL), 0);
	assert_int_equal(v, 8);
	/* The child pushes 9, drains it and sleeps in pop_wait. The count
	 * alone cannot say so (it is 0 after our pop, before the child pushes
	 * 9): the child writes to a pipe once 9 is gone. */
	assert_int_equal(read(drained[0], &c, 1), 1);
	wait_in_futex(pid);
	assert_true(proc_in_futex(pid));
	quay_pq_close(q);
	assert_int_equal(child_status(pid), 0);
	quay_pq_destroy(q);
	close(fd);
	close(drained[0]);
	close(drained[1]);
}

static void
test_bad_args(void **state)
{
	struct quay_pq_opts o = shape(2, 0, 4, 8);
	struct quay_pq_shm_opts so = QUAY_PQ_SHM_OPTS_INIT;
	struct quay_allocator al = { 0 };
	quay_pq *q = NULL, *sentinel = (quay_pq *)(uintptr_t)0x40;
	char longname[300];
	int fd = -1;

	(void)state;
	q = sentinel;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, NULL, &fd), -EINVAL);
	assert_int_equal(quay_pq_create_shm(NULL, NULL, NULL, &q, &fd), -EINVAL);
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, NULL), -EINVAL); /* memfd needs fd_out */
	assert_int_equal(quay_pq_create_shm("noslash", &o, NULL, &q, NULL), -EINVAL);
	assert_int_equal(quay_pq_create_shm("/", &o, NULL, &q, NULL), -EINVAL);
	assert_int_equal(quay_pq_create_shm("/a/b", &o, NULL, &q, NULL), -EINVAL);
	memset(longname, 'x', sizeof(longname));
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(quay_pq_create_shm(longname, &o, NULL, &q, NULL), -EINVAL);
	/* The shape, as quay_pq_init. */
	o.levels = 0;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), -EINVAL);
	o = shape(2, 0, 3, 8);
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), -EINVAL);
	o = shape(2, 0x80, 4, 8);
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), -EINVAL);
	/* No allocator: the memory is the file's. */
	o = shape(2, 0, 4, 8);
	o.allocator = &al;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), -EINVAL);
	o.allocator = NULL;
	/* Shared memory options. */
	so.size = 3;
	assert_int_equal(quay_pq_create_shm(NULL, &o, &so, &q, &fd), -EINVAL);
	so = (struct quay_pq_shm_opts)QUAY_PQ_SHM_OPTS_INIT;
	so.mode = 01000;
	assert_int_equal(quay_pq_create_shm(NULL, &o, &so, &q, &fd), -EINVAL);
	so.mode = 0;
	so.stall_ns = -1;
	assert_int_equal(quay_pq_create_shm(NULL, &o, &so, &q, &fd), -EINVAL);
	assert_ptr_equal(q, sentinel);
	assert_int_equal(fd, -1);

	/* A name that exists; nothing is left behind by the failure. */
	assert_int_equal(quay_pq_create_shm(tname("pq-dup"), &o, NULL, &q, NULL), 0);
	{
		quay_pq *q2 = sentinel;
		assert_int_equal(quay_pq_create_shm(tname("pq-dup"), &o, NULL, &q2, NULL), -EEXIST);
		assert_ptr_equal(q2, sentinel);
		assert_int_equal(quay_pq_attach_shm(tname("pq-dup"), -1, 16, &q2), -EMSGSIZE);
		assert_ptr_equal(q2, sentinel);
	}
	quay_pq_destroy(q);
	assert_int_equal(quay_pq_unlink_shm(tname("pq-dup")), 0);

	q = sentinel;
	assert_int_equal(quay_pq_attach_shm(NULL, -1, 0, &q), -EINVAL);
	assert_int_equal(quay_pq_attach_shm(NULL, 0, 0, NULL), -EINVAL);
	assert_int_equal(quay_pq_attach_shm("bad", -1, 0, &q), -EINVAL);
	assert_int_equal(quay_pq_attach_shm(tname("pq-none"), -1, 0, &q), -ENOENT);
	assert_int_equal(quay_pq_attach_shm(NULL, 1000000, 0, &q), -EBADF);
	{
		int p[2];
		assert_int_equal(pipe(p), 0);
		assert_int_equal(quay_pq_attach_shm(NULL, p[0], 0, &q), -EINVAL); /* not a regular file */
		close(p[0]);
		close(p[1]);
	}
	assert_ptr_equal(q, sentinel);
	assert_int_equal(quay_pq_unlink_shm(NULL), -EINVAL);
	assert_int_equal(quay_pq_unlink_shm("x"), -EINVAL);
	assert_int_equal(quay_pq_unlink_shm(tname("pq-none")), -ENOENT);
	quay_pq_destroy(NULL);
}

/* ---- bad files ------------------------------------------------------ */

/* The shape of the files edited below. */
#define BF_LEVELS 3u
#define BF_CAP 8u
#define PQ(off) (HDR + (off))

static size_t
ring_at(const unsigned char *b, unsigned level)
{
	uint64_t rings_off, stride;

	memcpy(&rings_off, b + PQ(offsetof(struct quay_pq, rings_off)), 8);
	memcpy(&stride, b + PQ(offsetof(struct quay_pq, ring_stride)), 8);
	return HDR + rings_off + level * stride;
}

/* A copy of a fresh queue file (3 levels of 8 8-byte elements, weighted)
 * holding one element at level 1, in a new memfd, then edit(bytes) on
 * the copy; returns the attach result. */
static int
attach_edited(void (*edit)(unsigned char *buf, size_t *len), bool fix_check)
{
	struct quay_pq_opts o = shape(BF_LEVELS, QUAY_PQ_WEIGHTED, BF_CAP, 8);
	quay_pq *q = NULL, *a = NULL;
	unsigned char *buf, *m;
	size_t len;
	int fd = -1, fd2, rc;
	uint64_t v = 1;
	unsigned prio = 0;

	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), 0);
	assert_int_equal(quay_pq_push(q, 1, &v), 0);
	len = (size_t)lseek(fd, 0, SEEK_END);
	buf = calloc(1, len + 4096);
	assert_non_null(buf);
	m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(m != MAP_FAILED);
	memcpy(buf, m, len);
	munmap(m, len);
	quay_pq_destroy(q);
	close(fd);

	edit(buf, &len);
	if (fix_check) {
		uint32_t levels;
		uint64_t c = shm_fnv(UINT64_C(0xcbf29ce484222325), buf + 8, 48);

		memcpy(&levels, buf + 36, 4);
		if (levels <= 256)
			c = shm_fnv(c, buf + HDR + 256, levels * 4u);
		memcpy(buf + 56, &c, 8);
	}
	fd2 = memfd_create("quay-test", MFD_CLOEXEC);
	assert_true(fd2 >= 0);
	if (len > 0)
		assert_int_equal(write(fd2, buf, len), (ssize_t)len);
	free(buf);
	rc = quay_pq_attach_shm(NULL, fd2, 0, &a);
	if (rc == 0) {
		/* The unedited copy must work. */
		assert_int_equal(quay_pq_pop(a, &v, &prio), 0);
		assert_int_equal(v, 1);
		assert_int_equal(prio, 1);
		quay_pq_destroy(a);
	} else {
		assert_null(a);
	}
	close(fd2);
	return rc;
}

static void
put32(unsigned char *b, size_t off, uint32_t v)
{
	memcpy(b + off, &v, 4);
}

static void
put64(unsigned char *b, size_t off, uint64_t v)
{
	memcpy(b + off, &v, 8);
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
	put32(b, 8, 2);
}
static void
ed_hdr_size(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, 12, 128);
}
static void
ed_file_size(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, 16, *n + 64);
}
static void
ed_capacity(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, 24, 6);
}
static void
ed_capacity_big(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, 24, (uint64_t)1 << 40);
}
static void
ed_elem_size(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, 32, 16);
}
static void
ed_levels0(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, 36, 0);
}
static void
ed_levels_big(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, 36, 300);
}
static void
ed_levels_more(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, 36, BF_LEVELS + 1);
}
static void
ed_flags(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, 40, 0x80);
}
static void
ed_stall(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, 48, 0);
}
static void
ed_weight0(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, HDR + 256 + 4, 0);
}
static void
ed_weight_big(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, HDR + 256 + 8, QUAY_PQ_WEIGHT_MAX + 1);
}
static void
ed_pq_rings_off(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, rings_off)), (uint64_t)1 << 40);
}
static void
ed_pq_weights_off(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, weights_off)), 0);
}
static void
ed_pq_stride(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, ring_stride)), 1 << 20);
}
static void
ed_pq_levels(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, PQ(offsetof(struct quay_pq, levels)), 200);
}
static void
ed_pq_nwords(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, PQ(offsetof(struct quay_pq, nwords)), 4);
}
static void
ed_pq_flags(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, PQ(offsetof(struct quay_pq, flags)), QUAY_PQ_WEIGHTED); /* not shared */
}
static void
ed_pq_closed(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, PQ(offsetof(struct quay_pq, closed)), 3);
}
static void
ed_pq_alloc(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, alloc)), 0x1000);
}
static void
ed_pq_bitmap(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, bitmap)), (uint64_t)1 << BF_LEVELS);
}
static void
ed_pq_bitmap_word(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, bitmap)) + 24, 1);
}
static void
ed_pq_sched(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, PQ(offsetof(struct quay_pq, sched)), (uint64_t)(BF_LEVELS + 1) << 32);
}
static void
ed_ring_mask(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, ring_at(b, 2) + offsetof(struct quay_ring, mask), 15);
}
static void
ed_ring_flags(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, ring_at(b, 1) + offsetof(struct quay_ring, flags), 0);
}
static void
ed_ring_alloc(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, ring_at(b, 0) + offsetof(struct quay_ring, alloc), 0x1000);
}
static void
ed_ring_tail(unsigned char *b, size_t *n)
{
	(void)n;
	put64(b, ring_at(b, 1) + offsetof(struct quay_ring, tail), BF_CAP + 2);
}
static void
ed_ring_closed(unsigned char *b, size_t *n)
{
	(void)n;
	put32(b, ring_at(b, 2) + offsetof(struct quay_ring, closed), 7);
}
static void
ed_truncated(unsigned char *b, size_t *n)
{
	(void)b;
	*n -= 64;
}
static void
ed_extended(unsigned char *b, size_t *n)
{
	(void)b;
	*n += 4096;
}
static void
ed_tiny(unsigned char *b, size_t *n)
{
	(void)b;
	*n = 100;
}
static void
ed_empty(unsigned char *b, size_t *n)
{
	(void)b;
	*n = 0;
}

static void
test_bad_files(void **state)
{
	static void (*const fixed[])(unsigned char *, size_t *) = { ed_version, ed_hdr_size, ed_file_size,
		ed_capacity, ed_capacity_big, ed_elem_size, ed_levels0, ed_levels_big, ed_levels_more,
		ed_flags, ed_stall, ed_weight0, ed_weight_big, ed_pq_rings_off, ed_pq_weights_off,
		ed_pq_stride, ed_pq_levels, ed_pq_nwords, ed_pq_flags, ed_pq_closed, ed_pq_alloc,
		ed_pq_bitmap, ed_pq_bitmap_word, ed_pq_sched, ed_ring_mask, ed_ring_flags, ed_ring_alloc,
		ed_ring_tail, ed_ring_closed, ed_truncated, ed_extended, ed_tiny, ed_empty };

	(void)state;
	assert_int_equal(attach_edited(ed_none, false), 0);
	assert_int_equal(attach_edited(ed_none, true), 0);
	assert_int_equal(attach_edited(ed_magic, true), -EBADMSG);
	/* A header edit without fixing the check: the check catches it. */
	assert_int_equal(attach_edited(ed_levels_more, false), -EBADMSG);
	assert_int_equal(attach_edited(ed_weight0, false), -EBADMSG);
	/* With the check fixed: the field's own test catches it. */
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		print_message("edit %zu\n", i);
		assert_int_equal(attach_edited(fixed[i], true), -EBADMSG);
	}
}

/* A named file truncated under us (ftruncate by another process): attach
 * rejects it rather than fault. */
static void
test_truncated_name(void **state)
{
	struct quay_pq_opts o = shape(2, 0, 64, 64);
	quay_pq *q = NULL, *a = NULL;
	int fd;

	(void)state;
	assert_int_equal(quay_pq_create_shm(tname("pq-trunc"), &o, NULL, &q, NULL), 0);
	fd = shm_open(tname("pq-trunc"), O_RDWR, 0);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	close(fd);
	assert_int_equal(quay_pq_attach_shm(tname("pq-trunc"), -1, 0, &a), -EBADMSG);
	assert_null(a);
	/* Our own mapping is now partly beyond the file: do not touch it. */
	quay_pq_destroy(q);
	assert_int_equal(quay_pq_unlink_shm(tname("pq-trunc")), 0);
}

/* ---- dead processes (the stall bound) ------------------------------- */

/* A child killed with SIGKILL between claim and publish at level 2: pops
 * of other levels go on; pop_wait skips the held slot after the stall
 * bound (-EOWNERDEAD) and the level goes on, in order. */
static void
test_killed_producer(void **state)
{
	struct quay_pq_opts o = shape(3, 0, 4, 8);
	struct quay_pq_shm_opts so = QUAY_PQ_SHM_OPTS_INIT;
	quay_pq *q = NULL;
	uint64_t v = 3, w = 0;
	unsigned prio = 99;
	int fd = -1, st;
	pid_t pid;

	(void)state;
	so.stall_ns = STALL_NS;
	assert_int_equal(quay_pq_create_shm(NULL, &o, &so, &q, &fd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint64_t pos = 0;
		int rc = 0;

		quayi_ring_claim_push(quayi_pq_ring(q, 2), 1, true, &pos, &rc, true);
		raise(SIGKILL);
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(quay_pq_level_count(q, 2), 1);
	assert_int_equal(quay_pq_push(q, 2, &v), 0);
	v = 4;
	assert_int_equal(quay_pq_push(q, 0, &v), 0);
	/* Level 0 is not held up by level 2's dead slot. */
	assert_int_equal(quay_pq_pop_wait(q, &w, &prio, -1), 0);
	assert_int_equal(w, 4);
	assert_int_equal(prio, 0);
	assert_int_equal(quay_pq_pop_wait(q, &w, &prio, -1), -EOWNERDEAD);
	assert_int_equal(quay_pq_pop_wait(q, &w, &prio, -1), 0);
	assert_int_equal(w, 3);
	assert_int_equal(prio, 2);
	assert_int_equal(quay_pq_count(q), 0);
	assert_int_equal(quay_pq_pop_wait(q, &w, NULL, 0), -ETIMEDOUT);
	quay_pq_destroy(q);
	close(fd);
}

/* A child killed between claiming a pop and releasing its slot, on a full
 * level: push_wait frees the slot after the stall bound (-EOWNERDEAD),
 * and the next push goes in. */
static void
test_killed_consumer(void **state)
{
	struct quay_pq_opts o = shape(2, 0, 2, 8);
	struct quay_pq_shm_opts so = QUAY_PQ_SHM_OPTS_INIT;
	quay_pq *q = NULL;
	uint64_t v = 5, w = 0;
	int fd = -1, st;
	pid_t pid;

	(void)state;
	so.stall_ns = STALL_NS;
	assert_int_equal(quay_pq_create_shm(NULL, &o, &so, &q, &fd), 0);
	assert_int_equal(quay_pq_push(q, 1, &v), 0);
	assert_int_equal(quay_pq_push(q, 1, &v), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint64_t pos = 0;
		int rc = 0;

		quayi_ring_claim_pop(quayi_pq_ring(q, 1), 1, true, &pos, &rc);
		raise(SIGKILL);
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	v = 6;
	assert_int_equal(quay_pq_push(q, 1, &v), -EAGAIN);
	assert_int_equal(quay_pq_push_wait(q, 1, &v, -1), -EOWNERDEAD);
	assert_int_equal(quay_pq_push_wait(q, 1, &v, -1), 0);
	assert_int_equal(quay_pq_pop(q, &w, NULL), 0);
	assert_int_equal(w, 5);
	assert_int_equal(quay_pq_pop(q, &w, NULL), 0);
	assert_int_equal(w, 6);
	assert_int_equal(quay_pq_pop(q, &w, NULL), -EAGAIN);
	quay_pq_destroy(q);
	close(fd);
}

/* Threads of one process on a shared queue, through two mappings (what
 * ThreadSanitizer can see): two producers at levels 0 and 2, two
 * consumers, waiting calls; exactly once, FIFO per producer. */
#define TH_N 20000
struct th_arg {
	quay_pq *q;
	uint64_t base;
	uint64_t sum;
	uint64_t count;
	uint64_t disorder;
};

static void *
th_push(void *p)
{
	struct th_arg *a = p;

	for (uint64_t i = 0; i < TH_N; i++) {
		uint64_t v = a->base + i;
		if (quay_pq_push_wait(a->q, a->base != 0 ? 2 : 0, &v, -1) != 0)
			return (void *)1;
	}
	return NULL;
}

static void *
th_pop(void *p)
{
	struct th_arg *a = p;
	uint64_t v, last[2] = { 0, 0 };
	unsigned prio;

	while (quay_pq_pop_wait(a->q, &v, &prio, -1) == 0) {
		unsigned who = v >= 1000000;

		a->disorder +=
		    prio != (who ? 2u : 0u) || (a->count != 0 && v != 0 && v <= last[who] && last[who] != 0);
		last[who] = v;
		a->sum += v;
		a->count++;
	}
	return NULL;
}

static void
test_threads(void **state)
{
	struct quay_pq_opts o = shape(3, 0, 16, 8);
	struct th_arg args[4];
	pthread_t t[4];
	quay_pq *q = NULL, *q2 = NULL;
	uint64_t sum = 0, count = 0, want = 0, disorder = 0;
	int fd = -1;

	(void)state;
	assert_int_equal(quay_pq_create_shm(NULL, &o, NULL, &q, &fd), 0);
	assert_int_equal(quay_pq_attach_shm(NULL, fd, 8, &q2), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct th_arg){ i % 2 ? q2 : q, (uint64_t)i * 1000000, 0, 0, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, i < 2 ? th_push : th_pop, &args[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_true(qt_join_within(t[i], 25000));
	quay_pq_close(q);
	for (int i = 2; i < 4; i++) {
		assert_true(qt_join_within(t[i], 25000));
		sum += args[i].sum;
		count += args[i].count;
		disorder += args[i].disorder;
	}
	for (uint64_t p = 0; p < 2; p++)
		for (uint64_t i = 0; i < TH_N; i++)
			want += p * 1000000 + i;
	assert_int_equal(count, 2 * TH_N);
	assert_int_equal(sum, want);
	assert_int_equal(disorder, 0);
	quay_pq_destroy(q2);
	quay_pq_destroy(q);
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_memfd_two_mappings),
		QT_TEST(test_weighted_two_mappings),
		QT_TEST(test_named_fork_echo),
		QT_TEST(test_fork_wakeups),
		QT_TEST(test_bad_args),
		QT_TEST(test_bad_files),
		QT_TEST(test_truncated_name),
		QT_TEST(test_killed_producer),
		QT_TEST(test_killed_consumer),
		QT_TEST(test_threads),
	};

	return cmocka_run_group_tests_name("pq_shm", tests, NULL, NULL);
}
