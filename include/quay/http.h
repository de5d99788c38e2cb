/* SPDX-License-Identifier: MIT */
/**
 * @file quay/http.h
 * An optional HTTP endpoint for observability (built when libmicrohttpd
 * is found; meson option -Dhttp=enabled|disabled|auto). It serves what
 * the application registers: stats registries, queues and buses.
 *
 *   GET /metrics    Prometheus text format 0.0.4, every registry
 *   GET /health     JSON state and alarms of each queue and bus; 200 when
 *                   healthy or degraded, 503 when failing; ?verbose adds
 *                   the reasons
 *   GET /summary    JSON: per queue depths, rates, latency percentiles;
 *                   per subscription pending, delivered, dropped
 *   GET /dashboard  a self-contained HTML page polling /summary
 *
 * docs/HTTP.md gives the JSON shapes, the health rules and the limits.
 *
 * Safety: binds 127.0.0.1 unless told otherwise; optional bearer token
 * (401 without it); GET and HEAD only (405); limits on connections,
 * request size and time. Requests are served by the server's own threads
 * and read the registered objects through their snapshot and read calls:
 * no request holds a lock a send or receive of a ready message waits
 * for (see docs/HTTP.md for the timer lock a queue read takes briefly).
 *
 * Lifetime: every registered object must outlive the server: call
 * quay_http_stop() before destroying them. There is no way to unregister.
 *
 * Concurrency (synchronisation table):
 *
 *   call                         x call                  needs
 *   quay_http_add_*, _port       x each other, requests  nothing (server mutex)
 *   quay_http_stop               x anything on h         caller serialises
 */
#ifndef QUAY_HTTP_H
#define QUAY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <quay/bus.h>
#include <quay/err.h>
#include <quay/queue.h>
#include <quay/stats.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Longest bearer token, in bytes. */
#define QUAY_HTTP_TOKEN_MAX 256
/** Most objects (registries + queues + buses) one server serves. */
#define QUAY_HTTP_OBJECTS_MAX 4096

/** A running HTTP server (opaque). */
typedef struct quay_http quay_http;

/** Server options. Start from QUAY_HTTP_OPTS_INIT; zero means default. */
struct quay_http_opts {
	/** sizeof(struct quay_http_opts): the version. */
	size_t size;
	/** No flags are defined yet: must be 0. */
	unsigned flags;
	/** Address to listen on, a numeric IPv4 or IPv6 address; NULL:
	 *  "127.0.0.1". Anything wider ("0.0.0.0", "::") must be asked for. */
	const char *addr;
	/** TCP port; 0: one the kernel picks (read it with quay_http_port()). */
	uint16_t port;
	/** NULL or "": no authentication. Else every request must carry
	 *  "Authorization: Bearer <token>" (1..QUAY_HTTP_TOKEN_MAX bytes of
	 *  0x21..0x7e), or gets 401. */
	const char *token;
	/** Most connections open at once, 1..10000; 0: 128. More are refused. */
	unsigned max_connections;
	/** Most bytes of a request's line and headers, 1024..1 MiB; 0: 16 KiB.
	 *  Longer requests get 413/414/431 and the connection is closed. */
	size_t max_request_bytes;
	/** Seconds a connection may stay idle, 1..3600; 0: 10. */
	unsigned timeout_s;
	/** Threads serving requests, 1..64; 0: 2. */
	unsigned threads;
	/** Where the server's tables and response buffers come from (NULL:
	 *  the C library); see quay/alloc.h. libmicrohttpd's own memory is
	 *  not (docs/MEMORY.md). Kept, not copied: it must outlive the
	 *  server. A struct whose size stops before this field is accepted. */
	const struct quay_allocator *allocator;
};

/** Initialiser for struct quay_http_opts: every field its default. */
/* clang-format off */
#define QUAY_HTTP_OPTS_INIT { sizeof(struct quay_http_opts), 0u, NULL, 0u, NULL, 0u, 0u, 0u, 0u, NULL }
/* clang-format on */

/**
 * Start a server: bind, listen and start its threads (the request threads
 * and one sampler thread that reads the registered queues' and buses'
 * counters once a second for the rates).
 *
 * opts may be NULL (every default).
 *
 * Concurrency: safe from any thread.
 * Returns: 0 and *out set; -EINVAL if out is NULL, opts->size is not
 *          sizeof(struct quay_http_opts), flags is not 0, addr is not a
 *          numeric address, the token is too long or has a byte outside
 *          0x21..0x7e, a limit is out of range, or the allocator lacks
 *          alloc or free; -EADDRINUSE if the
 *          port is taken; -EACCES if binding it is not allowed; -EIO if
 *          the server could not start for another reason; -ENOMEM.
 *          *out is untouched on failure.
 */
QUAY_API int quay_http_start(const struct quay_http_opts *opts, quay_http **out);

/**
 * Serve a registry's metrics on /metrics (each registry once: adding it
 * again is a no-op). A registry shared with added queues or buses needs
 * no separate call; quay_http_add_queue() and quay_http_add_bus() add
 * their registries.
 *
 * Concurrency: safe from any thread, while requests are served.
 * Returns: 0; -EINVAL if h or s is NULL; -ENOSPC if the server holds
 *          QUAY_HTTP_OBJECTS_MAX objects; -ENOMEM.
 */
QUAY_API int quay_http_add_stats(quay_http *h, quay_stats *s);

/**
 * Serve a queue: on /health, /summary and /dashboard under its name, and
 * its registry on /metrics (its private one, or the one it was made in).
 * Its DLQ, if any, is reported as its dlq_depth (and should be added too
 * to be shown with its own rates).
 *
 * Concurrency: safe from any thread, while requests are served.
 * Returns: 0; -EINVAL if h or q is NULL; -EEXIST if q was added already;
 *          -ENOSPC, -ENOMEM as quay_http_add_stats().
 */
QUAY_API int quay_http_add_queue(quay_http *h, quay_queue *q);

/**
 * Serve a bus: on /health and /summary (its counters, rates and every
 * subscription's pending, delivered, received and dropped), and its
 * registry on /metrics.
 *
 * Concurrency: safe from any thread, while requests are served.
 * Returns: 0; -EINVAL if h or bus is NULL; -EEXIST if bus was added
 *          already; -ENOSPC, -ENOMEM as quay_http_add_stats().
 */
QUAY_API int quay_http_add_bus(quay_http *h, quay_bus *bus);

/**
 * The TCP port the server listens on (the one the kernel picked for
 * port 0).
 *
 * Concurrency: safe from any thread.
 * Returns: the port, 1..65535; 0 if h is NULL.
 */
QUAY_API uint16_t quay_http_port(const quay_http *h);

/**
 * Stop the server: close the listening socket and every connection
 * (requests in progress are cut short), join its threads and free
 * everything. Returns within about one second even under load. NULL is
 * ignored. The registered objects are not touched.
 *
 * Concurrency: no other call may use h, and none may be in progress.
 */
QUAY_API void quay_http_stop(quay_http *h);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_HTTP_H */
