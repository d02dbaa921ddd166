//! The relay-apps examples, each pair end to end: its kernel module
//! (kernel-patches/src/samples/relay/) and its user program (relay-klog,
//! tools/relay-examples), checking what the program outputs.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use relay_vm_tests::{bin, in_vm, online_cpus, write_control, Modules};

const DEBUGFS: &str = "/sys/kernel/debug";

/// A user program recording in the background.
struct Recorder {
    name: String,
    child: Child,
    /// Its stderr, line by line, from a thread; disconnected at EOF.
    lines: Receiver<String>,
    /// Its stderr so far.
    seen: String,
}

/// What a stopped recorder printed.
struct Stopped {
    stdout: String,
    stderr: String,
}

/// How long a recorder may take to say something expected; only keeps a
/// program that never says it from hanging the suite.
const SAY_TIMEOUT: Duration = Duration::from_secs(60);

impl Recorder {
    /// Starts `name args` (stdout piped if `pipe_stdout`) and waits until
    /// its first stderr line says that it reads.
    fn start(name: &str, args: &[&str], pipe_stdout: bool) -> Recorder {
        let mut child = Command::new(bin(name))
            .args(args)
            .stdout(if pipe_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut rec = Recorder {
            name: name.into(),
            child,
            lines,
            seen: String::new(),
        };
        // Every example program says so once its channel is open.
        rec.wait_for("until Ctrl-C");
        rec
    }

    /// The next stderr line, or None at EOF; panics after `SAY_TIMEOUT`.
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(SAY_TIMEOUT) {
            Ok(line) => {
                self.seen.push_str(&line);
                self.seen.push('\n');
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{} said nothing for {SAY_TIMEOUT:?}; stderr so far:\n{}",
                self.name, self.seen
            ),
        }
    }

    /// Reads stderr until a line contains `needle`; panics if the program
    /// ends first or goes quiet.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let Some(line) = self.next_line() else {
                panic!(
                    "{} ended without saying {needle:?}; stderr:\n{}",
                    self.name, self.seen
                );
            };
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// SIGINT, then waits; panics unless it exits successfully.
    fn stop(mut self) -> Stopped {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGINT,
        )
        .expect("sending SIGINT");
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout)
                .unwrap_or_else(|e| panic!("reading {}'s stdout: {e}", self.name));
        }
        while self.next_line().is_some() {}
        let status = self.child.wait().expect("waiting for the recorder");
        assert!(
            status.success(),
            "{} failed after SIGINT ({status}); stderr:\n{}",
            self.name,
            self.seen
        );
        Stopped {
            stdout,
            stderr: std::mem::take(&mut self.seen),
        }
    }
}

/// A test that failed while its recorder ran does not leave it holding the
/// channel (its modules are unloaded next).
impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a program to its end; panics unless it succeeds.
fn run_ok(name: &str, args: &[&str]) -> Output {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_text(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8(data).unwrap_or_else(|e| {
        panic!(
            "{}: not text (a header or stale bytes leaked into the output?): {e}",
            path.display()
        )
    })
}

fn read_number(path: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path}: {text:?} is not a number"))
}

/// Polls `cond` every 20 ms until it holds; the deadline only keeps a
/// broken module from hanging the suite, it measures nothing.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json(text: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}):\n{text}"))
}

// ---- klog ----------------------------------------------------------------

