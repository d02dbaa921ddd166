//! Machine setup: Debian packages and a virtme-ng venv under `.cache/venv`.
//!
//! [`ensure`] is idempotent and cheap when everything is present (one
//! `dpkg-query` and a few `stat`s), so every subcommand calls it first.
//! Installing apt packages needs root; the venv lives in the repository and
//! does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// Debian packages the toolchain, module build, codegen and VM runs need.
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "linux-image-6.12-amd64",
    "linux-headers-6.12-amd64",
    "build-essential",
    "bc",
    "bison",
    "flex",
    "libelf-dev",
    "libssl-dev",
    "kmod",
    // pahole: BTF for modules built against the Debian headers (CONFIG_DEBUG_INFO_BTF_MODULES).
    "pahole",
    "cpio",
    "ccache",
    "libclang-dev",
    "clang",
    "python3-venv",
    // tools/ in-VM tests: Debian's blktrace/blkparse as the reference, fio as the load.
    "blktrace",
    "fio",
    // What build-kernel.sh needs besides the kernel build tools above: it
    // downloads the pinned base of a series with apt-get (for 7.3, which
    // `cargo xtask test` builds: Debian's linux-source-7.3 from
    // trixie-backports, signed with a key of debian-archive-keyring) and
    // unpacks it with xz. The slim configs build no BTF, so bookworm's pahole
    // (older than 7.3 wants for BTF) is enough. Debian's linux-source-6.12 is
    // not installed: build-kernel.sh takes an installed tarball only when it
    // is the pinned point release, and downloads the pinned one otherwise.
    "xz-utils",
    "debian-archive-keyring",
    // series.sh and the series check: the version of a kernel-patches/src/
    // file that a series carries is the file with its kernel's side of
    // every conditional kept (intree_file in kernel-patches/scripts/common.sh).
    "unifdef",
    // The kernel matrix's arm64 and i386 kernels (build-kernel.sh --arch):
    // the cross compilers and the C libraries of the static relay_test
    // (gcc-multilib would do for i386 but conflicts with the arm64 cross
    // compiler), and qemu-system-aarch64 (qemu-system-i386 comes with
    // qemu-system-x86) for boot-guest.sh.
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "gcc-i686-linux-gnu",
    "libc6-dev-i386-cross",
    "qemu-system-arm",
    // `relay-bench transports` (the BPF ring buffer and perf buffer against
    // relay): clang (above) compiles its BPF programs against libbpf-dev's
    // <bpf/bpf_helpers.h>; libbpf-rs builds its own libbpf, linked against
    // libelf (above) and zlib, found with pkg-config; bpftool to look at
    // loaded programs and maps; perf to see where a consumer's time goes.
    "libbpf-dev",
    "zlib1g-dev",
    "pkg-config",
    "bpftool",
    "linux-perf",
];

/// The pinned virtme-ng release (known to boot the stock kernel under TCG here).
pub const VIRTME_NG_VERSION: &str = "1.42";

/// Marker written into the venv once virtme-ng is installed in it.
const VENV_MARKER: &str = ".xtask-virtme-ng";

/// Paths of the tools that setup provides.
pub struct Tools {
    /// The venv's `bin/` directory (must be on `PATH` when running `vng`,
    /// which calls `virtme-run` by name).
    pub venv_bin: PathBuf,
    /// The `vng` executable.
    pub vng: PathBuf,
}

