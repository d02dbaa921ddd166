//! `cargo xtask`: the one entry point for setting up the machine, building the
//! kernel modules, booting VMs, running the full test suite and the demo.
//!
//! Every subcommand first checks (and, as root, installs) what it needs; see
//! [`setup`]. Build outputs go under `target/`, the virtme-ng venv under
//! `.cache/`.

mod bench;
mod codegen;
mod demo;
mod fuzz;
mod kernel;
mod modules;
mod reliability;
mod setup;
mod test;
mod util;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

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
    Modules {
        /// Kernel build tree or headers (default: the stock Debian 6.12 headers).
        #[arg(long)]
        kdir: Option<PathBuf>,
    },
    /// Boot a kernel in a VM and run a command in it as root.
    Vm {
        #[command(flatten)]
        vm: VmArgs,
        /// The command to run in the guest: one argument is taken as a shell
        /// snippet, several are quoted and joined.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The full test suite: fmt, clippy, codegen drift, kernel series, host
    /// tests, module build, in-VM integration tests on the stock 6.12 kernel,
    /// then on the patched 7.3 kernel (built from kernel-patches/series/7.3).
    Test {
        #[command(flatten)]
        vm: VmArgs,
        /// Kernel build tree to build the modules against (default: derived
        /// from --kernel when that is a build tree, else the stock headers).
        #[arg(long)]
        kdir: Option<PathBuf>,
        /// Run the remaining steps after a failure (still fails at the end).
        #[arg(long)]
        keep_going: bool,
        /// Skip building and testing the patched 7.3 kernel (built from
        /// kernel-patches/series/7.3 and booted by default when no --kernel
        /// is given).
        #[arg(long)]
        no_patched_kernel: bool,
    },
    /// Build everything, boot a VM and record klog_gen output with relay-reader.
    Demo {
        #[command(flatten)]
        vm: VmArgs,
        /// Kernel build tree to build the modules against (default: derived
        /// from --kernel when that is a build tree, else the stock headers).
        #[arg(long)]
        kdir: Option<PathBuf>,
        /// How many records klog_gen writes.
        #[arg(long, default_value_t = 5000)]
        count: u64,
    },
    /// Run the benchmarks (the reader core against memcpy on the host; in
    /// one VM boot the readers side by side under a paced and a full-speed
    /// producer, and blktrace against relay-blktrace) and write BENCHMARKS.md.
    Bench {
        #[command(flatten)]
        vm: VmArgs,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// The reliability run (fuzzing on the host; in one VM boot stress
    /// through every reader mode, faults during a recording, bad input) and
    /// RELIABILITY.md from its measurements.
    Reliability {
        #[command(flatten)]
        vm: VmArgs,
        #[command(flatten)]
        args: reliability::ReliabilityArgs,
    },
    /// Build a kernel with a patch series of kernel-patches/series/ applied:
    /// verified Debian base, `git am`, slim config, ccache (runs
    /// kernel-patches/scripts/build-kernel.sh).
    Kernel {
        /// The series' base (6.12 or 7.3).
        #[arg(long, default_value = kernel::CI_BASE)]
        base: String,
        /// Build with KASAN and lockdep (x86-64).
        #[arg(long, conflicts_with = "kcsan")]
        kasan: bool,
        /// Build with KCSAN, the data race detector (x86-64; excludes KASAN).
        #[arg(long)]
        kcsan: bool,
        /// The architecture: x86_64, arm64 (cross-compiled with
        /// aarch64-linux-gnu-gcc) or i386 (32-bit x86).
        #[arg(long, value_enum, default_value_t = KernelArch::X86_64)]
        arch: KernelArch,
        /// Only check that every series carries kernel-patches/src/ (no build).
        #[arg(long)]
        check: bool,
    },
    /// The kernel matrix: both series (6.12 and 7.3) built and put through
    /// the VM tests, then the 7.3 kernel with KASAN and lockdep through a
    /// stress run and the VM tests, with no kernel splat allowed, with KCSAN
    /// through the same with no data race report allowed, both also through
    /// a long run of the ABI exerciser, and built for arm64 and i386, each
    /// booted under qemu through the smoke test and a stress round.
    KernelMatrix {
        #[command(flatten)]
        vm: VmArgs,
        /// Run only this stage (repeatable): a base (6.12, 7.3: its build and
        /// VM tests), kasan, kcsan, arm64 or i386 (default: every stage).
        #[arg(long, value_name = "STAGE")]
        only: Vec<String>,
        /// How many times longer than in the VM tests the kasan and kcsan
        /// stages run the ABI exerciser (`RELAY_EXERCISER_SCALE`).
        #[arg(long, default_value_t = kernel::EXERCISER_SCALE)]
        exerciser_scale: u32,
    },
    /// Run the cargo-fuzz targets (reader core vs the relay model, the
    /// relay-apps sub-buffer parser) for a number of executions each.
    Fuzz {
        /// Executions per target.
        #[arg(long, default_value_t = 1_000_000)]
        runs: u64,
    },
    /// Regenerate relay-sys bindings (runs the relay-sys-gen crate).
    Codegen {
        /// Fail if the committed bindings differ from freshly generated ones.
        #[arg(long)]
        check: bool,
    },
}

/// The architectures `cargo xtask kernel --arch` builds for.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KernelArch {
    #[value(name = "x86_64")]
    X86_64,
    Arm64,
    I386,
}

