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
