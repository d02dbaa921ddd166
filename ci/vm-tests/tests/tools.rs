//! The tools of `tools/` against the real kernel: `relay-blktrace` beside
//! Debian's `blktrace` on the same null_blk load, both read back with
//! Debian's `blkparse` (through `relay-blktrace convert --to v1` where the
//! kernel records blktrace v2), and `relay-blktrace parse` against blkparse
//! on the same recording; zone management and write-zeroes on a zoned
//! null_blk and a loop device, every one of them in a v2 recording; live
//! output through a pipe; and `relay-stat` listing the klog example channel
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
        NullBlk::load_with(&["gb=1", "bs=512"])
    }

    /// null_blk with one device and these parameters: the module of a
    /// patched build (`RELAY_MODULES_DIR/null_blk.ko`) where there is one,
    /// else the stock kernel's.
    fn load_with(params: &[&str]) -> NullBlk {
        // Left over by an earlier failed test: start clean.
        let _ = Command::new("rmmod").arg("null_blk").output();
        let ko = relay_vm_tests::modules_dir().join("null_blk.ko");
        let out = if ko.exists() {
            Command::new("insmod")
                .arg(&ko)
                .arg("nr_devices=1")
                .args(params)
                .output()
        } else {
            Command::new("modprobe")
                .args(["null_blk", "nr_devices=1"])
                .args(params)
                .output()
        }
        .expect("loading null_blk");
        assert!(
            out.status.success(),
            "loading null_blk {params:?} failed (from {} or the stock kernel's module tree): {}",
            ko.display(),
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

/// What blkparse (or `relay-blktrace parse`) makes of a recording: the
/// comparable part.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    /// Events per action (Q, G, P, U, D, C, ...).
    actions: BTreeMap<String, u64>,
    /// Every queue and completion event as "action rwbs sector + blocks
    /// [process or error]", sorted.
    queue_complete: Vec<String>,
    /// The count of the "Events (<device>): N entries" line(s).
    entries: u64,
}

/// The event lines of blkparse's default output (the same for
/// `relay-blktrace parse`): "254,0  1  7  0.000012345  312  Q  R 8000 + 8
/// [dd]", as their fields.
fn event_lines(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| {
            f.len() >= 7
                && f[0].split_once(',').is_some_and(|(maj, min)| {
                    maj.parse::<u32>().is_ok() && min.parse::<u32>().is_ok()
                })
                && f[1].parse::<u32>().is_ok()
                && f[3].contains('.')
        })
        .collect()
}

impl Parsed {
    /// The queue and completion events of writes (zone management and
    /// write-zeroes included: RWBS W or Z after a flush's F), without the
    /// process that queued them: which name a short-lived process has in a
    /// recording depends on when the kernel notes it (before or after its
    /// exec), and a pid may come back under another name.
    fn writes(&self) -> Vec<String> {
        let mut writes: Vec<String> = self
            .queue_complete
            .iter()
            .filter(|e| {
                e.split_whitespace()
                    .nth(1)
                    .is_some_and(|rwbs| rwbs.trim_start_matches('F').starts_with(['W', 'Z']))
            })
            .map(|e| match e.strip_prefix("Q ") {
                Some(_) => e
                    .split_whitespace()
                    .filter(|field| !field.starts_with('['))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => e.clone(),
            })
            .collect();
        writes.sort();
        writes
    }

    fn from_text(text: &str) -> Parsed {
        let mut actions = BTreeMap::new();
        let mut queue_complete = Vec::new();
        for f in event_lines(text) {
            *actions.entry(f[5].to_string()).or_default() += 1;
            if f[5] == "Q" || f[5] == "C" {
                queue_complete.push(f[5..].join(" "));
            }
        }
        queue_complete.sort();
        // "Events (nullb0): N entries"; "(254,0)" when reading stdin.
        let entries = text
            .lines()
            .filter_map(|line| line.strip_prefix("Events ("))
            .filter_map(|rest| rest.split_once("): "))
            .filter_map(|(_, n)| n.trim_end_matches(" entries").trim().parse::<u64>().ok())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| panic!("no \"Events (...)\" line in the output:\n{text}"));
        Parsed {
            actions,
            queue_complete,
            entries,
        }
    }
}

