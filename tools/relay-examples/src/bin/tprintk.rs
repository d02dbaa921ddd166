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
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use relay_examples::{load_hint, Until};
use relay_reader::sink::{OneStream, Sink};
use relay_reader::{Mode, Reader};

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
    let until = Until::new(cli.duration)?;
    let mut reader = Reader::open(&cli.channel, Mode::Auto).context(load_hint("relay_tprintk"))?;
    let mut sink: Box<dyn Sink> = match &cli.output {
        Some(path) => Box::new(OneStream::create(path)?),
        None => Box::new(OneStream::stdout()),
    };
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
    let mut lines = 0u64;
    let mut write = |sb: relay_reader::SubBuf<'_>| {
        lines += sb.data.iter().filter(|&&b| b == b'\n').count() as u64;
        sink.write(&sb)
    };
    while !until.done() {
        reader.poll(Duration::from_millis(100), &mut write)?;
    }
    reader.flush_and_drain(&mut write)?;
    sink.finish()?;
    let dropped = reader
        .stats()
        .iter()
        .filter_map(|s| s.kernel)
        .map(|k| k.lost_full + k.lost_toobig)
        .sum::<u64>();
    eprintln!("relay-example-tprintk: {lines} lines, {dropped} messages dropped");
    Ok(())
}
