/* SPDX-License-Identifier: MIT */
/*
 * Messages: making them (ids, clock), body and header records, refcount
 * misuse. The layout and the inline getters/ref/unref are in
 * include/quay/impl/msg_inline.h; buffers come from src/pool.c.
 *
 * Ids. A process-wide counter hands out blocks of QUAY_MSG_ID_BLOCK ids;
 * each thread numbers its messages from its block (thread-local, no
 * shared write per message). Ids are unique in the process, never 0 and
 * strictly increasing in creation order within a thread; across threads
 * they are not in time order. 2^64 ids do not wrap in practice.
 */
#include "msg_internal.h"
#include "quay_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <quay/msg.h>

/* The envelope is ABI: pin it. */
_Static_assert(sizeof(struct quay_msg) == QUAY_MSG_ENVELOPE, "envelope is two lines");
_Static_assert(offsetof(struct quay_msg, refcount) == 8, "refcount");
_Static_assert(offsetof(struct quay_msg, correlation_id) == 32, "correlation id");
_Static_assert(offsetof(struct quay_msg, pool) == 72, "pool");
_Static_assert(QUAY_MSG_HEADERS_MAX <= UINT8_MAX, "nheaders is a byte");
_Static_assert(QUAY_MSG_KEY_MAX <= UINT8_MAX, "key_len is a byte");

/* Record header: u8 key_len, 3 zero bytes, u32 value_len. */
#define REC_HDR 8u

/* The next block of ids. Starts at 1: 0 means "no id". */
static uint64_t id_next_block = 1;
static _Thread_local uint64_t id_next, id_end;

static uint64_t
new_id(void)
{
	if (id_next == id_end) {
		/* Relaxed: uniqueness needs only the atomicity of the add. */
		id_next = __atomic_fetch_add(&id_next_block, QUAY_MSG_ID_BLOCK, __ATOMIC_RELAXED);
		id_end = id_next + QUAY_MSG_ID_BLOCK;
	}
	return id_next++;
}

int
quayi_msg_misuse(const quay_msg *msg, const char *what)
{
#ifndef NDEBUG
	fprintf(stderr, "quay: %s past zero (message %p, id %llu): double unref or use after free\n", what,
	    (const void *)msg, (unsigned long long)msg->id);
	abort();
#else
	(void)msg;
	(void)what;
	return -EINVAL;
#endif
}

/* ---- making messages ---------------------------------------------- */

static void
stamp(quay_pool *pool, quay_msg *m)
{
	m->id = new_id();
	/* Relaxed: not shared yet. */
	__atomic_store_n(&m->created_ns, quayi_pool_now(pool), __ATOMIC_RELAXED);
}

/* need: bytes the data area must have; want: what to ask for (the
 * largest class serves when only it holds need). */
static int
msg_new(quay_pool *pool, const void *body, size_t len, size_t room, bool exact, bool wait, int64_t timeout_ns,
    quay_msg **out)
{
	quay_msg *m;
	size_t want;
	int rc;

	if (pool == NULL || out == NULL || (body == NULL && len != 0))
		return -EINVAL;
	if (len > UINT32_MAX || room > UINT32_MAX)
		return -EMSGSIZE;
	want = len + room;
	rc = quayi_pool_take(pool, exact ? want : len, want, wait, timeout_ns, &m);
	if (rc != 0)
		return rc;
	stamp(pool, m);
	if (len != 0)
		memcpy(quayi_msg_data(m), body, len);
	m->body_len = (uint32_t)len;
	*out = m;
	return 0;
}

int
quay_msg_new(quay_pool *pool, const void *body, size_t len, quay_msg **out)
{
	if (pool == NULL)
		return -EINVAL;
	return msg_new(pool, body, len, quayi_pool_headroom(pool), false, false, 0, out);
}

int
quay_msg_new_ex(quay_pool *pool, const void *body, size_t len, size_t header_room, int64_t timeout_ns,
    quay_msg **out)
{
	return msg_new(pool, body, len, header_room, true, timeout_ns != 0, timeout_ns, out);
}

int
quay_msg_new_wait(quay_pool *pool, const void *body, size_t len, int64_t timeout_ns, quay_msg **out)
{
	if (pool == NULL)
		return -EINVAL;
	return msg_new(pool, body, len, quayi_pool_headroom(pool), false, true, timeout_ns, out);
}

