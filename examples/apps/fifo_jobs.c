/* SPDX-License-Identifier: MIT */
/*
 * fifo_jobs: ordered job queues per customer on four FIFO queues, with
 * content dedup, a rate-limited e-mail queue and alarms
 * (examples/apps/README.md).
 *
 *   fifo_jobs [--seed=N] [--customers=N] [--rounds=N]
 *
 * Four FIFO queues (QUAY_QUEUE_FIFO): feedback, email, analytics and
 * invitations, each with its own visibility timeout and retention (TTL),
 * 3 receives at most, then its DLQ. The message group is the customer
 * (header quay-group): a customer's jobs of one queue are processed one
 * at a time in the order they were sent, customers in parallel. Content
 * dedup (QUAY_QUEUE_CONTENT_DEDUP): a job sent twice (a double click) is
 * taken once; the same body for another customer is another job. The
 * email queue is rate limited (500 a second, bursts of 20). Alarms on
 * ready depth, oldest age and DLQ depth fire while the backlog lasts and
 * clear once it is gone and the DLQs have been archived.
 *
 * Workers fail at random (a seeded hash: nack, or a "crash" that lets the
 * lease run out), and a few jobs always fail (they end in the DLQ after 3
 * receives; their customer's later jobs go on).
 *
 * Promises (exit 1 if one is broken): per customer and queue, jobs are
 * completed in send order; every job is completed exactly once or is in
 * the DLQ exactly once; every injected duplicate was refused and nothing
 * else; the email queue never received faster than its limit allows; the
 * depth, age and DLQ alarms fired and all cleared.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>

#include "app_util.h"

#define NQ 4
#define MS ((int64_t)1000000)
#define CUST_MAX 64
#define ROUNDS_MAX 200
#define WORKERS 2 /* per queue */
#define EMAIL_RATE 500.0
#define EMAIL_BURST 20

enum { FEEDBACK, EMAIL, ANALYTICS, INVITES };

static const char *const qname[NQ] = { "feedback", "email", "analytics", "invitations" };
static const char *const dlqname[NQ] = { "feedback.dlq", "email.dlq", "analytics.dlq", "invitations.dlq" };
static const int64_t visibility_ms[NQ] = { 300, 200, 500, 250 };
static const int64_t retention_s[NQ] = { 60, 30, 20, 60 };
static const char *const kind[NQ] = { "nps-survey", "receipt-email", "page-view", "team-invite" };
static const char *const alarm_name[QUAY_QUEUE_ALARM_COUNT] = { "ready", "age", "in_flight", "dlq",
	"failures" };

/* A job's body: no customer in it (the group says whose it is), so two
 * customers' jobs often have the same body. */
struct job {
	uint8_t queue;
	uint8_t pad;
	uint16_t seq;
	char what[44];
};

static uint64_t seed = 11;
static int ncust = 24, rounds = 30;
static int break_dedup;   /* --break=dedup: no content dedup */
static int break_fifo;    /* --break=fifo: plain queues */
static int break_rate;    /* --break=rate: no rate limit on email */
static int break_archive; /* --break=archive: the DLQs are left full */

static quay_pool *pool;
static quay_queue *q[NQ], *dlq[NQ];

/* Per queue and customer: a lock held across "check order, ack, record"
 * (the next job of the group may be received as soon as the ack lands). */
static pthread_mutex_t glock[NQ][CUST_MAX];
static int last_done[NQ][CUST_MAX];
static uint8_t done[NQ][CUST_MAX][ROUNDS_MAX], dead[NQ][CUST_MAX][ROUNDS_MAX];
static uint32_t order_violations, crashes, nacks;
static int dead_letter_bad;

static int stop_workers, stop_monitor; /* release/acquire */
static int64_t email_t0, email_last;   /* CLOCK_MONOTONIC ns */

/* Alarm transitions (from on_alarm), printed at the end. */
static pthread_mutex_t alarm_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t alarm_on[NQ][QUAY_QUEUE_ALARM_COUNT], alarm_off[NQ][QUAY_QUEUE_ALARM_COUNT];
static int64_t alarm_first_on[NQ][QUAY_QUEUE_ALARM_COUNT], alarm_last_off[NQ][QUAY_QUEUE_ALARM_COUNT];
static int64_t t0;

