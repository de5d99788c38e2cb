/* SPDX-License-Identifier: MIT */
/*
 * trading_layer: the messaging layer of a small trading system, on quay.
 *
 * Routing (bus bindings into durable work queues on one WAL):
 *   direct   orders.new              -> order-requests
 *   topic    orders.response.*       -> order-responses   (one per desk)
 *            book.*.request          -> book-requests     (one per symbol)
 *            book.*.response         -> book-responses
 *   fanout   trade.#                 -> trade-events and trade-audit (both
 *                                       get every trade)
 * Services:
 *   client        publishes 60 orders, reads the responses at the end
 *   order service takes an order, asks the book service for a fill (RPC:
 *                 correlation id = the request's id, reply-to
 *                 book.order-svc.response, a timeout per order), then
 *                 publishes the trade and the response and acks the order
 *   book service  answers at the symbol's reference price; nacks the first
 *                 delivery of every 5th request ("busy": it comes back);
 *                 "SLOW" orders take 300 ms, past their 100 ms timeout
 *   settlement    consumes trade-events; before the restart it takes 3
 *                 trades and dies without acking them
 * Halfway the whole order side restarts (queues, bus, WAL closed and
 * reopened): what was queued, and the 3 unacked trades, come back.
 *
 * --nats URL: the same program as two processes, the book service in a
 * child with its own bus and WAL, the request and reply crossing
 * nats-server; only the setup (open_side) differs. Exits 1 if any check
 * fails; --break=<route|rpc|ack> breaks one on purpose. --seed=N changes
 * the orders' symbols, sides and sizes (default 2026).
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <quay/quay.h>
#ifdef APP_HAVE_NATS
#include <quay/nats.h>
#endif

#define NORDERS 60
#define MS ((int64_t)1000000)

enum { ORDER_SIDE = 1, BOOK_SIDE = 2 };
enum { Q_ORDER_REQ, Q_ORDER_RESP, Q_BOOK_REQ, Q_BOOK_RESP, Q_TRADES, Q_AUDIT, NQ };
static const struct {
	const char *name, *pattern;
	int side;
} queues[NQ] = {
	{ "order-requests", "orders.new", ORDER_SIDE },         /* direct */
	{ "order-responses", "orders.response.*", ORDER_SIDE }, /* topic */
	{ "book-requests", "book.*.request", BOOK_SIDE },       /* topic */
	{ "book-responses", "book.*.response", ORDER_SIDE },
	{ "trade-events", "trade.#", ORDER_SIDE }, /* fanout: */
	{ "trade-audit", "trade.#", ORDER_SIDE },  /* both get every trade */
};
static const char *syms[] = { "AAPL", "MSFT", "NVDA", "SLOW" };
static const int ref_px[] = { 187, 402, 950, 10 };

static const char *broken = "", *nats_url;
static uint32_t seed = 2026; /* --seed=N: symbols, sides and sizes of the orders */
static int failures;
static char basedir[] = "/tmp/quay-trading-XXXXXX";

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) { \
			failures++; \
			printf("FAIL  "); \
			printf(__VA_ARGS__); \
			printf("\n"); \
		} \
	} while (0)

/* One process's share of the system. */
struct side {
	int role;
	quay_pool *pool;
	quay_wal *wal;
	quay_bus *bus;
	quay_queue *q[NQ], *unroutable;
	quay_binding *b[NQ];
#ifdef APP_HAVE_NATS
	quay_nats *nats;
#endif
	pthread_t book; /* in-process: the book service's thread */
	int stop;
};

struct order {
	int ord, qty, px;
	char sym[8], side[8];
};

