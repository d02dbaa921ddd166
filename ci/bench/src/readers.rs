//! `relay-bench run`: relay-reader in its modes, a cat loop and dd side by
//! side under the relay_bench producer, in the VM.
//!
//! For each contender the `relay_bench` module is loaded afresh, the
//! contender starts reading its channel (output to /dev/null, so only the
//! reading is measured), every CPU writes the same number of bytes at full
//! speed, the contender is stopped with SIGINT and its CPU time (user +
//! system, from `getrusage(RUSAGE_CHILDREN)`) and the records the kernel had
//! to drop are reported. The numbers are ratios from one run on one machine:
//! compare rows, not runs.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::json;
use crate::process::{cpu_seconds_of_children, local_copy, sh};
use crate::rounds::{median_run, runs_cell, take_turns};

const CHANNEL: &str = "/sys/kernel/debug/relay_bench/cpu";
const CTL: &str = "/sys/kernel/debug/relay_bench_ctl";
/// The row of relay-reader with no scheduling flag: SCHED_FIFO priority 10
/// where permitted (the guest runs it as root).
pub const DEFAULT_ROW: &str = "relay-reader --mode mmap";
/// The row of relay-reader under the normal policy (`--no-realtime`).
pub const NORMAL_ROW: &str = "relay-reader --mode mmap --no-realtime";
/// The row of relay-reader under SCHED_FIFO (`--realtime`).
pub const REALTIME_ROW: &str = "relay-reader --mode mmap --realtime 10";
/// The row of relay-reader under the normal policy with a short slice.
pub const SLICE_ROW: &str = "relay-reader --mode mmap --slice-us 100";
/// The row of relay-reader with one thread for every buffer (the default
/// is a thread per buffer, pinned to its CPU), under the normal policy.
const SINGLE_THREAD_ROW: &str = "relay-reader --mode mmap --single-thread --no-realtime";
/// The same under SCHED_FIFO.
const SINGLE_THREAD_REALTIME_ROW: &str = "relay-reader --mode mmap --single-thread --realtime 10";

/// What `relay-bench run` takes.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Directory with relay_app.ko and relay_bench.ko.
    #[arg(long)]
    modules: PathBuf,
    /// The relay-reader binary.
    #[arg(long)]
    reader: PathBuf,
    /// Bytes every CPU writes per contender.
    #[arg(long, default_value_t = 64 << 20)]
    bytes_per_cpu: u64,
    /// Size of each record.
    #[arg(long, default_value_t = 256)]
    record_size: u32,
    /// Producer rate per CPU in MiB/s; 0 for as fast as it can.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Sub-buffer size of the channel.
    #[arg(long, default_value_t = 256 << 10)]
    subbuf_size: u64,
    /// Sub-buffers per CPU.
    #[arg(long, default_value_t = 8)]
    n_subbufs: u64,
    /// Runs of every reader, taking turns; the median counts.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Also write the measurements as JSON here (for `report`).
    #[arg(long)]
    json: Option<PathBuf>,
}

impl RunArgs {
    /// Half a buffer: what each run writes first, which no reader can lose.
    fn warm_up_bytes_per_cpu(&self) -> u64 {
        self.subbuf_size * self.n_subbufs / 2
    }

    /// Runs of every reader (at least one).
    fn rounds(&self) -> u32 {
        self.rounds.max(1)
    }
}

/// What `run` measured (its `--json` file, which `report` reads).
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
pub struct RunResult {
    /// The guest's kernel release.
    pub kernel: String,
    /// CPUs online, each with a producer.
    pub n_cpus: u64,
    /// Bytes every CPU wrote per contender, the warm-up not counted.
    pub bytes_per_cpu: u64,
    /// Size of each record.
    pub record_size: u32,
    /// Producer rate per CPU in MiB/s; 0 for as fast as it can.
    pub rate: u32,
    /// Sub-buffer size of the channel.
    pub subbuf_size: u64,
    /// Sub-buffers per CPU.
    pub n_subbufs: u64,
    /// What every CPU wrote before the measured bytes in each run.
    #[serde(default)]
    pub warm_up_bytes_per_cpu: u64,
    /// Runs of every reader (0 in files from before rounds: one).
    #[serde(default)]
    pub rounds: u32,
    /// The producer alone, the readers, dd.
    pub rows: Vec<Row>,
}