/// Checks that everything is installed, installing what is missing.
///
/// With `verbose`, reports what was found even when nothing had to be done.
pub fn ensure(root: &Path, verbose: bool) -> Result<Tools> {
    let venv = root.join(".cache").join("venv");
    let tools = Tools {
        venv_bin: venv.join("bin"),
        vng: venv.join("bin").join("vng"),
    };

    let missing = missing_apt_packages().context("checking installed Debian packages")?;
    if missing.is_empty() {
        if verbose {
            println!("setup: all {} apt packages installed", APT_PACKAGES.len());
        }
    } else {
        println!("setup: missing apt packages: {}", missing.join(" "));
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "installing Debian packages needs root; run:\n  \
                 sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y \
                 --no-install-recommends {}\nor run `cargo xtask setup` as root",
                missing.join(" ")
            );
        }
        install_apt(&missing)?;
        let still = missing_apt_packages()?;
        if !still.is_empty() {
            bail!(
                "apt-get finished but these packages are still not installed: {}; \
                 check the apt output above",
                still.join(" ")
            );
        }
    }

    if venv_ready(&venv) {
        if verbose {
            println!(
                "setup: virtme-ng {VIRTME_NG_VERSION} present in {}",
                venv.display()
            );
        }
    } else {
        create_venv(&venv)?;
    }
    if verbose {
        println!("setup: done");
    }
    Ok(tools)
}

/// Returns the packages of [`APT_PACKAGES`] that are not fully installed.
fn missing_apt_packages() -> Result<Vec<String>> {
    // dpkg-query exits 1 when some package is unknown, but still prints the
    // others: read stdout whatever the status.
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package}\t${db:Status-Status}\n")
        .args(APT_PACKAGES)
        .output()
        .context("could not run dpkg-query: xtask setup supports Debian 12 (bookworm) only")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| *status == "installed")
        .map(|(name, _)| name)
        .collect();
    Ok(APT_PACKAGES
        .iter()
        .filter(|pkg| !installed.contains(pkg))
        .map(|pkg| pkg.to_string())
        .collect())
}

/// `apt-get update` once, then installs `packages` non-interactively.
fn install_apt(packages: &[String]) -> Result<()> {
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["update", "-q"]),
    )
    .context("apt-get update failed: check the network access to the Debian mirror")?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages),
    )
    .context("apt-get install failed: see its output above")
}

/// Whether the venv has the pinned virtme-ng and a working interpreter link.
fn venv_ready(venv: &Path) -> bool {
    let marker = std::fs::read_to_string(venv.join(VENV_MARKER)).unwrap_or_default();
    marker.trim() == VIRTME_NG_VERSION
        && venv.join("bin").join("vng").is_file()
        // `exists` follows the symlink: false when the base interpreter is gone.
        && venv.join("bin").join("python3").exists()
}

/// Creates (or recreates) the venv and installs the pinned virtme-ng into it.
fn create_venv(venv: &Path) -> Result<()> {
    println!(
        "setup: installing virtme-ng {VIRTME_NG_VERSION} into {}",
        venv.display()
    );
    std::fs::create_dir_all(venv.parent().context("venv path has no parent")?)
        .with_context(|| format!("creating {}", venv.display()))?;
    let python = find_python()?;
    util::run(
        Command::new(&python)
            .args(["-m", "venv", "--clear"])
            .arg(venv),
    )
    .with_context(|| {
        format!(
            "creating the venv with {} failed: install python3-venv (as root: \
             `apt-get install python3-venv`) or another python3 with the venv module",
            python.display()
        )
    })?;
    util::run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VIRTME_NG_VERSION}")),
    )
    .context(
        "pip could not install virtme-ng: check access to PyPI, then rerun `cargo xtask setup`",
    )?;
    if !venv.join("bin").join("vng").is_file() {
        bail!(
            "pip installed virtme-ng but {} is missing; remove {} and rerun `cargo xtask setup`",
            venv.join("bin/vng").display(),
            venv.display()
        );
    }
    std::fs::write(venv.join(VENV_MARKER), VIRTME_NG_VERSION)
        .with_context(|| format!("writing the marker in {}", venv.display()))?;
    Ok(())
}

/// The `python3` on `PATH`, else Debian's `/usr/bin/python3`.
fn find_python() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("python3"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            let debian = PathBuf::from("/usr/bin/python3");
            debian.is_file().then_some(debian)
        })
        .context("no python3 found on PATH or in /usr/bin: install python3 and python3-venv")
}