/// Runs `program args` in `dir` (`stdin` from a file if given) and returns
/// its standard output, failing on an error exit.
fn output_of(program: &Path, args: &[&str], dir: &Path, stdin: Option<&Path>) -> (String, String) {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).args(args);
    if let Some(stdin) = stdin {
        cmd.stdin(File::open(stdin).unwrap());
    }
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {err}\n{text}",
        program.display()
    );
    (text, err)
}

/// Debian's blkparse on `input` (`-i`; `-` reads `stdin`) in `dir`, its
/// default output.
fn blkparse_text(dir: &Path, input: &str, stdin: Option<&Path>) -> String {
    output_of(Path::new("blkparse"), &["-i", input], dir, stdin).0
}

/// What Debian's blkparse makes of `input`.
fn blkparse(dir: &Path, input: &str, stdin: Option<&Path>) -> Parsed {
    Parsed::from_text(&blkparse_text(dir, input, stdin))
}

/// `relay-blktrace parse -i input` in `dir`, its output.
fn relay_parse_text(dir: &Path, input: &str) -> String {
    output_of(&bin("relay-blktrace"), &["parse", "-i", input], dir, None).0
}

/// `relay-blktrace convert --to v1 -i input -o output` in `dir`; returns
/// its report (standard error).
fn convert_to_v1(dir: &Path, input: &str, output: &str) -> String {
    let args = ["convert", "--to", "v1", "-i", input, "-o", output];
    output_of(&bin("relay-blktrace"), &args, dir, None).1
}

/// Whether the guest kernel has `BLKTRACESETUP2` (Linux 6.19 on), where
/// relay-blktrace records blktrace v2 by default.
fn kernel_has_v2() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    version >= (6, 19)
}

