/* SPDX-License-Identifier: MIT */
/*
 * Stress test of the bus's routing into queues (issue 12; TESTING.md R7
 * for bindings).
 *
 * Publishers publish messages (publisher, seq) with a header p = seq %
 * 100 on four subjects in turn, while a churn thread binds and unbinds
 * throw-away queues (DROP_NEWEST, some with filters, on patterns with
 * `#`), draining and destroying each after its unbind (so unbind's grace
 * period and the bound-queue check run under load). Seven queues are
 * bound with QUAY_SUB_BLOCK (lossless):
 *   Q0 "s.a.#"   Q1 "s.#" with filter "p < 50"   Q2 "#.x"   Q3 "s.*"
 *   G0 "s.#", G1 "s.#", G2 "#" in group "g"
 * Small capacities (8) keep BLOCK busy. One consumer thread per queue
 * receives with a 2 ms visibility timeout and, at random, acks (80%),
 * nacks (10%) or lets the lease expire (10%, redelivered later). When
 * every expected message is acked (or after a time limit), it checks:
 *   - each message was acked exactly once in every queue whose pattern
 *     (quay_bus_match()) and filter accept it, and never in the others;
 *   - each message was acked exactly once in the group (G0+G1+G2);
 *   - each lossless binding's counters: delivered = expected, nothing
 *     dropped, rejected or timed out;
 *   - the pool is empty after teardown (no leak, no double free).
 * Prints one line; exits 1 on any violation. QUAY_STRESS_SCALE=N
 * multiplies the messages. With the argument "durable" the seven queues
 * are durable on one WAL (NONE mode, a temporary directory): every
 * publish then sends to its durable bound queues with one multi-queue
 * write (src/queue_route.c) while BLOCK waits for room, acks and
 * expiries log to the same WAL.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>

#define NPUB 2
#define NQ 7
#define NGROUP 3 /* the last NGROUP queues */

static const char *const subjects[] = { "s.a.x", "s.b", "s.a.y.z", "s" };
static const char *const patterns[NQ] = { "s.a.#", "s.#", "#.x", "s.*", "s.#", "s.#", "#" };
static const char *const filters[NQ] = { NULL, "p < 50", NULL, NULL, NULL, NULL, NULL };

static quay_pool *pool;
static quay_bus *bus;
static quay_queue *qs[NQ];
static quay_binding *binds[NQ];
static size_t nmsg;
static uint8_t *acked[NQ]; /* [pub * nmsg + seq]: acks seen */
static atomic_int stop_consumers, stop_churn;
static atomic_ulong nacks, expiries, dup_acks, churn_rounds;

struct body {
	uint32_t pub;
	uint32_t seq;
};

static bool
expected_in(unsigned q, uint32_t seq)
{
	if (!quay_bus_match(patterns[q], subjects[seq % 4]))
		return false;
	if (filters[q] != NULL)
		return seq % 100 < 50;
	return true;
}

static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *
publisher(void *arg)
{
	uint32_t pub = (uint32_t)(uintptr_t)arg;

	for (uint32_t seq = 0; seq < nmsg; seq++) {
		struct body b = { pub, seq };
		char p[8];
		quay_msg *m;
		int r;

		while (quay_msg_new(pool, &b, sizeof(b), &m) != 0)
			usleep(100);
		snprintf(p, sizeof(p), "%u", seq % 100);
		if (quay_msg_set_header_str(m, "p", p) != 0)
			abort();
		while ((r = quay_bus_publish(bus, subjects[seq % 4], m)) < 0) {
			if (r != -ENOMEM) {
				fprintf(stderr, "publish: %s\n", quay_strerror(r));
				abort();
			}
			usleep(100);
		}
	}
	return NULL;
}

static void *
consumer(void *arg)
{
	unsigned q = (unsigned)(uintptr_t)arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull * (q + 1);

	while (!atomic_load(&stop_consumers)) {
		quay_lease l;
		struct body b;
		uint64_t r;

		if (quay_queue_receive(qs[q], &l, 2000000) != 0)
			continue;
		memcpy(&b, quay_msg_body(l.msg), sizeof(b));
		r = rnd(&seed) % 10;
		if (r < 8) {
			if (quay_queue_ack(qs[q], &l) == 0) {
				uint8_t *c = &acked[q][(size_t)b.pub * nmsg + b.seq];
				/* Relaxed: only this thread writes it; main polls
				 * it and reads it for good after the join. */
				uint8_t v = __atomic_load_n(c, __ATOMIC_RELAXED);
				if (v != 0)
					atomic_fetch_add(&dup_acks, 1);
				__atomic_store_n(c, (uint8_t)(v + 1), __ATOMIC_RELAXED);
			}
		} else if (r == 8) {
			if (quay_queue_nack(qs[q], &l, "stress") == 0)
				atomic_fetch_add(&nacks, 1);
		} else {
			atomic_fetch_add(&expiries, 1); /* let the lease expire */
		}
		quay_msg_unref(l.msg);
	}
	return NULL;
}