/// Options shared by every subcommand that boots a VM.
#[derive(Args, Clone)]
pub struct VmArgs {
    /// Kernel to boot: a bzImage/vmlinuz or a kernel build directory
    /// (default: the stock /boot/vmlinuz-6.12*-amd64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Hard limit for the whole VM run, in seconds; the guest is killed after
    /// it (default: 600, or 1800 for `test`).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Guest memory (qemu syntax).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Show kernel console messages (vng --verbose).
    #[arg(long)]
    pub verbose: bool,
    /// Also write the whole guest output, the kernel console included (as
    /// with --verbose), to FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// A host directory the guest may write (same path in the guest; created
    /// if missing). Repeatable. The rest of the host is read-only in the guest.
    #[arg(long, value_name = "DIR")]
    pub rwdir: Vec<PathBuf>,
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
    match cli.command {
        Command::Setup => {}
        Command::Modules { kdir } => {
            let kdir = match kdir {
                Some(kdir) => kdir,
                None => modules::stock_kdir()?,
            };
            let out = modules::build(&root, &kdir)?;
            println!("modules built in {}", out.display());
        }
        Command::Vm { vm, command } => {
            let opts = vm::VmOptions::from_args(&vm, vm::DEFAULT_TIMEOUT)?;
            let command = vm::shell_command(&command);
            let outcome = vm::run(&tools, &root, &opts, &command)?;
            if let Err(err) = outcome.check(&command) {
                eprintln!("error: {err:#}");
                // The guest's own status when it has one (a signal has none).
                let code = outcome.status.code().and_then(|c| u8::try_from(c).ok());
                return Ok(ExitCode::from(code.filter(|c| *c != 0).unwrap_or(1)));
            }
        }
        Command::Test {
            vm,
            kdir,
            keep_going,
            no_patched_kernel,
        } => test::run(&tools, &root, &vm, kdir, keep_going, no_patched_kernel)?,
        Command::Kernel {
            base,
            kasan,
            kcsan,
            arch,
            check,
        } => {
            let variant = match (arch, kasan, kcsan) {
                (KernelArch::X86_64, false, false) => kernel::Variant::Vm,
                (KernelArch::X86_64, true, _) => kernel::Variant::Kasan,
                (KernelArch::X86_64, false, true) => kernel::Variant::Kcsan,
                (KernelArch::Arm64, false, false) => kernel::Variant::Arm64,
                (KernelArch::I386, false, false) => kernel::Variant::I386,
                _ => anyhow::bail!("--kasan and --kcsan are x86-64 builds: not with --arch"),
            };
            if check {
                kernel::check_series(&root)?;
            } else if let Some(arch) = variant.foreign_arch() {
                let built = kernel::build_variant(&root, &base, variant)?;
                println!(
                    "kernel {} ({}): {}\n\
                     boot it and run vm-test.sh and a stress round in it: \
                     bash kernel-patches/scripts/boot-guest.sh {arch} {}",
                    built.base,
                    built.release,
                    built.bzimage.display(),
                    built.build_dir.display()
                );
            } else {
                let built = kernel::build_variant(&root, &base, variant)?;
                let modules = kernel::intree_modules(&root, &built.build_dir)?;
                println!(
                    "kernel {} ({}): {}\nmodules: {}\n\
                     run the VM tests on it: cargo xtask test --kernel {}",
                    built.base,
                    built.release,
                    built.bzimage.display(),
                    modules.display(),
                    built.bzimage.display()
                );
            }
        }
        Command::KernelMatrix {
            vm,
            only,
            exerciser_scale,
        } => kernel::matrix(
            &tools,
            &root,
            &vm,
            &only,
            exerciser_scale,
            &|args, modules, selection| test::vm_tests_for(&tools, &root, args, modules, selection),
        )?,
        Command::Demo { vm, kdir, count } => demo::run(&tools, &root, &vm, kdir, count)?,
        Command::Bench { vm, args } => bench::run(&tools, &root, &vm, &args)?,
        Command::Fuzz { runs } => fuzz::run(&root, runs)?,
        Command::Reliability { vm, args } => reliability::run(&tools, &root, &vm, &args)?,
        Command::Codegen { check } => codegen::run(&root, check)?,
    }
    Ok(ExitCode::SUCCESS)
}
