/* SPDX-License-Identifier: MIT */
/**
 * @file quay/nats.h
 * The bus and queues across processes and machines, over NATS (libnats,
 * the optional `nats` module; docs/NATS.md).
 *
 * A quay_nats holds one NATS connection. On it:
 *
 *   export   quay_nats_export(n, bus, pattern): every message published
 *            on the local bus on a subject matching pattern is also
 *            published to NATS, on that subject (a bus subscription, or
 *            for a wildcard pattern the bus's publish tap, drained by a
 *            bridge thread; with QUAY_NATS_DIRECT published by the
 *            publisher's own thread, from the tap).
 *   import   quay_nats_import(n, bus, subject, group): every NATS message
 *            on subject (a NATS queue subscription when group is set) is
 *            published on the local bus.
 *   queue    quay_nats_queue_*: a work queue on a JetStream stream with a
 *            durable pull consumer, with calls shaped like quay_queue_*
 *            (send, receive a lease, ack / nack / extend it).
 *
 * Mapping (docs/NATS.md has the full table): the subject is the subject;
 * the body is the payload; quay headers travel as NATS headers (values
 * percent-encoded, marked by "Quay-Enc: pct"); the correlation id, the
 * priority and the sending process travel as "Quay-Correlation-Id",
 * "Quay-Priority" and "Quay-Origin"; a reply-to becomes a NATS reply
 * subject, so quay_bus_request() in one process is answered by a
 * responder in another (or by any NATS client), and a NATS request is
 * answered by a local quay_bus_reply().
 *
 * No loops: the connection is made with no-echo; while the process has
 * more than one handle, every exported message carries the process's
 * origin id and an import drops a message that carries its own process's
 * origin (counted: echo_dropped); and a message that came in by an import
 * is never exported again (it carries the local header QUAY_NATS_H_FROM).
 * So the same subject may be exported and imported on every side. A
 * process's only handle leaves the origin out of a message with no other
 * NATS header (no quay headers, priority or correlation id): no other
 * handle of the process can receive it, and it costs libnats a header
 * table per message. Such a message arrives elsewhere as from "nats".
 *
 * Subjects: quay's subject rules are stricter than NATS's (quay/bus.h).
 * A NATS message whose subject quay cannot represent (a token holding `*`
 * or `>` with other bytes, a published `a.>`, a byte outside 0x21..0x7e,
 * more than QUAY_BUS_TOKENS_MAX tokens) is refused and counted (invalid),
 * never delivered under another name.
 *
 * Concurrency: every call is safe from any thread, except
 * quay_nats_close(), which no other call on the handle may overlap.
 * Close is sequenced: it stops the export bridges (each drains what its
 * subscription holds), unsubscribes the imports and waits until libnats
 * reports each subscription's last callback returned, closes the
 * connection and waits for its closed callback, and only then frees; no
 * libnats callback runs after close returns. Calls on the buses (not on
 * the handle) may run during close on other threads: a quay_bus_publish()
 * or quay_bus_reply() that reaches the handle's exports or replies
 * (QUAY_NATS_DIRECT: on the caller's thread) is waited for (a grace
 * period of the bus) before anything it uses is freed; one that starts
 * after is not exported (a request's reply is then lost, as when the
 * handle is gone).
 *
 * Lifetime of the messages the handle makes (imported messages, replies
 * to exported requests, queue leases and dead letters): with the
 * handle's own pool (quay_nats_opts.pool NULL) each stays valid after
 * quay_nats_close() until its last unref, wherever it is (held by the
 * application, queued in a local subscription, or being unref'd on
 * another thread while close runs); the pool is freed with the last of
 * them (by that unref, on its thread), or by close if none is out. With
 * a given pool they live as long as that pool.
 */
#ifndef QUAY_NATS_H
#define QUAY_NATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <quay/bus.h>
#include <quay/err.h>
#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/stats.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Most URLs in quay_nats_opts.urls. */
#define QUAY_NATS_URLS_MAX 16u
/** Most export and import bridges on one handle. */
#define QUAY_NATS_BRIDGES_MAX 256u
/** Default reconnect buffer: 8 MiB (libnats's own default). */
#define QUAY_NATS_RECONNECT_BUF_DEFAULT ((size_t)8 << 20)
/** Default time a connect may take: 2 s. */
#define QUAY_NATS_CONNECT_TIMEOUT_DEFAULT ((int64_t)2000000000)
/** Default wait between reconnect attempts: 250 ms. */
#define QUAY_NATS_RECONNECT_WAIT_DEFAULT ((int64_t)250000000)
/** Default capacity of an export bridge's bus subscription. */
#define QUAY_NATS_EXPORT_CAPACITY_DEFAULT 4096u
/** Local header an imported message carries: the origin it came from
 *  (another process's id, or "nats" for a plain NATS client). */
