//! `cargo xtask test`: the full test suite, in order, each step announced by a
//! banner and timed; a failure names its step ("FAILED step: clippy").
//!
//! Steps: fmt, clippy, codegen drift (when `relay-sys-gen` exists), kernel
//! series (they carry `kernel-patches/src/`), host tests, module build,
//! in-VM integration tests. The VM tests build the `relay-vm-tests` test
//! binaries and the workspace binaries and examples on the host, boot the kernel once and
//! run `ci/guest/run-tests.sh` in the guest. Unless `--kernel` names another
//! kernel (or `--no-patched-kernel`), the stock kernel's run is followed by
//! the patched 7.3 kernel (`kernel::CI_BASE`, the primary series): built
//! from kernel-patches/series/7.3, booted, the same VM tests with its in-tree
//! modules. The patched 6.12 kernel is left to `cargo xtask kernel-matrix`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::setup::Tools;
use crate::vm::{TestSelection, VmArgs};
use crate::{codegen, kernel, modules, util, vm};

/// Default hard timeout of the in-VM test run, in seconds (TCG is slow).
const VM_TEST_TIMEOUT: u64 = 1800;

/// The VM test package.
const VM_TEST_PACKAGE: &str = "relay-vm-tests";

/// What `cargo xtask test` takes.
#[derive(clap::Args)]
pub struct TestArgs {
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
}

/// Times the steps and remembers which failed.
struct Steps {
    total: usize,
    done: Vec<(String, Duration, bool)>,
    keep_going: bool,
}

impl Steps {
    /// Runs one step under a banner; its error is reported as "FAILED step: NAME".
    /// Returns `None` when the step failed and `keep_going` is set.
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        println!("\n==> [{}/{}] {name}", self.done.len() + 1, self.total);
        let started = Instant::now();
        let result = f();
        let elapsed = started.elapsed();
        self.done.push((name.to_string(), elapsed, result.is_ok()));
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                println!("FAILED step: {name}");
                if self.keep_going {
                    eprintln!("error: {err:#}");
                    Ok(None)
                } else {
                    self.summary();
                    Err(err.context(format!("FAILED step: {name}")))
                }
            }
        }
    }

    /// Prints the timing of every step run so far.
    fn summary(&self) {
        println!("\n==> summary");
        for (name, elapsed, ok) in &self.done {
            let verdict = if *ok { "ok" } else { "FAILED" };
            println!("  {name:<30} {:>8.1} s  {verdict}", elapsed.as_secs_f64());
        }
        let total: Duration = self.done.iter().map(|(_, elapsed, _)| *elapsed).sum();
        println!("  {:<30} {:>8.1} s", "total", total.as_secs_f64());
    }

    fn failed(&self) -> Vec<&str> {
        self.done
            .iter()
            .filter(|(_, _, ok)| !ok)
            .map(|(name, _, _)| name.as_str())
            .collect()
    }
}

