//! `relay-bench transports`: relay + relay-reader against the BPF ring
//! buffer and the perf buffer, one producer for all, in the VM.
//!
//! The producer is the relay_xbench module (`ci/bench/module/`): a work
//! item on every CPU writes numbered records of 8, 64 or 256 bytes for a
//! fixed time, as fast as it can or at a fixed rate, through
//! `relay_app_write()` into a relay channel, or through its tracepoint
//! `relay_xbench_record`, to which a BPF program is attached as a raw
//! tracepoint and copies the record into a BPF ring buffer (reserve,
//! `bpf_probe_read_kernel`, submit) or the perf buffer
//! (`bpf_perf_event_output`). The consumers ([`consumers`]) all do the same
//! work per record and write nothing. Every transport has the same memory:
//! 2 MiB per CPU (relay: 8 x 256 KiB sub-buffers per CPU; perf: 512 pages
//! per CPU; the ring buffer, shared by the CPUs: 2 MiB times the CPUs).
//!
//! Per record size and transport, in each round (the transports taking
//! turns): the producer's cost per record with no consumer (a burst that
//! fits in the buffers); then the consumer starts (relay-reader's
//! recording, the BPF consumer thread; set up before and torn down after
//! the round's runs, not measured) and takes the burst out; a run at full
//! speed (records delivered per second until the consumer has them all,
//! relay's last partly filled sub-buffers flushed, records lost, the
//! consumer's CPU time: the process's, less the main thread's); a run at a
//! fixed rate every transport can take; then a search for the highest
//! fixed rate without loss (bisection between 0 and the full-speed rate).

mod consumers;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};
use nix::time::ClockId;
use serde::{Deserialize, Serialize};

use crate::json;
use crate::process::{cpu_clock, sh};
use consumers::{Bpf, BpfKind, BpfThread, Counts, RelayRun, Tally};

const CTL: &str = "/sys/kernel/debug/relay_xbench_ctl";
/// relay_app's control file of relay_xbench's channel.
const RELAY_ENABLED: &str = "/sys/kernel/debug/relay_xbench/enabled";
const SUBBUF_SIZE: u64 = 256 << 10;
const N_SUBBUFS: u64 = 8;
/// Bytes of buffer per CPU, every transport.
const BYTES_PER_CPU: u64 = SUBBUF_SIZE * N_SUBBUFS;
const PAGE: u64 = 4096;
/// What every CPU writes in the burst without a consumer: half its share
/// of the buffers in records with the largest header a transport adds
/// (the perf buffer's 8-byte header, 4-byte size and padding), so that no
/// transport drops any.
const BURST_BYTES_PER_CPU: u64 = BYTES_PER_CPU / 2;
/// Bytes of records the consumers' work alone is timed over, per round
/// and way (in passes, a record at a time).
const CHECK_FLOOR_BYTES: u64 = 64 << 20;
/// The fixed rate, records per second per CPU, at which every consumer's
/// CPU time is also measured: the same stream for all, which the perf
/// buffer too can take, with CPU to spare for the consumers.
const PACED_RATE: u32 = 100_000;
/// How long the consumer may take to deliver the last records of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// What `relay-bench transports` takes.
#[derive(clap::Args)]
pub struct TransportsArgs {
    /// Directory with relay_app.ko.
    #[arg(long)]
    modules: PathBuf,
    /// relay_xbench.ko.
    #[arg(long)]
    xbench: PathBuf,
    /// Record sizes (8 to 256 bytes, multiples of 8).
    #[arg(long, value_delimiter = ',', default_values_t = [8u32, 64, 256])]
    sizes: Vec<u32>,
    /// The transports to measure (relay, ringbuf, perfbuf).
    #[arg(long, value_delimiter = ',', default_values = ["relay", "ringbuf", "perfbuf"])]
    transports: Vec<String>,
    /// Rounds; in each, every transport and size is measured once.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// How long every CPU writes in a run, in ms.
    #[arg(long, default_value_t = 300)]
    run_ms: u64,
    /// Steps of the search for the highest lossless rate, per round.
    #[arg(long, default_value_t = 5)]
    search_steps: u32,
    /// Also write the measurements as JSON here (for `report`).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A transport.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// relay_app_write() into a relay channel, relay-reader (mmap mode).
    Relay,
    /// BPF ring buffer, libbpf-rs RingBuffer.
    Ringbuf,
    /// BPF perf buffer, libbpf-rs PerfBuffer.
    Perfbuf,
}

