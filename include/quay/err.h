/* SPDX-License-Identifier: MIT */
/**
 * @file quay/err.h
 * Error conventions shared by every quay module.
 *
 * Every quay function that can fail returns an int: 0 on success or a
 * negative errno value. The codes quay uses, and what they mean here:
 *
 *   -EAGAIN     try again: a ring, queue or REJECT subscription is full
 *               (push) or empty (pop); a pool still has messages in use
 *               (destroy); a log is locked by another open
 *   -EINVAL     invalid argument (NULL handle, bad size, unknown flag ...)
 *   -ENOMEM     out of memory, or a configured limit is reached (a pool
 *               is exhausted, max subscriptions or requests, a full
 *               metric registry)
 *   -ETIMEDOUT  a waiting call ran out of time
 *   -EPIPE      the object is closed (pushes), or closed and drained (pops)
 *   -EMSGSIZE   a message, body or log record is larger than the object
 *               accepts
 *   -EIO        an I/O error on a log (a durability failure); the log
 *               stays failed until reopened
 *   -EBADMSG    a corrupt record was found
 *   -ENOSPC     no space left: a header or reply-to does not fit in the
 *               message's room, a caller's buffer is too small, a queue's
 *               capacity cannot hold what a log recovered, or the device
 *               holding a log is full
 *   -ESTALE     a stale lease: already acked or nacked, or expired (its
 *               message may have been handed out again)
 *   -ENOENT     no such object (unknown lease, subscription, a missing WAL directory, ...)
 *   -EEXIST     the object already exists (added twice, a second NATS import, ...)
 *   -EADDRINUSE the address (a TCP port) is taken
 *   -ECONNREFUSED  no server could be reached (NATS)
 *   -ENOTCONN   the connection is closed or down (NATS)
 *   -ENOBUFS    a bounded send buffer is full: refused, not dropped (NATS)
 *   -EACCES     permission denied (a privileged port, a WAL directory, credentials a server refused)
 *   -ENOTDIR    a path component is not a directory (a WAL directory)
 *   -ENOTSUP    the server lacks a feature (NATS without JetStream)
 *   -EPROTO     protocol or TLS failure with the server (NATS: an untrusted
 *               certificate, TLS on one side only)
 *   -EOWNERDEAD a process died or stalled inside a push or pop of a ring
 *               in shared memory (its slot was freed)
 *   -EBADF      a file descriptor that is not open
 *   -EBUSY      too many operations in flight (a queue's pipelined sends):
 *               wait for some to complete
 *   -EDEADLK    the call would wait for the thread that makes it (a wait
 *               from a completion callback)
 *
 * quay_strerror() names each of them; a unit test keeps this list, the
 * codes documented in every public header, and quay_strerror() in sync.
 */
#ifndef QUAY_ERR_H
#define QUAY_ERR_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#error "quay supports POSIX systems with futexes (Linux) only"
#endif

/** Marks a symbol exported from libquay (the library builds with hidden visibility). */
#define QUAY_API __attribute__((visibility("default")))

/**
 * Describe a quay error code.
 *
 * Concurrency: safe from any thread; the text is static.
 * Returns: a static, NUL-terminated English text for err (negative or
 *          positive errno values are both accepted; 0 is "success"), or
 *          "unknown error" for a code quay never returns.
 */
QUAY_API const char *quay_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* QUAY_ERR_H */
