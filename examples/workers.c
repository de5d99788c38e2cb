/* SPDX-License-Identifier: MIT */
/*
 * workers: a work queue with a dead-letter queue (quay/queue.h).
 *
 * Four worker threads take jobs from "jobs". A job fails at random (the
 * worker nacks it, or "crashes" and lets its lease expire); jobs whose
 * number ends in 7 always fail. After 3 deliveries a job goes to the
 * dead-letter queue "jobs.dlq". When the work is done, the DLQ is
 * redriven back (the bug is "fixed": workers now succeed) and drained.
 * Exits 1 unless every job was done exactly once in the end.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>

#define JOBS 2000
#define WORKERS 4
#define MS ((int64_t)1000000)

static quay_queue *jobs, *dlq;
static int done_count[JOBS]; /* acks that succeeded, per job */
static int fixed;            /* after the redrive every job succeeds */

static void *
worker(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	quay_lease l;

	for (;;) {
		uint32_t job;
		int roll = rand_r(&seed) % 100;
		/* Wait as long as it takes: quay_queue_close() at shutdown
		 * wakes the worker with -EPIPE. */
		int rc = quay_queue_receive(jobs, &l, -1);

		if (rc == -EPIPE)
			break;
		if (rc != 0)
			continue;
		memcpy(&job, quay_msg_body(l.msg), sizeof(job));
		if (!__atomic_load_n(&fixed, __ATOMIC_ACQUIRE) && (job % 10 == 7 || roll < 20)) {
			if (roll < 10)
				quay_queue_nack(jobs, &l, "job failed");
			/* else: the worker "crashed"; the lease runs out */
		} else if (quay_queue_ack(jobs, &l) == 0) {
			__atomic_fetch_add(&done_count[job], 1, __ATOMIC_RELAXED);
		}
		quay_msg_unref(l.msg); /* our reference to the message */
	}
	return NULL;
}

static void
print_stats(const char *name, quay_queue *q)
{
	struct quay_queue_stats s;

	quay_queue_stats(q, &s);
	printf("%-9s sent %llu received %llu acked %llu nacked %llu lease-expired %llu retried %llu "
	       "dead-lettered %llu redriven-out %llu | ready %llu delayed %llu in-flight %llu\n",
	    name, (unsigned long long)s.sent, (unsigned long long)s.received, (unsigned long long)s.acked,
	    (unsigned long long)s.nacked, (unsigned long long)s.lease_expired, (unsigned long long)s.retried,
	    (unsigned long long)s.dead_lettered, (unsigned long long)s.redriven_out,
	    (unsigned long long)s.ready, (unsigned long long)s.delayed, (unsigned long long)s.in_flight);
}

int
main(void)
{
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_pool *pool = NULL;
	pthread_t th[WORKERS];
	size_t moved = 0;
	int rc = 1, ok = 0;
	struct quay_queue_stats s;

	if (quay_pool_create((size_t)4 << 20, NULL, &pool) != 0)
		return 1;
	o.name = "jobs.dlq";
	o.capacity = JOBS;
	if (quay_queue_create(&o, &dlq) != 0)
		goto out;
	o.name = "jobs";
	o.dlq = dlq;
	o.max_attempts = 3;         /* SQS maxReceiveCount */
	o.visibility_ns = 20 * MS;  /* a crashed worker's job is back after 20 ms */
	o.backoff_base_ns = 1 * MS; /* then 1, 2 ms ... with full jitter */
	o.backoff_max_ns = 10 * MS;
	if (quay_queue_create(&o, &jobs) != 0)
		goto out;
	for (uint32_t i = 0; i < JOBS; i++) {
		quay_msg *m = NULL;

		if (quay_msg_new(pool, &i, sizeof(i), &m) != 0 || quay_queue_send(jobs, m) != 0)
			goto out;
	}
	for (uintptr_t i = 0; i < WORKERS; i++)
		pthread_create(&th[i], NULL, worker, (void *)(i + 1));

	/* Wait until every job is done or dead-lettered. */
	do {
		struct timespec ts = { 0, 2 * MS };

		nanosleep(&ts, NULL);
		quay_queue_stats(jobs, &s);
	} while (s.acked + s.dead_lettered < JOBS);
	print_stats("jobs", jobs);
	print_stats("jobs.dlq", dlq);

	/* Fix the bug, send the dead letters back (again if a job that was
	 * failing when we fixed it lands there late), let the workers finish. */
	__atomic_store_n(&fixed, 1, __ATOMIC_RELEASE);
	do {
		struct timespec ts = { 0, 2 * MS };
		size_t n = 0;

		if (quay_queue_redrive(dlq, jobs, JOBS, &n) != 0)
			goto out;
		moved += n;
		nanosleep(&ts, NULL);
		quay_queue_stats(jobs, &s);
	} while (s.acked < JOBS);
	printf("redrove %zu jobs\n", moved);
	quay_queue_close(jobs); /* wakes every worker: -EPIPE */
	for (int i = 0; i < WORKERS; i++)
		pthread_join(th[i], NULL);
	print_stats("jobs", jobs);
	print_stats("jobs.dlq", dlq);

	for (int i = 0; i < JOBS; i++)
		ok += done_count[i] == 1;
	printf("%d of %d jobs done exactly once\n", ok, JOBS);
	rc = ok == JOBS && moved > 0 && s.ready + s.delayed + s.in_flight == 0 ? 0 : 1;
out:
	quay_queue_destroy(jobs);
	quay_queue_destroy(dlq);
	quay_pool_destroy(pool);
	return rc;
}
