/* SPDX-License-Identifier: MIT */
/*
 * Stress test of the bus (TESTING.md R7): P publishers, subscriptions
 * with overlapping patterns (lossless ones with the BLOCK policy, a queue
 * group, and one subscription per drop policy), each with its own
 * receiver thread, while a churn thread keeps subscribing and
 * unsubscribing throw-away subscriptions (some in the same group).
 *
 * Checked, per configuration:
 *  - every lossless subscription gets every message whose subject its
 *    pattern matches exactly once, in per-publisher order (with
 *    priorities: in per-publisher order within each level);
 *  - the group's members together get each matching message exactly
 *    once, each member in per-publisher order;
 *  - a drop-policy subscription: received + dropped (or rejected) +
 *    released == published to it, no duplicates, per-publisher order;
 *  - every message goes back to the pool.
 *
 * Fault run "unsub-sleeping" (issue 19): over and over, 1..3 receivers
 * are put to sleep inside quay_sub_receive() on an empty subscription
 * (a ring or a priority queue; waiting forever or with a long timeout),
 * each proven asleep in futex(2) by /proc/self/task/<tid>/syscall (seen
 * twice, a while apart, after the thread announced the call), and the
 * subscription is unsubscribed: every receiver must wake with -EPIPE,
 * within the hang limit, and every message (some queued on a sibling
 * subscription unsubscribed with it) goes back to the pool. Under
 * ASan/TSan (scripts/test runs this program in both) a use after free or
 * a race in the wake-up is reported.
 *
 * Run with no arguments: the CI-size run of every configuration, one
 * summary line each; exit status 1 on any violation, 2 on a hang.
 * QUAY_STRESS_SCALE=N multiplies the messages and the fault rounds.
 * ThreadSanitizer builds run half of the messages (and every round).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#include <quay/bus.h>


#define MAX_PUB 8
#define NSUBJ 6
#define NLOSSLESS 5
#define NGROUP 3
#define NDROP 3
#define NRECV (NLOSSLESS + NGROUP + NDROP)
#define LEVELS 4
#define BATCH 8

static const char *const subjects[NSUBJ] = {
	"s.a.x",
	"s.b.x",
	"s.a.y",
	"t.a.x",
	"s.c",
	"s.a.x.deep",
};
static const char *const lossless_pat[NLOSSLESS] = { "s.>", "s.*.x", "s.a.*", "*.a.x", ">" };
static const char *const group_pat = "s.>";
static const char *const drop_pat[NDROP] = { "s.>", "s.*.x", ">" };
static const enum quay_sub_policy drop_pol[NDROP] = {
	QUAY_SUB_DROP_NEWEST,
	QUAY_SUB_DROP_OLDEST,
	QUAY_SUB_REJECT,
};
static const char *const churn_pat[] = { "s.>", "s.a.x", "*.*.x", ">", "t.>", "s.*", "s.a.x.deep" };

struct config {
	const char *name;
	int pubs;
	bool churn;
	bool prio;
	size_t cap;    /* lossless and group queues */
	uint64_t msgs; /* per publisher, before scaling */
};

static const struct config configs[] = {
	{ "p2-ring", 2, false, false, 64, 200000 },
	{ "p4-ring-churn", 4, true, false, 64, 100000 },
	{ "p3-pq-churn", 3, true, true, 32, 100000 },
	{ "p2-ring-cap2-churn", 2, true, false, 2, 40000 },
};

struct body {
	uint32_t pub;
	uint32_t level;
	uint64_t seq;
};

/* Run state. */
static quay_bus *bus;
static quay_pool *pool;
static const struct config *cfg;
static uint64_t nmsgs;
static _Atomic int pubs_done;
static _Atomic int stop_churn;
static _Atomic uint64_t violations;
static _Atomic uint64_t churn_ops;
static _Atomic uint8_t *group_seen; /* [pub][seq] */

struct recv {
	quay_sub *sub;
	int kind; /* 0 lossless, 1 group member, 2 drop */
	int idx;
	_Atomic uint64_t got;
	uint64_t last[MAX_PUB][LEVELS];
	bool any[MAX_PUB][LEVELS];
	pthread_t th;
};
static struct recv recvs[NRECV];

static void
violation(const char *what, const struct recv *r, uint32_t pub, uint64_t seq)
{
	if (atomic_fetch_add_explicit(&violations, 1, memory_order_relaxed) < 20)
		fprintf(stderr, "stress_bus: %s: %s kind %d #%d pub %u seq %" PRIu64 "\n", cfg->name, what,
		    r->kind, r->idx, pub, seq);
}

