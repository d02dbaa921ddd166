//! The klog example end to end: klog_printk() on every CPU -> relay_klog
//! handler -> relay_app channel -> relay-reader in mmap mode.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use relay_reader::{Error, Mode, Reader};
use relay_vm_tests::{
    assert_klog_gen_complete, bin, generate_klog, in_vm, klog_gen_records, online_cpus,
    start_recording, write_control, Modules,
};

const CHANNEL: &str = "/sys/kernel/debug/relay_klog/cpu";

fn record_all(reader: &mut Reader, per_cpu: &mut BTreeMap<u32, Vec<u8>>) {
    let mut keep = |sb: relay_reader::SubBuf<'_>| {
        per_cpu
            .entry(sb.cpu)
            .or_default()
            .extend_from_slice(sb.data);
        Ok(())
    };
    reader.consume(&mut keep).expect("draining the channel");
    reader
        .flush_and_drain(&mut keep)
        .expect("flushing and draining the channel");
}

#[test]
fn mmap_reader_gets_every_klog_record_from_every_cpu() {
    every_record_from_every_cpu(Mode::Mmap);
}

#[test]
fn relay_app_reader_gets_every_klog_record_from_every_cpu() {
    every_record_from_every_cpu(Mode::RelayApp);
}

fn every_record_from_every_cpu(mode: Mode) {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let mut reader = Reader::open(CHANNEL, mode)
        .unwrap_or_else(|e| panic!("opening the relay_klog channel in {mode:?} mode: {e}"));
    assert_eq!(reader.mode(), mode);
    let cpus = online_cpus();
    assert_eq!(
        reader.sources().len(),
        cpus.len(),
        "one buffer per online CPU"
    );

    const N: u64 = 3000;
    let mut per_cpu = BTreeMap::new();
    generate_klog(N);
    record_all(&mut reader, &mut per_cpu);

    let records = klog_gen_records(&per_cpu);
    for &cpu in &cpus {
        let seqs = records
            .get(&cpu)
            .unwrap_or_else(|| panic!("no records from cpu {cpu}"));
        assert_eq!(
            seqs.len() as u64,
            N,
            "cpu {cpu}: {} of {N} records",
            seqs.len()
        );
        assert!(
            seqs.iter().copied().eq(0..N),
            "cpu {cpu}: records missing or out of order"
        );
    }
    for stats in reader.stats() {
        let kernel = stats
            .kernel
            .expect("both mmap modes read the produced count");
        assert_eq!(
            stats.accounted(),
            kernel.produced,
            "cpu {}: received + lost != produced",
            stats.cpu
        );
        assert_eq!(kernel.lost_full, 0, "cpu {}: writes dropped", stats.cpu);
    }
}

#[test]
fn full_buffer_drops_are_counted_not_hidden() {
    if !in_vm() {
        return;
    }
    // 2 x 4 KiB per CPU cannot hold 5000 records of ~25 bytes.
    let _modules = Modules::klog("subbuf_size=4096 n_subbufs=2");
    let mut reader = Reader::open(CHANNEL, Mode::Mmap).expect("opening the channel");
    const N: u64 = 5000;
    generate_klog(N);
    let mut per_cpu = BTreeMap::new();
    record_all(&mut reader, &mut per_cpu);
    let records = klog_gen_records(&per_cpu);
    for stats in reader.stats() {
        let kernel = stats.kernel.expect("kernel counters");
        let got = records.get(&stats.cpu).map_or(0, Vec::len) as u64;
        assert!(
            kernel.lost_full > 0,
            "cpu {}: nothing dropped, the test did not fill the buffer",
            stats.cpu
        );
        assert_eq!(
            got + kernel.lost_full,
            N,
            "cpu {}: received + dropped != written",
            stats.cpu
        );
        // No-overwrite keeps the oldest records.
        let seqs = &records[&stats.cpu];
        assert!(
            seqs.iter().copied().eq(0..got),
            "cpu {}: kept records are not the first ones",
            stats.cpu
        );
    }
}

