#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds a kernel with one of the patch series applied:
#
#   build-kernel.sh [--kasan | --kcsan | --arch ARCH] [--tree-only] [--jobs N] BASE
#
# BASE is a directory name under kernel-patches/series/ (6.12, 7.3).  The
# script
#   1. finds the base tarball named in series/BASE/BASE (the installed
#      Debian package's, a cached download, or "apt-get download" of the
#      pinned package version through a temporary sources list that reuses
#      the system's Debian mirror, so the system's apt state stays as it
#      is) and refuses it unless its sha256 is the recorded one;
#   2. unpacks it once into $CACHE/BASE/src and commits it as a git base
#      (tag relay-base; "git add -A -f": Debian's .gitignore ignores the
#      top level);
#   3. resets that tree to the base and applies the series, then its
#      companion series (series/BASE/companion/), with "git am"
#      (branch relay-series), unless the same series is applied already;
#   4. configures $CACHE/BASE/build-VARIANT from allnoconfig plus
#      config/relay-vm.config, the variant's fragment and every
#      samples/relay option as a module, failing if a requested value did
#      not stick.  VARIANT: vm (x86-64); kasan with --kasan
#      (+ config/debug.config: KASAN, lockdep); kcsan with --kcsan
#      (+ config/kcsan.config); arm64 with --arch arm64 (+ config/arm64.config,
#      cross-compiled with aarch64-linux-gnu-gcc); i386 with --arch i386
#      (+ config/i386.config, the host gcc with -m32);
#   5. builds the kernel image (bzImage, arm64: Image) and the modules with
#      ccache (CCACHE_DIR $CACHE/ccache) and the selftest binaries
#      build-VARIANT/relay_test and relay_mmap, with relay_mmap.sh beside
#      them (static for arm64 and i386, whose guests cannot run the host's
#      libraries).
#
# --tree-only stops after step 3.  $CACHE is RELAY_KERNEL_CACHE, default
# <repo>/.cache/kernel.  The last line of output names the build directory
# ("build: DIR") or the tree ("tree: DIR").

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

kasan=0
kcsan=0
arch=x86_64
tree_only=0
jobs=$(nproc)
base=

usage() {
	echo "usage: $0 [--kasan | --kcsan | --arch x86_64|arm64|i386] [--tree-only] [--jobs N] BASE (one of: $(ls "$kp/series" | tr '\n' ' '))" >&2
	exit 2
}

while (($#)); do
	case $1 in
	--kasan) kasan=1 ;;
	--kcsan) kcsan=1 ;;
	--arch) arch=${2:?}; shift ;;
	--tree-only) tree_only=1 ;;
	--jobs) jobs=${2:?}; shift ;;
	-h | --help) usage ;;
	-*) usage ;;
	*) [[ -z $base ]] || usage; base=$1 ;;
	esac
	shift
done
[[ -n $base ]] || usage
case $arch in
x86_64 | x86-64 | amd64) arch=x86_64 ;;
arm64 | aarch64) arch=arm64 ;;
i386 | i686 | x86) arch=i386 ;;
*) echo "error: --arch $arch: one of x86_64, arm64, i386" >&2; usage ;;
esac
if ((kasan && kcsan)); then
	echo "error: --kasan and --kcsan exclude each other (KCSAN depends on !KASAN)" >&2
	exit 2
fi
if ((kasan || kcsan)) && [[ $arch != x86_64 ]]; then
	echo "error: --kasan and --kcsan are x86-64 builds: not with --arch $arch" >&2
	exit 2
fi

series=$kp/series/$base
[[ -f $series/BASE ]] || { echo "error: no $series/BASE" >&2; usage; }

# shellcheck source=/dev/null
. "$series/BASE"
: "${VERSION:?}" "${PACKAGE:?}" "${PACKAGE_VERSION:?}" "${SUITE:?}" "${TARBALL:?}" "${SHA256:?}"

log() { echo "build-kernel[$base]: $*"; }
die() { echo "build-kernel[$base]: error: $*" >&2; exit 1; }

# One build per base at a time (several test runs may share the cache).
mkdir -p "$cache"
exec 9>"$cache/$base.lock"
if ! flock -n 9; then
	log "waiting for another build of $base to finish"
	flock 9
fi

sha_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$SHA256" ]]; }

# The URI of the system's Debian mirror for $SUITE: the sources entry that
# lists the suite, else the one listing the release's own codename.
mirror_uri() {
	local codename want
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	for want in "$SUITE" "$codename"; do
		awk -v want="$want" '
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) found = uri }
			/^$/ { uri = "" }
			END { if (found != "") print found }
		' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
		awk -v want="$want" '$1 == "deb" {
			n = 2
			if ($2 ~ /^\[/) { while (n <= NF && $n !~ /\]$/) n++; n++ }
			if ($(n + 1) == want) print $n
		}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
	done | sed -n 1p
}