static uint64_t
job_hash(int qi, int c, int seq)
{
	return mix(seed ^ ((uint64_t)qi << 48) ^ ((uint64_t)c << 24) ^ (uint64_t)seq);
}

/* 1 job in 100 always fails; 1 in 25 is sent twice. */
static bool
poison(int qi, int c, int seq)
{
	return job_hash(qi, c, seq) % 100 == 7;
}

static bool
doubled(int qi, int c, int seq)
{
	return (job_hash(qi, c, seq) >> 20) % 25 == 3;
}

static void
on_alarm(void *ctx, quay_queue *qq, quay_queue_alarm a, bool on, double value)
{
	int qi = (int)(uintptr_t)ctx;
	int64_t t = mono_ns() - t0;

	(void)qq;
	(void)value;
	pthread_mutex_lock(&alarm_mu);
	if (on) {
		if (alarm_on[qi][a]++ == 0)
			alarm_first_on[qi][a] = t;
	} else {
		alarm_off[qi][a]++;
		alarm_last_off[qi][a] = t;
	}
	pthread_mutex_unlock(&alarm_mu);
}

static int
make_queues(void)
{
	for (int i = 0; i < NQ; i++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		int rc;

		o.name = dlqname[i];
		o.capacity = 1024;
		if ((rc = quay_queue_create(&o, &dlq[i])) != 0)
			return rc;
		o.name = qname[i];
		o.flags = (break_fifo ? 0 : QUAY_QUEUE_FIFO) | (break_dedup ? 0 : QUAY_QUEUE_CONTENT_DEDUP);
		o.capacity = 4096;
		o.dlq = dlq[i];
		o.max_attempts = 3;
		o.visibility_ns = visibility_ms[i] * MS;
		o.ttl_ns = retention_s[i] * 1000 * MS; /* SQS MessageRetentionPeriod */
		o.backoff_base_ns = 2 * MS;
		o.backoff_max_ns = 20 * MS;
		o.jitter_seed = seed + (uint64_t)i;
		o.dedup_window_ns = 10000 * MS; /* SQS: 5 minutes */
		o.dedup_capacity = 4096;
		if (i == EMAIL && !break_rate) {
			o.rate_per_sec = EMAIL_RATE;
			o.rate_burst = EMAIL_BURST;
		}
		o.alarm[QUAY_QUEUE_ALARM_READY] = (struct quay_queue_threshold){ 100, 10, 2 };
		o.alarm[QUAY_QUEUE_ALARM_AGE] = (struct quay_queue_threshold){ 150e6, 50e6, 2 };
		o.alarm[QUAY_QUEUE_ALARM_DLQ] = (struct quay_queue_threshold){ 1, 1, 1 };
		o.on_alarm = on_alarm;
		o.alarm_ctx = (void *)(uintptr_t)i;
		if ((rc = quay_queue_create(&o, &q[i])) != 0)
			return rc;
	}
	return 0;
}

static int
send_job(int qi, int c, int seq)
{
	struct job j = { 0 };
	char group[16];
	quay_msg *m;
	int rc;

	j.queue = (uint8_t)qi;
	j.seq = (uint16_t)seq;
	snprintf(j.what, sizeof(j.what), "%s #%d", kind[qi], seq);
	snprintf(group, sizeof(group), "cust-%02d", c);
	if ((rc = quay_msg_new(pool, &j, sizeof(j), &m)) != 0)
		return rc;
	quay_msg_set_header_str(m, QUAY_MSG_H_GROUP, group);
	while ((rc = quay_queue_send(q[qi], m)) == -EAGAIN)
		sleep_ns(MS);
	if (rc < 0)
		quay_msg_unref(m);
	return rc;
}

