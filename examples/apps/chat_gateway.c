/* SPDX-License-Identifier: MIT */
/*
 * chat_gateway: a messaging gateway on three durable queues, each with
 * its dead-letter queue, worker pools with long polling, random failures,
 * priorities, a graceful shutdown on SIGTERM and the HTTP endpoint
 * (examples/apps/README.md).
 *
 *   chat_gateway [--seed=N] [--messages=N] [--run-ms=N] [--wait-signal]
 *
 * Clients send chat messages to "incoming". Two incoming workers parse
 * each one and send it on to "outgoing" (priority 0 low, 1 normal, 2
 * urgent) and to "analytics"; three outgoing workers deliver it to the
 * recipient's provider, one analytics worker records it. Every stage
 * fails at random (a seeded hash of the message id and the attempt) and
 * a few messages always fail: after 3 attempts they go to the stage's
 * DLQ. The provider is slow twice (a backlog builds: urgent messages go
 * first). The queues live on one write-ahead log.
 *
 * After --run-ms the program sends itself SIGTERM, as an orchestrator
 * would (--wait-signal: wait for a real one). Shutdown: the clients stop,
 * the incoming workers drain "incoming" and stop, the other workers get
 * a short grace period, then their queues are closed: each worker
 * finishes the message in its hand and releases the rest of its batch.
 * Then the gateway "restarts": the queues are reopened from the log and
 * the workers drain what was left.
 *
 * While it runs, the HTTP endpoint (quay/http.h) serves /metrics,
 * /health and /dashboard on a port the kernel picks; the program fetches
 * them itself and checks them against the queues.
 *
 * Promises (exit 1 if one is broken): every message the gateway accepted
 * was parsed once and delivered once and recorded once, or is in the DLQ
 * of the stage that failed it after exactly 3 attempts; nothing is in
 * flight or lost at shutdown (what was left comes back after the
 * restart); urgent messages wait less than low ones in a backlog;
 * /metrics agrees with the queues' counters, /health reports the
 * non-empty DLQ, /dashboard is served.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <quay/http.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/wal.h>

#include "app_util.h"

#define MS ((int64_t)1000000)
#define STAGES 3
#define BATCH_MAX 16

enum { IN = 0, OUT = 1, AN = 2 };

struct chat {
	uint32_t id;
	uint16_t room, user;
	uint8_t prio;    /* 0 low, 1 normal, 2 urgent */
	uint8_t backlog; /* sent during the first slow spell (the priority check) */
	uint8_t pad[6];
	int64_t created_ns; /* CLOCK_REALTIME, when the client sent it */
	char text[40];
};

static const char *const qname[STAGES] = { "incoming", "outgoing", "analytics" };
static const char *const dlqname[STAGES] = { "incoming.dlq", "outgoing.dlq", "analytics.dlq" };
static const int workers_per[STAGES] = { 2, 3, 1 };
static const int batch_per[STAGES] = { 4, 4, 16 };
static const int fail_pct[STAGES] = { 5, 10, 5 };
static const unsigned poison_mod[STAGES] = { 211, 97, 151 }; /* id % mod == 3: always fails */

static uint64_t seed = 7;
static uint32_t nmsg = 6000;
static int break_dlq;      /* --break=dlq: outgoing without its DLQ */
static int break_priority; /* --break=priority: outgoing with one level */
static int break_release;  /* --break=release: workers told to stop walk away from their batch */

static quay_pool *pool;
static quay_wal *wal;
static quay_queue *q[STAGES], *dlq[STAGES];

/* Per message id: what happened (atomic increments). */
static uint8_t *accepted, *parsed, *delivered, *recorded;
/* Flags: main stores (release), workers load (acquire). */
static int stop_clients, stop_stage[STAGES], slow_provider; /* 1, 2: which slow spell */
static uint64_t released, nacks[STAGES];
/* Priority check: wait of the first-attempt deliveries of the messages
 * sent during the first slow spell (a backlog of every priority). */
static int64_t slow_wait_sum[3];
static uint32_t slow_wait_n[3];

/* Whether stage s fails message id on this attempt: the same every run
 * with the same seed, whichever worker gets it. */
static int
fails(int s, uint32_t id, uint32_t attempt)
{
	if (id % poison_mod[s] == 3)
		return 1;
	return mix(seed ^ ((uint64_t)s << 56) ^ ((uint64_t)id << 8) ^ attempt) % 100 < (uint64_t)fail_pct[s];
}

