//! `relay-bench`: readers side by side under the same producer load, inside
//! the test VM (`cargo xtask bench` boots it and runs `relay-bench run`).
//!
//! For each contender the `relay_bench` module is loaded afresh, the
//! contender starts reading its channel (output to /dev/null, so only the
//! reading is measured), every CPU writes the same number of bytes at full
//! speed, the contender is stopped with SIGINT and its CPU time (user +
//! system, from `getrusage(RUSAGE_CHILDREN)`) and the records the kernel had
//! to drop are reported. The numbers are ratios from one run on one machine:
//! compare rows, not runs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CHANNEL: &str = "/sys/kernel/debug/relay_bench/cpu";
const CTL: &str = "/sys/kernel/debug/relay_bench_ctl";

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every contender and print a Markdown table (as root, in the VM).
    Run {
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
    },
    /// The baseline: a cat-style loop per CPU file, 4 KiB read(2)s, poll
    /// with a 10 ms timeout when empty (as relay-apps' read example).
    CatLoop {
        /// Channel base path.
        channel: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run {
            modules,
            reader,
            bytes_per_cpu,
            record_size,
            rate,
            subbuf_size,
            n_subbufs,
        } => run(&Bench {
            modules,
            reader,
            bytes_per_cpu,
            record_size,
            rate,
            subbuf_size,
            n_subbufs,
        }),
        Cmd::CatLoop { channel } => cat_loop(&channel),
    }
}

struct Bench {
    modules: PathBuf,
    reader: PathBuf,
    bytes_per_cpu: u64,
    record_size: u32,
    rate: u32,
    subbuf_size: u64,
    n_subbufs: u64,
}

/// One measured row.
struct Row {
    name: String,
    bytes: u64,
    cpu_seconds: f64,
    lost: u64,
    written: u64,
}

fn cpu_seconds_of_children() -> Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
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

fn measure(bench: &Bench, name: &str, contender: Option<Command>) -> Result<Row> {
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
        let run = format!(
            "{} {} {}",
            bench.bytes_per_cpu, bench.record_size, bench.rate
        );
        let t = Instant::now();
        std::fs::write(format!("{CTL}/run"), &run).context("starting the producer")?;
        let produce_secs = t.elapsed().as_secs_f64();
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
        eprintln!("{name}: producer ran {produce_secs:.1} s");
        Ok(Row {
            name: name.into(),
            bytes,
            cpu_seconds: cpu_seconds_of_children()? - before,
            lost,
            written: read_number(&format!("{CTL}/written"))?,
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
    })
}

fn run(bench: &Bench) -> Result<()> {
    let _ = Command::new("rmmod").arg("relay_bench").status();
    let _ = Command::new("rmmod").arg("relay_app").status();
    sh(Command::new("insmod").arg(bench.modules.join("relay_app.ko")))?;
    let reader = |mode: &str| {
        let mut cmd = Command::new(&bench.reader);
        cmd.args([
            "record",
            "--quiet",
            "--json",
            "--mode",
            mode,
            "--file",
            "/dev/null",
            CHANNEL,
        ]);
        cmd
    };
    let mut cat = Command::new(std::env::current_exe()?);
    cat.args(["cat-loop", CHANNEL]);
    let mut rows = vec![
        measure(bench, "producer alone (no reader)", None)?,
        measure(bench, "relay-reader --mode mmap", Some(reader("mmap")))?,
        measure(bench, "relay-reader --mode read", Some(reader("read")))?,
        measure(bench, "cat loop (4 KiB read(2) + poll)", Some(cat))?,
    ];
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let n_cpus = cpus
        .trim()
        .split(['-', ','])
        .filter_map(|c| c.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    rows.push(dd_row(bench.bytes_per_cpu * n_cpus, bench.subbuf_size)?);
    let _ = Command::new("rmmod").arg("relay_app").status();
    print_table(bench, &rows, n_cpus);
    Ok(())
}

fn print_table(bench: &Bench, rows: &[Row], n_cpus: u64) {
    let cat = rows.iter().find(|r| r.name.starts_with("cat loop"));
    let per_gib = |r: &Row| {
        if r.bytes == 0 {
            f64::NAN
        } else {
            r.cpu_seconds / (r.bytes as f64 / (1u64 << 30) as f64)
        }
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rate = match bench.rate {
        0 => "as fast as it can".to_string(),
        r => format!("at {r} MiB/s per CPU"),
    };
    println!(
        "Producer: relay_bench, {n_cpus} CPUs x {} MiB of {}-byte records {rate}, {} x {} KiB sub-buffers per CPU, kernel {}, TCG.\n",
        bench.bytes_per_cpu >> 20,
        bench.record_size,
        bench.n_subbufs,
        bench.subbuf_size >> 10,
        kernel.trim()
    );
    println!("| reader | MiB recorded | CPU s | CPU s per GiB | records lost | of records offered | CPU per GiB vs cat loop |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let offered = r.written + r.lost;
        let ratio = match cat {
            Some(c) if r.bytes > 0 => format!("{:.2}x", per_gib(r) / per_gib(c)),
            _ => "-".into(),
        };
        println!(
            "| {} | {:.1} | {:.2} | {} | {} | {} | {} |",
            r.name,
            r.bytes as f64 / (1u64 << 20) as f64,
            r.cpu_seconds,
            if r.bytes > 0 {
                format!("{:.2}", per_gib(r))
            } else {
                "-".into()
            },
            if offered > 0 {
                r.lost.to_string()
            } else {
                "-".into()
            },
            if offered > 0 {
                format!("{:.2}%", 100.0 * r.lost as f64 / offered as f64)
            } else {
                "-".into()
            },
            ratio
        );
    }
}

fn cat_loop(channel: &Path) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut files = Vec::new();
    for cpu in 0.. {
        let path = PathBuf::from(format!("{}{cpu}", channel.display()));
        match File::open(&path) {
            Ok(f) => files.push(f),
            Err(_) if cpu > 0 => break,
            Err(e) => bail!("{}: {e}", path.display()),
        }
    }
    eprintln!("cat loop: reading {} files", files.len());
    let threads: Vec<_> = files
        .into_iter()
        .map(|mut file| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut out = File::create("/dev/null")?;
                let mut buf = vec![0u8; 4096];
                let mut total = 0u64;
                loop {
                    let n = file.read(&mut buf)?;
                    if n > 0 {
                        out.write_all(&buf[..n])?;
                        total += n as u64;
                        continue;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return Ok(total);
                    }
                    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(10u8));
                }
            })
        })
        .collect();
    let mut bytes = 0;
    for t in threads {
        bytes += t.join().expect("reader thread panicked")?;
    }
    eprintln!("{{\"bytes\": {bytes}}}");
    Ok(())
}
