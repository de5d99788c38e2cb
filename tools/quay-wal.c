/* SPDX-License-Identifier: MIT */
/*
 * quay-wal: verify, dump and summarise a quay write-ahead-log directory
 * (docs/WAL-FORMAT.md) through the public API alone.
 *
 *   quay-wal verify DIR
 *   quay-wal dump DIR [--json] [--from LSN] [--limit N] [--preview BYTES] [--salvage]
 *   quay-wal stats DIR [--json] [--salvage]
 *   quay-wal --help | --version
 *
 * Every command opens the log with QUAY_WAL_READONLY: nothing in the
 * directory is created, cut, removed or written, and no lock is taken
 * (so a log that a writer is appending to may show its newest records as
 * a torn tail).
 *
 * Exit status:
 *   0  verify: the log is sound; dump/stats: done
 *   1  the log is damaged (verify: torn tail or corruption; dump/stats:
 *      corruption, unless --salvage)
 *   2  usage error, DIR missing / not a directory / unreadable / not a
 *      WAL (no segment file), a segment that cannot be read, or out of
 *      memory
 *
 * Record types: a caller's types are opaque numbers to the WAL. A module
 * that owns some types (the durable queue, for one) plugs a decoder into
 * the table `decoders` below: it names its types, describes a payload in
 * dump, and may add figures to stats (e.g. the live messages, which only
 * the owner of the record types can work out). With no decoder for a
 * type, dump shows the number and stats counts it without interpreting
 * it; no figure is ever guessed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <sys/stat.h>

#include <quay/err.h>
#include <quay/version.h>
#include <quay/wal.h>

enum { EXIT_SOUND = 0, EXIT_DAMAGED = 1, EXIT_USAGE = 2 };

#define PREVIEW_DEFAULT 32u
#define PREVIEW_MAX 4096u

static const char *prog = "quay-wal";

/* ---- decoders of record types ------------------------------------- */

/*
 * A plug-in for the record types a module owns. Every member but name and
 * owns may be NULL.
 *
 *   owns(type)              true if the decoder knows this type
 *   type_name(type)         a short name ("send", "ack") for dump and stats
 *   describe(type, lsn, data, len, preview, out, json)
 *                           dump: print a description of the payload
 *                           (preview: bytes of any body to show). Text
 *                           mode: one line fragment, no newline. JSON mode:
 *                           one JSON value (it becomes "decoded": VALUE).
 *   prepass(lsn, type, data, len)
 *                           dump, stats: called for every record of a type
 *                           it owns in a first pass (e.g. queue names)
 *   stats_begin()           stats: make the decoder's state (NULL: failure)
 *   stats_record(st, lsn, type, data, len)
 *                           stats: called for every record of a type it owns
 *   stats_print(st, out, json)
 *                           stats: text: full lines ("live messages: 12\n");
 *                           JSON: members `,"key":value` appended to the
 *                           top-level object (each starting with a comma)
 *   stats_end(st)           free the state
 */
struct wal_decoder {
	const char *name;
	bool (*owns)(uint32_t type);
	const char *(*type_name)(uint32_t type);
	void (*describe)(uint32_t type, uint64_t lsn, const void *data, size_t len, size_t preview, FILE *out,
	    bool json);
	void (*prepass)(uint64_t lsn, uint32_t type, const void *data, size_t len);
	void *(*stats_begin)(void);
	void (*stats_record)(void *st, uint64_t lsn, uint32_t type, const void *data, size_t len);
	void (*stats_print)(void *st, FILE *out, bool json);
	void (*stats_end)(void *st);
};

/* ---- the durable queue's records (docs/DURABILITY.md) ---------------- */

/* Their layout: the header the queue itself encodes with (one description
 * of the format, issue 10), self-contained and never installed. */
#include "../src/le.h"
#include "../src/queue_durable_format.h"

#define DQ_NAME_MAX 255u /* longest name kept from a NAME record */

static void preview_text(FILE *out, const unsigned char *p, size_t n);
static void json_str(FILE *out, const unsigned char *p, size_t n);
static void hex(FILE *out, const unsigned char *p, size_t n);

/* Queue names from NAME records (queue id -> name), gathered by a first
 * pass over the log (decoder.prepass). Logs written before NAME records
 * existed have none: such a queue is shown by its id. */
struct dq_name {
	uint64_t qid;
	char name[DQ_NAME_MAX + 1];
};
static struct dq_name *dq_names;
static size_t dq_nnames, dq_names_cap;

static const char *
dq_name_of(uint64_t qid)
{
	for (size_t i = 0; i < dq_nnames; i++)
		if (dq_names[i].qid == qid)
			return dq_names[i].name;
	return NULL;
}

static bool
dq_owns(uint32_t type)
{
	return type == QUAYI_DQ_ADD || type == QUAYI_DQ_DEL || type == QUAYI_DQ_RETRY ||
	    type == QUAYI_DQ_NAME || type == QUAYI_DQ_DEDUP;
}

static const char *
dq_type_name(uint32_t type)
{
	switch (type) {
	case QUAYI_DQ_ADD: return "queue-add";
	case QUAYI_DQ_DEL: return "queue-del";
	case QUAYI_DQ_RETRY: return "queue-retry";
	case QUAYI_DQ_DEDUP: return "queue-dedup";
	default: return "queue-name";
	}
}

/* A NAME record's name, if well formed: *n bytes at the return value. */
static const char *
dq_name_rec(const unsigned char *p, size_t len, size_t *n)
{
	if (len < QUAYI_DQ_NAME_HDR)
		return NULL;
	*n = (size_t)quayi_le_get16(p + QUAYI_DQF_NAME_LEN);
	if (*n == 0 || *n != len - QUAYI_DQ_NAME_HDR || *n > DQ_NAME_MAX)
		return NULL;
	/* The id is the name's hash: a record that disagrees is not trusted. */
	if (quayi_dqf_qid((const char *)p + QUAYI_DQ_NAME_HDR, *n) != quayi_le_get64(p + QUAYI_DQF_QID))
		return NULL;
	return (const char *)p + QUAYI_DQ_NAME_HDR;
}

