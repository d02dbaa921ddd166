//! The tools of `tools/` against the real kernel: `relay-blktrace` beside
//! Debian's `blktrace` on the same null_blk load, both read back with
//! Debian's `blkparse`; and `relay-stat` listing the klog example channel
//! and blktrace's channel. Then clients we did not write, as stock relay
//! serves them: Debian's btrace pipeline shows each I/O while it traces, and
//! `cat` of a relay file returns what was written before the sub-buffer
//! filled.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use relay_vm_tests::{bin, generate_klog, in_vm, online_cpus, write_control, Modules};

const DEV: &str = "/dev/nullb0";
const DEBUGFS_DIR: &str = "/sys/kernel/debug/block/nullb0";
/// I/Os the load performs (fio `--number_ios`).
const IOS: u64 = 400;

/// null_blk with one device, unloaded on drop.
struct NullBlk;

impl NullBlk {
    fn load() -> NullBlk {
        // Left over by an earlier failed test: start clean.
        let _ = Command::new("rmmod").arg("null_blk").output();
        let out = Command::new("modprobe")
            .args(["null_blk", "nr_devices=1", "gb=1", "bs=512"])
            .output()
            .expect("running modprobe");
        assert!(
            out.status.success(),
            "modprobe null_blk failed (the guest loads it from the stock kernel's module tree): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for("/dev/nullb0 to appear", Duration::from_secs(30), || {
            Path::new(DEV).exists()
        });
        NullBlk
    }
}

