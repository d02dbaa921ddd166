//! `relay-reader`: record relay channels to files or stdout, dump flight
//! recorders, and show channel state.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use relay_reader::pinned::{PinnedReaders, SinkFactory};
use relay_reader::sink::{OneStream, PerCpuFiles, Shared, Sink};
use relay_reader::stop::Stop;
use relay_reader::{BufStats, Mode, OpenOptions, PaddingWord, Reader, SubBuf};
use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  # record the klog example channel into ./trace/cpu0, ./trace/cpu1, ... until Ctrl-C
  relay-reader record -o trace /sys/kernel/debug/relay_klog/cpu
  # ten seconds of a channel to stdout, read(2) only
  relay-reader record --stdout --mode read -w 10 /sys/kernel/debug/relay_klog/cpu
  # per-CPU files of at most 64 MiB each (cpu0.0, cpu0.1, ...), stop after 1 GiB
  relay-reader record -o trace --rotate-size 64M --size-limit 1G /sys/kernel/debug/relay_klog/cpu
  # keep up with a producer that writes flat out on every CPU (real-time reader)
  relay-reader record -o trace --realtime 10 /sys/kernel/debug/relay_klog/cpu
  # dump a flight-recorder (overwrite mode) channel once
  relay-reader snapshot -o crash /sys/kernel/debug/relay_klog/cpu
  # geometry and counters of every buffer
  relay-reader info /sys/kernel/debug/relay_klog/cpu";

/// Record Linux relay channels, losing nothing the kernel wrote.
#[derive(Parser, Debug)]
#[command(name = "relay-reader", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record a channel until SIGINT/SIGTERM, --duration or --size-limit; then
    /// flush, drain, save and summarise.
    #[command(after_help = EXAMPLES)]
    Record(RecordArgs),
    /// Take what an (overwrite-mode) channel holds now, flushed, and exit.
    Snapshot(SnapshotArgs),
    /// Show the geometry and counters of a channel's buffers.
    Info {
        /// Channel base path (`<dir>/<base>` for `<base>0..N`) or one relay file.
        channel: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(hide = true)]
    Manpage,
}

#[derive(clap::Args, Debug)]
struct OutputArgs {
    /// Channel base path (`<dir>/<base>` for `<base>0..N`) or one relay file.
    channel: PathBuf,
    /// How to read: mmap through the relay ABI, relay-apps control files,
    /// read(2), or the first of those that works.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// relay-app mode: bytes of the padding word at the head of every
    /// sub-buffer, 4 (an `unsigned int`, as relay.rst's example writes) or
    /// 8 (a `size_t`, as some copies of relay-apps' klog write), or detected
    /// from the sub-buffers, which fails where they fit both.
    #[arg(long, value_enum, default_value_t = PaddingArg::Auto)]
    padding_word: PaddingArg,
    /// Directory for per-CPU files `<prefix><cpu>`.
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    /// Prefix of the per-CPU file names.
    #[arg(long, default_value = "cpu")]
    prefix: String,
    /// Write everything to one file instead of per-CPU files.
    #[arg(long, conflicts_with = "stdout")]
    file: Option<PathBuf>,
    /// Write everything to standard output (the summary goes to stderr).
    #[arg(long)]
    stdout: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    #[command(flatten)]
    out: OutputArgs,
    /// Stop after this many seconds.
    #[arg(short = 'w', long)]
    duration: Option<f64>,
    /// Stop once this many bytes were recorded (suffixes K, M, G).
    #[arg(long, value_parser = parse_size)]
    size_limit: Option<u64>,
    /// Start a new per-CPU file (`<prefix><cpu>.<n>`) at this size (K, M, G).
    #[arg(long, value_parser = parse_size, conflicts_with_all = ["file", "stdout"])]
    rotate_size: Option<u64>,
    /// No progress line, even on a terminal.
    #[arg(short, long)]
    quiet: bool,
    /// Read under SCHED_FIFO at this priority (1-99), as `perf record
    /// --realtime`: the woken reader runs at once instead of waiting for a
    /// CPU that a producer writing flat out keeps busy. It narrows the time
    /// in which buffers can fill; it does not guarantee zero loss. Needs
    /// root or CAP_SYS_NICE.
    #[arg(long, value_name = "PRIO",
          value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime: Option<u8>,
    /// Read under the normal policy with a scheduling slice of this many
    /// microseconds (100-100000): Linux 6.12's EEVDF lets a woken task with
    /// a shorter slice than the running one preempt it, so a short slice
    /// gets the reader its CPU from a busy producer without privileges.
    #[arg(long, value_name = "MICROSECONDS", conflicts_with = "realtime",
          value_parser = clap::value_parser!(u32).range(100..=100_000))]
    slice_us: Option<u32>,
    /// Read every buffer from one thread. By default each buffer has a
    /// thread of its own, pinned to the buffer's CPU, as blktrace does: it
    /// is woken on the CPU that filled the buffer, where it competes with
    /// that CPU's producer alone.
    #[arg(long)]
    single_thread: bool,
}