static int
msg_alloc(quay_pool *pool, size_t capacity, bool wait, int64_t timeout_ns, quay_msg **out)
{
	quay_msg *m;
	int rc;

	if (pool == NULL || out == NULL)
		return -EINVAL;
	if (capacity > UINT32_MAX)
		return -EMSGSIZE;
	rc = quayi_pool_take(pool, capacity, capacity, wait, timeout_ns, &m);
	if (rc != 0)
		return rc;
	stamp(pool, m);
	*out = m;
	return 0;
}

int
quay_msg_alloc(quay_pool *pool, size_t capacity, quay_msg **out)
{
	return msg_alloc(pool, capacity, false, 0, out);
}

int
quay_msg_alloc_wait(quay_pool *pool, size_t capacity, int64_t timeout_ns, quay_msg **out)
{
	return msg_alloc(pool, capacity, true, timeout_ns, out);
}

int
quay_msg_clone(quay_pool *pool, const quay_msg *src, quay_msg **out)
{
	size_t need;
	quay_msg *m;
	int rc;

	if (pool == NULL || src == NULL || out == NULL)
		return -EINVAL;
	need = (size_t)src->body_len + src->tail_used;
	rc = quayi_pool_take(pool, need, need, false, 0, &m);
	if (rc != 0)
		return rc;
	m->id = new_id();
	memcpy(quayi_msg_data(m), quayi_msg_data(src), src->body_len);
	memcpy(quayi_msg_data(m) + m->capacity - src->tail_used,
	    quayi_msg_data(src) + src->capacity - src->tail_used, src->tail_used);
	m->body_len = src->body_len;
	m->tail_used = src->tail_used;
	m->nheaders = src->nheaders;
	m->has_reply_to = src->has_reply_to;
	/* Relaxed: single words (see "Mutation" in quay/msg.h); m is ours. */
	m->priority = __atomic_load_n(&src->priority, __ATOMIC_RELAXED);
	m->attempts = __atomic_load_n(&src->attempts, __ATOMIC_RELAXED);
	m->correlation_id = __atomic_load_n(&src->correlation_id, __ATOMIC_RELAXED);
	m->created_ns = __atomic_load_n(&src->created_ns, __ATOMIC_RELAXED);
	m->enqueued_ns = __atomic_load_n(&src->enqueued_ns, __ATOMIC_RELAXED);
	m->not_before_ns = __atomic_load_n(&src->not_before_ns, __ATOMIC_RELAXED);
	m->expires_ns = __atomic_load_n(&src->expires_ns, __ATOMIC_RELAXED);
	*out = m;
	return 0;
}

/* ---- relative times ------------------------------------------------ */

/* now + d, or -EINVAL when it would pass INT64_MAX. */
static int
from_now(const quay_msg *msg, int64_t d, int64_t *at)
{
	int64_t now = quayi_pool_now(msg->pool);

	if (now < 0 || d > INT64_MAX - now)
		return -EINVAL;
	*at = now + d;
	return 0;
}

int
quay_msg_set_ttl_ns(quay_msg *msg, int64_t ttl_ns)
{
	int64_t at;

	if (msg == NULL || ttl_ns <= 0 || from_now(msg, ttl_ns, &at) != 0)
		return -EINVAL;
	return quay_msg_set_expires_ns(msg, at);
}

int
quay_msg_set_delay_ns(quay_msg *msg, int64_t delay_ns)
{
	int64_t at;

	if (msg == NULL || delay_ns < 0)
		return -EINVAL;
	if (delay_ns == 0)
		return quay_msg_set_not_before_ns(msg, 0);
	if (from_now(msg, delay_ns, &at) != 0)
		return -EINVAL;
	return quay_msg_set_not_before_ns(msg, at);
}

/* ---- body ------------------------------------------------------------ */

/* Only the sole holder may restructure a message. Relaxed: the caller
 * holds a reference, so a count of 1 is its own. */
static bool
shared(const quay_msg *m)
{
	return __atomic_load_n(&m->refcount, __ATOMIC_RELAXED) != 1;
}

int
quay_msg_set_body_len(quay_msg *msg, size_t len)
{
	if (msg == NULL || shared(msg))
		return -EINVAL;
	if (len > (size_t)msg->capacity - msg->tail_used)
		return -EMSGSIZE;
	msg->body_len = (uint32_t)len;
	return 0;
}

