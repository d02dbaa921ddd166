//! The `relay-reader` binary against the real kernel: flight-recorder
//! snapshots, rotation, and clear errors for bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use relay_vm_tests::{bin, generate_klog, in_vm, klog_gen_records, online_cpus, Modules};

const CHANNEL: &str = "/sys/kernel/debug/relay_klog/cpu";

fn relay_reader(args: &[&str]) -> Output {
    Command::new(bin("relay-reader"))
        .args(args)
        .output()
        .expect("running relay-reader")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_per_cpu(dir: &Path, suffix: &str) -> BTreeMap<u32, Vec<u8>> {
    online_cpus()
        .into_iter()
        .map(|cpu| {
            let path = dir.join(format!("cpu{cpu}{suffix}"));
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (cpu, data)
        })
        .collect()
}

/// Starts `relay-reader record --mode mmap [extra] -o dir CHANNEL` and waits
/// for its "recording" line; returns the child and the rest of its stderr.
fn start_recording(
    dir: &Path,
    extra: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(bin("relay-reader"))
        .args(["record", "--mode", "mmap"])
        .args(extra)
        .args(["-o", dir.to_str().unwrap(), CHANNEL])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting relay-reader");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(
        first.contains("recording"),
        "relay-reader did not start: {first}"
    );
    (child, stderr)
}

#[test]
fn snapshot_of_a_flight_recorder_keeps_the_newest_records() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("overwrite=1 subbuf_size=4096 n_subbufs=4");
    const N: u64 = 5000;
    generate_klog(N);
    let dir = fresh_dir("relay-snapshot-test");
    let out = relay_reader(&[
        "snapshot",
        "--mode",
        "mmap",
        "--json",
        "-o",
        dir.to_str().unwrap(),
        CHANNEL,
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "snapshot failed: {err}");
    let summary: serde_json::Value =
        serde_json::from_str(&err).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {err}"));
    for (cpu, seqs) in klog_gen_records(&read_per_cpu(&dir, "")) {
        assert_eq!(
            seqs.last(),
            Some(&(N - 1)),
            "cpu {cpu}: the newest record is missing"
        );
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "cpu {cpu}: gap or torn data inside the snapshot"
        );
        assert!(
            (seqs.len() as u64) < N,
            "cpu {cpu}: nothing was overwritten; the test did not lap the buffer"
        );
    }
    for c in summary["cpus"].as_array().expect("cpus in summary") {
        let received = c["subbufs"].as_u64().unwrap();
        let lost = c["lost_subbufs"].as_u64().unwrap();
        let produced = c["produced"].as_u64().unwrap();
        assert!(lost > 0, "no overwritten sub-buffers counted: {c}");
        assert_eq!(
            received + lost,
            produced,
            "received + lost != produced: {c}"
        );
        assert!(
            c["lost_overwritten"].as_u64().unwrap() >= lost,
            "kernel counted fewer overwrites than were lost: {c}"
        );
    }
}