impl Drop for NullBlk {
    fn drop(&mut self) {
        let out = Command::new("rmmod").arg("null_blk").output();
        if !std::thread::panicking() {
            let out = out.expect("running rmmod");
            assert!(
                out.status.success(),
                "rmmod null_blk failed (a trace still set up?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The same I/O every time: a fixed number of 4 KiB direct random reads and
/// writes from a fixed seed.
fn load() {
    let out = Command::new("fio")
        .args([
            "--name=relay-tools",
            &format!("--filename={DEV}"),
            "--rw=randrw",
            "--rwmixread=75",
            "--bs=4k",
            "--direct=1",
            "--ioengine=psync",
            "--size=256M",
            &format!("--number_ios={IOS}"),
            "--randrepeat=1",
            "--output=/dev/null",
        ])
        .output()
        .expect("running fio (installed by `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "fio failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The buffer files of the trace on nullb0 (one per CPU while set up).
fn trace_files() -> Vec<PathBuf> {
    online_cpus()
        .into_iter()
        .map(|cpu| PathBuf::from(format!("{DEBUGFS_DIR}/trace{cpu}")))
        .filter(|p| p.exists())
        .collect()
}

/// A tracer running in the background with its output in files.
struct Tracer {
    child: Child,
    name: String,
    stderr: PathBuf,
}

impl Tracer {
    /// Starts `program args` in `dir`, stdout to `stdout` (or `dir/stdout`),
    /// and waits until it traces (see [`Tracer::wait_tracing`]).
    fn start(program: &Path, args: &[&str], dir: &Path, stdout: Option<&Path>) -> Tracer {
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let stdout = stdout.map_or_else(|| dir.join(format!("{name}.stdout")), Path::to_path_buf);
        Tracer::spawn(program, args, dir, File::create(&stdout).unwrap().into()).wait_tracing()
    }

    /// Starts `program args` in `dir` with its stdout going to `stdout`
    /// (its stderr to `dir/<program>.stderr`), without waiting.
    fn spawn(program: &Path, args: &[&str], dir: &Path, stdout: Stdio) -> Tracer {
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Tracer {
            child,
            name,
            stderr,
        }
    }

    /// Waits until the tracer has every trace buffer file open: blktrace
    /// and relay-blktrace both open them all and then issue BLKTRACESTART.
    fn wait_tracing(mut self) -> Tracer {
        let fd_dir = PathBuf::from(format!("/proc/{}/fd", self.child.id()));
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before tracing: {}",
                    self.name,
                    self.stderr_text()
                );
            }
            let open = std::fs::read_dir(&fd_dir)
                .map(|fds| {
                    fds.flatten()
                        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                        .filter(|target| target.starts_with(DEBUGFS_DIR))
                        .filter(|target| target.to_string_lossy().contains("/trace"))
                        .count()
                })
                .unwrap_or(0);
            if open > 0 && open == trace_files().len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} did not open the trace files within 60 s: {}",
                self.name,
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // BLKTRACESTART follows opening the files at once; leave it time.
        std::thread::sleep(Duration::from_secs(1));
        self
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGINT, then waits for a clean exit; returns its stderr.
    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                panic!(
                    "{} did not stop within 120 s of SIGINT: {}",
                    self.name,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self.stderr_text();
        assert!(
            status.success(),
            "{} failed ({status}): {stderr}",
            self.name
        );
        assert!(
            trace_files().is_empty() && !Path::new(DEBUGFS_DIR).join("dropped").exists(),
            "{} left the trace set up: {:?}",
            self.name,
            trace_files()
        );
        stderr
    }
}

impl Drop for Tracer {
    /// A tracer still running when its test failed: SIGINT, so that it tears
    /// its trace down and null_blk can go, else SIGKILL.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let started = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What blkparse makes of a recording: the comparable part.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    /// Events per action letter (Q, G, P, U, D, C, ...).
    actions: BTreeMap<String, u64>,
    /// Every queue and completion event as "action rwbs sector blocks", sorted.
    queue_complete: Vec<String>,
    /// blkparse's own count, "Events (<device>): N entries".
    entries: u64,
}

/// Runs blkparse on `input` (`-i`; `-` reads `stdin`) in `dir`.
fn blkparse(dir: &Path, input: &str, stdin: Option<&Path>) -> Parsed {
    let mut cmd = Command::new("blkparse");
    cmd.current_dir(dir)
        .args(["-i", input, "-f", "%a %d %S %n\\n"]);
    if let Some(stdin) = stdin {
        cmd.stdin(File::open(stdin).unwrap());
    }
    let out: Output = cmd.output().expect("running blkparse");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "blkparse -i {input} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut actions = BTreeMap::new();
    let mut queue_complete = Vec::new();
    let mut entries = None;
    for line in text.lines() {
        // "Events (nullb0): N entries"; "(254,0)" when reading stdin.
        if let Some((_, rest)) = line
            .strip_prefix("Events (")
            .and_then(|rest| rest.split_once("): "))
        {
            entries = rest.trim_end_matches(" entries").trim().parse().ok();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [action, rwbs, sector, blocks] = fields[..] else {
            continue;
        };
        let is_event = action.chars().all(|c| c.is_ascii_alphabetic())
            && rwbs.chars().all(|c| c.is_ascii_alphabetic())
            && sector.parse::<u64>().is_ok()
            && blocks.parse::<u64>().is_ok();
        if !is_event {
            continue;
        }
        *actions.entry(action.to_string()).or_default() += 1;
        if action == "Q" || action == "C" {
            queue_complete.push(line.trim().to_string());
        }
    }
    queue_complete.sort();
    Parsed {
        actions,
        queue_complete,
        entries: entries
            .unwrap_or_else(|| panic!("no \"Events (...)\" line in blkparse's output:\n{text}")),
    }
}

/// Records the load with `program args` in a fresh `dir`.
fn record(program: &Path, args: &[&str], dir: &Path, stdout: Option<&Path>) -> String {
    let tracer = Tracer::start(program, args, dir, stdout);
    load();
    // Completions are traced before fio returns; stop right away.
    tracer.stop()
}

fn check_load_seen(who: &str, parsed: &Parsed) {
    for action in ["Q", "C"] {
        assert_eq!(
            parsed.actions.get(action).copied(),
            Some(IOS),
            "{who}: expected {IOS} {action} events from the load, blkparse reports {:?}",
            parsed.actions
        );
    }
}

#[test]
fn relay_blktrace_records_what_blktrace_records() {
    if !in_vm() {
        return;
    }
    let _null = NullBlk::load();
    let blktrace_bin = debian_blktrace();

    // 1. Debian's blktrace, per-CPU files.
    let dir_a = fresh_dir("tools-blktrace");
    record(&blktrace_bin, &["-d", DEV], &dir_a, None);
    let reference = blkparse(&dir_a, "nullb0", None);
    check_load_seen("blktrace", &reference);

    // 2. relay-blktrace, per-CPU files named as blktrace names them.
    let dir_b = fresh_dir("tools-relay-blktrace");
    let summary = record(&bin("relay-blktrace"), &["-d", DEV], &dir_b, None);
    let stdout = std::fs::read_to_string(dir_b.join("relay-blktrace.stdout")).unwrap();
    for cpu in online_cpus() {
        let file = dir_b.join(format!("nullb0.blktrace.{cpu}"));
        assert!(file.exists(), "{} was not written", file.display());
    }
    assert!(
        stdout.contains("=== nullb0 ===") && stdout.contains("Total:"),
        "no blktrace-like summary on stdout: {stdout}\n{summary}"
    );
    assert!(
        stdout.contains("(dropped 0)"),
        "events were dropped: {stdout}"
    );
    let ours = blkparse(&dir_b, "nullb0", None);
    check_load_seen("relay-blktrace", &ours);
    assert_eq!(
        ours, reference,
        "blkparse reads different events from relay-blktrace's recording than from blktrace's"
    );

    // 3. relay-blktrace -o -: whole records on stdout, parsed from stdin.
    let dir_c = fresh_dir("tools-relay-blktrace-stdout");
    let stream = dir_c.join("stream");
    let summary = record(
        &bin("relay-blktrace"),
        &["-d", DEV, "-o", "-"],
        &dir_c,
        Some(&stream),
    );
    assert!(
        summary.contains("=== nullb0 ==="),
        "with -o - the summary goes to stderr: {summary}"
    );
    let piped = blkparse(&dir_c, "-", Some(&stream));
    assert_eq!(
        piped, reference,
        "blkparse reads different events from relay-blktrace -o - than from blktrace"
    );
}

#[test]
fn relay_blktrace_refuses_a_busy_device_and_kill_removes_a_stale_trace() {
    if !in_vm() {
        return;
    }
    let _null = NullBlk::load();
    let dir = fresh_dir("tools-busy");
    let first = Tracer::start(&bin("relay-blktrace"), &["-d", DEV], &dir, None);
    let out = Command::new(bin("relay-blktrace"))
        .args(["-d", DEV, "-w", "1", "-D"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second trace on {DEV} succeeded");
    assert!(
        err.contains("already set up") && err.contains("relay-blktrace -k"),
        "unclear busy message: {err}"
    );
    first.stop();

    // A tracer killed with SIGKILL cannot tear down: -k removes its trace.
    let mut killed = Tracer::start(&bin("relay-blktrace"), &["-d", DEV], &dir, None);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert!(!trace_files().is_empty(), "the trace vanished with SIGKILL");
    let out = Command::new(bin("relay-blktrace"))
        .args(["-k", "-d", DEV])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "relay-blktrace -k failed: {err}");
    assert!(err.contains("removed the trace"), "{err}");
    assert!(trace_files().is_empty(), "-k left {:?}", trace_files());
    let out = Command::new(bin("relay-blktrace"))
        .args(["-k", "-d", DEV])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("no trace was set up"),
        "{err}"
    );
}

fn relay_stat_json() -> serde_json::Value {
    let out = Command::new(bin("relay-stat"))
        .arg("--json")
        .output()
        .expect("running relay-stat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "relay-stat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("relay-stat --json: {e}: {text}"))
}

fn find_channel<'a>(report: &'a serde_json::Value, base: &str) -> Option<&'a serde_json::Value> {
    report["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .find(|c| c["base"] == base)
}

#[test]
fn relay_stat_lists_the_klog_channel_with_geometry_and_counters() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("subbuf_size=8192 n_subbufs=4");
    generate_klog(2000);
    let report = relay_stat_json();
    let base = "/sys/kernel/debug/relay_klog/cpu";
    let c = find_channel(&report, base)
        .unwrap_or_else(|| panic!("relay-stat does not list {base}: {report:#}"));
    assert_eq!(c["kind"], "relay-app", "{c:#}");
    let by: Vec<&str> = c["recognised_by"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        by.contains(&"relay-abi") && by.contains(&"relay-app-control-files"),
        "{c:#}"
    );
    assert_eq!(c["subbuf_size"], 8192, "{c:#}");
    assert_eq!(c["n_subbufs"], 4, "{c:#}");
    assert_eq!(c["overwrite"], false, "{c:#}");
    assert_eq!(c["global"], false, "{c:#}");
    assert!(
        c["dropped"].is_u64(),
        "relay-apps `dropped` not read: {c:#}"
    );
    let buffers = c["buffers"].as_array().unwrap();
    let cpus: Vec<u64> = buffers.iter().map(|b| b["cpu"].as_u64().unwrap()).collect();
    let online: Vec<u64> = online_cpus().into_iter().map(u64::from).collect();
    assert_eq!(cpus, online, "{c:#}");
    let mut produced_total = 0;
    for b in buffers {
        assert_eq!(b["counters_from"], "relay-abi", "{b:#}");
        let produced = b["produced"].as_u64().unwrap();
        let consumed = b["consumed"].as_u64().unwrap();
        assert_eq!(b["backlog"].as_u64().unwrap(), produced - consumed, "{b:#}");
        for field in [
            "write_offset",
            "lost_full",
            "lost_toobig",
            "lost_overwritten",
        ] {
            assert!(b[field].is_u64(), "{field} missing: {b:#}");
        }
        produced_total += produced;
    }
    // 2000 records of about 30 bytes per CPU fill several 8 KiB sub-buffers.
    assert!(produced_total > 0, "no sub-buffer produced: {c:#}");

    let out = Command::new(bin("relay-stat")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("/sys/kernel/debug/relay_klog/cpu{0..") && text.contains("4 x 8192 bytes"),
        "text output lacks the channel: {text}"
    );
}

#[test]
fn relay_stat_lists_blktrace_while_tracing() {
    if !in_vm() {
        return;
    }
    let _null = NullBlk::load();
    let dir = fresh_dir("tools-stat-blktrace");
    let tracer = Tracer::start(&bin("relay-blktrace"), &["-d", DEV], &dir, None);
    load();
    let report = relay_stat_json();
    tracer.stop();
    let base = format!("{DEBUGFS_DIR}/trace");
    let c = find_channel(&report, &base)
        .unwrap_or_else(|| panic!("relay-stat does not list {base} while tracing: {report:#}"));
    assert_eq!(c["kind"], "blktrace", "{c:#}");
    assert!(
        c["recognised_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "known-name"),
        "{c:#}"
    );
    assert_eq!(c["global"], false, "{c:#}");
    assert_eq!(c["dropped"], 0, "blktrace's `dropped` not read: {c:#}");
    let cpus: Vec<u64> = c["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["cpu"].as_u64().unwrap())
        .collect();
    let online: Vec<u64> = online_cpus().into_iter().map(u64::from).collect();
    assert_eq!(cpus, online, "{c:#}");
    let after = relay_stat_json();
    assert!(
        find_channel(&after, &base).is_none(),
        "relay-stat still lists {base} after teardown"
    );
}

#[test]
fn relay_blktrace_keeps_records_whole_under_pressure() {
    if !in_vm() {
        return;
    }
    let _null = NullBlk::load();
    let dir = fresh_dir("tools-pressure");
    // Two sub-buffers of 4 KiB per CPU against two fio jobs: the buffers
    // fill, the kernel drops, and the reader runs beside the writers. The
    // output must stay a sequence of whole records of the right CPU, which
    // blkparse reads without complaint.
    let tracer = Tracer::start(
        &bin("relay-blktrace"),
        &["-d", DEV, "-b", "4", "-n", "2"],
        &dir,
        None,
    );
    let out = Command::new("fio")
        .args([
            "--name=pressure",
            &format!("--filename={DEV}"),
            "--rw=randread",
            "--bs=4k",
            "--direct=1",
            "--ioengine=psync",
            "--size=256M",
            "--numjobs=2",
            "--time_based",
            "--runtime=3",
            "--output=/dev/null",
        ])
        .output()
        .expect("running fio");
    assert!(out.status.success(), "fio failed");
    // Stock relay's read(2) may skip sub-buffers while the kernel drops
    // (see tools/README.md); what is written must still be whole records.
    let stderr = tracer.stop();
    eprintln!("{stderr}");
    let summary = std::fs::read_to_string(dir.join("relay-blktrace.stdout")).unwrap();
    let total: u64 = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in the summary: {summary}"));
    let out = Command::new("blkparse")
        .current_dir(&dir)
        .args(["-i", "nullb0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "blkparse complained: {}\nrelay-blktrace said: {stderr}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Events (nullb0): "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count from blkparse: {text}"));
    // Our count includes the notes (process names, start time) blkparse
    // does not count as events: a handful.
    assert!(
        entries > 0 && entries <= total && total - entries < 100,
        "relay-blktrace recorded {total} records, blkparse parsed {entries} events:\n{summary}"
    );
}

// ---- clients we did not write ---------------------------------------------
//
// What stock relay gives readers that know nothing of this project, and a
// patched kernel must keep: data written into a sub-buffer that is not full
// yet reaches read(2) without a flush.

/// A child process killed (and reaped) if a failing test leaves it running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` to exit, killing it after `limit` (only so that a
/// broken kernel cannot hang the suite; no test depends on the time).
fn wait_within(child: &mut Child, what: &str, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The 4 KiB blocks of nullb0 the btrace test reads, one direct read each,
/// away from the blocks a partition scan reads.
const BTRACE_BLOCKS: [u64; 8] = [1000, 1007, 1014, 1021, 1028, 1035, 1042, 1049];

/// The queue events ('Q') of `dd` in blkparse's default output, as the
/// sectors they start at ("254,0  1  7  0.1  312  Q  R 8000 + 8 [dd]").
fn dd_queued_sectors(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [_, _, _, _, _, "Q", _, sector, "+", "8", "[dd]"] => sector.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// Which of `BTRACE_BLOCKS` the queue events in `text` show, in 512-byte
/// sectors as blkparse reports them.
fn btrace_seen(text: &str) -> Vec<u64> {
    let queued = dd_queued_sectors(text);
    BTRACE_BLOCKS
        .iter()
        .map(|block| block * 8)
        .filter(|sector| queued.contains(sector))
        .collect()
}

#[test]
fn btrace_shows_each_io_while_tracing() {
    if !in_vm() {
        return;
    }
    let _null = NullBlk::load();
    let blktrace_bin = debian_blktrace();
    // What Debian's btrace runs: blktrace -d DEV -o - | blkparse -i -.
    let dir = fresh_dir("tools-btrace");
    let output = dir.join("blkparse.stdout");
    let mut blktrace = Tracer::spawn(&blktrace_bin, &["-d", DEV, "-o", "-"], &dir, Stdio::piped());
    let pipe = blktrace
        .child
        .stdout
        .take()
        .expect("blktrace's stdout pipe");
    let mut blkparse = Reaped(
        Command::new("blkparse")
            .args(["-i", "-"])
            .current_dir(&dir)
            .stdin(pipe)
            .stdout(File::create(&output).unwrap())
            .stderr(File::create(dir.join("blkparse.stderr")).unwrap())
            .spawn()
            .expect("running blkparse (installed by `cargo xtask setup`)"),
    );
    let blktrace = blktrace.wait_tracing();

    // A quiet device and a few I/Os, spaced out: none fills a sub-buffer
    // (512 KiB by default), so each must reach blkparse while blktrace runs.
    for block in BTRACE_BLOCKS {
        let out = Command::new("dd")
            .arg(format!("if={DEV}"))
            .args(["of=/dev/null", "bs=4k", "count=1", "iflag=direct"])
            .arg(format!("skip={block}"))
            .output()
            .expect("running dd");
        assert!(
            out.status.success(),
            "dd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // blkparse's output so far, until every read shows or a generous deadline.
    let started = Instant::now();
    let live = loop {
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        let seen = btrace_seen(&text);
        if seen.len() == BTRACE_BLOCKS.len() || started.elapsed() > Duration::from_secs(10) {
            break (seen, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    // Stop as btrace's user does (SIGINT; blkparse ends at the end of the
    // pipe), then judge what was shown while tracing ran.
    let stderr = blktrace.stop();
    let status = wait_within(&mut blkparse.0, "blkparse", Duration::from_secs(60));
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        status.success(),
        "blkparse failed ({status}): {}",
        std::fs::read_to_string(dir.join("blkparse.stderr")).unwrap_or_default()
    );
    let after = btrace_seen(&text);
    let (seen, shown) = live;
    assert_eq!(
        seen.len(),
        BTRACE_BLOCKS.len(),
        "btrace showed {} of {} direct reads while tracing (sectors {seen:?}; after \
         blktrace stopped: {} of them, sectors {after:?}): the reads' events stayed in \
         a sub-buffer that was not full\nblkparse's output while tracing:\n{shown}\n\
         blktrace's stderr:\n{stderr}",
        seen.len(),
        BTRACE_BLOCKS.len(),
        after.len(),
    );
}

#[test]
fn cat_returns_what_was_written_before_the_sub_buffer_fills() {
    if !in_vm() {
        return;
    }
    // relay_read's raw channel: its buffer files hold the records alone.
    const SUBBUF_SIZE: usize = 65536;
    const N: u64 = 200;
    let params = format!("subbuf_size={SUBBUF_SIZE} n_subbufs=4");
    let _modules = Modules::load(&[("relay_app", ""), ("relay_read", &params)]);
    write_control("/sys/kernel/debug/relay_read/run", &N.to_string());
    let dropped = std::fs::read_to_string("/sys/kernel/debug/relay_read/dropped").unwrap();
    assert_eq!(dropped.trim(), "0", "the channel refused records");

    let dir = fresh_dir("tools-cat");
    for cpu in online_cpus() {
        let expected: String = (0..N)
            .map(|seq| {
                format!(
                    "relay_read cpu={cpu} seq={seq} {}\n",
                    "x".repeat(seq as usize % 64)
                )
            })
            .collect();
        assert!(
            expected.len() < SUBBUF_SIZE,
            "the test's records must not fill a sub-buffer"
        );
        let file = format!("/sys/kernel/debug/relay_read/cpu{cpu}");
        let got_path = dir.join(format!("cpu{cpu}"));
        let mut cat = Command::new("cat")
            .arg(&file)
            .stdout(File::create(&got_path).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running cat");
        let status = wait_within(&mut cat, &format!("cat {file}"), Duration::from_secs(60));
        assert!(status.success(), "cat {file} failed ({status})");
        let got = std::fs::read(&got_path).unwrap();
        if got != expected.as_bytes() {
            let got = String::from_utf8_lossy(&got);
            let first_bad = got
                .lines()
                .zip(expected.lines())
                .position(|(g, e)| g != e)
                .unwrap_or_else(|| got.lines().count().min(expected.lines().count()));
            panic!(
                "cat {file} returned {} bytes in {} lines, expected the {N} records of cpu \
                 {cpu} written before its sub-buffer filled ({} bytes); first difference at \
                 line {first_bad}: {:?}",
                got.len(),
                got.lines().count(),
                expected.len(),
                got.lines().nth(first_bad)
            );
        }
    }
}

/// Debian's blktrace, the reference tracer.
fn debian_blktrace() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/blktrace");
    assert!(
        path.exists(),
        "Debian's blktrace is missing: run `cargo xtask setup`"
    );
    path
}
