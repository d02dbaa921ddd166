//! `cargo xtask codegen [--check]`: runs the `relay-sys-gen` generator crate.
//!
//! The generator uses bindgen, which needs libclang, so it is deliberately not
//! a dependency of xtask: it is run as its own package with `cargo run`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// The generator package (relay-sys/gen).
pub const GEN_PACKAGE: &str = "relay-sys-gen";

/// Regenerates the committed bindings, or with `check` fails when they are stale.
pub fn run(root: &Path, check: bool) -> Result<()> {
    let mut cmd = Command::new(util::cargo());
    cmd.current_dir(root)
        .args(["run", "--quiet", "-p", GEN_PACKAGE, "--"]);
    if check {
        cmd.arg("--check");
    }
    let result = util::run(&mut cmd);
    if check {
        result.context(
            "the committed bindings differ from the generated ones (or the generator failed): \
             run `cargo xtask codegen` and commit the result",
        )
    } else {
        result.context("the binding generator failed: see its output above")
    }
}