#[test]
fn rotation_splits_per_cpu_files_at_subbuf_boundaries() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("subbuf_size=4096 n_subbufs=64");
    const N: u64 = 3000;
    generate_klog(N);
    // --duration 0: no waiting, only the final flush and drain.
    let dir2 = fresh_dir("relay-rotate-test");
    let out = relay_reader(&[
        "record",
        "--mode",
        "mmap",
        "--rotate-size",
        "16K",
        "--duration",
        "0",
        "-o",
        dir2.to_str().unwrap(),
        CHANNEL,
    ]);
    assert!(out.status.success(), "record failed: {}", stderr(&out));
    for cpu in online_cpus() {
        let mut data = Vec::new();
        let mut index = 0;
        loop {
            let path = dir2.join(format!("cpu{cpu}.{index}"));
            let Ok(part) = std::fs::read(&path) else {
                break;
            };
            assert!(
                part.len() <= 16 << 10,
                "{} is larger than the rotation size",
                path.display()
            );
            assert!(
                part.ends_with(b"\n"),
                "{} ends inside a record",
                path.display()
            );
            data.extend(part);
            index += 1;
        }
        assert!(index > 1, "cpu {cpu}: no rotation happened");
        let seqs = &klog_gen_records(&BTreeMap::from([(cpu, data)]))[&cpu];
        assert!(
            seqs.iter().copied().eq(0..N),
            "cpu {cpu}: rotated files do not hold 0..{N} in order"
        );
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let cases: [(&[&str], &str); 5] = [
        (&["record", "/etc/hostname"], "not a relay buffer file"),
        (
            &["record", "/sys/kernel/debug/klog_gen/run"],
            "not a relay buffer file",
        ),
        (
            &["record", "--mode", "mmap", "/sys/kernel/debug/klog_gen/run"],
            "does not offer the relay mmap ABI",
        ),
        (
            &["record", "/sys/kernel/debug/no_such_channel/cpu"],
            "is the module that creates the channel loaded?",
        ),
        (
            &["info", "/sys/kernel/debug/relay_klog/nothing"],
            "no relay buffer files",
        ),
    ];
    for (args, expected) in cases {
        let out = relay_reader(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "relay-reader {args:?} succeeded");
        assert!(
            err.contains(expected),
            "relay-reader {args:?}: expected {expected:?} in: {err}"
        );
        assert!(
            !err.contains("panicked"),
            "relay-reader {args:?} panicked: {err}"
        );
    }
}

#[test]
fn module_unloaded_while_recording_saves_everything_and_exits() {
    if !in_vm() {
        return;
    }
    let mut modules = Modules::klog("");
    let dir = fresh_dir("relay-unload-test");
    let (mut child, mut stderr) = start_recording(&dir, &["--json"]);
    const N: u64 = 1500;
    generate_klog(N);
    // The channel goes away under the reader: relay_app flushes and closes
    // it, poll reports POLLERR, and the reader must finish on its own.
    modules.unload("relay_klog");
    let status = child.wait().expect("waiting for relay-reader");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(
        status.success(),
        "relay-reader failed when the channel closed ({status}): {rest}"
    );
    for (cpu, seqs) in klog_gen_records(&read_per_cpu(&dir, "")) {
        assert!(
            seqs.iter().copied().eq(0..N),
            "cpu {cpu}: {} records saved, expected 0..{N}",
            seqs.len()
        );
    }
}

#[test]
fn full_disk_fails_clearly_and_leaves_no_torn_record() {
    if !in_vm() {
        return;
    }
    // 64 small sub-buffers per CPU fill with about 256 KiB of records each
    // before the reader starts; the output disk holds 128 KiB.
    let _m = Modules::klog("subbuf_size=4096 n_subbufs=64");
    generate_klog(20_000);
    let dir = fresh_dir("relay-full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "relay-full-disk", dir_arg])
        .status()
        .expect("running mount");
    assert!(mounted.success(), "mounting a 128 KiB tmpfs on {dir_arg}");
    let out = relay_reader(&[
        "record",
        "--mode",
        "mmap",
        "--duration",
        "20",
        "-o",
        dir_arg,
        CHANNEL,
    ]);
    let files: BTreeMap<u32, Vec<u8>> = online_cpus()
        .into_iter()
        .filter_map(|cpu| Some((cpu, std::fs::read(dir.join(format!("cpu{cpu}"))).ok()?)))
        .collect();
    let _ = Command::new("umount").arg(&dir).status();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "relay-reader exited 0 although the disk was full: {err}"
    );
    assert!(
        err.contains("No space left on device"),
        "the error does not say the disk is full: {err}"
    );
    let saved: usize = files.values().map(Vec::len).sum();
    assert!(saved > 0, "nothing saved before the disk filled: {err}");
    for (cpu, data) in &files {
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "cpu{cpu}: the file ends in a torn record ({} bytes)",
            data.len()
        );
    }
    for (cpu, seqs) in klog_gen_records(&files) {
        assert!(
            seqs.iter().copied().eq(0..seqs.len() as u64),
            "cpu{cpu}: the saved records are not 0..{} in order",
            seqs.len()
        );
    }
}

