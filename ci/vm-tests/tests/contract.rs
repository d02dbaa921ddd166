//! `relay_contract.ko` (kernel-patches/src/samples/relay/relay_contract.c):
//! the client behaviours relay.rst allows that the example modules do not
//! use, each read by every reader the running kernel offers for it, every
//! record checked.
//!
//! The readers: `cat` of each buffer file (plain read(2) to EOF, after the
//! client's relay_flush()), `relay-reader record --mode read` and, where the
//! kernel answers the relay ioctls and the file is not behind debugfs' full
//! proxy, `relay-reader record --mode mmap`. relay-reader takes the partly
//! filled sub-buffer itself: through `RELAY_IOC_FLUSH` (the module's
//! `flush_cb=1`) on kernels with the ioctls, and a stock kernel's read(2)
//! returns it anyway. Every reader gets a freshly loaded channel, since
//! reading consumes.
//!
//! Records are the readtest events (`relay_readtest_event`): per CPU,
//! sequence numbers strictly increasing, none twice, every payload intact,
//! each record the size it was written with; received plus what the client
//! counted as refused equals what it wrote.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command};
use std::time::{Duration, Instant};

use relay_readtest_event::{Event, HEADER_LEN};
use relay_vm_tests::{
    bin, in_vm, online_cpus, patched_kernel, start_recording, write_control, Modules,
};

const DIR: &str = "/sys/kernel/debug/relay_contract";
const CHANNEL: &str = "/sys/kernel/debug/relay_contract/cpu";
/// The padding word a `header=1` channel starts every sub-buffer with.
const HDR: usize = 4;
/// Longest a reader may take; only keeps a hanging one from stalling the suite.
const READER_TIMEOUT: &str = "60";

/// How a test reads the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `cat FILE` per buffer file, after writing 1 to `flush`.
    Cat,
    /// `relay-reader record --mode read`.
    Read,
    /// `relay-reader record --mode mmap`.
    Mmap,
}

impl Via {
    /// Every reader that can read a channel on this kernel: mmap needs the
    /// ioctls and a file outside debugfs' full proxy.
    fn all(proxy: bool) -> Vec<Via> {
        let mut all = vec![Via::Cat, Via::Read];
        if patched_kernel() && !proxy {
            all.push(Via::Mmap);
        }
        all
    }

    fn mode(self) -> &'static str {
        match self {
            Via::Cat => "cat",
            Via::Read => "read",
            Via::Mmap => "mmap",
        }
    }
}

/// Runs `body` once per reader, each in its own channel, and fails naming
/// every reader that failed (not only the first).
fn for_each_reader(proxy: bool, body: impl Fn(Via)) {
    let mut failed = Vec::new();
    for via in Via::all(proxy) {
        eprintln!("---- reader: {}", via.mode());
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| body(via))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", via.mode()));
        }
    }
    assert!(
        failed.is_empty(),
        "failed with {} reader(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// What the module says a CPU did (`written`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    written: u64,
    dropped_toobig: u64,
    dropped_full: u64,
}

/// A loaded relay_contract channel and the size of every record each CPU
/// was asked to write, by sequence number.
struct Contract {
    _modules: Modules,
    global: bool,
    header: bool,
    subbuf_size: usize,
    sizes: BTreeMap<u32, Vec<u32>>,
}