static int
flag(int *f)
{
	return __atomic_load_n(f, __ATOMIC_ACQUIRE);
}

static void
set_flag(int *f, int v)
{
	__atomic_store_n(f, v, __ATOMIC_RELEASE);
}

/* Send a copy of c to stage s, with a dedup id: a retried parse sends
 * it again, and the queue takes the second one as a duplicate. */
static int
forward(int s, const struct chat *c)
{
	char dedup[24];
	quay_msg *m;
	int rc;

	if ((rc = quay_msg_new(pool, c, sizeof(*c), &m)) != 0)
		return rc;
	snprintf(dedup, sizeof(dedup), "%s-%u", s == OUT ? "out" : "an", c->id);
	quay_msg_set_header_str(m, QUAY_MSG_H_DEDUP_ID, dedup);
	if (s == OUT && !break_priority)
		quay_msg_set_priority(m, c->prio);
	rc = quay_queue_send(q[s], m);
	if (rc < 0)
		quay_msg_unref(m);
	return rc < 0 ? rc : 0;
}

static void
handle(int s, const quay_lease *l)
{
	struct chat c;

	memcpy(&c, quay_msg_body(l->msg), sizeof(c));
	if (s == OUT)
		sleep_ns(flag(&slow_provider) ? 4 * MS : MS / 5); /* the provider's API call */
	if (fails(s, c.id, l->attempt)) {
		quay_queue_nack(q[s], l, s == IN ? "malformed" : s == OUT ? "provider 503" : "store timeout");
		__atomic_fetch_add(&nacks[s], 1, __ATOMIC_RELAXED);
		return;
	}
	if (s == IN && (forward(OUT, &c) != 0 || forward(AN, &c) != 0)) {
		quay_queue_nack(q[s], l, "downstream full");
		return;
	}
	if (quay_queue_ack(q[s], l) != 0)
		return; /* the lease ended: it comes back, and the dedup ids absorb the repeat */
	if (s == IN) {
		__atomic_fetch_add(&parsed[c.id], 1, __ATOMIC_RELAXED);
	} else if (s == OUT) {
		__atomic_fetch_add(&delivered[c.id], 1, __ATOMIC_RELAXED);
		if (l->attempt == 1 && c.backlog) {
			__atomic_fetch_add(&slow_wait_sum[c.prio], real_ns() - c.created_ns,
			    __ATOMIC_RELAXED);
			__atomic_fetch_add(&slow_wait_n[c.prio], 1, __ATOMIC_RELAXED);
		}
	} else {
		__atomic_fetch_add(&recorded[c.id], 1, __ATOMIC_RELAXED);
	}
}

/* A worker of stage s: long polls, takes a batch, and once told to stop
 * finishes the message in hand and releases the rest. */
static void *
worker(void *arg)
{
	int s = (int)(uintptr_t)arg;
	quay_lease ls[BATCH_MAX];

	for (;;) {
		size_t n = quay_queue_receive_batch(q[s], ls, (size_t)batch_per[s], 200 * MS);

		if (n == 0) { /* 0: timed out or closed; a plain receive tells which */
			int rc = quay_queue_receive(q[s], &ls[0], 0);

			if (rc == -EPIPE)
				break;
			if (rc != 0)
				continue;
			n = 1;
		}
		for (size_t i = 0; i < n; i++) {
			if (i > 0 && flag(&stop_stage[s]) && break_release) {
				/* broken on purpose: the leases stay out */
			} else if (i > 0 && flag(&stop_stage[s])) {
				quay_queue_release(q[s], &ls[i]);
				__atomic_fetch_add(&released, 1, __ATOMIC_RELAXED);
			} else {
				handle(s, &ls[i]);
			}
			quay_msg_unref(ls[i].msg);
		}
	}
	return NULL;
}

static void *
client(void *arg)
{
	uint64_t r = seed;

	(void)arg;
	for (uint32_t id = 0; id < nmsg && !flag(&stop_clients); id++) {
		struct chat c = { 0 };
		quay_msg *m;
		int rc;

		r = mix(r + id);
		c.id = id;
		c.room = (uint16_t)(r % 50);
		c.user = (uint16_t)(r >> 16) % 1000;
		c.prio = (uint8_t)(r % 10 == 0 ? 2 : r % 10 < 4 ? 0 : 1);
		snprintf(c.text, sizeof(c.text), "hello room %u from %u", c.room, c.user);
		c.created_ns = real_ns();
		c.backlog = flag(&slow_provider) == 1;
		if (quay_msg_new(pool, &c, sizeof(c), &m) != 0)
			break;
		while ((rc = quay_queue_send(q[IN], m)) == -EAGAIN && !flag(&stop_clients))
			sleep_ns(MS); /* backpressure: the gateway is full */
		if (rc != 0) {
			quay_msg_unref(m);
			break;
		}
		accepted[id] = 1;
		if (id % 2 == 1)
			sleep_ns(MS); /* about 2,000 messages a second */
	}
	return NULL;
}

