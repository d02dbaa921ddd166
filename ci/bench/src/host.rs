//! `relay-bench host`: the reader core against the kernel-free relay model,
//! on the host (no VM), next to a plain memcpy of the same bytes.
//!
//! Every round the model's writer fills a number of sub-buffers with records
//! (not timed), then one side is timed:
//! - the reader core: [`MappedSource::drain`] over [`ModelMapping`], the
//!   model read the way `KernelBuffer` reads a relay file (meta area, bytes,
//!   `CONSUME`; none of the model's own checks on the reader), its callback
//!   copying each sub-buffer into a sink buffer (what write(2) into the page
//!   cache does with the bytes);
//! - the baseline: the same sub-buffers copied from the same model memory
//!   into the same sink buffer with `copy_from_slice`, nothing else.
//!
//! The two alternate round by round, each going first in every other round,
//! and the best of several trials counts, so that other load on the machine
//! hits both alike. [`ModelMapping`] counts the system calls the reader
//! makes into the ABI: with the meta area (the model has it, like the
//! patched kernel) `state` and `subbuf` are reads of the mapped meta area,
//! no system call, so only CONSUME (one per drain; without overwrite, one
//! per half ring) and FLUSH count.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use relay_reader::mapped::{MappedBuffer, SubbufLoc};
use relay_reader::model::{ModelBuffer, ModelMapping};
use relay_reader::source::MappedSource;
use serde::{Deserialize, Serialize};

use crate::json;

/// The relay-apps padding header the model (like the `relay_app` helper)
/// puts at the head of every sub-buffer.
const HEADER: usize = relay_sys::relay_app::PADDING_HEADER_SIZE;

/// A page: the alignment of the sink (see [`trial`]).
const PAGE: usize = 4096;

/// The record size of the cases whose name does not give another (the
/// size the VM benchmarks write too); [`HostResult::record_size`].
const RECORD_SIZE: usize = 256;

/// One geometry, record size and reading pattern.
struct Case {
    name: &'static str,
    subbuf_size: usize,
    n_subbufs: usize,
    overwrite: bool,
    /// Size of each record the model's writer writes: the reader core
    /// delivers whole sub-buffers, so it decides only the padding at the
    /// end of each, which neither side copies.
    record_size: usize,
    /// Sub-buffers ready at each drain: `n_subbufs - 1` for a reader woken
    /// with a backlog, 1 for a reader that keeps up.
    batch: usize,
}

const CASES: [Case; 6] = [
    Case {
        name: "8 x 256 KiB, 7 ready per drain",
        subbuf_size: 256 << 10,
        n_subbufs: 8,
        overwrite: false,
        record_size: RECORD_SIZE,
        batch: 7,
    },
    Case {
        name: "8 x 256 KiB, 1 ready per drain",
        subbuf_size: 256 << 10,
        n_subbufs: 8,
        overwrite: false,
        record_size: RECORD_SIZE,
        batch: 1,
    },
    Case {
        name: "8 x 256 KiB, 64-byte records, 7 ready per drain",
        subbuf_size: 256 << 10,
        n_subbufs: 8,
        overwrite: false,
        record_size: 64,
        batch: 7,
    },
    Case {
        name: "8 x 4 KiB, 7 ready per drain",
        subbuf_size: 4 << 10,
        n_subbufs: 8,
        overwrite: false,
        record_size: RECORD_SIZE,
        batch: 7,
    },
    Case {
        name: "8 x 4 KiB, 64-byte records, 7 ready per drain",
        subbuf_size: 4 << 10,
        n_subbufs: 8,
        overwrite: false,
        record_size: 64,
        batch: 7,
    },
    Case {
        name: "8 x 256 KiB overwrite mode, 7 ready per drain",
        subbuf_size: 256 << 10,
        n_subbufs: 8,
        overwrite: true,
        record_size: RECORD_SIZE,
        batch: 7,
    },
];

/// Totals of one side over one trial.
#[derive(Default, Clone, Copy)]
struct Side {
    /// Time of the timed rounds, the clock's own cost included.
    raw: Duration,
    rounds: u32,
    /// The shortest time seen between two readings of the clock.
    clock: Option<Duration>,
    bytes: u64,
    subbufs: u64,
}