#define QUAY_NATS_H_FROM "quay-nats-from"

/** A NATS connection and its bridges (opaque). */
typedef struct quay_nats quay_nats;

/** Connection options. Start from QUAY_NATS_OPTS_INIT. */
struct quay_nats_opts {
	/** sizeof(struct quay_nats_opts): the version. */
	size_t size;
	/** 0 or QUAY_NATS_DIRECT. */
	unsigned flags;
	/** Server URLs ("nats://127.0.0.1:4222"), nurls of them (1..
	 *  QUAY_NATS_URLS_MAX). NULL with nurls 0: "nats://127.0.0.1:4222".
	 *  A user and password go in the URL: "nats://user:pass@host:4222". */
	const char *const *urls;
	size_t nurls;
	/** Connection name shown by the server (NULL: none). */
	const char *name;
	/** Credentials file (.creds, user JWT and seed, as nsc writes it;
	 *  its seed is checked at connect) or NULL. */
	const char *creds_file;
	/** Token or NULL (not with creds_file or nkey). */
	const char *token;
	/** TLS: trusted CA file, client certificate and key (all NULL: the
	 *  URL decides, tls:// or nats://). A CA file turns TLS on. */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	/** Reconnect attempts per server after a disconnect (0: 60; < 0:
	 *  forever). The first connect is never retried: it fails at once. */
	int max_reconnect;
	/** Wait between reconnect attempts (0: the default above). */
	int64_t reconnect_wait_ns;
	/** Longest a connect (TCP + handshake) may take (0: the default). */
	int64_t connect_timeout_ns;
	/** Bytes of publishes buffered while disconnected (0: 8 MiB); a
	 *  publish that does not fit is refused (-ENOBUFS) and counted. */
	size_t reconnect_buf_bytes;
	/** Pool for imported messages (NULL: the handle makes one of 64 MiB,
	 *  without thread caches, freed with the last message taken from it,
	 *  after close; see "Lifetime" above). The pool is used from
	 *  libnats's threads, which the module cannot join: a given pool must
	 *  be made with QUAY_POOL_NO_CACHE, or be destroyed only after
	 *  nats_CloseAndWait() (libnats) returned; and it must outlive the
	 *  handle and every message the handle made from it. */
	quay_pool *pool;
	/** Registry for the bridges' metrics (NULL: the handle makes its
	 *  own; quay_nats_stats() returns it). Must outlive the handle. */
	quay_stats *stats;
	/** Capacity of each export bridge's bus subscription (a power of two;
	 *  0: QUAY_NATS_EXPORT_CAPACITY_DEFAULT). It is a QUAY_SUB_BLOCK
	 *  subscription with the default timeout: a full bridge slows local
	 *  publishers, then counts their timeouts (never drops silently). */
	size_t export_capacity;
	/** NKey authentication (a server `authorization { users = [ { nkey:
	 *  "U..." } ] }` entry): the user's public key ("U" and 55 more
	 *  characters) and a file holding its seed (a line starting "SU",
	 *  as NATS's tools write it). Both or neither; not with creds_file
	 *  or token. The seed signs the server's nonce at each (re)connect;
	 *  the file is read then, and checked at connect. */
	const char *nkey;
	const char *nkey_seed_file;
	/** Where the handle's own memory comes from: its tables, bridges, the
	 *  pool and registry it makes, header scratch (NULL: the C library);
	 *  see quay/alloc.h. libnats's memory is not (docs/MEMORY.md). Kept,
	 *  not copied: it must outlive the handle, and, when the handle makes
	 *  its own pool, the last message taken from that pool (whose last
	 *  unref frees the pool through it). */
	const struct quay_allocator *allocator;
};

