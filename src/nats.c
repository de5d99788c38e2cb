/* SPDX-License-Identifier: MIT */
/*
 * The NATS module: one libnats connection, export bridges (a bus
 * subscription drained by a thread that publishes to NATS), import
 * bridges (a NATS subscription whose callback publishes on the bus), and
 * the request/reply routes between them (docs/NATS.md).
 *
 * Reply routes. A local request exported to NATS gets the NATS reply
 * subject "_QUAY.<origin>.<conn>.<bridge>.<request id>.<local reply-to>";
 * the handle's one subscription on "_QUAY.<origin>.<conn>.>" takes the
 * reply, and publishes it on the local reply-to of the bridge's bus with
 * the request id as correlation id (whatever the responder put there).
 * A NATS request imported into a bus gets the local reply-to
 * "_QUAYR.<origin>.<conn>.<bus bridge>", and its NATS reply subject is
 * kept in a table under the local request's id; the per-bus reply bridge
 * subscribed to that subject (a bus subscriber sees the message, not the
 * subject) finds the NATS reply subject by the reply's correlation id,
 * which quay_bus_reply() set to that id.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bus_internal.h"
#include "clock.h"
#include "nats_internal.h"
#include "quay_internal.h"

#define H_ORIGIN "Quay-Origin"
#define H_CORR "Quay-Correlation-Id"
#define H_PRIO "Quay-Priority"
#define H_ENC "Quay-Enc"
#define LOCAL_REPLY_PREFIX "_QUAYR."

enum { BR_EXPORT, BR_IMPORT, BR_REPLY };

/* A bridge thread with nothing to do polls SPIN_POLLS times (the last
 * SPIN_YIELDS of them after a sched_yield) before it sleeps. */
#define SPIN_POLLS 256u
#define SPIN_YIELDS 8u
/* How long close waits for each libnats completion (pthread conditions on
 * the default clock: CLOCK_REALTIME). */
#define CLOSE_WAIT_NS (5 * QUAYI_NS_PER_SEC)

struct nbridge {
	quay_nats *n;
	int kind;
	unsigned idx;
	quay_bus *bus;
	char subject[QUAY_BUS_SUBJECT_MAX + 1];
	char group[QUAY_BUS_NAME_MAX + 1];
	bool literal;     /* export: the pattern has no wildcard */
	quay_sub *sub;    /* literal export, reply: the bus subscription */
	quay_ring *ring;  /* wildcard export: struct tapent, filled by the tap */
	struct ntap *tap; /* wildcard export: its bus's tap */
	pthread_t thr;
	bool thr_started;
	/* NATS-S1 (close, release) -> NATS-S2 (the bridge thread, acquire;
	 * then it drains). */
	int stop;
	natsSubscription *nsub; /* import */
	pthread_mutex_t lk;
	pthread_cond_t cv;
	bool complete; /* import: libnats's last callback returned */
	quay_counter *c_fwd, *c_recv, *c_drop;
	quay_gauge *g_pending;
};

/* A wildcard export takes its messages from the bus's publish tap
 * (bus_internal.h), which knows the subject a message was published on:
 * one tap per (handle, bus), listing the wildcard exports of that bus,
 * and with QUAY_NATS_DIRECT every export and the reply bridge of it. */
struct ntap {
	struct quayi_bus_tap tap; /* fn = tap_publish, arg = this */
	quay_bus *bus;
	quay_nats *n;
	/* NATS-T1: tap_add()'s release store of nb after b[nb] is set ->
	 * NATS-T2: the tap's acquire load; entries never change after. */
	unsigned nb;
	struct nbridge *b[QUAY_NATS_BRIDGES_MAX];
};

/* One message of a wildcard export, with the subject it was published on. */
struct tapent {
	quay_msg *m;
	uint32_t len;
	char subj[QUAY_BUS_SUBJECT_MAX + 1];
};

/* ---- process origin ------------------------------------------------ */

static pthread_mutex_t origin_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t origin_pid;
static uint64_t origin_id;
/* The process's connected handles (origin_lock; reset in a forked child,
 * where the parent's connections do not run). */
static quay_nats *handles;
static unsigned nhandles;
static pid_t handles_pid;
/* Relaxed (__atomic): a connection number for labels and reply subjects. */
static unsigned conn_seq;

/* This process's origin id; a forked child gets its own. */
static void
process_origin(char out[17])
{
	pthread_mutex_lock(&origin_lock);
	if (origin_pid != getpid()) {
		uint64_t v = 0;
		if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
			v = (uint64_t)quayi_real_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
		}
		origin_id = v;
		origin_pid = getpid();
	}
	snprintf(out, 17, "%016" PRIx64, origin_id);
	pthread_mutex_unlock(&origin_lock);
}

/* List n, connected, among the process's handles. The first one is sole
 * (sends header-less messages without the origin header). A second one
 * ends that: the first sends the origin from now on, and what it sent
 * without it is flushed to the server before n's connect returns, so
 * that n's imports (subscribed later) never receive it. A first handle
 * that is disconnected cannot be flushed: what it buffered header-less
 * may then reach n's imports once after it reconnects (docs/NATS.md). */
static void
handle_register(quay_nats *n)
{
	pthread_mutex_lock(&origin_lock);
	if (handles_pid != getpid()) {
		handles = NULL;
		nhandles = 0;
		handles_pid = getpid();
	}
	n->sole = nhandles == 0;
	if (nhandles == 1) {
		quay_nats *first = handles;
		/* The write side waits for every publisher that read sole as
		 * true: their header-less messages are in libnats's buffer. */
		pthread_rwlock_wrlock(&first->slock);
		first->sole = false;
		pthread_rwlock_unlock(&first->slock);
		/* Not a handle being closed (by another thread): its close
		 * flushes and closes the connection itself. */
		if (!first->closing)
			(void)natsConnection_FlushTimeout(first->nc, 2000);
	}
	n->hnext = handles;
	handles = n;
	nhandles++;
	pthread_mutex_unlock(&origin_lock);
}

/* Close began: handle_register() no longer flushes n's connection (close
 * destroys it before it unlists n). */
static void
handle_closing(quay_nats *n)
{
	pthread_mutex_lock(&origin_lock);
	n->closing = true;
	pthread_mutex_unlock(&origin_lock);
}

/* Unlist n; the one handle left, if any, is sole again (no other handle
 * of the process has a subscription any more). */
static void
handle_unregister(quay_nats *n)
{
	pthread_mutex_lock(&origin_lock);
	if (handles_pid == getpid()) {
		for (quay_nats **p = &handles; *p != NULL; p = &(*p)->hnext) {
			if (*p == n) {
				*p = n->hnext;
				nhandles--;
				break;
			}
		}
		if (nhandles == 1) {
			pthread_rwlock_wrlock(&handles->slock);
			handles->sole = true;
			pthread_rwlock_unlock(&handles->slock);
		}
	}
	pthread_mutex_unlock(&origin_lock);
}

int
quayi_nats_err(natsStatus s)
{
	/* clang-format off */
	switch (s) {
	case NATS_OK:                  return 0;
	case NATS_INSUFFICIENT_BUFFER: return -ENOBUFS;
	case NATS_NO_SERVER:           return -ECONNREFUSED;
	case NATS_TIMEOUT:             return -ETIMEDOUT;
	case NATS_CONNECTION_CLOSED:   return -ENOTCONN;
	case NATS_CONNECTION_DISCONNECTED: return -ENOTCONN;
	case NATS_INVALID_ARG:
	case NATS_INVALID_SUBJECT:
	case NATS_INVALID_QUEUE_NAME:  return -EINVAL;
	case NATS_NO_MEMORY:           return -ENOMEM;
	case NATS_NOT_FOUND:           return -ENOENT;
	case NATS_MAX_PAYLOAD:         return -EMSGSIZE;
	case NATS_NOT_PERMITTED:
	case NATS_CONNECTION_AUTH_FAILED: return -EACCES;
	case NATS_NO_SERVER_SUPPORT:   return -ENOTSUP;
	default:                       return -EIO;
	}
	/* clang-format on */
}

