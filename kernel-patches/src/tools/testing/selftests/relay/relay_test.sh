#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs relay_test against the relay_klog and klog_gen sample modules.

ksft_skip=4

if ! modprobe relay_klog || ! modprobe klog_gen; then
	echo "relay_test: relay_klog or klog_gen module not available"
	exit $ksft_skip
fi

ret=0
"$(dirname "$0")"/relay_test || ret=1
rmmod klog_gen relay_klog
exit $ret