static int
open_queues(const char *dir)
{
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	int rc;

	wo.sync_mode = QUAY_WAL_INTERVAL;
	if ((rc = quay_wal_open(dir, &wo, &wal)) != 0)
		return rc;
	for (int s = 0; s < STAGES; s++) {
		struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;

		o.wal = wal;
		o.pool = pool;
		o.capacity = 8192;
		o.name = dlqname[s];
		if ((rc = quay_queue_create(&o, &dlq[s])) != 0)
			return rc;
		o.name = qname[s];
		o.dlq = s == OUT && break_dlq ? NULL : dlq[s];
		o.max_attempts = 3;
		o.visibility_ns = 5000 * MS;
		o.backoff_base_ns = 5 * MS;
		o.backoff_max_ns = 40 * MS;
		o.jitter_seed = seed;
		o.levels = s == OUT && !break_priority ? 3 : 1;
		if (s != IN) {
			o.dedup_window_ns = 600000 * MS;
			o.dedup_capacity = nmsg;
		}
		if ((rc = quay_queue_create(&o, &q[s])) != 0)
			return rc;
	}
	return 0;
}

static void
close_queues(void)
{
	for (int s = 0; s < STAGES; s++) {
		quay_queue_destroy(q[s]);
		quay_queue_destroy(dlq[s]);
		q[s] = dlq[s] = NULL;
	}
	quay_wal_close(wal);
	wal = NULL;
}

/* Wait until queue s holds nothing, or until deadline (monotonic ns). */
static void
drain(int s, int64_t deadline)
{
	while (held(q[s]) > 0 && mono_ns() < deadline)
		sleep_ns(2 * MS);
}

static void
stop_stage_workers(int s, pthread_t *th)
{
	set_flag(&stop_stage[s], 1);
	quay_queue_close(q[s]); /* wakes the long polls */
	for (int i = 0; i < workers_per[s]; i++)
		pthread_join(th[i], NULL);
}

static void
start_stage_workers(int s, pthread_t *th)
{
	set_flag(&stop_stage[s], 0);
	for (int i = 0; i < workers_per[s]; i++)
		pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)s);
}

/* ---- a tiny HTTP client, to check the endpoint from inside ---- */

static int
http_get(uint16_t port, const char *path, int *status, char **body)
{
	struct sockaddr_in a = { 0 };
	char req[256], *buf = NULL, *p;
	size_t len = 0, cap = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t r;

	if (fd < 0)
		return -errno;
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -ECONNREFUSED;
	}
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -EIO;
	}
	do {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap = cap * 2 + 8192);

			if (nb == NULL) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r > 0)
			len += (size_t)r;
	} while (r > 0);
	close(fd);
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.%*d %d", status) != 1 || (p = strstr(buf, "\r\n\r\n")) == NULL) {
		free(buf);
		return -EPROTO;
	}
	memmove(buf, p + 4, len - (size_t)(p + 4 - buf) + 1);
	*body = buf;
	return 0;
}

/* The value of a Prometheus series whose name is `name` and whose labels
 * include queue="<queue>"; -1 if absent. */
static double
metric(const char *text, const char *name, const char *queue)
{
	char lab[128];
	size_t nl = strlen(name);

	snprintf(lab, sizeof(lab), "queue=\"%s\"", queue);
	for (const char *l = text; l != NULL && *l != '\0'; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *end = strchr(l, '\n'), *sp, *lb;

		if (end == NULL)
			end = l + strlen(l);
		if (strncmp(l, name, nl) != 0 || l[nl] != '{')
			continue;
		lb = strstr(l, lab);
		if (lb == NULL || lb > end)
			continue;
		for (sp = end; sp > l && sp[-1] != ' '; sp--)
			;
		return strtod(sp, NULL);
	}
	return -1;
}

