//! The pull API (`Reader::wait`, `Reader::next`, `Reader::flush`) against the
//! real kernel, in the test process and under tokio (relay-reader's
//! `tokio_asyncfd` example, the reader's fd in tokio's `AsyncFd`): every
//! record from every CPU, in order, none lost, in the mmap, relay-app and
//! read(2) modes.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;
use std::time::Duration;

use relay_reader::{Mode, Reader};
use relay_vm_tests::{
    assert_klog_gen_complete, example, generate_klog, in_vm, online_cpus, start_recording,
    write_control, Modules,
};

const CHANNEL: &str = "/sys/kernel/debug/relay_klog/cpu";

/// Small sub-buffers, many of them: klog_gen's records fill dozens per CPU,
/// and the ring holds them all, so that nothing may be lost even if the
/// reader were slow.
const GEOMETRY: &str = "subbuf_size=4096 n_subbufs=64";

/// Records per CPU: about 36 sub-buffers' worth.
const N: u64 = 6000;

/// Checks that every online CPU delivered exactly klog_gen's records 0..N.
fn check_records(per_cpu: &BTreeMap<u32, Vec<u8>>, what: &str) {
    assert_klog_gen_complete(per_cpu, &online_cpus(), N, what);
}

/// Takes everything ready through the pull API, each sub-buffer dropped
/// (given back) before the next; returns how many it took.
fn pull_ready(reader: &mut Reader, per_cpu: &mut BTreeMap<u32, Vec<u8>>) -> u64 {
    let mut taken = 0;
    while let Some(sb) = reader.next().expect("Reader::next") {
        per_cpu.entry(sb.cpu()).or_default().extend_from_slice(&sb);
        taken += 1;
    }
    taken
}

#[test]
fn pull_api_gets_every_klog_record_while_they_are_written() {
    for mode in [Mode::Mmap, Mode::RelayApp] {
        pull_every_record(mode);
    }
}

#[test]
fn pull_api_in_read_mode_gets_every_record() {
    if !in_vm() {
        return;
    }
    // relay_read: a channel whose sub-buffers hold records alone, for
    // read(2) (relay_klog's start with the relay-apps padding word). The
    // records are written before reading starts: read(2) on a stock
    // kernel races a writer on another CPU.
    let _modules = Modules::load(&[("relay_app", ""), ("relay_read", "")]);
    const RECORDS: u64 = 1500; // about 90 KiB per CPU, 16 KiB sub-buffers
    write_control("/sys/kernel/debug/relay_read/run", &RECORDS.to_string());
    let mut reader = Reader::open("/sys/kernel/debug/relay_read/cpu", Mode::Read)
        .expect("opening the relay_read channel");
    assert_eq!(reader.mode(), Mode::Read);
    let mut per_cpu = BTreeMap::new();
    reader.wait(Duration::from_secs(1)).expect("Reader::wait");
    assert!(pull_ready(&mut reader, &mut per_cpu) > 0, "nothing read");
    reader.flush().expect("Reader::flush");
    pull_ready(&mut reader, &mut per_cpu);
    for cpu in online_cpus() {
        let expected: String = (0..RECORDS)
            .map(|seq| {
                let filler = "x".repeat(seq as usize % 64);
                format!("relay_read cpu={cpu} seq={seq} {filler}\n")
            })
            .collect();
        let got = per_cpu.get(&cpu).map(Vec::as_slice).unwrap_or_default();
        assert!(
            got == expected.as_bytes(),
            "cpu {cpu}: {} bytes read, expected the {} of 0..{RECORDS}",
            got.len(),
            expected.len()
        );
    }
    for stats in reader.stats() {
        assert_eq!(stats.bytes as usize, per_cpu[&stats.cpu].len(), "{stats:?}");
    }
}

fn pull_every_record(mode: Mode) {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog(GEOMETRY);
    let mut reader = Reader::open(CHANNEL, mode)
        .unwrap_or_else(|e| panic!("opening {CHANNEL} in {mode} mode: {e}"));
    assert_eq!(reader.mode(), mode);
    let mut per_cpu = BTreeMap::new();
    let mut before_flush = 0;
    let writer = std::thread::spawn(|| generate_klog(N));
    while !writer.is_finished() {
        reader
            .wait(Duration::from_millis(50))
            .expect("Reader::wait");
        before_flush += pull_ready(&mut reader, &mut per_cpu);
    }
    writer.join().expect("the klog_gen thread");
    before_flush += pull_ready(&mut reader, &mut per_cpu);
    reader.flush().expect("Reader::flush");
    // The last record opened the last sub-buffer: only the flush makes it
    // ready.
    let after_flush = pull_ready(&mut reader, &mut per_cpu);
    assert!(
        before_flush > 0 && after_flush > 0,
        "{mode} mode: {before_flush} sub-buffers before the flush, {after_flush} after"
    );
    check_records(&per_cpu, &format!("{mode} mode"));
    for stats in reader.stats() {
        assert_eq!(stats.lost_subbufs, 0, "{mode} mode: {stats:?}");
        let kernel = stats
            .kernel
            .expect("both mmap modes read the kernel's counters");
        assert_eq!(kernel.lost_full + kernel.lost_toobig, 0, "{stats:?}");
        // Every sub-buffer the kernel produced was received, and all were
        // released: the pull API gave them back.
        assert_eq!(stats.accounted(), kernel.produced, "{stats:?}");
        assert_eq!(kernel.consumed, kernel.produced, "{stats:?}");
    }
}