/* ---- header value encoding (NATS header values are text) ----------- */

static bool
pct_plain(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '%' && c != ':';
}

/* Percent-encode src[0..len) into dst (NUL-terminated); dst has room for
 * 3 * len + 1 bytes. */
static void
pct_encode(char *dst, const unsigned char *src, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < len; i++) {
		if (pct_plain(src[i])) {
			*dst++ = (char)src[i];
		} else {
			*dst++ = '%';
			*dst++ = hex[src[i] >> 4];
			*dst++ = hex[src[i] & 15];
		}
	}
	*dst = '\0';
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode in place; returns the length, or -1 if malformed. */
static ssize_t
pct_decode(char *s)
{
	char *w = s;
	for (const char *r = s; *r != '\0'; r++) {
		if (*r == '%') {
			int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);
			if (hi < 0 || lo < 0)
				return -1;
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	return w - s;
}

/* ---- publish (local -> NATS) --------------------------------------- */

static void
note_refusal(quay_nats *n, int err)
{
	quay_counter_inc(n->c_refused);
	/* Relaxed: a diagnostic word; orders nothing. */
	__atomic_store_n(&n->last_error, err, __ATOMIC_RELAXED);
}

/* v in decimal into out (room for 21 bytes); returns out. */
static const char *
u64_dec(char *out, uint64_t v)
{
	char t[21];
	size_t k = 0, i = 0;

	do {
		t[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (k > 0)
		out[i++] = t[--k];
	out[i] = '\0';
	return out;
}

/* Build the NATS message for msg on subject with NATS reply subject
 * reply (NULL: none). */
int
quayi_nats_build(quay_nats *n, const char *subject, const char *reply, const quay_msg *msg, natsMsg **out)
{
	natsMsg *nm = NULL;
	natsStatus s;
	char num[24];
	size_t len = quay_msg_body_len(msg);
	unsigned nh = quay_msg_header_count(msg);
	char sbuf[512], *buf = NULL;
	bool enc = false;

	if (len > INT_MAX)
		return -EMSGSIZE;
	s = natsMsg_Create(&nm, subject, reply, (const char *)quay_msg_body(msg), (int)len);
	if (s != NATS_OK)
		return quayi_nats_err(s);
	s = natsMsgHeader_Set(nm, H_ORIGIN, n->origin);
	if (s == NATS_OK && quay_msg_correlation_id(msg) != 0) {
		s = natsMsgHeader_Set(nm, H_CORR, u64_dec(num, quay_msg_correlation_id(msg)));
	}
	if (s == NATS_OK && quay_msg_priority(msg) != 0) {
		s = natsMsgHeader_Set(nm, H_PRIO, u64_dec(num, quay_msg_priority(msg)));
	}
	for (unsigned i = 0; s == NATS_OK && i < nh; i++) {
		const char *key;
		const void *val;
		size_t vlen, klen;
		if (quay_msg_header_at(msg, i, &key, &val, &vlen) != 0)
			continue;
		/* Local-only headers stay home. */
		if (strcmp(key, QUAY_NATS_H_FROM) == 0)
			continue;
		klen = strlen(key);
		/* Most headers fit the stack buffer; a long one gets its own. */
		if (3 * (klen + vlen) + 2 <= sizeof(sbuf)) {
			buf = sbuf;
		} else {
			buf = quayi_alloc(n->alloc, 3 * (klen + vlen) + 2);
			if (buf == NULL) {
				s = NATS_NO_MEMORY;
				break;
			}
		}
		pct_encode(buf, (const unsigned char *)key, klen);
		pct_encode(buf + strlen(buf) + 1, val, vlen);
		s = natsMsgHeader_Set(nm, buf, buf + strlen(buf) + 1);
		if (buf != sbuf)
			quayi_free(n->alloc, buf, 3 * (klen + vlen) + 2);
		enc = true;
	}
	if (s == NATS_OK && enc)
		s = natsMsgHeader_Set(nm, H_ENC, "pct");
	if (s != NATS_OK) {
		natsMsg_Destroy(nm);
		return quayi_nats_err(s);
	}
	*out = nm;
	return 0;
}

/* Publish msg on subject (reply: the NATS reply subject or NULL). A
 * message with no headers, priority or correlation id from a sole handle
 * goes out header-less through the calls that build no natsMsg (no
 * malloc, no header table). */
static int
publish_mapped(quay_nats *n, const char *subject, const char *reply, const quay_msg *msg)
{
	natsMsg *nm;
	natsStatus s;
	int r;

	if (quay_msg_header_count(msg) == 0 && quay_msg_priority(msg) == 0 &&
	    quay_msg_correlation_id(msg) == 0 && quay_msg_body_len(msg) <= INT_MAX) {
		const void *body = quay_msg_body(msg);
		int len = (int)quay_msg_body_len(msg);

		/* Read side: a new handle's write side waits for this publish
		 * to be in libnats's buffer (handle_register()). */
		pthread_rwlock_rdlock(&n->slock);
		if (n->sole) {
			s = reply != NULL ? natsConnection_PublishRequest(n->nc, subject, reply, body, len) :
			                    natsConnection_Publish(n->nc, subject, body, len);
			pthread_rwlock_unlock(&n->slock);
			goto sent;
		}
		pthread_rwlock_unlock(&n->slock);
	}
	r = quayi_nats_build(n, subject, reply, msg, &nm);
	if (r != 0) {
		note_refusal(n, r);
		return r;
	}
	s = natsConnection_PublishMsg(n->nc, nm);
	natsMsg_Destroy(nm);
sent:
	if (s != NATS_OK) {
		r = quayi_nats_err(s);
		note_refusal(n, r);
		return r;
	}
	return 0;
}

/* Send what libnats buffered now rather than after its flusher's 1 ms
 * nap, as natsConnection_Request does for its requests (libnats has no
 * public call that writes without a PING: this writes one, and waits at
 * most 1 ms for its PONG; the result does not matter). */
static void
flush_now(quay_nats *n)
{
	(void)natsConnection_FlushTimeout(n->nc, 1);
}

int
quay_nats_publish(quay_nats *n, const char *subject, const quay_msg *msg)
{
	if (n == NULL || subject == NULL || msg == NULL || quay_bus_subject_check(subject, false) != 0)
		return -EINVAL;
	return publish_mapped(n, subject, NULL, msg);
}

/* Forward one message an export bridge took from its bus, published
 * there on subject. Returns true if it was a request (a reply-to). */
static bool
bridge_forward(struct nbridge *b, const char *subject, const quay_msg *m)
{
	quay_nats *n = b->n;
	char reply[QUAY_BUS_SUBJECT_MAX + 1];
	const char *rt;
	int r;

	if (quay_msg_get_header(m, QUAY_NATS_H_FROM, NULL, NULL) == 0) {
		/* Came from NATS: never export it again (loop rule). */
		return false;
	}
	rt = quay_msg_reply_to(m);
	if (rt != NULL) {
		int k = snprintf(reply, sizeof(reply), "%s%u.%" PRIu64 ".%s", n->reply_prefix, b->idx,
		    quay_msg_id(m), rt);
		if (k < 0 || (size_t)k >= sizeof(reply)) {
			quay_counter_inc(n->c_invalid);
			quay_counter_inc(b->c_drop);
			return false;
		}
	}
	r = publish_mapped(n, subject, rt != NULL ? reply : NULL, m);
	if (r == 0)
		quay_counter_inc(b->c_fwd);
	else
		quay_counter_inc(b->c_drop);
	return rt != NULL && r == 0;
}

static void reply_out(struct nbridge *b, const quay_msg *m);

/* The tap of a bus with wildcard or direct exports. A direct export
 * (QUAY_NATS_DIRECT) publishes each matching message to NATS here; a
 * direct reply bridge publishes each reply on its subject to its NATS
 * requester here. Any other export whose pattern matches subject gets a
 * reference of every message with the subject (waiting for room as a
 * QUAY_SUB_BLOCK subscription would, then counted as dropped). On the
 * publisher's thread, inside the bus's read-side section (subject is
 * NUL-terminated at len). */
static int
tap_publish(void *arg, const char *subject, uint32_t len, quay_msg *const *msgs, size_t n)
{
	struct ntap *t = arg;
	/* NATS-T2: acquire; pairs with NATS-T1 in tap_add(). */
	unsigned nb = __atomic_load_n(&t->nb, __ATOMIC_ACQUIRE);
	struct tapent e;
	int took = 0;
	bool request = false;

	for (unsigned i = 0; i < nb; i++) {
		struct nbridge *b = t->b[i];

		if (b->kind == BR_REPLY) {
			if (strcmp(b->subject, subject) != 0)
				continue;
			for (size_t j = 0; j < n; j++)
				reply_out(b, msgs[j]);
			took = 1;
			continue;
		}
		if (b->literal ? strcmp(b->subject, subject) != 0 : !quay_bus_match(b->subject, subject))
			continue;
		for (size_t j = 0; j < n; j++) {
			/* Came from NATS: never export it again (loop rule). */
			if (quay_msg_get_header(msgs[j], QUAY_NATS_H_FROM, NULL, NULL) == 0)
				continue;
			if (b->ring == NULL) {
				/* Direct: the message is only read. */
				request |= bridge_forward(b, subject, msgs[j]);
				took = 1;
				continue;
			}
			if (quay_msg_ref(msgs[j]) != 0) {
				quay_counter_inc(b->c_drop);
				continue;
			}
			e.m = msgs[j];
			e.len = len;
			memcpy(e.subj, subject, len);
			e.subj[len] = '\0';
			/* Release (the ring's push): the export thread's pop
			 * sees the entry and the message. */
			if (quay_ring_push_wait(b->ring, &e, QUAY_SUB_BLOCK_TIMEOUT_DEFAULT) != 0) {
				(void)quay_msg_unref(msgs[j]);
				quay_counter_inc(b->c_drop);
				continue;
			}
			took = 1;
		}
	}
	if (request)
		flush_now(t->n);
	return took;
}

static void *
export_thread(void *arg)
{
	struct nbridge *b = arg;
	union {
		quay_msg *m[32];
		struct tapent e[8];
	} u;
	size_t max = b->ring != NULL ? 8 : 32;
	bool request = false;

	for (;;) {
		size_t k = b->ring != NULL ? quay_ring_pop_burst(b->ring, u.e, max) :
		                             quay_sub_receive_burst(b->sub, u.m, max);
		/* A short spin before sleeping: a bridge that sleeps between
		 * messages makes every publisher pay a futex wake-up and
		 * itself a context switch per message. */
		for (unsigned spin = 0; k == 0 && spin < SPIN_POLLS; spin++) {
			if (spin < SPIN_POLLS - SPIN_YIELDS)
				quayi_cpu_relax();
			else
				sched_yield();
			k = b->ring != NULL ? quay_ring_pop_burst(b->ring, u.e, max) :
			                      quay_sub_receive_burst(b->sub, u.m, max);
		}
		if (k == 0) {
			int r;
			/* NATS-S2: acquire; pairs with close's release store
			 * (NATS-S1); the queue is drained below before leaving
			 * (no producer is left by then). */
			if (__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE) != 0)
				break;
			r = b->ring != NULL ? quay_ring_pop_wait(b->ring, &u.e[0], 100000000) :
			                      quay_sub_receive(b->sub, &u.m[0], 100000000);
			if (r == -ETIMEDOUT)
				continue;
			if (r != 0)
				break;
			k = 1;
		}
		for (size_t i = 0; i < k; i++) {
			if (b->ring != NULL) {
				request |= bridge_forward(b, u.e[i].subj, u.e[i].m);
				(void)quay_msg_unref(u.e[i].m);
			} else {
				if (b->kind == BR_REPLY)
					reply_out(b, u.m[i]);
				else
					request |= bridge_forward(b, b->subject, u.m[i]);
				(void)quay_msg_unref(u.m[i]);
			}
		}
		/* Requests of this burst go out now (one flush per burst). */
		if (request)
			flush_now(b->n);
		request = false;
		quay_gauge_set(b->g_pending,
		    (int64_t)(b->ring != NULL ? quay_ring_count(b->ring) : quay_sub_pending(b->sub)));
	}
	return NULL;
}

/* ---- reply table (imported requests) ------------------------------- */

#define RTAB_SIZE 4096u
#define RTAB_PROBE 8u

static size_t
rtab_slot(uint64_t id)
{
	return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 52) & (RTAB_SIZE - 1);
}

static void
rtab_put(quay_nats *n, uint64_t id, const char *subj)
{
	size_t h = rtab_slot(id), pick = h;

	pthread_mutex_lock(&n->rlock);
	for (unsigned i = 0; i < RTAB_PROBE; i++) {
		size_t k = (h + i) & (RTAB_SIZE - 1);
		if (n->rtab[k].id == 0) {
			pick = k;
			break;
		}
	}
	if (n->rtab[pick].id != 0)
		quay_counter_inc(n->c_invalid); /* an unanswered request forgotten */
	n->rtab[pick].id = id;
	snprintf(n->rtab[pick].subj, sizeof(n->rtab[pick].subj), "%s", subj);
	pthread_mutex_unlock(&n->rlock);
}

static bool
rtab_take(quay_nats *n, uint64_t id, char *subj)
{
	size_t h = rtab_slot(id);
	bool found = false;

	if (id == 0)
		return false;
	pthread_mutex_lock(&n->rlock);
	for (unsigned i = 0; i < RTAB_PROBE; i++) {
		size_t k = (h + i) & (RTAB_SIZE - 1);
		if (n->rtab[k].id == id) {
			memcpy(subj, n->rtab[k].subj, sizeof(n->rtab[k].subj));
			n->rtab[k].id = 0;
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&n->rlock);
	return found;
}

/* A local responder's reply to an imported NATS request. */
static void
reply_out(struct nbridge *b, const quay_msg *m)
{
	char subj[QUAY_BUS_SUBJECT_MAX + 1];

	if (!rtab_take(b->n, quay_msg_correlation_id(m), subj)) {
		quay_counter_inc(b->c_drop); /* a second or unknown reply */
		return;
	}
	if (publish_mapped(b->n, subj, NULL, m) == 0)
		quay_counter_inc(b->c_fwd);
	else
		quay_counter_inc(b->c_drop);
}

/* ---- NATS -> local -------------------------------------------------- */

/* Make the local copy of a NATS message: body, headers, priority,
 * correlation id, QUAY_NATS_H_FROM. */
int
quayi_nats_make_local(quay_nats *n, natsMsg *nm, const char *reply_to, quay_msg **out)
{
	const char **keys = NULL;
	const char *v;
	int nk = 0, len = natsMsg_GetDataLength(nm);
	size_t need = (size_t)len + 64 + 32;
	bool enc;
	quay_msg *m;
	int r;

	enc = natsMsgHeader_Get(nm, H_ENC, &v) == NATS_OK && strcmp(v, "pct") == 0;
	if (natsMsgHeader_Keys(nm, &keys, &nk) != NATS_OK) {
		keys = NULL;
		nk = 0;
	}
	for (int i = 0; i < nk; i++)
		if (natsMsgHeader_Get(nm, keys[i], &v) == NATS_OK)
			need += 10 + strlen(keys[i]) + strlen(v);
	if (reply_to != NULL)
		need += 10 + strlen(reply_to);
	r = quay_msg_alloc(n->pool, need, &m);
	if (r != 0)
		goto out;
	r = quay_msg_set_body(m, natsMsg_GetData(nm), (size_t)len);
	for (int i = 0; r == 0 && i < nk; i++) {
		char kbuf[QUAY_MSG_KEY_MAX + 1], vsmall[256];
		char *vbuf;
		size_t vlen0;
		ssize_t kl, vl;
		if (natsMsgHeader_Get(nm, keys[i], &v) != NATS_OK)
			continue;
		if (strcmp(keys[i], H_CORR) == 0) {
			(void)quay_msg_set_correlation_id(m, strtoull(v, NULL, 10));
			continue;
		}
		if (strcmp(keys[i], H_PRIO) == 0) {
			unsigned long p = strtoul(v, NULL, 10);
			(void)quay_msg_set_priority(m,
			    p > QUAY_MSG_PRIORITY_MAX ? QUAY_MSG_PRIORITY_MAX : (unsigned)p);
			continue;
		}
		if (strcmp(keys[i], H_ORIGIN) == 0 || strcmp(keys[i], H_ENC) == 0)
			continue;
		if (strlen(keys[i]) > QUAY_MSG_KEY_MAX)
			continue;
		strcpy(kbuf, keys[i]);
		vlen0 = strlen(v);
		vbuf = vlen0 < sizeof(vsmall) ? vsmall : quayi_alloc(n->alloc, vlen0 + 1);
		if (vbuf == NULL) {
			r = -ENOMEM;
			break;
		}
		memcpy(vbuf, v, vlen0 + 1);
		kl = enc ? pct_decode(kbuf) : (ssize_t)strlen(kbuf);
		vl = enc ? pct_decode(vbuf) : (ssize_t)strlen(vbuf);
		if (kl > 0 && vl >= 0 && memchr(kbuf, '\0', (size_t)kl) == NULL) {
			kbuf[kl] = '\0';
			r = quay_msg_set_header(m, kbuf, vbuf, (size_t)vl);
		}
		if (vbuf != vsmall)
			quayi_free(n->alloc, vbuf, vlen0 + 1);
	}
	if (r == 0) {
		if (natsMsgHeader_Get(nm, H_ORIGIN, &v) != NATS_OK)
			v = "nats";
		r = quay_msg_set_header(m, QUAY_NATS_H_FROM, v, strlen(v));
	}
	if (r == 0 && reply_to != NULL)
		r = quay_msg_set_reply_to(m, reply_to);
	if (r != 0) {
		(void)quay_msg_unref(m);
		goto out;
	}
	*out = m;
out:
	free((void *)keys); /* quay-alloc: libnats's (natsMsgHeader_Keys) */
	return r;
}

static struct nbridge *reply_bridge_of(quay_nats *n, quay_bus *bus);

/* libnats callback of an import subscription (its delivery thread). */
static void
import_cb(natsConnection *nc, natsSubscription *sub, natsMsg *nm, void *closure)
{
	struct nbridge *b = closure;
	quay_nats *n = b->n;
	const char *subj = natsMsg_GetSubject(nm), *reply = natsMsg_GetReply(nm), *v;
	struct nbridge *rb = NULL;
	quay_msg *m;
	int r;

	(void)nc;
	(void)sub;
	if (natsMsgHeader_Get(nm, H_ORIGIN, &v) == NATS_OK && strcmp(v, n->origin) == 0) {
		quay_counter_inc(n->c_echo);
		goto done;
	}
	if (quay_bus_subject_check(subj, false) != 0 ||
	    (reply != NULL && reply[0] != '\0' && strlen(reply) > QUAY_BUS_SUBJECT_MAX)) {
		quay_counter_inc(n->c_invalid);
		quay_counter_inc(b->c_drop);
		goto done;
	}
	if (reply != NULL && reply[0] != '\0') {
		rb = reply_bridge_of(n, b->bus);
		if (rb == NULL) {
			quay_counter_inc(b->c_drop);
			goto done;
		}
	}
	r = quayi_nats_make_local(n, nm, rb != NULL ? rb->subject : NULL, &m);
	if (r != 0) {
		quay_counter_inc(b->c_drop);
		goto done;
	}
	if (rb != NULL)
		rtab_put(n, quay_msg_id(m), reply);
	r = quay_bus_publish(b->bus, subj, m);
	if (r < 0) {
		if (rb != NULL)
			(void)rtab_take(n, quay_msg_id(m), (char[QUAY_BUS_SUBJECT_MAX + 1]){ 0 });
		(void)quay_msg_unref(m);
		quay_counter_inc(b->c_drop);
	} else {
		quay_counter_inc(b->c_recv);
	}
done:
	natsMsg_Destroy(nm);
}

/* A reply to one of our exported requests:
 * "<reply_prefix><bridge>.<request id>.<local reply-to>". */
static void
reply_in_cb(natsConnection *nc, natsSubscription *sub, natsMsg *nm, void *closure)
{
	quay_nats *n = closure;
	const char *subj = natsMsg_GetSubject(nm);
	struct nbridge *b = NULL;
	unsigned long idx;
	uint64_t id;
	char *end;
	quay_msg *m;

	(void)nc;
	(void)sub;
	if (strncmp(subj, n->reply_prefix, n->reply_prefix_len) != 0)
		goto bad;
	idx = strtoul(subj + n->reply_prefix_len, &end, 10);
	if (*end != '.')
		goto bad;
	id = strtoull(end + 1, &end, 10);
	if (*end != '.' || quay_bus_subject_check(end + 1, false) != 0)
		goto bad;
	pthread_mutex_lock(&n->lock);
	if (idx < n->nbridges)
		b = n->bridges[idx];
	pthread_mutex_unlock(&n->lock);
	if (b == NULL)
		goto bad;
	if (quayi_nats_make_local(n, nm, NULL, &m) != 0) {
		quay_counter_inc(b->c_drop);
		goto done;
	}
	(void)quay_msg_set_correlation_id(m, id);
	if (quay_bus_publish(b->bus, end + 1, m) < 0) {
		(void)quay_msg_unref(m);
		quay_counter_inc(b->c_drop);
	} else {
		quay_counter_inc(n->c_replies);
	}
	goto done;
bad:
	quay_counter_inc(n->c_invalid);
done:
	natsMsg_Destroy(nm);
}

/* ---- connection callbacks ------------------------------------------ */

static void
on_disconnected(natsConnection *nc, void *closure)
{
	quay_nats *n = closure;
	(void)nc;
	quay_counter_inc(n->c_disconnects);
}

static void
on_reconnected(natsConnection *nc, void *closure)
{
	quay_nats *n = closure;
	(void)nc;
	quay_counter_inc(n->c_reconnects);
}

static void
on_closed(natsConnection *nc, void *closure)
{
	quay_nats *n = closure;
	(void)nc;
	pthread_mutex_lock(&n->cl_lock);
	n->cl_done = true;
	pthread_cond_broadcast(&n->cl_cond);
	pthread_mutex_unlock(&n->cl_lock);
}

static void
reply_sub_complete(void *closure)
{
	quay_nats *n = closure;
	pthread_mutex_lock(&n->cl_lock);
	n->reply_done = true;
	pthread_cond_broadcast(&n->cl_cond);
	pthread_mutex_unlock(&n->cl_lock);
}

static void
on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	quay_nats *n = closure;
	(void)nc;
	(void)sub;
	if (err == NATS_SLOW_CONSUMER)
		quay_counter_inc(n->c_slow);
	else
		__atomic_store_n(&n->last_error, quayi_nats_err(err),
		    __ATOMIC_RELAXED); /* relaxed: diagnostic */
}

/* ---- metrics ------------------------------------------------------- */

static int
handle_counter(quay_nats *n, const char *name, const char *help, quay_counter **out)
{
	struct quay_stats_label l = { "conn", n->conn_label };
	return quay_counter_create(n->stats, name, help, &l, 1, out);
}

static int
bridge_metrics(struct nbridge *b)
{
	static const char *kinds[] = { "export", "import", "reply" };
	struct quay_stats_label l[2] = { { "bridge", kinds[b->kind] }, { "subject", b->subject } };
	quay_stats *st = b->n->stats;
	int r;

	r = quay_counter_create(st, "quay_nats_forwarded_total", "Local messages published to NATS", l, 2,
	    &b->c_fwd);
	if (r == 0)
		r = quay_counter_create(st, "quay_nats_received_total",
		    "NATS messages published on the local bus", l, 2, &b->c_recv);
	if (r == 0)
		r = quay_counter_create(st, "quay_nats_dropped_total", "Messages a bridge lost, each counted",
		    l, 2, &b->c_drop);
	if (r == 0)
		r = quay_gauge_create(st, "quay_nats_pending", "Messages waiting in an export bridge", l, 2,
		    &b->g_pending);
	return r;
}

static void
bridge_free(struct nbridge *b)
{
	if (b == NULL)
		return;
	quay_counter_destroy(b->c_fwd);
	quay_counter_destroy(b->c_recv);
	quay_counter_destroy(b->c_drop);
	quay_gauge_destroy(b->g_pending);
	pthread_mutex_destroy(&b->lk);
	pthread_cond_destroy(&b->cv);
	quayi_free(b->n->alloc, b, sizeof(*b));
}

/* ---- connect / close ----------------------------------------------- */

static int
check_opts(const struct quay_nats_opts *o)
{
	if (o->size != sizeof(*o) || (o->flags & ~QUAY_NATS_DIRECT) != 0 ||
	    quayi_alloc_check(o->allocator) != 0 || o->nurls > QUAY_NATS_URLS_MAX ||
	    (o->nurls > 0 && o->urls == NULL) ||
	    (o->creds_file != NULL) + (o->token != NULL) + (o->nkey != NULL) > 1 ||
	    (o->nkey == NULL) != (o->nkey_seed_file == NULL) || o->reconnect_wait_ns < 0 ||
	    o->connect_timeout_ns < 0 || o->reconnect_buf_bytes > INT_MAX ||
	    (o->export_capacity & (o->export_capacity - 1)) != 0)
		return -EINVAL;
	for (size_t i = 0; i < o->nurls; i++)
		if (o->urls[i] == NULL)
			return -EINVAL;
	return 0;
}

/* Whether file holds a user nkey seed that decodes: the line libnats
 * signs with (its first line starting "SU", leading blanks skipped),
 * checked by signing with it (base32, prefix and checksum). 0; -ENOENT;
 * -EBADMSG. */
static int
check_seed_file(const char *file)
{
	char buf[4096], *line, *save = NULL, *seed = NULL;
	unsigned char *sig = NULL;
	int siglen = 0, r = -EBADMSG;
	size_t len;
	FILE *f = fopen(file, "r");

	if (f == NULL)
		return -ENOENT;
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		line += strspn(line, " \t");
		if (line[0] == 'S' && line[1] == 'U') {
			seed = line;
			break;
		}
	}
	if (seed != NULL && nats_Sign(seed, "quay", &sig, &siglen) == NATS_OK && siglen == 64)
		r = 0;
	free(sig); /* quay-alloc: libnats's (nats_Sign) */
	explicit_bzero(buf, sizeof(buf));
	return r;
}

