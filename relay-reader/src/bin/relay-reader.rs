//! `relay-reader`: record relay channels to files or stdout, and show their state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use relay_reader::sink::{OneStream, PerCpuFiles, Sink};
use relay_reader::{BufStats, Mode, Reader};
use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  # record the klog example channel into ./trace/cpu0, ./trace/cpu1, ... until Ctrl-C
  relay-reader record -o trace /sys/kernel/debug/relay_klog/cpu
  # ten seconds of a channel to stdout, read(2) only
  relay-reader record --stdout --mode read --duration 10 /sys/kernel/debug/relay_klog/cpu
  # geometry and counters of every buffer
  relay-reader info /sys/kernel/debug/relay_klog/cpu";

/// Record Linux relay channels, losing nothing the kernel wrote.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record a channel until SIGINT/SIGTERM or --duration, then flush, drain and summarise.
    #[command(after_help = EXAMPLES)]
    Record(RecordArgs),
    /// Show the geometry and counters of a channel's buffers.
    Info {
        /// Channel base path (`<dir>/<base>` for `<base>0..N`) or one relay file.
        channel: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Parser, Debug)]
struct RecordArgs {
    /// Channel base path (`<dir>/<base>` for `<base>0..N`) or one relay file.
    channel: PathBuf,
    /// How to read: mmap through the relay ABI, read(2), or whichever works.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Directory for per-CPU files `<prefix><cpu>`.
    #[arg(short, long, default_value = ".", conflicts_with_all = ["stdout", "file"])]
    output: PathBuf,
    /// Prefix of the per-CPU file names.
    #[arg(long, default_value = "cpu")]
    prefix: String,
    /// Write everything to one file instead of per-CPU files.
    #[arg(long, conflicts_with = "stdout")]
    file: Option<PathBuf>,
    /// Write everything to standard output.
    #[arg(long)]
    stdout: bool,
    /// Stop after this many seconds.
    #[arg(short = 'w', long)]
    duration: Option<f64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// mmap with the relay ABI, else relay-app, else read(2).
    Auto,
    /// mmap with the relay ioctl ABI (zero-copy, kernel loss counters).
    Mmap,
    /// mmap with the relay-apps 0.9x control files and padding words.
    RelayApp,
    /// read(2): any relay file.
    Read,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Mmap => Mode::Mmap,
            ModeArg::RelayApp => Mode::RelayApp,
            ModeArg::Read => Mode::Read,
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Auto => "auto",
        Mode::Mmap => "mmap",
        Mode::RelayApp => "relay-app",
        Mode::Read => "read",
    }
}

#[derive(Serialize)]
struct CpuSummary {
    cpu: u32,
    subbufs: u64,
    bytes: u64,
    max_backlog: u64,
    lost_subbufs: u64,
    produced: Option<u64>,
    lost_full: Option<u64>,
    lost_toobig: Option<u64>,
    lost_overwritten: Option<u64>,
}

impl From<&BufStats> for CpuSummary {
    fn from(s: &BufStats) -> Self {
        CpuSummary {
            cpu: s.cpu,
            subbufs: s.subbufs,
            bytes: s.bytes,
            max_backlog: s.max_backlog,
            lost_subbufs: s.lost_subbufs,
            produced: s.kernel.map(|k| k.produced),
            lost_full: s.kernel.map(|k| k.lost_full),
            lost_toobig: s.kernel.map(|k| k.lost_toobig),
            lost_overwritten: s.kernel.map(|k| k.lost_overwritten),
        }
    }
}