impl Transport {
    /// Its row name.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Relay => "relay + relay-reader (mmap, pinned threads)",
            Transport::Ringbuf => "BPF ring buffer (libbpf-rs RingBuffer)",
            Transport::Perfbuf => "perf buffer (libbpf-rs PerfBuffer)",
        }
    }

    fn bpf(self) -> Option<BpfKind> {
        match self {
            Transport::Relay => None,
            Transport::Ringbuf => Some(BpfKind::Ringbuf),
            Transport::Perfbuf => Some(BpfKind::Perfbuf),
        }
    }
}

/// What `transports` measured (its `--json` file, which `report` reads).
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
pub struct TransportsResult {
    /// The guest's kernel release.
    pub kernel: String,
    /// CPUs online, each with a producer.
    pub n_cpus: u64,
    /// Buffer bytes per CPU of every transport.
    pub bytes_per_cpu: u64,
    /// How long every CPU wrote in a run, ms.
    pub run_ms: u64,
    /// Rounds.
    pub rounds: u32,
    /// Steps of the lossless-rate search per round.
    pub search_steps: u32,
    /// The rate of every round's paced run, records/s per CPU.
    #[serde(default)]
    pub paced_rate: u32,
    /// Why the BPF transports were not measured (None: they were).
    pub bpf_unavailable: Option<String>,
    /// The producer loop alone (no transport): ns per record, per size.
    pub loop_alone: Vec<LoopAlone>,
    /// One per transport and record size.
    pub cells: Vec<Cell>,
}

/// The producer loop with no transport.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
pub struct LoopAlone {
    /// Record size.
    pub record_size: u32,
    /// ns per record of every round.
    pub ns_per_record: Vec<f64>,
    /// The consumers' work alone (checking records held in memory, no
    /// transport), CPU seconds per GiB of every round: in sub-buffer-sized
    /// passes, as the relay sink checks them.
    #[serde(default)]
    pub check_bulk_cpu_per_gib: Vec<f64>,
    /// The same a record at a time, as the BPF callbacks check them.
    #[serde(default)]
    pub check_each_cpu_per_gib: Vec<f64>,
}

/// One transport at one record size: every round's measurements.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Cell {
    /// The transport.
    pub transport: Transport,
    /// Record size.
    pub record_size: u32,
    /// In round order.
    pub rounds: Vec<CellRound>,
}

/// One round of a [`Cell`].
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
pub struct CellRound {
    /// Producer ns per record with no consumer (a burst the buffers hold).
    pub alone_ns_per_record: f64,
    /// The run at full speed.
    pub full: Run,
    /// A run at the result's `paced_rate`.
    #[serde(default)]
    pub paced: Run,
    /// The highest rate without loss found, records per second over all
    /// CPUs (as achieved, not as asked); 0 when none was.
    pub lossless_rate: f64,
    /// The search's runs: (records/s per CPU asked, records lost).
    pub search: Vec<(u32, u64)>,
}

/// One run of the producer with a consumer.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Clone)]
pub struct Run {
    /// Records the producer offered the transport.
    pub offered: u64,
    /// Records the transport's own counter says it lost: relay_app_write()
    /// refusals (relay), failures of the BPF program's output helper.
    pub lost: u64,
    /// Records the consumer received.
    pub received: u64,
    /// Jumps in a CPU's sequence numbers the consumer saw.
    pub gaps: u64,
    /// Records the consumer found malformed.
    pub bad: u64,
    /// Lost samples the perf buffer reported to its consumer.
    pub perf_lost: u64,
    /// Wall seconds the producer ran.
    pub produce_secs: f64,
    /// Wall seconds from the start until the consumer had every record.
    pub secs: f64,
    /// The producers' time in their loops, ns, added up over the CPUs.
    pub producer_ns: u64,
    /// The consumer's user + system CPU seconds.
    pub consumer_cpu: f64,
    /// The consumer's minor page faults.
    #[serde(default)]
    pub consumer_faults: u64,
    /// The consumer's voluntary context switches (each a wait for data).
    #[serde(default)]
    pub consumer_sleeps: u64,
    /// The consumer's involuntary context switches (preemptions).
    #[serde(default)]
    pub consumer_preempted: u64,
}

