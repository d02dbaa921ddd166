//! `cargo xtask bench`: builds the modules, `relay-reader` and `relay-bench`
//! (ci/bench), boots the VM and runs `relay-bench run` there: every reader
//! side by side under the same relay_bench producer load. The Markdown table
//! is printed and saved to `target/bench/results.md`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::setup::Tools;
use crate::{modules, util, vm, VmArgs};

/// Hard timeout of the benchmark VM run, in seconds.
const BENCH_TIMEOUT: u64 = 1800;

/// Runs the benchmark.
pub fn run(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    bytes_per_cpu: u64,
    record_size: u32,
    rate: u32,
) -> Result<()> {
    let kdir = modules::kdir_for(vm_args, None)?;
    let modules_dir = modules::build(root, &kdir).context("building the kernel modules")?;
    util::run(Command::new(util::cargo()).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "relay-reader",
        "-p",
        "relay-bench",
    ]))
    .context("building relay-reader and relay-bench")?;
    let target = util::metadata(root)?.target_dir;
    let release = target.join("release");
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let results = out_dir.join("results.md");

    let mut opts = vm::VmOptions::from_args(vm_args, BENCH_TIMEOUT)?;
    opts.rwdirs.push(out_dir);
    let command = format!(
        "{} run --modules {} --reader {} --bytes-per-cpu {bytes_per_cpu} --record-size {record_size} --rate {rate} | tee {}",
        util::shell_quote_path(&release.join("relay-bench")),
        util::shell_quote_path(&modules_dir),
        util::shell_quote_path(&release.join("relay-reader")),
        util::shell_quote_path(&results),
    );
    vm::run(
        tools,
        root,
        &opts,
        &format!("bash -o pipefail -c {}", util::shell_quote(&command)),
    )?
    .check(&command)
    .context("the benchmark failed in the guest")?;
    println!(
        "\nbench: table saved to {}\nreproduce: cargo xtask bench --bytes-per-cpu {bytes_per_cpu} --record-size {record_size} --rate {rate}",
        results.display()
    );
    Ok(())
}
