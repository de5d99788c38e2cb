/* SPDX-License-Identifier: MIT */
/*
 * durable: a queue on the write-ahead log survives a restart.
 *
 * Run 1 sends ten jobs (fdatasync'd: SYNC mode), acks three, leaves one
 * in flight and dead-letters one; then the process "restarts" (queues
 * destroyed, WAL closed, everything reopened from the directory). Run 2
 * finds the six unacked jobs back and the dead letter in the DLQ. The
 * in-flight one's delivery was logged before it was handed out, so it
 * counts as a failed attempt: with max_attempts 1 it is dead-lettered
 * when a receive reaches it, not delivered again (a job that crashes its
 * worker cannot loop forever). Exits 1 if it saw anything else.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

static quay_pool *pool;
static quay_wal *wal;
static quay_queue *jobs, *dlq;

static int
open_all(const char *dir)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

	if (quay_wal_open(dir, NULL, &wal) != 0) /* NULL: SYNC mode */
		return -1;
	o.name = "jobs-dlq";
	o.wal = wal;   /* log every transition here */
	o.pool = pool; /* recovered messages are made here */
	if (quay_queue_create(&o, &dlq) != 0)
		return -1;
	o.name = "jobs";
	o.dlq = dlq; /* same WAL: moves are atomic */
	o.max_attempts = 1;
	return quay_queue_create(&o, &jobs);
}

static void
close_all(void)
{
	quay_queue_destroy(jobs);
	quay_queue_destroy(dlq);
	quay_wal_close(wal);
}

/* Remove the example's scratch directory and the WAL files in it. */
static void
remove_dir(const char *dir)
{
	char path[300];
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d != NULL && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	if (d != NULL)
		closedir(d);
	rmdir(dir);
}

int
main(void)
{
	char dir[] = "/tmp/quay-durable-XXXXXX";
	struct quay_queue_stats js, js2, ds;
	quay_lease l;
	int bad = 1, seen = 0;

	if (mkdtemp(dir) == NULL || quay_pool_create(1 << 20, NULL, &pool) != 0)
		return 1;
	if (open_all(dir) != 0)
		goto out;
	for (int i = 0; i < 10; i++) {
		quay_msg *m;

		if (quay_msg_new(pool, &i, sizeof(i), &m) != 0 || quay_queue_send(jobs, m) != 0)
			goto out; /* 0: on disk */
	}
	for (int i = 0; i < 5; i++) {
		if (quay_queue_receive(jobs, &l, 0) != 0)
			goto out;
		if (i < 3)
			quay_queue_ack(jobs, &l); /* jobs 0, 1, 2 done */
		else if (i == 3)
			quay_queue_nack(jobs, &l, "bad input"); /* job 3: max_attempts 1 -> DLQ */
		/* job 4: in flight when we "crash" */
		quay_msg_unref(l.msg);
	}
	close_all();

	if (open_all(dir) != 0) /* recovery happens here */
		goto out;
	quay_queue_stats(jobs, &js);
	quay_queue_stats(dlq, &ds);
	printf("after restart: jobs %llu ready, dlq %llu\n", (unsigned long long)js.ready,
	    (unsigned long long)ds.ready);
	while (quay_queue_receive(jobs, &l, 0) == 0) {
		int v;

		memcpy(&v, quay_msg_body(l.msg), sizeof(v));
		seen += v >= 5 ? 1 : 100; /* 0..4 must not come back */
		quay_queue_ack(jobs, &l);
		quay_msg_unref(l.msg);
	}
	quay_queue_stats(jobs, &js2);
	bad = !(js.restored == 6 && seen == 5 && ds.restored == 1 && js2.dead_lettered == 1);
	close_all();
out:
	remove_dir(dir);
	quay_pool_destroy(pool);
	printf("%s\n", bad ? "WRONG" : "ok: 6 jobs back, 1 dead letter, 0 acked returned");
	return bad;
}