#[test]
fn klog_records_from_process_softirq_and_hardirq_context_all_arrive() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("headers=1");
    let dir = fresh_dir("relay-example-klog");
    let rec = Recorder::start("relay-klog", &["-o", dir.to_str().unwrap()], false);
    const N: u64 = 300;
    write_control(format!("{DEBUGFS}/klog_gen/run"), &format!("{N} all"));
    rec.stop();

    let out = run_ok("relay-klog", &["decode", dir.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).expect("decode prints text");
    // "<secs>.<ns> cpu<C> <ctx> klog_gen cpu=<C> ctx=<ctx> seq=<S>"
    let mut seqs: BTreeMap<(u32, String), Vec<u64>> = BTreeMap::new();
    let mut last_time = 0.0f64;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 7, "unexpected decoded record {line:?}");
        let time: f64 = f[0].parse().expect("time");
        assert!(
            time >= last_time,
            "decode output not in time order at {line:?}"
        );
        last_time = time;
        let cpu: u32 = f[1]
            .strip_prefix("cpu")
            .and_then(|c| c.parse().ok())
            .expect("cpu");
        let ctx = f[2];
        assert_eq!(f[3], "klog_gen", "{line:?}");
        assert_eq!(
            f[4],
            format!("cpu={cpu}"),
            "header and text disagree on the CPU: {line:?}"
        );
        assert_eq!(
            f[5],
            format!("ctx={ctx}"),
            "header and text disagree on the context: {line:?}"
        );
        let seq = f[6]
            .strip_prefix("seq=")
            .and_then(|s| s.parse().ok())
            .expect("seq");
        seqs.entry((cpu, ctx.to_string())).or_default().push(seq);
    }
    for cpu in online_cpus() {
        for ctx in ["process", "softirq", "hardirq"] {
            let got = seqs
                .get(&(cpu, ctx.to_string()))
                .unwrap_or_else(|| panic!("no {ctx} records from cpu {cpu}; decoded:\n{text}"));
            assert!(
                got.iter().copied().eq(0..N),
                "cpu {cpu} {ctx}: {} records, expected seq 0..{N} in order",
                got.len()
            );
        }
    }
    assert_eq!(
        seqs.len(),
        online_cpus().len() * 3,
        "records from elsewhere: {seqs:?}"
    );
}

// ---- read ----------------------------------------------------------------

#[test]
fn read_example_gets_every_record_in_order_with_read_alone() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[("relay_app", ""), ("relay_read", "")]);
    let dir = fresh_dir("relay-example-read");
    let rec = Recorder::start("relay-example-read", &["-o", dir.to_str().unwrap()], false);
    // About 90 KiB per CPU: several 16 KiB sub-buffers, each ending in
    // padding that read(2) must skip.
    const N: u64 = 1500;
    write_control(format!("{DEBUGFS}/relay_read/run"), &N.to_string());
    let stopped = rec.stop();
    assert_eq!(
        read_number(&format!("{DEBUGFS}/relay_read/dropped")),
        0,
        "the channel refused records"
    );
    for cpu in online_cpus() {
        let text = read_text(&dir.join(format!("cpu{cpu}")));
        let expected: Vec<String> = (0..N)
            .map(|seq| {
                format!(
                    "relay_read cpu={cpu} seq={seq} {}",
                    "x".repeat(seq as usize % 64)
                )
            })
            .collect();
        let got: Vec<&str> = text.lines().collect();
        if got != expected {
            let first_bad = got.iter().zip(&expected).position(|(g, e)| g != e);
            panic!(
                "cpu {cpu}: {} lines, expected {N}; first difference at {first_bad:?}: {:?}\nstderr:\n{}",
                got.len(),
                first_bad.map(|i| got[i]),
                stopped.stderr
            );
        }
    }
}

// ---- readtest ------------------------------------------------------------

fn readtest(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "--event-n", "5000"];
    all.extend_from_slice(args);
    let out = run_ok("relay-example-readtest", &all);
    let report = json(&String::from_utf8_lossy(&out.stdout), "the readtest report");
    assert_eq!(report["ok"], true, "a check failed: {report:#}");
    let (read, lost, written) = (
        report["read"].as_u64().unwrap(),
        report["lost"].as_u64().unwrap(),
        report["written"].as_u64().unwrap(),
    );
    assert_eq!(read + lost, written, "{report:#}");
    assert_eq!(written, 5000 * online_cpus().len() as u64, "{report:#}");
    report
}

#[test]
fn readtest_accounts_for_every_event_without_overwrite() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[("relay_app", ""), ("relay_readtest", "")]);
    // Read while the CPUs write: whatever is lost must be what was dropped.
    readtest(&[]);
    // Read only afterwards: 4 x 16 KiB per CPU hold 1020 of the 5000 events.
    let report = readtest(&["--wait-done"]);
    assert!(
        report["lost"].as_u64().unwrap() > 0,
        "nothing lost: {report:#}"
    );
    assert_eq!(report["lost"], report["dropped"], "{report:#}");
    assert_eq!(
        report["read"].as_u64().unwrap(),
        online_cpus().len() as u64 * 4 * report["events_per_subbuf"].as_u64().unwrap(),
        "a full no-overwrite buffer keeps exactly its first sub-buffers: {report:#}"
    );
}

