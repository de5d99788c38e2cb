/* SPDX-License-Identifier: MIT */
/*
 *
 * bench_ring_shm: a quay ring in shared memory between two processes,
 * against a pipe, a Unix socket pair, and a ring inside one process, in
 * one binary and one run.
 *
 * Throughput ("tput/<peer>"): one producer, one consumer, 64-byte
 * messages; an iteration moves QUAY_BENCH_SHM_MSGS messages (default
 * 2^17). The producer sends one message per call (push_wait, write); the
 * consumer takes one per call on the rings (pop_wait) and reads whatever
 * is there (up to 64 KiB) on the pipe and the socket, as a stream reader
 * would. Every message carries its sequence number and a pattern; the
 * consumer checks each arrives once, in order, intact, and counts them in
 * shared memory; the producer's iteration ends when the consumer has
 * counted the whole batch (manual time). A bad message fails the
 * benchmark (SkipWithError, exit status 1).
 *
 * Round trip ("rtt/<peer>"): the first side sends a message and waits for
 * the other to send it back, QUAY_BENCH_SHM_ROUNDS (default 2^13) times
 * per iteration; rtt_ns is the mean round trip. Both sides block (the
 * rings' waiting calls spin briefly, then sleep on a futex; the pipe and
 * the socket sleep in read).
 *
 * Peers:
 *   ring_shm_proc  quay_ring_create_shm (memfd), consumer in a fork()ed
 *                  process that attaches by fd: the subject
 *   pipe_proc      pipe(2) between the two processes
 *   socket_proc    socketpair(AF_UNIX, SOCK_STREAM) between them
 *   ring_thread    quay_ring_create, consumer thread in the same process
 *                  (membarrier wake-ups): what crossing processes costs
 *   ring_shm_thread the shared ring used by two threads of one process
 *                  (full-fence wake-ups and CAS publish, no process
 *                  boundary): what the shared-memory mode itself costs
 *
 * SPSC rings (QUAY_RING_SP|QUAY_RING_SC), capacity 1024. The machine's
 * other load shows in every peer alike; compare within one run.
 *
 * C bodies, registered through bench/shim/quay_bench.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>

#include "quay_bench.h"

#define ELEM 64
#define CAP 1024

static size_t g_msgs = (size_t)1 << 17;
static size_t g_rounds = (size_t)1 << 13;

struct msg {
	uint64_t w[ELEM / 8];
};

static struct msg
make(uint64_t seq)
{
	struct msg m;
	m.w[0] = seq;
	for (size_t i = 1; i < ELEM / 8; i++)
		m.w[i] = seq * 0x9e3779b97f4a7c15u + i;
	return m;
}

static bool
good(const struct msg *m, uint64_t seq)
{
	if (m->w[0] != seq)
		return false;
	for (size_t i = 1; i < ELEM / 8; i++)
		if (m->w[i] != seq * 0x9e3779b97f4a7c15u + i)
			return false;
	return true;
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Counters the consumer shares with the producer (a MAP_SHARED page). */
struct board {
	uint64_t done;  /* messages checked (throughput) / rounds echoed */
	uint64_t error; /* nonzero: a bad message or a failed call */
};

static struct board *
new_board(void)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		abort();
	return p;
}

enum kind { RING_SHM_PROC, PIPE_PROC, SOCKET_PROC, RING_THREAD, RING_SHM_THREAD };

/* One direction of a channel: a ring, or a pair of fds (read end, write end). */
struct chan {
	quay_ring *ring;
	int rfd, wfd;
	/* Stream reader state (pipe/socket). */
	unsigned char buf[65536];
	size_t have, off;
};

static struct chan *
new_chan(void)
{
	struct chan *c = calloc(1, sizeof *c);
	if (c == NULL)
		abort();
	c->rfd = c->wfd = -1;
	return c;
}