static int64_t
ms_of(int64_t ns, int64_t dflt)
{
	if (ns == 0)
		ns = dflt;
	return ns / 1000000 > 0 ? ns / 1000000 : 1;
}

/* libnats reads some files only at connect and reports any failure as a
 * generic error: check them first. 0, -ENOENT or -EBADMSG. */
static int
check_files(const struct quay_nats_opts *opts)
{
	const char *files[] = { opts->creds_file, opts->tls_ca_file, opts->tls_cert_file, opts->tls_key_file,
		opts->nkey_seed_file };
	int r;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (files[i] != NULL && access(files[i], R_OK) != 0)
			return -ENOENT;
	if (opts->nkey_seed_file != NULL && (r = check_seed_file(opts->nkey_seed_file)) != 0)
		return r;
	if (opts->creds_file != NULL && (r = check_seed_file(opts->creds_file)) != 0)
		return r;
	return 0;
}

/* A new handle: its memory, locks and names; no connection, no metrics
 * yet (quay_nats_close() can free it from here on). */
static quay_nats *
handle_new(const struct quay_nats_opts *opts)
{
	quay_nats *n = quayi_calloc(opts->allocator, 1, sizeof(*n));
	pthread_rwlockattr_t ra;

	if (n == NULL)
		return NULL;
	n->alloc = opts->allocator;
	n->rtab = quayi_calloc(n->alloc, RTAB_SIZE, sizeof(*n->rtab));
	if (n->rtab == NULL) {
		quayi_free(n->alloc, n, sizeof(*n));
		return NULL;
	}
	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->rlock, NULL);
	/* Writer first: publishers that keep overlapping must not hold off a
	 * second handle's connect. */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&n->slock, &ra);
	pthread_rwlockattr_destroy(&ra);
	n->direct = (opts->flags & QUAY_NATS_DIRECT) != 0;
	pthread_mutex_init(&n->cl_lock, NULL);
	pthread_cond_init(&n->cl_cond, NULL);
	process_origin(n->origin);
	/* Relaxed: a unique number, nothing to order. */
	snprintf(n->conn_label, sizeof(n->conn_label), "c%u",
	    __atomic_fetch_add(&conn_seq, 1, __ATOMIC_RELAXED));
	n->reply_prefix_len = (size_t)snprintf(n->reply_prefix, sizeof(n->reply_prefix), "_QUAY.%s.%s.",
	    n->origin, n->conn_label);
	n->export_capacity =
	    opts->export_capacity != 0 ? opts->export_capacity : QUAY_NATS_EXPORT_CAPACITY_DEFAULT;
	return n;
}

