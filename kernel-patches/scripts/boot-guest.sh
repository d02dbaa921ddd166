#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots a kernel built by "build-kernel.sh --arch arm64|i386" under qemu
# (TCG) with virtme-ng and runs the in-tree modules' smoke test,
# scripts/vm-test.sh, in it (relay_test, the selftest, runs there against
# relay_klog in every geometry), then ROUNDS rounds (default 1) of
# scripts/stress.sh:
#
#   boot-guest.sh [--timeout S] [--stress ROUNDS] [--cpus N] [--memory M] [--initramfs] ARCH BUILD_DIR
#
# virtme-ng cannot boot these kernels with the host's root: the guest
# starts from the host's file system (virtme-ng's init, a bash script or
# its x86-64 virtme-ng-init), whose x86-64 binaries an arm64 or i386 kernel
# cannot run (kernel-patches/README.md has the errors).  The guest gets a
# root of its own architecture instead, $CACHE/guest-ARCH/rootfs: Debian's
# busybox-static and bash-static for ARCH (downloaded once with apt-get
# through a temporary sources list and state directory under
# $CACHE/dl/ARCH, which reuses the system's Debian mirror, so the system's
# apt state stays as it is), a stand-in for udevd (the links of
# virtme-ng's script I/O ports), and /relay with the build's static
# relay_test, its in-tree modules, vm-test.sh and stress.sh.  virtme-ng
# boots it with --root: arm64 with --arch arm64 (qemu-system-aarch64 -M
# virt); i386, which vng has no --arch for, as its default x86-64 guest
# with qemu-system-i386 (--qemu) and its bash init (--no-virtme-ng-init).
#
# --initramfs boots the same root without virtme-ng, packed into an
# initramfs for qemu-system-aarch64 -M virt / qemu-system-i386 -M q35, an
# /init of busybox sh running the same and powering off.
#
# Prints the guest's console and, last, "boot-guest: PASS" (vm-test.sh and
# stress.sh passed and the kernel log has no splat) or "boot-guest: FAIL ...";
# exits 0 only on PASS.  The console is kept in BUILD_DIR/boot-guest.log.

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

timeout=1800
stress=1
cpus=2
memory=1G
use_vng=1
arch=
build=

usage() {
	echo "usage: $0 [--timeout S] [--stress ROUNDS] [--cpus N] [--memory M] [--initramfs] arm64|i386 BUILD_DIR" >&2
	exit 2
}

while (($#)); do
	case $1 in
	--timeout) timeout=${2:?}; shift ;;
	--stress) stress=${2:?}; shift ;;
	--cpus) cpus=${2:?}; shift ;;
	--memory) memory=${2:?}; shift ;;
	--initramfs) use_vng=0 ;;
	-h | --help | -*) usage ;;
	*)
		if [[ -z $arch ]]; then arch=$1
		elif [[ -z $build ]]; then build=$1
		else usage
		fi
		;;
	esac
	shift
done
[[ -n $arch && -n $build ]] || usage

log() { echo "boot-guest[$arch]: $*"; }
die() { echo "boot-guest[$arch]: error: $*" >&2; echo "boot-guest: FAIL ($*)"; exit 1; }

case $arch in
arm64)
	deb_arch=arm64
	qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57)
	image=arch/arm64/boot/Image
	console=ttyAMA0
	vng_args=(--arch arm64)
	;;
i386)
	deb_arch=i386
	# qemu's "max" CPU is an AMD family 6 without the MP bit, for which a
	# 32-bit SMP kernel warns "This combination of AMD processors is not
	# suitable for SMP" (amd_k7_smp_check()): an Intel one.
	qemu=(qemu-system-i386 -M q35 -cpu max,vendor=GenuineIntel)
	image=arch/x86/boot/bzImage
	console=ttyS0
	vng_args=(--qemu "$(command -v qemu-system-i386 || echo qemu-system-i386)" --no-virtme-ng-init
		--qemu-opts="-cpu max,vendor=GenuineIntel")
	;;
*) usage ;;
esac
build=$(cd "$build" && pwd)
[[ -f $build/$image ]] || die "no $build/$image: build it with build-kernel.sh --arch $arch"
[[ -x $build/relay_test ]] || die "no $build/relay_test"
command -v "${qemu[0]}" >/dev/null || die "no ${qemu[0]}: install it (cargo xtask setup)"

# The system's Debian mirror and release (the sources entry that lists the
# release's codename).
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
mirror=$(
	{
		awk -v want="$codename" '
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) print uri }
			/^$/ { uri = "" }
		' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
		awk -v want="$codename" '$1 == "deb" {
			n = 2
			if ($2 ~ /^\[/) { while (n <= NF && $n !~ /\]$/) n++; n++ }
			if ($(n + 1) == want) print $n
		}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
	} | sed -n 1p
)

