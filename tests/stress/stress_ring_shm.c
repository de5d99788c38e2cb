/* SPDX-License-Identifier: MIT */
/*
 * Stress: a ring in shared memory between processes, with kill -9.
 *
 * The parent creates a memfd ring and forks producer and consumer
 * children (single-threaded processes using the waiting calls). For the
 * run's duration it SIGKILLs a random child every few milliseconds and
 * forks a replacement (a producer gets a fresh id). Children also kill
 * themselves now and then right after claiming a slot (-k), so that some
 * deaths are certainly in the middle of a push or a pop. At the end the
 * parent stops the producers, closes the ring and waits for the consumers
 * to drain it; a child that does not finish within the hang bound fails
 * the run (it would mean a survivor wedged).
 *
 * Accounting, in a shared log (MAP_SHARED, outside the ring): a producer
 * writes "attempted" before each push and sets the message's "ok" bit
 * after the push returned 0 (or its "failed" bit after -EOWNERDEAD); a
 * consumer counts every message it popped (0 returned) in popped[id][seq].
 * Checked at the end:
 *   dup      no message popped twice
 *   phantom  no popped message that was never attempted
 *   failed   no popped message whose push returned -EOWNERDEAD
 *   order    each consumer sees each producer's messages in order
 *   corrupt  every popped element carries its producer's pattern
 *   lost     ok but never popped: at most one per consumer that died (a
 *            pop claimed or returned but not logged) plus the pops that
 *            returned -EOWNERDEAD
 *
 * ThreadSanitizer: each process is single-threaded and TSan does not see
 * the other processes, so under TSan this checks only that no process
 * races with itself (signal-safety of the library is not involved). The
 * in-process view of a shared ring under TSan is test_threads in
 * tests/unit/test_ring_shm.c.
 *
 * Built a second time with -DSTRESS_PQ (stress_pq_shm): the same run on a
 * priority queue in shared memory (quay_pq_create_shm), QUAY_PQ_LEVELS
 * levels of capacity -q each; producer id pushes at level id % levels, so
 * the order check (per producer, FIFO within a level) still holds; -m
 * strict|weighted. The few calls that differ are the target_* functions.
 *
 * Usage: stress_ring_shm [-m mpmc|spsc|mpsc|spmc] [-p producers]
 *        [-c consumers] [-d seconds] [-q capacity] [-e elem_size]
 *        [-s stall_ms] [-k self-kill-one-in] [-i kill_interval_ms] [-S seed]
 */
#include "../test_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <quay/ring.h>

#define MAX_IDS 256
#define MAX_MSGS (1u << 18) /* per producer id */
#define MAX_KIDS 64
#define HANG_S 20

struct plog {
	uint64_t attempted; /* seq + 1 of the last push begun */
	uint64_t ok[MAX_MSGS / 64];
	uint64_t failed[MAX_MSGS / 64];
	uint8_t popped[MAX_MSGS];
};

struct shared {
	uint32_t stop;       /* producers: stop pushing */
	uint64_t e_pop;      /* pops (or pop_waits) that returned -EOWNERDEAD */
	uint64_t e_push;     /* pushes (or push_waits) that returned -EOWNERDEAD */
	uint64_t order;      /* order violations */
	uint64_t corrupt;    /* bad patterns */
	uint64_t bad_rc;     /* unexpected return codes */
	uint64_t self_kills; /* children that killed themselves mid-op */
	int64_t max_wait_ns; /* longest waiting call seen */
	struct plog log[MAX_IDS];
};

static struct shared *g;
static size_t g_elem = 64;
static unsigned g_selfkill = 0; /* 1 in N ops; 0: never */

/* The object under test: its waiting calls, the claims a self-kill dies
 * after, close and unmap. */
#ifdef STRESS_PQ
#include <quay/pq.h>
#define PQ_LEVELS 4u
static quay_pq *g_pq;