/* The handle's registry and pool (given or its own) and its counters. */
static int
handle_resources(quay_nats *n, const struct quay_nats_opts *opts)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} counters[] = {
		{ "quay_nats_reconnects_total", "Reconnections", offsetof(quay_nats, c_reconnects) },
		{ "quay_nats_disconnects_total", "Disconnections", offsetof(quay_nats, c_disconnects) },
		{ "quay_nats_slow_consumer_total", "libnats slow-consumer events",
		    offsetof(quay_nats, c_slow) },
		{ "quay_nats_refused_total", "NATS publishes refused (buffer full or closed)",
		    offsetof(quay_nats, c_refused) },
		{ "quay_nats_echo_dropped_total", "Own messages that came back",
		    offsetof(quay_nats, c_echo) },
		{ "quay_nats_invalid_total", "Subjects or replies quay refuses",
		    offsetof(quay_nats, c_invalid) },
		{ "quay_nats_replies_total", "Replies routed to local requesters",
		    offsetof(quay_nats, c_replies) },
	};
	int r;

	if (opts->stats != NULL) {
		n->stats = opts->stats;
	} else {
		struct quay_stats_opts so = QUAY_STATS_OPTS_INIT;
		so.allocator = n->alloc;
		if ((r = quay_stats_create(&so, &n->stats)) != 0)
			return r;
		n->own_stats = true;
	}
	if (opts->pool != NULL) {
		n->pool = opts->pool;
	} else {
		/* No thread caches: imports allocate and free on libnats's
		 * threads, which exit when libnats decides (after close may
		 * have returned) and cannot be joined; a thread cache would be
		 * flushed into a destroyed pool by their exit. */
		struct quay_pool_opts po = QUAY_POOL_OPTS_INIT;
		po.flags = QUAY_POOL_NO_CACHE;
		po.allocator = n->alloc;
		if ((r = quay_pool_create((size_t)64 << 20, &po, &n->pool)) != 0)
			return r;
		n->own_pool = true;
		/* Counted: close gives it up, and the last of the messages
		 * made from it (held by the application, queued in a local
		 * subscription, or in a last unref running now) frees it. */
		if ((r = quayi_pool_counted(n->pool)) != 0)
			return r;
	}
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		quay_counter **c = (quay_counter **)(void *)((char *)n + counters[i].off);

		if ((r = handle_counter(n, counters[i].name, counters[i].help, c)) != 0)
			return r;
	}
	return 0;
}

