# SPDX-License-Identifier: GPL-2.0
#
# Shared by build-kernel.sh, series.sh and check-series.sh (sourced):
# where things are, and how they run git in the kernel trees.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kp=$(dirname "$here")
repo=$(dirname "$kp")
cache=${RELAY_KERNEL_CACHE:-$repo/.cache/kernel}
# No automatic gc: "git commit" and "git am" would start a detached
# "gc --auto" on the freshly unpacked tree (tens of thousands of loose
# objects), and its reflog expiry holds .git/HEAD.lock while the next git
# command here wants it.
ident=(-c user.name="relay developers" -c user.email=relay@example.org
       -c gc.auto=0 -c maintenance.auto=false)

# The numbered patches in directory $1 (none if it does not exist), in order.
patches_in() {
	if [[ -d $1 ]]; then
		find "$1" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' ! -name '0000-*' | sort
	fi
}

# The patch files of series/$1 in the order they apply: the core series,
# then the companion series in series/$1/companion/ (klog, the relay-apps
# samples and their test), which applies on top of it.
series_patches() {
	patches_in "$kp/series/$1"
	patches_in "$kp/series/$1/companion"
}

# Writes to stdout the version of kernel-patches/src/$2 that the series of
# base $1 carries.  src/ holds what the out-of-tree build compiles against
# any kernel, with both sides of every difference between kernels; a
# series carries a C file with the conditionals on the symbols of its
# BASE's UNIFDEF resolved by unifdef(1), so that no patch adds code that
# its kernel cannot compile or never runs.  Other files go as they are.
intree_file() {
	local file=$kp/src/$2 symbols rc=0
	[[ -f $file ]] || { echo "intree_file: no $file" >&2; return 1; }
	case $file in
	*.c | *.h) ;;
	*) cat "$file"; return ;;
	esac
	# shellcheck source=/dev/null
	symbols=$(. "$kp/series/$1/BASE" && echo "${UNIFDEF:?series/$1/BASE has no UNIFDEF line}")
	command -v unifdef >/dev/null || { echo "intree_file: unifdef(1) is missing: apt-get install unifdef" >&2; return 1; }
	# shellcheck disable=SC2086 # a list of -D/-U options
	unifdef $symbols "$file" || rc=$?
	# 0: nothing resolved, 1: output differs from the input, 2: trouble.
	((rc < 2)) || { echo "intree_file: unifdef failed on $file" >&2; return 1; }
}