impl Run {
    fn lossless(&self) -> bool {
        self.lost == 0 && self.received == self.offered && self.gaps == 0
    }
}

/// What relay_xbench's `results` says about the last run.
#[derive(Debug, Default)]
struct Produced {
    records: u64,
    dropped: u64,
    ns: u64,
    wall: f64,
}

fn produce(transport: &str, size: u32, rate: u32, msecs: u64, count: u64) -> Result<Produced> {
    let t = Instant::now();
    std::fs::write(
        format!("{CTL}/run"),
        format!("{transport} {size} {rate} {msecs} {count}"),
    )
    .with_context(|| format!("running relay_xbench ({transport} {size} {rate} {msecs} {count})"))?;
    let wall = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(format!("{CTL}/results"))
        .context("reading relay_xbench's results")?;
    let mut p = Produced {
        wall,
        ..Produced::default()
    };
    for line in text.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let value: u64 = value.trim().parse().with_context(|| format!("{line:?}"))?;
        match name {
            "records" => p.records = value,
            "dropped" => p.dropped = value,
            "ns" => p.ns = value,
            _ => {}
        }
    }
    ensure!(p.records > 0, "relay_xbench wrote no records: {text}");
    Ok(p)
}

/// CPU seconds, minor page faults, voluntary context switches (sleeps:
/// waits for data) and involuntary ones (preemptions) of every thread but
/// the calling one (the consumers').
fn consumer_usage() -> Result<(f64, i64, i64, i64)> {
    let cpu = cpu_clock(ClockId::CLOCK_PROCESS_CPUTIME_ID)?
        - cpu_clock(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    let (all, me) = (
        getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?,
        getrusage(UsageWho::RUSAGE_THREAD).context("getrusage")?,
    );
    Ok((
        cpu,
        all.minor_page_faults() - me.minor_page_faults(),
        all.voluntary_context_switches() - me.voluntary_context_switches(),
        all.involuntary_context_switches() - me.involuntary_context_switches(),
    ))
}

/// A transport's consumer for the runs of one cell round.
enum Consumer<'a> {
    /// A recording for all runs (started after the no-consumer burst).
    Relay {
        size: u32,
        n_cpus: u64,
        recording: Option<Box<RelayRun>>,
    },
    /// A thread for all runs, and the program attached meanwhile.
    Bpf {
        bpf: &'a Bpf,
        thread: Option<BpfThread>,
        _link: libbpf_rs::Link,
    },
}

struct Bench<'a> {
    args: &'a TransportsArgs,
    n_cpus: u64,
    bpf: Option<&'a Bpf>,
    tally: Arc<Tally>,
}

