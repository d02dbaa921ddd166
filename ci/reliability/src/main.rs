//! `relay-reliability`: the reliability run behind `cargo xtask reliability`.
//!
//! - `guest` runs as root in the VM: stress (relay_readtest's numbered
//!   events through every reader mode, in no-overwrite and overwrite
//!   channels), faults during a recording with the `relay-reader` binary,
//!   and bad input; the measurements go to a JSON file.
//! - `report` runs on the host: RELIABILITY.md from that JSON and the logs
//!   of the fuzz runs, every pass/fail computed from the measurements.

mod badinput;
mod events;
mod faults;
mod guest;
mod report;
mod stress;

use stress::Reading;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use relay_reader::Mode;
use serde::{Deserialize, Serialize};

/// The reliability run: in the guest, or the report on the host.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// In the guest, as root: stress, faults, bad input; JSON to --out.
    Guest(GuestArgs),
    /// On the host: RELIABILITY.md from the guest's JSON and the fuzz logs.
    Report(report::ReportArgs),
}

#[derive(clap::Args, Debug)]
struct GuestArgs {
    /// Directory of the built kernel modules (relay_app.ko, relay_readtest.ko).
    #[arg(long)]
    modules: PathBuf,
    /// The relay-reader binary.
    #[arg(long)]
    reader: PathBuf,
    /// The JSON file to write (rewritten after each section).
    #[arg(long)]
    out: PathBuf,
    /// A writable scratch directory in the guest.
    #[arg(long, default_value = "/tmp/relay-reliability")]
    scratch: PathBuf,
    /// Events per stress run, all CPUs together.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Bytes per event.
    #[arg(long, default_value_t = 32)]
    event_size: u64,
    /// Sub-buffer size of the channel.
    #[arg(long, default_value_t = 16384)]
    subbuf_size: u64,
    /// Sub-buffers per CPU.
    #[arg(long, default_value_t = 8)]
    n_subbufs: u64,
    /// Sub-buffer size in the overwrite stress runs: smaller, so that the
    /// writer laps the reader often, also on a KASAN kernel where it writes
    /// slowly (with 16 KiB sub-buffers it lapped only a few times there).
    #[arg(long, default_value_t = 4096)]
    overwrite_subbuf_size: u64,
    /// Sections to run.
    #[arg(long, value_delimiter = ',', default_value = "stress,faults,bad-input")]
    sections: Vec<String>,
}

/// Everything measured in the guest.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GuestResults {
    /// `uname -r`.
    pub kernel: String,
    /// CONFIG_KASAN, if the config was found.
    pub kasan: Option<bool>,
    /// CONFIG_PROVE_LOCKING, if the config was found.
    pub lockdep: Option<bool>,
    /// Online CPUs at the start.
    pub cpus: u32,
    /// Events per stress run asked for, and per CPU.
    pub events: u64,
    /// Events per CPU per stress run.
    pub event_n: u64,
    /// Bytes per event.
    pub event_size: u64,
    /// Channel geometry.
    pub subbuf_size: u64,
    /// Channel geometry.
    pub n_subbufs: u64,
    /// Sub-buffer size in the overwrite stress runs (older results: none,
    /// the same as `subbuf_size`).
    #[serde(default)]
    pub overwrite_subbuf_size: Option<u64>,
    /// The stress runs.
    pub stress: Vec<stress::StressRow>,
    /// The faults.
    pub faults: Vec<faults::FaultRow>,
    /// The bad inputs.
    pub bad_input: Vec<badinput::BadRow>,
    /// Seconds the guest side took.
    pub seconds: f64,
    /// Sections that did not complete, with the error.
    pub errors: Vec<String>,
    /// Channel and reader modes the reader refuses to combine, with its
    /// message (relay-app mode cannot detect laps in overwrite mode).
    #[serde(default)]
    pub refused: Vec<String>,
}

fn save(results: &GuestResults, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))
}

fn guest_run(args: GuestArgs) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.scratch)
        .with_context(|| format!("creating {}", args.scratch.display()))?;
    let (kasan, lockdep) = guest::debug_options();
    let cpus = relay_reader::channel::online_cpus().len() as u32;
    let event_n = args.events / u64::from(cpus.max(1));
    let mut results = GuestResults {
        kernel: guest::release(),
        kasan,
        lockdep,
        cpus,
        events: args.events,
        event_n,
        event_size: args.event_size,
        subbuf_size: args.subbuf_size,
        n_subbufs: args.n_subbufs,
        overwrite_subbuf_size: Some(args.overwrite_subbuf_size),
        ..GuestResults::default()
    };
    guest::ensure_loaded(&args.modules)?;
    let base = guest::Setup {
        overwrite: false,
        subbuf_size: args.subbuf_size,
        n_subbufs: args.n_subbufs,
        event_n,
        event_size: args.event_size,
    };
    let want = |s: &str| args.sections.iter().any(|x| x == s);
    if want("stress") {
        for overwrite in [false, true] {
            for how in [
                Reading::One(Mode::Mmap),
                Reading::One(Mode::RelayApp),
                Reading::One(Mode::Read),
                Reading::PinnedMmap,
            ] {
                let setup = guest::Setup {
                    overwrite,
                    subbuf_size: if overwrite {
                        args.overwrite_subbuf_size
                    } else {
                        base.subbuf_size
                    },
                    ..base
                };
                match stress::run(setup, how) {
                    Ok(row) => results.stress.push(row),
                    Err(e)
                        if overwrite
                            && how == Reading::One(Mode::RelayApp)
                            && e.chain().any(|c| {
                                matches!(
                                    c.downcast_ref(),
                                    Some(relay_reader::Error::RelayAppOverwrite { .. })
                                )
                            }) =>
                    {
                        results.refused.push(format!("overwrite, relay-app: {e:#}"));
                    }
                    Err(e) => {
                        let what = format!(
                            "stress {} {}: {e:#}",
                            if overwrite {
                                "overwrite"
                            } else {
                                "no-overwrite"
                            },
                            how.name()
                        );
                        println!("{what}");
                        results.errors.push(what);
                    }
                }
                save(&results, &args.out)?;
            }
        }
    }
    let small = guest::Setup {
        event_n: 10_000,
        ..base
    };
    if want("faults") {
        match faults::run(&args.modules, &args.reader, &args.scratch, small) {
            Ok(rows) => results.faults = rows,
            Err(e) => results.errors.push(format!("faults: {e:#}")),
        }
        save(&results, &args.out)?;
    }
    if want("bad-input") {
        match badinput::run(&args.modules, &args.reader, &args.scratch, small) {
            Ok(rows) => results.bad_input = rows,
            Err(e) => results.errors.push(format!("bad input: {e:#}")),
        }
    }
    // Leave the kernel as found.
    let _ = guest::rmmod("relay_readtest");
    let _ = guest::rmmod("relay_app");
    results.seconds = started.elapsed().as_secs_f64();
    save(&results, &args.out)?;
    println!(
        "reliability: guest side done in {:.0} s, results in {}",
        results.seconds,
        args.out.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Guest(args) => guest_run(args),
        Cmd::Report(args) => report::run(&args),
    }
}