/// One measured row of a [`RunResult`].
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
pub struct Row {
    /// The contender.
    pub name: String,
    /// Bytes it recorded.
    pub bytes: u64,
    /// Its user + system CPU seconds (of the median run).
    pub cpu_seconds: f64,
    /// Records the kernel dropped.
    pub lost: u64,
    /// Records the kernel wrote.
    pub written: u64,
    /// With rounds: what every run lost, and its CPU seconds, in run order.
    #[serde(default)]
    pub lost_of_rounds: Vec<u64>,
    /// See `lost_of_rounds`.
    #[serde(default)]
    pub cpu_seconds_of_rounds: Vec<f64>,
    /// The longest a producer worker was kept from writing (relay_bench's
    /// max_pause_ns), of the median run and of every run; None from a
    /// module without that file.
    #[serde(default)]
    pub max_pause_ns: Option<u64>,
    /// See `max_pause_ns`.
    #[serde(default)]
    pub max_pause_ns_of_rounds: Vec<Option<u64>>,
    /// Wall seconds of the measured producer run.
    #[serde(default)]
    pub produce_secs: f64,
}

fn read_number(path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{path}: {text:?}"))
}

/// Starts `cmd` and waits for its first stderr line (it is reading then).
fn start(mut cmd: Command) -> Result<(Child, BufReader<std::process::ChildStderr>)> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    ensure!(!line.is_empty(), "{cmd:?} exited before it started reading");
    Ok((child, stderr))
}

/// Stops a contender with SIGINT and returns the rest of its stderr.
fn stop(mut child: Child, mut stderr: BufReader<std::process::ChildStderr>) -> Result<String> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
    let mut rest = String::new();
    stderr.read_to_string(&mut rest)?;
    let status = child.wait()?;
    ensure!(status.success(), "contender failed ({status}): {rest}");
    Ok(rest)
}

fn measure(bench: &RunArgs, name: &str, contender: Option<Command>) -> Result<Row> {
    let params = format!(
        "subbuf_size={} n_subbufs={}",
        bench.subbuf_size, bench.n_subbufs
    );
    sh(Command::new("insmod")
        .arg(bench.modules.join("relay_bench.ko"))
        .args(params.split(' ')))?;
    let result = (|| -> Result<Row> {
        let before = cpu_seconds_of_children()?;
        let started = contender.map(start).transpose()?;
        let run = |bytes: u64| -> Result<f64> {
            let t = Instant::now();
            std::fs::write(
                format!("{CTL}/run"),
                format!("{bytes} {} {}", bench.record_size, bench.rate),
            )
            .context("starting the producer")?;
            Ok(t.elapsed().as_secs_f64())
        };
        // Warm-up: half a buffer per CPU, which no reader can lose, so that
        // under TCG the code paths of writer and reader are translated
        // before the measured stream: the first execution of a path costs
        // the emulator milliseconds in which a full-speed producer on the
        // other CPU fills its buffer. Its records count like the others.
        run(bench.warm_up_bytes_per_cpu())?;
        let produce_secs = run(bench.bytes_per_cpu)?;
        let (bytes, lost) = match started {
            Some((child, stderr)) => {
                let summary = stop(child, stderr)?;
                (
                    parse_bytes(&summary)?,
                    read_number(&format!("{CTL}/dropped"))?,
                )
            }
            None => (0, read_number(&format!("{CTL}/dropped"))?),
        };
        eprintln!("{name}: producer ran {produce_secs:.1} s, {lost} records lost");
        Ok(Row {
            name: name.into(),
            bytes,
            cpu_seconds: cpu_seconds_of_children()? - before,
            lost,
            written: read_number(&format!("{CTL}/written"))?,
            max_pause_ns: read_number(&format!("{CTL}/max_pause_ns")).ok(),
            produce_secs,
            ..Row::default()
        })
    })();
    sh(Command::new("rmmod").arg("relay_bench"))?;
    result
}

/// Bytes recorded, from relay-reader's JSON summary or the cat loop's line.
fn parse_bytes(summary: &str) -> Result<u64> {
    let start = summary.find('{').context("no JSON summary")?;
    let json: serde_json::Value = serde_json::from_str(&summary[start..])
        .with_context(|| format!("parsing the summary: {summary}"))?;
    if let Some(bytes) = json["bytes"].as_u64() {
        return Ok(bytes);
    }
    let cpus = json["cpus"].as_array().context("no cpus in summary")?;
    Ok(cpus.iter().filter_map(|c| c["bytes"].as_u64()).sum())
}

/// The physical limit: copying the same bytes from /dev/zero to /dev/null.
fn dd_row(total: u64, block: u64) -> Result<Row> {
    let before = cpu_seconds_of_children()?;
    sh(Command::new("dd")
        .arg("if=/dev/zero")
        .arg("of=/dev/null")
        .arg(format!("bs={block}"))
        .arg(format!("count={}", total.div_ceil(block)))
        .arg("status=none"))?;
    Ok(Row {
        name: "dd memory copy (baseline)".into(),
        bytes: total,
        cpu_seconds: cpu_seconds_of_children()? - before,
        lost: 0,
        written: 0,
        ..Row::default()
    })
}