static int
target_create(const char *mode, size_t cap, int64_t stall_ms, int *fd)
{
	struct quay_pq_opts o = QUAY_PQ_OPTS_INIT;
	struct quay_pq_shm_opts so = QUAY_PQ_SHM_OPTS_INIT;

	o.levels = PQ_LEVELS;
	o.flags = strcmp(mode, "weighted") == 0 ? QUAY_PQ_WEIGHTED : 0;
	o.capacity = cap;
	o.elem_size = g_elem;
	so.stall_ns = stall_ms * 1000000;
	return quay_pq_create_shm(NULL, &o, &so, &g_pq, fd);
}
static int
target_push_wait(unsigned id, const void *buf, int64_t t)
{
	return quay_pq_push_wait(g_pq, id % PQ_LEVELS, buf, t);
}
static int
target_pop_wait(void *buf, int64_t t)
{
	return quay_pq_pop_wait(g_pq, buf, NULL, t);
}
static bool
target_claim_push(unsigned id)
{
	uint64_t pos = 0;
	int rc = 0;

	return quayi_ring_claim_push(quayi_pq_ring(g_pq, id % PQ_LEVELS), 1, true, &pos, &rc, true) == 1;
}
static bool
target_claim_pop(uint64_t *seed)
{
	unsigned level = (unsigned)(*seed % PQ_LEVELS);
	uint64_t pos = 0;
	int rc = 0;

	return quayi_ring_claim_pop(quayi_pq_ring(g_pq, level), 1, true, &pos, &rc) == 1;
}
static void
target_close(void)
{
	quay_pq_close(g_pq);
}
static void
target_destroy(void)
{
	quay_pq_destroy(g_pq);
}
#else
static quay_ring *g_ring;

static int
target_create(const char *mode, size_t cap, int64_t stall_ms, int *fd)
{
	struct quay_ring_shm_opts o = QUAY_RING_SHM_OPTS_INIT;

	if (strcmp(mode, "spsc") == 0 || strcmp(mode, "spmc") == 0)
		o.flags |= QUAY_RING_SP;
	if (strcmp(mode, "spsc") == 0 || strcmp(mode, "mpsc") == 0)
		o.flags |= QUAY_RING_SC;
	o.stall_ns = stall_ms * 1000000;
	return quay_ring_create_shm(NULL, cap, g_elem, &o, &g_ring, fd);
}
static int
target_push_wait(unsigned id, const void *buf, int64_t t)
{
	(void)id;
	return quay_ring_push_wait(g_ring, buf, t);
}
static int
target_pop_wait(void *buf, int64_t t)
{
	return quay_ring_pop_wait(g_ring, buf, t);
}
static bool
target_claim_push(unsigned id)
{
	uint64_t pos = 0;
	int rc = 0;

	(void)id;
	return quayi_ring_claim_push(g_ring, 1, true, &pos, &rc, false) == 1;
}
static bool
target_claim_pop(uint64_t *seed)
{
	uint64_t pos = 0;
	int rc = 0;

	(void)seed;
	return quayi_ring_claim_pop(g_ring, 1, true, &pos, &rc) == 1;
}
static void
target_close(void)
{
	quay_ring_close(g_ring);
}
static void
target_destroy(void)
{
	quay_ring_destroy(g_ring);
}
#endif

static uint64_t
pattern(uint64_t id, uint64_t seq, size_t i)
{
	return (id * 0x9e3779b97f4a7c15u) ^ (seq * 0xbf58476d1ce4e5b9u) ^ (i * 0x94d049bb133111ebu);
}

