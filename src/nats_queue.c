/* SPDX-License-Identifier: MIT */
/*
 * Work queues on JetStream (quay/nats.h, docs/NATS.md): a work-queue
 * stream, one durable pull consumer shared by every process, explicit
 * acks. A lease is a pulled message not yet acked: ack -> AckSync (the
 * server confirms before ack returns), nack -> Nak with the queue's
 * backoff delay (or the dead-letter stream at max_attempts), extend ->
 * InProgress. The consumer has no MaxDeliver: a message delivered more
 * than max_attempts times is dead-lettered by whoever receives it, so a
 * message whose last holder died still reaches the dead-letter stream
 * (JetStream's MaxDeliver would only stop delivering it and emit an
 * advisory that nobody may be listening to).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "nats_internal.h"

#define QNAME_MAX 32

struct quay_nats_queue {
	quay_nats *n;
	struct quay_nats_queue_opts o;
	char name[QNAME_MAX + 1];
	char stream[48], subject[64], durable[48];
	char dlq_stream[56], dlq_subject[64], dlq_durable[56];
	natsSubscription *sub;
	natsSubscription *dlq_sub;
	pthread_mutex_t dlq_lock;
	jsOptions jo;
	/* Relaxed counters (__atomic): statistics only, read as a snapshot. */
	uint64_t sent, duplicates, received, acked, nacked, extended, dead, errors;
};

#define CINC(q, f) __atomic_fetch_add(&(q)->f, 1, __ATOMIC_RELAXED) /* relaxed: statistics */

static int
js_err(natsStatus s, jsErrCode je)
{
	if (s == NATS_OK)
		return 0;
	if (je == JSNotEnabledErr || je == JSNotEnabledForAccountErr)
		return -ENOTSUP;
	return quayi_nats_err(s);
}