# Downloads $PACKAGE=$PACKAGE_VERSION with apt-get through a temporary
# sources list and state directory under $cache/dl (reused when present).
fetch_package() {
	local dl=$cache/dl uri keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	local -a opts
	mkdir -p "$dl/lists/partial" "$dl/cache/archives/partial"
	uri=$(mirror_uri)
	[[ -n $uri ]] || die "no Debian mirror found in /etc/apt/sources.list*; cannot download $PACKAGE"
	[[ -f $keyring ]] || die "$keyring is missing (install debian-archive-keyring)"
	echo "deb [signed-by=$keyring] $uri $SUITE main" >"$dl/$SUITE.list"
	opts=(-o "Dir::Etc::SourceList=$dl/$SUITE.list" -o Dir::Etc::SourceParts=/dev/null
	      -o "Dir::State::Lists=$dl/lists" -o "Dir::Cache=$dl/cache"
	      -o APT::Sandbox::User=root -q)
	log "downloading $PACKAGE=$PACKAGE_VERSION from $uri $SUITE"
	apt-get "${opts[@]}" update >/dev/null || die "apt-get update of $uri $SUITE failed"
	(cd "$dl" && apt-get "${opts[@]}" download "$PACKAGE=$PACKAGE_VERSION") ||
		die "$PACKAGE $PACKAGE_VERSION is not downloadable from $uri $SUITE any more: update series/$base/BASE and rebase the series"
	local deb
	deb=$(ls "$dl/${PACKAGE}_"*"_all.deb" | head -n 1)
	rm -rf "$dl/x"
	dpkg-deb -x "$deb" "$dl/x"
	mv "$dl/x/usr/src/$TARBALL" "$dl/$TARBALL"
	rm -rf "$dl/x" "$deb"
}

# Step 1: a verified tarball.
tarball=
for candidate in "/usr/src/$TARBALL" "$cache/dl/$TARBALL"; do
	if [[ -f $candidate ]]; then
		if sha_ok "$candidate"; then
			tarball=$candidate
			break
		fi
		log "ignoring $candidate: its sha256 is not the recorded $SHA256"
	fi
done
if [[ -z $tarball ]]; then
	fetch_package
	tarball=$cache/dl/$TARBALL
	sha_ok "$tarball" ||
		die "$tarball: sha256 $(sha256sum "$tarball" | cut -d' ' -f1) differs from the recorded $SHA256; refusing it"
fi
log "base $VERSION: $tarball (sha256 ok)"

# Step 2: the git base.
src=$cache/$base/src
if [[ $(git -C "$src" rev-parse -q --verify 'refs/tags/relay-base^{commit}' 2>/dev/null || true) == "" ||
      $(cat "$src/.git/relay-base-sha256" 2>/dev/null || true) != "$SHA256" ]]; then
	log "unpacking into $src"
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	tar -xf "$tarball" -C "$src.tmp" --strip-components=1
	git -C "$src.tmp" init -q
	git -C "$src.tmp" config gc.auto 0
	git -C "$src.tmp" config maintenance.auto false
	git -C "$src.tmp" add -A -f
	git -C "$src.tmp" "${ident[@]}" commit -q -m "Debian $PACKAGE $PACKAGE_VERSION ($TARBALL, sha256 $SHA256)"
	git -C "$src.tmp" tag relay-base
	echo "$SHA256" >"$src.tmp/.git/relay-base-sha256"
	mv "$src.tmp" "$src"
fi

# Trees unpacked by older versions of this script had automatic gc on.
git -C "$src" config gc.auto 0
git -C "$src" config maintenance.auto false