static int
parse(const quay_msg *m, struct order *o)
{
	char buf[128];
	size_t n = quay_msg_body_len(m) < sizeof(buf) - 1 ? quay_msg_body_len(m) : sizeof(buf) - 1;

	memcpy(buf, quay_msg_body(m), n);
	buf[n] = '\0';
	memset(o, 0, sizeof(*o));
	return sscanf(buf, "ord=%d sym=%7s side=%7s qty=%d px=%d", &o->ord, o->sym, o->side, &o->qty,
	           &o->px) >= 4 ?
	    0 :
	    -1;
}

static quay_msg *
msg(quay_pool *pool, const struct order *o, const char *status)
{
	char body[128];
	quay_msg *m;
	int n = snprintf(body, sizeof(body), "ord=%d sym=%s side=%s qty=%d px=%d %s", o->ord, o->sym, o->side,
	    o->qty, o->px, status);

	if (quay_msg_new_wait(pool, body, (size_t)n, 1000 * MS, &m) != 0) {
		fprintf(stderr, "pool exhausted\n");
		exit(2);
	}
	return m;
}

static int
sym_index(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, syms[i]) == 0)
			return i;
	return -1;
}

/* ---- the book service ------------------------------------------------ */

static volatile sig_atomic_t book_sigterm;
static int book_served, book_nacked;

static void
book_serve(struct side *s, const quay_lease *l)
{
	quay_queue *q = s->q[Q_BOOK_REQ];
	struct order o;

	if (parse(l->msg, &o) != 0 || sym_index(o.sym) < 0) {
		quay_queue_nack(q, l, "malformed");
		return;
	}
	if (l->attempt == 1 && o.ord % 5 == 0) { /* busy: not now (comes back after backoff) */
		quay_queue_nack(q, l, "book busy");
		book_nacked++;
		return;
	}
	if (strcmp(o.sym, "SLOW") == 0)
		usleep(300000);
	o.px = ref_px[sym_index(o.sym)];
	quay_msg *rep = msg(s->pool, &o, "FILL");
	if (quay_bus_reply(s->bus, l->msg, rep) < 0) /* sets the correlation id, publishes on reply-to */
		quay_msg_unref(rep);
	quay_queue_ack(q, l);
	book_served++;
}

static void
book_loop(struct side *s)
{
	quay_lease l;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) && !book_sigterm) { /* pairs with close_side */
		if (quay_queue_receive(s->q[Q_BOOK_REQ], &l, 50 * MS) != 0)
			continue;
		book_serve(s, &l);
		quay_msg_unref(l.msg);
	}
}

static void *
book_thread(void *arg)
{
	book_loop(arg);
	return NULL;
}

/* ---- setup: the only part that knows about processes and NATS --------- */

static void
open_side(struct side *s, int role)
{
	struct quay_queue_opts qo = QUAY_QUEUE_OPTS_INIT;
	struct quay_bus_opts bo = QUAY_BUS_OPTS_INIT;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
	char dir[64];

	memset(s, 0, sizeof(*s));
	s->role = role;
	po.flags = QUAY_POOL_NO_CACHE; /* NATS imports into it from libnats's threads */
	snprintf(dir, sizeof(dir), "%s/%s", basedir, role == BOOK_SIDE ? "book" : "order");
	wo.sync_mode = QUAY_WAL_INTERVAL; /* survives a process crash; fdatasync every 100 ms */
	if (quay_pool_create(8 << 20, &po, &s->pool) != 0 || quay_wal_open(dir, &wo, &s->wal) != 0 ||
	    quay_queue_create(&qo, &s->unroutable) != 0)
		exit(2);
	bo.unroutable = s->unroutable; /* a routing mistake lands here, never vanishes */
	if (quay_bus_create(&bo, &s->bus) != 0)
		exit(2);
	qo.wal = s->wal;
	qo.pool = s->pool;
	qo.visibility_ns = 10000 * MS;
	qo.backoff_base_ns = 5 * MS;
	for (int i = 0; i < NQ; i++) {
		const char *pattern = queues[i].pattern;

		if (!(queues[i].side & role))
			continue;
		qo.name = queues[i].name;
		if (quay_queue_create(&qo, &s->q[i]) != 0)
			exit(2);
		if (i == Q_BOOK_REQ && strcmp(broken, "route") == 0)
			pattern = "book.*.req";
		if (quay_bus_bind(s->bus, pattern, s->q[i], NULL, &s->b[i]) != 0)
			exit(2);
	}
	if (nats_url != NULL) {
#ifdef APP_HAVE_NATS
		struct quay_nats_opts no = QUAY_NATS_OPTS_INIT;

		no.urls = &nats_url;
		no.nurls = 1;
		no.pool = s->pool;
		if (quay_nats_connect(&no, &s->nats) != 0) {
			fprintf(stderr, "cannot connect to %s\n", nats_url);
			exit(2);
		}
		/* The order side sends book requests out; the book side takes
		 * them in. Replies find their way back by the reply-to. */
		if (role == ORDER_SIDE && quay_nats_export(s->nats, s->bus, "book.*.request") != 0)
			exit(2);
		if (role == BOOK_SIDE && quay_nats_import(s->nats, s->bus, "book.*.request", NULL) != 0)
			exit(2);
#endif
	} else if (role & BOOK_SIDE) {
		pthread_create(&s->book, NULL, book_thread, s);
	}
}