static void *
churn(void *arg)
{
	static const char *const pats[] = { "s.#", "#", "s.a.#", "#.b", "s.*.#" };
	uint64_t seed = 77;

	(void)arg;
	while (!atomic_load(&stop_churn)) {
		struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
		struct quay_bind_opts bo = QUAY_BIND_OPTS_INIT;
		quay_queue *q;
		quay_binding *bd;
		quay_lease l;
		int r;

		qo.name = "churn";
		qo.capacity = 4;
		if (quay_queue_create(&qo, &q) != 0)
			abort();
		bo.policy = QUAY_SUB_DROP_NEWEST;
		bo.filter = rnd(&seed) % 2 ? "p >= 90 || exists(zz)" : NULL;
		r = quay_bus_bind(bus, pats[rnd(&seed) % 5], q, &bo, &bd);
		if (r != 0) {
			fprintf(stderr, "churn bind: %s\n", quay_strerror(r));
			abort();
		}
		usleep((useconds_t)(rnd(&seed) % 300));
		while ((r = quay_bus_unbind(bd)) != 0)
			usleep(100);
		while (quay_queue_receive(q, &l, 0) == 0) {
			(void)quay_queue_ack(q, &l);
			quay_msg_unref(l.msg);
		}
		quay_queue_destroy(q); /* aborts in debug builds if still bound */
		atomic_fetch_add(&churn_rounds, 1);
	}
	return NULL;
}

static bool
all_acked(void)
{
	for (unsigned q = 0; q < NQ; q++)
		for (uint32_t p = 0; p < NPUB; p++)
			for (uint32_t s = 0; s < nmsg; s++) {
				uint8_t c =
				    __atomic_load_n(&acked[q][(size_t)p * nmsg + s], __ATOMIC_RELAXED);
				bool want = q < NQ - NGROUP ? expected_in(q, s) : false;
				if (q < NQ - NGROUP && want && c == 0)
					return false;
			}
	for (uint32_t p = 0; p < NPUB; p++)
		for (uint32_t s = 0; s < nmsg; s++) {
			unsigned sum = 0;
			for (unsigned q = NQ - NGROUP; q < NQ; q++)
				sum += __atomic_load_n(&acked[q][(size_t)p * nmsg + s], __ATOMIC_RELAXED);
			if (sum == 0)
				return false;
		}
	return true;
}