impl Side {
    /// Runs one round of this side and adds its time. Reading the clock
    /// twice (~60 ns in this VM) costs a third of a round of seven 4 KiB
    /// sub-buffers, which both sides would otherwise pay inside their time,
    /// pulling the ratio towards 1: the clock is read once more just before
    /// the round, and the shortest span between those two readings (one
    /// reading's cost, as each round's own span holds) is taken off every
    /// round in [`time`](Side::time). The shortest, so that a round
    /// interrupted between the two readings takes nothing extra off.
    fn round<T>(&mut self, round: impl FnOnce() -> T) -> T {
        let before = Instant::now();
        let start = Instant::now();
        let result = round();
        let end = Instant::now();
        self.raw += end - start;
        self.rounds += 1;
        let clock = start - before;
        self.clock = Some(self.clock.map_or(clock, |c| c.min(clock)));
        result
    }

    /// The time of the rounds without the clock's cost.
    fn time(&self) -> Duration {
        self.raw
            .saturating_sub(self.clock.unwrap_or_default() * self.rounds)
    }
}

/// The writer fills sub-buffers until `batch` are ready past `consumed`.
fn fill(model: &mut ModelBuffer, consumed: u64, batch: usize, record: &[u8]) {
    while model.produced() < consumed + batch as u64 {
        let written = model.write(record);
        debug_assert!(written);
    }
}

fn consumed(model: &mut ModelBuffer) -> u64 {
    model.state().map(|s| s.consumed).unwrap_or_default()
}

/// One trial of `bytes` for both sides, alternating round by round. Which
/// side goes first alternates too (reader, memcpy, memcpy, reader, ...), so
/// that neither always comes after the other's round: the order alone
/// moved the 4 KiB ratio by about 0.03.
fn trial(case: &Case, bytes: u64) -> Result<(Side, Side, u64)> {
    let record: Vec<u8> = (0..case.record_size).map(|i| i as u8).collect();
    // Page-aligned, as the page-cache pages write(2) copies into, and at
    // the same page offset in every run whatever the heap's layout.
    let mut sink_mem = vec![0u8; case.subbuf_size + PAGE];
    let at = sink_mem.as_ptr().align_offset(PAGE);
    let sink = &mut sink_mem[at..at + case.subbuf_size];
    let model = ModelBuffer::new(case.subbuf_size, case.n_subbufs, case.overwrite);
    let mut reader =
        MappedSource::new(ModelMapping::new(model).expect("the model has a meta area"))?;
    let mut plain = ModelBuffer::new(case.subbuf_size, case.n_subbufs, case.overwrite);
    let (mut ours, mut base) = (Side::default(), Side::default());
    // The reader core.
    let mut reader_round = |ours: &mut Side, sink: &mut [u8]| -> Result<()> {
        let model = &mut reader.buffer_mut().model;
        let from = consumed(model);
        fill(model, from, case.batch, &record);
        let before = reader.stats().bytes;
        let delivered = ours.round(|| {
            reader.drain(&mut |sb| {
                sink[..sb.data.len()].copy_from_slice(sb.data);
                black_box(&sink);
                Ok(())
            })
        })?;
        ours.subbufs += delivered;
        ours.bytes += reader.stats().bytes - before;
        Ok(())
    };
    // memcpy of the same sub-buffers from the same kind of memory.
    let mut memcpy_round = |base: &mut Side, sink: &mut [u8]| -> Result<()> {
        let from = consumed(&mut plain);
        fill(&mut plain, from, case.batch, &record);
        let padding = (case.subbuf_size - HEADER) % case.record_size;
        let locs: Vec<SubbufLoc> = (from..from + case.batch as u64)
            .map(|seq| SubbufLoc {
                seq,
                data_offset: ((seq as usize % case.n_subbufs) * case.subbuf_size + HEADER) as u64,
                data_len: (case.subbuf_size - HEADER - padding) as u64,
                padding: padding as u64,
                lost_before: 0,
            })
            .collect();
        base.round(|| {
            for loc in &locs {
                let data = plain.data(loc);
                sink[..data.len()].copy_from_slice(data);
                black_box(&sink);
            }
        });
        base.subbufs += locs.len() as u64;
        base.bytes += locs.iter().map(|l| l.data_len).sum::<u64>();
        plain.release(from, case.batch as u64)?;
        Ok(())
    };
    while ours.bytes < bytes {
        if ours.rounds % 2 == 0 {
            reader_round(&mut ours, sink)?;
            memcpy_round(&mut base, sink)?;
        } else {
            memcpy_round(&mut base, sink)?;
            reader_round(&mut ours, sink)?;
        }
    }
    ensure!(
        ours.bytes == base.bytes && ours.subbufs == base.subbufs,
        "{}: the reader delivered {} bytes in {} sub-buffers, memcpy copied {} in {}",
        case.name,
        ours.bytes,
        ours.subbufs,
        base.bytes,
        base.subbufs
    );
    let syscalls = reader.buffer().syscalls();
    Ok((ours, base, syscalls))
}

