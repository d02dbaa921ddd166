#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
#   modules.sh [--paths | --config]
#
# The kernel modules of kernel-patches, one a line, in load order: their
# names (relay_app), with --paths their paths in a kernel tree without
# .ko (samples/relay/relay_app), with --config the CONFIG_<X>=m options
# that build them.
#
# The list is the Kbuild files' (the one place that names every module):
# klog from oot/kernel/Kbuild, the out-of-tree stand-in for the klog
# patch's kernel/Makefile line, then the samples in the order of
# src/samples/relay/Kbuild, relay_app first, which the others load on.
# Read by kernel-patches/Makefile (what to build and copy),
# xtask/src/modules.rs (what a build must produce, what to take from a
# series build) and ci/guest/run-tests.sh (what to unload, in reverse).

set -euo pipefail

kp=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-} in
"") mode=names ;;
--paths) mode=paths ;;
--config) mode=config ;;
*) echo "usage: $0 [--paths | --config]" >&2; exit 2 ;;
esac

# "obj-$(CONFIG_X) += a.o b.o" lines of a Kbuild file whose directory is
# DIR in the kernel tree.
kbuild() {
	awk -v dir="$1" -v mode="$mode" -v file="$2" '
	/^obj-/ {
		if ($1 !~ /^obj-\$\(CONFIG_[A-Z0-9_]+\)$/ || $2 != "+=" || NF < 3) {
			print file ": cannot read: " $0 > "/dev/stderr"
			exit 1
		}
		config = substr($1, 7, length($1) - 7)
		if (mode == "config") {
			print config "=m"
			next
		}
		for (i = 3; i <= NF; i++) {
			name = $i
			if (sub(/\.o$/, "", name) != 1) {
				print file ": not an object: " $i > "/dev/stderr"
				exit 1
			}
			print (mode == "paths" ? dir "/" : "") name
		}
	}' "$2"
}

kbuild kernel "$kp/oot/kernel/Kbuild"
kbuild samples/relay "$kp/src/samples/relay/Kbuild"
