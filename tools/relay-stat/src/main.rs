//! `relay-stat`: every relay channel under debugfs, with geometry, produced
//! and consumed counts, backlog and losses where the kernel tells them, and
//! file sizes (bytes produced) where it does not. Text, JSON, or a
//! top-like view refreshed every few seconds.
#![deny(unsafe_code)]

mod scan;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use relay_reader::channel::{is_mounted, online_cpus, possible_cpus, DEBUGFS};
use serde::Serialize;

use scan::Channel;

const EXAMPLES: &str = "\
Examples:
  # every relay channel: geometry, produced/consumed, backlog, losses
  relay-stat
  # the same as JSON
  relay-stat --json
  # refresh every second like top, with bytes/s per buffer (Ctrl-C quits)
  relay-stat --watch 1
  # only the block layer's channels (blktrace)
  relay-stat /sys/kernel/debug/block

Channels are recognised by the relay ioctl ABI (RELAY_IOC_GET_INFO answers),
relay-apps control files (cpuN.produced), known in-tree names (blktrace
trace<cpu>, i915 guc_log0, ath spectral_scan0, mt76 fwlog_data, t7xx relay_ch0,
iosm trace0), or a <base>0..<base>N-1 family of mode-0400 files (unconfirmed).
Nothing is read from buffer files: reading would consume the data.";

/// List the Linux relay channels under debugfs with their counters.
#[derive(Parser, Debug)]
#[command(name = "relay-stat", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Directory to search: debugfs or a directory inside it.
    #[arg(default_value = DEBUGFS)]
    root: PathBuf,
    /// Print JSON (with --watch: one JSON document per line and refresh).
    #[arg(long)]
    json: bool,
    /// Refresh every SECS seconds (default 2) until Ctrl-C, like top.
    #[arg(short, long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

/// Everything one scan found.
#[derive(Debug, Serialize)]
struct Report {
    root: PathBuf,
    possible_cpus: usize,
    online_cpus: usize,
    channels: Vec<Channel>,
}

fn take_report(root: &Path) -> Result<Report> {
    let cpus = possible_cpus();
    let channels =
        scan::scan(root, &cpus).with_context(|| format!("reading {}", root.display()))?;
    Ok(Report {
        root: root.into(),
        possible_cpus: cpus.len(),
        online_cpus: online_cpus().len(),
        channels,
    })
}

/// Refuses early, saying what to do, when debugfs cannot be read.
fn check_environment(root: &Path) -> Result<()> {
    if root.starts_with(DEBUGFS) && !is_mounted(Path::new(DEBUGFS), "debugfs") {
        bail!("debugfs is not mounted: mount it with `mount -t debugfs none {DEBUGFS}`");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "relay channels live in debugfs, which only root may read: run relay-stat as root \
             (e.g. `sudo relay-stat`)"
        );
    }
    if !root.is_dir() {
        bail!("{}: no such directory", root.display());
    }
    Ok(())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `cpu{0..3}`-style name of the buffer files.
fn files_label(c: &Channel) -> String {
    let first = c.buffers.first().map_or(0, |b| b.cpu);
    let last = c.buffers.last().map_or(0, |b| b.cpu);
    let base = c.base.display();
    if c.buffers.len() == 1 && c.base.is_file() {
        // An unnumbered buffer file (the base is the file itself).
        return base.to_string();
    }
    if first == last {
        format!("{base}{first}")
    } else {
        format!("{base}{{{first}..{last}}}")
    }
}

fn geometry_line(c: &Channel) -> String {
    let geometry = match (c.n_subbufs, c.subbuf_size) {
        (Some(n), Some(size)) => format!(
            "{n} x {size} bytes{}",
            match c.overwrite {
                Some(true) => ", overwrite",
                Some(false) => ", no-overwrite",
                None => "",
            }
        ),
        _ => "geometry not exposed (no relay ABI or control files)".into(),
    };
    match c.dropped {
        Some(d) => format!("{geometry}; dropped: {d}"),
        None => geometry,
    }
}

/// Text of one report; `prev` (the previous report and the time since)
/// adds a bytes/s column.
fn render(report: &Report, prev: Option<(&Report, Duration)>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "relay-stat: {} channel{} under {} (CPUs: {} online, {} possible)",
        report.channels.len(),
        if report.channels.len() == 1 { "" } else { "s" },
        report.root.display(),
        report.online_cpus,
        report.possible_cpus
    );
    let sizes: BTreeMap<&Path, u64> = prev
        .map(|(p, _)| {
            p.channels
                .iter()
                .flat_map(|c| &c.buffers)
                .map(|b| (b.path.as_path(), b.size))
                .collect()
        })
        .unwrap_or_default();
    for c in &report.channels {
        let scope = match c.global {
            Some(true) => "global",
            Some(false) => "per-CPU",
            None => "",
        };
        let _ = writeln!(
            out,
            "\n{}  {}{}{}, {} buffer{}  (recognised by {})",
            files_label(c),
            c.kind,
            if scope.is_empty() { "" } else { ", " },
            scope,
            c.buffers.len(),
            if c.buffers.len() == 1 { "" } else { "s" },
            c.recognised_by.join(", ")
        );
        let _ = writeln!(out, "  {}", geometry_line(c));
        let _ = write!(
            out,
            "  {:<8} {:>12} {:>9} {:>9} {:>8} {:>9} {:>10} {:>9} {:>11}",
            "buffer",
            "bytes",
            "produced",
            "consumed",
            "backlog",
            "filling",
            "lost:full",
            "lost:big",
            "overwritten"
        );
        let _ = writeln!(out, "{}", if prev.is_some() { "     bytes/s" } else { "" });
        for b in &c.buffers {
            let name = b
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let _ = write!(
                out,
                "  {:<8} {:>12} {:>9} {:>9} {:>8} {:>9} {:>10} {:>9} {:>11}",
                name,
                b.size,
                opt(b.produced),
                opt(b.consumed),
                opt(b.backlog),
                opt(b.write_offset),
                opt(b.lost_full),
                opt(b.lost_toobig),
                opt(b.lost_overwritten)
            );
            if let Some((_, elapsed)) = prev {
                let rate = sizes.get(b.path.as_path()).map(|&before| {
                    b.size.saturating_sub(before) as f64 / elapsed.as_secs_f64().max(1e-3)
                });
                let _ = write!(
                    out,
                    " {:>11}",
                    rate.map_or("-".into(), |r| format!("{r:.0}"))
                );
            }
            let _ = writeln!(
                out,
                "{}",
                match (&b.error, b.finalized) {
                    (Some(e), _) => format!("  ({e})"),
                    (None, Some(true)) => "  (finalized)".into(),
                    _ => String::new(),
                }
            );
        }
    }
    if !report.channels.is_empty() {
        let _ = writeln!(
            out,
            "\nbytes: file size = bytes produced in finished sub-buffers; produced, consumed, \
             backlog: sub-buffers;\nfilling: bytes in the sub-buffer being written; lost:*: \
             writes dropped (full, too big), sub-buffers overwritten; -: not told by the kernel"
        );
    }
    out
}