/// Nanoseconds of one trivial system call (getppid(2)): what each ABI call
/// costs at least against a real kernel, before the ioctl does any work.
fn syscall_ns() -> f64 {
    let n = 200_000;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(nix::unistd::getppid());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn gib_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / (1u64 << 30) as f64 / time.as_secs_f64()
}

/// What `relay-bench host` takes.
#[derive(clap::Args)]
pub struct HostArgs {
    /// MiB each side moves per trial and case.
    #[arg(long, default_value_t = 512)]
    mib_per_trial: u64,
    /// Trials per case; the best counts.
    #[arg(long, default_value_t = 11)]
    trials: u32,
    /// Also write the measurements as JSON here (for `report`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only the cases whose name contains this (for profiling one case).
    #[arg(long)]
    only: Option<String>,
}

/// What `host` measured (its `--json` file, which `report` reads).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct HostResult {
    /// Size of the records of the cases that do not name their own (every
    /// case names its own since the 64-byte-record cases came).
    pub record_size: usize,
    /// MiB each side moved per trial and case.
    pub mib_per_trial: u64,
    /// Trials per case; the best counted.
    pub trials: u32,
    /// Nanoseconds of a trivial system call on this host.
    pub syscall_ns: f64,
    /// The host's CPU model.
    pub cpu: String,
    /// The host's CPUs.
    pub n_cpus: usize,
    /// One per case.
    pub cases: Vec<CaseResult>,
}

/// The best trial of each side in one [`Case`].
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Its geometry and reading pattern (see [`Case`]).
    pub subbuf_size: usize,
    /// See [`Case`].
    pub n_subbufs: usize,
    /// See [`Case`].
    pub overwrite: bool,
    /// See [`Case`].
    pub batch: usize,
    /// See [`Case`]; `None` in files from before it was per case: the
    /// run's [`HostResult::record_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_size: Option<usize>,
    /// Bytes the reader core delivered (memcpy copied the same).
    pub bytes: u64,
    /// Sub-buffers it delivered.
    pub subbufs: u64,
    /// Seconds of the reader core.
    pub reader_secs: f64,
    /// Seconds of memcpy.
    pub memcpy_secs: f64,
    /// System calls the reader made into the ABI (files from before the
    /// meta area counted ioctls under another key: 0 here).
    #[serde(default)]
    pub syscalls: u64,
    /// memcpy's time over the reader's within each trial (the two sides of
    /// a trial ran interleaved, under the same load): the spread beside the
    /// ratio of the best times. Empty in files from before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trial_ratios: Vec<f64>,
}

