#!/usr/bin/env bash
# Runs INSIDE the virtme-ng guest, as root (started by `cargo xtask demo`).
#
# Usage: demo.sh MODULES_DIR RELAY_READER OUTPUT_DIR [COUNT]
#
# Loads klog, relay_app, relay_klog and klog_gen, records relay_klog's
# per-CPU channel with `relay-reader record --mode mmap` while klog_gen writes
# COUNT records, stops the reader with SIGINT, then shows its summary, the
# record count of each per-CPU file and their first lines.
set -euo pipefail

modules_dir=$1
reader=$2
out=$3
count=${4:-5000}
channel=/sys/kernel/debug/relay_klog/cpu

unload() {
    local m
    for m in relay_klog klog_gen relay_app klog; do
        rmmod "$m" 2>/dev/null || true
    done
}
reader_pid=""
cleanup() {
    if [[ -n "$reader_pid" ]] && kill -0 "$reader_pid" 2>/dev/null; then
        kill -TERM "$reader_pid" 2>/dev/null || true
        wait "$reader_pid" 2>/dev/null || true
    fi
    unload
}
trap cleanup EXIT

echo "== kernel $(uname -r), $(nproc) CPUs"
unload
# 8 sub-buffers of 32 KiB per CPU: the records cross several sub-buffers,
# each ending in padding that the reader must strip.
declare -A params=([relay_klog]="subbuf_size=32768 n_subbufs=8")
for m in klog relay_app relay_klog klog_gen; do
    echo "== insmod $m.ko ${params[$m]:-}"
    # shellcheck disable=SC2086 # parameters are words
    insmod "$modules_dir/$m.ko" ${params[$m]:-}
done
ls -l "$(dirname "$channel")"

mkdir -p "$out"
reader_log=$(mktemp)
echo "== relay-reader record --mode mmap --output $out $channel"
"$reader" record --mode mmap --output "$out" "$channel" >"$reader_log" 2>&1 &
reader_pid=$!

# Ready once it says it is recording (its channel is open and mapped);
# give up after 30 s.
for _ in $(seq 300); do
    grep -q "recording" "$reader_log" && break
    if ! kill -0 "$reader_pid" 2>/dev/null; then
        wait "$reader_pid" || true
        cat "$reader_log"
        echo "relay-reader exited before it started recording" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q "recording" "$reader_log"; then
    cat "$reader_log"
    echo "relay-reader did not start recording within 30 s" >&2
    exit 1
fi

echo "== echo $count > /sys/kernel/debug/klog_gen/run"
echo "$count" > /sys/kernel/debug/klog_gen/run
# Let the writes land before stopping; the reader drains on SIGINT anyway.
sleep 1

echo "== stopping relay-reader (SIGINT)"
kill -INT "$reader_pid"
status=0
wait "$reader_pid" || status=$?
reader_pid=""
echo "== relay-reader output"
cat "$reader_log"
if [[ $status -ne 0 ]]; then
    echo "relay-reader exited with status $status" >&2
    exit 1
fi

shopt -s nullglob
files=("$out"/cpu*)
if ((${#files[@]} == 0)); then
    echo "relay-reader wrote no per-CPU file into $out" >&2
    exit 1
fi
echo "== records per CPU (wc -l)"
wc -l "${files[@]}"
for f in "${files[@]}"; do
    echo "== head -n 5 $f"
    head -n 5 "$f" | cat -v
done
echo "== recording in $out"