static bool
chan_send(struct chan *c, const struct msg *m)
{
	if (c->ring != NULL)
		return quay_ring_push_wait(c->ring, m, -1) == 0;
	const unsigned char *p = (const unsigned char *)m;
	size_t left = sizeof(*m);
	while (left > 0) {
		ssize_t n = write(c->wfd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		left -= (size_t)n;
	}
	return true;
}

/* false at the end of the stream (ring closed, EOF) or on an error. */
static bool
chan_recv(struct chan *c, struct msg *m)
{
	if (c->ring != NULL)
		return quay_ring_pop_wait(c->ring, m, -1) == 0;
	while (c->have - c->off < sizeof(*m)) {
		if (c->off > 0) {
			memmove(c->buf, c->buf + c->off, c->have - c->off);
			c->have -= c->off;
			c->off = 0;
		}
		ssize_t n = read(c->rfd, c->buf + c->have, sizeof(c->buf) - c->have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		c->have += (size_t)n;
	}
	memcpy(m, c->buf + c->off, sizeof(*m));
	c->off += sizeof(*m);
	return true;
}

/* The far side: throughput consumer or echo server, until end of stream. */
static void
far_side(struct chan *in, struct chan *out, struct board *b)
{
	struct msg m;
	uint64_t seq = 0;
	bool bad = false;

	while (chan_recv(in, &m)) {
		if (out == NULL) {
			/* After a bad message, keep draining until the end of the
			 * stream: a consumer that left would leave the producer
			 * blocked in push_wait on a full ring for ever. */
			if (bad)
				continue;
			if (!good(&m, seq)) {
				/* Pairs with the producer's acquire loads of error. */
				__atomic_store_n(&b->error, 1, __ATOMIC_RELEASE);
				bad = true;
				continue;
			}
			seq++;
		} else if (!chan_send(out, &m)) {
			__atomic_store_n(&b->error, 2, __ATOMIC_RELEASE); /* as above */
			return;
		}
		/* Release: the producer reads done with acquire. */
		__atomic_store_n(&b->done, seq, __ATOMIC_RELEASE);
	}
}

/* The two directions of a setup, and how its far side runs. */
struct setup {
	enum kind kind;
	bool echo;
	struct chan *fwd, *back; /* fwd: near -> far */
	quay_ring *rings[4];     /* near and far handles to destroy */
	int fds[4];
	pid_t pid;
	pthread_t th;
	bool has_th;
	struct board *board;
};

static void
setup_init(struct setup *s, enum kind k, bool echo)
{
	memset(s, 0, sizeof *s);
	s->kind = k;
	s->echo = echo;
	s->fwd = new_chan();
	s->back = new_chan();
	for (int i = 0; i < 4; i++)
		s->fds[i] = -1;
	s->pid = -1;
	s->board = new_board();
}

static void
setup_fini(struct setup *s)
{
	free(s->fwd);
	free(s->back);
	munmap(s->board, 4096);
}

static void
make_fds(enum kind k, int fd[2])
{
	if (k == PIPE_PROC) {
		if (pipe(fd) != 0)
			abort();
	} else if (socketpair(AF_UNIX, SOCK_STREAM, 0, fd) != 0) {
		abort();
	}
}

static void *
far_thread(void *arg)
{
	struct setup *s = arg;
	far_side(s->fwd, s->echo ? s->back : NULL, s->board);
	return NULL;
}

/* Build a channel pair, start the far side (process or thread). */
static bool
start(struct setup *s, char *err, size_t errlen)
{
	const unsigned flags = QUAY_RING_SP | QUAY_RING_SC;
	int rc = 0;

	if (s->kind == RING_THREAD) {
		if ((rc = quay_ring_create(CAP, ELEM, flags, &s->fwd->ring)) != 0 ||
		    (rc = quay_ring_create(CAP, ELEM, flags, &s->back->ring)) != 0) {
			snprintf(err, errlen, "quay_ring_create: %s", quay_strerror(rc));
			return false;
		}
		s->rings[0] = s->fwd->ring;
		s->rings[1] = s->back->ring;
	} else if (s->kind == RING_SHM_PROC || s->kind == RING_SHM_THREAD) {
		struct quay_ring_shm_opts o = QUAY_RING_SHM_OPTS_INIT;
		o.flags = flags;
		if ((rc = quay_ring_create_shm(NULL, CAP, ELEM, &o, &s->fwd->ring, &s->fds[0])) != 0 ||
		    (rc = quay_ring_create_shm(NULL, CAP, ELEM, &o, &s->back->ring, &s->fds[1])) != 0) {
			snprintf(err, errlen, "quay_ring_create_shm: %s", quay_strerror(rc));
			return false;
		}
		s->rings[0] = s->fwd->ring;
		s->rings[1] = s->back->ring;
	} else {
		int a[2], b[2];
		make_fds(s->kind, a);
		make_fds(s->kind, b);
		/* fwd: near writes a[1], far reads a[0]; back: far writes b[1], near reads b[0]. */
		s->fwd->wfd = a[1];
		s->fwd->rfd = a[0];
		s->back->wfd = b[1];
		s->back->rfd = b[0];
	}

	if (s->kind == RING_THREAD || s->kind == RING_SHM_THREAD) {
		if (pthread_create(&s->th, NULL, far_thread, s) != 0) {
			snprintf(err, errlen, "pthread_create failed");
			return false;
		}
		s->has_th = true;
		return true;
	}
	s->pid = fork();
	if (s->pid < 0) {
		snprintf(err, errlen, "fork failed");
		return false;
	}
	if (s->pid == 0) {
		struct chan *in = new_chan(), *out = new_chan();
		alarm(600);
		if (s->kind == RING_SHM_PROC) {
			/* Attach by fd: this process's own mapping. */
			if (quay_ring_attach_shm(NULL, s->fds[0], ELEM, &in->ring) != 0 ||
			    quay_ring_attach_shm(NULL, s->fds[1], ELEM, &out->ring) != 0)
				_exit(3);
		} else {
			close(s->fwd->wfd);
			close(s->back->rfd);
			in->rfd = s->fwd->rfd;
			out->wfd = s->back->wfd;
		}
		far_side(in, s->echo ? out : NULL, s->board);
		_exit(0);
	}
	if (s->kind != RING_SHM_PROC) {
		close(s->fwd->rfd);
		close(s->back->wfd);
		s->fwd->rfd = s->back->wfd = -1;
	}
	return true;
}

/* End the stream (close the ring, or the write end) and reap the far side. */
static void
stop(struct setup *s)
{
	if (s->fwd->ring != NULL)
		quay_ring_close(s->fwd->ring);
	else
		close(s->fwd->wfd);
	if (s->has_th)
		pthread_join(s->th, NULL);
	if (s->pid > 0) {
		int st = 0;
		waitpid(s->pid, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			__atomic_store_n(&s->board->error, 3, __ATOMIC_RELEASE); /* read below, same thread */
	}
	for (int i = 0; i < 4; i++)
		quay_ring_destroy(s->rings[i]);
	for (int i = 0; i < 4; i++)
		if (s->fds[i] >= 0)
			close(s->fds[i]);
	if (s->back->rfd >= 0)
		close(s->back->rfd);
}

static void
bm_tput(qb_state *st, void *arg)
{
	struct setup s;
	char err[256];
	uint64_t seq = 0;

	setup_init(&s, (enum kind)(intptr_t)arg, false);
	if (!start(&s, err, sizeof err)) {
		qb_skip_with_error(st, err);
		setup_fini(&s);
		return;
	}
	while (qb_keep_running(st)) {
		const double t0 = now_s();
		for (size_t i = 0; i < g_msgs; i++, seq++) {
			const struct msg m = make(seq);
			if (!chan_send(s.fwd, &m)) {
				__atomic_store_n(&s.board->error, 4, __ATOMIC_RELEASE); /* read below */
				break;
			}
		}
		/* Acquire: pairs with the consumer's release of done (and error). */
		while (__atomic_load_n(&s.board->done, __ATOMIC_ACQUIRE) < seq &&
		    __atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) == 0)
			sched_yield();
		qb_set_iteration_time(st, now_s() - t0);
		if (__atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) != 0) /* as above */
			break;
	}
	stop(&s);
	/* As above. */
	if (__atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) != 0 || s.board->done != seq) {
		qb_skip_with_error(st, "a message was lost, duplicated, reordered or corrupt, or a call failed");
		setup_fini(&s);
		return;
	}
	setup_fini(&s);
	qb_set_items_processed(st, (int64_t)seq);
	qb_set_bytes_processed(st, (int64_t)(seq * ELEM));
}