static void
dq_prepass(uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	const char *nm;
	size_t n;

	(void)lsn;
	if (type != QUAYI_DQ_NAME || (nm = dq_name_rec(data, len, &n)) == NULL)
		return;
	uint64_t q = quayi_le_get64(data);
	if (dq_name_of(q) != NULL)
		return;
	if (dq_nnames == dq_names_cap) {
		size_t cap = dq_names_cap ? dq_names_cap * 2 : 16;
		struct dq_name *v = realloc(dq_names, cap * sizeof(*v));
		if (v == NULL)
			return; /* shown by id: nothing is made up */
		dq_names = v;
		dq_names_cap = cap;
	}
	dq_names[dq_nnames].qid = q;
	memcpy(dq_names[dq_nnames].name, nm, n);
	dq_names[dq_nnames].name[n] = '\0';
	dq_nnames++;
}

/* "queue NAME [ID]" or "queue ID" (text); "queue":"ID","queue_name":"NAME" (JSON). */
static void
dq_queue(FILE *out, uint64_t q, bool json)
{
	const char *nm = dq_name_of(q);

	if (json) {
		fprintf(out, "\"queue\":\"%016" PRIx64 "\"", q);
		if (nm != NULL) {
			fprintf(out, ",\"queue_name\":\"");
			json_str(out, (const unsigned char *)nm, strlen(nm));
			fprintf(out, "\"");
		}
	} else if (nm != NULL) {
		fprintf(out, "queue %s [%016" PRIx64 "]", nm, q);
	} else {
		fprintf(out, "queue %016" PRIx64, q);
	}
}

/* The body of a well-formed ADD image: its offset, or 0 if malformed. */
static size_t
dq_body_off(const unsigned char *p, size_t len)
{
	size_t off = QUAYI_DQ_ADD_HDR + (size_t)quayi_le_get16(p + QUAYI_DQF_ADD_REPLY_LEN);
	uint64_t nh = quayi_le_get16(p + QUAYI_DQF_ADD_NHEADERS);

	for (uint64_t i = 0; i < nh && off <= len; i++) {
		if (len - off < QUAYI_DQF_HDR_ENTRY)
			return 0;
		uint64_t kl = p[off], vl = quayi_le_get32(p + off + 1);
		if (kl + vl > len - off - QUAYI_DQF_HDR_ENTRY)
			return 0;
		off += QUAYI_DQF_HDR_ENTRY + (size_t)(kl + vl);
	}
	if (off > len || len - off != quayi_le_get32(p + QUAYI_DQF_ADD_BODY_LEN))
		return 0;
	return off;
}

/* A DEDUP record as replay accepts it (src/queue_durable.c): its length,
 * a known kind and zero padding; anything else fails recovery (-EBADMSG),
 * so it is shown as malformed. */
static bool
dq_dedup_ok(const unsigned char *p, size_t len)
{
	if (len != QUAYI_DQ_DEDUP_LEN ||
	    (p[QUAYI_DQF_DEDUP_KIND] != QUAYI_DQF_DK_ID && p[QUAYI_DQF_DEDUP_KIND] != QUAYI_DQF_DK_CONTENT))
		return false;
	for (size_t i = QUAYI_DQF_DEDUP_KIND + 1; i < QUAYI_DQF_DEDUP_ACCEPTED; i++)
		if (p[i] != 0)
			return false;
	return true;
}