#[test]
fn module_unloaded_after_the_buffers_filled_ends_the_recording() {
    if !in_vm() {
        return;
    }
    // Far more records than 4 x 4 KiB hold: every buffer fills and stays
    // marked full, so relay_close() flushes nothing and wakes no poller.
    let mut modules = Modules::klog("subbuf_size=4096 n_subbufs=4");
    generate_klog(5000);
    let dir = fresh_dir("relay-unload-full-test");
    let (mut child, mut stderr) = start_recording(&dir, &[]);
    modules.unload("relay_klog");
    // A hang guard, not a speed check: the reader must notice at all.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for relay-reader") {
            break status;
        }
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            panic!("relay-reader still runs 60 s after its channel was removed");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(
        status.success(),
        "relay-reader failed when the channel went away ({status}): {rest}"
    );
    for (cpu, seqs) in klog_gen_records(&read_per_cpu(&dir, "")) {
        assert!(
            !seqs.is_empty() && seqs.iter().copied().eq(0..seqs.len() as u64),
            "cpu {cpu}: saved records are not 0..k in order: {} records",
            seqs.len()
        );
    }
}

/// The scheduling policy of process `pid` (field 41 of /proc/PID/stat).
fn sched_policy(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading stat");
    // Fields 3 on follow the ")" that closes the command name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    fields[41 - 3].parse().expect("a policy number")
}

/// Has klog_gen write `n` records per CPU while `child` (from
/// `start_recording` into `dir`) records, stops it with SIGINT, and checks
/// that it exited well with every record saved.
fn generate_stop_and_check(
    mut child: std::process::Child,
    mut log: std::io::BufReader<std::process::ChildStderr>,
    dir: &Path,
    n: u64,
) {
    generate_klog(n);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().expect("waiting for relay-reader");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
    assert!(status.success(), "relay-reader failed ({status}): {rest}");
    for (cpu, seqs) in klog_gen_records(&read_per_cpu(dir, "")) {
        assert!(
            seqs.iter().copied().eq(0..n),
            "cpu {cpu}: {} records saved, expected 0..{n}",
            seqs.len()
        );
    }
}

/// The reading threads of process `pid` (named `relay-cpu<N>`): for each,
/// N, its thread id and the CPUs it may run on (`Cpus_allowed_list`).
fn reading_threads(pid: u32) -> Vec<(u32, u32, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("listing threads") {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let Some(cpu) = comm.trim().strip_prefix("relay-cpu") else {
            continue;
        };
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in status")
            .trim()
            .to_string();
        let tid = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        threads.push((cpu.parse().expect("a CPU number"), tid, allowed));
    }
    threads.sort();
    threads
}

#[test]
fn every_buffer_is_read_by_a_thread_pinned_to_its_cpu() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let dir = fresh_dir("relay-pinned-test");
    let (child, log) = start_recording(&dir, &[]);
    let threads = reading_threads(child.id());
    let cpus: Vec<u32> = threads.iter().map(|t| t.0).collect();
    assert_eq!(
        cpus,
        online_cpus(),
        "not one reading thread per CPU: {threads:?}"
    );
    for (cpu, _, allowed) in &threads {
        assert_eq!(
            allowed,
            &cpu.to_string(),
            "the reading thread of cpu{cpu} is not pinned to it"
        );
    }
    generate_stop_and_check(child, log, &dir, 1500);

    // --single-thread: the main thread reads every buffer.
    let dir = fresh_dir("relay-single-thread-test");
    let (child, log) = start_recording(&dir, &["--single-thread"]);
    assert_eq!(
        reading_threads(child.id()),
        vec![],
        "--single-thread started reading threads"
    );
    generate_stop_and_check(child, log, &dir, 1500);
}

