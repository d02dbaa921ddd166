//! `relay-blktrace`: block I/O tracing in blktrace's spirit, recorded through
//! the relay reader. Sets a trace up with the BLKTRACE ioctls (version 2
//! records where the kernel has `BLKTRACESETUP2`, version 1 elsewhere),
//! records the per-CPU relay channel `<debugfs>/block/<dev>/trace<cpu>`
//! into `<dev>.blktrace.<cpu>` files (or whole records to standard output),
//! and always tears the trace down. `relay-blktrace parse` prints
//! recordings of either version as blkparse does, `relay-blktrace convert`
//! turns v2 recordings into the v1 files Debian's blkparse reads.
#![deny(unsafe_code)]

mod convert;
mod input;
mod ioctl;
mod parse;
mod record;
mod tracer;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use relay_reader::{Mode, SubBuf};
use relay_recorder::sink::{OneStream, PerCpuFiles, Shared, Sink};
use relay_recorder::stop::Stop;
use relay_recorder::{Recording, Running, Scheduling, Threads};

use convert::ToV1;
use input::Input;
use record::{Abi, Cutter, Record};
use tracer::{AbiChoice, Chosen, Params, Tracer};

const EXAMPLES: &str = "\
Examples:
  # trace sda until Ctrl-C into ./sda.blktrace.<cpu>, then parse it
  relay-blktrace -d /dev/sda
  blkparse -i sda
  # ten seconds of two devices into traces/ (traces/sda.blktrace.0, traces/sdb.blktrace.0, ...)
  relay-blktrace -d /dev/sda -d /dev/sdb -w 10 -D traces
  # live: whole records to standard output, parsed as they come
  relay-blktrace -d /dev/sda -o - | blkparse -i -
  # queue and completion events only, 8 sub-buffers of 1 MiB per CPU
  relay-blktrace -d /dev/sda -a queue -a complete -b 1024 -n 8
  # a real-time tracer on busy CPUs
  relay-blktrace -d /dev/sda --realtime 10
  # remove a trace that a killed tracer left set up
  relay-blktrace -k -d /dev/sda
  # version 1 records on a kernel with BLKTRACESETUP2 (6.19 on), for blkparse
  relay-blktrace -d /dev/sda --abi v1
  # v2 recorded (zone management and write-zeroes included), v1 written
  relay-blktrace -d /dev/sda --to v1 -o - | blkparse -i -
  # a recording of either version as text, or a v2 recording as v1 files
  relay-blktrace parse -i sda
  relay-blktrace convert --to v1 -i sda -o sda-v1 && blkparse -i sda-v1";

/// How long a quiet buffer keeps records back with `-o -` unless
/// `--idle-flush` says otherwise: each I/O shows within about this long.
const LIVE_IDLE_FLUSH: Duration = Duration::from_millis(500);