static bool
name_ok(const char *s)
{
	size_t l = s != NULL ? strlen(s) : 0;
	if (l == 0 || l > QNAME_MAX)
		return false;
	for (size_t i = 0; i < l; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		        c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int
ensure_stream(quay_nats_queue *q, const char *name, const char *subject)
{
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsErrCode je = 0;
	const char *subs[1] = { subject };
	natsStatus s;

	s = js_GetStreamInfo(&si, q->n->js, name, &q->jo, &je);
	if (s == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return 0;
	}
	if (s != NATS_NOT_FOUND)
		return js_err(s, je);
	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Subjects = subs;
	cfg.SubjectsLen = 1;
	cfg.Retention = js_WorkQueuePolicy;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = q->o.replicas;
	s = js_AddStream(&si, q->n->js, &cfg, &q->jo, &je);
	if (s == NATS_OK)
		jsStreamInfo_Destroy(si);
	/* Another process may have made it meanwhile: same config, fine. */
	else if (je == JSStreamNameExistErr)
		s = NATS_OK;
	return js_err(s, je);
}

static int
pull_sub(quay_nats_queue *q, const char *stream, const char *subject, const char *durable, int64_t ack_wait,
    natsSubscription **out)
{
	jsSubOptions so;
	jsErrCode je = 0;
	natsStatus s;

	jsSubOptions_Init(&so);
	so.Stream = stream;
	so.Config.Durable = durable;
	so.Config.AckPolicy = js_AckExplicit;
	so.Config.AckWait = ack_wait;
	so.Config.MaxDeliver = -1;
	so.Config.FilterSubject = subject;
	s = js_PullSubscribe(out, q->n->js, subject, durable, &q->jo, &so, &je);
	return js_err(s, je);
}

int
quay_nats_queue_open(quay_nats *n, const struct quay_nats_queue_opts *opts, quay_nats_queue **out)
{
	quay_nats_queue *q;
	int r;

	if (n == NULL || opts == NULL || out == NULL || opts->size != sizeof(*opts) || opts->flags != 0 ||
	    !name_ok(opts->name) || opts->visibility_ns < 0 || opts->max_attempts > 1000 ||
	    opts->backoff_base_ns < 0 || opts->backoff_max_ns < 0 || opts->op_timeout_ns < 0 ||
	    (opts->backoff_factor != 0 && !(opts->backoff_factor >= 1 && opts->backoff_factor <= 1000)) ||
	    opts->replicas < 0 || opts->replicas > 5)
		return -EINVAL;
	q = quayi_calloc(n->alloc, 1, sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->n = n;
	q->o = *opts;
	if (q->o.visibility_ns == 0)
		q->o.visibility_ns = (int64_t)30 * 1000000000;
	if (q->o.max_attempts == 0)
		q->o.max_attempts = 10;
	if (q->o.backoff_base_ns == 0)
		q->o.backoff_base_ns = 100000000;
	if (q->o.backoff_factor == 0)
		q->o.backoff_factor = 2;
	if (q->o.backoff_max_ns == 0)
		q->o.backoff_max_ns = (int64_t)60 * 1000000000;
	if (q->o.replicas == 0)
		q->o.replicas = 1;
	if (q->o.op_timeout_ns == 0)
		q->o.op_timeout_ns = (int64_t)5 * 1000000000;
	if (q->o.backoff_max_ns < q->o.backoff_base_ns) {
		quayi_free(n->alloc, q, sizeof(*q));
		return -EINVAL;
	}
	snprintf(q->name, sizeof(q->name), "%s", opts->name);
	q->o.name = q->name;
	snprintf(q->stream, sizeof(q->stream), "QUAY_%s", q->name);
	snprintf(q->subject, sizeof(q->subject), "quay.q.%s", q->name);
	snprintf(q->durable, sizeof(q->durable), "quay_%s", q->name);
	snprintf(q->dlq_stream, sizeof(q->dlq_stream), "QUAY_%s_DLQ", q->name);
	snprintf(q->dlq_subject, sizeof(q->dlq_subject), "quay.dlq.%s", q->name);
	snprintf(q->dlq_durable, sizeof(q->dlq_durable), "quay_%s_dlq", q->name);
	pthread_mutex_init(&q->dlq_lock, NULL);
	jsOptions_Init(&q->jo);
	q->jo.Wait = q->o.op_timeout_ns / 1000000 > 0 ? q->o.op_timeout_ns / 1000000 : 1;
	r = ensure_stream(q, q->stream, q->subject);
	if (r == 0)
		r = ensure_stream(q, q->dlq_stream, q->dlq_subject);
	if (r == 0)
		r = pull_sub(q, q->stream, q->subject, q->durable, q->o.visibility_ns, &q->sub);
	if (r == 0)
		r = pull_sub(q, q->dlq_stream, q->dlq_subject, q->dlq_durable, (int64_t)30 * 1000000000,
		    &q->dlq_sub);
	if (r != 0) {
		quay_nats_queue_close(q);
		return r;
	}
	*out = q;
	return 0;
}

void
quay_nats_queue_close(quay_nats_queue *q)
{
	if (q == NULL)
		return;
	/* Destroy without unsubscribing: a durable consumer must outlive
	 * this handle (Unsubscribe would delete it). */
	natsSubscription_Destroy(q->sub);
	natsSubscription_Destroy(q->dlq_sub);
	pthread_mutex_destroy(&q->dlq_lock);
	quayi_free(q->n->alloc, q, sizeof(*q));
}

int
quay_nats_queue_send(quay_nats_queue *q, quay_msg *msg)
{
	jsPubOptions po;
	jsPubAck *pa = NULL;
	jsErrCode je = 0;
	natsMsg *nm;
	natsStatus s;
	char id[256];
	const void *v;
	size_t vl;
	int r;

	if (q == NULL || msg == NULL)
		return -EINVAL;
	r = quayi_nats_build(q->n, q->subject, NULL, msg, &nm);
	if (r != 0)
		return r;
	jsPubOptions_Init(&po);
	po.MaxWait = q->jo.Wait;
	if (quay_msg_get_header(msg, QUAY_MSG_H_DEDUP_ID, &v, &vl) == 0) {
		if (vl >= sizeof(id)) {
			natsMsg_Destroy(nm);
			return -EINVAL;
		}
		memcpy(id, v, vl);
		id[vl] = '\0';
		po.MsgId = id;
	}
	s = js_PublishMsg(&pa, q->n->js, nm, &po, &je);
	natsMsg_Destroy(nm);
	if (s != NATS_OK) {
		CINC(q, errors);
		return js_err(s, je);
	}
	if (pa->Duplicate)
		CINC(q, duplicates);
	else
		CINC(q, sent);
	jsPubAck_Destroy(pa);
	(void)quay_msg_unref(msg);
	return 0;
}

/* Move nm to the dead-letter stream with reason, then remove it. */
static int
dead_letter(quay_nats_queue *q, natsMsg *nm, uint64_t seq, const char *reason)
{
	natsMsg *d = NULL;
	jsPubOptions po;
	jsPubAck *pa = NULL;
	jsErrCode je = 0;
	const char **keys = NULL;
	int nk = 0;
	char id[96];
	natsStatus s;

	s = natsMsg_Create(&d, q->dlq_subject, NULL, natsMsg_GetData(nm), natsMsg_GetDataLength(nm));
	if (s == NATS_OK && natsMsgHeader_Keys(nm, &keys, &nk) == NATS_OK) {
		for (int i = 0; s == NATS_OK && i < nk; i++) {
			const char *v;
			if (natsMsgHeader_Get(nm, keys[i], &v) == NATS_OK &&
			    strcmp(keys[i], "Nats-Msg-Id") != 0)
				s = natsMsgHeader_Set(d, keys[i], v);
		}
		free((void *)keys); /* quay-alloc: libnats's (natsMsgHeader_Keys) */
	}
	/* Header values travel percent-encoded; reason and source are
	 * plain tokens here except for spaces etc.: encode them the same. */
	if (s == NATS_OK) {
		char enc[3 * 128 + 1], *w = enc;
		for (const char *p = reason; *p != '\0' && w < enc + sizeof(enc) - 4; p++) {
			unsigned char c = (unsigned char)*p;
			if (c > 0x20 && c < 0x7f && c != '%' && c != ':')
				*w++ = (char)c;
			else
				w += sprintf(w, "%%%02X", c);
		}
		*w = '\0';
		s = natsMsgHeader_Set(d, QUAY_MSG_H_DLQ_REASON, enc);
	}
	if (s == NATS_OK)
		s = natsMsgHeader_Set(d, QUAY_MSG_H_DLQ_SOURCE, q->name);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(d, "Quay-Enc", "pct");
	if (s != NATS_OK) {
		natsMsg_Destroy(d);
		CINC(q, errors);
		return quayi_nats_err(s);
	}
	/* The DLQ copy is deduplicated by source sequence: a retry after a
	 * crash between this publish and the ack below stores one copy. */
	snprintf(id, sizeof(id), "%s:%" PRIu64, q->stream, seq);
	jsPubOptions_Init(&po);
	po.MaxWait = q->jo.Wait;
	po.MsgId = id;
	s = js_PublishMsg(&pa, q->n->js, d, &po, &je);
	natsMsg_Destroy(d);
	if (s != NATS_OK) {
		CINC(q, errors);
		return js_err(s, je);
	}
	jsPubAck_Destroy(pa);
	s = natsMsg_AckSync(nm, &q->jo, &je);
	if (s != NATS_OK) {
		CINC(q, errors);
		return js_err(s, je);
	}
	CINC(q, dead);
	return 0;
}

int
quay_nats_queue_receive(quay_nats_queue *q, quay_nats_lease *lease, int64_t wait_ns)
{
	int64_t deadline, left;

	if (q == NULL || lease == NULL || wait_ns < 0)
		return -EINVAL;
	deadline = quayi_deadline(wait_ns);
	for (;;) {
		natsMsgList list = { 0 };
		jsMsgMetaData *meta = NULL;
		jsErrCode je = 0;
		natsMsg *nm;
		natsStatus s;
		quay_msg *m;
		int r;

		left = quayi_deadline_left(deadline);
		s = natsSubscription_Fetch(&list, q->sub, 1, left > 1000000 ? left / 1000000 : 1, &je);
		if (s == NATS_TIMEOUT)
			return -ETIMEDOUT;
		if (s != NATS_OK)
			return js_err(s, je);
		if (list.Count < 1) {
			natsMsgList_Destroy(&list);
			return -ETIMEDOUT;
		}
		nm = list.Msgs[0];
		list.Msgs[0] = NULL;
		natsMsgList_Destroy(&list);
		s = natsMsg_GetMetaData(&meta, nm);
		if (s != NATS_OK) {
			natsMsg_Destroy(nm);
			CINC(q, errors);
			return quayi_nats_err(s);
		}
		if (meta->NumDelivered > q->o.max_attempts) {
			/* Its holder at attempt max_attempts neither acked nor
			 * nacked it: it died or its lease ran out. */
			uint64_t seq = meta->Sequence.Stream;
			jsMsgMetaData_Destroy(meta);
			(void)dead_letter(q, nm, seq, "lease expired");
			natsMsg_Destroy(nm);
			continue;
		}
		r = quayi_nats_make_local(q->n, nm, NULL, &m);
		if (r != 0) {
			/* Not leased: let it come back (to us or another). */
			(void)natsMsg_Nak(nm, &q->jo);
			natsMsg_Destroy(nm);
			jsMsgMetaData_Destroy(meta);
			return r;
		}
		(void)quay_msg_del_header(m, QUAY_NATS_H_FROM);
		(void)quay_msg_set_attempts(m, (uint32_t)meta->NumDelivered);
		lease->msg = m;
		lease->attempt = (uint32_t)meta->NumDelivered;
		lease->stream_seq = meta->Sequence.Stream;
		lease->impl = nm;
		jsMsgMetaData_Destroy(meta);
		CINC(q, received);
		return 0;
	}
}

static void
lease_release(quay_nats_lease *lease)
{
	natsMsg_Destroy(lease->impl);
	(void)quay_msg_unref(lease->msg);
	lease->impl = NULL;
	lease->msg = NULL;
}

int
quay_nats_queue_ack(quay_nats_queue *q, quay_nats_lease *lease)
{
	jsErrCode je = 0;
	natsStatus s;

	if (q == NULL || lease == NULL || lease->impl == NULL || lease->msg == NULL)
		return -EINVAL;
	s = natsMsg_AckSync(lease->impl, &q->jo, &je);
	lease_release(lease);
	if (s != NATS_OK) {
		CINC(q, errors);
		return js_err(s, je);
	}
	CINC(q, acked);
	return 0;
}

int
quay_nats_queue_nack(quay_nats_queue *q, quay_nats_lease *lease, const char *reason)
{
	natsStatus s;
	int r = 0;

	if (q == NULL || lease == NULL || lease->impl == NULL || lease->msg == NULL)
		return -EINVAL;
	if (lease->attempt >= q->o.max_attempts) {
		r = dead_letter(q, lease->impl, lease->stream_seq, reason != NULL ? reason : "nack");
	} else {
		/* base * factor^(attempt-1), capped (as quay_queue's). */
		double d = (double)q->o.backoff_base_ns;
		int64_t ns;
		for (uint32_t i = 1; i < lease->attempt && d < (double)q->o.backoff_max_ns; i++)
			d *= q->o.backoff_factor;
		ns = d > (double)q->o.backoff_max_ns ? q->o.backoff_max_ns : (int64_t)d;
		s = natsMsg_NakWithDelay(lease->impl, ns / 1000000, &q->jo);
		if (s != NATS_OK) {
			CINC(q, errors);
			r = quayi_nats_err(s);
		} else {
			CINC(q, nacked);
		}
	}
	lease_release(lease);
	return r;
}

int
quay_nats_queue_extend(quay_nats_queue *q, quay_nats_lease *lease)
{
	natsStatus s;

	if (q == NULL || lease == NULL || lease->impl == NULL || lease->msg == NULL)
		return -EINVAL;
	s = natsMsg_InProgress(lease->impl, &q->jo);
	if (s != NATS_OK) {
		CINC(q, errors);
		return quayi_nats_err(s);
	}
	CINC(q, extended);
	return 0;
}

int
quay_nats_queue_dlq_take(quay_nats_queue *q, quay_msg **out, size_t max, int64_t wait_ns)
{
	natsMsgList list = { 0 };
	jsErrCode je = 0;
	natsStatus s;
	int got = 0;

	if (q == NULL || out == NULL || max == 0 || max > INT32_MAX || wait_ns < 0)
		return -EINVAL;
	pthread_mutex_lock(&q->dlq_lock);
	s = natsSubscription_Fetch(&list, q->dlq_sub, (int)max, wait_ns > 1000000 ? wait_ns / 1000000 : 1,
	    &je);
	if (s == NATS_TIMEOUT) {
		pthread_mutex_unlock(&q->dlq_lock);
		return 0;
	}
	if (s != NATS_OK) {
		pthread_mutex_unlock(&q->dlq_lock);
		return js_err(s, je);
	}
	for (int i = 0; i < list.Count; i++) {
		quay_msg *m;
		if (quayi_nats_make_local(q->n, list.Msgs[i], NULL, &m) != 0) {
			(void)natsMsg_Nak(list.Msgs[i], &q->jo);
			continue;
		}
		(void)quay_msg_del_header(m, QUAY_NATS_H_FROM);
		if (natsMsg_AckSync(list.Msgs[i], &q->jo, &je) != NATS_OK) {
			(void)quay_msg_unref(m);
			continue;
		}
		out[got++] = m;
	}
	natsMsgList_Destroy(&list);
	pthread_mutex_unlock(&q->dlq_lock);
	return got;
}

int
quay_nats_queue_counters(quay_nats_queue *q, struct quay_nats_queue_counters *out)
{
	if (q == NULL || out == NULL)
		return -EINVAL;
	/* Relaxed: statistics snapshots. */
	out->sent = __atomic_load_n(&q->sent, __ATOMIC_RELAXED);
	out->duplicates = __atomic_load_n(&q->duplicates, __ATOMIC_RELAXED);
	out->received = __atomic_load_n(&q->received, __ATOMIC_RELAXED);
	out->acked = __atomic_load_n(&q->acked, __ATOMIC_RELAXED);
	out->nacked = __atomic_load_n(&q->nacked, __ATOMIC_RELAXED);
	out->extended = __atomic_load_n(&q->extended, __ATOMIC_RELAXED);
	out->dead_lettered = __atomic_load_n(&q->dead, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&q->errors, __ATOMIC_RELAXED);
	return 0;
}

int
quay_nats_queue_depth(quay_nats_queue *q, uint64_t *out)
{
	jsStreamInfo *si = NULL;
	jsErrCode je = 0;
	natsStatus s;

	if (q == NULL || out == NULL)
		return -EINVAL;
	s = js_GetStreamInfo(&si, q->n->js, q->stream, &q->jo, &je);
	if (s != NATS_OK)
		return js_err(s, je);
	*out = si->State.Msgs;
	jsStreamInfo_Destroy(si);
	return 0;
}