static void
close_side(struct side *s)
{
	if (nats_url == NULL && (s->role & BOOK_SIDE)) {
		__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE); /* pairs with book_loop */
		pthread_join(s->book, NULL);
	}
	for (int i = 0; i < NQ; i++)
		if (s->q[i] != NULL)
			quay_bus_unbind(s->b[i]);
#ifdef APP_HAVE_NATS
	quay_nats_close(s->nats); /* no import publishes after this */
#endif
	quay_bus_destroy(s->bus);
	for (int i = 0; i < NQ; i++)
		quay_queue_destroy(s->q[i]);
	quay_queue_destroy(s->unroutable);
	quay_wal_close(s->wal);
	if (quay_pool_destroy(s->pool) != 0)
		CHECK(0, "a message of the pool was never unref'd");
}

/* ---- client, order service, settlement ------------------------------ */

static struct order book_of[NORDERS]; /* what the client sent */
static int rpc_timeouts, late_replies, mismatched, unroutable_pub;

static void
client_send(struct side *s)
{
	uint32_t x = seed; /* deterministic: --seed */

	for (int i = 0; i < NORDERS; i++) {
		struct order *o = &book_of[i];

		x = x * 1103515245u + 12345u;
		o->ord = i;
		snprintf(o->sym, sizeof(o->sym), "%s", i % 20 == 7 ? "SLOW" : syms[(x >> 16) % 3]);
		snprintf(o->side, sizeof(o->side), "%s", (x >> 8) & 1 ? "buy" : "sell");
		o->qty = 100 * (1 + (int)((x >> 20) % 5));
		CHECK(quay_bus_publish(s->bus, "orders.new", msg(s->pool, o, "NEW")) == 1,
		    "order %d not queued", i);
	}
}

static void
publish_one(struct side *s, const char *subject, quay_msg *m, int targets)
{
	int r = quay_bus_publish(s->bus, subject, m);

	if (r < 0)
		quay_msg_unref(m);
	CHECK(r == targets, "publish on %s reached %d queues, not %d", subject, r, targets);
}