static unsigned
subject_of(int pub, uint64_t seq)
{
	return (unsigned)(((seq / BATCH) * 7 + (uint64_t)pub) % NSUBJ);
}

static unsigned
level_of(uint64_t seq)
{
	return cfg->prio ? (unsigned)(seq % LEVELS) : 0;
}

static void *
recv_main(void *arg)
{
	struct recv *r = arg;
	quay_msg *m[16];
	uint64_t rs = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(r->kind * 16 + r->idx);

	for (;;) {
		size_t n;
		if (r->kind == 2 && qt_rand(&rs) % 64 == 0) {
			/* A slow consumer: let the drop policies work. */
			struct timespec ts = { 0, 200000 };
			nanosleep(&ts, NULL);
		}
		if (qt_rand(&rs) % 2) {
			int rc = quay_sub_receive(r->sub, &m[0], 200000000);
			if (rc == -EPIPE)
				break;
			if (rc == -ETIMEDOUT)
				continue;
			if (rc != 0) {
				violation("receive failed", r, 0, (uint64_t)-rc);
				break;
			}
			n = 1;
		} else {
			n = quay_sub_receive_burst(r->sub, m, 16);
			if (n == 0) {
				int rc = quay_sub_receive(r->sub, &m[0], 200000000);
				if (rc == -EPIPE)
					break;
				if (rc != 0)
					continue;
				n = 1;
			}
		}
		for (size_t i = 0; i < n; i++) {
			struct body b;
			memcpy(&b, quay_msg_body(m[i]), sizeof(b));
			if (b.pub >= (uint32_t)cfg->pubs || b.seq >= nmsgs || b.level != level_of(b.seq)) {
				violation("corrupt message", r, b.pub, b.seq);
			} else {
				unsigned lv = b.level;
				if (r->any[b.pub][lv] && b.seq <= r->last[b.pub][lv])
					violation("order or duplicate", r, b.pub, b.seq);
				r->any[b.pub][lv] = true;
				r->last[b.pub][lv] = b.seq;
				if (r->kind == 1 &&
				    atomic_fetch_or_explicit(&group_seen[(uint64_t)b.pub * nmsgs + b.seq], 1,
				        memory_order_relaxed) != 0)
					violation("group duplicate", r, b.pub, b.seq);
			}
			quay_msg_unref(m[i]);
		}
		atomic_fetch_add_explicit(&r->got, n, memory_order_relaxed);
	}
	return NULL;
}

static quay_msg *
make_msg(int pub, uint64_t seq)
{
	struct body b = { (uint32_t)pub, level_of(seq), seq };
	quay_msg *m;

	if (quay_msg_new_wait(pool, &b, sizeof(b), 10000000000LL, &m) != 0) {
		fprintf(stderr, "stress_bus: pool exhausted\n");
		exit(2);
	}
	quay_msg_set_priority(m, b.level);
	return m;
}

static void *
pub_main(void *arg)
{
	int pub = (int)(intptr_t)arg;
	quay_msg *batch[BATCH];

	for (uint64_t seq = 0; seq < nmsgs; seq += BATCH) {
		const char *subj = subjects[subject_of(pub, seq)];
		uint64_t n = nmsgs - seq < BATCH ? nmsgs - seq : BATCH;
		if ((seq / BATCH) % 2 == 0) {
			for (uint64_t i = 0; i < n; i++)
				batch[i] = make_msg(pub, seq + i);
			int r = quay_bus_publish_batch(bus, subj, batch, (size_t)n);
			if (r != (int)n) {
				fprintf(stderr, "stress_bus: %s: publish_batch returned %d\n", cfg->name, r);
				atomic_fetch_add(&violations, 1);
				for (int i = r < 0 ? 0 : r; i < (int)n; i++)
					quay_msg_unref(batch[i]);
			}
		} else {
			for (uint64_t i = 0; i < n; i++) {
				quay_msg *m = make_msg(pub, seq + i);
				int r = quay_bus_publish(bus, subj, m);
				if (r < 0) {
					fprintf(stderr, "stress_bus: %s: publish returned %d\n", cfg->name,
					    r);
					atomic_fetch_add(&violations, 1);
					quay_msg_unref(m);
				}
			}
		}
	}
	atomic_fetch_add(&pubs_done, 1);
	return NULL;
}