#[test]
fn readtest_accounts_for_every_event_with_overwrite() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[("relay_app", ""), ("relay_readtest", "")]);
    readtest(&["--overwrite"]);
    let report = readtest(&["--overwrite", "--wait-done"]);
    assert!(
        report["lost"].as_u64().unwrap() > 0,
        "nothing lost: {report:#}"
    );
    assert_eq!(report["dropped"], 0, "{report:#}");
    for cpu in report["cpus"].as_array().unwrap() {
        assert!(
            cpu["lost_subbufs"].as_u64().unwrap() > 0,
            "the writer did not lap the reader: {report:#}"
        );
    }
}

// ---- exported-relayfile --------------------------------------------------

/// Sequence numbers per CPU of `relay_exported cpu=C seq=S` lines.
fn exported_seqs(text: &str) -> BTreeMap<u32, Vec<u64>> {
    let mut seqs: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        let (cpu, seq) = line
            .strip_prefix("relay_exported cpu=")
            .and_then(|rest| rest.split_once(" seq="))
            .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)))
            .unwrap_or_else(|| panic!("unexpected record {line:?}"));
        seqs.entry(cpu).or_default().push(seq);
    }
    seqs
}

#[test]
fn exported_per_cpu_and_global_channels_get_the_same_records() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[("relay_app", ""), ("relay_exported", "")]);
    let dir = fresh_dir("relay-example-exported");
    let rec = Recorder::start(
        "relay-example-exported",
        &["-o", dir.to_str().unwrap()],
        false,
    );
    const N: u64 = 1000;
    write_control(format!("{DEBUGFS}/relay_exported/run"), &N.to_string());
    let stopped = rec.stop();
    assert!(
        stopped.stderr.contains("global: 1 buffers"),
        "the global channel is not one buffer: {}",
        stopped.stderr
    );
    let cpus = online_cpus();
    for &cpu in &cpus {
        let seqs = exported_seqs(&read_text(&dir.join(format!("percpu/cpu{cpu}"))));
        assert_eq!(
            seqs.keys().copied().collect::<Vec<_>>(),
            vec![cpu],
            "percpu/cpu{cpu} holds other CPUs' records"
        );
        assert!(
            seqs[&cpu].iter().copied().eq(0..N),
            "percpu/cpu{cpu}: gap or disorder"
        );
    }
    let global = exported_seqs(&read_text(&dir.join("global/cpu0")));
    assert_eq!(
        global.keys().copied().collect::<Vec<_>>(),
        cpus,
        "global: CPUs missing"
    );
    for (cpu, seqs) in &global {
        assert!(
            seqs.iter().copied().eq(0..N),
            "global: cpu {cpu}'s records gap or disorder"
        );
    }
    assert!(
        !dir.join("global/cpu1").exists(),
        "the global channel was recorded as per-CPU buffers"
    );
}

// ---- reserve -------------------------------------------------------------

/// The writer whose reservation relay_reserve holds unfilled. Released on
/// drop too, so that a failing test does not leave it keeping the module
/// busy for the tests after it.
struct HeldWriter {
    stall: String,
    child: Option<Child>,
}

impl HeldWriter {
    /// Lets the held write(2) fill and commit its record; its exit status.
    fn release(&mut self) -> std::process::ExitStatus {
        write_control(&self.stall, "0");
        let mut child = self.child.take().expect("released once");
        child.wait().expect("waiting for the held writer")
    }
}

impl Drop for HeldWriter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::fs::write(&self.stall, "0");
            let _ = child.wait();
        }
    }
}