/* RPC: ask the book for a fill; 0 and *fill, or -ETIMEDOUT. */
static int
ask_book(struct side *s, const struct order *o, struct order *fill)
{
	char subject[64];
	quay_msg *req = msg(s->pool, o, "QUOTE");
	uint64_t id = quay_msg_id(req); /* the reply will carry it as correlation id */
	int64_t wait = strcmp(o->sym, "SLOW") == 0 ? 100 * MS : 5000 * MS;
	struct timespec t0, t1;
	quay_lease l;

	quay_msg_set_reply_to(req, "book.order-svc.response");
	snprintf(subject, sizeof(subject), "book.%s.request", o->sym);
	int r = quay_bus_publish(s->bus, subject, req);
	if (r <= 0) { /* 0: reached no queue (went to the unroutable queue) */
		if (r < 0)
			quay_msg_unref(req);
		unroutable_pub++;
		return -ENOENT;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		int64_t left =
		    wait - ((int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec));
		if (left <= 0 || quay_queue_receive(s->q[Q_BOOK_RESP], &l, left) != 0)
			return -ETIMEDOUT;
		int mine = quay_msg_correlation_id(l.msg) == id || strcmp(broken, "rpc") == 0;
		if (mine)
			parse(l.msg, fill);
		else
			late_replies++; /* an answer to a request that timed out */
		quay_queue_ack(s->q[Q_BOOK_RESP], &l);
		quay_msg_unref(l.msg);
		if (mine)
			return 0;
	}
}

static void
order_service(struct side *s, int count)
{
	for (int done = 0; done < count; done++) {
		struct order o, fill;
		quay_lease l;
		char subject[64];

		if (quay_queue_receive(s->q[Q_ORDER_REQ], &l, 1000 * MS) != 0) {
			CHECK(0, "order service: no order to take");
			return;
		}
		parse(l.msg, &o);
		int r = ask_book(s, &o, &fill);
		if (r == 0 && fill.ord != o.ord)
			mismatched++;
		rpc_timeouts += r == -ETIMEDOUT;
		if (r == 0) {
			o.px = fill.px;
			snprintf(subject, sizeof(subject), "trade.%s.%s", o.sym, o.side);
			publish_one(s, subject, msg(s->pool, &o, "TRADE"), 2); /* fanout: events + audit */
		}
		snprintf(subject, sizeof(subject), "orders.response.desk%d", o.ord % 2 + 1);
		publish_one(s, subject, msg(s->pool, &o, r == 0 ? "FILLED" : "REJECTED"), 1);
		quay_queue_ack(s->q[Q_ORDER_REQ], &l); /* only now: a crash before this redoes the order */
		quay_msg_unref(l.msg);
	}
}

/* Drain a queue; count[ord] per message; attempts of some. */
static int
drain(quay_queue *q, int count[NORDERS], int *second_attempts, int ack)
{
	quay_lease l;
	struct order o;
	int n = 0;

	while (quay_queue_receive(q, &l, 200 * MS) == 0) {
		if (parse(l.msg, &o) == 0 && o.ord >= 0 && o.ord < NORDERS)
			count[o.ord]++;
		if (second_attempts != NULL)
			*second_attempts += l.attempt == 2;
		if (ack)
			quay_queue_ack(q, &l);
		quay_msg_unref(l.msg);
		n++;
	}
	return n;
}

static uint64_t
ready(struct side *s, int i)
{
	struct quay_queue_stats st;

	quay_queue_stats(s->q[i], &st);
	return st.ready + st.delayed + st.in_flight;
}