#[derive(clap::Args, Debug)]
struct SnapshotArgs {
    #[command(flatten)]
    out: OutputArgs,
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PaddingArg {
    /// Detected from the sub-buffers.
    Auto,
    /// An `unsigned int`.
    #[value(name = "4")]
    Four,
    /// A `size_t` of a 64-bit kernel.
    #[value(name = "8")]
    Eight,
}

impl OutputArgs {
    fn options(&self) -> OpenOptions {
        OpenOptions::new(self.mode.into()).padding_word(match self.padding_word {
            PaddingArg::Auto => PaddingWord::Auto,
            PaddingArg::Four => PaddingWord::Four,
            PaddingArg::Eight => PaddingWord::Eight,
        })
    }
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

/// Parses `4096`, `64K`, `16M`, `1G` (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 4096, 64K, 16M or 1G"))?;
    n.checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
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
    /// relay-app mode: bytes of the padding words, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    padding_word: Option<u64>,
    seconds: f64,
    cpus: Vec<CpuSummary>,
}

impl Summary {
    fn of(
        channel: &Path,
        mode: Mode,
        padding: Option<PaddingWord>,
        stats: &[BufStats],
        started: Instant,
    ) -> Summary {
        Summary {
            channel: channel.into(),
            mode: mode.name(),
            padding_word: padding.and_then(PaddingWord::bytes),
            seconds: started.elapsed().as_secs_f64(),
            cpus: stats.iter().map(CpuSummary::from).collect(),
        }
    }

