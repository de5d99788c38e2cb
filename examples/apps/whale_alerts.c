/* SPDX-License-Identifier: MIT */
/*
 * whale_alerts: a chain monitor publishes large wallet movements; an
 * analysis service, one notification queue per user and a trading
 * service take what concerns them (examples/apps/README.md).
 *
 *   whale_alerts [--seed N] [--events N] [--outage-ms N]
 *
 * The monitor detects movements (BUY or SELL of a token, amount, share
 * of the whale's position, detection time, the users who track that
 * wallet) and publishes them in batches of up to 10 with the attributes
 * whale_address, movement_type and token_mint as headers. Bindings route
 * them into queues:
 *
 *   whale.#  -> "analysis": durable (a WAL), three competing workers
 *   whale.#  -> "notify.<user>", one per user, filter
 *               whale_address in {the wallets that user tracks}
 *   whale.#  -> "trading", filter movement_type = BUY && amount_usd >= 1000000
 *
 * A quarter of the way in, the analysis and trading services stop for
 * an outage (--outage-ms): their queues fill and refuse. The monitor does
 * not stop: an event a target refused is stored locally, counted and
 * published again later (the whole batch: each event carries a dedup id,
 * so a queue that already has it takes the retry as a duplicate).
 *
 * Promises, checked at the end (exit 1 if one is broken): every movement
 * analysed exactly once (and the net flow per whale adds up), each user
 * alerted exactly once for each movement of each wallet they track and
 * for nothing else, the trading service given exactly the BUY events at
 * or above the threshold, the outage really refused events, and the
 * durable analysis queue reopened from its WAL holds nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <quay/bus.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "app_util.h"

#define WHALES 12
#define USERS 8
#define TRACKED 3 /* wallets each user tracks */
#define TOKENS 4
#define BATCH 10 /* SNS PublishBatch's limit */
#define ANALYSTS 3
#define TRADE_MIN_USD 1000000
#define MS ((int64_t)1000000)

enum { BUY = 0, SELL = 1 };

/* One detected movement: the message body. */
struct movement {
	uint32_t id;
	uint8_t whale, type, token, ntrackers;
	uint32_t share_bp; /* share of the whale's position moved, in 1/100 % */
	uint64_t amount_usd;
	int64_t detected_ns; /* CLOCK_REALTIME */
	uint8_t trackers[USERS];
};

static const char *const token_sym[TOKENS] = { "sol", "usdc", "bonk", "jup" };
static const char *const token_mint[TOKENS] = { "So11111111111111111111111111111111111111112",
	"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263",
	"JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN" };

static char whale_addr[WHALES][40];
static int tracks[USERS][TRACKED];
static struct movement *ev;
static uint32_t nev = 4000;
static int break_retry; /* --break=retry: drop refused events (no local store) */
static int break_dedup; /* --break=dedup: no dedup ids (a retry delivers twice) */

static quay_pool *pool;
static quay_wal *wal;
static quay_bus *bus;
static quay_queue *analysis, *trading, *notify[USERS];
static quay_binding *bindings[2 + USERS];

/* Outcomes, per event (atomic increments by the consumers). */
static uint16_t *analysed, *traded, *alerted[USERS];
static int64_t netflow[WHALES]; /* analysis: BUY +, SELL - */
static uint32_t per_analyst[ANALYSTS];
static uint32_t wrong_alerts, wrong_trades;
static int64_t alert_lat_sum, alert_lat_max; /* detection -> alert acked, ns */
static int64_t outage_until;                 /* CLOCK_MONOTONIC ns; release/acquire with the services */

