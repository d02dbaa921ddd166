#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the kernel matrix's stress run, for a kernel built with
# KASAN and lockdep from a series (cargo xtask kernel-matrix):
#
#   stress.sh MODULES_DIR [ROUNDS]
#
# MODULES_DIR holds the in-tree klog.ko, relay_app.ko, relay_klog.ko,
# klog_gen.ko, null_blk.ko and relay_test (see xtask/src/modules.rs).  Each
# round runs, concurrently: klog_gen load on every CPU, relay_test draining
# and flushing through the ioctls (losses allowed), a loop of extra
# RELAY_IOC_FLUSH from user space (relay_test's own), CPU 1 going offline
# and online, and channel disable/enable; then it recreates the channel,
# removes the modules while a reader holds a buffer mapped.  Rounds cover
# per-CPU, overwrite and global channels.  Then blktrace(8) traces
# null_blk, if both are there.  At the end the kernel log must
# hold no splat: "STRESS PASS" is printed last, else "STRESS FAIL".
# With STRESS_KCSAN_ON_HOST=1 (the matrix's KCSAN stage, which reads every
# KCSAN report from the console and sorts them) "BUG: KCSAN" lines are
# left out of that check.

set -u
B=${1:?usage: stress.sh MODULES_DIR [ROUNDS]}
rounds=${2:-3}
D=/sys/kernel/debug/relay_klog
G=/sys/kernel/debug/klog_gen
cpu1=/sys/devices/system/cpu/cpu1/online
fail=0

say() { echo "### $*"; }
bad() { echo "FAILED: $*"; fail=1; }
load() { insmod "$B/$1.ko" "${@:2}" || bad "insmod $*"; }
unload() { rmmod "$1" 2>/dev/null || bad "rmmod $1"; }

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
dmesg -C
echo "kernel $(uname -r), $(nproc) CPUs"

hotplug_loop() {
	local until=$1 n=0
	if [[ ! -w $cpu1 ]]; then
		echo "(no CPU hotplug: $cpu1 missing)"
		return 0
	fi
	while ((SECONDS < until)); do
		echo 0 >"$cpu1" 2>/dev/null && n=$((n + 1))
		sleep 0.3
		echo 1 >"$cpu1" 2>/dev/null
		sleep 0.3
	done
	echo 1 >"$cpu1" 2>/dev/null
	echo "cpu1 taken offline $n times"
}

toggle_loop() {
	local until=$1
	while ((SECONDS < until)); do
		echo 0 >$D/enabled 2>/dev/null
		echo 1 >$D/enabled 2>/dev/null
		sleep 0.2
	done
}

gen_loop() {
	local until=$1
	while ((SECONDS < until)); do
		echo 2000 >$G/run 2>/dev/null
	done
}

round() {
	local params=$1 until
	say "round: relay_klog $params"
	load klog
	load relay_app
	# shellcheck disable=SC2086
	load relay_klog $params
	load klog_gen
	until=$((SECONDS + 20))
	gen_loop $until &
	hotplug_loop $until &
	toggle_loop $until &
	"$B/relay_test" -l -n 20000 >/tmp/stress-reader0.log 2>&1 &
	[[ -e $D/cpu1 ]] && "$B/relay_test" -c 1 -l -n 20000 >/tmp/stress-reader1.log 2>&1 &
	wait
	echo "klog_gen emitted $(cat $G/emitted), rejected $(cat $G/rejected)"
	grep -h '^# records\|^# lost' /tmp/stress-reader*.log

	say "recreate the channel while idle, then remove the modules under a mapped reader"
	echo 0 >$D/create && echo 1 >$D/create || bad "recreating the channel"
	# The reader holds the buffer until its input closes (no sleep: see
	# vm-test.sh).
	rm -f /tmp/stress-hold.in
	mkfifo /tmp/stress-hold.in
	"$B/relay_test" hold </tmp/stress-hold.in >/tmp/stress-hold.log 2>&1 &
	local hold=$!
	exec 3>/tmp/stress-hold.in
	until grep -q '^# holding' /tmp/stress-hold.log || ! kill -0 $hold 2>/dev/null; do
		sleep 0.1
	done
	echo 500 >$G/run
	unload klog_gen
	unload relay_klog
	exec 3>&-
	wait $hold || bad "hold test exit status"
	grep -q "not ok" /tmp/stress-hold.log && { cat /tmp/stress-hold.log; bad "hold test"; }
	rmmod relay_app 2>/dev/null || bad "rmmod relay_app after the reader left"
	unload klog
}

for ((r = 1; r <= rounds; r++)); do
	round "subbuf_size=4096 n_subbufs=4"
	round "subbuf_size=4096 n_subbufs=4 overwrite=1"
	round "subbuf_size=8192 n_subbufs=2 global=1"
done

say "blktrace on null_blk"
if insmod "$B/null_blk.ko" 2>/dev/null || modprobe null_blk; then
	if command -v blktrace >/dev/null; then
		timeout 15 blktrace -d /dev/nullb0 -w 10 -o - >/tmp/stress-blktrace.bin 2>/dev/null &
		sleep 2
		dd if=/dev/nullb0 of=/dev/null bs=4k count=20000 iflag=direct 2>/dev/null
		wait
		echo "blktrace recorded $(stat -c %s /tmp/stress-blktrace.bin) bytes"
	else
		echo "(no blktrace binary: skipped)"
	fi
	rmmod null_blk
fi

say "kernel log"
skip='^$'
[[ ${STRESS_KCSAN_ON_HOST:-0} == 1 ]] && skip='BUG: KCSAN'
if dmesg | grep -v -e "$skip" | grep -E 'BUG:|WARNING:|KASAN|Oops|general protection|possible circular locking|inconsistent lock state|possible recursive locking|suspicious RCU|sleeping function called|Call Trace'; then
	bad "kernel splat"
	dmesg | tail -n 80
fi

if ((fail)); then echo "STRESS FAIL"; exit 1; fi
echo "STRESS PASS"