static int
run_order_side(void)
{
	struct side s;
	uint64_t before[NQ], restored[NQ];
	int settled[NORDERS] = { 0 }, audited[NORDERS] = { 0 }, answered[NORDERS] = { 0 }, retried = 0;
	quay_lease held[3];

	/* Phase 1: half the orders, 3 trades taken by a settlement that dies. */
	open_side(&s, nats_url != NULL ? ORDER_SIDE : ORDER_SIDE | BOOK_SIDE);
	client_send(&s);
	order_service(&s, NORDERS / 2);
	for (int i = 0; i < 3; i++)
		if (quay_queue_receive(s.q[Q_TRADES], &held[i], 1000 * MS) == 0) {
			if (strcmp(broken, "ack") == 0)
				quay_queue_ack(s.q[Q_TRADES], &held[i]); /* settles, then "loses" the work */
			quay_msg_unref(held[i].msg);                     /* no ack: the lease dies with us */
		}
	for (int i = 0; i < NQ; i++)
		before[i] = queues[i].side & s.role ? ready(&s, i) : 0;
	close_side(&s);
	printf("phase 1     %d orders sent, %d processed; restart with %llu orders, %llu responses, "
	       "%llu trades queued\n",
	    NORDERS, NORDERS / 2, (unsigned long long)before[Q_ORDER_REQ],
	    (unsigned long long)before[Q_ORDER_RESP], (unsigned long long)before[Q_TRADES]);

	/* Phase 2: everything reopened from the WAL. */
	open_side(&s, nats_url != NULL ? ORDER_SIDE : ORDER_SIDE | BOOK_SIDE);
	for (int i = 0; i < NQ; i++) {
		struct quay_queue_stats st = { 0 };

		if (s.q[i] != NULL)
			quay_queue_stats(s.q[i], &st);
		restored[i] = st.restored;
	}
	CHECK(restored[Q_ORDER_REQ] == before[Q_ORDER_REQ] &&
	        restored[Q_ORDER_RESP] == before[Q_ORDER_RESP] && restored[Q_TRADES] == before[Q_TRADES] &&
	        restored[Q_AUDIT] == before[Q_AUDIT],
	    "restart: restored %llu/%llu/%llu/%llu, before %llu/%llu/%llu/%llu",
	    (unsigned long long)restored[Q_ORDER_REQ], (unsigned long long)restored[Q_ORDER_RESP],
	    (unsigned long long)restored[Q_TRADES], (unsigned long long)restored[Q_AUDIT],
	    (unsigned long long)before[Q_ORDER_REQ], (unsigned long long)before[Q_ORDER_RESP],
	    (unsigned long long)before[Q_TRADES], (unsigned long long)before[Q_AUDIT]);
	order_service(&s, NORDERS / 2);
	drain(s.q[Q_TRADES], settled, &retried, 1);
	drain(s.q[Q_AUDIT], audited, NULL, 1);
	drain(s.q[Q_ORDER_RESP], answered, NULL, 1);
	int late_left = drain(s.q[Q_BOOK_RESP], (int[NORDERS]){ 0 }, NULL, 1);
	struct quay_bus_counters bc;
	quay_bus_counters(s.bus, &bc);
	close_side(&s);

	int once_settled = 0, once_audited = 0, once_answered = 0, slow = 0;
	for (int i = 0; i < NORDERS; i++) {
		int fills = strcmp(book_of[i].sym, "SLOW") != 0;

		slow += !fills;
		once_settled += settled[i] == fills;
		once_audited += audited[i] == fills;
		once_answered += answered[i] == 1;
	}
	printf(
	    "phase 2     restored %llu orders, %llu responses, %llu trades (3 unacked), %llu audit records\n",
	    (unsigned long long)restored[Q_ORDER_REQ], (unsigned long long)restored[Q_ORDER_RESP],
	    (unsigned long long)restored[Q_TRADES], (unsigned long long)restored[Q_AUDIT]);
	printf(
	    "routing     direct/topic/fanout: %d of %d orders answered once; trades settled once and audited once "
	    "for %d and %d of %d orders (none for the %d rejected); %llu unroutable\n",
	    once_answered, NORDERS, once_settled, once_audited, NORDERS, slow,
	    (unsigned long long)bc.unroutable);
	printf("rpc         %d timeouts (%d SLOW orders), %d late replies discarded, %d mismatched\n",
	    rpc_timeouts, slow, late_replies + late_left, mismatched);
	if (nats_url == NULL)
		printf("acks        book service nacked %d busy requests (each came back), served %d\n",
		    book_nacked, book_served);
	CHECK(once_answered == NORDERS, "responses: %d of %d orders answered exactly once", once_answered,
	    NORDERS);
	CHECK(once_settled == NORDERS && once_audited == NORDERS, "fanout: %d settled once, %d audited once",
	    once_settled, once_audited);
	CHECK(retried == 3, "acks: %d of the 3 unacked trades came back as attempt 2", retried);
	CHECK(bc.unroutable == 0 && unroutable_pub == 0, "routing: %llu messages unroutable",
	    (unsigned long long)bc.unroutable);
	CHECK(rpc_timeouts == slow && mismatched == 0 && late_replies + late_left <= slow,
	    "rpc: %d timeouts for %d slow orders, %d replies matched to the wrong order", rpc_timeouts, slow,
	    mismatched);
	if (nats_url == NULL)
		CHECK(book_nacked == 12 && book_served == NORDERS, "acks: %d busy nacks, %d served",
		    book_nacked, book_served);
	return failures;
}

