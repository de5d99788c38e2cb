// SPDX-License-Identifier: MIT
//
// The queues bench_ring.cc compares, each behind the same small adaptor so
// that one harness drives them all:
//
//   int    push(int producer, uint64_t v)   1 pushed, 0 full (retry), -1 broken
//   int    pop(uint64_t *v)                 1 popped, 0 empty (retry), -1 broken
//   size_t push_burst(const uint64_t *, n)  (quay only) how many were pushed
//   size_t pop_burst(uint64_t *, n)         (quay only) how many were popped
//   void   reset(nstops)                    between iterations, single-threaded
//   int    drain(uint64_t *v)               pop that never sleeps (MutexCv;
//                                           the others use pop), run alone
//
// Two more peers, written here (Vyukov MPMC, cached-index Lamport SPSC),
// are in peer_queues.h behind the same adaptor.
//
// Every bounded peer gets the same capacity (kCapacity) and 8-byte values.
// None of them retries internally on full/empty: the harness does, with one
// retry policy for all (Backoff in bench_ring.cc).
#ifndef QUAY_BENCH_PEERS_H
#define QUAY_BENCH_PEERS_H

#include <pthread.h>
#include <time.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include <quay/quay.h>

// ck_ring.h 0.7.1 does not compile as C++: _ck_ring_enqueue_reserve_mp, a
// function returning void *, says `return false;`. Rather than call ck
// through an out-of-line C wrapper (which would cost it the inlining that
// quay gets), its dependencies are included first and ck_ring.h alone is
// read with `false` spelled 0 (a valid null pointer and bool in C++).
#include <ck_cc.h>
#include <ck_md.h>
#include <ck_pr.h>
#include <ck_stdbool.h>
#include <ck_string.h>
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wkeyword-macro"
#endif
#pragma push_macro("false")
#undef false
#define false 0
#include <ck_ring.h>
#pragma pop_macro("false")
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

#include <urcu/wfcqueue.h>

namespace qb {

constexpr size_t kCapacity = 1024; // every bounded peer: 1024 slots of 8 bytes
constexpr int kMaxSide = 8;        // most producers (or consumers) in a run

// ---------------------------------------------------------------------------
// quay ring (SPSC mode: QUAY_RING_SP | QUAY_RING_SC; MPMC mode: 0)

class QuayQueue {
public:
	QuayQueue(unsigned flags)
	{
		if (quay_ring_create(kCapacity, sizeof(uint64_t), flags, &r_) != 0)
			throw std::bad_alloc();
	}
	~QuayQueue() { quay_ring_destroy(r_); }
	QuayQueue(const QuayQueue &) = delete;
	QuayQueue &operator=(const QuayQueue &) = delete;

	void reset(int /*nstops*/) {}

	int push(int /*producer*/, uint64_t v)
	{
		int rc = quay_ring_push(r_, &v);
		return rc == 0 ? 1 : rc == -EAGAIN ? 0 : -1;
	}
	int pop(uint64_t *v)
	{
		int rc = quay_ring_pop(r_, v);
		return rc == 0 ? 1 : rc == -EAGAIN ? 0 : -1;
	}
	size_t push_burst(const uint64_t *v, size_t n) { return quay_ring_push_burst(r_, v, n); }
	size_t pop_burst(uint64_t *v, size_t n) { return quay_ring_pop_burst(r_, v, n); }

private:
	quay_ring *r_ = nullptr;
};

struct QuaySpsc : QuayQueue {
	QuaySpsc(int, int, size_t) : QuayQueue(QUAY_RING_SP | QUAY_RING_SC) {}
};
struct QuayMpmc : QuayQueue {
	QuayMpmc(int, int, size_t) : QuayQueue(0) {}
};

// ---------------------------------------------------------------------------
// concurrencykit ck_ring: a ring of pointer-sized values. ck keeps one slot
// empty, so a 1024-slot ck_ring holds 1023 values.

class CkRingBase {
public:
	CkRingBase()
	{
		void *mem = nullptr;
		if (posix_memalign(&mem, 64, kCapacity * sizeof(ck_ring_buffer_t)) != 0)
			throw std::bad_alloc();
		buf_ = static_cast<ck_ring_buffer_t *>(mem);
		ck_ring_init(&ring_, static_cast<unsigned>(kCapacity));
	}
	~CkRingBase() { free(buf_); }
	CkRingBase(const CkRingBase &) = delete;
	CkRingBase &operator=(const CkRingBase &) = delete;