/// Trace block I/O into files blkparse reads, through the relay reader.
///
/// Sets tracing up on each device with BLKTRACESETUP/BLKTRACESTART, records
/// the per-CPU relay channel <debugfs>/block/<dev>/trace<cpu> until
/// SIGINT/SIGTERM or -w, then stops, drains every buffer, reads the kernel's
/// `dropped` count, tears the trace down (also on errors) and prints a
/// summary like blktrace's.
#[derive(Parser, Debug)]
#[command(
    name = "relay-blktrace",
    version,
    about,
    after_help = EXAMPLES,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Block device to trace (repeat for several devices at once).
    #[arg(short = 'd', long = "dev", value_name = "DEV", required = true)]
    devices: Vec<PathBuf>,
    /// Sub-buffer size in KiB.
    #[arg(short = 'b', long = "buffer-size", value_name = "KiB", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=4_194_303))]
    buffer_kib: u32,
    /// Sub-buffers per CPU.
    #[arg(short = 'n', long = "num-sub-buffers", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(2..))]
    buffers: u32,
    /// Directory for the output files.
    #[arg(
        short = 'D',
        long = "output-dir",
        value_name = "DIR",
        default_value = "."
    )]
    output_dir: PathBuf,
    /// Base name of the output files (`<NAME>.blktrace.<cpu>`; one device
    /// only), or `-` for whole records on standard output.
    #[arg(short = 'o', long = "output", value_name = "NAME")]
    output: Option<String>,
    /// Stop after this many seconds.
    #[arg(short = 'w', long = "stopwatch", value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Trace only these categories (repeatable): read, write, barrier (flush),
    /// sync, queue, requeue, issue, complete, fs, pc, notify, ahead, meta,
    /// discard, drv_data, fua; with the v2 ABI also zone-append, zone-reset,
    /// zone-reset-all, zone-finish, zone-open, zone-close, write-zeroes.
    /// Default: all.
    #[arg(short = 'a', long = "act-mask", value_name = "MASK", value_parser = record::category)]
    act_mask: Vec<u64>,
    /// Category mask as a hexadecimal number (BLK_TC_* bits); -a adds to it.
    #[arg(short = 'A', long = "set-mask", value_name = "HEX", value_parser = parse_hex_mask)]
    set_mask: Option<u64>,
    /// Which trace records the kernel writes: v2 (struct blk_io_trace2,
    /// version 8: zone management and write-zeroes too) where it has
    /// BLKTRACESETUP2 (Linux 6.19 on), else v1 (auto); or one of them.
    #[arg(long, value_enum, default_value_t = AbiArg::Auto)]
    abi: AbiArg,
    /// Write version 1 records whatever the trace records, for Debian's
    /// blkparse: events v1 cannot carry are counted and reported, not written.
    #[arg(long = "to", value_enum, value_name = "VERSION")]
    to: Option<ToArg>,
    /// Hand over records waiting in a partly filled sub-buffer after this
    /// many seconds without a full one, so that each I/O shows soon after it
    /// happened (default 0.5 with -o -, off for files; 0 turns it off).
    #[arg(long, value_name = "SECONDS")]
    idle_flush: Option<f64>,
    /// Where debugfs is mounted.
    #[arg(
        short = 'r',
        long = "relay",
        value_name = "PATH",
        default_value = "/sys/kernel/debug"
    )]
    debugfs: PathBuf,
    /// How to read the channel: mmap through the relay ABI where the kernel
    /// offers it, read(2) otherwise (auto); or force one.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Read under SCHED_FIFO at this priority (1-99), as `perf record
    /// --realtime`: the woken tracer runs at once instead of waiting for a
    /// busy CPU (fewer drops, no guarantee of none).
    #[arg(long, value_name = "PRIO",
          value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime: Option<u8>,
    /// Remove traces left set up on the devices (by a killed tracer), then exit.
    #[arg(short = 'k', long = "kill")]
    kill: bool,
}