/// Writes `text` to stdout; `Ok(false)` when the reader went away (a closed
/// pipe, as with `relay-stat | head`), which ends the program quietly.
fn emit(text: &str) -> Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

fn watch(cli: &Cli, secs: f64) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let interval = Duration::from_secs_f64(secs.max(0.1));
    let mut prev: Option<(Report, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        let report = take_report(&cli.root)?;
        let now = Instant::now();
        let text = if cli.json {
            serde_json::to_string(&report)? + "\n"
        } else {
            // Home, clear screen, then the new picture.
            let previous = prev.as_ref().map(|(r, t)| (r, now - *t));
            format!("\x1b[H\x1b[2J{}", render(&report, previous))
        };
        if !emit(&text)? {
            return Ok(());
        }
        prev = Some((report, now));
        let until = now + interval;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    check_environment(&cli.root)?;
    if let Some(secs) = cli.watch {
        return watch(&cli, secs);
    }
    let report = take_report(&cli.root)?;
    let text = if cli.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report, None)
    };
    emit(&text)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.watch.is_some_and(|s| s.is_nan() || s <= 0.0) {
        let _ = Cli::command()
            .error(
                clap::error::ErrorKind::InvalidValue,
                "--watch takes a positive number of seconds",
            )
            .print();
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-stat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scan::Buffer;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["relay-stat", "--watch"]).unwrap();
        assert_eq!(cli.watch, Some(2.0));
        let cli = Cli::try_parse_from(["relay-stat", "--watch", "0.5", "--json"]).unwrap();
        assert_eq!(cli.watch, Some(0.5));
    }

    fn buffer(cpu: u32, size: u64, produced: Option<u64>) -> Buffer {
        Buffer {
            cpu,
            path: PathBuf::from(format!("/sys/kernel/debug/x/cpu{cpu}")),
            size,
            counters_from: produced.map(|_| "relay-abi"),
            produced,
            consumed: produced.map(|p| p - 1),
            backlog: produced.map(|_| 1),
            write_offset: produced.map(|_| 10),
            lost_full: produced.map(|_| 0),
            lost_toobig: produced.map(|_| 0),
            lost_overwritten: produced.map(|_| 0),
            finalized: produced.map(|_| false),
            error: None,
        }
    }

    #[test]
    fn text_shows_counters_or_dashes_and_rates_when_watching() {
        let report = |size| Report {
            root: DEBUGFS.into(),
            possible_cpus: 2,
            online_cpus: 2,
            channels: vec![Channel {
                base: "/sys/kernel/debug/x/cpu".into(),
                kind: "relay-app",
                recognised_by: vec!["relay-abi", "relay-app-control-files"],
                global: Some(false),
                subbuf_size: Some(4096),
                n_subbufs: Some(8),
                overwrite: Some(false),
                dropped: Some(3),
                buffers: vec![buffer(0, size, Some(5)), buffer(1, 0, None)],
            }],
        };
        let text = render(&report(1000), None);
        assert!(
            text.contains("relay-stat: 1 channel under /sys/kernel/debug"),
            "{text}"
        );
        assert!(text.contains("/sys/kernel/debug/x/cpu{0..1}  relay-app, per-CPU, 2 buffers"));
        assert!(
            text.contains("8 x 4096 bytes, no-overwrite; dropped: 3"),
            "{text}"
        );
        let row0 = text
            .lines()
            .find(|l| l.trim_start().starts_with("cpu0"))
            .unwrap();
        assert_eq!(
            row0.split_whitespace().collect::<Vec<_>>(),
            ["cpu0", "1000", "5", "4", "1", "10", "0", "0", "0"]
        );
        let row1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("cpu1"))
            .unwrap();
        assert_eq!(row1.split_whitespace().filter(|w| *w == "-").count(), 7);
        let before = report(1000);
        let text = render(&report(3000), Some((&before, Duration::from_secs(2))));
        let row0 = text
            .lines()
            .find(|l| l.trim_start().starts_with("cpu0"))
            .unwrap();
        assert!(row0.trim_end().ends_with("1000"), "{row0}");
    }
}