/** quay_nats_opts.flags: exports publish to NATS on the publisher's own
 *  thread, inside quay_bus_publish(), from the bus's publish tap, instead
 *  of handing each message to a bridge thread. Cheaper (no hand-off, no
 *  ring) and a request goes out at once; but a local publisher then waits
 *  for libnats's connection lock and, when libnats's 32 KiB write buffer
 *  is full, for the socket (TCP flow control is the backpressure, in
 *  place of the bridge's capacity and 1 s block timeout). Every export
 *  of the handle, literal or wildcard, and the replies to imported
 *  requests use the bus's tap; on a bus whose tap another handle holds
 *  (its wildcard or direct exports), this handle's literal exports and
 *  replies fall back to bridge threads and its wildcard exports are
 *  refused (-EEXIST), as without the flag. */
#define QUAY_NATS_DIRECT 1u

/** Initialiser for struct quay_nats_opts: every field its default. */
/* clang-format off */
#define QUAY_NATS_OPTS_INIT \
	{ sizeof(struct quay_nats_opts), 0u, NULL, 0u, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0u, \
	  NULL, NULL, 0u, NULL, NULL, NULL }
/* clang-format on */

/** Counters of a handle, summed over its bridges (quay_nats_counters()).
 *  reconnects and disconnects are counted on libnats' callback thread,
 *  which runs just after the status changes: they may trail
 *  quay_nats_connected() by a moment. */
struct quay_nats_counters {
	uint64_t forwarded;     /**< local messages published to NATS */
	uint64_t received;      /**< NATS messages published on a local bus */
	uint64_t dropped;       /**< messages lost on the way, each counted:
	                             a refused publish, a local bus that
	                             refused it, a message too big for the pool */
	uint64_t refused;       /**< of dropped: NATS publishes refused
	                             (-ENOBUFS: reconnect buffer full; or closed) */
	uint64_t echo_dropped;  /**< own messages that came back (not delivered) */
	uint64_t invalid;       /**< NATS subjects or reply subjects quay refuses */
	uint64_t replies;       /**< replies routed back to a local requester */
	uint64_t reconnects;    /**< reconnections (may trail the status) */
	uint64_t disconnects;   /**< disconnections (may trail the status) */
	uint64_t slow_consumer; /**< libnats slow-consumer events (messages
	                             the server or client dropped for us) */
	uint64_t pending;       /**< gauge: messages waiting in export bridges */
	int last_error;         /**< the last refusal's code (0: none) */
};

/**
 * Connect to NATS.
 *
 * Waits at most connect_timeout_ns per URL (so a dead or unreachable URL
 * fails in bounded time). Makes a JetStream context too (used only by
 * quay_nats_queue_*; a server without JetStream is fine for the bus).
 *
 * Returns: 0 and *out set; -EINVAL if out is NULL, opts->size is wrong,
 *          flags has an unknown bit, nurls exceeds QUAY_NATS_URLS_MAX or
 *          is not 0 with urls NULL, a URL is NULL, more than one of
 *          creds_file, token and nkey is set, only one of nkey and
 *          nkey_seed_file is set, a time is negative, export_capacity is
 *          not a power of two, reconnect_buf_bytes exceeds INT_MAX, or
 *          the allocator lacks alloc or free; -EBADMSG if nkey_seed_file
 *          or creds_file holds no valid user seed (no line starting "SU",
 *          or one that does not decode: bad base32, bad checksum);
 *          -ECONNREFUSED if no
 *          server could be reached (refused, unreachable or timed out);
 *          -EACCES if the server refused the credentials (token, user and
 *          password, creds, an nkey it does not list or a seed that is
 *          not the nkey's); -EPROTO if TLS failed (a server certificate
 *          the CA file does not trust, no client certificate where the
 *          server requires one, TLS required by one side only); -ENOENT
 *          if a credentials, seed or TLS file is missing; -ENOMEM.
 */
QUAY_API int quay_nats_connect(const struct quay_nats_opts *opts, quay_nats **out);

