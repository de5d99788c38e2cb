/* SPDX-License-Identifier: MIT */
/*
 * Conservation stress of the queue (TESTING.md S1/S2 under load).
 *
 * P producers send messages (producer, seq, check) into a queue with a
 * short visibility timeout on the real clock; C consumers receive them
 * and at random extend the lease (shorter or longer than the visibility
 * timeout, concurrent with the timer work that others run), then ack,
 * nack, or drop the lease and let it expire; "poison"
 * messages are always nacked, so they reach the dead-letter queue after
 * max_attempts. When every message is acked or dead-lettered, the main
 * thread redrives the DLQ back and the consumers ack everything.
 *
 * Checked, per configuration:
 *   - every message is acked exactly once in the end (acks that returned
 *     0 are counted per message: lost = never, dup = more than once);
 *   - no message is received with a corrupt body;
 *   - a consumer that walked away and acks after its lease expired gets
 *     -ESTALE or -ENOENT, never 0 (the fence);
 *   - extend returns 0 or -ESTALE (the lease expired meanwhile), nothing
 *     else, and never hangs (the alarm catches a deadlock);
 *   - conservation on both queues: sent + restored == ready + delayed +
 *     in_flight + acked + dead_lettered + dropped + redriven_out, with
 *     ready = delayed = in_flight = 0 at the end, and the DLQ's
 *     redriven_out equal to the source's dead_lettered.
 * Per-producer order is not checked: retries reorder by design.
 *
 * The "ttl" configurations give one message in 32 a TTL of 0..2 ms: many
 * expire at the head of the queue and are dead-lettered by a receive
 * (receive_batch then ends the batch and renews its earlier leases), and
 * come back by redrive, which clears the TTL: the checks above still
 * hold. (A TTL-expired message is counted in dead_lettered, as poison.)
 *
 * Then "foreign" (issue 19): one message at a time is sent to two
 * queues with 4 lease slots each, so their leases often have the same
 * slot, generation and message; C consumers each hold a lease of both
 * queues at once and, before acking, ack / nack / extend each lease on
 * the other queue, which must return -ENOENT and change nothing: each
 * queue acks each message exactly once, every own ack (long leases)
 * returns 0, and both queues end empty.
 *
 * No arguments: the CI-size run of every configuration (smaller under
 * ThreadSanitizer). QUAY_STRESS_SCALE=N multiplies the messages.
 * Prints one line per configuration; exits 1 on any violation.
 */
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>


#define MS ((int64_t)1000000)

struct body {
	uint32_t producer;
	uint32_t seq;
	uint64_t check;
};

struct cfg {
	const char *name;
	int producers, consumers;
	unsigned levels;
	size_t capacity;
	bool batch;
	size_t max_in_flight;  /* 0: capacity */
	int64_t visibility_ns; /* 0: 3 ms */
	bool no_walk;          /* no walking away (long leases) */
	bool ttl;              /* 1 in 32 messages gets a TTL of 0..2 ms */
};

struct run {
	const struct cfg *c;
	quay_queue *q, *dlq;
	quay_pool *pool;
	uint32_t per_producer;
	uint32_t total;
	uint32_t *acks;           /* per message: successful acks */
	uint64_t acked_total;     /* atomic */
	int phase;                /* atomic: 1 random failures, 2 ack all, 3 stop */
	uint64_t corrupt, dup;    /* atomic */
	uint64_t nacks, expiries; /* atomic */
	uint64_t send_retries;    /* atomic */
	uint64_t zombie_tries;    /* atomic: late acks of walked-away leases */
	uint64_t zombie_accepted; /* atomic: ... that wrongly returned 0 */
	uint64_t extends;         /* atomic: extends that returned 0 */
	uint64_t bad_extends;     /* atomic: ... that returned neither 0 nor -ESTALE */
	int producer_id;          /* atomic: next producer number */
	int consumer_id;
};