static void *
worker(void *arg)
{
	int qi = (int)(uintptr_t)arg;

	while (!__atomic_load_n(&stop_workers, __ATOMIC_ACQUIRE)) {
		quay_lease l;
		struct job j;
		char group[16] = "";
		int c, rc = quay_queue_receive(q[qi], &l, 50 * MS);
		uint64_t roll;

		if (rc != 0)
			continue;
		if (qi == EMAIL)
			__atomic_store_n(&email_last, mono_ns(), __ATOMIC_RELAXED);
		memcpy(&j, quay_msg_body(l.msg), sizeof(j));
		quay_msg_get_header_str(l.msg, QUAY_MSG_H_GROUP, group, sizeof(group));
		c = atoi(group + 5);
		roll = mix(job_hash(qi, c, j.seq) ^ l.attempt) % 100;
		sleep_ns(MS / 5); /* the work */
		if (poison(qi, c, j.seq) || roll < 8) {
			quay_queue_nack(q[qi], &l, "job failed");
			__atomic_fetch_add(&nacks, 1, __ATOMIC_RELAXED);
		} else if (roll < 10) {
			__atomic_fetch_add(&crashes, 1, __ATOMIC_RELAXED); /* the lease runs out */
		} else {
			pthread_mutex_lock(&glock[qi][c]);
			if (quay_queue_ack(q[qi], &l) == 0) {
				if (j.seq <= last_done[qi][c])
					order_violations++;
				last_done[qi][c] = j.seq;
				done[qi][c][j.seq]++;
			}
			pthread_mutex_unlock(&glock[qi][c]);
		}
		quay_msg_unref(l.msg);
	}
	return NULL;
}

/* Evaluations of the alarms: quay_queue_health() every 20 ms (a
 * Prometheus scrape of the queues' registries would do as well). */
static void *
monitor(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop_monitor, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < NQ; i++) {
			struct quay_queue_health h;

			quay_queue_health(q[i], &h);
		}
		sleep_ns(20 * MS);
	}
	return NULL;
}

/* The operator archives the dead letters: each one recorded, then acked. */
static void
archive_dlq(int qi)
{
	quay_lease l;

	while (quay_queue_receive(dlq[qi], &l, 0) == 0) {
		struct job j;
		char group[16] = "", reason[32] = "", att[8] = "";

		memcpy(&j, quay_msg_body(l.msg), sizeof(j));
		quay_msg_get_header_str(l.msg, QUAY_MSG_H_GROUP, group, sizeof(group));
		quay_msg_get_header_str(l.msg, QUAY_MSG_H_DLQ_REASON, reason, sizeof(reason));
		quay_msg_get_header_str(l.msg, QUAY_QUEUE_H_DLQ_ATTEMPTS, att, sizeof(att));
		dead[qi][atoi(group + 5)][j.seq]++;
		dead_letter_bad |= strcmp(reason, "max-attempts") != 0 || strcmp(att, "3") != 0;
		quay_queue_ack(dlq[qi], &l);
		quay_msg_unref(l.msg);
	}
}

static int failures;

static void
check(int ok, const char *what)
{
	printf("  [%s] %s\n", ok ? "ok" : "FAIL", what);
	failures += !ok;
}