impl Contract {
    /// Loads the module with `params`; with `flush_cb=1` for relay-reader,
    /// which flushes through the ioctl where the kernel has it.
    fn load(params: &str, via: Via) -> Contract {
        let mut params = params.to_string();
        if via != Via::Cat {
            params.push_str(" flush_cb=1");
        }
        let _ = Command::new("rmmod").arg("relay_contract").output();
        let modules = Modules::load(&[("relay_contract", &params)]);
        let param = |name: &str| {
            params
                .split_whitespace()
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.parse::<usize>().expect("a numeric parameter"))
        };
        Contract {
            _modules: modules,
            global: param("global") == Some(1),
            header: param("header") == Some(1),
            subbuf_size: param("subbuf_size").unwrap_or(4096),
            sizes: online_cpus().into_iter().map(|c| (c, Vec::new())).collect(),
        }
    }

    fn ctl(&self, file: &str, value: &str) {
        write_control(format!("{DIR}/{file}"), value);
    }

    /// Every online CPU writes `n` records of `size` bytes.
    fn write(&mut self, n: u32, size: u32) {
        self.ctl("write", &format!("{n} {size}"));
        for sizes in self.sizes.values_mut() {
            sizes.extend(std::iter::repeat_n(size, n as usize));
        }
        for (cpu, c) in self.counts() {
            assert_eq!(
                c.written,
                self.sizes[&cpu].len() as u64,
                "cpu{cpu}: the module numbered a different count of records than it was asked for"
            );
        }
    }

    fn counts(&self) -> BTreeMap<u32, Counts> {
        let path = format!("{DIR}/written");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines()
            .map(|line| {
                let mut cpu = None;
                let mut c = Counts::default();
                for field in line.split_whitespace() {
                    let (k, v) = field
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{path}: bad line {line:?}"));
                    let v: u64 = v.parse().unwrap_or_else(|_| panic!("{path}: {line:?}"));
                    match k {
                        "cpu" => cpu = Some(v as u32),
                        "written" => c.written = v,
                        "dropped_toobig" => c.dropped_toobig = v,
                        "dropped_full" => c.dropped_full = v,
                        _ => panic!("{path}: unknown field in {line:?}"),
                    }
                }
                (cpu.expect("cpu= in every line"), c)
            })
            .collect()
    }

    /// The buffer files: cpu0 of a global channel, else one per online CPU.
    fn files(&self) -> Vec<(u32, PathBuf)> {
        let cpus = if self.global { vec![0] } else { online_cpus() };
        cpus.into_iter()
            .map(|c| (c, PathBuf::from(format!("{CHANNEL}{c}"))))
            .collect()
    }

    /// Reads the channel `via` and checks every record; per CPU, the
    /// sequence numbers received.
    fn read(&self, via: Via) -> BTreeMap<u32, Vec<u64>> {
        let raw = match via {
            Via::Cat => {
                self.ctl("flush", "1");
                self.files()
                    .into_iter()
                    .map(|(cpu, path)| (cpu, cat(&path, None)))
                    .collect()
            }
            Via::Read | Via::Mmap => record(via, &self.files()).0,
        };
        self.check(via, &raw)
    }

    /// Parses what a reader got from each buffer file (read(2) returns a
    /// `header=1` channel's padding words too; mmap mode strips them) and
    /// checks every record against what was written.
    fn check(&self, via: Via, raw: &BTreeMap<u32, Vec<u8>>) -> BTreeMap<u32, Vec<u64>> {
        let mut seqs: BTreeMap<u32, Vec<u64>> =
            self.sizes.keys().map(|&c| (c, Vec::new())).collect();
        for (&file_cpu, data) in raw {
            let what = format!(
                "{} of {CHANNEL}{file_cpu} ({} bytes)",
                via.mode(),
                data.len()
            );
            let events = if self.header && via != Via::Mmap {
                parse_headed(&what, data, self.subbuf_size)
            } else {
                parse_records(data).unwrap_or_else(|e| panic!("{what}: {e}"))
            };
            for ev in events {
                assert!(
                    self.global || ev.cpu == file_cpu,
                    "{what}: a record of cpu{} in the buffer of cpu{file_cpu}",
                    ev.cpu
                );
                let sizes = self
                    .sizes
                    .get(&ev.cpu)
                    .unwrap_or_else(|| panic!("{what}: a record of cpu{}, not online", ev.cpu));
                let size = sizes.get(ev.seq as usize).unwrap_or_else(|| {
                    panic!(
                        "{what}: cpu{} seq {}, but it wrote {} records",
                        ev.cpu,
                        ev.seq,
                        sizes.len()
                    )
                });
                assert_eq!(
                    ev.size, *size,
                    "{what}: cpu{} seq {} is {} bytes, written as {size}",
                    ev.cpu, ev.seq, ev.size
                );
                let got = seqs.get_mut(&ev.cpu).expect("online");
                if let Some(&last) = got.last() {
                    assert!(
                        ev.seq > last,
                        "{what}: cpu{} seq {} after seq {last}: {}",
                        ev.cpu,
                        ev.seq,
                        if ev.seq == last {
                            "received twice"
                        } else {
                            "out of order or received twice"
                        }
                    );
                }
                got.push(ev.seq);
            }
        }
        seqs
    }

    /// Checks the kernel's loss counters where the meta area can be mapped:
    /// writes refused and too big, as the module counted them.
    fn check_kernel_counters(&self, what: &str) {
        let counts = self.counts();
        for (cpu, path) in self.files() {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let Some(state) = relay_reader::kernel::query_state(&file, &path)
                .unwrap_or_else(|e| panic!("{what}: meta area: {e}"))
            else {
                return;
            };
            let mine: Vec<&Counts> = if self.global {
                counts.values().collect()
            } else {
                vec![&counts[&cpu]]
            };
            let full: u64 = mine.iter().map(|c| c.dropped_full).sum();
            let toobig: u64 = mine.iter().map(|c| c.dropped_toobig).sum();
            assert_eq!(
                (state.lost_full, state.lost_toobig),
                (full, toobig),
                "{what}: {}: the kernel counts (full, too big) = ({}, {}), the client saw ({full}, \
                 {toobig})",
                path.display(),
                state.lost_full,
                state.lost_toobig
            );
        }
    }
}

