//! The kernel modules of `kernel-patches/` for the VM: built out of tree
//! against a kernel tree (by default the stock Debian 6.12 headers), or
//! taken from a kernel built from a series, which builds them in tree; either
//! way into `target/modules/<kernel release>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;
use crate::vm::{self, VmArgs};

/// Our modules, in load order: their paths in a kernel tree without
/// `.ko` (`samples/relay/relay_app`), as `kernel-patches/scripts/modules.sh`
/// reads them from the Kbuild files.
fn list(root: &Path) -> Result<Vec<String>> {
    let script = root.join("kernel-patches/scripts/modules.sh");
    let paths: Vec<String> = util::output(Command::new("bash").arg(&script).arg("--paths"))?
        .lines()
        .map(str::to_string)
        .collect();
    if paths.is_empty() {
        bail!("{} listed no modules", script.display());
    }
    Ok(paths)
}

/// The file name of a module's `.ko` (`relay_app.ko`).
fn ko_name(path: &str) -> String {
    format!("{}.ko", path.rsplit('/').next().unwrap_or(path))
}

/// What `cargo xtask modules` takes.
#[derive(clap::Args)]
pub struct ModulesArgs {
    /// Kernel build tree or headers (default: the stock Debian 6.12 headers).
    #[arg(long)]
    kdir: Option<PathBuf>,
}

/// `cargo xtask modules`: builds the modules against `--kdir` (default:
/// the stock headers).
pub fn run(root: &Path, args: &ModulesArgs) -> Result<()> {
    let kdir = match &args.kdir {
        Some(kdir) => kdir.clone(),
        None => stock_kdir()?,
    };
    let out = build(root, &kdir)?;
    println!("modules built in {}", out.display());
    Ok(())
}

/// Headers of the stock kernel that `cargo xtask vm` boots by default.
fn stock_kdir() -> Result<PathBuf> {
    let release = vm::stock_release(&vm::stock_kernel()?)?;
    release_kdir(&release)
}

/// The build/headers tree of an installed kernel release.
fn release_kdir(release: &str) -> Result<PathBuf> {
    [
        PathBuf::from(format!("/lib/modules/{release}/build")),
        PathBuf::from(format!("/usr/src/linux-headers-{release}")),
    ]
    .into_iter()
    .find(|dir| dir.join("Makefile").is_file())
    .with_context(|| {
        format!(
            "no headers for kernel {release} (looked in /lib/modules/{release}/build and \
             /usr/src/linux-headers-{release}): run `cargo xtask setup` as root, or pass --kdir"
        )
    })
}

/// Whether `kdir` is a kernel build of one of the series (it built the
/// relay samples in tree).
fn is_series_build(kdir: &Path) -> bool {
    kdir.join("samples/relay/relay_app.ko").is_file()
}

/// Files a series build made that the VM tests use besides our modules
/// (see [`list`]), copied with them to `target/modules/<release>/`.
const INTREE: &[&str] = &[
    "drivers/block/null_blk/null_blk.ko",
    "lib/test_relay.ko",
    "relay_test",
    "relay_mmap",
    "relay_mmap.sh",
];

/// Copies the in-tree modules of a series build into
/// `target/modules/<release>/` and returns that directory.
pub fn intree_modules(root: &Path, kdir: &Path) -> Result<PathBuf> {
    let release = std::fs::read_to_string(kdir.join("include/config/kernel.release"))
        .with_context(|| format!("{} is not a configured kernel build", kdir.display()))?
        .trim()
        .to_string();
    let out = util::metadata(root)?
        .target_dir
        .join("modules")
        .join(&release);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut files: Vec<PathBuf> = INTREE.iter().map(|rel| kdir.join(rel)).collect();
    files.extend(
        list(root)?
            .iter()
            .map(|module| kdir.join(format!("{module}.ko"))),
    );
    for from in &files {
        let name = from.file_name().context("module path without a name")?;
        if !from.is_file() {
            bail!(
                "{} is missing: the kernel was not built with kernel-patches/config/relay-vm.config",
                from.display()
            );
        }
        std::fs::copy(from, out.join(name))
            .with_context(|| format!("copying {} to {}", from.display(), out.display()))?;
    }
    println!(
        "modules: {} in-tree modules of {release} in {}",
        files.len() - 1,
        out.display()
    );
    Ok(out)
}

/// The modules for the kernel the VM boots: a kernel built from a series
/// has its own samples (in-tree modules), any other gets them built out of
/// tree against its headers or build tree.
pub fn for_vm(root: &Path, vm: &VmArgs, kdir: Option<PathBuf>) -> Result<PathBuf> {
    let kdir = kdir_for(vm, kdir)?;
    if is_series_build(&kdir) {
        return intree_modules(root, &kdir);
    }
    build(root, &kdir).context("building the kernel modules")
}