    fn print(&self, json: bool) -> Result<()> {
        if json {
            eprintln!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        eprintln!(
            "relay-reader: {} ({} mode{}, {:.1} s)",
            self.channel.display(),
            self.mode,
            self.padding_word
                .map_or_else(String::new, |n| format!(", {n}-byte padding words")),
            self.seconds
        );
        eprintln!(
            "{:>4} {:>9} {:>12} {:>8} {:>9} {:>9} {:>10} {:>9} {:>12}",
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
        for c in &self.cpus {
            eprintln!(
                "{:>4} {:>9} {:>12} {:>8} {:>9} {:>9} {:>10} {:>9} {:>12}",
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
        let bytes: u64 = self.cpus.iter().map(|c| c.bytes).sum();
        let lost_sb: u64 = self.cpus.iter().map(|c| c.lost_subbufs).sum();
        let dropped: u64 = self
            .cpus
            .iter()
            .map(|c| c.lost_full.unwrap_or(0) + c.lost_toobig.unwrap_or(0))
            .sum();
        let counted = self.cpus.iter().any(|c| c.lost_full.is_some());
        eprintln!(
            "total: {bytes} bytes, {lost_sb} sub-buffers lost to overwriting, {}",
            if counted {
                format!("{dropped} writes dropped by the kernel")
            } else {
                "kernel drops not visible in this mode".into()
            }
        );
        Ok(())
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn open_sink(out: &OutputArgs, rotate: Option<u64>) -> Result<Box<dyn Sink + Send>> {
    Ok(if out.stdout {
        Box::new(OneStream::stdout())
    } else if let Some(file) = &out.file {
        Box::new(OneStream::create(file)?)
    } else {
        let files = PerCpuFiles::create(&out.output, out.prefix.clone())?;
        Box::new(match rotate {
            Some(bytes) => files.rotate_at(bytes),
            None => files,
        })
    })
}

/// The sinks of a recording with a thread per buffer: per-CPU files each
/// thread writes its own, one stream they share.
fn sink_factory(out: &OutputArgs, rotate: Option<u64>, limit: ByteLimit) -> Result<SinkFactory> {
    let limited = move |sink: Box<dyn Sink + Send>| -> Box<dyn Sink + Send> {
        Box::new(Limited {
            inner: sink,
            limit: limit.clone(),
        })
    };
    if out.stdout || out.file.is_some() {
        let shared = Shared::new(open_sink(out, None)?);
        return Ok(Box::new(move |_cpu| Ok(limited(Box::new(shared.clone())))));
    }
    // PinnedReaders::start makes every sink before it starts a thread, so a
    // directory that cannot be made is an error before any thread runs.
    let (dir, prefix) = (out.output.clone(), out.prefix.clone());
    Ok(Box::new(move |_cpu| {
        let files = PerCpuFiles::create(&dir, prefix.clone())?;
        Ok(limited(Box::new(match rotate {
            Some(bytes) => files.rotate_at(bytes),
            None => files,
        })))
    }))
}

/// `--size-limit` for recordings with a thread per buffer: the bytes every
/// thread wrote, and the stop raised once they reach the limit.
#[derive(Clone)]
struct ByteLimit {
    written: Arc<AtomicU64>,
    limit: Option<u64>,
    stop: Stop,
}

/// A sink that counts towards a [`ByteLimit`].
struct Limited {
    inner: Box<dyn Sink + Send>,
    limit: ByteLimit,
}

impl Sink for Limited {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        self.inner.write(sb)?;
        let len = sb.data.len() as u64;
        let written = self.limit.written.fetch_add(len, Ordering::Relaxed) + len;
        if self.limit.limit.is_some_and(|limit| written >= limit) {
            self.limit.stop.raise();
        }
        Ok(())
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        self.inner.finish()
    }
}

/// How often the progress line is refreshed; also the longest wait in
/// `poll`, since stopping does not need a wake-up (see `Stop`).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// A one-line progress report on a terminal, refreshed once a second.
struct Progress {
    enabled: bool,
    last: Instant,
}

impl Progress {
    fn new(args: &RecordArgs) -> Progress {
        Progress {
            enabled: !args.quiet && !args.out.stdout && std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, stats: &[BufStats], started: Instant) {
        if !self.enabled || self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let bytes: u64 = stats.iter().map(|s| s.bytes).sum();
        let subbufs: u64 = stats.iter().map(|s| s.subbufs).sum();
        let lost: u64 = stats.iter().map(|s| s.lost_subbufs).sum();
        let secs = started.elapsed().as_secs_f64();
        eprint!(
            "\r{:>8.1} s  {:>12} bytes  {:>9} sub-buffers  {:>8.2} MiB/s  lost {lost}   ",
            secs,
            bytes,
            subbufs,
            bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
        );
    }

    fn done(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

fn record(args: RecordArgs) -> Result<()> {
    let stop = Stop::on_signals(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .context("installing signal handlers")?;
    // Set before any reading thread starts: they inherit it.
    if let Some(priority) = args.realtime {
        relay_reader::realtime::set_fifo_priority(priority)?;
    }
    if let Some(us) = args.slice_us {
        relay_reader::realtime::set_slice(Duration::from_micros(us.into()))?;
    }
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs_f64(s));
    // The longest sleep: until the deadline or the next progress line.
    let next_wake = || {
        deadline.map_or(PROGRESS_INTERVAL, |d| {
            d.saturating_duration_since(Instant::now())
                .min(PROGRESS_INTERVAL)
        })
    };
    let timed_out = || deadline.is_some_and(|d| Instant::now() >= d);
    let mut progress = Progress::new(&args);
    let out = &args.out;
    let (summary, result) = if args.single_thread {
        record_in_one_thread(&args, &stop, &mut progress, started, &next_wake, &timed_out)?
    } else {
        let limit = ByteLimit {
            written: Arc::new(AtomicU64::new(0)),
            limit: args.size_limit,
            stop: stop.clone(),
        };
        let sinks = sink_factory(out, args.rotate_size, limit)?;
        let mut readers = PinnedReaders::start_with(&out.channel, out.options(), &stop, sinks)?;
        // A global buffer (one file) is written from every CPU: its one
        // thread is not pinned.
        let threads = if readers.buffers() > 1 {
            ", a pinned thread each"
        } else {
            ""
        };
        let how = (readers.mode(), readers.padding_word());
        announce(&args, readers.buffers(), how, threads);
        let running = (|| -> Result<()> {
            while !timed_out() && readers.wait(next_wake())? {
                progress.update(&readers.stats(), started);
            }
            Ok(())
        })();
        let (mode, padding) = (readers.mode(), readers.padding_word());
        let base = readers.base().to_owned();
        // Every thread saves its tail, whatever ended the recording.
        let (stats, finished) = readers.finish();
        progress.done();
        (
            Summary::of(&base, mode, padding, &stats, started),
            running.and(finished.map_err(Into::into)),
        )
    };
    summary.print(out.json)?;
    let full: u64 = summary.cpus.iter().filter_map(|c| c.lost_full).sum();
    if full > 0 && !out.json {
        eprintln!(
            "relay-reader: the kernel dropped {full} writes because a buffer was full: give the \
             channel more or larger sub-buffers{}{}",
            if args.single_thread {
                ", read each buffer on its CPU (without --single-thread)"
            } else {
                ""
            },
            if args.realtime.is_some() {
                ""
            } else {
                ", or let the reader run sooner once woken (--slice-us 100, or --realtime PRIO \
                 for SCHED_FIFO)"
            }
        );
    }
    result
}

/// Says what is being recorded, and how: the mode, and in relay-app mode
/// the padding word.
fn announce(args: &RecordArgs, buffers: usize, how: (Mode, Option<PaddingWord>), threads: &str) {
    let (mode, padding) = how;
    eprintln!(
        "relay-reader: recording {} ({buffers} buffers{threads}, {} mode{}{}); Ctrl-C stops",
        args.out.channel.display(),
        mode.name(),
        match padding.map(PaddingWord::bytes) {
            Some(Some(n)) => format!(", {n}-byte padding words"),
            Some(None) => ", padding words of a size the first sub-buffers tell".into(),
            None => String::new(),
        },
        match (args.realtime, args.slice_us) {
            (Some(p), _) => format!(", SCHED_FIFO priority {p}"),
            (None, Some(us)) => format!(", {us} µs slice"),
            (None, None) => String::new(),
        }
    );
}

/// `--single-thread`: one [`Reader`] polls every buffer.
fn record_in_one_thread(
    args: &RecordArgs,
    stop: &Stop,
    progress: &mut Progress,
    started: Instant,
    next_wake: &dyn Fn() -> Duration,
    timed_out: &dyn Fn() -> bool,
) -> Result<(Summary, Result<()>)> {
    let out = &args.out;
    let mut reader = Reader::open_with(&out.channel, out.options())?;
    // A signal wakes the reader: it sleeps while the channel is idle.
    stop.wake_on_stop(reader.waker());
    let mut sink = open_sink(out, args.rotate_size)?;
    let how = (reader.mode(), reader.padding_word());
    announce(args, reader.sources().len(), how, ", one thread");
    let mut write = |sb: SubBuf<'_>| sink.write(&sb);
    let result = (|| -> Result<()> {
        loop {
            let recorded = || reader.stats().iter().map(|s| s.bytes).sum::<u64>();
            let limit_reached = args.size_limit.is_some_and(|limit| recorded() >= limit);
            if stop.is_raised() || reader.finished() || limit_reached || timed_out() {
                break;
            }
            reader.poll(next_wake(), &mut write)?;
            progress.update(&reader.stats(), started);
        }
        // What the kernel already holds is saved too, limit or not.
        reader.flush_and_drain(&mut write)?;
        Ok(())
    })();
    progress.done();
    // Save what was read even when reading failed.
    let finished = sink.finish();
    let summary = Summary::of(
        reader.base(),
        reader.mode(),
        reader.padding_word(),
        &reader.stats(),
        started,
    );
    Ok((summary, result.and(finished.map_err(Into::into))))
}

fn snapshot(args: SnapshotArgs) -> Result<()> {
    let out = &args.out;
    let started = Instant::now();
    let mut reader = Reader::open_with(&out.channel, out.options())?;
    let mut sink = open_sink(out, None)?;
    let result = reader.flush_and_drain(&mut |sb| sink.write(&sb));
    let finished = sink.finish();
    let padding = reader.padding_word();
    Summary::of(
        reader.base(),
        reader.mode(),
        padding,
        &reader.stats(),
        started,
    )
    .print(out.json)?;
    result?;
    finished?;
    Ok(())
}

#[derive(Serialize)]
struct InfoRow {
    path: PathBuf,
    mode: &'static str,
    subbuf_size: Option<u64>,
    n_subbufs: Option<u64>,
    overwrite: Option<bool>,
    produced: Option<u64>,
    consumed: Option<u64>,
    write_offset: Option<u64>,
    lost_full: Option<u64>,
    lost_toobig: Option<u64>,
    lost_overwritten: Option<u64>,
}

fn info(channel: PathBuf, json: bool) -> Result<()> {
    let mut reader = Reader::open(&channel, Mode::Auto)?;
    let mut rows = Vec::new();
    for source in reader.sources_mut() {
        let mut row = InfoRow {
            path: source.path().into(),
            mode: source.mode().name(),
            subbuf_size: None,
            n_subbufs: None,
            overwrite: None,
            produced: None,
            consumed: None,
            write_offset: None,
            lost_full: None,
            lost_toobig: None,
            lost_overwritten: None,
        };
        if let Some((info, state)) = source.kernel_state()? {
            row.subbuf_size = Some(info.subbuf_size);
            row.n_subbufs = Some(info.n_subbufs);
            row.overwrite = Some(info.overwrite);
            row.produced = Some(state.produced);
            row.consumed = Some(state.consumed);
            row.write_offset = Some(state.write_offset);
            row.lost_full = Some(state.lost_full);
            row.lost_toobig = Some(state.lost_toobig);
            row.lost_overwritten = Some(state.lost_overwritten);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no buffers", channel.display());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in &rows {
        println!(
            "{}: {} mode, {} x {} bytes{}, produced {}, consumed {}, current sub-buffer {} bytes, \
             dropped writes {} (+{} too big), overwritten {}",
            r.path.display(),
            r.mode,
            opt(r.n_subbufs),
            opt(r.subbuf_size),
            if r.overwrite == Some(true) {
                " (overwrite)"
            } else {
                ""
            },
            opt(r.produced),
            opt(r.consumed),
            opt(r.write_offset),
            opt(r.lost_full),
            opt(r.lost_toobig),
            opt(r.lost_overwritten)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of causes on one line.
            eprintln!("relay-reader: error: {e:#}");
            if let Some(relay_reader::Error::PaddingWordUnknown { .. }) = e.downcast_ref() {
                eprintln!("relay-reader: give the size with --padding-word 4 or --padding-word 8");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Record(args) => record(args),
        Command::Snapshot(args) => snapshot(args),
        Command::Info { channel, json } => info(channel, json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "relay-reader",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
