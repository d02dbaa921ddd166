#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Checks that every patch of a series builds on its own:
#
#   check-series.sh [--jobs N] BASE
#
# Applies the patches of kernel-patches/series/BASE, then those of its
# companion series (series/BASE/companion/), one at a time to the verified
# base (a worktree $CACHE/BASE/check of the tree build-kernel.sh makes)
# and, after each, compiles every C file that the series has touched
# up to that patch, the samples and the selftest.  The configuration is
# Debian's for the stock 6.12 kernel (/boot/config-6.12*-amd64), which
# builds all the in-tree relay users as modules (blktrace, ath9k, ath10k,
# ath11k, mt7915, mt7996, t7xx, iosm, i915), plus the spectral scan options
# and what the series adds; only the objects named are compiled, so this
# takes minutes, not a full build.  Ends with "check: N patches build".

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
jobs=$(nproc)

while (($#)); do
	case $1 in
	--jobs) jobs=${2:?}; shift ;;
	-*) echo "usage: $0 [--jobs N] BASE" >&2; exit 2 ;;
	*) base=$1 ;;
	esac
	shift
done
: "${base:?usage: $0 [--jobs N] BASE}"
series=$kp/series/$base
log() { echo "check[$base]: $*"; }
die() { echo "check[$base]: error: $*" >&2; exit 1; }

mkdir -p "$cache"
exec 8>"$cache/$base-check.lock"
flock 8

"$here/build-kernel.sh" --tree-only "$base" >/dev/null
src=$cache/$base/src
tree=$cache/$base/check
build=$cache/$base/build-check
if [[ ! -d $tree ]]; then
	git -C "$src" worktree prune
	git -C "$src" worktree add -q -f --detach "$tree" relay-base
fi
git -C "$tree" am --abort >/dev/null 2>&1 || true
git -C "$tree" checkout -q -f --detach relay-base
git -C "$tree" clean -q -fdx

stock=$(ls /boot/config-6.12*-amd64 2>/dev/null | sort -V | tail -n 1)
[[ -n $stock ]] || die "no /boot/config-6.12*-amd64: install linux-image-6.12-amd64"
mkdir -p "$build"
export CCACHE_DIR=$cache/ccache CCACHE_BASEDIR=$cache CCACHE_NOHASHDIR=1
make_args=(-C "$tree" O="$build" CC="ccache gcc" HOSTCC="ccache gcc" LOCALVERSION=)

# The configuration, once per base: it only needs the options to exist,
# which the first patches that add them provide, so the base is configured
# with the whole series applied to a scratch copy of .config's inputs.
mapfile -t patches < <(series_patches "$base")
((${#patches[@]})) || die "no patches in $series"
opts=(--enable RELAY --enable DEBUG_FS --enable RUNTIME_TESTING_MENU
	--module TEST_RELAY --module KLOG --enable SAMPLES
      --enable TRACEPOINTS --enable CFG80211_DEBUGFS --enable MAC80211_DEBUGFS
      --enable ATH9K_DEBUGFS --enable ATH9K_COMMON_SPECTRAL
      --enable ATH10K_DEBUGFS --enable ATH10K_SPECTRAL --enable ATH11K_DEBUGFS
      --enable ATH11K_SPECTRAL --enable ATH11K_CFR --enable WWAN_DEBUGFS
      --set-str SYSTEM_TRUSTED_KEYS "" --set-str SYSTEM_REVOCATION_KEYS ""
      --disable DEBUG_INFO_BTF --disable DEBUG_INFO_DWARF5
      --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT --enable DEBUG_INFO_NONE)
git -C "$tree" "${ident[@]}" am -q "${patches[@]}"
for sym in $(awk '/^config SAMPLE_/ { print $2 }' "$tree/samples/relay/Kconfig" 2>/dev/null); do
	opts+=(--module "$sym")
done
if [[ $(cat "$build/.relay-check" 2>/dev/null || true) != "$stock $(git -C "$tree" rev-parse HEAD^{tree})" ]]; then
	log "configuring $build from $stock"
	cp "$stock" "$build/.config"
	"$tree/scripts/config" --file "$build/.config" "${opts[@]}"
	make "${make_args[@]}" -s olddefconfig
	for o in KLOG SAMPLE_RELAY_APP ATH9K_COMMON_SPECTRAL ATH10K_SPECTRAL ATH11K_SPECTRAL; do
		grep -q "^CONFIG_$o=[ym]" "$build/.config" || die "CONFIG_$o did not stick"
	done
	log "make prepare"
	make "${make_args[@]}" -s -j"$jobs" prepare
	echo "$stock $(git -C "$tree" rev-parse HEAD^{tree})" >"$build/.relay-check"
fi
git -C "$tree" checkout -q -f --detach relay-base

touched=("")
n=0
for p in "${patches[@]}"; do
	n=$((n + 1))
	git -C "$tree" "${ident[@]}" am -q "$p" || die "$(basename "$p") does not apply"
	while IFS= read -r f; do
		case $f in
		tools/*) ;;
		*.c) touched+=("${f%.c}.o") ;;
		esac
	done < <(git -C "$tree" diff-tree --no-commit-id --name-only -r HEAD)
	targets=()
	for o in $(printf '%s\n' "${touched[@]}" | sort -u); do
		[[ $o == samples/relay/* ]] || targets+=("$o")
	done
	[[ -d $tree/samples/relay ]] && targets+=(samples/relay/)
	log "$(basename "$p"): ${targets[*]:-nothing to compile}"
	((${#targets[@]})) || continue
	# The patch may add Kconfig symbols: settle the configuration first.
	"$tree/scripts/config" --file "$build/.config" "${opts[@]}"
	make "${make_args[@]}" -s olddefconfig </dev/null >/dev/null
	if ! make "${make_args[@]}" -s -j"$jobs" "${targets[@]}" >"$build/check.log" 2>&1; then
		cat "$build/check.log"
		die "$(basename "$p") does not build (${targets[*]})"
	fi
	grep -i 'warning' "$build/check.log" || true
	if [[ -f $tree/tools/testing/selftests/relay/relay_test.c ]]; then
		mkdir -p "$build/relay-uapi/linux"
		cp "$tree/include/uapi/linux/relay.h" "$build/relay-uapi/linux/"
		gcc -O2 -Wall -Wextra -Werror -I "$build/relay-uapi" -o "$build/relay_test" \
			"$tree/tools/testing/selftests/relay/relay_test.c" -lpthread ||
			die "$(basename "$p"): the selftest does not build"
	fi
	if [[ -f $tree/tools/testing/selftests/relay/relay_mmap.c ]]; then
		mkdir -p "$build/relay-uapi/linux"
		cp "$tree/include/uapi/linux/relay.h" "$build/relay-uapi/linux/"
		gcc -O2 -Wall -Werror -I "$build/relay-uapi" -o "$build/relay_mmap" \
			"$tree/tools/testing/selftests/relay/relay_mmap.c" ||
			die "$(basename "$p"): relay_mmap does not build"
	fi
done
log "$n patches build"
echo "check: $n patches build"
