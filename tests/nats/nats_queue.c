/* SPDX-License-Identifier: MIT */
/*
 * A JetStream queue (quay_nats_queue_*) against a real nats-server started
 * here. The parent sends N messages (some twice, with the same dedup id);
 * three worker processes compete for them and randomly ack, nack, extend
 * then ack; the parent kills a worker with SIGKILL now and then and starts
 * a new one. At the end the stream must be empty, and each message must
 * have been acked exactly once or dead-lettered exactly once (with the
 * reason that fits), never both; the only other outcome allowed is a
 * message whose ack was in flight when its worker was killed (the ack
 * reached the server, the worker died before recording it). Counters are
 * checked against what the workers recorded. Env QUAY_NATS_QN sets N
 * (default 600), QUAY_NATS_KILLS the kills (default 4).
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

#define NMAX 20000
#define MAX_ATTEMPTS 3
#define WORKERS 3

struct shm {
	_Atomic int stop;
	_Atomic uint32_t deliveries[NMAX];
	_Atomic uint32_t intent[NMAX];     /* ack about to be sent */
	_Atomic uint32_t done[NMAX];       /* ack confirmed */
	_Atomic uint32_t final_nack[NMAX]; /* nacked at max_attempts */
	_Atomic uint64_t acks_ok, nacks, extends, errors;
};

#define DIE(...) \
	do { \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

static struct quay_nats_queue_opts
qopts(void)
{
	struct quay_nats_queue_opts o = QUAY_NATS_QUEUE_OPTS_INIT;
	o.name = "work";
	o.visibility_ns = 3000000000;
	o.max_attempts = MAX_ATTEMPTS;
	o.backoff_base_ns = 10000000;
	o.backoff_max_ns = 100000000;
	return o;
}

static quay_nats *
conn(const char *url)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *n;
	int r;
	o.urls = &url;
	o.nurls = 1;
	if ((r = quay_nats_connect(&o, &n)) != 0)
		DIE("connect: %s", quay_strerror(r));
	return n;
}

