//! `cargo xtask reliability`: the reliability figures of the project, all
//! measured in one run and written into RELIABILITY.md at the repository
//! root by `relay-reliability report` (nothing typed by hand).
//!
//! 1. on the host, the cargo-fuzz targets for `--fuzz-runs` executions each
//!    (the logs stay in `target/reliability/fuzz-<target>.log`; with
//!    `--fuzz-runs 0` the logs of the last run are reported as such);
//! 2. one VM boot running `relay-reliability guest` (ci/reliability/):
//!    stress through relay_readtest in every reader mode, faults during a
//!    recording, bad input; its JSON goes to `target/reliability/`;
//! 3. `relay-reliability report`: RELIABILITY.md.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::setup::Tools;
use crate::vm::VmArgs;
use crate::{fuzz, modules, util, vm};

/// Hard timeout of the VM run, in seconds.
const TIMEOUT: u64 = 1800;
/// Events per stress run, all CPUs together (the 10^7).
const EVENTS: u64 = 10_000_000;
/// Fuzz executions per target.
const FUZZ_RUNS: u64 = 1_000_000;
/// The fuzz targets (those of `cargo xtask fuzz`), in the order they run.
const FUZZ_TARGETS: [&str; 2] = ["reader_vs_model", "relay_app_subbuf"];

/// What `cargo xtask reliability` takes.
#[derive(clap::Args)]
pub struct ReliabilityArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Events per stress run, all CPUs together.
    #[arg(long, default_value_t = EVENTS)]
    events: u64,
    /// Fuzz executions per target (0: do not fuzz, report the last run's logs).
    #[arg(long, default_value_t = FUZZ_RUNS)]
    fuzz_runs: u64,
}

impl ReliabilityArgs {
    /// The command line that reproduces a run with these arguments.
    fn command(&self) -> String {
        let mut cmd = String::from("cargo xtask reliability");
        if self.events != EVENTS {
            cmd.push_str(&format!(" --events {}", self.events));
        }
        if self.fuzz_runs != FUZZ_RUNS {
            cmd.push_str(&format!(" --fuzz-runs {}", self.fuzz_runs));
        }
        cmd
    }
}

/// Runs a fuzz target for `runs` executions, its output into `log`.
fn fuzz(root: &Path, target: &str, runs: u64, log: &Path) -> Result<()> {
    let fuzz = root.join("fuzz");
    let corpus = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(util::cargo());
    cmd.current_dir(&fuzz)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "-O", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-runs={runs}"))
        .arg("-max_len=4096")
        .stdout(out.try_clone()?)
        .stderr(out);
    println!("$ {}  > {}", util::display(&cmd), log.display());
    let status = cmd.status().context("running cargo fuzz")?;
    if !status.success() {
        // The report shows the crash; the run goes on.
        eprintln!(
            "reliability: fuzz target {target} failed ({status}): see {} and fuzz/artifacts/{target}/",
            log.display()
        );
    }
    Ok(())
}

/// Runs everything and writes RELIABILITY.md.
pub fn run(tools: &Tools, root: &Path, args: &ReliabilityArgs) -> Result<()> {
    let vm_args = &args.vm;
    let modules_dir = modules::for_vm(root, vm_args, None)?;
    let (target, release) = util::build_release(root, &["relay-reader-cli", "relay-reliability"])?;
    let driver = release.join("relay-reliability");
    let out_dir = target.join("reliability");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json = out_dir.join("guest.json");
    let _ = std::fs::remove_file(&json);

    let logs: Vec<(&str, std::path::PathBuf)> = FUZZ_TARGETS
        .iter()
        .map(|t| (*t, out_dir.join(format!("fuzz-{t}.log"))))
        .collect();
    let fuzz_command = out_dir.join("fuzz-command");
    if args.fuzz_runs > 0 {
        fuzz::ensure_cargo_fuzz()?;
        for (target, log) in &logs {
            println!("reliability: fuzzing {target} for {} runs", args.fuzz_runs);
            fuzz(root, target, args.fuzz_runs, log)?;
        }
        std::fs::write(
            &fuzz_command,
            format!("cargo xtask fuzz --runs {}", args.fuzz_runs),
        )?;
    }

    let mut opts = vm::VmOptions::from_args(vm_args, TIMEOUT)?;
    opts.rwdirs.push(out_dir.clone());
    let q = |p: &Path| util::shell_quote_path(p);
    let command = format!(
        "{} guest --modules {} --reader {} --out {} --events {}",
        q(&driver),
        q(&modules_dir),
        q(&release.join("relay-reader")),
        q(&json),
        args.events
    );
    vm::run(tools, root, &opts, &command)?
        .check(&command)
        .context("the reliability run failed in the guest")?;

    let report = root.join("RELIABILITY.md");
    let mut cmd = Command::new(&driver);
    cmd.arg("report")
        .arg("--guest")
        .arg(&json)
        .arg("--command")
        .arg(args.command())
        .arg("--corpus")
        .arg(root.join("fuzz/corpus"))
        .arg("--out")
        .arg(&report);
    for (target, log) in &logs {
        if log.is_file() {
            cmd.arg("--fuzz-log")
                .arg(format!("{target}={}", log.display()));
        }
    }
    // The kernel matrix's long exerciser runs (KASAN + lockdep, KCSAN).
    let matrix = target.join("kernel-matrix");
    let mut summaries: Vec<_> = std::fs::read_dir(&matrix)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with("-exerciser.md"))
        })
        .collect();
    summaries.sort();
    for summary in &summaries {
        cmd.arg("--exerciser-summary").arg(summary);
    }
    if let Ok(fuzz_cmd) = std::fs::read_to_string(&fuzz_command) {
        cmd.arg("--fuzz-command").arg(fuzz_cmd.trim());
    }
    if args.fuzz_runs == 0 {
        cmd.arg("--fuzz-earlier");
    }
    util::run(cmd.stdin(Stdio::null())).context("writing RELIABILITY.md")?;
    println!(
        "\nreliability: {} written (measurements in {})",
        report.display(),
        out_dir.display()
    );
    Ok(())
}