int
quay_msg_set_body(quay_msg *msg, const void *data, size_t len)
{
	if (msg == NULL || (data == NULL && len != 0) || shared(msg))
		return -EINVAL;
	if (len > (size_t)msg->capacity - msg->tail_used)
		return -EMSGSIZE;
	if (len != 0)
		memmove(quayi_msg_data(msg), data, len); /* data may be the body itself */
	msg->body_len = (uint32_t)len;
	return 0;
}

/* ---- header records ---------------------------------------------------- */

struct rec {
	unsigned char *at; /* start of the record */
	size_t size;
	unsigned klen;
	const char *key;
	const unsigned char *val;
	uint32_t vlen;
};

static unsigned char *
tail_start(const quay_msg *m)
{
	return quayi_msg_data(m) + m->capacity - m->tail_used;
}

static unsigned char *
tail_end(const quay_msg *m)
{
	return quayi_msg_data(m) + m->capacity;
}

static void
rec_parse(unsigned char *at, struct rec *r)
{
	r->at = at;
	r->klen = at[0];
	memcpy(&r->vlen, at + 4, sizeof(r->vlen));
	r->key = (const char *)(at + REC_HDR);
	r->val = at + REC_HDR + r->klen + 1;
	r->size = REC_HDR + r->klen + 1 + (size_t)r->vlen;
}

/* Find the record with this key (klen 0: the reply-to). */
static bool
rec_find(const quay_msg *m, const char *key, size_t klen, struct rec *r)
{
	for (unsigned char *p = tail_start(m), *end = tail_end(m); p < end; p += r->size) {
		rec_parse(p, r);
		if (r->klen == klen && memcmp(r->key, key, klen) == 0)
			return true;
	}
	return false;
}

static void
rec_remove(quay_msg *m, const struct rec *r)
{
	unsigned char *start = tail_start(m);

	memmove(start + r->size, start, (size_t)(r->at - start));
	m->tail_used -= (uint32_t)r->size;
}

static void
rec_append(quay_msg *m, const char *key, size_t klen, const void *val, size_t vlen)
{
	size_t size = REC_HDR + klen + 1 + vlen;
	unsigned char *at = tail_start(m) - size;
	uint32_t v32 = (uint32_t)vlen;

	memset(at, 0, REC_HDR);
	at[0] = (unsigned char)klen;
	memcpy(at + 4, &v32, sizeof(v32));
	memcpy(at + REC_HDR, key, klen);
	at[REC_HDR + klen] = '\0';
	if (vlen != 0)
		memcpy(at + REC_HDR + klen + 1, val, vlen);
	m->tail_used += (uint32_t)size;
}

/* Whether [p, p + len) overlaps the part of m that set/del write or move:
 * from the end of the body (the free gap new records are written into)
 * to the end of the header records. The body itself is a safe source.
 * A len larger than the buffer is left to the size check (-EMSGSIZE). */
static bool
overlaps_tail(const quay_msg *m, const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p;
	uintptr_t lo = (uintptr_t)((const unsigned char *)quay_msg_body(m) + quay_msg_body_len(m));
	uintptr_t hi = (uintptr_t)tail_end(m);

	return len <= quay_msg_capacity(m) && a < hi && (a >= lo || lo - a < len);
}

/* Replace (or add, or with val NULL and del, remove) the record key. */
static int
rec_set(quay_msg *m, const char *key, size_t klen, const void *val, size_t vlen)
{
	struct rec old;
	bool have = rec_find(m, key, klen, &old);
	size_t size = REC_HDR + klen + 1 + vlen;
	size_t avail = quay_msg_room(m) + (have ? old.size : 0);

	/* -ENOSPC: out of header room (a body that does not fit is
	 * -EMSGSIZE, "too large"). */
	if (vlen > UINT32_MAX || size > avail)
		return -ENOSPC;
	if (klen != 0 && !have && m->nheaders >= QUAY_MSG_HEADERS_MAX)
		return -ENOSPC;
	if (have)
		rec_remove(m, &old);
	rec_append(m, key, klen, val, vlen);
	if (klen != 0 && !have)
		m->nheaders++;
	if (klen == 0)
		m->has_reply_to = 1;
	return 0;
}

static size_t
key_len(const char *key)
{
	/* One more than the limit, to see that it is too long. */
	return strnlen(key, (size_t)QUAY_MSG_KEY_MAX + 1);
}

