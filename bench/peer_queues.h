// SPDX-License-Identifier: MIT
//
// Two lock-free peers for bench_ring.cc, written here from their published
// descriptions (not from anyone's code), behind the adaptor of peers.h:
//
//   VyukovMpmc  Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue",
//               1024cores.net): an array of cells, each a sequence number
//               next to its value; producers and consumers claim positions
//               with a CAS on an enqueue / dequeue position and hand each
//               cell over through its sequence number.
//   LamportSpsc Lamport's single-producer single-consumer ring with cached
//               indices (as in FastForward / MCRingBuffer / folly's
//               ProducerConsumerQueue): each side keeps a private copy of
//               the other side's index and re-reads the shared index only
//               when its copy says full (producer) or empty (consumer).
//
// Both hold kCapacity (1024) 8-byte values, like the quay rings they are
// compared with; both use every slot (free-running positions), so a full
// queue holds 1024 values. Neither retries on full/empty: the harness does.
// std::atomic is used with explicit orderings; each names what it pairs
// with (VY-* and LS-* labels below).
#ifndef QUAY_BENCH_PEER_QUEUES_H
#define QUAY_BENCH_PEER_QUEUES_H

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace qb {

// ---------------------------------------------------------------------------
// Vyukov's bounded MPMC queue.
//
// Cell i starts with seq = i. For position p (cell p & mask):
//   seq == p        the cell is free for the producer of p
//   seq == p + 1    the cell holds the value of p, ready for its consumer
//   seq == p + cap  freed by the consumer of p, free for the producer of
//                   p + cap (next lap)
// A producer reads enqueue_pos, looks at the cell: seq - pos == 0 means
// free (try to claim with the CAS), < 0 means full (the previous lap's
// value is still there), > 0 means another producer already took pos
// (reload). Consumers mirror this with pos + 1.
//
// Orderings:
//   VY-R1 enqueue: store-release seq = pos + 1 after writing the value
//         -> VY-A1 dequeue: load-acquire of seq, reads the value after.
//   VY-R2 dequeue: store-release seq = pos + cap after reading the value
//         -> VY-A2 enqueue: load-acquire of seq, overwrites the value after.
//   The position CASes are relaxed: they only elect the owner of a
//   position; the value moves only through seq (VY-R1/A1, VY-R2/A2).
//   Position loads are relaxed: a stale one is caught by the seq check or
//   by the CAS.
//
// Layout as published: the two positions on their own cache lines, cells
// of {seq, value} packed (16 bytes, four per line), like quay's slots.

class VyukovMpmc {
public:
	VyukovMpmc(int, int, size_t)
	{
		void *mem = nullptr;
		if (posix_memalign(&mem, 64, kCap * sizeof(Cell)) != 0)
			throw std::bad_alloc();
		cells_ = static_cast<Cell *>(mem);
		for (size_t i = 0; i < kCap; i++) {
			new (&cells_[i]) Cell;
			// Relaxed: no thread runs yet (thread creation orders it).
			cells_[i].seq.store(i, std::memory_order_relaxed);
		}
	}
	~VyukovMpmc()
	{
		for (size_t i = 0; i < kCap; i++)
			cells_[i].~Cell();
		free(cells_);
	}
	VyukovMpmc(const VyukovMpmc &) = delete;
	VyukovMpmc &operator=(const VyukovMpmc &) = delete;

	void reset(int) {}

	int push(int, uint64_t v)
	{
		// Relaxed: validated by the seq check and the CAS below.
		size_t pos = enq_.pos.load(std::memory_order_relaxed);
		Cell *c;
		for (;;) {
			c = &cells_[pos & kMask];
			// VY-A2: acquire, pairs with VY-R2 in pop: the consumer of
			// the previous lap has read its value from this cell.
			const size_t seq = c->seq.load(std::memory_order_acquire);
			const intptr_t dif = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos);
			if (dif == 0) {
				// Relaxed CAS: elects the owner of pos only.
				if (enq_.pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
				        std::memory_order_relaxed))
					break;
				// pos now holds the current value: retry.
			} else if (dif < 0) {
				return 0; // full
			} else {
				pos = enq_.pos.load(std::memory_order_relaxed); // taken: reload
			}
		}
		c->value = v;
		// VY-R1: release, pairs with VY-A1 in pop: publishes the value.
		c->seq.store(pos + 1, std::memory_order_release);
		return 1;
	}

	int pop(uint64_t *v)
	{
		// Relaxed: validated by the seq check and the CAS below.
		size_t pos = deq_.pos.load(std::memory_order_relaxed);
		Cell *c;
		for (;;) {
			c = &cells_[pos & kMask];
			// VY-A1: acquire, pairs with VY-R1 in push: the value is written.
			const size_t seq = c->seq.load(std::memory_order_acquire);
			const intptr_t dif = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos + 1);
			if (dif == 0) {
				// Relaxed CAS: elects the owner of pos only.
				if (deq_.pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed,
				        std::memory_order_relaxed))
					break;
			} else if (dif < 0) {
				return 0; // empty (or the producer of pos has not published yet)
			} else {
				pos = deq_.pos.load(std::memory_order_relaxed);
			}
		}
		*v = c->value;
		// VY-R2: release, pairs with VY-A2 in push: frees the cell for
		// the producer of pos + cap.
		c->seq.store(pos + kCap, std::memory_order_release);
		return 1;
	}