static void
dq_describe(uint32_t type, uint64_t lsn, const void *data, size_t len, size_t preview, FILE *out, bool json)
{
	static const char *const origin[8] = { [QUAYI_DQF_O_SEND] = "send",
		[QUAYI_DQF_O_DEAD] = "dead-letter",
		[QUAYI_DQF_O_REDRIVE] = "redrive",
		[QUAYI_DQF_O_COPY] = "copy" };
	static const char *const why[QUAYI_DQF_WHY_MAX + 1] = { "?", [QUAYI_DQF_WHY_ACK] = "ack",
		[QUAYI_DQF_WHY_DROP] = "drop", [QUAYI_DQF_WHY_DEAD] = "dead-letter",
		[QUAYI_DQF_WHY_DEAD_DROP] = "dead-drop", [QUAYI_DQF_WHY_REDRIVE] = "redrive" };
	const unsigned char *p = data;
	bool ok = type == QUAYI_DQ_ADD ? len >= QUAYI_DQ_ADD_HDR :
	    type == QUAYI_DQ_NAME      ? len >= QUAYI_DQ_NAME_HDR :
	    type == QUAYI_DQ_DEDUP     ? dq_dedup_ok(p, len) :
	                                 len == (type == QUAYI_DQ_DEL ? QUAYI_DQ_DEL_LEN : QUAYI_DQ_RETRY_LEN);

	if (!ok) {
		fprintf(out, json ? "{\"malformed\":true}" : "malformed (%zu bytes)", len);
		return;
	}
	uint64_t q = quayi_le_get64(p + QUAYI_DQF_QID), did = quayi_le_get64(p + QUAYI_DQF_DID);
	if (type == QUAYI_DQ_NAME) {
		size_t n;
		const char *nm = dq_name_rec(p, len, &n);
		if (nm == NULL) {
			fprintf(out, json ? "{\"malformed\":true}" : "malformed (%zu bytes)", len);
			return;
		}
		fprintf(out,
		    json ? "{\"queue\":\"%016" PRIx64 "\",\"name\":\"" : "queue %016" PRIx64 " is named \"",
		    q);
		if (json)
			json_str(out, (const unsigned char *)nm, n);
		else
			preview_text(out, (const unsigned char *)nm, n);
		fprintf(out, json ? "\"}" : "\"");
		return;
	}
	if (json)
		fprintf(out, "{");
	dq_queue(out, q, json);
	if (type == QUAYI_DQ_DEDUP) {
		/* A key of the queue's dedup window (the key is XXH3-128: high
		 * then low 64 bits, as XXH128 prints it). */
		fprintf(out,
		    json ? ",\"kind\":\"%s\",\"accepted_ns\":%" PRId64 ",\"key\":\"%016" PRIx64 "%016" PRIx64
		           "\"}" :
		           " dedup %s accepted %" PRId64 " key %016" PRIx64 "%016" PRIx64,
		    p[QUAYI_DQF_DEDUP_KIND] == QUAYI_DQF_DK_ID ? "id" : "content",
		    (int64_t)quayi_le_get64(p + QUAYI_DQF_DEDUP_ACCEPTED),
		    quayi_le_get64(p + QUAYI_DQF_DEDUP_KEY_HI), quayi_le_get64(p + QUAYI_DQF_DEDUP_KEY_LO));
		return;
	}
	if (type == QUAYI_DQ_ADD) {
		unsigned o = (p[QUAYI_DQF_ADD_FLAGS] >> 1) & 7u;
		/* The durable id: did 0 means this record's own LSN (a send). */
		uint64_t rdid = did != 0 ? did : lsn;
		size_t boff = dq_body_off(p, len), blen = boff != 0 ? len - boff : 0;
		size_t n = blen < preview ? blen : preview;

		fprintf(out,
		    json ? ",\"did\":%" PRIu64 ",\"did_is_lsn\":%s,\"origin\":\"%s\","
		           "\"attempts\":%" PRIu64 ",\"priority\":%u,\"not_before_ns\":%" PRId64
		           ",\"expires_ns\":%" PRId64 ",\"headers\":%" PRIu64 ",\"body_len\":%" PRIu64 :
		           " did %" PRIu64 "%s %s attempts %" PRIu64 " prio %u"
		           " not_before %" PRId64 " expires %" PRId64 " headers %" PRIu64 " body %" PRIu64,
		    rdid, did == 0 ? (json ? "true" : " (its LSN)") : (json ? "false" : ""),
		    origin[o] != NULL ? origin[o] : "?", (uint64_t)quayi_le_get32(p + QUAYI_DQF_ADD_ATTEMPTS),
		    p[QUAYI_DQF_ADD_PRIORITY], (int64_t)quayi_le_get64(p + QUAYI_DQF_ADD_NOT_BEFORE),
		    (int64_t)quayi_le_get64(p + QUAYI_DQF_ADD_EXPIRES),
		    (uint64_t)quayi_le_get16(p + QUAYI_DQF_ADD_NHEADERS),
		    (uint64_t)quayi_le_get32(p + QUAYI_DQF_ADD_BODY_LEN));
		if (boff == 0) {
			fprintf(out, json ? ",\"body_malformed\":true}" : " (malformed image)");
			return;
		}
		if (json) {
			fprintf(out, ",\"body_preview\":\"");
			json_str(out, p + boff, n);
			fprintf(out, "\",\"body_preview_hex\":\"");
			hex(out, p + boff, n);
			fprintf(out, "\"}");
		} else {
			fprintf(out, " body=\"");
			preview_text(out, p + boff, n);
			fprintf(out, "\"%s", n < blen ? "..." : "");
		}
	} else if (type == QUAYI_DQ_DEL) {
		unsigned w = p[QUAYI_DQF_DEL_WHY];
		fprintf(out, json ? ",\"did\":%" PRIu64 ",\"why\":\"%s\"}" : " did %" PRIu64 " %s", did,
		    w <= QUAYI_DQF_WHY_MAX ? why[w] : "?");
	} else {
		fprintf(out,
		    json ? ",\"did\":%" PRIu64 ",\"attempts\":%" PRIu64 ",\"not_before_ns\":%" PRId64 "}" :
		           " did %" PRIu64 " attempts %" PRIu64 " not_before %" PRId64,
		    did, (uint64_t)quayi_le_get32(p + QUAYI_DQF_RETRY_ATTEMPTS),
		    (int64_t)quayi_le_get64(p + QUAYI_DQF_RETRY_NOT_BEFORE));
	}
}

/* stats: the live set, replayed as the queue does: (queue, did) entries
 * added by ADD (did 0: the record's LSN), removed by DEL. */
struct dq_live {
	uint64_t *key; /* pairs (qid, did); did 0: empty */
	size_t mask, count;
	uint64_t live_bytes;
	uint64_t *bytes; /* per entry */
	uint64_t seen;   /* records of the queue's types */
	bool nomem, malformed;
};

static size_t
dq_slot(const struct dq_live *l, uint64_t q, uint64_t d)
{
	uint64_t x = (d ^ q * UINT64_C(0xBF58476D1CE4E5B9)) * UINT64_C(0x9E3779B97F4A7C15);

	return (size_t)(x ^ (x >> 31)) & l->mask;
}

static void *
dq_stats_begin(void)
{
	struct dq_live *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->mask = 63;
	l->key = calloc(2 * 64, sizeof(*l->key));
	l->bytes = calloc(64, sizeof(*l->bytes));
	if (l->key == NULL || l->bytes == NULL) {
		free(l->key);
		free(l->bytes);
		free(l);
		return NULL;
	}
	return l;
}

static size_t
dq_find(struct dq_live *l, uint64_t q, uint64_t d)
{
	size_t i = dq_slot(l, q, d);

	while (l->key[2 * i + 1] != 0 && !(l->key[2 * i] == q && l->key[2 * i + 1] == d))
		i = (i + 1) & l->mask;
	return i;
}

static bool
dq_grow(struct dq_live *l)
{
	struct dq_live n = *l;
	size_t cap = (l->mask + 1) * 2;

	n.mask = cap - 1;
	n.key = calloc(2 * cap, sizeof(*n.key));
	n.bytes = calloc(cap, sizeof(*n.bytes));
	if (n.key == NULL || n.bytes == NULL) {
		free(n.key);
		free(n.bytes);
		return false;
	}
	for (size_t i = 0; i <= l->mask; i++)
		if (l->key[2 * i + 1] != 0) {
			size_t j = dq_find(&n, l->key[2 * i], l->key[2 * i + 1]);

			n.key[2 * j] = l->key[2 * i];
			n.key[2 * j + 1] = l->key[2 * i + 1];
			n.bytes[j] = l->bytes[i];
		}
	free(l->key);
	free(l->bytes);
	*l = n;
	return true;
}