	void reset(int /*nstops*/) {}

protected:
	static const void *to_ptr(uint64_t v) { return reinterpret_cast<const void *>(static_cast<uintptr_t>(v)); }
	static uint64_t from_ptr(void *p) { return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)); }

	alignas(64) ck_ring_t ring_;
	ck_ring_buffer_t *buf_ = nullptr;
};

struct CkSpsc : CkRingBase {
	CkSpsc(int, int, size_t) {}
	int push(int, uint64_t v) { return ck_ring_enqueue_spsc(&ring_, buf_, to_ptr(v)) ? 1 : 0; }
	int pop(uint64_t *v)
	{
		void *p = nullptr;
		if (!ck_ring_dequeue_spsc(&ring_, buf_, &p))
			return 0;
		*v = from_ptr(p);
		return 1;
	}
};

struct CkMpmc : CkRingBase {
	CkMpmc(int, int, size_t) {}
	int push(int, uint64_t v) { return ck_ring_enqueue_mpmc(&ring_, buf_, to_ptr(v)) ? 1 : 0; }
	int pop(uint64_t *v)
	{
		void *p = nullptr;
		if (!ck_ring_dequeue_mpmc(&ring_, buf_, &p))
			return 0;
		*v = from_ptr(p);
		return 1;
	}
};

// ---------------------------------------------------------------------------
// liburcu cds_wfcq: an UNBOUNDED wait-free linked queue (never "full").
// Each producer enqueues the next node of its own preallocated array, so no
// allocator runs inside the timed region.
// Many consumers serialise on the queue's dequeue mutex
// (cds_wfcq_dequeue_blocking); a single consumer uses the lock-free
// __cds_wfcq_dequeue_blocking, which urcu allows when dequeues are
// serialised by the caller. Called through liburcu's library functions
// (no _LGPL_SOURCE), as an ordinary user of the shared library would.

class Wfcq {
public:
	Wfcq(int producers, int consumers, size_t per_producer)
	    : nodes_(static_cast<size_t>(producers)), multi_consumer_(consumers > 1)
	{
		for (auto &v : nodes_)
			v.resize(per_producer + 1);
		stops_.resize(kMaxSide);
		cds_wfcq_init(&head_, &tail_);
	}
	~Wfcq() { cds_wfcq_destroy(&head_, &tail_); }
	Wfcq(const Wfcq &) = delete;
	Wfcq &operator=(const Wfcq &) = delete;

	void reset(int /*nstops*/)
	{
		next_stop_ = 0;
		for (auto &c : cursor_)
			c.next = 0;
	}

	int push(int producer, uint64_t v)
	{
		Node *n;
		if (v == ~uint64_t{0}) { // a stop marker: only one thread pushes these
			n = &stops_[next_stop_++];
		} else {
			n = &nodes_[static_cast<size_t>(producer)][cursor_[producer].next++];
		}
		cds_wfcq_node_init(&n->node);
		n->value = v;
		cds_wfcq_enqueue(cds_wfcq_head_cast(&head_), &tail_, &n->node);
		return 1;
	}
	int pop(uint64_t *v)
	{
		cds_wfcq_node *n = multi_consumer_ ? cds_wfcq_dequeue_blocking(&head_, &tail_) :
		                                     __cds_wfcq_dequeue_blocking(cds_wfcq_head_cast(&head_), &tail_);
		if (n == nullptr)
			return 0;
		*v = reinterpret_cast<Node *>(n)->value; // node is the first member
		return 1;
	}

private:
	struct Node {
		cds_wfcq_node node;
		uint64_t value;
	};
	alignas(64) cds_wfcq_head head_;
	alignas(64) cds_wfcq_tail tail_;
	struct alignas(64) Cursor {
		size_t next = 0; // written by its producer only
	};
	std::vector<std::vector<Node>> nodes_;
	Cursor cursor_[kMaxSide];
	std::vector<Node> stops_;
	size_t next_stop_ = 0;
	bool multi_consumer_; // many consumers take the dequeue lock
};

