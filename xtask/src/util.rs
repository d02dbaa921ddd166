//! Small helpers shared by the subcommands: locating the repository, running
//! commands with readable errors, shell quoting, `cargo metadata`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root (the parent of the `xtask` package).
pub fn repo_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .context("xtask's manifest dir has no parent")?
        .to_path_buf();
    if !root.join("Cargo.toml").is_file() {
        bail!(
            "no Cargo.toml in {}: run xtask from the relay workspace (`cargo xtask ...`)",
            root.display()
        );
    }
    Ok(root)
}

/// The cargo binary that started us (falls back to `cargo` on `PATH`).
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A printable form of a command line, for logs and error messages.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| shell_quote(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdio, echoing it first; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}` (is it installed?)"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Builds `packages` in release mode; returns the target directory and
/// its `release` directory, where their binaries are.
pub fn build_release(root: &Path, packages: &[&str]) -> Result<(PathBuf, PathBuf)> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root).args(["build", "--release"]);
    for package in packages {
        cmd.args(["-p", package]);
    }
    run(&mut cmd).with_context(|| format!("building {}", packages.join(", ")))?;
    let target = metadata(root)?.target_dir;
    let release = target.join("release");
    Ok((target, release))
}

/// Runs `cmd` quietly and returns its stdout; fails (with its stderr) unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}` (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Quotes `s` for a POSIX shell (unchanged when it is made of safe characters).
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Quotes a path for a POSIX shell.
pub fn shell_quote_path(path: &Path) -> String {
    shell_quote(&path.to_string_lossy())
}

/// What xtask needs from `cargo metadata`.
pub struct Metadata {
    /// The cargo target directory (usually `<root>/target`).
    pub target_dir: PathBuf,
    /// Names of the workspace's packages.
    pub packages: Vec<String>,
}

/// Reads `cargo metadata --no-deps` for the workspace at `root`.
pub fn metadata(root: &Path) -> Result<Metadata> {
    let json = output(Command::new(cargo()).current_dir(root).args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
    ]))?;
    let value: serde_json::Value =
        serde_json::from_str(&json).context("parsing `cargo metadata` output")?;
    let target_dir = value["target_directory"]
        .as_str()
        .context("`cargo metadata` has no target_directory")?
        .into();
    let packages = value["packages"]
        .as_array()
        .context("`cargo metadata` has no packages array")?
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    Ok(Metadata {
        target_dir,
        packages,
    })
}