static struct shm *
map_shm(const char *path, bool create)
{
	int fd = open(path, O_RDWR | (create ? O_CREAT | O_TRUNC : 0), 0600);
	void *p;
	if (fd < 0 || (create && ftruncate(fd, sizeof(struct shm)) != 0))
		DIE("shm %s", path);
	p = mmap(NULL, sizeof(struct shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		DIE("mmap");
	return p;
}

/* The application's worker loop: the same shape as with quay_queue_*. */
static int
worker(const char *url, const char *path, unsigned seed)
{
	struct shm *sh = map_shm(path, false);
	struct quay_nats_queue_opts o = qopts();
	quay_nats *n = conn(url);
	quay_nats_queue *q;
	quay_nats_lease l;
	int r;

	if ((r = quay_nats_queue_open(n, &o, &q)) != 0)
		DIE("worker open: %s", quay_strerror(r));
	srand(seed);
	while (!atomic_load(&sh->stop)) {
		char b[16];
		int seq, roll;
		size_t len;

		r = quay_nats_queue_receive(q, &l, 200000000);
		if (r == -ETIMEDOUT)
			continue;
		if (r != 0) {
			atomic_fetch_add(&sh->errors, 1);
			continue;
		}
		len = quay_msg_body_len(l.msg) < 15 ? quay_msg_body_len(l.msg) : 15;
		memcpy(b, quay_msg_body(l.msg), len);
		b[len] = 0;
		seq = atoi(b);
		if (seq < 0 || seq >= NMAX || quay_msg_attempts(l.msg) != l.attempt)
			DIE("bad message '%s'", b);
		atomic_fetch_add(&sh->deliveries[seq], 1);
		usleep(3000); /* the work: a kill usually finds a lease out */
		roll = rand() % 100;
		if (roll < 25) {
			if (l.attempt >= MAX_ATTEMPTS)
				atomic_fetch_add(&sh->final_nack[seq], 1);
			if (quay_nats_queue_nack(q, &l, "test nack") == 0)
				atomic_fetch_add(&sh->nacks, 1);
			else
				atomic_fetch_add(&sh->errors, 1);
			continue;
		}
		if (roll < 35) {
			if (quay_nats_queue_extend(q, &l) == 0)
				atomic_fetch_add(&sh->extends, 1);
			usleep(1000);
		}
		atomic_fetch_add(&sh->intent[seq], 1);
		if (quay_nats_queue_ack(q, &l) == 0) {
			atomic_fetch_add(&sh->done[seq], 1);
			atomic_fetch_add(&sh->acks_ok, 1);
		} else {
			atomic_fetch_add(&sh->errors, 1);
		}
	}
	quay_nats_queue_close(q);
	quay_nats_close(n);
	return 0;
}

/* The sequence number a message's body holds (not NUL-terminated). */
static int
body_seq(const quay_msg *m)
{
	char b[16];
	size_t len = quay_msg_body_len(m) < 15 ? quay_msg_body_len(m) : 15;
	memcpy(b, quay_msg_body(m), len);
	b[len] = 0;
	return atoi(b);
}

static pid_t
spawn(const char *self, const char *url, const char *path, int k)
{
	char seed[16];
	pid_t p;
	snprintf(seed, sizeof(seed), "%d", k * 7919 + 1);
	p = fork();
	if (p == 0) {
		execl(self, self, "worker", url, path, seed, (char *)NULL);
		_exit(127);
	}
	return p;
}

int
main(int argc, char **argv)
{
	struct test_server srv = { 0 };
	struct quay_nats_queue_opts o = qopts();
	struct quay_nats_queue_counters qc;
	char path[128];
	struct shm *sh;
	quay_nats *n;
	quay_nats_queue *q;
	quay_pool *pool;
	pid_t w[WORKERS];
	int N = 600, kills = 4, dup = 20, fails = 0, r, in_flight_at_kill = 0, nacked_dead = 0,
	    expired_dead = 0, expired_seen = 0;
	uint32_t *dlq;
	char *e;

	if (argc == 5 && strcmp(argv[1], "worker") == 0)
		return worker(argv[2], argv[3], (unsigned)atoi(argv[4]));
	if ((e = getenv("QUAY_NATS_QN")) != NULL && atoi(e) > 0 && atoi(e) <= NMAX)
		N = atoi(e);
	if ((e = getenv("QUAY_NATS_KILLS")) != NULL)
		kills = atoi(e);
	ts_init(&srv);
	snprintf(path, sizeof(path), "%s/shm", srv.dir);
	sh = map_shm(path, true);
	dlq = calloc(NMAX, sizeof(*dlq));
	if (quay_pool_create((size_t)16 << 20, NULL, &pool) != 0)
		DIE("pool");
	n = conn(srv.url);
	if ((r = quay_nats_queue_open(n, &o, &q)) != 0)
		DIE("open: %s", quay_strerror(r));
	for (int i = 0; i < N + dup; i++) {
		char b[16], id[16];
		int seq = i < N ? i : i - N; /* the last dup are sent again */
		quay_msg *m;
		snprintf(b, sizeof(b), "%d", seq);
		snprintf(id, sizeof(id), "m-%d", seq);
		if (quay_msg_new(pool, b, strlen(b), &m) != 0 ||
		    quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, strlen(id)) != 0)
			DIE("msg");
		if ((r = quay_nats_queue_send(q, m)) != 0)
			DIE("send %d: %s", i, quay_strerror(r));
	}
	for (int k = 0; k < WORKERS; k++)
		w[k] = spawn(argv[0], srv.url, path, k);
	srand(12345);
	for (int k = 0; k < kills; k++) {
		int v = rand() % WORKERS;
		usleep((useconds_t)(100000 + rand() % 300000));
		kill(w[v], SIGKILL);
		waitpid(w[v], NULL, 0);
		w[v] = spawn(argv[0], srv.url, path, WORKERS + k);
	}
	/* Until every message is acked or dead-lettered: the stream is empty
	 * (work-queue retention removes acked messages). */
	for (int t = 0; t < 600; t++) {
		uint64_t left = 1;
		quay_msg *dm[64];
		int got = quay_nats_queue_dlq_take(q, dm, 64, 100000000);
		for (int i = 0; i < got; i++) {
			const void *v;
			size_t vl;
			int seq = body_seq(dm[i]);
			if (seq >= 0 && seq < N)
				dlq[seq]++;
			if (quay_msg_get_header(dm[i], QUAY_MSG_H_DLQ_REASON, &v, &vl) != 0)
				fails++, fprintf(stderr, "dlq %d without reason\n", seq);
			else if (vl == 9 && memcmp(v, "test nack", 9) == 0)
				nacked_dead++;
			else if (vl == 13 && memcmp(v, "lease expired", 13) == 0)
				expired_dead++;
			else
				fails++,
				    fprintf(stderr, "dlq %d reason '%.*s'\n", seq, (int)vl, (const char *)v);
			quay_msg_unref(dm[i]);
		}
		if (got > 0)
			continue;
		if (quay_nats_queue_depth(q, &left) == 0 && left == 0)
			break;
		usleep(100000);
	}
	atomic_store(&sh->stop, 1);
	for (int k = 0; k < WORKERS; k++) {
		int st;
		waitpid(w[k], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fails++, fprintf(stderr, "worker %d status %d\n", k, st);
	}
	/* Whatever the last DLQ pull missed. */
	for (;;) {
		quay_msg *dm[64];
		int got = quay_nats_queue_dlq_take(q, dm, 64, 200000000);
		if (got <= 0)
			break;
		for (int i = 0; i < got; i++) {
			const void *v;
			size_t vl;
			int seq = body_seq(dm[i]);
			if (seq >= 0 && seq < N)
				dlq[seq]++;
			if (quay_msg_get_header(dm[i], QUAY_MSG_H_DLQ_REASON, &v, &vl) == 0 && vl == 9)
				nacked_dead++;
			else
				expired_dead++;
			quay_msg_unref(dm[i]);
		}
	}
	{
		uint64_t left = 0;
		if (quay_nats_queue_depth(q, &left) != 0)
			DIE("depth");
		if (left != 0)
			fails++,
			    fprintf(stderr, "%llu messages left in the stream\n", (unsigned long long)left);
	}
	for (int i = 0; i < N && fails < 20; i++) {
		uint32_t d = sh->done[i], x = dlq[i];
		if (d > 1 || x > 1 || d + x > 1)
			fails++, fprintf(stderr, "msg %d: acked %u, dead-lettered %u\n", i, d, x);
		else if (d + x == 0 && sh->intent[i] > 0)
			in_flight_at_kill++;
		else if (d + x == 0)
			fails++, fprintf(stderr, "msg %d lost (delivered %u times)\n", i, sh->deliveries[i]);
		/* Dead-lettered without a last nack: its holder at the last
		 * attempt was killed (one lease per worker per kill). */
		if (x == 1 && sh->final_nack[i] == 0)
			expired_seen++;
		if (sh->final_nack[i] > 0 && x != 1)
			fails++,
			    fprintf(stderr, "msg %d nacked at the last attempt but not dead-lettered\n", i);
	}
	if (expired_seen > kills || expired_seen != expired_dead)
		fails++,
		    fprintf(stderr,
		        "%d dead-lettered without a final nack (reason lease expired: %d), %d kills\n",
		        expired_seen, expired_dead, kills);
	if (in_flight_at_kill > kills)
		fails++, fprintf(stderr, "%d acks in flight at %d kills\n", in_flight_at_kill, kills);
	quay_nats_queue_counters(q, &qc);
	if (qc.sent != (uint64_t)N || qc.duplicates != (uint64_t)dup)
		fails++,
		    fprintf(stderr, "sent %llu duplicates %llu\n", (unsigned long long)qc.sent,
		        (unsigned long long)qc.duplicates);
	{
		uint64_t acked = 0, deliveries = 0;
		for (int i = 0; i < N; i++)
			acked += sh->done[i], deliveries += sh->deliveries[i];
		/* Deliveries not explained by the first one and the nacks
		 * (dead-lettering nacks end a message): leases that expired,
		 * i.e. held by a killed worker. */
		printf("nats_queue: redelivered after a lease expired: %lld\n",
		    (long long)deliveries - N - ((long long)sh->nacks - nacked_dead));
		printf(
		    "nats_queue: N=%d workers=%d kills=%d: acked %llu, dead-lettered %d (nack %d, lease expired %d), "
		    "ack in flight at a kill %d, nacks %llu, extends %llu, worker errors %llu: %s\n",
		    N, WORKERS, kills, (unsigned long long)acked, nacked_dead + expired_dead, nacked_dead,
		    expired_dead, in_flight_at_kill, (unsigned long long)sh->nacks,
		    (unsigned long long)sh->extends, (unsigned long long)sh->errors, fails ? "FAIL" : "OK");
	}
	quay_nats_queue_close(q);
	quay_nats_close(n);
	quay_pool_destroy(pool);
	free(dlq);
	munmap(sh, sizeof(*sh));
	ts_fini(&srv);
	return fails ? 1 : 0;
}