/// The records of `data`, each checked whole and intact.
fn parse_records(data: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let ev = Event::parse(&data[off..]).ok_or_else(|| {
            format!(
                "{} bytes left at offset {off}: less than a record header",
                data.len() - off
            )
        })?;
        let size = ev.size as usize;
        if size < HEADER_LEN || off + size > data.len() || !ev.payload_intact(&data[off..]) {
            return Err(format!(
                "a torn or corrupt record at offset {off} of {} ({ev:?}) after {:?}",
                data.len(),
                events.last()
            ));
        }
        events.push(ev);
        off += size;
    }
    Ok(events)
}

/// The records of read(2) output of a `header=1` channel: per sub-buffer,
/// its padding word, then `subbuf_size - 4 - padding` bytes of records.
/// The sub-buffer being written, last, has no padding word yet (its first
/// four bytes are whatever was there): it is the rest of the data.
fn parse_headed(what: &str, data: &[u8], subbuf_size: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut off = 0;
    while off < data.len() {
        assert!(
            off + HDR <= data.len(),
            "{what}: {} bytes at offset {off}, less than a sub-buffer header",
            data.len() - off
        );
        let padding = u32::from_ne_bytes(data[off..off + HDR].try_into().expect("4")) as usize;
        let rest = &data[off + HDR..];
        if let Some(len) = (subbuf_size - HDR).checked_sub(padding) {
            if len <= rest.len() {
                if let Ok(evs) = parse_records(&rest[..len]) {
                    events.extend(evs);
                    off += HDR + len;
                    continue;
                }
            }
        }
        match parse_records(rest) {
            Ok(evs) => events.extend(evs),
            Err(e) => panic!(
                "{what}: the sub-buffer at offset {off} has padding word {padding}, which does \
                 not delimit whole records, and is not the last one either: {e}"
            ),
        }
        break;
    }
    events
}