static void
qt_sleep_ns(int64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Watchdog: a configuration that runs far past its limit is stuck (a
 * thread may hold the timer lock for good, so the main thread cannot be
 * trusted to notice): report and leave. */
static void
on_alarm(int sig)
{
	static const char msg[] = "stress-queue: watchdog: a configuration hung: FAIL\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(1);
}

static uint64_t
check_of(uint32_t p, uint32_t s)
{
	return ((uint64_t)p << 32 | s) * UINT64_C(0x9E3779B97F4A7C15) ^ UINT64_C(0x5175617951756179);
}

static bool
poison(uint32_t id)
{
	return id % 97 == 13;
}

static void *
producer(void *arg)
{
	struct run *r = arg;
	uint32_t p = (uint32_t)__atomic_fetch_add(&r->producer_id, 1, __ATOMIC_RELAXED);
	uint64_t rng = 0x1234 + p;

	for (uint32_t s = 0; s < r->per_producer; s++) {
		struct body b = { p, s, check_of(p, s) };
		quay_msg *m = NULL;
		unsigned spins = 0;

		while (quay_msg_new(r->pool, &b, sizeof(b), &m) != 0)
			sched_yield();
		if (r->c->levels > 1)
			quay_msg_set_priority(m, (unsigned)(qt_rand(&rng) % r->c->levels));
		if (r->c->ttl && qt_rand(&rng) % 32 == 0) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts); /* the queue's clock */
			quay_msg_set_expires_ns(m,
			    (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec +
			        (int64_t)(qt_rand(&rng) % (2 * MS)));
		}
		while (quay_queue_send(r->q, m) != 0) {
			__atomic_fetch_add(&r->send_retries, 1, __ATOMIC_RELAXED);
			if (++spins > 16)
				sched_yield();
		}
	}
	return NULL;
}

/* A consumer that walked away may come back and ack after its lease
 * expired: that must fail (-ESTALE, or -ENOENT if the slot now holds
 * another message), never succeed. */
struct zombie {
	bool have;
	quay_lease l;
	int64_t at; /* CLOCK_MONOTONIC ns to try at */
};

static void
zombie_try(struct run *r, struct zombie *z)
{
	int rc;

	if (!z->have || qt_now_ns() < z->at)
		return;
	rc = quay_queue_ack(r->q, &z->l);
	__atomic_fetch_add(&r->zombie_tries, 1, __ATOMIC_RELAXED);
	if (rc != -ESTALE && rc != -ENOENT)
		__atomic_fetch_add(&r->zombie_accepted, 1, __ATOMIC_RELAXED);
	quay_msg_unref(z->l.msg);
	z->have = false;
}

static void
handle(struct run *r, quay_lease *l, uint64_t *rng, struct zombie *z)
{
	struct body b;
	uint32_t id;
	int phase = __atomic_load_n(&r->phase, __ATOMIC_ACQUIRE);
	uint64_t dice = qt_rand(rng) % 100;
	int64_t extra = 0;

	memcpy(&b, quay_msg_body(l->msg), sizeof(b));
	if (quay_msg_body_len(l->msg) != sizeof(b) || b.check != check_of(b.producer, b.seq) ||
	    b.producer >= (uint32_t)r->c->producers || b.seq >= r->per_producer) {
		__atomic_fetch_add(&r->corrupt, 1, __ATOMIC_RELAXED);
		quay_queue_ack(r->q, l);
		quay_msg_unref(l->msg);
		return;
	}
	id = b.producer * r->per_producer + b.seq;
	if (phase == 1) {
		/* Extend: 1 ms (shorter than the 3 ms lease: the timer-wheel
		 * path) or 5 ms (longer). */
		uint64_t e = qt_rand(rng) % 100;

		if (e < 20) {
			int rc = quay_queue_extend(r->q, l, e < 10 ? MS : 5 * MS);

			if (rc == 0) {
				__atomic_fetch_add(&r->extends, 1, __ATOMIC_RELAXED);
				extra = e < 10 ? 0 : 5 * MS;
			} else if (rc != -ESTALE) {
				__atomic_fetch_add(&r->bad_extends, 1, __ATOMIC_RELAXED);
			}
		}
	}
	if (phase == 1 && (poison(id) || dice < 15)) {
		if (quay_queue_nack(r->q, l, "stress") == 0)
			__atomic_fetch_add(&r->nacks, 1, __ATOMIC_RELAXED);
	} else if (phase == 1 && dice < 25 && !r->c->no_walk) {
		/* Walk away: the lease expires and the message comes back. */
		__atomic_fetch_add(&r->expiries, 1, __ATOMIC_RELAXED);
		if (!z->have && dice < 18) {
			z->have = true;
			z->l = *l;
			z->at = qt_now_ns() + 4 * MS + extra; /* past the lease */
			return;                               /* keeps the reference */
		}
	} else if (quay_queue_ack(r->q, l) == 0) {
		if (__atomic_add_fetch(&r->acks[id], 1, __ATOMIC_RELAXED) > 1)
			__atomic_fetch_add(&r->dup, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&r->acked_total, 1, __ATOMIC_RELEASE);
	}
	quay_msg_unref(l->msg);
}

