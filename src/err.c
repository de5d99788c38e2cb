/* SPDX-License-Identifier: MIT */
#include <quay/err.h>

const char *
quay_strerror(int err)
{
	/* Unsigned negation: -INT_MIN would overflow. */
	switch (err < 0 ? 0u - (unsigned)err : (unsigned)err) {
	case 0:         return "success";
	case EAGAIN:    return "would block: full or empty, try again";
	case EINVAL:    return "invalid argument";
	case ENOMEM:    return "out of memory or pool limit reached";
	case ETIMEDOUT: return "timed out";
	case EPIPE:     return "closed";
	case EMSGSIZE:  return "message too large";
	case EIO:       return "I/O error: durability failed; reopen the log";
	case EBADMSG:   return "corrupt record";
	case ENOSPC:    return "no space left on device";
	case ESTALE:    return "stale lease: the message was redelivered";
	case ENOENT:    return "no such object";
	case EEXIST:    return "already exists";
	case EADDRINUSE: return "address in use";
	case EACCES:    return "permission denied";
	default:        return "unknown error";
	}
}