/* xorshift64*: the whole run follows from --seed. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static void
wait_outage(void)
{
	while (mono_ns() < __atomic_load_n(&outage_until, __ATOMIC_ACQUIRE))
		sleep_ns(5 * MS);
}

static void
generate(uint64_t seed)
{
	static const char b58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;

	for (int w = 0; w < WHALES; w++) {
		for (int i = 0; i < 32; i++)
			whale_addr[w][i] = b58[rnd(&s) % 58];
		whale_addr[w][32] = '\0';
	}
	for (int u = 0; u < USERS; u++)
		for (int k = 0; k < TRACKED; k++) {
			int w, dup;

			do {
				w = (int)(rnd(&s) % WHALES);
				dup = 0;
				for (int j = 0; j < k; j++)
					dup |= tracks[u][j] == w;
			} while (dup);
			tracks[u][k] = w;
		}
	for (uint32_t i = 0; i < nev; i++) {
		struct movement *m = &ev[i];

		m->id = i;
		m->whale = (uint8_t)(rnd(&s) % WHALES);
		m->type = rnd(&s) % 100 < 55 ? BUY : SELL;
		m->token = (uint8_t)(rnd(&s) % TOKENS);
		m->amount_usd = 100000 + rnd(&s) % 4900000;
		m->share_bp = (uint32_t)(100 + rnd(&s) % 9900);
		for (int u = 0; u < USERS; u++)
			for (int k = 0; k < TRACKED; k++)
				if (tracks[u][k] == m->whale)
					m->trackers[m->ntrackers++] = (uint8_t)u;
	}
}

/* Make the message of event i: body and the routing attributes. */
static int
make_msg(uint32_t i, quay_msg **out, char *subject, size_t cap)
{
	struct movement *e = &ev[i];
	char amount[24], dedup[16];
	quay_msg *m;
	int rc;

	if (e->detected_ns == 0)
		e->detected_ns = real_ns(); /* first detection; a retry keeps it */
	rc = quay_msg_new_ex(pool, e, sizeof(*e), QUAY_MSG_HEADER_ROOM(5, 64), 0, &m);
	if (rc != 0)
		return rc; /* -ENOMEM: the pool is full (the consumers are behind) */
	snprintf(amount, sizeof(amount), "%llu", (unsigned long long)e->amount_usd);
	snprintf(dedup, sizeof(dedup), "mv-%u", e->id);
	if ((rc = quay_msg_set_header_str(m, "whale_address", whale_addr[e->whale])) != 0 ||
	    (rc = quay_msg_set_header_str(m, "movement_type", e->type == BUY ? "BUY" : "SELL")) != 0 ||
	    (rc = quay_msg_set_header_str(m, "token_mint", token_mint[e->token])) != 0 ||
	    (rc = quay_msg_set_header_str(m, "amount_usd", amount)) != 0 ||
	    (!break_dedup && (rc = quay_msg_set_header_str(m, QUAY_MSG_H_DEDUP_ID, dedup)) != 0)) {
		quay_msg_unref(m);
		return rc;
	}
	snprintf(subject, cap, "whale.%s.%s", token_sym[e->token], e->type == BUY ? "buy" : "sell");
	*out = m;
	return 0;
}

/* Refusals by every binding so far (full queues, failed copies). */
static uint64_t
refusals(void)
{
	uint64_t n = 0;

	for (size_t i = 0; i < sizeof(bindings) / sizeof(bindings[0]); i++) {
		struct quay_binding_counters c;

		quay_binding_counters(bindings[i], &c);
		n += c.rejected + c.dropped + c.timed_out + c.failed;
	}
	return n;
}

/*
 * Publish events ids[0..k) as one batch. Returns how many of them must be
 * stored locally and published again (put in again[]): those not
 * published, and, if any target refused one of the batch, the whole batch
 * (publish_many says how many were published, not which target refused
 * which; the dedup ids make the retry harmless to the queues that took it).
 */
