/* SPDX-License-Identifier: MIT */
/*
 * Spin (Promela) model of the queue's lease state machine (TESTING.md S3;
 * src/queue.c, docs/QUEUE.md). M messages, C consumers that ack, nack,
 * release or walk away from each lease, a timer that expires leases at
 * any moment, one crash that drops every lease (and the unsynced tail: an
 * acked message whose ack was not yet durable comes back as ready), one
 * redrive of the dead-letter queue, and one close (quay_queue_close) at
 * any moment.
 *
 * A lease is (message, generation): every receive bumps the message's
 * generation; ack/nack/release/extend compare it (the fence, Q-L2) and a
 * stale lease changes nothing (-ESTALE). fails[m] counts the failed
 * deliveries (nack, expiry): what the durable log records (RETRY), so a
 * crash brings att back to it. Invariants, asserted on every transition:
 *   I1 a message is in exactly one place (st is one value; a transition
 *      only leaves the state it checked, atomically);
 *   I2 never lost once its ack is durable: a durably acked message never
 *      leaves ACKED and is acked (durably) once only;
 *   I3 receive_count (att) counts exactly the failed deliveries, plus the
 *      current one while in flight or acked: a release gives its own
 *      delivery back, a crash forgets the unlogged ones (leases, releases),
 *      a redrive resets both (documented); checked by the monitor in
 *      every reachable state;
 *   I4 DLQ only when att >= MAX and fails >= MAX (SQS "exceeds": the
 *      MAX-th failed delivery moves it; released deliveries never count),
 *      checked by the monitor process in every reachable state, not by
 *      the transition that decides it;
 *   I5 at the end every message is ACKED or in the DLQ, or, once the
 *      queue is closed, ready (a closed queue delivers nothing but loses
 *      nothing); none in flight;
 *   I6 an ack takes effect only for the current lease of a message in
 *      flight (the fenced ack checks this itself; the broken one asserts);
 *   I7 no lease is issued after close (asserted by the receive).
 * -DNO_RELEASE -DNO_CLOSE leave out the release and close transitions
 * (the model as it was before them, which affords ROUNDS 4).
 * Build with -DBROKEN to drop the fence from ack, with -DEARLY to
 * dead-letter one failure too early, or with -DRELEASE_COUNTS for a
 * release that keeps the delivery counted: spin must then find a
 * violation (run_spin.sh checks that it does for each).
 */
#define M 2
#define C 2
#define MAX 2
#ifndef ROUNDS
#define ROUNDS 4      /* receives per consumer. With release and close,
                         run_spin.sh uses 2 (4 million states; 3: 35
                         million, 2 GB; 4: 145 million, 11 GB) */
#endif

#define READY 0
#define INFLIGHT 1
#define ACKED 2
#define DLQ 3

byte st[M];           /* READY / INFLIGHT / ACKED / DLQ */
byte gen[M];          /* lease generation (the fence) */
byte att[M];          /* receive count */
bool durable[M];      /* its ack reached the log */
byte acks[M];         /* durable acks */
byte fails[M];        /* failed deliveries (logged: RETRY) */
/* I3: att is the failed deliveries plus the current one. */
#define COUNTED(m) (att[m] == fails[m] + ((st[m] == INFLIGHT || st[m] == ACKED) -> 1 : 0))
bool crashed = false;
bool redriven = false;
bool closed = false;
byte done_consumers = 0;
bool timer_done = false;

#ifdef EARLY
#define DLQ_AT (MAX - 1)      /* the broken policy: one failure too early */
#else
#define DLQ_AT MAX
#endif

inline fail(m)
{
	fails[m]++;
	if
	:: att[m] >= DLQ_AT -> st[m] = DLQ
	:: else -> st[m] = READY
	fi
}

