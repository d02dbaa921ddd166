//! The kernel patch series of `kernel-patches/series/<base>/`: building
//! kernels with them (`cargo xtask kernel`) and checking that they carry
//! `kernel-patches/src/`.
//!
//! `kernel-patches/scripts/build-kernel.sh` does the work of a build (verified
//! base tarball, git base, `git am`, slim config, ccache); this module runs it
//! ([`crate::modules`] collects a build's in-tree modules for the VM tests).
//! The series check reads
//! the patch files only, so `cargo xtask test` runs it without a kernel tree.
//! The kernel matrix, which builds and boots every variant, is in
//! [`crate::matrix`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::modules::intree_modules;
use crate::util;

/// The base `cargo xtask test` builds and boots, the primary series (its
/// source, Debian's `linux-source-7.3` from trixie-backports, is downloaded
/// by build-kernel.sh), and the default of `cargo xtask kernel`.
pub const CI_BASE: &str = "7.3";

/// What `cargo xtask kernel` takes.
#[derive(clap::Args)]
pub struct KernelArgs {
    /// The series' base (6.12 or 7.3).
    #[arg(long, default_value = CI_BASE)]
    base: String,
    /// Build with KASAN and lockdep (x86-64).
    #[arg(long, conflicts_with = "kcsan")]
    kasan: bool,
    /// Build with KCSAN, the data race detector (x86-64; excludes KASAN).
    #[arg(long)]
    kcsan: bool,
    /// The architecture: x86_64, arm64 (cross-compiled with
    /// aarch64-linux-gnu-gcc) or i386 (32-bit x86).
    #[arg(long, value_enum, default_value_t = KernelArch::X86_64)]
    arch: KernelArch,
    /// Only check that every series carries kernel-patches/src/ (no build).
    #[arg(long)]
    check: bool,
}

/// The architectures `cargo xtask kernel --arch` builds for.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KernelArch {
    #[value(name = "x86_64")]
    X86_64,
    Arm64,
    I386,
}

/// `cargo xtask kernel`: builds the kernel of `--base` in the variant the
/// options name and says how to boot it, or with `--check` checks the series.
pub fn run(root: &Path, args: &KernelArgs) -> Result<()> {
    let variant = match (args.arch, args.kasan, args.kcsan) {
        (KernelArch::X86_64, false, false) => Variant::Vm,
        (KernelArch::X86_64, true, _) => Variant::Kasan,
        (KernelArch::X86_64, false, true) => Variant::Kcsan,
        (KernelArch::Arm64, false, false) => Variant::Arm64,
        (KernelArch::I386, false, false) => Variant::I386,
        _ => bail!("--kasan and --kcsan are x86-64 builds: not with --arch"),
    };
    if args.check {
        return check_series(root);
    }
    let built = build_variant(root, &args.base, variant)?;
    if let Some(arch) = variant.foreign_arch() {
        println!(
            "kernel {} ({}): {}\n\
             boot it and run vm-test.sh and a stress round in it: \
             bash kernel-patches/scripts/boot-guest.sh {arch} {}",
            built.base,
            built.release,
            built.bzimage.display(),
            built.build_dir.display()
        );
    } else {
        let modules = intree_modules(root, &built.build_dir)?;
        println!(
            "kernel {} ({}): {}\nmodules: {}\n\
             run the VM tests on it: cargo xtask test --kernel {}",
            built.base,
            built.release,
            built.bzimage.display(),
            modules.display(),
            built.bzimage.display()
        );
    }
    Ok(())
}

/// The kernels build-kernel.sh builds from a series: its options, build
/// directory and image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// x86-64, `build-vm`: the kernel of `cargo xtask test`.
    Vm,
    /// x86-64 with KASAN and lockdep (`--kasan`, `build-kasan`).
    Kasan,
    /// x86-64 with KCSAN (`--kcsan`, `build-kcsan`).
    Kcsan,
    /// arm64, cross-compiled (`--arch arm64`, `build-arm64`).
    Arm64,
    /// 32-bit x86 (`--arch i386`, `build-i386`).
    I386,
}

impl Variant {
    /// build-kernel.sh's options for it.
    fn script_args(self) -> &'static [&'static str] {
        match self {
            Variant::Vm => &[],
            Variant::Kasan => &["--kasan"],
            Variant::Kcsan => &["--kcsan"],
            Variant::Arm64 => &["--arch", "arm64"],
            Variant::I386 => &["--arch", "i386"],
        }
    }

    /// Its build directory under `.cache/kernel/<base>/`.
    fn dir(self) -> &'static str {
        match self {
            Variant::Vm => "build-vm",
            Variant::Kasan => "build-kasan",
            Variant::Kcsan => "build-kcsan",
            Variant::Arm64 => "build-arm64",
            Variant::I386 => "build-i386",
        }
    }

    /// The kernel image in the build directory.
    fn image(self) -> &'static str {
        match self {
            Variant::Arm64 => "arch/arm64/boot/Image",
            _ => "arch/x86/boot/bzImage",
        }
    }

    /// The architecture of a kernel that cannot run the host's (x86-64)
    /// user space, which kernel-patches/scripts/boot-guest.sh boots with a
    /// root of its own.
    pub fn foreign_arch(self) -> Option<&'static str> {
        match self {
            Variant::Arm64 => Some("arm64"),
            Variant::I386 => Some("i386"),
            _ => None,
        }
    }
}

