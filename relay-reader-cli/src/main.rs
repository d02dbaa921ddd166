//! `relay-reader`: record relay channels to files or stdout, dump flight
//! recorders, and show channel state.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use relay_reader::{Mode, PaddingWord, Reader};
use relay_recorder::stop::Stop;
use relay_recorder::{or_dash, Output, Recording, Scheduling, Summary, Threads};
use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  # record the klog example channel into ./trace/cpu0, ./trace/cpu1, ... until Ctrl-C
  relay-reader record -o trace /sys/kernel/debug/relay_klog/cpu
  # ten seconds of a channel to stdout, read(2) only
  relay-reader record --stdout --mode read -w 10 /sys/kernel/debug/relay_klog/cpu
  # per-CPU files of at most 64 MiB each (cpu0.0, cpu0.1, ...), stop after 1 GiB
  relay-reader record -o trace --rotate-size 64M --size-limit 1G /sys/kernel/debug/relay_klog/cpu
  # as root the reader runs under SCHED_FIFO 10 by default; insist on it, or keep the normal policy
  relay-reader record -o trace --realtime 10 /sys/kernel/debug/relay_klog/cpu
  relay-reader record -o trace --no-realtime /sys/kernel/debug/relay_klog/cpu
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
    /// --realtime`, and fail where that is not permitted. By default the
    /// reader asks for SCHED_FIFO priority 10 where it is permitted (root,
    /// CAP_SYS_NICE, ulimit -r) and keeps its policy otherwise: the woken
    /// reader then runs at once instead of waiting for a CPU that a producer
    /// writing flat out keeps busy. The summary says which it got.
    #[arg(long, value_name = "PRIO",
          value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime: Option<u8>,
    /// Keep the normal scheduling policy (no SCHED_FIFO by default).
    #[arg(long, conflicts_with_all = ["realtime", "slice_us"])]
    no_realtime: bool,
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

