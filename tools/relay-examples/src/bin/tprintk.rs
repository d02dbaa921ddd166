//! `relay-example-tprintk`: the user side of the tprintk example. Records
//! the copy of printk output that the `relay_tprintk` console writes into
//! its global channel, until Ctrl-C, to a file or stdout: the kernel log
//! as consoles print it, without going through syslog or /dev/kmsg.
//!
//! Run it (as root; the top-level README shows it in the VM):
//!
//! ```text
//! insmod relay_app.ko; insmod relay_tprintk.ko
//! dmesg -n 8; echo hello > /dev/kmsg
//! relay-example-tprintk -w 1              # the console's copy of the log
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use relay_examples::{load_hint, recording, stop_on_signals};
use relay_reader::SubBuf;
use relay_recorder::sink::{Inspect, Sink};
use relay_recorder::{Output, Threads};

/// Record printk output from the relay_tprintk channel until Ctrl-C.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_tprintk.ko\n  \
                  relay-example-tprintk -o printk.log   # until Ctrl-C"
)]
struct Cli {
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(short = 'w', long)]
    duration: Option<f64>,
    /// Channel base path (a global channel: one buffer, cpu0).
    #[arg(long, default_value = "/sys/kernel/debug/relay_tprintk/cpu")]
    channel: PathBuf,
    /// Output file (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let output = match &cli.output {
        Some(path) => Output::File(path.clone()),
        None => Output::Stdout,
    };
    let lines = Arc::new(AtomicU64::new(0));
    let mut inner = output.sinks();
    let counted = Arc::clone(&lines);
    let sinks = Box::new(move |cpu| {
        let counted = Arc::clone(&counted);
        Ok(Box::new(Inspect::new(inner(cpu)?, move |sb: &SubBuf<'_>| {
            let n = sb.data.iter().filter(|&&b| b == b'\n').count() as u64;
            counted.fetch_add(n, Ordering::Relaxed);
        })) as Box<dyn Sink + Send>)
    });
    let running = recording(&cli.channel, cli.duration, &stop_on_signals()?)?
        .threads(Threads::One)
        .sinks(sinks)
        .start()
        .context(load_hint("relay_tprintk"))?;
    eprintln!(
        "relay-example-tprintk: recording printk output from {} until Ctrl-C",
        cli.channel.display()
    );
    // The first field of /proc/sys/kernel/printk: consoles print messages
    // of a lower level (more urgent) only.
    let console_level = std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok());
    if let Some(level) = console_level.filter(|&l| l < 8) {
        eprintln!(
            "relay-example-tprintk: the console loglevel is {level}: like every console, this \
             copy gets only messages of a lower level (raise it with `dmesg -n 8`)"
        );
    }
    let outcome = running.run_to_end();
    outcome.result?;
    let dropped: u64 = outcome
        .summary
        .cpus
        .iter()
        .map(|c| c.lost_full.unwrap_or(0) + c.lost_toobig.unwrap_or(0))
        .sum();
    eprintln!(
        "relay-example-tprintk: {} lines, {dropped} messages dropped",
        lines.load(Ordering::Relaxed)
    );
    Ok(())
}