/// `relay-blktrace parse` and `relay-blktrace convert`.
#[derive(Subcommand, Debug)]
enum Command {
    /// Print recordings of either version as blkparse prints them by
    /// default: one line per event, in time order, then each device's event
    /// count (blkparse's statistics are left out). Zone management and
    /// write-zeroes of v2 recordings show in the RWBS column as ZA, ZR,
    /// ZRA, ZF, ZO, ZC and WZ, zone write plugging as the actions ZP and ZU.
    Parse {
        /// A recording: NAME for NAME.blktrace.<cpu> (as blkparse -i), one
        /// file, or - for standard input, printed as it arrives. Repeatable.
        #[arg(short = 'i', long = "input", value_name = "INPUT", required = true)]
        inputs: Vec<String>,
    },
    /// Turn recordings into version 1 files that Debian's blkparse reads.
    /// v1 records stay as they are; a v2 record becomes the v1 record of the
    /// same event when its 64-bit action fits v1's 32 bits. Those that do not
    /// (zone management, write-zeroes, zone write plugging) are counted by
    /// kind and reported, never dropped silently.
    Convert {
        /// The version to write.
        #[arg(long = "to", value_enum, value_name = "VERSION")]
        to: ToArg,
        /// A recording: NAME for NAME.blktrace.<cpu>, one file, or - for
        /// standard input, converted as it arrives. Repeatable.
        #[arg(short = 'i', long = "input", value_name = "INPUT", required = true)]
        inputs: Vec<String>,
        /// NAME for NAME.blktrace.<cpu> (each record into its CPU's file), or
        /// - for standard output.
        #[arg(short = 'o', long = "output", value_name = "NAME")]
        output: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AbiArg {
    /// v2 where the kernel has BLKTRACESETUP2, v1 elsewhere.
    Auto,
    /// struct blk_io_trace (BLKTRACESETUP), what blkparse 1.2 reads.
    V1,
    /// struct blk_io_trace2 (BLKTRACESETUP2, Linux 6.19 on).
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ToArg {
    /// struct blk_io_trace, version 7.
    V1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// mmap where the relay ABI is offered, read(2) otherwise.
    Auto,
    /// read(2) (the only way on stock kernels: blktrace's files cannot be mapped).
    Read,
    /// mmap through the relay ioctl ABI.
    Mmap,
}

fn parse_hex_mask(text: &str) -> Result<u64, String> {
    let digits = text
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    u64::from_str_radix(digits, 16).map_err(|_| format!("{text:?} is not a hex mask"))
}

/// Refuses to start without root or debugfs, saying how to get them.
fn check_environment(debugfs: &Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "block tracing needs root (BLKTRACESETUP needs CAP_SYS_ADMIN and debugfs is \
             readable by root only): run relay-blktrace as root"
        );
    }
    if !debugfs.join("block").is_dir() {
        if !relay_reader::channel::is_mounted(debugfs, "debugfs") {
            bail!(
                "debugfs is not mounted at {0}: mount it with `mount -t debugfs none {0}` \
                 (or give its mount point with -r)",
                debugfs.display()
            );
        }
        bail!(
            "{} is missing: is {} debugfs, and the kernel built with CONFIG_BLK_DEV_IO_TRACE?",
            debugfs.join("block").display(),
            debugfs.display()
        );
    }
    Ok(())
}

/// What one device recorded.
struct Report {
    name: String,
    /// The format the kernel wrote, and how it was chosen.
    abi: Abi,
    chosen: Chosen,
    /// Records recorded and bytes written per CPU.
    cpus: BTreeMap<u32, (u64, u64)>,
    /// With `--to v1` on a v2 trace: what was converted and what not.
    conversion: Option<ToV1>,
    /// The kernel's `dropped` count, when it could be read.
    dropped: Option<u64>,
    /// Bytes of an incomplete last record, not written.
    pending: usize,
    /// Bytes skipped because they were no record, and where that first
    /// happened (CPU and place).
    skipped: u64,
    first_bad: Option<(u32, record::BadRecord)>,
    mode: Mode,
    errors: Vec<anyhow::Error>,
}

/// One traced device: its trace, the recording of its channel, and what
/// the sinks of its buffers cut once they finished.
struct Device {
    tracer: Tracer,
    running: Running,
    cut: Arc<Mutex<BTreeMap<u32, Cut>>>,
    dropped_file: PathBuf,
}

/// What a buffer's sink cut: the records, the bytes written, and the
/// conversion to v1 if any.
struct Cut {
    cutter: Cutter,
    written: u64,
    to_v1: Option<ToV1>,
}

/// A buffer's sink: passes whole records on (converted to v1 with `--to
/// v1`), keeping a cut record back until the rest arrives; hands what it
/// cut over when it finishes.
struct Cutting {
    inner: Box<dyn Sink + Send>,
    cpu: u32,
    cut: Cut,
    converted: Vec<u8>,
    done: Arc<Mutex<BTreeMap<u32, Cut>>>,
}

impl Sink for Cutting {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        let Cutting {
            inner,
            cut,
            converted,
            ..
        } = self;
        let Cut {
            cutter,
            written,
            to_v1,
        } = cut;
        cutter.feed(sb.data, &mut |run| {
            let data = match to_v1 {
                Some(to_v1) => {
                    converted.clear();
                    let mut at = 0;
                    // The cutter passes whole records of its version only.
                    while let Ok(Some((record, len))) = Record::parse(&run[at..]) {
                        to_v1.convert(&record, converted);
                        at += len;
                    }
                    &converted[..]
                }
                None => run,
            };
            if data.is_empty() {
                return Ok(());
            }
            *written += data.len() as u64;
            inner.write(&SubBuf {
                cpu: sb.cpu,
                seq: sb.seq,
                data,
            })
        })
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        let cut = Cut {
            cutter: Cutter::new(self.cut.cutter.abi(), Some(self.cpu)),
            written: 0,
            to_v1: None,
        };
        lock(&self.done).insert(self.cpu, std::mem::replace(&mut self.cut, cut));
        self.inner.finish()
    }