/// `cat` of `path` (or of `stdin`, a file opened earlier) to EOF, under a
/// timeout: read(2) must reach the end.
fn cat(path: &Path, stdin: Option<File>) -> Vec<u8> {
    let mut cmd = Command::new("timeout");
    cmd.args([READER_TIMEOUT, "cat"]);
    match stdin {
        Some(file) => cmd.stdin(file),
        None => cmd.arg(path),
    };
    let out = cmd.output().expect("running cat");
    assert!(
        out.status.code() != Some(124),
        "cat {} did not reach EOF in {READER_TIMEOUT} s: read(2) keeps returning data or blocks",
        path.display()
    );
    assert!(
        out.status.success(),
        "cat {} failed ({}): {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The JSON summary at the end of relay-reader's stderr.
fn summary(stderr: &str) -> serde_json::Value {
    let start = stderr
        .find("\n{")
        .map(|i| i + 1)
        .or_else(|| stderr.starts_with('{').then_some(0))
        .unwrap_or_else(|| panic!("no JSON summary in relay-reader's stderr:\n{stderr}"));
    serde_json::Deserializer::from_str(&stderr[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("relay-reader's summary is not JSON:\n{stderr}"))
}

/// What relay-reader saved per buffer file in `dir`.
fn saved(dir: &Path, files: &[(u32, PathBuf)]) -> BTreeMap<u32, Vec<u8>> {
    files
        .iter()
        .map(|&(cpu, _)| {
            (
                cpu,
                std::fs::read(dir.join(format!("cpu{cpu}"))).unwrap_or_default(),
            )
        })
        .collect()
}

/// `relay-reader record --mode <via> --json -w 1`: what it saved per buffer
/// file, and its summary.
fn record(via: Via, files: &[(u32, PathBuf)]) -> (BTreeMap<u32, Vec<u8>>, serde_json::Value) {
    let dir = fresh_dir(&format!("relay-contract-{}", via.mode()));
    let out = Command::new("timeout")
        .arg(READER_TIMEOUT)
        .arg(bin("relay-reader"))
        .args(["record", "--mode", via.mode(), "--json", "-w", "1", "-o"])
        .args([dir.to_str().unwrap(), CHANNEL])
        .output()
        .expect("running relay-reader");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "relay-reader record --mode {} failed ({}): {stderr}",
        via.mode(),
        out.status
    );
    (saved(&dir, files), summary(&stderr))
}

/// relay-reader recording in the background, killed if a test fails.
struct Recording {
    child: Child,
    stderr: BufReader<ChildStderr>,
    dir: PathBuf,
}

impl Recording {
    /// Starts `relay-reader record --mode <via> --json -w 120` and waits
    /// until it says it records: its buffer files are open.
    fn start(via: Via) -> Recording {
        let dir = fresh_dir(&format!("relay-contract-bg-{}", via.mode()));
        let (child, stderr, _) = start_recording(
            Command::new(bin("relay-reader"))
                .args(["record", "--mode", via.mode(), "--json", "-w", "120", "-o"])
                .args([dir.to_str().unwrap(), CHANNEL]),
        );
        Recording { child, stderr, dir }
    }

    /// Waits (60 s at most) for it to end by itself; its summary.
    fn wait_for_end(&mut self, why: &str) -> serde_json::Value {
        let give_up = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for relay-reader") {
                break status;
            }
            assert!(
                Instant::now() < give_up,
                "relay-reader still runs 60 s after {why}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        assert!(
            status.success(),
            "relay-reader failed after {why} ({status}): {rest}"
        );
        summary(&rest)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Per CPU, the received sequence numbers are exactly `from..to[cpu]`.
fn assert_exactly(what: &str, got: &BTreeMap<u32, Vec<u64>>, from: u64, to: &BTreeMap<u32, u64>) {
    for (cpu, seqs) in got {
        let to = to[cpu];
        if !seqs.iter().copied().eq(from..to) {
            let missing = (from..to)
                .filter(|s| seqs.binary_search(s).is_err())
                .count();
            panic!(
                "{what}: cpu{cpu} received {} records, expected seq {from}..{to}: {missing} missing \
                 (first {:?}, last {:?})",
                seqs.len(),
                seqs.first(),
                seqs.last()
            );
        }
    }
}

fn written(c: &Contract) -> BTreeMap<u32, u64> {
    c.counts()
        .into_iter()
        .map(|(cpu, n)| (cpu, n.written))
        .collect()
}

/// (1) Buffer files made with plain debugfs_create_file(), as relay.rst
/// shows: behind debugfs' full proxy, read(2) works and mmap cannot.
#[test]
fn full_proxy_files_are_read_whole_and_refuse_mmap_clearly() {
    if !in_vm() {
        return;
    }
    for_each_reader(true, |via| {
        let mut c = Contract::load("proxy=1", via);
        c.write(200, 32);
        let got = c.read(via);
        assert_exactly(via.mode(), &got, 0, &written(&c));
    });

    // mmap mode says why it cannot; auto mode falls back to read(2).
    let mut c = Contract::load("proxy=1", Via::Mmap);
    c.write(200, 32);
    let out = Command::new(bin("relay-reader"))
        .args(["record", "--mode", "mmap", "-w", "0", "-o"])
        .args([fresh_dir("relay-contract-proxy").to_str().unwrap(), CHANNEL])
        .output()
        .expect("running relay-reader");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mmap mode succeeded on files behind the full proxy: {err}"
    );
    let expected = if patched_kernel() {
        "cannot be mapped"
    } else {
        "does not offer the relay mmap ABI"
    };
    assert!(
        err.contains(expected) && !err.contains("panicked"),
        "mmap mode on the full proxy: expected {expected:?} in: {err}"
    );
    let dir = fresh_dir("relay-contract-auto");
    let out = Command::new(bin("relay-reader"))
        .args(["record", "--json", "-w", "1", "-o"])
        .args([dir.to_str().unwrap(), CHANNEL])
        .output()
        .expect("running relay-reader");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "auto mode failed: {err}");
    assert_eq!(summary(&err)["mode"], "read", "auto mode on the full proxy");
    let got = c.check(Via::Read, &saved(&dir, &c.files()));
    assert_exactly("auto", &got, 0, &written(&c));
}

/// (2) relay_close() without relay_flush(): a reader holding the files gets
/// everything from the finalized buffers, the partly filled sub-buffer
/// included; a channel opened again numbers on.
#[test]
fn close_without_flush_leaves_everything_readable() {
    if !in_vm() {
        return;
    }
    for_each_reader(false, |via| {
        let mut c = Contract::load("", via);
        // 3200 bytes per CPU: all of it in the first, unfinished sub-buffer.
        c.write(100, 32);
        let raw = if via == Via::Cat {
            let open: Vec<(u32, PathBuf, File)> = c
                .files()
                .into_iter()
                .map(|(cpu, path)| {
                    let f = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    (cpu, path, f)
                })
                .collect();
            c.ctl("close", "1");
            open.into_iter()
                .map(|(cpu, path, f)| (cpu, cat(&path, Some(f))))
                .collect()
        } else {
            let mut rec = Recording::start(via);
            c.ctl("close", "1");
            rec.wait_for_end("relay_close()");
            saved(&rec.dir, &c.files())
        };
        let got = c.check(via, &raw);
        assert_exactly(
            &format!("{} after close", via.mode()),
            &got,
            0,
            &written(&c),
        );

        c.ctl("reopen", "1");
        c.write(50, 32);
        let got = c.read(Via::Cat);
        assert_exactly("cat after reopen", &got, 100, &written(&c));
    });
}

/// (3) A global flight recorder frozen by a trigger: subbuf_start() refuses
/// every switch from then on, the writers carry on and are refused. read(2)
/// ends, returning the newest records without a gap up to the last one
/// stored.
#[test]
fn frozen_flight_recorder_returns_its_newest_records() {
    if !in_vm() {
        return;
    }
    let patched = patched_kernel();
    for_each_reader(false, |via| {
        if !patched {
            // Stock relay_file_read_avail() returns early while the writer
            // is refused (offset subbuf_size + 1) without catching the
            // consumed count up to the ring: read(2) walks every produced
            // sub-buffer of the 4-slot ring, and cat gets each slot twice.
            eprintln!(
                "{}: stock read(2) repeats a frozen overwrite ring: checked on patched kernels",
                via.mode()
            );
            return;
        }
        let mut c = Contract::load("global=1 overwrite=1 subbuf_size=4096 n_subbufs=4", via);
        // 2 CPUs x 256 x 64 bytes: twice what 4 x 4 KiB hold.
        c.write(256, 64);
        c.ctl("freeze", "1");
        c.write(64, 64);
        let counts = c.counts();
        let got = c.read(via);
        let received: usize = got.values().map(Vec::len).sum();
        eprintln!(
            "{}: {received} records from the frozen recorder",
            via.mode()
        );
        for (cpu, seqs) in &got {
            let c = counts[cpu];
            let Some(&last) = seqs.last() else { continue };
            assert_eq!(
                last,
                c.written - c.dropped_full - 1,
                "{}: cpu{cpu}'s newest record is not the last one stored ({c:?})",
                via.mode()
            );
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "{}: cpu{cpu}: a gap among the newest records",
                via.mode()
            );
        }
        // 64 records fill a sub-buffer. The refused switch left the oldest
        // slot unclaimed, so all 4 sub-buffers are intact and every reader
        // gets them: the writer's slot claim tells it so.
        assert_eq!(
            received,
            256,
            "{}: records from the 4 intact sub-buffers of the frozen ring",
            via.mode()
        );
        c.check_kernel_counters(via.mode());
    });
}