/// Runs the whole suite.
pub fn run(tools: &Tools, root: &Path, args: &TestArgs) -> Result<()> {
    let vm_args = &args.vm;
    let meta = util::metadata(root)?;
    let has_codegen = meta.packages.iter().any(|p| p == codegen::GEN_PACKAGE);
    let patched = vm_args.kernel.is_none() && !args.no_patched_kernel;
    let mut steps = Steps {
        total: 6 + usize::from(has_codegen) + 2 * usize::from(patched),
        done: Vec::new(),
        keep_going: args.keep_going,
    };
    let cargo = |args: &[&str]| -> Result<()> {
        util::run(Command::new(util::cargo()).current_dir(root).args(args))
    };

    steps.run("fmt", || {
        cargo(&["fmt", "--all", "--check"]).context("formatting differs: run `cargo fmt --all`")
    })?;
    steps.run("clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    if has_codegen {
        steps.run("codegen drift", || {
            codegen::run(root, &codegen::CodegenArgs { check: true })
        })?;
    } else {
        println!(
            "\n(skipping codegen drift: no {} package in the workspace)",
            codegen::GEN_PACKAGE
        );
    }
    steps.run("kernel series", || kernel::check_series(root))?;
    steps.run("host tests", || {
        cargo(&["test", "--workspace", "--exclude", VM_TEST_PACKAGE])
    })?;
    let modules_dir = steps
        .run("modules", || {
            modules::for_vm(root, vm_args, args.kdir.clone())
        })?
        .unwrap_or_default();
    let closing = steps.run("vm tests", || {
        if modules_dir.as_os_str().is_empty() {
            bail!("the module build failed, so the VM tests cannot run");
        }
        vm_tests(
            tools,
            root,
            &meta.target_dir,
            vm_args,
            &modules_dir,
            &TestSelection::default(),
        )
    })?;
    let mut patched_closing = None;
    if patched {
        let name = format!("patched kernel {}", kernel::CI_BASE);
        let built = steps.run(&format!("{name}: build"), || {
            let built = kernel::build(root, kernel::CI_BASE, false)?;
            let modules = modules::intree_modules(root, &built.build_dir)?;
            Ok((built, modules))
        })?;
        patched_closing = steps
            .run(&format!("{name}: vm tests"), || {
                let Some((built, modules)) = &built else {
                    bail!("the patched kernel did not build, so its VM tests cannot run");
                };
                let mut args = vm_args.clone();
                args.kernel = Some(built.bzimage.clone());
                vm_tests(
                    tools,
                    root,
                    &meta.target_dir,
                    &args,
                    modules,
                    &TestSelection::default(),
                )
            })?
            .flatten();
    }

    steps.summary();
    let failed = steps.failed();
    if !failed.is_empty() {
        bail!("FAILED steps: {}", failed.join(", "));
    }
    // Repeat the guest runner's "N passed, N failed" as the closing line
    // (summed over the kernels when the patched one ran too).
    match (closing.flatten(), patched_closing) {
        (Some(stock), Some(patched)) => {
            println!("stock kernel: {stock}");
            println!("patched kernel {}: {patched}", kernel::CI_BASE);
            let count = |line: &str, i: usize| -> u64 {
                line.split_whitespace()
                    .nth(i)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            println!(
                "{} passed, {} failed",
                count(&stock, 0) + count(&patched, 0),
                count(&stock, 2) + count(&patched, 2)
            );
        }
        (Some(line), None) | (None, Some(line)) => println!("{line}"),
        (None, None) => {}
    }
    Ok(())
}

/// The VM tests in the kernel of `vm_args` with the modules of
/// `modules_dir`, for the kernel matrix.
pub fn vm_tests_for(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    modules_dir: &Path,
    selection: &TestSelection,
) -> Result<Option<String>> {
    let target = util::metadata(root)?.target_dir;
    vm_tests(tools, root, &target, vm_args, modules_dir, selection)
}

/// Builds the binaries, boots the VM once and runs the VM test binaries of
/// `selection` in it. Returns the runner's closing "N passed, N failed" line.
fn vm_tests(
    tools: &Tools,
    root: &Path,
    target: &Path,
    vm_args: &VmArgs,
    modules_dir: &Path,
    selection: &TestSelection,
) -> Result<Option<String>> {
    // The examples too: tests run some (relay-reader's tokio_asyncfd).
    util::run(Command::new(util::cargo()).current_dir(root).args([
        "build",
        "--workspace",
        "--bins",
        "--examples",
    ]))
    .context("building the workspace binaries and examples")?;
    let mut binaries = vm_test_binaries(root)?;
    if let Some(only) = selection.only {
        binaries.retain(|bin| {
            bin.file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.rsplit_once('-'))
                .is_some_and(|(target, _hash)| target == only)
        });
    }
    if binaries.is_empty() {
        bail!(
            "`cargo test -p {VM_TEST_PACKAGE} --no-run` produced no test binary{}",
            selection
                .only
                .map(|only| format!(" named {only}"))
                .unwrap_or_default()
        );
    }
    println!("vm tests: {} test binaries", binaries.len());

    let results = target.join("vm-tests");
    let mut opts = vm::VmOptions::from_args(vm_args, VM_TEST_TIMEOUT)?;
    opts.rwdirs.push(results.clone());
    let command = format!(
        "env RELAY_IN_VM=1 RELAY_MODULES_DIR={} RELAY_BIN_DIR={} RELAY_RESULTS_DIR={}{} \
         bash ci/guest/run-tests.sh {}",
        util::shell_quote_path(modules_dir),
        util::shell_quote_path(&target.join("debug")),
        util::shell_quote_path(&results),
        selection
            .env
            .iter()
            .map(|(name, value)| format!(" {name}={}", util::shell_quote(value)))
            .collect::<String>(),
        binaries
            .iter()
            .map(|bin| util::shell_quote_path(bin))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let outcome = vm::run(tools, root, &opts, &command)?;
    let closing = outcome
        .tail
        .iter()
        .rev()
        .find(|line| is_closing_line(line))
        .cloned();
    if !outcome.status.success() {
        match &closing {
            Some(line) => {
                bail!("VM tests failed ({line}): the failing binaries and their output are above")
            }
            None => bail!(
                "the guest runner did not finish ({}): see the guest output above; if the \
                 guest did not boot, rerun with --verbose",
                outcome.status
            ),
        }
    }
    Ok(closing)
}

/// Whether `line` is the runner's "N passed, N failed".
fn is_closing_line(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(
        words.as_slice(),
        [p, "passed,", f, "failed"] if p.parse::<u64>().is_ok() && f.parse::<u64>().is_ok()
    )
}

/// Builds the test binaries of the VM test package and returns their paths.
fn vm_test_binaries(root: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new(util::cargo());
    cmd.current_dir(root)
        .args([
            "test",
            "-p",
            VM_TEST_PACKAGE,
            "--no-run",
            "--message-format=json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let line = util::display(&cmd);
    println!("$ {line}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut binaries = Vec::new();
    for msg in BufReader::new(stdout).lines() {
        let msg = msg.context("reading cargo's JSON messages")?;
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&msg) else {
            continue;
        };
        if value["reason"] == "compiler-message" {
            if let Some(rendered) = value["message"]["rendered"].as_str() {
                eprint!("{rendered}");
            }
        }
        if value["reason"] == "compiler-artifact" && value["profile"]["test"] == true {
            if let Some(exe) = value["executable"].as_str() {
                binaries.push(PathBuf::from(exe));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        return Err(anyhow!(
            "`{line}` failed ({status}): see the compiler errors above"
        ));
    }
    Ok(binaries)
}