    fn flush(&mut self) -> relay_reader::Result<()> {
        self.inner.flush()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Device {
    fn open(
        tracer: Tracer,
        debugfs: &Path,
        out: &Output,
        cli: &Cli,
        stop: &Stop,
    ) -> Result<Device> {
        let dir = debugfs.join("block").join(tracer.name());
        let channel = dir.join("trace");
        let cut: Arc<Mutex<BTreeMap<u32, Cut>>> = Arc::default();
        let abi = tracer.abi();
        // v1 records are v1 already.
        let to_v1 = cli.to == Some(ToArg::V1) && abi != Abi::V1;
        let sinks = {
            let out = out.clone();
            let base = match &out {
                Output::Files { name, .. } => name.clone().unwrap_or(tracer.name().into()),
                Output::Stdout(_) => String::new(),
            };
            let done = Arc::clone(&cut);
            Box::new(move |cpu| {
                let inner: Box<dyn Sink + Send> = match &out {
                    Output::Stdout(shared) => Box::new(shared.clone()),
                    Output::Files { dir, .. } => {
                        let mut files = PerCpuFiles::create(dir, format!("{base}.blktrace."))?;
                        // A file for every CPU, even an idle one, as
                        // blktrace leaves them.
                        files.write(&SubBuf {
                            cpu,
                            seq: 0,
                            data: &[],
                        })?;
                        Box::new(files)
                    }
                };
                Ok(Box::new(Cutting {
                    inner,
                    cpu,
                    cut: Cut {
                        cutter: Cutter::new(abi, Some(cpu)),
                        written: 0,
                        to_v1: to_v1.then(ToV1::default),
                    },
                    converted: Vec::new(),
                    done: Arc::clone(&done),
                }) as Box<dyn Sink + Send>)
            })
        };
        let mode = match cli.mode {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Read => Mode::Read,
            ModeArg::Mmap => Mode::Mmap,
        };
        let idle = idle_flush(cli);
        let mut recording = Recording::new(&channel)
            .mode(mode)
            .threads(if reads_pinned(cli, idle.is_some()) {
                Threads::PerBuffer
            } else {
                Threads::One
            })
            // Only finished sub-buffers (the idle flush aside): read(2) of
            // the one being written from elsewhere could return a record
            // reserved but not filled yet.
            .finished_subbufs_only(true)
            // Set on this thread, before the device threads start: they
            // inherit it.
            .scheduling(cli.realtime.map_or(Scheduling::Inherit, Scheduling::Fifo))
            .stop(stop)
            .sinks(sinks);
        if let Some(idle) = idle {
            recording = recording.flush_when_idle(idle);
        }
        let running = recording
            .start()
            .with_context(|| format!("starting the recording of {}", channel.display()))?;
        Ok(Device {
            tracer,
            running,
            cut,
            dropped_file: dir.join("dropped"),
        })
    }

    /// Records, then stops the trace, drains, reads `dropped` and tears
    /// down, keeping every error. Sets `stop` on a failure so the other
    /// devices end too.
    fn run(self, stop: &Stop) -> Report {
        let Device {
            mut tracer,
            mut running,
            cut,
            dropped_file,
        } = self;
        let name = tracer.name().to_string();
        let mut errors = Vec::new();
        if let Err(e) = running.record() {
            stop.raise();
            errors.push(anyhow::Error::from(e).context(format!("recording {name}")));
        }
        if let Err(e) = tracer.stop() {
            errors.push(e);
        }
        // After BLKTRACESTOP: everything the buffers still hold.
        let mode = running.mode();
        let outcome = running.finish();
        if let Err(e) = outcome.result {
            errors.push(anyhow::Error::from(e).context(format!("draining {name}")));
        }
        let dropped = read_dropped(&dropped_file).map_err(|e| errors.push(e)).ok();
        if let Err(e) = tracer.teardown() {
            errors.push(e);
        }
        let cut = lock(&cut);
        let mut cpus: BTreeMap<u32, (u64, u64)> = outcome
            .summary
            .cpus
            .iter()
            .map(|c| (c.cpu, (0, 0)))
            .collect();
        let mut conversion: Option<ToV1> = None;
        for (&cpu, c) in cut.iter() {
            cpus.insert(cpu, (c.cutter.records, c.written));
            if let Some(to_v1) = &c.to_v1 {
                conversion.get_or_insert_with(ToV1::default).add(to_v1);
            }
        }
        Report {
            name,
            abi: tracer.abi(),
            chosen: tracer.chosen(),
            cpus,
            conversion,
            dropped,
            pending: cut.values().map(|c| c.cutter.pending()).sum(),
            skipped: cut.values().map(|c| c.cutter.skipped).sum(),
            first_bad: cut
                .iter()
                .find_map(|(&cpu, c)| c.cutter.first_bad.map(|bad| (cpu, bad))),
            mode,
            errors,
        }
    }
}

fn read_dropped(file: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?} is not a number", file.display()))
}

#[derive(Clone)]
enum Output {
    /// Whole-record runs of every device to standard output, one device at
    /// a time (one buffered writer for all, so runs never interleave).
    Stdout(Shared<OneStream<std::io::Stdout>>),
    Files {
        dir: PathBuf,
        name: Option<String>,
    },
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// The trace line of the summary: the records' format and how it was
/// chosen.
fn trace_line(abi: Abi, chosen: Chosen) -> String {
    let setup = match abi {
        Abi::V1 => "BLKTRACESETUP",
        Abi::V2 => "BLKTRACESETUP2",
    };
    let why = match chosen {
        Chosen::Asked => format!(" (--abi {})", abi.name()),
        Chosen::Newest => String::new(),
        Chosen::Fallback(errno) => {
            format!(": this kernel has no BLKTRACESETUP2 ({errno:?})")
        }
    };
    format!("blktrace {abi}, {setup}{why}")
}

/// blktrace's summary: per CPU events and data, the total, and the drops;
/// first the trace's format.
fn print_summary(out: &mut dyn Write, reports: &[Report]) -> std::io::Result<()> {
    for r in reports {
        writeln!(out, "=== {} ===", r.name)?;
        writeln!(out, "  Trace:  {}", trace_line(r.abi, r.chosen))?;
        for (cpu, (events, bytes)) in &r.cpus {
            writeln!(
                out,
                "  CPU{cpu:3}: {events:20} events, {:8} KiB data",
                kib(*bytes)
            )?;
        }
        let events: u64 = r.cpus.values().map(|c| c.0).sum();
        let bytes: u64 = r.cpus.values().map(|c| c.1).sum();
        let dropped = r
            .dropped
            .map_or_else(|| "unknown".into(), |d| d.to_string());
        writeln!(
            out,
            "  Total:  {events:20} events (dropped {dropped}), {:8} KiB data",
            kib(bytes)
        )?;
        if let Some(conversion) = &r.conversion {
            match conversion.report() {
                Some(report) => writeln!(out, "  Written as v1: {report}")?,
                None => writeln!(out, "  Written as v1: every event")?,
            }
        }
    }
    let events: u64 = reports
        .iter()
        .flat_map(|r| r.cpus.values())
        .map(|c| c.0)
        .sum();
    let dropped: u64 = reports.iter().filter_map(|r| r.dropped).sum();
    if dropped > 0 {
        writeln!(
            out,
            "You have {dropped} ({:5.1}%) dropped events\n\
             Consider using a larger buffer size (-b) and/or more buffers (-n)",
            dropped as f64 * 100.0 / (events + dropped) as f64
        )?;
    }
    Ok(())
}

fn kill(cli: &Cli) -> Result<()> {
    for dev in &cli.devices {
        if tracer::kill(dev)? {
            eprintln!(
                "relay-blktrace: removed the trace set up on {}",
                dev.display()
            );
        } else {
            eprintln!("relay-blktrace: no trace was set up on {}", dev.display());
        }
    }
    Ok(())
}

fn run(cli: Cli) -> Result<bool> {
    check_environment(&cli.debugfs)?;
    if cli.kill {
        kill(&cli)?;
        return Ok(true);
    }
    let to_stdout = cli.output.as_deref() == Some("-");
    if cli.output.is_some() && !to_stdout && cli.devices.len() > 1 {
        bail!("-o NAME names the files of one device; with several devices leave it out (each gets <dev>.blktrace.<cpu>) or use -o -");
    }
    let stop = Stop::on_signals(&[
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    let output = if to_stdout {
        Output::Stdout(Shared::new(OneStream::stdout()))
    } else {
        Output::Files {
            dir: cli.output_dir.clone(),
            name: cli.output.clone(),
        }
    };
    let params = Params {
        buf_size: cli.buffer_kib * 1024,
        buf_nr: cli.buffers,
        act_mask: cli
            .act_mask
            .iter()
            .fold(cli.set_mask.unwrap_or(0), |m, b| m | b),
        abi: match cli.abi {
            AbiArg::Auto => AbiChoice::Auto,
            AbiArg::V1 => AbiChoice::V1,
            AbiArg::V2 => AbiChoice::V2,
        },
    };
    // Every trace is set up and its channel opened before any starts; an
    // error on one device tears down those already set up (Tracer's Drop).
    let mut devices = Vec::new();
    for dev in &cli.devices {
        let tracer = Tracer::setup(dev, params)?;
        let name = tracer.name().to_string();
        let device = Device::open(tracer, &cli.debugfs, &output, &cli, &stop)
            .with_context(|| format!("setting up {} ({name})", dev.display()))?;
        devices.push(device);
    }
    if to_stdout && cli.to.is_none() && devices.iter().any(|d| d.tracer.abi() == Abi::V2) {
        eprintln!(
            "relay-blktrace: note: standard output carries blktrace v2 records, which \
             blkparse without v2 support (Debian 12's 1.2) cannot read: pipe them into \
             `relay-blktrace parse -i -`, or add --to v1 for blkparse"
        );
    }
    for device in &mut devices {
        device.tracer.start()?;
        eprintln!(
            "relay-blktrace: tracing {} as {} (blktrace {}, {} buffers of {} x {} KiB, {} mode){}",
            device.tracer.dev_path().display(),
            device.tracer.name(),
            device.tracer.abi().name(),
            device.running.buffers(),
            cli.buffers,
            cli.buffer_kib,
            device.running.mode(),
            if cli.seconds.is_some() {
                ""
            } else {
                "; Ctrl-C stops"
            }
        );
    }
    // One end for every device, counted from the start of the traces.
    if let Some(s) = cli.seconds {
        let seconds = Duration::try_from_secs_f64(s.max(0.0))
            .with_context(|| format!("-w {s}: not a duration"))?;
        let deadline = std::time::Instant::now() + seconds;
        for device in &mut devices {
            device.running.end_at(deadline);
        }
    }
    let reports: Vec<Report> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .into_iter()
            .map(|device| {
                let stop = &stop;
                scope.spawn(move || device.run(stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a recording thread panicked"))
            .collect()
    });
    let summary = if to_stdout {
        print_summary(&mut std::io::stderr(), &reports)
    } else {
        print_summary(&mut std::io::stdout(), &reports)
    };
    summary.context("printing the summary")?;
    let mut ok = true;
    for r in &reports {
        if r.mode == Mode::Read && r.cpus.is_empty() {
            eprintln!("relay-blktrace: {}: no buffer files were read", r.name);
        }
        if r.pending > 0 {
            eprintln!(
                "relay-blktrace: warning: {}: {} bytes of an incomplete last record were not written",
                r.name, r.pending
            );
        }
        if let Some((cpu, bad)) = r.first_bad {
            eprintln!(
                "relay-blktrace: warning: {}: {} bytes were no whole blktrace record of their \
                 buffer and were skipped (first on CPU {cpu} at {bad}); relay's read(2) can \
                 skip data while the kernel drops events",
                r.name, r.skipped
            );
        }
        for e in &r.errors {
            eprintln!("relay-blktrace: error: {}: {e:#}", r.name);
            ok = false;
        }
    }
    Ok(ok)
}

/// Whether each CPU buffer gets its own reading thread pinned to its CPU
/// (as blktrace reads), or one thread reads them all. Pinned threads compete
/// with the traced load on every CPU: under fio on null_blk (relay-bench
/// blktrace) they cost 3-4 times the CPU of one thread in some runs, as
/// Debian's blktrace, which pins too, and slowed the load, for the same
/// records. They are needed:
/// - for live output, where a buffer's own thread may read the sub-buffer
///   being written on a stock kernel: blktrace reserves and fills each
///   record with interrupts off on the buffer's CPU, so none is half written
///   while that CPU runs the thread;
/// - under `--realtime`: one SCHED_FIFO thread for every buffer stalls with
///   the vCPU it runs on (relay-recorder's README);
/// - where read(2) may be used on a weakly ordered CPU: a stock kernel
///   publishes a finished sub-buffer without a barrier after its bytes (the
///   series orders them), so only a thread on the writer's CPU is sure to
///   see them. x86 keeps stores in order; mmap mode needs the series.
fn reads_pinned(cli: &Cli, live: bool) -> bool {
    live || cli.realtime.is_some() || (!ORDERED_STORES && cli.mode != ModeArg::Mmap)
}

/// This CPU keeps stores in order (x86), so a thread on another CPU sees a
/// finished sub-buffer's bytes before the count that publishes it, even
/// from a stock kernel: see [`reads_pinned`].
const ORDERED_STORES: bool = cfg!(any(target_arch = "x86", target_arch = "x86_64"));

/// The idle flush interval: `--idle-flush`, else [`LIVE_IDLE_FLUSH`] with
/// `-o -`; none for 0 or files.
fn idle_flush(cli: &Cli) -> Option<Duration> {
    let to_stdout = cli.output.as_deref() == Some("-");
    match cli.idle_flush {
        Some(s) if s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => None,
        None => to_stdout.then_some(LIVE_IDLE_FLUSH),
    }
}

/// `relay-blktrace parse`.
fn parse_command(inputs: &[String]) -> Result<bool> {
    let inputs = inputs
        .iter()
        .map(|arg| Input::resolve(arg))
        .collect::<Result<Vec<_>>>()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    parse::run(&inputs, &mut out, &mut std::io::stderr())?;
    out.flush().context("writing standard output")?;
    Ok(true)
}

/// `relay-blktrace convert --to v1`.
fn convert_command(inputs: &[String], output: &str) -> Result<bool> {
    let inputs = inputs
        .iter()
        .map(|arg| Input::resolve(arg))
        .collect::<Result<Vec<_>>>()?;
    let mut sink: Box<dyn Sink> = if output == "-" {
        Box::new(OneStream::stdout())
    } else {
        let path = Path::new(output);
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = path
            .file_name()
            .with_context(|| format!("-o {output}: no file name"))?
            .to_string_lossy()
            .into_owned();
        Box::new(PerCpuFiles::create(dir, format!("{base}.blktrace."))?)
    };
    let (conversion, cpus) = convert_inputs(&inputs, &mut *sink)?;
    if output != "-" {
        // blkparse -i NAME reads NAME.blktrace.0, .1, ... up to the first
        // missing one: a file for every CPU up to the highest, empty or not.
        for cpu in 0..cpus {
            sink.write(&SubBuf {
                cpu,
                seq: 0,
                data: &[],
            })?;
        }
    }
    sink.finish().context("writing the v1 records")?;
    let mut summary = format!(
        "relay-blktrace convert: {} records written as v1 to {output}",
        conversion.converted
    );
    if output != "-" {
        summary.push_str(&format!(".blktrace.<0..{}>", cpus.saturating_sub(1)));
    }
    eprintln!("{summary}");
    if let Some(report) = conversion.report() {
        eprintln!("relay-blktrace convert: {report}");
    }
    Ok(true)
}

/// Converts every record of `inputs` into `sink` (as SubBufs of their
/// CPU); returns the counts and the number of CPU files a name output
/// needs (highest CPU + 1, at least that of a name input).
fn convert_inputs(inputs: &[Input], sink: &mut dyn Sink) -> Result<(ToV1, u32)> {
    let mut conversion = ToV1::default();
    let mut cpus = 0u32;
    let mut out = Vec::new();
    let mut convert_data = |what: &str,
                            data: &mut dyn std::io::Read,
                            conversion: &mut ToV1,
                            cpus: &mut u32|
     -> Result<()> {
        let mut records = input::Records::default();
        input::read_chunks(what, data, &mut |chunk| {
            records.feed(chunk, &mut |record| {
                out.clear();
                conversion.convert(&record, &mut out);
                *cpus = (*cpus).max(record.cpu() + 1);
                if !out.is_empty() {
                    sink.write(&SubBuf {
                        cpu: record.cpu(),
                        seq: 0,
                        data: &out,
                    })?;
                }
                Ok(())
            })?;
            // Live: what came so far goes on at once.
            sink.flush()?;
            Ok(())
        })?;
        if let Some(warning) = input::damage_warning(what, &records) {
            eprintln!("relay-blktrace: warning: {warning}");
        }
        Ok(())
    };
    for input in inputs {
        if let Input::Name { files, .. } = input {
            cpus = cpus.max(files.len() as u32);
        }
        for file in input.files() {
            let mut f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            convert_data(
                &file.display().to_string(),
                &mut f,
                &mut conversion,
                &mut cpus,
            )?;
        }
        if *input == Input::Stdin {
            convert_data(
                "standard input",
                &mut std::io::stdin().lock(),
                &mut conversion,
                &mut cpus,
            )?;
        }
    }
    Ok((conversion, cpus))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Parse { inputs }) => parse_command(inputs),
        Some(Command::Convert {
            to: ToArg::V1,
            inputs,
            output,
        }) => convert_command(inputs, output),
        None => run(cli),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("relay-blktrace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_like_blktrace() {
        let cli = Cli::try_parse_from([
            "relay-blktrace",
            "-d",
            "/dev/sda",
            "-d",
            "/dev/sdb",
            "-b",
            "1024",
            "-n",
            "8",
            "-w",
            "2.5",
            "-a",
            "queue",
            "-a",
            "complete",
            "-o",
            "-",
        ])
        .unwrap();
        assert_eq!(cli.devices.len(), 2);
        assert_eq!((cli.buffer_kib, cli.buffers), (1024, 8));
        assert_eq!(cli.act_mask, vec![1 << 4, 1 << 7]);
        assert_eq!(cli.output.as_deref(), Some("-"));
        assert!(Cli::try_parse_from(["relay-blktrace", "-b", "512"]).is_err());
        assert_eq!(cli.abi, AbiArg::Auto);
        assert!(Cli::try_parse_from(["relay-blktrace", "-d", "x", "-n", "1"]).is_err());
        assert_eq!(parse_hex_mask("0x90"), Ok(0x90));
    }

    #[test]
    fn summary_reads_like_blktrace() {
        let reports = [Report {
            name: "nullb0".into(),
            abi: Abi::V1,
            chosen: Chosen::Fallback(nix::errno::Errno::ENOTTY),
            conversion: None,
            cpus: [(0, (0, 0)), (1, (619, 29720))].into_iter().collect(),
            dropped: Some(0),
            pending: 0,
            skipped: 0,
            first_bad: None,
            mode: Mode::Read,
            errors: Vec::new(),
        }];
        let mut out = Vec::new();
        print_summary(&mut out, &reports).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "=== nullb0 ===\n\
             \x20 Trace:  blktrace v1 (struct blk_io_trace, version 7), BLKTRACESETUP: this \
             kernel has no BLKTRACESETUP2 (ENOTTY)\n\
             \x20 CPU  0:                    0 events,        0 KiB data\n\
             \x20 CPU  1:                  619 events,       30 KiB data\n\
             \x20 Total:                   619 events (dropped 0),       30 KiB data\n"
        );
        let mut conversion = ToV1 {
            converted: 800,
            ..ToV1::default()
        };
        conversion
            .unfit
            .insert(convert::Unfit::Category("zone-reset"), 100);
        let dropping = [Report {
            name: "sda".into(),
            abi: Abi::V2,
            chosen: Chosen::Newest,
            conversion: Some(conversion),
            cpus: [(0, (900, 43200))].into_iter().collect(),
            dropped: Some(100),
            pending: 0,
            skipped: 0,
            first_bad: None,
            mode: Mode::Read,
            errors: Vec::new(),
        }];
        let mut out = Vec::new();
        print_summary(&mut out, &dropping).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("You have 100 ( 10.0%) dropped events"),
            "{text}"
        );
        assert!(
            text.contains(
                "Trace:  blktrace v2 (struct blk_io_trace2, version 8), BLKTRACESETUP2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Written as v1: 100 events v1 cannot carry are not in the v1 output (100 zone-reset)"
            ),
            "{text}"
        );
    }

    #[test]
    fn subcommands_and_abi_options() {
        let cli = Cli::try_parse_from(["relay-blktrace", "parse", "-i", "sda", "-i", "-"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Parse { ref inputs }) if inputs == &["sda", "-"])
        );
        let cli = Cli::try_parse_from([
            "relay-blktrace",
            "convert",
            "--to",
            "v1",
            "-i",
            "sda",
            "-o",
            "sda-v1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Convert { .. })));
        assert!(
            Cli::try_parse_from(["relay-blktrace", "convert", "-i", "sda", "-o", "x"]).is_err()
        );
        assert!(Cli::try_parse_from(["relay-blktrace", "--abi", "v3", "-d", "x"]).is_err());
        let cli = Cli::try_parse_from([
            "relay-blktrace",
            "-d",
            "/dev/sda",
            "--abi",
            "v2",
            "--to",
            "v1",
            "-a",
            "zone-reset",
            "-o",
            "-",
        ])
        .unwrap();
        assert_eq!((cli.abi, cli.to), (AbiArg::V2, Some(ToArg::V1)));
        assert_eq!(cli.act_mask, vec![1 << 17]);
        assert_eq!(idle_flush(&cli), Some(LIVE_IDLE_FLUSH));
        let files = Cli::try_parse_from(["relay-blktrace", "-d", "/dev/sda"]).unwrap();
        assert_eq!(idle_flush(&files), None);
        let off =
            Cli::try_parse_from(["relay-blktrace", "-d", "x", "-o", "-", "--idle-flush", "0"])
                .unwrap();
        assert_eq!(idle_flush(&off), None);
    }

    #[test]
    fn pinned_threads_only_where_they_are_needed() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["relay-blktrace", "-d", "x"], args].concat()).unwrap();
            reads_pinned(&cli, idle_flush(&cli).is_some())
        };
        // Files: one thread, unless read(2) may run on a CPU that reorders
        // stores.
        assert_eq!(parse(&[]), !ORDERED_STORES);
        assert!(!parse(&["--mode", "mmap"]));
        // Live output, real-time readers.
        assert!(parse(&["-o", "-"]));
        assert!(parse(&["--mode", "mmap", "--realtime", "10"]));
        assert_eq!(parse(&["-o", "-", "--idle-flush", "0"]), !ORDERED_STORES);
    }
}