# Debian's busybox-static and bash-static for $deb_arch, unpacked into
# $cache/dl/$deb_arch/ (apt-get through a sources list and state of its own).
fetch_userland() {
	local dl=$cache/dl/$deb_arch keyring=/usr/share/keyrings/debian-archive-keyring.gpg pkg deb
	local -a opts
	[[ -x $dl/busybox/bin/busybox && -x $dl/bash-static/bin/bash-static ]] && return 0
	[[ -n $mirror ]] || die "no Debian mirror for $codename in /etc/apt/sources.list*"
	mkdir -p "$dl/lists/partial" "$dl/cache/archives/partial"
	echo "deb [arch=$deb_arch signed-by=$keyring] $mirror $codename main" >"$dl/sources.list"
	opts=(-o "Dir::Etc::SourceList=$dl/sources.list" -o Dir::Etc::SourceParts=/dev/null
	      -o "Dir::State::Lists=$dl/lists" -o "Dir::Cache=$dl/cache"
	      -o "APT::Architecture=$deb_arch" -o "APT::Architectures::=$deb_arch"
	      -o APT::Sandbox::User=root -q)
	log "downloading busybox-static and bash-static ($deb_arch) from $mirror $codename"
	apt-get "${opts[@]}" update >/dev/null || die "apt-get update of $mirror $codename ($deb_arch) failed"
	for pkg in busybox-static bash-static; do
		rm -f "$dl/${pkg}_"*.deb
		(cd "$dl" && apt-get "${opts[@]}" download "$pkg:$deb_arch" >/dev/null) ||
			die "apt-get download $pkg:$deb_arch failed"
		deb=$(ls "$dl/${pkg}_"*"_$deb_arch.deb" | head -n 1)
		rm -rf "$dl/x"
		dpkg-deb -x "$deb" "$dl/x"
		case $pkg in
		busybox-static) mkdir -p "$dl/busybox/bin"; cp "$dl/x/bin/busybox" "$dl/busybox/bin/" ;;
		bash-static) mkdir -p "$dl/bash-static/bin"; cp "$dl/x/bin/bash-static" "$dl/bash-static/bin/" ;;
		esac
		rm -rf "$dl/x" "$deb"
	done
}
fetch_userland
dl=$cache/dl/$deb_arch

# The guest's root: busybox, bash, /relay; one bin/ for everything
# (sbin, usr/bin and usr/sbin link to it).
guest=$cache/guest-$arch
root=$guest/rootfs
rm -rf "$root"
mkdir -p "$root"/{bin,usr,etc,proc,sys,dev,tmp,run,root,relay}
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
cp "$dl/busybox/bin/busybox" "$root/bin/busybox"
cp "$dl/bash-static/bin/bash-static" "$root/bin/bash"
# A link for every applet: the guest's busybox cannot run here, but the
# host's busybox-static is the same Debian build for x86-64 (the initramfs'
# /init also runs busybox --install for anything else).
if command -v busybox >/dev/null; then
	applets=$(busybox --list)
