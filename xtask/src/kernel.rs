//! The kernel patch series of `kernel-patches/series/<base>/`: building
//! kernels with them, checking that they carry `kernel-patches/src/`, and the
//! kernel matrix.
//!
//! `kernel-patches/scripts/build-kernel.sh` does the work of a build (verified
//! base tarball, git base, `git am`, slim config, ccache); this module runs it,
//! collects the in-tree modules for the VM tests and drives the matrix. The
//! series check reads the patch files only, so `cargo xtask test` runs it
//! without a kernel tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::setup::Tools;
use crate::{util, vm, VmArgs};

/// The base `cargo xtask test` builds and boots (its source is a Debian
/// package of the machine's release).
pub const CI_BASE: &str = "6.12";

/// Hard timeout of the stress run in the KASAN kernel, in seconds.
const STRESS_TIMEOUT: u64 = 2400;

/// A kernel built from a series.
pub struct Built {
    /// The series' base, e.g. `6.12`.
    pub base: String,
    /// The kernel build directory (`O=`).
    pub build_dir: PathBuf,
    /// `arch/x86/boot/bzImage` in it.
    pub bzimage: PathBuf,
    /// Its release string.
    pub release: String,
}

fn series_dir(root: &Path) -> PathBuf {
    root.join("kernel-patches/series")
}

fn script(root: &Path, name: &str) -> PathBuf {
    root.join("kernel-patches/scripts").join(name)
}

/// The bases that have a series, oldest first.
pub fn bases(root: &Path) -> Result<Vec<String>> {
    let dir = series_dir(root);
    let mut bases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("BASE").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    bases.sort_by_key(|base| {
        base.split('.')
            .map(|part| part.parse::<u64>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    Ok(bases)
}

fn check_base(root: &Path, base: &str) -> Result<()> {
    let known = bases(root)?;
    if !known.iter().any(|b| b == base) {
        bail!(
            "no series for base {base:?} in {}: the bases are {}",
            series_dir(root).display(),
            known.join(", ")
        );
    }
    Ok(())
}

/// Applies the series of `base` to its verified base tree and builds it
/// (`--kasan`: with KASAN and lockdep). Idempotent; ccache makes rebuilds
/// cheap.
pub fn build(root: &Path, base: &str, kasan: bool) -> Result<Built> {
    check_base(root, base)?;
    let mut cmd = Command::new("bash");
    cmd.arg(script(root, "build-kernel.sh"));
    if kasan {
        cmd.arg("--kasan");
    }
    cmd.arg(base);
    let started = Instant::now();
    util::run(&mut cmd)
        .with_context(|| format!("building the {base} kernel failed: see the output above"))?;
    let cache = std::env::var_os("RELAY_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/kernel"));
    let build_dir = cache
        .join(base)
        .join(if kasan { "build-kasan" } else { "build-vm" });
    let bzimage = build_dir.join("arch/x86/boot/bzImage");
    if !bzimage.is_file() {
        bail!("the build finished but {} is missing", bzimage.display());
    }
    let release = std::fs::read_to_string(build_dir.join("include/config/kernel.release"))
        .context("reading the built kernel's release")?
        .trim()
        .to_string();
    println!(
        "kernel: {release} built in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        bzimage.display()
    );
    Ok(Built {
        base: base.to_string(),
        build_dir,
        bzimage,
        release,
    })
}

/// Whether `kdir` is a kernel build of one of the series (it built the
/// relay samples in tree).
pub fn is_series_build(kdir: &Path) -> bool {
    kdir.join("samples/relay/relay_app.ko").is_file()
}

/// Files a series build made that the VM tests use besides the relay
/// samples (every `samples/relay/*.ko`), copied to `target/modules/<release>/`.
const INTREE: &[&str] = &[
    "kernel/klog.ko",
    "drivers/block/null_blk/null_blk.ko",
    "relay_test",
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
    let samples = kdir.join("samples/relay");
    let mut files: Vec<PathBuf> = INTREE.iter().map(|rel| kdir.join(rel)).collect();
    files.extend(
        std::fs::read_dir(&samples)
            .with_context(|| format!("reading {}", samples.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "ko")),
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
    for module in crate::modules::MODULES {
        if !out.join(format!("{module}.ko")).is_file() {
            bail!("the series build has no {module}.ko: is samples/relay/ enabled in its config?");
        }
    }
    println!(
        "modules: {} in-tree modules of {release} in {}",
        files.len() - 1,
        out.display()
    );
    Ok(out)
}

/// One file a patch creates: its path and content.
struct NewFile {
    patch: String,
    path: String,
    content: Vec<u8>,
}

/// What the patches of a series do to files.
struct SeriesFiles {
    /// The files they create.
    created: Vec<NewFile>,
    /// (patch, path) of every existing file they modify.
    modified: Vec<(String, String)>,
}

/// The files that the patches of a series create, and the paths they modify.
fn parse_series(dir: &Path) -> Result<SeriesFiles> {
    let mut patches: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".patch") && !n.starts_with("0000-"))
        })
        .collect();
    patches.sort();
    if patches.is_empty() {
        bail!("{} has no patches", dir.display());
    }
    let mut created = Vec::new();
    let mut modified = Vec::new();
    for patch in &patches {
        let name = patch
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read(patch).with_context(|| format!("reading {}", patch.display()))?;
        if !text
            .split(|&b| b == b'\n')
            .any(|line| line.starts_with(b"Signed-off-by: "))
        {
            bail!("{name}: no Signed-off-by line");
        }
        parse_patch(&name, &text, &mut created, &mut modified)?;
    }
    Ok(SeriesFiles { created, modified })
}