/// The "Trace:" line relay-blktrace's summary must show on this kernel.
fn expected_trace_line() -> &'static str {
    if kernel_has_v2() {
        "Trace:  blktrace v2 (struct blk_io_trace2, version 8), BLKTRACESETUP2\n"
    } else {
        "Trace:  blktrace v1 (struct blk_io_trace, version 7), BLKTRACESETUP: this kernel has \
         no BLKTRACESETUP2 (ENOTTY)\n"
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
            "{who}: expected {IOS} {action} events from the load, the parser reports {:?}",
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

    // 1. Debian's blktrace (version 1 records, BLKTRACESETUP), per-CPU files.
    let dir_a = fresh_dir("tools-blktrace");
    record(&blktrace_bin, &["-d", DEV], &dir_a, None);
    let reference_text = blkparse_text(&dir_a, "nullb0", None);
    let reference = Parsed::from_text(&reference_text);
    check_load_seen("blktrace", &reference);

    // relay-blktrace parse prints the same v1 recording line for line as
    // blkparse does (blkparse's statistics after the events aside).
    let ours_text = relay_parse_text(&dir_a, "nullb0");
    assert_eq!(
        event_lines(&ours_text),
        event_lines(&reference_text),
        "relay-blktrace parse and blkparse print blktrace's recording differently"
    );
    assert_eq!(Parsed::from_text(&ours_text), reference);

    // 2. relay-blktrace, per-CPU files named as blktrace names them: v1
    //    where the kernel has no BLKTRACESETUP2, read by blkparse; v2 where
    //    it has, read by blkparse once converted to v1, and by
    //    relay-blktrace parse as it is.
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
        stdout.contains(expected_trace_line()),
        "the summary does not name the trace version this kernel records: {stdout}"
    );
    assert!(
        stdout.contains("(dropped 0)"),
        "events were dropped: {stdout}"
    );
    let ours = if kernel_has_v2() {
        let report = convert_to_v1(&dir_b, "nullb0", "nullb0-v1");
        assert!(
            !report.contains("cannot carry"),
            "this load has no event v1 cannot carry: {report}"
        );
        let converted = blkparse(&dir_b, "nullb0-v1", None);
        let parsed = Parsed::from_text(&relay_parse_text(&dir_b, "nullb0"));
        assert_eq!(
            parsed, converted,
            "relay-blktrace parse of the v2 recording and blkparse of its v1 conversion differ"
        );
        converted
    } else {
        blkparse(&dir_b, "nullb0", None)
    };
    check_load_seen("relay-blktrace", &ours);
    assert_eq!(
        ours, reference,
        "blkparse reads different events from relay-blktrace's recording than from blktrace's"
    );

    // 3. relay-blktrace -o - --to v1: whole v1 records on stdout, parsed
    //    from stdin (--to v1 converts a v2 trace and changes nothing on v1).
    let dir_c = fresh_dir("tools-relay-blktrace-stdout");
    let stream = dir_c.join("stream");
    let summary = record(
        &bin("relay-blktrace"),
        &["-d", DEV, "-o", "-", "--to", "v1"],
        &dir_c,
        Some(&stream),
    );
    assert!(
        summary.contains("=== nullb0 ==="),
        "with -o - the summary goes to stderr: {summary}"
    );
    if kernel_has_v2() {
        assert!(
            summary.contains("Written as v1: every event"),
            "no conversion report: {summary}"
        );
    }
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
    // blkparse reads without complaint (v1 records: --to v1 converts where
    // the kernel records v2).
    let tracer = Tracer::start(
        &bin("relay-blktrace"),
        &["-d", DEV, "-b", "4", "-n", "2", "--to", "v1"],
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

// ---- zone management and write-zeroes: blktrace v2 --------------------------

/// The zoned null_blk's zone size (MiB, as its `zone_size` parameter) and
/// in 512-byte sectors.
const ZONE_MIB: u64 = 8;
const ZONE_SECTORS: u64 = ZONE_MIB * 2048;
/// Zones the test opens, closes, finishes and resets, one request each.
const MANAGED_ZONES: u64 = 6;
/// Zones the background load writes, from this zone on.
const WRITTEN_ZONES: (u64, u64) = (16, 3);
/// Write-zeroes requests issued to the loop device, 1 MiB each.
const WRITE_ZEROES: u64 = 12;

/// Runs a command, failing the test with its output if it fails; returns
/// its standard output.
fn run(program: &str, args: &[&str]) -> String {
    output_of(Path::new(program), args, &std::env::temp_dir(), None).0
}

/// A loop device over a file in a tmpfs of its own, which takes
/// write-zeroes requests (loop punches a hole into its file); detached and
/// unmounted on drop.
struct LoopDev {
    dev: String,
    mount: PathBuf,
}

impl LoopDev {
    fn attach() -> LoopDev {
        // A module on the stock kernel, built in on the patched one.
        if !Path::new("/sys/module/loop").exists() {
            run("modprobe", &["loop"]);
        }
        let mount = fresh_dir("tools-loop-tmpfs");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=64m",
                "tmpfs",
                mount.to_str().unwrap(),
            ],
        );
        let backing = mount.join("backing");
        File::create(&backing)
            .and_then(|f| f.set_len(32 << 20))
            .unwrap();
        let dev = run("losetup", &["--find", "--show", backing.to_str().unwrap()])
            .trim()
            .to_string();
        LoopDev { dev, mount }
    }

    /// `loop0` for `/dev/loop0`.
    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
        let _ = Command::new("umount").arg(&self.mount).output();
    }
}

