#!/bin/sh
# SPDX-License-Identifier: MIT
# Verify the queue's lease model with spin (TESTING.md S3).
#   run_spin.sh <abs path of queue_lease.pml> <scratch work dir>
# Generates the verifier (spin -a), compiles pan.c with $CC, runs an
# exhaustive safety search and prints the states explored. Fails on any
# assertion violation, on an incomplete search, and also if one of the
# model's deliberately broken variants (-DBROKEN: ack without the fence;
# -DEARLY: dead-letter one failure early, which invariant I4 must catch;
# -DRELEASE_COUNTS: a release that counts the delivery, which I3 must
# catch) is NOT caught, so that a model that cannot fail does not pass.
set -eu
pml=$1
work=$2
cc=${CC:-cc}
mkdir -p "$work"
cd "$work"

verify() {   # $1: name, $2: extra spin flags
	rm -rf "$1"
	mkdir "$1"
	cp "$pml" "$1/model.pml"
	(cd "$1" && spin $2 -a model.pml >spin.log 2>&1) || { cat "$1/spin.log"; return 2; }
	(cd "$1" && $cc -O2 -DSAFETY -DCOLLAPSE -DVECTORSZ=4096 -o pan pan.c >cc.log 2>&1) || { cat "$1/cc.log"; return 2; }
	(cd "$1" && ./pan -m100000 -c1 >pan.out 2>&1) || true
}

# The lease machine without release and close, 4 receives per consumer
# (as before they existed), then with them at QUAY_SPIN_ROUNDS receives
# per consumer (default 2; 3 for a soak: 35 million states, 2 GB).
base="-DNO_RELEASE -DNO_CLOSE -DROUNDS=4"
full="-DROUNDS=${QUAY_SPIN_ROUNDS:-2}"

check_clean() {   # $1: name, $2: what
	cat "$1/pan.out"
	if ! grep -q "errors: 0" "$1/pan.out"; then
		echo "run_spin: the model ($2) has a violation (see above)"
		exit 1
	fi
	if grep -q "max search depth too small" "$1/pan.out"; then
		echo "run_spin: the search ($2) did not complete (depth limit)"
		exit 1
	fi
	states=$(grep "states, stored" "$1/pan.out" | awk '{print $1}')
	echo "run_spin: queue_lease.pml ($2) verified: $states states stored, 0 errors"
}

verify model "$base"
check_clean model "leases, crash, redrive"
verify model_rc "$full"
check_clean model_rc "with release and close, ${QUAY_SPIN_ROUNDS:-2} receives per consumer"

verify broken "$base -DBROKEN"
if grep -q "errors: 0" broken/pan.out; then
	cat broken/pan.out
	echo "run_spin: the broken variant (no fence) was NOT caught"
	exit 1
fi
echo "run_spin: the broken variant (ack without the fence) is caught: $(grep -o 'errors: [0-9]*' broken/pan.out)"

verify early "$base -DEARLY"
if grep -q "errors: 0" early/pan.out; then
	cat early/pan.out
	echo "run_spin: the early dead-letter variant was NOT caught (I4 cannot fail)"
	exit 1
fi
if ! grep -q "assertion violated.*att\[0\]" early/pan.out; then
	cat early/pan.out
	echo "run_spin: the early dead-letter variant failed, but not on the I4 monitor"
	exit 1
fi
echo "run_spin: the early dead-letter variant is caught by I4: $(grep -o 'errors: [0-9]*' early/pan.out)"

verify release "$full -DRELEASE_COUNTS"
if grep -q "errors: 0" release/pan.out; then
	cat release/pan.out
	echo "run_spin: the counting-release variant was NOT caught (I3 cannot fail)"
	exit 1
fi
echo "run_spin: the counting-release variant is caught: $(grep -o 'errors: [0-9]*' release/pan.out)"