/* The book service's own process (--nats); tells the parent on ready_fd
 * once its import is up, so no request is published before anyone
 * listens (NATS keeps nothing for a subject nobody subscribes to). */
static int
run_book_side(int ready_fd)
{
	struct side s;

	open_side(&s, BOOK_SIDE);
	if (write(ready_fd, "R", 1) != 1)
		return 1;
	close(ready_fd);
	book_loop(&s);
	struct quay_queue_stats st;
	quay_queue_stats(s.q[Q_BOOK_REQ], &st);
	close_side(&s);
	printf("book side   (pid %d) served %d, nacked %d busy, %llu left\n", (int)getpid(), book_served,
	    book_nacked, (unsigned long long)(st.ready + st.delayed + st.in_flight));
	CHECK(book_nacked == 12 && book_served == NORDERS && st.retried == 12 &&
	        st.ready + st.delayed + st.in_flight == 0,
	    "book side: %d busy nacks, %d served", book_nacked, book_served);
	return failures;
}

static void
on_sigterm(int sig)
{
	(void)sig;
	book_sigterm = 1;
}

static void
rm_rf(const char *dir)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

int
main(int argc, char **argv)
{
	pid_t book = 0;
	int st = 0;

	for (int i = 1; i < argc; i++) {
		if (strncmp(argv[i], "--break=", 8) == 0)
			broken = argv[i] + 8;
		else if (strcmp(argv[i], "--nats") == 0 && i + 1 < argc)
			nats_url = argv[++i];
		else if (strncmp(argv[i], "--seed=", 7) == 0)
			seed = (uint32_t)strtoul(argv[i] + 7, NULL, 0);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = (uint32_t)strtoul(argv[++i], NULL, 0);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
#ifndef APP_HAVE_NATS
	if (nats_url != NULL) {
		printf("trading_layer: built without the NATS module (quay/nats.h): skipped\n");
		return 77; /* meson: skipped */
	}
#endif
	if (mkdtemp(basedir) == NULL)
		return 2;
	if (nats_url != NULL) {
		int fds[2];
		char c;

		if (pipe(fds) != 0 || (book = fork()) < 0)
			return 2;
		if (book == 0) {
			signal(SIGTERM, on_sigterm);
			close(fds[0]);
			_exit(run_book_side(fds[1]) ? 1 : 0);
		}
		close(fds[1]);
		if (read(fds[0], &c, 1) != 1) {
			printf("trading_layer: the book side did not start\n");
			waitpid(book, NULL, 0);
			rm_rf(basedir);
			return 1;
		}
		close(fds[0]);
		printf("setup       order side pid %d, book side pid %d, through %s\n", (int)getpid(),
		    (int)book, nats_url);
	}
	int bad = run_order_side();
	if (book > 0) {
		kill(book, SIGTERM);
		waitpid(book, &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the book side process failed (status %d)", st);
		bad = failures;
	}
	rm_rf(basedir);
	printf("%s\n", bad ? "trading_layer: BROKEN PROMISES" : "trading_layer: every check passed");
	return bad ? 1 : 0;
}