#[test]
fn pull_api_reader_finishes_when_the_module_goes_away() {
    if !in_vm() {
        return;
    }
    // The README's program: wait, next until None, until `finished()`.
    let mut modules = Modules::klog(GEOMETRY);
    let mut reader = Reader::open(CHANNEL, Mode::Mmap).expect("opening the channel");
    generate_klog(N);
    // relay_app flushes and closes the channel: poll reports the buffers
    // closed, `next` takes what they hold, then the reader is finished.
    modules.unload("relay_klog");
    let mut per_cpu = BTreeMap::new();
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !reader.finished() {
        assert!(
            std::time::Instant::now() < give_up,
            "the reader is not finished 60 s after its channel was removed"
        );
        reader.wait(Duration::from_secs(1)).expect("Reader::wait");
        pull_ready(&mut reader, &mut per_cpu);
    }
    check_records(&per_cpu, "after the module went away");
    for stats in reader.stats() {
        assert_eq!(stats.lost_subbufs, 0, "{stats:?}");
    }
}

/// One `cpu N: key=value ...` line of the example's summary.
fn summary_line(line: &str) -> Option<(u32, BTreeMap<String, String>)> {
    let (cpu, rest) = line.strip_prefix("cpu ")?.split_once(": ")?;
    let fields = rest
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some((cpu.parse().ok()?, fields))
}

#[test]
fn tokio_asyncfd_example_gets_every_klog_record() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog(GEOMETRY);
    let dir = std::env::temp_dir().join("relay-tokio-asyncfd");
    let _ = std::fs::remove_dir_all(&dir);
    // Reads for 6 s: klog_gen is done long before (its write returns when
    // every CPU has written its records), then the example flushes.
    let mut cmd = Command::new(example("tokio_asyncfd"));
    cmd.args([
        "--mode",
        "mmap",
        "--out",
        dir.to_str().unwrap(),
        CHANNEL,
        "6",
    ])
    .stdout(std::process::Stdio::piped());
    let (mut child, mut stderr, _) = start_recording(&mut cmd);
    generate_klog(N);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut stdout)
        .expect("reading the example's output");
    let status = child.wait().expect("waiting for tokio_asyncfd");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "tokio_asyncfd failed ({status}): {rest}");

    let per_cpu: BTreeMap<u32, Vec<u8>> = online_cpus()
        .into_iter()
        .map(|cpu| {
            let path = dir.join(format!("cpu{cpu}"));
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (cpu, data)
        })
        .collect();
    check_records(&per_cpu, "tokio_asyncfd");

    let summary: BTreeMap<u32, BTreeMap<String, String>> =
        stdout.lines().filter_map(summary_line).collect();
    for cpu in online_cpus() {
        let line = summary
            .get(&cpu)
            .unwrap_or_else(|| panic!("no summary line for cpu {cpu} in:\n{stdout}"));
        let count = |key: &str| -> u64 {
            line.get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("cpu {cpu}: no number {key} in:\n{stdout}"))
        };
        assert_eq!(count("lost_subbufs"), 0, "cpu {cpu}:\n{stdout}");
        assert_eq!(count("dropped"), 0, "cpu {cpu}:\n{stdout}");
        assert_eq!(count("subbufs"), count("produced"), "cpu {cpu}:\n{stdout}");
        assert_eq!(
            count("bytes"),
            per_cpu[&cpu].len() as u64,
            "cpu {cpu}:\n{stdout}"
        );
        // Woken by tokio while klog_gen wrote: every finished sub-buffer
        // came before the flush, which adds the partly filled last one.
        let (subbufs, woken) = (count("subbufs"), count("before_flush"));
        assert!(
            subbufs > 10 && woken + 1 >= subbufs,
            "cpu {cpu}: {woken} of {subbufs} sub-buffers taken before the flush:\n{stdout}"
        );
    }
}
