#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Maintains the patch series in kernel-patches/series/BASE/ (the core
# series) and kernel-patches/series/BASE/companion/ (the companion series:
# klog, the relay-apps samples and their test, applied on top):
#
#   series.sh dev BASE         make (or reset) the development tree
#                              $CACHE/BASE/dev, branch "dev": the base with
#                              both series applied, branch "core" at the
#                              last patch of the core series
#   series.sh sync BASE        rewrite the commits of the dev branch so that
#                              every file under kernel-patches/src/ has the
#                              content this series carries (intree_file in
#                              common.sh) in the last commit that adds or
#                              changes it (earlier commits keep their
#                              versions; new files under src/ go to the
#                              commit that adds files in the same
#                              directory)
#   series.sh export BASE      write relay-base..core as the core series and
#                              core..dev as the companion series: numbered
#                              patches and a cover letter each, whose
#                              subject and text are kept from the current one
#   series.sh checkpatch BASE  run scripts/checkpatch.pl --strict on every
#                              patch; fails on any error, or warning that
#                              the commit message does not justify with a
#                              line "checkpatch TYPE: reason"
#   series.sh refresh BASE     dev, sync, export, checkpatch: after a change
#                              under src/
#
# $CACHE is RELAY_KERNEL_CACHE, default <repo>/.cache/kernel.  The base
# tree comes from build-kernel.sh --tree-only.

set -euo pipefail

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	sed -n '4,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