impl Bench<'_> {
    fn perf_pages(&self) -> usize {
        (BYTES_PER_CPU / PAGE) as usize
    }

    /// Waits until the consumers received `records` more than `before`.
    fn wait_for(&self, before: Counts, records: u64) -> Result<Counts> {
        let start = Instant::now();
        loop {
            let got = self.tally.counts() - before;
            if got.records >= records {
                return Ok(got);
            }
            if start.elapsed() > DRAIN_TIMEOUT {
                bail!(
                    "the consumer received {} of {records} records in {DRAIN_TIMEOUT:?}",
                    got.records
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// The loop with no transport at `size`, ns per record.
    fn loop_alone(&self, size: u32) -> Result<f64> {
        let p = produce("none", size, 0, self.args.run_ms, 0)?;
        Ok(p.ns as f64 / p.records as f64)
    }

    /// The consumers' own work on `size`-byte records held in memory (see
    /// [`consumers::check_floor`]), timed on a thread of its own while the
    /// producer loop runs on every CPU with no transport: under TCG a
    /// guest thread's CPU time grows when every virtual CPU is busy (they
    /// share the host's cores), and in a run every CPU is.
    fn check_floor(&self, size: u32) -> Result<(f64, f64)> {
        let buffer = BYTES_PER_CPU * self.n_cpus;
        let checker =
            std::thread::spawn(move || consumers::check_floor(size, buffer, CHECK_FLOOR_BYTES));
        // Long enough for the checker to finish while the loop runs.
        produce("none", size, 0, 4 * self.args.run_ms, 0)?;
        checker
            .join()
            .map_err(|_| anyhow::anyhow!("the checking thread panicked"))?
    }

    /// One measured run at `rate` (0: full speed).
    fn run(&self, consumer: &mut Consumer<'_>, size: u32, rate: u32) -> Result<Run> {
        let before = self.tally.counts();
        let dropped_before = match consumer {
            Consumer::Relay { .. } => 0,
            Consumer::Bpf { bpf, .. } => bpf.dropped()?,
        };
        let usage0 = consumer_usage()?;
        let t0 = Instant::now();
        let relay = matches!(consumer, Consumer::Relay { .. });
        let p = produce(
            if relay { "relay" } else { "tp" },
            size,
            rate,
            self.args.run_ms,
            0,
        )?;
        let lost = match consumer {
            Consumer::Relay { .. } => p.dropped,
            Consumer::Bpf { bpf, .. } => bpf.dropped()? - dropped_before,
        };
        if relay {
            flush_relay()?;
        }
        let got = self.wait_for(before, p.records - lost)?;
        let secs = t0.elapsed().as_secs_f64();
        let usage = consumer_usage()?;
        Ok(Run {
            offered: p.records,
            lost,
            received: got.records,
            gaps: got.gaps,
            bad: got.bad,
            perf_lost: got.perf_lost,
            produce_secs: p.wall,
            secs,
            producer_ns: p.ns,
            consumer_cpu: usage.0 - usage0.0,
            consumer_faults: (usage.1 - usage0.1).max(0) as u64,
            consumer_sleeps: (usage.2 - usage0.2).max(0) as u64,
            consumer_preempted: (usage.3 - usage0.3).max(0) as u64,
        })
    }

    /// One round of `transport` at `size`.
    fn cell_round(&self, transport: Transport, size: u32) -> Result<CellRound> {
        let mut consumer = match transport.bpf() {
            None => Consumer::Relay {
                size,
                n_cpus: self.n_cpus,
                recording: None,
            },
            Some(kind) => {
                let bpf = self.bpf.context("BPF is not available")?;
                Consumer::Bpf {
                    bpf,
                    thread: None,
                    _link: bpf.attach(kind)?,
                }
            }
        };
        // No consumer: a burst the buffers hold, then its records are
        // taken out (not measured).
        let count = BURST_BYTES_PER_CPU / (u64::from(size) + 16);
        let before = self.tally.counts();
        let tp = if transport == Transport::Relay {
            "relay"
        } else {
            "tp"
        };
        // The BPF consumer thread sets its buffer up first (perf's events
        // must exist for bpf_perf_event_output() to write), reads later.
        if let Consumer::Bpf { bpf, thread, .. } = &mut consumer {
            let kind = transport.bpf().expect("a BPF transport");
            *thread = Some(bpf.consume(kind, size, self.n_cpus, self.perf_pages(), &self.tally)?);
        }
        let dropped_before = match &consumer {
            Consumer::Bpf { bpf, .. } => bpf.dropped()?,
            Consumer::Relay { .. } => 0,
        };
        let burst = produce(tp, size, 0, 60_000, count)?;
        // Then the consumer starts and takes the burst out (not measured).
        match &mut consumer {
            Consumer::Relay {
                size,
                n_cpus,
                recording,
            } => {
                *recording = Some(Box::new(RelayRun::start(*size, *n_cpus, &self.tally)?));
                flush_relay()?;
            }
            Consumer::Bpf { thread, .. } => thread.as_ref().expect("started above").go(),
        }
        let lost = burst.dropped
            + match &consumer {
                Consumer::Bpf { bpf, .. } => bpf.dropped()? - dropped_before,
                Consumer::Relay { .. } => 0,
            };
        ensure!(
            lost == 0,
            "{} lost {lost} of {} records of a burst its buffers hold",
            transport.name(),
            burst.records
        );
        self.wait_for(before, burst.records)?;

        let full = self.run(&mut consumer, size, 0)?;
        let paced = self.run(&mut consumer, size, PACED_RATE)?;
        let mut round = CellRound {
            alone_ns_per_record: burst.ns as f64 / burst.records as f64,
            full: full.clone(),
            paced,
            ..CellRound::default()
        };
        if full.lossless() {
            round.lossless_rate = full.offered as f64 / full.produce_secs;
        } else {
            // Records per second per CPU while the producers wrote.
            let full_rate = full.offered as f64 / (full.producer_ns as f64 / 1e9);
            let (mut lo, mut hi) = (0.0, full_rate);
            for _ in 0..self.args.search_steps {
                let rate = ((lo + hi) / 2.0).max(1.0) as u32;
                let run = self.run(&mut consumer, size, rate)?;
                round
                    .search
                    .push((rate, run.lost + run.offered.saturating_sub(run.received)));
                if run.lossless() {
                    lo = f64::from(rate);
                    round.lossless_rate = round
                        .lossless_rate
                        .max(run.offered as f64 / run.produce_secs);
                } else {
                    hi = f64::from(rate);
                }
            }
        }
        match consumer {
            Consumer::Relay {
                recording: Some(recording),
                ..
            } => recording.finish()?,
            Consumer::Bpf {
                thread: Some(thread),
                ..
            } => thread.stop()?,
            _ => {}
        }
        eprintln!(
            "{} {size} B: {:.0} records/s at full speed, {} lost, consumer {:.3} CPU s, {} faults, {} sleeps, {} preemptions; lossless up to {:.0}/s",
            transport.name(),
            full.received as f64 / full.secs,
            full.lost,
            full.consumer_cpu,
            full.consumer_faults,
            full.consumer_sleeps,
            full.consumer_preempted,
            round.lossless_rate
        );
        Ok(round)
    }
}

/// Makes relay_app flush every buffer of relay_xbench's channel, so that
/// the reading threads get the partly filled sub-buffers: writing 0 to its
/// `enabled` file waits for writes in progress and flushes; 1 enables
/// writes again.
fn flush_relay() -> Result<()> {
    for value in ["0", "1"] {
        std::fs::write(RELAY_ENABLED, value).with_context(|| format!("writing {RELAY_ENABLED}"))?;
    }
    Ok(())
}

fn rmmod(modules: &[&str]) {
    for m in modules {
        let _ = Command::new("rmmod").arg(m).output();
    }
}

/// Runs every transport and size; prints the tables and writes the JSON.
pub fn run(args: &TransportsArgs) -> Result<()> {
    for &size in &args.sizes {
        ensure!(
            (8..=256).contains(&size) && size % 8 == 0,
            "record size {size}: 8 to 256 bytes, a multiple of 8"
        );
    }
    rmmod(&["relay_xbench", "relay_app"]);
    sh(Command::new("insmod").arg(args.modules.join("relay_app.ko")))?;
    let result = (|| -> Result<TransportsResult> {
        sh(Command::new("insmod").arg(&args.xbench).args([
            format!("subbuf_size={SUBBUF_SIZE}"),
            format!("n_subbufs={N_SUBBUFS}"),
        ]))?;
        let n_cpus = relay_reader::channel::online_cpus().len() as u64;
        let ringbuf_bytes = (BYTES_PER_CPU * n_cpus).next_power_of_two();
        let (bpf, bpf_unavailable) = match Bpf::load(ringbuf_bytes as u32) {
            Ok(bpf) => (Some(bpf), None),
            Err(e) => {
                eprintln!("transports: no BPF transports: {e:#}");
                (None, Some(format!("{e:#}")))
            }
        };
        let mut transports = Vec::new();
        for name in &args.transports {
            let t = match name.as_str() {
                "relay" => Transport::Relay,
                "ringbuf" => Transport::Ringbuf,
                "perfbuf" => Transport::Perfbuf,
                other => bail!("no transport {other}: relay, ringbuf or perfbuf"),
            };
            if t == Transport::Relay || bpf.is_some() {
                transports.push(t);
            }
        }
        let bench = Bench {
            args,
            n_cpus,
            bpf: bpf.as_ref(),
            tally: Arc::default(),
        };
        let mut loop_alone: Vec<LoopAlone> = args
            .sizes
            .iter()
            .map(|&record_size| LoopAlone {
                record_size,
                ns_per_record: Vec::new(),
                check_bulk_cpu_per_gib: Vec::new(),
                check_each_cpu_per_gib: Vec::new(),
            })
            .collect();
        let mut cells: Vec<Cell> = args
            .sizes
            .iter()
            .flat_map(|&record_size| {
                transports.iter().map(move |&transport| Cell {
                    transport,
                    record_size,
                    rounds: Vec::new(),
                })
            })
            .collect();
        for round in 1..=args.rounds.max(1) {
            for (i, &size) in args.sizes.iter().enumerate() {
                eprintln!(
                    "transports: round {round}/{}, {size}-byte records",
                    args.rounds
                );
                let alone = &mut loop_alone[i];
                alone.ns_per_record.push(bench.loop_alone(size)?);
                let (bulk, each) = bench.check_floor(size)?;
                alone.check_bulk_cpu_per_gib.push(bulk);
                alone.check_each_cpu_per_gib.push(each);
                for cell in cells.iter_mut().filter(|c| c.record_size == size) {
                    cell.rounds.push(bench.cell_round(cell.transport, size)?);
                }
            }
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Ok(TransportsResult {
            kernel: kernel.trim().to_string(),
            n_cpus,
            bytes_per_cpu: BYTES_PER_CPU,
            run_ms: args.run_ms,
            rounds: args.rounds.max(1),
            search_steps: args.search_steps,
            paced_rate: PACED_RATE,
            bpf_unavailable,
            loop_alone,
            cells,
        })
    })();
    rmmod(&["relay_xbench", "relay_app"]);
    let result = result?;
    print!("{}", table(&result));
    json::write(args.json.as_deref(), &result)
}

/// The median of `values` (NaN without any).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest and largest of `values`.
fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// A figure of every round of a cell.
#[derive(Clone, Copy)]
pub enum Figure {
    /// Highest lossless records/s, all CPUs.
    LosslessRate,
    /// Records/s delivered at full speed.
    FullRate,
    /// MiB/s delivered at full speed.
    FullMibs,
    /// Records lost at full speed, % of offered.
    LostPercent,
    /// Consumer CPU seconds per million records.
    CpuPerMillion,
    /// Consumer CPU seconds per GiB.
    CpuPerGib,
    /// Consumer CPU seconds per GiB at the paced rate.
    PacedCpuPerGib,
    /// Producer ns per record, no consumer.
    AloneNs,
    /// Producer ns per record at full speed with the consumer.
    WithConsumerNs,
}

impl Figure {
    fn of(self, r: &CellRound, size: u32) -> f64 {
        let f = &r.full;
        let bytes = f.received as f64 * f64::from(size);
        match self {
            Figure::LosslessRate => r.lossless_rate,
            Figure::FullRate => f.received as f64 / f.secs,
            Figure::FullMibs => bytes / f.secs / (1u64 << 20) as f64,
            Figure::LostPercent => 100.0 * f.lost as f64 / f.offered.max(1) as f64,
            Figure::CpuPerMillion => f.consumer_cpu / (f.received as f64 / 1e6),
            Figure::CpuPerGib => f.consumer_cpu / (bytes / (1u64 << 30) as f64),
            Figure::PacedCpuPerGib => {
                let p = &r.paced;
                p.consumer_cpu / (p.received as f64 * f64::from(size) / (1u64 << 30) as f64)
            }
            Figure::AloneNs => r.alone_ns_per_record,
            Figure::WithConsumerNs => f.producer_ns as f64 / f.offered.max(1) as f64,
        }
    }
}

/// The cell of `transport` at `size`.
pub fn cell(result: &TransportsResult, transport: Transport, size: u32) -> Option<&Cell> {
    result
        .cells
        .iter()
        .find(|c| c.transport == transport && c.record_size == size)
}

/// A figure of every round of a cell.
pub fn figures(cell: &Cell, figure: Figure) -> Vec<f64> {
    cell.rounds
        .iter()
        .map(|r| figure.of(r, cell.record_size))
        .collect()
}

/// `a`'s figure over `b`'s: the ratio of the medians, and the smallest and
/// largest ratio of the rounds (round i of `a` over round i of `b`: they
/// ran in turns).
pub fn ratio(a: &Cell, b: &Cell, figure: Figure) -> (f64, f64, f64) {
    let (fa, fb) = (figures(a, figure), figures(b, figure));
    let per_round: Vec<f64> = fa.iter().zip(&fb).map(|(x, y)| x / y).collect();
    let (lo, hi) = spread(&per_round);
    (median(&fa) / median(&fb), lo, hi)
}

fn ratio_cell((r, lo, hi): (f64, f64, f64)) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    format!("{r:.2}x ({lo:.2}-{hi:.2})")
}

/// "median (min-max)" of a figure, with `fmt` for each number.
fn figure_cell(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let (lo, hi) = spread(values);
    format!("{} ({}-{})", fmt(median(values)), fmt(lo), fmt(hi))
}

/// Records per second, readably.
fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The Markdown of a `transports` result: a table per record size.
pub fn table(result: &TransportsResult) -> String {
    let mut s = format!(
        "Producer: relay_xbench, {} CPUs each writing for {} ms per run, {} MiB of buffer per CPU for every transport (relay: {} x {} KiB sub-buffers per CPU; perf buffer: {} pages per CPU; BPF ring buffer: one of {} MiB), kernel {}, TCG. {} rounds, the transports taking turns; each figure is the median of the rounds with their min-max in brackets, each ratio the ratio of the medians with the min-max of the rounds' ratios. The lossless rate is the highest fixed rate at which a run lost nothing (bisection from the full-speed rate, {} steps per round).\n\n",
        result.n_cpus,
        result.run_ms,
        result.bytes_per_cpu >> 20,
        N_SUBBUFS,
        SUBBUF_SIZE >> 10,
        result.bytes_per_cpu / PAGE,
        (result.bytes_per_cpu * result.n_cpus).next_power_of_two() >> 20,
        result.kernel,
        result.rounds,
        result.search_steps,
    );
    if let Some(why) = &result.bpf_unavailable {
        s.push_str(&format!(
            "The BPF transports could not run on this kernel: {why}.\n\n"
        ));
    }
    for alone in &result.loop_alone {
        let size = alone.record_size;
        s.push_str(&format!(
            "{size}-byte records. The producer loop alone (no transport) costs {} ns per record; the consumers' work alone (checking the same records in memory while the loop runs on every CPU) {} CPU s per GiB in sub-buffer-sized passes (as the relay sink), {} a record at a time (as the BPF callbacks).\n\n",
            figure_cell(&alone.ns_per_record, |x| format!("{x:.1}")),
            figure_cell(&alone.check_bulk_cpu_per_gib, |x| format!("{x:.2}")),
            figure_cell(&alone.check_each_cpu_per_gib, |x| format!("{x:.2}")),
        ));
        s.push_str(&format!("| transport | lossless records/s | vs ring buffer | records/s at full speed | MiB/s at full speed | vs ring buffer | lost at full speed, % | consumer CPU s per M records | consumer CPU s per GiB | vs ring buffer | consumer CPU s per GiB at {} records/s per CPU | vs ring buffer | producer ns per record, no consumer | with the consumer | vs ring buffer |\n", rate(f64::from(result.paced_rate))));
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let base = cell(result, Transport::Ringbuf, size);
        for c in result.cells.iter().filter(|c| c.record_size == size) {
            let f = |figure| figures(c, figure);
            let vs = |figure| base.map_or("-".into(), |b| ratio_cell(ratio(c, b, figure)));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |\n",
                c.transport.name(),
                figure_cell(&f(Figure::LosslessRate), rate),
                vs(Figure::LosslessRate),
                figure_cell(&f(Figure::FullRate), rate),
                median(&f(Figure::FullMibs)),
                vs(Figure::FullRate),
                figure_cell(&f(Figure::LostPercent), |x| format!("{x:.1}")),
                figure_cell(&f(Figure::CpuPerMillion), |x| format!("{x:.3}")),
                median(&f(Figure::CpuPerGib)),
                vs(Figure::CpuPerGib),
                figure_cell(&f(Figure::PacedCpuPerGib), |x| format!("{x:.2}")),
                vs(Figure::PacedCpuPerGib),
                figure_cell(&f(Figure::AloneNs), |x| format!("{x:.0}")),
                figure_cell(&f(Figure::WithConsumerNs), |x| format!("{x:.0}")),
                vs(Figure::WithConsumerNs),
            ));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell_of(transport: Transport, lossless: &[f64], cpu: &[f64]) -> Cell {
        Cell {
            transport,
            record_size: 64,
            rounds: lossless
                .iter()
                .zip(cpu)
                .map(|(&l, &c)| CellRound {
                    lossless_rate: l,
                    full: Run {
                        offered: 1 << 24,
                        received: 1 << 24,
                        secs: 1.0,
                        consumer_cpu: c,
                        producer_ns: 1 << 30,
                        ..Run::default()
                    },
                    ..CellRound::default()
                })
                .collect(),
        }
    }

    #[test]
    fn ratios_are_of_the_medians_with_the_spread_of_the_rounds() {
        let relay = cell_of(Transport::Relay, &[4.0, 6.0, 5.0], &[1.0, 1.0, 1.0]);
        let ring = cell_of(Transport::Ringbuf, &[2.0, 2.0, 4.0], &[2.0, 4.0, 2.0]);
        let (r, lo, hi) = ratio(&relay, &ring, Figure::LosslessRate);
        assert_eq!((r, lo, hi), (2.5, 1.25, 3.0));
        let (r, lo, hi) = ratio(&relay, &ring, Figure::CpuPerGib);
        assert_eq!((r, lo, hi), (0.5, 0.25, 0.5));
        // 2^24 64-byte records are 1 GiB.
        assert_eq!(figures(&ring, Figure::CpuPerGib), [2.0, 4.0, 2.0]);
        assert_eq!(median(&[3.0, 1.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_run_is_lossless_only_when_everything_arrived() {
        let run = Run {
            offered: 10,
            received: 10,
            ..Run::default()
        };
        assert!(run.lossless());
        assert!(!Run {
            received: 9,
            ..run.clone()
        }
        .lossless());
        assert!(!Run {
            lost: 1,
            ..run.clone()
        }
        .lossless());
        assert!(!Run { gaps: 1, ..run }.lossless());
    }

    #[test]
    fn the_table_has_a_row_per_transport_and_ratios_against_the_ring_buffer() {
        let result = TransportsResult {
            kernel: "6.12.118+deb12-amd64".into(),
            n_cpus: 2,
            bytes_per_cpu: BYTES_PER_CPU,
            run_ms: 300,
            rounds: 3,
            search_steps: 5,
            loop_alone: vec![LoopAlone {
                record_size: 64,
                ns_per_record: vec![10.0, 12.0, 11.0],
                ..LoopAlone::default()
            }],
            cells: vec![
                cell_of(Transport::Relay, &[4.0, 6.0, 5.0], &[1.0, 1.0, 1.0]),
                cell_of(Transport::Ringbuf, &[2.0, 2.0, 4.0], &[2.0, 4.0, 2.0]),
            ],
            ..TransportsResult::default()
        };
        let t = table(&result);
        assert!(t.contains("costs 11.0 (10.0-12.0) ns per record;"), "{t}");
        assert!(
            t.contains(
                "| relay + relay-reader (mmap, pinned threads) | 5 (4-6) | 2.50x (1.25-3.00) |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| BPF ring buffer (libbpf-rs RingBuffer) | 2 (2-4) | 1.00x (1.00-1.00) |"),
            "{t}"
        );
    }
}