// ---------------------------------------------------------------------------
// A bounded queue as a user would write it: one pthread mutex, two
// condition variables, a circular array. try_* never sleep (the harness
// retries with the common policy); *_wait sleep on the condvars.

class MutexQueue {
public:
	// cap: a power of two.
	explicit MutexQueue(size_t cap) : buf_(cap), cap_(cap), mask_(cap - 1)
	{
		pthread_mutex_init(&mu_, nullptr);
		pthread_cond_init(&not_empty_, nullptr);
		pthread_cond_init(&not_full_, nullptr);
	}
	~MutexQueue()
	{
		pthread_cond_destroy(&not_full_);
		pthread_cond_destroy(&not_empty_);
		pthread_mutex_destroy(&mu_);
	}
	MutexQueue(const MutexQueue &) = delete;
	MutexQueue &operator=(const MutexQueue &) = delete;

	bool try_push(uint64_t v)
	{
		pthread_mutex_lock(&mu_);
		if (count_ == cap_) {
			pthread_mutex_unlock(&mu_);
			return false;
		}
		put(v);
		pthread_mutex_unlock(&mu_);
		return true;
	}
	bool try_pop(uint64_t *v)
	{
		pthread_mutex_lock(&mu_);
		if (count_ == 0) {
			pthread_mutex_unlock(&mu_);
			return false;
		}
		*v = take();
		pthread_mutex_unlock(&mu_);
		return true;
	}
	// Sleep while full, at most timeout_ms (so a run can be cut short).
	bool push_wait(uint64_t v, long timeout_ms)
	{
		timespec dl = deadline(timeout_ms);
		pthread_mutex_lock(&mu_);
		while (count_ == cap_) {
			if (pthread_cond_timedwait(&not_full_, &mu_, &dl) == ETIMEDOUT) {
				pthread_mutex_unlock(&mu_);
				return false;
			}
		}
		put(v);
		pthread_mutex_unlock(&mu_);
		return true;
	}
	bool pop_wait(uint64_t *v, long timeout_ms)
	{
		timespec dl = deadline(timeout_ms);
		pthread_mutex_lock(&mu_);
		while (count_ == 0) {
			if (pthread_cond_timedwait(&not_empty_, &mu_, &dl) == ETIMEDOUT) {
				pthread_mutex_unlock(&mu_);
				return false;
			}
		}
		*v = take();
		pthread_mutex_unlock(&mu_);
		return true;
	}

private:
	// Both called with mu_ held; each wakes one waiter of the other side.
	void put(uint64_t v)
	{
		buf_[(head_ + count_) & mask_] = v;
		count_++;
		pthread_cond_signal(&not_empty_);
	}
	uint64_t take()
	{
		uint64_t v = buf_[head_];
		head_ = (head_ + 1) & mask_;
		count_--;
		pthread_cond_signal(&not_full_);
		return v;
	}
	static timespec deadline(long ms)
	{
		timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (ms % 1000) * 1000000L;
		ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		return ts;
	}

	pthread_mutex_t mu_;
	pthread_cond_t not_empty_;
	pthread_cond_t not_full_;
	std::vector<uint64_t> buf_;
	size_t cap_;
	size_t mask_;
	size_t head_ = 0;
	size_t count_ = 0;
};

// The mutex queue with the common retry policy (the reference peer).
struct MutexSpin {
	MutexSpin(int, int, size_t) : q(kCapacity) {}
	void reset(int) {}
	int push(int, uint64_t v) { return q.try_push(v) ? 1 : 0; }
	int pop(uint64_t *v) { return q.try_pop(v) ? 1 : 0; }
	MutexQueue q;
};

// The same queue used the way its API invites: sleep on the condvars when
// full/empty (10 ms slices, so that a capped run can still stop it).
struct MutexCv {
	MutexCv(int, int, size_t) : q(kCapacity) {}
	void reset(int) {}
	int push(int, uint64_t v) { return q.push_wait(v, 10) ? 1 : 0; }
	int pop(uint64_t *v) { return q.pop_wait(v, 10) ? 1 : 0; }
	int drain(uint64_t *v) { return q.try_pop(v) ? 1 : 0; }
	MutexQueue q;
};

} // namespace qb

#endif // QUAY_BENCH_PEERS_H