static void *
consumer(void *arg)
{
	struct run *r = arg;
	uint64_t rng = 0xabcdef + (uint64_t)__atomic_fetch_add(&r->consumer_id, 1, __ATOMIC_RELAXED);
	quay_lease ls[8];
	struct zombie z = { .have = false };

	while (__atomic_load_n(&r->phase, __ATOMIC_ACQUIRE) != 3) {
		zombie_try(r, &z);
		if (r->c->batch) {
			size_t n = quay_queue_receive_batch(r->q, ls, 8, 2 * MS);

			for (size_t i = 0; i < n; i++)
				handle(r, &ls[i], &rng, &z);
		} else if (quay_queue_receive(r->q, &ls[0], 2 * MS) == 0) {
			handle(r, &ls[0], &rng, &z);
		}
	}
	z.at = 0;
	zombie_try(r, &z);
	return NULL;
}

static int
run_cfg(const struct cfg *c, uint32_t per_producer)
{
	struct run r;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	pthread_t th[32];
	int nth = 0, bad = 0;
	struct quay_queue_stats s, d;
	uint64_t lost = 0, redriven = 0;
	double t0 = qt_now_s(), limit = QT_TSAN ? 120.0 : 40.0;

	alarm((unsigned)limit + 20);
	memset(&r, 0, sizeof(r));
	r.c = c;
	r.per_producer = per_producer;
	r.total = per_producer * (uint32_t)c->producers;
	r.phase = 1;
	r.acks = calloc(r.total, sizeof(*r.acks));
	/* Room for the DLQ too: phase 1 keeps every dead letter (up to ~45 k
	 * under ASan, where slower runs see more TTL expiries) until phase 2
	 * redrives them; a full pool stalled the producers in quay_msg_new. */
	if (r.acks == NULL || quay_pool_create((size_t)256 << 20, NULL, &r.pool) != 0)
		return 1;
	o.name = "stress-dlq";
	o.capacity = r.total; /* room for every poison message */
	if (quay_queue_create(&o, &r.dlq) != 0)
		return 1;
	o.name = "stress";
	o.capacity = c->capacity;
	o.levels = c->levels;
	o.visibility_ns = c->visibility_ns ? c->visibility_ns : 3 * MS;
	o.max_in_flight = c->max_in_flight;
	o.backoff_base_ns = MS / 4;
	o.backoff_max_ns = 2 * MS;
	o.max_attempts = 4;
	o.tick_ns = MS / 4;
	o.dlq = r.dlq;
	o.jitter_seed = 42;
	if (quay_queue_create(&o, &r.q) != 0)
		return 1;

	for (int i = 0; i < c->consumers; i++)
		pthread_create(&th[nth++], NULL, consumer, &r);
	for (int i = 0; i < c->producers; i++)
		pthread_create(&th[nth++], NULL, producer, &r);

	/* Phase 1 ends when every message is acked or dead-lettered. */
	for (;;) {
		quay_queue_stats(r.q, &s);
		if (__atomic_load_n(&r.acked_total, __ATOMIC_ACQUIRE) + s.dead_lettered >= r.total)
			break;
		if (qt_now_s() - t0 > limit) {
			/* Threads may be stuck for good: report and leave. */
			fprintf(stderr,
			    "stress-queue %s: phase 1 hung (acked %llu, dead %llu of %u; ready %llu "
			    "delayed %llu in flight %llu sent %llu): FAIL\n",
			    c->name, (unsigned long long)r.acked_total, (unsigned long long)s.dead_lettered,
			    r.total, (unsigned long long)s.ready, (unsigned long long)s.delayed,
			    (unsigned long long)s.in_flight, (unsigned long long)s.sent);
			_exit(1);
		}
		qt_sleep_ns(MS);
	}
	/* Phase 2: redrive the DLQ back; consumers ack everything now. */
	__atomic_store_n(&r.phase, 2, __ATOMIC_RELEASE);
	while (!bad) {
		size_t moved = 0;

		quay_queue_redrive(r.dlq, r.q, 64, &moved);
		redriven += moved;
		if (__atomic_load_n(&r.acked_total, __ATOMIC_ACQUIRE) >= r.total)
			break;
		if (qt_now_s() - t0 > limit) {
			fprintf(stderr, "stress-queue %s: phase 2 hung (acked %llu of %u): FAIL\n", c->name,
			    (unsigned long long)r.acked_total, r.total);
			_exit(1);
		}
		qt_sleep_ns(MS);
	}
	__atomic_store_n(&r.phase, 3, __ATOMIC_RELEASE);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);

	for (uint32_t i = 0; i < r.total; i++)
		if (r.acks[i] == 0)
			lost++;
	quay_queue_stats(r.q, &s);
	quay_queue_stats(r.dlq, &d);
	if (s.sent + s.restored !=
	        s.ready + s.delayed + s.in_flight + s.acked + s.dead_lettered + s.dropped + s.redriven_out ||
	    s.ready + s.delayed + s.in_flight != 0 || s.acked != r.total || s.sent != r.total + redriven) {
		fprintf(stderr, "stress-queue %s: source conservation broken\n", c->name);
		bad = 1;
	}
	if (d.sent !=
	        d.ready + d.delayed + d.in_flight + d.acked + d.dead_lettered + d.dropped + d.redriven_out ||
	    d.ready + d.delayed + d.in_flight != 0 || d.redriven_out != s.dead_lettered ||
	    d.sent != s.dead_lettered) {
		fprintf(stderr, "stress-queue %s: DLQ conservation broken\n", c->name);
		bad = 1;
	}
	if (lost != 0 || r.dup != 0 || r.corrupt != 0 || r.zombie_accepted != 0 || r.bad_extends != 0)
		bad = 1;
	printf(
	    "stress-queue %-12s P%dC%d msgs %u: lost %llu dup %llu corrupt %llu stale-ack-accepted %llu/%llu bad-extend %llu/%llu | received %llu acked %llu "
	    "nacked %llu walked-away %llu lease-expired %llu retried %llu ttl-expired %llu dead-lettered %llu redriven %llu "
	    "send-full %llu | %.2f s %s\n",
	    c->name, c->producers, c->consumers, r.total, (unsigned long long)lost, (unsigned long long)r.dup,
	    (unsigned long long)r.corrupt, (unsigned long long)r.zombie_accepted,
	    (unsigned long long)r.zombie_tries, (unsigned long long)r.bad_extends,
	    (unsigned long long)r.extends, (unsigned long long)s.received, (unsigned long long)s.acked,
	    (unsigned long long)s.nacked, (unsigned long long)r.expiries, (unsigned long long)s.lease_expired,
	    (unsigned long long)s.retried, (unsigned long long)s.ttl_expired,
	    (unsigned long long)s.dead_lettered, (unsigned long long)redriven,
	    (unsigned long long)r.send_retries, qt_now_s() - t0, bad ? "FAIL" : "ok");
	quay_queue_destroy(r.q);
	quay_queue_destroy(r.dlq);
	if (quay_pool_destroy(r.pool) != 0) {
		fprintf(stderr, "stress-queue %s: messages leaked\n", c->name);
		bad = 1;
	}
	free(r.acks);
	alarm(0);
	return bad;
}