/// A kernel built from a series.
pub struct Built {
    /// The series' base, e.g. `6.12`.
    pub base: String,
    /// What was built.
    pub variant: Variant,
    /// The kernel build directory (`O=`).
    pub build_dir: PathBuf,
    /// The kernel image in it: `arch/x86/boot/bzImage`, or
    /// `arch/arm64/boot/Image` for arm64.
    pub bzimage: PathBuf,
    /// Its release string.
    pub release: String,
}

fn series_dir(root: &Path) -> PathBuf {
    root.join("kernel-patches/series")
}

pub fn script(root: &Path, name: &str) -> PathBuf {
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
    build_variant(root, base, if kasan { Variant::Kasan } else { Variant::Vm })
}

/// [`build`] of any [`Variant`].
pub fn build_variant(root: &Path, base: &str, variant: Variant) -> Result<Built> {
    check_base(root, base)?;
    let mut cmd = Command::new("bash");
    cmd.arg(script(root, "build-kernel.sh"))
        .args(variant.script_args())
        .arg(base);
    let started = Instant::now();
    util::run(&mut cmd).with_context(|| {
        format!("building the {base} kernel ({variant:?}) failed: see the output above")
    })?;
    let cache = std::env::var_os("RELAY_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/kernel"));
    let build_dir = cache.join(base).join(variant.dir());
    let bzimage = build_dir.join(variant.image());
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
        variant,
        build_dir,
        bzimage,
        release,
    })
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

/// The companion series of a base, applied on top of its core series.
const COMPANION: &str = "companion";

/// The numbered patches of one series directory, in order.
fn patch_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
    Ok(patches)
}

/// The files that the patches of a series and of its companion series
/// create, and the paths they modify; patches are named relative to `dir`.
fn parse_series(dir: &Path) -> Result<SeriesFiles> {
    let mut patches = patch_files(dir)?;
    if patches.is_empty() {
        bail!("{} has no patches", dir.display());
    }
    if dir.join(COMPANION).is_dir() {
        patches.extend(patch_files(&dir.join(COMPANION))?);
    }
    let mut created = Vec::new();
    let mut modified = Vec::new();
    for patch in &patches {
        let name = patch
            .strip_prefix(dir)
            .unwrap_or(patch)
            .to_string_lossy()
            .into_owned();
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

/// The version of `kernel-patches/src/<path>` that the series of `base`
/// carries (the kernel's side of its conditionals), from
/// `scripts/intree-file.sh`, which `series.sh sync` uses too.
fn intree_file(root: &Path, base: &str, path: &str) -> Result<Vec<u8>> {
    let text = util::output(
        Command::new("bash")
            .arg(script(root, "intree-file.sh"))
            .args([base, path]),
    )?;
    Ok(text.into_bytes())
}

/// Checks every series (each with its companion series): each file a patch
/// creates is, as the series leaves it, byte-identical to the version of
/// its copy under `kernel-patches/src/` that the series carries, every
/// file there is created by the series, and `BASE` pins a sha256.
pub fn check_series(root: &Path) -> Result<()> {
    let carried = src_files(&root.join("kernel-patches/src"))?;
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
        for (series, name) in [
            (dir.clone(), format!("series/{base}")),
            (dir.join(COMPANION), format!("series/{base}/{COMPANION}")),
        ] {
            if series.is_dir() && !series.join("0000-cover-letter.patch").is_file() {
                problems.push(format!("{name}: no 0000-cover-letter.patch"));
            }
        }
        let SeriesFiles { created, modified } = parse_series(&dir)?;
        // Each src file as the series leaves it: created by one patch,
        // possibly changed by later ones (series.sh sync puts src/'s
        // version into the last patch that touches a file).
        let mut last: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
        for file in &created {
            if carried.contains_key(&file.path) {
                last.insert(
                    file.path.clone(),
                    (file.patch.clone(), file.content.clone()),
                );
            } else {
                problems.push(format!(
                    "series/{base}/{}: creates {}, which is not in kernel-patches/src/",
                    file.patch, file.path
                ));
            }
        }
        for (patch, path) in &modified {
            let Some((at, content)) = last.get_mut(path) else {
                continue;
            };
            match apply_to_file(&dir.join(patch), path, content) {
                Ok(new) => {
                    *content = new;
                    at.clone_from(patch);
                }
                Err(err) => problems.push(format!(
                    "series/{base}/{patch}: its change of {path} does not apply: {err:#}"
                )),
            }
        }
        for path in carried.keys() {
            match last.get(path) {
                None => problems.push(format!(
                    "series/{base}: no patch creates kernel-patches/src/{path}"
                )),
                Some((patch, content)) => {
                    if *content != intree_file(root, base, path)? {
                        problems.push(format!(
                            "series/{base}/{patch}: {path} differs from kernel-patches/src/{path} \
                             as `kernel-patches/scripts/intree-file.sh {base} {path}` prints it"
                        ));
                    }
                }
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

/// `content` (a file as created by earlier patches) with the change that
/// the patch file `patch` makes to `path`, applied by `git apply` in a
/// scratch directory.
fn apply_to_file(patch: &Path, path: &str, content: &[u8]) -> Result<Vec<u8>> {
    let scratch = std::env::temp_dir().join(format!(
        "xtask-series-{}-{}",
        std::process::id(),
        path.replace('/', "_")
    ));
    let file = scratch.join(path);
    std::fs::create_dir_all(file.parent().unwrap_or(&scratch))?;
    std::fs::write(&file, content)?;
    let out = Command::new("git")
        .arg("apply")
        .arg(format!("--include={path}"))
        .arg(patch)
        .current_dir(&scratch)
        .output()
        .context("running git apply")?;
    let result = if out.status.success() {
        std::fs::read(&file).map_err(Into::into)
    } else {
        Err(anyhow::anyhow!(
            "{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