static void *
churn_main(void *arg)
{
	uint64_t rs = 77;
	quay_sub *live[8] = { 0 };

	(void)arg;
	while (!atomic_load(&stop_churn)) {
		unsigned k = (unsigned)(qt_rand(&rs) % 8);
		if (live[k] != NULL) {
			quay_msg *m[8];
			size_t n = quay_sub_receive_burst(live[k], m, 8);
			for (size_t i = 0; i < n; i++)
				quay_msg_unref(m[i]);
			if (quay_bus_unsubscribe(live[k]) != 0)
				atomic_fetch_add(&violations, 1);
			live[k] = NULL;
		} else {
			struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
			/* A non-blocking policy: nobody drains these. */
			static const enum quay_sub_policy pols[] = { QUAY_SUB_DROP_NEWEST,
				QUAY_SUB_DROP_OLDEST, QUAY_SUB_REJECT };
			o.policy = pols[qt_rand(&rs) % 3];
			o.capacity = 8;
			if (qt_rand(&rs) % 4 == 0)
				o.group = "churn";
			if (qt_rand(&rs) % 4 == 0)
				o.flags = QUAY_SUB_NO_LATENCY;
			if (quay_bus_subscribe(bus, churn_pat[qt_rand(&rs) % 7], &o, &live[k]) != 0) {
				atomic_fetch_add(&violations, 1);
				live[k] = NULL;
			}
		}
		atomic_fetch_add_explicit(&churn_ops, 1, memory_order_relaxed);
	}
	for (unsigned k = 0; k < 8; k++)
		if (live[k] != NULL)
			quay_bus_unsubscribe(live[k]);
	return NULL;
}

static uint64_t
expected_for(const char *pat)
{
	uint64_t n = 0;

	for (int p = 0; p < cfg->pubs; p++)
		for (uint64_t seq = 0; seq < nmsgs; seq++)
			n += quay_bus_match(pat, subjects[subject_of(p, seq)]);
	return n;
}

static quay_sub *
subscribe(const char *pat, enum quay_sub_policy pol, size_t cap, const char *group)
{
	struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
	quay_sub *s;

	o.policy = pol;
	o.capacity = cap;
	o.group = group;
	o.block_timeout_ns = -1;
	o.priorities = cfg->prio && pol != QUAY_SUB_DROP_OLDEST ? LEVELS : 0;
	if (quay_bus_subscribe(bus, pat, &o, &s) != 0) {
		fprintf(stderr, "stress_bus: subscribe %s failed\n", pat);
		exit(2);
	}
	return s;
}

