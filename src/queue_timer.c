/* SPDX-License-Identifier: MIT */
/*
 * The queue's hierarchical timing wheel: delays, retry backoff and
 * extended leases (docs/QUEUE.md, "Timers").
 *
 * Levels. Level 0 has 256 slots of one tick; levels 1..4 have 64 slots
 * each, of 2^8, 2^14, 2^20 and 2^26 ticks. An entry due at tick t
 * (t = due / tick) goes to level 0 if t - cur < 2^8, else to the lowest
 * level k whose span 2^(8 + 6k) exceeds t - cur, at slot
 * (t >> (8 + 6(k-1))) & 63; beyond 2^32 ticks (49 days at 1 ms) it is
 * parked in level 4 at cur + 2^32 - 1 and looked at again then. When the
 * wheel enters a tick that is a multiple of 256 it re-files the level 1
 * slot of that tick (and, at multiples of 2^14, the level 2 slot, and so
 * on): the cascade of the classic Linux timer wheel (Varghese & Lauck
 * scheme 6). Every entry keeps its absolute due time, so re-filing never
 * accumulates rounding: a long delay fires when it is due, not when a
 * chain of rounded slot spans says.
 *
 * Costs: add and delete O(1) (doubly linked, intrusive, preallocated
 * nodes); advancing by T ticks costs O(entries fired + entries re-filed
 * + T / 256) thanks to the level 0 bitmap.
 *
 * Exactness: an entry fires in the first advance whose `now` is >= its
 * due time (the current tick's slot is scanned entry by entry), never
 * before. Entries fired by one advance are sorted by (due, insertion
 * order), so they leave in due-time order.
 *
 * Not thread-safe: the queue calls it with its timer lock held.
 */
#include "queue_internal.h"

#include <stdlib.h>
#include <string.h>

#define L0_BITS 8u
#define LN_BITS 6u
#define NOT_LINKED UINT16_MAX

static uint64_t
tick_of(const struct quayi_wheel *w, int64_t t)
{
	return t <= 0 ? 0 : (uint64_t)(t / w->tick_ns);
}

int
quayi_wheel_init(struct quayi_wheel *w, const struct quay_allocator *a, uint32_t nnodes, int64_t tick_ns,
    int64_t now)
{
	memset(w, 0, sizeof(*w));
	w->alloc = a;
	w->nnodes = nnodes;
	w->nodes = quayi_calloc(a, nnodes, sizeof(*w->nodes));
	w->fired = quayi_calloc(a, nnodes, sizeof(*w->fired));
	if (w->nodes == NULL || w->fired == NULL) {
		quayi_wheel_fini(w);
		return -ENOMEM;
	}
	w->tick_ns = tick_ns;
	w->cur = tick_of(w, now);
	for (uint32_t i = 0; i < nnodes; i++)
		w->nodes[i].where = NOT_LINKED;
	for (size_t i = 0; i < QUAYI_TW_SLOTS; i++)
		w->heads[i] = QUAYI_TW_NIL;
	return 0;
}

void
quayi_wheel_fini(struct quayi_wheel *w)
{
	quayi_free(w->alloc, w->nodes, (size_t)w->nnodes * sizeof(*w->nodes));
	quayi_free(w->alloc, w->fired, (size_t)w->nnodes * sizeof(*w->fired));
	w->nodes = NULL;
	w->fired = NULL;
}

static void
link_at(struct quayi_wheel *w, uint32_t idx, uint32_t slot)
{
	struct quayi_tnode *n = &w->nodes[idx];

	/* Append: a slot's list stays in insertion order. Keep the tail in
	 * the head's prev. */
	uint32_t head = w->heads[slot];

	n->where = (uint16_t)slot;
	n->next = QUAYI_TW_NIL;
	if (head == QUAYI_TW_NIL) {
		n->prev = idx;
		w->heads[slot] = idx;
	} else {
		uint32_t tail = w->nodes[head].prev;
		n->prev = tail;
		w->nodes[tail].next = idx;
		w->nodes[head].prev = idx;
	}
	if (slot < QUAYI_TW_L0) {
		w->l0_bits[slot >> 6] |= (uint64_t)1 << (slot & 63);
		w->count_l0++;
	}
	w->count++;
}

static void
file(struct quayi_wheel *w, uint32_t idx)
{
	uint64_t t = tick_of(w, w->nodes[idx].due);
	uint64_t delta;
	uint32_t slot;

	if (t < w->cur)
		t = w->cur;
	delta = t - w->cur;
	if (delta < ((uint64_t)1 << L0_BITS)) {
		slot = (uint32_t)(t & (QUAYI_TW_L0 - 1));
	} else {
		unsigned k = 1;
		unsigned shift = L0_BITS;

		if (delta >= ((uint64_t)1 << (L0_BITS + 4 * LN_BITS)))
			t = w->cur + ((uint64_t)1 << (L0_BITS + 4 * LN_BITS)) - 1;
		delta = t - w->cur;
		while (k < QUAYI_TW_LEVELS - 1 && delta >= ((uint64_t)1 << (shift + LN_BITS))) {
			k++;
			shift += LN_BITS;
		}
		slot = QUAYI_TW_L0 + (k - 1) * QUAYI_TW_LN + (uint32_t)((t >> shift) & (QUAYI_TW_LN - 1));
	}
	link_at(w, idx, slot);
}