/* ---- foreign leases (issue 19) ---------------------------------------- */

struct frun {
	quay_queue *q[2];
	uint32_t total;
	uint32_t *acks[2];    /* per message and queue: successful acks */
	uint64_t acked;       /* atomic: acks that returned 0 (own, and wrongly foreign) */
	uint64_t tries;       /* atomic: foreign ack / nack / extend calls */
	uint64_t wrong;       /* atomic: ... that did not return -ENOENT */
	uint64_t succeeded;   /* atomic: ... that returned 0 (changed the other queue) */
	uint64_t own_refused; /* atomic: own acks that did not return 0 */
	uint64_t dup;         /* atomic */
	int stop;             /* atomic */
	int id;               /* atomic: next consumer number */
};

static void *
foreign_consumer(void *arg)
{
	struct frun *f = arg;
	int me = __atomic_fetch_add(&f->id, 1, __ATOMIC_RELAXED);
	uint64_t rng = 0x5eed + (uint64_t)me;

	while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
		quay_lease l[2];
		bool have[2];

		/* Hold a lease of each queue at once (often the same message,
		 * slot and generation), then try each on the other queue. */
		for (int w = 0; w < 2; w++)
			have[w] = quay_queue_receive(f->q[w], &l[w], MS) == 0;
		for (int w = 0; w < 2; w++) {
			int rc;

			if (!have[w])
				continue;
			switch (qt_rand(&rng) % 3) {
			case 0:
				rc = quay_queue_ack(f->q[!w], &l[w]);
				if (rc == 0) /* the other queue's delivery ended */
					__atomic_fetch_add(&f->acked, 1, __ATOMIC_RELEASE);
				break;
			case 1: rc = quay_queue_nack(f->q[!w], &l[w], "foreign"); break;
			default:
				rc =
				    quay_queue_extend(f->q[!w], &l[w], (qt_rand(&rng) & 1) ? MS : 20000 * MS);
				break;
			}
			__atomic_fetch_add(&f->tries, 1, __ATOMIC_RELAXED);
			if (rc != -ENOENT)
				__atomic_fetch_add(&f->wrong, 1, __ATOMIC_RELAXED);
			if (rc == 0)
				__atomic_fetch_add(&f->succeeded, 1, __ATOMIC_RELAXED);
		}
		for (int w = 0; w < 2; w++) {
			uint32_t id;

			if (!have[w])
				continue;
			memcpy(&id, quay_msg_body(l[w].msg), sizeof(id));
			if (quay_queue_ack(f->q[w], &l[w]) != 0) {
				__atomic_fetch_add(&f->own_refused, 1, __ATOMIC_RELAXED);
			} else {
				if (id < f->total &&
				    __atomic_add_fetch(&f->acks[w][id], 1, __ATOMIC_RELAXED) > 1)
					__atomic_fetch_add(&f->dup, 1, __ATOMIC_RELAXED);
				__atomic_fetch_add(&f->acked, 1, __ATOMIC_RELEASE);
			}
			quay_msg_unref(l[w].msg);
		}
	}
	return NULL;
}