/// The kernel's count of write requests a disk completed
/// (`/sys/block/<name>/stat`, field 5): zone management and write-zeroes
/// requests count as writes, and only the test writes to these disks.
fn writes_completed(name: &str) -> u64 {
    let path = format!("/sys/block/{name}/stat");
    let stat = std::fs::read_to_string(&path).unwrap();
    stat.split_whitespace()
        .nth(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{path}: {stat:?}"))
}

/// Zone management on `DEV` (one request per zone and command, then a
/// reset of every zone) and write-zeroes on `loop_dev`, while dd writes
/// zones sequentially in the background.
fn zone_load(loop_dev: &str) {
    let (first, zones) = WRITTEN_ZONES;
    let writer = std::thread::spawn(move || {
        for zone in first..first + zones {
            run(
                "dd",
                &[
                    "if=/dev/zero",
                    &format!("of={DEV}"),
                    "bs=64k",
                    &format!("count={}", ZONE_MIB * 16),
                    &format!("seek={}", zone * ZONE_MIB * 16),
                    "oflag=direct",
                ],
            );
        }
    });
    for zone in 0..MANAGED_ZONES {
        let offset = (zone * ZONE_SECTORS).to_string();
        for command in ["open", "close", "finish", "reset"] {
            run("blkzone", &[command, "-o", &offset, "-c", "1", DEV]);
        }
    }
    for i in 0..WRITE_ZEROES {
        let offset = (i << 20).to_string();
        // A punched hole is a write-zeroes request that may unmap: loop
        // passes it on to its file.
        run(
            "fallocate",
            &[
                "--punch-hole",
                "--offset",
                &offset,
                "--length",
                "1MiB",
                loop_dev,
            ],
        );
    }
    writer.join().expect("the dd writer panicked");
    // Every zone at once: one REQ_OP_ZONE_RESET_ALL.
    run("blkzone", &["reset", DEV]);
}

/// (action, RWBS) of every event line of `text`, counted.
fn action_rwbs_counts(text: &str) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for f in event_lines(text) {
        *counts
            .entry((f[5].to_string(), f[6].to_string()))
            .or_default() += 1;
    }
    counts
}

/// Events whose RWBS (after a flush's `F`) starts with `op`.
fn count_rwbs(counts: &BTreeMap<(String, String), u64>, action: &str, op: &str) -> u64 {
    counts
        .iter()
        .filter(|((a, rwbs), _)| {
            (action == "*" || a == action) && rwbs.trim_start_matches('F').starts_with(op)
        })
        .map(|(_, n)| n)
        .sum()
}

/// Completions of writes as the kernel counts them (`writes_completed`):
/// data writes, zone management and write-zeroes (RWBS starting with W or
/// Z after a flush's F).
fn write_completions(counts: &BTreeMap<(String, String), u64>) -> u64 {
    count_rwbs(counts, "C", "W") + count_rwbs(counts, "C", "Z")
}