#[test]
fn reading_threads_share_one_file_whole_and_stop_at_the_size_limit() {
    if !in_vm() {
        return;
    }
    // Small sub-buffers: the records below fill several on every CPU, so
    // the threads write (and reach the limit) before any flush.
    let _modules = Modules::klog("subbuf_size=4096 n_subbufs=64");
    let n = 1500;
    generate_klog(n);
    let file = fresh_dir("relay-one-file-test");
    let mut child = Command::new(bin("relay-reader"))
        .args(["record", "--mode", "mmap", "--size-limit", "1", "--file"])
        .args([file.to_str().unwrap(), CHANNEL])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting relay-reader");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("relay-reader --size-limit 1 did not stop by itself");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(status.success(), "relay-reader failed ({status}): {log}");
    // What the buffers held when the limit stopped the recording is saved
    // too: every record, each CPU's in order, none torn by another
    // thread's sub-buffer.
    let mut per_cpu: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for line in std::fs::read_to_string(&file)
        .expect("reading the one file")
        .lines()
    {
        let cpu = line
            .strip_prefix("klog_gen cpu=")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(cpu, _)| cpu.parse().ok())
            .unwrap_or_else(|| panic!("a torn or foreign record in the one file: {line:?}"));
        let text = per_cpu.entry(cpu).or_default();
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    let records = klog_gen_records(&per_cpu);
    assert_eq!(records.keys().copied().collect::<Vec<_>>(), online_cpus());
    for (cpu, seqs) in records {
        assert!(
            seqs.iter().copied().eq(0..n),
            "cpu {cpu}: {} records saved, expected 0..{n}",
            seqs.len()
        );
    }
}

/// relay-reader with `args` as the unprivileged user 65534.
fn relay_reader_unprivileged(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("relay-reader"))
        .args(args)
        .output()
        .expect("running setpriv")
}

#[test]
fn reader_runs_under_sched_fifo_by_default_where_permitted() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    // As root: SCHED_FIFO 10 without asking, every reading thread.
    let dir = fresh_dir("relay-default-policy-test");
    let (child, log) = start_recording(&dir, &[]);
    assert_eq!(
        sched_policy(child.id()),
        libc::SCHED_FIFO as u32,
        "relay-reader as root is not under SCHED_FIFO by default"
    );
    for (cpu, tid, _) in reading_threads(child.id()) {
        assert_eq!(
            sched_policy(tid),
            libc::SCHED_FIFO as u32,
            "the reading thread of cpu{cpu} is not under SCHED_FIFO by default"
        );
    }
    generate_stop_and_check(child, log, &dir, 1500);

    // --no-realtime keeps the normal policy.
    let dir = fresh_dir("relay-no-realtime-test");
    let (child, log) = start_recording(&dir, &["--no-realtime"]);
    assert_eq!(
        sched_policy(child.id()),
        libc::SCHED_OTHER as u32,
        "relay-reader --no-realtime left the normal policy"
    );
    generate_stop_and_check(child, log, &dir, 1500);

    // Without the privilege the default records all the same, and the
    // summary says it got no SCHED_FIFO.
    let out = relay_reader_unprivileged(&["record", "--json", "--duration", "0", CHANNEL]);
    let err = stderr(&out);
    // The channel is root's: the unprivileged run fails on permission, but
    // only after choosing its policy, which must not be the failure.
    assert!(
        !err.contains("SCHED_FIFO priority 10:") && err.contains("permission denied"),
        "the default policy failed an unprivileged run instead of falling back: {err}"
    );
}

