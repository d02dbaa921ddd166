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
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use relay_examples::{load_hint, Until};
use relay_reader::sink::{PerCpuFiles, Sink};
use relay_reader::{Mode, Reader};

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

/// One channel and where its data goes.
struct Channel {
    name: &'static str,
    reader: Reader,
    sink: PerCpuFiles,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let until = Until::new(cli.duration)?;
    let mut channels = Vec::new();
    for name in ["percpu", "global"] {
        let base = cli.dir.join(name).join("cpu");
        let reader = Reader::open(&base, Mode::Auto).context(load_hint("relay_exported"))?;
        let sink = PerCpuFiles::create(cli.output.join(name), "cpu")?;
        eprintln!(
            "relay-example-exported: {name}: {} buffers, {:?} mode",
            reader.sources().len(),
            reader.mode()
        );
        channels.push(Channel { name, reader, sink });
    }
    eprintln!("relay-example-exported: recording until Ctrl-C");
    while !until.done() {
        for ch in &mut channels {
            let sink = &mut ch.sink;
            ch.reader
                .poll(Duration::from_millis(50), &mut |sb| sink.write(&sb))?;
        }
    }
    for ch in &mut channels {
        let sink = &mut ch.sink;
        ch.reader.flush_and_drain(&mut |sb| sink.write(&sb))?;
        ch.sink.finish()?;
        for s in ch.reader.stats() {
            eprintln!(
                "{}/cpu{}: {} bytes in {} sub-buffers",
                ch.name, s.cpu, s.bytes, s.subbufs
            );
        }
    }
    Ok(())
}
