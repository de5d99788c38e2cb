/* SPDX-License-Identifier: MIT */
/*
 * Two processes, each with its own bus, over a real nats-server started
 * here (docs/NATS.md, "Tests"). Each process P (A or B; Q is the other):
 *   exports ev.P, ev.both, svc.Q; imports ev.Q, ev.both, svc.P and job.x
 *   in queue group "g"; has plain subscriptions on ev.Q and ev.both, two
 *   members of local group "g" and a plain subscription on job.x, and a
 *   responder on svc.P.
 * Each publishes N on ev.P and N on ev.both and makes R requests to svc.Q;
 * the parent (a plain libnats client) publishes N on job.x and makes R
 * requests to each svc.P. Checked: ev.Q messages arrive exactly once
 * each; ev.both (exported and imported on both sides: the loop test)
 * arrives exactly once from each side, never twice from itself; each
 * job.x message is taken by exactly one process, by exactly one member of
 * its local group, and once by that process's plain subscription; every
 * request gets its own reply; ev.Q and ev.both arrive in each sender's
 * publish order. Counters are checked against the traffic.
 * Env QUAY_NATS_N sets N (default 2000); QUAY_NATS_DIRECT=1 makes both
 * processes' handles QUAY_NATS_DIRECT (exports and replies published on
 * the publishing thread; test nats-bridge-direct).
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <quay/bus.h>
#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

#define NMAX 100000
#define R 100

struct shm {
	_Atomic int ready;
	_Atomic int go;
	_Atomic int stop;
	_Atomic uint32_t ev_other[2][NMAX];   /* [receiver][seq] */
	_Atomic uint32_t ev_both[2][2][NMAX]; /* [receiver][sender][seq] */
	_Atomic uint32_t job_g[2][NMAX];      /* [receiver][seq] group members */
	_Atomic uint32_t job_plain[2][NMAX];  /* [receiver][seq] plain sub */
	_Atomic int req_ok[2];
	_Atomic int order_err[2];
	_Atomic int served[2];
	struct quay_nats_counters ctr[2];
};

static struct shm *sh;
static int N = 2000;
static const char *url;