#[test]
fn realtime_reader_runs_under_sched_fifo_and_records_everything() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let dir = fresh_dir("relay-realtime-test");
    let (child, log) = start_recording(&dir, &["--realtime", "10"]);
    assert_eq!(
        sched_policy(child.id()),
        libc::SCHED_FIFO as u32,
        "relay-reader --realtime 10 is not under SCHED_FIFO"
    );
    let threads = reading_threads(child.id());
    assert!(!threads.is_empty(), "no reading threads");
    for (cpu, tid, _) in threads {
        assert_eq!(
            sched_policy(tid),
            libc::SCHED_FIFO as u32,
            "the reading thread of cpu{cpu} is not under SCHED_FIFO"
        );
    }
    generate_stop_and_check(child, log, &dir, 1500);

    // Without the privilege the error says what is missing, before anything
    // is opened.
    let out = relay_reader_unprivileged(&["record", "--realtime", "10", CHANNEL]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "an unprivileged --realtime succeeded"
    );
    assert!(
        err.contains("SCHED_FIFO priority 10") && err.contains("CAP_SYS_NICE"),
        "unclear error for an unprivileged --realtime: {err}"
    );
}

#[test]
fn writes_dropped_on_a_full_buffer_are_reported_with_what_to_do() {
    if !in_vm() {
        return;
    }
    // No reader yet: 4 x 4 KiB fill, and the kernel drops the rest.
    let _modules = Modules::klog("subbuf_size=4096 n_subbufs=4");
    generate_klog(5000);
    let dir = fresh_dir("relay-dropped-test");
    let out = relay_reader(&[
        "record",
        "--mode",
        "mmap",
        "--duration",
        "1",
        "-o",
        dir.to_str().unwrap(),
        CHANNEL,
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "relay-reader failed: {err}");
    let hint = err
        .lines()
        .find(|l| l.contains("because a buffer was full"))
        .unwrap_or_else(|| panic!("no word on the dropped writes: {err}"));
    assert!(
        hint.contains("larger sub-buffers"),
        "the hint does not say what to do: {hint}"
    );
    // As root the reader ran under SCHED_FIFO by default, and says so; the
    // hint then does not suggest it again.
    assert!(
        err.contains("SCHED_FIFO priority 10") && !hint.contains("--realtime"),
        "no word of the default real-time policy, or a hint to ask for it: {err}"
    );
    // The count is the kernel's, as in the summary line.
    let dropped: u64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("total: ")?
                .split(", ")
                .find_map(|part| part.strip_suffix(" writes dropped by the kernel"))
        })
        .unwrap_or_else(|| panic!("no total line: {err}"))
        .parse()
        .unwrap();
    assert!(dropped > 0, "nothing dropped: {err}");
    assert!(
        hint.contains(&format!("dropped {dropped} writes")),
        "the hint's count differs from the summary's {dropped}: {hint}"
    );
}

#[test]
fn reader_with_a_short_slice_keeps_the_normal_policy_and_records_everything() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let dir = fresh_dir("relay-slice-test");
    let (child, log) = start_recording(&dir, &["--slice-us", "100"]);
    assert_eq!(
        sched_policy(child.id()),
        libc::SCHED_OTHER as u32,
        "relay-reader --slice-us left the normal policy"
    );
    assert_eq!(
        relay_recorder::realtime::custom_slice(child.id()).expect("sched_getattr"),
        Some(std::time::Duration::from_micros(100)),
        "relay-reader --slice-us 100 does not run with a 100 µs slice"
    );
    for (cpu, tid, _) in reading_threads(child.id()) {
        assert_eq!(
            relay_recorder::realtime::custom_slice(tid).expect("sched_getattr"),
            Some(std::time::Duration::from_micros(100)),
            "the reading thread of cpu{cpu} does not run with a 100 µs slice"
        );
    }
    generate_stop_and_check(child, log, &dir, 1500);

    // An unprivileged user may ask for it; with --realtime it makes no sense.
    let out = relay_reader_unprivileged(&[
        "record",
        "--slice-us",
        "100",
        "--stdout",
        "-w",
        "0.1",
        CHANNEL,
    ]);
    assert!(
        !stderr(&out).contains("slice"),
        "an unprivileged --slice-us was refused: {}",
        stderr(&out)
    );
    let out = relay_reader(&["record", "--slice-us", "100", "--realtime", "10", CHANNEL]);
    assert!(
        !out.status.success() && stderr(&out).contains("cannot be used with"),
        "--slice-us with --realtime was not refused: {}",
        stderr(&out)
    );
}