static size_t
publish(const uint32_t *ids, size_t k, uint32_t *again)
{
	quay_msg *msgs[BATCH];
	char subj[BATCH][64];
	const char *subjects[BATCH];
	uint32_t order[BATCH];
	size_t made = 0, nagain = 0;
	uint64_t before = refusals();
	int r = 0;

	for (size_t i = 0; i < k; i++)
		if (make_msg(ids[i], &msgs[made], subj[made], sizeof(subj[made])) == 0) {
			subjects[made] = subj[made];
			order[made++] = ids[i];
		} else {
			again[nagain++] = ids[i];
		}
	if (made > 0)
		r = quay_bus_publish_many(bus, subjects, msgs, made);
	if (r < 0)
		r = 0; /* the first was refused: we keep every reference */
	for (size_t i = (size_t)r; i < made; i++) {
		quay_msg_unref(msgs[i]);
		again[nagain++] = order[i];
	}
	if (refusals() != before)
		for (int i = 0; i < r; i++)
			again[nagain++] = order[i];
	return nagain;
}

static void *
analyst(void *arg)
{
	uintptr_t me = (uintptr_t)arg;
	quay_lease ls[BATCH];

	for (;;) {
		size_t n;

		wait_outage();
		n = quay_queue_receive_batch(analysis, ls, BATCH, 50 * MS);
		if (n == 0) {
			quay_lease probe;
			int rc = quay_queue_receive(analysis, &probe, 0);

			if (rc == -EPIPE)
				break;
			if (rc != 0)
				continue;
			ls[0] = probe;
			n = 1;
		}
		for (size_t i = 0; i < n; i++) {
			struct movement m;

			memcpy(&m, quay_msg_body(ls[i].msg), sizeof(m));
			if (quay_queue_ack(analysis, &ls[i]) == 0) {
				__atomic_fetch_add(&analysed[m.id], 1, __ATOMIC_RELAXED);
				__atomic_fetch_add(&netflow[m.whale],
				    m.type == BUY ? (int64_t)m.amount_usd : -(int64_t)m.amount_usd,
				    __ATOMIC_RELAXED);
				__atomic_fetch_add(&per_analyst[me], 1, __ATOMIC_RELAXED);
			}
			quay_msg_unref(ls[i].msg);
		}
	}
	return NULL;
}

static void *
trader(void *arg)
{
	quay_lease l;
	int rc;

	(void)arg;
	for (;;) {
		struct movement m;

		wait_outage();
		rc = quay_queue_receive(trading, &l, 50 * MS);
		if (rc == -EPIPE)
			break;
		if (rc != 0)
			continue;
		memcpy(&m, quay_msg_body(l.msg), sizeof(m));
		if (m.type != BUY || m.amount_usd < TRADE_MIN_USD)
			__atomic_fetch_add(&wrong_trades, 1, __ATOMIC_RELAXED);
		if (quay_queue_ack(trading, &l) == 0)
			__atomic_fetch_add(&traded[m.id], 1, __ATOMIC_RELAXED);
		quay_msg_unref(l.msg);
	}
	return NULL;
}