static void
bm_rtt(qb_state *st, void *arg)
{
	struct setup s;
	char err[256];
	uint64_t seq = 0;
	double total = 0;

	setup_init(&s, (enum kind)(intptr_t)arg, true);
	if (!start(&s, err, sizeof err)) {
		qb_skip_with_error(st, err);
		setup_fini(&s);
		return;
	}
	while (qb_keep_running(st)) {
		const double t0 = now_s();
		bool ok = true;
		for (size_t i = 0; i < g_rounds && ok; i++, seq++) {
			const struct msg out = make(seq);
			struct msg m;
			ok = chan_send(s.fwd, &out) && chan_recv(s.back, &m) && good(&m, seq);
		}
		const double d = now_s() - t0;
		total += d;
		qb_set_iteration_time(st, d);
		if (!ok) {
			__atomic_store_n(&s.board->error, 5, __ATOMIC_RELEASE); /* read below */
			break;
		}
	}
	stop(&s);
	if (__atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) != 0) { /* pairs with the far side's release */
		qb_skip_with_error(st, "a reply was lost, wrong or a call failed");
		setup_fini(&s);
		return;
	}
	setup_fini(&s);
	qb_set_items_processed(st, (int64_t)seq);
	qb_counter(st, "rtt_ns", seq ? total * 1e9 / (double)seq : 0, QB_COUNTER_DEFAULT);
}