static void
dq_stats_record(void *st, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct dq_live *l = st;
	const unsigned char *p = data;
	uint64_t q, d;
	size_t i;

	l->seen++;
	if (type == QUAYI_DQ_NAME || type == QUAYI_DQ_DEDUP)
		return; /* gathered by the prepass; not messages */
	if ((type == QUAYI_DQ_ADD && len < QUAYI_DQ_ADD_HDR) ||
	    (type != QUAYI_DQ_ADD && len < QUAYI_DQ_DEL_LEN)) {
		l->malformed = true;
		return;
	}
	q = quayi_le_get64(p + QUAYI_DQF_QID);
	d = quayi_le_get64(p + QUAYI_DQF_DID);
	if (type == QUAYI_DQ_ADD && d == 0)
		d = lsn;
	if (type == QUAYI_DQ_RETRY || d == 0)
		return;
	if (type == QUAYI_DQ_ADD) {
		if ((l->count + 1) * 2 > l->mask + 1 && !dq_grow(l)) {
			l->nomem = true;
			return;
		}
		i = dq_find(l, q, d);
		if (l->key[2 * i + 1] == 0)
			l->count++;
		l->live_bytes += len - l->bytes[i];
		l->key[2 * i] = q;
		l->key[2 * i + 1] = d;
		l->bytes[i] = len;
		return;
	}
	i = dq_find(l, q, d);
	if (l->key[2 * i + 1] == 0)
		return; /* its ADD was compacted away */
	/* Remove with backward shift. */
	l->count--;
	l->live_bytes -= l->bytes[i];
	for (size_t j = (i + 1) & l->mask; l->key[2 * j + 1] != 0; j = (j + 1) & l->mask) {
		size_t h = dq_slot(l, l->key[2 * j], l->key[2 * j + 1]);

		if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
			l->key[2 * i] = l->key[2 * j];
			l->key[2 * i + 1] = l->key[2 * j + 1];
			l->bytes[i] = l->bytes[j];
			i = j;
		}
	}
	l->key[2 * i + 1] = 0;
	l->bytes[i] = 0;
}

/* One queue's line of stats: "  orders: 412 live" (or its id). */
static void
dq_print_queue(FILE *out, bool json, size_t i, uint64_t q, uint64_t live)
{
	const char *nm = dq_name_of(q);

	if (json) {
		fprintf(out, "%s{", i ? "," : "");
		dq_queue(out, q, true);
		fprintf(out, ",\"live\":%" PRIu64 "}", live);
	} else if (nm != NULL) {
		fprintf(out, "  %s: %" PRIu64 " live\n", nm, live);
	} else {
		fprintf(out, "  queue %016" PRIx64 " (not named in the log): %" PRIu64 " live\n", q, live);
	}
}

static void
dq_stats_print(void *st, FILE *out, bool json)
{
	struct dq_live *l = st;
	uint64_t queues = 0;

	if (l->seen == 0) {
		/* No figure for a log without queue records. */
		if (!json)
			fprintf(out, "live messages:    unknown (no durable-queue records)\n");
		return;
	}
	/* Distinct queues with live messages (quadratic in their number,
	 * which is small). */
	for (size_t i = 0; i <= l->mask; i++) {
		bool first = l->key[2 * i + 1] != 0;

		for (size_t j = 0; j < i && first; j++)
			if (l->key[2 * j + 1] != 0 && l->key[2 * j] == l->key[2 * i])
				first = false;
		queues += first;
	}
	if (l->nomem || l->malformed) {
		fprintf(out, json ? ",\"live_messages\":null" : "live messages:    unknown (%s)\n",
		    l->nomem ? "out of memory" : "malformed queue record");
		return;
	}
	if (json)
		fprintf(out,
		    ",\"live_messages\":%zu,\"live_message_bytes\":%" PRIu64 ",\"live_queues\":%" PRIu64,
		    l->count, l->live_bytes, queues);
	else
		fprintf(out, "live messages:    %zu (%" PRIu64 " bytes of records) in %" PRIu64 " queue(s)\n",
		    l->count, l->live_bytes, queues);
	/* Per queue, by name where the log names it (issue 11), in the
	 * order of the table; every named queue is listed, live or not. */
	if (json)
		fprintf(out, ",\"queues\":[");
	size_t shown = 0;
	for (size_t i = 0; i <= l->mask; i++) {
		bool first = l->key[2 * i + 1] != 0;
		uint64_t q = l->key[2 * i], c = 0;

		for (size_t j = 0; j < i && first; j++)
			if (l->key[2 * j + 1] != 0 && l->key[2 * j] == q)
				first = false;
		if (!first)
			continue;
		for (size_t j = i; j <= l->mask; j++)
			c += l->key[2 * j + 1] != 0 && l->key[2 * j] == q;
		dq_print_queue(out, json, shown++, q, c);
	}
	for (size_t k = 0; k < dq_nnames; k++) {
		bool live = false;
		for (size_t i = 0; i <= l->mask && !live; i++)
			live = l->key[2 * i + 1] != 0 && l->key[2 * i] == dq_names[k].qid;
		if (!live)
			dq_print_queue(out, json, shown++, dq_names[k].qid, 0);
	}
	if (json)
		fprintf(out, "]");
}

static void
dq_stats_end(void *st)
{
	struct dq_live *l = st;

	free(l->key);
	free(l->bytes);
	free(l);
}

static const struct wal_decoder dq_decoder = {
	"durable queue",
	dq_owns,
	dq_type_name,
	dq_describe,
	dq_prepass,
	dq_stats_begin,
	dq_stats_record,
	dq_stats_print,
	dq_stats_end,
};

/* The registered decoders (NULL-terminated). */
static const struct wal_decoder *const decoders[] = {
	&dq_decoder,
	NULL,
};

static const struct wal_decoder *
decoder_for(uint32_t type)
{
	for (size_t i = 0; decoders[i] != NULL; i++)
		if (decoders[i]->owns(type))
			return decoders[i];
	return NULL;
}

static const char *
type_name(uint32_t type)
{
	const struct wal_decoder *d = decoder_for(type);

	return d != NULL && d->type_name != NULL ? d->type_name(type) : NULL;
}

/* ---- messages ------------------------------------------------------ */