void
quayi_wheel_add(struct quayi_wheel *w, uint32_t idx, int64_t due)
{
	w->nodes[idx].due = due;
	w->nodes[idx].seq = w->seq++;
	file(w, idx);
}

void
quayi_wheel_del(struct quayi_wheel *w, uint32_t idx)
{
	struct quayi_tnode *n = &w->nodes[idx];
	uint32_t slot = n->where;
	uint32_t head;

	if (slot == NOT_LINKED)
		return;
	head = w->heads[slot];
	if (head == idx) {
		w->heads[slot] = n->next;
		if (n->next != QUAYI_TW_NIL)
			w->nodes[n->next].prev = n->prev; /* the tail */
	} else {
		w->nodes[n->prev].next = n->next;
		if (n->next != QUAYI_TW_NIL)
			w->nodes[n->next].prev = n->prev;
		else
			w->nodes[head].prev = n->prev; /* new tail */
	}
	if (slot < QUAYI_TW_L0) {
		if (w->heads[slot] == QUAYI_TW_NIL)
			w->l0_bits[slot >> 6] &= ~((uint64_t)1 << (slot & 63));
		w->count_l0--;
	}
	w->count--;
	n->where = NOT_LINKED;
}

/* Re-file every entry of slot. */
static void
refile(struct quayi_wheel *w, uint32_t slot)
{
	uint32_t i = w->heads[slot];

	while (i != QUAYI_TW_NIL) {
		uint32_t next = w->nodes[i].next;

		quayi_wheel_del(w, i);
		file(w, i);
		i = next;
	}
}

/* Entering tick cur: at multiples of 256, cascade the higher levels. */
static void
cascade(struct quayi_wheel *w)
{
	unsigned shift = L0_BITS;

	if (w->cur & (QUAYI_TW_L0 - 1))
		return;
	for (unsigned k = 1; k < QUAYI_TW_LEVELS; k++, shift += LN_BITS) {
		uint32_t idx = (uint32_t)((w->cur >> shift) & (QUAYI_TW_LN - 1));

		refile(w, QUAYI_TW_L0 + (k - 1) * QUAYI_TW_LN + idx);
		if (idx != 0)
			break;
	}
}

/* The first non-empty level 0 slot for ticks in [from, end) (end at most
 * the next multiple of 256), or end. */
static uint64_t
next_l0(const struct quayi_wheel *w, uint64_t from, uint64_t end)
{
	for (uint64_t t = from; t < end;) {
		uint32_t s = (uint32_t)(t & (QUAYI_TW_L0 - 1));
		uint64_t bits = w->l0_bits[s >> 6] >> (s & 63);

		if (bits != 0) {
			uint64_t hit = t + (uint64_t)__builtin_ctzll(bits);
			return hit < end ? hit : end;
		}
		t += 64 - (s & 63);
	}
	return end;
}

static int
cmp_fired(const void *a, const void *b)
{
	const struct quayi_fired *x = a, *y = b;

	if (x->due != y->due)
		return x->due < y->due ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

size_t
quayi_wheel_advance(struct quayi_wheel *w, int64_t now)
{
	uint64_t target = tick_of(w, now);
	size_t n = 0;

	for (;;) {
		uint32_t slot = (uint32_t)(w->cur & (QUAYI_TW_L0 - 1));
		uint32_t i = w->heads[slot];

		while (i != QUAYI_TW_NIL) {
			uint32_t next = w->nodes[i].next;

			if (w->nodes[i].due <= now) {
				quayi_wheel_del(w, i);
				w->fired[n].due = w->nodes[i].due;
				w->fired[n].seq = w->nodes[i].seq;
				w->fired[n].idx = i;
				n++;
			}
			i = next;
		}
		if (w->cur >= target)
			break;
		if (w->count == 0) {
			w->cur = target;
			break;
		}
		{
			uint64_t boundary = (w->cur | (QUAYI_TW_L0 - 1)) + 1;
			uint64_t end = boundary < target + 1 ? boundary : target + 1;
			uint64_t nxt = next_l0(w, w->cur + 1, end);

			if (nxt > target)
				nxt = target;
			w->cur = nxt;
			cascade(w);
		}
	}
	if (n > 1)
		qsort(w->fired, n, sizeof(w->fired[0]), cmp_fired);
	return n;
}

int64_t
quayi_wheel_next_due(const struct quayi_wheel *w)
{
	int64_t best = INT64_MAX;

	if (w->count == 0)
		return INT64_MAX;
	if (w->count_l0 != 0) {
		uint64_t t = next_l0(w, w->cur, w->cur + QUAYI_TW_L0);

		if (t < w->cur + QUAYI_TW_L0) {
			for (uint32_t i = w->heads[t & (QUAYI_TW_L0 - 1)]; i != QUAYI_TW_NIL;
			     i = w->nodes[i].next)
				if (w->nodes[i].due < best)
					best = w->nodes[i].due;
		}
	}
	if (w->count != w->count_l0) {
		/* Something waits in a higher level: look again at the next
		 * cascade (a lower bound of its due time). */
		uint64_t b = (w->cur | (QUAYI_TW_L0 - 1)) + 1;
		int64_t bt = (int64_t)b * w->tick_ns;

		if (bt < best)
			best = bt;
	}
	return best;
}