/* The alarms array of queue `name` in a /health document. */
static int
health_has(const char *doc, const char *name, const char *alarm)
{
	char key[64];
	const char *p, *e;

	snprintf(key, sizeof(key), "{\"name\":\"%s\"", name);
	if ((p = strstr(doc, key)) == NULL || (e = strchr(p, '}')) == NULL)
		return 0;
	p = strstr(p, alarm);
	return p != NULL && p < e;
}

static int failures;

static void
check(int ok, const char *what)
{
	printf("  [%s] %s\n", ok ? "ok" : "FAIL", what);
	failures += !ok;
}

struct dlq_seen {
	uint8_t *in;
	int bad; /* a dead letter without max-attempts and 3 attempts */
};

static int
visit_dlq(void *ctx, const quay_msg *m, quay_queue_state st)
{
	struct dlq_seen *d = ctx;
	struct chat c;
	char reason[32] = "", att[16] = "";

	(void)st;
	memcpy(&c, quay_msg_body(m), sizeof(c));
	d->in[c.id]++;
	quay_msg_get_header_str(m, QUAY_MSG_H_DLQ_REASON, reason, sizeof(reason));
	quay_msg_get_header_str(m, QUAY_QUEUE_H_DLQ_ATTEMPTS, att, sizeof(att));
	d->bad |= strcmp(reason, "max-attempts") != 0 || strcmp(att, "3") != 0;
	return 0;
}

