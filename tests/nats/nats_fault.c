/* SPDX-License-Identifier: MIT */
/*
 * Server faults: the nats-server this test started is killed with SIGKILL
 * mid-run and restarted on the same port and store directory.
 *   up:    S sends to a JetStream queue (each acknowledged by the stream)
 *          and P core publishes through an export bridge to the queue's
 *          subject (the stream stores them too), then a flush;
 *   down:  D queue sends with dedup ids (they time out: not known to be
 *          stored); direct publishes until the reconnect buffer refuses
 *          (-ENOBUFS) and R more refusals; bus publishes through the
 *          export bridge, refused and counted;
 *   up:    an import made before the crash gets a plain client's message
 *          (reconnection resubscribed it); the D sends are sent again with the same dedup ids; S more
 *          acknowledged sends.
 * Checked, by draining the queue: every acknowledged send is there once;
 * every bridged and buffered publish is there once (delivered on
 * reconnect); nothing refused is there; each D message is there once;
 * the counters (refused, dropped, reconnects, disconnects) agree with
 * the return codes seen. Env QUAY_NATS_DIRECT=1 makes the handle
 * QUAY_NATS_DIRECT (test nats-fault-direct).
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/bus.h>
#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

#define S 300
#define P 300
#define D 5
#define REFUSE 50
#define BUSREF 20
#define MAXB 100000

#define DIE(...) \
	do { \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

static quay_pool *pool;

static quay_msg *
mk(const char *kind, int i, bool dedup)
{
	char b[32];
	quay_msg *m;
	snprintf(b, sizeof(b), "%s:%d", kind, i);
	if (quay_msg_new(pool, b, strlen(b), &m) != 0)
		DIE("msg");
	if (dedup && quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, b, strlen(b)) != 0)
		DIE("dedup");
	return m;
}

/* Send as an application should: a timeout means "not known to be
 * stored", so send again with the same dedup id (JetStream may still be
 * recovering its store right after the restart). */
static int
send_retry(quay_nats_queue *q, quay_msg *m, int *retries)
{
	int r;
	for (int i = 0; i < 40; i++) {
		r = quay_nats_queue_send(q, m);
		if (r != -ETIMEDOUT && r != -ENOTCONN)
			break;
		(*retries)++;
		usleep(50000);
	}
	if (r != 0)
		quay_msg_unref(m);
	return r;
}

static void
wait_for(quay_nats *n, bool up)
{
	for (int i = 0; i < 3000; i++) {
		if (quay_nats_connected(n) == up)
			return;
		usleep(10000);
	}
	DIE("connection did not go %s", up ? "up" : "down");
}