/// The tree to build modules against for a VM run: `--kdir` if given, else
/// the tree `--kernel` comes from, else the stock headers.
pub fn kdir_for(vm: &VmArgs, kdir: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(kdir) = kdir {
        return Ok(kdir);
    }
    let Some(kernel) = &vm.kernel else {
        return stock_kdir();
    };
    if kernel.is_dir() {
        return Ok(kernel.clone());
    }
    // A stock image: /boot/vmlinuz-<release>.
    if let Ok(release) = vm::stock_release(kernel) {
        if let Ok(kdir) = release_kdir(&release) {
            return Ok(kdir);
        }
    }
    // A built tree's <tree>/arch/<arch>/boot/bzImage.
    let canonical = std::fs::canonicalize(kernel)
        .with_context(|| format!("--kernel {}: no such file", kernel.display()))?;
    if let Some(tree) = canonical.ancestors().nth(4) {
        if tree.join("include/config/kernel.release").is_file() {
            return Ok(tree.to_path_buf());
        }
    }
    bail!(
        "cannot tell which kernel tree {} was built from: pass --kdir <kernel build dir>",
        kernel.display()
    )
}

/// The release string of the kernel tree `kdir` (`include/config/kernel.release`).
pub fn kernel_release(kdir: &Path) -> Result<String> {
    let file = kdir.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "reading {}: is {} a configured kernel build tree or headers package?",
            file.display(),
            kdir.display()
        )
    })?;
    Ok(release.trim().to_string())
}

/// Builds the modules against `kdir` and returns the directory holding the `.ko` files.
pub fn build(root: &Path, kdir: &Path) -> Result<PathBuf> {
    let kdir = std::fs::canonicalize(kdir)
        .with_context(|| format!("--kdir {}: no such directory", kdir.display()))?;
    let release = kernel_release(&kdir)?;
    let makefile = root.join("kernel-patches/Makefile");
    if !makefile.is_file() {
        bail!(
            "{} does not exist yet: the kernel module build is not in this tree \
             (expected `make -C kernel-patches KDIR=<dir> O_DIR=<dir>`)",
            makefile.display()
        );
    }
    let target = util::metadata(root)?.target_dir;
    let out = target.join("modules").join(&release);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("modules: building against {} ({release})", kdir.display());
    util::run(
        Command::new("make")
            .current_dir(root)
            .arg(format!("-j{jobs}"))
            .args(["-C", "kernel-patches"])
            .arg(format!("KDIR={}", kdir.display()))
            .arg(format!("O_DIR={}", out.display())),
    )
    .context("the module build failed: see the compiler output above")?;
    let missing: Vec<String> = list(root)?
        .iter()
        .map(|module| ko_name(module))
        .filter(|ko| !out.join(ko).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the module build succeeded but did not produce {} in {}: check kernel-patches/Makefile",
            missing.join(", "),
            out.display()
        );
    }
    Ok(out)
}

/// Builds `relay_xbench.ko`, the producer of `relay-bench transports`
/// (`ci/bench/module/`, no part of a patch series), out of tree against
/// `kdir`, linking against the `relay_app.ko` of `modules` (the directory
/// [`for_vm`] returned: an out-of-tree build leaves its `Module.symvers`
/// there; a series build's symbols are in `kdir`'s own). Returns the
/// module's path.
pub fn build_xbench(root: &Path, kdir: &Path, modules: &Path) -> Result<PathBuf> {
    let kdir = std::fs::canonicalize(kdir)
        .with_context(|| format!("{}: no such directory", kdir.display()))?;
    let release = kernel_release(&kdir)?;
    let src = root.join("ci/bench/module");
    let out = util::metadata(root)?
        .target_dir
        .join("xbench-module")
        .join(&release);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Kbuild writes its objects next to the sources: build in a copy.
    for entry in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let from = entry?.path();
        if from.is_file() {
            let name = from.file_name().context("a file name")?;
            std::fs::copy(&from, out.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", out.display()))
        .arg("W=1")
        .arg(format!(
            "RELAY_SAMPLES={}",
            root.join("kernel-patches/src/samples/relay").display()
        ));
    let symvers = modules.join("Module.symvers");
    if symvers.is_file() {
        make.arg(format!("KBUILD_EXTRA_SYMBOLS={}", symvers.display()));
    }
    println!(
        "modules: building relay_xbench against {} ({release})",
        kdir.display()
    );
    util::run(make.arg("modules")).context("building relay_xbench.ko failed: see above")?;
    let ko = out.join("relay_xbench.ko");
    if !ko.is_file() {
        bail!("the build of relay_xbench made no {}", ko.display());
    }
    Ok(ko)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_every_module_source_klog_and_relay_app_first() {
        let root = util::repo_root().unwrap();
        let modules = list(&root).unwrap();
        assert_eq!(modules[..2], ["kernel/klog", "samples/relay/relay_app"]);
        let samples = root.join("kernel-patches/src/samples/relay");
        let mut sources: Vec<String> = std::fs::read_dir(&samples)
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| Some(format!("samples/relay/{}", name.strip_suffix(".c")?)))
            .chain(["kernel/klog".to_string()])
            .collect();
        sources.sort();
        let mut listed = modules.clone();
        listed.sort();
        assert_eq!(listed, sources);
        assert_eq!(ko_name(&modules[1]), "relay_app.ko");
    }
}
