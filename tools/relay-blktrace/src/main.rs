//! `relay-blktrace`: block I/O tracing in blktrace's spirit, recorded through
//! the relay reader. Sets a trace up with the BLKTRACE ioctls, records the
//! per-CPU relay channel `<debugfs>/block/<dev>/trace<cpu>` into
//! `<dev>.blktrace.<cpu>` files that `blkparse` reads (or whole records to
//! standard output), and always tears the trace down.
#![deny(unsafe_code)]

mod ioctl;
mod record;
mod tracer;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use relay_reader::{Mode, SubBuf};
use relay_recorder::sink::{OneStream, PerCpuFiles, Shared, Sink};
use relay_recorder::stop::Stop;
use relay_recorder::{Recording, Running, Scheduling, Threads};

use record::Cutter;
use tracer::{Params, Tracer};

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
  relay-blktrace -k -d /dev/sda";

/// Trace block I/O into files blkparse reads, through the relay reader.
///
/// Sets tracing up on each device with BLKTRACESETUP/BLKTRACESTART, records
/// the per-CPU relay channel <debugfs>/block/<dev>/trace<cpu> until
/// SIGINT/SIGTERM or -w, then stops, drains every buffer, reads the kernel's
/// `dropped` count, tears the trace down (also on errors) and prints a
/// summary like blktrace's.
#[derive(Parser, Debug)]
#[command(name = "relay-blktrace", version, about, after_help = EXAMPLES)]
struct Cli {
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
    /// discard, drv_data, fua. Default: all.
    #[arg(short = 'a', long = "act-mask", value_name = "MASK", value_parser = record::category)]
    act_mask: Vec<u16>,
    /// Category mask as a hexadecimal number (BLK_TC_* bits); -a adds to it.
    #[arg(short = 'A', long = "set-mask", value_name = "HEX", value_parser = parse_hex_mask)]
    set_mask: Option<u16>,
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// mmap where the relay ABI is offered, read(2) otherwise.
    Auto,
    /// read(2) (the only way on stock kernels: blktrace's files cannot be mapped).
    Read,
    /// mmap through the relay ioctl ABI.
    Mmap,
}

fn parse_hex_mask(text: &str) -> Result<u16, String> {
    let digits = text
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    u16::from_str_radix(digits, 16).map_err(|_| format!("{text:?} is not a 16-bit hex mask"))
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
    /// Records and bytes per CPU.
    cpus: BTreeMap<u32, (u64, u64)>,
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

/// One traced device: its trace, the recording of its channel, and the
/// record cutters of its buffers once their sinks finished.
struct Device {
    tracer: Tracer,
    running: Running,
    cutters: Arc<Mutex<BTreeMap<u32, Cutter>>>,
    dropped_file: PathBuf,
}

/// A buffer's sink: passes whole records on, keeping a cut record back
/// until the rest arrives; hands its cutter over when it finishes.
struct Cutting {
    inner: Box<dyn Sink + Send>,
    cutter: Cutter,
    cpu: u32,
    done: Arc<Mutex<BTreeMap<u32, Cutter>>>,
}

impl Sink for Cutting {
    fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
        let Cutting { inner, cutter, .. } = self;
        cutter.feed(sb.data, &mut |run| {
            inner.write(&SubBuf {
                cpu: sb.cpu,
                seq: sb.seq,
                data: run,
            })
        })
    }

    fn finish(&mut self) -> relay_reader::Result<()> {
        let cutter = std::mem::replace(&mut self.cutter, Cutter::for_cpu(self.cpu));
        lock(&self.done).insert(self.cpu, cutter);
        self.inner.finish()
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
        let cutters: Arc<Mutex<BTreeMap<u32, Cutter>>> = Arc::default();
        let sinks = {
            let out = out.clone();
            let base = match &out {
                Output::Files { name, .. } => name.clone().unwrap_or(tracer.name().into()),
                Output::Stdout(_) => String::new(),
            };
            let done = Arc::clone(&cutters);
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
                    cutter: Cutter::for_cpu(cpu),
                    cpu,
                    done: Arc::clone(&done),
                }) as Box<dyn Sink + Send>)
            })
        };
        let mode = match cli.mode {
            ModeArg::Auto => Mode::Auto,
            ModeArg::Read => Mode::Read,
            ModeArg::Mmap => Mode::Mmap,
        };
        let recording = Recording::new(&channel)
            .mode(mode)
            .threads(Threads::One)
            // blktrace fills each record after relay_reserve(): read(2) of
            // the sub-buffer being written could return a record not
            // written yet.
            .finished_subbufs_only(true)
            // Set on this thread, before the device threads start: they
            // inherit it.
            .scheduling(cli.realtime.map_or(Scheduling::Inherit, Scheduling::Fifo))
            .stop(stop)
            .sinks(sinks);
        let running = recording
            .start()
            .with_context(|| format!("starting the recording of {}", channel.display()))?;
        Ok(Device {
            tracer,
            running,
            cutters,
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
            cutters,
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
        let cutters = lock(&cutters);
        let mut cpus: BTreeMap<u32, (u64, u64)> = outcome
            .summary
            .cpus
            .iter()
            .map(|c| (c.cpu, (0, 0)))
            .collect();
        for (&cpu, c) in cutters.iter() {
            cpus.insert(cpu, (c.records, c.bytes));
        }
        Report {
            name,
            cpus,
            dropped,
            pending: cutters.values().map(Cutter::pending).sum(),
            skipped: cutters.values().map(|c| c.skipped).sum(),
            first_bad: cutters
                .iter()
                .find_map(|(&cpu, c)| c.first_bad.map(|bad| (cpu, bad))),
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

/// blktrace's summary: per CPU events and data, the total, and the drops.
fn print_summary(out: &mut dyn Write, reports: &[Report]) -> std::io::Result<()> {
    for r in reports {
        writeln!(out, "=== {} ===", r.name)?;
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
    for device in &mut devices {
        device.tracer.start()?;
        eprintln!(
            "relay-blktrace: tracing {} as {} ({} buffers of {} x {} KiB, {} mode){}",
            device.tracer.dev_path().display(),
            device.tracer.name(),
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
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
        assert!(Cli::try_parse_from(["relay-blktrace", "-d", "x", "-n", "1"]).is_err());
        assert_eq!(parse_hex_mask("0x90"), Ok(0x90));
    }

    #[test]
    fn summary_reads_like_blktrace() {
        let reports = [Report {
            name: "nullb0".into(),
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
             \x20 CPU  0:                    0 events,        0 KiB data\n\
             \x20 CPU  1:                  619 events,       30 KiB data\n\
             \x20 Total:                   619 events (dropped 0),       30 KiB data\n"
        );
        let dropping = [Report {
            name: "sda".into(),
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
    }
}
