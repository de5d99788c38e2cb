#!/bin/sh
# SPDX-License-Identifier: MIT
# Verify the pollable descriptor's arm/signal model (tests/model/pollfd.pml)
# with spin, then check that each deliberately broken variant is caught.
#   run_spin_pollfd.sh <abs path of pollfd.pml> <scratch work dir>
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
	(cd "$1" && $cc -O2 -DSAFETY -o pan pan.c >cc.log 2>&1) || { cat "$1/cc.log"; return 2; }
	(cd "$1" && ./pan -m100000 >pan.out 2>&1) || true
}

for np in 1 2 3; do
	verify "model$np" "-DNP=$np"
	cat "model$np/pan.out"
	if ! grep -q "errors: 0" "model$np/pan.out" || grep -q "max search depth too small" "model$np/pan.out"; then
		echo "run_spin_pollfd: the model ($np producers) has a violation or did not complete (see above)"
		exit 1
	fi
	echo "run_spin_pollfd: pollfd.pml ($np producers) verified: $(grep 'states, stored' "model$np/pan.out" | awk '{print $1}') states, 0 errors"
done

for v in NORECHECK NOSIGNAL FIRED_FIRST FAST_NOFIRED; do
	verify "$v" "-DNP=2 -D$v"
	if grep -q "errors: 0" "$v/pan.out"; then
		cat "$v/pan.out"
		echo "run_spin_pollfd: the broken variant $v was NOT caught"
		exit 1
	fi
	echo "run_spin_pollfd: the broken variant $v is caught: $(grep -o 'assertion violated.*' "$v/pan.out" | head -1)"
done