# Step 3: the series.
mapfile -t patches < <(series_patches "$base")
((${#patches[@]})) || log "warning: no patches in $series: using the bare base"
series_id=$(cat "${patches[@]}" /dev/null | sha256sum | cut -d' ' -f1)
if [[ $(git -C "$src" rev-parse -q --verify refs/heads/relay-series 2>/dev/null || true) != "" &&
      $(git -C "$src" config --get relay.series || true) == "$series_id" &&
      $(git -C "$src" symbolic-ref -q HEAD || true) == refs/heads/relay-series &&
      -z $(git -C "$src" status --porcelain --untracked-files=no) ]]; then
	log "series already applied ($(git -C "$src" rev-list --count relay-base..HEAD) patches)"
else
	log "applying ${#patches[@]} patches"
	git -C "$src" am --abort >/dev/null 2>&1 || true
	git -C "$src" checkout -q -f -B relay-series relay-base
	git -C "$src" clean -q -fdx
	((${#patches[@]} == 0)) || git -C "$src" "${ident[@]}" am -q "${patches[@]}" || die "git am failed: the series does not apply to $VERSION"
	git -C "$src" config relay.series "$series_id"
fi
if ((tree_only)); then
	echo "tree: $src"
	exit 0
fi

# Step 4: configuration.
variant=vm
fragments=("$kp/config/relay-vm.config")
# The compilers: the kernel's (ccache in front) and the selftest's.
cc=gcc
test_cc=(gcc)
image=arch/x86/boot/bzImage
image_target=bzImage
if ((kasan)); then
	variant=kasan
	fragments+=("$kp/config/debug.config")
elif ((kcsan)); then
	variant=kcsan
	fragments+=("$kp/config/kcsan.config")
elif [[ $arch == arm64 ]]; then
	variant=arm64
	fragments+=("$kp/config/arm64.config")
	export ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-
	cc=aarch64-linux-gnu-gcc
	test_cc=(aarch64-linux-gnu-gcc -static)
	image=arch/arm64/boot/Image
	image_target=Image
elif [[ $arch == i386 ]]; then
	variant=i386
	fragments+=("$kp/config/i386.config")
	export ARCH=i386
	test_cc=(i686-linux-gnu-gcc -static)
fi
command -v "${test_cc[0]}" >/dev/null && command -v "$cc" >/dev/null ||
	die "no $cc: install the cross compiler (cargo xtask setup)"
build=$cache/$base/build-$variant
mkdir -p "$build" "$cache/ccache"
# Every relay sample the series has, as a module, so that each one builds.
awk '/^config SAMPLE_/ { print "CONFIG_" $2 "=m" }' "$src/samples/relay/Kconfig" \
	>"$build/relay-samples.config" 2>/dev/null || true
fragments+=("$build/relay-samples.config")
# Paths relative to $cache, so that other build directories share the cache.
export CCACHE_DIR=$cache/ccache CCACHE_BASEDIR=$cache CCACHE_NOHASHDIR=1
export KBUILD_BUILD_USER=relay KBUILD_BUILD_HOST=relay
# LOCALVERSION= keeps setlocalversion from appending "+" for the git tree.
make_args=(-C "$src" O="$build" CC="ccache $cc" HOSTCC="ccache gcc" LOCALVERSION=)

config_id=$(cat "${fragments[@]}" | sha256sum | cut -d' ' -f1)-$series_id
if [[ $(cat "$build/.relay-config" 2>/dev/null || true) != "$config_id" || ! -f $build/.config ]]; then
	log "configuring $build (allnoconfig + ${fragments[*]##*/})"
	(cd "$src" && scripts/kconfig/merge_config.sh -n -O "$build" "${fragments[@]}" >"$build/merge_config.log" 2>&1) ||
		{ cat "$build/merge_config.log"; die "merge_config.sh failed"; }
	# A value that did not stick fails; an option this base does not have
	# (absent from .config, e.g. PROC_SYSCTL in 7.x) is only reported.  The
	# last fragment that names an option wins, "# CONFIG_X is not set"
	# included (i386.config turns relay-vm.config's CONFIG_64BIT off).
	missing=()
	while IFS= read -r line; do
		if [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			grep -q "^${BASH_REMATCH[1]}=" "$build/.config" && missing+=("$line")
			continue
		fi
		[[ $line =~ ^CONFIG_ ]] || continue
		grep -qxF -- "$line" "$build/.config" && continue
		if grep -q "^${line%%=*}=\|^# ${line%%=*} is not set" "$build/.config"; then
			missing+=("$line")
		else
			log "note: ${line%%=*} does not exist in $VERSION (or its dependencies are off)"
		fi
	done < <(cat "${fragments[@]}" | awk '
		/^# CONFIG_[A-Za-z0-9_]+ is not set$/ { last[$2 "="] = $0; next }
		!/^#/ && NF { last[$0 ~ /=/ ? substr($0, 1, index($0, "=")) : $0] = $0 }
		END { for (k in last) print last[k] }')
	((${#missing[@]} == 0)) || die "requested but not in $build/.config: ${missing[*]}"
	echo "$config_id" >"$build/.relay-config"
fi

# Step 5: build.
log "building in $build with $jobs jobs"
start=$SECONDS
make "${make_args[@]}" -j"$jobs" -s "$image_target" modules
[[ -f $build/$image ]] || die "the build made no $build/$image"
# The selftest needs only <linux/relay.h> from the tree, the rest of the
# uapi headers come from the system (headers_install would need rsync).
mkdir -p "$build/relay-uapi/linux"
cp "$src/include/uapi/linux/relay.h" "$build/relay-uapi/linux/"
"${test_cc[@]}" -O2 -Wall -I "$build/relay-uapi" -o "$build/relay_test" \
	"$src/tools/testing/selftests/relay/relay_test.c" -lpthread
"${test_cc[@]}" -O2 -Wall -I "$build/relay-uapi" -o "$build/relay_mmap" \
	"$src/tools/testing/selftests/relay/relay_mmap.c"
cp "$src/tools/testing/selftests/relay/relay_mmap.sh" "$build/"
log "built $(cat "$build/include/config/kernel.release") ($arch, $image) in $((SECONDS - start)) s"
echo "build: $build"