/* Notifications: two threads, each serving half of the users' queues. */
static void *
notifier(void *arg)
{
	int first = (int)(uintptr_t)arg, closed = 0;

	while (closed < USERS / 2) {
		closed = 0;
		for (int u = first; u < USERS; u += 2) {
			quay_lease ls[BATCH];
			size_t n = quay_queue_receive_batch(notify[u], ls, BATCH, 2 * MS);

			if (n == 0) { /* timed out, or closed: receive tells which */
				int rc = quay_queue_receive(notify[u], &ls[0], 0);

				if (rc == -EPIPE) {
					closed++;
					continue;
				}
				n = rc == 0;
			}
			for (size_t i = 0; i < n; i++) {
				struct movement m;
				int mine = 0;

				memcpy(&m, quay_msg_body(ls[i].msg), sizeof(m));
				for (int k = 0; k < m.ntrackers; k++)
					mine |= m.trackers[k] == u;
				if (!mine)
					__atomic_fetch_add(&wrong_alerts, 1, __ATOMIC_RELAXED);
				if (quay_queue_ack(notify[u], &ls[i]) == 0) {
					int64_t lat = real_ns() - m.detected_ns, max;

					__atomic_fetch_add(&alerted[u][m.id], 1, __ATOMIC_RELAXED);
					__atomic_fetch_add(&alert_lat_sum, lat, __ATOMIC_RELAXED);
					max = __atomic_load_n(&alert_lat_max, __ATOMIC_RELAXED);
					while (lat > max &&
					    !__atomic_compare_exchange_n(&alert_lat_max, &max, lat, false,
					        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
						;
				}
				quay_msg_unref(ls[i].msg);
			}
		}
	}
	return NULL;
}

static int
open_analysis(const char *dir, uint64_t *restored)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	struct quay_queue_stats s;
	int rc;

	wo.sync_mode = QUAY_WAL_INTERVAL; /* fdatasync every 100 ms: a crash loses at most that */
	if ((rc = quay_wal_open(dir, &wo, &wal)) != 0)
		return rc;
	o.name = "analysis";
	o.wal = wal;
	o.pool = pool;
	o.capacity = 256;
	o.visibility_ns = 10000 * MS;
	o.dedup_window_ns = 60000 * MS; /* the monitor may publish an event again */
	o.dedup_capacity = nev;
	if ((rc = quay_queue_create(&o, &analysis)) != 0)
		return rc;
	quay_queue_stats(analysis, &s);
	*restored = s.restored;
	return 0;
}

static int failures;

static void
check(int ok, const char *what)
{
	if (!ok) {
		printf("FAIL: %s\n", what);
		failures++;
	}
}

int
main(int argc, char **argv)
{
	char dir[] = "/tmp/whale-alerts-XXXXXX";
	uint64_t seed = 42, restored = 0, restored_after = 0;
	int64_t outage_ms = 300, expect_flow[WHALES] = { 0 };
	uint32_t *backlog = NULL, again[2 * BATCH];
	size_t bl_head = 0, bl_len = 0, bl_max = 0, stored = 0, retries = 0, batches = 0;
	uint32_t next = 0;
	int64_t retry_at = 0, backoff = 20 * MS, t0;
	int outage_done = 0, rc = 1;
	pthread_t th[ANALYSTS + 3];
	int nth = 0;

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = strtoull(argv[i] + 7, NULL, 10);
		else if (strncmp(argv[i], "--events=", 9) == 0)
			nev = (uint32_t)strtoul(argv[i] + 9, NULL, 10);
		else if (strncmp(argv[i], "--outage-ms=", 12) == 0)
			outage_ms = strtoll(argv[i] + 12, NULL, 10);
		else if (strcmp(argv[i], "--break=retry") == 0)
			break_retry = 1;
		else if (strcmp(argv[i], "--break=dedup") == 0)
			break_dedup = 1;
		else {
			fprintf(stderr, "usage: %s [--seed=N] [--events=N] [--outage-ms=N]\n", argv[0]);
			return 2;
		}
	}
	if (nev < 100 || nev > 1000000)
		nev = 4000;
	ev = calloc(nev, sizeof(*ev));
	analysed = calloc(nev, sizeof(*analysed));
	traded = calloc(nev, sizeof(*traded));
	backlog = calloc(nev, sizeof(*backlog));
	for (int u = 0; u < USERS; u++)
		alerted[u] = calloc(nev, sizeof(*alerted[u]));
	if (ev == NULL || analysed == NULL || traded == NULL || backlog == NULL || alerted[USERS - 1] == NULL)
		return 1;
	generate(seed);
	printf("whale_alerts: seed %llu, %u movements of %d whales, %d users tracking %d wallets each\n",
	    (unsigned long long)seed, nev, WHALES, USERS, TRACKED);

	if (mkdtemp(dir) == NULL || quay_pool_create((size_t)16 << 20, NULL, &pool) != 0)
		return 1;
	if (open_analysis(dir, &restored) != 0 || quay_bus_create(NULL, &bus) != 0)
		goto out;
	{
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
		struct quay_bind_opts b = QUAY_BIND_OPTS_INIT;
		char filter[USERS][256], name[USERS][32];

		o.dedup_window_ns = 60000 * MS;
		o.dedup_capacity = nev;
		o.name = "trading";
		o.capacity = 64;
		if (quay_queue_create(&o, &trading) != 0)
			goto out;
		o.capacity = 2048;
		for (int u = 0; u < USERS; u++) {
			snprintf(name[u], sizeof(name[u]), "notify.user%d", u);
			o.name = name[u];
			if (quay_queue_create(&o, &notify[u]) != 0)
				goto out;
		}
		if (quay_bus_bind(bus, "whale.#", analysis, NULL, &bindings[0]) != 0)
			goto out;
		b.filter = "movement_type = BUY && amount_usd >= 1000000";
		if (quay_bus_bind(bus, "whale.#", trading, &b, &bindings[1]) != 0)
			goto out;
		for (int u = 0; u < USERS; u++) {
			snprintf(filter[u], sizeof(filter[u]), "whale_address in {%s, %s, %s}",
			    whale_addr[tracks[u][0]], whale_addr[tracks[u][1]], whale_addr[tracks[u][2]]);
			b.filter = filter[u];
			if (quay_bus_bind(bus, "whale.#", notify[u], &b, &bindings[2 + u]) != 0)
				goto out;
		}
	}
	for (uintptr_t i = 0; i < ANALYSTS; i++)
		pthread_create(&th[nth++], NULL, analyst, (void *)i);
	pthread_create(&th[nth++], NULL, trader, NULL);
	pthread_create(&th[nth++], NULL, notifier, (void *)0);
	pthread_create(&th[nth++], NULL, notifier, (void *)1);

	/* The monitor: new movements as they are detected (a batch every
	 * 2 ms), and the local store retried with a backoff. */
	t0 = mono_ns();
	while (next < nev || bl_len > 0) {
		uint32_t ids[BATCH];
		size_t k = 0, n;

		if (!outage_done && next >= nev / 4) {
			__atomic_store_n(&outage_until, mono_ns() + outage_ms * MS, __ATOMIC_RELEASE);
			printf("outage: analysis and trading stop for %lld ms after movement %u\n",
			    (long long)outage_ms, next);
			outage_done = 1;
		}
		if (bl_len > 0 && mono_ns() >= retry_at) {
			while (k < BATCH && bl_len > 0) {
				ids[k++] = backlog[bl_head];
				bl_head = (bl_head + 1) % nev;
				bl_len--;
			}
			retries++;
		} else if (next < nev) {
			while (k < BATCH && next < nev)
				ids[k++] = next++;
			sleep_ns(2 * MS);
		} else {
			sleep_ns(MS);
			continue;
		}
		batches++;
		n = publish(ids, k, again);
		stored += n;
		if (break_retry)
			n = 0; /* broken on purpose: a monitor without its local store drops them */
		for (size_t i = 0; i < n; i++)
			backlog[(bl_head + bl_len++) % nev] = again[i];
		if (bl_len > bl_max)
			bl_max = bl_len;
		if (n > 0) {
			retry_at = mono_ns() + backoff;
			backoff = backoff * 2 > 200 * MS ? 200 * MS : backoff * 2;
		} else {
			backoff = 20 * MS;
		}
	}
	printf("monitor: %u movements published in %zu batches of up to %d in %.2f s; %zu refused, %s "
	       "(%zu retry batches, largest local store %zu)\n",
	    nev, batches, BATCH, (double)(mono_ns() - t0) / 1e9, stored,
	    break_retry ? "DROPPED (--break=retry)" : "stored locally and published again", retries, bl_max);

	/* Drain: every queue empty, then shut the services down. */
	for (int64_t end = mono_ns() + 30000 * MS; mono_ns() < end;) {
		int busy = held(analysis) != 0 || held(trading) != 0;

		for (int u = 0; u < USERS; u++)
			busy |= held(notify[u]) != 0;
		if (!busy)
			break;
		sleep_ns(5 * MS);
	}
	quay_queue_close(analysis);
	quay_queue_close(trading);
	for (int u = 0; u < USERS; u++)
		quay_queue_close(notify[u]);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	rc = 0;

	/* The promises. */
	{
		uint32_t once = 0, alerts = 0, want_alerts = 0, trades = 0, want_trades = 0;
		int alerts_ok = 1, trades_ok = 1, flow_ok = 1;

		for (uint32_t i = 0; i < nev; i++) {
			const struct movement *e = &ev[i];
			int want_trade = e->type == BUY && e->amount_usd >= TRADE_MIN_USD;

			once += analysed[i] == 1;
			expect_flow[e->whale] +=
			    e->type == BUY ? (int64_t)e->amount_usd : -(int64_t)e->amount_usd;
			for (int u = 0; u < USERS; u++) {
				int want = 0;

				for (int k = 0; k < e->ntrackers; k++)
					want |= e->trackers[k] == u;
				alerts += alerted[u][i];
				want_alerts += want;
				alerts_ok &= alerted[u][i] == want;
			}
			trades += traded[i];
			want_trades += want_trade;
			trades_ok &= traded[i] == want_trade;
		}
		for (int w = 0; w < WHALES; w++)
			flow_ok &= netflow[w] == expect_flow[w];
		printf("analysis (durable, %d competing workers: %u / %u / %u): %u of %u movements analysed "
		       "exactly once, net flow per whale %s\n",
		    ANALYSTS, per_analyst[0], per_analyst[1], per_analyst[2], once, nev,
		    flow_ok ? "adds up" : "WRONG");
		printf(
		    "notifications: %u alerts to %d users (%u expected), %u for a wallet the user does not track; "
		    "detection to alert %.2f ms on average, %.1f ms at most\n",
		    alerts, USERS, want_alerts, wrong_alerts,
		    alerts ? (double)alert_lat_sum / alerts / 1e6 : 0.0, (double)alert_lat_max / 1e6);
		printf("trading: %u BUY movements of $%d or more taken (%u expected), %u others\n", trades,
		    TRADE_MIN_USD, want_trades, wrong_trades);
		check(once == nev && flow_ok, "every movement analysed exactly once");
		check(alerts_ok && wrong_alerts == 0,
		    "each user alerted exactly once per movement of a tracked wallet");
		check(trades_ok && wrong_trades == 0,
		    "the trading service took exactly the BUY events above the threshold");
		check(stored > 0, "the outage made targets refuse events (the degradation was exercised)");
	}

	/* Restart the analysis service: its queue comes back from the WAL. */
	for (size_t i = 0; i < sizeof(bindings) / sizeof(bindings[0]); i++)
		quay_bus_unbind(bindings[i]);
	memset(bindings, 0, sizeof(bindings));
	quay_queue_destroy(analysis);
	analysis = NULL;
	quay_wal_close(wal);
	wal = NULL;
	if (open_analysis(dir, &restored_after) != 0)
		check(0, "the analysis queue reopens from its WAL");
	printf(
	    "restart: the analysis queue reopened from its WAL with %llu messages (%llu at the first start)\n",
	    (unsigned long long)restored_after, (unsigned long long)restored);
	check(restored_after == 0, "nothing acked comes back after a restart");
out:
	for (size_t i = 0; i < sizeof(bindings) / sizeof(bindings[0]); i++)
		if (bindings[i] != NULL)
			quay_bus_unbind(bindings[i]);
	quay_bus_destroy(bus);
	quay_queue_destroy(analysis);
	quay_queue_destroy(trading);
	for (int u = 0; u < USERS; u++)
		quay_queue_destroy(notify[u]);
	quay_wal_close(wal);
	remove_dir(dir);
	if (quay_pool_destroy(pool) != 0)
		check(0, "every message given back to the pool");
	free(ev);
	free(analysed);
	free(traded);
	free(backlog);
	for (int u = 0; u < USERS; u++)
		free(alerted[u]);
	if (rc != 0)
		printf("FAIL: setup\n");
	printf("%s\n", rc == 0 && failures == 0 ? "whale_alerts: OK" : "whale_alerts: FAILED");
	return rc == 0 && failures == 0 ? 0 : 1;
}