/**
 * Stop every bridge, close the connection, free everything (see "Close
 * is sequenced" above). Queues opened on n must be closed first. An
 * import whose callback is stuck (publishing into a local QUAY_SUB_BLOCK
 * subscription with no timeout that nobody drains) is waited for 5 s;
 * after that the handle is left allocated (a leak, reported on stderr)
 * rather than freed under the running callback. Export bridges publish what their
 * subscriptions still hold before closing (best effort: flushed with a
 * 2 s bound). NULL is ignored.
 *
 * Concurrency: no other call on n may run or follow. The buses and pools
 * used by the bridges must still exist. Other threads may publish and
 * reply on those buses meanwhile (see "Concurrency" above: close waits
 * for a call inside the handle's exports or replies); messages the
 * handle made stay valid until their last unref (see "Lifetime" above).
 */
QUAY_API void quay_nats_close(quay_nats *n);

/**
 * Export: publish to NATS every message published on bus on a subject
 * matching pattern (a quay pattern, wildcards allowed).
 *
 * Each message is exported on the subject it was published on. A pattern
 * without wildcards is a bus subscription drained by a bridge thread; a
 * wildcard pattern takes the messages from the bus's internal publish tap
 * (which sees the subject), into a ring drained the same way. Either
 * waits for room (export_capacity messages) up to the default block
 * timeout (1 s), then counts the message as dropped. With
 * QUAY_NATS_DIRECT on n, both kinds publish from the tap on the
 * publisher's thread (see the flag). A request (a message with a
 * reply-to) is written to the socket at once rather than after libnats's
 * flush delay (1 ms): the call that sends it (the bridge thread, or the
 * publisher with QUAY_NATS_DIRECT) waits up to 1 ms for the server's
 * PONG. A wildcard export
 * is one more target of a publish: quay_bus_publish() counts it as a
 * delivery, so a request on a subject only it matches is not "no
 * subscriber". It sees a message before the local subscriptions do: a
 * message that every local target refuses (-EAGAIN, -ETIMEDOUT) has been
 * exported all the same, and so have a batch's messages after its first
 * refused one. A bus has one tap: wildcard exports from one bus on two
 * handles are refused (-EEXIST).
 *
 * Messages that came in by an import (QUAY_NATS_H_FROM set) and local
 * inbox traffic are not exported. A message with a reply-to becomes a
 * NATS request: its reply, from any process or NATS client, is published
 * back on the local reply-to with the request's id as correlation id (so
 * quay_bus_request() works across processes).
 *
 * Returns: 0; -EINVAL if n, bus or pattern is NULL or pattern is invalid;
 *          -EEXIST if pattern is already exported from bus on n, or has
 *          a wildcard and another handle exports a wildcard pattern
 *          from bus; -ENOMEM
 *          (also when QUAY_NATS_BRIDGES_MAX bridges exist); an error of
 *          quay_bus_subscribe(); -EAGAIN if the thread cannot be started.
 */
QUAY_API int quay_nats_export(quay_nats *n, quay_bus *bus, const char *pattern);

/**
 * Import: publish on bus every NATS message on subject (a quay pattern:
 * wildcards allowed). With group, the subscription is a NATS queue
 * subscription: of the importers (in any process) naming the same group,
 * one gets each message, and publishes it on its local bus.
 *
 * A NATS request (a message with a reply subject) arrives with a local
 * reply-to; the local responder's quay_bus_reply() goes back to the NATS
 * requester.
 *
 * Returns: 0; -EINVAL if n, bus or subject is NULL, subject is invalid
 *          or group is invalid (1..QUAY_BUS_NAME_MAX bytes of
 *          0x21..0x7e); -EEXIST if subject is already imported into bus
 *          on n (with any group); -ENOMEM; -ENOTCONN if the connection is
 *          closed; -EIO for another libnats error.
 */
QUAY_API int quay_nats_import(quay_nats *n, quay_bus *bus, const char *subject, const char *group);

/**
 * Publish one message to NATS now, mapped as an export maps it, and say
 * what happened (an export bridge does this for each message it takes).
 *
 * Ownership: msg is only read (the caller keeps its reference).
 * Returns: 0 (handed to libnats: sent, or buffered while reconnecting);
 *          -ENOBUFS if the reconnect buffer is full (refused, counted);
 *          -ENOTCONN if the connection is closed; -EINVAL if n, subject or
 *          msg is NULL or subject is invalid; -EMSGSIZE if it exceeds the
 *          server's max payload; -ENOMEM; -EIO.
 */
QUAY_API int quay_nats_publish(quay_nats *n, const char *subject, const quay_msg *msg);

