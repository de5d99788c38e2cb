/* SPDX-License-Identifier: MIT */
/**
 * @file quay/err.h
 * Error conventions shared by every quay module.
 *
 * Every quay function that can fail returns an int: 0 on success or a
 * negative errno value. The codes quay uses, and what they mean here:
 *
 *   -EAGAIN     would block: a ring or queue is full (push) or empty (pop)
 *   -EINVAL     invalid argument (NULL handle, bad size, unknown flag ...)
 *   -ENOMEM     out of memory, or a bounded pool is exhausted
 *   -ETIMEDOUT  a waiting call ran out of time
 *   -EPIPE      the object is closed (pushes), or closed and drained (pops)
 *   -EMSGSIZE   a message is larger than the object accepts
 *   -EIO        a durability failure; the log stays failed until reopened
 *   -EBADMSG    a corrupt record was found
 *   -ENOSPC     no space left on the device holding a log
 *   -ESTALE     a lease expired and its message was handed out again
 *   -ENOENT     no such object (unknown lease, subscription, ...)
 *   -EEXIST     the object is there already (added twice, ...)
 *   -EADDRINUSE the address (a TCP port) is taken
 *   -EACCES     the system refused (binding a privileged port, ...)
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
