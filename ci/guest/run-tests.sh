#!/usr/bin/env bash
# Runs INSIDE the virtme-ng guest, as root (started by `cargo xtask test`).
#
# Usage: run-tests.sh TEST_BINARY...
# Environment (set by xtask): RELAY_IN_VM=1, RELAY_MODULES_DIR (the .ko files),
# RELAY_BIN_DIR (target/debug), RELAY_RESULTS_DIR (host-visible, writable).
#
# Runs each test binary with --test-threads=1 from the relay-vm-tests package
# directory (as `cargo test` would), leaves no module of ours loaded between
# binaries, and ends with "N passed, N failed" counting tests (a binary that
# dies before its "test result" line counts as one failed test); exits
# non-zero if any binary failed.
set -uo pipefail

if [[ "${RELAY_IN_VM:-}" != 1 ]]; then
    echo "run-tests.sh loads kernel modules: run it in the VM with \`cargo xtask test\`" >&2
    exit 2
fi
: "${RELAY_MODULES_DIR:?set by cargo xtask test}" "${RELAY_BIN_DIR:?set by cargo xtask test}"
export RELAY_IN_VM RELAY_MODULES_DIR RELAY_BIN_DIR RELAY_RESULTS_DIR

# Ours in reverse load order (modules.sh lists them in load order: klog and
# relay_app first, which the others use).
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mapfile -t OUR_MODULES < <(bash "$repo/kernel-patches/scripts/modules.sh" | tac)
if ((${#OUR_MODULES[@]} == 0)); then
    echo "run-tests.sh: kernel-patches/scripts/modules.sh listed no modules" >&2
    exit 2
fi

unload_ours() {
    local m
    for m in "${OUR_MODULES[@]}"; do
        rmmod "$m" 2>/dev/null || true
    done
}

package_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../vm-tests" && pwd)"
logs="${RELAY_RESULTS_DIR:-}"
if [[ -z "$logs" ]] || ! mkdir -p "$logs" 2>/dev/null; then
    logs="$(mktemp -d)"
fi

echo "guest: kernel $(uname -r), $(nproc) CPUs, modules from $RELAY_MODULES_DIR"
passed=0
failed=0
failed_names=()
for bin in "$@"; do
    name="$(basename "$bin")"
    name="${name%-*}" # drop cargo's hash suffix
    echo
    echo "---- $name"
    unload_ours
    dmesg -C 2>/dev/null || true
    (cd "$package_dir" && "$bin" --test-threads=1) 2>&1 | tee "$logs/$name.log"
    status=${PIPESTATUS[0]}
    # "test result: ok. 5 passed; 0 failed; ..." from the libtest harness.
    result="$(grep -E '^test result: ' "$logs/$name.log" | tail -n 1)"
    ok=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$result")
    bad=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$result")
    passed=$((passed + ${ok:-0}))
    if [[ $status -eq 0 ]]; then
        echo "---- $name: PASS"
        failed=$((failed + ${bad:-0}))
    else
        echo "---- $name: FAIL (exit $status); last kernel messages:"
        dmesg 2>/dev/null | tail -n 40
        failed=$((failed + ${bad:-0}))
        if [[ -z "$bad" || "$bad" == 0 ]]; then
            failed=$((failed + 1))
        fi
        failed_names+=("$name")
    fi
done
unload_ours

echo
if ((failed > 0)); then
    echo "failed test binaries: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
