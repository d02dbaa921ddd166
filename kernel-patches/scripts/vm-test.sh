#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Guest side of the VM test: run inside a VM booted on the target kernel
# with the modules built by "make -C kernel-patches ... modules selftest":
#
#   vng --disable-kvm -r /boot/vmlinuz-$KVER --cpus 2 --memory 1G \
#	--exec "/abs/path/of/this/script $O_DIR"
#
# Prints PASS or FAIL last.

B=${1:?usage: vm-test.sh BUILD_DIR}
D=/sys/kernel/debug/relay_klog
G=/sys/kernel/debug/klog_gen
fail=0

step() { echo "### $*"; }
check() { if "$@"; then echo "ok: $*"; else echo "FAILED: $*"; fail=1; fi; }

cd "$B" || exit 1
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
dmesg -C

step load
check insmod klog.ko
check insmod relay_app.ko
check insmod relay_klog.ko
check insmod klog_gen.ko
ls $D

step "klog_gen 1000, disable (flush), cat cpu0"
echo 1000 > $G/run
echo "emitted $(cat $G/emitted) rejected $(cat $G/rejected)"
echo 0 > $D/enabled
head -c 64 $D/cpu0 | od -A d -c | head -5
lines=$(cat $D/cpu0 | tr -d '\000' | grep -c 'klog_gen cpu=0 seq=')
echo "cpu0 lines left after head: $lines"
echo "dropped $(cat $D/dropped)"
echo 1 > $D/enabled

step "ioctl test, default geometry, cpu0 and cpu1"
check ./relay_test
check ./relay_test -c 1
check ./relay_test -l -n 300000

step "relay-apps protocol: cpu0.produced, cpu0.consumed delta"
# The control files hold a native size_t: 4 bytes on 32-bit kernels.
W=$(head -c 8 $D/cpu0.produced | wc -c)
num() { od -A n -t u$W "$1" | tr -d ' '; }
# put FILE FIRST REST: one write of W bytes, FIRST then W - 1 times REST.
put() {
	f=$2; i=1
	while [ $i -lt $W ]; do f="$f$3"; i=$((i + 1)); done
	printf "$f" > "$1"
}
echo 30000 > $G/run
p=$(num $D/cpu0.produced); c=$(num $D/cpu0.consumed)
echo "produced $p consumed $c ($W-byte counters)"
put $D/cpu0.consumed '\001' '\000'
check test "$(num $D/cpu0.consumed)" = $((c + 1))
put $D/cpu0.consumed '\377' '\377'
check test "$(num $D/cpu0.consumed)" = $((c + 1))
put $D/cpu0.consumed '\010' '\000'
check test "$(num $D/cpu0.consumed)" = $p
check ./relay_test

step "global buffer"
check rmmod relay_klog
check insmod relay_klog.ko global=1 subbuf_size=65536 n_subbufs=4
check test ! -e $D/cpu1 -a ! -e $D/cpu1.produced -a -e $D/cpu0.produced
check ./relay_test
check ./relay_test -l -n 100000

step "small sub-buffers, no-overwrite, losses accounted"
check rmmod relay_klog
check insmod relay_klog.ko subbuf_size=4096 n_subbufs=4
check ./relay_test -l -n 200000
echo "dropped $(cat $D/dropped)"

step "small sub-buffers, overwrite"
check rmmod relay_klog
check insmod relay_klog.ko subbuf_size=4096 n_subbufs=4 overwrite=1
check ./relay_test -l -n 100000

step "control files: recreate with other sizes"
echo 0 > $D/enabled
echo 8192 > $D/subbuf_size
echo 3 > $D/n_subbufs
echo 0 > $D/overwrite
echo 1 > $D/create
echo 1 > $D/enabled
echo "create $(cat $D/create) subbuf_size $(cat $D/subbuf_size) n_subbufs $(cat $D/n_subbufs)"
check ./relay_test
echo 0 > $D/create
check test "$(cat $D/create)" = 0
check test ! -e $D/cpu0
echo 1 > $D/create
check test -e $D/cpu0
check test "$(echo 3 > $D/subbuf_size 2>&1; cat $D/subbuf_size)" = 8192

step "reader holds cpu0 open while modules are removed"
# relay_test holds the buffer until its input closes: no sleep decides when
# (under emulation the guest's clock may run fast; an i386 guest's did).
rm -f /tmp/hold.in
mkfifo /tmp/hold.in
./relay_test hold < /tmp/hold.in > /tmp/hold.out 2>&1 &
hold=$!
exec 3> /tmp/hold.in
until grep -q '^# holding' /tmp/hold.out || ! kill -0 $hold 2>/dev/null; do
	sleep 0.1
done
check rmmod klog_gen
check rmmod relay_klog
# relay_app's own buffer file operations pin it while a file is open; on a
# kernel whose relay core implements the ioctls, the files use the core's.
if grep -qw relay_flush_buf /proc/kallsyms; then
	check rmmod relay_app
else
	if rmmod relay_app 2>/dev/null; then
		echo "relay_app removed while in use"; fail=1
	else
		echo "ok: rmmod relay_app refused while a buffer file is open"
	fi
fi
check rmmod klog
exec 3>&-
wait $hold || fail=1
cat /tmp/hold.out
if lsmod | grep -qw relay_app; then check rmmod relay_app; fi
lsmod | grep -E 'klog|relay_app' && fail=1

step "selftest: relay_mmap against test_relay"
if [ -f test_relay.ko ]; then
	check env TEST_RELAY_KO="$B/test_relay.ko" sh ./relay_mmap.sh
else
	echo "(no test_relay.ko)"
fi

step dmesg
dmesg | tail -20
if dmesg | grep -E 'BUG|Oops|WARNING|Call Trace|general protection'; then
	fail=1
fi

if [ $fail = 0 ]; then echo PASS; else echo FAIL; fi
