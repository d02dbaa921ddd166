//! `relay-bench`: readers side by side under the same producer load, inside
//! the test VM (`cargo xtask bench` boots it and runs `relay-bench run` and
//! `relay-bench blktrace`, `relay-bench pbench` and `relay-bench
//! transports`), the reader core against memcpy on the host
//! (`relay-bench host`), and `relay-bench report`, which renders all of it
//! into BENCHMARKS.md.
//!
//! One module a subcommand, with its options: [`readers`] (`run`),
//! [`blktrace`], [`pbench`], [`transports`], [`host`], [`report`] and [`cat_loop`] (the
//! baseline reader of `run`); [`process`] and [`rounds`] are what they share,
//! [`json`] the files they write and `report` reads (typed results).

mod blktrace;
mod cat_loop;
mod host;
mod json;
mod pbench;
mod process;
mod readers;
mod report;
mod rounds;
mod transports;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every contender and print a Markdown table (as root, in the VM).
    Run(readers::RunArgs),
    /// Debian's blktrace beside relay-blktrace on the same null_blk device
    /// under the same fio load (as root, in the VM): CPU per GiB of trace
    /// data and events dropped.
    Blktrace(blktrace::BlktraceArgs),
    /// The producer side (as root, in the VM): cost per event of an empty
    /// function call, klog() off and on, relay_write() and trace_printk(),
    /// from the relay_pbench module.
    Pbench(pbench::PbenchArgs),
    /// relay + relay-reader against the BPF ring buffer and the perf
    /// buffer, one producer (the relay_xbench module) for all (as root, in
    /// the VM): lossless rate, full-speed rate and loss, consumer CPU per
    /// record and per GiB, producer cost per record.
    Transports(transports::TransportsArgs),
    /// The reader core over the relay model against memcpy of the same
    /// bytes, on the host; build with --release.
    Host(host::HostArgs),
    /// Renders BENCHMARKS.md from the JSON files of `host`, two `run`s
    /// (paced.json, full.json), `blktrace` and `pbench` in a directory.
    Report(report::ReportArgs),
    /// The baseline: a cat-style loop per CPU file, 4 KiB read(2)s, poll
    /// with a 10 ms timeout when empty (as relay-apps' read example).
    CatLoop(cat_loop::CatLoopArgs),
}

fn main() -> Result<()> {
    match &Cli::parse().command {
        Cmd::Run(args) => readers::run(args),
        Cmd::Blktrace(args) => blktrace::run(args),
        Cmd::Pbench(args) => pbench::run(args),
        Cmd::Transports(args) => transports::run(args),
        Cmd::Host(args) => host::run(args),
        Cmd::Report(args) => report::run(args),
        Cmd::CatLoop(args) => cat_loop::run(args),
    }
}
