//! `relay-bench blktrace`: Debian's `blktrace` beside `relay-blktrace` on the
//! same blktrace relay channel (a null_blk device) under the same fio load.
//!
//! For each tracer: it starts, writes its per-CPU files into a fresh
//! directory on the guest's tmpfs, fio runs a fixed number of I/Os, the
//! tracer is stopped with SIGINT. fio is reaped before the tracer, so
//! `getrusage(RUSAGE_CHILDREN)` taken around each tells their CPU apart.
//! Trace data is the size of the files, drops the `(dropped N)` of the
//! summary both print.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::resource::UsageWho;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::json;
use crate::process::{cpu_seconds, cpu_seconds_of_children, local_copy, sh};
use crate::rounds::{median_run, runs_cell, take_turns};

const DEV: &str = "/dev/nullb0";
const DEBUGFS_DIR: &str = "/sys/kernel/debug/block/nullb0";

/// The fio load: `ios` 4 KiB direct random reads and writes per job, from
/// a fixed seed, one job per CPU.
fn fio(ios: u64, jobs: u32) -> Command {
    let mut cmd = Command::new("fio");
    cmd.args([
        "--name=relay-bench",
        &format!("--filename={DEV}"),
        "--rw=randrw",
        "--rwmixread=75",
        "--bs=4k",
        "--direct=1",
        "--ioengine=psync",
        // The whole 1 GiB device: fio stops at `size` bytes even before
        // `number_ios` (262144 4 KiB I/Os per job at most).
        "--size=1G",
        &format!("--numjobs={jobs}"),
        &format!("--number_ios={ios}"),
        "--randrepeat=1",
        "--output=/dev/null",
    ]);
    cmd.stdout(Stdio::null());
    cmd
}

fn trace_files() -> usize {
    std::fs::read_dir(DEBUGFS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("trace"))
                .count()
        })
        .unwrap_or(0)
}

/// Trace buffer files `pid` has open.
fn open_trace_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|t| t.starts_with(DEBUGFS_DIR) && t.to_string_lossy().contains("/trace"))
                .count()
        })
        .unwrap_or(0)
}

/// Starts a tracer in `dir` and waits until it has every buffer file open.
fn start(program: &Path, args: &[&str], dir: &Path) -> Result<Child> {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout"))?)
        .stderr(File::create(dir.join("stderr"))?)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited ({status}) before tracing: {}",
                program.display(),
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        let open = open_trace_files(child.id());
        if open > 0 && open == trace_files() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not open the trace files in 60 s", program.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // BLKTRACESTART follows opening the files; leave it time.
    std::thread::sleep(Duration::from_secs(1));
    Ok(child)
}

/// "Total: N events (dropped D), K KiB data" of either tracer's summary.
fn parse_total(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Total:"))?;
    let events = line
        .trim_start()
        .strip_prefix("Total:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let dropped = line
        .split_once("(dropped ")?
        .1
        .split(')')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((events, dropped))
}

/// Runs `program` as a tracer writing into a fresh `dir` while `during`
/// runs, then stops it with SIGINT and checks that it exited well. Returns
/// what `during` returned and the tracer's CPU seconds (any child `during`
/// starts must be reaped by then, so that the two tell apart).
fn with_tracer<T>(
    name: &str,
    program: &Path,
    args: &[&str],
    dir: &Path,
    during: impl FnOnce() -> Result<T>,
) -> Result<(T, f64)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let child = start(program, args, dir)?;
    let result = during()?;
    let before = cpu_seconds_of_children()?;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
    let status = child.wait_with_output()?.status;
    let cpu = cpu_seconds_of_children()? - before;
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    ensure!(status.success(), "{name} failed ({status}): {stderr}");
    Ok((result, cpu))
}

/// What `blktrace` measured (its `--json` file, which `report` reads).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct BlktraceResult {
    /// The guest's kernel release.
    pub kernel: String,
    /// What Debian's blktrace -v printed.
    pub blktrace_version: String,
    /// I/Os every fio job performed.
    pub ios: u64,
    /// fio jobs.
    pub jobs: u32,
    /// Runs of every tracer (files from before rounds had one).
    #[serde(default = "one_round")]
    pub rounds: u32,
    /// The fio load without a tracer.
    pub load_alone: Load,
    /// One per tracer measured, then the floor ([`FLOOR_ROW`]).
    pub rows: Vec<TracerRow>,
}

