/* SPDX-License-Identifier: MIT */
/*
 * A JetStream queue with three replicas on a three-server nats-server
 * cluster on 127.0.0.1 (three processes started here, JetStream on, the
 * stores in a temporary directory). A sender thread sends N messages
 * (each with a dedup id; a send that fails or times out is sent again
 * with the same id until the stream acknowledges it); two worker threads
 * (each its own connection, all three URLs) receive and ack. A third of
 * the way through the sends, the server that leads the stream is
 * SIGKILLed and stays down. Checked: every message whose send was
 * acknowledged is processed and acked (none lost), none is acked twice,
 * the stream ends empty, and a message delivered twice had a failed or
 * timed-out ack or an expired lease before (the queue's at-least-once
 * rule), counted and printed. QUAY_NATS_CN sets N (default 1500).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

#define NMAX 20000
#define NODES 3

#define DIE(...) \
	do { \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

static char dir[64];
static struct test_server node[NODES];
static int cport[NODES];
static const char *urls[NODES];
static int N = 1500;
static quay_pool *pool;

static _Atomic int sent_ok[NMAX]; /* the stream acknowledged the send */
static _Atomic int deliveries[NMAX];
static _Atomic int acked[NMAX];      /* ack confirmed */
static _Atomic int ack_failed[NMAX]; /* an ack that returned an error */
static _Atomic int nsent, stop, send_retries, ack_errors, recv_errors;

static void
write_conf(int i)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof(p), "%s/n%d.conf", dir, i);
	f = fopen(p, "w");
	if (f == NULL)
		DIE("conf");
	fprintf(f,
	    "server_name: n%d\njetstream { store_dir: \"%s/n%d\" }\n"
	    "cluster {\n  name: quay\n  listen: 127.0.0.1:%d\n  routes: [",
	    i, dir, i, cport[i]);
	for (int k = 0; k < NODES; k++)
		fprintf(f, "%s nats-route://127.0.0.1:%d", k ? "," : "", cport[k]);
	fprintf(f, " ]\n}\n");
	if (fclose(f) != 0)
		DIE("conf");
}

static quay_nats *
conn(void)
{
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *n;
	int r;

	o.urls = urls;
	o.nurls = NODES;
	o.max_reconnect = -1;
	o.reconnect_wait_ns = 100000000;
	if ((r = quay_nats_connect(&o, &n)) != 0)
		DIE("connect: %s", quay_strerror(r));
	return n;
}

static struct quay_nats_queue_opts
qopts(void)
{
	struct quay_nats_queue_opts o = QUAY_NATS_QUEUE_OPTS_INIT;
	o.name = "r3";
	o.replicas = 3;
	o.visibility_ns = 10000000000; /* longer than a failover */
	o.max_attempts = 1000;
	o.op_timeout_ns = 2000000000;
	return o;
}

static quay_nats_queue *
open_queue(quay_nats *n)
{
	struct quay_nats_queue_opts o = qopts();
	quay_nats_queue *q;
	int r = -1;

	/* The cluster elects its JetStream meta leader after the routes are
	 * up: open fails until then. */
	for (int t = 0; t < 300 && r != 0; t++) {
		r = quay_nats_queue_open(n, &o, &q);
		if (r != 0)
			usleep(100000);
	}
	if (r != 0)
		DIE("queue open: %s", quay_strerror(r));
	return q;
}

static int
body_seq(const quay_msg *m)
{
	char b[16];
	size_t len = quay_msg_body_len(m) < 15 ? quay_msg_body_len(m) : 15;
	memcpy(b, quay_msg_body(m), len);
	b[len] = 0;
	return atoi(b);
}

static void *
sender(void *arg)
{
	quay_nats_queue *q = arg;

	for (int i = 0; i < N; i++) {
		char b[16], id[16];
		int r, tries = 0;

		snprintf(b, sizeof(b), "%d", i);
		snprintf(id, sizeof(id), "c-%d", i);
		do {
			quay_msg *m;
			if (quay_msg_new(pool, b, strlen(b), &m) != 0 ||
			    quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, id, strlen(id)) != 0)
				DIE("msg");
			r = quay_nats_queue_send(q, m);
			if (r != 0) {
				quay_msg_unref(m);
				atomic_fetch_add(&send_retries, 1);
				usleep(50000);
			}
		} while (r != 0 && ++tries < 400);
		if (r != 0)
			DIE("send %d never acknowledged: %s", i, quay_strerror(r));
		atomic_store(&sent_ok[i], 1);
		atomic_fetch_add(&nsent, 1);
	}
	return NULL;
}

static void *
worker(void *arg)
{
	quay_nats_queue *q = arg;
	quay_nats_lease l;

	while (!atomic_load(&stop)) {
		int r = quay_nats_queue_receive(q, &l, 200000000), seq;
		if (r == -ETIMEDOUT)
			continue;
		if (r != 0) {
			atomic_fetch_add(&recv_errors, 1);
			usleep(20000);
			continue;
		}
		seq = body_seq(l.msg);
		if (seq < 0 || seq >= N)
			DIE("bad message %d", seq);
		atomic_fetch_add(&deliveries[seq], 1);
		if (quay_nats_queue_ack(q, &l) == 0) {
			atomic_fetch_add(&acked[seq], 1);
		} else {
			atomic_fetch_add(&ack_failed[seq], 1);
			atomic_fetch_add(&ack_errors, 1);
		}
	}
	return NULL;
}