int
main(int argc, char **argv)
{
	char dir[] = "/tmp/chat-gateway-XXXXXX";
	int64_t run_ms = 1600, t0;
	int wait_signal = 0, setup = 1, sig;
	pthread_t cl, th[STAGES][4];
	sigset_t set;
	struct timespec ts;
	quay_http *http = NULL;
	struct quay_http_opts ho = QUAY_HTTP_OPTS_INIT;
	uint16_t port;
	char *health_mid = NULL, *metrics_end = NULL, *health_end = NULL, *dash = NULL;
	int st_health_mid = 0, st_metrics = 0, st_health = 0, st_dash = 0;
	struct quay_queue_stats end1[STAGES];
	uint64_t left[STAGES] = { 0 }, restored[STAGES] = { 0 };
	struct dlq_seen seen[STAGES] = { { NULL, 0 } };

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = strtoull(argv[i] + 7, NULL, 10);
		else if (strncmp(argv[i], "--messages=", 11) == 0)
			nmsg = (uint32_t)strtoul(argv[i] + 11, NULL, 10);
		else if (strncmp(argv[i], "--run-ms=", 9) == 0)
			run_ms = strtoll(argv[i] + 9, NULL, 10);
		else if (strcmp(argv[i], "--wait-signal") == 0)
			wait_signal = 1;
		else if (strcmp(argv[i], "--break=dlq") == 0)
			break_dlq = 1;
		else if (strcmp(argv[i], "--break=priority") == 0)
			break_priority = 1;
		else if (strcmp(argv[i], "--break=release") == 0)
			break_release = 1;
		else {
			fprintf(stderr, "usage: %s [--seed=N] [--messages=N] [--run-ms=N] [--wait-signal]\n",
			    argv[0]);
			return 2;
		}
	}
	if (nmsg < 100 || nmsg > 1000000)
		nmsg = 6000;
	accepted = calloc(nmsg, 1);
	parsed = calloc(nmsg, 1);
	delivered = calloc(nmsg, 1);
	recorded = calloc(nmsg, 1);
	for (int s = 0; s < STAGES; s++)
		seen[s].in = calloc(nmsg, 1);
	if (accepted == NULL || parsed == NULL || delivered == NULL || recorded == NULL || seen[2].in == NULL)
		return 1;

	/* SIGTERM and SIGINT are taken by main alone (sigtimedwait): block
	 * them before any thread starts, so every thread inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (mkdtemp(dir) == NULL || quay_pool_create((size_t)32 << 20, NULL, &pool) != 0)
		return 1;
	if (open_queues(dir) != 0 || quay_http_start(&ho, &http) != 0)
		goto out;
	for (int s = 0; s < STAGES; s++)
		if (quay_http_add_queue(http, q[s]) != 0 || quay_http_add_queue(http, dlq[s]) != 0)
			goto out;
	port = quay_http_port(http);
	printf("chat_gateway: seed %llu, up to %u messages; http://127.0.0.1:%u/dashboard; pid %d\n",
	    (unsigned long long)seed, nmsg, port, (int)getpid());

	t0 = mono_ns();
	for (int s = 0; s < STAGES; s++)
		start_stage_workers(s, th[s]);
	pthread_create(&cl, NULL, client, NULL);

	/* Run until SIGTERM; the provider is slow over 300..700 ms and from
	 * 1300 ms on; /health is fetched once mid-run. */
	for (;;) {
		int64_t el = (mono_ns() - t0) / MS, step = 20;

		set_flag(&slow_provider, el >= 300 && el < 700 ? 1 : el >= 1300 ? 2 : 0);
		if (el >= 1000 && health_mid == NULL &&
		    http_get(port, "/health", &st_health_mid, &health_mid) != 0)
			health_mid = strdup("");
		if (!wait_signal && el >= run_ms) {
			printf("t=%lld ms: sending SIGTERM to ourselves, as an orchestrator would\n",
			    (long long)el);
			kill(getpid(), SIGTERM);
		}
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(step * MS);
		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			break;
	}
	printf("t=%lld ms: %s: shutting down\n", (long long)((mono_ns() - t0) / MS), strsignal(sig));

	/* Graceful shutdown: no new messages; incoming drained (1 s at most),
	 * then the other stages get 100 ms more before their queues close. */
	set_flag(&stop_clients, 1);
	pthread_join(cl, NULL);
	drain(IN, mono_ns() + 1000 * MS);
	stop_stage_workers(IN, th[IN]);
	drain(OUT, mono_ns() + 100 * MS);
	drain(AN, mono_ns() + 100 * MS);
	stop_stage_workers(OUT, th[OUT]);
	stop_stage_workers(AN, th[AN]);
	set_flag(&slow_provider, 0);
	for (int s = 0; s < STAGES; s++) {
		quay_queue_stats(q[s], &end1[s]);
		left[s] = end1[s].ready + end1[s].delayed;
	}
	if (http_get(port, "/metrics", &st_metrics, &metrics_end) != 0)
		metrics_end = strdup("");
	if (http_get(port, "/health", &st_health, &health_end) != 0)
		health_end = strdup("");
	if (http_get(port, "/dashboard", &st_dash, &dash) != 0)
		dash = strdup("");
	quay_http_stop(http); /* before the queues it serves go */
	http = NULL;
	printf(
	    "stopped at t=%lld ms: %llu leases released by workers told to stop; in flight %llu / %llu / %llu; "
	    "left in the queues for the next start: %llu / %llu / %llu\n",
	    (long long)((mono_ns() - t0) / MS), (unsigned long long)released,
	    (unsigned long long)end1[IN].in_flight, (unsigned long long)end1[OUT].in_flight,
	    (unsigned long long)end1[AN].in_flight, (unsigned long long)left[IN],
	    (unsigned long long)left[OUT], (unsigned long long)left[AN]);

	/* The restart: the queues come back from the log; drain them. */
	close_queues();
	if (open_queues(dir) != 0)
		goto out;
	for (int s = 0; s < STAGES; s++) {
		struct quay_queue_stats st;

		quay_queue_stats(q[s], &st);
		restored[s] = st.restored;
		start_stage_workers(s, th[s]);
	}
	printf("restart: restored %llu / %llu / %llu messages from the log; draining them\n",
	    (unsigned long long)restored[IN], (unsigned long long)restored[OUT],
	    (unsigned long long)restored[AN]);
	drain(IN, mono_ns() + 5000 * MS);
	stop_stage_workers(IN, th[IN]);
	drain(OUT, mono_ns() + 5000 * MS);
	drain(AN, mono_ns() + 5000 * MS);
	stop_stage_workers(OUT, th[OUT]);
	stop_stage_workers(AN, th[AN]);
	setup = 0;

	/* Accounting, per message. */
	for (int s = 0; s < STAGES; s++)
		quay_queue_browse(dlq[s], visit_dlq, &seen[s]);
	{
		uint32_t nacc = 0, ok_in = 0, ok_out = 0, ok_an = 0, dl[STAGES] = { 0 },
		         ndone[STAGES] = { 0 };
		int64_t leftover = 0;
		char name[160];

		for (uint32_t i = 0; i < nmsg; i++) {
			if (!accepted[i])
				continue;
			nacc++;
			ok_in += parsed[i] + seen[IN].in[i] == 1;
			ok_out += parsed[i] ? delivered[i] + seen[OUT].in[i] == 1 :
			                      delivered[i] + seen[OUT].in[i] == 0;
			ok_an +=
			    parsed[i] ? recorded[i] + seen[AN].in[i] == 1 : recorded[i] + seen[AN].in[i] == 0;
			ndone[IN] += parsed[i];
			ndone[OUT] += delivered[i];
			ndone[AN] += recorded[i];
			for (int s = 0; s < STAGES; s++)
				dl[s] += seen[s].in[i];
		}
		for (int s = 0; s < STAGES; s++)
			leftover += (int64_t)held(q[s]);
		for (int s = 0; s < STAGES; s++)
			printf("%-9s workers %d, batches of %d: %u done, %llu nacked, %u dead-lettered\n",
			    qname[s], workers_per[s], batch_per[s], ndone[s], (unsigned long long)nacks[s],
			    dl[s]);
		printf(
		    "priorities, messages sent while the provider was slow (300-700 ms), mean wait: urgent %.1f ms (%u), normal %.1f ms (%u), low "
		    "%.1f ms (%u)\n",
		    slow_wait_n[2] ? (double)slow_wait_sum[2] / slow_wait_n[2] / 1e6 : 0.0, slow_wait_n[2],
		    slow_wait_n[1] ? (double)slow_wait_sum[1] / slow_wait_n[1] / 1e6 : 0.0, slow_wait_n[1],
		    slow_wait_n[0] ? (double)slow_wait_sum[0] / slow_wait_n[0] / 1e6 : 0.0, slow_wait_n[0]);
		printf("checks (%u messages accepted before SIGTERM):\n", nacc);
		snprintf(name, sizeof(name), "every message parsed once or in incoming.dlq (%u of %u)", ok_in,
		    nacc);
		check(ok_in == nacc, name);
		snprintf(name, sizeof(name),
		    "every parsed message delivered once or in outgoing.dlq (%u of %u)", ok_out, nacc);
		check(ok_out == nacc, name);
		snprintf(name, sizeof(name),
		    "every parsed message recorded once or in analytics.dlq (%u of %u)", ok_an, nacc);
		check(ok_an == nacc, name);
		check(!seen[IN].bad && !seen[OUT].bad && !seen[AN].bad && dl[OUT] > 0,
		    "dead letters arrived after exactly 3 attempts (reason max-attempts)");
		check(end1[IN].in_flight + end1[OUT].in_flight + end1[AN].in_flight == 0,
		    "no lease outstanding after the graceful shutdown");
		check(restored[IN] == left[IN] && restored[OUT] == left[OUT] && restored[AN] == left[AN] &&
		        leftover == 0,
		    "what was left at shutdown came back after the restart and was drained");
		check(slow_wait_n[2] > 0 && slow_wait_n[0] > 0 &&
		        2.0 * (double)slow_wait_sum[2] / slow_wait_n[2] <
		            (double)slow_wait_sum[0] / slow_wait_n[0],
		    "urgent messages waited less than half as long as low ones in the backlog");
		check(st_health_mid == 200 && strstr(health_mid, "\"name\":\"incoming\"") != NULL,
		    "/health served mid-run (200, every queue listed)");
		{
			int agree = st_metrics == 200;

			for (int s = 0; s < STAGES; s++)
				agree &= metric(metrics_end, "quay_queue_acked_total", qname[s]) ==
				        (double)end1[s].acked &&
				    metric(metrics_end, "quay_queue_sent_total", qname[s]) ==
				        (double)end1[s].sent;
			check(agree, "/metrics: sent and acked of each queue equal quay_queue_stats()");
		}
		check(st_health == 200 &&
		        (held(dlq[OUT]) == 0 || health_has(health_end, "outgoing", "dlq_not_empty")),
		    "/health reports outgoing's non-empty DLQ (dlq_not_empty)");
		check(st_dash == 200 && strstr(dash, "<html") != NULL,
		    "/dashboard served (200, an HTML page)");
	}
out:
	quay_http_stop(http);
	close_queues();
	remove_dir(dir);
	if (quay_pool_destroy(pool) != 0)
		check(0, "every message given back to the pool");
	free(health_mid);
	free(metrics_end);
	free(health_end);
	free(dash);
	free(accepted);
	free(parsed);
	free(delivered);
	free(recorded);
	for (int s = 0; s < STAGES; s++)
		free(seen[s].in);
	if (setup)
		printf("FAIL: setup\n");
	printf("%s\n", !setup && failures == 0 ? "chat_gateway: OK" : "chat_gateway: FAILED");
	return !setup && failures == 0 ? 0 : 1;
}
