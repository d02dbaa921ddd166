//! `relay-example-read`: the user side of the read(2) example. Drains the
//! `relay_read` channel with read(2) only (the kernel strips padding and
//! counts what it returned as consumed; relay's read never blocks, so poll
//! with a short timeout says when to read again), until Ctrl-C, into one
//! file per CPU (`cpu0`, `cpu1`, ... as in relay-apps) or stdout. At the
//! end it asks the kernel to flush the partly filled sub-buffers: a kernel
//! with the series returns their data to read(2) only then.
//!
//! The module's channel has no sub-buffer header, so what read(2) returns
//! is the records and nothing else.
//!
//! Run it (as root; the top-level README shows it in the VM):
//!
//! ```text
//! insmod relay_app.ko; insmod relay_read.ko
//! echo 1000 > /sys/kernel/debug/relay_read/run
//! relay-example-read -o out -w 1          # out/cpu0, out/cpu1, ...
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use relay_examples::{load_hint, recording, stop_on_signals};
use relay_reader::Mode;
use relay_recorder::{Output, Threads};

/// Record the relay_read channel with read(2) until Ctrl-C.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_read.ko\n  \
                  echo 1000 > /sys/kernel/debug/relay_read/run; relay-example-read -o out -w 1"
)]
struct Cli {
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(short = 'w', long)]
    duration: Option<f64>,
    /// Channel base path.
    #[arg(long, default_value = "/sys/kernel/debug/relay_read/cpu")]
    channel: PathBuf,
    /// Directory for the per-CPU files.
    #[arg(short, long, default_value = ".", conflicts_with = "stdout")]
    output: PathBuf,
    /// Write everything to standard output instead.
    #[arg(long)]
    stdout: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let output = if cli.stdout {
        Output::Stdout
    } else {
        Output::cpu_files(cli.output)
    };
    // One thread: read mode drains every buffer after each wait (on a
    // stock kernel, partly filled sub-buffers included). At the end a
    // kernel with the series returns a partly filled sub-buffer only once
    // it is flushed: the recording asks for that (RELAY_IOC_FLUSH).
    let running = recording(&cli.channel, cli.duration, &stop_on_signals()?)?
        .mode(Mode::Read)
        .threads(Threads::One)
        .output(output)
        .start()
        .context(load_hint("relay_read"))?;
    eprintln!(
        "relay-example-read: reading {} buffers of {} with read(2) until Ctrl-C",
        running.buffers(),
        cli.channel.display()
    );
    let outcome = running.run_to_end();
    outcome.result?;
    for c in &outcome.summary.cpus {
        eprintln!("cpu{}: {} bytes in {} reads", c.cpu, c.bytes, c.subbufs);
    }
    Ok(())
}