static void __attribute__((format(printf, 1, 2))) err_msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
usage(FILE *out)
{
	fprintf(out,
	    "Usage: %s COMMAND DIR [OPTIONS]\n"
	    "Inspect a quay write-ahead log directory (read-only: nothing is changed).\n"
	    "\n"
	    "Commands:\n"
	    "  verify DIR        check every segment header and record (CRC32C, LSNs,\n"
	    "                    batches); exit 0 if sound, 1 if damaged\n"
	    "  dump DIR          print one line per record: lsn, type, length, preview\n"
	    "      --json        one JSON object per line instead\n"
	    "      --from LSN    start at this LSN (default: the first)\n"
	    "      --limit N     print at most N records\n"
	    "      --preview B   show at most B payload bytes (default %u, max %u)\n"
	    "      --salvage     on corruption, show the valid prefix (exit 0)\n"
	    "  stats DIR         segments, records, bytes, LSNs, per-type counts\n"
	    "      --json        one JSON object\n"
	    "      --salvage     on corruption, summarise the valid prefix (exit 0)\n"
	    "\n"
	    "  -h, --help        this text\n"
	    "  -V, --version     the version\n"
	    "\n"
	    "Exit status: 0 sound / done, 1 damaged log, 2 usage error or a directory\n"
	    "that is missing, unreadable or not a WAL.\n"
	    "A log open by a writer may show its newest records as a torn tail.\n",
	    prog, PREVIEW_DEFAULT, PREVIEW_MAX);
}

/* ---- the directory -------------------------------------------------- */

/* A segment file name: 16 lower-case hex digits + ".wal" (WAL-FORMAT 1). */
static bool
is_segment_name(const char *n)
{
	for (int i = 0; i < 16; i++)
		if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
			return false;
	return strcmp(n + 16, ".wal") == 0;
}

/* Check that dir is a readable directory holding at least one segment
 * file. Returns 0, or prints why not and returns EXIT_USAGE. */
static int
check_dir(const char *dir)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	size_t nseg = 0;

	if (stat(dir, &st) != 0) {
		err_msg("%s: %s", dir, strerror(errno));
		return EXIT_USAGE;
	}
	if (!S_ISDIR(st.st_mode)) {
		err_msg("%s: not a directory (a WAL is a directory of segment files)", dir);
		return EXIT_USAGE;
	}
	if ((d = opendir(dir)) == NULL) {
		err_msg("%s: cannot read the directory: %s", dir, strerror(errno));
		return EXIT_USAGE;
	}
	errno = 0;
	while ((e = readdir(d)) != NULL)
		if (is_segment_name(e->d_name))
			nseg++;
	if (errno != 0) {
		err_msg("%s: cannot read the directory: %s", dir, strerror(errno));
		closedir(d);
		return EXIT_USAGE;
	}
	closedir(d);
	if (nseg == 0) {
		err_msg("%s: not a WAL: no segment file (NNNNNNNNNNNNNNNN.wal) in it", dir);
		return EXIT_USAGE;
	}
	return 0;
}

/* Join dir and a segment name for messages. */
static void
print_where(FILE *out, const char *dir, const struct quay_wal_report *rep)
{
	size_t dl = strlen(dir);

	fprintf(out, "%s%s%s, byte offset %" PRIu64 " (0x%" PRIx64 ")", dir,
	    dl > 0 && dir[dl - 1] == '/' ? "" : "/", rep->segment, rep->offset, rep->offset);
}

/*
 * Open dir read-only (with SALVAGE if salvage). On success *out is set and
 * 0 returned; on failure a message is printed and the exit status
 * returned (1 for corruption, 2 otherwise).
 */
static int
open_ro(const char *dir, bool salvage, struct quay_wal_report *rep, quay_wal **out)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	int ex, r;

	if ((ex = check_dir(dir)) != 0)
		return ex;
	o.flags = QUAY_WAL_READONLY | (salvage ? QUAY_WAL_SALVAGE : 0u);
	o.report = rep;
	r = quay_wal_open(dir, &o, out);
	if (r == 0)
		return 0;
	if (r == -EBADMSG) {
		fprintf(stderr, "%s: CORRUPT: ", prog);
		print_where(stderr, dir, rep);
		fprintf(stderr, ": %s\n", quay_wal_reason_str(rep->reason));
		fprintf(stderr,
		    "%s: damage before the end of the log (not a torn tail); "
		    "records from there on cannot be trusted\n",
		    prog);
		return EXIT_DAMAGED;
	}
	if (rep->reason == QUAY_WAL_R_IO && rep->segment[0] != '\0') {
		fprintf(stderr, "%s: ", prog);
		print_where(stderr, dir, rep);
		fprintf(stderr, ": %s: %s\n", quay_wal_reason_str(rep->reason), quay_strerror(r));
		return EXIT_USAGE;
	}
	if (rep->os_errno != 0)
		err_msg("%s: cannot open the log: %s (%s: %s)", dir, quay_strerror(r),
		    rep->os_path[0] != '\0' ? rep->os_path : dir, strerror(rep->os_errno));
	else
		err_msg("%s: cannot open the log: %s", dir, quay_strerror(r));
	return EXIT_USAGE;
}

/* After a successful open: say what was found besides a clean end. */
static void
note_damage(FILE *out, const char *dir, const struct quay_wal_report *rep, const char *what)
{
	if (rep->corrupt) {
		fprintf(out, "%s: CORRUPT (salvaged): ", prog);
		print_where(out, dir, rep);
		fprintf(out,
		    ": %s; %s only the valid prefix before it (%" PRIu32 " later segment(s) ignored)\n",
		    quay_wal_reason_str(rep->reason), what, rep->segments_removed);
	} else if (rep->tail_cut) {
		fprintf(out, "%s: torn tail: ", prog);
		print_where(out, dir, rep);
		fprintf(out, ": %s; %s the records before it\n", quay_wal_reason_str(rep->reason), what);
	}
}

/* The decoders' first pass (names of things, e.g. queues). */
static int
prepass_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	const struct wal_decoder *d = decoder_for(type);

	(void)ctx;
	if (d != NULL && d->prepass != NULL)
		d->prepass(lsn, type, data, len);
	return 0;
}

/* ---- verify --------------------------------------------------------- */

struct count_ctx {
	uint64_t records;
	uint64_t last_lsn;
	bool order_ok;
};

static int
count_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct count_ctx *c = ctx;

	(void)type;
	(void)data;
	(void)len;
	if (lsn <= c->last_lsn)
		c->order_ok = false;
	c->last_lsn = lsn;
	c->records++;
	return 0;
}

