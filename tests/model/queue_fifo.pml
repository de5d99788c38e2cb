/* SPDX-License-Identifier: MIT */
/*
 * Spin (Promela) model of a FIFO queue's message groups (issue 13;
 * src/queue_fifo.c, docs/QUEUE.md "FIFO queues"): one group of M
 * messages sent in order, C consumers that ack, nack, release or walk
 * away from their lease, a timer that expires leases and ends backoffs at
 * any moment, and the group machinery: a message is admitted as the
 * group's head (ready) if the group has nothing out, else parked; when
 * the head leaves for good (ack, dead letter) the next parked one (in
 * send order) becomes the head. A lease is (message, generation): ack,
 * nack and release compare it (the fence).
 *
 * Invariants, checked by a monitor in every reachable state:
 *   G1 at most one message of the group is out (ready, delayed or in
 *      flight);
 *   G2 the head is never skipped: a message is out or gone (acked,
 *      dead-lettered) only once every earlier one is gone;
 * and at the end (all processes done) every message is gone.
 * -DBROKEN admits without parking; -DEARLY hands the group on at a nack
 * (the failed head skipped through its backoff): spin must catch both
 * (run_spin_fifo.sh checks it).
 */
#define M 3
#define C 2
#define MAX 2

#define UNSENT 0
#define PARKED 1
#define READY 2
#define INFLIGHT 3
#define DELAYED 4
#define ACKED 5
#define DLQ 6
#define NONE 255

byte st[M];
byte gen[M];
byte att[M];
byte out = NONE;          /* the group's head (out), or NONE */
byte gone = 0;            /* messages acked or dead-lettered */
byte finished = 0;        /* consumers and the timer that ended */
byte nx;                  /* group_next's cursor (used inside atomic steps only) */
byte releases = 0;        /* bounded (one in a run): every lease counts an
                             attempt but a released one, so this bounds the
                             leases (and the generations) of a run */

#define LEFT(i) (st[i] == ACKED || st[i] == DLQ)
#define OUT(i) (st[i] == READY || st[i] == INFLIGHT || st[i] == DELAYED)

/* The head m left for good: the next parked message becomes the head. */
inline group_next(m)
{
	nx = 0;
	out = NONE;
	do
	:: nx < M && st[nx] == PARKED -> st[nx] = READY; out = nx; break
	:: nx < M && st[nx] != PARKED -> nx++
	:: nx >= M -> break
	od;
	nx = 0
}

/* A failed delivery (nack or lease expiry): retry after a backoff, or
 * the DLQ at MAX attempts (then the group moves on). */
inline fail(m)
{
	if
	:: att[m] >= MAX -> st[m] = DLQ; gone++; group_next(m)
	:: else ->
		st[m] = DELAYED;
#ifdef EARLY
		group_next(m)
#endif
	fi
}

active proctype producer()
{
	byte i = 0;

	do
	:: i < M ->
		atomic {
#ifdef BROKEN
			st[i] = READY; out = i;
#else
			if
			:: out == NONE -> st[i] = READY; out = i
			:: else -> st[i] = PARKED
			fi;
#endif
			i++
		}
	:: i >= M -> break
	od
}

/* receive: any ready message (the pq holds only heads). */
#define RECV(i) atomic { st[i] == READY -> m = i; st[m] = INFLIGHT; gen[m]++; att[m]++; g = gen[m] }

active [C] proctype consumer()
{
	byte m, g;

	do
	:: gone == M -> break
	:: RECV(0); goto act
	:: RECV(1); goto act
	:: RECV(2); goto act
	od;
	goto fin;
act:
	if
	:: true -> atomic {   /* ack */
		if
		:: st[m] == INFLIGHT && gen[m] == g -> st[m] = ACKED; gone++; group_next(m)
		:: else -> skip       /* -ESTALE */
		fi
	   }
	:: true -> atomic {   /* nack */
		if
		:: st[m] == INFLIGHT && gen[m] == g -> fail(m)
		:: else -> skip
		fi
	   }
	:: releases < 1 -> atomic {   /* release: back to ready, attempt not counted */
		releases++;
		if
		:: st[m] == INFLIGHT && gen[m] == g -> st[m] = READY; att[m]--
		:: else -> skip
		fi
	   }
	:: skip               /* walk away: the lease expires */
	fi;
	do
	:: gone == M -> break
	:: RECV(0); goto act
	:: RECV(1); goto act
	:: RECV(2); goto act
	od;
fin:
	atomic { finished++ }
}

/* Lease expiry (the lease ends: its holder is stale) and the end of a
 * backoff, at any moment. */
#define EXPIRE(i) atomic { st[i] == INFLIGHT -> gen[i]++; fail(i) }
#define DUE(i) atomic { st[i] == DELAYED -> st[i] = READY }

active proctype timer()
{
	do
	:: gone == M -> break
	:: EXPIRE(0)
	:: EXPIRE(1)
	:: EXPIRE(2)
	:: DUE(0)
	:: DUE(1)
	:: DUE(2)
	od;
	atomic { finished++ }
}

active proctype monitor()
{
	/* G1: one out at a time. */
	assert((OUT(0) + OUT(1) + OUT(2)) <= 1);
	/* G2: in order; nothing out or gone before every earlier one is gone. */
	assert(!(OUT(1) || LEFT(1)) || LEFT(0));
	assert(!(OUT(2) || LEFT(2)) || LEFT(1));
	/* The end: every message gone. */
	if
	:: finished == C + 1 -> assert(gone == M && LEFT(0) && LEFT(1) && LEFT(2))
	:: else -> skip
	fi
}