#[test]
fn missing_channel_names_the_module() {
    if !in_vm() {
        return;
    }
    let err =
        Reader::open(CHANNEL, Mode::Mmap).expect_err("no module loaded, yet the channel opened");
    assert!(
        matches!(err, Error::ChannelNotFound { .. }),
        "unexpected error: {err}"
    );
    assert!(
        err.to_string().contains("module"),
        "error does not hint at the module: {err}"
    );
}

#[test]
fn relay_reader_record_saves_everything_on_sigint() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let out = std::env::temp_dir().join("relay-reader-record-test");
    let _ = std::fs::remove_dir_all(&out);
    let (mut child, mut stderr, first) = start_recording(
        Command::new(bin("relay-reader"))
            .args(["record", "--mode", "mmap", "--json", "-o"])
            .arg(&out)
            .arg(CHANNEL),
    );
    const N: u64 = 2000;
    generate_klog(N);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .expect("sending SIGINT");
    let status = child.wait().expect("waiting for relay-reader");
    let mut rest = String::new();
    stderr
        .read_to_string(&mut rest)
        .expect("reading relay-reader's stderr");
    let stderr = first + &rest;
    assert!(
        status.success(),
        "relay-reader failed after SIGINT ({status}): {stderr}"
    );
    let mut per_cpu = BTreeMap::new();
    for cpu in online_cpus() {
        let path = out.join(format!("cpu{cpu}"));
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; stderr: {stderr}", path.display()));
        per_cpu.insert(cpu, data);
    }
    for (cpu, seqs) in klog_gen_records(&per_cpu) {
        assert!(
            seqs.iter().copied().eq(0..N),
            "cpu {cpu}: {} records, expected 0..{N}",
            seqs.len()
        );
    }
    assert!(
        stderr.contains("\"lost_subbufs\": 0"),
        "summary missing or shows loss: {stderr}"
    );
}

#[test]
fn disabled_channel_logs_nothing() {
    if !in_vm() {
        return;
    }
    let _modules = Modules::klog("");
    let mut reader = Reader::open(CHANNEL, Mode::Mmap).expect("opening the channel");
    write_control("/sys/kernel/debug/relay_klog/enabled", "0");
    generate_klog(100);
    let mut per_cpu = BTreeMap::new();
    record_all(&mut reader, &mut per_cpu);
    assert!(
        per_cpu.values().all(Vec::is_empty),
        "records arrived while disabled"
    );
    write_control("/sys/kernel/debug/relay_klog/enabled", "1");
    generate_klog(100);
    record_all(&mut reader, &mut per_cpu);
    for (cpu, seqs) in klog_gen_records(&per_cpu) {
        assert!(
            seqs.iter().copied().eq(0..100),
            "cpu {cpu}: after re-enabling got {seqs:?}"
        );
    }
}

#[test]
fn buffer_of_a_cpu_brought_online_later_is_picked_up() {
    if !in_vm() {
        return;
    }
    let cpus = online_cpus();
    let Some(&last) = cpus.last().filter(|&&c| c > 0) else {
        panic!("the VM needs at least 2 CPUs for the hotplug test");
    };
    let online = format!("/sys/devices/system/cpu/cpu{last}/online");
    write_control(&online, "0");
    // Whatever happens below, bring the CPU back for the next tests.
    struct Online(String);
    impl Drop for Online {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, "1");
        }
    }
    let _back = Online(online.clone());

    let _modules = Modules::klog("");
    let mut reader = Reader::open(CHANNEL, Mode::Mmap).expect("opening the channel");
    let before = reader.sources().len();
    write_control(&online, "1");
    let added = reader.rescan().expect("rescanning the channel");
    assert_eq!(
        added, 1,
        "cpu{last} came online but its buffer was not found ({before} buffers before)"
    );
    const N: u64 = 500;
    generate_klog(N);
    let mut per_cpu = BTreeMap::new();
    record_all(&mut reader, &mut per_cpu);
    assert_klog_gen_complete(&per_cpu, &[last], N, "after it came online");
}
