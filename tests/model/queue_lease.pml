/* SPDX-License-Identifier: MIT */
/*
 * Spin (Promela) model of the queue's lease state machine (TESTING.md S3;
 * src/queue.c, docs/QUEUE.md). M messages, C consumers, a timer that
 * expires leases at any moment, one crash that drops every lease (and
 * the unsynced tail: an acked message whose ack was not yet durable comes
 * back as ready), one redrive of the dead-letter queue.
 *
 * A lease is (message, generation): every receive bumps the message's
 * generation; ack/nack/extend compare it (the fence) and a stale lease
 * changes nothing (-ESTALE). Invariants, asserted on every transition:
 *   I1 a message is in exactly one place (st is one value; a transition
 *      only leaves the state it checked, atomically);
 *   I2 never lost once its ack is durable: a durably acked message never
 *      leaves ACKED and is acked (durably) once only;
 *   I3 receive_count (att) never decreases except by redrive (which
 *      resets it, documented);
 *   I4 DLQ only when att >= MAX (SQS "exceeds": the MAX-th failed
 *      delivery moves it), checked by the monitor process in every
 *      reachable state, not by the transition that decides it;
 *   I5 at the end every message is ACKED or in the DLQ (none in flight,
 *      none ready);
 *   I6 an ack takes effect only for the current lease of a message in
 *      flight (the fenced ack checks this itself; the broken one asserts).
 * Build with -DBROKEN to drop the fence from ack, or with -DEARLY to
 * dead-letter one failure too early: spin must then find a violation
 * (run_spin.sh checks that it does for both).
 */
#define M 2
#define C 2
#define MAX 2

#define READY 0
#define INFLIGHT 1
#define ACKED 2
#define DLQ 3

byte st[M];           /* READY / INFLIGHT / ACKED / DLQ */
byte gen[M];          /* lease generation (the fence) */
byte att[M];          /* receive count */
bool durable[M];      /* its ack reached the log */
byte acks[M];         /* durable acks */
bool crashed = false;
bool redriven = false;
byte done_consumers = 0;
bool timer_done = false;

#ifdef EARLY
#define DLQ_AT (MAX - 1)      /* the broken policy: one failure too early */
#else
#define DLQ_AT MAX
#endif

inline fail(m)
{
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
	:: rounds < 4 ->
		rounds++;
		/* receive: lease any ready message (or find none) */
		atomic {
			got = true;
			if
			:: st[0] == READY -> m = 0
			:: st[1] == READY -> m = 1
			:: st[0] != READY && st[1] != READY -> got = false
			fi;
			if
			:: got ->
				assert(st[m] == READY);
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
			:: skip                                    /* walk away */
			fi
		:: !got -> skip
		fi
	:: rounds >= 4 -> break
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
			:: st[m] == INFLIGHT -> st[m] = READY; gen[m]++
			:: st[m] == ACKED && !durable[m] -> st[m] = READY; acks[m] = 0
			:: else -> skip
			fi;
			assert(st[m] != ACKED || durable[m])           /* I2 */
		}
	   }
	:: atomic {                                            /* redrive once */
		!redriven -> redriven = true;
		for (m : 0 .. M - 1) {
			if
			:: st[m] == DLQ -> st[m] = READY; att[m] = 0
			:: else -> skip
			fi
		}
	   }
	:: atomic { done_consumers == C -> break }
	od;
	timer_done = true
}

/* After the consumers finish, drain: ready messages are delivered until
 * acked or dead-lettered, leases expire. */
proctype drainer()
{
	byte m;
	(done_consumers == C && timer_done);
	do
	:: atomic {
		if
		:: st[0] == READY || st[0] == INFLIGHT -> m = 0
		:: st[1] == READY || st[1] == INFLIGHT -> m = 1
		:: else -> break
		fi;
		if
		:: st[m] == INFLIGHT -> fail(m)
		:: else -> att[m]++; gen[m]++; st[m] = ACKED; acks[m]++; durable[m] = true
		fi
	   }
	od;
	for (m : 0 .. M - 1) {
		assert(st[m] == ACKED || st[m] == DLQ);                /* I5 */
		assert(st[m] != ACKED || acks[m] == 1)                 /* I2 */
	}                                                          /* I4: monitor */
}

/* I4 in every reachable state: a single assert that spin may run at any
 * point of any interleaving (between atomic steps), so no state where a
 * message sits in the DLQ with att < MAX escapes it. */
proctype monitor()
{
	assert((st[0] != DLQ || att[0] >= MAX) && (st[1] != DLQ || att[1] >= MAX))   /* I4 */
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