else
	applets="sh ash mount umount mkdir ln cat echo ls grep sed awk tr head tail od printf sleep
		test [ [[ insmod rmmod lsmod dmesg poweroff uname nproc cut wc sort stat dd timeout
		kill ps chmod cp mv rm true false env seq sync touch id hostname mknod readlink
		basename dirname xargs find expr date tee setsid ip base64 su"
fi
for applet in $applets; do
	[[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
# Debian's busybox has no mountpoint applet; vm-test.sh and stress.sh use
# "mountpoint -q DIR".
cat >"$root/bin/mountpoint" <<'EOF'
#!/bin/sh
[ "$1" = -q ] && shift
awk -v d="$1" '$2 == d { f = 1 } END { exit !f }' /proc/mounts
EOF
chmod +x "$root/bin/mountpoint"
# Nor "dmesg -C" (clear without printing), which vm-test.sh and stress.sh
# run (with bash: busybox sh would take its own applet).
rm -f "$root/bin/dmesg"
cat >"$root/bin/dmesg" <<'EOF'
#!/bin/sh
[ "$1" = -C ] && exec busybox dmesg -c >/dev/null
exec busybox dmesg "$@"
EOF
chmod +x "$root/bin/dmesg"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
# What virtme-ng's init mounts over or into.
mkdir -p "$root"/{lib,home,opt,srv,var,etc/lvm}
touch "$root/etc/fstab" "$root/etc/shadow"
# udev's part for virtme-ng's init: the /dev/virtio-ports/NAME links of
# its script I/O ports (it runs "udevd --daemon", "udevadm trigger" and
# "udevadm settle").
cat >"$root/bin/udevd" <<'EOF'
#!/bin/sh
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
	[ -e "$port/name" ] && ln -sf "../${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done
exit 0
EOF
ln -sf udevd "$root/bin/udevadm"
chmod +x "$root/bin/udevd"
cp "$build/relay_test" "$build/relay_mmap" "$build/relay_mmap.sh" \
	"$kp/scripts/vm-test.sh" "$kp/scripts/stress.sh" "$root/relay/"
cp "$build/lib/test_relay.ko" "$root/relay/"
cp "$build/kernel/klog.ko" "$root/relay/"
cp "$build"/samples/relay/*.ko "$root/relay/"
[[ -f $build/drivers/block/null_blk/null_blk.ko ]] && cp "$build/drivers/block/null_blk/null_blk.ko" "$root/relay/"
release=$(cat "$build/include/config/kernel.release")

# What the guest runs: vm-test.sh, stress.sh (unless --stress 0), then the
# kernel log checked for splats.
cat >"$root/relay/guest.sh" <<EOF
#!/bin/sh
# Run in the guest by boot-guest.sh (from /init, or by virtme-ng's init).
stress_rounds=$stress
EOF
cat >>"$root/relay/guest.sh" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
mountpoint -q /tmp || mount -t tmpfs tmp /tmp
echo "guest: kernel $(uname -r) $(uname -m), $(nproc) CPUs, $(sed -n 's/MemTotal: *//p' /proc/meminfo)"
# bash, not busybox sh, which runs its own applets before PATH (dmesg).
bash /relay/vm-test.sh /relay >/tmp/vm-test.log 2>&1
status=$?
cat /tmp/vm-test.log
result=FAIL
if [ $status = 0 ] && [ "$(tail -n 1 /tmp/vm-test.log)" = PASS ]; then result=PASS; fi
echo "guest: vm-test.sh $result"
if [ "$stress_rounds" -gt 0 ]; then
	bash /relay/stress.sh /relay "$stress_rounds" >/tmp/stress.log 2>&1
	cat /tmp/stress.log
	if [ "$(tail -n 1 /tmp/stress.log)" = "STRESS PASS" ]; then
		echo "guest: stress.sh ($stress_rounds rounds) PASS"
	else
		echo "guest: stress.sh ($stress_rounds rounds) FAIL"
		result=FAIL
	fi
fi
if dmesg | grep -E 'BUG:|WARNING:|Oops|general protection|Call Trace|Unable to handle'; then
	echo "guest: kernel splat"
	result=FAIL
fi
echo "guest-result: $result"
EOF
cat >"$root/init" <<'EOF'
#!/bin/sh
# /init of the initramfs: the guest's work, then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s /bin 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
sh /relay/guest.sh
sync
poweroff -f
EOF
chmod +x "$root/init" "$root/relay/guest.sh"

out=$build/boot-guest.log
start=$SECONDS
if ((use_vng)); then
	venv=$repo/.cache/venv/bin
	[[ -x $venv/vng ]] || die "no $venv/vng: run cargo xtask setup"
	log "booting $release with virtme-ng (${vng_args[*]} --root $root), timeout $timeout s"
	set +e
	PATH=$venv:$PATH timeout -k 10 "$timeout" "$venv/vng" "${vng_args[@]}" --disable-kvm --verbose \
		--root "$root" -r "$build/$image" --cpus "$cpus" --memory "$memory" \
		--exec "sh /relay/guest.sh" </dev/null 2>&1 | tee "$out"
	status=${PIPESTATUS[0]}
	set -e
else
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --owner 0:0 --quiet) >"$guest/initramfs.cpio"
	log "booting $release with ${qemu[*]} (initramfs $guest/initramfs.cpio), timeout $timeout s"
	set +e
	timeout -k 10 "$timeout" "${qemu[@]}" -smp "$cpus" -m "$memory" -nographic -no-reboot \
		-kernel "$build/$image" -initrd "$guest/initramfs.cpio" \
		-append "console=$console rdinit=/init panic=-1 oops=panic" </dev/null 2>&1 | tee "$out"
	status=${PIPESTATUS[0]}
	set -e
fi
elapsed=$((SECONDS - start))
((status != 124)) || die "the guest did not finish in $timeout s (console: $out)"
grep -q '^guest-result: PASS' <(tr -d '\r' <"$out") ||
	die "the guest did not pass after $elapsed s (exit $status; console: $out)"
log "$release: vm-test.sh and $stress rounds of stress.sh passed in $elapsed s"
echo "boot-guest: PASS"
