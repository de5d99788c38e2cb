// SPDX-License-Identifier: MIT
//
// bench_ring_shm: a quay ring in shared memory between two processes,
// against a pipe, a Unix socket pair, and a ring inside one process, in
// one binary and one run.
//
// Throughput ("tput/<peer>"): one producer, one consumer, 64-byte
// messages; an iteration moves QUAY_BENCH_SHM_MSGS messages (default
// 2^17). The producer sends one message per call (push_wait, write); the
// consumer takes one per call on the rings (pop_wait) and reads whatever
// is there (up to 64 KiB) on the pipe and the socket, as a stream reader
// would. Every message carries its sequence number and a pattern; the
// consumer checks each arrives once, in order, intact, and counts them in
// shared memory; the producer's iteration ends when the consumer has
// counted the whole batch (manual time). A bad message fails the
// benchmark (SkipWithError, exit status 1).
//
// Round trip ("rtt/<peer>"): the first side sends a message and waits for
// the other to send it back, QUAY_BENCH_SHM_ROUNDS (default 2^13) times
// per iteration; rtt_ns is the mean round trip. Both sides block (the
// rings' waiting calls spin briefly, then sleep on a futex; the pipe and
// the socket sleep in read).
//
// Peers:
//   ring_shm_proc  quay_ring_create_shm (memfd), consumer in a fork()ed
//                  process that attaches by fd: the subject
//   pipe_proc      pipe(2) between the two processes
//   socket_proc    socketpair(AF_UNIX, SOCK_STREAM) between them
//   ring_thread    quay_ring_create, consumer thread in the same process
//                  (membarrier wake-ups): what crossing processes costs
//   ring_shm_thread the shared ring used by two threads of one process
//                  (full-fence wake-ups and CAS publish, no process
//                  boundary): what the shared-memory mode itself costs
//
// SPSC rings (QUAY_RING_SP|QUAY_RING_SC), capacity 1024. The machine's
// other load shows in every peer alike; compare within one run.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <quay/quay.h>