/// (4) The same trigger in no-overwrite mode: what was stored before the
/// buffer refused arrives, the rest is counted refused; unfrozen, it
/// records again.
#[test]
fn frozen_buffer_keeps_what_it_stored_and_records_again_when_thawed() {
    if !in_vm() {
        return;
    }
    for_each_reader(false, |via| {
        let mut c = Contract::load("", via);
        // 64 records of 64 bytes fill a sub-buffer: 100 leave the second
        // one part full, which takes 28 of the next 100 before it refuses.
        c.write(100, 64);
        c.ctl("freeze", "1");
        c.write(100, 64);
        let first = c.read(via);
        let counts = c.counts();
        for (cpu, seqs) in &first {
            let n = counts[cpu];
            assert!(
                n.dropped_full > 0,
                "cpu{cpu}: nothing refused after freezing"
            );
            assert_eq!(
                seqs.len() as u64 + n.dropped_full,
                n.written,
                "{}: cpu{cpu}: received + refused != written ({n:?})",
                via.mode()
            );
        }
        let stored: BTreeMap<u32, u64> = counts
            .iter()
            .map(|(&cpu, n)| (cpu, n.written - n.dropped_full))
            .collect();
        assert_exactly(&format!("{} while frozen", via.mode()), &first, 0, &stored);
        c.check_kernel_counters(via.mode());

        c.ctl("freeze", "0");
        c.write(10, 64);
        let from = counts.values().next().expect("a CPU").written;
        let again = c.read(via);
        assert_exactly(
            &format!("{} after thawing", via.mode()),
            &again,
            from,
            &written(&c),
        );
    });
}