/// Runs every contender; prints the table and writes the JSON.
pub fn run(bench: &RunArgs) -> Result<()> {
    let _ = Command::new("rmmod").arg("relay_bench").status();
    let _ = Command::new("rmmod").arg("relay_app").status();
    sh(Command::new("insmod").arg(bench.modules.join("relay_app.ko")))?;
    let reader_local = local_copy(&bench.reader)?;
    let reader = |mode: &str, extra: &[&str]| {
        let mut cmd = Command::new(&reader_local);
        cmd.args([
            "record",
            "--quiet",
            "--json",
            "--mode",
            mode,
            "--file",
            "/dev/null",
        ]);
        cmd.args(extra).arg(CHANNEL);
        cmd
    };
    let cat_local = local_copy(&std::env::current_exe()?)?;
    let cat = || {
        let mut cmd = Command::new(&cat_local);
        cmd.args(["cat-loop", CHANNEL]);
        cmd
    };
    // The plain mmap row comes first: `row` finds rows by prefix.
    let contenders: [(&str, &dyn Fn() -> Command); 8] = [
        (DEFAULT_ROW, &|| reader("mmap", &[])),
        (NORMAL_ROW, &|| reader("mmap", &["--no-realtime"])),
        (SLICE_ROW, &|| reader("mmap", &["--slice-us", "100"])),
        (REALTIME_ROW, &|| reader("mmap", &["--realtime", "10"])),
        (SINGLE_THREAD_ROW, &|| {
            reader("mmap", &["--single-thread", "--no-realtime"])
        }),
        (SINGLE_THREAD_REALTIME_ROW, &|| {
            reader("mmap", &["--single-thread", "--realtime", "10"])
        }),
        ("relay-reader --mode read", &|| reader("read", &[])),
        ("cat loop (4 KiB read(2) + poll)", &cat),
    ];
    let mut rows = vec![measure(bench, "producer alone (no reader)", None)?];
    // Each row is the run with the median CPU time, and the losses of every
    // run are kept (one lucky run proves no zero loss).
    let runs = take_turns(bench.rounds(), contenders.len(), |i| {
        let (name, command) = contenders[i];
        measure(bench, name, Some(command())).map(Some)
    })?;
    for of_contender in runs {
        let lost: Vec<u64> = of_contender.iter().map(|r| r.lost).collect();
        let pauses = of_contender.iter().map(|r| r.max_pause_ns).collect();
        let (mut median, cpu) = median_run(of_contender, |r| r.cpu_seconds);
        median.lost_of_rounds = lost;
        median.max_pause_ns_of_rounds = pauses;
        median.cpu_seconds_of_rounds = cpu;
        rows.push(median);
    }
    let n_cpus = online_cpus()?;
    rows.push(dd_row(bench.bytes_per_cpu * n_cpus, bench.subbuf_size)?);
    let _ = Command::new("rmmod").arg("relay_app").status();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let result = RunResult {
        kernel: kernel.trim().to_string(),
        n_cpus,
        bytes_per_cpu: bench.bytes_per_cpu,
        record_size: bench.record_size,
        rate: bench.rate,
        subbuf_size: bench.subbuf_size,
        n_subbufs: bench.n_subbufs,
        warm_up_bytes_per_cpu: bench.warm_up_bytes_per_cpu(),
        rounds: bench.rounds(),
        rows,
    };
    print!("{}", table(&result));
    json::write(bench.json.as_deref(), &result)
}

/// CPUs online in this machine (the highest online CPU number, plus one).
fn online_cpus() -> Result<u64> {
    let highest = relay_reader::channel::online_cpus().into_iter().max();
    Ok(u64::from(highest.context("no online CPUs in /sys/devices/system/cpu/online")?) + 1)
}

/// CPU seconds per GiB of a row of a `run` result (NaN without bytes).
pub fn per_gib(row: &Row) -> f64 {
    if row.bytes == 0 {
        f64::NAN
    } else {
        row.cpu_seconds / (row.bytes as f64 / (1u64 << 30) as f64)
    }
}

/// The row of a `run` result whose name starts with `prefix`.
pub fn row<'a>(result: &'a RunResult, prefix: &str) -> Option<&'a Row> {
    result.rows.iter().find(|r| r.name.starts_with(prefix))
}

/// The producer's bytes per second per CPU while it writes, and the
/// milliseconds in which it fills an emptied buffer at that speed: from
/// the run of the reader that keeps up best (alone the producer mostly
/// drops, which is faster).
pub fn producer_speed(result: &RunResult) -> Option<(f64, f64)> {
    let secs = row(result, REALTIME_ROW)?.produce_secs;
    let per_sec = result.bytes_per_cpu as f64 / secs;
    let fill_ms = 1e3 * result.subbuf_size as f64 * result.n_subbufs as f64 / per_sec;
    (secs > 0.0 && fill_ms.is_finite()).then_some((per_sec, fill_ms))
}