int
main(int argc, char **argv)
{
	const char *env = getenv("QUAY_STRESS_SCALE");
	bool durable = argc > 1 && strcmp(argv[1], "durable") == 0;
	char dir[64] = "/tmp/quay-stress-route-XXXXXX";
	quay_wal *wal = NULL;
	size_t scale = env != NULL && atoi(env) > 0 ? (size_t)atoi(env) : 1;
	pthread_t pubs[NPUB], cons[NQ], ch;
	unsigned long bad = 0, missing = 0, extra = 0, group_bad = 0, counter_bad = 0;
	struct quay_pool_stats ps;
	time_t t0 = time(NULL);
	bool done;

#if defined(__SANITIZE_THREAD__)
	nmsg = 10000 * scale;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
	nmsg = 10000 * scale;
#else
	nmsg = 50000 * scale;
#endif
#else
	nmsg = 50000 * scale;
#endif
	if (quay_pool_create((size_t)64 << 20, NULL, &pool) != 0 || quay_bus_create(NULL, &bus) != 0)
		return 1;
	if (durable) {
		struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;

		wo.sync_mode = QUAY_WAL_NONE;
		if (mkdtemp(dir) == NULL || quay_wal_open(dir, &wo, &wal) != 0)
			return 1;
	}
	for (unsigned q = 0; q < NQ; q++) {
		struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
		struct quay_bind_opts bo = QUAY_BIND_OPTS_INIT;
		char name[16];

		snprintf(name, sizeof(name), "q%u", q);
		qo.name = name;
		qo.capacity = 8;
		qo.visibility_ns = 2000000;
		qo.max_attempts = QUAY_QUEUE_ATTEMPTS_MAX;
		qo.flags = QUAY_QUEUE_NO_BACKOFF;
		qo.tick_ns = 100000;
		if (durable) {
			qo.wal = wal;
			qo.pool = pool;
		}
		if (quay_queue_create(&qo, &qs[q]) != 0)
			return 1;
		bo.policy = QUAY_SUB_BLOCK;
		bo.block_timeout_ns = -1;
		bo.filter = filters[q];
		bo.group = q >= NQ - NGROUP ? "g" : NULL;
		if (quay_bus_bind(bus, patterns[q], qs[q], &bo, &binds[q]) != 0)
			return 1;
		acked[q] = calloc(NPUB * nmsg, 1);
		if (acked[q] == NULL)
			return 1;
	}
	for (unsigned q = 0; q < NQ; q++)
		pthread_create(&cons[q], NULL, consumer, (void *)(uintptr_t)q);
	pthread_create(&ch, NULL, churn, NULL);
	for (unsigned p = 0; p < NPUB; p++)
		pthread_create(&pubs[p], NULL, publisher, (void *)(uintptr_t)p);
	for (unsigned p = 0; p < NPUB; p++)
		pthread_join(pubs[p], NULL);
	atomic_store(&stop_churn, 1);
	pthread_join(ch, NULL);
	/* Wait for the consumers to ack everything (redeliveries included). */
	do {
		usleep(20000);
		done = all_acked();
	} while (!done && time(NULL) - t0 < 240);
	atomic_store(&stop_consumers, 1);
	for (unsigned q = 0; q < NQ; q++)
		pthread_join(cons[q], NULL);

	for (unsigned q = 0; q < NQ; q++) {
		struct quay_binding_counters bc;
		uint64_t want = 0;

		for (uint32_t p = 0; p < NPUB; p++)
			for (uint32_t s = 0; s < nmsg; s++) {
				uint8_t c = acked[q][(size_t)p * nmsg + s];
				if (q < NQ - NGROUP) {
					bool e = expected_in(q, s);
					want += e;
					if (e && c == 0)
						missing++;
					else if (e ? c != 1 : c != 0)
						(c > 1 ? bad++ : extra++);
				}
			}
		quay_binding_counters(binds[q], &bc);
		if (q < NQ - NGROUP && bc.delivered != want)
			counter_bad++;
		if (bc.dropped + bc.rejected + bc.timed_out + bc.failed != 0)
			counter_bad++;
	}
	{
		uint64_t gdel = 0;
		for (unsigned q = NQ - NGROUP; q < NQ; q++) {
			struct quay_binding_counters bc;
			quay_binding_counters(binds[q], &bc);
			gdel += bc.delivered;
		}
		if (gdel != (uint64_t)NPUB * nmsg)
			counter_bad++;
	}
	for (uint32_t p = 0; p < NPUB; p++)
		for (uint32_t s = 0; s < nmsg; s++) {
			unsigned sum = 0;
			for (unsigned q = NQ - NGROUP; q < NQ; q++)
				sum += acked[q][(size_t)p * nmsg + s];
			if (sum != 1)
				group_bad++;
		}
	quay_bus_destroy(bus);
	for (unsigned q = 0; q < NQ; q++) {
		quay_lease l;
		while (
		    quay_queue_receive(qs[q], &l, 0) == 0) { /* redeliveries of acked ones: none expected */
			extra++;
			(void)quay_queue_ack(qs[q], &l);
			quay_msg_unref(l.msg);
		}
		quay_queue_destroy(qs[q]);
		free(acked[q]);
	}
	if (wal != NULL) {
		char cmd[96];

		quay_wal_close(wal);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			bad++;
	}
	quay_pool_stats(pool, &ps);
	printf(
	    "stress-routing%s: msgs %zu x %d publishers, %d bound queues (3 in a group), churn rounds %lu, "
	    "nacks %lu, expiries %lu: missing %lu, dup %lu (+%lu dup acks), extra %lu, group violations %lu, "
	    "counter mismatches %lu, pool in use %zu%s\n",
	    durable ? " (durable, one WAL)" : "", nmsg, NPUB, NQ, (unsigned long)atomic_load(&churn_rounds),
	    (unsigned long)atomic_load(&nacks), (unsigned long)atomic_load(&expiries), missing, bad,
	    (unsigned long)atomic_load(&dup_acks), extra, group_bad, counter_bad, (size_t)ps.in_use,
	    done ? "" : " (TIME LIMIT)");
	quay_pool_destroy(pool);
	return missing + bad + extra + group_bad + counter_bad + atomic_load(&dup_acks) == 0 &&
	        ps.in_use == 0 && done ?
	    0 :
	    1;
}
