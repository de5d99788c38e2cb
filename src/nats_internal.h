/* SPDX-License-Identifier: MIT */
/* Shared by nats.c (connection, bus bridges) and nats_queue.c (JetStream). */
#ifndef QUAY_NATS_INTERNAL_H
#define QUAY_NATS_INTERNAL_H

#include <nats/nats.h>
#include <pthread.h>

#include <quay/bus.h>
#include <quay/nats.h>
#include <quay/ring.h>

struct quay_nats {
	natsConnection *nc;
	jsCtx *js;
	quay_pool *pool;
	bool own_pool;
	quay_stats *stats;
	bool own_stats;
	size_t export_capacity;
	char origin[17]; /* this process's id, 16 hex digits */
	char conn_label[24];
	char reply_prefix[48]; /* "_QUAY.<origin>.<conn>." */
	size_t reply_prefix_len;
	natsSubscription *reply_sub;
	pthread_mutex_t lock; /* bridges[], nbridges, reply_sub */
	struct nbridge *bridges[QUAY_NATS_BRIDGES_MAX];
	unsigned nbridges;
	struct ntap *taps[QUAY_NATS_BRIDGES_MAX]; /* wildcard exports' bus taps */
	unsigned ntaps;
	/* closed callback: close waits for it */
	pthread_mutex_t cl_lock;
	pthread_cond_t cl_cond;
	bool cl_done;
	bool reply_done; /* reply_sub's last callback returned */
	/* Imported NATS requests waiting for a local reply: local request
	 * id -> NATS reply subject (open addressing, replaced when full). */
	pthread_mutex_t rlock;
	struct nreply {
		uint64_t id;
		char subj[QUAY_BUS_SUBJECT_MAX + 1];
	} * rtab;
	/* Counters shared by every bridge (metrics of the handle). */
	quay_counter *c_reconnects, *c_disconnects, *c_slow, *c_refused, *c_echo, *c_invalid, *c_replies;
	/* Relaxed (__atomic): a last-error word for quay_nats_counters();
	 * orders nothing. */
	int last_error;
	bool direct; /* QUAY_NATS_DIRECT */
	/* Loop rule 2 (the origin header) matters only with a second handle
	 * in the process: while this is the only one (sole), a message with
	 * nothing else for NATS headers goes out header-less. A publisher
	 * reads sole and publishes under slock's read side; a new handle
	 * clears it under the write side (so every header-less publish is in
	 * libnats's buffer), then flushes this connection before it can
	 * subscribe. */
	pthread_rwlock_t slock;
	bool sole;
	struct quay_nats *hnext; /* the process's handles (origin_lock) */
};

/* The NATS message for a quay message (the export mapping). */
int quayi_nats_build(quay_nats *n, const char *subject, const char *reply, const quay_msg *msg,
    natsMsg **out);
/* The local copy of a NATS message (the import mapping); reply_to may be
 * NULL. */
int quayi_nats_make_local(quay_nats *n, natsMsg *nm, const char *reply_to, quay_msg **out);

/* Map a libnats status to a negative errno. */
int quayi_nats_err(natsStatus s);

#endif
