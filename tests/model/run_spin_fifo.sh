#!/bin/sh
# SPDX-License-Identifier: MIT
# Verify the FIFO group model with spin (issue 13).
#   run_spin_fifo.sh <abs path of queue_fifo.pml> <scratch work dir>
# Exhaustive safety search of the model; then of its two broken variants
# (-DBROKEN: admission without parking; -DEARLY: the group handed on at a
# nack), each of which must be caught, so that a model that cannot fail
# does not pass.
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
	(cd "$1" && $cc -O2 -DSAFETY -DMEMLIM=2048 -o pan pan.c >cc.log 2>&1) || { cat "$1/cc.log"; return 2; }
	(cd "$1" && ./pan -m100000 -c1 >pan.out 2>&1) || true
}

verify model ""
cat model/pan.out
if ! grep -q "errors: 0" model/pan.out; then
	echo "run_spin_fifo: the model has a violation (see above)"
	exit 1
fi
if grep -q "max search depth too small" model/pan.out; then
	echo "run_spin_fifo: the search did not complete (depth limit)"
	exit 1
fi
echo "run_spin_fifo: queue_fifo.pml verified: $(grep 'states, stored' model/pan.out | awk '{print $1}') states stored, 0 errors"
for v in BROKEN EARLY; do
	verify "$v" "-D$v"
	if grep -q "errors: 0" "$v/pan.out"; then
		cat "$v/pan.out"
		echo "run_spin_fifo: the $v variant was NOT caught"
		exit 1
	fi
	echo "run_spin_fifo: the $v variant is caught: $(grep -o 'assertion violated.*' "$v/pan.out" | head -1)"
done