/// The runs (1-based) of `row` that lost records while some producer was
/// kept from writing for at least `fill_ms`, with that pause in ms: the
/// time in which a buffer fills, so no reader on that virtual CPU could
/// have run either.
pub fn lost_in_a_stall(row: &Row, fill_ms: f64) -> Vec<(usize, f64)> {
    row.lost_of_rounds
        .iter()
        .zip(&row.max_pause_ns_of_rounds)
        .enumerate()
        .filter_map(|(i, (&lost, pause))| {
            let ms = (*pause)? as f64 / 1e6;
            (lost > 0 && ms >= fill_ms).then_some((i + 1, ms))
        })
        .collect()
}

/// The Markdown of a `run` result: a line on the producer, then the table.
pub fn table(result: &RunResult) -> String {
    let cat = row(result, "cat loop");
    let rate = match result.rate {
        0 => "as fast as it can".to_string(),
        r => format!("at {r} MiB/s per CPU"),
    };
    let mut s = format!(
        "Producer: relay_bench, {} CPUs x {} MiB of {}-byte records {rate}, {} x {} KiB sub-buffers per CPU, kernel {}, TCG.\n\n",
        result.n_cpus,
        result.bytes_per_cpu >> 20,
        result.record_size,
        result.n_subbufs,
        result.subbuf_size >> 10,
        result.kernel,
    );
    if let Some((per_sec, fill_ms)) = producer_speed(result) {
        s.push_str(&format!(
            "With relay-reader under SCHED_FIFO, the producer wrote {:.0} MiB/s per CPU: a CPU's {} MiB buffer is full {fill_ms:.1} ms after its reader last emptied it.\n\n",
            per_sec / (1u64 << 20) as f64,
            (result.subbuf_size * result.n_subbufs) >> 20,
        ));
    }
    s.push_str(&format!(
        "Readers: the median (by CPU time) of {} runs each, taking turns; the producer alone ran once. Each run starts with a warm-up of {} KiB per CPU (half a buffer: nothing can be lost), counted in the run; the longest producer pause is the longest any producer worker of the measured stream was kept from writing (relay_bench's max_pause_ns).\n\n",
        result.rounds.max(1),
        result.warm_up_bytes_per_cpu >> 10,
    ));
    s.push_str("| reader | MiB recorded | CPU s | CPU s of each run | CPU s per GiB | records lost | of records offered | records lost in each run | longest producer pause in each run, ms | CPU per GiB vs cat loop |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &result.rows {
        let (bytes, lost) = (r.bytes, r.lost);
        let offered = r.written + lost;
        let ratio = match cat {
            Some(c) if bytes > 0 => format!("{:.2}x", per_gib(r) / per_gib(c)),
            _ => "-".into(),
        };
        let ms = |ns: &Option<u64>| ns.map_or("-".into(), |ns| format!("{:.1}", ns as f64 / 1e6));
        // Rows measured once (the producer alone) have no runs to list.
        let pauses = match runs_cell(&r.max_pause_ns_of_rounds, ms) {
            none if none == "-" => ms(&r.max_pause_ns),
            runs => runs,
        };
        s.push_str(&format!(
            "| {} | {:.1} | {:.2} | {} | {} | {} | {} | {} | {pauses} | {} |\n",
            r.name,
            bytes as f64 / (1u64 << 20) as f64,
            r.cpu_seconds,
            runs_cell(&r.cpu_seconds_of_rounds, |c| format!("{c:.2}")),
            if bytes > 0 {
                format!("{:.2}", per_gib(r))
            } else {
                "-".into()
            },
            if offered > 0 {
                lost.to_string()
            } else {
                "-".into()
            },
            if offered > 0 {
                format!("{:.2}%", 100.0 * lost as f64 / offered as f64)
            } else {
                "-".into()
            },
            runs_cell(&r.lost_of_rounds, u64::to_string),
            ratio
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_in_a_stall_names_the_losing_runs_with_a_long_pause() {
        let row = Row {
            lost_of_rounds: vec![0, 12, 7, 0],
            max_pause_ns_of_rounds: vec![Some(9_000_000), Some(5_000_000), Some(1_000_000), None],
            ..Row::default()
        };
        // Run 1 paused long but lost nothing; run 3 lost with a short pause.
        assert_eq!(lost_in_a_stall(&row, 3.4), vec![(2, 5.0)]);
        assert!(lost_in_a_stall(&Row::default(), 3.4).is_empty());
    }
}