/// Runs every case and writes the results as JSON to `--json` (and a
/// Markdown table to stdout).
pub fn run(args: &HostArgs) -> Result<()> {
    let (mib_per_trial, trials) = (args.mib_per_trial, args.trials);
    let mut cases = Vec::new();
    let chosen = CASES.iter().filter(|case| {
        args.only
            .as_deref()
            .is_none_or(|only| case.name.contains(only))
    });
    for case in chosen {
        let mut best: Option<(Side, Side, u64)> = None;
        let mut trial_ratios = Vec::new();
        for _ in 0..trials {
            let (ours, base, syscalls) = trial(case, mib_per_trial << 20)?;
            trial_ratios.push(base.time().as_secs_f64() / ours.time().as_secs_f64());
            best = Some(match best {
                None => (ours, base, syscalls),
                Some((o, b, _)) => (
                    if ours.time() < o.time() { ours } else { o },
                    if base.time() < b.time() { base } else { b },
                    syscalls,
                ),
            });
        }
        let (ours, base, syscalls) = best.expect("at least one trial");
        eprintln!(
            "host: {}: reader {:.2} GiB/s, memcpy {:.2} GiB/s",
            case.name,
            gib_s(ours.bytes, ours.time()),
            gib_s(base.bytes, base.time())
        );
        cases.push(CaseResult {
            name: case.name.to_string(),
            subbuf_size: case.subbuf_size,
            n_subbufs: case.n_subbufs,
            overwrite: case.overwrite,
            batch: case.batch,
            record_size: Some(case.record_size),
            bytes: ours.bytes,
            subbufs: ours.subbufs,
            reader_secs: ours.time().as_secs_f64(),
            memcpy_secs: base.time().as_secs_f64(),
            syscalls,
            trial_ratios,
        });
    }
    let result = HostResult {
        record_size: RECORD_SIZE,
        mib_per_trial,
        trials,
        syscall_ns: syscall_ns(),
        cpu: cpu_model(),
        n_cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cases,
    };
    print!("{}", table(&result));
    json::write(args.json.as_deref(), &result)
}

/// The host's CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The reader core's throughput relative to memcpy in one case.
pub fn ratio(case: &CaseResult) -> f64 {
    case.memcpy_secs / case.reader_secs
}

/// The lowest and highest of a case's per-trial ratios, if it kept them.
pub fn trial_spread(case: &CaseResult) -> Option<(f64, f64)> {
    let lo = case.trial_ratios.iter().copied().reduce(f64::min)?;
    let hi = case.trial_ratios.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

/// A case's ratio with its trials' spread where it kept them: `0.84x
/// (trials 0.80-0.86)`.
pub fn ratio_with_spread(case: &CaseResult) -> String {
    let r = ratio(case);
    match trial_spread(case) {
        Some((lo, hi)) => format!("{r:.2}x (trials {lo:.2}-{hi:.2})"),
        None => format!("{r:.2}x"),
    }
}

/// The Markdown table of a `host` result.
pub fn table(result: &HostResult) -> String {
    let mut s = String::new();
    s.push_str(
        "| reading pattern | GiB/s reader core | GiB/s memcpy | reader / memcpy | ns per sub-buffer over memcpy | ABI system calls per sub-buffer |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for case in &result.cases {
        let subbufs = case.subbufs.max(1);
        let (reader, memcpy) = (case.reader_secs, case.memcpy_secs);
        let gib = case.bytes as f64 / (1u64 << 30) as f64;
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {} | {:.0} | {:.2} |\n",
            case.name,
            gib / reader,
            gib / memcpy,
            ratio_with_spread(case),
            (reader - memcpy) * 1e9 / subbufs as f64,
            case.syscalls as f64 / subbufs as f64,
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_shows_the_spread_of_its_trials_where_it_has_them() {
        let case = CaseResult {
            name: "8 x 4 KiB".into(),
            subbuf_size: 4096,
            n_subbufs: 8,
            overwrite: false,
            batch: 7,
            record_size: Some(256),
            bytes: 1 << 30,
            subbufs: 1 << 18,
            reader_secs: 1.0,
            memcpy_secs: 0.84,
            syscalls: 0,
            trial_ratios: vec![0.83, 0.79, 0.86],
        };
        assert_eq!(trial_spread(&case), Some((0.79, 0.86)));
        assert_eq!(ratio_with_spread(&case), "0.84x (trials 0.79-0.86)");
        let old = CaseResult {
            trial_ratios: Vec::new(),
            ..case
        };
        assert_eq!(trial_spread(&old), None);
        assert_eq!(ratio_with_spread(&old), "0.84x");
    }
}