#[derive(Serialize)]
struct Summary {
    channel: PathBuf,
    mode: &'static str,
    seconds: f64,
    cpus: Vec<CpuSummary>,
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn print_summary(summary: &Summary, json: bool) -> Result<()> {
    if json {
        eprintln!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    eprintln!(
        "relay-reader: {} ({} mode, {:.1} s)",
        summary.channel.display(),
        summary.mode,
        summary.seconds
    );
    eprintln!(
        "{:>4} {:>9} {:>12} {:>8} {:>9} {:>9} {:>10} {:>10} {:>12}",
        "cpu",
        "subbufs",
        "bytes",
        "backlog",
        "produced",
        "lost_sb",
        "lost_full",
        "lost_big",
        "overwritten"
    );
    for c in &summary.cpus {
        eprintln!(
            "{:>4} {:>9} {:>12} {:>8} {:>9} {:>9} {:>10} {:>10} {:>12}",
            c.cpu,
            c.subbufs,
            c.bytes,
            c.max_backlog,
            opt(c.produced),
            c.lost_subbufs,
            opt(c.lost_full),
            opt(c.lost_toobig),
            opt(c.lost_overwritten)
        );
    }
    let bytes: u64 = summary.cpus.iter().map(|c| c.bytes).sum();
    let lost_writes: u64 = summary.cpus.iter().filter_map(|c| c.lost_full).sum();
    let lost_sb: u64 = summary.cpus.iter().map(|c| c.lost_subbufs).sum();
    eprintln!("total: {bytes} bytes, {lost_sb} sub-buffers lost, {lost_writes} writes dropped by the kernel");
    Ok(())
}

fn record(args: RecordArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let mut reader = Reader::open(&args.channel, args.mode.into())?;
    let mut sink: Box<dyn Sink> = if args.stdout {
        Box::new(OneStream::stdout())
    } else if let Some(file) = &args.file {
        Box::new(OneStream::create(file)?)
    } else {
        Box::new(PerCpuFiles::create(&args.output, args.prefix.clone())?)
    };
    eprintln!(
        "relay-reader: recording {} ({} buffers, {} mode); Ctrl-C stops",
        args.channel.display(),
        reader.sources().len(),
        mode_name(reader.mode())
    );
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs_f64(s));
    let mut write = |sb: relay_reader::SubBuf<'_>| sink.write(&sb);
    let result = (|| -> Result<()> {
        while !stop.load(Ordering::Relaxed) && !reader.finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            reader.poll(Duration::from_millis(100), &mut write)?;
        }
        reader.flush_and_drain(&mut write)?;
        Ok(())
    })();
    // Save what was read even when reading failed.
    let finished = sink.finish();
    let summary = Summary {
        channel: args.channel.clone(),
        mode: mode_name(reader.mode()),
        seconds: started.elapsed().as_secs_f64(),
        cpus: reader.stats().iter().map(CpuSummary::from).collect(),
    };
    print_summary(&summary, args.json)?;
    result?;
    finished?;
    Ok(())
}

#[derive(Serialize)]
struct BufferInfo {
    path: PathBuf,
    mode: &'static str,
    subbuf_size: Option<u64>,
    n_subbufs: Option<u64>,
    overwrite: Option<bool>,
    produced: Option<u64>,
    consumed: Option<u64>,
    lost_full: Option<u64>,
    lost_overwritten: Option<u64>,
}

fn info(channel: PathBuf, json: bool) -> Result<()> {
    let mut reader = Reader::open(&channel, Mode::Auto)?;
    let mut rows = Vec::new();
    for source in reader.sources_mut() {
        let mut row = BufferInfo {
            path: source.path().into(),
            mode: mode_name(source.mode()),
            subbuf_size: None,
            n_subbufs: None,
            overwrite: None,
            produced: None,
            consumed: None,
            lost_full: None,
            lost_overwritten: None,
        };
        if let Some((info, state)) = source.kernel_state()? {
            row.subbuf_size = Some(info.subbuf_size);
            row.n_subbufs = Some(info.n_subbufs);
            row.overwrite = Some(info.overwrite);
            row.produced = Some(state.produced);
            row.consumed = Some(state.consumed);
            row.lost_full = Some(state.lost_full);
            row.lost_overwritten = Some(state.lost_overwritten);
        }
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in &rows {
        println!(
            "{}: {} mode, {} x {} bytes{}, produced {}, consumed {}, dropped writes {}, overwritten {}",
            r.path.display(),
            r.mode,
            opt(r.n_subbufs),
            opt(r.subbuf_size),
            if r.overwrite == Some(true) { " (overwrite)" } else { "" },
            opt(r.produced),
            opt(r.consumed),
            opt(r.lost_full),
            opt(r.lost_overwritten)
        );
    }
    if rows.is_empty() {
        bail!("no buffers");
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Record(args) => record(args),
        Command::Info { channel, json } => info(channel, json),
    }
}
