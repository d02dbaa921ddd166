//! `relay-example-exported`: the user side of the exported-relayfile
//! example. Records the two channels of the `relay_exported` module side by
//! side until Ctrl-C: the per-CPU one into `<out>/percpu/cpu0..N-1`, the
//! global one (a single buffer every CPU writes into) into
//! `<out>/global/cpu0`. Both are read the same way; the library finds one
//! buffer file for the global channel and many for the other.
//!
//! Run it (as root; the top-level README shows it in the VM):
//!
//! ```text
//! insmod relay_app.ko; insmod relay_exported.ko
//! echo 1000 > /sys/kernel/debug/relay_exported/run
//! relay-example-exported -o out -w 1      # out/percpu/cpuN, out/global/cpu0
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use relay_examples::{load_hint, recording, stop_on_signals};
use relay_recorder::{Output, Threads};

/// Record the per-CPU and the global channel of relay_exported until Ctrl-C.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  insmod relay_app.ko; insmod relay_exported.ko\n  \
                  echo 1000 > /sys/kernel/debug/relay_exported/run; relay-example-exported -o out -w 1"
)]
struct Cli {
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(short = 'w', long)]
    duration: Option<f64>,
    /// The module's debugfs directory.
    #[arg(long, default_value = "/sys/kernel/debug/relay_exported")]
    dir: PathBuf,
    /// Output directory: percpu/ and global/ are created in it.
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // One stop for both: a signal, or either channel failing, ends both.
    let stop = stop_on_signals()?;
    let mut channels = Vec::new();
    for name in ["percpu", "global"] {
        let running = recording(cli.dir.join(name).join("cpu"), cli.duration, &stop)?
            .threads(Threads::One)
            .output(Output::cpu_files(cli.output.join(name)))
            .start()
            .context(load_hint("relay_exported"))?;
        eprintln!(
            "relay-example-exported: {name}: {} buffers, {} mode",
            running.buffers(),
            running.mode()
        );
        channels.push((name, running));
    }
    eprintln!("relay-example-exported: recording until Ctrl-C");
    // The two side by side, each in a thread of its own.
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let threads: Vec<_> = channels
            .into_iter()
            .map(|(name, running)| {
                let stop = &stop;
                let thread = scope.spawn(move || {
                    let outcome = running.run_to_end();
                    if outcome.result.is_err() {
                        stop.raise();
                    }
                    outcome
                });
                (name, thread)
            })
            .collect();
        threads
            .into_iter()
            .map(|(name, t)| (name, t.join().expect("a recording thread panicked")))
            .collect()
    });
    // Both summaries, then the first error.
    let mut result = Ok(());
    for (name, outcome) in outcomes {
        for c in &outcome.summary.cpus {
            eprintln!(
                "{name}/cpu{}: {} bytes in {} sub-buffers",
                c.cpu, c.bytes, c.subbufs
            );
        }
        if result.is_ok() {
            result = outcome.result.with_context(|| format!("recording {name}"));
        }
    }
    result
}