#define DIE(...) \
	do { \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

struct rx {
	quay_sub *sub;
	int me;
	int kind; /* 0 ev_other, 1 ev_both, 2 job group, 3 job plain, 4 responder */
	quay_bus *bus;
	quay_pool *pool;
};

static void *
rx_thread(void *arg)
{
	struct rx *x = arg;
	quay_msg *m;
	int r, last[3] = { -1, -1, -1 };

	while ((r = quay_sub_receive(x->sub, &m, 100000000)) != -EPIPE) {
		char b[64];
		size_t l;
		int who, seq;
		if (r == -ETIMEDOUT) {
			if (atomic_load(&sh->stop))
				break;
			continue;
		}
		if (r != 0)
			DIE("receive: %d", r);
		l = quay_msg_body_len(m) < 63 ? quay_msg_body_len(m) : 63;
		memcpy(b, quay_msg_body(m), l);
		b[l] = 0;
		if (x->kind == 4) {
			quay_msg *rep;
			char out[80];
			int k = snprintf(out, sizeof(out), "%c:%s", 'A' + x->me, b);
			if (quay_msg_new(x->pool, out, (size_t)k, &rep) != 0)
				DIE("reply alloc");
			if (quay_bus_reply(x->bus, m, rep) < 0)
				DIE("reply");
			atomic_fetch_add(&sh->served[x->me], 1);
		} else if (sscanf(b, "%d:%d", &who, &seq) != 2 || seq < 0 || seq >= N || who < 0 || who > 2) {
			DIE("bad body '%s'", b);
		} else if (x->kind == 0 || x->kind == 1) {
			/* One publisher, one bridge thread, one NATS
			 * connection, one delivery thread: FIFO per sender. */
			if (seq != last[who] + 1)
				atomic_fetch_add(&sh->order_err[x->me], 1);
			last[who] = seq;
			if (x->kind == 0)
				atomic_fetch_add(&sh->ev_other[x->me][seq], 1);
			else
				atomic_fetch_add(&sh->ev_both[x->me][who][seq], 1);
		} else if (x->kind == 2) {
			atomic_fetch_add(&sh->job_g[x->me][seq], 1);
		} else {
			atomic_fetch_add(&sh->job_plain[x->me][seq], 1);
		}
		quay_msg_unref(m);
	}
	return NULL;
}

static quay_msg *
mk(quay_pool *pool, int who, int seq)
{
	char b[32];
	int k = snprintf(b, sizeof(b), "%d:%d", who, seq);
	quay_msg *m;
	if (quay_msg_new(pool, b, (size_t)k, &m) != 0)
		DIE("msg_new");
	return m;
}

static void
child(int me)
{
	const char *P = me == 0 ? "A" : "B", *Q = me == 0 ? "B" : "A";
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	struct quay_sub_opts go = QUAY_SUB_OPTS_INIT;
	quay_nats *n;
	quay_bus *bus;
	quay_pool *pool;
	struct rx x[6];
	pthread_t t[6];
	char s[64];
	int r;

	o.urls = &url;
	o.nurls = 1;
	o.name = P;
	if (getenv("QUAY_NATS_DIRECT") != NULL && atoi(getenv("QUAY_NATS_DIRECT")) != 0)
		o.flags = QUAY_NATS_DIRECT;
	if (quay_pool_create((size_t)64 << 20, NULL, &pool) != 0 || quay_bus_create(NULL, &bus) != 0)
		DIE("setup");
	go.capacity = 65536;
	for (int i = 0; i < 6; i++) {
		struct quay_sub_opts so = go;
		const char *pat;
		x[i] = (struct rx){ .me = me, .bus = bus, .pool = pool };
		switch (i) {
		case 0:
			snprintf(s, sizeof(s), "ev.%s", Q);
			pat = s;
			x[i].kind = 0;
			break;
		case 1:
			pat = "ev.both";
			x[i].kind = 1;
			break;
		case 2:
		case 3:
			pat = "job.x";
			so.group = "g";
			x[i].kind = 2;
			break;
		case 4:
			pat = "job.x";
			x[i].kind = 3;
			break;
		default:
			snprintf(s, sizeof(s), "svc.%s", P);
			pat = s;
			x[i].kind = 4;
			break;
		}
		if ((r = quay_bus_subscribe(bus, pat, &so, &x[i].sub)) != 0)
			DIE("subscribe %s: %d", pat, r);
		pthread_create(&t[i], NULL, rx_thread, &x[i]);
	}
	if ((r = quay_nats_connect(&o, &n)) != 0)
		DIE("connect: %s", quay_strerror(r));
	/* Process 0 exports wildcards (the bus tap gives their subjects;
	 * its imports publish on the same subjects and must not go out
	 * again; its requests on svc.B have no local subscriber), process 1
	 * the literal subjects (bus subscriptions). */
	if (me == 0) {
		if (quay_nats_export(n, bus, "ev.>") || quay_nats_export(n, bus, "svc.*"))
			DIE("export wildcards");
	} else {
		snprintf(s, sizeof(s), "ev.%s", P);
		if (quay_nats_export(n, bus, s) || quay_nats_export(n, bus, "ev.both"))
			DIE("export");
		snprintf(s, sizeof(s), "svc.%s", Q);
		if (quay_nats_export(n, bus, s))
			DIE("export svc");
	}
	snprintf(s, sizeof(s), "ev.%s", Q);
	if (quay_nats_import(n, bus, s, NULL) || quay_nats_import(n, bus, "ev.both", NULL) ||
	    quay_nats_import(n, bus, "job.x", "g"))
		DIE("import");
	snprintf(s, sizeof(s), "svc.%s", P);
	if (quay_nats_import(n, bus, s, NULL))
		DIE("import svc");
	if ((r = quay_nats_flush(n, 5000000000)) != 0)
		DIE("flush %d", r);
	atomic_fetch_add(&sh->ready, 1);
	while (!atomic_load(&sh->go))
		usleep(1000);

	snprintf(s, sizeof(s), "ev.%s", P);
	for (int i = 0; i < N; i++) {
		quay_msg *m = mk(pool, me, i);
		if ((r = quay_bus_publish(bus, s, m)) < 0)
			DIE("publish %d", r);
		m = mk(pool, me, i);
		if ((r = quay_bus_publish(bus, "ev.both", m)) < 0)
			DIE("publish both %d", r);
	}
	snprintf(s, sizeof(s), "svc.%s", Q);
	for (int i = 0; i < R; i++) {
		quay_msg *req = mk(pool, me, i), *rep;
		char want[64], got[64];
		size_t l;
		if ((r = quay_bus_request(bus, s, req, &rep, 10000000000)) != 0)
			DIE("request %d: %s", i, quay_strerror(r));
		snprintf(want, sizeof(want), "%s:%d:%d", Q, me, i);
		l = quay_msg_body_len(rep) < 63 ? quay_msg_body_len(rep) : 63;
		memcpy(got, quay_msg_body(rep), l);
		got[l] = 0;
		if (strcmp(want, got) != 0)
			DIE("reply '%s', want '%s'", got, want);
		quay_msg_unref(rep);
		atomic_fetch_add(&sh->req_ok[me], 1);
	}
	while (!atomic_load(&sh->stop))
		usleep(1000);
	for (int i = 0; i < 6; i++)
		pthread_join(t[i], NULL);
	quay_nats_counters(n, &sh->ctr[me]);
	quay_nats_close(n);
	quay_bus_destroy(bus);
	quay_pool_destroy(pool);
	exit(0);
}

static int
all_arrived(void)
{
	for (int i = 0; i < N; i++) {
		if (sh->ev_other[0][i] == 0 || sh->ev_other[1][i] == 0)
			return 0;
		for (int a = 0; a < 2; a++)
			for (int b = 0; b < 2; b++)
				if (sh->ev_both[a][b][i] == 0)
					return 0;
		if (sh->job_g[0][i] + sh->job_g[1][i] == 0)
			return 0;
		if (sh->job_plain[0][i] + sh->job_plain[1][i] == 0)
			return 0;
	}
	return sh->req_ok[0] == R && sh->req_ok[1] == R;
}

int
main(void)
{
	struct test_server srv = { 0 };
	natsConnection *nc;
	pid_t pid[2];
	int fails = 0, st;
	char *e = getenv("QUAY_NATS_N");

	if (e != NULL)
		N = atoi(e);
	if (N < 1 || N > NMAX)
		N = 2000;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		DIE("mmap");
	ts_init(&srv);
	url = srv.url;
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		if (pid[i] == 0)
			child(i);
	}
	for (int i = 0; i < 3000 && atomic_load(&sh->ready) < 2; i++)
		usleep(10000);
	if (atomic_load(&sh->ready) < 2)
		DIE("children not ready");
	if (natsConnection_ConnectTo(&nc, srv.url) != NATS_OK)
		DIE("plain connect");
	atomic_store(&sh->go, 1);
	for (int i = 0; i < N; i++) {
		char b[32];
		snprintf(b, sizeof(b), "2:%d", i);
		if (natsConnection_PublishString(nc, "job.x", b) != NATS_OK)
			DIE("plain publish");
	}
	/* A plain NATS client's requests, answered by each process's local
	 * responder. */
	for (int p = 0; p < 2; p++) {
		for (int i = 0; i < R; i++) {
			natsMsg *rep;
			char b[32], want[40], subj[16];
			snprintf(b, sizeof(b), "2:%d", i);
			snprintf(want, sizeof(want), "%c:%s", 'A' + p, b);
			snprintf(subj, sizeof(subj), "svc.%c", 'A' + p);
			if (natsConnection_RequestString(&rep, nc, subj, b, 10000) != NATS_OK)
				DIE("plain request %s %d", subj, i);
			if ((size_t)natsMsg_GetDataLength(rep) != strlen(want) ||
			    memcmp(natsMsg_GetData(rep), want, strlen(want)) != 0)
				DIE("plain reply mismatch");
			natsMsg_Destroy(rep);
		}
	}
	for (int i = 0; i < 6000 && !all_arrived(); i++)
		usleep(10000);
	/* Duplicates that were on their way get time to show up. */
	natsConnection_Flush(nc);
	usleep(300000);
	atomic_store(&sh->stop, 1);
	for (int i = 0; i < 2; i++) {
		waitpid(pid[i], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "child %c failed (status %d)\n", 'A' + i, st);
			fails++;
		}
	}
	for (int i = 0; i < N; i++) {
		for (int p = 0; p < 2; p++) {
			if (sh->ev_other[p][i] != 1)
				fails++,
				    fprintf(stderr, "ev.%c seq %d seen %u times by %c\n", 'B' - p, i,
				        sh->ev_other[p][i], 'A' + p);
			for (int from = 0; from < 2; from++)
				if (sh->ev_both[p][from][i] != 1)
					fails++,
					    fprintf(stderr, "ev.both from %c seq %d seen %u times by %c\n",
					        'A' + from, i, sh->ev_both[p][from][i], 'A' + p);
			if (sh->job_plain[p][i] != sh->job_g[p][i])
				fails++,
				    fprintf(stderr, "job %d: %c plain %u group %u\n", i, 'A' + p,
				        sh->job_plain[p][i], sh->job_g[p][i]);
		}
		if (sh->job_g[0][i] + sh->job_g[1][i] != 1)
			fails++,
			    fprintf(stderr, "job %d taken %u + %u times\n", i, sh->job_g[0][i],
			        sh->job_g[1][i]);
		if (fails > 20)
			break;
	}
	for (int p = 0; p < 2; p++) {
		struct quay_nats_counters *c = &sh->ctr[p];
		uint64_t jobs = 0;
		for (int i = 0; i < N; i++)
			jobs += sh->job_g[p][i];
		printf(
		    "%c: forwarded %llu received %llu dropped %llu echo %llu invalid %llu replies %llu jobs %llu served %d\n",
		    'A' + p, (unsigned long long)c->forwarded, (unsigned long long)c->received,
		    (unsigned long long)c->dropped, (unsigned long long)c->echo_dropped,
		    (unsigned long long)c->invalid, (unsigned long long)c->replies, (unsigned long long)jobs,
		    atomic_load(&sh->served[p]));
		/* forwarded: N ev.P + N ev.both + R requests + R replies to
		 * the other process + R replies to the plain client. */
		if (c->forwarded != (uint64_t)(2 * N + 3 * R))
			fails++,
			    fprintf(stderr, "%c forwarded %llu, want %d\n", 'A' + p,
			        (unsigned long long)c->forwarded, 2 * N + 3 * R);
		/* received: N ev.Q + N ev.both + jobs + 2R requests served. */
		if (c->received != 2 * (uint64_t)N + jobs + 2 * R)
			fails++,
			    fprintf(stderr, "%c received %llu, want %llu\n", 'A' + p,
			        (unsigned long long)c->received, 2 * (unsigned long long)N + jobs + 2 * R);
		if (sh->order_err[p] != 0)
			fails++,
			    fprintf(stderr, "%c: %d messages out of per-sender order\n", 'A' + p,
			        sh->order_err[p]);
		if (c->dropped != 0 || c->replies != R || sh->served[p] != 2 * R)
			fails++, fprintf(stderr, "%c dropped/replies/served wrong\n", 'A' + p);
	}
	natsConnection_Destroy(nc);
	ts_fini(&srv);
	printf("nats_bridge: N=%d R=%d: %s\n", N, R, fails ? "FAIL" : "OK");
	return fails ? 1 : 0;
}
