/* SPDX-License-Identifier: MIT */
#include <quay/err.h>

const char *
quay_strerror(int err)
{
	/* Unsigned negation: -INT_MIN would overflow. */
	/* clang-format off */
	switch (err < 0 ? 0u - (unsigned)err : (unsigned)err) {
	case 0:         return "success";
	case EAGAIN:    return "try again: full, empty, in use or locked (resource busy)";
	case EINVAL:    return "invalid argument";
	case ENOMEM:    return "out of memory, or a configured limit reached";
	case ETIMEDOUT: return "timed out";
	case EPIPE:     return "closed";
	case EMSGSIZE:  return "too large: message, body or log record";
	case EIO:       return "I/O error on the log: durability failed; reopen it";
	case EBADMSG:   return "corrupt record";
	case ENOSPC:    return "no space left: message header room, buffer, capacity or device full";
	case ESTALE:    return "stale lease: already acked or nacked, or expired (maybe redelivered)";
	case ENOENT:    return "no such object";
	case EEXIST:    return "already exists";
	case EADDRINUSE: return "address in use";
	case ECONNREFUSED: return "no server could be reached";
	case ENOTCONN:  return "not connected: the connection is closed or down";
	case ENOBUFS:   return "send buffer full: refused";
	case EACCES:    return "permission denied";
	case ENOTDIR:   return "not a directory";
	case ENOTSUP:   return "not supported by the server";
	case EPROTO:    return "protocol or TLS failure with the server";
	case EOWNERDEAD: return "owner died: a process died or stalled inside a push or pop";
	case EBADF:     return "bad file descriptor";
	case EBUSY:     return "too many operations in flight: wait for some to complete";
	case EDEADLK:   return "would deadlock: a wait from the thread it waits for";
	default:        return "unknown error";
	}
	/* clang-format on */
}