static void
register_all(void)
{
	static const struct {
		const char *name;
		enum kind kind;
	} peers[] = {
	    {"ring_shm_proc", RING_SHM_PROC},
	    {"pipe_proc", PIPE_PROC},
	    {"socket_proc", SOCKET_PROC},
	    {"ring_thread", RING_THREAD},
	    {"ring_shm_thread", RING_SHM_THREAD},
	};
	const size_t n = sizeof peers / sizeof peers[0];
	char name[64];
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof name, "tput/%s", peers[i].name);
		qb_unit(qb_manual_time(qb_register(name, bm_tput, (void *)(intptr_t)peers[i].kind)), QB_MS);
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof name, "rtt/%s", peers[i].name);
		qb_unit(qb_manual_time(qb_register(name, bm_rtt, (void *)(intptr_t)peers[i].kind)), QB_MS);
	}
}

int
main(int argc, char **argv)
{
	const char *e;
	char buf[32];
	if ((e = getenv("QUAY_BENCH_SHM_MSGS")) != NULL)
		g_msgs = strtoull(e, NULL, 0);
	if ((e = getenv("QUAY_BENCH_SHM_ROUNDS")) != NULL)
		g_rounds = strtoull(e, NULL, 0);
	signal(SIGPIPE, SIG_IGN);
	register_all();
	qb_add_context("quay_version", QUAY_VERSION_STRING);
	snprintf(buf, sizeof buf, "%zu", g_msgs);
	qb_add_context("msgs_per_iteration", buf);
	snprintf(buf, sizeof buf, "%zu", g_rounds);
	qb_add_context("rounds_per_iteration", buf);
	snprintf(buf, sizeof buf, "%d", ELEM);
	qb_add_context("elem_size", buf);
	snprintf(buf, sizeof buf, "%d", CAP);
	qb_add_context("ring_capacity", buf);
	return qb_main(argc, argv);
}