static int
cmd_verify(const char *dir)
{
	struct quay_wal_report rep;
	struct count_ctx cc = { 0, 0, true };
	quay_wal *w = NULL;
	int ex, r;

	if ((ex = open_ro(dir, false, &rep, &w)) != 0)
		return ex;
	/* open checked every record; replay reads them again and re-checks
	 * each checksum (the file may have changed under us, too). */
	r = quay_wal_replay(w, 0, count_visit, &cc);
	quay_wal_close(w);
	if (r != 0) {
		err_msg("%s: re-reading the records failed: %s", dir, quay_strerror(r));
		return r == -EBADMSG ? EXIT_DAMAGED : EXIT_USAGE;
	}
	if (cc.records != rep.records || !cc.order_ok) {
		err_msg("%s: the log changed while it was read (%" PRIu64 " records scanned, %" PRIu64
		        " replayed): is a writer appending?",
		    dir, rep.records, cc.records);
		return EXIT_DAMAGED;
	}
	if (rep.tail_cut) {
		printf("TORN TAIL: ");
		print_where(stdout, dir, &rep);
		printf(": %s\n", quay_wal_reason_str(rep.reason));
		printf("  recoverable: opening the log for writing cuts %" PRIu64 " byte(s)", rep.cut_bytes);
		if (rep.cut_records > 0)
			printf(" holding %" PRIu64 " valid record(s) of an unfinished batch",
			    rep.cut_records);
		if (rep.segments_removed > 0)
			printf(" and removes %" PRIu32 " segment file(s) whose creation was cut short",
			    rep.segments_removed);
		/* What can and cannot be known (issue 11): the old line said
		 * "no record acknowledged in SYNC mode is lost", but a synced
		 * record damaged afterwards, with no later record to prove it
		 * durable (WAL-R3), is classed as a torn tail too. */
		printf(";\n  every record before the cut is intact and kept. Whether the cut record(s) had\n"
		       "  been acknowledged cannot be told from the log: a write cut short by a crash\n"
		       "  (never acknowledged in SYNC mode) and a synced record damaged afterwards look\n"
		       "  the same when no later record proves them durable\n");
		printf("  kept: %" PRIu32 " segment(s), %" PRIu64 " record(s)",
		    rep.segments - rep.segments_removed, rep.records);
		if (rep.last_lsn > 0)
			printf(", LSN %" PRIu64 "..%" PRIu64, rep.first_lsn, rep.last_lsn);
		printf("\n");
		return EXIT_DAMAGED;
	}
	printf("OK: %s: %" PRIu32 " segment(s), %" PRIu64 " record(s), %" PRIu64 " byte(s) of log data", dir,
	    rep.segments, rep.records, rep.bytes);
	if (rep.last_lsn > 0)
		printf(", LSN %" PRIu64 "..%" PRIu64, rep.first_lsn, rep.last_lsn);
	printf("\n");
	return EXIT_SOUND;
}

/* ---- dump ----------------------------------------------------------- */

struct dump_ctx {
	bool json;
	uint64_t limit; /* 0: no limit */
	uint64_t shown;
	size_t preview;
};

#define DUMP_STOP 1

static void
preview_text(FILE *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned c = p[i];
		switch (c) {
		case '\\': fputs("\\\\", out); break;
		case '"': fputs("\\\"", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		case '\0': fputs("\\0", out); break;
		default:
			if (c >= 0x20 && c < 0x7f)
				fputc((int)c, out);
			else
				fprintf(out, "\\x%02x", c);
		}
	}
}

/* A JSON string body: bytes >= 0x80 become \u00XX (the byte's value), so
 * the output is valid JSON whatever the payload holds. */
static void
json_str(FILE *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned c = p[i];
		switch (c) {
		case '\\': fputs("\\\\", out); break;
		case '"': fputs("\\\"", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		default:
			if (c >= 0x20 && c < 0x7f)
				fputc((int)c, out);
			else
				fprintf(out, "\\u%04x", c);
		}
	}
}

static void
hex(FILE *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(out, "%02x", p[i]);
}

static int
dump_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct dump_ctx *c = ctx;
	const unsigned char *p = data;
	size_t n = len < c->preview ? len : c->preview;
	const struct wal_decoder *d = decoder_for(type);
	const char *tn = d != NULL && d->type_name != NULL ? d->type_name(type) : NULL;

	if (c->limit != 0 && c->shown >= c->limit)
		return DUMP_STOP;
	if (c->json) {
		printf("{\"lsn\":%" PRIu64 ",\"type\":%" PRIu32 ",\"type_hex\":\"0x%08" PRIx32 "\"", lsn,
		    type, type);
		if (tn != NULL) {
			printf(",\"type_name\":\"");
			json_str(stdout, (const unsigned char *)tn, strlen(tn));
			printf("\"");
		}
		printf(",\"len\":%zu,\"preview\":\"", len);
		json_str(stdout, p, n);
		printf("\",\"preview_hex\":\"");
		hex(stdout, p, n);
		printf("\",\"truncated\":%s", n < len ? "true" : "false");
		if (d != NULL && d->describe != NULL) {
			printf(",\"decoded\":");
			d->describe(type, lsn, data, len, c->preview, stdout, true);
		}
		printf("}\n");
	} else {
		printf("lsn=%" PRIu64 " type=0x%08" PRIx32, lsn, type);
		if (tn != NULL)
			printf("(%s)", tn);
		printf(" len=%zu data=\"", len);
		preview_text(stdout, p, n);
		printf("\"%s", n < len ? "..." : "");
		if (d != NULL && d->describe != NULL) {
			printf(" ");
			d->describe(type, lsn, data, len, c->preview, stdout, false);
		}
		printf("\n");
	}
	c->shown++;
	return 0;
}

static int
cmd_dump(const char *dir, bool json, uint64_t from, uint64_t limit, size_t preview, bool salvage)
{
	struct quay_wal_report rep;
	struct dump_ctx dc = { json, limit, 0, preview };
	quay_wal *w = NULL;
	int ex, r;

	if ((ex = open_ro(dir, salvage, &rep, &w)) != 0)
		return ex;
	note_damage(stderr, dir, &rep, "dumping");
	r = quay_wal_replay(w, 0, prepass_visit, NULL);
	if (r == 0)
		r = quay_wal_replay(w, from, dump_visit, &dc);
	quay_wal_close(w);
	if (r != 0 && r != DUMP_STOP) {
		fflush(stdout);
		err_msg("%s: reading the records failed: %s", dir, quay_strerror(r));
		return r == -EBADMSG ? EXIT_DAMAGED : EXIT_USAGE;
	}
	return EXIT_SOUND;
}

