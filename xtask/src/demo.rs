//! `cargo xtask demo`: builds the modules and `relay-reader`, boots the VM and
//! records klog_gen's output through relay_klog's channel with the mmap reader
//! (`ci/guest/demo.sh` runs in the guest). The recording ends up on the host
//! under `target/demo/recording/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::Tools;
use crate::vm::VmArgs;
use crate::{modules, util, vm};

/// Default hard timeout of the demo VM run, in seconds.
const DEMO_TIMEOUT: u64 = 600;

/// What `cargo xtask demo` takes.
#[derive(clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Kernel build tree to build the modules against (default: derived
    /// from --kernel when that is a build tree, else the stock headers).
    #[arg(long)]
    kdir: Option<PathBuf>,
    /// How many records klog_gen writes.
    #[arg(long, default_value_t = 5000)]
    count: u64,
}

/// Runs the demo.
pub fn run(tools: &Tools, root: &Path, args: &DemoArgs) -> Result<()> {
    let vm_args = &args.vm;
    let count = args.count;
    let modules_dir = modules::for_vm(root, vm_args, args.kdir.clone())?;
    util::run(Command::new(util::cargo()).current_dir(root).args([
        "build",
        "-p",
        "relay-reader-cli",
        "--bin",
        "relay-reader",
    ]))
    .context("building relay-reader")?;
    let target = util::metadata(root)?.target_dir;
    let reader = target.join("debug/relay-reader");
    if !reader.is_file() {
        bail!(
            "{} was not built: does the relay-reader-cli package still have its `relay-reader` binary?",
            reader.display()
        );
    }

    let demo_dir = target.join("demo");
    let out = demo_dir.join("recording");
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .with_context(|| format!("removing the previous recording {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mut opts = vm::VmOptions::from_args(vm_args, DEMO_TIMEOUT)?;
    opts.rwdirs.push(demo_dir);
    let command = format!(
        "bash ci/guest/demo.sh {} {} {} {count}",
        util::shell_quote_path(&modules_dir),
        util::shell_quote_path(&reader),
        util::shell_quote_path(&out),
    );
    vm::run(tools, root, &opts, &command)?
        .check(&command)
        .context("the demo failed in the guest")?;

    println!("\ndemo: recording in {}", out.display());
    let mut entries: Vec<_> = std::fs::read_dir(&out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|entry| entry.ok())
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        println!(
            "  {:<12} {len:>10} bytes",
            entry.file_name().to_string_lossy()
        );
    }
    Ok(())
}