namespace {

constexpr size_t kElem = 64;
constexpr size_t kCap = 1024;
size_t g_msgs = size_t{1} << 17;
size_t g_rounds = size_t{1} << 13;
int g_failed = 0;

struct Msg {
	uint64_t w[kElem / 8];
};

Msg
make(uint64_t seq)
{
	Msg m;
	m.w[0] = seq;
	for (size_t i = 1; i < kElem / 8; i++)
		m.w[i] = seq * 0x9e3779b97f4a7c15u + i;
	return m;
}

bool
good(const Msg &m, uint64_t seq)
{
	if (m.w[0] != seq)
		return false;
	for (size_t i = 1; i < kElem / 8; i++)
		if (m.w[i] != seq * 0x9e3779b97f4a7c15u + i)
			return false;
	return true;
}

// Counters the consumer shares with the producer (a MAP_SHARED page).
struct Board {
	uint64_t done;  // messages checked (throughput) / rounds echoed
	uint64_t error; // nonzero: a bad message or a failed call
};

Board *
new_board()
{
	void *p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		abort();
	return static_cast<Board *>(p);
}

enum class Kind { ring_shm_proc, pipe_proc, socket_proc, ring_thread, ring_shm_thread };

// One direction of a channel: a ring, or a pair of fds (read end, write end).
struct Chan {
	quay_ring *ring = nullptr;
	int rfd = -1, wfd = -1;
	// Stream reader state (pipe/socket).
	unsigned char buf[65536];
	size_t have = 0, off = 0;
};

bool
send(Chan &c, const Msg &m)
{
	if (c.ring != nullptr)
		return quay_ring_push_wait(c.ring, &m, -1) == 0;
	const unsigned char *p = reinterpret_cast<const unsigned char *>(&m);
	size_t left = sizeof(m);
	while (left > 0) {
		ssize_t n = write(c.wfd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		left -= (size_t)n;
	}
	return true;
}

// false at the end of the stream (ring closed, EOF) or on an error.
bool
recv(Chan &c, Msg &m)
{
	if (c.ring != nullptr)
		return quay_ring_pop_wait(c.ring, &m, -1) == 0;
	while (c.have - c.off < sizeof(m)) {
		if (c.off > 0) {
			memmove(c.buf, c.buf + c.off, c.have - c.off);
			c.have -= c.off;
			c.off = 0;
		}
		ssize_t n = read(c.rfd, c.buf + c.have, sizeof(c.buf) - c.have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		c.have += (size_t)n;
	}
	memcpy(&m, c.buf + c.off, sizeof(m));
	c.off += sizeof(m);
	return true;
}

// The far side: throughput consumer or echo server, until end of stream.
void
far_side(Chan *in, Chan *out, Board *b)
{
	Msg m;
	uint64_t seq = 0;

	while (recv(*in, m)) {
		if (out == nullptr) {
			if (!good(m, seq)) {
				__atomic_store_n(&b->error, 1, __ATOMIC_RELEASE);
				return;
			}
			seq++;
		} else if (!send(*out, m)) {
			__atomic_store_n(&b->error, 2, __ATOMIC_RELEASE);
			return;
		}
		// Release: the producer reads done with acquire.
		__atomic_store_n(&b->done, seq, __ATOMIC_RELEASE);
	}
}

// The two directions of a setup, and how its far side runs.
struct Setup {
	Kind kind;
	Chan *fwd = new Chan(), *back = new Chan(); // fwd: near -> far
	quay_ring *rings[4] = {};                   // near and far handles to destroy
	int fds[4] = {-1, -1, -1, -1};
	pid_t pid = -1;
	std::thread th;
	Board *board = new_board();

	~Setup()
	{
		delete fwd;
		delete back;
		munmap(board, 4096);
	}
};

void
make_fds(Kind k, int fd[2])
{
	if (k == Kind::pipe_proc) {
		if (pipe(fd) != 0)
			abort();
	} else if (socketpair(AF_UNIX, SOCK_STREAM, 0, fd) != 0) {
		abort();
	}
}

// Build a channel pair, start the far side (process or thread).
bool
start(Setup &s, bool echo, std::string &err)
{
	const unsigned flags = QUAY_RING_SP | QUAY_RING_SC;
	int rc = 0;

	if (s.kind == Kind::ring_thread) {
		if ((rc = quay_ring_create(kCap, kElem, flags, &s.fwd->ring)) != 0 ||
		    (rc = quay_ring_create(kCap, kElem, flags, &s.back->ring)) != 0) {
			err = std::string("quay_ring_create: ") + quay_strerror(rc);
			return false;
		}
		s.rings[0] = s.fwd->ring;
		s.rings[1] = s.back->ring;
	} else if (s.kind == Kind::ring_shm_proc || s.kind == Kind::ring_shm_thread) {
		struct quay_ring_shm_opts o = QUAY_RING_SHM_OPTS_INIT;
		o.flags = flags;
		if ((rc = quay_ring_create_shm(nullptr, kCap, kElem, &o, &s.fwd->ring, &s.fds[0])) != 0 ||
		    (rc = quay_ring_create_shm(nullptr, kCap, kElem, &o, &s.back->ring, &s.fds[1])) != 0) {
			err = std::string("quay_ring_create_shm: ") + quay_strerror(rc);
			return false;
		}
		s.rings[0] = s.fwd->ring;
		s.rings[1] = s.back->ring;
	} else {
		int a[2], b[2];
		make_fds(s.kind, a);
		make_fds(s.kind, b);
		// fwd: near writes a[1], far reads a[0]; back: far writes b[1], near reads b[0].
		s.fwd->wfd = a[1];
		s.fwd->rfd = a[0];
		s.back->wfd = b[1];
		s.back->rfd = b[0];
	}

	if (s.kind == Kind::ring_thread || s.kind == Kind::ring_shm_thread) {
		s.th = std::thread(far_side, s.fwd, echo ? s.back : nullptr, s.board);
		return true;
	}
	s.pid = fork();
	if (s.pid < 0) {
		err = "fork failed";
		return false;
	}
	if (s.pid == 0) {
		Chan in, out;
		alarm(600);
		if (s.kind == Kind::ring_shm_proc) {
			// Attach by fd: this process's own mapping.
			if (quay_ring_attach_shm(nullptr, s.fds[0], kElem, &in.ring) != 0 ||
			    quay_ring_attach_shm(nullptr, s.fds[1], kElem, &out.ring) != 0)
				_exit(3);
		} else {
			close(s.fwd->wfd);
			close(s.back->rfd);
			in.rfd = s.fwd->rfd;
			out.wfd = s.back->wfd;
		}
		far_side(&in, echo ? &out : nullptr, s.board);
		_exit(0);
	}
	if (s.kind != Kind::ring_shm_proc) {
		close(s.fwd->rfd);
		close(s.back->wfd);
		s.fwd->rfd = s.back->wfd = -1;
	}
	return true;
}

// End the stream (close the ring, or the write end) and reap the far side.
void
stop(Setup &s)
{
	if (s.fwd->ring != nullptr)
		quay_ring_close(s.fwd->ring);
	else
		close(s.fwd->wfd);
	if (s.th.joinable())
		s.th.join();
	if (s.pid > 0) {
		int st = 0;
		waitpid(s.pid, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			__atomic_store_n(&s.board->error, 3, __ATOMIC_RELEASE);
	}
	for (quay_ring *r : s.rings)
		quay_ring_destroy(r);
	for (int fd : s.fds)
		if (fd >= 0)
			close(fd);
	if (s.back->rfd >= 0)
		close(s.back->rfd);
}

void
fail(benchmark::State &st, const std::string &why)
{
	g_failed++;
	st.SkipWithError(why.c_str());
}

void
bm_tput(benchmark::State &st, Kind kind)
{
	Setup s;
	std::string err;
	uint64_t seq = 0;

	s.kind = kind;
	if (!start(s, false, err)) {
		fail(st, err);
		return;
	}
	for (auto _ : st) {
		auto t0 = std::chrono::steady_clock::now();
		for (size_t i = 0; i < g_msgs; i++, seq++)
			if (!send(*s.fwd, make(seq))) {
				__atomic_store_n(&s.board->error, 4, __ATOMIC_RELEASE);
				break;
			}
		// Acquire: pairs with the consumer's release of done.
		while (__atomic_load_n(&s.board->done, __ATOMIC_ACQUIRE) < seq &&
		    __atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) == 0)
			sched_yield();
		auto t1 = std::chrono::steady_clock::now();
		st.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
		if (__atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) != 0)
			break;
	}
	stop(s);
	if (__atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) != 0 || s.board->done != seq) {
		fail(st, "a message was lost, duplicated, reordered or corrupt, or a call failed");
		return;
	}
	st.SetItemsProcessed((int64_t)seq);
	st.SetBytesProcessed((int64_t)(seq * kElem));
}

void
bm_rtt(benchmark::State &st, Kind kind)
{
	Setup s;
	std::string err;
	uint64_t seq = 0;
	double total = 0;

	s.kind = kind;
	if (!start(s, true, err)) {
		fail(st, err);
		return;
	}
	for (auto _ : st) {
		auto t0 = std::chrono::steady_clock::now();
		bool ok = true;
		for (size_t i = 0; i < g_rounds && ok; i++, seq++) {
			Msg m;
			ok = send(*s.fwd, make(seq)) && recv(*s.back, m) && good(m, seq);
		}
		auto t1 = std::chrono::steady_clock::now();
		double d = std::chrono::duration<double>(t1 - t0).count();
		total += d;
		st.SetIterationTime(d);
		if (!ok) {
			__atomic_store_n(&s.board->error, 5, __ATOMIC_RELEASE);
			break;
		}
	}
	stop(s);
	if (__atomic_load_n(&s.board->error, __ATOMIC_ACQUIRE) != 0) {
		fail(st, "a reply was lost, wrong or a call failed");
		return;
	}
	st.SetItemsProcessed((int64_t)seq);
	st.counters["rtt_ns"] = seq ? total * 1e9 / (double)seq : 0;
}

void
register_all()
{
	const std::pair<const char *, Kind> peers[] = {
	    {"ring_shm_proc", Kind::ring_shm_proc},
	    {"pipe_proc", Kind::pipe_proc},
	    {"socket_proc", Kind::socket_proc},
	    {"ring_thread", Kind::ring_thread},
	    {"ring_shm_thread", Kind::ring_shm_thread},
	};
	for (const auto &p : peers)
		benchmark::RegisterBenchmark((std::string("tput/") + p.first).c_str(), bm_tput, p.second)
		    ->UseManualTime()
		    ->Unit(benchmark::kMillisecond);
	for (const auto &p : peers)
		benchmark::RegisterBenchmark((std::string("rtt/") + p.first).c_str(), bm_rtt, p.second)
		    ->UseManualTime()
		    ->Unit(benchmark::kMillisecond);
}

} // namespace

int
main(int argc, char **argv)
{
	if (const char *e = getenv("QUAY_BENCH_SHM_MSGS"))
		g_msgs = strtoull(e, nullptr, 0);
	if (const char *e = getenv("QUAY_BENCH_SHM_ROUNDS"))
		g_rounds = strtoull(e, nullptr, 0);
	signal(SIGPIPE, SIG_IGN);
	register_all();
	benchmark::AddCustomContext("quay_version", QUAY_VERSION_STRING);
	benchmark::AddCustomContext("msgs_per_iteration", std::to_string(g_msgs));
	benchmark::AddCustomContext("rounds_per_iteration", std::to_string(g_rounds));
	benchmark::AddCustomContext("elem_size", std::to_string(kElem));
	benchmark::AddCustomContext("ring_capacity", std::to_string(kCap));
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 2;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return g_failed != 0 ? 1 : 0;
}