/* libnats options from ours (*no: the caller destroys it either way). */
static natsStatus
nats_options(quay_nats *n, const struct quay_nats_opts *opts, natsOptions **no)
{
	static const char *local_url = "nats://127.0.0.1:4222";
	natsStatus s = natsOptions_Create(no);

	if (s == NATS_OK)
		s = natsOptions_SetServers(*no, opts->nurls > 0 ? (const char **)opts->urls : &local_url,
		    opts->nurls > 0 ? (int)opts->nurls : 1);
	if (s == NATS_OK && opts->name != NULL)
		s = natsOptions_SetName(*no, opts->name);
	if (s == NATS_OK && opts->creds_file != NULL)
		s = natsOptions_SetUserCredentialsFromFiles(*no, opts->creds_file, NULL);
	if (s == NATS_OK && opts->token != NULL)
		s = natsOptions_SetToken(*no, opts->token);
	if (s == NATS_OK && opts->nkey != NULL)
		s = natsOptions_SetNKeyFromSeed(*no, opts->nkey, opts->nkey_seed_file);
	if (s == NATS_OK && opts->tls_ca_file != NULL) {
		s = natsOptions_SetSecure(*no, true);
		if (s == NATS_OK)
			s = natsOptions_LoadCATrustedCertificates(*no, opts->tls_ca_file);
	}
	if (s == NATS_OK && opts->tls_cert_file != NULL)
		s = natsOptions_LoadCertificatesChain(*no, opts->tls_cert_file, opts->tls_key_file);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(*no, opts->max_reconnect == 0 ? 60 : opts->max_reconnect);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(*no,
		    ms_of(opts->reconnect_wait_ns, QUAY_NATS_RECONNECT_WAIT_DEFAULT));
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(*no,
		    ms_of(opts->connect_timeout_ns, QUAY_NATS_CONNECT_TIMEOUT_DEFAULT));
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(*no,
		    opts->reconnect_buf_bytes != 0 ? (int)opts->reconnect_buf_bytes :
		                                     (int)QUAY_NATS_RECONNECT_BUF_DEFAULT);
	if (s == NATS_OK)
		s = natsOptions_SetNoEcho(*no, true);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(*no, on_disconnected, n);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(*no, on_reconnected, n);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(*no, on_closed, n);
	if (s == NATS_OK)
		s = natsOptions_SetErrorHandler(*no, on_error, n);
	return s;
}

