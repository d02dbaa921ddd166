//! `relay-klog`: the user side of the klog example. Records what kernel code
//! logs with `klog()` / `klog_printk()` through the `relay_klog` handler
//! module, one file per CPU (`cpu0`, `cpu1`, ... as in relay-apps, each read
//! by a thread pinned to its CPU, as relay-apps read each CPU) or stdout,
//! and decodes recordings made with `relay_klog headers=1`.

mod decode;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use relay_reader::{Mode, SubBuf};
use relay_recorder::sink::{Inspect, Sink};
use relay_recorder::stop::Stop;
use relay_recorder::{Output, Recording};

/// Record klog traffic until Ctrl-C, or decode a recording.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  insmod klog.ko; insmod relay_app.ko; insmod relay_klog.ko headers=1\n  \
                  relay-klog -o klog-trace        # until Ctrl-C\n  \
                  relay-klog decode klog-trace    # time-ordered, with CPU and context"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    record: RecordArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record until Ctrl-C (what `relay-klog` alone does).
    Record(RecordArgs),
    /// Print the records of a recording made with `relay_klog headers=1`,
    /// merged by time, with their CPU and context.
    Decode(DecodeArgs),
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Channel base path of the relay_klog module.
    #[arg(long, default_value = "/sys/kernel/debug/relay_klog/cpu")]
    channel: PathBuf,
    /// Directory for the per-CPU files.
    #[arg(short, long, default_value = ".", conflicts_with = "stdout")]
    output: PathBuf,
    /// Write the records to standard output instead.
    #[arg(long)]
    stdout: bool,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(short = 'w', long)]
    duration: Option<f64>,
}

#[derive(Args, Debug)]
struct DecodeArgs {
    /// A recording directory (its cpu0, cpu1, ... files), recording files,
    /// or `-` for standard input.
    #[arg(default_value = ".")]
    inputs: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Decode(args)) => decode(&args),
        Some(Command::Record(args)) => record(args),
        None => record(cli.record),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-klog: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Records in one sub-buffer: framed records if it starts with a header,
/// lines otherwise.
fn count_records(data: &[u8]) -> u64 {
    match decode::parse(data, "") {
        Ok(records) => records.len() as u64,
        Err(_) => data.iter().filter(|&&b| b == b'\n').count() as u64,
    }
}

fn record(args: RecordArgs) -> Result<()> {
    let stop = Stop::on_termination().context("installing signal handlers")?;
    let output = if args.stdout {
        Output::Stdout
    } else {
        Output::cpu_files(args.output)
    };
    // Like relay-apps' klog program: one reader per CPU, each on its CPU
    // (the recorder's default), counting records on their way out.
    let counts: Arc<Mutex<BTreeMap<u32, Arc<AtomicU64>>>> = Arc::default();
    let mut inner = output.sinks();
    let sinks = {
        let counts = Arc::clone(&counts);
        Box::new(move |cpu| {
            let records = Arc::clone(
                counts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(cpu)
                    .or_default(),
            );
            Ok(Box::new(Inspect::new(inner(cpu)?, move |sb: &SubBuf<'_>| {
                records.fetch_add(count_records(sb.data), Ordering::Relaxed);
            })) as Box<dyn Sink + Send>)
        })
    };
    let mut recording = Recording::new(&args.channel)
        .mode(Mode::Mmap)
        .stop(&stop)
        .sinks(sinks);
    if let Some(s) = args.duration {
        recording = recording.duration(
            Duration::try_from_secs_f64(s).with_context(|| format!("-w {s}: not a duration"))?,
        );
    }
    let running = recording.start().with_context(|| {
        "is the relay_klog module loaded? (insmod klog.ko relay_app.ko relay_klog.ko)"
    })?;
    eprintln!(
        "relay-klog: recording {} buffers of {} until Ctrl-C",
        running.buffers(),
        args.channel.display()
    );
    // Every reader saves the partly filled sub-buffer of its CPU.
    running.run_to_end().result?;
    for (cpu, n) in counts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        eprintln!("cpu{cpu}: {} records", n.load(Ordering::Relaxed));
    }
    Ok(())
}

/// The files to decode: every `cpuN` of a directory, in CPU order.
fn input_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            files.push(input.clone());
            continue;
        }
        let mut cpus: Vec<(u32, PathBuf)> = std::fs::read_dir(input)
            .with_context(|| format!("listing {}", input.display()))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let cpu = name.strip_prefix("cpu")?.parse().ok()?;
                Some((cpu, e.path()))
            })
            .collect();
        if cpus.is_empty() {
            anyhow::bail!("{}: no cpuN files to decode", input.display());
        }
        cpus.sort();
        files.extend(cpus.into_iter().map(|(_, path)| path));
    }
    Ok(files)
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input")?;
    } else {
        data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(data)
}

fn decode(args: &DecodeArgs) -> Result<()> {
    let files = input_files(&args.inputs)?;
    let data = files
        .iter()
        .map(|f| read_input(f))
        .collect::<Result<Vec<_>>>()?;
    let streams = files
        .iter()
        .zip(&data)
        .map(|(f, d)| decode::parse(d, &f.display().to_string()))
        .collect::<Result<Vec<_>>>()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = decode::merge(streams)
        .iter()
        .try_for_each(|record| writeln!(out, "{record}"))
        .and_then(|()| out.flush());
    match written {
        // `relay-klog decode | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing standard output"),
    }
}