/**
 * Wait until everything published so far reached the server (a NATS
 * flush, PING/PONG), at most timeout_ns.
 *
 * Returns: 0; -ETIMEDOUT; -ENOTCONN while disconnected or closed;
 *          -EINVAL if n is NULL or timeout_ns <= 0.
 */
QUAY_API int quay_nats_flush(quay_nats *n, int64_t timeout_ns);

/** Whether the connection is up now (false for NULL). */
QUAY_API bool quay_nats_connected(quay_nats *n);

/**
 * Read the handle's counters (each read once).
 * Returns: 0; -EINVAL if n or out is NULL.
 */
QUAY_API int quay_nats_counters(quay_nats *n, struct quay_nats_counters *out);

/** The handle's metric registry (NULL for NULL). Metrics: per bridge
 *  quay_nats_{forwarded,received,dropped}_total{bridge,subject} and the
 *  gauge quay_nats_pending{bridge,subject}; per handle
 *  quay_nats_{reconnects,disconnects,slow_consumer,refused,echo_dropped,
 *  invalid}_total{conn}. */
QUAY_API quay_stats *quay_nats_stats(quay_nats *n);

/* ---- queues on JetStream ------------------------------------------ */

/** A work queue on a JetStream stream (opaque). */
typedef struct quay_nats_queue quay_nats_queue;

/** Options of a JetStream queue. Start from QUAY_NATS_QUEUE_OPTS_INIT. */
struct quay_nats_queue_opts {
	/** sizeof(struct quay_nats_queue_opts): the version. */
	size_t size;
	/** No flags are defined yet: must be 0. */
	unsigned flags;
	/** Queue name: 1..32 bytes of [A-Za-z0-9_-]. The stream is
	 *  "QUAY_<name>" on subject "quay.q.<name>", the durable consumer
	 *  "quay_<name>", the dead-letter stream "QUAY_<name>_DLQ" on
	 *  "quay.dlq.<name>". Created if missing (work-queue retention,
	 *  file storage), shared by every process that opens the name. */
	const char *name;
	/** Lease length = the consumer's AckWait (0: 30 s). Fixed when the
	 *  consumer is created; later opens keep the first value. */
	int64_t visibility_ns;
	/** Deliveries before dead-lettering, 1..1000 (0: 10). */
	uint32_t max_attempts;
	/** Retry backoff of nack: base * factor^(attempt-1), at most max
	 *  (0: 100 ms, 2, 60 s), as quay_queue's. */
	int64_t backoff_base_ns;
	double backoff_factor;
	int64_t backoff_max_ns;
	/** Stream replicas, 1..5 (0: 1). 3 needs a cluster. */
	int replicas;
	/** Longest a send, ack or nack waits for the server (0: 5 s). */
	int64_t op_timeout_ns;
};

/** Initialiser for struct quay_nats_queue_opts. */
/* clang-format off */
#define QUAY_NATS_QUEUE_OPTS_INIT \
	{ sizeof(struct quay_nats_queue_opts), 0u, NULL, 0, 0u, 0, 0.0, 0, 0, 0 }
/* clang-format on */

/** A lease on a message received from a JetStream queue. */
typedef struct quay_nats_lease {
	quay_msg *msg;       /**< the message (the lease's reference) */
	uint32_t attempt;    /**< delivery attempt, 1-based (NumDelivered) */
	uint64_t stream_seq; /**< the message's stream sequence */
	void *impl;          /**< private: the libnats message */
} quay_nats_lease;

/** Counters of a JetStream queue handle (this process's view). */
struct quay_nats_queue_counters {
	uint64_t sent;          /**< sends the server stored */
	uint64_t duplicates;    /**< sends the server recognised as duplicates */
	uint64_t received;      /**< leases handed out */
	uint64_t acked;         /**< acks the server confirmed */
	uint64_t nacked;        /**< nacks sent (retry later) */
	uint64_t extended;      /**< InProgress sent */
	uint64_t dead_lettered; /**< messages this process moved to the DLQ */
	uint64_t errors;        /**< calls that failed on the server side */
};

/**
 * Open (creating if needed) a JetStream queue on n.
 *
 * Returns: 0 and *out set; -EINVAL if n, opts, out or opts->name is NULL
 *          or a field is out of range; -ENOTSUP if the server has no
 *          JetStream; -ETIMEDOUT; -EIO (the server refused, e.g. an
 *          existing stream with another configuration); -ENOMEM.
 */