/* The errno of a failed natsConnection_Connect. */
static int
connect_err(natsStatus s)
{
	switch (s) {
	case NATS_CONNECTION_AUTH_FAILED:
	case NATS_NOT_PERMITTED: return -EACCES;
	case NATS_NO_SERVER:
	case NATS_TIMEOUT:
	case NATS_IO_ERROR: return -ECONNREFUSED;
	case NATS_SSL_ERROR:
	case NATS_PROTOCOL_ERROR:
	case NATS_SECURE_CONNECTION_WANTED:
	case NATS_SECURE_CONNECTION_REQUIRED: return -EPROTO;
	default: return quayi_nats_err(s);
	}
}

int
quay_nats_connect(const struct quay_nats_opts *opts, quay_nats **out)
{
	struct quay_nats_opts dflt = QUAY_NATS_OPTS_INIT;
	natsOptions *no = NULL;
	natsStatus s;
	quay_nats *n;
	int r;

	if (out == NULL)
		return -EINVAL;
	if (opts == NULL)
		opts = &dflt;
	/* The first version (no allocator): the C library's. */
	if (opts->size == offsetof(struct quay_nats_opts, allocator)) {
		memcpy(&dflt, opts, opts->size);
		dflt.size = sizeof(dflt);
		opts = &dflt;
	}
	if ((r = check_opts(opts)) != 0 || (r = check_files(opts)) != 0)
		return r;
	if ((n = handle_new(opts)) == NULL)
		return -ENOMEM;
	if ((r = handle_resources(n, opts)) != 0)
		goto fail;
	s = nats_options(n, opts, &no);
	if (s != NATS_OK) {
		r = s == NATS_NOT_FOUND || s == NATS_SSL_ERROR || s == NATS_ERR ? -ENOENT : quayi_nats_err(s);
		goto fail;
	}
	s = natsConnection_Connect(&n->nc, no);
	if (s != NATS_OK) {
		n->nc = NULL;
		r = connect_err(s);
		goto fail;
	}
	natsOptions_Destroy(no);
	no = NULL;
	s = natsConnection_JetStream(&n->js, n->nc, NULL);
	if (s != NATS_OK) {
		r = quayi_nats_err(s);
		goto fail;
	}
	handle_register(n);
	*out = n;
	return 0;
fail:
	natsOptions_Destroy(no);
	quay_nats_close(n);
	return r;
}

/* Stop one bridge. Returns false if an import's last callback did not
 * return in time (it is still running: nothing it uses may be freed). */
static bool
bridge_stop(struct nbridge *b)
{
	if (b->kind == BR_IMPORT) {
		bool done = true;
		if (b->nsub != NULL) {
			/* The completion callback fires once the last message
			 * callback returned (nats.c issues 222, 735). */
			if (natsSubscription_Unsubscribe(b->nsub) == NATS_OK) {
				struct timespec ts = quayi_abs_ts(CLOCK_REALTIME, CLOSE_WAIT_NS);
				pthread_mutex_lock(&b->lk);
				while (!b->complete)
					if (pthread_cond_timedwait(&b->cv, &b->lk, &ts) != 0)
						break;
				done = b->complete;
				pthread_mutex_unlock(&b->lk);
			}
			natsSubscription_Destroy(b->nsub);
			b->nsub = NULL;
		}
		return done;
	}
	if (b->thr_started) {
		/* NATS-S1: release; pairs with the bridge thread's NATS-S2. */
		__atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
		pthread_join(b->thr, NULL);
	}
	if (b->ring != NULL) {
		quay_ring_destroy(b->ring); /* drained by the thread: no tap pushes any more */
		b->ring = NULL;
	}
	if (b->sub != NULL) {
		struct quay_sub_counters sc;
		if (quay_sub_counters(b->sub, &sc) == 0)
			quay_counter_add(b->c_drop, sc.released);
		(void)quay_bus_unsubscribe(b->sub);
		b->sub = NULL;
	}
	return true;
}

