/* SPDX-License-Identifier: MIT */
/*
 * Spin model of the pollable descriptor's arm/signal protocol
 * (src/pollfd.c, docs/POLLING.md): POLL-A1 (arm), POLL-W1 (signal), and the
 * wakers' WAIT-W1 on the same event word.
 *
 * Spin explores interleavings under sequential consistency. That is the
 * membarrier assumption of WAIT-W1/WAIT-S1 (the heavy barrier of the arm,
 * POLL-S1, makes the waker's plain load and the arm's re-check behave as
 * if ordered), as for the sleepers: the model checks the bit logic on top
 * of it, which is where the descriptor adds states (FIRED, the eventfd,
 * several threads re-arming).
 *
 * Actors: NP producers, one item each (publish, then WAIT-W1: if SLEEPERS,
 * clear it and signal); the loop (arms at creation, waits for the eventfd,
 * drains, and re-arms through the idle hook); another consumer that takes
 * without polling (its empty takes run the idle hook too).
 *
 * Checked:
 *   lost   the loop waits on an unreadable descriptor while an item is
 *          left and nobody is left to signal (assertion at the end)
 *   busy   once everyone else is done, a drain plus its idle hook leaves
 *          the descriptor unreadable unless an item is left (else a
 *          level-triggered loop would spin)
 *   count  every item taken exactly once
 * Broken variants (tests/model/run_spin_pollfd.sh checks each is caught):
 *   -DNORECHECK     the arm does not re-check the object (lost)
 *   -DNOSIGNAL      the waker clears SLEEPERS without signalling (lost)
 *   -DFIRED_FIRST   the signal sets FIRED before writing the eventfd (busy)
 *   -DFAST_NOFIRED  the idle hook's fast test ignores FIRED (busy)
 */
#ifndef NP
#define NP 2
#endif

byte items = 0;  /* published, not taken */
byte taken = 0;
bit sleepers = 0; /* QUAYI_WAIT_SLEEPERS */
bit fired = 0;    /* QUAYI_WAIT_FIRED */
byte efd = 0;     /* the eventfd's counter: readable when > 0 */
byte pdone = 0;
bit cdone = 0;
bit lock = 0; /* the descriptor's lock: one arm at a time */

/* POLL-W1 */
inline signal()
{
#ifdef FIRED_FIRST
	fired = 1;
	efd = 1;
#else
	efd = 1;
	fired = 1;
#endif
}

/* POLL-A1 */
inline arm()
{
	atomic { lock == 0 -> lock = 1 };
	fired = 0;
	efd = 0;      /* read(2) drains it */
	sleepers = 1; /* then POLL-S1 */
#ifndef NORECHECK
	if
	:: items > 0 -> signal()
	:: else -> skip
	fi;
#endif
	lock = 0
}

/* quayi_wait_poll_idle: one read of the word, then maybe arm */
inline idle()
{
#ifdef FAST_NOFIRED
	if
	:: sleepers == 1 -> skip
	:: else -> arm()
	fi
#else
	if
	:: (sleepers == 1 && fired == 0) -> skip
	:: else -> arm()
	fi
#endif
}

proctype producer()
{
	items++; /* RING-R1 */
	/* WAIT-W1, then quayi_wait_wake's CAS */
	if
	:: atomic { sleepers == 1 -> sleepers = 0 };
#ifndef NOSIGNAL
		signal()
#else
		skip
#endif
	:: else -> skip
	fi;
	pdone++
}

proctype other()
{
	byte i = 0;

	do
	:: i < 2 ->
		if
		:: atomic { items > 0 -> items--; taken++ }
		:: else -> idle()
		fi;
		i++
	:: else -> break
	od;
	cdone = 1
}

proctype loop()
{
	bit d;

	arm(); /* quay_ring_fd: made and armed */
	do
	:: efd > 0 ->
		do
		:: atomic { items > 0 -> items--; taken++ }
		:: else -> break
		od;
		d = (pdone == NP && cdone == 1);
		idle();
		/* busy */
		assert(!d || efd == 0 || items > 0)
	:: (efd == 0 && pdone == NP && cdone == 1) ->
		/* lost: asleep for ever with an item left */
		assert(items == 0);
		break
	od;
	assert(taken == NP) /* count */
}

init
{
	atomic {
		byte k = 0;
		run loop();
		run other();
		do
		:: k < NP -> run producer(); k++
		:: else -> break
		od
	}
}
