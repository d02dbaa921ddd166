//! `cargo xtask bench`: every benchmark of the project in one go, written
//! into BENCHMARKS.md at the repository root.
//!
//! 1. `relay-bench host` on the host (release build): the reader core over
//!    the relay model against memcpy of the same bytes, ioctls per sub-buffer;
//! 2. one VM boot running `relay-bench run` twice (a paced producer, then the
//!    producer at full speed: relay-reader mmap and read modes, a cat loop and
//!    dd under the relay_bench module), `relay-bench blktrace` (Debian's
//!    blktrace against relay-blktrace on null_blk under fio) and
//!    `relay-bench pbench` (the producer side: cost per event of klog off
//!    and on, relay_write() and trace_printk() from the relay_pbench module)
//!    and `relay-bench transports` (relay + relay-reader against the BPF ring
//!    buffer and the perf buffer, one producer for all: the relay_xbench
//!    module of `ci/bench/module/`, built here out of tree against the
//!    kernel the VM boots);
//! 3. `relay-bench report`: BENCHMARKS.md from the JSON of 1 and 2, with the
//!    aims checked. The JSON and the tables stay in `target/bench/`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::setup::Tools;
use crate::vm::VmArgs;
use crate::{modules, util, vm};

/// Hard timeout of the benchmark VM run, in seconds.
const BENCH_TIMEOUT: u64 = 1800;

const PACED_BYTES: u64 = 128 << 20;
const FULL_BYTES: u64 = 64 << 20;
const RECORD_SIZE: u32 = 256;
const RATE: u32 = 32;
const BLKTRACE_IOS: u64 = 250_000;
const TRANSPORT_ROUNDS: u32 = 5;

/// What `cargo xtask bench` takes.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Bytes every CPU writes per contender in the paced run.
    #[arg(long, default_value_t = PACED_BYTES)]
    bytes_per_cpu: u64,
    /// Producer rate per CPU in MiB/s of the paced run (the second run is
    /// always at full speed).
    #[arg(long, default_value_t = RATE)]
    rate: u32,
    /// Bytes every CPU writes per contender in the full-speed run.
    #[arg(long, default_value_t = FULL_BYTES)]
    full_bytes_per_cpu: u64,
    /// Record size in bytes.
    #[arg(long, default_value_t = RECORD_SIZE)]
    record_size: u32,
    /// I/Os per fio job in the blktrace comparison.
    #[arg(long, default_value_t = BLKTRACE_IOS)]
    blktrace_ios: u64,
    /// Rounds of the transport comparison (every transport and record
    /// size measured once per round).
    #[arg(long, default_value_t = TRANSPORT_ROUNDS)]
    transport_rounds: u32,
}

impl BenchArgs {
    /// The command line that reproduces a run with these arguments.
    fn command(&self) -> String {
        let mut cmd = String::from("cargo xtask bench");
        let mut opt = |name: &str, value: u64, default: u64| {
            if value != default {
                cmd.push_str(&format!(" --{name} {value}"));
            }
        };
        opt("bytes-per-cpu", self.bytes_per_cpu, PACED_BYTES);
        opt("rate", self.rate.into(), RATE.into());
        opt("full-bytes-per-cpu", self.full_bytes_per_cpu, FULL_BYTES);
        opt("record-size", self.record_size.into(), RECORD_SIZE.into());
        opt("blktrace-ios", self.blktrace_ios, BLKTRACE_IOS);
        opt(
            "transport-rounds",
            self.transport_rounds.into(),
            TRANSPORT_ROUNDS.into(),
        );
        if let Some(kernel) = &self.vm.kernel {
            // As given (a path under the checkout, where `cargo xtask
            // kernel` builds, stays relative).
            cmd.push_str(&format!(" --kernel {}", kernel.display()));
        }
        cmd
    }
}

/// Runs the benchmarks and writes BENCHMARKS.md.
pub fn run(tools: &Tools, root: &Path, args: &BenchArgs) -> Result<()> {
    let vm_args = &args.vm;
    let modules_dir = modules::for_vm(root, vm_args, None)?;
    let xbench = modules::build_xbench(root, &modules::kdir_for(vm_args, None)?, &modules_dir)?;
    let (target, release) =
        util::build_release(root, &["relay-reader-cli", "relay-bench", "relay-blktrace"])?;
    let bench = release.join("relay-bench");
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for old in [
        "host.json",
        "paced.json",
        "full.json",
        "blktrace.json",
        "pbench.json",
        "transports.json",
    ] {
        let _ = std::fs::remove_file(out_dir.join(old));
    }

    println!("bench: the reader core against memcpy on the host");
    util::run(Command::new(&bench).args([
        "host".as_ref(),
        "--json".as_ref(),
        out_dir.join("host.json").as_os_str(),
    ]))
    .context("the host benchmark failed")?;

    let mut opts = vm::VmOptions::from_args(vm_args, BENCH_TIMEOUT)?;
    opts.rwdirs.push(out_dir.clone());
    let q = |p: &Path| util::shell_quote_path(p);
    let run = |bytes: u64, rate: u32, name: &str| {
        format!(
            "{} run --modules {} --reader {} --bytes-per-cpu {bytes} --record-size {} --rate {rate} --json {} | tee {}",
            q(&bench),
            q(&modules_dir),
            q(&release.join("relay-reader")),
            args.record_size,
            q(&out_dir.join(format!("{name}.json"))),
            q(&out_dir.join(format!("{name}.md"))),
        )
    };
    let command = [
        run(args.bytes_per_cpu, args.rate, "paced"),
        run(args.full_bytes_per_cpu, 0, "full"),
        format!(
            "{} blktrace --relay-blktrace {} --ios {} --json {} | tee {}",
            q(&bench),
            q(&release.join("relay-blktrace")),
            args.blktrace_ios,
            q(&out_dir.join("blktrace.json")),
            q(&out_dir.join("blktrace.md")),
        ),
        format!(
            "{} pbench --modules {} --json {} | tee {}",
            q(&bench),
            q(&modules_dir),
            q(&out_dir.join("pbench.json")),
            q(&out_dir.join("pbench.md")),
        ),
        // From a copy on the guest's tmpfs, as the other contenders run: the
        // consumers are this process, whose pages would otherwise come over
        // 9p as each code path first runs.
        format!(
            "cp {} /tmp/relay-bench-transports && /tmp/relay-bench-transports transports --modules {} --xbench {} --rounds {} --json {} | tee {}",
            q(&bench),
            q(&modules_dir),
            q(&xbench),
            args.transport_rounds,
            q(&out_dir.join("transports.json")),
            q(&out_dir.join("transports.md")),
        ),
    ]
    .join(" && ");
    vm::run(
        tools,
        root,
        &opts,
        &format!("bash -o pipefail -c {}", util::shell_quote(&command)),
    )?
    .check(&command)
    .context("the benchmark failed in the guest")?;

    let report = root.join("BENCHMARKS.md");
    util::run(Command::new(&bench).args([
        "report".as_ref(),
        "--dir".as_ref(),
        out_dir.as_os_str(),
        "--command".as_ref(),
        args.command().as_ref(),
        "--out".as_ref(),
        report.as_os_str(),
    ]))
    .context("writing BENCHMARKS.md")?;
    println!(
        "\nbench: {} written (tables and JSON in {})",
        report.display(),
        out_dir.display()
    );
    Ok(())
}