void
quay_nats_close(quay_nats *n)
{
	bool stuck = false;

	if (n == NULL)
		return;
	handle_closing(n);
	/* Imports first (they feed the reply bridges), then the reply and
	 * export bridges, which drain their subscriptions. */
	for (unsigned i = 0; i < n->nbridges; i++)
		if (n->bridges[i]->kind == BR_IMPORT && !bridge_stop(n->bridges[i]))
			stuck = true;
	if (n->reply_sub != NULL && natsSubscription_Unsubscribe(n->reply_sub) == NATS_OK) {
		struct timespec ts = quayi_abs_ts(CLOCK_REALTIME, CLOSE_WAIT_NS);
		pthread_mutex_lock(&n->cl_lock);
		while (!n->reply_done)
			if (pthread_cond_timedwait(&n->cl_cond, &n->cl_lock, &ts) != 0)
				break;
		pthread_mutex_unlock(&n->cl_lock);
	}
	/* No publisher is inside a tap after this (a grace period), so the
	 * wildcard exports' threads drain their rings completely, and no
	 * direct export or reply (quay_bus_publish or quay_bus_reply on
	 * another thread, still inside tap_publish) uses a bridge or
	 * counter that is freed below. */
	for (unsigned i = 0; i < n->ntaps; i++)
		(void)quayi_bus_set_tap(n->taps[i]->bus, NULL);
	for (unsigned i = 0; i < n->nbridges; i++)
		if (n->bridges[i]->kind != BR_IMPORT)
			bridge_stop(n->bridges[i]);
	if (n->nc != NULL) {
		struct timespec ts;
		(void)natsConnection_FlushTimeout(n->nc, 2000);
		natsConnection_Close(n->nc);
		ts = quayi_abs_ts(CLOCK_REALTIME, CLOSE_WAIT_NS);
		pthread_mutex_lock(&n->cl_lock);
		while (!n->cl_done)
			if (pthread_cond_timedwait(&n->cl_cond, &n->cl_lock, &ts) != 0)
				break;
		pthread_mutex_unlock(&n->cl_lock);
	}
	if (n->reply_sub != NULL)
		natsSubscription_Destroy(n->reply_sub);
	jsCtx_Destroy(n->js);
	natsConnection_Destroy(n->nc);
	/* Only now, with n's subscriptions gone: the handle left alone may
	 * go header-less again. */
	handle_unregister(n);
	if (stuck) {
		/* An import callback is still inside quay_bus_publish (a
		 * local QUAY_SUB_BLOCK subscription with no timeout that
		 * nobody drains): it uses the handle, so the handle is left
		 * allocated rather than freed under it. */
		fprintf(stderr,
		    "quay: quay_nats_close: an import callback did not return in 5 s; "
		    "the handle is leaked\n");
		return;
	}
	for (unsigned i = 0; i < n->nbridges; i++)
		bridge_free(n->bridges[i]);
	for (unsigned i = 0; i < n->ntaps; i++)
		quayi_free(n->alloc, n->taps[i], sizeof(*n->taps[i]));
	quay_counter_destroy(n->c_reconnects);
	quay_counter_destroy(n->c_disconnects);
	quay_counter_destroy(n->c_slow);
	quay_counter_destroy(n->c_refused);
	quay_counter_destroy(n->c_echo);
	quay_counter_destroy(n->c_invalid);
	quay_counter_destroy(n->c_replies);
	/* Imported messages outlive the handle: the pool goes with the
	 * last of them (now, if none is out). */
	if (n->own_pool)
		quayi_pool_put(n->pool);
	if (n->own_stats)
		quay_stats_destroy(n->stats);
	pthread_mutex_destroy(&n->lock);
	pthread_mutex_destroy(&n->rlock);
	pthread_mutex_destroy(&n->cl_lock);
	pthread_cond_destroy(&n->cl_cond);
	pthread_rwlock_destroy(&n->slock);
	quayi_free(n->alloc, n->rtab, RTAB_SIZE * sizeof(*n->rtab));
	quayi_free(n->alloc, n, sizeof(*n));
}

/* ---- bridges ------------------------------------------------------- */

static void
import_complete(void *closure)
{
	struct nbridge *b = closure;
	pthread_mutex_lock(&b->lk);
	b->complete = true;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->lk);
}

/* Make a bridge (not yet listed); n->lock held. */
static int
bridge_new(quay_nats *n, int kind, quay_bus *bus, const char *subject, const char *group,
    struct nbridge **out)
{
	struct nbridge *b;
	int r;