/// (5) relay.rst's sub-buffer header: subbuf_start() writes the previous
/// sub-buffer's padding into its first word and reserves that word in the
/// new one. read(2) returns the words, which delimit the records; mmap
/// mode strips them. Per CPU, and in a global overwrite-mode buffer that
/// does not wrap.
#[test]
fn padding_headers_delimit_every_subbuf() {
    if !in_vm() {
        return;
    }
    for (params, n) in [("header=1", 300), ("header=1 global=1 overwrite=1", 150)] {
        eprintln!("---- {params}");
        for_each_reader(false, |via| {
            let mut c = Contract::load(params, via);
            // 102 records of 40 bytes per sub-buffer, 12 bytes of padding;
            // 300 of them fill 3 of the 4 sub-buffers.
            c.write(n, 40);
            let got = c.read(via);
            assert_exactly(&format!("{} ({params})", via.mode()), &got, 0, &written(&c));
        });
    }
}

/// (6) One global buffer written from every CPU under a spinlock.
#[test]
fn global_buffer_holds_every_cpus_records() {
    if !in_vm() {
        return;
    }
    for_each_reader(false, |via| {
        let mut c = Contract::load("global=1", via);
        assert!(
            !Path::new(&format!("{CHANNEL}1")).exists(),
            "a global channel has one buffer file"
        );
        c.write(200, 32);
        let got = c.read(via);
        assert_exactly(via.mode(), &got, 0, &written(&c));
    });
}

/// (7) Sub-buffers of 1000 bytes, not a page multiple, with records of
/// many sizes, up to a whole sub-buffer; with and without header words.
#[test]
fn odd_subbuf_size_with_records_of_every_size() {
    if !in_vm() {
        return;
    }
    for (params, largest) in [
        ("subbuf_size=1000 n_subbufs=64", 1000),
        ("subbuf_size=1000 n_subbufs=64 header=1", 996),
    ] {
        eprintln!("---- {params}");
        for_each_reader(false, |via| {
            let mut c = Contract::load(params, via);
            for (n, size) in [
                (20, 16),
                (20, 100),
                (10, 333),
                (5, largest - 1),
                (5, largest),
                (20, 17),
                (10, 500),
            ] {
                c.write(n, size);
            }
            let got = c.read(via);
            assert_exactly(&format!("{} ({params})", via.mode()), &got, 0, &written(&c));
        });
    }
}

/// (8) Records larger than a sub-buffer: relay drops them, the client
/// counts them (and the kernel, where it has the ioctls); the records
/// around them all arrive.
#[test]
fn too_big_records_are_dropped_and_counted() {
    if !in_vm() {
        return;
    }
    for_each_reader(false, |via| {
        let mut c = Contract::load("", via);
        c.write(50, 32);
        c.ctl("toobig", "5");
        c.write(50, 32);
        for (cpu, n) in c.counts() {
            assert_eq!(
                (n.dropped_toobig, n.dropped_full),
                (5, 0),
                "cpu{cpu}: {n:?}"
            );
        }
        let got = c.read(via);
        assert_exactly(via.mode(), &got, 0, &written(&c));
        c.check_kernel_counters(via.mode());
    });
}