#[test]
fn reserve_reader_takes_a_sub_buffer_only_once_its_slots_are_filled() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[
        ("relay_app", ""),
        ("relay_reserve", "subbuf_size=4096 n_subbufs=4"),
    ]);
    let ctl = |name: &str| format!("{DEBUGFS}/relay_reserve/{name}");
    let rec = Recorder::start("relay-example-reserve", &[], true);

    // A writer on CPU 0 reserves room for its record and holds it unfilled.
    write_control(ctl("stall"), "1");
    let mut held = HeldWriter {
        stall: ctl("stall"),
        child: Some(
            Command::new("taskset")
                .args(["-c", "0", "sh", "-c"])
                .arg(format!("echo 'held record' > {}", ctl("write")))
                .spawn()
                .expect("starting the held writer"),
        ),
    };
    wait_until("the held reservation", || read_number(&ctl("held")) == 1);

    // Later records on CPU 0 fill and close that sub-buffer (about 6 KiB).
    const N: usize = 60;
    let filler = |i: usize| format!("filler {i} {}", "x".repeat(90));
    let script: String = (0..N)
        .map(|i| format!("echo '{}' > {}\n", filler(i), ctl("write")))
        .collect();
    let status = Command::new("taskset")
        .args(["-c", "0", "sh", "-c", &script])
        .status()
        .expect("running the filler writer");
    assert!(status.success(), "filler writes failed");

    // The reader sees the closed sub-buffer with a slot missing, and waits.
    let mut rec = rec;
    let line = rec.wait_for("waiting for its writers");
    assert!(line.contains("cpu0 sub-buffer 0"), "unexpected: {line}");

    assert!(held.release().success(), "the held write failed");
    let stopped = rec.stop();

    let cpu0: Vec<&str> = stopped
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("cpu0 "))
        .collect();
    let mut expected = vec!["held record".to_string()];
    expected.extend((0..N).map(filler));
    assert_eq!(
        cpu0, expected,
        "cpu0's records, in reservation order, with the held one filled\nstderr:\n{}",
        stopped.stderr
    );
    assert_eq!(
        stopped.stdout.lines().count(),
        N + 1,
        "records from elsewhere:\n{}",
        stopped.stdout
    );
}

// ---- overwrite (flight recorder) -----------------------------------------

fn produced(cpu: u32) -> u64 {
    let path = format!("{DEBUGFS}/relay_flight/cpu{cpu}.produced");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    u64::from_ne_bytes(data[..8].try_into().expect("a size_t"))
}

#[test]
fn flight_recorder_snapshot_keeps_the_newest_records_up_to_the_trigger() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[("relay_app", ""), ("relay_flight", "")]);
    // Let every CPU's writer lap its 4 sub-buffers a few times.
    for cpu in online_cpus() {
        wait_until(&format!("cpu{cpu} to lap its buffer"), || {
            produced(cpu) > 12
        });
    }
    let marker = format!("test marker {}", std::process::id());
    write_control(format!("{DEBUGFS}/relay_flight/trigger"), &marker);

    let dir = fresh_dir("relay-example-flight");
    let out = run_ok(
        "relay-reader",
        &[
            "snapshot",
            "--json",
            "-o",
            dir.to_str().unwrap(),
            &format!("{DEBUGFS}/relay_flight/cpu"),
        ],
    );
    let summary = json(
        &String::from_utf8_lossy(&out.stderr),
        "the snapshot summary",
    );
    for c in summary["cpus"].as_array().expect("cpus") {
        assert!(
            c["lost_subbufs"].as_u64().unwrap() > 0,
            "nothing overwritten: {summary:#}"
        );
    }

    let out = run_ok(
        "relay-example-overwrite",
        &["--json", dir.to_str().unwrap()],
    );
    let report = json(
        &String::from_utf8_lossy(&out.stdout),
        "the overwrite report",
    );
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["trigger"]["message"], marker.as_str(), "{report:#}");
    assert_eq!(report["trigger"]["newest"], true, "{report:#}");
    assert_eq!(
        report["trigger"]["before"].as_array().map(Vec::len),
        Some(5),
        "no history before the trigger: {report:#}"
    );
    for c in report["cpus"].as_array().unwrap() {
        assert_eq!(c["contiguous"], true, "{report:#}");
        assert!(
            c["first"].as_u64().unwrap() > 0,
            "the oldest records survived: {report:#}"
        );
    }
    assert_eq!(
        report["cpus"].as_array().unwrap().len(),
        online_cpus().len()
    );
}

// ---- tprintk -------------------------------------------------------------

/// Raises the console loglevel for the test and puts it back after.
struct ConsoleLevel(String);

impl ConsoleLevel {
    fn raise() -> ConsoleLevel {
        let old =
            std::fs::read_to_string("/proc/sys/kernel/printk").expect("reading printk levels");
        let level = old
            .split_whitespace()
            .next()
            .expect("console loglevel")
            .to_string();
        write_control("/proc/sys/kernel/printk", "8");
        ConsoleLevel(level)
    }
}

impl Drop for ConsoleLevel {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/printk", &self.0);
    }
}

