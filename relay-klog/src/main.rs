//! `relay-klog`: the user side of the klog example. Records what kernel code
//! logs with `klog()` / `klog_printk()` through the `relay_klog` handler
//! module, one file per CPU (`cpu0`, `cpu1`, ... as in relay-apps) or stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use relay_reader::sink::{OneStream, PerCpuFiles, Sink};
use relay_reader::{Mode, Reader};

/// Record klog traffic until Ctrl-C.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod klog.ko; insmod relay_app.ko; insmod relay_klog.ko\n  relay-klog -o klog-trace"
)]
struct Cli {
    /// Channel base path of the relay_klog module.
    #[arg(long, default_value = "/sys/kernel/debug/relay_klog/cpu")]
    channel: PathBuf,
    /// Directory for the per-CPU files.
    #[arg(short, long, default_value = ".", conflicts_with = "stdout")]
    output: PathBuf,
    /// Write the records to standard output instead.
    #[arg(long)]
    stdout: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-klog: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let mut reader = Reader::open(&cli.channel, Mode::Mmap).with_context(|| {
        "is the relay_klog module loaded? (insmod klog.ko relay_app.ko relay_klog.ko)"
    })?;
    let mut sink: Box<dyn Sink> = if cli.stdout {
        Box::new(OneStream::stdout())
    } else {
        Box::new(PerCpuFiles::create(&cli.output, "cpu")?)
    };
    let mut records = vec![0u64; reader.sources().len()];
    let mut write = |sb: relay_reader::SubBuf<'_>| {
        if let Some(n) = records.get_mut(sb.cpu as usize) {
            *n += sb.data.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        sink.write(&sb)
    };
    while !stop.load(Ordering::Relaxed) {
        reader.poll(Duration::from_millis(100), &mut write)?;
    }
    reader.flush_and_drain(&mut write)?;
    sink.finish()?;
    for (cpu, n) in records.iter().enumerate() {
        eprintln!("cpu{cpu}: {n} records");
    }
    Ok(())
}