private:
	static constexpr size_t kCap = kCapacity;
	static constexpr size_t kMask = kCap - 1;
	static_assert((kCap & kMask) == 0, "capacity must be a power of two");

	struct Cell {
		std::atomic<size_t> seq{0};
		uint64_t value = 0; // plain: ownership passes through seq
	};
	struct alignas(64) Pos {
		std::atomic<size_t> pos{0};
	};
	Pos enq_;
	Pos deq_;
	Cell *cells_ = nullptr;
};

// ---------------------------------------------------------------------------
// Lamport SPSC ring with cached indices.
//
// tail: next position the producer writes (written by the producer only);
// head: next position the consumer reads (written by the consumer only).
// Both free-running; full when tail - head == cap, empty when head == tail.
// The producer keeps head_cache (a head it has seen) and re-reads head
// only when tail - head_cache == cap; the consumer keeps tail_cache and
// re-reads tail only when head == tail_cache. A stale cache only ever
// says "fuller" (producer) or "emptier" (consumer) than the truth, so it
// is safe, and the shared index lines move only when a cache runs out.
//
// Orderings:
//   LS-R1 push: store-release tail = t + 1 after writing buf[t]
//         -> LS-A1 pop: load-acquire of tail (refreshing tail_cache),
//         reads buf[h] for h < tail_cache after.
//   LS-R2 pop: store-release head = h + 1 after reading buf[h]
//         -> LS-A2 push: load-acquire of head (refreshing head_cache),
//         overwrites buf[t] for t < head_cache + cap after.
//   Each side's own index is loaded relaxed (it is the only writer).
//
// Layout: the shared tail and head each on their own line; each side's
// private state (own position and cache) on a line of its own, so the
// fast path touches only private lines and the buffer.

class LamportSpsc {
public:
	LamportSpsc(int, int, size_t)
	{
		void *mem = nullptr;
		if (posix_memalign(&mem, 64, kCap * sizeof(uint64_t)) != 0)
			throw std::bad_alloc();
		buf_ = static_cast<uint64_t *>(mem);
	}
	~LamportSpsc() { free(buf_); }
	LamportSpsc(const LamportSpsc &) = delete;
	LamportSpsc &operator=(const LamportSpsc &) = delete;

	void reset(int) {}

	int push(int, uint64_t v)
	{
		const size_t t = prod_.pos;
		if (t - prod_.cache == kCap) {
			// LS-A2: acquire, pairs with LS-R2 in pop: the consumer has
			// read every slot below head.
			prod_.cache = head_.v.load(std::memory_order_acquire);
			if (t - prod_.cache == kCap)
				return 0; // full
		}
		buf_[t & kMask] = v;
		prod_.pos = t + 1;
		// LS-R1: release, pairs with LS-A1 in pop: publishes buf[t].
		tail_.v.store(t + 1, std::memory_order_release);
		return 1;
	}

	int pop(uint64_t *v)
	{
		const size_t h = cons_.pos;
		if (h == cons_.cache) {
			// LS-A1: acquire, pairs with LS-R1 in push: every slot
			// below tail is written.
			cons_.cache = tail_.v.load(std::memory_order_acquire);
			if (h == cons_.cache)
				return 0; // empty
		}
		*v = buf_[h & kMask];
		cons_.pos = h + 1;
		// LS-R2: release, pairs with LS-A2 in push: frees buf[h].
		head_.v.store(h + 1, std::memory_order_release);
		return 1;
	}

private:
	static constexpr size_t kCap = kCapacity;
	static constexpr size_t kMask = kCap - 1;
	static_assert((kCap & kMask) == 0, "capacity must be a power of two");

	struct alignas(64) Shared {
		std::atomic<size_t> v{0};
	};
	struct alignas(64) Side {
		size_t pos = 0;   // own index (private copy of what we published)
		size_t cache = 0; // last value seen of the other side's index
	};
	Shared tail_; // written by the producer
	Shared head_; // written by the consumer
	Side prod_;   // producer's private line
	Side cons_;   // consumer's private line
	uint64_t *buf_ = nullptr;
};

} // namespace qb

#endif // QUAY_BENCH_PEER_QUEUES_H