/* ---- stats ---------------------------------------------------------- */

/* Per-type count and bytes: an open-addressing hash table keyed by type
 * (0 is never a caller type, so it marks a free slot). */
struct type_stat {
	uint32_t type;
	uint64_t records;
	uint64_t payload_bytes;
	uint64_t log_bytes; /* header + payload + padding */
};

struct stats_ctx {
	struct type_stat *tab;
	size_t cap, used;
	bool nomem;
	void *dstate[sizeof(decoders) / sizeof(decoders[0])];
};

static struct type_stat *
stat_slot(struct stats_ctx *s, uint32_t type)
{
	size_t mask = s->cap - 1, i = (size_t)((type * UINT32_C(0x9E3779B1)) >> 7) & mask;

	while (s->tab[i].type != 0 && s->tab[i].type != type)
		i = (i + 1) & mask;
	return &s->tab[i];
}

static bool
stat_grow(struct stats_ctx *s)
{
	struct stats_ctx n = *s;

	n.cap = s->cap ? s->cap * 2 : 64;
	if ((n.tab = calloc(n.cap, sizeof(*n.tab))) == NULL)
		return false;
	for (size_t i = 0; i < s->cap; i++)
		if (s->tab[i].type != 0)
			*stat_slot(&n, s->tab[i].type) = s->tab[i];
	free(s->tab);
	s->tab = n.tab;
	s->cap = n.cap;
	return true;
}

static int
stats_visit(void *ctx, uint64_t lsn, uint32_t type, const void *data, size_t len)
{
	struct stats_ctx *s = ctx;
	struct type_stat *t;

	if (2 * (s->used + 1) > s->cap && !stat_grow(s)) {
		s->nomem = true;
		return -ENOMEM;
	}
	t = stat_slot(s, type);
	if (t->type == 0) {
		t->type = type;
		s->used++;
	}
	t->records++;
	t->payload_bytes += len;
	t->log_bytes += 32 + ((len + 7) & ~(size_t)7);
	for (size_t i = 0; decoders[i] != NULL; i++)
		if (s->dstate[i] != NULL && decoders[i]->stats_record != NULL && decoders[i]->owns(type))
			decoders[i]->stats_record(s->dstate[i], lsn, type, data, len);
	return 0;
}

static int
cmp_type(const void *a, const void *b)
{
	const struct type_stat *x = a, *y = b;

	return x->type < y->type ? -1 : x->type > y->type;
}

static int
cmd_stats(const char *dir, bool json, bool salvage)
{
	struct quay_wal_report rep;
	struct quay_wal_info info;
	struct stats_ctx sc;
	quay_wal *w = NULL;
	size_t nd = 0;
	int ex, r;

	memset(&sc, 0, sizeof(sc));
	if ((ex = open_ro(dir, salvage, &rep, &w)) != 0)
		return ex;
	note_damage(stderr, dir, &rep, "counting");
	r = quay_wal_info(w, &info);
	for (nd = 0; r == 0 && decoders[nd] != NULL; nd++) {
		if (decoders[nd]->stats_begin != NULL &&
		    (sc.dstate[nd] = decoders[nd]->stats_begin()) == NULL)
			r = -ENOMEM;
	}
	if (r == 0)
		r = quay_wal_replay(w, 0, prepass_visit, NULL);
	if (r == 0)
		r = quay_wal_replay(w, 0, stats_visit, &sc);
	quay_wal_close(w);
	if (r != 0) {
		err_msg("%s: reading the records failed: %s", dir, quay_strerror(r));
		ex = r == -EBADMSG ? EXIT_DAMAGED : EXIT_USAGE;
		goto out;
	}

	/* Sort the used slots to the front, by type. */
	size_t n = 0;
	for (size_t i = 0; i < sc.cap; i++)
		if (sc.tab[i].type != 0)
			sc.tab[n++] = sc.tab[i];
	if (n > 1)
		qsort(sc.tab, n, sizeof(*sc.tab), cmp_type);
	/* LSNs are consecutive over the log (WAL-FORMAT 4), so the ones that
	 * no caller record holds belong to the WAL's own records. */
	uint64_t span =
	    info.last_lsn >= info.first_lsn && info.last_lsn > 0 ? info.last_lsn - info.first_lsn + 1 : 0;
	uint64_t internal = span > info.records ? span - info.records : 0;
	const char *state = rep.corrupt ? "corrupt-salvaged" : rep.tail_cut ? "torn-tail" : "sound";

	if (json) {
		printf("{\"dir\":\"");
		json_str(stdout, (const unsigned char *)dir, strlen(dir));
		printf("\",\"state\":\"%s\",\"segments\":%" PRIu64 ",\"records\":%" PRIu64
		       ",\"wal_internal_records\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"file_bytes\":%" PRIu64
		       ",\"first_lsn\":%" PRIu64 ",\"last_lsn\":%" PRIu64 ",\"checkpoint_lsn\":%" PRIu64,
		    state, info.segments, info.records, internal, info.bytes, info.file_bytes, info.first_lsn,
		    info.last_lsn, info.checkpoint_lsn);
		if (rep.tail_cut || rep.corrupt) {
			printf(",\"damage\":{\"segment\":\"");
			json_str(stdout, (const unsigned char *)rep.segment, strlen(rep.segment));
			printf("\",\"offset\":%" PRIu64 ",\"reason\":\"%s\",\"cut_bytes\":%" PRIu64 "}",
			    rep.offset, quay_wal_reason_str(rep.reason), rep.cut_bytes);
		}
		printf(",\"types\":[");
		for (size_t i = 0; i < n; i++) {
			const char *tn = type_name(sc.tab[i].type);
			printf("%s{\"type\":%" PRIu32 ",\"type_hex\":\"0x%08" PRIx32 "\"", i ? "," : "",
			    sc.tab[i].type, sc.tab[i].type);
			if (tn != NULL) {
				printf(",\"name\":\"");
				json_str(stdout, (const unsigned char *)tn, strlen(tn));
				printf("\"");
			}
			printf(",\"records\":%" PRIu64 ",\"payload_bytes\":%" PRIu64 ",\"log_bytes\":%" PRIu64
			       "}",
			    sc.tab[i].records, sc.tab[i].payload_bytes, sc.tab[i].log_bytes);
		}
		printf("]");
		for (size_t i = 0; decoders[i] != NULL; i++)
			if (sc.dstate[i] != NULL && decoders[i]->stats_print != NULL)
				decoders[i]->stats_print(sc.dstate[i], stdout, true);
		printf("}\n");
	} else {
		printf("directory:        %s\n", dir);
		printf("state:            %s\n", state);
		printf("segments:         %" PRIu64 "\n", info.segments);
		printf("records:          %" PRIu64 " (+ %" PRIu64 " WAL-internal)\n", info.records,
		    internal);
		printf("bytes:            %" PRIu64 " of log data, %" PRIu64
		       " in files (preallocation included)\n",
		    info.bytes, info.file_bytes);
		if (info.last_lsn > 0)
			printf("LSN:              %" PRIu64 "..%" PRIu64 "\n", info.first_lsn, info.last_lsn);
		else
			printf("LSN:              none (no record)\n");
		if (info.checkpoint_lsn > 0)
			printf("checkpoint LSN:   %" PRIu64 "\n", info.checkpoint_lsn);
		else
			printf("checkpoint LSN:   none\n");
		printf("types:            %zu\n", n);
		for (size_t i = 0; i < n; i++) {
			const char *tn = type_name(sc.tab[i].type);
			printf("  type 0x%08" PRIx32 " %-12s %12" PRIu64 " record(s) %14" PRIu64
			       " payload bytes %14" PRIu64 " log bytes\n",
			    sc.tab[i].type, tn != NULL ? tn : "", sc.tab[i].records, sc.tab[i].payload_bytes,
			    sc.tab[i].log_bytes);
		}
		bool live = false;
		for (size_t i = 0; decoders[i] != NULL; i++)
			if (sc.dstate[i] != NULL && decoders[i]->stats_print != NULL) {
				decoders[i]->stats_print(sc.dstate[i], stdout, false);
				live = true;
			}
		if (!live)
			printf("live messages:    unknown (no decoder for these record types)\n");
	}
	ex = EXIT_SOUND;
out:
	for (size_t i = 0; i < nd; i++)
		if (sc.dstate[i] != NULL && decoders[i]->stats_end != NULL)
			decoders[i]->stats_end(sc.dstate[i]);
	free(sc.tab);
	return ex;
}