proctype consumer()
{
	byte m, mygen, i;
	byte rounds = 0;
	bool got;
	do
	:: rounds < ROUNDS ->
		rounds++;
		/* receive: lease any ready message (or find none; -EPIPE once
		 * closed, Q-C2) */
		atomic {
			got = !closed;
			if
			:: closed -> skip
			:: !closed && st[0] == READY -> m = 0
			:: !closed && st[1] == READY -> m = 1
			:: !closed && st[0] != READY && st[1] != READY -> got = false
			fi;
			if
			:: got ->
				assert(st[m] == READY);
				assert(!closed);                       /* I7 */
				st[m] = INFLIGHT;
				gen[m]++;
				i = att[m];
				att[m]++;
				assert(att[m] > i);                    /* I3 */
				mygen = gen[m]
			:: !got -> skip
			fi
		}
		if
		:: got ->
			if
			:: atomic {                                /* ack */
#ifdef BROKEN
				if
				:: st[m] != ACKED ->
					assert(st[m] == INFLIGHT && gen[m] == mygen);   /* I6 */
					st[m] = ACKED; acks[m]++
				:: st[m] == ACKED -> skip
				fi;
#else
				if
				:: st[m] == INFLIGHT && gen[m] == mygen -> st[m] = ACKED; acks[m]++
				:: !(st[m] == INFLIGHT && gen[m] == mygen) -> skip   /* -ESTALE */
				fi;
#endif
				assert(acks[m] <= 1)                   /* I2 */
			   }
			   /* the ack's record is synced (or not, before a crash) */
			   atomic { if :: st[m] == ACKED -> durable[m] = true :: st[m] != ACKED -> skip fi }
			:: atomic {                                /* nack */
				if
				:: st[m] == INFLIGHT && gen[m] == mygen -> fail(m)
				:: !(st[m] == INFLIGHT && gen[m] == mygen) -> skip
				fi
			   }
#ifndef NO_RELEASE
			:: atomic {                                /* release: ready, not counted */
				if
				:: st[m] == INFLIGHT && gen[m] == mygen ->
					st[m] = READY;
#ifndef RELEASE_COUNTS
					att[m]--;
#endif
					assert(COUNTED(m))                     /* I3 */
				:: !(st[m] == INFLIGHT && gen[m] == mygen) -> skip   /* -ESTALE */
				fi
			   }
#endif
			:: skip                                    /* walk away */
			fi
		:: !got -> skip
		fi
	:: rounds >= ROUNDS -> break
	od;
	atomic { done_consumers++ }
}

proctype timer()
{
	byte m;
	do
	:: atomic {                                            /* lease expiry */
		if
		:: st[0] == INFLIGHT -> m = 0
		:: st[1] == INFLIGHT -> m = 1
		fi;
		fail(m)
	   }
	:: atomic {                                            /* crash: leases and the unsynced tail go */
		!crashed -> crashed = true;
		for (m : 0 .. M - 1) {
			if
			:: st[m] == INFLIGHT -> st[m] = READY; gen[m]++; att[m] = fails[m]
			:: st[m] == ACKED && !durable[m] -> st[m] = READY; acks[m] = 0; att[m] = fails[m]
			:: else -> skip
			fi;
			assert(st[m] != ACKED || durable[m])           /* I2 */
		}
	   }
	:: atomic {                                            /* redrive once (not into a closed queue) */
		!redriven && !closed -> redriven = true;
		for (m : 0 .. M - 1) {
			if
			:: st[m] == DLQ -> st[m] = READY; att[m] = 0; fails[m] = 0
			:: else -> skip
			fi
		}
	   }
#ifndef NO_CLOSE
	:: atomic { !closed -> closed = true }                 /* close once */
#endif
	:: atomic { done_consumers == C -> break }
	od;
	timer_done = true
}

/* After the consumers finish, drain: leases expire; ready messages are
 * delivered until acked or dead-lettered, unless the queue is closed
 * (then they stay ready). */
proctype drainer()
{
	byte m;
	(done_consumers == C && timer_done);
	do
	:: atomic {
		if
		:: st[0] == INFLIGHT || (st[0] == READY && !closed) -> m = 0
		:: st[1] == INFLIGHT || (st[1] == READY && !closed) -> m = 1
		:: else -> break
		fi;
		if
		:: st[m] == INFLIGHT -> fail(m)
		:: else -> att[m]++; gen[m]++; st[m] = ACKED; acks[m]++; durable[m] = true
		fi
	   }
	od;
	for (m : 0 .. M - 1) {
		assert(st[m] == ACKED || st[m] == DLQ || (closed && st[m] == READY));   /* I5 */
		assert(st[m] != ACKED || acks[m] == 1)                 /* I2 */
	}                                                          /* I3, I4: monitor */
}

/* I3 and I4 in every reachable state: a single assert that spin may run
 * at any point of any interleaving (between atomic steps), so no state
 * where a message sits in the DLQ with att < MAX, or where att is not
 * the failed deliveries (plus the current one), escapes it. */
#define DLQ_OK(m) (st[m] != DLQ || (att[m] >= MAX && fails[m] >= MAX))
proctype monitor()
{
	assert(DLQ_OK(0) && DLQ_OK(1) && COUNTED(0) && COUNTED(1))   /* I4, I3 */
}

init
{
	atomic {
		run consumer();
		run consumer();
		run timer();
		run drainer();
		run monitor()
	}
}