static int
run(const struct config *c, uint64_t scale, int64_t hang_s)
{
	pthread_t pubs[MAX_PUB], churn;
	uint64_t exp_lossless[NLOSSLESS], exp_group, exp_drop[NDROP], group_total = 0;
	uint64_t drops = 0;
	double t0 = qt_now_s();
	int64_t deadline;
	struct quay_pool_stats ps;
	bool hung = false;

	cfg = c;
	nmsgs = c->msgs * scale / (QT_TSAN ? 2 : 1);
	atomic_store(&pubs_done, 0);
	atomic_store(&stop_churn, 0);
	atomic_store(&violations, 0);
	atomic_store(&churn_ops, 0);
	group_seen = calloc((size_t)(c->pubs * nmsgs), 1);
	if (group_seen == NULL || quay_pool_create((size_t)64 << 20, NULL, &pool) != 0 ||
	    quay_bus_create(NULL, &bus) != 0) {
		fprintf(stderr, "stress_bus: setup failed\n");
		return 2;
	}
	memset(recvs, 0, sizeof(recvs));
	for (int i = 0; i < NLOSSLESS; i++) {
		recvs[i].sub = subscribe(lossless_pat[i], QUAY_SUB_BLOCK, c->cap, NULL);
		recvs[i].kind = 0;
		recvs[i].idx = i;
		exp_lossless[i] = expected_for(lossless_pat[i]);
	}
	for (int i = 0; i < NGROUP; i++) {
		struct recv *r = &recvs[NLOSSLESS + i];
		r->sub = subscribe(group_pat, QUAY_SUB_BLOCK, c->cap, "workers");
		r->kind = 1;
		r->idx = i;
	}
	exp_group = expected_for(group_pat);
	for (int i = 0; i < NDROP; i++) {
		struct recv *r = &recvs[NLOSSLESS + NGROUP + i];
		r->sub = subscribe(drop_pat[i], drop_pol[i], 16, NULL);
		r->kind = 2;
		r->idx = i;
		exp_drop[i] = expected_for(drop_pat[i]);
	}
	for (int i = 0; i < NRECV; i++)
		pthread_create(&recvs[i].th, NULL, recv_main, &recvs[i]);
	if (c->churn)
		pthread_create(&churn, NULL, churn_main, NULL);
	for (int p = 0; p < c->pubs; p++)
		pthread_create(&pubs[p], NULL, pub_main, (void *)(intptr_t)p);

	/* Wait for the publishers, then for the lossless receivers. */
	deadline = qt_now_ns() + hang_s * 1000000000LL;
	while (atomic_load(&pubs_done) < c->pubs && qt_now_ns() < deadline) {
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < NLOSSLESS + NGROUP; i++) {
		for (;;) {
			uint64_t got = 0;
			if (i < NLOSSLESS) {
				got = atomic_load(&recvs[i].got);
				if (got >= exp_lossless[i])
					break;
			} else {
				for (int g = 0; g < NGROUP; g++)
					got += atomic_load(&recvs[NLOSSLESS + g].got);
				if (got >= exp_group)
					break;
			}
			if (qt_now_ns() > deadline) {
				hung = true;
				break;
			}
			struct timespec ts = { 0, 2000000 };
			nanosleep(&ts, NULL);
		}
	}
	if (hung || atomic_load(&pubs_done) < c->pubs) {
		fprintf(stderr, "stress_bus: %s: HANG (publishers done %d of %d)\n", c->name,
		    atomic_load(&pubs_done), c->pubs);
		return 2;
	}
	atomic_store(&stop_churn, 1);
	if (c->churn)
		pthread_join(churn, NULL);
	for (int p = 0; p < c->pubs; p++)
		pthread_join(pubs[p], NULL);
	/* Drop-policy subscriptions: once their receivers took everything
	 * queued, received + dropped + rejected must be what matched. */
	for (int i = 0; i < NDROP; i++) {
		struct recv *r = &recvs[NLOSSLESS + NGROUP + i];
		struct quay_sub_counters sc;
		for (;;) {
			struct quay_sub_counters again;
			struct timespec settle = { 0, 10000000 };
			quay_sub_counters(r->sub, &sc);
			/* Quiet twice, 10 ms apart: no receiver between its pop and
			 * its counting. (delivered also counts DROP_OLDEST's
			 * evictions, so it is not compared.) */
			if (quay_sub_pending(r->sub) == 0 && atomic_load(&r->got) == sc.received) {
				nanosleep(&settle, NULL);
				quay_sub_counters(r->sub, &again);
				if (quay_sub_pending(r->sub) == 0 && again.received == sc.received &&
				    atomic_load(&r->got) == again.received)
					break;
			}
			if (qt_now_ns() > deadline) {
				fprintf(stderr, "stress_bus: %s: HANG draining %s\n", c->name, drop_pat[i]);
				return 2;
			}
			struct timespec ts = { 0, 2000000 };
			nanosleep(&ts, NULL);
		}
		if (sc.received + sc.dropped + sc.rejected != exp_drop[i]) {
			fprintf(stderr,
			    "stress_bus: %s: %s policy %d: received %" PRIu64 " + dropped %" PRIu64
			    " + rejected %" PRIu64 " != %" PRIu64 "\n",
			    c->name, drop_pat[i], (int)drop_pol[i], sc.received, sc.dropped, sc.rejected,
			    exp_drop[i]);
			atomic_fetch_add(&violations, 1);
		}
		drops += sc.dropped + sc.rejected;
	}
	/* Unsubscribe: every receiver gets -EPIPE. */
	for (int i = 0; i < NRECV; i++) {
		quay_bus_unsubscribe(recvs[i].sub);
		pthread_join(recvs[i].th, NULL);
	}

	for (int i = 0; i < NLOSSLESS; i++)
		if (atomic_load(&recvs[i].got) != exp_lossless[i]) {
			fprintf(stderr, "stress_bus: %s: lossless %s got %" PRIu64 " want %" PRIu64 "\n",
			    c->name, lossless_pat[i], atomic_load(&recvs[i].got), exp_lossless[i]);
			atomic_fetch_add(&violations, 1);
		}
	for (int g = 0; g < NGROUP; g++)
		group_total += atomic_load(&recvs[NLOSSLESS + g].got);
	if (group_total != exp_group) {
		fprintf(stderr, "stress_bus: %s: group got %" PRIu64 " want %" PRIu64 "\n", c->name,
		    group_total, exp_group);
		atomic_fetch_add(&violations, 1);
	}
	quay_bus_destroy(bus);
	free(group_seen);
	if (quay_pool_stats(pool, &ps) != 0 || ps.in_use != 0) {
		fprintf(stderr, "stress_bus: %s: %" PRIu64 " messages leaked\n", c->name, ps.in_use);
		atomic_fetch_add(&violations, 1);
	}
	quay_pool_destroy(pool);
	printf("stress_bus %-20s pubs=%d msgs=%" PRIu64 " lossless=%" PRIu64 " group=%" PRIu64
	       " drops=%" PRIu64 " churn_ops=%" PRIu64 " violations=%" PRIu64 " %.2fs\n",
	    c->name, c->pubs, nmsgs * (uint64_t)c->pubs, exp_lossless[0], group_total, drops,
	    atomic_load(&churn_ops), atomic_load(&violations), qt_now_s() - t0);
	fflush(stdout);
	return atomic_load(&violations) != 0;
}