QUAY_API int quay_nats_queue_open(quay_nats *n, const struct quay_nats_queue_opts *opts,
    quay_nats_queue **out);

/** Close the handle (not the stream: the messages stay). Leases still
 *  out are abandoned (redelivered after their AckWait). NULL is ignored. */
QUAY_API void quay_nats_queue_close(quay_nats_queue *q);

/**
 * Send msg and wait until the stream stored it (a JetStream publish ack).
 * A QUAY_MSG_H_DEDUP_ID header becomes Nats-Msg-Id (the stream's
 * duplicate window, 2 min by default, drops a second copy).
 *
 * Ownership: on 0 the caller's reference is consumed; otherwise kept.
 * Returns: 0; -EINVAL if q or msg is NULL; -ETIMEDOUT (not known to be
 *          stored: send again with the same dedup id); -ENOTCONN; -EIO.
 */
QUAY_API int quay_nats_queue_send(quay_nats_queue *q, quay_msg *msg);

/**
 * Take the next message and lease it (a pull of one), waiting up to
 * wait_ns (0: one short pull; < 0 is refused: pass a bound).
 *
 * A message delivered more than max_attempts times (its previous holder
 * died or let the lease expire) is dead-lettered here, with reason
 * "lease expired", and the next one is taken.
 * Returns: 0 and *lease filled; -ETIMEDOUT if nothing came; -EINVAL if q
 *          or lease is NULL or wait_ns < 0; -ENOMEM (pool); -ENOTCONN;
 *          -EIO.
 */
QUAY_API int quay_nats_queue_receive(quay_nats_queue *q, quay_nats_lease *lease, int64_t wait_ns);

/**
 * Acknowledge: the message is done. Waits for the server's confirmation
 * (AckSync), so a 0 means the stream removed it. The lease is released
 * (its message unref'd) whatever the result.
 * JetStream acks by stream sequence: an ack sent after the lease expired
 * still removes the message, even if it was meanwhile redelivered to
 * another consumer (so extend before the lease runs out).
 * Returns: 0; -EINVAL if q or lease (or its message) is NULL;
 *          -ETIMEDOUT (unknown: it may come again); -ENOTCONN; -EIO.
 */
QUAY_API int quay_nats_queue_ack(quay_nats_queue *q, quay_nats_lease *lease);

/**
 * Negative acknowledge: retry later (Nak with the queue's backoff delay
 * for this attempt), or, at attempt max_attempts, dead-letter it with
 * reason (NULL: "nack") and remove it. The lease is released.
 * Returns: 0; -EINVAL; -ETIMEDOUT; -ENOTCONN; -EIO.
 */
QUAY_API int quay_nats_queue_nack(quay_nats_queue *q, quay_nats_lease *lease, const char *reason);

/**
 * Keep the lease: InProgress, which restarts the AckWait (the lease
 * becomes visibility_ns long again from now). The lease stays valid.
 * Returns: 0; -EINVAL; -ENOTCONN; -EIO.
 */
QUAY_API int quay_nats_queue_extend(quay_nats_queue *q, quay_nats_lease *lease);

/**
 * Read (and remove) up to max dead-lettered messages into out[] (each
 * with QUAY_MSG_H_DLQ_REASON and QUAY_MSG_H_DLQ_SOURCE), waiting up to
 * wait_ns for the first.
 * Returns: the number read (0..max); -EINVAL; -ENOTCONN; -EIO.
 */
QUAY_API int quay_nats_queue_dlq_take(quay_nats_queue *q, quay_msg **out, size_t max, int64_t wait_ns);

/**
 * Messages in the queue's stream now (ready, delayed by a nack, or
 * leased: work-queue retention removes a message when it is acked).
 * Returns: 0 and *out set; -EINVAL if q or out is NULL; -ETIMEDOUT;
 *          -ENOTCONN; -EIO.
 */
QUAY_API int quay_nats_queue_depth(quay_nats_queue *q, uint64_t *out);

/** Read the queue handle's counters. Returns: 0; -EINVAL for NULL. */
QUAY_API int quay_nats_queue_counters(quay_nats_queue *q, struct quay_nats_queue_counters *out);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_NATS_H */