fn one_round() -> u32 {
    1
}

/// The fio load's wall time and CPU seconds.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Load {
    /// Wall seconds.
    pub load_secs: f64,
    /// fio's user + system CPU seconds.
    pub load_cpu_seconds: f64,
}

/// A tracer's row of a [`BlktraceResult`], or the floor's, which has
/// no events, drops, load or idle run.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
pub struct TracerRow {
    /// The tracer.
    pub name: String,
    /// Events it recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Events the kernel dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// Bytes of trace data.
    pub bytes: u64,
    /// The tracer's user + system CPU seconds (of the median run).
    pub cpu_seconds: f64,
    /// Its CPU seconds in every run, in run order.
    #[serde(default)]
    pub cpu_seconds_of_rounds: Vec<f64>,
    /// Its CPU seconds on the idle device over the load's wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_cpu_seconds: Option<f64>,
    /// fio's CPU seconds while it traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_cpu_seconds: Option<f64>,
    /// The load's wall seconds while it traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_secs: Option<f64>,
}

/// One tracer under the load.
fn measure(name: &str, program: &Path, args: &[&str], ios: u64, jobs: u32) -> Result<TracerRow> {
    let dir = PathBuf::from("/tmp/relay-bench-blktrace").join(name.replace([' ', '-'], "_"));
    let ((load_secs, load_cpu_seconds), cpu_seconds) =
        with_tracer(name, program, args, &dir, || {
            let before = cpu_seconds_of_children()?;
            let t = Instant::now();
            sh(&mut fio(ios, jobs))?;
            Ok((
                t.elapsed().as_secs_f64(),
                cpu_seconds_of_children()? - before,
            ))
        })?;
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let (events, dropped) =
        parse_total(&stdout).with_context(|| format!("{name}: no Total line in {stdout:?}"))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().contains(".blktrace.") {
            bytes += entry.metadata()?.len();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{name}: {events} events, {bytes} bytes, dropped {dropped}, load {load_secs:.1} s");
    Ok(TracerRow {
        name: name.to_string(),
        events: Some(events),
        dropped: Some(dropped),
        bytes,
        cpu_seconds,
        load_cpu_seconds: Some(load_cpu_seconds),
        load_secs: Some(load_secs),
        ..TracerRow::default()
    })
}

/// CPU seconds of a tracer started, left tracing an idle device for `secs`
/// and stopped: its cost without events.
fn idle_cpu(name: &str, program: &Path, args: &[&str], secs: f64) -> Result<f64> {
    let dir = PathBuf::from("/tmp/relay-bench-blktrace").join("idle");
    let ((), cpu) = with_tracer(name, program, args, &dir, || {
        std::thread::sleep(Duration::from_secs_f64(secs));
        Ok(())
    })
    .context("the idle run")?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{name}: {cpu:.2} CPU s idle over {secs:.1} s");
    Ok(cpu)
}

/// What `relay-bench blktrace` takes.
#[derive(clap::Args)]
pub struct BlktraceArgs {
    /// The relay-blktrace binary.
    #[arg(long)]
    relay_blktrace: PathBuf,
    /// Debian's blktrace.
    #[arg(long, default_value = "/usr/sbin/blktrace")]
    blktrace: PathBuf,
    /// I/Os every fio job performs (at most 262144: fio stops at the
    /// end of the 1 GiB device).
    #[arg(long, default_value_t = 250_000)]
    ios: u64,
    /// fio jobs (one per CPU spreads the events over every buffer).
    #[arg(long, default_value_t = 2)]
    jobs: u32,
    /// Runs of every tracer, taking turns; the median counts.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Also write the measurements as JSON here (for `report`).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the comparison; writes JSON to `--json` and Markdown to stdout.
pub fn run(args: &BlktraceArgs) -> Result<()> {
    let (relay_blktrace, blktrace) = (&args.relay_blktrace, &args.blktrace);
    let (ios, jobs, rounds) = (args.ios, args.jobs, args.rounds.max(1));
    let _ = Command::new("rmmod").arg("null_blk").output();
    sh(Command::new("modprobe").args(["null_blk", "nr_devices=1", "gb=1", "bs=512"]))?;
    let started = Instant::now();
    while !Path::new(DEV).exists() {
        ensure!(started.elapsed() < Duration::from_secs(30), "no {DEV}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = (|| -> Result<BlktraceResult> {
        // Warm up: fio and its libraries come over the host's file system.
        sh(&mut fio(ios / 10, jobs))?;
        let before = cpu_seconds_of_children()?;
        let t = Instant::now();
        sh(&mut fio(ios, jobs))?;
        let alone = Load {
            load_secs: t.elapsed().as_secs_f64(),
            load_cpu_seconds: cpu_seconds_of_children()? - before,
        };
        // The tracers run from the guest's tmpfs (see local_copy).
        let blktrace_local = local_copy(blktrace)?;
        let relay_local = local_copy(relay_blktrace)?;
        let tracers: [(&str, &Path, &[&str]); 3] = [
            ("blktrace (Debian)", &blktrace_local, &["-d", DEV]),
            // The records Debian's blktrace gets (v1, 48 bytes an event):
            // on a kernel with BLKTRACESETUP2 relay-blktrace would record
            // v2 (64 bytes) by default, and the rows would not compare.
            ("relay-blktrace", &relay_local, &["-d", DEV, "--abi", "v1"]),
            (
                "relay-blktrace --mode mmap",
                &relay_local,
                &["-d", DEV, "--mode", "mmap", "--abi", "v1"],
            ),
        ];
        // Each row is the run with the median CPU time.
        let runs = take_turns(rounds, tracers.len(), |i| {
            let (name, program, args) = tracers[i];
            match measure(name, program, args, ios, jobs) {
                Ok(row) => Ok(Some(row)),
                // mmap needs the relay ABI on blktrace's files (the patched
                // kernel); the others must work.
                Err(e) if name.contains("mmap") => {
                    eprintln!("{name}: not measured: {e:#}");
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })?;
        let mut rows: Vec<TracerRow> = runs
            .into_iter()
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (mut median, cpu) = median_run(r, |x| x.cpu_seconds);
                median.cpu_seconds_of_rounds = cpu;
                median
            })
            .collect();
        // What each tracer costs without a load over the same wall time:
        // setting the trace up (buffers, tracepoints patched in), starting,
        // waiting and tearing down. One run each.
        for (name, program, args) in &tracers {
            if let Some(row) = rows.iter_mut().find(|r| r.name == *name) {
                let secs = row.load_secs.unwrap_or(0.0);
                eprint!("idle: ");
                row.idle_cpu_seconds = Some(idle_cpu(name, program, args, secs)?);
            }
        }
        // The floor: the same number of bytes written to the same tmpfs, as
        // every tracer here must, with nothing else done.
        let bytes = rows
            .iter()
            .find(|r| r.name == "relay-blktrace")
            .map_or(0, |r| r.bytes);
        let floor: Vec<f64> = (0..rounds)
            .map(|_| write_floor(bytes))
            .collect::<Result<_>>()?;
        let (median, floor) = median_run(floor, |&c| c);
        rows.push(TracerRow {
            name: FLOOR_ROW.to_string(),
            bytes,
            cpu_seconds: median,
            cpu_seconds_of_rounds: floor,
            ..TracerRow::default()
        });
        let version = Command::new(blktrace)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Ok(BlktraceResult {
            kernel: kernel.trim().to_string(),
            blktrace_version: version,
            ios,
            jobs,
            rounds,
            load_alone: alone,
            rows,
        })
    })();
    let _ = Command::new("rmmod").arg("null_blk").status();
    let result = result?;
    print!("{}", table(&result));
    json::write(args.json.as_deref(), &result)
}

/// The name of the floor row.
pub const FLOOR_ROW: &str = "write(2) of the same bytes to the tmpfs (floor)";

/// CPU seconds this process spends writing `bytes` in 512 KiB write(2)s to
/// two files (one per CPU, as the tracers write) on the guest's tmpfs.
fn write_floor(bytes: u64) -> Result<f64> {
    let dir = PathBuf::from("/tmp/relay-bench-blktrace/floor");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let chunk = vec![0x5au8; 512 << 10];
    let self_cpu = || cpu_seconds(UsageWho::RUSAGE_SELF);
    let before = self_cpu()?;
    for (i, share) in [bytes / 2, bytes - bytes / 2].into_iter().enumerate() {
        let mut file = File::create(dir.join(format!("floor.{i}")))?;
        let mut left = share;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
    }
    let cpu = self_cpu()? - before;
    std::fs::remove_dir_all(&dir)?;
    Ok(cpu)
}

/// CPU seconds per GiB of trace data of a row.
pub fn per_gib(row: &TracerRow) -> f64 {
    row.cpu_seconds / (row.bytes as f64 / (1u64 << 30) as f64)
}

impl BlktraceResult {
    /// The row of the tracer `name`.
    fn row(&self, name: &str) -> Option<&TracerRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// The Markdown of a `blktrace` result.
pub fn table(result: &BlktraceResult) -> String {
    let rows = &result.rows;
    let base = rows.first().map(per_gib).unwrap_or(f64::NAN);
    let floor = result.row(FLOOR_ROW).map_or(f64::NAN, per_gib);
    let mut s = format!(
        "Load: fio, {} jobs x {} random 4 KiB direct I/Os (75% reads) on null_blk ({DEV}), {} s and {:.2} CPU s without a tracer; both tracers with their default 4 x 512 KiB sub-buffers per CPU, run from the guest's tmpfs; kernel {}, {}. Each row is the median (by CPU time) of {} runs, the tracers taking turns; blktrace counts events as bytes / 48 (its estimate), relay-blktrace counts the records it wrote. The floor is this benchmark itself writing the same number of bytes to the same tmpfs in 512 KiB write(2)s: the copy into the page cache that every tracer here pays, and under TCG most of what relay-blktrace costs. Idle is one run of each tracer on the idle device over its load's wall time (setting up the trace and its buffers, patching the tracepoints in, starting the program, tearing down): what it costs without events. The last ratio compares what is left of each tracer's CPU per GiB once its idle cost and the floor are taken off: the cost of moving the events.\n\n",
        result.jobs,
        result.ios,
        fmt2(Some(result.load_alone.load_secs)),
        result.load_alone.load_cpu_seconds,
        result.kernel,
        result.blktrace_version,
        result.rounds,
    );
    let base_moving = rows.first().and_then(|b| moving_per_gib(b, floor));
    s.push_str("| tracer | events | MiB of trace data | events dropped | tracer CPU s | CPU s of each run | idle CPU s | CPU s per GiB | CPU per GiB vs blktrace | above the floor vs blktrace | above idle and the floor vs blktrace | load wall s |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let tracer = r.name != FLOOR_ROW;
        let moving = moving_per_gib(r, floor)
            .zip(base_moving)
            .map(|(m, b)| m / b)
            .filter(|x| tracer && x.is_finite());
        s.push_str(&format!(
            "| {} | {} | {:.2} | {} | {:.2} | {} | {} | {:.2} | {:.2}x | {} | {} | {} |\n",
            r.name,
            cell(r.events),
            r.bytes as f64 / (1u64 << 20) as f64,
            cell(r.dropped),
            r.cpu_seconds,
            runs_cell(&r.cpu_seconds_of_rounds, |c| format!("{c:.2}")),
            r.idle_cpu_seconds.map_or("-".into(), |c| format!("{c:.2}")),
            per_gib(r),
            per_gib(r) / base,
            if tracer {
                format!("{:.2}x", (per_gib(r) - floor) / (base - floor))
            } else {
                "-".to_string()
            },
            moving.map_or("-".into(), |m| format!("{m:.2}x")),
            fmt2(r.load_secs),
        ));
    }
    s
}

/// CPU seconds per GiB a tracer row spent beyond its idle cost and the
/// floor's `floor` per GiB: moving the events. None without an idle run.
fn moving_per_gib(row: &TracerRow, floor: f64) -> Option<f64> {
    let idle = row.idle_cpu_seconds?;
    let gib = row.bytes as f64 / (1u64 << 30) as f64;
    Some((row.cpu_seconds - idle) / gib - floor)
}

/// A tracer's CPU per GiB beyond its idle cost and the floor over
/// blktrace's, when all of them were measured.
pub fn moving_vs_blktrace(result: &BlktraceResult, name: &str) -> Option<f64> {
    let floor = per_gib(result.row(FLOOR_ROW)?);
    let r = moving_per_gib(result.row(name)?, floor)?
        / moving_per_gib(result.row("blktrace (Debian)")?, floor)?;
    r.is_finite().then_some(r)
}

/// What a tracer's CPU per GiB would be over blktrace's if moving the
/// events cost it nothing: the floor plus its idle cost. At or above an aim
/// this says no tracer could meet the aim on this machine.
pub fn fixed_cost_vs_blktrace(result: &BlktraceResult, name: &str) -> Option<f64> {
    let row = result.row(name)?;
    let gib = row.bytes as f64 / (1u64 << 30) as f64;
    let fixed = per_gib(result.row(FLOOR_ROW)?) + row.idle_cpu_seconds? / gib;
    let r = fixed / per_gib(result.row("blktrace (Debian)")?);
    r.is_finite().then_some(r)
}

/// A number of the table, `-` where a row has none.
fn cell(v: Option<u64>) -> String {
    v.map_or("-".into(), |n| n.to_string())
}

/// A tracer's CPU per GiB above the floor over blktrace's, when both rows
/// and the floor were measured.
pub fn above_floor_vs_blktrace(result: &BlktraceResult, name: &str) -> Option<f64> {
    let find = |n: &str| result.row(n).map(per_gib);
    let floor = find(FLOOR_ROW)?;
    let r = (find(name)? - floor) / (find("blktrace (Debian)")? - floor);
    r.is_finite().then_some(r)
}

fn fmt2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_cost_takes_off_idle_and_floor() {
        let gib = 1u64 << 30;
        let row = |name: &str, cpu_seconds, idle_cpu_seconds| TracerRow {
            name: name.to_string(),
            bytes: gib,
            cpu_seconds,
            idle_cpu_seconds,
            ..TracerRow::default()
        };
        let result = BlktraceResult {
            kernel: "7.3.4-relay".into(),
            blktrace_version: "2.0".into(),
            ios: 1,
            jobs: 2,
            rounds: 1,
            load_alone: Load {
                load_secs: 1.0,
                load_cpu_seconds: 1.0,
            },
            rows: vec![
                row("blktrace (Debian)", 1.0, Some(0.2)),
                row("relay-blktrace --mode mmap", 0.7, Some(0.1)),
                row("no idle run", 0.7, None),
                row(FLOOR_ROW, 0.4, None),
            ],
        };
        // blktrace moves events for 1.0 - 0.2 - 0.4 = 0.4 s/GiB, the other
        // for 0.7 - 0.1 - 0.4 = 0.2 s/GiB.
        let r = moving_vs_blktrace(&result, "relay-blktrace --mode mmap").unwrap();
        assert!((r - 0.5).abs() < 1e-9, "{r}");
        assert_eq!(moving_vs_blktrace(&result, "no idle run"), None);
        let above = above_floor_vs_blktrace(&result, "relay-blktrace --mode mmap").unwrap();
        assert!((above - 0.5).abs() < 1e-9, "{above}");
        // Moving nothing, it would still pay 0.4 + 0.1 of blktrace's 1.0.
        let fixed = fixed_cost_vs_blktrace(&result, "relay-blktrace --mode mmap").unwrap();
        assert!((fixed - 0.5).abs() < 1e-9, "{fixed}");
        assert_eq!(fixed_cost_vs_blktrace(&result, "no idle run"), None);
        let table = table(&result);
        assert!(table.contains("| 0.50x | 0.50x |"), "{table}");
    }
}