int
main(void)
{
	struct test_server srv = { 0 };
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	struct quay_nats_queue_opts qo = QUAY_NATS_QUEUE_OPTS_INIT;
	struct quay_nats_counters c;
	quay_nats *n;
	quay_nats_queue *q;
	quay_bus *bus;
	quay_sub *ping;
	const char *url;
	static int seen_s[S * 2], seen_p[P], seen_d[D], seen_b[MAXB], seen_x;
	int buffered = 0, refused = 0, fails = 0, r, total = 0, retries = 0;

	ts_init(&srv);
	url = srv.url;
	if (quay_pool_create((size_t)32 << 20, NULL, &pool) != 0 || quay_bus_create(NULL, &bus) != 0)
		DIE("setup");
	o.urls = &url;
	o.nurls = 1;
	if (getenv("QUAY_NATS_DIRECT") != NULL && atoi(getenv("QUAY_NATS_DIRECT")) != 0)
		o.flags = QUAY_NATS_DIRECT; /* test nats-fault-direct */
	o.max_reconnect = -1;
	o.reconnect_wait_ns = 100000000;
	o.reconnect_buf_bytes = 64 << 10;
	if ((r = quay_nats_connect(&o, &n)) != 0)
		DIE("connect %s", quay_strerror(r));
	qo.name = "fault";
	qo.op_timeout_ns = 500000000;
	if ((r = quay_nats_queue_open(n, &qo, &q)) != 0)
		DIE("queue %s", quay_strerror(r));
	if (quay_nats_export(n, bus, "quay.q.fault") != 0)
		DIE("export");
	if (quay_bus_subscribe(bus, "fault.ping", NULL, &ping) != 0 ||
	    quay_nats_import(n, bus, "fault.ping", NULL) != 0)
		DIE("import");

	for (int i = 0; i < S; i++)
		if ((r = quay_nats_queue_send(q, mk("S", i, true))) != 0)
			DIE("send %d: %s", i, quay_strerror(r));
	for (int i = 0; i < P; i++)
		if (quay_bus_publish(bus, "quay.q.fault", mk("P", i, false)) != 1)
			DIE("bus publish");
	/* The bridge drains asynchronously: wait for it, then flush. */
	for (int i = 0; i < 1000; i++) {
		quay_nats_counters(n, &c);
		if (c.forwarded == P)
			break;
		usleep(10000);
	}
	if ((r = quay_nats_flush(n, 5000000000)) != 0)
		DIE("flush %s", quay_strerror(r));

	ts_stop(&srv, SIGKILL);
	wait_for(n, false);
	for (int i = 0; i < D; i++) {
		quay_msg *m = mk("D", i, true);
		r = quay_nats_queue_send(q, m);
		if (r == 0)
			continue; /* cannot be while down, but harmless */
		if (r != -ETIMEDOUT && r != -ENOTCONN && r != -ENOBUFS)
			DIE("send while down: %s", quay_strerror(r));
		quay_msg_unref(m);
	}
	for (int i = 0; refused < REFUSE && i < MAXB; i++) {
		quay_msg *m = mk("B", i, false);
		r = quay_nats_publish(n, "quay.q.fault", m);
		quay_msg_unref(m);
		if (r == 0 && refused == 0)
			buffered++;
		else if (r == -ENOBUFS)
			refused++;
		else
			DIE("publish while down: %d after %d buffered (%s)", i, buffered, quay_strerror(r));
	}
	if (buffered >= MAXB)
		DIE("reconnect buffer never filled");
	quay_nats_counters(n, &c);
	if (c.refused < (uint64_t)refused || c.last_error != -ENOBUFS)
		fails++,
		    fprintf(stderr, "refused counter %llu < %d or last error %d\n",
		        (unsigned long long)c.refused, refused, c.last_error);
	{
		uint64_t before = c.dropped;
		for (int i = 0; i < BUSREF; i++)
			if (quay_bus_publish(bus, "quay.q.fault", mk("X", i, false)) != 1)
				DIE("bus publish while down");
		for (int i = 0; i < 1000; i++) {
			quay_nats_counters(n, &c);
			if (c.dropped == before + BUSREF)
				break;
			usleep(10000);
		}
		if (c.dropped != before + BUSREF)
			fails++,
			    fprintf(stderr, "bridge dropped %llu, want %llu\n", (unsigned long long)c.dropped,
			        (unsigned long long)before + BUSREF);
	}

	ts_start(&srv);
	wait_for(n, true);
	/* Reconnection resubscribed the import: a plain client's message
	 * (connected to the new server) reaches the local bus. */
	if ((r = quay_nats_flush(n, 5000000000)) != 0)
		DIE("flush after restart %s", quay_strerror(r));
	{
		natsConnection *pc;
		quay_msg *pm;
		if (natsConnection_ConnectTo(&pc, url) != NATS_OK ||
		    natsConnection_PublishString(pc, "fault.ping", "ping") != NATS_OK ||
		    natsConnection_Flush(pc) != NATS_OK)
			DIE("plain client");
		if ((r = quay_sub_receive(ping, &pm, 5000000000)) != 0)
			fails++,
			    fprintf(stderr, "import not resubscribed after the restart: %s\n",
			        quay_strerror(r));
		else
			quay_msg_unref(pm);
		natsConnection_Destroy(pc);
	}
	for (int i = 0; i < D; i++)
		if ((r = send_retry(q, mk("D", i, true), &retries)) != 0)
			DIE("resend %d: %s", i, quay_strerror(r));
	for (int i = 0; i < S; i++)
		if ((r = send_retry(q, mk("S", S + i, true), &retries)) != 0)
			DIE("send after restart %d: %s", i, quay_strerror(r));

	for (;;) {
		quay_nats_lease l;
		char b[32];
		size_t len;
		int i;
		r = quay_nats_queue_receive(q, &l, 1000000000);
		if (r == -ETIMEDOUT)
			break;
		if (r != 0)
			DIE("receive %s", quay_strerror(r));
		len = quay_msg_body_len(l.msg) < 31 ? quay_msg_body_len(l.msg) : 31;
		memcpy(b, quay_msg_body(l.msg), len);
		b[len] = 0;
		i = atoi(b + 2);
		switch (b[0]) {
		case 'S':
			if (i >= 0 && i < 2 * S)
				seen_s[i]++;
			break;
		case 'P':
			if (i >= 0 && i < P)
				seen_p[i]++;
			break;
		case 'D':
			if (i >= 0 && i < D)
				seen_d[i]++;
			break;
		case 'B':
			if (i >= 0 && i < MAXB)
				seen_b[i]++;
			break;
		default: seen_x++; break;
		}
		total++;
		if ((r = quay_nats_queue_ack(q, &l)) != 0)
			DIE("ack %s", quay_strerror(r));
	}
	for (int i = 0; i < 2 * S; i++)
		if (seen_s[i] != 1)
			fails++, fprintf(stderr, "acknowledged send S:%d seen %d times\n", i, seen_s[i]);
	for (int i = 0; i < P; i++)
		if (seen_p[i] != 1)
			fails++, fprintf(stderr, "bridged publish P:%d seen %d times\n", i, seen_p[i]);
	for (int i = 0; i < D; i++)
		if (seen_d[i] != 1)
			fails++, fprintf(stderr, "timed-out send D:%d seen %d times\n", i, seen_d[i]);
	for (int i = 0; i < MAXB; i++)
		if (seen_b[i] != (i < buffered ? 1 : 0))
			fails++,
			    fprintf(stderr, "buffered publish B:%d seen %d times (buffered %d)\n", i,
			        seen_b[i], buffered);
	if (seen_x != 0)
		fails++, fprintf(stderr, "%d refused bus publishes arrived\n", seen_x);
	quay_nats_counters(n, &c);
	if (c.refused != (uint64_t)refused + BUSREF)
		fails++,
		    fprintf(stderr, "refused counter %llu, want %d\n", (unsigned long long)c.refused,
		        refused + BUSREF);
	if (c.reconnects < 1 || c.disconnects < 1)
		fails++,
		    fprintf(stderr, "reconnects %llu disconnects %llu\n", (unsigned long long)c.reconnects,
		        (unsigned long long)c.disconnects);
	printf(
	    "nats_fault: acked sends %d, bridged %d, buffered while down %d, refused %d (counter %llu), "
	    "bridge refusals %d (dropped %llu), dedup resends %d, send retries %d, drained %d, reconnects %llu: %s\n",
	    2 * S, P, buffered, refused, (unsigned long long)c.refused, BUSREF, (unsigned long long)c.dropped,
	    D, retries, total, (unsigned long long)c.reconnects, fails ? "FAIL" : "OK");
	quay_nats_queue_close(q);
	quay_nats_close(n);
	quay_bus_destroy(bus);
	quay_pool_destroy(pool);
	ts_fini(&srv);
	return fails ? 1 : 0;
}
