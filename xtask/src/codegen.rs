//! `cargo xtask codegen [--check]`: regenerates relay-sys's bindings from
//! the uapi headers (`relay.h`, `blktrace_api.h`) as the patched kernel tree
//! exports them.
//!
//! Steps: the 7.3 tree with its series applied (kernel-patches/scripts/
//! build-kernel.sh --tree-only: verified base, `git am`), the tree that
//! `cargo xtask test` builds its patched kernel in, so that CI unpacks one
//! base only (both series carry the same `include/uapi/linux/relay.h`, from
//! kernel-patches/src/); `make headers`
//! into target/uapi-headers/ (the processed `usr/include` that
//! `make headers_install` copies out); then the `relay-sys-gen` package,
//! which runs bindgen. bindgen needs libclang, so the generator is
//! deliberately not a dependency of xtask: it runs with `cargo run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The generator package (relay-sys/gen).
pub const GEN_PACKAGE: &str = "relay-sys-gen";

/// The series whose header the committed bindings come from: the one
/// `cargo xtask test` builds.
const BASE: &str = crate::kernel::CI_BASE;

/// `KEY=value` lines of kernel-patches/series/<base>/BASE.
fn base_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
}

/// The patched tree, prepared by build-kernel.sh (reused when current).
fn patched_tree(root: &Path) -> Result<PathBuf> {
    let script = root.join("kernel-patches/scripts/build-kernel.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--tree-only", BASE])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} --tree-only {BASE} failed:\n{stdout}{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("tree: "))
        .next_back()
        .context("build-kernel.sh did not name the tree (`tree: DIR`)")?;
    Ok(PathBuf::from(tree))
}

/// What `cargo xtask codegen` takes.
#[derive(clap::Args)]
pub struct CodegenArgs {
    /// Fail if the committed bindings differ from freshly generated ones.
    #[arg(long)]
    pub check: bool,
}

/// Regenerates the committed bindings, or with `--check` fails when they
/// are stale.
pub fn run(root: &Path, args: &CodegenArgs) -> Result<()> {
    let check = args.check;
    let base_file = root.join(format!("kernel-patches/series/{BASE}/BASE"));
    let base = std::fs::read_to_string(&base_file)
        .with_context(|| format!("reading {}", base_file.display()))?;
    let field = |key| {
        base_field(&base, key).with_context(|| format!("{key} missing in {}", base_file.display()))
    };
    let origin = format!(
        "Linux {} (Debian {} {}) with kernel-patches/series/{BASE}",
        field("VERSION")?,
        field("PACKAGE")?,
        field("PACKAGE_VERSION")?
    );

    let tree = patched_tree(root)?;
    let target = util::metadata(root)?.target_dir;
    let headers = target.join("uapi-headers").join(BASE);
    util::run(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&tree)
            .arg(format!("O={}", headers.display()))
            .arg("headers"),
    )
    .context("make headers in the patched tree")?;

    let mut cmd = Command::new(util::cargo());
    cmd.current_dir(root)
        .args(["run", "--quiet", "-p", GEN_PACKAGE, "--", "--headers"])
        .arg(headers.join("usr/include"))
        .arg("--origin")
        .arg(&origin);
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
