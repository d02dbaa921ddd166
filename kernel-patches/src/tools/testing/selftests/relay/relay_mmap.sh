#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs relay_mmap against the test_relay module in the channel
# configurations relay.rst allows a client: per-cpu and global buffers,
# overwrite mode, a header written by subbuf_start(), sub-buffers that are
# not a page multiple.  TEST_RELAY_KO names a test_relay.ko to insmod
# instead of modprobing the installed module.

ksft_skip=4
dir=$(dirname "$0")

load() {
	if [ -n "$TEST_RELAY_KO" ]; then
		insmod "$TEST_RELAY_KO" "$@"
	else
		modprobe test_relay "$@"
	fi
}

grep -qw test_relay /proc/modules && rmmod test_relay
if ! load; then
	echo "relay_mmap: test_relay module not available"
	exit $ksft_skip
fi
if [ ! -d /sys/kernel/debug/test_relay ]; then
	echo "relay_mmap: no /sys/kernel/debug/test_relay (debugfs not mounted?)"
	rmmod test_relay
	exit $ksft_skip
fi
rmmod test_relay

ret=0
for params in "" "header=1" "overwrite=1" "overwrite=1 header=1" \
	      "global=1" "global=1 overwrite=1 header=1" \
	      "subbuf_size=3000 n_subbufs=5"; do
	echo "# test_relay $params"
	load $params || { ret=1; continue; }
	"$dir"/relay_mmap -T finalized_after_unload || ret=1
	# Removes test_relay under a mapped buffer.
	"$dir"/relay_mmap -t finalized_after_unload || ret=1
	grep -qw test_relay /proc/modules && rmmod test_relay
done
exit $ret
