//! `cargo xtask`: the one entry point for setting up the machine, building the
//! kernel modules, booting VMs, running the full test suite and the demo.
//!
//! Every subcommand first checks (and, as root, installs) what it needs; see
//! [`setup`]. Build outputs go under `target/`, the virtme-ng venv under
//! `.cache/`. Each subcommand's options and entry point are in its module.

mod bench;
mod codegen;
mod demo;
mod fuzz;
mod kernel;
mod matrix;
mod modules;
mod reliability;
mod setup;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Build, test and demo driver for the relay workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (apt packages, virtme-ng venv); needs root.
    Setup,
    /// Build the out-of-tree kernel modules into target/modules/<release>/.
    Modules(modules::ModulesArgs),
    /// Boot a kernel in a VM and run a command in it as root.
    Vm(vm::VmCommandArgs),
    /// The full test suite: fmt, clippy, codegen drift, kernel series, host
    /// tests, module build, in-VM integration tests on the stock 6.12 kernel,
    /// then on the patched 7.3 kernel (built from kernel-patches/series/7.3).
    Test(test::TestArgs),
    /// Build everything, boot a VM and record klog_gen output with relay-reader.
    Demo(demo::DemoArgs),
    /// Run the benchmarks (the reader core against memcpy on the host; in
    /// one VM boot the readers side by side under a paced and a full-speed
    /// producer, and blktrace against relay-blktrace) and write BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// The reliability run (fuzzing on the host; in one VM boot stress
    /// through every reader mode, faults during a recording, bad input) and
    /// RELIABILITY.md from its measurements.
    Reliability(reliability::ReliabilityArgs),
    /// Build a kernel with a patch series of kernel-patches/series/ applied:
    /// verified Debian base, `git am`, slim config, ccache (runs
    /// kernel-patches/scripts/build-kernel.sh).
    Kernel(kernel::KernelArgs),
    /// The kernel matrix: both series (6.12 and 7.3) built and put through
    /// the VM tests, then the 7.3 kernel with KASAN and lockdep through a
    /// stress run and the VM tests, with no kernel splat allowed, with KCSAN
    /// through the same with no data race report allowed, both also through
    /// a long run of the ABI exerciser, and built for arm64 and i386, each
    /// booted under qemu through the smoke test and a stress round.
    KernelMatrix(matrix::MatrixArgs),
    /// Run the cargo-fuzz targets (reader core vs the relay model, the
    /// relay-apps sub-buffer parser) for a number of executions each.
    Fuzz(fuzz::FuzzArgs),
    /// Regenerate relay-sys bindings (runs the relay-sys-gen crate).
    Codegen(codegen::CodegenArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the subcommand; `vm` exits with the guest command's status.
fn run(cli: Cli) -> Result<ExitCode> {
    let root = util::repo_root()?;
    let tools = setup::ensure(&root, matches!(cli.command, Command::Setup))?;
    match &cli.command {
        Command::Setup => {}
        Command::Modules(args) => modules::run(&root, args)?,
        Command::Vm(args) => return vm::command(&tools, &root, args),
        Command::Test(args) => test::run(&tools, &root, args)?,
        Command::Demo(args) => demo::run(&tools, &root, args)?,
        Command::Bench(args) => bench::run(&tools, &root, args)?,
        Command::Reliability(args) => reliability::run(&tools, &root, args)?,
        Command::Kernel(args) => kernel::run(&root, args)?,
        Command::KernelMatrix(args) => matrix::run(&tools, &root, args)?,
        Command::Fuzz(args) => fuzz::run(&root, args)?,
        Command::Codegen(args) => codegen::run(&root, args)?,
    }
    Ok(ExitCode::SUCCESS)
}
