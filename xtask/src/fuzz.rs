//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` (installing
//! cargo-fuzz from crates.io when missing). libFuzzer needs flags that only
//! nightly accepts; with the stable toolchain they are unlocked with
//! `RUSTC_BOOTSTRAP=1`, for this command only. The corpus in
//! `fuzz/corpus/<target>` grows with each run and is kept in the repo.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// The targets, in the order they run.
const TARGETS: [&str; 2] = ["reader_vs_model", "relay_app_subbuf"];

/// What `cargo xtask fuzz` takes.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Executions per target.
    #[arg(long, default_value_t = 1_000_000)]
    runs: u64,
}

/// Runs every target for `--runs` executions.
pub fn run(root: &Path, args: &FuzzArgs) -> Result<()> {
    let runs = args.runs;
    ensure_cargo_fuzz()?;
    let fuzz = root.join("fuzz");
    for target in TARGETS {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        util::run(
            Command::new(util::cargo())
                .current_dir(&fuzz)
                .env("RUSTC_BOOTSTRAP", "1")
                .args(["fuzz", "run", "-O", target])
                .arg(&corpus)
                .arg("--")
                .arg(format!("-runs={runs}"))
                .arg("-max_len=4096"),
        )
        .with_context(|| {
            format!("fuzz target {target} failed: the crash input is in fuzz/artifacts/{target}/")
        })?;
    }
    println!("fuzz: {} targets x {runs} runs, no crash", TARGETS.len());
    Ok(())
}

/// Installs cargo-fuzz from crates.io when missing.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new(util::cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        util::run(Command::new(util::cargo()).args(["install", "--locked", "cargo-fuzz"]))
            .context("installing cargo-fuzz")?;
    }
    Ok(())
}