#[test]
fn tprintk_copies_kmsg_lines_into_the_channel_in_order() {
    if !in_vm() {
        return;
    }
    // Consoles, this one included, print only messages below the console
    // loglevel, which the VM's kernel command line sets to 1.
    let _level = ConsoleLevel::raise();
    let _modules = Modules::load(&[("relay_app", ""), ("relay_tprintk", "")]);
    let dir = fresh_dir("relay-example-tprintk");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("printk.log");
    let rec = Recorder::start(
        "relay-example-tprintk",
        &["-o", log.to_str().unwrap()],
        false,
    );
    let markers: Vec<String> = (0..3)
        .map(|i| format!("relay-tprintk marker {} #{i}", std::process::id()))
        .collect();
    for m in &markers {
        write_control("/dev/kmsg", &format!("<4>{m}\n"));
    }
    rec.stop();

    let copy = read_text(&log);
    let positions: Vec<usize> = markers
        .iter()
        .map(|m| {
            copy.find(m.as_str())
                .unwrap_or_else(|| panic!("{m:?} is not in the channel's copy:\n{copy}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "markers out of order:\n{copy}"
    );
    let dmesg = Command::new("dmesg").output().expect("running dmesg");
    let dmesg = String::from_utf8_lossy(&dmesg.stdout);
    for m in &markers {
        assert!(dmesg.contains(m.as_str()), "{m:?} is not in dmesg");
        // The console's line is dmesg's, with the same timestamp when
        // printk.time is on.
        let line = copy.lines().find(|l| l.contains(m.as_str())).unwrap();
        assert_eq!(
            line.split_once("] ").map_or(line, |(_, text)| text),
            m,
            "the copy's line {line:?} has more than the message"
        );
        if line.starts_with('[') {
            assert!(
                dmesg.lines().any(|d| d == line),
                "the copy's line {line:?} is not dmesg's"
            );
        }
    }
}

// ---- kleak ---------------------------------------------------------------

#[test]
fn kleak_finds_exactly_the_planted_leak() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::load(&[("relay_app", ""), ("relay_kleak", ""), ("kleak_leaker", "")]);
    let dir = fresh_dir("relay-example-kleak");
    let rec = Recorder::start(
        "relay-example-kleak",
        &["record", "-o", dir.to_str().unwrap()],
        false,
    );
    const LEAKED: u64 = 7;
    const SIZE: u64 = 1337;
    write_control(
        format!("{DEBUGFS}/kleak_leaker/leak"),
        &format!("{LEAKED} {SIZE}"),
    );
    write_control(format!("{DEBUGFS}/kleak_leaker/churn"), "50 700");
    let stopped = rec.stop();
    assert!(
        stopped.stderr.contains(" 0 dropped"),
        "records dropped: {}",
        stopped.stderr
    );

    let out = run_ok(
        "relay-example-kleak",
        &["report", "--json", dir.to_str().unwrap()],
    );
    let report = json(&String::from_utf8_lossy(&out.stdout), "the kleak report");
    assert_eq!(report["missing"], 0, "records missing: {report:#}");
    let sites = report["sites"].as_array().expect("sites");
    let site = |func: &str| -> &serde_json::Value {
        let found: Vec<&serde_json::Value> = sites
            .iter()
            .filter(|s| {
                s["site"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("{func}+"))
            })
            .collect();
        assert_eq!(found.len(), 1, "{func}: call sites {found:#?}");
        found[0]
    };
    let leak = site("kleak_leaker_leak");
    assert!(
        leak["site"].as_str().unwrap().ends_with("[kleak_leaker]"),
        "not symbolised with its module: {leak}"
    );
    assert_eq!(leak["allocs"], LEAKED, "{leak}");
    assert_eq!(leak["frees"], 0, "{leak}");
    assert_eq!(leak["outstanding"], LEAKED, "{leak}");
    assert_eq!(leak["outstanding_req"], LEAKED * SIZE, "{leak}");
    let alloc = leak["outstanding_alloc"].as_u64().unwrap();
    assert!(
        alloc >= LEAKED * SIZE && alloc % LEAKED == 0,
        "allocated bytes: {leak}"
    );
    let churn = site("kleak_leaker_churn");
    assert_eq!(churn["allocs"], 50, "{churn}");
    assert_eq!(churn["frees"], 50, "{churn}");
    assert_eq!(churn["outstanding"], 0, "{churn}");
    // No other site kept objects of that size.
    let others: Vec<&serde_json::Value> = sites
        .iter()
        .filter(|s| !std::ptr::eq(*s, leak))
        .filter(|s| {
            s["outstanding_req"]
                .as_u64()
                .is_some_and(|r| r > 0 && r % SIZE == 0)
        })
        .collect();
    assert!(
        others.is_empty(),
        "other sites look like the leak: {others:#?}"
    );
}