#[test]
fn relay_blktrace_records_zone_management_and_write_zeroes() {
    if !in_vm() {
        return;
    }
    let zone_size = format!("zone_size={ZONE_MIB}");
    let _null = NullBlk::load_with(&["gb=1", "bs=4096", "zoned=1", &zone_size, "zone_nr_conv=0"]);
    let loop_dev = LoopDev::attach();
    let devices = ["-d", DEV, "-d", &loop_dev.dev];
    let dir = fresh_dir("tools-zoned");
    let before = (
        writes_completed("nullb0"),
        writes_completed(loop_dev.name()),
    );
    let tracer = Tracer::start(&bin("relay-blktrace"), &devices, &dir, None);
    zone_load(&loop_dev.dev);
    let stderr = tracer.stop();
    let kernel = (
        writes_completed("nullb0") - before.0,
        writes_completed(loop_dev.name()) - before.1,
    );
    let summary = std::fs::read_to_string(dir.join("relay-blktrace.stdout")).unwrap();
    assert!(
        summary.contains(expected_trace_line()) && !summary.contains("You have"),
        "{summary}\n{stderr}"
    );
    // Both traces have the kernel's newest ABI; a kernel without
    // BLKTRACESETUP2 refuses it with ENOTTY from the block layer (null_blk
    // has no ioctl method) or EINVAL from a driver's own handler (loop).
    let expected = if kernel_has_v2() {
        ["BLKTRACESETUP2\n", "BLKTRACESETUP2\n"]
    } else {
        [
            "no BLKTRACESETUP2 (ENOTTY)\n",
            "no BLKTRACESETUP2 (EINVAL)\n",
        ]
    };
    for (name, line) in ["nullb0", loop_dev.name()].into_iter().zip(expected) {
        let section = summary
            .split("=== ")
            .find(|s| s.starts_with(&format!("{name} ===")))
            .unwrap_or_else(|| panic!("no summary of {name}: {summary}"));
        assert!(
            section.contains(line),
            "{name}: expected {line:?}: {section}"
        );
    }

    let null_text = relay_parse_text(&dir, "nullb0");
    let loop_text = relay_parse_text(&dir, loop_dev.name());
    let null = action_rwbs_counts(&null_text);
    let lo = action_rwbs_counts(&loop_text);
    eprintln!(
        "write completions (nullb0, {}): kernel {kernel:?}, recording {:?}\nnullb0: {null:?}\n{}: {lo:?}",
        loop_dev.dev,
        (write_completions(&null), write_completions(&lo)),
        loop_dev.dev
    );
    // Every completed write request, zone management and write-zeroes
    // included, is in the recording, as many as the kernel counted.
    assert_eq!(
        (write_completions(&null), write_completions(&lo)),
        kernel,
        "write completions in the recording (nullb0, {}) differ from the kernel's count\n{summary}",
        loop_dev.dev
    );

    if !kernel_has_v2() {
        // v1: zone management and write-zeroes are writes like any other,
        // and relay-blktrace still records what Debian's blktrace records.
        // Reads are left out: udev probes a device after a writer closed it,
        // whenever it gets to it.
        let reference_dir = fresh_dir("tools-zoned-blktrace");
        let blktrace = Tracer::start(&debian_blktrace(), &devices, &reference_dir, None);
        zone_load(&loop_dev.dev);
        blktrace.stop();
        for name in ["nullb0", loop_dev.name()] {
            let ours = blkparse(&dir, name, None).writes();
            assert!(!ours.is_empty(), "{name}: no writes recorded");
            assert_eq!(
                ours,
                blkparse(&reference_dir, name, None).writes(),
                "{name}: blkparse reads different writes from relay-blktrace's recording \
                 of the zone load than from blktrace's"
            );
        }
        return;
    }

    // v2: every zone management and write-zeroes request is in the
    // recording, queued and completed, named as the kernel names them.
    for (op, issued) in [
        ("ZO", MANAGED_ZONES),
        ("ZC", MANAGED_ZONES),
        ("ZF", MANAGED_ZONES),
        ("ZRA", 1),
    ] {
        for action in ["Q", "C"] {
            assert_eq!(
                count_rwbs(&null, action, op),
                issued,
                "{action} {op} events on nullb0: {null:?}"
            );
        }
    }
    for action in ["Q", "C"] {
        // "ZR" also starts "ZRA": the resets of one zone are the rest.
        assert_eq!(
            count_rwbs(&null, action, "ZR") - count_rwbs(&null, action, "ZRA"),
            MANAGED_ZONES,
            "{action} ZR events on nullb0: {null:?}"
        );
        assert_eq!(
            count_rwbs(&lo, action, "WZ"),
            WRITE_ZEROES,
            "{action} WZ events on {}: {lo:?}",
            loop_dev.dev
        );
    }

    // As v1, the recording loses exactly those events, and says so; what
    // is left blkparse reads.
    for (name, text, counts) in [
        ("nullb0", &null_text, &null),
        (loop_dev.name(), &loop_text, &lo),
    ] {
        let v2_only = count_rwbs(counts, "*", "Z")
            + count_rwbs(counts, "*", "WZ")
            + counts
                .iter()
                .filter(|((a, _), _)| a == "ZP" || a == "ZU")
                .map(|(_, n)| n)
                .sum::<u64>();
        let report = convert_to_v1(&dir, name, &format!("{name}-v1"));
        eprintln!("{name}: {report}");
        assert!(
            report.contains(&format!(
                "{v2_only} events v1 cannot carry are not in the v1 output"
            )),
            "{name}: {v2_only} v2-only events in the recording; convert reports: {report}"
        );
        let converted = blkparse(&dir, &format!("{name}-v1"), None);
        let all = Parsed::from_text(text).entries;
        assert_eq!(
            converted.entries,
            all - v2_only,
            "{name}: blkparse of the v1 conversion\n{report}"
        );
    }
}

// ---- live output -------------------------------------------------------------