/* The server that leads the queue's stream, by a plain libnats lookup. */
static int
stream_leader(void)
{
	natsConnection *nc = NULL;
	natsOptions *no = NULL;
	jsCtx *js = NULL;
	jsStreamInfo *si = NULL;
	int who = -1;

	if (natsOptions_Create(&no) != NATS_OK || natsOptions_SetServers(no, urls, NODES) != NATS_OK ||
	    natsConnection_Connect(&nc, no) != NATS_OK || natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
		DIE("plain connect");
	for (int t = 0; t < 100 && who < 0; t++) {
		if (js_GetStreamInfo(&si, js, "QUAY_r3", NULL, NULL) == NATS_OK && si->Cluster != NULL &&
		    si->Cluster->Leader != NULL)
			sscanf(si->Cluster->Leader, "n%d", &who);
		jsStreamInfo_Destroy(si);
		si = NULL;
		if (who < 0)
			usleep(100000);
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(no);
	return who;
}

int
main(void)
{
	quay_nats *sn, *wn[2];
	quay_nats_queue *sq, *wq[2];
	pthread_t st, wt[2];
	int fails = 0, lost = 0, twice = 0, redelivered = 0, leader, killed_at;
	uint64_t left = 1;
	char *e, cmd[128];

	if ((e = getenv("QUAY_NATS_CN")) != NULL && atoi(e) > 0 && atoi(e) <= NMAX)
		N = atoi(e);
	snprintf(dir, sizeof(dir), "/tmp/quay-nats-cl-XXXXXX");
	if (mkdtemp(dir) == NULL)
		DIE("mkdtemp");
	for (int i = 0; i < NODES; i++) {
		node[i].port = ts_free_port();
		cport[i] = ts_free_port();
		snprintf(node[i].dir, sizeof(node[i].dir), "%s", dir);
		snprintf(node[i].url, sizeof(node[i].url), "nats://127.0.0.1:%d", node[i].port);
		urls[i] = node[i].url;
	}
	for (int i = 0; i < NODES; i++) {
		static char conf[NODES][128];
		write_conf(i);
		snprintf(conf[i], sizeof(conf[i]), "%s/n%d.conf", dir, i);
		node[i].conf = conf[i];
		ts_start(&node[i]);
	}
	if (quay_pool_create((size_t)32 << 20, NULL, &pool) != 0)
		DIE("pool");
	sn = conn();
	sq = open_queue(sn);
	for (int k = 0; k < 2; k++) {
		wn[k] = conn();
		wq[k] = open_queue(wn[k]);
	}
	leader = stream_leader();
	if (leader < 0 || leader >= NODES)
		DIE("no stream leader found");
	pthread_create(&st, NULL, sender, sq);
	for (int k = 0; k < 2; k++)
		pthread_create(&wt[k], NULL, worker, wq[k]);
	while (atomic_load(&nsent) < N / 3)
		usleep(1000);
	killed_at = atomic_load(&nsent);
	ts_stop(&node[leader], SIGKILL);
	pthread_join(st, NULL);
	/* Until the stream is empty (work-queue retention: acked messages
	 * are removed), at most 40 s. */
	for (int t = 0; t < 400; t++) {
		if (quay_nats_queue_depth(sq, &left) == 0 && left == 0)
			break;
		usleep(100000);
	}
	atomic_store(&stop, 1);
	for (int k = 0; k < 2; k++)
		pthread_join(wt[k], NULL);
	if (left != 0)
		fails++, fprintf(stderr, "%llu messages left in the stream\n", (unsigned long long)left);
	for (int i = 0; i < N; i++) {
		if (sent_ok[i] && acked[i] == 0 && ack_failed[i] == 0)
			lost++,
			    fprintf(stderr,
			        "msg %d acknowledged by the stream, never processed (%d deliveries)\n", i,
			        deliveries[i]);
		if (acked[i] > 1)
			twice++, fprintf(stderr, "msg %d acked %d times\n", i, acked[i]);
		if (deliveries[i] > 1) {
			redelivered++;
			if (ack_failed[i] == 0)
				fails++,
				    fprintf(stderr, "msg %d delivered %d times without a failed ack\n", i,
				        deliveries[i]);
		}
	}
	fails += lost + twice;
	printf("nats_cluster: N=%d R3, leader n%d killed after %d sends: lost %d, acked twice %d, "
	       "redelivered after a failed ack %d, send retries %d, ack errors %d, receive errors %d: %s\n",
	    N, leader, killed_at, lost, twice, redelivered, send_retries, ack_errors, recv_errors,
	    fails ? "FAIL" : "OK");
	quay_nats_queue_close(sq);
	for (int k = 0; k < 2; k++) {
		quay_nats_queue_close(wq[k]);
		quay_nats_close(wn[k]);
	}
	quay_nats_close(sn);
	quay_pool_destroy(pool);
	for (int i = 0; i < NODES; i++)
		ts_stop(&node[i], SIGTERM);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return fails ? 1 : 0;
}