/* ---- fault: unsubscribe while receivers sleep in quay_sub_receive ---- */

#define FAULT_ROUNDS 1000
#define FAULT_RECV_MAX 3

struct sleeper {
	quay_sub *sub;
	int64_t timeout_ns;
	_Atomic int tid; /* set just before the blocking call */
	_Atomic int done;
	int r;
	pthread_t th;
};

/* True if thread tid is blocked in futex(2) right now. */
static bool
in_futex(int tid)
{
	char path[64];
	FILE *fp;
	long nr = -1;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	fp = fopen(path, "r");
	if (fp == NULL)
		return false;
	if (fscanf(fp, "%ld", &nr) != 1)
		nr = -1;
	fclose(fp);
	return nr == SYS_futex;
}

static void *
sleeper_main(void *arg)
{
	struct sleeper *z = arg;
	quay_msg *m;
	int r;

	/* A first try registers the thread (RCU) and must find nothing: the
	 * only futex the next call can sleep in is the subscription's. */
	r = quay_sub_receive(z->sub, &m, 0);
	if (r != -ETIMEDOUT && r != -EAGAIN) {
		if (r == 0)
			quay_msg_unref(m);
		atomic_fetch_add(&violations, 1);
		fprintf(stderr, "stress_bus: unsub-sleeping: first try %d on an empty queue\n", r);
	}
	atomic_store_explicit(&z->tid, (int)syscall(SYS_gettid), memory_order_release);
	z->r = quay_sub_receive(z->sub, &m, z->timeout_ns);
	if (z->r == 0)
		quay_msg_unref(m);
	atomic_store_explicit(&z->done, 1, memory_order_release);
	return NULL;
}

/* Wait until z's thread sleeps in futex(2), seen twice 200 us apart. */
static bool
await_asleep(struct sleeper *z, int64_t deadline)
{
	struct timespec ts = { 0, 200000 };
	int tid, seen = 0;

	while ((tid = atomic_load_explicit(&z->tid, memory_order_acquire)) == 0) {
		if (qt_now_ns() > deadline)
			return false;
		nanosleep(&ts, NULL);
	}
	while (seen < 2) {
		seen = in_futex(tid) ? seen + 1 : 0;
		if (atomic_load_explicit(&z->done, memory_order_acquire) || qt_now_ns() > deadline)
			return false;
		nanosleep(&ts, NULL);
	}
	return true;
}