static void
note_wait(int64_t t0)
{
	int64_t d = (int64_t)qt_now_ns() - t0, m = __atomic_load_n(&g->max_wait_ns, __ATOMIC_RELAXED);

	while (d > m &&
	    !__atomic_compare_exchange_n(&g->max_wait_ns, &m, d, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void
producer(unsigned id, uint64_t seed)
{
	struct plog *l = &g->log[id];
	uint64_t buf[4096 / 8];

	for (uint64_t s = 0; s < MAX_MSGS;) {
		int64_t t0;
		int rc;

		if (__atomic_load_n(&g->stop, __ATOMIC_RELAXED))
			break;
		buf[0] = id;
		buf[1] = s;
		for (size_t i = 2; i < g_elem / 8; i++)
			buf[i] = pattern(id, s, i);
		/* Relaxed: read by the parent after this process is gone. */
		__atomic_store_n(&l->attempted, s + 1, __ATOMIC_RELAXED);
		if (g_selfkill && rnd(&seed) % g_selfkill == 0) {
			/* Die between claim and publish. */
			if (target_claim_push(id)) {
				__atomic_fetch_add(&g->self_kills, 1, __ATOMIC_RELAXED);
				raise(SIGKILL);
			}
		}
		t0 = (int64_t)qt_now_ns();
		rc = target_push_wait(id, buf, 2 * 1000000000LL);
		note_wait(t0);
		if (rc == 0) {
			__atomic_fetch_or(&l->ok[s / 64], (uint64_t)1 << (s % 64), __ATOMIC_RELAXED);
			s++;
		} else if (rc == -EOWNERDEAD) {
			__atomic_fetch_add(&g->e_push, 1, __ATOMIC_RELAXED);
			__atomic_fetch_or(&l->failed[s / 64], (uint64_t)1 << (s % 64), __ATOMIC_RELAXED);
			s++;
		} else if (rc == -EPIPE) {
			break;
		} else if (rc != -ETIMEDOUT) {
			__atomic_fetch_add(&g->bad_rc, 1, __ATOMIC_RELAXED);
			break;
		}
	}
	_exit(0);
}

static void
consumer(uint64_t seed)
{
	static int64_t last[MAX_IDS];
	uint64_t buf[4096 / 8];

	for (int i = 0; i < MAX_IDS; i++)
		last[i] = -1;
	for (;;) {
		int64_t t0;
		int rc;

		if (g_selfkill && rnd(&seed) % g_selfkill == 0) {
			/* Die between claim and release. */
			if (target_claim_pop(&seed)) {
				__atomic_fetch_add(&g->self_kills, 1, __ATOMIC_RELAXED);
				raise(SIGKILL);
			}
		}
		t0 = (int64_t)qt_now_ns();
		rc = target_pop_wait(buf, 2 * 1000000000LL);
		note_wait(t0);
		if (rc == 0) {
			uint64_t id = buf[0], s = buf[1];
			bool bad = id >= MAX_IDS || s >= MAX_MSGS;

			for (size_t i = 2; !bad && i < g_elem / 8; i++)
				bad = buf[i] != pattern(id, s, i);
			if (bad) {
				__atomic_fetch_add(&g->corrupt, 1, __ATOMIC_RELAXED);
				continue;
			}
			if ((int64_t)s <= last[id])
				__atomic_fetch_add(&g->order, 1, __ATOMIC_RELAXED);
			last[id] = (int64_t)s;
			__atomic_fetch_add(&g->log[id].popped[s], 1, __ATOMIC_RELAXED);
		} else if (rc == -EOWNERDEAD) {
			__atomic_fetch_add(&g->e_pop, 1, __ATOMIC_RELAXED);
		} else if (rc == -EPIPE) {
			break;
		} else if (rc == -ETIMEDOUT) {
			if (getppid() == 1)
				break;
		} else {
			__atomic_fetch_add(&g->bad_rc, 1, __ATOMIC_RELAXED);
		}
	}
	_exit(0);
}

struct kid {
	pid_t pid;
	bool producer;
	unsigned id;
};

static struct kid kids[MAX_KIDS];
static int nkids;
static unsigned next_id;
static uint64_t kills_p, kills_c;

static pid_t
spawn(bool prod, unsigned id, uint64_t seed)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid == 0) {
		alarm(HANG_S * 3); /* a wedged child cannot outlive the test */
		if (prod)
			producer(id, seed);
		consumer(seed);
	}
	return pid;
}

int
main(int argc, char **argv)
{
	const char *mode = "mpmc";
	int np = 2, nc = 2, opt;
	double secs = 3;
	size_t cap = 64;
	int64_t stall_ms = 100;
	int interval_ms = 15;
	uint64_t seed = 1;
	uint64_t lost = 0, dup = 0, phantom = 0, failed_popped = 0, ok = 0, popped = 0, deaths_c;
	int fd = -1, rc = 0;
	double t_end;

	while ((opt = getopt(argc, argv, "m:p:c:d:q:e:s:k:i:S:")) != -1) {
		switch (opt) {
		case 'm': mode = optarg; break;
		case 'p': np = atoi(optarg); break;
		case 'c': nc = atoi(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'q': cap = (size_t)atol(optarg); break;
		case 'e': g_elem = (size_t)atol(optarg); break;
		case 's': stall_ms = atol(optarg); break;
		case 'k': g_selfkill = (unsigned)atoi(optarg); break;
		case 'i': interval_ms = atoi(optarg); break;
		case 'S': seed = (uint64_t)atoll(optarg) | 1; break;
		default: fprintf(stderr, "bad option\n"); return 2;
		}
	}
	if (strcmp(mode, "spsc") == 0 || strcmp(mode, "spmc") == 0)
		np = 1;
	if (strcmp(mode, "spsc") == 0 || strcmp(mode, "mpsc") == 0)
		nc = 1;
	if (np + nc > MAX_KIDS || g_elem < 16 || g_elem > 4096) {
		fprintf(stderr, "bad shape\n");
		return 2;
	}
	g = mmap(NULL, sizeof(*g), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	if ((rc = target_create(mode, cap, stall_ms, &fd)) != 0) {
		fprintf(stderr, "create: %s\n", quay_strerror(rc));
		return 2;
	}
	for (int i = 0; i < np + nc; i++) {
		bool prod = i < np;
		unsigned id = prod ? next_id++ : 0;
		kids[nkids++] = (struct kid){ spawn(prod, id, rnd(&seed)), prod, id };
	}

	/* The run: random kills, replacements. In single-producer (consumer)
	 * mode the replacement starts only once the old one is reaped. */
	t_end = qt_now_s() + secs;
	while (qt_now_s() < t_end) {
		usleep((useconds_t)(1000 * (1 + rnd(&seed) % (unsigned)(2 * interval_ms))));
		int victim = (int)(rnd(&seed) % (unsigned)nkids);
		kill(kids[victim].pid, SIGKILL);
		for (int i = 0; i < nkids; i++) {
			int st;
			pid_t w = waitpid(kids[i].pid, &st, i == victim ? 0 : WNOHANG);

			if (w != kids[i].pid)
				continue;
			if (kids[i].producer)
				kills_p++;
			else
				kills_c++;
			if (kids[i].producer && next_id >= MAX_IDS) {
				kids[i] = kids[--nkids]; /* out of ids: shrink */
				i--;
				continue;
			}
			kids[i].id = kids[i].producer ? next_id++ : 0;
			kids[i].pid = spawn(kids[i].producer, kids[i].id, rnd(&seed));
		}
		if (nkids == 0)
			break;
	}

	/* Stop the producers, close, let the consumers drain. Any death now
	 * (self-kills) is counted too. */
	__atomic_store_n(&g->stop, 1, __ATOMIC_RELAXED);
	double deadline = qt_now_s() + HANG_S;
	bool hung = false;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < nkids; i++) {
			int st;

			if (kids[i].producer != (pass == 0) || kids[i].pid == 0)
				continue;
			for (;;) {
				pid_t w = waitpid(kids[i].pid, &st, WNOHANG);
				if (w == kids[i].pid) {
					if (WIFSIGNALED(st) && !kids[i].producer)
						kills_c++;
					else if (WIFSIGNALED(st))
						kills_p++;
					if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
						hung = true;
					break;
				}
				if (qt_now_s() > deadline) {
					fprintf(stderr, "child %d (%s) hung\n", (int)kids[i].pid,
					    kids[i].producer ? "producer" : "consumer");
					hung = true;
					kill(kids[i].pid, SIGKILL);
					waitpid(kids[i].pid, &st, 0);
					break;
				}
				usleep(1000);
			}
			kids[i].pid = 0;
		}
		if (pass == 0)
			target_close();
	}
	/* A consumer may have died after close with elements left: drain. */
	{
		uint64_t buf[4096 / 8];
		int r2;
		while ((r2 = target_pop_wait(buf, 4LL * stall_ms * 1000000)) != -EPIPE) {
			if (r2 == -ETIMEDOUT) {
				fprintf(stderr, "final drain wedged\n");
				hung = true;
				break;
			}
			if (r2 == -EOWNERDEAD) {
				g->e_pop++;
				continue;
			}
			if (r2 == 0 && buf[0] < MAX_IDS && buf[1] < MAX_MSGS)
				g->log[buf[0]].popped[buf[1]]++;
		}
	}

	for (unsigned id = 0; id < next_id; id++) {
		struct plog *l = &g->log[id];
		for (uint64_t s = 0; s < MAX_MSGS; s++) {
			bool isok = (l->ok[s / 64] >> (s % 64)) & 1,
			     isfail = (l->failed[s / 64] >> (s % 64)) & 1;
			uint8_t p = l->popped[s];

			if (s >= l->attempted && p == 0 && !isok)
				break;
			ok += isok;
			popped += p;
			dup += p > 1;
			phantom += p > 0 && s >= l->attempted;
			failed_popped += p > 0 && isfail;
			lost += isok && p == 0;
		}
	}
	deaths_c = kills_c;
	bool bad = dup || phantom || failed_popped || g->order || g->corrupt || g->bad_rc || hung ||
	    lost > deaths_c + g->e_pop;
	printf(
	    "%s %dP%dC q%zu e%zu stall %lldms: ok %llu popped %llu lost %llu (bound %llu) dup %llu "
	    "phantom %llu failed-popped %llu order %llu corrupt %llu badrc %llu hung %d | kills P %llu C %llu "
	    "self %llu, EOWNERDEAD push %llu pop %llu, longest wait %.3f s\n",
	    mode, np, nc, cap, g_elem, (long long)stall_ms, (unsigned long long)ok,
	    (unsigned long long)popped, (unsigned long long)lost, (unsigned long long)(deaths_c + g->e_pop),
	    (unsigned long long)dup, (unsigned long long)phantom, (unsigned long long)failed_popped,
	    (unsigned long long)g->order, (unsigned long long)g->corrupt, (unsigned long long)g->bad_rc, hung,
	    (unsigned long long)kills_p, (unsigned long long)kills_c, (unsigned long long)g->self_kills,
	    (unsigned long long)g->e_push, (unsigned long long)g->e_pop, (double)g->max_wait_ns / 1e9);
	target_destroy();
	close(fd);
	if (ok == 0)
		bad = true; /* a run that moved nothing checked nothing */
	return bad ? 1 : 0;
}