	if (n->nbridges >= QUAY_NATS_BRIDGES_MAX)
		return -ENOMEM;
	b = quayi_calloc(n->alloc, 1, sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	b->n = n;
	b->kind = kind;
	b->bus = bus;
	b->idx = n->nbridges;
	snprintf(b->subject, sizeof(b->subject), "%s", subject);
	if (group != NULL)
		snprintf(b->group, sizeof(b->group), "%s", group);
	b->literal = strchr(subject, '*') == NULL && strchr(subject, '>') == NULL;
	pthread_mutex_init(&b->lk, NULL);
	pthread_cond_init(&b->cv, NULL);
	r = bridge_metrics(b);
	if (r != 0) {
		bridge_free(b);
		return r;
	}
	*out = b;
	return 0;
}

/* Start an export or reply bridge's subscription (a wildcard export:
 * its ring, fed by the tap) and thread. */
static int
bridge_start_local(struct nbridge *b)
{
	struct quay_sub_opts so = QUAY_SUB_OPTS_INIT;
	int r;

	if (b->tap != NULL && b->n->direct)
		return 0; /* the tap publishes on the publisher's thread */
	if (b->kind == BR_EXPORT && !b->literal) {
		r = quay_ring_create(b->n->export_capacity, sizeof(struct tapent), QUAY_RING_SC, &b->ring);
		if (r != 0)
			return r;
	} else {
		so.capacity = b->n->export_capacity;
		/* Not the default (REJECT since issue 11): a full bridge slows
		 * its publishers, as documented, rather than refusing. */
		so.policy = QUAY_SUB_BLOCK;
		so.flags = QUAY_SUB_NO_LATENCY;
		r = quay_bus_subscribe(b->bus, b->subject, &so, &b->sub);
		if (r != 0)
			return r;
	}
	if (pthread_create(&b->thr, NULL, export_thread, b) != 0) {
		if (b->sub != NULL)
			(void)quay_bus_unsubscribe(b->sub);
		b->sub = NULL;
		quay_ring_destroy(b->ring);
		b->ring = NULL;
		return -EAGAIN;
	}
	b->thr_started = true;
	return 0;
}

/* The tap of bus on n, made and set on the bus on first use; n->lock
 * held. -EEXIST if the bus has another tap (another handle's). */
static int
tap_of(quay_nats *n, quay_bus *bus, struct ntap **out)
{
	struct ntap *t;
	int r;

	for (unsigned i = 0; i < n->ntaps; i++)
		if (n->taps[i]->bus == bus) {
			*out = n->taps[i];
			return 0;
		}
	if (n->ntaps >= QUAY_NATS_BRIDGES_MAX)
		return -ENOMEM;
	t = quayi_calloc(n->alloc, 1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->tap.fn = tap_publish;
	t->tap.arg = t;
	t->bus = bus;
	t->n = n;
	r = quayi_bus_set_tap(bus, &t->tap);
	if (r != 0) {
		quayi_free(n->alloc, t, sizeof(*t));
		return r == -EBUSY ? -EEXIST : r;
	}
	n->taps[n->ntaps++] = t;
	*out = t;
	return 0;
}

/* List b (started) in its tap; n->lock held. */
static void
tap_add(struct nbridge *b)
{
	struct ntap *t = b->tap;

	t->b[t->nb] = b;
	/* NATS-T1: release; pairs with NATS-T2 in tap_publish(). */
	__atomic_store_n(&t->nb, t->nb + 1, __ATOMIC_RELEASE);
}

/* The tap of bus for a new bridge b: a wildcard export needs it; with
 * QUAY_NATS_DIRECT a literal export or a reply bridge takes it if it is
 * free or n's, and falls back to a bridge thread if another handle holds
 * it. n->lock held. */
static int
bridge_tap(quay_nats *n, struct nbridge *b)
{
	int r;

	if (b->kind == BR_EXPORT && !b->literal)
		return tap_of(n, b->bus, &b->tap);
	if (!n->direct)
		return 0;
	r = tap_of(n, b->bus, &b->tap);
	if (r == -EEXIST) {
		b->tap = NULL;
		r = 0;
	}
	return r;
}

static bool
bridge_exists(quay_nats *n, int kind, quay_bus *bus, const char *subject)
{
	for (unsigned i = 0; i < n->nbridges; i++) {
		struct nbridge *b = n->bridges[i];
		if (b->kind == kind && b->bus == bus && strcmp(b->subject, subject) == 0)
			return true;
	}
	return false;
}

int
quay_nats_export(quay_nats *n, quay_bus *bus, const char *pattern)
{
	struct nbridge *b;
	natsStatus s;
	int r;

	if (n == NULL || bus == NULL || pattern == NULL || quay_bus_subject_check(pattern, true) != 0)
		return -EINVAL;
	pthread_mutex_lock(&n->lock);
	if (bridge_exists(n, BR_EXPORT, bus, pattern)) {
		r = -EEXIST;
		goto out;
	}
	if (n->reply_sub == NULL) {
		char rs[64];
		snprintf(rs, sizeof(rs), "%s>", n->reply_prefix);
		s = natsConnection_Subscribe(&n->reply_sub, n->nc, rs, reply_in_cb, n);
		if (s != NATS_OK) {
			n->reply_sub = NULL;
			r = quayi_nats_err(s);
			goto out;
		}
		(void)natsSubscription_SetPendingLimits(n->reply_sub, 65536, 64 << 20);
		(void)natsSubscription_SetOnCompleteCB(n->reply_sub, reply_sub_complete, n);
	}
	r = bridge_new(n, BR_EXPORT, bus, pattern, NULL, &b);
	if (r != 0)
		goto out;
	r = bridge_tap(n, b);
	if (r != 0) {
		bridge_free(b);
		goto out;
	}
	r = bridge_start_local(b);
	if (r != 0) {
		bridge_free(b);
		goto out;
	}
	n->bridges[n->nbridges++] = b;
	if (b->tap != NULL)
		tap_add(b);
out:
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* The reply bridge of bus, made on first use. */
static struct nbridge *
reply_bridge_of(quay_nats *n, quay_bus *bus)
{
	struct nbridge *b = NULL;
	char subj[96];

	pthread_mutex_lock(&n->lock);
	for (unsigned i = 0; i < n->nbridges; i++)
		if (n->bridges[i]->kind == BR_REPLY && n->bridges[i]->bus == bus) {
			b = n->bridges[i];
			goto out;
		}
	snprintf(subj, sizeof(subj), LOCAL_REPLY_PREFIX "%s.%s.%u", n->origin, n->conn_label, n->nbridges);
	if (bridge_new(n, BR_REPLY, bus, subj, NULL, &b) != 0) {
		b = NULL;
		goto out;
	}
	if (bridge_tap(n, b) != 0 || bridge_start_local(b) != 0) {
		bridge_free(b);
		b = NULL;
		goto out;
	}
	n->bridges[n->nbridges++] = b;
	if (b->tap != NULL)
		tap_add(b);
out:
	pthread_mutex_unlock(&n->lock);
	return b;
}

int
quay_nats_import(quay_nats *n, quay_bus *bus, const char *subject, const char *group)
{
	struct nbridge *b;
	natsStatus s;
	int r;

	if (n == NULL || bus == NULL || subject == NULL || quay_bus_subject_check(subject, true) != 0)
		return -EINVAL;
	if (group != NULL) {
		size_t gl = strlen(group);
		if (gl == 0 || gl > QUAY_BUS_NAME_MAX)
			return -EINVAL;
		for (size_t i = 0; i < gl; i++)
			if ((unsigned char)group[i] < 0x21 || (unsigned char)group[i] > 0x7e)
				return -EINVAL;
	}
	/* The reply bridge first (it takes the lock itself). */
	if (reply_bridge_of(n, bus) == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&n->lock);
	if (bridge_exists(n, BR_IMPORT, bus, subject)) {
		r = -EEXIST;
		goto out;
	}
	r = bridge_new(n, BR_IMPORT, bus, subject, group, &b);
	if (r != 0)
		goto out;
	s = group != NULL ? natsConnection_QueueSubscribe(&b->nsub, n->nc, subject, group, import_cb, b) :
	                    natsConnection_Subscribe(&b->nsub, n->nc, subject, import_cb, b);
	if (s == NATS_OK)
		s = natsSubscription_SetOnCompleteCB(b->nsub, import_complete, b);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(b->nsub, 65536, 64 << 20);
	if (s != NATS_OK) {
		if (b->nsub != NULL) {
			(void)natsSubscription_Unsubscribe(b->nsub);
			natsSubscription_Destroy(b->nsub);
		}
		bridge_free(b);
		r = quayi_nats_err(s);
		goto out;
	}
	n->bridges[n->nbridges++] = b;
out:
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* ---- the rest ------------------------------------------------------ */

int
quay_nats_flush(quay_nats *n, int64_t timeout_ns)
{
	natsStatus s;

	if (n == NULL || timeout_ns <= 0)
		return -EINVAL;
	if (natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED)
		return -ENOTCONN;
	s = natsConnection_FlushTimeout(n->nc, ms_of(timeout_ns, 1));
	return quayi_nats_err(s);
}

bool
quay_nats_connected(quay_nats *n)
{
	return n != NULL && natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

int
quay_nats_counters(quay_nats *n, struct quay_nats_counters *out)
{
	if (n == NULL || out == NULL)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&n->lock);
	for (unsigned i = 0; i < n->nbridges; i++) {
		struct nbridge *b = n->bridges[i];
		out->forwarded += quay_counter_read(b->c_fwd);
		out->received += quay_counter_read(b->c_recv);
		out->dropped += quay_counter_read(b->c_drop);
		if (b->sub != NULL)
			out->pending += quay_sub_pending(b->sub);
		if (b->ring != NULL)
			out->pending += quay_ring_count(b->ring);
	}
	pthread_mutex_unlock(&n->lock);
	out->refused = quay_counter_read(n->c_refused);
	out->echo_dropped = quay_counter_read(n->c_echo);
	out->invalid = quay_counter_read(n->c_invalid);
	out->replies = quay_counter_read(n->c_replies);
	out->reconnects = quay_counter_read(n->c_reconnects);
	out->disconnects = quay_counter_read(n->c_disconnects);
	out->slow_consumer = quay_counter_read(n->c_slow);
	/* Relaxed: a diagnostic word. */
	out->last_error = __atomic_load_n(&n->last_error, __ATOMIC_RELAXED);
	return 0;
}

quay_stats *
quay_nats_stats(quay_nats *n)
{
	return n != NULL ? n->stats : NULL;
}