/// Reads the `diff --git` sections of one patch file.
fn parse_patch(
    name: &str,
    text: &[u8],
    created: &mut Vec<NewFile>,
    modified: &mut Vec<(String, String)>,
) -> Result<()> {
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(rest) = lines[i].strip_prefix(b"diff --git a/") else {
            i += 1;
            continue;
        };
        let header = String::from_utf8_lossy(rest);
        let path = header
            .split_once(" b/")
            .map(|(a, _)| a.to_string())
            .with_context(|| format!("{name}: cannot read {:?}", header))?;
        i += 1;
        let mut new_file = false;
        while i < lines.len()
            && !lines[i].starts_with(b"@@")
            && !lines[i].starts_with(b"diff --git ")
        {
            new_file |= lines[i].starts_with(b"new file mode");
            i += 1;
        }
        if !new_file {
            modified.push((name.to_string(), path));
            continue;
        }
        // One hunk "@@ -0,0 +1,N @@" of N added lines (none for an empty file).
        let mut content = Vec::new();
        if i < lines.len() && lines[i].starts_with(b"@@") {
            let hunk = String::from_utf8_lossy(lines[i]).to_string();
            let count: usize = hunk
                .split_whitespace()
                .nth(2)
                .and_then(|plus| plus.strip_prefix('+'))
                .map(|range| range.split_once(',').map_or(range, |(_, n)| n))
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("{name}: {path}: bad hunk header {hunk:?}"))?;
            i += 1;
            for _ in 0..count {
                let line = lines
                    .get(i)
                    .and_then(|l| l.strip_prefix(b"+"))
                    .with_context(|| format!("{name}: {path}: truncated new file"))?;
                content.extend_from_slice(line);
                content.push(b'\n');
                i += 1;
            }
            if lines
                .get(i)
                .is_some_and(|l| l.starts_with(b"\\ No newline"))
            {
                content.pop();
                i += 1;
            }
        }
        created.push(NewFile {
            patch: name.to_string(),
            path,
            content,
        });
    }
    Ok(())
}

/// Every file of `kernel-patches/src/`, relative to it.
fn src_files(src: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path
                    .strip_prefix(src)
                    .context("path outside src")?
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, path);
            }
        }
    }
    Ok(files)
}