static int
run_foreign(int consumers, uint32_t total)
{
	struct frun f;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_pool *pool;
	pthread_t th[16];
	struct quay_queue_stats s[2];
	uint64_t lost = 0;
	double t0 = qt_now_s(), limit = QT_TSAN ? 120.0 : 40.0;
	int bad = 0;

	alarm((unsigned)limit + 20);
	memset(&f, 0, sizeof(f));
	f.total = total;
	f.acks[0] = calloc(total, sizeof(uint32_t));
	f.acks[1] = calloc(total, sizeof(uint32_t));
	if (f.acks[0] == NULL || f.acks[1] == NULL || quay_pool_create((size_t)16 << 20, NULL, &pool) != 0)
		return 1;
	o.capacity = 64;
	o.max_in_flight = 4;          /* few slots: slot and gen coincide often */
	o.visibility_ns = 10000 * MS; /* every own ack is in time */
	o.flags = QUAY_QUEUE_NO_BACKOFF;
	o.name = "foreign-a";
	if (quay_queue_create(&o, &f.q[0]) != 0)
		return 1;
	o.name = "foreign-b";
	if (quay_queue_create(&o, &f.q[1]) != 0)
		return 1;
	for (int i = 0; i < consumers; i++)
		pthread_create(&th[i], NULL, foreign_consumer, &f);
	for (uint32_t id = 0; id < total; id++) {
		quay_msg *m = NULL;

		while (quay_msg_new(pool, &id, sizeof(id), &m) != 0)
			sched_yield();
		quay_msg_ref(m);
		for (int w = 0; w < 2; w++)
			while (quay_queue_send(f.q[w], m) != 0)
				sched_yield();
	}
	while (__atomic_load_n(&f.acked, __ATOMIC_ACQUIRE) < 2 * (uint64_t)total) {
		if (qt_now_s() - t0 > limit) {
			fprintf(stderr, "stress-queue foreign: hung (acked %llu of %u): FAIL\n",
			    (unsigned long long)f.acked, 2 * total);
			_exit(1);
		}
		qt_sleep_ns(MS);
	}
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < consumers; i++)
		pthread_join(th[i], NULL);
	for (int w = 0; w < 2; w++) {
		for (uint32_t i = 0; i < total; i++)
			if (f.acks[w][i] == 0)
				lost++;
		quay_queue_stats(f.q[w], &s[w]);
		if (s[w].sent != total || s[w].acked != total || s[w].nacked != 0 ||
		    s[w].ready + s[w].delayed + s[w].in_flight != 0) {
			fprintf(stderr, "stress-queue foreign: queue %d: sent %llu acked %llu nacked %llu\n",
			    w, (unsigned long long)s[w].sent, (unsigned long long)s[w].acked,
			    (unsigned long long)s[w].nacked);
			bad = 1;
		}
	}
	if (lost != 0 || f.dup != 0 || f.wrong != 0 || f.own_refused != 0)
		bad = 1;
	printf("stress-queue %-12s C%d msgs %u x 2 queues: lost %llu dup %llu foreign-not-ENOENT %llu/%llu "
	       "(returned 0: %llu) own-ack-refused %llu | %.2f s %s\n",
	    "foreign", consumers, total, (unsigned long long)lost, (unsigned long long)f.dup,
	    (unsigned long long)f.wrong, (unsigned long long)f.tries, (unsigned long long)f.succeeded,
	    (unsigned long long)f.own_refused, qt_now_s() - t0, bad ? "FAIL" : "ok");
	quay_queue_destroy(f.q[0]);
	quay_queue_destroy(f.q[1]);
	if (quay_pool_destroy(pool) != 0) {
		fprintf(stderr, "stress-queue foreign: messages leaked\n");
		bad = 1;
	}
	free(f.acks[0]);
	free(f.acks[1]);
	alarm(0);
	return bad;
}