/* ---- arguments ------------------------------------------------------ */

/* A decimal unsigned number, the whole string, no sign. */
static bool
parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (s == NULL || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = (uint64_t)v;
	return true;
}

/* Match "--name VALUE" or "--name=VALUE"; *i advanced past what it took.
 * Returns 1 matched (*val set, maybe NULL if missing), 0 not this option. */
static int
opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);

	if (strncmp(argv[*i], name, n) != 0)
		return 0;
	if (argv[*i][n] == '=') {
		*val = argv[*i] + n + 1;
		return 1;
	}
	if (argv[*i][n] != '\0')
		return 0;
	*val = *i + 1 < argc ? argv[++*i] : NULL;
	return 1;
}

int
main(int argc, char **argv)
{
	const char *cmd, *dir = NULL, *v;
	bool json = false, salvage = false;
	bool has_from = false, has_limit = false, has_preview = false;
	uint64_t from = 0, limit = 0, preview = PREVIEW_DEFAULT;
	int ex;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return fflush(stdout) == 0 ? 0 : EXIT_USAGE;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
		printf("quay-wal %s (WAL format version 1)\n", QUAY_VERSION_STRING);
		return fflush(stdout) == 0 ? 0 : EXIT_USAGE;
	}
	if (strcmp(cmd, "verify") != 0 && strcmp(cmd, "dump") != 0 && strcmp(cmd, "stats") != 0) {
		err_msg("unknown command '%s' (try --help)", cmd);
		return EXIT_USAGE;
	}
	bool is_dump = strcmp(cmd, "dump") == 0, is_stats = strcmp(cmd, "stats") == 0;
	bool opts_done = false;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (!opts_done && a[0] == '-' && a[1] != '\0') {
			if (strcmp(a, "--") == 0) {
				opts_done = true;
			} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
				usage(stdout);
				return 0;
			} else if ((is_dump || is_stats) && strcmp(a, "--json") == 0) {
				json = true;
			} else if ((is_dump || is_stats) && strcmp(a, "--salvage") == 0) {
				salvage = true;
			} else if (is_dump && opt_value(argc, argv, &i, "--from", &v)) {
				if (has_from || !parse_u64(v, &from)) {
					err_msg("--from needs one LSN (a decimal number)");
					return EXIT_USAGE;
				}
				has_from = true;
			} else if (is_dump && opt_value(argc, argv, &i, "--limit", &v)) {
				if (has_limit || !parse_u64(v, &limit) || limit == 0) {
					err_msg("--limit needs one count of at least 1");
					return EXIT_USAGE;
				}
				has_limit = true;
			} else if (is_dump && opt_value(argc, argv, &i, "--preview", &v)) {
				if (has_preview || !parse_u64(v, &preview) || preview > PREVIEW_MAX) {
					err_msg("--preview needs one byte count, 0..%u", PREVIEW_MAX);
					return EXIT_USAGE;
				}
				has_preview = true;
			} else {
				err_msg("%s: unknown option '%s' (try --help)", cmd, a);
				return EXIT_USAGE;
			}
			continue;
		}
		if (dir != NULL) {
			err_msg("%s: one directory only ('%s' is extra)", cmd, a);
			return EXIT_USAGE;
		}
		dir = a;
	}
	if (dir == NULL || dir[0] == '\0') {
		err_msg("%s: which directory? (%s %s DIR)", cmd, prog, cmd);
		return EXIT_USAGE;
	}

	if (is_dump)
		ex = cmd_dump(dir, json, from, limit, (size_t)preview, salvage);
	else if (is_stats)
		ex = cmd_stats(dir, json, salvage);
	else
		ex = cmd_verify(dir);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		err_msg("writing the output failed: %s", strerror(errno));
		return EXIT_USAGE;
	}
	return ex;
}