/// Checks every series: each file a patch creates is byte-identical to its
/// copy under `kernel-patches/src/`, every file there is created by the
/// series, no patch modifies one of them afterwards, every patch is signed
/// off, and `BASE` pins a sha256.
pub fn check_series(root: &Path) -> Result<()> {
    let src = root.join("kernel-patches/src");
    let src_files = src_files(&src)?;
    let bases = bases(root)?;
    if bases.is_empty() {
        bail!("no series in {}", series_dir(root).display());
    }
    let mut problems = Vec::new();
    for base in &bases {
        let dir = series_dir(root).join(base);
        let base_file = std::fs::read_to_string(dir.join("BASE"))?;
        let sha = base_file
            .lines()
            .find_map(|l| l.strip_prefix("SHA256="))
            .unwrap_or_default();
        if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!(
                "series/{base}/BASE: no SHA256=<64 hex digits> line"
            ));
        }
        if !dir.join("0000-cover-letter.patch").is_file() {
            problems.push(format!("series/{base}: no 0000-cover-letter.patch"));
        }
        let SeriesFiles { created, modified } = parse_series(&dir)?;
        let mut seen = BTreeMap::new();
        for file in &created {
            seen.insert(file.path.clone(), ());
            match src_files.get(&file.path) {
                None => problems.push(format!(
                    "series/{base}/{}: creates {}, which is not in kernel-patches/src/",
                    file.patch, file.path
                )),
                Some(path) => {
                    let want = std::fs::read(path)?;
                    if want != file.content {
                        problems.push(format!(
                            "series/{base}/{}: {} differs from kernel-patches/src/{}",
                            file.patch, file.path, file.path
                        ));
                    }
                }
            }
        }
        for path in src_files.keys() {
            if !seen.contains_key(path) {
                problems.push(format!(
                    "series/{base}: no patch creates kernel-patches/src/{path}"
                ));
            }
        }
        for (patch, path) in &modified {
            if src_files.contains_key(path) {
                problems.push(format!(
                    "series/{base}/{patch}: modifies {path}, which must come from kernel-patches/src/ as created"
                ));
            }
        }
        println!(
            "kernel series {base}: {} new files match kernel-patches/src/",
            created.len()
        );
    }
    if !problems.is_empty() {
        bail!(
            "the kernel series do not carry kernel-patches/src/:\n  {}\nafter changing \
             kernel-patches/src/, regenerate each series with \
             `kernel-patches/scripts/series.sh refresh <base>` (bases: {})",
            problems.join("\n  "),
            bases.join(", ")
        );
    }
    Ok(())
}

/// Runs the stress script in the guest booted on `kernel`.
fn stress(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    kernel: &Built,
    modules: &Path,
) -> Result<()> {
    let mut args = vm_args.clone();
    args.kernel = Some(kernel.bzimage.clone());
    let opts = vm::VmOptions::from_args(&args, STRESS_TIMEOUT)?;
    let command = format!(
        "bash {} {}",
        util::shell_quote_path(&script(root, "stress.sh")),
        util::shell_quote_path(modules)
    );
    let outcome = vm::run(tools, root, &opts, &command)?;
    outcome.check(&command)?;
    if !outcome.tail.iter().any(|line| line.trim() == "STRESS PASS") {
        bail!("the stress run did not report STRESS PASS: see its output above");
    }
    Ok(())
}

/// `cargo xtask kernel-matrix`: every base built and put through the VM
/// tests, then the CI base with KASAN and lockdep through the stress run and
/// the VM tests, with no kernel splat allowed.
pub fn matrix(
    tools: &Tools,
    root: &Path,
    vm_args: &VmArgs,
    vm_tests: &dyn Fn(&VmArgs, &Path) -> Result<Option<String>>,
) -> Result<()> {
    let started = Instant::now();
    let mut results: Vec<(String, Result<String>)> = Vec::new();
    check_series(root)?;
    for base in bases(root)? {
        let name = format!("{base}: build + VM tests");
        println!("\n==> kernel matrix: {name}");
        let result = build(root, &base, false).and_then(|built| {
            let modules = intree_modules(root, &built.build_dir)?;
            let mut args = vm_args.clone();
            args.kernel = Some(built.bzimage.clone());
            vm_tests(&args, &modules)
                .map(|line| format!("{} ({})", built.release, line.unwrap_or_default()))
        });
        results.push((name, result));
    }
    let name = format!("{CI_BASE} KASAN + lockdep: stress + VM tests");
    println!("\n==> kernel matrix: {name}");
    let result = build(root, CI_BASE, true).and_then(|built| {
        let modules = intree_modules(root, &built.build_dir)?;
        stress(tools, root, vm_args, &built, &modules)?;
        let mut args = vm_args.clone();
        args.kernel = Some(built.bzimage.clone());
        vm_tests(&args, &modules).map(|line| {
            format!(
                "{} (stress ok, {})",
                built.release,
                line.unwrap_or_default()
            )
        })
    });
    results.push((name, result));

    println!(
        "\n==> kernel matrix ({:.0} min)",
        started.elapsed().as_secs_f64() / 60.0
    );
    let mut failed = Vec::new();
    for (name, result) in &results {
        match result {
            Ok(detail) => println!("  ok      {name}: {detail}"),
            Err(err) => {
                println!("  FAILED  {name}: {err:#}");
                failed.push(name.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!("kernel matrix failed: {}", failed.join("; "));
    }
    Ok(())
}