static quay_pool *close_pool;

/* ---- close: receivers asleep or racing are all woken, nothing lost --- */

struct crun {
	quay_queue *q;
	uint32_t total;
	uint8_t *acks;        /* atomic: acks per id */
	uint64_t acked;       /* atomic */
	uint64_t accepted;    /* atomic: sends that returned 0 */
	uint64_t dup;         /* atomic */
	uint64_t bad_rc;      /* atomic: a return other than the allowed ones */
	uint64_t bad_attempt; /* atomic: a delivery that was not attempt 1 */
	uint64_t released;    /* atomic */
};

static void *
close_consumer(void *arg)
{
	struct crun *c = arg;
	quay_lease l;
	uint64_t rng = (uint64_t)(uintptr_t)&l;
	int rc;

	/* Forever: only close ends it. */
	while ((rc = quay_queue_receive(c->q, &l, -1)) == 0) {
		uint32_t id;

		memcpy(&id, quay_msg_body(l.msg), sizeof(id));
		/* No nack, no expiry (10 s leases): every delivery is attempt 1,
		 * also after any number of releases (issue 11). */
		if (l.attempt != 1)
			__atomic_fetch_add(&c->bad_attempt, 1, __ATOMIC_RELAXED);
		if (qt_rand(&rng) % 8 == 0) {
			/* Hand it back: ready again for any consumer. */
			if ((rc = quay_queue_release(c->q, &l)) != 0) {
				fprintf(stderr, "stress-queue close: release returned %d\n", rc);
				__atomic_fetch_add(&c->bad_rc, 1, __ATOMIC_RELAXED);
			} else {
				__atomic_fetch_add(&c->released, 1, __ATOMIC_RELAXED);
			}
			quay_msg_unref(l.msg);
			continue;
		}
		if ((rc = quay_queue_ack(c->q, &l)) != 0) {
			fprintf(stderr, "stress-queue close: ack returned %d\n", rc);
			__atomic_fetch_add(&c->bad_rc, 1, __ATOMIC_RELAXED);
		} else {
			if (id >= c->total || __atomic_add_fetch(&c->acks[id], 1, __ATOMIC_RELAXED) > 1)
				__atomic_fetch_add(&c->dup, 1, __ATOMIC_RELAXED);
			__atomic_fetch_add(&c->acked, 1, __ATOMIC_RELAXED);
		}
		quay_msg_unref(l.msg);
	}
	if (rc != -EPIPE) {
		fprintf(stderr, "stress-queue close: receive returned %d\n", rc);
		__atomic_fetch_add(&c->bad_rc, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *
close_producer(void *arg)
{
	struct crun *c = arg;

	for (uint32_t id = 0; id < c->total; id++) {
		quay_msg *m = NULL;
		int rc;

		while (quay_msg_new(close_pool, &id, sizeof(id), &m) != 0)
			sched_yield();
		while ((rc = quay_queue_send(c->q, m)) == -EAGAIN)
			sched_yield();
		if (rc == 0) {
			__atomic_fetch_add(&c->accepted, 1, __ATOMIC_RELAXED);
		} else {
			if (rc != -EPIPE) {
				fprintf(stderr, "stress-queue close: send returned %d\n", rc);
				__atomic_fetch_add(&c->bad_rc, 1, __ATOMIC_RELAXED);
			}
			quay_msg_unref(m);
		}
	}
	return NULL;
}

/* Rounds of: 3 consumers blocked forever in receive, a producer sending,
 * close at a varying moment (before, during, after the sends). Every
 * consumer must return -EPIPE; every accepted message acked at most once
 * and either acked or still held (ready) after close. Consumers release
 * one delivery in 8 (issue 11): every delivery must still be attempt 1. */
static int
run_close(int rounds, uint32_t total)
{
	double t0 = qt_now_s();
	uint64_t dups = 0, badrc = 0, lost = 0, acked = 0, left = 0, released = 0;
	int bad = 0;

	alarm(QT_TSAN ? 300 : 120);
	if (quay_pool_create((size_t)16 << 20, NULL, &close_pool) != 0)
		return 1;
	for (int r = 0; r < rounds; r++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		struct crun c;
		struct quay_queue_stats s;
		pthread_t cons[3], prod;

		memset(&c, 0, sizeof(c));
		c.total = total;
		c.acks = calloc(total, 1);
		o.capacity = 256;
		o.visibility_ns = 10000 * MS;
		if (c.acks == NULL || quay_queue_create(&o, &c.q) != 0)
			return 1;
		for (int i = 0; i < 3; i++)
			pthread_create(&cons[i], NULL, close_consumer, &c);
		pthread_create(&prod, NULL, close_producer, &c);
		/* Close before, during or after the sends. */
		if (r % 3 == 1)
			qt_sleep_ns((int64_t)(r % 7) * 100000);
		else if (r % 3 == 2)
			while (__atomic_load_n(&c.accepted, __ATOMIC_RELAXED) < total / 2)
				sched_yield();
		quay_queue_close(c.q);
		pthread_join(prod, NULL);
		for (int i = 0; i < 3; i++)
			pthread_join(cons[i], NULL);
		quay_queue_stats(c.q, &s);
		if (s.in_flight != 0 || s.delayed != 0 || s.acked != c.acked ||
		    s.acked + s.ready != c.accepted || s.sent != c.accepted)
			lost++;
		dups += c.dup;
		badrc += c.bad_rc + c.bad_attempt;
		released += c.released;
		acked += c.acked;
		left += s.ready;
		quay_queue_destroy(c.q);
		free(c.acks);
	}
	bad = dups != 0 || badrc != 0 || lost != 0;
	if (quay_pool_destroy(close_pool) != 0) {
		fprintf(stderr, "stress-queue close: messages leaked\n");
		bad = 1;
	}
	printf("stress-queue %-12s C3 P1 rounds %d x %u msgs: acked %llu released %llu left-ready %llu "
	       "dup %llu bad-returns/attempts %llu rounds-not-conserved %llu | %.2f s %s\n",
	    "close", rounds, total, (unsigned long long)acked, (unsigned long long)released,
	    (unsigned long long)left, (unsigned long long)dups, (unsigned long long)badrc,
	    (unsigned long long)lost, qt_now_s() - t0, bad ? "FAIL" : "ok");
	alarm(0);
	return bad;
}

int
main(int argc, char **argv)
{
	static const struct cfg cfgs[] = {
		{ "1x1", 1, 1, 1, 4096, false, 0, 0, false, false },
		{ "2x2", 2, 2, 1, 4096, false, 0, 0, false, false },
		{ "4x4-prio", 4, 4, 4, 4096, false, 0, 0, false, false },
		{ "1x4-batch", 1, 4, 1, 4096, true, 0, 0, false, false },
		{ "4x1-small", 4, 1, 2, 64, false, 0, 0, false, false },
		/* Long leases, few slots: the expiry FIFO (1024 entries) fills
		 * with stale entries every ~1000 receives and the receivers
		 * that find it full drain it while the others go on. */
		{ "2x3-fifo", 2, 3, 1, 4096, false, 16, 10000 * MS, true, false },
		{ "2x2-ttl", 2, 2, 2, 4096, false, 0, 0, false, true },
		{ "2x4-batch-ttl", 2, 4, 1, 4096, true, 0, 0, false, true },
	};
	const char *env = getenv("QUAY_STRESS_SCALE");
	long scale = env != NULL ? strtol(env, NULL, 10) : 1;
	uint32_t base = QT_TSAN ? 300000 : 1000000;
	int bad = 0;

	(void)argc;
	(void)argv;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_alarm);
	if (scale < 1)
		scale = 1;
	/* QUAY_STRESS_QUEUE_ONLY=close: the close run alone (debugging). */
	env = getenv("QUAY_STRESS_QUEUE_ONLY");
	if (env != NULL && strcmp(env, "close") == 0)
		return run_close(QT_TSAN ? 60 : 300 * (int)scale, 2000);
	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		bad |= run_cfg(&cfgs[i], (uint32_t)(base * (uint32_t)scale / (uint32_t)cfgs[i].producers));
	bad |= run_foreign(4, base / 5 * (uint32_t)scale);
	bad |= run_close(QT_TSAN ? 60 : 300 * (int)scale, 2000);
	return bad;
}