/// `tracer args | consumer consumer_args` in `dir`, the consumer's output
/// into `dir/consumer.stdout` (returned) and its errors into
/// `dir/consumer.stderr`; returns once the tracer traces.
fn piped(
    tracer: &Path,
    args: &[&str],
    consumer: &Path,
    consumer_args: &[&str],
    dir: &Path,
) -> (Tracer, Reaped, PathBuf) {
    let output = dir.join("consumer.stdout");
    let mut tracer = Tracer::spawn(tracer, args, dir, Stdio::piped());
    let pipe = tracer
        .child
        .stdout
        .take()
        .expect("the tracer's stdout pipe");
    let reader = Reaped(
        Command::new(consumer)
            .args(consumer_args)
            .current_dir(dir)
            .stdin(pipe)
            .stdout(File::create(&output).unwrap())
            .stderr(File::create(dir.join("consumer.stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "running {} (installed by `cargo xtask setup`): {e}",
                    consumer.display()
                )
            }),
    );
    (tracer.wait_tracing(), reader, output)
}

/// What reads `relay-blktrace -o -` in the live test.
#[derive(Debug, Clone, Copy)]
enum Consumer {
    /// Debian's blkparse -i - (v1 records: --to v1 where the kernel records v2).
    Blkparse,
    /// relay-blktrace parse -i -, either version.
    RelayParse,
}

/// `relay-blktrace -d DEV -o - | consumer` on a quiet device: each direct
/// read shows in the consumer's output while tracing runs. The requirement
/// is about a second (relay-blktrace hands over a partly filled sub-buffer
/// after 0.5 s without a full one); the test only bounds it at 10 s per
/// read, so that a slow VM cannot fail it, and reports what it saw.
fn live_output_shows_each_io(consumer: Consumer) {
    let dir = fresh_dir(&format!("tools-live-{consumer:?}"));
    let mut args = vec!["-d", DEV, "-o", "-"];
    let consumer_cmd: (PathBuf, Vec<&str>) = match consumer {
        Consumer::Blkparse => {
            if kernel_has_v2() {
                args.extend(["--to", "v1"]);
            }
            (PathBuf::from("blkparse"), vec!["-i", "-"])
        }
        Consumer::RelayParse => (bin("relay-blktrace"), vec!["parse", "-i", "-"]),
    };
    let (tracer, mut reader, output) = piped(
        &bin("relay-blktrace"),
        &args,
        &consumer_cmd.0,
        &consumer_cmd.1,
        &dir,
    );
    let mut shown_after = Vec::new();
    for block in BTRACE_BLOCKS {
        let issued = Instant::now();
        run(
            "dd",
            &[
                &format!("if={DEV}"),
                "of=/dev/null",
                "bs=4k",
                "count=1",
                "iflag=direct",
                &format!("skip={block}"),
            ],
        );
        let seen = loop {
            let text = std::fs::read_to_string(&output).unwrap_or_default();
            if dd_queued_sectors(&text).contains(&(block * 8)) {
                break true;
            }
            if issued.elapsed() > Duration::from_secs(10) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !seen {
            let stderr = tracer.stderr_text();
            panic!(
                "{consumer:?}: the read of block {block} did not show within 10 s while \
                 relay-blktrace traced (earlier reads showed after {shown_after:?})\n\
                 output so far:\n{}\nrelay-blktrace's stderr:\n{stderr}",
                std::fs::read_to_string(&output).unwrap_or_default()
            );
        }
        shown_after.push(issued.elapsed());
    }
    eprintln!("{consumer:?}: each read showed after {shown_after:?}");
    let stderr = tracer.stop();
    let status = wait_within(&mut reader.0, "the consumer", Duration::from_secs(60));
    assert!(
        status.success(),
        "{consumer:?} failed ({status}): {}\nrelay-blktrace: {stderr}",
        std::fs::read_to_string(dir.join("consumer.stderr")).unwrap_or_default()
    );
}

#[test]
fn relay_blktrace_shows_each_io_while_tracing() {
    if !in_vm() {
        return;
    }
    let _null = NullBlk::load();
    live_output_shows_each_io(Consumer::Blkparse);
    live_output_shows_each_io(Consumer::RelayParse);
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
    let (blktrace, mut blkparse, output) = piped(
        &blktrace_bin,
        &["-d", DEV, "-o", "-"],
        Path::new("blkparse"),
        &["-i", "-"],
        &dir,
    );

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
        std::fs::read_to_string(dir.join("consumer.stderr")).unwrap_or_default()
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