(($# == 2)) || usage
cmd=$1
base=$2
series=$kp/series/$base
[[ -f $series/BASE ]] || { echo "error: no $series/BASE" >&2; exit 2; }
src=$cache/$base/src
dev=$cache/$base/dev

die() { echo "series[$base]: error: $*" >&2; exit 1; }
log() { echo "series[$base]: $*"; }

patches() {
	series_patches "$base"
}

companion_count() {
	patches_in "$series/companion" | wc -l
}

do_dev() {
	"$here/build-kernel.sh" --tree-only "$base" >/dev/null
	if [[ ! -d $dev ]]; then
		git -C "$src" worktree prune
		git -C "$src" worktree add -q -f "$dev" relay-base
	fi
	git -C "$dev" checkout -q -f -B dev relay-base
	# "git rebase" of dev moves branch core along with its commits.
	git -C "$dev" config rebase.updateRefs true
	git -C "$dev" clean -q -fdx
	mapfile -t list < <(patches)
	((${#list[@]} == 0)) || git -C "$dev" "${ident[@]}" am -q "${list[@]}"
	git -C "$dev" branch -f core "dev~$(companion_count)"
	log "dev tree $dev: $(git -C "$dev" rev-list --count relay-base..core) core and" \
		"$(git -C "$dev" rev-list --count core..dev) companion patches on the base"
}

do_sync() {
	[[ -d $dev ]] || die "no dev tree: run '$0 dev $base' first"
	[[ -z $(git -C "$dev" status --porcelain --untracked-files=no) ]] || die "$dev has uncommitted changes"
	git -C "$dev" merge-base --is-ancestor core dev || die "branch core (the core series' last patch) is not on dev: 'git -C $dev branch -f core COMMIT'"
	local -a commits srcfiles added
	local c f d changed tip core_tip ncore carried
	ncore=$(git -C "$dev" rev-list --count relay-base..core)
	mapfile -t commits < <(git -C "$dev" rev-list --reverse relay-base..dev)
	mapfile -t srcfiles < <(cd "$kp/src" && find . -type f | sed 's|^\./||' | sort)
	carried=$(mktemp)
	# Every src file -> the last commit that adds or changes it, or else
	# the first commit that adds files in its directory.
	declare -A owner=() downer=()
	for c in "${commits[@]}"; do
		while IFS= read -r f; do
			d=$(dirname "$f")
			[[ -n ${downer[$d]:-} ]] || downer[$d]=$c
		done < <(git -C "$dev" diff-tree --no-commit-id --name-only --diff-filter=A -r "$c")
		while IFS= read -r f; do
			owner[$f]=$c
		done < <(git -C "$dev" diff-tree --no-commit-id --name-only -r "$c")
	done
	for f in "${srcfiles[@]}"; do
		[[ -n ${owner[$f]:-} ]] && continue
		owner[$f]=${downer[$(dirname "$f")]:-}
		[[ -n ${owner[$f]} ]] ||
			die "src/$f: no patch adds files in $(dirname "$f")/; add it to a commit by hand"
	done
	git -C "$dev" checkout -q --detach relay-base
	for c in "${commits[@]}"; do
		git -C "$dev" "${ident[@]}" cherry-pick --allow-empty "$c" >/dev/null ||
			die "cherry-pick of $(git -C "$dev" log -1 --format=%s "$c") failed"
		mapfile -t added < <(git -C "$dev" diff-tree --no-commit-id --name-only --diff-filter=A -r "$c")
		changed=0
		for f in "${added[@]}"; do
			if [[ ! -f $kp/src/$f ]]; then
				git -C "$dev" rm -q "$f"
				changed=1
			fi
		done
		for f in "${srcfiles[@]}"; do
			[[ ${owner[$f]} == "$c" ]] || continue
			intree_file "$base" "$f" >"$carried"
			if ! cmp -s "$carried" "$dev/$f"; then
				mkdir -p "$dev/$(dirname "$f")"
				cp "$carried" "$dev/$f"
				changed=1
			fi
			git -C "$dev" add -f "$f"
		done
		if ((changed)) || [[ -n $(git -C "$dev" status --porcelain --untracked-files=no) ]]; then
			git -C "$dev" "${ident[@]}" commit -q --amend --no-edit
			log "updated from src/: $(git -C "$dev" log -1 --format=%s)"
		fi
		ncore=$((ncore - 1))
		((ncore != 0)) || core_tip=$(git -C "$dev" rev-parse HEAD)
	done
	rm -f "$carried"
	tip=$(git -C "$dev" rev-parse HEAD)
	git -C "$dev" checkout -q -B dev "$tip"
	git -C "$dev" branch -f core "${core_tip:-relay-base}"
}

# Writes the commits $1 of the dev tree to directory $2 as numbered
# patches with a cover letter, keeping the subject and text of the cover
# letter there; $3 is the subject prefix.
export_range() {
	local range=$1 dir=$2 prefix=$3 cover=$2/0000-cover-letter.patch subject body tmp
	subject="*** SUBJECT HERE ***"
	body="*** BLURB HERE ***"
	if [[ -f $cover ]]; then
		# Subject: up to the first empty line; text: from there to the shortlog.
		subject=$(awk '/^Subject: /{sub(/^Subject: \[PATCH[^]]*\] /, ""); s = $0; on = 1; next}
			       on && /^ /{s = s $0; next} on {print s; exit}' "$cover")
		body=$(awk 'hdr == 0 && /^$/ {hdr = 1; next} hdr && /^relay developers \([0-9]+\):$/ {exit}
			    hdr {print}' "$cover")
	fi
	tmp=$(mktemp -d)
	git -C "$dev" "${ident[@]}" format-patch -q --zero-commit --no-signature \
		--cover-letter --subject-prefix="$prefix" -o "$tmp" "$range"
	SUBJECT=$subject BODY=$body python3 - "$tmp"/0000-cover-letter.patch <<'EOF'
import os, sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("*** SUBJECT HERE ***", os.environ["SUBJECT"], 1)
s = s.replace("*** BLURB HERE ***\n", os.environ["BODY"].rstrip("\n") + "\n", 1)
open(p, "w").write(s)
EOF
	mkdir -p "$dir"
	find "$dir" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' -delete
	mv "$tmp"/*.patch "$dir"/
	rmdir "$tmp"
	log "exported $(($(find "$dir" -maxdepth 1 -name '*.patch' | wc -l) - 1)) patches and a cover letter to $dir"
}

do_export() {
	[[ -d $dev ]] || die "no dev tree: run '$0 dev $base' first"
	git -C "$dev" merge-base --is-ancestor core dev || die "branch core (the core series' last patch) is not on dev: 'git -C $dev branch -f core COMMIT'"
	local prefix companion_prefix
	# shellcheck source=/dev/null
	prefix=$(. "$series/BASE" && echo "${SUBJECT_PREFIX:-PATCH $base}")
	# shellcheck source=/dev/null
	companion_prefix=$(. "$series/BASE" && echo "${COMPANION_SUBJECT_PREFIX:-PATCH $base companion}")
	export_range relay-base..core "$series" "$prefix"
	if [[ -n $(git -C "$dev" rev-list core..dev) ]]; then
		export_range core..dev "$series/companion" "$companion_prefix"
	else
		rm -rf "$series/companion"
	fi
}

do_checkpatch() {
	"$here/build-kernel.sh" --tree-only "$base" >/dev/null
	local p out bad=0 e w c x t
	for p in $(patches); do
		# The base is a release tarball committed as one commit, so
		# checkpatch cannot look up the upstream ids of Fixes: tags
		# (UNKNOWN_COMMIT_ID); every other type counts.
		out=$(cd "$src" && ./scripts/checkpatch.pl --strict --show-types \
			--ignore UNKNOWN_COMMIT_ID "$p" 2>&1 || true)
		e=$(grep -c '^ERROR:' <<<"$out" || true)
		w=$(grep -c '^WARNING:' <<<"$out" || true)
		c=$(grep -c '^CHECK:' <<<"$out" || true)
		# A warning the commit message justifies ("checkpatch TYPE: why").
		x=0
		for t in $(grep -o '^WARNING:[A-Z_]*' <<<"$out" | cut -d: -f2 | sort -u); do
			if grep -q "^checkpatch $t: " "$p"; then
				x=$((x + $(grep -c "^WARNING:$t:" <<<"$out")))
			fi
		done
		printf '%-76s %s errors, %s warnings (%s justified), %s checks\n' \
			"${p#"$series"/}" "$e" "$w" "$x" "$c"
		if ((e + w + c)); then
			grep -A4 -E '^(ERROR|WARNING|CHECK):' <<<"$out" | sed 's/^/    /'
		fi
		((e + w - x == 0)) || bad=1
	done
	((bad == 0)) || die "checkpatch found errors or warnings"
}

case $cmd in
dev) do_dev ;;
sync) do_sync ;;
export) do_export ;;
checkpatch) do_checkpatch ;;
refresh) do_dev; do_sync; do_export; do_checkpatch ;;
*) usage ;;
esac