int
main(int argc, char **argv)
{
	pthread_t th[NQ * WORKERS], mon;
	uint32_t dup_sent = 0, dup_refused = 0, wrong_refusals = 0, jobs = 0;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = strtoull(argv[i] + 7, NULL, 10);
		else if (strncmp(argv[i], "--customers=", 12) == 0)
			ncust = atoi(argv[i] + 12);
		else if (strncmp(argv[i], "--rounds=", 9) == 0)
			rounds = atoi(argv[i] + 9);
		else if (strcmp(argv[i], "--break=dedup") == 0)
			break_dedup = 1;
		else if (strcmp(argv[i], "--break=fifo") == 0)
			break_fifo = 1;
		else if (strcmp(argv[i], "--break=rate") == 0)
			break_rate = 1;
		else if (strcmp(argv[i], "--break=archive") == 0)
			break_archive = 1;
		else {
			fprintf(stderr, "usage: %s [--seed=N] [--customers=N] [--rounds=N]\n", argv[0]);
			return 2;
		}
	}
	if (ncust < 1 || ncust > CUST_MAX || rounds < 1 || rounds > ROUNDS_MAX)
		return 2;
	for (int i = 0; i < NQ; i++)
		for (int c = 0; c < CUST_MAX; c++) {
			pthread_mutex_init(&glock[i][c], NULL);
			last_done[i][c] = -1;
		}
	/* Content dedup keeps each message of the window: room for them all. */
	if (quay_pool_create((size_t)32 << 20, NULL, &pool) != 0)
		return 1;
	t0 = mono_ns();
	if (make_queues() != 0)
		goto out;
	email_t0 = mono_ns(); /* the email bucket starts full: bursts count from here */
	printf("fifo_jobs: seed %llu, %d customers x %d jobs on each of %d FIFO queues\n",
	    (unsigned long long)seed, ncust, rounds, NQ);
	for (int i = 0; i < NQ; i++)
		printf("  %-11s visibility %3lld ms, retention %2lld s, max 3 receives then %s%s\n", qname[i],
		    (long long)visibility_ms[i], (long long)retention_s[i], dlqname[i],
		    i == EMAIL ? ", at most 500 a second (bursts of 20)" : "");
	for (int i = 0; i < NQ * WORKERS; i++)
		pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i / WORKERS));
	pthread_create(&mon, NULL, monitor, NULL);

	/* The producers: a third of the jobs at once (a morning rush), the
	 * rest a round every 20 ms; some jobs sent twice. */
	for (int r = 0; r < rounds; r++) {
		for (int c = 0; c < ncust; c++)
			for (int i = 0; i < NQ; i++) {
				int n = doubled(i, c, r) ? 2 : 1;

				for (int k = 0; k < n; k++) {
					int s = send_job(i, c, r);

					if (s < 0) {
						printf("send: %s\n", quay_strerror(s));
						goto out;
					}
					dup_sent += k;
					dup_refused += k == 1 && s == QUAY_QUEUE_DUPLICATE;
					wrong_refusals += k == 0 && s == QUAY_QUEUE_DUPLICATE;
				}
				jobs++;
			}
		if (r >= rounds / 3)
			sleep_ns(20 * MS);
	}
	printf("sent %u jobs and %u duplicates in %.2f s\n", jobs, dup_sent, (double)(mono_ns() - t0) / 1e9);

	/* Wait for the work, then archive the dead letters. */
	for (int64_t end = mono_ns() + 20000 * MS; mono_ns() < end;) {
		uint64_t n = 0;

		for (int i = 0; i < NQ; i++)
			n += held(q[i]);
		if (n == 0)
			break;
		sleep_ns(5 * MS);
	}
	printf("processed in %.2f s (%u nacks, %u crashes: leases run out)\n", (double)(mono_ns() - t0) / 1e9,
	    nacks, crashes);
	__atomic_store_n(&stop_workers, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < NQ * WORKERS; i++)
		pthread_join(th[i], NULL);
	sleep_ns(100 * MS); /* a few evaluations with the DLQs full */
	for (int i = 0; i < NQ && !break_archive; i++)
		archive_dlq(i);
	sleep_ns(100 * MS); /* and a few with them archived */
	__atomic_store_n(&stop_monitor, 1, __ATOMIC_RELEASE);
	pthread_join(mon, NULL);
	rc = 0;

	{
		uint32_t once = 0, in_order = 0, ndead = 0, poison_dead = 0, npoison = 0, rate_ok;
		uint64_t dedup_total = 0, email_recv;
		int all_fired = 1, all_clear = 1;
		struct quay_queue_stats es;
		double elapsed, bound;
		char line[200];

		for (int i = 0; i < NQ; i++) {
			struct quay_queue_stats s;
			struct quay_queue_health h;

			quay_queue_stats(q[i], &s);
			quay_queue_health(q[i], &h); /* one more evaluation */
			quay_queue_health(q[i], &h);
			dedup_total += s.deduplicated;
			printf(
			    "  %-11s received %llu, acked %llu, dead-lettered %llu, duplicates refused %llu; alarms:",
			    qname[i], (unsigned long long)s.received, (unsigned long long)s.acked,
			    (unsigned long long)s.dead_lettered, (unsigned long long)s.deduplicated);
			for (int a = 0; a < QUAY_QUEUE_ALARM_COUNT; a++)
				if (alarm_on[i][a] > 0)
					printf(" %s on at %lld ms, off at %lld ms (%u times);", alarm_name[a],
					    (long long)(alarm_first_on[i][a] / MS),
					    (long long)(alarm_last_off[i][a] / MS), alarm_on[i][a]);
			printf(" now %s\n", h.state == QUAY_QUEUE_HEALTHY ? "healthy" : "NOT HEALTHY");
			all_clear &= h.state == QUAY_QUEUE_HEALTHY;
			for (int a = 0; a < QUAY_QUEUE_ALARM_COUNT; a++)
				all_clear &= alarm_on[i][a] == alarm_off[i][a];
			if (s.dead_lettered > 0)
				all_fired &= alarm_on[i][QUAY_QUEUE_ALARM_DLQ] > 0;
		}
		all_fired &=
		    alarm_on[EMAIL][QUAY_QUEUE_ALARM_READY] > 0 && alarm_on[EMAIL][QUAY_QUEUE_ALARM_AGE] > 0;

		for (int i = 0; i < NQ; i++)
			for (int c = 0; c < ncust; c++) {
				int ok = 1;

				for (int r = 0; r < rounds; r++) {
					ok &= done[i][c][r] + dead[i][c][r] == 1;
					ndead += dead[i][c][r];
					npoison += poison(i, c, r);
					poison_dead += poison(i, c, r) && dead[i][c][r] == 1;
				}
				once += ok;
			}
		quay_queue_stats(q[EMAIL], &es);
		email_recv = es.received;
		elapsed = (double)(email_last - email_t0) / 1e9;
		bound = EMAIL_BURST + EMAIL_RATE * elapsed;
		rate_ok = (double)email_recv <= bound;
		in_order = order_violations == 0;

		printf("checks:\n");
		snprintf(line, sizeof(line), "per customer, jobs completed in send order (%u out of order)",
		    order_violations);
		check(in_order, line);
		snprintf(line, sizeof(line),
		    "every job completed exactly once or dead-lettered exactly once (%u of %d customer queues)",
		    once, ncust * NQ);
		check(once == (uint32_t)(ncust * NQ), line);
		snprintf(line, sizeof(line),
		    "the %u jobs that always fail are in the DLQs (%u dead letters in all)", npoison, ndead);
		check(poison_dead == npoison && !dead_letter_bad, line);
		snprintf(line, sizeof(line),
		    "content dedup: %u of %u resent jobs refused, %u first sends refused (same body, other customer: "
		    "kept)",
		    dup_refused, dup_sent, wrong_refusals);
		check(dup_refused == dup_sent && wrong_refusals == 0 && dedup_total == dup_sent, line);
		snprintf(line, sizeof(line),
		    "email: %llu receives in %.2f s, at most %.0f allowed (%.0f a second)",
		    (unsigned long long)email_recv, elapsed, bound,
		    elapsed > 0 ? (double)email_recv / elapsed : 0.0);
		check(rate_ok, line);
		check(all_fired,
		    "alarms fired: email ready depth and age, and the DLQ alarm of every queue with dead letters");
		check(all_clear, "every alarm cleared after the backlog and the archive: all queues healthy");
	}
out:
	for (int i = 0; i < NQ; i++) {
		quay_queue_destroy(q[i]);
		quay_queue_destroy(dlq[i]);
	}
	if (quay_pool_destroy(pool) != 0)
		check(0, "every message given back to the pool");
	if (rc != 0)
		printf("FAIL: setup\n");
	printf("%s\n", rc == 0 && failures == 0 ? "fifo_jobs: OK" : "fifo_jobs: FAILED");
	return rc == 0 && failures == 0 ? 0 : 1;
}