int
quay_msg_set_header(quay_msg *msg, const char *key, const void *value, size_t len)
{
	char k[QUAY_MSG_KEY_MAX + 1];
	size_t klen;

	if (msg == NULL || key == NULL || (value == NULL && len != 0) || shared(msg))
		return -EINVAL;
	klen = key_len(key);
	if (klen == 0 || klen > QUAY_MSG_KEY_MAX || (len != 0 && overlaps_tail(msg, value, len)))
		return -EINVAL;
	/* The key may come from quay_msg_header_at() of this very message:
	 * copy it before the records move. */
	memcpy(k, key, klen);
	return rec_set(msg, k, klen, value, len);
}

int
quay_msg_set_header_str(quay_msg *msg, const char *key, const char *value)
{
	size_t len;

	if (msg == NULL || value == NULL)
		return -EINVAL;
	/* Bounded: a string longer than the data area cannot fit, and
	 * quay_msg_set_header() refuses it (-ENOSPC) without reading it. */
	len = strnlen(value, (size_t)msg->capacity + 1);
	return quay_msg_set_header(msg, key, value, len);
}

int
quay_msg_get_header_str(const quay_msg *msg, const char *key, char *buf, size_t cap)
{
	const void *v;
	size_t len;
	int rc;

	if (buf == NULL || cap == 0)
		return -EINVAL;
	buf[0] = '\0';
	rc = quay_msg_get_header(msg, key, &v, &len);
	if (rc != 0)
		return rc;
	if (memchr(v, '\0', len) != NULL)
		return -EINVAL;
	if (len >= cap)
		return -ENOSPC;
	memcpy(buf, v, len);
	buf[len] = '\0';
	return 0;
}

int
quay_msg_get_header(const quay_msg *msg, const char *key, const void **value, size_t *len)
{
	struct rec r;
	size_t klen;

	if (msg == NULL || key == NULL)
		return -EINVAL;
	klen = key_len(key);
	if (klen == 0 || klen > QUAY_MSG_KEY_MAX || !rec_find(msg, key, klen, &r))
		return -ENOENT;
	if (value != NULL)
		*value = r.val;
	if (len != NULL)
		*len = r.vlen;
	return 0;
}

int
quay_msg_del_header(quay_msg *msg, const char *key)
{
	struct rec r;
	size_t klen;

	if (msg == NULL || key == NULL || shared(msg))
		return -EINVAL;
	klen = key_len(key);
	if (klen == 0 || klen > QUAY_MSG_KEY_MAX || !rec_find(msg, key, klen, &r))
		return -ENOENT;
	rec_remove(msg, &r);
	msg->nheaders--;
	return 0;
}

int
quay_msg_header_at(const quay_msg *msg, unsigned i, const char **key, const void **value, size_t *len)
{
	struct rec r;
	unsigned want, k = 0;

	if (msg == NULL)
		return -EINVAL;
	if (i >= msg->nheaders)
		return -ENOENT;
	/* Records are newest first; the i-th oldest is the (n-1-i)-th. */
	want = msg->nheaders - 1u - i;
	for (unsigned char *p = tail_start(msg), *end = tail_end(msg); p < end; p += r.size) {
		rec_parse(p, &r);
		if (r.klen == 0)
			continue;
		if (k++ == want) {
			if (key != NULL)
				*key = r.key;
			if (value != NULL)
				*value = r.val;
			if (len != NULL)
				*len = r.vlen;
			return 0;
		}
	}
	return -ENOENT; /* unreachable while nheaders is right */
}

int
quay_msg_set_reply_to(quay_msg *msg, const char *subject)
{
	size_t len;
	struct rec r;

	if (msg == NULL || shared(msg))
		return -EINVAL;
	len = subject ? strnlen(subject, (size_t)QUAY_MSG_REPLY_TO_MAX + 1) : 0;
	if (len > QUAY_MSG_REPLY_TO_MAX || (len != 0 && overlaps_tail(msg, subject, len)))
		return -EINVAL;
	if (len == 0) {
		if (rec_find(msg, "", 0, &r)) {
			rec_remove(msg, &r);
			msg->has_reply_to = 0;
		}
		return 0;
	}
	/* The value carries its NUL, so quay_msg_reply_to() is a C string. */
	return rec_set(msg, "", 0, subject, len + 1);
}

const char *
quay_msg_reply_to(const quay_msg *msg)
{
	struct rec r;

	if (msg == NULL || !msg->has_reply_to || !rec_find(msg, "", 0, &r))
		return NULL;
	return (const char *)r.val;
}