impl From<PaddingArg> for PaddingWord {
    fn from(p: PaddingArg) -> PaddingWord {
        match p {
            PaddingArg::Auto => PaddingWord::Auto,
            PaddingArg::Four => PaddingWord::Four,
            PaddingArg::Eight => PaddingWord::Eight,
        }
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

impl OutputArgs {
    fn output(&self, rotate_at: Option<u64>) -> Output {
        if self.stdout {
            Output::Stdout
        } else if let Some(file) = &self.file {
            Output::File(file.clone())
        } else {
            Output::PerCpuFiles {
                dir: self.output.clone(),
                prefix: self.prefix.clone(),
                rotate_at,
            }
        }
    }
}

/// The SCHED_FIFO priority the reader asks for by default, where permitted:
/// `perf record --realtime`'s usual choice, low among real-time tasks.
const DEFAULT_PRIORITY: u8 = 10;

/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The one-line progress report on a terminal.
fn progress_line(summary: &Summary) {
    let secs = summary.seconds;
    eprint!(
        "\r{:>8.1} s  {:>12} bytes  {:>9} sub-buffers  {:>8.2} MiB/s  lost {}   ",
        secs,
        summary.bytes(),
        summary.subbufs(),
        summary.bytes() as f64 / (1 << 20) as f64 / secs.max(1e-9),
        summary.lost_subbufs()
    );
}

fn print_summary(summary: &Summary, json: bool) -> Result<()> {
    if json {
        eprintln!("{}", summary.to_json());
    } else {
        summary.write_text("relay-reader", &mut std::io::stderr())?;
    }
    Ok(())
}

fn record(args: RecordArgs) -> Result<()> {
    let stop = Stop::on_termination().context("installing signal handlers")?;
    let out = &args.out;
    let scheduling = match (args.realtime, args.slice_us, args.no_realtime) {
        (Some(priority), _, _) => Scheduling::Fifo(priority),
        (None, Some(us), _) => Scheduling::Slice(Duration::from_micros(us.into())),
        (None, None, true) => Scheduling::Inherit,
        (None, None, false) => Scheduling::FifoIfPermitted(DEFAULT_PRIORITY),
    };
    let mut recording = Recording::new(&out.channel)
        .mode(out.mode.into())
        .padding_word(out.padding_word.into())
        .threads(if args.single_thread {
            Threads::One
        } else {
            Threads::PerBuffer
        })
        .scheduling(scheduling)
        .stop(&stop)
        .output(out.output(args.rotate_size));
    if let Some(seconds) = args.duration {
        recording = recording.duration(
            Duration::try_from_secs_f64(seconds)
                .with_context(|| format!("--duration {seconds}: not a duration"))?,
        );
    }
    if let Some(limit) = args.size_limit {
        recording = recording.size_limit(limit);
    }
    let progress = !args.quiet && !out.stdout && std::io::stderr().is_terminal();
    if progress {
        recording = recording.progress(PROGRESS_INTERVAL, progress_line);
    }
    let running = recording.start()?;
    // A global buffer (one file) is written from every CPU: its one
    // thread is not pinned.
    let threads = match (args.single_thread, running.pinned()) {
        (true, _) => ", one thread",
        (false, true) => ", a pinned thread each",
        (false, false) => "",
    };
    eprintln!(
        "relay-reader: recording {} ({} buffers{threads}, {} mode{}, {}); Ctrl-C stops",
        out.channel.display(),
        running.buffers(),
        running.mode(),
        match running.padding_word().map(PaddingWord::bytes) {
            Some(Some(n)) => format!(", {n}-byte padding words"),
            Some(None) => ", padding words of a size the first sub-buffers tell".into(),
            None => String::new(),
        },
        running.scheduling()
    );
    // Everything read is saved, whatever ended the recording.
    let outcome = running.run_to_end();
    if progress {
        eprintln!();
    }
    print_summary(&outcome.summary, out.json)?;
    let full = outcome.summary.lost_full();
    if full > 0 && !out.json {
        eprintln!(
            "relay-reader: the kernel dropped {full} writes because a buffer was full: give the \
             channel more or larger sub-buffers{}{}",
            if args.single_thread {
                ", read each buffer on its CPU (without --single-thread)"
            } else {
                ""
            },
            if outcome.summary.scheduling.starts_with("SCHED_FIFO") {
                ""
            } else {
                ", or let the reader run sooner once woken (SCHED_FIFO: run as root or with \
                 CAP_SYS_NICE, or --realtime PRIO; without privileges --slice-us 100)"
            }
        );
    }
    outcome.result?;
    Ok(())
}

fn snapshot(args: SnapshotArgs) -> Result<()> {
    let out = &args.out;
    // A recording that ends at once: the final drain takes what the
    // channel holds, flushed.
    let outcome = Recording::new(&out.channel)
        .mode(out.mode.into())
        .padding_word(out.padding_word.into())
        .threads(Threads::One)
        .duration(Duration::ZERO)
        .output(out.output(None))
        .run()?;
    print_summary(&outcome.summary, out.json)?;
    outcome.result?;
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
            or_dash(r.n_subbufs),
            or_dash(r.subbuf_size),
            if r.overwrite == Some(true) {
                " (overwrite)"
            } else {
                ""
            },
            or_dash(r.produced),
            or_dash(r.consumed),
            or_dash(r.write_offset),
            or_dash(r.lost_full),
            or_dash(r.lost_toobig),
            or_dash(r.lost_overwritten)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of causes on one line.
            eprintln!("relay-reader: error: {e:#}{}", hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// What to do about an error, in this program's flags.
fn hint(e: &anyhow::Error) -> &'static str {
    let reader_error = e.chain().find_map(|cause| {
        cause.downcast_ref::<relay_reader::Error>().or_else(|| {
            match cause.downcast_ref::<relay_recorder::Error>() {
                Some(relay_recorder::Error::Reader(e)) => Some(e),
                _ => None,
            }
        })
    });
    match reader_error {
        Some(relay_reader::Error::NoAbi { .. } | relay_reader::Error::Map { .. }) => {
            " (use --mode read)"
        }
        Some(relay_reader::Error::RelayAppOverwrite { .. }) => " (use --mode mmap)",
        Some(relay_reader::Error::PaddingWordUnknown { .. }) => {
            " (give the size with --padding-word 4 or --padding-word 8)"
        }
        _ => "",
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