static int
run_unsub_sleeping(uint64_t scale, int64_t hang_s)
{
	static const struct config fcfg = { "unsub-sleeping", 0, false, false, 8, 0 };
	uint64_t rounds = FAULT_ROUNDS * scale, slept = 0, epipe = 0;
	struct sleeper z[FAULT_RECV_MAX];
	struct quay_pool_stats ps;
	double t0 = qt_now_s();

	cfg = &fcfg;
	atomic_store(&violations, 0);
	if (quay_pool_create((size_t)4 << 20, NULL, &pool) != 0 || quay_bus_create(NULL, &bus) != 0) {
		fprintf(stderr, "stress_bus: setup failed\n");
		return 2;
	}
	for (uint64_t k = 0; k < rounds; k++) {
		struct quay_sub_opts o = QUAY_SUB_OPTS_INIT;
		int n = 1 + (int)(k % FAULT_RECV_MAX);
		int64_t deadline = qt_now_ns() + hang_s * 1000000000LL;
		quay_sub *s, *sib;

		/* A ring or a priority queue; forever or a timeout far longer
		 * than the run, so only the unsubscribe can wake them. */
		o.priorities = (k / FAULT_RECV_MAX) % 2 ? LEVELS : 0;
		o.capacity = 8;
		sib = subscribe("fault.>", QUAY_SUB_BLOCK, 8, NULL);
		if (quay_bus_subscribe(bus, "fault.x", &o, &s) != 0) {
			fprintf(stderr, "stress_bus: unsub-sleeping: subscribe failed\n");
			return 2;
		}
		/* Messages only the sibling gets: released by its unsubscribe. */
		for (uint64_t i = 0; i < k % 5; i++) {
			quay_msg *m;

			if (quay_msg_new(pool, &i, sizeof(i), &m) != 0 ||
			    quay_bus_publish(bus, "fault.y", m) != 1) {
				fprintf(stderr, "stress_bus: unsub-sleeping: publish failed\n");
				return 2;
			}
		}
		for (int i = 0; i < n; i++) {
			z[i].sub = s;
			z[i].timeout_ns = (k / (2 * FAULT_RECV_MAX)) % 2 ? -1 : (int64_t)3600 * 1000000000;
			atomic_store(&z[i].tid, 0);
			atomic_store(&z[i].done, 0);
			z[i].r = 99;
			pthread_create(&z[i].th, NULL, sleeper_main, &z[i]);
		}
		for (int i = 0; i < n; i++) {
			if (!await_asleep(&z[i], deadline)) {
				fprintf(stderr,
				    "stress_bus: unsub-sleeping: round %" PRIu64 " receiver %d never "
				    "slept in futex (done %d, r %d)\n",
				    k, i, atomic_load(&z[i].done), z[i].r);
				return 2;
			}
			slept++;
		}
		if (quay_bus_unsubscribe(s) != 0 || quay_bus_unsubscribe(sib) != 0) {
			fprintf(stderr, "stress_bus: unsub-sleeping: unsubscribe failed\n");
			return 2;
		}
		for (int i = 0; i < n; i++) {
			struct timespec ts = { 0, 100000 };

			while (!atomic_load_explicit(&z[i].done, memory_order_acquire)) {
				if (qt_now_ns() > deadline) {
					fprintf(stderr,
					    "stress_bus: unsub-sleeping: HANG: round %" PRIu64
					    " receiver %d not woken by unsubscribe\n",
					    k, i);
					return 2;
				}
				nanosleep(&ts, NULL);
			}
			pthread_join(z[i].th, NULL);
			if (z[i].r == -EPIPE) {
				epipe++;
			} else {
				atomic_fetch_add(&violations, 1);
				fprintf(stderr,
				    "stress_bus: unsub-sleeping: round %" PRIu64 " receiver %d got %d, "
				    "not -EPIPE\n",
				    k, i, z[i].r);
			}
		}
	}
	quay_bus_destroy(bus);
	if (quay_pool_stats(pool, &ps) != 0 || ps.in_use != 0) {
		fprintf(stderr, "stress_bus: unsub-sleeping: %" PRIu64 " messages leaked\n", ps.in_use);
		atomic_fetch_add(&violations, 1);
	}
	quay_pool_destroy(pool);
	printf("stress_bus %-20s rounds=%" PRIu64 " receivers_slept=%" PRIu64 " woken_epipe=%" PRIu64
	       " violations=%" PRIu64 " %.2fs\n",
	    "unsub-sleeping", rounds, slept, epipe, atomic_load(&violations), qt_now_s() - t0);
	fflush(stdout);
	return atomic_load(&violations) != 0;
}

int
main(void)
{
	const char *env = getenv("QUAY_STRESS_SCALE");
	uint64_t scale = env != NULL && atoi(env) > 0 ? (uint64_t)atoi(env) : 1;
	int64_t hang_s = (QT_TSAN ? 600 : 120) * (int64_t)scale;
	int rc = 0;

	for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
		int r = run(&configs[i], scale, hang_s);
		if (r == 2)
			return 2;
		rc |= r;
	}
	{
		int r = run_unsub_sleeping(scale, hang_s);
		if (r == 2)
			return 2;
		rc |= r;
	}
	return rc;
}
